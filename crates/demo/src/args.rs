//! Command-line arguments of the demo backend and the duration parser they use.

use std::time::Duration;

/// What `GET /health` answers (`--health-mode`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HealthMode {
    /// The claude-skills contract: 200 and the JSON status object.
    #[default]
    #[value(name = "ok")]
    Ok,
    /// 500 Internal Server Error with a small text body.
    #[value(name = "status500")]
    Status500,
    /// 200, `Content-Type: application/json`, body `not json`.
    #[value(name = "nonjson")]
    NonJson,
    /// Read the request, then never answer; the connection stays open.
    #[value(name = "hang")]
    Hang,
    /// 200 with a 10 MiB JSON body (the status fields plus a long padding string), streamed.
    #[value(name = "huge")]
    Huge,
    /// 200 with a chunked body that never ends: a small chunk every 10 ms, forever.
    #[value(name = "endless")]
    Endless,
}

/// Run the built-in demo backend (the claude-skills /health contract, with flags to misbehave).
///
/// Durations: 500ms, 2s, 1.5s, 1m, 1h, or a plain number of seconds.
///
/// Embedded by the tether CLI as `tether demo-backend [ARGS]`; durations are parsed by
/// `parse_duration`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Port to listen on (0 = pick a free port; the real one is printed).
    #[arg(long, value_name = "N", required_unless_present = "grandchild_idle")]
    pub port: Option<u16>,

    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub host: String,

    /// Time from start until loading is complete.
    #[arg(long, value_name = "DUR", default_value = "0", value_parser = parse_duration)]
    pub ready_after: Duration,

    /// Number of skills reported once loading is complete (0 is allowed: complete with no skills).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub skills: u64,

    /// Version string reported by /health (default: this crate's version).
    #[arg(long, value_name = "STR")]
    pub report_version: Option<String>,

    /// Print `demo-backend ready` to stdout at the instant loading becomes complete.
    #[arg(long)]
    pub print_ready: bool,

    /// Log one line per request, as uvicorn does (`INFO:     127.0.0.1:PORT - "GET /health
    /// HTTP/1.1" 200 OK`, on stderr).
    #[arg(long)]
    pub access_log: bool,

    /// How /health behaves.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = HealthMode::Ok)]
    pub health_mode: HealthMode,

    /// From this long after start on, /health answers 500 (to test liveness probes).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub sick_after: Option<Duration>,

    /// Exit on its own after this long from start (with --exit-code).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub exit_after: Option<Duration>,

    /// Exit code used by --exit-after.
    #[arg(long, value_name = "N", default_value_t = 1, allow_negative_numbers = true)]
    pub exit_code: i32,

    /// Ignore SIGTERM (only SIGKILL stops it then).
    #[arg(long)]
    pub ignore_sigterm: bool,

    /// At start, print N filler lines to stdout as fast as possible and report the time taken on stderr.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub log_lines: u64,

    /// Start the --log-lines output only once this file exists (a test's gate).
    #[arg(long, value_name = "PATH")]
    pub log_after_file: Option<std::path::PathBuf>,

    /// Size of each --log-lines line in bytes, newline included.
    #[arg(long, value_name = "B", default_value_t = 100)]
    pub line_bytes: usize,

    /// Print one line of BYTES bytes of `y` to stdout (newline not counted).
    #[arg(long, value_name = "BYTES")]
    pub long_line: Option<usize>,

    /// With --long-line: leave the final newline out.
    #[arg(long, requires = "long_line")]
    pub no_newline: bool,

    /// Print a line containing invalid UTF-8 to stdout.
    #[arg(long)]
    pub invalid_utf8: bool,

    /// After the start-up output, close stdout (the reader sees EOF) and keep serving.
    #[arg(long)]
    pub close_stdout: bool,

    /// Spawn a long-lived idle grandchild (not waited for, not killed on exit) and print its pid.
    #[arg(long)]
    pub spawn_grandchild: bool,

    /// With --spawn-grandchild: the grandchild calls setsid(), leaving the process group.
    #[arg(long, requires = "spawn_grandchild")]
    pub grandchild_setsid: bool,

    /// Internal: be the idle grandchild (sleep forever, no port).
    #[arg(long, hide = true)]
    pub grandchild_idle: bool,

    /// With --spawn-grandchild: the grandchild accepts connections on this backend's
    /// listening socket too (it inherits it), so the port answers as long as it lives —
    /// a forking server's worker.
    #[arg(long, requires = "spawn_grandchild")]
    pub grandchild_serves: bool,

    /// With --spawn-grandchild: start the grandchild through a child of its own, which
    /// stays in the process group and waits (as uv runs Python): backend → child →
    /// grandchild. The child's pid is printed as `demo-backend child pid C`.
    #[arg(long, requires = "spawn_grandchild")]
    pub grandchild_via_child: bool,

    /// Internal, with --grandchild-idle: call setsid() first.
    #[arg(long, hide = true, requires = "grandchild_idle")]
    pub setsid: bool,

    /// Internal, with --grandchild-idle: serve on this inherited listening socket.
    #[arg(long, hide = true, value_name = "FD", requires = "grandchild_idle")]
    pub listen_fd: Option<i32>,

    /// Internal, with --grandchild-idle: be the launcher in between — start the idle
    /// grandchild (with --setsid and --listen-fd as given), print its pid, and wait.
    #[arg(long, hide = true, requires = "grandchild_idle")]
    pub launcher: bool,

    /// Print `demo-backend argv: [...]` (the trailing arguments, as JSON) to stdout.
    #[arg(long)]
    pub echo_args: bool,

    /// Print `demo-backend says: TEXT` to stdout, TEXT as it is (control characters and
    /// escape sequences included: what a hostile backend or an echoed request prints).
    #[arg(long, value_name = "TEXT")]
    pub say: Option<String>,

    /// Trailing arguments, captured as they are (see --echo-args).
    #[arg(value_name = "ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
    pub extra: Vec<String>,
}

impl DemoArgs {
    /// Default arguments (ready at once, 5 skills, well-behaved) listening on `port` on 127.0.0.1.
    pub fn with_port(port: u16) -> Self {
        DemoArgs {
            port: Some(port),
            host: "127.0.0.1".to_owned(),
            ready_after: Duration::ZERO,
            skills: 5,
            report_version: None,
            print_ready: false,
            access_log: false,
            health_mode: HealthMode::Ok,
            sick_after: None,
            exit_after: None,
            exit_code: 1,
            ignore_sigterm: false,
            log_lines: 0,
            log_after_file: None,
            line_bytes: 100,
            long_line: None,
            no_newline: false,
            invalid_utf8: false,
            close_stdout: false,
            spawn_grandchild: false,
            grandchild_setsid: false,
            grandchild_serves: false,
            grandchild_via_child: false,
            grandchild_idle: false,
            setsid: false,
            listen_fd: None,
            launcher: false,
            echo_args: false,
            say: None,
            extra: Vec::new(),
        }
    }
}

pub use tether_core::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: DemoArgs,
    }

    #[test]
    fn durations_in_every_accepted_form() {
        let ok = |s: &str| parse_duration(s).expect(s);
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("100ms"), Duration::from_millis(100));
        assert_eq!(ok("2s"), Duration::from_secs(2));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("3"), Duration::from_secs(3));
        assert_eq!(ok("0.25"), Duration::from_millis(250));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok(" 2 s "), Duration::from_secs(2));
        assert_eq!(ok("0.5ms"), Duration::from_micros(500));
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for bad in ["", "s", "abc", "-1s", "2x", "1.2.3s", ".5s", "5 sec", "1e3"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains("expected a number"), "{bad:?}: {err}");
            assert!(err.contains("500ms"), "{bad:?}: {err}");
        }
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "demo",
            "--port",
            "0",
            "--ready-after",
            "1.5s",
            "--health-mode",
            "nonjson",
            "--exit-after",
            "2s",
            "--exit-code",
            "-3",
            "--",
            "a b",
            "--not-a-flag",
        ])
        .expect("parse");
        let a = cli.args;
        assert_eq!(a.port, Some(0));
        assert_eq!(a.ready_after, Duration::from_millis(1500));
        assert_eq!(a.health_mode, HealthMode::NonJson);
        assert_eq!(a.exit_after, Some(Duration::from_secs(2)));
        assert_eq!(a.exit_code, -3);
        assert_eq!(a.extra, ["a b", "--not-a-flag"]);
        assert_eq!(a.skills, 5);
        assert_eq!(a.host, "127.0.0.1");
    }

    #[test]
    fn port_is_required_except_for_the_idle_grandchild() {
        assert!(Cli::try_parse_from(["demo"]).is_err());
        let idle = Cli::try_parse_from(["demo", "--grandchild-idle", "--setsid"]).expect("idle");
        assert!(idle.args.grandchild_idle && idle.args.setsid);
        let err = Cli::try_parse_from(["demo", "--port", "1", "--ready-after", "soon"]).expect_err("bad duration");
        assert!(err.to_string().contains("expected a number"), "{err}");
    }

    #[test]
    fn trailing_args_after_a_positional_are_kept() {
        let cli = Cli::try_parse_from(["demo", "--port", "7", "x", "--port", "; rm -rf ~"]).expect("parse");
        assert_eq!(cli.args.port, Some(7));
        assert_eq!(cli.args.extra, ["x", "--port", "; rm -rf ~"]);
    }
}
