//! How the CLI talks: tracing to stderr, JSON lines or plain text to stdout.

use std::io::{IsTerminal, Write};

use serde_json::{Value, json};
use tether::Error;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

/// Logs (ours and the backend's) go to stderr; `TETHER_LOG` / `RUST_LOG` filter them.
pub fn init_tracing(json: bool) {
    // rmcp logs every message at info: only its warnings are worth a line.
    let default = if json { "warn,tether::backend=info" } else { "info,rmcp=warn" };
    let filter = EnvFilter::try_from_env("TETHER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::stderr().is_terminal();
    let ours = tracing_subscriber::fmt::format().with_target(false).without_time().with_ansi(ansi);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| AroundBar)
        .with_ansi(ansi)
        .event_format(BackendLines(ours))
        .try_init();
}

/// The backend's own lines as `name| text` (`name!` for stderr); tether's own events
/// in the usual format.
struct BackendLines<F>(F);

impl<S, N, F> FormatEvent<S, N> for BackendLines<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if event.metadata().target() != "tether::backend" {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = BackendLine::default();
        event.record(&mut line);
        let mark = if line.stream == "stderr" { '!' } else { '|' };
        writeln!(writer, "{}{mark} {}", line.instance, line.message)
    }
}

#[derive(Default)]
struct BackendLine {
    instance: String,
    stream: String,
    message: String,
}

impl tracing::field::Visit for BackendLine {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "stream" => self.stream = value.to_string(),
            "instance" => self.instance = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "instance" => self.instance = format!("{value:?}"),
            "stream" => self.stream = format!("{value:?}"),
            _ => {}
        }
    }
}

/// The progress bar on the terminal, while one is shown: log lines are written around it.
static BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Show log lines around `bar` (None: no bar any more).
pub fn set_bar(bar: Option<indicatif::ProgressBar>) {
    *BAR.lock().unwrap_or_else(|p| p.into_inner()) = bar;
}

/// stderr, but a line never lands in the middle of the progress bar.
struct AroundBar;

impl Write for AroundBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut written = Ok(());
        match bar {
            Some(bar) => bar.suspend(|| written = std::io::stderr().write_all(buf)),
            None => written = std::io::stderr().write_all(buf),
        }
        written.map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Restore SIGPIPE's default action (Rust's runtime ignores it, which turns a closed pipe
/// into an error that `println!` panics on): a write to a pipe nobody reads any more ends
/// the process quietly.
pub fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler of ours; nothing else changes SIGPIPE concurrently
    // (this runs first in `main`, before the runtime starts).
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
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
