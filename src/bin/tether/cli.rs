//! The command line, exactly per the CLI contract (the README's "Usage" and docs/cli.md; extend, don't break).
//!
//! The backend options of `up` and `mcp-proxy` are [`tether::Config`]'s (and `mcp-proxy`'s own,
//! [`tether::McpProxyFlags`]): each key is declared once there, its flag, its `TETHER_*`
//! variable and its `tether.toml` key. The precedence is: flag, then environment, then
//! `tether.toml`, then default (an environment value counts as a flag, and flags are laid over
//! the file). Not mapped to a variable: the repeatable options (`--expect`, `--env`, `-- ARGS`:
//! write them in `tether.toml`), and `--force-port` and `--replace`, which stop processes and so
//! stay explicit on each command line. Never mapped: `TETHER_INSTANCE`, which tether sets in
//! every backend's environment (a backend that runs `tether` itself must not see it as a flag).

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tether::{Config, McpProxyFlags};

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
        Cli::from_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The command line from clap's matches, noting where each backend option came from
    /// (flag or variable) for the errors about its value to name.
    fn from_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut cli = Cli::from_arg_matches(matches)?;
        if let Some((_, sub)) = matches.subcommand() {
            cli.command.note_sources(sub);
        }
        Ok(cli)
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

impl Command {
    /// Record which backend options came from a flag and which from a variable, for the
    /// errors about their values to say so (those from `tether.toml` name it themselves).
    fn note_sources(&mut self, matches: &clap::ArgMatches) {
        match self {
            Command::Up(args) => args.backend.keys.note_sources(matches),
            Command::McpProxy(args) => args.backend.keys.note_sources(matches),
            _ => {}
        }
    }
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

/// `port PORT`: a plain port number, with the range in the message.
fn parse_port_number(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("PORT must be a number from 1 to 65535".into()),
    }
}

/// `--share LINGER`.
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
    /// Show the backend's output (on stderr) as its bytes are, control characters and escape sequences
    /// included (by default they are shown escaped, colours kept on a terminal).
    #[arg(long)]
    pub raw: bool,

    /// The MCP front's options that are keys of `tether.toml` too (`--mcp-path`, `--tools`,
    /// `--call-wait`, `--list-wait`).
    #[command(flatten)]
    pub mcp: McpProxyFlags,
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

/// The backend options, shared by `up` and `mcp-proxy`: the keys of `tether.toml`
/// ([`Config`], where each is declared with its flag and `TETHER_*` variable: flag >
/// environment > file > default; the defaults named in the help are `Config::plan`'s), and
/// those of the command line only.
#[derive(Debug, Args)]
pub struct BackendArgs {
    /// Config file [default: ./tether.toml when it exists; mcp-proxy: none, only this]
    #[arg(long, env = "TETHER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The keys given as flags or variables (unset ones stay unset).
    #[command(flatten)]
    pub keys: Config,
    /// Replace a running detached instance of this name instead of reusing it.
    #[arg(long)]
    pub replace: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use tether::{Config, Source};

    use super::{Cli, Command};

    /// `tether ARGS` parsed as `main` parses it, sources noted.
    fn parse(args: &[&str]) -> Cli {
        let argv = std::iter::once("tether").chain(args.iter().copied());
        let matches = Cli::command().try_get_matches_from(argv).expect("valid arguments");
        Cli::from_matches(&matches).expect("valid arguments")
    }

    /// The long flags of subcommand `name`.
    fn flags_of(name: &str) -> Vec<String> {
        let cmd = Cli::command();
        let sub = cmd.find_subcommand(name).expect("a subcommand");
        sub.get_arguments().filter_map(|a| a.get_long()).map(str::to_string).collect()
    }

    #[test]
    fn every_key_is_a_flag_of_up_and_mcp_proxy_and_the_front_s_of_mcp_proxy_only() {
        let (up, proxy) = (flags_of("up"), flags_of("mcp-proxy"));
        let front = ["mcp-path", "tools", "call-wait", "list-wait"];
        for key in Config::KEYS.iter().filter(|k| **k != "args").map(|k| k.replace('_', "-")) {
            assert!(proxy.contains(&key), "mcp-proxy --{key}: {proxy:?}");
            assert_eq!(up.contains(&key), !front.contains(&key.as_str()), "up --{key}: {up:?}");
        }
        // And what is not a key of the file.
        for flag in ["config", "replace", "json", "raw", "detach", "share"] {
            assert!(up.contains(&flag.to_string()), "up --{flag}");
        }
    }

    #[test]
    fn the_flags_given_are_noted_as_their_sources() {
        let Command::Up(up) = parse(&["up", "--timeout", "0s", "--with", "mcp<2", "--offline", "--", "srv"]).command
        else {
            panic!("up")
        };
        let keys = &up.backend.keys;
        assert_eq!(keys.source("timeout"), Some(&Source::Flag("--timeout".into())));
        assert_eq!(keys.source("with"), Some(&Source::Flag("--with".into())));
        assert_eq!(keys.source("offline"), Some(&Source::Flag("--offline".into())));
        assert_eq!(keys.source("args"), Some(&Source::Flag("--".into())));
        assert_eq!(keys.source("grace"), None, "not given");
        assert_eq!(keys.source("force-port"), None, "a switch not given is no source");
        let e = keys.clone().plan().expect_err("too short");
        assert!(e.to_string().contains("bad --timeout `0s`: too short; the minimum is 100ms"), "{e}");
        let Command::McpProxy(proxy) = parse(&["mcp-proxy", "--call-wait", "1s", "--", "srv"]).command else {
            panic!("mcp-proxy")
        };
        assert_eq!(proxy.backend.keys.source("call-wait"), Some(&Source::Flag("--call-wait".into())));
        assert_eq!(proxy.mcp.call_wait.as_deref(), Some("1s"));
    }

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

    /// scripts/test unsets every `TETHER_*` variable but a few that are no option: run what
    /// it sources with each option's variable set (and one no option has yet), and none is
    /// left, while the few are kept.
    #[cfg(unix)]
    #[test]
    fn scripts_test_keeps_every_flag_variable_away_from_the_tests() {
        let root = env!("CARGO_MANIFEST_DIR");
        let script = std::fs::read_to_string(format!("{root}/scripts/test")).expect("scripts/test");
        assert!(script.contains("source scripts/lib/tether-env.sh"), "scripts/test sources scripts/lib/tether-env.sh");
        let kept = ["TETHER_STATE_DIR", "TETHER_LOG", "TETHER_TEST_SEED", "TETHER_SOAK_CYCLES", "TETHER_INSTANCE"];
        let options = env_names();
        let mut cmd = std::process::Command::new("bash");
        cmd.args(["-c", "source scripts/lib/tether-env.sh && env"]).current_dir(root);
        for name in options.iter().map(String::as_str).chain(["TETHER_A_FUTURE_OPTION"]).chain(kept) {
            cmd.env(name, "set-by-a-developer");
        }
        let out = cmd.output().expect("run bash");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let env = String::from_utf8_lossy(&out.stdout);
        let left: Vec<&str> = env.lines().filter_map(|l| l.split_once('=')).map(|(k, _)| k).collect();
        for name in options.iter().map(String::as_str).chain(["TETHER_A_FUTURE_OPTION"]) {
            assert!(!left.contains(&name), "scripts/test must unset {name}: {left:?}");
        }
        for name in kept {
            assert!(left.contains(&name), "scripts/test keeps {name}: {left:?}");
        }
    }
}
