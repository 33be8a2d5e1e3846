//! The demo backend's output: status lines, bulk output to stress a reader, closing stdout.

use std::io::Write;
use std::time::Instant;

use crate::args::DemoArgs;

/// Prints one status line to stdout and flushes (stdout is a pipe, not a TTY).
///
/// Errors (reader gone, stdout closed) are ignored: the backend keeps serving.
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Prints one line to stderr, ignoring errors (unlike `eprintln!`, which panics).
pub(crate) fn warn(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
    let _ = err.write_all(b"\n");
    let _ = err.flush();
}

/// What the start-up output thread prints, in this order.
#[derive(Debug, Clone)]
pub(crate) struct Bulk {
    pub(crate) log_lines: u64,
    pub(crate) log_after_file: Option<std::path::PathBuf>,
    pub(crate) line_bytes: usize,
    pub(crate) invalid_utf8: bool,
    pub(crate) long_line: Option<usize>,
    pub(crate) no_newline: bool,
    pub(crate) close_stdout: bool,
}

/// How long writing `--log-lines` took, in nanoseconds (0 until done); in `/stats`.
pub(crate) static LOG_WRITE_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Bulk {
    pub(crate) fn from_args(args: &DemoArgs) -> Self {
        Bulk {
            log_lines: args.log_lines,
            log_after_file: args.log_after_file.clone(),
            line_bytes: args.line_bytes,
            invalid_utf8: args.invalid_utf8,
            long_line: args.long_line,
            no_newline: args.no_newline,
            close_stdout: args.close_stdout,
        }
    }

    fn is_empty(&self) -> bool {
        self.log_lines == 0 && !self.invalid_utf8 && self.long_line.is_none() && !self.close_stdout
    }

    /// Starts the output on its own OS thread, so that a reader that does not read blocks
    /// only this thread — never the server — and so that exiting never waits for it.
    pub(crate) fn spawn(self) -> std::io::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        std::thread::Builder::new().name("demo-output".into()).spawn(move || self.write_all()).map(drop)
    }

    fn write_all(self) {
        if let Some(gate) = &self.log_after_file {
            while !gate.exists() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        if self.log_lines > 0 {
            let started = Instant::now();
            let written = write_log_lines(self.log_lines, self.line_bytes);
            LOG_WRITE_NANOS.store(started.elapsed().as_nanos().max(1) as u64, std::sync::atomic::Ordering::SeqCst);
            match written {
                Ok(()) => warn(&format!(
                    "demo-backend wrote {} lines in {:.3} ms",
                    self.log_lines,
                    started.elapsed().as_secs_f64() * 1e3
                )),
                Err(e) => warn(&format!("demo-backend: writing log lines failed: {e}")),
            }
        }
        if self.invalid_utf8 {
            write_chunk(b"bad \xff\xfe utf8\n");
        }
        if let Some(len) = self.long_line {
            let mut line = vec![b'y'; len];
            if !self.no_newline {
                line.push(b'\n');
            }
            write_chunk(&line);
        }
        if self.close_stdout {
            close_stdout();
        }
    }
}

/// Writes one chunk under the stdout lock and flushes.
fn write_chunk(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes).and_then(|()| out.flush());
}

/// `log line {i} ` padded with `x` to `line_bytes` bytes, newline included (a line is never
/// shorter than its prefix and newline), for i in 1..=n.
///
/// Whole lines are gathered into 64 KiB chunks; each chunk is written under the stdout lock, so
/// status lines printed meanwhile (e.g. `demo-backend ready`) land between whole lines.
fn write_log_lines(n: u64, line_bytes: usize) -> std::io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + line_bytes + 32);
    for i in 1..=n {
        push_log_line(&mut buf, i, line_bytes);
        if buf.len() >= CHUNK {
            let mut out = std::io::stdout().lock();
            out.write_all(&buf)?;
            out.flush()?;
            buf.clear();
        }
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)?;
    out.flush()
}

/// Appends `log line {i} ` padded with `x` to `line_bytes` bytes, newline included.
fn push_log_line(buf: &mut Vec<u8>, i: u64, line_bytes: usize) {
    let start = buf.len();
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "log line {i} ");
    let pad = line_bytes.saturating_sub(buf.len() - start + 1);
    buf.resize(buf.len() + pad, b'x');
    buf.push(b'\n');
}

/// Closes our end of the stdout pipe so its reader sees EOF, but keeps fd 1 valid: /dev/null
/// is put in its place (dup2), so fd 1 can never be reused by a socket that later status lines
/// would write into.
pub(crate) fn close_stdout() {
    let _ = std::io::stdout().lock().flush();
    #[cfg(not(unix))]
    let result: Result<(), String> = Err("--close-stdout works on Unix only".into());
    #[cfg(unix)]
    let result = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| e.to_string())
        .and_then(|null| nix::unistd::dup2_stdout(&null).map_err(|e| e.to_string()));
    match result {
        Ok(()) => warn("demo-backend: closed stdout"),
        Err(e) => warn(&format!("demo-backend: could not close stdout: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::push_log_line;

    #[test]
    fn log_line_format() {
        let mut buf = Vec::new();
        push_log_line(&mut buf, 1, 100);
        push_log_line(&mut buf, 12, 5);
        let text = String::from_utf8(buf).expect("utf8");
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        assert_eq!(lines[0].len(), 100);
        assert!(lines[0].starts_with("log line 1 xxx"));
        assert!(lines[0].ends_with("x\n"));
        assert_eq!(lines[1], "log line 12 \n");
    }
}
