//! Running a protocol: feeding the step machine what happens, and carrying
//! out the effects it returns.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::children::Start;
use super::outbox::Ack;
use super::DirectorActor;
use crate::child::{Exit, SendSignal, Stream};
use crate::event::EventKind;
use crate::frame::Frame;
use crate::protocol::machine::{Effect, Machine, Verdict};
use crate::protocol::ProtocolReport;

/// A protocol in progress (or finished, keeping its report).
pub(crate) struct ProtocolRun {
    machine: Machine,
    waiters: Vec<oneshot::Sender<ProtocolReport>>,
    report: Option<ProtocolReport>,
    /// `start` steps waiting for their child to be ready.
    starting: HashMap<Arc<str>, usize>,
    /// `stop` steps waiting for their child to exit.
    stopping: HashMap<Arc<str>, usize>,
    /// Effects found while routing, carried out after the batch.
    deferred: Vec<Effect>,
}

impl DirectorActor {
    /// Installs a protocol: from now on it hears of spawns, failures and
    /// exits. Its first step runs at [`begin_protocol`](Self::begin_protocol).
    pub(super) fn install_protocol(&mut self, machine: Machine) {
        self.protocol = Some(ProtocolRun {
            machine,
            waiters: Vec::new(),
            report: None,
            starting: HashMap::new(),
            stopping: HashMap::new(),
            deferred: Vec::new(),
        });
    }

    /// Runs the installed protocol's first steps (unless it failed already,
    /// a child of its launch could not be spawned, say).
    pub(super) fn begin_protocol(&mut self, ctx: &mut Context<Self>) {
        let fx = self.with_machine(|m| m.start(Instant::now()));
        self.step_fx(fx, ctx);
    }

    pub(super) fn with_machine(
        &mut self,
        f: impl FnOnce(&mut Machine) -> Vec<Effect>,
    ) -> Vec<Effect> {
        match &mut self.protocol {
            Some(run) if run.report.is_none() => f(&mut run.machine),
            _ => Vec::new(),
        }
    }

    /// The protocol's report, now or once it is finished.
    pub(super) fn protocol_report(&mut self) -> ResponseFuture<Option<ProtocolReport>> {
        match &mut self.protocol {
            None => Box::pin(async { None }),
            Some(run) => match &run.report {
                Some(report) => {
                    let report = report.clone();
                    Box::pin(async move { Some(report) })
                }
                None => {
                    let (tx, rx) = oneshot::channel();
                    run.waiters.push(tx);
                    Box::pin(async move { rx.await.ok() })
                }
            },
        }
    }

    pub(super) fn protocol_output(
        &mut self,
        child: &Arc<str>,
        stream: Stream,
        frame: &Frame,
        prompt: bool,
        ctx: &mut Context<Self>,
    ) {
        if self.protocol.is_some() {
            let fx =
                self.with_machine(|m| m.on_output(child, stream, frame, prompt, Instant::now()));
            self.step_fx(fx, ctx);
        }
    }

    pub(super) fn protocol_spawned(&mut self, child: &Arc<str>) {
        if let Some(run) = &mut self.protocol {
            run.machine.on_spawned(child);
        }
    }

    /// Whether a routed frame may go; effects wait for `flush_steps`.
    pub(super) fn guard_route(&mut self, from: &Arc<str>, to: &Arc<str>, frame: &Frame) -> bool {
        let Some(run) = &mut self.protocol else {
            return true;
        };
        if run.report.is_some() {
            return true;
        }
        let (verdict, fx) = run.machine.on_routed(from, to, frame, Instant::now());
        run.deferred.extend(fx);
        verdict == Verdict::Deliver
    }

    pub(super) fn flush_steps(&mut self, ctx: &mut Context<Self>) {
        if let Some(run) = &mut self.protocol {
            let fx = std::mem::take(&mut run.deferred);
            self.step_fx(fx, ctx);
        }
    }

    pub(super) fn protocol_exit(
        &mut self,
        child: &Arc<str>,
        exit: &Exit,
        for_good: bool,
        ctx: &mut Context<Self>,
    ) {
        let Some(run) = &mut self.protocol else {
            return;
        };
        let mut fx = run.machine.on_exit(child, exit, for_good, Instant::now());
        if let Some(step) = run.stopping.remove(child) {
            fx.extend(run.machine.action_done(step, Instant::now()));
        }
        if let Some(step) = run.starting.remove(child) {
            let reason = format!("`{child}` exited with {} before it was ready", exit.status);
            fx.extend(run.machine.action_failed(step, reason, Instant::now()));
        }
        self.step_fx(fx, ctx);
    }

    pub(super) fn protocol_ready(&mut self, child: &Arc<str>, ctx: &mut Context<Self>) {
        let fx = match &mut self.protocol {
            Some(run) => match run.starting.remove(child) {
                Some(step) => run.machine.action_done(step, Instant::now()),
                None => return,
            },
            None => return,
        };
        self.step_fx(fx, ctx);
    }

    /// A child that a `start` step waits for could not start.
    pub(super) fn protocol_start_failed(
        &mut self,
        child: &Arc<str>,
        reason: String,
        ctx: &mut Context<Self>,
    ) {
        let fx = match &mut self.protocol {
            Some(run) => match run.starting.remove(child) {
                Some(step) => run.machine.action_failed(step, reason, Instant::now()),
                None => return,
            },
            None => return,
        };
        self.step_fx(fx, ctx);
    }

    /// Ends a running protocol as failed (a shutdown, a run timeout).
    pub(super) fn abort_protocol(&mut self, reason: String, ctx: &mut Context<Self>) {
        let fx = self.with_machine(|m| m.abort(reason, Instant::now()));
        self.step_fx(fx, ctx);
    }

    /// Carries out effects (and the effects those lead to) in order, then
    /// writes what they queued.
    pub(super) fn step_fx(&mut self, fx: Vec<Effect>, ctx: &mut Context<Self>) {
        if fx.is_empty() {
            return; // the common case: a frame that passes nothing
        }
        let mut queue: VecDeque<Effect> = fx.into();
        while let Some(effect) = queue.pop_front() {
            let more = self.step_effect(effect, ctx);
            queue.extend(more);
        }
        self.drive_outbox(ctx);
    }

    fn step_effect(&mut self, effect: Effect, ctx: &mut Context<Self>) -> Vec<Effect> {
        let now = Instant::now();
        match effect {
            Effect::Send {
                step,
                to,
                frame,
                within,
            } => match self.writable(&to) {
                Ok(()) => {
                    self.queue_frame(&to, &frame, Ack::Step(step), Some(within));
                    Vec::new()
                }
                Err(e) => {
                    self.with_machine(|m| m.action_failed(step, format!("cannot send: {e}"), now))
                }
            },
            Effect::Close { step, child } => {
                if self.children.is_live(&child) {
                    self.outbox.push_close(&child, Ack::Step(step), now);
                    Vec::new()
                } else {
                    // A child that is not running has no open stdin: done too.
                    self.with_machine(|m| m.action_done(step, now))
                }
            }
            Effect::Start { step, child } => self.start_step(step, child, ctx),
            Effect::Stop { step, child }
                if self.children.get(&child).is_some_and(|c| {
                    matches!(c.state, super::children::State::Restarting { .. })
                }) =>
            {
                // Its restart is called off: it stays down, as stopped.
                if let Some((_, facts)) = self.children.call_off_restart(&child) {
                    self.apply(facts, ctx);
                }
                self.with_machine(|m| m.action_done(step, now))
            }
            Effect::Stop { step, child } => match self.children.stop(&child, None) {
                Ok(facts) => {
                    if let Some(run) = &mut self.protocol {
                        run.stopping.insert(child, step);
                    }
                    self.apply(facts, ctx);
                    Vec::new()
                }
                // Not running: nothing to stop.
                Err(()) => self.with_machine(|m| m.action_done(step, now)),
            },
            Effect::Kill {
                step,
                child,
                signal,
            } => {
                let Some(addr) = self.children.handle(&child).cloned() else {
                    let reason = format!("cannot kill: {}", self.not_running(&child));
                    return self.with_machine(|m| m.action_failed(step, reason, now));
                };
                ctx.spawn(fut::wrap_future(addr.send(SendSignal(signal))).map(
                    move |result, act: &mut Self, ctx| {
                        let fx = act.with_machine(|m| match result {
                            Ok(Ok(())) => m.action_done(step, Instant::now()),
                            Ok(Err(e)) => {
                                m.action_failed(step, format!("cannot kill: {e}"), Instant::now())
                            }
                            Err(_) => m.action_failed(
                                step,
                                format!("cannot kill `{child}`: it exited"),
                                Instant::now(),
                            ),
                        });
                        act.step_fx(fx, ctx);
                    },
                ));
                Vec::new()
            }
            Effect::Timer { step, after } => {
                ctx.run_later(after, move |act, ctx| {
                    let fx = act.with_machine(|m| m.on_timeout(step, Instant::now()));
                    act.step_fx(fx, ctx);
                });
                Vec::new()
            }
            Effect::Refused { from, to, reason } => {
                self.undeliverable(&from, to, reason, 1);
                Vec::new()
            }
            Effect::Deliver { from, to, frame } => {
                // A held message, released: queued before what later steps send.
                match self.writable(&to) {
                    Ok(()) => {
                        let ack = Ack::Routed {
                            from,
                            frames: 1,
                            batch: None,
                        };
                        let within = self.config.delivery_timeout;
                        self.queue_frame(&to, &frame, ack, Some(within));
                    }
                    Err(e) => self.undeliverable(&from, to, e.to_string(), 1),
                }
                Vec::new()
            }
            Effect::Passed {
                step,
                label,
                elapsed,
                outcome,
            } => {
                tracing::info!(step = step + 1, ?label, ?outcome, "step passed");
                self.bus.publish(
                    None,
                    EventKind::StepPassed {
                        step: step + 1,
                        label,
                        duration_ms: elapsed.as_millis() as u64,
                        outcome,
                    },
                );
                Vec::new()
            }
            Effect::Failed {
                step,
                label,
                reason,
                elapsed,
            } => {
                // Step 0: the run failed outside any step (it has none).
                let step = step.map_or(0, |i| i + 1);
                tracing::info!(step, ?label, %reason, "step failed");
                self.bus.publish(
                    None,
                    EventKind::StepFailed {
                        step,
                        label,
                        reason,
                        duration_ms: elapsed.as_millis() as u64,
                    },
                );
                Vec::new()
            }
            Effect::Violation {
                from,
                to,
                step,
                reason,
            } => {
                tracing::info!(%from, %to, %reason, "protocol violation");
                self.publish(
                    &from.clone(),
                    EventKind::Violation {
                        from,
                        to,
                        step,
                        reason,
                    },
                );
                Vec::new()
            }
            Effect::Done { passed } => {
                if let Some(run) = &mut self.protocol {
                    let report = ProtocolReport {
                        passed,
                        reason: run.machine.failure().map(str::to_string),
                        steps: run.machine.report(),
                        elapsed: run.machine.elapsed(now),
                    };
                    for waiter in run.waiters.drain(..) {
                        let _ = waiter.send(report.clone());
                    }
                    run.report = Some(report);
                }
                Vec::new()
            }
        }
    }

    /// A `start` step: a child that is not running starts again from its
    /// spec; the step passes once it is ready.
    fn start_step(&mut self, step: usize, child: Arc<str>, ctx: &mut Context<Self>) -> Vec<Effect> {
        match self.children.start(&child) {
            Start::Ready => self.with_machine(|m| m.action_done(step, Instant::now())),
            Start::Later(facts) => {
                if let Some(run) = &mut self.protocol {
                    run.starting.insert(child, step);
                }
                self.apply(facts, ctx);
                Vec::new()
            }
        }
    }
}

impl DirectorActor {
    /// Whether a protocol is running (not yet finished).
    pub(super) fn protocol_running(&self) -> bool {
        self.protocol
            .as_ref()
            .is_some_and(|run| run.report.is_none())
    }
}

impl DirectorActor {
    /// How the protocol ended, if one ran and ended.
    pub(super) fn protocol_passed(&self) -> Option<bool> {
        self.protocol.as_ref()?.report.as_ref().map(|r| r.passed)
    }

    /// A protocol without steps ends once no child runs, waits or restarts.
    pub(super) fn check_idle(&mut self, ctx: &mut Context<Self>) {
        let idle = self.protocol_running()
            && self
                .protocol
                .as_ref()
                .is_some_and(|run| run.machine.is_idle())
            && self.children.all_down();
        if idle {
            self.end_idle_protocol(ctx);
        }
    }

    /// Ends a protocol without steps as passed (unless it failed).
    pub(super) fn end_idle_protocol(&mut self, ctx: &mut Context<Self>) {
        let fx = self.with_machine(|m| m.end_idle());
        self.step_fx(fx, ctx);
    }
}
