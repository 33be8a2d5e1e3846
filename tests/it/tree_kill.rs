//! Issue 22, item 7: a shared backend outlives the window that started it, however the
//! host stops that window's `tether mcp-proxy`.
//!
//! Two proxies of one configuration (two host windows, `--share`) run one backend; the
//! first one started it. Then the first is stopped the way a host stops a server:
//! - VS Code: SIGTERM to the proxy and to every descendant of it by parent pid (found by
//!   walking `/proc`), SIGKILL to whatever is left after a grace period;
//! - Codex: SIGTERM to the proxy's process group, then SIGKILL to the group.
//!
//! The backend must not be among what that reaches: afterwards it is the same process
//! (pid and start time), and the second window's calls are answered by it. A shared
//! container's lease-mode guard (the docker runner) must not be either: the container
//! and its guard stay for the other front.
//!
//! Nothing sleeps to synchronise: everything is polled for with a deadline.
// Linux only: the host's tree-kill walks /proc.
#![cfg(target_os = "linux")]

use crate::{docker_support, mcp_support};

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mcp_support::{Sandbox, WAIT, group_gone};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tether::core::procs::{self, ProcessIdentity};
use tether_testkit::mcp_backend::mcp_backend_exe;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long a host waits after SIGTERM before it SIGKILLs what is left (VS Code: 10 s).
const HOST_GRACE: Duration = Duration::from_secs(10);

/// One host window: a `tether mcp-proxy` driven by plain JSON-RPC lines.
struct Window {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Window {
    /// Start the proxy; `own_group`: in a process group of its own (as Codex starts it).
    async fn open(sandbox: &Sandbox, own_group: bool) -> Window {
        let args: Vec<String> = ["--share", "200ms", "--call-wait", "120s", "--preset", "claude-skills", "--"]
            .into_iter()
            .map(String::from)
            .chain([mcp_backend_exe().to_string_lossy().into_owned(), "--port".into(), "{port}".into()])
            .collect();
        let mut command = sandbox.command(&args);
        if own_group {
            command.process_group(0);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tether mcp-proxy");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut window = Window { child, stdin, stdout };
        window
            .send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "window", "version": "1"}}}))
            .await;
        window.answer(1).await;
        window.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
        window
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the proxy's pid")
    }

    async fn send(&mut self, message: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{message}\n").as_bytes()).await.expect("write to the proxy");
        stdin.flush().await.expect("flush");
    }

    /// The answer to request `id` (notifications in between are skipped).
    async fn answer(&mut self, id: u64) -> Value {
        loop {
            let line = tokio::time::timeout(WAIT, self.stdout.next_line())
                .await
                .expect("an answer in time")
                .expect("read stdout")
                .expect("stdout open");
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON-RPC ({e}): {line}"));
            if v["id"] == json!(id) {
                return v;
            }
        }
    }

    /// A `tools/call` as request `id`, answered by the backend: its text.
    async fn call(&mut self, id: u64, task: &str) -> String {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "find_helpful_skills", "arguments": {"task_description": task}}}))
            .await;
        let answer = self.answer(id).await;
        assert_ne!(answer["result"]["isError"], json!(true), "{answer}");
        answer["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text: {answer}")).to_string()
    }

    async fn exited(&mut self) {
        tokio::time::timeout(WAIT, self.child.wait()).await.expect("the proxy exits in time").expect("wait");
    }
}

/// Every live process below `root` by parent pid, as a host's tree-kill finds them: one
/// walk over `/proc/*/stat`, independent of tether's own process code.
fn descendants_by_ppid(root: u32) -> Vec<ProcessIdentity> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `PID (COMM) STATE PPID …`: COMM may hold anything, so split after its last ')'.
        let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else { continue };
        let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) else { continue };
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for child in children.remove(&parent).unwrap_or_default() {
            found.extend(ProcessIdentity::of(child));
            frontier.push(child);
        }
    }
    found
}

/// Whether none of `targets` is alive (zombies count as gone), waiting at most `within`.
fn all_gone(targets: &[ProcessIdentity], within: Duration) -> bool {
    tether_testkit::wait_until(within, || targets.iter().all(|t| !t.is_alive()))
}

/// VS Code's stop of a stdio server: SIGTERM to the server `root` and to each of its
/// descendants by parent pid, SIGKILL to those left after the grace period. Returns
/// what it reached below `root` (`root`, our child, is the caller's to reap).
fn tree_kill(root: u32) -> Vec<ProcessIdentity> {
    let root = ProcessIdentity::of(root).expect("the server runs");
    let below = descendants_by_ppid(root.pid);
    let tree: Vec<ProcessIdentity> = below.iter().copied().chain([root]).collect();
    for p in &tree {
        let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGTERM);
    }
    if !all_gone(&tree, HOST_GRACE) {
        for p in tree.iter().filter(|p| p.is_alive()) {
            let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
        }
    }
    assert!(all_gone(&tree, WAIT), "SIGKILL left processes of the tree alive");
    below
}

/// Codex's stop: SIGTERM to the server's process group, SIGKILL to the group 2 s later.
async fn group_kill(window: &mut Window) {
    let pgid = procs::pgid_of(window.pid()).expect("the proxy runs");
    assert_eq!(pgid, window.pid(), "the proxy leads a group of its own");
    let members: Vec<ProcessIdentity> =
        procs::group_members(pgid).into_iter().filter_map(ProcessIdentity::of).collect();
    let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGTERM);
    if !all_gone(&members, Duration::from_secs(2)) {
        let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
    }
    window.exited().await;
}

/// The shared instance: its record (the only one in the state directory) once it names
/// a leader with a backend below it, and that backend's identity.
async fn shared_backend(sandbox: &Sandbox) -> (String, Value, ProcessIdentity) {
    let deadline = Instant::now() + WAIT;
    loop {
        let names: Vec<String> = std::fs::read_dir(sandbox.state.path())
            .expect("the state dir")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
            .collect();
        assert!(names.len() <= 1, "one shared instance: {names:?}");
        if let Some(name) = names.first()
            && let Some(record) = sandbox.record(name)
            && let Some(leader) = record["leader"]["pid"].as_u64()
            && let Some(backend) = procs::backend_of(leader as u32).and_then(ProcessIdentity::of)
            && backend.pid != leader as u32
        {
            return (name.clone(), record, backend);
        }
        assert!(Instant::now() < deadline, "no shared backend recorded: {names:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Start window A (it starts the backend) and window B (it shares it), each answered.
async fn two_windows(sandbox: &Sandbox, a_own_group: bool) -> (Window, Window, String, Value, ProcessIdentity) {
    let mut a = Window::open(sandbox, a_own_group).await;
    assert!(a.call(2, "window a").await.contains("window a"));
    let (name, record, backend) = shared_backend(sandbox).await;
    let mut b = Window::open(sandbox, false).await;
    assert!(b.call(2, "window b").await.contains("window b"));
    assert_eq!(shared_backend(sandbox).await.2, backend, "window B shares window A's backend");
    (a, b, name, record, backend)
}

/// After window A is gone: the backend is the very process it was, still recorded, and
/// window B's calls are answered; then B closes and the backend stops after the linger.
async fn b_keeps_the_backend(sandbox: &Sandbox, mut b: Window, name: &str, record: &Value, backend: ProcessIdentity) {
    assert!(backend.is_alive(), "the shared backend (pid {}) died with the window that started it", backend.pid);
    assert!(b.call(3, "after a").await.contains("after a"), "window B is answered");
    let now = sandbox.record(name).expect("the shared instance is still recorded");
    assert_eq!(now["leader"], record["leader"], "the shared backend was replaced");
    assert_eq!(procs::backend_of(record["leader"]["pid"].as_u64().expect("a leader") as u32), Some(backend.pid));
    b.stdin = None;
    b.exited().await;
    group_gone(record).await;
}

/// Issue 22, item 7: window A started the shared backend; A is tree-killed the way VS
/// Code stops a server. The backend is not among A's descendants, so it lives on for B.
#[tokio::test]
async fn a_tree_killed_starting_window_leaves_the_shared_backend_to_the_other() {
    let sandbox = Sandbox::new();
    let (mut a, b, name, record, backend) = two_windows(&sandbox, false).await;
    let reached = tree_kill(a.pid());
    a.exited().await;
    b_keeps_the_backend(&sandbox, b, &name, &record, backend).await;
    let guard = record["leader"]["pid"].as_u64().map(|l| l as u32);
    assert!(
        !reached.iter().any(|p| p.pid == backend.pid || Some(p.pid) == guard),
        "the shared backend or its guard descends from window A: {reached:?}"
    );
}

/// Codex stops a server by its process group: the shared backend was never in window A's
/// group, so it lives on for B.
#[tokio::test]
async fn a_group_killed_starting_window_leaves_the_shared_backend_to_the_other() {
    let sandbox = Sandbox::new();
    let (mut a, b, name, record, backend) = two_windows(&sandbox, true).await;
    group_kill(&mut a).await;
    b_keeps_the_backend(&sandbox, b, &name, &record, backend).await;
}

/// The same for a shared container (`up --runner docker --share`): front A started it
/// and its lease-mode container guard; A is tree-killed. The guard is not among A's
/// descendants, so it and the container stay for front B, until B goes and the linger
/// passes.
#[test]
fn a_tree_killed_starting_front_leaves_the_shared_container_and_its_guard() {
    use docker_support::{Cleanup, KillOnDrop, containers_of, engine_available, exe, final_line, image, unique_name};
    if !engine_available() {
        return;
    }
    let (image, name, state) = (image(), unique_name("dk-treekill"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    let front = || {
        let mut child = std::process::Command::new(exe())
            .args(["up", "--runner", "docker", "--image", &image, "--name", &name, "--pull", "never"])
            .args(["--port", "auto", "--share", "300ms", "--json", "--", "--port", "{port}", "--host", "{host}"])
            .env("TETHER_STATE_DIR", state.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run tether up --share");
        let ready = final_line(&mut child).unwrap_or(Value::Null);
        assert_eq!(ready["state"], "ready", "a front did not get ready: {ready}");
        (child, ready["container_id"].as_str().expect("the container id").to_string())
    };
    let recorded_guard = || {
        let record = std::fs::read_to_string(state.path().join(format!("{name}.json"))).ok()?;
        serde_json::from_value::<ProcessIdentity>(serde_json::from_str::<Value>(&record).ok()?["lease_guard"].clone())
            .ok()
    };
    let (mut a, id) = front();
    let guard = recorded_guard().expect("the record names the lease-mode guard");
    let _kill_guard = KillOnDrop(vec![guard]);
    let (mut b, id_b) = front();
    assert_eq!(id_b, id, "front B shares front A's container");

    let reached = tree_kill(a.id());
    let _ = a.wait();
    assert!(guard.is_alive(), "the container guard died with the front that started it");
    assert!(!reached.contains(&guard), "the container guard descends from front A: {reached:?}");
    assert_eq!(containers_of(&name), vec![id.clone()], "the shared container was removed or replaced");
    assert_eq!(recorded_guard(), Some(guard), "the shared container's guard was replaced");

    // B goes: after the linger the guard removes the container and ends.
    let _ = kill(Pid::from_raw(b.id() as i32), Signal::SIGTERM);
    let _ = b.wait();
    assert!(tether_testkit::wait_until(WAIT, || containers_of(&name).is_empty()), "the container outlived the linger");
    assert!(all_gone(&[guard], WAIT), "the container guard outlived its container");
}

/// A detached guard is not its starter's child, so its exit status is not the starter's
/// to read: a detached backend that exits before it is ready is still reported at once,
/// with its own exit code (from the guard's status file) and its last lines (from the log).
#[test]
fn a_detached_backend_that_exits_before_ready_is_reported_with_its_code() {
    let state = tempfile::tempdir().expect("state");
    let exe = env!("CARGO_BIN_EXE_tether");
    let out = std::process::Command::new(exe)
        .args(["up", "--detach", "--json", "--name", "early", "--port", "auto", "--timeout", "120s"])
        .args(["--preset", "claude-skills", "--", exe, "demo-backend", "--port", "{port}"])
        .args(["--ready-after", "60s", "--exit-after", "200ms", "--exit-code", "3"])
        .env("TETHER_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .output()
        .expect("run tether up --detach");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dump = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{dump}");
    let last: Value = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).next_back().expect("a JSON line");
    assert_eq!(last["state"], "failed", "{dump}");
    assert_eq!(last["exit_code"], 3, "{dump}");
    assert!(last["error"].as_str().is_some_and(|e| e.contains("exited before it was ready")), "{dump}");
    let tail = last["stderr_tail"].as_array().cloned().unwrap_or_default();
    assert!(tail.iter().any(|l| l.as_str().is_some_and(|l| l.contains("exiting with code 3"))), "{dump}");
}
