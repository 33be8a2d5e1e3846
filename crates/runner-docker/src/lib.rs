//! # tether-runner-docker
//!
//! Runs the backend in a container through the Docker Engine API ([bollard]) — not
//! the docker CLI — so `DOCKER_HOST` (a unix socket or `tcp://`) reaches a local or
//! remote engine.
//!
//! ## Theory of operation
//! [`check`](Runner::check) reaches the engine and negotiates the API version, so an
//! unreachable engine is a clear error naming `DOCKER_HOST` before anything starts.
//! [`prepare`](Runner::prepare) applies the [`PullPolicy`], reporting pull progress.
//! [`start`](Runner::start) first sweeps tether's stale containers — only those whose
//! owner is verifiably gone; a live container of this instance name (another state
//! directory's, or detached) or of another name publishing the host port is an
//! error, never stolen from — then creates
//! `tether-<name>-<id>` with labels naming the instance and its owner, `init` so
//! signals reach the backend and zombies are reaped, the backend's arguments as the
//! command (`{port}` = the container port, `{host}` = `0.0.0.0`), and the container
//! port published on the spec's host address (loopback by default) at the spec's
//! port (or one the engine picks, when the spec's port is 0). Output is attached before the start, demultiplexed and split into lines
//! into the same [`LogRelay`] as every runner; a task waits
//! for the exit so the readiness engine reports an early exit at once, with the
//! exit code and the last lines. Stop sends the image's stop signal, waits up to
//! the grace period, then `SIGKILL`, and removes the container with its anonymous
//! volumes: nothing is left.
//!
//! ## A remote engine
//! An engine reached over `tcp://` is remote ([`is_remote`]: only a socket file is
//! local): its `127.0.0.1` is not ours. The spec's host is then the address *on the
//! engine's machine* that this machine reaches it by — an IP literal, never `0.0.0.0`
//! nor `localhost` — the port is published there, and that address is what is probed
//! and reported. Nothing else changes: labels, the sweep, the guard (it reaches the
//! same engine) and the ownership check (the container runs, is labelled, publishes
//! the endpoint) all go through the API. The port guard of this machine sees nothing
//! of the engine's, so a port held there is the engine's error at start; with port 0
//! the engine picks a free one and it is read back. When the spec's host is an
//! address of this machine (a tunnel to the engine), a process of this machine
//! listening on the port would answer the probe instead: it is refused before the
//! start (fixed port), once published, and at each ready answer — all but this
//! machine's engine's own proxy for this very container.
//!
//! A record keeps the engine its container was started on ([`RECORD_ENGINE`]): the
//! recorded operations (`stop_recorded`, `recorded_running`, `recorded_logs`) reach
//! it there whatever `DOCKER_HOST` says later, and an unreachable recorded engine is
//! an error naming it, never a container taken for gone.
//!
//! A foreground container has a guard, as a process backend does: with
//! `Tethering::Guard` (and [`run_if_container_guard`] called first thing in `main`),
//! the guard executable is started as `__tether-container-guard`, holds the
//! parent-death signal and, should the owner die — even by SIGKILL — stops and
//! removes the container within the grace period instead of leaving it to the next
//! start's sweep. The owner dismisses it once the container is removed.
//!
//! A shared container (`Tethering::Detached` with a lease: `up --share`, `mcp-proxy`)
//! gets a guard in lease mode: detached in a session of its own, it outlives its
//! starter, waits until no front holds a lease on the instance's lease file, lingers,
//! and then stops and removes the container (only that container id, only while its
//! labels say it is this detached instance's) and forgets the instance's record. A
//! second front with the same configuration attaches to the running container.
//!
//! ```no_run
//! # async fn demo() -> tether_core::Result<()> {
//! use std::sync::Arc;
//! use tether_core::{launch, LaunchOptions, LaunchSpec, probe::HttpProbe};
//! use tether_runner_docker::DockerRunner;
//! let runner = Arc::new(DockerRunner::new("my-search:1.4").with_container_port(8000));
//! let spec = LaunchSpec::new("search", 8765).with_args(["--port", "{port}", "--host", "{host}"]);
//! let search = launch(runner, spec, Arc::new(HttpProbe::claude_skills("/health")), LaunchOptions::default()).await?;
//! search.stop().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod container;
mod control;
mod engine;
mod guard;
mod image;
mod local;
mod sweep;

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{AttachContainerOptions, CreateContainerOptions};
use tether_core::procs::ProcessIdentity;
use tether_core::runner::Tethering;
use tether_core::{
    Endpoint, Error, LaunchSpec, LogRelay, Progress, Reclaim, Result, Runner, RunnerInfo, RunningBackend, StopOutcome,
};
use tokio::sync::OnceCell;
use tracing::instrument;

pub use container::ContainerBackend;
pub use engine::{docker_host, engine_is_remote, is_remote};
pub use guard::{CONTAINER_GUARD_ARG, installed as container_guard_installed, run_if_container_guard};
pub use image::PullPolicy;
pub use sweep::{
    LABEL_DETACHED, LABEL_INSTANCE, LABEL_OWNER_BOOT, LABEL_OWNER_PID, LABEL_OWNER_PID_NS, LABEL_OWNER_START,
    LABEL_TETHER, SweepTarget,
};

/// The record field that names an instance's container (`tether status --json` shows it).
pub const RECORD_CONTAINER: &str = "container_id";
/// The record field that names the engine a container was started on (a `DOCKER_HOST`
/// value, e.g. `tcp://10.0.0.5:2375` or `unix:///var/run/docker.sock`): `down`, `status`,
/// `logs` and the stale sweep reach the container there, whatever `DOCKER_HOST` says
/// later. Absent in records written before it was kept.
pub const RECORD_ENGINE: &str = "engine";

/// The container a record names, if any.
pub fn container_of(record: &tether_core::state::Record) -> Option<&str> {
    record.runner_field(RECORD_CONTAINER)
}

/// A backend in a container of `image`.
#[derive(Debug)]
pub struct DockerRunner {
    image: String,
    container_port: Option<u16>,
    pull: PullPolicy,
    docker: std::sync::Arc<OnceCell<Docker>>,
}

impl DockerRunner {
    /// Run `image` (its entrypoint stays; the backend's arguments become its command).
    pub fn new(image: impl Into<String>) -> Self {
        DockerRunner {
            image: image.into(),
            container_port: None,
            pull: PullPolicy::default(),
            docker: Default::default(),
        }
    }

    /// The port the backend listens on inside the container (default: the spec's port).
    pub fn with_container_port(mut self, port: u16) -> Self {
        self.container_port = Some(port);
        self
    }

    /// When to pull the image (default: when missing).
    pub fn with_pull(mut self, pull: PullPolicy) -> Self {
        self.pull = pull;
        self
    }

    /// The image.
    pub fn image(&self) -> &str {
        &self.image
    }

    async fn docker(&self) -> Result<&Docker> {
        self.docker.get_or_try_init(engine::connect).await
    }
}

/// The container port when the host port is left to the engine (port 0) and no
/// container port was given: inside its own network namespace any number serves a
/// backend that takes `{port}`; tether's default port keeps it familiar.
pub const DEFAULT_CONTAINER_PORT: u16 = 8765;

/// `{port}` and `{host}` as the backend sees them inside the container: the
/// container port, and every interface (the publish address restricts access).
fn container_args(spec: &LaunchSpec, container_port: u16) -> Vec<String> {
    let port = container_port.to_string();
    spec.args.iter().map(|a| a.replace("{port}", &port).replace("{host}", "0.0.0.0")).collect()
}

/// The address the port is published on: an IP literal (`localhost` means loopback).
/// On a `remote` engine it is an address of the engine's machine, reached from here:
/// neither `localhost` nor an unspecified address (`0.0.0.0`, `::`), which would be
/// probed on this machine.
fn publish_ip(host: &str, remote: bool) -> Result<String> {
    if remote {
        return remote_publish_ip(host);
    }
    if host == "localhost" {
        return Ok("127.0.0.1".into());
    }
    let trimmed = host.trim_start_matches('[').trim_end_matches(']');
    trimmed.parse::<IpAddr>().map(|ip| ip.to_string()).map_err(|_| {
        Error::config(format!(
            "--host `{host}`: the docker runner publishes the container port on an IP address of this machine; \
             give one (default 127.0.0.1, loopback only)"
        ))
    })
}

fn remote_publish_ip(host: &str) -> Result<String> {
    let trimmed = host.trim_start_matches('[').trim_end_matches(']');
    match trimmed.parse::<IpAddr>() {
        Ok(ip) if !ip.is_unspecified() => Ok(ip.to_string()),
        _ => Err(Error::config(format!(
            "--host `{host}`: the Docker engine is remote ({}), so the container port is published on its \
             machine; give that machine's IP address as this machine reaches it (an IP literal, not 0.0.0.0 \
             nor a name), e.g. --host 192.0.2.10",
            engine::docker_host()
        ))),
    }
}

/// `tether-<name>-<8 hex>`, with characters docker refuses in a name replaced.
fn container_name(instance: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let clean: String = instance
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' })
        .collect();
    format!("tether-{clean}-{:08x}", h.finish() as u32)
}

#[async_trait]
impl Runner for DockerRunner {
    fn kind(&self) -> &'static str {
        "docker"
    }

    #[instrument(skip_all, fields(image = %self.image))]
    async fn check(&self) -> Result<RunnerInfo> {
        if self.image.is_empty() {
            return Err(Error::config("no image given for the docker runner; pass --image IMAGE"));
        }
        let docker = self.docker().await?;
        let version = engine::version(docker).await?;
        let port = self.container_port.map(|p| format!(" port {p}")).unwrap_or_default();
        Ok(RunnerInfo { tool_version: Some(version), fingerprint: format!("docker:{}{port}", self.image) })
    }

    #[instrument(skip_all, fields(image = %self.image, pull = ?self.pull))]
    async fn prepare(&self, _spec: &LaunchSpec, progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<()> {
        image::ensure(self.docker().await?, &self.image, self.pull, progress).await
    }

    #[instrument(skip_all, fields(instance = %spec.name, image = %self.image, port = spec.port))]
    async fn start(&self, spec: &LaunchSpec) -> Result<Box<dyn RunningBackend>> {
        let docker = self.docker().await?.clone();
        let container_port = match self.container_port.unwrap_or(spec.port) {
            0 => DEFAULT_CONTAINER_PORT,
            p => p,
        };
        let remote = engine::engine_is_remote();
        let host_ip = publish_ip(&spec.host, remote)?;
        // A remote engine probed at an address of this machine (a tunnel): a local
        // listener on the port would answer the probe instead of the container.
        let probe_local = remote && local::is_local_address(&host_ip);
        if probe_local && spec.port != 0 {
            let strangers = local::strangers(&host_ip, spec.port, None).await?;
            if !strangers.is_empty() {
                return Err(local::refusal(&host_ip, spec.port, &strangers, false));
            }
        }
        if matches!(spec.tethering, Tethering::Detached { lease: Some(_), .. }) && !guard::installed() {
            // Nothing would stop it after the last lease: refuse rather than leave it running.
            return Err(Error::config(
                "sharing a container needs its guard: call tether::install_guard() first thing in main \
                 (the tether binary does)",
            ));
        }

        let owner = match spec.tethering {
            Tethering::Detached { .. } => None,
            _ => Some(ProcessIdentity::current()),
        };
        if spec.cwd.is_some() {
            tracing::debug!("the working directory is a host path; the container keeps the image's");
        }
        let exposed = format!("{container_port}/tcp");
        let binding = PortBinding {
            host_ip: Some(host_ip),
            // 0: let the engine pick; the real port is read back below.
            host_port: Some(if spec.port == 0 { String::new() } else { spec.port.to_string() }),
        };
        let env = spec
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain([format!("{}={}", tether_core::process::INSTANCE_ENV, spec.name)])
            .collect();
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(container_args(spec, container_port)),
            env: Some(env),
            labels: Some(sweep::labels(&spec.name, owner)),
            exposed_ports: Some(vec![exposed.clone()]),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            host_config: Some(HostConfig {
                init: Some(true),
                auto_remove: Some(false),
                port_bindings: Some([(exposed.clone(), Some(vec![binding]))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = container_name(&spec.name);
        let created = docker
            .create_container(Some(CreateContainerOptions { name: Some(name.clone()), ..Default::default() }), body)
            .await
            .map_err(|e| engine::runner_error(&format!("cannot create container {name} from {}", self.image), e))?;
        let id = created.id;
        for w in created.warnings {
            tracing::warn!(container = %name, "engine: {w}");
        }
        // From here on, any failure removes the container. Its guard comes first, so
        // that the owner's death during the start is covered too.
        let guard = match &spec.tethering {
            Tethering::Guard { exe } if guard::installed() => Some(guard::ContainerGuard::spawn(exe, &id, spec)),
            // A shared container: its guard removes it once no front holds a lease.
            Tethering::Detached { exe, lease: Some((file, linger)), log_file, .. } => {
                Some(guard::ContainerGuard::spawn_leased(exe, &id, spec, (file, *linger), log_file))
            }
            _ => None,
        };
        let guard = match guard.transpose() {
            Ok(g) => g,
            Err(e) => {
                if let Err(re) = control::remove(&docker, &id).await {
                    tracing::warn!(error = %re.chain(), "removing the container whose guard did not start");
                }
                return Err(e);
            }
        };
        match run(&docker, &id, spec, &exposed, probe_local).await {
            Ok(mut backend) => {
                tracing::debug!(container = control::short(&id), name = %name, "container started");
                backend.guard = std::sync::Mutex::new(guard);
                Ok(Box::new(backend))
            }
            Err(e) => {
                match control::remove(&docker, &id).await {
                    Ok(()) => {
                        if let Some(g) = guard {
                            g.dismiss_async().await;
                        }
                    }
                    // The guard stays: the owner's death gets the removal a second try.
                    Err(re) => tracing::warn!(error = %re.chain(), "removing the container that failed to start"),
                }
                Err(e)
            }
        }
    }

    /// On a remote engine (`DOCKER_HOST=tcp://…`) ports are that machine's.
    fn placement(&self) -> tether_core::runner::Placement {
        if engine::engine_is_remote() {
            tether_core::runner::Placement::RemoteEngine
        } else {
            tether_core::runner::Placement::Local
        }
    }

    /// Its recorded instances are containers, reached on the engine each record names
    /// (the sweep: on this runner's engine): [`DockerReclaim`].
    fn reclaim(&self) -> std::sync::Arc<dyn Reclaim> {
        std::sync::Arc::new(DockerReclaim { docker: std::sync::Arc::clone(&self.docker) })
    }
}

/// The reclaiming role of the docker runner: a recorded instance is a container on
/// the engine its record names; the stale sweep looks on the runner's engine.
#[derive(Debug, Default)]
pub struct DockerReclaim {
    docker: std::sync::Arc<OnceCell<Docker>>,
}

impl DockerReclaim {
    /// For records only (`down`, `status`, `logs`): each record names its engine; the
    /// sweep uses the engine `DOCKER_HOST` names.
    pub fn new() -> Self {
        DockerReclaim::default()
    }

    async fn docker(&self) -> Result<&Docker> {
        self.docker.get_or_try_init(engine::connect).await
    }
}

#[async_trait]
impl Reclaim for DockerReclaim {
    /// Containers whose owner is provably gone are removed; a live one of `name`
    /// elsewhere is `Error::RunningUnrecorded`, one of another name on `port` is
    /// `Error::PortUsedByInstance` (see the `sweep` module).
    async fn sweep_stale(&self, name: &str, port: Option<u16>, grace: Duration) -> Result<()> {
        let docker = self.docker().await?;
        sweep::sweep(docker, &SweepTarget { name: Some(name), port }, grace).await.map(|_| ())
    }

    /// On the engine the record names (see [`connect_recorded`]): an unreachable one is
    /// an error naming it, never a container taken for gone.
    async fn stop_recorded(&self, record: &tether_core::state::Record, grace: Duration) -> Result<StopOutcome> {
        match container_of(record) {
            Some(id) => stop_container_on(&connect_recorded(record).await?, id, &record.name, grace).await,
            None => tether_core::process::stop_recorded(record, grace).await,
        }
    }

    /// Asked of the engine the record names; `None` (unknown) when it cannot be reached.
    async fn recorded_running(&self, record: &tether_core::state::Record) -> Option<bool> {
        let id = container_of(record)?;
        let docker = match connect_recorded(record).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(instance = %record.name, "cannot tell whether its container runs: {e}");
                return None;
            }
        };
        Some(running_on(&docker, id).await.unwrap_or(false))
    }

    async fn recorded_logs(
        &self,
        record: &tether_core::state::Record,
        follow: bool,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<bool> {
        let Some(id) = container_of(record) else { return Ok(false) };
        logs_on(&connect_recorded(record).await?, id, follow, out).await.map(|()| true)
    }

    /// A container whose engine cannot be reached may run on: its record is kept.
    fn keeps_unstoppable(&self, record: &tether_core::state::Record) -> bool {
        container_of(record).is_some()
    }
}

/// Attach, start, read back the published port, watch the exit. With `probe_local`
/// (a remote engine probed at an address of this machine), a process of this machine
/// listening on the published port is an error (see the `local` module).
async fn run(
    docker: &Docker,
    id: &str,
    spec: &LaunchSpec,
    exposed: &str,
    probe_local: bool,
) -> Result<ContainerBackend> {
    let relay = LogRelay::with_defaults(spec.name.clone());
    // Attached before the start, so not a line is missed.
    let attach = AttachContainerOptions { stream: true, stdout: true, stderr: true, ..Default::default() };
    let attached = docker
        .attach_container(id, Some(attach))
        .await
        .map_err(|e| engine::runner_error("cannot attach to the container's output", e))?;
    let logs = container::pump(std::sync::Arc::clone(&relay), attached.output);
    docker.start_container(id, None).await.map_err(|e| {
        let what = match spec.port {
            0 => "cannot start the container".to_string(),
            p if engine::engine_is_remote() => {
                format!("cannot start the container (is port {p} free on {} of the engine's machine?)", spec.host)
            }
            p => format!("cannot start the container (is host port {p} free?)"),
        };
        engine::runner_error(&what, e)
    })?;
    let exit = control::watch_exit(docker.clone(), id.to_string(), Some(logs));
    let inspected = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| engine::runner_error("cannot inspect the container", e))?;
    let published = inspected
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|mut p| p.remove(exposed))
        .flatten()
        .and_then(|b| b.into_iter().find_map(|b| b.host_port?.parse::<u16>().ok()));
    let port = match (published, spec.port) {
        (Some(p), _) => p,
        // It already exited: its ports are gone; the exit is reported by the readiness engine.
        (None, p) if p != 0 => p,
        (None, _) => {
            return Err(Error::Runner {
                message: "the engine did not report the published port".into(),
                stderr_tail: relay.tail(20),
                source: None,
            });
        }
    };
    if probe_local {
        let strangers = local::strangers(&spec.host, port, Some(id)).await?;
        if !strangers.is_empty() {
            return Err(local::refusal(&spec.host, port, &strangers, spec.port == 0));
        }
    }
    let stop_signal = inspected.config.and_then(|c| c.stop_signal).filter(|s| !s.is_empty());
    Ok(ContainerBackend {
        docker: docker.clone(),
        id: id.to_string(),
        instance: spec.name.clone(),
        endpoint: Endpoint { host: spec.host.clone(), port },
        relay,
        exit,
        stop_signal: stop_signal.unwrap_or_else(|| "SIGTERM".into()),
        released: AtomicBool::new(matches!(spec.tethering, Tethering::Detached { .. })),
        guard: std::sync::Mutex::new(None),
        probe_local,
    })
}

/// The engine a recorded container runs on: the one recorded when it was started
/// (`Record::engine`), whatever `DOCKER_HOST` says now; for a record written before
/// engines were recorded, the one `DOCKER_HOST` names. An unreachable recorded engine
/// is `Error::Unavailable` naming the engine and the instance (exit 1).
pub async fn connect_recorded(record: &tether_core::state::Record) -> Result<Docker> {
    engine::connect_recorded(record.runner_field(RECORD_ENGINE), &record.name).await
}

/// Stop the container `id` (its stop signal, `grace`, then `SIGKILL`) and remove it
/// with its anonymous volumes — `tether down` of a detached container — on the
/// engine `DOCKER_HOST` names. A container that is already gone is not an error.
/// Only a container labelled as tether's instance `instance` is touched; any other
/// is `Error::Refused` (see [`stop_container_on`]).
pub async fn stop_container(id: &str, instance: &str, grace: Duration) -> Result<StopOutcome> {
    stop_container_on(&engine::connect().await?, id, instance, grace).await
}

/// [`stop_container`] on the engine `docker` is connected to (a recorded container's:
/// [`connect_recorded`]). A container that engine does not know is already gone.
///
/// A record is a claim, not proof: the container is stopped only if its labels say
/// it is tether's (`tether=1`) and of this very instance (`tether.instance`);
/// otherwise nothing is signalled nor removed and the answer is `Error::Refused`
/// naming it.
#[instrument(skip_all, fields(container = control::short(id), instance))]
pub async fn stop_container_on(docker: &Docker, id: &str, instance: &str, grace: Duration) -> Result<StopOutcome> {
    let inspected = match docker.inspect_container(id, None).await {
        Ok(c) => c,
        Err(e) if engine::is_not_found(&e) => {
            return Ok(StopOutcome::Terminated { exit: tether_core::ExitStatus::Unknown });
        }
        Err(e) => return Err(engine::runner_error("cannot inspect the container", e)),
    };
    let config = inspected.config.unwrap_or_default();
    if !sweep::labelled_as(config.labels.as_ref(), instance) {
        let pid = inspected.state.and_then(|s| s.pid).and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
        let name = inspected.name.as_deref().unwrap_or("").trim_start_matches('/');
        let image = config.image.as_deref().unwrap_or("?");
        return Err(Error::Refused {
            pid,
            command: format!("container {} ({name}, image {image})", control::short(id)),
            why: format!(
                "its labels do not say it is tether's instance '{instance}' ({LABEL_TETHER}=1, \
                 {LABEL_INSTANCE}={instance}): it is not ours, so it was neither stopped nor removed"
            ),
        });
    }
    let signal = config.stop_signal.filter(|s| !s.is_empty());
    let exit = control::watch_exit(docker.clone(), id.to_string(), None);
    control::stop_and_remove(docker, id, signal.as_deref().unwrap_or("SIGTERM"), grace, exit).await
}

/// Whether the container `id` exists and runs on the engine `DOCKER_HOST` names (for
/// `status` of a detached container).
pub async fn container_running(id: &str) -> Result<bool> {
    running_on(&engine::connect().await?, id).await
}

/// Whether the container `id` exists and runs on the engine `docker` is connected to.
async fn running_on(docker: &Docker, id: &str) -> Result<bool> {
    match docker.inspect_container(id, None).await {
        Ok(c) => Ok(c.state.and_then(|s| s.running).unwrap_or(false)),
        Err(e) if engine::is_not_found(&e) => Ok(false),
        Err(e) => Err(engine::runner_error("cannot inspect the container", e)),
    }
}

/// Write the output the engine kept for container `id` (stdout and stderr, as
/// bytes) to `out`; with `follow`, keep writing until the container stops. This is
/// `tether logs` of a detached container: the engine keeps its output, not a log file.
pub async fn container_logs(id: &str, follow: bool, out: &mut (dyn std::io::Write + Send)) -> Result<()> {
    logs_on(&engine::connect().await?, id, follow, out).await
}

/// [`container_logs`] on the engine `docker` is connected to.
async fn logs_on(docker: &Docker, id: &str, follow: bool, out: &mut (dyn std::io::Write + Send)) -> Result<()> {
    use futures_util::StreamExt;
    let opts = bollard::query_parameters::LogsOptions {
        follow,
        stdout: true,
        stderr: true,
        tail: "all".into(),
        ..Default::default()
    };
    let mut stream = docker.logs(id, Some(opts));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            engine::runner_error(&format!("cannot read the output of container {}", control::short(id)), e)
        })?;
        out.write_all(chunk.as_ref())
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("cannot write the output", e))?;
    }
    Ok(())
}

/// Remove tether's stale containers: those whose owner is verifiably gone (labels:
/// owner pid + start time + boot id + pid namespace), and only those. Call before the port guard: a
/// port published by a container is held by `docker-proxy`, which the guard cannot
/// tell from a foreign process. A live container of `target`'s instance name — its
/// owner alive, or detached (another state directory's, or one whose record was
/// lost) — is `Error::RunningUnrecorded`, and a live container of another instance
/// publishing `target`'s port is `Error::PortUsedByInstance`; nothing is removed
/// then. Each stale one gets `grace` to stop. Returns the ids removed.
#[instrument(skip_all, fields(name = ?target.name, port = ?target.port))]
pub async fn sweep_stale(target: SweepTarget<'_>, grace: Duration) -> Result<Vec<String>> {
    let docker = engine::connect().await?;
    sweep::sweep(&docker, &target, grace).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_the_container_the_backend_listens_everywhere_on_the_container_port() {
        let spec = LaunchSpec::new("x", 40000).with_args(["--port", "{port}", "--host", "{host}", "; rm -rf ~"]);
        assert_eq!(container_args(&spec, 8000), ["--port", "8000", "--host", "0.0.0.0", "; rm -rf ~"]);
    }

    #[test]
    fn publish_addresses_are_ip_literals() {
        assert_eq!(publish_ip("127.0.0.1", false).ok().as_deref(), Some("127.0.0.1"));
        assert_eq!(publish_ip("localhost", false).ok().as_deref(), Some("127.0.0.1"));
        assert_eq!(publish_ip("[::1]", false).ok().as_deref(), Some("::1"));
        assert_eq!(publish_ip("example.com", false).expect_err("a name").exit_code(), 2);
    }

    #[test]
    fn a_remote_engine_publishes_on_a_given_address_of_its_machine() {
        assert_eq!(publish_ip("192.0.2.10", true).ok().as_deref(), Some("192.0.2.10"));
        assert_eq!(publish_ip("127.0.0.2", true).ok().as_deref(), Some("127.0.0.2"), "a tunnel's address");
        for bad in ["0.0.0.0", "::", "localhost", "engine.example"] {
            let e = publish_ip(bad, true).expect_err(bad);
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains("remote"), "{bad}: {e}");
        }
    }

    #[test]
    fn container_names_are_valid_and_distinct() {
        let a = container_name("my app");
        assert!(a.starts_with("tether-my-app-"), "{a}");
        assert_ne!(a, container_name("my app"));
    }
}
