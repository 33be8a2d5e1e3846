//! Linux: `/proc` for process facts, pidfd for signals that cannot reach a reused
//! pid (and for the end of a process that is not our child), the parent-death signal and child subreaper for the guard, `close_range` for
//! inherited descriptors, `sock_diag` netlink for port listeners, `/proc/locks` for
//! lease holders.

mod sockets;

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use procfs::FromRead;
use procfs::process::Stat as ProcStat;

pub use sockets::Listeners;

use super::Signal;

/// Never here: the system names every listener's holders.
pub fn listener_owners_unknown() -> bool {
    false
}

/// Why [`listener_owners_unknown`] would hold (it never does here).
pub const LISTENER_OWNERS_UNKNOWN: &str = "";

/// The variable naming the base directory of [`HOME_STATE_DIR`]: the home directory.
pub const HOME_VAR: &str = "HOME";

/// Where tether keeps its state under `$HOME` when neither `TETHER_STATE_DIR` nor
/// `XDG_STATE_HOME` says otherwise (the XDG base directory default).
pub const HOME_STATE_DIR: &str = ".local/state/tether";

/// What the kernel tells about one live process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Parent process id (0 for the kernel's own roots).
    pub ppid: u32,
    /// Process group id.
    pub pgid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// The program's name (`comm`), at most 15 bytes.
    pub comm: String,
}

impl Stat {
    fn from_proc(stat: ProcStat) -> Option<Self> {
        // Zombies (`Z`) and dead tasks (`X`) count as gone.
        (stat.state != 'Z' && stat.state != 'X').then(|| Stat {
            ppid: to_u32(stat.ppid),
            pgid: to_u32(stat.pgrp),
            start_time: stat.starttime,
            comm: stat.comm,
        })
    }
}

/// The facts of `pid` unless it is missing, unreadable or a zombie (pid 0 is none).
pub fn stat(pid: u32) -> Option<Stat> {
    // pid 0 is not a process (and `kill(0, ..)` means "my group"): never report it.
    if pid == 0 {
        return None;
    }
    ProcStat::from_file(format!("/proc/{pid}/stat")).ok().and_then(Stat::from_proc)
}

/// This process's start time; 0 when `/proc` cannot be read (not mounted, or hidden by
/// a sandbox). Read through `/proc/self`: still correct inside a pid namespace whose
/// `/proc` belongs to the parent's.
pub fn own_start_time() -> u64 {
    ProcStat::from_file("/proc/self/stat").map(|s| s.starttime).unwrap_or(0)
}

/// Every live process, as (pid, facts). Processes that vanish during the walk are
/// skipped: they are gone, which is what would be reported.
pub fn table() -> Vec<(u32, Stat)> {
    let entries = fs::read_dir("/proc").into_iter().flatten().flatten();
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = ProcStat::from_file(entry.path().join("stat")).ok()?;
            Some((pid, Stat::from_proc(stat)?))
        })
        .collect()
}

/// The children of `pid`, gathered from every one of its threads (a child is listed
/// under the thread that forked it); empty if `pid` is gone. `None` where the kernel
/// keeps no child lists (`CONFIG_PROC_CHILDREN` off): then only a [`table`] scan finds
/// them.
pub fn children(pid: u32) -> Option<Vec<u32>> {
    static HAS: OnceLock<bool> = OnceLock::new();
    if !*HAS.get_or_init(|| Path::new("/proc/thread-self/children").exists()) {
        return None;
    }
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Some(Vec::new());
    };
    let lists = tasks.flatten().filter_map(|t| fs::read_to_string(t.path().join("children")).ok());
    Some(lists.flat_map(|l| l.split_ascii_whitespace().filter_map(|c| c.parse().ok()).collect::<Vec<_>>()).collect())
}

/// The arguments of `pid` (`argv`, the program first), raw; `None` when unreadable.
pub fn cmdline(pid: u32) -> Option<Vec<Vec<u8>>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args: Vec<Vec<u8>> = raw.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
    // The buffer ends with a NUL: no empty argument after it.
    if raw.last() == Some(&0) {
        args.pop();
    }
    Some(args)
}

/// The environment `pid` was started with (`KEY=VALUE` entries, raw), not later `setenv`
/// changes — which is what a fingerprint set at spawn needs. Reading it needs the same
/// user (or `CAP_SYS_PTRACE`); otherwise `None`.
pub fn environ(pid: u32) -> Option<Vec<Vec<u8>>> {
    let raw = fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(raw.split(|&b| b == 0).filter(|e| !e.is_empty()).map(<[u8]>::to_vec).collect())
}

/// The uid owning `pid` (the owner of its `/proc/PID` directory: its effective uid, or
/// root for a process that made itself non-dumpable).
pub fn uid_of(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(format!("/proc/{pid}")).ok().map(|m| m.uid())
}

/// Whether process `pid` runs as root (real and effective uid 0, from `/proc`); any
/// doubt is `false`.
pub fn runs_as_root(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    status.lines().find_map(|l| l.strip_prefix("Uid:")).is_some_and(|uids| {
        let ids: Vec<&str> = uids.split_whitespace().take(2).collect();
        ids.len() == 2 && ids.iter().all(|u| *u == "0")
    })
}

/// Whether `pid` holds `path` open (one of its `/proc/PID/fd` links names the same
/// file, by device and inode). Needs the same user, or privilege.
pub fn holds_file(pid: u32, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(want) = fs::metadata(path) else { return false };
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    // `metadata` of an fd link follows it to the open file itself.
    fds.flatten().filter_map(|fd| fs::metadata(fd.path()).ok()).any(|m| m.dev() == want.dev() && m.ino() == want.ino())
}

/// A handle on a process taken before it is verified (a pidfd, Linux ≥ 5.3): if the pid
/// is reused after that, the handle still names the old (now dead) process, and a
/// signal through it reaches nobody.
#[derive(Debug)]
pub struct ProcessHandle(Option<std::os::fd::OwnedFd>);

impl ProcessHandle {
    /// A handle on `pid`; one that falls back to the bare pid where the kernel has no
    /// pidfd.
    pub fn open(pid: u32) -> Self {
        let fd = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
        ProcessHandle(fd)
    }

    /// Send `sig` through the handle (or to `pid` without one); whether it was delivered.
    pub fn signal(&self, pid: u32, sig: Signal) -> bool {
        match &self.0 {
            Some(fd) => rustix::process::Signal::from_named_raw(sig as i32)
                .is_some_and(|s| rustix::process::pidfd_send_signal(fd, s).is_ok()),
            None => super::kill(pid, sig),
        }
    }

    /// Wait until the process has ended, whoever its parent is (a pidfd becomes readable
    /// when its process exits; reaping is not needed). `Err` when this handle cannot
    /// tell — it has no pidfd (the process was gone when it was opened, or the kernel
    /// has none) or the runtime cannot watch it: then the caller polls the process's
    /// identity instead. Needs a tokio runtime with IO enabled.
    pub async fn exited(&self) -> std::io::Result<()> {
        use std::os::fd::AsFd;
        let fd = self.0.as_ref().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::Unsupported))?;
        // SAFETY: the pidfd is borrowed from this handle, which outlives the registration
        // (dropped at the end of this call): it stays open and names the same process.
        let watched =
            unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd.as_fd(), tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
        let _ready = watched.readable().await?;
        Ok(())
    }
}

/// Between fork and exec: have the kernel send `sig` to this process when its parent
/// (the thread that forked it) dies.
pub fn die_with_parent(sig: Signal) -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(sig).map_err(std::io::Error::from)
}

/// Have the kernel send `sig` to the program `command` starts when the thread that
/// started it dies (set between fork and exec).
pub fn die_with_parent_on_exec(command: &mut std::process::Command, sig: Signal) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(move || die_with_parent(sig));
    }
}

/// The guard's watch on its owner `parent` (its parent process): the parent-death signal
/// `sig`. It covers every way the owner dies, so the owner's pipes need no watch here.
pub fn watch_owner(_parent: i32, sig: Signal, _owner_pipes: &[std::os::fd::RawFd]) -> std::io::Result<()> {
    die_with_parent(sig)
}

/// After the owner-death signal `sig` came: whether the owner is in fact still our parent —
/// only the thread that spawned us ended, and the kernel handed us to another thread of the
/// owner. Then the signal is armed again, for that thread.
pub fn owner_still_there(parent: i32, sig: Signal) -> bool {
    if nix::unistd::getppid().as_raw() == parent {
        let _ = die_with_parent(sig);
        return true;
    }
    false
}

/// Make this process a child subreaper: orphaned descendants — even those that call
/// `setsid` — become its children instead of escaping to init.
pub fn become_subreaper() -> std::io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)
}

/// Always `false`: a subreaper's orphans are its children, so a guard with no child left
/// has no descendant left either.
pub fn adopted_alive() -> bool {
    false
}

/// Mark every file descriptor from 3 up close-on-exec, so that the program exec'd next
/// gets only 0, 1 and 2. Meant for `pre_exec` (between fork and exec): it makes
/// async-signal-safe system calls only, and allocates nothing.
///
/// `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)` (Linux 5.11); on an older kernel (`ENOSYS`,
/// or `EINVAL` for the flag) each descriptor up to the `RLIMIT_NOFILE` soft limit, at
/// most 65536, gets `FD_CLOEXEC` by `fcntl`. Best effort: there is nothing useful to do
/// about a failure at this point.
pub fn cloexec_inherited_fds() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on this process's
    // descriptors; it closes nothing.
    let done = unsafe {
        libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC)
    } == 0;
    if !done {
        super::unix::cloexec_by_fcntl();
    }
}

/// A 1 MiB pipe (the usual unprivileged maximum) instead of 64 KiB: a backend that
/// writes in bursts keeps writing while the relay catches up. Best effort.
pub fn widen_pipe(pipe: &impl std::os::fd::AsFd) {
    let _ = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
}

/// How many processes hold a shared `flock` on `path` now (distinct pids, from
/// `/proc/locks`). 0 when the file does not exist.
pub fn lock_holders(path: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(path) else { return 0 };
    let Ok(locks) = fs::read_to_string("/proc/locks") else { return 0 };
    let want = (meta.dev(), meta.ino());
    let mut pids: Vec<&str> = locks
        .lines()
        .filter(|l| !l.contains("->")) // waiters, not holders
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // "N: FLOCK  ADVISORY  READ PID MAJ:MIN:INODE START END"
            (f.get(1) == Some(&"FLOCK") && f.get(3) == Some(&"READ") && lock_names(f.get(5)?, want))
                .then_some(*f.get(4)?)
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids.len()
}

/// Whether `/proc/locks`' `MAJ:MIN:INODE` (hex device numbers) names `(dev, ino)`.
fn lock_names(field: &str, (dev, ino): (u64, u64)) -> bool {
    let mut parts = field.split(':');
    let (Some(maj), Some(min), Some(inode)) = (parts.next(), parts.next(), parts.next()) else { return false };
    let (Ok(maj), Ok(min), Ok(inode)) =
        (u64::from_str_radix(maj, 16), u64::from_str_radix(min, 16), inode.parse::<u64>())
    else {
        return false;
    };
    let (dev_major, dev_minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    inode == ino && maj == dev_major && min == dev_minor
}

/// This boot of this machine (`/proc/sys/kernel/random/boot_id`); `None` when unreadable.
pub fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// This process's pid namespace (its inode); `None` when unreadable.
pub fn pid_namespace() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino().to_string())
}

/// Kernel pids are non-negative; a negative value never names a process.
fn to_u32(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use crate::procs::{ProcessIdentity, descendants};

    #[test]
    fn reaped_child_is_gone() {
        let mut child = std::process::Command::new("sleep");
        let mut child = child.arg("30").stdin(std::process::Stdio::null()).spawn().expect("spawn sleep");
        let id = ProcessIdentity::of(child.id()).expect("child identity");
        assert!(id.is_alive());
        let _ = child.kill();
        // Wait until it has exited but leave it unreaped (WNOWAIT): a zombie,
        // which must already count as gone.
        use nix::sys::wait::{Id, WaitPidFlag, waitid};
        waitid(Id::Pid(nix::unistd::Pid::from_raw(id.pid as i32)), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
            .expect("waitid");
        assert!(!id.is_alive());
        assert_eq!(ProcessIdentity::of(id.pid), None);
        assert_eq!(super::stat(id.pid), None, "a zombie has no live facts");
        assert!(!descendants(std::process::id()).contains(&id.pid));
        let _ = child.wait();
    }
}
