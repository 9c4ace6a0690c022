//! Starting children in dependency order, readiness, exits, restarts (with
//! their strategy groups), and shutdown.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::supervision::{self, Decision, History};
use super::{DirectorActor, Entry, State};
use crate::child::{ChildActor, Exit, SpawnOptions};
use crate::error::DirectorError;
use crate::event::EventKind;
use crate::matching::PatternSpec;
use crate::spec::{ChildSpec, Ready, RestartPolicy};

/// Why a shutdown began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShutdownCause {
    /// Asked for (a caller, a signal, a run timeout): a running protocol fails.
    Requested,
    /// A significant child ended: the run is over, and a protocol without
    /// steps ends as it would have anyway.
    Significant,
}

/// Children restarted together: the failed one and its strategy's siblings.
/// They respawn, in start order, once the delay has passed and every
/// sibling that was stopped for it has exited.
pub(crate) struct RestartGroup {
    members: Vec<Arc<str>>,
    exiting: HashSet<Arc<str>>,
    delay_over: bool,
}

impl DirectorActor {
    /// Adds checked specs (see `Launch`) and starts what can start.
    pub(super) fn add_children(&mut self, specs: Vec<ChildSpec>, ctx: &mut Context<Self>) {
        let mut names = Vec::with_capacity(specs.len());
        for spec in specs {
            let ready_on = match &spec.ready {
                Some(Ready::Line(re)) => PatternSpec::Regex(re.clone()).compile().ok(),
                Some(Ready::Json(map)) => PatternSpec::Json(map.clone()).compile().ok(),
                _ => None,
            };
            for dep in &spec.depends_on {
                self.dependents
                    .entry(dep.clone())
                    .or_default()
                    .push(spec.name.clone());
            }
            let name = spec.name.clone();
            self.order.push(name.clone());
            names.push(name.clone());
            self.entries.insert(
                name,
                Entry {
                    spec: Arc::new(spec),
                    ready_on,
                    state: State::Waiting,
                    ready: false,
                    spawns: 0,
                    history: History::default(),
                    group: None,
                },
            );
        }
        for name in names {
            self.try_start(&name, ctx);
        }
    }

    /// Starts a waiting child if its dependencies are ready, or gives it up
    /// if one of them can no longer become ready.
    pub(super) fn try_start(&mut self, name: &Arc<str>, ctx: &mut Context<Self>) {
        let entry = &self.entries[name];
        if !matches!(entry.state, State::Waiting) {
            return;
        }
        if self.shutdown.is_some() {
            return self.not_started(name, "the director is shutting down".into(), ctx);
        }
        let mut all_ready = true;
        for dep in &entry.spec.depends_on {
            let dep_entry = &self.entries[dep];
            // Once ready is enough: a setup job that became ready and then
            // exited has done its part.
            match &dep_entry.state {
                _ if dep_entry.ready => {}
                State::Waiting | State::Running { .. } | State::Restarting { .. } => {
                    all_ready = false
                }
                _ => {
                    let reason = format!("dependency `{dep}` {}", self.public_state(dep));
                    return self.not_started(name, reason, ctx);
                }
            }
        }
        if all_ready {
            self.spawn_child(name, ctx);
        }
    }

    fn spawn_child(&mut self, name: &Arc<str>, ctx: &mut Context<Self>) {
        let entry = self.entries.get_mut(name).expect("known child");
        entry.spawns += 1;
        entry.ready = false;
        if entry.spawns == 1 {
            self.start_order.push(name.clone());
        }
        // The watchdog covers the child and its grandchildren; without one,
        // the child at least gets a parent-death signal.
        let options = SpawnOptions {
            parent_death_signal: self.watchdog.is_none(),
            stdin: true,
        };
        match ChildActor::spawn_with(entry.spec.clone(), ctx.address().recipient(), options) {
            Ok(started) => {
                if let Some(watchdog) = &self.watchdog {
                    watchdog.watch(started.pid);
                }
                entry.state = State::Running {
                    addr: started.addr,
                    pid: started.pid,
                    stopping: false,
                };
                // What was queued while it was not running goes first.
                self.outbox.attach(name, started.stdin);
                // `spawned` (and readiness) follow when the child's first
                // event arrives, so that every event keeps its order.
            }
            Err(e) => {
                tracing::warn!(child = %name, error = %e, "spawn failed");
                entry.state = State::SpawnFailed(e.to_string());
                self.close_outbox(name);
                self.exit_waiters.remove(name); // they learn it never started
                self.publish(
                    name,
                    EventKind::SpawnFailed {
                        error: e.to_string(),
                    },
                );
                self.protocol_start_failed(name, e.to_string(), ctx);
                self.abort_protocol(format!("child `{name}` could not be spawned: {e}"), ctx);
                self.resolve_dependents(name, ctx);
                self.end_if_significant(name, ctx);
                self.check_shutdown(ctx);
            }
        }
    }

    pub(super) fn not_started(&mut self, name: &Arc<str>, reason: String, ctx: &mut Context<Self>) {
        tracing::info!(child = %name, %reason, "not started");
        let entry = self.entries.get_mut(name).expect("known child");
        entry.state = State::NotStarted(reason.clone());
        self.close_outbox(name);
        self.exit_waiters.remove(name); // they learn it never started
        self.publish(
            name,
            EventKind::NotStarted {
                reason: reason.clone(),
            },
        );
        self.protocol_start_failed(name, format!("`{name}` was not started: {reason}"), ctx);
        self.resolve_dependents(name, ctx);
        self.check_shutdown(ctx);
    }

    /// Something changed for `name` (ready, or down for good): its waiting
    /// dependents start or give up.
    fn resolve_dependents(&mut self, name: &Arc<str>, ctx: &mut Context<Self>) {
        for dependent in self.dependents.get(name).cloned().unwrap_or_default() {
            self.try_start(&dependent, ctx);
        }
    }

    pub(super) fn mark_ready(&mut self, name: &Arc<str>, ctx: &mut Context<Self>) {
        let entry = self.entries.get_mut(name).expect("known child");
        if entry.ready || !matches!(entry.state, State::Running { .. }) {
            return;
        }
        entry.ready = true;
        self.publish(name, EventKind::Ready);
        self.protocol_ready(name, ctx);
        self.resolve_dependents(name, ctx);
    }

    /// The child's first event: publish it, then readiness by spec.
    pub(super) fn on_spawned(&mut self, name: &Arc<str>, pid: u32, ctx: &mut Context<Self>) {
        let entry = &self.entries[name];
        let attempt = entry.spawns;
        let ready = entry.spec.ready.clone();
        self.publish(name, EventKind::Spawned { pid, attempt });
        self.protocol_spawned(name);
        match ready {
            None => self.mark_ready(name, ctx),
            Some(Ready::After(delay)) => {
                let name = name.clone();
                ctx.run_later(delay, move |act, ctx| {
                    // Only if it is still the same process.
                    if matches!(&act.entries[&name].state, State::Running { pid: p, .. } if *p == pid)
                    {
                        act.mark_ready(&name, ctx);
                    }
                });
            }
            Some(_) => {} // a matching frame will make it ready
        }
    }

    pub(super) fn on_exited(&mut self, name: &Arc<str>, exit: Exit, ctx: &mut Context<Self>) {
        let entry = self.entries.get_mut(name).expect("known child");
        let (pid, stopping) = match entry.state {
            State::Running { pid, stopping, .. } => (pid, stopping),
            _ => return,
        };
        if let Some(watchdog) = &self.watchdog {
            watchdog.unwatch(pid); // the child actor killed what was left of its group
        }
        let group = entry.group;
        entry.state = State::Exited(exit.clone());
        // What still waits for its stdin waits for the next instance, if one
        // comes; the paths below that end it for good fail it.
        self.outbox.keep(name);
        self.requests.fail_all(name);
        self.publish(name, EventKind::exited(&exit));
        for waiter in self.exit_waiters.remove(name).unwrap_or_default() {
            let _ = waiter.send(exit.clone());
        }

        if let Some(id) = group {
            // Stopped to be restarted with a failed sibling.
            let for_good = self.entries[name].spec.restart.policy == RestartPolicy::Never;
            if for_good {
                self.close_outbox(name);
            }
            self.protocol_exit(name, &exit, for_good, ctx);
            return self.sibling_exited(id, name, exit, ctx);
        }
        if stopping || self.shutdown.is_some() {
            self.close_outbox(name);
            self.publish(name, EventKind::Stopped);
            self.protocol_exit(name, &exit, true, ctx);
            return self.check_shutdown(ctx);
        }
        let entry = self.entries.get_mut(name).expect("known child");
        let decision = supervision::decide(
            &entry.spec.restart,
            &exit,
            &mut entry.history,
            Instant::now(),
        );
        // The registry changes first (a step the exit passes may start the
        // child again), then the protocol learns of the exit, then the rest:
        // a significant child's end may shut everything down.
        let restarts = entry.history.total;
        match decision {
            Decision::Stay => self.close_outbox(name),
            Decision::GiveUp => {
                entry.state = State::GaveUp {
                    last: exit.clone(),
                    restarts,
                };
                self.close_outbox(name);
            }
            Decision::Restart { .. } => {
                entry.state = State::Restarting { last: exit.clone() };
                entry.ready = false;
            }
        }
        let for_good = !matches!(decision, Decision::Restart { .. });
        self.protocol_exit(name, &exit, for_good, ctx);
        match decision {
            Decision::Stay => self.down_for_good(name, ctx),
            Decision::GiveUp => {
                tracing::warn!(child = %name, restarts, "gave up");
                self.publish(name, EventKind::GaveUp { restarts });
                self.abort_protocol(
                    format!("child `{name}` gave up after {restarts} restarts"),
                    ctx,
                );
                self.down_for_good(name, ctx);
            }
            Decision::Restart { delay, attempt } => {
                self.publish(
                    name,
                    EventKind::Restarting {
                        attempt,
                        delay_ms: delay.as_millis() as u64,
                    },
                );
                self.restart_group(name, delay, ctx);
            }
        }
    }

    /// Everything still queued for `name`'s stdin fails: it will not run
    /// again (unless a `start` brings it back, with a new queue).
    pub(super) fn close_outbox(&mut self, name: &Arc<str>) {
        let state = self.public_state(name).to_string();
        let child = name.clone();
        self.outbox.fail_all(name, || DirectorError::NotRunning {
            child: child.clone(),
            state: state.clone(),
        });
    }

    /// A restart that has not happened yet is called off (a stop, a
    /// shutdown): the child stays down with the exit it had. Returns it.
    pub(super) fn call_off_restart(&mut self, name: &Arc<str>) -> Option<Exit> {
        let entry = self.entries.get_mut(name)?;
        let State::Restarting { last } = &entry.state else {
            return None;
        };
        let last = last.clone();
        entry.state = State::Exited(last.clone());
        entry.group = None;
        self.close_outbox(name);
        self.publish(name, EventKind::Stopped);
        for waiter in self.exit_waiters.remove(name).unwrap_or_default() {
            let _ = waiter.send(last.clone());
        }
        Some(last)
    }

    /// The child will not run again: its dependents may stop waiting, and a
    /// significant child ends the whole run.
    fn down_for_good(&mut self, name: &Arc<str>, ctx: &mut Context<Self>) {
        if !self.entries[name].ready {
            self.resolve_dependents(name, ctx);
        }
        self.end_if_significant(name, ctx);
    }

    fn end_if_significant(&mut self, name: &Arc<str>, ctx: &mut Context<Self>) {
        if self.entries[name].spec.significant {
            self.begin_shutdown(
                format!("significant child `{name}` ended"),
                ShutdownCause::Significant,
                ctx,
            );
        }
    }

    /// Restarts `failed` after `delay`, with the siblings its strategy names.
    fn restart_group(&mut self, failed: &Arc<str>, delay: Duration, ctx: &mut Context<Self>) {
        self.next_group += 1;
        let id = self.next_group;
        let siblings = supervision::siblings(self.config.strategy, failed, &self.start_order);
        let mut members = vec![];
        let mut exiting = HashSet::new();
        for sibling in siblings.iter().chain(std::iter::once(failed)) {
            if members.contains(sibling) {
                continue;
            }
            let entry = self.entries.get_mut(sibling).expect("known child");
            match &mut entry.state {
                _ if sibling == failed => {}
                State::Running { addr, stopping, .. } if !*stopping => {
                    *stopping = true;
                    addr.do_send(crate::child::Stop { grace: None });
                    exiting.insert(sibling.clone());
                }
                _ => continue, // not running: nothing to restart
            }
            entry.group = Some(id);
            members.push(sibling.clone());
        }
        // Respawn in start order, dependencies first.
        members.sort_by_key(|m| self.start_order.iter().position(|s| s == m));
        tracing::info!(child = %failed, ?delay, ?members, "restarting");
        self.groups.insert(
            id,
            RestartGroup {
                members,
                exiting,
                delay_over: false,
            },
        );
        let delay_over = move |act: &mut Self, ctx: &mut Context<Self>| {
            if let Some(group) = act.groups.get_mut(&id) {
                group.delay_over = true;
            }
            act.respawn_group(id, ctx);
        };
        if delay.is_zero() {
            // A timer, even of zero, waits for the next tick of tokio's
            // clock (up to 1 ms): respawn now.
            delay_over(self, ctx);
        } else {
            ctx.run_later(delay, delay_over);
        }
    }

    fn sibling_exited(&mut self, id: u64, name: &Arc<str>, exit: Exit, ctx: &mut Context<Self>) {
        let entry = self.entries.get_mut(name).expect("known child");
        if entry.spec.restart.policy == RestartPolicy::Never {
            // Like OTP's temporary children: stopped with the group, not restarted.
            entry.group = None;
            self.publish(name, EventKind::Stopped);
        } else {
            entry.state = State::Restarting { last: exit };
            entry.ready = false;
            entry.history.total += 1;
            let attempt = entry.history.total;
            self.publish(
                name,
                EventKind::Restarting {
                    attempt,
                    delay_ms: 0,
                },
            );
        }
        if let Some(group) = self.groups.get_mut(&id) {
            group.exiting.remove(name);
            group
                .members
                .retain(|m| m != name || self.entries[m].group.is_some());
        }
        self.respawn_group(id, ctx);
    }

    fn respawn_group(&mut self, id: u64, ctx: &mut Context<Self>) {
        let ready = self
            .groups
            .get(&id)
            .is_some_and(|g| g.delay_over && g.exiting.is_empty());
        if !ready {
            return;
        }
        let group = self.groups.remove(&id).expect("checked above");
        for name in &group.members {
            let entry = self.entries.get_mut(name).expect("known child");
            entry.group = None;
            if matches!(entry.state, State::Restarting { .. }) {
                entry.state = State::Waiting;
            }
        }
        // Each starts once its dependencies are ready again.
        for name in &group.members {
            self.try_start(name, ctx);
        }
        self.drive_outbox(ctx);
    }

    /// Begins a shutdown (once): nothing new starts, restarts are called
    /// off, and running children are stopped in reverse dependency order.
    pub(super) fn begin_shutdown(
        &mut self,
        reason: String,
        cause: ShutdownCause,
        ctx: &mut Context<Self>,
    ) {
        if self.shutdown.is_some() {
            return;
        }
        tracing::info!(%reason, "shutting down");
        match cause {
            ShutdownCause::Significant => self.end_idle_protocol(ctx),
            ShutdownCause::Requested => {}
        }
        self.abort_protocol(format!("the run was ended: {reason}"), ctx);
        self.shutdown = Some(Vec::new());
        self.bus.publish(None, EventKind::Shutdown { reason });
        self.groups.clear();
        let names: Vec<Arc<str>> = self.order.clone();
        for name in names {
            let entry = self.entries.get_mut(&name).expect("known child");
            entry.group = None;
            match &entry.state {
                State::Waiting => {
                    self.not_started(&name, "the director is shutting down".into(), ctx)
                }
                State::Restarting { .. } => {
                    self.call_off_restart(&name);
                }
                _ => {}
            }
        }
        self.check_shutdown(ctx);
        self.drive_outbox(ctx);
    }

    /// During a shutdown: stops what may stop now (children whose dependents
    /// all ended), and finishes when nothing runs.
    pub(super) fn check_shutdown(&mut self, ctx: &mut Context<Self>) {
        let Some(waiters) = &mut self.shutdown else {
            return;
        };
        let mut running = false;
        let mut to_stop = Vec::new();
        for (name, entry) in &self.entries {
            if let State::Running { stopping, .. } = &entry.state {
                running = true;
                let dependents_done = self
                    .dependents
                    .get(name)
                    .into_iter()
                    .flatten()
                    .all(|d| !matches!(self.entries[d].state, State::Running { .. }));
                if !*stopping && dependents_done {
                    to_stop.push(name.clone());
                }
            }
        }
        if !running {
            let waiters = std::mem::take(waiters);
            let passed = self.protocol_passed().unwrap_or(true);
            self.bus.publish(None, EventKind::Finished { passed });
            let list = self.list();
            for waiter in waiters {
                let _ = waiter.send(list.clone());
            }
            ctx.stop();
            return;
        }
        for name in to_stop {
            self.stop(&name, None);
        }
    }

    /// Asks a running child to stop (its exit arrives as an event).
    pub(super) fn stop(&mut self, name: &Arc<str>, grace: Option<Duration>) {
        if let Some(Entry {
            state: State::Running { addr, stopping, .. },
            ..
        }) = self.entries.get_mut(name)
        {
            *stopping = true;
            addr.do_send(crate::child::Stop { grace });
        }
    }
}
