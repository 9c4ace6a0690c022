//! Two JSON documents as pattern and value, and any text as a route or
//! readiness pattern: matching never panics, and a value matches itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use procession::internals::json_matches;
use procession::PatternSpec;
use procession::Frame;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (left, right) = text.split_once('\u{0}').unwrap_or((text, ""));
    let pattern = serde_json::from_str::<serde_json::Value>(left);
    let value = serde_json::from_str::<serde_json::Value>(right);
    if let (Ok(pattern), Ok(value)) = (&pattern, &value) {
        let _ = json_matches(pattern, value);
        assert!(json_matches(value, value));
    }
    let frame = match &value {
        Ok(v) => Frame::Json(v.clone()),
        Err(_) => Frame::line(right),
    };
    let spec = match pattern {
        Ok(serde_json::Value::Object(map)) => PatternSpec::Json(map),
        _ => PatternSpec::Regex(left.to_string()),
    };
    if let Ok(compiled) = spec.compile() {
        let _ = compiled.matches(&frame);
    }
});
