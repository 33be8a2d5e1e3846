//! A fake runner for core's own tests: no process, a scripted backend.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tether_core::procs::ProcessIdentity;
use tether_core::{
    Endpoint, ExitStatus, Identity, LaunchSpec, LogRelay, Progress, Result, Runner, RunnerInfo, RunningBackend,
    StopOutcome, Stream,
};
use tokio::sync::watch;

/// A runner whose backends do nothing by themselves; the test drives them through
/// [`FakeControl`]: print lines, exit.
#[derive(Debug, Default, Clone)]
pub struct FakeRunner {
    started: Arc<Mutex<Vec<FakeControl>>>,
    /// Fail `check` with this message.
    pub unavailable: Option<String>,
    /// What `prepare` reports, in order (a pull's progress, say).
    pub prepare_steps: Vec<Progress>,
}

/// The test's handle on a fake backend.
#[derive(Debug, Clone)]
pub struct FakeControl {
    relay: Arc<LogRelay>,
    exit: watch::Sender<Option<ExitStatus>>,
    stops: Arc<Mutex<u32>>,
}

impl FakeControl {
    /// The backend prints a line.
    pub fn print(&self, stream: Stream, line: &str) {
        self.relay.push(stream, line.as_bytes());
    }

    /// The backend exits.
    pub fn exit(&self, status: ExitStatus) {
        // `send_replace`: the status must stick even when nobody is waiting yet.
        self.exit.send_replace(Some(status));
    }

    /// How many times `stop` was called.
    pub fn stop_calls(&self) -> u32 {
        *self.stops.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl FakeRunner {
    /// A fresh fake runner.
    pub fn new() -> Self {
        Self::default()
    }

    /// A runner whose `check` fails with `message` (the tool is missing).
    pub fn unavailable(message: impl Into<String>) -> Self {
        FakeRunner { unavailable: Some(message.into()), ..Self::default() }
    }

    /// A runner whose `prepare` reports `steps`.
    pub fn preparing(steps: Vec<Progress>) -> Self {
        FakeRunner { prepare_steps: steps, ..Self::default() }
    }

    /// Controls of every backend started so far.
    pub fn started(&self) -> Vec<FakeControl> {
        self.started.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl Runner for FakeRunner {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn check(&self) -> Result<RunnerInfo> {
        match &self.unavailable {
            Some(m) => Err(tether_core::Error::Unavailable { message: m.clone() }),
            None => Ok(RunnerInfo { tool_version: None, fingerprint: "fake".into() }),
        }
    }

    async fn prepare(&self, _spec: &LaunchSpec, progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<()> {
        for step in &self.prepare_steps {
            progress(step.clone());
        }
        Ok(())
    }

    async fn start(&self, spec: &LaunchSpec) -> Result<Box<dyn RunningBackend>> {
        let control = FakeControl {
            relay: LogRelay::with_defaults(spec.name.clone()),
            exit: watch::Sender::new(None),
            stops: Arc::new(Mutex::new(0)),
        };
        self.started.lock().unwrap_or_else(|p| p.into_inner()).push(control.clone());
        Ok(Box::new(FakeBackend { endpoint: spec.endpoint(), control }))
    }

    /// A recorded instance is a process group: its leader's group and descendants,
    /// through the gate.
    fn reclaim(&self) -> std::sync::Arc<dyn tether_core::Reclaim> {
        std::sync::Arc::new(tether_core::process::ProcessReclaim)
    }
}

#[derive(Debug)]
struct FakeBackend {
    endpoint: Endpoint,
    control: FakeControl,
}

#[async_trait]
impl RunningBackend for FakeBackend {
    fn identity(&self) -> Identity {
        Identity::Process { leader: ProcessIdentity { pid: 0, start_time: 0 }, backend_pid: None }
    }

    fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    fn logs(&self) -> Arc<LogRelay> {
        Arc::clone(&self.control.relay)
    }

    /// A test double serves on no real port: what it answers is its own by construction.
    async fn owns_endpoint(&self) -> bool {
        true
    }

    async fn wait(&self) -> ExitStatus {
        tether_core::runner::wait_exit(&self.control.exit.subscribe()).await
    }

    fn try_wait(&self) -> Option<ExitStatus> {
        *self.control.exit.borrow()
    }

    async fn stop(&self, _grace: Duration) -> Result<StopOutcome> {
        *self.control.stops.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.control.exit(ExitStatus::Signal(15));
        Ok(StopOutcome::Terminated { exit: ExitStatus::Signal(15) })
    }
}
