//! Fault injection: request errors by type, slower steps and latency spikes, and KV-cache
//! pressure, either always on (`[faults]` in the config) or scheduled over simulated time by a
//! scenario file.

use std::path::Path;

use infermon::contract::value;
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::toml_file::{self, TomlDocument};

/// The failures the simulator can inject. Each is recorded as its `error.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ErrorKind {
    /// Rejected on arrival with 500.
    ServerError,
    /// Rejected on arrival with 503 and `Retry-After`.
    Overloaded,
    /// Rejected on arrival with 429 and `Retry-After`.
    RateLimited,
    /// Fails part-way through decoding: a streaming client gets an error event and the stream
    /// ends; a non-streaming one gets 500.
    MidStream,
}

impl ErrorKind {
    const ALL: [ErrorKind; 4] = [
        ErrorKind::ServerError,
        ErrorKind::Overloaded,
        ErrorKind::RateLimited,
        ErrorKind::MidStream,
    ];

    /// The `error.type` value (and the name a scenario file uses).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ServerError => value::ERROR_SERVER,
            ErrorKind::Overloaded => value::ERROR_OVERLOADED,
            ErrorKind::RateLimited => value::ERROR_RATE_LIMITED,
            ErrorKind::MidStream => value::ERROR_MID_STREAM,
        }
    }
}

impl TryFrom<String> for ErrorKind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown error type `{name}`, expected one of: {}",
                    known.join(", ")
                )
            })
    }
}

impl From<ErrorKind> for String {
    fn from(kind: ErrorKind) -> Self {
        kind.as_str().to_owned()
    }
}

/// A fraction of requests failing with one error type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorFault {
    #[serde(rename = "type")]
    pub kind: ErrorKind,
    /// Probability (0–1) that a request fails this way.
    pub rate: f64,
}

/// A set of faults in effect at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Request errors by type.
    pub errors: Vec<ErrorFault>,
    /// Every step takes this many times longer (a slower GPU, thermal throttling).
    pub latency_factor: f64,
    /// Probability that a step is hit by a latency spike (a stall: GC, host contention).
    pub spike_probability: f64,
    /// Simulated seconds a spike adds to the step it hits.
    pub spike_s: f64,
    /// Fraction of KV cache blocks made unavailable (as if another tenant took the memory);
    /// they count as used, so usage rises and sequences get preempted.
    pub kv_pressure: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            errors: Vec::new(),
            latency_factor: 1.0,
            spike_probability: 0.0,
            spike_s: 0.0,
            kv_pressure: 0.0,
        }
    }
}

impl Faults {
    pub(crate) fn validate(&self, origin: &str) -> Result<(), SimError> {
        let invalid = |field: &str, message: &str| SimError::Invalid {
            origin: origin.to_owned(),
            field: field.to_owned(),
            message: message.to_owned(),
        };
        let in_unit = |v: f64| (0.0..=1.0).contains(&v);
        if self.errors.iter().any(|e| !in_unit(e.rate)) {
            return Err(invalid("errors.rate", "must be between 0 and 1"));
        }
        if !(self.latency_factor.is_finite() && self.latency_factor > 0.0) {
            return Err(invalid("latency_factor", "must be a positive number"));
        }
        if !in_unit(self.spike_probability) {
            return Err(invalid("spike_probability", "must be between 0 and 1"));
        }
        if !(self.spike_s.is_finite() && self.spike_s >= 0.0) {
            return Err(invalid("spike_s", "must be zero or positive"));
        }
        if !(0.0..1.0).contains(&self.kv_pressure) {
            return Err(invalid(
                "kv_pressure",
                "must be at least 0 and below 1 (a fraction of the KV blocks)",
            ));
        }
        Ok(())
    }

    /// Layers `other` on top: error rates add, slowdowns multiply, the stronger spike and
    /// pressure win.
    fn combine(&mut self, other: &Faults) {
        self.errors.extend(other.errors.iter().cloned());
        self.latency_factor *= other.latency_factor;
        self.spike_probability = self.spike_probability.max(other.spike_probability);
        self.spike_s = self.spike_s.max(other.spike_s);
        self.kv_pressure = self.kv_pressure.max(other.kv_pressure);
    }

    /// Draws which error (if any) a new request suffers. Rates of all entries add up; past 1
    /// every request fails.
    pub fn roll_error(&self, rng: &mut impl Rng) -> Option<ErrorKind> {
        if self.errors.is_empty() {
            return None;
        }
        let mut draw: f64 = rng.random();
        for fault in &self.errors {
            if draw < fault.rate {
                return Some(fault.kind);
            }
            draw -= fault.rate;
        }
        None
    }

    /// Extra simulated seconds for one step, if a spike hits it.
    pub fn roll_spike(&self, rng: &mut impl Rng) -> f64 {
        if self.spike_probability > 0.0 && rng.random_bool(self.spike_probability) {
            self.spike_s
        } else {
            0.0
        }
    }
}

/// Faults scheduled over simulated time.
///
/// ```toml
/// loop_s = 600            # optional: start over every 600 s
/// [[fault]]               # errors 20 % from 60 s to 120 s
/// from_s = 60
/// to_s = 120
/// errors = [{ type = "server_error", rate = 0.2 }]
/// [[fault]]
/// from_s = 150
/// to_s = 210
/// kv_pressure = 0.8
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Repeat the schedule with this period (simulated seconds); none = play once.
    pub loop_s: Option<f64>,
    #[serde(rename = "fault")]
    pub faults: Vec<TimedFaults>,
}

/// Faults active from `from_s` (inclusive) to `to_s` (exclusive), in simulated seconds since
/// the simulator started. The remaining fields are those of [`Faults`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimedFaults {
    pub from_s: f64,
    pub to_s: f64,
    #[serde(default)]
    pub errors: Vec<ErrorFault>,
    #[serde(default = "one")]
    pub latency_factor: f64,
    #[serde(default)]
    pub spike_probability: f64,
    #[serde(default)]
    pub spike_s: f64,
    #[serde(default)]
    pub kv_pressure: f64,
}

fn one() -> f64 {
    1.0
}

impl TimedFaults {
    fn faults(&self) -> Faults {
        Faults {
            errors: self.errors.clone(),
            latency_factor: self.latency_factor,
            spike_probability: self.spike_probability,
            spike_s: self.spike_s,
            kv_pressure: self.kv_pressure,
        }
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, SimError> {
        toml_file::load(path)
    }

    pub fn from_toml(source: &str, origin: &str) -> Result<Self, SimError> {
        toml_file::parse(source, origin)
    }
}

impl TomlDocument for Scenario {
    fn validate(&self, origin: &str) -> Result<(), SimError> {
        if let Some(period) = self.loop_s {
            if !(period.is_finite() && period > 0.0) {
                return Err(SimError::Invalid {
                    origin: origin.to_owned(),
                    field: "loop_s".to_owned(),
                    message: "must be a positive number of seconds".to_owned(),
                });
            }
        }
        for (i, timed) in self.faults.iter().enumerate() {
            let here = format!("{origin} [[fault]] #{}", i + 1);
            if !(timed.from_s >= 0.0 && timed.to_s > timed.from_s && timed.to_s.is_finite()) {
                return Err(SimError::Invalid {
                    origin: here,
                    field: "from_s / to_s".to_owned(),
                    message: "need 0 <= from_s < to_s".to_owned(),
                });
            }
            timed.faults().validate(&here)?;
        }
        Ok(())
    }
}

impl Scenario {
    /// The faults in effect `elapsed_s` simulated seconds after start, on top of `base`.
    pub fn active_at(&self, base: &Faults, elapsed_s: f64) -> Faults {
        let t = match self.loop_s {
            Some(period) => elapsed_s % period,
            None => elapsed_s,
        };
        let mut active = base.clone();
        for timed in &self.faults {
            if timed.from_s <= t && t < timed.to_s {
                active.combine(&timed.faults());
            }
        }
        active
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const EXAMPLE: &str = r#"
        [[fault]]
        from_s = 60
        to_s = 120
        errors = [{ type = "server_error", rate = 0.2 }]
        [[fault]]
        from_s = 100
        to_s = 200
        latency_factor = 3.0
        kv_pressure = 0.5
    "#;

    #[test]
    fn faults_apply_only_inside_their_window() {
        let scenario = Scenario::from_toml(EXAMPLE, "s.toml").unwrap();
        let base = Faults::default();
        assert_eq!(scenario.active_at(&base, 59.9), base);
        let at_90 = scenario.active_at(&base, 90.0);
        assert_eq!(at_90.errors.len(), 1);
        assert_eq!(at_90.latency_factor, 1.0);
        let at_110 = scenario.active_at(&base, 110.0);
        assert_eq!(at_110.errors.len(), 1);
        assert_eq!(at_110.latency_factor, 3.0);
        assert_eq!(at_110.kv_pressure, 0.5);
        let at_120 = scenario.active_at(&base, 120.0);
        assert!(at_120.errors.is_empty());
        assert_eq!(scenario.active_at(&base, 200.0), base);
    }

    #[test]
    fn the_shipped_drill_parses_and_covers_every_fault() {
        let drill = Scenario::from_toml(
            include_str!("../scenarios/alert-drill.toml"),
            "alert-drill.toml",
        )
        .unwrap();
        let base = Faults::default();
        assert_eq!(
            drill.active_at(&base, 90.0).errors[0].kind,
            ErrorKind::ServerError
        );
        assert_eq!(drill.active_at(&base, 200.0).latency_factor, 4.0);
        assert_eq!(drill.active_at(&base, 350.0).kv_pressure, 0.85);
        assert_eq!(drill.active_at(&base, 500.0).errors.len(), 2);
        assert_eq!(drill.active_at(&base, 690.0).errors.len(), 1, "it loops");
    }

    #[test]
    fn looping_scenarios_repeat() {
        let mut scenario = Scenario::from_toml(EXAMPLE, "s.toml").unwrap();
        scenario.loop_s = Some(300.0);
        assert_eq!(
            scenario.active_at(&Faults::default(), 390.0).errors.len(),
            1
        );
    }

    #[test]
    fn unknown_error_type_is_named() {
        let err = Scenario::from_toml(
            "[[fault]]\nfrom_s = 0\nto_s = 1\nerrors = [{ type = \"boom\", rate = 0.1 }]\n",
            "s.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("boom") && err.contains("server_error"),
            "{err}"
        );
    }

    #[test]
    fn bad_window_is_rejected() {
        let err = Scenario::from_toml("[[fault]]\nfrom_s = 5\nto_s = 1\n", "s.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("from_s"), "{err}");
    }

    #[test]
    fn error_rates_are_honoured_statistically() {
        let faults = Faults {
            errors: vec![
                ErrorFault {
                    kind: ErrorKind::ServerError,
                    rate: 0.2,
                },
                ErrorFault {
                    kind: ErrorKind::RateLimited,
                    rate: 0.1,
                },
            ],
            ..Faults::default()
        };
        let mut rng = SmallRng::seed_from_u64(7);
        let draws = 20_000;
        let (mut server, mut limited) = (0, 0);
        for _ in 0..draws {
            match faults.roll_error(&mut rng) {
                Some(ErrorKind::ServerError) => server += 1,
                Some(ErrorKind::RateLimited) => limited += 1,
                Some(other) => panic!("unexpected {other:?}"),
                None => {}
            }
        }
        // Binomial standard deviation at n = 20000 is under 0.3 %; allow 1.5 %.
        let server_rate = f64::from(server) / f64::from(draws);
        let limited_rate = f64::from(limited) / f64::from(draws);
        assert!((server_rate - 0.2).abs() < 0.015, "{server_rate}");
        assert!((limited_rate - 0.1).abs() < 0.015, "{limited_rate}");
    }
}
