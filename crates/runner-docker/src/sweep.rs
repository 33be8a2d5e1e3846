//! The labels that mark a container as tether's, and the sweep of stale ones.
//!
//! Every container carries `tether=1`, `tether.instance=<name>`, and — unless it
//! is detached — its owner's pid and start time plus this machine's boot id. A
//! container whose owner is gone (same machine and boot, pid + start time no longer
//! alive) is stale: its owner died without stopping it (even `SIGKILL`). So is one
//! holding the instance name about to start. A live instance of another name that
//! publishes the host port about to be used is never stolen from: that is an error.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;
use tether_core::procs::ProcessIdentity;
use tether_core::{Error, Result};

use crate::container::{short, stop_and_remove, watch_exit};
use crate::engine::runner_error;

/// Present (`1`) on every container tether starts.
pub const LABEL_TETHER: &str = "tether";
/// The instance name.
pub const LABEL_INSTANCE: &str = "tether.instance";
/// The owner's pid (absent when detached).
pub const LABEL_OWNER_PID: &str = "tether.owner.pid";
/// The owner's start time, clock ticks since boot (absent when detached).
pub const LABEL_OWNER_START: &str = "tether.owner.start_time";
/// The owner machine's boot id: pids only mean something on the same machine and boot.
pub const LABEL_OWNER_BOOT: &str = "tether.owner.boot_id";
/// `1` on a container deliberately left running (`up --detach`).
pub const LABEL_DETACHED: &str = "tether.detached";

/// This machine's boot id, when readable.
pub(crate) fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The labels for a container of instance `name`.
pub(crate) fn labels(name: &str, owner: Option<ProcessIdentity>) -> HashMap<String, String> {
    let mut l = HashMap::from([(LABEL_TETHER.into(), "1".into()), (LABEL_INSTANCE.into(), name.into())]);
    match owner {
        Some(o) => {
            l.insert(LABEL_OWNER_PID.into(), o.pid.to_string());
            l.insert(LABEL_OWNER_START.into(), o.start_time.to_string());
            if let Some(b) = boot_id() {
                l.insert(LABEL_OWNER_BOOT.into(), b);
            }
        }
        None => {
            l.insert(LABEL_DETACHED.into(), "1".into());
        }
    }
    l
}

/// Whether a container with these labels has an owner that is verifiably gone.
/// Detached containers, containers of another machine or boot, and labels that do
/// not parse are never judged stale this way.
fn owner_gone(labels: &HashMap<String, String>, boot: Option<&str>) -> bool {
    if labels.get(LABEL_DETACHED).is_some_and(|v| v == "1") {
        return false;
    }
    let (Some(pid), Some(start), Some(their_boot)) =
        (labels.get(LABEL_OWNER_PID), labels.get(LABEL_OWNER_START), labels.get(LABEL_OWNER_BOOT))
    else {
        return false;
    };
    if boot != Some(their_boot.as_str()) {
        return false;
    }
    match (pid.parse(), start.parse()) {
        (Ok(pid), Ok(start_time)) => !ProcessIdentity { pid, start_time }.is_alive(),
        _ => false,
    }
}

/// What to sweep besides containers whose owner is gone.
#[derive(Debug, Clone, Default)]
pub struct SweepTarget<'a> {
    /// Containers of this instance name.
    pub name: Option<&'a str>,
    /// Containers publishing this host port.
    pub port: Option<u16>,
}

/// Stop and remove tether's stale containers: those whose owner is gone and those
/// of `target.name`. A live container of another instance publishing `target.port`
/// is `Error::PortUsedByInstance` (its owner's pid, 0 when detached), and nothing is
/// removed then. Returns the ids removed.
pub(crate) async fn sweep(docker: &Docker, target: &SweepTarget<'_>, grace: Duration) -> Result<Vec<String>> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_TETHER}=1")])]);
    let opts = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
    let containers =
        docker.list_containers(Some(opts)).await.map_err(|e| runner_error("cannot list tether's containers", &e))?;
    let boot = boot_id();
    let mut stale = Vec::new();
    for c in containers {
        let Some(id) = c.id else { continue };
        let labels = c.labels.unwrap_or_default();
        let instance = labels.get(LABEL_INSTANCE).cloned().unwrap_or_default();
        let same_name = target.name.is_some_and(|n| instance == n);
        let gone = owner_gone(&labels, boot.as_deref());
        let on_port =
            target.port.filter(|p| c.ports.as_deref().unwrap_or_default().iter().any(|b| b.public_port == Some(*p)));
        if let (Some(port), false, false) = (on_port, same_name, gone) {
            let pid = labels.get(LABEL_OWNER_PID).and_then(|p| p.parse().ok()).unwrap_or(0);
            return Err(Error::PortUsedByInstance { port, name: instance, pid });
        }
        if same_name || gone {
            stale.push((id, instance, same_name, gone));
        }
    }
    let mut removed = Vec::new();
    for (id, instance, same_name, gone) in stale {
        tracing::info!(
            container = short(&id),
            instance = %instance,
            same_name,
            owner_gone = gone,
            "sweeping a stale container"
        );
        let signal = "SIGTERM";
        let exit = watch_exit(docker.clone(), id.clone(), None);
        stop_and_remove(docker, &id, signal, grace, exit).await?;
        removed.push(id);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_verifiably_dead_owners_of_this_boot_are_stale() {
        let me = ProcessIdentity::current();
        let boot = boot_id();
        let mine = labels("x", Some(me));
        assert!(!owner_gone(&mine, boot.as_deref()), "a live owner");
        let dead = labels("x", Some(ProcessIdentity { pid: me.pid, start_time: me.start_time + 1 }));
        assert_eq!(owner_gone(&dead, boot.as_deref()), boot.is_some(), "a dead owner of this boot");
        assert!(!owner_gone(&dead, Some("another-boot")), "another machine's pids mean nothing here");
        assert!(!owner_gone(&labels("x", None), boot.as_deref()), "detached is never stale by owner");
    }
}
