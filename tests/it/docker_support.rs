//! What the Docker tests share: an engine check that fails in CI and skips locally,
//! the test image built without a registry, and a guard that removes what a test
//! started even when it fails.
//!
//! The image is `docker import` of a root filesystem assembled here: the `tether`
//! binary under test plus the shared libraries `ldd` lists (and the dynamic loader)
//! at their paths, with `ENTRYPOINT ["/tether", "demo-backend"]`. Its tag carries a
//! hash of the binary, so it is built once per binary, whichever test comes first
//! (a file lock keeps concurrent test processes from building it twice).
#![allow(dead_code)]

use std::fs::File;
use std::hash::Hasher;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The `tether` binary under test.
pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tether"))
}

fn docker(args: &[&str]) -> std::io::Result<Output> {
    Command::new("docker").args(args).stdin(Stdio::null()).output()
}

/// Whether a Docker engine answers. When it does not: in CI a panic (a missing
/// engine there is a failure, never a skip); locally a skip message and `false`.
pub fn engine_available() -> bool {
    let ok = docker(&["version", "--format", "{{.Server.APIVersion}}"]).is_ok_and(|o| o.status.success());
    if !ok {
        tether_testkit::missing_tool("a Docker engine (the `docker` CLI and a reachable daemon)");
    }
    ok
}

fn hash_file(path: &Path) -> String {
    let mut f = File::open(path).expect("open the tether binary");
    let mut h = std::hash::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read the tether binary");
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
    }
    format!("{:016x}", h.finish())
}

/// The shared libraries and loader `ldd` lists for `exe`, as absolute paths.
fn libraries(exe: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(exe).output().expect("run ldd");
    assert!(out.status.success(), "ldd failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`.
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn build_image(tag: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("rootfs");
    let copy = |from: &Path, to_rel: &Path| {
        let to = root.join(to_rel);
        std::fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
        // fs::copy follows symlinks: the file lands at the path the loader asks for.
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    };
    copy(&exe(), Path::new("tether"));
    for lib in libraries(&exe()) {
        copy(&lib, lib.strip_prefix("/").expect("absolute"));
    }
    std::fs::create_dir_all(root.join("tmp")).expect("mkdir tmp");
    let tar = dir.path().join("rootfs.tar");
    let status = Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").status().expect("run tar");
    assert!(status.success(), "tar failed");
    let tar = tar.to_str().expect("a UTF-8 temp path");
    let out = docker(&["import", "--change", r#"ENTRYPOINT ["/tether", "demo-backend"]"#, tar, tag])
        .expect("run docker import");
    assert!(out.status.success(), "docker import failed: {}", String::from_utf8_lossy(&out.stderr));
    // Images of earlier builds are dead weight (~100 MB each): drop them, best effort
    // (one still used by a running container stays).
    if let Ok(out) = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO]) {
        for old in String::from_utf8_lossy(&out.stdout).lines().filter(|t| *t != tag) {
            let _ = docker(&["rmi", old]);
        }
    }
}

/// The repository of the test images.
const IMAGE_REPO: &str = "tether-test-demo";

/// The test image's tag, building it on first use (once per binary, across processes).
pub fn image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let tag = format!("{IMAGE_REPO}:{}", hash_file(&exe()));
            let present = || docker(&["image", "inspect", &tag]).is_ok_and(|o| o.status.success());
            if !present() {
                let lock_path = std::env::temp_dir().join("tether-test-docker-image.lock");
                let lock = File::create(&lock_path).expect("create the image lock file");
                lock.lock().expect("lock the image lock file");
                if !present() {
                    build_image(&tag);
                }
            }
            tag
        })
        .clone()
}

/// Ids of the containers labelled as tether's instance `name` (running or not).
pub fn containers_of(name: &str) -> Vec<String> {
    let label = format!("label=tether.instance={name}");
    let out = docker(&["ps", "-a", "-q", "--no-trunc", "--filter", "label=tether=1", "--filter", &label])
        .expect("run docker ps");
    assert!(out.status.success(), "docker ps failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// The output of `docker inspect --format FORMAT id`.
pub fn inspect(id: &str, format: &str) -> String {
    let out = docker(&["inspect", "--format", format, id]).expect("run docker inspect");
    assert!(out.status.success(), "docker inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the engine knows a container `id` (running or not); panics when the
/// engine cannot be asked.
pub fn container_exists(id: &str) -> bool {
    let out = docker(&["container", "inspect", "--format", "{{.Id}}", id]).expect("run docker container inspect");
    if out.status.success() {
        return true;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No such"), "docker container inspect failed: {stderr}");
    false
}

/// A unique instance name for one test.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// Removes every container of the instance `name` when dropped — also when the test panics.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in containers_of(&self.0) {
            let _ = docker(&["rm", "-f", "-v", &id]);
        }
    }
}

/// `tether ARGS` with its own state directory (and this process's `DOCKER_HOST`).
pub fn tether(state: &Path, args: &[&str]) -> Output {
    Command::new(exe())
        .args(args)
        .env("TETHER_STATE_DIR", state)
        .env_remove("TETHER_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run tether")
}

/// `tether up --runner docker --image IMG --name NAME EXTRA -- --port {port} --host {host} FLAGS`.
pub fn up_args<'a>(image: &'a str, name: &'a str, extra: &[&'a str], flags: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["up", "--runner", "docker", "--image", image, "--name", name, "--pull", "never"];
    v.extend_from_slice(extra);
    v.extend_from_slice(&["--", "--port", "{port}", "--host", "{host}"]);
    v.extend_from_slice(flags);
    v
}

/// The final JSON object on stdout whose `state` is `state` (not a progress event,
/// which carries a `phase`).
pub fn json_state(out: &[u8], state: &str) -> Option<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["state"] == state && v.get("phase").is_none())
}

/// A spawned `tether up --json` (stdout piped): its `ready` or `failed` line, read as it
/// comes; the rest of its stdout is drained on a thread, so its later writes never fail
/// on a closed pipe. `None` when stdout ended without either.
pub fn final_line(child: &mut std::process::Child) -> Option<serde_json::Value> {
    use std::io::{BufRead, BufReader};
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .find(|v| (v["state"] == "ready" || v["state"] == "failed") && v.get("phase").is_none());
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    line
}

/// SIGKILLs, when dropped, the processes it holds that are still those very processes
/// (a guard left behind by a failed test).
pub struct KillOnDrop(pub Vec<tether::core::procs::ProcessIdentity>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for id in self.0.iter().filter(|id| id.is_alive()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(id.pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}
