//! Supervision after ready (restart policy, liveness probe) and reuse of a healthy
//! detached instance — through the CLI, with real processes.

use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tether::core::procs::ProcessIdentity;

const EXE: &str = env!("CARGO_BIN_EXE_tether");

fn run(state: &std::path::Path, args: &[&str]) -> Output {
    Command::new(EXE).args(args).env("TETHER_STATE_DIR", state).stdin(Stdio::null()).output().expect("run tether")
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn with_state(lines: &[Value], state: &str) -> Vec<Value> {
    lines.iter().filter(|v| v["state"] == state).cloned().collect()
}

fn demo(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec!["--", EXE, "demo-backend", "--port", "{port}"];
    v.extend_from_slice(extra);
    v
}

#[test]
fn on_failure_restarts_up_to_the_limit_then_fails() {
    let state = tempfile::tempdir().expect("state");
    let mut args = vec!["up", "--json", "--port", "auto", "--restart", "on-failure", "--max-restarts", "2"];
    // Each round must be seen ready before it exits: the demo's clock starts with it, so
    // 300ms lost that race on a loaded machine (a round still waiting for ready at 482ms).
    args.extend(demo(&["--exit-after", "1500ms", "--exit-code", "4"]));
    let out = run(state.path(), &args);
    let lines = json_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:?}");
    let restarts = with_state(&lines, "restarting");
    assert_eq!(restarts.len(), 2, "{lines:?}");
    assert_eq!(restarts[0]["restarts"], 1);
    assert!(restarts[1]["reason"].as_str().unwrap_or_default().contains("exit code 4"));
    let readies = with_state(&lines, "ready");
    assert_eq!(readies.iter().map(|v| v["restarts"].as_u64()).collect::<Vec<_>>(), vec![Some(0), Some(1), Some(2)]);
    let last = lines.last().expect("a last line");
    assert_eq!(
        (last["state"].as_str(), last["exit_code"].as_i64(), last["restarts"].as_u64()),
        (Some("exited"), Some(4), Some(2))
    );
    // Every backend of every round is gone.
    for r in &readies {
        let pid = r["pid"].as_u64().expect("pid") as u32;
        assert!(ProcessIdentity::of(pid).is_none_or(|p| !p.is_alive()), "round pid {pid} left");
    }
}

#[test]
fn without_a_policy_an_exit_after_ready_is_a_failure_at_once() {
    let state = tempfile::tempdir().expect("state");
    let mut args = vec!["up", "--json", "--port", "auto"];
    args.extend(demo(&["--exit-after", "1500ms", "--exit-code", "5"]));
    let out = run(state.path(), &args);
    let lines = json_lines(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(with_state(&lines, "restarting").is_empty());
    assert_eq!(lines.last().map(|v| v["exit_code"].clone()), Some(Value::from(5)));
}

#[test]
fn always_restarts_a_clean_exit_too() {
    let state = tempfile::tempdir().expect("state");
    let mut args = vec!["up", "--json", "--port", "auto", "--restart", "always", "--max-restarts", "1"];
    args.extend(demo(&["--exit-after", "1500ms", "--exit-code", "0"]));
    let out = run(state.path(), &args);
    let lines = json_lines(&out);
    assert_eq!(with_state(&lines, "restarting").len(), 1, "{lines:?}");
}

#[test]
fn a_failing_liveness_probe_restarts_the_backend() {
    let state = tempfile::tempdir().expect("state");
    let mut args = vec![
        "up",
        "--json",
        "--port",
        "auto",
        "--restart",
        "on-failure",
        "--max-restarts",
        "1",
        "--liveness",
        "http:/health",
        "--liveness-period",
        "100ms",
        "--liveness-failures",
        "2",
    ];
    args.extend(demo(&["--sick-after", "500ms"]));
    let out = run(state.path(), &args);
    let lines = json_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:?}");
    let restarts = with_state(&lines, "restarting");
    assert_eq!(restarts.len(), 1, "{lines:?}");
    assert!(restarts[0]["reason"].as_str().unwrap_or_default().contains("liveness"), "{restarts:?}");
    let last = lines.last().expect("last line");
    assert!(last["error"].as_str().unwrap_or_default().contains("liveness probe"), "{last}");
}

fn detached(state: &std::path::Path, extra: &[&str]) -> Value {
    let mut args = vec!["up", "--detach", "--json", "--name", "shared", "--port", "auto"];
    args.extend_from_slice(extra);
    args.extend(demo(&["--skills", "3"]));
    let out = run(state, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    json_lines(&out).pop().expect("ready line")
}

#[test]
fn a_healthy_detached_instance_is_reused_and_replaced_on_mismatch_or_demand() {
    let state = tempfile::tempdir().expect("state");
    let first = detached(state.path(), &[]);
    assert_eq!(first["reused"], false);
    let again = detached(state.path(), &[]);
    assert_eq!((again["reused"].as_bool(), again["pid"].as_u64()), (Some(true), first["pid"].as_u64()), "{again}");
    let pid = |v: &Value| ProcessIdentity::of(v["pid"].as_u64().expect("pid") as u32);
    let first_id = pid(&first).expect("running");

    // Other settings: not the same backend, so it is replaced.
    let other = detached(state.path(), &["--env", "MODE=other"]);
    assert_eq!(other["reused"], false);
    assert!(!first_id.is_alive(), "the mismatching instance was stopped");

    // --replace: a new one even though it matches.
    let other_id = pid(&other).expect("running");
    let replaced = detached(state.path(), &["--env", "MODE=other", "--replace"]);
    assert_eq!(replaced["reused"], false);
    assert!(!other_id.is_alive());
    assert_ne!(replaced["pid"], other["pid"]);

    let down = run(state.path(), &["down", "--name", "shared"]);
    assert!(down.status.success());
}

/// Issue 12, item 1: a SIGTERM while a restart is still loading ends `up` at once —
/// the restart's start gets the stop too — with no `ready` after it and nothing left.
#[test]
fn sigterm_during_a_restarts_readiness_wait_stops_at_once() {
    use std::io::{BufRead, BufReader};
    let state = tempfile::tempdir().expect("state");
    let mut args = vec![
        "up",
        "--json",
        "--port",
        "auto",
        "--restart",
        "always",
        "--grace",
        "1s",
        "--timeout",
        "120s",
        "--preset",
        "claude-skills",
    ];
    // Ready after 1 s, exits at 1.5 s; the restart then loads for another second.
    args.extend(demo(&["--ready-after", "1s", "--exit-after", "1500ms", "--exit-code", "1"]));
    let mut child = Command::new(EXE)
        .args(&args)
        .env("TETHER_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run tether");
    let tether_pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines().map_while(Result::ok);
    let mut seen = Vec::new();
    let mut restarting = false;
    for line in lines.by_ref() {
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        seen.push(v.clone());
        if v["state"] == "restarting" {
            restarting = true;
        }
        // The restart has begun: it is loading (it is ready only 1 s after its start).
        if restarting && matches!(v["state"].as_str(), Some("starting" | "waiting_ready" | "preparing")) {
            break;
        }
    }
    assert!(restarting, "no restart began: {seen:?}");
    let ours: Vec<ProcessIdentity> =
        tether::core::procs::descendants(tether_pid).into_iter().filter_map(ProcessIdentity::of).collect();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(tether_pid as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    let after: Vec<Value> = lines.filter_map(|l| serde_json::from_str(&l).ok()).collect();
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{after:?}");
    assert!(with_state(&after, "ready").is_empty(), "ready after the SIGTERM: {after:?}");
    let last = after.last().expect("a last line");
    assert_eq!((last["state"].as_str(), last["during"].as_str()), (Some("stopped"), Some("start")), "{after:?}");
    let left: Vec<u32> = ours.iter().filter(|p| p.is_alive()).map(|p| p.pid).collect();
    assert!(left.is_empty(), "left running: {left:?}");
}

/// Issue 12, item 7: the overall deadline holds even when one attempt may take longer.
#[test]
fn the_deadline_caps_a_long_probe_timeout() {
    let state = tempfile::tempdir().expect("state");
    let mut args = vec!["up", "--json", "--port", "auto", "--timeout", "1s", "--probe-timeout", "60s"];
    args.extend(demo(&["--health-mode", "hang"]));
    let out = run(state.path(), &args);
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out);
    let failed = with_state(&lines, "failed");
    let error = failed.first().and_then(|f| f["error"].as_str()).unwrap_or_default().to_string();
    // "backend not ready after 1.0s: …": the deadline, not the 60 s attempt limit.
    let waited: f64 = error
        .strip_prefix("backend not ready after ")
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a timeout: {lines:?}"));
    assert!(waited < 60.0, "the 60 s attempt limit outlived the 1 s deadline: {error}");
}
