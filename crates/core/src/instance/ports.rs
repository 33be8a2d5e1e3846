//! The port guard: before a start on a fixed port, our own leftovers holding it are
//! stopped, a live instance or a foreign holder is an error naming it.

use std::time::Duration;

use super::reclaim::target_of;
use crate::error::{Error, PortHolder, Result};
use crate::port;
use crate::process::{GroupTarget, stop_group};
use crate::procs::{self, ProcessIdentity};
use crate::safety::Claim;
use crate::state::StateDir;

/// How much longer than its own readiness deadline a start waits for another start on
/// its port (the other's stop of a failed backend, its record).
pub(crate) const PORT_LOCK_SLACK: Duration = Duration::from_secs(10);

/// What [`clear_port`] acts for: the instance starting on the port.
pub(crate) struct Starting<'a> {
    /// Its name.
    pub name: &'a str,
    /// The host it will listen on.
    pub host: &'a str,
    /// The grace of each stop.
    pub grace: Duration,
    /// Whether foreign holders may be stopped.
    pub force_port: bool,
}

/// Make `port` free: our own holders are stopped gracefully; a foreign one is an
/// error naming it, unless `force_port`.
///
/// The port guard of every start of [`ensure`](super::ensure): a library user of
/// [`launch`](crate::launch) alone gets none.
pub(crate) async fn clear_port(state: &StateDir, plan: &Starting<'_>, port: u16) -> Result<()> {
    let records = state.list()?;
    let holders = port::holders(port)?;
    if holders.is_empty() {
        if port::can_bind(plan.host, port) {
            return Ok(());
        }
        // Held by a process we cannot see: another user's (without root), or a socket whose
        // owner is not yet or no longer visible. Never ours to touch, never "pid 0".
        let command = if crate::sys::current_uid() == 0 {
            "a socket no process of this machine shows (another network namespace's, or one just opening or closing)"
        } else {
            "a process of another user (not visible without root)"
        };
        return Err(Error::PortTaken {
            port,
            holders: vec![PortHolder { pid: 0, user: None, command: command.into(), ours: false, instance: None }],
        });
    }
    // Another instance whose owner is alive is not a leftover: never steal it.
    for h in &holders {
        let record = h.instance.as_ref().and_then(|n| records.iter().find(|r| &r.name == n));
        if let Some(r) = record.filter(|r| r.owner_alive() && r.name != plan.name) {
            return Err(Error::PortUsedByInstance { port, name: r.name.clone(), pid: h.pid });
        }
        // Another instance this state directory knows nothing of (another state
        // directory's): its fingerprint says tether, not that it is a leftover of ours.
        if let Some(name) = h.instance.as_ref().filter(|n| **n != plan.name && record.is_none())
            && !plan.force_port
        {
            return Err(Error::PortUsedElsewhere { port, name: name.clone(), pid: h.pid });
        }
    }
    let foreign: Vec<PortHolder> = holders.iter().filter(|h| !h.ours).cloned().collect();
    if !foreign.is_empty() && !plan.force_port {
        return Err(Error::PortTaken { port, holders: foreign });
    }
    for h in &holders {
        let record = h.instance.as_ref().and_then(|n| records.iter().find(|r| &r.name == n));
        match (record.and_then(target_of), &h.instance) {
            // Ours, and its record's leader is still there: the whole instance goes.
            (Some(t), Some(_)) if t.leader.is_alive() => {
                tracing::info!(pid = h.pid, instance = ?h.instance, "stopping our own holder of port {port}");
                stop_group(t, plan.grace, || None).await?;
            }
            (_, instance) => {
                // Ours by fingerprint only, or foreign with --force-port: that process,
                // its descendants, and its group when it leads one.
                let Some(id) = ProcessIdentity::of(h.pid) else { continue };
                tracing::warn!(pid = h.pid, command = %h.command, ours = h.ours, "stopping the holder of port {port}");
                let claim = instance.clone().map_or(Claim::Forced, Claim::Instance);
                let t = if procs::pgid_of(h.pid) == Some(h.pid) {
                    GroupTarget::group(id, claim)
                } else {
                    GroupTarget::process(id, claim)
                };
                stop_group(t, plan.grace, || None).await?;
            }
        }
        if let Some(r) = record {
            state.remove(&r.name)?;
        }
    }
    port::wait_free(plan.host, port, plan.grace + Duration::from_secs(5)).await
}
