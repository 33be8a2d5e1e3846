//! `tether mcp-proxy`: an MCP stdio server that answers at once and forwards to the
//! backend's streamable HTTP endpoint once the backend is ready.
//!
//! MCP hosts give a server 10–60 s to answer `initialize`; a first `uvx` start of a
//! heavy backend takes far longer. The proxy answers `initialize` from its own
//! configuration the instant the host asks, lists tools from a cache (the last list
//! the backend gave, kept per instance in the state directory) or a `--tools` file
//! until the backend is ready, then forwards `tools/list` and `tools/call` to it with
//! rmcp's streamable HTTP client, and tells the host with
//! `notifications/tools/list_changed` when the real list differs from what it served.
//!
//! ```no_run
//! # async fn demo(config: tether::Config) -> tether::Result<()> {
//! // In a binary that called `tether::install_guard()` first thing in `main`:
//! let (plan, options) = tether::mcp::plan(config)?;
//! let stop = async { let _ = tokio::signal::ctrl_c().await; };
//! tether::mcp::serve_stdio(plan, tether::EnsureOptions::default(), options, stop).await?;
//! # Ok(()) }
//! ```

mod backend;
mod front;
mod tools;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use rmcp::ServiceExt;
use tether_core::state::StateDir;
use tether_core::{Error, Result};

use crate::{Config, EnsureOptions, Plan, PortChoice};
use tools::ToolCache;

/// How the proxy behaves, beyond what runs (which is the [`Plan`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyOptions {
    /// The backend's streamable HTTP MCP endpoint path, e.g. `/mcp`.
    pub mcp_path: String,
    /// Tools to list before the backend is first ready (from `--tools FILE`); the
    /// cache of the last real list wins over these when there is one.
    pub tools_file: Option<PathBuf>,
    /// How long a `tools/call` waits for a loading backend before it answers with the
    /// loading progress as a tool error.
    pub call_wait: Duration,
    /// The key of the tools cache in the state directory (the instance name given, or
    /// one derived from what runs).
    pub cache_key: String,
}

/// The proxy's plan from a config, with the proxy's defaults where the config is silent:
/// port `auto` and a name of this process's own (an MCP host may run several copies
/// at once), restart `on-failure` (nobody else will restart it); and its options, whose
/// tools cache key is the name given or one derived from what runs.
pub fn plan(mut config: Config) -> Result<(Plan, ProxyOptions)> {
    if config.args.is_empty() && config.package.is_none() && config.image.is_none() {
        return Err(Error::config(
            "mcp-proxy needs a backend to run: `-- PROGRAM ARGS` (native), `--package PKG` (uvx) or \
             `--image IMG` (docker), in flags or tether.toml",
        ));
    }
    let key = match &config.name {
        Some(name) => name.clone(),
        None => format!("mcp-{:016x}", what_runs_hash(&config)),
    };
    if config.name.is_none() {
        config.name = Some(format!("mcp-{}", std::process::id()));
    }
    config.port.get_or_insert(PortChoice::Auto);
    config.restart.get_or_insert_with(|| "on-failure".into());
    let plan = config.plan()?;
    let mut options = ProxyOptions::from_plan(&plan)?;
    options.cache_key = key;
    Ok((plan, options))
}

impl ProxyOptions {
    /// The options from the plan's `mcp-path`, `tools` and `call-wait` (flags or
    /// `tether.toml`), with the defaults `/mcp` and `30s`; the cache key is the
    /// plan's name (see [`plan`] for the proxy's own defaults).
    pub fn from_plan(plan: &Plan) -> Result<Self> {
        let mcp_path = plan.config.mcp_path.clone().unwrap_or_else(|| "/mcp".into());
        if !mcp_path.starts_with('/') {
            return Err(Error::config(format!("bad --mcp-path `{mcp_path}`: the path must start with `/`, e.g. /mcp")));
        }
        let call_wait =
            crate::config::duration("call-wait", plan.config.call_wait.as_deref(), Duration::from_secs(30))?;
        Ok(ProxyOptions { mcp_path, tools_file: plan.config.tools.clone(), call_wait, cache_key: plan.name.clone() })
    }
}

/// FNV-1a over what runs (runner, program/package/entry/image, arguments): stable across
/// builds and platforms (unlike `DefaultHasher`), so the same backend finds its cache again.
fn what_runs_hash(c: &Config) -> u64 {
    let mut parts: Vec<&str> = vec![c.runner.map(|r| r.as_str()).unwrap_or("")];
    parts.extend(c.package.as_deref());
    parts.extend(c.entry.as_deref());
    parts.extend(c.image.as_deref());
    parts.extend(c.args.iter().map(String::as_str));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Serve MCP over this process's stdin/stdout until stdin ends (the host closed it) or
/// `stop` resolves (a signal), starting the backend in the background at once. Then
/// stop the backend (its whole group, with the grace period) and return.
///
/// Logs go through `tracing` (stderr in the CLI), never to stdout: stdout is the protocol.
pub async fn serve_stdio(
    plan: Plan,
    ensure: EnsureOptions,
    options: ProxyOptions,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let state = match &ensure.state_dir {
        Some(dir) => StateDir::at(dir.clone())?,
        None => StateDir::from_env()?,
    };
    let cache = ToolCache::new(&state, &options.cache_key, options.tools_file.as_deref())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shared = front::Shared::new(plan.name.clone(), cache, options.call_wait);
    let supervisor = tokio::spawn(backend::supervise(plan, ensure, options.mcp_path.clone(), shared.clone(), stop_rx));
    let server = front::Front::new(shared.clone());
    let served = async {
        // `serve` returns once the host has initialized; then wait for the end of stdin.
        match server.serve(rmcp::transport::stdio_pipes()).await {
            Ok(running) => match running.waiting().await {
                Ok(reason) => tracing::debug!(?reason, "the MCP host closed the connection"),
                Err(e) => tracing::warn!(error = %e, "the MCP connection ended with an error"),
            },
            Err(e) => tracing::warn!(error = %e, "the MCP host went away before initializing"),
        }
    };
    tokio::select! {
        _ = served => tracing::info!("stdin closed: stopping the backend"),
        _ = stop => tracing::info!("stop signal: stopping the backend"),
    }
    let _ = stop_tx.send(true);
    match supervisor.await {
        Ok(result) => result,
        Err(e) => Err(Error::runner("the backend supervisor failed", Some(Box::new(e)))),
    }
}
