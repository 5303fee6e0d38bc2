//! Silence lengths and the timestamps Alertmanager's API exchanges (RFC 3339, UTC).

use std::time::Duration;

use jiff::Timestamp;

/// Why a silence length cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(transparent)]
    Syntax(#[from] infermon_instrument::duration::DurationError),
    #[error("`{0}` is shorter than a second; a silence lasts e.g. 30m, 2h30m or 1d")]
    TooShort(String),
}

/// Silence lengths, in the syntax of every infermon duration (`90m`, `2h30m`, `1.5h`, `1d`,
/// `1w`), to the second (silences are set and shown to the second).
pub fn parse_silence_duration(s: &str) -> Result<Duration, DurationError> {
    let length = infermon_instrument::duration::parse_duration(s)?;
    if length.as_secs() == 0 {
        return Err(DurationError::TooShort(s.trim().to_owned()));
    }
    Ok(Duration::from_secs(length.as_secs()))
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
        assert_eq!(
            parse_silence_duration("1.5h"),
            Ok(Duration::from_secs(5400))
        );
        for bad in ["", "h", "5 parsecs", "0m", "500ms", "-1h", "1e999w"] {
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
