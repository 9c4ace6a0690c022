//! Chunk forwarding (issue 21): a route nobody watches moves whole chunks
//! of lines, counted, not decoded; the moment a subscriber or a protocol
//! step watches the sender, its output goes frame by frame again.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use procession::protocol::{Protocol, Step};
use procession::{ChildSpec, Director, Event, EventFilter, EventKind, Route};

/// Lines in each of the sender's four bursts.
const BURST: usize = 5_000;

/// A sender that prints `BURST` numbered lines, then waits for a line on
/// its stdin before each next burst; four bursts in all.
fn sender() -> ChildSpec {
    let bursts: Vec<String> = (0..4)
        .map(|b| format!("seq -f 'line %g' {} {}", b * BURST, (b + 1) * BURST - 1))
        .collect();
    let script = bursts.join("; read go; ");
    ChildSpec::new("a", ["sh", "-c", &script])
}

/// A receiver that keeps every line it gets in `file`.
fn receiver(file: &Path) -> ChildSpec {
    let script = format!("exec cat > '{}'", file.display());
    ChildSpec::new("b", ["sh".to_string(), "-c".into(), script])
}

/// The lines in `file` so far.
fn lines_in(file: &Path) -> usize {
    std::fs::read_to_string(file).map_or(0, |t| t.lines().count())
}

/// The output lines in `events`.
fn output_lines(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Output { frame, .. } => frame.as_line().map(str::to_string),
            _ => None,
        })
        .collect()
}

fn numbered(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("line {i}")).collect()
}

#[actix_rt::test]
async fn an_unwatched_route_moves_chunks_and_goes_frame_by_frame_once_watched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("received");
    let director = Director::start();
    director
        .launch([sender(), receiver(&file)], [Route::new("a", "b")])
        .await
        .unwrap();

    // 1. Nobody watches: the first burst goes in chunks. (Nothing tells
    // us when the receiver wrote it: its file is read until it has it.)
    eventually("the first burst reaches b", || lines_in(&file) == BURST).await;
    let chunked = director.chunked_frames("a").await.unwrap();
    assert!(chunked > 0, "the unwatched route forwarded chunks");

    // 2. A subscriber watches a: every line of the next burst is an
    // `output` event, in order, numbered as if every earlier frame had been
    // published (each line is an `output` and a `routed` event, after
    // `spawned` and `ready`).
    let mut events = director
        .events(EventFilter::all().children(["a"]))
        .await
        .unwrap();
    director.deliver_line("a", "go").await.unwrap();
    let mut seen = Vec::new();
    while output_lines(&seen).len() < BURST || count(&seen, "a", "routed") < BURST {
        let event = tokio::time::timeout(PATIENCE, events.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no event in time after {} lines: {:?}",
                    output_lines(&seen).len(),
                    seen.last()
                )
            })
            .expect("the run goes on");
        seen.push(event);
    }
    assert_eq!(output_lines(&seen), numbered(BURST, 2 * BURST));
    let seqs: Vec<u64> = seen.iter().filter_map(|e| e.seq).collect();
    assert_eq!(seqs[0], 2 + 2 * BURST as u64, "earlier frames were counted");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive from there"
    );
    assert_eq!(
        director.chunked_frames("a").await.unwrap(),
        chunked,
        "nothing watched went in chunks"
    );

    // 3. Nobody watches again: chunks again.
    drop(events);
    director.deliver_line("a", "go").await.unwrap();
    eventually("the third burst reaches b", || lines_in(&file) == 3 * BURST).await;
    let chunked_again = director.chunked_frames("a").await.unwrap();
    assert!(chunked_again > chunked, "chunks again once unwatched");

    // 4. A protocol step watches a (its pump was last told to chunk): the
    // step sees the burst's last line, so every frame went one by one.
    let last = format!("^line {}$", 4 * BURST - 1);
    let protocol = Protocol {
        steps: vec![
            Step::send_line("a", "go"),
            Step::expect_line("a", &last).within(Duration::from_secs(20)),
        ],
        ..Protocol::default()
    };
    let report = director.run([], [], protocol).await.unwrap();
    assert!(report.passed, "{report:?}");
    assert_eq!(director.chunked_frames("a").await.unwrap(), chunked_again);

    // Every line reached b, once, in order.
    let exit = director.wait_exit("a").await.unwrap();
    assert!(exit.status.success());
    director.close_stdin("b").await.unwrap();
    director.wait_exit("b").await.unwrap();
    let received: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(received, numbered(0, 4 * BURST));
    director.shutdown("test over").await;
}
