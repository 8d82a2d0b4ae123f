//! Lock-free fixed-bucket histograms in integer units (nanoseconds, bytes).

use std::sync::atomic::{AtomicU64, Ordering};

/// OpenTelemetry's default HTTP duration buckets, in nanoseconds.
pub const DURATION_BOUNDS_NS: &[u64] = &[
    0,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    75_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    750_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    7_500_000_000,
    10_000_000_000,
];

/// Body size buckets in bytes (0 B to 16 MiB, ×4 steps).
pub const SIZE_BOUNDS: &[u64] = &[
    0, 64, 256, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216,
];

/// A histogram over integer observations: `counts[i]` is observations `<= bounds[i]`
/// and `> bounds[i-1]`; the last slot is `+Inf`.
pub struct Histogram {
    bounds: &'static [u64],
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Record one value.
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A point-in-time copy, with bounds and sum divided by `scale` (1e9 for seconds).
    pub fn snapshot(&self, scale: f64) -> HistogramValue {
        HistogramValue {
            bounds: self.bounds.iter().map(|b| *b as f64 / scale).collect(),
            counts: self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum: self.sum.load(Ordering::Relaxed) as f64 / scale,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's values: non-cumulative `counts` (one more than `bounds`, the last is `+Inf`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistogramValue {
    /// Upper bounds, in the exposed unit.
    pub bounds: Vec<f64>,
    /// Observations per bucket (not cumulative).
    pub counts: Vec<u64>,
    /// Sum of observations, in the exposed unit.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl HistogramValue {
    /// Add `other` into `self` (same bounds; otherwise `other` is ignored).
    pub fn merge(&mut self, other: &Self) {
        if self.bounds != other.bounds || self.counts.len() != other.counts.len() {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive() {
        let h = Histogram::new(&[0, 10, 100]);
        for v in [0, 1, 10, 11, 100, 1000] {
            h.observe(v);
        }
        let s = h.snapshot(1.0);
        assert_eq!(s.counts, vec![1, 2, 2, 1]);
        assert_eq!(s.count, 6);
        assert!((s.sum - 1122.0).abs() < 1e-9);
    }
}
