//! Hostile backends: each behaves as designed, and none makes tether hang, crash or
//! leave a process behind.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tether::NativeRunner;
use tether::core::probe::HttpProbe;
use tether::core::procs;
use tether::core::readiness::ReadinessOptions;
use tether::core::runner::Tethering;
use tether::core::{Error, Identity, Instance, LaunchOptions, LaunchSpec, launch};

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tether"))
}

async fn start(name: &str, flags: &[&str], deadline: Duration) -> (Result<Instance, Error>, u16) {
    let runner = Arc::new(NativeRunner::new(exe().to_string_lossy()).with_prefix_args(["demo-backend"]));
    let port = tether::core::port::free_port("127.0.0.1").expect("free port");
    let args: Vec<&str> = ["--port", "{port}", "--host", "{host}"].iter().chain(flags).copied().collect();
    let spec = LaunchSpec::new(name, port)
        .with_args(args)
        .with_tethering(Tethering::Guard { exe: exe() })
        .with_grace(Duration::from_secs(2));
    let readiness =
        ReadinessOptions::default().with_deadline(deadline).with_attempt_timeout(Duration::from_millis(500));
    let opts = LaunchOptions::default().with_readiness(readiness);
    (launch(runner, spec, Arc::new(HttpProbe::claude_skills("/health")), opts).await, port)
}

/// The processes of an instance (its guard and every descendant), identified now.
fn processes_of(instance: &Instance) -> Vec<procs::ProcessIdentity> {
    let Identity::Process { leader, .. } = instance.identity() else { panic!("a process backend") };
    let mut all = vec![leader];
    all.extend(procs::descendants(leader.pid).into_iter().filter_map(procs::ProcessIdentity::of));
    all
}

/// Nothing of what we started is left (the stop already waited for the group).
fn assert_gone(what: &str, processes: &[procs::ProcessIdentity]) {
    let left: Vec<u32> = processes.iter().filter(|p| p.is_alive()).map(|p| p.pid).collect();
    assert!(left.is_empty(), "{what}: processes left behind: {left:?}");
    println!("reliability: hostile backend: {what} | 1 | 0 processes left, no hang");
}

#[tokio::test]
async fn a_ten_megabyte_health_body_is_not_parsed_and_the_deadline_stops_it() {
    let (result, port) = start("huge", &["--health-mode", "huge"], Duration::from_secs(2)).await;
    let err = result.expect_err("never ready");
    let Error::Timeout { last_probe, .. } = &err else { panic!("expected a timeout, got {err:?}") };
    assert!(last_probe.contains("body over"), "{last_probe}");
    let listeners = tether::core::port::listening_pids(port).expect("lookup");
    assert!(listeners.is_empty(), "the backend still listens: {listeners:?}");
    println!("reliability: hostile backend: 10 MB /health body | 1 | 0 processes left, deadline honoured");
}

#[tokio::test]
async fn a_never_ending_chunked_health_body_is_cut_by_the_attempt_timeout() {
    let (result, port) = start("endless", &["--health-mode", "endless"], Duration::from_secs(2)).await;
    let err = result.expect_err("never ready");
    let Error::Timeout { last_probe, .. } = &err else { panic!("expected a timeout, got {err:?}") };
    assert!(last_probe.contains("took longer than"), "{last_probe}");
    let listeners = tether::core::port::listening_pids(port).expect("lookup");
    assert!(listeners.is_empty(), "the backend still listens: {listeners:?}");
    println!("reliability: hostile backend: never-ending chunked /health | 1 | 0 processes left, deadline honoured");
}

#[tokio::test]
async fn a_flood_of_a_million_lines_never_blocks_the_backend() {
    let instance = start("flood", &["--log-lines", "1000000"], Duration::from_secs(120)).await.0.expect("ready");
    let processes = processes_of(&instance);
    let logs = instance.logs();
    let mut count = logs.line_count();
    let all = tokio::time::timeout(Duration::from_secs(120), count.wait_for(|n| *n >= 1_000_000)).await.is_ok();
    assert!(all, "the relay saw {} lines", *count.borrow());
    // The backend finished writing (it reports its write time in /stats once done). Not
    // its `wrote …` stderr line: under load the stdout lines can push it out of the ring.
    let stats = format!("{}/stats", instance.url());
    let client = reqwest::Client::builder().no_proxy().build().expect("an HTTP client");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let body = client.get(&stats).send().await.expect("GET /stats").text().await.expect("the /stats body");
        let v: serde_json::Value = serde_json::from_str(&body).expect("/stats is JSON");
        if v["log_write_nanos"].as_u64().is_some_and(|n| n > 0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the backend never finished writing: {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    instance.stop().await.expect("stop");
    assert_gone("1 M lines as fast as it can", &processes);
}

#[tokio::test]
async fn a_one_mebibyte_line_without_newline_is_split_and_kept() {
    let instance =
        start("mib", &["--long-line", "1048576", "--no-newline"], Duration::from_secs(60)).await.0.expect("ready");
    let processes = processes_of(&instance);
    let logs = instance.logs();
    let mut count = logs.line_count();
    // 1 MiB in 16 KiB pieces, the last one without a newline, plus the listening line.
    let pieces = tokio::time::timeout(Duration::from_secs(60), count.wait_for(|n| *n >= 64)).await.is_ok();
    assert!(pieces, "pieces relayed: {}", *count.borrow());
    assert!(logs.tail(3).iter().all(|l| l.len() <= 16 * 1024));
    instance.stop().await.expect("stop");
    assert_gone("1 MiB line without newline", &processes);
}

#[tokio::test]
async fn closing_stdout_early_changes_nothing() {
    let instance = start("closed", &["--close-stdout", "--ready-after", "200ms"], Duration::from_secs(60))
        .await
        .0
        .expect("ready although stdout is closed");
    let processes = processes_of(&instance);
    let how = instance.stop().await.expect("stop");
    assert!(!how.was_killed());
    assert_gone("stdout closed early", &processes);
}

#[tokio::test]
async fn a_setsid_grandchild_of_a_sigterm_ignoring_backend_is_gone_after_stop() {
    let instance = start(
        "worst",
        &["--ignore-sigterm", "--spawn-grandchild", "--grandchild-setsid", "--invalid-utf8"],
        Duration::from_secs(60),
    )
    .await
    .0
    .expect("ready");
    let line = tether_testkit::conformance::wait_for_line(&instance.logs(), |l| l.contains("grandchild pid"))
        .await
        .expect("grandchild line");
    let pid: u32 = line.rsplit(' ').next().and_then(|p| p.parse().ok()).expect("pid");
    let grandchild = procs::ProcessIdentity::of(pid).expect("grandchild runs");
    let processes = processes_of(&instance);
    let how = instance.stop().await.expect("stop");
    assert!(how.was_killed(), "it ignores SIGTERM: {how:?}");
    assert!(!grandchild.is_alive());
    assert_gone("ignores SIGTERM, setsid grandchild, invalid UTF-8", &processes);
}

/// Issue 13, item 5: a backend that logs every request (as uvicorn does) must not make
/// each probe's own access line trigger the next probe.
#[tokio::test]
async fn an_access_log_line_of_our_own_probe_does_not_trigger_the_next() {
    let instance = start("access-log", &["--access-log", "--ready-after", "1500ms"], Duration::from_secs(60))
        .await
        .0
        .expect("ready");
    let stats = format!("{}/stats", instance.url());
    let client = reqwest::Client::builder().no_proxy().build().expect("an HTTP client");
    let body = client.get(&stats).send().await.expect("GET /stats").text().await.expect("the /stats body");
    let v: serde_json::Value = serde_json::from_str(&body).expect("/stats is JSON");
    let probes = v["health_requests"].as_u64().expect("a count");
    // The backoff alone (capped at 50 ms) makes ~30 probes in 1.5 s; each access line
    // triggering the next made hundreds.
    assert!(probes < 150, "{probes} probes while loading for 1.5 s: the probe feeds on its own access lines");
    instance.stop().await.expect("stop");
    println!(
        "reliability: hostile backend: an access-log line per request | 1 | {probes} probes in 1.5 s (no self-trigger)"
    );
}

/// Issue 13, item 5: a backend that listens on another port than ours is named in the
/// timeout, with the fix.
#[tokio::test]
async fn a_backend_on_another_port_is_named_in_the_timeout() {
    let runner = Arc::new(NativeRunner::new(exe().to_string_lossy()).with_prefix_args(["demo-backend"]));
    let port = tether::core::port::free_port("127.0.0.1").expect("free port");
    // `--port 0`: it ignores the port it is given and picks its own.
    let spec = LaunchSpec::new("elsewhere", port)
        .with_args(["--port", "0"])
        .with_tethering(Tethering::Guard { exe: exe() })
        .with_grace(Duration::from_secs(2));
    let readiness = ReadinessOptions::default().with_deadline(Duration::from_secs(1));
    let opts = LaunchOptions::default().with_readiness(readiness);
    let err = launch(runner, spec, Arc::new(HttpProbe::claude_skills("/health")), opts).await.expect_err("elsewhere");
    let Error::Timeout { last_probe, .. } = &err else { panic!("expected a timeout, got {err:?}") };
    assert!(last_probe.contains("its output mentions port") && last_probe.contains("{port}"), "{last_probe}");
}
