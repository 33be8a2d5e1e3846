//! Forwarding one request of the host to the backend: with the host's `_meta`,
//! its progress routed back under the host's own token, and a cancel by the host passed
//! on as a cancel of the backend's request.

use rmcp::model::{CancelledNotificationParam, ClientRequest, ProgressToken, RequestMetaObject, ServerResult};
use rmcp::service::{PeerRequestOptions, RequestContext};
use rmcp::{ErrorData, Peer, RoleClient, RoleServer, ServiceError};

use super::front::Shared;
use super::state::BackendState;

impl Shared {
    /// Send `request` to the backend and wait for its answer, cancellable: a cancel by
    /// the host (its `notifications/cancelled` naming the request's id, with or without a
    /// progress token) cancels the backend's request with its own id. `meta` goes on the
    /// backend's request as it is (rmcp sets its own `progressToken` over the host's);
    /// when the host asked for progress (`host_token`), the backend's progress
    /// notifications for the request go to the host under the host's token.
    pub(crate) async fn forward(
        &self,
        peer: &Peer<RoleClient>,
        request: ClientRequest,
        meta: Option<RequestMetaObject>,
        host_token: Option<ProgressToken>,
        context: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, ServiceError> {
        let method = request.method().to_string();
        let mut options = PeerRequestOptions::no_options();
        if let Some(meta) = meta {
            options = options.with_meta(meta);
        }
        let handle = peer.send_request_with_option(request, options).await?;
        let id = handle.id.clone();
        // The route goes when the request ends, however it ends (this future may be dropped).
        let _route = host_token.map(|host_token| self.route_progress(handle.progress_token.clone(), host_token));
        let answer = tokio::select! {
            answer = handle.await_response() => Some(answer),
            _ = context.ct.cancelled() => None,
        };
        match answer {
            Some(answer) => answer,
            None => {
                tracing::info!(%method, host_request = %context.id, backend_request = %id, "the host cancelled a request: cancelling it on the backend");
                let cancel = CancelledNotificationParam::new(Some(id), Some("cancelled by the MCP host".into()));
                if let Err(e) = peer.notify_cancelled(cancel).await {
                    tracing::debug!(error = %e, "cannot pass the cancel on to the backend");
                }
                Err(ServiceError::Cancelled { reason: Some("cancelled by the MCP host".into()) })
            }
        }
    }
}

impl Shared {
    /// Forward a request that needs the backend (a prompt, a resource, a completion, a
    /// subscription), with the host's `_meta`: it waits for a loading backend like a
    /// `tools/call` (up to `--call-wait`); a backend that is not ready then, or whose
    /// connection failed, is a JSON-RPC error saying why; the backend's own errors reach
    /// the host as they are.
    pub(crate) async fn forward_when_ready(
        &self,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        let state = tokio::select! {
            state = self.settled() => state,
            _ = context.ct.cancelled() => return Err(ErrorData::internal_error("cancelled by the host", None)),
        };
        let BackendState::Ready { peer, .. } = &state else {
            return Err(ErrorData::internal_error(self.unavailable_text(&state), None));
        };
        let method = request.method().to_string();
        let host_token = context.meta.get_progress_token();
        match self.forward(peer, request, Some(context.meta.clone()), host_token, context).await {
            Ok(result) => Ok(result),
            Err(ServiceError::McpError(e)) => Err(e),
            Err(e) => {
                tracing::warn!(%method, error = %e, "forwarding a request to the backend failed");
                let text = match self.current() {
                    BackendState::Ready { url, .. } => format!("`{method}` on the backend at {url} failed: {e}"),
                    other => self.unavailable_text(&other),
                };
                Err(ErrorData::internal_error(text, None))
            }
        }
    }

    /// Forward a list to a ready backend, with the host's `_meta`; `None` when the backend
    /// is not ready or did not answer (the proxy then lists what it knows).
    pub(crate) async fn forward_list(
        &self,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Option<Result<ServerResult, ErrorData>> {
        let BackendState::Ready { peer, .. } = self.current() else { return None };
        let method = request.method().to_string();
        match self.forward(&peer, request, Some(context.meta.clone()), None, context).await {
            Ok(result) => Some(Ok(result)),
            Err(ServiceError::McpError(e)) => Some(Err(e)),
            Err(e) => {
                tracing::warn!(%method, error = %e, "the backend did not answer a list; listing the cached one");
                None
            }
        }
    }
}
