//! Process-based backends: spawn in an own process group (under the guard when it
//! is installed), stdin null, output to the relay; stop the whole group.
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

pub use crate::port::{INSTANCE_ENV, LEADER_ENV};

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
            let mut c = tokio::process::Command::new(guard::guard_program(exe));
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
            let mut c = tokio::process::Command::new(&cmd.program);
            c.args(&cmd.args);
            c
        }
    };
    command.stdin(Stdio::null()).kill_on_drop(false);
    // SAFETY: close_range, getrlimit and fcntl are async-signal-safe; this runs
    // between fork and exec only.
    unsafe {
        command.pre_exec(|| {
            cloexec_inherited_fds();
            Ok(())
        });
    }
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
        target: GroupTarget::group(leader, crate::safety::Claim::instance(spec.name.clone())),
        endpoint: spec.endpoint(),
        relay,
        exit: rx,
        startup_phase: cmd.startup_phase,
        released: AtomicBool::new(detached),
        log_file: match &spec.tethering {
            Tethering::Detached { log_file, .. } => Some(log_file.clone()),
            _ => None,
        },
    })
}

/// Mark every file descriptor from 3 up close-on-exec, so that the program exec'd
/// next gets only 0, 1 and 2. Meant for `pre_exec` (between fork and exec): it makes
/// async-signal-safe system calls only, and allocates nothing.
///
/// `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)` (Linux 5.11); on an older kernel
/// (`ENOSYS`, or `EINVAL` for the flag) each descriptor up to the `RLIMIT_NOFILE`
/// soft limit, at most 65536, gets `FD_CLOEXEC` by `fcntl`. Best effort: there is
/// nothing useful to do about a failure at this point.
pub(crate) fn cloexec_inherited_fds() {
    use nix::libc;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on this process's
    // descriptors; it closes nothing.
    let done = unsafe {
        libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC)
    } == 0;
    if !done {
        cloexec_by_fcntl();
    }
}

/// The fallback of [`cloexec_inherited_fds`] for kernels before 5.11.
fn cloexec_by_fcntl() {
    use nix::libc;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass, nothing else.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(65536)
    } else {
        65536
    };
    for fd in 3..max as libc::c_int {
        // SAFETY: F_GETFD/F_SETFD change only the close-on-exec flag; a closed
        // descriptor just fails with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
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
    use std::os::unix::fs::OpenOptionsExt;
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut f) = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(file) else {
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
        // the group stays below it; the group's full `/proc` scan would cost ~1 ms on
        // the path to "ready".
        crate::port::listeners_held_by(self.endpoint.port, self.target.leader, None)
    }

    async fn stop(&self, grace: Duration) -> Result<StopOutcome> {
        let exit = self.exit.clone();
        let outcome = stop_group(self.target.clone(), grace, || *exit.borrow()).await?;
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
            kill_now(&self.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;

    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};

    use super::*;

    fn inheritable_pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = nix::unistd::pipe2(OFlag::empty()).expect("pipe");
        let flags = FdFlag::from_bits_truncate(fcntl(&w, FcntlArg::F_GETFD).expect("F_GETFD"));
        assert!(!flags.contains(FdFlag::FD_CLOEXEC), "the test needs an inheritable fd");
        (r, w)
    }

    #[test]
    fn a_spawned_program_gets_only_stdio() {
        let (_r, w) = inheritable_pipe();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("300").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        // SAFETY: as in `spawn`.
        unsafe {
            cmd.pre_exec(|| {
                cloexec_inherited_fds();
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn sleep");
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
            .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        let _ = child.kill();
        let _ = child.wait();
        let mut fds = fds;
        fds.sort();
        assert_eq!(fds, ["0", "1", "2"], "the pipe's write end {} was inherited", w.as_raw_fd());
    }

    #[test]
    fn the_fcntl_fallback_marks_every_fd() {
        let (r, w) = inheritable_pipe();
        cloexec_by_fcntl();
        for fd in [&r, &w] {
            let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).expect("F_GETFD"));
            assert!(flags.contains(FdFlag::FD_CLOEXEC), "fd {} is still inheritable", fd.as_raw_fd());
        }
    }
}
