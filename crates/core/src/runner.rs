//! The runner contract: how a backend is checked, prepared, started and stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{ExitStatus, Result};
use crate::lifecycle::Progress;
use crate::relay::LogRelay;

/// Where a backend answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    /// Host or address to reach it on.
    pub host: String,
    /// The port actually reachable (the host port, for containers).
    pub port: u16,
}

impl Endpoint {
    /// `http://host:port` (IPv6 addresses bracketed).
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

/// What identifies a running backend safely, so that no other process is ever signalled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Identity {
    /// A process group we spawned.
    Process {
        /// The process-group leader we spawned (the guard, or the backend itself).
        leader: crate::procs::ProcessIdentity,
        /// The backend's own pid when it differs from the leader.
        backend_pid: Option<u32>,
    },
    /// Something its runner keeps and reaches by id, not a process of this machine
    /// (a container): only that runner acts on it.
    Kept {
        /// Its id (a container id).
        id: String,
    },
    /// A backend someone else runs, attached to by URL: nothing of it is ours to
    /// signal, stop or remove.
    Remote {
        /// The URL it was given as (`http://host:port[/path]`).
        url: String,
    },
}

/// Where a runner's backends listen, which decides the port guard of a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Placement {
    /// On this machine: a fixed port is guarded (our leftovers stopped, a foreign
    /// holder refused), `auto` is a free port of this machine.
    #[default]
    Local,
    /// On another machine's engine (a remote Docker engine): this machine's port guard
    /// sees nothing there; the engine refuses a taken port and picks an automatic one
    /// (port 0, read back by the runner).
    RemoteEngine,
    /// Someone else's backend, attached to where it already answers: nothing is
    /// started, stopped or guarded.
    Attached,
}

/// How the backend is tied to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tethering {
    /// Under a guard process (`program __tether-guard …`): the owner's death, even by
    /// SIGKILL, takes the backend and all its descendants down.
    Guard {
        /// The executable that runs the guard (this program, or the `tether` binary).
        exe: PathBuf,
    },
    /// The parent-death signal on the direct child only (a library user who did not
    /// install the guard hook); descendants are caught by the next start's sweep.
    ParentDeathSignal,
    /// Deliberately not tied: it outlives its owner (`up --detach`). Output goes to
    /// `log_file`, bounded to `max_log_bytes` with one rotated file.
    Detached {
        /// The log file.
        log_file: PathBuf,
        /// Rotate when it grows past this.
        max_log_bytes: u64,
        /// The guard executable, which writes the log file and stops the group on `down`.
        exe: PathBuf,
        /// Shared by leases ([`crate::lease`]): the lease file, and how long the backend
        /// lingers once the last lease is gone before its guard stops it. `None`: it
        /// runs until `down`.
        lease: Option<(PathBuf, Duration)>,
    },
}

/// What to start: the runner-independent part.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LaunchSpec {
    /// Instance name (state file, container name, log target).
    pub name: String,
    /// Host the backend listens on and is probed at.
    pub host: String,
    /// Port, already resolved (never "auto" here).
    pub port: u16,
    /// Arguments for the backend, `{port}` and `{host}` not yet substituted.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// How the backend is tied to its owner.
    pub tethering: Tethering,
    /// Grace period between SIGTERM and SIGKILL.
    pub grace: Duration,
}

impl LaunchSpec {
    /// A spec with defaults: host 127.0.0.1, no args, parent-death-signal tethering, 5 s grace.
    pub fn new(name: impl Into<String>, port: u16) -> Self {
        LaunchSpec {
            name: name.into(),
            host: "127.0.0.1".into(),
            port,
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            tethering: Tethering::ParentDeathSignal,
            grace: Duration::from_secs(5),
        }
    }

    /// With backend arguments.
    pub fn with_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// With a host.
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// With an environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// With a working directory.
    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// With a tethering mode.
    pub fn with_tethering(mut self, tethering: Tethering) -> Self {
        self.tethering = tethering;
        self
    }

    /// With a grace period.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// `args` with `{port}` and `{host}` substituted.
    pub fn substituted_args(&self) -> Vec<String> {
        let port = self.port.to_string();
        self.args.iter().map(|a| a.replace("{port}", &port).replace("{host}", &self.host)).collect()
    }

    /// The endpoint the backend is expected on.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint { host: self.host.clone(), port: self.port }
    }
}

/// What a runner's tool is, once checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerInfo {
    /// The tool's version (`uv 0.5.1`, Docker API 1.47), when it has one.
    pub tool_version: Option<String>,
    /// What will be launched, for reuse checks and `status` (program path + args, package==version, image).
    pub fingerprint: String,
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "how")]
pub enum StopOutcome {
    /// It ended within the grace period after SIGTERM (or had already exited).
    Terminated {
        /// Its exit status.
        exit: ExitStatus,
    },
    /// It had to be killed after the grace period.
    Killed,
}

impl StopOutcome {
    /// Whether SIGKILL was needed.
    pub fn was_killed(&self) -> bool {
        matches!(self, StopOutcome::Killed)
    }
}

/// Resolves once the exit status published on `exit` is known (`Unknown` if the
/// publisher went away without one): the `wait` of every runner's backend.
pub async fn wait_exit(exit: &tokio::sync::watch::Receiver<Option<ExitStatus>>) -> ExitStatus {
    let mut rx = exit.clone();
    match rx.wait_for(Option::is_some).await {
        Ok(s) => s.unwrap_or(ExitStatus::Unknown),
        Err(_) => ExitStatus::Unknown,
    }
}

/// A way to run a backend: a preinstalled program, `uvx`, a container.
///
/// # Contract
/// - `check` fails fast, before anything starts, with an [`Error::Unavailable`](crate::Error)
///   that says what is missing and how to get it.
/// - `start` returns once the backend is spawned (not ready); its output is relayed to
///   the returned backend's [`LogRelay`]; nothing is left running if it fails.
/// - Every runner passes the conformance checks of `tether-testkit`.
#[async_trait]
pub trait Runner: Send + Sync + std::fmt::Debug {
    /// `native`, `uvx`, `docker`.
    fn kind(&self) -> &'static str;
    /// The tool is present and usable.
    async fn check(&self) -> Result<RunnerInfo>;
    /// Install or pull what is needed for `spec`, reporting progress: the download or
    /// install that a first start may need, bounded by the runner's own deadline, so
    /// that the readiness timeout counts start → ready only. Default: nothing to do.
    async fn prepare(&self, _spec: &LaunchSpec, _progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<()> {
        Ok(())
    }
    /// Start the backend.
    async fn start(&self, spec: &LaunchSpec) -> Result<Box<dyn RunningBackend>>;

    /// Where its backends listen (default: on this machine).
    fn placement(&self) -> Placement {
        Placement::Local
    }

    /// Its other role: acting on the instances it recorded (`down`, `status`, `logs`,
    /// the stale sweep), with this runner's settings (a container runner: its engine).
    /// No default: a new runner must say how its recorded instances are reached (a
    /// process runner's are its process groups: `tether_core::process::ProcessReclaim`).
    fn reclaim(&self) -> Arc<dyn Reclaim>;
}

/// A runner's second role: acting on a backend it recorded, of this process or of
/// another (`down`, `status`, `logs`, the stale sweep) — where the starting role
/// ([`Runner`]) needs a configuration (a program, a package, an image), this needs
/// only the record. A record is a claim, not proof: every act checks it first.
#[async_trait]
pub trait Reclaim: Send + Sync + std::fmt::Debug {
    /// Before a start of `name` (on `port`, when fixed): remove this runner's stale
    /// instances — those whose recorded owner is provably gone — that the state file
    /// cannot see; a live one of `name` elsewhere is an error. Called before the port
    /// guard, since a stale container holds its port through the engine's proxy.
    /// Default: nothing (a process backend's leftovers are the state file's sweep's).
    async fn sweep_stale(&self, _name: &str, _port: Option<u16>, _grace: Duration) -> Result<()> {
        Ok(())
    }

    /// Stop (and remove) an instance this runner started and recorded: `down`, the
    /// stale sweep. A process runner stops the recorded leader's group and descendants
    /// through the safety gate (`tether_core::process::stop_recorded`: a record is a
    /// claim, not proof); a container runner its container.
    async fn stop_recorded(&self, record: &crate::state::Record, grace: Duration) -> Result<StopOutcome>;

    /// Whether a recorded instance runs, when the runner can tell better than the
    /// recorded processes (a container: its engine). Default: `None`.
    async fn recorded_running(&self, _record: &crate::state::Record) -> Option<bool> {
        None
    }

    /// Write a recorded instance's output to `out` (with `follow`, until it ends)
    /// when the runner keeps it (a container's, in its engine): `Ok(true)`. Default:
    /// `Ok(false)`, the caller reads the instance's log file.
    async fn recorded_logs(
        &self,
        _record: &crate::state::Record,
        _follow: bool,
        _out: &mut (dyn std::io::Write + Send),
    ) -> Result<bool> {
        Ok(false)
    }

    /// Whether a failure to stop a stale record of this runner must stop the start
    /// that found it: `true` when the backend may run on out of the state file's
    /// sight (a container whose engine cannot be reached), so the record — the only
    /// way back to it — is kept and nothing starts in its place. Default: `false`
    /// (a process backend's survivors are found by their fingerprint).
    fn keeps_unstoppable(&self, _record: &crate::state::Record) -> bool {
        false
    }
}

/// A started backend.
///
/// # Contract
/// `wait` may be called any number of times, concurrently; it resolves once the
/// backend has exited. `stop` stops the backend and everything it started (its
/// process group and descendants, or its container), waiting up to `grace` before
/// killing, and reports which happened; calling it on an exited backend still cleans
/// up what it left. Dropping without `stop` still kills (a backstop, not the API).
#[async_trait]
pub trait RunningBackend: Send + Sync + std::fmt::Debug {
    /// Who it is.
    fn identity(&self) -> Identity;
    /// Where it answers.
    fn endpoint(&self) -> Endpoint;
    /// Its output.
    fn logs(&self) -> Arc<LogRelay>;
    /// The phase shown while it is up but not yet answering (`starting`, `installing via uv`).
    fn startup_phase(&self) -> String {
        "starting".into()
    }
    /// Its last `lines` lines of output, for an error message. Default: the relay's tail
    /// (a detached process backend, whose output goes to its log file, reads that).
    fn last_lines(&self, lines: usize) -> Vec<String> {
        self.logs().tail(lines)
    }
    /// Resolves when it has exited.
    async fn wait(&self) -> ExitStatus;
    /// Its exit status if it has exited.
    fn try_wait(&self) -> Option<ExitStatus>;
    /// Stop it and everything it started.
    async fn stop(&self, grace: Duration) -> Result<StopOutcome>;
    /// Leave it running when this handle is dropped (a detached instance). Default: nothing.
    fn release(&self) {}
    /// Whether the listener that answers on [`endpoint`](Self::endpoint) is this
    /// backend's own: "ready" counts only when OUR backend answered, never a neighbour
    /// that holds the port (or took it after our backend failed to bind).
    ///
    /// A process backend checks that the port's listening socket is held by a process
    /// of its group or a descendant; a container backend, whose published port is held
    /// by the engine's proxy, checks that its container is still running; an attached
    /// remote backend, which is nobody's process here, owns what its URL names. No
    /// default: a new runner must say how it tells (an unchecked `true` would let a
    /// neighbour's answer count as ready).
    async fn owns_endpoint(&self) -> bool;
    /// The runner's own part of this backend's record ([`Record::runner_fields`](crate::state::Record::runner_fields)),
    /// which its [`Reclaim`] role reads back (a container: its id and engine). Default:
    /// nothing (a process backend is recorded by its leader).
    fn record_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
    /// The detached process that stops this backend once no front holds a lease (a
    /// shared container's lease-mode guard), recorded so that a later front can tell
    /// whether anyone still watches the leases. Default: `None` (no such process).
    fn lease_guard(&self) -> Option<crate::procs::ProcessIdentity> {
        None
    }
}
