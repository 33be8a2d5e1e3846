//! Process-based backends: spawn in an own process group (under the guard when it
//! is installed), stdin null, output to the relay; stop the whole group.
//!
//! A detached guard (`Tethering::Detached`: `up --detach`, a shared backend) is not even
//! a descendant of the process that starts it ([`sys::spawn_detached`]): a host that
//! stops a window's proxy by its whole process tree, group or session must not take
//! the backend other windows share. Its end is watched by pid and start time (a pidfd),
//! and how its backend ended is read from the guard's status file.
//!
//! A spawned process gets file descriptors 0, 1 and 2 only: any other descriptor the
//! caller left inheritable (a pipe a script waits on for EOF, say) is closed on exec,
//! so a detached instance never holds it open until `down`.

mod stop;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

pub use stop::{GroupTarget, kill_now, stop_group, survivors};

use crate::error::{Error, ExitStatus, Result};
use crate::guard;
use crate::procs::ProcessIdentity;
use crate::relay::{LogRelay, Stream};
use crate::runner::{Endpoint, Identity, LaunchSpec, RunningBackend, StopOutcome, Tethering};
use crate::sys;

pub use crate::marks::{INSTANCE_ENV, LEADER_ENV};

/// A program to run: argv, never a shell string.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessCommand {
    /// The program, resolved to a path.
    pub program: PathBuf,
    /// Its arguments, each passed verbatim.
    pub args: Vec<OsString>,
    /// Extra environment (on top of the spec's).
    pub env: Vec<(String, String)>,
    /// The phase shown until its port answers.
    pub startup_phase: String,
}

impl ProcessCommand {
    /// `program args…`.
    pub fn new(program: impl Into<PathBuf>, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        ProcessCommand {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            startup_phase: "starting".into(),
        }
    }

    /// With an environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// With the phase shown until the backend's port first answers.
    pub fn with_startup_phase(mut self, phase: impl Into<String>) -> Self {
        self.startup_phase = phase.into();
        self
    }
}

/// Spawn `cmd` as described by `spec` (tethering, env, cwd), relaying its output.
pub async fn spawn(cmd: ProcessCommand, spec: &LaunchSpec) -> Result<ProcessBackend> {
    let relay = LogRelay::with_defaults(spec.name.clone());
    let (exe, detached) = match &spec.tethering {
        Tethering::Guard { exe } | Tethering::Detached { exe, .. } => {
            (Some(exe.clone()), matches!(spec.tethering, Tethering::Detached { .. }))
        }
        Tethering::ParentDeathSignal => (None, false),
    };
    let mut command = match &exe {
        Some(exe) => {
            // `tether`'s small guard executable when it sits beside it; `exe` otherwise.
            let mut c = std::process::Command::new(guard::guard_program(exe));
            c.arg(guard::GUARD_ARG);
            c.arg("--grace-ms").arg(spec.grace.as_millis().to_string());
            match &spec.tethering {
                Tethering::Detached { log_file, max_log_bytes, lease, .. } => {
                    c.arg("--log-file").arg(log_file).arg("--log-max").arg(max_log_bytes.to_string());
                    if let Some((file, linger)) = lease {
                        c.arg("--lease").arg(file).arg("--linger-ms").arg(linger.as_millis().to_string());
                    }
                }
                _ => {
                    c.arg("--parent").arg(std::process::id().to_string());
                }
            }
            c.arg("--").arg(&cmd.program).args(&cmd.args);
            c
        }
        None => {
            let mut c = std::process::Command::new(&cmd.program);
            c.args(&cmd.args);
            c
        }
    };
    command.stdin(Stdio::null());
    sys::only_stdio(&mut command);
    if detached {
        command.stdout(Stdio::null()).stderr(Stdio::null());
    } else {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        sys::own_group(&mut command);
        if exe.is_none() {
            sys::die_with_parent_on_exec(&mut command, sys::Signal::SIGKILL);
        }
    }
    for (k, v) in spec.env.iter().chain(cmd.env.iter()) {
        command.env(k, v);
    }
    command.env(INSTANCE_ENV, &spec.name);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    let program = cmd.program.display().to_string();
    let log_file = match &spec.tethering {
        Tethering::Detached { log_file, .. } => Some(log_file.clone()),
        _ => None,
    };
    let (tx, rx) = watch::channel(None);
    let (pid, leader) = match &log_file {
        Some(log) => {
            // Not this process's child, nor in its group or session: a host that stops
            // a window's proxy by its whole tree, group or session does not reach the
            // backend other windows share. So it is not reaped here either: its end is
            // watched by its pidfd, and how the backend ended is what the guard left in
            // its status file (a previous run's is gone first).
            let _ = std::fs::remove_file(guard::status_path(log));
            let pid = sys::spawn_detached(&mut command)
                .map_err(|source| Error::Spawn { program: program.clone(), source })?;
            let handle = sys::ProcessHandle::open(pid);
            let leader = ProcessIdentity::of(pid).unwrap_or(ProcessIdentity { pid, start_time: 0 });
            let log = log.clone();
            tokio::spawn(async move {
                if handle.exited().await.is_err() {
                    // No pidfd: poll (a start time of 0, gone already, ends this at once).
                    while leader.is_alive() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                tx.send_replace(Some(guard::reported_exit(&log).unwrap_or(ExitStatus::Unknown)));
            });
            (pid, leader)
        }
        None => {
            let mut command = tokio::process::Command::from(command);
            command.kill_on_drop(false);
            let mut child = command.spawn().map_err(|source| Error::Spawn { program: program.clone(), source })?;
            let pid = child.id().ok_or_else(|| Error::Spawn {
                program: program.clone(),
                source: std::io::Error::other("the child exited before its pid was read"),
            })?;
            let leader = ProcessIdentity::of(pid).unwrap_or(ProcessIdentity { pid, start_time: 0 });
            if let Some(out) = child.stdout.take() {
                sys::widen_pipe(&out);
                relay.attach(Stream::Stdout, out);
            }
            if let Some(err) = child.stderr.take() {
                sys::widen_pipe(&err);
                relay.attach(Stream::Stderr, err);
            }
            tokio::spawn(async move {
                let status = match child.wait().await {
                    Ok(s) => ExitStatus::from_std(s),
                    Err(_) => ExitStatus::Unknown,
                };
                tx.send_replace(Some(status));
            });
            (pid, leader)
        }
    };
    tracing::debug!(pid, program = %program, "backend spawned");
    Ok(ProcessBackend {
        target: GroupTarget::group(leader, crate::safety::Claim::instance(spec.name.clone())),
        endpoint: spec.endpoint(),
        relay,
        exit: rx,
        startup_phase: cmd.startup_phase,
        released: AtomicBool::new(detached),
        log_file,
    })
}

/// Stop a recorded process instance: its leader (which tether always starts as the
/// leader of a process group of its own), that group and its descendants. The
/// record's `pgid` is not trusted; every signal passes the gate, which requires the
/// instance's fingerprint. A record without a leader names nothing to stop.
pub async fn stop_recorded(record: &crate::state::Record, grace: Duration) -> Result<StopOutcome> {
    let Some(leader) = record.leader else {
        return Ok(StopOutcome::Terminated { exit: ExitStatus::Unknown });
    };
    let target = GroupTarget::group(leader, crate::safety::Claim::instance(record.name.clone()));
    stop_group(target, grace, || None).await
}

/// The reclaiming role of every process runner (native, uvx, a library's own): a
/// recorded instance is its leader's process group and descendants, stopped through
/// the safety gate ([`stop_recorded`]); its output is its log file.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessReclaim;

#[async_trait]
impl crate::runner::Reclaim for ProcessReclaim {
    async fn stop_recorded(&self, record: &crate::state::Record, grace: Duration) -> Result<StopOutcome> {
        stop_recorded(record, grace).await
    }
}

/// What of a recorded process instance still lives and is provably ours (see
/// [`survivors`]): its leader, its group, their descendants, and — once the leader is
/// dead — every process pinned to it by [`LEADER_ENV`] (what a guard SIGKILLed with its
/// owner left outside the group). Empty for a record without a leader (a container).
/// Nothing is signalled.
pub fn recorded_survivors(record: &crate::state::Record) -> Vec<ProcessIdentity> {
    match record.leader {
        Some(leader) => survivors(&GroupTarget::group(leader, crate::safety::Claim::instance(record.name.clone()))),
        None => Vec::new(),
    }
}

/// The last `lines` non-empty lines of a log file (its last 64 KiB), opened without
/// following a link; none when it cannot be read.
fn last_lines_of(file: &std::path::Path, lines: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut f) = sys::private::no_follow(std::fs::OpenOptions::new().read(true)).open(file) else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    if f.seek(SeekFrom::Start(len.saturating_sub(WINDOW))).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if f.take(WINDOW).read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut all: Vec<String> = text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    // A cut first line is a fragment when the window did not start at the file's start.
    if len > WINDOW && !all.is_empty() {
        all.remove(0);
    }
    let skip = all.len().saturating_sub(lines);
    all.split_off(skip)
}

/// A backend running as a process group.
#[derive(Debug)]
pub struct ProcessBackend {
    target: GroupTarget,
    endpoint: Endpoint,
    relay: Arc<LogRelay>,
    exit: watch::Receiver<Option<ExitStatus>>,
    startup_phase: String,
    // Set once stopped, or for detached backends: Drop must not kill then.
    released: AtomicBool,
    /// A detached backend's log file: where its last lines are (its relay gets none).
    log_file: Option<PathBuf>,
}

impl ProcessBackend {
    /// The group to stop.
    pub fn target(&self) -> &GroupTarget {
        &self.target
    }
}

#[async_trait]
impl RunningBackend for ProcessBackend {
    fn identity(&self) -> Identity {
        Identity::Process { leader: self.target.leader, backend_pid: None }
    }

    fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    fn logs(&self) -> Arc<LogRelay> {
        Arc::clone(&self.relay)
    }

    fn startup_phase(&self) -> String {
        self.startup_phase.clone()
    }

    fn last_lines(&self, lines: usize) -> Vec<String> {
        match &self.log_file {
            Some(file) => last_lines_of(file, lines),
            None => self.relay.tail(lines),
        }
    }

    async fn wait(&self) -> ExitStatus {
        crate::runner::wait_exit(&self.exit).await
    }

    fn try_wait(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    fn release(&self) {
        self.released.store(true, Ordering::Release);
    }

    async fn owns_endpoint(&self) -> bool {
        // Descendants suffice: the guard is a subreaper, so even a grandchild that left
        // the group stays below it; the group's full process-table scan would cost ~1 ms on
        // the path to "ready".
        crate::port::listeners_held_by(self.endpoint.port, self.target.leader, None)
    }

    async fn stop(&self, grace: Duration) -> Result<StopOutcome> {
        let exit = self.exit.clone();
        let outcome = stop_group(self.target.clone(), grace, || *exit.borrow()).await?;
        // Also wait until it has ended (our own child: reaped) so its status is known.
        let status = tokio::time::timeout(Duration::from_secs(1), self.wait()).await.ok();
        self.released.store(true, Ordering::Release);
        Ok(match (outcome, status) {
            (StopOutcome::Terminated { exit: ExitStatus::Unknown }, Some(s)) => {
                if s == ExitStatus::Signal(sys::Signal::SIGKILL as i32) {
                    StopOutcome::Killed
                } else {
                    StopOutcome::Terminated { exit: s }
                }
            }
            (o, _) => o,
        })
    }
}

impl Drop for ProcessBackend {
    fn drop(&mut self) {
        if !self.released.load(Ordering::Acquire) {
            kill_now(&self.target);
        }
    }
}
