//! `tether up --runner uvx` end to end, through real uv: ready with progress and the uv
//! version recorded; `down` leaves no process of the package (uv, Python, and what Python
//! started); an unresolvable package fails at once with uv's own reason; a missing uvx is
//! a clear error before anything starts; the pinned version is checked.
use crate::uvx_support as support;

use std::process::Output;

use serde_json::Value;

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The final `{"state":"failed","error":…}` line (progress events also say `failed`).
fn failure(out: &Output) -> Value {
    let lines = json_lines(out);
    lines
        .into_iter()
        .find(|e| e["state"] == "failed" && e["error"].is_string())
        .unwrap_or_else(|| panic!("no failed line with an error: {}", String::from_utf8_lossy(&out.stdout)))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn up_shows_progress_records_uv_and_down_leaves_no_python() {
    let Some(uv) = support::Uv::find() else { return };
    let fixture = support::fixture(&uv);
    let state = tempfile::tempdir().expect("tempdir");
    let marker = support::marker("down");
    let _cleanup = support::DownOnDrop { state: state.path(), name: "uvx-down" };
    let out = uv
        .tether(state.path())
        .args(["up", "--name", "uvx-down", "--port", "auto", "--detach", "--json", "--preset", "claude-skills"])
        .args(uv.up_flags(&fixture.wheel))
        .args(["--", "--port", "{port}", "--ready-after", "2s", "--skills", "5", "--spawn-grandchild"])
        .args(["--echo-args", "--", &marker])
        .output()
        .expect("tether runs");
    assert_eq!(out.status.code(), Some(0), "up failed: {}", stderr(&out));
    let events = json_lines(&out);
    let phases: Vec<&str> = events.iter().filter_map(|e| e["phase"].as_str()).collect();
    // uv's environment first (installing only when uv says so: the cache may be warm),
    // then the start, apart: Python importing the backend is "starting".
    assert_eq!(phases.first(), Some(&"checking the environment (uv)"), "{events:?}");
    let started = phases.iter().position(|p| *p == "starting").unwrap_or_else(|| panic!("no starting: {events:?}"));
    assert!(
        phases[..started]
            .iter()
            .all(|p| p.starts_with("checking the environment") || p.starts_with("installing via uv")),
        "only uv's phases before the start: {events:?}"
    );
    assert!(!phases[started..].iter().any(|p| p.starts_with("installing")), "no install after the start: {events:?}");
    assert!(
        events.iter().any(|e| e["phase"] == "loading" && e["progress"].is_u64()),
        "loading progress is reported: {events:?}"
    );
    let ready = events.iter().find(|e| e["state"] == "ready" && e["url"].is_string()).expect("a ready line");
    assert_eq!(ready["progress"], 5, "{ready}");

    // The uv version is recorded and shown by `status`.
    let status = uv.tether(state.path()).args(["status", "--name", "uvx-down", "--json"]).output().expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("\"tool_version\":\"uv"), "status shows uv's version: {text}");
    assert!(text.contains("uvx:"), "status shows the uvx fingerprint: {text}");
    // The backend's own pid is Python's (uv runs it as a child), the guard's apart.
    let shown: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("status --json ({e}): {text}"));
    let shown = if shown.is_array() { shown[0].clone() } else { shown };
    let pid = shown["pid"].as_u64().and_then(|p| u32::try_from(p).ok()).unwrap_or_else(|| panic!("no pid: {shown}"));
    let command = tether::core::procs::command_of(pid).unwrap_or_default();
    let program = command.split(' ').next().and_then(|p| p.rsplit('/').next()).unwrap_or_default();
    assert!(program.starts_with("python"), "status's pid {pid} is Python's, not uv's: {command}");
    assert!(shown["guard_pid"].as_u64().is_some_and(|g| g != u64::from(pid)), "the guard apart: {shown}");

    // uv, the Python under it and the Python grandchild (which carries no marker: it is
    // found by the pid the backend printed) all run now…
    let running = support::processes_with(&marker);
    assert!(running.iter().any(|(_, c)| c.contains("bin/python")), "Python runs under uv: {running:?}");
    assert!(running.iter().any(|(_, c)| c.contains("uv")), "uv runs: {running:?}");
    let logs = uv.tether(state.path()).args(["logs", "--name", "uvx-down"]).output().expect("logs");
    let logs = String::from_utf8_lossy(&logs.stdout).into_owned();
    let grandchild: u32 = logs
        .lines()
        .find_map(|l| l.split("demo-backend grandchild pid ").nth(1))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no grandchild pid in the log: {logs}"));
    let grandchild = tether::core::procs::ProcessIdentity::of(grandchild).expect("the grandchild runs");

    // …and after `down`, none of them does.
    let down = uv.tether(state.path()).args(["down", "--name", "uvx-down"]).output().expect("down");
    assert_eq!(down.status.code(), Some(0), "down failed: {}", stderr(&down));
    let left = support::processes_with(&marker);
    assert!(left.is_empty(), "processes of the package survived `down`: {left:?}");
    assert!(!grandchild.is_alive(), "Python's own child {} survived `down`", grandchild.pid);
}

#[test]
fn an_unresolvable_package_fails_at_once_with_uvs_reason() {
    let Some(uv) = support::Uv::find() else { return };
    let state = tempfile::tempdir().expect("tempdir");
    let out = uv
        .tether(state.path())
        .args(["up", "--runner", "uvx", "--package", "no-such-pkg-xyz==1.0", "--offline", "--json"])
        .args(["--port", "auto", "--timeout", "10m", "--python"])
        .arg(&uv.python)
        .arg("--uvx")
        .arg(&uv.uvx)
        .output()
        .expect("tether runs");
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let failed = failure(&out);
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("uv could not install no-such-pkg-xyz==1.0"), "uv's failure, not a timeout: {failed}");
    let tail: Vec<&str> = failed["stderr_tail"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let tail = tail.join("\n");
    assert!(tail.contains("no-such-pkg-xyz"), "uv's message names the package: {tail}");
    assert!(tail.contains("offline") || tail.contains("cache"), "uv says why (offline, not cached): {tail}");

    // Without --json the same reason reaches the person at the terminal.
    let out = uv
        .tether(state.path())
        .args(["up", "--runner", "uvx", "--package", "no-such-pkg-xyz==1.0", "--offline", "--port", "auto"])
        .arg("--python")
        .arg(&uv.python)
        .output()
        .expect("tether runs");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error: uv could not install no-such-pkg-xyz==1.0"), "{err}");
    assert!(err.contains("  | ") && err.contains("no-such-pkg-xyz"), "uv's words are shown: {err}");
}

#[test]
fn a_missing_uvx_is_a_clear_error_and_nothing_starts() {
    let state = tempfile::tempdir().expect("tempdir");
    let empty = tempfile::tempdir().expect("tempdir");
    let marker = support::marker("nouvx");
    let out = support::tether(state.path())
        .env("PATH", empty.path())
        .args(["up", "--runner", "uvx", "--package", "some-backend==1.0", "--port", "auto", "--", &marker])
        .output()
        .expect("tether runs");
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("uvx was not found on PATH"), "{err}");
    assert!(err.contains("pip install uv"), "it says how to get uv: {err}");
    assert!(support::processes_with(&marker).is_empty(), "something was started");
    let status = support::tether(state.path()).args(["status", "--json"]).output().expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(!text.contains("some-backend"), "nothing is recorded: {text}");

    // An explicit --uvx that is not there says so.
    let out = support::tether(state.path())
        .args(["up", "--runner", "uvx", "--package", "some-backend==1.0", "--port", "auto"])
        .args(["--uvx", "/no/such/dir/uvx"])
        .output()
        .expect("tether runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/no/such/dir/uvx` does not exist"), "{}", stderr(&out));
}

#[test]
fn a_garbage_package_is_a_usage_error() {
    let state = tempfile::tempdir().expect("tempdir");
    for (package, why) in [("==1.0", "no package name"), ("pkg>=1", "PKG==VER"), ("pkg==", "no version")] {
        let out = support::tether(state.path())
            .args(["up", "--package", package, "--port", "auto"])
            .output()
            .expect("tether runs");
        assert_eq!(out.status.code(), Some(2), "{package}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{package}: {}", stderr(&out));
    }
}

#[test]
fn the_pinned_version_is_checked_unless_disabled() {
    let Some(uv) = support::Uv::find() else { return };
    let fixture = support::fixture(&uv);
    let state = tempfile::tempdir().expect("tempdir");
    let _cleanup = support::DownOnDrop { state: state.path(), name: "uvx-version" };
    let up = |extra: &[&str]| {
        uv.tether(state.path())
            .args(["up", "--name", "uvx-version", "--port", "auto", "--detach", "--json"])
            .args(uv.up_flags(&fixture.wheel))
            .args(extra)
            .args(["--", "--port", "{port}", "--report-version", "9.9.9"])
            .output()
            .expect("tether runs")
    };
    let out = up(&[]);
    assert_eq!(out.status.code(), Some(1), "a skewed backend is refused: {}", stderr(&out));
    let failed = failure(&out);
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("9.9.9") && error.contains(support::FIXTURE_VERSION), "{failed}");

    let out = up(&["--no-version-check"]);
    assert_eq!(out.status.code(), Some(0), "--no-version-check accepts it: {}", stderr(&out));
    let down = uv.tether(state.path()).args(["down", "--name", "uvx-version"]).output().expect("down");
    assert_eq!(down.status.code(), Some(0), "{}", stderr(&down));
}

/// The owner SIGKILLed: the guard takes uv, the Python under it and Python's own child down.
#[test]
fn sigkill_of_the_owner_leaves_no_python() {
    use std::io::{BufRead, BufReader};
    use tether::core::procs::{self, ProcessIdentity};

    let Some(uv) = support::Uv::find() else { return };
    let fixture = support::fixture(&uv);
    let state = tempfile::tempdir().expect("tempdir");
    let log = std::fs::File::create(state.path().join("stderr.log")).expect("a log file");
    let marker = support::marker("sigkill");
    let mut child = uv
        .tether(state.path())
        .args(["up", "--name", "uvx-kill", "--port", "auto", "--json"])
        .args(uv.up_flags(&fixture.wheel))
        .args(["--", "--port", "{port}", "--spawn-grandchild", "--echo-args", "--", &marker])
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("tether runs");
    let mut reaper = support::Reaper::default();
    let stdout = child.stdout.take().expect("piped stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("\"state\":\"ready\"") && l.contains("\"url\""));
    // Everything below tether now: the guard, uv, Python, Python's child.
    let below: Vec<ProcessIdentity> =
        procs::descendants(child.id()).into_iter().filter_map(ProcessIdentity::of).collect();
    reaper.0.extend(below.iter().copied());
    let log = std::fs::read_to_string(state.path().join("stderr.log")).unwrap_or_default();
    assert!(ready.is_some(), "tether did not get ready:\n{log}");
    let commands: Vec<String> = below.iter().filter_map(|id| procs::info(id.pid)).map(|i| i.command).collect();
    assert!(
        commands.iter().any(|c| c.contains("bin/python") && c.contains("--grandchild-idle")),
        "Python's own child runs below tether: {commands:#?}"
    );
    assert!(commands.iter().any(|c| c.contains(&marker) && c.contains("bin/python")), "{commands:#?}");

    child.kill().expect("SIGKILL tether");
    let _ = child.wait();
    let left = support::wait_gone(&below, std::time::Duration::from_secs(15));
    assert!(left.is_empty(), "alive after tether was SIGKILLed: {left:?}");
    assert!(support::processes_with(&marker).is_empty(), "a process of the package survived");
}
