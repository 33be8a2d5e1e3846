//! Which runner to use, always compiled; building one whose cargo feature is off is
//! an error that names the feature, not a compile failure.

use std::str::FromStr;
use std::sync::Arc;

use tether_core::{Error, Reclaim, Result, Runner};

use crate::config::Plan;

/// The runners tether knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RunnerKind {
    /// A preinstalled executable.
    Native,
    /// A Python package through `uvx`.
    Uvx,
    /// A container through the Docker Engine API.
    Docker,
    /// A backend someone else runs, attached to by URL: nothing is started or signalled.
    Remote,
}

impl RunnerKind {
    /// `native`, `uvx`, `docker`, `remote`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RunnerKind::Native => "native",
            RunnerKind::Uvx => "uvx",
            RunnerKind::Docker => "docker",
            RunnerKind::Remote => "remote",
        }
    }

    /// Whether this build has the runner.
    pub fn is_available(&self) -> bool {
        match self {
            RunnerKind::Native => cfg!(feature = "native"),
            RunnerKind::Uvx => cfg!(feature = "uvx"),
            RunnerKind::Docker => cfg!(feature = "docker"),
            RunnerKind::Remote => cfg!(feature = "remote"),
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
            "remote" => Ok(RunnerKind::Remote),
            other => Err(Error::config(format!(
                "unknown runner `{other}`; use native, uvx or docker (or remote, with --url, for a backend someone else runs)"
            ))),
        }
    }
}

/// Build the runner a plan asks for.
pub fn build_runner(plan: &Plan) -> Result<Arc<dyn Runner>> {
    match plan.runner {
        RunnerKind::Native => native(plan),
        RunnerKind::Uvx => uvx(plan),
        RunnerKind::Docker => docker(plan),
        RunnerKind::Remote => remote(plan),
    }
}

#[cfg(feature = "remote")]
fn remote(plan: &Plan) -> Result<Arc<dyn Runner>> {
    Ok(Arc::new(tether_runner_remote::RemoteRunner::new(plan.remote_url()?)?))
}

#[cfg(not(feature = "remote"))]
fn remote(_plan: &Plan) -> Result<Arc<dyn Runner>> {
    Err(Error::config(
        "this build of tether has no `remote` runner; rebuild with the cargo feature `remote` \
         (it is on by default: `cargo build --features remote`)",
    ))
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
    let mut runner = tether_runner_uvx::UvxRunner::new(package)
        .map_err(|e| c.blame("package", e))?
        .offline(c.offline)
        .with_install_timeout(plan.install_timeout);
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
    for w in &c.with {
        runner = runner.with_requirement(w);
    }
    for file in &c.constraint {
        runner = runner.with_constraints(file);
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
        runner = runner.with_pull(pull.parse().map_err(|e| c.blame("pull", e))?);
    }
    Ok(Arc::new(runner))
}

/// The reclaiming role of the runner that recorded an instance — `down`, `status`,
/// `logs` and the stale sweep act on a record through it, so nothing here knows what a
/// container is. It needs no configuration (no image, program or package).
pub fn reclaim_of(record: &tether_core::state::Record) -> Result<Arc<dyn Reclaim>> {
    match record.runner.parse::<RunnerKind>()? {
        RunnerKind::Docker => recorded_docker(),
        // Someone else's backend: its recorded operations never touch it.
        RunnerKind::Remote => recorded_remote(),
        // A process backend, whatever started it: its group, its log file.
        RunnerKind::Native | RunnerKind::Uvx => Ok(Arc::new(tether_core::process::ProcessReclaim)),
    }
}

/// [`reclaim_of`] as [`tether_core::instance::ensure`] and `down` take it.
pub fn reclaimers() -> tether_core::instance::ReclaimOf {
    Arc::new(reclaim_of)
}

#[cfg(feature = "remote")]
fn recorded_remote() -> Result<Arc<dyn Reclaim>> {
    Ok(Arc::new(tether_runner_remote::RemoteReclaim))
}

/// Without the runner, a remote record still must never lead to a signal: the
/// process-group default would find no leader in it, but say so plainly instead.
#[cfg(not(feature = "remote"))]
fn recorded_remote() -> Result<Arc<dyn Reclaim>> {
    Err(Error::config(
        "the instance is a backend someone else runs (runner `remote`), and this build of tether has no \
         `remote` runner; rebuild with the cargo feature `remote`",
    ))
}

#[cfg(feature = "docker")]
fn recorded_docker() -> Result<Arc<dyn Reclaim>> {
    Ok(Arc::new(tether_runner_docker::DockerReclaim::new()))
}

#[cfg(not(feature = "docker"))]
fn recorded_docker() -> Result<Arc<dyn Reclaim>> {
    Err(Error::config(
        "the instance runs in a container, and this build of tether has no `docker` runner; rebuild with the \
         cargo feature `docker`, or remove it with `docker rm -f ID` (`tether status --json` shows the id)",
    ))
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
        assert_eq!("remote".parse::<RunnerKind>().ok(), Some(RunnerKind::Remote));
        assert_eq!(RunnerKind::Remote.as_str(), "remote");
        let e = "podman".parse::<RunnerKind>().expect_err("unknown");
        assert!(e.to_string().contains("native, uvx or docker"));
        assert_eq!(e.exit_code(), 2);
    }
}
