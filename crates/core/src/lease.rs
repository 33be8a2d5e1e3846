//! Leases on a shared backend: several fronts (one `mcp-proxy` per host window)
//! attach to one detached backend, and it stops when the last one is gone.
//!
//! A lease is a shared `flock` on the instance's lease file, held for as long as the
//! front lives: the kernel releases it when the front exits, however it exits (even
//! by SIGKILL), so a count can never leak. The backend's guard waits for an exclusive
//! lock on the same file — it is granted only once no lease is held — then lingers
//! (a window reopened within the linger does not reload the backend) and stops the
//! backend if still no lease was taken meanwhile. The kernel's lock table tells how many
//! fronts are attached, for `status`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys;

/// A held lease: the backend keeps running at least while this lives.
#[derive(Debug)]
pub struct Lease {
    _file: File,
    path: PathBuf,
}

impl Lease {
    /// Take a lease on `path` (created, mode 0600, never through a symlink). Waits
    /// only while the guard holds its exclusive lock for a moment.
    pub fn acquire(path: &Path) -> Result<Lease> {
        let file = open(path)?;
        file.lock_shared().map_err(|e| Error::io(format!("cannot take a lease on {}", path.display()), e))?;
        Ok(Lease { _file: file, path: path.to_path_buf() })
    }

    /// The lease file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open(path: &Path) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    sys::private::no_follow(sys::private::only_mine(&mut options))
        .open(path)
        .map_err(|e| Error::io(format!("cannot open the lease file {}", path.display()), e))
}

/// How many processes hold a lease on `path` now (distinct pids with a shared lock on
/// it). 0 when the file does not exist.
pub fn holders(path: &Path) -> usize {
    sys::lock_holders(path)
}

/// The lease file locked exclusively, as [`wait_unleased`] returns it: while this
/// lives no front can take a lease (attach), so the guard can stop the backend and
/// forget its record with no front attaching to what is going away; a front that
/// arrives meanwhile waits in [`Lease::acquire`], then finds nothing and starts anew.
#[derive(Debug)]
pub struct Unleased {
    _file: File,
}

/// The guard's side: block until no lease is held, linger, and return once the
/// backend may stop (no lease was taken again meanwhile), holding the file locked
/// until the returned [`Unleased`] is dropped. Runs on a thread of its own; an error
/// (the file cannot be opened or locked) returns at once, so a broken lease never
/// keeps a backend forever — the caller decides what to do then.
pub fn wait_unleased(path: &Path, linger: Duration) -> Result<Unleased> {
    let file = open(path)?;
    loop {
        // Granted only when no shared lock (lease) is held.
        file.lock().map_err(|e| Error::io(format!("cannot lock {}", path.display()), e))?;
        // Let fronts in again while lingering: a window reopened now keeps the backend.
        file.unlock().map_err(|e| Error::io(format!("cannot unlock {}", path.display()), e))?;
        std::thread::sleep(linger);
        match file.try_lock() {
            Ok(()) => return Ok(Unleased { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("cannot lock {}", path.display()), e));
            }
        }
    }
}

// Their tests use Unix files and processes directly (symlinks, modes, process groups).
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn leases_are_counted_and_released_with_their_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.lease");
        assert_eq!(holders(&path), 0);
        let lease = Lease::acquire(&path).expect("a lease");
        assert_eq!(lease.path(), path);
        assert_eq!(holders(&path), 1, "one lease, one holder");
        // Nobody can be told "unleased" while a lease is held.
        let probe = open(&path).expect("open");
        assert!(matches!(probe.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
        drop(lease);
        assert_eq!(holders(&path), 0);
        wait_unleased(&path, Duration::ZERO).expect("unleased at once");
    }

    #[test]
    fn a_lease_file_planted_as_a_symlink_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"").expect("write");
        let path = dir.path().join("x.lease");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        assert!(Lease::acquire(&path).is_err());
    }
}
