//! Carrying out the registry's [facts](super::children::Fact): spawning
//! child actors, stopping and killing them, timers, telling the protocol,
//! answering waiters, and the end of the run. The decisions are the
//! registry's; this is the only place that acts on them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::children::{Fact, ProbeKind, ShutdownCause, Tell};
use super::DirectorActor;
use crate::child::{ChildActor, Exit, SendSignal, SpawnOptions, Stop};
use crate::error::DirectorError;
use crate::event::EventKind;

impl DirectorActor {
    /// Carries out facts in order. A fact that leads to more (a spawn that
    /// fails, a step that starts a child) has those carried out next,
    /// before the rest: the order is the one the transitions decided.
    pub(super) fn apply(&mut self, facts: Vec<Fact>, ctx: &mut Context<Self>) {
        let mut queue: VecDeque<Fact> = facts.into();
        while let Some(fact) = queue.pop_front() {
            let more = self.carry_out(fact, ctx);
            for fact in more.into_iter().rev() {
                queue.push_front(fact);
            }
        }
    }

    fn carry_out(&mut self, fact: Fact, ctx: &mut Context<Self>) -> Vec<Fact> {
        match fact {
            Fact::Publish(child, kind) => self.publish(&child, kind),
            Fact::PublishRun(kind) => self.bus.publish(None, kind),
            Fact::Spawn(child) => return self.spawn(&child, ctx),
            Fact::Stop(child, grace) => {
                if let Some(addr) = self.children.handle(&child) {
                    addr.do_send(Stop { grace });
                }
            }
            Fact::Kill(child) => {
                if let Some(addr) = self.children.handle(&child) {
                    addr.do_send(SendSignal(crate::Signal::Kill));
                }
            }
            Fact::ReadyAfter { child, pid, delay } => {
                ctx.run_later(delay, move |act, ctx| {
                    let facts = act.children.ready_after(&child, pid);
                    act.apply(facts, ctx);
                    act.drive_outbox(ctx);
                });
            }
            Fact::RestartAfter { group, delay } => {
                if delay.is_zero() {
                    // A timer, even of zero, waits for the next tick of
                    // tokio's clock (up to 1 ms): respawn now.
                    return self.children.restart_delay_over(group);
                }
                ctx.run_later(delay, move |act, ctx| {
                    let facts = act.children.restart_delay_over(group);
                    act.apply(facts, ctx);
                    act.drive_outbox(ctx);
                });
            }
            Fact::Probe {
                child,
                pid,
                kind,
                after,
            } => {
                if after.is_zero() {
                    self.probe(child, pid, kind, ctx);
                } else {
                    ctx.run_later(after, move |act, ctx| act.probe(child, pid, kind, ctx));
                }
            }
            Fact::ReadyDeadline { child, pid, within } => {
                ctx.run_later(within, move |act, ctx| {
                    let facts = act.children.ready_deadline(&child, pid);
                    act.apply(facts, ctx);
                    act.drive_outbox(ctx);
                });
            }
            Fact::Tell(tell) => self.tell(tell, ctx),
            Fact::KeepInput(child) => {
                // What waited for the instance that ended fails; what comes
                // now is kept for the next one.
                let state = self.children.public_state(&child).to_string();
                let name = child.clone();
                self.outbox.keep(&child, || DirectorError::NotRunning {
                    child: name.clone(),
                    state: format!("it ended before reading it; {state}"),
                });
            }
            Fact::CloseInput(child) => {
                let state = self.children.public_state(&child).to_string();
                let name = child.clone();
                self.outbox.fail_all(&child, || DirectorError::NotRunning {
                    child: name.clone(),
                    state: state.clone(),
                });
            }
            Fact::AnswerExit(child, exit) => self.answer_exit(&child, exit),
            Fact::NotReady(child, reason) => self.answer_ready(&child, Err(reason)),
            Fact::Finished => self.finish(ctx),
        }
        Vec::new()
    }

    /// One try of a probe, as a future of its own on the director's
    /// thread: a connect or an exec is asynchronous and an HTTP request
    /// runs on the blocking pool, so frames keep flowing while it runs.
    /// Its result goes to the registry, which decides what comes next.
    fn probe(&mut self, child: Arc<str>, pid: u32, kind: ProbeKind, ctx: &mut Context<Self>) {
        let Some((check, timeout)) = self.children.probe_try(&child, pid, kind) else {
            return; // that instance ended, or no longer needs it
        };
        let marker = self.run.as_ref().map(|run| run.marker(&child));
        let attempt = async move { crate::probe::attempt(&check, timeout, marker).await };
        ctx.spawn(attempt.into_actor(self).map(move |result, act, ctx| {
            let facts = act.children.probe_result(&child, pid, kind, result);
            act.apply(facts, ctx);
            act.drive_outbox(ctx);
        }));
    }

    /// Spawns the child's actor and reports the outcome to the registry.
    fn spawn(&mut self, name: &Arc<str>, ctx: &mut Context<Self>) -> Vec<Fact> {
        if self.children.shutting_down() {
            // Asked for before a shutdown that began since: not carried out.
            return self.children.spawn_called_off(name);
        }
        let spec = self.children.get(name).expect("known child").spec.clone();
        // The watchdog covers the child and its grandchildren; without one,
        // the child at least gets a parent-death signal.
        let options = SpawnOptions {
            parent_death_signal: self.watchdog.is_none(),
            stdin: true,
            marker: self.run.as_ref().map(|run| run.marker(name)),
            log_dir: self.config.log_dir.clone(),
            chunks: Some(self.chunk_flags(name)),
            stdout_file: None,
            stderr_file: None,
        };
        match ChildActor::spawn_with(spec, ctx.address().recipient(), options) {
            Ok(started) => {
                if let Some(watchdog) = &self.watchdog {
                    watchdog.watch(started.pid);
                }
                self.children.spawned(name, started.addr, started.pid);
                // What was queued while it was not running goes first.
                self.outbox.attach(name, started.stdin);
                // `spawned` (and readiness) follow when the child's first
                // event arrives, so that every event keeps its order.
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(child = %name, error = %e, "spawn failed");
                self.children.spawn_failed(name, e.to_string())
            }
        }
    }

    /// The child's process ended (its last event).
    ///
    /// When it was stopped or will restart, what escaped its group is
    /// killed first: a stop step, or the next instance, comes after it.
    /// (A child that ended by itself for good leaves its daemons running
    /// until the end of the run; during a shutdown the run's end kills
    /// them all at once.)
    pub(super) fn on_exited(&mut self, name: &Arc<str>, exit: Exit, ctx: &mut Context<Self>) {
        let pid = self.children.pid(name);
        if let (Some(watchdog), Some(pid)) = (&self.watchdog, pid) {
            watchdog.unwatch(pid); // the child actor killed what was left of its group
        }
        let contain = !self.children.shutting_down()
            && (exit.requested || self.children.restarts_after(name, &exit));
        if let (true, Some(run), Some(pid)) = (contain, &self.run, pid) {
            let killed = run.kill_child(run.marker(name), pid);
            let name = name.clone();
            ctx.wait(fut::wrap_future::<_, Self>(killed).map(move |_, act, ctx| {
                act.exit_contained(&name, exit, ctx);
                // What the event handler did after an exit.
                act.flush_steps(ctx);
                act.drive_outbox(ctx);
                act.check_idle(ctx);
            }));
            return;
        }
        self.exit_contained(name, exit, ctx);
    }

    fn exit_contained(&mut self, name: &Arc<str>, exit: Exit, ctx: &mut Context<Self>) {
        self.requests.fail_all(name);
        let facts = self.children.on_exit(name, exit, Instant::now());
        self.apply(facts, ctx);
    }

    /// Begins a shutdown (once); see [`Children::begin_shutdown`](super::children::Children::begin_shutdown).
    pub(super) fn begin_shutdown(
        &mut self,
        reason: String,
        cause: ShutdownCause,
        ctx: &mut Context<Self>,
    ) {
        if !self.children.shutting_down() {
            tracing::info!(%reason, "shutting down");
        }
        let facts = self.children.begin_shutdown(reason, cause);
        self.apply(facts, ctx);
        self.drive_outbox(ctx);
    }

    fn tell(&mut self, tell: Tell, ctx: &mut Context<Self>) {
        // `wait_ready` callers hear first.
        match &tell {
            Tell::Ready(child) => self.answer_ready(child, Ok(())),
            Tell::StartFailed(child, reason) => {
                let reason = reason.clone();
                self.answer_ready(child, Err(reason));
            }
            // An instance that ends before it is ready, with a restart to
            // come, leaves its waiters waiting for the next one.
            Tell::Exit {
                child,
                exit,
                for_good: true,
            } => {
                let reason = format!("it exited with {} before it was ready", exit.status);
                self.answer_ready(child, Err(reason));
            }
            _ => {}
        }
        match tell {
            Tell::Spawned(child) => self.protocol_spawned(&child),
            Tell::Ready(child) => self.protocol_ready(&child, ctx),
            Tell::Exit {
                child,
                exit,
                for_good,
            } => self.protocol_exit(&child, &exit, for_good, ctx),
            Tell::StartFailed(child, reason) => self.protocol_start_failed(&child, reason, ctx),
            Tell::Abort(reason) => self.abort_protocol(reason, ctx),
            Tell::EndIdle => self.end_idle_protocol(ctx),
        }
    }

    /// Answers the `wait_ready` callers of `child`.
    pub(super) fn answer_ready(&mut self, child: &Arc<str>, result: Result<(), String>) {
        for waiter in self.ready_waiters.remove(child).unwrap_or_default() {
            let _ = waiter.send(result.clone().map_err(|reason| DirectorError::NotReady {
                child: child.clone(),
                reason,
            }));
        }
    }

    fn answer_exit(&mut self, child: &Arc<str>, exit: Option<Exit>) {
        let waiters = self.exit_waiters.remove(child).unwrap_or_default();
        // Without an exit the waiters are dropped: they learn it never ran.
        if let Some(exit) = exit {
            for waiter in waiters {
                let _ = waiter.send(exit.clone());
            }
        }
    }

    /// Nothing runs after a shutdown: once what is still settling in the
    /// outbox is published, `finished` (the last event, once), every
    /// shutdown caller answered, and the director stops.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        // What escaped any child's group goes before the end is told.
        let killed = self.run.as_ref().map(|run| run.kill_all());
        ctx.wait(
            fut::wrap_future::<_, Self>(futures::future::OptionFuture::from(killed)).map(
                |_, act, ctx| {
                    if let Some(watchdog) = &act.watchdog {
                        watchdog.clean_end();
                    }
                    act.finishing = true;
                    act.drive_outbox(ctx); // publishes `finished` at its end
                },
            ),
        );
    }

    /// The end of [`finish`](Self::finish), after the outbox's last settlements.
    pub(super) fn finished(&mut self, ctx: &mut Context<Self>) {
        // A panic whose report is still on its way fails the run as well,
        // and the events say why before they end.
        let heard = self.internal_error.is_some();
        if let Some(reason) = self.internal_error().filter(|_| !heard) {
            let reason = reason.to_string();
            self.bus.publish(None, EventKind::Shutdown { reason });
        }
        let passed = self.protocol_passed().unwrap_or(true) && self.internal_error.is_none();
        self.bus.publish(None, EventKind::Finished { passed });
        self.bus.finish(); // in the events file before anyone is told
        let list = self.children.list();
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(list.clone());
        }
        self.finals = Some(list);
        ctx.stop();
    }
}
