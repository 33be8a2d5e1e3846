//! `status`, `down`, `logs`, `port`: looking at and stopping recorded instances.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};
use tether::core::port;
use tether::core::procs::ProcessIdentity;
use tether::core::state::{Record, StateDir};
use tether::{Error, StopOutcome};

use crate::cli::{LogsArgs, NameArgs, PortArgs};
use crate::output::{json_line, report_error};

fn state_dir(json: bool) -> Result<StateDir, i32> {
    StateDir::from_env().map_err(|e| report_error(&e, json))
}

async fn answering(r: &Record) -> bool {
    let connect = tokio::net::TcpStream::connect((r.host.as_str(), r.port));
    if !matches!(tokio::time::timeout(Duration::from_secs(1), connect).await, Ok(Ok(_))) {
        return false;
    }
    // A process instance answers only through its own listener (as `up` decides "ready"):
    // a record is a claim, and its port may be any neighbour's, another user's among them.
    // A container's port is the engine's proxy, a remote backend someone else's: the
    // connection is all there is to see.
    if !r.kept_by_runner() && r.leader.is_some() {
        return tether::core::port::held_by_instance(r.port, &r.name);
    }
    true
}

/// The live processes of a record whose owner (or detached leader) is gone: what a
/// `kill -9` of the whole tether tree leaves behind — a grandchild that stayed in the
/// group, and what left it (a `setsid` grandchild, uv's Python's worker), found by the
/// dead guard's identity in its environment (`TETHER_LEADER`). The group is the
/// recorded leader's pid, not the record's `pgid` (a record is a claim), still ours
/// only while no other process holds that pid; and a process counts only if the safety
/// gate finds the instance's fingerprint on it or an ancestor.
fn orphans(r: &Record) -> Vec<u32> {
    let mut pids: Vec<u32> = tether::core::process::recorded_survivors(r).into_iter().map(|id| id.pid).collect();
    pids.sort_unstable();
    pids
}

/// How a record stands: `alive` (its owner, leader or container runs), `answering`
/// (its port accepts connections), `orphans` (live members of its group, when it is
/// not alive).
fn describe(r: &Record, alive: bool, answering: bool, orphans: &[u32], attached: usize) -> Value {
    let state = match (alive, answering) {
        (true, true) => "ready",
        (true, false) => "not_answering",
        (false, _) if !orphans.is_empty() => "orphaned",
        (false, _) => "dead",
    };
    let note = (state == "orphaned").then(|| {
        let how = if answering { format!("still answering on {}", r.port) } else { "still running".to_string() };
        format!("orphaned, {how} — `tether down --name {}` stops it", r.name)
    });
    let mut pids = r.leader.map_or((None, None), |l| tether::core::procs::backend_and_guard(l.pid));
    // A shared container's guard is its lease-mode guard, shown while it lives.
    if pids.1.is_none() {
        pids.1 = r.lease_guard.filter(ProcessIdentity::is_alive).map(|g| g.pid);
    }
    json!({
        "name": r.name, "state": state, "runner": r.runner, "detached": r.detached,
        "pid": pids.0, "guard_pid": pids.1,
        "pgid": r.pgid, "container_id": r.runner_field("container_id"),
        "owner_pid": r.owner.map(|o| o.pid), "port": r.port, "url": r.url,
        "health": if answering { "answering" } else { "not answering" },
        "fingerprint": r.fingerprint, "tool_version": r.tool_version,
        "started_at_unix_ms": r.started_at_unix_ms, "log_file": r.log_file, "restarts": r.restarts,
        "orphans": orphans, "note": note, "attached": attached,
    })
}

pub async fn status(args: NameArgs) -> i32 {
    let state = match state_dir(args.json) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let records = match &args.name {
        Some(n) => match state.load(n) {
            Ok(Some(r)) => vec![r],
            Ok(None) => return report_error(&Error::NotFound { name: n.clone() }, args.json),
            Err(e) => return report_error(&e, args.json),
        },
        None => match state.list() {
            Ok(v) => v,
            Err(e) => return report_error(&e, args.json),
        },
    };
    if records.is_empty() && !args.json {
        println!("no instances recorded in {}", state.path().display());
    }
    // The NAME column fits the longest name (a shared proxy's is its key and a digest).
    let width = records.iter().map(|r| r.name.chars().count()).max().unwrap_or(0).max(16);
    let mut table = Vec::new();
    // `--json`: with `--name`, that instance's object; without, one array, always
    // (`[]` when nothing is recorded).
    let mut all = Vec::new();
    for r in &records {
        let runner = tether::reclaim_of(r).ok();
        let alive = match runner.as_ref() {
            Some(runner) => runner.recorded_running(r).await.unwrap_or_else(|| r.owner_alive()),
            None => r.owner_alive(),
        };
        let orphans = if alive { Vec::new() } else { orphans(r) };
        let up = (alive || !orphans.is_empty()) && answering(r).await;
        // Fronts holding a lease on a shared instance (one per host window).
        let attached = tether::core::lease::holders(&state.lease_path(&r.name));
        let v = describe(r, alive, up, &orphans, attached);
        if args.json {
            all.push(v);
        } else {
            let pid = |key: &str| v[key].as_u64().map_or("-".to_string(), |p| p.to_string());
            table.push(format!(
                "{:<width$} {:<14} {:<8} {:<8} {:<26} {}{}",
                r.name,
                v["state"].as_str().unwrap_or("?"),
                pid("pid"),
                pid("guard_pid"),
                r.url,
                match (r.detached, attached) {
                    (false, _) => "foreground".to_string(),
                    (true, 0) => "detached".to_string(),
                    (true, n) => format!("shared by {n}"),
                },
                r.tool_version.as_ref().map(|v| format!(", {v}")).unwrap_or_default(),
            ));
            if let Some(note) = v["note"].as_str() {
                table.push(format!(
                    "  {note} (pids {})",
                    orphans.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    if !table.is_empty() {
        println!("{:<width$} {:<14} {:<8} {:<8} {:<26} MODE", "NAME", "STATE", "PID", "GUARD", "URL");
        for line in table {
            println!("{line}");
        }
    }
    if args.json {
        match (&args.name, all.pop()) {
            (Some(_), Some(one)) => json_line(&one),
            (_, last) => {
                all.extend(last);
                json_line(&Value::Array(all));
            }
        }
    }
    0
}

pub async fn down(args: NameArgs) -> i32 {
    let state = match state_dir(args.json) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let name = args.name.unwrap_or_else(|| "default".into());
    match tether::down_report(&state, &name).await {
        Ok(done) => {
            let how = done.outcome;
            if args.json {
                json_line(&json!({
                    "state": "stopped", "name": name, "killed": how.was_killed(),
                    "was_running": done.was_running,
                    "orphans": done.orphans.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
                }));
            } else if !done.was_running {
                println!("'{name}' was not running (nothing to stop); its record is removed");
            } else {
                match how {
                    StopOutcome::Killed => println!("stopped '{name}' (killed after the grace period)"),
                    StopOutcome::Terminated { .. } => println!("stopped '{name}'"),
                }
                if !done.orphans.is_empty() {
                    println!("  its owner and guard were gone; stopped what they left:");
                    for (pid, command) in &done.orphans {
                        println!("  pid {pid} `{command}`");
                    }
                }
            }
            0
        }
        Err(e) => report_error(&e, args.json),
    }
}

pub async fn logs(args: LogsArgs) -> i32 {
    let state = match state_dir(false) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let record = match state.load(&args.name) {
        Ok(Some(r)) => r,
        Ok(None) => return report_error(&Error::NotFound { name: args.name.clone() }, false),
        Err(e) => return report_error(&e, false),
    };
    // A runner that keeps the output itself (a container's engine) writes it.
    let runner = match tether::reclaim_of(&record) {
        Ok(r) => r,
        Err(e) => return report_error(&e, false),
    };
    let mut out = std::io::stdout();
    match runner.recorded_logs(&record, args.follow, &mut out).await {
        Ok(true) => return 0,
        Ok(false) => {}
        Err(e) => return report_error(&e, false),
    }
    let Some(path) = record.log_file.clone() else {
        let owner = record.owner.map_or("?".to_string(), |o| o.pid.to_string());
        let e = Error::config(format!(
            "instance '{}' runs in the foreground of pid {owner}: its output goes to that terminal; only detached instances keep a log file",
            record.name
        ));
        return report_error(&e, false);
    };
    // A record is a claim, for reads too: only the log tether itself writes for this name,
    // in the state directory, is read (never `/etc/shadow` because a record says so).
    let ours = state.log_path(&record.name);
    if path != ours {
        let e = Error::config(format!(
            "the record of '{}' names the log file {}, which is not tether's ({}); refusing to read it \
             (a record is a claim: remove it with `tether down --name {}` if it is stale)",
            record.name,
            path.display(),
            ours.display(),
            record.name
        ));
        return report_error(&e, false);
    }
    let mut file = match open_log(&path) {
        Ok(f) => f,
        Err(e) => return report_error(&Error::io(format!("cannot open log file {}", path.display()), e), false),
    };
    let mut lines = LogLines { raw: args.raw, partial: Vec::new() };
    loop {
        let read = lines.copy(&mut file);
        if !args.follow || !record.owner_alive() {
            lines.end();
            return 0;
        }
        // Rotation (`NAME.log` renamed to `NAME.log.1`, a new one begun): the file we hold
        // is still the old one; read what was written to it up to the rename, then the
        // rotated file if it is another (it rotated twice since), then the new file.
        if let Some((new, middle)) = rotated(&path, &file) {
            lines.copy(&mut file);
            lines.end();
            if let Some(mut middle) = middle {
                lines.note("the log rotated more than once since the last read: lines may be missing here");
                lines.copy(&mut middle);
                lines.end();
            }
            file = new;
            continue;
        }
        // Busy: read again at once; idle: wait a little.
        if read > 0 {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return 0,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// `logs` output: whole lines, each shown safe for this terminal unless `--raw`; a line
/// never continues from one file into another.
struct LogLines {
    raw: bool,
    partial: Vec<u8>,
}

impl LogLines {
    /// Print what `file` holds past its position; the number of bytes read.
    fn copy(&mut self, file: &mut std::fs::File) -> usize {
        let mut buf = Vec::new();
        if file.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return 0;
        }
        let mut out = std::io::stdout().lock();
        // Printable ASCII, tabs and newlines only (the common case): nothing to neutralise.
        let plain = |b: &u8| matches!(*b, b' '..=b'~' | b'\n' | b'\t');
        if self.raw || (self.partial.is_empty() && buf.ends_with(b"\n") && buf.iter().all(plain)) {
            let _ = out.write_all(&buf);
        } else {
            self.partial.extend_from_slice(&buf);
            let upto = self.partial.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            // One write for all of it (stdout is line-buffered: a write per line is a
            // system call per line, too slow to follow a fast backend).
            let mut shown = Vec::with_capacity(upto + upto / 8);
            for line in self.partial[..upto].split_inclusive(|b| *b == b'\n') {
                let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line));
                shown.extend_from_slice(crate::output::shown(&text, crate::output::Which::Stdout).as_bytes());
                shown.push(b'\n');
            }
            let _ = out.write_all(&shown);
            self.partial.drain(..upto);
        }
        let _ = out.flush();
        buf.len()
    }

    /// The end of a file: its last line, unfinished, is printed as one.
    fn end(&mut self) {
        if !self.partial.is_empty() {
            let text = String::from_utf8_lossy(&self.partial).into_owned();
            let _ = writeln!(std::io::stdout(), "{}", crate::output::shown(&text, crate::output::Which::Stdout));
            self.partial.clear();
        }
    }

    /// A line of tether's own among the output.
    fn note(&mut self, text: &str) {
        let _ = writeln!(std::io::stdout(), "[tether: {text}]");
    }
}

/// The log file now at `path`, when it is another than `held` (it was rotated), and the
/// rotated file `path.1` when it is neither (the log rotated more than once since): the
/// files to read after `held`, in order. `.1` is opened first, so that it is older than
/// the current file.
fn rotated(path: &std::path::Path, held: &std::fs::File) -> Option<(std::fs::File, Option<std::fs::File>)> {
    let mut previous = path.as_os_str().to_owned();
    previous.push(".1");
    let middle = open_log(std::path::Path::new(&previous)).ok();
    let now = open_log(path).ok()?;
    if same_file(&now, held) {
        return None;
    }
    let middle = middle.filter(|m| !same_file(m, held) && !same_file(m, &now));
    Some((now, middle))
}

fn same_file(a: &std::fs::File, b: &std::fs::File) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => tether_core::sys::private::same_file(&a, &b),
        _ => false,
    }
}

/// Open a detached instance's log for reading without following a symlink planted
/// in its place (nor blocking on a FIFO): only a regular file is read.
fn open_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use tether_core::sys::{self, private};
    let file = private::no_follow(std::fs::OpenOptions::new().read(true)).open(path).map_err(|e| {
        if private::is_link(&e) { std::io::Error::other("it is a symbolic link; refusing to follow it") } else { e }
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    if private::owner(&meta) != sys::current_uid() {
        return Err(std::io::Error::other(format!("it belongs to uid {}, not to this user", private::owner(&meta))));
    }
    Ok(file)
}

pub async fn port(args: PortArgs) -> i32 {
    let holders = match port::holders(args.port) {
        Ok(h) => h,
        Err(e) => return report_error(&e, args.json),
    };
    if args.json {
        json_line(&json!({"port": args.port, "holders": holders}));
    } else if holders.is_empty() {
        println!("nothing listens on port {}", args.port);
    } else {
        for h in &holders {
            println!(
                "pid {:<8} user {:<10} {} {}",
                h.pid,
                h.user.as_deref().unwrap_or("?"),
                if h.ours { format!("ours ({})", h.instance.as_deref().unwrap_or("?")) } else { "NOT ours".into() },
                h.command
            );
        }
    }
    0
}
