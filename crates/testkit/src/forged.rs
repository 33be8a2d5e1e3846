//! For tests that forge pids or plant state records: those must run inside their own pid
//! namespace (outside one, a forged pid can name any process of the machine). The outer
//! test calls [`in_pid_namespace!`](crate::in_pid_namespace), which runs one `#[ignore]`d
//! inner test of the same test binary as pid 1 of `unshare --pid --fork --mount-proc`; the
//! inner test starts with [`assert_namespaced`] and plants records with [`plant_record`].

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// `in_pid_namespace!(inner_fn)`: run the `#[ignore]`d test `inner_fn` of the calling module
/// (named by its full path in the test binary, `forged_records::inner_fn`) as pid 1 of a new
/// pid namespace. A name that runs no test fails. Without `unshare` rights: a panic in CI, a
/// printed skip locally.
#[macro_export]
macro_rules! in_pid_namespace {
    ($inner:ident) => {{
        let _: fn() = $inner;
        $crate::forged::in_pid_namespace(concat!(module_path!(), "::", stringify!($inner)))
    }};
}

/// What [`in_pid_namespace!`](crate::in_pid_namespace) runs: the inner test `path` (a
/// `module_path!()` and a function name, see [`crate::rerun::test_name`]) of the current
/// test binary as pid 1 of a new pid namespace.
#[doc(hidden)]
pub fn in_pid_namespace(path: &str) {
    let name = crate::rerun::test_name(path);
    let this = std::env::current_exe().expect("this test binary");
    let probe = Command::new("unshare").args(["--pid", "--fork", "--mount-proc", "true"]).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        let why = match &probe {
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => e.to_string(),
        };
        if crate::in_ci() {
            panic!("CI needs `unshare --pid --fork --mount-proc` (root, util-linux) for this test: {why}");
        }
        println!("skipped: cannot make a pid namespace here ({why}); run as root to include this test");
        return;
    }
    let mut unshare = Command::new("unshare");
    unshare.args(["--pid", "--fork", "--mount-proc", "--"]).arg(this);
    crate::rerun::run_exactly(unshare, name, "as pid 1 of its own pid namespace");
}

/// The inner tests run only as pid 1 of their own namespace.
pub fn assert_namespaced() {
    assert_eq!(
        std::process::id(),
        1,
        "this test plants forged records and must run as pid 1 of its own pid namespace; run the outer test instead"
    );
}

/// Plant a state record of `runner` as tether writes it, with `fields` on top (whatever
/// the caller wants it to claim), in `state`.
pub fn plant_record(state: &Path, name: &str, runner: &str, fields: Value) {
    let mut record = json!({
        "name": name, "runner": runner, "fingerprint": "forged", "detached": true,
        "owner": null, "leader": null, "pgid": null, "backend_pid": null, "container_id": null,
        "host": "127.0.0.1", "port": 9, "url": "http://127.0.0.1:9", "started_at_unix_ms": 0,
        "tool_version": null, "log_file": null, "grace_ms": 100, "restarts": 0
    });
    if let (Some(r), Some(f)) = (record.as_object_mut(), fields.as_object()) {
        r.extend(f.clone());
    }
    let path = state.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(&record).expect("json")).expect("plant the record");
}
