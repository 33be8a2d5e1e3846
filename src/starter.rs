//! The front crate's side of the [`Supervisor`](tether_core::Supervisor): a start is
//! `ensure_running` (name lock, reuse, stale sweep, port guard, launch, record), and
//! a [`Handle`] is what it supervises.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tether_core::{Attempt, Result, Starter, Supervised, SupervisorOptions};

use crate::{EnsureOptions, Handle, Plan, PortChoice};

/// Starts a [`Plan`] with [`ensure_running`](crate::ensure_running). Restarts keep the
/// port the first start chose (`auto` included).
#[derive(Debug)]
pub struct EnsureStarter {
    plan: Mutex<Plan>,
    options: EnsureOptions,
}

impl EnsureStarter {
    /// Starting `plan` with `options` (its lifecycle, cancel and restart count are the
    /// supervisor's).
    pub fn new(plan: Plan, options: EnsureOptions) -> Self {
        EnsureStarter { plan: Mutex::new(plan), options }
    }

    /// Start once: `ensure_running` driven by `attempt`.
    pub async fn start_handle(&self, attempt: &Attempt) -> Result<Handle> {
        let plan = self.plan.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut options = self.options.clone().with_lifecycle(Arc::clone(&attempt.lifecycle));
        options.cancel = Some(attempt.cancel.clone());
        options.restarts = attempt.restarts;
        let handle = crate::ensure_running(plan, options).await?;
        self.plan.lock().unwrap_or_else(|p| p.into_inner()).port = PortChoice::Fixed(handle.record().port);
        Ok(handle)
    }
}

#[async_trait]
impl Starter for EnsureStarter {
    async fn start(&self, attempt: &Attempt) -> Result<Box<dyn Supervised>> {
        Ok(Box::new(self.start_handle(attempt).await?))
    }
}

/// The supervisor's settings for `plan`: its restart policy and liveness probe.
pub fn supervisor_options(plan: &Plan) -> SupervisorOptions {
    SupervisorOptions::default().with_restart(plan.restart.clone()).with_liveness(plan.liveness.clone())
}
