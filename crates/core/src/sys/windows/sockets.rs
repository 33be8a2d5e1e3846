//! The listeners of a port and the processes holding them: the system's TCP tables with
//! their owners (`GetExtendedTcpTable`, `TCP_TABLE_OWNER_PID_LISTENER`, for `AF_INET` and
//! `AF_INET6`; `MIB_TCPROW_OWNER_PID` / `MIB_TCP6ROW_OWNER_PID` in `iphlpapi.h`). Each
//! row is one listening socket with the pid that owns it; every user may read them.

use std::io;

use windows_sys::Win32::NetworkManagement::IpHelper::{
    GetExtendedTcpTable, MIB_TCP6ROW_OWNER_PID, MIB_TCPROW_OWNER_PID, TCP_TABLE_OWNER_PID_LISTENER,
};
use windows_sys::Win32::Networking::WinSock::{AF_INET, AF_INET6};

/// The TCP sockets in LISTEN state on one port (IPv4 and IPv6), each with its owner.
#[derive(Debug)]
pub struct Listeners {
    /// One owner pid per listening socket.
    owners: Vec<u32>,
}

/// The rows of one family's table: (local port, owner pid).
fn rows(family: u16) -> io::Result<Vec<(u16, u32)>> {
    let mut size = 0u32;
    let mut buf: Vec<u64> = Vec::new();
    for _ in 0..8 {
        // SAFETY: the call writes at most `size` bytes into the (8-byte aligned) buffer, or
        // only the size it needs when the buffer is too small.
        let rc = unsafe {
            GetExtendedTcpTable(
                buf.as_mut_ptr().cast(),
                &mut size,
                0,
                u32::from(family),
                TCP_TABLE_OWNER_PID_LISTENER,
                0,
            )
        };
        match rc {
            0 => return Ok(parse(&buf, family)),
            // ERROR_INSUFFICIENT_BUFFER: grow to what it asked, with room for new sockets.
            122 => buf = vec![0u64; (size as usize).div_ceil(8) + 64],
            code => return Err(io::Error::from_raw_os_error(code as i32)),
        }
        size = u32::try_from(buf.len() * 8).unwrap_or(u32::MAX);
    }
    Err(io::Error::other("the TCP table kept growing while it was read"))
}

/// The rows of a table read into `buf`: a `u32` count, then the rows (each aligned as a
/// `u32`, right after the count).
fn parse(buf: &[u64], family: u16) -> Vec<(u16, u32)> {
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let Some(count) = bytes.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes) else {
        return Vec::new();
    };
    let row = if family == AF_INET { size_of::<MIB_TCPROW_OWNER_PID>() } else { size_of::<MIB_TCP6ROW_OWNER_PID>() };
    // (port, pid) offsets within a row.
    let (port_at, pid_at) = if family == AF_INET { (8, 20) } else { (20, 52) };
    let word = |at: usize| bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
    (0..count as usize)
        .filter_map(|i| {
            let base = 4 + i * row;
            // dwLocalPort holds the port in network byte order in its low 16 bits.
            let port = u16::from_be(u16::try_from(word(base + port_at)? & 0xffff).ok()?);
            Some((port, word(base + pid_at)?))
        })
        .collect()
}

impl Listeners {
    /// The listeners on `port` now.
    pub fn of(port: u16) -> io::Result<Self> {
        let mut owners = Vec::new();
        for family in [AF_INET, AF_INET6] {
            owners.extend(rows(family)?.into_iter().filter(|(p, _)| *p == port).map(|(_, pid)| pid));
        }
        Ok(Listeners { owners })
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Pids of the processes holding any of them, sorted and deduplicated.
    pub fn holders(&self) -> io::Result<Vec<u32>> {
        let mut pids = self.owners.clone();
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Whether every one of them is held by one of `pids` (and there is at least one).
    pub fn all_held_by(&self, pids: &[u32]) -> bool {
        !self.owners.is_empty() && self.owners.iter().all(|p| pids.contains(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_ours_is_found_with_our_pid() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let found = Listeners::of(port).expect("the TCP table");
        if crate::sys::listener_owners_unknown() {
            // Wine: the row is there, with owner 0; never taken for ours.
            assert_eq!(found.holders().expect("holders"), [0]);
            assert!(!found.all_held_by(&[std::process::id()]));
            eprintln!("skipped the owner check: {}", crate::sys::LISTENER_OWNERS_UNKNOWN);
            return;
        }
        assert_eq!(found.holders().expect("holders"), [std::process::id()]);
        assert!(found.all_held_by(&[std::process::id()]));
        drop(listener);
        assert!(Listeners::of(port).expect("the TCP table").is_empty());
    }
}
