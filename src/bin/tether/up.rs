//! `tether up`: start, show progress until ready, print the URL; then supervise in
//! the foreground until Ctrl-C/SIGTERM, or return at once with `--detach`.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tether::core::supervise::{Ended, RestartTracker};
use tether::{Config, EnsureOptions, Error, Handle, Lifecycle, Plan, PortChoice, State, StopOutcome};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{BackendArgs, UpArgs};
use crate::output::{json_line, report_error};

/// The config: `--config FILE`, else `./tether.toml` when present, with the flags on top;
/// with no runner and nothing to run, the built-in demo backend.
fn build_config(args: &BackendArgs) -> tether::Result<Config> {
    let mut config = load_config(args)?;
    let nothing_to_run = config.args.is_empty() && config.package.is_none() && config.image.is_none();
    if config.runner.is_none() && nothing_to_run {
        let exe = std::env::current_exe()
            .map_err(|e| Error::io("cannot find this program's own path to run the demo backend", e))?;
        config.args = [
            exe.to_string_lossy().as_ref(),
            "demo-backend",
            "--port",
            "{port}",
            "--host",
            "{host}",
            "--ready-after",
            "2s",
            "--skills",
            "12",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if config.probe.is_none() && config.preset.is_none() {
            config.preset = Some("claude-skills".into());
        }
    }
    Ok(config)
}

/// `--config FILE`, else `./tether.toml` when present, with the flags on top.
pub fn load_config(args: &BackendArgs) -> tether::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None if Path::new("tether.toml").exists() => Config::from_file(Path::new("tether.toml"))?,
        None => Config::default(),
    };
    config.overlay(args.to_config());
    Ok(config)
}

pub async fn run(args: UpArgs) -> i32 {
    let json = args.json;
    let plan = match build_config(&args.backend).and_then(Config::plan) {
        Ok(p) => p,
        Err(e) => return report_error(&e, json),
    };
    let opts = EnsureOptions::default().detached(args.detach).replacing(args.backend.replace);
    // Listen before anything starts: a stop signal at any moment is a clean stop.
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => return report_error(&e, json),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut first = opts.clone();
    first.cancel = Some(stop_rx);
    let started = {
        let starting = start(&plan, first, json);
        tokio::pin!(starting);
        tokio::select! {
            started = &mut starting => started,
            _ = signals.recv() => {
                // A stop while starting: the backend is stopped with its grace period.
                let _ = stop_tx.send(true);
                starting.await
            }
        }
    };
    let handle = match started {
        Ok(h) => h,
        Err(Error::Interrupted) => {
            if json {
                json_line(&json!({"state": "stopped", "name": plan.name, "during": "start"}));
            } else {
                eprintln!("stopped '{}' while it was starting", plan.name);
            }
            return 0;
        }
        Err(e) => return report_error(&e, json),
    };
    if args.detach {
        if !json {
            println!(
                "detached as '{}'; `tether status --name {0}`, `tether logs --name {0}`, `tether down --name {0}`",
                handle.record().name
            );
        }
        handle.release();
        return 0;
    }
    supervise(handle, plan, opts, json, signals).await
}

/// Start once, showing progress; print the ready line.
async fn start(plan: &Plan, opts: EnsureOptions, json: bool) -> tether::Result<Handle> {
    let started = Instant::now();
    let lifecycle = Arc::new(Lifecycle::new());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let observer = tokio::spawn(observe(lifecycle.subscribe(), json, started, done_rx));
    let result = tether::ensure_running(plan.clone(), opts.with_lifecycle(Arc::clone(&lifecycle))).await;
    let _ = done_tx.send(());
    let _ = observer.await;
    let handle = result?;
    let record = handle.record();
    if json {
        json_line(&json!({
            "state": "ready", "name": record.name, "url": record.url, "port": record.port,
            "pid": handle.pid(), "container_id": record.container_id,
            "elapsed_ms": started.elapsed().as_millis() as u64, "progress": handle.progress(),
            "detached": record.detached, "restarts": record.restarts, "reused": handle.reused(),
        }));
    } else {
        let progress = handle.progress().map(|n| format!(" ({n} loaded)")).unwrap_or_default();
        let reused = if handle.reused() { " (reused the running instance)" } else { "" };
        println!("ready: {}{progress} in {}{reused}", record.url, tether::core::error::humanize(started.elapsed()));
    }
    Ok(handle)
}

/// Resolves on Ctrl-C, SIGTERM or SIGHUP.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> tether::Result<Self> {
        let listen = |kind| signal(kind).map_err(|e| Error::io("cannot listen for signals", e));
        Ok(Signals {
            term: listen(SignalKind::terminate())?,
            hup: listen(SignalKind::hangup())?,
            int: listen(SignalKind::interrupt())?,
        })
    }

    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

/// Foreground: until Ctrl-C, SIGTERM or SIGHUP, watch the backend; when it ends,
/// restart it per the policy or stop and fail.
async fn supervise(mut handle: Handle, plan: Plan, opts: EnsureOptions, json: bool, mut signals: Signals) -> i32 {
    let mut tracker = RestartTracker::new(plan.restart.clone());
    // Restarts keep the port the first start chose (`auto` included).
    let mut again = plan.clone();
    again.port = PortChoice::Fixed(handle.record().port);
    loop {
        let up_since = Instant::now();
        let ended = tokio::select! {
            _ = signals.recv() => None,
            ended = handle.watch(plan.liveness.as_ref()) => Some(ended),
        };
        let name = handle.record().name.clone();
        let Some(ended) = ended else {
            if handle.reused() {
                // We did not start it: it was running detached before us, and stays.
                if !json {
                    eprintln!("left '{name}' running: it was already running (detached) before this `up`");
                }
                handle.release();
                return 0;
            }
            return match handle.stop().await {
                Ok(how) => {
                    report_stopped(&name, how, json);
                    0
                }
                Err(e) => report_error(&e, json),
            };
        };
        let ended = match ended {
            Ok(e) => e,
            Err(e) => Ended::Unhealthy(e.chain()),
        };
        let _ = handle.stop().await;
        let Some(wait) = tracker.next(&ended, up_since.elapsed()) else {
            if json {
                json_line(&json!({"state": "exited", "name": name, "error": format!("backend {ended}"),
                    "exit_code": match &ended { Ended::Exited(s) => s.code(), _ => None }, "restarts": tracker.total()}));
            } else {
                eprintln!("error: backend '{name}' {ended}; not restarting (restarts so far: {})", tracker.total());
            }
            return 1;
        };
        if json {
            json_line(&json!({"state": "restarting", "name": name, "reason": ended.to_string(),
                "restarts": tracker.total(), "in_ms": wait.as_millis() as u64}));
        } else {
            eprintln!(
                "backend '{name}' {ended}; restart {} in {}",
                tracker.total(),
                tether::core::error::humanize(wait)
            );
        }
        tokio::select! {
            _ = signals.recv() => return 0,
            _ = tokio::time::sleep(wait) => {}
        }
        let mut restart_opts = opts.clone();
        restart_opts.restarts = tracker.total();
        handle = loop {
            match start(&again, restart_opts.clone(), json).await {
                Ok(h) => break h,
                Err(e) => {
                    let failed = Ended::Unhealthy(e.chain());
                    let code = report_error(&e, json);
                    let Some(wait) = tracker.next(&failed, Duration::ZERO) else { return code };
                    restart_opts.restarts = tracker.total();
                    tokio::select! {
                        _ = signals.recv() => return 0,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        };
    }
}

fn report_stopped(name: &str, how: StopOutcome, json: bool) {
    if json {
        json_line(&json!({"state": "stopped", "name": name, "killed": how.was_killed()}));
    } else {
        match how {
            StopOutcome::Killed => {
                eprintln!("stopped '{name}': it ignored SIGTERM and was killed after the grace period")
            }
            StopOutcome::Terminated { exit } => eprintln!("stopped '{name}' ({exit})"),
        }
    }
}

/// Show the lifecycle: a progress bar on a TTY, JSON lines with `--json`, plain lines otherwise.
async fn observe(
    mut rx: tokio::sync::watch::Receiver<State>,
    json: bool,
    started: Instant,
    mut done: tokio::sync::oneshot::Receiver<()>,
) {
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        crate::output::set_bar(Some(bar.clone()));
        bar
    });
    let mut last_plain: Option<String> = None;
    loop {
        let state = rx.borrow_and_update().clone();
        let (phase, value) = match &state {
            State::WaitingReady { progress } => (progress.phase.clone(), progress.value),
            other => (other.name().replace('_', " "), None),
        };
        if matches!(state, State::Idle) || state.is_ready() {
            // Nothing to show yet; ready gets its own line.
        } else if json {
            json_line(
                &json!({"state": state.name(), "phase": phase, "progress": value, "elapsed_ms": started.elapsed().as_millis() as u64}),
            );
        } else if let Some(bar) = &bar {
            let count = value.map(|v| format!(" · {v} loaded")).unwrap_or_default();
            bar.set_message(format!("{phase}{count}"));
        } else {
            let count = value.map(|v| format!(", {v} loaded")).unwrap_or_default();
            let text = format!("{phase}{count}");
            if last_plain.as_deref() != Some(text.as_str()) {
                tracing::info!("{text}");
                last_plain = Some(text);
            }
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = &mut done => break,
        }
    }
    if let Some(bar) = bar {
        crate::output::set_bar(None);
        bar.finish_and_clear();
    }
}
