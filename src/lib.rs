//! # procession: operating-system processes as actors
//!
//! Each child process is wrapped by a [`ChildActor`](child::ChildActor) that
//! owns its pipes. It spawns the process as the leader of its own process
//! group, cuts its output into [`Frame`]s, numbers them, and hands them to
//! its owner in order, with the exit status last. Writing to stdin goes
//! through a bounded queue that pushes back on the writer.
//!
//! ```text
//!   owner (any actor)                 ChildActor                   OS
//!  ┌──────────────┐  Write/Stop   ┌──────────────────┐  stdin   ┌────────┐
//!  │ Handler<     │ ────────────► │ stdin queue      │ ───────► │ child  │
//!  │ ChildEvents> │ ◄──────────── │ output pump      │ ◄─────── │ (group │
//!  └──────────────┘ numbered      │ lifecycle, stop  │ stdout,  │ leader)│
//!                   batches       └──────────────────┘ stderr   └────────┘
//! ```
//!
//! Invariants: nothing outlives its actor (the group is killed when the
//! leader's exit is reported, and when the actor is dropped); no zombies
//! (tokio reaps, nothing calls `waitpid(-1)`); no lost output (`Exited` comes
//! after both pipes reach EOF, or says the output is incomplete); bounded
//! memory (frame cap, bounded stdin queue, batches sent one at a time).
#![warn(missing_docs)]

pub mod child;
mod duration;
pub mod error;
pub mod frame;
pub mod spec;
mod sys;

pub use child::{ChildActor, ChildEvent, ChildEventKind, ChildEvents, Exit, ExitStatus, Stream};
pub use duration::{format_duration, parse_duration, DurationError};
pub use error::{ChildError, SpawnError, StdinError};
pub use frame::{Frame, Framing};
pub use spec::{ChildSpec, StderrMode, StopSpec};
pub use sys::{Signal, UnknownSignal};
