//! Captures: values taken from matched frames and used later as `${name}`.
//!
//! - A regex's named groups capture text: `line = "session (?P<sid>\\w+)"`.
//! - In a JSON pattern, a string value that is exactly `"${name}"` matches
//!   any value and captures it: `json = { type = "welcome", session = "${sid}" }`.
//! - In a `send`, `${name}` is replaced: inside a line or a longer string
//!   by the value's text; a JSON string that is exactly `"${name}"` by the
//!   captured value itself, keeping its type.

use std::collections::HashMap;

use regex::Regex;
use serde_json::Value;

use crate::frame::Frame;
use crate::matching::Pattern;

pub(crate) type Captures = HashMap<String, Value>;

/// The name in a whole-string placeholder `${name}`.
fn placeholder(s: &str) -> Option<&str> {
    let name = s.strip_prefix("${")?.strip_suffix('}')?;
    (!name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_')).then_some(name)
}

/// Whether `frame` matches `pattern`; on a match, its captures are added.
pub(crate) fn match_frame(pattern: &Pattern, frame: &Frame, captures: &mut Captures) -> bool {
    match (pattern, frame) {
        (Pattern::Regex(re), Frame::Line(line)) => match_regex(re, line, captures),
        (Pattern::Regex(re), Frame::Json(v)) => match_regex(re, &v.to_string(), captures),
        (Pattern::Regex(re), Frame::Bytes(b)) => {
            match_regex(re, &String::from_utf8_lossy(b), captures)
        }
        (Pattern::Json(p), Frame::Json(v)) => match_json_into(p, v, captures),
        (Pattern::Json(p), Frame::Line(line)) => {
            crate::matching::json_of_line(line).is_some_and(|v| match_json_into(p, &v, captures))
        }
        (Pattern::Json(_), Frame::Bytes(_)) => false,
    }
}

fn match_json_into(pattern: &Value, value: &Value, captures: &mut Captures) -> bool {
    let mut found = Vec::new();
    if match_json(pattern, value, &mut found) {
        captures.extend(found);
        true
    } else {
        false
    }
}

fn match_regex(re: &Regex, text: &str, captures: &mut Captures) -> bool {
    let Some(caps) = re.captures(text) else {
        return false;
    };
    for name in re.capture_names().flatten() {
        if let Some(m) = caps.name(name) {
            captures.insert(name.to_string(), Value::String(m.as_str().to_string()));
        }
    }
    true
}

/// Partial matching (see `matching::json_matches`) where `"${name}"` is a
/// wildcard that captures.
fn match_json(pattern: &Value, value: &Value, found: &mut Vec<(String, Value)>) -> bool {
    match (pattern, value) {
        (Value::String(s), v) if placeholder(s).is_some() => {
            found.push((placeholder(s).expect("checked").to_string(), v.clone()));
            true
        }
        (Value::Object(want), Value::Object(have)) => want
            .iter()
            .all(|(k, w)| have.get(k).is_some_and(|h| match_json(w, h, found))),
        _ => pattern == value,
    }
}

/// Replaces `${name}` in text. Unknown names are left as they are (the
/// scenario check reports them before anything runs).
pub(crate) fn substitute_text(text: &str, captures: &Captures) -> String {
    if !text.contains("${") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) if captures.contains_key(&after[..end]) => {
                match &captures[&after[..end]] {
                    Value::String(s) => out.push_str(s),
                    other => out.push_str(&other.to_string()),
                }
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Replaces placeholders inside a JSON value.
pub(crate) fn substitute_json(value: &Value, captures: &Captures) -> Value {
    match value {
        Value::String(s) => match placeholder(s).and_then(|n| captures.get(n)) {
            Some(v) => v.clone(),
            None => Value::String(substitute_text(s, captures)),
        },
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| substitute_json(v, captures)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute_json(v, captures)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The names a pattern captures.
pub(crate) fn defined_by(pattern: &Pattern) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.extend(placeholder(s).map(str::to_string)),
            Value::Object(m) => m.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match pattern {
        Pattern::Regex(re) => out.extend(re.capture_names().flatten().map(str::to_string)),
        Pattern::Json(v) => walk(v, &mut out),
    }
    out
}

/// The names a text or JSON value uses as `${name}`.
pub(crate) fn used_by(value: &Value) -> Vec<String> {
    fn text(s: &str, out: &mut Vec<String>) {
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) => {
                    let name = &after[..end];
                    if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                        out.push(name.to_string());
                    }
                    rest = &after[end + 1..];
                }
                None => break,
            }
        }
    }
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => text(s, out),
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            Value::Object(m) => m.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::PatternSpec;
    use serde_json::json;

    fn json_pattern(v: Value) -> Pattern {
        PatternSpec::Json(v.as_object().unwrap().clone())
            .compile()
            .unwrap()
    }

    #[test]
    fn json_placeholders_match_anything_and_capture_it() {
        let p =
            json_pattern(json!({"type": "welcome", "session": "${sid}", "user": {"id": "${uid}"}}));
        let mut caps = Captures::new();
        let frame =
            Frame::Json(json!({"type": "welcome", "session": 42, "user": {"id": "u7", "x": 1}}));
        assert!(match_frame(&p, &frame, &mut caps));
        assert_eq!(caps["sid"], json!(42));
        assert_eq!(caps["uid"], json!("u7"));
        let mut none = Captures::new();
        assert!(!match_frame(
            &p,
            &Frame::Json(json!({"type": "bye", "session": 1, "user": {"id": 1}})),
            &mut none
        ));
        assert!(
            none.is_empty(),
            "no captures from a frame that does not match"
        );
        let mut names = defined_by(&p);
        names.sort();
        assert_eq!(names, ["sid", "uid"]);
    }

    #[test]
    fn regex_named_groups_capture_text() {
        let p = PatternSpec::Regex(r"^session (?P<sid>\w+)$".into())
            .compile()
            .unwrap();
        let mut caps = Captures::new();
        assert!(match_frame(&p, &Frame::line("session abc123"), &mut caps));
        assert_eq!(caps["sid"], json!("abc123"));
        assert_eq!(defined_by(&p), ["sid"]);
    }

    #[test]
    fn substitution_keeps_json_types_and_interpolates_text() {
        let mut caps = Captures::new();
        caps.insert("sid".into(), json!(42));
        caps.insert("name".into(), json!("ann"));
        assert_eq!(
            substitute_text("hello ${name}, #${sid} ${nope}", &caps),
            "hello ann, #42 ${nope}"
        );
        assert_eq!(
            substitute_json(
                &json!({"session": "${sid}", "greeting": "hi ${name}", "list": ["${name}"]}),
                &caps
            ),
            json!({"session": 42, "greeting": "hi ann", "list": ["ann"]})
        );
        let mut used =
            used_by(&json!({"a": "${sid}", "b": ["x ${name} y"], "c": "$${", "d": "${}"}));
        used.sort();
        assert_eq!(used, ["name", "sid"]);
    }
}
