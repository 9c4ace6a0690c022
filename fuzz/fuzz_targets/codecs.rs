//! Any bytes, in any chunks, through every framing with a small cap: the
//! decoder never panics, never returns a frame over its cap, and ends.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use procession::internals::{Decoded, FrameDecoder};
use procession::{Frame, Framing};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let [mode, cap, step, rest @ ..] = data else {
        return;
    };
    let framing = match mode % 4 {
        0 => Framing::Lines,
        1 => Framing::Json,
        2 => Framing::Bytes,
        _ => Framing::LengthDelimited,
    };
    let cap = 4 + *cap as usize;
    let step = 1 + *step as usize;
    let mut decoder = FrameDecoder::new(framing, cap);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for chunk in rest.chunks(step) {
        buf.extend_from_slice(chunk);
        while let Some(item) = decoder.decode(&mut buf).expect("never fails") {
            items.push(item);
        }
    }
    let mut rounds = 0;
    while let Some(item) = decoder.decode_eof(&mut buf).expect("never fails") {
        items.push(item);
        rounds += 1;
        assert!(rounds <= rest.len() + 2, "decode_eof does not end");
    }
    for item in items {
        if let Decoded::Frame { frame, .. } = item {
            match (&frame, framing) {
                // The cap counts the child's bytes; each invalid byte
                // becomes U+FFFD (three bytes).
                (Frame::Line(line), Framing::Lines) => {
                    let bound = if line.contains('\u{FFFD}') { 3 * cap } else { cap };
                    assert!(line.len() <= bound)
                }
                (Frame::Bytes(bytes), _) => assert!(bytes.len() <= cap),
                _ => {}
            }
        }
    }
});
