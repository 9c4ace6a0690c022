//! A 50 MiB line without a newline arrives as bounded chunks, and our memory
//! stays bounded. Alone in its binary so that no other test moves the peak.

#[path = "common/mod.rs"]
mod common;

use actix::prelude::*;
use common::*;
use procession::child::{ChildActor, ChildEventKind, ChildEvents};
use procession::Exit;
use procession::{Frame, Stream};
use tokio::sync::oneshot;

/// Counts chunks as they come, keeping nothing.
#[derive(Default)]
struct Tally {
    chunks: usize,
    bytes: usize,
    largest: usize,
    partial: usize,
    oversized: usize,
    done: Option<oneshot::Sender<(Tally, Exit)>>,
}

impl Actor for Tally {
    type Context = Context<Self>;
}

impl Handler<ChildEvents> for Tally {
    type Result = ();
    fn handle(&mut self, batch: ChildEvents, _: &mut Context<Self>) {
        for event in batch.events {
            match event.kind {
                ChildEventKind::Output {
                    stream: Stream::Stdout,
                    frame: Frame::Line(chunk),
                    partial,
                    ..
                } => {
                    self.chunks += 1;
                    self.bytes += chunk.len();
                    self.largest = self.largest.max(chunk.len());
                    self.partial += partial as usize;
                }
                ChildEventKind::Oversized { .. } => self.oversized += 1,
                ChildEventKind::Exited(exit) => {
                    let done = self.done.take().unwrap();
                    let _ = done.send((std::mem::take(self), exit));
                }
                _ => {}
            }
        }
    }
}

#[actix_rt::test]
async fn a_50_mib_line_arrives_in_bounded_chunks_with_bounded_memory() {
    const MIB: usize = 1 << 20;
    const CAP: usize = 64 * 1024;
    let before = peak_rss_kib();
    let (tx, rx) = oneshot::channel();
    let tally = Tally {
        done: Some(tx),
        ..Tally::default()
    }
    .start();
    let spec = fixture_spec("huge", &["huge-line", "50"]).frame_cap(CAP);
    ChildActor::start(spec, tally.recipient()).unwrap();
    let (tally, exit) = tokio::time::timeout(PATIENCE, rx).await.unwrap().unwrap();

    assert!(exit.status.success());
    assert_eq!(tally.bytes, 50 * MIB, "every byte arrives");
    assert_eq!(tally.chunks, 50 * MIB / CAP);
    assert_eq!(tally.largest, CAP, "no chunk over the cap");
    assert_eq!(
        tally.partial,
        tally.chunks - 1,
        "all but the last are partial"
    );
    assert_eq!(tally.oversized, 1, "reported once");
    let grown_mib = (peak_rss_kib() - before) / 1024;
    eprintln!("peak memory grew by {grown_mib} MiB");
    assert!(
        grown_mib < 16,
        "peak memory grew by {grown_mib} MiB for a 50 MiB line"
    );
}
