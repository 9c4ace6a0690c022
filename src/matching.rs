//! Matching frames against patterns: a regex on a line, or a partial JSON
//! object. Shared by routes, readiness, and (later) protocol steps.

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::frame::Frame;

/// Whether `value` has everything `pattern` names: every key of a pattern
/// object must be present with a matching value (recursively for objects);
/// arrays and scalars compare exactly.
///
/// ```
/// use serde_json::json;
/// use procession::matching::json_matches;
/// let reply = json!({"type": "welcome", "session": {"id": 7, "ttl": 30}});
/// assert!(json_matches(&json!({"session": {"id": 7}}), &reply));
/// assert!(!json_matches(&json!({"type": "bye"}), &reply));
/// ```
pub fn json_matches(pattern: &Value, value: &Value) -> bool {
    match (pattern, value) {
        (Value::Object(want), Value::Object(have)) => want
            .iter()
            .all(|(k, w)| have.get(k).is_some_and(|h| json_matches(w, h))),
        _ => pattern == value,
    }
}

/// A pattern as written in a scenario: a string is a regex, a table is a
/// partial JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PatternSpec {
    /// A regular expression, matched against one line (without its newline),
    /// or against the compact text of a JSON frame.
    Regex(String),
    /// A partial JSON object, matched against JSON frames.
    Json(serde_json::Map<String, Value>),
}

/// A compiled [`PatternSpec`].
#[derive(Debug, Clone)]
pub enum Pattern {
    /// See [`PatternSpec::Regex`].
    Regex(Regex),
    /// See [`PatternSpec::Json`].
    Json(Value),
}

impl PatternSpec {
    /// Compiles the pattern (a regex may be invalid).
    pub fn compile(&self) -> Result<Pattern, regex::Error> {
        Ok(match self {
            PatternSpec::Regex(re) => Pattern::Regex(Regex::new(re)?),
            PatternSpec::Json(map) => Pattern::Json(Value::Object(map.clone())),
        })
    }
}

impl Pattern {
    /// Whether `frame` matches. A regex matches lines, and JSON frames by
    /// their compact text; a JSON pattern matches only JSON frames. Raw bytes
    /// never match.
    pub fn matches(&self, frame: &Frame) -> bool {
        match (self, frame) {
            (Pattern::Regex(re), Frame::Line(line)) => re.is_match(line),
            (Pattern::Regex(re), Frame::Json(v)) => re.is_match(&v.to_string()),
            (Pattern::Json(p), Frame::Json(v)) => json_matches(p, v),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partial_objects_match_recursively_and_arrays_exactly() {
        let v = json!({"a": 1, "b": {"c": [1, 2], "d": null}, "e": "x"});
        assert!(json_matches(&json!({}), &v));
        assert!(json_matches(&json!({"b": {"c": [1, 2]}}), &v));
        assert!(json_matches(&json!({"b": {"d": null}}), &v));
        assert!(
            !json_matches(&json!({"b": {"c": [1]}}), &v),
            "arrays compare exactly"
        );
        assert!(
            !json_matches(&json!({"z": null}), &v),
            "a missing key is not null"
        );
        assert!(!json_matches(&json!({"a": "1"}), &v), "types differ");
        assert!(json_matches(&json!(3), &json!(3)));
    }

    #[test]
    fn patterns_from_toml_compile_and_match() {
        #[derive(Deserialize)]
        struct T {
            r: PatternSpec,
            j: PatternSpec,
        }
        let t: T = toml::from_str("r = \"^DATA \\\\d+$\"\nj = { type = \"syn\" }").unwrap();
        let r = t.r.compile().unwrap();
        let j = t.j.compile().unwrap();
        assert!(r.matches(&Frame::line("DATA 42")));
        assert!(!r.matches(&Frame::line("DATA x")));
        assert!(j.matches(&Frame::Json(json!({"type": "syn", "n": 1}))));
        assert!(!j.matches(&Frame::line("{\"type\":\"syn\"}")));
        assert!(PatternSpec::Regex("(".into()).compile().is_err());
    }
}
