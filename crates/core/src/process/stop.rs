//! Stopping a process group and every descendant: SIGTERM, wait up to the grace
//! period, SIGKILL; and report which happened. Every signal passes the
//! [`Gate`](crate::safety::Gate): what it refuses is named, never signalled.

use std::time::Duration;

use crate::sys::Signal;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::error::{Error, ExitStatus, Result};
use crate::marks::LEADER_ENV;
use crate::procs::{self, ProcessIdentity};
use crate::runner::StopOutcome;
use crate::safety::{Claim, Gate, Refusal};

/// What to stop: a process we identified (pid + start time), everything that
/// descends from it, and — when it leads a process group of its own — that group.
#[derive(Debug, Clone)]
pub struct GroupTarget {
    /// The process we spawned (the guard, or the backend itself), or the holder of
    /// a port the port guard stops.
    pub leader: ProcessIdentity,
    /// Its own process group (its pid), when it was started as a group leader;
    /// `None` to stop only the process and its descendants.
    pub pgid: Option<u32>,
    /// On whose behalf: what the gate checks every target against.
    pub claim: Claim,
}

impl GroupTarget {
    /// `leader`, its process group (it was started as the group's leader) and its descendants.
    pub fn group(leader: ProcessIdentity, claim: Claim) -> Self {
        GroupTarget { leader, pgid: Some(leader.pid), claim }
    }

    /// `leader` and its descendants, not its group (a process that leads none).
    pub fn process(leader: ProcessIdentity, claim: Claim) -> Self {
        GroupTarget { leader, pgid: None, claim }
    }

    /// Whether the group id still names the group we created. Linux never hands out
    /// a pid equal to the id of a group that still has members, so: while the
    /// process with pid == pgid is our leader, or no such process exists (its members
    /// outlived it), the group is ours; a different process there means the number
    /// was reused after our group emptied.
    fn live_group(&self) -> Option<u32> {
        let pgid = self.pgid?;
        match ProcessIdentity::of(pgid) {
            None => Some(pgid),
            Some(id) => (id == self.leader).then_some(pgid),
        }
    }
}

/// One stop in progress: what the gate let through so far, and what it refused.
struct Stopping<'a> {
    target: &'a GroupTarget,
    gate: Gate,
    /// Identities taken when first seen, so a later signal never reaches a reused pid.
    known: Vec<ProcessIdentity>,
    refused: Vec<Refusal>,
}

impl<'a> Stopping<'a> {
    fn new(target: &'a GroupTarget) -> Self {
        Stopping { target, gate: Gate::new(), known: Vec::new(), refused: Vec::new() }
    }

    /// Every process still belonging to the target that the gate admits: the leader
    /// (when alive and still itself), members of its group, and its descendants — and,
    /// once the leader is dead, every process pinned to it by [`LEADER_ENV`]: what a
    /// guard killed with its owner left outside the group (a `setsid` grandchild that
    /// init adopted), which no longer descends from anything recorded.
    fn survivors(&mut self) -> Vec<ProcessIdentity> {
        let t = self.target;
        if t.leader.is_alive() {
            self.remember(vec![t.leader]);
            self.remember(identities(procs::descendants(t.leader.pid)));
        } else {
            // A live guard is a subreaper: everything it started stays below it, so the
            // whole-table scan is needed only once it is gone.
            self.remember(identities(procs::with_env(LEADER_ENV, &t.leader.token())));
        }
        if let Some(pgid) = t.live_group() {
            self.remember(identities(procs::group_members(pgid)));
        }
        self.known.retain(ProcessIdentity::is_alive);
        self.known.clone()
    }

    fn remember(&mut self, ids: Vec<ProcessIdentity>) {
        for id in ids {
            if self.known.contains(&id) || self.refused.iter().any(|r| r.pid == id.pid) {
                continue;
            }
            match self.gate.check(id, &self.target.claim) {
                Ok(()) => self.known.push(id),
                Err(r) => {
                    tracing::warn!(refused = %r, "not stopping a process that is not ours");
                    self.refused.push(r);
                }
            }
        }
    }

    fn signal(&mut self, sig: Signal) {
        // The group first (it also reaches members forked since the last look),
        // when the gate admits every one of its members.
        if let Some(pgid) = self.target.live_group()
            && !procs::group_members(pgid).is_empty()
            && let Err(r) = self.gate.signal_group(pgid, sig, &self.target.claim)
        {
            tracing::debug!(refused = %r, "not signalling the group as a whole");
        }
        for id in self.known.clone() {
            if let Err(r) = self.gate.signal(id, sig, &self.target.claim) {
                self.known.retain(|k| *k != id);
                self.refused.push(r);
            }
        }
    }
}

/// The identities of `pids`, taken now (those gone meanwhile are left out).
fn identities(pids: Vec<u32>) -> Vec<ProcessIdentity> {
    pids.into_iter().filter_map(ProcessIdentity::of).collect()
}

/// Stop `target`: SIGTERM to the group and every descendant; wait until all are gone
/// or `grace` passed; then SIGKILL whatever is left and wait for it to go.
/// `exited` tells whether the leader has been reaped (when it is our child).
///
/// A leader the [`Gate`] refuses is `Error::Refused`, and nothing is signalled; a
/// descendant or group member it refuses is left alone (and logged).
pub async fn stop_group(
    target: GroupTarget,
    grace: Duration,
    exited: impl Fn() -> Option<ExitStatus>,
) -> Result<StopOutcome> {
    let mut stop = Stopping::new(&target);
    if target.leader.is_alive() {
        stop.gate.check(target.leader, &target.claim).map_err(Error::from)?;
    }
    if stop.survivors().is_empty() {
        return Ok(StopOutcome::Terminated { exit: exited().unwrap_or(ExitStatus::Unknown) });
    }
    stop.signal(Signal::SIGTERM);
    if wait_gone(&mut stop, Instant::now() + grace).await {
        let exit = exited().unwrap_or(ExitStatus::Unknown);
        // A guard that had to kill reports the backend's death by SIGKILL.
        if exit == ExitStatus::Signal(Signal::SIGKILL as i32) {
            return Ok(StopOutcome::Killed);
        }
        return Ok(StopOutcome::Terminated { exit });
    }
    tracing::debug!(leader = target.leader.pid, "grace period over; killing");
    let _ = stop.survivors();
    stop.signal(Signal::SIGKILL);
    if !wait_gone(&mut stop, Instant::now() + Duration::from_secs(5)).await {
        tracing::warn!(leader = target.leader.pid, "processes survived SIGKILL for 5s");
    }
    Ok(StopOutcome::Killed)
}

/// Poll with backoff until nothing of `target` is alive, or `deadline`.
async fn wait_gone(stop: &mut Stopping<'_>, deadline: Instant) -> bool {
    let backoff = Backoff::default().with_max(Duration::from_millis(20));
    for wait in backoff.iter() {
        if stop.survivors().is_empty() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(wait.min(deadline - now)).await;
    }
    false
}

/// What of `target` still lives, as a stop would find it (the leader, its descendants,
/// its group, and what is pinned to a dead leader by [`LEADER_ENV`]), keeping only
/// what the [`Gate`] admits as ours: a process it refuses is never counted, so never
/// signalled. Nothing is signalled here.
pub fn survivors(target: &GroupTarget) -> Vec<ProcessIdentity> {
    Stopping::new(target).survivors()
}

/// Kill at once, synchronously: the `Drop` backstop. The gate still decides.
pub fn kill_now(target: &GroupTarget) {
    let mut stop = Stopping::new(target);
    if target.leader.is_alive() && stop.gate.check(target.leader, &target.claim).is_err() {
        return;
    }
    let _ = stop.survivors();
    stop.signal(Signal::SIGKILL);
}
