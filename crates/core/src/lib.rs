//! # tether-core
//!
//! The engine behind tether: it starts a backend through a [`Runner`], waits until
//! the backend is really ready, relays its output, stops it cleanly and makes sure it
//! never outlives its owner nor harms a process that is not its own.
//!
//! ## Theory of operation
//! A [`Runner`] turns a [`LaunchSpec`] into a [`RunningBackend`] (a process group
//! under a guard, or a container). [`launch`] drives the [`Lifecycle`]
//! (`Idle → Preparing → Starting → WaitingReady → Ready → Stopping → Stopped`): it
//! checks and prepares the runner, starts the backend, and runs the readiness engine,
//! which probes at once, then backs off from about a millisecond to a cap, probes
//! again on every new line of backend output, and races the backend's exit so an
//! early death is reported at once with its status and the tail of its output. On
//! any failure the backend is stopped: nothing is left behind.
//!
//! A [`Supervisor`] owns a backend's whole life after that: one task that starts it
//! (through a [`Starter`]: [`LaunchStarter`] here, `ensure_running` in the `tether`
//! crate), publishes [`SupervisorState`] (`Starting` with the lifecycle's progress,
//! `Ready`, `Restarting` with why, `Failed`, `Stopped`) on a watch and as a lossless
//! event stream, watches it (its exit, a liveness probe), restarts it per the policy
//! with backoff, and stops it — a stop request wins at every await, a restart's
//! start included. Fronts only render its states and send `stop`/`restart`.
//!
//! Process-based runners share [`process`]: the backend runs in its own process
//! group under a tiny guard (this program re-executed, see [`guard`]) that takes the
//! whole group and every descendant down when its owner dies, even by `SIGKILL`.
//!
//! ## Safety invariants
//! Every signal tether sends passes one gate, [`safety::Gate`], whatever the path
//! (a stop, `down`, the stale sweep, the port guard, the guard process):
//! - never pid 0 or 1, never a process group ≤ 1, never this process, any of its
//!   ancestors, or its own (or an ancestor's) process group;
//! - a backend process is ours only if it, or an ancestor by parent pid, carries the
//!   instance's fingerprint (`TETHER_INSTANCE=<name>` in the environment it started with, set on
//!   every backend) and runs as this user, or is this process's own child; a state
//!   record's pid + start time alone is a claim, not proof. Another user's process is
//!   thus reached only when it descends from our own verified backend;
//! - an instance's owner only if it holds the instance's lock file open;
//! - a process that fails is named in [`Error::Refused`], never signalled.
//!
//! "Ready" likewise counts only from our own backend: the probe client follows no
//! redirect, and [`RunningBackend::owns_endpoint`] must confirm that the port's
//! listener is the backend's (its socket held by its processes, or its container).
//!
//! ```no_run
//! # async fn demo(runner: std::sync::Arc<dyn tether_core::Runner>) -> tether_core::Result<()> {
//! use tether_core::{launch, LaunchSpec, LaunchOptions, probe::HttpProbe};
//! let spec = LaunchSpec::new("demo", 8765);
//! let probe = std::sync::Arc::new(HttpProbe::claude_skills("/health"));
//! let instance = launch(runner, spec, probe, LaunchOptions::default()).await?;
//! println!("ready at {}", instance.url());
//! instance.stop().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

// The root re-exports and the traits (`prelude`) are what most users need. Every module
// is public and documented: the runners and the `tether` front crate build on them
// (state records, the port guard, process groups, the guard, the OS seam `sys`), and so
// may another front.
pub mod backoff;
mod duration;
pub mod error;
pub mod guard;
pub mod instance;
pub mod launch;
pub mod lease;
pub mod lifecycle;
pub mod marks;
pub mod port;
pub mod probe;
pub mod process;
pub mod procs;
pub mod readiness;
pub mod relay;
pub mod restart;
pub mod runner;
pub mod safety;
pub mod state;
pub mod supervisor;
pub mod sys;

pub use duration::parse_duration;
pub use error::{Error, ExitStatus, PortHolder, Result};
pub use launch::{Instance, LaunchOptions, launch};
pub use lifecycle::{Lifecycle, Progress, State};
pub use probe::{HealthProbe, ProbeOutcome};
pub use relay::{LogLine, LogRelay, Stream};
pub use runner::{Endpoint, Identity, LaunchSpec, Reclaim, Runner, RunnerInfo, RunningBackend, StopOutcome};
pub use supervisor::{
    Attempt, LaunchStarter, ReadyInfo, Starter, Supervised, Supervisor, SupervisorOptions, SupervisorState,
};

/// The traits a runner or probe implementer needs, and nothing else.
pub mod prelude {
    pub use crate::probe::HealthProbe;
    pub use crate::runner::{Reclaim, Runner, RunningBackend};
    pub use crate::supervisor::{Starter, Supervised};
}
