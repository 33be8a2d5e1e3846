//! # tether-runner-native
//!
//! Runs a preinstalled executable as the backend. The program is resolved with
//! `which` (or taken as a path) before anything starts, so a missing program is a
//! clear error, not a timeout. Arguments are argv — never a shell string — with
//! `{port}` and `{host}` substituted, so `; rm -rf ~` in an argument stays a string.
//!
//! ```no_run
//! # async fn demo() -> tether_core::Result<()> {
//! use std::sync::Arc;
//! use tether_core::{launch, LaunchOptions, LaunchSpec, probe::TcpProbe};
//! use tether_runner_native::NativeRunner;
//! let runner = Arc::new(NativeRunner::new("python3"));
//! let spec = LaunchSpec::new("web", 8000).with_args(["-m", "http.server", "{port}"]);
//! let web = launch(runner, spec, Arc::new(TcpProbe), LaunchOptions::default()).await?;
//! web.stop().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tether_core::process::{self, ProcessCommand};
use tether_core::{Error, LaunchSpec, Result, Runner, RunnerInfo, RunningBackend};

/// A preinstalled program.
#[derive(Debug, Clone)]
pub struct NativeRunner {
    program: String,
    prefix_args: Vec<String>,
}

impl NativeRunner {
    /// Run `program` (a name looked up on `PATH`, or a path).
    pub fn new(program: impl Into<String>) -> Self {
        NativeRunner { program: program.into(), prefix_args: Vec::new() }
    }

    /// Arguments placed before the spec's (e.g. a subcommand).
    pub fn with_prefix_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.prefix_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// The program, resolved to an executable path.
    pub fn resolve(&self) -> Result<PathBuf> {
        if self.program.is_empty() {
            return Err(Error::config(
                "no program given for the native runner; write it after `--`, e.g. `tether up -- my-server --port {port}`",
            ));
        }
        let looks_like_path = self.program.contains('/');
        let found = if looks_like_path { which::which(Path::new(&self.program)) } else { which::which(&self.program) };
        found.map_err(|_| {
            let message = if looks_like_path {
                format!(
                    "program `{}` does not exist or is not executable; check the path (and its execute permission)",
                    self.program
                )
            } else {
                format!("program `{}` was not found on PATH; install it, or give its full path", self.program)
            };
            Error::Unavailable { message }
        })
    }
}

#[async_trait]
impl Runner for NativeRunner {
    fn kind(&self) -> &'static str {
        "native"
    }

    async fn check(&self) -> Result<RunnerInfo> {
        let path = self.resolve()?;
        let mut fingerprint = format!("native:{}", path.display());
        for a in &self.prefix_args {
            fingerprint.push(' ');
            fingerprint.push_str(a);
        }
        Ok(RunnerInfo { tool_version: None, fingerprint })
    }

    async fn start(&self, spec: &LaunchSpec) -> Result<Box<dyn RunningBackend>> {
        let path = self.resolve()?;
        let args = self.prefix_args.iter().cloned().chain(spec.substituted_args());
        let backend = process::spawn(ProcessCommand::new(path, args), spec).await?;
        Ok(Box::new(backend))
    }

    /// A recorded instance is a process group: its leader's group and descendants,
    /// through the gate.
    fn reclaim(&self) -> std::sync::Arc<dyn tether_core::Reclaim> {
        std::sync::Arc::new(tether_core::process::ProcessReclaim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let e = NativeRunner::new("no-such-program-tether-xyz").resolve().expect_err("missing");
        assert!(e.to_string().contains("not found on PATH"), "{e}");
        let e = NativeRunner::new("/no/such/dir/prog").resolve().expect_err("missing");
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = NativeRunner::new("").resolve().expect_err("empty");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn finds_a_program_on_path() {
        let p = NativeRunner::new("true").resolve().expect("`true` is on PATH");
        assert!(p.is_absolute());
    }
}
