//! [`Director`]: a cloneable handle that speaks to a [`DirectorActor`] with
//! async methods and typed (serde) messages.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;

use super::children::ShutdownCause;
use super::messages::Request;
use super::messages::*;
use super::{DirectorActor, DirectorConfig, Route};
use crate::child::Exit;
use crate::error::{DirectorError, RequestError};
use crate::event::{Event, EventBatch, EventFilter, EventStream};
use crate::frame::Frame;
use crate::plan::Plan;
use crate::protocol::{Protocol, ProtocolReport};
use crate::spec::ChildSpec;
use crate::Signal;

/// A handle to a running director. Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use procession::Director;
/// use procession::{ChildSpec, Framing};
///
/// #[actix::main]
/// async fn main() {
///     let director = Director::start();
///     director.add(ChildSpec::new("cat", ["cat"])).await.unwrap();
///     // A line child's reply is its next line; it decodes into any
///     // `Deserialize` type (here: a number).
///     let n: u32 = director.request("cat", "42", Duration::from_secs(5)).await.unwrap();
///     assert_eq!(n, 42);
///     director.shutdown("done").await;
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Director {
    addr: Addr<DirectorActor>,
}

impl Director {
    /// Starts a director with default settings: inside an actix `System`
    /// on the current arbiter, else (plain tokio, or no runtime) on a
    /// thread of its own that ends once the director has shut down.
    pub fn start() -> Director {
        Director::with_config(DirectorConfig::default())
    }

    /// [`Director::start`] with these settings.
    pub fn with_config(config: DirectorConfig) -> Director {
        let addr = crate::runtime::start("procession-director", move |own_thread| {
            let mut director = DirectorActor::new(config);
            director.own_thread = own_thread;
            director
        });
        Director { addr }
    }

    /// Tells the director that a write of this program's own failed (its
    /// stdout is closed, a log collector is gone): it publishes
    /// `write_failed` with `target` (`stdout`, `stderr`, a file) and the
    /// error, so the events file says why output is missing. Call it once
    /// per target; it never waits.
    pub fn report_write_failure(&self, target: impl Into<String>, error: impl ToString) {
        self.addr.do_send(ReportWriteFailure {
            target: target.into(),
            error: error.to_string(),
        });
    }

    async fn ask<M>(&self, msg: M) -> Result<M::Result, DirectorError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        DirectorActor: Handler<M>,
    {
        self.addr.send(msg).await.map_err(|_| DirectorError::Gone)
    }

    /// Adds children and routes, checked as a whole: names, dependency
    /// cycles, unknown children in `depends_on`, routes (they may name the
    /// new children), regexes. On any problem nothing is added or started
    /// and all problems are returned ([`DirectorError::Invalid`]). Then each
    /// child starts as soon as its dependencies are ready.
    pub async fn launch(
        &self,
        children: impl IntoIterator<Item = ChildSpec>,
        routes: impl IntoIterator<Item = Route>,
    ) -> Result<(), DirectorError> {
        self.ask(Launch {
            children: children.into_iter().collect(),
            routes: routes.into_iter().collect(),
            protocol: None,
        })
        .await?
    }

    /// Adds children and routes (checked as [`launch`](Director::launch)
    /// does, with the protocol's steps and captures) and runs a protocol
    /// over them; returns its report once it has finished. The protocol
    /// starts before any child can print, so its first `expect` sees
    /// everything. The children keep running: stop them with
    /// [`Director::shutdown`].
    pub async fn run(
        &self,
        children: impl IntoIterator<Item = ChildSpec>,
        routes: impl IntoIterator<Item = Route>,
        protocol: Protocol,
    ) -> Result<ProtocolReport, DirectorError> {
        self.ask(Run(Launch {
            children: children.into_iter().collect(),
            routes: routes.into_iter().collect(),
            protocol: Some(protocol),
        }))
        .await?
    }

    /// Adds a plan checked beforehand (see [`Plan::check`]).
    pub async fn launch_plan(&self, plan: Plan) -> Result<(), DirectorError> {
        self.ask(LaunchPlan(plan)).await?
    }

    /// Adds a plan checked beforehand and runs its protocol (an empty one
    /// if it has none: the run lasts as long as its children); returns the
    /// report once it has finished.
    pub async fn run_plan(&self, plan: Plan) -> Result<ProtocolReport, DirectorError> {
        self.ask(RunPlan(plan)).await?
    }

    /// Adds one child; it starts once its dependencies are ready.
    pub async fn add(&self, spec: ChildSpec) -> Result<(), DirectorError> {
        self.launch([spec], []).await
    }

    /// Adds one route.
    pub async fn route(&self, route: Route) -> Result<(), DirectorError> {
        self.launch([], [route]).await
    }

    /// Writes a frame to a child's stdin (waits while its queue is full).
    pub async fn deliver(
        &self,
        to: impl Into<Arc<str>>,
        frame: impl Into<Frame>,
    ) -> Result<(), DirectorError> {
        self.ask(Deliver {
            to: to.into(),
            frame: frame.into(),
        })
        .await?
    }

    /// Writes one line (a newline is added).
    pub async fn deliver_line(
        &self,
        to: impl Into<Arc<str>>,
        line: impl Into<String>,
    ) -> Result<(), DirectorError> {
        self.deliver(to, Frame::Line(line.into())).await
    }

    /// Writes any serializable value as one line of compact JSON.
    pub async fn deliver_json<T: Serialize + ?Sized>(
        &self,
        to: impl Into<Arc<str>>,
        value: &T,
    ) -> Result<(), DirectorError> {
        let to = to.into();
        let value = to_json(&to, value)?;
        self.deliver(to, Frame::Json(value)).await
    }

    /// Sends a request and returns the raw reply frame. For a `json` child
    /// the request must be an object; the director adds `"id"` (or the
    /// spec's `request_id_field`) and the reply is the first object from the
    /// child with the same value there. For other children the reply is the
    /// next stdout frame (concurrent requests are answered in order), and a
    /// JSON string frame is sent as a plain line.
    pub async fn request_frame(
        &self,
        to: impl Into<Arc<str>>,
        frame: impl Into<Frame>,
        timeout: Duration,
    ) -> Result<Frame, RequestError> {
        self.ask(Request {
            to: to.into(),
            frame: frame.into(),
            timeout,
        })
        .await?
    }

    /// Sends a serializable request and decodes the reply into `R`.
    ///
    /// For a `json` child the value must serialize to an object; it gets an
    /// `"id"` (or the field its spec's `request_id_field` names) and the
    /// reply with the same value there decodes into `R` (extra fields such
    /// as `id` are ignored unless `R` denies them). An object that has that
    /// field already is refused ([`RequestError::IdConflict`]), never
    /// overwritten. A reply that comes after `timeout` is dropped and
    /// published as `late_reply`, never routed. For a line
    /// child a string is sent as the line itself, anything else as compact
    /// JSON, and the reply line decodes as JSON if it is JSON, else as a
    /// string.
    pub async fn request<T, R>(
        &self,
        to: impl Into<Arc<str>>,
        value: &T,
        timeout: Duration,
    ) -> Result<R, RequestError>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let to = to.into();
        let value = serde_json::to_value(value).map_err(|source| RequestError::Encode {
            child: to.clone(),
            source,
        })?;
        let reply = self
            .request_frame(to.clone(), Frame::Json(value), timeout)
            .await?;
        decode_reply(&to, reply)
    }

    /// Sends events that pass `filter` to `to`.
    pub async fn subscribe(
        &self,
        to: Recipient<Event>,
        filter: EventFilter,
    ) -> Result<SubscriptionId, DirectorError> {
        self.ask(Subscribe { to, filter }).await
    }

    /// The events that pass `filter`, as a stream (no actor of yours
    /// needed), in order; it ends after the run's `finished`, once the
    /// director has stopped. A stream read slower than events come loses
    /// some and gets a `lagged` event saying how many, as any subscriber
    /// does; `EventFilter::drop_only` says which kinds it may lose.
    ///
    /// Works from any runtime: the forwarding runs beside the director.
    pub async fn events(&self, filter: EventFilter) -> Result<EventStream, DirectorError> {
        self.ask(StreamEvents { filter }).await.map(|r| r.0)
    }

    /// Sends events that pass `filter` to `to` in batches: one message for
    /// what waited for it, with the same delivery promise as
    /// [`Director::subscribe`]. The events are shared by every subscriber,
    /// not copied for each: the way for many subscribers to keep up with a
    /// flood of output.
    pub async fn subscribe_batches(
        &self,
        to: Recipient<EventBatch>,
        filter: EventFilter,
    ) -> Result<SubscriptionId, DirectorError> {
        self.ask(SubscribeBatches { to, filter }).await
    }

    /// How many of `child`'s output frames went in chunks: forwarded and
    /// counted without being decoded one by one, because nobody watched
    /// them. For tests of that path; not a promise.
    #[doc(hidden)]
    pub async fn chunked_frames(&self, child: impl Into<Arc<str>>) -> Result<u64, DirectorError> {
        self.ask(ChunkedFrames(child.into())).await
    }

    /// Ends a subscription.
    pub async fn unsubscribe(&self, id: SubscriptionId) -> Result<(), DirectorError> {
        self.ask(Unsubscribe(id)).await
    }

    /// Stops a child (with this grace, or its spec's) and returns its exit.
    pub async fn stop(
        &self,
        child: impl Into<Arc<str>>,
        grace: Option<Duration>,
    ) -> Result<Exit, DirectorError> {
        self.ask(StopChild {
            child: child.into(),
            grace,
        })
        .await?
    }

    /// Waits for a child's exit.
    pub async fn wait_exit(&self, child: impl Into<Arc<str>>) -> Result<Exit, DirectorError> {
        self.ask(WaitChild {
            child: child.into(),
        })
        .await?
    }

    /// [`Director::wait_exit`], for at most `within`
    /// ([`DirectorError::WaitTimedOut`] past it; the child runs on).
    pub async fn wait_exit_within(
        &self,
        child: impl Into<Arc<str>>,
        within: Duration,
    ) -> Result<Exit, DirectorError> {
        let child = child.into();
        match tokio::time::timeout(within, self.wait_exit(child.clone())).await {
            Ok(result) => result,
            Err(_) => Err(DirectorError::WaitTimedOut {
                child,
                what: "exited",
                within,
            }),
        }
    }

    /// Waits until a child is ready (see `ready` in its spec). Fails with
    /// the reason when it cannot become ready: it could not be spawned (a
    /// missing program), exited for good first, was not started (a
    /// dependency failed), was stopped or removed. Through a restart (one
    /// asked for, or by its policy) it waits for the next instance.
    pub async fn wait_ready(&self, child: impl Into<Arc<str>>) -> Result<(), DirectorError> {
        self.ask(WaitReady {
            child: child.into(),
        })
        .await?
    }

    /// [`Director::wait_ready`], for at most `within`.
    pub async fn wait_ready_within(
        &self,
        child: impl Into<Arc<str>>,
        within: Duration,
    ) -> Result<(), DirectorError> {
        let child = child.into();
        match tokio::time::timeout(within, self.wait_ready(child.clone())).await {
            Ok(result) => result,
            Err(_) => Err(DirectorError::WaitTimedOut {
                child,
                what: "ready",
                within,
            }),
        }
    }

    /// Starts a child that is down (exited, stopped, gave up, could not
    /// be spawned): a stopped child can be started again, with a fresh
    /// restart intensity. A child that runs or will is left as it is.
    /// Returns once it is under way: [`Director::wait_ready`] waits for it.
    pub async fn start_child(&self, child: impl Into<Arc<str>>) -> Result<(), DirectorError> {
        self.ask(StartChild {
            child: child.into(),
        })
        .await?
    }

    /// Stops a running child with its stop spec and starts it again,
    /// whatever its restart policy; it does not count against its restart
    /// intensity. A child that is down just starts. Returns once the old
    /// instance has exited and the new one is under way: what is sent
    /// after goes to the new one.
    pub async fn restart(&self, child: impl Into<Arc<str>>) -> Result<(), DirectorError> {
        self.ask(RestartChild {
            child: child.into(),
        })
        .await?
    }

    /// Stops a child if it runs (with its stop spec) and forgets it, with
    /// its routes: its name may be added again. Refused while other
    /// children depend on it or a protocol runs.
    pub async fn remove(&self, child: impl Into<Arc<str>>) -> Result<(), DirectorError> {
        self.ask(RemoveChild {
            child: child.into(),
        })
        .await?
    }

    /// Sends a signal to a child's process group.
    pub async fn signal(
        &self,
        child: impl Into<Arc<str>>,
        signal: Signal,
    ) -> Result<(), DirectorError> {
        self.ask(SignalChild {
            child: child.into(),
            signal,
        })
        .await?
    }

    /// Closes a child's stdin after what is queued.
    pub async fn close_stdin(&self, child: impl Into<Arc<str>>) -> Result<(), DirectorError> {
        self.ask(CloseChildStdin {
            child: child.into(),
        })
        .await?
    }

    /// Every child and its state, in the order they were added.
    pub async fn children(&self) -> Result<Vec<ChildInfo>, DirectorError> {
        self.ask(ListChildren).await
    }

    /// Stops every child in reverse dependency order and waits until all
    /// have exited; the director stops after. Returns every child's final
    /// state (empty if the director was already gone). Calling it again is
    /// fine.
    pub async fn shutdown(&self, reason: impl Into<String>) -> Vec<ChildInfo> {
        self.ask(Shutdown {
            reason: reason.into(),
            kill: false,
            cause: ShutdownCause::Requested,
        })
        .await
        .unwrap_or_default()
    }

    /// A shutdown asked by the person running it (`procession ctl
    /// shutdown`): like [`shutdown`](Director::shutdown), but a protocol
    /// without steps (a run that lasts as long as its children) ends as
    /// passed, as when a significant child ends.
    pub(crate) async fn shutdown_by_operator(&self, reason: impl Into<String>) {
        let _ = self
            .ask(Shutdown {
                reason: reason.into(),
                kill: false,
                cause: ShutdownCause::Operator,
            })
            .await;
    }

    /// Publishes a `control` event (the control socket calls it before it
    /// acts on a request, so the event comes before the effects).
    pub(crate) fn note_control(&self, op: &'static str, child: Option<Arc<str>>) {
        self.addr.do_send(NoteControl { op, child });
    }

    /// Kills every child at once (SIGKILL to each group, and to what
    /// escaped it), without waiting for graces; what a second Ctrl-C does.
    /// Returns every child's final state, like [`shutdown`](Director::shutdown).
    pub async fn shutdown_now(&self, reason: impl Into<String>) -> Vec<ChildInfo> {
        self.ask(Shutdown {
            reason: reason.into(),
            kill: true,
            cause: ShutdownCause::Requested,
        })
        .await
        .unwrap_or_default()
    }

    /// Waits for the report of the protocol started by
    /// [`run`](Director::run), [`run_plan`](Director::run_plan) or a plan
    /// given to [`launch_plan`](Director::launch_plan); `Ok(None)` when none
    /// was started.
    pub async fn wait_protocol(&self) -> Result<Option<ProtocolReport>, DirectorError> {
        self.ask(WaitProtocol).await
    }

    /// Turns SIGINT, SIGTERM and SIGHUP of this process into a shutdown:
    /// the first one stops every child with its grace, a second one kills
    /// them at once. The receiver gets the first signal (to choose an exit
    /// status: 130 for INT, 143 for TERM, 129 for HUP).
    ///
    /// Call it once, inside the actix system or a tokio runtime.
    pub fn shutdown_on_signals(&self) -> std::io::Result<oneshot::Receiver<Signal>> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (tx, rx) = oneshot::channel();
        let addr = self.addr.clone();
        crate::runtime::spawn(async move {
            let first = tokio::select! {
                _ = int.recv() => Signal::Int,
                _ = term.recv() => Signal::Term,
                _ = hup.recv() => Signal::Hup,
            };
            let _ = tx.send(first);
            addr.do_send(Shutdown {
                reason: format!("received SIG{first}"),
                kill: false,
                cause: ShutdownCause::Requested,
            });
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
                _ = hup.recv() => {},
            }
            addr.do_send(Shutdown {
                reason: "received a second signal: killing".into(),
                kill: true,
                cause: ShutdownCause::Requested,
            });
        });
        Ok(rx)
    }
}

fn to_json<T: Serialize + ?Sized>(child: &Arc<str>, value: &T) -> Result<Value, DirectorError> {
    serde_json::to_value(value).map_err(|source| DirectorError::Encode {
        child: child.clone(),
        source,
    })
}

fn decode_reply<R: DeserializeOwned>(child: &Arc<str>, reply: Frame) -> Result<R, RequestError> {
    let bad = |reply: &str, source| RequestError::BadReply {
        child: child.clone(),
        reply: reply.chars().take(80).collect(),
        source,
    };
    match reply {
        Frame::Json(value) => {
            let text = value.to_string();
            serde_json::from_value(value).map_err(|e| bad(&text, e))
        }
        Frame::Line(line) => serde_json::from_str(&line)
            .or_else(|_| serde_json::from_value(Value::String(line.clone())))
            .map_err(|e| bad(&line, e)),
        Frame::Bytes(bytes) => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            serde_json::from_slice(&bytes).map_err(|e| bad(&text, e))
        }
    }
}
