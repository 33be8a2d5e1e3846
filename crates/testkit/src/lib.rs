//! # tether-testkit
//!
//! What every runner must do, as `pub async fn` checks a runner's tests call with a
//! [`DemoBackend`] that knows how to run tether's demo backend through that runner;
//! and a [`fake`] runner for core's own tests; and [`mcp_backend`], a real streamable-HTTP MCP
//! server (the `tether-mcp-test-backend` binary) to test tether against. Dev-dependency only.
#![warn(missing_docs)]

pub mod conformance;
pub mod fake;
pub mod forged;
pub mod mcp_backend;
pub mod rerun;

pub use conformance::{DemoBackend, run_all};

/// Whether tests run in CI (`CI=true`): there a missing tool is a failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Call when a tool a test needs is missing: in CI this panics (a loud failure);
/// locally it prints why the test is skipped and returns.
pub fn missing_tool(what: &str) {
    if in_ci() {
        panic!("{what} is missing, and CI must run this test: install it (see README)");
    }
    eprintln!("SKIPPED: {what} is missing (this would fail in CI)");
}

/// A finished command's exit and output, for assertion messages.
pub fn dump(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `cond` until it holds or `timeout` passes; whether it held. For tests that
/// wait for something outside their control to end (a process, a container): the
/// timeout is a failure bound, not a synchronisation.
pub fn wait_until(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// One `#[tokio::test]` per conformance check, in a module of its own:
/// `conformance_tests!(with_guard, || Some(MyDemo::new()));` — the closure gives the
/// [`DemoBackend`] to check, or `None` to skip (when a tool is missing outside CI).
/// The list of checks lives here, so every runner runs all of them.
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests!(@each $make;
                becomes_ready,
                early_exit_is_reported,
                sigterm_ignored_is_killed_after_grace,
                grandchildren_are_stopped,
                long_lines_and_invalid_utf8_are_relayed,
                argv_is_passed_verbatim,
                supervised_ready_then_stopped,
                supervised_crash_is_restarted_and_a_stop_ends_the_restart);
        }
    };
    (@each $make:expr; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                if let Some(demo) = ($make)() {
                    $crate::conformance::$check(&demo).await
                }
            }
        )*
    };
}
