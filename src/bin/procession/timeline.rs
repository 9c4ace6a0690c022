//! The live timeline on stderr: one line per event worth seeing, each
//! child's name in its own colour on a terminal, plain and greppable
//! otherwise (`[  1.234] server | listening`).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use actix::prelude::*;
use procession::{Event, EventKind, Frame};
use tokio::sync::oneshot;

/// How much the timeline shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// No child output.
    Quiet,
    /// Child output, lifecycle and steps.
    Normal,
    /// Also routed messages.
    Verbose,
}

pub struct Timeline {
    colour: bool,
    detail: Detail,
    colours: HashMap<Arc<str>, usize>,
    width: usize,
    done: Option<oneshot::Sender<()>>,
}

const PALETTE: [&str; 6] = ["36", "33", "35", "32", "34", "91"];

impl Timeline {
    /// A timeline for these child names (to align them); `done` fires when
    /// it stops (after the last event).
    pub fn new(
        colour: bool,
        detail: Detail,
        names: &[Arc<str>],
        done: oneshot::Sender<()>,
    ) -> Timeline {
        Timeline {
            colour,
            detail,
            colours: names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i % PALETTE.len()))
                .collect(),
            width: names.iter().map(|n| n.len()).max().unwrap_or(4).max(4),
            done: Some(done),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn who(&self, child: &str) -> String {
        let padded = format!("{child:<w$}", w = self.width);
        match self.colours.get(child) {
            Some(&i) => self.paint(PALETTE[i], &padded),
            None => padded,
        }
    }

    fn line(&self, event: &Event) -> Option<String> {
        let child = event.child.as_deref().unwrap_or("");
        let ok = if self.colour { "✓" } else { "passed" };
        let bad = if self.colour { "✗" } else { "FAILED" };
        let body = match &event.kind {
            EventKind::Output {
                stream,
                frame,
                partial,
            } => {
                if self.detail == Detail::Quiet {
                    return None;
                }
                let text = match frame {
                    Frame::Line(l) => l.clone(),
                    Frame::Json(v) => v.to_string(),
                    Frame::Bytes(b) => format!("({} bytes)", b.len()),
                };
                let cont = if *partial { "…" } else { "" };
                let text = if *stream == procession::Stream::Stderr {
                    self.paint("2", &format!("{text}{cont}"))
                } else {
                    format!("{text}{cont}")
                };
                format!("{} | {text}", self.who(child))
            }
            EventKind::Spawned { pid, attempt } => {
                let again = if *attempt > 1 {
                    format!(", attempt {attempt}")
                } else {
                    String::new()
                };
                format!(
                    "{} | {}",
                    self.who(child),
                    self.paint("2", &format!("spawned (pid {pid}{again})"))
                )
            }
            EventKind::SpawnFailed { error } => format!(
                "{} | {}",
                self.who(child),
                self.paint("31", &format!("could not start: {error}"))
            ),
            EventKind::Ready => format!("{} | {}", self.who(child), self.paint("2", "ready")),
            EventKind::NotStarted { reason } => {
                format!("{} | not started: {reason}", self.who(child))
            }
            EventKind::Exited {
                code,
                signal,
                requested,
                output_complete,
            } => {
                let how = match (code, signal) {
                    (Some(c), _) => format!("exited with code {c}"),
                    (_, Some(s)) => format!("killed by {s}"),
                    _ => "exited".into(),
                };
                let why = if *requested { " (asked)" } else { "" };
                let lost = if *output_complete {
                    ""
                } else {
                    "; output may be incomplete"
                };
                let colour = if code == &Some(0) || *requested {
                    "2"
                } else {
                    "31"
                };
                format!(
                    "{} | {}",
                    self.who(child),
                    self.paint(colour, &format!("{how}{why}{lost}"))
                )
            }
            EventKind::Restarting { attempt, delay_ms } => format!(
                "{} | {}",
                self.who(child),
                self.paint(
                    "33",
                    &format!("restarting in {delay_ms} ms (restart {attempt})")
                )
            ),
            EventKind::GaveUp { restarts } => format!(
                "{} | {}",
                self.who(child),
                self.paint("31", &format!("gave up after {restarts} restarts"))
            ),
            EventKind::OversizedFrame { limit, .. } => {
                format!("{} | line over {limit} bytes, in chunks", self.who(child))
            }
            EventKind::DecodeError { error, preview, .. } => format!(
                "{} | {}",
                self.who(child),
                self.paint("33", &format!("{error}: {preview}"))
            ),
            EventKind::Undeliverable { to, reason, .. } => format!(
                "{} | {}",
                self.who(child),
                self.paint("33", &format!("could not deliver to {to}: {reason}"))
            ),
            EventKind::Routed { from, to } => {
                if self.detail != Detail::Verbose {
                    return None;
                }
                format!(
                    "{} | {}",
                    self.who(from),
                    self.paint("2", &format!("-> {to}"))
                )
            }
            EventKind::StepPassed {
                step,
                label,
                duration_ms,
            } => {
                let label = label
                    .as_deref()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default();
                self.paint("32", &format!("step {step} {ok}{label} ({duration_ms} ms)"))
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
                let mut text = self.paint("1;31", &format!("step {step} {bad}{label}: "));
                let mut lines = reason.lines();
                text.push_str(lines.next().unwrap_or(""));
                for more in lines {
                    text.push_str(&format!("\n            {more}"));
                }
                text
            }
            EventKind::Violation { reason, .. } => {
                self.paint("1;31", &format!("violation: {reason}"))
            }
            EventKind::Shutdown { reason } => {
                self.paint("2", &format!("stopping everything: {reason}"))
            }
            EventKind::Lagged { missed } => {
                self.paint("33", &format!("(timeline skipped {missed} events)"))
            }
            EventKind::Stopped | EventKind::Finished { .. } => return None,
            _ => return None,
        };
        let t = event.t_ms as f64 / 1000.0;
        Some(format!(
            "{} {body}",
            self.paint("2", &format!("[{t:>8.3}]"))
        ))
    }
}

impl Actor for Timeline {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

impl Handler<Event> for Timeline {
    type Result = ();

    fn handle(&mut self, event: Event, _: &mut Context<Self>) {
        if let Some(line) = self.line(&event) {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
        }
    }
}
