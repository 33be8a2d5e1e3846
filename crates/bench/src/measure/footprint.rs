//! Item 7: the `tether up` process supervising one idle, ready backend — its peak RSS and
//! threads — and the guard's peak RSS (the executable `tether up` really ran as the guard:
//! `tether-guard` beside `tether`, or `tether` itself).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{BenchResult, Context, fail};
use crate::harness::{Harness, first_child, proc_status};
use crate::report::{Row, Target};

/// One reading: (tether up VmHWM MB, its threads, guard VmHWM MB).
struct Reading {
    hwm_mb: f64,
    anon_mb: f64,
    file_mb: f64,
    threads: f64,
    guard_mb: Option<f64>,
    /// The file name of the guard's executable (`/proc/PID/exe`).
    guard_exe: Option<String>,
    backend_mb: Option<f64>,
}

/// SIGTERM `child`, wait up to 10 s, then kill.
fn terminate(child: &mut Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn one(h: &Harness) -> BenchResult<Reading> {
    let state = tempfile::tempdir().ctx("cannot create a state directory")?;
    let exe = h.exe.to_string_lossy().into_owned();
    let mut child = Command::new(&h.exe)
        .args(["up", "--port", "auto", "--name", "bench-footprint", "--", &exe, "demo-backend", "--port", "{port}"])
        .env("TETHER_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ctx("cannot spawn `tether up`")?;
    let reading = (|| {
        let out = child.stdout.take().ctx("no stdout pipe")?;
        let mut lines = BufReader::new(out).lines();
        let ready = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with("ready:"));
        if ready.is_none() {
            return fail("`tether up` ended without printing `ready:`");
        }
        // Idle supervision for a moment, then read.
        std::thread::sleep(Duration::from_millis(500));
        let pid = child.id();
        let st = proc_status(&pid.to_string())?;
        let hwm = |p: u32| proc_status(&p.to_string()).ok().map(|s| s.vm_hwm_kb as f64 / 1024.0);
        let guard = first_child(pid);
        let guard_mb = guard.and_then(hwm);
        let guard_exe = guard
            .and_then(|g| std::fs::read_link(format!("/proc/{g}/exe")).ok())
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let backend_mb = guard.and_then(first_child).and_then(hwm);
        // Keep the pipe open until the readings are taken.
        drop(lines);
        Ok(Reading {
            hwm_mb: st.vm_hwm_kb as f64 / 1024.0,
            anon_mb: st.rss_anon_kb as f64 / 1024.0,
            file_mb: st.rss_file_kb as f64 / 1024.0,
            threads: st.threads as f64,
            guard_mb,
            guard_exe,
            backend_mb,
        })
    })();
    terminate(&mut child);
    reading
}

/// Peak RSS in MB of `program args` run to its exit, as `/usr/bin/time -f %M` reports
/// it (`time` forks the program from its own small process, so the figure is the
/// program's, not inherited from this large one); `None` without GNU time.
fn exec_peak_mb(program: &std::path::Path, args: &[&str]) -> Option<f64> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let kb: f64 = text.lines().last()?.trim().parse().ok()?;
    Some(kb / 1024.0)
}

/// Item 7.
pub async fn footprint(h: &Harness, reps: usize) -> BenchResult<Vec<Row>> {
    let h = h.clone();
    let (readings, floors) = tokio::task::spawn_blocking(move || {
        let readings = (0..reps).map(|_| one(&h)).collect::<BenchResult<Vec<_>>>()?;
        // The floors: this binary exec'd to do nothing (the guard's argument check
        // fails at once: dynamic linking, relocation, Rust's start, one message), the same
        // for the small guard executable when there is one, and a plain C program
        // (/bin/true: the dynamic loader and libc).
        let nothing = |exe: &std::path::Path| {
            (0..reps).filter_map(|_| exec_peak_mb(exe, &[tether_core::guard::GUARD_ARG])).collect::<Vec<_>>()
        };
        let floor = nothing(&h.exe);
        let guard_exe = h.guard_exe();
        let guard_floor = if guard_exe == h.exe { Vec::new() } else { nothing(&guard_exe) };
        let libc = (0..reps).filter_map(|_| exec_peak_mb(std::path::Path::new("/bin/true"), &[])).collect::<Vec<_>>();
        BenchResult::Ok((readings, (floor, guard_floor, libc)))
    })
    .await
    .ctx("the footprint task failed")??;
    let hwm: Vec<f64> = readings.iter().map(|r| r.hwm_mb).collect();
    let threads: Vec<f64> = readings.iter().map(|r| r.threads).collect();
    let guard: Vec<f64> = readings.iter().filter_map(|r| r.guard_mb).collect();
    // The executable the guards really ran as (all readings agree unless the files moved).
    let mut guard_exes: Vec<String> = readings.iter().filter_map(|r| r.guard_exe.clone()).collect();
    guard_exes.sort();
    guard_exes.dedup();
    let guard_note = match guard_exes.as_slice() {
        [one] if one == tether_core::guard::GUARD_BINARY => {
            format!("a separate process: `{one}`, the small guard executable beside `tether`")
        }
        [one] => format!("a separate process: `{one}` itself, exec'd in guard mode"),
        _ => format!("a separate process: {}", guard_exes.join(", ")),
    };
    let backend: Vec<f64> = readings.iter().filter_map(|r| r.backend_mb).collect();
    let mut rows = vec![
        Row::new(7, "`tether up` peak RSS (VmHWM), one ready idle backend", "MB", &hwm, Target::AtMost(6.0))
            .note("read 0.5 s after ready"),
        Row::new(
            7,
            "of which its own memory (RssAnon)",
            "MB",
            &readings.iter().map(|r| r.anon_mb).collect::<Vec<_>>(),
            Target::None,
        )
        .note("heap, stacks, relocated data"),
        Row::new(
            7,
            "of which code pages (RssFile)",
            "MB",
            &readings.iter().map(|r| r.file_mb).collect::<Vec<_>>(),
            Target::None,
        )
        .note("the binary's and libc's pages, shared with every other tether process"),
        Row::new(7, "`tether up` threads", "threads", &threads, Target::None),
        Row::new(7, "its guard process, peak RSS (VmHWM)", "MB", &guard, Target::AtMost(2.0)).note(guard_note),
        Row::new(7, "  next to it: the backend (demo-backend), peak RSS", "MB", &backend, Target::None)
            .note("the same binary too, serving HTTP"),
    ];
    let (floor, guard_floor, libc) = floors;
    if floor.is_empty() {
        rows.push(Row::skipped(7, "floor: an exec of this binary that does nothing", "no /usr/bin/time (GNU time)"));
    } else {
        rows.push(
            Row::new(7, "  floor: an exec of this binary that does nothing, peak RSS", "MB", &floor, Target::None)
                .note("`tether __tether-guard` with no program: exits at once; /usr/bin/time %M"),
        );
        if !guard_floor.is_empty() {
            rows.push(
                Row::new(
                    7,
                    "  floor: an exec of the guard executable that does nothing, peak RSS",
                    "MB",
                    &guard_floor,
                    Target::None,
                )
                .note("`tether-guard __tether-guard` with no program: exits at once; /usr/bin/time %M"),
            );
        }
        rows.push(
            Row::new(7, "  floor of any dynamically linked program: /bin/true, peak RSS", "MB", &libc, Target::None)
                .note("/usr/bin/time %M"),
        );
    }
    Ok(rows)
}
