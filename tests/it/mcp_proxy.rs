//! End to end: `tether mcp-proxy` driven over stdio by a real MCP client (rmcp's, and a
//! plain JSON-RPC script where the test needs the process's own exit), in front of a
//! real streamable-HTTP MCP backend built with rmcp (`tether-mcp-test-backend`, with the
//! claude-skills `/health`).
//!
//! Nothing sleeps to synchronise: readiness is gated by a file the test creates
//! (`--ready-file`), and everything else is awaited with a bounded deadline.

use crate::mcp_support;

use std::process::Stdio;

use mcp_support::{Client, Sandbox, WAIT, call, connect, group_alive, group_gone, object, text_of};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rmcp::ServiceError;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tether_testkit::mcp_backend::mcp_backend_exe;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The proxy's arguments for the test backend: `proxy` flags, then the backend's `backend` flags.
fn proxy_args(proxy: &[&str], backend: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = proxy.iter().map(|s| s.to_string()).collect();
    args.extend(["--preset", "claude-skills", "--"].map(String::from));
    args.push(mcp_backend_exe().to_string_lossy().into_owned());
    args.extend(["--port", "{port}"].map(String::from));
    args.extend(backend.iter().map(|s| s.to_string()));
    args
}

async fn tool_names(client: &Client) -> Vec<String> {
    let tools = tokio::time::timeout(WAIT, client.list_all_tools()).await.expect("listed in time").expect("tools/list");
    tools.into_iter().map(|t| t.name.to_string()).collect()
}

#[tokio::test]
async fn answers_at_once_lists_cached_tools_then_forwards_once_ready() {
    let sandbox = Sandbox::new();
    let ready = sandbox.path("ready");
    let tools = sandbox.path("tools.json");
    std::fs::write(
        &tools,
        r#"{"tools":[{"name":"list_skills","description":"from the --tools file","inputSchema":{"type":"object"}}]}"#,
    )
    .expect("write the tools file");
    let args = proxy_args(
        &["--name", "e2e", "--call-wait", "100ms", "--tools", &tools.to_string_lossy()],
        &["--skills", "4", "--ready-file", &ready.to_string_lossy()],
    );
    let (client, mut events) = connect(&sandbox, &args).await;

    // Initialized while the backend cannot be ready (its ready file does not exist yet).
    let info = client.peer_info().expect("server info after initialize");
    let server = info.server_info.clone().expect("server info");
    assert_eq!(server.name, "tether-mcp-proxy");
    let tools_cap = info.capabilities.tools.clone().expect("tools capability");
    assert_eq!(tools_cap.list_changed, Some(true));
    let record = sandbox.record_where("e2e", "a process group", |r| r["pgid"].is_u64()).await;

    // Before ready: the --tools file's list, and a loading answer with the progress.
    assert_eq!(tool_names(&client).await, ["list_skills"]);
    let loading = call(&client, "find_helpful_skills", json!({"task_description": "x"})).await.expect("a result");
    assert_eq!(loading.is_error, Some(true), "{loading:?}");
    let text = text_of(&loading);
    assert!(text.contains("still starting") && text.contains("1 loaded"), "{text}");

    // Ready: the host is told the list changed, and sees the backend's own.
    std::fs::write(&ready, "").expect("create the ready file");
    tokio::time::timeout(WAIT, events.changed.recv()).await.expect("list_changed in time").expect("list_changed");
    assert_eq!(tool_names(&client).await, ["list_skills", "find_helpful_skills"]);
    let found = call(&client, "find_helpful_skills", json!({"task_description": "write a haiku", "top_k": 2}))
        .await
        .expect("forwarded");
    assert_ne!(found.is_error, Some(true), "{found:?}");
    assert!(text_of(&found).contains("top 2 skills for: write a haiku"), "{}", text_of(&found));
    let listed = call(&client, "list_skills", json!({})).await.expect("forwarded");
    assert_eq!(text_of(&listed).lines().count(), 4, "{}", text_of(&listed));
    // The backend's progress for that call reached the host (under the host's own token).
    loop {
        let p = tokio::time::timeout(WAIT, events.progress.recv()).await.expect("progress in time").expect("progress");
        if p.message.as_deref() == Some("skill-4") {
            assert_eq!((p.progress, p.total), (4.0, Some(4.0)), "{p:?}");
            break;
        }
    }

    // The backend's own protocol errors reach the host as they are.
    match call(&client, "no_such_tool", json!({})).await {
        Err(ServiceError::McpError(e)) => assert!(e.message.contains("no_such_tool"), "{e:?}"),
        other => panic!("an unknown tool must be the backend's MCP error: {other:?}"),
    }

    // The list is cached for the next start of this instance.
    let cached =
        std::fs::read_to_string(sandbox.state.path().join("mcp-tools").join("e2e.json")).expect("the tools cache");
    assert!(cached.contains("find_helpful_skills"), "{cached}");

    // The host goes away: the backend goes with it.
    let _ = client.cancel().await;
    group_gone(&record).await;
}

#[tokio::test]
async fn a_crashed_backend_is_restarted_and_calls_work_again() {
    let sandbox = Sandbox::new();
    let args = proxy_args(&["--name", "crash", "--call-wait", "120s"], &["--exit-after-calls", "1"]);
    let (client, _events) = connect(&sandbox, &args).await;
    let first = call(&client, "list_skills", json!({})).await.expect("forwarded");
    assert_ne!(first.is_error, Some(true), "{first:?}");
    let before = sandbox.record("crash").expect("a record")["pgid"].clone();
    // It exits with code 3 after that answer; on-failure (the proxy's default) restarts it.
    let after = sandbox.record_where("crash", "a restart", |r| r["restarts"] == json!(1)).await;
    assert_ne!(after["pgid"], before, "a new backend process group");
    let second = call(&client, "find_helpful_skills", json!({"task_description": "again"})).await.expect("forwarded");
    assert_ne!(second.is_error, Some(true), "{second:?}");
    assert!(text_of(&second).contains("again"), "{}", text_of(&second));
    let _ = client.cancel().await;
    group_gone(&after).await;
}

/// Issue 13, item 3: a call sent right as the backend dies (before the proxy has seen it
/// end) waits for the restart like the calls sent a moment later, instead of failing.
#[tokio::test]
async fn a_call_sent_as_the_backend_dies_waits_for_the_restart() {
    let sandbox = Sandbox::new();
    let args = proxy_args(&["--name", "dying", "--call-wait", "120s"], &[]);
    let (client, _events) = connect(&sandbox, &args).await;
    let first = call(&client, "list_skills", json!({})).await.expect("forwarded");
    assert_ne!(first.is_error, Some(true), "{first:?}");
    let status = sandbox.tether(&["status", "--name", "dying", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let backend = status["pid"].as_u64().unwrap_or_else(|| panic!("the backend's pid: {status}"));
    let backend = u32::try_from(backend).expect("pid fits");
    let process = tether::core::procs::ProcessIdentity::of(backend).expect("the backend runs");
    // SIGKILL the backend (our own test's child's child); once it is gone, call at once,
    // before or while the proxy notices.
    kill(Pid::from_raw(backend as i32), Signal::SIGKILL).expect("SIGKILL the backend");
    assert!(tether_testkit::wait_until(WAIT, || !process.is_alive()), "the backend survived SIGKILL");
    let second = call(&client, "find_helpful_skills", json!({"task_description": "right after"})).await;
    let second = second.expect("answered, not a protocol error");
    assert_ne!(second.is_error, Some(true), "the call failed instead of waiting: {}", text_of(&second));
    assert!(text_of(&second).contains("right after"), "{}", text_of(&second));
    let after = sandbox.record("dying").expect("a record");
    assert_eq!(after["restarts"], json!(1), "answered by the restarted backend: {after}");
    let _ = client.cancel().await;
    group_gone(&after).await;
}

/// A call the backend ended under may have taken effect: it is not sent again (the tool
/// does not say it is read-only or idempotent); the host is told so once the backend is back.
// Two threads: the slow call runs on one while the test polls the backend's log on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_backend_dies_under_is_not_sent_again() {
    let sandbox = Sandbox::new();
    let log = sandbox.path("cancel.log");
    let log_arg = log.to_string_lossy().into_owned();
    let args = proxy_args(&["--name", "under", "--call-wait", "120s"], &["--cancel-log", &log_arg]);
    let (client, _events) = connect(&sandbox, &args).await;
    let first = call(&client, "list_skills", json!({})).await.expect("forwarded");
    assert_ne!(first.is_error, Some(true), "{first:?}");
    let record = sandbox.record("under").expect("a record");
    let running = tokio::spawn({
        let peer = client.peer().clone();
        async move {
            let params = CallToolRequestParams::new("wait_for_cancel").with_arguments(object(json!({})));
            tokio::time::timeout(WAIT, peer.call_tool(params)).await.expect("the call is answered in time")
        }
    });
    let started = tether_testkit::wait_until(WAIT, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().any(|l| l == "started"))
    });
    if !started {
        let early = if running.is_finished() { Some(running.await) } else { None };
        panic!("the slow call did not reach the backend; its answer so far: {early:?}");
    }
    let pgid = record["pgid"].as_u64().and_then(|p| i32::try_from(p).ok()).expect("the record's group");
    // The whole group (guard and backend) of our own test's backend: it crashes under the call.
    nix::sys::signal::killpg(Pid::from_raw(pgid), Signal::SIGKILL).expect("SIGKILL the backend's group");
    let answer = running.await.expect("the call task").expect("answered, not a protocol error");
    assert_eq!(answer.is_error, Some(true), "{answer:?}");
    let text = text_of(&answer);
    assert!(text.contains("may or may not have taken effect") && text.contains("wait_for_cancel"), "{text}");
    let started_twice = std::fs::read_to_string(&log).unwrap_or_default().lines().filter(|l| *l == "started").count();
    assert_eq!(started_twice, 1, "the call was not sent again");
    let again = call(&client, "list_skills", json!({})).await.expect("forwarded");
    assert_ne!(again.is_error, Some(true), "the restarted backend answers: {again:?}");
    let after = sandbox.record("under").expect("a record");
    let _ = client.cancel().await;
    group_gone(&after).await;
    println!("reliability: backend SIGKILLed under a non-idempotent tools/call | 1 | 0 calls run twice");
}

#[tokio::test]
async fn the_cached_list_is_served_before_ready_and_a_changed_one_is_announced() {
    let sandbox = Sandbox::new();
    // First run: variant a (2 tools), listed and cached.
    let (client, _events) = connect(&sandbox, &proxy_args(&["--name", "cache"], &[])).await;
    let first = call(&client, "list_skills", json!({})).await.expect("forwarded");
    assert_ne!(first.is_error, Some(true), "{first:?}");
    let record = sandbox.record("cache").expect("a record");
    let _ = client.cancel().await;
    group_gone(&record).await;

    // Second run: variant b (3 tools), not ready until the test says so.
    let ready = sandbox.path("ready");
    let args = proxy_args(&["--name", "cache"], &["--tools-variant", "b", "--ready-file", &ready.to_string_lossy()]);
    let (client, mut events) = connect(&sandbox, &args).await;
    let info = client.peer_info().expect("server info");
    assert_eq!(info.instructions.as_deref(), Some("A test backend for tether: canned skills tools."), "cached");
    assert_eq!(tool_names(&client).await, ["list_skills", "find_helpful_skills"], "the cached list");
    std::fs::write(&ready, "").expect("create the ready file");
    tokio::time::timeout(WAIT, events.changed.recv()).await.expect("list_changed in time").expect("list_changed");
    assert_eq!(tool_names(&client).await, ["list_skills", "find_helpful_skills", "read_skill_document"]);
    let record = sandbox.record("cache").expect("a record");
    let _ = client.cancel().await;
    group_gone(&record).await;
}

/// A JSON-RPC script over the proxy's stdin/stdout, for what rmcp's client hides: the
/// proxy's own exit status.
struct Script {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// The notifications read while waiting for answers.
    seen: Vec<Value>,
}

impl Script {
    fn start(sandbox: &Sandbox, args: &[String]) -> Self {
        Script::spawn(sandbox.command(args))
    }

    /// With `mcp-proxy`'s own defaults, as a host starts it (sharing included).
    fn start_as_host(sandbox: &Sandbox, args: &[String]) -> Self {
        Script::spawn(sandbox.command_as_host(args))
    }

    fn spawn(mut command: tokio::process::Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tether mcp-proxy");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Script { child, stdin, stdout, seen: Vec::new() }
    }

    async fn send(&mut self, message: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let mut line = message.to_string();
        line.push('\n');
        stdin.write_all(line.as_bytes()).await.expect("write to the proxy");
        stdin.flush().await.expect("flush");
    }

    /// Send `line` (and a newline) as it is: for lines that are not JSON-RPC.
    async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{line}\n").as_bytes()).await.expect("write to the proxy");
        stdin.flush().await.expect("flush");
    }

    /// The next error answer (one that cannot name an id has `"id": null`); notifications in
    /// between are skipped.
    async fn next_error(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(WAIT, self.stdout.next_line())
                .await
                .expect("an answer in time")
                .expect("read stdout")
                .expect("stdout open");
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout is not JSON-RPC ({e}): {line}"));
            if v.get("error").is_some() {
                return v;
            }
            assert!(v.get("id").is_none(), "an answer nobody asked for: {v}");
            self.seen.push(v);
        }
    }

    /// The answer to request `id` (notifications in between are skipped).
    async fn answer(&mut self, id: u64) -> Value {
        loop {
            let line = tokio::time::timeout(WAIT, self.stdout.next_line())
                .await
                .expect("an answer in time")
                .expect("read stdout")
                .expect("stdout open");
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout is not JSON-RPC ({e}): {line}"));
            if v["id"] == json!(id) {
                return v;
            }
            if v.get("id").is_none() {
                self.seen.push(v);
            }
        }
    }

    /// The first notification `method` (one seen while waiting for an answer counts).
    async fn notification(&mut self, method: &str) -> Value {
        if let Some(seen) = self.seen.iter().find(|m| m["method"] == method) {
            return seen.clone();
        }
        loop {
            let line = tokio::time::timeout(WAIT, self.stdout.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {method} in time"))
                .expect("read stdout")
                .expect("stdout open");
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout is not JSON-RPC ({e}): {line}"));
            if v["method"] == method {
                return v;
            }
            self.seen.push(v);
        }
    }

    async fn initialize(&mut self) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "script", "version": "1"}}}))
            .await;
        let answer = self.answer(1).await;
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
        answer
    }

    /// Call `tool` (no arguments) as request `id`; the answer must be a tool error: its text.
    async fn tool_error(&mut self, id: u64, tool: &str) -> String {
        self.send(
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {}}}),
        )
        .await;
        let answer = self.answer(id).await;
        assert_eq!(answer["result"]["isError"], json!(true), "{answer}");
        answer["result"]["content"][0]["text"].as_str().unwrap_or_default().to_string()
    }

    async fn exit_code(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(WAIT, self.child.wait()).await.expect("the proxy exits in time");
        status.expect("wait for the proxy").code()
    }
}

#[tokio::test]
async fn stdin_eof_stops_the_backend_and_exits_0() {
    let sandbox = Sandbox::new();
    let mut script = Script::start(&sandbox, &proxy_args(&["--name", "eof", "--call-wait", "120s"], &[]));
    let init = script.initialize().await;
    assert_eq!(init["result"]["serverInfo"]["name"], "tether-mcp-proxy", "{init}");
    script
        .send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "find_helpful_skills", "arguments": {"task_description": "eof"}}}))
        .await;
    let answer = script.answer(2).await;
    assert!(answer["result"]["content"][0]["text"].as_str().is_some_and(|t| t.contains("eof")), "{answer}");
    let record = sandbox.record("eof").expect("a record while it runs");
    script.stdin = None; // EOF
    assert_eq!(script.exit_code().await, Some(0));
    group_gone(&record).await;
    assert!(sandbox.record("eof").is_none(), "the record is removed on a clean stop");
}

/// JSON-RPC hygiene on stdin: a request before `initialize` gets a clear error (and a
/// notification before it does not end the session), a line that is not JSON gets a Parse
/// error, a batch an Invalid Request error, both with `"id": null`, and the proxy keeps
/// serving.
#[tokio::test]
async fn bad_json_rpc_lines_are_answered_and_the_proxy_keeps_serving() {
    let sandbox = Sandbox::new();
    let never = sandbox.path("never");
    let mut script = Script::start(&sandbox, &proxy_args(&[], &["--ready-file", &never.to_string_lossy()]));
    script.send(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"})).await;
    let early = script.answer(7).await;
    assert_eq!(early["error"]["code"], json!(-32002), "{early}");
    let message = early["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not initialized") && message.contains("`initialize`"), "{early}");
    script.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    script.send_line("{\"jsonrpc\": \"2.0\", \"id\": 8, \"method\": \"ping\"").await;
    let parse = script.next_error().await;
    assert_eq!((parse["id"].clone(), parse["error"]["code"].clone()), (Value::Null, json!(-32700)), "{parse}");

    let init = script.initialize().await;
    assert_eq!(init["result"]["serverInfo"]["name"], "tether-mcp-proxy", "{init}");
    script.send_line("not json at all").await;
    let parse = script.next_error().await;
    assert_eq!((parse["id"].clone(), parse["error"]["code"].clone()), (Value::Null, json!(-32700)), "{parse}");
    script.send_line(r#"[{"jsonrpc": "2.0", "id": 9, "method": "tools/list"}]"#).await;
    let batch = script.next_error().await;
    assert_eq!((batch["id"].clone(), batch["error"]["code"].clone()), (Value::Null, json!(-32600)), "{batch}");
    assert!(batch["error"]["message"].as_str().is_some_and(|m| m.contains("batch")), "{batch}");

    // A known method with params it cannot take: Invalid params with what was wrong, not
    // Method not found (issue 22, item 6); an unknown method stays Method not found.
    script.send(json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"arguments": {}}})).await;
    let bad = script.answer(11).await;
    assert_eq!(bad["error"]["code"], json!(-32602), "{bad}");
    assert!(bad["error"]["message"].as_str().is_some_and(|m| m.contains("tools/call") && m.contains("name")), "{bad}");
    script.send(json!({"jsonrpc": "2.0", "id": 12, "method": "no/such/method", "params": {}})).await;
    let unknown = script.answer(12).await;
    assert_eq!(unknown["error"]["code"], json!(-32601), "{unknown}");

    script.send(json!({"jsonrpc": "2.0", "id": 10, "method": "tools/list"})).await;
    let listed = script.answer(10).await;
    let tools = listed["result"]["tools"].as_array().map_or(0, Vec::len);
    assert_eq!(tools, 3, "the preset's tools: {listed}");
    script.stdin = None;
    assert_eq!(script.exit_code().await, Some(0));
}

#[tokio::test]
async fn sigterm_while_loading_stops_the_backend_and_exits_0() {
    let sandbox = Sandbox::new();
    let never = sandbox.path("never");
    let args = proxy_args(&["--name", "term"], &["--ready-file", &never.to_string_lossy()]);
    let mut script = Script::start(&sandbox, &args);
    script.initialize().await;
    let record = sandbox.record_where("term", "a process group", |r| r["pgid"].is_u64()).await;
    let pid = script.child.id().expect("the proxy's pid");
    kill(Pid::from_raw(i32::try_from(pid).expect("pid fits")), Signal::SIGTERM).expect("SIGTERM the proxy");
    assert_eq!(script.exit_code().await, Some(0));
    group_gone(&record).await;
}

#[tokio::test]
async fn a_start_that_fails_is_final_and_reaches_the_host_in_the_protocol() {
    let sandbox = Sandbox::new();
    // As a host starts it: shared, and the proxy's default restart policy (on-failure).
    let args = proxy_args(&["--name", "fails"], &["--skills", "many"]);
    let mut script = Script::start_as_host(&sandbox, &args);
    script.initialize().await;
    let logged = script.notification("notifications/message").await;
    let error = logged["params"]["data"]["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("will not be restarted"), "{logged}");
    assert_eq!(logged["params"]["data"]["exit_code"], 2, "{logged}");
    // Shared: the output went to the instance's log file, and still reaches the host.
    let tail = logged["params"]["data"]["last_output"].to_string();
    assert!(tail.contains("many"), "the backend's own complaint: {logged}");
    // The first tools/list after the failure answers it; later ones list what is known.
    script.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).await;
    let listed = script.answer(2).await;
    let message = listed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("exit code 2") && message.contains("many"), "{listed}");
    script.send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})).await;
    let again = script.answer(3).await;
    assert_eq!(again["result"]["tools"].as_array().map_or(0, Vec::len), 3, "the preset's tools: {again}");
    let text = script.tool_error(4, "list_skills").await;
    assert!(text.contains("will not be restarted") && text.contains("exit code 2"), "{text}");
    assert!(!text.contains("still starting"), "{text}");
    script.stdin = None;
    assert_eq!(script.exit_code().await, Some(0));
}

#[tokio::test]
async fn a_backend_that_cannot_start_is_explained_to_the_host() {
    let sandbox = Sandbox::new();
    // A bad value: the backend's own argument parser rejects it and exits 2.
    let args = proxy_args(&["--name", "bad", "--restart", "no"], &["--skills", "many"]);
    let mut script = Script::start(&sandbox, &args);
    script.initialize().await;
    let text = script.tool_error(2, "list_skills").await;
    assert!(text.contains("will not be restarted"), "{text}");
    assert!(text.contains("exit code 2"), "{text}");
    assert!(text.contains("many"), "the backend's own complaint is shown: {text}");
    // Hosts show a failure only when it surfaces in the protocol: an MCP log message too.
    let logged = script.notification("notifications/message").await;
    assert_eq!(logged["params"]["level"], "error", "{logged}");
    assert!(
        logged["params"]["data"]["error"].as_str().is_some_and(|e| e.contains("will not be restarted")),
        "{logged}"
    );
    assert_eq!(logged["params"]["data"]["exit_code"], 2, "{logged}");
    script.stdin = None;
    assert_eq!(script.exit_code().await, Some(0));
}

#[tokio::test]
async fn a_wrong_mcp_path_is_explained_to_the_host() {
    let sandbox = Sandbox::new();
    // Ready by /health, but nothing at /nope: retried for the --timeout (here 1s), then failed.
    let args = proxy_args(&["--name", "path", "--restart", "no", "--timeout", "1s", "--mcp-path", "/nope"], &[]);
    let mut script = Script::start(&sandbox, &args);
    script.initialize().await;
    let text = script.tool_error(2, "list_skills").await;
    assert!(text.contains("/nope did not answer in 1.0s") && text.contains("404"), "{text}");
    assert!(text.contains("--mcp-path"), "{text}");
    script.stdin = None;
    assert_eq!(script.exit_code().await, Some(0));
}

/// Bad input: a clear message on stderr and exit code 2, before anything starts.
fn refused(sandbox: &Sandbox, args: &[&str], expect: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("mcp-proxy")
        .args(args)
        .env("TETHER_STATE_DIR", sandbox.state.path())
        .current_dir(sandbox.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run tether mcp-proxy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(expect), "{args:?}: expected `{expect}` in: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout (the protocol): {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let sandbox = Sandbox::new();
    refused(&sandbox, &[], "mcp-proxy needs a backend to run");
    refused(&sandbox, &["--mcp-path", "mcp", "--", "srv"], "the path must start with `/`");
    let bad = sandbox.path("bad.json");
    std::fs::write(&bad, r#"{"tool": []}"#).expect("write");
    refused(&sandbox, &["--tools", &bad.to_string_lossy(), "--", "srv"], "missing field `tools`");
    refused(&sandbox, &["--tools", "/nonexistent/tools.json", "--", "srv"], "cannot read the --tools file");
    refused(&sandbox, &["--call-wait", "soon", "--", "srv"], "soon");
}

#[tokio::test]
async fn a_detached_instance_it_reused_is_left_running() {
    let sandbox = Sandbox::new();
    let backend = mcp_backend_exe().to_string_lossy().into_owned();
    // `tether up --detach` of the same backend, then a proxy with the same name and arguments.
    let detach = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["up", "--detach", "--name", "kept", "--port", "auto", "--preset", "claude-skills", "--"])
        .args([backend.as_str(), "--port", "{port}"])
        .env("TETHER_STATE_DIR", sandbox.state.path())
        .current_dir(sandbox.dir.path())
        .stdin(Stdio::null())
        .output();
    let detach = tokio::time::timeout(WAIT, detach).await.expect("up --detach in time").expect("run tether up");
    assert!(detach.status.success(), "{}", String::from_utf8_lossy(&detach.stderr));
    let before = sandbox.record("kept").expect("the detached record");

    let (client, _events) = connect(&sandbox, &proxy_args(&["--name", "kept"], &[])).await;
    let found = call(&client, "find_helpful_skills", json!({"task_description": "reuse"})).await.expect("forwarded");
    assert_ne!(found.is_error, Some(true), "{found:?}");
    assert_eq!(sandbox.record("kept").expect("still recorded")["pgid"], before["pgid"], "reused, not restarted");
    let _ = client.cancel().await;

    // The proxy is gone; the instance it did not start is still there, and healthy.
    assert!(group_alive(&before), "the detached backend must survive the proxy");
    let down = sandbox.tether(&["down", "--name", "kept"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    group_gone(&before).await;
}

#[tokio::test]
async fn concurrent_calls_are_each_answered_with_their_own_result() {
    let sandbox = Sandbox::new();
    let (client, _events) = connect(&sandbox, &proxy_args(&["--name", "many", "--call-wait", "120s"], &[])).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..32 {
        let peer = client.peer().clone();
        calls.spawn(async move {
            let args = object(json!({"task_description": format!("task {i}"), "top_k": 1}));
            let result = peer.call_tool(CallToolRequestParams::new("find_helpful_skills").with_arguments(args)).await;
            (i, result)
        });
    }
    let mut answered = 0;
    while let Some(joined) = tokio::time::timeout(WAIT, calls.join_next()).await.expect("all answered in time") {
        let (i, result) = joined.expect("the call task");
        let result = result.expect("forwarded");
        assert!(text_of(&result).contains(&format!("top 1 skills for: task {i}\n")), "call {i}: {}", text_of(&result));
        answered += 1;
    }
    assert_eq!(answered, 32);
    let record = sandbox.record("many").expect("a record");
    let _ = client.cancel().await;
    group_gone(&record).await;
}

#[tokio::test]
async fn a_sigkilled_proxy_leaves_no_backend_behind() {
    const CYCLES: usize = 20;
    let sandbox = Sandbox::new();
    let never = sandbox.path("never");
    let mut slowest = std::time::Duration::ZERO;
    for cycle in 0..CYCLES {
        // Even cycles: killed while the backend loads; odd ones: after a forwarded call.
        let loading = cycle % 2 == 0;
        let name = format!("kill{cycle}");
        let never = never.to_str().expect("a UTF-8 path");
        let backend: &[&str] = if loading { &["--ready-file", never] } else { &[] };
        let mut script = Script::start(&sandbox, &proxy_args(&["--name", &name, "--call-wait", "120s"], backend));
        script.initialize().await;
        let record = sandbox.record_where(&name, "a process group", |r| r["pgid"].is_u64()).await;
        if !loading {
            script
                .send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "list_skills", "arguments": {}}}))
                .await;
            let answer = script.answer(2).await;
            assert!(answer["result"]["content"][0]["text"].is_string(), "{answer}");
        }
        script.child.start_kill().expect("SIGKILL the proxy");
        script.exit_code().await;
        let killed = std::time::Instant::now();
        group_gone(&record).await;
        slowest = slowest.max(killed.elapsed());
    }
    println!(
        "reliability: `mcp-proxy` SIGKILLed while its backend loads / after a call | {CYCLES} cycles | 0 processes leaked (every group checked gone; slowest cleanup {} ms)",
        slowest.as_millis()
    );
}

/// The files at the top of the state directory whose names end with `suffix`, sorted.
fn state_files(sandbox: &Sandbox, suffix: &str) -> Vec<String> {
    let entries = std::fs::read_dir(sandbox.state.path()).expect("read the state directory");
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// Issue 13, item 4: proxy sessions leave no litter in the state directory: no lock file of
/// their own instance (`mcp-PID.lock`) and no record, not even a SIGKILLed proxy's (both go
/// at the next session's start); only a live session's own are there.
#[tokio::test]
async fn proxy_sessions_leave_no_lock_files_or_records_behind() {
    let sandbox = Sandbox::new();
    let never = sandbox.path("never");
    let never = never.to_str().expect("a UTF-8 path");
    // Two sessions the host ends (EOF), one after a forwarded call.
    for call in [false, true] {
        let mut script = Script::start(&sandbox, &proxy_args(&["--call-wait", "120s"], &[]));
        script.initialize().await;
        if call {
            script
                .send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "list_skills", "arguments": {}}}))
                .await;
            let answer = script.answer(2).await;
            assert!(answer["result"]["content"][0]["text"].is_string(), "{answer}");
        }
        script.stdin = None;
        assert_eq!(script.exit_code().await, Some(0));
    }
    assert_eq!(state_files(&sandbox, ".lock"), Vec::<String>::new(), "finished sessions' locks");
    assert_eq!(state_files(&sandbox, ".json"), Vec::<String>::new(), "finished sessions' records");

    // One SIGKILLed while its backend loads: its lock and record stay, for now.
    let mut killed = Script::start(&sandbox, &proxy_args(&[], &["--ready-file", never]));
    killed.initialize().await;
    let killed_name = format!("mcp-{}", killed.child.id().expect("the proxy's pid"));
    let record = sandbox.record_where(&killed_name, "a process group", |r| r["pgid"].is_u64()).await;
    killed.child.start_kill().expect("SIGKILL the proxy");
    killed.exit_code().await;
    group_gone(&record).await;
    assert_eq!(state_files(&sandbox, ".lock"), [format!("{killed_name}.lock")]);

    // The next session: while it runs, only its own lock and record are there.
    let mut live = Script::start(&sandbox, &proxy_args(&[], &["--ready-file", never]));
    live.initialize().await;
    let live_name = format!("mcp-{}", live.child.id().expect("the proxy's pid"));
    sandbox.record_where(&live_name, "a process group", |r| r["pgid"].is_u64()).await;
    assert_eq!(state_files(&sandbox, ".lock"), [format!("{live_name}.lock")], "the killed proxy's lock is gone");
    assert_eq!(state_files(&sandbox, ".json"), [format!("{live_name}.json")], "the killed proxy's record is gone");
    live.stdin = None;
    assert_eq!(live.exit_code().await, Some(0));
    assert_eq!(state_files(&sandbox, ".lock"), Vec::<String>::new());
    assert_eq!(state_files(&sandbox, ".json"), Vec::<String>::new());
}

/// Issue 13, item 2: two proxies of the same configuration with `--share` (two host
/// windows) run one backend; it outlives the first to go and stops after the last.
#[tokio::test]
async fn shared_proxies_run_one_backend_that_stops_after_the_last() {
    let sandbox = Sandbox::new();
    let args = proxy_args(&["--share", "200ms", "--call-wait", "120s"], &[]);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "find_helpful_skills", "arguments": {"task_description": "shared"}}});
    let mut first = Script::start(&sandbox, &args);
    first.initialize().await;
    first.send(call.clone()).await;
    assert!(first.answer(2).await["result"]["content"][0]["text"].as_str().is_some_and(|t| t.contains("shared")));
    let mut second = Script::start(&sandbox, &args);
    second.initialize().await;
    second.send(call).await;
    assert!(second.answer(2).await["result"]["content"][0]["text"].as_str().is_some_and(|t| t.contains("shared")));
    // One record, one backend: the instance name is the configuration's.
    let records: Vec<String> = std::fs::read_dir(sandbox.state.path())
        .expect("the state dir")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = sandbox.record(&records[0]).expect("the shared record");
    assert_eq!(record["detached"], true);
    first.stdin = None;
    assert_eq!(first.exit_code().await, Some(0));
    assert!(group_alive(&record), "the backend stopped while another proxy uses it");
    second.stdin = None;
    assert_eq!(second.exit_code().await, Some(0));
    group_gone(&record).await;
    let name = records[0].clone();
    let gone = tether_testkit::wait_until(WAIT, || sandbox.record(&name).is_none());
    assert!(gone, "the record of a shared backend that stopped is left behind");
}

/// Issue 13, item 2: sharing is the default. Two proxies of one configuration, started as a
/// host starts them (no sharing flag), use one backend; `status` counts both; after the last
/// one it lingers (60 s by default, so a reopened window finds it loaded) until `down`.
#[tokio::test]
async fn proxies_started_as_hosts_do_share_one_backend_by_default() {
    let sandbox = Sandbox::new();
    let args = proxy_args(&["--call-wait", "120s"], &[]);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "find_helpful_skills", "arguments": {"task_description": "by default"}}});
    let mut first = Script::start_as_host(&sandbox, &args);
    first.initialize().await;
    first.send(call.clone()).await;
    assert!(first.answer(2).await["result"]["content"][0]["text"].as_str().is_some_and(|t| t.contains("by default")));
    let mut second = Script::start_as_host(&sandbox, &args);
    second.initialize().await;
    second.send(call).await;
    assert!(second.answer(2).await["result"]["content"][0]["text"].as_str().is_some_and(|t| t.contains("by default")));
    let records = state_files(&sandbox, ".json");
    assert_eq!(records.len(), 1, "one instance for both proxies: {records:?}");
    let name = records[0].trim_end_matches(".json").to_string();
    let record = sandbox.record(&name).expect("the shared record");
    assert_eq!(record["detached"], true, "{record}");
    let tether = |args: &[&str]| sandbox.tether(args);
    let status: Value =
        serde_json::from_slice(&tether(&["status", "--name", &name, "--json"]).stdout).expect("status JSON");
    assert_eq!(status["attached"], 2, "both proxies hold a lease: {status}");
    // The table's NAME column fits the shared (hashed) name: the columns stay aligned.
    let table = String::from_utf8_lossy(&tether(&["status"]).stdout).into_owned();
    let mut lines = table.lines();
    let (header, row) = (lines.next().unwrap_or_default(), lines.next().unwrap_or_default());
    assert!(row.starts_with(&format!("{name} ")), "{table}");
    assert_eq!(header.find("STATE"), row.find("ready").or(row.find("running")), "aligned: {table}");
    first.stdin = None;
    assert_eq!(first.exit_code().await, Some(0));
    second.stdin = None;
    assert_eq!(second.exit_code().await, Some(0));
    assert!(group_alive(&record), "the backend lingers after the last proxy (default 60s)");
    let down = tether(&["down", "--name", &name]);
    assert!(down.status.success(), "down: {down:?}");
    group_gone(&record).await;
}

/// Sharing is by configuration *and* surroundings: a proxy started in another project's
/// directory, or with another environment (a host passes API keys there), gets a backend
/// of its own — never one that runs in another project with another project's secrets.
#[tokio::test]
async fn proxies_of_other_projects_or_secrets_do_not_share() {
    let sandbox = Sandbox::new();
    let elsewhere = tempfile::tempdir().expect("another project's directory");
    let args = proxy_args(&["--call-wait", "120s"], &[]);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "list_skills", "arguments": {}}});
    let mut here = Script::start_as_host(&sandbox, &args);
    let mut there = sandbox.command_as_host(&args);
    there.current_dir(elsewhere.path());
    let mut there = Script::spawn(there);
    let mut secret = sandbox.command_as_host(&args);
    secret.env("PROJECT_API_KEY", "another");
    let mut secret = Script::spawn(secret);
    for script in [&mut here, &mut there, &mut secret] {
        script.initialize().await;
        script.send(call.clone()).await;
        assert_ne!(script.answer(2).await["result"]["isError"], json!(true));
    }
    let records = state_files(&sandbox, ".json");
    assert_eq!(records.len(), 3, "one backend each: {records:?}");
    for script in [&mut here, &mut there, &mut secret] {
        script.stdin = None;
        assert_eq!(script.exit_code().await, Some(0));
    }
    for name in records.iter().map(|r| r.trim_end_matches(".json")) {
        let record = sandbox.record(name).expect("a record");
        let down = sandbox.tether(&["down", "--name", name]);
        assert!(down.status.success(), "down {name}: {down:?}");
        group_gone(&record).await;
    }
    println!(
        "reliability: mcp-proxy windows of 2 projects / other secrets (sharing by default) | 3 proxies | 0 backends shared across them"
    );
}

/// Issue 13, item 3: a backend that exits between its ready `/health` and its MCP
/// `initialize` is noticed at once (the connect races the process), and the host is told.
#[tokio::test]
async fn a_backend_that_exits_before_its_mcp_endpoint_answers_is_reported_at_once() {
    let sandbox = Sandbox::new();
    let exe = env!("CARGO_BIN_EXE_tether");
    // The demo backend: ready on /health at once, no MCP endpoint (404), exits at 0.5 s.
    let args: Vec<String> = [
        "--name",
        "gone",
        "--preset",
        "claude-skills",
        "--max-restarts",
        "0",
        "--call-wait",
        "60s",
        "--",
        exe,
        "demo-backend",
        "--port",
        "{port}",
        "--exit-after",
        "500ms",
        "--exit-code",
        "3",
    ]
    .map(String::from)
    .to_vec();
    let mut script = Script::start(&sandbox, &args);
    script.initialize().await;
    let text = script.tool_error(2, "find_helpful_skills").await;
    assert!(text.contains("after it said ready"), "{text}");
    assert!(!text.contains("mcp-path"), "the exit is the reason, not the path: {text}");
}
