//! A recorded instance's end: the stale sweep before a start, and `down` — through the
//! [`Reclaim`] role of the runner that recorded it, found by [`ReclaimOf`].

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::GroupTarget;
use crate::procs;
use crate::runner::{Reclaim, StopOutcome};
use crate::safety::{Claim, Gate};
use crate::state::{Record, StateDir};

/// Finds the reclaiming role of the runner that recorded an instance (by
/// [`Record::runner`]): only the front knows every runner it was built with; a
/// process instance's is [`ProcessReclaim`](crate::process::ProcessReclaim). An
/// unknown runner is an error, never a guess.
pub type ReclaimOf = Arc<dyn Fn(&Record) -> Result<Arc<dyn Reclaim>> + Send + Sync>;

/// What a record names, as a stop target: its leader, which tether always starts
/// as the leader of a process group of its own, with that group. A record is a
/// claim, not proof: its `pgid` is not trusted (the group is the leader's pid), and
/// every signal passes the gate, which requires the instance's fingerprint.
pub(crate) fn target_of(record: &Record) -> Option<GroupTarget> {
    let leader = record.leader?;
    Some(GroupTarget::group(leader, Claim::instance(record.name.clone())))
}

/// A refusal of the gate while acting on `record`: the record named a process that
/// is not this instance's, so it was removed (it describes nothing of ours).
fn refused_record(state: &StateDir, record: &Record, e: Error) -> Error {
    let _ = state.remove(&record.name);
    match e {
        Error::Refused { pid, command, why } => Error::Refused {
            pid,
            command,
            why: format!(
                "{why}; the record {} named it, so the record was removed and nothing was signalled",
                state.path().join(format!("{}.json", record.name)).display()
            ),
        },
        other => other,
    }
}

/// Stop what a stale record names (through the runner that owns it: a process group
/// verified by pid + start time, then by the gate; a container) and forget it. A
/// record naming a process that is not ours is forgotten with a warning, and nothing
/// is signalled.
pub(crate) async fn sweep(state: &StateDir, record: &Record, reclaim_of: &ReclaimOf) -> Result<Option<StopOutcome>> {
    let grace = Duration::from_millis(record.grace_ms.max(100));
    tracing::info!(instance = %record.name, runner = %record.runner, "sweeping a stale instance");
    let reclaim = reclaim_of(record)?;
    let outcome = match reclaim.stop_recorded(record, grace).await {
        Ok(outcome) => Some(outcome),
        Err(e @ Error::Refused { .. }) => {
            tracing::warn!(instance = %record.name, error = %e, "forgetting a record that names a process not ours");
            None
        }
        // It could not be stopped and may run on out of sight (a container whose engine
        // cannot be reached): the record (the only way back to it) is kept, and nothing
        // starts in its place. One that is gone is no error (`Ok` above).
        Err(e) if reclaim.keeps_unstoppable(record) => return Err(e),
        Err(e) => {
            tracing::warn!(instance = %record.name, error = %e.chain(), "cannot stop a stale instance");
            None
        }
    };
    state.remove(&record.name)?;
    Ok(outcome)
}

/// How a detached guard said its backend ended (and forget it).
fn guard_report(log: &std::path::Path) -> Option<StopOutcome> {
    let reported = crate::guard::reported_exit(log);
    let _ = std::fs::remove_file(crate::guard::status_path(log));
    Some(match reported? {
        crate::ExitStatus::Signal(9) => StopOutcome::Killed,
        exit => StopOutcome::Terminated { exit },
    })
}

/// What [`down_report`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Down {
    /// How the stop went.
    pub outcome: StopOutcome,
    /// Whether anything of the instance ran (its owner, its guard or any process of it):
    /// `false` when the record described something already gone, and only the record
    /// was removed.
    pub was_running: bool,
    /// What ran although the instance's owner and guard were gone (both SIGKILLed, say),
    /// found by its fingerprint and stopped: pid and command line.
    pub orphans: Vec<(u32, String)>,
}

/// Stop the instance `name` (detached, or the foreground one of another process).
/// See [`down_report`] for what was stopped.
pub async fn down(state: &StateDir, name: &str, reclaim_of: &ReclaimOf) -> Result<StopOutcome> {
    down_report(state, name, reclaim_of).await.map(|d| d.outcome)
}

/// Stop the instance `name` (detached, or the foreground one of another process), and
/// tell what was stopped: an instance whose owner and guard are both gone while
/// processes of it still run (found by the instance's fingerprint, never otherwise) is
/// stopped too, and those processes named. Once stopped, nothing of it may be left:
/// what still runs is [`Error::StillRunning`], and the record is kept.
pub async fn down_report(state: &StateDir, name: &str, reclaim_of: &ReclaimOf) -> Result<Down> {
    StateDir::check_name(name)?;
    let record = state.load(name)?.ok_or_else(|| Error::NotFound { name: name.to_string() })?;
    let before = crate::process::recorded_survivors(&record);
    let keeper_alive = record.owner_alive();
    let orphans: Vec<(u32, String)> = if keeper_alive {
        Vec::new()
    } else {
        before.iter().map(|id| (id.pid, procs::command_of(id.pid).unwrap_or_else(|| "?".into()))).collect()
    };
    // A container's liveness is its engine's to tell: counted as running.
    let was_running = keeper_alive || !before.is_empty() || record.leader.is_none();
    // A foreground instance: ask its owner to stop it, so it cleans up itself. The
    // owner is ours only if it holds the instance's lock file open.
    if let Some(owner) = record.owner.filter(|o| o.is_alive()) {
        let lock = Claim::LockHolder(state.path().join(format!("{name}.lock")));
        if let Err(refusal) = Gate::new().signal(owner, crate::sys::Signal::SIGTERM, &lock) {
            return Err(refused_record(state, &record, refusal.into()));
        }
        let grace = Duration::from_millis(record.grace_ms.max(100)) + Duration::from_secs(2);
        let deadline = tokio::time::Instant::now() + grace;
        while owner.is_alive() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let grace = Duration::from_millis(record.grace_ms.max(100));
    let outcome = match reclaim_of(&record)?.stop_recorded(&record, grace).await {
        Ok(outcome) => outcome,
        Err(e @ Error::Refused { .. }) => return Err(refused_record(state, &record, e)),
        Err(e) => return Err(e),
    };
    let outcome = match (&record.log_file, outcome) {
        // A detached guard ran the same grace period; it says whether it had to kill.
        // Only from our own log's place: a record must not steer tether at other files.
        (Some(log), StopOutcome::Terminated { .. }) if *log == state.log_path(name) => {
            guard_report(log).unwrap_or(outcome)
        }
        (_, o) => o,
    };
    let left: Vec<(u32, String)> = crate::process::recorded_survivors(&record)
        .into_iter()
        .map(|id| (id.pid, procs::command_of(id.pid).unwrap_or_else(|| "?".into())))
        .collect();
    if !left.is_empty() {
        return Err(Error::StillRunning { name: name.to_string(), pids: left });
    }
    state.remove(name)?;
    Ok(Down { outcome, was_running, orphans })
}
