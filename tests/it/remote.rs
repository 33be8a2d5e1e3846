//! End to end: `--runner remote --url`, attaching to a backend someone else runs.
//!
//! "Someone else" is this test: it starts the backend itself (`tether demo-backend`, or
//! `tether-mcp-test-backend` for `mcp-proxy`) and checks that tether reports it ready,
//! reconnects when it comes back, explains when it does not answer, and never signals
//! it — the demo backend says `got SIGTERM` on stderr when it is signalled, and must
//! still be running after tether is gone.
//!
//! Nothing sleeps to synchronise: lines are read as they come, and conditions are
//! polled with a bounded deadline. Every process a test starts is SIGKILLed on drop.
// Linux only: it inspects processes through /proc.
#![cfg(target_os = "linux")]

use crate::mcp_support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;
use tether_testkit::wait_until;

/// The bound for anything waited for: only a hung tether reaches it.
const WAIT: Duration = Duration::from_secs(120);

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_tether")
}

/// The lines of one output stream, read by a thread so that the child never blocks.
struct Lines {
    rx: Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn start(reader: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx, seen: Vec::new() }
    }

    /// The first line not yet returned by `find` for which `pred` holds, waiting until
    /// `WAIT` has passed or the stream ends.
    fn find(&mut self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.rx.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if pred(&line) {
                return Some(line);
            }
        }
    }

    /// Everything seen so far (without waiting for more).
    fn text(&mut self) -> String {
        while let Ok(line) = self.rx.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

/// A child process with its output read line by line; SIGKILLed when dropped.
struct Proc {
    child: Child,
    out: Lines,
    err: Lines,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn a process");
        let out = Lines::start(child.stdout.take().expect("piped stdout"));
        let err = Lines::start(child.stderr.take().expect("piped stderr"));
        Proc { child, out, err }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn dump(&mut self) -> String {
        format!("--- stdout ---\n{}\n--- stderr ---\n{}", self.out.text(), self.err.text())
    }

    fn stdout_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.out.find(pred) {
            Some(line) => line,
            None => panic!("no stdout line {what}\n{}", self.dump()),
        }
    }

    fn stderr_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.err.find(pred) {
            Some(line) => line,
            None => panic!("no stderr line {what}\n{}", self.dump()),
        }
    }

    /// The next JSON line on stdout whose `state` is `state`.
    fn json_state(&mut self, state: &str) -> Value {
        let line = self.stdout_line(&format!("with state {state}"), |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v["state"] == state)
        });
        serde_json::from_str(&line).expect("a JSON line")
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait (bounded) for the exit.
    fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        wait_until(WAIT, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        match status {
            Some(s) => s,
            None => panic!("did not exit within {WAIT:?}\n{}", self.dump()),
        }
    }

    /// Send `sig` once the process catches it.
    fn signal_when_caught(&mut self, sig: Signal) {
        self.wait_caught(sig);
        kill(self.pid(), sig).expect("signal");
    }

    /// Wait until the process catches `sig` (its handler is installed), as tether's
    /// foreground supervision does once it runs: `/proc/PID/status` says so.
    fn wait_caught(&mut self, sig: Signal) {
        let pid = self.child.id();
        let bit = 1u64 << (sig as i32 - 1);
        let caught = wait_until(WAIT, || {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .is_some_and(|mask| mask & bit != 0)
        });
        assert!(caught, "never caught {sig}\n{}", self.dump());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// "Someone else's" backend: `tether demo-backend` started by the test itself.
struct Demo {
    proc: Proc,
    port: u16,
}

impl Demo {
    /// On `port` (0: any free one), with `extra` demo flags.
    fn start(port: u16, extra: &[&str]) -> Self {
        let mut cmd = Command::new(exe());
        cmd.args(["demo-backend", "--port", &port.to_string(), "--skills", "3"]).args(extra);
        cmd.env_remove("TETHER_LOG").env_remove("RUST_LOG");
        let mut proc = Proc::spawn(cmd);
        let line = proc.stdout_line("`demo-backend listening on`", |l| l.starts_with("demo-backend listening on "));
        let port = line.rsplit(':').next().and_then(|p| p.trim().parse().ok()).expect("a port in the listening line");
        Demo { proc, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Still running, never signalled.
    fn assert_untouched(&mut self) {
        assert!(self.proc.running(), "the remote backend is gone\n{}", self.proc.dump());
        let err = self.proc.err.text();
        assert!(!err.contains("got SIG"), "the remote backend was signalled:\n{err}");
        // And it still answers.
        let health = std::net::TcpStream::connect(("127.0.0.1", self.port));
        assert!(health.is_ok(), "the remote backend does not accept connections");
    }
}

/// A state directory and working directory of one test.
struct Sandbox {
    state: TempDir,
    cwd: TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Sandbox { state: tempfile::tempdir().expect("state dir"), cwd: tempfile::tempdir().expect("cwd") }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(exe());
        cmd.args(args)
            .env("TETHER_STATE_DIR", self.state.path())
            .env_remove("TETHER_LOG")
            .env_remove("RUST_LOG")
            .current_dir(self.cwd.path());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TETHER_") && key != "TETHER_STATE_DIR" {
                cmd.env_remove(key);
            }
        }
        cmd
    }

    fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.command(args))
    }

    /// Run to the end: exit code, stdout, stderr.
    fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        self.run_cmd(self.command(args))
    }

    fn run_cmd(&self, cmd: Command) -> (Option<i32>, String, String) {
        let mut p = Proc::spawn(cmd);
        let status = p.wait_exit();
        // The streams end with the process (nothing else holds them).
        while p.out.find(|_| false).is_some() {}
        while p.err.find(|_| false).is_some() {}
        (status.code(), p.out.seen.join("\n"), p.err.seen.join("\n"))
    }
}

/// A port nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    listener.local_addr().expect("addr").port()
}

#[test]
fn up_reports_ready_and_neither_down_nor_sigterm_signals_the_backend() {
    let mut demo = Demo::start(0, &[]);
    let sandbox = Sandbox::new();
    let url = demo.url();
    let args = ["up", "--runner", "remote", "--url", &url, "--preset", "claude-skills", "--name", "far", "--json"];

    let mut up = sandbox.spawn(&args);
    let ready = up.json_state("ready");
    assert_eq!(ready["url"], url.as_str(), "{ready}");
    assert_eq!(ready["port"], demo.port, "{ready}");
    assert_eq!(ready["progress"], 3, "{ready}");
    assert!(ready["pid"].is_null() && ready["guard_pid"].is_null() && ready["container_id"].is_null(), "{ready}");

    // `status` shows it as a remote instance with no process of tether's.
    let (code, out, err) = sandbox.run(&["status", "--name", "far", "--json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let status: Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!((status["runner"].as_str(), status["state"].as_str()), (Some("remote"), Some("ready")), "{status}");
    assert!(status["pid"].is_null() && status["pgid"].is_null(), "{status}");
    // `logs`: the output is on the backend's machine, said plainly.
    let (code, _, err) = sandbox.run(&["logs", "--name", "far"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("someone else runs"), "{err}");

    // `down` ends the tether that attached, and only that.
    up.wait_caught(Signal::SIGTERM);
    let (code, out, err) = sandbox.run(&["down", "--name", "far"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(up.wait_exit().code(), Some(0), "{}", up.dump());
    demo.assert_untouched();
    let (code, _, err) = sandbox.run(&["status", "--name", "far"]);
    assert_eq!(code, Some(1), "the record is gone: {err}");

    // SIGTERM: tether ends (exit 0, nothing to stop); the backend runs on.
    let mut up = sandbox.spawn(&args);
    up.json_state("ready");
    up.signal_when_caught(Signal::SIGTERM);
    assert_eq!(up.wait_exit().code(), Some(0), "{}", up.dump());
    let stopped = up.json_state("stopped");
    assert_eq!(stopped["killed"], false, "{stopped}");
    demo.assert_untouched();

    // The same from tether.toml, in plain text: the ready line scripts read.
    std::fs::write(
        sandbox.cwd.path().join("tether.toml"),
        format!("runner = \"remote\"\nurl = \"{url}/\"\npreset = \"claude-skills\"\n"),
    )
    .expect("write tether.toml");
    let mut up = sandbox.spawn(&["up"]);
    let line = up.stdout_line("`ready: URL`", |l| l.starts_with("ready: "));
    assert!(line.starts_with(&format!("ready: {url} (3 loaded)")), "{line}");
    up.signal_when_caught(Signal::SIGINT);
    assert_eq!(up.wait_exit().code(), Some(0), "{}", up.dump());
    up.stderr_line("the detach note", |l| l.contains("the remote backend keeps running"));
    demo.assert_untouched();
    println!(
        "reliability: attached to a backend someone else runs (`--runner remote`): up, down, SIGTERM | 1 | 0 signals to the backend"
    );
}

#[test]
fn a_backend_that_does_not_answer_is_explained_with_exit_1() {
    let sandbox = Sandbox::new();
    // Nothing listens: the last probe says the connection was refused.
    let url = format!("http://127.0.0.1:{}", closed_port());
    let (code, out, err) = sandbox.run(&["up", "--runner", "remote", "--url", &url, "--timeout", "300ms"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("backend not ready after"), "{err}");
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    assert!(out.is_empty(), "no ready line: {out}");

    // Answering but still loading: the last answer is in the error (and in --json).
    let mut demo = Demo::start(0, &["--ready-after", "10m"]);
    let url = demo.url();
    let args = ["up", "--url", &url, "--preset", "claude-skills", "--timeout", "500ms", "--json"];
    let (code, out, err) = sandbox.run(&args);
    assert_eq!(code, Some(1), "{out}\n{err}");
    let failed: Value =
        serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(failed["state"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("not ready after") && error.contains("loading"), "{error}");
    demo.assert_untouched();
}

/// `--runner remote` never stops anything: not even a backend that tether itself runs under
/// the same instance name (it used to be swept as "a different configuration").
#[test]
fn attaching_under_the_name_of_a_backend_tether_runs_leaves_that_backend_alone() {
    let sandbox = Sandbox::new();
    let up = ["up", "--detach", "--json", "--name", "mine", "--port", "auto", "--", exe(), "demo-backend"];
    let (code, out, err) = sandbox.run(&[&up[..], &["--port", "{port}"]].concat());
    assert_eq!(code, Some(0), "{out}\n{err}");
    let ready: Value =
        serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let url = ready["url"].as_str().expect("a url").to_string();
    let pid = u32::try_from(ready["pid"].as_u64().expect("the backend's pid")).expect("pid fits");
    let backend = tether::core::procs::ProcessIdentity::of(pid).expect("the backend runs");

    let (code, out, err) =
        sandbox.run(&["up", "--runner", "remote", "--url", &url, "--name", "mine", "--timeout", "2s"]);
    assert_eq!(code, Some(2), "{out}\n{err}");
    assert!(err.contains("never stops it") && err.contains("another --name"), "{err}");
    assert!(backend.is_alive(), "the backend tether runs was stopped by an attach");
    let (code, out, err) = sandbox.run(&["status", "--name", "mine", "--json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let (code, out, err) = sandbox.run(&["down", "--name", "mine"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    println!("reliability: `--runner remote` under the name of a backend tether runs | 1 | 0 stopped (exit 2)");
}

#[test]
fn a_lost_backend_is_reconnected_when_it_answers_again() {
    let demo = Demo::start(0, &[]);
    let (port, url) = (demo.port, demo.url());
    let sandbox = Sandbox::new();
    let mut up = sandbox.spawn(&[
        "up",
        "--runner",
        "remote",
        "--url",
        &url,
        "--preset",
        "claude-skills",
        "--liveness-period",
        "100ms",
        "--liveness-failures",
        "1",
        "--json",
    ]);
    let first = up.json_state("ready");
    assert_eq!(first["restarts"], 0, "{first}");

    // Someone else stops their backend: tether notices, never "restarts" anything…
    drop(demo);
    let lost = up.json_state("reconnecting");
    assert!(lost["reason"].as_str().is_some_and(|r| r.contains("liveness")), "{lost}");
    // …and is connected again once it is back on the same port.
    let mut demo = Demo::start(port, &[]);
    let again = up.json_state("ready");
    assert_eq!((again["url"].as_str(), again["restarts"].as_u64()), (Some(url.as_str()), Some(1)), "{again}");
    assert!(up.running(), "{}", up.dump());
    up.signal_when_caught(Signal::SIGTERM);
    assert_eq!(up.wait_exit().code(), Some(0), "{}", up.dump());
    demo.assert_untouched();
}

#[test]
fn options_that_make_no_sense_with_remote_exit_2_saying_why() {
    let sandbox = Sandbox::new();
    let url = "http://127.0.0.1:9";
    let remote = |extra: &[&str]| {
        let mut args = vec!["up", "--runner", "remote", "--url", url];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["up".into(), "--runner".into(), "remote".into()], "--runner remote needs the backend's address"),
        (remote(&["--port", "9000"]), "--port makes no sense"),
        (remote(&["--host", "127.0.0.1"]), "--host makes no sense"),
        (remote(&["--cwd", "/"]), "--cwd makes no sense"),
        (remote(&["--", "my-server"]), "a command after `--`"),
        (remote(&["--image", "nginx"]), "--image makes no sense"),
        (remote(&["--package", "srv==1.0"]), "--package makes no sense"),
        (remote(&["--detach"]), "--detach and --share make no sense"),
        (remote(&["--probe", "log:ready"]), "a remote backend's output stays on its own machine"),
        (
            ["up", "--runner", "native", "--url", url, "--", "srv"].map(String::from).to_vec(),
            "is only for --runner remote",
        ),
        (["up", "--url", "https://example.com:443"].map(String::from).to_vec(), "https is not supported"),
        (["up", "--url", "127.0.0.1:8765"].map(String::from).to_vec(), "does not start with http://"),
        (["up", "--url", "http://user:pw@h:1"].map(String::from).to_vec(), "user name or password"),
        (
            ["mcp-proxy", "--runner", "remote", "--url", url, "--port", "1"].map(String::from).to_vec(),
            "--port makes no sense",
        ),
    ];
    for (args, expect) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = sandbox.run(&args);
        assert_eq!(code, Some(2), "{args:?}\n{out}\n{err}");
        assert!(err.contains(expect), "{args:?}: expected `{expect}` in:\n{err}");
    }

    // TETHER_URL is read like the other TETHER_* variables, and a flag wins over it.
    let mut cmd = sandbox.command(&["up", "--timeout", "100ms"]);
    cmd.env("TETHER_URL", "https://from-the-env:1");
    let (code, _, err) = sandbox.run_cmd(cmd);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bad url `https://from-the-env:1` (from TETHER_URL)"), "{err}");
    let mut cmd =
        sandbox.command(&["up", "--url", &format!("http://127.0.0.1:{}", closed_port()), "--timeout", "100ms"]);
    cmd.env("TETHER_URL", "https://from-the-env:1");
    let (code, _, err) = sandbox.run_cmd(cmd);
    assert_eq!(code, Some(1), "the flag's URL is probed (and refused): {err}");
}

#[tokio::test]
async fn mcp_proxy_forwards_to_a_remote_mcp_backend_and_leaves_it_running() {
    use mcp_support::{call, connect, text_of};
    use tether_testkit::mcp_backend::mcp_backend_exe;

    // Someone else's MCP backend, on a port it picked.
    let mut cmd = Command::new(mcp_backend_exe());
    cmd.args(["--port", "0", "--skills", "2"]);
    let (mut backend, listening) = tokio::task::spawn_blocking(move || {
        let mut p = Proc::spawn(cmd);
        let line = p.stdout_line("the listening line", |l| l.starts_with("mcp-test-backend listening on http://"));
        (p, line)
    })
    .await
    .expect("the backend starts");
    let origin = listening.trim_start_matches("mcp-test-backend listening on ").trim().to_string();
    let sandbox = mcp_support::Sandbox::new();
    // The URL's path is the MCP endpoint; readiness is an MCP initialize there.
    let args: Vec<String> =
        ["--runner", "remote", "--url", &format!("{origin}/mcp"), "--name", "far-mcp"].map(String::from).to_vec();
    let (client, _events) = connect(&sandbox, &args).await;

    let tools = tokio::time::timeout(mcp_support::WAIT, client.list_all_tools())
        .await
        .expect("listed in time")
        .expect("tools/list");
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    assert!(names.iter().any(|n| n == "list_skills"), "{names:?}");
    let result = call(&client, "find_helpful_skills", serde_json::json!({"task_description": "far away"}))
        .await
        .expect("forwarded");
    assert_ne!(result.is_error, Some(true), "{result:?}");
    assert!(text_of(&result).contains("far away"), "{}", text_of(&result));
    let record = sandbox.record("far-mcp").expect("a record while attached");
    assert_eq!(record["runner"], "remote", "{record}");
    assert!(record["pgid"].is_null() && record["leader"].is_null(), "{record}");

    // The host goes away: the proxy ends; the backend is someone else's and runs on.
    let _ = client.cancel().await;
    let gone = tokio::task::spawn_blocking({
        let state = sandbox.state.path().join("far-mcp.json");
        move || wait_until(WAIT, || !state.exists())
    })
    .await
    .expect("joined");
    assert!(gone, "the proxy forgets its record when it ends");
    assert!(backend.running(), "the remote MCP backend is gone\n{}", backend.dump());
    assert!(!backend.err.text().contains("SIG"), "{}", backend.dump());
}

#[tokio::test]
async fn mcp_proxy_reconnects_to_a_remote_mcp_backend_that_comes_back() {
    use mcp_support::{call, connect, text_of};
    use tether_testkit::mcp_backend::mcp_backend_exe;

    let start = |port: u16| {
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(mcp_backend_exe());
            cmd.args(["--port", &port.to_string()]);
            let mut p = Proc::spawn(cmd);
            let line = p.stdout_line("the listening line", |l| l.starts_with("mcp-test-backend listening on http://"));
            let origin = line.trim_start_matches("mcp-test-backend listening on ").trim().to_string();
            (p, origin)
        })
    };
    let (backend, origin) = start(0).await.expect("the backend starts");
    let port: u16 = origin.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
    let sandbox = mcp_support::Sandbox::new();
    let url = format!("{origin}/mcp");
    let args: Vec<String> = [
        "--runner",
        "remote",
        "--url",
        &url,
        "--name",
        "far-mcp",
        "--call-wait",
        "120s",
        "--liveness-period",
        "100ms",
        "--liveness-failures",
        "1",
    ]
    .map(String::from)
    .to_vec();
    let (client, _events) = connect(&sandbox, &args).await;
    let first = call(&client, "list_skills", serde_json::json!({})).await.expect("forwarded");
    assert_ne!(first.is_error, Some(true), "{first:?}");

    // Someone else stops their backend; the proxy notices (its next attempt is recorded)…
    drop(backend);
    sandbox.record_where("far-mcp", "a reconnect", |r| r["restarts"] == 1).await;
    // …and forwards again once it is back on the same port.
    let (mut backend, _) = start(port).await.expect("the backend starts again");
    let again = call(&client, "find_helpful_skills", serde_json::json!({"task_description": "back again"}))
        .await
        .expect("forwarded after the reconnect");
    assert_ne!(again.is_error, Some(true), "{again:?}");
    assert!(text_of(&again).contains("back again"), "{}", text_of(&again));
    let _ = client.cancel().await;
    assert!(backend.running(), "{}", backend.dump());
}
