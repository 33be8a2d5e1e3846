//! The one public error type of tether.

use std::path::PathBuf;
use std::time::Duration;

/// How a backend process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was ended by this signal number.
    Signal(i32),
    /// Its status could not be learned (e.g. it was not our child).
    Unknown,
}

impl ExitStatus {
    /// The exit code, if it exited by itself.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Code(c) => Some(*c),
            _ => None,
        }
    }

    /// From a std exit status.
    pub fn from_std(status: std::process::ExitStatus) -> Self {
        match (status.code(), crate::sys::exit_signal(&status)) {
            (Some(c), _) => ExitStatus::Code(c),
            (None, Some(s)) => ExitStatus::Signal(s),
            _ => ExitStatus::Unknown,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
            ExitStatus::Unknown => write!(f, "unknown status"),
        }
    }
}

/// A process listening on a port, as the port guard sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortHolder {
    /// Process id.
    pub pid: u32,
    /// The user owning it, when known.
    pub user: Option<String>,
    /// Its command line, joined with spaces for display.
    pub command: String,
    /// Whether tether started it (recorded instance or fingerprint match).
    pub ours: bool,
    /// The instance name it belongs to, when ours.
    pub instance: Option<String>,
}

/// Every error tether reports. Messages are short; the cause is in `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration or a command-line value is wrong (exit code 2).
    #[error("{message}")]
    Config {
        /// What was wrong and how to fix it.
        message: String,
    },
    /// The runner's tool is missing or unusable (program not found, daemon unreachable).
    #[error("{message}")]
    Unavailable {
        /// What is missing, with a hint how to get it.
        message: String,
    },
    /// A runner's tool is missing or unusable, with the runner's own typed error as
    /// the cause (`source()`): a library user can downcast it (e.g. to
    /// `tether_runner_uvx::UvxError`), a CLI user reads the chain on one line.
    #[error("the {runner} runner cannot run")]
    Tool {
        /// `uvx`, `docker`, …
        runner: &'static str,
        /// The runner's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The backend could not be spawned.
    #[error("could not start {program}")]
    Spawn {
        /// The program that was run.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The backend exited before it became ready.
    #[error("backend exited before it was ready ({status}){}", last_words(stderr_tail))]
    EarlyExit {
        /// How it ended.
        status: ExitStatus,
        /// The last lines it printed (stderr and stdout, in order).
        stderr_tail: Vec<String>,
    },
    /// The health probe reported a definite failure.
    #[error("backend is not healthy: {reason}")]
    Unhealthy {
        /// The probe's reason.
        reason: String,
        /// The last lines the backend printed.
        stderr_tail: Vec<String>,
    },
    /// The backend did not become ready before the deadline.
    #[error("backend not ready after {}: last probe: {last_probe}", humanize(*waited))]
    Timeout {
        /// How long was waited.
        waited: Duration,
        /// The last probe's result.
        last_probe: String,
        /// The last lines the backend printed.
        stderr_tail: Vec<String>,
    },
    /// A port is held by a process that is not ours.
    #[error(
        "port {port} is held by a process that is not tether's: {}; stop it or choose another port (--port auto), or pass --force-port",
        describe_holders(holders)
    )]
    PortTaken {
        /// The port.
        port: u16,
        /// Who holds it.
        holders: Vec<PortHolder>,
    },
    /// A port is held by a tether instance this state directory has no record of (another
    /// `TETHER_STATE_DIR`'s, or one whose record was lost): never stopped without `--force-port`.
    #[error(
        "port {port} is used by tether instance '{name}' (pid {pid}), which this state directory does not record (another TETHER_STATE_DIR's, or its record was lost); it is left alone: stop it where it was started (`tether down --name {name}` with that TETHER_STATE_DIR), choose another port (--port auto), or pass --force-port"
    )]
    PortUsedElsewhere {
        /// The port.
        port: u16,
        /// The other instance.
        name: String,
        /// Its listening process.
        pid: u32,
    },
    /// A port is held by another live tether instance (its owner is alive: not ours to stop).
    #[error(
        "port {port} is used by tether instance '{name}' (pid {pid}); stop it with `tether down --name {name}`, or choose another port (--port auto)"
    )]
    PortUsedByInstance {
        /// The port.
        port: u16,
        /// The other instance.
        name: String,
        /// Its listening process.
        pid: u32,
    },
    /// A stop was asked for while the backend was starting; it was stopped.
    #[error("stopped before it was ready, as asked")]
    Interrupted,
    /// An instance of this name is already running.
    #[error("instance '{name}' is already running{}: pick another --name, or share it (`--share`); `tether down --name {name}` would stop it together with its owner", pid.map(|p| format!(", owned by pid {p}")).unwrap_or_default())]
    AlreadyRunning {
        /// The instance name.
        name: String,
        /// The owner's or backend's pid when known.
        pid: Option<u32>,
    },
    /// A live backend of this instance name that its runner keeps (a container) runs,
    /// but not as a record of this state directory (another `TETHER_STATE_DIR`, or its
    /// record was lost): never swept.
    #[error(
        "instance '{name}' is already running {place}{}, not recorded in this state directory; stop it where it was started (`tether down --name {name}` with that TETHER_STATE_DIR) or with {remove}, or pick another --name",
        owner_pid.map(|p| format!(" (owner pid {p})")).unwrap_or_else(|| " (detached)".into())
    )]
    RunningUnrecorded {
        /// The instance name.
        name: String,
        /// Where it runs, as the runner says it (`in container 0123456789ab`).
        place: String,
        /// How to remove it by hand, as the runner says it (`` `docker rm -f ID` ``).
        remove: String,
        /// Its owner's pid, when not detached.
        owner_pid: Option<u32>,
    },
    /// tether refused to signal a process that it cannot prove is its own (see
    /// `tether_core::safety`): the process is named, never signalled.
    #[error("refusing to signal pid {pid} (`{command}`): {why}")]
    Refused {
        /// The process.
        pid: u32,
        /// Its command line, for the user.
        command: String,
        /// Which rule refused it.
        why: String,
    },
    /// Processes of an instance still run after `down` stopped it (they survived SIGKILL,
    /// or appeared meanwhile): named, and the record kept so a later `down` finds them.
    #[error(
        "instance '{name}' still runs after the stop: {}; its record is kept, `tether down --name {name}` tries again",
        pids.iter().map(|(p, c)| format!("pid {p} (`{c}`)")).collect::<Vec<_>>().join(", ")
    )]
    StillRunning {
        /// The instance name.
        name: String,
        /// What still runs: pid and command line.
        pids: Vec<(u32, String)>,
    },
    /// No instance of this name is recorded.
    #[error("no instance named '{name}' is recorded; `tether status` lists them")]
    NotFound {
        /// The instance name.
        name: String,
    },
    /// The state directory could not be read or written.
    #[error("state file {}", path.display())]
    State {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An operating-system call failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runner's own machinery failed (Docker API, uv) in a way not covered above.
    #[error("{message}")]
    Runner {
        /// What failed.
        message: String,
        /// The last lines of output, when any.
        stderr_tail: Vec<String>,
        /// The runner's own error (the Engine API's, say), when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
}

impl Error {
    /// A configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config { message: message.into() }
    }

    /// The runner's machinery failed: `message` says what was being done, `source` why.
    pub fn runner(
        message: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Runner { message: message.into(), stderr_tail: Vec::new(), source }
    }

    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }

    /// The process exit code the CLI uses for this error: 2 for usage/config, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } => 2,
            _ => 1,
        }
    }

    /// The backend's exit code, when the error is an early exit.
    pub fn backend_exit_code(&self) -> Option<i32> {
        match self {
            Error::EarlyExit { status, .. } => status.code(),
            _ => None,
        }
    }

    /// The last lines the backend printed, when the error carries them.
    pub fn stderr_tail(&self) -> &[String] {
        match self {
            Error::EarlyExit { stderr_tail, .. }
            | Error::Unhealthy { stderr_tail, .. }
            | Error::Timeout { stderr_tail, .. }
            | Error::Runner { stderr_tail, .. } => stderr_tail,
            _ => &[],
        }
    }

    /// The error and its chain of causes on one line, `: `-separated.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }
}

/// Short result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `: <the reason>`, so it is in the message itself: the last line that mentions an
/// error (uv's `error: …`, a Python traceback's `…Error: …`), else the last line.
fn last_words(tail: &[String]) -> String {
    let lines = || tail.iter().rev().map(|l| l.trim()).filter(|l| !l.is_empty());
    lines()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .or_else(|| lines().next())
        .map(|l| format!(": {l}"))
        .unwrap_or_default()
}

fn describe_holders(holders: &[PortHolder]) -> String {
    holders
        .iter()
        .map(|h| match h.pid {
            // No process known (see the port guard): what is known, never "pid 0".
            0 => h.command.clone(),
            pid => format!("pid {pid} (user {}, command `{}`)", h.user.as_deref().unwrap_or("?"), h.command),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A duration for humans: `850ms`, `2.5s`.
pub fn humanize(d: Duration) -> String {
    if d < Duration::from_secs(1) { format!("{}ms", d.as_millis()) } else { format!("{:.1}s", d.as_secs_f64()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_early_exit_names_the_reason() {
        let tail = |lines: &[&str]| lines.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let uv = tail(&[
            "error: No solution found when resolving tool dependencies",
            "  cause: not in cache",
            "",
            "hint: offline",
        ]);
        let e = Error::EarlyExit { status: ExitStatus::Code(1), stderr_tail: uv };
        assert!(
            e.to_string().ends_with("(exit code 1): error: No solution found when resolving tool dependencies"),
            "{e}"
        );
        let py =
            tail(&["Traceback (most recent call last):", "  File \"x\"", "ModuleNotFoundError: No module named 'y'"]);
        let e = Error::EarlyExit { status: ExitStatus::Code(1), stderr_tail: py };
        assert!(e.to_string().ends_with("ModuleNotFoundError: No module named 'y'"), "{e}");
        let e = Error::EarlyExit { status: ExitStatus::Code(3), stderr_tail: tail(&["bye", ""]) };
        assert!(e.to_string().ends_with("(exit code 3): bye"), "{e}");
        let e = Error::EarlyExit { status: ExitStatus::Code(3), stderr_tail: vec![] };
        assert!(e.to_string().ends_with("(exit code 3)"), "{e}");
    }
}
