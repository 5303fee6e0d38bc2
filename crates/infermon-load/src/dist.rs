//! Token-length distributions for prompts and outputs, parsed from a compact flag syntax:
//!
//! | syntax | meaning |
//! |---|---|
//! | `512` or `fixed:512` | always 512 |
//! | `uniform:128:1024` | uniform integer in 128..=1024 |
//! | `normal:512:128` | normal with mean 512, standard deviation 128 |
//! | `lognormal:512:256` | log-normal with (linear) mean 512, standard deviation 256 |
//!
//! Samples are rounded and clamped to at least 1 token: a zero-token prompt or output is not a
//! request any server accepts, and real length distributions are right-skewed, not negative.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, RngExt};
use rand_distr::{Distribution, LogNormal, Normal};

/// The syntax accepted by [`LengthDist::from_str`], quoted in every parse error.
pub const LENGTH_SYNTAX: &str =
    "N, fixed:N, uniform:MIN:MAX, normal:MEAN:STDDEV or lognormal:MEAN:STDDEV";

/// A distribution of token counts.
#[derive(Debug, Clone, PartialEq)]
pub enum LengthDist {
    Fixed(u64),
    Uniform { min: u64, max: u64 },
    Normal { mean: f64, std_dev: f64 },
    LogNormal { mean: f64, std_dev: f64 },
}

/// Why a length distribution could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid length `{input}`: {reason} (expected {LENGTH_SYNTAX})")]
pub struct LengthDistError {
    input: String,
    reason: String,
}

impl LengthDist {
    /// Draws one length (at least 1).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let raw = match *self {
            LengthDist::Fixed(n) => return n,
            // min <= max is guaranteed by parsing.
            LengthDist::Uniform { min, max } => return rng.random_range(min..=max),
            // Parameters were validated when parsing, so construction cannot fail; fall back to
            // the mean rather than panic should that ever change.
            LengthDist::Normal { mean, std_dev } => Normal::new(mean, std_dev)
                .map(|d| d.sample(rng))
                .unwrap_or(mean),
            LengthDist::LogNormal { mean, std_dev } => {
                LogNormal::from_mean_cv(mean, std_dev / mean)
                    .map(|d| d.sample(rng))
                    .unwrap_or(mean)
            }
        };
        raw.round().max(1.0) as u64
    }

    /// The distribution's mean, used to size prompts and report the configuration.
    pub fn mean(&self) -> f64 {
        match *self {
            LengthDist::Fixed(n) => n as f64,
            LengthDist::Uniform { min, max } => (min + max) as f64 / 2.0,
            LengthDist::Normal { mean, .. } | LengthDist::LogNormal { mean, .. } => mean,
        }
    }

    /// An upper bound worth pre-building prompt text for (mean + 6 standard deviations).
    pub fn practical_max(&self) -> u64 {
        match *self {
            LengthDist::Fixed(n) => n,
            LengthDist::Uniform { max, .. } => max,
            LengthDist::Normal { mean, std_dev } | LengthDist::LogNormal { mean, std_dev } => {
                (mean + 6.0 * std_dev).ceil() as u64
            }
        }
    }
}

impl FromStr for LengthDist {
    type Err = LengthDistError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| LengthDistError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = input.trim().split(':').collect();
        match parts.as_slice() {
            [n] | ["fixed", n] => Ok(LengthDist::Fixed(positive_int(n).map_err(|r| fail(&r))?)),
            ["uniform", min, max] => {
                let min = positive_int(min).map_err(|r| fail(&r))?;
                let max = positive_int(max).map_err(|r| fail(&r))?;
                if min > max {
                    return Err(fail("MIN is larger than MAX"));
                }
                Ok(LengthDist::Uniform { min, max })
            }
            [kind @ ("normal" | "lognormal"), mean, std_dev] => {
                let mean = positive_float(mean).map_err(|r| fail(&r))?;
                let std_dev: f64 = std_dev
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| fail("STDDEV must be a number >= 0"))?;
                Ok(if *kind == "normal" {
                    LengthDist::Normal { mean, std_dev }
                } else {
                    LengthDist::LogNormal { mean, std_dev }
                })
            }
            [kind, ..] if !kind.chars().all(|c| c.is_ascii_digit()) => {
                Err(fail("unknown distribution or wrong number of parameters"))
            }
            _ => Err(fail("wrong number of parameters")),
        }
    }
}

/// Serialised in the flag syntax (`uniform:128:1024`), as a summary's configuration echo shows it.
impl serde::Serialize for LengthDist {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for LengthDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LengthDist::Fixed(n) => write!(f, "{n}"),
            LengthDist::Uniform { min, max } => write!(f, "uniform:{min}:{max}"),
            LengthDist::Normal { mean, std_dev } => write!(f, "normal:{mean}:{std_dev}"),
            LengthDist::LogNormal { mean, std_dev } => write!(f, "lognormal:{mean}:{std_dev}"),
        }
    }
}

fn positive_int(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("lengths must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

fn positive_float(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 1.0 => Ok(x),
        Ok(_) => Err("MEAN must be at least 1".into()),
        Err(_) => Err(format!("`{s}` is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn parses_every_form() {
        assert_eq!("512".parse(), Ok(LengthDist::Fixed(512)));
        assert_eq!("fixed:7".parse(), Ok(LengthDist::Fixed(7)));
        assert_eq!(
            "uniform:128:1024".parse(),
            Ok(LengthDist::Uniform {
                min: 128,
                max: 1024
            })
        );
        assert_eq!(
            "normal:512:128".parse(),
            Ok(LengthDist::Normal {
                mean: 512.0,
                std_dev: 128.0
            })
        );
        assert_eq!(
            "lognormal:300:100".parse(),
            Ok(LengthDist::LogNormal {
                mean: 300.0,
                std_dev: 100.0
            })
        );
    }

    #[test]
    fn display_round_trips() {
        for s in ["512", "uniform:1:9", "normal:5:2", "lognormal:300:100"] {
            let d: LengthDist = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<LengthDist>().unwrap(), d);
        }
    }

    #[test]
    fn rejects_bad_input_with_the_syntax_in_the_message() {
        for bad in [
            "0",
            "-3",
            "abc",
            "uniform:9:1",
            "uniform:1",
            "normal:0:1",
            "normal:5:-1",
            "poisson:3",
            "",
        ] {
            let err = bad.parse::<LengthDist>().unwrap_err().to_string();
            assert!(err.contains(LENGTH_SYNTAX), "{bad}: {err}");
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
    }

    #[test]
    fn uniform_samples_stay_in_range_and_cover_it() {
        let d = LengthDist::Uniform { min: 3, max: 6 };
        let mut rng = SmallRng::seed_from_u64(1);
        let mut seen = [false; 4];
        for _ in 0..1000 {
            let x = d.sample(&mut rng);
            assert!((3..=6).contains(&x), "{x}");
            seen[(x - 3) as usize] = true;
        }
        assert_eq!(seen, [true; 4]);
    }

    #[test]
    fn normal_and_lognormal_samples_have_the_requested_mean_and_are_positive() {
        let mut rng = SmallRng::seed_from_u64(2);
        for d in [
            LengthDist::Normal {
                mean: 200.0,
                std_dev: 50.0,
            },
            LengthDist::LogNormal {
                mean: 200.0,
                std_dev: 100.0,
            },
        ] {
            let n = 20_000;
            let samples: Vec<u64> = (0..n).map(|_| d.sample(&mut rng)).collect();
            assert!(samples.iter().all(|&x| x >= 1));
            let mean = samples.iter().sum::<u64>() as f64 / n as f64;
            assert!((mean - 200.0).abs() < 5.0, "{d}: mean {mean}");
        }
    }

    #[test]
    fn samples_never_fall_below_one() {
        let d = LengthDist::Normal {
            mean: 1.0,
            std_dev: 10.0,
        };
        let mut rng = SmallRng::seed_from_u64(3);
        assert!((0..1000).all(|_| d.sample(&mut rng) >= 1));
    }
}
