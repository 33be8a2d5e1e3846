//! Soak through real uv: 100 start → ready → stop cycles of the fixture Python backend
//! under `uvx`; afterwards no uv or Python process, file descriptor or thread is left. It
//! counts its own process's, so it runs alone in one (`tether_testkit::alone_in_process!`).
// Linux only: it counts descriptors and threads in /proc/self.
#![cfg(target_os = "linux")]

use crate::uvx_support as support;

use std::sync::Arc;
use std::time::Duration;

use tether::core::probe::HttpProbe;
use tether::core::readiness::ReadinessOptions;
use tether::core::runner::Tethering;
use tether::core::{LaunchOptions, LaunchSpec, launch};

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(usize::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uvx_start_ready_stop_cycles_leak_nothing() {
    tether_testkit::alone_in_process!(uvx_start_ready_stop_cycles_leak_nothing);
    let Some(uv) = support::Uv::find() else { return };
    let fixture = support::fixture(&uv);
    let marker = support::marker("soak");
    let cycles: usize = std::env::var("TETHER_UVX_SOAK_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_tether"));
    let mut fds = 0;
    let mut threads = 0;
    for i in 0..=cycles {
        if i == 1 {
            // After one warm-up cycle: the runtime and the HTTP client have settled.
            fds = count("/proc/self/fd");
            threads = count("/proc/self/task");
        }
        let port = tether::core::port::free_port("127.0.0.1").expect("port");
        let spec = LaunchSpec::new(format!("uvx-soak-{i}"), port)
            .with_args(["--port", "{port}", "--host", "{host}", "--echo-args", "--", marker.as_str()])
            .with_tethering(Tethering::Guard { exe: exe.clone() })
            .with_grace(Duration::from_secs(5));
        let opts = LaunchOptions::default()
            .with_readiness(ReadinessOptions::default().with_deadline(Duration::from_secs(120)));
        let instance =
            launch(Arc::new(uv.runner(&fixture.wheel)), spec, Arc::new(HttpProbe::claude_skills("/health")), opts)
                .await
                .unwrap_or_else(|e| panic!("cycle {i}: {}", e.chain()));
        let how = instance.stop().await.expect("stop");
        assert!(!how.was_killed(), "cycle {i}: the Python backend was killed, not stopped");
    }
    let left = support::processes_with(&marker);
    let leaked = tether::core::procs::descendants(std::process::id());
    let (fds_after, threads_after) = (count("/proc/self/fd"), count("/proc/self/task"));
    println!(
        "reliability: uvx start → ready → stop (soak, Python under uv) | {cycles} cycles | {} processes, {} fds, {} threads leaked",
        left.len() + leaked.len(),
        fds_after.saturating_sub(fds),
        threads_after.saturating_sub(threads)
    );
    assert!(left.is_empty(), "Python processes left: {left:?}");
    assert!(leaked.is_empty(), "processes left: {leaked:?}");
    assert!(fds_after <= fds, "fds {fds} → {fds_after}");
    assert!(threads_after <= threads, "threads {threads} → {threads_after}");
}
