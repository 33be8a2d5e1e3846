//! Item 8: 1 → 10 → 100 backends launched at once by this process through the library,
//! each loading for 1 s: time until all are ready, and this process's memory.

use std::time::{Duration, Instant};

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
            .note(format!("each loads for {READY_AFTER}"));
        let base = *one_median.get_or_insert(time_row.median);
        rows.push(time_row);
        if n > 1 {
            let ratio: Vec<f64> = t.iter().map(|x| x / base).collect();
            rows.push(Row::new(8, &format!("{n} at once / one backend's median"), "×", &ratio, Target::AtMost(1.2)));
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
