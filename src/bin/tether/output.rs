//! How the CLI talks: tracing to stderr, JSON lines or plain text to stdout.

use std::io::{IsTerminal, Write};

use serde_json::{Value, json};
use tether::Error;
use tracing_subscriber::EnvFilter;

/// Logs (ours and the backend's) go to stderr; `TETHER_LOG` / `RUST_LOG` filter them.
pub fn init_tracing(json: bool) {
    let default = if json { "warn,tether::backend=info" } else { "info" };
    let filter = EnvFilter::try_from_env("TETHER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

/// Print one JSON object as a line on stdout.
pub fn json_line(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// Report an error: a JSON line with `--json`, else a message on stderr. Returns the exit code.
pub fn report_error(e: &Error, json: bool) -> i32 {
    if json {
        json_line(&json!({
            "state": "failed",
            "error": e.chain(),
            "exit_code": e.backend_exit_code(),
            "stderr_tail": e.stderr_tail(),
        }));
    } else {
        eprintln!("error: {}", e.chain());
        let tail = e.stderr_tail();
        if !tail.is_empty() {
            eprintln!("last output of the backend:");
            for line in tail {
                eprintln!("  | {line}");
            }
        }
    }
    e.exit_code()
}
