//! macOS: libproc (`proc_pidinfo(3)`, `proc_listpids(3)`; `<libproc.h>`,
//! `<sys/proc_info.h>`) and `sysctl(3)` for process facts, `kqueue(2)` for the guard's
//! watch on its owner and on its descendants ([`watch`]), libproc's socket descriptors for
//! port listeners ([`sockets`]).
//!
//! What macOS lacks, and what stands in for it (each function says so too):
//! - no parent-death signal: the guard watches its owner with kqueue (`NOTE_EXIT`, and EOF
//!   on the owner's pipes); a backend whose guard is SIGKILLed runs on until the next
//!   `status`, `down` or `up` finds it by its `TETHER_LEADER` mark;
//! - no child subreaper: the guard remembers its descendants (pid + start time) while they
//!   live, and counts an orphan it remembers as its child;
//! - no pidfd: a [`ProcessHandle`] re-checks pid and start time right before the signal,
//!   and the end of a process that is not our child is polled for by its identity;
//! - no `close_range`: the open descriptors are listed and marked one by one;
//! - no pid namespaces, no `/proc/locks`, no pipe sizes to set (see [`pid_namespace`],
//!   [`lock_holders`], [`widen_pipe`]).
//!
//! Reading another user's process: its parent, group, name and owner are public
//! (`PROC_PIDT_SHORTBSDINFO`), its start time too (`KERN_PROC_PID`); its arguments,
//! environment and descriptors are not (root excepted), as on Linux.

mod abi;
mod sockets;
mod watch;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use libc::c_int;

pub use sockets::Listeners;
pub use watch::{adopted_alive, become_subreaper, owner_still_there, watch_owner};

use self::abi::Plain;
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
/// `XDG_STATE_HOME` says otherwise: the user's Application Support folder, as Apple's
/// File System Programming Guide places an application's own files.
pub const HOME_STATE_DIR: &str = "Library/Application Support/tether";

/// What the kernel tells about one live process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Parent process id (0 for the kernel's own, 1 for an orphan launchd adopted).
    pub ppid: u32,
    /// Process group id.
    pub pgid: u32,
    /// Start time in microseconds since the epoch (`pbi_start_tvsec`, `pbi_start_tvusec`).
    pub start_time: u64,
    /// The program's name (`p_comm`), at most 16 bytes.
    pub comm: String,
}

/// `proc_pidinfo(3)` of `flavor` for `pid` into a `T`: `None` unless the kernel filled it
/// whole (no such process, a zombie, or one we may not read).
fn pidinfo<T: Plain>(pid: u32, flavor: c_int) -> Option<T> {
    let pid = i32::try_from(pid).ok().filter(|p| *p > 0)?;
    let mut out = T::zeroed();
    let size = c_int::try_from(size_of::<T>()).ok()?;
    // SAFETY: the kernel writes at most `size` bytes into `out`, a plain C structure.
    let n = unsafe { libc::proc_pidinfo(pid, flavor, 0, (&raw mut out).cast(), size) };
    (n == size).then_some(out)
}

/// The name in a `p_comm` field (NUL-padded).
fn comm(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(raw.get(..end).unwrap_or_default()).into_owned()
}

/// The facts of `pid` unless it is missing or a zombie (pid 0 is none).
///
/// `proc_pidinfo(3)` `PROC_PIDTBSDINFO` (`struct proc_bsdinfo`, `<sys/proc_info.h>`) for
/// this user's processes; another user's are read with `PROC_PIDT_SHORTBSDINFO` and the
/// start time of `sysctl(3)` `KERN_PROC_PID`. Neither finds a zombie (`SZOMB`) without
/// being asked to, and a zombie read anyway counts as gone.
pub fn stat(pid: u32) -> Option<Stat> {
    if pid == 0 {
        return None;
    }
    if let Some(b) = pidinfo::<abi::ProcBsdInfo>(pid, libc::PROC_PIDTBSDINFO) {
        return (b.pbi_status != libc::SZOMB).then(|| Stat {
            ppid: b.pbi_ppid,
            pgid: b.pbi_pgid,
            start_time: micros(b.pbi_start_tvsec, b.pbi_start_tvusec),
            comm: comm(&b.pbi_comm),
        });
    }
    let s = short_info(pid)?;
    // Unknown (0) only if the process vanished between the two calls: then it never counts as alive.
    (s.pbsi_status != libc::SZOMB).then(|| Stat {
        ppid: s.pbsi_ppid,
        pgid: s.pbsi_pgid,
        start_time: start_time_by_sysctl(pid).unwrap_or(0),
        comm: comm(&s.pbsi_comm),
    })
}

/// `proc_pidinfo(3)` `PROC_PIDT_SHORTBSDINFO`: readable for any process.
fn short_info(pid: u32) -> Option<abi::ProcBsdShortInfo> {
    pidinfo(pid, libc::PROC_PIDT_SHORTBSDINFO)
}

fn micros(sec: u64, usec: u64) -> u64 {
    sec.saturating_mul(1_000_000).saturating_add(usec)
}

/// The start time of any process, from `sysctl(3)` `{CTL_KERN, KERN_PROC, KERN_PROC_PID,
/// pid}`: `struct kinfo_proc` (`<sys/sysctl.h>`) begins with `kp_proc.p_starttime`, a
/// `struct timeval` (a 64-bit `tv_sec`, a 32-bit `tv_usec`); nothing else of it is read.
fn start_time_by_sysctl(pid: u32) -> Option<u64> {
    let mut mib = [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PID, i32::try_from(pid).ok()?];
    // kinfo_proc is 648 bytes on 64-bit macOS; the kernel copies nothing into a smaller buffer.
    let mut buf = [0u64; 128];
    let mut len = size_of_val(&buf);
    // SAFETY: the kernel writes at most `len` bytes into `buf` and the length it wrote into `len`.
    let rc = unsafe { libc::sysctl(mib.as_mut_ptr(), 4, buf.as_mut_ptr().cast(), &mut len, std::ptr::null_mut(), 0) };
    if rc != 0 || len < 16 {
        return None;
    }
    let sec = u64::try_from(buf[0] as i64).ok()?;
    let usec = u64::from(u32::from_ne_bytes(buf[1].to_ne_bytes()[..4].try_into().ok()?));
    Some(micros(sec, usec))
}

/// This process's start time (see [`stat`]); 0 when it cannot be read.
pub fn own_start_time() -> u64 {
    stat(std::process::id()).map_or(0, |s| s.start_time)
}

/// Every pid the kernel lists now: `proc_listallpids(3)` (`<libproc.h>`) into a buffer
/// grown until the list fits.
fn all_pids() -> Vec<u32> {
    pid_list(|buf, size| {
        // SAFETY: the kernel writes at most `size` bytes into `buf`; it returns a count of pids.
        unsafe { libc::proc_listallpids(buf, size) }
    })
}

/// The children of `pid` by the kernel's parent links: `proc_listchildpids(3)`.
fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(ppid) = i32::try_from(pid) else { return Vec::new() };
    pid_list(|buf, size| {
        // SAFETY: as in all_pids.
        unsafe { libc::proc_listchildpids(ppid, buf, size) }
    })
}

/// Call a libproc list function (`count = list(buffer, bytes)`) with a buffer that grows
/// until the answer no longer fills it.
fn pid_list(list: impl Fn(*mut libc::c_void, c_int) -> c_int) -> Vec<u32> {
    let mut cap = 256usize;
    loop {
        let mut pids = vec![0i32; cap];
        let Ok(bytes) = c_int::try_from(cap * size_of::<i32>()) else { return Vec::new() };
        let n = list(pids.as_mut_ptr().cast(), bytes);
        let Ok(n) = usize::try_from(n) else { return Vec::new() };
        if n < cap || cap >= 1 << 20 {
            pids.truncate(n.min(cap));
            return pids.into_iter().filter_map(|p| u32::try_from(p).ok()).filter(|p| *p > 0).collect();
        }
        cap *= 4;
    }
}

/// Every live process, as (pid, facts), from [`all_pids`] and [`stat`]. Processes that
/// vanish during the walk are skipped.
pub fn table() -> Vec<(u32, Stat)> {
    all_pids().into_iter().filter_map(|pid| Some((pid, stat(pid)?))).collect()
}

/// The children of `pid` (`proc_listchildpids(3)`); empty if `pid` is gone. In a process
/// that called [`become_subreaper`] (a guard), its own children also include the orphans
/// it remembers from its descendants (see [`watch`]): what a subreaper would have adopted.
pub fn children(pid: u32) -> Option<Vec<u32>> {
    let mut kids = child_pids(pid);
    if pid == std::process::id() {
        kids.extend(watch::adopted());
    }
    Some(kids)
}

/// `sysctl(3)` `{CTL_KERN, KERN_PROCARGS2, pid}`: exec path, arguments and environment of
/// a process of this user (another user's: `EINVAL`, root excepted). The buffer is
/// `kern.argmax` bytes, the most the kernel hands back.
fn procargs(pid: u32) -> Option<abi::ProcArgs> {
    use std::sync::OnceLock;
    static ARGMAX: OnceLock<usize> = OnceLock::new();
    let argmax = *ARGMAX.get_or_init(|| {
        let mut mib = [libc::CTL_KERN, libc::KERN_ARGMAX];
        let mut value: c_int = 0;
        let mut len = size_of::<c_int>();
        // SAFETY: the kernel writes one int into `value`.
        let rc =
            unsafe { libc::sysctl(mib.as_mut_ptr(), 2, (&raw mut value).cast(), &mut len, std::ptr::null_mut(), 0) };
        usize::try_from(value).ok().filter(|v| rc == 0 && *v > 0).unwrap_or(1 << 20)
    });
    let mut mib = [libc::CTL_KERN, libc::KERN_PROCARGS2, i32::try_from(pid).ok().filter(|p| *p > 0)?];
    let mut buf = vec![0u8; argmax];
    let mut len = buf.len();
    // SAFETY: the kernel writes at most `len` bytes into `buf` and the length it wrote into `len`.
    let rc = unsafe { libc::sysctl(mib.as_mut_ptr(), 3, buf.as_mut_ptr().cast(), &mut len, std::ptr::null_mut(), 0) };
    if rc != 0 {
        return None;
    }
    abi::parse_procargs2(buf.get(..len)?)
}

/// The arguments of `pid` (`argv`, the program first), raw; `None` when unreadable
/// (another user's process, or gone). `sysctl(3)` `KERN_PROCARGS2`.
pub fn cmdline(pid: u32) -> Option<Vec<Vec<u8>>> {
    procargs(pid).map(|p| p.args)
}

/// The environment `pid` was started with (`KEY=VALUE` entries, raw) — the strings exec
/// laid out, not later `setenv` changes, which is what a fingerprint set at spawn needs.
/// `sysctl(3)` `KERN_PROCARGS2`, readable for this user's processes; the kernel leaves the
/// environment out for a restricted (`CS_RESTRICT`) process of SIP-enabled macOS: then it
/// is empty, so such a process carries no fingerprint.
pub fn environ(pid: u32) -> Option<Vec<Vec<u8>>> {
    procargs(pid).map(|p| p.env)
}

/// The effective uid of `pid` (`pbsi_uid` of `PROC_PIDT_SHORTBSDINFO`, `proc_pidinfo(3)`).
pub fn uid_of(pid: u32) -> Option<u32> {
    short_info(pid).map(|s| s.pbsi_uid)
}

/// Whether process `pid` runs as root (real and effective uid 0, `PROC_PIDT_SHORTBSDINFO`);
/// any doubt is `false`.
pub fn runs_as_root(pid: u32) -> bool {
    pid != 0 && short_info(pid).is_some_and(|s| s.pbsi_uid == 0 && s.pbsi_ruid == 0)
}

/// The open descriptors of `pid`: `proc_pidinfo(3)` `PROC_PIDLISTFDS` (`struct
/// proc_fdinfo`), into a buffer grown until the list fits. `None` for a process we may not
/// read (another user's) or one that is gone.
fn fds(pid: u32) -> Option<Vec<abi::ProcFdInfo>> {
    let p = i32::try_from(pid).ok().filter(|p| *p > 0)?;
    let mut cap = 64usize;
    loop {
        let mut list = vec![abi::ProcFdInfo { proc_fd: 0, proc_fdtype: 0 }; cap];
        let size = c_int::try_from(cap * size_of::<abi::ProcFdInfo>()).ok()?;
        // SAFETY: the kernel writes at most `size` bytes of proc_fdinfo into `list`.
        let n = unsafe { libc::proc_pidinfo(p, libc::PROC_PIDLISTFDS, 0, list.as_mut_ptr().cast(), size) };
        let n = usize::try_from(n).ok().filter(|n| *n > 0)? / size_of::<abi::ProcFdInfo>();
        if n < cap || cap >= 1 << 20 {
            list.truncate(n);
            return Some(list);
        }
        cap *= 4;
    }
}

/// `proc_pidfdinfo(3)` of `flavor` for descriptor `fd` of `pid` into a `T`, filled whole.
fn fdinfo<T: Plain>(pid: u32, fd: i32, flavor: c_int) -> Option<T> {
    let pid = i32::try_from(pid).ok().filter(|p| *p > 0)?;
    let mut out = T::zeroed();
    let size = c_int::try_from(size_of::<T>()).ok()?;
    // SAFETY: the kernel writes at most `size` bytes into `out`, a plain C structure.
    let n = unsafe { libc::proc_pidfdinfo(pid, fd, flavor, (&raw mut out).cast(), size) };
    (n == size).then_some(out)
}

/// The files `pid` holds open, by descriptor: `PROC_PIDFDVNODEINFO` of each vnode
/// descriptor (`struct vnode_fdinfo`).
fn open_files(pid: u32) -> Vec<abi::VnodeFdInfo> {
    let vnode = u32::try_from(libc::PROX_FDTYPE_VNODE).unwrap_or(u32::MAX);
    fds(pid)
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.proc_fdtype == vnode)
        .filter_map(|f| fdinfo::<abi::VnodeFdInfo>(pid, f.proc_fd, abi::PROC_PIDFDVNODEINFO))
        .collect()
}

/// Whether `vnode` is the file of `meta` (device and inode; `vst_dev` is a 32-bit `dev_t`).
fn is_file(vnode: &abi::VnodeFdInfo, meta: &fs::Metadata) -> bool {
    let st = &vnode.pvi.vi_stat;
    u64::from(st.vst_dev) == meta.dev() & 0xffff_ffff && st.vst_ino == meta.ino()
}

/// Whether `pid` holds `path` open (one of its descriptors names the same file, by device
/// and inode: `proc_pidfdinfo(3)` `PROC_PIDFDVNODEINFO`). Needs the same user, or root.
pub fn holds_file(pid: u32, path: &Path) -> bool {
    let Ok(want) = fs::metadata(path) else { return false };
    open_files(pid).iter().any(|f| is_file(f, &want))
}

/// A handle on a process taken before it is verified. macOS has no pidfd, so the handle is
/// the pid and the start time it had when opened, checked again right before the signal:
/// a pid reused before that check is never signalled. Between the check and `kill(2)` a
/// window of one system call remains — the best macOS allows.
#[derive(Debug)]
pub struct ProcessHandle {
    pid: u32,
    start_time: Option<u64>,
}

impl ProcessHandle {
    /// A handle on `pid`, as it is now (none when it does not exist).
    pub fn open(pid: u32) -> Self {
        ProcessHandle { pid, start_time: stat(pid).map(|s| s.start_time).filter(|t| *t != 0) }
    }

    /// Send `sig` to `pid` if it is still the process the handle was opened on; whether it
    /// was delivered.
    pub fn signal(&self, pid: u32, sig: Signal) -> bool {
        let same = pid == self.pid && self.start_time.is_some_and(|t| stat(pid).is_some_and(|s| s.start_time == t));
        same && super::kill(pid, sig)
    }

    /// Linux waits here on a pidfd for the end of a process that is not our child; macOS
    /// has none, so this is always `Err` (`Unsupported`), and the caller polls the
    /// process's identity instead.
    pub async fn exited(&self) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// macOS has no parent-death signal (Linux's `PR_SET_PDEATHSIG`): nothing is armed, and the
/// call succeeds so that a spawn goes on. The guard watches its owner with [`watch_owner`]
/// instead; what a SIGKILLed guard leaves is found by its `TETHER_LEADER` mark.
pub fn die_with_parent(_sig: Signal) -> std::io::Result<()> {
    Ok(())
}

/// macOS has no parent-death signal: `command` is left as it is (see [`die_with_parent`]).
/// A backend started without a guard is then stopped by its owner only while the owner
/// lives — tether's own binary always starts one under a guard.
pub fn die_with_parent_on_exec(_command: &mut std::process::Command, _sig: Signal) {}

/// Mark every file descriptor from 3 up close-on-exec, so that the program exec'd next
/// gets only 0, 1 and 2. Meant for `pre_exec` (between fork and exec): system calls only,
/// no allocation.
///
/// macOS has no `close_range`: the open descriptors are listed with `proc_pidinfo(3)`
/// `PROC_PIDLISTFDS` into a stack buffer and each gets `FD_CLOEXEC` by `fcntl(2)`; with
/// more than the buffer holds, each descriptor up to the `RLIMIT_NOFILE` soft limit (at
/// most 65536) does. Best effort: there is nothing useful to do about a failure here.
pub fn cloexec_inherited_fds() {
    const MAX: usize = 1024;
    let mut list = [abi::ProcFdInfo { proc_fd: 0, proc_fdtype: 0 }; MAX];
    let size = (MAX * size_of::<abi::ProcFdInfo>()) as c_int;
    // SAFETY: getpid and proc_pidinfo are plain system calls; the kernel writes at most
    // `size` bytes into `list`, on this thread's stack.
    let n = unsafe { libc::proc_pidinfo(libc::getpid(), libc::PROC_PIDLISTFDS, 0, list.as_mut_ptr().cast(), size) };
    let Some(listed) = usize::try_from(n).ok().filter(|n| *n > 0 && *n < size as usize) else {
        return super::unix::cloexec_by_fcntl();
    };
    for f in list.iter().take(listed / size_of::<abi::ProcFdInfo>()).filter(|f| f.proc_fd > 2) {
        // SAFETY: F_GETFD/F_SETFD change only the close-on-exec flag.
        unsafe {
            let flags = libc::fcntl(f.proc_fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(f.proc_fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Nothing: a macOS pipe has no size to set (no `F_SETPIPE_SZ`); the kernel grows a busy
/// pipe's buffer by itself, up to 64 KiB.
pub fn widen_pipe(_pipe: &impl std::os::fd::AsFd) {}

/// How many processes hold a shared `flock(2)` on `path` now; 0 when the file does not
/// exist.
///
/// macOS has no lock table to read (no `/proc/locks`; `proc_pidinfo(3)` tells no lock).
/// The fallback: when an exclusive `flock` of `path` would be granted at once (tried, and
/// released at once), nobody holds a lock and the answer is 0; otherwise it is the number
/// of this user's processes holding `path` open through a descriptor that was granted an
/// advisory lock (`FWASLOCKED` of `proc_fileinfo`, `<sys/fcntl.h>`). That flag is never
/// cleared, so a process that locked and unlocked the file and still holds it open counts
/// too: a shared backend's guard does, once every lease was gone and one was taken again
/// within its linger.
pub fn lock_holders(path: &Path) -> usize {
    let Ok(meta) = fs::metadata(path) else { return 0 };
    let probe = super::private::no_follow(fs::OpenOptions::new().read(true)).open(path);
    match probe.as_ref().map(|f| f.try_lock()) {
        Ok(Ok(())) => return 0,
        Ok(Err(std::fs::TryLockError::WouldBlock)) => {}
        _ => return 0,
    }
    drop(probe);
    let me = super::current_uid();
    let mut holders: Vec<u32> = all_pids()
        .into_iter()
        .filter(|pid| uid_of(*pid) == Some(me))
        .filter(|pid| open_files(*pid).iter().any(|f| f.pfi.fi_openflags & abi::FWASLOCKED != 0 && is_file(f, &meta)))
        .collect();
    holders.sort_unstable();
    holders.dedup();
    holders.len()
}

/// This boot of this machine: `sysctl(3)` `kern.bootsessionuuid` (a UUID made at boot),
/// else `kern.boottime` (`KERN_BOOTTIME`, the boot's `struct timeval`); `None` when neither
/// can be read.
pub fn boot_id() -> Option<String> {
    let mut buf = [0u8; 64];
    let mut len = buf.len();
    // SAFETY: the name is NUL-terminated; the kernel writes at most `len` bytes into `buf`.
    let rc = unsafe {
        libc::sysctlbyname(c"kern.bootsessionuuid".as_ptr(), buf.as_mut_ptr().cast(), &mut len, std::ptr::null_mut(), 0)
    };
    if rc == 0 {
        let uuid = comm(buf.get(..len).unwrap_or_default());
        if !uuid.trim().is_empty() {
            return Some(uuid.trim().to_string());
        }
    }
    let mut mib = [libc::CTL_KERN, libc::KERN_BOOTTIME];
    let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
    let mut len = size_of::<libc::timeval>();
    // SAFETY: the kernel writes one struct timeval into `tv`.
    let rc = unsafe { libc::sysctl(mib.as_mut_ptr(), 2, (&raw mut tv).cast(), &mut len, std::ptr::null_mut(), 0) };
    (rc == 0 && tv.tv_sec > 0).then(|| format!("boottime-{}.{:06}", tv.tv_sec, tv.tv_usec))
}

/// macOS has no pid namespaces: every process of a boot sees the same pids, so this is one
/// fixed name, the same for every process.
pub fn pid_namespace() -> Option<String> {
    Some("macos".to_string())
}
