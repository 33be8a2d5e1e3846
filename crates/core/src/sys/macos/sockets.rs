//! The listeners of a port and the processes that hold them, by libproc: each process's
//! descriptors (`proc_pidinfo(3)` `PROC_PIDLISTFDS`) and, for a socket, what it is
//! (`proc_pidfdinfo(3)` `PROC_PIDFDSOCKETINFO`, `struct socket_fdinfo` of
//! `<sys/proc_info.h>`): TCP, IPv4 or IPv6, in LISTEN state, on the port.
//!
//! macOS has no system-wide socket table a user may read by socket (Linux's `sock_diag`):
//! the sockets are found through their holders, and another user's descriptors cannot be
//! read without privilege. Such a listener is not seen at all — not in the holders, and not
//! by [`Listeners::is_empty`] either — so callers decide "free" by the bind test, as they do
//! on Linux.

use std::collections::HashSet;
use std::io;

use super::abi;

/// The TCP sockets in LISTEN state on one port (IPv4 and IPv6), each with the processes
/// holding it, as libproc listed them when [`of`](Self::of) asked: a client connected to
/// the port is never one.
#[derive(Debug)]
pub struct Listeners {
    /// (holder pid, the socket's kernel handle `soi_so`).
    held: Vec<(u32, u64)>,
}

impl Listeners {
    /// The listeners on `port` now, among the processes whose descriptors we may read.
    pub fn of(port: u16) -> io::Result<Self> {
        let socket = u32::try_from(libc::PROX_FDTYPE_SOCKET).unwrap_or(u32::MAX);
        let mut held = Vec::new();
        for pid in super::all_pids() {
            // Another user's process, or gone: nothing to read.
            let Some(fds) = super::fds(pid) else { continue };
            for fd in fds.iter().filter(|f| f.proc_fdtype == socket) {
                let info = super::fdinfo::<abi::SocketFdInfo>(pid, fd.proc_fd, abi::PROC_PIDFDSOCKETINFO);
                if let Some(so) = info.as_ref().and_then(|i| abi::tcp_listener(i, port)) {
                    held.push((pid, so));
                }
            }
        }
        Ok(Listeners { held })
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Pids of the processes holding any of them, sorted and deduplicated.
    pub fn holders(&self) -> io::Result<Vec<u32>> {
        let mut pids: Vec<u32> = self.held.iter().map(|(pid, _)| *pid).collect();
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Whether every one of them is held by one of `pids` (and there is at least one).
    pub fn all_held_by(&self, pids: &[u32]) -> bool {
        let ours: HashSet<u64> = self.held.iter().filter(|(pid, _)| pids.contains(pid)).map(|(_, so)| *so).collect();
        !self.held.is_empty() && self.held.iter().all(|(_, so)| ours.contains(so))
    }
}
