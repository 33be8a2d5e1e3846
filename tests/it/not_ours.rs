//! "Ready" counts only when OUR backend answered (issue 11, item 3): a neighbour on
//! the port, or the target of a redirect, is never taken for the backend.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tether::NativeRunner;
use tether::core::probe::HttpProbe;
use tether::core::readiness::ReadinessOptions;
use tether::core::runner::Tethering;
use tether::core::{Error, LaunchOptions, LaunchSpec, launch};

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tether"))
}

/// A process the test started, killed and reaped on drop.
struct Neighbour(Child);

impl Drop for Neighbour {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Neighbour {
    /// The demo backend on `port`, ready at once, NOT started by tether (no fingerprint).
    fn demo(port: u16) -> Neighbour {
        let mut child = Command::new(exe())
            .args(["demo-backend", "--port", &port.to_string(), "--print-ready"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the neighbour");
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        // Its own ready line: it listens and answers ready from here on.
        let ready = lines.by_ref().map_while(Result::ok).any(|l| l.contains("demo-backend ready"));
        assert!(ready, "the neighbour never became ready");
        Neighbour(child)
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

fn spec(name: &str, port: u16) -> LaunchSpec {
    LaunchSpec::new(name, port)
        .with_args(["--port", "{port}", "--host", "{host}"])
        .with_tethering(Tethering::Guard { exe: exe() })
        .with_grace(Duration::from_secs(2))
}

fn options(deadline: Duration) -> LaunchOptions {
    let readiness =
        ReadinessOptions::default().with_deadline(deadline).with_attempt_timeout(Duration::from_millis(500));
    LaunchOptions::default().with_readiness(readiness)
}

#[tokio::test]
async fn a_neighbour_answering_on_the_port_is_not_our_backend() {
    // The neighbour holds the port: our backend cannot bind it and exits. Its exit
    // is the answer, never the neighbour's "ready" (launch has no port guard).
    let port = tether::core::port::free_port("127.0.0.1").expect("free port");
    let mut neighbour = Neighbour::demo(port);
    let runner = Arc::new(NativeRunner::new(exe().to_string_lossy()).with_prefix_args(["demo-backend"]));
    let probe = Arc::new(HttpProbe::claude_skills("/health"));
    let result = launch(runner, spec("lost-bind", port), probe, options(Duration::from_secs(60))).await;
    let err = result.expect_err("the neighbour's answer must not make ours ready");
    assert!(matches!(err, Error::EarlyExit { .. }), "expected the backend's own exit, got {err:?}");
    assert!(neighbour.alive(), "the neighbour is not ours and must be untouched");
    println!("reliability: ready only from our backend: neighbour on the port | 1 | 0 false ready");
}

#[tokio::test]
async fn a_backend_that_never_binds_is_not_ready_while_a_neighbour_answers() {
    // A backend that stays up without listening: the deadline ends it, and the last
    // probe says why the neighbour's answer did not count.
    let port = tether::core::port::free_port("127.0.0.1").expect("free port");
    let mut neighbour = Neighbour::demo(port);
    let runner = Arc::new(NativeRunner::new("sleep"));
    let probe = Arc::new(HttpProbe::claude_skills("/health"));
    let spec = spec("silent", port).with_args(["300"]);
    let err = launch(runner, spec, probe, options(Duration::from_secs(1))).await.expect_err("never ours");
    let Error::Timeout { last_probe, .. } = &err else { panic!("expected a timeout, got {err:?}") };
    assert!(last_probe.contains("not this backend's"), "{last_probe}");
    assert!(neighbour.alive());
}

/// Python's own HTTP server answering every request with `302 Found` to `argv[1]` +
/// the path, on `argv[3]:argv[2]` (port 0: a free one); it prints its port.
const REDIRECTOR: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", sys.argv[1] + self.path)
        self.end_headers()
s = http.server.HTTPServer((sys.argv[3], int(sys.argv[2])), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// A redirector to `location` started by the test itself (not through tether).
fn redirector(location: &str) -> (Child, u16) {
    let mut child = Command::new("python3")
        .args(["-c", REDIRECTOR, location, "0", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("its port");
    let port = line.trim().parse().expect("a port number");
    (child, port)
}

#[tokio::test]
async fn a_redirect_to_a_ready_neighbour_is_not_ready() {
    let ready_port = tether::core::port::free_port("127.0.0.1").expect("free port");
    let _neighbour = Neighbour::demo(ready_port);
    // Launched through tether so that the listener is ours; it redirects /health
    // to the neighbour, which answers ready JSON.

    let port = tether::core::port::free_port("127.0.0.1").expect("free port");
    let target = format!("http://127.0.0.1:{ready_port}");
    let runner = Arc::new(NativeRunner::new("python3"));
    let spec = spec("redirect", port).with_args(["-c", REDIRECTOR, &target, "{port}", "{host}"]);
    let probe = Arc::new(HttpProbe::claude_skills("/health"));
    let err = launch(runner, spec, probe, options(Duration::from_secs(2))).await.expect_err("a redirect is not ready");
    let Error::Timeout { last_probe, .. } = &err else { panic!("expected a timeout, got {err:?}") };
    assert!(last_probe.contains("redirected to") && last_probe.contains(&target), "{last_probe}");
    // The client of `reuse` and liveness is the same one: it follows no redirect either.
    let (mut direct, direct_port) = redirector(&target);
    let client = tether::core::readiness::probe_client(Duration::from_secs(2)).expect("client");
    let answer = client.get(format!("http://127.0.0.1:{direct_port}/health")).send().await.expect("an answer");
    assert_eq!(answer.status().as_u16(), 302);
    let _ = direct.kill();
    let _ = direct.wait();
    println!("reliability: ready only from our backend: /health redirects to a ready server | 1 | 0 false ready");
}
