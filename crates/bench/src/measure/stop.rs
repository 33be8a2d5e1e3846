//! Item 5: stopping a cooperative backend, and one that ignores SIGTERM (grace G).

use std::time::{Duration, Instant};

use tether::StopOutcome;

use crate::error::{BenchResult, Context, fail};
use crate::harness::{Harness, ms};
use crate::report::{Row, Target};

/// The grace period given to the SIGTERM-ignoring backend.
const G: Duration = Duration::from_millis(500);

/// Launch with `flags`, then time `stop`; returns (ms, outcome).
async fn timed_stop(h: &Harness, flags: &[&str], grace: Duration) -> BenchResult<(f64, StopOutcome)> {
    let (instance, _) = h.launch_ready(flags, grace).await?;
    // Let it settle into idle serving first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    let outcome = instance.stop().await.ctx("stop failed")?;
    Ok((ms(t0.elapsed()), outcome))
}

/// Item 5.
pub async fn stop(h: &Harness, reps: usize) -> BenchResult<Vec<Row>> {
    let (mut coop, mut stubborn, mut over) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let (t, outcome) = timed_stop(h, &[], Duration::from_secs(5)).await?;
        if outcome.was_killed() {
            return fail("the cooperative backend had to be killed");
        }
        coop.push(t);
    }
    for _ in 0..reps.div_ceil(2) {
        let (t, outcome) = timed_stop(h, &["--ignore-sigterm"], G).await?;
        if !outcome.was_killed() {
            return fail(format!("the SIGTERM-ignoring backend was not killed: {outcome:?}"));
        }
        stubborn.push(t);
        over.push(t - ms(G));
    }
    Ok(vec![
        Row::new(5, "stop, cooperative backend", "ms", &coop, Target::AtMost(10.0))
            .note("SIGTERM to the group until all are gone"),
        Row::new(5, "stop, SIGTERM-ignoring backend, grace G = 500 ms", "ms", &stubborn, Target::AtMost(550.0)),
        Row::new(5, "stop − G, SIGTERM-ignoring backend", "ms", &over, Target::AtMost(50.0)),
    ])
}
