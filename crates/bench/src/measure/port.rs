//! Item 6: who listens on a port — tether's lookup (`sock_diag`/`/proc`) vs `lsof -ti :PORT`,
//! with the machine's normal process count and with 500 extra idle processes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{BenchResult, Context, fail};
use crate::harness::{Harness, ms};
use crate::report::{Row, Target};

/// Idle `sleep 600` children, killed and reaped on drop.
struct Sleepers(Vec<Child>);

impl Sleepers {
    fn spawn(n: usize) -> BenchResult<Sleepers> {
        let mut s = Sleepers(Vec::with_capacity(n));
        for _ in 0..n {
            let child = Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ctx("cannot spawn `sleep 600`")?;
            s.0.push(child);
        }
        Ok(s)
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// `lsof -ti :PORT`, timed; `None` when lsof is not installed.
fn lsof(port: u16) -> BenchResult<Option<(f64, String)>> {
    let t0 = Instant::now();
    let out = match Command::new("lsof").args(["-ti", &format!(":{port}")]).stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return fail(format!("cannot run lsof: {e}")),
    };
    Ok(Some((ms(t0.elapsed()), String::from_utf8_lossy(&out.stdout).into_owned())))
}

/// Paired samples (tether ms, lsof ms) for `port`.
fn sample(port: u16, reps: usize) -> BenchResult<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let (mut ours, mut theirs, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let t0 = Instant::now();
        let holders = tether_core::port::holders(port).map_err(|e| crate::error::BenchError(e.chain()))?;
        let t = ms(t0.elapsed());
        if holders.is_empty() {
            return fail(format!("tether found no holder of port {port}"));
        }
        ours.push(t);
        if let Some((l, pids)) = lsof(port)? {
            if !pids.contains(&holders[0].pid.to_string()) {
                return fail(format!("lsof does not list pid {} for port {port}: {pids:?}", holders[0].pid));
            }
            theirs.push(l);
            ratio.push(t / l);
        }
    }
    Ok((ours, theirs, ratio))
}

/// Item 6.
pub async fn port_lookup(h: &Harness, reps: usize) -> BenchResult<Vec<Row>> {
    let (instance, l) = h.launch_ready(&[], Duration::from_secs(5)).await?;
    let port = l.port;
    let normal = crate::process_count();
    let first = sample(port, reps);
    let extra = Sleepers::spawn(500);
    let loaded = crate::process_count();
    let second = extra.and_then(|_guard| sample(port, reps));
    instance.stop().await.ctx("cannot stop the backend")?;
    let (first, second) = (first?, second?);
    let have_lsof = !first.1.is_empty();
    let mut rows = Vec::new();
    for (label, procs, (ours, theirs, ratio)) in [("", normal, first), (" +500 idle", loaded, second)] {
        let note = format!("{procs} processes");
        rows.push(Row::new(6, &format!("port holder lookup, tether{label}"), "ms", &ours, Target::None).note(&note));
        if have_lsof {
            rows.push(
                Row::new(6, &format!("port holder lookup, `lsof -ti :PORT`{label}"), "ms", &theirs, Target::None)
                    .note(&note),
            );
            rows.push(
                Row::new(6, &format!("tether / lsof{label}"), "×", &ratio, Target::AtMost(0.1))
                    .note("paired per repetition"),
            );
        } else {
            rows.push(Row::skipped(
                6,
                &format!("port holder lookup, `lsof -ti :PORT`{label}"),
                "lsof not installed: apt-get install -y lsof",
            ));
        }
    }
    Ok(rows)
}
