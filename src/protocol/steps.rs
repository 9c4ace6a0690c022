//! The steps of a protocol, as data: read from a scenario's `[[steps]]`, or
//! built in Rust.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::child::Stream;
use crate::duration::format_duration;
use crate::matching::PatternSpec;
use crate::Signal;

/// How long an `expect` or `expect_exit` waits when it does not say.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(10);

/// An ordered list of steps, and how routed messages are guarded while it
/// runs. In a scenario: the `[[steps]]` tables and the `[protocol]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Protocol {
    /// The steps, run in order.
    pub steps: Vec<Step>,
    /// What happens to a routed message that matches a later step.
    #[serde(default)]
    pub order: Order,
    /// What happens to a routed message that no step mentions.
    #[serde(default)]
    pub unlisted: Unlisted,
    /// How many times one step may pass (through `goto` loops); the visit
    /// after that fails the run.
    #[serde(default = "default_max_visits")]
    pub max_visits: u32,
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol {
            steps: Vec::new(),
            order: Order::default(),
            unlisted: Unlisted::default(),
            max_visits: default_max_visits(),
        }
    }
}

/// The default of `Protocol::max_visits`: 100.
pub(crate) fn default_max_visits() -> u32 {
    100
}

/// What happens to a routed message that matches a later step than the
/// current one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// It is not delivered, a `violation` is published and the run fails.
    #[default]
    Strict,
    /// It is held and delivered when its step becomes current.
    Hold,
}

/// What happens to a routed message that no step mentions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unlisted {
    /// Delivered.
    #[default]
    Pass,
    /// Dropped with a `violation` (which fails the run under `strict`).
    Reject,
}

/// One step, with an optional label that comes back in its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawStep", into = "RawStep")]
pub struct Step {
    /// Shown in `step_passed` / `step_failed`.
    pub label: Option<String>,
    /// What the step does or waits for.
    pub action: Action,
}

/// What a step does or waits for.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Writes to a child's stdin (captures are substituted); passes once
    /// the write is queued at the child, after everything queued before it.
    Send {
        /// The child.
        to: Arc<str>,
        /// A line (a newline is added) or a JSON value.
        payload: Payload,
        /// How long the write may wait for room in the child's stdin queue
        /// (default 10s); past it the step fails.
        within: Option<Duration>,
    },
    /// Waits for a frame from `from` that matches (consuming everything it
    /// printed up to it), or, with `to`, for a message routed from `from` to
    /// `to`.
    Expect {
        /// The child that prints or sends it.
        from: Arc<str>,
        /// For a routed message: its receiver.
        to: Option<Arc<str>>,
        /// What matches: one pattern, or (`any`) several, the earliest
        /// unconsumed frame that matches any of them winning.
        alternatives: Vec<Alternative>,
        /// Written as `any = [...]`: its `step_passed` says which matched.
        any: bool,
        /// Only frames of this stream (both when unset).
        stream: Option<Stream>,
        /// How long to wait (default 10s).
        within: Option<Duration>,
        /// The label to go on at when `within` passes (else the step fails).
        on_timeout: Option<String>,
        /// The label to go on at when `from` ends for good first (else the
        /// step fails).
        on_exit: Option<String>,
    },
    /// Passes when nothing from `from` matches for `within` (default 1s);
    /// fails at the first match.
    ExpectNot {
        /// The child.
        from: Arc<str>,
        /// What must not come (its `goto` is unused).
        pattern: Alternative,
        /// Only frames of this stream (both when unset).
        stream: Option<Stream>,
        /// How long nothing may match.
        within: Option<Duration>,
    },
    /// Waits for a child to exit so (or finds that it already did).
    ExpectExit {
        /// The child.
        child: Arc<str>,
        /// The exit code or signal expected.
        status: ExpectedExit,
        /// How long to wait (default 10s).
        within: Option<Duration>,
    },
    /// Closes a child's stdin.
    Close {
        /// The child.
        child: Arc<str>,
    },
    /// Starts a child that is not running; passes once it is ready.
    Start {
        /// The child.
        child: Arc<str>,
    },
    /// Stops a child with its stop spec; passes once it exited.
    Stop {
        /// The child.
        child: Arc<str>,
    },
    /// Sends a signal to a child's group (like a crash; a restart policy of
    /// `always` restarts it).
    Kill {
        /// The child.
        child: Arc<str>,
        /// The signal (default KILL).
        signal: Signal,
    },
    /// Lets time pass.
    Wait(Duration),
}

impl std::fmt::Display for Action {
    /// One line saying what the step does, as `procession check` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let within = |w: &Option<Duration>| {
            w.map(|d| format!(" within {}", format_duration(d)))
                .unwrap_or_default()
        };
        match self {
            Action::Send {
                to,
                payload,
                within: w,
            } => match payload {
                Payload::Line(l) => write!(f, "send to {to}: {l}{}", within(w)),
                Payload::Json(j) => write!(f, "send to {to}: {j}{}", within(w)),
            },
            Action::Expect {
                from,
                to,
                alternatives,
                any,
                stream,
                within: w,
                on_timeout,
                on_exit,
            } => {
                let what = if *any {
                    let all: Vec<String> = alternatives.iter().map(Alternative::describe).collect();
                    format!("one of: {}", all.join("; "))
                } else {
                    alternatives
                        .iter()
                        .map(Alternative::describe)
                        .collect::<Vec<_>>()
                        .join("")
                };
                match to {
                    None => write!(f, "expect from {from}: {what}")?,
                    Some(to) => write!(f, "expect {from} -> {to}: {what}")?,
                }
                if let Some(s) = stream {
                    write!(f, " (on {s})")?;
                }
                write!(f, "{}", within(w))?;
                if let Some(l) = on_timeout {
                    write!(f, "; on timeout -> {l}")?;
                }
                if let Some(l) = on_exit {
                    write!(f, "; on exit -> {l}")?;
                }
                Ok(())
            }
            Action::ExpectNot {
                from,
                pattern: p,
                stream,
                within: w,
            } => {
                let on = stream.map(|s| format!(" (on {s})")).unwrap_or_default();
                write!(f, "expect no {} from {from}{on}{}", p.describe(), within(w))
            }
            Action::ExpectExit {
                child,
                status,
                within: w,
            } => {
                let s = match status {
                    ExpectedExit::Code(c) => format!("code {c}"),
                    ExpectedExit::Signal(s) => format!("signal {s}"),
                };
                write!(f, "expect {child} to exit with {s}{}", within(w))
            }
            Action::Close { child } => write!(f, "close the stdin of {child}"),
            Action::Start { child } => write!(f, "start {child}"),
            Action::Stop { child } => write!(f, "stop {child}"),
            Action::Kill { child, signal } => write!(f, "send {signal} to {child}"),
            Action::Wait(d) => write!(f, "wait {}", format_duration(*d)),
        }
    }
}

/// One pattern of an `expect`, and where the run goes on when it matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    /// A regex or a partial JSON object.
    pub pattern: PatternSpec,
    /// The regex is for a prompt: the child's unterminated tail (such as
    /// `> ` or `Password: `) once it has been silent for 100 ms, never a
    /// complete line; a line pattern never matches a prompt.
    pub prompt: bool,
    /// The label of the step to go on at (the next step when unset).
    pub goto: Option<String>,
}

impl Alternative {
    /// A regex on a line (or a JSON frame's text, or bytes read as UTF-8).
    pub fn line(regex: impl Into<String>) -> Alternative {
        Alternative {
            pattern: PatternSpec::Regex(regex.into()),
            prompt: false,
            goto: None,
        }
    }

    /// A regex on a prompt (an unterminated tail).
    pub fn prompt(regex: impl Into<String>) -> Alternative {
        Alternative {
            prompt: true,
            ..Alternative::line(regex)
        }
    }

    /// A partial JSON object.
    pub fn json(partial: serde_json::Map<String, Value>) -> Alternative {
        Alternative {
            pattern: PatternSpec::Json(partial),
            prompt: false,
            goto: None,
        }
    }

    /// Goes on at the step labelled `label` when it matches.
    pub fn goto(mut self, label: impl Into<String>) -> Alternative {
        self.goto = Some(label.into());
        self
    }

    fn describe(&self) -> String {
        let what = match &self.pattern {
            PatternSpec::Regex(re) if self.prompt => format!("a prompt matching {re}"),
            PatternSpec::Regex(re) => format!("a line matching {re}"),
            PatternSpec::Json(j) => format!("JSON containing {}", Value::Object(j.clone())),
        };
        match &self.goto {
            Some(label) => format!("{what} -> {label}"),
            None => what,
        }
    }
}

/// What a `send` step writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A line; a newline is added.
    Line(String),
    /// A JSON value, written as one line of compact JSON.
    Json(Value),
}

/// The end an `expect_exit` step waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedExit {
    /// This exit code.
    Code(i32),
    /// Death by this signal.
    Signal(Signal),
}

impl Step {
    fn new(action: Action) -> Step {
        Step {
            label: None,
            action,
        }
    }

    /// Sends a line (a newline is added).
    pub fn send_line(to: impl Into<Arc<str>>, line: impl Into<String>) -> Step {
        Step::new(Action::Send {
            to: to.into(),
            payload: Payload::Line(line.into()),
            within: None,
        })
    }

    /// Sends a JSON value as one line.
    pub fn send_json(to: impl Into<Arc<str>>, value: Value) -> Step {
        Step::new(Action::Send {
            to: to.into(),
            payload: Payload::Json(value),
            within: None,
        })
    }

    /// Expects a line from `from` matching the regex.
    pub fn expect_line(from: impl Into<Arc<str>>, regex: impl Into<String>) -> Step {
        Step::expect_one(from, Alternative::line(regex))
    }

    fn expect_one(from: impl Into<Arc<str>>, alternative: Alternative) -> Step {
        Step::new(Action::Expect {
            from: from.into(),
            to: None,
            alternatives: vec![alternative],
            any: false,
            stream: None,
            within: None,
            on_timeout: None,
            on_exit: None,
        })
    }

    /// Expects a frame matching any of `alternatives`, going on at the
    /// matching one's `goto` (`expect = { from, any = [...] }`).
    pub fn expect_any(from: impl Into<Arc<str>>, alternatives: Vec<Alternative>) -> Step {
        Step::new(Action::Expect {
            from: from.into(),
            to: None,
            alternatives,
            any: true,
            stream: None,
            within: None,
            on_timeout: None,
            on_exit: None,
        })
    }

    /// Passes when nothing from `from` matches `pattern` for `within`
    /// (default 1s).
    pub fn expect_not(from: impl Into<Arc<str>>, pattern: Alternative) -> Step {
        Step::new(Action::ExpectNot {
            from: from.into(),
            pattern,
            stream: None,
            within: None,
        })
    }

    /// An `expect` goes on at `label` when its time is up, instead of failing.
    pub fn on_timeout(mut self, label: impl Into<String>) -> Step {
        if let Action::Expect { on_timeout, .. } = &mut self.action {
            *on_timeout = Some(label.into());
        }
        self
    }

    /// An `expect` goes on at `label` when its child ends for good first.
    pub fn on_exit(mut self, label: impl Into<String>) -> Step {
        if let Action::Expect { on_exit, .. } = &mut self.action {
            *on_exit = Some(label.into());
        }
        self
    }

    /// Expects a prompt from `from` matching the regex: its unterminated
    /// tail, once it has been silent for 100 ms (`Password: `, `>>> `).
    pub fn expect_prompt(from: impl Into<Arc<str>>, regex: impl Into<String>) -> Step {
        Step::expect_one(from, Alternative::prompt(regex))
    }

    /// Expects a JSON frame from `from` containing the partial object
    /// (a string value `"${name}"` matches anything and captures it).
    pub fn expect_json(from: impl Into<Arc<str>>, partial: Value) -> Step {
        let map = match partial {
            Value::Object(map) => map,
            other => panic!("expect_json takes a JSON object, not {other}"),
        };
        Step::expect_one(from, Alternative::json(map))
    }

    /// Expects a child to exit with this code.
    pub fn expect_exit_code(child: impl Into<Arc<str>>, code: i32) -> Step {
        Step::new(Action::ExpectExit {
            child: child.into(),
            status: ExpectedExit::Code(code),
            within: None,
        })
    }

    /// Expects a child to die of this signal.
    pub fn expect_exit_signal(child: impl Into<Arc<str>>, signal: Signal) -> Step {
        Step::new(Action::ExpectExit {
            child: child.into(),
            status: ExpectedExit::Signal(signal),
            within: None,
        })
    }

    /// Closes a child's stdin.
    pub fn close(child: impl Into<Arc<str>>) -> Step {
        Step::new(Action::Close {
            child: child.into(),
        })
    }

    /// Starts a child that is not running.
    pub fn start(child: impl Into<Arc<str>>) -> Step {
        Step::new(Action::Start {
            child: child.into(),
        })
    }

    /// Stops a child.
    pub fn stop(child: impl Into<Arc<str>>) -> Step {
        Step::new(Action::Stop {
            child: child.into(),
        })
    }

    /// Sends a signal to a child's group.
    pub fn kill(child: impl Into<Arc<str>>, signal: Signal) -> Step {
        Step::new(Action::Kill {
            child: child.into(),
            signal,
        })
    }

    /// Waits this long.
    pub fn wait(duration: Duration) -> Step {
        Step::new(Action::Wait(duration))
    }

    /// Makes an `expect` wait for a message routed from its `from` to `to`.
    pub fn routed_to(mut self, receiver: impl Into<Arc<str>>) -> Step {
        if let Action::Expect { to, .. } = &mut self.action {
            *to = Some(receiver.into());
        }
        self
    }

    /// Sets how long an `expect` or `expect_exit` waits, or how long a
    /// `send` may wait for room.
    pub fn within(mut self, limit: Duration) -> Step {
        match &mut self.action {
            Action::Expect { within, .. }
            | Action::ExpectNot { within, .. }
            | Action::ExpectExit { within, .. }
            | Action::Send { within, .. } => *within = Some(limit),
            _ => {}
        }
        self
    }

    /// Sets the label.
    pub fn label(mut self, label: impl Into<String>) -> Step {
        self.label = Some(label.into());
        self
    }

    /// The action's key in a scenario file (`send`, `expect`, ...).
    pub fn kind(&self) -> &'static str {
        match self.action {
            Action::Send { .. } => "send",
            Action::Expect { .. } => "expect",
            Action::ExpectNot { .. } => "expect_not",
            Action::ExpectExit { .. } => "expect_exit",
            Action::Close { .. } => "close",
            Action::Start { .. } => "start",
            Action::Stop { .. } => "stop",
            Action::Kill { .. } => "kill",
            Action::Wait(_) => "wait",
        }
    }
}

// ---- the scenario-file form -------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    send: Option<RawSend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expect: Option<RawExpect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expect_not: Option<RawExpectNot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expect_exit: Option<RawExpectExit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    close: Option<ChildRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<ChildRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop: Option<ChildRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kill: Option<RawKill>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_text_opt"
    )]
    wait: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSend {
    to: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    json: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_text_opt"
    )]
    within: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    from: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    json: Option<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    any: Option<Vec<RawAlternative>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<Stream>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_text_opt"
    )]
    within: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_exit: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlternative {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    json: Option<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    goto: Option<String>,
}

impl RawAlternative {
    fn parse(self, what: &str) -> Result<Alternative, String> {
        let (pattern, prompt) = match (self.line, self.json, self.prompt) {
            (Some(line), None, None) => (PatternSpec::Regex(line), false),
            (None, Some(json), None) => (PatternSpec::Json(json), false),
            (None, None, Some(prompt)) => (PatternSpec::Regex(prompt), true),
            _ => {
                return Err(format!(
                    "{what} needs exactly one of `line` (a regex), `prompt` (a regex on an unterminated tail) or `json` (a partial object)"
                ))
            }
        };
        Ok(Alternative {
            pattern,
            prompt,
            goto: self.goto,
        })
    }

    fn from(a: Alternative) -> RawAlternative {
        let (line, json, prompt) = match a.pattern {
            PatternSpec::Regex(r) if a.prompt => (None, None, Some(r)),
            PatternSpec::Regex(r) => (Some(r), None, None),
            PatternSpec::Json(j) => (None, Some(j), None),
        };
        RawAlternative {
            line,
            json,
            prompt,
            goto: a.goto,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpectNot {
    from: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    json: Option<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<Stream>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_text_opt"
    )]
    within: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpectExit {
    child: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signal: Option<Signal>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_text_opt"
    )]
    within: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChildRef {
    child: Arc<str>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKill {
    child: Arc<str>,
    #[serde(default = "kill_default")]
    signal: Signal,
}

fn kill_default() -> Signal {
    Signal::Kill
}

const ACTIONS: &str = "send, expect, expect_not, expect_exit, close, start, stop, kill or wait";

impl TryFrom<RawStep> for Step {
    type Error = String;

    fn try_from(raw: RawStep) -> Result<Step, String> {
        let mut found: Vec<&str> = Vec::new();
        let mut action = None;
        if let Some(s) = raw.send {
            found.push("send");
            let payload = match (s.line, s.json) {
                (Some(line), None) => Payload::Line(line),
                (None, Some(json)) => Payload::Json(json),
                _ => return Err("`send` needs exactly one of `line` or `json`".into()),
            };
            action = Some(Action::Send {
                to: s.to,
                payload,
                within: s.within,
            });
        }
        if let Some(e) = raw.expect {
            found.push("expect");
            let single = RawAlternative {
                line: e.line,
                json: e.json,
                prompt: e.prompt,
                goto: None,
            };
            let has_single =
                single.line.is_some() || single.json.is_some() || single.prompt.is_some();
            let (alternatives, any) = match e.any {
                Some(_) if has_single => {
                    return Err("`expect` takes either `any = [...]` or one of `line`, `prompt`, `json`, not both".into())
                }
                Some(list) if list.is_empty() => {
                    return Err("`expect.any` needs at least one alternative".into())
                }
                Some(list) => {
                    let mut alternatives = Vec::with_capacity(list.len());
                    for (i, a) in list.into_iter().enumerate() {
                        alternatives.push(a.parse(&format!("`expect.any[{i}]`"))?);
                    }
                    (alternatives, true)
                }
                None => (vec![single.parse("`expect`")?], false),
            };
            if e.to.is_some() {
                if any {
                    return Err(
                        "a routed message (`to`) is expected with one pattern, not `any`".into(),
                    );
                }
                if alternatives[0].prompt {
                    return Err(
                        "a routed message (`to`) is never a prompt: use `line` or `json`".into(),
                    );
                }
            }
            action = Some(Action::Expect {
                from: e.from,
                to: e.to,
                alternatives,
                any,
                stream: e.stream,
                within: e.within,
                on_timeout: e.on_timeout,
                on_exit: e.on_exit,
            });
        }
        if let Some(e) = raw.expect_not {
            found.push("expect_not");
            let pattern = RawAlternative {
                line: e.line,
                json: e.json,
                prompt: e.prompt,
                goto: None,
            }
            .parse("`expect_not`")?;
            action = Some(Action::ExpectNot {
                from: e.from,
                pattern,
                stream: e.stream,
                within: e.within,
            });
        }
        if let Some(e) = raw.expect_exit {
            found.push("expect_exit");
            let status = match (e.code, e.signal) {
                (Some(code), None) => ExpectedExit::Code(code),
                (None, Some(signal)) => ExpectedExit::Signal(signal),
                _ => return Err("`expect_exit` needs exactly one of `code` or `signal`".into()),
            };
            action = Some(Action::ExpectExit {
                child: e.child,
                status,
                within: e.within,
            });
        }
        if let Some(c) = raw.close {
            found.push("close");
            action = Some(Action::Close { child: c.child });
        }
        if let Some(c) = raw.start {
            found.push("start");
            action = Some(Action::Start { child: c.child });
        }
        if let Some(c) = raw.stop {
            found.push("stop");
            action = Some(Action::Stop { child: c.child });
        }
        if let Some(k) = raw.kill {
            found.push("kill");
            action = Some(Action::Kill {
                child: k.child,
                signal: k.signal,
            });
        }
        if let Some(d) = raw.wait {
            found.push("wait");
            action = Some(Action::Wait(d));
        }
        match (found.len(), action) {
            (1, Some(action)) => Ok(Step {
                label: raw.label,
                action,
            }),
            (0, _) => Err(format!("a step needs one action: {ACTIONS}")),
            _ => Err(format!(
                "a step has exactly one action ({ACTIONS}), this one has {}",
                found.join(" and ")
            )),
        }
    }
}

impl From<Step> for RawStep {
    fn from(step: Step) -> RawStep {
        let mut raw = RawStep {
            label: step.label,
            ..RawStep::default()
        };
        match step.action {
            Action::Send {
                to,
                payload,
                within,
            } => {
                let (line, json) = match payload {
                    Payload::Line(l) => (Some(l), None),
                    Payload::Json(j) => (None, Some(j)),
                };
                raw.send = Some(RawSend {
                    to,
                    line,
                    json,
                    within,
                });
            }
            Action::Expect {
                from,
                to,
                alternatives,
                any,
                stream,
                within,
                on_timeout,
                on_exit,
            } => {
                let mut raw_expect = RawExpect {
                    from,
                    to,
                    line: None,
                    json: None,
                    prompt: None,
                    any: None,
                    stream,
                    within,
                    on_timeout,
                    on_exit,
                };
                let mut list: Vec<RawAlternative> =
                    alternatives.into_iter().map(RawAlternative::from).collect();
                // One alternative with a `goto` has only the `any` form.
                if any || list.len() != 1 || list[0].goto.is_some() {
                    raw_expect.any = Some(list);
                } else if let Some(one) = list.pop() {
                    raw_expect.line = one.line;
                    raw_expect.json = one.json;
                    raw_expect.prompt = one.prompt;
                }
                raw.expect = Some(raw_expect);
            }
            Action::ExpectNot {
                from,
                pattern,
                stream,
                within,
            } => {
                let one = RawAlternative::from(pattern);
                raw.expect_not = Some(RawExpectNot {
                    from,
                    line: one.line,
                    json: one.json,
                    prompt: one.prompt,
                    stream,
                    within,
                });
            }
            Action::ExpectExit {
                child,
                status,
                within,
            } => {
                let (code, signal) = match status {
                    ExpectedExit::Code(c) => (Some(c), None),
                    ExpectedExit::Signal(s) => (None, Some(s)),
                };
                raw.expect_exit = Some(RawExpectExit {
                    child,
                    code,
                    signal,
                    within,
                });
            }
            Action::Close { child } => raw.close = Some(ChildRef { child }),
            Action::Start { child } => raw.start = Some(ChildRef { child }),
            Action::Stop { child } => raw.stop = Some(ChildRef { child }),
            Action::Kill { child, signal } => raw.kill = Some(RawKill { child, signal }),
            Action::Wait(d) => raw.wait = Some(d),
        }
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct File {
        steps: Vec<Step>,
    }

    #[test]
    fn every_step_form_of_the_design_reads() {
        let file: File = toml::from_str(
            r#"
            [[steps]]
            send = { to = "server", json = { type = "hello" } }
            label = "greet"
            [[steps]]
            expect = { from = "server", json = { type = "welcome" }, within = "2s" }
            [[steps]]
            expect = { from = "client", to = "server", json = { type = "syn" }, within = "2s" }
            [[steps]]
            expect = { from = "bc", line = "^5$" }
            [[steps]]
            kill = { child = "server", signal = "KILL" }
            [[steps]]
            expect_exit = { child = "client", code = 0, within = "5s" }
            [[steps]]
            close = { child = "x" }
            [[steps]]
            wait = "3s"
            [[steps]]
            stop = { child = "x" }
            [[steps]]
            start = { child = "x" }
            [[steps]]
            kill = { child = "x" }
            [[steps]]
            send = { to = "bc", line = "2+3", within = "250ms" }
            "#,
        )
        .unwrap();
        let s = &file.steps;
        assert_eq!(s.len(), 12);
        assert_eq!(
            s[0],
            Step::send_json("server", json!({"type": "hello"})).label("greet")
        );
        assert_eq!(
            s[2],
            Step::expect_json("client", json!({"type": "syn"}))
                .routed_to("server")
                .within(Duration::from_secs(2))
        );
        assert_eq!(s[3], Step::expect_line("bc", "^5$"));
        assert_eq!(
            s[5],
            Step::expect_exit_code("client", 0).within(Duration::from_secs(5))
        );
        assert_eq!(s[7], Step::wait(Duration::from_secs(3)));
        assert_eq!(s[10], Step::kill("x", Signal::Kill));
        assert_eq!(
            s[11],
            Step::send_line("bc", "2+3").within(Duration::from_millis(250))
        );
        assert_eq!(s[11].action.to_string(), "send to bc: 2+3 within 250ms");
        // And back: serializing gives the same steps.
        let again: File =
            toml::from_str(&toml::to_string(&serde_json::json!({"steps": s})).unwrap()).unwrap();
        assert_eq!(&again.steps, s);
    }

    #[test]
    fn a_step_needs_exactly_one_action() {
        let none = toml::from_str::<File>("[[steps]]\nlabel = \"x\"").unwrap_err();
        assert!(
            none.to_string().contains("a step needs one action"),
            "{none}"
        );
        let two = toml::from_str::<File>("[[steps]]\nwait = \"1s\"\nclose = { child = \"a\" }")
            .unwrap_err();
        assert!(
            two.to_string().contains("this one has close and wait"),
            "{two}"
        );
        let both =
            toml::from_str::<File>("[[steps]]\nsend = { to = \"a\", line = \"x\", json = 1 }")
                .unwrap_err();
        assert!(
            both.to_string().contains("exactly one of `line` or `json`"),
            "{both}"
        );
        let typo = toml::from_str::<File>("[[steps]]\nexpct = { from = \"a\", line = \"x\" }")
            .unwrap_err();
        assert!(typo.to_string().contains("expct"), "{typo}");
    }
}
