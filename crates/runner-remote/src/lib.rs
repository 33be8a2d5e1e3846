//! # tether-runner-remote
//!
//! Attaches to a backend someone else runs, by URL (`tether up --runner remote --url
//! http://HOST:PORT`). It starts nothing and never signals anything: "starting" is
//! handing back a [`RemoteBackend`] for the given address, and readiness, liveness and
//! "restarts" are the usual probe loops of the core against that address — so a lost
//! backend is re-probed ("reconnected") until it answers again, never restarted.
//!
//! Theory of operation, against the [`Runner`] contract:
//! - `check` only confirms the URL (parsed when the runner is built); no tool is needed.
//! - `start` spawns nothing; the backend's [`endpoint`](RunningBackend::endpoint) is the
//!   URL's host and port, and [`owns_endpoint`](RunningBackend::owns_endpoint) is true
//!   by definition (whoever answers there is the backend the user named).
//! - `wait` resolves only once the handle is stopped: there is no process to exit.
//! - `stop` and `stop_recorded` are no-ops that report an unknown exit: the backend is
//!   not ours, so it is left as it was.
//! - There is no output to relay: the log relay stays empty.
//!
//! ```no_run
//! # async fn demo() -> tether_core::Result<()> {
//! use std::sync::Arc;
//! use tether_core::{launch, LaunchOptions, LaunchSpec, probe::HttpProbe};
//! use tether_runner_remote::RemoteRunner;
//! let runner = RemoteRunner::new("http://10.0.0.5:8765")?;
//! let spec = LaunchSpec::new("search", runner.url().port());
//! let backend = launch(Arc::new(runner), spec, Arc::new(HttpProbe::new("/health")), LaunchOptions::default()).await?;
//! println!("ready at {}", backend.url());
//! backend.stop().await?; // detaches; the remote backend keeps running
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod url;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tether_core::state::Record;
use tether_core::{
    Endpoint, ExitStatus, Identity, LaunchSpec, LogRelay, Reclaim, Result, Runner, RunnerInfo, RunningBackend,
    StopOutcome,
};
use tokio::sync::watch;

pub use url::RemoteUrl;

/// A backend someone else runs, at a URL.
#[derive(Debug, Clone)]
pub struct RemoteRunner {
    url: RemoteUrl,
}

impl RemoteRunner {
    /// Attach to the backend at `url` (`http://HOST[:PORT][/PATH]`, see [`RemoteUrl`]).
    pub fn new(url: &str) -> Result<Self> {
        Ok(RemoteRunner { url: RemoteUrl::parse(url)? })
    }

    /// The URL it attaches to.
    pub fn url(&self) -> &RemoteUrl {
        &self.url
    }
}

/// What a remote "stop" reports: nothing was stopped, nothing exited that we know of.
const LEFT_ALONE: StopOutcome = StopOutcome::Terminated { exit: ExitStatus::Unknown };

#[async_trait]
impl Runner for RemoteRunner {
    fn kind(&self) -> &'static str {
        "remote"
    }

    async fn check(&self) -> Result<RunnerInfo> {
        Ok(RunnerInfo { tool_version: None, fingerprint: format!("remote {}", self.url) })
    }

    async fn start(&self, spec: &LaunchSpec) -> Result<Box<dyn RunningBackend>> {
        let (stopped, _) = watch::channel(false);
        Ok(Box::new(RemoteBackend { url: self.url.clone(), logs: LogRelay::with_defaults(spec.name.clone()), stopped }))
    }

    /// Someone else's backend, where it already answers.
    fn placement(&self) -> tether_core::runner::Placement {
        tether_core::runner::Placement::Attached
    }

    /// A remote record's acts never touch the backend: [`RemoteReclaim`].
    fn reclaim(&self) -> Arc<dyn Reclaim> {
        Arc::new(RemoteReclaim)
    }
}

/// The reclaiming role of the remote runner: a recorded remote backend is someone
/// else's, so stopping it is forgetting it, and its output is on its own machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct RemoteReclaim;

#[async_trait]
impl Reclaim for RemoteReclaim {
    /// Nothing to stop: the backend is not ours. The record is forgotten by the caller.
    async fn stop_recorded(&self, _record: &Record, _grace: Duration) -> Result<StopOutcome> {
        Ok(LEFT_ALONE)
    }

    /// Whether tether still watches it is its owner's business (the caller's default);
    /// the backend itself is not ours to judge by process.
    async fn recorded_running(&self, _record: &Record) -> Option<bool> {
        None
    }

    async fn recorded_logs(
        &self,
        record: &Record,
        _follow: bool,
        _out: &mut (dyn std::io::Write + Send),
    ) -> Result<bool> {
        Err(tether_core::Error::config(format!(
            "instance '{}' is a backend someone else runs at {}: its output is on its own machine, not with tether",
            record.name, record.url
        )))
    }
}

/// A remote backend, attached to: an address, no process.
#[derive(Debug)]
pub struct RemoteBackend {
    url: RemoteUrl,
    logs: Arc<LogRelay>,
    /// `true` once stopped (detached from): ends every `wait`.
    stopped: watch::Sender<bool>,
}

#[async_trait]
impl RunningBackend for RemoteBackend {
    fn identity(&self) -> Identity {
        Identity::Remote { url: self.url.to_string() }
    }

    fn endpoint(&self) -> Endpoint {
        self.url.endpoint()
    }

    fn logs(&self) -> Arc<LogRelay> {
        Arc::clone(&self.logs)
    }

    fn startup_phase(&self) -> String {
        format!("connecting to {}", self.url.origin())
    }

    /// No process to exit: resolves only once this handle is stopped.
    async fn wait(&self) -> ExitStatus {
        let mut rx = self.stopped.subscribe();
        let _ = rx.wait_for(|s| *s).await;
        ExitStatus::Unknown
    }

    fn try_wait(&self) -> Option<ExitStatus> {
        self.stopped.borrow().then_some(ExitStatus::Unknown)
    }

    /// Detach: the remote backend is left as it is; no signal, no request.
    async fn stop(&self, _grace: Duration) -> Result<StopOutcome> {
        self.stopped.send_replace(true);
        Ok(LEFT_ALONE)
    }

    /// Whoever answers at the URL is the backend the user named.
    async fn owns_endpoint(&self) -> bool {
        true
    }
}
