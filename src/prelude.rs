//! What a program using procession needs, in one import:
//!
//! ```
//! use procession::prelude::*;
//! ```
//!
//! The director and its handle, specs and their builders, routes, plans,
//! protocols, events and their filters, batches, and the errors they give.

pub use crate::batch::{Batch, BatchError, BatchOptions, Job, JobResult};
pub use crate::child::{Exit, ExitStatus, Stream};
pub use crate::director::{
    ChildInfo, ChildState, Director, DirectorConfig, EventStream, RestartPolicy, RestartSpec,
    Route, Strategy,
};
pub use crate::error::{ConfigError, ConfigErrors, DirectorError};
pub use crate::event::{Event, EventFilter, EventKind, Kind};
pub use crate::frame::{Frame, Framing};
pub use crate::plan::{Plan, PlanBuilder};
pub use crate::protocol::{Alternative, Protocol, ProtocolReport, Step};
pub use crate::spec::{Alive, Check, ChildSpec, Probe, Ready, StderrMode, StopSpec, Terminal};
pub use crate::Signal;
