//! Which runner to use, always compiled; building one whose cargo feature is off is
//! an error that names the feature, not a compile failure.

use std::str::FromStr;
use std::sync::Arc;

use tether_core::{Error, Result, Runner};

use crate::config::Plan;

/// The runners tether knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerKind {
    /// A preinstalled executable.
    Native,
    /// A Python package through `uvx`.
    Uvx,
    /// A container through the Docker Engine API.
    Docker,
}

impl RunnerKind {
    /// `native`, `uvx`, `docker`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RunnerKind::Native => "native",
            RunnerKind::Uvx => "uvx",
            RunnerKind::Docker => "docker",
        }
    }

    /// Whether this build has the runner.
    pub fn is_available(&self) -> bool {
        match self {
            RunnerKind::Native => cfg!(feature = "native"),
            RunnerKind::Uvx => cfg!(feature = "uvx"),
            RunnerKind::Docker => cfg!(feature = "docker"),
        }
    }
}

impl std::fmt::Display for RunnerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunnerKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "native" => Ok(RunnerKind::Native),
            "uvx" => Ok(RunnerKind::Uvx),
            "docker" => Ok(RunnerKind::Docker),
            other => Err(Error::config(format!("unknown runner `{other}`; use native, uvx or docker"))),
        }
    }
}

/// Build the runner a plan asks for.
pub fn build_runner(plan: &Plan) -> Result<Arc<dyn Runner>> {
    match plan.runner {
        RunnerKind::Native => native(plan),
        RunnerKind::Uvx => uvx(plan),
        RunnerKind::Docker => docker(plan),
    }
}

#[cfg(feature = "native")]
fn native(plan: &Plan) -> Result<Arc<dyn Runner>> {
    let (program, _) = plan.program()?;
    Ok(Arc::new(tether_runner_native::NativeRunner::new(program)))
}

#[cfg(not(feature = "native"))]
fn native(_plan: &Plan) -> Result<Arc<dyn Runner>> {
    Err(Error::config("this build of tether has no `native` runner; rebuild with the cargo feature `native`"))
}

#[cfg(feature = "uvx")]
fn uvx(plan: &Plan) -> Result<Arc<dyn Runner>> {
    let c = &plan.config;
    let package = c.package.as_deref().ok_or_else(|| {
        Error::config(
            "the uvx runner needs a package: --package PKG==VERSION (or `package = \"PKG==VERSION\"` in tether.toml)",
        )
    })?;
    let mut runner = tether_runner_uvx::UvxRunner::new(package)?.offline(c.offline.unwrap_or(false));
    if let Some(entry) = &c.entry {
        runner = runner.with_entry(entry);
    }
    if let Some(python) = &c.python {
        runner = runner.with_python(python);
    }
    if let Some(url) = &c.index_url {
        runner = runner.with_index_url(url);
    }
    if let Some(uvx) = &c.uvx {
        runner = runner.with_uvx(uvx);
    }
    Ok(Arc::new(runner))
}

#[cfg(not(feature = "uvx"))]
fn uvx(_plan: &Plan) -> Result<Arc<dyn Runner>> {
    Err(Error::config(
        "this build of tether has no `uvx` runner; rebuild with the cargo feature `uvx` \
         (it is on by default: `cargo build --features uvx`), or use --runner native",
    ))
}

#[cfg(feature = "docker")]
fn docker(plan: &Plan) -> Result<Arc<dyn Runner>> {
    let c = &plan.config;
    let image = c.image.as_deref().filter(|i| !i.is_empty()).ok_or_else(|| {
        Error::config("the docker runner needs an image: --image IMAGE (or `image = \"IMAGE\"` in tether.toml)")
    })?;
    let mut runner = tether_runner_docker::DockerRunner::new(image);
    if let Some(port) = c.container_port {
        runner = runner.with_container_port(port);
    }
    if let Some(pull) = &c.pull {
        runner = runner.with_pull(pull.parse()?);
    }
    Ok(Arc::new(runner))
}

/// Containers are not process groups: the state file's stale sweep and the port
/// guard cannot see them (a published port is held by the root `docker-proxy`,
/// which the guard would call foreign). Before the port guard of a docker start,
/// remove tether's stale containers: only those whose owner is provably gone. A
/// live container of this instance name (of another state directory, or whose
/// record was lost) is `Error::ContainerRunning`; a live container of another
/// instance on the port is `Error::PortUsedByInstance`.
#[cfg(feature = "docker")]
pub(crate) async fn sweep_containers(plan: &Plan) -> Result<()> {
    if plan.runner != RunnerKind::Docker {
        return Ok(());
    }
    let port = match plan.port {
        crate::PortChoice::Fixed(p) => Some(p),
        crate::PortChoice::Auto => None,
    };
    let target = tether_runner_docker::SweepTarget { name: Some(&plan.name), port };
    tether_runner_docker::sweep_stale(target, plan.grace).await.map(|_| ())
}

/// Without the docker runner there are no containers of ours to sweep.
#[cfg(not(feature = "docker"))]
pub(crate) async fn sweep_containers(_plan: &Plan) -> Result<()> {
    Ok(())
}

/// Stop and remove a recorded container (`down` of a detached docker instance).
#[cfg(feature = "docker")]
pub(crate) async fn stop_container(id: &str, grace: std::time::Duration) -> Result<tether_core::StopOutcome> {
    tether_runner_docker::stop_container(id, grace).await
}

/// A recorded container cannot be stopped by a build without the docker runner.
#[cfg(not(feature = "docker"))]
pub(crate) async fn stop_container(id: &str, _grace: std::time::Duration) -> Result<tether_core::StopOutcome> {
    Err(Error::config(format!(
        "instance runs in container {id}, and this build of tether has no `docker` runner; rebuild with the \
         cargo feature `docker`, or remove it with `docker rm -f {id}`"
    )))
}

#[cfg(not(feature = "docker"))]
fn docker(_plan: &Plan) -> Result<Arc<dyn Runner>> {
    Err(Error::config(
        "this build of tether has no `docker` runner; rebuild with the cargo feature `docker` \
         (it is on by default: `cargo build --features docker`), or use --runner native",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kinds_and_rejects_unknown_ones() {
        assert_eq!("uvx".parse::<RunnerKind>().ok(), Some(RunnerKind::Uvx));
        let e = "podman".parse::<RunnerKind>().expect_err("unknown");
        assert!(e.to_string().contains("native, uvx or docker"));
        assert_eq!(e.exit_code(), 2);
    }
}
