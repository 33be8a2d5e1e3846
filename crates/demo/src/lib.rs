//! The built-in demo backend of tether, served by `tether demo-backend [ARGS]`.
//!
//! It is the backend of the zero-setup `tether up`, of the tests and of the benchmark. It
//! mimics the claude-skills search backend's readiness contract, and has flags to misbehave
//! in every way tether must survive.
//!
//! # HTTP contract (a hand-written HTTP/1.1 server, one request per connection, `Connection: close`)
//! - `GET /health` → 200, `application/json`:
//!   `{"status":"ok","loading_complete":B,"skills_loaded":N,"version":V}`.
//!   While loading (the first `--ready-after` of the run), `loading_complete` is false and
//!   `skills_loaded` grows linearly from 0 toward `--skills`, computed from the elapsed time at
//!   each request; from then on `loading_complete` is true and `skills_loaded` = `--skills`
//!   (`--skills 0`: complete with 0 skills). `V` is `--report-version` or this crate's version.
//! - `GET /stats` → `{"health_requests":N,"ready_at_unix_nanos":N|null,
//!   "started_at_unix_nanos":N,"health_requests_after_ready":N}` — how many probes reached
//!   the backend, in total and after it became ready. `ready_at_unix_nanos` is the instant
//!   loading completed (start + ready-after, on the wall clock), null before.
//! - `GET /` → 200 `tether demo backend\n`; anything else → 404.
//!
//! # Output
//! On listening, stdout gets exactly `demo-backend listening on http://HOST:PORT` (the real
//! port). Status lines are flushed one by one (stdout is a pipe). Messages about signals and
//! exits go to stderr, prefixed `demo-backend: `.
//!
//! # Flags (durations: `500ms`, `2s`, `1.5s`, `1m`, or plain seconds — see [`parse_duration`])
//! - `--port N` (required; 0 picks a free port), `--host ADDR` (default 127.0.0.1)
//! - `--ready-after DUR` (default 0), `--skills N` (default 5), `--report-version STR`
//! - `--print-ready`: print `demo-backend ready` at the instant loading completes
//! - `--health-mode ok|status500|nonjson|hang|huge`: how /health misbehaves — 500 with a small
//!   body; 200 with body `not json`; read the request and never answer (other connections
//!   are still served); 200 with a streamed 10 MiB JSON body (the real status fields, then a
//!   `padding` string — a probe that reads it all would see the true state)
//! - `--exit-after DUR` `--exit-code N` (default 1): exit on its own after DUR from start
//! - `--ignore-sigterm`: SIGTERM is ignored (SIG_IGN); otherwise SIGTERM stops it with code 0
//! - `--log-lines N` `--line-bytes B` (default 100, newline included): at start, print N filler
//!   lines as fast as possible on a separate thread, then report
//!   `demo-backend wrote N lines in X ms` on stderr — a reader that blocks us shows here
//! - `--long-line BYTES` (+ `--no-newline`): one line of BYTES `y`s (without the final newline)
//! - `--invalid-utf8`: the line `bad \xff\xfe utf8`
//! - `--close-stdout`: after the start-up output, the stdout pipe is closed (fd 1 becomes
//!   /dev/null) so its reader sees EOF (unless a grandchild still holds it), and serving goes on
//! - `--spawn-grandchild` (+ `--grandchild-setsid`): spawn an idle grandchild (the same
//!   executable with the hidden `--grandchild-idle`), optionally in its own session; print
//!   `demo-backend grandchild pid P`; it is not killed on exit — tether has to find it.
//!   `--grandchild-serves`: the grandchild accepts on the backend's listening socket too
//!   (the port answers while it lives); `--grandchild-via-child`: a launcher child in
//!   between starts it and waits (backend → child → grandchild, as uv → python → worker),
//!   printing `demo-backend child pid C` (the backend) and the grandchild line (the launcher)
//! - `--echo-args`: print `demo-backend argv: [...]`, the trailing arguments as JSON
//!
//! Start-up output order: listening line, grandchild pid, argv; then, on the output thread,
//! log lines, the invalid-UTF-8 line, the long line, and the closing of stdout.

mod args;
mod grandchild;
mod http;
mod output;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;

pub use args::{DemoArgs, HealthMode, parse_duration};

use http::State;
use output::{say, warn};

/// Runs the demo backend until killed, SIGTERM or `--exit-after`. Returns the process exit
/// code to use.
///
/// `self_cmd` is the argv prefix that re-invokes the demo backend (e.g. `[current_exe,
/// "demo-backend"]`); it is used only by `--spawn-grandchild`.
pub async fn run(args: DemoArgs, self_cmd: Vec<OsString>) -> io::Result<i32> {
    if args.grandchild_idle {
        return grandchild::grandchild_idle(&args, &self_cmd).await;
    }
    DemoServer::bind(args, self_cmd).await?.serve().await
}

/// A demo backend that is listening but not yet serving: [`DemoServer::bind`], then
/// [`DemoServer::serve`]. [`run`] does both; this split lets a test learn the port first.
#[derive(Debug)]
pub struct DemoServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<State>,
    args: DemoArgs,
    sigterm: Option<Terminate>,
}

impl DemoServer {
    /// Starts the clock, listens, spawns the grandchild, sets up SIGTERM handling, prints the
    /// listening line and starts the start-up output.
    pub async fn bind(args: DemoArgs, self_cmd: Vec<OsString>) -> io::Result<Self> {
        let started = Instant::now();
        let started_unix_nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let port = args
            .port
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "demo-backend: --port N is required"))?;
        let host = args.host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let listener = TcpListener::bind((host.as_str(), port))
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("demo-backend: cannot listen on {host} port {port}: {e}")))?;
        let local_addr = listener.local_addr()?;

        // Before SIGTERM is ignored, so that the grandchild does not inherit SIG_IGN.
        let grandchild = if args.spawn_grandchild {
            let plan = grandchild::GrandchildPlan {
                setsid: args.grandchild_setsid,
                listener: if args.grandchild_serves { Some(grandchild::listener_fd(&listener)?) } else { None },
                via_child: args.grandchild_via_child,
            };
            Some(grandchild::spawn_grandchild(&self_cmd, plan)?)
        } else {
            None
        };

        let sigterm = if args.ignore_sigterm {
            ignore_sigterm()?;
            warn("demo-backend: ignoring SIGTERM");
            None
        } else {
            Some(Terminate::new()?)
        };

        let url_host = if host.contains(':') { format!("[{host}]") } else { host };
        say(&format!("demo-backend listening on http://{url_host}:{}", local_addr.port()));
        match grandchild {
            // The launcher in between prints the grandchild's pid itself.
            Some(pid) if args.grandchild_via_child => say(&format!("demo-backend child pid {pid}")),
            Some(pid) => say(&format!("demo-backend grandchild pid {pid}")),
            None => {}
        }
        if args.echo_args {
            let json = serde_json::to_string(&args.extra).map_err(io::Error::other)?;
            say(&format!("demo-backend argv: {json}"));
        }
        if let Some(text) = &args.say {
            say(&format!("demo-backend says: {text}"));
        }
        output::Bulk::from_args(&args).spawn()?;

        let version = args.report_version.clone().unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
        let state = Arc::new(
            State::new(started, started_unix_nanos, args.ready_after, args.skills, version, args.health_mode)
                .with_sick_after(args.sick_after)
                .with_access_log(args.access_log),
        );
        Ok(DemoServer { listener, local_addr, state, args, sigterm })
    }

    /// The address actually listened on (the real port when `--port 0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until SIGTERM (returns 0) or `--exit-after` (returns `--exit-code`).
    pub async fn serve(mut self) -> io::Result<i32> {
        let started = self.state.started;
        if self.args.print_ready {
            let ready = self.state.ready_instant();
            tokio::spawn(async move {
                tokio::time::sleep_until(ready.into()).await;
                say("demo-backend ready");
            });
        }
        let exit_after = self.args.exit_after;
        let exit = async move {
            match exit_after {
                Some(d) => tokio::time::sleep_until((started + d).into()).await,
                None => std::future::pending().await,
            }
        };
        let mut sigterm = self.sigterm.take();
        let term = async move {
            match sigterm.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(exit, term);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(http::handle(stream, Arc::clone(&self.state)));
                    }
                    Err(e) => {
                        // E.g. out of file descriptors: say so, back off a little, go on.
                        warn(&format!("demo-backend: accept failed: {e}"));
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                },
                () = &mut exit => {
                    let code = self.args.exit_code;
                    warn(&format!("demo-backend: exiting with code {code} as asked"));
                    return Ok(code);
                }
                () = &mut term => {
                    warn("demo-backend: got SIGTERM, stopping");
                    return Ok(0);
                }
            }
        }
    }
}

/// The graceful stop request: SIGTERM on Unix; on Windows `CTRL_BREAK_EVENT`, what
/// tether sends a backend's console group.
#[derive(Debug)]
struct Terminate {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
    #[cfg(windows)]
    signal: tokio::signal::windows::CtrlBreak,
}

impl Terminate {
    fn new() -> io::Result<Self> {
        #[cfg(unix)]
        let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        #[cfg(windows)]
        let signal = tokio::signal::windows::ctrl_break()?;
        Ok(Terminate { signal })
    }

    async fn recv(&mut self) {
        self.signal.recv().await;
    }
}

/// Windows: catch `CTRL_BREAK_EVENT` and do nothing about it (a caught event does not end
/// the process).
#[cfg(windows)]
fn ignore_sigterm() -> io::Result<()> {
    let mut ignored = Terminate::new()?;
    tokio::spawn(async move {
        loop {
            ignored.recv().await;
        }
    });
    Ok(())
}

/// Sets SIGTERM's disposition to SIG_IGN for this process.
#[cfg(unix)]
fn ignore_sigterm() -> io::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_IGN installs no handler, so no code runs in signal context; the previous
    // disposition is not needed.
    unsafe { sigaction(Signal::SIGTERM, &ignore) }.map_err(io::Error::from)?;
    Ok(())
}
