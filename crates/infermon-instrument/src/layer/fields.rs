//! Helpers both layers share: explicit timestamps, matching a formatted value without
//! allocating, and a new span's parent looked up once.

use std::cell::OnceCell;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_subscriber::registry::{ExtensionsMut, LookupSpan, SpanRef};

/// `at` as the `u64` nanoseconds since the Unix epoch that the timestamp fields
/// ([`contract::field::START_TIME`](crate::contract::field::START_TIME), …) carry. Times before
/// the epoch become 0; times past year 2554 saturate.
pub fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The inverse of [`unix_nanos`].
pub fn from_unix_nanos(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// A `u64` field as the bridge exports it: an `i64` attribute, saturating.
pub(crate) fn attribute_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Seconds from `from` to `to`; 0 if the clock stepped backwards in between.
pub(crate) fn seconds(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).map_or(0.0, |d| d.as_secs_f64())
}

/// Whether `value`'s `Debug` output is exactly `expected`, without formatting it into a
/// `String` (a `tracing` message arrives as `format_args!`, only visible through `Debug`).
pub(crate) fn debug_equals(value: &dyn fmt::Debug, expected: &str) -> bool {
    struct Compare<'a> {
        rest: &'a str,
        equal: bool,
    }
    impl fmt::Write for Compare<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            match self.rest.strip_prefix(s) {
                Some(rest) => {
                    self.rest = rest;
                    Ok(())
                }
                None => {
                    self.equal = false;
                    Err(fmt::Error)
                }
            }
        }
    }
    let mut c = Compare {
        rest: expected,
        equal: true,
    };
    let _ = fmt::write(&mut c, format_args!("{value:?}"));
    c.equal && c.rest.is_empty()
}

/// The current time, read from the clock at most once per callback and shared by both layers:
/// a clock read costs ~37 ns on the development VMs (docs/benchmarks.md), more than the
/// instructions around it, and a span without explicit times needs one at its start and end.
pub(crate) struct Now(OnceCell<SystemTime>);

impl Now {
    pub(crate) fn new() -> Self {
        Self(OnceCell::new())
    }

    pub(crate) fn get(&self) -> SystemTime {
        *self.0.get_or_init(SystemTime::now)
    }
}

/// Where a layer finds its state in a span's extensions: in a slot of its own (a layer on its
/// own), or inside the one state [`InfermonLayer`](super::InfermonLayer) keeps per span for
/// both layers (one insertion per span instead of two).
pub(crate) type Slot<V> = for<'e> fn(&'e mut ExtensionsMut<'_>) -> Option<&'e mut V>;

/// A new span's parent, looked up in the registry on first use and then shared: the bridge
/// (for the parent's context) and the metrics layer (for a phase's request) both need it, and
/// a typed phase, whose parent context comes ready-made, needs it from neither.
pub(crate) struct Parent<'c, 'a, R: LookupSpan<'a>> {
    child: &'c SpanRef<'a, R>,
    parent: OnceCell<Option<SpanRef<'a, R>>>,
}

impl<'c, 'a, R: LookupSpan<'a>> Parent<'c, 'a, R> {
    pub(crate) fn of(child: &'c SpanRef<'a, R>) -> Self {
        Self {
            child,
            parent: OnceCell::new(),
        }
    }

    pub(crate) fn get(&self) -> Option<&SpanRef<'a, R>> {
        self.parent.get_or_init(|| self.child.parent()).as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanos_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(from_unix_nanos(unix_nanos(t)), t);
    }

    #[test]
    fn debug_equals_compares_the_whole_output() {
        assert!(debug_equals(&format_args!("first_token"), "first_token"));
        assert!(debug_equals(
            &format_args!("{}_{}", "first", "token"),
            "first_token"
        ));
        assert!(!debug_equals(&format_args!("first"), "first_token"));
        assert!(!debug_equals(&format_args!("first_token!"), "first_token"));
    }
}
