//! The port guard: who listens on a port, is it ours, and is the port free yet.
//!
//! Unlike `lsof -ti :PORT`, only sockets in the LISTEN state count: a client
//! connected to the port (a browser, a health probe, tether itself) is never a
//! holder, so it can never be mistaken for the server and killed.
//!
//! The operating system lists the listeners and their holders ([`sys::Listeners`]).
//! Without privilege, the sockets of another user's processes cannot be seen: such a
//! listener shows up in no holder list, but [`can_bind`] still sees the port as taken. Callers therefore
//! decide "free" by the bind test, never by an empty holder list.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::error::{Error, PortHolder, Result, humanize};
use crate::procs;
use crate::sys;

pub use crate::marks::{INSTANCE_ENV, LEADER_ENV};

/// Pids of processes holding a TCP socket in LISTEN state on `port` (IPv4 and
/// IPv6), sorted and deduplicated. A process whose fds we may not read is
/// skipped (see the module notes). A client connected to the port is never a
/// holder.
pub fn listening_pids(port: u16) -> Result<Vec<u32>> {
    let listeners =
        sys::Listeners::of(port).map_err(|e| Error::io(format!("cannot list the listeners of port {port}"), e))?;
    listeners.holders().map_err(|e| Error::io(format!("cannot find who holds port {port}"), e))
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

/// Whether a listener on `port` is held by a process of instance `name` (its
/// fingerprint, by the [`holders`] rule): how a recorded instance is seen answering
/// through its own listener, not a neighbour's on its port. Where the system names no
/// listener's owner (Wine 8, see `LISTENER_OWNERS_UNKNOWN`), a listener on the port is
/// taken for the instance's.
pub fn held_by_instance(port: u16, name: &str) -> bool {
    if sys::listener_owners_unknown() {
        return sys::Listeners::of(port).is_ok_and(|l| !l.is_empty());
    }
    holders(port).is_ok_and(|holders| holders.iter().any(|h| h.ours && h.instance.as_deref() == Some(name)))
}

/// Whether the listeners on `port` are `root`'s: there is at least one, and every
/// one is held by `root`, one of its descendants or a member of its process group
/// `pgid`. A readiness answer counts only then: a neighbour on the port is not our
/// backend, however ready it says it is.
pub fn listeners_held_by(port: u16, root: procs::ProcessIdentity, pgid: Option<u32>) -> bool {
    let Ok(listeners) = sys::Listeners::of(port) else { return false };
    if listeners.is_empty() || !root.is_alive() {
        return false;
    }
    let mut tree = vec![root.pid];
    tree.extend(procs::descendants(root.pid));
    if let Some(g) = pgid {
        tree.extend(procs::group_members(g));
    }
    if sys::listener_owners_unknown() {
        // Under Wine no listener has an owner to check (see the constant): one that
        // appeared on the port while our backend runs is taken for its, and said so once.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!("{}: the listener on port {port} is taken for the backend's", sys::LISTENER_OWNERS_UNKNOWN)
        });
        return true;
    }
    listeners.all_held_by(&tree)
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

/// Close a probe listener so that it stops listening at once. A plain drop is
/// not enough: a child forked meanwhile by another thread shares the socket
/// until its exec closes it, and would keep the port "in use" until then.
/// `shutdown` acts on the socket itself, whoever else holds it.
fn release(listener: TcpListener) {
    sys::shutdown_listener(&listener);
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
        if crate::sys::listener_owners_unknown() {
            eprintln!("skipped: {}", crate::sys::LISTENER_OWNERS_UNKNOWN);
            return;
        }
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
        if crate::sys::listener_owners_unknown() {
            eprintln!("skipped: {}", crate::sys::LISTENER_OWNERS_UNKNOWN);
            return;
        }
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
        if crate::sys::listener_owners_unknown() {
            eprintln!("skipped: {}", crate::sys::LISTENER_OWNERS_UNKNOWN);
            return;
        }
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
        if crate::sys::listener_owners_unknown() {
            eprintln!("skipped: {}", crate::sys::LISTENER_OWNERS_UNKNOWN);
            return;
        }
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
