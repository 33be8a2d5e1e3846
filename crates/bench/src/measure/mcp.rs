//! Item 10: `tether mcp-proxy` in front of the MCP test backend (`tether-mcp-test-backend`,
//! the claude-skills `/health`, run with `--preset claude-skills`).
//!
//! - **Process start → `initialize` answer**, while the backend cannot be ready (its
//!   `--ready-file` never appears): the answer must not wait for the backend. Baseline:
//!   `tether --version` spawn → exit, the process start of the same binary.
//! - **Process start → first `tools/list` answer** with `--preset claude-skills` (the same
//!   proxies, right after their `initialize`: `initialized` and `tools/list` sent at once, as
//!   a host does): the preset's three tools, without waiting for the backend.
//! - **Two windows → one backend**: two proxies of the same configuration with `--share`
//!   (two host windows), each with a forwarded call; the backend processes running then are
//!   counted (by their argv: the test backend's binary and this run's own marker file).
//! - **Per-call forwarding overhead**: N sequential `tools/call` of `find_helpful_skills`
//!   through one proxy (stdio → proxy → its rmcp HTTP client → backend `/mcp`), paired one
//!   by one with the same call made directly to the same backend with rmcp's streamable
//!   HTTP client (the proxy's client settings: no idle pool, no HTTP proxy).
//!
//! The host side is a raw JSON-RPC line exchange over the proxy's stdin/stdout with
//! blocking reads on this thread (no MCP client library), so it adds next to nothing; the
//! timer stops the moment the answer's line is read, before it is parsed. A watchdog kills
//! a proxy that hangs, so a hang fails the item instead of the whole run.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use tokio::runtime::Handle;

use crate::error::{BenchResult, Context, fail};
use crate::harness::{Harness, ms};
use crate::report::{Row, Target, fmt_num};

/// The host's `initialize` request, one line.
const INITIALIZE: &str = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\
                          \"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"bench\",\"version\":\"1\"}}}\n";
/// The host's `initialized` notification, one line.
const INITIALIZED: &str = "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n";
/// The host's first `tools/list`, one line.
const LIST: &str = "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}\n";
/// The tool called, and the text its answer must contain.
const TOOL: &str = "find_helpful_skills";
const EXPECTED: &str = "top 3 skills for: bench";
/// The instance name of the proxy of the call measurement (its record: `NAME.json`).
const NAME: &str = "bench-mcp";
/// Calls through each path before the timed ones (the first through the proxy also waits
/// until the backend is ready).
const WARM_UP: usize = 5;
/// The longest a proxy may live; the watchdog kills it then.
const SESSION_LIMIT: Duration = Duration::from_secs(120);
/// The longest a proxy may take to exit after its stdin closed (it stops the backend).
const EXIT_LIMIT: Duration = Duration::from_secs(30);
/// The longest one direct call may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// Kills a process (SIGKILL) that outlives its limit. The thread is started before the timed
/// spawn and told the pid after it; dropping the watchdog disarms it (and joins the thread).
struct Watchdog {
    pid: Option<mpsc::Sender<u32>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    fn new(limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<u32>();
        let thread = std::thread::spawn(move || {
            let Ok(pid) = rx.recv() else { return };
            // Disarmed: the sender is dropped (Disconnected) before the limit.
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit)
                && let Ok(pid) = i32::try_from(pid)
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        });
        Watchdog { pid: Some(tx), thread: Some(thread) }
    }

    fn watch(&self, pid: u32) {
        if let Some(tx) = &self.pid {
            let _ = tx.send(pid);
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.pid = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A running `tether mcp-proxy` with its stdin and stdout piped here and its stderr (its
/// logs and the backend's output) in a file.
struct Proxy {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    log: PathBuf,
    watchdog: Option<Watchdog>,
}

impl Proxy {
    /// Spawn the prepared `command` (see [`proxy_command`]); `watchdog` bounds its life.
    fn spawn(command: &mut Command, log: &Path, watchdog: Watchdog) -> BenchResult<Proxy> {
        let mut child = command.spawn().ctx("cannot spawn `tether mcp-proxy`")?;
        watchdog.watch(child.id());
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return fail("`tether mcp-proxy` was spawned without its stdin/stdout pipes");
        };
        Ok(Proxy {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            log: log.to_path_buf(),
            watchdog: Some(watchdog),
        })
    }

    /// The last lines the proxy wrote on stderr, for an error message.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
        if tail.is_empty() { String::new() } else { format!(" (its stderr: {tail})") }
    }

    /// Write one message (a line ending in `\n`) in one write.
    fn send(&mut self, line: &str) -> BenchResult<()> {
        let written = match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(line.as_bytes()),
            None => return fail("the proxy's stdin is closed"),
        };
        written.map_err(|e| crate::error::BenchError(format!("cannot write to the proxy: {e}{}", self.tail())))
    }

    /// The answer to request `id` (other messages skipped) and the instant its line was
    /// read (before parsing). A JSON-RPC error answer is an error.
    fn answer(&mut self, id: u64) -> BenchResult<(Value, Instant)> {
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.stdout.read_line(&mut line);
            let at = Instant::now();
            match read {
                Ok(0) => {
                    return fail(format!("the proxy closed its stdout before answering request {id}{}", self.tail()));
                }
                Ok(_) => {}
                Err(e) => return fail(format!("cannot read the proxy's stdout: {e}{}", self.tail())),
            }
            let message: Value = serde_json::from_str(&line)
                .ctx(format!("the proxy's stdout is not JSON-RPC: {:?}", line.trim_end()))?;
            if message["id"] != id {
                continue;
            }
            if let Some(error) = message.get("error") {
                return fail(format!("the proxy answered request {id} with an error: {error}"));
            }
            return Ok((message, at));
        }
    }

    /// Close stdin (the host went away), wait for the proxy to stop the backend and exit,
    /// and require exit code 0.
    fn close(mut self) -> BenchResult<()> {
        // Disarm first: the child is not reaped yet, so its pid is still its own.
        self.watchdog = None;
        self.stdin = None;
        let deadline = Instant::now() + EXIT_LIMIT;
        let status: ExitStatus = loop {
            match self.child.try_wait().ctx("cannot wait for the proxy")? {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    return fail(format!(
                        "the proxy did not exit within {} s after its stdin closed{}",
                        EXIT_LIMIT.as_secs(),
                        self.tail()
                    ));
                }
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        if !status.success() {
            return fail(format!("the proxy exited with {status} after its stdin closed{}", self.tail()));
        }
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Only on an error path: a proxy still running is killed (its guard stops the backend).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `tether mcp-proxy PROXY_FLAGS --preset claude-skills -- BACKEND --port {port} BACKEND_FLAGS`
/// (argv, no shell) with the state directory `DIR/state`, working directory `DIR` (no
/// `tether.toml` of ours), the default log level, stdin/stdout piped and stderr into `log`.
fn proxy_command(
    h: &Harness,
    backend: &Path,
    dir: &Path,
    proxy_flags: &[&str],
    backend_flags: &[&str],
    log: &Path,
) -> BenchResult<Command> {
    let stderr = File::create(log).ctx(format!("cannot create {}", log.display()))?;
    let mut command = Command::new(&h.exe);
    command
        .arg("mcp-proxy")
        // A backend of this proxy's own unless the row is about sharing (sharing is the
        // default for a native backend, and a shared one lingers after the proxy).
        .args((!proxy_flags.contains(&"--share")).then_some("--no-share"))
        .args(proxy_flags)
        .args(["--preset", "claude-skills", "--"])
        .arg(backend)
        .args(["--port", "{port}"])
        .args(backend_flags)
        .env("TETHER_STATE_DIR", dir.join("state"))
        .env_remove("TETHER_LOG")
        .env_remove("RUST_LOG")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr);
    Ok(command)
}

/// `tether --version`, spawn → exit, in ms: the process start of the same binary.
fn version_start(h: &Harness) -> BenchResult<f64> {
    let mut command = Command::new(&h.exe);
    command.arg("--version").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let t0 = Instant::now();
    let status = command.status().ctx("cannot run `tether --version`")?;
    let elapsed = t0.elapsed();
    if !status.success() {
        return fail(format!("`tether --version` exited with {status}"));
    }
    Ok(ms(elapsed))
}

/// How long a proxy runs before the `initialize` of the context row is sent.
const SETTLE: Duration = Duration::from_millis(300);

/// The `initialize` figures, in ms: from just before the spawn until the answer was read;
/// `tether --version` spawn → exit; and write → answer for an `initialize` sent [`SETTLE`]
/// after the spawn (the backend started meanwhile, still loading).
struct InitializeTimes {
    from_spawn: Vec<f64>,
    /// From just before the spawn until the first `tools/list` answer was read.
    first_list: Vec<f64>,
    version: Vec<f64>,
    settled: Vec<f64>,
}

/// `runs` rounds of: `tether --version`; a proxy initialized at once; a proxy initialized
/// [`SETTLE`] after its start. Each proxy is closed and must exit 0.
fn initialize_times(h: &Harness, backend: &Path, runs: usize) -> BenchResult<InitializeTimes> {
    let dir = tempfile::tempdir().ctx("cannot create a temporary directory")?;
    let never = dir.path().join("never-ready");
    let never = never.to_string_lossy();
    let log = dir.path().join("proxy-initialize.log");
    let mut t =
        InitializeTimes { from_spawn: Vec::new(), first_list: Vec::new(), version: Vec::new(), settled: Vec::new() };
    for _ in 0..runs {
        t.version.push(version_start(h)?);
        for settle in [Duration::ZERO, SETTLE] {
            let mut command = proxy_command(h, backend, dir.path(), &[], &["--ready-file", &never], &log)?;
            let watchdog = Watchdog::new(SESSION_LIMIT);
            let spawned = Instant::now();
            let mut proxy = Proxy::spawn(&mut command, &log, watchdog)?;
            if !settle.is_zero() {
                std::thread::sleep(settle);
            }
            let sent = Instant::now();
            proxy.send(INITIALIZE)?;
            let (answer, at) = proxy.answer(1)?;
            if settle.is_zero() {
                t.from_spawn.push(ms(at - spawned));
            } else {
                t.settled.push(ms(at - sent));
            }
            if answer["result"]["serverInfo"]["name"] != "tether-mcp-proxy" {
                return fail(format!("unexpected initialize answer: {answer}"));
            }
            if settle.is_zero() {
                // A host's next step: `initialized`, then its first (and maybe only) list.
                proxy.send(INITIALIZED)?;
                proxy.send(LIST)?;
                let (listed, at) = proxy.answer(2)?;
                t.first_list.push(ms(at - spawned));
                let tools = listed["result"]["tools"].as_array().map_or(0, Vec::len);
                if tools != 3 {
                    return fail(format!("the first tools/list is not the preset's 3 tools: {listed}"));
                }
            }
            proxy.close()?;
        }
    }
    Ok(t)
}

/// The text of a `tools/call` result, or why it is not the expected answer.
fn check_result(is_error: bool, text: &str) -> BenchResult<()> {
    if is_error || !text.contains(EXPECTED) {
        return fail(format!("unexpected {TOOL} result (error: {is_error}): {text:?}"));
    }
    Ok(())
}

/// One `tools/call` through the proxy: ms from writing the request until its answer's
/// line was read.
fn proxy_call(proxy: &mut Proxy, id: u64) -> BenchResult<f64> {
    let request = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"{TOOL}\",\
         \"arguments\":{{\"task_description\":\"bench\",\"top_k\":3}}}}}}\n"
    );
    let t0 = Instant::now();
    proxy.send(&request)?;
    let (answer, at) = proxy.answer(id)?;
    let result = &answer["result"];
    check_result(result["isError"] == true, result["content"][0]["text"].as_str().unwrap_or_default())?;
    Ok(ms(at - t0))
}

/// The backend's port, from the proxy's record `STATE/NAME.json`.
fn recorded_port(state: &Path) -> BenchResult<u16> {
    let path = state.join(format!("{NAME}.json"));
    let text = std::fs::read_to_string(&path).ctx(format!("cannot read the proxy's record {}", path.display()))?;
    let record: Value = serde_json::from_str(&text).ctx(format!("bad record {}", path.display()))?;
    let port = record["port"].as_u64().ctx(format!("no port in {}: {text}", path.display()))?;
    u16::try_from(port).ctx(format!("bad port {port} in {}", path.display()))
}

type Direct = RunningService<RoleClient, ClientConfig>;

/// rmcp's streamable HTTP client on the backend's `/mcp`, with the proxy's own client
/// settings (see `tether::mcp`): no idle pool (as rmcp's default client), no HTTP proxy.
async fn connect_direct(port: u16) -> BenchResult<Direct> {
    let http =
        reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().ctx("cannot build the HTTP client")?;
    let config = StreamableHttpClientTransportConfig::with_uri(format!("http://127.0.0.1:{port}/mcp"));
    let transport = StreamableHttpClientTransport::with_client(http, config);
    let client = tokio::time::timeout(CALL_LIMIT, ClientConfig::default().serve(transport)).await;
    client
        .ctx("rmcp's client got no initialize answer from the backend in time")?
        .ctx("rmcp's client cannot initialize with the backend")
}

/// One `tools/call` directly to the backend: ms around `call_tool`.
async fn direct_call(client: &Direct, args: &serde_json::Map<String, Value>) -> BenchResult<f64> {
    let params = CallToolRequestParams::new(TOOL).with_arguments(args.clone());
    let t0 = Instant::now();
    let result = tokio::time::timeout(CALL_LIMIT, client.call_tool(params)).await;
    let elapsed = t0.elapsed();
    let result = result.ctx("the direct call got no answer in time")?.ctx("the direct call failed")?;
    let text = result.content.iter().filter_map(|b| b.as_text()).map(|t| t.text.as_str()).collect::<Vec<_>>();
    check_result(result.is_error == Some(true), &text.join("\n"))?;
    Ok(ms(elapsed))
}

/// The per-call figures, in ms, paired call by call.
struct CallTimes {
    /// Through the proxy.
    proxy: Vec<f64>,
    /// Directly, rmcp's client on a current-thread runtime (as the proxy's own client).
    direct: Vec<f64>,
    /// Directly, rmcp's client on the benchmark's multi-thread runtime (context).
    direct_multi: Vec<f64>,
}

/// `calls` timed `tools/call` through one proxy in front of a ready backend, each paired
/// with the same call made directly to that backend, by a client on a current-thread
/// runtime and by one on `multi` (a multi-thread runtime).
///
/// The proxy path and the first direct client run on a thread of their own with a
/// current-thread runtime, as in the proxy (whose client that one then matches): the
/// proxy's pipe is read with blocking reads there, and rmcp's client runs only while its
/// call is awaited. The other client's calls are timed inside tasks on `multi`.
async fn call_times(h: &Harness, backend: &Path, calls: usize, multi: Handle) -> BenchResult<CallTimes> {
    let (h, backend) = (h.clone(), backend.to_path_buf());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-mcp-calls".into())
        .spawn(move || {
            let measured = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ctx("cannot start a current-thread runtime")
                .and_then(|rt| rt.block_on(call_times_here(&h, &backend, calls, multi)));
            let _ = tx.send(measured);
        })
        .ctx("cannot start the call measurement thread")?;
    rx.await.ctx("the call measurement thread ended without a result")?
}

/// [`call_times`] on this thread's current-thread runtime.
async fn call_times_here(h: &Harness, backend: &Path, calls: usize, multi: Handle) -> BenchResult<CallTimes> {
    let dir = tempfile::tempdir().ctx("cannot create a temporary directory")?;
    let log = dir.path().join("proxy-calls.log");
    let mut command = proxy_command(h, backend, dir.path(), &["--name", NAME], &[], &log)?;
    let mut proxy = Proxy::spawn(&mut command, &log, Watchdog::new(SESSION_LIMIT))?;
    proxy.send(INITIALIZE)?;
    proxy.answer(1)?;
    proxy.send(INITIALIZED)?;
    let mut id = 2;
    for _ in 0..WARM_UP {
        proxy_call(&mut proxy, id)?;
        id += 1;
    }
    let port = recorded_port(&dir.path().join("state"))?;
    let client = connect_direct(port).await?;
    let other = Arc::new(multi.spawn(connect_direct(port)).await.ctx("the connect task failed")??);
    let args = Arc::new(match serde_json::json!({"task_description": "bench", "top_k": 3}) {
        Value::Object(m) => m,
        _ => return fail("the arguments are not an object"),
    });
    // One call of the multi-thread client, timed inside its task there.
    let on_multi = |other: &Arc<Direct>, args: &Arc<serde_json::Map<String, Value>>| {
        let (other, args) = (Arc::clone(other), Arc::clone(args));
        multi.spawn(async move { direct_call(&other, &args).await })
    };
    for _ in 0..WARM_UP {
        direct_call(&client, &args).await?;
        on_multi(&other, &args).await.ctx("the call task failed")??;
    }
    let mut t = CallTimes {
        proxy: Vec::with_capacity(calls),
        direct: Vec::with_capacity(calls),
        direct_multi: Vec::with_capacity(calls),
    };
    for _ in 0..calls {
        t.proxy.push(proxy_call(&mut proxy, id)?);
        t.direct.push(direct_call(&client, &args).await?);
        t.direct_multi.push(on_multi(&other, &args).await.ctx("the call task failed")??);
        id += 1;
    }
    let _ = client.cancel().await;
    if let Ok(other) = Arc::try_unwrap(other) {
        let _ = multi.spawn(async move { other.cancel().await }).await;
    }
    proxy.close()?;
    Ok(t)
}

/// The backend processes running now of this run: argv[0] is the test backend's binary and
/// an argument is `marker`.
fn backends_running(backend: &Path, marker: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let (backend, marker) = (backend.as_os_str().as_encoded_bytes(), marker.as_os_str().as_encoded_bytes());
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let mut argv = cmdline.split(|b| *b == 0);
            argv.next() == Some(backend) && argv.any(|a| a == marker)
        })
        .count()
}

/// Two proxies of one configuration with `--share` (two host windows), each initialized and
/// with one forwarded call (so the backend is ready and used by both): how many backends run.
fn two_windows(h: &Harness, backend: &Path) -> BenchResult<usize> {
    let dir = tempfile::tempdir().ctx("cannot create a temporary directory")?;
    // Exists: the backend is ready at once; its path in the argv tells this run's backends.
    let marker = dir.path().join("ready-marker");
    std::fs::write(&marker, "").ctx("cannot create the marker file")?;
    let marker_arg = marker.to_string_lossy().into_owned();
    let mut windows = Vec::new();
    for window in ["a", "b"] {
        let log = dir.path().join(format!("proxy-window-{window}.log"));
        let mut command =
            proxy_command(h, backend, dir.path(), &["--share", "0s"], &["--ready-file", &marker_arg], &log)?;
        let mut proxy = Proxy::spawn(&mut command, &log, Watchdog::new(SESSION_LIMIT))?;
        proxy.send(INITIALIZE)?;
        proxy.answer(1)?;
        proxy.send(INITIALIZED)?;
        proxy_call(&mut proxy, 2)?;
        windows.push(proxy);
    }
    let running = backends_running(backend, &marker);
    for proxy in windows {
        proxy.close()?;
    }
    Ok(running)
}

/// The median of `x` (as in the table).
fn median(x: &[f64]) -> f64 {
    Row::new(0, "", "", x, Target::None).median
}

/// Item 10.
pub async fn mcp_proxy(h: &Harness, backend: &Path, reps: usize) -> BenchResult<Vec<Row>> {
    let starts = reps + reps.div_ceil(3);
    let init = tokio::task::block_in_place(|| initialize_times(h, backend, starts))?;
    let backends = tokio::task::block_in_place(|| two_windows(h, backend))?;
    let calls = reps * 20;
    let t = call_times(h, backend, calls, Handle::current()).await?;
    let (proxy, direct) = (median(&t.proxy), median(&t.direct));
    let paired: Vec<f64> = t.proxy.iter().zip(&t.direct).map(|(p, d)| p - d).collect();
    Ok(vec![
        Row::new(10, "mcp-proxy: process start → `initialize` answer", "ms", &init.from_spawn, Target::AtMost(10.0))
            .note("spawn + one raw JSON-RPC line each way; backend never ready (--ready-file absent)"),
        Row::new(
            10,
            "mcp-proxy --preset claude-skills: process start → first `tools/list` answer",
            "ms",
            &init.first_list,
            Target::AtMost(10.0),
        )
        .note("initialize, then initialized + tools/list at once; the preset's 3 tools, backend never ready"),
        Row::new(
            10,
            "mcp-proxy: two windows (two proxies, --share) → backends running",
            "count",
            &[backends as f64],
            Target::AtMost(1.0),
        )
        .note("same configuration, one forwarded call each; counted by argv while both run"),
        Row::new(10, "  baseline: `tether --version`, spawn → exit", "ms", &init.version, Target::None)
            .note("process start of the same binary: exec, dynamic linking, clap"),
        Row::new(
            10,
            "  context: `initialize` sent 300 ms after the start, write → answer",
            "ms",
            &init.settled,
            Target::None,
        )
        .note("the answer itself, once the proxy has started the backend"),
        Row::new(10, "mcp-proxy: `tools/call` through the proxy", "ms", &t.proxy, Target::None)
            .note(format!("{TOOL}, sequential; stdio line → proxy → its rmcp HTTP client → backend /mcp")),
        Row::new(10, "  direct: the same call with rmcp's streamable HTTP client", "ms", &t.direct, Target::None).note(
            "same backend, paired call by call; current-thread runtime and no idle pool \
             (pool_max_idle_per_host(0)), as the proxy's client",
        ),
        Row::new(
            10,
            "mcp-proxy: per-call overhead = proxy median − direct median",
            "ms",
            &[proxy - direct],
            Target::AtMost(1.0),
        )
        .note(format!(
            "one extra stdio hop + the proxy's own HTTP client, a new connection per request like rmcp's \
                 default; median of the paired differences {} ms",
            fmt_num(median(&paired))
        )),
        Row::new(10, "  ratio: proxy median / direct median", "×", &[proxy / direct], Target::None),
        Row::new(10, "  context: direct, rmcp's client on a multi-thread runtime", "ms", &t.direct_multi, Target::None)
            .note("the benchmark's own runtime, paired too; not used for the overhead"),
    ])
}
