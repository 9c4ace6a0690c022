//! # procession: operating-system processes as actors
//!
//! Each child process is wrapped by a [`ChildActor`](child::ChildActor) that owns its pipes. It
//! spawns the process as the leader of its own process group, cuts its output
//! into [`Frame`]s, numbers them, and hands them to its owner in order, with
//! the exit status last. Writing to stdin goes through a bounded queue that
//! pushes back on the writer.
//!
//! A director actor (driven through the [`Director`] handle) owns a set of
//! children: it starts them in dependency order once their dependencies are
//! ready, routes frames between them (routes and JSON envelopes), correlates
//! requests with replies, runs a [`protocol`] of ordered steps,
//! publishes [`Event`]s to subscribers, and stops everything in reverse
//! dependency order. A [`Plan`] is what it runs: children, routes
//! and a protocol checked together (a [`scenario`] file becomes one).
//!
//! ```text
//!  Director ──launch/deliver/request/stop/..───────────────► director actor ─► subscribers
//!                                                          │   ▲        (bounded, `lagged`)
//!     registry (children.rs): one state per child ─────────┤   │ ChildEvents (numbered
//!     outbox (outbox.rs): one ordered stdin queue per child┘   │  batches; the next one
//!                                    │ writes, in order        │  after delivery)
//!                                    ▼                         │
//!                                  ChildActor   ChildActor ...
//!                                  │stdin ▲stdout/stderr
//!                                  ▼      │
//!                                OS process (own group; the watchdog kills it if we die)
//! ```
//!
//! ```
//! use std::time::Duration;
//! use futures::StreamExt;
//! use procession::prelude::*;
//!
//! // Plain tokio (as here) or an actix System: both work.
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), DirectorError> {
//!     let director = Director::start();
//!     let mut exits = director.events(EventFilter::all().kinds([Kind::Exited])).await?;
//!     director.add(ChildSpec::new("cat", ["cat"])).await?;
//!     director.wait_ready("cat").await?;
//!     // A line child's reply is its next line, decoded into any type.
//!     let n: u32 = director.request("cat", "42", Duration::from_secs(5)).await?;
//!     assert_eq!(n, 42);
//!     director.close_stdin("cat").await?;
//!     let exited = exits.next().await.expect("cat exits");
//!     assert_eq!(exited.child.as_deref(), Some("cat"));
//!     director.shutdown("done").await;
//!     Ok(())
//! }
//! ```
//!
//! Data flows one way: spec -> plan -> director -> child actor -> OS process;
//! bytes -> frames -> director -> routes / protocol / subscribers. A child
//! actor never talks to another child actor. Inside the director, the
//! decisions are pure code (the registry's transitions, the outbox, the step
//! machine, restart decisions), and the actor only carries out what they
//! return.
//!
//! Invariants: nothing outlives its actor (the group is killed when the
//! leader's exit is reported, and when the actor is dropped); no zombies
//! (tokio reaps, nothing calls `waitpid(-1)`); no lost output (`exited` comes
//! after both pipes reach EOF, or says the output is incomplete); bounded
//! memory (frame cap, bounded stdin queues, one batch in flight per child,
//! bytes-bounded `expect` and restart buffers, bounded subscriber queues);
//! order (what the director decides to write to a child is written in that
//! order).
#![warn(missing_docs)]

// Each public type has one path. The everyday ones are at the root (and in
// the prelude); five modules hold vocabularies of their own: `child`
// (a ChildActor without a director), `batch`, `control` (the control
// socket), `protocol` and `scenario`.
pub mod batch;
pub mod child;
pub mod control;
mod director;
mod duration;
mod error;
mod event;
#[doc(hidden)]
pub mod fault;
mod frame;
mod matching;
mod panics;
mod plan;
pub mod prelude;
mod probe;
pub mod protocol;
mod runtime;
pub mod scenario;
mod spec;
mod sys;

pub use child::messages::{Exit, ExitStatus, Stream};
pub use director::{
    ChildInfo, ChildState, Director, DirectorConfig, RestartPolicy, RestartSpec, Route, Strategy,
    SubscriptionId,
};
pub use duration::{format_duration, parse_duration, DurationError, MAX_DURATION};
pub use error::{
    ChildError, ConfigError, ConfigErrors, DirectorError, Location, Place, RequestError,
    SpawnError, StdinError,
};
pub use event::{
    Description, Event, EventBatch, EventFilter, EventKind, EventStream, Journal, Kind, Shown,
    Tone, UnknownKind,
};
pub use frame::{Frame, Framing};
pub use matching::PatternSpec;
pub use plan::{Plan, PlanBuilder};
pub use spec::{
    Alive, Check, ChildSpec, Probe, Ready, StderrMode, StopSpec, Terminal, DEFAULT_DRAIN,
    DEFAULT_FRAME_CAP, DEFAULT_STDIN_QUEUE,
};
pub use sys::{adopt_all_orphans, raise_open_files_limit, OpenFiles, Signal, UnknownSignal};

/// Internals that the fuzz targets and property tests drive directly; not
/// part of the API.
#[doc(hidden)]
pub mod internals {
    pub use crate::frame::{Decoded, FrameDecoder};
    pub use crate::matching::{json_matches, Pattern};
}

/// The README's Rust blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
