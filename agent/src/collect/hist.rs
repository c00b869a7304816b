//! Percentiles from the kernel's log2 histograms.

use mountscope_common::{HIST_BUCKETS, snapshot::Latency};

/// Lower and upper edge of bucket `b` in nanoseconds: bucket 0 holds 0, bucket `b` holds
/// `[2^(b-1), 2^b)`.
fn bucket_range(b: usize) -> (f64, f64) {
    if b == 0 {
        (0.0, 0.0)
    } else {
        let low = (1u64 << (b - 1)) as f64;
        (low, low * 2.0)
    }
}

/// The value below which a share `q` (0 to 1) of the samples fall, interpolated linearly
/// inside its power-of-two bucket, so it is exact only to within that bucket.
pub fn quantile(buckets: &[u64; HIST_BUCKETS], q: f64) -> u64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = q * total as f64;
    let mut seen = 0.0;
    for (b, &count) in buckets.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let next = seen + count as f64;
        if next >= rank {
            let (low, high) = bucket_range(b);
            let within = ((rank - seen) / count as f64).clamp(0.0, 1.0);
            return (low + (high - low) * within) as u64;
        }
        seen = next;
    }
    bucket_range(HIST_BUCKETS - 1).1 as u64
}

/// Upper edge of the highest non-empty bucket, or 0.
pub fn highest_edge(buckets: &[u64; HIST_BUCKETS]) -> u64 {
    buckets
        .iter()
        .rposition(|&c| c > 0)
        .map_or(0, |b| bucket_range(b).1 as u64)
}

/// Latency figures of one histogram; `max_ns` and `mean_ns` come from exact counters and
/// cap the percentiles, which the bucket interpolation could otherwise push above the max.
pub fn latency(buckets: &[u64; HIST_BUCKETS], max_ns: u64, mean_ns: u64) -> Latency {
    let cap = |v: u64| if max_ns > 0 { v.min(max_ns) } else { v };
    Latency {
        p50_ns: cap(quantile(buckets, 0.50)),
        p90_ns: cap(quantile(buckets, 0.90)),
        p99_ns: cap(quantile(buckets, 0.99)),
        max_ns,
        mean_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(entries: &[(usize, u64)]) -> [u64; HIST_BUCKETS] {
        let mut buckets = [0; HIST_BUCKETS];
        for &(b, c) in entries {
            buckets[b] = c;
        }
        buckets
    }

    #[test]
    fn empty_histogram_is_zero() {
        assert_eq!(quantile(&[0; HIST_BUCKETS], 0.5), 0);
    }

    #[test]
    fn median_inside_its_bucket() {
        // 100 values in [1024, 2048).
        let p50 = quantile(&with(&[(11, 100)]), 0.5);
        assert!((1024..2048).contains(&p50), "{p50}");
    }

    #[test]
    fn p99_reaches_the_tail_bucket() {
        let buckets = with(&[(11, 98), (20, 2)]);
        assert!(quantile(&buckets, 0.99) >= 1 << 19);
    }

    #[test]
    fn percentiles_capped_by_max() {
        let lat = latency(&with(&[(11, 10)]), 1100, 1050);
        assert!(lat.p99_ns <= 1100, "{lat:?}");
    }

    #[test]
    fn highest_edge_of_tail() {
        assert_eq!(highest_edge(&with(&[(3, 1), (5, 1)])), 32);
    }
}
