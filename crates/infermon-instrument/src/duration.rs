//! Durations as people write them in flags, config files and environment variables.

use std::time::Duration;

/// A duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("unknown unit `{unit}` in `{input}`; use ms, s, m or h (e.g. 30s)")]
    UnknownUnit { unit: String, input: String },
    #[error("`{0}` is not a duration; write e.g. 500ms, 30s, 5m or 1h")]
    NotADuration(String),
}

/// `500ms`, `30s`, `5m`, `2h`, or a bare number of seconds (fractions allowed).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(DurationError::UnknownUnit {
                unit: other.to_owned(),
                input: s.to_owned(),
            })
        }
    };
    let not_a_duration = || DurationError::NotADuration(s.to_owned());
    let value: f64 = number.parse().map_err(|_| not_a_duration())?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| not_a_duration())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 2.5 "), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn errors_say_what_to_write() {
        let e = parse_duration("5d").unwrap_err();
        assert!(e.to_string().contains("use ms, s, m or h"), "{e}");
        let e = parse_duration("1.2.3s").unwrap_err();
        assert!(e.to_string().contains("is not a duration"), "{e}");
        assert!(parse_duration("").is_err());
    }
}
