//! The relay's counters: atomics updated on the hot path, exported as observable instruments
//! under the contract's `infermon.relay.*` names.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use infermon_instrument::contract::relay::{metric, reason, ATTR_REASON};
use infermon_instrument::contract::unit;
use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;

use crate::expand::{ExpandReport, Incomplete};

/// Why spans were not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    QueueFull,
    ExportFailed,
    UpstreamRejected,
    Shutdown,
}

impl Dropped {
    pub const ALL: [Dropped; 4] = [
        Dropped::QueueFull,
        Dropped::ExportFailed,
        Dropped::UpstreamRejected,
        Dropped::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::QueueFull => reason::QUEUE_FULL,
            Dropped::ExportFailed => reason::EXPORT_FAILED,
            Dropped::UpstreamRejected => reason::UPSTREAM_REJECTED,
            Dropped::Shutdown => reason::SHUTDOWN,
        }
    }
}

/// Shared counters; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RelayStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    expanded: AtomicU64,
    passed: AtomicU64,
    incomplete: [AtomicU64; 4],
    dropped: [AtomicU64; 4],
    queued: AtomicU64,
    export_failures: AtomicU64,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub received: u64,
    pub expanded: u64,
    pub passed: u64,
    /// By [`Incomplete`] (in `Incomplete::ALL` order).
    pub incomplete: [u64; 4],
    /// By [`Dropped`] (in `Dropped::ALL` order).
    pub dropped: [u64; 4],
    pub queued: u64,
    pub export_failures: u64,
}

impl StatsSnapshot {
    pub fn incomplete(&self, why: Incomplete) -> u64 {
        self.incomplete[why as usize]
    }
    pub fn dropped(&self, why: Dropped) -> u64 {
        self.dropped[why as usize]
    }
}

impl RelayStats {
    pub(crate) fn record_expansion(&self, report: &ExpandReport) {
        let c = &self.0;
        c.received.fetch_add(report.received, Relaxed);
        c.expanded.fetch_add(report.expanded, Relaxed);
        c.passed.fetch_add(report.passed, Relaxed);
        for (slot, n) in c.incomplete.iter().zip(report.incomplete) {
            slot.fetch_add(n, Relaxed);
        }
    }

    pub(crate) fn record_dropped(&self, why: Dropped, spans: u64) {
        self.0.dropped[why as usize].fetch_add(spans, Relaxed);
    }

    pub(crate) fn record_export_failure(&self) {
        self.0.export_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn queued_add(&self, spans: u64) {
        self.0.queued.fetch_add(spans, Relaxed);
    }

    pub(crate) fn queued_sub(&self, spans: u64) {
        self.0.queued.fetch_sub(spans, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.0;
        let load = |a: &AtomicU64| a.load(Relaxed);
        StatsSnapshot {
            received: load(&c.received),
            expanded: load(&c.expanded),
            passed: load(&c.passed),
            incomplete: c.incomplete.each_ref().map(load),
            dropped: c.dropped.each_ref().map(load),
            queued: load(&c.queued),
            export_failures: load(&c.export_failures),
        }
    }

    /// Registers the observable instruments that report these counters on `meter`.
    pub fn register(&self, meter: &Meter) {
        let counter = |name: &'static str, unit: &'static str, read: fn(&StatsSnapshot) -> u64| {
            let stats = self.clone();
            meter
                .u64_observable_counter(name)
                .with_unit(unit)
                .with_callback(move |o| o.observe(read(&stats.snapshot()), &[]))
                .build();
        };
        counter(metric::SPANS_RECEIVED, unit::SPANS, |s| s.received);
        counter(metric::SPANS_EXPANDED, unit::SPANS, |s| s.expanded);
        counter(metric::SPANS_PASSED, unit::SPANS, |s| s.passed);
        counter(metric::EXPORT_FAILURES, unit::EXPORTS, |s| {
            s.export_failures
        });

        let stats = self.clone();
        meter
            .u64_observable_counter(metric::SPANS_INCOMPLETE)
            .with_unit(unit::SPANS)
            .with_callback(move |o| {
                let s = stats.snapshot();
                for why in Incomplete::ALL {
                    o.observe(
                        s.incomplete(why),
                        &[KeyValue::new(ATTR_REASON, why.as_str())],
                    );
                }
            })
            .build();
        let stats = self.clone();
        meter
            .u64_observable_counter(metric::SPANS_DROPPED)
            .with_unit(unit::SPANS)
            .with_callback(move |o| {
                let s = stats.snapshot();
                for why in Dropped::ALL {
                    o.observe(s.dropped(why), &[KeyValue::new(ATTR_REASON, why.as_str())]);
                }
            })
            .build();
        let stats = self.clone();
        meter
            .u64_observable_gauge(metric::QUEUE_DEPTH)
            .with_unit(unit::SPANS)
            .with_callback(move |o| o.observe(stats.snapshot().queued, &[]))
            .build();
    }
}
