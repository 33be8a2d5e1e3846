//! The integration tests of `tether`, in one test binary (`it`): one module per suite
//! (`cli`, `soak`, `docker_cli`, …), so the tree is linked into one test executable
//! instead of one per suite. A test's name carries its module: `soak::start_ready_stop_cycles_leak_nothing`;
//! nextest filters pick suites by it (`binary_id(tether::it) & test(/^soak::/)`).
//!
//! Under nextest (`scripts/test`) every test is a process of its own, as before. Under
//! `cargo test --test it` the tests of all suites share one process; the tests that count
//! their process's own descriptors, threads or children, or hold an inheritable descriptor
//! (`soak`, `uvx_soak`, `fd_hygiene`), re-run themselves alone in one
//! (`tether_testkit::alone_in_process!`), and the pid-namespace tests re-run their inner
//! test by its full name (`tether_testkit::in_pid_namespace!`).
//!
//! The support modules (`docker_support`, `mcp_support`, and the uvx fixture's
//! `tests/fixtures/uvx/support.rs`) are declared here once and used by the suites that need them.
//!
//! These suites drive tether the Unix way (signals, process groups, `/proc`, file modes):
//! on Windows only `windows` is built: the end-to-end suite, run by hand under Wine (`scripts/lib/windows.sh`; not yet in `scripts/test`).

/// Declares the Unix suites: each `mod` gets `#[cfg(unix)]` (their names stay as they are).
macro_rules! unix_suites {
    ($($(#[$meta:meta])* mod $name:ident;)*) => {
        $( #[cfg(unix)] $(#[$meta])* mod $name; )*
    };
}

unix_suites! {
    mod docker_support;
    mod mcp_support;
    #[cfg(feature = "uvx")]
    #[path = "../fixtures/uvx/support.rs"]
    mod uvx_support;

    mod bad_input;
    mod cli;
    mod docker_cli;
    mod docker_conformance;
    mod docker_forged_records;
    mod docker_remote;
    mod docker_shared;
    mod fd_hygiene;
    mod forged_reads;
    mod forged_records;
    mod fuzz_parsers;
    mod hostile;
    mod hostile_output;
    mod killed_guards;
    mod litter;
    mod mcp_proxy;
    #[cfg(all(feature = "uvx", feature = "mcp"))]
    mod mcp_proxy_host;
    #[cfg(all(feature = "uvx", feature = "mcp"))]
    mod mcp_proxy_python;
    mod native_conformance;
    mod not_ours;
    mod one_config;
    mod orphans;
    mod port_guard;
    mod reliability;
    mod remote;
    mod shared;
    mod soak;
    mod state_hygiene;
    mod supervision;
    mod tree_kill;
    #[cfg(feature = "uvx")]
    mod uvx_cli;
    #[cfg(feature = "uvx")]
    mod uvx_conformance;
    #[cfg(feature = "uvx")]
    mod uvx_soak;
}
#[cfg(windows)]
mod windows;
