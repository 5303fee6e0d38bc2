//! See what is firing in Alertmanager and acknowledge it, through Alertmanager's v2 API.
//!
//! Acknowledging an alert creates an Alertmanager *silence* for it: notifications stop for the
//! given time, the alert stays visible (as acknowledged, with who, why and until when), and it
//! notifies again if it is still firing when the silence ends. Withdrawing the acknowledgement
//! expires the silence early. This is the same mechanism as `amtool silence add/expire` and
//! Grafana's "Silence" button, so the three can be mixed (docs/alerting.md).
//!
//! ```text
//! Alertmanager::new(url)         the client; ::alerts, ::silences, ::create_silence, ::expire_silence
//!   ::list(&ListFilter)          firing alerts, most severe first
//!   ::acknowledge(&Acknowledgement) -> Acknowledged
//!   ::unacknowledge(target, &[Matcher]) -> the expired silences
//! write_table(out, &alerts, &silences)   the alert table `infermon alerts list` prints
//! Matcher: FromStr + Display    name=value, name!=value, name=~regex, name!~regex
//! parse_silence_duration        30m, 2h30m, 1d, 1w
//! ```
//!
//! Errors are [`Error`]; they describe what failed, not which command-line flag to change
//! (the `infermon` CLI adds that).

mod ack;
mod api;
mod list;
mod matcher;
mod time;

pub use ack::{Acknowledged, Acknowledgement};
pub use api::{
    Alert, AlertStatus, Alertmanager, Error, NewSilence, Silence, SilenceMatcher, SilenceStatus,
};
pub use list::{write_table, ListFilter};
pub use matcher::{display_matchers, MatchOp, Matcher, MatcherError};
pub use time::{parse_silence_duration, DurationError};
