//! Forged state records of the docker runner never make tether stop or remove a
//! container that is not its own (a record is a claim, not proof: a container is ours
//! only if its labels say so), a container record is never forgotten while its
//! container may still run, and a shared container's guard does not give up on a
//! failing engine.
//!
//! Like tests/it/forged_records.rs, every test here that plants a record runs inside
//! `unshare --pid --fork --mount-proc`: the outer test starts this same binary there,
//! running one `#[ignore]`d inner test that refuses to run unless it is pid 1 of a
//! fresh namespace. The containers are the engine's, outside the namespace; each one
//! a test creates is removed by a guard, also when the test fails.
// Linux only: its forged records are planted in a pid namespace of its own (unshare).
#![cfg(target_os = "linux")]

use crate::docker_support;

use std::path::Path;
use std::process::{Command, Stdio};

use docker_support::{container_exists, engine_available, exe, image, tether, unique_name};
use serde_json::{Value, json};
use tether_testkit::dump;
use tether_testkit::forged::{assert_namespaced, plant_record};
use tether_testkit::in_pid_namespace;

/// A container this test started itself (with the given labels) and removes when
/// dropped — by its id, so nothing else is ever touched.
struct Stranger(String);

impl Stranger {
    fn run(labels: &[(&str, &str)]) -> Stranger {
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--init"]);
        for (k, v) in labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        let out = cmd.arg(image()).args(["--port", "8000"]).stdin(Stdio::null()).output().expect("run docker run");
        assert!(out.status.success(), "docker run failed: {}", String::from_utf8_lossy(&out.stderr));
        Stranger(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn running(&self) -> bool {
        container_exists(&self.0) && docker_support::inspect(&self.0, "{{.State.Running}}") == "true"
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", "-v", &self.0]).stdin(Stdio::null()).output();
    }
}

#[test]
fn a_record_naming_a_container_not_ours_never_stops_it() {
    if !engine_available() {
        return;
    }
    // Built here, outside the namespace, so the inner test finds it ready.
    image();
    in_pid_namespace!(inner_a_record_naming_a_container_not_ours);
}

#[test]
#[ignore = "runs only as pid 1 of its own pid namespace; a_record_naming_a_container_not_ours_never_stops_it starts it"]
fn inner_a_record_naming_a_container_not_ours() {
    assert_namespaced();
    let state = tempfile::tempdir().expect("state dir");
    let name = unique_name("forged-ctr");
    let other = unique_name("other-ctr");
    let strangers = [
        ("an unlabelled container", Stranger::run(&[])),
        ("another instance's container", Stranger::run(&[("tether", "1"), ("tether.instance", &other)])),
        ("a container labelled only with the instance", Stranger::run(&[("tether.instance", &name)])),
    ];
    for (what, stranger) in &strangers {
        assert!(stranger.running(), "{what} runs");
        // `down` of the record: refused, nothing stopped, the false record forgotten.
        plant_record(state.path(), &name, "docker", json!({"container_id": stranger.0}));
        let out = tether(state.path(), &["down", "--name", &name]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", dump(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("refusing") && stderr.contains("not ours"), "{what}: {}", dump(&out));
        assert!(stranger.running(), "{what} was stopped by `down` of a forged record: {}", dump(&out));
        assert!(!state.path().join(format!("{name}.json")).exists(), "a record proven false is removed");

        // The sweep of the record by `up` of its name: forgotten, nothing stopped.
        plant_record(state.path(), &name, "docker", json!({"container_id": stranger.0}));
        let demo = exe().to_string_lossy().into_owned();
        let up = [
            "up",
            "--detach",
            "--name",
            &name,
            "--port",
            "auto",
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
        let out = tether(state.path(), &up);
        assert_eq!(out.status.code(), Some(0), "{what}: {}", dump(&out));
        assert!(stranger.running(), "{what} was stopped by the sweep of a forged record: {}", dump(&out));
        let down = tether(state.path(), &["down", "--name", &name]);
        assert_eq!(down.status.code(), Some(0), "our own backend must stop: {}", dump(&down));
        assert!(stranger.running(), "{what} was stopped by `down` of our own backend");
    }

    // A container labelled as this instance's is ours: `down` stops and removes it.
    let ours = Stranger::run(&[("tether", "1"), ("tether.instance", &name), ("tether.detached", "1")]);
    plant_record(state.path(), &name, "docker", json!({"container_id": ours.0}));
    let out = tether(state.path(), &["down", "--name", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", dump(&out));
    assert!(!container_exists(&ours.0), "our own container is removed by `down`");
}

/// A fake engine on a unix socket: `/version` answers, everything else is HTTP 500 —
/// or 404 (no such container) once a file `gone` exists beside the socket.
struct FailingEngine {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl FailingEngine {
    fn start(dir: &Path) -> FailingEngine {
        let socket = dir.join("engine.sock");
        let script = r#"
import http.server, json, os, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def address_string(self): return "local"
    def answer(self):
        if self.path.split("?")[0].endswith("/version"):
            code, body = 200, {"ApiVersion": "1.41", "MinAPIVersion": "1.12", "Version": "20.10.0"}
        elif os.path.exists(os.path.join(os.path.dirname(sys.argv[1]), "gone")):
            code, body = 404, {"message": "No such container"}
        else:
            code, body = 500, {"message": "the fake engine fails"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = do_POST = do_DELETE = do_HEAD = answer
class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
s = S(sys.argv[1], H)
print("ready", flush=True)
s.serve_forever()
"#;
        use std::io::BufRead;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        std::io::BufReader::new(out).read_line(&mut line).expect("the fake engine starts");
        assert_eq!(line.trim(), "ready", "the fake engine did not start");
        FailingEngine { child, socket }
    }
}

impl Drop for FailingEngine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_container_record_is_kept_when_its_container_cannot_be_stopped() {
    in_pid_namespace!(inner_a_container_record_is_kept);
}

#[test]
#[ignore = "runs only as pid 1 of its own pid namespace; a_container_record_is_kept_when_its_container_cannot_be_stopped starts it"]
fn inner_a_container_record_is_kept() {
    assert_namespaced();
    let state = tempfile::tempdir().expect("state dir");
    let engine = FailingEngine::start(state.path());
    let name = "failing";
    let host = format!("unix://{}", engine.socket.display());
    plant_record(state.path(), name, "docker", json!({"container_id": "0123456789ab", "engine": host}));
    let demo = exe().to_string_lossy().into_owned();
    let up = [
        "up",
        "--detach",
        "--name",
        name,
        "--port",
        "auto",
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
    let out = tether(state.path(), &up);
    assert_ne!(out.status.code(), Some(0), "nothing starts in place of a container that may run: {}", dump(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fake engine fails"), "{}", dump(&out));
    let record = std::fs::read(state.path().join(format!("{name}.json"))).expect("the record is kept");
    let record: Value = serde_json::from_slice(&record).expect("a record");
    assert_eq!(record["container_id"], "0123456789ab", "the record still names the container: {}", dump(&out));
}

/// The lease-mode guard of a shared container tries again, with a backoff, while the
/// engine fails, and ends once the container is gone (it used to give up at the first
/// failure, leaving the container running forever). No record is planted: the guard
/// runs against a fake engine, with a lease file nobody holds.
#[test]
fn the_shared_containers_guard_retries_a_failing_engine_until_the_container_is_gone() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("dir");
    let engine = FailingEngine::start(dir.path());
    let host = format!("unix://{}", engine.socket.display());
    let lease = dir.path().join("shared.lease");
    let mut guard = Command::new(exe())
        .arg("__tether-container-guard")
        .arg("--lease")
        .arg(&lease)
        .args(["--linger-ms", "0", "--grace-ms", "100", "--container", "0123456789ab", "--docker-host", &host])
        .env("TETHER_INSTANCE", "shared")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the container guard");
    let mut lines = std::io::BufReader::new(guard.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    while seen.iter().filter(|l: &&String| l.contains("retrying")).count() < 2 {
        match lines.next() {
            Some(Ok(line)) => seen.push(line),
            _ => {
                let status = guard.wait().expect("wait for the guard");
                panic!("the guard gave up on a failing engine ({status}): {seen:#?}");
            }
        }
    }
    assert!(seen.iter().any(|l| l.contains("fake engine fails")), "{seen:#?}");
    // The container goes: the guard ends, successfully.
    std::fs::write(dir.path().join("gone"), b"").expect("switch the fake engine");
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let _ = tx.send(rest);
    });
    let rest = rx.recv_timeout(std::time::Duration::from_secs(120));
    if rest.is_err() {
        let _ = guard.kill();
    }
    let status = guard.wait().expect("wait for the guard");
    let _ = waiter.join();
    let rest = rest.expect("the guard ends once the container is gone");
    assert!(status.success(), "{status}: {seen:#?} {rest:#?}");
}
