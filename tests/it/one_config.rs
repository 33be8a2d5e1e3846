//! One `tether.toml` for development and CI: the runner (and every other one-value
//! option) is chosen per environment with `TETHER_*` variables, with the precedence
//! flag > environment > file > default. The same config runs both ways; which runner ran
//! shows in its error before anything starts (a uvx that does not exist, an unreachable
//! Docker engine), so no network, uv or Docker is needed.

use std::path::Path;
use std::process::{Command, Output, Stdio};

const EXE: &str = env!("CARGO_BIN_EXE_tether");

/// Both runners' settings; uvx for development.
const CONFIG: &str = r#"
runner = "uvx"
package = "my-backend==1.0"
uvx = "/nonexistent/dev/uvx"
image = "my-backend:1.0"
port = "auto"
args = ["--port", "{port}"]
"#;

const UVX_RAN: &str = "uvx `/nonexistent/dev/uvx` does not exist";
const DOCKER_RAN: &str = "cannot reach the Docker engine (DOCKER_HOST=unix:///nonexistent/docker.sock)";

/// `tether up ARGS` in `dir` (with its `tether.toml`), with `env` and none of the caller's
/// own `TETHER_*` settings.
fn up(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(EXE);
    cmd.arg("up").args(args).current_dir(dir).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TETHER_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("TETHER_STATE_DIR", dir.join("state"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env_remove("TETHER_LOG")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied());
    cmd.output().expect("run tether")
}

/// Asserts the exit code and that stderr says each of `needles` (and not `absent`).
fn says(out: &Output, code: i32, needles: &[&str], absent: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
    }
    assert!(!stderr.contains(absent), "did not expect `{absent}` in: {stderr}");
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tether.toml"), CONFIG).expect("write tether.toml");
    dir
}

#[test]
fn the_same_config_runs_under_uvx_in_development_and_docker_in_ci() {
    let dir = project();
    // The file alone: uvx.
    says(&up(dir.path(), &[], &[]), 1, &[UVX_RAN], DOCKER_RAN);
    // CI sets the environment: it wins over the file.
    says(&up(dir.path(), &[], &[("TETHER_RUNNER", "docker")]), 1, &[DOCKER_RAN], UVX_RAN);
    // A flag wins over the environment.
    says(&up(dir.path(), &["--runner", "uvx"], &[("TETHER_RUNNER", "docker")]), 1, &[UVX_RAN], DOCKER_RAN);
    // Set but empty (as a CI matrix leaves it) is unset: the file decides.
    says(&up(dir.path(), &[], &[("TETHER_RUNNER", "")]), 1, &[UVX_RAN], DOCKER_RAN);
}

#[test]
fn every_one_value_option_has_the_same_precedence() {
    let dir = project();
    let env = [("TETHER_UVX", "/nonexistent/env/uvx")];
    says(&up(dir.path(), &[], &env), 1, &["uvx `/nonexistent/env/uvx` does not exist"], UVX_RAN);
    says(
        &up(dir.path(), &["--uvx", "/nonexistent/flag/uvx"], &env),
        1,
        &["uvx `/nonexistent/flag/uvx` does not exist"],
        "/nonexistent/env/uvx",
    );
    // A bad value from the environment is bad usage, and the message says where it came from.
    says(
        &up(dir.path(), &[], &[("TETHER_TIMEOUT", "0s")]),
        2,
        &["bad timeout `0s` (from TETHER_TIMEOUT): too short; the minimum is 100ms"],
        UVX_RAN,
    );
    says(
        &up(dir.path(), &[], &[("TETHER_RUNNER", "bogus")]),
        2,
        &["unknown runner `bogus`", "note: the value comes from the environment: TETHER_RUNNER=bogus"],
        UVX_RAN,
    );
}

#[test]
fn the_name_comes_from_tether_name_never_from_the_backends_fingerprint() {
    // A backend tether started has TETHER_INSTANCE=<its name> (the fingerprint); when it
    // runs tether itself, that must not pick the instance. TETHER_NAME does, for `logs`
    // and `down` as for `up`.
    let dir = project();
    let logs = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(EXE);
        cmd.arg("logs").current_dir(dir.path()).stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TETHER_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("TETHER_STATE_DIR", dir.path().join("state")).envs(env.iter().copied());
        cmd.output().expect("run tether logs")
    };
    says(&logs(&[("TETHER_INSTANCE", "parent")]), 1, &["'default'"], "parent");
    says(&logs(&[("TETHER_INSTANCE", "parent"), ("TETHER_NAME", "api")]), 1, &["'api'"], "parent");
}

/// An error about a value names where it came from: the flag on the command line, the variable
/// from the environment, the file and its key from `tether.toml` (not a flag never given).
#[test]
fn a_bad_value_names_its_source_flag_variable_or_file_and_key() {
    let dir = project();
    let toml = format!("{CONFIG}timeout = \"0.05\"\n");
    std::fs::write(dir.path().join("tether.toml"), toml).expect("write tether.toml");
    let too_short = ": too short; the minimum is 100ms";
    says(
        &up(dir.path(), &[], &[]),
        2,
        &[&format!("bad timeout `0.05` (from tether.toml, key `timeout`){too_short}")],
        "--timeout",
    );
    says(
        &up(dir.path(), &[], &[("TETHER_TIMEOUT", "50ms")]),
        2,
        &[&format!("bad timeout `50ms` (from TETHER_TIMEOUT){too_short}")],
        "tether.toml",
    );
    says(
        &up(dir.path(), &["--timeout", "20ms"], &[("TETHER_TIMEOUT", "50ms")]),
        2,
        &[&format!("bad --timeout `20ms`{too_short}")],
        "TETHER_TIMEOUT",
    );
    // One the flags cannot parse is clap's error, which names the flag, and the variable too.
    says(
        &up(dir.path(), &[], &[("TETHER_TIMEOUT", "abc")]),
        2,
        &[
            "invalid value 'abc' for '--timeout <DUR>'",
            "note: the value comes from the environment: TETHER_TIMEOUT=abc",
        ],
        "tether.toml",
    );
    // A file's value that no parser saw before the plan: its file and key.
    std::fs::write(dir.path().join("tether.toml"), format!("{CONFIG}timeout = \"abc\"\n")).expect("write");
    says(&up(dir.path(), &[], &[]), 2, &["bad timeout `abc` (from tether.toml, key `timeout`): "], "--timeout");
}
