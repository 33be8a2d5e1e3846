//! The command line, exactly per the CLI contract in ARCHITECTURE.md (extend, don't break).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tether::{Config, PortChoice, RunnerKind};

/// Start a backend server, wait until it is really ready, relay its logs, stop it cleanly.
#[derive(Debug, Parser)]
#[command(name = "tether", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
    #[arg(long)]
    pub name: Option<String>,
    /// One JSON object per line on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `logs` options.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Instance name.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Keep printing new output until the instance is gone (or Ctrl-C).
    #[arg(long, short)]
    pub follow: bool,
}

/// `port` options.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// The TCP port.
    pub port: u16,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_port(s: &str) -> Result<PortChoice, String> {
    s.parse().map_err(|e: tether::Error| e.to_string())
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
    /// One JSON object per line on stdout.
    #[arg(long)]
    pub json: bool,
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
    /// A JSON file with the tools to list before the backend is ready the first time
    /// (`{"tools":[...]}` as `tools/list` answers, or a bare array).
    #[arg(long, value_name = "FILE")]
    pub tools: Option<PathBuf>,
    /// How long a `tools/call` waits for a loading backend before it answers with the
    /// loading progress as a tool error (default 30s).
    #[arg(long, value_name = "DUR", value_parser = parse_dur)]
    pub call_wait: Option<String>,
}

/// The backend options, shared by `up` and `mcp-proxy`; each maps to the `tether.toml`
/// key of the same name.
#[derive(Debug, Args)]
pub struct BackendArgs {
    /// Config file (default: ./tether.toml when it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// native, uvx or docker.
    #[arg(long, value_parser = parse_runner)]
    pub runner: Option<RunnerKind>,
    /// Instance name.
    #[arg(long)]
    pub name: Option<String>,
    /// Port, or `auto` for a free one.
    #[arg(long, value_parser = parse_port)]
    pub port: Option<PortChoice>,
    /// Host to listen on and probe.
    #[arg(long)]
    pub host: Option<String>,
    /// Readiness probe: http[:PATH], tcp or log:REGEX.
    #[arg(long)]
    pub probe: Option<String>,
    /// A probe preset: claude-skills.
    #[arg(long)]
    pub preset: Option<String>,
    /// A JSON condition the health answer must meet (repeatable), e.g. `status==ok`.
    #[arg(long)]
    pub expect: Vec<String>,
    /// A numeric JSON field of the health answer shown as progress.
    #[arg(long)]
    pub progress_field: Option<String>,
    /// Fail if the health answer's `version` differs from this.
    #[arg(long)]
    pub expect_version: Option<String>,
    /// Overall readiness deadline, e.g. 120s.
    #[arg(long, value_parser = parse_dur)]
    pub timeout: Option<String>,
    /// Per-probe timeout, e.g. 2s.
    #[arg(long, value_parser = parse_dur)]
    pub probe_timeout: Option<String>,
    /// Grace period between SIGTERM and SIGKILL, e.g. 5s.
    #[arg(long, value_parser = parse_dur)]
    pub grace: Option<String>,
    /// Also stop a foreign process listening on the port.
    #[arg(long)]
    pub force_port: bool,
    /// Extra environment for the backend (repeatable), KEY=VALUE.
    #[arg(long, value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory of the backend.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// uvx: the package, PKG or PKG==VER.
    #[arg(long)]
    pub package: Option<String>,
    /// uvx: the entry point (default: the package name).
    #[arg(long)]
    pub entry: Option<String>,
    /// uvx: the Python version.
    #[arg(long)]
    pub python: Option<String>,
    /// uvx: no network access.
    #[arg(long)]
    pub offline: bool,
    /// uvx: the package index to use instead of the default.
    #[arg(long, value_name = "URL")]
    pub index_url: Option<String>,
    /// uvx: the uvx executable to run (default: uvx from PATH).
    #[arg(long, value_name = "PATH")]
    pub uvx: Option<PathBuf>,
    /// Do not check the health answer's `version` (against --expect-version or the pinned package).
    #[arg(long)]
    pub no_version_check: bool,
    /// docker: the image.
    #[arg(long)]
    pub image: Option<String>,
    /// docker: the port inside the container.
    #[arg(long)]
    pub container_port: Option<u16>,
    /// docker: always, missing or never.
    #[arg(long)]
    pub pull: Option<String>,
    /// After ready, restart the backend: no, on-failure or always.
    #[arg(long)]
    pub restart: Option<String>,
    /// At most this many restarts in a row (default 5).
    #[arg(long)]
    pub max_restarts: Option<u32>,
    /// Liveness probe after ready: http[:PATH] or tcp.
    #[arg(long)]
    pub liveness: Option<String>,
    /// How often the liveness probe runs, e.g. 5s.
    #[arg(long, value_parser = parse_dur)]
    pub liveness_period: Option<String>,
    /// Failed liveness probes in a row that end the backend (default 3).
    #[arg(long)]
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
        c.no_version_check = self.no_version_check.then_some(true);
        c.image = self.image.clone();
        c.container_port = self.container_port;
        c.pull = self.pull.clone();
        c.restart = self.restart.clone();
        c.max_restarts = self.max_restarts;
        c.liveness = self.liveness.clone();
        c.liveness_period = self.liveness_period.clone();
        c.liveness_failures = self.liveness_failures;
        c
    }
}
