//! Items 1–3: readiness detection latency (printing and silent backend) and the probe
//! rate of a silent backend; `launch` / `ensure_running` overhead; early-exit reporting.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether::{Config, EnsureOptions, PortChoice, RunningBackend};
use tether_core::LaunchOptions;
use tokio::sync::broadcast::error::RecvError;

use crate::error::{BenchError, BenchResult, Context, fail};
use crate::harness::{Harness, ms, ms_between, stats, unix_nanos_now};
use crate::report::{Row, Target};

const GRACE: Duration = Duration::from_secs(5);

/// One readiness measurement: latency = tether's "ready" (just after `launch` returns)
/// minus the instant the backend became ready (its `/stats`), in ms; with `--print-ready`
/// also when the backend's `ready` line reached the relay, in ms after that instant.
async fn ready_latency(
    h: &Harness,
    ready_after_ms: u64,
    print: bool,
    extra: &[&str],
) -> BenchResult<(f64, Option<f64>)> {
    let after = format!("{ready_after_ms}ms");
    let mut flags = vec!["--ready-after", after.as_str()];
    flags.extend_from_slice(extra);
    let seen = Arc::new(Mutex::new(None::<u128>));
    let mut opts = LaunchOptions::default();
    if print {
        flags.push("--print-ready");
        let seen = Arc::clone(&seen);
        // A second consumer of the relay, only to timestamp the `ready` line.
        opts = opts.on_started(Arc::new(move |b: &dyn RunningBackend| {
            let mut rx = b.logs().subscribe();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(line) if line.text == "demo-backend ready" => {
                            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(unix_nanos_now());
                            break;
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => break,
                    }
                }
            });
        }));
    }
    let spec = h.spec(&flags, GRACE)?;
    let (instance, l) = h.launch_ready_with(spec, opts).await?;
    let st = stats(l.port).await?;
    instance.stop().await.ctx("cannot stop the backend")?;
    let ready_at = st.ready_at_unix_nanos.ctx("the backend says it is not ready yet")?;
    let relayed = *seen.lock().unwrap_or_else(|p| p.into_inner());
    Ok((ms_between(ready_at, l.returned_unix_nanos), relayed.map(|t| ms_between(ready_at, t))))
}

/// Probes per second reaching a backend that loads for 3 s (silent, or logging each
/// request with `extra = ["--access-log"]`), between 1.0 s and 2.9 s after `launch`.
async fn probe_rate(h: &Harness, extra: &[&str]) -> BenchResult<f64> {
    let mut flags = vec!["--ready-after", "3s"];
    flags.extend_from_slice(extra);
    let spec = h.spec(&flags, GRACE)?;
    let port = spec.port;
    let t0 = Instant::now();
    let sampler = async move {
        tokio::time::sleep_until((t0 + Duration::from_millis(1000)).into()).await;
        let (a, ta) = (stats(port).await?, Instant::now());
        tokio::time::sleep_until((t0 + Duration::from_millis(2900)).into()).await;
        let (b, tb) = (stats(port).await?, Instant::now());
        Ok::<f64, BenchError>((b.health_requests - a.health_requests) as f64 / (tb - ta).as_secs_f64())
    };
    let (mut launched, rate) = tokio::join!(h.launch(spec), sampler);
    let instance = launched.take_instance()?;
    instance.stop().await.ctx("cannot stop the backend")?;
    rate
}

/// Item 1. The ready instant is spread over one backoff period (300–349 ms) so that
/// the silent case samples every phase of the probe schedule, not one lucky or unlucky one.
pub async fn readiness(h: &Harness, reps: usize) -> BenchResult<Vec<Row>> {
    let (mut printed, mut line_at, mut silent, mut rate) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut logged, mut logged_rate) = (Vec::new(), Vec::new());
    let access = ["--access-log"];
    for i in 0..reps {
        let after = 300 + (i * 50 / reps) as u64;
        let (latency, relayed) = ready_latency(h, after, true, &[]).await?;
        printed.push(latency);
        line_at.extend(relayed);
        silent.push(ready_latency(h, after, false, &[]).await?.0);
        logged.push(ready_latency(h, after, true, &access).await?.0);
    }
    for _ in 0..reps.div_ceil(4).max(2) {
        rate.push(probe_rate(h, &[]).await?);
        logged_rate.push(probe_rate(h, &access).await?);
    }
    Ok(vec![
        Row::new(1, "readiness latency, backend prints a line when ready", "ms", &printed, Target::AtMost(2.0))
            .note("ready-after 300–349ms --print-ready"),
        Row::new(1, "  of which: ready instant → its line reached the relay", "ms", &line_at, Target::None)
            .note("the demo's own timer and pipe; not tether"),
        Row::new(1, "readiness latency, silent backend", "ms", &silent, Target::AtMost(30.0))
            .note("ready-after 300–349ms, no output at ready"),
        Row::new(1, "probes/s to a silent backend after its first second", "probes/s", &rate, Target::AtMost(20.0))
            .note("ready-after 3s; /health hits counted by the backend from 1.0 s to 2.9 s"),
        Row::new(
            1,
            "readiness latency, backend logs every request (uvicorn-style) and prints when ready",
            "ms",
            &logged,
            Target::AtMost(2.0),
        )
        .note("ready-after 300–349ms --access-log --print-ready"),
        Row::new(
            1,
            "probes/s to a backend that logs every request, after its first second",
            "probes/s",
            &logged_rate,
            Target::AtMost(20.0),
        )
        .note("ready-after 3s --access-log; its access lines for our probes trigger nothing"),
    ])
}

/// The start time of the demo backend itself: spawn `tether demo-backend --port 0` and
/// read its `listening` line (no tether in between), in ms.
fn direct_start(h: &Harness) -> BenchResult<f64> {
    let t0 = Instant::now();
    let mut child = Command::new(&h.exe)
        .args(["demo-backend", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ctx("cannot spawn the demo backend")?;
    let out = child.stdout.take().ctx("no stdout pipe")?;
    let mut line = String::new();
    let read = BufReader::new(out).read_line(&mut line);
    let elapsed = t0.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    read.ctx("cannot read the demo backend's output")?;
    if !line.contains("listening on") {
        return fail(format!("unexpected first line {line:?}"));
    }
    Ok(ms(elapsed))
}

/// One `ensure_running` of a demo backend that is ready as it listens; overhead in ms.
async fn ensure_overhead(h: &Harness, state_dir: &std::path::Path, i: usize) -> BenchResult<f64> {
    let mut config = Config::default();
    config.name = Some(format!("bench-ensure-{i}"));
    config.port = Some(PortChoice::Auto);
    config.preset = Some("claude-skills".into());
    config.args = vec![h.exe.to_string_lossy().into_owned(), "demo-backend".into(), "--port".into(), "{port}".into()];
    let plan = config.plan().map_err(|e| BenchError(format!("bad plan: {}", e.chain())))?;
    let t0 = Instant::now();
    let handle = tether::ensure_running(plan, EnsureOptions::default().with_state_dir(state_dir))
        .await
        .map_err(|e| BenchError(format!("ensure_running failed: {}", e.chain())))?;
    let wall = t0.elapsed();
    let st = stats(handle.record().port).await?;
    handle.stop().await.ctx("cannot stop the backend")?;
    let own = st.ready_at_unix_nanos.map_or(0.0, |r| ms_between(st.started_at_unix_nanos, r));
    Ok(ms(wall) - own)
}

/// Item 2.
pub async fn overhead(h: &Harness, reps: usize) -> BenchResult<Vec<Row>> {
    let state = tempfile::tempdir().ctx("cannot create a state directory")?;
    let (mut direct, mut launched, mut ensured) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..reps {
        direct.push(direct_start(h)?);
        let (instance, l) = h.launch_ready(&[], GRACE).await?;
        let st = stats(l.port).await?;
        instance.stop().await.ctx("cannot stop the backend")?;
        let own = st.ready_at_unix_nanos.map_or(0.0, |r| ms_between(st.started_at_unix_nanos, r));
        launched.push(ms(l.wall()) - own);
        ensured.push(ensure_overhead(h, state.path(), i).await?);
    }
    Ok(vec![
        Row::new(2, "baseline: spawn demo-backend directly until its listening line", "ms", &direct, Target::None)
            .note("no tether; process start of the backend itself"),
        Row::new(2, "`launch` overhead over the backend's own start-to-ready", "ms", &launched, Target::AtMost(20.0))
            .note("ready as it listens; guard + spawn + exec + first probes"),
        Row::new(
            2,
            "`ensure_running` overhead over the backend's own start-to-ready",
            "ms",
            &ensured,
            Target::AtMost(20.0),
        )
        .note("+ state file, lock, record; guard = this binary"),
    ])
}

/// Item 3: a backend that exits at 0.2 s, never ready.
pub async fn early_exit(h: &Harness, reps: usize) -> BenchResult<Vec<Row>> {
    let (mut from_spawn, mut from_exit) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let spec = h.spec(&["--ready-after", "60s", "--exit-after", "200ms"], GRACE)?;
        let port = spec.port;
        // Learn the backend's own start instant while it lives.
        let started = async move {
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                if let Ok(st) = stats(port).await {
                    return Some(st.started_at_unix_nanos);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            None
        };
        let (l, started) = tokio::join!(h.launch(spec), started);
        match &l.result {
            Err(tether_core::Error::EarlyExit { .. }) => {}
            Err(e) => return fail(format!("expected an early exit, got: {}", e.chain())),
            Ok(_) => return fail("expected an early exit, the backend became ready"),
        }
        from_spawn.push(ms(l.wall()) - 200.0);
        if let Some(s) = started {
            from_exit.push(ms_between(s + 200_000_000, l.returned_unix_nanos));
        }
    }
    Ok(vec![
        Row::new(
            3,
            "early exit at 0.2 s: `launch` error after spawn, minus 200 ms",
            "ms",
            &from_spawn,
            Target::AtMost(50.0),
        )
        .note("includes the backend's own process start"),
        Row::new(3, "early exit: `launch` error after the backend's exit instant", "ms", &from_exit, Target::None)
            .note("exit instant = its started_at + 200 ms"),
    ])
}
