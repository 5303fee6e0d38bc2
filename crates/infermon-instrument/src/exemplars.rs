//! Exemplars: latency measurements that carry the trace they came from, so a point on a TTFT,
//! TPOT or phase panel opens its request's trace.
//!
//! The OpenTelemetry Rust SDK (0.33) records no exemplars: its data points have the field, and
//! nothing fills it. infermon keeps its own, beside the SDK's aggregation:
//!
//! * every latency histogram series the contract records (per model and operation) has one
//!   [`ExemplarSlots`]: a slot per bucket, holding the first measurement that fell in that bucket
//!   since the last export, with its trace and span ids;
//! * the slots are listed in one process-wide [`ExemplarRegistry`] ([`registry`]) under the
//!   metric's name and the series' attributes;
//! * the `infermon` bootstrap's metric exporter [`drain`](ExemplarRegistry::drain)s the registry
//!   at each export and attaches each series' exemplars to its OTLP histogram data point (the
//!   collector and Prometheus' OTLP receiver keep them; Grafana links them to the trace).
//!
//! Only sampled spans give exemplars (an unsampled trace is stored nowhere). One slot per bucket
//! is what Prometheus' own clients keep, and it keeps the slow outliers an operator clicks on.
//!
//! # Cost
//! A measurement finds its bucket (a binary search over at most 28 bounds) and reads one flag.
//! Only a measurement that lands in an empty slot asks for its span's ids (which may look the
//! span up) and takes the lock: at most one per bucket per series per export interval.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::SystemTime;

use opentelemetry::metrics::{BoundHistogram, Histogram};
use opentelemetry::trace::{SpanContext, SpanId, TraceId};
use opentelemetry::KeyValue;

/// The trace and span a measurement belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: TraceId,
    pub span_id: SpanId,
}

impl TraceIds {
    /// The ids of a sampled, valid span context; `None` otherwise (nothing to link to).
    pub fn of_sampled(cx: &SpanContext) -> Option<Self> {
        (cx.is_valid() && cx.is_sampled()).then(|| Self {
            trace_id: cx.trace_id(),
            span_id: cx.span_id(),
        })
    }
}

/// One measurement with its trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Exemplar {
    pub value: f64,
    pub time: SystemTime,
    pub ids: TraceIds,
}

/// The exemplar slots of one histogram series: one per bucket of `bounds` (OpenTelemetry's
/// explicit buckets, `(bounds[i-1], bounds[i]]`, plus the overflow bucket).
#[derive(Debug)]
pub struct ExemplarSlots {
    bounds: &'static [f64],
    /// `filled[i]` mirrors `slots[i].is_some()` so the common case (slot taken) is one load.
    filled: Box<[AtomicBool]>,
    slots: Mutex<Box<[Option<Exemplar>]>>,
}

impl ExemplarSlots {
    fn new(bounds: &'static [f64]) -> Self {
        let n = bounds.len() + 1;
        Self {
            bounds,
            filled: (0..n).map(|_| AtomicBool::new(false)).collect(),
            slots: Mutex::new(vec![None; n].into_boxed_slice()),
        }
    }

    /// Keeps `value` as its bucket's exemplar if the bucket has none since the last drain;
    /// `ids` is asked only then (and a `None` keeps nothing).
    pub fn offer(&self, value: f64, ids: impl FnOnce() -> Option<TraceIds>) {
        if value.is_nan() {
            return;
        }
        let i = self.bounds.partition_point(|b| *b < value);
        if self.filled[i].load(Ordering::Relaxed) {
            return;
        }
        let Some(ids) = ids() else { return };
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots[i].is_none() {
            slots[i] = Some(Exemplar {
                value,
                time: SystemTime::now(),
                ids,
            });
            self.filled[i].store(true, Ordering::Relaxed);
        }
    }

    /// The exemplars kept since the last call, emptying the slots.
    pub fn take(&self) -> Vec<Exemplar> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let taken = slots.iter_mut().filter_map(Option::take).collect();
        for f in self.filled.iter() {
            f.store(false, Ordering::Relaxed);
        }
        taken
    }
}

/// A histogram series bound to its attributes, with exemplar slots: what the contract's
/// latency histograms record through.
#[derive(Debug)]
pub struct TracedHistogram {
    bound: BoundHistogram<f64>,
    exemplars: Arc<ExemplarSlots>,
}

impl TracedHistogram {
    /// Binds `histogram` (named `metric`, with boundaries `bounds`) to `attributes` and
    /// registers the series' exemplar slots in [`registry`].
    pub fn bind(
        histogram: &Histogram<f64>,
        metric: &'static str,
        bounds: &'static [f64],
        attributes: &[KeyValue],
    ) -> Self {
        Self {
            bound: histogram.bind(attributes),
            exemplars: registry().register(metric, bounds, attributes),
        }
    }

    /// Records `value`; `ids` (the measured span's) is asked only if it becomes an exemplar.
    pub fn record(&self, value: f64, ids: impl FnOnce() -> Option<TraceIds>) {
        self.bound.record(value);
        self.exemplars.offer(value, ids);
    }
}

/// A series' identity as OTLP data points carry it: metric name and attributes, each value in
/// its string form, sorted by key.
pub type SeriesKey = (String, Vec<(String, String)>);

/// Builds the [`SeriesKey`] of a metric and its attributes (in any order).
pub fn series_key<'a>(
    metric: &str,
    attributes: impl IntoIterator<Item = (&'a str, String)>,
) -> SeriesKey {
    let mut attrs: Vec<(String, String)> = attributes
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    attrs.sort_unstable();
    (metric.to_owned(), attrs)
}

/// Every series' exemplar slots in this process; see the [module docs](self).
#[derive(Debug, Default)]
pub struct ExemplarRegistry {
    series: Mutex<Vec<(SeriesKey, Weak<ExemplarSlots>)>>,
}

/// The process-wide registry the contract's instruments register in and the bootstrap's
/// exporter drains.
pub fn registry() -> &'static ExemplarRegistry {
    static REGISTRY: OnceLock<ExemplarRegistry> = OnceLock::new();
    REGISTRY.get_or_init(ExemplarRegistry::default)
}

impl ExemplarRegistry {
    /// New slots for the series `metric` + `attributes`. Two registrations of the same series
    /// (two instrument sets on one meter) share nothing; the drain merges them.
    pub fn register(
        &self,
        metric: &'static str,
        bounds: &'static [f64],
        attributes: &[KeyValue],
    ) -> Arc<ExemplarSlots> {
        let slots = Arc::new(ExemplarSlots::new(bounds));
        let key = series_key(
            metric,
            attributes
                .iter()
                .map(|kv| (kv.key.as_str(), kv.value.as_str().into_owned())),
        );
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series.retain(|(_, w)| w.strong_count() > 0);
        series.push((key, Arc::downgrade(&slots)));
        slots
    }

    /// The exemplars kept since the last drain, per series (series without any are left out).
    pub fn drain(&self) -> HashMap<SeriesKey, Vec<Exemplar>> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: HashMap<SeriesKey, Vec<Exemplar>> = HashMap::new();
        for (key, slots) in series.iter() {
            let Some(slots) = slots.upgrade() else {
                continue;
            };
            let taken = slots.take();
            if !taken.is_empty() {
                out.entry(key.clone()).or_default().extend(taken);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceFlags, TraceState};

    fn ids(n: u8) -> TraceIds {
        TraceIds {
            trace_id: TraceId::from_bytes([n; 16]),
            span_id: SpanId::from_bytes([n; 8]),
        }
    }

    #[test]
    fn keeps_the_first_measurement_per_bucket_until_taken() {
        let slots = ExemplarSlots::new(&[1.0, 2.0]);
        slots.offer(0.5, || Some(ids(1)));
        slots.offer(0.7, || {
            panic!("bucket (.., 1] is taken: ids must not be asked")
        });
        slots.offer(1.0, || panic!("1.0 belongs to (.., 1]"));
        slots.offer(1.5, || Some(ids(2)));
        slots.offer(9.0, || Some(ids(3)));
        let taken = slots.take();
        let got: Vec<(f64, TraceIds)> = taken.iter().map(|e| (e.value, e.ids)).collect();
        assert_eq!(got, vec![(0.5, ids(1)), (1.5, ids(2)), (9.0, ids(3))]);
        assert!(slots.take().is_empty(), "taking empties the slots");
        slots.offer(0.9, || Some(ids(4)));
        assert_eq!(
            slots.take()[0].ids,
            ids(4),
            "an emptied slot takes the next one"
        );
    }

    #[test]
    fn no_ids_no_exemplar() {
        let slots = ExemplarSlots::new(&[1.0]);
        slots.offer(0.5, || None);
        slots.offer(f64::NAN, || panic!("NaN is never an exemplar"));
        assert!(slots.take().is_empty());
        slots.offer(0.5, || Some(ids(1)));
        assert_eq!(
            slots.take().len(),
            1,
            "a refused offer leaves the slot free"
        );
    }

    #[test]
    fn only_sampled_spans_give_ids() {
        let cx = |flags| {
            SpanContext::new(
                TraceId::from_bytes([1; 16]),
                SpanId::from_bytes([2; 8]),
                flags,
                false,
                TraceState::default(),
            )
        };
        assert_eq!(
            TraceIds::of_sampled(&cx(TraceFlags::SAMPLED)),
            Some(ids_12())
        );
        assert_eq!(TraceIds::of_sampled(&cx(TraceFlags::default())), None);
        assert_eq!(TraceIds::of_sampled(&SpanContext::empty_context()), None);
    }

    fn ids_12() -> TraceIds {
        TraceIds {
            trace_id: TraceId::from_bytes([1; 16]),
            span_id: SpanId::from_bytes([2; 8]),
        }
    }

    #[test]
    fn the_registry_drains_by_series_and_forgets_dropped_series() {
        let reg = ExemplarRegistry::default();
        let a = reg.register(
            "m",
            &[1.0],
            &[KeyValue::new("b", "2"), KeyValue::new("a", "1")],
        );
        let b = reg.register("m", &[1.0], &[KeyValue::new("a", "x")]);
        a.offer(0.5, || Some(ids(1)));
        b.offer(3.0, || Some(ids(2)));
        let drained = reg.drain();
        let key_a = series_key("m", [("a", "1".to_owned()), ("b", "2".to_owned())]);
        assert_eq!(
            drained[&key_a][0].ids,
            ids(1),
            "attribute order does not matter"
        );
        assert_eq!(drained.len(), 2);
        assert!(reg.drain().is_empty(), "drained slots are empty");
        drop(b);
        reg.register("n", &[1.0], &[]);
        assert_eq!(
            reg.series.lock().unwrap().len(),
            2,
            "the dropped series was forgotten"
        );
    }
}
