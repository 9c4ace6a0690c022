//! [`ChildSpec`]: everything needed to start one child, as plain data.
//!
//! A spec is deserializable (it is the `[children.NAME]` table of a scenario
//! file) and has a builder for Rust callers. A restarted child is rebuilt
//! from its spec, never from leftover state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::duration::serde_text;
use crate::frame::Framing;
pub use crate::probe::{Alive, Check, Probe};
use crate::Signal;

/// Default cap on one frame: 1 MiB. Longer lines arrive in chunks.
pub const DEFAULT_FRAME_CAP: usize = 1 << 20;
/// Default size of a child's stdin queue: 1 MiB (besides what its pipe holds).
pub const DEFAULT_STDIN_QUEUE: usize = 1 << 20;
/// Default time to wait for the pipes to close after the child exited.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(1);

/// How to start, talk to and stop one child process.
///
/// ```
/// use std::time::Duration;
/// use procession::{ChildSpec, Framing, Signal, StderrMode};
///
/// let spec = ChildSpec::new("server", ["python3", "-u", "server.py"])
///     .cwd("examples")
///     .env("LEVEL", "debug")
///     .framing(Framing::Json)
///     .stderr(StderrMode::Merge)
///     .stop_signal(Signal::Int)
///     .grace(Duration::from_secs(2));
/// assert_eq!(spec.program(), "python3");
/// assert_eq!(spec.args(), ["-u", "server.py"]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildSpec {
    /// The child's name, unique under one director. In a scenario file it is
    /// the key of the `[children.NAME]` table.
    #[serde(skip)]
    pub name: Arc<str>,
    /// Program and arguments. Never run through a shell: write
    /// `["sh", "-c", "..."]` if you want one.
    pub cmd: Vec<String>,
    /// Working directory; the caller's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Variables to set (on top of the inherited environment unless `env_clear`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Start from an empty environment instead of inheriting ours.
    #[serde(default)]
    pub env_clear: bool,
    /// How stdout (and stdin) bytes are cut into frames.
    #[serde(default)]
    pub framing: Framing,
    /// What happens to stderr.
    #[serde(default)]
    pub stderr: StderrMode,
    /// Run the child in a pseudo-terminal (`terminal = true`, or
    /// `{ rows, cols, echo }`): see [`Terminal`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_terminal"
    )]
    pub terminal: Option<Terminal>,
    /// How the child is stopped.
    #[serde(default)]
    pub stop: StopSpec,
    /// Largest frame in bytes; longer lines are delivered in chunks marked
    /// partial. It counts the child's bytes: a line chunk with invalid UTF-8
    /// grows when each bad byte becomes U+FFFD (three bytes).
    #[serde(default = "default_frame_cap")]
    pub frame_cap: usize,
    /// How many bytes may wait in the stdin queue (besides what the pipe
    /// holds) before writers wait. One write larger than that still goes,
    /// into an empty queue.
    #[serde(default = "default_stdin_queue")]
    pub stdin_queue: usize,
    /// After the child exits and its own output is read, how long to wait
    /// for its pipes to reach end of file (a grandchild may hold them open)
    /// before killing what is left of its group and reporting the exit with
    /// the output marked incomplete. What the child wrote before it exited
    /// is never cut off by this.
    #[serde(default = "default_drain", with = "serde_text")]
    pub drain: Duration,
    /// Children that must be ready before this one starts (under a director).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Arc<str>>,
    /// When the child counts as ready; at spawn when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Ready>,
    /// Checked from readiness on; failing, the child is published
    /// `unhealthy`, stopped, and restarted as for a failure (see [`Alive`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive: Option<Alive>,
    /// When the child is restarted after it exits (under a director).
    #[serde(default)]
    pub restart: RestartSpec,
    /// When this child exits for good, the director shuts down (OTP's
    /// `auto_shutdown`, process-compose's `exit_on_end`).
    #[serde(default)]
    pub significant: bool,
    /// For a `json` child: the field that correlates a request with its
    /// reply (`"id"` when unset). A request that carries it already is
    /// refused, never overwritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id_field: Option<String>,
}

/// A pseudo-terminal for a child: it is the child's controlling terminal
/// and its stdin, stdout and stderr, in a session of its own. The child sees
/// `isatty` true and line-buffers as it would for a person. Everything it
/// prints arrives as `stdout` (leave `stderr` unset), with `\r\n` turned
/// into `\n` and ANSI escape sequences removed (`framing = "bytes"` keeps
/// the raw bytes). `TERM` is `dumb` unless `env` sets it. Closing its stdin
/// sends end of file the terminal's way (^D at the start of a line).
///
/// In a scenario: `terminal = true` or `terminal = { rows = 40, cols = 120, echo = true }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Terminal {
    /// Lines (24).
    pub rows: u16,
    /// Columns (80).
    pub cols: u16,
    /// Echo what is sent back as output, as a terminal does for a person
    /// typing (off).
    pub echo: bool,
}

impl Default for Terminal {
    fn default() -> Self {
        Terminal {
            rows: 24,
            cols: 80,
            echo: false,
        }
    }
}

/// `terminal = true | false | { rows, cols, echo }`.
fn de_terminal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Terminal>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        On(bool),
        Table(Terminal),
    }
    match Form::deserialize(d) {
        Ok(Form::On(on)) => Ok(on.then(Terminal::default)),
        Ok(Form::Table(t)) => Ok(Some(t)),
        Err(_) => Err(serde::de::Error::custom(
            "expected `true`, `false` or a table `{ rows, cols, echo }` (rows and cols as numbers, echo as true or false)",
        )),
    }
}

/// When a child counts as ready, so that children depending on it may start.
///
/// In a scenario: `ready = { line = "^listening" }`,
/// `ready = { json = { status = "up" } }`, `ready = { after = "200ms" }`, or
/// a probe: `ready = { tcp = "127.0.0.1:8080" }`,
/// `{ http = "http://127.0.0.1:8080/health" }`, `{ exec = ["pg_isready"] }`,
/// each with `every`, `timeout` and `within` (see [`Probe`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    try_from = "crate::probe::ReadyTable",
    into = "crate::probe::ReadyTable"
)]
pub enum Ready {
    /// A line on stdout or stderr matches this regex.
    Line(String),
    /// A JSON frame on stdout contains this partial object (a plan with
    /// any other JSON value here is refused).
    Json(serde_json::Value),
    /// This long after the spawn.
    After(Duration),
    /// A probe passes.
    Probe(Probe),
}

fn default_frame_cap() -> usize {
    DEFAULT_FRAME_CAP
}
fn default_stdin_queue() -> usize {
    DEFAULT_STDIN_QUEUE
}
fn default_drain() -> Duration {
    DEFAULT_DRAIN
}

/// Where the child's stderr goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StderrMode {
    /// Read as frames (with the stdout framing, `json` read as lines) and
    /// reported as output of stream `stderr`.
    #[default]
    Events,
    /// Sent into the stdout pipe, so both arrive interleaved as stdout frames.
    Merge,
    /// Passed through to our own stderr.
    Inherit,
    /// Thrown away (`/dev/null`).
    Discard,
}

/// How a child is stopped: `signal` to its whole process group, then up to
/// `grace` for the group to empty, then SIGKILL to the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopSpec {
    /// The first signal (default TERM).
    #[serde(default = "default_stop_signal")]
    pub signal: Signal,
    /// How long the group has to exit before SIGKILL (default 5s).
    #[serde(default = "default_grace", with = "serde_text")]
    pub grace: Duration,
}

fn default_stop_signal() -> Signal {
    Signal::Term
}
fn default_grace() -> Duration {
    Duration::from_secs(5)
}

impl Default for StopSpec {
    fn default() -> Self {
        StopSpec {
            signal: default_stop_signal(),
            grace: default_grace(),
        }
    }
}

impl ChildSpec {
    /// A spec with defaults for everything but the name and the command line.
    pub fn new<I, S>(name: impl Into<Arc<str>>, cmd: I) -> ChildSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ChildSpec {
            name: name.into(),
            cmd: cmd.into_iter().map(Into::into).collect(),
            cwd: None,
            env: BTreeMap::new(),
            env_clear: false,
            framing: Framing::default(),
            stderr: StderrMode::default(),
            terminal: None,
            stop: StopSpec::default(),
            frame_cap: DEFAULT_FRAME_CAP,
            stdin_queue: DEFAULT_STDIN_QUEUE,
            drain: DEFAULT_DRAIN,
            depends_on: Vec::new(),
            ready: None,
            alive: None,
            restart: RestartSpec::default(),
            significant: false,
            request_id_field: None,
        }
    }

    /// The program (`cmd[0]`), or `""` for an empty command line.
    pub fn program(&self) -> &str {
        self.cmd.first().map(String::as_str).unwrap_or("")
    }

    /// The arguments (`cmd[1..]`).
    pub fn args(&self) -> &[String] {
        self.cmd.get(1..).unwrap_or(&[])
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Starts from an empty environment (only what [`ChildSpec::env`] sets).
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// Sets the framing of stdout (and stderr in [`StderrMode::Events`]).
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Sets where stderr goes.
    pub fn stderr(mut self, mode: StderrMode) -> Self {
        self.stderr = mode;
        self
    }

    /// Runs the child in a pseudo-terminal (see [`Terminal`]).
    pub fn terminal(mut self, terminal: Terminal) -> Self {
        self.terminal = Some(terminal);
        self
    }

    /// Sets the first signal of a stop.
    pub fn stop_signal(mut self, signal: Signal) -> Self {
        self.stop.signal = signal;
        self
    }

    /// Sets how long a stop waits before SIGKILL.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.stop.grace = grace;
        self
    }

    /// Sets the largest frame, in bytes (at least 1).
    pub fn frame_cap(mut self, bytes: usize) -> Self {
        self.frame_cap = bytes.max(1);
        self
    }

    /// Sets how many bytes may wait in the stdin queue (at least 1).
    pub fn stdin_queue(mut self, bytes: usize) -> Self {
        self.stdin_queue = bytes.max(1);
        self
    }

    /// Sets how long to wait for the pipes to close after the child exited.
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Adds a child that must be ready before this one starts.
    pub fn depends_on(mut self, child: impl Into<Arc<str>>) -> Self {
        self.depends_on.push(child.into());
        self
    }

    /// Sets a liveness probe.
    pub fn alive(mut self, alive: Alive) -> Self {
        self.alive = Some(alive);
        self
    }

    /// Sets the readiness condition.
    pub fn ready(mut self, ready: Ready) -> Self {
        self.ready = Some(ready);
        self
    }

    /// Sets the restart policy and its limits.
    pub fn restart(mut self, restart: RestartSpec) -> Self {
        self.restart = restart;
        self
    }

    /// Marks the child significant: when it exits for good, the director
    /// shuts down.
    pub fn significant(mut self) -> Self {
        self.significant = true;
        self
    }

    /// Correlates requests and replies by this field instead of `"id"`.
    pub fn request_id_field(mut self, field: impl Into<String>) -> Self {
        self.request_id_field = Some(field.into());
        self
    }

    /// The field that correlates requests and replies.
    pub(crate) fn id_field(&self) -> &str {
        self.request_id_field.as_deref().unwrap_or("id")
    }
}

/// When a child is restarted after it exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never (the default): OTP's `temporary`.
    #[default]
    Never,
    /// After a non-zero exit or a signal we did not send: OTP's `transient`.
    OnFailure,
    /// After any exit we did not ask for: OTP's `permanent`.
    Always,
}

/// A child's restart policy with its limits. In a scenario, either a bare
/// word (`restart = "on-failure"`) or a table:
/// `restart = { policy = "on-failure", max = 3, within = "10s", backoff = "100ms", max_backoff = "5s" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RestartSpec {
    /// When to restart.
    pub policy: RestartPolicy,
    /// Restarts allowed within `within` before the child gives up.
    pub max: u32,
    /// The intensity window; also how long an instance must stay up to reset the backoff.
    #[serde(with = "serde_text")]
    pub within: Duration,
    /// The first restart's delay.
    #[serde(with = "serde_text")]
    pub backoff: Duration,
    /// The longest delay.
    #[serde(with = "serde_text")]
    pub max_backoff: Duration,
}

impl Default for RestartSpec {
    fn default() -> Self {
        RestartSpec {
            policy: RestartPolicy::Never,
            max: 3,
            within: Duration::from_secs(10),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl Ready {
    /// Ready when a line of its output matches this regex.
    pub fn line(regex: impl Into<String>) -> Ready {
        Ready::Line(regex.into())
    }

    /// Ready when a JSON frame contains this partial object:
    /// `Ready::json(json!({"status": "up"}))`.
    pub fn json(partial: serde_json::Value) -> Ready {
        Ready::Json(partial)
    }

    /// Ready this long after the spawn.
    pub fn after(delay: Duration) -> Ready {
        Ready::After(delay)
    }
}

impl RestartSpec {
    /// Restarts when it fails (exits non-zero or by a signal it was not
    /// asked to take), with the default intensity and backoff.
    pub fn on_failure() -> RestartSpec {
        RestartSpec::policy(RestartPolicy::OnFailure)
    }

    /// Restarts whenever it exits, with the default intensity and backoff.
    pub fn always() -> RestartSpec {
        RestartSpec::policy(RestartPolicy::Always)
    }

    /// Defaults with this policy.
    pub fn policy(policy: RestartPolicy) -> RestartSpec {
        RestartSpec {
            policy,
            ..RestartSpec::default()
        }
    }
}

impl<'de> Deserialize<'de> for RestartSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, IntoDeserializer, MapAccess, Visitor};

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            #[serde(default)]
            policy: RestartPolicy,
            max: Option<u32>,
            #[serde(default, deserialize_with = "opt_duration")]
            within: Option<Duration>,
            #[serde(default, deserialize_with = "opt_duration")]
            backoff: Option<Duration>,
            #[serde(default, deserialize_with = "opt_duration")]
            max_backoff: Option<Duration>,
        }

        struct WordOrTable;

        impl<'de> Visitor<'de> for WordOrTable {
            type Value = RestartSpec;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"never\", \"on-failure\", \"always\", or a table with policy, max, within, backoff, max_backoff")
            }

            fn visit_str<E: de::Error>(self, word: &str) -> Result<RestartSpec, E> {
                RestartPolicy::deserialize(word.into_deserializer()).map(RestartSpec::policy)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RestartSpec, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let def = RestartSpec::default();
                Ok(RestartSpec {
                    policy: t.policy,
                    max: t.max.unwrap_or(def.max),
                    within: t.within.unwrap_or(def.within),
                    backoff: t.backoff.unwrap_or(def.backoff),
                    max_backoff: t.max_backoff.unwrap_or(def.max_backoff),
                })
            }
        }

        d.deserialize_any(WordOrTable)
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    serde_text::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_table_deserializes_with_defaults() {
        let spec: ChildSpec = toml::from_str(
            r#"
            cmd = ["python3", "-u", "server.py"]
            env = { LEVEL = "debug" }
            framing = "json"
            stderr = "merge"
            stop = { signal = "INT", grace = "2s" }
            depends_on = ["db"]
            ready = { json = { status = "up" } }
            "#,
        )
        .unwrap();
        assert_eq!(spec.program(), "python3");
        assert_eq!(spec.framing, Framing::Json);
        assert_eq!(spec.stderr, StderrMode::Merge);
        assert_eq!(spec.stop.signal, Signal::Int);
        assert_eq!(spec.stop.grace, Duration::from_secs(2));
        assert_eq!(spec.frame_cap, DEFAULT_FRAME_CAP);
        assert_eq!(spec.drain, DEFAULT_DRAIN);
        assert_eq!(spec.env["LEVEL"], "debug");
        assert_eq!(spec.depends_on, [Arc::from("db")]);
        assert!(matches!(spec.ready, Some(Ready::Json(ref m)) if m["status"] == "up"));
        assert_eq!(
            Ready::json(serde_json::json!({"status": "up"})),
            spec.ready.clone().unwrap()
        );
        assert_eq!(Ready::line("^up"), Ready::Line("^up".into()));
        let after: ChildSpec =
            toml::from_str("cmd = [\"x\"]\nready = { after = \"200ms\" }").unwrap();
        assert_eq!(after.ready, Some(Ready::After(Duration::from_millis(200))));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let e = toml::from_str::<ChildSpec>("cmd = [\"x\"]\nframng = \"json\"").unwrap_err();
        assert!(e.to_string().contains("framng"), "{e}");
        let e =
            toml::from_str::<ChildSpec>("cmd = [\"x\"]\nstop = { grace = \"soon\" }").unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
        let e = toml::from_str::<ChildSpec>("cmd = [\"x\"]\nstop = { signal = \"TERMINATE\" }")
            .unwrap_err();
        assert!(e.to_string().contains("TERMINATE"), "{e}");
    }
}
