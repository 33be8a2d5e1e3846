//! # tether-testkit
//!
//! What every runner must do, as `pub async fn` checks a runner's tests call with a
//! [`DemoBackend`] that knows how to run tether's demo backend through that runner;
//! and a [`fake`] runner for core's own tests. Dev-dependency only.
#![warn(missing_docs)]

pub mod conformance;
pub mod fake;

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
