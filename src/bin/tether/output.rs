//! How the CLI talks: tracing to stderr, JSON lines or plain text to stdout.
//!
//! **tether's own output never blocks its supervision.** A terminal stopped with Ctrl-S, a
//! `less` nobody scrolls or a stuck log shipper stops reading; a blocking `write(2)` to it
//! would stop tether's one runtime thread, its signal handling with it, and the backend
//! behind its full output pipe. So every line for stdout or stderr goes to a [`Sink`]: a
//! writer thread of its own that may block, fed through a queue bounded in bytes; what a
//! stalled reader cannot take is dropped and counted, and the count is written once the
//! reader takes lines again. A reader that went away (a closed pipe) ends the output, and
//! `up` takes it as a stop ([`closed`]).
//!
//! **A backend's bytes never drive the terminal.** Its lines are third-party text (access
//! logs echo client input): control characters and escape sequences (OSC 52 clipboard
//! writes, titles, screen clears, a CR that overwrites tether's own `NAME| ` prefix) are
//! shown escaped ([`neutralise`]), SGR colours kept on a terminal; `--raw` passes the
//! bytes as they are.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

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
        let text = shown(&line.message, Which::Stderr);
        writeln!(writer, "{}{mark} {text}", line.instance)
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

/// stderr's [`Sink`], but a line never lands in the middle of the progress bar.
struct AroundBar;

impl Write for AroundBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| stderr().push(buf)),
            None => stderr().push(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Print one JSON object as a line on stdout.
pub fn json_line(v: &Value) {
    stdout().push(format!("{v}\n").as_bytes());
}

/// A line for stdout, through its [`Sink`].
pub fn out_line(text: &str) {
    stdout().push(format!("{text}\n").as_bytes());
}

/// A line for stderr, through its [`Sink`] (around the progress bar).
pub fn err_line(text: &str) {
    let _ = AroundBar.write(format!("{text}\n").as_bytes());
}

/// `eprintln!` through stderr's [`Sink`]: never blocks.
macro_rules! say {
    ($($arg:tt)*) => { $crate::output::err_line(&format!($($arg)*)) };
}

/// `println!` through stdout's [`Sink`]: never blocks.
macro_rules! tell {
    ($($arg:tt)*) => { $crate::output::out_line(&format!($($arg)*)) };
}

/// How many bytes may wait for a slow reader before lines are dropped.
const QUEUE_BYTES: usize = 4 << 20;

/// Which standard stream a [`Sink`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// File descriptor 1.
    Stdout,
    /// File descriptor 2.
    Stderr,
}

/// One standard stream, written by a thread of its own from a queue bounded in bytes.
pub struct Sink {
    which: Which,
    state: Mutex<Queue>,
    ready: Condvar,
    dropped: AtomicU64,
    gone: AtomicBool,
    queued: AtomicUsize,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Vec<u8>>,
    /// A chunk is taken and being written (for [`Sink::drain`]).
    writing: bool,
}

impl Sink {
    fn start(which: Which) -> Arc<Sink> {
        let sink = Arc::new(Sink {
            which,
            state: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            dropped: AtomicU64::new(0),
            gone: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
        });
        let writer = Arc::clone(&sink);
        let name = match which {
            Which::Stdout => "tether-stdout",
            Which::Stderr => "tether-stderr",
        };
        if std::thread::Builder::new().name(name.into()).spawn(move || writer.run()).is_err() {
            // No thread (a resource limit): nothing can be written without blocking.
            sink.gone.store(true, Ordering::Release);
        }
        sink
    }

    /// Queue `bytes`; dropped (and counted) when the reader is this far behind, or gone.
    pub fn push(&self, bytes: &[u8]) {
        if self.is_gone() {
            return;
        }
        if self.queued.load(Ordering::Acquire) + bytes.len() > QUEUE_BYTES {
            self.dropped.fetch_add(1, Ordering::AcqRel);
            return;
        }
        self.queued.fetch_add(bytes.len(), Ordering::AcqRel);
        let mut q = self.state.lock().unwrap_or_else(|p| p.into_inner());
        q.chunks.push_back(bytes.to_vec());
        self.ready.notify_all();
    }

    /// Whether the reader went away (a closed pipe).
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Wait up to `within` until everything queued is written (a stalled reader: not longer).
    pub fn drain(&self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        let mut q = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while (!q.chunks.is_empty() || q.writing) && !self.is_gone() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            q = match self.ready.wait_timeout(q, left.min(Duration::from_millis(50))) {
                Ok((q, _)) => q,
                Err(p) => p.into_inner().0,
            };
        }
    }

    fn run(&self) {
        loop {
            let chunk = {
                let mut q = self.state.lock().unwrap_or_else(|p| p.into_inner());
                q.writing = false;
                self.ready.notify_all();
                loop {
                    if let Some(c) = q.chunks.pop_front() {
                        q.writing = true;
                        break c;
                    }
                    q = match self.ready.wait(q) {
                        Ok(q) => q,
                        Err(p) => p.into_inner(),
                    };
                }
            };
            self.queued.fetch_sub(chunk.len(), Ordering::AcqRel);
            if self.write(&chunk).is_err() {
                // Gone (a closed pipe) or broken: nothing more can be shown there.
                self.gone.store(true, Ordering::Release);
                let mut q = self.state.lock().unwrap_or_else(|p| p.into_inner());
                q.chunks.clear();
                q.writing = false;
                self.queued.store(0, Ordering::Release);
                self.ready.notify_all();
                closed_tx().send_replace(true);
                return;
            }
        }
    }

    /// Write `chunk`, after the count of what was dropped before it, if anything was.
    fn write(&self, chunk: &[u8]) -> std::io::Result<()> {
        let dropped = self.dropped.swap(0, Ordering::AcqRel);
        let note = (dropped > 0).then(|| {
            let stream = if self.which == Which::Stdout { "stdout" } else { "stderr" };
            format!("tether: {dropped} line(s) dropped here: this {stream} was not read fast enough\n")
        });
        let all = |out: &mut dyn Write| -> std::io::Result<()> {
            if let Some(note) = &note {
                out.write_all(note.as_bytes())?;
            }
            out.write_all(chunk)?;
            out.flush()
        };
        match self.which {
            Which::Stdout => all(&mut std::io::stdout().lock()),
            Which::Stderr => all(&mut std::io::stderr().lock()),
        }
    }
}

static STDOUT: OnceLock<Arc<Sink>> = OnceLock::new();
static STDERR: OnceLock<Arc<Sink>> = OnceLock::new();
static CLOSED: OnceLock<tokio::sync::watch::Sender<bool>> = OnceLock::new();

fn closed_tx() -> &'static tokio::sync::watch::Sender<bool> {
    CLOSED.get_or_init(|| tokio::sync::watch::channel(false).0)
}

/// stdout's sink.
pub fn stdout() -> &'static Sink {
    STDOUT.get_or_init(|| Sink::start(Which::Stdout))
}

/// stderr's sink.
pub fn stderr() -> &'static Sink {
    STDERR.get_or_init(|| Sink::start(Which::Stderr))
}

/// Resolves once a reader of stdout or stderr went away (a closed pipe): `up 2>&1 | head -3`.
pub async fn closed() {
    let mut rx = closed_tx().subscribe();
    if rx.wait_for(|gone| *gone).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Before exiting: let what is queued reach a reader that keeps up, bounded.
pub fn finish() {
    for sink in [STDOUT.get(), STDERR.get()].into_iter().flatten() {
        sink.drain(Duration::from_secs(2));
    }
}

/// The progress bar's terminal: its drawing goes through stderr's [`Sink`] too (indicatif
/// draws from its ticker thread while holding the bar's lock, which `set_message` takes).
#[derive(Debug)]
pub struct BarTerm;

impl BarTerm {
    fn csi(n: usize, code: char) -> std::io::Result<()> {
        if n > 0 {
            stderr().push(format!("\x1b[{n}{code}").as_bytes());
        }
        Ok(())
    }
}

impl indicatif::TermLike for BarTerm {
    fn width(&self) -> u16 {
        terminal_width().unwrap_or(80)
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        BarTerm::csi(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        BarTerm::csi(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        BarTerm::csi(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        BarTerm::csi(n, 'D')
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        stderr().push(format!("{s}\n").as_bytes());
        Ok(())
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        stderr().push(s.as_bytes());
        Ok(())
    }

    fn clear_line(&self) -> std::io::Result<()> {
        stderr().push(b"\r\x1b[2K");
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The terminal's width in columns, when stderr is one.
fn terminal_width() -> Option<u16> {
    tether_core::sys::terminal_columns()
}

/// `--raw`: a backend's bytes as they are.
static RAW: AtomicBool = AtomicBool::new(false);

/// Show a backend's output as it is (`--raw`), control sequences and all.
pub fn set_raw(raw: bool) {
    RAW.store(raw, Ordering::Release);
}

/// `text` (a backend's) as it may be shown on `which`: as it is with `--raw`, else
/// [`neutralise`]d, keeping SGR colours when `which` is a terminal.
pub fn shown(text: &str, which: Which) -> std::borrow::Cow<'_, str> {
    if RAW.load(Ordering::Acquire) {
        return text.into();
    }
    // Asked once: a terminal stays one, and this runs for every backend line.
    static TERMINALS: OnceLock<(bool, bool)> = OnceLock::new();
    let (out, err) = *TERMINALS.get_or_init(|| (std::io::stdout().is_terminal(), std::io::stderr().is_terminal()));
    neutralise(text, if which == Which::Stdout { out } else { err })
}

/// `text` with every control character and escape sequence shown escaped (`\e]52;…`,
/// `\r`, `\x00`, `\u{9b}`) rather than acted on; TAB stays. With `keep_colours`, SGR
/// sequences (`ESC [ params m`: colours, bold) stay as they are.
pub fn neutralise(text: &str, keep_colours: bool) -> std::borrow::Cow<'_, str> {
    if text.chars().all(|c| c == '\t' || !c.is_control()) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if keep_colours
            && c == '\x1b'
            && let Some(len) = sgr_len(rest)
        {
            out.push_str(&rest[..len]);
            rest = &rest[len..];
            continue;
        }
        match c {
            '\t' => out.push(c),
            '\x1b' => out.push_str("\\e"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

/// The length of the SGR sequence `ESC [ digits;… m` at the start of `s`, if one is there.
fn sgr_len(s: &str) -> Option<usize> {
    let body = s.strip_prefix("\x1b[")?;
    let params = body.bytes().take_while(|b| b.is_ascii_digit() || *b == b';').count();
    (params <= 32 && body.as_bytes().get(params) == Some(&b'm')).then_some(2 + params + 1)
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
        err_line(&format!("error: {}", shown(&e.chain(), Which::Stderr)));
        let tail = e.stderr_tail();
        if !tail.is_empty() {
            err_line("last output of the backend:");
            for line in tail {
                err_line(&format!("  | {}", shown(line, Which::Stderr)));
            }
        }
    }
    e.exit_code()
}

/// Restore SIGPIPE's default action (Rust's runtime ignores it, which turns a closed pipe
/// into an error that `println!` panics on): a write to a pipe nobody reads any more ends
/// the process quietly.
pub fn default_sigpipe() {
    // Nothing else changes SIGPIPE concurrently (this runs first in `main`, before the
    // runtime starts).
    tether_core::sys::default_sigpipe();
}

/// The fewest open-file descriptors tether runs with: its runtime (event poll, signal
/// pipe), the backend's pipes, the state directory's locks and a few sockets.
pub const MIN_DESCRIPTORS: u64 = 32;

/// The open-file limit (`RLIMIT_NOFILE`, soft) when it is below [`MIN_DESCRIPTORS`].
pub fn too_few_descriptors() -> Option<u64> {
    tether_core::sys::fd_limit().filter(|limit| *limit < MIN_DESCRIPTORS)
}

#[cfg(test)]
mod tests {
    use super::neutralise;

    #[test]
    fn control_sequences_are_shown_escaped_and_colours_kept_on_a_terminal() {
        let hostile = "a\x1b]52;c;ZXZpbA==\x07b\x1b[2Jc\rfake INFO ready\x00\x08\u{9b}31m\x1bPq\x1b\\";
        let shown = neutralise(hostile, true);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert_eq!(shown, "a\\e]52;c;ZXZpbA==\\x07b\\e[2Jc\\rfake INFO ready\\x00\\x08\\u{9b}31m\\ePq\\e\\");
        assert_eq!(neutralise("\x1b[1;31mred\x1b[0m\tok", true), "\x1b[1;31mred\x1b[0m\tok");
        assert_eq!(neutralise("\x1b[1;31mred\x1b[0m", false), "\\e[1;31mred\\e[0m");
        assert!(matches!(neutralise("plain ünïcode\ttab", false), std::borrow::Cow::Borrowed(_)));
    }
}
