//! Where the backend is, as the front sees it: what the backend side publishes and the
//! front side reads.

use rmcp::{Peer, RoleClient};
use std::time::Instant;

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
        /// The backend's process, when it is one: whether it still lives tells a call
        /// sent after its end (never delivered) from one it ended under.
        process: Option<tether_core::procs::ProcessIdentity>,
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
        /// What the host is told: the instance, the reason, that it will not be retried.
        message: String,
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
