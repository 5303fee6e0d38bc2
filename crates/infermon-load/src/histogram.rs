//! A log-linear latency histogram (the HDR-histogram idea, reduced to what a load generator
//! needs): constant memory however long the run, exact count/min/max/sum, and percentiles
//! within 0.2 % of the true sample value.
//!
//! Values are nanoseconds. Below 2^[`SUB_BITS`] every value has its own bucket; above, each
//! power of two is split into 2^`SUB_BITS` equal buckets, so a bucket is never wider than
//! 1/256 of its lower edge. A percentile reports its bucket's midpoint, clamped to the exact
//! min and max.

use std::time::Duration;

const SUB_BITS: u32 = 8;
const SUB_BUCKETS: u64 = 1 << SUB_BITS;

#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram {
    /// Grown on demand up to the bucket of the largest value seen (≈ 7,700 buckets for 100 s).
    counts: Vec<u64>,
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

impl LatencyHistogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, value: Duration) {
        self.record_ns(u64::try_from(value.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn record_ns(&mut self, ns: u64) {
        let index = bucket_index(ns);
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        self.min_ns = if self.count == 0 {
            ns
        } else {
            self.min_ns.min(ns)
        };
        self.max_ns = self.max_ns.max(ns);
        self.count += 1;
        self.sum_ns += u128::from(ns);
    }

    /// Adds every sample of `other` (histograms of parallel workers or time windows).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if other.count == 0 {
            return;
        }
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.min_ns = if self.count == 0 {
            other.min_ns
        } else {
            self.min_ns.min(other.min_ns)
        };
        self.max_ns = self.max_ns.max(other.max_ns);
        self.count += other.count;
        self.sum_ns += other.sum_ns;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn min(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.min_ns))
    }

    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.max_ns))
    }

    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| {
            Duration::from_nanos(u64::try_from(self.sum_ns / u128::from(self.count)).unwrap_or(0))
        })
    }

    /// The nearest-rank `q`-quantile (`q` in 0..=1): the smallest recorded value such that at
    /// least `q` of all samples are ≤ it, to the bucket's resolution.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let ns = bucket_midpoint(index).clamp(self.min_ns, self.max_ns);
                return Some(Duration::from_nanos(ns));
            }
        }
        self.max()
    }
}

fn bucket_index(ns: u64) -> usize {
    if ns < SUB_BUCKETS {
        return ns as usize;
    }
    let exponent = 63 - ns.leading_zeros(); // >= SUB_BITS
    let shift = exponent - SUB_BITS;
    let sub = (ns >> shift) - SUB_BUCKETS; // 0..SUB_BUCKETS
    ((u64::from(shift) + 1) * SUB_BUCKETS + sub) as usize
}

fn bucket_midpoint(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index;
    }
    let shift = index / SUB_BUCKETS - 1;
    let sub = index % SUB_BUCKETS;
    let low = (SUB_BUCKETS + sub) << shift;
    let width = 1u64 << shift;
    low + width / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    #[test]
    fn bucket_index_is_monotonic_and_midpoint_lies_in_the_bucket() {
        // An increasing sequence of values, dense at the low end and spanning 2^40 ns.
        let mut last = 0;
        for ns in (0..5000u64).chain((13..40).map(|e| (1u64 << e) + 12345)) {
            let i = bucket_index(ns);
            assert!(i >= last, "bucket of {ns} goes backwards");
            last = i;
            let mid = bucket_midpoint(i);
            assert_eq!(
                bucket_index(mid),
                i,
                "midpoint of bucket {i} lies outside it"
            );
        }
    }

    #[test]
    fn quantiles_match_a_sorted_vector_within_resolution() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut h = LatencyHistogram::new();
        let mut samples = Vec::new();
        for _ in 0..50_000 {
            // Log-uniform from 1 µs to 100 s: the range a load generator sees.
            let ns = 10f64.powf(rng.random_range(3.0..11.0)) as u64;
            samples.push(ns);
            h.record_ns(ns);
        }
        samples.sort_unstable();
        for q in [0.0, 0.01, 0.5, 0.95, 0.99, 0.999, 1.0] {
            let exact = exact_quantile(&samples, q) as f64;
            let got = h.quantile(q).unwrap().as_nanos() as f64;
            assert!(
                (got - exact).abs() / exact <= 0.002,
                "q={q}: exact {exact}, got {got}"
            );
        }
        assert_eq!(h.count(), 50_000);
        assert_eq!(h.min().unwrap().as_nanos() as u64, samples[0]);
        assert_eq!(h.max().unwrap().as_nanos() as u64, *samples.last().unwrap());
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = LatencyHistogram::new();
        for ns in [5, 1, 3, 2, 4] {
            h.record_ns(ns);
        }
        assert_eq!(h.quantile(0.5), Some(Duration::from_nanos(3)));
        assert_eq!(h.quantile(0.2), Some(Duration::from_nanos(1)));
        assert_eq!(h.mean(), Some(Duration::from_nanos(3)));
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        let mut all = LatencyHistogram::new();
        for i in 0..1000u64 {
            let ns = i * i * 997 + 13;
            if i % 3 == 0 { &mut a } else { &mut b }.record_ns(ns);
            all.record_ns(ns);
        }
        a.merge(&b);
        assert_eq!(a.count(), all.count());
        assert_eq!(a.min(), all.min());
        assert_eq!(a.max(), all.max());
        assert_eq!(a.mean(), all.mean());
        for q in [0.5, 0.9, 0.99] {
            assert_eq!(a.quantile(q), all.quantile(q));
        }
    }

    #[test]
    fn empty_histogram_reports_nothing() {
        let h = LatencyHistogram::new();
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.mean(), None);
        assert!(h.is_empty());
    }
}
