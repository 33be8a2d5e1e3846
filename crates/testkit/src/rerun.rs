//! Running one test of the current test binary again, in a process of its own: as pid 1 of
//! a pid namespace ([`crate::forged`]), or just alone ([`alone_in_process!`]).
//!
//! The test is named by its full path in the binary (`soak::start_ready_stop_cycles_leak_nothing`;
//! the macros build it with `module_path!()`), run with libtest's `--exact`, and the run must
//! report exactly one passed test: a filter that matches nothing fails, never passes silently.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The name libtest gives the test `path` (a `module_path!()` and a function name, joined
/// with `::`): the path without its first segment, the test crate's name.
pub fn test_name(path: &str) -> &str {
    path.split_once("::").map_or(path, |(_, rest)| rest)
}

/// Run `command` — the current test binary, or a wrapper that runs it (`unshare … --`) —
/// with the arguments that run exactly the test `name`, ignored or not, on one thread, its
/// output not captured. Its stdout is passed on line by line (to the caller's captured
/// output); it panics unless the run succeeded and reported exactly one passed test.
pub fn run_exactly(mut command: Command, name: &str, what: &str) {
    command
        .args(["--exact", name, "--include-ignored", "--nocapture", "--test-threads", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot run {what} for the test {name}: {e}"));
    let mut summary = None;
    let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = Vec::new();
    loop {
        line.clear();
        match out.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("reading the output of the test {name} ({what}): {e}"),
        }
        let text = String::from_utf8_lossy(&line);
        print!("{text}");
        if let Some(rest) = text.trim_end().strip_prefix("test result: ") {
            summary = Some(rest.to_string());
        }
    }
    let status = child.wait().unwrap_or_else(|e| panic!("waiting for the test {name} ({what}): {e}"));
    assert!(status.success(), "the test {name} failed ({what}): {status}, {summary:?}");
    let passed = summary.as_deref().and_then(passed_count);
    assert!(
        passed != Some(0),
        "the filter `--exact {name}` ran no test of {}: the name is wrong ({what})",
        std::env::current_exe().map_or_else(|_| "this binary".into(), |p| p.display().to_string())
    );
    assert_eq!(passed, Some(1), "the run of the test {name} ({what}) did not report one passed test: {summary:?}");
}

/// `N` of a libtest summary (`ok. N passed; 0 failed; …`).
fn passed_count(summary: &str) -> Option<usize> {
    let (_, rest) = summary.split_once(". ")?;
    rest.split(';').next()?.trim().strip_suffix(" passed")?.parse().ok()
}

/// The variable that tells a re-run test binary which test is alone in it.
const ALONE: &str = "TETHER_TESTKIT_ALONE";

/// Whether the calling test is to run its body here: `true` when it is alone in this process
/// (nextest runs each test in a process of its own; or this is the re-run below). Otherwise
/// it runs the test `path` (see [`test_name`]) again in a process of its own, panics if that
/// failed, and returns `false`: the caller returns at once. Use [`alone_in_process!`].
pub fn alone_in_process(path: &str) -> bool {
    let name = test_name(path);
    let nextest = std::env::var("NEXTEST_EXECUTION_MODE").is_ok_and(|m| m == "process-per-test");
    if nextest || std::env::var(ALONE).is_ok_and(|n| n == name) {
        return true;
    }
    let mut command = Command::new(std::env::current_exe().expect("this test binary"));
    command.env(ALONE, name);
    run_exactly(command, name, "alone in a process of its own");
    false
}

/// For a test that counts what its own process holds (descriptors, threads, children) or
/// must be the only one spawning while it holds an inheritable descriptor: the first line of
/// the test `$test` (its own function name), which makes it run alone in a process — at once
/// under nextest (a process per test), otherwise in a re-run of this binary with only it.
/// ```no_run
/// # // A `#[test]` in a test binary; without the attribute here, so the example compiles.
/// fn counts_descriptors() {
///     tether_testkit::alone_in_process!(counts_descriptors);
///     // …
/// }
/// # counts_descriptors();
/// ```
#[macro_export]
macro_rules! alone_in_process {
    ($test:ident) => {{
        let _: fn() = $test;
        if !$crate::rerun::alone_in_process(concat!(module_path!(), "::", stringify!($test))) {
            return;
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crate_name_is_stripped() {
        assert_eq!(test_name("it::soak::start"), "soak::start");
        assert_eq!(test_name("it::a::b::c"), "a::b::c");
        assert_eq!(test_name("top"), "top");
    }

    #[test]
    fn the_passed_count_is_read() {
        assert_eq!(passed_count("ok. 1 passed; 0 failed; 0 ignored; 0 measured; 433 filtered out"), Some(1));
        assert_eq!(passed_count("ok. 0 passed; 0 failed; 0 ignored; 0 measured; 434 filtered out"), Some(0));
        assert_eq!(
            passed_count("FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 433 filtered out; finished in 0.01s"),
            Some(0)
        );
        assert_eq!(passed_count("garbage"), None);
    }
}
