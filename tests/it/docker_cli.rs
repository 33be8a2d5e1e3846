//! `tether up --runner docker` end to end, on the real engine: nothing is left
//! behind, a SIGKILLed owner's container is removed by its guard (and the guard goes
//! too, as it does after a normal stop), a dead owner's container whose guard died
//! with it is swept (from any state directory), a live container of another state
//! directory is never swept, the port is published on loopback only, a container
//! backend owns its endpoint only while it runs, and an unreachable engine is a
//! clear error.
// Linux only: it finds the processes it starts through /proc.
#![cfg(target_os = "linux")]

use crate::docker_support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use docker_support::{
    Cleanup, KillOnDrop, containers_of, engine_available, exe, final_line, image, inspect, json_state, tether,
    unique_name, up_args,
};
use serde_json::Value;
use tether::core::procs::{self, ProcessIdentity};

/// The bound for what a test waits for (a container or a process to go). Generous:
/// only a hung tether reaches it.
const WAIT: Duration = Duration::from_secs(120);

/// Polls (bounded by `WAIT`) until `cond` holds; returns whether it did.
fn wait_until(cond: impl FnMut() -> bool) -> bool {
    tether_testkit::wait_until(WAIT, cond)
}

/// The container guard `owner` (a foreground `tether up`) started for container `id`:
/// its child running `__tether-container-guard … --container ID`.
fn container_guard(owner: u32, id: &str) -> Option<ProcessIdentity> {
    procs::descendants(owner)
        .into_iter()
        .filter(|p| procs::parent_of(*p) == Some(owner))
        .filter(|p| {
            procs::info(*p).is_some_and(|i| {
                i.command.contains(tether::docker::CONTAINER_GUARD_ARG)
                    && i.command.contains(&format!("--container {id}"))
            })
        })
        .find_map(ProcessIdentity::of)
}

/// Live processes anywhere whose command line is a container guard of container `id`.
fn guards_of(id: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| ProcessIdentity::of(*pid).is_some())
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let argv: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
            argv.contains(&tether::docker::CONTAINER_GUARD_ARG.as_bytes()) && argv.contains(&id.as_bytes())
        })
        .collect()
}

/// A child killed and reaped when dropped, also when the test panics.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn up_detach_then_down_leaves_no_container() {
    if !engine_available() {
        return;
    }
    let (image, name, state) = (image(), unique_name("dk-detach"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    assert_eq!(containers_of(&name).len(), 0, "before");
    let out = tether(state.path(), &up_args(&image, &name, &["--port", "auto", "--detach", "--json"], &[]));
    assert_ok(&out, "up --detach");
    let ready = json_state(&out.stdout, "ready").expect("a ready line");
    let id = ready["container_id"].as_str().expect("the container id is reported").to_string();
    assert_eq!(containers_of(&name), vec![id.clone()], "one container while up");

    let status = tether(state.path(), &["status", "--name", &name, "--json"]);
    assert_ok(&status, "status");
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["container_id"].as_str(), Some(id.as_str()), "status shows the container");

    assert_ok(&tether(state.path(), &["down", "--name", &name]), "down");
    assert_eq!(containers_of(&name).len(), 0, "after down: no container, stopped or not");
}

/// `tether ARGS` in the foreground with its own state directory, once it reported
/// its final state (`ready` or `failed`): the child, and that line. The rest of its
/// stdout is drained on a thread, so its writes never fail on a closed pipe.
fn spawn_foreground(state: &Path, args: &[&str]) -> (Child, Option<Value>) {
    let mut child = Command::new(exe())
        .args(args)
        .env("TETHER_STATE_DIR", state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tether up");
    let ready = final_line(&mut child);
    (child, ready)
}

/// A foreground `up` is SIGKILLed; the next `up` of the same name on the same port —
/// with the same state directory (its record names the container) or another one
/// (only the container's owner labels tell it is stale) — sweeps the container.
fn a_dead_owners_container_is_swept(second_state_is_another: bool) {
    if !engine_available() {
        return;
    }
    let (image, name, state) = (image(), unique_name("dk-owner"), tempfile::tempdir().expect("tempdir"));
    let other = tempfile::tempdir().expect("tempdir");
    let second_state = if second_state_is_another { other.path() } else { state.path() };
    let _cleanup = Cleanup(name.clone());
    let port = tether::core::port::free_port("127.0.0.1").expect("a free port").to_string();
    let (mut owner, ready) = spawn_foreground(state.path(), &up_args(&image, &name, &["--port", &port, "--json"], &[]));
    let first = ready.as_ref().and_then(|v| v["container_id"].as_str()).map(str::to_string);
    // The whole tree dies (`kill -9` of the guard too): only the next start can clean up.
    if let Some(guard) = first.as_deref().and_then(|id| container_guard(owner.id(), id)) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(guard.pid as i32), nix::sys::signal::Signal::SIGKILL);
    }
    owner.kill().expect("SIGKILL the owner");
    owner.wait().expect("reap the owner");
    let first = first.unwrap_or_else(|| panic!("the foreground up became ready: {ready:?}"));
    // Still there — unless a concurrent test's start already swept it (any start
    // sweeps containers whose owner is gone): never another one.
    let left = containers_of(&name);
    assert!(left.is_empty() || left == vec![first.clone()], "the dead owner's container, or nothing: {left:?}");

    // Same name, same port: the stale container must go, not block the port.
    let out = tether(second_state, &up_args(&image, &name, &["--port", &port, "--detach", "--json"], &[]));
    assert_ok(&out, "the second up");
    let second = json_state(&out.stdout, "ready").expect("ready")["container_id"].as_str().expect("id").to_string();
    assert_ne!(first, second);
    assert_eq!(containers_of(&name), vec![second], "exactly one container: the new one");

    assert_ok(&tether(second_state, &["down", "--name", &name]), "down");
    assert_eq!(containers_of(&name).len(), 0, "none after down");
}

#[test]
fn a_dead_owners_container_is_swept_by_the_next_up() {
    a_dead_owners_container_is_swept(false);
}

#[test]
fn a_dead_owners_container_is_swept_by_the_next_up_of_another_state_dir() {
    a_dead_owners_container_is_swept(true);
}

/// A foreground `up` is SIGKILLed: its container guard stops and removes the
/// container — no later `up` needed — and then ends too.
#[test]
fn a_sigkilled_owners_container_is_removed_by_its_guard() {
    if !engine_available() {
        return;
    }
    let (image, name, state) = (image(), unique_name("dk-guard"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    let args = up_args(&image, &name, &["--port", "auto", "--grace", "2s", "--json"], &[]);
    let (owner, ready) = spawn_foreground(state.path(), &args);
    let mut owner = Reap(owner);
    let ready = ready.filter(|v| v["state"] == "ready").expect("the foreground up becomes ready");
    let id = ready["container_id"].as_str().expect("the container id").to_string();
    let guard = container_guard(owner.0.id(), &id).unwrap_or_else(|| {
        panic!("no container guard below tether {}: {:?}", owner.0.id(), procs::descendants(owner.0.id()))
    });
    let _kill = KillOnDrop(vec![guard]);
    assert_eq!(containers_of(&name), vec![id.clone()], "one container while up");

    owner.0.kill().expect("SIGKILL the owner");
    owner.0.wait().expect("reap the owner");
    assert!(
        wait_until(|| containers_of(&name).is_empty()),
        "the container outlived its owner: {:?}",
        containers_of(&name)
    );
    assert!(wait_until(|| !guard.is_alive()), "the guard (pid {}) outlived its work", guard.pid);
    assert_eq!(guards_of(&id), Vec::<u32>::new(), "no container guard is left");
}

/// A foreground `up` stopped normally (`down` asks its owner): the container is removed
/// and its guard dismissed — nothing is left, not even the guard.
#[test]
fn a_stopped_foreground_container_leaves_no_guard() {
    if !engine_available() {
        return;
    }
    let (image, name, state) = (image(), unique_name("dk-guard-stop"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    let (owner, ready) = spawn_foreground(state.path(), &up_args(&image, &name, &["--port", "auto", "--json"], &[]));
    let mut owner = Reap(owner);
    let ready = ready.filter(|v| v["state"] == "ready").expect("the foreground up becomes ready");
    let id = ready["container_id"].as_str().expect("the container id").to_string();
    let guard = container_guard(owner.0.id(), &id).expect("a container guard below tether");
    let _kill = KillOnDrop(vec![guard]);

    assert_ok(&tether(state.path(), &["down", "--name", &name]), "down");
    let status = owner.0.wait().expect("the owner ends");
    assert!(status.success(), "the owner stopped cleanly: {status:?}");
    assert_eq!(containers_of(&name).len(), 0, "the container is gone with its owner");
    assert!(!guard.is_alive(), "the owner dismissed its guard before it ended");
    assert_eq!(guards_of(&id), Vec::<u32>::new(), "no container guard is left");
}

/// B's `up` of instance `name`, on an automatic port and on `port` (the one `id`
/// publishes), fails naming the live container `id` (`owner` says whose), and
/// leaves it running: it is never swept.
fn assert_refused_and_untouched(b: &Path, image: &str, name: &str, id: &str, port: &str, owner: &str) {
    for port in ["auto", port] {
        let out = tether(b, &up_args(image, name, &["--port", port, "--detach"], &[]));
        assert_eq!(out.status.code(), Some(1), "B's up (--port {port}) must fail: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let short = &id[..12];
        for needle in [&format!("instance '{name}' is already running in container {short}"), owner, "docker rm -f"] {
            assert!(stderr.contains(needle), "(--port {port}) `{needle}` missing from: {stderr}");
        }
        assert_eq!(containers_of(name), vec![id.to_string()], "(--port {port}) A's container alone, still there");
        assert_eq!(inspect(id, "{{.State.Running}}"), "true", "(--port {port}) A's container still runs");
    }
}

#[test]
fn a_live_detached_container_of_another_state_dir_is_never_swept() {
    if !engine_available() {
        return;
    }
    let (image, name) = (image(), unique_name("dk-same"));
    let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    let out = tether(a.path(), &up_args(&image, &name, &["--port", "auto", "--detach", "--json"], &[]));
    assert_ok(&out, "A's up --detach");
    let ready = json_state(&out.stdout, "ready").expect("a ready line");
    let id = ready["container_id"].as_str().expect("the container id").to_string();
    let port = ready["port"].as_u64().expect("the port").to_string();

    // B has no record of it (as if A's record were lost): a detached container of
    // this name is an error telling how to remove it, not a stale one.
    assert_refused_and_untouched(b.path(), &image, &name, &id, &port, "(detached)");

    let status = tether(a.path(), &["status", "--name", &name, "--json"]);
    assert_ok(&status, "A's status");
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["container_id"].as_str(), Some(id.as_str()), "A still records it: {status}");
    assert_eq!(status["state"], "ready", "A's instance still answers: {status}");

    assert_ok(&tether(a.path(), &["down", "--name", &name]), "A's down");
    assert_eq!(containers_of(&name).len(), 0, "A's down removed it");
}

#[test]
fn a_live_foreground_container_of_another_state_dir_is_never_swept() {
    if !engine_available() {
        return;
    }
    let (image, name) = (image(), unique_name("dk-same-fg"));
    let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    let (owner, ready) = spawn_foreground(a.path(), &up_args(&image, &name, &["--port", "auto", "--json"], &[]));
    let mut owner = Reap(owner);
    let ready = ready.filter(|v| v["state"] == "ready").expect("A's foreground up becomes ready");
    let id = ready["container_id"].as_str().expect("the container id").to_string();
    let port = ready["port"].as_u64().expect("the port").to_string();

    assert_refused_and_untouched(b.path(), &image, &name, &id, &port, &format!("(owner pid {})", owner.0.id()));

    // A's down asks A's owner to stop, which removes its container.
    assert_ok(&tether(a.path(), &["down", "--name", &name]), "A's down");
    owner.0.wait().expect("A's owner ends");
    assert_eq!(containers_of(&name).len(), 0, "A's container is gone with its owner");
}

/// A container backend owns its endpoint while its container runs, and not once it
/// was killed behind its back or stopped and removed.
#[tokio::test]
async fn a_container_backend_owns_its_endpoint_only_while_it_runs() {
    use tether::Runner;
    if !engine_available() {
        return;
    }
    let name = unique_name("dk-owns");
    let _cleanup = Cleanup(name.clone());
    let port = tether::core::port::free_port("127.0.0.1").expect("a free port");
    let runner = tether::DockerRunner::new(image()).with_pull(tether::PullPolicy::Never);
    let spec = tether::LaunchSpec::new(name.clone(), port).with_args(["--port", "{port}", "--host", "0.0.0.0"]);
    let backend = runner.start(&spec).await.expect("the container starts");
    let id = match backend.identity() {
        tether::core::Identity::Kept { id } => id,
        other => panic!("a container backend: {other:?}"),
    };
    assert_eq!(backend.endpoint().port, port, "the endpoint is the published host port");
    assert!(backend.owns_endpoint().await, "its running container serves the endpoint");

    let killed = Command::new("docker").args(["kill", &id]).stdin(Stdio::null()).output().expect("run docker kill");
    assert!(killed.status.success(), "docker kill: {}", String::from_utf8_lossy(&killed.stderr));
    backend.wait().await;
    assert_eq!(containers_of(&name), vec![id.clone()], "killed, not removed");
    assert!(!backend.owns_endpoint().await, "an exited container serves nothing");

    backend.stop(std::time::Duration::from_secs(5)).await.expect("stop removes it");
    assert_eq!(containers_of(&name).len(), 0, "removed");
    assert!(!backend.owns_endpoint().await, "a removed container serves nothing");
}

#[test]
fn the_port_is_published_on_loopback_only() {
    if !engine_available() {
        return;
    }
    let (image, name, state) = (image(), unique_name("dk-loopback"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    let out = tether(state.path(), &up_args(&image, &name, &["--port", "auto", "--detach", "--json"], &[]));
    assert_ok(&out, "up --detach");
    let ready = json_state(&out.stdout, "ready").expect("ready");
    let id = ready["container_id"].as_str().expect("id");
    let port = ready["port"].as_u64().expect("port").to_string();
    for format in ["{{json .HostConfig.PortBindings}}", "{{json .NetworkSettings.Ports}}"] {
        let bindings: Value = serde_json::from_str(&inspect(id, format)).expect("inspect JSON");
        let all: Vec<&Value> =
            bindings.as_object().expect("a port map").values().flat_map(|v| v.as_array()).flatten().collect();
        assert!(!all.is_empty(), "{format}: no binding in {bindings}");
        for b in all {
            assert_eq!(b["HostIp"], "127.0.0.1", "{format}: {bindings}");
            assert_eq!(b["HostPort"].as_str(), Some(port.as_str()), "{format}: {bindings}");
        }
    }
    assert_ok(&tether(state.path(), &["down", "--name", &name]), "down");
}

#[test]
fn an_unreachable_engine_is_a_clear_error() {
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new(exe())
        .args(["up", "--runner", "docker", "--image", "any", "--name", "dk-nohost", "--", "x"])
        .env("TETHER_STATE_DIR", state.path())
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .stdin(Stdio::null())
        .output()
        .expect("run tether");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "cannot reach the Docker engine",
        "DOCKER_HOST=unix:///nonexistent.sock",
        "/nonexistent.sock",
        "start the Docker daemon",
    ] {
        assert!(stderr.contains(needle), "`{needle}` missing from: {stderr}");
    }
}

#[test]
fn pull_never_with_a_missing_image_is_a_clear_error() {
    if !engine_available() {
        return;
    }
    let state = tempfile::tempdir().expect("tempdir");
    let image = "tether-test-no-such-image:never";
    let out = tether(state.path(), &up_args(image, "dk-never", &[], &[]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--pull never") && stderr.contains(image), "{stderr}");
}

#[test]
fn a_live_instance_on_the_port_is_never_stolen_from() {
    if !engine_available() {
        return;
    }
    let (image, state) = (image(), tempfile::tempdir().expect("tempdir"));
    let (first, second) = (unique_name("dk-holder"), unique_name("dk-thief"));
    let _cleanup = (Cleanup(first.clone()), Cleanup(second.clone()));
    let port = tether::core::port::free_port("127.0.0.1").expect("a free port").to_string();
    assert_ok(&tether(state.path(), &up_args(&image, &first, &["--port", &port, "--detach"], &[])), "the first up");
    let out = tether(state.path(), &up_args(&image, &second, &["--port", &port, "--detach"], &[]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("tether instance '{first}'")), "the holder is named: {stderr}");
    assert_eq!(containers_of(&first).len(), 1, "the holder still runs");
    assert_eq!(containers_of(&second).len(), 0, "nothing of the refused start is left");
    assert_ok(&tether(state.path(), &["down", "--name", &first]), "down");
}
