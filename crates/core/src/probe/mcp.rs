//! The MCP probe: ready once the backend's streamable HTTP MCP endpoint answers an
//! `initialize` request — what a stock MCP server (FastMCP, rmcp) offers instead of a
//! `/health` route.

use async_trait::async_trait;

use super::{HealthProbe, ProbeContext, ProbeOutcome};

/// `POST path` with an MCP `initialize` request; ready when the answer is `2xx` and
/// carries a JSON-RPC `result` (as JSON or as a server-sent event).
#[derive(Debug, Clone)]
pub struct McpProbe {
    /// The MCP endpoint, e.g. `/mcp`.
    pub path: String,
}

impl McpProbe {
    /// A probe of the MCP endpoint at `path`.
    pub fn new(path: impl Into<String>) -> Self {
        let mut path = path.into();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        McpProbe { path }
    }
}

/// Bodies larger than this are not read for the result (an initialize answer is small).
const MAX_BODY: usize = 256 * 1024;

#[async_trait]
impl HealthProbe for McpProbe {
    async fn probe(&self, ctx: ProbeContext<'_>) -> ProbeOutcome {
        let url = format!("{}{}", ctx.endpoint.url(), self.path);
        let request = serde_json::json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "tether-probe", "version": env!("CARGO_PKG_VERSION")}}
        });
        let sent = ctx
            .client
            .post(&url)
            .header(reqwest::header::ACCEPT, "application/json, text/event-stream")
            .json(&request)
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => return ProbeOutcome::no_answer(format!("POST {} (MCP initialize): {e}", self.path)),
        };
        let status = response.status();
        if !status.is_success() {
            let detail = format!("POST {} (MCP initialize) answered {status}", self.path);
            return ProbeOutcome::Pending { progress: None, detail, answered: true };
        }
        // Read only until the result shows: an SSE stream may stay open after it.
        let mut body = Vec::new();
        while body.len() < MAX_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if has_result(&body) {
                        return ProbeOutcome::Ready { progress: None };
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        let detail = format!("POST {} (MCP initialize) answered {status} without a result", self.path);
        ProbeOutcome::Pending { progress: None, detail, answered: true }
    }

    fn describe(&self) -> String {
        format!("MCP initialize at {}", self.path)
    }

    fn is_own_echo(&self, line: &str) -> bool {
        let request = format!("\"POST {}", self.path);
        line.match_indices(&request)
            .any(|(at, m)| matches!(line.as_bytes().get(at + m.len()), Some(b' ' | b'?' | b'"')))
    }
}

/// Whether `body` (JSON, or server-sent events whose `data:` lines are JSON) holds a
/// JSON-RPC message with a `result`.
fn has_result(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let is_result =
        |s: &str| serde_json::from_str::<serde_json::Value>(s.trim()).is_ok_and(|v| v.get("result").is_some());
    is_result(&text) || text.lines().filter_map(|l| l.strip_prefix("data:")).any(is_result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_is_found_in_json_or_in_an_event() {
        assert!(has_result(br#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18"}}"#));
        assert!(has_result(b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{}}\n\n"));
        assert!(!has_result(br#"{"jsonrpc":"2.0","id":0,"error":{"code":-32600,"message":"no"}}"#));
        assert!(!has_result(b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":0,\"res"));
    }
}
