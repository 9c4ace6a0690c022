//! Errors at the library's boundaries. Every variant names the child it is
//! about and keeps its OS-level cause as `source`.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

/// A child could not be started. Nothing was left running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// `cmd` was empty.
    #[error("child `{child}`: empty command line (cmd needs at least the program)")]
    EmptyCommand {
        /// The child's name.
        child: Arc<str>,
    },
    /// The program does not exist (on `PATH`, or at the path given).
    #[error("child `{child}`: program `{program}` not found{}", if program.contains('/') { "" } else { " on PATH" })]
    NotFound {
        /// The child's name.
        child: Arc<str>,
        /// The program as written in `cmd`.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The program exists but may not be executed.
    #[error("child `{child}`: program `{program}` is not executable (permission denied)")]
    NotExecutable {
        /// The child's name.
        child: Arc<str>,
        /// The program as written in `cmd`.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The working directory is missing or not a directory.
    #[error("child `{child}`: working directory `{}` is not a directory", cwd.display())]
    BadCwd {
        /// The child's name.
        child: Arc<str>,
        /// The directory from the spec.
        cwd: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The program is there, but the interpreter its `#!` line names is not
    /// (the OS says "not found" for both).
    #[error("child `{child}`: program `{program}` is a script whose interpreter{} was not found", interpreter.as_ref().map(|i| format!(" `{i}`")).unwrap_or_default())]
    BadInterpreter {
        /// The child's name.
        child: Arc<str>,
        /// The program as written in `cmd`.
        program: String,
        /// What its `#!` line names, if it could be read.
        interpreter: Option<String>,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Any other failure of the spawn itself: too long an argument list
    /// (E2BIG), out of descriptors (EMFILE), a NUL byte in `cmd` or `env`...
    #[error("child `{child}`: cannot start `{program}`: {source}")]
    Os {
        /// The child's name.
        child: Arc<str>,
        /// The program as written in `cmd`.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl SpawnError {
    /// The name of the child that could not be started.
    pub fn child(&self) -> &str {
        match self {
            SpawnError::EmptyCommand { child }
            | SpawnError::NotFound { child, .. }
            | SpawnError::NotExecutable { child, .. }
            | SpawnError::BadInterpreter { child, .. }
            | SpawnError::BadCwd { child, .. }
            | SpawnError::Os { child, .. } => child,
        }
    }
}

/// Bytes could not be queued for a child's stdin. The bytes are given back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StdinError {
    /// Stdin was closed (on request, or because the child stopped reading or exited).
    #[error("child `{child}`: stdin is closed")]
    Closed {
        /// The child's name.
        child: Arc<str>,
        /// What was not written.
        data: Bytes,
    },
    /// The queue is full (only from `try_send`; `send` waits instead).
    #[error("child `{child}`: stdin queue is full")]
    Full {
        /// The child's name.
        child: Arc<str>,
        /// What was not queued.
        data: Bytes,
    },
}

impl StdinError {
    /// The bytes that were not queued.
    pub fn into_data(self) -> Bytes {
        match self {
            StdinError::Closed { data, .. } | StdinError::Full { data, .. } => data,
        }
    }
}

/// A control message to a child failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChildError {
    /// The child's actor is gone (its process exited and was reported).
    #[error("child `{child}` is gone (it exited)")]
    Gone {
        /// The child's name.
        child: Arc<str>,
    },
    /// A signal could not be sent.
    #[error("child `{child}`: cannot send {signal}")]
    Signal {
        /// The child's name.
        child: Arc<str>,
        /// The signal.
        signal: crate::Signal,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing to stdin failed.
    #[error(transparent)]
    Stdin(#[from] StdinError),
}

/// A problem in a set of children and routes given to a director, found
/// before anything is started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A replica group's name is a child's, or another group's.
    #[error("`{group}` names a group of replicas and another child or group too")]
    GroupNameTaken {
        /// The group.
        group: Arc<str>,
    },
    /// `request_id_field` on a child whose framing is not `json`.
    #[error("child `{child}`: request_id_field is for a child with framing = \"json\" (a line child's replies come in order)")]
    RequestIdNotJson {
        /// The child.
        child: Arc<str>,
    },
    /// `Ready::Json` holds a JSON value that is not an object.
    #[error(
        "child `{child}`: ready.json must be a partial JSON object such as {{\"status\": \"up\"}}"
    )]
    ReadyJsonNotObject {
        /// The child.
        child: Arc<str>,
    },
    /// Two children share a name.
    #[error("child `{child}` is defined twice")]
    DuplicateChild {
        /// The name.
        child: Arc<str>,
    },
    /// `depends_on` names a child that does not exist.
    #[error(
        "child `{child}`: depends_on names `{dependency}`, which is not a child{}",
        did_you_mean(suggestion)
    )]
    UnknownDependency {
        /// The child whose `depends_on` is wrong.
        child: Arc<str>,
        /// The unknown name.
        dependency: Arc<str>,
        /// A known name close to it.
        suggestion: Option<Arc<str>>,
    },
    /// `depends_on` goes round in a circle.
    #[error("dependency cycle: {}", path.join(" -> "))]
    Cycle {
        /// The children on the cycle, the first repeated at the end.
        path: Vec<Arc<str>>,
    },
    /// A route names a child that does not exist.
    #[error(
        "route {index} ({from} -> {to}): `{name}` is not a child{}",
        did_you_mean(suggestion)
    )]
    UnknownRouteChild {
        /// The route's position, from 1.
        index: usize,
        /// The route's `from`.
        from: Arc<str>,
        /// The route's `to`.
        to: Arc<str>,
        /// The unknown name.
        name: Arc<str>,
        /// A known name close to it.
        suggestion: Option<Arc<str>>,
    },
    /// A regex does not compile.
    #[error("{place}: invalid regex in `{key}`: {}", regex_reason(source))]
    BadRegex {
        /// Where.
        place: Place,
        /// The key (`ready.line`, `match`).
        key: &'static str,
        /// The regex error.
        #[source]
        source: regex::Error,
    },
    /// A step names a child that does not exist.
    #[error(
        "step {step}: `{key}` names `{name}`, which is not a child{}",
        did_you_mean(suggestion)
    )]
    UnknownStepChild {
        /// The step, from 1.
        step: usize,
        /// The key (`to`, `from`, `child`).
        key: &'static str,
        /// The unknown name.
        name: Arc<str>,
        /// A known name close to it.
        suggestion: Option<Arc<str>>,
    },
    /// A step uses `${name}` that no earlier step captures.
    #[error("step {step}: `${{{name}}}` is not captured by any earlier step")]
    UnknownCapture {
        /// The step, from 1.
        step: usize,
        /// The capture's name.
        name: String,
    },
    /// A `goto`, `on_timeout` or `on_exit` names no step's label.
    #[error("step {step}: `{key}` goes to `{label}`, which no step is labelled{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownLabel {
        /// The step, from 1.
        step: usize,
        /// `goto`, `on_timeout` or `on_exit`.
        key: &'static str,
        /// The label.
        label: String,
        /// A label that is spelled almost the same.
        suggestion: Option<String>,
    },
    /// A `goto`, `on_timeout` or `on_exit` names a label that several steps have.
    #[error("step {step}: `{key}` goes to `{label}`, but steps {steps:?} are all labelled so")]
    DuplicateLabel {
        /// The step, from 1.
        step: usize,
        /// `goto`, `on_timeout` or `on_exit`.
        key: &'static str,
        /// The label.
        label: String,
        /// The steps with it, from 1.
        steps: Vec<usize>,
    },
    /// A `prompt` expect on a child whose framing is not `lines`.
    #[error("step {step}: `{child}` has framing `{framing}`, which has no prompts (a prompt is the unterminated tail of a line: use `lines` framing, or expect `line` or `json`)")]
    PromptNotLines {
        /// The step, from 1.
        step: usize,
        /// The child.
        child: Arc<str>,
        /// Its framing, as a scenario names it.
        framing: &'static str,
    },
    /// A `send` line holds a newline: it would reach the child as several
    /// lines (messages), not one.
    #[error(
        "step {step}: `send.line` holds a newline; a send is one line (use one step per line)"
    )]
    MultiLineSend {
        /// The step, from 1.
        step: usize,
    },
    /// `cmd` is empty.
    #[error("child `{child}`: cmd is empty (it needs at least the program)")]
    EmptyCommand {
        /// The child.
        child: Arc<str>,
    },
    /// A child's name is empty.
    #[error("a child needs a name (found an empty one)")]
    EmptyName,
    /// `frame_cap` is too small to hold one character.
    #[error(
        "child `{child}`: frame_cap is {cap}; it must be at least 4 bytes (one UTF-8 character)"
    )]
    FrameCapTooSmall {
        /// The child.
        child: Arc<str>,
        /// The cap given.
        cap: usize,
    },
    /// A terminal child with `stderr` set: a terminal has one stream.
    #[error("child `{child}`: a terminal child has one output stream, its terminal: leave `stderr` unset")]
    TerminalStderr {
        /// The child.
        child: Arc<str>,
    },
    /// A terminal child with `framing = "length"`: a terminal changes bytes
    /// (line discipline), so binary frames cannot pass it.
    #[error(
        "child `{child}`: a terminal rewrites what passes it; use lines, json or bytes framing"
    )]
    TerminalFraming {
        /// The child.
        child: Arc<str>,
    },
    /// An argument in `cmd` holds a NUL byte (no program can receive it).
    #[error("child `{child}`: cmd argument {index} holds a NUL byte")]
    NulInCommand {
        /// The child.
        child: Arc<str>,
        /// Which argument, from 1 (the program is 1).
        index: usize,
    },
    /// An `env` name is empty or holds `=` or a NUL byte, or its value
    /// holds a NUL byte.
    #[error("child `{child}`: env `{name}`: {why}")]
    BadEnv {
        /// The child.
        child: Arc<str>,
        /// The name as given.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// What is wrong with a regex, in one line: the regex crate's own words
/// (its syntax errors point at the place in a multi-line drawing; the last
/// line says what is wrong).
fn regex_reason(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => {
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            last.trim().trim_start_matches("error: ").to_string()
        }
        regex::Error::CompiledTooBig(limit) => {
            format!("it would compile to more than {limit} bytes (simplify it)")
        }
        other => other.to_string(),
    }
}

/// The key a [`ConfigError`] is about, so that a scenario file can point at
/// its line and column (see [`ConfigError::place`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A key of a child (`cmd`, `depends_on`, `ready`); `element`: the
    /// array element concerned (a `depends_on` name).
    Child {
        /// The child.
        child: Arc<str>,
        /// Its key.
        key: &'static str,
        /// The element of that key's array, if one is meant.
        element: Option<Arc<str>>,
    },
    /// A key of a route, from 1.
    Route {
        /// The route's position, from 1.
        index: usize,
        /// Its key (`from`, `to`, `match`).
        key: &'static str,
    },
    /// A step, from 1; `key` inside its action table (`to`, `line`), or the
    /// action itself.
    Step {
        /// The step, from 1.
        step: usize,
        /// A key in its action's table.
        key: Option<&'static str>,
    },
}

impl ConfigError {
    /// The key this problem is about.
    pub fn place(&self) -> Location {
        let child = |child: &Arc<str>, key| Location::Child {
            child: child.clone(),
            key,
            element: None,
        };
        match self {
            ConfigError::DuplicateChild { child: c } | ConfigError::EmptyCommand { child: c } => {
                child(c, "cmd")
            }
            ConfigError::GroupNameTaken { group } => child(group, "count"),
            ConfigError::ReadyJsonNotObject { child: c } => child(c, "ready"),
            ConfigError::RequestIdNotJson { child: c } => child(c, "request_id_field"),
            ConfigError::UnknownDependency {
                child, dependency, ..
            } => Location::Child {
                child: child.clone(),
                key: "depends_on",
                element: Some(dependency.clone()),
            },
            ConfigError::Cycle { path } => child(&path[0], "depends_on"),
            ConfigError::NulInCommand { child: c, .. } => child(c, "cmd"),
            ConfigError::EmptyName => child(&Arc::from(""), "cmd"),
            ConfigError::FrameCapTooSmall { child: c, .. } => child(c, "frame_cap"),
            ConfigError::TerminalStderr { child: c } => child(c, "stderr"),
            ConfigError::TerminalFraming { child: c } => child(c, "framing"),
            ConfigError::BadEnv { child: c, .. } => child(c, "env"),
            ConfigError::UnknownRouteChild {
                index, from, name, ..
            } => Location::Route {
                index: *index,
                key: if name == from { "from" } else { "to" },
            },
            ConfigError::BadRegex { place, .. } => match place {
                Place::Child(c) => child(c, "ready"),
                Place::Route { index, .. } => Location::Route {
                    index: *index,
                    key: "match",
                },
                Place::Step(n) => Location::Step {
                    step: *n,
                    key: Some("line"),
                },
            },
            ConfigError::UnknownStepChild { step, key, .. } => Location::Step {
                step: *step,
                key: Some(key),
            },
            ConfigError::UnknownLabel { step, key, .. }
            | ConfigError::DuplicateLabel { step, key, .. } => Location::Step {
                step: *step,
                key: Some(key),
            },
            ConfigError::PromptNotLines { step, .. } => Location::Step {
                step: *step,
                key: Some("prompt"),
            },
            ConfigError::UnknownCapture { step, .. } => Location::Step {
                step: *step,
                key: None,
            },
            ConfigError::MultiLineSend { step } => Location::Step {
                step: *step,
                key: Some("line"),
            },
        }
    }
}

/// Where in a set of children, routes and steps a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A child.
    Child(Arc<str>),
    /// A route, from 1.
    Route {
        /// Its position, from 1.
        index: usize,
        /// Its `from`.
        from: Arc<str>,
        /// Its `to`.
        to: Arc<str>,
    },
    /// A step, from 1.
    Step(usize),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Child(c) => write!(f, "child `{c}`"),
            Place::Route { index, from, to } => write!(f, "route {index} ({from} -> {to})"),
            Place::Step(n) => write!(f, "step {n}"),
        }
    }
}

fn did_you_mean(suggestion: &Option<Arc<str>>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

/// Several configuration problems, all reported at once.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.len();
        write!(f, "{n} problem{}:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A request to the director failed. Each variant names the child.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectorError {
    /// No child has this name.
    #[error("no child named `{child}`{}", did_you_mean(suggestion))]
    UnknownChild {
        /// The name asked for.
        child: Arc<str>,
        /// A known name close to it.
        suggestion: Option<Arc<str>>,
    },
    /// The child exists but is not running.
    #[error("child `{child}` is not running ({state})")]
    NotRunning {
        /// The child.
        child: Arc<str>,
        /// What it is instead: `exited with exit code 3`, `not started: ...`.
        state: String,
    },
    /// The children or routes are invalid; nothing was started.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] ConfigErrors),
    /// Writing to the child's stdin failed.
    #[error(transparent)]
    Stdin(#[from] StdinError),
    /// A message could not be encoded as JSON.
    #[error("child `{child}`: cannot encode the message as JSON")]
    Encode {
        /// The child.
        child: Arc<str>,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The child is restarting (or not started yet) and its buffer is full.
    #[error("child `{child}` is not running yet and its buffer of {limit} bytes is full")]
    BufferFull {
        /// The child.
        child: Arc<str>,
        /// The buffer's size.
        limit: usize,
    },
    /// A write waited past its deadline because the child did not read.
    #[error("child `{child}` did not read its stdin: its queue stayed full for {waited:.1?}")]
    StdinFull {
        /// The child's name.
        child: Arc<str>,
        /// How long the write waited.
        waited: std::time::Duration,
    },
    /// The child's stdin was closed (a `close` step or `close_stdin`).
    #[error("child `{child}`: its stdin is closed")]
    StdinClosed {
        /// The child's name.
        child: Arc<str>,
    },
    /// `wait_ready`: the child will not become ready (without a start).
    #[error("child `{child}` is not ready: {reason}")]
    NotReady {
        /// The child's name.
        child: Arc<str>,
        /// Why: it could not be spawned, exited first, was not started.
        reason: String,
    },
    /// A wait (`wait_ready_within`, `wait_exit_within`) ran out of time.
    #[error("child `{child}`: not {what} within {within:?}")]
    WaitTimedOut {
        /// The child's name.
        child: Arc<str>,
        /// What was waited for: `ready`, `exited`.
        what: &'static str,
        /// How long.
        within: std::time::Duration,
    },
    /// `remove`: other children depend on it.
    #[error("child `{child}` cannot be removed: {} depend on it", dependents.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(", "))]
    HasDependents {
        /// The child's name.
        child: Arc<str>,
        /// Those that name it in `depends_on`.
        dependents: Vec<Arc<str>>,
    },
    /// A request failed (converted from [`RequestError`] by `?`).
    #[error(transparent)]
    Request(Box<RequestError>),
    /// A protocol is already running; one runs at a time (and while it
    /// runs, no child it may name is removed).
    #[error("a protocol is already running")]
    ProtocolRunning,
    /// The director is shutting down and starts nothing new.
    #[error("the director is shutting down")]
    ShuttingDown,
    /// The director actor is gone.
    #[error("the director is gone")]
    Gone,
}

/// A request ([`Director::request`](crate::Director::request),
/// [`request_frame`](crate::Director::request_frame)) failed: it was not
/// sent, or it got no reply that fits.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request could not be written: the child is unknown or not
    /// running, its stdin stayed full or is closed, or the director is
    /// shutting down or gone.
    #[error(transparent)]
    NotSent(DirectorError),
    /// A request got no reply in time.
    #[error("child `{child}`: no reply within {timeout:?}")]
    Timeout {
        /// The child.
        child: Arc<str>,
        /// The time allowed.
        timeout: std::time::Duration,
    },
    /// The child ended before it replied.
    #[error("child `{child}` ended before it replied")]
    NoReply {
        /// The child.
        child: Arc<str>,
    },
    /// The reply does not decode into the type asked for.
    #[error("child `{child}`: the reply {reply} does not fit the expected type: {source}")]
    BadReply {
        /// The child.
        child: Arc<str>,
        /// The start of the reply.
        reply: String,
        /// Why it does not fit.
        #[source]
        source: serde_json::Error,
    },
    /// A message could not be encoded as JSON.
    #[error("child `{child}`: cannot encode the message as JSON")]
    Encode {
        /// The child.
        child: Arc<str>,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A request to a JSON child must be a JSON object (it gets an `id`).
    #[error("child `{child}` speaks JSON: a request must be a JSON object, not {got}")]
    NotAnObject {
        /// The child.
        child: Arc<str>,
        /// What was given (`a string`, `an array`, `a line`, ...).
        got: &'static str,
    },
    /// A request to a JSON child already has the field that correlates it
    /// with its reply (`id`, or the child's `request_id_field`).
    #[error("child `{child}`: the request already has a `{field}` field, which correlates requests with replies (choose another with `request_id_field`)")]
    IdConflict {
        /// The child.
        child: Arc<str>,
        /// The field.
        field: String,
    },
}

impl From<RequestError> for DirectorError {
    fn from(e: RequestError) -> DirectorError {
        match e {
            RequestError::NotSent(e) => e,
            RequestError::Encode { child, source } => DirectorError::Encode { child, source },
            e => DirectorError::Request(Box::new(e)),
        }
    }
}

impl From<DirectorError> for RequestError {
    fn from(e: DirectorError) -> RequestError {
        match e {
            DirectorError::Request(e) => *e,
            DirectorError::Encode { child, source } => RequestError::Encode { child, source },
            e => RequestError::NotSent(e),
        }
    }
}

/// The known name closest to `name`, if one is close enough to be a typo.
/// [`closest`] for plain strings (labels).
pub(crate) fn closest_str(name: &str, known: &[&str]) -> Option<String> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d > 0 && *d <= 2.max(k.len() / 3) && *d < name.len().max(k.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_string())
}

pub(crate) fn closest<'a>(
    name: &str,
    known: impl IntoIterator<Item = &'a Arc<str>>,
) -> Option<Arc<str>> {
    known
        .into_iter()
        .map(|k| (edit_distance(name, k), k))
        // A typo: a few edits, and not everything different.
        .filter(|(d, k)| *d > 0 && *d <= 2.max(k.len() / 3) && *d < name.len().max(k.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_get_a_suggestion() {
        let known: Vec<Arc<str>> = ["server", "client", "db"].map(Arc::from).to_vec();
        assert_eq!(closest("sever", &known).as_deref(), Some("server"));
        assert_eq!(closest("clinet", &known).as_deref(), Some("client"));
        assert_eq!(closest("zebra", &known), None);
        assert_eq!(closest("server", &known), None, "an exact match is no typo");
    }
}
