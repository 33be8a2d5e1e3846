//! The proxy's backend side: start the backend, connect rmcp's streamable HTTP client
//! once it is ready, watch it, restart it per the policy, stop it at the end; publish
//! each step as a [`BackendState`] the front reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::ProgressNotificationParam;
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, Peer, RoleClient, ServiceExt};
use tether_core::supervise::{Ended, RestartTracker};
use tether_core::{Error, Lifecycle, Result, State};
use tokio::sync::watch;

use super::front::Shared;
use crate::{EnsureOptions, Plan, PortChoice};

/// Where the backend is, as the front sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BackendState {
    /// Being started (or installed, or loading).
    Starting {
        /// What is being done: `starting`, `installing via uv`, `loading`…
        phase: String,
        /// The progress count the health answer reports (e.g. skills loaded).
        progress: Option<u64>,
        /// When this start began.
        since: Instant,
        /// Restarts so far.
        restarts: u32,
    },
    /// Ready: calls are forwarded to it.
    Ready {
        /// The connected MCP client.
        peer: Peer<RoleClient>,
        /// The MCP endpoint.
        url: String,
    },
    /// It ended or failed to start, and will be restarted.
    Down {
        /// Why it is down.
        reason: String,
        /// Its last lines of output.
        stderr_tail: Vec<String>,
        /// When the restart begins.
        restart_at: Instant,
    },
    /// It failed and will not be restarted.
    Failed {
        /// Why.
        reason: String,
        /// Its exit code, when it exited.
        exit_code: Option<i32>,
        /// Its last lines of output.
        stderr_tail: Vec<String>,
    },
    /// The proxy is stopping.
    Stopped,
}

impl BackendState {
    /// Whether a call should wait for a change rather than answer now.
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendState::Starting { .. } | BackendState::Down { .. })
    }
}

/// The MCP client the proxy runs against the backend: relays the backend's
/// `tools/list_changed` to the host.
struct BackendClient {
    shared: Shared,
}

impl ClientHandler for BackendClient {
    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        self.shared.progress(params).await;
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        tracing::info!("the backend's tools changed");
        self.shared.tools_changed().await;
    }
}

/// Why a run ended: the proxy is stopping, or the backend is gone.
enum Outcome {
    Stop,
    Gone { ended: Ended, ran: Duration, exit_code: Option<i32>, stderr_tail: Vec<String> },
}

/// Run the backend until `stop`: start, connect, watch, restart per the policy.
pub(crate) async fn supervise(
    plan: Plan,
    ensure: EnsureOptions,
    mcp_path: String,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    // Hosts send `initialize` as soon as they spawn us: answer it first, start right after.
    shared.initialize_answered(Duration::from_millis(20)).await;
    let mut tracker = RestartTracker::new(plan.restart.clone());
    let mut current = plan.clone();
    loop {
        let outcome = match run_once(&mut current, &ensure, &mcp_path, &shared, &mut stop, tracker.total()).await {
            Ok(outcome) => outcome,
            Err(Error::Interrupted) => Outcome::Stop,
            Err(e) => {
                tracing::error!(instance = %plan.name, error = %e.chain(), "the backend did not start");
                let stderr_tail = e.stderr_tail().to_vec();
                let exit_code = e.backend_exit_code();
                Outcome::Gone { ended: Ended::Unhealthy(e.chain()), ran: Duration::ZERO, exit_code, stderr_tail }
            }
        };
        let Outcome::Gone { ended, ran, exit_code, stderr_tail } = outcome else {
            shared.set(BackendState::Stopped);
            return Ok(());
        };
        let reason = match &ended {
            Ended::Unhealthy(why) if ran.is_zero() => format!("failed to start: {why}"),
            other => other.to_string(),
        };
        let Some(wait) = tracker.next(&ended, ran) else {
            tracing::error!(instance = %plan.name, %reason, restarts = tracker.total(), "not restarting the backend");
            shared.set(BackendState::Failed { reason, exit_code, stderr_tail });
            // Keep answering the host (with this error) until it goes away.
            let _ = stop.wait_for(|s| *s).await;
            shared.set(BackendState::Stopped);
            return Ok(());
        };
        tracing::warn!(instance = %plan.name, %reason, restart = tracker.total(), in_ms = wait.as_millis() as u64,
            "restarting the backend");
        shared.set(BackendState::Down { reason, stderr_tail, restart_at: Instant::now() + wait });
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {
                shared.set(BackendState::Stopped);
                return Ok(());
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One start of the backend, to its end.
async fn run_once(
    plan: &mut Plan,
    ensure: &EnsureOptions,
    mcp_path: &str,
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
    restarts: u32,
) -> Result<Outcome> {
    let since = Instant::now();
    shared.set(BackendState::Starting { phase: "starting".into(), progress: None, since, restarts });
    let lifecycle = Arc::new(Lifecycle::new());
    let observer = tokio::spawn(observe(lifecycle.subscribe(), shared.clone(), since, restarts));
    let mut opts = ensure.clone().with_lifecycle(lifecycle);
    opts.cancel = Some(stop.clone());
    opts.restarts = restarts;
    let started = crate::ensure_running(plan.clone(), opts).await;
    observer.abort();
    let handle = started?;
    // Restarts keep the port the first start chose (`auto` included): the host never sees it,
    // but a backend that caches by port (or a user watching `status`) does.
    plan.port = PortChoice::Fixed(handle.record().port);
    let url = format!("{}{mcp_path}", handle.url());
    shared.set(BackendState::Starting {
        phase: "connecting to its MCP endpoint".into(),
        progress: handle.progress(),
        since,
        restarts,
    });
    let patience = plan.timeout.min(CONNECT_PATIENCE);
    let client = tokio::select! {
        c = connect_patiently(&url, shared, patience) => c,
        _ = stop.wait_for(|s| *s) => Err("stopping".into()),
    };
    let client = match client {
        Ok(c) => c,
        Err(why) => {
            let _ = handle.stop().await;
            if *stop.borrow() {
                return Ok(Outcome::Stop);
            }
            return Err(Error::Runner {
                message: format!(
                    "the backend is ready but its MCP endpoint {url} did not answer in {}: {why} \
                     (is --mcp-path right?)",
                    tether_core::error::humanize(patience)
                ),
                stderr_tail: Vec::new(),
            });
        }
    };
    tracing::info!(instance = %plan.name, %url, "ready: forwarding MCP calls to the backend");
    shared.set(BackendState::Ready { peer: client.peer().clone(), url });
    shared.backend_ready(client.peer()).await;
    let up_since = Instant::now();
    let ended = tokio::select! {
        _ = stop.wait_for(|s| *s) => None,
        ended = handle.watch(plan.liveness.as_ref()) => Some(ended),
    };
    let _ = client.cancel().await;
    let Some(ended) = ended else {
        shared.set(BackendState::Stopped);
        if handle.reused() {
            // Not ours: it ran detached before this proxy (same `--name`), and stays.
            tracing::info!(instance = %plan.name, "left the backend running: it was running (detached) before");
            handle.release();
            return Ok(Outcome::Stop);
        }
        match handle.stop().await {
            Ok(how) => tracing::info!(instance = %plan.name, killed = how.was_killed(), "stopped the backend"),
            Err(e) => tracing::warn!(instance = %plan.name, error = %e.chain(), "stopping the backend failed"),
        }
        return Ok(Outcome::Stop);
    };
    let ended = ended.unwrap_or_else(|e| Ended::Unhealthy(e.chain()));
    let stderr_tail = handle.instance().map(|i| i.logs().tail(10)).unwrap_or_default();
    shared.set(BackendState::Down {
        reason: ended.to_string(),
        stderr_tail: stderr_tail.clone(),
        restart_at: Instant::now(),
    });
    let _ = handle.stop().await;
    let exit_code = match &ended {
        Ended::Exited(status) => status.code(),
        Ended::Unhealthy(_) => None,
    };
    Ok(Outcome::Gone { ended, ran: up_since.elapsed(), exit_code, stderr_tail })
}

/// How long a ready backend's MCP endpoint may take to answer (some mount it after their
/// health route) before the start counts as failed: a restart of a heavy backend costs more
/// than this wait.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// Connect, retrying with a backoff (50 ms doubling to 1 s) until `patience` has passed.
async fn connect_patiently(
    url: &str,
    shared: &Shared,
    patience: Duration,
) -> std::result::Result<RunningService<RoleClient, BackendClient>, String> {
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match connect(url, shared.clone(), left.max(Duration::from_millis(100))).await {
            Ok(client) => return Ok(client),
            Err(why) if Instant::now() + pause >= deadline => return Err(why),
            Err(why) => {
                tracing::debug!(%url, %why, "the MCP endpoint does not answer yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Connect rmcp's streamable HTTP client (no proxy: the backend is ours, on loopback
/// or a published port).
async fn connect(
    url: &str,
    shared: Shared,
    timeout: Duration,
) -> std::result::Result<RunningService<RoleClient, BackendClient>, String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        // As rmcp's own default client: no idle pool, which avoids delayed-ACK stalls
        // when a response body was not read to the end.
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let transport =
        StreamableHttpClientTransport::with_client(http, StreamableHttpClientTransportConfig::with_uri(url));
    match tokio::time::timeout(timeout, BackendClient { shared }.serve(transport)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(plain(&e.to_string())),
        Err(_) => Err(format!("no answer to initialize in {}", tether_core::error::humanize(timeout))),
    }
}

/// rmcp's errors name the transport's Rust types; keep what a person can act on.
fn plain(message: &str) -> String {
    let message = message.rsplit_once("] error: ").map_or(message, |(_, why)| why);
    let message = message.split(", when send").next().unwrap_or(message);
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Publish the lifecycle's phases and progress while starting.
async fn observe(mut rx: watch::Receiver<State>, shared: Shared, since: Instant, restarts: u32) {
    loop {
        let phase = match &*rx.borrow_and_update() {
            State::WaitingReady { progress } => Some((progress.phase.clone(), progress.value)),
            State::Preparing => Some(("preparing".to_string(), None)),
            State::Starting => Some(("starting".to_string(), None)),
            _ => None,
        };
        if let Some((phase, progress)) = phase {
            shared.set(BackendState::Starting { phase, progress, since, restarts });
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transport_type_names_are_dropped_from_errors() {
        let raw = "Send message error Transport [rmcp::transport::worker::WorkerTransport<rmcp::X<reqwest::Client>>] \
                   error: unexpected server response: HTTP 404 Not Found: not found\n, when send initialize request";
        assert_eq!(super::plain(raw), "unexpected server response: HTTP 404 Not Found: not found");
        assert_eq!(super::plain("connection refused"), "connection refused");
    }
}
