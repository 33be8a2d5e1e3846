//! The Supervisor, driven through the fake runner: its typed states, restarts,
//! progress from `prepare`, and which failures end it.

use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use tether_core::probe::LogProbe;
use tether_core::readiness::ReadinessOptions;
use tether_core::restart::{Ended, RestartOptions, RestartPolicy};
use tether_core::{
    Error, ExitStatus, LaunchOptions, LaunchSpec, LaunchStarter, Progress, State, Stream, Supervisor,
    SupervisorOptions, SupervisorState,
};
use tether_testkit::fake::{FakeControl, FakeRunner};
use tokio::sync::mpsc::UnboundedReceiver;

fn supervisor(runner: &FakeRunner, options: SupervisorOptions) -> Supervisor {
    let readiness = ReadinessOptions::default().with_deadline(Duration::from_secs(30));
    let probe = Arc::new(LogProbe::new(Regex::new("^ready$").expect("pattern")));
    let starter = LaunchStarter::new(
        Arc::new(runner.clone()),
        LaunchSpec::new("fake", 9),
        probe,
        LaunchOptions::default().with_readiness(readiness),
    );
    Supervisor::spawn(Arc::new(starter), options)
}

async fn next(events: &mut UnboundedReceiver<SupervisorState>) -> SupervisorState {
    tokio::time::timeout(Duration::from_secs(30), events.recv()).await.ok().flatten().expect("an event within 30 s")
}

/// The `n`th backend the runner started (0-based), once it is there.
async fn started(runner: &FakeRunner, n: usize) -> FakeControl {
    loop {
        if let Some(c) = runner.started().get(n).cloned() {
            return c;
        }
        tokio::task::yield_now().await;
    }
}

/// Issue 12, item 2: a pull's progress (reported by `prepare`) reaches the fronts,
/// in order, as `Starting { Preparing { progress } }` — it used to be refused by the
/// lifecycle and dropped.
#[tokio::test]
async fn prepare_progress_reaches_the_events_in_order() {
    let steps: Vec<Progress> = (1..=3).map(|n| Progress { phase: "pulling my-image".into(), value: Some(n) }).collect();
    let runner = FakeRunner::preparing(steps);
    let mut sup = supervisor(&runner, SupervisorOptions::default());
    let mut events = sup.events().expect("events");
    let first = started(&runner, 0).await;
    first.print(Stream::Stdout, "ready");
    let mut pulled = Vec::new();
    loop {
        match next(&mut events).await {
            SupervisorState::Starting { lifecycle: State::Preparing { progress }, .. } if progress.value.is_some() => {
                pulled.push(progress.value)
            }
            SupervisorState::Ready { .. } => break,
            other => assert!(!other.is_final(), "{other:?}"),
        }
    }
    assert_eq!(pulled, vec![Some(1), Some(2), Some(3)]);
    sup.stop();
    assert!(matches!(sup.wait().await, SupervisorState::Stopped { outcome: Some(_), .. }));
}

#[tokio::test]
async fn a_crash_after_ready_is_restarted_and_counted() {
    let runner = FakeRunner::new();
    let restart = RestartOptions::default().with_policy(RestartPolicy::OnFailure);
    let mut sup = supervisor(&runner, SupervisorOptions::default().with_restart(restart));
    let mut events = sup.events().expect("events");
    started(&runner, 0).await.print(Stream::Stdout, "ready");
    while !matches!(next(&mut events).await, SupervisorState::Ready { restarts: 0, .. }) {}
    runner.started()[0].exit(ExitStatus::Code(3));
    let crash = loop {
        match next(&mut events).await {
            s @ SupervisorState::Restarting { .. } => break s,
            other => assert!(!other.is_final(), "{other:?}"),
        }
    };
    let SupervisorState::Restarting { ended, restarts, error, .. } = crash else { unreachable!() };
    assert_eq!((ended, restarts, error.is_none()), (Ended::Exited(ExitStatus::Code(3)), 1, true));
    started(&runner, 1).await.print(Stream::Stdout, "ready");
    while !matches!(next(&mut events).await, SupervisorState::Ready { restarts: 1, .. }) {}
    // A clean exit is not a failure: on-failure ends there, with the reason.
    runner.started()[1].exit(ExitStatus::Code(0));
    let end = sup.wait().await;
    assert!(matches!(end, SupervisorState::Failed { ended: Ended::Exited(ExitStatus::Code(0)), restarts: 1, .. }));
}

#[tokio::test]
async fn a_first_start_the_backend_failed_is_final_and_a_missing_tool_always_is() {
    // A start that fails (the backend exits before ready): final for `up`...
    let runner = FakeRunner::new();
    let restart = RestartOptions::default().with_policy(RestartPolicy::Always);
    let sup = supervisor(&runner, SupervisorOptions::default().with_restart(restart.clone()));
    started(&runner, 0).await.exit(ExitStatus::Code(2));
    let end = sup.wait().await;
    let SupervisorState::Failed { ended: Ended::StartFailed(_), error: Some(e), .. } = &end else { panic!("{end:?}") };
    assert!(matches!(**e, Error::EarlyExit { .. }), "{e:?}");
    // ... and for an MCP front too: the backend's own verdict on a start that never became
    // ready is not retried (it would only hide the reason behind "still starting").
    let runner = FakeRunner::new();
    let options = SupervisorOptions::default().with_restart(restart.clone()).retrying_first_start(true);
    let sup = supervisor(&runner, options);
    started(&runner, 0).await.exit(ExitStatus::Code(2));
    let end = sup.wait().await;
    let SupervisorState::Failed { restarts: 0, error: Some(e), .. } = &end else { panic!("{end:?}") };
    assert!(matches!(**e, Error::EarlyExit { .. }), "{e:?}");
    assert_eq!(runner.started().len(), 1, "no second start");
    // A missing tool is never retried: nothing a retry can fix.
    let runner = FakeRunner::unavailable("no such tool");
    let sup = supervisor(&runner, SupervisorOptions::default().with_restart(restart).retrying_first_start(true));
    let end = sup.wait().await;
    assert!(matches!(&end, SupervisorState::Failed { error: Some(e), .. } if matches!(**e, Error::Unavailable { .. })));
    assert!(runner.started().is_empty());
}

#[tokio::test]
async fn a_stop_while_starting_or_waiting_to_restart_ends_at_once() {
    // While the first start waits for readiness (the backend never says ready).
    let runner = FakeRunner::new();
    let sup = supervisor(&runner, SupervisorOptions::default());
    let control = started(&runner, 0).await;
    sup.stop();
    let end = sup.wait().await;
    assert!(matches!(end, SupervisorState::Stopped { during_start: true, .. }), "{end:?}");
    assert_eq!(control.stop_calls(), 1, "the starting backend was stopped");
    // While it waits out a restart's backoff.
    let runner = FakeRunner::new();
    let mut restart = RestartOptions::default().with_policy(RestartPolicy::Always);
    restart.backoff.initial = Duration::from_secs(3600);
    restart.backoff.max = Duration::from_secs(3600);
    let mut sup = supervisor(&runner, SupervisorOptions::default().with_restart(restart));
    let mut events = sup.events().expect("events");
    started(&runner, 0).await.print(Stream::Stdout, "ready");
    while !matches!(next(&mut events).await, SupervisorState::Ready { .. }) {}
    runner.started()[0].exit(ExitStatus::Code(1));
    while !matches!(next(&mut events).await, SupervisorState::Restarting { .. }) {}
    sup.stop();
    let end = sup.wait().await;
    assert!(matches!(end, SupervisorState::Stopped { outcome: None, during_start: false, .. }), "{end:?}");
}
