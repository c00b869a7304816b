//! Human-readable figures: durations in ns/µs/ms/s, rates, shares and uptime.

/// Formats nanoseconds with the largest unit that keeps the value at 1 or more, e.g.
/// `850ns`, `4.1µs`, `65µs`, `1.2ms`, `3.4s`. No space before the unit, so table columns stay
/// narrow at 80 columns.
pub fn duration_ns(ns: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "µs")];

    for (scale, unit) in UNITS {
        if ns >= scale {
            return format!("{}{unit}", significant(ns as f64 / scale as f64));
        }
    }
    format!("{ns}ns")
}

/// Formats a latency figure, or `-` when there were no samples.
pub fn latency_ns(ns: u64, samples: u64) -> String {
    if samples == 0 {
        return "-".to_string();
    }
    duration_ns(ns)
}

/// Formats a rate per second: one decimal below 100, `k` above 10 000.
pub fn rate(per_s: f64) -> String {
    if per_s >= 10_000.0 {
        return format!("{}k", significant(per_s / 1000.0));
    }
    if per_s >= 100.0 {
        return format!("{per_s:.0}");
    }
    format!("{per_s:.1}")
}

/// Formats a ratio such as B/A, or `-` when it is undefined.
pub fn ratio(numerator: f64, denominator: f64) -> String {
    if denominator == 0.0 || !numerator.is_finite() || !denominator.is_finite() {
        return "-".to_string();
    }
    format!("{:.2}", numerator / denominator)
}

/// Formats a share between 0 and 1 as a percentage.
pub fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// Formats an uptime as `45s`, `2m05s`, `1h02m03s` or `3d04h`.
pub fn uptime_ms(ms: u64) -> String {
    let s = ms / 1000;
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);

    if days > 0 {
        format!("{days}d{hours:02}h")
    } else if hours > 0 {
        format!("{hours}h{minutes:02}m{seconds:02}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds:02}s")
    } else {
        format!("{seconds}s")
    }
}

/// Formats with one decimal below 10 and none above.
fn significant(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_picks_unit() {
        assert_eq!(duration_ns(850), "850ns");
        assert_eq!(duration_ns(4_100), "4.1µs");
        assert_eq!(duration_ns(65_000), "65µs");
        assert_eq!(duration_ns(1_200_000), "1.2ms");
        assert_eq!(duration_ns(3_400_000_000), "3.4s");
    }

    #[test]
    fn latency_without_samples_is_dash() {
        assert_eq!(latency_ns(4_100, 0), "-");
    }

    #[test]
    fn rate_uses_k_above_ten_thousand() {
        assert_eq!(rate(12_345.0), "12k");
    }

    #[test]
    fn ratio_of_zero_denominator_is_dash() {
        assert_eq!(ratio(1.0, 0.0), "-");
    }

    #[test]
    fn uptime_shows_hours() {
        assert_eq!(uptime_ms(3_723_000), "1h02m03s");
    }

    #[test]
    fn uptime_shows_days() {
        assert_eq!(uptime_ms(273_600_000), "3d04h");
    }
}
