//! After ready: the liveness probe, and the restart policy with
//! exponential backoff, a cap, and a reset after a healthy period.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::{Backoff, BackoffIter};
use crate::error::{Error, ExitStatus, Result};
use crate::probe::{HealthProbe, ProbeContext, ProbeOutcome};
use crate::readiness::probe_client;
use crate::runner::RunningBackend;

/// When to start a backend again after it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never (the default): its end is the instance's end.
    #[default]
    No,
    /// When it exits with a non-zero status, is killed by a signal, or fails its liveness probe.
    OnFailure,
    /// Whenever it ends.
    Always,
}

impl std::str::FromStr for RestartPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "no" => Ok(RestartPolicy::No),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            other => Err(Error::config(format!("unknown restart policy `{other}`; use no, on-failure or always"))),
        }
    }
}

/// How a ready backend ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It exited.
    Exited(ExitStatus),
    /// It failed its liveness probe this many times in a row; the last reason.
    Unhealthy(String),
    /// A start failed (before ready); the error, as displayed.
    StartFailed(String),
    /// It was stopped to be started again, as asked.
    Restarted,
}

impl Ended {
    /// Whether this counts as a failure.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Ended::Exited(ExitStatus::Code(0)))
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exited(s) => write!(f, "exited ({s})"),
            Ended::Unhealthy(why) => write!(f, "failed its liveness probe: {why}"),
            Ended::StartFailed(why) => write!(f, "failed to start: {why}"),
            Ended::Restarted => write!(f, "was restarted as asked"),
        }
    }
}

/// The restart policy and its limits.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RestartOptions {
    /// When to restart.
    pub policy: RestartPolicy,
    /// At most this many restarts in a row (None: no limit).
    pub max_restarts: Option<u32>,
    /// Waits before each restart: grows from `initial` to `max`.
    pub backoff: Backoff,
    /// A backend that stayed up this long starts the backoff and the count over.
    pub reset_after: Duration,
}

impl Default for RestartOptions {
    fn default() -> Self {
        RestartOptions {
            policy: RestartPolicy::No,
            max_restarts: Some(5),
            backoff: Backoff { initial: Duration::from_millis(200), max: Duration::from_secs(30), factor: 2.0 },
            reset_after: Duration::from_secs(60),
        }
    }
}

impl RestartOptions {
    /// With a policy.
    pub fn with_policy(mut self, policy: RestartPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// With a limit.
    pub fn with_max_restarts(mut self, max: Option<u32>) -> Self {
        self.max_restarts = max;
        self
    }
}

/// Decides restarts: counts them, spaces them out, forgives after a healthy period.
#[derive(Debug)]
pub struct RestartTracker {
    options: RestartOptions,
    waits: BackoffIter,
    in_a_row: u32,
    total: u32,
}

impl RestartTracker {
    /// A tracker for `options`.
    pub fn new(options: RestartOptions) -> Self {
        RestartTracker { waits: options.backoff.iter(), options, in_a_row: 0, total: 0 }
    }

    /// Restarts so far.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Count a restart that was asked for (not decided by the policy).
    pub fn count_asked(&mut self) {
        self.total += 1;
    }

    /// The backend ended after running for `ran`: how long to wait before starting it
    /// again, or `None` if it must not be restarted.
    pub fn next(&mut self, ended: &Ended, ran: Duration) -> Option<Duration> {
        let wanted = match self.options.policy {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure => ended.is_failure(),
            RestartPolicy::Always => true,
        };
        if !wanted {
            return None;
        }
        if ran >= self.options.reset_after {
            self.in_a_row = 0;
            self.waits.reset(&self.options.backoff);
        }
        if self.options.max_restarts.is_some_and(|max| self.in_a_row >= max) {
            return None;
        }
        self.in_a_row += 1;
        self.total += 1;
        self.waits.next()
    }
}

/// A liveness probe: after ready, probe every `period`; `failures` failed probes in a
/// row end the backend as unhealthy.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// The probe.
    pub probe: Arc<dyn HealthProbe>,
    /// How often.
    pub period: Duration,
    /// How many failures in a row.
    pub failures: u32,
    /// Per-probe timeout.
    pub timeout: Duration,
}

/// Watch a ready backend until it exits or fails its liveness probe.
pub async fn watch(backend: &dyn RunningBackend, liveness: Option<&Liveness>) -> Result<Ended> {
    let Some(live) = liveness else {
        return Ok(Ended::Exited(backend.wait().await));
    };
    let client = probe_client(live.timeout)?;
    let endpoint = backend.endpoint();
    let logs = backend.logs();
    let ctx = ProbeContext { endpoint: &endpoint, logs: &logs, client: &client };
    let mut failed = 0u32;
    let mut next = Instant::now() + live.period;
    loop {
        tokio::select! {
            status = backend.wait() => return Ok(Ended::Exited(status)),
            _ = tokio::time::sleep_until(next) => {}
        }
        next += live.period;
        let outcome = tokio::time::timeout(live.timeout, live.probe.probe(ctx)).await;
        let why = match outcome {
            Ok(ProbeOutcome::Ready { .. }) => {
                failed = 0;
                continue;
            }
            Ok(ProbeOutcome::Pending { detail, .. }) => detail,
            Ok(ProbeOutcome::Failed { reason }) => reason,
            Err(_) => format!("{} took longer than {}", live.probe.describe(), crate::error::humanize(live.timeout)),
        };
        failed += 1;
        tracing::warn!(failed, of = live.failures, reason = %why, "liveness probe failed");
        if failed >= live.failures.max(1) {
            return Ok(Ended::Unhealthy(why));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(policy: RestartPolicy, max: Option<u32>) -> RestartOptions {
        RestartOptions::default().with_policy(policy).with_max_restarts(max)
    }

    const SHORT: Duration = Duration::from_millis(10);

    #[test]
    fn policies_decide_which_ends_restart() {
        let crash = Ended::Exited(ExitStatus::Code(1));
        let clean = Ended::Exited(ExitStatus::Code(0));
        let sick = Ended::Unhealthy("x".into());
        assert_eq!(RestartTracker::new(opts(RestartPolicy::No, None)).next(&crash, SHORT), None);
        let mut on_failure = RestartTracker::new(opts(RestartPolicy::OnFailure, None));
        assert_eq!(on_failure.next(&clean, SHORT), None);
        assert!(on_failure.next(&crash, SHORT).is_some());
        assert!(on_failure.next(&sick, SHORT).is_some());
        assert!(on_failure.next(&Ended::Exited(ExitStatus::Signal(9)), SHORT).is_some());
        assert!(RestartTracker::new(opts(RestartPolicy::Always, None)).next(&clean, SHORT).is_some());
    }

    #[test]
    fn backoff_grows_the_limit_holds_and_a_healthy_period_resets() {
        let crash = Ended::Exited(ExitStatus::Code(1));
        let mut t = RestartTracker::new(opts(RestartPolicy::Always, Some(3)));
        let waits: Vec<_> = (0..4).map(|_| t.next(&crash, SHORT)).collect();
        assert_eq!(
            waits,
            vec![
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(400)),
                Some(Duration::from_millis(800)),
                None
            ]
        );
        assert_eq!(t.total(), 3);
        // After a long healthy run it starts over.
        assert_eq!(t.next(&crash, Duration::from_secs(120)), Some(Duration::from_millis(200)));
        assert_eq!(t.total(), 4);
    }

    #[test]
    fn policy_names_parse_and_unknown_ones_say_the_choices() {
        assert_eq!("on-failure".parse::<RestartPolicy>().ok(), Some(RestartPolicy::OnFailure));
        let e = "sometimes".parse::<RestartPolicy>().expect_err("unknown");
        assert!(e.to_string().contains("no, on-failure or always"));
    }
}
