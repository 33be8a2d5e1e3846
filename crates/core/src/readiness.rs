//! The readiness engine: probe until ready, racing the backend's exit and a deadline.

use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::error::{Error, ExitStatus, Result, humanize};
use crate::lifecycle::{Lifecycle, Progress, State};
use crate::probe::{HealthProbe, ProbeContext, ProbeOutcome};
use crate::runner::RunningBackend;

/// How many lines of output an error carries.
pub const TAIL_LINES: usize = 20;

/// Settings of the readiness engine.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReadinessOptions {
    /// Waits between attempts when the backend is silent.
    pub backoff: Backoff,
    /// The longest one attempt may take.
    pub attempt_timeout: Duration,
    /// The overall deadline, from the start of the wait.
    pub deadline: Duration,
    /// Progress events are sent at most this often (phase changes at once).
    pub progress_every: Duration,
    /// Line-triggered probes are at least this far apart, so a flood of output
    /// cannot turn into a flood of probes.
    pub min_line_probe_gap: Duration,
}

impl Default for ReadinessOptions {
    fn default() -> Self {
        ReadinessOptions {
            backoff: Backoff::default(),
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(120),
            progress_every: Duration::from_millis(100),
            min_line_probe_gap: Duration::from_millis(2),
        }
    }
}

impl ReadinessOptions {
    /// With an overall deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// With a per-attempt timeout.
    pub fn with_attempt_timeout(mut self, t: Duration) -> Self {
        self.attempt_timeout = t;
        self
    }

    /// With a backoff.
    pub fn with_backoff(mut self, b: Backoff) -> Self {
        self.backoff = b;
        self
    }
}

/// The HTTP client the probes share: never a proxy (backends are ours, mostly on
/// loopback, and a dead `HTTP_PROXY` must not hide them), never a redirect (an
/// answer counts only from the backend itself, not from wherever it points: a
/// redirect is "not ready"), per-attempt timeout.
pub fn probe_client(attempt_timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        // The per-attempt timeout is the caller's `tokio::time::timeout`, so the error
        // names the probe and the limit; this only bounds a connect.
        .connect_timeout(attempt_timeout)
        .pool_max_idle_per_host(2)
        .build()
        .map_err(|e| Error::io("cannot build the HTTP client for health probes", std::io::Error::other(e)))
}

/// The error for a backend that exited before it was ready, with its last lines.
pub async fn early_exit(backend: &dyn RunningBackend, status: ExitStatus) -> Error {
    let logs = backend.logs();
    // Its last words may still be in the pipe.
    logs.drained(Duration::from_millis(300)).await;
    Error::EarlyExit { status, stderr_tail: backend.last_lines(TAIL_LINES) }
}

/// Whether the last `new` lines of output are all the backend logging our own probe.
/// A burst too large to inspect counts as news.
fn only_echoes(logs: &crate::relay::LogRelay, probe: &dyn HealthProbe, new: u64) -> bool {
    const INSPECT: u64 = 64;
    new > 0 && new <= INSPECT && logs.tail(new as usize).iter().all(|l| probe.is_own_echo(l))
}

/// The timeout error, with a hint when the backend's output names another port than
/// the one tether probes (a backend that ignored `{port}`).
fn timeout(started: Instant, last: String, logs: &crate::relay::LogRelay, port: u16) -> Error {
    let tail = logs.tail(TAIL_LINES);
    let last_probe = match other_port(&tail, port) {
        Some(theirs) => format!(
            "{last}; its output mentions port {theirs}, but tether probes {port}: pass `{{port}}` in the \
             backend's arguments (e.g. `-- my-server --port {{port}}`)"
        ),
        None => last,
    };
    Error::Timeout { waited: started.elapsed(), last_probe, stderr_tail: tail }
}

/// A port the backend says it listens on, other than `ours`, from its latest line that
/// announces one (see [`announced_port`]).
fn other_port(tail: &[String], ours: u16) -> Option<u16> {
    let patterns = Announcements::new()?;
    tail.iter().rev().find_map(|line| patterns.port(line).filter(|&port| port != ours))
}

/// The forms in which a line of output announces a listening port.
struct Announcements {
    /// `http://HOST:PORT` anywhere in the line (HOST a name, an IPv4 or a `[v6]`).
    url: regex::Regex,
    /// A word that announces a listener; an address after it is one.
    keyword: regex::Regex,
    /// `a.b.c.d:PORT`, `[v6]:PORT`, `localhost:PORT`, `*:PORT` or `:PORT`, standing alone.
    address: regex::Regex,
    /// `port PORT` (or `port=PORT`, `port: PORT`).
    word: regex::Regex,
}

impl Announcements {
    fn new() -> Option<Self> {
        Some(Announcements {
            url: regex::Regex::new(r"(?i)\bhttps?://(?:\[[0-9a-z:.%]+\]|[a-z0-9._-]+):(\d+)").ok()?,
            keyword: regex::Regex::new(r"(?i)\b(?:listening|running|serving|started|bound|available)\b").ok()?,
            address: regex::Regex::new(
                r#"(?i)(?:^|[\s(=@,'"])(?:(\d{1,3}(?:\.\d{1,3}){3})|\[[0-9a-z:.%]+\]|localhost|\*)?:(\d+)"#,
            )
            .ok()?,
            word: regex::Regex::new(r"(?i)\bport\s*[=:]?\s*(\d+)").ok()?,
        })
    }

    /// The port `line` announces: a URL's, an address's after a listening word, or
    /// `port N`'s — never an octet of an address, never a number out of range.
    fn port(&self, line: &str) -> Option<u16> {
        let from_url = self.url.captures_iter(line).find_map(|c| valid_port(c.get(1)?.as_str()));
        from_url
            .or_else(|| {
                let after = self.keyword.find(line)?.end();
                self.address.captures_iter(&line[after..]).find_map(|c| {
                    let octets_fit = c.get(1).is_none_or(|ip| ip.as_str().parse::<std::net::Ipv4Addr>().is_ok());
                    octets_fit.then(|| valid_port(c.get(2)?.as_str())).flatten()
                })
            })
            .or_else(|| self.word.captures_iter(line).find_map(|c| valid_port(c.get(1)?.as_str())))
    }
}

/// `digits` as a port: 1–65535.
fn valid_port(digits: &str) -> Option<u16> {
    digits.parse::<u16>().ok().filter(|&port| port != 0)
}

/// Probe `backend` until `probe` says ready. Progress goes to `lifecycle` as
/// `WaitingReady`. Returns the final progress count. The caller stops the backend on error.
pub async fn wait_ready(
    backend: &dyn RunningBackend,
    probe: &dyn HealthProbe,
    client: &reqwest::Client,
    opts: &ReadinessOptions,
    lifecycle: &Lifecycle,
) -> Result<Option<u64>> {
    let started = Instant::now();
    let deadline = started + opts.deadline;
    let endpoint = backend.endpoint();
    let logs = backend.logs();
    let ctx = ProbeContext { endpoint: &endpoint, logs: &logs, client };
    let mut lines = logs.line_count();
    let mut seen = *lines.borrow_and_update();
    let mut waits = opts.backoff.iter();
    let mut last = String::new();
    let mut shown = Progress::phase(backend.startup_phase());
    let mut shown_at = Instant::now();
    lifecycle.advance(State::WaitingReady { progress: shown.clone() });

    loop {
        let probed_at = Instant::now();
        // No attempt outlives the overall deadline, whatever the per-attempt limit.
        let attempt_limit = opts.attempt_timeout.min(deadline.saturating_duration_since(probed_at));
        let attempt = tokio::select! {
            biased;
            status = backend.wait() => return Err(early_exit(backend, status).await),
            r = tokio::time::timeout(attempt_limit, probe.probe(ctx)) => r,
        };
        match attempt {
            Ok(ProbeOutcome::Ready { .. }) if backend.try_wait().is_some() => {
                // Something answered, but our backend is gone: not ours to trust.
                let status = backend.wait().await;
                return Err(early_exit(backend, status).await);
            }
            Ok(ProbeOutcome::Ready { progress }) if backend.owns_endpoint().await => return Ok(progress),
            Ok(ProbeOutcome::Ready { .. }) => {
                // A neighbour answered on our port (it held the port, or took it while
                // our backend failed to bind): keep waiting for ours, or for its exit.
                last = format!(
                    "{} answered ready, but the listener on port {} is not this backend's",
                    probe.describe(),
                    endpoint.port
                );
            }
            Ok(ProbeOutcome::Failed { reason }) => {
                return Err(Error::Unhealthy { reason, stderr_tail: backend.last_lines(TAIL_LINES) });
            }
            Ok(ProbeOutcome::Pending { progress, detail, answered }) => {
                last = detail;
                let next = Progress {
                    phase: if answered { "loading".into() } else { shown.phase.clone() },
                    value: progress.or(shown.value),
                };
                let phase_changed = next.phase != shown.phase;
                if next != shown && (phase_changed || shown_at.elapsed() >= opts.progress_every) {
                    shown = next;
                    shown_at = Instant::now();
                    lifecycle.advance(State::WaitingReady { progress: shown.clone() });
                }
            }
            // Cut short by the deadline: the previous answer says more than "too slow".
            Err(_) if attempt_limit < opts.attempt_timeout && !last.is_empty() => {}
            Err(_) => last = format!("{} took longer than {}", probe.describe(), humanize(attempt_limit)),
        }

        let next_probe = Instant::now() + waits.next().unwrap_or(opts.backoff.max);
        loop {
            tokio::select! {
                biased;
                status = backend.wait() => return Err(early_exit(backend, status).await),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(timeout(started, last, &logs, endpoint.port));
                }
                Ok(()) = lines.changed() => {
                    let (now, before) = (*lines.borrow_and_update(), seen);
                    seen = now;
                    // The backend logging our own request (an access line) is no news.
                    if only_echoes(&logs, probe, now.saturating_sub(before)) {
                        continue;
                    }
                    // A line often announces the change; probe soon, not in a storm.
                    let earliest = probed_at + opts.min_line_probe_gap;
                    tokio::time::sleep_until(earliest).await;
                    seen = *lines.borrow_and_update();
                    break;
                }
                _ = tokio::time::sleep_until(next_probe) => break,
            }
        }
        if Instant::now() >= deadline {
            return Err(timeout(started, last, &logs, endpoint.port));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_port_in_the_output_is_named() {
        let tail = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let uvicorn = tail(&["INFO:     Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)"]);
        assert_eq!(other_port(&uvicorn, 4321), Some(8000));
        assert_eq!(other_port(&uvicorn, 8000), None, "our own port is no news");
        assert_eq!(other_port(&tail(&["server listening on 0.0.0.0:9090"]), 1), Some(9090));
        assert_eq!(other_port(&tail(&["using port 7000 as asked"]), 1), Some(7000));
        // An access line names the client's ephemeral port, not a listening one.
        let access = tail(&["INFO:     127.0.0.1:54321 - \"GET /health HTTP/1.1\" 200 OK"]);
        assert_eq!(other_port(&access, 1), None);
    }

    #[test]
    fn an_address_in_the_output_is_read_as_host_and_port_never_an_octet() {
        let tail = |l: &str| vec![l.to_string()];
        assert_eq!(other_port(&tail("server listening on 127.0.0.1:9090"), 1), Some(9090));
        assert_eq!(other_port(&tail("Listening at 10.1.2.3:8123 (pid 7)"), 1), Some(8123));
        assert_eq!(other_port(&tail("serving on [::1]:8443"), 1), Some(8443));
        assert_eq!(other_port(&tail("running at [fe80::1%eth0]:8444"), 1), Some(8444));
        assert_eq!(other_port(&tail("started on localhost:5005"), 1), Some(5005));
        assert_eq!(other_port(&tail("listening on :7070"), 1), Some(7070));
        assert_eq!(other_port(&tail("see http://[::1]:8001/docs"), 1), Some(8001));
        assert_eq!(other_port(&tail("bound to port 6006"), 1), Some(6006));
        // An address alone, with no port, or a port out of range, names none.
        assert_eq!(other_port(&tail("listening on 127.0.0.1"), 1), None);
        assert_eq!(other_port(&tail("listening on 127.0.0.1:99999"), 1), None);
        assert_eq!(other_port(&tail("started 12 workers"), 1), None);
        assert_eq!(other_port(&tail("listening on 127.0.0.1:9090"), 9090), None, "ours");
    }

    #[test]
    fn only_the_probes_own_access_lines_are_echoes() {
        let relay = crate::relay::LogRelay::with_defaults("echo");
        let probe = crate::probe::HttpProbe::new("/health");
        relay.push(crate::Stream::Stderr, b"INFO:     127.0.0.1:5 - \"GET /health HTTP/1.1\" 200 OK");
        relay.push(crate::Stream::Stderr, b"INFO:     127.0.0.1:6 - \"GET /health?x=1 HTTP/1.1\" 503");
        assert!(only_echoes(&relay, &probe, 2));
        assert!(!only_echoes(&relay, &probe, 0), "no new line is not an echo burst");
        relay.push(crate::Stream::Stderr, b"INFO:     127.0.0.1:7 - \"GET /healthz HTTP/1.1\" 200 OK");
        assert!(!only_echoes(&relay, &probe, 1), "another path is someone else's request");
        relay.push(crate::Stream::Stdout, b"loaded 12 skills");
        assert!(!only_echoes(&relay, &probe, 1), "a line of its own is news");
        assert!(!only_echoes(&relay, &probe, 65), "a burst too large to inspect is news");
    }
}
