//! [`DirectorActor`]: the only way children reach each other. It owns the
//! registry of children, the routes, the event bus, pending requests, and
//! the order in which children start and stop.
//!
//! ```text
//!  Rust caller ──Launch/Deliver/Request/StopChild──► DirectorActor ──► Event subscribers
//!                                                    │  ▲     (bounded, lagged)
//!                       Write (bounded, pushes back) │  │ ChildEvents (numbered batches)
//!                                                    ▼  │
//!                                ChildActor  ChildActor  ChildActor ──► OS processes
//! ```
//!
//! A child actor never talks to another: a frame from A reaches B because the
//! director routed it (a route or an envelope). The director handles A's next
//! batch of output only after it delivered this one, so a slow B slows A
//! through the pipes instead of filling memory; a B whose queue stays full
//! for the delivery timeout gets the frames reported `undeliverable`.

mod control;
mod graph;
mod handle;
mod messages;
mod requests;
mod routing;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::BytesMut;
use tokio::sync::oneshot;

pub use handle::Director;
pub use messages::{
    ChildInfo, ChildState, CloseChildStdin, Deliver, Launch, ListChildren, Request, Shutdown,
    SignalChild, StopChild, Subscribe, SubscriptionId, Unsubscribe, WaitChild,
};
pub use routing::Route;

use crate::child::{ChildActor, ChildEventKind, ChildEvents, Exit, StdinSender, Stream};
use crate::error::{closest, DirectorError};
use crate::event::{Bus, EventKind};
use crate::frame::{Frame, Framing};
use crate::matching::{Pattern, PatternSpec};
use crate::spec::{ChildSpec, Ready};
use requests::Requests;
use routing::RouteTable;

/// Settings of a director.
#[derive(Debug, Clone)]
pub struct DirectorConfig {
    /// Events a subscriber may fall behind before it loses the oldest.
    pub event_queue: usize,
    /// How long a routed frame may wait for room in the receiver's stdin
    /// queue before it is reported `undeliverable`.
    pub delivery_timeout: Duration,
}

impl Default for DirectorConfig {
    fn default() -> Self {
        DirectorConfig {
            event_queue: 4096,
            delivery_timeout: Duration::from_secs(5),
        }
    }
}

/// The actor that runs a set of children. See the [module docs](self).
pub struct DirectorActor {
    config: DirectorConfig,
    entries: BTreeMap<Arc<str>, Entry>,
    /// Names in the order they were added.
    order: Vec<Arc<str>>,
    /// For each child, the children that depend on it.
    dependents: HashMap<Arc<str>, Vec<Arc<str>>>,
    routes: RouteTable,
    bus: Bus,
    requests: Requests,
    subscriptions: HashMap<SubscriptionId, tokio::task::JoinHandle<()>>,
    next_subscription: u64,
    exit_waiters: HashMap<Arc<str>, Vec<oneshot::Sender<Exit>>>,
    shutdown: Option<Vec<oneshot::Sender<()>>>,
}

struct Entry {
    spec: Arc<ChildSpec>,
    ready_on: Option<Pattern>,
    state: State,
    ready: bool,
    attempt: u32,
}

enum State {
    Waiting,
    Running {
        addr: Addr<ChildActor>,
        pid: u32,
        stdin: StdinSender,
        stopping: bool,
    },
    Exited(Exit),
    SpawnFailed(String),
    NotStarted(String),
}

/// Frames for one receiver out of one batch, written with one queue slot.
struct Delivery {
    to: Arc<str>,
    stdin: StdinSender,
    bytes: BytesMut,
    frames: usize,
}

impl DirectorActor {
    /// A director with these settings (start it with `Actor::start`, or use
    /// [`Director::start`]).
    pub fn new(config: DirectorConfig) -> DirectorActor {
        DirectorActor {
            bus: Bus::new(config.event_queue),
            config,
            entries: BTreeMap::new(),
            order: Vec::new(),
            dependents: HashMap::new(),
            routes: RouteTable::default(),
            requests: Requests::default(),
            subscriptions: HashMap::new(),
            next_subscription: 0,
            exit_waiters: HashMap::new(),
            shutdown: None,
        }
    }

    /// The entry named `name`, or the error a caller should see.
    fn entry(&self, name: &Arc<str>) -> Result<&Entry, DirectorError> {
        self.entries
            .get(name)
            .ok_or_else(|| DirectorError::UnknownChild {
                child: name.clone(),
                suggestion: closest(name, &self.order),
            })
    }

    /// The stdin of a running child, or why there is none.
    fn running_stdin(&self, name: &Arc<str>) -> Result<StdinSender, DirectorError> {
        match &self.entry(name)?.state {
            State::Running { stdin, .. } => Ok(stdin.clone()),
            _ => Err(self.not_running(name)),
        }
    }

    fn not_running(&self, name: &Arc<str>) -> DirectorError {
        DirectorError::NotRunning {
            child: name.clone(),
            state: self.public_state(name).to_string(),
        }
    }

    fn public_state(&self, name: &Arc<str>) -> ChildState {
        let entry = &self.entries[name];
        match &entry.state {
            State::Waiting => ChildState::Waiting,
            State::Running { pid, stopping, .. } => ChildState::Running {
                pid: *pid,
                ready: entry.ready,
                stopping: *stopping,
            },
            State::Exited(exit) => ChildState::Exited(exit.clone()),
            State::SpawnFailed(error) => ChildState::SpawnFailed {
                error: error.clone(),
            },
            State::NotStarted(reason) => ChildState::NotStarted {
                reason: reason.clone(),
            },
        }
    }

    fn publish(&mut self, child: &Arc<str>, kind: EventKind) {
        self.bus.publish(Some(child), kind);
    }

    /// Adds checked specs (see [`Launch`]) and starts what can start.
    fn add_children(&mut self, specs: Vec<ChildSpec>, ctx: &mut Context<Self>) {
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
                    attempt: 0,
                },
            );
        }
        for name in names {
            self.try_start(&name, ctx);
        }
    }

    /// Starts a waiting child if its dependencies are ready, or gives it up
    /// if one of them can no longer become ready.
    fn try_start(&mut self, name: &Arc<str>, ctx: &mut Context<Self>) {
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
                State::Waiting | State::Running { .. } => all_ready = false,
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
        entry.attempt += 1;
        match ChildActor::spawn(entry.spec.clone(), ctx.address().recipient()) {
            Ok(started) => {
                entry.state = State::Running {
                    addr: started.addr,
                    pid: started.pid,
                    stdin: started.stdin,
                    stopping: false,
                };
                // `spawned` (and readiness) follow when the child's first
                // event arrives, so that every event keeps its order.
            }
            Err(e) => {
                tracing::warn!(child = %name, error = %e, "spawn failed");
                entry.state = State::SpawnFailed(e.to_string());
                self.publish(
                    name,
                    EventKind::SpawnFailed {
                        error: e.to_string(),
                    },
                );
                self.resolve_dependents(name, ctx);
            }
        }
    }

    fn not_started(&mut self, name: &Arc<str>, reason: String, ctx: &mut Context<Self>) {
        tracing::info!(child = %name, %reason, "not started");
        self.entries.get_mut(name).expect("known child").state = State::NotStarted(reason.clone());
        self.publish(name, EventKind::NotStarted { reason });
        self.resolve_dependents(name, ctx);
        self.check_shutdown(ctx);
    }

    /// Something changed for `name` (ready, or failed for good): its waiting
    /// dependents start or give up.
    fn resolve_dependents(&mut self, name: &Arc<str>, ctx: &mut Context<Self>) {
        for dependent in self.dependents.get(name).cloned().unwrap_or_default() {
            self.try_start(&dependent, ctx);
        }
    }

    fn mark_ready(&mut self, name: &Arc<str>, ctx: &mut Context<Self>) {
        let entry = self.entries.get_mut(name).expect("known child");
        if entry.ready || !matches!(entry.state, State::Running { .. }) {
            return;
        }
        entry.ready = true;
        self.publish(name, EventKind::Ready);
        self.resolve_dependents(name, ctx);
    }

    /// The child's first event: publish it, then readiness by spec.
    fn on_spawned(&mut self, name: &Arc<str>, pid: u32, ctx: &mut Context<Self>) {
        let entry = &self.entries[name];
        let attempt = entry.attempt;
        let ready = entry.spec.ready.clone();
        self.publish(name, EventKind::Spawned { pid, attempt });
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

    fn on_exited(&mut self, name: &Arc<str>, exit: Exit, ctx: &mut Context<Self>) {
        let entry = self.entries.get_mut(name).expect("known child");
        let stopped = matches!(entry.state, State::Running { stopping: true, .. });
        entry.state = State::Exited(exit.clone());
        let was_ready = entry.ready;
        self.requests.fail_all(name);
        self.publish(name, EventKind::exited(&exit));
        if stopped {
            self.publish(name, EventKind::Stopped);
        }
        for waiter in self.exit_waiters.remove(name).unwrap_or_default() {
            let _ = waiter.send(exit.clone());
        }
        if !was_ready {
            self.resolve_dependents(name, ctx);
        }
        self.check_shutdown(ctx);
    }

    /// Routes one output frame: to a waiting request, an envelope's child,
    /// or the routes' receivers. Frames for a receiver that is not running
    /// are reported at once.
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
        let targets: Vec<(Arc<str>, Option<Frame>)> = match enveloped {
            Some((to, framed)) => vec![(to, Some(framed))],
            None => self
                .routes
                .targets(from, stream, frame)
                .map(|to| (to.clone(), None))
                .collect(),
        };
        for (to, framed) in targets {
            let frame = framed.as_ref().unwrap_or(frame);
            let stdin = match self.entries.get(&to) {
                Some(Entry {
                    state: State::Running { stdin, .. },
                    ..
                }) => stdin.clone(),
                Some(_) => {
                    let reason = self.public_state(&to).to_string();
                    self.undeliverable(from, to, format!("not running ({reason})"), 1);
                    continue;
                }
                None => {
                    self.undeliverable(from, to, "no child has this name".into(), 1);
                    continue;
                }
            };
            let delivery = match deliveries.iter_mut().position(|d| d.to == to) {
                Some(i) => &mut deliveries[i],
                None => {
                    deliveries.push(Delivery {
                        to,
                        stdin,
                        bytes: BytesMut::new(),
                        frames: 0,
                    });
                    deliveries.last_mut().expect("just pushed")
                }
            };
            match (partial, frame) {
                // A chunk of an over-long line goes on without a newline, so
                // the receiver sees the line whole again.
                (true, Frame::Line(chunk)) => delivery.bytes.extend_from_slice(chunk.as_bytes()),
                _ => frame.encode(delivery.stdin.framing(), &mut delivery.bytes),
            }
            delivery.frames += 1;
        }
    }

    fn undeliverable(&mut self, from: &Arc<str>, to: Arc<str>, reason: String, frames: usize) {
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

    /// Stops what may stop now (children whose dependents all ended), and
    /// finishes the shutdown when nothing runs.
    fn check_shutdown(&mut self, ctx: &mut Context<Self>) {
        if self.shutdown.is_none() {
            return;
        }
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
        for name in to_stop {
            self.stop(&name, None);
        }
        if !running {
            for waiter in self.shutdown.take().unwrap_or_default() {
                let _ = waiter.send(());
            }
            self.shutdown = Some(Vec::new()); // stays shut: nothing new starts
            ctx.stop();
        }
    }

    /// Asks a running child to stop (its exit arrives as an event).
    fn stop(&mut self, name: &Arc<str>, grace: Option<Duration>) {
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

impl Default for DirectorActor {
    fn default() -> Self {
        DirectorActor::new(DirectorConfig::default())
    }
}

impl Actor for DirectorActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Stopped without a shutdown (its system is going down): nothing may
        // outlive the director, so every running child is stopped.
        for entry in self.entries.values() {
            if let State::Running { addr, .. } = &entry.state {
                addr.do_send(crate::child::Stop { grace: None });
            }
        }
        // Subscriptions are not aborted: each forwarder delivers what is
        // still queued for it and ends when the bus closes with us.
    }
}

impl Handler<ChildEvents> for DirectorActor {
    /// Resolves once the batch's routed frames are delivered: the child's
    /// next batch waits until then.
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
                    self.publish(
                        &name,
                        EventKind::Output {
                            stream,
                            frame,
                            partial,
                        },
                    );
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
                ChildEventKind::Exited(exit) => self.on_exited(&name, exit, ctx),
            }
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
