//! The guard's two watches, by `kqueue(2)`, standing in for what Linux has and macOS lacks:
//! - the owner's death (Linux: the parent-death signal): `EVFILT_PROC` `NOTE_EXIT` on the
//!   owner, and EOF on the pipes the owner reads (`EVFILT_WRITE` `EV_EOF`: the reader is
//!   gone); either raises the guard's owner-death signal;
//! - the descendants (Linux: the child subreaper, which adopts orphans): `EVFILT_PROC`
//!   `NOTE_FORK` on the guard and on each descendant, so that every new process below the
//!   guard is remembered — pid and start time, taken while it lives under its parent.
//!   An orphan launchd adopted (its parent exited: a double fork, a `setsid` daemon) is
//!   still counted as the guard's child ([`adopted`]), so the guard's stop finds it.
//!
//! Each runs on a thread of its own, started after the guard blocked its signals (so the
//! thread inherits the mask and the guard's `sigwait` gets what the watch raises).
//!
//! A grandchild whose parent exits before the fork is seen (a few microseconds after the
//! fork) is not remembered: it is still found by its process group when it kept it, and
//! always by the `TETHER_LEADER` mark in its environment once the guard is gone.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Signal;

/// A kqueue and the few calls tether makes on it.
struct Kqueue(OwnedFd);

impl Kqueue {
    /// `kqueue(2)`.
    fn new() -> io::Result<Self> {
        // SAFETY: kqueue takes no argument and returns a new descriptor or -1.
        let fd = unsafe { libc::kqueue() };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this descriptor; we own it.
        Ok(Kqueue(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// One change (`EV_ADD`, `EV_ENABLE`, `EV_DISABLE`) to the filter `filter` of `ident`,
    /// `kevent(2)` with no events to return: its error is the change's (`ESRCH` for a
    /// process that does not exist, `EPIPE` for a pipe whose reader is gone).
    fn change(&self, ident: usize, filter: i16, flags: u16, fflags: u32) -> io::Result<()> {
        let ev = libc::kevent { ident, filter, flags, fflags, data: 0, udata: std::ptr::null_mut() };
        // SAFETY: one kevent is read from `ev`; none is written (nevents 0).
        let rc = unsafe { libc::kevent(self.0.as_raw_fd(), &ev, 1, std::ptr::null_mut(), 0, std::ptr::null()) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Wait for events (for `timeout`, or for ever): how many were placed in `out`.
    fn wait(&self, out: &mut [libc::kevent], timeout: Option<Duration>) -> io::Result<usize> {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(t.subsec_nanos()),
        });
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
        let cap = libc::c_int::try_from(out.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the kernel writes at most `cap` kevents into `out`.
        let n = unsafe { libc::kevent(self.0.as_raw_fd(), std::ptr::null(), 0, out.as_mut_ptr(), cap, ts_ptr) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

fn no_event() -> libc::kevent {
    libc::kevent { ident: 0, filter: 0, flags: 0, fflags: 0, data: 0, udata: std::ptr::null_mut() }
}

/// Set once the watch saw the owner die (or its pipe's reader go).
static OWNER_GONE: AtomicBool = AtomicBool::new(false);

/// How long a pipe's "writable again" event is ignored after one came: the pipe filter
/// fires on every write and read of the pipe, and only its EOF matters here.
const PIPE_QUIET: Duration = Duration::from_millis(100);

/// Watch the owner `parent` (this process's parent) and raise `sig` in this process when
/// it exits — `kqueue(2)` `EVFILT_PROC` `NOTE_EXIT` — or when the reader of one of
/// `owner_pipes` is gone — `EVFILT_WRITE` `EV_EOF`, for those that are pipes (`S_IFIFO`):
/// a pipe the owner created for this process and reads, so its EOF is the owner's end.
///
/// Fails when the owner is already gone (`ESRCH`, or `EPIPE`: a pipe whose reader is gone)
/// or no kqueue or thread can be had. Call it with `sig` blocked, before other threads start.
pub fn watch_owner(parent: i32, sig: Signal, owner_pipes: &[RawFd]) -> io::Result<()> {
    let owner = usize::try_from(parent).ok().filter(|p| *p > 1).ok_or_else(|| io::Error::other("no owner to watch"))?;
    let kq = Kqueue::new()?;
    kq.change(owner, libc::EVFILT_PROC, libc::EV_ADD, libc::NOTE_EXIT)?;
    for &fd in owner_pipes.iter().filter(|fd| is_pipe(**fd)) {
        let Ok(ident) = usize::try_from(fd) else { continue };
        // EV_CLEAR: an event per change of the pipe, not one for as long as it is writable.
        match kq.change(ident, libc::EVFILT_WRITE, libc::EV_ADD | libc::EV_CLEAR, 0) {
            // The reader is gone already.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => return Err(e),
            // Watched; or not watchable, and the owner's exit is still watched.
            _ => {}
        }
    }
    std::thread::Builder::new().name("tether-owner-watch".into()).spawn(move || {
        wait_owner_gone(&kq, parent);
        OWNER_GONE.store(true, Ordering::Release);
        super::super::kill_self(sig);
    })?;
    Ok(())
}

/// Whether `fd` is a pipe (`fstat(2)`: `S_IFIFO`).
fn is_pipe(fd: RawFd) -> bool {
    // SAFETY: fstat writes a struct stat into `st`; a closed fd fails with EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::fstat(fd, &mut st) } == 0) && st.st_mode & libc::S_IFMT == libc::S_IFIFO
}

/// Return once the owner exited or one of its pipes' reader is gone. Should the kqueue
/// fail, the owner is watched by its parent link instead (it is gone once this process
/// is no longer its child), four times a second.
fn wait_owner_gone(kq: &Kqueue, parent: i32) {
    let mut events = [no_event(); 4];
    let mut quiet: Vec<usize> = Vec::new();
    let mut resume: Option<Instant> = None;
    loop {
        let timeout = resume.map(|t| t.saturating_duration_since(Instant::now()));
        let n = match kq.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                while nix::unistd::getppid().as_raw() == parent {
                    std::thread::sleep(Duration::from_millis(250));
                }
                return;
            }
        };
        for ev in events.iter().take(n) {
            match ev.filter {
                libc::EVFILT_PROC if ev.fflags & libc::NOTE_EXIT != 0 || ev.flags & libc::EV_EOF != 0 => return,
                libc::EVFILT_WRITE if ev.flags & libc::EV_EOF != 0 => return,
                // Written to or drained: not the end. Quiet for a while, the EOF waits.
                libc::EVFILT_WRITE if kq.change(ev.ident, libc::EVFILT_WRITE, libc::EV_DISABLE, 0).is_ok() => {
                    quiet.push(ev.ident);
                    resume.get_or_insert_with(|| Instant::now() + PIPE_QUIET);
                }
                _ => {}
            }
        }
        if resume.is_some_and(|t| Instant::now() >= t) {
            for ident in quiet.drain(..) {
                let _ = kq.change(ident, libc::EVFILT_WRITE, libc::EV_ENABLE, 0);
            }
            resume = None;
        }
    }
}

/// After the owner-death signal came: whether the owner is in fact still there — the watch
/// did not raise it (someone else sent the signal) and this process is still its child.
pub fn owner_still_there(parent: i32, _sig: Signal) -> bool {
    !OWNER_GONE.load(Ordering::Acquire) && nix::unistd::getppid().as_raw() == parent
}

/// The descendants remembered while they lived: (pid, start time).
static REMEMBERED: Mutex<Vec<(u32, u64)>> = Mutex::new(Vec::new());

/// macOS has no child subreaper. Instead, remember every descendant of this process while
/// it lives (`kqueue(2)` `EVFILT_PROC` `NOTE_FORK` on this process and on each descendant;
/// at each fork the tree below is walked with `proc_listchildpids(3)`), so that an orphan
/// launchd adopted is still counted among this process's [`children`](super::children).
/// Fails when no kqueue or thread can be had.
pub fn become_subreaper() -> io::Result<()> {
    let me = std::process::id();
    let kq = Kqueue::new()?;
    kq.change(
        usize::try_from(me).map_err(io::Error::other)?,
        libc::EVFILT_PROC,
        libc::EV_ADD | libc::EV_CLEAR,
        libc::NOTE_FORK,
    )?;
    std::thread::Builder::new().name("tether-descendants".into()).spawn(move || {
        let mut events = [no_event(); 16];
        loop {
            match kq.wait(&mut events, None) {
                Ok(_) => remember_descendants(&kq, me),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })?;
    Ok(())
}

fn remembered() -> std::sync::MutexGuard<'static, Vec<(u32, u64)>> {
    REMEMBERED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `(pid, start)` is still that process.
fn lives(pid: u32, start: u64) -> bool {
    super::stat(pid).is_some_and(|s| s.start_time == start)
}

/// Walk the tree below `me` and below every process remembered (an orphan's children are
/// ours too); remember each new one and watch its forks.
fn remember_descendants(kq: &Kqueue, me: u32) {
    let mut known = remembered();
    known.retain(|(pid, start)| lives(*pid, *start));
    let mut seen: HashSet<u32> = HashSet::from([me]);
    let mut frontier: Vec<u32> = std::iter::once(me).chain(known.iter().map(|k| k.0)).collect();
    while let Some(parent) = frontier.pop() {
        for child in super::child_pids(parent) {
            if !seen.insert(child) {
                continue;
            }
            if let Some(s) = super::stat(child).filter(|s| s.start_time != 0)
                && !known.iter().any(|k| k.0 == child && k.1 == s.start_time)
            {
                known.retain(|k| k.0 != child);
                known.push((child, s.start_time));
                if let Ok(ident) = usize::try_from(child) {
                    // Another user's process (a setuid program) cannot be watched: its forks go unseen.
                    let _ = kq.change(ident, libc::EVFILT_PROC, libc::EV_ADD | libc::EV_CLEAR, libc::NOTE_FORK);
                }
            }
            frontier.push(child);
        }
    }
}

/// The remembered descendants launchd adopted (parent pid 1), alive and still themselves:
/// the orphans a subreaper would have as children.
pub(super) fn adopted() -> Vec<u32> {
    let known = remembered().clone();
    known
        .into_iter()
        .filter(|(pid, start)| super::stat(*pid).is_some_and(|s| s.start_time == *start && s.ppid == 1))
        .map(|(pid, _)| pid)
        .collect()
}

/// Whether a remembered descendant still lives, for a guard that has no child left to wait
/// for: what a subreaper would still be waiting on.
pub fn adopted_alive() -> bool {
    let known = remembered().clone();
    known.into_iter().any(|(pid, start)| lives(pid, start))
}
