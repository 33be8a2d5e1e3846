//! The readiness engine and `launch`, driven through the fake runner.

use std::sync::Arc;
use std::time::Duration;

use tether_core::probe::{HttpProbe, LogProbe, TcpProbe};
use tether_core::readiness::ReadinessOptions;
use tether_core::{Error, ExitStatus, HealthProbe, LaunchOptions, LaunchSpec, Lifecycle, State, Stream, launch};
use tether_testkit::fake::{FakeControl, FakeRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn spec(port: u16) -> LaunchSpec {
    LaunchSpec::new("fake", port)
}

fn free_port() -> u16 {
    tether_core::port::free_port("127.0.0.1").expect("free port")
}

fn opts(deadline: Duration) -> LaunchOptions {
    LaunchOptions::default().with_readiness(
        ReadinessOptions::default().with_deadline(deadline).with_attempt_timeout(Duration::from_millis(500)),
    )
}

/// Once the fake runner starts a backend, run `act` on it.
fn when_started(
    runner: &FakeRunner,
    act: impl FnOnce(&FakeControl) + Send + 'static,
) -> tokio::task::JoinHandle<FakeControl> {
    let runner = runner.clone();
    tokio::spawn(async move {
        loop {
            if let Some(c) = runner.started().first().cloned() {
                act(&c);
                return c;
            }
            tokio::task::yield_now().await;
        }
    })
}

/// Serve `body` as JSON on every request, on a fresh port.
async fn json_server(body: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn an_exit_before_ready_fails_at_once_with_status_and_tail() {
    let runner = FakeRunner::new();
    let lifecycle = Arc::new(Lifecycle::new());
    let driver = when_started(&runner, |c| {
        c.print(Stream::Stderr, "fatal: no config");
        c.exit(ExitStatus::Code(3));
    });
    let err = launch(
        Arc::new(runner),
        spec(free_port()),
        Arc::new(TcpProbe),
        opts(Duration::from_secs(120)).with_lifecycle(Arc::clone(&lifecycle)),
    )
    .await
    .expect_err("exited");
    let control = driver.await.expect("driver");
    match &err {
        Error::EarlyExit { status, stderr_tail } => {
            assert_eq!(*status, ExitStatus::Code(3));
            assert_eq!(stderr_tail, &vec!["fatal: no config".to_string()]);
        }
        other => panic!("expected EarlyExit, got {other:?}"),
    }
    assert_eq!(err.backend_exit_code(), Some(3));
    assert_eq!(control.stop_calls(), 1, "the failed backend is stopped");
    assert!(matches!(lifecycle.current(), State::Failed { .. }));
}

#[tokio::test]
async fn a_deadline_fails_with_the_last_probe_and_stops_the_backend() {
    let runner = FakeRunner::new();
    let err = launch(Arc::new(runner.clone()), spec(free_port()), Arc::new(TcpProbe), opts(Duration::from_millis(200)))
        .await
        .expect_err("nothing listens");
    let Error::Timeout { last_probe, .. } = &err else { panic!("expected Timeout, got {err:?}") };
    assert!(last_probe.to_lowercase().contains("refused"), "{last_probe}");
    assert_eq!(runner.started()[0].stop_calls(), 1);
}

#[tokio::test]
async fn zero_skills_fails_at_once_not_at_the_deadline() {
    let port = json_server(r#"{"loading_complete": true, "skills_loaded": 0}"#).await;
    let probe: Arc<dyn HealthProbe> = Arc::new(HttpProbe::claude_skills("/health"));
    let err = launch(Arc::new(FakeRunner::new()), spec(port), probe, opts(Duration::from_secs(120)))
        .await
        .expect_err("0 skills");
    assert!(matches!(&err, Error::Unhealthy { reason, .. } if reason.contains("0 skills")), "{err:?}");
}

#[tokio::test]
async fn ready_with_progress_and_an_observed_lifecycle() {
    let port = json_server(r#"{"loading_complete": true, "skills_loaded": 9}"#).await;
    let lifecycle = Arc::new(Lifecycle::new());
    let mut rx = lifecycle.subscribe();
    let seen = tokio::spawn(async move {
        let mut names = vec![rx.borrow_and_update().name()];
        while rx.changed().await.is_ok() {
            names.push(rx.borrow_and_update().name());
            if names.last() == Some(&"ready") {
                break;
            }
        }
        names
    });
    let instance = launch(
        Arc::new(FakeRunner::new()),
        spec(port),
        Arc::new(HttpProbe::claude_skills("/health")),
        opts(Duration::from_secs(120)).with_lifecycle(Arc::clone(&lifecycle)),
    )
    .await
    .expect("ready");
    assert_eq!(instance.progress(), Some(9));
    assert_eq!(instance.url(), format!("http://127.0.0.1:{port}"));
    let names = seen.await.expect("observer");
    assert_eq!(names.last(), Some(&"ready"));
    instance.stop().await.expect("stop");
    assert!(matches!(lifecycle.current(), State::Stopped { .. }));
}

#[tokio::test]
async fn a_log_line_makes_a_log_probe_ready() {
    let runner = FakeRunner::new();
    when_started(&runner, |c| {
        c.print(Stream::Stdout, "loading…");
        c.print(Stream::Stdout, "Server ready on port 1");
    });
    let probe = LogProbe::new(regex::Regex::new("^Server ready").expect("regex"));
    let instance = launch(Arc::new(runner), spec(free_port()), Arc::new(probe), opts(Duration::from_secs(120)))
        .await
        .expect("ready by its log line");
    instance.stop().await.expect("stop");
}

#[tokio::test]
async fn an_unavailable_runner_starts_nothing() {
    let runner = FakeRunner::unavailable("tool missing; install it");
    let err = launch(Arc::new(runner.clone()), spec(free_port()), Arc::new(TcpProbe), opts(Duration::from_secs(1)))
        .await
        .expect_err("unavailable");
    assert!(err.to_string().contains("install it"));
    assert!(runner.started().is_empty());
}

#[tokio::test]
async fn an_exit_after_ready_is_watched_and_the_lifecycle_follows() {
    let port = json_server(r#"{"loading_complete": true, "skills_loaded": 1}"#).await;
    let runner = FakeRunner::new();
    let lifecycle = Arc::new(Lifecycle::new());
    let instance = launch(
        Arc::new(runner.clone()),
        spec(port),
        Arc::new(HttpProbe::claude_skills("/health")),
        opts(Duration::from_secs(120)).with_lifecycle(Arc::clone(&lifecycle)),
    )
    .await
    .expect("ready");
    runner.started()[0].exit(ExitStatus::Code(7));
    let ended = instance.watch(None).await.expect("watched");
    assert_eq!(ended, tether_core::restart::Ended::Exited(ExitStatus::Code(7)));
    assert_eq!(lifecycle.current(), State::Stopped { exit: Some(ExitStatus::Code(7)), killed: false });
}
