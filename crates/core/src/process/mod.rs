//! Process-based backends: spawn in an own process group (under the guard when it
//! is installed), stdin null, output to the relay; stop the whole group.

mod stop;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

pub use stop::{GroupTarget, kill_now, stop_group};

use crate::error::{Error, ExitStatus, Result};
use crate::guard;
use crate::procs::ProcessIdentity;
use crate::relay::{LogRelay, Stream};
use crate::runner::{Endpoint, Identity, LaunchSpec, RunningBackend, StopOutcome, Tethering};

pub use crate::port::INSTANCE_ENV;

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
            let mut c = tokio::process::Command::new(exe);
            c.arg(guard::GUARD_ARG);
            c.arg("--grace-ms").arg(spec.grace.as_millis().to_string());
            match &spec.tethering {
                Tethering::Detached { log_file, max_log_bytes, .. } => {
                    c.arg("--log-file").arg(log_file).arg("--log-max").arg(max_log_bytes.to_string());
                }
                _ => {
                    c.arg("--parent").arg(std::process::id().to_string());
                }
            }
            c.arg("--").arg(&cmd.program).args(&cmd.args);
            c
        }
        None => {
            let mut c = tokio::process::Command::new(&cmd.program);
            c.args(&cmd.args);
            c
        }
    };
    command.stdin(Stdio::null()).kill_on_drop(false);
    if detached {
        command.stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
        }
    } else {
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        if exe.is_none() {
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
                });
            }
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
    let mut child = command.spawn().map_err(|source| Error::Spawn { program: program.clone(), source })?;
    let pid = child.id().ok_or_else(|| Error::Spawn {
        program: program.clone(),
        source: std::io::Error::other("the child exited before its pid was read"),
    })?;
    let leader = ProcessIdentity::of(pid).unwrap_or(ProcessIdentity { pid, start_time: 0 });
    if let Some(out) = child.stdout.take() {
        widen_pipe(&out);
        relay.attach(Stream::Stdout, out);
    }
    if let Some(err) = child.stderr.take() {
        widen_pipe(&err);
        relay.attach(Stream::Stderr, err);
    }
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(s) => ExitStatus::from_std(s),
            Err(_) => ExitStatus::Unknown,
        };
        tx.send_replace(Some(status));
    });
    tracing::debug!(pid, program = %program, "backend spawned");
    Ok(ProcessBackend {
        target: GroupTarget { leader, pgid: pid },
        endpoint: spec.endpoint(),
        relay,
        exit: rx,
        startup_phase: cmd.startup_phase,
        released: AtomicBool::new(detached),
    })
}

/// A 1 MiB pipe (the usual unprivileged maximum) instead of 64 KiB: a backend that
/// writes in bursts keeps writing while the relay catches up. Best effort.
fn widen_pipe(pipe: &impl std::os::fd::AsFd) {
    let _ = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
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
}

impl ProcessBackend {
    /// The group to stop.
    pub fn target(&self) -> GroupTarget {
        self.target
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

    async fn wait(&self) -> ExitStatus {
        crate::runner::wait_exit(&self.exit).await
    }

    fn try_wait(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    fn release(&self) {
        self.released.store(true, Ordering::Release);
    }

    async fn stop(&self, grace: Duration) -> Result<StopOutcome> {
        let exit = self.exit.clone();
        let outcome = stop_group(self.target, grace, || *exit.borrow()).await;
        // Our own child: also wait until it is reaped so its status is known.
        let status = tokio::time::timeout(Duration::from_secs(1), self.wait()).await.ok();
        self.released.store(true, Ordering::Release);
        Ok(match (outcome, status) {
            (StopOutcome::Terminated { exit: ExitStatus::Unknown }, Some(s)) => {
                if s == ExitStatus::Signal(nix::sys::signal::Signal::SIGKILL as i32) {
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
            kill_now(self.target);
        }
    }
}
