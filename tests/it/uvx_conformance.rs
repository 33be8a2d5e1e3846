//! The uvx runner against the testkit's conformance checks, through real uv: the fixture
//! wheel (a Python backend with the demo backend's flags) run with
//! `uvx --offline --from FIXTURE.whl tether-uvx-fixture`, under the guard and without it.
//! Python runs under uv (uv does not exec it), so every stop check also proves that the
//! grandchild Python — and its own children — are stopped.
use crate::uvx_support as support;

use std::path::PathBuf;
use std::sync::Arc;

use tether::core::runner::Tethering;
use tether_testkit::conformance::DemoBackend;

struct UvxDemo {
    uv: support::Uv,
    fixture: support::Fixture,
    guard: bool,
}

impl UvxDemo {
    /// `None` when uv is missing (outside CI; in CI that panics).
    fn new(guard: bool) -> Option<Self> {
        let uv = support::Uv::find()?;
        let fixture = support::fixture(&uv);
        Some(UvxDemo { uv, fixture, guard })
    }
}

impl DemoBackend for UvxDemo {
    fn runner(&self) -> Arc<dyn tether::Runner> {
        Arc::new(self.uv.runner(&self.fixture.wheel))
    }

    fn args(&self, flags: &[&str]) -> Vec<String> {
        ["--port", "{port}", "--host", "{host}"].iter().chain(flags).map(|s| s.to_string()).collect()
    }

    fn tethering(&self) -> Tethering {
        if self.guard {
            Tethering::Guard { exe: PathBuf::from(env!("CARGO_BIN_EXE_tether")) }
        } else {
            Tethering::ParentDeathSignal
        }
    }
}

tether_testkit::conformance_tests!(with_guard, || UvxDemo::new(true));
tether_testkit::conformance_tests!(without_guard, || UvxDemo::new(false));
