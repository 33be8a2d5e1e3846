//! A running container: its output relayed, its exit watched, its stop and removal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerInspectResponse;
use futures_util::{Stream, StreamExt};
use tether_core::relay::{DEFAULT_MAX_LINE, LineSplitter};
use tether_core::{Endpoint, ExitStatus, Identity, LogRelay, Result, RunningBackend, StopOutcome, Stream as Out};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::control::{remove, short, stop_and_remove};
use crate::engine::describe;
use crate::guard::ContainerGuard;
use crate::sweep::LABEL_INSTANCE;

/// Relay `output` (the attach stream) to `relay`, one line splitter per stream, so a
/// chunk ending mid-line is joined with the next. Never waits on a consumer.
pub(crate) fn pump<S>(relay: Arc<LogRelay>, mut output: S) -> JoinHandle<()>
where
    S: Stream<Item = std::result::Result<LogOutput, DockerError>> + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut out = LineSplitter::new(DEFAULT_MAX_LINE);
        let mut err = LineSplitter::new(DEFAULT_MAX_LINE);
        while let Some(chunk) = output.next().await {
            match chunk {
                Ok(LogOutput::StdErr { message }) => err.feed(&message, &mut |l: &[u8]| relay.push(Out::Stderr, l)),
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    out.feed(&message, &mut |l: &[u8]| relay.push(Out::Stdout, l))
                }
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => {
                    tracing::debug!(error = %describe(&e), "container output stream ended");
                    break;
                }
            }
        }
        out.finish(&mut |l: &[u8]| relay.push(Out::Stdout, l));
        err.finish(&mut |l: &[u8]| relay.push(Out::Stderr, l));
    })
}

/// How long [`ContainerBackend::owns_endpoint`] waits for the engine's answer: a
/// silent engine must not hold the readiness engine past its deadline.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the inspected container is the one answering on `endpoint` for instance
/// `instance`: it runs (not paused, not restarting), carries `tether.instance=<instance>`,
/// and — when the engine reports published ports — publishes the endpoint's port on
/// its address (a binding on every address, or with none reported, counts; so does
/// any binding when the endpoint's host is not an IP literal).
pub(crate) fn serves(c: &ContainerInspectResponse, instance: &str, endpoint: &Endpoint) -> bool {
    let want_ip = match endpoint.host.as_str() {
        "localhost" => Some(std::net::IpAddr::from([127, 0, 0, 1])),
        h => h.trim_start_matches('[').trim_end_matches(']').parse().ok(),
    };
    let on_address = |ip: Option<&str>| {
        let ip = ip.filter(|s| !s.is_empty()).and_then(|s| s.parse::<std::net::IpAddr>().ok());
        match (ip, want_ip) {
            (Some(ip), Some(want)) => ip == want || ip.is_unspecified(),
            _ => true,
        }
    };
    let state = c.state.clone().unwrap_or_default();
    let running = state.running == Some(true) && state.paused != Some(true) && state.restarting != Some(true);
    let labelled = c
        .config
        .as_ref()
        .and_then(|cfg| cfg.labels.as_ref())
        .and_then(|l| l.get(LABEL_INSTANCE))
        .is_some_and(|v| v == instance);
    let bindings: Vec<_> = c
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref())
        .into_iter()
        .flat_map(|m| m.values())
        .flatten()
        .flatten()
        .collect();
    let published = bindings.iter().any(|b| b.host_port.is_some());
    let serving = bindings.iter().any(|b| {
        b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()) == Some(endpoint.port)
            && on_address(b.host_ip.as_deref())
    });
    running && labelled && (!published || serving)
}

/// A backend running as a container.
#[derive(Debug)]
pub struct ContainerBackend {
    pub(crate) docker: Docker,
    pub(crate) id: String,
    /// The instance name, as labelled on the container.
    pub(crate) instance: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) relay: Arc<LogRelay>,
    pub(crate) exit: watch::Receiver<Option<ExitStatus>>,
    pub(crate) stop_signal: String,
    /// Set once stopped or released (detached): Drop must not remove it then.
    pub(crate) released: AtomicBool,
    /// The guard that removes the container should this process die (foreground), or
    /// once no lease is held (a shared container).
    pub(crate) guard: std::sync::Mutex<Option<ContainerGuard>>,
    /// A remote engine probed at an address of this machine: a local listener on the
    /// port that is not this container's proxy means the probe did not reach it.
    pub(crate) probe_local: bool,
}

impl ContainerBackend {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The pid of the container's guard, while it has one (a foreground container
    /// started with `Tethering::Guard`, or a shared one started with a lease, until released).
    pub fn guard_pid(&self) -> Option<u32> {
        self.guard.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(ContainerGuard::pid)
    }

    /// A remote engine probed here: whether no process of this machine but this
    /// container's own proxy listens on the endpoint's port (else the probe reached it).
    async fn no_local_stranger(&self) -> bool {
        match crate::local::strangers(&self.endpoint.host, self.endpoint.port, Some(&self.id)).await {
            Ok(strangers) if strangers.is_empty() => true,
            Ok(strangers) => {
                let e = crate::local::refusal(&self.endpoint.host, self.endpoint.port, &strangers, false);
                tracing::warn!(container = short(&self.id), "{e}");
                false
            }
            Err(e) => {
                tracing::warn!(container = short(&self.id), error = %e.chain(), "cannot see who listens on the port");
                false
            }
        }
    }

    fn take_guard(&self) -> Option<ContainerGuard> {
        self.guard.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[async_trait]
impl RunningBackend for ContainerBackend {
    fn identity(&self) -> Identity {
        Identity::Kept { id: self.id.clone() }
    }

    fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    fn logs(&self) -> Arc<LogRelay> {
        Arc::clone(&self.relay)
    }

    async fn wait(&self) -> ExitStatus {
        tether_core::runner::wait_exit(&self.exit).await
    }

    fn try_wait(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    async fn stop(&self, grace: Duration) -> Result<StopOutcome> {
        let outcome = stop_and_remove(&self.docker, &self.id, &self.stop_signal, grace, self.exit.clone()).await;
        if outcome.is_ok() {
            self.released.store(true, Ordering::Release);
            // Removed: its guard has nothing left to do. (On failure it stays, so that
            // this process's death gets the removal a second try.)
            if let Some(guard) = self.take_guard() {
                guard.dismiss_async().await;
            }
        }
        outcome
    }

    /// A shared container's lease-mode guard, while this handle holds it (until released).
    /// The container id and its engine, which `down`, `status`, `logs` and the sweep
    /// reach whatever `DOCKER_HOST` says later (see [`crate::DockerReclaim`]).
    fn record_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut fields = serde_json::Map::new();
        fields.insert(crate::RECORD_CONTAINER.into(), self.id.clone().into());
        fields.insert(crate::RECORD_ENGINE.into(), crate::engine::docker_host().into());
        fields
    }

    fn lease_guard(&self) -> Option<tether_core::procs::ProcessIdentity> {
        let guard = self.guard.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|g| g.leased()).map(ContainerGuard::identity)
    }

    fn release(&self) {
        self.released.store(true, Ordering::Release);
        // Deliberately left running: its guard must not remove it when we end —
        // except a shared container's, which removes it once no front holds a lease.
        match self.take_guard() {
            Some(guard) if guard.leased() => guard.let_go(),
            Some(guard) => guard.dismiss(),
            None => {}
        }
    }

    /// The published port is held by the engine's `docker-proxy`, not the backend, so
    /// the question is whether our container is the one behind it: it exists, runs,
    /// carries our instance label, and publishes the endpoint's host port. Any engine
    /// error (or no answer in time) is `false`.
    async fn owns_endpoint(&self) -> bool {
        let inspected = tokio::time::timeout(INSPECT_TIMEOUT, self.docker.inspect_container(&self.id, None)).await;
        match inspected {
            Ok(Ok(c)) => {
                let ours = serves(&c, &self.instance, &self.endpoint);
                if !ours {
                    tracing::debug!(
                        container = short(&self.id),
                        port = self.endpoint.port,
                        state = ?c.state.and_then(|s| s.status),
                        "the container is not the one serving the endpoint"
                    );
                }
                ours && (!self.probe_local || self.no_local_stranger().await)
            }
            Ok(Err(e)) => {
                tracing::debug!(container = short(&self.id), error = %describe(&e), "cannot inspect the container");
                false
            }
            Err(_) => {
                tracing::debug!(container = short(&self.id), "the engine did not answer the inspection in time");
                false
            }
        }
    }
}

impl Drop for ContainerBackend {
    /// The backstop: a container dropped without `stop` is force-removed. Drop cannot
    /// await, and the caller's runtime may be shutting down, so the removal runs on
    /// a thread of its own with a small runtime and a fresh connection, and Drop
    /// waits for it (bounded by the engine's answer to one request).
    fn drop(&mut self) {
        if self.released.load(Ordering::Acquire) {
            return;
        }
        let id = self.id.clone();
        let worker = std::thread::Builder::new().name("tether-docker-drop".into()).spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return false;
            };
            rt.block_on(async {
                let removed = async {
                    let docker = crate::engine::connect().await?;
                    remove(&docker, &id).await
                };
                match tokio::time::timeout(Duration::from_secs(15), removed).await {
                    Ok(Ok(())) => {
                        tracing::debug!(container = short(&id), "removed on drop");
                        true
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(container = short(&id), error = %e.chain(), "cannot remove on drop");
                        false
                    }
                    Err(_) => {
                        tracing::warn!(container = short(&id), "removal on drop timed out");
                        false
                    }
                }
            })
        });
        let removed = worker.ok().is_some_and(|w| w.join().unwrap_or(false));
        // Not removed: the guard stays, and removes it when this process ends.
        if removed && let Some(guard) = self.take_guard() {
            guard.dismiss();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::{ContainerConfig, ContainerState, NetworkSettings, PortBinding};

    use super::*;

    fn inspected(running: bool, instance: &str, host_port: Option<&str>) -> ContainerInspectResponse {
        on_ip(running, instance, host_port, "127.0.0.1")
    }

    fn on_ip(running: bool, instance: &str, host_port: Option<&str>, ip: &str) -> ContainerInspectResponse {
        let ports = host_port.map(|p| {
            HashMap::from([(
                "8000/tcp".to_string(),
                Some(vec![PortBinding { host_ip: Some(ip.into()), host_port: Some(p.into()) }]),
            )])
        });
        ContainerInspectResponse {
            state: Some(ContainerState { running: Some(running), ..Default::default() }),
            config: Some(ContainerConfig {
                labels: Some(HashMap::from([(LABEL_INSTANCE.to_string(), instance.to_string())])),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings { ports, ..Default::default() }),
            ..Default::default()
        }
    }

    fn at(host: &str, port: u16) -> Endpoint {
        Endpoint { host: host.into(), port }
    }

    #[test]
    fn only_our_running_container_publishing_the_port_serves_it() {
        let serves =
            |c: &ContainerInspectResponse, instance: &str, port: u16| serves(c, instance, &at("127.0.0.1", port));
        assert!(serves(&inspected(true, "me", Some("40000")), "me", 40000));
        assert!(serves(&inspected(true, "me", None), "me", 40000), "no port reported: the rest decides");
        assert!(!serves(&inspected(false, "me", Some("40000")), "me", 40000), "not running");
        assert!(!serves(&inspected(true, "other", Some("40000")), "me", 40000), "another instance's");
        assert!(!serves(&inspected(true, "me", Some("40001")), "me", 40000), "another port");
        let mut paused = inspected(true, "me", Some("40000"));
        paused.state = Some(ContainerState { running: Some(true), paused: Some(true), ..Default::default() });
        assert!(!serves(&paused, "me", 40000), "paused");
        assert!(!serves(&ContainerInspectResponse::default(), "me", 40000), "nothing known");
    }

    #[test]
    fn the_port_must_be_published_on_the_endpoints_address() {
        let remote = at("127.0.0.2", 40000);
        assert!(serves(&on_ip(true, "me", Some("40000"), "127.0.0.2"), "me", &remote));
        assert!(serves(&on_ip(true, "me", Some("40000"), "0.0.0.0"), "me", &remote), "every address");
        assert!(serves(&on_ip(true, "me", Some("40000"), ""), "me", &remote), "no address reported");
        assert!(!serves(&on_ip(true, "me", Some("40000"), "127.0.0.1"), "me", &remote), "another address");
        assert!(serves(&on_ip(true, "me", Some("40000"), "127.0.0.1"), "me", &at("localhost", 40000)));
    }
}
