//! One backend for many fronts (issue 13, item 2): `up --share LINGER` of the same
//! name attach to one detached backend by leases; a SIGKILLed front's lease goes with
//! it (the kernel drops its lock); the backend stops LINGER after the last one, and
//! its record goes too.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tether::core::procs::ProcessIdentity;

const EXE: &str = env!("CARGO_BIN_EXE_tether");
const WAIT: Duration = Duration::from_secs(60);

/// A `tether up --share` front, killed on drop.
struct Front {
    child: Child,
    ready: Value,
}

impl Front {
    fn start(state: &Path, linger: &str) -> Front {
        let mut child = Command::new(EXE)
            .args([
                "up",
                "--json",
                "--name",
                "shared",
                "--port",
                "auto",
                "--share",
                linger,
                "--preset",
                "claude-skills",
            ])
            .args(["--", EXE, "demo-backend", "--port", "{port}", "--ready-after", "200ms"])
            .env("TETHER_STATE_DIR", state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run tether");
        let out = child.stdout.take().expect("stdout");
        let ready = BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .find(|v| v["state"] == "ready")
            .expect("a ready line");
        Front { child, ready }
    }

    fn pid(&self) -> u32 {
        self.ready["pid"].as_u64().expect("the backend's pid") as u32
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status(state: &Path) -> Value {
    let out = Command::new(EXE)
        .args(["status", "--name", "shared", "--json"])
        .env("TETHER_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .expect("status");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn fronts_share_one_backend_and_it_stops_after_the_last() {
    let state = tempfile::tempdir().expect("state");
    let a = Front::start(state.path(), "300ms");
    let mut b = Front::start(state.path(), "300ms");
    assert_eq!(a.ready["reused"], false, "{}", a.ready);
    assert_eq!((b.ready["reused"].as_bool(), b.pid()), (Some(true), a.pid()), "one backend: {}", b.ready);
    let backend = ProcessIdentity::of(a.pid()).expect("the backend runs");
    assert_eq!(status(state.path())["attached"], 2);

    // A front killed outright: the kernel gives its lease back; the backend stays.
    drop(a);
    assert!(tether_testkit::wait_until(WAIT, || status(state.path())["attached"] == 1), "{}", status(state.path()));
    assert!(backend.is_alive(), "the backend stopped while a front still holds it");

    // The last front ends cleanly: it only lets go; the backend stops after the linger.
    let pid = nix::unistd::Pid::from_raw(b.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    assert_eq!(b.child.wait().expect("wait").code(), Some(0));
    assert!(tether_testkit::wait_until(WAIT, || !backend.is_alive()), "the backend outlived every front");
    assert!(
        tether_testkit::wait_until(WAIT, || !state.path().join("shared.json").exists()),
        "the record of a backend that stopped by itself is left behind"
    );
    println!("reliability: 2 fronts sharing one backend (one SIGKILLed) | 1 backend | 0 left after the linger");
}
