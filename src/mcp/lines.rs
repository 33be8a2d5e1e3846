//! The proxy's stdin/stdout in front of rmcp: JSON-RPC hygiene rmcp's stdio transport
//! lacks. rmcp silently drops a line that is not JSON (the host waits forever for an
//! answer), answers a batch without an `id`, rejects a request sent before `initialize`
//! with a message about `_meta` fields, and ends the session on a notification sent before
//! `initialize`. Here every line is read first:
//!
//! - not JSON: a `-32700` Parse error response (`id` null); the proxy keeps serving;
//! - a batch (a JSON array, which MCP dropped in 2025-06-18) or a JSON value that is not
//!   an object: a `-32600` Invalid Request response (`id` null);
//! - before `initialize`: a request other than `initialize`, `ping` and `server/discover`
//!   (and one that carries no protocol version of its own in `_meta`) gets a `-32002`
//!   "not initialized" error with its id; a notification or response is ignored;
//! - everything else goes to rmcp unchanged.
//!
//! rmcp reads from and writes to an in-memory pipe; one task owns the real stdout and writes
//! whole lines only, rmcp's and the filter's answers, so they never interleave.

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

/// JSON-RPC's Parse error.
pub(crate) const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's Invalid Request.
pub(crate) const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC's Invalid params.
pub(crate) const INVALID_PARAMS: i64 = -32602;
/// A request before `initialize` (the code LSP and many MCP servers use for it).
pub(crate) const NOT_INITIALIZED: i64 = -32002;

/// The in-memory pipe's buffer: a message larger than this just takes several passes.
const PIPE_BUFFER: usize = 256 * 1024;

/// How much of a line over [`super::MAX_MESSAGE`] is kept to find its `id` for the answer.
const OVERSIZED_PREFIX: usize = 64 * 1024;

/// How reading one line went.
#[derive(Debug, PartialEq)]
enum LineRead {
    /// A line (its newline included, unless the input ended first) is in the buffer.
    Line,
    /// A line of this many bytes, over the limit: read to its end, only its first
    /// [`OVERSIZED_PREFIX`] bytes kept.
    Oversized(usize),
    /// The input ended.
    Eof,
}

/// Read one line of at most `max` bytes into `line`; a longer one is read to its end
/// (so the next line starts where it should) but not kept.
async fn read_line_bounded<R: tokio::io::AsyncBufRead + Unpin>(
    input: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    let mut total = 0usize;
    loop {
        let buf = input.fill_buf().await?;
        if buf.is_empty() {
            return Ok(match total {
                0 => LineRead::Eof,
                n if n > max => LineRead::Oversized(n),
                _ => LineRead::Line,
            });
        }
        let (n, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if total + n <= max {
            line.extend_from_slice(&buf[..n]);
        } else if line.len() < OVERSIZED_PREFIX {
            let keep = (OVERSIZED_PREFIX - line.len()).min(n);
            line.extend_from_slice(&buf[..keep]);
        }
        if total + n > max {
            line.truncate(OVERSIZED_PREFIX);
        }
        total += n;
        input.consume(n);
        if done {
            return Ok(if total > max { LineRead::Oversized(total) } else { LineRead::Line });
        }
    }
}

/// The `id` of a message from its first bytes, best effort: the value after the first
/// `"id":` when it is a number or a string (hosts write `id` before `params`).
fn id_in_prefix(prefix: &[u8]) -> Value {
    let Some(at) = prefix.windows(4).position(|w| w == b"\"id\"") else { return Value::Null };
    let rest = &prefix[at + 4..];
    let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let Some(rest) = rest.strip_prefix(b":") else { return Value::Null };
    match serde_json::Deserializer::from_slice(rest).into_iter::<Value>().next() {
        Some(Ok(id @ (Value::Number(_) | Value::String(_)))) => id,
        _ => Value::Null,
    }
}

/// The answer to a line over [`super::MAX_MESSAGE`]: an Invalid Request with its id.
fn oversized_answer(prefix: &[u8], bytes: usize) -> String {
    let why = format!(
        "Invalid Request: the message is {bytes} bytes, over the {} MiB tether's mcp-proxy takes in one message",
        super::MAX_MESSAGE / (1024 * 1024)
    );
    error_line(&id_in_prefix(prefix), INVALID_REQUEST, &why)
}

/// What to do with one line from the host.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Hand it to rmcp as is.
    Pass,
    /// Hand it to rmcp; it is the `initialize` request.
    Initialize,
    /// Answer this (a whole JSON-RPC line, without the newline) instead.
    Answer(String),
    /// Drop it (blank, or a notification or response before `initialize`).
    Drop,
}

fn error_line(id: &Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

/// The envelope of a message, read without building its contents: what tells a message
/// rmcp can take from one it would answer without an id.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    params: Option<Shape>,
}

impl Envelope<'_> {
    /// `"jsonrpc": "2.0"`, and `params`, when given, an object or an array.
    fn is_sound(&self) -> bool {
        self.jsonrpc.as_deref() == Some("2.0") && !matches!(self.params, Some(Shape::Other))
    }
}

/// Whether a JSON value is structured (an object or array), its contents skipped.
enum Shape {
    Structured,
    Other,
}

impl<'de> serde::Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct ShapeVisitor;
        impl<'de> serde::de::Visitor<'de> for ShapeVisitor {
            type Value = Shape;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Shape, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Shape::Structured)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Shape, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Shape::Structured)
            }

            fn visit_bool<E>(self, _: bool) -> std::result::Result<Shape, E> {
                Ok(Shape::Other)
            }

            fn visit_i64<E>(self, _: i64) -> std::result::Result<Shape, E> {
                Ok(Shape::Other)
            }

            fn visit_u64<E>(self, _: u64) -> std::result::Result<Shape, E> {
                Ok(Shape::Other)
            }

            fn visit_f64<E>(self, _: f64) -> std::result::Result<Shape, E> {
                Ok(Shape::Other)
            }

            fn visit_str<E>(self, _: &str) -> std::result::Result<Shape, E> {
                Ok(Shape::Other)
            }

            fn visit_unit<E>(self) -> std::result::Result<Shape, E> {
                Ok(Shape::Other)
            }
        }
        d.deserialize_any(ShapeVisitor)
    }
}

/// Judge one line; `initialized` is whether an `initialize` request was passed on.
fn judge(line: &[u8], initialized: bool) -> Verdict {
    let text = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Drop;
    }
    // rmcp drops a line that is not UTF-8 without a word (serde skips the bytes of a string
    // it ignores, so the check below would pass it): answer it, with its id when it has one.
    if let Err(e) = std::str::from_utf8(text) {
        let id = serde_json::from_str::<Value>(&String::from_utf8_lossy(text))
            .ok()
            .and_then(|v| v.get("id").cloned())
            .unwrap_or(Value::Null);
        let why = format!("Parse error: the line is not UTF-8 ({e}); JSON-RPC messages are UTF-8 text");
        return Verdict::Answer(error_line(&id, PARSE_ERROR, &why));
    }
    // Once initialized, every well-formed message goes to rmcp, which parses it anyway:
    // only check its envelope, without building it (every forwarded call passes here).
    let object_first = text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if initialized && object_first && serde_json::from_slice::<Envelope>(text).is_ok_and(|e| e.is_sound()) {
        return Verdict::Pass;
    }
    let value: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => {
            let why = format!("Parse error: the line is not JSON ({e}); send one JSON-RPC message per line");
            return Verdict::Answer(error_line(&Value::Null, PARSE_ERROR, &why));
        }
    };
    let object = match &value {
        Value::Object(o) => o,
        Value::Array(_) => {
            let why = "Invalid Request: JSON-RPC batches are not supported (MCP removed batching in \
                       2025-06-18); send one message per line";
            return Verdict::Answer(error_line(&Value::Null, INVALID_REQUEST, why));
        }
        _ => {
            let why = "Invalid Request: a JSON-RPC message is a JSON object";
            return Verdict::Answer(error_line(&Value::Null, INVALID_REQUEST, why));
        }
    };
    let method = object.get("method").and_then(Value::as_str);
    // A request rmcp cannot take (it answers those with no `id`, which no host can match):
    // answered here with its id.
    if let (Some(id), Some(_)) = (object.get("id"), method) {
        if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            let why = "Invalid Request: a JSON-RPC request needs \"jsonrpc\": \"2.0\"";
            return Verdict::Answer(error_line(id, INVALID_REQUEST, why));
        }
        if object.get("params").is_some_and(|p| !p.is_object() && !p.is_array()) {
            let why = "Invalid Request: `params` must be an object (MCP's requests take named parameters)";
            return Verdict::Answer(error_line(id, INVALID_REQUEST, why));
        }
    }
    if method == Some("initialize") {
        // rmcp would reject it with a message about `_meta`, yet count the session as
        // begun, and end it on the next notification: say what is missing instead.
        let version = object.get("params").and_then(|p| p.get("protocolVersion")).and_then(Value::as_str);
        if let (None, Some(id)) = (version, object.get("id")) {
            let why = "Invalid params: `initialize` needs params.protocolVersion (e.g. \"2025-06-18\"), \
                       params.capabilities and params.clientInfo";
            return Verdict::Answer(error_line(id, INVALID_PARAMS, why));
        }
        return Verdict::Initialize;
    }
    if initialized {
        return Verdict::Pass;
    }
    let Some(id) = object.get("id").filter(|_| method.is_some()) else {
        // A notification or a response before `initialize`: nothing to answer, and rmcp
        // would end the session on it.
        tracing::debug!(?method, "ignoring a message sent before initialize");
        return Verdict::Drop;
    };
    // rmcp answers these itself: a ping, the 2026 `server/discover` probe, and a request
    // that opens the per-request lifecycle (its own protocol version in `_meta`), which
    // rmcp answers with the versions the proxy supports.
    let inline_version = object
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
        .is_some();
    if matches!(method, Some("ping" | "server/discover")) || inline_version {
        return Verdict::Pass;
    }
    let why = format!(
        "Server not initialized: send `initialize` (then `notifications/initialized`) before `{}`",
        method.unwrap_or_default()
    );
    Verdict::Answer(error_line(id, NOT_INITIALIZED, &why))
}

/// rmcp's side of the pipes: give it to `serve` as its transport.
pub(crate) type RmcpSide = (ReadHalf<DuplexStream>, WriteHalf<DuplexStream>);

/// Put the filter between `input`/`output` (the process's stdin/stdout) and rmcp: returns
/// rmcp's transport and the writer task. Two tasks run until the input ends (then rmcp
/// sees its end) and until rmcp's output ends: await the writer after rmcp's session has
/// ended (and its transport is dropped), so that its last answers reach the host.
pub(crate) fn filter<R, W>(input: R, output: W) -> (RmcpSide, tokio::task::JoinHandle<()>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
    let (from_rmcp, to_rmcp) = tokio::io::split(ours);
    let (answers_tx, answers_rx) = mpsc::unbounded_channel();
    // Dropped when the writer ends (the host's stdout is gone, or rmcp's output ended):
    // the reader then stops too and closes rmcp's input, which ends the session.
    let (writer_alive, writer_gone) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(read_lines(input, to_rmcp, answers_tx, writer_gone));
    let writer = tokio::spawn(async move {
        write_lines(from_rmcp, answers_rx, output).await;
        drop(writer_alive);
    });
    (tokio::io::split(theirs), writer)
}

/// Read the host's lines; pass the good ones to rmcp, answer the bad ones.
async fn read_lines<R: AsyncRead + Unpin>(
    input: R,
    mut to_rmcp: WriteHalf<DuplexStream>,
    answers: mpsc::UnboundedSender<String>,
    mut writer_gone: tokio::sync::oneshot::Receiver<()>,
) {
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    let mut initialized = false;
    loop {
        line.clear();
        let read = tokio::select! {
            read = read_line_bounded(&mut input, &mut line, super::MAX_MESSAGE) => read,
            _ = &mut writer_gone => {
                tracing::debug!("the MCP host's output is gone: ending the session");
                break;
            }
        };
        match read {
            Ok(LineRead::Eof) => break,
            Ok(LineRead::Line) => {}
            Ok(LineRead::Oversized(bytes)) => {
                tracing::warn!(bytes, "answered a message from the MCP host too large to take");
                let _ = answers.send(oversized_answer(&line, bytes));
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the MCP host's input");
                break;
            }
        }
        let verdict = judge(&line, initialized);
        match verdict {
            Verdict::Drop => continue,
            Verdict::Answer(answer) => {
                tracing::debug!(%answer, "answered a bad line from the MCP host");
                let _ = answers.send(answer);
                continue;
            }
            Verdict::Initialize => initialized = true,
            Verdict::Pass => {}
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        if to_rmcp.write_all(&line).await.is_err() {
            // rmcp has ended.
            break;
        }
    }
    // Closing rmcp's input ends its session, as the host's EOF does.
    let _ = to_rmcp.shutdown().await;
}

/// Write rmcp's lines and the filter's answers to the real stdout, whole lines only.
async fn write_lines<W: AsyncWrite + Unpin>(
    from_rmcp: ReadHalf<DuplexStream>,
    mut answers: mpsc::UnboundedReceiver<String>,
    mut output: W,
) {
    let mut from_rmcp = BufReader::new(from_rmcp);
    // Kept across iterations: a read interrupted by an answer keeps what it had read.
    let mut pending = Vec::new();
    let mut answers_open = true;
    loop {
        tokio::select! {
            // The filter's answers first: they answer lines read before rmcp's.
            biased;
            answer = answers.recv(), if answers_open => match answer {
                Some(mut answer) => {
                    answer.push('\n');
                    if write_line(&mut output, answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
                None => answers_open = false,
            },
            read = from_rmcp.read_until(b'\n', &mut pending) => {
                match read {
                    Ok(0) | Err(_) => {
                        if !pending.is_empty() {
                            let _ = write_line(&mut output, &pending).await;
                        }
                        while let Ok(mut answer) = answers.try_recv() {
                            answer.push('\n');
                            let _ = write_line(&mut output, answer.as_bytes()).await;
                        }
                        return;
                    }
                    Ok(_) if pending.ends_with(b"\n") => {
                        if write_line(&mut output, &pending).await.is_err() {
                            return;
                        }
                        pending.clear();
                    }
                    Ok(_) => {}
                }
            }
        }
    }
}

async fn write_line<W: AsyncWrite + Unpin>(output: &mut W, line: &[u8]) -> std::io::Result<()> {
    output.write_all(line).await?;
    output.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22, item 5: a line over the limit is read to its end, not kept, and answered
    /// with its id; the line after it is read whole.
    #[tokio::test]
    async fn a_line_over_the_limit_is_skipped_and_answered_with_its_id() {
        let big = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\": \"call-7\",\"method\":\"tools/call\",\"params\":{{\"t\":\"{}\"}}}}\n",
            "x".repeat(300_000)
        );
        let input = format!("{big}{{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"ping\"}}\n");
        let mut reader = BufReader::with_capacity(4096, input.as_bytes());
        let mut line = Vec::new();
        let read = read_line_bounded(&mut reader, &mut line, 100_000).await.expect("read");
        assert_eq!(read, LineRead::Oversized(big.len()));
        assert!(line.len() <= OVERSIZED_PREFIX, "only a prefix is kept: {}", line.len());
        let answer: Value = serde_json::from_str(&oversized_answer(&line, big.len())).expect("JSON");
        assert_eq!(answer["id"], "call-7", "{answer}");
        assert_eq!(answer["error"]["code"], INVALID_REQUEST, "{answer}");
        line.clear();
        assert_eq!(read_line_bounded(&mut reader, &mut line, 100_000).await.expect("read"), LineRead::Line);
        assert_eq!(line, b"{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"ping\"}\n");
        line.clear();
        assert_eq!(read_line_bounded(&mut reader, &mut line, 100_000).await.expect("read"), LineRead::Eof);
        // No id to be found: null, as JSON-RPC wants for an unknown id.
        assert_eq!(id_in_prefix(b"{\"method\":\"x\",\"params\":"), Value::Null);
        assert_eq!(id_in_prefix(b"{\"jsonrpc\":\"2.0\",\"id\":12,"), json!(12));
    }

    /// Issue 22, item 6: a request rmcp would answer without an id (no `jsonrpc`, params
    /// that are not an object, bytes that are not UTF-8) is answered here, with its id.
    #[test]
    fn a_request_rmcp_cannot_take_is_answered_with_its_id() {
        for initialized in [false, true] {
            let a = answer(r#"{"id":7,"method":"tools/list"}"#, initialized);
            assert_eq!((a["id"].clone(), a["error"]["code"].clone()), (json!(7), json!(INVALID_REQUEST)), "{a}");
            let a = answer(r#"{"jsonrpc":"1.0","id":"a","method":"tools/list"}"#, initialized);
            assert_eq!(a["id"], json!("a"), "{a}");
            let a = answer(r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":"x"}"#, initialized);
            assert_eq!((a["id"].clone(), a["error"]["code"].clone()), (json!(8), json!(INVALID_REQUEST)), "{a}");
            assert!(a["error"]["message"].as_str().is_some_and(|m| m.contains("`params` must be an object")), "{a}");
            let bad = b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":{\"name\":\"\xff\"}}";
            match judge(bad, initialized) {
                Verdict::Answer(text) => {
                    let a: Value = serde_json::from_str(&text).expect("json");
                    assert_eq!((a["id"].clone(), a["error"]["code"].clone()), (json!(9), json!(PARSE_ERROR)), "{a}");
                }
                other => panic!("invalid UTF-8 got {other:?}"),
            }
        }
        // Sound messages still pass untouched once initialized: params an object or an array,
        // or none; a notification without params.
        for good in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":[1,{"b":null}]}}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"x","params":[1,2]}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":4,"result":{}}"#,
        ] {
            assert_eq!(judge(good.as_bytes(), true), Verdict::Pass, "{good}");
        }
    }

    fn answer(line: &str, initialized: bool) -> Value {
        match judge(line.as_bytes(), initialized) {
            Verdict::Answer(text) => serde_json::from_str(&text).expect("an answer is JSON"),
            other => panic!("{line}: expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn bad_lines_are_answered_and_good_ones_pass() {
        for initialized in [false, true] {
            let a = answer("{not json", initialized);
            assert_eq!((a["id"].clone(), a["error"]["code"].clone()), (Value::Null, json!(PARSE_ERROR)), "{a}");
            let a = answer(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, initialized);
            assert_eq!(a["error"]["code"], INVALID_REQUEST, "{a}");
            assert!(a["error"]["message"].as_str().unwrap_or_default().contains("batch"), "{a}");
            assert_eq!(answer("42", initialized)["error"]["code"], INVALID_REQUEST);
            assert_eq!(judge(b"  \r\n", initialized), Verdict::Drop);
        }
        let a = answer(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#, false);
        assert_eq!((a["id"].clone(), a["error"]["code"].clone()), (json!(1), json!(INVALID_PARAMS)), "{a}");
        assert!(a["error"]["message"].as_str().unwrap_or_default().contains("protocolVersion"), "{a}");
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;
        assert_eq!(judge(init.as_bytes(), false), Verdict::Initialize);
        assert_eq!(judge(format!("\u{feff}{init}").as_bytes(), false), Verdict::Initialize);
        let list = r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#;
        assert_eq!(judge(list.as_bytes(), true), Verdict::Pass);
        let a = answer(list, false);
        assert_eq!((a["id"].clone(), a["error"]["code"].clone()), (json!("a"), json!(NOT_INITIALIZED)), "{a}");
        let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        assert_eq!(judge(note.as_bytes(), false), Verdict::Drop);
        assert_eq!(judge(note.as_bytes(), true), Verdict::Pass);
        for early in [
            r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"server/discover","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        ] {
            assert_eq!(judge(early.as_bytes(), false), Verdict::Pass, "{early}");
        }
    }

    #[tokio::test]
    async fn answers_and_rmcp_lines_reach_stdout_whole_and_input_end_reaches_rmcp() {
        let (host_in, proxy_in) = tokio::io::duplex(1024);
        let (proxy_out, host_out) = tokio::io::duplex(1024);
        let ((mut rmcp_in, mut rmcp_out), _writer) = filter(proxy_in, proxy_out);
        let (_, mut host_in) = tokio::io::split(host_in);
        let mut host_out = BufReader::new(host_out).lines();
        host_in
            .write_all(b"oops\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\"}}\n")
            .await
            .expect("write");
        let bad: Value =
            serde_json::from_str(&host_out.next_line().await.expect("read").expect("a line")).expect("json");
        assert_eq!(bad["error"]["code"], PARSE_ERROR);
        let mut passed = BufReader::new(&mut rmcp_in);
        let mut line = String::new();
        passed.read_line(&mut line).await.expect("rmcp reads");
        assert!(line.contains("initialize"), "{line}");
        rmcp_out.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n").await.expect("rmcp writes");
        let good = host_out.next_line().await.expect("read").expect("a line");
        assert_eq!(good, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        drop(host_in);
        line.clear();
        assert_eq!(passed.read_line(&mut line).await.expect("eof"), 0, "the host's EOF reaches rmcp");
    }
}
