//! `tether mcp-proxy`: an MCP stdio server for an MCP host's config; it answers at once
//! and forwards to the backend once ready (see `tether::mcp`). stdout is the protocol:
//! everything else, the backend's output included, goes to stderr.

use std::io::IsTerminal;

use tether::EnsureOptions;

use crate::cli::McpProxyArgs;
use crate::output::report_error;
use crate::up::{Signals, load_config};

pub async fn run(args: McpProxyArgs) -> i32 {
    // Listen before anything starts: a stop signal at any moment is a clean stop.
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => return report_error(&e, false),
    };
    let mut config = match load_config(&args.backend) {
        Ok(c) => c,
        Err(e) => return report_error(&e, false),
    };
    if args.mcp_path.is_some() {
        config.mcp_path = args.mcp_path;
    }
    if args.tools.is_some() {
        config.tools = args.tools;
    }
    if args.call_wait.is_some() {
        config.call_wait = args.call_wait;
    }
    let (plan, options) = match tether::mcp::plan(config) {
        Ok(p) => p,
        Err(e) => return report_error(&e, false),
    };
    if std::io::stdin().is_terminal() {
        eprintln!(
            "note: mcp-proxy speaks MCP (JSON-RPC lines) on stdin/stdout: it is meant to be started by an \
             MCP host (see the README's host config); Ctrl-D or Ctrl-C stops it"
        );
    }
    let ensure = EnsureOptions::default().replacing(args.backend.replace);
    match tether::mcp::serve_stdio(plan, ensure, options, async move { signals.recv().await }).await {
        Ok(()) => 0,
        Err(e) => report_error(&e, false),
    }
}
