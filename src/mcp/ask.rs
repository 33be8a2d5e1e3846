//! The backend asking the host: sampling (`sampling/createMessage`), elicitation
//! (`elicitation/create`, form and URL mode) and roots (`roots/list`) go to the host
//! with the backend's `_meta`, under the host session's own ids, and the host's answer
//! (or error) comes back as it is; a cancel by the backend is passed on. The proxy
//! connects to the backend with the host's own capabilities for these, so a tool asks
//! exactly when the host could answer — never declined on the user's behalf.

use rmcp::model::{
    CancelledNotificationParam, ClientCapabilities, ClientResult, Implementation, InitializeRequestParams,
    ServerNotification, ServerRequest,
};
use rmcp::service::{PeerRequestOptions, RequestContext};
use rmcp::{ErrorData, RoleClient, ServiceError};

use super::front::Shared;

impl Shared {
    /// The client the proxy is to the backend: the host's capabilities for what the
    /// backend may ask (sampling, elicitation, roots), none else (the rest the proxy
    /// answers itself or has nothing to forward to).
    pub(crate) fn backend_client_info(&self) -> InitializeRequestParams {
        let mut capabilities = ClientCapabilities::default();
        if let Some(host) = self.host_capabilities() {
            #[allow(deprecated)] // sampling and roots (SEP-2577), still what hosts offer
            {
                capabilities.sampling = host.sampling;
                capabilities.roots = host.roots;
            }
            capabilities.elicitation = host.elicitation;
        }
        InitializeRequestParams::new(capabilities, Implementation::new("tether-mcp-proxy", env!("CARGO_PKG_VERSION")))
    }

    /// Send the backend's `request` to the host and wait for its answer: the host's
    /// errors come back as they are; a host that is gone or not yet initialized is an
    /// error saying so; a cancel by the backend cancels the host's request.
    pub(crate) async fn ask_host(
        &self,
        method: &str,
        request: ServerRequest,
        context: &RequestContext<RoleClient>,
    ) -> Result<ClientResult, ErrorData> {
        let Some(host) = self.host() else {
            return Err(ErrorData::internal_error(
                format!("`{method}` from the backend: the MCP host has not finished initializing"),
                None,
            ));
        };
        let options = PeerRequestOptions::no_options().with_meta(context.meta.clone());
        let handle = host.send_request_with_option(request, options).await.map_err(|e| {
            ErrorData::internal_error(format!("`{method}` could not be sent to the MCP host: {e}"), None)
        })?;
        let id = handle.id.clone();
        let answer = tokio::select! {
            answer = handle.await_response() => answer,
            _ = context.ct.cancelled() => {
                let cancel = CancelledNotificationParam::new(Some(id), Some("cancelled by the backend".into()));
                if let Err(e) = host.notify_cancelled(cancel).await {
                    tracing::debug!(error = %e, "cannot pass the backend's cancel on to the host");
                }
                return Err(ErrorData::internal_error(format!("`{method}` cancelled by the backend"), None));
            }
        };
        match answer {
            Ok(result) => Ok(result),
            Err(ServiceError::McpError(e)) => Err(e),
            Err(e) => Err(ErrorData::internal_error(format!("`{method}`: the MCP host did not answer: {e}"), None)),
        }
    }

    /// A notification of the backend the host is to see as it is (`notifications/elicitation/complete`, say).
    pub(crate) async fn pass_to_host(&self, notification: ServerNotification) {
        self.notify_host(notification).await;
    }
}

/// The host answered a request with a result of another kind.
pub(crate) fn unexpected_answer(method: &str, answer: &ClientResult) -> ErrorData {
    ErrorData::internal_error(format!("the MCP host answered `{method}` with an unexpected result: {answer:?}"), None)
}
