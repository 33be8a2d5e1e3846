//! Issue 26, item 7: `tether logs` reads only the log tether writes for that name in its
//! state directory — a record naming another file (`/etc/shadow`, a link to it) is a
//! claim, refused for reads as for signals. Records are planted, so the test runs inside
//! its own pid namespace (see `tether_testkit::forged`).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::json;
use tether_testkit::forged::{assert_namespaced, in_pid_namespace, plant_record};

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
    in_pid_namespace("inner_logs_reads_only_tethers_own_log");
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
