//! `tether mcp-proxy`: an MCP stdio server that answers at once and forwards to the
//! backend's streamable HTTP endpoint once the backend is ready.
//!
//! MCP hosts give a server 10–60 s to answer `initialize`; a first `uvx` start of a
//! heavy backend takes far longer. The proxy answers `initialize` from its own
//! configuration the instant the host asks, lists tools from a cache (the last list
//! the backend gave, kept in the state directory under a key that survives a version
//! bump), else a `--tools` file, else the `--preset`'s list until the backend is ready
//! (with none of them the first `tools/list` waits for the backend, up to `--list-wait`),
//! then forwards `tools/list` and `tools/call` to it with rmcp's streamable HTTP client
//! (and logging, prompts, resources and completions, with the host's `_meta`, the lists
//! and capabilities of those cached like the tools),
//! and tells the host with `notifications/tools/list_changed` when the real list differs
//! from what it served. [`prefetch`] fills the cache ahead of the host's first start.
//!
//! ```no_run
//! # async fn demo(config: tether::Config) -> tether::Result<()> {
//! // In a binary that called `tether::install_guard()` first thing in `main`:
//! let (plan, options) = tether::mcp::plan(config)?;
//! let stop = async { let _ = tokio::signal::ctrl_c().await; };
//! tether::mcp::serve_stdio(plan, tether::EnsureOptions::default(), options, stop).await?;
//! # Ok(()) }
//! ```

mod ask;
mod backend;
mod forward;
mod front;
mod lines;
mod state;
mod tools;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rmcp::ServiceExt;
use tether_core::state::StateDir;
use tether_core::{Error, Result};

use crate::{Config, EnsureOptions, Plan, PortChoice, RunnerKind};
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
    /// How long a `tools/list` waits for the backend when there is nothing else to list
    /// (no cache, no tools file, no preset with tools), before it answers what it has.
    pub list_wait: Duration,
    /// The `--preset`, whose tools (if it has any) are listed when there is neither a cache
    /// nor a tools file.
    pub preset: Option<String>,
    /// The key of the tools cache in the state directory (the instance name given, or
    /// one derived from what runs, without its version).
    pub cache_key: String,
}

/// How long the first `tools/list` waits by default for a backend when the proxy has
/// nothing to list: below the shortest start limit of the hosts (Codex's 10 s), so the
/// answer still comes within it.
pub const DEFAULT_LIST_WAIT: Duration = Duration::from_secs(8);

/// The proxy's plan from a config, with the proxy's defaults where the config is silent:
/// port `auto` and a name of this process's own (an MCP host may run several copies
/// at once), restart `on-failure` (nobody else will restart it); and its options, whose
/// tools cache key is the name given or one derived from what runs, without its version
/// (see [`cache_key`]).
pub fn plan(mut config: Config) -> Result<(Plan, ProxyOptions)> {
    // A backend someone else runs: nothing to run, no port to pick; the URL's path is
    // its MCP endpoint unless --mcp-path says otherwise.
    let remote = config.is_remote();
    // `--preset claude-skills` alone runs that backend: what to run comes from it.
    config.apply_preset();
    if !remote && config.args.is_empty() && config.package.is_none() && config.image.is_none() {
        return Err(Error::config(
            "mcp-proxy needs a backend to run: `-- PROGRAM ARGS` (native), `--package PKG` (uvx) or \
             `--image IMG` (docker), in flags or --config FILE; or one someone else runs: \
             `--runner remote --url http://HOST:PORT/mcp`",
        ));
    }
    if remote && config.mcp_path.is_none() {
        config.mcp_path = config.url_path();
    }
    // Checked before it becomes the probe's path, so the error names the flag given.
    if let Some(path) = &config.mcp_path {
        check_mcp_path(path).map_err(|e| config.blame("mcp-path", e))?;
    }
    let named = config.name.is_some();
    if !named {
        config.name = Some(format!("mcp-{}", std::process::id()));
    }
    if !remote {
        config.port.get_or_insert(PortChoice::Auto);
    }
    // A stock MCP server (FastMCP, rmcp) has no `/health`: with nothing said, it is ready
    // once its MCP endpoint answers an `initialize`.
    let health_said = config.preset.is_some() || !config.expect.is_empty() || config.progress_field.is_some();
    if config.probe.is_none() && !health_said {
        let path = config.mcp_path.clone().unwrap_or_else(|| "/mcp".into());
        config.probe = Some(format!("mcp:{path}"));
    }
    config.restart.get_or_insert_with(|| "on-failure".into());
    let plan = config.plan()?;
    let mut options = ProxyOptions::from_plan(&plan)?;
    if !named {
        options.cache_key = cache_key(&plan);
    }
    Ok((plan, options))
}

/// The tools cache key of a proxy with no `--name`: `mcp-` and a hash of what runs, without
/// its version, so that a version bump lists the previous version's tools at once (and then
/// `list_changed` if the new list differs). What counts: the runner, the package's name (a
/// `PKG==VER` or a wheel's file name without its version) and entry point, the image without
/// its tag or digest, and the arguments (for the native runner the program first, as given).
pub fn cache_key(plan: &Plan) -> String {
    let c = &plan.config;
    let mut parts: Vec<String> = vec![plan.runner.as_str().to_string()];
    if plan.runner != RunnerKind::Native {
        parts.push(c.package.as_deref().map(package_name).unwrap_or_default());
        parts.push(c.entry.clone().unwrap_or_default());
        parts.push(c.image.as_deref().map(image_name).unwrap_or_default().to_string());
    }
    parts.extend(c.args.iter().cloned());
    // A remote backend is its URL (set only for the remote runner: the others' keys stay).
    parts.extend(c.url.iter().cloned());
    format!("mcp-{:016x}", crate::config::fnv1a(&parts))
}

/// The instance name that proxies share a backend under when no `--name` is given: the
/// tools cache key, and a digest of what exactly runs (the version, `--with`, constraints,
/// Python, index, the image's tag: what the version-less cache key leaves out) and of what
/// the backend would inherit from this proxy (its working directory and environment, see
/// [`crate::config::surroundings`]): two windows of one project share; two projects
/// (another directory, other API keys), or a window with another version or `--with`,
/// get a backend each instead of one refusing the other's.
pub fn shared_name(plan: &Plan, cache_key: &str) -> String {
    let c = &plan.config;
    let mut parts = crate::config::surroundings(plan);
    parts.extend(
        [c.package.clone(), c.entry.clone(), c.python.clone(), c.index_url.clone(), c.image.clone()]
            .map(|p| p.unwrap_or_default()),
    );
    parts.push(c.offline.to_string());
    parts.extend(c.with.iter().cloned());
    parts.extend(c.constraint.iter().map(|f| f.to_string_lossy().into_owned()));
    format!("{cache_key}-{:08x}", crate::config::fnv1a(&parts) as u32)
}

/// A uvx package spec's distribution name, normalized (PEP 503: lower case, runs of `-_.`
/// as one `-`), without version, extras or markers: `Claude_Skills==1.0.6` and
/// `/wheels/claude_skills-1.0.7-py3-none-any.whl` are both `claude-skills`.
fn package_name(spec: &str) -> String {
    let spec = spec.trim();
    let file = Path::new(spec).file_name().and_then(|f| f.to_str()).unwrap_or(spec);
    let name = if let Some(stem) = file.strip_suffix(".whl") {
        // `{name}-{version}(-{build})?-{python}-{abi}-{platform}`: the name has no `-`.
        stem.split('-').next().unwrap_or(stem)
    } else if let Some(stem) = file.strip_suffix(".tar.gz").or_else(|| file.strip_suffix(".zip")) {
        stem.rsplit_once('-').map_or(stem, |(name, _version)| name)
    } else {
        let end = spec.find(|c: char| "=<>!~;@[( ".contains(c)).unwrap_or(spec.len());
        &spec[..end]
    };
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// An image reference without its tag or digest: `ghcr.io:443/org/app:1.2@sha256:…` is
/// `ghcr.io:443/org/app`.
fn image_name(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// `--mcp-path` (or `mcp-path` in the config file) must be an absolute URL path.
fn check_mcp_path(path: &str) -> Result<()> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(Error::config(format!("bad --mcp-path `{path}`: the path must start with `/`, e.g. --mcp-path /mcp")))
    }
}

impl ProxyOptions {
    /// The options from the plan's `mcp-path`, `tools`, `call-wait`, `list-wait` and
    /// `preset` (flags or `--config FILE`), with the defaults `/mcp`, `30s` and
    /// [`DEFAULT_LIST_WAIT`]; the cache key is the plan's name (see [`plan`] for the
    /// proxy's own defaults).
    pub fn from_plan(plan: &Plan) -> Result<Self> {
        let mcp_path = plan.config.mcp_path.clone().unwrap_or_else(|| "/mcp".into());
        check_mcp_path(&mcp_path).map_err(|e| plan.config.blame("mcp-path", e))?;
        let call_wait = plan.config.duration("call-wait", plan.config.call_wait.as_deref(), Duration::from_secs(30))?;
        let list_wait = plan.config.duration("list-wait", plan.config.list_wait.as_deref(), DEFAULT_LIST_WAIT)?;
        Ok(ProxyOptions {
            mcp_path,
            tools_file: plan.config.tools.clone(),
            call_wait,
            list_wait,
            preset: plan.config.preset.clone(),
            cache_key: plan.name.clone(),
        })
    }
}

/// The largest message `mcp-proxy` takes in one piece, either way: a host's line, the
/// backend's answer (one SSE event or JSON body). Far above what a backend sends directly
/// (rmcp's own limit is 16 MiB, which a stock FastMCP text tool reaches at 8 MiB of text,
/// sent twice), and still a bound on the memory one message may take.
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;

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
    let cache = ToolCache::new(&state, &options.cache_key, options.tools_file.as_deref(), options.preset.as_deref())?;
    forget_dead_proxy_locks(&state);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shared = front::Shared::new(plan.name.clone(), cache, options.call_wait, options.list_wait);
    let supervisor = tokio::spawn(backend::supervise(plan, ensure, options.mcp_path.clone(), shared.clone(), stop_rx));
    let server = front::Front::new(shared.clone());
    // Every line passes the filter first: rmcp's stdio transport has no answer for a line
    // that is not JSON, nor for a request before `initialize`.
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    let (transport, writer) = lines::filter(stdin, stdout);
    // The filter answers a longer line itself: rmcp never drops one in silence.
    let transport = rmcp::transport::async_rw::AsyncRwTransport::new_server(transport.0, transport.1)
        .with_max_line_length(MAX_MESSAGE);
    let served = async {
        // `serve` returns once the host has initialized; then wait for the end of stdin.
        match server.serve(transport).await {
            Ok(running) => match running.waiting().await {
                Ok(reason) => tracing::debug!(?reason, "the MCP host closed the connection"),
                Err(e) => tracing::warn!(error = %e, "the MCP connection ended with an error"),
            },
            Err(e) => {
                // rmcp's error text carries its own type dumps: for the debug log only.
                tracing::debug!(error = %e, "the MCP session ended before it was initialized");
                tracing::warn!(
                    "the MCP session ended before it was initialized (the host closed stdin, or its first messages were not an `initialize` followed by `notifications/initialized`)"
                );
            }
        }
    };
    tokio::select! {
        _ = served => {
            tracing::info!("stdin closed: stopping the backend");
            // rmcp's last answers (to requests sent just before the EOF) reach the host.
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        }
        _ = stop => tracing::info!("stop signal: stopping the backend"),
    }
    let _ = stop_tx.send(true);
    let result = match supervisor.await {
        Ok(result) => result,
        Err(e) => Err(Error::runner("the backend supervisor failed", Some(Box::new(e)))),
    };
    // Our own `mcp-PID.lock` (released with the backend), and any a killed proxy left.
    forget_dead_proxy_locks(&state);
    result
}

/// The pid in a proxy's own instance name, `mcp-PID` (the name given when none is: see
/// [`plan`]); `None` for any other name (a cache key is `mcp-` and 16 hex digits).
fn proxy_pid(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("mcp-")?;
    if !(1..=10).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Remove the lock files of the proxies' per-process instances, `mcp-PID.lock`, whose proxy
/// is gone (this one's own when it is done with it): each proxy without `--name` or
/// `--share` has a name of its own, so without this every session (and every SIGKILLed
/// proxy) left one behind for good. Only a lock that no process holds (the kernel releases
/// a killed holder's) and whose pid runs no process (or is this one) is removed, while
/// holding it. Nothing else: the lock files of other names are shared and stay.
fn forget_dead_proxy_locks(state: &StateDir) {
    let Ok(entries) = std::fs::read_dir(state.path()) else { return };
    let me = std::process::id();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".lock")) else { continue };
        let Some(pid) = proxy_pid(name) else { continue };
        if pid != me && tether_core::procs::ProcessIdentity::of(pid).is_some() {
            continue;
        }
        // Held: its proxy (or a start of that name) is still using it.
        let Ok(lock) = state.try_lock(name) else { continue };
        match std::fs::remove_file(entry.path()) {
            Ok(()) => tracing::debug!(file = %entry.path().display(), "removed a finished proxy's lock file"),
            Err(e) => tracing::debug!(file = %entry.path().display(), error = %e, "cannot remove a proxy's lock file"),
        }
        drop(lock);
    }
}

/// `tether mcp-proxy --prefetch`: start the backend once (as the proxy would, with `ensure`:
/// its `cancel` stops the wait), wait until it is ready, store its tools and instructions
/// in the cache the proxy of the same configuration reads, then stop it (a detached
/// instance it reused is left running). Returns the tools' names. Nothing is read from or
/// written to stdin/stdout: this is the setup step run before a host starts the proxy.
pub async fn prefetch(plan: Plan, ensure: EnsureOptions, options: ProxyOptions) -> Result<Vec<String>> {
    let state = match &ensure.state_dir {
        Some(dir) => StateDir::at(dir.clone())?,
        None => StateDir::from_env()?,
    };
    // A bad key is an error before anything starts; the tools file and preset play no part.
    let cache = ToolCache::new(&state, &options.cache_key, None, None)?;
    let cancel = ensure.cancel.clone();
    let timeout = plan.timeout;
    let handle = crate::ensure_running(plan, ensure).await?;
    let url = format!("{}{}", handle.url(), options.mcp_path);
    let fetched = backend::fetch_tools(&url, timeout, cancel).await;
    let stopped = if handle.reused() {
        handle.release();
        Ok(())
    } else {
        handle.stop().await.map(|_| ())
    };
    forget_dead_proxy_locks(&state);
    let (tools, instructions, catalog) = fetched?;
    stopped?;
    cache.store(&tools);
    cache.store_instructions(instructions);
    cache.update_catalog(|c| *c = catalog);
    tracing::info!(file = %cache.path().display(), tools = tools.len(), "cached the backend's tools");
    Ok(tools.into_iter().map(|t| t.name.into_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rmcp reads a known method whose params it cannot take as a method of its own (a
    /// `CustomRequest`): that is where the proxy answers Invalid params (issue 22, item 6).
    #[test]
    fn a_known_method_with_bad_params_is_told_apart_from_an_unknown_one() {
        let bad = serde_json::json!({"method": "tools/call", "params": {"arguments": {}}});
        let request: rmcp::model::ClientRequest = serde_json::from_value(bad).expect("rmcp reads it");
        assert!(matches!(request, rmcp::model::ClientRequest::CustomRequest(_)), "{request:?}");
        let why = front::invalid_params("tools/call", serde_json::json!({"arguments": {}})).expect("a known method");
        assert!(why.contains("name"), "{why}");
        assert_eq!(front::invalid_params("no/such/method", serde_json::json!({})), None);
    }

    fn key(set: impl FnOnce(&mut Config)) -> String {
        let mut c = Config::default();
        set(&mut c);
        let (_, options) = plan(c).expect("a plan");
        options.cache_key
    }

    #[test]
    fn the_cache_key_survives_a_version_bump_and_nothing_else() {
        let uvx = |pkg: &'static str, args: &'static [&'static str]| {
            key(move |c| {
                c.package = Some(pkg.into());
                c.args = args.iter().map(|a| a.to_string()).collect();
            })
        };
        let base = uvx("claude-skills-mcp-backend==1.0.6", &["--port", "{port}"]);
        assert!(base.starts_with("mcp-") && base.len() == 20, "{base}");
        assert_eq!(base, uvx("claude-skills-mcp-backend==1.0.7", &["--port", "{port}"]), "a version bump");
        assert_eq!(base, uvx("Claude_Skills.MCP-backend", &["--port", "{port}"]), "unpinned, other spelling");
        assert_eq!(base, uvx("/w/claude_skills_mcp_backend-1.0.8-py3-none-any.whl", &["--port", "{port}"]), "a wheel");
        assert_eq!(base, uvx("claude-skills-mcp-backend>=1,<2", &["--port", "{port}"]), "a range");
        assert_ne!(base, uvx("other-backend==1.0.6", &["--port", "{port}"]), "another package");
        assert_ne!(base, uvx("claude-skills-mcp-backend==1.0.6", &["--port", "{port}", "-v"]), "other arguments");

        let docker = |image: &'static str| key(move |c| c.image = Some(image.into()));
        assert_eq!(docker("ghcr.io/org/app:1.2"), docker("ghcr.io/org/app:1.3"));
        assert_eq!(docker("localhost:5000/app:1"), docker("localhost:5000/app@sha256:abc"));
        assert_ne!(docker("localhost:5000/app:1"), docker("localhost:5001/app:1"));

        let native =
            |args: &'static [&'static str]| key(move |c| c.args = args.iter().map(|a| a.to_string()).collect());
        assert_eq!(native(&["srv", "--port", "{port}"]), native(&["srv", "--port", "{port}"]));
        assert_ne!(native(&["srv", "--port", "{port}"]), native(&["srv2", "--port", "{port}"]));
        // The runner is the one that runs, whether named or inferred.
        assert_eq!(
            uvx("pkg==1", &[]),
            key(|c| {
                c.runner = Some(RunnerKind::Uvx);
                c.package = Some("pkg==2".into());
            })
        );
        // A name pins the key (and the instance).
        assert_eq!(
            key(|c| {
                c.name = Some("skills".into());
                c.package = Some("pkg==1".into());
            }),
            "skills"
        );
    }

    #[test]
    fn a_window_with_another_version_or_with_shares_no_backend_but_the_tools_cache() {
        let shared = |set: fn(&mut Config)| {
            let mut c = Config { package: Some("claude-skills-mcp-backend==1.0.6".into()), ..Config::default() };
            set(&mut c);
            let (plan, options) = plan(c).expect("a plan");
            (options.cache_key.clone(), shared_name(&plan, &options.cache_key))
        };
        let base = shared(|_| {});
        assert_eq!(base, shared(|_| {}), "the same configuration shares");
        for (what, other) in [
            ("a version bump", shared(|c| c.package = Some("claude-skills-mcp-backend==1.0.7".into()))),
            ("another --with", shared(|c| c.with = vec!["mcp==1.26.0".into()])),
            ("another Python", shared(|c| c.python = Some("3.11".into()))),
        ] {
            assert_eq!(other.0, base.0, "{what}: the tools cache is the same");
            assert_ne!(other.1, base.1, "{what}: the instance is another");
        }
    }

    #[test]
    fn only_a_proxys_own_instance_names_carry_a_pid() {
        assert_eq!(proxy_pid(&format!("mcp-{}", std::process::id())), Some(std::process::id()));
        assert_eq!(proxy_pid("mcp-1"), Some(1));
        for other in ["mcp-", "mcp-12a", "mcp-0123456789012345", "skills", "mcp-1-2", "xmcp-12"] {
            assert_eq!(proxy_pid(other), None, "{other}");
        }
    }

    #[test]
    fn list_wait_defaults_below_the_shortest_host_start_limit() {
        let (_, options) = plan(Config { args: vec!["srv".into()], ..Config::default() }).expect("a plan");
        assert_eq!(options.list_wait, DEFAULT_LIST_WAIT);
        assert!(DEFAULT_LIST_WAIT < Duration::from_secs(10), "Codex gives a server 10 s to start");
        let c = Config { args: vec!["srv".into()], list_wait: Some("500ms".into()), ..Config::default() };
        assert_eq!(plan(c).expect("a plan").1.list_wait, Duration::from_millis(500));
        let c = Config { args: vec!["srv".into()], list_wait: Some("soon".into()), ..Config::default() };
        assert!(plan(c).expect_err("a bad duration").to_string().contains("--list-wait"));
    }
}
