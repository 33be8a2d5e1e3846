//! Issue 26: tether's own output against hostile readers — a reader that went away (a closed
//! pipe: `tether status | head -1`).

use std::process::{Command, Stdio};

const EXE: &str = env!("CARGO_BIN_EXE_tether");

/// Item 4: the commands that print and end, with their stdout a pipe whose reader is gone
/// before they write: they end quietly (as `ls | head -0` does: by SIGPIPE, or exit 0),
/// never with a panic and its backtrace (exit 101).
#[test]
fn a_reader_that_went_away_ends_the_printing_commands_quietly() {
    let state = tempfile::tempdir().expect("state dir");
    for args in [&["status"][..], &["status", "--json"], &["port", "1"], &["port", "1", "--json"]] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let out = Command::new(EXE)
            .args(args)
            .env("TETHER_STATE_DIR", state.path())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run tether");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
        assert!(stderr.trim().is_empty(), "{args:?}: quietly: {stderr}");
    }
}
