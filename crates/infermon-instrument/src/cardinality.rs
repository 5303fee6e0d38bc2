//! Bounded label values for attributes whose values come from users.
//!
//! Model names, tenants and similar values arrive in requests; used verbatim as metric attributes
//! they would create one time series per distinct value, without bound. A [`LabelCap`] admits the
//! first `cap` distinct values it sees and maps every later newcomer to
//! [`contract::value::OVERFLOW`](crate::contract::value::OVERFLOW) (`other`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::RwLock;

use opentelemetry::StringValue;

use crate::contract::value::OVERFLOW;

/// A bounded set of label values: the first `cap` distinct values pass through, later ones
/// become `other`.
///
/// Values are handed out as [`StringValue`]s that share one allocation per admitted value, so
/// using them as attributes on every request costs a reference-count increment, not a copy.
#[derive(Debug)]
pub struct LabelCap {
    cap: usize,
    admitted: RwLock<HashMap<Box<str>, StringValue, FastHash>>,
}

/// The hasher of infermon's small per-request lookup maps (label caps, bound series).
///
/// FNV-1a: these keys are short strings looked up on every request, where SipHash's setup
/// cost dominates. Its weakness against chosen collisions does not matter here: every such map
/// holds at most a cap's worth of entries, so colliding keys cannot pile up.
pub(crate) type FastHash = BuildHasherDefault<Fnv1a>;

#[derive(Debug)]
pub(crate) struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl LabelCap {
    /// A cap that admits at most `cap` distinct values (a cap of 0 maps everything to `other`).
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            admitted: RwLock::new(HashMap::default()),
        }
    }

    /// The label value to use for `value`: itself if admitted (now or earlier), else `other`.
    pub fn get(&self, value: &str) -> StringValue {
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        let admitted = self.admitted.read().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = admitted.get(value) {
            return v.clone();
        }
        drop(admitted);

        let mut admitted = self.admitted.write().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = admitted.get(value) {
            return v.clone();
        }
        if admitted.len() >= self.cap {
            return StringValue::from(OVERFLOW);
        }
        let v = StringValue::from(std::sync::Arc::<str>::from(value));
        admitted.insert(value.into(), v.clone());
        v
    }

    /// How many distinct values have been admitted so far.
    pub fn len(&self) -> usize {
        self.admitted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether no value has been admitted yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The maximum number of distinct values admitted.
    pub fn cap(&self) -> usize {
        self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_cap_become_other() {
        let cap = LabelCap::new(2);
        assert_eq!(cap.get("a").as_str(), "a");
        assert_eq!(cap.get("b").as_str(), "b");
        assert_eq!(cap.get("c").as_str(), OVERFLOW);
        assert_eq!(cap.get("d").as_str(), OVERFLOW);
        assert_eq!(cap.len(), 2);
    }

    #[test]
    fn admitted_values_stay_admitted_after_the_cap_is_reached() {
        let cap = LabelCap::new(1);
        assert_eq!(cap.get("llama").as_str(), "llama");
        assert_eq!(cap.get("mistral").as_str(), OVERFLOW);
        assert_eq!(cap.get("llama").as_str(), "llama");
    }

    #[test]
    fn zero_cap_maps_everything_to_other() {
        let cap = LabelCap::new(0);
        assert_eq!(cap.get("a").as_str(), OVERFLOW);
        assert!(cap.is_empty());
    }

    #[test]
    fn concurrent_first_sightings_never_exceed_the_cap() {
        let cap = std::sync::Arc::new(LabelCap::new(10));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let cap = cap.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        cap.get(&format!("model-{t}-{i}"));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(cap.len(), 10);
    }
}
