//! The messages a [`DirectorActor`](super::DirectorActor) takes. Most users
//! call them through the [`Director`](super::Director) handle instead.

use std::sync::Arc;
use std::time::Duration;

use actix::{Message, Recipient};

use super::routing::Route;
use crate::child::Exit;
use crate::error::{DirectorError, RequestError};
use crate::event::{Event, EventFilter};
use crate::frame::Frame;
use crate::plan::Plan;
use crate::protocol::{Protocol, ProtocolReport};
use crate::spec::ChildSpec;
use crate::Signal;

/// Adds children and routes, and optionally starts a protocol over them.
/// Everything is checked first (names, dependency cycles, unknown children
/// in `depends_on`, routes and steps, regexes, captures); on any problem
/// nothing is added or started and all problems are returned. Then each
/// child starts as soon as its dependencies are ready.
///
/// A protocol given here starts before any child can print, so its first
/// `expect` sees everything. Wait for its report with [`WaitProtocol`].
#[derive(Debug, Clone, Default, Message)]
#[rtype(result = "Result<(), DirectorError>")]
pub struct Launch {
    /// Children to add.
    pub children: Vec<ChildSpec>,
    /// Routes to add (they may name the new children).
    pub routes: Vec<Route>,
    /// A protocol to run (one at a time).
    pub protocol: Option<Protocol>,
}

/// Adds a [`Plan`] checked beforehand (a scenario's): like [`Launch`], but
/// only checked again if the director already has children or routes.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), DirectorError>")]
pub struct LaunchPlan(pub Plan);

/// Launches children, routes and a protocol (see [`Launch`]) and resolves
/// with the protocol's report once it has finished (an empty protocol if
/// none is given: it lasts as long as the children). Unlike `Launch` then
/// [`WaitProtocol`], it answers even when the run ends during the launch
/// (a significant child that cannot be spawned).
#[derive(Debug, Message)]
#[rtype(result = "Result<ProtocolReport, DirectorError>")]
pub struct Run(pub Launch);

/// [`Run`] for a [`Plan`] checked beforehand (see [`LaunchPlan`]).
#[derive(Debug, Message)]
#[rtype(result = "Result<ProtocolReport, DirectorError>")]
pub struct RunPlan(pub Plan);

/// Resolves with the report of the protocol once it has finished (`None`
/// when no protocol was started).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<ProtocolReport>")]
pub struct WaitProtocol;

/// Writes a frame to a child's stdin, encoded for its framing. Resolves once
/// queued, waiting while the child's queue is full.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), DirectorError>")]
pub struct Deliver {
    /// The child.
    pub to: Arc<str>,
    /// The frame.
    pub frame: Frame,
}

/// Sends a frame and waits for the reply. For a `json` child the frame must
/// be an object; the director adds an `"id"` and the reply is the first JSON
/// object from the child with the same `"id"`. For other children the reply
/// is the next stdout frame (concurrent requests are answered in order), and
/// a JSON string frame is sent as a plain line.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Frame, RequestError>")]
pub struct Request {
    /// The child.
    pub to: Arc<str>,
    /// The request.
    pub frame: Frame,
    /// How long to wait for the reply.
    pub timeout: Duration,
}

/// An id for a subscription, to end it with
/// [`Director::unsubscribe`](crate::Director::unsubscribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(pub(crate) u64);

/// Sends events that pass `filter` to `to` (see [`crate::event`] for the
/// delivery guarantees).
#[derive(Debug, Clone, Message)]
#[rtype(result = "SubscriptionId")]
pub struct Subscribe {
    /// Who gets the events.
    pub to: Recipient<Event>,
    /// Which events.
    pub filter: EventFilter,
}

/// Sends events in batches (see `Director::subscribe_batches`).
#[derive(Message)]
#[rtype(result = "SubscriptionId")]
pub(crate) struct SubscribeBatches {
    pub to: Recipient<crate::event::EventBatch>,
    pub filter: EventFilter,
}

/// A stream of events (for `Director::events`).
#[derive(Message)]
#[rtype(result = "StreamOf")]
pub(crate) struct StreamEvents {
    pub filter: EventFilter,
}

/// What [`StreamEvents`] answers.
pub(crate) struct StreamOf(pub crate::event::EventStream);

/// Starts a child that is down (see [`Director::start_child`](super::Director::start_child)).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), DirectorError>")]
pub struct StartChild {
    /// The child.
    pub child: Arc<str>,
}

/// Restarts a child whatever its policy (see [`Director::restart`](super::Director::restart)).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), DirectorError>")]
pub struct RestartChild {
    /// The child.
    pub child: Arc<str>,
}

/// Stops a child if it runs and forgets it (see [`Director::remove`](super::Director::remove)).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), DirectorError>")]
pub struct RemoveChild {
    /// The child.
    pub child: Arc<str>,
}

/// Answers once a child is ready, or cannot be (see [`Director::wait_ready`](super::Director::wait_ready)).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), DirectorError>")]
pub struct WaitReady {
    /// The child.
    pub child: Arc<str>,
}

/// Publishes a `write_failed` event: the caller's own stdout or stderr
/// could not be written (the command line reports it once per stream).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ReportWriteFailure {
    /// `stdout` or `stderr`.
    pub target: String,
    /// The OS error.
    pub error: String,
}

/// Publishes a `control` event: a control-socket request is about to be
/// carried out.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub(crate) struct NoteControl {
    pub op: &'static str,
    pub child: Option<Arc<str>>,
}

/// Ends a subscription.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Unsubscribe(pub SubscriptionId);

/// Stops one child with its stop spec (or this grace); resolves with its exit.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Exit, DirectorError>")]
pub struct StopChild {
    /// The child.
    pub child: Arc<str>,
    /// Overrides the spec's grace.
    pub grace: Option<Duration>,
}

/// Resolves with the child's exit, now if it has already exited.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Exit, DirectorError>")]
pub struct WaitChild {
    /// The child.
    pub child: Arc<str>,
}

/// Sends a signal to a child's process group.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), DirectorError>")]
pub struct SignalChild {
    /// The child.
    pub child: Arc<str>,
    /// The signal.
    pub signal: Signal,
}

/// Closes a child's stdin after what is queued; its output is still read.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), DirectorError>")]
pub struct CloseChildStdin {
    /// The child.
    pub child: Arc<str>,
}

/// How many of a child's frames were forwarded in chunks.
#[derive(Debug, Clone, Message)]
#[rtype(result = "u64")]
pub(crate) struct ChunkedFrames(pub Arc<str>);

/// Lists every child with its state, in the order they were added.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<ChildInfo>")]
pub struct ListChildren;

/// Stops every child in reverse dependency order (a child only after every
/// child that depends on it has exited), each with its own grace; resolves
/// when all have exited. The director then stops.
///
/// A second `Shutdown` with `kill = true` SIGKILLs every group still running.
/// Resolves with every child's final state. The last event is `finished`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<ChildInfo>")]
pub struct Shutdown {
    /// Why (published in the `shutdown` event).
    pub reason: String,
    /// Kill at once instead of stopping with the grace.
    pub kill: bool,
    /// Who asked, which decides how a protocol without steps ends.
    pub(crate) cause: super::children::ShutdownCause,
}

/// A child and its state, as listed by
/// [`Director::children`](crate::Director::children).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChildInfo {
    /// Its name.
    pub name: Arc<str>,
    /// Its state.
    pub state: ChildState,
    /// How often it was restarted.
    pub restarts: u32,
    /// How long its current instance has been up (while it runs or stops).
    pub uptime: Option<Duration>,
}

/// Where a child is in its life (a snapshot; see
/// [`Director::children`](crate::Director::children)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ChildState {
    /// Waiting for its dependencies to be ready.
    Pending,
    /// Being spawned, or spawned and not yet seen running.
    Starting {
        /// Its pid, once it has one.
        pid: Option<u32>,
    },
    /// Running.
    Running {
        /// Its pid.
        pid: u32,
        /// Whether it is ready.
        ready: bool,
    },
    /// A stop was asked for; its exit will follow.
    Stopping {
        /// Its pid.
        pid: u32,
    },
    /// It exited and will be restarted (after its backoff, with its group).
    Restarting {
        /// How it last ended.
        last: Exit,
    },
    /// It exited by itself, and its policy does not restart it.
    Exited(Exit),
    /// It was stopped on purpose (a stop, a shutdown) and stays down.
    Stopped(Exit),
    /// It exited too often: its restart intensity is used up.
    GaveUp {
        /// How it last ended.
        last: Exit,
        /// Restarts before it gave up.
        restarts: u32,
    },
    /// It could not be spawned.
    SpawnFailed {
        /// Why.
        error: String,
    },
    /// It was never started.
    NotStarted {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for ChildState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChildState::Pending => f.write_str("waiting for its dependencies"),
            ChildState::Starting { pid: None } => f.write_str("starting"),
            ChildState::Starting { pid: Some(pid) } => write!(f, "starting as pid {pid}"),
            ChildState::Running { pid, .. } => write!(f, "running as pid {pid}"),
            ChildState::Stopping { pid } => write!(f, "stopping (pid {pid})"),
            ChildState::Restarting { last } => {
                write!(f, "restarting after {}", last.status)
            }
            ChildState::Exited(exit) => write!(f, "exited with {}", exit.status),
            ChildState::Stopped(exit) => write!(f, "stopped on request ({})", exit.status),
            ChildState::GaveUp { last, restarts } => write!(
                f,
                "gave up after {restarts} restart{} (last: {})",
                if *restarts == 1 { "" } else { "s" },
                last.status
            ),
            ChildState::SpawnFailed { error } => write!(f, "could not be spawned: {error}"),
            ChildState::NotStarted { reason } => write!(f, "not started: {reason}"),
        }
    }
}
