//! Durations as people write them in scenario files: `200ms`, `2s`, `1.5s`, `1m`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// A duration that could not be read; says what it got and what it expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {reason}")]
pub struct DurationError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The longest duration a scenario may give: 100 years. Anything longer is
/// a typo, and adding it to an instant would overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600 + 25 * 24 * 3600);

/// `now + d`, or a time about 30 years on if that overflows: instants never
/// overflow, whatever a duration says.
pub(crate) fn later(now: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    now.checked_add(d.min(FAR)).unwrap_or(now)
}

/// Parses `"200ms"`, `"2s"`, `"1.5s"`, `"3m"`, `"1h"`, `"250us"`, or `"0"`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(procession::parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
/// assert!(procession::parse_duration("5 parsecs").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        input: input.to_string(),
        reason: "expected a number with a unit (us, ms, s, m, h), e.g. `200ms` or `1.5s`",
    };
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(err)?;
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| err())?;
    let scale = match unit.trim() {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    let d = Duration::try_from_secs_f64(value * scale).map_err(|_| err())?;
    if d > MAX_DURATION {
        return Err(DurationError {
            input: input.to_string(),
            reason: "it is over 100 years, the longest allowed",
        });
    }
    Ok(d)
}

/// Formats a duration the way [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if d.is_zero() {
        "0".to_string()
    } else if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if ms.fract() == 0.0 {
        format!("{ms}ms")
    } else {
        format!("{}us", d.as_micros())
    }
}

/// `#[serde(with = "crate::duration::serde_text")]` for `Duration` fields.
pub(crate) mod serde_text {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "crate::duration::serde_text_opt")]` for
/// `Option<Duration>` fields (with `default` for a missing key).
pub(crate) mod serde_text_opt {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serde_text::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::serde_text::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse() {
        let cases = [
            ("0", Duration::ZERO),
            ("250us", Duration::from_micros(250)),
            ("200ms", Duration::from_millis(200)),
            ("2s", Duration::from_secs(2)),
            ("1.5s", Duration::from_millis(1500)),
            ("3m", Duration::from_secs(180)),
            ("1h", Duration::from_secs(3600)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).unwrap(), want, "{text}");
            assert_eq!(parse_duration(&format_duration(want)).unwrap(), want);
        }
    }

    #[test]
    fn nonsense_is_refused() {
        for text in ["", "s", "10", "10 parsecs", "-1s", "1..2s", "ms5"] {
            let e = parse_duration(text).unwrap_err();
            assert_eq!(e.input, text);
        }
    }
}
