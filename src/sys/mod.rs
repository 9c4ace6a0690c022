//! Unix specifics behind one private module: process groups, the
//! parent-death signal, killing a group and telling when it is empty, the
//! process table, and containing what escapes a group.
//!
//! Nothing here calls `waitpid(-1)`: tokio owns reaping of the children it
//! spawned, and a blanket wait would steal their exit statuses.

mod contain;
mod group;
mod limits;
mod procfs;
pub(crate) mod pty;
mod signal;
mod watchdog;

pub use contain::adopt_all_orphans;
pub(crate) use contain::{collected, spawning, Run};
pub(crate) use group::{group_alive, set_parent_death_signal, signal_group, unread_bytes};
pub(crate) use limits::{grow_pipe, PipeGrant};
pub use limits::{raise_open_files_limit, OpenFiles};
pub(crate) use procfs::MARKER;
pub use signal::{Signal, UnknownSignal};
pub(crate) use watchdog::Watchdog;
