//! Getting frames to children: routing decisions for one output frame, the
//! handler for child events, and carrying out the outbox's settlements.
//! Every write itself goes through the [outbox](super::outbox).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::BytesMut;
use tokio::sync::oneshot;

use super::outbox::{self, Ack, BatchToken, Settled};
use super::requests::Answer;
use super::{routing, DirectorActor};
use crate::child::{ChildEventKind, ChildEvents, StdinSender, Stream};
use crate::error::DirectorError;
use crate::event::EventKind;
use crate::frame::{Frame, Framing};

impl DirectorActor {
    /// Whether bytes for `to` can be queued now (it runs, or waits to start
    /// or restart), or why not.
    pub(super) fn writable(&self, to: &Arc<str>) -> Result<(), DirectorError> {
        self.known(to)?;
        match self.children.takes_input(to) {
            true => Ok(()),
            false => Err(self.not_running(to)),
        }
    }

    /// The framing a child's input is encoded for.
    pub(super) fn framing_of(&self, to: &Arc<str>) -> Framing {
        self.children.get(to).expect("known child").spec.framing
    }

    /// Queues a frame for `to` with its acknowledgement. The caller checked
    /// `writable`; the write happens at the next [`drive_outbox`](Self::drive_outbox).
    pub(super) fn queue_frame(
        &mut self,
        to: &Arc<str>,
        frame: &Frame,
        ack: Ack,
        within: Option<Duration>,
    ) {
        let now = Instant::now();
        let bytes = frame.to_bytes(self.framing_of(to));
        let deadline = within.and_then(|w| outbox::deadline(now, w));
        self.outbox.push(to, &bytes, ack, deadline, now);
    }

    /// Writes what the outbox holds into the children's stdin queues and
    /// carries out the settlements (which may queue more: a passed `send`
    /// step leads to the next). A full queue gets a waiter that flushes
    /// again when there is room or its earliest deadline passes.
    pub(super) fn drive_outbox(&mut self, ctx: &mut Context<Self>) {
        if self.driving {
            return; // the flush below us picks up what was just queued
        }
        self.driving = true;
        while self.outbox.is_dirty() {
            let flush = self.outbox.flush(Instant::now());
            for (to, stdin, deadline) in flush.blocked {
                self.wait_for_room(to, stdin, deadline, ctx);
            }
            for settled in flush.settled {
                self.settle(settled, ctx);
            }
        }
        self.driving = false;
    }

    fn wait_for_room(
        &mut self,
        to: Arc<str>,
        stdin: StdinSender,
        deadline: Option<Instant>,
        ctx: &mut Context<Self>,
    ) {
        if !self.outbox.watch(&to, deadline) {
            return; // a waiter that fires early enough is armed
        }
        let waiter = async move {
            let timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                () = stdin.room() => {}
                () = timer => {}
            }
        };
        ctx.spawn(
            fut::wrap_future(waiter).map(move |(), act: &mut Self, ctx| {
                act.outbox.unwatch(&to);
                act.drive_outbox(ctx);
            }),
        );
    }

    /// Carries out one settled write: the event, the step, or the caller.
    fn settle(&mut self, settled: Settled, ctx: &mut Context<Self>) {
        let Settled { to, ack, result } = settled;
        match ack {
            Ack::Routed { from, frames, .. } => match result {
                Ok(()) => {
                    for _ in 0..frames {
                        let kind = EventKind::Routed {
                            from: from.clone(),
                            to: to.clone(),
                        };
                        self.publish(&from, kind);
                    }
                }
                Err(e) => self.undeliverable(&from, to, e.to_string(), frames),
            },
            Ack::Step(step) => {
                let now = Instant::now();
                let fx = self.with_machine(|m| match result {
                    Ok(()) => m.action_done(step, now),
                    Err(e) => m.action_failed(step, e.to_string(), now),
                });
                self.step_fx(fx, ctx);
            }
            Ack::Caller(reply) => {
                let _ = reply.send(result);
            }
        }
    }

    /// Queues a caller's write and returns what resolves once it is queued
    /// at the child (or fails).
    pub(super) fn caller_write(
        &mut self,
        to: &Arc<str>,
        frame: Option<&Frame>,
        within: Option<Duration>,
        ctx: &mut Context<Self>,
    ) -> impl std::future::Future<Output = Result<(), DirectorError>> + 'static {
        let (tx, rx) = oneshot::channel();
        match frame {
            Some(frame) => self.queue_frame(to, frame, Ack::Caller(tx), within),
            None => self.outbox.push_close(to, Ack::Caller(tx), Instant::now()),
        }
        self.drive_outbox(ctx);
        async move { rx.await.unwrap_or(Err(DirectorError::Gone)) }
    }

    /// Routes one output frame: to a waiting request, an envelope's child,
    /// or the routes' receivers. Frames that cannot go are reported at once.
    fn route(
        &mut self,
        from: &Arc<str>,
        stream: Stream,
        frame: &Frame,
        partial: bool,
        batch: &BatchToken,
    ) {
        if stream == Stream::Stdout && !partial && self.requests.waiting_on(from) {
            match self.requests.answer(from, frame) {
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
        let now = Instant::now();
        let deadline = outbox::deadline(now, self.config.delivery_timeout);
        let mut bytes = BytesMut::new();
        for (to, framed) in targets.drain(..) {
            let frame = framed.as_ref().unwrap_or(frame);
            if !self.guard_route(from, &to, frame) {
                continue; // held or refused by the protocol (its effects say so)
            }
            match self.writable(&to) {
                Ok(()) => {}
                Err(DirectorError::UnknownChild { .. }) => {
                    self.undeliverable(from, to, "no child has this name".into(), 1);
                    continue;
                }
                Err(_) => {
                    let reason = format!("not running ({})", self.children.public_state(&to));
                    self.undeliverable(from, to, reason, 1);
                    continue;
                }
            }
            bytes.clear();
            encode(frame, partial, self.framing_of(&to), &mut bytes);
            let ack = Ack::Routed {
                from: from.clone(),
                frames: 1,
                batch: Some(batch.clone()),
            };
            self.outbox.push(&to, &bytes, ack, deadline, now);
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

/// A frame as written to a receiver. A chunk of an over-long line goes on
/// without a newline, so the receiver sees the line whole again.
fn encode(frame: &Frame, partial: bool, framing: Framing, out: &mut BytesMut) {
    match (partial, frame) {
        (true, Frame::Line(chunk)) => out.extend_from_slice(chunk.as_bytes()),
        _ => frame.encode(framing, out),
    }
}

impl Handler<ChildEvents> for DirectorActor {
    /// Resolves once the batch's routed frames are queued at their
    /// receivers (or failed): the child's next batch waits until then.
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, batch: ChildEvents, ctx: &mut Context<Self>) -> Self::Result {
        let name = batch.child;
        if !self.children.is_live(&name) {
            return Box::pin(fut::ready(()));
        }
        let (done, delivered) = oneshot::channel();
        let token: BatchToken = Rc::new(done);
        let mut exited = false;
        for event in batch.events {
            match event.kind {
                ChildEventKind::Spawned { .. } => {
                    let facts = self.children.on_spawned(&name);
                    self.apply(facts, ctx);
                }
                ChildEventKind::Output {
                    stream,
                    frame,
                    partial,
                } => {
                    self.route(&name, stream, &frame, partial, &token);
                    let becomes_ready = self.children.readies(&name, &frame);
                    // The frame is published before any step it passes.
                    let for_protocol = self.protocol_running().then(|| frame.clone());
                    self.publish(
                        &name,
                        EventKind::Output {
                            stream,
                            frame,
                            partial,
                        },
                    );
                    if let Some(frame) = for_protocol {
                        self.protocol_output(&name, stream, &frame, ctx);
                    }
                    if becomes_ready {
                        let facts = self.children.on_ready(&name);
                        self.apply(facts, ctx);
                    }
                }
                ChildEventKind::Oversized { stream, limit } => {
                    self.publish(&name, EventKind::OversizedFrame { stream, limit })
                }
                ChildEventKind::DecodeError {
                    stream,
                    error,
                    preview,
                } => self.publish(
                    &name,
                    EventKind::DecodeError {
                        stream,
                        error,
                        preview,
                    },
                ),
                ChildEventKind::Exited(exit) => {
                    self.on_exited(&name, exit, ctx);
                    exited = true;
                }
            }
        }
        self.flush_steps(ctx);
        self.drive_outbox(ctx);
        // A run without steps can only end when something exits.
        if exited {
            self.check_idle(ctx);
        }
        if Rc::strong_count(&token) == 1 {
            return Box::pin(fut::ready(())); // everything routed is queued
        }
        drop(token);
        Box::pin(fut::wrap_future(async move {
            let _ = delivered.await; // resolves when the last routed entry is settled
        }))
    }
}
