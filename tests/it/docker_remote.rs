//! `tether up --runner docker` on a remote engine, end to end, without a second
//! machine: the real engine's socket is exposed by a real socat on a second loopback
//! address (`tcp://127.0.0.2:PORT`), which tether counts as remote (only a socket
//! file is local). The container port is published on `--host` (required), probed
//! there and reported; `status` and `down` work through the same engine; a SIGKILLed
//! owner's container is removed by its guard through the API, or — guard killed too —
//! swept by the next start. Without `--host`, or
//! with one that would be probed on this machine, it is a usage error (exit 2).

use crate::docker_support;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use docker_support::{
    Cleanup, container_exists, containers_of, engine_available, exe, final_line, image, inspect, json_state,
    unique_name, up_args,
};
use serde_json::Value;

/// The engine's machine as this one reaches it: a second loopback address.
const ENGINE_IP: &str = "127.0.0.2";

/// The bound for what a test waits for. Generous: only a hung tether reaches it.
const WAIT: Duration = Duration::from_secs(120);

/// A running socat exposing the local engine on `ENGINE_IP:port`; killed and reaped
/// when dropped, also when the test panics.
struct Socat {
    child: Child,
    port: u16,
}

impl Socat {
    /// `DOCKER_HOST` for tether: the engine through socat, remote as tether sees it.
    fn docker_host(&self) -> String {
        format!("tcp://{ENGINE_IP}:{}", self.port)
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where socat forwards to: the engine this test process uses (`DOCKER_HOST` when a
/// unix socket or tcp address, else the default socket).
fn engine_address() -> String {
    match std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) {
        Some(h) if h.starts_with("unix://") => format!("UNIX-CONNECT:{}", &h["unix://".len()..]),
        Some(h) if h.starts_with("tcp://") => format!("TCP:{}", &h["tcp://".len()..]),
        _ => "UNIX-CONNECT:/var/run/docker.sock".into(),
    }
}

/// Whether socat is on PATH: in CI a panic when not (scripts/test installs it), locally
/// a skip message and `false`.
fn socat_available() -> bool {
    let ok = Command::new("socat").arg("-V").stdin(Stdio::null()).output().is_ok_and(|o| o.status.success());
    if !ok {
        tether_testkit::missing_tool("socat (`apt-get install -y socat`; scripts/test installs it)");
    }
    ok
}

/// Start socat on a free port of `ENGINE_IP` and wait (polling, bounded) until it
/// accepts connections. `None` (after a skip message) when a tool is missing locally.
fn remote_engine() -> Option<Socat> {
    if !engine_available() || !socat_available() {
        return None;
    }
    let port = tether::core::port::free_port(ENGINE_IP).expect("a free port on the second loopback address");
    Some(socat_on(port))
}

/// Start socat on `ENGINE_IP:port` and wait (polling, bounded) until it accepts.
fn socat_on(port: u16) -> Socat {
    let listen = format!("TCP-LISTEN:{port},bind={ENGINE_IP},reuseaddr,fork");
    let child = Command::new("socat")
        .args([listen.as_str(), engine_address().as_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn socat");
    let mut socat = Socat { child, port };
    let addr = SocketAddr::from((ENGINE_IP.parse::<Ipv4Addr>().expect("an IPv4 literal"), port));
    let deadline = Instant::now() + WAIT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return socat;
        }
        if let Ok(Some(status)) = socat.child.try_wait() {
            panic!("socat ended before accepting on {addr}: {status}");
        }
        assert!(Instant::now() < deadline, "socat does not accept on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tether ARGS` with its own state directory and `DOCKER_HOST`.
fn tether(state: &Path, docker_host: &str, args: &[&str]) -> Output {
    Command::new(exe())
        .args(args)
        .env("TETHER_STATE_DIR", state)
        .env("DOCKER_HOST", docker_host)
        .stdin(Stdio::null())
        .output()
        .expect("run tether")
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed: {}", tether_testkit::dump(out));
}

/// `GET /health` at `host:port`, over a plain socket: the status line and body.
fn get_health(host: &str, port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect((host, port)).expect("connect to the published port");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
    write!(s, "GET /health HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n").expect("send the request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    out
}

/// The (HostIp, HostPort) pairs the container publishes.
fn bindings(id: &str) -> Vec<(String, String)> {
    let ports: Value = serde_json::from_str(&inspect(id, "{{json .NetworkSettings.Ports}}")).expect("inspect JSON");
    ports
        .as_object()
        .expect("a port map")
        .values()
        .flat_map(|v| v.as_array().cloned().unwrap_or_default())
        .map(|b| (b["HostIp"].as_str().unwrap_or("").to_string(), b["HostPort"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// Detached, on an automatic port (picked by the engine) and on a fixed one: published
/// on `--host` only, probed and reported there, seen by `status`, removed by `down`.
fn detached_on_a_remote_engine(port: Option<&str>) {
    let Some(engine) = remote_engine() else { return };
    let (image, name, state) = (image(), unique_name("dk-remote"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    let fixed = port.map(|p| p.to_string());
    let port_arg = fixed.as_deref().unwrap_or("auto");
    let dh = engine.docker_host();
    let out = tether(
        state.path(),
        &dh,
        &up_args(&image, &name, &["--host", ENGINE_IP, "--port", port_arg, "--detach", "--json"], &[]),
    );
    assert_ok(&out, "up --detach on the remote engine");
    let ready = json_state(&out.stdout, "ready").expect("a ready line");
    let id = ready["container_id"].as_str().expect("the container id").to_string();
    let port = ready["port"].as_u64().and_then(|p| u16::try_from(p).ok()).expect("the port");
    assert_ne!(port, 0, "the real port is reported, not 0: {ready}");
    if let Some(fixed) = &fixed {
        assert_eq!(port.to_string(), *fixed, "the port asked for");
    }
    let url = format!("http://{ENGINE_IP}:{port}");
    assert_eq!(ready["url"].as_str(), Some(url.as_str()), "the URL is on --host: {ready}");
    assert_eq!(bindings(&id), vec![(ENGINE_IP.to_string(), port.to_string())], "published on --host only");
    let health = get_health(ENGINE_IP, port);
    assert!(health.starts_with("HTTP/1.") && health.contains(" 200 "), "the backend answers there: {health}");

    let status = tether(state.path(), &dh, &["status", "--name", &name, "--json"]);
    assert_ok(&status, "status");
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["container_id"].as_str(), Some(id.as_str()), "status shows the container: {status}");
    assert_eq!(status["url"].as_str(), Some(url.as_str()), "status shows the URL: {status}");
    assert_eq!(status["port"].as_u64(), Some(u64::from(port)), "status shows the port: {status}");
    assert_eq!(status["state"], "ready", "its health answers: {status}");

    assert_ok(&tether(state.path(), &dh, &["down", "--name", &name]), "down");
    assert_eq!(containers_of(&name), Vec::<String>::new(), "after down: no container");
}

#[test]
fn a_remote_engine_publishes_on_host_with_a_port_it_picks() {
    detached_on_a_remote_engine(None);
}

#[test]
fn a_remote_engine_publishes_on_host_at_a_fixed_port() {
    let port = tether::core::port::free_port(ENGINE_IP).expect("a free port").to_string();
    detached_on_a_remote_engine(Some(&port));
}

/// The instance's record, as stored.
fn record_of(state: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(state.join(format!("{name}.json"))).ok()?;
    Some(serde_json::from_str(&text).expect("the record is JSON"))
}

/// A record remembers its engine: `status`, `logs` and `down` from a shell where
/// `DOCKER_HOST` is unset — or names an engine that is not there — act on the
/// container through the engine it was started on. That engine unreachable (socat
/// killed), `down` fails naming it and keeps the record; once it is back, `down` works.
#[test]
fn status_and_down_reach_the_engine_the_container_was_started_on() {
    let Some(engine) = remote_engine() else { return };
    let (image, name, state) = (image(), unique_name("dk-remote-rec"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    let dh = engine.docker_host();
    let out = tether(
        state.path(),
        &dh,
        &up_args(&image, &name, &["--host", ENGINE_IP, "--port", "auto", "--detach", "--json"], &[]),
    );
    assert_ok(&out, "up --detach on the remote engine");
    let id = json_state(&out.stdout, "ready").expect("a ready line")["container_id"]
        .as_str()
        .expect("the container id")
        .to_string();
    let record = record_of(state.path(), &name).expect("a record");
    assert_eq!(record["engine"].as_str(), Some(dh.as_str()), "the record names its engine: {record}");

    // DOCKER_HOST unset, then naming nothing that answers: the recorded engine is asked.
    for (what, status) in [
        ("DOCKER_HOST unset", docker_support::tether(state.path(), &["status", "--name", &name, "--json"])),
        ("DOCKER_HOST elsewhere", tether(state.path(), "tcp://127.0.0.2:1", &["status", "--name", &name, "--json"])),
    ] {
        assert_ok(&status, what);
        let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
        assert_eq!(status["state"], "ready", "{what}: {status}");
        assert_eq!(status["container_id"].as_str(), Some(id.as_str()), "{what}: {status}");
    }
    let logs = tether(state.path(), "tcp://127.0.0.2:1", &["logs", "--name", &name]);
    assert_ok(&logs, "logs with DOCKER_HOST elsewhere");

    // The recorded engine gone: `down` is an error naming it, and nothing is forgotten.
    let port = engine.port;
    drop(engine);
    let down = docker_support::tether(state.path(), &["down", "--name", &name]);
    assert_eq!(down.status.code(), Some(1), "down with its engine unreachable: {}", tether_testkit::dump(&down));
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains(&dh) && stderr.contains("record is kept"), "the error names the engine: {stderr}");
    assert!(record_of(state.path(), &name).is_some(), "the record is kept");
    assert!(container_exists(&id), "the container was not touched");
    let status = docker_support::tether(state.path(), &["status", "--name", &name, "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_ne!(status["state"], "dead", "an unreachable engine is no proof the container is gone: {status}");

    // The engine back: `down` from the same shell stops and removes it there.
    let engine = socat_on(port);
    assert_ok(&docker_support::tether(state.path(), &["down", "--name", &name]), "down once the engine is back");
    assert!(!container_exists(&id), "down removed the container");
    assert!(record_of(state.path(), &name).is_none(), "and forgot the record");
    drop(engine);
    println!(
        "reliability: remote engine unreachable at `down` (record names its engine) | 1 | 0 records lost, 0 containers orphaned"
    );
}

/// A python listener on `ENGINE_IP:port`, a process of this machine that is not the
/// engine's; killed and reaped when dropped.
struct Stranger(Child);

impl Stranger {
    /// Listening once this returns: the child says so on stdout after `listen()`.
    fn listen(port: u16) -> Option<Stranger> {
        use std::io::{BufRead, BufReader};
        let script = "import socket,sys\ns=socket.socket()\ns.bind((sys.argv[1],int(sys.argv[2])))\ns.listen()\n\
                      print('listening',flush=True)\nwhile True:\n    s.accept()[0].close()\n";
        let mut child = match Command::new("python3")
            .args(["-c", script, ENGINE_IP, &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                tether_testkit::missing_tool(&format!("python3 ({e})"));
                return None;
            }
        };
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout).read_line(&mut line).expect("read the listener's line");
        let stranger = Stranger(child);
        assert_eq!(line.trim(), "listening", "the python listener did not start");
        Some(stranger)
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--host` is an address of this machine (a tunnel's): a process of this machine
/// already listening on the fixed `--port` would answer the probe, not the container,
/// so the start is refused naming it, and no container is created.
#[test]
fn a_local_listener_on_the_fixed_port_of_a_local_host_is_refused() {
    let Some(engine) = remote_engine() else { return };
    let (image, name, state) = (image(), unique_name("dk-remote-stranger"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    let port = tether::core::port::free_port(ENGINE_IP).expect("a free port");
    let Some(stranger) = Stranger::listen(port) else { return };
    let port_arg = port.to_string();
    let out = tether(
        state.path(),
        &engine.docker_host(),
        &up_args(&image, &name, &["--host", ENGINE_IP, "--port", &port_arg, "--detach"], &[]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", tether_testkit::dump(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pid = format!("pid {}", stranger.0.id());
    for needle in [pid.as_str(), "python3", "readiness probe would reach that process, not the container"] {
        assert!(stderr.contains(needle), "`{needle}` missing from: {stderr}");
    }
    assert_eq!(containers_of(&name), Vec::<String>::new(), "no container was created");
    assert!(record_of(state.path(), &name).is_none(), "nothing recorded");
    println!("reliability: remote engine, a local stranger on the published port | 1 | 0 false ready");
}

/// A foreground `up` on the remote engine, once ready: the owner, its ready line, and
/// its container guard (which must reach the remote engine, not this machine's socket).
fn foreground(state: &Path, dh: &str, args: &[&str]) -> (Child, Value, tether::core::procs::ProcessInfo) {
    let mut owner = Command::new(exe())
        .args(args)
        .env("TETHER_STATE_DIR", state)
        .env("DOCKER_HOST", dh)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tether up");
    let ready = final_line(&mut owner);
    let guard = tether::core::procs::descendants(owner.id())
        .into_iter()
        .filter_map(tether::core::procs::info)
        .find(|i| i.command.contains(tether::docker::CONTAINER_GUARD_ARG));
    match (ready, guard) {
        (Some(r), Some(g)) if r["state"] == "ready" && g.command.contains(&format!("--docker-host {dh}")) => {
            (owner, r, g)
        }
        other => {
            let _ = owner.kill();
            let _ = owner.wait();
            panic!("the foreground up on the remote engine did not become ready with a guard reaching {dh}: {other:?}");
        }
    }
}

/// A foreground `up` on the remote engine is SIGKILLed: its container guard reaches
/// the same engine and removes the container.
#[test]
fn a_sigkilled_owners_remote_container_is_removed_by_its_guard() {
    let Some(engine) = remote_engine() else { return };
    let (image, name, state) = (image(), unique_name("dk-remote-kill"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    let dh = engine.docker_host();
    let args = up_args(&image, &name, &["--host", ENGINE_IP, "--port", "auto", "--grace", "2s", "--json"], &[]);
    let (mut owner, ready, _guard) = foreground(state.path(), &dh, &args);
    let id = ready["container_id"].as_str().expect("the container id").to_string();
    assert!(ready["url"].as_str().is_some_and(|u| u.starts_with(&format!("http://{ENGINE_IP}:"))), "{ready}");
    assert_eq!(containers_of(&name), vec![id.clone()], "one container while up");

    owner.kill().expect("SIGKILL the owner");
    owner.wait().expect("reap the owner");
    assert!(
        tether_testkit::wait_until(WAIT, || containers_of(&name).is_empty()),
        "the remote container outlived its owner: {:?}",
        containers_of(&name)
    );
}

/// The owner and its guard are SIGKILLed together: the next `up` of the name on the
/// remote engine (another state directory: only the labels tell) sweeps the container.
#[test]
fn a_dead_owners_remote_container_is_swept_by_the_next_up() {
    let Some(engine) = remote_engine() else { return };
    let (image, name) = (image(), unique_name("dk-remote-sweep"));
    let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    let dh = engine.docker_host();
    let (mut owner, ready, guard) =
        foreground(a.path(), &dh, &up_args(&image, &name, &["--host", ENGINE_IP, "--port", "auto", "--json"], &[]));
    let first = ready["container_id"].as_str().expect("the container id").to_string();
    // The guard first: once SIGKILL is sent it runs no more code, so nothing removes
    // the container when the owner dies next.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(guard.pid as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL the guard");
    owner.kill().expect("SIGKILL the owner");
    owner.wait().expect("reap the owner");
    assert_eq!(containers_of(&name), vec![first.clone()], "the dead owner's container is left for the sweep");
    assert_eq!(inspect(&first, "{{.State.Running}}"), "true", "and it still runs");

    let out = tether(
        b.path(),
        &dh,
        &up_args(&image, &name, &["--host", ENGINE_IP, "--port", "auto", "--detach", "--json"], &[]),
    );
    assert_ok(&out, "the second up");
    let second = json_state(&out.stdout, "ready").expect("ready")["container_id"].as_str().expect("id").to_string();
    assert_ne!(first, second);
    assert!(!container_exists(&first), "the second up swept the dead owner's container {first}");
    assert_eq!(containers_of(&name), vec![second], "exactly one container: the new one");
    assert_ok(&tether(b.path(), &dh, &["down", "--name", &name]), "down");
    assert_eq!(containers_of(&name), Vec::<String>::new(), "none after down");
}

/// No engine needed: the plan is refused before any is reached.
#[test]
fn a_remote_engine_needs_an_explicit_host_of_its_machine() {
    let state = tempfile::tempdir().expect("tempdir");
    // Nothing listens there: a bad host must be refused before the engine is tried.
    let dh = "tcp://127.0.0.2:1";
    let base = ["up", "--runner", "docker", "--image", "any", "--name", "dk-remote-nohost"];
    let without: Vec<&str> = base.iter().copied().chain(["--", "x"]).collect();
    let out = tether(state.path(), dh, &without);
    assert_eq!(out.status.code(), Some(2), "{}", tether_testkit::dump(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in ["remote", "DOCKER_HOST=tcp://127.0.0.2:1", "--host"] {
        assert!(stderr.contains(needle), "`{needle}` missing from: {stderr}");
    }
    for bad in ["0.0.0.0", "::", "localhost", "engine.example"] {
        let args: Vec<&str> = base.iter().copied().chain(["--host", bad, "--", "x"]).collect();
        let out = tether(state.path(), dh, &args);
        assert_eq!(out.status.code(), Some(2), "--host {bad}: {}", tether_testkit::dump(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("remote Docker engine") && stderr.contains(bad), "--host {bad}: {stderr}");
    }
    // An address that is not this machine's is fine for a remote engine: the error is
    // then the unreachable engine's (exit 1), not the host's.
    let args: Vec<&str> = base.iter().copied().chain(["--host", "192.0.2.10", "--", "x"]).collect();
    let out = tether(state.path(), dh, &args);
    assert_eq!(out.status.code(), Some(1), "{}", tether_testkit::dump(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the Docker engine"), "{stderr}");
}
