//! What is done to one container through the engine, by whoever holds it — its
//! backend handle, its guard, the stale sweep: watch its exit, signal it, stop and
//! remove it.

use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{KillContainerOptions, RemoveContainerOptions, WaitContainerOptions};
use futures_util::StreamExt;
use tether_core::{ExitStatus, Result, StopOutcome};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine::{describe, is_conflict, is_not_found, runner_error};

/// How long the exit report waits for the last output to arrive: the output stream
/// ends with the container, so this only bounds a misbehaving engine.
const DRAIN: Duration = Duration::from_secs(2);

/// After `SIGKILL`, how long the container may take to be reported gone.
const AFTER_KILL: Duration = Duration::from_secs(10);

/// Watch the container until it exits; the status is published once its last
/// output (`logs`, when given) has been relayed, so an early-exit error carries it.
pub(crate) fn watch_exit(
    docker: Docker,
    id: String,
    logs: Option<JoinHandle<()>>,
) -> watch::Receiver<Option<ExitStatus>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let status = wait_exit(&docker, &id).await;
        if let Some(logs) = logs {
            let _ = tokio::time::timeout(DRAIN, logs).await;
        }
        tx.send_replace(Some(status));
    });
    rx
}

async fn wait_exit(docker: &Docker, id: &str) -> ExitStatus {
    // A dropped connection is not an exit: look again while the container runs.
    for _ in 0..5 {
        let opts = WaitContainerOptions { condition: "not-running".into() };
        let first = docker.wait_container(id, Some(opts)).next().await;
        match first {
            Some(Ok(r)) => return ExitStatus::Code(r.status_code as i32),
            // bollard reports a non-zero exit code as an error.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => return ExitStatus::Code(code as i32),
            Some(Err(e)) if is_not_found(&e) => return ExitStatus::Unknown,
            other => {
                tracing::debug!(container = id, result = ?other.map(|r| r.map_err(|e| describe(&e))), "wait ended early");
                match docker.inspect_container(id, None).await {
                    Ok(c) => {
                        let state = c.state.unwrap_or_default();
                        if !state.running.unwrap_or(false) {
                            return state.exit_code.map_or(ExitStatus::Unknown, |c| ExitStatus::Code(c as i32));
                        }
                    }
                    Err(_) => return ExitStatus::Unknown,
                }
            }
        }
    }
    ExitStatus::Unknown
}

/// Send `signal` to the container; `Ok(false)` if it was not running.
async fn signal(docker: &Docker, id: &str, signal: &str) -> Result<bool> {
    match docker.kill_container(id, Some(KillContainerOptions { signal: signal.into() })).await {
        Ok(()) => Ok(true),
        Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(false),
        Err(e) => Err(runner_error(&format!("cannot signal container {}", short(id)), e)),
    }
}

/// Remove the container and its anonymous volumes; a container already gone is fine.
pub(crate) async fn remove(docker: &Docker, id: &str) -> Result<()> {
    let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
    match docker.remove_container(id, Some(opts)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        // "removal already in progress": someone else (another start's sweep) is
        // removing it; wait until it is gone, so its published port is free after us.
        Err(e) if is_conflict(&e) => {
            let gone = WaitContainerOptions { condition: "removed".into() };
            let _ = tokio::time::timeout(AFTER_KILL, docker.wait_container(id, Some(gone)).next()).await;
            Ok(())
        }
        Err(e) => Err(runner_error(&format!("cannot remove container {}", short(id)), e)),
    }
}

/// The first 12 characters of a container id, as docker shows it.
pub(crate) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Stop `id`: its stop signal, up to `grace` for it to exit, then `SIGKILL`; then
/// remove it and its anonymous volumes. `exit` publishes its exit status.
pub(crate) async fn stop_and_remove(
    docker: &Docker,
    id: &str,
    stop_signal: &str,
    grace: Duration,
    mut exit: watch::Receiver<Option<ExitStatus>>,
) -> Result<StopOutcome> {
    let mut killed = false;
    let running = exit.borrow().is_none();
    if running && signal(docker, id, stop_signal).await? {
        let ended = tokio::time::timeout(grace, exit.wait_for(Option::is_some)).await.is_ok();
        if !ended && signal(docker, id, "SIGKILL").await? {
            killed = true;
        }
    }
    let status = tokio::time::timeout(AFTER_KILL, exit.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|s| *s))
        .unwrap_or(ExitStatus::Unknown);
    remove(docker, id).await?;
    Ok(if killed { StopOutcome::Killed } else { StopOutcome::Terminated { exit: status } })
}
