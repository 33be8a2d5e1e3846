//! Interop: `tether mcp-proxy` in front of a real Python MCP server, built on the official
//! Python MCP SDK (the `mcp` distribution) and run through real `uvx`, the way the
//! claude-skills backend runs in production.
//!
//! The server is the fixture in `tests/fixtures/mcp_python/` (packed into a wheel by its
//! `build_wheel.py`, whose METADATA pins `mcp`): the SDK's high-level server (`MCPServer`
//! in mcp 2.x, `FastMCP` in 1.x) on streamable HTTP at `/mcp`, with the tools `list_skills`
//! and `find_helpful_skills`, and the claude-skills `GET /health`. The same scenario runs
//! against both SDK lines ([`MCP_2`], [`MCP_1`]), driving the proxy over stdio with rmcp's
//! client, as an MCP host does.
//!
//! **Needs PyPI on a cold uv cache.** Unlike the other uvx tests this one is not offline: uv
//! resolves `mcp` and its dependencies (pydantic, starlette, uvicorn…) into the shared uv
//! cache under `target/tmp/uv-cache`; a first run downloads them (tens of seconds), later
//! runs find them there. Without uv or Python it panics in CI (`CI=true`) and skips locally.
//!
//! Nothing sleeps to synchronise: readiness is gated by a file the test creates
//! (`--ready-file`), and everything else is awaited with a bounded deadline.
use crate::uvx_support as support;

use crate::mcp_support;

use std::path::Path;
use std::time::{Duration, Instant};

use mcp_support::{Client, GONE, Sandbox, WAIT, Wheel, call, connect, group_gone, object, text_of};
use rmcp::ServiceError;
use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use serde_json::{Value, json};

/// The Python MCP SDK of the 2.x line the fixture wheel requires (`Requires-Dist: mcp==…`).
const MCP_2: &str = "2.3.0";
/// The last release of the 1.x line (`FastMCP`), which backends written before 2.0 pin.
const MCP_1: &str = "1.30.0";
/// The fixture wheel's version: `/health` reports it, and tether checks it against the
/// version in the wheel's file name.
const FIXTURE_VERSION: &str = "0.4.2";
/// How long the backend may take to be ready, a first download of `mcp` included
/// (tether's `--timeout`, and the test's bound for what waits on it).
const READY: Duration = Duration::from_secs(600);
/// The backend's session idle timeout (`--session-idle-timeout`): the SDK ends a session
/// with no request in flight for this long (30 minutes by default); the test stays idle
/// longer than this once.
const SESSION_IDLE: Duration = Duration::from_secs(1);

/// The fixture wheel requiring `mcp==MCP`, at this test's fixture version.
fn build_wheel(python: &Path, mcp: &str) -> Wheel {
    Wheel::build(python, FIXTURE_VERSION, mcp)
}

async fn tools(client: &Client) -> Vec<Tool> {
    tokio::time::timeout(WAIT, client.list_all_tools()).await.expect("listed in time").expect("tools/list")
}

/// What the task of a call made before ready gives: a timeout around the call's result.
type EarlyCall = Result<Result<CallToolResult, ServiceError>, tokio::time::error::Elapsed>;

/// The answer to the call made before ready, which must be the forwarded result.
fn early_answer(joined: Result<EarlyCall, tokio::task::JoinError>) -> CallToolResult {
    let result = joined
        .expect("the early call's task")
        .expect("the early call is answered in time")
        .expect("the early call is forwarded once ready");
    // A backend that cannot start answers the waiting call with why: fail with that at once.
    assert_ne!(result.is_error, Some(true), "the call made before ready: {}", text_of(&result));
    result
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_sdk_2_backend_run_by_uvx_is_fronted_from_install_to_stop() {
    fronted_from_install_to_stop(MCP_2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_sdk_1_backend_run_by_uvx_is_fronted_from_install_to_stop() {
    fronted_from_install_to_stop(MCP_1).await;
}

/// The whole life of a proxy in front of the fixture requiring `mcp==MCP`: initialize at
/// once, the preset's list and a waiting call before ready, `list_changed` when ready, the
/// Python server's tools, results and errors, an idle period past the backend's session
/// idle timeout, and no process left when the host goes away.
async fn fronted_from_install_to_stop(mcp: &str) {
    let Some(uv) = support::Uv::find() else { return };
    let wheel = build_wheel(&uv.python, mcp);
    let sandbox = Sandbox::with_env(uv.env());
    let ready = sandbox.path("ready");
    let ready_arg = ready.to_string_lossy().into_owned();
    // The call wait is as long as the readiness timeout: the call made before ready must be
    // forwarded, not answered "still starting", however long a cold download takes.
    let timeout = format!("{}s", READY.as_secs());
    let idle = format!("{}", SESSION_IDLE.as_secs_f64());
    let args: Vec<String> = [
        "--runner",
        "uvx",
        "--package",
        &wheel.path.to_string_lossy(),
        "--python",
        &uv.python.to_string_lossy(),
        "--uvx",
        &uv.uvx.to_string_lossy(),
        "--preset",
        "claude-skills",
        "--name",
        "py",
        "--call-wait",
        &timeout,
        "--timeout",
        &timeout,
        "--",
        "--port",
        "{port}",
        "--ready-file",
        &ready_arg,
        "--session-idle-timeout",
        &idle,
    ]
    .map(String::from)
    .to_vec();
    let started = Instant::now();
    let (client, mut events) = connect(&sandbox, &args).await;

    // Initialized at once, while the backend cannot be ready (its ready file does not exist).
    let info = client.peer_info().expect("server info after initialize");
    let server = info.server_info.clone().expect("server info");
    assert_eq!(server.name, "tether-mcp-proxy");
    assert_eq!(info.capabilities.tools.as_ref().and_then(|t| t.list_changed), Some(true), "{info:?}");
    eprintln!("mcp=={mcp}: initialize answered in {:?}", started.elapsed());
    let record = sandbox.record_where("py", "a process group", |r| r["pgid"].is_u64()).await;

    // Before ready: no cache and no --tools file, so the claude-skills preset's three tools;
    // the host has been served that list, which the real one (two tools) will differ from.
    let early_names: Vec<String> = tools(&client).await.into_iter().map(|t| t.name.to_string()).collect();
    assert_eq!(early_names, ["find_helpful_skills", "read_skill_document", "list_skills"], "the preset's tools");

    // A call made now waits (up to --call-wait) for the backend, then is forwarded.
    let mut early = {
        let peer = client.peer().clone();
        let args = object(json!({"task_description": "early bird", "top_k": 1}));
        tokio::spawn(async move {
            let params = CallToolRequestParams::new("find_helpful_skills").with_arguments(args);
            tokio::time::timeout(READY + WAIT, peer.call_tool(params)).await
        })
    };
    // Ready (uv resolved `mcp`, Python serves, /health says loaded): the host is told the
    // list changed.
    std::fs::write(&ready, "").expect("create the ready file");
    let deadline = tokio::time::sleep(READY + WAIT);
    tokio::pin!(deadline);
    let mut early_result = None;
    loop {
        tokio::select! {
            got = events.changed.recv() => {
                got.expect("list_changed");
                break;
            }
            joined = &mut early, if early_result.is_none() => early_result = Some(early_answer(joined)),
            _ = &mut deadline => panic!("no list_changed in {READY:?}: record {:?}", sandbox.record("py")),
        }
    }
    eprintln!("mcp=={mcp}: ready and list_changed after {:?}", started.elapsed());

    // The Python server's own list, with the schemas the SDK derived from the signatures.
    let listed = tools(&client).await;
    let names: Vec<&str> = listed.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["list_skills", "find_helpful_skills"], "{listed:?}");
    let find = Value::Object((*listed[1].input_schema).clone());
    assert_eq!(find["type"], "object", "{find}");
    assert_eq!(find["properties"]["task_description"]["type"], "string", "{find}");
    assert_eq!(find["properties"]["top_k"]["type"], "integer", "{find}");
    assert_eq!(find["properties"]["top_k"]["default"], 3, "{find}");
    assert_eq!(find["required"], json!(["task_description"]), "{find}");
    let list = Value::Object((*listed[0].input_schema).clone());
    assert_eq!(list["type"], "object", "{list}");
    assert!(list.get("required").is_none_or(|r| r == &json!([])), "{list}");
    assert_eq!(
        listed[1].description.as_deref(),
        Some("Find the skills most helpful for a task."),
        "descriptions pass through"
    );

    // Calls are forwarded, and the Python server's answers reach the host.
    let found = call(&client, "find_helpful_skills", json!({"task_description": "write a haiku", "top_k": 2}))
        .await
        .expect("forwarded");
    assert_ne!(found.is_error, Some(true), "{found:?}");
    let text = text_of(&found);
    assert!(text.starts_with("top 2 skills for: write a haiku\n"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    let all = call(&client, "list_skills", json!({})).await.expect("forwarded");
    assert_ne!(all.is_error, Some(true), "{all:?}");
    let skills = ["skill-1: Example skill 1", "skill-2: Example skill 2", "skill-3: Example skill 3"];
    assert_eq!(text_of(&all).lines().collect::<Vec<_>>(), skills, "{all:?}");

    // The call made before ready got its forwarded answer too.
    let early = match early_result {
        Some(result) => result,
        None => early_answer(early.await),
    };
    assert!(text_of(&early).starts_with("top 1 skills for: early bird\n"), "{}", text_of(&early));

    // An unknown tool: the Python SDK answers a tool error (`isError`) where rmcp's server
    // answers a protocol error; either reaches the host and names the tool.
    match call(&client, "no_such_tool", json!({})).await {
        Ok(result) => {
            assert_eq!(result.is_error, Some(true), "{result:?}");
            assert!(text_of(&result).contains("no_such_tool"), "{result:?}");
        }
        Err(ServiceError::McpError(e)) => assert!(e.message.contains("no_such_tool"), "{e:?}"),
        Err(other) => panic!("an unknown tool must be the backend's answer, not a transport failure: {other:?}"),
    }

    // The host stays idle past the backend's session idle timeout (an idle period, not a
    // synchronisation: nothing is awaited by it); its next call is still answered.
    tokio::time::sleep(SESSION_IDLE * 3).await;
    let again = call(&client, "find_helpful_skills", json!({"task_description": "after a pause", "top_k": 1}))
        .await
        .expect("forwarded after an idle period");
    assert_ne!(again.is_error, Some(true), "{again:?}");
    assert!(text_of(&again).starts_with("top 1 skills for: after a pause\n"), "{}", text_of(&again));

    // uv and the Python under it (uv's child: the proxy's grandchild) run now…
    let running = support::processes_with(&ready_arg);
    assert!(
        running.iter().any(|(_, c)| c.contains("python") && c.contains("tether-mcp-py-fixture")),
        "the Python server runs: {running:?}"
    );

    // …and when the host goes away, the backend's whole group goes with it.
    let _ = tokio::time::timeout(WAIT, client.cancel()).await.expect("the client stops in time");
    group_gone(&record).await;
    let left = processes_gone(&ready_arg).await;
    assert!(left.is_empty(), "processes of the backend outlived the proxy: {left:?}");
    let deadline = Instant::now() + GONE;
    while sandbox.record("py").is_some() {
        assert!(Instant::now() < deadline, "the record is removed on a clean stop: {:?}", sandbox.record("py"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("mcp=={mcp}: done after {:?}", started.elapsed());
}

/// Issue 13, item 4: with no probe and no preset, a stock MCP server is ready once its
/// MCP endpoint answers an `initialize` — here the Python SDK's, whose `/health` never
/// says loaded (its ready file is never created): the old default (`http:/health`)
/// waited for it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_mcp_server_is_ready_when_its_endpoint_answers_initialize() {
    let Some(uv) = support::Uv::find() else { return };
    let wheel = build_wheel(&uv.python, MCP_2);
    let sandbox = Sandbox::with_env(uv.env());
    let never = sandbox.path("never-created");
    let timeout = format!("{}s", READY.as_secs());
    let args: Vec<String> = [
        "--runner",
        "uvx",
        "--package",
        &wheel.path.to_string_lossy(),
        "--python",
        &uv.python.to_string_lossy(),
        "--uvx",
        &uv.uvx.to_string_lossy(),
        "--name",
        "stock",
        "--call-wait",
        &timeout,
        "--timeout",
        &timeout,
        "--",
        "--port",
        "{port}",
        "--ready-file",
        &never.to_string_lossy(),
    ]
    .map(String::from)
    .to_vec();
    let (client, _events) = connect(&sandbox, &args).await;
    // The call waits for readiness (up to --call-wait), then is forwarded.
    let found = call(&client, "find_helpful_skills", json!({"task_description": "stock", "top_k": 1}))
        .await
        .expect("forwarded once the endpoint answers initialize");
    assert_ne!(found.is_error, Some(true), "{found:?}");
    assert!(text_of(&found).starts_with("top 1 skills for: stock"), "{found:?}");
    let record = sandbox.record("stock").expect("a record while it runs");
    drop(client);
    group_gone(&record).await;
}

/// Issue 20: a backend written for mcp 1.x that asks for `mcp>=1.0` (as
/// claude-skills-mcp-backend 1.0.6 does) is broken by a fresh resolve, which takes mcp 2.x
/// and its missing `mcp.server.fastmcp`. The host is told why in the protocol, and the
/// start is not retried; `--with 'mcp<2'` and a constraints file saying `mcp<2` (uv's own
/// mechanisms) each make it work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(deprecated)] // MCP logging (SEP-2577 deprecates it for a future revision)
async fn a_backend_a_fresh_resolve_breaks_is_explained_and_with_or_a_constraint_fixes_it() {
    let Some(uv) = support::Uv::find() else { return };
    let wheel = Wheel::build_fastmcp_only(&uv.python, FIXTURE_VERSION);
    let sandbox = Sandbox::with_env(uv.env());
    let pins = sandbox.path("pins.txt");
    std::fs::write(&pins, "mcp<2\n").expect("write the constraints file");
    let timeout = format!("{}s", READY.as_secs());
    let proxy = |name: &str, fix: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["--runner", "uvx", "--package", &wheel.path.to_string_lossy()]
            .into_iter()
            .chain(["--python", &uv.python.to_string_lossy(), "--uvx", &uv.uvx.to_string_lossy()])
            .chain(["--preset", "claude-skills", "--name", name, "--call-wait", &timeout, "--timeout", &timeout])
            .map(String::from)
            .collect();
        args.extend(fix.iter().map(|a| a.to_string()));
        args.extend(["--", "--port", "{port}"].map(String::from));
        args
    };

    // Broken: the host gets an error log message with Python's last words, and a call is a
    // tool error naming the cause — no "still starting", no restart.
    let (client, mut events) = connect(&sandbox, &proxy("broken", &[])).await;
    let logged = tokio::time::timeout(READY + WAIT, events.logged.recv())
        .await
        .expect("the failure is told in time")
        .expect("a log message");
    let data = logged.data.to_string();
    assert!(data.contains("mcp.server.fastmcp"), "Python's own error reaches the host: {data}");
    assert!(data.contains("will not be restarted"), "{data}");
    let answer = call(&client, "list_skills", json!({})).await.expect("a tool result");
    assert_eq!(answer.is_error, Some(true), "{answer:?}");
    let text = text_of(&answer);
    assert!(text.contains("mcp.server.fastmcp") && text.contains("exit code 1"), "{text}");
    assert!(!text.contains("still starting"), "{text}");
    let _ = tokio::time::timeout(WAIT, client.cancel()).await.expect("the client stops in time");

    // Fixed, by a requirement beside the package or by a constraints file.
    for (name, fix) in
        [("with", vec!["--with", "mcp<2"]), ("constrained", vec!["--constraint", &pins.to_string_lossy()])]
    {
        let (client, _events) = connect(&sandbox, &proxy(name, &fix)).await;
        let found = call(&client, "find_helpful_skills", json!({"task_description": "fixed", "top_k": 1}))
            .await
            .unwrap_or_else(|e| panic!("{fix:?}: forwarded: {e:?}"));
        assert_ne!(found.is_error, Some(true), "{fix:?}: {found:?}");
        assert!(text_of(&found).starts_with("top 1 skills for: fixed\n"), "{fix:?}: {}", text_of(&found));
        let record = sandbox.record(name).unwrap_or_else(|| panic!("{fix:?}: no record"));
        let _ = tokio::time::timeout(WAIT, client.cancel()).await.expect("the client stops in time");
        group_gone(&record).await;
    }
}

/// A proxy in front of the fixture with `--catalog` (logging with levels, `_meta` echoing,
/// a prompt, resources, a template, completions, subscriptions), requiring `mcp==MCP`,
/// ready once the file `ready` exists. Returns the client, its events, the sandbox and the
/// wheel (both kept as long as the test runs) and the ready file.
async fn catalog_proxy(
    mcp: &str,
    name: &str,
) -> Option<(Client, mcp_support::Events, Sandbox, Wheel, std::path::PathBuf)> {
    let uv = support::Uv::find()?;
    let wheel = build_wheel(&uv.python, mcp);
    let sandbox = Sandbox::with_env(uv.env());
    let ready = sandbox.path("ready");
    let (client, events) = connect(&sandbox, &catalog_args(&uv, &wheel, &ready, name)).await;
    Some((client, events, sandbox, wheel, ready))
}

/// The proxy's arguments for the fixture with `--catalog` (see [`catalog_proxy`]).
fn catalog_args(uv: &support::Uv, wheel: &Wheel, ready: &Path, name: &str) -> Vec<String> {
    let timeout = format!("{}s", READY.as_secs());
    [
        "--runner",
        "uvx",
        "--package",
        &wheel.path.to_string_lossy(),
        "--python",
        &uv.python.to_string_lossy(),
        "--uvx",
        &uv.uvx.to_string_lossy(),
        "--preset",
        "claude-skills",
        "--name",
        name,
        "--call-wait",
        &timeout,
        "--timeout",
        &timeout,
        "--",
        "--port",
        "{port}",
        "--ready-file",
        &ready.to_string_lossy(),
        "--catalog",
    ]
    .map(String::from)
    .to_vec()
}

/// The fixture's log messages (logger `fixture`) the host got, until `until` is among them.
#[allow(deprecated)] // MCP logging (SEP-2577 deprecates it), still what hosts show
async fn fixture_logs_until(events: &mut mcp_support::Events, seen: &mut Vec<String>, until: &str) {
    let deadline = tokio::time::sleep(WAIT);
    tokio::pin!(deadline);
    while !seen.iter().any(|s| s == until) {
        tokio::select! {
            got = events.logged.recv() => {
                let got = got.expect("a log message");
                if got.logger.as_deref() == Some("fixture") {
                    seen.push(got.data.as_str().unwrap_or_default().to_string());
                }
            }
            _ = &mut deadline => panic!("no log message `{until}` reached the host; got {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_2_backend_logging_and_the_hosts_level_pass_through() {
    logging_passes_through(MCP_2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_1_backend_logging_and_the_hosts_level_pass_through() {
    logging_passes_through(MCP_1).await;
}

/// Issue 22, item 2: the host's `logging/setLevel`, sent before the backend is ready, is
/// answered, remembered and applied once the backend connects; sent to a ready backend it is
/// forwarded; the backend's `notifications/message` reach the host.
#[allow(deprecated)] // MCP logging (SEP-2577 deprecates it), still what hosts show
async fn logging_passes_through(mcp: &str) {
    use rmcp::model::{LoggingLevel, SetLevelRequestParams};
    let Some((client, mut events, sandbox, _wheel, ready)) = catalog_proxy(mcp, "logs").await else { return };
    let info = client.peer_info().expect("server info");
    assert!(info.capabilities.logging.is_some(), "the proxy advertises logging: {info:?}");
    // Before ready: remembered, answered at once.
    tokio::time::timeout(WAIT, client.set_level(SetLevelRequestParams::new(LoggingLevel::Info)))
        .await
        .expect("setLevel answered in time")
        .expect("setLevel before ready");
    std::fs::write(&ready, "").expect("create the ready file");
    // The call waits for the backend; the backend then logs at info and above only.
    let said = call(&client, "say", json!({"message": "first"})).await.expect("forwarded");
    assert_eq!(text_of(&said), "sent info", "the host's level reached the backend: {said:?}");
    let mut seen = Vec::new();
    fixture_logs_until(&mut events, &mut seen, "info: first").await;
    // Ready: forwarded at once.
    tokio::time::timeout(WAIT, client.set_level(SetLevelRequestParams::new(LoggingLevel::Debug)))
        .await
        .expect("setLevel answered in time")
        .expect("setLevel once ready");
    let said = call(&client, "say", json!({"message": "second"})).await.expect("forwarded");
    assert_eq!(text_of(&said), "sent debug,info", "{said:?}");
    fixture_logs_until(&mut events, &mut seen, "debug: second").await;
    fixture_logs_until(&mut events, &mut seen, "info: second").await;
    assert!(!seen.iter().any(|s| s == "debug: first"), "{seen:?}");
    let record = sandbox.record("logs").expect("a record while it runs");
    let _ = tokio::time::timeout(WAIT, client.cancel()).await.expect("the client stops in time");
    group_gone(&record).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_2_a_requests_meta_reaches_the_backend_and_a_results_meta_the_host() {
    meta_passes_through(MCP_2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_1_a_requests_meta_reaches_the_backend_and_a_results_meta_the_host() {
    meta_passes_through(MCP_1).await;
}

/// Issue 22, item 3: a `tools/call`'s `_meta` (Claude Code's `claudecode/toolUseId`, W3C trace
/// context, an `io.modelcontextprotocol/*` key) reaches the backend untouched, and the
/// backend's result `_meta` reaches the host.
async fn meta_passes_through(mcp: &str) {
    use rmcp::model::{CallToolRequest, ClientRequest, RequestMetaObject, ServerResult};
    use rmcp::service::PeerRequestOptions;
    let Some((client, _events, sandbox, _wheel, ready)) = catalog_proxy(mcp, "meta").await else { return };
    std::fs::write(&ready, "").expect("create the ready file");
    let sent = json!({
        "claudecode/toolUseId": "toolu_01ABC",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "vendor=opaque",
        "io.modelcontextprotocol/example": {"nested": [1, 2]},
    });
    let meta: RequestMetaObject = serde_json::from_value(sent.clone()).expect("a request _meta");
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(CallToolRequestParams::new("echo_meta")));
    let handle = client
        .peer()
        .send_request_with_option(request, PeerRequestOptions::no_options().with_meta(meta))
        .await
        .expect("sent");
    let answer = tokio::time::timeout(READY + WAIT, handle.await_response())
        .await
        .expect("answered in time")
        .expect("forwarded");
    let ServerResult::CallToolResult(result) = answer else { panic!("not a tool result: {answer:?}") };
    assert_ne!(result.is_error, Some(true), "{result:?}");
    let echoed: Value = serde_json::from_str(&text_of(&result)).expect("the backend's JSON");
    for (key, value) in object(sent.clone()) {
        assert_eq!(echoed[&key], value, "`{key}` reached the backend untouched: {echoed}");
    }
    let result_meta = serde_json::to_value(&result.meta).expect("the result's _meta");
    assert_eq!(result_meta["fixture/echo"], echoed, "the result's _meta reached the host: {result:?}");
    let record = sandbox.record("meta").expect("a record while it runs");
    let _ = tokio::time::timeout(WAIT, client.cancel()).await.expect("the client stops in time");
    group_gone(&record).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_2_a_tool_asks_the_host_elicitation_sampling_and_roots() {
    asks_reach_the_host(MCP_2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_1_a_tool_asks_the_host_elicitation_sampling_and_roots() {
    asks_reach_the_host(MCP_1).await;
}

/// Issue 22, item 1: a stock SDK server's tool that asks the host — `ctx.elicit` (form
/// mode), `session.create_message` (sampling), `session.list_roots` — gets the host's own
/// answer through the proxy: the host offers all three at `initialize`, the proxy connects
/// to the backend with the same, and forwards each request and its answer (before, the
/// backend saw a client with no capabilities: elicitation was declined on the user's
/// behalf, sampling refused, roots empty).
async fn asks_reach_the_host(mcp: &str) {
    let Some((client, _events, sandbox, _wheel, ready)) = catalog_proxy(mcp, "asks").await else { return };
    std::fs::write(&ready, "").expect("create the ready file");
    let asked = call(&client, "ask_name", json!({})).await.expect("ask_name answered");
    assert_eq!(text_of(&asked), "accept:Ada", "the host's answer reached the tool: {asked:?}");
    let sampled = call(&client, "ask_model", json!({"prompt": "which skill?"})).await.expect("ask_model answered");
    assert_eq!(
        text_of(&sampled),
        format!("{}:the host's model read: which skill?", mcp_support::HOST_MODEL),
        "the host's model answered the tool: {sampled:?}"
    );
    let roots = call(&client, "host_roots", json!({})).await.expect("host_roots answered");
    assert_eq!(text_of(&roots), mcp_support::HOST_ROOT, "the host's roots reached the tool: {roots:?}");
    let record = sandbox.record("asks").expect("a record while it runs");
    let _ = tokio::time::timeout(WAIT, client.cancel()).await.expect("the client stops in time");
    group_gone(&record).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_2_a_40_mib_answer_passes_and_a_request_too_large_for_the_backend_is_answered() {
    large_messages_pass(MCP_2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_1_a_40_mib_answer_passes_and_a_request_too_large_for_the_backend_is_answered() {
    large_messages_pass(MCP_1).await;
}

/// The proxy's answer to request `id` (its other lines skipped), read as a raw host does.
async fn answer_to(id: i64, stdout: &mut tokio::io::BufReader<tokio::process::ChildStdout>) -> Value {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    loop {
        line.clear();
        let read = tokio::time::timeout(READY + WAIT, stdout.read_line(&mut line)).await;
        assert!(read.expect("answered in time").expect("read") > 0, "the proxy ended before answering {id}");
        let message: Value = serde_json::from_str(&line).expect("one JSON message per line");
        if message["id"] == id {
            return message;
        }
    }
}

/// Issue 22, item 5: a stock server's 40 MiB answer (the text twice, as content and
/// structured content: about 80 MiB in one SSE event) passes the proxy whole, over rmcp's
/// 16 MiB limit (before: "Transport closed"); a 3 MiB request passes whole; a 40 MiB
/// request, which the SDK's server refuses itself (its 4 MiB request body limit, HTTP 413),
/// is answered with its id saying so — never dropped. A host that writes raw lines, as
/// one with no line limit does.
async fn large_messages_pass(mcp: &str) {
    use tokio::io::AsyncWriteExt;
    let Some(uv) = support::Uv::find() else { return };
    let wheel = build_wheel(&uv.python, mcp);
    let sandbox = Sandbox::with_env(uv.env());
    let ready = sandbox.path("ready");
    std::fs::write(&ready, "").expect("create the ready file");
    let mut proxy = sandbox
        .command(&catalog_args(&uv, &wheel, &ready, "large"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start tether mcp-proxy");
    let mut stdin = proxy.stdin.take().expect("stdin");
    let mut stdout = tokio::io::BufReader::new(proxy.stdout.take().expect("stdout"));
    let letters = |n: usize| -> String { (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect() };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw-host", "version": "1"}}});
    for message in [init, json!({"jsonrpc": "2.0", "method": "notifications/initialized"})] {
        stdin.write_all(format!("{message}\n").as_bytes()).await.expect("write");
    }
    let initialized = answer_to(1, &mut stdout).await;
    assert!(initialized["result"]["serverInfo"].is_object(), "{initialized}");
    let call = |id: i64, tool: &str, arguments: Value| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}});
    let text_of_answer =
        |answer: &Value| answer["result"]["content"][0]["text"].as_str().unwrap_or_default().to_string();
    // A 40 MiB answer.
    let unit = letters(1024);
    let times = 40 * 1024;
    stdin
        .write_all(format!("{}\n", call(2, "repeat_text", json!({"text": unit, "times": times}))).as_bytes())
        .await
        .expect("write");
    let answer = answer_to(2, &mut stdout).await;
    let got = text_of_answer(&answer);
    assert_eq!(got.len(), unit.len() * times, "the whole 40 MiB answer came: {}", &got[..got.len().min(300)]);
    assert!(got == unit.repeat(times), "the answer came unchanged");
    // A 3 MiB request.
    let text = letters(3 * 1024 * 1024);
    stdin.write_all(format!("{}\n", call(3, "echo_text", json!({"text": text}))).as_bytes()).await.expect("write");
    let answer = answer_to(3, &mut stdout).await;
    assert!(text_of_answer(&answer) == text, "the 3 MiB request passed whole");
    // A 40 MiB request: the backend's own refusal, with the request's id.
    let text = letters(40 * 1024 * 1024);
    stdin.write_all(format!("{}\n", call(4, "echo_text", json!({"text": text}))).as_bytes()).await.expect("write");
    let answer = answer_to(4, &mut stdout).await;
    let said = format!("{}{}", text_of_answer(&answer), answer["error"]["message"].as_str().unwrap_or_default());
    assert!(said.contains("413") || said.contains("too large"), "the backend's refusal reached the host: {said}");
    let record = sandbox.record("large").expect("a record while it runs");
    drop(stdin);
    let _ = tokio::time::timeout(WAIT, proxy.wait()).await.expect("the proxy ends with its input");
    group_gone(&record).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_2_prompts_resources_and_completions_are_forwarded_and_cached() {
    catalog_is_forwarded(MCP_2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_1_prompts_resources_and_completions_are_forwarded_and_cached() {
    catalog_is_forwarded(MCP_1).await;
}

/// The answer of `request` (named `what`), which must come in time.
async fn answered<T>(what: &str, request: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, request).await.unwrap_or_else(|_| panic!("{what} not answered in time"))
}

/// The backend's notes (resources and prompts notifications) the host got, until `until`.
async fn notes_until(events: &mut mcp_support::Events, seen: &mut Vec<String>, until: &str) {
    let deadline = tokio::time::sleep(WAIT);
    tokio::pin!(deadline);
    while !seen.iter().any(|s| s == until) {
        tokio::select! {
            got = events.notes.recv() => seen.push(got.expect("a notification")),
            _ = &mut deadline => panic!("no `{until}` reached the host; got {seen:?}"),
        }
    }
}

/// Issue 22, item 4: a stock server's prompts, resources, resource templates and completions
/// reach the host through the proxy (with subscriptions and the backend's notifications); the
/// next proxy advertises them at `initialize` and lists them from its cache before the backend
/// is ready, and a `prompts/get` made before ready waits for the backend.
#[allow(deprecated)] // resources/subscribe: legacy-only in rmcp, what initialize-era hosts use
async fn catalog_is_forwarded(mcp: &str) {
    use rmcp::model::{
        ArgumentInfo, CompleteRequestParams, GetPromptRequestParams, ReadResourceRequestParams, Reference,
        SubscribeRequestParams, UnsubscribeRequestParams,
    };
    let Some(uv) = support::Uv::find() else { return };
    let wheel = build_wheel(&uv.python, mcp);
    let sandbox = Sandbox::with_env(uv.env());
    let ready = sandbox.path("ready");
    let args = catalog_args(&uv, &wheel, &ready, "catalog");
    std::fs::write(&ready, "").expect("create the ready file");
    let (client, mut events) = connect(&sandbox, &args).await;
    // Ready once a call is answered.
    call(&client, "list_skills", json!({})).await.expect("forwarded");

    let prompts = answered("prompts/list", client.list_all_prompts()).await;
    let prompts = prompts.expect("prompts/list");
    assert_eq!(prompts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["greet"], "{prompts:?}");
    let params = GetPromptRequestParams::new("greet").with_arguments(object(json!({"name": "Ada"})));
    let got = answered("prompts/get", client.get_prompt(params)).await;
    let got = serde_json::to_value(got.expect("prompts/get")).expect("JSON");
    assert_eq!(got["messages"][0]["content"]["text"], "Hello, Ada! Pick a skill.", "{got}");

    let resources = answered("resources/list", client.list_all_resources()).await;
    let resources = resources.expect("resources/list");
    assert_eq!(resources.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(), ["fixture://readme"], "{resources:?}");
    let templates = answered("resources/templates/list", client.list_all_resource_templates()).await;
    let templates = templates.expect("resources/templates/list");
    let uris: Vec<&str> = templates.iter().map(|t| t.uri_template.as_str()).collect();
    assert_eq!(uris, ["fixture://skills/{name}"], "{templates:?}");
    for (uri, text) in
        [("fixture://readme", "tether's Python MCP fixture"), ("fixture://skills/skill-2", "the document of skill-2")]
    {
        let read = answered("resources/read", client.read_resource(ReadResourceRequestParams::new(uri))).await;
        let read = serde_json::to_value(read.expect("resources/read")).expect("JSON");
        assert_eq!(read["contents"][0]["text"], text, "{read}");
    }
    let complete = CompleteRequestParams::new(
        Reference::for_resource("fixture://skills/{name}"),
        ArgumentInfo::new("name", "skill-"),
    );
    let completed = answered("completion/complete", client.complete(complete)).await;
    let completed = completed.expect("completion/complete");
    assert_eq!(completed.completion.values, ["skill-1", "skill-2", "skill-3"], "{completed:?}");

    // Subscribed: the backend's notifications reach the host.
    answered("resources/subscribe", client.subscribe(SubscribeRequestParams::new("fixture://readme")))
        .await
        .expect("resources/subscribe");
    let touched = call(&client, "touch", json!({"uri": "fixture://readme"})).await.expect("forwarded");
    assert_eq!(text_of(&touched), "told updated,resources,prompts", "the subscription reached the backend");
    let mut seen = Vec::new();
    for note in ["resources/updated fixture://readme", "resources/list_changed", "prompts/list_changed"] {
        notes_until(&mut events, &mut seen, note).await;
    }
    answered("resources/unsubscribe", client.unsubscribe(UnsubscribeRequestParams::new("fixture://readme")))
        .await
        .expect("resources/unsubscribe");
    let touched = call(&client, "touch", json!({"uri": "fixture://readme"})).await.expect("forwarded");
    assert_eq!(text_of(&touched), "told resources,prompts", "the unsubscribe reached the backend");
    let record = sandbox.record("catalog").expect("a record while it runs");
    let _ = tokio::time::timeout(WAIT, client.cancel()).await.expect("the client stops in time");
    group_gone(&record).await;

    // The next proxy, its backend not ready: what the first one learnt, at once.
    std::fs::remove_file(&ready).expect("remove the ready file");
    let (client, _events) = connect(&sandbox, &args).await;
    let info = client.peer_info().expect("server info");
    assert!(info.capabilities.prompts.is_some(), "prompts advertised from the cache: {info:?}");
    assert!(info.capabilities.resources.is_some(), "resources advertised from the cache: {info:?}");
    assert!(info.capabilities.completions.is_some(), "completions advertised from the cache: {info:?}");
    let prompts = answered("prompts/list", client.list_all_prompts()).await;
    assert_eq!(prompts.expect("prompts/list").len(), 1, "the cached prompts before ready");
    let resources = answered("resources/list", client.list_all_resources()).await;
    assert_eq!(resources.expect("resources/list").len(), 1, "the cached resources before ready");
    let templates = answered("resources/templates/list", client.list_all_resource_templates()).await;
    assert_eq!(templates.expect("resources/templates/list").len(), 1, "the cached templates before ready");
    // A get before ready waits for the backend (up to --call-wait), then is forwarded.
    let early = {
        let peer = client.peer().clone();
        let params = GetPromptRequestParams::new("greet").with_arguments(object(json!({"name": "Bo"})));
        tokio::spawn(async move { tokio::time::timeout(READY + WAIT, peer.get_prompt(params)).await })
    };
    std::fs::write(&ready, "").expect("create the ready file");
    let got = early.await.expect("the early get's task").expect("answered in time").expect("forwarded once ready");
    let got = serde_json::to_value(got).expect("JSON");
    assert_eq!(got["messages"][0]["content"]["text"], "Hello, Bo! Pick a skill.", "{got}");
    let record = sandbox.record("catalog").expect("a record while it runs");
    let _ = tokio::time::timeout(WAIT, client.cancel()).await.expect("the client stops in time");
    group_gone(&record).await;
}
