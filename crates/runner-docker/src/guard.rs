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
//! A program opts in with [`run_if_container_guard`] first thing in `main`, before
//! `tether_core::guard::run_if_guard` (`tether::install_guard` calls both); the docker
//! runner spawns a container guard only with `Tethering::Guard` and only when this
//! program did so (so the guard executable is known to answer to the argument).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bollard::Docker;
use nix::sys::signal::Signal;
use tether_core::guard::{OwnerWatch, Wake};
use tether_core::procs::ProcessIdentity;
use tether_core::safety::{Claim, Gate};
use tether_core::{Error, LaunchSpec, Result};

use crate::container::{short, stop_and_remove, watch_exit};
use crate::engine::{self, is_not_found, runner_error};
use crate::sweep::{LABEL_INSTANCE, LABEL_OWNER_PID, LABEL_TETHER};

/// The first argument that turns a program into a container guard.
pub const CONTAINER_GUARD_ARG: &str = "__tether-container-guard";

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

#[derive(Debug, PartialEq)]
struct GuardArgs {
    parent: i32,
    grace: Duration,
    container: String,
    docker_host: Option<String>,
}

impl GuardArgs {
    fn parse(args: Vec<OsString>) -> std::result::Result<Self, String> {
        fn value(it: &mut std::vec::IntoIter<OsString>, name: &str) -> std::result::Result<String, String> {
            it.next().and_then(|v| v.into_string().ok()).ok_or(format!("{name} needs a value"))
        }
        let mut it = args.into_iter();
        let (mut parent, mut grace, mut container, mut docker_host) = (None, Duration::from_secs(5), None, None);
        while let Some(arg) = it.next() {
            match arg.to_str() {
                Some("--parent") => {
                    parent = Some(value(&mut it, "--parent")?.parse::<i32>().map_err(|e| format!("--parent: {e}"))?)
                }
                Some("--grace-ms") => {
                    let ms = value(&mut it, "--grace-ms")?.parse().map_err(|e| format!("--grace-ms: {e}"))?;
                    grace = Duration::from_millis(ms);
                }
                Some("--container") => container = Some(value(&mut it, "--container")?),
                Some("--docker-host") => docker_host = Some(value(&mut it, "--docker-host")?),
                _ => return Err(format!("unexpected container guard argument {arg:?}")),
            }
        }
        let parent = parent.filter(|p| *p > 1).ok_or("--parent PID (> 1) is required")?;
        let container = container.filter(|c| !c.is_empty()).ok_or("--container ID is required")?;
        Ok(GuardArgs { parent, grace, container, docker_host })
    }
}

fn run(args: GuardArgs) -> i32 {
    let watch = match OwnerWatch::arm(args.parent) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("tether container guard: cannot watch the owner (pid {}): {e}", args.parent);
            return 1;
        }
    };
    // The owner died, or someone asked the guard to stop: either way the container goes.
    let _: Wake = watch.wait();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether container guard: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let instance = std::env::var(tether_core::process::INSTANCE_ENV).unwrap_or_default();
    let limit = args.grace + ENGINE_SLACK;
    let removed = runtime.block_on(async {
        match tokio::time::timeout(limit, remove_owned(&args, &instance)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Runner {
                message: format!("the engine did not stop and remove it within {}s", limit.as_secs()),
                stderr_tail: Vec::new(),
                source: None,
            }),
        }
    });
    match removed {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "tether container guard: container {} of instance '{instance}' (owner pid {} gone): {}",
                short(&args.container),
                args.parent,
                e.chain()
            );
            1
        }
    }
}

/// Stop and remove the container, if it is still the owner's: labelled as tether's,
/// of this instance, and of this owner. Gone already is fine.
async fn remove_owned(args: &GuardArgs, instance: &str) -> Result<()> {
    let docker = match &args.docker_host {
        Some(host) => engine::connect_to(host).await?,
        None => engine::connect().await?,
    };
    let inspected = match docker.inspect_container(&args.container, None).await {
        Ok(c) => c,
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(runner_error("cannot inspect the container", e)),
    };
    let config = inspected.config.unwrap_or_default();
    let labels = config.labels.unwrap_or_default();
    let label = |k: &str| labels.get(k).map(String::as_str);
    let parent = args.parent.to_string();
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

/// A running container guard, a child of this process.
#[derive(Debug)]
pub(crate) struct ContainerGuard {
    child: Child,
    identity: ProcessIdentity,
    instance: String,
}

impl ContainerGuard {
    /// Start `exe` as the guard of container `id` of the instance `spec` describes,
    /// watching this process.
    pub(crate) fn spawn(exe: &Path, id: &str, spec: &LaunchSpec) -> Result<Self> {
        let mut command = Command::new(exe);
        command
            .arg(CONTAINER_GUARD_ARG)
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--grace-ms")
            .arg(spec.grace.as_millis().to_string())
            .arg("--container")
            .arg(id)
            .arg("--docker-host")
            .arg(engine::docker_host())
            .env(tether_core::process::INSTANCE_ENV, &spec.name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0);
        tether_core::guard::close_inherited_fds_on_exec(&mut command);
        let child = command
            .spawn()
            .map_err(|source| Error::Spawn { program: format!("{} {CONTAINER_GUARD_ARG}", exe.display()), source })?;
        let pid = child.id();
        // Gone already (it found the owner dead, say): an identity that is never alive.
        let identity = ProcessIdentity::of(pid).unwrap_or(ProcessIdentity { pid, start_time: 0 });
        tracing::debug!(pid, container = short(id), "container guard spawned");
        Ok(ContainerGuard { child, identity, instance: spec.name.clone() })
    }

    /// The guard's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.identity.pid
    }

    /// End the guard (the container is removed, or deliberately left running):
    /// `SIGKILL` through the safety gate, then reap it. Blocks only as long as the
    /// kernel takes to end a killed process.
    pub(crate) fn dismiss(mut self) {
        match Gate::new().signal(self.identity, Signal::SIGKILL, &Claim::instance(self.instance.clone())) {
            Ok(_) => {
                if let Err(e) = self.child.wait() {
                    tracing::debug!(pid = self.identity.pid, error = %e, "cannot reap the container guard");
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
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
                parent: 12,
                grace: Duration::from_millis(250),
                container: "abc".into(),
                docker_host: Some("unix:///x.sock".into())
            }
        );
        assert!(GuardArgs::parse(args(&["--container", "abc"])).is_err(), "no parent");
        assert!(GuardArgs::parse(args(&["--parent", "1", "--container", "abc"])).is_err(), "init is no owner");
        assert!(GuardArgs::parse(args(&["--parent", "12"])).is_err(), "no container");
        assert!(GuardArgs::parse(args(&["--parent"])).is_err(), "no value");
        assert!(GuardArgs::parse(args(&["--parent", "12", "--container", "a", "--x"])).is_err(), "unknown");
    }
}
