//! Shared by the `mcp-proxy` tests: a sandbox (state dir, cwd, scratch files), the proxy
//! started under rmcp's stdio client as an MCP host starts it, and the checks that its
//! backend is gone.

#![allow(dead_code)]
// MCP logging (`notifications/message`) is deprecated for a future revision (SEP-2577), and
// still how a host is told of a failure today.
#![allow(deprecated)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult, LoggingMessageNotificationParam, ProgressNotificationParam};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceError, ServiceExt};
use serde_json::Value;
use tempfile::TempDir;
use tether::core::procs;
use tokio::sync::mpsc;

/// The bound for anything awaited: only a hung tether reaches it.
pub const WAIT: Duration = Duration::from_secs(120);
/// How long processes may take to disappear after their owner went.
pub const GONE: Duration = Duration::from_secs(15);

/// A per-test state directory, working directory and scratch files.
pub struct Sandbox {
    pub state: TempDir,
    pub dir: TempDir,
    env: Vec<(String, String)>,
}

impl Sandbox {
    pub fn new() -> Self {
        Self::with_env(Vec::new())
    }

    /// With extra environment for the proxy (and so its backend).
    pub fn with_env(env: Vec<(String, String)>) -> Self {
        Sandbox {
            state: tempfile::tempdir().expect("a temporary state directory"),
            dir: tempfile::tempdir().expect("a temporary directory"),
            env,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `tether mcp-proxy ARGS` with this sandbox's state dir, cwd and environment. A proxy
    /// of its own backend (`--no-share`) unless ARGS ask for sharing: a test's backend must
    /// not linger after it (see [`no_share_unless_shared`]).
    pub fn command(&self, args: &[String]) -> tokio::process::Command {
        let mut cmd = self.command_as_host(&[]);
        cmd.args(no_share_unless_shared(args)).args(args);
        cmd
    }

    /// `tether mcp-proxy ARGS` exactly as given, as a host starts it: with `mcp-proxy`'s
    /// own defaults (sharing included).
    pub fn command_as_host(&self, args: &[String]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether"));
        cmd.arg("mcp-proxy")
            .args(args)
            .envs(self.env.iter().cloned())
            .env("TETHER_STATE_DIR", self.state.path())
            .env_remove("TETHER_LOG")
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path())
            .kill_on_drop(true);
        cmd
    }

    /// `tether ARGS` (not a proxy: `status`, `down`…) on this sandbox's state directory.
    pub fn tether(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(args)
            .env("TETHER_STATE_DIR", self.state.path())
            .stdin(Stdio::null())
            .output()
            .expect("run tether")
    }

    /// The recorded instance `name` (a JSON object), when there is one.
    pub fn record(&self, name: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.state.path().join(format!("{name}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Wait until the record of `name` meets `check`; return it.
    pub async fn record_where(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(r) = self.record(name).filter(|r| check(r)) {
                return r;
            }
            assert!(Instant::now() < deadline, "the record of '{name}' never showed {what}: {:?}", self.record(name));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The host side: passes on `notifications/tools/list_changed`, progress notifications,
/// log messages (`notifications/message`) and the resource and prompt notifications (as
/// `resources/updated URI`, `resources/list_changed`, `prompts/list_changed`). It offers
/// sampling, elicitation and roots, as a desktop host does, and answers them: a model
/// [`HOST_MODEL`] that echoes the prompt, the name `Ada` to the question `What is your
/// name?` (anything else declined), and the one root [`HOST_ROOT`].
pub struct Host {
    changed: mpsc::UnboundedSender<()>,
    progress: mpsc::UnboundedSender<ProgressNotificationParam>,
    logged: mpsc::UnboundedSender<LoggingMessageNotificationParam>,
    notes: mpsc::UnboundedSender<String>,
}

/// The model name the test host answers sampling with.
pub const HOST_MODEL: &str = "host-model-7";
/// The test host's one root.
pub const HOST_ROOT: &str = "file:///home/user/project";

#[allow(deprecated)] // sampling and roots (SEP-2577), still what hosts offer
impl ClientHandler for Host {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        let capabilities =
            rmcp::model::ClientCapabilities::builder().enable_sampling().enable_elicitation().enable_roots().build();
        rmcp::model::ClientConfig::new(capabilities, rmcp::model::Implementation::new("tether-test-host", "1.0.0"))
    }

    async fn create_message(
        &self,
        params: rmcp::model::CreateMessageRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, rmcp::ErrorData> {
        let asked = serde_json::to_value(&params.messages).unwrap_or_default();
        let prompt = asked[0]["content"]["text"].as_str().unwrap_or("?").to_string();
        let answer = rmcp::model::SamplingMessage::assistant_text(format!("the host's model read: {prompt}"));
        Ok(rmcp::model::CreateMessageResult::new(answer, HOST_MODEL.into()).with_stop_reason("endTurn"))
    }

    async fn list_roots(
        &self,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ListRootsResult, rmcp::ErrorData> {
        Ok(rmcp::model::ListRootsResult::new(vec![rmcp::model::Root::new(HOST_ROOT)]))
    }

    async fn create_elicitation(
        &self,
        request: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        use rmcp::model::{ElicitResult, ElicitationAction};
        let asked = serde_json::to_value(&request).unwrap_or_default();
        Ok(match asked["message"].as_str() {
            Some("What is your name?") => {
                ElicitResult::new(ElicitationAction::Accept).with_content(serde_json::json!({"name": "Ada"}))
            }
            _ => ElicitResult::new(ElicitationAction::Decline),
        })
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.changed.send(());
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        let _ = self.progress.send(params);
    }

    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.notes.send(format!("resources/updated {}", params.uri));
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.notes.send("resources/list_changed".into());
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.notes.send("prompts/list_changed".into());
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.logged.send(params);
    }
}

/// What the host was told.
pub struct Events {
    pub changed: mpsc::UnboundedReceiver<()>,
    pub progress: mpsc::UnboundedReceiver<ProgressNotificationParam>,
    pub logged: mpsc::UnboundedReceiver<LoggingMessageNotificationParam>,
    pub notes: mpsc::UnboundedReceiver<String>,
}

pub type Client = RunningService<RoleClient, Host>;

/// Start the proxy with rmcp's stdio client (which initializes it).
pub async fn connect(sandbox: &Sandbox, args: &[String]) -> (Client, Events) {
    let (transport, _stderr) = TokioChildProcess::builder(sandbox.command(args))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tether mcp-proxy");
    let (changed, changed_rx) = mpsc::unbounded_channel();
    let (progress, progress_rx) = mpsc::unbounded_channel();
    let (logged, logged_rx) = mpsc::unbounded_channel();
    let (notes, notes_rx) = mpsc::unbounded_channel();
    let client = tokio::time::timeout(WAIT, Host { changed, progress, logged, notes }.serve(transport))
        .await
        .expect("initialize answered in time")
        .expect("initialize succeeds");
    (client, Events { changed: changed_rx, progress: progress_rx, logged: logged_rx, notes: notes_rx })
}

pub fn object(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

pub async fn call(client: &Client, tool: &'static str, args: Value) -> Result<CallToolResult, ServiceError> {
    let params = CallToolRequestParams::new(tool).with_arguments(object(args));
    tokio::time::timeout(WAIT, client.call_tool(params)).await.expect("the call is answered in time")
}

pub fn text_of(result: &CallToolResult) -> String {
    result.content.iter().filter_map(|b| b.as_text()).map(|t| t.text.as_str()).collect::<Vec<_>>().join("\n")
}

/// Wait until no live process is left in the backend's process group. Zombies do not
/// count: once the proxy is gone its guard's exit status waits for whoever reaps orphans
/// here (PID 1), which may take its time, but nothing runs any more.
pub async fn group_gone(record: &Value) {
    let pgid = record["pgid"].as_u64().or_else(|| record["leader"]["pid"].as_u64()).expect("the record has a pgid");
    let pgid = u32::try_from(pgid).expect("pgid fits");
    let deadline = Instant::now() + GONE;
    loop {
        let left = procs::group_members(pgid);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "process group {pgid} outlived the proxy: {left:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether any live process is in the process group of `record`.
pub fn group_alive(record: &Value) -> bool {
    let pgid = record["pgid"].as_u64().and_then(|p| u32::try_from(p).ok()).expect("the record has a pgid");
    !procs::group_members(pgid).is_empty()
}

/// The Python MCP fixture's wheel (`tests/fixtures/mcp_python`), built into its own
/// directory (kept as long as this lives).
pub struct Wheel {
    _dir: TempDir,
    /// The `.whl` file.
    pub path: PathBuf,
}

impl Wheel {
    /// Build the fixture at `version`, requiring `mcp==MCP`, with
    /// `python3 build_wheel.py DIR VERSION MCP` (argv, no shell).
    pub fn build(python: &std::path::Path, version: &str, mcp: &str) -> Wheel {
        Wheel::build_with(python, &[version, mcp])
    }

    /// The fixture at `version` as a backend written for mcp 1.x: it requires `mcp>=1.0`
    /// and imports `mcp.server.fastmcp`, so a fresh resolve (mcp 2.x) breaks it at import,
    /// as it breaks claude-skills-mcp-backend 1.0.6.
    pub fn build_fastmcp_only(python: &std::path::Path, version: &str) -> Wheel {
        Wheel::build_with(python, &[version, ">=1.0", "--fastmcp-only"])
    }

    fn build_with(python: &std::path::Path, args: &[&str]) -> Wheel {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_python/build_wheel.py");
        let out = std::process::Command::new(python)
            .arg(&script)
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("python3 runs build_wheel.py");
        assert!(out.status.success(), "build_wheel.py failed: {}", String::from_utf8_lossy(&out.stderr));
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(path.is_file(), "no wheel at {}", path.display());
        Wheel { _dir: dir, path }
    }
}

/// `--no-share` unless `args` ask for sharing (`--share`) or name no backend of ours
/// (`--prefetch` stops its own; `--runner remote` never shares — the flag is harmless
/// there). Sharing is `mcp-proxy`'s default for native, uvx and docker backends,
/// and a shared backend lingers after its last proxy: the tests that are not about sharing
/// want a backend of the proxy's own, gone when it exits.
pub fn no_share_unless_shared(args: &[String]) -> Option<&'static str> {
    (!args.iter().any(|a| a == "--share" || a.starts_with("--share=") || a == "--no-share")).then_some("--no-share")
}
