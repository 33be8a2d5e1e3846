//! Stopping a process group and every descendant: SIGTERM, wait up to the grace
//! period, SIGKILL; and report which happened.

use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::error::ExitStatus;
use crate::procs::{self, ProcessIdentity};
use crate::runner::StopOutcome;

/// What to stop: a process group whose leader we identified, and its descendants.
#[derive(Debug, Clone, Copy)]
pub struct GroupTarget {
    /// The leader we spawned, identified by pid + start time.
    pub leader: ProcessIdentity,
    /// Its process group.
    pub pgid: u32,
}

impl GroupTarget {
    /// Every process still belonging to the target: the leader (when alive and still
    /// itself), members of the group, and descendants of the leader. Identities are
    /// taken now so that a later signal never reaches a reused pid.
    pub fn survivors(&self, known: &mut Vec<ProcessIdentity>) -> Vec<ProcessIdentity> {
        if self.leader.is_alive() {
            remember(known, procs::descendants(self.leader.pid));
        }
        if self.group_is_ours() {
            remember(known, procs::group_members(self.pgid));
        }
        known.retain(ProcessIdentity::is_alive);
        let mut all = known.clone();
        if self.leader.is_alive() && !all.contains(&self.leader) {
            all.push(self.leader);
        }
        all
    }

    /// Whether the group id still names the group we created. Linux never hands out
    /// a pid equal to the id of a group that still has members, so: while the
    /// process with pid == pgid is our leader, or no such process exists (its members
    /// outlived it), the group is ours; a different process there means the number
    /// was reused after our group emptied.
    fn group_is_ours(&self) -> bool {
        match ProcessIdentity::of(self.pgid) {
            None => true,
            Some(id) => id == self.leader,
        }
    }

    fn signal(&self, known: &[ProcessIdentity], sig: Signal) {
        if self.group_is_ours() && !procs::group_members(self.pgid).is_empty() {
            let _ = killpg(Pid::from_raw(self.pgid as i32), sig);
        }
        for id in known {
            // Checked right before the signal: the start time must still match.
            if id.is_alive() {
                let _ = kill(Pid::from_raw(id.pid as i32), sig);
            }
        }
    }
}

/// Add the identities of `pids` to `known`, taken now.
fn remember(known: &mut Vec<ProcessIdentity>, pids: Vec<u32>) {
    for id in pids.into_iter().filter_map(ProcessIdentity::of) {
        if !known.contains(&id) {
            known.push(id);
        }
    }
}

/// Stop `target`: SIGTERM to the group and every descendant; wait until all are gone
/// or `grace` passed; then SIGKILL whatever is left and wait for it to go.
/// `exited` tells whether the leader has been reaped (when it is our child).
pub async fn stop_group(target: GroupTarget, grace: Duration, exited: impl Fn() -> Option<ExitStatus>) -> StopOutcome {
    let mut known = Vec::new();
    let first = target.survivors(&mut known);
    if first.is_empty() {
        return StopOutcome::Terminated { exit: exited().unwrap_or(ExitStatus::Unknown) };
    }
    target.signal(&known, Signal::SIGTERM);
    if wait_gone(&target, &mut known, Instant::now() + grace).await {
        let exit = exited().unwrap_or(ExitStatus::Unknown);
        // A guard that had to kill reports the backend's death by SIGKILL.
        if exit == ExitStatus::Signal(Signal::SIGKILL as i32) {
            return StopOutcome::Killed;
        }
        return StopOutcome::Terminated { exit };
    }
    tracing::debug!(pgid = target.pgid, "grace period over; killing");
    let _ = target.survivors(&mut known);
    target.signal(&known, Signal::SIGKILL);
    if !wait_gone(&target, &mut known, Instant::now() + Duration::from_secs(5)).await {
        tracing::warn!(pgid = target.pgid, "processes survived SIGKILL for 5s");
    }
    StopOutcome::Killed
}

/// Poll with backoff until nothing of `target` is alive, or `deadline`.
async fn wait_gone(target: &GroupTarget, known: &mut Vec<ProcessIdentity>, deadline: Instant) -> bool {
    let backoff = Backoff::default().with_max(Duration::from_millis(20));
    for wait in backoff.iter() {
        if target.survivors(known).is_empty() {
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

/// Kill at once, synchronously: the `Drop` backstop.
pub fn kill_now(target: GroupTarget) {
    let mut known = Vec::new();
    let _ = target.survivors(&mut known);
    target.signal(&known, Signal::SIGKILL);
}
