//! The one gate every signal goes through.
//!
//! tether's first promise is that it never harms a process that is not its own. A
//! state record is a *claim*, not proof: anyone who can write a file can write a
//! pid and its start time. So before any signal — a stop, `down`, the stale sweep,
//! the port guard, the guard process — [`Gate`] decides, by these invariants:
//!
//! 1. never pid 0 or 1, never a process group ≤ 1, never this process, any of its
//!    ancestors, or its own process group (nor an ancestor's);
//! 2. a backend is ours only if it, or an ancestor by parent pid, carries the
//!    instance's fingerprint — `TETHER_INSTANCE=<name>` in the environment it started with,
//!    which tether sets on every backend it starts — and that carrier runs as our
//!    user (or is our own direct child, whose environment may not be laid out yet).
//!    A process of another user is thus signalled only when it descends from our
//!    own verified backend (a backend that drops privileges keeps its workers
//!    stoppable);
//! 3. the owner of a foreground instance is ours only if it runs as our user and
//!    holds the instance's lock file open;
//! 4. with `--force-port` the user names the holder of a port: no fingerprint is
//!    needed, but 1. holds and it must run as our user;
//! 5. a process that fails these checks is named in the error, never signalled.
//!
//! A signal to one process goes through a handle ([`sys::ProcessHandle`], a pidfd on
//! Linux) opened *before* its identity is verified, so a pid reused between the check and the signal is never hit. A
//! signal to a group is sent only when every live member passes the gate.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::error::Error;
use crate::marks::INSTANCE_ENV;
use crate::procs::{self, ProcessIdentity};
use crate::sys::{self, Signal};

/// How many parents a walk up the process tree visits at most (a cycle made of
/// reused pids, or a pathological tree, cannot make it loop).
const MAX_DEPTH: usize = 1024;

/// What makes a process ours: on whose behalf it is signalled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// A backend of this instance, or a descendant of one (rule 2).
    Instance(String),
    /// The owner of an instance: it holds this lock file open (rule 3).
    LockHolder(PathBuf),
    /// Named by the user (`--force-port`): rule 1 and our own user only (rule 4).
    Forced,
}

impl Claim {
    /// A backend of instance `name`.
    pub fn instance(name: impl Into<String>) -> Self {
        Claim::Instance(name.into())
    }
}

/// Why a process was not signalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The process.
    pub pid: u32,
    /// Its command line (or `[comm]`), for the user.
    pub command: String,
    /// The rule that refused it.
    pub why: String,
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        Error::Refused { pid: r.pid, command: r.command, why: r.why }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} (`{}`): {}", self.pid, self.command, self.why)
    }
}

/// What became of a signal the gate let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// It was delivered.
    Delivered,
    /// The process was already gone (or is a zombie, or its pid now names another
    /// process): nothing was sent.
    Gone,
}

/// The gate, with what it knows of this process taken once: who we are, our
/// ancestors and our user.
#[derive(Debug, Clone)]
pub struct Gate {
    me: u32,
    euid: u32,
    /// Our ancestors' pids (never signalled, never carriers).
    ancestors: HashSet<u32>,
    /// Our own process group and our ancestors' (never signalled as a group).
    groups: HashSet<u32>,
}

impl Gate {
    /// The gate for this process, as it is now.
    pub fn new() -> Self {
        let me = std::process::id();
        let mut ancestors = HashSet::new();
        let mut groups = HashSet::new();
        if let Some(g) = procs::pgid_of(me) {
            groups.insert(g);
        }
        let mut pid = procs::parent_of(me);
        while let Some(p) = pid.filter(|&p| p > 0 && ancestors.len() < MAX_DEPTH) {
            if !ancestors.insert(p) {
                break;
            }
            if let Some(g) = procs::pgid_of(p) {
                groups.insert(g);
            }
            pid = procs::parent_of(p);
        }
        Gate { me, euid: sys::current_uid(), ancestors, groups }
    }

    /// Whether `target` may be signalled on behalf of `claim`. A process that is
    /// gone is not refused (there is nothing to protect); [`signal`](Self::signal)
    /// then sends nothing.
    pub fn check(&self, target: ProcessIdentity, claim: &Claim) -> Result<(), Refusal> {
        let refuse = |why: String| Err(refusal(target.pid, why));
        if target.pid <= 1 {
            return refuse("pid 0 and 1 are never signalled".into());
        }
        if target.pid == self.me {
            return refuse("it is this tether process itself".into());
        }
        if self.ancestors.contains(&target.pid) {
            return refuse(format!("it is an ancestor of this tether process (pid {})", self.me));
        }
        if !target.is_alive() {
            return Ok(());
        }
        let same_user = procs::uid_of(target.pid) == Some(self.euid);
        match claim {
            Claim::Instance(name) => {
                if self.carrier(target.pid, name).is_some() {
                    Ok(())
                } else {
                    refuse(format!(
                        "neither it nor any of its ancestors is a backend of instance '{name}' started by this user \
                         (no {INSTANCE_ENV}={name} in its environment)"
                    ))
                }
            }
            Claim::LockHolder(lock) if !same_user => {
                refuse(format!("it is another user's process, so it cannot own {}", lock.display()))
            }
            Claim::LockHolder(lock) => {
                if procs::holds_file(target.pid, lock) {
                    Ok(())
                } else {
                    refuse(format!("it does not hold {} open, so it is not the instance's owner", lock.display()))
                }
            }
            Claim::Forced if !same_user => {
                refuse("it is another user's process; tether never signals those, stop it yourself".into())
            }
            Claim::Forced => Ok(()),
        }
    }

    /// The process, among `pid` and its ancestors, that makes `pid` a backend of
    /// instance `name`: it carries the fingerprint and runs as our user, or it is
    /// our own direct child. `None` when there is none.
    pub fn carrier(&self, pid: u32, name: &str) -> Option<u32> {
        let mut cur = pid;
        for _ in 0..MAX_DEPTH {
            if cur <= 1 || self.ancestors.contains(&cur) {
                return None;
            }
            let parent = procs::parent_of(cur)?;
            let ours = parent == self.me
                || (procs::uid_of(cur) == Some(self.euid)
                    && procs::env_var(cur, INSTANCE_ENV).is_some_and(|v| !v.is_empty() && v == name));
            if ours {
                return Some(cur);
            }
            cur = parent;
        }
        None
    }

    /// The instance `pid` belongs to, by the fingerprint it or an ancestor carries
    /// (rule 2); `None` when it is not a backend of ours.
    pub fn instance_of(&self, pid: u32) -> Option<String> {
        let mut cur = pid;
        for _ in 0..MAX_DEPTH {
            if cur <= 1 || cur == self.me || self.ancestors.contains(&cur) {
                return None;
            }
            if procs::uid_of(cur) == Some(self.euid)
                && let Some(name) = procs::env_var(cur, INSTANCE_ENV).filter(|v| !v.is_empty())
            {
                return Some(name);
            }
            cur = procs::parent_of(cur)?;
        }
        None
    }

    /// Send `sig` to `target` if the gate lets it through.
    pub fn signal(&self, target: ProcessIdentity, sig: Signal, claim: &Claim) -> Result<Sent, Refusal> {
        // The handle pins the process before it is verified: if the pid is reused
        // after this point, the handle still names the old (now dead) process.
        let handle = sys::ProcessHandle::open(target.pid);
        self.check(target, claim)?;
        if !target.is_alive() {
            return Ok(Sent::Gone);
        }
        let delivered = handle.signal(target.pid, sig);
        Ok(if delivered { Sent::Delivered } else { Sent::Gone })
    }

    /// Whether the process group `pgid` may be signalled as a whole: it is not ours
    /// nor an ancestor's, and every live member passes [`check`](Self::check).
    pub fn check_group(&self, pgid: u32, claim: &Claim) -> Result<(), Refusal> {
        if pgid <= 1 {
            return Err(refusal(pgid, "process groups 0 and 1 are never signalled".into()));
        }
        if self.groups.contains(&pgid) {
            return Err(refusal(pgid, "it is the process group of this tether process or of an ancestor".into()));
        }
        for member in procs::group_members(pgid) {
            if let Some(id) = ProcessIdentity::of(member) {
                self.check(id, claim)?;
            }
        }
        Ok(())
    }

    /// Send `sig` to the process group `pgid` if [`check_group`](Self::check_group)
    /// lets it through. An empty group is [`Sent::Gone`].
    pub fn signal_group(&self, pgid: u32, sig: Signal, claim: &Claim) -> Result<Sent, Refusal> {
        self.check_group(pgid, claim)?;
        let sent = sys::kill_group(pgid, sig);
        Ok(if sent { Sent::Delivered } else { Sent::Gone })
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

fn refusal(pid: u32, why: String) -> Refusal {
    let command = procs::command_of(pid).unwrap_or_else(|| "?".into());
    Refusal { pid, command, why }
}

// Their tests use Unix files and processes directly (symlinks, modes, process groups).
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    /// A `sleep` in a group of its own, killed and reaped on drop.
    struct Sleeper(Child);
    impl Sleeper {
        fn spawn(env: Option<(&str, &str)>) -> Sleeper {
            use std::os::unix::process::CommandExt;
            let mut cmd = Command::new("sleep");
            cmd.arg("30").stdin(Stdio::null()).process_group(0);
            if let Some((k, v)) = env {
                cmd.env(k, v);
            }
            Sleeper(cmd.spawn().expect("spawn sleep"))
        }
        fn id(&self) -> ProcessIdentity {
            // Until exec is done the child's environ is ours; wait for the new image.
            for _ in 0..1000 {
                if procs::command_of(self.0.id()).as_deref() == Some("sleep 30") {
                    break;
                }
                std::thread::yield_now();
            }
            ProcessIdentity::of(self.0.id()).expect("alive")
        }
    }
    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn never_pid_one_zero_self_or_an_ancestor() {
        let gate = Gate::new();
        let claims = [Claim::instance("x"), Claim::Forced, Claim::LockHolder("/nonexistent".into())];
        let me = ProcessIdentity::current();
        for claim in &claims {
            for pid in [0, 1] {
                let id = ProcessIdentity { pid, start_time: 1 };
                assert!(gate.check(id, claim).is_err(), "pid {pid} with {claim:?}");
            }
            assert!(gate.check(me, claim).is_err());
            let parent = procs::parent_of(me.pid).expect("a parent");
            if let Some(p) = ProcessIdentity::of(parent) {
                assert!(gate.check(p, claim).is_err(), "parent with {claim:?}");
            }
        }
        let own_group = procs::pgid_of(me.pid).expect("own group");
        assert!(gate.check_group(own_group, &Claim::Forced).is_err());
        assert!(gate.check_group(0, &Claim::Forced).is_err());
        assert!(gate.check_group(1, &Claim::Forced).is_err());
    }

    #[test]
    fn a_direct_child_is_ours_and_a_stranger_by_record_is_not() {
        let gate = Gate::new();
        let child = Sleeper::spawn(None);
        let id = child.id();
        // Our own direct child: ours whatever its environment.
        assert_eq!(gate.check(id, &Claim::instance("x")), Ok(()));
        // Seen from another process (a `down` of a forged record), the same sleep
        // carries no fingerprint: a gate whose `me` is elsewhere refuses it.
        let elsewhere = Gate { me: u32::MAX, ..gate.clone() };
        let refused = elsewhere.check(id, &Claim::instance("x")).expect_err("no fingerprint");
        assert!(refused.why.contains("TETHER_INSTANCE=x"), "{refused}");
        assert!(elsewhere.signal(id, Signal::SIGTERM, &Claim::instance("x")).is_err());
        assert!(id.is_alive(), "a refused process is never signalled");
    }

    #[test]
    fn the_fingerprint_makes_a_process_ours_only_for_its_instance() {
        let child = Sleeper::spawn(Some((INSTANCE_ENV, "alpha")));
        let id = child.id();
        let elsewhere = Gate { me: u32::MAX, ..Gate::new() };
        assert_eq!(elsewhere.check(id, &Claim::instance("alpha")), Ok(()));
        assert!(elsewhere.check(id, &Claim::instance("beta")).is_err());
        assert_eq!(elsewhere.instance_of(id.pid).as_deref(), Some("alpha"));
        assert_eq!(elsewhere.carrier(id.pid, "alpha"), Some(id.pid));
        assert_eq!(elsewhere.signal(id, Signal::SIGTERM, &Claim::instance("alpha")), Ok(Sent::Delivered));
    }

    #[test]
    fn a_stale_identity_is_gone_not_signalled() {
        let child = Sleeper::spawn(None);
        let id = child.id();
        let stale = ProcessIdentity { pid: id.pid, start_time: id.start_time + 1 };
        assert_eq!(Gate::new().signal(stale, Signal::SIGTERM, &Claim::Forced), Ok(Sent::Gone));
        assert!(id.is_alive());
    }

    #[test]
    fn the_lock_holder_claim_needs_the_file_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = dir.path().join("x.lock");
        std::fs::write(&lock, b"").expect("write");
        let gate = Gate::new();
        let child = Sleeper::spawn(None);
        let refused = gate.check(child.id(), &Claim::LockHolder(lock.clone())).expect_err("not held");
        assert!(refused.why.contains("does not hold"), "{refused}");
        let _open = std::fs::File::open(&lock).expect("open");
        assert!(procs::holds_file(std::process::id(), &lock));
    }
}
