//! `tether up`: start, show progress until ready, print the URL; then supervise in
//! the foreground until Ctrl-C/SIGTERM, or return at once with `--detach`.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tether::{Config, EnsureOptions, Error, Identity, Lifecycle, State, StopOutcome};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::UpArgs;
use crate::output::{json_line, report_error};

/// The config: `--config FILE`, else `./tether.toml` when present, with the flags on top;
/// with no runner and nothing to run, the built-in demo backend.
fn build_config(args: &UpArgs) -> tether::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None if Path::new("tether.toml").exists() => Config::from_file(Path::new("tether.toml"))?,
        None => Config::default(),
    };
    config.overlay(args.to_config());
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

pub async fn run(args: UpArgs) -> i32 {
    let json = args.json;
    let started = Instant::now();
    let plan = match build_config(&args).and_then(Config::plan) {
        Ok(p) => p,
        Err(e) => return report_error(&e, json),
    };
    let lifecycle = Arc::new(Lifecycle::new());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let observer = tokio::spawn(observe(lifecycle.subscribe(), json, started, done_rx));
    let opts = EnsureOptions::default().detached(args.detach).with_lifecycle(Arc::clone(&lifecycle));
    let result = tether::ensure_running(plan, opts).await;
    let _ = done_tx.send(());
    let _ = observer.await;
    let handle = match result {
        Ok(h) => h,
        Err(e) => return report_error(&e, json),
    };
    let record = handle.record().clone();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let pid = match handle.instance().identity() {
        Identity::Process { leader, .. } => Some(leader.pid),
        Identity::Container { .. } => None,
    };
    if json {
        json_line(&json!({
            "state": "ready", "name": record.name, "url": record.url, "port": record.port,
            "pid": pid, "container_id": record.container_id, "elapsed_ms": elapsed_ms,
            "progress": handle.instance().progress(), "detached": args.detach,
        }));
    } else {
        let progress = handle.instance().progress().map(|n| format!(" ({n} loaded)")).unwrap_or_default();
        println!("ready: {}{progress} in {}", record.url, tether::core::error::humanize(started.elapsed()));
    }
    if args.detach {
        if !json {
            println!(
                "detached as '{}'; `tether status --name {0}`, `tether logs --name {0}`, `tether down --name {0}`",
                record.name
            );
        }
        handle.release();
        return 0;
    }
    supervise(handle, json).await
}

/// Foreground: wait for Ctrl-C, SIGTERM, SIGHUP or the backend's own exit; stop it.
async fn supervise(handle: tether::Handle, json: bool) -> i32 {
    let (mut term, mut hup) = match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
        (Ok(t), Ok(h)) => (t, h),
        _ => {
            let e = Error::io("cannot listen for signals", std::io::Error::other("signal setup failed"));
            let code = report_error(&e, json);
            let _ = handle.stop().await;
            return code;
        }
    };
    let exited = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        _ = hup.recv() => None,
        status = handle.instance().wait_exit() => Some(status),
    };
    let name = handle.record().name.clone();
    let outcome = handle.stop().await;
    match (exited, outcome) {
        (Some(status), _) => {
            let e = Error::EarlyExit { status, stderr_tail: Vec::new() };
            if json {
                json_line(
                    &json!({"state": "exited", "name": name, "exit_code": status.code(), "error": format!("backend exited by itself ({status})")}),
                );
            } else {
                eprintln!("error: backend '{name}' exited by itself ({status})");
            }
            e.exit_code()
        }
        (None, Ok(how)) => {
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
            0
        }
        (None, Err(e)) => report_error(&e, json),
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
        bar
    });
    loop {
        let state = rx.borrow_and_update().clone();
        let (phase, value) = match &state {
            State::WaitingReady { progress } => (progress.phase.clone(), progress.value),
            other => (other.name().replace('_', " "), None),
        };
        if json {
            json_line(
                &json!({"state": state.name(), "phase": phase, "progress": value, "elapsed_ms": started.elapsed().as_millis() as u64}),
            );
        } else if let Some(bar) = &bar {
            let count = value.map(|v| format!(" · {v} loaded")).unwrap_or_default();
            bar.set_message(format!("{phase}{count}"));
        } else {
            let count = value.map(|v| format!(", {v} loaded")).unwrap_or_default();
            tracing::info!("{phase}{count}");
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = &mut done => break,
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
