//! The container guard: a foreground container must not outlive its owner either.
//!
//! A process backend's guard is its parent (see `tether_core::guard`); a container's
//! processes belong to the engine, so its guard is a separate process: the owner's
//! program re-executed as `PROGRAM __tether-container-guard --parent PID --grace-ms N
//! --container ID --docker-host HOST`, in a process group of its own (a Ctrl-C at the
//! terminal is the owner's business), stdin and stdout null, stderr inherited (its
//! complaints reach the user), descriptors 0–2 only, `TETHER_INSTANCE=<name>` set.
//! It is spawned right after the container is created, so a crash during the start
//! or the readiness wait is covered too.
//!
//! It holds the parent-death signal ([`OwnerWatch`]: the exit of a mere thread of the
//! owner is told from its death) and, when the owner dies — even by SIGKILL — or a
//! stop signal reaches it, it starts a small single-threaded async runtime, checks
//! that the container is still the owner's (labels `tether=1`, this instance, this
//! owner's pid), stops it with the grace period (its stop signal, then `SIGKILL`) and
//! removes it with its anonymous volumes, and exits. Before the owner dies it does
//! nothing at all: no thread, no connection to the engine.
//!
//! The owner dismisses the guard (`SIGKILL` through the safety gate, then reaps it)
//! once the container is removed — by a stop, or the drop backstop — or when it is
//! deliberately left running (released). If the removal failed, the guard stays: the
//! owner's death then gets a second try.
//!
//! ## A shared container: lease mode
//! A detached container started with a lease (`Tethering::Detached { lease: Some(..) }`,
//! `up --share`, `mcp-proxy`) has no owner to watch: each front holds a lease (see
//! `tether_core::lease`). Its guard is then `PROGRAM __tether-container-guard --lease
//! FILE --linger-ms N --grace-ms G --container ID --docker-host HOST`, detached like
//! the guard of a shared process backend (not a descendant of its starter, nor in its
//! process group or session: `tether_core::sys::spawn_detached`; no parent-death
//! signal, stdin and stdout null, stderr appended to the instance's log file) so that
//! it survives its starter, even a host's kill of the starter's whole process tree. It
//! waits, on a thread, until no lease is held
//! (`tether_core::lease::wait_unleased`: the linger, then a re-check, so a front that
//! attaches meanwhile keeps the container), and meanwhile watches the container
//! through the API: once it is removed (`down`, a replacement) the guard simply exits.
//! When the leases are gone it keeps the lease file locked (no front attaches to what
//! is going away), checks that container ID is still tether's detached container of
//! this instance, stops and removes it as `down` does, and forgets the instance's
//! record if the record still names that container (a later instance's is left
//! alone). A container that exited by itself stays (for `status` and `logs`) until the
//! leases are gone, like the record of a process backend that ended.
//!
//! A program opts in with [`run_if_container_guard`] first thing in `main`, before
//! `tether_core::guard::run_if_guard` (`tether::install_guard` calls both); the docker
//! runner spawns a container guard only with `Tethering::Guard` and only when this
//! program did so (so the guard executable is known to answer to the argument).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::WaitContainerOptions;
use futures_util::StreamExt;
use tether_core::guard::{OwnerWatch, Wake};
use tether_core::procs::ProcessIdentity;
use tether_core::safety::{Claim, Gate};
use tether_core::state::StateDir;
use tether_core::sys::{self, Signal};
use tether_core::{Error, LaunchSpec, Result};

use crate::control::{short, stop_and_remove, watch_exit};
use crate::engine::{self, is_not_found, runner_error};
use crate::sweep::{LABEL_DETACHED, LABEL_INSTANCE, LABEL_OWNER_PID, LABEL_TETHER};

/// The first argument that turns a program into a container guard.
pub const CONTAINER_GUARD_ARG: &str = "__tether-container-guard";

/// How long [`ContainerGuard::dismiss`] waits for a SIGKILLed lease-mode guard (not our
/// child, so not reaped) to be gone.
const DISMISS_WAIT: Duration = Duration::from_secs(2);

/// Past the grace period, how long the stop and removal may take in all (a silent
/// engine must not keep the guard forever).
const ENGINE_SLACK: Duration = Duration::from_secs(30);

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main`, before any other thread starts: if this process was
/// started as a container guard, run it and exit; otherwise note that this
/// executable can serve as one and return.
pub fn run_if_container_guard() {
    let mut args = std::env::args_os();
    let _program = args.next();
    if args.next().as_deref() == Some(std::ffi::OsStr::new(CONTAINER_GUARD_ARG)) {
        let code = match GuardArgs::parse(args.collect()) {
            Ok(a) => run(a),
            Err(e) => {
                eprintln!("tether container guard: {e}");
                2
            }
        };
        std::process::exit(code);
    }
    INSTALLED.store(true, Ordering::Release);
}

/// Whether [`run_if_container_guard`] ran in this process, so the current executable
/// can be a container guard.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// What ends a container guard's watch.
#[derive(Debug, PartialEq)]
enum Watch {
    /// The owner's death (a foreground container): its pid.
    Owner(i32),
    /// The last lease on this file gone, and `linger` passed with none taken again
    /// (a shared, detached container).
    Leases { file: PathBuf, linger: Duration },
}

#[derive(Debug, PartialEq)]
struct GuardArgs {
    watch: Watch,
    grace: Duration,
    container: String,
    docker_host: Option<String>,
}

impl GuardArgs {
    fn parse(args: Vec<OsString>) -> std::result::Result<Self, String> {
        fn value(it: &mut std::vec::IntoIter<OsString>, name: &str) -> std::result::Result<String, String> {
            it.next().and_then(|v| v.into_string().ok()).ok_or(format!("{name} needs a value"))
        }
        fn millis(it: &mut std::vec::IntoIter<OsString>, name: &str) -> std::result::Result<Duration, String> {
            let ms = value(it, name)?.parse().map_err(|e| format!("{name}: {e}"))?;
            Ok(Duration::from_millis(ms))
        }
        let mut it = args.into_iter();
        let (mut parent, mut grace, mut container, mut docker_host) = (None, Duration::from_secs(5), None, None);
        let (mut lease, mut linger) = (None, Duration::ZERO);
        while let Some(arg) = it.next() {
            match arg.to_str() {
                Some("--parent") => {
                    parent = Some(value(&mut it, "--parent")?.parse::<i32>().map_err(|e| format!("--parent: {e}"))?)
                }
                Some("--grace-ms") => grace = millis(&mut it, "--grace-ms")?,
                Some("--lease") => lease = Some(PathBuf::from(it.next().ok_or("--lease needs a value")?)),
                Some("--linger-ms") => linger = millis(&mut it, "--linger-ms")?,
                Some("--container") => container = Some(value(&mut it, "--container")?),
                Some("--docker-host") => docker_host = Some(value(&mut it, "--docker-host")?),
                _ => return Err(format!("unexpected container guard argument {arg:?}")),
            }
        }
        let watch = match (parent, lease) {
            (Some(_), Some(_)) => return Err("--parent and --lease exclude each other".into()),
            (None, Some(file)) if file.as_os_str().is_empty() => return Err("--lease FILE is empty".into()),
            (None, Some(file)) => Watch::Leases { file, linger },
            (parent, None) => {
                Watch::Owner(parent.filter(|p| *p > 1).ok_or("--parent PID (> 1) or --lease FILE is required")?)
            }
        };
        let container = container.filter(|c| !c.is_empty()).ok_or("--container ID is required")?;
        Ok(GuardArgs { watch, grace, container, docker_host })
    }
}

fn run(args: GuardArgs) -> i32 {
    match &args.watch {
        Watch::Owner(parent) => run_owned(&args, *parent),
        Watch::Leases { file, linger } => run_leased(&args, file, *linger),
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("tether container guard: cannot start the async runtime: {e}");
            None
        }
    }
}

async fn connect(args: &GuardArgs) -> Result<Docker> {
    match &args.docker_host {
        Some(host) => engine::connect_to(host).await,
        None => engine::connect().await,
    }
}

fn timed_out(limit: Duration) -> Error {
    Error::Runner {
        message: format!("the engine did not stop and remove it within {}s", limit.as_secs()),
        stderr_tail: Vec::new(),
        source: None,
    }
}

fn run_owned(args: &GuardArgs, parent: i32) -> i32 {
    let watch = match OwnerWatch::arm(parent) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("tether container guard: cannot watch the owner (pid {parent}): {e}");
            return 1;
        }
    };
    // The owner died, or someone asked the guard to stop: either way the container goes.
    let _: Wake = watch.wait();
    let Some(runtime) = runtime() else { return 1 };
    let instance = std::env::var(tether_core::process::INSTANCE_ENV).unwrap_or_default();
    let limit = args.grace + ENGINE_SLACK;
    let removed = runtime.block_on(async {
        match tokio::time::timeout(limit, remove_owned(args, parent, &instance)).await {
            Ok(r) => r,
            Err(_) => Err(timed_out(limit)),
        }
    });
    match removed {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "tether container guard: container {} of instance '{instance}' (owner pid {parent} gone): {}",
                short(&args.container),
                e.chain()
            );
            1
        }
    }
}

/// Stop and remove the container, if it is still the owner's: labelled as tether's,
/// of this instance, and of this owner. Gone already is fine.
async fn remove_owned(args: &GuardArgs, parent: i32, instance: &str) -> Result<()> {
    let docker = connect(args).await?;
    let inspected = match docker.inspect_container(&args.container, None).await {
        Ok(c) => c,
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(runner_error("cannot inspect the container", e)),
    };
    let config = inspected.config.unwrap_or_default();
    let labels = config.labels.unwrap_or_default();
    let label = |k: &str| labels.get(k).map(String::as_str);
    let parent = parent.to_string();
    if label(LABEL_TETHER) != Some("1")
        || label(LABEL_INSTANCE) != Some(instance)
        || label(LABEL_OWNER_PID) != Some(&parent)
    {
        return Err(Error::Runner {
            message: format!(
                "refusing to remove it: its labels do not name instance '{instance}' of owner pid {parent} ({labels:?})"
            ),
            stderr_tail: Vec::new(),
            source: None,
        });
    }
    stop_owned(&docker, &args.container, config.stop_signal.filter(|s| !s.is_empty()), args.grace).await
}

async fn stop_owned(docker: &Docker, id: &str, stop_signal: Option<String>, grace: Duration) -> Result<()> {
    let exit = watch_exit(docker.clone(), id.to_string(), None);
    stop_and_remove(docker, id, stop_signal.as_deref().unwrap_or("SIGTERM"), grace, exit).await.map(|_| ())
}

/// The first wait before a lease-mode guard tries again after a failure.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between a lease-mode guard's tries.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The wait after `delay` (doubling, at most [`RETRY_MAX`]).
fn backoff(delay: Duration) -> Duration {
    (delay * 2).min(RETRY_MAX)
}

/// Lease mode: wait until no lease is held (or the container is removed meanwhile),
/// then stop and remove the container and forget its record. A failure (the engine,
/// the lease watch) is tried again with a backoff (1 s doubling to 30 s) for as long
/// as the container exists with the labels of this detached instance: the guard gives
/// up only when the container is gone or not this instance's (refused), so a shared
/// container never runs on for want of a second try.
fn run_leased(args: &GuardArgs, file: &Path, linger: Duration) -> i32 {
    let instance = std::env::var(tether_core::process::INSTANCE_ENV).unwrap_or_default();
    let Some(runtime) = runtime() else { return 1 };
    let result = runtime.block_on(async {
        let mut delay = RETRY_FIRST;
        loop {
            match leased_once(args, &instance, file, linger).await {
                Ok(()) => return Ok(()),
                Err(e @ Error::Refused { .. }) => return Err(e),
                Err(e) => {
                    eprintln!(
                        "tether container guard: shared container {} of instance '{instance}': {}; retrying in {}s",
                        short(&args.container),
                        e.chain(),
                        delay.as_secs()
                    );
                    tokio::time::sleep(delay).await;
                    delay = backoff(delay);
                }
            }
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "tether container guard: shared container {} of instance '{instance}': {}",
                short(&args.container),
                e.chain()
            );
            1
        }
    }
}

/// One round of the lease-mode guard: `Ok` once the container is removed (by us or by
/// someone else), `Error::Refused` when it is not this instance's, any other error to
/// be tried again.
async fn leased_once(args: &GuardArgs, instance: &str, file: &Path, linger: Duration) -> Result<()> {
    let (tx, unleased) = tokio::sync::oneshot::channel();
    let watched = file.to_path_buf();
    // Blocking flock waits: a thread of their own. Should the container go first, the
    // process exits and the thread with it.
    std::thread::Builder::new()
        .name("tether-leases".into())
        .spawn(move || drop(tx.send(tether_core::lease::wait_unleased(&watched, linger))))
        .map_err(|e| Error::io(format!("cannot watch the leases on {}", file.display()), e))?;
    tokio::select! {
        () = removed(args) => {
            // `down`, or a replacement's sweep: nothing is left for us to do.
            Ok(())
        }
        r = unleased => match r {
            Ok(Ok(held)) => {
                let limit = args.grace + ENGINE_SLACK;
                let stopped = match tokio::time::timeout(limit, remove_leased(args, instance, file)).await {
                    Ok(r) => r,
                    Err(_) => Err(timed_out(limit)),
                };
                // Fronts may attach again (and start a new container): only now.
                drop(held);
                stopped
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Runner {
                message: "the lease watch ended without an answer".into(),
                stderr_tail: Vec::new(),
                source: None,
            }),
        },
    }
}

/// Resolves once the container is removed (by `down`, or a replacement's sweep). An
/// engine that cannot be reached or drops the connection is asked again; a container
/// that merely exited is not removed.
async fn removed(args: &GuardArgs) {
    let mut docker: Option<Docker> = None;
    loop {
        let d = match &docker {
            Some(d) => d.clone(),
            None => match connect(args).await {
                Ok(d) => docker.insert(d).clone(),
                Err(_) => {
                    tokio::time::sleep(ENGINE_RETRY).await;
                    continue;
                }
            },
        };
        let opts = WaitContainerOptions { condition: "removed".into() };
        match d.wait_container(&args.container, Some(opts)).next().await {
            // bollard reports a non-zero exit code as an error: it is removed all the same.
            Some(Ok(_) | Err(DockerError::DockerContainerWaitError { .. })) => return,
            Some(Err(e)) if is_not_found(&e) => return,
            // The request's timeout: wait again at once.
            Some(Err(DockerError::RequestTimeoutError)) => continue,
            _ => {}
        }
        match d.inspect_container(&args.container, None).await {
            Err(e) if is_not_found(&e) => return,
            Ok(_) => {}
            Err(_) => docker = None,
        }
        tokio::time::sleep(ENGINE_RETRY).await;
    }
}

/// How long a lease-mode guard waits before asking an engine that failed again.
const ENGINE_RETRY: Duration = Duration::from_secs(2);

/// Stop and remove the shared container, if it is still tether's detached container
/// of this instance, then forget the instance's record if it names this container.
async fn remove_leased(args: &GuardArgs, instance: &str, lease: &Path) -> Result<()> {
    let docker = connect(args).await?;
    match docker.inspect_container(&args.container, None).await {
        Ok(inspected) => {
            let config = inspected.config.unwrap_or_default();
            let labels = config.labels.unwrap_or_default();
            let label = |k: &str| labels.get(k).map(String::as_str);
            if label(LABEL_TETHER) != Some("1")
                || label(LABEL_INSTANCE) != Some(instance)
                || label(LABEL_DETACHED) != Some("1")
            {
                let pid = inspected.state.and_then(|s| s.pid).and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
                return Err(Error::Refused {
                    pid,
                    command: format!("container {}", short(&args.container)),
                    why: format!(
                        "its labels do not name the detached instance '{instance}' ({labels:?}); it is left alone"
                    ),
                });
            }
            stop_owned(&docker, &args.container, config.stop_signal.filter(|s| !s.is_empty()), args.grace).await?;
        }
        // Gone already: only its record may be left.
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(runner_error("cannot inspect the container", e)),
    }
    forget_record(lease, instance, &args.container, FORGET_LOCK_TIMEOUT).await;
    Ok(())
}

/// How long the lease-mode guard waits for the instance lock before it leaves the
/// record alone (a record naming a removed container is swept by the next start).
const FORGET_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Remove the record of `instance` beside `lease` (the state directory) if it names
/// container `id`: nobody will `down` a shared container that stopped by itself, and a
/// record of a later instance of the same name is left alone. The load, the comparison
/// and the removal happen under the instance lock (waiting up to `lock_timeout`), so a
/// record saved meanwhile by a new `up` is never the one removed.
async fn forget_record(lease: &Path, instance: &str, id: &str, lock_timeout: Duration) {
    let Some(dir) = lease.parent().filter(|d| d.is_dir()) else { return };
    let state = match StateDir::at(dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tether container guard: not forgetting the record of '{instance}': {}", e.chain());
            return;
        }
    };
    if StateDir::check_name(instance).is_err() || state.lease_path(instance) != lease {
        return;
    }
    let _lock = match state.lock(instance, lock_timeout).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "tether container guard: not forgetting the record of '{instance}' (its lock is held): {}",
                e.chain()
            );
            return;
        }
    };
    match state.load(instance) {
        Ok(Some(r)) if crate::container_of(&r) == Some(id) => {
            if let Err(e) = state.remove(instance) {
                eprintln!("tether container guard: cannot forget the record of '{instance}': {}", e.chain());
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!("tether container guard: not forgetting the record of '{instance}': {}", e.chain()),
    }
}

/// A running container guard: a child of this process, or — a lease-mode guard — not
/// even a descendant of it (see [`ContainerGuard::spawn_leased`]).
#[derive(Debug)]
pub(crate) struct ContainerGuard {
    /// `None` for a lease-mode guard: not ours to reap.
    child: Option<Child>,
    identity: ProcessIdentity,
    instance: String,
    /// A lease-mode guard: it outlives this process, and is never dismissed on release.
    leased: bool,
}

impl ContainerGuard {
    /// Start `exe` as the guard of container `id` of the instance `spec` describes,
    /// watching this process.
    pub(crate) fn spawn(exe: &Path, id: &str, spec: &LaunchSpec) -> Result<Self> {
        let mode = ["--parent".into(), std::process::id().to_string().into()];
        let mut command = guard_command(exe, id, spec, &mode);
        command.stderr(Stdio::inherit());
        sys::own_group(&mut command);
        let guard = Self::start(command, exe, spec, false)?;
        tracing::debug!(pid = guard.identity.pid, container = short(id), "container guard spawned");
        Ok(guard)
    }

    /// Spawn `command` (a [`guard_command`]) as the guard of `spec`'s container: `leased`,
    /// outside this process's tree, group and session; otherwise as its child.
    fn start(mut command: Command, exe: &Path, spec: &LaunchSpec, leased: bool) -> Result<Self> {
        // No descriptor of ours (a lease would keep the container forever).
        tether_core::guard::close_inherited_fds_on_exec(&mut command);
        let failed = |source| Error::Spawn { program: format!("{} {CONTAINER_GUARD_ARG}", exe.display()), source };
        let (child, pid) = if leased {
            (None, sys::spawn_detached(&mut command).map_err(failed)?)
        } else {
            let child = command.spawn().map_err(failed)?;
            let pid = child.id();
            (Some(child), pid)
        };
        // Gone already (it found the owner dead, say): an identity that is never alive.
        let identity = ProcessIdentity::of(pid).unwrap_or(ProcessIdentity { pid, start_time: 0 });
        Ok(ContainerGuard { child, identity, instance: spec.name.clone(), leased })
    }

    /// Start `exe` as the lease-mode guard of the shared container `id` of the instance
    /// `spec` describes: not a descendant of this process, nor in its process group or
    /// session ([`sys::spawn_detached`]), so that it survives this process however it is
    /// stopped (a host kills a window's whole tree, or its group); it removes the
    /// container `linger` after no lease on `lease` is held. Its complaints go to `log`
    /// (appended; never through a symlink), or nowhere if that cannot be opened.
    pub(crate) fn spawn_leased(
        exe: &Path,
        id: &str,
        spec: &LaunchSpec,
        (lease, linger): (&Path, Duration),
        log: &Path,
    ) -> Result<Self> {
        let stderr = match tether_core::guard::open_private(log, true) {
            Ok(f) => Stdio::from(f),
            Err(e) => {
                tracing::warn!(log = %log.display(), error = %e, "the container guard's messages are not kept");
                Stdio::null()
            }
        };
        let mode = ["--lease".into(), lease.into(), "--linger-ms".into(), linger.as_millis().to_string().into()];
        let mut command = guard_command(exe, id, spec, &mode);
        command.stderr(stderr);
        let guard = Self::start(command, exe, spec, true)?;
        tracing::debug!(pid = guard.identity.pid, container = short(id), lease = %lease.display(), "lease-mode container guard spawned");
        Ok(guard)
    }

    /// Whether this is a lease-mode guard, which the container is left to.
    pub(crate) fn leased(&self) -> bool {
        self.leased
    }

    /// Leave the guard to its work (a shared container left running). A lease-mode
    /// guard is not our child: there is nothing to reap. A child is reaped on a thread
    /// of its own whenever it ends, so it never lingers as a zombie of ours.
    pub(crate) fn let_go(self) {
        let Some(mut child) = self.child else { return };
        let spawned = std::thread::Builder::new().name("tether-guard-reaper".into()).spawn(move || {
            let _ = child.wait();
        });
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "the container guard is reaped when this process ends");
        }
    }

    /// The guard's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.identity.pid
    }

    /// The guard's identity (pid + start time).
    pub(crate) fn identity(&self) -> ProcessIdentity {
        self.identity
    }

    /// End the guard (the container is removed, or deliberately left running):
    /// `SIGKILL` through the safety gate, then reap it (a lease-mode guard, not our
    /// child: wait until it is gone, at most [`DISMISS_WAIT`]). Blocks only as long as
    /// the kernel takes to end a killed process.
    pub(crate) fn dismiss(self) {
        match Gate::new().signal(self.identity, Signal::SIGKILL, &Claim::instance(self.instance.clone())) {
            Ok(_) => match self.child {
                Some(mut child) => {
                    if let Err(e) = child.wait() {
                        tracing::debug!(pid = self.identity.pid, error = %e, "cannot reap the container guard");
                    }
                }
                None => {
                    let deadline = std::time::Instant::now() + DISMISS_WAIT;
                    while self.identity.is_alive() && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            },
            Err(refused) => tracing::warn!(%refused, "not dismissing the container guard"),
        }
    }

    /// [`dismiss`](Self::dismiss) off the async runtime's thread.
    pub(crate) async fn dismiss_async(self) {
        if let Err(e) = tokio::task::spawn_blocking(move || self.dismiss()).await {
            tracing::debug!(error = %e, "dismissing the container guard");
        }
    }
}

/// `exe __tether-container-guard MODE… --grace-ms G --container ID --docker-host HOST`,
/// fingerprinted with the instance, stdin and stdout on /dev/null.
fn guard_command(exe: &Path, id: &str, spec: &LaunchSpec, mode: &[OsString]) -> Command {
    let mut command = Command::new(exe);
    command
        .arg(CONTAINER_GUARD_ARG)
        .args(mode)
        .arg("--grace-ms")
        .arg(spec.grace.as_millis().to_string())
        .arg("--container")
        .arg(id)
        .arg("--docker-host")
        .arg(engine::docker_host())
        .env(tether_core::process::INSTANCE_ENV, &spec.name)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container_record(name: &str, id: &str) -> tether_core::state::Record {
        tether_core::state::Record {
            name: name.into(),
            runner: "docker".into(),
            fingerprint: "docker:x".into(),
            detached: true,
            owner: None,
            leader: None,
            pgid: None,
            backend_pid: None,
            host: "127.0.0.1".into(),
            port: 9,
            url: "http://127.0.0.1:9".into(),
            started_at_unix_ms: 0,
            tool_version: None,
            log_file: None,
            grace_ms: 100,
            restarts: 0,
            lease_guard: None,
            runner_fields: [(crate::RECORD_CONTAINER.to_string(), serde_json::Value::from(id))].into_iter().collect(),
        }
    }

    /// The guard forgets a record only under the instance lock: while `up` holds it
    /// (about to save a newer record), the record is not touched.
    #[tokio::test]
    async fn the_record_is_forgotten_only_under_the_instance_lock() {
        let dir = tempfile::tempdir().expect("state dir");
        let state = StateDir::at(dir.path()).expect("state");
        let lease = state.lease_path("x");
        state.save(&container_record("x", "old")).expect("save");
        let held = state.lock("x", Duration::from_secs(1)).await.expect("lock");
        forget_record(&lease, "x", "old", Duration::from_millis(50)).await;
        assert!(state.load("x").expect("load").is_some(), "removed while another process held the instance lock");
        // Meanwhile the lock holder saves a newer instance: it is never removed.
        state.save(&container_record("x", "new")).expect("save");
        drop(held);
        forget_record(&lease, "x", "old", Duration::from_secs(1)).await;
        assert_eq!(state.load("x").expect("load").as_ref().and_then(crate::container_of), Some("new"));
        // Its own record, with the lock free: forgotten.
        state.save(&container_record("x", "old")).expect("save");
        forget_record(&lease, "x", "old", Duration::from_secs(1)).await;
        assert!(state.load("x").expect("load").is_none(), "its own record is forgotten");
    }

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_failed_round_is_tried_again_after_a_growing_wait() {
        let mut waits = vec![RETRY_FIRST];
        for _ in 0..7 {
            waits.push(backoff(waits[waits.len() - 1]));
        }
        assert_eq!(waits.iter().map(Duration::as_secs).collect::<Vec<_>>(), [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn parses_container_guard_arguments() {
        let a = GuardArgs::parse(args(&[
            "--parent",
            "12",
            "--grace-ms",
            "250",
            "--container",
            "abc",
            "--docker-host",
            "unix:///x.sock",
        ]))
        .expect("parses");
        assert_eq!(
            a,
            GuardArgs {
                watch: Watch::Owner(12),
                grace: Duration::from_millis(250),
                container: "abc".into(),
                docker_host: Some("unix:///x.sock".into())
            }
        );
        let leased = GuardArgs::parse(args(&["--lease", "/s/x.lease", "--linger-ms", "300", "--container", "abc"]))
            .expect("lease mode parses");
        assert_eq!(leased.watch, Watch::Leases { file: "/s/x.lease".into(), linger: Duration::from_millis(300) });
        assert!(
            GuardArgs::parse(args(&["--parent", "12", "--lease", "/s/x.lease", "--container", "abc"])).is_err(),
            "an owner and leases"
        );
        assert!(GuardArgs::parse(args(&["--lease", "", "--container", "abc"])).is_err(), "an empty lease path");
        assert!(GuardArgs::parse(args(&["--lease", "/s/x.lease", "--linger-ms", "x", "--container", "a"])).is_err());
        assert!(GuardArgs::parse(args(&["--container", "abc"])).is_err(), "no parent");
        assert!(GuardArgs::parse(args(&["--parent", "1", "--container", "abc"])).is_err(), "init is no owner");
        assert!(GuardArgs::parse(args(&["--parent", "12"])).is_err(), "no container");
        assert!(GuardArgs::parse(args(&["--parent"])).is_err(), "no value");
        assert!(GuardArgs::parse(args(&["--parent", "12", "--container", "a", "--x"])).is_err(), "unknown");
    }
}
