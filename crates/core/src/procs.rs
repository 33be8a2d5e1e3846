//! Facts about processes, as the operating system tells them ([`sys`](crate::sys)).
//!
//! A pid alone is not an identity: the kernel reuses pids, so a recorded pid may
//! name a stranger by the time we look again. Everything here that decides whether
//! a process is "the one we mean" compares the pid *and* its start time. Zombies
//! (state `Z`) and dead tasks (`X`) count as gone everywhere: they hold no
//! resources but a table slot, and cannot be signalled into doing anything.
//!
//! Process-table walks ask the kernel directly instead of going through `sysinfo`:
//! they need only the parent pid, process group and state, and the kernel's
//! child lists let `descendants` visit just the tree it asks about (see there for
//! measurements). User names are resolved with `getpwuid_r` (NSS).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::sys::{self, Stat};

/// A process as identified safely: pid + its start time (in the platform's unit, see
/// [`sys::Stat`]: clock ticks since boot on Linux, microseconds since the epoch on macOS).
/// A pid alone can be reused; pid + start time cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// Process id.
    pub pid: u32,
    /// Start time, in the platform's unit ([`sys::Stat`]).
    pub start_time: u64,
}

impl ProcessIdentity {
    /// The identity of the live process `pid`; `None` if there is no such process
    /// or it is a zombie.
    pub fn of(pid: u32) -> Option<Self> {
        let stat = live_stat(pid)?;
        Some(ProcessIdentity { pid, start_time: stat.start_time })
    }

    /// This process.
    ///
    /// If the process table cannot be read (not mounted, or hidden by a sandbox) the
    /// start time is 0. Such an identity is never [`is_alive`](Self::is_alive), which is
    /// the safe failure: a record carrying it is treated as stale rather than
    /// letting a bare pid vouch for a process.
    pub fn current() -> Self {
        ProcessIdentity { pid: std::process::id(), start_time: sys::own_start_time() }
    }

    /// `PID:START_TIME`: this identity as one string, the value of
    /// [`LEADER_ENV`](crate::marks::LEADER_ENV).
    pub fn token(&self) -> String {
        format!("{}:{}", self.pid, self.start_time)
    }

    /// True when `pid` exists, is not a zombie, and started at `start_time` — that
    /// is, it is still the very process this identity was taken from. A start
    /// time of 0 (unknown, see [`current`](Self::current)) is never alive.
    pub fn is_alive(&self) -> bool {
        self.start_time != 0 && live_stat(self.pid).is_some_and(|s| s.start_time == self.start_time)
    }
}

/// What the operating system tells about one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Parent process id (0 for the kernel's own roots).
    pub ppid: u32,
    /// Process group id.
    pub pgid: u32,
    /// Start time, in the platform's unit ([`sys::Stat`]).
    pub start_time: u64,
    /// The name of the user owning it, when it can be resolved.
    pub user: Option<String>,
    /// Its arguments joined by single spaces, or `[comm]` when it has none (kernel
    /// threads, or a process whose command line we may not read).
    pub command: String,
}

impl ProcessInfo {
    /// The safe identity of this process.
    pub fn identity(&self) -> ProcessIdentity {
        ProcessIdentity { pid: self.pid, start_time: self.start_time }
    }
}

/// What the operating system tells about `pid`; `None` if it does not exist or is a zombie.
pub fn info(pid: u32) -> Option<ProcessInfo> {
    let stat = live_stat(pid)?;
    let user = uid_of(pid).and_then(sys::user_name);
    let command = command_line(pid).unwrap_or_else(|| format!("[{}]", stat.comm));
    Some(ProcessInfo { pid, ppid: stat.ppid, pgid: stat.pgid, start_time: stat.start_time, user, command })
}

/// The parent of `pid`; `None` if it does not exist or is a zombie.
pub fn parent_of(pid: u32) -> Option<u32> {
    live_stat(pid).map(|s| s.ppid)
}

/// The command line of `pid` joined by spaces, or `[comm]` when it has none;
/// `None` if it does not exist or is a zombie.
pub fn command_of(pid: u32) -> Option<String> {
    let stat = live_stat(pid)?;
    Some(command_line(pid).unwrap_or_else(|| format!("[{}]", stat.comm)))
}

/// Whether `pid` holds `path` open (by device and inode). Needs the same user, or
/// privilege.
pub fn holds_file(pid: u32, path: &Path) -> bool {
    sys::holds_file(pid, path)
}

/// The backend under `leader`: when `leader` is tether's guard (`… __tether-guard …`),
/// its oldest live child (the backend it started); otherwise `leader` itself (a backend
/// started without a guard). A launcher that does not `exec` its program (uv and uvx run
/// Python as their child) is looked through to its only child: the backend's own pid is
/// Python's. `None` when there is none (yet).
pub fn backend_of(leader: u32) -> Option<u32> {
    let mut backend = started_by(leader)?;
    // uvx → uv → python at most; a launcher with no child (yet) or several is shown itself.
    for _ in 0..3 {
        let launcher = live_stat(backend).is_some_and(|s| LAUNCHERS.contains(&s.comm.as_str()));
        let only = match only_child(backend) {
            Some(child) if launcher => child,
            _ => break,
        };
        backend = only;
    }
    Some(backend)
}

/// Programs that start the backend as their child rather than `exec` it.
const LAUNCHERS: [&str; 2] = ["uv", "uvx"];

/// The one live child of `pid`, when it has exactly one.
fn only_child(pid: u32) -> Option<u32> {
    let children = sys::children(pid).unwrap_or_else(|| descendants_via(pid, false));
    let mut live = children.into_iter().filter(|c| live_stat(*c).is_some_and(|s| s.ppid == pid));
    match (live.next(), live.next()) {
        (Some(child), None) => Some(child),
        _ => None,
    }
}

/// The process `leader` started: its oldest child when it is a guard, else itself.
fn started_by(leader: u32) -> Option<u32> {
    // The guard's first argument is the marker (`tether __tether-guard …`); a backend
    // that merely has the word among its own arguments is no guard.
    let is_guard = sys::cmdline(leader)
        .is_some_and(|args| args.get(1).map(Vec::as_slice) == Some(crate::marks::GUARD_ARG.as_bytes()));
    if !is_guard {
        return live_stat(leader).map(|_| leader);
    }
    let children = sys::children(leader).unwrap_or_else(|| descendants_via(leader, false));
    children
        .into_iter()
        .filter_map(|c| live_stat(c).filter(|s| s.ppid == leader).map(|s| (s.start_time, c)))
        .min()
        .map(|(_, c)| c)
}

/// `(backend, guard)` under a recorded `leader`: the backend's own pid (see
/// [`backend_of`]), and the leader's pid when it is a guard above the backend.
pub fn backend_and_guard(leader: u32) -> (Option<u32>, Option<u32>) {
    let backend = backend_of(leader);
    let guard =
        (backend.is_some_and(|b| b != leader) || backend.is_none() && live_stat(leader).is_some()).then_some(leader);
    (backend, guard)
}

/// The process group of `pid`; `None` if it does not exist or is a zombie.
pub fn pgid_of(pid: u32) -> Option<u32> {
    live_stat(pid).map(|s| s.pgid)
}

/// All live descendants of `root` (children, grandchildren...) found by parent
/// pid, excluding `root` itself. A parent comes before its children.
///
/// The walk follows the kernel's own child lists ([`sys::children`]: on Linux
/// the per-thread child lists), touching only the tree under `root`; where the
/// kernel lacks them (`CONFIG_PROC_CHILDREN` off) it falls back to one scan of the
/// whole table by parent pid. Measured with a 5-process tree on a ~75-process table: ~60 µs for
/// the walk, ~0.7 ms for the full scan, ~0.75 ms for a `sysinfo` refresh with
/// `ProcessRefreshKind::nothing()`; the full scan and `sysinfo` grow with the
/// table, the walk only with the tree.
///
/// Either way this is a snapshot of a moving table: a process forked or
/// re-parented during the walk may be missed. Callers that must catch every
/// survivor repeat the walk after signalling, as they do anyway while waiting
/// for the tree to drain.
pub fn descendants(root: u32) -> Vec<u32> {
    descendants_via(root, true)
}

fn descendants_via(root: u32, child_lists: bool) -> Vec<u32> {
    if root == 0 {
        return Vec::new();
    }
    // The kernel's lists, unless the caller wants the scan or the kernel has none.
    if child_lists && let Some(top) = sys::children(root) {
        let mut top = Some(top);
        let children =
            |p: u32| if p == root { top.take().unwrap_or_default() } else { sys::children(p).unwrap_or_default() };
        // Descend even into a zombie-looking child: a process whose main thread
        // exited shows `Z` while its other threads (and their children) live on.
        // A true zombie simply has no children.
        return walk(root, children, |pid| live_stat(pid).is_some());
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, stat) in sys::table() {
        children.entry(stat.ppid).or_default().push(pid);
    }
    walk(root, |p| children.remove(&p).unwrap_or_default(), |_| true)
}

/// Depth-first over `children_of` from `root`, keeping those `keep` accepts.
fn walk(root: u32, mut children_of: impl FnMut(u32) -> Vec<u32>, keep: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut out = Vec::new();
    // `seen` guards against a cycle made of a pid reused mid-walk.
    let mut seen = HashSet::from([root]);
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for child in children_of(parent) {
            if seen.insert(child) {
                if keep(child) {
                    out.push(child);
                }
                frontier.push(child);
            }
        }
    }
    out
}

/// All live (non-zombie) processes whose process group is `pgid`, sorted.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let mut pids: Vec<u32> = sys::table().into_iter().filter(|(_, s)| s.pgid == pgid).map(|(pid, _)| pid).collect();
    pids.sort_unstable();
    pids
}

/// Every live process of this user whose environment (as it was started with, see
/// [`env_var`]) holds `key=value`, sorted. One scan of the whole table: for the rare
/// look for what a dead guard left behind, not for polling a live tree.
pub fn with_env(key: &str, value: &str) -> Vec<u32> {
    let me = sys::current_uid();
    let mut pids: Vec<u32> = sys::table()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| uid_of(*pid) == Some(me) && env_var(*pid, key).is_some_and(|v| v == value))
        .collect();
    pids.sort_unstable();
    pids
}

/// The value of environment variable `key` of process `pid`, if readable.
///
/// This is the environment the process was started with ([`sys::environ`]), not
/// later `setenv` changes — which is what a fingerprint set at spawn needs. Reading
/// it needs the same user (or privilege); otherwise `None`. A value that is not UTF-8
/// is converted lossily.
pub fn env_var(pid: u32, key: &str) -> Option<String> {
    let environ = sys::environ(pid)?;
    let key = key.as_bytes();
    environ.iter().find_map(|entry| {
        let value = entry.strip_prefix(key)?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(value).into_owned())
    })
}

/// The facts of `pid` unless it is missing, unreadable or a zombie.
fn live_stat(pid: u32) -> Option<Stat> {
    sys::stat(pid)
}

/// The command line of `pid` joined by spaces; `None` when it is empty or unreadable.
fn command_line(pid: u32) -> Option<String> {
    let raw = sys::cmdline(pid)?;
    let args: Vec<String> =
        raw.iter().filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    (!args.is_empty()).then(|| args.join(" "))
}

/// The uid owning `pid` (see [`sys::uid_of`]).
pub fn uid_of(pid: u32) -> Option<u32> {
    sys::uid_of(pid)
}

// Their tests use Unix files and processes directly (symlinks, modes, process groups).
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    /// A `sleep 30` child that is killed and reaped when dropped, even on panic.
    struct Sleeper(Child);
    impl Sleeper {
        fn spawn(own_group: bool) -> Sleeper {
            use std::os::unix::process::CommandExt;
            let mut cmd = Command::new("sleep");
            cmd.arg("30").stdin(Stdio::null());
            if own_group {
                cmd.process_group(0);
            }
            Sleeper(cmd.spawn().expect("spawn sleep"))
        }
        fn pid(&self) -> u32 {
            self.0.id()
        }
    }
    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn current_identity_is_alive() {
        let me = ProcessIdentity::current();
        assert_eq!(me.pid, std::process::id());
        assert_ne!(me.start_time, 0);
        assert!(me.is_alive());
        assert_eq!(ProcessIdentity::of(me.pid), Some(me));
        let own = info(me.pid).expect("own info");
        assert_eq!(own.identity(), me);
        assert_eq!(Some(own.pgid), pgid_of(me.pid));
        assert!(!own.command.is_empty());
        assert!(info(0).is_none());
    }

    #[test]
    fn wrong_start_time_is_not_alive() {
        let me = ProcessIdentity::current();
        let id = |pid, start_time| ProcessIdentity { pid, start_time };
        assert!(!id(me.pid, me.start_time + 1).is_alive());
        assert!(!id(me.pid, 0).is_alive());
        assert!(!id(0, me.start_time).is_alive());
    }

    #[test]
    fn spawned_child_is_a_descendant() {
        let child = Sleeper::spawn(false);
        // Both ways of walking: the kernel's child lists and the full scan.
        for child_lists in [true, false] {
            let found = descendants_via(std::process::id(), child_lists);
            assert!(found.contains(&child.pid()), "{} not in {found:?}", child.pid());
            assert!(!found.contains(&std::process::id()));
        }
        assert!(descendants(child.pid()).is_empty());
    }

    #[test]
    fn group_members_of_a_new_group() {
        let child = Sleeper::spawn(true);
        assert_eq!(pgid_of(child.pid()), Some(child.pid()));
        assert_eq!(group_members(child.pid()), vec![child.pid()]);
        let own_group = pgid_of(std::process::id()).expect("own pgid");
        assert!(group_members(own_group).contains(&std::process::id()));
        assert!(!group_members(own_group).contains(&child.pid()));
    }

    #[test]
    fn env_var_of_a_child() {
        use std::io::{BufRead, BufReader, Write};
        // `spawn` returns before the kernel has laid out the new program's
        // environment, so the environment the OS reports may still be empty. A `cat` that
        // echoes a line back has certainly finished exec.
        let mut cmd = Command::new("cat");
        cmd.env("TETHER_TEST_VAR", "a=b c").stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = Sleeper(cmd.spawn().expect("spawn cat"));
        let mut stdin = child.0.stdin.take().expect("stdin");
        stdin.write_all(b"ping\n").expect("write");
        let mut line = String::new();
        let stdout = child.0.stdout.take().expect("stdout");
        BufReader::new(stdout).read_line(&mut line).expect("read");
        assert_eq!(env_var(child.pid(), "TETHER_TEST_VAR").as_deref(), Some("a=b c"));
        assert_eq!(env_var(child.pid(), "TETHER_TEST"), None);
        assert_eq!(env_var(child.pid(), "TETHER_TEST_VAR_NOPE"), None);
        assert_eq!(info(child.pid()).map(|i| i.command).as_deref(), Some("cat"));
        // The table scan by environment finds it, and only by the exact value.
        assert_eq!(with_env("TETHER_TEST_VAR", "a=b c"), vec![child.pid()]);
        assert!(with_env("TETHER_TEST_VAR", "a=b").is_empty());
    }

    #[test]
    fn a_token_is_pid_and_start_time() {
        let id = ProcessIdentity { pid: 12, start_time: 345 };
        assert_eq!(id.token(), "12:345");
    }
}
