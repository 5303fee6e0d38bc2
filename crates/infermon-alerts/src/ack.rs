//! Acknowledging alerts (creating a silence for them) and withdrawing acknowledgements
//! (expiring those silences).

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

use crate::api::{Alertmanager, Error, NewSilence, Silence, SilenceMatcher};
use crate::matcher::{display_matchers, Matcher};
use crate::time::whole_seconds;

/// An acknowledgement to make.
#[derive(Debug, Clone)]
pub struct Acknowledgement {
    /// The alert's name (its `alertname` label).
    pub alert: String,
    /// Narrows the acknowledgement to alerts with these labels too.
    pub matchers: Vec<Matcher>,
    /// How long notifications stay silent.
    pub duration: Duration,
    /// Why; shown to everyone who lists the alert.
    pub comment: String,
    /// Who acknowledges.
    pub author: String,
    /// Create the silence even when no firing alert matches (ahead of planned maintenance).
    pub force: bool,
}

/// An acknowledgement Alertmanager holds.
#[derive(Debug, Clone)]
pub struct Acknowledged {
    pub silence_id: String,
    /// The silence's matchers: the alert name, then the narrowing ones.
    pub matchers: Vec<Matcher>,
    /// How many firing alerts it silenced when made.
    pub firing: usize,
    pub ends_at: Timestamp,
    pub author: String,
}

/// `acknowledged {matchers} (N firing) until <time> by <author>: silence <id>`.
impl fmt::Display for Acknowledged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acknowledged {} ({} firing) until {} by {}: silence {}",
            display_matchers(&self.matchers),
            self.firing,
            self.ends_at,
            self.author,
            self.silence_id
        )
    }
}

impl Alertmanager {
    /// Silences the alert for `ack.duration` from now. Refuses when no firing alert matches,
    /// unless forced (a typo would otherwise silence nothing, silently).
    pub async fn acknowledge(&self, ack: &Acknowledgement) -> Result<Acknowledged, Error> {
        self.acknowledge_at(ack, Timestamp::now()).await
    }

    /// [`Alertmanager::acknowledge`] as if it were `now`.
    pub async fn acknowledge_at(
        &self,
        ack: &Acknowledgement,
        now: Timestamp,
    ) -> Result<Acknowledged, Error> {
        if ack.comment.trim().is_empty() {
            return Err(Error::NoComment);
        }
        let mut matchers = vec![Matcher::equal("alertname", &ack.alert)];
        matchers.extend(ack.matchers.iter().cloned());
        let firing = self.alerts(&matchers).await?;
        if firing.is_empty() && !ack.force {
            return Err(Error::NothingFiring(display_matchers(&matchers)));
        }
        let starts_at = whole_seconds(now);
        let ends_at = starts_at
            .checked_add(ack.duration)
            .map_err(|e| Error::TooLong(ack.duration, e))?;
        let silence = NewSilence {
            matchers: matchers.iter().map(SilenceMatcher::from).collect(),
            starts_at: starts_at.to_string(),
            ends_at: ends_at.to_string(),
            created_by: ack.author.clone(),
            comment: ack.comment.clone(),
        };
        let silence_id = self.create_silence(&silence).await?;
        Ok(Acknowledged {
            silence_id,
            matchers,
            firing: firing.len(),
            ends_at,
            author: ack.author.clone(),
        })
    }

    /// Expires the active silences on alert `target` that include every one of `matchers`, or,
    /// when `target` is a silence ID, that silence. Returns the expired silences.
    pub async fn unacknowledge(
        &self,
        target: &str,
        matchers: &[Matcher],
    ) -> Result<Vec<Silence>, Error> {
        let active = self
            .silences()
            .await?
            .into_iter()
            .filter(Silence::is_active);
        let chosen: Vec<Silence> = if looks_like_silence_id(target) {
            active.filter(|s| s.id == target).collect()
        } else {
            let mut wanted = vec![Matcher::equal("alertname", target)];
            wanted.extend(matchers.iter().cloned());
            active.filter(|s| s.includes_all(&wanted)).collect()
        };
        if chosen.is_empty() {
            return Err(Error::NoAcknowledgement(target.to_owned()));
        }
        for silence in &chosen {
            self.expire_silence(&silence.id).await?;
        }
        Ok(chosen)
    }
}

/// Silence IDs are UUIDs; alert names never look like one.
fn looks_like_silence_id(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_ids_are_recognised_and_alert_names_are_not() {
        assert!(looks_like_silence_id(
            "3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f"
        ));
        assert!(!looks_like_silence_id("InferenceHighErrorRatio"));
        assert!(!looks_like_silence_id(
            "3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6"
        ));
    }

    #[test]
    fn an_acknowledgement_says_what_until_when_and_by_whom() {
        let ack = Acknowledged {
            silence_id: "id".into(),
            matchers: vec![Matcher::equal("alertname", "A"), Matcher::equal("job", "x")],
            firing: 2,
            ends_at: "2099-12-31T23:59:59Z".parse().unwrap(),
            author: "alice".into(),
        };
        assert_eq!(
            ack.to_string(),
            r#"acknowledged {alertname="A", job="x"} (2 firing) until 2099-12-31T23:59:59Z by alice: silence id"#
        );
    }

    #[tokio::test]
    async fn an_acknowledgement_needs_a_comment_before_anything_is_sent() {
        // Nothing listens there: the comment is checked first.
        let am = Alertmanager::new("http://127.0.0.1:9").unwrap();
        let ack = Acknowledgement {
            alert: "A".into(),
            matchers: Vec::new(),
            duration: Duration::from_secs(60),
            comment: "  ".into(),
            author: "a".into(),
            force: false,
        };
        let e = am
            .acknowledge_at(&ack, Timestamp::UNIX_EPOCH)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NoComment), "{e}");
    }
}
