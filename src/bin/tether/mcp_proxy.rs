//! `tether mcp-proxy`: an MCP stdio server for an MCP host's config; it answers at once
//! and forwards to the backend once ready (see `tether::mcp`). stdout is the protocol:
//! everything else, the backend's output included, goes to stderr. With `--prefetch` it
//! speaks no MCP: it fills the tools cache and prints the tool names.

use std::io::IsTerminal;
use std::sync::Arc;

use tether::{Config, EnsureOptions, Error, Lifecycle, State};

use crate::cli::McpProxyArgs;
use crate::output::report_error;
use crate::up::Signals;

/// `--config FILE` when given, with the flags on top (the backend's and the MCP front's);
/// never `./tether.toml` unasked: hosts start the proxy in the project's directory, whose own
/// `tether.toml` (for its `up`) must not change the proxy's name, port or probe.
fn load_config(args: &McpProxyArgs) -> tether::Result<Config> {
    let mut config = match &args.backend.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let mut flags = args.backend.keys.clone();
    args.mcp.clone().lay_onto(&mut flags);
    config.overlay(flags);
    Ok(config)
}

/// How long a shared backend outlives its last proxy when `--share` does not say: a window
/// closed and reopened within it finds the backend still loaded.
const DEFAULT_LINGER: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a proxy shares its backend unless `--no-share` says otherwise.
fn shares_by_default(runner: tether::RunnerKind) -> bool {
    matches!(runner, tether::RunnerKind::Native | tether::RunnerKind::Uvx | tether::RunnerKind::Docker)
}

pub async fn run(args: McpProxyArgs) -> i32 {
    // Listen before anything starts: a stop signal at any moment is a clean stop.
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => return report_error(&e, false),
    };
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => return report_error(&e, false),
    };
    let (mut plan, options) = match tether::mcp::plan(config) {
        Ok(p) => p,
        Err(e) => return report_error(&e, false),
    };
    let mut ensure = EnsureOptions::default().replacing(args.backend.replace);
    let linger = match args.share.as_deref().map(tether::parse_duration) {
        Some(Ok(linger)) => Some(linger),
        Some(Err(why)) => return report_error(&Error::config(format!("bad --share: {why}")), false),
        // Shared by default where a lease can end it: a process backend's guard, or a
        // shared container's guard, watches the leases. A remote backend is not ours to
        // start or stop.
        None if !args.no_share && !args.prefetch && shares_by_default(plan.runner) => Some(DEFAULT_LINGER),
        None => None,
    };
    if let Some(linger) = linger {
        // Every proxy of this configuration (and surroundings) names the same instance:
        // they share it. A pinned --name is the user's choice of what to share.
        // (A named proxy's cache key is its name.)
        if options.cache_key != plan.name {
            plan.name = tether::mcp::shared_name(&plan, &options.cache_key);
        }
        ensure = ensure.sharing(linger);
    }
    if args.prefetch {
        return prefetch(plan, ensure, options, signals).await;
    }
    if std::io::stdin().is_terminal() {
        say!(
            "note: mcp-proxy speaks MCP (JSON-RPC lines) on stdin/stdout: it is meant to be started by an \
             MCP host (see docs/mcp-proxy.md for the host config); Ctrl-D or Ctrl-C stops it. To fill its \
             tools cache ahead of the host, run it once with --prefetch"
        );
    }
    match tether::mcp::serve_stdio(plan, ensure, options, async move { signals.recv().await }).await {
        Ok(()) => 0,
        Err(e) => report_error(&e, false),
    }
}

/// `--prefetch`: one start until ready, the tools cached, the backend stopped; the tool
/// names on stdout, one a line. Progress and the backend's output go to stderr.
async fn prefetch(
    plan: tether::Plan,
    ensure: EnsureOptions,
    options: tether::mcp::ProxyOptions,
    mut signals: Signals,
) -> i32 {
    let lifecycle = Arc::new(Lifecycle::new());
    let mut phases = lifecycle.subscribe();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut ensure = ensure.with_lifecycle(Arc::clone(&lifecycle));
    ensure.cancel = Some(stop_rx);
    let name = plan.name.clone();
    let fetching = tether::mcp::prefetch(plan, ensure, options);
    tokio::pin!(fetching);
    let mut last = String::new();
    let result = loop {
        tokio::select! {
            r = &mut fetching => break r,
            _ = signals.recv() => { let _ = stop_tx.send(true); }
            Ok(()) = phases.changed() => {
                let text = phase(&phases.borrow_and_update());
                if !text.is_empty() && text != last {
                    tracing::info!("{text}");
                    last = text;
                }
            }
        }
    };
    match result {
        Ok(names) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for tool in &names {
                let _ = writeln!(out, "{tool}");
            }
            let _ = out.flush();
            tracing::info!(instance = %name, tools = names.len(), "prefetched: the proxy of these arguments lists them at once");
            0
        }
        Err(Error::Interrupted) => {
            say!("error: stopped '{name}' while it was starting: no tools were cached");
            1
        }
        Err(e) => report_error(&e, false),
    }
}

/// A start's phase as a line, empty when there is nothing to say.
fn phase(state: &State) -> String {
    if matches!(state, State::Idle) || state.is_ready() || state.is_terminal() {
        return String::new();
    }
    match state {
        State::WaitingReady { progress } | State::Preparing { progress } => match progress.value {
            Some(n) => format!("{}, {n} loaded", progress.phase),
            None => progress.phase.clone(),
        },
        other => other.name().replace('_', " "),
    }
}
