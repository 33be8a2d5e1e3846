//! Forged state records never make tether signal a process that is not its own
//! (issue 11, items 1 and 4, and the property test).
//!
//! A forged record can name any pid with its real start time. Outside a pid
//! namespace of its own, a test that plants one can kill the machine (one did:
//! `down` of a record naming pid 1 signalled every process of the host). So every
//! test here that plants records runs inside `unshare --pid --fork --mount-proc`:
//! the outer test starts this same test binary there, running one `#[ignore]`d
//! inner test that refuses to run unless it is pid 1 of a fresh namespace. In that
//! namespace the test process itself is pid 1 (and the ancestor of every tether it
//! runs), surrounded by foreign sleepers; it counts every catchable signal it gets.
// Linux only: its forged records are planted in a pid namespace of its own (unshare).
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tether::core::procs::{self, ProcessIdentity};
use tether_testkit::dump;
use tether_testkit::forged::{assert_namespaced, plant_record};
use tether_testkit::in_pid_namespace;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tether"))
}

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: nix::libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// As pid 1 of a namespace we ignore signals that have no handler; count them instead.
fn count_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(SigHandler::Handler(count_signal), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGQUIT] {
        // SAFETY: the handler only touches an atomic.
        unsafe { sigaction(sig, &action) }.expect("sigaction");
    }
}

/// A process the test started and must find alive at the end; killed on drop.
struct Stranger {
    child: Child,
    id: ProcessIdentity,
    port: Option<u16>,
    what: &'static str,
}

impl Stranger {
    fn sleeper(own_group: bool, env: Option<(&str, &str)>, what: &'static str) -> Stranger {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("sleep");
        cmd.arg("600").stdin(Stdio::null());
        if own_group {
            cmd.process_group(0);
        }
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn sleep");
        Stranger::settled(child, None, what)
    }

    /// A foreign TCP server (python's), in the test's group, printing its port.
    fn listener(what: &'static str) -> Stranger {
        use std::io::BufRead;
        let script = "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\n\
                      print(s.getsockname()[1],flush=True)\ntime.sleep(600)";
        let mut child = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        std::io::BufReader::new(out).read_line(&mut line).expect("its port");
        let port = line.trim().parse().expect("a port");
        Stranger::settled(child, Some(port), what)
    }

    /// Wait until the child runs its own program (its identity is final then).
    fn settled(child: Child, port: Option<u16>, what: &'static str) -> Stranger {
        let pid = child.id();
        let own = std::fs::read_link("/proc/self/exe").ok();
        for _ in 0..100_000 {
            if std::fs::read_link(format!("/proc/{pid}/exe")).ok() != own {
                break;
            }
            std::thread::yield_now();
        }
        let id = ProcessIdentity::of(pid).expect("the stranger runs");
        Stranger { child, id, port, what }
    }

    fn alive(&self) -> bool {
        self.id.is_alive()
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tether(state: &Path, args: &[&str]) -> Output {
    Command::new(exe())
        .args(args)
        .env("TETHER_STATE_DIR", state)
        .env_remove("TETHER_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run tether")
}

fn identity(id: ProcessIdentity) -> Value {
    json!({"pid": id.pid, "start_time": id.start_time})
}

/// Everything the test started is alive, and the test (pid 1) got no signal.
fn assert_untouched(strangers: &[Stranger], after: &str) {
    for s in strangers {
        assert!(s.alive(), "{} (pid {}) was killed after {after}", s.what, s.id.pid);
    }
    assert_eq!(
        SIGNALS.load(Ordering::SeqCst),
        0,
        "the test process (pid 1, an ancestor of tether) got a signal after {after}"
    );
}

#[test]
fn a_record_naming_pid_one_never_signals_the_machine() {
    in_pid_namespace!(inner_a_record_naming_pid_one);
}

#[test]
#[ignore = "runs only as pid 1 of its own pid namespace; a_record_naming_pid_one_never_signals_the_machine starts it"]
fn inner_a_record_naming_pid_one() {
    assert_namespaced();
    count_signals();
    let state = tempfile::tempdir().expect("state dir");
    let strangers = [Stranger::sleeper(false, None, "a sleeper in the test's group")];
    let init = ProcessIdentity::current();
    // The reproduction of the issue: pid 1 with its real start time, group 1.
    plant_record(state.path(), "init", "native", json!({"leader": identity(init), "pgid": 1}));
    let out = tether(state.path(), &["down", "--name", "init"]);
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to signal pid 1"), "{}", dump(&out));
    assert_untouched(&strangers, "down of a record naming pid 1");
    assert!(!state.path().join("init.json").exists(), "a record proven false is removed");

    // pgid 0 with a dead leader: kill(0, …) would be the caller's own group.
    let dead = ProcessIdentity { pid: 4_000_000, start_time: 1 };
    plant_record(state.path(), "zero", "native", json!({"leader": identity(dead), "pgid": 0}));
    let out = tether(state.path(), &["down", "--name", "zero"]);
    assert!(out.status.code().is_some(), "tether was killed: {}", dump(&out));
    assert_untouched(&strangers, "down of a record with pgid 0");

    // A foreground record whose "owner" is a stranger: never asked to stop.
    let victim = &strangers[0];
    plant_record(state.path(), "owner", "native", json!({"detached": false, "owner": identity(victim.id)}));
    let out = tether(state.path(), &["down", "--name", "owner"]);
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lock"), "{}", dump(&out));
    assert_untouched(&strangers, "down of a record whose owner is a stranger");
    println!(
        "reliability: forged record (pid 1 / pgid 0 / stranger as owner), `down`, pid namespace | 3 | 0 foreign processes signalled"
    );
}

/// A small deterministic generator (xorshift64*): the seed is printed, so a
/// failure can be replayed with TETHER_TEST_SEED.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[(self.next() % from.len() as u64) as usize].clone()
    }
}

#[test]
fn arbitrary_forged_records_never_signal_a_stranger() {
    in_pid_namespace!(inner_arbitrary_forged_records);
}

#[test]
#[ignore = "runs only as pid 1 of its own pid namespace; arbitrary_forged_records_never_signal_a_stranger starts it"]
fn inner_arbitrary_forged_records() {
    assert_namespaced();
    count_signals();
    let seed = std::env::var("TETHER_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    println!("seed {seed} (replay with TETHER_TEST_SEED={seed})");
    let mut rng = Rng(seed);
    let state = tempfile::tempdir().expect("state dir");
    let strangers = vec![
        Stranger::sleeper(false, None, "a sleeper in the test's group"),
        Stranger::sleeper(true, None, "a sleeper leading its own group"),
        Stranger::sleeper(
            true,
            Some(("TETHER_INSTANCE", "someone-else")),
            "a sleeper fingerprinted for another instance",
        ),
        Stranger::listener("a foreign listener"),
        Stranger::listener("another foreign listener"),
    ];
    let me = ProcessIdentity::current();
    let ids: Vec<ProcessIdentity> = strangers.iter().map(|s| s.id).collect();
    let mut leaders: Vec<Value> = ids.iter().map(|&i| identity(i)).collect();
    leaders.extend([
        identity(me),
        json!({"pid": 0, "start_time": me.start_time}),
        json!({"pid": 1, "start_time": 0}),
        json!({"pid": 4_000_000, "start_time": 1}),
        Value::Null,
    ]);
    let mut pgids: Vec<Value> = vec![json!(0), json!(1), json!(2), Value::Null];
    pgids.extend(ids.iter().filter_map(|i| procs::pgid_of(i.pid)).map(|g| json!(g)));
    let mut owners: Vec<Value> = vec![Value::Null, identity(me)];
    owners.extend(ids.iter().map(|&i| identity(i)));
    let ports: Vec<u16> = strangers.iter().filter_map(|s| s.port).collect();
    let demo = exe().to_string_lossy().into_owned();

    let records = 24;
    let mut commands = 0;
    for i in 0..records {
        let name = format!("forged{i}");
        let port = rng.pick(&ports);
        let fields = json!({
            "leader": rng.pick(&leaders),
            "pgid": rng.pick(&pgids),
            "owner": rng.pick(&owners),
            "detached": rng.next().is_multiple_of(2),
            "backend_pid": rng.pick(&leaders).get("pid").cloned().unwrap_or(Value::Null),
            "port": port,
        });
        println!("record {name}: {fields}");
        plant_record(state.path(), &name, "native", fields.clone());
        let op = rng.next() % 3;
        // `down` of the record; `up` of its name (the stale sweep, then a real backend
        // on a free port); `up` on a stranger's port (the sweep and the port guard, which
        // must refuse).
        let on = if op == 2 { port.to_string() } else { "auto".to_string() };
        let up = [
            "up",
            "--detach",
            "--name",
            &name,
            "--port",
            &on,
            "--grace",
            "200ms",
            "--timeout",
            "30s",
            "--",
            &demo,
            "demo-backend",
            "--port",
            "{port}",
        ];
        let out = if op == 0 { tether(state.path(), &["down", "--name", &name]) } else { tether(state.path(), &up) };
        commands += 1;
        assert!(out.status.code().is_some(), "tether was killed by a signal: {}", dump(&out));
        assert!(matches!(out.status.code(), Some(0..=2)), "{}", dump(&out));
        assert_untouched(&strangers, &format!("record {name} {fields}: {}", dump(&out)));
        // What tether started for real is ours, and `down` still stops it.
        if op != 0 && out.status.success() {
            let down = tether(state.path(), &["down", "--name", &name]);
            commands += 1;
            assert_eq!(down.status.code(), Some(0), "our own backend must stop: {}", dump(&down));
            assert_untouched(&strangers, &format!("down of our own {name}"));
        }
    }
    println!(
        "reliability: arbitrary forged records (pids 0, 1, self, strangers; any pgid, owner) → down / up sweep / port guard, pid namespace | {records} records, {commands} commands | 0 foreign processes signalled"
    );
}
