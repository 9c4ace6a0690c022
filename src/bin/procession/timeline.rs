//! The live timeline on stderr: one line per event worth seeing, each
//! child's name in its own colour on a terminal, plain and greppable
//! otherwise (`[  1.234] server | listening`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use procession::{Description, Kind, Shown, Tone};
use procession::{Event, EventFilter, EventKind};
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
    /// Lines dropped under load and not reported yet.
    elided: u64,
    /// When the last `… N lines elided` was printed.
    elided_told: Option<Instant>,
    ending: Ending,
    done: Option<oneshot::Sender<Ending>>,
}

/// How the run ended, as its last events said.
#[derive(Debug, Clone, Default)]
pub struct Ending {
    /// `finished`'s verdict.
    pub passed: Option<bool>,
    /// The last `shutdown`'s reason.
    pub reason: Option<String>,
}

/// The kinds the timeline may lose when it falls behind (one per frame of
/// output); everything else (steps, failures, lifecycle, the end) always
/// reaches it.
const DROPPABLE: [Kind; 6] = [
    Kind::Output,
    Kind::Routed,
    Kind::Undeliverable,
    Kind::OversizedFrame,
    Kind::DecodeError,
    Kind::LateReply,
];

/// What the timeline subscribes to: with `-q`, no child output at all.
pub fn filter(detail: Detail) -> EventFilter {
    let filter = EventFilter::all().drop_only(DROPPABLE);
    match detail {
        Detail::Quiet => filter.without_kinds([Kind::Output, Kind::Routed]),
        _ => filter,
    }
}

const PALETTE: [&str; 6] = ["36", "33", "35", "32", "34", "91"];

impl Timeline {
    /// A timeline for these child names (to align them); `done` fires when
    /// it stops (after the last event).
    pub fn new(
        colour: bool,
        detail: Detail,
        names: &[Arc<str>],
        done: oneshot::Sender<Ending>,
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
            elided: 0,
            elided_told: None,
            ending: Ending::default(),
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
        let padded = format!("{:<w$}", escape_controls(child), w = self.width);
        match self.colours.get(child) {
            Some(&i) => self.paint(PALETTE[i], &padded),
            None => padded,
        }
    }

    fn line(&self, event: &Event) -> Option<String> {
        let Description { text, tone, shown } = event.kind.describe();
        // What children print reaches the terminal as text, never as
        // commands to it (a title, a cleared screen): control characters
        // are shown escaped. Newlines stay (a failure's diagnostic lines).
        let text = escape_controls(&text);
        let wanted = match self.detail {
            Detail::Quiet => Shown::Always,
            Detail::Normal => Shown::Normal,
            Detail::Verbose => Shown::Verbose,
        };
        if shown > wanted {
            return None;
        }
        // On a terminal, a step's verdict is a mark.
        let text = match (&event.kind, self.colour) {
            (EventKind::StepPassed { step, .. }, true) => {
                text.replacen(&format!("step {step} passed"), &format!("step {step} ✓"), 1)
            }
            (EventKind::StepFailed { step, .. }, true) => {
                text.replacen(&format!("step {step} FAILED"), &format!("step {step} ✗"), 1)
            }
            _ => text,
        };
        let mut lines = text.lines();
        let first = lines.next().unwrap_or("");
        let mut body = match tone {
            Tone::Dim => self.paint("2", first),
            Tone::Good => self.paint("32", first),
            Tone::Notice => self.paint("33", first),
            Tone::Bad => self.paint("31", first),
            Tone::Alarm => self.paint("1;31", first),
            _ => first.to_string(),
        };
        for more in lines {
            body.push_str(&format!("\n            {more}"));
        }
        // Child events read `name | text`; a routed message is its sender's.
        let who = match &event.kind {
            EventKind::Routed { from, .. } => Some(&**from),
            _ => event.child.as_deref(),
        };
        let steps_and_run = matches!(
            event.kind,
            EventKind::StepPassed { .. }
                | EventKind::StepFailed { .. }
                | EventKind::Violation { .. }
                | EventKind::Shutdown { .. }
                | EventKind::Lagged { .. }
        );
        let body = match who {
            Some(child) if !steps_and_run => format!("{} | {body}", self.who(child)),
            _ => body,
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
        self.tell_elided(true);
        if let Some(done) = self.done.take() {
            let _ = done.send(std::mem::take(&mut self.ending));
        }
    }
}

impl Timeline {
    /// Prints `… N lines elided` if lines were dropped, at most once a
    /// second (`now`: at the end, whatever is left).
    fn tell_elided(&mut self, now: bool) {
        let due = self
            .elided_told
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if self.elided == 0 || !(due || now) {
            return;
        }
        let text = format!("… {} lines elided", self.elided);
        errln!("{}", self.paint("33", &text));
        self.elided = 0;
        self.elided_told = Some(Instant::now());
    }
}

impl Handler<Event> for Timeline {
    type Result = ();

    fn handle(&mut self, event: Event, _: &mut Context<Self>) {
        match &event.kind {
            EventKind::Lagged { missed } => {
                self.elided += missed;
                return self.tell_elided(false);
            }
            EventKind::Finished { passed } => self.ending.passed = Some(*passed),
            EventKind::Shutdown { reason } => self.ending.reason = Some(reason.clone()),
            _ => {}
        }
        self.tell_elided(false);
        if let Some(line) = self.line(&event) {
            errln!("{line}");
        }
    }
}

/// `s` with control characters shown instead of sent: ESC as `\e`, other
/// C0 and C1 controls and DEL as `\xNN`; newlines and tabs kept.
fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\x1b' => out.push_str("\\e"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(
            escape_controls("\x1b]0;PWNED\x07\x1b[2J ok\tdone\u{9b}"),
            "\\e]0;PWNED\\x07\\e[2J ok\tdone\\x9b"
        );
        assert_eq!(escape_controls("two\nlines"), "two\nlines");
    }
}
