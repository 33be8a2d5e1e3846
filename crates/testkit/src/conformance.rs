//! The conformance checks: what every runner must do, run against tether's demo
//! backend started through that runner.

use std::sync::Arc;
use std::time::Duration;

use tether_core::probe::HttpProbe;
use tether_core::procs::ProcessIdentity;
use tether_core::readiness::ReadinessOptions;
use tether_core::restart::{Ended, RestartOptions, RestartPolicy};
use tether_core::runner::Tethering;
use tether_core::{
    Error, ExitStatus, Instance, LaunchOptions, LaunchSpec, LaunchStarter, LogRelay, Runner, StopOutcome, Supervisor,
    SupervisorOptions, SupervisorState, launch,
};

/// How to run tether's demo backend through one runner.
pub trait DemoBackend: Send + Sync {
    /// The runner under test.
    fn runner(&self) -> Arc<dyn Runner>;
    /// Backend arguments that run the demo backend with `flags`; they must make it
    /// listen on `{port}` of `{host}` as the runner needs (e.g. 0.0.0.0 in a container).
    fn args(&self, flags: &[&str]) -> Vec<String>;
    /// How backends are tied to the test (the guard executable, usually).
    fn tethering(&self) -> Tethering;
    /// Whether the backend's pids are this host's (false in a container).
    fn host_pids(&self) -> bool {
        true
    }
}

fn spec(demo: &dyn DemoBackend, name: &str, flags: &[&str]) -> LaunchSpec {
    let port = tether_core::port::free_port("127.0.0.1").expect("a free port on 127.0.0.1");
    LaunchSpec::new(format!("conformance-{name}"), port)
        .with_args(demo.args(flags))
        .with_tethering(demo.tethering())
        .with_grace(Duration::from_secs(5))
}

async fn start(demo: &dyn DemoBackend, spec: LaunchSpec) -> Result<Instance, Error> {
    let opts =
        LaunchOptions::default().with_readiness(ReadinessOptions::default().with_deadline(Duration::from_secs(60)));
    launch(demo.runner(), spec, Arc::new(HttpProbe::claude_skills("/health")), opts).await
}

/// Wait (on new lines, no sleeping) until some relayed line satisfies `pred`, up to 30 s.
pub async fn wait_for_line(logs: &LogRelay, pred: impl Fn(&str) -> bool) -> Option<String> {
    let mut count = logs.line_count();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(l) = logs.tail(usize::MAX).into_iter().find(|l| pred(l)) {
                return Some(l);
            }
            if count.changed().await.is_err() {
                return None;
            }
        }
    });
    found.await.ok().flatten()
}

/// It becomes ready, reports the skills loaded, answers on its URL, and stops cleanly.
pub async fn becomes_ready(demo: &dyn DemoBackend) {
    let instance = start(demo, spec(demo, "ready", &["--ready-after", "300ms", "--skills", "4"]))
        .await
        .expect("the demo backend becomes ready");
    assert_eq!(instance.progress(), Some(4), "skills_loaded at ready");
    let endpoint = instance.endpoint();
    tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await.expect("it answers on its URL");
    let how = instance.stop().await.expect("stops");
    assert!(!how.was_killed(), "a cooperative backend is not killed: {how:?}");
}

/// Exiting before ready is reported at once with the exit code and the last output.
pub async fn early_exit_is_reported(demo: &dyn DemoBackend) {
    let err =
        start(demo, spec(demo, "early-exit", &["--ready-after", "100s", "--exit-after", "200ms", "--exit-code", "3"]))
            .await
            .expect_err("a backend that exits is not ready");
    match &err {
        Error::EarlyExit { status, stderr_tail } => {
            assert_eq!(*status, ExitStatus::Code(3), "{err}");
            assert!(
                stderr_tail.iter().any(|l| l.contains("exiting with code 3")),
                "the tail carries its last words: {stderr_tail:?}"
            );
        }
        other => panic!("expected an early exit, got {other:?}"),
    }
}

/// A backend ignoring SIGTERM is killed after the grace period, and reported so.
pub async fn sigterm_ignored_is_killed_after_grace(demo: &dyn DemoBackend) {
    let s = spec(demo, "ignore-term", &["--ignore-sigterm"]).with_grace(Duration::from_millis(300));
    let instance = start(demo, s).await.expect("ready");
    wait_for_line(&instance.logs(), |l| l.contains("ignoring SIGTERM")).await.expect("it says it ignores SIGTERM");
    let how = instance.stop().await.expect("stops");
    assert_eq!(how, StopOutcome::Killed);
}

/// Grandchildren — even one that left the process group with setsid — are stopped.
pub async fn grandchildren_are_stopped(demo: &dyn DemoBackend) {
    for setsid in [false, true] {
        let mut flags = vec!["--spawn-grandchild"];
        if setsid {
            flags.push("--grandchild-setsid");
        }
        let instance = start(demo, spec(demo, "grandchild", &flags)).await.expect("ready");
        let line =
            wait_for_line(&instance.logs(), |l| l.contains("grandchild pid")).await.expect("grandchild pid line");
        let grandchild = if demo.host_pids() {
            let pid: u32 = line.rsplit(' ').next().and_then(|p| p.trim().parse().ok()).expect("a pid");
            Some(ProcessIdentity::of(pid).expect("the grandchild runs"))
        } else {
            None
        };
        instance.stop().await.expect("stops");
        if let Some(g) = grandchild {
            assert!(!g.is_alive(), "grandchild {} (setsid: {setsid}) survived the stop", g.pid);
        }
    }
}

/// Long lines are split, invalid UTF-8 replaced, and the relay goes on.
pub async fn long_lines_and_invalid_utf8_are_relayed(demo: &dyn DemoBackend) {
    let instance = start(demo, spec(demo, "lines", &["--long-line", "100000", "--invalid-utf8"])).await.expect("ready");
    let logs = instance.logs();
    wait_for_line(&logs, |l| l.contains('\u{fffd}') && l.contains("utf8"))
        .await
        .expect("the invalid UTF-8 line, replaced");
    let piece = wait_for_line(&logs, |l| l.starts_with("yyyy")).await.expect("pieces of the long line");
    assert!(piece.len() < 100_000, "a 100 000-byte line is split into pieces");
    instance.stop().await.expect("stops");
}

/// Arguments reach the backend verbatim: no shell ever sees them.
pub async fn argv_is_passed_verbatim(demo: &dyn DemoBackend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let hostile = "a b; touch X $(touch Y)";
    let s = spec(demo, "argv", &["--echo-args", "--", hostile]).with_cwd(dir.path());
    let instance = start(demo, s).await.expect("ready");
    let expected = format!("demo-backend argv: {}", serde_json::json!([hostile]));
    wait_for_line(&instance.logs(), |l| l == expected).await.unwrap_or_else(|| panic!("no line `{expected}`"));
    instance.stop().await.expect("stops");
    assert!(!dir.path().join("X").exists() && !dir.path().join("Y").exists(), "a shell ran");
}

fn supervisor(demo: &dyn DemoBackend, spec: LaunchSpec, restart: RestartOptions) -> Supervisor {
    let readiness = ReadinessOptions::default().with_deadline(Duration::from_secs(60));
    let options = LaunchOptions::default().with_readiness(readiness);
    let probe = Arc::new(HttpProbe::claude_skills("/health"));
    let starter = LaunchStarter::new(demo.runner(), spec, probe, options);
    Supervisor::spawn(Arc::new(starter), SupervisorOptions::default().with_restart(restart))
}

/// The next event that satisfies `pred` (up to 60 s); every event before it is
/// checked against `never` so that a final state cannot slip by.
async fn event(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<SupervisorState>,
    what: &str,
    pred: impl Fn(&SupervisorState) -> bool,
) -> SupervisorState {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(e) = events.recv().await {
            if pred(&e) {
                return Some(e);
            }
            assert!(!e.is_final(), "the supervisor ended before {what}: {e:?}");
        }
        None
    });
    found.await.ok().flatten().unwrap_or_else(|| panic!("no {what} within 60 s"))
}

/// Its port is free again (nothing of the backend listens, or publishes, there).
fn port_is_free(port: u16) -> bool {
    tether_core::port::can_bind("127.0.0.1", port)
}

/// Under the supervisor: ready, then a stop leaves nothing on its port.
pub async fn supervised_ready_then_stopped(demo: &dyn DemoBackend) {
    let s = spec(demo, "supervised", &["--ready-after", "200ms", "--skills", "3"]);
    let port = s.port;
    let mut sup = supervisor(demo, s, RestartOptions::default());
    let mut events = sup.events().expect("the event stream");
    let ready = event(&mut events, "ready", |e| matches!(e, SupervisorState::Ready { .. })).await;
    let SupervisorState::Ready { info, restarts, .. } = ready else { unreachable!() };
    assert_eq!((info.port, info.progress, restarts), (port, Some(3), 0), "{info:?}");
    sup.stop();
    let end = event(&mut events, "the end", SupervisorState::is_final).await;
    assert!(matches!(end, SupervisorState::Stopped { outcome: Some(_), error: None, .. }), "{end:?}");
    assert!(port_is_free(port), "port {port} still taken after the stop");
}

/// A crash after ready is restarted per the policy (counted), and a stop while the
/// restart is still loading ends it at once — not at ready or at the deadline
/// (issue 12, item 1: the restart's start used to get no stop token).
pub async fn supervised_crash_is_restarted_and_a_stop_ends_the_restart(demo: &dyn DemoBackend) {
    let flags = ["--ready-after", "1s", "--exit-after", "1500ms", "--exit-code", "1"];
    let s = spec(demo, "restarted", &flags);
    let port = s.port;
    let restart = RestartOptions::default().with_policy(RestartPolicy::Always);
    let mut sup = supervisor(demo, s, restart);
    let mut events = sup.events().expect("the event stream");
    event(&mut events, "ready", |e| matches!(e, SupervisorState::Ready { restarts: 0, .. })).await;
    let crash = event(&mut events, "the crash", |e| matches!(e, SupervisorState::Restarting { .. })).await;
    let SupervisorState::Restarting { ended, restarts, error, .. } = crash else { unreachable!() };
    assert_eq!((ended, restarts), (Ended::Exited(ExitStatus::Code(1)), 1), "{error:?}");
    event(&mut events, "the restart", |e| matches!(e, SupervisorState::Starting { restarts: 1, .. })).await;
    sup.stop();
    let end = event(&mut events, "the end", SupervisorState::is_final).await;
    assert!(
        matches!(end, SupervisorState::Stopped { during_start: true, error: None, .. }),
        "a stop while the restart loads ends that start: {end:?}"
    );
    assert!(port_is_free(port), "port {port} still taken after the stop");
}

/// Every check, one after the other.
pub async fn run_all(demo: &dyn DemoBackend) {
    becomes_ready(demo).await;
    early_exit_is_reported(demo).await;
    sigterm_ignored_is_killed_after_grace(demo).await;
    grandchildren_are_stopped(demo).await;
    long_lines_and_invalid_utf8_are_relayed(demo).await;
    argv_is_passed_verbatim(demo).await;
    supervised_ready_then_stopped(demo).await;
    supervised_crash_is_restarted_and_a_stop_ends_the_restart(demo).await;
}
