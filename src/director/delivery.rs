//! Getting frames to children: routes and envelopes, the buffer of a child
//! that is restarting or waiting to start, and the handler for child events.

use std::sync::Arc;

use actix::prelude::*;
use bytes::BytesMut;

use super::{routing, DirectorActor, State};
use crate::child::{ChildEventKind, ChildEvents, StdinSender, Stream};
use crate::error::DirectorError;
use crate::event::EventKind;
use crate::frame::{Frame, Framing};

/// Where bytes for a child go right now.
pub(super) enum Sink {
    /// Its stdin queue.
    Stdin(StdinSender),
    /// Its buffer: it is restarting or waiting to start, and gets the bytes
    /// first thing when it starts.
    Buffer,
}

/// Frames for one receiver out of one batch, written with one queue slot.
struct Delivery {
    to: Arc<str>,
    stdin: StdinSender,
    bytes: BytesMut,
    frames: usize,
}

impl DirectorActor {
    /// Where bytes for `to` go, or why they cannot.
    pub(super) fn sink(&self, to: &Arc<str>) -> Result<Sink, DirectorError> {
        match &self.entry(to)?.state {
            State::Running { stdin, .. } => Ok(Sink::Stdin(stdin.clone())),
            State::Waiting | State::Restarting { .. } => Ok(Sink::Buffer),
            _ => Err(self.not_running(to)),
        }
    }

    /// Keeps bytes for a child that is not running yet (bounded).
    pub(super) fn buffer(&mut self, to: &Arc<str>, bytes: &[u8]) -> Result<(), DirectorError> {
        let limit = self.config.restart_buffer;
        let entry = self.entries.get_mut(to).expect("checked by sink");
        if entry.pending.len() + bytes.len() > limit {
            return Err(DirectorError::BufferFull {
                child: to.clone(),
                limit,
            });
        }
        entry.pending.extend_from_slice(bytes);
        Ok(())
    }

    /// The framing a child's input is encoded for.
    pub(super) fn framing_of(&self, to: &Arc<str>) -> Framing {
        self.entries[to].spec.framing
    }

    /// Routes one output frame: to a waiting request, an envelope's child,
    /// or the routes' receivers. Frames that cannot go are reported at once.
    fn route(
        &mut self,
        from: &Arc<str>,
        stream: Stream,
        frame: &Frame,
        partial: bool,
        deliveries: &mut Vec<Delivery>,
    ) {
        if stream == Stream::Stdout && !partial && self.requests.waiting_on(from) {
            if let Some(reply) = self.requests.answer(from, frame) {
                let _ = reply.send(frame.clone());
                return; // a reply is the requester's, not the routes'
            }
        }
        let enveloped = match self.entries[from].spec.framing {
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
            let sink = match self.sink(&to) {
                Ok(sink) => sink,
                Err(DirectorError::UnknownChild { .. }) => {
                    self.undeliverable(from, to, "no child has this name".into(), 1);
                    continue;
                }
                Err(_) => {
                    let reason = format!("not running ({})", self.public_state(&to));
                    self.undeliverable(from, to, reason, 1);
                    continue;
                }
            };
            let framing = self.framing_of(&to);
            match sink {
                Sink::Buffer => {
                    let mut bytes = BytesMut::new();
                    encode(frame, partial, framing, &mut bytes);
                    match self.buffer(&to, &bytes) {
                        Ok(()) => self.publish(
                            from,
                            EventKind::Routed {
                                from: from.clone(),
                                to,
                            },
                        ),
                        Err(e) => self.undeliverable(from, to, e.to_string(), 1),
                    }
                }
                Sink::Stdin(stdin) => {
                    let i = match deliveries.iter().position(|d| d.to == to) {
                        Some(i) => i,
                        None => {
                            deliveries.push(Delivery {
                                to,
                                stdin,
                                bytes: BytesMut::new(),
                                frames: 0,
                            });
                            deliveries.len() - 1
                        }
                    };
                    encode(frame, partial, framing, &mut deliveries[i].bytes);
                    deliveries[i].frames += 1;
                }
            }
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
    /// receivers: the child's next batch waits until then.
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, batch: ChildEvents, ctx: &mut Context<Self>) -> Self::Result {
        let name = batch.child;
        if !matches!(
            self.entries.get(&name).map(|e| &e.state),
            Some(State::Running { .. })
        ) {
            return Box::pin(fut::ready(()));
        }
        let mut deliveries = Vec::new();
        let mut exited = false;
        for event in batch.events {
            match event.kind {
                ChildEventKind::Spawned { pid } => self.on_spawned(&name, pid, ctx),
                ChildEventKind::Output {
                    stream,
                    frame,
                    partial,
                } => {
                    self.route(&name, stream, &frame, partial, &mut deliveries);
                    let becomes_ready = {
                        let entry = &self.entries[&name];
                        !entry.ready && entry.ready_on.as_ref().is_some_and(|p| p.matches(&frame))
                    };
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
                        self.mark_ready(&name, ctx);
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
        // A run without steps can only end when something exits.
        if exited {
            self.check_idle(ctx);
        }
        if deliveries.is_empty() {
            return Box::pin(fut::ready(()));
        }
        let timeout = self.config.delivery_timeout;
        let sends = deliveries.into_iter().map(move |d| async move {
            let result = match tokio::time::timeout(timeout, d.stdin.send(d.bytes.freeze())).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err("its stdin is closed".to_string()),
                Err(_) => Err(format!("its stdin queue stayed full for {timeout:?}")),
            };
            (d.to, d.frames, result)
        });
        Box::pin(fut::wrap_future(futures::future::join_all(sends)).map(
            move |results, act: &mut Self, _| {
                for (to, frames, result) in results {
                    match result {
                        Ok(()) => {
                            for _ in 0..frames {
                                act.publish(
                                    &name,
                                    EventKind::Routed {
                                        from: name.clone(),
                                        to: to.clone(),
                                    },
                                );
                            }
                        }
                        Err(reason) => act.undeliverable(&name, to, reason, frames),
                    }
                }
            },
        ))
    }
}
