//! Quick property tests of the parsers (the cargo-fuzz targets in `fuzz/`
//! run the same inputs for much longer; see RELIABILITY.md).

use bytes::BytesMut;
use procession::internals::json_matches;
use procession::internals::{Decoded, FrameDecoder};
use procession::{Frame, Framing};
use proptest::prelude::*;
use serde_json::Value;
use tokio_util::codec::Decoder;

fn decode_in_chunks(framing: Framing, cap: usize, data: &[u8], step: usize) -> Vec<Decoded> {
    decode_with(FrameDecoder::new(framing, cap), data, step)
}

fn decode_with(mut decoder: FrameDecoder, data: &[u8], step: usize) -> Vec<Decoded> {
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for chunk in data.chunks(step.max(1)) {
        buf.extend_from_slice(chunk);
        while let Some(item) = decoder.decode(&mut buf).unwrap() {
            items.push(item);
        }
    }
    while let Some(item) = decoder.decode_eof(&mut buf).unwrap() {
        items.push(item);
    }
    items
}

/// Bytes with many newlines, braces and quotes, some invalid UTF-8.
fn wire() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => any::<u8>(),
            3 => Just(b'\n'),
            1 => Just(b'{'),
            1 => Just(b'}'),
            1 => Just(b'"'),
            1 => Just(b'\r'),
        ],
        0..400,
    )
}

/// Chunks expanded into the frames of their lines; and how many chunks.
fn expand(items: Vec<Decoded>) -> (Vec<Decoded>, usize) {
    let mut chunks = 0;
    let mut out = Vec::new();
    for item in items {
        match item {
            Decoded::Chunk { bytes, frames } => {
                chunks += 1;
                assert_eq!(bytes.last(), Some(&b'\n'), "a chunk ends a line");
                let text = std::str::from_utf8(&bytes).expect("a chunk is valid UTF-8");
                let lines: Vec<&str> = text.strip_suffix('\n').unwrap().split('\n').collect();
                assert_eq!(lines.len(), frames, "a chunk counts its lines");
                out.extend(lines.into_iter().map(|l| Decoded::Frame {
                    frame: Frame::line(l),
                    partial: false,
                }));
            }
            other => out.push(other),
        }
    }
    (out, chunks)
}

proptest! {
    #[test]
    fn chunked_lines_are_exactly_the_frames_they_stand_for(
        data in wire(),
        cap in 4usize..80,
        step in 1usize..64,
        chunking in any::<bool>(),
    ) {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(chunking));
        let decoder = FrameDecoder::new(Framing::Lines, cap).chunks_when(flag);
        let (chunked, chunks) = expand(decode_with(decoder, &data, step));
        prop_assert_eq!(chunked, decode_in_chunks(Framing::Lines, cap, &data, step));
        if !chunking {
            prop_assert_eq!(chunks, 0);
        }
    }

    #[test]
    fn chunks_carry_many_lines_at_once(lines in 1usize..200, step in 1usize..4096) {
        let data: Vec<u8> = (0..lines).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let decoder = FrameDecoder::new(Framing::Lines, 64).chunks_when(flag);
        let (frames, chunks) = expand(decode_with(decoder, &data, step));
        prop_assert_eq!(frames.len(), lines);
        // At most one chunk per read.
        prop_assert!(chunks <= data.len().div_ceil(step));
    }

    #[test]
    fn framing_does_not_depend_on_how_reads_are_cut(
        data in wire(),
        cap in 4usize..80,
        a in 1usize..64,
        b in 1usize..64,
        mode in 0usize..3,
    ) {
        let framing = [Framing::Lines, Framing::Json, Framing::LengthDelimited][mode];
        prop_assert_eq!(
            decode_in_chunks(framing, cap, &data, a),
            decode_in_chunks(framing, cap, &data, b)
        );
    }

    #[test]
    fn no_line_exceeds_the_cap_and_bytes_lose_nothing(data in wire(), cap in 4usize..80, step in 1usize..64) {
        for item in decode_in_chunks(Framing::Lines, cap, &data, step) {
            if let Decoded::Frame { frame: Frame::Line(line), .. } = item {
                // The cap counts the child's bytes; an invalid byte becomes
                // U+FFFD, three bytes, so only a valid line fits the cap as is.
                let bound = if line.contains('\u{FFFD}') { 3 * cap } else { cap };
                prop_assert!(line.len() <= bound, "{} > {bound}", line.len());
            }
        }
        let mut joined = Vec::new();
        for item in decode_in_chunks(Framing::Bytes, cap, &data, step) {
            match item {
                Decoded::Frame { frame: Frame::Bytes(b), .. } => {
                    prop_assert!(b.len() <= cap);
                    joined.extend_from_slice(&b);
                }
                other => prop_assert!(false, "bytes framing reported {other:?}"),
            }
        }
        prop_assert_eq!(joined, data);
    }

    #[test]
    fn any_text_is_a_scenario_or_located_errors(text in "(\\PC|\n|\\[|\\]|=|\"){0,300}") {
        if let Err(e) = procession::scenario::parse(&text, std::path::Path::new("p.toml")) {
            prop_assert!(e.to_string().contains("p.toml"));
        }
    }

    #[test]
    fn mangled_example_scenarios_never_panic(cut in any::<prop::sample::Index>(), keep in any::<prop::sample::Index>()) {
        for example in ["demo.toml", "two_phase_commit.toml", "pipeline.toml"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(example);
            let text = std::fs::read_to_string(&path).unwrap();
            // Drop one line, and cut the text short somewhere.
            let lines: Vec<&str> = text.lines().collect();
            let drop = cut.index(lines.len());
            let mangled: String = lines.iter().enumerate().filter(|(i, _)| *i != drop).map(|(_, l)| format!("{l}\n")).collect();
            let mut end = keep.index(mangled.len() + 1);
            while !mangled.is_char_boundary(end) { end -= 1; }
            let _ = procession::scenario::parse(&mangled, &path);
            let _ = procession::scenario::parse(&mangled[..end], &path);
        }
    }

    #[test]
    fn a_value_matches_itself_and_its_parts(value in json()) {
        prop_assert!(json_matches(&value, &value));
        if let Value::Object(map) = &value {
            for (k, v) in map {
                let part = serde_json::json!({ k.clone(): v.clone() });
                prop_assert!(json_matches(&part, &value));
            }
        }
    }
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z${}]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
