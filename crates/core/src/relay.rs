//! The log relay: backend output as bytes → lines → tracing events, a ring of the
//! last lines for error messages, and a counter that wakes the readiness engine.
//!
//! The reader never waits on a consumer: lines go to `tracing` and to a
//! `broadcast` channel whose slow receivers lag rather than block, so the backend
//! never blocks on a full pipe.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use regex::Regex;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{broadcast, watch};

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line of backend output, invalid UTF-8 replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Where it came from.
    pub stream: Stream,
    /// The text, without its newline.
    pub text: String,
}

/// Splits a byte stream into lines of at most `max` bytes; a longer line is cut
/// into pieces (never an error), and the last partial line is kept until `finish`.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    /// A splitter cutting lines at `max` bytes (at least 1).
    pub fn new(max: usize) -> Self {
        LineSplitter { buf: Vec::new(), max: max.max(1) }
    }

    /// Feed bytes; `emit` gets each complete line without its `\n` (and without a `\r` before it).
    ///
    /// A line that lies whole within `data` is handed over as a slice of it, uncopied;
    /// only a line begun in an earlier read is assembled in the splitter's buffer.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8])) {
        while !data.is_empty() {
            let room = self.max - self.buf.len();
            // One byte past the room: a newline right after a full line ends it.
            let window = &data[..data.len().min(room + 1)];
            match memchr::memchr(b'\n', window) {
                Some(i) if self.buf.is_empty() => {
                    emit(strip_cr(&window[..i]));
                    data = &data[i + 1..];
                }
                Some(i) => {
                    self.buf.extend_from_slice(&window[..i]);
                    emit(strip_cr(&self.buf));
                    self.buf.clear();
                    data = &data[i + 1..];
                }
                None => {
                    let take = window.len().min(room);
                    self.buf.extend_from_slice(&window[..take]);
                    data = &data[take..];
                    if self.buf.len() >= self.max {
                        emit(&self.buf);
                        self.buf.clear();
                    }
                }
            }
        }
    }

    /// The stream ended: emit the last line if it had no newline.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            emit(strip_cr(&self.buf));
            self.buf.clear();
        }
    }
}

fn lossy(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Lines as byte ranges of one buffer: `ends[i]` is where line `i` ends (its start is
/// where line `i - 1` ended). A read's worth of lines is kept this way until someone
/// asks for them as text, so relaying a line costs a copy of its bytes, no `String`.
#[derive(Debug, Default)]
struct Lines {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Lines {
    fn push(&mut self, line: &[u8]) {
        self.bytes.extend_from_slice(line);
        self.ends.push(self.bytes.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// A copy of lines `from..` (for the ring), sized to fit.
    fn tail_copy(&self, from: usize) -> Lines {
        let start = if from == 0 { 0 } else { self.ends[from - 1] };
        Lines { bytes: self.bytes[start..].to_vec(), ends: self.ends[from..].iter().map(|e| e - start).collect() }
    }
}

/// One batch of lines of one stream in the ring; lines before `first` were evicted.
#[derive(Debug)]
struct Chunk {
    stream: Stream,
    lines: Lines,
    first: usize,
}

impl Chunk {
    fn live(&self) -> usize {
        self.lines.len() - self.first
    }
}

struct Inner {
    /// The last lines, oldest first, `held` of them in all.
    ring: VecDeque<Chunk>,
    held: usize,
    patterns: Vec<(Regex, Arc<AtomicBool>)>,
}

impl Inner {
    /// Every line in the ring, oldest first.
    fn lines(&self) -> impl Iterator<Item = (Stream, &[u8])> {
        self.ring.iter().flat_map(|c| (c.first..c.lines.len()).map(move |i| (c.stream, c.lines.get(i))))
    }

    /// Keep at most `cap` lines: drop whole chunks, then the oldest lines of the first.
    fn evict(&mut self, cap: usize) {
        while self.held > cap {
            let Some(front) = self.ring.front_mut() else { break };
            let excess = self.held - cap;
            if front.live() <= excess {
                self.held -= front.live();
                self.ring.pop_front();
            } else {
                front.first += excess;
                self.held -= excess;
            }
        }
    }
}

/// Collects one backend's output. Shared as `Arc<LogRelay>`.
pub struct LogRelay {
    /// Unique for the life of this process: identifies a relay across restarts
    /// (an address could be reused by the next relay's allocation).
    id: u64,
    instance: String,
    ring_cap: usize,
    max_line: usize,
    inner: Mutex<Inner>,
    lines: broadcast::Sender<LogLine>,
    count: watch::Sender<u64>,
    open: watch::Sender<usize>,
}

impl std::fmt::Debug for LogRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogRelay").field("instance", &self.instance).finish_non_exhaustive()
    }
}

/// Default number of lines kept for error messages.
pub const DEFAULT_RING_LINES: usize = 200;
/// Default longest line before it is split.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

impl LogRelay {
    /// A relay for the instance `instance` keeping the last `ring_cap` lines and
    /// cutting lines at `max_line` bytes.
    pub fn new(instance: impl Into<String>, ring_cap: usize, max_line: usize) -> Arc<Self> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Arc::new(LogRelay {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            instance: instance.into(),
            ring_cap: ring_cap.max(1),
            max_line: max_line.max(1),
            inner: Mutex::new(Inner { ring: VecDeque::new(), held: 0, patterns: Vec::new() }),
            lines: broadcast::Sender::new(1024),
            count: watch::Sender::new(0),
            open: watch::Sender::new(0),
        })
    }

    /// The instance whose output this is.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// This relay's id, unique for the life of the process (never reused, unlike its address).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A relay with the default bounds.
    pub fn with_defaults(instance: impl Into<String>) -> Arc<Self> {
        Self::new(instance, DEFAULT_RING_LINES, DEFAULT_MAX_LINE)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the ring inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read `reader` to its end on a task of its own, relaying its lines.
    pub fn attach<R>(self: &Arc<Self>, stream: Stream, mut reader: R)
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        self.open.send_modify(|n| *n += 1);
        let relay = Arc::clone(self);
        tokio::spawn(async move {
            let mut splitter = LineSplitter::new(relay.max_line);
            // Small for a quiet backend (hundreds can be supervised at once), doubled up
            // to 64 KiB whenever a read fills it, so a flood drains in few reads.
            let mut buf = vec![0u8; 4 * 1024];
            let mut batch = Lines::default();
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        splitter.feed(&buf[..n], &mut |line: &[u8]| batch.push(line));
                        relay.push_lines(stream, &batch);
                        batch.clear();
                        if n == buf.len() && buf.len() < 64 * 1024 {
                            buf.resize(buf.len() * 2, 0);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "backend output read failed");
                        break;
                    }
                }
            }
            splitter.finish(&mut |line: &[u8]| batch.push(line));
            relay.push_lines(stream, &batch);
            relay.open.send_modify(|n| *n = n.saturating_sub(1));
        });
    }

    /// Relay one complete line (for runners that get lines, not bytes).
    pub fn push(&self, stream: Stream, line: &[u8]) {
        let mut one = Lines::default();
        one.push(line);
        self.push_lines(stream, &one);
    }

    /// Relay a batch of lines (one read's worth): one lock and one wake-up per batch,
    /// so a backend that floods its output is drained as fast as it writes. A line
    /// becomes text only for whoever needs it as text: a tracing subscriber that
    /// wants `tether::backend` events, a watched pattern, a subscriber of the
    /// broadcast; the ring keeps the bytes of the batch's last lines.
    fn push_lines(&self, stream: Stream, batch: &Lines) {
        let n = batch.len();
        if n == 0 {
            return;
        }
        if tracing::enabled!(target: "tether::backend", tracing::Level::INFO) {
            for i in 0..n {
                let text = String::from_utf8_lossy(batch.get(i));
                tracing::info!(target: "tether::backend", instance = %self.instance, stream = stream.as_str(), "{text}");
            }
        }
        let listeners = self.lines.receiver_count() > 0;
        {
            let mut inner = self.lock();
            if listeners || !inner.patterns.is_empty() {
                for i in 0..n {
                    let text = String::from_utf8_lossy(batch.get(i));
                    for (re, hit) in &inner.patterns {
                        if re.is_match(&text) {
                            hit.store(true, Ordering::Release);
                        }
                    }
                    if listeners {
                        // Slow receivers lag instead of blocking us.
                        let _ = self.lines.send(LogLine { stream, text: text.into_owned() });
                    }
                }
            }
            // Only the last `ring_cap` lines of the batch can stay in the ring.
            let keep_from = n.saturating_sub(self.ring_cap);
            inner.ring.push_back(Chunk { stream, lines: batch.tail_copy(keep_from), first: 0 });
            inner.held += n - keep_from;
            inner.evict(self.ring_cap);
        }
        self.count.send_modify(|c| *c += n as u64);
    }

    /// The last `n` lines (both streams, in order of arrival).
    pub fn tail(&self, n: usize) -> Vec<String> {
        let inner = self.lock();
        let skip = inner.held.saturating_sub(n);
        inner.lines().skip(skip).map(|(_, l)| lossy(l)).collect()
    }

    /// How many lines were relayed so far; changes on every batch of lines.
    ///
    /// Do not hold the guard of `borrow()` (or of `wait_for`'s result) across an
    /// `.await`: the relay would wait for it to update the count.
    pub fn line_count(&self) -> watch::Receiver<u64> {
        self.count.subscribe()
    }

    /// Every later line; a receiver that falls behind loses lines (`Lagged`), it never slows the backend.
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.lines.subscribe()
    }

    /// A flag set once a line matching `re` is seen (lines still in the ring count).
    pub fn watch_pattern(&self, re: Regex) -> Arc<AtomicBool> {
        let hit = Arc::new(AtomicBool::new(false));
        let mut inner = self.lock();
        if inner.lines().any(|(_, l)| re.is_match(&String::from_utf8_lossy(l))) {
            hit.store(true, Ordering::Release);
        }
        inner.patterns.push((re, Arc::clone(&hit)));
        hit
    }

    /// Wait until every attached stream reached its end, up to `timeout` (a
    /// grandchild may hold a pipe open long after the backend died).
    pub async fn drained(&self, timeout: Duration) {
        let mut rx = self.open.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut s = LineSplitter::new(max);
        for c in chunks {
            s.feed(c, &mut |l: &[u8]| out.push(l.to_vec()));
        }
        s.finish(&mut |l: &[u8]| out.push(l.to_vec()));
        out
    }

    #[test]
    fn splits_lines_across_chunks_and_keeps_the_last_partial_line() {
        let out = split(100, &[b"ab", b"c\nde", b"f\r\n\ng", b"h"]);
        assert_eq!(out, vec![b"abc".to_vec(), b"def".to_vec(), b"".to_vec(), b"gh".to_vec()]);
    }

    #[test]
    fn long_lines_are_cut_never_an_error() {
        let line = vec![b'y'; 10];
        let out = split(4, &[&line, b"\nz\n"]);
        assert_eq!(out, vec![b"yyyy".to_vec(), b"yyyy".to_vec(), b"yy".to_vec(), b"z".to_vec()]);
    }

    #[test]
    fn a_line_of_exactly_max_bytes_is_one_line() {
        let out = split(3, &[b"abc\n", b"abcd\n"]);
        assert_eq!(out, vec![b"abc".to_vec(), b"abc".to_vec(), b"d".to_vec()]);
    }

    #[tokio::test]
    async fn relays_invalid_utf8_keeps_a_ring_and_counts() {
        let relay = LogRelay::new("t", 3, 1024);
        let hit = relay.watch_pattern(Regex::new("^ready$").expect("regex"));
        let mut count = relay.line_count();
        let data: &[u8] = b"one\nbad \xff\xfe\ntwo\nready\nlast";
        relay.attach(Stream::Stderr, data);
        relay.drained(Duration::from_secs(10)).await;
        assert_eq!(relay.tail(10), vec!["two", "ready", "last"]);
        assert_eq!(*count.borrow_and_update(), 5);
        assert!(hit.load(Ordering::Acquire));
        let relay2 = LogRelay::new("t", 3, 1024);
        relay2.push(Stream::Stdout, b"bad \xff");
        assert_eq!(relay2.tail(1), vec!["bad \u{fffd}"]);
    }

    #[test]
    fn the_ring_keeps_the_last_lines_across_batches() {
        let relay = LogRelay::new("t", 3, 1024);
        for l in ["a", "b", "c", "d", "e"] {
            relay.push(Stream::Stdout, l.as_bytes());
        }
        assert_eq!(relay.tail(10), vec!["c", "d", "e"]);
        assert_eq!(relay.tail(2), vec!["d", "e"]);
        // A batch longer than the ring keeps its own last lines only.
        let mut batch = Lines::default();
        for l in ["1", "2", "3", "4"] {
            batch.push(l.as_bytes());
        }
        relay.push_lines(Stream::Stderr, &batch);
        assert_eq!(relay.tail(10), vec!["2", "3", "4"]);
        // A short batch evicts part of an older chunk.
        let mut two = Lines::default();
        two.push(b"x");
        two.push(b"");
        relay.push_lines(Stream::Stdout, &two);
        assert_eq!(relay.tail(10), vec!["4", "x", ""]);
        let inner = relay.lock();
        assert_eq!(inner.held, 3);
        assert_eq!(inner.lines().count(), 3);
    }

    #[tokio::test]
    async fn a_pattern_already_in_the_ring_counts() {
        let relay = LogRelay::with_defaults("t");
        relay.push(Stream::Stdout, b"server started on 8080");
        let hit = relay.watch_pattern(Regex::new("started").expect("regex"));
        assert!(hit.load(Ordering::Acquire));
    }
}
