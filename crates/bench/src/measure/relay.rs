//! Item 4: log relay throughput, and the backend's own write time when relayed vs when
//! its stdout is `/dev/null`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use tether_core::LaunchOptions;

use crate::error::{BenchResult, Context, fail};
use crate::harness::{Harness, ms_between, stats, unix_nanos_now};
use crate::report::{Row, Target};

/// Lines the backend writes.
const LINES: u64 = 200_000;
const LINES_ARG: &str = "200000";
/// Bytes per line, newline included.
const BYTES_ARG: &str = "100";

/// The milliseconds in `demo-backend wrote N lines in X ms`.
fn parse_wrote(line: &str) -> Option<f64> {
    let rest = line.split_once(" lines in ")?.1;
    rest.split_whitespace().next()?.parse().ok()
}

/// The backend's write time with stdout on `/dev/null` (no tether, no pipe), in ms.
fn devnull_write(h: &Harness) -> BenchResult<f64> {
    let mut child = Command::new(&h.exe)
        .args(["demo-backend", "--port", "0", "--log-lines", LINES_ARG, "--line-bytes", BYTES_ARG])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ctx("cannot spawn the demo backend")?;
    let err = child.stderr.take().ctx("no stderr pipe")?;
    let found = BufReader::new(err).lines().map_while(Result::ok).find_map(|l| parse_wrote(&l));
    let _ = child.kill();
    let _ = child.wait();
    found.ctx("the demo backend did not report its write time")
}

/// The backend's write time with stdout a pipe drained by a plain reader thread (64 KiB
/// reads, no line splitting): what any pipe costs. The pipe is widened as the relay's is
/// (`sys::widen_pipe`: 1 MiB by `F_SETPIPE_SZ` on Linux), so the two differ only in the reader.
fn pipe_write(h: &Harness) -> BenchResult<f64> {
    let (read, write) = std::io::pipe().ctx("cannot create a pipe")?;
    tether_core::sys::widen_pipe(&read);
    let mut child = Command::new(&h.exe)
        .args(["demo-backend", "--port", "0", "--log-lines", LINES_ARG, "--line-bytes", BYTES_ARG])
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .spawn()
        .ctx("cannot spawn the demo backend")?;
    let mut out = read;
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(out.read(&mut buf), Ok(n) if n > 0) {}
    });
    let err = child.stderr.take().ctx("no stderr pipe")?;
    let found = BufReader::new(err).lines().map_while(Result::ok).find_map(|l| parse_wrote(&l));
    let _ = child.kill();
    let _ = child.wait();
    let _ = drain.join();
    found.ctx("the demo backend did not report its write time")
}

/// One relayed run: (lines/s until the relay counted every line, the backend's own
/// write time from its `/stats`, in ms).
async fn relayed(h: &Harness) -> BenchResult<(f64, f64)> {
    let spec = h.spec(&["--log-lines", LINES_ARG, "--line-bytes", BYTES_ARG], Duration::from_secs(5))?;
    let (instance, l) = h.launch_ready_with(spec, LaunchOptions::default()).await?;
    let logs = instance.logs();
    let mut count = logs.line_count();
    // listening line + the filler lines + the `wrote` line on stderr.
    let all = LINES + 2;
    // `wait_for` returns a read guard on the counter: drop it at once, or the relay's
    // next `send_modify` blocks its worker thread.
    let counted =
        matches!(tokio::time::timeout(Duration::from_secs(120), count.wait_for(|c| *c >= all)).await, Ok(Ok(_)));
    let done = unix_nanos_now();
    let st = stats(l.port).await;
    instance.stop().await.ctx("cannot stop the backend")?;
    if !counted {
        return fail(format!("the relay did not count {all} lines within 120 s"));
    }
    let st = st?;
    let secs = ms_between(st.started_at_unix_nanos, done) / 1e3;
    let wrote = st.log_write_nanos.ctx("the backend did not report its write time in /stats")? as f64 / 1e6;
    Ok((LINES as f64 / secs, wrote))
}

/// Item 4.
pub async fn relay(h: &Harness, reps: usize) -> BenchResult<Vec<Row>> {
    let (mut rate, mut write_relayed, mut write_null, mut ratio) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut write_pipe, mut ratio_pipe) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let null = devnull_write(h)?;
        write_null.push(null);
        let pipe = pipe_write(h)?;
        write_pipe.push(pipe);
        let (r, w) = relayed(h).await?;
        rate.push(r);
        write_relayed.push(w);
        ratio.push(w / null);
        ratio_pipe.push(w / pipe);
    }
    Ok(vec![
        Row::new(4, "relay throughput, 200 000 lines of 100 B", "lines/s", &rate, Target::AtLeast(1_000_000.0))
            .note("backend start → relay counted all; no tracing subscriber"),
        Row::new(4, "backend write time, relayed", "ms", &write_relayed, Target::None)
            .note("its own measure, from /stats"),
        Row::new(4, "backend write time, stdout = /dev/null", "ms", &write_null, Target::None),
        Row::new(4, "backend write time, stdout = pipe, plain reader thread", "ms", &write_pipe, Target::None)
            .note("no tether; the same 1 MiB pipe, drained by 64 KiB reads: the cost of any pipe"),
        Row::new(4, "backend write time relayed / plain pipe reader", "×", &ratio_pipe, Target::AtMost(1.2))
            .note("paired per repetition"),
        Row::new(4, "backend write time relayed / to /dev/null", "×", &ratio, Target::None)
            .note("paired per repetition; a pipe cannot beat /dev/null, for context"),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_report_line() {
        assert_eq!(super::parse_wrote("demo-backend wrote 200000 lines in 12.345 ms"), Some(12.345));
        assert_eq!(super::parse_wrote("demo-backend ready"), None);
    }
}
