//! A label matcher as `infermon alerts` takes it on the command line (`list --filter`,
//! `ack --matcher`): `infermon_alerts::Matcher`'s `FromStr`. Must never panic; what it
//! accepts has a label name, and the Alertmanager syntax it prints for the API parses back to
//! the same matcher (name, operator and value, escapes included).
#![no_main]

use infermon_alerts::Matcher;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(matcher) = text.parse::<Matcher>() else {
        return;
    };
    assert!(!matcher.name.is_empty());
    let printed = matcher.to_string();
    let again: Matcher = printed
        .parse()
        .unwrap_or_else(|e| panic!("{printed:?} does not parse back: {e}"));
    assert_eq!(again, matcher, "{printed:?}");
});
