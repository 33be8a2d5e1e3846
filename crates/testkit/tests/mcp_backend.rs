//! The `tether-mcp-test-backend` binary, run as a child and driven with rmcp's own
//! streamable-HTTP client. Having these tests here also makes `cargo test`/`nextest` of the
//! workspace build the binary.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, ProtocolVersion};
use rmcp::service::ServiceError;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::Value;
use tether_testkit::mcp_backend::{self, LISTENING_PREFIX, READY_LINE};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const DEADLINE: Duration = Duration::from_secs(20);

/// A running backend: killed when dropped.
struct Backend {
    child: Child,
    port: u16,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Backend {
    async fn start(args: &[&str]) -> Self {
        let mut child = Command::new(mcp_backend::mcp_backend_exe())
            .args(["--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tether-mcp-test-backend");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = tokio::time::timeout(DEADLINE, stdout.next_line())
            .await
            .expect("the listening line in time")
            .expect("read stdout")
            .expect("a listening line before EOF");
        let addr = line.strip_prefix(LISTENING_PREFIX).unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        let port = addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        assert_ne!(port, 0, "the real port is printed");
        Self { child, port, stdout }
    }

    fn mcp_url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    async fn health(&self) -> Value {
        let body = reqwest::get(format!("http://127.0.0.1:{}/health", self.port))
            .await
            .expect("GET /health")
            .error_for_status()
            .expect("/health is 200")
            .text()
            .await
            .expect("/health body");
        serde_json::from_str(&body).expect("/health is JSON")
    }

    async fn next_stdout_line(&mut self) -> Option<String> {
        tokio::time::timeout(DEADLINE, self.stdout.next_line())
            .await
            .expect("a stdout line in time")
            .expect("read stdout")
    }
}

fn args(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("arguments must be an object, got {other}"),
    }
}

fn text_of(result: &CallToolResult) -> &str {
    result
        .content
        .first()
        .and_then(|block| block.as_text())
        .map(|text| text.text.as_str())
        .expect("a text content block")
}

fn tool_names(tools: &[rmcp::model::Tool]) -> Vec<&str> {
    tools.iter().map(|tool| tool.name.as_ref()).collect()
}

#[test]
fn exe_helper_finds_the_binary_cargo_built() {
    let found = mcp_backend::mcp_backend_exe();
    let built = std::path::Path::new(env!("CARGO_BIN_EXE_tether-mcp-test-backend"));
    assert_eq!(found.canonicalize().expect("found exists"), built.canonicalize().expect("built exists"));
}

#[tokio::test]
async fn health_goes_from_loading_to_ready_and_mcp_serves_variant_a() {
    let mut backend = Backend::start(&["--ready-after", "300", "--skills", "4", "--print-ready"]).await;

    // Loading: false first, skills_loaded never above --skills, then true with all 4.
    let first = backend.health().await;
    assert_eq!(first["status"], "ok");
    assert_eq!(first["version"], "0.1.0");
    assert_eq!(first["loading_complete"], false, "right after start it is loading: {first}");
    let start = Instant::now();
    let ready = loop {
        let health = backend.health().await;
        let loaded = health["skills_loaded"].as_u64().expect("skills_loaded");
        assert!(loaded <= 4, "{health}");
        if health["loading_complete"] == true {
            break health;
        }
        assert!(start.elapsed() < DEADLINE, "never ready: {health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready["skills_loaded"], 4);
    assert_eq!(backend.next_stdout_line().await.as_deref(), Some(READY_LINE));

    // MCP, with rmcp's own client and its default settings.
    let transport = StreamableHttpClientTransport::from_uri(backend.mcp_url());
    let client = ClientConfig::default().serve(transport).await.expect("MCP initialize");
    let server = client.peer_info().expect("server info after initialize");
    assert_eq!(server.server_info.as_ref().map(|info| info.name.as_str()), Some("mcp-test-backend"));
    assert!(server.capabilities.tools.is_some(), "tools capability");

    let tools = client.list_all_tools().await.expect("tools/list");
    assert_eq!(tool_names(&tools), ["list_skills", "find_helpful_skills"]);

    let found = client
        .call_tool(
            CallToolRequestParams::new("find_helpful_skills")
                .with_arguments(args(serde_json::json!({"task_description": "write a haiku", "top_k": 2}))),
        )
        .await
        .expect("find_helpful_skills");
    assert_ne!(found.is_error, Some(true));
    let text = text_of(&found);
    assert!(text.contains("write a haiku"), "{text}");
    assert_eq!(text.lines().count(), 3, "the header and top_k=2 lines: {text}");

    let listed = client.call_tool(CallToolRequestParams::new("list_skills")).await.expect("list_skills");
    assert_eq!(text_of(&listed).lines().count(), 4, "{}", text_of(&listed));

    // Variant a has no read_skill_document; an unknown tool is an MCP error.
    for name in ["no_such_tool", "read_skill_document"] {
        let err = client.call_tool(CallToolRequestParams::new(name)).await.expect_err("unknown tool");
        assert!(matches!(err, ServiceError::McpError(_)), "{name}: {err:?}");
    }

    // A missing required argument says what is missing.
    let err = client
        .call_tool(CallToolRequestParams::new("find_helpful_skills"))
        .await
        .expect_err("missing task_description");
    match err {
        ServiceError::McpError(data) => assert!(data.message.contains("task_description"), "{data:?}"),
        other => panic!("expected an MCP error, got {other:?}"),
    }

    client.cancel().await.expect("close the client");
    backend.child.kill().await.expect("kill the backend");
}

#[tokio::test]
async fn variant_b_serves_three_tools_while_still_loading() {
    let backend = Backend::start(&["--ready-after", "60000", "--tools-variant", "b"]).await;
    let transport = StreamableHttpClientTransport::from_uri(backend.mcp_url());
    let client = ClientConfig::default().serve(transport).await.expect("MCP initialize");

    let tools = client.list_all_tools().await.expect("tools/list");
    assert_eq!(tool_names(&tools), ["list_skills", "find_helpful_skills", "read_skill_document"]);
    let doc = client
        .call_tool(
            CallToolRequestParams::new("read_skill_document")
                .with_arguments(args(serde_json::json!({"skill_name": "skill-2"}))),
        )
        .await
        .expect("read_skill_document");
    assert_eq!(text_of(&doc), "document of skill-2");
    assert_eq!(backend.health().await["loading_complete"], false, "still loading");

    client.cancel().await.expect("close the client");
}

#[tokio::test]
async fn a_client_pinned_to_a_session_protocol_works_too() {
    // rmcp 3.11's client negotiates 2025-11-25 by default; an older client pinned to
    // 2025-06-18 gets the same service (both over an Mcp-Session-Id session).
    let backend = Backend::start(&[]).await;
    let transport = StreamableHttpClientTransport::from_uri(backend.mcp_url());
    let client = ClientConfig::default()
        .with_protocol_version(ProtocolVersion::V_2025_06_18)
        .serve(transport)
        .await
        .expect("MCP initialize");
    let server = client.peer_info().expect("server info after initialize");
    assert_eq!(server.protocol_version, ProtocolVersion::V_2025_06_18);
    let tools = client.list_all_tools().await.expect("tools/list");
    assert_eq!(tool_names(&tools), ["list_skills", "find_helpful_skills"]);
    let listed = client.call_tool(CallToolRequestParams::new("list_skills")).await.expect("list_skills");
    assert_eq!(text_of(&listed), "skill-1: Example skill 1\nskill-2: Example skill 2\nskill-3: Example skill 3");
    client.cancel().await.expect("close the client");
}

#[tokio::test]
async fn exit_after_calls_exits_3_after_answering() {
    let mut backend = Backend::start(&["--exit-after-calls", "1"]).await;
    let transport = StreamableHttpClientTransport::from_uri(backend.mcp_url());
    let client = ClientConfig::default().serve(transport).await.expect("MCP initialize");

    // Listing tools is not a call.
    client.list_all_tools().await.expect("tools/list");
    let found = client
        .call_tool(
            CallToolRequestParams::new("find_helpful_skills")
                .with_arguments(args(serde_json::json!({"task_description": "crash"}))),
        )
        .await
        .expect("the first call is answered");
    assert!(text_of(&found).contains("crash"));

    let status = tokio::time::timeout(DEADLINE, backend.child.wait())
        .await
        .expect("the backend exits after its call")
        .expect("wait");
    assert_eq!(status.code(), Some(3), "{status:?}");
    drop(client);
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_exits_0_promptly() {
    let mut backend = Backend::start(&[]).await;
    // With a live MCP session, which must not hold the process up.
    let transport = StreamableHttpClientTransport::from_uri(backend.mcp_url());
    let client = ClientConfig::default().serve(transport).await.expect("MCP initialize");

    let pid = backend.child.id().expect("running");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(5), backend.child.wait())
        .await
        .expect("exits within 5s of SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "{status:?}");
    drop(client);
}
