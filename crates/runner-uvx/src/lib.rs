//! # tether-runner-uvx
//!
//! Runs a Python backend package through real uv:
//! `uvx [--offline] [--python VER] [--index-url URL] --from PKG==VER ENTRY ARGS…`, as argv —
//! never a shell string — with `{port}` and `{host}` substituted in ARGS and
//! `PYTHONUNBUFFERED=1` so the backend's output arrives line by line.
//!
//! ## Theory of operation
//! [`UvxRunner::check`] finds `uvx` (an explicit path, else `PATH`) and runs
//! `uvx --version` before anything starts: a missing uv is a clear error saying how to
//! get it, never a readiness timeout. [`UvxRunner::start`] spawns uvx through
//! [`tether_core::process::spawn`], so it runs in its own process group under tether's
//! guard. uv does not `exec` Python: the backend is uv's *child*, the guard's grandchild.
//! That is why the group stop and the guard stop the whole group and every descendant,
//! not the direct child alone.
//!
//! Installing is apart from starting: [`Runner::prepare`] runs `uvx … --from PKG python -c
//! pass` (the same environment, so uv's cache then serves the start) under the same guard,
//! bounded by its own deadline ([`UvxRunner::with_install_timeout`], default 15 minutes),
//! showing `checking the environment (uv)` and then uv's own steps (`installing via uv:
//! downloading torch (846.9MiB)`). The readiness timeout then counts start → ready only,
//! and a warm start shows `starting` (Python importing the backend), then `loading`. A
//! package uv cannot resolve, a Python it cannot find or a failed download ends the start
//! there, at once, with uv's own last lines: such a failure is final, never retried.
//!
//! A pinned package (`PKG==VER`, or a wheel, whose file name carries its version) lets
//! the front crate check the `version` the backend reports in `/health`; an unpinned
//! `PKG` works but logs a warning, since the front and the backend can then drift apart.
//!
//! ```no_run
//! # async fn demo() -> tether_core::Result<()> {
//! use std::sync::Arc;
//! use tether_core::{launch, LaunchOptions, LaunchSpec, probe::HttpProbe};
//! use tether_runner_uvx::UvxRunner;
//! let runner = Arc::new(UvxRunner::new("claude-skills-mcp-backend==1.0.6")?);
//! let spec = LaunchSpec::new("search", 8765).with_args(["--port", "{port}"]);
//! let probe = HttpProbe::claude_skills("/health").with_expected_version("1.0.6");
//! let backend = launch(runner, spec, Arc::new(probe), LaunchOptions::default()).await?;
//! backend.stop().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod error;
mod package;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tether_core::process::{self, ProcessCommand};
use tether_core::runner::Tethering;
use tether_core::{Error, LaunchSpec, Progress, Result, Runner, RunnerInfo, RunningBackend};
use tracing::instrument;

pub use error::UvxError;
pub use package::PackageSpec;

/// The phase shown while uv checks the backend's environment, before it says it installs
/// anything ([`UvxRunner`]'s `prepare`): all of a warm start's.
pub const CHECK_PHASE: &str = "checking the environment (uv)";

/// The phase shown while uv installs the backend's environment, followed by uv's own
/// step: `installing via uv: downloading torch (846.9MiB)`.
pub const INSTALL_PHASE: &str = "installing via uv";

/// The phase shown from the start until the backend's port first answers: the
/// environment is installed by then, Python is importing the backend.
pub const START_PHASE: &str = "starting";

/// How long installing the environment may take by default: a first install of a
/// heavy backend downloads gigabytes (claude-skills-mcp-backend: ~5.5 GB of wheels).
pub const DEFAULT_INSTALL_TIMEOUT: Duration = Duration::from_secs(900);

/// How many of uv's last lines an install failure carries.
const INSTALL_TAIL: usize = 12;

/// How long `uvx --version` may take before uvx is declared broken.
const VERSION_TIMEOUT: Duration = Duration::from_secs(15);

/// A Python package run with `uvx`.
#[derive(Debug, Clone)]
pub struct UvxRunner {
    package: PackageSpec,
    entry: Option<String>,
    python: Option<String>,
    index_url: Option<String>,
    offline: bool,
    uvx: Option<PathBuf>,
    env: Vec<(String, String)>,
    with: Vec<String>,
    constraints: Vec<PathBuf>,
    install_timeout: Duration,
}

impl UvxRunner {
    /// Run `package`: `PKG`, `PKG==VER`, `PKG[extras]==VER`, or a path to a `.whl` file.
    /// A value that does not parse is an [`Error::Config`](tether_core::Error) saying why.
    pub fn new(package: &str) -> Result<Self> {
        Ok(UvxRunner {
            package: PackageSpec::parse(package)?,
            entry: None,
            python: None,
            index_url: None,
            offline: false,
            uvx: None,
            env: Vec::new(),
            with: Vec::new(),
            constraints: Vec::new(),
            install_timeout: DEFAULT_INSTALL_TIMEOUT,
        })
    }

    /// The console script to run (default: the package name).
    pub fn with_entry(mut self, entry: impl Into<String>) -> Self {
        self.entry = Some(entry.into());
        self
    }

    /// The Python to use: a version (`3.12`) or an interpreter's path (uvx's `--python`).
    pub fn with_python(mut self, python: impl Into<String>) -> Self {
        self.python = Some(python.into());
        self
    }

    /// The package index to use instead of the default (uvx's `--index-url`).
    pub fn with_index_url(mut self, url: impl Into<String>) -> Self {
        self.index_url = Some(url.into());
        self
    }

    /// Use only what uv has cached: no network (uvx's `--offline`).
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Use this `uvx` (a path, or a name looked up on `PATH`) instead of `uvx` from `PATH`.
    pub fn with_uvx(mut self, uvx: impl Into<PathBuf>) -> Self {
        self.uvx = Some(uvx.into());
        self
    }

    /// An environment variable for uv and the backend (e.g. `UV_CACHE_DIR`), on top of the spec's.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Another requirement installed beside the package (uvx's `--with`, repeatable), e.g.
    /// `mcp<2`: a version range here also constrains the package's own dependency.
    pub fn with_requirement(mut self, requirement: impl Into<String>) -> Self {
        self.with.push(requirement.into());
        self
    }

    /// A constraints file (uvx's `--constraints`, repeatable): `mcp<2` in it bounds what uv
    /// resolves without installing anything more.
    pub fn with_constraints(mut self, file: impl Into<PathBuf>) -> Self {
        self.constraints.push(file.into());
        self
    }

    /// How long installing the environment (`prepare`) may take; default
    /// [`DEFAULT_INSTALL_TIMEOUT`]. The readiness timeout starts after it.
    pub fn with_install_timeout(mut self, timeout: Duration) -> Self {
        self.install_timeout = timeout;
        self
    }

    /// The package.
    pub fn package(&self) -> &PackageSpec {
        &self.package
    }

    /// The console script run: the one given, else the package name.
    pub fn entry(&self) -> &str {
        self.entry.as_deref().unwrap_or(self.package.name())
    }

    /// `uvx`, resolved to an executable path.
    pub fn resolve_uvx(&self) -> Result<PathBuf> {
        let found = match &self.uvx {
            Some(p) if p.components().count() > 1 || p.is_absolute() => {
                which::which(p).map_err(|_| UvxError::BadPath { path: p.clone() })
            }
            Some(name) => which::which(name).map_err(|_| UvxError::BadPath { path: name.clone() }),
            None => which::which("uvx").map_err(|_| UvxError::NotOnPath),
        };
        Ok(found?)
    }

    /// The arguments given to uvx for `spec` (after the program).
    pub fn uvx_args(&self, spec: &LaunchSpec) -> Vec<OsString> {
        let mut args = self.environment_args();
        args.push(self.entry().into());
        args.extend(spec.substituted_args().into_iter().map(OsString::from));
        args
    }

    /// The arguments that install the environment without starting the backend: the same
    /// environment (so uv's cache serves the start), running its Python on nothing.
    pub fn install_args(&self) -> Vec<OsString> {
        let mut args = self.environment_args();
        args.extend(["python".into(), "-c".into(), "pass".into()]);
        args
    }

    /// Everything that chooses the environment, up to `--from PKG`.
    fn environment_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        if self.offline {
            args.push("--offline".into());
        }
        if let Some(p) = &self.python {
            args.extend(["--python".into(), p.into()]);
        }
        if let Some(u) = &self.index_url {
            args.extend(["--index-url".into(), u.into()]);
        }
        for w in &self.with {
            args.extend(["--with".into(), w.into()]);
        }
        for c in &self.constraints {
            args.extend(["--constraints".into(), c.into()]);
        }
        args.extend(["--from".into(), self.package.from_arg().into()]);
        args
    }

    /// The command that runs the backend described by `spec`.
    pub fn command(&self, uvx: &Path, spec: &LaunchSpec) -> ProcessCommand {
        let cmd = ProcessCommand::new(uvx, self.uvx_args(spec)).with_startup_phase(START_PHASE);
        self.with_uv_env(cmd, spec)
    }

    /// The command that installs the environment (see [`UvxRunner::install_args`]).
    pub fn install_command(&self, uvx: &Path, spec: &LaunchSpec) -> ProcessCommand {
        let cmd = ProcessCommand::new(uvx, self.install_args()).with_startup_phase(CHECK_PHASE);
        self.with_uv_env(cmd, spec)
    }

    fn with_uv_env(&self, mut cmd: ProcessCommand, spec: &LaunchSpec) -> ProcessCommand {
        // Python buffers a piped stdout in 8 KiB blocks: without this, a backend's
        // lines would reach the relay (and the readiness engine) late, in bursts.
        if !spec.env.iter().chain(&self.env).any(|(k, _)| k == "PYTHONUNBUFFERED") {
            cmd = cmd.with_env("PYTHONUNBUFFERED", "1");
        }
        for (k, v) in &self.env {
            cmd = cmd.with_env(k.clone(), v.clone());
        }
        cmd
    }

    fn fingerprint(&self) -> String {
        let mut f = format!("uvx:{} {}", self.package.from_arg(), self.entry());
        if let Some(p) = &self.python {
            f.push_str(" --python ");
            f.push_str(p);
        }
        for w in &self.with {
            f.push_str(" --with ");
            f.push_str(w);
        }
        for c in &self.constraints {
            f.push_str(" --constraints ");
            f.push_str(&c.to_string_lossy());
        }
        f
    }

    async fn version(&self, uvx: &Path) -> Result<String> {
        let broken = |why: String| UvxError::Broken { path: uvx.to_path_buf(), why };
        let mut cmd = tokio::process::Command::new(uvx);
        cmd.arg("--version").stdin(Stdio::null()).kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = match tokio::time::timeout(VERSION_TIMEOUT, cmd.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(broken(format!("could not run: {e}")).into()),
            Err(_) => return Err(broken(format!("did not answer within {}s", VERSION_TIMEOUT.as_secs())).into()),
        };
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(broken(format!("failed with {}: {}", out.status, stderr.trim())).into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

#[async_trait]
impl Runner for UvxRunner {
    fn kind(&self) -> &'static str {
        "uvx"
    }

    #[instrument(skip_all, fields(package = %self.package.from_arg()))]
    async fn check(&self) -> Result<RunnerInfo> {
        let uvx = self.resolve_uvx()?;
        if let PackageSpec::Wheel { path, .. } = &self.package
            && !path.is_file()
        {
            return Err(UvxError::NoWheel { path: path.clone() }.into());
        }
        let tool_version = self.version(&uvx).await?;
        if self.package.version().is_none() {
            tracing::warn!(
                package = self.package.name(),
                "the backend package is not pinned: it may drift away from this front; pin it with --package {}==VERSION",
                self.package.name()
            );
        }
        tracing::debug!(uvx = %uvx.display(), version = %tool_version, "uvx found");
        Ok(RunnerInfo { tool_version: Some(tool_version), fingerprint: self.fingerprint() })
    }

    /// Installs the environment with `uvx … --from PKG python -c pass`, under the spec's
    /// tethering (the guard: an owner killed meanwhile takes uv with it), within the
    /// install timeout. uv's progress lines (`Resolved 85 packages`, `Downloading torch`,
    /// `Installed 85 packages`) become the phase shown; a warm cache makes this a few
    /// hundred milliseconds. A failure (a version that does not exist, a Python uv cannot
    /// find, a download error) is final, with uv's own last lines.
    #[instrument(skip_all, fields(package = %self.package.from_arg()))]
    async fn prepare(&self, spec: &LaunchSpec, progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<()> {
        let uvx = self.resolve_uvx()?;
        let mut install = spec.clone();
        // uv's output is read here (a detached start sends its own to the log file).
        if let Tethering::Detached { exe, .. } = &spec.tethering {
            install.tethering = Tethering::Guard { exe: exe.clone() };
        }
        progress(Progress::phase(CHECK_PHASE));
        let started = std::time::Instant::now();
        let running = process::spawn(self.install_command(&uvx, spec), &install).await?;
        let mut lines = running.logs().subscribe();
        let watch = async {
            loop {
                match lines.recv().await {
                    Ok(line) => {
                        if let Some(step) = install_step(&line.text) {
                            progress(Progress::phase(format!("{INSTALL_PHASE}: {step}")));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        let exit = tokio::select! {
            status = running.wait() => Some(status),
            () = watch => None,
            () = tokio::time::sleep(self.install_timeout) => None,
        };
        let Some(status) = exit else {
            running.stop(spec.grace).await?;
            return Err(Error::Runner {
                message: format!(
                    "uv did not finish installing {} within {}s (--install-timeout); a slow link needs \
                     a longer one, or install it ahead with `uvx --from {} python -c pass`",
                    self.package.from_arg(),
                    self.install_timeout.as_secs(),
                    self.package.from_arg()
                ),
                stderr_tail: running.logs().tail(INSTALL_TAIL),
                source: None,
            });
        };
        running.logs().drained(Duration::from_millis(300)).await;
        running.release();
        if status.code() != Some(0) {
            return Err(Error::Runner {
                message: format!("uv could not install {} ({status})", self.package.from_arg()),
                stderr_tail: running.logs().tail(INSTALL_TAIL),
                source: None,
            });
        }
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "environment installed");
        Ok(())
    }

    async fn start(&self, spec: &LaunchSpec) -> Result<Box<dyn RunningBackend>> {
        let uvx = self.resolve_uvx()?;
        let backend = process::spawn(self.command(&uvx, spec), spec).await?;
        Ok(Box::new(backend))
    }

    /// A recorded instance is a process group: its leader's group and descendants,
    /// through the gate.
    fn reclaim(&self) -> std::sync::Arc<dyn tether_core::Reclaim> {
        std::sync::Arc::new(tether_core::process::ProcessReclaim)
    }
}

/// What an install line of uv's says, as a phase: `Resolved 85 packages in 1.2s`,
/// `Downloading torch (846.9MiB)`, `Prepared 85 packages in 40s`, `Installed 85 packages
/// in 310ms`, `Building pkg`. Other lines (warnings, Python's) say nothing of progress.
fn install_step(line: &str) -> Option<String> {
    const STEPS: [&str; 8] =
        ["Resolved ", "Downloading ", "Downloaded ", "Prepared ", "Installed ", "Building ", "Built ", "Uninstalled "];
    let line = line.trim();
    STEPS.iter().any(|s| line.starts_with(s)).then(|| {
        // Lower-case the first letter: `installing via uv: resolved 85 packages`.
        let mut chars = line.chars();
        chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(r: &UvxRunner, spec: &LaunchSpec) -> Vec<String> {
        r.uvx_args(spec).into_iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn the_command_is_argv_with_every_option() -> Result<()> {
        let spec = LaunchSpec::new("x", 9001).with_args(["--port", "{port}", "a b; rm -rf ~"]);
        let r = UvxRunner::new("pkg==1.0")?.offline(true).with_python("3.12").with_index_url("http://idx/simple");
        assert_eq!(
            args(&r, &spec),
            [
                "--offline",
                "--python",
                "3.12",
                "--index-url",
                "http://idx/simple",
                "--from",
                "pkg==1.0",
                "pkg",
                "--port",
                "9001",
                "a b; rm -rf ~"
            ]
        );
        let r = UvxRunner::new("pkg")?.with_entry("pkg-server");
        assert_eq!(args(&r, &spec)[..3], ["--from", "pkg", "pkg-server"]);
        let r = UvxRunner::new("pkg==1")?.with_requirement("mcp<2").with_constraints("/c/pins.txt");
        assert_eq!(args(&r, &spec)[..6], ["--with", "mcp<2", "--constraints", "/c/pins.txt", "--from", "pkg==1"]);
        assert!(r.fingerprint().contains("--with mcp<2"), "{}", r.fingerprint());
        // Installing builds the same environment, and runs its Python on nothing.
        let install: Vec<String> = r.install_args().into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            install,
            ["--with", "mcp<2", "--constraints", "/c/pins.txt", "--from", "pkg==1", "python", "-c", "pass"]
        );
        Ok(())
    }

    #[test]
    fn python_is_unbuffered_unless_the_user_says_otherwise() -> Result<()> {
        let r = UvxRunner::new("pkg==1.0")?;
        let cmd = r.command(Path::new("/bin/uvx"), &LaunchSpec::new("x", 1));
        assert!(cmd.env.contains(&("PYTHONUNBUFFERED".into(), "1".into())));
        assert_eq!(cmd.startup_phase, START_PHASE);
        let install = r.install_command(Path::new("/bin/uvx"), &LaunchSpec::new("x", 1));
        assert_eq!(install.startup_phase, CHECK_PHASE);
        assert!(install.env.contains(&("PYTHONUNBUFFERED".into(), "1".into())));
        let cmd = r.command(Path::new("/bin/uvx"), &LaunchSpec::new("x", 1).with_env("PYTHONUNBUFFERED", "0"));
        assert!(!cmd.env.iter().any(|(k, _)| k == "PYTHONUNBUFFERED"));
        Ok(())
    }

    #[test]
    fn a_wheel_runs_its_distribution_name_by_default() -> Result<()> {
        let r = UvxRunner::new("/tmp/my_backend-0.3.0-py3-none-any.whl")?;
        assert_eq!(r.entry(), "my-backend");
        assert_eq!(r.fingerprint(), "uvx:/tmp/my_backend-0.3.0-py3-none-any.whl my-backend");
        Ok(())
    }

    #[test]
    fn uv_install_lines_become_phases_and_others_do_not() {
        assert_eq!(install_step("Resolved 85 packages in 1.21s").as_deref(), Some("resolved 85 packages in 1.21s"));
        assert_eq!(install_step(" Downloading torch (846.9MiB)").as_deref(), Some("downloading torch (846.9MiB)"));
        assert_eq!(install_step("Installed 85 packages in 312ms").as_deref(), Some("installed 85 packages in 312ms"));
        assert_eq!(install_step("warning: `VIRTUAL_ENV` does not match"), None);
        assert_eq!(install_step("Traceback (most recent call last):"), None);
    }

    #[test]
    fn bad_packages_are_config_errors() {
        let e = UvxRunner::new("==1.0").expect_err("no name");
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("no package name"), "{e}");
    }

    #[test]
    fn a_missing_uvx_is_a_clear_error() -> Result<()> {
        let e = UvxRunner::new("pkg==1")?.with_uvx("/no/such/dir/uvx").resolve_uvx().expect_err("missing");
        assert!(e.chain().contains("does not exist"), "{}", e.chain());
        let e = UvxRunner::new("pkg==1")?.with_uvx("no-such-uvx-tether").resolve_uvx().expect_err("missing");
        // The runner's own error is kept whole as the cause, for a library user to match.
        let cause = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<crate::UvxError>());
        assert!(matches!(cause, Some(crate::UvxError::BadPath { .. } | crate::UvxError::NotOnPath)), "{e:?}");
        assert_eq!(e.exit_code(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_wheel_is_reported_before_anything_starts() -> Result<()> {
        // `true` stands in for uvx: the wheel check comes first and must fail.
        let r = UvxRunner::new("/no/such/pkg-1.0-py3-none-any.whl")?.with_uvx("true");
        let e = r.check().await.expect_err("no wheel");
        assert!(e.chain().contains("does not exist"), "{}", e.chain());
        Ok(())
    }
}
