//! The native runner against the testkit's conformance checks, with the guard and
//! without it (the parent-death-signal fallback of a library that did not opt in).

use std::path::PathBuf;
use std::sync::Arc;

use tether::NativeRunner;
use tether::core::runner::Tethering;
use tether_testkit::conformance::DemoBackend;

struct NativeDemo {
    guard: bool,
}

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tether"))
}

impl DemoBackend for NativeDemo {
    fn runner(&self) -> Arc<dyn tether::Runner> {
        Arc::new(NativeRunner::new(exe().to_string_lossy()).with_prefix_args(["demo-backend"]))
    }

    fn args(&self, flags: &[&str]) -> Vec<String> {
        ["--port", "{port}", "--host", "{host}"].iter().chain(flags).map(|s| s.to_string()).collect()
    }

    fn tethering(&self) -> Tethering {
        if self.guard { Tethering::Guard { exe: exe() } } else { Tethering::ParentDeathSignal }
    }
}

tether_testkit::conformance_tests!(with_guard, || Some(NativeDemo { guard: true }));
tether_testkit::conformance_tests!(without_guard, || Some(NativeDemo { guard: false }));
