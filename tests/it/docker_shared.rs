//! One container for many fronts, on the real engine: `tether up --runner docker
//! --share LINGER` fronts of the same name attach to one detached container by
//! leases; its lease-mode container guard (a detached `__tether-container-guard
//! --lease …`) outlives the front that started it, a SIGKILLed front's lease goes
//! with it, and once the last front is gone the guard removes the container after
//! the linger and forgets the record. A front that attaches during the linger keeps
//! the container; `down` removes it, and the guard then ends by itself.
// Linux only: it finds processes through /proc and runs a sweep in a pid namespace of its own.
#![cfg(target_os = "linux")]

use crate::docker_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use docker_support::{
    Cleanup, KillOnDrop, container_exists, containers_of, engine_available, exe, final_line, image, inspect, tether,
    unique_name,
};
use serde_json::Value;
use tether::core::procs::ProcessIdentity;

/// The bound for what a test waits for. Generous: only a hung tether reaches it.
const WAIT: Duration = Duration::from_secs(120);

fn wait_until(cond: impl FnMut() -> bool) -> bool {
    tether_testkit::wait_until(WAIT, cond)
}

/// A `tether up --runner docker --share LINGER` front, SIGKILLed and reaped on drop.
struct Front {
    child: Child,
    ready: Value,
}

impl Front {
    fn start(state: &Path, image: &str, name: &str, linger: &str) -> Front {
        let mut child = Command::new(exe())
            .args(["up", "--runner", "docker", "--image", image, "--name", name, "--pull", "never"])
            .args(["--port", "auto", "--share", linger, "--json", "--", "--port", "{port}", "--host", "{host}"])
            .env("TETHER_STATE_DIR", state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run tether up --share");
        let ready = final_line(&mut child).unwrap_or(Value::Null);
        let front = Front { child, ready };
        assert_eq!(front.ready["state"], "ready", "a front did not get ready: {}", front.ready);
        front
    }

    fn container_id(&self) -> String {
        self.ready["container_id"].as_str().expect("the container id is reported").to_string()
    }

    /// SIGTERM: the front gives its lease back and exits 0.
    fn end(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM the front");
        assert_eq!(self.child.wait().expect("wait for the front").code(), Some(0), "the front's exit");
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status(state: &Path, name: &str) -> Value {
    let out = tether(state, &["status", "--name", name, "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Live lease-mode container guards of container `id`: processes whose argv holds
/// the guard argument, `--lease` and the id.
fn lease_guards_of(id: &str) -> Vec<ProcessIdentity> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let argv: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
            argv.contains(&tether::docker::CONTAINER_GUARD_ARG.as_bytes())
                && argv.contains(&b"--lease".as_slice())
                && argv.contains(&id.as_bytes())
        })
        .filter_map(ProcessIdentity::of)
        .collect()
}

fn running(id: &str) -> bool {
    inspect(id, "{{.State.Running}}") == "true"
}

#[test]
fn shared_fronts_run_one_container_that_goes_after_the_last() {
    if !engine_available() {
        return;
    }
    let (image, name, state) = (image(), unique_name("dk-share"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    let a = Front::start(state.path(), &image, &name, "300ms");
    let id = a.container_id();
    let guards = lease_guards_of(&id);
    let _kill_guards = KillOnDrop(guards.clone());
    assert_eq!(guards.len(), 1, "one lease-mode guard for the shared container");
    let b = Front::start(state.path(), &image, &name, "300ms");
    assert_eq!(a.ready["reused"], false, "{}", a.ready);
    assert_eq!(b.ready["reused"], true, "the second front attaches: {}", b.ready);
    assert_eq!(b.container_id(), id, "one container: {}", b.ready);
    assert_eq!(containers_of(&name), vec![id.clone()], "one container for two fronts");
    assert_eq!(status(state.path(), &name)["attached"], 2, "{}", status(state.path(), &name));

    // The front that started it is killed outright: its lease goes, the container and
    // its guard (in a session of its own) stay.
    drop(a);
    assert!(
        wait_until(|| status(state.path(), &name)["attached"] == 1),
        "the killed front's lease is still counted: {}",
        status(state.path(), &name)
    );
    assert!(running(&id), "the container stopped while a front still holds it");
    assert!(guards[0].is_alive(), "the container guard died with the front that started it");
    assert!(state.path().join(format!("{name}.json")).exists(), "the record went while a front holds it");

    // The last front ends: after the linger the guard removes the container, forgets
    // the record and ends.
    b.end();
    assert!(wait_until(|| containers_of(&name).is_empty()), "the container outlived every front and the linger");
    assert!(
        wait_until(|| !state.path().join(format!("{name}.json")).exists()),
        "the record of a shared container that went is left behind"
    );
    assert!(wait_until(|| !guards[0].is_alive()), "the container guard outlived its container");
    println!("reliability: 2 fronts sharing one container (one SIGKILLed) | 1 container | 0 left after the linger");
}

#[test]
fn a_front_attaching_during_the_linger_keeps_the_container_and_down_ends_its_guard() {
    if !engine_available() {
        return;
    }
    let (image, name, state) = (image(), unique_name("dk-linger"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    // A linger no test run reaches: the container is kept by it, never by timing.
    let a = Front::start(state.path(), &image, &name, "1h");
    let id = a.container_id();
    let guards = lease_guards_of(&id);
    let _kill_guards = KillOnDrop(guards.clone());
    assert_eq!(guards.len(), 1, "one lease-mode guard");
    a.end();
    assert_eq!(status(state.path(), &name)["attached"], 0, "{}", status(state.path(), &name));

    // Lingering: a new front attaches to the same container.
    let b = Front::start(state.path(), &image, &name, "1h");
    assert_eq!((b.ready["reused"].as_bool(), b.container_id()), (Some(true), id.clone()), "{}", b.ready);
    assert_eq!(status(state.path(), &name)["attached"], 1);
    b.end();
    assert!(running(&id), "the container went during its linger");

    // `down` removes it; the guard sees it gone and ends without touching anything.
    let down = tether(state.path(), &["down", "--name", &name]);
    assert!(down.status.success(), "down failed: {}", String::from_utf8_lossy(&down.stderr));
    assert!(containers_of(&name).is_empty(), "down left the container");
    assert!(wait_until(|| !guards[0].is_alive()), "the guard outlived the container `down` removed");
    assert!(!state.path().join(format!("{name}.json")).exists(), "down left the record");
}

/// The lease guard the instance's record names (`lease_guard`), if any.
fn recorded_lease_guard(state: &Path, name: &str) -> Option<ProcessIdentity> {
    let text = std::fs::read_to_string(state.join(format!("{name}.json"))).ok()?;
    let record: Value = serde_json::from_str(&text).ok()?;
    serde_json::from_value(record.get("lease_guard")?.clone()).ok()
}

/// A shared container whose lease-mode guard was killed (SIGKILL, the OOM killer) has
/// nobody left to remove it: the next front does not reuse it but replaces it (the
/// old container is removed) with a fresh one and a live guard, which `status` shows.
#[test]
fn a_shared_container_whose_lease_guard_died_is_replaced_not_reused() {
    if !engine_available() {
        return;
    }
    let (image, name, state) = (image(), unique_name("dk-orphan"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    // A linger no test run reaches: only the guard's death can end this container.
    let a = Front::start(state.path(), &image, &name, "1h");
    let id = a.container_id();
    let old_guard = recorded_lease_guard(state.path(), &name).expect("the record names the lease guard");
    assert_eq!(lease_guards_of(&id), vec![old_guard], "the recorded lease guard is the container's");
    let _kill_old = KillOnDrop(vec![old_guard]);
    assert_eq!(status(state.path(), &name)["guard_pid"], old_guard.pid, "{}", status(state.path(), &name));

    // The guard dies (this test's own descendant, verified by pid + start time above).
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old_guard.pid as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL the lease guard");
    assert!(wait_until(|| !old_guard.is_alive()), "the lease guard survived SIGKILL");
    a.end();
    assert!(running(&id), "the unguarded container still runs");

    // The next front replaces it: a new container, the old one removed, a live guard.
    let b = Front::start(state.path(), &image, &name, "1h");
    let new_id = b.container_id();
    assert_eq!(b.ready["reused"], false, "an unguarded shared container was reused: {}", b.ready);
    assert_ne!(new_id, id, "{}", b.ready);
    assert!(!container_exists(&id), "the unguarded container was left behind");
    assert_eq!(containers_of(&name), vec![new_id.clone()], "one container for the instance");
    let new_guard = recorded_lease_guard(state.path(), &name).expect("the new record names its lease guard");
    let _kill_new = KillOnDrop(vec![new_guard]);
    assert!(new_guard.is_alive() && new_guard != old_guard, "no live new lease guard: {new_guard:?}");
    assert_eq!(lease_guards_of(&new_id), vec![new_guard], "the recorded lease guard is the new container's");
    assert_eq!(status(state.path(), &name)["guard_pid"], new_guard.pid, "{}", status(state.path(), &name));
    b.end();

    let down = tether(state.path(), &["down", "--name", &name]);
    assert!(down.status.success(), "down failed: {}", tether_testkit::dump(&down));
    assert!(containers_of(&name).is_empty(), "down left the container");
    assert!(wait_until(|| !new_guard.is_alive()), "the guard outlived the container `down` removed");
}

/// An `mcp-proxy --runner docker` as a host starts it: stdin a pipe kept open.
/// Killed and reaped on drop.
struct Proxy(Child);

impl Proxy {
    fn start(state: &Path, image: &str, name: &str) -> Proxy {
        let child = Command::new(exe())
            .args(["mcp-proxy", "--runner", "docker", "--image", image, "--pull", "never", "--name", name])
            .args(["--preset", "claude-skills", "--", "--port", "{port}", "--host", "{host}"])
            .env("TETHER_STATE_DIR", state)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run tether mcp-proxy");
        Proxy(child)
    }

    /// Close stdin (the host went away): the proxy gives its lease back and exits 0.
    fn end(mut self) {
        drop(self.0.stdin.take());
        assert_eq!(self.0.wait().expect("wait for the proxy").code(), Some(0), "the proxy's exit");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mcp-proxy --runner docker` shares by default, as for a process backend: two
/// proxies of one configuration, one container, two leases; it lingers after them
/// (default 60 s) until `down`. (The demo image has no MCP endpoint: only the sharing
/// is looked at here; the MCP side is `tests/it/mcp_proxy.rs`'s.)
#[test]
fn mcp_proxies_share_one_container_by_default() {
    if !engine_available() {
        return;
    }
    let (image, name, state) = (image(), unique_name("dk-mcp"), tempfile::tempdir().expect("tempdir"));
    let _cleanup = Cleanup(name.clone());
    let first = Proxy::start(state.path(), &image, &name);
    let second = Proxy::start(state.path(), &image, &name);
    assert!(
        wait_until(|| status(state.path(), &name)["attached"] == 2),
        "two proxies, two leases on one instance: {}",
        status(state.path(), &name)
    );
    let ids = containers_of(&name);
    assert_eq!(ids.len(), 1, "one container for both proxies: {ids:?}");
    let guards = lease_guards_of(&ids[0]);
    let _kill_guards = KillOnDrop(guards.clone());
    assert_eq!(guards.len(), 1, "one lease-mode guard");
    assert_eq!(status(state.path(), &name)["detached"], true);
    first.end();
    second.end();
    assert!(running(&ids[0]), "the container lingers after the last proxy (default 60s)");
    let down = tether(state.path(), &["down", "--name", &name]);
    assert!(down.status.success(), "down failed: {}", String::from_utf8_lossy(&down.stderr));
    assert!(containers_of(&name).is_empty(), "down left the container");
    assert!(wait_until(|| !guards[0].is_alive()), "the guard outlived the container `down` removed");
}

/// Whether `unshare --pid --fork --mount-proc` can run here: in CI a panic when not
/// (a missing tool or no root is a failure there), locally a skip message and `false`.
fn pid_namespaces_available() -> bool {
    let ok = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        tether_testkit::missing_tool("`unshare --pid --fork --mount-proc` (util-linux, run as root)");
    }
    ok
}

/// A foreground `tether up --runner docker` (its owner alive), SIGKILLed and reaped
/// on drop; its container guard then removes the container.
struct Foreground {
    child: Child,
    ready: Value,
}

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One engine shared by jobs in separate pid namespaces on one host (CI runners):
/// they share the boot id, but a pid means nothing across namespaces. A `tether up`
/// sweeping in a pid namespace of its own — where the outside owner's pid is not
/// there, so a boot-id-only check took that owner for dead — leaves the outside
/// owner's container alone.
#[test]
fn a_sweep_in_another_pid_namespace_leaves_an_outside_owners_container_alone() {
    if !engine_available() || !pid_namespaces_available() {
        return;
    }
    let image = image();
    let (outside, inside) = (unique_name("dk-ns-out"), unique_name("dk-ns-in"));
    let (_c1, _c2) = (Cleanup(outside.clone()), Cleanup(inside.clone()));
    let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let mut child = Command::new(exe())
        .args(["up", "--runner", "docker", "--image", &image, "--name", &outside, "--pull", "never"])
        .args(["--port", "auto", "--json", "--", "--port", "{port}", "--host", "{host}"])
        .env("TETHER_STATE_DIR", a.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run tether up");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .find(|v| (v["state"] == "ready" || v["state"] == "failed") && v.get("phase").is_none())
        .unwrap_or(Value::Null);
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    let owner = Foreground { child, ready };
    assert_eq!(owner.ready["state"], "ready", "the outside up did not get ready: {}", owner.ready);
    let id = owner.ready["container_id"].as_str().expect("the container id").to_string();
    let ns = std::fs::metadata("/proc/self/ns/pid").map(|m| std::os::unix::fs::MetadataExt::ino(&m)).expect("ns");
    assert_eq!(inspect(&id, "{{index .Config.Labels \"tether.owner.pid_ns\"}}"), ns.to_string(), "labelled");

    // Inside a new pid namespace the owner's pid is not there: by pid alone it is dead.
    let proc_entry = format!("/proc/{}", owner.child.id());
    let seen = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "test", "-e", &proc_entry])
        .status()
        .expect("run test in a pid namespace");
    assert_eq!(seen.code(), Some(1), "the outside owner is invisible in the new pid namespace");

    // A start there sweeps tether's stale containers (any name) before its own.
    let up = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(exe())
        .args(["up", "--runner", "docker", "--image", &image, "--name", &inside, "--pull", "never"])
        .args(["--port", "auto", "--detach", "--json", "--", "--port", "{port}", "--host", "{host}"])
        .env("TETHER_STATE_DIR", b.path())
        .stdin(Stdio::null())
        .output()
        .expect("run tether up in a pid namespace");
    assert!(up.status.success(), "the up in a pid namespace failed: {}", tether_testkit::dump(&up));
    assert_eq!(containers_of(&inside).len(), 1, "it started its own container");
    assert_eq!(containers_of(&outside), vec![id.clone()], "the outside owner's container was left alone");
    assert!(running(&id), "and still runs");

    let down = tether(b.path(), &["down", "--name", &inside]);
    assert!(down.status.success(), "down failed: {}", tether_testkit::dump(&down));
    drop(owner);
    assert!(wait_until(|| containers_of(&outside).is_empty()), "the outside owner's guard removed its container");
    println!(
        "reliability: container sweep from another pid namespace (same boot) | 1 | 0 live owners' containers removed"
    );
}
