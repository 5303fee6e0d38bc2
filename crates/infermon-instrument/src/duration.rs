//! Durations as people write them in flags, config files and environment variables: one
//! syntax for all of them.

use std::time::Duration;

/// A duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("unknown unit `{unit}` in `{input}`; use ms, s, m, h, d or w (e.g. 30s, 30m, 2h30m)")]
    UnknownUnit { unit: String, input: String },
    #[error("`{0}` is not a duration; write e.g. 500ms, 30s, 5m, 2h30m or 1d")]
    NotADuration(String),
}

/// `500ms`, `30s`, `5m`, `1.5h`, `2h30m`, `1d`, `1w`, or a bare number of seconds: number and
/// unit pairs, added up (fractions allowed).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let input = s.trim();
    let not_a_duration = || DurationError::NotADuration(input.to_owned());
    let is_number = |c: char| c.is_ascii_digit() || c == '.';
    if !input.is_empty() && input.chars().all(is_number) {
        let seconds: f64 = input.parse().map_err(|_| not_a_duration())?;
        return Duration::try_from_secs_f64(seconds).map_err(|_| not_a_duration());
    }
    if input.is_empty() {
        return Err(not_a_duration());
    }
    let mut rest = input;
    let mut total = 0.0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !is_number(c)).unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().map_err(|_| not_a_duration())?;
        rest = &rest[digits..];
        let unit_len = rest.find(is_number).unwrap_or(rest.len());
        let scale = match rest[..unit_len].trim() {
            "ms" => 1e-3,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            unit => {
                return Err(DurationError::UnknownUnit {
                    unit: unit.to_owned(),
                    input: input.to_owned(),
                })
            }
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| not_a_duration())
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
        assert_eq!(parse_duration("5min"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
    }

    #[test]
    fn pairs_add_up() {
        assert_eq!(parse_duration("2h30m"), Ok(Duration::from_secs(9000)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("1m30s500ms"),
            Ok(Duration::from_millis(90_500))
        );
    }

    #[test]
    fn errors_say_what_to_write() {
        let e = parse_duration("5y").unwrap_err();
        assert!(e.to_string().contains("use ms, s, m, h, d or w"), "{e}");
        for bad in ["", "s", "1.2.3s", "-1s", "1e999w", "5 parsecs", "h5"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
        let e = parse_duration("1.2.3s").unwrap_err();
        assert!(e.to_string().contains("is not a duration"), "{e}");
    }
}
