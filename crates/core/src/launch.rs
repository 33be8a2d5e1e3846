//! `launch`: check → prepare → start → wait until ready, stopping the backend on any failure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::instrument;

use crate::error::Result;
use crate::lifecycle::{Lifecycle, Progress, State};
use crate::probe::HealthProbe;
use crate::readiness::{ReadinessOptions, probe_client, wait_ready};
use crate::relay::LogRelay;
use crate::runner::{Endpoint, Identity, LaunchSpec, Runner, RunnerInfo, RunningBackend, StopOutcome};

/// Called once the backend is spawned, before readiness (to record it).
pub type OnStarted = Arc<dyn Fn(&dyn RunningBackend) + Send + Sync>;

/// Options of [`launch`].
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct LaunchOptions {
    /// The readiness engine's settings.
    pub readiness: ReadinessOptions,
    /// A lifecycle to drive (to observe it from elsewhere); a new one if `None`.
    pub lifecycle: Option<Arc<Lifecycle>>,
    /// Called once the backend is spawned, before it is ready.
    pub on_started: Option<OnStarted>,
    /// Set to `true` to stop waiting: the backend is stopped (with its grace) and
    /// `launch` returns [`Error::Interrupted`](crate::Error::Interrupted).
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
    /// What the caller's own `runner.check()` reported: `launch` then does not check
    /// again (a uvx `--version` or a Docker `/version` round trip per start).
    pub checked: Option<RunnerInfo>,
    /// The caller already ran `runner.reclaim().sweep_stale` for this start (before its port
    /// guard): `launch` does not sweep again.
    pub swept: bool,
}

impl std::fmt::Debug for LaunchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchOptions").field("readiness", &self.readiness).finish_non_exhaustive()
    }
}

impl LaunchOptions {
    /// With readiness settings.
    pub fn with_readiness(mut self, r: ReadinessOptions) -> Self {
        self.readiness = r;
        self
    }

    /// Calling `f` once the backend is spawned.
    pub fn on_started(mut self, f: OnStarted) -> Self {
        self.on_started = Some(f);
        self
    }

    /// Driving this lifecycle.
    pub fn with_lifecycle(mut self, l: Arc<Lifecycle>) -> Self {
        self.lifecycle = Some(l);
        self
    }
}

/// A ready backend. Stop it with [`Instance::stop`]; dropping it kills it (a backstop).
#[derive(Debug)]
pub struct Instance {
    backend: Box<dyn RunningBackend>,
    lifecycle: Arc<Lifecycle>,
    info: RunnerInfo,
    grace: Duration,
    ready_in: Duration,
    progress: Option<u64>,
}

/// Check, prepare and start a backend with `runner`, then wait until `probe` says
/// it is ready. On any failure the backend is stopped before the error is returned.
#[instrument(skip_all, fields(instance = %spec.name, runner = runner.kind(), port = spec.port))]
pub async fn launch(
    runner: Arc<dyn Runner>,
    spec: LaunchSpec,
    probe: Arc<dyn HealthProbe>,
    opts: LaunchOptions,
) -> Result<Instance> {
    let lifecycle = opts.lifecycle.clone().unwrap_or_default();
    let t0 = Instant::now();
    let fail = |e: crate::Error| {
        lifecycle.advance(State::Failed { error: e.chain() });
        e
    };
    lifecycle.advance(State::Preparing { progress: Progress::phase("preparing") });
    let info = match opts.checked.clone() {
        Some(info) => info,
        None => runner.check().await.map_err(fail)?,
    };
    if !opts.swept {
        runner
            .reclaim()
            .sweep_stale(&spec.name, Some(spec.port).filter(|p| *p != 0), spec.grace)
            .await
            .map_err(fail)?;
    }
    let report = |p: Progress| lifecycle.advance(State::Preparing { progress: p });
    runner.prepare(&spec, &report).await.map_err(fail)?;
    let client = probe_client(opts.readiness.attempt_timeout).map_err(fail)?;
    lifecycle.advance(State::Starting);
    let backend = runner.start(&spec).await.map_err(fail)?;
    if let Some(f) = &opts.on_started {
        f(backend.as_ref());
    }
    let ready = async {
        tokio::select! {
            r = wait_ready(backend.as_ref(), probe.as_ref(), &client, &opts.readiness, &lifecycle) => r,
            () = cancelled(opts.cancel.clone()) => Err(crate::Error::Interrupted),
        }
    };
    match ready.await {
        Ok(progress) => {
            let url = backend.endpoint().url();
            lifecycle.advance(State::Ready { url, since: tokio::time::Instant::now().into_std() });
            Ok(Instance { backend, lifecycle, info, grace: spec.grace, ready_in: t0.elapsed(), progress })
        }
        Err(e) => {
            lifecycle.advance(State::Stopping);
            if let Err(stop_err) = backend.stop(spec.grace).await {
                tracing::warn!(error = %stop_err.chain(), "stopping the failed backend");
            }
            Err(fail(e))
        }
    }
}

/// Resolves once `cancel` says so; never without one.
async fn cancelled(cancel: Option<tokio::sync::watch::Receiver<bool>>) {
    match cancel {
        Some(mut rx) => {
            if rx.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

impl Instance {
    /// `http://host:port`.
    pub fn url(&self) -> String {
        self.backend.endpoint().url()
    }

    /// Where it answers.
    pub fn endpoint(&self) -> Endpoint {
        self.backend.endpoint()
    }

    /// Who it is.
    pub fn identity(&self) -> Identity {
        self.backend.identity()
    }

    /// Its lifecycle (subscribe to observe).
    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.lifecycle
    }

    /// Its output.
    pub fn logs(&self) -> Arc<LogRelay> {
        self.backend.logs()
    }

    /// What the runner reported when checked.
    pub fn runner_info(&self) -> &RunnerInfo {
        &self.info
    }

    /// From `launch` to ready.
    pub fn ready_in(&self) -> Duration {
        self.ready_in
    }

    /// The progress count at ready (e.g. skills loaded).
    pub fn progress(&self) -> Option<u64> {
        self.progress
    }

    /// The backend handle.
    pub fn backend(&self) -> &dyn RunningBackend {
        self.backend.as_ref()
    }

    /// Resolves when the backend exits by itself or fails its liveness probe; the
    /// lifecycle follows (`Stopped` or `Failed`).
    pub async fn watch(&self, liveness: Option<&crate::restart::Liveness>) -> Result<crate::restart::Ended> {
        use crate::restart::Ended;
        let ended = crate::restart::watch(self.backend.as_ref(), liveness).await?;
        self.lifecycle.advance(match &ended {
            Ended::Exited(status) => State::Stopped { exit: Some(*status), killed: false },
            other => State::Failed { error: other.to_string() },
        });
        Ok(ended)
    }

    /// Stop it (group and descendants, or container) with the spec's grace period.
    pub async fn stop(self) -> Result<StopOutcome> {
        self.lifecycle.advance(State::Stopping);
        let outcome = self.backend.stop(self.grace).await?;
        let exit = match outcome {
            StopOutcome::Terminated { exit } => Some(exit),
            StopOutcome::Killed => None,
        };
        self.lifecycle.advance(State::Stopped { exit, killed: outcome.was_killed() });
        Ok(outcome)
    }

    /// Leave it running: the handle is dropped without stopping (detached instances).
    pub fn release(self) {
        self.backend.release();
    }
}
