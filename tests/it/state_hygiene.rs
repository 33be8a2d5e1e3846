//! The state directory under hostile state (issue 11): trusted only the way ssh trusts
//! `~/.ssh`. Each test runs the real binary with its own state directory.
//!
//! A directory others could tamper with (world- or group-writable, or a symlink) is
//! refused with exit 2 before anything starts; a record owned by another user is never
//! trusted; a symlink planted where a detached instance's log goes is never written
//! through (nor read through by `tether logs`), and a log file is mode 0600.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use tether::core::procs::ProcessIdentity;

const EXE: &str = env!("CARGO_BIN_EXE_tether");

/// `tether ARGS` with `state` as TETHER_STATE_DIR, in a scratch working directory.
fn tether(state: &Path, args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().expect("cwd");
    Command::new(EXE)
        .args(args)
        .env("TETHER_STATE_DIR", state)
        .env_remove("TETHER_LOG")
        .env_remove("RUST_LOG")
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .output()
        .expect("run tether")
}

use tether_testkit::dump;

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// A detached demo backend: `up --detach --name NAME --port auto -- tether demo-backend`.
fn up_detached(state: &Path, name: &str) -> Output {
    tether(state, &["up", "--detach", "--name", name, "--port", "auto", "--", EXE, "demo-backend", "--port", "{port}"])
}

/// Runs `tether down --name NAME` when dropped, so a failed assertion leaves nothing.
struct DownOnDrop<'a>(&'a Path, &'a str);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        let _ = tether(self.0, &["down", "--name", self.1]);
    }
}

/// `up`, `status` and `down` in `state` exit 2 saying `needle`, and nothing is started.
fn refused(state: &Path, needle: &str) {
    // Were it not refused, `up` would start an instance: never leave it behind.
    let _down = DownOnDrop(state, "x");
    for args in [&["up", "--detach", "--name", "x", "--port", "auto"][..], &["status"], &["down", "--name", "x"]] {
        let out = tether(state, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", dump(&out));
        assert!(stderr.contains(needle), "{args:?}: expected `{needle}`: {}", dump(&out));
        assert!(stderr.contains("TETHER_STATE_DIR"), "{args:?}: no way out named: {}", dump(&out));
    }
    assert!(entries(state).is_empty(), "something was started in {}: {:?}", state.display(), entries(state));
}

#[test]
fn world_writable_state_dir_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("shared");
    std::fs::create_dir(&state).expect("mkdir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    let needle = format!(
        "state directory {0} is writable by other users (mode 1777); use a directory only you can write: `chmod 700 {0}`",
        state.display()
    );
    refused(&state, &needle);
}

#[test]
fn group_writable_state_dir_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("group");
    std::fs::create_dir(&state).expect("mkdir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o770)).expect("chmod 770");
    refused(&state, "is writable by other users (mode 0770)");
}

#[test]
fn symlinked_state_dir_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    refused(&link, &format!("state directory {} is a symbolic link", link.display()));
    assert!(entries(&real).is_empty(), "something was started through the link: {:?}", entries(&real));
}

/// A process this test started (its own group), SIGKILLed and reaped when dropped.
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_record_of_another_user_is_ignored_by_status_and_down() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: planting a record of another user needs root (chown)");
        return;
    }
    let state = tempfile::tempdir().expect("state dir");
    let mut sleeper = Sleeper(
        Command::new("sleep")
            .arg("300")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sleep"),
    );
    let pid = sleeper.0.id();
    let me = ProcessIdentity::of(pid).expect("the sleeper's identity");
    // A plausible detached record naming our own sleeper, owned by `nobody`.
    let record = serde_json::json!({
        "name": "planted", "runner": "native", "fingerprint": "x", "detached": true,
        "owner": null, "leader": me, "pgid": pid, "backend_pid": pid, "container_id": null,
        "host": "127.0.0.1", "port": 1, "url": "http://127.0.0.1:1", "started_at_unix_ms": 0,
        "tool_version": null, "log_file": null, "grace_ms": 100, "restarts": 0,
    });
    let path = state.path().join("planted.json");
    std::fs::write(&path, serde_json::to_vec(&record).expect("json")).expect("write the record");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown to nobody");

    let status = tether(state.path(), &["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", dump(&status));
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("no instances recorded"), "the foreign record was listed: {}", dump(&status));
    assert!(!stdout.contains("planted"), "{}", dump(&status));
    assert!(String::from_utf8_lossy(&status.stderr).contains("owned by uid 65534"), "{}", dump(&status));

    let status = tether(state.path(), &["status", "--name", "planted"]);
    assert_eq!(status.status.code(), Some(1), "{}", dump(&status));

    let down = tether(state.path(), &["down", "--name", "planted"]);
    assert_eq!(down.status.code(), Some(1), "{}", dump(&down));
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("no instance named 'planted' is recorded"),
        "{}",
        dump(&down)
    );
    assert!(
        matches!(sleeper.0.try_wait(), Ok(None)) && me.is_alive(),
        "the process named by another user's record was signalled: {}",
        dump(&down)
    );
}

#[test]
fn a_planted_log_symlink_is_never_followed() {
    let state = tempfile::tempdir().expect("state dir");
    let outside = tempfile::tempdir().expect("outside");
    let target = outside.path().join("target");
    std::fs::write(&target, "").expect("write the target");
    std::os::unix::fs::symlink(&target, state.path().join("x.log")).expect("plant the link");

    let up = up_detached(state.path(), "x");
    let _down = DownOnDrop(state.path(), "x");
    assert_eq!(up.status.code(), Some(0), "{}", dump(&up));
    let logs = tether(state.path(), &["logs", "--name", "x"]);
    assert_eq!(logs.status.code(), Some(1), "`logs` read through the link: {}", dump(&logs));
    assert!(String::from_utf8_lossy(&logs.stderr).contains("symbolic link"), "{}", dump(&logs));
    let down = tether(state.path(), &["down", "--name", "x"]);
    assert_eq!(down.status.code(), Some(0), "{}", dump(&down));
    assert_eq!(std::fs::read(&target).expect("read the target"), b"", "the backend's output went through the link");
    let link = std::fs::symlink_metadata(state.path().join("x.log")).expect("the link");
    assert!(link.file_type().is_symlink(), "the link was replaced by a file");
}

#[test]
fn a_detached_log_is_private() {
    let state = tempfile::tempdir().expect("state dir");
    let up = up_detached(state.path(), "y");
    let _down = DownOnDrop(state.path(), "y");
    assert_eq!(up.status.code(), Some(0), "{}", dump(&up));
    let meta = std::fs::symlink_metadata(state.path().join("y.log")).expect("the log file");
    assert!(meta.is_file(), "{meta:?}");
    assert_eq!(meta.mode() & 0o777, 0o600, "the log is readable by others");
    let logs = tether(state.path(), &["logs", "--name", "y"]);
    assert_eq!(logs.status.code(), Some(0), "{}", dump(&logs));
    assert!(String::from_utf8_lossy(&logs.stdout).contains("demo-backend listening"), "{}", dump(&logs));
    let down = tether(state.path(), &["down", "--name", "y"]);
    assert_eq!(down.status.code(), Some(0), "{}", dump(&down));
}
