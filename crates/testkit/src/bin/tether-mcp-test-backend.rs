//! `tether-mcp-test-backend`: a streamable-HTTP MCP server with canned tools, for tests.
//! See [`tether_testkit::mcp_backend`] for the flags and the endpoints.

fn main() -> std::process::ExitCode {
    tether_testkit::mcp_backend::main()
}
