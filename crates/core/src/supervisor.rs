//! The [`Supervisor`]: one task that owns a backend's whole life — start, ready,
//! watch (exit and liveness), restart with backoff, stop — cancellable at every
//! await, publishing a typed [`SupervisorState`]. Fronts (`up`, `mcp-proxy`, a
//! library user) only send controls and render the state; nothing else loops.
//!
//! Modelled on watchexec's `supervisor::Job`: the task runs one `select!` per phase,
//! and a stop request wins over whatever the phase is waiting for — a start still
//! loading (the first one or a restart), a backoff wait, or a running backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use crate::error::{Error, ExitStatus, Result};
use crate::lifecycle::{Lifecycle, State};
use crate::restart::{Ended, Liveness, RestartOptions, RestartTracker};
use crate::runner::StopOutcome;

/// What a front knows of a ready backend, for its ready line.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ReadyInfo {
    /// The instance name.
    pub name: String,
    /// `http://host:port`.
    pub url: String,
    /// The port it answers on.
    pub port: u16,
    /// The backend's own pid, for a process backend.
    pub pid: Option<u32>,
    /// Its guard's pid (the process-group leader tether spawned), when it has one.
    pub guard_pid: Option<u32>,
    /// The runner's own part of its record (a container: `container_id`, `engine`).
    pub runner_fields: serde_json::Map<String, serde_json::Value>,
    /// The progress count at ready (e.g. skills loaded).
    pub progress: Option<u64>,
    /// Whether a running instance was reused rather than started.
    pub reused: bool,
    /// Whether it was started detached.
    pub detached: bool,
}

/// One start attempt, as the [`Starter`] gets it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Attempt {
    /// Restarts before this attempt (0 for the first start).
    pub restarts: u32,
    /// The lifecycle to drive while starting: its states reach the supervisor's
    /// [`SupervisorState::Starting`].
    pub lifecycle: Arc<Lifecycle>,
    /// Turns `true` when the supervisor is asked to stop: the start must stop its
    /// backend (with its grace) and return [`Error::Interrupted`].
    pub cancel: watch::Receiver<bool>,
}

/// Starts the backend once, until it is ready (or failed).
///
/// # Contract
/// - Drives `attempt.lifecycle` as it goes, so progress reaches the fronts.
/// - Honours `attempt.cancel` at every await: on `true` it stops what it started
///   and returns [`Error::Interrupted`].
/// - On any other failure nothing it started is left running.
#[async_trait]
pub trait Starter: Send + Sync {
    /// One start.
    async fn start(&self, attempt: &Attempt) -> Result<Box<dyn Supervised>>;
}

/// A ready backend under supervision.
#[async_trait]
pub trait Supervised: Send + Sync + std::fmt::Debug {
    /// What the fronts show once it is ready.
    fn ready_info(&self) -> ReadyInfo;
    /// Resolves when it exits by itself or fails its liveness probe.
    async fn watch(&self, liveness: Option<&Liveness>) -> Result<Ended>;
    /// Its last lines of output.
    fn tail(&self, lines: usize) -> Vec<String>;
    /// Stop it and everything it started.
    async fn stop(self: Box<Self>) -> Result<StopOutcome>;
    /// Leave it running (it was running before this supervisor reused it).
    fn release(self: Box<Self>);
    /// Whether a stop request must leave it running: it is not ours to stop (a
    /// reused detached instance).
    fn leave_running(&self) -> bool {
        false
    }
}

/// Where the supervised backend is. Published on a `watch` ([`Supervisor::subscribe`])
/// and, losslessly, as events ([`Supervisor::events`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SupervisorState {
    /// Being started: installed, pulled, spawned, loading.
    Starting {
        /// Where the start is (`preparing`, `starting`, `waiting_ready` with its progress).
        lifecycle: State,
        /// Restarts before this start.
        restarts: u32,
        /// When this start began.
        since: Instant,
    },
    /// Ready and serving.
    Ready {
        /// What it is.
        info: ReadyInfo,
        /// Restarts so far.
        restarts: u32,
        /// When this start began (for the elapsed time to ready).
        started: Instant,
    },
    /// It ended, or a start failed, and it will be started again at `at`.
    Restarting {
        /// How it ended: a crash after ready, a failed liveness probe, a failed start.
        ended: Ended,
        /// The error of a failed start.
        error: Option<Arc<Error>>,
        /// Restarts so far, this one included.
        restarts: u32,
        /// When the next start begins.
        at: Instant,
        /// Its last lines of output.
        stderr_tail: Vec<String>,
    },
    /// It ended, or a start failed, and will not be started again.
    Failed {
        /// How it ended.
        ended: Ended,
        /// The error of a failed start.
        error: Option<Arc<Error>>,
        /// Restarts so far.
        restarts: u32,
        /// Its last lines of output.
        stderr_tail: Vec<String>,
    },
    /// Stopped as asked.
    Stopped {
        /// How the stop went; `None` when nothing ran (stopped during a start or a
        /// backoff wait) or it was left running.
        outcome: Option<StopOutcome>,
        /// It was asked to stop while starting.
        during_start: bool,
        /// It was left running: a reused instance, not ours to stop.
        left_running: bool,
        /// A stop that failed, as displayed.
        error: Option<String>,
    },
}

impl SupervisorState {
    /// `starting`, `ready`, `restarting`, `failed`, `stopped`.
    pub fn name(&self) -> &'static str {
        match self {
            SupervisorState::Starting { .. } => "starting",
            SupervisorState::Ready { .. } => "ready",
            SupervisorState::Restarting { .. } => "restarting",
            SupervisorState::Failed { .. } => "failed",
            SupervisorState::Stopped { .. } => "stopped",
        }
    }

    /// Failed or stopped: the supervisor is done.
    pub fn is_final(&self) -> bool {
        matches!(self, SupervisorState::Failed { .. } | SupervisorState::Stopped { .. })
    }
}

/// The supervisor's settings.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SupervisorOptions {
    /// The restart policy, limit and backoff.
    pub restart: RestartOptions,
    /// A liveness probe after ready.
    pub liveness: Option<Liveness>,
    /// Whether a failed FIRST start is retried per the policy when the failure is not the
    /// backend's own verdict (an exit before ready, an unhealthy answer, a timeout, a spawn
    /// or runner failure are final either way; what remains is e.g. a state-file error).
    /// Restarts of a backend that was ready once are always judged by the policy.
    pub retry_first_start: bool,
}

impl SupervisorOptions {
    /// With a restart policy.
    pub fn with_restart(mut self, restart: RestartOptions) -> Self {
        self.restart = restart;
        self
    }

    /// With a liveness probe.
    pub fn with_liveness(mut self, liveness: Option<Liveness>) -> Self {
        self.liveness = liveness;
        self
    }

    /// Retrying a failed first start per the policy.
    pub fn retrying_first_start(mut self, retry: bool) -> Self {
        self.retry_first_start = retry;
        self
    }
}

/// One backend's supervisor: a task, its controls and its published state.
#[derive(Debug)]
pub struct Supervisor {
    state: watch::Receiver<SupervisorState>,
    events: Option<mpsc::UnboundedReceiver<SupervisorState>>,
    stop: watch::Sender<bool>,
    restart: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    /// Start supervising: the first start begins at once.
    pub fn spawn(starter: Arc<dyn Starter>, options: SupervisorOptions) -> Self {
        let initial = SupervisorState::Starting { lifecycle: State::Idle, restarts: 0, since: Instant::now() };
        let (state_tx, state) = watch::channel(initial);
        let (events_tx, events) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let restart = Arc::new(Notify::new());
        let job = Job {
            starter,
            options,
            publish: Publisher { state: state_tx, events: events_tx },
            stop: stop_rx,
            restart: Arc::clone(&restart),
            ever_ready: false,
        };
        let task = tokio::spawn(job.run());
        Supervisor { state, events: Some(events), stop, restart, task }
    }

    /// The current state, observed (it may skip intermediate states).
    pub fn subscribe(&self) -> watch::Receiver<SupervisorState> {
        self.state.clone()
    }

    /// Every state in order, losslessly (progress is throttled at the source). Only
    /// the first call gets the stream.
    pub fn events(&mut self) -> Option<mpsc::UnboundedReceiver<SupervisorState>> {
        self.events.take()
    }

    /// Ask it to stop: whatever it waits for (a start, a backoff, a running
    /// backend), the backend is stopped with its grace period.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stop at once, skipping what is left of the grace period (a second Ctrl-C): the task
    /// is aborted, and the backend it held is killed by its own backstop (`Drop`: SIGKILL
    /// to its group and descendants, through the safety gate). Resolves once that is done.
    pub async fn kill(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Ask it to stop the running backend and start it again (counts as a restart).
    pub fn restart(&self) {
        self.restart.notify_one();
    }

    /// Wait until it is done (failed, or stopped); its final state.
    pub async fn wait(mut self) -> SupervisorState {
        let _ = (&mut self.task).await;
        self.state.borrow().clone()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // The backstop: an abandoned supervisor stops its backend (each backend's
        // own Drop kills it if the task is aborted mid-stop).
        let _ = self.stop.send(true);
    }
}

struct Publisher {
    state: watch::Sender<SupervisorState>,
    events: mpsc::UnboundedSender<SupervisorState>,
}

impl Publisher {
    fn set(&self, s: SupervisorState) {
        let _ = self.events.send(s.clone());
        self.state.send_replace(s);
    }
}

/// The supervisor's task.
struct Job {
    starter: Arc<dyn Starter>,
    options: SupervisorOptions,
    publish: Publisher,
    stop: watch::Receiver<bool>,
    restart: Arc<Notify>,
    /// A start has reached ready at least once.
    ever_ready: bool,
}

/// How one run (a start and, if it became ready, its life) ended.
enum Run {
    /// Stopped as asked.
    Stopped { outcome: Option<StopOutcome>, during_start: bool, left_running: bool, error: Option<String> },
    /// Gone: to be restarted or failed per the policy.
    Gone { ended: Ended, error: Option<Arc<Error>>, ran: Duration, stderr_tail: Vec<String> },
}

impl Job {
    async fn run(mut self) {
        let mut tracker = RestartTracker::new(self.options.restart.clone());
        loop {
            let run = self.run_once(tracker.total()).await;
            let (ended, error, ran, stderr_tail) = match run {
                Run::Stopped { outcome, during_start, left_running, error } => {
                    self.publish.set(SupervisorState::Stopped { outcome, during_start, left_running, error });
                    return;
                }
                Run::Gone { ended, error, ran, stderr_tail } => (ended, error, ran, stderr_tail),
            };
            if ended == Ended::Restarted {
                tracker.count_asked();
                continue;
            }
            // A failed first start is final for `up` (it reports and exits); once the
            // backend has been ready, every end is judged by the policy.
            // The backend's own verdict on a start that never became ready (it exited, its
            // health answer can never turn ready, it timed out, uv failed) is final: a retry
            // runs into the same wall, and hides the reason behind "still starting".
            let verdict = !self.ever_ready && error.as_deref().is_some_and(is_backend_verdict);
            let retry = self.ever_ready || (self.options.retry_first_start && !verdict);
            let permanent = error.as_deref().is_some_and(is_permanent);
            let wait = if retry && !permanent { tracker.next(&ended, ran) } else { None };
            let Some(wait) = wait else {
                let restarts = tracker.total();
                self.publish.set(SupervisorState::Failed { ended, error, restarts, stderr_tail });
                return;
            };
            let at = Instant::now() + wait;
            let restarts = tracker.total();
            self.publish.set(SupervisorState::Restarting { ended, error, restarts, at, stderr_tail });
            tokio::select! {
                biased;
                _ = self.stop.wait_for(|s| *s) => {
                    let stopped =
                        SupervisorState::Stopped { outcome: None, during_start: false, left_running: false, error: None };
                    self.publish.set(stopped);
                    return;
                }
                _ = tokio::time::sleep_until(at) => {}
            }
        }
    }

    /// One start and, once ready, its life until it ends or a control arrives.
    async fn run_once(&mut self, restarts: u32) -> Run {
        let since = Instant::now();
        let (lifecycle, mut phases) = Lifecycle::with_events();
        let lifecycle = Arc::new(lifecycle);
        let attempt = Attempt { restarts, lifecycle, cancel: self.stop.clone() };
        let starting = self.starter.start(&attempt);
        tokio::pin!(starting);
        let started = loop {
            tokio::select! {
                biased;
                r = &mut starting => break r,
                Some(lifecycle) = phases.recv() => {
                    if !lifecycle.is_terminal() {
                        self.publish.set(SupervisorState::Starting { lifecycle, restarts, since });
                    }
                }
            }
        };
        let backend = match started {
            Ok(b) => b,
            Err(Error::Interrupted) => {
                return Run::Stopped { outcome: None, during_start: true, left_running: false, error: None };
            }
            Err(e) => {
                let stderr_tail = e.stderr_tail().to_vec();
                let ended = Ended::StartFailed(e.chain());
                return Run::Gone { ended, error: Some(Arc::new(e)), ran: Duration::ZERO, stderr_tail };
            }
        };
        // A stop that came while the start finished: honour it now.
        if *self.stop.borrow() {
            return stop(backend).await;
        }
        self.ever_ready = true;
        self.publish.set(SupervisorState::Ready { info: backend.ready_info(), restarts, started: since });
        let up_since = Instant::now();
        let ended = tokio::select! {
            biased;
            _ = self.stop.wait_for(|s| *s) => None,
            () = self.restart.notified() => Some(Ok(Ended::Restarted)),
            ended = backend.watch(self.options.liveness.as_ref()) => Some(ended),
        };
        let Some(ended) = ended else { return stop(backend).await };
        let ended = ended.unwrap_or_else(|e| Ended::Unhealthy(e.chain()));
        let stderr_tail = backend.tail(crate::readiness::TAIL_LINES);
        // Whatever it left (a group, a container) goes before the next start.
        if let Err(e) = backend.stop().await {
            tracing::warn!(error = %e.chain(), "cleaning up after the backend ended");
        }
        Run::Gone { ended, error: None, ran: up_since.elapsed(), stderr_tail }
    }
}

/// Stop (or leave running, when it is not ours) a backend at a stop request.
async fn stop(backend: Box<dyn Supervised>) -> Run {
    if backend.leave_running() {
        backend.release();
        return Run::Stopped { outcome: None, during_start: false, left_running: true, error: None };
    }
    match backend.stop().await {
        Ok(outcome) => Run::Stopped { outcome: Some(outcome), during_start: false, left_running: false, error: None },
        Err(e) => Run::Stopped { outcome: None, during_start: false, left_running: false, error: Some(e.chain()) },
    }
}

/// Errors a retry cannot fix: bad configuration, a name or port held by someone
/// else, a process the gate refused.
fn is_permanent(e: &Error) -> bool {
    matches!(
        e,
        Error::Config { .. }
            | Error::Unavailable { .. }
            | Error::Tool { .. }
            | Error::Refused { .. }
            | Error::AlreadyRunning { .. }
            | Error::RunningUnrecorded { .. }
    )
}

/// Errors that are the backend's (or its installer's) own answer to a start: it exited
/// before ready, its health answer said it never will be, it did not become ready in time,
/// it could not be spawned, or its runner failed (uv's resolution, a connect).
fn is_backend_verdict(e: &Error) -> bool {
    matches!(
        e,
        Error::EarlyExit { .. }
            | Error::Unhealthy { .. }
            | Error::Timeout { .. }
            | Error::Spawn { .. }
            | Error::Runner { .. }
    )
}

/// The exit code of how a backend ended, when it exited with one.
pub fn exit_code(ended: &Ended) -> Option<i32> {
    match ended {
        Ended::Exited(ExitStatus::Code(c)) => Some(*c),
        _ => None,
    }
}

/// A [`Starter`] for the core alone: [`launch`](crate::launch) of one runner, spec and
/// probe, with no state file (the front crate's `EnsureStarter` adds the name lock,
/// reuse, the stale sweep, the port guard and the record).
#[derive(Debug, Clone)]
pub struct LaunchStarter {
    runner: Arc<dyn crate::Runner>,
    spec: crate::LaunchSpec,
    probe: Arc<dyn crate::HealthProbe>,
    options: crate::LaunchOptions,
}

impl LaunchStarter {
    /// Each start launches `spec` with `runner` until `probe` says ready.
    pub fn new(
        runner: Arc<dyn crate::Runner>,
        spec: crate::LaunchSpec,
        probe: Arc<dyn crate::HealthProbe>,
        options: crate::LaunchOptions,
    ) -> Self {
        LaunchStarter { runner, spec, probe, options }
    }
}

#[async_trait]
impl Starter for LaunchStarter {
    async fn start(&self, attempt: &Attempt) -> Result<Box<dyn Supervised>> {
        let mut options = self.options.clone().with_lifecycle(Arc::clone(&attempt.lifecycle));
        options.cancel = Some(attempt.cancel.clone());
        let instance =
            crate::launch(Arc::clone(&self.runner), self.spec.clone(), Arc::clone(&self.probe), options).await?;
        Ok(Box::new(instance))
    }
}

#[async_trait]
impl Supervised for crate::Instance {
    fn ready_info(&self) -> ReadyInfo {
        let endpoint = self.endpoint();
        let (pid, guard_pid) = match self.identity() {
            crate::Identity::Process { leader, .. } => crate::procs::backend_and_guard(leader.pid),
            _ => (None, None),
        };
        ReadyInfo {
            name: self.logs().instance().to_string(),
            url: endpoint.url(),
            port: endpoint.port,
            pid,
            guard_pid,
            runner_fields: self.backend().record_fields(),
            progress: self.progress(),
            reused: false,
            detached: false,
        }
    }

    async fn watch(&self, liveness: Option<&Liveness>) -> Result<Ended> {
        crate::Instance::watch(self, liveness).await
    }

    fn tail(&self, lines: usize) -> Vec<String> {
        self.logs().tail(lines)
    }

    async fn stop(self: Box<Self>) -> Result<StopOutcome> {
        crate::Instance::stop(*self).await
    }

    fn release(self: Box<Self>) {
        crate::Instance::release(*self);
    }
}
