//! Silence lengths and the timestamps Alertmanager's API exchanges (RFC 3339, UTC).

use std::time::Duration;

use jiff::Timestamp;

/// How to write a silence length, for error messages.
const SYNTAX: &str = "write a duration such as 30m, 1h, 2h30m or 1d";

/// Why a silence length could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; {SYNTAX}")]
    Empty,
    #[error("`{0}` is not a duration; {SYNTAX}")]
    NotANumber(String),
    #[error("unknown unit `{unit}` in `{input}`; {SYNTAX}")]
    UnknownUnit { unit: String, input: String },
    #[error("`{0}` is too long")]
    TooLong(String),
    #[error("`{0}` is zero; {SYNTAX}")]
    Zero(String),
}

/// Silence lengths: a sequence of number+unit (`s`, `m`, `h`, `d`, `w`), e.g. `90m`, `2h30m`,
/// `1d`. Unlike request timeouts, acknowledgements are minutes to days long, so days and weeks
/// are units and fractions are not needed.
pub fn parse_silence_duration(s: &str) -> Result<Duration, DurationError> {
    let mut total: u64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(DurationError::Empty);
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::NotANumber(s.to_owned()))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            other => {
                return Err(DurationError::UnknownUnit {
                    unit: other.to_owned(),
                    input: s.to_owned(),
                })
            }
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(seconds)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| DurationError::TooLong(s.to_owned()))?;
    }
    if total == 0 {
        return Err(DurationError::Zero(s.to_owned()));
    }
    Ok(Duration::from_secs(total))
}

/// An API timestamp shown to the second (`2026-11-28T09:30:00.123456Z` ->
/// `2026-11-28T09:30:00Z`); one that does not parse is shown as it is.
pub(crate) fn to_the_second(timestamp: &str) -> String {
    match timestamp.parse::<Timestamp>() {
        Ok(t) => format!("{t:.0}"),
        Err(_) => timestamp.to_owned(),
    }
}

/// `t` without its fraction of a second (silences are set to the second, as they are shown).
pub(crate) fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_durations_accept_compound_units_and_reject_nonsense() {
        assert_eq!(parse_silence_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(
            parse_silence_duration("2h30m"),
            Ok(Duration::from_secs(9000))
        );
        assert_eq!(
            parse_silence_duration("1d"),
            Ok(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_silence_duration("1w"),
            Ok(Duration::from_secs(604_800))
        );
        for bad in [
            "",
            "1",
            "h",
            "5 parsecs",
            "0m",
            "-1h",
            "1.5h",
            "99999999999999999999w",
        ] {
            assert!(parse_silence_duration(bad).is_err(), "{bad} accepted");
        }
        let e = parse_silence_duration("5 parsecs").unwrap_err().to_string();
        assert!(e.contains("30m"), "{e}");
    }

    #[test]
    fn timestamps_are_shown_to_the_second() {
        assert_eq!(
            to_the_second("2026-11-28T09:30:00.123456789Z"),
            "2026-11-28T09:30:00Z"
        );
        assert_eq!(
            to_the_second("2026-11-28T09:30:00Z"),
            "2026-11-28T09:30:00Z"
        );
        assert_eq!(
            to_the_second("2026-11-28T10:30:00.5+01:00"),
            "2026-11-28T09:30:00Z"
        );
        assert_eq!(to_the_second("not a time"), "not a time");
    }

    #[test]
    fn whole_seconds_drop_the_fraction() {
        let t: Timestamp = "2023-11-14T22:13:20.999Z".parse().unwrap();
        assert_eq!(whole_seconds(t).to_string(), "2023-11-14T22:13:20Z");
        let leap_day: Timestamp = "2000-02-29T00:00:00Z".parse().unwrap();
        assert_eq!(whole_seconds(leap_day), leap_day);
    }
}
