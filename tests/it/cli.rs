//! End-to-end tests of the `tether` command line (the CLI contract: the README's "Usage" and docs/cli.md).
//!
//! Every test runs the real binary with its own state directory (`TETHER_STATE_DIR`) and
//! its own working directory. Nothing sleeps to synchronise: the tests read tether's
//! stdout/stderr line by line to learn what happened, and poll conditions only with a
//! bounded deadline. Every process a test starts is SIGKILLed when the test ends, even
//! when an assertion fails (see `Running`'s and `Reaper`'s `Drop`).
//!
//! Three tests were written against races they found (now fixed; each was racy, so it
//! failed in most runs, not all): a stop signal right after `ready:`, `down` of a
//! SIGTERM-ignoring detached backend reporting `killed`, and the probe-timeout wording.
// Linux only: it finds and inspects the processes it starts through /proc.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;
use tether::core::port;
use tether::core::procs::{self, ProcessIdentity};

/// The bound for anything the tests wait for (a line, an exit). Generous: a loaded CI
/// machine must never make a correct tether fail; only a hung one reaches it.
const WAIT: Duration = Duration::from_secs(120);
/// How long processes may take to disappear after they were stopped or orphaned.
const GONE: Duration = Duration::from_secs(10);

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_tether")
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A per-test state directory and working directory.
struct Sandbox {
    state: TempDir,
    cwd: TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Sandbox {
            state: tempfile::tempdir().expect("a temporary state directory"),
            cwd: tempfile::tempdir().expect("a temporary working directory"),
        }
    }

    /// `tether ARGS` with this sandbox's state dir and cwd, stdin null, default log filter.
    fn command(&self, args: &[&str]) -> Command {
        self.command_of(std::path::Path::new(exe()), args)
    }

    /// [`Sandbox::command`] with another `tether` executable.
    fn command_of(&self, tether: &std::path::Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(tether);
        cmd.args(args)
            .env("TETHER_STATE_DIR", self.state.path())
            .env_remove("TETHER_LOG")
            .env_remove("RUST_LOG")
            .current_dir(self.cwd.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(self.command(args))
    }

    /// Runs `tether ARGS` to completion (bounded by `WAIT`).
    fn run(&self, args: &[&str]) -> Finished {
        self.spawn(args).finish()
    }
}

/// The lines of one output stream, read by a thread so that the child never blocks.
struct Lines {
    rx: Receiver<Option<String>>,
    seen: Vec<String>,
    eof: bool,
}

impl Lines {
    fn start(reader: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                        if tx.send(Some(line)).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(None);
        });
        Lines { rx, seen: Vec::new(), eof: false }
    }

    /// Takes one more line, waiting until `deadline`; `None` at EOF or at the deadline.
    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        if self.eof {
            return None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(Some(line)) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                None
            }
            Err(RecvTimeoutError::Timeout) => None,
        }
    }

    /// The first line (already seen or new) for which `pred` holds, waiting until `deadline`.
    fn find(&mut self, deadline: Instant, pred: impl Fn(&str) -> bool) -> Option<String> {
        if let Some(line) = self.seen.iter().find(|l| pred(l)) {
            return Some(line.clone());
        }
        while let Some(line) = self.next_line(deadline) {
            if pred(&line) {
                return Some(line);
            }
        }
        None
    }

    /// Takes the lines already available, without waiting.
    fn absorb(&mut self) {
        while !self.eof {
            match self.rx.try_recv() {
                Ok(Some(line)) => self.seen.push(line),
                Ok(None) | Err(mpsc::TryRecvError::Disconnected) => self.eof = true,
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
    }

    /// Reads until EOF or `deadline`.
    fn drain(&mut self, deadline: Instant) {
        while self.next_line(deadline).is_some() {}
    }

    fn text(&self) -> String {
        self.seen.join("\n")
    }
}

/// A running `tether` process. Dropping it SIGKILLs tether, every descendant it had
/// when dropped, and every process in `also_kill` that is still the same process.
struct Running {
    child: Child,
    pid: u32,
    out: Lines,
    err: Lines,
    status: Option<ExitStatus>,
    also_kill: Vec<ProcessIdentity>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawn the tether binary");
        let out = Lines::start(child.stdout.take().expect("piped stdout"));
        let err = Lines::start(child.stderr.take().expect("piped stderr"));
        let pid = child.id();
        Running { child, pid, out, err, status: None, also_kill: Vec::new() }
    }

    /// What was seen so far, for assertion messages.
    fn dump(&mut self) -> String {
        self.out.absorb();
        self.err.absorb();
        format!("--- stdout ---\n{}\n--- stderr ---\n{}\n", self.out.text(), self.err.text())
    }

    /// The first stdout line for which `pred` holds; panics (with all output) if none
    /// comes before EOF or `WAIT`.
    fn stdout_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        match self.out.find(deadline, pred) {
            Some(line) => line,
            None => {
                self.err.drain(Instant::now() + Duration::from_secs(2));
                panic!("no stdout line {what}; status {:?}\n{}", self.child.try_wait(), self.dump())
            }
        }
    }

    /// The first stderr line for which `pred` holds; panics (with all output) otherwise.
    fn stderr_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        match self.err.find(deadline, pred) {
            Some(line) => line,
            None => {
                self.out.drain(Instant::now() + Duration::from_secs(2));
                panic!("no stderr line {what}; status {:?}\n{}", self.child.try_wait(), self.dump())
            }
        }
    }

    /// Waits for `ready: http://...` on stdout and returns the URL.
    fn ready_url(&mut self) -> String {
        let line = self.stdout_line("`ready: http://...`", |l| l.starts_with("ready: http://"));
        line.split_whitespace().nth(1).expect("a URL after `ready:`").to_string()
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid as i32), sig).expect("signal tether");
    }

    /// Sends `sig` (SIGINT or SIGTERM) once tether catches it, as its foreground
    /// supervision does (polls `/proc/PID/status`, bounded). `tether up` prints `ready:`
    /// a moment before it installs those handlers (see
    /// `signal_right_after_ready_line_is_a_clean_stop`); tests about other things wait
    /// for the handlers so that they do not trip over that race.
    fn stop_with(&mut self, sig: Signal) {
        let pid = self.pid;
        let bit = 1u64 << (sig as i32 - 1);
        let caught = wait_until(WAIT, || caught_signals(pid).is_some_and(|mask| mask & bit != 0));
        assert!(caught, "tether never caught {sig}\n{}", self.dump());
        self.signal(sig);
    }

    /// Waits (bounded by `WAIT`) until tether exits.
    fn wait_exit(&mut self) -> ExitStatus {
        match self.wait_exit_within(WAIT) {
            Some(s) => s,
            None => panic!("tether did not exit within {WAIT:?}\n{}", self.dump()),
        }
    }

    /// Waits (bounded by `timeout`) until tether exits; `None` if it is still running.
    fn wait_exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            let mut status = None;
            wait_until(timeout, || {
                status = self.child.try_wait().expect("try_wait on tether");
                status.is_some()
            });
            self.status = status;
        }
        self.status
    }

    /// Waits for the exit, then for the rest of the output (EOF, bounded).
    fn finish(mut self) -> Finished {
        let status = self.wait_exit();
        let deadline = Instant::now() + GONE;
        self.out.drain(deadline);
        self.err.drain(deadline);
        Finished { status, stdout: self.out.text(), stderr: self.err.text() }
    }

    /// The live descendants of tether, as identities.
    fn descendant_ids(&self) -> Vec<ProcessIdentity> {
        procs::descendants(self.pid).into_iter().filter_map(ProcessIdentity::of).collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut victims = self.descendant_ids();
        victims.append(&mut self.also_kill);
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        kill_all(&victims);
    }
}

/// SIGKILLs every process in `ids` that is still that very process (pid + start time).
fn kill_all(ids: &[ProcessIdentity]) {
    for id in ids {
        if id.is_alive() {
            let _ = kill(Pid::from_raw(id.pid as i32), Signal::SIGKILL);
        }
    }
}

/// SIGKILLs the processes it holds when dropped (for processes outliving a `Running`).
struct Reaper(Vec<ProcessIdentity>);

impl Drop for Reaper {
    fn drop(&mut self) {
        kill_all(&self.0);
    }
}

/// Runs `tether down --name NAME` when dropped (for detached instances).
struct DownOnDrop<'a> {
    sandbox: &'a Sandbox,
    name: &'static str,
}

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        let mut cmd = self.sandbox.command(&["down", "--name", self.name]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let _ = cmd.status();
    }
}

/// A finished `tether` run.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn dump(&self) -> String {
        format!("status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n", self.status, self.stdout, self.stderr)
    }

    /// The stdout lines that are JSON objects.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(Value::is_object).collect()
    }
}

/// Polls (bounded by `timeout`) until none of `ids` is alive; returns those still alive.
fn wait_gone(ids: &[ProcessIdentity], timeout: Duration) -> Vec<ProcessIdentity> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<ProcessIdentity> = ids.iter().copied().filter(ProcessIdentity::is_alive).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `SigCgt` mask of `pid` (signals with a handler installed), from `/proc`.
fn caught_signals(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

use tether_testkit::wait_until;

/// Describes processes for assertion messages.
fn describe(ids: &[ProcessIdentity]) -> String {
    ids.iter()
        .map(|id| match procs::info(id.pid) {
            Some(i) => format!("pid {} ({})", id.pid, i.command),
            None => format!("pid {} (gone)", id.pid),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `(host:port)` of `http://HOST:PORT[/...]`.
fn authority(url: &str) -> &str {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    rest.split('/').next().expect("an authority")
}

fn port_of(url: &str) -> u16 {
    authority(url).rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port in the URL")
}

/// A plain HTTP/1.1 GET (no proxy, no client library): `(status, body)`.
fn http_get(base_url: &str, path: &str) -> Result<(u16, String), String> {
    let host = authority(base_url);
    let addr = host.parse().map_err(|e| format!("address {host}: {e}"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| format!("connect {host}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no header end in {text:?}"))?;
    let status =
        head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// `demo-backend ... pid N` → N, from a relayed line.
fn number_after(line: &str, marker: &str) -> Option<u32> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Live processes whose argv contains all of `needles` as consecutive elements.
fn processes_with_args(needles: &[&str]) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|&pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let argv: Vec<String> = raw.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            argv.windows(needles.len()).any(|w| w.iter().zip(needles).all(|(a, b)| a == b))
                && ProcessIdentity::of(pid).is_some()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Case 1: Zero-setup `tether up`: the demo backend with the claude-skills preset becomes
/// ready, answers /health, and Ctrl-C leaves no process behind.
#[test]
fn up_demo_becomes_ready_and_ctrl_c_leaves_nothing() {
    let sandbox = Sandbox::new();
    let mut tether = sandbox.spawn(&["up", "--port", "auto", "--name", "t1"]);
    let url = tether.ready_url();

    let (status, body) = http_get(&url, "/health").expect("GET /health on the ready URL");
    assert_eq!(status, 200, "GET /health: {body}\n{}", tether.dump());
    let health: Value = serde_json::from_str(&body).expect("/health answers JSON");
    assert_eq!(health["loading_complete"], Value::Bool(true), "{health}");
    assert!(health["skills_loaded"].as_u64().is_some_and(|n| n > 0), "{health}");

    let ids = tether.descendant_ids();
    let infos: Vec<procs::ProcessInfo> = ids.iter().filter_map(|id| procs::info(id.pid)).collect();
    let guard = infos
        .iter()
        .find(|i| i.command.contains("__tether-guard"))
        .unwrap_or_else(|| panic!("no guard among tether's descendants: {infos:#?}"));
    let demo = infos
        .iter()
        .find(|i| i.command.contains("demo-backend") && !i.command.contains("__tether-guard"))
        .unwrap_or_else(|| panic!("no demo backend among tether's descendants: {infos:#?}"));
    assert_eq!(guard.ppid, tether.pid, "the guard is tether's child: {infos:#?}");
    assert_eq!(guard.pgid, guard.pid, "the guard leads its process group: {infos:#?}");
    assert_eq!(demo.ppid, guard.pid, "the guard is the backend's direct parent: {infos:#?}");
    assert_eq!(demo.pgid, guard.pid, "the backend is in the guard's group: {infos:#?}");

    tether.stop_with(Signal::SIGINT);
    let status = tether.wait_exit();
    assert_eq!(status.code(), Some(0), "exit after SIGINT\n{}", tether.dump());
    let left = wait_gone(&ids, GONE);
    assert!(left.is_empty(), "left behind after Ctrl-C: {}", describe(&left));
}

/// Case 2: A backend that exits before it is ready is reported as `failed` with its exit code
/// and its last lines — not after the deadline (`--timeout 120s` would make the test hang).
///
/// Note: the demo backend is made slow to load (`--ready-after 60s` with the claude-skills
/// preset); with the default probe it would be ready before `--exit-after` and the report
/// would rightly be `exited` after `ready`, not `failed`.
#[test]
fn early_exit_is_reported_at_once_with_json() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&[
        "up",
        "--json",
        "--port",
        "auto",
        "--timeout",
        "120s",
        "--preset",
        "claude-skills",
        "--",
        exe(),
        "demo-backend",
        "--port",
        "{port}",
        "--ready-after",
        "60s",
        "--exit-after",
        "200ms",
        "--exit-code",
        "3",
    ]);
    assert_eq!(run.code(), Some(1), "{}", run.dump());
    let lines = run.json_lines();
    let last = lines.last().unwrap_or_else(|| panic!("no JSON on stdout\n{}", run.dump()));
    assert_eq!(last["state"], "failed", "{}", run.dump());
    assert_eq!(last["exit_code"], 3, "{}", run.dump());
    let error = last["error"].as_str().unwrap_or_default();
    assert!(error.contains("exited before it was ready"), "not an early-exit error: {error}\n{}", run.dump());
    let tail = last["stderr_tail"].as_array().unwrap_or_else(|| panic!("no stderr_tail array\n{}", run.dump()));
    assert!(
        tail.iter().any(|l| l.as_str().is_some_and(|l| l.contains("exiting with code 3"))),
        "the tail lacks the backend's last words: {tail:?}"
    );
    assert!(!lines.iter().any(|l| l["state"] == "ready"), "never ready\n{}", run.dump());
}

/// Case 3: A port held by a foreign process (this test) is refused, the holder is named and
/// left alone; `tether port` names it as not ours.
#[test]
fn foreign_listener_survives_and_is_named() {
    let sandbox = Sandbox::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a foreign listener");
    let port = listener.local_addr().expect("listener address").port();
    let p = port.to_string();
    let me = std::process::id();

    let run = sandbox.run(&["up", "--port", &p, "--", exe(), "demo-backend", "--port", "{port}"]);
    assert_eq!(run.code(), Some(1), "{}", run.dump());
    assert!(run.stderr.contains(&format!("pid {me}")), "the holder (pid {me}) is not named\n{}", run.dump());
    assert!(run.stderr.contains("not tether's"), "{}", run.dump());

    // Still ours, still listening: a connection is accepted.
    let _client = TcpStream::connect(("127.0.0.1", port)).expect("the foreign listener still accepts connections");
    let (_conn, _) = listener.accept().expect("accept on the foreign listener");

    let run = sandbox.run(&["port", &p, "--json"]);
    assert_eq!(run.code(), Some(0), "{}", run.dump());
    let doc: Value =
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("port --json: {e}\n{}", run.dump()));
    let holders = doc["holders"].as_array().unwrap_or_else(|| panic!("no holders array: {doc}"));
    let mine = holders
        .iter()
        .find(|h| h["pid"] == me)
        .unwrap_or_else(|| panic!("this test (pid {me}) is not among the holders: {doc}"));
    assert_eq!(mine["ours"], false, "{doc}");

    let run = sandbox.run(&["port", &p]);
    assert_eq!(run.code(), Some(0), "{}", run.dump());
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains(&format!("pid {me} ")))
        .unwrap_or_else(|| panic!("pid {me} not listed\n{}", run.dump()));
    assert!(line.contains("NOT ours"), "{}", run.dump());
}

/// Case 3b: A client connected to a tether-started backend is not a holder of its port; the
/// backend is, and it is ours.
#[test]
fn client_of_our_backend_is_not_a_holder() {
    let sandbox = Sandbox::new();
    let mut tether =
        sandbox.spawn(&["up", "--name", "c", "--port", "auto", "--", exe(), "demo-backend", "--port", "{port}"]);
    let url = tether.ready_url();
    let port = port_of(&url);
    let _client = TcpStream::connect(("127.0.0.1", port)).expect("connect to the backend");
    let me = std::process::id();

    let run = sandbox.run(&["port", &port.to_string(), "--json"]);
    assert_eq!(run.code(), Some(0), "{}", run.dump());
    let doc: Value =
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("port --json: {e}\n{}", run.dump()));
    let holders = doc["holders"].as_array().unwrap_or_else(|| panic!("no holders array: {doc}"));
    assert!(!holders.is_empty(), "the backend is not listed: {doc}");
    assert!(!holders.iter().any(|h| h["pid"] == me), "a client was listed as a holder: {doc}");
    for h in holders {
        assert_eq!(h["ours"], true, "{doc}");
        assert_eq!(h["instance"], "c", "{doc}");
    }
    tether.stop_with(Signal::SIGINT);
    assert_eq!(tether.wait_exit().code(), Some(0), "{}", tether.dump());
}

/// Case 4: SIGKILL of tether: the guard stops the backend and its grandchild (with
/// `--grandchild-setsid`, one that left the process group and the session).
fn sigkill_takes_everything_down(setsid: bool) {
    let sandbox = Sandbox::new();
    let mut args = vec!["up", "--port", "auto", "--", exe(), "demo-backend", "--port", "{port}", "--spawn-grandchild"];
    if setsid {
        args.push("--grandchild-setsid");
    }
    let mut tether = sandbox.spawn(&args);
    tether.ready_url();
    let line = tether.stderr_line("`demo-backend grandchild pid N`", |l| l.contains("demo-backend grandchild pid "));
    let gpid = number_after(&line, "demo-backend grandchild pid ").expect("a pid in the grandchild line");
    let grandchild =
        ProcessIdentity::of(gpid).unwrap_or_else(|| panic!("grandchild {gpid} is not alive\n{}", tether.dump()));
    tether.also_kill.push(grandchild);

    let ids = tether.descendant_ids();
    let infos: Vec<procs::ProcessInfo> = ids.iter().filter_map(|id| procs::info(id.pid)).collect();
    assert!(infos.iter().any(|i| i.command.contains("__tether-guard")), "no guard: {infos:#?}");
    assert!(
        infos.iter().any(|i| i.command.contains("demo-backend")
            && !i.command.contains("--grandchild-idle")
            && !i.command.contains("__tether-guard")),
        "no demo backend: {infos:#?}"
    );
    let mut all = ids.clone();
    if !all.contains(&grandchild) {
        all.push(grandchild);
    }
    tether.also_kill.extend(all.iter().copied());

    tether.signal(Signal::SIGKILL);
    tether.wait_exit();
    let left = wait_gone(&all, GONE);
    assert!(left.is_empty(), "alive after tether was SIGKILLed: {}", describe(&left));
}

#[test]
fn sigkill_of_tether_takes_backend_and_grandchild_down() {
    sigkill_takes_everything_down(false);
}

#[test]
fn sigkill_of_tether_takes_backend_and_setsid_grandchild_down() {
    sigkill_takes_everything_down(true);
}

/// Case 5: `up --detach` returns once ready (its pipes closed: `run` reads them to EOF);
/// `status`, `logs` and `down` see and stop it, even
/// when it ignores SIGTERM; afterwards it is gone and no longer recorded.
#[test]
fn detach_status_down() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&[
        "up",
        "--detach",
        "--name",
        "a",
        "--port",
        "auto",
        "--grace",
        "300ms",
        "--",
        exe(),
        "demo-backend",
        "--port",
        "{port}",
        "--ignore-sigterm",
    ]);
    let _down = DownOnDrop { sandbox: &sandbox, name: "a" };
    assert_eq!(run.code(), Some(0), "{}", run.dump());
    assert!(run.stdout.lines().any(|l| l.starts_with("ready: http://")), "{}", run.dump());

    let status = sandbox.run(&["status", "--name", "a", "--json"]);
    assert_eq!(status.code(), Some(0), "{}", status.dump());
    let doc: Value =
        serde_json::from_str(status.stdout.trim()).unwrap_or_else(|e| panic!("status --json: {e}\n{}", status.dump()));
    // `pid` is the backend's own; `guard_pid` the guard above it, which leads the group.
    let backend = doc["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {doc}")) as u32;
    let pid = doc["guard_pid"].as_u64().unwrap_or_else(|| panic!("no guard_pid in {doc}")) as u32;
    assert!(procs::descendants(pid).contains(&backend), "the backend {backend} is not below its guard {pid}: {doc}");
    let leader = ProcessIdentity::of(pid).unwrap_or_else(|| panic!("the recorded pid {pid} is not alive: {doc}"));
    let mut ids = vec![leader];
    ids.extend(procs::descendants(pid).into_iter().filter_map(ProcessIdentity::of));
    let _reaper = Reaper(ids.clone());
    assert_eq!(doc["state"], "ready", "{doc}");
    assert!(ids.len() >= 2, "the guard {pid} has no backend under it: {}", describe(&ids));

    // The table has a header, and its PID column is the backend's, GUARD the guard's.
    let table = sandbox.run(&["status"]);
    let mut rows = table.stdout.lines();
    let header: Vec<&str> = rows.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATE", "PID", "GUARD", "URL", "MODE"], "{}", table.dump());
    let row: Vec<&str> = rows.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(row.get(2).copied(), Some(backend.to_string().as_str()), "{}", table.dump());
    assert_eq!(row.get(3).copied(), Some(pid.to_string().as_str()), "{}", table.dump());
    let list = sandbox.run(&["status", "--json"]);
    let all: Value = serde_json::from_str(list.stdout.trim()).unwrap_or(Value::Null);
    assert_eq!(all.as_array().map(Vec::len), Some(1), "without --name: one array\n{}", list.dump());

    let logs = sandbox.run(&["logs", "--name", "a"]);
    assert_eq!(logs.code(), Some(0), "{}", logs.dump());
    assert!(logs.stdout.contains("demo-backend listening"), "{}", logs.dump());

    let down = sandbox.run(&["down", "--name", "a", "--json"]);
    assert_eq!(down.code(), Some(0), "{}", down.dump());
    let doc: Value =
        serde_json::from_str(down.stdout.trim()).unwrap_or_else(|e| panic!("down --json: {e}\n{}", down.dump()));
    let down_doc = doc;

    let left = wait_gone(&ids, GONE);
    assert!(left.is_empty(), "alive after `down`: {}", describe(&left));
    assert!(procs::group_members(pid).is_empty(), "group {pid} still has members: {:?}", procs::group_members(pid));

    let status = sandbox.run(&["status", "--name", "a"]);
    assert_eq!(status.code(), Some(1), "an instance that was brought down is not found\n{}", status.dump());

    // Was a race: `down` and the detached guard wait the same grace; when the guard won,
    // `down` said `killed: false`. The guard now leaves how it stopped next to the log.
    assert_eq!(
        down_doc["killed"], true,
        "the backend ignores SIGTERM and was SIGKILLed, but `down` says it was not killed: {down_doc}"
    );
}

/// Case 1b: Ctrl-C while tether still waits for readiness: nothing is left behind (the guard
/// stops the backend when tether dies, however it dies).
#[test]
fn ctrl_c_while_waiting_for_ready_leaves_nothing() {
    let sandbox = Sandbox::new();
    let mut tether = sandbox.spawn(&[
        "up",
        "--port",
        "auto",
        "--preset",
        "claude-skills",
        "--",
        exe(),
        "demo-backend",
        "--port",
        "{port}",
        "--ready-after",
        "1h",
        "--spawn-grandchild",
    ]);
    let line = tether.stderr_line("`demo-backend grandchild pid N`", |l| l.contains("demo-backend grandchild pid "));
    let gpid = number_after(&line, "demo-backend grandchild pid ").expect("a pid in the grandchild line");
    let mut ids = tether.descendant_ids();
    ids.extend(ProcessIdentity::of(gpid));
    tether.also_kill.extend(ids.iter().copied());
    assert!(ids.len() >= 3, "guard, backend and grandchild expected: {}", describe(&ids));

    tether.signal(Signal::SIGINT);
    let status = tether.wait_exit();
    assert_eq!(status.code(), Some(0), "a stop while starting is a clean stop\n{}", tether.dump());
    let status = sandbox.run(&["status", "--json"]);
    assert_eq!(status.stdout.trim(), "[]", "no record is left after a stop while starting\n{}", status.dump());
    let left = wait_gone(&ids, GONE);
    assert!(left.is_empty(), "left behind after Ctrl-C during start-up: {}", describe(&left));
}

/// Case 1c: A script that sends SIGINT, SIGTERM or SIGHUP as soon as it reads `ready:`
/// gets the clean foreground stop of the contract: exit 0, `stopped ...`, nothing left
/// recorded.
///
/// Was a race: the signal handlers were installed only after `ready:` was printed; they
/// are now installed before anything starts.
#[test]
fn signal_right_after_ready_line_is_a_clean_stop() {
    let sandbox = Sandbox::new();
    let mut problems = Vec::new();
    for round in 0..21 {
        let sig = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP][round % 3];
        let mut tether = sandbox.spawn(&[
            "up",
            "--name",
            "quick",
            "--port",
            "auto",
            "--",
            exe(),
            "demo-backend",
            "--port",
            "{port}",
        ]);
        tether.ready_url();
        tether.signal(sig);
        // Far beyond the 5 s grace the stop may take.
        match tether.wait_exit_within(Duration::from_secs(30)) {
            None => problems.push(format!("round {round}: {sig} swallowed: tether still running after 30s")),
            Some(status) if status.code() != Some(0) => {
                problems.push(format!("round {round}: {sig} not handled: tether ended with {status}"));
            }
            Some(_) => {
                let deadline = Instant::now() + GONE;
                if tether.err.find(deadline, |l| l.contains("stopped 'quick'")).is_none() {
                    problems.push(format!("round {round}: {sig}: exit 0 without `stopped 'quick'`\n{}", tether.dump()));
                }
            }
        }
        drop(tether);
        let status = sandbox.run(&["status", "--name", "quick"]);
        if status.code() != Some(1) {
            problems.push(format!("round {round}: the record outlived tether: {}", status.stdout.trim()));
        }
        // Sweep a record left behind, so the next round starts clean (and is not refused).
        let _ = sandbox.run(&["down", "--name", "quick"]);
    }
    assert!(problems.is_empty(), "a stop signal right after `ready:`:\n{}", problems.join("\n"));
}

/// Case 6: A hostile argument reaches the backend as one argv element; no shell runs it.
#[test]
fn hostile_argument_is_one_argv_element() {
    let sandbox = Sandbox::new();
    let dir = tempfile::tempdir().expect("a backend working directory");
    let dir_arg = dir.path().to_str().expect("a UTF-8 temp path");
    let hostile = "a b; touch X $(touch Y)";
    let mut tether = sandbox.spawn(&[
        "up",
        "--port",
        "auto",
        "--cwd",
        dir_arg,
        "--",
        exe(),
        "demo-backend",
        "--port",
        "{port}",
        "--echo-args",
        "--",
        hostile,
    ]);
    let expected = format!("demo-backend argv: {}", serde_json::json!([hostile]));
    assert_eq!(expected, r#"demo-backend argv: ["a b; touch X $(touch Y)"]"#);
    tether.stderr_line(&format!("containing `{expected}`"), |l| l.contains(&expected));
    // Ctrl-C only once ready: before that, SIGINT has its default action on tether (see
    // `ctrl_c_while_waiting_for_ready_leaves_nothing`).
    tether.ready_url();
    let ids = tether.descendant_ids();
    tether.stop_with(Signal::SIGINT);
    assert_eq!(tether.wait_exit().code(), Some(0), "{}", tether.dump());
    let left = wait_gone(&ids, GONE);
    assert!(left.is_empty(), "left behind: {}", describe(&left));

    let test_cwd = std::env::current_dir().expect("the test's cwd");
    for d in [dir.path(), sandbox.cwd.path(), test_cwd.as_path()] {
        for f in ["X", "Y"] {
            assert!(!d.join(f).exists(), "{} exists: a shell ran the argument", d.join(f).display());
        }
    }
}

/// Runs a backend whose /health misbehaves in `mode` with a 1 s deadline; returns the
/// finished run and the backend's port (from its relayed listening line).
///
/// With the claude-skills preset: the default probe (`http:/health`, any 2xx) rightly
/// takes a 200 with a non-JSON body as ready.
fn unhealthy_run(mode: &str) -> (Finished, u16) {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&[
        "up",
        "--port",
        "auto",
        "--timeout",
        "1s",
        "--probe-timeout",
        "200ms",
        "--preset",
        "claude-skills",
        "--",
        exe(),
        "demo-backend",
        "--port",
        "{port}",
        "--health-mode",
        mode,
    ]);
    let marker = "listening on http://127.0.0.1:";
    let port = run
        .stderr
        .lines()
        .find_map(|l| l.find(marker).and_then(|_| number_after(l, marker)))
        .unwrap_or_else(|| panic!("{mode}: no listening line relayed\n{}", run.dump()));
    (run, u16::try_from(port).expect("a port number"))
}

/// Asserts the run failed on the deadline naming `expected`, and left no backend behind.
fn assert_timed_out_and_gone(mode: &str, run: &Finished, port: u16, expected: &str) {
    assert_eq!(run.code(), Some(1), "{mode}\n{}", run.dump());
    let error = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{mode}: no error line\n{}", run.dump()));
    assert!(error.contains("not ready after"), "{mode}: not a deadline error: {error}\n{}", run.dump());
    assert!(
        error.contains(expected),
        "{mode}: the error does not name the last probe's problem ({expected:?}): {error}"
    );
    let p = port.to_string();
    let mut leftovers = Vec::new();
    let gone = wait_until(GONE, || {
        leftovers = port::listening_pids(port).unwrap_or_default();
        leftovers.extend(processes_with_args(&["--port", &p, "--health-mode", mode]));
        leftovers.is_empty()
    });
    assert!(gone, "{mode}: backend left behind: pids {leftovers:?}");
}

/// Case 7: A /health that answers 500 or non-JSON keeps tether polling until the deadline;
/// the error names the last probe's problem, and the backend is stopped.
#[test]
fn unhealthy_health_keeps_polling_until_deadline() {
    for (mode, expected) in [("status500", "500"), ("nonjson", "not JSON")] {
        let (run, port) = unhealthy_run(mode);
        assert_timed_out_and_gone(mode, &run, port, expected);
    }
}

/// Case 7b: A /health that never answers: each attempt times out, the error says so.
///
/// Was a race between the HTTP client's timeout and the engine's per-attempt timeout; the
/// engine's now governs, so the error names the probe and the limit.
#[test]
fn unhealthy_health_hang_names_the_probe_timeout() {
    let (run, port) = unhealthy_run("hang");
    assert_timed_out_and_gone("hang", &run, port, "longer than");
}

/// Case 8: A dead proxy in the environment does not hide a backend on loopback.
#[test]
fn dead_http_proxy_does_not_matter() {
    let sandbox = Sandbox::new();
    let mut cmd =
        sandbox.command(&["up", "--port", "auto", "--timeout", "60s", "--", exe(), "demo-backend", "--port", "{port}"]);
    let dead = "http://127.0.0.1:9";
    for k in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        cmd.env(k, dead);
    }
    cmd.env_remove("NO_PROXY").env_remove("no_proxy");
    let mut tether = Running::spawn(cmd);
    let url = tether.ready_url();
    let (status, _) = http_get(&url, "/health").expect("GET /health");
    assert_eq!(status, 200);
    tether.stop_with(Signal::SIGINT);
    assert_eq!(tether.wait_exit().code(), Some(0), "{}", tether.dump());
}

/// Case 9: Bad usage and bad configuration exit 2 with a message saying what is wrong; a
/// missing program is a runtime failure (1).
#[test]
fn bad_input_exit_2() {
    let sandbox = Sandbox::new();
    let expect = |args: &[&str], code: i32, text: Option<&str>| {
        let run = sandbox.run(args);
        assert_eq!(run.code(), Some(code), "tether {args:?}\n{}", run.dump());
        if let Some(text) = text {
            assert!(run.stderr.contains(text), "tether {args:?}: stderr lacks {text:?}\n{}", run.dump());
        }
    };
    expect(&["up", "--port", "70000"], 2, Some("out of range"));
    expect(&["up", "--port", "auto", "--runner", "podman"], 2, Some("native, uvx or docker"));
    expect(&["up", "--port", "auto", "--config", "/nonexistent.toml"], 2, Some("/nonexistent.toml"));
    let config = sandbox.cwd.path().join("bad.toml");
    std::fs::write(&config, "prot = 1\n").expect("write a config file");
    let config_arg = config.to_str().expect("a UTF-8 temp path");
    expect(&["up", "--port", "auto", "--config", config_arg], 2, Some("unknown field"));
    expect(&["up", "--port", "auto", "--timeout", "fast"], 2, None);
    expect(&["up", "--port", "auto", "--", "no-such-program-xyz"], 1, Some("not found on PATH"));
}

/// Case 10: A second `up` of a name that is running is refused; the first goes on serving.
#[test]
fn second_up_of_same_name_is_refused() {
    let sandbox = Sandbox::new();
    let args = ["up", "--name", "same", "--port", "auto", "--", exe(), "demo-backend", "--port", "{port}"];
    let mut first = sandbox.spawn(&args);
    let url = first.ready_url();

    let second = sandbox.run(&args);
    assert_eq!(second.code(), Some(1), "{}", second.dump());
    assert!(second.stderr.contains("already running"), "{}", second.dump());

    assert!(matches!(first.child.try_wait(), Ok(None)), "the first tether exited\n{}", first.dump());
    let (status, body) = http_get(&url, "/health").expect("the first backend still answers");
    assert_eq!(status, 200, "{body}");
    first.stop_with(Signal::SIGINT);
    assert_eq!(first.wait_exit().code(), Some(0), "{}", first.dump());
}

/// Each backend's guard is the small `tether-guard` executable when it sits beside `tether`
/// (as `cargo build` and `cargo install` leave them); a `tether` alone (copied elsewhere,
/// or built with `--bin tether` only) is its own guard. Either way the guard is recognised
/// as one (`status` names it as the guard above the backend) and `down` stops it all.
#[test]
fn the_guard_is_tether_guard_beside_tether_and_tether_itself_alone() {
    let tether = std::path::PathBuf::from(exe());
    let small = tether.with_file_name("tether-guard");
    assert!(small.is_file(), "cargo builds the tether-guard bin for the tests: {} is missing", small.display());
    // `tether` alone in a directory: a hard link (same file system), or a copy.
    let lone_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    let lone = lone_dir.path().join("tether");
    if std::fs::hard_link(&tether, &lone).is_err() {
        std::fs::copy(&tether, &lone).expect("copy tether");
    }
    let canonical = |p: &std::path::Path| p.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    for (program, want) in [(&tether, canonical(&small)), (&lone, canonical(&lone))] {
        let sandbox = Sandbox::new();
        let args = ["up", "--detach", "--name", "g", "--port", "auto"];
        let run = Running::spawn(sandbox.command_of(program, &args)).finish();
        let _down = DownOnDrop { sandbox: &sandbox, name: "g" };
        assert_eq!(run.code(), Some(0), "{}: {}", program.display(), run.dump());

        let status = sandbox.run(&["status", "--name", "g", "--json"]);
        let doc: Value = serde_json::from_str(status.stdout.trim())
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}", status.dump()));
        let guard = doc["guard_pid"].as_u64().unwrap_or_else(|| panic!("no guard_pid in {doc}")) as u32;
        let backend = doc["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {doc}")) as u32;
        let mut ids: Vec<ProcessIdentity> = ProcessIdentity::of(guard).into_iter().collect();
        ids.extend(procs::descendants(guard).into_iter().filter_map(ProcessIdentity::of));
        let _reaper = Reaper(ids.clone());
        let exe_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        assert_eq!(exe_of(guard), Some(want.clone()), "the guard of `{} up`: {doc}", program.display());
        let command = procs::command_of(guard).unwrap_or_default();
        assert!(command.contains("__tether-guard"), "the guard's command line: {command}");
        assert_eq!(exe_of(backend), Some(canonical(program)), "the backend is `{} demo-backend`", program.display());

        let down = sandbox.run(&["down", "--name", "g"]);
        assert_eq!(down.code(), Some(0), "{}", down.dump());
        let left = wait_gone(&ids, GONE);
        assert!(left.is_empty(), "alive after `down`: {}", describe(&left));
    }
}
