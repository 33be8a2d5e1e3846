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
            // The uvx and docker runners are delivered by their own issues.
            RunnerKind::Uvx | RunnerKind::Docker => false,
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
        kind @ (RunnerKind::Uvx | RunnerKind::Docker) => Err(Error::config(format!(
            "this build of tether has no `{kind}` runner; rebuild with the cargo feature `{kind}` \
             (it is on by default: `cargo build --features {kind}`), or use --runner native"
        ))),
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
