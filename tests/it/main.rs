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
//! on Windows only `windows` is built, the end-to-end suite run under Wine by `scripts/test-windows`.

#[cfg(unix)]
mod docker_support;
#[cfg(unix)]
mod mcp_support;
#[cfg(all(unix, feature = "uvx"))]
#[path = "../fixtures/uvx/support.rs"]
mod uvx_support;

#[cfg(unix)]
mod bad_input;
#[cfg(unix)]
mod cli;
#[cfg(unix)]
mod docker_cli;
#[cfg(unix)]
mod docker_conformance;
#[cfg(unix)]
mod docker_forged_records;
#[cfg(unix)]
mod docker_remote;
#[cfg(unix)]
mod docker_shared;
#[cfg(unix)]
mod fd_hygiene;
#[cfg(unix)]
mod forged_reads;
#[cfg(unix)]
mod forged_records;
#[cfg(unix)]
mod fuzz_parsers;
#[cfg(unix)]
mod hostile;
#[cfg(unix)]
mod hostile_output;
#[cfg(unix)]
mod killed_guards;
#[cfg(unix)]
mod litter;
#[cfg(unix)]
mod mcp_proxy;
#[cfg(all(unix, feature = "uvx", feature = "mcp"))]
mod mcp_proxy_host;
#[cfg(all(unix, feature = "uvx", feature = "mcp"))]
mod mcp_proxy_python;
#[cfg(unix)]
mod native_conformance;
#[cfg(unix)]
mod not_ours;
#[cfg(unix)]
mod one_config;
#[cfg(unix)]
mod orphans;
#[cfg(unix)]
mod port_guard;
#[cfg(unix)]
mod reliability;
#[cfg(unix)]
mod remote;
#[cfg(unix)]
mod shared;
#[cfg(unix)]
mod soak;
#[cfg(unix)]
mod state_hygiene;
#[cfg(unix)]
mod supervision;
#[cfg(unix)]
mod tree_kill;
#[cfg(all(unix, feature = "uvx"))]
mod uvx_cli;
#[cfg(all(unix, feature = "uvx"))]
mod uvx_conformance;
#[cfg(all(unix, feature = "uvx"))]
mod uvx_soak;
#[cfg(windows)]
mod windows;
