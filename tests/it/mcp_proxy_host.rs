//! The first `tools/list` as a real MCP host sees it: `tether mcp-proxy` spawned by the
//! official Python MCP SDK's stdio client (`stdio_client` + `ClientSession`, 1.x and 2.x),
//! which initializes, lists the tools once and goes away (`tests/fixtures/mcp_client/host.py`,
//! run with `uv run --no-project --with mcp==SDK`). Hosts are widely reported to ignore
//! `notifications/tools/list_changed`, so that first answer is all the tools a session gets.
//!
//! Covered: the `--preset claude-skills` tools before the backend is ready; a first list that
//! waits for a backend when nothing else is known (and one whose `--list-wait` runs out);
//! `--prefetch` (tool names on stdout, exit 0, nothing left running, its cache served at
//! once by the next proxy); the cache of one version of a uvx package served at once to the
//! next version; a project's own `./tether.toml`, ignored unless `--config` names it; a cancel
//! without a progress token reaching the backend (both SDK lines, and 2.x's `mcp.Client`); and
//! each line's default client (2.x: `mcp.Client`, which probes `server/discover` at
//! 2026-07-28) calling tools.
//!
//! **Needs uv and PyPI on a cold uv cache** (the SDK and, for the uvx case, the fixture's
//! dependencies, resolved into the shared cache under `target/tmp/uv-cache`). Without uv or
//! Python it panics in CI (`CI=true`) and skips locally. Nothing sleeps to synchronise:
//! readiness is gated by a file the test creates or never creates (`--ready-file`) or by the
//! backend's own load time, and everything is awaited with a bounded deadline.
use crate::uvx_support as support;

use crate::mcp_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mcp_support::{GONE, Sandbox};
use serde_json::{Value, json};
use tether_testkit::mcp_backend::mcp_backend_exe;

/// The Python MCP SDK lines a host may be built on.
const MCP_2: &str = "2.3.0";
const MCP_1: &str = "1.30.0";
/// The bound for a host run or a prefetch, a cold download of the SDK (or of a uvx
/// backend's dependencies) included: only a hung tether reaches it.
const WAIT: Duration = Duration::from_secs(600);
/// The `--list-wait` of the tests where the first list must wait for the backend: long, so
/// that a loaded machine never makes the wait run out (the default, 8 s, is a unit test's).
const LONG_LIST_WAIT: &str = "600s";

/// uv to run the host script, with real Python and the tests' uv environment.
struct PyHost {
    uv: PathBuf,
    found: support::Uv,
}

impl PyHost {
    /// `None` after `missing_tool` (which panics in CI).
    fn find() -> Option<PyHost> {
        let found = support::Uv::find()?;
        let Some(uv) = support::on_path("uv") else {
            tether_testkit::missing_tool("uv (on PATH; scripts/test installs it)");
            return None;
        };
        Some(PyHost { uv, found })
    }

    fn sandbox(&self) -> Sandbox {
        Sandbox::with_env(self.found.env())
    }

    /// `tether mcp-proxy ARGS` started by the SDK `sdk`'s stdio client in the sandbox's
    /// directory: the host's `initialize` answer and its first `tools/list`, as JSON.
    async fn first_list(&self, sandbox: &Sandbox, sdk: &str, args: &[String]) -> Value {
        self.host(sandbox, sdk, &[], args).await
    }

    /// As [`first_list`](Self::first_list), with `host.py`'s own flags (`--sdk-client`,
    /// `--call TOOL`, `--cancel LOG`) first.
    async fn host(&self, sandbox: &Sandbox, sdk: &str, host_flags: &[&str], args: &[String]) -> Value {
        let host = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_client/host.py");
        let mut cmd = tokio::process::Command::new(&self.uv);
        cmd.args(["run", "--no-project", "--python"])
            .arg(&self.found.python)
            .arg("--with")
            .arg(format!("mcp=={sdk}"))
            .arg("python")
            .arg(&host)
            .arg("--cwd")
            .arg(sandbox.dir.path())
            .args(host_flags)
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_tether"))
            .arg("mcp-proxy")
            .args(mcp_support::no_share_unless_shared(args))
            .args(args)
            .envs(self.found.env())
            .env("TETHER_STATE_DIR", sandbox.state.path())
            .env_remove("TETHER_CONFIG")
            .env_remove("TETHER_LOG")
            .env_remove("RUST_LOG")
            .current_dir(sandbox.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let out = tokio::time::timeout(WAIT, cmd.output()).await.expect("the host finished in time").expect("run uv");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "the mcp=={sdk} host failed ({}): {stdout}", out.status);
        let line = stdout.lines().last().unwrap_or_default();
        let answer: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not the host's JSON ({e}): {stdout}"));
        assert_eq!(answer["sdk"], sdk, "{answer}");
        assert_eq!(answer["server"]["name"], "tether-mcp-proxy", "{answer}");
        answer
    }
}

/// `tether mcp-proxy --prefetch ARGS` in the sandbox: (exit code, stdout, stderr).
async fn prefetch(sandbox: &Sandbox, env: &[(String, String)], args: &[String]) -> (Option<i32>, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether"));
    cmd.args(["mcp-proxy", "--prefetch"])
        .args(args)
        .envs(env.iter().cloned())
        .env("TETHER_STATE_DIR", sandbox.state.path())
        .env_remove("TETHER_CONFIG")
        .env_remove("TETHER_LOG")
        .env_remove("RUST_LOG")
        .current_dir(sandbox.dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(WAIT, cmd.output()).await.expect("the prefetch finished in time").expect("run it");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{stderr}");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

fn names(answer: &Value) -> Vec<&str> {
    answer["tools"].as_array().expect("a tools array").iter().filter_map(|t| t["name"].as_str()).collect()
}

/// The proxy's arguments in front of the Rust test backend: `proxy` flags, `-- BACKEND
/// --port {port}`, then `backend` flags.
fn proxy_args(proxy: &[&str], backend: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = proxy.iter().map(|s| s.to_string()).collect();
    args.push("--".into());
    args.push(mcp_backend_exe().to_string_lossy().into_owned());
    args.extend(["--port", "{port}"].map(String::from));
    args.extend(backend.iter().map(|s| s.to_string()));
    args
}

/// The tools the claude-skills preset carries, as the file in the repository holds them.
fn preset_tools() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/mcp/presets/claude-skills.json");
    let text = std::fs::read_to_string(&path).expect("the preset's tools file");
    let doc: Value = serde_json::from_str(&text).expect("the preset's tools file is JSON");
    doc["tools"].as_array().expect("a tools array").clone()
}

/// Wait until no live process has `marker` in its command line; return those left.
async fn processes_gone(marker: &str) -> Vec<(u32, String)> {
    let deadline = Instant::now() + GONE;
    loop {
        let left = support::processes_with(marker);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Instance records left at the top of the state directory.
fn records(sandbox: &Sandbox) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sandbox.state.path()) else { return Vec::new() };
    entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".json")).collect()
}

#[tokio::test]
async fn sdk_2_first_list_has_the_presets_tools_before_the_backend_is_ready() {
    preset_before_ready(MCP_2).await;
}

#[tokio::test]
async fn sdk_1_first_list_has_the_presets_tools_before_the_backend_is_ready() {
    preset_before_ready(MCP_1).await;
}

/// `--preset claude-skills`, no cache, a backend that never becomes ready: the host's one
/// `tools/list` gets the three tools of claude-skills-mcp-backend 1.0.6, schemas and all.
async fn preset_before_ready(sdk: &str) {
    let Some(py) = PyHost::find() else { return };
    let sandbox = py.sandbox();
    let never = sandbox.path("never");
    let args = proxy_args(&["--preset", "claude-skills"], &["--ready-file", &never.to_string_lossy()]);
    let answer = py.first_list(&sandbox, sdk, &args).await;
    assert_eq!(names(&answer), ["find_helpful_skills", "read_skill_document", "list_skills"], "{answer}");
    let expected = preset_tools();
    for (got, want) in answer["tools"].as_array().expect("tools").iter().zip(&expected) {
        for field in ["name", "title", "description", "inputSchema"] {
            assert_eq!(got[field], want[field], "{field} of {}: {got}", want["name"]);
        }
    }
    // What the host's model sees, independent of the file: the search tool's arguments.
    let find = &answer["tools"][0]["inputSchema"];
    assert_eq!(find["required"], json!(["task_description"]), "{find}");
    assert_eq!(
        find["properties"]["top_k"],
        json!({"type": "integer", "default": 3, "minimum": 1, "maximum": 20,
        "description": "Number of skills to return (default: 3). Higher values provide more options but may include less relevant results."})
    );
    assert_eq!(answer["tools"][1]["inputSchema"]["required"], json!(["skill_name"]));
}

#[tokio::test]
async fn sdk_2_first_list_waits_for_a_backend_when_nothing_is_known() {
    waits_for_the_backend(MCP_2).await;
}

#[tokio::test]
async fn sdk_1_first_list_waits_for_a_backend_when_nothing_is_known() {
    waits_for_the_backend(MCP_1).await;
}

/// No cache, no `--tools`, no preset; the backend loads for a second: the host's one
/// `tools/list` is the backend's own list (the proxy waited), not an empty one.
async fn waits_for_the_backend(sdk: &str) {
    let Some(py) = PyHost::find() else { return };
    let sandbox = py.sandbox();
    let args = proxy_args(
        &["--expect", "loading_complete==true", "--list-wait", LONG_LIST_WAIT],
        &["--ready-after", "1s", "--skills", "2"],
    );
    let answer = py.first_list(&sandbox, sdk, &args).await;
    assert_eq!(names(&answer), ["list_skills", "find_helpful_skills"], "{answer}");
}

#[tokio::test]
async fn a_list_wait_that_runs_out_answers_an_empty_list() {
    let Some(py) = PyHost::find() else { return };
    let sandbox = py.sandbox();
    let never = sandbox.path("never");
    let args = proxy_args(
        &["--expect", "loading_complete==true", "--list-wait", "300ms"],
        &["--ready-file", &never.to_string_lossy()],
    );
    let answer = py.first_list(&sandbox, MCP_2, &args).await;
    assert_eq!(answer["tools"], json!([]), "{answer}");
}

#[tokio::test]
async fn prefetch_caches_the_tools_stops_the_backend_and_the_next_proxy_lists_them_at_once() {
    let Some(py) = PyHost::find() else { return };
    let sandbox = py.sandbox();
    // Ready while the file exists; the same arguments (the same cache key) never ready once
    // it is gone.
    let ready = sandbox.path("ready");
    let marker = ready.to_string_lossy().into_owned();
    std::fs::write(&ready, "").expect("create the ready file");
    let args = proxy_args(&["--preset", "claude-skills"], &["--ready-file", &marker]);

    let (code, stdout, stderr) = prefetch(&sandbox, &[], &args).await;
    assert_eq!(code, Some(0), "{stderr}");
    // Only the names on stdout: no MCP.
    assert_eq!(stdout, "list_skills\nfind_helpful_skills\n", "{stderr}");
    let left = processes_gone(&marker).await;
    assert!(left.is_empty(), "the prefetched backend outlived the prefetch: {left:?}");
    assert!(records(&sandbox).is_empty(), "no instance record left: {:?}", records(&sandbox));

    std::fs::remove_file(&ready).expect("remove the ready file");
    // The cached list, not the preset's (which has three tools): the backend is not ready.
    let answer = py.first_list(&sandbox, MCP_2, &args).await;
    assert_eq!(names(&answer), ["list_skills", "find_helpful_skills"], "{answer}");
    assert_eq!(answer["instructions"], "A test backend for tether: canned skills tools.", "{answer}");
}

#[tokio::test]
async fn a_failed_prefetch_says_why_and_exits_1() {
    let sandbox = Sandbox::new();
    let missing = sandbox.path("no-such-server");
    let args: Vec<String> =
        ["--", &missing.to_string_lossy(), "--port", "{port}"].iter().map(|s| s.to_string()).collect();
    let (code, stdout, stderr) = prefetch(&sandbox, &[], &args).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
    assert!(stderr.contains("error:") && stderr.contains("no-such-server"), "{stderr}");
    let (code, _, stderr) =
        prefetch(&sandbox, &[], &["--list-wait".into(), "soon".into(), "--".into(), "srv".into()]).await;
    assert_eq!(code, Some(2), "bad input: {stderr}");
}

#[tokio::test]
async fn a_version_bump_of_a_uvx_package_lists_the_previous_versions_tools_at_once() {
    let Some(py) = PyHost::find() else { return };
    let sandbox = py.sandbox();
    let wheel_a = mcp_support::Wheel::build(&py.found.python, "0.4.2", MCP_2);
    let wheel_b = mcp_support::Wheel::build(&py.found.python, "0.4.3", MCP_2);
    let ready = sandbox.path("ready");
    let ready_arg = ready.to_string_lossy().into_owned();
    let uvx_args = |wheel: &Path| -> Vec<String> {
        [
            "--package",
            &wheel.to_string_lossy(),
            "--python",
            &py.found.python.to_string_lossy(),
            "--uvx",
            &py.found.uvx.to_string_lossy(),
            "--preset",
            "claude-skills",
            "--timeout",
            "600s",
            "--",
            "--port",
            "{port}",
            "--ready-file",
            &ready_arg,
        ]
        .map(String::from)
        .to_vec()
    };
    // Version A, once, ready: its tools are cached.
    std::fs::write(&ready, "").expect("create the ready file");
    let (code, stdout, stderr) = prefetch(&sandbox, &py.found.env(), &uvx_args(&wheel_a.path)).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "list_skills\nfind_helpful_skills\n", "{stderr}");
    let left = processes_gone(&ready_arg).await;
    assert!(left.is_empty(), "the prefetched backend outlived the prefetch: {left:?}");

    // Version B, never ready: the host's first list is A's (not the preset's three tools).
    std::fs::remove_file(&ready).expect("remove the ready file");
    let answer = py.first_list(&sandbox, MCP_2, &uvx_args(&wheel_b.path)).await;
    assert_eq!(names(&answer), ["list_skills", "find_helpful_skills"], "{answer}");
    assert_eq!(answer["tools"][1]["description"], "Find the skills most helpful for a task.", "{answer}");
}

#[tokio::test]
async fn a_projects_own_tether_toml_is_ignored_unless_config_names_it() {
    let Some(py) = PyHost::find() else { return };
    let sandbox = py.sandbox();
    // The project's own file, for its `tether up`: a name, a port this test holds (a foreign
    // listener: starting there fails) and a probe that never succeeds.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let port = held.local_addr().expect("its address").port();
    std::fs::write(
        sandbox.path("tether.toml"),
        format!("name = \"from-toml\"\nport = {port}\nprobe = \"http:/nope\"\n"),
    )
    .expect("write tether.toml");
    let args = proxy_args(&["--expect", "loading_complete==true", "--list-wait", LONG_LIST_WAIT], &["--skills", "2"]);
    for sdk in [MCP_2, MCP_1] {
        let answer = py.first_list(&sandbox, sdk, &args).await;
        assert_eq!(names(&answer), ["list_skills", "find_helpful_skills"], "mcp=={sdk}: {answer}");
    }
    let cache = sandbox.state.path().join("mcp-tools");
    assert!(!cache.join("from-toml.json").exists(), "the file's name was used");

    // Named by --config, a file is read.
    std::fs::write(sandbox.path("proxy.toml"), "name = \"from-toml\"\n").expect("write proxy.toml");
    let mut with_config = vec!["--config".to_string(), sandbox.path("proxy.toml").to_string_lossy().into_owned()];
    with_config.extend(args.iter().cloned());
    let answer = py.first_list(&sandbox, MCP_2, &with_config).await;
    assert_eq!(names(&answer), ["list_skills", "find_helpful_skills"], "{answer}");
    assert!(cache.join("from-toml.json").is_file(), "the --config file's name keys the cache");
    drop(held);
}

#[tokio::test]
async fn sdk_1_cancel_without_a_progress_token_reaches_the_backend() {
    cancel_reaches_the_backend(MCP_1, &[]).await;
}

#[tokio::test]
async fn sdk_2_cancel_without_a_progress_token_reaches_the_backend() {
    cancel_reaches_the_backend(MCP_2, &[]).await;
    cancel_reaches_the_backend(MCP_2, &["--sdk-client"]).await;
}

/// The host calls a tool that runs until cancelled (no progress token) and, once the backend
/// runs it, cancels it by request id (1.x: its `notifications/cancelled`; 2.x: abandoning the
/// call, which sends the SDK's own): the backend's request is cancelled too, and the session
/// still serves the next call.
async fn cancel_reaches_the_backend(sdk: &str, host_flags: &[&str]) {
    let Some(py) = PyHost::find() else { return };
    let sandbox = py.sandbox();
    let log = sandbox.path("cancel.log");
    let log_arg = log.to_string_lossy().into_owned();
    let args = proxy_args(&["--list-wait", LONG_LIST_WAIT], &["--cancel-log", &log_arg]);
    let mut flags = host_flags.to_vec();
    flags.extend(["--cancel", log_arg.as_str()]);
    let answer = py.host(&sandbox, sdk, &flags, &args).await;
    let cancel = &answer["cancel"];
    assert_eq!(cancel["backend_log"], json!(["started", "cancelled"]), "mcp=={sdk} {host_flags:?}: {answer}");
    assert_eq!(cancel["backend_saw_cancel"], json!(true), "{answer}");
    assert_eq!(cancel["after"]["isError"], json!(false), "the next call is served: {answer}");
    assert!(cancel["after"]["content"][0]["text"].as_str().is_some_and(|t| t.contains("skill-1")), "{answer}");
}

#[tokio::test]
async fn sdk_2_default_client_calls_tools() {
    default_client_calls_tools(MCP_2, &["--sdk-client"]).await;
}

#[tokio::test]
async fn sdk_1_default_client_calls_tools() {
    default_client_calls_tools(MCP_1, &[]).await;
}

/// Each SDK line's default client (2.x: `mcp.Client` in `auto` mode, which probes
/// `server/discover` at 2026-07-28 first; 1.x: `ClientSession` with `initialize`) lists and
/// calls tools through the proxy: the proxy offers only the versions whose results it
/// forwards as they are, and the 2.x client falls back to `initialize`.
async fn default_client_calls_tools(sdk: &str, host_flags: &[&str]) {
    let Some(py) = PyHost::find() else { return };
    let sandbox = py.sandbox();
    let args = proxy_args(&["--list-wait", LONG_LIST_WAIT], &[]);
    let mut flags = host_flags.to_vec();
    flags.extend(["--call", "list_skills"]);
    let answer = py.host(&sandbox, sdk, &flags, &args).await;
    assert_eq!(names(&answer), ["list_skills", "find_helpful_skills"], "{answer}");
    let call = &answer["call"];
    assert_eq!(call["isError"], json!(false), "mcp=={sdk}: {answer}");
    assert_eq!(
        call["content"][0]["text"],
        "skill-1: Example skill 1\nskill-2: Example skill 2\nskill-3: Example skill 3"
    );
    let protocol = answer["protocol"].as_str().unwrap_or_default();
    assert!(protocol < "2026-07-28", "an initialize-era version: {answer}");
}

#[tokio::test]
async fn sdk_2_host_is_told_a_start_that_failed_shared_or_not() {
    told_the_failure(MCP_2).await;
}

#[tokio::test]
async fn sdk_1_host_is_told_a_start_that_failed_shared_or_not() {
    told_the_failure(MCP_1).await;
}

/// Issue 20: a start that fails (here the backend rejects an argument and exits 2) reaches
/// the SDK's host in the protocol, in the shared mode (a host's default) and with a backend
/// of the proxy's own: an `error` log message after the host's `initialized` (never lost),
/// the first `tools/list` answered by an error naming it, and a call answered by a tool
/// error with the exit status and the backend's last words. Nothing is restarted, nothing
/// is left behind.
async fn told_the_failure(sdk: &str) {
    let Some(py) = PyHost::find() else { return };
    for mode in ["--share=1s", "--no-share"] {
        let sandbox = py.sandbox();
        let args = proxy_args(&[mode, "--name", "bad", "--preset", "claude-skills"], &["--skills", "many"]);
        let answer = py.host(&sandbox, sdk, &["--until-failure", "--call", "list_skills"], &args).await;
        let logged = &answer["logged"][0];
        assert_eq!(logged["level"], "error", "{mode}: {answer}");
        assert_eq!(logged["logger"], "tether", "{mode}: {answer}");
        let error = logged["data"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("will not be restarted"), "{mode}: {answer}");
        assert_eq!(logged["data"]["exit_code"], 2, "{mode}: {answer}");
        assert!(logged["data"]["last_output"].to_string().contains("many"), "{mode}: {answer}");
        let listed = answer["list_error"]["message"].as_str().unwrap_or_default();
        assert!(listed.contains("exit code 2") && listed.contains("many"), "{mode}: {answer}");
        let call = &answer["call"];
        assert_eq!(call["isError"], true, "{mode}: {answer}");
        let text = call["content"][0]["text"].as_str().unwrap_or_default();
        assert!(text.contains("will not be restarted") && text.contains("exit code 2"), "{mode}: {answer}");
        assert!(!text.contains("still starting"), "{mode}: {answer}");
        let deadline = Instant::now() + GONE;
        while !records(&sandbox).is_empty() {
            assert!(Instant::now() < deadline, "{mode}: records left: {:?}", records(&sandbox));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
