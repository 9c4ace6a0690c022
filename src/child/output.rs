//! The output pump: reads stdout and stderr concurrently as frames and hands
//! them to the owner in numbered batches.
//!
//! Batches amortise the cost of an actor message over many frames. The next
//! batch is sent only after the owner handled the previous one: a slow owner
//! slows our reading and so, through the full pipe, the child, instead of
//! piling up memory here.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix::Recipient;
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncRead;
use tokio_util::codec::FramedRead;

use super::messages::{ChildEvent, ChildEventKind, ChildEvents, Stream};
use crate::frame::{Decoded, FrameDecoder, Framing};

/// A pipe to read, boxed so that a child's stdout and our own merge pipe fit.
pub(crate) type Pipe = Pin<Box<dyn AsyncRead>>;

/// Frames per batch, at most.
const BATCH_FRAMES: usize = 1024;
/// Payload bytes per batch before it is sent (one frame may exceed it).
const BATCH_BYTES: usize = 256 * 1024;
/// Bytes read per `read` call, at most.
const READ_CAPACITY: usize = 64 * 1024;

/// Decoded items of one pipe, tagged with the pipe.
type Frames = futures::stream::LocalBoxStream<'static, (Stream, std::io::Result<Decoded>)>;

/// One pipe and how to cut it.
pub(crate) struct Source {
    pub stream: Stream,
    pub pipe: Pipe,
    pub framing: Framing,
}

/// Reads every source to its end and sends all it decodes to `owner`.
/// `seq` is the child's event counter, shared with the actor.
pub(crate) async fn pump(
    child: Arc<str>,
    owner: Recipient<ChildEvents>,
    seq: Rc<Cell<u64>>,
    sources: Vec<Source>,
    cap: usize,
) {
    let mut streams = sources.into_iter().map(|s| -> Frames {
        let stream = s.stream;
        FramedRead::with_capacity(s.pipe, FrameDecoder::new(s.framing, cap), READ_CAPACITY)
            .map(move |item| (stream, item))
            .boxed_local()
    });
    // One pipe or two (stdout, stderr). `select` polls two streams by
    // turns; `select_all` would re-queue its stream after every frame.
    let first = streams.next().expect("stdout is always read");
    let mut frames = match streams.next() {
        Some(second) => futures::stream::select(first, second).boxed_local(),
        None => first,
    };
    let mut owner_gone = false;

    while let Some(first) = frames.next().await {
        let mut events = Vec::with_capacity(64);
        let mut bytes = push(&seq, &mut events, first);
        while events.len() < BATCH_FRAMES && bytes < BATCH_BYTES {
            match frames.next().now_or_never() {
                Some(Some(item)) => bytes += push(&seq, &mut events, item),
                _ => break,
            }
        }
        if owner_gone {
            continue; // keep reading so the child never blocks on a full pipe
        }
        let batch = ChildEvents {
            child: child.clone(),
            events,
        };
        if owner.send(batch).await.is_err() {
            tracing::debug!(child = %child, "owner is gone; output is read and dropped");
            owner_gone = true;
        }
    }
}

/// Numbers one decoded item and appends it; returns its payload size.
fn push(
    seq: &Cell<u64>,
    events: &mut Vec<ChildEvent>,
    (stream, item): (Stream, std::io::Result<Decoded>),
) -> usize {
    let (kind, size) = match item {
        Ok(Decoded::Frame { frame, partial }) => {
            let size = match &frame {
                crate::Frame::Line(s) => s.len(),
                crate::Frame::Bytes(b) => b.len(),
                crate::Frame::Json(_) => 64, // a fair guess; exact size is not needed here
            };
            (
                ChildEventKind::Output {
                    stream,
                    frame,
                    partial,
                },
                size,
            )
        }
        Ok(Decoded::Oversized { limit }) => (ChildEventKind::Oversized { stream, limit }, 0),
        Ok(Decoded::Invalid { error, preview }) => (
            ChildEventKind::DecodeError {
                stream,
                error,
                preview,
            },
            0,
        ),
        Err(e) => (
            ChildEventKind::DecodeError {
                stream,
                error: format!("read failed: {e}"),
                preview: String::new(),
            },
            0,
        ),
    };
    let n = seq.get();
    seq.set(n + 1);
    events.push(ChildEvent { seq: n, kind });
    size
}
