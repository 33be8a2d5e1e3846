//! The bad-input catalogue: each wrong input gets exit 2 (usage/config) or 1
//! (runtime) and a message that names the fix. One test per message.

use std::process::{Command, Output, Stdio};

const EXE: &str = env!("CARGO_BIN_EXE_tether");

struct Case {
    state: tempfile::TempDir,
    cwd: tempfile::TempDir,
}

impl Case {
    fn new() -> Self {
        Case { state: tempfile::tempdir().expect("state dir"), cwd: tempfile::tempdir().expect("cwd") }
    }

    fn config(&self, text: &str) -> String {
        let path = self.cwd.path().join("bad.toml");
        std::fs::write(&path, text).expect("write config");
        path.to_string_lossy().into_owned()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(EXE)
            .args(args)
            .env("TETHER_STATE_DIR", self.state.path())
            .current_dir(self.cwd.path())
            .stdin(Stdio::null())
            .output()
            .expect("run tether")
    }
}

/// Runs `args`; asserts the exit code and that stderr says `needle`; nothing recorded.
fn expect(case: &Case, args: &[&str], code: i32, needle: &str) {
    let out = case.run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: stderr: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: expected `{needle}` in: {stderr}");
    let left: Vec<_> = std::fs::read_dir(case.state.path())
        .map(|d| {
            d.filter_map(|e| e.ok()).map(|e| e.file_name()).filter(|n| n.to_string_lossy().ends_with(".json")).collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{args:?}: a failed start left records: {left:?}");
}

#[test]
fn toml_syntax_error_names_the_line() {
    let c = Case::new();
    let f = c.config("name = \"a\"\nport = [\n");
    expect(&c, &["up", "--config", &f], 2, "line 2");
}

#[test]
fn toml_unknown_key_is_named() {
    let c = Case::new();
    let f = c.config("prot = 8080\n");
    expect(&c, &["up", "--config", &f], 2, "unknown field `prot`");
}

#[test]
fn toml_wrong_type_says_what_is_expected() {
    let c = Case::new();
    let f = c.config("port = true\n");
    expect(&c, &["up", "--config", &f], 2, "a port number 1–65535 or \"auto\"");
}

#[test]
fn missing_config_file_is_named() {
    let c = Case::new();
    expect(&c, &["up", "--config", "/nonexistent/tether.toml"], 2, "cannot read config file /nonexistent/tether.toml");
}

#[test]
fn port_zero_says_use_auto() {
    expect(&Case::new(), &["up", "--port", "0"], 2, "`auto` for a free one");
}

#[test]
fn port_out_of_range_says_the_range() {
    expect(&Case::new(), &["up", "--port", "70000"], 2, "port 70000 is out of range; give 1–65535");
}

#[test]
fn taken_port_names_the_holder_and_the_ways_out() {
    let c = Case::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    let pid = format!("pid {}", std::process::id());
    expect(&c, &["up", "--port", &port, "--", EXE, "demo-backend", "--port", "{port}"], 1, &pid);
    expect(&c, &["up", "--port", &port, "--", EXE, "demo-backend", "--port", "{port}"], 1, "--port auto");
}

#[test]
fn unknown_runner_lists_the_runners() {
    expect(&Case::new(), &["up", "--runner", "podman"], 2, "use native, uvx or docker");
}

#[test]
fn missing_program_says_install_or_give_a_path() {
    expect(
        &Case::new(),
        &["up", "--port", "auto", "--", "no-such-program-xyz"],
        1,
        "install it, or give its full path",
    );
}

#[test]
fn program_path_that_does_not_exist_is_named() {
    expect(&Case::new(), &["up", "--port", "auto", "--", "/no/such/server"], 1, "`/no/such/server` does not exist");
}

#[test]
fn bad_probe_lists_the_kinds() {
    expect(&Case::new(), &["up", "--probe", "grpc"], 2, "use http[:PATH], tcp, log:REGEX or mcp[:PATH]");
}

#[test]
fn bad_probe_regex_is_explained() {
    expect(&Case::new(), &["up", "--probe", "log:(unclosed"], 2, "the regular expression does not parse");
}

#[test]
fn bad_condition_shows_the_form() {
    expect(&Case::new(), &["up", "--expect", "skills_loaded"], 2, "write FIELD OP VALUE");
}

#[test]
fn unknown_preset_lists_the_presets() {
    expect(&Case::new(), &["up", "--preset", "fast"], 2, "the presets are: claude-skills");
}

#[test]
fn bad_duration_shows_the_format() {
    expect(&Case::new(), &["up", "--timeout", "soon"], 2, "500ms");
}

#[test]
fn bad_restart_policy_lists_the_policies() {
    expect(&Case::new(), &["up", "--restart", "sometimes"], 2, "use no, on-failure or always");
}

#[test]
fn bad_instance_name_states_the_rule() {
    expect(&Case::new(), &["up", "--name", "../etc", "--port", "auto", "--", "true"], 2, "use 1-64 characters");
}

#[test]
fn down_of_an_unknown_name_points_to_status() {
    expect(&Case::new(), &["down", "--name", "ghost"], 1, "`tether status` lists them");
}

#[test]
fn bad_env_flag_shows_the_form() {
    expect(&Case::new(), &["up", "--env", "NOVALUE"], 2, "write KEY=VALUE");
}

#[test]
fn zero_timeout_names_the_minimum() {
    expect(&Case::new(), &["up", "--timeout", "0s"], 2, "bad --timeout `0s`: too short; the minimum is 100ms");
}

#[test]
fn zero_probe_timeout_names_the_minimum() {
    expect(
        &Case::new(),
        &["up", "--probe-timeout", "0ms"],
        2,
        "bad --probe-timeout `0ms`: too short; the minimum is 10ms",
    );
}

#[test]
fn zero_liveness_period_names_the_minimum() {
    // A busy loop against the backend otherwise (about 1,165 requests a second).
    let c = Case::new();
    let needle = "bad --liveness-period `0s`: too short; the minimum is 100ms";
    expect(&c, &["up", "--liveness", "tcp", "--liveness-period", "0s"], 2, needle);
    expect(&c, &["up", "--liveness-period", "0s"], 2, needle);
}

#[test]
fn too_short_durations_in_the_config_file_name_the_minimum() {
    let c = Case::new();
    let f = c.config("probe-timeout = \"5ms\"\n");
    let needle = format!("bad probe-timeout `5ms` (from {f}, key `probe-timeout`): too short; the minimum is 10ms");
    expect(&c, &["up", "--config", &f], 2, &needle);
}

#[test]
fn missing_cwd_names_the_directory_not_the_program() {
    let c = Case::new();
    let args = ["up", "--port", "auto", "--cwd", "/nonexistent/dir", "--", EXE, "demo-backend", "--port", "{port}"];
    expect(&c, &args, 2, "bad --cwd `/nonexistent/dir`: No such file or directory");
    let out = c.run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("program"), "the program is not to blame: {stderr}");
}

#[test]
fn cwd_that_is_a_file_is_not_a_directory() {
    let c = Case::new();
    let f = c.config("");
    expect(&c, &["up", "--port", "auto", "--cwd", &f, "--", "true"], 2, "not a directory");
}

#[test]
fn port_that_is_not_a_number_states_the_range() {
    for bad in ["abc", "0", "70000", "-1"] {
        expect(&Case::new(), &["port", bad], 2, "PORT must be a number from 1 to 65535");
    }
}

/// `up --help` names each default (they are `Config::plan`'s; its unit tests check them).
#[test]
fn up_help_shows_the_defaults() {
    let out = Case::new().run(&["up", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{help}");
    for needle in [
        "[default: 120s]",
        "[default: 5s]",
        "[default: 2s]",
        "[default: 8765; mcp-proxy: auto]",
        "[default: 127.0.0.1]",
        "[default: http:/health]",
        "--python <VER|PATH>",
        "VER or PATH",
        "[env: TETHER_RUNNER=",
    ] {
        assert!(help.contains(needle), "`{needle}` missing from `up --help`:\n{help}");
    }
}

/// `up --host HOST` with the demo backend: exit 2 before anything starts (no record, no
/// DNS query for a name), saying what `--host` must be and why this one is not.
fn bad_host(host: &str, why: &str) {
    let c = Case::new();
    let needle = format!("`--host` must be an IP address of this machine (e.g. 127.0.0.1, ::1, 0.0.0.0), not '{host}'");
    expect(&c, &["up", "--name", "h", "--port", "auto", "--host", host], 2, &needle);
    expect(&c, &["up", "--name", "h", "--port", "auto", "--host", host], 2, why);
    let left: Vec<_> =
        std::fs::read_dir(c.state.path()).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "{host}: something was started: {left:?}");
}

#[test]
fn host_out_of_range_is_not_an_ip_address() {
    bad_host("999.1.1.1", "not an IP address");
}

#[test]
fn host_with_shell_syntax_is_not_an_ip_address() {
    bad_host("1.2.3.4;touch x", "not an IP address");
}

#[test]
fn empty_host_is_not_an_ip_address() {
    bad_host("", "not an IP address");
}

#[test]
fn host_name_is_not_resolved() {
    bad_host("no-such-host.invalid", "not an IP address");
}

#[test]
fn host_not_of_this_machine_cannot_be_bound() {
    bad_host("203.0.113.7", "not an address of this machine: binding it fails with");
}

/// The `tether.toml` examples of docs/configuration.md are valid configs: the docs stay true.
#[test]
fn the_configuration_doc_examples_parse() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md"))
        .expect("docs/configuration.md");
    let blocks: Vec<&str> = doc.split("```toml\n").skip(1).filter_map(|b| b.split("```").next()).collect();
    assert!(blocks.len() >= 2, "docs/configuration.md shows the keys and the dev/CI pattern");
    for (i, block) in blocks.iter().enumerate() {
        let config = tether::Config::from_toml(block).unwrap_or_else(|e| panic!("toml block {i}: {e}\n{block}"));
        if i == 0 {
            assert_eq!(config.mcp_path.as_deref(), Some("/mcp"));
        }
        config.plan().unwrap_or_else(|e| panic!("toml block {i} is not a valid plan: {e}\n{block}"));
    }
}

/// Issue 26, item 6: a duration too long to keep (it overflowed a deadline, or the guard's
/// own millisecond argument) is refused at parse time, naming the flag and the maximum.
#[test]
fn durations_past_a_year_are_refused_naming_the_flag_and_the_maximum() {
    let case = Case::new();
    let huge = "18446744073709551615s";
    for flag in ["--timeout", "--liveness-period", "--grace", "--probe-timeout", "--install-timeout", "--share"] {
        expect(&case, &["up", flag, huge, "--", "true"], 2, flag);
        expect(&case, &["up", flag, huge, "--", "true"], 2, "the maximum is 8760h");
    }
    expect(&case, &["mcp-proxy", "--call-wait", "9000h", "--", "true"], 2, "--call-wait");
    let file = case.config("timeout = \"99999h\"\n");
    expect(&case, &["up", "--config", &file, "--", "true"], 2, "the maximum is 8760h");
}

#[test]
fn config_that_is_not_a_regular_file_is_refused_without_blocking() {
    // /dev/zero never ends (memory grew ~1 GB/s); a FIFO with no writer never opens.
    let c = Case::new();
    expect(&c, &["up", "--config", "/dev/zero"], 2, "config file /dev/zero is not a regular file");
    let fifo = c.cwd.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let fifo = fifo.to_string_lossy().into_owned();
    expect(&c, &["up", "--config", &fifo], 2, &format!("config file {fifo} is not a regular file"));
}

#[test]
fn config_file_too_large_is_refused_naming_the_file() {
    let c = Case::new();
    let f = c.config(&"# padding\n".repeat(200_000));
    expect(&c, &["up", "--config", &f], 2, &format!("config file {f} is larger than 1 MiB"));
}

#[test]
fn junk_in_the_state_dir_is_one_warning_with_the_count() {
    // 10,000 junk files gave 10,000 warnings; now one line for them all.
    let c = Case::new();
    for i in 0..200 {
        std::fs::write(c.state.path().join(format!("junk{i:03}.json")), "not json").expect("junk");
    }
    // Names that cannot be records are not opened (nor counted).
    std::fs::write(c.state.path().join("..hidden.json"), "x").expect("junk");
    std::fs::write(c.state.path().join("notes.txt"), "x").expect("junk");
    let out = c.run(&["status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let warnings: Vec<_> = stderr.lines().filter(|l| l.contains("junk")).collect();
    assert_eq!(warnings.len(), 1, "one summary line: {stderr}");
    let line = warnings[0];
    assert!(line.contains("skipping 200 state files"), "the count: {line}");
    assert!(line.contains("junk000.json, junk001.json, …"), "a couple of names: {line}");
    assert!(line.contains("not a valid record"), "why: {line}");
}

#[test]
fn two_ups_racing_for_one_port_one_wins_the_other_is_told_the_truth() {
    // About 1 round in 30, both lost, the loser told "pid 0 … another user" about ours.
    const ROUNDS: usize = 30;
    let c = Case::new();
    for round in 0..ROUNDS {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let port = port.to_string();
        let names = [format!("a{round}"), format!("b{round}")];
        let start = |name: &str| {
            Command::new(EXE)
                .args(["up", "--detach", "--name", name, "--port", &port, "--timeout", "30s", "--"])
                .args([EXE, "demo-backend", "--port", "{port}"])
                .env("TETHER_STATE_DIR", c.state.path())
                .current_dir(c.cwd.path())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn tether up")
        };
        let racers = [start(&names[0]), start(&names[1])];
        let outs: Vec<Output> = racers.into_iter().map(|r| r.wait_with_output().expect("wait for tether up")).collect();
        let stderr: Vec<String> = outs.iter().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).collect();
        let won: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
        for (name, _) in names.iter().zip(&outs) {
            let _ = c.run(&["down", "--name", name]);
        }
        assert_eq!(won.len(), 1, "round {round}: exactly one wins: {stderr:?}");
        let (winner, loser) = (won[0], 1 - won[0]);
        let told = &stderr[loser];
        assert!(!told.contains("pid 0"), "round {round}: the loser was told pid 0: {told}");
        assert!(
            told.contains(&format!("instance '{}'", names[winner])),
            "round {round}: the loser is told the port is the winner's: {told}"
        );
    }
}

#[test]
fn zero_liveness_failures_is_refused() {
    expect(&Case::new(), &["up", "--liveness", "tcp", "--liveness-failures", "0"], 2, "bad --liveness-failures `0`");
}

#[test]
fn empty_log_probe_regex_is_refused() {
    expect(&Case::new(), &["up", "--probe", "log:"], 2, "bad probe `log:`: the regular expression is empty");
}

#[test]
fn empty_progress_field_is_refused() {
    expect(&Case::new(), &["up", "--progress-field", ""], 2, "bad --progress-field ``: give the JSON field");
}

#[test]
fn env_keys_that_no_environment_can_hold_are_refused() {
    let c = Case::new();
    expect(&c, &["up", "--env", "A\nB=1"], 2, "bad --env key `A\\nB`");
    for (toml, shown) in [
        ("env = { \"A=B\" = \"1\" }\n", "`A=B`"),
        ("env = { \"A\\u0000B\" = \"1\" }\n", "`A\\0B`"),
        ("env = { \"\" = \"1\" }\n", "``"),
    ] {
        let f = c.config(toml);
        expect(&c, &["up", "--config", &f], 2, &format!("bad env key {shown} (from {f}, key `env`)"));
    }
}

#[test]
fn relative_state_dir_is_refused() {
    let c = Case::new();
    let out = Command::new(EXE)
        .args(["status"])
        .env("TETHER_STATE_DIR", "relative/state")
        .current_dir(c.cwd.path())
        .stdin(Stdio::null())
        .output()
        .expect("run tether");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("TETHER_STATE_DIR must be an absolute path"), "{stderr}");
    assert!(!c.cwd.path().join("relative").exists(), "nothing created relative to the cwd");
}

#[test]
fn durations_in_the_config_file_may_be_numbers_of_seconds() {
    let c = Case::new();
    // An integer is accepted (the start then stops at the next bad key, so nothing runs)…
    let f = c.config("timeout = 5\ngrace = 2\nliveness = \"tcp\"\nliveness-failures = 0\n");
    expect(&c, &["up", "--config", &f], 2, &format!("bad liveness-failures `0` (from {f}, key `liveness-failures`)"));
    // …a float is seconds too, checked like the string…
    let f = c.config("timeout = 0.05\n");
    let needle = format!("bad timeout `0.05` (from {f}, key `timeout`): too short; the minimum is 100ms");
    expect(&c, &["up", "--config", &f], 2, &needle);
    // …and a negative number or another type says what is expected.
    let f = c.config("grace = -1\n");
    expect(&c, &["up", "--config", &f], 2, "a duration");
    let f = c.config("probe-timeout = true\n");
    expect(&c, &["up", "--config", &f], 2, "a duration");
}

#[test]
fn bad_mcp_path_names_the_flag_not_a_probe() {
    let c = Case::new();
    let out = c.run(&["mcp-proxy", "--mcp-path", "x", "--", "true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad --mcp-path `x`: the path must start with `/`"), "{stderr}");
    assert!(!stderr.contains("probe"), "no probe was given: {stderr}");
}
