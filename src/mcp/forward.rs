//! Forwarding one request of the host to the backend: with the host's `_meta` when asked,
//! its progress routed back under the host's own token, and a cancel by the host passed
//! on as a cancel of the backend's request.

use rmcp::model::{CancelledNotificationParam, ClientRequest, ProgressToken, RequestMetaObject, ServerResult};
use rmcp::service::{PeerRequestOptions, RequestContext};
use rmcp::{Peer, RoleClient, RoleServer, ServiceError};

use super::front::Shared;

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
