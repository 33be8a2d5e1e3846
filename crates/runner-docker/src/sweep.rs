//! The labels that mark a container as tether's, and the sweep of stale ones.
//!
//! Every container carries `tether=1`, `tether.instance=<name>`, and — unless it
//! is detached — its owner's pid and start time plus this machine's boot id and the
//! owner's pid namespace. A container whose owner is gone (same machine and boot,
//! same pid namespace, pid + start time no longer alive) is stale: its owner died
//! without stopping it (even `SIGKILL`), and only such a container is ever swept.
//! Pids mean nothing across pid namespaces: two jobs on one host (CI runners, each
//! in a container of its own) share a boot id, and one's owner is invisible to the
//! other, so a container of another pid namespace is never judged — nor one whose
//! labels predate the namespace label (it cannot be told where its owner ran). Anything else is another owner's — another
//! `TETHER_STATE_DIR`, another process, or a detached instance whose record lives
//! elsewhere — and is never touched: a live one holding the instance name about to
//! start is `Error::RunningUnrecorded`, and a live one of another name that publishes
//! the host port about to be used is `Error::PortUsedByInstance`.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::ListContainersOptions;
use tether_core::procs::ProcessIdentity;
use tether_core::{Error, Result};

use crate::control::{short, stop_and_remove, watch_exit};
use crate::engine::runner_error;

/// Present (`1`) on every container tether starts.
pub const LABEL_TETHER: &str = "tether";
/// The instance name.
pub const LABEL_INSTANCE: &str = "tether.instance";
/// The owner's pid (absent when detached).
pub const LABEL_OWNER_PID: &str = "tether.owner.pid";
/// The owner's start time, in the platform's unit (`tether_core::sys::Stat`; absent when detached).
pub const LABEL_OWNER_START: &str = "tether.owner.start_time";
/// The owner machine's boot id: pids only mean something on the same machine and boot.
pub const LABEL_OWNER_BOOT: &str = "tether.owner.boot_id";
/// The owner's pid namespace (see `tether_core::sys::pid_namespace`): its pid and
/// start time only mean something to a sweep in the same namespace.
pub const LABEL_OWNER_PID_NS: &str = "tether.owner.pid_ns";
/// `1` on a container deliberately left running (`up --detach`).
pub const LABEL_DETACHED: &str = "tether.detached";

/// Whether `labels` mark a container as tether's (`tether=1`) of instance `instance`.
pub(crate) fn labelled_as(labels: Option<&HashMap<String, String>>, instance: &str) -> bool {
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    label(LABEL_TETHER) == Some("1") && label(LABEL_INSTANCE) == Some(instance)
}

/// This machine's boot id, when readable.
pub(crate) fn boot_id() -> Option<String> {
    tether_core::sys::boot_id()
}

/// This process's pid namespace, when readable.
pub(crate) fn pid_ns() -> Option<String> {
    tether_core::sys::pid_namespace()
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
            if let Some(ns) = pid_ns() {
                l.insert(LABEL_OWNER_PID_NS.into(), ns);
            }
        }
        None => {
            l.insert(LABEL_DETACHED.into(), "1".into());
        }
    }
    l
}

/// Whether a container with these labels has an owner that is verifiably gone, as
/// seen from this machine's boot `boot` and this process's pid namespace `pid_ns`.
/// Detached containers, containers of another machine, boot or pid namespace, labels
/// without the pid namespace (written before it was labelled: unverifiable, so left
/// alone), and labels that do not parse are never judged stale this way.
fn owner_gone(labels: &HashMap<String, String>, boot: Option<&str>, pid_ns: Option<&str>) -> bool {
    if labels.get(LABEL_DETACHED).is_some_and(|v| v == "1") {
        return false;
    }
    let (Some(pid), Some(start), Some(their_boot), Some(their_ns)) = (
        labels.get(LABEL_OWNER_PID),
        labels.get(LABEL_OWNER_START),
        labels.get(LABEL_OWNER_BOOT),
        labels.get(LABEL_OWNER_PID_NS),
    ) else {
        return false;
    };
    if boot != Some(their_boot.as_str()) || pid_ns != Some(their_ns.as_str()) {
        return false;
    }
    match (pid.parse(), start.parse()) {
        (Ok(pid), Ok(start_time)) => !ProcessIdentity { pid, start_time }.is_alive(),
        _ => false,
    }
}

/// What is about to start, so that a live container in its way is reported.
#[derive(Debug, Clone, Default)]
pub struct SweepTarget<'a> {
    /// The instance name about to start: a live container of it, whose owner is not
    /// verifiably gone, is `Error::RunningUnrecorded`.
    pub name: Option<&'a str>,
    /// The host port about to be published: a live container of another instance
    /// publishing it is `Error::PortUsedByInstance`.
    pub port: Option<u16>,
}

/// Whether a container in this state is (or is about to be) alive: everything but
/// one that has ended or is being removed. An unknown state counts as alive.
fn is_live(state: Option<&ContainerSummaryStateEnum>) -> bool {
    !matches!(
        state,
        Some(ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::DEAD | ContainerSummaryStateEnum::REMOVING)
    )
}

/// What the sweep does with one of tether's containers.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Its owner is verifiably gone: stop and remove it.
    Stale,
    /// A live container of the instance name about to start, not ours to stop.
    NameTaken,
    /// A live container of another instance publishing the port about to be used.
    PortTaken(u16),
    /// Someone else's, in nobody's way: leave it alone.
    Leave,
}

/// The verdict on a container of instance `instance`, `gone` telling whether its
/// owner is verifiably gone, `live` whether it runs, `on_port` which of its
/// published host ports is `target.port`.
fn verdict(target: &SweepTarget<'_>, instance: &str, gone: bool, live: bool, on_port: Option<u16>) -> Verdict {
    if gone {
        return Verdict::Stale;
    }
    if !live {
        return Verdict::Leave;
    }
    if target.name.is_some_and(|n| n == instance) {
        return Verdict::NameTaken;
    }
    match on_port {
        Some(port) => Verdict::PortTaken(port),
        None => Verdict::Leave,
    }
}

/// Stop and remove tether's stale containers: those whose owner is verifiably gone,
/// and only those. A live container of `target.name` (owner alive, on another
/// machine or boot, or detached) is `Error::RunningUnrecorded`; a live container of
/// another instance publishing `target.port` is `Error::PortUsedByInstance` (its
/// owner's pid, 0 when detached). Nothing is removed when either is found. Returns
/// the ids removed.
pub(crate) async fn sweep(docker: &Docker, target: &SweepTarget<'_>, grace: Duration) -> Result<Vec<String>> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_TETHER}=1")])]);
    let opts = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
    let containers =
        docker.list_containers(Some(opts)).await.map_err(|e| runner_error("cannot list tether's containers", e))?;
    let (boot, ns) = (boot_id(), pid_ns());
    let mut stale = Vec::new();
    for c in containers {
        let Some(id) = c.id else { continue };
        let labels = c.labels.unwrap_or_default();
        let instance = labels.get(LABEL_INSTANCE).cloned().unwrap_or_default();
        let gone = owner_gone(&labels, boot.as_deref(), ns.as_deref());
        let live = is_live(c.state.as_ref());
        let on_port =
            target.port.filter(|p| c.ports.as_deref().unwrap_or_default().iter().any(|b| b.public_port == Some(*p)));
        let owner_pid = || labels.get(LABEL_OWNER_PID).and_then(|p| p.parse::<u32>().ok());
        match verdict(target, &instance, gone, live, on_port) {
            Verdict::Stale => stale.push((id, instance)),
            Verdict::NameTaken => {
                let owner_pid = if labels.get(LABEL_DETACHED).is_some_and(|v| v == "1") { None } else { owner_pid() };
                return Err(Error::RunningUnrecorded {
                    name: instance,
                    place: format!("in container {}", short(&id)),
                    remove: format!("`docker rm -f {}`", short(&id)),
                    owner_pid,
                });
            }
            Verdict::PortTaken(port) => {
                return Err(Error::PortUsedByInstance { port, name: instance, pid: owner_pid().unwrap_or(0) });
            }
            Verdict::Leave => {
                if target.name.is_some_and(|n| n == instance) {
                    tracing::info!(
                        container = short(&id),
                        instance = %instance,
                        state = ?c.state,
                        "leaving an ended container of this name alone: its owner is not verifiably gone"
                    );
                }
            }
        }
    }
    let mut removed = Vec::new();
    for (id, instance) in stale {
        tracing::info!(container = short(&id), instance = %instance, "sweeping a stale container: its owner is gone");
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
    fn only_tether_labels_of_the_same_instance_make_a_container_this_instances() {
        assert!(labelled_as(Some(&labels("x", None)), "x"));
        assert!(labelled_as(Some(&labels("x", Some(ProcessIdentity::current()))), "x"));
        assert!(!labelled_as(None, "x"), "no labels");
        assert!(!labelled_as(Some(&HashMap::new()), "x"), "an unlabelled container");
        assert!(!labelled_as(Some(&labels("y", None)), "x"), "another instance's");
        let mut forged = labels("x", None);
        forged.insert(LABEL_TETHER.into(), "0".into());
        assert!(!labelled_as(Some(&forged), "x"), "tether=0");
        forged.remove(LABEL_TETHER);
        assert!(!labelled_as(Some(&forged), "x"), "only the instance label");
    }

    #[test]
    fn only_verifiably_dead_owners_of_this_boot_and_pid_namespace_are_stale() {
        let me = ProcessIdentity::current();
        let (boot, ns) = (boot_id(), pid_ns());
        let (boot, ns) = (boot.as_deref(), ns.as_deref());
        let mine = labels("x", Some(me));
        assert_eq!(mine.get(LABEL_OWNER_PID_NS).map(String::as_str), ns, "the owner's pid namespace is labelled");
        assert!(!owner_gone(&mine, boot, ns), "a live owner");
        let dead = labels("x", Some(ProcessIdentity { pid: me.pid, start_time: me.start_time + 1 }));
        assert_eq!(
            owner_gone(&dead, boot, ns),
            boot.is_some() && ns.is_some(),
            "a dead owner of this boot and namespace"
        );
        assert!(!owner_gone(&dead, Some("another-boot"), ns), "another machine's pids mean nothing here");
        assert!(!owner_gone(&dead, boot, Some("0")), "nor another pid namespace's");
        assert!(!owner_gone(&dead, boot, None), "nor any, when ours cannot be read");
        let mut old = dead.clone();
        old.remove(LABEL_OWNER_PID_NS);
        assert!(!owner_gone(&old, boot, ns), "without the namespace label: unverifiable, left alone");
        assert!(!owner_gone(&labels("x", None), boot, ns), "detached is never stale by owner");
    }

    #[test]
    fn only_a_gone_owners_container_is_swept_and_a_live_one_in_the_way_is_an_error() {
        let target = SweepTarget { name: Some("same"), port: Some(8000) };
        // Owner gone: swept, whatever its name, port or state.
        assert_eq!(verdict(&target, "same", true, true, Some(8000)), Verdict::Stale);
        assert_eq!(verdict(&target, "other", true, false, None), Verdict::Stale);
        // Same name, owner alive or detached or unverifiable: never swept.
        assert_eq!(verdict(&target, "same", false, true, None), Verdict::NameTaken);
        assert_eq!(verdict(&target, "same", false, true, Some(8000)), Verdict::NameTaken);
        assert_eq!(verdict(&target, "same", false, false, None), Verdict::Leave, "an ended one is left alone");
        // Another name on the port: an error; elsewhere: left alone.
        assert_eq!(verdict(&target, "other", false, true, Some(8000)), Verdict::PortTaken(8000));
        assert_eq!(verdict(&target, "other", false, true, None), Verdict::Leave);
        assert_eq!(verdict(&target, "other", false, false, None), Verdict::Leave);
        // No target: only the gone owners'.
        assert_eq!(verdict(&SweepTarget::default(), "same", false, true, None), Verdict::Leave);
    }

    #[test]
    fn only_ended_containers_are_not_live() {
        use ContainerSummaryStateEnum as S;
        for s in [S::CREATED, S::RUNNING, S::PAUSED, S::RESTARTING, S::STOPPING, S::EMPTY] {
            assert!(is_live(Some(&s)), "{s}");
        }
        assert!(is_live(None), "unknown counts as alive");
        for s in [S::EXITED, S::DEAD, S::REMOVING] {
            assert!(!is_live(Some(&s)), "{s}");
        }
    }
}
