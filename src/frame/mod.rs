//! [`Frame`]: one unit of a child's output or input, and the codecs that cut
//! byte streams into frames.
//!
//! | framing | a frame is | over the cap |
//! | --- | --- | --- |
//! | `lines` | one line without its `\n`, as UTF-8 (invalid bytes replaced and reported) | delivered in chunks marked partial, reported once as oversized |
//! | `json` | one JSON value on one line (blank lines skipped; invalid JSON reported, reading goes on) | reported once as oversized, the line skipped |
//! | `bytes` | whatever one read returned, at most the cap | split at the cap |
//! | `length_delimited` | a payload behind a u32 big-endian length | reported as oversized, the payload skipped |
//!
//! No codec ever holds more than about one cap of unread input, whatever the
//! child prints.

mod decode;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

pub use decode::{Decoded, FrameDecoder};

/// How a byte stream is cut into frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// One frame per line of UTF-8 text (the default).
    #[default]
    Lines,
    /// One JSON value per line.
    Json,
    /// Raw chunks as they are read.
    Bytes,
    /// Frames behind a 4-byte big-endian length prefix.
    LengthDelimited,
}

/// One frame of output from a child, or of input to it.
///
/// Serializes as `{"line": "..."}`, `{"json": ...}` or `{"bytes": "BASE64"}`,
/// the form it takes inside an `output` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    /// A line of text, without its newline.
    Line(String),
    /// One JSON value.
    Json(serde_json::Value),
    /// Raw bytes (a chunk, or one length-delimited payload).
    Bytes(#[serde(serialize_with = "base64_bytes")] Bytes),
}

fn base64_bytes<S: serde::Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

impl Frame {
    /// A line frame.
    pub fn line(text: impl Into<String>) -> Frame {
        Frame::Line(text.into())
    }

    /// The text of a line frame.
    pub fn as_line(&self) -> Option<&str> {
        match self {
            Frame::Line(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a JSON frame.
    pub fn as_json(&self) -> Option<&serde_json::Value> {
        match self {
            Frame::Json(v) => Some(v),
            _ => None,
        }
    }

    /// The payload size in bytes (for JSON, of its compact text).
    pub fn len(&self) -> usize {
        match self {
            Frame::Line(s) => s.len(),
            Frame::Json(v) => v.to_string().len(),
            Frame::Bytes(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the frame to `out` as it is written to a child whose stdin uses
    /// `framing`: lines and JSON get a trailing newline (JSON compact, so it
    /// stays on one line), bytes go as they are, and with `length_delimited`
    /// the payload gets its u32 big-endian length prefix.
    pub fn encode(&self, framing: Framing, out: &mut BytesMut) {
        let start = out.len();
        if framing == Framing::LengthDelimited {
            out.put_u32(0); // patched below
        }
        match self {
            Frame::Line(s) => out.extend_from_slice(s.as_bytes()),
            Frame::Json(v) => {
                serde_json::to_writer((&mut *out).writer(), v).expect("a Value always serializes")
            }
            Frame::Bytes(b) => out.extend_from_slice(b),
        }
        match framing {
            Framing::LengthDelimited => {
                let len = (out.len() - start - 4) as u32;
                out[start..start + 4].copy_from_slice(&len.to_be_bytes());
            }
            Framing::Lines | Framing::Json if !matches!(self, Frame::Bytes(_)) => out.put_u8(b'\n'),
            _ => {}
        }
    }

    /// The frame as written to a child with `framing` (see [`Frame::encode`]).
    pub fn to_bytes(&self, framing: Framing) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(framing, &mut out);
        out.freeze()
    }
}

impl From<&str> for Frame {
    fn from(s: &str) -> Frame {
        Frame::Line(s.to_string())
    }
}

impl From<String> for Frame {
    fn from(s: String) -> Frame {
        Frame::Line(s)
    }
}

impl From<serde_json::Value> for Frame {
    fn from(v: serde_json::Value) -> Frame {
        Frame::Json(v)
    }
}

impl From<Bytes> for Frame {
    fn from(b: Bytes) -> Frame {
        Frame::Bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encoding_matches_the_framing() {
        assert_eq!(&Frame::line("2+3").to_bytes(Framing::Lines)[..], b"2+3\n");
        assert_eq!(
            &Frame::Json(json!({"a": [1, 2]})).to_bytes(Framing::Json)[..],
            b"{\"a\":[1,2]}\n"
        );
        assert_eq!(
            &Frame::Bytes(Bytes::from_static(b"raw")).to_bytes(Framing::Lines)[..],
            b"raw"
        );
        assert_eq!(
            &Frame::line("hi").to_bytes(Framing::LengthDelimited)[..],
            b"\0\0\0\x02hi"
        );
    }
}
