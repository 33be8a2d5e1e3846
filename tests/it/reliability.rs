//! Fault injection: the owner killed at random moments, twenty `up`s of one name at
//! once, foreign processes next to ours. Counts are printed; anything leaked fails.
// Linux only: it counts processes through /proc.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tether::core::procs::{self, ProcessIdentity};
use tether::core::state::{Record, StateDir};

const EXE: &str = env!("CARGO_BIN_EXE_tether");
const BOUND: Duration = Duration::from_secs(30);

fn tether(state: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(EXE);
    c.args(args).env("TETHER_STATE_DIR", state).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Every process on the machine carrying our fingerprint for `name`.
fn processes_of_instance(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| ProcessIdentity::of(*pid).is_some_and(|p| p.is_alive()))
        .filter(|pid| procs::env_var(*pid, "TETHER_INSTANCE").as_deref() == Some(name))
        .collect()
}

/// Poll until `cond` holds or the bound passes; returns how long it took, or None.
fn within(bound: Duration, cond: impl Fn() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    let mut wait = Duration::from_millis(1);
    while t0.elapsed() < bound {
        if cond() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_millis(20));
    }
    None
}

/// Lines of a child's stream, read on a thread so the child never blocks.
fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + BOUND;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn owner_killed_at_random_moments_leaves_nothing() {
    let state = tempfile::tempdir().expect("state dir");
    let name = format!("owner-death-{}", std::process::id());
    let cycles: usize = std::env::var("TETHER_OWNER_DEATH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let mut slowest = Duration::ZERO;
    let mut swept_by_next_up = 0;
    for i in 0..cycles {
        let mut up = tether(
            state.path(),
            &[
                "up",
                "--name",
                &name,
                "--port",
                "auto",
                "--preset",
                "claude-skills",
                "--",
                EXE,
                "demo-backend",
                "--port",
                "{port}",
                "--ready-after",
                "300ms",
                "--spawn-grandchild",
            ],
        )
        .spawn()
        .expect("spawn tether up");
        let out = lines(up.stdout.take().expect("stdout"));
        let err = lines(up.stderr.take().expect("stderr"));
        let up = Killed(up);
        // Three moments: at once, while waiting for readiness, after ready.
        match i % 3 {
            0 => {}
            1 => assert!(wait_line(&err, |l| l.contains("demo-backend listening")), "cycle {i}: no start"),
            _ => assert!(wait_line(&out, |l| l.starts_with("ready: ")), "cycle {i}: never ready"),
        }
        kill(Pid::from_raw(up.0.id() as i32), Signal::SIGKILL).expect("SIGKILL tether");
        drop(up);
        match within(Duration::from_secs(10), || processes_of_instance(&name).is_empty()) {
            Some(t) => slowest = slowest.max(t),
            None => {
                // Not gone by itself: the next `up` of the name must sweep it.
                swept_by_next_up += 1;
            }
        }
    }
    // One more `up --detach` + `down` of the name sweeps whatever a cycle left.
    let st = tether(
        state.path(),
        &["up", "--name", &name, "--port", "auto", "--detach", "--", EXE, "demo-backend", "--port", "{port}"],
    )
    .output()
    .expect("final up");
    assert!(st.status.success(), "final up: {}", String::from_utf8_lossy(&st.stderr));
    let down = tether(state.path(), &["down", "--name", &name]).output().expect("down");
    assert!(down.status.success(), "down: {}", String::from_utf8_lossy(&down.stderr));
    let left = within(BOUND, || processes_of_instance(&name).is_empty());
    println!(
        "reliability: owner SIGKILLed at once / during readiness / after ready (grandchild too) | {cycles} cycles | {} processes leaked (slowest cleanup {} ms, {swept_by_next_up} left to the next up)",
        processes_of_instance(&name).len(),
        slowest.as_millis()
    );
    assert!(left.is_some(), "leaked: {:?}", processes_of_instance(&name));
}

#[test]
fn twenty_simultaneous_ups_of_one_name_start_one_backend() {
    let state = tempfile::tempdir().expect("state dir");
    let name = format!("same-{}", std::process::id());
    let children: Vec<Child> = (0..20)
        .map(|_| {
            tether(
                state.path(),
                &[
                    "up",
                    "--detach",
                    "--json",
                    "--name",
                    &name,
                    "--port",
                    "auto",
                    "--",
                    EXE,
                    "demo-backend",
                    "--port",
                    "{port}",
                    "--ready-after",
                    "300ms",
                ],
            )
            .spawn()
            .expect("spawn")
        })
        .collect();
    let mut started: u32 = 0;
    let mut reused = 0;
    let mut refused = 0;
    for c in children {
        let out = c.wait_with_output().expect("wait");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_str(last).expect("ready JSON");
            assert_eq!(v["state"], "ready");
            if v["reused"] == true { reused += 1 } else { started += 1 }
        } else {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("already running") || last.contains("already running"),
                "a refused up says why: {last}"
            );
            refused += 1;
        }
    }
    let backends = processes_of_instance(&name);
    println!(
        "reliability: 20 simultaneous `up --name same` | 20 | {} extra backends ({started} started, {reused} reused, {refused} refused)",
        started.saturating_sub(1)
    );
    assert_eq!(started, 1, "exactly one backend starts");
    // The guard and the demo backend.
    assert_eq!(backends.len(), 2, "one guard and one backend: {backends:?}");
    let down = tether(state.path(), &["down", "--name", &name]).output().expect("down");
    assert!(down.status.success());
    assert!(within(BOUND, || processes_of_instance(&name).is_empty()).is_some());
}

#[test]
fn a_reused_pid_in_a_stale_record_is_never_signalled() {
    let state = tempfile::tempdir().expect("state dir");
    let foreign = Killed(Command::new("sleep").arg("600").spawn().expect("spawn a foreign sleep"));
    let real = ProcessIdentity::of(foreign.0.id()).expect("identity");
    // A record that names the foreign pid, but with another start time: the pid was reused.
    let dir = StateDir::at(state.path()).expect("state dir");
    for (name, detached) in [("stale-detached", true), ("stale-foreground", false)] {
        let fake = ProcessIdentity { pid: real.pid, start_time: real.start_time + 1 };
        let record: Record = serde_json::from_value(serde_json::json!({
            "name": name, "runner": "native", "fingerprint": "x", "detached": detached,
            "owner": if detached { None } else { Some(fake) }, "leader": fake, "pgid": real.pid,
            "backend_pid": null, "container_id": null, "host": "127.0.0.1", "port": 1,
            "url": "http://127.0.0.1:1", "started_at_unix_ms": 0, "tool_version": null, "log_file": null,
        }))
        .expect("a record");
        dir.save(&record).expect("save");
    }
    let down = tether(state.path(), &["down", "--name", "stale-detached"]).output().expect("down");
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let up = tether(
        state.path(),
        &[
            "up",
            "--name",
            "stale-foreground",
            "--port",
            "auto",
            "--detach",
            "--",
            EXE,
            "demo-backend",
            "--port",
            "{port}",
        ],
    )
    .output()
    .expect("up");
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let _ = tether(state.path(), &["down", "--name", "stale-foreground"]).output();
    assert!(real.is_alive(), "the foreign process with a reused pid was signalled");
    println!("reliability: stale records naming a reused pid (down, sweep) | 2 | 0 foreign processes signalled");
}

#[test]
fn a_foreign_client_of_our_backend_is_never_signalled() {
    let state = tempfile::tempdir().expect("state dir");
    let port = tether::core::port::free_port("127.0.0.1").expect("port");
    let p = port.to_string();
    let up = tether(
        state.path(),
        &["up", "--name", "served", "--port", &p, "--detach", "--", EXE, "demo-backend", "--port", "{port}"],
    )
    .output()
    .expect("up");
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    // A foreign client connected to our backend: a child of the test holding a connection.
    let code = format!(
        "import socket,sys\ns=socket.create_connection(('127.0.0.1',{port}))\nprint('connected',flush=True)\nsys.stdin.read()"
    );
    let mut client = Command::new("python3")
        .args(["-c", &code])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let out = lines(client.stdout.take().expect("stdout"));
    let client = Killed(client);
    assert!(wait_line(&out, |l| l == "connected"), "the client connected");
    let id = ProcessIdentity::of(client.0.id()).expect("client identity");
    // Another instance on the same port is refused without touching anyone...
    let second = tether(
        state.path(),
        &["up", "--name", "other", "--port", &p, "--force-port", "--", EXE, "demo-backend", "--port", "{port}"],
    )
    .output()
    .expect("second up");
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("used by tether instance 'served'"));
    // ...and stopping ours leaves the client alone.
    let down = tether(state.path(), &["down", "--name", "served"]).output().expect("down");
    assert!(down.status.success());
    assert!(id.is_alive(), "the foreign client was signalled");
    println!(
        "reliability: foreign client on our port; a second instance asking for it | 1 | 0 foreign processes signalled"
    );
}

#[test]
fn owner_death_with_a_sigterm_ignoring_backend_and_a_setsid_grandchild_leaves_nothing() {
    let state = tempfile::tempdir().expect("state dir");
    let name = format!("stubborn-{}", std::process::id());
    let mut up = tether(
        state.path(),
        &[
            "up",
            "--name",
            &name,
            "--port",
            "auto",
            "--grace",
            "300ms",
            "--",
            EXE,
            "demo-backend",
            "--port",
            "{port}",
            "--ignore-sigterm",
            "--spawn-grandchild",
            "--grandchild-setsid",
        ],
    )
    .spawn()
    .expect("spawn tether up");
    let out = lines(up.stdout.take().expect("stdout"));
    let _err = lines(up.stderr.take().expect("stderr"));
    let up = Killed(up);
    assert!(wait_line(&out, |l| l.starts_with("ready: ")), "never ready");
    // The grandchild is spawned before the ready line; it carries our fingerprint.
    assert!(within(BOUND, || processes_of_instance(&name).len() >= 3).is_some(), "guard, backend, grandchild");
    kill(Pid::from_raw(up.0.id() as i32), Signal::SIGKILL).expect("SIGKILL tether");
    drop(up);
    let gone = within(BOUND, || processes_of_instance(&name).is_empty());
    assert!(gone.is_some(), "left behind: {:?}", processes_of_instance(&name));
    println!(
        "reliability: owner SIGKILLed; backend ignores SIGTERM, setsid grandchild | 1 | 0 processes leaked (gone {} ms after the kill, grace 300 ms)",
        gone.map_or(0, |d| d.as_millis())
    );
}
