//! The port guard stops what it may (issue 11, item 4): a holder that is ours but
//! unrecorded, or a foreign one with `--force-port`, is signalled even when it does
//! not lead a process group of its own — every holder here is a process this test
//! started (in the test's own group), so nothing else can be hit.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tether"))
}

/// A python TCP server in the test's process group (so it leads none), printing its port.
fn holder(env: Option<(&str, &str)>) -> (Child, u16) {
    let script = "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                  s.bind(('127.0.0.1',0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\ntime.sleep(600)";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]).stdin(Stdio::null()).stdout(Stdio::piped());
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("its port");
    (child, line.trim().parse().expect("a port"))
}

fn tether(state: &std::path::Path, args: &[&str]) -> Output {
    Command::new(exe()).args(args).env("TETHER_STATE_DIR", state).stdin(Stdio::null()).output().expect("run tether")
}

fn up(state: &std::path::Path, name: &str, port: u16, extra: &[&str]) -> Output {
    let exe = exe().to_string_lossy().into_owned();
    let port = port.to_string();
    let mut args = vec!["up", "--detach", "--name", name, "--port", &port, "--grace", "1s"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", &exe, "demo-backend", "--port", "{port}"]);
    tether(state, &args)
}

fn dump(out: &Output) -> String {
    format!("{}\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn assert_stopped_then_down(state: &std::path::Path, name: &str, mut holder: Child, out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", dump(out));
    // tether waited until the port was free, so the holder has exited by now.
    let ended = holder.try_wait().expect("try_wait");
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(ended.is_some(), "the holder still runs: {}", dump(out));
    let down = tether(state, &["down", "--name", name]);
    assert_eq!(down.status.code(), Some(0), "{}", dump(&down));
}

#[test]
fn force_port_stops_a_foreign_holder_that_leads_no_group() {
    let state = tempfile::tempdir().expect("state dir");
    let (child, port) = holder(None);
    let refused = up(state.path(), "fp", port, &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", dump(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not tether's"), "{}", dump(&refused));
    let out = up(state.path(), "fp", port, &["--force-port"]);
    assert_stopped_then_down(state.path(), "fp", child, &out);
}

/// A holder with a tether fingerprint but no record here may be another state directory's
/// live instance: left alone (exit 1, named), stopped only with `--force-port`.
#[test]
fn an_unrecorded_tether_holder_is_left_alone_unless_forced() {
    let state = tempfile::tempdir().expect("state dir");
    let (mut child, port) = holder(Some(("TETHER_INSTANCE", "leftover")));
    let out = up(state.path(), "fresh", port, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    assert!(dump(&out).contains("which this state directory does not record"), "{}", dump(&out));
    assert!(child.try_wait().expect("try_wait").is_none(), "the holder was stopped: {}", dump(&out));
    let out = up(state.path(), "fresh", port, &["--force-port"]);
    assert_stopped_then_down(state.path(), "fresh", child, &out);
}

/// Two state directories, one port: the second `up` never stops the first's live instance
/// (it used to, as "ours by fingerprint").
#[test]
fn another_state_directorys_instance_on_the_port_is_never_stopped() {
    let (a, b) = (tempfile::tempdir().expect("state dir"), tempfile::tempdir().expect("state dir"));
    let port = std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).expect("a free port").port();
    let first = up(a.path(), "alpha", port, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", dump(&first));
    let second = up(b.path(), "beta", port, &[]);
    assert_eq!(second.status.code(), Some(1), "{}", dump(&second));
    assert!(dump(&second).contains("tether instance 'alpha'"), "{}", dump(&second));
    let status = tether(a.path(), &["status", "--name", "alpha", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(v["state"], "ready", "alpha was touched: {v}");
    let down = tether(a.path(), &["down", "--name", "alpha"]);
    assert_eq!(down.status.code(), Some(0), "{}", dump(&down));
}
