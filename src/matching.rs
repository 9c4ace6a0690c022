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
/// use procession::internals::json_matches;
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

/// A regex: `"^DATA".into()`.
impl From<&str> for PatternSpec {
    fn from(regex: &str) -> PatternSpec {
        PatternSpec::Regex(regex.to_string())
    }
}

/// A regex.
impl From<String> for PatternSpec {
    fn from(regex: String) -> PatternSpec {
        PatternSpec::Regex(regex)
    }
}

/// A partial JSON object.
impl From<serde_json::Map<String, Value>> for PatternSpec {
    fn from(partial: serde_json::Map<String, Value>) -> PatternSpec {
        PatternSpec::Json(partial)
    }
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
    #[doc(hidden)]
    pub fn compile(&self) -> Result<Pattern, regex::Error> {
        Ok(match self {
            PatternSpec::Regex(re) => Pattern::Regex(Regex::new(re)?),
            PatternSpec::Json(map) => Pattern::Json(Value::Object(map.clone())),
        })
    }
}

impl Pattern {
    /// Whether `frame` matches, whatever its framing. A regex matches a
    /// line, the compact text of a JSON frame, or a bytes frame read as
    /// UTF-8 (lossily); a JSON pattern matches a JSON frame, or a line whose
    /// text is a JSON object.
    pub fn matches(&self, frame: &Frame) -> bool {
        match (self, frame) {
            (Pattern::Regex(re), Frame::Line(line)) => re.is_match(line),
            (Pattern::Regex(re), Frame::Json(v)) => re.is_match(&v.to_string()),
            (Pattern::Regex(re), Frame::Bytes(b)) => re.is_match(&String::from_utf8_lossy(b)),
            (Pattern::Json(p), Frame::Json(v)) => json_matches(p, v),
            (Pattern::Json(p), Frame::Line(line)) => {
                json_of_line(line).is_some_and(|v| json_matches(p, &v))
            }
            (Pattern::Json(_), Frame::Bytes(_)) => false,
        }
    }
}

/// The JSON object a line holds, if it is one (a JSON pattern is always an
/// object: other lines are not parsed at all).
pub(crate) fn json_of_line(line: &str) -> Option<Value> {
    let text = line.trim();
    if !text.starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
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
        assert!(
            j.matches(&Frame::line("{\"type\":\"syn\"}")),
            "a line that is JSON"
        );
        assert!(!j.matches(&Frame::line("type syn")));
        assert!(PatternSpec::Regex("(".into()).compile().is_err());
    }

    #[test]
    fn a_regex_reads_bytes_as_text_and_json_reads_lines_that_are_json() {
        let r = PatternSpec::Regex("^ok \\d$".into()).compile().unwrap();
        assert!(r.matches(&Frame::Bytes(bytes::Bytes::from_static(b"ok 7"))));
        assert!(!r.matches(&Frame::Bytes(bytes::Bytes::from_static(b"no 7"))));
        let j = PatternSpec::Json(json!({"n": 1}).as_object().unwrap().clone())
            .compile()
            .unwrap();
        assert!(j.matches(&Frame::line("  {\"n\": 1, \"m\": 2}")));
        assert!(!j.matches(&Frame::line("{\"n\": 2}")));
        assert!(!j.matches(&Frame::line("{not json")));
        assert!(!j.matches(&Frame::Bytes(bytes::Bytes::from_static(b"{\"n\": 1}"))));
    }
}
