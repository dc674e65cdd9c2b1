//! Summaries of repeated timings, as optimum-benchmark reports them (numpy's defaults:
//! population standard deviation, percentiles by linear interpolation between ranks).

/// Count, total, mean, spread and percentiles of a list of values.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    pub count: usize,
    pub total: f64,
    pub mean: f64,
    /// Population standard deviation (numpy's `std`, `ddof=0`); 0 for fewer than 2 values.
    pub stdev: f64,
    pub min: f64,
    pub max: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Summary {
    /// The summary of `values`; all zero for an empty list.
    pub fn of(values: &[f64]) -> Summary {
        let count = values.len();
        if count == 0 {
            return Summary {
                count: 0,
                total: 0.0,
                mean: 0.0,
                stdev: 0.0,
                min: 0.0,
                max: 0.0,
                p10: 0.0,
                p50: 0.0,
                p90: 0.0,
                p95: 0.0,
                p99: 0.0,
            };
        }
        let total: f64 = values.iter().sum();
        let mean = total / count as f64;
        let stdev = if count < 2 {
            0.0
        } else {
            (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / count as f64).sqrt()
        };
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Summary {
            count,
            total,
            mean,
            stdev,
            min: sorted[0],
            max: sorted[count - 1],
            p10: percentile(&sorted, 10.0),
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p95: percentile(&sorted, 95.0),
            p99: percentile(&sorted, 99.0),
        }
    }
}

/// The `p`-th percentile (0..=100) of `sorted` (ascending, not empty), interpolating
/// linearly between the two nearest ranks (numpy's default).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of no values");
    let rank = p.clamp(0.0, 100.0) / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// `count / seconds`, or 0 when there is nothing to divide (no count, no time).
pub fn rate(count: f64, seconds: f64) -> f64 {
    if count <= 0.0 || seconds <= 0.0 || !seconds.is_finite() {
        0.0
    } else {
        count / seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_percentiles_and_std() {
        // numpy: np.percentile([1,2,3,4], [10,50,90]) == [1.3, 2.5, 3.7]; np.std == 1.1180...
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(s.count, 4);
        assert_eq!(s.total, 10.0);
        assert_eq!(s.mean, 2.5);
        assert!((s.p10 - 1.3).abs() < 1e-12);
        assert_eq!(s.p50, 2.5);
        assert!((s.p90 - 3.7).abs() < 1e-12);
        assert!((s.stdev - 1.25f64.sqrt()).abs() < 1e-12);
        assert_eq!((s.min, s.max), (1.0, 4.0));
        let one = Summary::of(&[7.0]);
        assert_eq!((one.p10, one.p50, one.p99, one.stdev), (7.0, 7.0, 7.0, 0.0));
        assert_eq!(Summary::of(&[]).count, 0);
    }

    #[test]
    fn rate_guards() {
        assert_eq!(rate(10.0, 2.0), 5.0);
        assert_eq!(rate(10.0, 0.0), 0.0);
        assert_eq!(rate(0.0, 1.0), 0.0);
        assert_eq!(rate(1.0, -1.0), 0.0);
    }
}
