//! [`Event`]s: what the director publishes, and the bus that fans them out
//! to subscribers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::{Message, Recipient};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use crate::child::{Exit, ExitStatus, Stream};
use crate::frame::Frame;

/// One thing that happened, with when and to whom.
///
/// Every event serializes as one JSON object with `t_ms` (milliseconds since
/// the director started), `event` (the snake_case kind), and `child` and
/// `seq` where one child is concerned:
///
/// ```json
/// {"t_ms":12,"child":"server","seq":3,"event":"output","stream":"stdout","line":"listening"}
/// ```
///
/// # Delivery
/// Events about one child carry consecutive sequence numbers and reach each
/// subscriber in that order; all of a child's output comes before its
/// `exited`. Each subscriber has a bounded queue and is sent its next event
/// only when it handled the previous one. A subscriber that falls more than
/// its queue behind loses the oldest events and then receives a `lagged`
/// event with the number it missed (counted before its filter). It never
/// slows the director or the children.
///
/// A subscriber can instead say which kinds it can afford to lose
/// ([`EventFilter::drop_only`]): then only those are dropped when it falls
/// behind (counted in its next `lagged`), and every other event it takes
/// reaches it, in order. That is how the command line's timeline never
/// loses a step result under a flood of output. Keep the kinds not dropped
/// to those the run bounds (steps, lifecycle): they are queued however far
/// behind the subscriber is.
#[derive(Debug, Clone, Serialize, Message)]
#[rtype(result = "()")]
pub struct Event {
    /// Milliseconds since the director started.
    pub t_ms: u64,
    /// The child concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child: Option<Arc<str>>,
    /// Per-child sequence number (consecutive from 0 across restarts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The kinds of [`Event`]. Serialized with the kind as `"event"`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The child's process started.
    Spawned {
        /// Its pid (also its process group id).
        pid: u32,
        /// 1 for the first start, then one more for each restart.
        attempt: u32,
    },
    /// The child's process could not be started.
    SpawnFailed {
        /// Why, naming the program.
        error: String,
    },
    /// The child is ready (see `ready` in its spec); dependents may start.
    Ready,
    /// The child was never started.
    NotStarted {
        /// Why (a dependency failed, the director is shutting down).
        reason: String,
    },
    /// A frame of output.
    Output {
        /// Which pipe.
        stream: Stream,
        /// The frame, as `line`, `json` or `bytes`.
        #[serde(flatten)]
        frame: Frame,
        /// More of the same over-long line follows.
        #[serde(skip_serializing_if = "is_false")]
        partial: bool,
        /// An unterminated tail, published after 100 ms of silence (a
        /// prompt); the rest of its line, if it comes, is its own frame.
        #[serde(skip_serializing_if = "is_false")]
        prompt: bool,
    },
    /// A line longer than the frame cap (once per line; chunks follow).
    OversizedFrame {
        /// Which pipe.
        stream: Stream,
        /// The cap in bytes.
        limit: usize,
    },
    /// Output that could not be decoded; reading went on.
    DecodeError {
        /// Which pipe.
        stream: Stream,
        /// What was wrong.
        error: String,
        /// The start of the bad bytes.
        preview: String,
    },
    /// A frame was delivered to another child (by a route or an envelope).
    Routed {
        /// The sender.
        from: Arc<str>,
        /// The receiver.
        to: Arc<str>,
    },
    /// A frame could not be delivered.
    Undeliverable {
        /// The sender, when it was a child.
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<Arc<str>>,
        /// The intended receiver.
        to: Arc<str>,
        /// Why (not running, queue full, no such child).
        reason: String,
    },
    /// The child's process ended, after all its output.
    Exited {
        /// How it ended: in JSON, `code` or `signal` (neither when the
        /// status could not be collected). The same type as
        /// [`Exit::status`] and [`JobResult::status`](crate::batch::JobResult).
        #[serde(flatten)]
        status: ExitStatus,
        /// We asked for this end (a stop, or a signal we sent).
        requested: bool,
        /// All output was read (false: a pipe stayed open past the drain time).
        output_complete: bool,
    },
    /// The child exited and will be started again after `delay_ms`.
    Restarting {
        /// The restart's number for this child, from 1.
        attempt: u32,
        /// The backoff before the new spawn.
        delay_ms: u64,
    },
    /// The child exited too often within its window and stays down.
    GaveUp {
        /// Restarts before it gave up.
        restarts: u32,
    },
    /// The child was stopped on request and stays down.
    Stopped,
    /// A probe failed it: its liveness probe failed `failures` times in a
    /// row, or it was not ready `within` its readiness probe's bound. It is
    /// stopped, and its restart policy decides as for a failure.
    Unhealthy {
        /// Why, with the last failed try.
        reason: String,
    },
    /// A protocol step passed.
    StepPassed {
        /// 1-based.
        step: usize,
        /// Its label.
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        /// Time from becoming current to passing.
        duration_ms: u64,
        /// Which way an `expect` that could go more than one way went: the
        /// 0-based alternative of an `any`, `"timeout"` or `"exit"`.
        #[serde(skip_serializing_if = "Option::is_none")]
        outcome: Option<crate::protocol::Taken>,
    },
    /// A protocol step failed (the run fails).
    StepFailed {
        /// 1-based; 0 when the run has no steps (a timeout, an unexpected exit).
        step: usize,
        /// Its label.
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        /// What it waited for, and the recent unconsumed output of every child.
        reason: String,
        /// Time from becoming current to failing.
        duration_ms: u64,
    },
    /// A routed message broke the protocol's order (or was not in it).
    Violation {
        /// The sender.
        from: Arc<str>,
        /// The receiver.
        to: Arc<str>,
        /// The later step it matched, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        step: Option<usize>,
        /// What was wrong.
        reason: String,
    },
    /// A reply that arrived after its request had timed out: dropped (not
    /// routed, not answering another request).
    LateReply {
        /// The reply, as `line`, `json` or `bytes`.
        #[serde(flatten)]
        frame: Frame,
    },
    /// A request came over the control socket (`procession ctl`): `op` is
    /// `send`, `close`, `start`, `stop`, `restart`, `signal` or `shutdown`;
    /// `child` is the child it names. Published before the director acts.
    Control {
        /// The request's `op`.
        op: String,
    },
    /// Our own stdout or stderr could not be written (a closed pipe, a full
    /// disk): reported once per stream; the run goes on.
    WriteFailed {
        /// `stdout` or `stderr`.
        target: String,
        /// The OS error.
        error: String,
    },
    /// The run is over: the last event.
    Finished {
        /// Every step passed and every child ended as expected.
        passed: bool,
    },
    /// The director is shutting down.
    Shutdown {
        /// Why.
        reason: String,
    },
    /// This subscriber missed events.
    Lagged {
        /// How many.
        missed: u64,
    },
}

impl EventKind {
    /// The kind's name as it appears in `"event"`.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// Its kind, for filters.
    pub fn kind(&self) -> Kind {
        match self {
            EventKind::Spawned { .. } => Kind::Spawned,
            EventKind::SpawnFailed { .. } => Kind::SpawnFailed,
            EventKind::Ready => Kind::Ready,
            EventKind::NotStarted { .. } => Kind::NotStarted,
            EventKind::Output { .. } => Kind::Output,
            EventKind::OversizedFrame { .. } => Kind::OversizedFrame,
            EventKind::DecodeError { .. } => Kind::DecodeError,
            EventKind::Routed { .. } => Kind::Routed,
            EventKind::Undeliverable { .. } => Kind::Undeliverable,
            EventKind::Exited { .. } => Kind::Exited,
            EventKind::Restarting { .. } => Kind::Restarting,
            EventKind::GaveUp { .. } => Kind::GaveUp,
            EventKind::Unhealthy { .. } => Kind::Unhealthy,
            EventKind::Stopped => Kind::Stopped,
            EventKind::StepPassed { .. } => Kind::StepPassed,
            EventKind::StepFailed { .. } => Kind::StepFailed,
            EventKind::Violation { .. } => Kind::Violation,
            EventKind::LateReply { .. } => Kind::LateReply,
            EventKind::WriteFailed { .. } => Kind::WriteFailed,
            EventKind::Control { .. } => Kind::Control,
            EventKind::Finished { .. } => Kind::Finished,
            EventKind::Shutdown { .. } => Kind::Shutdown,
            EventKind::Lagged { .. } => Kind::Lagged,
        }
    }

    pub(crate) fn exited(exit: &Exit) -> EventKind {
        EventKind::Exited {
            status: exit.status,
            requested: exit.requested,
            output_complete: exit.output_complete,
        }
    }
}

/// How an event reads for a person (the CLI's timeline): the text, how it
/// should stand out, and at which verbosity it is shown. Every kind has one,
/// so a new kind cannot be dropped silently by a display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// One line (a step failure may add indented lines).
    pub text: String,
    /// How it should stand out.
    pub tone: Tone,
    /// From which verbosity on it is shown.
    pub shown: Shown,
}

/// How a described event stands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tone {
    /// Ordinary text (a child's stdout).
    Plain,
    /// Background information (spawned, ready, routed, stderr).
    Dim,
    /// Something passed.
    Good,
    /// Something to notice (a restart, a decode error).
    Notice,
    /// Something went wrong.
    Bad,
    /// The run fails because of it (a failed step, a violation).
    Alarm,
}

/// From which verbosity on a described event is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Shown {
    /// Always, even when quiet.
    Always,
    /// Unless quiet (children's output).
    Normal,
    /// Only when verbose (routed messages).
    Verbose,
    /// Never: it says nothing a reader needs (it is in the events file).
    Never,
}

impl EventKind {
    /// How this event reads for a person; see [`Description`].
    pub fn describe(&self) -> Description {
        use Shown::*;
        use Tone::*;
        let d = |text: String, tone, shown| Description { text, tone, shown };
        let frame_text = |frame: &Frame| match frame {
            Frame::Line(l) => l.clone(),
            Frame::Json(v) => v.to_string(),
            Frame::Bytes(b) => format!("({} bytes)", b.len()),
        };
        match self {
            EventKind::Output {
                stream,
                frame,
                partial,
                prompt,
            } => {
                let cont = if *partial || *prompt { "…" } else { "" };
                let tone = if *stream == Stream::Stderr {
                    Dim
                } else {
                    Plain
                };
                d(format!("{}{cont}", frame_text(frame)), tone, Normal)
            }
            EventKind::Spawned { pid, attempt } => {
                let again = match attempt {
                    1 => String::new(),
                    n => format!(", attempt {n}"),
                };
                d(format!("spawned (pid {pid}{again})"), Dim, Always)
            }
            EventKind::SpawnFailed { error } => d(format!("could not start: {error}"), Bad, Always),
            EventKind::Ready => d("ready".into(), Dim, Always),
            EventKind::NotStarted { reason } => d(format!("not started: {reason}"), Plain, Always),
            EventKind::Exited {
                status,
                requested,
                output_complete,
            } => {
                let how = match status {
                    ExitStatus::Code(c) => format!("exited with code {c}"),
                    ExitStatus::Signal(s) => format!("killed by {s}"),
                    ExitStatus::Unknown => "exited".into(),
                };
                let why = if *requested { " (asked)" } else { "" };
                let lost = match output_complete {
                    true => "",
                    false => "; output may be incomplete",
                };
                let tone = if status.success() || *requested {
                    Dim
                } else {
                    Bad
                };
                d(format!("{how}{why}{lost}"), tone, Always)
            }
            EventKind::Restarting { attempt, delay_ms } => d(
                format!("restarting in {delay_ms} ms (restart {attempt})"),
                Notice,
                Always,
            ),
            EventKind::GaveUp { restarts } => {
                d(format!("gave up after {restarts} restarts"), Bad, Always)
            }
            EventKind::Stopped => d("stopped".into(), Dim, Never),
            EventKind::Unhealthy { reason } => d(format!("unhealthy: {reason}"), Bad, Always),
            EventKind::OversizedFrame { limit, .. } => {
                d(format!("line over {limit} bytes, in chunks"), Plain, Always)
            }
            EventKind::DecodeError { error, preview, .. } => {
                d(format!("{error}: {preview}"), Notice, Always)
            }
            EventKind::Undeliverable { to, reason, .. } => d(
                format!("could not deliver to {to}: {reason}"),
                Notice,
                Always,
            ),
            EventKind::Routed { to, .. } => d(format!("-> {to}"), Dim, Verbose),
            EventKind::Control { op } => d(format!("ctl: {op}"), Notice, Always),
            EventKind::WriteFailed { target, error } => d(
                format!("cannot write to {target}: {error} (not reported again)"),
                Bad,
                Always,
            ),
            EventKind::LateReply { frame } => d(
                format!(
                    "late reply (its request had timed out): {}",
                    frame_text(frame)
                ),
                Notice,
                Always,
            ),
            EventKind::StepPassed {
                step,
                label,
                duration_ms,
                outcome,
            } => {
                let label = label
                    .as_deref()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default();
                let way = match outcome {
                    None => String::new(),
                    Some(crate::protocol::Taken::Alternative(k)) => {
                        format!(", alternative {}", k + 1)
                    }
                    Some(crate::protocol::Taken::Timeout) => ", on timeout".into(),
                    Some(crate::protocol::Taken::Exit) => ", on exit".into(),
                };
                d(
                    format!("step {step} passed{label} ({duration_ms} ms{way})"),
                    Good,
                    Always,
                )
            }
            EventKind::StepFailed {
                step,
                label,
                reason,
                ..
            } => {
                let label = label
                    .as_deref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default();
                d(
                    format!("step {step} FAILED{label}: {reason}"),
                    Alarm,
                    Always,
                )
            }
            EventKind::Violation { reason, .. } => d(format!("violation: {reason}"), Alarm, Always),
            EventKind::Shutdown { reason } => {
                d(format!("stopping everything: {reason}"), Dim, Always)
            }
            EventKind::Lagged { missed } => d(
                format!("(timeline skipped {missed} events)"),
                Notice,
                Always,
            ),
            EventKind::Finished { passed } => {
                let how = if *passed { "passed" } else { "failed" };
                d(format!("finished: {how}"), Dim, Never)
            }
        }
    }
}

/// The kind of an event, as filters name it ([`EventFilter::kinds`]);
/// `name()` is its `event` field in JSON (`"exited"`, `"step_passed"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// `spawned`
    Spawned,
    /// `spawn_failed`
    SpawnFailed,
    /// `ready`
    Ready,
    /// `not_started`
    NotStarted,
    /// `output`
    Output,
    /// `oversized_frame`
    OversizedFrame,
    /// `decode_error`
    DecodeError,
    /// `routed`
    Routed,
    /// `undeliverable`
    Undeliverable,
    /// `exited`
    Exited,
    /// `restarting`
    Restarting,
    /// `gave_up`
    GaveUp,
    /// `unhealthy`
    Unhealthy,
    /// `stopped`
    Stopped,
    /// `step_passed`
    StepPassed,
    /// `step_failed`
    StepFailed,
    /// `violation`
    Violation,
    /// `late_reply`
    LateReply,
    /// `write_failed`
    WriteFailed,
    /// `control`
    Control,
    /// `finished`
    Finished,
    /// `shutdown`
    Shutdown,
    /// `lagged`
    Lagged,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 23] = [
        Kind::Spawned,
        Kind::SpawnFailed,
        Kind::Ready,
        Kind::NotStarted,
        Kind::Output,
        Kind::OversizedFrame,
        Kind::DecodeError,
        Kind::Routed,
        Kind::Undeliverable,
        Kind::Exited,
        Kind::Restarting,
        Kind::GaveUp,
        Kind::Unhealthy,
        Kind::Stopped,
        Kind::StepPassed,
        Kind::StepFailed,
        Kind::Violation,
        Kind::LateReply,
        Kind::WriteFailed,
        Kind::Control,
        Kind::Finished,
        Kind::Shutdown,
        Kind::Lagged,
    ];

    /// As events spell it (`"spawn_failed"`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Spawned => "spawned",
            Kind::SpawnFailed => "spawn_failed",
            Kind::Ready => "ready",
            Kind::NotStarted => "not_started",
            Kind::Output => "output",
            Kind::OversizedFrame => "oversized_frame",
            Kind::DecodeError => "decode_error",
            Kind::Routed => "routed",
            Kind::Undeliverable => "undeliverable",
            Kind::Exited => "exited",
            Kind::Restarting => "restarting",
            Kind::GaveUp => "gave_up",
            Kind::Unhealthy => "unhealthy",
            Kind::Stopped => "stopped",
            Kind::StepPassed => "step_passed",
            Kind::StepFailed => "step_failed",
            Kind::Violation => "violation",
            Kind::LateReply => "late_reply",
            Kind::WriteFailed => "write_failed",
            Kind::Control => "control",
            Kind::Finished => "finished",
            Kind::Shutdown => "shutdown",
            Kind::Lagged => "lagged",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no event kind's, with the nearest one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no event kind `{name}`{}", match suggestion { Some(s) => format!(" (did you mean `{s}`?)"), None => String::new() })]
pub struct UnknownKind {
    /// The name given.
    pub name: String,
    /// The kind closest to it.
    pub suggestion: Option<&'static str>,
}

impl std::str::FromStr for Kind {
    type Err = UnknownKind;

    /// `"exited".parse::<Kind>()`; a misspelt name says the nearest one.
    fn from_str(name: &str) -> Result<Kind, UnknownKind> {
        if let Some(kind) = Kind::ALL.into_iter().find(|k| k.name() == name) {
            return Ok(kind);
        }
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        let suggestion = crate::error::closest_str(name, &names)
            .and_then(|s| Kind::ALL.into_iter().find(|k| k.name() == s))
            .map(Kind::name);
        Err(UnknownKind {
            name: name.to_string(),
            suggestion,
        })
    }
}

/// Which events a subscriber wants. The default takes everything.
///
/// ```
/// use procession::{EventFilter, Kind};
/// let filter = EventFilter::all().children(["server"]).kinds([Kind::Exited, Kind::Ready]);
/// # let _ = filter;
/// ```
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    children: Option<HashSet<Arc<str>>>,
    kinds: Option<HashSet<Kind>>,
    without: Option<HashSet<Kind>>,
    drop_only: Option<HashSet<Kind>>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> EventFilter {
        EventFilter::default()
    }

    /// Only events about these children (plus director-wide ones such as
    /// `shutdown` and `lagged`).
    pub fn children<I, S>(mut self, children: I) -> EventFilter
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        self.children = Some(children.into_iter().map(Into::into).collect());
        self
    }

    /// Only events of these kinds; `lagged` is always delivered.
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = Kind>) -> EventFilter {
        self.kinds = Some(kinds.into_iter().collect());
        self
    }

    /// No events of these kinds (`lagged` is always delivered).
    pub fn without_kinds(mut self, kinds: impl IntoIterator<Item = Kind>) -> EventFilter {
        self.without = Some(kinds.into_iter().collect());
        self
    }

    /// When the subscriber falls behind, drop only events of these kinds
    /// (`Kind::Output`, `Kind::Routed`, ...) and deliver every other one it
    /// takes, however far behind (see [`Event`] for the delivery promise).
    pub fn drop_only(mut self, kinds: impl IntoIterator<Item = Kind>) -> EventFilter {
        self.drop_only = Some(kinds.into_iter().collect());
        self
    }

    /// Whether the filter lets `event` through.
    pub fn accepts(&self, event: &Event) -> bool {
        if matches!(event.kind, EventKind::Lagged { .. }) {
            return true;
        }
        let child_ok = match (&self.children, &event.child) {
            (Some(set), Some(child)) => set.contains(child),
            _ => true,
        };
        let kind_ok = self
            .kinds
            .as_ref()
            .is_none_or(|kinds| kinds.contains(&event.kind.kind()))
            && self
                .without
                .as_ref()
                .is_none_or(|kinds| !kinds.contains(&event.kind.kind()));
        child_ok && kind_ok
    }
}

/// A file that receives every event as one JSON line, written by the
/// director itself as it publishes (so, unlike a subscriber, it never lags
/// and never misses one), and flushed line by line.
///
/// A write that fails (a full disk, `/dev/full`) is logged once; the run
/// goes on, and [`Journal::error`] says what went wrong, so that the caller
/// can fail the run: an events file that could not be written is not one.
#[derive(Clone)]
pub struct Journal(Arc<std::sync::Mutex<JournalFile>>);

struct JournalFile {
    out: std::io::LineWriter<std::fs::File>,
    /// The first failed write, and how many failed.
    failed: Option<(std::io::Error, u64)>,
}

impl Journal {
    /// Creates (or truncates) the file.
    pub fn create(path: &std::path::Path) -> std::io::Result<Journal> {
        let file = std::fs::File::create(path)?;
        Ok(Journal(Arc::new(std::sync::Mutex::new(JournalFile {
            out: std::io::LineWriter::new(file),
            failed: None,
        }))))
    }

    fn write(&self, event: &Event) {
        use std::io::Write;
        let mut line = serde_json::to_vec(event).expect("events always serialize");
        line.push(b'\n');
        let mut file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.out.write_all(&line) {
            match &mut file.failed {
                Some((_, n)) => *n += 1,
                None => {
                    tracing::debug!(error = %e, "cannot write the events file");
                    file.failed = Some((e, 1));
                }
            }
        }
    }

    /// Why events could not be written, and how many, if any could not.
    pub fn error(&self) -> Option<String> {
        let file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        file.failed.as_ref().map(|(e, n)| {
            format!(
                "{e} ({n} event{} not written)",
                if *n == 1 { "" } else { "s" }
            )
        })
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal")
    }
}

/// Publishes events with timestamps and per-child sequence numbers, and
/// forwards them to subscribers (see the module docs for the guarantees).
pub(crate) struct Bus {
    tx: broadcast::Sender<Event>,
    queue: usize,
    started: Instant,
    seqs: rustc_hash::FxHashMap<Arc<str>, u64>,
    journal: Option<Journal>,
    /// Subscribers with [`EventFilter::drop_only`].
    keepers: Vec<Keeper>,
}

/// A subscriber that loses only the kinds it said it can lose.
struct Keeper {
    tx: mpsc::UnboundedSender<Event>,
    filter: EventFilter,
    /// Events sent and not yet handled by the subscriber.
    queued: Arc<AtomicUsize>,
    /// Events dropped since the last `lagged`.
    missed: u64,
}

impl Keeper {
    /// Queues `event` (or drops it, if behind and allowed); false once the
    /// subscriber is gone.
    fn offer(&mut self, event: &Event, queue: usize, t_ms: u64) -> bool {
        if !self.filter.accepts(event) {
            return true;
        }
        let droppable = self
            .filter
            .drop_only
            .as_ref()
            .is_some_and(|kinds| kinds.contains(&event.kind.kind()));
        if droppable && self.queued.load(Ordering::Relaxed) >= queue {
            self.missed += 1;
            return true;
        }
        if self.missed > 0 {
            let lagged = Event {
                t_ms,
                child: None,
                seq: None,
                kind: EventKind::Lagged {
                    missed: std::mem::take(&mut self.missed),
                },
            };
            self.queued.fetch_add(1, Ordering::Relaxed);
            if self.tx.send(lagged).is_err() {
                return false;
            }
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(event.clone()).is_ok()
    }
}

impl Bus {
    pub fn new(queue: usize, journal: Option<Journal>) -> Bus {
        let (tx, _) = broadcast::channel(queue.max(1));
        Bus {
            tx,
            queue: queue.max(1),
            started: Instant::now(),
            seqs: Default::default(),
            journal,
            keepers: Vec::new(),
        }
    }

    /// Whether anyone listens (so callers can skip building costly events).
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0 || !self.keepers.is_empty()
    }

    pub fn t_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Publishes an event about `child` (or the whole director with `None`).
    pub fn publish(&mut self, child: Option<&Arc<str>>, kind: EventKind) {
        // Two events per routed frame pass here: look up without cloning
        // the name, hash it cheaply.
        let seq = child.map(|c| match self.seqs.get_mut(c) {
            Some(n) => {
                *n += 1;
                *n - 1
            }
            None => {
                self.seqs.insert(c.clone(), 1);
                0
            }
        });
        if !self.has_subscribers() && self.journal.is_none() {
            return;
        }
        let event = Event {
            t_ms: self.t_ms(),
            child: child.cloned(),
            seq,
            kind,
        };
        if let Some(journal) = &self.journal {
            journal.write(&event);
        }
        if !self.keepers.is_empty() {
            let (queue, t_ms) = (self.queue, event.t_ms);
            self.keepers.retain_mut(|k| k.offer(&event, queue, t_ms));
        }
        let _ = self.tx.send(event);
    }

    /// Starts forwarding to `to`; aborting the returned task unsubscribes.
    pub fn subscribe(
        &mut self,
        to: Recipient<Event>,
        filter: EventFilter,
    ) -> tokio::task::JoinHandle<()> {
        if filter.drop_only.is_none() {
            return actix::spawn(forward(self.tx.subscribe(), to, filter, self.started));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        self.keepers.push(Keeper {
            tx,
            filter,
            queued: queued.clone(),
            missed: 0,
        });
        actix::spawn(forward_kept(rx, queued, to))
    }
}

async fn forward_kept(
    mut rx: mpsc::UnboundedReceiver<Event>,
    queued: Arc<AtomicUsize>,
    to: Recipient<Event>,
) {
    // What is queued goes in chunks: all but the last without waiting, the
    // last awaited, which (the mailbox being in order) means the subscriber
    // handled them all. One round trip a chunk, not one an event: on one
    // thread, a busy director would otherwise starve the subscriber.
    let mut chunk = Vec::with_capacity(KEPT_CHUNK);
    while let Some(first) = rx.recv().await {
        chunk.push(first);
        while chunk.len() < KEPT_CHUNK {
            match rx.try_recv() {
                Ok(event) => chunk.push(event),
                Err(_) => break,
            }
        }
        let n = chunk.len();
        let last = chunk.pop().expect("one at least");
        for event in chunk.drain(..) {
            to.do_send(event);
        }
        let gone = to.send(last).await.is_err();
        queued.fetch_sub(n, Ordering::Relaxed);
        if gone {
            return;
        }
    }
}

/// Events handed to a [`Keeper`]'s subscriber per round trip.
const KEPT_CHUNK: usize = 256;

async fn forward(
    mut rx: broadcast::Receiver<Event>,
    to: Recipient<Event>,
    filter: EventFilter,
    started: Instant,
) {
    loop {
        let event = match rx.recv().await {
            Ok(event) if filter.accepts(&event) => event,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => Event {
                t_ms: started.elapsed().as_millis() as u64,
                child: None,
                seq: None,
                kind: EventKind::Lagged { missed },
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        // Wait until the subscriber handled it: that is what makes a slow
        // subscriber fall behind (and lose the oldest) instead of piling up.
        if to.send(event).await.is_err() {
            return; // the subscriber is gone
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Signal;
    use serde_json::json;

    fn event(child: Option<&str>, seq: Option<u64>, kind: EventKind) -> Event {
        Event {
            t_ms: 12,
            child: child.map(Arc::from),
            seq,
            kind,
        }
    }

    #[test]
    fn events_serialize_as_one_flat_object() {
        let out = event(
            Some("server"),
            Some(3),
            EventKind::Output {
                stream: Stream::Stdout,
                frame: Frame::line("listening"),
                partial: false,
                prompt: false,
            },
        );
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            json!({"t_ms": 12, "child": "server", "seq": 3, "event": "output",
                   "stream": "stdout", "line": "listening"})
        );
        let exited = event(
            Some("x"),
            Some(9),
            EventKind::Exited {
                status: ExitStatus::Signal(Signal::Kill),
                requested: true,
                output_complete: true,
            },
        );
        assert_eq!(
            serde_json::to_value(&exited).unwrap(),
            json!({"t_ms": 12, "child": "x", "seq": 9, "event": "exited", "signal": "KILL",
                   "requested": true, "output_complete": true})
        );
        let lagged = event(None, None, EventKind::Lagged { missed: 5 });
        assert_eq!(
            serde_json::to_value(&lagged).unwrap(),
            json!({"t_ms": 12, "event": "lagged", "missed": 5})
        );
        let bytes = event(
            Some("b"),
            Some(0),
            EventKind::Output {
                stream: Stream::Stderr,
                frame: Frame::Bytes(bytes::Bytes::from_static(b"\x00\xff")),
                partial: true,
                prompt: false,
            },
        );
        let v = serde_json::to_value(&bytes).unwrap();
        assert_eq!(v["bytes"], "AP8=");
        assert_eq!(v["partial"], true);
    }

    #[test]
    fn kind_names_match_the_serialized_tag() {
        let kinds = [
            EventKind::Ready,
            EventKind::Stopped,
            EventKind::Spawned { pid: 1, attempt: 1 },
            EventKind::NotStarted { reason: "r".into() },
            EventKind::Lagged { missed: 1 },
        ];
        for kind in kinds {
            let v = serde_json::to_value(event(None, None, kind.clone())).unwrap();
            assert_eq!(v["event"], kind.name());
            assert_eq!(kind.name().parse::<Kind>(), Ok(kind.kind()));
        }
        let names: std::collections::HashSet<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), Kind::ALL.len(), "every kind has its own name");
        assert_eq!(
            "exitted".parse::<Kind>().unwrap_err().to_string(),
            "no event kind `exitted` (did you mean `exited`?)"
        );
    }

    #[test]
    fn filters_select_children_and_kinds_but_never_hide_lagged() {
        let f = EventFilter::all().children(["a"]).kinds([Kind::Ready]);
        assert!(f.accepts(&event(Some("a"), Some(0), EventKind::Ready)));
        assert!(!f.accepts(&event(Some("b"), Some(0), EventKind::Ready)));
        assert!(!f.accepts(&event(Some("a"), Some(0), EventKind::Stopped)));
        assert!(f.accepts(&event(None, None, EventKind::Lagged { missed: 2 })));
        assert!(EventFilter::all().accepts(&event(Some("z"), Some(0), EventKind::Stopped)));
    }
}
