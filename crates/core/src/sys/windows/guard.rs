//! The guard's part that is waiting: arm the owner watch, start the backend inside the
//! guard's own kill-on-close job, and wait for its end, a stop, or the owner's death; then
//! stop everything below the guard with the grace period.
//!
//! Windows has no signals to block and wait for: every wake — the owner's end (a wait on
//! its process handle), a console control event (`SetConsoleCtrlHandler`), the backend's
//! end (a wait on its handle), or the guard's own stop request ([`post_stop`], what
//! `kill_self` does here) — is posted to one queue that the guard waits on.

use std::os::windows::io::AsRawHandle;
use std::process::{Child, Command};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::Threading::{INFINITE, PROCESS_SYNCHRONIZE, WaitForSingleObject};

use super::Signal;

/// What woke a guard watching its owner with [`OwnerWatch::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The owner ended (even by `TerminateProcess`), or was already gone when the watch
    /// began.
    OwnerDied,
    /// A stop request came: a console control event, or [`post_stop`].
    Stop(Signal),
}

/// What the queue carries.
enum Event {
    Wake(Wake),
    BackendEnded,
}

/// The queue's sending end, once a watch is armed.
static QUEUE: OnceLock<Mutex<Sender<Event>>> = OnceLock::new();

fn post(event: Event) -> bool {
    QUEUE.get().and_then(|q| q.lock().ok()).is_some_and(|q| q.send(event).is_ok())
}

/// Post a stop request to this process's armed guard; `false` when none is armed.
pub fn post_stop(sig: Signal) -> bool {
    post(Event::Wake(Wake::Stop(sig)))
}

unsafe extern "system" fn on_console_event(kind: u32) -> windows_sys::core::BOOL {
    // CTRL_C_EVENT 0, CTRL_BREAK_EVENT 1, CTRL_CLOSE_EVENT 2, LOGOFF 5, SHUTDOWN 6.
    let sig = if kind == 0 { Signal::SIGINT } else { Signal::SIGTERM };
    i32::from(post_stop(sig))
}

/// Create the queue and catch console control events into it; with `parent`, a thread
/// waits for the owner's end and posts it. `Err(OwnerGone)` when the owner cannot be
/// opened (it is gone).
fn watch(parent: Option<i32>) -> Result<Receiver<Event>, NotArmed> {
    let (tx, rx) = channel();
    QUEUE.set(Mutex::new(tx)).map_err(|_| NotArmed::Signals(std::io::Error::other("the guard is armed twice")))?;
    // SAFETY: the handler is a plain function that only posts to the queue.
    if unsafe { windows_sys::Win32::System::Console::SetConsoleCtrlHandler(Some(on_console_event), 1) } == 0 {
        return Err(NotArmed::Signals(std::io::Error::last_os_error()));
    }
    if let Some(parent) = parent {
        let owner = u32::try_from(parent).ok().and_then(|p| super::Process::open(p, PROCESS_SYNCHRONIZE));
        let Some(owner) = owner else { return Err(NotArmed::OwnerGone) };
        std::thread::spawn(move || {
            // SAFETY: the handle is open (owned by this thread) for the wait's duration.
            unsafe { WaitForSingleObject(owner.raw(), INFINITE) };
            post(Event::Wake(Wake::OwnerDied));
        });
    }
    Ok(rx)
}

/// The owner watch of a guard that starts no process of its own (the docker runner's
/// container guard).
#[derive(Debug)]
pub struct OwnerWatch {
    rx: Mutex<Receiver<Event>>,
}

impl OwnerWatch {
    /// Watch `parent` (the owner's pid) and console control events. An owner already
    /// gone makes [`wait`](Self::wait) return at once.
    pub fn arm(parent: i32) -> std::io::Result<Self> {
        let rx = match watch(Some(parent)) {
            Ok(rx) => rx,
            Err(NotArmed::OwnerGone) => {
                let (tx, rx) = channel();
                let _ = tx.send(Event::Wake(Wake::OwnerDied));
                rx
            }
            Err(NotArmed::Signals(e)) => return Err(e),
        };
        Ok(OwnerWatch { rx: Mutex::new(rx) })
    }

    /// Wait until the owner dies or a stop request comes.
    pub fn wait(&self) -> Wake {
        let Ok(rx) = self.rx.lock() else { return Wake::OwnerDied };
        loop {
            match rx.recv() {
                Ok(Event::Wake(w)) => return w,
                Ok(Event::BackendEnded) => continue,
                Err(_) => return Wake::OwnerDied,
            }
        }
    }
}

/// A guard armed: its wakes queued, the owner watched, its own job entered.
#[derive(Debug)]
pub struct Armed {
    rx: Mutex<Receiver<Event>>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Wake(w) => write!(f, "{w:?}"),
            Event::BackendEnded => f.write_str("BackendEnded"),
        }
    }
}

/// Why a guard did not get to start its backend.
#[derive(Debug)]
pub enum NotArmed {
    /// The wakes could not be set up (the console handler, or the job).
    Signals(std::io::Error),
    /// The owner was already gone: nothing is started.
    OwnerGone,
}

/// Arm the guard: queue its wakes, watch `parent` (the owner) when there is one, and
/// enter a kill-on-close job of its own, so the backend and all it starts end with the
/// guard however the guard ends.
pub fn arm(parent: Option<i32>) -> Result<Armed, NotArmed> {
    let rx = watch(parent)?;
    super::job::enter_own_job().map_err(NotArmed::Signals)?;
    Ok(Armed { rx: Mutex::new(rx) })
}

/// How the backend under a guard ended.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    /// Whether the grace ran out and the forced end was needed.
    pub killed: bool,
    code: Option<u32>,
}

impl Ended {
    /// `exit N` or `unknown`.
    pub fn describe(&self) -> String {
        match self.code {
            Some(code) => format!("exit {}", code as i32),
            None => "unknown".into(),
        }
    }

    /// The backend's exit code, for this process to exit with (1 when unknown).
    pub fn exit_like(&self) -> i32 {
        self.code.map_or(1, |c| c as i32)
    }
}

/// The exit code of an ended process (`None` while it runs, or when unknown).
fn exit_code(h: HANDLE) -> Option<u32> {
    let mut code = 0u32;
    // SAFETY: the caller's handle is open; the call writes one u32.
    let ok = unsafe { windows_sys::Win32::System::Threading::GetExitCodeProcess(h, &mut code) } != 0;
    (ok && code != windows_sys::Win32::Foundation::STILL_ACTIVE as u32).then_some(code)
}

impl Armed {
    /// Start `command` as the backend, leading a console process group of its own (so a
    /// graceful stop can reach it), inside the guard's job (inherited).
    pub fn spawn(&self, command: &mut Command) -> std::io::Result<Child> {
        super::own_group(command);
        command.spawn()
    }

    /// Wait for the backend `child` to end by itself, a stop request, or the owner's
    /// death; then stop everything below the guard: `signal_all(SIGTERM)`, wait until
    /// nothing is left or `grace` passed, then `signal_all(SIGKILL)` and the forced end
    /// of whatever else is left in the guard's job. `signal_all` must never signal the
    /// guard itself.
    pub fn run_to_end(&self, child: &Child, grace: Duration, signal_all: impl Fn(Signal)) -> Ended {
        let main = child.as_raw_handle() as usize;
        let Ok(rx) = self.rx.lock() else { return Ended { killed: false, code: None } };
        std::thread::scope(|scope| {
            scope.spawn(move || {
                // SAFETY: the child's handle stays open while `child` is borrowed, which
                // outlives this scope.
                unsafe { WaitForSingleObject(main as HANDLE, INFINITE) };
                post(Event::BackendEnded);
            });
            let killed = match rx.recv() {
                Ok(Event::BackendEnded) => {
                    // It ended by itself: take down what it left.
                    terminate(main as HANDLE, grace, &signal_all)
                }
                _ => terminate(main as HANDLE, grace, &signal_all),
            };
            // The waiting thread ends with the backend, which has ended now (or the job's
            // forced end is under way).
            let code = exit_code(main as HANDLE);
            Ended { killed, code }
        })
    }
}

/// Whether the backend has ended and nothing else is left in the guard's job.
fn all_gone(main: HANDLE) -> bool {
    exit_code(main).is_some() && !super::job::others_in_own_job()
}

/// The forced end of every other process in the guard's job.
fn kill_job_members() {
    let me = std::process::id();
    for pid in super::job::own_members().into_iter().filter(|&p| p != me) {
        // Every member inherited the guard's job: ours by construction.
        let _ = super::ProcessHandle::open(pid).signal(pid, Signal::SIGKILL);
    }
}

/// The graceful request to everything below the guard, a wait of up to `grace`, then the
/// forced end. Returns whether the forced end was needed.
fn terminate(main: HANDLE, grace: Duration, signal_all: &impl Fn(Signal)) -> bool {
    if all_gone(main) {
        return false;
    }
    signal_all(Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if all_gone(main) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        signal_all(Signal::SIGKILL);
        kill_job_members();
        if all_gone(main) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}
