//! Routing decisions for one output frame: a waiting request's reply, a
//! late reply, an envelope's child, or the routes' receivers, each guarded
//! by the protocol. What goes is queued in the [outbox](super::outbox).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::children::Input;
use super::outbox::{self, BatchToken};
use super::requests::Answer;
use super::{routing, DirectorActor};
use crate::child::ChunkFlags;
use crate::child::Stream;
use crate::error::DirectorError;
use crate::event::EventKind;
use crate::frame::{Frame, Framing};

impl DirectorActor {
    /// Whether bytes for `to` can be queued now (it runs, or waits to start
    /// or restart), or why not.
    pub(super) fn writable(&self, to: &Arc<str>) -> Result<(), DirectorError> {
        match self.children.input(to) {
            Input::Open(_) => Ok(()),
            Input::Refused => Err(self.not_running(to)),
            Input::Unknown => Err(self.unknown(to)),
        }
    }

    /// The field that correlates requests to `to` with their replies.
    pub(super) fn id_field_of(&self, to: &Arc<str>) -> &str {
        self.children.get(to).map_or("id", |c| c.spec.id_field())
    }

    /// The framing a child's input is encoded for.
    pub(super) fn framing_of(&self, to: &Arc<str>) -> Framing {
        self.children.get(to).expect("known child").spec.framing
    }

    /// Routes one output frame: to a waiting request, an envelope's child,
    /// or the routes' receivers. Frames that cannot go are reported at once.
    pub(super) fn route(
        &mut self,
        from: &Arc<str>,
        stream: Stream,
        frame: &Frame,
        partial: bool,
        batch: &RouteBatch,
    ) {
        if stream == Stream::Stdout && !partial && self.requests.waiting_on(from) {
            let field = self.children.get(from).map_or("id", |c| c.spec.id_field());
            match self.requests.answer(from, frame, field) {
                Some(Answer::Reply(reply)) => {
                    let _ = reply.send(frame.clone());
                    return; // a reply is the requester's, not the routes'
                }
                Some(Answer::Late) => {
                    tracing::debug!(child = %from, "late reply dropped");
                    let frame = frame.clone();
                    return self.publish(from, EventKind::LateReply { frame });
                }
                None => {}
            }
        }
        let enveloped = match self.framing_of(from) {
            Framing::Json if stream == Stream::Stdout => routing::envelope(from, frame),
            _ => None,
        };
        // A buffer kept between frames: this runs once per frame of output.
        let mut targets = std::mem::take(&mut self.route_targets);
        match enveloped {
            Some((to, framed)) => targets.push((to, Some(framed))),
            None => targets.extend(
                self.routes
                    .targets(from, stream, frame)
                    .map(|to| (to.clone(), None)),
            ),
        }
        for (to, framed) in targets.drain(..) {
            let frame = framed.as_ref().unwrap_or(frame);
            if !self.guard_route(from, &to, frame) {
                continue; // held or refused by the protocol (its effects say so)
            }
            let framing = match self.children.input(&to) {
                Input::Open(framing) => framing,
                Input::Unknown => {
                    self.undeliverable(from, to, "no child has this name".into(), 1);
                    continue;
                }
                Input::Refused => {
                    let reason = format!("not running ({})", self.children.public_state(&to));
                    self.undeliverable(from, to, reason, 1);
                    continue;
                }
            };
            // Encoded straight into the batch's write for this receiver.
            let out = self
                .outbox
                .routed(&to, from, &batch.token, batch.deadline, batch.now, 1);
            encode(frame, partial, framing, out);
        }
        self.route_targets = targets;
    }

    pub(super) fn undeliverable(
        &mut self,
        from: &Arc<str>,
        to: Arc<str>,
        reason: String,
        frames: usize,
    ) {
        tracing::debug!(%from, %to, %reason, frames, "undeliverable");
        for _ in 0..frames {
            self.publish(
                from,
                EventKind::Undeliverable {
                    from: Some(from.clone()),
                    to: to.clone(),
                    reason: reason.clone(),
                },
            );
        }
    }
}

/// Chunk forwarding: the whole lines of a pipe that nobody watches go to
/// their receivers as they were read, and are counted, not decoded into
/// frames (see `FrameDecoder::chunks_when`).
impl DirectorActor {
    /// Whether `from`'s lines on `stream` need nothing but forwarding and
    /// counting: no protocol runs, no request waits on it, no subscriber or
    /// journal takes its `output` or `routed`, no frame can make it ready,
    /// its routes have no filter and every receiver takes input.
    pub(super) fn forwards_chunks(&self, from: &Arc<str>, stream: Stream) -> bool {
        !self.protocol_running()
            && !self.requests.waiting_on(from)
            && self.children.lines_past_ready(from)
            && self.routes.unfiltered(from, stream)
            && self
                .routes
                .receivers(from, stream)
                .all(|to| matches!(self.children.input(to), Input::Open(_)))
            && !self.bus.watches_output(from)
    }

    /// Tells `from`'s output pump whether to send chunks from now on. (It
    /// is a hint: a chunk that arrives once someone watches is split into
    /// its frames, see the `ChildEvents` handler.)
    pub(super) fn tell_chunking(&self, from: &Arc<str>) {
        if let Some(flags) = self.chunk_flags.get(from) {
            let stdout = self.forwards_chunks(from, Stream::Stdout);
            let stderr = self.forwards_chunks(from, Stream::Stderr);
            flags.stdout.store(stdout, Ordering::Relaxed);
            flags.stderr.store(stderr, Ordering::Relaxed);
        }
    }

    /// Fresh chunk flags for the instance of `name` about to be spawned
    /// (cleared: its first batch says whether to chunk).
    pub(super) fn chunk_flags(&mut self, name: &Arc<str>) -> ChunkFlags {
        let flags = ChunkFlags::default();
        self.chunk_flags.insert(name.clone(), flags.clone());
        flags
    }

    /// Forwards `frames` whole lines of `from` to every receiver of its
    /// `stream`, in the output batch `batch`, and counts their events.
    pub(super) fn forward_chunk(
        &mut self,
        from: &Arc<str>,
        stream: Stream,
        lines: &[u8],
        frames: usize,
        batch: &RouteBatch,
    ) {
        // Their `output` events, which nobody takes (`routed` are counted
        // when the writes settle).
        self.bus.count_unwatched(from, frames as u64);
        *self.chunked_frames.entry(from.clone()).or_default() += frames as u64;
        let mut targets = std::mem::take(&mut self.route_targets);
        targets.extend(
            self.routes
                .receivers(from, stream)
                .map(|to| (to.clone(), None)),
        );
        for (to, _) in targets.drain(..) {
            let Input::Open(framing) = self.children.input(&to) else {
                unreachable!("forwards_chunks checked that every receiver takes input");
            };
            let out =
                self.outbox
                    .routed(&to, from, &batch.token, batch.deadline, batch.now, frames);
            match framing {
                // A line is written to these as it was read.
                Framing::Lines | Framing::Json => out.extend_from_slice(lines),
                _ => {
                    let text = std::str::from_utf8(lines).expect("chunks are UTF-8");
                    for line in text.strip_suffix('\n').unwrap_or(text).split('\n') {
                        Frame::line(line).encode(framing, out);
                    }
                }
            }
        }
        self.route_targets = targets;
    }
}

/// The output batch a frame is routed in: its token (see
/// [`BatchToken`]), when it arrived, and the deadline of its writes.
pub(super) struct RouteBatch {
    pub token: BatchToken,
    pub now: Instant,
    pub deadline: Option<Instant>,
}

impl RouteBatch {
    pub fn new(token: BatchToken, within: std::time::Duration) -> RouteBatch {
        let now = Instant::now();
        RouteBatch {
            token,
            now,
            deadline: outbox::deadline(now, within),
        }
    }
}

/// A frame as written to a receiver. A chunk of an over-long line goes on
/// without a newline, so the receiver sees the line whole again.
fn encode(frame: &Frame, partial: bool, framing: Framing, out: &mut BytesMut) {
    match (partial, frame) {
        (true, Frame::Line(chunk)) => out.extend_from_slice(chunk.as_bytes()),
        _ => frame.encode(framing, out),
    }
}
