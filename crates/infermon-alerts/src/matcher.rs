//! Label matchers: `name=value`, `name!=value`, `name=~regex`, `name!~regex`, as amtool and
//! Alertmanager's `filter` query parameter write them.

use std::fmt;
use std::str::FromStr;

use crate::api::SilenceMatcher;

/// How to write a matcher, for error messages.
const SYNTAX: &str =
    "write a matcher as name=value, name!=value, name=~regex or name!~regex (e.g. job=my-service)";

/// A label matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// Why a matcher could not be parsed; each says how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error("`{0}` has no operator; {SYNTAX}")]
    NoOperator(String),
    #[error("`{name}` in `{input}` is not a label name; {SYNTAX}")]
    BadName { name: String, input: String },
}

impl Matcher {
    pub fn equal(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            op: MatchOp::Equal,
            value: value.to_owned(),
        }
    }
}

impl FromStr for Matcher {
    type Err = MatcherError;

    fn from_str(s: &str) -> Result<Self, MatcherError> {
        // The leftmost operator, the longer one where two start at the same place: `a=~b`
        // has `=` and `=~` there, and `a!=b` has `!=` before its `=`.
        let (at, op, len) = [
            ("=~", MatchOp::Regex),
            ("!~", MatchOp::NotRegex),
            ("!=", MatchOp::NotEqual),
            ("=", MatchOp::Equal),
        ]
        .iter()
        .filter_map(|(token, op)| s.find(token).map(|at| (at, *op, token.len())))
        .min_by_key(|(at, _, len)| (*at, usize::MAX - len))
        .ok_or_else(|| MatcherError::NoOperator(s.to_owned()))?;
        let name = s[..at].trim();
        let value = unquote(s[at + len..].trim());
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(MatcherError::BadName {
                name: name.to_owned(),
                input: s.to_owned(),
            });
        }
        Ok(Self {
            name: name.to_owned(),
            op,
            value,
        })
    }
}

/// A matcher value as written: bare, or in double quotes with `\"` and `\\` escaped (the
/// form [`Matcher`]'s `Display` writes, so a printed matcher parses back to itself).
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next @ ('"' | '\\'))) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// Alertmanager's matcher syntax, as its `filter` query parameter and amtool take it.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        };
        let value = self.value.replace('\\', "\\\\").replace('"', "\\\"");
        write!(f, "{}{op}\"{value}\"", self.name)
    }
}

impl From<&SilenceMatcher> for Matcher {
    fn from(m: &SilenceMatcher) -> Self {
        Self {
            name: m.name.clone(),
            op: match (m.is_equal, m.is_regex) {
                (true, false) => MatchOp::Equal,
                (false, false) => MatchOp::NotEqual,
                (true, true) => MatchOp::Regex,
                (false, true) => MatchOp::NotRegex,
            },
            value: m.value.clone(),
        }
    }
}

/// `{alertname="X", job="y"}`.
pub fn display_matchers<'a>(matchers: impl IntoIterator<Item = &'a Matcher>) -> String {
    let inner: Vec<String> = matchers.into_iter().map(Matcher::to_string).collect();
    format!("{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_matcher_parses_back_to_itself() {
        for value in [r#"a"b"#, r"back\slash", r#"both\""#, "plain", ""] {
            let m = Matcher {
                name: "label".into(),
                op: MatchOp::Regex,
                value: value.into(),
            };
            let printed = m.to_string();
            assert_eq!(printed.parse::<Matcher>().unwrap(), m, "{printed}");
        }
    }

    #[test]
    fn matchers_parse_every_operator_and_print_in_alertmanager_syntax() {
        let cases = [
            ("job=svc", "job", MatchOp::Equal, "svc", r#"job="svc""#),
            ("job!=svc", "job", MatchOp::NotEqual, "svc", r#"job!="svc""#),
            (
                "instance=~a.*",
                "instance",
                MatchOp::Regex,
                "a.*",
                r#"instance=~"a.*""#,
            ),
            (
                "instance!~b|c",
                "instance",
                MatchOp::NotRegex,
                "b|c",
                r#"instance!~"b|c""#,
            ),
            (
                r#"model="llama 3""#,
                "model",
                MatchOp::Equal,
                "llama 3",
                r#"model="llama 3""#,
            ),
            ("expr=a=b", "expr", MatchOp::Equal, "a=b", r#"expr="a=b""#),
        ];
        for (input, name, op, value, shown) in cases {
            let m: Matcher = input.parse().unwrap();
            assert_eq!(
                (m.name.as_str(), m.op, m.value.as_str()),
                (name, op, value),
                "{input}"
            );
            assert_eq!(m.to_string(), shown, "{input}");
        }
        assert_eq!(Matcher::equal("a", r#"x"y\"#).to_string(), r#"a="x\"y\\""#);
    }

    #[test]
    fn bad_matchers_explain_the_syntax() {
        for bad in ["job", "=svc", "1job=svc", "my-label=x"] {
            let e = bad.parse::<Matcher>().unwrap_err().to_string();
            assert!(e.contains("name=value"), "{bad}: {e}");
        }
    }

    #[test]
    fn silence_matchers_round_trip() {
        for input in ["a=b", "a!=b", "a=~b.*", "a!~b|c"] {
            let m: Matcher = input.parse().unwrap();
            assert_eq!(Matcher::from(&SilenceMatcher::from(&m)), m, "{input}");
        }
        let both = ["a=1".parse().unwrap(), "b!~2".parse().unwrap()];
        assert_eq!(display_matchers(&both), r#"{a="1", b!~"2"}"#);
    }
}
