//! [`Event`]s: what the director publishes, and the bus that fans them out
//! to subscribers.

use std::collections::HashSet;
use std::sync::Arc;

use actix::Message;
use serde::Serialize;

pub(crate) mod bus;
mod journal;

pub(crate) use bus::Bus;
pub use bus::{EventBatch, EventStream};
pub use journal::Journal;

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
/// `exited`. Each subscriber has a bounded queue, and is handed what
/// waits in it as one batch once it handled the batch before. A subscriber
/// that falls more than its queue behind loses the oldest events and then
/// receives a `lagged` event with the number it missed (counted before its
/// filter). It never slows the director or the children.
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
        self.takes(event.child.as_ref(), event.kind.kind())
    }

    /// Whether an event of `kind` about `child` passes (`lagged` aside).
    pub(crate) fn takes(&self, child: Option<&Arc<str>>, kind: Kind) -> bool {
        let child_ok = match (&self.children, child) {
            (Some(set), Some(child)) => set.contains(child),
            _ => true,
        };
        child_ok
            && self.kinds.as_ref().is_none_or(|k| k.contains(&kind))
            && self.without.as_ref().is_none_or(|k| !k.contains(&kind))
    }

    /// Whether the subscriber may lose events of `kind` when behind
    /// (`None`: it may lose any, the oldest first).
    fn droppable(&self) -> Option<&HashSet<Kind>> {
        self.drop_only.as_ref()
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
