//! tether on Windows, end to end, run by hand under Wine after `source scripts/lib/windows.sh` (inside a pid
//! namespace of its own: one test plants a record naming a stranger). The `tether.exe`
//! built for `x86_64-pc-windows-gnu` starts its own demo backend (`tether.exe
//! demo-backend`) through the native runner.
//!
//! What Wine cannot show (see ../shared/PLATFORMS.md): console control events are not
//! delivered, so every stop here ends by the forced path after the grace
//! (`TerminateProcess` of what the gate let through); listeners have owner 0, so the port
//! guard names no holder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tether::core::procs::{self, ProcessIdentity};

/// How long processes may take to disappear after they were stopped or orphaned.
const GONE: Duration = Duration::from_secs(60);

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_tether")
}

struct Sandbox {
    state: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Sandbox { state: tempfile::tempdir().expect("a temporary state directory") }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(exe());
        cmd.args(args)
            .env("TETHER_STATE_DIR", self.state.path())
            .env_remove("TETHER_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run tether.exe")
    }

    fn status(&self, name: &str) -> Value {
        let out = self.run(&["status", "--name", name, "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}\n{}", dump(&out)))
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.state.path().join(format!("{name}.json"))
    }
}

fn dump(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Poll until every one of `ids` has ended or `within` passed; those still alive.
fn wait_gone(ids: &[ProcessIdentity], within: Duration) -> Vec<ProcessIdentity> {
    let deadline = Instant::now() + within;
    loop {
        let alive: Vec<_> = ids.iter().copied().filter(ProcessIdentity::is_alive).collect();
        if alive.is_empty() || Instant::now() > deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pid_in(doc: &Value, key: &str) -> u32 {
    doc[key].as_u64().and_then(|p| u32::try_from(p).ok()).unwrap_or_else(|| panic!("no {key} in {doc}"))
}

/// A stranger: a process tether did not start (no fingerprint), killed on drop.
struct Stranger(Child);

impl Stranger {
    fn spawn() -> Self {
        let child = Command::new("cmd")
            .args(["/c", "ping -n 600 127.0.0.1 >NUL"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a stranger");
        Stranger(child)
    }

    fn id(&self) -> ProcessIdentity {
        ProcessIdentity::of(self.0.id()).expect("the stranger runs")
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `up --detach` → ready; `status` sees the backend below its guard; `down` stops both
/// (the forced path under Wine) and forgets the record.
#[test]
fn detach_status_down() {
    let sandbox = Sandbox::new();
    let up = sandbox.run(&["up", "--detach", "--name", "a", "--port", "auto", "--grace", "300ms"]);
    assert_eq!(up.status.code(), Some(0), "{}", dump(&up));
    assert!(String::from_utf8_lossy(&up.stdout).lines().any(|l| l.starts_with("ready: http://")), "{}", dump(&up));
    let doc = sandbox.status("a");
    assert_eq!(doc["state"], "ready", "{doc}");
    let backend = pid_in(&doc, "pid");
    let guard = pid_in(&doc, "guard_pid");
    assert!(procs::descendants(guard).contains(&backend), "the backend {backend} is not below its guard {guard}");
    let ids: Vec<_> = [guard, backend].into_iter().filter_map(ProcessIdentity::of).collect();
    assert_eq!(ids.len(), 2, "both run: {doc}");

    let down = sandbox.run(&["down", "--name", "a", "--json"]);
    assert_eq!(down.status.code(), Some(0), "{}", dump(&down));
    assert!(wait_gone(&ids, GONE).is_empty(), "alive after `down`: {ids:?}");
    let after = sandbox.run(&["status", "--name", "a"]);
    assert_eq!(after.status.code(), Some(1), "a downed instance is not found\n{}", dump(&after));
}

/// The owner's end, however it comes (here `TerminateProcess` of `tether up`), takes the
/// backend with it: the kill-on-close Job Object the owner entered before the start.
#[test]
fn a_killed_owner_takes_its_backend() {
    let sandbox = Sandbox::new();
    // Its output is not read here: pipes left unread could fill and stall it.
    let mut tether = sandbox
        .command(&["up", "--name", "b", "--port", "auto"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tether up");
    let deadline = Instant::now() + Duration::from_secs(120);
    let doc = loop {
        let doc = sandbox.status("b");
        if doc["state"] == "ready" || Instant::now() > deadline {
            break doc;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(doc["state"], "ready", "{doc}");
    let backend = ProcessIdentity::of(pid_in(&doc, "pid")).expect("the backend runs");
    let mut below: Vec<_> = procs::descendants(tether.id()).into_iter().filter_map(ProcessIdentity::of).collect();
    below.push(backend);
    let _ = tether.kill();
    let _ = tether.wait();
    let left = wait_gone(&below, GONE);
    assert!(left.is_empty(), "alive after the owner was killed: {left:?}");
}

/// A record that names a stranger (a process tether did not start) never gets it
/// signalled: `down` refuses, names it, and the stranger lives on.
#[test]
#[ignore = "plants a record: run with --ignored inside `unshare --pid --fork --mount-proc` with TETHER_TEST_PID_NAMESPACE=1"]
fn a_forged_record_never_stops_a_stranger() {
    // A Wine process cannot see its Linux pid namespace: whoever starts it inside one says so.
    assert_eq!(
        std::env::var("TETHER_TEST_PID_NAMESPACE").as_deref(),
        Ok("1"),
        "this test plants a forged record: run it inside `unshare --pid --fork --mount-proc` with TETHER_TEST_PID_NAMESPACE=1"
    );
    let sandbox = Sandbox::new();
    let up = sandbox.run(&["up", "--detach", "--name", "f", "--port", "auto", "--grace", "300ms"]);
    assert_eq!(up.status.code(), Some(0), "{}", dump(&up));
    let path = sandbox.record_path("f");
    let real = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&real).expect("a record");
    let ours: Vec<_> = ["pid", "guard_pid"]
        .iter()
        .filter_map(|k| doc[*k].as_u64())
        .filter_map(|p| ProcessIdentity::of(p as u32))
        .collect();
    // Stop the real one first, so only the forgery remains.
    let down = sandbox.run(&["down", "--name", "f"]);
    assert_eq!(down.status.code(), Some(0), "{}", dump(&down));
    assert!(wait_gone(&ours, GONE).is_empty());

    let stranger = Stranger::spawn();
    let id = stranger.id();
    let mut forged = doc.clone();
    for key in ["pid", "guard_pid", "pgid"] {
        if forged.get(key).is_some() {
            forged[key] = Value::from(id.pid);
        }
    }
    for key in ["start_time", "guard_start_time"] {
        if forged.get(key).is_some() {
            forged[key] = Value::from(id.start_time);
        }
    }
    write(&path, &forged);
    let down = sandbox.run(&["down", "--name", "f"]);
    assert!(id.is_alive(), "`down` of a forged record stopped a stranger\n{}", dump(&down));
    assert_ne!(down.status.code(), Some(0), "a forged record is no success\n{}", dump(&down));
    let text = String::from_utf8_lossy(&down.stderr);
    assert!(text.contains(&id.pid.to_string()), "the refusal names the stranger\n{}", dump(&down));
}

fn write(path: &Path, doc: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(doc).expect("json")).expect("write the record");
}
