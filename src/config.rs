//! `tether.toml`, the flags of `up` and `mcp-proxy` and their `TETHER_*` variables: the same
//! keys, each declared once as a field of [`Config`] (its flag, its variable, its key in the
//! file, its help); flags win, unknown keys are errors, and an error about a value names where
//! it came from ([`Source`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use serde::Deserialize;
use tether_core::probe::{Condition, HttpProbe, LogProbe, TcpProbe};
use tether_core::restart::{Liveness, RestartOptions};
use tether_core::{Error, HealthProbe, Result};

use crate::RunnerKind;
#[cfg(feature = "remote")]
use tether_runner_remote::RemoteUrl;

/// Without the remote runner a URL cannot be attached to: choosing it is an error
/// naming the feature (as building any runner whose feature is off).
#[cfg(not(feature = "remote"))]
struct RemoteUrl;

#[cfg(not(feature = "remote"))]
impl RemoteUrl {
    fn parse(_text: &str) -> Result<Self> {
        Err(Error::config(
            "this build of tether has no `remote` runner; rebuild with the cargo feature `remote` \
             (it is on by default: `cargo build --features remote`)",
        ))
    }

    fn host(&self) -> &str {
        ""
    }

    fn port(&self) -> u16 {
        0
    }

    fn path(&self) -> &str {
        ""
    }
}

pub use tether_core::instance::PortChoice;

/// Defines [`Config`] and [`McpProxyFlags`] from one list of keys, and from the same list
/// what must name every key: [`Config::KEYS`], [`Config::overlay`], the sources a file
/// gives ([`Config::from_file`]) and [`McpProxyFlags::lay_onto`]. A key is written once:
/// its doc comment is its `--help` text and its documentation, its `#[arg]` its flag,
/// variable and value parser (clap), its `#[serde]` its `tether.toml` key.
///
/// The second list holds the keys that are flags of `mcp-proxy` only (and keys of the file
/// for both commands): each is written doc comment, `#[arg(...)]`, then any `#[serde(...)]`.
macro_rules! config_keys {
    (
        $(#[$meta:meta])*
        pub struct Config {
            $(
                $(#[$attr:meta])*
                pub $key:ident: $ty:ty,
            )*
        }

        $(#[$mcp_meta:meta])*
        pub struct McpProxyFlags {
            $(
                $(#[doc = $mcp_doc:literal])*
                #[arg $mcp_arg:tt]
                $(#[serde $mcp_serde:tt])*
                pub $mcp_key:ident: $mcp_ty:ty,
            )*
        }
    ) => {
        $(#[$meta])*
        pub struct Config {
            $(
                $(#[$attr])*
                pub $key: $ty,
            )*
            $(
                $(#[doc = $mcp_doc])*
                #[arg(skip)]
                $(#[serde $mcp_serde])*
                pub $mcp_key: $mcp_ty,
            )*
            /// Where each key's value came from, for errors to name it.
            #[arg(skip)]
            #[serde(skip)]
            pub(crate) sources: BTreeMap<&'static str, Source>,
        }

        $(#[$mcp_meta])*
        pub struct McpProxyFlags {
            $(
                $(#[doc = $mcp_doc])*
                #[arg $mcp_arg]
                pub $mcp_key: $mcp_ty,
            )*
        }

        impl Config {
            /// Every key, as its field is named (`probe_timeout`; the file and the flags
            /// write it in kebab-case, `probe-timeout`).
            pub const KEYS: &[&str] = &[$(stringify!($key),)* $(stringify!($mcp_key),)*];

            /// Put `flags` over `self`: every key set in `flags` wins, with its source;
            /// `env` adds its variables (one of the same name wins).
            pub fn overlay(&mut self, mut flags: Config) {
                $(
                    if Layer::lay(&mut self.$key, flags.$key) {
                        self.take_source(stringify!($key), &mut flags.sources);
                    }
                )*
                $(
                    if Layer::lay(&mut self.$mcp_key, flags.$mcp_key) {
                        self.take_source(stringify!($mcp_key), &mut flags.sources);
                    }
                )*
            }

            /// The keys that are set, as their fields are named.
            fn set_keys(&self) -> Vec<&'static str> {
                let mut set = Vec::new();
                $( if Layer::is_set(&self.$key) { set.push(stringify!($key)); } )*
                $( if Layer::is_set(&self.$mcp_key) { set.push(stringify!($mcp_key)); } )*
                set
            }
        }

        impl McpProxyFlags {
            /// Put the flags given over `config` (the other flags, from [`Config`]).
            pub fn lay_onto(self, config: &mut Config) {
                $( Layer::lay(&mut config.$mcp_key, self.$mcp_key); )*
            }
        }
    };
}

config_keys! {
    /// Every setting of an instance, as written in `tether.toml`, given as flags of `up` and
    /// `mcp-proxy`, or read from `TETHER_*` variables: the same keys, and all optional
    /// (unset keys take the defaults [`Config::plan`] fills in).
    #[derive(Debug, Clone, Default, Deserialize, clap::Args)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    #[non_exhaustive]
    // The keys' docs are their help: `http[:PATH]` is a syntax, not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    pub struct Config {
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
        #[serde(default)]
        pub expect: Vec<String>,
        /// A numeric JSON field of the health answer shown as progress.
        #[arg(long, env = "TETHER_PROGRESS_FIELD", value_name = "FIELD")]
        pub progress_field: Option<String>,
        /// Fail if the health answer's `version` differs from this.
        #[arg(long, env = "TETHER_EXPECT_VERSION", value_name = "VER")]
        pub expect_version: Option<String>,
        /// Overall readiness deadline, at least 100ms [default: 120s]
        #[arg(long, env = "TETHER_TIMEOUT", value_name = "DUR", value_parser = parse_dur)]
        #[serde(default, deserialize_with = "duration_text")]
        pub timeout: Option<String>,
        /// Timeout of each probe attempt, at least 10ms [default: 2s]
        #[arg(long, env = "TETHER_PROBE_TIMEOUT", value_name = "DUR", value_parser = parse_dur)]
        #[serde(default, deserialize_with = "duration_text")]
        pub probe_timeout: Option<String>,
        /// uvx: deadline of installing the backend's environment (uv's downloads), at least 1s;
        /// --timeout starts after it [default: 15m]
        #[arg(long, env = "TETHER_INSTALL_TIMEOUT", value_name = "DUR", value_parser = parse_dur)]
        #[serde(default, deserialize_with = "duration_text")]
        pub install_timeout: Option<String>,
        /// Grace period between SIGTERM and SIGKILL [default: 5s]
        #[arg(long, env = "TETHER_GRACE", value_name = "DUR", value_parser = parse_dur)]
        #[serde(default, deserialize_with = "duration_text")]
        pub grace: Option<String>,
        /// Also stop a foreign process listening on the port.
        #[arg(long)]
        #[serde(default)]
        pub force_port: bool,
        /// Extra environment for the backend (`--env KEY=VALUE`, repeatable; the file's
        /// `[env]` table).
        #[command(flatten)]
        #[serde(default)]
        pub env: EnvVars,
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
        #[serde(default)]
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
        #[serde(default)]
        pub with: Vec<String>,
        /// uvx: a constraints file (repeatable; uvx --constraints): version bounds for whatever
        /// uv resolves, e.g. a line `mcp<2`; TETHER_CONSTRAINT gives one
        #[arg(long, env = "TETHER_CONSTRAINT", value_name = "FILE")]
        #[serde(default)]
        pub constraint: Vec<PathBuf>,
        /// Do not check the health answer's `version` (against --expect-version or the pinned package).
        #[arg(long, env = "TETHER_NO_VERSION_CHECK", value_parser = BoolishValueParser::new())]
        #[serde(default)]
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
        #[serde(default, deserialize_with = "duration_text")]
        pub liveness_period: Option<String>,
        /// Failed liveness probes in a row that end the backend [default: 3]
        #[arg(long, env = "TETHER_LIVENESS_FAILURES", value_name = "N")]
        pub liveness_failures: Option<u32>,
        /// The backend's arguments (native: PROGRAM ARGS...); `{port}` and `{host}` are substituted.
        #[arg(last = true)]
        #[serde(default)]
        pub args: Vec<String>,
    }

    /// The keys that are flags of `mcp-proxy` only (`up` has none of them; in `tether.toml`
    /// they are keys of both, and `up` ignores them). Their values go into [`Config`].
    #[derive(Debug, Clone, Default, clap::Args)]
    #[non_exhaustive]
    pub struct McpProxyFlags {
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
        #[serde(default, deserialize_with = "duration_text")]
        pub call_wait: Option<String>,
        /// How long the first `tools/list` waits for the backend when there is no cached list,
        /// no --tools file and no preset with tools, before it answers what it has (default 8s,
        /// below the hosts' start limits).
        #[arg(long, value_name = "DUR", value_parser = parse_dur)]
        #[serde(default, deserialize_with = "duration_text")]
        pub list_wait: Option<String>,
    }
}

/// Where the value of a key came from: what an error about it names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// The command line: this flag (`--timeout`), or `--` for the arguments after it.
    Flag(String),
    /// This environment variable (`TETHER_TIMEOUT`).
    Env(String),
    /// A config file.
    File {
        /// The file, as it was given (`tether.toml`).
        path: PathBuf,
        /// The key, as written there (`probe-timeout`).
        key: String,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(flag) => f.write_str(flag),
            Source::Env(var) => f.write_str(var),
            Source::File { path, key } => write!(f, "{}, key `{key}`", path.display()),
        }
    }
}

/// How a layer of the configuration (the flags) lies over another (the file).
trait Layer {
    /// Whether a value is set: written in the file, given as a flag.
    fn is_set(&self) -> bool;
    /// Lay `top` over `self`; true when the value is now `top`'s (and so is its source).
    fn lay(&mut self, top: Self) -> bool;
}

impl<T> Layer for Option<T> {
    fn is_set(&self) -> bool {
        self.is_some()
    }

    fn lay(&mut self, top: Self) -> bool {
        let set = top.is_some();
        if set {
            *self = top;
        }
        set
    }
}

/// A list is replaced as a whole (the flags' `--with` replace the file's `with`).
impl<T> Layer for Vec<T> {
    fn is_set(&self) -> bool {
        !self.is_empty()
    }

    fn lay(&mut self, top: Self) -> bool {
        let set = !top.is_empty();
        if set {
            *self = top;
        }
        set
    }
}

/// A switch is on when either layer turns it on (a flag cannot turn off the file's).
impl Layer for bool {
    fn is_set(&self) -> bool {
        *self
    }

    fn lay(&mut self, top: Self) -> bool {
        let turned_on = top && !*self;
        *self |= top;
        turned_on
    }
}

/// The variables of both layers, the top one's winning by name. The source is the one a
/// bad key would have: the top's when only it has variables or one of its keys is bad, else
/// the file's.
impl Layer for EnvVars {
    fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    fn lay(&mut self, top: Self) -> bool {
        let theirs = !top.0.is_empty() && (self.0.is_empty() || top.0.keys().any(|key| env_key_problem(key).is_some()));
        self.0.extend(top.0);
        theirs
    }
}

/// The `env` key: extra environment for the backend, by name (`--env KEY=VALUE`, the
/// file's `[env]` table).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct EnvVars(pub BTreeMap<String, String>);

impl std::ops::Deref for EnvVars {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for EnvVars {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<BTreeMap<String, String>> for EnvVars {
    fn from(vars: BTreeMap<String, String>) -> Self {
        EnvVars(vars)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for EnvVars {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        EnvVars(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

/// `--env KEY=VALUE` (repeatable), collected by name (a later one of a name wins). Written
/// by hand: clap's derive knows lists, not maps.
impl clap::FromArgMatches for EnvVars {
    fn from_arg_matches(matches: &clap::ArgMatches) -> std::result::Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut clap::ArgMatches) -> std::result::Result<Self, clap::Error> {
        Ok(matches.remove_many::<(String, String)>("env").into_iter().flatten().collect())
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> std::result::Result<(), clap::Error> {
        self.update_from_arg_matches_mut(&mut matches.clone())
    }

    fn update_from_arg_matches_mut(&mut self, matches: &mut clap::ArgMatches) -> std::result::Result<(), clap::Error> {
        self.0.extend(Self::from_arg_matches_mut(matches)?.0);
        Ok(())
    }
}

impl clap::Args for EnvVars {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.arg(
            clap::Arg::new("env")
                .long("env")
                .value_name("KEY=VALUE")
                .value_parser(parse_env)
                .action(clap::ArgAction::Append)
                .help("Extra environment for the backend (repeatable)"),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// `--runner`.
fn parse_runner(s: &str) -> std::result::Result<RunnerKind, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

/// `--port`: a number or `auto`.
fn parse_port(s: &str) -> std::result::Result<PortChoice, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

/// A duration flag: checked as it is parsed, kept as its text (as the file's, so that one
/// parser checks both in [`Config::plan`]).
fn parse_dur(s: &str) -> std::result::Result<String, String> {
    parse_duration(s).map(|_| s.to_string())
}

/// `--env KEY=VALUE` (its key is checked with the file's, in [`Config::plan`]).
fn parse_env(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("bad --env `{s}`: write KEY=VALUE")),
    }
}

/// A duration key of the config file: a string (`"500ms"`, `"2s"`, `"1m"`), or a number
/// of seconds (`5`, `0.5`), kept as the text the flags would give, so one parser checks
/// both.
fn duration_text<'de, D: serde::Deserializer<'de>>(de: D) -> std::result::Result<Option<String>, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration: a string such as \"500ms\", \"2s\" or \"1m\", or a number of seconds (5, 0.5)")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<String, E> {
            u64::try_from(v)
                .map(|v| v.to_string())
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<String, E> {
            // Display of an f64 never uses an exponent: `0.05`, not `5e-2`.
            if v.is_finite() && v >= 0.0 {
                Ok(v.to_string())
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
            }
        }
    }
    de.deserialize_any(Text).map(Some)
}

impl Config {
    /// Read `tether.toml` (or another file). Errors name the file and the key, and so do
    /// the errors of [`Config::plan`] about a value the file gave.
    ///
    /// Only a regular file of at most [`MAX_CONFIG_BYTES`] is read: a device (`/dev/zero`)
    /// or a FIFO is refused without blocking, a larger file is refused, each naming it.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_config_file(path)?;
        let mut config =
            Self::from_toml(&text).map_err(|e| Error::config(format!("config file {}: {e}", path.display())))?;
        for key in config.set_keys() {
            config.sources.insert(key, Source::File { path: path.to_path_buf(), key: key.replace('_', "-") });
        }
        Ok(config)
    }

    /// Parse TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::config(e.message().trim().to_string() + &location(text, e.span())))
    }

    /// Record where each key given in `matches` came from: its flag or its variable, for
    /// errors to name. `matches` are those of a command that flattens [`Config`] (and
    /// maybe [`McpProxyFlags`]), as `tether up` and `tether mcp-proxy` do; keys it does not
    /// have, or that were not given, are left alone.
    pub fn note_sources(&mut self, matches: &clap::ArgMatches) {
        use clap::Args;
        use clap::parser::ValueSource;
        let cmd = McpProxyFlags::augment_args(Config::augment_args(clap::Command::new("tether")));
        for arg in cmd.get_arguments() {
            let Some(key) = Self::KEYS.iter().copied().find(|k| arg.get_id().as_str() == *k) else { continue };
            if !matches.ids().any(|id| id.as_str() == key) {
                continue;
            }
            let source = match matches.value_source(key) {
                Some(ValueSource::CommandLine) => match arg.get_long() {
                    Some(long) => Source::Flag(format!("--{long}")),
                    None => Source::Flag("--".into()),
                },
                Some(ValueSource::EnvVariable) => match arg.get_env() {
                    Some(var) => Source::Env(var.to_string_lossy().into_owned()),
                    None => continue,
                },
                _ => continue,
            };
            self.sources.insert(key, source);
        }
    }

    /// Where the value of `key` (`probe-timeout` or `probe_timeout`) came from, when known:
    /// a flag, a variable (see [`Config::note_sources`]) or a file ([`Config::from_file`]).
    pub fn source(&self, key: &str) -> Option<&Source> {
        self.sources.get(key.replace('-', "_").as_str())
    }

    /// `key`'s source, from `flags`' sources to ours.
    fn take_source(&mut self, key: &'static str, flags: &mut BTreeMap<&'static str, Source>) {
        match flags.remove(key) {
            Some(source) => self.sources.insert(key, source),
            None => self.sources.remove(key),
        };
    }

    /// `error` about `key` (`probe-timeout` or `probe_timeout`), saying where its value came
    /// from when that was a variable or a file: the flag it names (`--probe-timeout`)
    /// becomes the key, and `(from TETHER_PROBE_TIMEOUT)` or `(from FILE, key
    /// `probe-timeout`)` follows it (after its value when one follows). A value from the
    /// command line (or set by code) leaves the message as it is: it names the flag.
    pub(crate) fn blame(&self, key: &str, error: Error) -> Error {
        match (error, self.source(key)) {
            (Error::Config { message }, Some(source @ (Source::Env(_) | Source::File { .. }))) => {
                Error::config(name_source(&message, key, source))
            }
            (error, _) => error,
        }
    }

    /// ` (from SOURCE)` when `key`'s value came from a variable or a file, else nothing.
    fn named_source(&self, key: &str) -> String {
        match self.source(key) {
            Some(source @ (Source::Env(_) | Source::File { .. })) => format!(" (from {source})"),
            _ => String::new(),
        }
    }

    /// Check everything and fill in defaults.
    pub fn plan(mut self) -> Result<Plan> {
        self.apply_preset();
        let constraint = self.constraint.iter().map(|f| constraints_file(f)).collect::<Result<_>>();
        self.constraint = constraint.map_err(|e| self.blame("constraint", e))?;
        let name = self.name.clone().unwrap_or_else(|| "default".into());
        let runner = match self.runner {
            Some(r) => r,
            None if self.url.is_some() => RunnerKind::Remote,
            None if self.package.is_some() => RunnerKind::Uvx,
            None if self.image.is_some() => RunnerKind::Docker,
            None => RunnerKind::Native,
        };
        let timeout = self.at_least("timeout", self.timeout.as_deref(), Duration::from_secs(120), MIN_TIMEOUT)?;
        let probe_timeout =
            self.at_least("probe-timeout", self.probe_timeout.as_deref(), Duration::from_secs(2), MIN_PROBE_TIMEOUT)?;
        let install_timeout = self.at_least(
            "install-timeout",
            self.install_timeout.as_deref(),
            DEFAULT_INSTALL_TIMEOUT,
            Duration::from_secs(1),
        )?;
        let grace = self.duration("grace", self.grace.as_deref(), Duration::from_secs(5))?;
        // Checked with or without `liveness`: a bad value is an error wherever it is.
        let liveness_period = self.at_least(
            "liveness-period",
            self.liveness_period.as_deref(),
            Duration::from_secs(5),
            MIN_LIVENESS_PERIOD,
        )?;
        // The docker runner keeps the image's working directory (this is a host path).
        if let Some(dir) = self.cwd.as_deref().filter(|_| runner != RunnerKind::Docker) {
            check_cwd(dir).map_err(|e| self.blame("cwd", e))?;
        }
        let remote = self.remote_url(runner)?;
        let probe = self.build_probe(runner)?;
        // A remote backend is not ours to restart: "restarting" it is re-probing it until it
        // answers again (reconnecting), by default always and without a limit.
        let (default_policy, default_max) = if remote.is_some() { ("always", None) } else { ("no", Some(5)) };
        let restart = RestartOptions::default()
            .with_policy(
                self.restart.as_deref().unwrap_or(default_policy).parse().map_err(|e| self.blame("restart", e))?,
            )
            .with_max_restarts(self.max_restarts.or(default_max));
        let liveness_failures = match self.liveness_failures {
            Some(0) => {
                return Err(self.blame(
                    "liveness-failures",
                    Error::config(
                        "bad --liveness-failures `0`: give 1 or more (how many failed checks in a row mean the \
                         backend is dead; the default is 3)",
                    ),
                ));
            }
            n => n.unwrap_or(3),
        };
        check_env_keys(self.env.keys()).map_err(|e| self.blame("env", e))?;
        let liveness = match &self.liveness {
            // No process to exit: without a probe a lost remote backend would go unnoticed,
            // so its liveness probe is its readiness probe.
            None if remote.is_some() => Some(Liveness {
                probe: Arc::clone(&probe),
                period: liveness_period,
                failures: liveness_failures,
                timeout: probe_timeout,
            }),
            None => None,
            Some(text) => Some(Liveness {
                probe: liveness_probe(text).map_err(|e| self.blame("liveness", e))?,
                period: liveness_period,
                failures: liveness_failures,
                timeout: probe_timeout,
            }),
        };
        let (host, port) = match &remote {
            // The user's remote: its host may be any name (no bind test, no loopback rule).
            Some(url) => (url.host().to_string(), PortChoice::Fixed(url.port())),
            None => {
                let host = self.host.clone().unwrap_or_else(|| DEFAULT_HOST.into());
                check_host_for(runner, &host, self.host.is_some()).map_err(|e| self.blame("host", e))?;
                (host, self.port.unwrap_or(PortChoice::Fixed(8765)))
            }
        };
        Ok(Plan {
            restart,
            liveness,
            name,
            runner,
            port,
            host,
            probe,
            timeout,
            probe_timeout,
            install_timeout,
            grace,
            force_port: self.force_port,
            config: self,
        })
    }

    /// What the `claude-skills` preset knows beyond its probe: with nothing else to run
    /// (no runner, package, image or URL; arguments, if any, are options such as
    /// `--config CFG`, not a program), it runs the package [`CLAUDE_SKILLS_PACKAGE`] through
    /// uvx on tether's port (`--port {port} --host {host}` unless given, also for another
    /// version given with `--package`); and that package run through uvx (pinned or not,
    /// with the preset or without) gets `mcp<2` unless `--with` already names `mcp`: its 1.0.6 imports `mcp.server.fastmcp`, which mcp 2 removed, and
    /// asks only for `mcp>=1.0.0`, so a fresh resolve crashes at import.
    pub(crate) fn apply_preset(&mut self) {
        let preset = self.preset.as_deref() == Some("claude-skills");
        let options_only = self.args.first().is_none_or(|a| a.starts_with('-'));
        let nothing_to_run =
            self.runner.is_none() && self.package.is_none() && self.image.is_none() && self.url.is_none();
        if preset && nothing_to_run && options_only {
            self.package = Some(CLAUDE_SKILLS_PACKAGE.into());
        }
        let runs_it = self.package.as_deref().is_some_and(|p| {
            let name = p.split(|c: char| "=<>!~;[ ".contains(c)).next().unwrap_or_default();
            name.replace('_', "-").eq_ignore_ascii_case("claude-skills-mcp-backend")
        });
        if !runs_it || self.runner.is_some_and(|r| r != RunnerKind::Uvx) {
            return;
        }
        let names_mcp = |w: &String| {
            let name = w.split(|c: char| "=<>!~;[ ".contains(c)).next().unwrap_or_default();
            name.eq_ignore_ascii_case("mcp")
        };
        if !self.with.iter().any(names_mcp) {
            self.with.push("mcp<2".into());
        }
        // Its own default port (8765) is not the one tether picks and probes.
        if preset && options_only {
            for (flag, value) in [("--port", "{port}"), ("--host", "{host}")] {
                if !self.args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}="))) {
                    self.args.extend([flag.to_string(), value.to_string()]);
                }
            }
        }
    }

    /// The version the health answer must report: `expect-version`, else (uvx) the pinned
    /// package version; none with `no-version-check`.
    fn expected_version(&self, runner: RunnerKind) -> Option<String> {
        if self.no_version_check {
            return None;
        }
        self.expect_version.clone().or_else(|| match (runner, self.package.as_deref()) {
            (RunnerKind::Uvx, Some(package)) => pinned_version(package),
            _ => None,
        })
    }

    /// Whether this attaches to a backend someone else runs: `runner = "remote"`, or a
    /// `url` with no runner named.
    pub fn is_remote(&self) -> bool {
        self.runner == Some(RunnerKind::Remote) || (self.runner.is_none() && self.url.is_some())
    }

    /// The path of `url` (without a trailing `/`), when it has one: `mcp-proxy`'s default
    /// MCP endpoint for a remote backend. `None` for no URL, a bad one, or no path.
    pub fn url_path(&self) -> Option<String> {
        let url = RemoteUrl::parse(self.url.as_deref()?).ok()?;
        Some(url.path().to_string()).filter(|p| !p.is_empty())
    }

    /// The remote runner's URL, checked with everything that makes no sense with it
    /// (`None` for the other runners, which must not have a URL).
    fn remote_url(&self, runner: RunnerKind) -> Result<Option<RemoteUrl>> {
        if runner != RunnerKind::Remote {
            if let Some(url) = &self.url {
                return Err(self.blame(
                    "url",
                    Error::config(format!(
                        "--url `{url}` is only for --runner remote (a backend someone else runs); the {runner} \
                         runner starts its own backend on --host/--port: drop --url, or use --runner remote"
                    )),
                ));
            }
            return Ok(None);
        }
        let Some(text) = &self.url else {
            let runner = match self.named_source("runner") {
                from if from.is_empty() => "--runner remote".to_string(),
                from => format!("runner `remote`{from}"),
            };
            return Err(Error::config(format!(
                "{runner} needs the backend's address: --url http://HOST:PORT \
                 (or `url = \"http://HOST:PORT\"` in tether.toml)",
            )));
        };
        let url = RemoteUrl::parse(text).map_err(|e| self.blame("url", e))?;
        let nothing_started = "tether starts nothing with --runner remote (the backend is someone else's)";
        let refuse = |key: &str, what: &str, fix: &str| {
            Err(self.blame(key, Error::config(format!("{what} makes no sense: {nothing_started}; {fix}"))))
        };
        if self.port.is_some() {
            return refuse("port", "--port", "put the port in the URL, --url http://HOST:PORT");
        }
        if self.host.is_some() {
            return refuse("host", "--host", "put the host in the URL, --url http://HOST:PORT");
        }
        if self.cwd.is_some() {
            return refuse("cwd", "--cwd", "drop it");
        }
        if !self.args.is_empty() {
            // Named here: the message has no flag for `blame` to find.
            let what = match self.named_source("args") {
                from if from.is_empty() => "a command after `--` (or `args`)".to_string(),
                from => format!("`args`{from}"),
            };
            return Err(Error::config(format!("{what} makes no sense: {nothing_started}; drop it")));
        }
        if !self.env.is_empty() {
            return refuse("env", "--env", "drop it");
        }
        if self.force_port {
            return refuse("force-port", "--force-port", "nothing of tether's listens on a port to clear; drop it");
        }
        let other_runners = [
            ("image", self.image.is_some()),
            ("container-port", self.container_port.is_some()),
            ("pull", self.pull.is_some()),
            ("package", self.package.is_some()),
            ("entry", self.entry.is_some()),
            ("python", self.python.is_some()),
            ("offline", self.offline),
            ("index-url", self.index_url.is_some()),
            ("uvx", self.uvx.is_some()),
            ("with", !self.with.is_empty()),
            ("constraint", !self.constraint.is_empty()),
        ];
        if let Some((key, _)) = other_runners.iter().find(|(_, set)| *set) {
            return refuse(key, &format!("--{key}"), "it is an option of the docker or uvx runner; drop it");
        }
        Ok(Some(url))
    }

    fn build_probe(&self, runner: RunnerKind) -> Result<Arc<dyn HealthProbe>> {
        let conditions = self
            .expect
            .iter()
            .map(|c| Condition::parse(c).map_err(|e| self.blame("expect", Error::config(e.to_string()))))
            .collect::<Result<Vec<_>>>()?;
        let probe_text = self.probe.as_deref().unwrap_or("http:/health");
        let http_path = match probe_text {
            "http" => Some("/health".to_string()),
            s if s.starts_with("http:") => Some(s["http:".len()..].to_string()),
            _ => None,
        };
        if http_path.is_none() && (self.preset.is_some() || !conditions.is_empty() || self.progress_field.is_some()) {
            // Named here: several keys, each maybe from elsewhere.
            let from: String = ["probe", "preset", "expect", "progress-field"]
                .iter()
                .map(|key| (key, self.named_source(key)))
                .filter(|(_, from)| !from.is_empty())
                .map(|(key, from)| format!("; {key}{from}"))
                .collect();
            return Err(Error::config(format!(
                "--preset, --expect and --progress-field need an HTTP probe (--probe http[:PATH]){from}"
            )));
        }
        if let Some(path) = http_path {
            if path.is_empty() || !path.starts_with('/') {
                return Err(self.blame(
                    "probe",
                    Error::config(format!("bad probe `{probe_text}`: the path must start with `/`, e.g. http:/health")),
                ));
            }
            let mut probe = match self.preset.as_deref() {
                None => HttpProbe::new(path),
                Some("claude-skills") => HttpProbe::claude_skills(path),
                Some(other) => {
                    let e = Error::config(format!("unknown preset `{other}`; the presets are: claude-skills"));
                    return Err(self.blame("preset", e));
                }
            };
            for c in conditions {
                probe = probe.with_condition(c);
            }
            if let Some(f) = &self.progress_field {
                if f.trim().is_empty() {
                    return Err(self.blame(
                        "progress-field",
                        Error::config(format!(
                            "bad --progress-field `{f}`: give the JSON field of the health answer that counts \
                             progress, e.g. --progress-field skills_loaded"
                        )),
                    ));
                }
                probe = probe.with_progress_field(f);
            }
            if let Some(v) = self.expected_version(runner) {
                probe = probe.with_expected_version(v);
            }
            return Ok(Arc::new(probe));
        }
        if probe_text == "tcp" {
            return Ok(Arc::new(TcpProbe));
        }
        if probe_text == "mcp" || probe_text.starts_with("mcp:") {
            let path = probe_text.strip_prefix("mcp:").unwrap_or("/mcp");
            if !path.starts_with('/') {
                return Err(self.blame(
                    "probe",
                    Error::config(format!("bad probe `{probe_text}`: the path must start with `/`, e.g. mcp:/mcp")),
                ));
            }
            return Ok(Arc::new(tether_core::probe::McpProbe::new(path)));
        }
        if let Some(re) = probe_text.strip_prefix("log:") {
            if runner == RunnerKind::Remote {
                return Err(self.blame("probe", Error::config(format!(
                    "bad probe `{probe_text}`: a log probe reads the backend's output, and a remote backend's output \
                     stays on its own machine; use http[:PATH], tcp or mcp[:PATH]"
                ))));
            }
            if re.is_empty() {
                return Err(self.blame(
                    "probe",
                    Error::config(format!(
                        "bad probe `{probe_text}`: the regular expression is empty (it would match any line); give the \
                     text of the line that says ready, e.g. log:listening"
                    )),
                ));
            }
            let re = regex::Regex::new(re).map_err(|e| {
                self.blame(
                    "probe",
                    Error::config(format!("bad probe `{probe_text}`: the regular expression does not parse: {e}")),
                )
            })?;
            return Ok(Arc::new(LogProbe::new(re)));
        }
        Err(self.blame(
            "probe",
            Error::config(format!("bad probe `{probe_text}`; use http[:PATH], tcp, log:REGEX or mcp[:PATH]")),
        ))
    }
}

/// The version `package` pins (`PKG==VER`, or a wheel's), when it parses.
#[cfg(feature = "uvx")]
fn pinned_version(package: &str) -> Option<String> {
    tether_runner_uvx::PackageSpec::parse(package).ok()?.version().map(str::to_string)
}

/// Without the uvx runner there is nothing to run the package with (building it fails).
#[cfg(not(feature = "uvx"))]
fn pinned_version(_package: &str) -> Option<String> {
    None
}

/// The package the `claude-skills` preset runs when nothing else is given to run: the
/// version whose tools the preset lists (`src/mcp/presets/claude-skills.json`).
pub const CLAUDE_SKILLS_PACKAGE: &str = "claude-skills-mcp-backend==1.0.6";

/// A `--constraint` file, made absolute (uv runs in the backend's `--cwd`) and checked to
/// be a readable file, so that a typo is this error and not uv's after a start.
/// The largest config file tether reads (a tether.toml is a few hundred bytes).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The text of the config file at `path`: a regular file of at most [`MAX_CONFIG_BYTES`].
/// It is opened non-blocking, so a FIFO with no writer is refused, not waited on.
fn read_config_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| Error::config(format!("cannot read config file {}: {e}", path.display()));
    let file =
        tether_core::sys::private::never_blocks(std::fs::OpenOptions::new().read(true)).open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(Error::config(format!(
            "config file {} is not a regular file (a device, FIFO or directory); give the path of a TOML file",
            path.display()
        )));
    }
    let too_large = || {
        Error::config(format!(
            "config file {} is larger than 1 MiB; a tether config is a few keys — check the path",
            path.display()
        ))
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    // The file may grow after the check: read one byte past the cap at most.
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::config(format!(
            "config file {} is not UTF-8 text (at byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

fn constraints_file(file: &Path) -> Result<PathBuf> {
    let bad = |why: String| {
        Error::config(format!(
            "bad --constraint `{}`: {why}; give a requirements-style file, e.g. one line `mcp<2`",
            file.display()
        ))
    };
    let absolute = std::path::absolute(file).map_err(|e| bad(e.to_string()))?;
    match std::fs::metadata(&absolute) {
        Ok(meta) if meta.is_file() => Ok(absolute),
        Ok(_) => Err(bad("not a file".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// The host a plan gets when none is given: loopback only.
pub(crate) const DEFAULT_HOST: &str = "127.0.0.1";

/// Whether `runner` is the docker runner reaching a remote engine (`DOCKER_HOST`
/// other than a socket file: see `tether_runner_docker::is_remote`).
#[cfg(feature = "docker")]
pub(crate) fn remote_docker(runner: RunnerKind) -> bool {
    runner == RunnerKind::Docker && tether_runner_docker::engine_is_remote()
}

/// Without the docker runner there is no engine (building one fails).
#[cfg(not(feature = "docker"))]
pub(crate) fn remote_docker(_runner: RunnerKind) -> bool {
    false
}

/// `--host` for `runner` (`given`: set by the user, not the default). For the docker
/// runner on a remote engine it is an address of the engine's machine, where the
/// port is published and probed: required (this machine's loopback default would
/// never be reached), an IP literal (no DNS), not unspecified; it need not be an
/// address of this machine. Otherwise [`check_host`].
pub(crate) fn check_host_for(runner: RunnerKind, host: &str, given: bool) -> Result<()> {
    if !remote_docker(runner) {
        return check_host(host);
    }
    let engine = std::env::var("DOCKER_HOST").unwrap_or_default();
    if !given {
        return Err(Error::config(format!(
            "the Docker engine is remote (DOCKER_HOST={engine}): its 127.0.0.1 is not this machine's, so \
             `--host` is required — the IP address of the engine's machine as this machine reaches it, \
             where the container port is published and probed (e.g. --host 192.0.2.10)"
        )));
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) if !ip.is_unspecified() => Ok(()),
        _ => Err(Error::config(format!(
            "`--host` must be an IP address of the remote Docker engine's machine (DOCKER_HOST={engine}), as \
             this machine reaches it (e.g. 192.0.2.10), not '{host}': an IP literal, neither a name nor \
             0.0.0.0/::, which would be probed on this machine"
        ))),
    }
}

/// `--host` must be an IP address of this machine: a literal (never resolved, so no
/// DNS query and no name that resolves differently later), or exactly `localhost`
/// (loopback, without DNS). Loopback and unspecified addresses (`0.0.0.0`, `::`) are
/// always of this machine; any other is when a socket can be bound to it.
pub(crate) fn check_host(host: &str) -> Result<()> {
    let refuse = |why: String| {
        Error::config(format!(
            "`--host` must be an IP address of this machine (e.g. 127.0.0.1, ::1, 0.0.0.0), not '{host}': {why}"
        ))
    };
    if host == "localhost" {
        return Ok(());
    }
    let ip: std::net::IpAddr = host.parse().map_err(|_| refuse("not an IP address".into()))?;
    if ip.is_loopback() || ip.is_unspecified() {
        return Ok(());
    }
    match std::net::TcpListener::bind((ip, 0)) {
        Ok(_) => Ok(()),
        Err(e) => Err(refuse(format!("not an address of this machine: binding it fails with {e}"))),
    }
}

/// Every `--env` key (or `env` key of the config file) must be one an environment can
/// hold: not empty, without `=` or NUL (they would cut it), without a line break.
fn check_env_keys<'a>(keys: impl IntoIterator<Item = &'a String>) -> Result<()> {
    for key in keys {
        if let Some(why) = env_key_problem(key) {
            return Err(Error::config(format!(
                "bad --env key `{}`: {why}; write KEY=VALUE with a KEY of letters, digits and `_` (e.g. \
                 LOG_LEVEL=debug)",
                key.escape_debug()
            )));
        }
    }
    Ok(())
}

/// What is wrong with `key` as the name of an environment variable, if anything.
fn env_key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("it is empty")
    } else if key.contains('=') {
        Some("it contains `=`, which ends a key")
    } else if key.contains('\0') {
        Some("it contains a NUL byte")
    } else if key.contains(['\n', '\r']) {
        Some("it contains a line break")
    } else {
        None
    }
}

/// `--cwd` must be a directory the backend can be started in: checked here, so the
/// error names the directory (a failed spawn would name the program).
fn check_cwd(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::config(format!(
            "bad --cwd `{}`: not a directory; give the directory the backend runs in",
            dir.display()
        ))),
        Err(e) => Err(Error::config(format!(
            "bad --cwd `{}`: {e}; give an existing directory for the backend to run in",
            dir.display()
        ))),
    }
}

/// The liveness probe: `http[:PATH]` (2xx) or `tcp`.
fn liveness_probe(text: &str) -> Result<Arc<dyn HealthProbe>> {
    match text {
        "tcp" => Ok(Arc::new(TcpProbe)),
        "http" => Ok(Arc::new(HttpProbe::new("/health"))),
        s if s.starts_with("http:/") => Ok(Arc::new(HttpProbe::new(&s["http:".len()..]))),
        other => Err(Error::config(format!(
            "bad liveness probe `{other}`; use http[:PATH] (a path starting with `/`) or tcp"
        ))),
    }
}

/// `message` (about `key`) naming `source`: the flag of `key` (`--probe-timeout`), where it
/// is named, becomes the key (`probe-timeout`) followed by ` (from SOURCE)` — after the
/// value when one follows (`` `5ms` ``, `` key `A=B` ``), after the closing backtick when the
/// flag is in backticks. A message that names no flag gets it after its first backticked
/// value, or at its end.
fn name_source(message: &str, key: &str, source: &Source) -> String {
    let kebab = key.replace('_', "-");
    let flag = format!("--{kebab}");
    let from = format!(" (from {source})");
    // The flag as a word: `--env` is not in `--env-file`.
    let named = message
        .match_indices(&flag)
        .map(|(at, _)| at)
        .find(|&at| !message[at + flag.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '-' || c == '_'));
    let Some(at) = named else {
        // After the first `value`, or at the end.
        let end = message.find('`').and_then(|open| message[open + 1..].find('`').map(|close| open + close + 2));
        return match end {
            Some(end) => format!("{}{from}{}", &message[..end], &message[end..]),
            None => format!("{message}{from}"),
        };
    };
    let rest = &message[at + flag.len()..];
    let skip = if message[..at].ends_with('`') && rest.starts_with('`') { 1 } else { value_after(rest).unwrap_or(0) };
    format!("{}{kebab}{}{from}{}", &message[..at], &rest[..skip], &rest[skip..])
}

/// The length of `` `VALUE` `` or `` key `VALUE` `` (after a space) at the start of `rest`.
fn value_after(rest: &str) -> Option<usize> {
    let open = [" `", " key `"].iter().find(|p| rest.starts_with(*p))?.len();
    rest[open..].find('`').map(|close| open + close + 1)
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => {
            let line = text[..r.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

/// The shortest readiness deadline: less leaves no room for a process to start and
/// answer one probe on a loaded machine, so such a start fails by chance, not because
/// the backend is slow.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// uvx: the default deadline of installing the environment (the uvx runner's own default):
/// a first install of claude-skills-mcp-backend downloads ~5.5 GB.
const DEFAULT_INSTALL_TIMEOUT: Duration = Duration::from_secs(900);
/// The shortest time one probe attempt may take: below it, scheduling jitter alone times
/// out a healthy answer over loopback.
const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(10);
/// The shortest liveness period: at most 10 probes a second (`0s` was a busy loop of
/// about 1,165 requests a second against the backend).
const MIN_LIVENESS_PERIOD: Duration = Duration::from_millis(100);

impl Config {
    /// `key`'s duration (`text`, its value), `default` when unset; an error names where a
    /// bad value came from.
    pub(crate) fn duration(&self, key: &str, text: Option<&str>, default: Duration) -> Result<Duration> {
        duration(key, text, default).map_err(|e| self.blame(key, e))
    }

    /// [`Config::duration`], at least `min`.
    fn at_least(&self, key: &str, text: Option<&str>, default: Duration, min: Duration) -> Result<Duration> {
        duration_at_least(key, text, default, min).map_err(|e| self.blame(key, e))
    }
}

/// [`duration`], refusing values below `min` with a message naming the minimum.
fn duration_at_least(key: &str, text: Option<&str>, default: Duration, min: Duration) -> Result<Duration> {
    let d = duration(key, text, default)?;
    if d < min {
        return Err(Error::config(format!(
            "bad --{key} `{}`: too short; the minimum is {}ms",
            text.unwrap_or_default(),
            min.as_millis()
        )));
    }
    Ok(d)
}

/// `text` as a duration, `default` when unset; an error names `--KEY`.
fn duration(key: &str, text: Option<&str>, default: Duration) -> Result<Duration> {
    match text {
        None => Ok(default),
        Some(t) => parse_duration(t).map_err(|why| Error::config(format!("bad --{key} `{t}`: {why}"))),
    }
}

/// `500ms`, `2s`, `1.5s`, `2m`, or a plain number of seconds (the demo backend's parser, shared).
pub use tether_core::parse_duration;

/// A checked configuration with defaults filled in.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Plan {
    /// Instance name.
    pub name: String,
    /// The runner.
    pub runner: RunnerKind,
    /// The port.
    pub port: PortChoice,
    /// The host.
    pub host: String,
    /// The readiness probe.
    pub probe: Arc<dyn HealthProbe>,
    /// Overall readiness deadline.
    pub timeout: Duration,
    /// Per-probe timeout.
    pub probe_timeout: Duration,
    /// uvx: the deadline of installing the environment (before `timeout` starts).
    pub install_timeout: Duration,
    /// SIGTERM → SIGKILL grace.
    pub grace: Duration,
    /// Whether foreign port holders may be stopped.
    pub force_port: bool,
    /// The restart policy after ready.
    pub restart: RestartOptions,
    /// The liveness probe after ready.
    pub liveness: Option<Liveness>,
    /// Everything else, as given.
    pub config: Config,
}

impl Plan {
    /// Native runner: the program and its arguments.
    pub fn program(&self) -> Result<(String, Vec<String>)> {
        match self.config.args.split_first() {
            Some((p, rest)) => Ok((p.clone(), rest.to_vec())),
            None => Err(Error::config(
                "no program given for the native runner; write it after `--`, e.g. `tether up -- my-server --port {port}`",
            )),
        }
    }

    /// Remote runner: the backend's URL, as given.
    pub fn remote_url(&self) -> Result<&str> {
        self.config.url.as_deref().ok_or_else(|| {
            Error::config("the remote runner needs a URL: --url http://HOST:PORT (or `url = \"…\"` in tether.toml)")
        })
    }

    /// The backend's arguments (native: after the program).
    pub fn backend_args(&self) -> Vec<String> {
        match self.runner {
            RunnerKind::Native => self.config.args.iter().skip(1).cloned().collect(),
            _ => self.config.args.clone(),
        }
    }
}

pub(crate) use tether_core::instance::fnv1a;

/// Variables that differ between two shells or windows of one user without changing what
/// a backend does: left out of [`surroundings`].
const VOLATILE_ENV: &[&str] = &[
    "PWD",
    "OLDPWD",
    "SHLVL",
    "_",
    "TERM",
    "COLUMNS",
    "LINES",
    "WINDOWID",
    "TERM_SESSION_ID",
    "TMUX_PANE",
    "SSH_TTY",
    "SSH_CLIENT",
    "SSH_CONNECTION",
    "XDG_SESSION_ID",
    "ITERM_SESSION_ID",
    "GPG_TTY",
    "TMUX",
    "STY",
    "KITTY_WINDOW_ID",
    "KITTY_PID",
    "WEZTERM_PANE",
    "ALACRITTY_WINDOW_ID",
    "DBUS_SESSION_BUS_ADDRESS",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "COLORTERM",
    "TERM_PROGRAM",
    "TERM_PROGRAM_VERSION",
];

/// Prefixes of per-window variables (editors' integrated terminals), left out like
/// [`VOLATILE_ENV`].
const VOLATILE_ENV_PREFIXES: &[&str] = &["VSCODE_", "TERMINAL_EMULATOR", "WT_"];

/// What a started process backend inherits besides its arguments: its working directory (`--cwd`,
/// else this process's, canonical) and this process's environment (sorted `K=V`, without
/// [`VOLATILE_ENV`] and tether's own `TETHER_*` settings, which the plan already holds).
/// Part of a backend's fingerprint, so that a backend started elsewhere or with other
/// secrets is never reused (or shared) in place of the one this plan would start.
pub(crate) fn surroundings(plan: &Plan) -> Vec<String> {
    // A container inherits neither (only `--env` and the image, already in the plan), and a
    // backend someone else runs inherits nothing from us.
    if !matches!(plan.runner, RunnerKind::Native | RunnerKind::Uvx) {
        return Vec::new();
    }
    let cwd = plan.config.cwd.clone().or_else(|| std::env::current_dir().ok()).unwrap_or_default();
    let cwd = std::fs::canonicalize(&cwd).unwrap_or(cwd);
    let mut parts = vec![format!("cwd={}", cwd.display())];
    let mut env: Vec<String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
        .filter(|(k, _)| {
            !VOLATILE_ENV.contains(&k.as_str())
                && !k.starts_with("TETHER_")
                && !VOLATILE_ENV_PREFIXES.iter().any(|p| k.starts_with(p))
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.sort();
    parts.extend(env);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(args: &[&str], with: &[&str], package: Option<&str>) -> Config {
        let mut c = Config {
            preset: Some("claude-skills".into()),
            args: args.iter().map(|a| a.to_string()).collect(),
            with: with.iter().map(|a| a.to_string()).collect(),
            package: package.map(String::from),
            ..Config::default()
        };
        c.apply_preset();
        c
    }

    #[test]
    fn the_claude_skills_preset_alone_runs_the_known_good_backend() {
        let c = preset(&["--config", "skills.json"], &[], None);
        assert_eq!(c.package.as_deref(), Some(CLAUDE_SKILLS_PACKAGE));
        assert_eq!(c.with, ["mcp<2"]);
        assert_eq!(c.args, ["--config", "skills.json", "--port", "{port}", "--host", "{host}"]);
        // Given ports and hosts are kept, not doubled.
        let c = preset(&["--port={port}", "--host", "0.0.0.0"], &[], None);
        assert_eq!(c.args, ["--port={port}", "--host", "0.0.0.0"]);
        // A `--with` naming mcp is the user's choice.
        let c = preset(&[], &["mcp==1.26.0"], None);
        assert_eq!(c.with, ["mcp==1.26.0"]);
        // Another version of the package gets the bound and the port and host too.
        let c = preset(&["--port", "{port}"], &[], Some("claude_skills_mcp_backend>=1.0"));
        assert_eq!(c.with, ["mcp<2"]);
        assert_eq!(c.args, ["--port", "{port}", "--host", "{host}"]);
    }

    #[test]
    fn the_claude_skills_package_gets_mcp_below_2_without_the_preset_too() {
        let mut c = Config {
            package: Some("claude-skills-mcp-backend==1.0.6".into()),
            args: vec!["--port".into(), "{port}".into()],
            ..Config::default()
        };
        c.apply_preset();
        assert_eq!(c.with, ["mcp<2"]);
        assert_eq!(c.args, ["--port", "{port}"], "no preset: the arguments are the user's");
    }

    #[test]
    fn the_claude_skills_preset_leaves_other_backends_alone() {
        // A program of one's own (native), another package, another runner.
        let c = preset(&["./my-server", "--port", "{port}"], &[], None);
        assert_eq!((c.package, c.with.len()), (None, 0));
        let c = preset(&[], &[], Some("other-backend==2.0"));
        assert!(c.with.is_empty(), "{:?}", c.with);
        let mut c = Config {
            preset: Some("claude-skills".into()),
            runner: Some(RunnerKind::Docker),
            image: Some("skills:1".into()),
            ..Config::default()
        };
        c.apply_preset();
        assert_eq!((c.package, c.with.len()), (None, 0));
    }

    #[test]
    fn a_constraints_file_must_exist_and_is_made_absolute() {
        let c =
            Config { constraint: vec!["/no/such/pins.txt".into()], package: Some("p==1".into()), ..Config::default() };
        let e = c.plan().expect_err("a missing file");
        assert!(e.to_string().contains("bad --constraint `/no/such/pins.txt`"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Config { constraint: vec![dir.path().into()], package: Some("p==1".into()), ..Config::default() };
        assert!(c.plan().expect_err("a directory").to_string().contains("not a file"));
        let file = dir.path().join("pins.txt");
        std::fs::write(&file, "mcp<2\n").expect("write");
        let c = Config { constraint: vec![file.clone()], package: Some("p==1".into()), ..Config::default() };
        assert_eq!(c.plan().expect("a file").config.constraint, [file]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 parsecs").expect_err("unit").contains("500ms"));
    }

    #[test]
    fn ports() {
        assert_eq!("auto".parse::<PortChoice>().ok(), Some(PortChoice::Auto));
        assert_eq!("80".parse::<PortChoice>().ok(), Some(PortChoice::Fixed(80)));
        assert!("0".parse::<PortChoice>().expect_err("0").to_string().contains("1–65535"));
        assert!("70000".parse::<PortChoice>().expect_err("big").to_string().contains("out of range"));
    }

    #[test]
    fn toml_keys_unknown_and_wrong_types_are_named() {
        let c =
            Config::from_toml("runner = \"native\"\nport = \"auto\"\nargs = [\"srv\", \"{port}\"]\n[env]\nA = \"1\"\n")
                .expect("valid");
        assert_eq!(c.port, Some(PortChoice::Auto));
        let e = Config::from_toml("prot = 8080\n").expect_err("unknown key");
        assert!(e.to_string().contains("unknown field `prot`"), "{e}");
        let e = Config::from_toml("port = true\n").expect_err("wrong type");
        assert!(e.to_string().contains("a port number 1–65535 or \"auto\""), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = Config::from_toml("port = 70000\n").expect_err("range");
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = Config::from_toml("port = [\n").expect_err("syntax");
        assert!(e.to_string().contains("line"), "{e}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let mut file = Config::from_toml("port = 1000\nname = \"a\"\nargs = [\"x\"]\n").expect("valid");
        file.overlay(Config { port: Some(PortChoice::Fixed(2000)), ..Config::default() });
        assert_eq!(file.port, Some(PortChoice::Fixed(2000)));
        assert_eq!(file.name.as_deref(), Some("a"));
        assert_eq!(file.args, vec!["x"]);
    }

    #[test]
    fn hosts_must_be_addresses_of_this_machine() {
        for good in ["127.0.0.1", "::1", "0.0.0.0", "::", "localhost", "127.0.0.2"] {
            let c = Config { host: Some(good.into()), ..Config::default() };
            assert_eq!(c.plan().map(|p| p.host).ok().as_deref(), Some(good));
        }
        assert_eq!(Config::default().plan().map(|p| p.host).ok().as_deref(), Some("127.0.0.1"));
        for (bad, why) in [
            ("999.1.1.1", "not an IP address"),
            ("1.2.3.4;touch x", "not an IP address"),
            ("", "not an IP address"),
            ("no-such-host.invalid", "not an IP address"),
            ("[::1]", "not an IP address"),
            ("203.0.113.7", "not an address of this machine: binding it fails with"),
        ] {
            let c = Config { host: Some(bad.into()), ..Config::default() };
            let e = c.plan().expect_err(bad);
            let msg = e.to_string();
            assert!(
                msg.contains(&format!(
                    "must be an IP address of this machine (e.g. 127.0.0.1, ::1, 0.0.0.0), not '{bad}'"
                )),
                "{msg}"
            );
            assert!(msg.contains(why), "{bad}: {msg}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        // `tether up --help`, docs/cli.md and docs/runners.md name these.
        let plan = Config::default().plan().expect("the defaults plan");
        assert_eq!(plan.timeout, Duration::from_secs(120));
        assert_eq!(plan.probe_timeout, Duration::from_secs(2));
        assert_eq!(plan.install_timeout, Duration::from_secs(900));
        assert_eq!(plan.grace, Duration::from_secs(5));
        assert_eq!(plan.port, PortChoice::Fixed(8765));
        assert_eq!(plan.host, "127.0.0.1");
        assert_eq!(plan.name, "default");
        assert_eq!(plan.runner, RunnerKind::Native);
        let live = Config { liveness: Some("tcp".into()), ..Config::default() }.plan().expect("liveness");
        let live = live.liveness.expect("a liveness probe");
        assert_eq!((live.period, live.failures), (Duration::from_secs(5), 3));
    }

    #[test]
    fn durations_below_their_minimum_are_refused_naming_it() {
        let set = |key: &str, text: &str| {
            let mut c = Config::default();
            match key {
                "timeout" => c.timeout = Some(text.into()),
                "probe-timeout" => c.probe_timeout = Some(text.into()),
                "install-timeout" => c.install_timeout = Some(text.into()),
                _ => c.liveness_period = Some(text.into()),
            }
            c.plan()
        };
        for (key, low, min, ok) in [
            ("timeout", "0s", "100ms", "100ms"),
            ("probe-timeout", "0ms", "10ms", "10ms"),
            ("install-timeout", "500ms", "1000ms", "1s"),
            ("liveness-period", "0s", "100ms", "100ms"),
            ("liveness-period", "99ms", "100ms", "1s"),
        ] {
            let e = set(key, low).expect_err(key);
            assert!(e.to_string().contains(&format!("bad --{key} `{low}`: too short; the minimum is {min}")), "{e}");
            assert_eq!(e.exit_code(), 2);
            assert!(set(key, ok).is_ok(), "{key} {ok}");
        }
    }

    #[test]
    fn a_cwd_that_is_not_a_directory_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, "").expect("write");
        let with_cwd = |cwd: &Path, runner| Config { cwd: Some(cwd.into()), runner, ..Config::default() }.plan();
        assert!(with_cwd(dir.path(), None).is_ok());
        let missing = dir.path().join("gone");
        let e = with_cwd(&missing, None).expect_err("missing");
        assert!(e.to_string().contains(&format!("bad --cwd `{}`: No such file", missing.display())), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = with_cwd(&file, Some(RunnerKind::Uvx)).expect_err("a file");
        assert!(e.to_string().contains("not a directory"), "{e}");
        // The container keeps the image's working directory: a host path is not checked.
        assert!(with_cwd(&missing, Some(RunnerKind::Docker)).is_ok());
    }

    #[test]
    fn bad_probes_are_config_errors() {
        for (probe, preset, needle) in [
            ("grpc", None, "use http[:PATH], tcp, log:REGEX or mcp[:PATH]"),
            ("log:(", None, "does not parse"),
            ("http:health", None, "must start with `/`"),
            ("tcp", Some("claude-skills"), "need an HTTP probe"),
            ("http", Some("nope"), "unknown preset"),
        ] {
            let c = Config { probe: Some(probe.into()), preset: preset.map(Into::into), ..Config::default() };
            let e = c.plan().expect_err(probe);
            assert!(e.to_string().contains(needle), "{probe}: {e}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[cfg(feature = "remote")]
    #[test]
    fn a_remote_url_is_the_endpoint_and_a_lost_backend_is_reconnected() {
        let c = Config { url: Some("http://search.example:9000/mcp".into()), ..Config::default() };
        assert!(c.is_remote());
        assert_eq!(c.url_path().as_deref(), Some("/mcp"));
        let plan = c.plan().expect("a remote plan");
        assert_eq!(plan.runner, RunnerKind::Remote);
        assert_eq!((plan.host.as_str(), plan.port), ("search.example", PortChoice::Fixed(9000)));
        assert_eq!(plan.restart.policy, tether_core::restart::RestartPolicy::Always);
        assert_eq!(plan.restart.max_restarts, None, "reconnects without a limit");
        assert!(plan.liveness.is_some(), "a lost remote backend must be noticed");
        let limited = Config {
            url: Some("http://10.0.0.5:80".into()),
            restart: Some("no".into()),
            max_restarts: Some(2),
            ..Config::default()
        };
        let limited = limited.plan().expect("a remote plan");
        assert_eq!(limited.restart.policy, tether_core::restart::RestartPolicy::No);
        assert_eq!(limited.restart.max_restarts, Some(2));
    }

    #[cfg(feature = "remote")]
    #[test]
    fn options_of_started_backends_are_refused_with_remote() {
        let remote =
            || Config { runner: Some(RunnerKind::Remote), url: Some("http://127.0.0.1:9".into()), ..Config::default() };
        for (config, needle) in [
            (Config { url: None, ..remote() }, "needs the backend's address"),
            (Config { port: Some(PortChoice::Auto), ..remote() }, "--port makes no sense"),
            (Config { host: Some("::1".into()), ..remote() }, "--host makes no sense"),
            (Config { cwd: Some("/".into()), ..remote() }, "--cwd makes no sense"),
            (Config { args: vec!["srv".into()], ..remote() }, "a command after `--`"),
            (Config { image: Some("img".into()), ..remote() }, "--image makes no sense"),
            (Config { package: Some("p".into()), ..remote() }, "--package makes no sense"),
            (Config { force_port: true, ..remote() }, "--force-port makes no sense"),
            (Config { probe: Some("log:up".into()), ..remote() }, "output stays on its own machine"),
            (Config { runner: Some(RunnerKind::Native), ..remote() }, "only for --runner remote"),
            (Config { url: Some("http://h:1?x".into()), ..remote() }, "query or fragment"),
        ] {
            let e = config.plan().expect_err(needle);
            assert!(e.to_string().contains(needle), "{needle}: {e}");
            assert_eq!(e.exit_code(), 2, "{needle}");
        }
    }

    #[cfg(feature = "uvx")]
    #[test]
    fn a_pinned_uvx_package_implies_the_version_check() {
        let pkg = |p: &str| Config { package: Some(p.into()), ..Config::default() };
        assert_eq!(pkg("srv==1.4.0").expected_version(RunnerKind::Uvx).as_deref(), Some("1.4.0"));
        assert_eq!(pkg("d/srv-2.0-py3-none-any.whl").expected_version(RunnerKind::Uvx).as_deref(), Some("2.0"));
        assert_eq!(pkg("srv").expected_version(RunnerKind::Uvx), None);
        assert_eq!(pkg("srv==1.4.0").expected_version(RunnerKind::Native), None);
        let explicit = Config { expect_version: Some("9".into()), ..pkg("srv==1.4.0") };
        assert_eq!(explicit.expected_version(RunnerKind::Uvx).as_deref(), Some("9"));
        let off = Config { no_version_check: true, ..explicit };
        assert_eq!(off.expected_version(RunnerKind::Uvx), None);
        assert_eq!(pkg("srv==1.0").plan().map(|p| p.runner).ok(), Some(RunnerKind::Uvx));
    }

    /// A `tether.toml` with `text` in a temporary directory, read as `up` reads it.
    fn from_a_file(text: &str) -> (tempfile::TempDir, PathBuf, Config) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tether.toml");
        std::fs::write(&path, text).expect("write tether.toml");
        let config = Config::from_file(&path).expect("a valid file");
        (dir, path, config)
    }

    #[test]
    fn a_bad_value_from_a_file_names_the_file_and_the_key_not_the_flag() {
        for (text, key, needle) in [
            ("timeout = \"abc\"\n", "timeout", "bad timeout `abc` (from {file}, key `timeout`): "),
            (
                "probe-timeout = \"5ms\"\n",
                "probe-timeout",
                "bad probe-timeout `5ms` (from {file}, key `probe-timeout`): too short; the minimum is 10ms",
            ),
            (
                "liveness-failures = 0\n",
                "liveness-failures",
                "bad liveness-failures `0` (from {file}, key `liveness-failures`): give 1 or more",
            ),
            ("env = { \"A=B\" = \"1\" }\n", "env", "bad env key `A=B` (from {file}, key `env`): it contains `=`"),
            ("cwd = \"/no/such/dir\"\n", "cwd", "bad cwd `/no/such/dir` (from {file}, key `cwd`): "),
            ("host = \"no-such-host.invalid\"\n", "host", "`host` (from {file}, key `host`) must be an IP address"),
            ("probe = \"grpc\"\n", "probe", "bad probe `grpc` (from {file}, key `probe`); use http[:PATH]"),
            ("restart = \"sometimes\"\n", "restart", "unknown restart policy `sometimes` (from {file}, key `restart`)"),
            ("expect = [\"=1\"]\n", "expect", "bad condition `=1` (from {file}, key `expect`): "),
            (
                "url = \"http://h:1\"\nrunner = \"native\"\n",
                "url",
                "url `http://h:1` (from {file}, key `url`) is only for --runner remote",
            ),
        ] {
            let (_dir, path, config) = from_a_file(text);
            let e = config.plan().expect_err(key);
            let needle = needle.replace("{file}", &path.display().to_string());
            assert!(e.to_string().contains(&needle), "{key}: expected `{needle}` in: {e}");
            assert!(!e.to_string().contains(&format!("--{key} ")), "{key}: names the flag: {e}");
            assert_eq!(e.exit_code(), 2, "{key}");
        }
    }

    #[cfg(feature = "remote")]
    #[test]
    fn refusals_of_the_remote_runner_name_where_the_option_came_from() {
        let (_dir, path, config) = from_a_file("url = \"http://127.0.0.1:9\"\nport = 80\nargs = [\"srv\"]\n");
        let e = config.plan().expect_err("port with a URL");
        let file = path.display();
        assert!(e.to_string().starts_with(&format!("port (from {file}, key `port`) makes no sense: ")), "{e}");
        let (_dir, path, config) = from_a_file("url = \"http://127.0.0.1:9\"\nargs = [\"srv\"]\n");
        let e = config.plan().expect_err("args with a URL");
        let file = path.display();
        assert!(e.to_string().starts_with(&format!("`args` (from {file}, key `args`) makes no sense: ")), "{e}");
        let (_dir, path, config) = from_a_file("runner = \"remote\"\n");
        let e = config.plan().expect_err("no URL");
        let file = path.display();
        assert!(
            e.to_string()
                .starts_with(&format!("runner `remote` (from {file}, key `runner`) needs the backend's address")),
            "{e}"
        );
    }

    #[test]
    fn a_flag_over_the_file_takes_the_source_with_the_value() {
        let (_dir, path, mut config) = from_a_file("timeout = \"1m\"\ngrace = \"1s\"\nprobe-timeout = \"5ms\"\n");
        let mut flags = Config { probe_timeout: Some("1ms".into()), ..Config::default() };
        flags.sources.insert("probe_timeout", Source::Env("TETHER_PROBE_TIMEOUT".into()));
        config.overlay(flags);
        assert_eq!(config.source("probe-timeout"), Some(&Source::Env("TETHER_PROBE_TIMEOUT".into())));
        let file = |key: &str| Source::File { path: path.clone(), key: key.into() };
        assert_eq!(config.source("grace"), Some(&file("grace")), "the file's, not overlaid");
        let e = config.clone().plan().expect_err("too short");
        assert!(
            e.to_string()
                .contains("bad probe-timeout `1ms` (from TETHER_PROBE_TIMEOUT): too short; the minimum is 10ms"),
            "{e}"
        );
        // A value set by code over it has no source: the message names the flag.
        config.overlay(Config { probe_timeout: Some("2ms".into()), ..Config::default() });
        assert_eq!(config.source("probe-timeout"), None);
        let e = config.plan().expect_err("too short");
        assert!(e.to_string().contains("bad --probe-timeout `2ms`: too short"), "{e}");
    }

    #[test]
    fn the_env_of_flags_and_file_merge_and_a_bad_key_is_named_where_it_came_from() {
        let (_dir, path, mut config) = from_a_file("[env]\nA = \"1\"\n\"B=C\" = \"2\"\n");
        let mut flags = Config { env: [("D", "4")].into_iter().collect(), ..Config::default() };
        flags.sources.insert("env", Source::Flag("--env".into()));
        config.overlay(flags);
        assert_eq!(config.env.keys().collect::<Vec<_>>(), ["A", "B=C", "D"]);
        let e = config.plan().expect_err("a bad key of the file");
        assert!(e.to_string().contains(&format!("bad env key `B=C` (from {}, key `env`)", path.display())), "{e}");
        // A bad key of the flags' is the flag's.
        let (_dir, _path, mut config) = from_a_file("[env]\nA = \"1\"\n");
        let mut flags = Config { env: [("X\nY", "4")].into_iter().collect(), ..Config::default() };
        flags.sources.insert("env", Source::Flag("--env".into()));
        config.overlay(flags);
        let e = config.plan().expect_err("a bad key of the flags");
        assert!(e.to_string().contains("bad --env key `X\\nY`: it contains a line break"), "{e}");
    }

    #[test]
    fn a_message_names_the_source_beside_the_key() {
        let env = Source::Env("TETHER_X".into());
        for (message, key, named) in [
            ("bad --timeout `0s`: too short", "timeout", "bad timeout `0s` (from TETHER_X): too short"),
            ("bad --progress-field ``: give", "progress_field", "bad progress-field `` (from TETHER_X): give"),
            ("bad --env key `A=B`: it", "env", "bad env key `A=B` (from TETHER_X): it"),
            ("`--host` must be an IP", "host", "`host` (from TETHER_X) must be an IP"),
            ("--port makes no sense: --port", "port", "port (from TETHER_X) makes no sense: --port"),
            ("--url `u` is only for --runner remote", "url", "url `u` (from TETHER_X) is only for --runner remote"),
            ("--env-file is not --env `x`", "env", "--env-file is not env `x` (from TETHER_X)"),
            ("unknown restart policy `x`; use no", "restart", "unknown restart policy `x` (from TETHER_X); use no"),
            ("invalid instance name 'x'", "name", "invalid instance name 'x' (from TETHER_X)"),
        ] {
            assert_eq!(name_source(message, key, &env), named);
        }
    }

    #[test]
    fn every_key_is_one_of_the_file_and_one_flag() {
        // The file's keys are serde's, which lists them for an unknown one.
        let e = Config::from_toml("no-such-key = 1\n").expect_err("unknown");
        let listed: Vec<String> = e.to_string().split('`').skip(3).step_by(2).map(str::to_string).collect();
        let keys: Vec<String> = Config::KEYS.iter().map(|k| k.replace('_', "-")).collect();
        assert_eq!(listed, keys, "{e}");
        // Each is one flag (the arguments after `--` none), `--` and the key's name.
        use clap::Args;
        let cmd = McpProxyFlags::augment_args(Config::augment_args(clap::Command::new("t")));
        let ids: Vec<&str> = cmd.get_arguments().map(|a| a.get_id().as_str()).collect();
        assert_eq!(ids, Config::KEYS);
        for arg in cmd.get_arguments().filter(|a| a.get_id() != "args") {
            let key = arg.get_id().as_str().replace('_', "-");
            assert_eq!(arg.get_long(), Some(key.as_str()));
            if let Some(var) = arg.get_env() {
                assert_eq!(var.to_string_lossy(), format!("TETHER_{}", arg.get_id().as_str().to_uppercase()));
            }
        }
    }

    #[test]
    fn the_configuration_doc_names_every_key() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md"))
            .expect("docs/configuration.md");
        for key in Config::KEYS.iter().map(|k| k.replace('_', "-")) {
            let written = doc.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{key} =")) || (key == "env" && l == "[env]")
            });
            assert!(written, "docs/configuration.md shows no `{key} = …`");
        }
    }
}
