//! A remote engine probed at an address of this machine.
//!
//! A remote engine publishes the container port on its own machine, at `--host`;
//! readiness is probed at `--host:PORT` from here. When `--host` is an address of
//! this machine (loopback, or one of its interfaces: a tunnel such as socat or
//! `ssh -L` to the engine), the probe reaches whatever listens on that port *here*,
//! and the engine's view of its own bindings says nothing about that. So a process of
//! this machine listening on the port is refused: before the start on a fixed port,
//! and once the engine has published (its pick, or the fixed one). The one listener
//! accepted is the local engine's own proxy (`docker-proxy`) publishing this very
//! container — the tunnel leads back to this machine's engine — which is verified by
//! asking this machine's engine (the default socket) for the container's id.

use std::net::{IpAddr, TcpListener};
use std::time::Duration;

use tether_core::{Error, PortHolder, Result};

use crate::engine;

/// How long asking this machine's engine about the container may take.
const LOCAL_ENGINE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `host` (an IP literal, maybe bracketed) is an address of this machine:
/// loopback, unspecified, or one a socket can be bound to.
pub(crate) fn is_local_address(host: &str) -> bool {
    let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() else { return false };
    ip.is_loopback() || ip.is_unspecified() || TcpListener::bind((ip, 0)).is_ok()
}

/// Whether `holder` of `port` is the Docker engine's port proxy: the engine's own
/// program (`docker-proxy` publishing this very host port, or `dockerd`) running as
/// root, as the engine does. A program of that name run by a user is a stranger.
fn is_engine_proxy(holder: &PortHolder, port: u16) -> bool {
    is_proxy_command(&holder.command, port) && runs_as_root(holder.pid)
}

/// Whether `command` (a command line) is the engine's proxy for host port `port`:
/// `docker-proxy … -host-port PORT …`, or `dockerd`.
fn is_proxy_command(command: &str, port: u16) -> bool {
    let mut words = command.split_whitespace();
    let program = words.next().unwrap_or_default();
    match program.rsplit('/').next() {
        Some("docker-proxy") => {
            let args: Vec<&str> = words.collect();
            let port = port.to_string();
            args.windows(2).any(|w| w[0] == "-host-port" && w[1] == port)
        }
        Some("dockerd") => true,
        _ => false,
    }
}

/// Whether process `pid` runs as root (real and effective uid 0); any doubt is `false`.
fn runs_as_root(pid: u32) -> bool {
    tether_core::sys::runs_as_root(pid)
}

/// Whether this machine's engine (the default socket) has the container `id`: then
/// the remote engine is this machine's own, reached through a tunnel, and its proxy
/// on the port publishes this container. Any failure is `false`.
async fn local_engine_has(id: &str) -> bool {
    let ask = async {
        let docker = engine::connect_to(engine::DEFAULT_SOCKET).await.ok()?;
        docker.inspect_container(id, None).await.ok()
    };
    matches!(tokio::time::timeout(LOCAL_ENGINE_TIMEOUT, ask).await, Ok(Some(_)))
}

/// The processes of this machine a probe of `host:port` could reach instead of the
/// container `container` (`None`: not started yet, so every listener is one): every
/// listener on the port, except this machine's engine's proxy when that engine has
/// the container. A port that cannot be bound while no listener is visible (another
/// user's, without root) counts as one, unnamed.
pub(crate) async fn strangers(host: &str, port: u16, container: Option<&str>) -> Result<Vec<PortHolder>> {
    let holders = tether_core::port::holders(port)?;
    if holders.is_empty() {
        if tether_core::port::can_bind(host, port) {
            return Ok(Vec::new());
        }
        return Ok(vec![PortHolder {
            pid: 0,
            user: None,
            command: "a process of another user (not visible without root)".into(),
            ours: false,
            instance: None,
        }]);
    }
    let proxy_is_ours = match container {
        Some(id) if holders.iter().any(|h| is_engine_proxy(h, port)) => local_engine_has(id).await,
        _ => false,
    };
    Ok(holders.into_iter().filter(|h| !(proxy_is_ours && is_engine_proxy(h, port))).collect())
}

/// The refusal: who listens on `host:port` here, and why that matters.
pub(crate) fn refusal(host: &str, port: u16, holders: &[PortHolder], picked: bool) -> Error {
    let who: Vec<String> = holders
        .iter()
        .map(|h| match (h.pid, &h.user) {
            (0, _) => h.command.clone(),
            (pid, Some(user)) => format!("pid {pid} ({user}): {}", h.command),
            (pid, None) => format!("pid {pid}: {}", h.command),
        })
        .collect();
    let port_is = if picked { format!("the engine picked port {port}, and") } else { format!("port {port}:") };
    Error::runner(
        format!(
            "{port_is} a process of this machine listens on it — {}. The Docker engine is remote ({}): it \
             publishes the container on its own machine, but --host {host} is an address of this machine, so the \
             readiness probe would reach that process, not the container. Stop it, choose another port{}, or give \
             --host the engine machine's address as this machine reaches it",
            who.join("; "),
            engine::docker_host(),
            if picked { " (or try again)" } else { " (--port auto)" },
        ),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_bindable_addresses_are_this_machines() {
        for local in ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "0.0.0.0"] {
            assert!(is_local_address(local), "{local}");
        }
        // TEST-NET-1: never an address of a test machine.
        assert!(!is_local_address("192.0.2.10"));
        assert!(!is_local_address("not-an-ip"));
    }

    #[test]
    fn only_the_engines_proxy_is_recognised() {
        let cmd = "/usr/bin/docker-proxy -proto tcp -host-ip 127.0.0.2 -host-port 40000 -container-port 8000";
        assert!(is_proxy_command(cmd, 40000));
        assert!(!is_proxy_command(cmd, 40001), "a proxy of another host port");
        assert!(!is_proxy_command("/usr/bin/docker-proxy -container-port 40000", 40000), "no host port");
        assert!(is_proxy_command("/usr/sbin/dockerd", 40000));
        assert!(!is_proxy_command("python3 -m http.server 40000", 40000));
        assert!(!is_proxy_command("/tmp/docker-proxy-lookalike -host-port 40000", 40000));
        assert!(!is_proxy_command("", 40000));
    }

    #[test]
    fn a_proxy_named_program_of_a_user_is_a_stranger() {
        let me = std::process::id();
        let root = tether_core::sys::is_root();
        assert_eq!(runs_as_root(me), root);
        assert!(!runs_as_root(0));
        assert!(!runs_as_root(u32::MAX), "no such process");
        let holder = |pid| PortHolder {
            pid,
            user: None,
            command: "/usr/bin/docker-proxy -proto tcp -host-ip 127.0.0.2 -host-port 40000".into(),
            ours: false,
            instance: None,
        };
        assert_eq!(is_engine_proxy(&holder(me), 40000), root, "trusted only as root");
        assert!(!is_engine_proxy(&holder(0), 40000), "an unseen holder");
        #[cfg(unix)]
        if root {
            // A user's process holding the port is never the engine's, whatever its name.
            use std::os::unix::process::CommandExt;
            let mut user = std::process::Command::new("sleep");
            let mut child = user.arg("600").uid(65534).gid(65534).spawn().expect("spawn a user's sleep");
            let pid = child.id();
            // Its uid is set before exec: once its command line is `sleep …`, it is final.
            let settled = (0..100_000).any(|_| {
                std::thread::yield_now();
                tether_core::procs::command_of(pid).is_some_and(|c| c.starts_with("sleep "))
            });
            let judged = settled && !is_engine_proxy(&holder(pid), 40000);
            let _ = child.kill();
            let _ = child.wait();
            assert!(judged, "a user's process named docker-proxy was trusted");
        }
    }
}
