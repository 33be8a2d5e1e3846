//! The port guard: who listens on a port, is it ours, and is the port free yet.
//!
//! Unlike `lsof -ti :PORT`, only sockets in the LISTEN state count: a client
//! connected to the port (a browser, a health probe, tether itself) is never a
//! holder, so it can never be mistaken for the server and killed.
//!
//! Listening sockets are listed by the kernel's `sock_diag` netlink interface
//! (falling back to `/proc/net/tcp{,6}`), in this network namespace, and mapped
//! to processes through their `/proc/PID/fd` links. Without privilege, the fds of
//! another user's processes cannot be read: such a listener shows up in no
//! holder list, but [`can_bind`] still sees the port as taken. Callers therefore
//! decide "free" by the bind test, never by an empty holder list.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::{Duration, Instant};

use netlink_packet_sock_diag::{AF_INET, AF_INET6, IPPROTO_TCP, TCP_LISTEN};
use procfs::net::TcpState;

use crate::error::{Error, PortHolder, Result, humanize};
use crate::procs;

/// The environment variable tether sets on every backend it starts, naming its
/// instance: a fingerprint that survives even when the state file is gone.
pub const INSTANCE_ENV: &str = "TETHER_INSTANCE";

/// The environment variable the guard sets on the backend it starts: the guard's own
/// identity (`PID:START_TIME`, see [`ProcessIdentity::token`](crate::procs::ProcessIdentity::token)),
/// which is the record's `leader`. Inherited like [`INSTANCE_ENV`], it pins every process
/// of one run of an instance to that run: once the guard is dead (SIGKILLed together with
/// the owner), what it started that left the process group — a `setsid` grandchild,
/// re-parented to init — is still found by it, and told apart from a run of the same name
/// in another state directory. It narrows what [`INSTANCE_ENV`] proves, never widens it.
pub const LEADER_ENV: &str = "TETHER_LEADER";

/// The fewest processes per thread of the fd scan: below it, a thread's start
/// (tens of µs) costs more than its share of the scan saves.
const PIDS_PER_THREAD: usize = 128;

/// Pids of processes holding a TCP socket in LISTEN state on `port` (IPv4 and
/// IPv6), sorted and deduplicated. A process whose fds we may not read is
/// skipped (see the module notes). A client connected to the port is never a
/// holder.
pub fn listening_pids(port: u16) -> Result<Vec<u32>> {
    let inodes = listening_inodes(port)?;
    if inodes.is_empty() {
        // The common case (port free) costs two netlink round trips, no fd scan.
        return Ok(Vec::new());
    }
    let proc_dir = std::fs::read_dir("/proc").map_err(|e| Error::io("cannot list /proc", e))?;
    let fds = FdScan::open().map_err(|e| Error::io("cannot open /proc", e))?;
    let all: Vec<u32> = proc_dir.flatten().filter_map(|entry| entry.file_name().to_str()?.parse().ok()).collect();
    let holds = |pid: &u32| fds.any_socket(*pid, |inode| inodes.contains(&inode));
    // Every process's fd links are read (a socket can be shared with any process, by
    // fork or by fd passing), a few syscalls each: on a large table the work is split
    // over the cores, each thread reading a contiguous share of the pids.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(all.len() / PIDS_PER_THREAD).max(1);
    let mut pids: Vec<u32> = if threads == 1 {
        all.iter().copied().filter(|p| holds(p)).collect()
    } else {
        let share = all.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let parts: Vec<_> = all
                .chunks(share)
                .map(|part| scope.spawn(move || part.iter().copied().filter(|p| holds(p)).collect::<Vec<u32>>()))
                .collect();
            // A scan thread cannot panic short of a bug; its share then counts as unread.
            parts.into_iter().flat_map(|t| t.join().unwrap_or_default()).collect()
        })
    };
    // read_dir walks /proc in pid order already; sort anyway, it is the contract.
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Who holds `port`, each classified as ours or foreign.
///
/// A holder is ours when it, or an ancestor by parent pid, carries
/// `TETHER_INSTANCE=<name>` (set by tether on every backend it starts) and runs
/// as this user — the [`Gate`](crate::safety::Gate)'s rule; `instance` then names
/// the instance. A state record vouches for nothing here: it is a claim, not proof.
/// Holders that exit while we look are left out: they hold nothing any more.
pub fn holders(port: u16) -> Result<Vec<PortHolder>> {
    let gate = crate::safety::Gate::new();
    let mut out = Vec::new();
    for pid in listening_pids(port)? {
        let Some(info) = procs::info(pid) else {
            continue;
        };
        let instance = gate.instance_of(pid);
        out.push(PortHolder { pid, user: info.user, command: info.command, ours: instance.is_some(), instance });
    }
    Ok(out)
}

/// Whether the listeners on `port` are `root`'s: there is at least one, and every
/// one is held by `root`, one of its descendants or a member of its process group
/// `pgid`. A readiness answer counts only then: a neighbour on the port is not our
/// backend, however ready it says it is.
pub fn listeners_held_by(port: u16, root: procs::ProcessIdentity, pgid: Option<u32>) -> bool {
    let Ok(inodes) = listening_inodes(port) else { return false };
    if inodes.is_empty() || !root.is_alive() {
        return false;
    }
    let mut tree = vec![root.pid];
    tree.extend(procs::descendants(root.pid));
    if let Some(g) = pgid {
        tree.extend(procs::group_members(g));
    }
    let Ok(fds) = FdScan::open() else { return false };
    let mut ours = HashSet::new();
    for pid in tree {
        fds.any_socket(pid, |inode| {
            ours.insert(inode);
            false
        });
    }
    inodes.is_subset(&ours)
}

/// True if a TCP listener can be bound on `host:port` right now.
///
/// The test binds with std's `TcpListener`, which on Unix sets `SO_REUSEADDR`
/// — as servers do — so connections lingering in `TIME_WAIT` after a stop do
/// not count as "in use", exactly as they would not stop the server. When
/// `host` resolves to several addresses (`localhost` → `127.0.0.1` and `::1`),
/// the port is free if at least one binds and none is in use. An unresolvable
/// host is never free.
pub fn can_bind(host: &str, port: u16) -> bool {
    resolve(host, port).is_ok_and(|addrs| bind_test(&addrs).is_ok())
}

/// Wait until [`can_bind`] is true, up to `timeout`.
///
/// Polls at once, then with a backoff from 1 ms doubling to a 50 ms cap, so a
/// port freed right after a stop is seen within a few milliseconds. Fails at
/// once, without waiting, when waiting cannot help: the host does not resolve,
/// or binding fails for another reason than "in use" (an address not on this
/// machine, a privileged port).
pub async fn wait_free(host: &str, port: u16, timeout: Duration) -> Result<()> {
    // Resolve once, not on every poll (a name lookup can be slow).
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Error::io(format!("cannot resolve host '{host}'"), e))?
        .collect();
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(1);
    loop {
        let last = match bind_test(&addrs) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => e,
            Err(e) => return Err(Error::io(format!("cannot bind {host}:{port}"), e)),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::io(
                format!(
                    "port {port} on {host} still in use after {}; `tether port {port}` shows who holds it",
                    humanize(timeout)
                ),
                last,
            ));
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// A free port on `host`, picked by the OS (bind port 0, read it, release it).
///
/// Another process could take it before the caller binds it; callers that pass
/// it to a backend still run the port guard.
pub fn free_port(host: &str) -> Result<u16> {
    let listener =
        TcpListener::bind((host, 0)).map_err(|e| Error::io(format!("cannot pick a free port on {host}"), e))?;
    let addr = listener.local_addr().map_err(|e| Error::io(format!("cannot read the port picked on {host}"), e))?;
    release(listener);
    Ok(addr.port())
}

/// Socket inodes in LISTEN state on `port`, over IPv4 and IPv6.
///
/// Asks the kernel through `sock_diag` netlink for listeners only: it skips
/// the established-connection hash, which `/proc/net/tcp` walks bucket by
/// bucket (measured here: ~3.4 ms per table read on a 24 GiB machine, against
/// ~50 µs for both families by netlink). Where netlink is unavailable
/// (a sandbox forbidding it, no `inet_diag`), falls back to `/proc/net/tcp{,6}`.
fn listening_inodes(port: u16) -> Result<HashSet<u64>> {
    let mut inodes = HashSet::new();
    let by_netlink = [AF_INET, AF_INET6].into_iter().try_for_each(|family| diag_listeners(family, port, &mut inodes));
    match by_netlink {
        Ok(()) => Ok(inodes),
        Err(e) => {
            tracing::debug!("sock_diag unavailable ({e}); reading /proc/net/tcp");
            proc_net_listeners(port)
        }
    }
}

/// `listening_inodes` from the `/proc/net` tables.
fn proc_net_listeners(port: u16) -> Result<HashSet<u64>> {
    let v4 = procfs::net::tcp().map_err(|e| Error::io("cannot read /proc/net/tcp", io::Error::other(e.to_string())))?;
    // With IPv6 disabled the tcp6 table does not exist: no IPv6 listeners then.
    let v6 = procfs::net::tcp6().unwrap_or_default();
    Ok(v4
        .into_iter()
        .chain(v6)
        .filter(|e| e.state == TcpState::Listen && e.local_address.port() == port)
        .map(|e| e.inode)
        .collect())
}

/// Add the inodes of `family`'s TCP listeners on `port` to `out`, by one
/// `SOCK_DIAG_BY_FAMILY` dump filtered to LISTEN state and source port.
///
/// The rust-netlink crates encode the request and frame the replies. They
/// replaced a hand-written codec at no cost: 33.4 against 35.2 µs median for
/// both families (1,000 paired rounds, release build), and `holders()` 703
/// against 706 µs.
fn diag_listeners(family: u8, port: u16, out: &mut HashSet<u64>) -> io::Result<()> {
    use netlink_packet_core::{ErrorBuffer, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, Parseable};
    use netlink_packet_sock_diag::SOCK_DIAG_BY_FAMILY;
    use netlink_packet_sock_diag::inet::InetResponseHeader;

    let sock = diag_request(family, port)?;
    let bad = |e: netlink_packet_core::DecodeError| {
        io::Error::new(io::ErrorKind::InvalidData, format!("malformed sock_diag reply: {e}"))
    };
    // A datagram holds whole messages and the kernel caps a dump's datagrams at
    // 32 KiB, so 64 KiB never truncates one (were one cut, its last message
    // would fail new_checked: an error, so the /proc fallback, not a wrong list).
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        // recv appends what it read to `buf` (without MSG_TRUNC, never more).
        sock.recv(&mut buf, 0)?;
        let mut rest = buf.as_slice();
        while !rest.is_empty() {
            // new_checked: the length field is at least a header's and within
            // the datagram, so `payload` cannot panic and `rest` advances.
            let msg = NetlinkBuffer::new_checked(rest).map_err(bad)?;
            let payload = msg.payload();
            match msg.message_type() {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    // An error code of zero is an acknowledgement, not a failure.
                    return match ErrorBuffer::new_checked(payload).map_err(bad)?.code() {
                        None => Ok(()),
                        Some(code) => Err(io::Error::from_raw_os_error(code.get().abs())),
                    };
                }
                SOCK_DIAG_BY_FAMILY => {
                    // Only the fixed inet_diag_msg header is read. The attributes
                    // after it are not needed, and decoding them too (as
                    // NetlinkMessage::deserialize does) allocates per attribute and
                    // fails the whole lookup on any one this crate version rejects.
                    let h = InetResponseHeader::parse(payload).map_err(bad)?;
                    if h.state == TCP_LISTEN && h.socket_id.source_port == port {
                        out.insert(u64::from(h.inode));
                    }
                }
                _ => {}
            }
            // Messages are padded to 4-byte alignment.
            rest = rest.get((msg.length() as usize + 3) & !3..).unwrap_or_default();
        }
    }
}

/// A `sock_diag` socket that has sent the dump request for `family`'s TCP
/// listeners on `port`; the replies wait to be read.
fn diag_request(family: u8, port: u16) -> io::Result<netlink_sys::Socket> {
    use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_sock_diag::SockDiagMessage;
    use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

    let sock = Socket::new(NETLINK_SOCK_DIAG)?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    // The kernel skips listeners on other ports itself when the id's source
    // port is set (the rest zero = any), so the reply is a few messages, not
    // every listener on the host: with 200 others and the port left at 0, the
    // lookup measured 1.7× slower (3.7× with the attributes decoded too).
    let mut socket_id = if family == AF_INET6 { SocketId::new_v6() } else { SocketId::new_v4() };
    socket_id.source_port = port;
    let request = SockDiagMessage::InetRequest(InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::LISTEN,
        socket_id,
    });
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(request));
    // finalize sets the length and type, so serialize (which panics on a
    // buffer of the wrong size) gets exactly buffer_len() bytes.
    msg.finalize();
    let mut req = vec![0; msg.buffer_len()];
    msg.serialize(&mut req);
    // Unbound: the kernel binds a port id on this first send.
    sock.send_to(&req, &SocketAddr::new(0, 0), 0)?;
    Ok(sock)
}

/// Close a probe listener so that it stops listening at once. A plain drop is
/// not enough: a child forked meanwhile by another thread shares the socket
/// until its exec closes it, and would keep the port "in use" until then.
/// `shutdown` acts on the socket itself, whoever else holds it.
fn release(listener: TcpListener) {
    use std::os::fd::AsRawFd;
    let _ = nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
}

/// Reads the socket inodes of processes' open fds (`/proc/PID/fd/N` links to the text
/// `socket:[INODE]`) with raw `openat` / `getdents64` / `readlinkat` relative to one
/// `/proc` descriptor, into stack buffers.
///
/// The port lookup reads the fd links of every process on the machine, so this is
/// its cost per process: with `std::fs::read_dir` and `read_link` (a path built and
/// a `PathBuf` allocated per fd) it was the bulk of the lookup; the syscalls are the
/// same, only the allocations and path walks from `/` are gone.
struct FdScan {
    proc: std::os::fd::OwnedFd,
}

impl FdScan {
    fn open() -> io::Result<Self> {
        let proc = std::fs::File::open("/proc")?;
        Ok(FdScan { proc: proc.into() })
    }

    /// Call `hit` with the inode of each socket `pid` has open until it returns true;
    /// whether it did. A process that is gone or whose fds we may not read (another
    /// user's, without privilege) has none.
    fn any_socket(&self, pid: u32, mut hit: impl FnMut(u64) -> bool) -> bool {
        use std::io::Write;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // "PID/fd\0" relative to /proc.
        let mut path = [0u8; 32];
        let mut w = &mut path[..];
        if write!(w, "{pid}/fd\0").is_err() {
            return false;
        }
        // SAFETY: `path` is NUL-terminated; openat returns a new fd or -1.
        let raw = unsafe {
            libc::openat(
                self.proc.as_raw_fd(),
                path.as_ptr().cast(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return false;
        }
        // SAFETY: the kernel just gave us this fd; we own it.
        let dir = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut entries = [0u8; 4096];
        loop {
            // SAFETY: getdents64 writes at most `entries.len()` bytes into `entries`.
            let n =
                unsafe { libc::syscall(libc::SYS_getdents64, dir.as_raw_fd(), entries.as_mut_ptr(), entries.len()) };
            let Ok(n) = usize::try_from(n) else { return false };
            if n == 0 {
                return false;
            }
            // getdents fills the buffer until the next record does not fit, and a
            // record of an fd (at most 10 digits) takes at most 32 bytes: with that
            // much room left, this read listed every fd, and the call that would
            // return 0 can be saved (one of the ~7 syscalls a process costs).
            let listed_all = entries.len() - n >= MAX_FD_RECORD;
            let mut rest = entries.get(..n).unwrap_or_default();
            // struct linux_dirent64 { u64 ino; i64 off; u16 reclen; u8 type; char name[]; }
            while let Some(reclen) = rest.get(16..18).map(|b| usize::from(u16::from_ne_bytes([b[0], b[1]]))) {
                let Some(name) = rest.get(19..reclen) else { break };
                rest = rest.get(reclen..).unwrap_or_default();
                // The name is NUL-terminated within the record; "." and ".." are no fds.
                if name.first().is_none_or(|b| !b.is_ascii_digit()) || !name.contains(&0) {
                    continue;
                }
                if let Some(inode) = socket_inode(&dir, name)
                    && hit(inode)
                {
                    return true;
                }
            }
            if listed_all {
                return false;
            }
        }
    }
}

/// The largest `linux_dirent64` record of an fd directory entry: 19 bytes of header,
/// a name of at most 10 digits and its NUL, padded to 8 bytes.
const MAX_FD_RECORD: usize = 32;

/// The inode of the socket the fd link `name` (NUL-terminated) in the fd directory
/// `dir` names; `None` for any other file, or a link gone meanwhile.
fn socket_inode(dir: &std::os::fd::OwnedFd, name: &[u8]) -> Option<u64> {
    use std::os::fd::AsRawFd;
    // "socket:[" + at most 20 digits + "]" fits; a longer target is not a socket.
    let mut target = [0u8; 64];
    // SAFETY: `name` contains a NUL (checked by the caller); readlinkat writes at
    // most `target.len()` bytes into `target`.
    let n =
        unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr().cast(), target.as_mut_ptr().cast(), target.len()) };
    let link = target.get(..usize::try_from(n).ok()?)?;
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// Bind each address in turn; "in use" on any wins over success on another,
/// since a server may pick exactly that one. Otherwise one success suffices:
/// an address family the machine lacks (`::1` without IPv6) is no obstacle.
fn bind_test(addrs: &[SocketAddr]) -> io::Result<()> {
    let mut bound = false;
    let mut other = None;
    for addr in addrs {
        match TcpListener::bind(addr) {
            Ok(listener) => {
                release(listener);
                bound = true;
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
            Err(e) => other = Some(e),
        }
    }
    match (bound, other) {
        (true, _) => Ok(()),
        (false, Some(e)) => Err(e),
        (false, None) => Err(io::Error::new(io::ErrorKind::InvalidInput, "no address to bind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    /// `pids` without our own children and without the vanished: a child
    /// forked by a concurrent test holds copies of our fds until its exec
    /// closes them.
    fn without_children(mut pids: Vec<u32>) -> Vec<u32> {
        let me = std::process::id();
        pids.retain(|&p| procs::info(p).is_some_and(|i| i.ppid != me));
        pids
    }

    #[test]
    fn finds_own_listener_v4_and_v6() {
        let me = std::process::id();
        let l4 = TcpListener::bind("127.0.0.1:0").expect("bind v4");
        let port = l4.local_addr().expect("addr").port();
        assert_eq!(without_children(listening_pids(port).expect("lookup")), [me]);
        if let Ok(l6) = TcpListener::bind("[::1]:0") {
            let port6 = l6.local_addr().expect("addr").port();
            assert_eq!(without_children(listening_pids(port6).expect("lookup")), [me]);
        }
    }

    #[test]
    fn a_listener_past_many_fds_is_found() {
        // More fds than one getdents buffer lists: the scan reads on.
        let files: Vec<_> = (0..400).map(|_| std::fs::File::open("/dev/null").expect("open")).collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(without_children(listening_pids(port).expect("lookup")).contains(&std::process::id()));
        let me = procs::ProcessIdentity::current();
        assert!(listeners_held_by(port, me, None));
        drop(files);
    }

    #[test]
    fn netlink_and_proc_net_agree() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut by_netlink = HashSet::new();
        diag_listeners(AF_INET, port, &mut by_netlink).expect("sock_diag");
        assert_eq!(by_netlink.len(), 1);
        assert_eq!(by_netlink, proc_net_listeners(port).expect("/proc/net"));
    }

    #[test]
    fn connected_client_is_not_a_holder() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (_server_side, _) = listener.accept().expect("accept");
        let client_port = client.local_addr().expect("client addr").port();
        // The client's ephemeral port has an ESTABLISHED socket, no listener.
        assert!(listening_pids(client_port).expect("lookup").is_empty());
    }

    #[test]
    fn own_listener_is_foreign_without_a_fingerprint() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let found = holders(port).expect("holders");
        let me = found.iter().find(|h| h.pid == std::process::id()).expect("own");
        assert!(!me.ours);
        assert_eq!(me.instance, None);
        assert!(!me.command.is_empty());
        // The listener is this process's: held by its tree, not by a stranger's.
        assert!(listeners_held_by(port, procs::ProcessIdentity::current(), None));
    }

    #[test]
    fn a_fingerprinted_listener_is_ours_by_its_instance() {
        use std::io::BufRead;
        // A child of ours that listens and carries the fingerprint.
        let script = "import socket,sys\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\n\
                      print(s.getsockname()[1],flush=True)\nsys.stdin.read()";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .env(INSTANCE_ENV, "mine")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        std::io::BufReader::new(out).read_line(&mut line).expect("port line");
        let port: u16 = line.trim().parse().expect("a port");
        let found = holders(port).expect("holders");
        let h = found.iter().find(|h| h.pid == child.id()).expect("the child");
        assert!(h.ours);
        assert_eq!(h.instance.as_deref(), Some("mine"));
        let id = procs::ProcessIdentity::of(child.id()).expect("alive");
        assert!(listeners_held_by(port, id, None));
        // A listener of its parent's is not the child's: a neighbour is not ours.
        let mine = TcpListener::bind("127.0.0.1:0").expect("bind");
        assert!(!listeners_held_by(mine.local_addr().expect("addr").port(), id, None));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn free_port_can_be_bound_until_taken() {
        let port = free_port("127.0.0.1").expect("free port");
        assert_ne!(port, 0);
        assert!(can_bind("127.0.0.1", port));
        let _held = TcpListener::bind(("127.0.0.1", port)).expect("bind");
        assert!(!can_bind("127.0.0.1", port));
    }

    #[test]
    fn time_wait_does_not_count_as_in_use() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        // The server closes first, so its side of the connection lingers
        // (FIN_WAIT/TIME_WAIT) on `port` after the listener is gone.
        drop(server_side);
        drop(client);
        release(listener);
        assert!(listening_pids(port).expect("lookup").is_empty());
        assert!(can_bind("127.0.0.1", port));
    }

    #[tokio::test]
    async fn wait_free_returns_once_released() {
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        let timed_out = |r: Result<()>| r.is_err_and(|e| e.chain().contains("still in use"));
        let short = Duration::from_millis(5);
        assert!(timed_out(wait_free("127.0.0.1", port, short).await));
        // An IPv6 literal host is resolved as such, not mangled into "::1:PORT".
        if let Ok(held6) = TcpListener::bind("[::1]:0") {
            let port6 = held6.local_addr().expect("addr").port();
            assert!(timed_out(wait_free("::1", port6, short).await));
            assert!(!can_bind("::1", port6));
        }
        drop(held);
        wait_free("127.0.0.1", port, Duration::from_secs(10)).await.expect("freed");
    }
}
