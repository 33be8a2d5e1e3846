//! The guard's part that is signals and waiting: arm the owner-death watch, start the
//! backend with a clean signal mask, and wait for its end, a stop, or the owner's
//! death; then stop everything below the guard with the grace period.
//!
//! Signals are blocked and waited for (`sigwait`), so this only holds in a process that
//! blocks them before any other thread starts (first thing in `main`).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid, getppid};

/// What woke a guard watching its owner with [`OwnerWatch::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The owner died (even by SIGKILL), or was already gone when the watch began.
    OwnerDied,
    /// A stop signal came: SIGTERM, SIGINT or SIGHUP.
    Stop(Signal),
}

/// The owner-death watch of a guard that starts no process of its own (the docker
/// runner's container guard): SIGUSR2 at the owner's death ([`watch_owner`]: the
/// parent-death signal on Linux, a kqueue watch on macOS), checked against the owner's
/// pid so that the exit of a mere thread of the owner — the one that spawned the guard —
/// is not taken for its death.
///
/// [`watch_owner`]: crate::sys::watch_owner
///
/// [`arm`](Self::arm) blocks the signals it waits for, so it must run before any
/// other thread of the process starts (first thing in `main`); threads started
/// later inherit the mask, which is what [`wait`](Self::wait) needs.
#[derive(Debug)]
pub struct OwnerWatch {
    set: SigSet,
    parent: i32,
    gone_at_start: bool,
}

impl OwnerWatch {
    /// Block SIGTERM, SIGINT, SIGHUP and SIGUSR2, ask for SIGUSR2 when the parent
    /// dies, and look whether `parent` (the owner's pid) is still the parent: if it
    /// died before the signal was armed, [`wait`](Self::wait) returns at once. The
    /// guard's stdout and stderr are not the owner's pipes (they are passed through),
    /// so their EOF is not watched.
    pub fn arm(parent: i32) -> std::io::Result<Self> {
        let mut set = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGUSR2] {
            set.add(s);
        }
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(std::io::Error::from)?;
        crate::sys::watch_owner(parent, Signal::SIGUSR2, &[])?;
        let gone_at_start = getppid().as_raw() != parent;
        Ok(OwnerWatch { set, parent, gone_at_start })
    }

    /// Wait until the owner dies or a stop signal comes.
    pub fn wait(&self) -> Wake {
        if self.gone_at_start {
            return Wake::OwnerDied;
        }
        loop {
            match self.set.wait() {
                Ok(Signal::SIGUSR2) if owner_still_there(Some(self.parent)) => continue,
                Ok(Signal::SIGUSR2) => return Wake::OwnerDied,
                Ok(sig) => return Wake::Stop(sig),
                Err(_) => continue,
            }
        }
    }
}

/// After a SIGUSR2 (the owner-death signal): whether the owner is in fact still there
/// (see [`crate::sys::owner_still_there`]).
fn owner_still_there(parent: Option<i32>) -> bool {
    parent.is_some_and(|p| crate::sys::owner_still_there(p, Signal::SIGUSR2))
}

fn watched_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGUSR2, Signal::SIGCHLD] {
        set.add(s);
    }
    set
}

/// A guard armed: its signals blocked, the owner watched, orphans adopted.
#[derive(Debug)]
pub struct Armed {
    set: SigSet,
    parent: Option<i32>,
}

/// Why a guard did not get to start its backend.
#[derive(Debug)]
pub enum NotArmed {
    /// The signals could not be blocked.
    Signals(std::io::Error),
    /// The owner was already gone: nothing is started.
    OwnerGone,
}

/// Arm the guard: block its signals before anything else (so none is lost), ask for
/// SIGUSR2 at the death of `parent` (the owner) when there is one — the owner's death,
/// or the EOF of its pipes, the guard's stdout and stderr, where the platform watches
/// those ([`crate::sys::watch_owner`]) — and become a child subreaper (or what stands in
/// for one), so orphaned descendants — even those that call `setsid` — stay below it.
pub fn arm(parent: Option<i32>) -> Result<Armed, NotArmed> {
    let set = watched_signals();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(|e| NotArmed::Signals(e.into()))?;
    let owner_pipes = [libc::STDOUT_FILENO, libc::STDERR_FILENO];
    if let Some(parent) = parent
        && (crate::sys::watch_owner(parent, Signal::SIGUSR2, &owner_pipes).is_err() || getppid().as_raw() != parent)
    {
        return Err(NotArmed::OwnerGone);
    }
    let _ = crate::sys::become_subreaper();
    Ok(Armed { set, parent })
}

/// How the backend under a guard ended.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    /// Whether the grace ran out and SIGKILL was needed.
    pub killed: bool,
    status: Option<WaitStatus>,
}

impl Ended {
    /// `exit N`, `signal N` or `unknown`.
    pub fn describe(&self) -> String {
        match self.status {
            Some(WaitStatus::Exited(_, code)) => format!("exit {code}"),
            Some(WaitStatus::Signaled(_, sig, _)) => format!("signal {}", sig as i32),
            _ => "unknown".into(),
        }
    }

    /// End this process the way the backend ended: the same code, or the same signal
    /// re-raised (returning 128 + N should the signal not end it).
    pub fn exit_like(&self) -> i32 {
        match self.status {
            Some(WaitStatus::Exited(_, code)) => code,
            Some(WaitStatus::Signaled(_, sig, _)) => {
                // Die of the same signal so the owner sees what the backend saw.
                // SAFETY: restoring the default disposition of a signal is always sound.
                let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
                let mut only = SigSet::empty();
                only.add(sig);
                let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
                let _ = nix::sys::signal::raise(sig);
                128 + sig as i32
            }
            _ => 1,
        }
    }
}

impl Armed {
    /// Start `command` as the backend: a clean signal mask, SIGKILL at the guard's death
    /// (should the guard be SIGKILLed too — a `kill -9` of the whole tree — the backend
    /// dies with it instead of running on under init), file descriptors 0–2 only.
    pub fn spawn(&self, command: &mut Command) -> std::io::Result<Child> {
        let guard_pid = getpid();
        // SAFETY: sigprocmask, prctl, getppid, close_range and fcntl are async-signal-safe;
        // this runs between fork and exec only.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(move || {
                sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(std::io::Error::from)?;
                // The signal follows the thread that forks, and the guard has only this
                // one (its log threads start later). A guard gone before this point is
                // seen here.
                crate::sys::die_with_parent(Signal::SIGKILL)?;
                if getppid() != guard_pid {
                    return Err(std::io::Error::other("the guard ended before the backend started"));
                }
                crate::sys::cloexec_inherited_fds();
                Ok(())
            });
        }
        command.spawn()
    }

    /// Wait for the backend `child` to end by itself, a stop signal, or the owner's
    /// death; then stop everything below the guard: `signal_all(SIGTERM)`, reap until
    /// nothing is left or `grace` passed, then `signal_all(SIGKILL)`. `signal_all` must
    /// never signal the guard itself.
    pub fn run_to_end(&self, child: &Child, grace: Duration, signal_all: impl Fn(Signal)) -> Ended {
        let main_pid = Pid::from_raw(child.id() as i32);
        let mut main_status: Option<WaitStatus> = None;
        let mut killed = false;
        loop {
            let sig = match self.set.wait() {
                Ok(s) => s,
                Err(_) => continue,
            };
            match sig {
                Signal::SIGCHLD => {
                    reap(main_pid, &mut main_status);
                    if main_status.is_some() {
                        // The backend ended by itself: take down what it left.
                        terminate(main_pid, &mut main_status, grace, &signal_all);
                        break;
                    }
                }
                Signal::SIGUSR2 => {
                    if owner_still_there(self.parent) {
                        // Only the spawning thread of the owner ended: watch again.
                        continue;
                    }
                    killed = terminate(main_pid, &mut main_status, grace, &signal_all);
                    break;
                }
                _ => {
                    killed = terminate(main_pid, &mut main_status, grace, &signal_all);
                    break;
                }
            }
        }
        Ended { killed, status: main_status }
    }
}

/// Reap every child that has exited, remembering the backend's status.
fn reap(main_pid: Pid, main_status: &mut Option<WaitStatus>) -> bool {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return false,
            Ok(status) => {
                if status.pid() == Some(main_pid) {
                    *main_status = Some(status);
                }
            }
            Err(Errno::EINTR) => continue,
            // No children at all: everything is gone — unless an orphan the platform could
            // not make our child (no subreaper) still lives.
            Err(_) => return !crate::sys::adopted_alive(),
        }
    }
}

/// SIGTERM everything below the guard, reap until nothing is left or the grace
/// period passed, then SIGKILL and reap the rest. Returns whether SIGKILL was needed.
fn terminate(
    main_pid: Pid,
    main_status: &mut Option<WaitStatus>,
    grace: Duration,
    signal_all: &impl Fn(Signal),
) -> bool {
    signal_all(Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if reap(main_pid, main_status) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    signal_all(Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if reap(main_pid, main_status) {
            return true;
        }
        signal_all(Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}
