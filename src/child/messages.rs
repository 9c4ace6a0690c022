//! What a [`ChildActor`](super::ChildActor) tells its owner, and the control
//! messages it takes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::Message;
use bytes::Bytes;

use super::StdinSender;
use crate::error::{ChildError, StdinError};
use crate::frame::Frame;
use crate::Signal;

/// Which output pipe a frame came from.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output.
    #[default]
    Stdout,
    /// Standard error.
    Stderr,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        })
    }
}

/// How a process ended: an exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It called `exit(code)`.
    Code(i32),
    /// A signal killed it.
    Signal(Signal),
    /// The status could not be collected (something else reaped the process).
    Unknown,
}

/// As JSON object fields: `{"code": 3}`, `{"signal": "KILL"}`, or `{}`
/// when the status is unknown (events have it flattened).
impl serde::Serialize for ExitStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        match self {
            ExitStatus::Code(c) => map.serialize_entry("code", c)?,
            ExitStatus::Signal(sig) => map.serialize_entry("signal", sig)?,
            ExitStatus::Unknown => {}
        }
        map.end()
    }
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    pub(crate) fn from_std(status: std::process::ExitStatus) -> ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitStatus::Code(code),
            (None, Some(sig)) => ExitStatus::Signal(Signal::from_number(sig)),
            // Stopped/continued are not terminal and never reach us from wait().
            (None, None) => ExitStatus::Unknown,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
            ExitStatus::Unknown => f.write_str("unknown status"),
        }
    }
}

/// The end of a child: its status and what we know about its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Exit code or signal.
    pub status: ExitStatus,
    /// The exit followed a stop we asked for, or a signal we sent that killed it.
    pub requested: bool,
    /// Both pipes reached end of file before the exit was reported. `false`
    /// when something (a grandchild) held a pipe open past the drain time:
    /// output written after that was not read.
    pub output_complete: bool,
    /// Time from spawn to exit.
    pub runtime: Duration,
}

/// One thing that happened to a child, numbered.
///
/// Sequence numbers start at 0 (the `Spawned` event) and go up by one per
/// event, across stdout and stderr, in the order the owner receives them.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildEvent {
    /// Per-child sequence number.
    pub seq: u64,
    /// What happened.
    pub kind: ChildEventKind,
}

/// What happened to a child. See [`ChildEvent`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ChildEventKind {
    /// The process started. Always the first event.
    Spawned {
        /// Its process id, which is also its process group id.
        pid: u32,
    },
    /// A frame of output.
    Output {
        /// Which pipe.
        stream: Stream,
        /// The frame.
        frame: Frame,
        /// More of the same over-long line follows.
        partial: bool,
        /// An unterminated tail (a prompt such as `> ` or `Password: `)
        /// after 100 ms of silence; the rest of its line, if it comes,
        /// arrives as its own frame. Always a line.
        prompt: bool,
    },
    /// A frame over the cap (once per frame; for `lines` the chunks follow).
    Oversized {
        /// Which pipe.
        stream: Stream,
        /// The cap in bytes.
        limit: usize,
    },
    /// Output that could not be decoded (invalid UTF-8 or JSON).
    DecodeError {
        /// Which pipe.
        stream: Stream,
        /// What was wrong.
        error: String,
        /// The start of the bad bytes.
        preview: String,
    },
    /// The process exited; always the last event, after all its output.
    Exited(Exit),
    /// Whole lines in one piece, each with its newline: what the frames
    /// would have been, for an owner that asked for chunks (the director,
    /// for output nobody watches). Never sent to other owners.
    #[doc(hidden)]
    Chunk {
        /// Which pipe.
        stream: Stream,
        /// The lines, valid UTF-8, none over the cap.
        bytes: Bytes,
        /// How many lines.
        frames: usize,
    },
}

/// A batch of events from one child, in order, sent to the owner.
///
/// The child sends the next batch only after the owner's handler returned
/// for the previous one, so a slow owner slows the reading of the pipe (and
/// so the child) instead of piling up memory.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ChildEvents {
    /// The child's name.
    pub child: Arc<str>,
    /// The events, oldest first.
    pub events: Vec<ChildEvent>,
}

/// Stops the child: its stop signal to the whole process group, up to the
/// grace for the group to empty, then SIGKILL to the group. Resolves with the
/// exit once it has been reported to the owner.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "Result<Exit, ChildError>")]
pub struct Stop {
    /// Overrides the spec's grace for this stop.
    pub grace: Option<Duration>,
}

/// Sends a signal to the child's whole process group.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), ChildError>")]
pub struct SendSignal(pub Signal);

/// Closes the child's stdin once everything queued before it is written.
/// Output is still read.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct CloseStdin;

/// Queues bytes for the child's stdin; resolves once they are queued,
/// waiting while the queue is full. `Ok` means queued, not read by the child.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), StdinError>")]
pub struct Write(pub Bytes);

/// Hands out a [`StdinSender`] for writing without going through the actor
/// (`None` once stdin is closed).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Option<StdinSender>")]
pub struct GetStdin;

/// Resolves with the child's exit once it has been reported.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Exit, ChildError>")]
pub struct WaitExit;
