//! Issue 26, items 7 and 8: a record is a claim for reads too. `tether logs` reads only the
//! log tether writes for that name in its state directory — never another file
//! (`/etc/shadow`, a link to it); `tether status` calls a record `ready` only when the
//! listener on its port is the instance's own — never a neighbour's. Records are planted,
//! so the tests run inside their own pid namespace (see `tether_testkit::forged`).
// Linux only: its forged records are planted in a pid namespace of its own (unshare).
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use tether::core::procs::ProcessIdentity;
use tether_testkit::forged::{assert_namespaced, plant_record};
use tether_testkit::in_pid_namespace;

fn logs(state: &Path, name: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["logs", "--name", name])
        .env("TETHER_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .expect("run tether logs")
}

#[test]
fn logs_reads_only_tethers_own_log_of_that_name() {
    in_pid_namespace!(inner_logs_reads_only_tethers_own_log);
}

#[test]
#[ignore = "runs only as pid 1 of its own pid namespace; logs_reads_only_tethers_own_log_of_that_name starts it"]
fn inner_logs_reads_only_tethers_own_log() {
    assert_namespaced();
    let state = tempfile::tempdir().expect("state dir");
    let elsewhere = tempfile::tempdir().expect("another directory");
    let secret = elsewhere.path().join("secret");
    std::fs::write(&secret, "the secret\n").expect("write the secret");
    // Another file, a link to it from inside the state directory, and another name's log.
    let link = state.path().join("link.log");
    std::os::unix::fs::symlink(&secret, &link).expect("symlink");
    std::fs::write(state.path().join("other.log"), "other's output\n").expect("other's log");
    for (name, claimed) in
        [("shadow", secret.clone()), ("link", link.clone()), ("thief", state.path().join("other.log"))]
    {
        plant_record(state.path(), name, "native", json!({"log_file": claimed}));
        let out = logs(state.path(), name);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stdout.contains("secret") && !stdout.contains("other's"), "{name}: read {stdout}");
        assert_ne!(out.status.code(), Some(0), "{name}: {stderr}");
        assert!(stderr.contains("refusing"), "{name}: says why: {stderr}");
    }
    // Its own log, in the state directory, is read; as a link planted in its place it is not.
    std::fs::write(state.path().join("own.log"), "own output\n").expect("own log");
    plant_record(state.path(), "own", "native", json!({"log_file": state.path().join("own.log")}));
    let out = logs(state.path(), "own");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "own output\n", "{}", String::from_utf8_lossy(&out.stderr));
    plant_record(state.path(), "link", "native", json!({"log_file": link}));
    let out = logs(state.path(), "link");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn status_calls_ready_only_an_instances_own_listener() {
    in_pid_namespace!(inner_status_calls_ready_only_an_instances_own_listener);
}

#[test]
#[ignore = "runs only as pid 1 of its own pid namespace; status_calls_ready_only_an_instances_own_listener starts it"]
fn inner_status_calls_ready_only_an_instances_own_listener() {
    assert_namespaced();
    let state = tempfile::tempdir().expect("state dir");
    // A neighbour listening (no fingerprint of ours), and a record claiming its port, with
    // a live owner (this test) and leader (a sleeper of ours by pid, not by fingerprint).
    let neighbour = std::net::TcpListener::bind("127.0.0.1:0").expect("a neighbour's listener");
    let port = neighbour.local_addr().expect("its address").port();
    let mut sleeper = Command::new("sleep").arg("600").stdin(Stdio::null()).spawn().expect("sleep");
    let leader = ProcessIdentity::of(sleeper.id()).expect("the sleeper's identity");
    let me = ProcessIdentity::current();
    let id = |p: ProcessIdentity| json!({"pid": p.pid, "start_time": p.start_time});
    plant_record(
        state.path(),
        "claim",
        "native",
        json!({"detached": false, "owner": id(me), "leader": id(leader), "port": port,
               "url": format!("http://127.0.0.1:{port}")}),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["status", "--name", "claim", "--json"])
        .env("TETHER_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .output()
        .expect("run tether status");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json ({e}): {out:?}"));
    assert_ne!(doc["state"], "ready", "a neighbour's listener is not the instance's: {doc}");
    assert_eq!(doc["health"], "not answering", "{doc}");
    drop(neighbour);
}
