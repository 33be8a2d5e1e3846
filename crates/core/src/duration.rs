//! Durations as people write them: `500ms`, `2s`, `1.5s`, `2m`, `1h`.

use std::time::Duration;

const DURATION_FORMAT: &str =
    "expected a number with an optional unit ms, s, m or h (e.g. 500ms, 2s, 1.5s, 1m); a plain number means seconds";

/// The longest duration accepted: a year. Longer values would overflow deadlines
/// (`Instant + Duration`) and the guard's millisecond arguments, and mean "never" anyway.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration: `500ms`, `2s`, `1.5s`, `1m`, `1h`, or a plain number of seconds (`3`, `0.25`),
/// at most [`MAX_DURATION`].
///
/// The error says which format is expected, or the maximum.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = parse_unbounded(text)?;
    if d > MAX_DURATION {
        return Err(format!("duration {text:?} is too long: the maximum is 8760h (a year)"));
    }
    Ok(d)
}

fn parse_unbounded(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let bad = || format!("invalid duration {text:?}: {DURATION_FORMAT}");
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim());
    if number.is_empty() || !number.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad());
    }
    let (nanos_per_unit, secs_per_unit): (u64, f64) = match unit {
        "ms" => (1_000_000, 1e-3),
        "" | "s" => (1_000_000_000, 1.0),
        "m" | "min" => (60_000_000_000, 60.0),
        "h" => (3_600_000_000_000, 3600.0),
        _ => return Err(bad()),
    };
    if let Ok(whole) = number.parse::<u64>() {
        // Exact integer arithmetic: `100ms` is exactly Duration::from_millis(100).
        let nanos = u128::from(whole) * u128::from(nanos_per_unit);
        let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
        // The remainder is below 1e9, so it fits in u32.
        let sub = u32::try_from(nanos % 1_000_000_000).map_err(|_| bad())?;
        return Ok(Duration::new(secs, sub));
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(value * secs_per_unit).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_fractions_parse_exactly() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 parsecs").expect_err("unit").contains("500ms"));
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn durations_are_bounded_by_a_year() {
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        for huge in ["18446744073709551615s", "8761h", "100000000000", "31536001", "525601m"] {
            let e = parse_duration(huge).expect_err(huge);
            assert!(e.contains("the maximum is 8760h"), "{huge}: {e}");
        }
    }
}
