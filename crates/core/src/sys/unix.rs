//! What every Unix answers alike: signals by pid and process group, users, the
//! close-on-exec fallback, the exit status, private files (mode bits and `O_NOFOLLOW`),
//! and the guard's signal loop.

pub mod guard;
pub mod private;

use std::process::Command;

/// A signal, by its Unix name (`Signal::SIGTERM`).
pub use nix::sys::signal::Signal;

/// Send `sig` to `pid`; whether it was delivered (a pid that does not exist is not).
/// Only the safety gate calls this, for a pid it checked.
pub fn kill(pid: u32, sig: Signal) -> bool {
    i32::try_from(pid).is_ok_and(|p| p > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig).is_ok())
}

/// Send `sig` to every member of process group `pgid`; whether any got it. Only the
/// safety gate calls this, for a group it checked.
pub fn kill_group(pgid: u32, sig: Signal) -> bool {
    i32::try_from(pgid).is_ok_and(|g| g > 1 && nix::sys::signal::killpg(nix::unistd::Pid::from_raw(g), sig).is_ok())
}

/// Send `sig` to this process itself.
pub fn kill_self(sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), sig);
}

/// Restore the default action of `SIGPIPE` (a write to a closed pipe ends the process
/// quietly, as for any Unix filter): for commands whose output is piped to `head`.
pub fn default_sigpipe() {
    // SAFETY: restoring a signal's default disposition is always sound.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) };
}

/// The requests to stop this process: Ctrl-C (SIGINT), SIGTERM and SIGHUP, caught for
/// as long as this lives.
#[derive(Debug)]
pub struct StopSignals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Catch them from now on (inside a tokio runtime).
    pub fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next request to stop.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

/// This process's effective uid.
pub fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether this process runs as root (real and effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::getuid().is_root() && nix::unistd::geteuid().is_root()
}

/// The user name for `uid`, through the system's user database (NSS, so LDAP users
/// resolve too): one `getpwuid_r`.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
}

/// The soft limit on open file descriptors (`RLIMIT_NOFILE`); `None` when unknown.
pub fn fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass, nothing else.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

/// The width of the terminal on stderr, in columns; `None` when stderr is no terminal.
pub fn terminal_columns() -> Option<u16> {
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we pass, nothing else.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(size.ws_col)
}

/// Close a probe listener so that it stops listening at once (`shutdown` acts on the
/// socket itself, whoever else holds it).
pub fn shutdown_listener(listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    let _ = nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
}

/// The signal that ended a process, if one did.
pub fn exit_signal(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

/// Start `command`'s program as the leader of a process group of its own.
pub fn own_group(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
}

/// Start `command`'s program outside this process's tree, and return its pid: not a
/// child of this process, and in a session and process group of its own (their leader).
/// A host that stops a server by all of its descendants (VS Code: every process below
/// it by parent pid), by its process group (Codex) or by its session reaches nothing
/// started so.
///
/// The child this process forks is a mere intermediate: between fork and exec it forks
/// the program's process, writes that pid to a close-on-exec pipe and exits at once
/// (reaped here before this returns), so the program is handed to init, or to the
/// nearest subreaper above this process — never below it. The program's process calls
/// `setsid` and goes on to exec as `command` describes (its stdio, environment,
/// working directory, and the `pre_exec` steps registered before this call, which run
/// in the intermediate and are inherited). This returns once the program was exec'd, or
/// with the error that stopped it.
///
/// Not being a child, it is not reaped here and its exit status is not this process's
/// to read: watch it by its pid and start time, or a [`ProcessHandle`]. Its stdio should
/// be null or files: a pipe's other end would be handed to nobody.
pub fn spawn_detached(command: &mut Command) -> std::io::Result<u32> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    // Both ends close-on-exec (std sets the flag at creation where the platform can).
    let (mut read, write) = std::io::pipe()?;
    let report = write.as_raw_fd();
    // SAFETY: between fork and exec this makes async-signal-safe calls only (fork, write,
    // _exit, setsid) and allocates nothing. The intermediate is single-threaded (a child
    // of fork), so its own fork is sound; it never returns into Rust code.
    unsafe {
        command.pre_exec(move || match nix::unistd::fork()? {
            nix::unistd::ForkResult::Parent { child } => {
                let pid = child.as_raw().to_ne_bytes();
                if libc::write(report, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                    // Nobody would know of it: it must not run.
                    libc::kill(child.as_raw(), libc::SIGKILL);
                    libc::_exit(1);
                }
                libc::_exit(0)
            }
            nix::unistd::ForkResult::Child => nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from),
        });
    }
    let spawned = command.spawn();
    // Ours closed, so a read below ends (EOF) rather than blocks should no pid come.
    drop(write);
    let mut intermediate = spawned?;
    // It exits at once. Should this wait fail, the program still runs: its pid is read all
    // the same.
    let reaped = intermediate.wait();
    let mut pid = [0u8; 4];
    read.read_exact(&mut pid).map_err(|e| {
        std::io::Error::other(format!("the intermediate process ({reaped:?}) did not report the program's pid: {e}"))
    })?;
    u32::try_from(i32::from_ne_bytes(pid))
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| std::io::Error::other("the intermediate process reported no valid pid"))
}

/// Make `command` give the program it starts file descriptors 0, 1 and 2 only: every
/// other descriptor this process inherited or opened is marked close-on-exec between
/// fork and exec (a caller's pipe a script waits on for EOF, an instance's lock file).
pub fn only_stdio(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: close_range, getrlimit and fcntl are async-signal-safe; this runs between
    // fork and exec only, and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            super::cloexec_inherited_fds();
            Ok(())
        });
    }
}

/// Whether a file may be executed by someone (any execute bit).
pub fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

/// The fallback of `cloexec_inherited_fds` where `close_range` is missing: each
/// descriptor up to the `RLIMIT_NOFILE` soft limit, at most 65536, gets `FD_CLOEXEC`.
/// Async-signal-safe (for `pre_exec`).
pub(crate) fn cloexec_by_fcntl() {
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

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, OwnedFd};

    use nix::fcntl::{FcntlArg, FdFlag, fcntl};

    use super::*;

    fn inheritable_pipe() -> (OwnedFd, OwnedFd) {
        // pipe(2), not pipe2: macOS has no pipe2; both ends are inheritable either way.
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let flags = FdFlag::from_bits_truncate(fcntl(&w, FcntlArg::F_GETFD).expect("F_GETFD"));
        assert!(!flags.contains(FdFlag::FD_CLOEXEC), "the test needs an inheritable fd");
        (r, w)
    }

    /// Whether process `pid` holds the open file our descriptor `fd` refers to (a pipe
    /// by its inode), read from /proc. Other descriptors are not counted: the program may
    /// open its own (`sleep` reads the locale archive as it starts).
    #[cfg(target_os = "linux")]
    fn holds_our(pid: u32, fd: &OwnedFd) -> Vec<String> {
        let ours = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("our fd's target");
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten()
                    .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == ours))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    // Reads the child's descriptors from /proc.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_spawned_program_gets_only_stdio() {
        use std::process::Stdio;
        let (_r, w) = inheritable_pipe();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("300").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        own_group(&mut cmd);
        only_stdio(&mut cmd);
        let mut child = cmd.spawn().expect("spawn sleep");
        let inherited = holds_our(child.id(), &w);
        let _ = child.kill();
        let _ = child.wait();
        assert!(inherited.is_empty(), "the pipe's write end {} was inherited as {inherited:?}", w.as_raw_fd());
    }

    /// A detached program is no descendant of ours, leads a session and group of its
    /// own, holds only stdio, and its end is seen although we cannot reap it. (Reads
    /// the program's descriptors from /proc; its end is seen by a pidfd.)
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_detached_program_is_outside_our_tree_group_and_session() {
        use std::process::Stdio;
        let (_r, w) = inheritable_pipe();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("300").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        only_stdio(&mut cmd);
        let pid = spawn_detached(&mut cmd).expect("spawn sleep detached");
        let id = crate::procs::ProcessIdentity::of(pid).expect("it runs");
        let handle = crate::sys::ProcessHandle::open(pid);
        let stat = crate::sys::stat(pid).expect("its facts");
        assert_ne!(stat.ppid, std::process::id(), "it is our child");
        assert!(!crate::procs::descendants(std::process::id()).contains(&pid), "it descends from us");
        assert_eq!(stat.pgid, pid, "it leads a process group of its own");
        let session = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid as i32))).expect("its session");
        assert_eq!(session.as_raw() as u32, pid, "it leads a session of its own");
        // Its pid is reported between fork and exec: its descriptors are the program's once
        // it runs `sleep`.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::fs::read(format!("/proc/{pid}/cmdline")).map_or(true, |c| !c.starts_with(b"sleep\0")) {
            assert!(std::time::Instant::now() < deadline, "it never ran sleep");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let inherited = holds_our(pid, &w);
        assert!(kill(pid, Signal::SIGKILL));
        tokio::time::timeout(std::time::Duration::from_secs(60), handle.exited())
            .await
            .expect("its end is seen")
            .expect("a pidfd watches it");
        assert!(!id.is_alive());
        assert!(inherited.is_empty(), "the pipe's write end {} was inherited as {inherited:?}", w.as_raw_fd());
        // A program that cannot be started is an error, as for any spawn.
        let missing = spawn_detached(&mut std::process::Command::new("/nonexistent/tether-test-program"));
        assert_eq!(missing.map_err(|e| e.kind()), Err(std::io::ErrorKind::NotFound));
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
