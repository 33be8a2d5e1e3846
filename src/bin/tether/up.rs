//! `tether up`: start, show progress until ready, print the URL; then supervise in
//! the foreground until Ctrl-C/SIGTERM, or return at once with `--detach`.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tether::{
    Config, EnsureOptions, EnsureStarter, Error, Lifecycle, Plan, State, StopOutcome, Supervisor, SupervisorState,
};

use crate::cli::{BackendArgs, UpArgs};
use crate::output::{json_line, report_error};

/// The config: `--config FILE`, else `./tether.toml` when present, with the flags on top;
/// with no runner and nothing to run, the built-in demo backend.
fn build_config(args: &BackendArgs) -> tether::Result<Config> {
    let mut config = load_config(args)?;
    let nothing_to_run =
        config.args.is_empty() && config.package.is_none() && config.image.is_none() && config.url.is_none();
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
    config.overlay(args.keys.clone());
    Ok(config)
}

pub async fn run(args: UpArgs) -> i32 {
    let json = args.json;
    let plan = match build_config(&args.backend).and_then(Config::plan) {
        Ok(p) => p,
        Err(e) => return report_error(&e, json),
    };
    let mut opts = EnsureOptions::default().detached(args.detach).replacing(args.backend.replace);
    let linger = match args.share.as_deref().map(tether::parse_duration) {
        Some(Ok(linger)) => Some(linger),
        Some(Err(why)) => return report_error(&Error::config(format!("bad --share: {why}")), json),
        None => None,
    };
    if let Some(linger) = linger {
        opts = opts.sharing(linger);
    }
    // Listen before anything starts: a stop signal at any moment is a clean stop.
    let mut signals = match Signals::new() {
        Ok(s) => s.stopping_when_output_closes(),
        Err(e) => return report_error(&e, json),
    };
    if args.detach {
        return detach(plan, opts, json, signals).await;
    }
    // Foreground: the supervisor owns the backend's life; this only renders it and
    // passes on a stop.
    let starter = Arc::new(EnsureStarter::new(plan.clone(), opts));
    let mut supervisor = Supervisor::spawn(starter, tether::supervisor_options(&plan));
    let Some(mut events) = supervisor.events() else { return 1 };
    let mut view = View::new(json, &plan.name);
    view.linger = linger;
    view.remote = plan.runner == tether::RunnerKind::Remote;
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = signals.recv() => {
                if !stopping {
                    stopping = true;
                    view.clear();
                    say!("stopping '{}' (Ctrl-C again to kill it now)", plan.name);
                    supervisor.stop();
                    continue;
                }
                // A second interrupt: no more grace.
                view.clear();
                say!("second interrupt: killing '{}' now", plan.name);
                supervisor.kill().await;
                return 0;
            }
            event = events.recv() => {
                let Some(event) = event else { return 1 };
                if let Some(code) = view.show(&event) {
                    return code;
                }
            }
        }
    }
}

/// `up --detach`: one start, shown until ready, then left running.
async fn detach(plan: Plan, opts: EnsureOptions, json: bool, mut signals: Signals) -> i32 {
    let started = Instant::now();
    let lifecycle = Arc::new(Lifecycle::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut opts = opts.with_lifecycle(Arc::clone(&lifecycle));
    opts.cancel = Some(stop_rx);
    let mut view = View::new(json, &plan.name);
    let mut phases = lifecycle.subscribe();
    let starting = tether::ensure_running(plan.clone(), opts);
    tokio::pin!(starting);
    let result = loop {
        tokio::select! {
            r = &mut starting => break r,
            _ = signals.recv() => { let _ = stop_tx.send(true); }
            Ok(()) = phases.changed() => {
                let state = phases.borrow_and_update().clone();
                view.progress(&state, started);
            }
        }
    };
    view.clear();
    let handle = match result {
        Ok(h) => h,
        Err(Error::Interrupted) => {
            view.stopped_while_starting();
            return 0;
        }
        Err(e) => return report_error(&e, json),
    };
    view.ready(&tether::core::Supervised::ready_info(&handle), handle.record().restarts, started);
    if !json {
        tell!(
            "detached as '{}'; `tether status --name {0}`, `tether logs --name {0}`, `tether down --name {0}`",
            handle.record().name
        );
    }
    handle.release();
    0
}

/// Resolves on Ctrl-C, SIGTERM or SIGHUP.
pub struct Signals {
    stop: tether_core::sys::StopSignals,
    /// Also when the reader of stdout or stderr went away (`up`; not `mcp-proxy`, whose
    /// host may close its stderr and still talk on stdio).
    output_closes: bool,
}

impl Signals {
    pub fn new() -> tether::Result<Self> {
        let stop = tether_core::sys::StopSignals::new().map_err(|e| Error::io("cannot listen for signals", e))?;
        Ok(Signals { stop, output_closes: false })
    }

    /// Also resolve when the reader of tether's output went away.
    pub fn stopping_when_output_closes(mut self) -> Self {
        self.output_closes = true;
        self
    }

    /// A signal, or the reader of tether's output gone (`up 2>&1 | head -3`): a stop.
    pub async fn recv(&mut self) {
        tokio::select! {
            () = self.stop.recv() => {}
            () = crate::output::closed(), if self.output_closes => {}
        }
    }
}

/// How `up` shows the supervisor's states: a progress bar on a TTY, JSON lines with
/// `--json`, plain lines otherwise.
struct View {
    json: bool,
    name: String,
    /// `--share`: the backend's linger after the last lease.
    linger: Option<Duration>,
    /// A backend someone else runs: a restart is a reconnect, a stop is a detach.
    remote: bool,
    bar: Option<ProgressBar>,
    last_plain: Option<String>,
}

impl View {
    fn new(json: bool, name: &str) -> Self {
        View { json, name: name.to_string(), linger: None, remote: false, bar: None, last_plain: None }
    }

    /// Show `event`; `Some(exit code)` once the supervisor is done.
    fn show(&mut self, event: &SupervisorState) -> Option<i32> {
        match event {
            SupervisorState::Starting { lifecycle, since, .. } => {
                self.progress(lifecycle, since.into_std());
                None
            }
            SupervisorState::Ready { info, restarts, started } => {
                self.clear();
                self.ready(info, *restarts, started.into_std());
                None
            }
            SupervisorState::Restarting { ended, error, restarts, at, .. } => {
                self.clear();
                match error {
                    // A restart that failed to start: say why, then wait for the next try.
                    Some(e) => {
                        report_error(e, self.json);
                    }
                    None if self.remote => {
                        // Not ours to restart: probed again until it answers.
                        let wait = at.saturating_duration_since(tokio::time::Instant::now());
                        if self.json {
                            json_line(&json!({"state": "reconnecting", "name": self.name, "reason": ended.to_string(),
                                "restarts": restarts, "in_ms": wait.as_millis() as u64}));
                        } else {
                            say!(
                                "lost the remote backend '{}' ({ended}); reconnecting in {} (reconnect {restarts})",
                                self.name,
                                tether::core::error::humanize(wait)
                            );
                        }
                    }
                    None => {
                        let wait = at.saturating_duration_since(tokio::time::Instant::now());
                        if self.json {
                            json_line(&json!({"state": "restarting", "name": self.name, "reason": ended.to_string(),
                                "restarts": restarts, "in_ms": wait.as_millis() as u64}));
                        } else {
                            say!(
                                "backend '{}' {ended}; restart {restarts} in {}",
                                self.name,
                                tether::core::error::humanize(wait)
                            );
                        }
                    }
                }
                None
            }
            SupervisorState::Failed { ended, error, restarts, .. } => {
                self.clear();
                if let Some(e) = error {
                    return Some(report_error(e, self.json));
                }
                if self.json {
                    json_line(&json!({"state": "exited", "name": self.name, "error": format!("backend {ended}"),
                        "exit_code": tether::core::supervisor::exit_code(ended), "restarts": restarts}));
                } else {
                    say!("error: backend '{}' {ended}; not restarting (restarts so far: {restarts})", self.name);
                }
                Some(1)
            }
            SupervisorState::Stopped { outcome, during_start, left_running, error } => {
                self.clear();
                if let Some(e) = error {
                    say!("error: stopping '{}': {e}", self.name);
                    return Some(1);
                }
                if *during_start {
                    self.stopped_while_starting();
                } else if let (true, Some(linger)) = (*left_running, self.linger) {
                    if self.json {
                        json_line(
                            &json!({"state": "released", "name": self.name, "linger_ms": linger.as_millis() as u64}),
                        );
                    } else {
                        let linger = tether::core::error::humanize(linger);
                        say!("released '{}': it stops {linger} after the last sharer lets go", self.name);
                    }
                } else if *left_running {
                    if !self.json {
                        say!("left '{}' running: it was already running (detached) before this `up`", self.name);
                    }
                } else if self.remote {
                    // Nothing was stopped: the backend is someone else's.
                    if self.json {
                        json_line(
                            &json!({"state": "stopped", "name": self.name, "killed": false, "detached_from": true}),
                        );
                    } else {
                        say!("detached from '{}': the remote backend keeps running", self.name);
                    }
                } else if let Some(how) = outcome {
                    report_stopped(&self.name, *how, self.json);
                }
                Some(0)
            }
            _ => None,
        }
    }

    fn stopped_while_starting(&self) {
        if self.json {
            json_line(&json!({"state": "stopped", "name": self.name, "during": "start"}));
        } else {
            say!("stopped '{}' while it was starting", self.name);
        }
    }

    fn ready(&self, info: &tether::core::ReadyInfo, restarts: u32, started: Instant) {
        if self.json {
            json_line(&json!({
                "state": "ready", "name": info.name, "url": info.url, "port": info.port,
                "pid": info.pid, "guard_pid": info.guard_pid, "container_id": info.runner_fields.get("container_id"),
                "elapsed_ms": started.elapsed().as_millis() as u64, "progress": info.progress,
                "detached": info.detached, "restarts": restarts, "reused": info.reused,
            }));
        } else {
            let progress = info.progress.map(|n| format!(" ({n} loaded)")).unwrap_or_default();
            let reused = if info.reused { " (reused the running instance)" } else { "" };
            tell!("ready: {}{progress} in {}{reused}", info.url, tether::core::error::humanize(started.elapsed()));
            if !info.detached && std::io::stderr().is_terminal() {
                // Dim, on the terminal only: stdout stays the URL line scripts read.
                let what = if self.remote { "ends tether; the remote backend keeps running" } else { "stops it" };
                say!("\x1b[2mCtrl-C {what}\x1b[0m");
            }
        }
    }

    /// A start's progress: the lifecycle state it is in.
    fn progress(&mut self, state: &State, started: Instant) {
        if matches!(state, State::Idle) || state.is_ready() || state.is_terminal() {
            return; // Nothing to show yet; ready gets its own line.
        }
        let (phase, value) = match state {
            State::WaitingReady { progress } | State::Preparing { progress } => {
                (progress.phase.clone(), progress.value)
            }
            other => (other.name().replace('_', " "), None),
        };
        if self.json {
            json_line(
                &json!({"state": state.name(), "phase": phase, "progress": value, "elapsed_ms": started.elapsed().as_millis() as u64}),
            );
            return;
        }
        if self.bar.is_none() && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::term_like(Box::new(crate::output::BarTerm)),
            );
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            crate::output::set_bar(Some(bar.clone()));
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            let count = value.map(|v| format!(" · {v} loaded")).unwrap_or_default();
            bar.set_message(format!("{phase}{count}"));
        } else {
            let count = value.map(|v| format!(", {v} loaded")).unwrap_or_default();
            let text = format!("{phase}{count}");
            if self.last_plain.as_deref() != Some(text.as_str()) {
                tracing::info!("{text}");
                self.last_plain = Some(text);
            }
        }
    }

    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            crate::output::set_bar(None);
            bar.finish_and_clear();
        }
        self.last_plain = None;
    }
}

/// Whether `exit` is how a backend answers SIGTERM when all is well.
fn clean_stop(exit: tether::core::ExitStatus) -> bool {
    use tether::core::ExitStatus;
    matches!(exit, ExitStatus::Code(0 | 143) | ExitStatus::Unknown)
        || exit == ExitStatus::Signal(tether_core::sys::Signal::SIGTERM as i32)
}

fn report_stopped(name: &str, how: StopOutcome, json: bool) {
    if json {
        json_line(&json!({"state": "stopped", "name": name, "killed": how.was_killed()}));
    } else {
        match how {
            StopOutcome::Killed => {
                say!("stopped '{name}': it ignored SIGTERM and was killed after the grace period")
            }
            // The usual answers to our SIGTERM (0, the signal itself, 128+15 from a shell or
            // a runtime that re-raises it) are a clean stop; anything else is worth showing.
            StopOutcome::Terminated { exit } if clean_stop(exit) => say!("stopped '{name}'"),
            StopOutcome::Terminated { exit } => say!("stopped '{name}' (it ended on SIGTERM with {exit})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use tether::core::ExitStatus;

    #[test]
    fn the_usual_answers_to_sigterm_are_a_clean_stop_and_others_are_shown() {
        for clean in [ExitStatus::Code(0), ExitStatus::Code(143), ExitStatus::Signal(15), ExitStatus::Unknown] {
            assert!(super::clean_stop(clean), "{clean}");
        }
        for shown in [ExitStatus::Code(1), ExitStatus::Code(137), ExitStatus::Signal(6)] {
            assert!(!super::clean_stop(shown), "{shown}");
        }
    }
}
