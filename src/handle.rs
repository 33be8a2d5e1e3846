//! [`Handle`]: a ready backend that `ensure_running` started, or a healthy detached
//! one it found and reused.

use std::time::Duration;

use tether_core::restart::{Ended, Liveness};
use tether_core::state::{InstanceLock, Record, StateDir};
use tether_core::{ExitStatus, Identity, Instance, Result, StopOutcome};

#[derive(Debug)]
enum Inner {
    /// Started by us.
    Owned(Box<Instance>),
    /// Already running, detached, healthy and matching: reused.
    Adopted,
}

/// A ready, recorded backend.
#[derive(Debug)]
pub struct Handle {
    inner: Inner,
    state: StateDir,
    record: Record,
    _lock: Option<InstanceLock>,
    /// Our lease on a shared backend: held while this handle lives.
    lease: Option<tether_core::lease::Lease>,
}

impl Handle {
    pub(crate) fn owned(instance: Instance, state: StateDir, record: Record, lock: InstanceLock) -> Self {
        Handle { inner: Inner::Owned(Box::new(instance)), state, record, _lock: Some(lock), lease: None }
    }

    pub(crate) fn adopted(state: StateDir, record: Record) -> Self {
        Handle { inner: Inner::Adopted, state, record, _lock: None, lease: None }
    }

    pub(crate) fn with_lease(mut self, lease: Option<tether_core::lease::Lease>) -> Self {
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
            Inner::Adopted => crate::down(&self.state, &self.record.name).await,
        }
    }

    /// Leave it running (detached); the record stays for `status` and `down`.
    pub fn release(self) {
        if let Inner::Owned(instance) = self.inner {
            instance.release();
        }
    }
}
