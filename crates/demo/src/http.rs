//! A tiny hand-written HTTP/1.1 server: one request per connection, `Connection: close`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::args::HealthMode;

/// Largest request head accepted; a longer one is answered with 431.
const MAX_HEAD: usize = 64 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Size of the `--health-mode huge` body.
pub(crate) const HUGE_BODY: usize = 10 * 1024 * 1024;

/// What the server knows; shared by every connection.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) started: Instant,
    pub(crate) started_unix_nanos: u128,
    pub(crate) ready_after: Duration,
    pub(crate) skills: u64,
    pub(crate) version: String,
    pub(crate) health_mode: HealthMode,
    /// From this long after start, /health answers 500 (a liveness failure).
    pub(crate) sick_after: Option<Duration>,
    /// One uvicorn-style line per request on stderr.
    pub(crate) access_log: bool,
    health_requests: AtomicU64,
    health_requests_after_ready: AtomicU64,
}

/// Loading progress at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) complete: bool,
    pub(crate) skills_loaded: u64,
}

impl State {
    pub(crate) fn new(
        started: Instant,
        started_unix_nanos: u128,
        ready_after: Duration,
        skills: u64,
        version: String,
        health_mode: HealthMode,
    ) -> Self {
        State {
            started,
            started_unix_nanos,
            ready_after,
            skills,
            version,
            health_mode,
            access_log: false,
            sick_after: None,
            health_requests: AtomicU64::new(0),
            health_requests_after_ready: AtomicU64::new(0),
        }
    }

    /// /health answers 500 from `after` on.
    pub(crate) fn with_sick_after(mut self, after: Option<Duration>) -> Self {
        self.sick_after = after;
        self
    }

    pub(crate) fn with_access_log(mut self, on: bool) -> Self {
        self.access_log = on;
        self
    }

    /// The instant loading completes.
    pub(crate) fn ready_instant(&self) -> Instant {
        self.started + self.ready_after
    }

    /// Progress now: skills grow linearly from 0 toward N over `ready_after`.
    pub(crate) fn progress(&self) -> Progress {
        let elapsed = self.started.elapsed();
        if elapsed >= self.ready_after {
            return Progress { complete: true, skills_loaded: self.skills };
        }
        let loaded = u128::from(self.skills) * elapsed.as_nanos() / self.ready_after.as_nanos();
        // elapsed < ready_after, so loaded < skills and fits in u64.
        let skills_loaded = u64::try_from(loaded).unwrap_or(self.skills).min(self.skills);
        Progress { complete: false, skills_loaded }
    }

    /// The wall-clock instant loading completed (start + ready-after), once it has.
    pub(crate) fn ready_at_unix_nanos(&self) -> Option<u128> {
        self.progress().complete.then(|| self.started_unix_nanos + self.ready_after.as_nanos())
    }

    /// The /health body, keys in the claude-skills order.
    fn health_json(&self, progress: Progress) -> String {
        let version = serde_json::Value::from(self.version.as_str());
        format!(
            "{{\"status\":\"ok\",\"loading_complete\":{},\"skills_loaded\":{},\"version\":{version}}}",
            progress.complete, progress.skills_loaded
        )
    }

    fn stats_json(&self) -> String {
        let ready_at = match self.ready_at_unix_nanos() {
            Some(n) => n.to_string(),
            None => "null".to_owned(),
        };
        let write = match crate::output::LOG_WRITE_NANOS.load(Ordering::SeqCst) {
            0 => "null".to_owned(),
            n => n.to_string(),
        };
        format!(
            "{{\"health_requests\":{},\"ready_at_unix_nanos\":{ready_at},\"started_at_unix_nanos\":{},\"health_requests_after_ready\":{},\"log_write_nanos\":{write}}}",
            self.health_requests.load(Ordering::SeqCst),
            self.started_unix_nanos,
            self.health_requests_after_ready.load(Ordering::SeqCst),
        )
    }
}

/// Serves one connection: reads the request head, answers, closes.
pub(crate) async fn handle(mut stream: TcpStream, state: Arc<State>) {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            let _ = respond(&mut stream, 431, "text/plain", b"request head too large\n").await;
            return;
        }
        // Read error, early close or too slow: nothing to answer.
        Ok(Err(_)) | Err(_) => return,
    };
    let (method, path) = request_line(&head);
    let peer = stream.peer_addr().ok();
    let status = match (method, path) {
        ("GET", "/health") => health_status(&state),
        ("GET", "/stats" | "/") => 200,
        _ => 404,
    };
    let _ = match (method, path) {
        ("GET", "/health") => health(&mut stream, &state).await,
        ("GET", "/stats") => {
            let body = state.stats_json();
            respond(&mut stream, 200, "application/json", body.as_bytes()).await
        }
        ("GET", "/") => respond(&mut stream, 200, "text/plain", b"tether demo backend\n").await,
        _ => respond(&mut stream, 404, "text/plain", b"not found\n").await,
    };
    let _ = stream.shutdown().await;
    if state.access_log {
        // As uvicorn logs it, after the response: the line a probe's own request causes.
        let peer = peer.map_or_else(|| "-".to_string(), |p| p.to_string());
        let reason = if status == 200 {
            "OK"
        } else if status == 404 {
            "Not Found"
        } else {
            "Internal Server Error"
        };
        crate::output::warn(&format!("INFO:     {peer} - \"{method} {path} HTTP/1.1\" {status} {reason}"));
    }
}

/// The status `/health` answers now (for the access log).
fn health_status(state: &State) -> u16 {
    let sick = state.sick_after.is_some_and(|after| state.started.elapsed() >= after);
    if sick || state.health_mode == HealthMode::Status500 { 500 } else { 200 }
}

async fn health(stream: &mut TcpStream, state: &State) -> std::io::Result<()> {
    let progress = state.progress();
    state.health_requests.fetch_add(1, Ordering::SeqCst);
    if progress.complete {
        state.health_requests_after_ready.fetch_add(1, Ordering::SeqCst);
    }
    if state.sick_after.is_some_and(|after| state.started.elapsed() >= after) {
        return respond(stream, 500, "text/plain", b"demo-backend: sick, as asked by --sick-after\n").await;
    }
    match state.health_mode {
        HealthMode::Ok => {
            let body = state.health_json(progress);
            respond(stream, 200, "application/json", body.as_bytes()).await
        }
        HealthMode::Status500 => {
            let body = b"internal error (demo-backend --health-mode status500)\n";
            respond(stream, 500, "text/plain", body).await
        }
        HealthMode::NonJson => respond(stream, 200, "application/json", b"not json").await,
        HealthMode::Hang => {
            // Keep the connection (and this task) alive forever; other connections are
            // served by their own tasks.
            std::future::pending::<()>().await;
            Ok(())
        }
        HealthMode::Huge => huge(stream, state, progress).await,
        HealthMode::Endless => endless(stream).await,
    }
}

/// A chunked answer that never ends, until the client goes away.
async fn endless(stream: &mut TcpStream) -> std::io::Result<()> {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(b"1\r\n{\r\n").await?;
    loop {
        // 0x11 = 17 bytes: `"pad":"xxxxxxxx",`
        stream.write_all(b"11\r\n\"pad\":\"xxxxxxxx\",\r\n").await?;
        stream.flush().await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A valid JSON object of exactly [`HUGE_BODY`] bytes: the real status fields, then padding.
async fn huge(stream: &mut TcpStream, state: &State, progress: Progress) -> std::io::Result<()> {
    let mut json = state.health_json(progress);
    json.pop(); // the closing brace
    let prefix = format!("{json},\"padding\":\"");
    let suffix = "\"}";
    let padding = HUGE_BODY.saturating_sub(prefix.len() + suffix.len());
    let head = response_head(200, "application/json", prefix.len() + padding + suffix.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(prefix.as_bytes()).await?;
    let chunk = [b'x'; 64 * 1024];
    let mut left = padding;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n]).await?;
        left -= n;
    }
    stream.write_all(suffix.as_bytes()).await?;
    stream.flush().await
}

/// Reads until the end of the request head (`\r\n\r\n`). `Ok(None)`: the head is too large.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // Search only the new bytes (and the 3 before them) for the terminator.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(from + end);
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

/// Method and path (query string removed) of a request head.
fn request_line(head: &[u8]) -> (&str, &str) {
    let line = head.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).unwrap_or_default();
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(['?', '#']).next().unwrap_or_default();
    (method, path)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

fn response_head(status: u16, content_type: &str, len: usize) -> String {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
        reason(status)
    )
}

async fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let mut out = response_head(status, content_type, body.len()).into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_parts() {
        assert_eq!(request_line(b"GET /health?x=1 HTTP/1.1\r\nHost: a"), ("GET", "/health"));
        assert_eq!(request_line(b"POST / HTTP/1.1"), ("POST", "/"));
        assert_eq!(request_line(b""), ("", ""));
        assert_eq!(request_line(b"\xff\xfe"), ("", ""));
    }

    #[test]
    fn progress_grows_toward_the_skill_count() {
        let state = State::new(Instant::now(), 0, Duration::from_secs(3600), 5, "v".into(), HealthMode::Ok);
        let p = state.progress();
        assert!(!p.complete);
        assert!(p.skills_loaded < 5);
        assert_eq!(state.ready_at_unix_nanos(), None);
        let zero = State::new(Instant::now(), 7, Duration::ZERO, 0, "v".into(), HealthMode::Ok);
        assert_eq!(zero.progress(), Progress { complete: true, skills_loaded: 0 });
        assert_eq!(zero.ready_at_unix_nanos(), Some(7));
    }

    #[test]
    fn bodies_are_json_with_keys_in_contract_order() {
        let state = State::new(Instant::now(), 7, Duration::ZERO, 3, "1.\"2".into(), HealthMode::Ok);
        let body = state.health_json(state.progress());
        assert_eq!(body, r#"{"status":"ok","loading_complete":true,"skills_loaded":3,"version":"1.\"2"}"#);
        let stats: serde_json::Value = serde_json::from_str(&state.stats_json()).expect("json");
        assert_eq!(stats["ready_at_unix_nanos"], 7);
        assert_eq!(stats["health_requests"], 0);
    }
}
