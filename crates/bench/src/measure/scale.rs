//! Item 8: 1 → 10 → 100 backends launched at once by this process through the library,
//! each loading for 1 s: time until all are ready, and this process's memory.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use tether::Identity;
use tokio::task::JoinSet;

use crate::error::{BenchError, BenchResult, Context};
use crate::harness::{Harness, first_child, ms, proc_status};
use crate::report::{Row, Target};

/// The backends' own start-to-ready time.
const READY_AFTER: &str = "1s";

/// One round with `n` backends: (ms until all ready, RSS of this process with them
/// running in MB, its growth in MB, summed RSS of the guards and backends in MB).
async fn round(h: &Harness, n: usize) -> BenchResult<(f64, f64, f64, f64)> {
    let before = proc_status("self")?.vm_rss_kb;
    // Distinct ports: two free-port picks in a row may return the same number.
    let mut ports = std::collections::HashSet::new();
    let mut specs = Vec::with_capacity(n);
    while specs.len() < n {
        let spec = h.spec(&["--ready-after", READY_AFTER], Duration::from_secs(5))?;
        if ports.insert(spec.port) {
            specs.push(spec);
        }
    }
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for spec in specs {
        let h = h.clone();
        set.spawn(async move { h.launch(spec).await });
    }
    let mut instances = Vec::with_capacity(n);
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        match joined.ctx("a launch task failed").and_then(|mut l| l.take_instance()) {
            Ok(i) => instances.push(i),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    let all_ready = ms(t0.elapsed());
    let during = proc_status("self")?.vm_rss_kb;
    let mut children_kb = 0;
    for i in &instances {
        if let Identity::Process { leader, .. } = i.identity() {
            let guard = proc_status(&leader.pid.to_string()).map_or(0, |s| s.vm_rss_kb);
            let backend =
                first_child(leader.pid).and_then(|b| proc_status(&b.to_string()).ok()).map_or(0, |s| s.vm_rss_kb);
            children_kb += guard + backend;
        }
    }
    let mut stops = JoinSet::new();
    for i in instances {
        stops.spawn(i.stop());
    }
    while let Some(r) = stops.join_next().await {
        let _ = r;
    }
    if let Some(e) = first_error {
        return Err(BenchError(format!("{n} backends: {e}")));
    }
    let mb = |kb: u64| kb as f64 / 1024.0;
    Ok((all_ready, mb(during), mb(during) - mb(before), mb(children_kb)))
}

/// The reference round: `n` demo backends spawned directly by this process — no guard,
/// no probe, no tether — until each printed its ready line (`--print-ready`): what `n`
/// processes of this binary starting and loading at once cost on this machine.
fn bare_round(h: &Harness, n: usize) -> BenchResult<f64> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut children = Vec::with_capacity(n);
    let t0 = Instant::now();
    let mut waiters = Vec::with_capacity(n);
    for _ in 0..n {
        let mut child = Command::new(&h.exe)
            .args(["demo-backend", "--port", "0", "--ready-after", READY_AFTER, "--print-ready"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ctx("cannot spawn the demo backend")?;
        let out = child.stdout.take().ctx("no stdout pipe")?;
        children.push(child);
        waiters.push(std::thread::spawn(move || {
            BufReader::new(out).lines().map_while(Result::ok).any(|l| l.ends_with(" ready")).then(Instant::now)
        }));
    }
    // The last ready line; `None` once any backend ended without printing one.
    let mut last = Some(t0);
    for w in waiters {
        let ready = w.join().ok().flatten();
        last = last.zip(ready).map(|(a, b)| a.max(b));
    }
    for c in &mut children {
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
    }
    for c in &mut children {
        let _ = c.wait();
    }
    match last {
        Some(t) => Ok(ms(t - t0)),
        None => Err(BenchError(format!("{n} bare backends: one never printed its ready line"))),
    }
}

/// Item 8.
pub async fn scale(h: &Harness, reps: usize) -> BenchResult<Vec<Row>> {
    let mut rows = Vec::new();
    let mut one_median = None;
    for n in [1usize, 10, 100] {
        let reps = if n == 100 { reps.div_ceil(5).max(2) } else { reps.div_ceil(3).max(2) };
        let (mut t, mut rss, mut growth, mut children) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let (a, b, c, d) = round(h, n).await?;
            t.push(a);
            rss.push(b);
            growth.push(c);
            children.push(d);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let time_row = Row::new(8, &format!("{n} backend(s) at once: time until all ready"), "ms", &t, Target::None)
            .note(format!("each loads for {READY_AFTER}; guards: `{}`", h.guard_name()));
        let base = *one_median.get_or_insert(time_row.median);
        rows.push(time_row);
        if n > 1 {
            let ratio: Vec<f64> = t.iter().map(|x| x / base).collect();
            rows.push(Row::new(8, &format!("{n} at once / one backend's median"), "×", &ratio, Target::AtMost(1.2)));
        }
        if n == 100 {
            // The floor, in the same run: the backends alone, started at once (and one).
            let hc = h.clone();
            let (one, all) = tokio::task::spawn_blocking(move || -> BenchResult<(Vec<f64>, Vec<f64>)> {
                let one = (0..reps).map(|_| bare_round(&hc, 1)).collect::<BenchResult<Vec<_>>>()?;
                let all = (0..reps).map(|_| bare_round(&hc, n)).collect::<BenchResult<Vec<_>>>()?;
                Ok((one, all))
            })
            .await
            .ctx("the bare round failed")??;
            let one_median = Row::new(8, "", "ms", &one, Target::None).median;
            let ratio: Vec<f64> = all.iter().map(|x| x / one_median).collect();
            rows.push(
                Row::new(
                    8,
                    "  floor: 100 backends spawned directly, no tether / one, same way",
                    "×",
                    &ratio,
                    Target::None,
                )
                .note("no guard, no probe: until each printed its ready line; the cost of 100 processes starting"),
            );
        }
        let rss_target = if n == 100 { Target::AtMost(25.0) } else { Target::None };
        rows.push(Row::new(8, &format!("{n}: RSS of the supervising (bench) process"), "MB", &rss, rss_target));
        rows.push(Row::new(8, &format!("{n}: its RSS growth over the round"), "MB", &growth, Target::None));
        rows.push(
            Row::new(8, &format!("{n}: RSS of the guards + backends, summed"), "MB", &children, Target::None)
                .note("other processes, for context"),
        );
    }
    Ok(rows)
}
