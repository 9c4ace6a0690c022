//! Every message the director takes, one handler each: a child's events,
//! and one per request a caller can make. Each feeds the pure parts (the
//! registry, the outbox, the step machine) and carries out what they return.

use std::sync::Arc;

use actix::prelude::*;
use serde_json::Value;
use tokio::sync::oneshot;

use std::rc::Rc;

use super::delivery::RouteBatch;
use super::messages::Request;
use super::messages::*;
use super::DirectorActor;
use crate::child::{ChildEventKind, ChildEvents, Exit, SendSignal};
use crate::error::{ConfigErrors, DirectorError, RequestError};
use crate::event::EventKind;
use crate::frame::{Frame, Framing};
use crate::plan::{Existing, Plan};
use crate::protocol::ProtocolReport;

impl Handler<Launch> for DirectorActor {
    type Result = Result<(), DirectorError>;

    fn handle(&mut self, msg: Launch, ctx: &mut Context<Self>) -> Self::Result {
        let existing = self.existing();
        let plan = Plan::check_with(
            &existing,
            msg.children,
            Vec::new(),
            msg.routes,
            msg.protocol,
        )?;
        self.launch(plan, ctx)
    }
}

impl Handler<LaunchPlan> for DirectorActor {
    type Result = Result<(), DirectorError>;

    fn handle(&mut self, LaunchPlan(plan): LaunchPlan, ctx: &mut Context<Self>) -> Self::Result {
        let plan = self.adopt(plan)?;
        self.launch(plan, ctx)
    }
}

impl Handler<Run> for DirectorActor {
    type Result = ResponseFuture<Result<ProtocolReport, DirectorError>>;

    fn handle(&mut self, Run(msg): Run, ctx: &mut Context<Self>) -> Self::Result {
        let protocol = Some(msg.protocol.unwrap_or_default());
        let plan = Plan::check_with(
            &self.existing(),
            msg.children,
            Vec::new(),
            msg.routes,
            protocol,
        );
        match plan {
            Ok(plan) => self.run(plan, ctx),
            Err(e) => Box::pin(async move { Err(e.into()) }),
        }
    }
}

impl Handler<RunPlan> for DirectorActor {
    type Result = ResponseFuture<Result<ProtocolReport, DirectorError>>;

    fn handle(&mut self, RunPlan(plan): RunPlan, ctx: &mut Context<Self>) -> Self::Result {
        match self.adopt(plan.with_protocol()) {
            Ok(plan) => self.run(plan, ctx),
            Err(e) => Box::pin(async move { Err(e.into()) }),
        }
    }
}

impl DirectorActor {
    /// Launches a plan with a protocol; resolves with its report. The
    /// waiter is registered before anything can end the run.
    fn run(
        &mut self,
        plan: Plan,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<ProtocolReport, DirectorError>> {
        if let Err(e) = self.launch(plan, ctx) {
            return Box::pin(async move { Err(e) });
        }
        let report = self.protocol_report();
        Box::pin(async move { report.await.ok_or(DirectorError::Gone) })
    }

    /// A plan checked on its own, checked again only if this director has
    /// children or routes already (only they can make it wrong).
    fn adopt(&self, plan: Plan) -> Result<Plan, ConfigErrors> {
        match self.children.names().is_empty() && self.routes.len() == 0 {
            true => Ok(plan),
            false => plan.recheck(&self.existing()),
        }
    }

    /// What a new plan adds to.
    fn existing(&self) -> Existing {
        let children = self
            .children
            .names()
            .iter()
            .map(|name| {
                let deps = self
                    .children
                    .get(name)
                    .expect("listed")
                    .spec
                    .depends_on
                    .clone();
                (name.clone(), deps)
            })
            .collect();
        Existing {
            children,
            names: self.children.names().to_vec(),
            routes: self.routes.len(),
        }
    }

    /// Adds a checked plan: routes, children (each starts once its
    /// dependencies are ready), and its protocol.
    fn launch(&mut self, plan: Plan, ctx: &mut Context<Self>) -> Result<(), DirectorError> {
        if self.children.shutting_down() {
            return Err(DirectorError::ShuttingDown);
        }
        let (children, routes, machine) = plan.into_parts();
        if machine.is_some() && self.protocol_running() {
            return Err(DirectorError::ProtocolRunning);
        }
        self.routes.add(routes);
        // The protocol is installed before the children are spawned, so a
        // spawn that fails fails the run; its first steps run once they are
        // spawned, so that they send to, close, stop or kill running
        // children. Their output arrives through the mailbox, after this
        // handler, so the first `expect` sees all of it.
        let names = self.children.register(children);
        let protocol = machine.is_some();
        if let Some(machine) = machine {
            self.install_protocol(machine.keep(self.config.expect_buffer));
        }
        let facts = self.children.start_new(&names);
        self.apply(facts, ctx);
        if protocol {
            self.begin_protocol(ctx);
        }
        self.check_idle(ctx);
        self.drive_outbox(ctx);
        Ok(())
    }
}

impl Handler<WaitProtocol> for DirectorActor {
    type Result = ResponseFuture<Option<ProtocolReport>>;

    fn handle(&mut self, _: WaitProtocol, _: &mut Context<Self>) -> Self::Result {
        self.protocol_report()
    }
}

impl Handler<Deliver> for DirectorActor {
    type Result = ResponseFuture<Result<(), DirectorError>>;

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.writable(&msg.to) {
            return Box::pin(async move { Err(e) });
        }
        Box::pin(self.caller_write(&msg.to, Some(&msg.frame), None, ctx))
    }
}

impl Handler<Request> for DirectorActor {
    type Result = ResponseActFuture<Self, Result<Frame, RequestError>>;

    fn handle(&mut self, msg: Request, ctx: &mut Context<Self>) -> Self::Result {
        let to = msg.to;
        if let Err(e) = self.writable(&to) {
            return Box::pin(fut::ready(Err(e.into())));
        }
        let framing = self.framing_of(&to);
        let (reply, answer) = oneshot::channel();
        let (id, frame) = match (framing, msg.frame) {
            (Framing::Json, Frame::Json(Value::Object(mut map))) => {
                let field = self.id_field_of(&to).to_string();
                if map.contains_key(&field) {
                    return Box::pin(fut::ready(Err(RequestError::IdConflict {
                        child: to,
                        field,
                    })));
                }
                let id = self.requests.by_id(&to, reply);
                map.insert(field, Value::from(id));
                (id, Frame::Json(Value::Object(map)))
            }
            (Framing::Json, other) => {
                let got = match other {
                    Frame::Json(Value::String(_)) => "a string",
                    Frame::Json(Value::Number(_)) => "a number",
                    Frame::Json(Value::Bool(_)) => "true or false",
                    Frame::Json(Value::Null) => "null",
                    Frame::Json(_) => "an array",
                    Frame::Line(_) => "a line",
                    Frame::Bytes(_) => "bytes",
                };
                return Box::pin(fut::ready(Err(RequestError::NotAnObject {
                    child: to,
                    got,
                })));
            }
            (_, Frame::Json(Value::String(line))) => {
                (self.requests.in_order(&to, reply), Frame::Line(line))
            }
            (_, frame) => (self.requests.in_order(&to, reply), frame),
        };
        let timeout = msg.timeout;
        // The write may wait for room as long as the whole request may.
        let written = self.caller_write(&to, Some(&frame), Some(timeout), ctx);
        let child = to.clone();
        let exchange = async move {
            let mut sent = false;
            let wait = async {
                written.await?;
                sent = true;
                answer.await.map_err(|_| RequestError::NoReply {
                    child: child.clone(),
                })
            };
            let result = match tokio::time::timeout(timeout, wait).await {
                Ok(result) => result,
                Err(_) => Err(RequestError::Timeout { child, timeout }),
            };
            (result, sent)
        };
        Box::pin(
            fut::wrap_future(exchange).map(move |(result, sent), act: &mut Self, _| {
                match &result {
                    Ok(_) => {}
                    // Written, so its reply may still come: it will be late.
                    Err(RequestError::Timeout { .. }) if sent => act.requests.expire(&to, id),
                    Err(_) => act.requests.cancel(&to, id),
                }
                result
            }),
        )
    }
}

impl Handler<Subscribe> for DirectorActor {
    type Result = MessageResult<Subscribe>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let subscription = self.bus.subscribe(msg.to, msg.filter);
        MessageResult(self.subscribed(subscription))
    }
}

impl Handler<SubscribeBatches> for DirectorActor {
    type Result = MessageResult<SubscribeBatches>;

    fn handle(&mut self, msg: SubscribeBatches, _: &mut Context<Self>) -> Self::Result {
        let subscription = self.bus.subscribe_batches(msg.to, msg.filter);
        MessageResult(self.subscribed(subscription))
    }
}

impl Handler<StreamEvents> for DirectorActor {
    type Result = MessageResult<StreamEvents>;

    /// The stream takes its events on the caller's task: no forwarder, and
    /// no actix needed by the caller.
    fn handle(&mut self, msg: StreamEvents, _: &mut Context<Self>) -> Self::Result {
        MessageResult(StreamOf(self.bus.stream(msg.filter)))
    }
}

impl DirectorActor {
    fn subscribed(&mut self, subscription: super::Subscription) -> SubscriptionId {
        self.next_subscription += 1;
        let id = SubscriptionId(self.next_subscription);
        self.subscriptions.insert(id, subscription);
        id
    }
}

impl Handler<ReportWriteFailure> for DirectorActor {
    type Result = ();

    fn handle(&mut self, msg: ReportWriteFailure, _: &mut Context<Self>) {
        if self.finals.is_none() {
            let ReportWriteFailure { target, error } = msg;
            self.bus
                .publish(None, EventKind::WriteFailed { target, error });
        }
    }
}

impl Handler<NoteControl> for DirectorActor {
    type Result = ();

    fn handle(&mut self, msg: NoteControl, _: &mut Context<Self>) {
        if self.finals.is_none() {
            let op = msg.op.to_string();
            self.bus
                .publish(msg.child.as_ref(), EventKind::Control { op });
        }
    }
}

impl Handler<Unsubscribe> for DirectorActor {
    type Result = ();

    fn handle(&mut self, Unsubscribe(id): Unsubscribe, _: &mut Context<Self>) {
        if let Some((queue, task)) = self.subscriptions.remove(&id) {
            self.bus.unsubscribe(&queue);
            task.abort();
        }
    }
}

impl DirectorActor {
    /// Resolves with the child's exit (now, if it already ended).
    fn exit_of(&mut self, child: Arc<str>) -> ResponseFuture<Result<Exit, DirectorError>> {
        if let Err(e) = self.known(&child) {
            return Box::pin(async move { Err(e) });
        }
        match self.children.public_state(&child) {
            ChildState::Exited(exit) | ChildState::Stopped(exit) => {
                Box::pin(async move { Ok(exit) })
            }
            ChildState::Pending
            | ChildState::Starting { .. }
            | ChildState::Running { .. }
            | ChildState::Stopping { .. }
            | ChildState::Restarting { .. } => {
                let (tx, rx) = oneshot::channel();
                self.exit_waiters.entry(child.clone()).or_default().push(tx);
                Box::pin(async move {
                    rx.await.map_err(|_| DirectorError::NotRunning {
                        child,
                        state: "never started".into(),
                    })
                })
            }
            ChildState::GaveUp { .. }
            | ChildState::SpawnFailed { .. }
            | ChildState::NotStarted { .. } => {
                let e = self.not_running(&child);
                Box::pin(async move { Err(e) })
            }
        }
    }
}

impl Handler<StopChild> for DirectorActor {
    type Result = ResponseFuture<Result<Exit, DirectorError>>;

    fn handle(&mut self, msg: StopChild, ctx: &mut Context<Self>) -> Self::Result {
        let child = msg.child;
        if let Err(e) = self.known(&child) {
            return Box::pin(async move { Err(e) });
        }
        if let Some((last, facts)) = self.children.call_off_restart(&child) {
            self.apply(facts, ctx);
            self.drive_outbox(ctx);
            return Box::pin(async move { Ok(last) });
        }
        match self.children.stop(&child, msg.grace) {
            Ok(facts) => {
                let result = self.exit_of(child);
                self.apply(facts, ctx);
                self.drive_outbox(ctx);
                result
            }
            Err(()) => {
                let e = self.not_running(&child);
                Box::pin(async move { Err(e) })
            }
        }
    }
}

impl Handler<StartChild> for DirectorActor {
    type Result = Result<(), DirectorError>;

    fn handle(&mut self, msg: StartChild, ctx: &mut Context<Self>) -> Self::Result {
        self.known(&msg.child)?;
        if self.children.shutting_down() {
            return Err(DirectorError::ShuttingDown);
        }
        if let super::children::Start::Later(facts) = self.children.start(&msg.child) {
            self.apply(facts, ctx);
            self.drive_outbox(ctx);
        }
        Ok(())
    }
}

impl Handler<RestartChild> for DirectorActor {
    type Result = ResponseFuture<Result<(), DirectorError>>;

    /// Answers once the old instance has exited and the new one is under
    /// way, so that what is sent next goes to the new one.
    fn handle(&mut self, msg: RestartChild, ctx: &mut Context<Self>) -> Self::Result {
        let child = msg.child;
        if let Err(e) = self.known(&child) {
            return Box::pin(async move { Err(e) });
        }
        if self.children.shutting_down() {
            return Box::pin(async { Err(DirectorError::ShuttingDown) });
        }
        let running = self.children.is_live(&child);
        let exited = running.then(|| self.exit_of(child.clone()));
        let facts = self.children.restart(&child);
        self.apply(facts, ctx);
        self.drive_outbox(ctx);
        Box::pin(async move {
            if let Some(exited) = exited {
                exited.await?;
            }
            Ok(())
        })
    }
}

impl Handler<RemoveChild> for DirectorActor {
    type Result = ResponseActFuture<Self, Result<(), DirectorError>>;

    fn handle(&mut self, msg: RemoveChild, ctx: &mut Context<Self>) -> Self::Result {
        let child = msg.child;
        let refused = |e| -> Self::Result { Box::pin(fut::ready(Err(e))) };
        if let Err(e) = self.known(&child) {
            return refused(e);
        }
        if self.protocol_running() {
            return refused(DirectorError::ProtocolRunning);
        }
        if let Err(dependents) = self.children.remove_check(&child) {
            return refused(DirectorError::HasDependents { child, dependents });
        }
        // Down already (or pending), else stopped first, or its restart
        // called off; then it is forgotten.
        let exited: futures::future::LocalBoxFuture<'static, ()> =
            if let Some((_, facts)) = self.children.call_off_restart(&child) {
                self.apply(facts, ctx);
                Box::pin(async {})
            } else {
                match self.children.stop(&child, None) {
                    Ok(facts) => {
                        let exit = self.exit_of(child.clone());
                        self.apply(facts, ctx);
                        self.drive_outbox(ctx);
                        Box::pin(async move {
                            let _ = exit.await;
                        })
                    }
                    Err(()) => Box::pin(async {}),
                }
            };
        Box::pin(exited.into_actor(self).map(move |(), act, _| {
            if act.children.is_live(&child) {
                let e = act.not_running(&child);
                return Err(DirectorError::NotRunning {
                    child: child.clone(),
                    state: format!("it could not be removed: {e}"),
                });
            }
            act.children
                .remove(&child)
                .map_err(|dependents| DirectorError::HasDependents {
                    child: child.clone(),
                    dependents,
                })?;
            act.routes.remove_child(&child);
            act.chunk_flags.remove(&child);
            // A `wait_exit` on it (one that never ran) learns it never will.
            act.exit_waiters.remove(&child);
            act.outbox.fail_all(&child, || DirectorError::UnknownChild {
                child: child.clone(),
                suggestion: None,
            });
            act.answer_ready(&child, Err("it was removed".into()));
            Ok(())
        }))
    }
}

impl Handler<WaitReady> for DirectorActor {
    type Result = ResponseFuture<Result<(), DirectorError>>;

    fn handle(&mut self, msg: WaitReady, _: &mut Context<Self>) -> Self::Result {
        let child = msg.child;
        if let Err(e) = self.known(&child) {
            return Box::pin(async move { Err(e) });
        }
        match self.children.readiness(&child) {
            super::children::Readiness::Ready => Box::pin(async { Ok(()) }),
            super::children::Readiness::Never(reason) => {
                Box::pin(async move { Err(DirectorError::NotReady { child, reason }) })
            }
            super::children::Readiness::Waiting => {
                let (tx, rx) = oneshot::channel();
                self.ready_waiters
                    .entry(child.clone())
                    .or_default()
                    .push(tx);
                Box::pin(async move {
                    rx.await.unwrap_or_else(|_| {
                        Err(DirectorError::NotReady {
                            child,
                            reason: "the director stopped first".into(),
                        })
                    })
                })
            }
        }
    }
}

impl Handler<WaitChild> for DirectorActor {
    type Result = ResponseFuture<Result<Exit, DirectorError>>;

    fn handle(&mut self, msg: WaitChild, _: &mut Context<Self>) -> Self::Result {
        self.exit_of(msg.child)
    }
}

impl Handler<SignalChild> for DirectorActor {
    type Result = ResponseFuture<Result<(), DirectorError>>;

    fn handle(&mut self, msg: SignalChild, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.known(&msg.child) {
            return Box::pin(async move { Err(e) });
        }
        let Some(addr) = self.children.handle(&msg.child).cloned() else {
            let e = self.not_running(&msg.child);
            return Box::pin(async move { Err(e) });
        };
        let child = msg.child;
        Box::pin(async move {
            match addr.send(SendSignal(msg.signal)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(DirectorError::NotRunning {
                    child,
                    state: e.to_string(),
                }),
                Err(_) => Err(DirectorError::NotRunning {
                    child,
                    state: "it exited".into(),
                }),
            }
        })
    }
}

impl Handler<CloseChildStdin> for DirectorActor {
    type Result = ResponseFuture<Result<(), DirectorError>>;

    fn handle(&mut self, msg: CloseChildStdin, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.known(&msg.child) {
            return Box::pin(async move { Err(e) });
        }
        if !self.children.is_live(&msg.child) {
            let e = self.not_running(&msg.child);
            return Box::pin(async move { Err(e) });
        }
        Box::pin(self.caller_write(&msg.child, None, None, ctx))
    }
}

impl Handler<ChunkedFrames> for DirectorActor {
    type Result = u64;

    fn handle(&mut self, ChunkedFrames(child): ChunkedFrames, _: &mut Context<Self>) -> u64 {
        self.chunked_frames.get(&child).copied().unwrap_or(0)
    }
}

impl Handler<ListChildren> for DirectorActor {
    type Result = MessageResult<ListChildren>;

    fn handle(&mut self, _: ListChildren, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.children.list())
    }
}

impl Handler<Shutdown> for DirectorActor {
    type Result = ResponseFuture<Vec<ChildInfo>>;

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(finals) = &self.finals {
            // Already over: `finished` was published once, and stays so.
            let finals = finals.clone();
            return Box::pin(async move { finals });
        }
        let (tx, rx) = oneshot::channel();
        self.shutdown_waiters.push(tx);
        self.begin_shutdown(msg.reason, msg.cause, ctx);
        if msg.kill {
            let facts = self.children.kill_all();
            self.apply(facts, ctx);
        }
        Box::pin(async move { rx.await.unwrap_or_default() })
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
        let batch_of = RouteBatch::new(Rc::new(done), self.config.delivery_timeout);
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
                    prompt,
                } => {
                    let output = Output {
                        stream,
                        partial,
                        prompt,
                    };
                    self.on_frame(&name, frame, output, &batch_of, ctx);
                }
                ChildEventKind::Chunk {
                    stream,
                    bytes,
                    frames,
                } => {
                    if self.forwards_chunks(&name, stream) {
                        self.forward_chunk(&name, stream, &bytes, frames, &batch_of);
                    } else {
                        // Someone started watching since the pump was told
                        // to chunk: frame by frame again, from this line on.
                        let text = std::str::from_utf8(&bytes).expect("chunks are UTF-8");
                        let output = Output {
                            stream,
                            partial: false,
                            prompt: false,
                        };
                        for line in text.strip_suffix('\n').unwrap_or(text).split('\n') {
                            self.on_frame(&name, Frame::line(line), output, &batch_of, ctx);
                        }
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
        self.tell_chunking(&name);
        // A run without steps can only end when something exits.
        if exited {
            self.check_idle(ctx);
        }
        if Rc::strong_count(&batch_of.token) == 1 {
            return Box::pin(fut::ready(())); // everything routed is queued
        }
        drop(batch_of);
        Box::pin(fut::wrap_future(async move {
            let _ = delivered.await; // resolves when the last routed entry is settled
        }))
    }
}

/// Where a frame came from and what it is, besides the frame itself.
#[derive(Debug, Clone, Copy)]
struct Output {
    stream: crate::child::Stream,
    partial: bool,
    prompt: bool,
}

impl DirectorActor {
    /// One frame of a child's output: routed, published, shown to the
    /// protocol, and checked for readiness, in that order.
    fn on_frame(
        &mut self,
        name: &Arc<str>,
        frame: Frame,
        output: Output,
        batch: &RouteBatch,
        ctx: &mut Context<Self>,
    ) {
        let Output {
            stream,
            partial,
            prompt,
        } = output;
        crate::fault::hit(crate::fault::Point::Director);
        // A prompt is routed as the start of its line (no newline after
        // it: its rest follows), so a receiver gets the line whole; it is
        // never a ready line.
        self.route(name, stream, &frame, partial || prompt, batch);
        let becomes_ready = !prompt && self.children.readies(name, &frame);
        // The frame is published before any step it passes.
        let for_protocol = self.protocol_running().then(|| frame.clone());
        self.publish(
            name,
            EventKind::Output {
                stream,
                frame,
                partial,
                prompt,
            },
        );
        // What the order guard decided while routing it (a step passed, a
        // message released) goes before the next frame.
        self.flush_steps(ctx);
        if let Some(frame) = for_protocol {
            self.protocol_output(name, stream, &frame, prompt, ctx);
        }
        if becomes_ready {
            let facts = self.children.on_ready(name);
            self.apply(facts, ctx);
        }
    }
}
