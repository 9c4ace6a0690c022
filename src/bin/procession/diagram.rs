//! `procession diagram EVENTS.jsonl`: a run drawn as a sequence diagram, as
//! Mermaid text or a standalone SVG. One lifeline for procession and one
//! per child; an arrow for each routed message and each request procession
//! makes of a child (a control request, a stop, a kill); notes for the
//! rest of a child's life and for the steps.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Options of `procession diagram`.
#[derive(clap::Args, Debug)]
pub struct DiagramArgs {
    /// An events file (`procession run --events FILE.jsonl`); a torn last
    /// line (a run still going) is ignored.
    pub events: PathBuf,
    /// What to draw.
    #[arg(long, value_enum, default_value_t = Format::Mermaid)]
    pub format: Format,
    /// Write here instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A Mermaid `sequenceDiagram` (GitHub renders it in Markdown).
    Mermaid,
    /// A standalone SVG: no scripts, no external resources.
    Svg,
}

pub const DIAGRAM_HELP: &str = "\
Examples:
  procession run examples/two_phase_commit.toml --events run.jsonl
  procession diagram run.jsonl                      # Mermaid, to stdout
  procession diagram run.jsonl --format svg -o run.svg

Arrows: every routed message (labelled with what was routed) and every
request procession made of a child (ctl requests, stops, kills). Notes:
spawns, readiness, exits, restarts, violations, and each step passed or
failed with its label. Text is cut at 60 characters; past 500 messages the
rest is elided, with a note saying how many.

Exit status: 0 drawn, 2 the events file is missing, empty or not JSON.";

/// A white outline under arrow labels: legible where they cross a lifeline.
const HALO: &str = r#"stroke="white" stroke-width="4" paint-order="stroke""#;

/// Longest text on an arrow or in a note.
const MAX_TEXT: usize = 60;
/// Messages drawn before the rest is elided.
const MAX_MESSAGES: usize = 500;

/// Draws the diagram; the exit status.
pub fn diagram(args: DiagramArgs) -> u8 {
    let events = match read(&args.events) {
        Ok(events) => events,
        Err(e) => {
            errln!("{}: {e}", args.events.display());
            return 2;
        }
    };
    let drawing = Drawing::of(&events);
    let text = match args.format {
        Format::Mermaid => drawing.mermaid(),
        Format::Svg => drawing.svg(),
    };
    match &args.output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, text) {
                errln!("{}: {e}", path.display());
                return 2;
            }
        }
        None => out!("{text}"),
    }
    0
}

/// The events of a file; a last line without its newline that is not
/// JSON is a write in progress, and left out.
fn read(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&text);
    let torn = !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(event) if event.get("event").is_some_and(Value::is_string) => events.push(event),
            Ok(_) => return Err(format!("line {}: not an event (no \"event\" field)", i + 1)),
            Err(_) if torn && i + 1 == lines.len() => {}
            Err(e) => return Err(format!("line {}: not JSON: {e}", i + 1)),
        }
    }
    if events.is_empty() {
        return Err("no events in it".into());
    }
    Ok(events)
}

/// How a note stands out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tone {
    Plain,
    Passed,
    Failed,
}

#[derive(Debug)]
enum Item {
    Arrow {
        from: usize,
        to: usize,
        text: String,
    },
    Note {
        over: usize,
        text: String,
        tone: Tone,
    },
    /// A note across two lifelines (a violation between them).
    Across {
        from: usize,
        to: usize,
        text: String,
        tone: Tone,
    },
}

/// What will be drawn: lifelines (0 is procession) and items in order.
struct Drawing {
    lifelines: Vec<String>,
    items: Vec<Item>,
    /// Messages left out past [`MAX_MESSAGES`].
    elided: usize,
}

impl Drawing {
    fn of(events: &[Value]) -> Drawing {
        let mut d = Drawing {
            lifelines: vec!["procession".into()],
            items: Vec::new(),
            elided: 0,
        };
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut last_output: HashMap<usize, (bool, String)> = HashMap::new();
        let mut messages = 0;
        for event in events {
            let kind = event["event"].as_str().unwrap_or_default();
            let mut lifeline = |d: &mut Drawing, name: &str| -> usize {
                *index.entry(name.to_string()).or_insert_with(|| {
                    d.lifelines.push(name.to_string());
                    d.lifelines.len() - 1
                })
            };
            let child = event["child"].as_str().map(|c| lifeline(&mut d, c));
            let s = |key: &str| event[key].as_str().unwrap_or_default().to_string();
            let n = |key: &str| event[key].as_u64().unwrap_or_default();
            let mut items = Vec::new();
            let note = |over, text: String, tone| Item::Note { over, text, tone };
            match (kind, child) {
                // What a route carries: the sender's last stdout frame (or
                // stderr's, for a child that printed nothing on stdout).
                ("output", Some(c)) => {
                    let stdout = event["stream"] != "stderr";
                    let slot = last_output.entry(c).or_insert((false, String::new()));
                    if stdout || !slot.0 {
                        *slot = (stdout, frame_text(event));
                    }
                }
                ("routed", _) => {
                    let from = lifeline(&mut d, &s("from"));
                    let to = lifeline(&mut d, &s("to"));
                    let text = last_output
                        .get(&from)
                        .map(|o| o.1.clone())
                        .unwrap_or_default();
                    items.push(Item::Arrow { from, to, text });
                }
                ("spawned", Some(c)) => {
                    let text = match n("attempt") {
                        0 | 1 => format!("spawned (pid {})", n("pid")),
                        a => format!("spawned again (pid {}, attempt {a})", n("pid")),
                    };
                    items.push(note(c, text, Tone::Plain));
                }
                ("spawn_failed", Some(c)) => items.push(note(
                    c,
                    format!("cannot start: {}", s("error")),
                    Tone::Failed,
                )),
                ("ready", Some(c)) => items.push(note(c, "ready".into(), Tone::Plain)),
                ("not_started", Some(c)) => items.push(note(
                    c,
                    format!("not started: {}", s("reason")),
                    Tone::Failed,
                )),
                ("exited", Some(c)) => {
                    let how = match (event["code"].as_i64(), event["signal"].as_str()) {
                        (Some(code), _) => format!("exit code {code}"),
                        (None, Some(sig)) => format!("signal {sig}"),
                        _ => "unknown status".into(),
                    };
                    if event["requested"] == true {
                        let ask = if event["signal"] == "KILL" {
                            "kill"
                        } else {
                            "stop"
                        };
                        items.push(Item::Arrow {
                            from: 0,
                            to: c,
                            text: ask.into(),
                        });
                    }
                    let failed = event["requested"] != true && event["code"] != 0;
                    let tone = if failed { Tone::Failed } else { Tone::Plain };
                    items.push(note(c, format!("exited ({how})"), tone));
                }
                ("restarting", Some(c)) => items.push(note(
                    c,
                    format!(
                        "restarting (attempt {}, in {} ms)",
                        n("attempt"),
                        n("delay_ms")
                    ),
                    Tone::Plain,
                )),
                ("gave_up", Some(c)) => items.push(note(
                    c,
                    format!("gave up after {} restarts", n("restarts")),
                    Tone::Failed,
                )),
                ("unhealthy", Some(c)) => {
                    items.push(note(c, format!("unhealthy: {}", s("reason")), Tone::Failed))
                }
                ("violation", _) => {
                    let from = lifeline(&mut d, &s("from"));
                    let to = lifeline(&mut d, &s("to"));
                    items.push(Item::Across {
                        from,
                        to,
                        text: format!("violation: {}", s("reason")),
                        tone: Tone::Failed,
                    });
                }
                ("step_passed", _) => items.push(note(0, step_text(event, "passed"), Tone::Passed)),
                ("step_failed", _) => {
                    let text = format!("{}: {}", step_text(event, "FAILED"), s("reason"));
                    items.push(note(0, text, Tone::Failed));
                }
                ("control", Some(c)) => items.push(Item::Arrow {
                    from: 0,
                    to: c,
                    text: format!("ctl {}", s("op")),
                }),
                ("control", None) => items.push(note(0, format!("ctl {}", s("op")), Tone::Plain)),
                ("shutdown", _) => {
                    items.push(note(0, format!("shutdown: {}", s("reason")), Tone::Plain))
                }
                ("finished", _) => {
                    let (text, tone) = match event["passed"] == true {
                        true => ("finished: passed", Tone::Passed),
                        false => ("finished: failed", Tone::Failed),
                    };
                    items.push(note(0, text.into(), tone));
                }
                _ => {}
            }
            // Past the limit, messages and children's notes are left out;
            // steps and the end are always drawn.
            let about_run = child.is_none() && !matches!(kind, "routed" | "violation");
            for item in items {
                if matches!(item, Item::Arrow { .. }) {
                    messages += 1;
                }
                if messages <= MAX_MESSAGES || about_run {
                    d.items.push(item);
                } else {
                    d.elided += usize::from(matches!(item, Item::Arrow { .. }));
                }
            }
        }
        if d.elided > 0 {
            // Where the elision began: after the last message drawn.
            let at = d
                .items
                .iter()
                .rposition(|i| matches!(i, Item::Arrow { .. }))
                .map_or(0, |i| i + 1);
            let text = format!("… {} more messages elided", d.elided);
            let note = Item::Note {
                over: 0,
                text,
                tone: Tone::Plain,
            };
            d.items.insert(at, note);
        }
        for name in &mut d.lifelines {
            *name = cut(name);
        }
        for item in &mut d.items {
            let (Item::Arrow { text, .. } | Item::Note { text, .. } | Item::Across { text, .. }) =
                item;
            *text = cut(text);
        }
        d
    }

    fn mermaid(&self) -> String {
        let mut out = String::from("sequenceDiagram\n");
        for (i, name) in self.lifelines.iter().enumerate() {
            let _ = writeln!(out, "    participant p{i} as {}", mermaid_text(name));
        }
        for item in &self.items {
            match item {
                Item::Arrow { from, to, text } => {
                    let _ = writeln!(out, "    p{from}->>p{to}: {}", mermaid_text(text));
                }
                Item::Note { over, text, tone } => {
                    let note = format!("Note over p{over}: {}", mermaid_text(text));
                    out.push_str(&mermaid_tinted(&note, *tone));
                }
                Item::Across {
                    from,
                    to,
                    text,
                    tone,
                } => {
                    let note = format!("Note over p{from},p{to}: {}", mermaid_text(text));
                    out.push_str(&mermaid_tinted(&note, *tone));
                }
            }
        }
        out
    }

    fn svg(&self) -> String {
        const COL: f64 = 220.0;
        const ROW: f64 = 30.0;
        const TOP: f64 = 60.0;
        const MARGIN: f64 = 20.0;
        const CHAR: f64 = 7.2; // 12px monospace
        let column = |i: usize| COL / 2.0 + i as f64 * COL;
        // How far each item's text reaches either side of where it is
        // centred: the picture is shifted and sized so that all fits.
        let (mut left, mut right) = (0.0f64, self.lifelines.len() as f64 * COL);
        for item in &self.items {
            let (at, text) = match item {
                Item::Note { over, text, .. } => (column(*over), text),
                Item::Arrow { from, to, text } => ((column(*from) + column(*to)) / 2.0, text),
                Item::Across { from, to, text, .. } => ((column(*from) + column(*to)) / 2.0, text),
            };
            let half = text.chars().count() as f64 * CHAR / 2.0 + 10.0;
            left = left.min(at - half);
            right = right.max(at + half);
        }
        let shift = MARGIN - left;
        let x = |i: usize| shift + column(i);
        let right = right + shift + MARGIN;
        let rows = self.items.len() as f64;
        let bottom = TOP + (rows + 1.0) * ROW;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{right:.0}" height="{h:.0}" viewBox="0 0 {right:.0} {h:.0}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="12">"##,
            h = bottom + 50.0
        );
        svg.push_str(concat!(
            r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse">"##,
            r##"<path d="M 0 0 L 10 5 L 0 10 z" fill="#333"/></marker></defs>"##,
            "\n",
            r##"<rect width="100%" height="100%" fill="white"/>"##,
            "\n"
        ));
        for (i, name) in self.lifelines.iter().enumerate() {
            let cx = x(i);
            let _ = writeln!(
                svg,
                r##"<line x1="{cx}" y1="{TOP}" x2="{cx}" y2="{bottom}" stroke="#999" stroke-dasharray="4 4"/>"##
            );
            for y in [MARGIN, bottom] {
                let _ = writeln!(
                    svg,
                    r##"<rect x="{:.1}" y="{y}" width="{:.1}" height="28" rx="4" fill="#eef2ff" stroke="#4455aa"/><text x="{cx}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text>"##,
                    cx - COL / 2.0 + 15.0,
                    COL - 30.0,
                    y + 18.0,
                    xml(&cut_to(name, 26))
                );
            }
        }
        for (row, item) in self.items.iter().enumerate() {
            let y = TOP + (row as f64 + 1.0) * ROW;
            match item {
                Item::Arrow { from, to, text } if from == to => {
                    let cx = x(*from);
                    let _ = writeln!(
                        svg,
                        r##"<path d="M {cx} {:.1} h 30 v 12 h -30" fill="none" stroke="#333" marker-end="url(#arrow)"/><text x="{:.1}" y="{:.1}">{}</text>"##,
                        y - 6.0,
                        cx + 36.0,
                        y + 4.0,
                        xml(text)
                    );
                }
                Item::Arrow { from, to, text } => {
                    let (x1, x2) = (x(*from), x(*to));
                    let _ = writeln!(
                        svg,
                        r##"<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="#333" marker-end="url(#arrow)"/><text x="{:.1}" y="{:.1}" text-anchor="middle" {HALO}>{}</text>"##,
                        (x1 + x2) / 2.0,
                        y - 5.0,
                        xml(text)
                    );
                }
                Item::Note { over, text, tone } => {
                    let w = (text.chars().count() as f64 * CHAR + 16.0).max(80.0);
                    svg.push_str(&svg_note(x(*over) - w / 2.0, w, y, text, *tone));
                }
                Item::Across {
                    from,
                    to,
                    text,
                    tone,
                } => {
                    let (a, b) = (x(*from).min(x(*to)), x(*from).max(x(*to)));
                    let w = (b - a + 40.0).max(text.chars().count() as f64 * CHAR + 16.0);
                    let left = (a + b) / 2.0 - w / 2.0;
                    svg.push_str(&svg_note(left, w, y, text, *tone));
                }
            }
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn svg_note(left: f64, w: f64, y: f64, text: &str, tone: Tone) -> String {
    let (fill, stroke) = match tone {
        Tone::Plain => ("#fffbe6", "#c8b560"),
        Tone::Passed => ("#e3f6e3", "#3c8d3c"),
        Tone::Failed => ("#fde2e2", "#c0392b"),
    };
    format!(
        r##"<rect x="{left:.1}" y="{:.1}" width="{w:.1}" height="22" rx="3" fill="{fill}" stroke="{stroke}"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>
"##,
        y - 15.0,
        left + w / 2.0,
        y,
        xml(text)
    )
}

/// A step's label (or its number) and how it went.
fn step_text(event: &Value, how: &str) -> String {
    let step = event["step"].as_u64().unwrap_or_default();
    match event["label"].as_str() {
        Some(label) => format!("step {step} {how}: {label}"),
        None => format!("step {step} {how}"),
    }
}

/// The text of an `output` event's frame.
fn frame_text(event: &Value) -> String {
    match (&event["line"], &event["json"], &event["bytes"]) {
        (Value::String(line), _, _) => line.clone(),
        (_, Value::Null, Value::Null) => String::new(),
        (_, Value::Null, bytes) => bytes.to_string(),
        (_, json, _) => json.to_string(),
    }
}

/// At most [`MAX_TEXT`] characters, on one line.
fn cut(text: &str) -> String {
    cut_to(text, MAX_TEXT)
}

fn cut_to(text: &str, max: usize) -> String {
    // One line, and only characters XML allows.
    let one_line: String = text
        .chars()
        .map(|c| match c {
            c if c.is_control() => ' ',
            '\u{FFFE}' | '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut short: String = one_line.chars().take(max - 1).collect();
    short.push('…');
    short
}

/// Text Mermaid shows as it is: its statement and markup characters as
/// entity codes.
fn mermaid_text(text: &str) -> String {
    escape(text, |c| match c {
        '#' => Some("#35;"),
        ';' => Some("#59;"),
        '<' => Some("#lt;"),
        '>' => Some("#gt;"),
        '%' => Some("#37;"),
        _ => None,
    })
}

fn escape(text: &str, code: impl Fn(char) -> Option<&'static str>) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match code(c) {
            Some(code) => out.push_str(code),
            None => out.push(c),
        }
    }
    out
}

/// A note in a coloured band for steps (green passed, red failed).
fn mermaid_tinted(note: &str, tone: Tone) -> String {
    match tone {
        Tone::Plain => format!("    {note}\n"),
        Tone::Passed => format!("    rect rgb(227, 246, 227)\n    {note}\n    end\n"),
        Tone::Failed => format!("    rect rgb(253, 226, 226)\n    {note}\n    end\n"),
    }
}

fn xml(text: &str) -> String {
    escape(text, |c| match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '"' => Some("&quot;"),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_60_characters_on_one_line() {
        let long = "x".repeat(100);
        assert_eq!(cut(&long).chars().count(), 60);
        assert!(cut(&long).ends_with('…'));
        assert_eq!(cut("a\nb"), "a b");
    }

    #[test]
    fn mermaid_and_xml_characters_are_escaped() {
        assert_eq!(mermaid_text("a;b#c<d>"), "a#59;b#35;c#lt;d#gt;");
        assert_eq!(xml(r#"<a & "b">"#), "&lt;a &amp; &quot;b&quot;&gt;");
    }

    #[test]
    fn past_500_messages_the_rest_is_elided_with_a_count() {
        let mut events = vec![
            serde_json::json!({"t_ms": 0, "child": "a", "event": "spawned", "pid": 1, "attempt": 1}),
        ];
        for i in 0..700 {
            events.push(serde_json::json!({"t_ms": i, "child": "a", "event": "output", "stream": "stdout", "line": format!("m{i}")}));
            events.push(serde_json::json!({"t_ms": i, "child": "a", "event": "routed", "from": "a", "to": "b"}));
        }
        events.push(serde_json::json!({"t_ms": 800, "event": "finished", "passed": true}));
        let d = Drawing::of(&events);
        let arrows = d
            .items
            .iter()
            .filter(|i| matches!(i, Item::Arrow { .. }))
            .count();
        assert_eq!(arrows, 500);
        assert_eq!(d.elided, 200);
        // The count where the elision began; the run's end still drawn.
        let notes: Vec<&str> = d.items[d.items.len() - 2..]
            .iter()
            .filter_map(|i| match i {
                Item::Note { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(notes, ["… 200 more messages elided", "finished: passed"]);
    }
}
