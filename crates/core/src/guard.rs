//! The guard: tether re-executed as the backend's direct parent, so that the
//! owner's death — even by SIGKILL — takes the backend and every descendant down.
//!
//! The Linux parent-death signal reaches only the direct child, and fires when the
//! spawning *thread* exits; uv's Python, or any grandchild, is not the direct child.
//! So the direct child is this guard. It
//! 1. asks for a parent-death signal (SIGUSR2) and checks its parent is still there;
//! 2. makes itself a child subreaper, so orphaned descendants — even those that call
//!    `setsid` — become its children instead of escaping to init;
//! 3. starts the backend in its own process group (the guard's), stdin null, with the
//!    parent-death signal (SIGKILL) set on it: should the guard itself be SIGKILLed
//!    (a `kill -9` of the whole tree), the backend does not run on under init. What the
//!    backend started is out of the kernel's reach then (a `setsid` grandchild, uv's
//!    Python), so the backend's environment also gets [`LEADER_ENV`](crate::marks::LEADER_ENV)
//!    = this guard's identity: the next `status`, `down` or `up` finds what is left by it
//!    and stops it (see `process::survivors`);
//! 4. waits for a signal: SIGTERM/SIGINT/SIGHUP (a stop), SIGUSR2 whose parent is
//!    really gone (the owner died; a mere thread exit is ignored), or SIGCHLD;
//! 5. on a stop or the owner's death: SIGTERM to the group and every descendant,
//!    reap until none is left or the grace period passes, then SIGKILL;
//!    when the backend exits by itself: the same for whatever it left;
//! 6. exits the way the backend did (same code, or the same signal re-raised).
//!
//! Detached instances (`--log-file`) have no parent to watch; the guard writes the
//! backend's output to the log file (one rotated file), so nothing ever blocks. Their
//! guard is not even a child of the process that started it (see
//! [`sys::spawn_detached`]: a host's kill of a window's whole process tree must not take
//! a shared backend), so its exit status is nobody's to read: how the backend ended (or
//! that it could not be started) goes to the `.exit` status file beside the log, which
//! the starter's readiness wait and `down` read ([`reported_exit`]). The log and the
//! status file are opened without following symlinks, mode 0600, and only as regular
//! files of this user: a link planted there is refused, never written through.
//!
//! The backend gets file descriptors 0, 1 and 2 only: whatever else the guard
//! inherited or opened is closed on exec.
//!
//! A program that links tether opts in with [`run_if_guard`] at the top of `main`. The
//! `tether` binary has a small guard executable of its own beside it, `tether-guard`
//! ([`GUARD_BINARY`], whose `main` is [`run_from_args`]): each backend's guard is an exec
//! of that instead of the whole `tether` binary ([`guard_program`]).
//!
//! A guard with no process to start — the docker runner's container guard, which
//! removes a container when its owner dies — uses [`OwnerWatch`] for the same
//! parent-death watch, and [`close_inherited_fds_on_exec`] when it is spawned.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::procs;
use crate::sys::{self, Signal};

pub use crate::sys::guard::{OwnerWatch, Wake};

pub use crate::marks::GUARD_ARG;

/// The file name of the small dedicated guard executable (`src/bin/tether-guard.rs`),
/// installed next to `tether`. It runs this module only, so each guard process maps and
/// relocates a fraction of what an exec of the whole `tether` binary does.
pub const GUARD_BINARY: &str = "tether-guard";

/// The file name of the executable whose guard [`guard_program`] may replace by
/// [`GUARD_BINARY`]: the two are built and installed together, so they speak the same
/// guard arguments.
const GUARD_BINARY_OWNER: &str = "tether";

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main`, before any other thread starts: if this process was
/// started as a guard, run it and exit; otherwise note that this executable can serve
/// as a guard and return.
pub fn run_if_guard() {
    if let Some(code) = run_from_args() {
        std::process::exit(code);
    }
    INSTALLED.store(true, Ordering::Release);
}

/// The guard's entry: if this process's first argument is [`GUARD_ARG`]
/// (`PROGRAM __tether-guard [--parent PID] [--grace-ms MS] [--log-file FILE --log-max BYTES]
/// [--lease FILE --linger-ms MS] -- BACKEND [ARGS…]`), run the guard to its end and return
/// the code to exit with; `None` when this process was not started as a guard.
///
/// For [`run_if_guard`] and the dedicated guard executable ([`GUARD_BINARY`]), whose
/// `main` is this call alone. Call it before any other thread starts: the guard blocks
/// signals to wait for them, which only holds in a single-threaded process.
pub fn run_from_args() -> Option<i32> {
    let mut args = std::env::args_os();
    let _program = args.next();
    if args.next().as_deref() != Some(std::ffi::OsStr::new(GUARD_ARG)) {
        return None;
    }
    Some(match GuardArgs::parse(args.collect()) {
        Ok(a) => run(a),
        Err(e) => {
            eprintln!("tether guard: {e}");
            2
        }
    })
}

/// The program to run as the guard of a backend when `exe` is the executable that
/// serves as one (`exe __tether-guard …`): the small [`GUARD_BINARY`] when `exe` is the
/// `tether` binary and a `tether-guard` executable sits in the same directory (as
/// `cargo build` and `cargo install` leave them), otherwise `exe` itself. Both take the
/// same arguments, and the guard's command line carries [`GUARD_ARG`] either way.
///
/// Only `tether`'s own sibling is taken: another program that links tether may sit
/// beside a `tether-guard` of a different version (both in `~/.cargo/bin`, say), whose
/// arguments it cannot vouch for; it stays its own guard.
pub fn guard_program(exe: &Path) -> PathBuf {
    let small = match (exe.file_name(), exe.parent()) {
        (Some(name), Some(dir)) if name == GUARD_BINARY_OWNER => dir.join(GUARD_BINARY),
        _ => return exe.to_path_buf(),
    };
    // A regular file (symlinks followed) that someone may execute.
    match std::fs::metadata(&small) {
        Ok(m) if sys::is_executable(&m) => small,
        _ => exe.to_path_buf(),
    }
}

/// Whether [`run_if_guard`] ran in this process, so the current executable can be a guard.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// Make `command` give the program it starts file descriptors 0, 1 and 2 only: every
/// other descriptor this process inherited or opened is marked close-on-exec between
/// fork and exec. For spawning a guard: it must not hold a caller's pipe open (a
/// script waiting for EOF) nor an instance's lock file.
pub fn close_inherited_fds_on_exec(command: &mut Command) {
    sys::only_stdio(command);
}

#[derive(Debug)]
struct GuardArgs {
    parent: Option<i32>,
    grace: Duration,
    log_file: Option<PathBuf>,
    log_max: u64,
    /// A shared backend: stop it once no lease on this file is held, after `linger`.
    lease: Option<(PathBuf, Duration)>,
    program: OsString,
    args: Vec<OsString>,
}

impl GuardArgs {
    fn parse(args: Vec<OsString>) -> Result<Self, String> {
        let mut it = args.into_iter();
        let mut parsed = GuardArgs {
            parent: None,
            grace: Duration::from_secs(5),
            log_file: None,
            log_max: 10 * 1024 * 1024,
            lease: None,
            program: OsString::new(),
            args: Vec::new(),
        };
        let value = |it: &mut std::vec::IntoIter<OsString>, name: &str| {
            it.next().and_then(|v| v.into_string().ok()).ok_or(format!("{name} needs a value"))
        };
        while let Some(arg) = it.next() {
            match arg.to_str() {
                Some("--parent") => {
                    parsed.parent = Some(value(&mut it, "--parent")?.parse().map_err(|e| format!("--parent: {e}"))?)
                }
                Some("--grace-ms") => {
                    parsed.grace = Duration::from_millis(
                        value(&mut it, "--grace-ms")?.parse().map_err(|e| format!("--grace-ms: {e}"))?,
                    )
                }
                Some("--log-file") => parsed.log_file = Some(PathBuf::from(value(&mut it, "--log-file")?)),
                Some("--log-max") => {
                    parsed.log_max = value(&mut it, "--log-max")?.parse().map_err(|e| format!("--log-max: {e}"))?
                }
                Some("--lease") => {
                    let file = PathBuf::from(value(&mut it, "--lease")?);
                    parsed.lease = Some((file, parsed.lease.map_or(Duration::ZERO, |(_, l)| l)));
                }
                Some("--linger-ms") => {
                    let ms: u64 = value(&mut it, "--linger-ms")?.parse().map_err(|e| format!("--linger-ms: {e}"))?;
                    let file = parsed.lease.take().map(|(f, _)| f).ok_or("--linger-ms goes after --lease FILE")?;
                    parsed.lease = Some((file, Duration::from_millis(ms)));
                }
                Some("--") => {
                    parsed.program = it.next().ok_or("no program after --")?;
                    parsed.args = it.collect();
                    return Ok(parsed);
                }
                _ => return Err(format!("unexpected guard argument {arg:?}")),
            }
        }
        Err("no `-- PROGRAM` given".into())
    }
}

fn run(args: GuardArgs) -> i32 {
    // Signals blocked before anything else so that none is lost; the backend gets a
    // clean mask.
    let armed = match sys::guard::arm(args.parent) {
        Ok(a) => a,
        Err(sys::guard::NotArmed::Signals(e)) => {
            eprintln!("tether guard: cannot block signals: {e}");
            return leave_status(args.log_file.as_deref(), 1);
        }
        // The owner is already gone: start nothing.
        Err(sys::guard::NotArmed::OwnerGone) => return 1,
    };

    let mut command = Command::new(&args.program);
    command.args(&args.args).stdin(Stdio::null());
    // Pins everything the backend starts to this run: should the guard die with the
    // owner (both SIGKILLed), what escaped the group is still found by it.
    command.env(crate::marks::LEADER_ENV, procs::ProcessIdentity::current().token());
    if args.log_file.is_some() {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = match armed.spawn(&mut command) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tether guard: cannot start {}: {e}", args.program.to_string_lossy());
            return leave_status(args.log_file.as_deref(), 127);
        }
    };
    let mut log_threads = Vec::new();
    if let Some(path) = &args.log_file {
        let log = Arc::new(Mutex::new(RotatingLog::open(path.clone(), args.log_max)));
        if let Some(out) = child.stdout.take() {
            log_threads.push(copy_to_log(out, Arc::clone(&log)));
        }
        if let Some(err) = child.stderr.take() {
            log_threads.push(copy_to_log(err, Arc::clone(&log)));
        }
    }

    if let Some((file, linger)) = args.lease.clone() {
        // A shared backend: once the last front's lease is gone (and the linger
        // passed with none taken again), stop it as `down` would — by our own SIGTERM,
        // which the loop below handles like any stop.
        std::thread::spawn(move || match crate::lease::wait_unleased(&file, linger) {
            Ok(_unleased) => {
                LEASES_GONE.store(true, Ordering::Release);
                sys::kill_self(Signal::SIGTERM);
            }
            Err(e) => eprintln!("tether guard: leases are not watched ({e}); the backend runs until `down`"),
        });
    }
    let ended = armed.run_to_end(&child, args.grace, signal_all);
    for t in log_threads {
        let _ = t.join();
    }
    if let (true, Some((lease, _))) = (LEASES_GONE.load(Ordering::Acquire), &args.lease) {
        // Nobody will `down` a shared backend that stopped by itself: forget its record
        // (the one beside the lease file), if it is still ours.
        forget_record(&lease.with_extension("json"));
    }
    if let Some(log) = &args.log_file {
        write_status(log, &if ended.killed { "killed".to_string() } else { ended.describe() });
    }
    ended.exit_like()
}

/// A detached guard has no parent to tell how the backend ended (nor how the stop
/// went): it leaves that next to the log ([`status_path`]), for its starter's readiness
/// wait and for `down` ([`reported_exit`]).
fn write_status(log: &Path, how: &str) {
    let status = status_path(log);
    if let Err(e) = open_private(&status, false).and_then(|mut f| f.write_all(how.as_bytes())) {
        eprintln!("tether guard: not writing {}: {e}", status.display());
    }
}

/// A detached guard (one with `log`) that starts no backend says so by `exit CODE` in
/// its status file, as if the backend had ended so; `code`.
fn leave_status(log: Option<&Path>, code: i32) -> i32 {
    if let Some(log) = log {
        write_status(log, &format!("exit {code}"));
    }
    code
}

/// Set by the lease watcher once the last lease is gone and the linger passed.
static LEASES_GONE: AtomicBool = AtomicBool::new(false);

/// Remove the record at `path` if it names this guard as its leader (never through a
/// symlink; a record of a later instance of the same name is left alone).
fn forget_record(path: &std::path::Path) {
    let Ok(mut file) = sys::private::no_follow(OpenOptions::new().read(true)).open(path) else { return };
    let mut text = String::new();
    if file.read_to_string(&mut text).is_err() {
        return;
    }
    let ours = serde_json::from_str::<crate::state::Record>(&text)
        .ok()
        .and_then(|r| r.leader)
        .is_some_and(|l| l == procs::ProcessIdentity::current());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// `sig` to every member of the guard's group and every descendant, through the gate.
fn signal_all(sig: Signal) {
    let mine = std::process::id();
    // Every member of our group and every descendant, but never ourselves: SIGKILL
    // cannot be blocked, and the guard must outlive the backend to reap and report.
    let mut targets = procs::group_members(mine);
    targets.extend(procs::descendants(mine));
    targets.sort_unstable();
    targets.dedup();
    // The gate decides here too: the backend is our direct child, so it and its
    // descendants pass; a stranger that joined the group does not.
    let gate = crate::safety::Gate::new();
    let claim = crate::safety::Claim::instance(std::env::var(crate::marks::INSTANCE_ENV).unwrap_or_default());
    for id in targets.into_iter().filter(|p| *p != mine).filter_map(procs::ProcessIdentity::of) {
        let _ = gate.signal(id, sig, &claim);
    }
}

/// Where a detached guard leaves how the backend ended: `NAME.log.exit`.
pub fn status_path(log_file: &std::path::Path) -> PathBuf {
    let mut p = log_file.as_os_str().to_owned();
    p.push(".exit");
    PathBuf::from(p)
}

/// How the backend of the detached guard logging to `log_file` ended, as the guard left
/// it in its status file ([`status_path`]) before exiting: `exit N` is
/// [`Code`](crate::ExitStatus::Code), `signal N` is [`Signal`](crate::ExitStatus::Signal),
/// and `killed` (the grace ran out) is SIGKILL. `None` when there is no such file (the
/// guard runs, or it could not write it — killed itself, say), or it says something else.
/// Read without following a link planted in the state directory; the file is left.
pub fn reported_exit(log_file: &Path) -> Option<crate::ExitStatus> {
    let mut file = sys::private::no_follow(OpenOptions::new().read(true)).open(status_path(log_file)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let number = |prefix: &str| text.trim().strip_prefix(prefix).and_then(|n| n.trim().parse::<i32>().ok());
    match (text.trim(), number("exit "), number("signal ")) {
        ("killed", _, _) => Some(crate::ExitStatus::Signal(Signal::SIGKILL as i32)),
        (_, Some(code), _) => Some(crate::ExitStatus::Code(code)),
        (_, _, Some(sig)) => Some(crate::ExitStatus::Signal(sig)),
        _ => None,
    }
}

/// The detached instance's log: bounded, with one rotated file (`NAME.log.1`).
struct RotatingLog {
    path: PathBuf,
    max: u64,
    file: Option<File>,
    size: u64,
}

impl RotatingLog {
    fn open(path: PathBuf, max: u64) -> Self {
        let file = match open_private(&path, true) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("tether guard: not logging to {}: {e}", path.display());
                None
            }
        };
        let size = file.as_ref().and_then(|f| f.metadata().ok()).map_or(0, |m| m.len());
        RotatingLog { path, max: max.max(1024), file, size }
    }

    fn write(&mut self, data: &[u8]) {
        if self.size + data.len() as u64 > self.max {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            // rename replaces a link at `.1` itself, never its target.
            let _ = std::fs::rename(&self.path, rotated);
            self.file = match open_private(&self.path, true) {
                Ok(f) => Some(f),
                Err(e) => {
                    eprintln!("tether guard: not logging to {}: {e}", self.path.display());
                    None
                }
            };
            self.size = 0;
        }
        if let Some(f) = &mut self.file
            && f.write_all(data).is_ok()
        {
            self.size += data.len() as u64;
        }
    }
}

/// Open `path` for writing (appending, or truncating) the way a file in the state
/// directory must be: a symlink is not followed (the open fails), a FIFO cannot block
/// the open, and only a regular file of this user with no other hard link is used.
/// Created with mode 0600; an existing file is set to 0600.
pub fn open_private(path: &Path, append: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true);
    sys::private::no_follow(sys::private::only_mine(&mut options));
    if append {
        options.append(true);
    } else {
        options.truncate(true);
    }
    let file = options.open(path).map_err(|e| {
        if sys::private::is_link(&e) {
            std::io::Error::other("it is a symbolic link; refusing to follow it")
        } else {
            e
        }
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() || sys::private::owner(&meta) != sys::current_uid() || !sys::private::single_link(&meta) {
        return Err(std::io::Error::other("it is not a regular file of this user with a single link"));
    }
    sys::private::restrict(&file)?;
    Ok(file)
}

/// The longest line the log keeps whole; a longer one is cut into lines of this size.
const LOG_LINE_MAX: usize = 1 << 20;

/// Copy one stream (stdout or stderr) to the log in whole lines: two streams never splice
/// a line of one into a line of the other, and a rotation falls between lines.
fn copy_to_log(mut from: impl Read + Send + 'static, log: Arc<Mutex<RotatingLog>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut lines = crate::relay::LineSplitter::new(LOG_LINE_MAX);
        let mut batch = Vec::with_capacity(buf.len() + 1024);
        let whole = |line: &[u8], batch: &mut Vec<u8>| {
            batch.extend_from_slice(line);
            batch.push(b'\n');
        };
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    batch.clear();
                    lines.feed(&buf[..n], &mut |line| whole(line, &mut batch));
                    if !batch.is_empty() {
                        log.lock().unwrap_or_else(|p| p.into_inner()).write(&batch);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        batch.clear();
        lines.finish(&mut |line| whole(line, &mut batch));
        if !batch.is_empty() {
            log.lock().unwrap_or_else(|p| p.into_inner()).write(&batch);
        }
    })
}

// Their tests use Unix files and processes directly (symlinks, modes, process groups).
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn parses_guard_arguments() {
        let args: Vec<OsString> =
            ["--parent", "12", "--grace-ms", "250", "--", "prog", "a b", "--x"].iter().map(OsString::from).collect();
        let a = GuardArgs::parse(args).expect("parses");
        assert_eq!(a.parent, Some(12));
        assert_eq!(a.grace, Duration::from_millis(250));
        assert_eq!(a.program, "prog");
        assert_eq!(a.args, vec![OsString::from("a b"), OsString::from("--x")]);
        assert!(GuardArgs::parse(vec![OsString::from("--parent")]).is_err());
        assert!(GuardArgs::parse(vec![]).is_err());
    }

    #[test]
    fn the_small_guard_is_taken_only_beside_tether() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, "").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            p
        };
        let tether = write("tether", 0o755);
        // Alone: tether is its own guard (a `cargo build --bin tether`, a copied binary).
        assert_eq!(guard_program(&tether), tether);
        // Not executable, or a directory: not a guard either.
        let small = write(GUARD_BINARY, 0o644);
        assert_eq!(guard_program(&tether), tether);
        std::fs::set_permissions(&small, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(guard_program(&tether), small);
        // Another program that links tether keeps its own guard, even beside one.
        let other = write("my-app", 0o755);
        assert_eq!(guard_program(&other), other);
        let elsewhere = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(elsewhere.path().join(GUARD_BINARY)).expect("mkdir");
        let lone = elsewhere.path().join("tether");
        assert_eq!(guard_program(&lone), lone);
    }

    #[test]
    fn rotating_log_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        let mut log = RotatingLog::open(path.clone(), 1024);
        for _ in 0..100 {
            log.write(&[b'a'; 100]);
        }
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(len <= 1024, "{len}");
        assert!(dir.path().join("x.log.1").exists());
        for p in [path.clone(), dir.path().join("x.log.1")] {
            let mode = std::fs::metadata(&p).map(|m| m.mode() & 0o777).unwrap_or(0);
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }

    #[test]
    fn log_and_status_never_follow_a_planted_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        std::fs::write(&target, "").expect("write");
        let path = dir.path().join("x.log");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let mut log = RotatingLog::open(path.clone(), 1024);
        log.write(b"secret output\n");
        std::os::unix::fs::symlink(&target, status_path(&path)).expect("symlink");
        assert!(open_private(&status_path(&path), false).is_err());
        assert_eq!(std::fs::read(&target).expect("read").len(), 0, "written through the link");
        // A hard link to a file elsewhere is refused too; an existing 0644 log becomes 0600.
        let hard = dir.path().join("h.log");
        std::fs::hard_link(&target, &hard).expect("hard link");
        assert!(open_private(&hard, true).is_err());
        let old = dir.path().join("old.log");
        std::fs::write(&old, "").expect("write");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        open_private(&old, true).expect("a plain log");
        assert_eq!(std::fs::metadata(&old).expect("stat").mode() & 0o777, 0o600);
    }
}
