//! Routing decisions for one output frame: a waiting request's reply, a
//! late reply, an envelope's child, or the routes' receivers, each guarded
//! by the protocol. What goes is queued in the [outbox](super::outbox).

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::children::Input;
use super::outbox::{self, BatchToken};
use super::requests::Answer;
use super::{routing, DirectorActor};
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
                .routed(&to, from, &batch.token, batch.deadline, batch.now);
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
