//! A real MCP backend for tests: rmcp's streamable-HTTP server with canned tools, shaped like
//! the claude-skills backend tether runs in production.
//!
//! The binary `tether-mcp-test-backend` (a thin wrapper around [`main`]) serves:
//!
//! - `GET /health`: `{"status":"ok","loading_complete":B,"skills_loaded":K,"version":"0.1.0"}`.
//!   For the first `--ready-after MS` of the run `loading_complete` is false and `K` grows
//!   linearly from 0 toward `--skills`; from then on it is true and `K` = `--skills`.
//! - `/mcp`: the MCP streamable HTTP endpoint (rmcp [`StreamableHttpService`] with a
//!   [`LocalSessionManager`] and the default config), answering from the first instant,
//!   loading or not. Tools: `list_skills`, `find_helpful_skills`, and with
//!   `--tools-variant b` also `read_skill_document` (see [`tools`]); with `--cancel-log PATH`
//!   also `wait_for_cancel`, which runs until its request is cancelled and logs that to PATH.
//!
//! It prints `mcp-test-backend listening on http://HOST:PORT` (the real port) on stdout once
//! bound, `mcp-test-backend ready` when loading completes if `--print-ready` is given, logs
//! `call NAME` on stderr for each `tools/call`, exits 0 on SIGTERM/SIGINT and exits 3 right
//! after answering its `--exit-after-calls N`-th `tools/call`.
//!
//! Tests of other packages find the binary with [`mcp_backend_exe`].

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;
use tokio::net::TcpListener;

/// The MCP server name the backend reports in `initialize` (`serverInfo.name`).
pub const SERVER_NAME: &str = "mcp-test-backend";
/// The version the backend reports, in `/health` and in `serverInfo.version`.
pub const VERSION: &str = "0.1.0";
/// The binary's name (without the platform's executable suffix).
pub const BIN_NAME: &str = "tether-mcp-test-backend";
/// The exit code after answering the `--exit-after-calls`-th `tools/call`.
pub const EXIT_AFTER_CALLS_CODE: i32 = 3;
/// The stdout line prefix giving the bound address: `mcp-test-backend listening on http://…`.
pub const LISTENING_PREFIX: &str = "mcp-test-backend listening on http://";
/// The stdout line printed when loading completes, with `--print-ready`.
pub const READY_LINE: &str = "mcp-test-backend ready";

/// Which set of tools the backend serves: two versions of "the same" backend, so a client can
/// see the tool list change between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ToolsVariant {
    /// `list_skills` and `find_helpful_skills`.
    A,
    /// Variant `a`'s tools and `read_skill_document`.
    B,
}

/// The command line of `tether-mcp-test-backend`.
#[derive(Debug, Clone, Parser)]
#[command(name = BIN_NAME, version = VERSION, about = "A streamable-HTTP MCP backend with canned tools, for tether's tests.")]
pub struct Args {
    /// The port to listen on (0: any free port; the real one is printed on stdout).
    #[arg(long)]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Loading time in milliseconds (`300`, or `300ms`, `2s`): `/health` says
    /// `loading_complete: false` until it has passed; `/mcp` answers throughout.
    #[arg(long, default_value = "0", value_name = "MS", value_parser = parse_millis)]
    pub ready_after: Duration,
    /// How many skills the backend has (`skills_loaded` once loaded; the `list_skills` lines).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub skills: u64,
    /// Which tools to serve.
    #[arg(long, value_enum, default_value_t = ToolsVariant::A)]
    pub tools_variant: ToolsVariant,
    /// Exit with code 3 right after answering the N-th `tools/call`.
    #[arg(long, value_name = "N")]
    pub exit_after_calls: Option<u64>,
    /// Print `mcp-test-backend ready` on stdout when loading completes.
    #[arg(long)]
    pub print_ready: bool,
    /// Loading is not complete until this file exists (and `--ready-after` has passed);
    /// meanwhile `skills_loaded` is 1. Lets a test decide when the backend is ready.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<std::path::PathBuf>,
    /// Also serve the tool `wait_for_cancel`, which runs until its request is cancelled and
    /// appends to this file a line `started` when it begins and `cancelled` when the client's
    /// `notifications/cancelled` for it arrives.
    #[arg(long, value_name = "PATH")]
    pub cancel_log: Option<std::path::PathBuf>,
}

/// Parses `--ready-after`: whole milliseconds, optionally suffixed `ms`, or seconds suffixed `s`.
fn parse_millis(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1000)
    } else {
        (text, 1)
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("expected milliseconds (e.g. 300), got {text:?}"))
}

/// The entry point of the `tether-mcp-test-backend` binary: parses [`Args`] from the process
/// arguments, serves until SIGTERM/SIGINT (exit 0) or the `--exit-after-calls`-th call
/// (exit 3), and reports a start-up failure (exit 1).
pub fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("mcp-test-backend: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_millis(200));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mcp-test-backend: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Serves the backend described by `args` until SIGTERM or SIGINT, then returns `Ok(())`.
///
/// Prints the `listening` line once bound (and the `ready` line with `--print-ready`). Exits
/// the process with code 3 after the `--exit-after-calls`-th `tools/call` has been answered.
pub async fn run(args: Args) -> std::io::Result<()> {
    // Install the signal handlers first, so a stop sent right after the `listening` line counts.
    // Windows: CTRL_BREAK_EVENT (what tether sends a backend's console group) and Ctrl-C.
    #[cfg(unix)]
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    #[cfg(unix)]
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    #[cfg(windows)]
    let mut sigterm = tokio::signal::windows::ctrl_break()?;
    #[cfg(windows)]
    let mut sigint = tokio::signal::windows::ctrl_c()?;

    let listener = TcpListener::bind((args.host.as_str(), args.port)).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        started: Instant::now(),
        ready_after: args.ready_after,
        ready_file: args.ready_file.clone(),
        skills: args.skills,
        variant: args.tools_variant,
        exit_after_calls: args.exit_after_calls,
        cancel_log: args.cancel_log.clone(),
        calls: AtomicU64::new(0),
        exit_armed: AtomicBool::new(false),
    });

    let mut config = StreamableHttpServerConfig::default();
    if !addr.ip().is_loopback() {
        // rmcp accepts only loopback `Host` headers by default (DNS-rebinding guard); a test
        // backend bound elsewhere on purpose (e.g. in a container) must answer other names.
        config = config.disable_allowed_hosts();
    }
    let handler = Backend { shared: shared.clone() };
    let mcp: McpService =
        StreamableHttpService::new(move || Ok(handler.clone()), Arc::new(LocalSessionManager::default()), config);

    println!("{LISTENING_PREFIX}{addr}");
    if args.print_ready {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(shared.ready_after).await;
            // With --ready-file, loading ends when the file appears: look for it often.
            while !shared.progress().0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            println!("{READY_LINE}");
        });
    }

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // E.g. EMFILE: keep serving the connections we have, retry shortly.
                        eprintln!("mcp-test-backend: accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let mcp = mcp.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        route(request, mcp.clone(), shared.clone())
                    });
                    // A client going away mid-response is not the backend's problem.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    mcp.config.cancellation_token.cancel();
    Ok(())
}

type McpService = StreamableHttpService<Backend, LocalSessionManager>;
type HttpBody = BoxBody<Bytes, Infallible>;

/// State shared by the HTTP layer and every MCP session.
#[derive(Debug)]
struct Shared {
    started: Instant,
    ready_after: Duration,
    ready_file: Option<std::path::PathBuf>,
    skills: u64,
    variant: ToolsVariant,
    exit_after_calls: Option<u64>,
    /// Where `wait_for_cancel` says what happened to it (with `--cancel-log`).
    cancel_log: Option<std::path::PathBuf>,
    /// `tools/call` requests received so far.
    calls: AtomicU64,
    /// Set once the `--exit-after-calls`-th call is answered by the handler: the process
    /// exits as soon as an `/mcp` response body is done (that call's answer is on the wire).
    exit_armed: AtomicBool,
}

impl Shared {
    /// `(loading_complete, skills_loaded)` now.
    fn progress(&self) -> (bool, u64) {
        if self.ready_file.as_ref().is_some_and(|f| !f.exists()) {
            return (false, self.skills.min(1));
        }
        let elapsed = self.started.elapsed();
        if elapsed >= self.ready_after {
            return (true, self.skills);
        }
        let loaded = u128::from(self.skills) * elapsed.as_micros() / self.ready_after.as_micros().max(1);
        (false, u64::try_from(loaded).unwrap_or(self.skills).min(self.skills))
    }

    fn health_json(&self) -> String {
        let (complete, loaded) = self.progress();
        format!(r#"{{"status":"ok","loading_complete":{complete},"skills_loaded":{loaded},"version":"{VERSION}"}}"#)
    }

    /// Counts one `tools/call`; arms the exit when it is the `--exit-after-calls`-th.
    fn count_call(&self) {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.exit_after_calls == Some(n) {
            self.exit_armed.store(true, Ordering::SeqCst);
            // Should no response body ever finish (the client went away), exit anyway.
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                exit_after_calls();
            });
        }
    }
}

fn exit_after_calls() -> ! {
    eprintln!("mcp-test-backend: exiting with code {EXIT_AFTER_CALLS_CODE} (--exit-after-calls)");
    std::process::exit(EXIT_AFTER_CALLS_CODE)
}

async fn route(
    request: Request<Incoming>,
    mcp: McpService,
    shared: Arc<Shared>,
) -> Result<Response<HttpBody>, Infallible> {
    let path = request.uri().path();
    if path == "/health" {
        return Ok(match *request.method() {
            Method::GET | Method::HEAD => respond(StatusCode::OK, "application/json", shared.health_json()),
            _ => respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into()),
        });
    }
    if path == "/mcp" || path == "/mcp/" {
        let response = mcp.handle(request).await;
        return Ok(response.map(|inner| WatchedBody { inner, shared }.boxed()));
    }
    Ok(respond(StatusCode::NOT_FOUND, "text/plain", "not found: try /health or /mcp\n".into()))
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<HttpBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

/// An `/mcp` response body that, once done (finished or dropped) while the exit is armed,
/// exits the process: the `--exit-after-calls`-th answer has then been handed to the socket.
struct WatchedBody {
    inner: HttpBody,
    shared: Arc<Shared>,
}

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        if self.shared.exit_armed.load(Ordering::SeqCst) {
            // hyper drops a body once it has queued its last bytes; give it a moment to flush.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        exit_after_calls();
                    });
                }
                Err(_) => exit_after_calls(),
            }
        }
    }
}

/// The MCP server: canned tools over the [`Shared`] state.
#[derive(Debug, Clone)]
struct Backend {
    shared: Arc<Shared>,
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::default(),
    }
}

/// The tools a backend of `variant` lists, in order.
pub fn tools(variant: ToolsVariant) -> Vec<Tool> {
    let mut tools = vec![
        Tool::new(
            "list_skills",
            "List every skill the backend has loaded.",
            schema(serde_json::json!({"type": "object", "properties": {}})),
        ),
        Tool::new(
            "find_helpful_skills",
            "Find the skills most helpful for a task.",
            schema(serde_json::json!({
                "type": "object",
                "properties": {
                    "task_description": {"type": "string"},
                    "top_k": {"type": "integer"}
                },
                "required": ["task_description"]
            })),
        ),
    ];
    if variant == ToolsVariant::B {
        tools.push(Tool::new(
            "read_skill_document",
            "Read the document of one skill.",
            schema(serde_json::json!({
                "type": "object",
                "properties": {"skill_name": {"type": "string"}},
                "required": ["skill_name"]
            })),
        ));
    }
    tools
}

/// The tool served with `--cancel-log`.
pub const WAIT_FOR_CANCEL: &str = "wait_for_cancel";

fn wait_for_cancel_tool() -> Tool {
    Tool::new(
        WAIT_FOR_CANCEL,
        "Run until cancelled (a test tool).",
        schema(serde_json::json!({"type": "object", "properties": {}})),
    )
}

/// Append `line` to the cancel log.
fn log_line(path: &Path, line: &str) {
    use std::io::Write;
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        eprintln!("mcp-test-backend: cannot write {}: {e}", path.display());
    }
}

fn text_result(text: String) -> CallToolResponse {
    CallToolResult::success(vec![ContentBlock::text(text)]).into()
}

fn skill_line(i: u64) -> String {
    format!("skill-{i}: Example skill {i}")
}

fn required_str<'a>(args: &'a JsonObject, name: &str) -> Result<&'a str, ErrorData> {
    match args.get(name) {
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err(ErrorData::invalid_params(format!("argument {name} must be a string"), None)),
        None => Err(ErrorData::invalid_params(format!("missing required argument: {name}"), None)),
    }
}

impl Backend {
    /// The variant's tools, and `wait_for_cancel` with `--cancel-log`.
    fn tools(&self) -> Vec<Tool> {
        let mut tools = tools(self.shared.variant);
        if self.shared.cancel_log.is_some() {
            tools.push(wait_for_cancel_tool());
        }
        tools
    }

    fn answer(&self, name: &str, args: &JsonObject) -> Result<CallToolResponse, ErrorData> {
        let skills = self.shared.skills;
        match name {
            "list_skills" => {
                let lines: Vec<String> = (1..=skills).map(skill_line).collect();
                Ok(text_result(lines.join("\n")))
            }
            "find_helpful_skills" => {
                let task = required_str(args, "task_description")?;
                let top_k = match args.get("top_k") {
                    None | Some(Value::Null) => 3,
                    Some(value) => value.as_u64().ok_or_else(|| {
                        ErrorData::invalid_params("argument top_k must be a non-negative integer", None)
                    })?,
                }
                .min(skills);
                let mut text = format!("top {top_k} skills for: {task}");
                for i in 1..=top_k {
                    text.push('\n');
                    text.push_str(&skill_line(i));
                }
                Ok(text_result(text))
            }
            "read_skill_document" if self.shared.variant == ToolsVariant::B => {
                let skill = required_str(args, "skill_name")?;
                Ok(text_result(format!("document of {skill}")))
            }
            _ => Err(ErrorData::invalid_params(format!("unknown tool: {name}"), None)),
        }
    }
}

impl ServerHandler for Backend {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(SERVER_NAME, VERSION))
            .with_instructions("A test backend for tether: canned skills tools.")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools().into_iter().find(|tool| tool.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.as_ref();
        eprintln!("call {name}");
        if name == WAIT_FOR_CANCEL
            && let Some(log) = &self.shared.cancel_log
        {
            log_line(log, "started");
            // Bounded, so that a test that never cancels does not hang forever.
            let cancelled = tokio::time::timeout(Duration::from_secs(600), context.ct.cancelled()).await.is_ok();
            log_line(log, if cancelled { "cancelled" } else { "timed out" });
            self.shared.count_call();
            return Ok(CallToolResult::error(vec![ContentBlock::text("cancelled")]).into());
        }
        // `list_skills` reports progress, one notification per skill, when the caller asks
        // (a `progressToken` in `_meta`): what a long-running tool of a real backend does.
        if name == "list_skills"
            && let Some(token) = context.meta.get_progress_token()
        {
            for i in 1..=self.shared.skills {
                let progress = rmcp::model::ProgressNotificationParam::new(token.clone(), i as f64)
                    .with_total(self.shared.skills as f64)
                    .with_message(format!("skill-{i}"));
                let _ = context.peer.notify_progress(progress).await;
            }
        }
        let args = request.arguments.clone().unwrap_or_default();
        let answer = self.answer(name, &args);
        self.shared.count_call();
        answer
    }
}

/// The path of the built `tether-mcp-test-backend` binary, for the tests of any workspace
/// package: next to the running test executable's profile directory
/// (`target/<profile>/deps/x` → `target/<profile>/tether-mcp-test-backend`).
///
/// When it is not there yet, builds it once per process with
/// `$CARGO build -p tether-testkit --bin tether-mcp-test-backend` (`--release` or
/// `--profile P` to match the test's profile).
///
/// # Panics
///
/// When the binary cannot be found or built; the message says what failed and how to fix it.
pub fn mcp_backend_exe() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(locate_or_build).clone()
}

fn locate_or_build() -> PathBuf {
    let current = std::env::current_exe().expect("cannot find the running test executable (std::env::current_exe)");
    let profile_dir = profile_dir_of(&current).unwrap_or_else(|| {
        panic!("cannot tell the target profile directory from the test executable {}", current.display())
    });
    let exe = profile_dir.join(format!("{BIN_NAME}{}", std::env::consts::EXE_SUFFIX));
    if exe.is_file() {
        return exe;
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command.args(["build", "-p", "tether-testkit", "--bin", BIN_NAME]);
    match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(profile) => {
            command.args(["--profile", profile]);
        }
    }
    // Run from this package's directory, so the workspace is found whatever the test's cwd.
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    let how_to_fix = format!(
        "fix: run `cargo build -p tether-testkit --bins` (same profile as the tests) first; \
         `cargo test --workspace` and `cargo nextest run --workspace` build it too; expected {}",
        exe.display()
    );
    let output = command.output().unwrap_or_else(|err| {
        panic!(
            "{BIN_NAME} is not built and running {} to build it failed: {err}; {how_to_fix}",
            Path::new(&cargo).display()
        )
    });
    if !output.status.success() {
        panic!(
            "{BIN_NAME} is not built and `{} build -p tether-testkit --bin {BIN_NAME}` failed \
             ({}):\n{}\n{how_to_fix}",
            Path::new(&cargo).display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if !exe.is_file() {
        panic!(
            "{BIN_NAME} was built but is not at {} (is CARGO_TARGET_DIR or --target set \
             differently for the tests?); {how_to_fix}",
            exe.display()
        );
    }
    exe
}

/// `target/<profile>` from `target/<profile>/deps/test-exe` (or `target/<profile>/exe`).
fn profile_dir_of(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent()?;
    if dir.file_name().is_some_and(|name| name == "deps" || name == "examples") {
        dir.parent().map(Path::to_path_buf)
    } else {
        Some(dir.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_after_parses_millis_and_suffixes() {
        assert_eq!(parse_millis("300"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_millis("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_millis("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_millis("soon").is_err());
        assert!(parse_millis("-1").is_err());
    }

    #[test]
    fn args_defaults_and_required_port() {
        let args = Args::try_parse_from([BIN_NAME, "--port", "0"]).expect("parses");
        assert_eq!(args.host, "127.0.0.1");
        assert_eq!(args.ready_after, Duration::ZERO);
        assert_eq!(args.skills, 3);
        assert_eq!(args.tools_variant, ToolsVariant::A);
        assert_eq!(args.exit_after_calls, None);
        assert_eq!(args.cancel_log, None);
        assert!(!args.print_ready);
        assert!(Args::try_parse_from([BIN_NAME]).is_err(), "--port is required");
        let args = Args::try_parse_from([
            BIN_NAME,
            "--port=8080",
            "--tools-variant",
            "b",
            "--exit-after-calls",
            "2",
            "--print-ready",
        ])
        .expect("parses");
        assert_eq!(args.tools_variant, ToolsVariant::B);
        assert_eq!(args.exit_after_calls, Some(2));
        assert!(args.print_ready);
    }

    #[test]
    fn variants_list_their_tools() {
        let names = |v| tools(v).into_iter().map(|t| t.name.to_string()).collect::<Vec<_>>();
        assert_eq!(names(ToolsVariant::A), ["list_skills", "find_helpful_skills"]);
        assert_eq!(names(ToolsVariant::B), ["list_skills", "find_helpful_skills", "read_skill_document"]);
    }

    #[test]
    fn profile_dir_is_found_from_deps_or_profile_dir() {
        assert_eq!(profile_dir_of(Path::new("/t/target/debug/deps/x-123")), Some(PathBuf::from("/t/target/debug")));
        assert_eq!(profile_dir_of(Path::new("/t/target/release/tether")), Some(PathBuf::from("/t/target/release")));
    }

    #[test]
    fn health_grows_then_completes() {
        let shared = Shared {
            started: Instant::now(),
            ready_after: Duration::from_secs(3600),
            ready_file: None,
            skills: 5,
            variant: ToolsVariant::A,
            exit_after_calls: None,
            cancel_log: None,
            calls: AtomicU64::new(0),
            exit_armed: AtomicBool::new(false),
        };
        assert_eq!(shared.progress(), (false, 0));
        assert_eq!(
            shared.health_json(),
            r#"{"status":"ok","loading_complete":false,"skills_loaded":0,"version":"0.1.0"}"#
        );
        let done = Shared { ready_after: Duration::ZERO, ..shared };
        assert_eq!(done.progress(), (true, 5));
    }
}
