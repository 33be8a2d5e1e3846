//! `ensure_running`: a [`Plan`] (flags and files) turned into the core's
//! [`InstancePlan`] and runner, started through [`tether_core::instance::ensure`] —
//! the state file, the stale sweep, the port guard, the launch and the record live
//! there, the same for every front.

use tether_core::StopOutcome;
use tether_core::instance::{self, InstancePlan};
use tether_core::state::StateDir;
use tether_core::{Result, Runner};

pub use tether_core::instance::{Down, EnsureOptions, Handle};

use crate::config::Plan;

impl Plan {
    /// The runner-independent part of this plan, as core's orchestration takes it.
    pub fn instance(&self) -> InstancePlan {
        let mut p = InstancePlan::new(self.name.clone(), std::sync::Arc::clone(&self.probe));
        p.host = self.host.clone();
        p.port = self.port;
        p.timeout = self.timeout;
        p.probe_timeout = self.probe_timeout;
        p.grace = self.grace;
        p.force_port = self.force_port;
        p.args = self.backend_args();
        p.env = self.config.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        p.cwd = self.config.cwd.clone();
        p.surroundings = crate::config::surroundings(self);
        p
    }
}

/// Start the backend `plan` describes and wait until it is ready (see
/// [`tether_core::instance::ensure`]): sweep a stale instance of the same name, clear the
/// port of our own leftovers (refusing to touch a foreign holder unless `force_port`),
/// launch, record — or reuse a healthy detached instance of the same configuration.
pub async fn ensure_running(plan: Plan, opts: EnsureOptions) -> Result<Handle> {
    let runner = crate::build_runner(&plan)?;
    ensure_with(plan, runner, opts).await
}

/// [`ensure_running`] with a ready-made runner instead of the one the plan names.
pub async fn ensure_with(plan: Plan, runner: std::sync::Arc<dyn Runner>, opts: EnsureOptions) -> Result<Handle> {
    // Again here: a library user may have changed the plan's host after `plan()`. A
    // backend someone else runs: its host is the user's URL's, not one of this machine.
    if plan.runner != crate::RunnerKind::Remote {
        let given = plan.config.host.is_some() || plan.host != crate::config::DEFAULT_HOST;
        crate::config::check_host_for(plan.runner, &plan.host, given).map_err(|e| plan.config.blame("host", e))?;
    }
    tether_core::state::StateDir::check_name(&plan.name).map_err(|e| plan.config.blame("name", e))?;
    instance::ensure(plan.instance(), runner, crate::kind::reclaimers(), opts).await
}

/// Stop the instance `name` (detached, or the foreground one of another process).
/// See [`down_report`] for what was stopped.
pub async fn down(state: &StateDir, name: &str) -> Result<StopOutcome> {
    instance::down(state, name, &crate::kind::reclaimers()).await
}

/// Stop the instance `name` and tell what was stopped (see
/// [`tether_core::instance::down_report`]).
pub async fn down_report(state: &StateDir, name: &str) -> Result<Down> {
    instance::down_report(state, name, &crate::kind::reclaimers()).await
}
