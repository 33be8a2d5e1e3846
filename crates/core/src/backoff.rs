//! Backoff between probe attempts.

use std::time::Duration;

/// How long to wait between readiness probes: it starts tiny so a fast backend is
/// seen at once, and grows by `factor` up to `max`, so a slow, silent backend costs at
/// most `1 / max` probes a second.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The cap.
    pub max: Duration,
    /// Growth factor per attempt (≥ 1).
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(50), factor: 2.0 }
    }
}

impl Backoff {
    /// With another cap.
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// With another first wait.
    pub fn with_initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// An iterator of waits: `initial`, `initial*factor`, … capped at `max`, forever.
    pub fn iter(&self) -> BackoffIter {
        BackoffIter { next: self.initial.min(self.max), max: self.max, factor: self.factor.max(1.0) }
    }
}

/// The waits of a [`Backoff`]; never ends.
#[derive(Debug, Clone)]
pub struct BackoffIter {
    next: Duration,
    max: Duration,
    factor: f64,
}

impl BackoffIter {
    /// Start over from the first wait (after progress, for instance).
    pub fn reset(&mut self, backoff: &Backoff) {
        *self = backoff.iter();
    }
}

impl Iterator for BackoffIter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = self.next.mul_f64(self.factor).min(self.max);
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_stays() {
        let waits: Vec<_> = Backoff::default().iter().take(10).collect();
        assert_eq!(waits[0], Duration::from_millis(1));
        assert_eq!(waits[1], Duration::from_millis(2));
        assert_eq!(waits[5], Duration::from_millis(32));
        assert_eq!(waits[6], Duration::from_millis(50));
        assert_eq!(waits[9], Duration::from_millis(50));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn silent_backend_costs_at_most_twenty_probes_a_second_after_warmup() {
        // Sum the waits until one second has passed: count how many fit in the next second.
        let mut it = Backoff::default().iter();
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(1) {
            t += it.next().unwrap_or_default();
        }
        let mut n = 0;
        let end = t + Duration::from_secs(1);
        while t < end {
            t += it.next().unwrap_or_default();
            n += 1;
        }
        assert!(n <= 20, "{n} probes in one second");
    }

    #[test]
    fn initial_above_cap_is_capped_and_factor_below_one_is_one() {
        let b = Backoff { initial: Duration::from_secs(5), max: Duration::from_millis(10), factor: 0.5 };
        let waits: Vec<_> = b.iter().take(3).collect();
        assert_eq!(waits, vec![Duration::from_millis(10); 3]);
    }
}
