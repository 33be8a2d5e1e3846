//! Owner and guard SIGKILLed together (`pkill -9 tether` matches `tether-guard` too; issue
//! 26, item 2): the backend dies with its guard (its parent-death signal), but what it
//! started that left the process group — a `setsid` grandchild that keeps serving the
//! port, or the Python child of a uv that passes no death on, and that child's own
//! `setsid` worker — lives on. `tether status` must call such an instance `orphaned`
//! (never `dead` while the port answers), `tether down` must stop every process of it
//! and say which, and afterwards nothing carrying the instance's fingerprint may live.
//!
//! These tests SIGKILL guards, so each runs inside its own pid namespace (`unshare --pid
//! --fork --mount-proc`, see `tether_testkit::forged`): the inner test is pid 1 there,
//! everything orphaned is re-parented to it, and nothing outside can be reached.
// Linux only: it runs in pid namespaces of its own (unshare) and reads environments from /proc.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tether::core::procs::{self, ProcessIdentity};
use tether_testkit::dump;
use tether_testkit::forged::assert_namespaced;
use tether_testkit::in_pid_namespace;

/// The bound for anything the test waits for. Generous: only a hung tether reaches it.
const WAIT: Duration = Duration::from_secs(120);

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tether"))
}

fn tether(state: &Path, args: &[&str]) -> Output {
    Command::new(exe())
        .args(args)
        .env("TETHER_STATE_DIR", state)
        .env_remove("TETHER_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run tether")
}

fn wait_until(cond: impl FnMut() -> bool) -> bool {
    tether_testkit::wait_until(WAIT, cond)
}

/// The demo backend's arguments: a `setsid` grandchild that accepts on the backend's
/// listening socket too; `via_child`: started by a child in between that stays in the
/// group and waits (uv → python → worker).
fn demo(via_child: bool) -> Vec<String> {
    let mut a: Vec<String> =
        [exe().to_string_lossy().as_ref(), "demo-backend", "--port", "{port}"].iter().map(|s| s.to_string()).collect();
    a.extend(["--spawn-grandchild", "--grandchild-setsid", "--grandchild-serves"].map(String::from));
    if via_child {
        a.push("--grandchild-via-child".into());
    }
    a
}

/// Every live (not zombie) process of this user whose environment carries
/// `TETHER_INSTANCE=name`. In the test's own pid namespace, that is everything of the
/// instance.
fn carriers(name: &str) -> Vec<u32> {
    let me = nix::unistd::geteuid().as_raw();
    let want = format!("TETHER_INSTANCE={name}");
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid| ProcessIdentity::of(*pid).is_some() && procs::uid_of(*pid) == Some(me))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The process among `pids` whose command line contains `needle`.
fn find(pids: &[u32], needle: &str) -> Option<ProcessIdentity> {
    pids.iter().copied().filter(|p| command_of(*p).contains(needle)).find_map(ProcessIdentity::of)
}

fn command_of(pid: u32) -> String {
    procs::info(pid).map_or_else(|| "(gone)".into(), |i| i.command)
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).is_ok()
}

fn status_json(state: &Path, name: &str) -> Value {
    let out = tether(state, &["status", "--name", name, "--json"]);
    assert!(out.status.success(), "status: {}", dump(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status JSON ({e}): {}", dump(&out)))
}

/// What is left once the guard (and the owner) are dead: the backend died with its guard,
/// the rest lives on. Then `status` says `orphaned` and names every survivor, `down`
/// stops them all and says so, and nothing of the instance is left.
fn check_left_over(state: &Path, name: &str, backend: ProcessIdentity, survivors: &[ProcessIdentity], port: u16) {
    assert!(wait_until(|| !backend.is_alive()), "the backend outlived its guard: {}", command_of(backend.pid));
    for s in survivors {
        assert!(s.is_alive(), "pid {} was expected to be left over (nothing stopped it)", s.pid);
    }
    assert!(answers(port), "the setsid grandchild serves the port");

    let v = status_json(state, name);
    assert_eq!(v["state"], "orphaned", "a group that still runs is never dead: {v}");
    assert_eq!(v["health"], "answering", "{v}");
    let mut orphans: Vec<u64> = v["orphans"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    orphans.sort_unstable();
    let mut want: Vec<u64> = survivors.iter().map(|s| u64::from(s.pid)).collect();
    want.sort_unstable();
    assert_eq!(orphans, want, "{v}");
    let human = tether(state, &["status", "--name", name]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains(&format!("orphaned, still answering on {port}")), "{text}");

    let down = tether(state, &["down", "--name", name]);
    assert!(down.status.success(), "down: {}", dump(&down));
    let said = String::from_utf8_lossy(&down.stdout);
    for s in survivors {
        assert!(said.contains(&s.pid.to_string()), "down names what it stopped (pid {}): {}", s.pid, dump(&down));
        assert!(!s.is_alive(), "pid {} outlived `down`: {}", s.pid, command_of(s.pid));
    }
    assert_eq!(carriers(name), Vec::<u32>::new(), "something of '{name}' outlived `down`");
    assert!(!answers(port), "the port still answers after `down`");
    let after = tether(state, &["status", "--name", name, "--json"]);
    assert!(!after.status.success(), "no record after down: {}", dump(&after));
}

/// A detached instance whose guard is SIGKILLed (`tether up --detach` has long exited):
/// the guard's pid, the backend's, and the rest of the instance's processes.
fn detached_then_kill_guard(state: &Path, name: &str, via_child: bool) -> (ProcessIdentity, Vec<ProcessIdentity>, u16) {
    let mut args = vec!["up", "--detach", "--name", name, "--port", "auto", "--json", "--"];
    let demo = demo(via_child);
    args.extend(demo.iter().map(String::as_str));
    let up = tether(state, &args);
    assert!(up.status.success(), "up --detach: {}", dump(&up));
    let ready = String::from_utf8_lossy(&up.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["state"] == "ready")
        .unwrap_or_else(|| panic!("no ready line: {}", dump(&up)));
    let port = ready["port"].as_u64().and_then(|p| u16::try_from(p).ok()).expect("a port");
    let v = status_json(state, name);
    let guard = v["guard_pid"].as_u64().and_then(|p| ProcessIdentity::of(p as u32)).expect("a live guard");
    let backend = v["pid"].as_u64().and_then(|p| ProcessIdentity::of(p as u32)).expect("a live backend");
    // The grandchild (and the child in between) exist once they are in the table.
    let expected = if via_child { 2 } else { 1 };
    let mut rest = Vec::new();
    assert!(
        wait_until(|| {
            let all = carriers(name);
            rest = all.iter().copied().filter(|p| command_of(*p).contains("--grandchild-idle")).collect();
            rest.len() == expected
        }),
        "the demo's grandchild processes: {:?}",
        carriers(name)
    );
    let rest: Vec<ProcessIdentity> = rest.into_iter().filter_map(ProcessIdentity::of).collect();
    kill(Pid::from_raw(guard.pid as i32), Signal::SIGKILL).expect("SIGKILL the guard");
    assert!(wait_until(|| !guard.is_alive()), "the guard survived SIGKILL");
    (backend, rest, port)
}

#[test]
fn a_detached_setsid_grandchild_outliving_its_killed_guard_is_orphaned_and_down_stops_it() {
    in_pid_namespace!(inner_detached_setsid_grandchild);
}

#[test]
#[ignore = "runs only as pid 1 of its own pid namespace (the outer test starts it)"]
fn inner_detached_setsid_grandchild() {
    assert_namespaced();
    let state = tempfile::tempdir().expect("a temporary state directory");
    let (backend, rest, port) = detached_then_kill_guard(state.path(), "k", false);
    // Strangers pinned to the dead guard are never signalled: one without the instance's
    // fingerprint, and (when the test may start one) one of another user with both.
    let leader = status_json(state.path(), "k")["pgid"].as_u64().expect("the leader's pid") as u32;
    let token = rest_token(leader, &rest);
    let mut strangers = vec![Stranger::sleep(&[("TETHER_LEADER", &token)], None)];
    if nix::unistd::geteuid().is_root() {
        strangers.push(Stranger::sleep(&[("TETHER_LEADER", &token), ("TETHER_INSTANCE", "k")], Some(65534)));
    }
    check_left_over(state.path(), "k", backend, &rest, port);
    for s in &mut strangers {
        assert!(matches!(s.0.try_wait(), Ok(None)), "a stranger pinned to the dead guard was signalled: {s:?}");
    }
}

/// The `TETHER_LEADER` value the survivors carry: the dead guard's identity.
fn rest_token(leader: u32, rest: &[ProcessIdentity]) -> String {
    let token = rest.first().and_then(|r| procs::env_var(r.pid, "TETHER_LEADER")).expect("the survivors are pinned");
    assert!(token.starts_with(&format!("{leader}:")), "{token} names the guard {leader}");
    token
}

/// A `sleep` the test started, with `env`, as user `uid` when given; killed on drop.
#[derive(Debug)]
struct Stranger(Child);

impl Stranger {
    fn sleep(env: &[(&str, &str)], uid: Option<u32>) -> Stranger {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("sleep");
        cmd.arg("600").stdin(Stdio::null()).envs(env.iter().copied());
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        let child = cmd.spawn().expect("spawn sleep");
        let pid = child.id();
        // Its environment is laid out once it runs `sleep` (before, it is ours).
        assert!(wait_until(|| command_of(pid) == "sleep 600"), "the stranger runs");
        Stranger(child)
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_chain_like_uv_python_worker_outliving_its_killed_guard_is_orphaned_and_down_stops_it() {
    in_pid_namespace!(inner_chain_like_uv_python_worker);
}

#[test]
#[ignore = "runs only as pid 1 of its own pid namespace (the outer test starts it)"]
fn inner_chain_like_uv_python_worker() {
    assert_namespaced();
    let state = tempfile::tempdir().expect("a temporary state directory");
    let (backend, rest, port) = detached_then_kill_guard(state.path(), "c", true);
    // backend → launcher (in the group, waiting like uv's python) → setsid grandchild.
    assert!(find(&rest.iter().map(|r| r.pid).collect::<Vec<_>>(), "--launcher").is_some(), "{rest:?}");
    check_left_over(state.path(), "c", backend, &rest, port);
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

/// SIGKILLs and reaps the foreground `tether up` when dropped, even on a failed assertion.
struct Owner(Child);

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_foreground_setsid_grandchild_outliving_owner_and_guard_is_orphaned_and_down_stops_it() {
    in_pid_namespace!(inner_foreground_setsid_grandchild);
}

#[test]
#[ignore = "runs only as pid 1 of its own pid namespace (the outer test starts it)"]
fn inner_foreground_setsid_grandchild() {
    assert_namespaced();
    let state = tempfile::tempdir().expect("a temporary state directory");
    let name = "f";
    let mut child = Command::new(exe())
        .args(["up", "--name", name, "--port", "auto", "--json", "--"])
        .args(demo(false))
        .env("TETHER_STATE_DIR", state.path())
        .env_remove("TETHER_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tether up");
    let out = lines(child.stdout.take().expect("stdout"));
    let owner = ProcessIdentity::of(child.id()).expect("tether up runs");
    let mut owner_child = Owner(child);
    let deadline = Instant::now() + WAIT;
    let ready: Value = loop {
        let line = out.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("a ready line");
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["state"] == "ready"
        {
            break v;
        }
    };
    let port = ready["port"].as_u64().and_then(|p| u16::try_from(p).ok()).expect("a port");
    let v = status_json(state.path(), name);
    let guard = v["guard_pid"].as_u64().and_then(|p| ProcessIdentity::of(p as u32)).expect("a live guard");
    let backend = v["pid"].as_u64().and_then(|p| ProcessIdentity::of(p as u32)).expect("a live backend");
    let mut grandchild = None;
    assert!(
        wait_until(|| {
            grandchild = find(&carriers(name), "--grandchild-idle");
            grandchild.is_some()
        }),
        "no grandchild: {:?}",
        carriers(name)
    );
    let grandchild = grandchild.expect("found above");

    // `pkill -9 tether`, made deterministic: the owner is stopped first so that it cannot
    // act on the guard's death, the guard is killed, then the owner. (The guard is never
    // stopped: see tests/it/orphans.rs.)
    kill(Pid::from_raw(owner.pid as i32), Signal::SIGSTOP).expect("SIGSTOP the owner");
    kill(Pid::from_raw(guard.pid as i32), Signal::SIGKILL).expect("SIGKILL the guard");
    assert!(wait_until(|| !guard.is_alive()), "the guard survived SIGKILL");
    kill(Pid::from_raw(owner.pid as i32), Signal::SIGKILL).expect("SIGKILL the owner");
    let _ = owner_child.0.wait();
    check_left_over(state.path(), name, backend, &[grandchild], port);
}

#[test]
fn the_next_up_of_the_name_stops_what_a_killed_guard_left_even_on_another_port() {
    in_pid_namespace!(inner_next_up_stops_the_orphans);
}

#[test]
#[ignore = "runs only as pid 1 of its own pid namespace (the outer test starts it)"]
fn inner_next_up_stops_the_orphans() {
    assert_namespaced();
    let state = tempfile::tempdir().expect("a temporary state directory");
    let (backend, rest, _port) = detached_then_kill_guard(state.path(), "u", true);
    assert!(wait_until(|| !backend.is_alive()), "the backend outlived its guard");
    // Another port: the port guard never meets the old processes; the stale sweep must.
    let up = tether(
        state.path(),
        &[
            "up",
            "--detach",
            "--name",
            "u",
            "--port",
            "auto",
            "--",
            &exe().to_string_lossy(),
            "demo-backend",
            "--port",
            "{port}",
        ],
    );
    assert!(up.status.success(), "up: {}", dump(&up));
    for s in &rest {
        assert!(!s.is_alive(), "pid {} (`{}`) outlived the next `up` of its name", s.pid, command_of(s.pid));
    }
    let down = tether(state.path(), &["down", "--name", "u"]);
    assert!(down.status.success(), "down: {}", dump(&down));
    assert_eq!(carriers("u"), Vec::<u32>::new(), "something of 'u' outlived `down`");
}
