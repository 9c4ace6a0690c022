//! Writing to children: the outbox's queues are flushed into their stdin
//! after each handler, full ones wait for room, and every settled write is
//! carried out (a `routed` event, a step that passes, a caller answered).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::BytesMut;
use tokio::sync::oneshot;

use super::outbox::{self, Ack, Blocked, Settled};
use super::DirectorActor;
use crate::error::DirectorError;
use crate::event::EventKind;
use crate::frame::Frame;

impl DirectorActor {
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
        let mut bytes = BytesMut::new();
        frame.encode(self.framing_of(to), &mut bytes);
        let deadline = within.and_then(|w| outbox::deadline(now, w));
        self.outbox.push_bytes(to, bytes, ack, deadline, now);
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
            for blocked in flush.blocked {
                self.wait_for_room(blocked, ctx);
            }
            for settled in flush.settled {
                self.settle(settled, ctx);
            }
        }
        self.driving = false;
        if std::mem::take(&mut self.finishing) {
            self.finished(ctx);
        }
    }

    fn wait_for_room(&mut self, blocked: Blocked, ctx: &mut Context<Self>) {
        let Blocked {
            to,
            stdin,
            needs,
            deadline,
        } = blocked;
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
                () = stdin.room(needs) => {}
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
                Ok(()) if !self.bus.watches_output(&from) => {
                    self.bus.count_unwatched(&from, frames as u64);
                }
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
            Ack::Dropped { from, frames } => {
                let reason = match &result {
                    Err(e) => format!("kept for its next instance, which never came: {e}"),
                    Ok(()) => "kept for its next instance, which never came".into(),
                };
                match from {
                    Some(from) => self.undeliverable(&from, to, reason, frames),
                    None => {
                        for _ in 0..frames {
                            let kind = EventKind::Undeliverable {
                                from: None,
                                to: to.clone(),
                                reason: reason.clone(),
                            };
                            self.publish(&to, kind);
                        }
                    }
                }
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
}
