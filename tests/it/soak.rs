//! Soak: many start → ready → stop cycles of the demo backend under the native
//! runner; afterwards no process, file descriptor or thread has leaked. It counts its own
//! process's, so it runs alone in one (`tether_testkit::alone_in_process!`).
// Linux only: it counts descriptors and threads in /proc/self.
#![cfg(target_os = "linux")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tether::NativeRunner;
use tether::core::probe::HttpProbe;
use tether::core::procs;
use tether::core::readiness::ReadinessOptions;
use tether::core::runner::Tethering;
use tether::core::{LaunchOptions, LaunchSpec, launch};

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tether"))
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(usize::MAX)
}

fn cycles() -> usize {
    std::env::var("TETHER_SOAK_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

async fn one_cycle(i: usize) {
    let runner = Arc::new(NativeRunner::new(exe().to_string_lossy()).with_prefix_args(["demo-backend"]));
    let port = tether::core::port::free_port("127.0.0.1").expect("free port");
    let spec = LaunchSpec::new(format!("soak-{i}"), port)
        .with_args(["--port", "{port}", "--host", "{host}"])
        .with_tethering(Tethering::Guard { exe: exe() })
        .with_grace(Duration::from_secs(5));
    let opts =
        LaunchOptions::default().with_readiness(ReadinessOptions::default().with_deadline(Duration::from_secs(60)));
    let instance = launch(runner, spec, Arc::new(HttpProbe::claude_skills("/health")), opts)
        .await
        .unwrap_or_else(|e| panic!("cycle {i}: {}", e.chain()));
    let how = instance.stop().await.expect("stop");
    assert!(!how.was_killed(), "cycle {i}: a cooperative backend was killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_ready_stop_cycles_leak_nothing() {
    tether_testkit::alone_in_process!(start_ready_stop_cycles_leak_nothing);
    // Warm up: the runtime's blocking pool and the HTTP client settle.
    one_cycle(0).await;
    let fds = count("/proc/self/fd");
    let threads_before = count("/proc/self/task");
    let me = std::process::id();
    let n = cycles();
    for i in 1..=n {
        one_cycle(i).await;
    }
    let leaked: Vec<u32> = procs::descendants(me);
    let fds_after = count("/proc/self/fd");
    let threads = count("/proc/self/task");
    println!(
        "reliability: native start → ready → stop (soak) | {n} cycles | {} processes, {} fds, {} threads leaked",
        leaked.len(),
        fds_after.saturating_sub(fds),
        threads.saturating_sub(threads_before)
    );
    assert!(leaked.is_empty(), "leaked processes after {n} cycles: {leaked:?}");
    assert!(fds_after <= fds, "file descriptors leaked: {fds} → {fds_after}");
    assert!(threads <= threads_before, "threads leaked: {threads_before} → {threads}");
}
