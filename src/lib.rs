//! # tether
//!
//! Start a backend server for your program — a preinstalled executable, a Python
//! package through `uvx`, or a Docker container — wait until it is really ready,
//! relay its logs, stop it cleanly, and never leave it behind nor touch a process
//! that is not yours.
//!
//! ```no_run
//! // First thing in `main`, before any thread or async runtime starts:
//! tether::install_guard();
//! # async fn demo() -> tether::Result<()> {
//! let mut config = tether::Config::default();
//! config.args = vec!["my-server".into(), "--port".into(), "{port}".into()];
//! config.preset = Some("claude-skills".into());
//! let backend = tether::ensure_running(config.plan()?, tether::EnsureOptions::default()).await?;
//! println!("ready at {}", backend.url());
//! backend.stop().await?;
//! # Ok(()) }
//! ```
//!
//! The runners are cargo features (`native`, `uvx`, `docker`, all on by default);
//! [`RunnerKind`] is always compiled and choosing one that is not built in is an error
//! naming the feature.
#![warn(missing_docs)]

pub mod config;
mod ensure;
mod kind;
#[cfg(feature = "mcp")]
pub mod mcp;
mod starter;

pub use config::{Config, EnvVars, McpProxyFlags, Plan, PortChoice, Source, parse_duration};
pub use ensure::{Down, EnsureOptions, Handle, down, down_report, ensure_running, ensure_with};
pub use kind::{RunnerKind, build_runner, reclaim_of, reclaimers};
pub use starter::{EnsureStarter, supervisor_options};
/// The core crate, for runner and probe implementers.
pub use tether_core as core;
pub use tether_core::{
    Endpoint, Error, ExitStatus, HealthProbe, Identity, Instance, LaunchSpec, Lifecycle, Progress, Result, Runner,
    RunningBackend, State, StopOutcome, Supervisor, SupervisorOptions, SupervisorState,
};

/// The docker runner's crate: `stop_container`, `container_logs` and the labels, for
/// `down` and `logs` of a detached container.
#[cfg(feature = "docker")]
pub use tether_runner_docker as docker;
#[cfg(feature = "docker")]
pub use tether_runner_docker::{DockerRunner, PullPolicy};
#[cfg(feature = "native")]
pub use tether_runner_native::NativeRunner;
#[cfg(feature = "uvx")]
pub use tether_runner_uvx::UvxRunner;

/// Opt in to the guard: call first thing in `main`. If this process was started as a
/// backend's guard it runs the guard and exits; otherwise it returns and tether will
/// use this executable as the guard for every backend it starts, so the backend and
/// all its descendants die with you, even if you are SIGKILLed.
///
/// Call it before any other thread starts (so before building an async runtime): the
/// guard blocks signals to wait for them, which only holds in a single-threaded process.
pub fn install_guard() {
    // A container's guard first (the docker runner's own), then a process group's.
    #[cfg(feature = "docker")]
    tether_runner_docker::run_if_container_guard();
    tether_core::guard::run_if_guard();
}

/// The traits only.
pub mod prelude {
    pub use tether_core::prelude::*;
}
