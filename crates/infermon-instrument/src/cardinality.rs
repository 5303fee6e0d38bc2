//! Bounded label values for attributes whose values come from users.
//!
//! Model names, tenants and similar values arrive in requests; used verbatim as metric attributes
//! they would create one time series per distinct value, without bound. A [`LabelCap`] admits up
//! to `cap` distinct values and maps every other newcomer to
//! [`contract::value::OVERFLOW`](crate::contract::value::OVERFLOW) (`other`).
//!
//! First come, first served would let a burst of junk names (a typo'd client, a scan) take every
//! slot for the life of the process and push the real models into `other`. A [`LabelPolicy`]
//! guards against that two ways, both off by default:
//! * an **allow-list**: listed values always keep their own label and take no slot;
//! * **idle eviction**: a value not seen for the idle period gives its slot to the next
//!   newcomer (its series simply stops growing; a later sighting is admitted afresh if a slot
//!   is free).
//!
//! Processes read the policy from `INFERMON_LABEL_ALLOW` (comma-separated values) and
//! `INFERMON_LABEL_IDLE_EVICTION` (a duration such as `15m`); see [`LabelPolicy::from_env`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use opentelemetry::StringValue;

use crate::contract::value::OVERFLOW;
use crate::duration::{parse_duration, DurationError};

/// Environment variable: label values that always keep their own label (comma-separated).
pub const ALLOW_ENV: &str = "INFERMON_LABEL_ALLOW";
/// Environment variable: free the slot of a value not seen for this long (e.g. `15m`).
pub const IDLE_EVICTION_ENV: &str = "INFERMON_LABEL_IDLE_EVICTION";

/// How a [`LabelCap`] admits values besides its cap: see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelPolicy {
    /// Values that always pass and take no slot.
    pub allow: Vec<String>,
    /// A value unseen for this long gives its slot up to a newcomer. `None`: slots are kept
    /// for the life of the process.
    pub idle_eviction: Option<Duration>,
}

/// A label policy variable that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {source}")]
pub struct LabelPolicyError {
    variable: &'static str,
    #[source]
    source: DurationError,
}

impl LabelPolicy {
    /// The policy the environment sets ([`ALLOW_ENV`], [`IDLE_EVICTION_ENV`]); unset or empty
    /// variables leave the defaults (no allow-list, no eviction).
    pub fn from_env() -> Result<Self, LabelPolicyError> {
        Self::from_vars(
            std::env::var(ALLOW_ENV).ok().as_deref(),
            std::env::var(IDLE_EVICTION_ENV).ok().as_deref(),
        )
    }

    fn from_vars(allow: Option<&str>, idle: Option<&str>) -> Result<Self, LabelPolicyError> {
        let allow = allow
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        let idle_eviction = match idle.map(str::trim).filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(parse_duration(v).map_err(|source| LabelPolicyError {
                variable: IDLE_EVICTION_ENV,
                source,
            })?),
        };
        Ok(Self {
            allow,
            idle_eviction,
        })
    }

    /// This process's policy, read from the environment once. A command-line program should
    /// call [`from_env`](Self::from_env) first to refuse a bad value with a clear error; here an
    /// unusable value is logged once and ignored, so instrumentation never fails a service.
    pub fn process() -> &'static LabelPolicy {
        static POLICY: OnceLock<LabelPolicy> = OnceLock::new();
        POLICY.get_or_init(|| {
            Self::from_env().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "label policy ignored");
                Self::default()
            })
        })
    }

    /// This policy with `values` allowed too (e.g. the tenants a gateway's config names).
    pub fn allowing<I, S>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allow.extend(values.into_iter().map(Into::into));
        self
    }
}

/// A bounded set of label values: up to `cap` distinct values pass through, later ones become
/// `other`, unless a [`LabelPolicy`] allows them or frees an idle slot.
///
/// Values are handed out as [`StringValue`]s that share one allocation per admitted value, so
/// using them as attributes on every request costs a reference-count increment, not a copy.
#[derive(Debug)]
pub struct LabelCap {
    cap: usize,
    idle_eviction: Option<Duration>,
    epoch: Instant,
    admitted: RwLock<Admitted>,
}

#[derive(Debug, Default)]
struct Admitted {
    values: HashMap<Box<str>, Slot, FastHash>,
    /// Values holding a slot (allow-listed ones hold none).
    slotted: usize,
}

#[derive(Debug)]
struct Slot {
    value: StringValue,
    allowed: bool,
    /// Milliseconds since the cap's epoch; kept only with idle eviction.
    last_seen_ms: AtomicU64,
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
    /// A cap that admits at most `cap` distinct values, first come, first served, for the life
    /// of the process (a cap of 0 maps everything to `other`).
    pub fn new(cap: usize) -> Self {
        Self::with_policy(cap, &LabelPolicy::default())
    }

    /// A cap of `cap` slots with `policy`'s allow-list and idle eviction.
    pub fn with_policy(cap: usize, policy: &LabelPolicy) -> Self {
        let mut admitted = Admitted::default();
        for v in &policy.allow {
            admitted.values.insert(
                v.as_str().into(),
                Slot {
                    value: StringValue::from(std::sync::Arc::<str>::from(v.as_str())),
                    allowed: true,
                    last_seen_ms: AtomicU64::new(0),
                },
            );
        }
        Self {
            cap,
            idle_eviction: policy.idle_eviction,
            epoch: Instant::now(),
            admitted: RwLock::new(admitted),
        }
    }

    /// The label value to use for `value`: itself if admitted (now or earlier), else `other`.
    pub fn get(&self, value: &str) -> StringValue {
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        let admitted = self.admitted.read().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = admitted.values.get(value) {
            self.seen(slot);
            return slot.value.clone();
        }
        drop(admitted);

        let mut admitted = self.admitted.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = admitted.values.get(value) {
            self.seen(slot);
            return slot.value.clone();
        }
        if admitted.slotted >= self.cap && !self.evict_idle(&mut admitted) {
            return StringValue::from(OVERFLOW);
        }
        let v = StringValue::from(std::sync::Arc::<str>::from(value));
        let slot = Slot {
            value: v.clone(),
            allowed: false,
            last_seen_ms: AtomicU64::new(self.now_ms()),
        };
        admitted.values.insert(value.into(), slot);
        admitted.slotted += 1;
        v
    }

    fn seen(&self, slot: &Slot) {
        // Only eviction reads the time, so only then is it worth a clock read per lookup.
        if self.idle_eviction.is_some() && !slot.allowed {
            slot.last_seen_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Frees the slot of the value unseen for longest, if it has been idle past the policy's
    /// period. Whether a slot is free now.
    fn evict_idle(&self, admitted: &mut Admitted) -> bool {
        let Some(idle) = self.idle_eviction else {
            return false;
        };
        let now = self.now_ms();
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let oldest = admitted
            .values
            .iter()
            .filter(|(_, slot)| !slot.allowed)
            .map(|(k, slot)| (slot.last_seen_ms.load(Ordering::Relaxed), k))
            .min();
        match oldest {
            Some((seen, key)) if now.saturating_sub(seen) >= idle_ms => {
                let key = key.clone();
                admitted.values.remove(&key);
                admitted.slotted -= 1;
                true
            }
            _ => false,
        }
    }

    /// How many distinct values have their own label now (allow-listed ones included).
    pub fn len(&self) -> usize {
        self.admitted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values
            .len()
    }

    /// Whether no value has its own label.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of slots for values not on the allow-list.
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
    fn allowed_values_pass_without_taking_a_slot() {
        let policy = LabelPolicy::default().allowing(["llama", "mistral"]);
        let cap = LabelCap::with_policy(1, &policy);
        assert_eq!(cap.get("junk-1").as_str(), "junk-1");
        assert_eq!(cap.get("junk-2").as_str(), OVERFLOW);
        // Early junk took the only slot; the real models still keep their labels.
        assert_eq!(cap.get("llama").as_str(), "llama");
        assert_eq!(cap.get("mistral").as_str(), "mistral");
        assert_eq!(cap.len(), 3);
    }

    #[test]
    fn an_idle_value_gives_its_slot_to_a_newcomer() {
        // Long enough that the two lookups below are never that far apart, even on a loaded
        // machine.
        let policy = LabelPolicy {
            idle_eviction: Some(Duration::from_millis(500)),
            ..LabelPolicy::default()
        };
        let cap = LabelCap::with_policy(1, &policy);
        assert_eq!(cap.get("junk").as_str(), "junk");
        assert_eq!(
            cap.get("llama").as_str(),
            OVERFLOW,
            "not idle long enough yet"
        );
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(cap.get("llama").as_str(), "llama");
        assert_eq!(
            cap.get("junk").as_str(),
            OVERFLOW,
            "evicted, and llama is not idle"
        );
        assert_eq!(cap.len(), 1);
    }

    #[test]
    fn a_value_in_use_is_not_evicted() {
        let policy = LabelPolicy {
            idle_eviction: Some(Duration::from_millis(60)),
            ..LabelPolicy::default()
        };
        let cap = LabelCap::with_policy(1, &policy);
        cap.get("llama");
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(25));
            assert_eq!(cap.get("llama").as_str(), "llama");
        }
        assert_eq!(cap.get("junk").as_str(), OVERFLOW);
    }

    #[test]
    fn policy_from_the_environment_variables() {
        let p = LabelPolicy::from_vars(Some(" llama , mistral,,"), Some("15m")).unwrap();
        assert_eq!(p.allow, ["llama", "mistral"]);
        assert_eq!(p.idle_eviction, Some(Duration::from_secs(900)));
        assert_eq!(
            LabelPolicy::from_vars(None, Some("")).unwrap(),
            LabelPolicy::default()
        );
        let e = LabelPolicy::from_vars(None, Some("soon")).unwrap_err();
        assert!(e.to_string().starts_with(IDLE_EVICTION_ENV), "{e}");
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
