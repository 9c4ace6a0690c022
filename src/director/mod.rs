//! [`DirectorActor`]: the only way children reach each other. It owns the
//! registry of children, the routes, the event bus, pending requests,
//! supervision, and the order in which children start and stop.
//!
//! ```text
//!  Rust caller ──Launch/Run/Deliver/Request/StopChild──► handlers.rs ──► Event subscribers
//!                                                          │   ▲   (bounded, lagged)
//!        children.rs: one state per child, transitions ─► facts (lifecycle.rs carries them out)
//!        protocol machine: steps ─► effects (stepping.rs carries them out)
//!        outbox.rs: one ordered stdin queue per child (writing.rs flushes it)
//!                                                          │   │ ChildEvents (numbered batches)
//!                                                          ▼   │
//!                                ChildActor  ChildActor  ChildActor ──► OS processes
//!                                                    watchdog (sh) ──► kills the groups if we die
//! ```
//!
//! The decisions are pure code, tested without processes: the registry's
//! transitions (`children.rs`), restart decisions (`supervision.rs`), the
//! outbox (`outbox.rs`), routing (`routing.rs`), request correlation
//! (`requests.rs`) and the step machine ([`crate::protocol`]). The actor's
//! handlers feed them and carry out what they return.
//!
//! A child actor never talks to another: a frame from A reaches B because the
//! director routed it (a route or an envelope). Everything written to B's
//! stdin goes through B's one outbox queue, in the order the director decided
//! it. The director handles A's next batch of output only after this one is
//! queued at its receivers, so a slow B slows A through the pipes instead of
//! filling memory; a B whose queue stays full for the delivery timeout gets
//! the frames reported `undeliverable`.
//!
//! Restarts follow [`supervision`](RestartSpec): per-child policy, intensity
//! and backoff, and a director-wide [`Strategy`].

mod children;
mod delivery;
mod handle;
mod handlers;
mod lifecycle;
mod messages;
mod outbox;
mod requests;
pub(crate) mod routing;
mod stepping;
mod supervision;
mod writing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

pub use handle::Director;
pub use messages::{ChildInfo, ChildState, SubscriptionId};
pub use routing::Route;
pub use supervision::{RestartPolicy, RestartSpec, Strategy};

use crate::child::{ChildActor, Exit};
use crate::error::{closest, DirectorError};
use crate::event::{Bus, EventKind, Journal};

/// A subscriber's queue on the bus, and the task that forwards it.
type Subscription = (Arc<crate::event::bus::Queue>, tokio::task::JoinHandle<()>);
use crate::sys::Watchdog;
use children::{Children, ShutdownCause};
use outbox::Outbox;
use requests::Requests;
use routing::RouteTable;

/// Settings of a director.
#[derive(Debug, Clone)]
pub struct DirectorConfig {
    /// Events a subscriber may fall behind before it loses the oldest.
    pub event_queue: usize,
    /// Bytes of events (their payloads, plus 64 an event) a subscriber may
    /// fall behind before it loses the oldest.
    pub event_queue_bytes: usize,
    /// How long a routed frame may wait for room in the receiver's stdin
    /// queue before it is reported `undeliverable`.
    pub delivery_timeout: Duration,
    /// Which siblings restart with a failed child.
    pub strategy: Strategy,
    /// Bytes kept for a child that is restarting (or not started yet),
    /// delivered in order to its next instance; past this, frames are refused.
    pub restart_buffer: usize,
    /// Bytes of unconsumed output kept per child for a protocol's `expect`
    /// (oldest dropped first), and of messages held under `order = hold`.
    pub expect_buffer: usize,
    /// Start the watchdog that kills every child's process group if our
    /// process dies (even by SIGKILL). Needs `/bin/sh`.
    pub watchdog: bool,
    /// A file that gets every event as a JSON line (complete, in order).
    pub journal: Option<Journal>,
    /// A directory (it must exist) that gets `NAME.stdout` and
    /// `NAME.stderr` for every child: the exact bytes it wrote (a terminal
    /// child's after `\r\n` and escape handling), appended across restarts.
    pub log_dir: Option<std::path::PathBuf>,
}

impl Default for DirectorConfig {
    fn default() -> Self {
        DirectorConfig {
            event_queue: 65_536,
            event_queue_bytes: 16 << 20,
            delivery_timeout: Duration::from_secs(5),
            strategy: Strategy::OneForOne,
            restart_buffer: 1 << 20,
            expect_buffer: 1 << 20,
            watchdog: true,
            journal: None,
            log_dir: None,
        }
    }
}

/// The actor that runs a set of children. See the [module docs](self).
pub struct DirectorActor {
    config: DirectorConfig,
    /// Every child's state, changed only by the registry's transitions.
    children: Children<Addr<ChildActor>>,
    /// Everything written to children's stdin, one ordered queue each.
    outbox: Outbox,
    /// The outbox is being flushed (a flush does not start another).
    driving: bool,
    /// The run is over: `finished` follows the outbox's last settlements.
    finishing: bool,
    /// Scratch space for routing one frame (see `delivery::route`).
    route_targets: Vec<(Arc<str>, Option<crate::frame::Frame>)>,
    /// Each child's chunk flags (see [`DirectorActor::forwards_chunks`]).
    chunk_flags: rustc_hash::FxHashMap<Arc<str>, crate::child::ChunkFlags>,
    /// Frames forwarded in chunks, per child (for tests).
    chunked_frames: rustc_hash::FxHashMap<Arc<str>, u64>,
    routes: RouteTable,
    bus: Bus,
    requests: Requests,
    subscriptions: HashMap<SubscriptionId, Subscription>,
    next_subscription: u64,
    exit_waiters: HashMap<Arc<str>, Vec<oneshot::Sender<Exit>>>,
    /// Callers of `wait_ready`, answered when the child is ready or cannot be.
    ready_waiters: HashMap<Arc<str>, Vec<oneshot::Sender<Result<(), DirectorError>>>>,
    watchdog: Option<Watchdog>,
    /// Containment of what escapes the children's groups (set at start).
    run: Option<crate::sys::Run>,
    protocol: Option<stepping::ProtocolRun>,
    /// Callers of `Shutdown` waiting for the end.
    shutdown_waiters: Vec<oneshot::Sender<Vec<ChildInfo>>>,
    /// Every child's final state, once the run has finished.
    finals: Option<Vec<ChildInfo>>,
    /// Why the run failed if one of its actors panicked (a bug).
    internal_error: Option<String>,
    /// The thread's panic count when we started (see `crate::panics`).
    panics_before: u64,
    /// Set when the director has a thread of its own (started outside an
    /// actix System): that thread ends with it. Dropped last.
    own_thread: Option<crate::runtime::OwnThread>,
}

impl DirectorActor {
    /// A director with these settings (start it with `Actor::start`, or use
    /// [`Director::start`]).
    pub fn new(config: DirectorConfig) -> DirectorActor {
        DirectorActor {
            bus: Bus::new(
                crate::event::bus::Bound {
                    events: config.event_queue,
                    bytes: config.event_queue_bytes,
                },
                config.journal.clone(),
            ),
            outbox: Outbox::new(config.restart_buffer),
            children: Children::new(config.strategy),
            config,
            driving: false,
            finishing: false,
            route_targets: Vec::new(),
            chunk_flags: Default::default(),
            chunked_frames: Default::default(),
            routes: RouteTable::default(),
            requests: Requests::default(),
            subscriptions: HashMap::new(),
            next_subscription: 0,
            exit_waiters: HashMap::new(),
            ready_waiters: HashMap::new(),
            watchdog: None,
            run: None,
            protocol: None,
            shutdown_waiters: Vec::new(),
            finals: None,
            internal_error: None,
            panics_before: 0,
            own_thread: None,
        }
    }

    /// The error a caller should see for a name that is not a child.
    fn unknown(&self, name: &Arc<str>) -> DirectorError {
        DirectorError::UnknownChild {
            child: name.clone(),
            suggestion: closest(name, self.children.names()),
        }
    }

    /// That the child is known, or the error a caller should see.
    fn known(&self, name: &Arc<str>) -> Result<(), DirectorError> {
        match self.children.get(name) {
            Some(_) => Ok(()),
            None => Err(self.unknown(name)),
        }
    }

    fn not_running(&self, name: &Arc<str>) -> DirectorError {
        DirectorError::NotRunning {
            child: name.clone(),
            state: self.children.public_state(name).to_string(),
        }
    }

    fn publish(&mut self, child: &Arc<str>, kind: EventKind) {
        self.bus.publish(Some(child), kind);
    }
}

/// A panic on the director's thread (see `crate::panics`).
#[derive(Message)]
#[rtype(result = "()")]
struct Panicked(Arc<str>);

impl DirectorActor {
    /// Why the run failed if an actor on our thread panicked since we
    /// started, whether or not its report reached us yet.
    fn internal_error(&mut self) -> Option<&str> {
        if self.internal_error.is_none() && crate::panics::count() > self.panics_before {
            let last = crate::panics::last();
            self.internal_error = Some(crate::panics::reason(
                last.as_deref().unwrap_or("an actor panicked"),
            ));
        }
        self.internal_error.as_deref()
    }
}

impl StreamHandler<Panicked> for DirectorActor {
    fn handle(&mut self, Panicked(text): Panicked, ctx: &mut Context<Self>) {
        if self.finals.is_some() || self.internal_error.is_some() {
            return; // over already, or failing already
        }
        let reason = crate::panics::reason(&text);
        tracing::error!(%reason, "the run fails");
        self.internal_error = Some(reason.clone());
        if self.children.shutting_down() {
            // Not a second shutdown (that would kill): the events say why
            // the run fails before they end.
            self.bus.publish(None, EventKind::Shutdown { reason });
            return;
        }
        self.begin_shutdown(reason, ShutdownCause::Requested, ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The watch never ends while we live; nothing to do if it did.
    }
}

impl Default for DirectorActor {
    fn default() -> Self {
        DirectorActor::new(DirectorConfig::default())
    }
}

impl Actor for DirectorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A panic in one of our actors (or in us) fails the run.
        let panics = crate::panics::watch();
        self.panics_before = crate::panics::count();
        ctx.add_stream(futures::stream::unfold(panics, |mut rx| async move {
            rx.recv().await.map(|text| (Panicked(text), rx))
        }));
        let run = crate::sys::Run::start();
        if self.config.watchdog {
            match Watchdog::start(run.id()) {
                Ok(watchdog) => {
                    run.watched_by(watchdog.input());
                    self.watchdog = Some(watchdog);
                }
                Err(e) => tracing::warn!(error = %e,
                    "cannot start the watchdog: if this process is killed, grandchildren may outlive it"),
            }
        }
        self.run = Some(run);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Stopped without a shutdown (its system is going down, or we
        // panicked): nothing may outlive the director, so every running
        // child is stopped. (The watchdog's pipe closes with us, and it
        // kills what is still listed.)
        for name in self.children.names() {
            if let Some(addr) = self.children.handle(name) {
                addr.do_send(crate::child::Stop { grace: None });
            }
        }
        if self.finals.is_none() {
            // The run ends here all the same: its last events say so.
            let reason = match (std::thread::panicking(), &self.internal_error) {
                (true, Some(why)) => why.clone(),
                (true, None) => crate::panics::reason(
                    crate::panics::last()
                        .as_deref()
                        .unwrap_or("the director panicked"),
                ),
                (false, _) => "the director was stopped before its run ended".to_string(),
            };
            self.bus.publish(None, EventKind::Shutdown { reason });
            self.bus
                .publish(None, EventKind::Finished { passed: false });
        }
        // Subscriptions are not aborted: each forwarder delivers what is
        // still queued for it and ends when the bus closes with us. On a
        // thread of our own, that thread ends once they have (or after a
        // bound, for a subscriber that does not take its events), and once
        // the children stopped above have exited.
        if let Some(own) = self.own_thread.take() {
            let forwarders: Vec<_> = self
                .subscriptions
                .drain()
                .map(|(_, (_, task))| task)
                .collect();
            let children: Vec<_> = self
                .children
                .names()
                .iter()
                .filter_map(|name| self.children.handle(name).cloned())
                .collect();
            actix::spawn(async move {
                let all = async {
                    futures::future::join_all(forwarders).await;
                    // A child actor that is gone answers at once.
                    for child in children {
                        while child.connected() {
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        }
                    }
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), all).await;
                drop(own);
            });
        }
    }
}
