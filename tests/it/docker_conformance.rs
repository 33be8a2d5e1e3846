//! The docker runner against the testkit's conformance checks, on the real engine,
//! with the demo backend inside a container built without a registry.

use crate::docker_support;

use std::sync::Arc;

use tether::DockerRunner;
use tether::PullPolicy;
use tether::core::runner::Tethering;
use tether_testkit::conformance::DemoBackend;

struct DockerDemo;

impl DemoBackend for DockerDemo {
    fn runner(&self) -> Arc<dyn tether::Runner> {
        Arc::new(DockerRunner::new(docker_support::image()).with_pull(PullPolicy::Never))
    }

    fn args(&self, flags: &[&str]) -> Vec<String> {
        // The image's entrypoint is `/tether demo-backend`; inside, listen everywhere.
        ["--port", "{port}", "--host", "0.0.0.0"].iter().chain(flags).map(|s| s.to_string()).collect()
    }

    fn tethering(&self) -> Tethering {
        Tethering::ParentDeathSignal
    }

    fn host_pids(&self) -> bool {
        false
    }
}

tether_testkit::conformance_tests!(engine, || docker_support::engine_available().then_some(DockerDemo));

/// Dropping a ready instance without `stop` still removes its container (the backstop).
#[tokio::test]
async fn a_dropped_instance_leaves_no_container() {
    if !docker_support::engine_available() {
        return;
    }
    let name = docker_support::unique_name("dk-drop");
    let _cleanup = docker_support::Cleanup(name.clone());
    let port = tether::core::port::free_port("127.0.0.1").expect("a free port");
    let spec = tether::LaunchSpec::new(name.clone(), port).with_args(DockerDemo.args(&[]));
    let probe = Arc::new(tether::core::probe::HttpProbe::claude_skills("/health"));
    let instance = tether::core::launch(DockerDemo.runner(), spec, probe, Default::default()).await.expect("ready");
    assert_eq!(docker_support::containers_of(&name).len(), 1);
    drop(instance);
    assert_eq!(docker_support::containers_of(&name).len(), 0, "the drop removed it");
}
