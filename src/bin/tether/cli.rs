//! The command line, exactly per the CLI contract (the README's "Usage" and docs/cli.md; extend, don't break).
//!
//! Every backend option of `up` and `mcp-proxy` that is one value is also read from a
//! `TETHER_*` environment variable (clap's `env`), so the precedence is: flag, then
//! environment, then `tether.toml`, then default (an environment value counts as a flag,
//! and flags are laid over the file). Not mapped: the repeatable options (`--expect`, `--env`, `-- ARGS`: write them
//! in `tether.toml`), and `--force-port` and `--replace`, which stop processes and so stay
//! explicit on each command line. Never mapped: `TETHER_INSTANCE`, which tether sets in every
//! backend's environment (a backend that runs `tether` itself must not see it as a flag).

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tether::{Config, PortChoice, RunnerKind};

/// Start a backend server, wait until it is really ready, relay its logs, stop it cleanly.
#[derive(Debug, Parser)]
#[command(name = "tether", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parse the command line (exiting on bad usage, as clap does). A `TETHER_*` variable
    /// that is set but empty counts as unset, as a CI matrix entry leaves one, rather than
    /// as an empty value.
    pub fn parse_args() -> Self {
        let mut cmd = Cli::command();
        let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
        for name in names {
            cmd = cmd.mut_subcommand(name, |sub| {
                let empty: Vec<clap::Id> = sub
                    .get_arguments()
                    .filter(|a| a.get_env().and_then(std::env::var_os).is_some_and(|v| v.is_empty()))
                    .map(|a| a.get_id().clone())
                    .collect();
                empty.into_iter().fold(sub, |sub, id| sub.mut_arg(id, |a| a.env(None)))
            });
        }
        let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let matches = match cmd.try_get_matches_from_mut(&argv) {
            Ok(m) => m,
            Err(e) => {
                let note = from_the_environment(&cmd, &e, &argv);
                let _ = e.print();
                if let Some(note) = note {
                    eprintln!("note: {note}");
                }
                std::process::exit(e.exit_code());
            }
        };
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// When a bad value came from a `TETHER_*` variable rather than the command line, say
/// so: clap's message names only the flag.
fn from_the_environment(cmd: &clap::Command, e: &clap::Error, argv: &[std::ffi::OsString]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else { return None };
    let long = arg.strip_prefix("--")?.split(' ').next()?;
    let flag = format!("--{long}");
    let given = argv.iter().filter_map(|a| a.to_str()).any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    if given {
        return None;
    }
    let var = cmd
        .get_subcommands()
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())?;
    let value = std::env::var_os(var)?;
    Some(format!("the value comes from the environment: {}={}", var.to_string_lossy(), value.to_string_lossy()))
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a backend and wait until it is ready (with no runner and no config: the built-in demo backend).
    Up(Box<UpArgs>),
    /// Stop a recorded instance (its whole process group, or its container).
    Down(NameArgs),
    /// Show recorded instances: state, pid/container, port, health.
    Status(NameArgs),
    /// Print a detached instance's output.
    Logs(LogsArgs),
    /// Who listens on PORT: pid, user, command, ours or not.
    Port(PortArgs),
    /// An MCP stdio server that answers at once and forwards to the backend's streamable HTTP
    /// endpoint once it is ready (for an MCP host's config).
    McpProxy(Box<McpProxyArgs>),
    /// The built-in demo backend (the claude-skills /health contract, with flags to misbehave).
    DemoBackend(Box<tether_demo::DemoArgs>),
}

/// `--name` and `--json`.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// Instance name (all instances for `status` when omitted; `default` for `down`).
    #[arg(long, env = "TETHER_NAME")]
    pub name: Option<String>,
    /// One JSON object per line on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `logs` options.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Instance name.
    #[arg(long, env = "TETHER_NAME", default_value = "default")]
    pub name: String,
    /// Keep printing new output until the instance is gone (or Ctrl-C).
    #[arg(long, short)]
    pub follow: bool,
    /// Show the backend's output as its bytes are, control characters and escape sequences
    /// included (by default they are shown escaped, colours kept on a terminal).
    #[arg(long)]
    pub raw: bool,
}

/// `port` options.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// The TCP port, 1 to 65535.
    #[arg(value_parser = parse_port_number, allow_negative_numbers = true)]
    pub port: u16,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_port(s: &str) -> Result<PortChoice, String> {
    s.parse().map_err(|e: tether::Error| e.to_string())
}

/// `port PORT`: a plain port number, with the range in the message.
fn parse_port_number(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("PORT must be a number from 1 to 65535".into()),
    }
}

fn parse_runner(s: &str) -> Result<RunnerKind, String> {
    s.parse().map_err(|e: tether::Error| e.to_string())
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("bad --env `{s}`: write KEY=VALUE")),
    }
}

fn parse_dur(s: &str) -> Result<String, String> {
    tether::parse_duration(s).map(|_| s.to_string())
}

/// `up` options: the backend's, plus how `up` itself behaves.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// What to run and how (shared with `mcp-proxy`).
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Return once ready and leave it running (recorded; see status/logs/down).
    #[arg(long)]
    pub detach: bool,
    /// Share the backend with every other `up --share` (or front) of this name: it runs
    /// detached, this `up` holds a lease on it until it ends, and the backend stops LINGER
    /// after the last lease is gone (e.g. `--share 60s`).
    #[arg(long, value_name = "LINGER", value_parser = parse_dur, conflicts_with = "detach")]
    pub share: Option<String>,
    /// One JSON object per line on stdout.
    #[arg(long)]
    pub json: bool,
    /// Show the backend's output as its bytes are, control characters and escape sequences
    /// included (by default they are shown escaped, colours kept on a terminal).
    #[arg(long)]
    pub raw: bool,
}

/// `mcp-proxy` options: the backend's (as for `up`), plus the MCP front's.
#[derive(Debug, Args)]
pub struct McpProxyArgs {
    /// What to run and how (the same options as `up`).
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The backend's streamable HTTP MCP endpoint path (default /mcp).
    #[arg(long, value_name = "PATH")]
    pub mcp_path: Option<String>,
    /// Show the backend's output (on stderr) as its bytes are, control characters and escape sequences
    /// included (by default they are shown escaped, colours kept on a terminal).
    #[arg(long)]
    pub raw: bool,

    /// A JSON file with the tools to list before the backend is ready the first time
    /// (`{"tools":[...]}` as `tools/list` answers, or a bare array).
    #[arg(long, value_name = "FILE")]
    pub tools: Option<PathBuf>,
    /// How long a `tools/call` waits for a loading backend before it answers with the
    /// loading progress as a tool error (default 30s).
    #[arg(long, value_name = "DUR", value_parser = parse_dur)]
    pub call_wait: Option<String>,
    /// How long the first `tools/list` waits for the backend when there is no cached list,
    /// no --tools file and no preset with tools, before it answers what it has (default 8s,
    /// below the hosts' start limits).
    #[arg(long, value_name = "DUR", value_parser = parse_dur)]
    pub list_wait: Option<String>,
    /// Do not serve MCP: start the backend, wait until ready, cache its tools and
    /// instructions for the proxy of these same arguments, stop it, print the tool names
    /// (the one-time setup step; a first uvx install can take minutes).
    #[arg(long)]
    pub prefetch: bool,
    /// How long a shared backend lingers after the last proxy is gone (default 60s).
    /// Sharing is the default for the native, uvx and docker runners: every proxy with the same
    /// configuration (an MCP host runs one per window) uses one backend, which runs
    /// detached; each proxy holds a lease on it, and it stops LINGER after the last one
    /// is gone. The instance name is the tools cache key (or `--name`).
    #[arg(long, value_name = "LINGER", value_parser = parse_dur, conflicts_with_all = ["prefetch", "no_share"])]
    pub share: Option<String>,
    /// A backend of this proxy's own, stopped when it exits (the default for the remote
    /// runner, which starts nothing).
    #[arg(long)]
    pub no_share: bool,
}

/// The backend options, shared by `up` and `mcp-proxy`; each maps to the `tether.toml`
/// key of the same name, and those of one value to a `TETHER_*` environment variable
/// (flag > environment > file > default). The defaults named in the help are `Config::plan`'s.
#[derive(Debug, Args)]
pub struct BackendArgs {
    /// Config file [default: ./tether.toml when it exists; mcp-proxy: none, only this]
    #[arg(long, env = "TETHER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// native, uvx, docker, or remote (a backend someone else runs, at --url) [default: remote with
    /// a URL, uvx with a package, docker with an image, else native]
    #[arg(long, env = "TETHER_RUNNER", value_parser = parse_runner)]
    pub runner: Option<RunnerKind>,
    /// Instance name [default: default; mcp-proxy: mcp-PID]
    #[arg(long, env = "TETHER_NAME")]
    pub name: Option<String>,
    /// Port, or `auto` for a free one [default: 8765; mcp-proxy: auto]
    #[arg(long, env = "TETHER_PORT", value_name = "N|auto", value_parser = parse_port)]
    pub port: Option<PortChoice>,
    /// Host to listen on and probe, an IP address of this machine [default: 127.0.0.1]
    #[arg(long, env = "TETHER_HOST", value_name = "ADDR")]
    pub host: Option<String>,
    /// Readiness probe: http[:PATH], tcp, log:REGEX or mcp[:PATH] (an MCP initialize;
    /// mcp-proxy's default without --probe or --preset) [default: http:/health]
    #[arg(long, env = "TETHER_PROBE")]
    pub probe: Option<String>,
    /// A probe preset: claude-skills [default: none; the demo backend: claude-skills]
    #[arg(long, env = "TETHER_PRESET")]
    pub preset: Option<String>,
    /// A JSON condition the health answer must meet (repeatable), e.g. `status==ok`.
    #[arg(long, value_name = "FIELD OP VALUE")]
    pub expect: Vec<String>,
    /// A numeric JSON field of the health answer shown as progress.
    #[arg(long, env = "TETHER_PROGRESS_FIELD", value_name = "FIELD")]
    pub progress_field: Option<String>,
    /// Fail if the health answer's `version` differs from this.
    #[arg(long, env = "TETHER_EXPECT_VERSION", value_name = "VER")]
    pub expect_version: Option<String>,
    /// Overall readiness deadline, at least 100ms [default: 120s]
    #[arg(long, env = "TETHER_TIMEOUT", value_name = "DUR", value_parser = parse_dur)]
    pub timeout: Option<String>,
    /// Timeout of each probe attempt, at least 10ms [default: 2s]
    #[arg(long, env = "TETHER_PROBE_TIMEOUT", value_name = "DUR", value_parser = parse_dur)]
    pub probe_timeout: Option<String>,
    /// uvx: deadline of installing the backend's environment (uv's downloads), at least 1s;
    /// --timeout starts after it [default: 15m]
    #[arg(long, env = "TETHER_INSTALL_TIMEOUT", value_name = "DUR", value_parser = parse_dur)]
    pub install_timeout: Option<String>,
    /// Grace period between SIGTERM and SIGKILL [default: 5s]
    #[arg(long, env = "TETHER_GRACE", value_name = "DUR", value_parser = parse_dur)]
    pub grace: Option<String>,
    /// Also stop a foreign process listening on the port.
    #[arg(long)]
    pub force_port: bool,
    /// Extra environment for the backend (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory of the backend (native and uvx) [default: the current one]
    #[arg(long, env = "TETHER_CWD", value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// uvx: the package, PKG, PKG==VER or a path to a .whl
    #[arg(long, env = "TETHER_PACKAGE", value_name = "PKG[==VER]")]
    pub package: Option<String>,
    /// uvx: the entry point [default: the package's name]
    #[arg(long, env = "TETHER_ENTRY", value_name = "NAME")]
    pub entry: Option<String>,
    /// uvx: the Python to run it with, VER or PATH (e.g. 3.12) [default: uv's choice]
    #[arg(long, env = "TETHER_PYTHON", value_name = "VER|PATH")]
    pub python: Option<String>,
    /// uvx: no network access.
    #[arg(long, env = "TETHER_OFFLINE", value_parser = BoolishValueParser::new())]
    pub offline: bool,
    /// uvx: the package index to use instead of the default.
    #[arg(long, env = "TETHER_INDEX_URL", value_name = "URL")]
    pub index_url: Option<String>,
    /// uvx: the uvx executable to run [default: uvx from PATH]
    #[arg(long, env = "TETHER_UVX", value_name = "PATH")]
    pub uvx: Option<PathBuf>,
    /// uvx: another requirement installed beside the package (repeatable; uvx --with), e.g.
    /// 'mcp<2'; TETHER_WITH gives one [default: the claude-skills preset adds mcp<2]
    #[arg(long = "with", env = "TETHER_WITH", value_name = "REQ")]
    pub with: Vec<String>,
    /// uvx: a constraints file (repeatable; uvx --constraints): version bounds for whatever
    /// uv resolves, e.g. a line `mcp<2`; TETHER_CONSTRAINT gives one
    #[arg(long, env = "TETHER_CONSTRAINT", value_name = "FILE")]
    pub constraint: Vec<PathBuf>,
    /// Do not check the health answer's `version` (against --expect-version or the pinned package).
    #[arg(long, env = "TETHER_NO_VERSION_CHECK", value_parser = BoolishValueParser::new())]
    pub no_version_check: bool,
    /// docker: the image.
    #[arg(long, env = "TETHER_IMAGE", value_name = "IMG")]
    pub image: Option<String>,
    /// docker: the port inside the container [default: the host port]
    #[arg(long, env = "TETHER_CONTAINER_PORT", value_name = "N")]
    pub container_port: Option<u16>,
    /// docker: always, missing or never [default: missing]
    #[arg(long, env = "TETHER_PULL")]
    pub pull: Option<String>,
    /// remote: attach to the backend someone else runs at http://HOST:PORT (nothing is started or
    /// ever signalled; probe paths join onto its origin; a path is mcp-proxy's default MCP endpoint)
    #[arg(long, env = "TETHER_URL", value_name = "URL")]
    pub url: Option<String>,
    /// After ready, restart the backend: no, on-failure or always [default: no; mcp-proxy: on-failure;
    /// remote: always, i.e. reconnect]
    #[arg(long, env = "TETHER_RESTART")]
    pub restart: Option<String>,
    /// At most this many restarts in a row [default: 5]
    #[arg(long, env = "TETHER_MAX_RESTARTS", value_name = "N")]
    pub max_restarts: Option<u32>,
    /// Liveness probe after ready: http[:PATH] or tcp [default: none, only an exit counts]
    #[arg(long, env = "TETHER_LIVENESS")]
    pub liveness: Option<String>,
    /// How often the liveness probe runs, at least 100ms [default: 5s]
    #[arg(long, env = "TETHER_LIVENESS_PERIOD", value_name = "DUR", value_parser = parse_dur)]
    pub liveness_period: Option<String>,
    /// Failed liveness probes in a row that end the backend [default: 3]
    #[arg(long, env = "TETHER_LIVENESS_FAILURES", value_name = "N")]
    pub liveness_failures: Option<u32>,
    /// Replace a running detached instance of this name instead of reusing it.
    #[arg(long)]
    pub replace: bool,
    /// The backend's arguments (native: PROGRAM ARGS...); `{port}` and `{host}` are substituted.
    #[arg(last = true)]
    pub args: Vec<String>,
}

impl BackendArgs {
    /// The flags as a config layer (unset flags stay unset).
    pub fn to_config(&self) -> Config {
        let mut c = Config::default();
        c.runner = self.runner;
        c.name = self.name.clone();
        c.port = self.port;
        c.host = self.host.clone();
        c.probe = self.probe.clone();
        c.preset = self.preset.clone();
        c.expect = self.expect.clone();
        c.progress_field = self.progress_field.clone();
        c.expect_version = self.expect_version.clone();
        c.timeout = self.timeout.clone();
        c.probe_timeout = self.probe_timeout.clone();
        c.install_timeout = self.install_timeout.clone();
        c.grace = self.grace.clone();
        c.force_port = self.force_port.then_some(true);
        c.args = self.args.clone();
        c.env = self.env.iter().cloned().collect();
        c.cwd = self.cwd.clone();
        c.package = self.package.clone();
        c.entry = self.entry.clone();
        c.python = self.python.clone();
        c.offline = self.offline.then_some(true);
        c.index_url = self.index_url.clone();
        c.uvx = self.uvx.clone();
        c.with = self.with.clone();
        c.constraint = self.constraint.clone();
        c.no_version_check = self.no_version_check.then_some(true);
        c.image = self.image.clone();
        c.container_port = self.container_port;
        c.pull = self.pull.clone();
        c.url = self.url.clone();
        c.restart = self.restart.clone();
        c.max_restarts = self.max_restarts;
        c.liveness = self.liveness.clone();
        c.liveness_period = self.liveness_period.clone();
        c.liveness_failures = self.liveness_failures;
        c
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every environment variable a flag of any subcommand reads.
    fn env_names() -> Vec<String> {
        let mut names: Vec<String> = Cli::command()
            .get_subcommands()
            .flat_map(|c| c.get_arguments())
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    #[test]
    fn flags_read_only_their_own_tether_variables() {
        let names = env_names();
        assert!(names.contains(&"TETHER_RUNNER".to_string()), "{names:?}");
        for name in &names {
            assert!(name.starts_with("TETHER_"), "{name}");
        }
        // Variables that already mean something: the fingerprint tether sets in every
        // backend (a backend running `tether` must not take it as a flag), and tether's own.
        for taken in ["TETHER_INSTANCE", "TETHER_STATE_DIR", "TETHER_LOG", "TETHER_TEST_SEED"] {
            assert!(!names.iter().any(|n| n == taken), "{taken} is not a flag's variable");
        }
    }

    #[test]
    fn scripts_test_keeps_every_flag_variable_away_from_the_tests() {
        let script =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test")).expect("scripts/test");
        let start = script.find("unset TETHER_").expect("an `unset` line in scripts/test");
        let unset: Vec<&str> = script[start..]
            .lines()
            .map(|l| l.trim_end_matches('\\'))
            .take_while(|l| !l.trim().is_empty())
            .flat_map(str::split_whitespace)
            .filter(|w| *w != "unset")
            .collect();
        for name in env_names() {
            assert!(unset.contains(&name.as_str()), "scripts/test must unset {name}: {unset:?}");
        }
    }
}
