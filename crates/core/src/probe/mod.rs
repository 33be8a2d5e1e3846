//! Health probes: one attempt → [`ProbeOutcome`].

mod condition;
mod http;
mod mcp;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use regex::Regex;

pub use condition::{Condition, ConditionError, Op, lookup};
pub use http::HttpProbe;
pub use mcp::McpProbe;

use crate::relay::LogRelay;
use crate::runner::Endpoint;

/// The result of one probe attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Ready to serve.
    Ready {
        /// The final progress count, when the probe reads one.
        progress: Option<u64>,
    },
    /// Not yet; try again.
    Pending {
        /// Progress so far, when known.
        progress: Option<u64>,
        /// Why not yet (`connection refused`, `HTTP 500`, `loading_complete is false`).
        detail: String,
        /// The backend answered (its port is up), even if not ready.
        answered: bool,
    },
    /// It will never become ready: stop waiting.
    Failed {
        /// Why.
        reason: String,
    },
}

impl ProbeOutcome {
    /// A pending outcome where nothing answered.
    pub fn no_answer(detail: impl Into<String>) -> Self {
        ProbeOutcome::Pending { progress: None, detail: detail.into(), answered: false }
    }
}

/// What a probe may use.
#[derive(Debug, Clone, Copy)]
pub struct ProbeContext<'a> {
    /// Where the backend answers.
    pub endpoint: &'a Endpoint,
    /// Its output so far.
    pub logs: &'a Arc<LogRelay>,
    /// One HTTP client reused by every attempt (no proxy; per-attempt timeout set).
    pub client: &'a reqwest::Client,
}

/// One kind of readiness check.
///
/// # Contract
/// One call is one attempt; it must not loop or sleep. It is called under the
/// per-attempt timeout, so it may simply await.
#[async_trait]
pub trait HealthProbe: Send + Sync + std::fmt::Debug {
    /// Try once.
    async fn probe(&self, ctx: ProbeContext<'_>) -> ProbeOutcome;
    /// What it checks, for messages: `GET /health`, `tcp connect`.
    fn describe(&self) -> String;
    /// Whether `line` of the backend's output is the backend logging this probe's
    /// own request (uvicorn writes an access line per request): such a line must
    /// not trigger the next probe, or the probe would feed itself. Default: no.
    fn is_own_echo(&self, _line: &str) -> bool {
        false
    }
}

/// Ready once a TCP connection to the endpoint succeeds.
#[derive(Debug, Clone, Default)]
pub struct TcpProbe;

#[async_trait]
impl HealthProbe for TcpProbe {
    async fn probe(&self, ctx: ProbeContext<'_>) -> ProbeOutcome {
        match tokio::net::TcpStream::connect((ctx.endpoint.host.as_str(), ctx.endpoint.port)).await {
            Ok(_) => ProbeOutcome::Ready { progress: None },
            Err(e) => ProbeOutcome::no_answer(e.to_string()),
        }
    }

    fn describe(&self) -> String {
        "tcp connect".into()
    }
}

/// Ready once a line of output matches a regular expression.
#[derive(Debug)]
pub struct LogProbe {
    pattern: Regex,
    // The relay watched and its flag; a restart brings a new relay.
    watched: Mutex<Option<(u64, Arc<AtomicBool>)>>,
}

impl LogProbe {
    /// A probe for `pattern`.
    pub fn new(pattern: Regex) -> Self {
        LogProbe { pattern, watched: Mutex::new(None) }
    }
}

#[async_trait]
impl HealthProbe for LogProbe {
    async fn probe(&self, ctx: ProbeContext<'_>) -> ProbeOutcome {
        let key = ctx.logs.id();
        let hit = {
            let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            match &*watched {
                Some((k, hit)) if *k == key => Arc::clone(hit),
                _ => {
                    let hit = ctx.logs.watch_pattern(self.pattern.clone());
                    *watched = Some((key, Arc::clone(&hit)));
                    hit
                }
            }
        };
        if hit.load(Ordering::Acquire) {
            ProbeOutcome::Ready { progress: None }
        } else {
            ProbeOutcome::no_answer(format!("no output line matched /{}/ yet", self.pattern))
        }
    }

    fn describe(&self) -> String {
        format!("log line matching /{}/", self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::Stream;

    /// Issue 12, item 3: a relay used to be known by its address, which the next
    /// relay's allocation may reuse after a restart — and a stale "seen" flag then
    /// declared the new backend ready before it printed anything.
    #[tokio::test]
    async fn a_new_relay_is_never_taken_for_the_old_one() {
        let probe = LogProbe::new(Regex::new("^ready$").expect("a valid pattern"));
        let client = reqwest::Client::new();
        let endpoint = Endpoint { host: "127.0.0.1".into(), port: 9 };
        for round in 0..50 {
            let relay = LogRelay::with_defaults("restarted");
            let ctx = ProbeContext { endpoint: &endpoint, logs: &relay, client: &client };
            let fresh = probe.probe(ctx).await;
            assert!(matches!(fresh, ProbeOutcome::Pending { .. }), "round {round}: a fresh relay is ready: {fresh:?}");
            relay.attach(Stream::Stdout, &b"ready\n"[..]);
            let mut count = relay.line_count();
            count.wait_for(|n| *n >= 1).await.expect("the line is relayed");
            assert!(matches!(probe.probe(ctx).await, ProbeOutcome::Ready { .. }), "round {round}");
        }
    }
}
