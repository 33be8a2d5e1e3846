//! The proxy's backend side: start the backend, connect rmcp's streamable HTTP client
//! once it is ready, watch it, restart it per the policy, stop it at the end; publish
//! each step as a [`BackendState`] the front reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{ClientResult, ProgressNotificationParam, ServerNotification, ServerRequest, Tool};
use rmcp::service::{NotificationContext, RequestContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ErrorData, Peer, RoleClient, ServiceExt};
use tether_core::restart::{Ended, Liveness};
use tether_core::{
    Attempt, Error, ReadyInfo, Result, Starter, State, StopOutcome, Supervised, Supervisor, SupervisorState,
};
use tokio::sync::watch;

use super::ask::unexpected_answer;
use super::front::Shared;
use super::state::BackendState;
use super::tools::Catalog;
use super::tools::fetch_catalog;
use crate::{EnsureOptions, EnsureStarter, Plan};

/// The MCP client the proxy runs against the backend: relays the backend's
/// `tools/list_changed`, progress and log messages to the host.
#[derive(Clone)]
struct BackendClient {
    shared: Shared,
}

impl ClientHandler for BackendClient {
    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        self.shared.progress(params).await;
    }

    // MCP logging (SEP-2577 deprecates it), still what hosts show.
    #[allow(deprecated)]
    async fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.shared.log_message(params).await;
    }

    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let note = rmcp::model::ResourceUpdatedNotification::new(params);
        self.shared.notify_host(ServerNotification::ResourceUpdatedNotification(note)).await;
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let note = ServerNotification::ResourceListChangedNotification(Default::default());
        self.shared.notify_host(note).await;
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let note = ServerNotification::PromptListChangedNotification(Default::default());
        self.shared.notify_host(note).await;
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        tracing::info!("the backend's tools changed");
        self.shared.tools_changed().await;
    }

    async fn on_custom_notification(
        &self,
        notification: rmcp::model::CustomNotification,
        _context: NotificationContext<RoleClient>,
    ) {
        // `notifications/elicitation/complete` (URL mode) and whatever else is new to rmcp.
        self.shared.pass_to_host(ServerNotification::CustomNotification(notification)).await;
    }

    // Sampling (SEP-2577 deprecates it), still what hosts offer.
    #[allow(deprecated)]
    async fn create_message(
        &self,
        params: rmcp::model::CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> std::result::Result<rmcp::model::CreateMessageResult, ErrorData> {
        let request = ServerRequest::CreateMessageRequest(rmcp::model::CreateMessageRequest::new(params));
        match self.shared.ask_host("sampling/createMessage", request, &context).await? {
            ClientResult::CreateMessageResult(result) => Ok(*result),
            other => Err(unexpected_answer("sampling/createMessage", &other)),
        }
    }

    // Roots (SEP-2577 deprecates them), still what hosts offer.
    #[allow(deprecated)]
    async fn list_roots(
        &self,
        context: RequestContext<RoleClient>,
    ) -> std::result::Result<rmcp::model::ListRootsResult, ErrorData> {
        let request = ServerRequest::ListRootsRequest(rmcp::model::ListRootsRequest::default());
        match self.shared.ask_host("roots/list", request, &context).await? {
            ClientResult::ListRootsResult(result) => Ok(result),
            other => Err(unexpected_answer("roots/list", &other)),
        }
    }

    async fn create_elicitation(
        &self,
        params: rmcp::model::ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> std::result::Result<rmcp::model::ElicitResult, ErrorData> {
        let request = ServerRequest::ElicitRequest(rmcp::model::ElicitRequest::new(params));
        match self.shared.ask_host("elicitation/create", request, &context).await? {
            ClientResult::ElicitResult(result) => Ok(result),
            other => Err(unexpected_answer("elicitation/create", &other)),
        }
    }

    async fn on_custom_request(
        &self,
        request: rmcp::model::CustomRequest,
        context: RequestContext<RoleClient>,
    ) -> std::result::Result<rmcp::model::CustomResult, ErrorData> {
        let method = request.method.clone();
        match self.shared.ask_host(&method, ServerRequest::CustomRequest(request), &context).await? {
            ClientResult::CustomResult(result) => Ok(result),
            other => Err(unexpected_answer(&method, &other)),
        }
    }

    fn get_info(&self) -> rmcp::model::ClientConfig {
        self.shared.backend_client_info()
    }
}

/// The backend with its connected MCP client: what the supervisor watches and stops.
struct Connected {
    handle: crate::Handle,
    client: tokio::sync::Mutex<Option<RunningService<RoleClient, BackendClient>>>,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected").field("handle", &self.handle).finish_non_exhaustive()
    }
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[async_trait::async_trait]
impl Supervised for Connected {
    fn ready_info(&self) -> ReadyInfo {
        Supervised::ready_info(&self.handle)
    }

    async fn watch(&self, liveness: Option<&Liveness>) -> Result<Ended> {
        self.handle.watch(liveness).await
    }

    fn tail(&self, lines: usize) -> Vec<String> {
        Supervised::tail(&self.handle, lines)
    }

    async fn stop(self: Box<Self>) -> Result<StopOutcome> {
        if let Some(client) = self.client.lock().await.take() {
            let _ = client.cancel().await;
        }
        self.handle.stop().await
    }

    fn release(self: Box<Self>) {
        self.handle.release();
    }

    fn leave_running(&self) -> bool {
        self.handle.reused() || self.handle.shared()
    }
}

/// One start for the proxy: `ensure_running`, then rmcp's client connected to the
/// backend's MCP endpoint (published to the front before the supervisor says ready).
struct McpStarter {
    ensure: EnsureStarter,
    mcp_path: String,
    shared: Shared,
    timeout: Duration,
    /// The client of the start that just succeeded, for the front's `Ready`.
    ready: std::sync::Mutex<Option<(Peer<RoleClient>, String)>>,
}

#[async_trait::async_trait]
impl Starter for McpStarter {
    async fn start(&self, attempt: &Attempt) -> Result<Box<dyn Supervised>> {
        let handle = self.ensure.start_handle(attempt).await?;
        // The backend is told what the host can do (sampling, elicitation, roots): the
        // host's `initialize` comes first thing, so this waits only a moment, if at all.
        self.shared.initialize_answered(HOST_INITIALIZE_WAIT).await;
        let url = format!("{}{}", handle.url(), self.mcp_path);
        let patience = self.timeout.min(CONNECT_PATIENCE);
        let mut cancel = attempt.cancel.clone();
        // The connect races the backend itself: one that exits between its ready
        // `/health` and its MCP `initialize` is reported at once, not after the patience.
        let mut exited = None;
        let client = tokio::select! {
            c = connect_patiently(&url, BackendClient { shared: self.shared.clone() }, patience) => c,
            () = stopping(&mut cancel) => Err("stopping".into()),
            ended = handle.watch(None) => {
                let ended = ended.unwrap_or_else(|e| Ended::Unhealthy(e.chain()));
                let why = format!("the backend {ended} after it said ready, before its MCP endpoint {url} answered");
                exited = Some(why.clone());
                Err(why)
            }
        };
        let client = match client {
            Ok(c) => c,
            Err(why) => {
                let tail = Supervised::tail(&handle, tether_core::readiness::TAIL_LINES);
                let stopping = *attempt.cancel.borrow();
                if handle.reused() {
                    handle.release();
                } else {
                    let _ = handle.stop().await;
                }
                if stopping {
                    return Err(Error::Interrupted);
                }
                if let Some(message) = exited {
                    return Err(Error::Runner { message, stderr_tail: tail, source: None });
                }
                return Err(unanswered(&url, patience, &why));
            }
        };
        *self.ready.lock().unwrap_or_else(|p| p.into_inner()) = Some((client.peer().clone(), url));
        Ok(Box::new(Connected { handle, client: tokio::sync::Mutex::new(Some(client)) }))
    }
}

/// How long a backend connection waits for the host's `initialize` (whose capabilities
/// it passes on) before connecting without them.
const HOST_INITIALIZE_WAIT: Duration = Duration::from_secs(10);

/// Run the backend until `stop`: the core's supervisor starts, connects, watches and
/// restarts it; this renders its states for the front.
pub(crate) async fn supervise(
    plan: Plan,
    ensure: EnsureOptions,
    mcp_path: String,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    // Hosts send `initialize` as soon as they spawn us: answer it first, start right after.
    shared.initialize_answered(Duration::from_millis(20)).await;
    let linger = ensure.shared;
    let starter = Arc::new(McpStarter {
        ensure: EnsureStarter::new(plan.clone(), ensure),
        mcp_path,
        shared: shared.clone(),
        timeout: plan.timeout,
        ready: std::sync::Mutex::new(None),
    });
    let options = crate::supervisor_options(&plan).retrying_first_start(true);
    let mut supervisor = Supervisor::spawn(Arc::clone(&starter) as Arc<dyn Starter>, options);
    let Some(mut events) = supervisor.events() else { return Ok(()) };
    let name = plan.name.clone();
    // A backend someone else runs is reconnected to, never restarted: say so.
    let (again, not_again) = match plan.runner {
        crate::RunnerKind::Remote => ("reconnecting to the backend", "not reconnecting to the backend"),
        _ => ("restarting the backend", "not restarting the backend"),
    };
    loop {
        let event = tokio::select! {
            () = stopping(&mut stop) => {
                supervisor.stop();
                // Drain to the end: the supervisor stops the backend with its grace.
                while let Some(event) = events.recv().await {
                    if event.is_final() {
                        log_final(&name, &event, linger);
                        break;
                    }
                }
                shared.set(BackendState::Stopped);
                return Ok(());
            }
            event = events.recv() => event,
        };
        let Some(event) = event else {
            shared.set(BackendState::Stopped);
            return Ok(());
        };
        match event {
            SupervisorState::Starting { lifecycle, restarts, since } => {
                let (phase, progress) = match &lifecycle {
                    State::WaitingReady { progress } | State::Preparing { progress } => {
                        (progress.phase.clone(), progress.value)
                    }
                    State::Ready { .. } => ("connecting to its MCP endpoint".to_string(), None),
                    other => (other.name().replace('_', " "), None),
                };
                shared.set(BackendState::Starting { phase, progress, since: since.into_std(), restarts });
            }
            SupervisorState::Ready { info, .. } => {
                let ready = starter.ready.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some((peer, url)) = ready {
                    tracing::info!(instance = %name, %url, "ready: forwarding MCP calls to the backend");
                    let process = info.pid.and_then(tether_core::procs::ProcessIdentity::of);
                    shared.set(BackendState::Ready { peer: peer.clone(), url, process });
                    shared.apply_log_level(&peer).await;
                    shared.backend_ready(&peer).await;
                }
            }
            SupervisorState::Restarting { ended, restarts, at, stderr_tail, .. } => {
                let reason = ended.to_string();
                let in_ms = at.saturating_duration_since(tokio::time::Instant::now()).as_millis() as u64;
                tracing::warn!(instance = %name, %reason, restart = restarts, in_ms, "{again}");
                shared.set(BackendState::Down { reason, stderr_tail, restart_at: at.into_std() });
            }
            SupervisorState::Failed { ended, error, restarts, stderr_tail } => {
                let reason = ended.to_string();
                tracing::error!(instance = %name, %reason, restarts, "{not_again}");
                let exit_code = match error.as_deref() {
                    Some(e) => e.backend_exit_code(),
                    None => tether_core::supervisor::exit_code(&ended),
                };
                let message = match plan.runner {
                    crate::RunnerKind::Remote => format!("backend '{name}' {reason}; no more reconnecting to it"),
                    _ => format!("backend '{name}' {reason}; it will not be restarted"),
                };
                // The state first: a host that sends `initialized` meanwhile is told from it.
                shared.set(BackendState::Failed { message, exit_code, stderr_tail });
                shared.tell_host_failed().await;
                // Keep answering the host (with this error) until it goes away.
                stopping(&mut stop).await;
                shared.set(BackendState::Stopped);
                return Ok(());
            }
            SupervisorState::Stopped { .. } => {
                log_final(&name, &event, linger);
                shared.set(BackendState::Stopped);
                return Ok(());
            }
            _ => {}
        }
    }
}

/// The last word on the backend; `linger`: it is shared, and lingers this long after
/// the last proxy's lease.
fn log_final(name: &str, state: &SupervisorState, linger: Option<Duration>) {
    match state {
        SupervisorState::Stopped { left_running: true, .. } => match linger {
            Some(linger) => tracing::info!(
                instance = %name,
                "gave back this proxy's lease on the shared backend: it stops {}s after the last one",
                linger.as_secs()
            ),
            None => tracing::info!(instance = %name, "left the backend running: it was running (detached) before"),
        },
        SupervisorState::Stopped { outcome: Some(how), .. } => {
            tracing::info!(instance = %name, killed = how.was_killed(), "stopped the backend");
        }
        SupervisorState::Stopped { error: Some(e), .. } => {
            tracing::warn!(instance = %name, error = %e, "stopping the backend failed");
        }
        _ => {}
    }
}

/// How long a ready backend's MCP endpoint may take to answer (some mount it after their
/// health route) before the start counts as failed: a restart of a heavy backend costs more
/// than this wait.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// The error of a ready backend whose MCP endpoint did not answer.
fn unanswered(url: &str, patience: Duration, why: &str) -> Error {
    Error::Runner {
        message: format!(
            "the backend is ready but its MCP endpoint {url} did not answer in {}: {why} (is --mcp-path right?)",
            tether_core::error::humanize(patience)
        ),
        stderr_tail: Vec::new(),
        source: None,
    }
}

/// For `--prefetch`: connect to the ready backend's MCP endpoint at `url` (as a start of
/// the proxy does, with its patience), list all its tools and take its instructions, then
/// disconnect (with its prompts and resources: see [`fetch_catalog`]). `cancel` (a stop
/// signal) ends the wait.
pub(crate) async fn fetch_tools(
    url: &str,
    timeout: Duration,
    cancel: Option<watch::Receiver<bool>>,
) -> Result<(Vec<Tool>, Option<String>, Catalog)> {
    let patience = timeout.min(CONNECT_PATIENCE);
    let mut cancel = cancel.unwrap_or_else(|| watch::channel(false).1);
    let fetch = async {
        let client = connect_patiently(url, (), patience).await.map_err(|why| unanswered(url, patience, &why))?;
        let instructions = client.peer_info().and_then(|info| info.instructions.clone());
        let listed = tokio::time::timeout(timeout, async {
            let tools = client.list_all_tools().await?;
            Ok::<_, rmcp::ServiceError>((tools, fetch_catalog(client.peer()).await))
        })
        .await;
        let _ = client.cancel().await;
        match listed {
            Ok(Ok((tools, catalog))) => Ok((tools, instructions, catalog)),
            Ok(Err(e)) => Err(Error::runner(
                format!("the backend at {url} did not list its tools: {}", plain(&e.to_string())),
                None,
            )),
            Err(_) => Err(Error::runner(
                format!("the backend at {url} did not list its tools in {}", tether_core::error::humanize(timeout)),
                None,
            )),
        }
    };
    tokio::select! {
        fetched = fetch => fetched,
        () = stopping(&mut cancel) => Err(Error::Interrupted),
    }
}

/// Connect, retrying with a backoff (50 ms doubling to 1 s) until `patience` has passed.
async fn connect_patiently<H: ClientHandler + Clone>(
    url: &str,
    handler: H,
    patience: Duration,
) -> std::result::Result<RunningService<RoleClient, H>, String> {
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match connect(url, handler.clone(), left.max(Duration::from_millis(100))).await {
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
async fn connect<H: ClientHandler>(
    url: &str,
    handler: H,
    timeout: Duration,
) -> std::result::Result<RunningService<RoleClient, H>, String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        // As rmcp's own default client: no idle pool, which avoids delayed-ACK stalls
        // when a response body was not read to the end.
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    // Anything the backend could send a host directly passes (rmcp's default is 16 MiB).
    config.max_sse_event_size = super::MAX_MESSAGE;
    config.max_json_response_size = super::MAX_MESSAGE;
    let transport = StreamableHttpClientTransport::with_client(http, config);
    match tokio::time::timeout(timeout, handler.serve(transport)).await {
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
