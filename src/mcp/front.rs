//! The proxy's host side: an rmcp stdio server that answers `initialize` from its own
//! configuration at once, lists tools from the backend, else the cache, tools file or
//! preset (with none of them, after waiting up to the list wait for the backend), and
//! forwards `tools/call` to the backend once it is ready; prompts, resources, completions
//! and `logging/setLevel` likewise (their lists and capabilities cached like the tools).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, ClientRequest, ContentBlock,
    Implementation, InitializeRequestParams, InitializeResult, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ProgressToken, ProtocolVersion, ServerCapabilities, ServerConfig, ServerResult, Tool,
};
use rmcp::model::{
    CompleteRequest, CompleteRequestParams, CompleteResult, GetPromptRequest, GetPromptRequestParams,
    GetPromptResponse, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ReadResourceRequest,
    ReadResourceRequestParams, ReadResourceResponse, RequestOptionalParam, SubscribeRequestParams,
    UnsubscribeRequestParams,
};
#[allow(deprecated)] // MCP logging (SEP-2577), still what hosts show
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam, SetLevelRequest, SetLevelRequestParams};
// Legacy-only in rmcp (2026-07-28 has `subscriptions/listen`); the proxy speaks the
// `initialize` era, where hosts subscribe with these.
#[allow(deprecated)]
use rmcp::model::{SubscribeRequest, UnsubscribeRequest};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, Peer, RoleClient, RoleServer, ServerHandler, ServiceError};
use tether_core::error::humanize;
use tokio::sync::watch;

use super::state::BackendState;
use super::tools::ToolCache;

/// What the front and the backend supervisor share.
#[derive(Clone)]
pub(crate) struct Shared(Arc<Inner>);

struct Inner {
    name: String,
    state: watch::Sender<BackendState>,
    cache: ToolCache,
    call_wait: Duration,
    /// How long a `tools/list` with nothing to list waits for the backend.
    list_wait: Duration,
    /// The host, once it has sent `initialized`: notifications go there.
    host: Mutex<Option<Peer<RoleServer>>>,
    /// The last tool list the host was given.
    served: Mutex<Option<Vec<Tool>>>,
    /// The tools the running backend itself listed when it became ready (not a cache, a
    /// file or a preset): what a tool's annotations are judged by.
    live_tools: Mutex<Vec<Tool>>,
    /// Calls in flight that want progress: the backend's token → the host's.
    progress: Mutex<HashMap<ProgressToken, ProgressToken>>,
    /// The host's last `logging/setLevel`: applied to each backend connection.
    #[allow(deprecated)] // MCP logging (SEP-2577), still what hosts show
    log_level: Mutex<Option<LoggingLevel>>,
    /// Set once `initialize` is answered.
    initialized: watch::Sender<bool>,
    /// What the host said it can do at `initialize` (sampling, elicitation, roots): the
    /// proxy connects to the backend with the same, and forwards those requests.
    host_capabilities: Mutex<Option<rmcp::model::ClientCapabilities>>,
    /// The host was sent the backend's failure as a log message (once, after its `initialized`).
    failure_told: std::sync::atomic::AtomicBool,
    /// The host's first `tools/list` after the failure was answered with it.
    failure_listed: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn new(name: String, cache: ToolCache, call_wait: Duration, list_wait: Duration) -> Self {
        let (state, _) = watch::channel(BackendState::Starting {
            phase: "starting".into(),
            progress: None,
            since: Instant::now(),
            restarts: 0,
        });
        Shared(Arc::new(Inner {
            name,
            state,
            cache,
            call_wait,
            list_wait,
            host: Mutex::new(None),
            served: Mutex::new(None),
            live_tools: Mutex::new(Vec::new()),
            progress: Mutex::new(HashMap::new()),
            log_level: Mutex::new(None),
            initialized: watch::channel(false).0,
            host_capabilities: Mutex::new(None),
            failure_told: std::sync::atomic::AtomicBool::new(false),
            failure_listed: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Until the host's `initialize` is answered, or `at_most`: the backend's start (a few
    /// milliseconds of synchronous work on this one thread) then never delays that answer.
    pub(crate) async fn initialize_answered(&self, at_most: Duration) {
        let mut rx = self.0.initialized.subscribe();
        let _ = tokio::time::timeout(at_most, rx.wait_for(|done| *done)).await;
        // Let the answer be written before the start takes the thread.
        tokio::task::yield_now().await;
    }

    pub(crate) fn set(&self, state: BackendState) {
        self.0.state.send_replace(state);
    }

    pub(crate) fn current(&self) -> BackendState {
        self.0.state.borrow().clone()
    }

    /// What the host can do (its `initialize`), once it said.
    pub(crate) fn host_capabilities(&self) -> Option<rmcp::model::ClientCapabilities> {
        self.0.host_capabilities.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn host(&self) -> Option<Peer<RoleServer>> {
        self.0.host.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn served(&self, tools: &[Tool]) {
        *self.0.served.lock().unwrap_or_else(|p| p.into_inner()) = Some(tools.to_vec());
    }

    /// The backend is ready: fetch its tools, cache them, and tell the host when they
    /// differ from what it was given.
    pub(crate) async fn backend_ready(&self, peer: &Peer<RoleClient>) {
        let tools = match peer.list_all_tools().await {
            Ok(tools) => tools,
            Err(e) => {
                tracing::warn!(error = %e, "the backend did not list its tools");
                return;
            }
        };
        self.0.cache.store(&tools);
        *self.0.live_tools.lock().unwrap_or_else(|p| p.into_inner()) = tools.clone();
        self.0.cache.store_instructions(peer.peer_info().and_then(|info| info.instructions.clone()));
        let catalog = super::tools::fetch_catalog(peer).await;
        self.0.cache.update_catalog(|c| *c = catalog);
        let differs = {
            let served = self.0.served.lock().unwrap_or_else(|p| p.into_inner());
            served.as_deref().is_some_and(|s| s != tools.as_slice())
        };
        if differs {
            self.tools_changed().await;
        }
    }

    /// Pass a progress notification of a forwarded call on to the host, under the host's
    /// own token (rmcp's client gives each request a token of its own).
    pub(crate) async fn progress(&self, mut params: ProgressNotificationParam) {
        let host_token = self.0.progress.lock().unwrap_or_else(|p| p.into_inner()).get(&params.progress_token).cloned();
        if let (Some(token), Some(host)) = (host_token, self.host()) {
            params.progress_token = token;
            if let Err(e) = host.notify_progress(params).await {
                tracing::debug!(error = %e, "cannot pass a progress notification on to the host");
            }
        }
    }

    /// Forward a call to the backend (see [`Shared::forward`]).
    async fn forward_call(
        &self,
        peer: &Peer<RoleClient>,
        request: CallToolRequestParams,
        host_token: Option<ProgressToken>,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ServiceError> {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(request));
        // The host's `_meta` as it is: a host's own keys (Claude Code's `claudecode/toolUseId`),
        // trace context (`traceparent`, `tracestate`), `io.modelcontextprotocol/*`.
        let meta = Some(context.meta.clone());
        match self.forward(peer, request, meta, host_token, context).await? {
            ServerResult::CallToolResult(r) => Ok(CallToolResponse::Complete(r)),
            ServerResult::InputRequiredResult(r) => Ok(CallToolResponse::InputRequired(r)),
            ServerResult::CreateTaskResult(r) => Ok(CallToolResponse::Task(r)),
            _ => Err(ServiceError::UnexpectedResponse),
        }
    }

    /// Route the backend's progress notifications under `token` to the host under
    /// `host_token` until the returned route is dropped.
    pub(crate) fn route_progress(&self, token: ProgressToken, host_token: ProgressToken) -> ProgressRoute<'_> {
        self.0.progress.lock().unwrap_or_else(|p| p.into_inner()).insert(token.clone(), host_token);
        ProgressRoute { shared: self, token }
    }

    /// The level the host last asked for with `logging/setLevel`, if it did.
    #[allow(deprecated)] // MCP logging (SEP-2577), still what hosts show
    fn log_level(&self) -> Option<LoggingLevel> {
        *self.0.log_level.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A newly connected backend gets the host's log level (its last `logging/setLevel`),
    /// when the host set one and the backend has `logging`: a restarted backend, or one
    /// that was not ready when the host set it, logs at the level the host chose.
    #[allow(deprecated)] // MCP logging (SEP-2577), still what hosts show
    pub(crate) async fn apply_log_level(&self, peer: &Peer<RoleClient>) {
        let Some(level) = self.log_level() else { return };
        if !backend_logs(peer) {
            return;
        }
        match peer.set_level(SetLevelRequestParams::new(level)).await {
            Ok(()) => tracing::debug!(?level, "applied the host's log level to the backend"),
            Err(e) => tracing::warn!(error = %e, "the backend did not take the host's log level"),
        }
    }

    /// Pass a log message of the backend (`notifications/message`) on to the host as it is.
    #[allow(deprecated)] // MCP logging (SEP-2577), still what hosts show
    pub(crate) async fn log_message(&self, params: LoggingMessageNotificationParam) {
        let Some(host) = self.host() else { return };
        if let Err(e) = host.notify_logging_message(params).await {
            tracing::debug!(error = %e, "cannot pass a log message of the backend on to the host");
        }
    }

    /// Tell the host, as an MCP log message, why the backend failed for good: hosts show
    /// a server's failure only if it surfaces in the protocol (or on exit).
    // MCP logging is deprecated by SEP-2577 (rmcp marks it so), but today's hosts still
    // show log messages and nothing replaces them yet.
    #[allow(deprecated)]
    pub(crate) async fn tell_host_failed(&self) {
        use std::sync::atomic::Ordering;
        let BackendState::Failed { message, exit_code, stderr_tail, .. } = self.current() else { return };
        // Only to a host that has sent `initialized` (a notification before it may be
        // dropped): the front calls this again when that comes.
        let Some(host) = self.host() else { return };
        if self.0.failure_told.swap(true, Ordering::AcqRel) {
            return;
        }
        let data = serde_json::json!({"error": message, "exit_code": exit_code, "last_output": stderr_tail});
        let param = rmcp::model::LoggingMessageNotificationParam::new(rmcp::model::LoggingLevel::Error, data)
            .with_logger("tether");
        if let Err(e) = host.notify_logging_message(param).await {
            tracing::debug!(error = %e, "cannot tell the host why the backend failed");
        }
    }

    /// The first `tools/list` after the backend failed for good: answered with the failure
    /// (a host shows a server's failure only when it surfaces in the protocol); later ones
    /// list the known tools, whose calls answer the same failure.
    fn failure_for_list(&self) -> Option<ErrorData> {
        use std::sync::atomic::Ordering;
        let BackendState::Failed { message, exit_code, stderr_tail, .. } = self.current() else { return None };
        if self.0.failure_listed.swap(true, Ordering::AcqRel) {
            return None;
        }
        let mut text = message;
        if let Some(code) = exit_code {
            let _ = write!(text, " (exit code {code})");
        }
        if let Some(last) = stderr_tail.iter().rev().find(|l| !l.trim().is_empty()) {
            let _ = write!(text, "; last output: {}", last.trim());
        }
        let data = serde_json::json!({"exit_code": exit_code, "last_output": stderr_tail});
        Some(ErrorData::internal_error(text, Some(data)))
    }

    /// Pass a notification of the backend (resources updated or changed, prompts changed)
    /// on to the host.
    pub(crate) async fn notify_host(&self, notification: rmcp::model::ServerNotification) {
        let Some(host) = self.host() else { return };
        if let Err(e) = host.send_notification(notification).await {
            tracing::debug!(error = %e, "cannot pass a notification of the backend on to the host");
        }
    }

    /// Tell the host to list the tools again.
    pub(crate) async fn tools_changed(&self) {
        *self.0.served.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(host) = self.host() {
            match host.notify_tool_list_changed().await {
                Ok(()) => tracing::info!("told the host that the tools changed"),
                Err(e) => tracing::warn!(error = %e, "cannot tell the host that the tools changed"),
            }
        }
    }

    /// Wait, up to the call wait, until the backend is ready, failed or stopping.
    pub(crate) async fn settled(&self) -> BackendState {
        self.settled_within(self.0.call_wait).await
    }

    /// After a call to `peer` lost its connection: whether the backend ended (seen within
    /// a second: a process exit is seen at once), and if so the state once settled again
    /// (up to `--call-wait`) — `Ready` with a new peer when it was restarted. `None` when the
    /// backend still looks ready on the same peer: the failure was not its end.
    async fn restarted_from(&self, peer: &Peer<RoleClient>) -> Option<BackendState> {
        let mut rx = self.0.state.subscribe();
        // One connection, one handshake: the same peer shares its handshake's `Arc`.
        let same_peer = |p: &Peer<RoleClient>| match (p.peer_info(), peer.peer_info()) {
            (Some(a), Some(b)) => Arc::ptr_eq(&a, &b),
            _ => false,
        };
        let same = |s: &BackendState| matches!(s, BackendState::Ready { peer: p, .. } if same_peer(p));
        let left = matches!(tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|s| !same(s))).await, Ok(Ok(_)));
        if !left {
            return None;
        }
        let settled = self.settled().await;
        (!same(&settled)).then_some(settled)
    }

    /// Whether the backend's tool `name` says that running it twice is harmless (its
    /// annotations: read-only or idempotent), as the running backend itself listed it; a
    /// tool it does not list (or says nothing of) is not.
    fn repeatable(&self, name: &str) -> bool {
        let live = self.0.live_tools.lock().unwrap_or_else(|p| p.into_inner());
        live.iter()
            .filter(|t| t.name == name)
            .filter_map(|t| t.annotations.as_ref())
            .any(|a| a.read_only_hint == Some(true) || a.idempotent_hint == Some(true))
    }

    /// Wait, up to `wait`, until the backend is ready, failed or stopping.
    async fn settled_within(&self, wait: Duration) -> BackendState {
        let mut rx = self.0.state.subscribe();
        let waited = tokio::time::timeout(wait, rx.wait_for(|s| !s.is_transient())).await;
        match waited {
            Ok(Ok(state)) => state.clone(),
            _ => self.current(),
        }
    }

    /// The tool error a host sees when the backend cannot take the call.
    fn unavailable(&self, state: &BackendState) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(self.unavailable_text(state))])
    }

    /// Why the backend cannot take a request now: its state, the progress, its last output.
    pub(crate) fn unavailable_text(&self, state: &BackendState) -> String {
        let name = &self.0.name;
        let mut text = match state {
            BackendState::Starting { phase, progress, since, restarts } => {
                let count = progress.map(|n| format!(", {n} loaded")).unwrap_or_default();
                let again = if *restarts > 0 { format!(" (restart {restarts})") } else { String::new() };
                format!(
                    "backend '{name}' is still starting{again}: {phase}{count}, {} so far (waited {}). \
                     Try again in a moment.",
                    humanize(since.elapsed()),
                    humanize(self.0.call_wait)
                )
            }
            BackendState::Down { reason, restart_at, .. } => {
                let left = restart_at.saturating_duration_since(Instant::now());
                format!(
                    "backend '{name}' {reason}; it is being restarted (in {}). Try again in a moment.",
                    humanize(left)
                )
            }
            BackendState::Failed { message, exit_code, .. } => {
                let code = exit_code
                    .filter(|_| !message.contains("exit code"))
                    .map(|c| format!(" (exit code {c})"))
                    .unwrap_or_default();
                format!("{message}{code}")
            }
            BackendState::Stopped => format!("backend '{name}' is stopping: the proxy is shutting down"),
            BackendState::Ready { url, .. } => format!("backend '{name}' at {url} did not answer"),
        };
        let tail = match state {
            BackendState::Down { stderr_tail, .. } | BackendState::Failed { stderr_tail, .. } => stderr_tail.as_slice(),
            _ => &[],
        };
        if !tail.is_empty() {
            text.push_str("\nLast output:");
            for line in tail {
                let _ = write!(text, "\n  {line}");
            }
        }
        text
    }
}

/// A paginated list request of the host, as the backend's request.
fn paginated<M: Default>(params: Option<PaginatedRequestParams>) -> RequestOptionalParam<M, PaginatedRequestParams> {
    RequestOptionalParam { method: M::default(), params, extensions: Default::default() }
}

/// Whether a list request asks for the first page (a whole list, if it has no next cursor).
fn is_first_page(request: &Option<PaginatedRequestParams>) -> bool {
    request.as_ref().is_none_or(|r| r.cursor.is_none())
}

/// The backend answered a request with a result of another kind.
fn unexpected(method: &str) -> ErrorData {
    ErrorData::internal_error(format!("the backend answered `{method}` with a result of another kind"), None)
}

/// Why `params` are not those of the MCP method `method`, when it is one rmcp knows (what
/// serde says of them against the method's own type); `None` for a method of no one's.
#[allow(deprecated)] // logging/setLevel (SEP-2577), still what hosts send
pub(crate) fn invalid_params(method: &str, params: serde_json::Value) -> Option<String> {
    use rmcp::model as m;
    fn why<T: serde::de::DeserializeOwned>(params: serde_json::Value) -> String {
        match serde_json::from_value::<T>(params) {
            Err(e) => e.to_string(),
            Ok(_) => "not what the method takes".into(),
        }
    }
    Some(match method {
        "tools/call" => why::<m::CallToolRequestParams>(params),
        "prompts/get" => why::<m::GetPromptRequestParams>(params),
        "resources/read" => why::<m::ReadResourceRequestParams>(params),
        "resources/subscribe" => why::<m::SubscribeRequestParams>(params),
        "resources/unsubscribe" => why::<m::UnsubscribeRequestParams>(params),
        "completion/complete" => why::<m::CompleteRequestParams>(params),
        "logging/setLevel" => why::<m::SetLevelRequestParams>(params),
        "initialize" => why::<m::InitializeRequestParams>(params),
        "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" | "ping" => {
            why::<Option<m::PaginatedRequestParams>>(params)
        }
        _ => return None,
    })
}

/// Whether the connected backend said it has `logging` (in its `initialize` answer).
fn backend_logs(peer: &Peer<RoleClient>) -> bool {
    peer.peer_info().is_some_and(|info| info.capabilities.logging.is_some())
}

/// A forwarded call's progress route (backend token → host token), removed on drop.
pub(crate) struct ProgressRoute<'a> {
    shared: &'a Shared,
    token: ProgressToken,
}

impl Drop for ProgressRoute<'_> {
    fn drop(&mut self) {
        self.shared.0.progress.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.token);
    }
}

/// The stdio MCP server the host talks to.
#[derive(Clone)]
pub(crate) struct Front {
    shared: Shared,
}

impl Front {
    pub(crate) fn new(shared: Shared) -> Self {
        Front { shared }
    }
}

impl Front {
    /// The backend's own answer when it is ready (the cache is updated with a whole list);
    /// `None` when it is not, or did not answer.
    async fn list_from_backend(
        &self,
        request: Option<PaginatedRequestParams>,
        context: &RequestContext<RoleServer>,
    ) -> Option<Result<ListToolsResult, ErrorData>> {
        let BackendState::Ready { peer, .. } = self.shared.current() else { return None };
        let first_page = request.as_ref().is_none_or(|r| r.cursor.is_none());
        let list = ClientRequest::ListToolsRequest(rmcp::model::ListToolsRequest {
            method: Default::default(),
            params: request,
            extensions: Default::default(),
        });
        let answer = match self.shared.forward(&peer, list, Some(context.meta.clone()), None, context).await {
            Ok(ServerResult::ListToolsResult(result)) => Ok(result),
            Ok(_) => Err(ServiceError::UnexpectedResponse),
            Err(e) => Err(e),
        };
        match answer {
            Ok(result) => {
                if first_page && result.next_cursor.is_none() {
                    self.shared.0.cache.store(&result.tools);
                    self.shared.served(&result.tools);
                }
                Some(Ok(result))
            }
            Err(ServiceError::McpError(e)) => Some(Err(e)),
            Err(e) => {
                tracing::warn!(error = %e, "the backend did not list its tools; listing the cached ones");
                None
            }
        }
    }
}

impl ServerHandler for Front {
    /// Only the versions with an `initialize` handshake (up to 2025-11-25): the proxy
    /// forwards results as the backend gave them, in the session model, which a 2026-07-28
    /// client rejects (no `resultType`). A 2.x SDK client in its default `auto` mode probes
    /// `server/discover`, is told these versions (-32022), and falls back to `initialize`.
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::LATEST_WITH_INITIALIZE))
    }

    // `logging`: deprecated by SEP-2577, still what hosts show (see `tell_host_failed`).
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        let mut capabilities =
            ServerCapabilities::builder().enable_logging().enable_tools().enable_tool_list_changed().build();
        // Prompts, resources and completions as the backend said last time (the cache):
        // what a host asks for, it asks for at `initialize`, before the backend is ready.
        if let Some(backend) = self.shared.0.cache.catalog().capabilities {
            capabilities.prompts = backend.prompts;
            capabilities.resources = backend.resources;
            capabilities.completions = backend.completions;
        }
        let config = ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("tether-mcp-proxy", env!("CARGO_PKG_VERSION")));
        // The backend's own instructions, as it gave them last time (the cache), if any.
        match self.shared.0.cache.instructions() {
            Some(text) => config.with_instructions(text),
            None => config,
        }
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        // From our own configuration, never the backend's: this is what makes it instant.
        context.peer.set_peer_info(request.clone());
        *self.shared.0.host_capabilities.lock().unwrap_or_else(|p| p.into_inner()) = Some(request.capabilities.clone());
        let answer = self.negotiate_initialize(&request);
        self.shared.0.initialized.send_replace(true);
        answer
    }

    /// A request rmcp could not read as the MCP method it names lands here, as a method
    /// of its own: its params are wrong (`tools/call` without a `name`, say), which is
    /// JSON-RPC's Invalid params (-32602) with what was wrong, not Method not found.
    async fn on_custom_request(
        &self,
        request: rmcp::model::CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CustomResult, ErrorData> {
        let method = request.method.as_str();
        match invalid_params(method, request.params.clone().unwrap_or(serde_json::Value::Null)) {
            Some(why) => Err(ErrorData::invalid_params(format!("invalid params for `{method}`: {why}"), None)),
            None => Err(ErrorData::new(rmcp::model::ErrorCode::METHOD_NOT_FOUND, method.to_string(), None)),
        }
    }

    /// The host's roots changed: the backend is told (it asks for them again).
    async fn on_roots_list_changed(&self, _context: NotificationContext<RoleServer>) {
        if let BackendState::Ready { peer, .. } = self.shared.current()
            && let Err(e) = peer.notify_roots_list_changed().await
        {
            tracing::debug!(error = %e, "cannot pass the host's roots/list_changed on to the backend");
        }
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        *self.shared.0.host.lock().unwrap_or_else(|p| p.into_inner()) = Some(context.peer.clone());
        // Ready before the host finished initializing, with a list it never saw: nothing to do.
        // Failed before: now the host can be told (from a task of its own: this handler
        // runs inside the session's loop, which must be free to send it).
        let shared = self.shared.clone();
        tokio::spawn(async move { shared.tell_host_failed().await });
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let whole = is_first_page(&request);
        match self.shared.forward_list(ClientRequest::ListPromptsRequest(paginated(request)), &context).await {
            Some(Ok(ServerResult::ListPromptsResult(result))) => {
                if whole && result.next_cursor.is_none() {
                    self.shared.0.cache.update_catalog(|c| c.prompts = Some(result.prompts.clone()));
                }
                Ok(result)
            }
            Some(Ok(_)) => Err(unexpected("prompts/list")),
            Some(Err(e)) => Err(e),
            None => Ok(ListPromptsResult::with_all_items(self.shared.0.cache.catalog().prompts.unwrap_or_default())),
        }
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        match self
            .shared
            .forward_when_ready(ClientRequest::GetPromptRequest(GetPromptRequest::new(request)), &context)
            .await?
        {
            ServerResult::GetPromptResult(r) => Ok(GetPromptResponse::Complete(r)),
            ServerResult::InputRequiredResult(r) => Ok(GetPromptResponse::InputRequired(r)),
            _ => Err(unexpected("prompts/get")),
        }
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let whole = is_first_page(&request);
        match self.shared.forward_list(ClientRequest::ListResourcesRequest(paginated(request)), &context).await {
            Some(Ok(ServerResult::ListResourcesResult(result))) => {
                if whole && result.next_cursor.is_none() {
                    self.shared.0.cache.update_catalog(|c| c.resources = Some(result.resources.clone()));
                }
                Ok(result)
            }
            Some(Ok(_)) => Err(unexpected("resources/list")),
            Some(Err(e)) => Err(e),
            None => {
                Ok(ListResourcesResult::with_all_items(self.shared.0.cache.catalog().resources.unwrap_or_default()))
            }
        }
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let whole = is_first_page(&request);
        let list = ClientRequest::ListResourceTemplatesRequest(paginated(request));
        match self.shared.forward_list(list, &context).await {
            Some(Ok(ServerResult::ListResourceTemplatesResult(result))) => {
                if whole && result.next_cursor.is_none() {
                    let templates = result.resource_templates.clone();
                    self.shared.0.cache.update_catalog(|c| c.resource_templates = Some(templates));
                }
                Ok(result)
            }
            Some(Ok(_)) => Err(unexpected("resources/templates/list")),
            Some(Err(e)) => Err(e),
            None => Ok(ListResourceTemplatesResult::with_all_items(
                self.shared.0.cache.catalog().resource_templates.unwrap_or_default(),
            )),
        }
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let read = ClientRequest::ReadResourceRequest(ReadResourceRequest::new(request));
        match self.shared.forward_when_ready(read, &context).await? {
            ServerResult::ReadResourceResult(r) => Ok(ReadResourceResponse::Complete(r)),
            ServerResult::InputRequiredResult(r) => Ok(ReadResourceResponse::InputRequired(r)),
            _ => Err(unexpected("resources/read")),
        }
    }

    // Legacy-only in rmcp (2026-07-28 has `subscriptions/listen`); the proxy speaks the
    // `initialize` era, where hosts subscribe with these.
    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let subscribe = ClientRequest::SubscribeRequest(SubscribeRequest::new(request));
        self.shared.forward_when_ready(subscribe, &context).await.map(|_| ())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let unsubscribe = ClientRequest::UnsubscribeRequest(UnsubscribeRequest::new(request));
        self.shared.forward_when_ready(unsubscribe, &context).await.map(|_| ())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        match self
            .shared
            .forward_when_ready(ClientRequest::CompleteRequest(CompleteRequest::new(request)), &context)
            .await?
        {
            ServerResult::CompleteResult(r) => Ok(r),
            _ => Err(unexpected("completion/complete")),
        }
    }

    /// Remembered for every backend connection to come, and forwarded to a ready backend
    /// that has `logging`; the proxy's own messages (logger `tether`) are errors only.
    #[allow(deprecated)] // MCP logging (SEP-2577), still what hosts show
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *self.shared.0.log_level.lock().unwrap_or_else(|p| p.into_inner()) = Some(request.level);
        let BackendState::Ready { peer, .. } = self.shared.current() else { return Ok(()) };
        if !backend_logs(&peer) {
            return Ok(());
        }
        let request = ClientRequest::SetLevelRequest(SetLevelRequest::new(request));
        match self.shared.forward(&peer, request, Some(context.meta.clone()), None, &context).await {
            Ok(_) => Ok(()),
            Err(ServiceError::McpError(e)) => Err(e),
            Err(e) => {
                // Applied again when the backend is connected anew.
                tracing::warn!(error = %e, "cannot pass the host's log level on to the backend");
                Ok(())
            }
        }
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        if let Some(answer) = self.list_from_backend(request.clone(), &context).await {
            return answer;
        }
        if let Some(failure) = self.shared.failure_for_list() {
            return Err(failure);
        }
        let tools = match self.shared.0.cache.before_ready() {
            Some(tools) => tools,
            None => {
                // Nothing known (no cache, tools file or preset): a host that ignores
                // `list_changed` would keep an empty list for the whole session, so wait
                // for the backend (up to the list wait, below the hosts' start limits).
                tracing::info!(wait = %humanize(self.shared.0.list_wait), "no tools known yet: waiting for the backend");
                let state = tokio::select! {
                    state = self.shared.settled_within(self.shared.0.list_wait) => state,
                    _ = context.ct.cancelled() => return Err(ErrorData::internal_error("cancelled by the host", None)),
                };
                if matches!(state, BackendState::Ready { .. })
                    && let Some(answer) = self.list_from_backend(request, &context).await
                {
                    return answer;
                }
                if let Some(failure) = self.shared.failure_for_list() {
                    return Err(failure);
                }
                self.shared.0.cache.before_ready().unwrap_or_default()
            }
        };
        self.shared.served(&tools);
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let state = tokio::select! {
            state = self.shared.settled() => state,
            _ = context.ct.cancelled() => return Err(ErrorData::internal_error("cancelled by the host", None)),
        };
        let BackendState::Ready { peer, url, process } = &state else {
            return Ok(self.shared.unavailable(&state).into());
        };
        let tool = request.name.clone();
        let host_token = context.meta.get_progress_token();
        // Known dead before the call was sent: nothing can have received it.
        let dead_before = process.as_ref().is_some_and(|p| !p.is_alive());
        let mut forwarded = self.shared.forward_call(peer, request.clone(), host_token.clone(), &context).await;
        // The connection is gone, not answered: the backend may have ended. A call sent
        // after its end waits for the restart like the calls sent a moment later and goes
        // to the new backend; one it ended under may have run, so it is sent again only
        // when the tool says that is harmless (read-only or idempotent).
        if matches!(forwarded, Err(ServiceError::TransportSend(_) | ServiceError::TransportClosed))
            && let Some(now) = tokio::select! {
                now = self.shared.restarted_from(peer) => now,
                _ = context.ct.cancelled() => return Err(ErrorData::internal_error("cancelled by the host", None)),
            }
        {
            match now {
                BackendState::Ready { peer: again, .. } if dead_before || self.shared.repeatable(&tool) => {
                    tracing::info!(%tool, "the backend ended: sending the call to the restarted backend");
                    forwarded = self.shared.forward_call(&again, request, host_token, &context).await;
                }
                BackendState::Ready { .. } => {
                    let name = &self.shared.0.name;
                    return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                        "backend '{name}' ended while `{tool}` was running, and was restarted; the call may \
                         or may not have taken effect, so it was not sent again: call it again if it should run"
                    ))])
                    .into());
                }
                other => return Ok(self.shared.unavailable(&other).into()),
            }
        }
        match forwarded {
            Ok(response) => Ok(response),
            // The backend's own protocol error (unknown tool, bad arguments): the host sees it as is.
            Err(ServiceError::McpError(e)) => Err(e),
            // The host cancelled it (and so it was on the backend): nobody waits for an answer.
            Err(ServiceError::Cancelled { .. }) if context.ct.is_cancelled() => {
                Err(ErrorData::internal_error("cancelled by the host", None))
            }
            Err(e) => {
                tracing::warn!(%tool, error = %e, "forwarding a call to the backend failed");
                // The backend may have died under the call: say what we know now.
                let now = self.shared.current();
                let result = match now {
                    BackendState::Ready { .. } => CallToolResult::error(vec![ContentBlock::text(format!(
                        "calling `{tool}` on backend '{}' at {url} failed: {e}",
                        self.shared.0.name
                    ))]),
                    other => self.shared.unavailable(&other),
                };
                Ok(result.into())
            }
        }
    }
}
