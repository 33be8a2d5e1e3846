//! No litter (issue 13, item 4): the record of a foreground instance whose owner was
//! SIGKILLed — a killed `mcp-proxy` of its own name, which no later start will sweep —
//! is forgotten by the next start of any name, once nothing of it runs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use tether::core::procs::{self, ProcessIdentity};

const EXE: &str = env!("CARGO_BIN_EXE_tether");

#[test]
fn a_killed_owners_record_is_forgotten_by_the_next_start() {
    let state = tempfile::tempdir().expect("state");
    let mut owner = Command::new(EXE)
        .args(["up", "--name", "killed", "--port", "auto", "--", EXE, "demo-backend", "--port", "{port}"])
        .env("TETHER_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run tether");
    let out = owner.stdout.take().expect("stdout");
    let ready = BufReader::new(out).lines().map_while(Result::ok).any(|l| l.starts_with("ready: "));
    assert!(ready, "the first instance never became ready");
    let below: Vec<ProcessIdentity> =
        procs::descendants(owner.id()).into_iter().filter_map(ProcessIdentity::of).collect();
    owner.kill().expect("SIGKILL the owner");
    owner.wait().expect("reap it");
    // Its guard takes the backend down; then nothing of it runs.
    let gone = tether_testkit::wait_until(Duration::from_secs(60), || below.iter().all(|p| !p.is_alive()));
    assert!(gone, "the killed owner's backend still runs");
    assert!(state.path().join("killed.json").exists(), "the record is still there before the next start");
    let next = Command::new(EXE)
        .args(["up", "--detach", "--name", "next", "--port", "auto", "--", EXE, "demo-backend", "--port", "{port}"])
        .env("TETHER_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .output()
        .expect("run tether");
    assert!(next.status.success(), "{}", String::from_utf8_lossy(&next.stderr));
    assert!(!state.path().join("killed.json").exists(), "the dead instance's record is litter");
    let down = Command::new(EXE)
        .args(["down", "--name", "next"])
        .env("TETHER_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .output()
        .expect("down");
    assert!(down.status.success());
}
