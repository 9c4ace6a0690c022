//! The decoder behind every framing: a `tokio_util` [`Decoder`] that never
//! fails and never grows without bound.
//!
//! `tokio_util::codec::LinesCodec` ends its stream on the first invalid UTF-8
//! or over-long line, after which the child dies of SIGPIPE. This one keeps
//! reading and reports what it could not decode as [`Decoded::Invalid`] or
//! [`Decoded::Oversized`].

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::{Frame, Framing};

/// What the decoder makes of the bytes: frames, and reports about bytes that
/// are not frames. Reports are never silent drops: each says what happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A frame. `partial` is true on every chunk of an over-long line but the
    /// last (the last chunk ends the line, like Erlang's `{eol, Line}`).
    Frame {
        /// The frame.
        frame: Frame,
        /// More of the same line follows.
        partial: bool,
    },
    /// An unterminated tail of a line (`lines` framing) that stayed so for a
    /// silence: a prompt such as `> ` or `Password: `. Made by the output
    /// pump with [`FrameDecoder::take_tail`], never by decoding alone.
    Prompt {
        /// The tail, lossily as text.
        text: String,
    },
    /// A frame was longer than the cap: reported once per frame.
    Oversized {
        /// The cap in bytes.
        limit: usize,
    },
    /// Bytes that could not be decoded (invalid UTF-8 or JSON, a truncated
    /// length-delimited frame). For `lines`, the line itself is still
    /// delivered, with U+FFFD in place of the bad bytes.
    Invalid {
        /// What was wrong.
        error: String,
        /// The start of the offending bytes, lossily as text.
        preview: String,
    },
    /// Whole lines as they were read, cut after the last newline (`lines`
    /// framing, only when [`FrameDecoder::chunks_when`] says so): valid
    /// UTF-8, none over the cap, so each is exactly the frame it would
    /// have been.
    Chunk {
        /// The lines, each with its newline.
        bytes: Bytes,
        /// How many.
        frames: usize,
    },
}

/// Cuts a byte stream into [`Decoded`] items for one [`Framing`].
#[derive(Debug)]
pub struct FrameDecoder {
    framing: Framing,
    cap: usize,
    /// Bytes at the front of the buffer already searched for a newline.
    scanned: usize,
    /// We are inside a line longer than the cap.
    long_line: bool,
    /// Length-delimited: payload bytes still to skip after an oversized header.
    skip: usize,
    pending: VecDeque<Decoded>,
    /// While set, whole lines come as one [`Decoded::Chunk`].
    chunks: Option<Arc<AtomicBool>>,
}

const PREVIEW_CHARS: usize = 60;

impl FrameDecoder {
    /// A decoder for `framing` with frames of at most `cap` bytes (at least 4).
    pub fn new(framing: Framing, cap: usize) -> FrameDecoder {
        FrameDecoder {
            framing,
            cap: cap.max(4),
            scanned: 0,
            long_line: false,
            skip: 0,
            pending: VecDeque::new(),
            chunks: None,
        }
    }

    /// While `flag` is set, `lines` framing decodes whole lines into one
    /// [`Decoded::Chunk`] per read instead of a frame each; a line that is
    /// not valid UTF-8 or is over the cap still goes frame by frame, with
    /// its report. The owner sets the flag when nobody looks at the frames
    /// (it only forwards and counts them) and may clear it at any time.
    pub fn chunks_when(mut self, flag: Arc<AtomicBool>) -> FrameDecoder {
        self.chunks = Some(flag);
        self
    }

    /// Takes the whole lines at the front of `buf` as one chunk, up to
    /// before the first that is not valid UTF-8 or is over the cap; false
    /// when there are none (the first line goes frame by frame).
    fn decode_chunk(&mut self, buf: &mut BytesMut) -> bool {
        // Before `scanned` there is no newline.
        let Some(last) = memchr::memrchr(b'\n', &buf[self.scanned..]) else {
            return false;
        };
        let lines = &buf[..self.scanned + last + 1];
        let mut end = match std::str::from_utf8(lines) {
            Ok(_) => lines.len(),
            Err(e) => memchr::memrchr(b'\n', &lines[..e.valid_up_to()]).map_or(0, |i| i + 1),
        };
        let (mut frames, mut start) = (0, 0);
        for newline in memchr::memchr_iter(b'\n', &lines[..end]) {
            if newline - start > self.cap {
                end = start;
                break;
            }
            frames += 1;
            start = newline + 1;
        }
        if frames == 0 {
            return false;
        }
        let bytes = buf.split_to(end).freeze();
        self.scanned = 0;
        self.pending.push_back(Decoded::Chunk { bytes, frames });
        true
    }

    fn chunking(&self) -> bool {
        !self.long_line
            && self
                .chunks
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    fn decode_lines(&mut self, buf: &mut BytesMut, eof: bool) {
        // A line of exactly `cap` bytes plus its newline still fits.
        let limit = buf.len().min(self.cap + 1);
        match memchr::memchr(b'\n', &buf[self.scanned..limit]) {
            Some(i) => {
                let mut line = buf.split_to(self.scanned + i + 1);
                line.truncate(line.len() - 1);
                self.scanned = 0;
                let was_long = std::mem::take(&mut self.long_line);
                self.finish_line(line, was_long);
            }
            None if buf.len() > self.cap => {
                let cut = char_boundary_before(buf, self.cap);
                let chunk = buf.split_to(cut);
                self.scanned = 0;
                if !self.long_line {
                    self.long_line = true;
                    self.pending
                        .push_back(Decoded::Oversized { limit: self.cap });
                }
                if self.framing == Framing::Lines {
                    self.push_text(chunk, true);
                }
            }
            None if eof && !buf.is_empty() => {
                let line = buf.split();
                self.scanned = 0;
                let was_long = std::mem::take(&mut self.long_line);
                self.finish_line(line, was_long);
            }
            None => self.scanned = buf.len(),
        }
    }

    /// A whole line, or the last piece of an over-long one.
    fn finish_line(&mut self, line: BytesMut, was_long: bool) {
        match self.framing {
            Framing::Json if was_long => {} // its start was already reported oversized
            Framing::Json => self.push_json(line),
            _ => self.push_text(line, false),
        }
    }

    fn push_text(&mut self, bytes: BytesMut, partial: bool) {
        let text = match String::from_utf8(bytes.to_vec()) {
            Ok(text) => text,
            Err(e) => {
                let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
                self.pending.push_back(Decoded::Frame {
                    frame: Frame::Line(text),
                    partial,
                });
                self.pending.push_back(Decoded::Invalid {
                    error: format!(
                        "invalid UTF-8 at byte {} (replaced with U+FFFD)",
                        e.utf8_error().valid_up_to()
                    ),
                    preview: preview(e.as_bytes()),
                });
                return;
            }
        };
        self.pending.push_back(Decoded::Frame {
            frame: Frame::Line(text),
            partial,
        });
    }

    fn push_json(&mut self, line: BytesMut) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match serde_json::from_slice(&line) {
            Ok(value) => self.pending.push_back(Decoded::Frame {
                frame: Frame::Json(value),
                partial: false,
            }),
            Err(e) => self.pending.push_back(Decoded::Invalid {
                error: format!("invalid JSON: {e}"),
                preview: preview(&line),
            }),
        }
    }

    fn decode_length_delimited(&mut self, buf: &mut BytesMut, eof: bool) {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            buf.advance(n);
            self.skip -= n;
            if self.skip > 0 {
                return;
            }
        }
        if buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len > self.cap {
                buf.advance(4);
                self.skip = len;
                self.pending
                    .push_back(Decoded::Oversized { limit: self.cap });
                return;
            }
            if buf.len() >= 4 + len {
                buf.advance(4);
                let payload = buf.split_to(len).freeze();
                self.pending.push_back(Decoded::Frame {
                    frame: Frame::Bytes(payload),
                    partial: false,
                });
                return;
            }
            buf.reserve(4 + len - buf.len());
        }
        if eof && !buf.is_empty() {
            let rest = buf.split();
            self.pending.push_back(Decoded::Invalid {
                error: format!(
                    "stream ended inside a frame ({} bytes left over)",
                    rest.len()
                ),
                preview: preview(&rest),
            });
        }
    }

    fn decode_bytes(&mut self, buf: &mut BytesMut) {
        if !buf.is_empty() {
            let n = buf.len().min(self.cap);
            self.pending.push_back(Decoded::Frame {
                frame: Frame::Bytes(buf.split_to(n).freeze()),
                partial: false,
            });
        }
    }

    fn step(&mut self, buf: &mut BytesMut, eof: bool) -> Option<Decoded> {
        // One call may queue several items (a frame and its report); when it
        // queues none and consumes nothing, more input is needed.
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            let before = buf.len();
            let framing = self.framing;
            match framing {
                Framing::Lines if self.chunking() && self.decode_chunk(buf) => {}
                Framing::Lines | Framing::Json => self.decode_lines(buf, eof),
                Framing::LengthDelimited => self.decode_length_delimited(buf, eof),
                Framing::Bytes => self.decode_bytes(buf),
            }
            if self.pending.is_empty() && buf.len() == before {
                return None;
            }
        }
    }
}

impl FrameDecoder {
    /// Takes the unterminated tail of a line out of `buf` (what follows the
    /// last newline), for `lines` framing, when nothing else is pending: a
    /// prompt. The rest of its line, when it comes, is a frame of its own.
    /// Not in the middle of an over-long line (its chunks go on), and never
    /// empty.
    pub fn take_tail(&mut self, buf: &mut BytesMut) -> Option<String> {
        if self.framing != Framing::Lines
            || self.long_line
            || buf.is_empty()
            || !self.pending.is_empty()
            || memchr::memchr(b'\n', buf).is_some()
        {
            return None;
        }
        let tail = buf.split();
        self.scanned = 0;
        Some(String::from_utf8_lossy(&tail).into_owned())
    }
}

impl Decoder for FrameDecoder {
    type Item = Decoded;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Decoded>> {
        Ok(self.step(buf, false))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Decoded>> {
        Ok(self.step(buf, true))
    }
}

/// The largest cut at or before `at` that does not split a UTF-8 sequence:
/// if one of the last three bytes before `at` starts a character that needs
/// more bytes than remain before `at`, cut before it. (Bytes that are not
/// UTF-8 at all are cut at `at`.)
fn char_boundary_before(buf: &[u8], at: usize) -> usize {
    for back in 1..=at.min(3) {
        let b = buf[at - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back for its lead
        }
        let needs = match b {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if needs > back && at > back {
            at - back
        } else {
            at
        };
    }
    at
}

fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(PREVIEW_CHARS * 4)]);
    let mut out: String = text.chars().take(PREVIEW_CHARS).collect();
    if out.len() < bytes.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode_all(framing: Framing, cap: usize, input: &[&[u8]]) -> Vec<Decoded> {
        let mut d = FrameDecoder::new(framing, cap);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input {
            buf.extend_from_slice(piece);
            while let Some(item) = d.decode(&mut buf).unwrap() {
                out.push(item);
            }
        }
        while let Some(item) = d.decode_eof(&mut buf).unwrap() {
            out.push(item);
        }
        assert!(buf.is_empty(), "the decoder consumed everything at EOF");
        out
    }

    fn line(s: &str, partial: bool) -> Decoded {
        Decoded::Frame {
            frame: Frame::line(s),
            partial,
        }
    }

    #[test]
    fn lines_split_across_reads_and_a_last_line_without_newline() {
        let got = decode_all(Framing::Lines, 1024, &[b"one\ntw", b"o\n\nthr", b"ee"]);
        assert_eq!(
            got,
            [
                line("one", false),
                line("two", false),
                line("", false),
                line("three", false)
            ]
        );
    }

    #[test]
    fn an_over_long_line_comes_in_partial_chunks_reported_once() {
        let got = decode_all(Framing::Lines, 4, &[b"abcdefghij\nok\n"]);
        assert_eq!(
            got,
            [
                Decoded::Oversized { limit: 4 },
                line("abcd", true),
                line("efgh", true),
                line("ij", false),
                line("ok", false),
            ]
        );
    }

    #[test]
    fn chunks_do_not_split_a_utf8_character() {
        // "aéé" is 61 C3 A9 C3 A9: a cut at 4 would split the second é.
        let got = decode_all(Framing::Lines, 4, &["aééz\n".as_bytes()]);
        assert_eq!(
            got,
            [
                Decoded::Oversized { limit: 4 },
                line("aé", true),
                line("éz", false)
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_and_reported() {
        let got = decode_all(Framing::Lines, 64, &[b"ok\nbad\xff\xfeend\nfine\n"]);
        assert_eq!(got[0], line("ok", false));
        assert_eq!(got[1], line("bad\u{fffd}\u{fffd}end", false));
        match &got[2] {
            Decoded::Invalid { error, preview } => {
                assert!(error.contains("invalid UTF-8 at byte 3"), "{error}");
                assert!(preview.starts_with("bad"), "{preview}");
            }
            other => panic!("expected a report, got {other:?}"),
        }
        assert_eq!(got[3], line("fine", false));
    }

    #[test]
    fn json_values_invalid_json_and_blank_lines() {
        let got = decode_all(
            Framing::Json,
            64,
            &[b"{\"a\":1}\n\n  \nnot json\n[1,2]\n\"s\""],
        );
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            Decoded::Frame {
                frame: Frame::Json(json!({"a": 1})),
                partial: false
            }
        );
        assert!(
            matches!(&got[1], Decoded::Invalid { error, preview } if error.starts_with("invalid JSON") && preview == "not json")
        );
        assert_eq!(
            got[2],
            Decoded::Frame {
                frame: Frame::Json(json!([1, 2])),
                partial: false
            }
        );
        assert_eq!(
            got[3],
            Decoded::Frame {
                frame: Frame::Json(json!("s")),
                partial: false
            }
        );
    }

    #[test]
    fn an_over_long_json_line_is_reported_and_skipped() {
        let got = decode_all(Framing::Json, 8, &[b"{\"k\":\"0123456789\"}\n{\"a\":2}\n"]);
        assert_eq!(
            got,
            [
                Decoded::Oversized { limit: 8 },
                Decoded::Frame {
                    frame: Frame::Json(json!({"a": 2})),
                    partial: false
                }
            ]
        );
    }

    #[test]
    fn length_delimited_frames_oversized_and_truncated() {
        let mut input = Vec::new();
        for payload in [&b"hi"[..], b"0123456789", b"", b"end"] {
            input.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            input.extend_from_slice(payload);
        }
        input.extend_from_slice(&[0, 0, 0, 7, b'x']); // truncated: 1 of 7 bytes
                                                      // Feed byte by byte: every boundary is exercised.
        let pieces: Vec<&[u8]> = input.chunks(1).collect();
        let got = decode_all(Framing::LengthDelimited, 8, &pieces);
        let bytes = |b: &'static [u8]| Decoded::Frame {
            frame: Frame::Bytes(bytes::Bytes::from_static(b)),
            partial: false,
        };
        assert_eq!(got[0], bytes(b"hi"));
        assert_eq!(got[1], Decoded::Oversized { limit: 8 });
        assert_eq!(got[2], bytes(b""));
        assert_eq!(got[3], bytes(b"end"));
        assert!(
            matches!(&got[4], Decoded::Invalid { error, .. } if error.contains("5 bytes left over")),
            "{:?}",
            got[4]
        );
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn bytes_are_cut_at_the_cap() {
        let got = decode_all(Framing::Bytes, 4, &[b"0123456789"]);
        let sizes: Vec<usize> = got
            .iter()
            .map(|d| match d {
                Decoded::Frame { frame, .. } => frame.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, [4, 4, 2]);
    }

    #[test]
    fn the_buffer_never_holds_much_more_than_the_cap() {
        let mut d = FrameDecoder::new(Framing::Lines, 1024);
        let mut buf = BytesMut::new();
        let mut total = 0;
        for _ in 0..1000 {
            buf.extend_from_slice(&[b'x'; 700]);
            while let Some(item) = d.decode(&mut buf).unwrap() {
                if let Decoded::Frame { frame, .. } = item {
                    total += frame.len();
                }
            }
            assert!(buf.len() <= 1024 + 700, "buffer grew to {}", buf.len());
        }
        while let Some(Decoded::Frame { frame, .. }) = d.decode_eof(&mut buf).unwrap() {
            total += frame.len();
        }
        assert_eq!(total, 700_000);
    }
}
