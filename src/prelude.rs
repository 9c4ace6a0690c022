//! What a program using procession needs, in one import:
//!
//! ```
//! use procession::prelude::*;
//! ```
//!
//! The director and its handle, specs and their builders, routes, plans,
//! protocols, events and their filters, batches, and the errors they give.

pub use crate::batch::{Batch, BatchError, BatchOptions, Job, JobResult};
pub use crate::protocol::{Alternative, Protocol, ProtocolReport, Step};
pub use crate::{
    Alive, Check, ChildInfo, ChildSpec, ChildState, ConfigError, ConfigErrors, Director,
    DirectorConfig, DirectorError, Event, EventFilter, EventKind, EventStream, Exit, ExitStatus,
    Frame, Framing, Kind, Plan, PlanBuilder, Probe, Ready, RequestError, RestartPolicy,
    RestartSpec, Route, Signal, StderrMode, StopSpec, Strategy, Stream, Terminal,
};
