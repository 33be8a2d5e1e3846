//! [`Handle`]: a ready backend that `ensure_running` started, or a healthy detached
//! one it found and reused.

use std::time::Duration;

use tether_core::state::{InstanceLock, Record, StateDir};
use tether_core::supervise::{Ended, Liveness};
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
}

impl Handle {
    pub(crate) fn owned(instance: Instance, state: StateDir, record: Record, lock: InstanceLock) -> Self {
        Handle { inner: Inner::Owned(Box::new(instance)), state, record, _lock: Some(lock) }
    }

    pub(crate) fn adopted(state: StateDir, record: Record) -> Self {
        Handle { inner: Inner::Adopted, state, record, _lock: None }
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
                Identity::Container { .. } => None,
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

    /// Stop it (whole group and descendants, or container) and forget its record.
    pub async fn stop(self) -> Result<StopOutcome> {
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
