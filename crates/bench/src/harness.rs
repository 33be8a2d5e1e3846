//! What every measurement shares: the `tether` binary (demo backend and guard) and the MCP
//! test backend (item 10), launching a demo backend through the library, the backend's
//! `/stats`, clocks and `/proc` readings.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tether_core::probe::HttpProbe;
use tether_core::runner::Tethering;
use tether_core::{Instance, LaunchOptions, LaunchSpec, Runner, launch};
use tether_runner_native::NativeRunner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{BenchResult, Context, fail};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Build the release `tether` binary and the small guard executable `tether-guard` beside
/// it (unless `skip_build`) and return the path of `tether`. The guard used is whichever
/// [`tether_core::guard::guard_program`] picks (see [`Harness::guard_exe`]).
pub fn tether_binary(skip_build: bool) -> BenchResult<PathBuf> {
    release_binary(skip_build, "tether", &["build", "--release", "--bin", "tether", "--bin", "tether-guard"])
}

/// Build the release MCP test backend `tether-mcp-test-backend` of `tether-testkit`
/// (unless `skip_build`) and return its path (item 10).
pub fn mcp_backend_binary(skip_build: bool) -> BenchResult<PathBuf> {
    let build = ["build", "--release", "-p", "tether-testkit", "--bin", "tether-mcp-test-backend"];
    release_binary(skip_build, "tether-mcp-test-backend", &build)
}

/// `cargo BUILD…` in the workspace (unless `skip_build`), then `target/release/NAME`.
fn release_binary(skip_build: bool, name: &str, build: &[&str]) -> BenchResult<PathBuf> {
    let root = workspace_root();
    let command = format!("cargo {}", build.join(" "));
    if !skip_build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("building the release {name} binary ({command})…");
        let status = Command::new(cargo)
            .args(build)
            .current_dir(&root)
            .status()
            .ctx(format!("cannot run cargo to build the {name} binary"))?;
        if !status.success() {
            return fail(format!("`{command}` failed ({status})"));
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let exe = target.join("release").join(name);
    if !exe.is_file() {
        return fail(format!("{} not found; build it with `{command}`", exe.display()));
    }
    exe.canonicalize().ctx(format!("cannot resolve {}", exe.display()))
}

/// The backend's `GET /stats` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Stats {
    /// Probes of `/health` received so far.
    pub health_requests: u64,
    /// The instant loading completed (wall clock), once it has.
    pub ready_at_unix_nanos: Option<u128>,
    /// The instant the backend started (wall clock, before it listened).
    pub started_at_unix_nanos: u128,
    /// How long the backend took to write its `--log-lines`, once done.
    #[serde(default)]
    pub log_write_nanos: Option<u64>,
}

/// `GET /stats` on `127.0.0.1:port` (the demo answers with `Connection: close`).
pub async fn stats(port: u16) -> BenchResult<Stats> {
    let mut s =
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ctx(format!("cannot connect to port {port}"))?;
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .ctx("cannot send GET /stats")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.ctx("cannot read the /stats answer")?;
    let text = String::from_utf8_lossy(&raw);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).ctx("the /stats answer has no body")?;
    serde_json::from_str(body).ctx(format!("bad /stats body {body:?}"))
}

/// Now, in nanoseconds since the Unix epoch (the clock the demo backend reports in).
pub fn unix_nanos_now() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Milliseconds between two wall-clock readings in nanoseconds (negative if `b` is before `a`).
pub fn ms_between(a: u128, b: u128) -> f64 {
    (b as f64 - a as f64) / 1e6
}

/// Milliseconds of a duration.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The first child of `pid` (`/proc/PID/task/PID/children`), e.g. the backend under a guard.
pub fn first_child(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Readings of `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct ProcStatus {
    /// Peak resident set, KiB.
    pub vm_hwm_kb: u64,
    /// Resident set now, KiB.
    pub vm_rss_kb: u64,
    /// Threads.
    pub threads: u64,
    /// Resident anonymous memory (the process's own heap and stacks), KiB.
    pub rss_anon_kb: u64,
    /// Resident file-backed memory (code pages of the binary and libraries, shared), KiB.
    pub rss_file_kb: u64,
}

/// Read `/proc/<pid>/status` (`pid` = "self" for this process).
pub fn proc_status(pid: &str) -> BenchResult<ProcStatus> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).ctx(format!("cannot read {path}"))?;
    let field = |name: &str| -> BenchResult<u64> {
        let line = text.lines().find(|l| l.starts_with(name)).ctx(format!("{path} has no {name}"))?;
        let value = line[name.len()..].split_whitespace().next().ctx(format!("{path}: empty {name}"))?;
        value.parse().ctx(format!("{path}: bad {name} {value:?}"))
    };
    Ok(ProcStatus {
        vm_hwm_kb: field("VmHWM:")?,
        vm_rss_kb: field("VmRSS:")?,
        threads: field("Threads:")?,
        rss_anon_kb: field("RssAnon:")?,
        rss_file_kb: field("RssFile:")?,
    })
}

/// The outcome of one [`Harness::launch`] with its timings.
pub struct Launched {
    /// What `launch` returned.
    pub result: tether_core::Result<Instance>,
    /// The port the backend was told to use.
    pub port: u16,
    /// Just before `launch` was called.
    pub called: Instant,
    /// Just after it returned.
    pub returned: Instant,
    /// Just after it returned, on the wall clock (ns since the epoch).
    pub returned_unix_nanos: u128,
}

impl Launched {
    /// The ready instance (once); an error naming the launch failure otherwise.
    pub fn take_instance(&mut self) -> BenchResult<Instance> {
        let result = std::mem::replace(&mut self.result, Err(tether_core::Error::config("already taken")));
        result.map_err(|e| {
            let tail = e.stderr_tail().join(" | ");
            crate::error::BenchError(format!("launch failed: {} (last output: {tail})", e.chain()))
        })
    }

    /// `launch`'s wall time.
    pub fn wall(&self) -> Duration {
        self.returned - self.called
    }
}

/// Launches demo backends (`tether demo-backend`) through the library API, under the guard.
#[derive(Debug, Clone)]
pub struct Harness {
    /// The release `tether` binary: the demo backend and the guard.
    pub exe: PathBuf,
    runner: Arc<dyn Runner>,
}

static NAMES: AtomicUsize = AtomicUsize::new(0);

impl Harness {
    /// A harness using the `tether` binary at `exe`.
    pub fn new(exe: PathBuf) -> Harness {
        let runner = Arc::new(NativeRunner::new(exe.to_string_lossy()).with_prefix_args(["demo-backend"]));
        Harness { exe, runner }
    }

    /// The executable each backend's guard runs as: `tether-guard` beside `tether` when it
    /// is there, `tether` itself otherwise ([`tether_core::guard::guard_program`]).
    pub fn guard_exe(&self) -> PathBuf {
        tether_core::guard::guard_program(&self.exe)
    }

    /// The guard executable's file name, for the notes of the rows it is part of.
    pub fn guard_name(&self) -> String {
        self.guard_exe().file_name().map_or_else(|| "?".into(), |n| n.to_string_lossy().into_owned())
    }

    /// A spec for a demo backend with `flags` on a free port, under the guard.
    pub fn spec(&self, flags: &[&str], grace: Duration) -> BenchResult<LaunchSpec> {
        let port = tether_core::port::free_port("127.0.0.1").ctx("cannot find a free port")?;
        let name = format!("bench-{}-{}", std::process::id(), NAMES.fetch_add(1, Ordering::Relaxed));
        let args = ["--port", "{port}"].iter().chain(flags).map(|s| s.to_string()).collect::<Vec<_>>();
        Ok(LaunchSpec::new(name, port)
            .with_args(args)
            .with_tethering(Tethering::Guard { exe: self.exe.clone() })
            .with_grace(grace))
    }

    /// `launch` the demo backend `spec` describes (claude-skills probe on `/health`), timed.
    pub async fn launch(&self, spec: LaunchSpec) -> Launched {
        self.launch_with(spec, LaunchOptions::default()).await
    }

    /// [`Harness::launch`] with options (e.g. an `on_started` hook).
    pub async fn launch_with(&self, spec: LaunchSpec, opts: LaunchOptions) -> Launched {
        let port = spec.port;
        let probe = Arc::new(HttpProbe::claude_skills("/health"));
        let called = Instant::now();
        let result = launch(Arc::clone(&self.runner), spec, probe, opts).await;
        let returned = Instant::now();
        let returned_unix_nanos = unix_nanos_now();
        Launched { result, port, called, returned, returned_unix_nanos }
    }

    /// `launch` and require it to be ready.
    pub async fn launch_ready(&self, flags: &[&str], grace: Duration) -> BenchResult<(Instance, Launched)> {
        let spec = self.spec(flags, grace)?;
        self.launch_ready_with(spec, LaunchOptions::default()).await
    }

    /// [`Harness::launch_with`] and require it to be ready.
    pub async fn launch_ready_with(&self, spec: LaunchSpec, opts: LaunchOptions) -> BenchResult<(Instance, Launched)> {
        let mut l = self.launch_with(spec, opts).await;
        let instance = l.take_instance()?;
        Ok((instance, l))
    }
}
