//! [`Handle`]: a ready backend that [`ensure`](super::ensure) started, or a healthy
//! detached one it found and reused.

use std::time::Duration;

use async_trait::async_trait;

use super::reclaim::{ReclaimOf, down};
use crate::error::{ExitStatus, Result};
use crate::launch::Instance;
use crate::lease::Lease;
use crate::restart::{Ended, Liveness};
use crate::runner::{Identity, StopOutcome};
use crate::state::{InstanceLock, Record, StateDir};
use crate::supervisor::{ReadyInfo, Supervised};

#[derive(Debug)]
enum Inner {
    /// Started by us.
    Owned(Box<Instance>),
    /// Already running, detached, healthy and matching: reused.
    Adopted,
}

/// A ready, recorded backend.
pub struct Handle {
    inner: Inner,
    state: StateDir,
    record: Record,
    /// How a reused instance is stopped (`down`, through its runner's reclaiming role).
    reclaim_of: ReclaimOf,
    _lock: Option<InstanceLock>,
    /// Our lease on a shared backend: held while this handle lives.
    lease: Option<Lease>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("inner", &self.inner)
            .field("record", &self.record)
            .field("shared", &self.lease.is_some())
            .finish_non_exhaustive()
    }
}

impl Handle {
    pub(crate) fn owned(
        instance: Instance,
        state: StateDir,
        record: Record,
        lock: InstanceLock,
        reclaim_of: ReclaimOf,
    ) -> Self {
        Handle { inner: Inner::Owned(Box::new(instance)), state, record, reclaim_of, _lock: Some(lock), lease: None }
    }

    pub(crate) fn adopted(state: StateDir, record: Record, reclaim_of: ReclaimOf) -> Self {
        Handle { inner: Inner::Adopted, state, record, reclaim_of, _lock: None, lease: None }
    }

    pub(crate) fn with_lease(mut self, lease: Option<Lease>) -> Self {
        if lease.is_some() {
            // A shared instance is not this front's alone: the name lock guarded its
            // start; the others attach (reuse) while we hold only our lease.
            self._lock = None;
        }
        self.lease = lease;
        self
    }

    /// Whether this handle holds a lease on a shared backend: stopping it only gives
    /// the lease back; the backend stops after its linger once no front holds one.
    pub fn shared(&self) -> bool {
        self.lease.is_some()
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        self.record.url.clone()
    }

    /// The instance, when this handle started it (not when it reused one).
    pub fn instance(&self) -> Option<&Instance> {
        match &self.inner {
            Inner::Owned(i) => Some(i),
            Inner::Adopted => None,
        }
    }

    /// Whether a running instance was reused rather than started.
    pub fn reused(&self) -> bool {
        matches!(self.inner, Inner::Adopted)
    }

    /// The process-group leader's pid (processes), when known.
    pub fn pid(&self) -> Option<u32> {
        match &self.inner {
            Inner::Owned(i) => match i.identity() {
                Identity::Process { leader, .. } => Some(leader.pid),
                _ => None,
            },
            Inner::Adopted => self.record.leader.map(|l| l.pid),
        }
    }

    /// The progress count at ready (e.g. skills loaded), when this handle started it.
    pub fn progress(&self) -> Option<u64> {
        self.instance().and_then(Instance::progress)
    }

    /// What was recorded.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Resolves when the backend exits, or fails its liveness probe.
    pub async fn watch(&self, liveness: Option<&Liveness>) -> Result<Ended> {
        match &self.inner {
            Inner::Owned(i) => i.watch(liveness).await,
            Inner::Adopted => {
                // Not our child: watch its identity (pid + start time).
                while self.record.owner_alive() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(Ended::Exited(ExitStatus::Unknown))
            }
        }
    }

    /// Stop it (whole group and descendants, or container) and forget its record. A
    /// shared handle only gives its lease back (see [`Handle::shared`]).
    pub async fn stop(self) -> Result<StopOutcome> {
        if self.shared() {
            self.release();
            return Ok(StopOutcome::Terminated { exit: ExitStatus::Unknown });
        }
        match self.inner {
            Inner::Owned(instance) => {
                let outcome = instance.stop().await;
                self.state.remove(&self.record.name)?;
                outcome
            }
            Inner::Adopted => down(&self.state, &self.record.name, &self.reclaim_of).await,
        }
    }

    /// Leave it running (detached); the record stays for `status` and `down`.
    pub fn release(self) {
        if let Inner::Owned(instance) = self.inner {
            instance.release();
        }
    }
}

#[async_trait]
impl Supervised for Handle {
    fn ready_info(&self) -> ReadyInfo {
        let record = self.record();
        let (pid, guard_pid) = self.pid().map_or((None, None), crate::procs::backend_and_guard);
        ReadyInfo {
            name: record.name.clone(),
            url: record.url.clone(),
            port: record.port,
            pid,
            guard_pid,
            runner_fields: record.runner_fields.clone(),
            progress: self.progress(),
            reused: self.reused(),
            detached: record.detached,
        }
    }

    async fn watch(&self, liveness: Option<&Liveness>) -> Result<Ended> {
        Handle::watch(self, liveness).await
    }

    fn tail(&self, lines: usize) -> Vec<String> {
        self.instance().map(|i| i.logs().tail(lines)).unwrap_or_default()
    }

    async fn stop(self: Box<Self>) -> Result<StopOutcome> {
        Handle::stop(*self).await
    }

    fn release(self: Box<Self>) {
        Handle::release(*self);
    }

    fn leave_running(&self) -> bool {
        self.reused() || self.shared()
    }
}
