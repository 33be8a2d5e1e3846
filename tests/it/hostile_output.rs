//! Issue 26: tether's own output against hostile readers — a reader that went away (a closed
//! pipe: `tether status | head -1`).
// Linux only: it reads the backend's output counters from /proc/PID/io.
#![cfg(target_os = "linux")]

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

/// Processes (not zombies) whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let zombie = stat.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with('Z'));
            (String::from_utf8_lossy(&cmdline).contains(marker) && !zombie).then_some(pid)
        })
        .collect()
}

/// How many bytes process `pid` has written (`wchar` of `/proc/PID/io`).
fn written(pid: u64) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("wchar: ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// Wait (bounded) until no process carries `marker`; the ones left.
fn gone(marker: &str) -> Vec<u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let left = processes_with(marker);
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn marker(what: &str) -> String {
    format!(
        "tether-hostile-{what}-{}-{}",
        std::process::id(),
        std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos())
    )
}

/// `tether up` of the demo backend printing `lines` filler lines at once, with `marker`
/// among its arguments; stdout piped, stderr as given.
fn up_spewing(state: &std::path::Path, marker: &str, lines: u64, stderr: impl Into<Stdio>) -> std::process::Child {
    Command::new(EXE)
        .args(["up", "--name", "hostile", "--port", "auto", "--timeout", "60s", "--", EXE, "demo-backend"])
        .args([
            "--port",
            "{port}",
            "--ready-after",
            "0",
            "--log-lines",
            &lines.to_string(),
            "--echo-args",
            "--",
            marker,
        ])
        .env("TETHER_STATE_DIR", state)
        .env_remove("TETHER_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("run tether up")
}

/// The `ready:` line on `up`'s stdout, within a bound (a frozen tether never prints it).
fn ready_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("ready: ") {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("tether up never said ready: it froze behind a stalled stderr")
    })
}

/// Send `sig` to the tether `child`.
fn signal(child: &std::process::Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, sig).unwrap_or_else(|e| panic!("{sig}: {e}"));
}

/// The exit status within a bound (a frozen tether ignores SIGTERM).
fn exit_within(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tether up did not end on SIGTERM: frozen behind its output");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Item 1: a reader of tether's stderr that stops reading (a `less` nobody scrolls, a stuck
/// log shipper): tether stays ready and responsive, drops (and counts) what the reader could
/// not take, and SIGTERM still stops the backend and ends it with exit 0.
#[test]
fn a_stalled_reader_of_stderr_freezes_neither_tether_nor_the_backend() {
    let state = tempfile::tempdir().expect("state dir");
    let marker = marker("stalled");
    // A pipe nobody reads until the end: 20 MB of backend output cannot fit in it.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let mut up = up_spewing(state.path(), &marker, 200_000, writer);
    let ready = ready_line(&mut up);
    assert!(ready.contains("http://127.0.0.1:"), "{ready}");
    // Wait until the backend has written it all (its pipe never blocked it): past what the
    // stalled pipe and tether's queue can hold, so lines were dropped.
    let status = Command::new(EXE)
        .args(["status", "--name", "hostile", "--json"])
        .env("TETHER_STATE_DIR", state.path())
        .output()
        .expect("status");
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let backend = doc["pid"].as_u64().unwrap_or_else(|| panic!("no backend pid: {doc}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while written(backend) < 200_000 * 100 {
        assert!(std::time::Instant::now() < deadline, "the backend was blocked: it wrote {} bytes", written(backend));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The reader comes back: the count of what was dropped reaches it.
    let drained = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut { reader }, &mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    signal(&up, nix::sys::signal::Signal::SIGTERM);
    let status = exit_within(&mut up);
    assert_eq!(status.code(), Some(0), "a clean stop");
    let left = gone(&marker);
    assert!(left.is_empty(), "the backend outlived tether: {left:?}");
    let stderr = drained.join().expect("the reader");
    assert!(
        stderr.contains("line(s) dropped here"),
        "the drop is counted: {}",
        &stderr[stderr.len().saturating_sub(500)..]
    );
    assert!(stderr.contains("stopped 'hostile'"), "{}", &stderr[stderr.len().saturating_sub(500)..]);
}

/// Item 4 for `up`: its stderr's reader went away (`tether up 2>&1 | head -3`): no panic
/// (exit 101) — tether takes it as a stop: the backend is stopped, exit 0.
#[test]
fn a_reader_of_ups_stderr_that_went_away_is_a_clean_stop() {
    let state = tempfile::tempdir().expect("state dir");
    let marker = marker("closed");
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut up = up_spewing(state.path(), &marker, 1000, writer);
    let status = exit_within(&mut up);
    assert_eq!(status.code(), Some(0), "not a panic: {status}");
    let left = gone(&marker);
    assert!(left.is_empty(), "the backend outlived tether: {left:?}");
}

/// Item 3: a backend's escape sequences and control characters (OSC 52 clipboard write,
/// OSC 0 title, CSI 2J, DCS, NUL, BS, CR faking tether's own lines) never reach the reader
/// raw — shown escaped on a pipe, as `up` relays them and as `logs` prints them; `--raw`
/// passes the bytes.
#[test]
fn a_backends_escape_sequences_are_shown_escaped_unless_raw() {
    let state = tempfile::tempdir().expect("state dir");
    let hostile = "\x1b]52;c;ZXZpbA==\x07\x1b]0;owned\x07\x1b[2J\x1bPq#\x1b\\\x08\rhostile| INFO ready: http://evil";
    let run = |raw: bool| {
        let mut cmd = Command::new(EXE);
        cmd.args(["up", "--name", "esc", "--port", "auto", "--detach"]);
        cmd.args(["--", EXE, "demo-backend", "--port", "{port}", "--ready-after", "0", "--say", hostile]);
        let up = cmd.env("TETHER_STATE_DIR", state.path()).stdin(Stdio::null()).output().expect("up");
        assert_eq!(up.status.code(), Some(0), "{}", String::from_utf8_lossy(&up.stderr));
        let mut logs = Command::new(EXE);
        logs.args(["logs", "--name", "esc"]);
        if raw {
            logs.arg("--raw");
        }
        let logs = logs.env("TETHER_STATE_DIR", state.path()).stdin(Stdio::null()).output().expect("logs");
        let down = Command::new(EXE)
            .args(["down", "--name", "esc"])
            .env("TETHER_STATE_DIR", state.path())
            .stdin(Stdio::null())
            .output()
            .expect("down");
        assert_eq!(down.status.code(), Some(0));
        String::from_utf8_lossy(&logs.stdout).into_owned()
    };
    let shown = run(false);
    let line = shown.lines().find(|l| l.contains("says")).unwrap_or_else(|| panic!("no line said: {shown:?}"));
    assert!(!line.chars().any(|c| c.is_control() && c != '\t'), "raw control characters reach the reader: {line:?}");
    assert!(line.contains("\\e]52;c;ZXZpbA==\\x07") && line.contains("\\r"), "shown escaped: {line:?}");
    let raw = run(true);
    assert!(raw.contains("\x1b]52;c;ZXZpbA==\x07"), "--raw gives the bytes: {raw:?}");

    // `up` in the foreground relays the backend's lines the same way.
    let marker = marker("esc");
    let mut up = Command::new(EXE)
        .args(["up", "--name", "esc-fg", "--port", "auto", "--", EXE, "demo-backend", "--port", "{port}"])
        .args(["--ready-after", "0", "--say", hostile, "--echo-args", "--", &marker])
        .env("TETHER_STATE_DIR", state.path())
        .env_remove("TETHER_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("up");
    ready_line(&mut up);
    signal(&up, nix::sys::signal::Signal::SIGTERM);
    let out = up.wait_with_output().expect("up's output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let relayed = stderr.lines().find(|l| l.contains("says")).unwrap_or_else(|| panic!("not relayed: {stderr}"));
    assert!(!relayed.chars().any(|c| c.is_control() && c != '\t'), "{relayed:?}");
    assert!(relayed.starts_with("esc-fg| "), "the prefix is not overwritten: {relayed:?}");
    assert!(gone(&marker).is_empty());
}

/// Item 5: `up --detach` whose record cannot be written once the backend is ready (here
/// `NAME.json` is a directory; a full disk does the same) fails — and stops what it
/// launched: an unrecorded backend would run on, invisible to `status` and `down`.
#[test]
fn an_up_whose_record_cannot_be_written_leaves_no_backend() {
    for detach in [true, false] {
        let state = tempfile::tempdir().expect("state dir");
        std::fs::create_dir(state.path().join("unrecorded.json")).expect("a directory where the record goes");
        let marker = marker("unrecorded");
        let mut cmd = Command::new(EXE);
        cmd.args(["up", "--name", "unrecorded", "--port", "auto"]);
        if detach {
            cmd.arg("--detach");
        }
        let out = cmd
            .args(["--", EXE, "demo-backend", "--port", "{port}", "--ready-after", "0", "--echo-args", "--", &marker])
            .env("TETHER_STATE_DIR", state.path())
            .stdin(Stdio::null())
            .output()
            .expect("run tether up");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "detach {detach}: {stderr}");
        assert!(stderr.contains("unrecorded.json"), "detach {detach}: names the file: {stderr}");
        let left = gone(&marker);
        assert!(left.is_empty(), "detach {detach}: the unrecorded backend runs on: {left:?}");
    }
}

/// Item 9: `logs --follow` of a backend writing 150 MB as fast as it can — its log rotating
/// every 10 MiB — follows the file across rotations: every line arrives whole (none
/// spliced from two), in order, and none is missing unless a gap marker says so.
#[test]
fn logs_follow_keeps_up_across_rotations_and_never_splices_lines() {
    use std::io::BufRead;
    let state = tempfile::tempdir().expect("state dir");
    let gate = state.path().join("go");
    let lines: u64 = 1_500_000;
    let up = Command::new(EXE)
        .args(["up", "--name", "spew", "--port", "auto", "--detach", "--", EXE, "demo-backend", "--port", "{port}"])
        .args(["--ready-after", "0", "--log-lines", &lines.to_string(), "--log-after-file"])
        .arg(&gate)
        .env("TETHER_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .output()
        .expect("up");
    assert_eq!(up.status.code(), Some(0), "{}", String::from_utf8_lossy(&up.stderr));
    let mut follow = Command::new(EXE)
        .args(["logs", "--name", "spew", "--follow"])
        .env("TETHER_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("logs --follow");
    let mut out = std::io::BufReader::new(follow.stdout.take().expect("stdout"));
    // Following: it printed what the log holds so far (the backend's first line).
    let mut first = String::new();
    out.read_line(&mut first).expect("a first line");
    assert!(first.contains("demo-backend listening"), "{first}");
    std::fs::write(&gate, "").expect("open the gate");
    let (mut next, mut gaps, mut spliced) = (1u64, 0u32, Vec::new());
    for line in out.lines().map_while(Result::ok) {
        if line.starts_with("[tether: ") {
            gaps += 1;
            continue;
        }
        let Some(rest) = line.strip_prefix("log line ") else { continue };
        let n: u64 = rest.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let whole = line.len() == 99
            && rest.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start().bytes().all(|b| b == b'x');
        if !whole && spliced.len() < 3 {
            spliced.push(line.clone());
        }
        assert!(n >= next || gaps > 0, "out of order: {n} after {}", next - 1);
        assert!(n == next || gaps > 0, "line {next} is missing (got {n}) and no gap marker says so");
        next = n + 1;
        if n == lines {
            break;
        }
    }
    assert!(spliced.is_empty(), "lines spliced: {spliced:?}");
    assert_eq!(next, lines + 1, "followed to the last line");
    let _ = follow.kill();
    let _ = follow.wait();
    let down = Command::new(EXE)
        .args(["down", "--name", "spew"])
        .env("TETHER_STATE_DIR", state.path())
        .output()
        .expect("down");
    assert_eq!(down.status.code(), Some(0));
}

/// Item 1 on a terminal: tether's stderr is a pty whose output is stopped (XOFF, Ctrl-S):
/// tether still becomes ready with its progress bar and backend lines queued, and SIGTERM
/// still stops the backend and ends it (exit 0).
#[test]
fn a_terminal_stopped_with_ctrl_s_freezes_neither_tether_nor_the_backend() {
    use nix::libc;
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into the ints we pass; no name, termios or size.
    let opened =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut master = std::fs::File::from(master);
    // Ctrl-S: the terminal stops output (IXON is on by default); nothing more is shown.
    std::io::Write::write_all(&mut master, b"\x13").expect("XOFF");
    let state = tempfile::tempdir().expect("state dir");
    let marker = marker("xoff");
    let mut up = up_spewing(state.path(), &marker, 100_000, Stdio::from(slave));
    let ready = ready_line(&mut up);
    assert!(ready.contains("http://127.0.0.1:"), "{ready}");
    signal(&up, nix::sys::signal::Signal::SIGTERM);
    let status = exit_within(&mut up);
    assert_eq!(status.code(), Some(0), "a clean stop");
    assert!(gone(&marker).is_empty(), "the backend outlived tether");
    // Ctrl-Q: the terminal may go on (nothing waits for it any more).
    let _ = std::io::Write::write_all(&mut master, b"\x11");
}

/// Item 10: a limit of 6 open files (`ulimit -n 6`) is a clear error, not a panic in the
/// runtime's signal setup.
#[test]
fn too_few_file_descriptors_is_a_clear_error() {
    use std::os::unix::process::CommandExt;
    let state = tempfile::tempdir().expect("state dir");
    for args in [&["status"][..], &["up", "--", "true"]] {
        let mut cmd = Command::new(EXE);
        cmd.args(args).env("TETHER_STATE_DIR", state.path()).stdin(Stdio::null());
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let six = nix::libc::rlimit { rlim_cur: 6, rlim_max: 6 };
                match nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &six) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
        let out = cmd.output().expect("run tether");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("too many open files") && stderr.contains("ulimit -n"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Item 10: a second Ctrl-C while `up` waits out the grace period of a backend that ignores
/// SIGTERM kills it at once: tether ends long before the grace (60 s) and leaves nothing.
#[test]
fn a_second_interrupt_kills_at_once() {
    use std::io::BufRead;
    let state = tempfile::tempdir().expect("state dir");
    let marker = marker("second");
    let mut up = Command::new(EXE)
        .args(["up", "--name", "stubborn", "--port", "auto", "--grace", "60s", "--", EXE, "demo-backend"])
        .args(["--port", "{port}", "--ready-after", "0", "--ignore-sigterm", "--echo-args", "--", &marker])
        .env("TETHER_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("up");
    ready_line(&mut up);
    signal(&up, nix::sys::signal::Signal::SIGINT);
    // The stop has begun (tether says so) before the second one comes.
    let mut err = std::io::BufReader::new(up.stderr.take().expect("stderr"));
    let mut seen = String::new();
    while !seen.contains("stopping") {
        let mut line = String::new();
        if err.read_line(&mut line).expect("stderr") == 0 {
            panic!("tether ended before the second interrupt: {seen}");
        }
        seen.push_str(&line);
    }
    signal(&up, nix::sys::signal::Signal::SIGINT);
    let status = exit_within(&mut up);
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    assert_eq!(status.code(), Some(0), "{seen}{rest}");
    assert!(rest.contains("second interrupt: killing 'stubborn' now"), "{seen}{rest}");
    assert!(gone(&marker).is_empty(), "the backend outlived the second interrupt");
}
