//! Aggregation of request records into run totals and into a rolling window that progress
//! lines and the demo's live view read (and reset) every few seconds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use infermon::cardinality::LabelCap;

use crate::histogram::LatencyHistogram;
use crate::outcome::{Outcome, RequestRecord};
use crate::summary::Summary;

/// Distinct error and finish-reason keys kept in a summary; later newcomers count as `other`.
/// They contain server-supplied strings (OpenAI error types), which must not grow without bound.
const MAX_DISTINCT_KEYS: usize = 32;

/// Everything measured over some span of time.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub ttft: LatencyHistogram,
    pub itl: LatencyHistogram,
    pub tpot: LatencyHistogram,
    pub e2e: LatencyHistogram,
    pub errors: BTreeMap<String, u64>,
    pub finish_reasons: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, record: &RequestRecord, error_key: Option<&str>) {
        match &record.outcome {
            Outcome::Success => {
                self.succeeded += 1;
                self.e2e.record(record.e2e);
                if let Some(tpot) = record.tpot() {
                    self.tpot.record(tpot);
                }
            }
            Outcome::Failed(_) => self.failed += 1,
            Outcome::Cancelled => self.cancelled += 1,
        }
        // Tokens that arrived count whatever the outcome: they were generated and streamed.
        self.input_tokens += record.input_tokens;
        self.output_tokens += record.output_tokens;
        if let Some(ttft) = record.ttft {
            self.ttft.record(ttft);
        }
        for &gap in &record.itl_ns {
            self.itl.record_ns(gap);
        }
        if let Some(key) = error_key {
            *self.errors.entry(key.to_owned()).or_default() += 1;
        }
    }

    pub fn completed(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }
}

/// Live counters of a run in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Requests sent (or, open loop, due but dropped for the in-flight limit).
    pub sent: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub in_flight: u64,
    pub output_tokens: u64,
}

/// Measurements of the last window (since the previous [`Progress::take_window`]).
#[derive(Debug, Clone)]
pub struct Window {
    /// How long the window lasted.
    pub elapsed: Duration,
    pub tally: Tally,
}

/// Shared by every request task of a run.
#[derive(Debug)]
pub(crate) struct Recorder {
    sent: AtomicU64,
    state: Mutex<State>,
    error_keys: LabelCap,
    finish_keys: LabelCap,
}

#[derive(Debug)]
struct State {
    started: Instant,
    /// Set when the run ends, freezing the elapsed time the summary divides by.
    ended: Option<Instant>,
    total: Tally,
    window: Tally,
    window_started: Instant,
}

impl Recorder {
    pub fn new() -> Self {
        let now = Instant::now();
        Self {
            sent: AtomicU64::new(0),
            state: Mutex::new(State {
                started: now,
                ended: None,
                total: Tally::default(),
                window: Tally::default(),
                window_started: now,
            }),
            error_keys: LabelCap::new(MAX_DISTINCT_KEYS),
            finish_keys: LabelCap::new(MAX_DISTINCT_KEYS),
        }
    }

    /// Marks the start of the run (the recorder may be created a while before).
    pub fn start(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        state.started = now;
        state.window_started = now;
    }

    /// Marks the end of the run.
    pub fn stop(&self) {
        self.lock().ended = Some(Instant::now());
    }

    pub fn elapsed(&self) -> Duration {
        let state = self.lock();
        state.ended.unwrap_or_else(Instant::now) - state.started
    }

    pub fn request_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record(&self, record: &RequestRecord) {
        let error_key = match &record.outcome {
            Outcome::Failed(e) => Some(self.error_keys.get(&e.key())),
            _ => None,
        };
        let finish_key = match (&record.outcome, &record.finish_reason) {
            (Outcome::Success, Some(reason)) => Some(self.finish_keys.get(reason)),
            _ => None,
        };
        let mut state = self.lock();
        let State { total, window, .. } = &mut *state;
        for tally in [total, window] {
            tally.add(record, error_key.as_ref().map(|k| k.as_str()));
            if let Some(reason) = &finish_key {
                *tally
                    .finish_reasons
                    .entry(reason.as_str().to_owned())
                    .or_default() += 1;
            }
        }
    }

    pub fn counts(&self) -> Counts {
        let sent = self.sent.load(Ordering::Relaxed);
        let state = self.lock();
        let t = &state.total;
        Counts {
            sent,
            succeeded: t.succeeded,
            failed: t.failed,
            cancelled: t.cancelled,
            in_flight: sent.saturating_sub(t.completed()),
            output_tokens: t.output_tokens,
        }
    }

    pub fn take_window(&self) -> Window {
        let mut state = self.lock();
        let now = Instant::now();
        let elapsed = now - state.window_started;
        state.window_started = now;
        Window {
            elapsed,
            tally: std::mem::take(&mut state.window),
        }
    }

    pub fn summary(&self) -> Summary {
        let sent = self.sent.load(Ordering::Relaxed);
        let state = self.lock();
        let elapsed = state.ended.unwrap_or_else(Instant::now) - state.started;
        Summary::new(sent, &state.total, elapsed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind, still worth reporting.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle to watch a run while it goes: counts, and per-window measurements.
#[derive(Debug, Clone)]
pub struct Progress {
    pub(crate) recorder: Arc<Recorder>,
}

impl Progress {
    /// Time since the run started (until it ended, once it has).
    pub fn elapsed(&self) -> Duration {
        self.recorder.elapsed()
    }

    pub fn counts(&self) -> Counts {
        self.recorder.counts()
    }

    /// Measurements since the previous call (or the start), and starts a new window.
    pub fn take_window(&self) -> Window {
        self.recorder.take_window()
    }

    /// The run's totals so far, as the final summary would show them now.
    pub fn summary(&self) -> Summary {
        self.recorder.summary()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::RequestError;

    fn success(e2e_ms: u64, output: u64) -> RequestRecord {
        let mut r = RequestRecord::failed(RequestError::Timeout, Duration::from_millis(e2e_ms));
        r.outcome = Outcome::Success;
        r.ttft = Some(Duration::from_millis(10));
        r.itl_ns = vec![1_000_000; output.saturating_sub(1) as usize];
        r.input_tokens = 100;
        r.output_tokens = output;
        r.finish_reason = Some("length".into());
        r
    }

    #[test]
    fn totals_and_windows_count_every_record_once() {
        let recorder = Recorder::new();
        for _ in 0..3 {
            recorder.request_sent();
        }
        recorder.record(&success(50, 5));
        recorder.record(&RequestRecord::failed(
            RequestError::Http {
                status: 503,
                error_type: None,
            },
            Duration::from_millis(1),
        ));
        let first = recorder.take_window();
        recorder.record(&success(70, 7));

        let counts = recorder.counts();
        assert_eq!(
            counts,
            Counts {
                sent: 3,
                succeeded: 2,
                failed: 1,
                cancelled: 0,
                in_flight: 0,
                output_tokens: 12,
            }
        );
        assert_eq!(first.tally.succeeded, 1);
        assert_eq!(first.tally.errors["http_503"], 1);
        assert_eq!(first.tally.itl.count(), 4);
        let second = recorder.take_window();
        assert_eq!(second.tally.succeeded, 1);
        assert_eq!(second.tally.itl.count(), 6);
        assert!(second.tally.errors.is_empty());

        let summary = recorder.summary();
        assert_eq!(summary.requests.succeeded, 2);
        assert_eq!(summary.tokens.output, 12);
        assert_eq!(summary.tokens.input, 200);
        assert_eq!(summary.finish_reasons["length"], 2);
    }

    #[test]
    fn distinct_error_keys_are_capped() {
        let recorder = Recorder::new();
        for i in 0..(MAX_DISTINCT_KEYS + 10) {
            recorder.record(&RequestRecord::failed(
                RequestError::InStream {
                    error_type: Some(format!("weird_{i}")),
                },
                Duration::ZERO,
            ));
        }
        let errors = recorder.summary().errors;
        assert_eq!(errors.len(), MAX_DISTINCT_KEYS + 1);
        assert_eq!(errors[infermon::contract::value::OVERFLOW], 10);
    }
}
