//! Owner and guard both SIGKILLed (a `kill -9` of the whole tether tree): the backend —
//! the guard's direct child — dies with its guard (the parent-death signal the guard
//! sets on it); a grandchild that stayed in the process group lives on, `tether status`
//! calls the instance `orphaned` (not `dead`) while it does, and `tether down` stops it.
//!
//! Only processes this test started are signalled (the tether tree), and every one of
//! them is SIGKILLed when the test ends, even when an assertion fails.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tether::core::procs::{self, ProcessIdentity};

/// The bound for anything the test waits for (a line, a process to go). Generous: only
/// a hung tether reaches it.
const WAIT: Duration = Duration::from_secs(120);

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_tether")
}

/// The lines of one output stream, read on a thread so the child never blocks.
fn lines(reader: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The first line from `rx` for which `pred` holds (bounded by `WAIT`); `seen` keeps
/// every line read, for the failure message.
fn find_line(rx: &Receiver<String>, seen: &mut Vec<String>, pred: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).ok()?;
        seen.push(line.clone());
        if pred(&line) {
            return Some(line);
        }
    }
}

/// Polls (bounded by `WAIT`) until `cond` holds; returns whether it did.
fn wait_until(cond: impl FnMut() -> bool) -> bool {
    tether_testkit::wait_until(WAIT, cond)
}

/// `demo-backend grandchild pid N` → N.
fn number_after(line: &str, marker: &str) -> Option<u32> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

/// SIGKILLs, when dropped, the tether process (and reaps it) and every process it
/// holds that is still that very process (pid + start time).
struct Tree {
    tether: Child,
    others: Vec<ProcessIdentity>,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = self.tether.kill();
        let _ = self.tether.wait();
        for id in &self.others {
            if id.is_alive() {
                let _ = kill(Pid::from_raw(id.pid as i32), Signal::SIGKILL);
            }
        }
    }
}

fn signal(id: ProcessIdentity, sig: Signal) {
    if id.is_alive() {
        kill(Pid::from_raw(id.pid as i32), sig).unwrap_or_else(|e| panic!("{sig} to pid {}: {e}", id.pid));
    }
}

fn command_of(pid: u32) -> String {
    procs::info(pid).map_or_else(|| "(gone)".into(), |i| i.command)
}

#[test]
fn killing_owner_and_guard_takes_the_backend_and_status_names_the_orphan() {
    let state = tempfile::tempdir().expect("a temporary state directory");
    let tether = |args: &[&str]| -> Output {
        Command::new(exe())
            .args(args)
            .env("TETHER_STATE_DIR", state.path())
            .stdin(Stdio::null())
            .output()
            .expect("run tether")
    };
    let mut child = Command::new(exe())
        .args(["up", "--name", "o", "--port", "auto", "--", exe(), "demo-backend", "--port", "{port}"])
        .arg("--spawn-grandchild")
        .env("TETHER_STATE_DIR", state.path())
        .env_remove("TETHER_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tether up");
    let (out, err) = (lines(child.stdout.take().expect("stdout")), lines(child.stderr.take().expect("stderr")));
    let owner = ProcessIdentity::of(child.id()).expect("tether runs");
    let mut tree = Tree { tether: child, others: Vec::new() };
    let (mut seen_out, mut seen_err) = (Vec::new(), Vec::new());
    let ready = find_line(&out, &mut seen_out, |l| l.starts_with("ready: http://"));
    assert!(ready.is_some(), "no ready line\nstdout: {seen_out:#?}\nstderr: {seen_err:#?}");
    let line = find_line(&err, &mut seen_err, |l| l.contains("demo-backend grandchild pid "))
        .unwrap_or_else(|| panic!("no grandchild line\nstderr: {seen_err:#?}"));
    let gpid = number_after(&line, "demo-backend grandchild pid ").expect("a pid in the grandchild line");
    let grandchild = ProcessIdentity::of(gpid).expect("the grandchild runs");
    tree.others.push(grandchild);

    // tether → guard → backend → grandchild (all in the guard's process group).
    let children = |pid: u32| -> Vec<ProcessIdentity> {
        procs::descendants(pid)
            .into_iter()
            .filter(|p| procs::parent_of(*p) == Some(pid))
            .filter_map(ProcessIdentity::of)
            .collect()
    };
    let guard = children(owner.pid)
        .into_iter()
        .find(|id| command_of(id.pid).contains("__tether-guard"))
        .unwrap_or_else(|| panic!("no guard below tether: {:?}", procs::descendants(owner.pid)));
    tree.others.push(guard);
    let backend = children(guard.pid)
        .into_iter()
        .find(|id| id.pid != gpid)
        .unwrap_or_else(|| panic!("no backend below the guard: {:?}", procs::descendants(guard.pid)));
    tree.others.push(backend);
    assert_eq!(procs::pgid_of(gpid), Some(guard.pid), "the grandchild is in the guard's group");

    // The owner is stopped first, so that it cannot act on the guard's death; then the guard
    // is killed, then the owner. The guard is never *stopped*: were it stopped when the owner
    // dies, the kernel would find the guard's process group orphaned with a stopped member and
    // send the whole group SIGHUP + SIGCONT (POSIX job control), killing the grandchild that
    // this test expects to be left — which made this test fail now and then.
    signal(owner, Signal::SIGSTOP);
    signal(guard, Signal::SIGKILL);
    assert!(wait_until(|| !guard.is_alive()), "the guard survived SIGKILL");
    signal(owner, Signal::SIGKILL);
    let _ = tree.tether.wait();

    // The backend dies with its guard (its parent-death signal)…
    assert!(wait_until(|| !backend.is_alive()), "the backend outlived its guard: {}", command_of(backend.pid));
    // …while a grandchild that stayed in the group lives on: `status` says so.
    assert!(grandchild.is_alive(), "the grandchild is expected to be left (nothing stopped it)");
    let status = tether(&["status", "--name", "o", "--json"]);
    assert!(status.status.success(), "status: {status:?}");
    let v: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(v["state"], "orphaned", "{v}");
    assert_eq!(v["orphans"], serde_json::json!([gpid]), "{v}");
    let human = tether(&["status", "--name", "o"]);
    let text = String::from_utf8_lossy(&human.stdout);
    // The backend held the port; the grandchild does not (unless it inherited the socket).
    let said = |how: &str| text.contains(&format!("orphaned, {how} — `tether down --name o` stops it"));
    let port = v["port"].as_u64().expect("a port");
    assert!(said("still running") || said(&format!("still answering on {port}")), "{text}");

    // `down` stops what is left of the group, and forgets the record.
    let down = tether(&["down", "--name", "o"]);
    assert!(down.status.success(), "down: {down:?}");
    assert!(wait_until(|| !grandchild.is_alive()), "the grandchild outlived `down`: {}", command_of(gpid));
    let after = tether(&["status", "--name", "o", "--json"]);
    assert!(!after.status.success(), "no record after down: {after:?}");
}
