//! A multi-party protocol simulation: two-phase commit between a coordinator
//! and two participants (small Python programs in `examples/two_phase_commit/`)
//! that address each other with JSON envelopes. procession checks that the
//! messages follow the protocol's order; with `order = hold`, a message that
//! comes early (say p2's vote before p1's) waits for its step.
//!
//! Run it: `cargo run --example two_phase_commit` (needs python3).
//! Add `-- strict` to see how a strict run reports the same race.

use std::time::Duration;

use actix::prelude::*;
use procession::protocol::{Order, Protocol, Step, StepOutcome, Unlisted};
use procession::Director;
use procession::{ChildSpec, Event, EventFilter, EventKind, Framing};
use serde_json::json;

/// Prints the protocol's progress as a timeline.
struct Timeline;

impl Actor for Timeline {
    type Context = Context<Self>;
}

impl Handler<Event> for Timeline {
    type Result = ();

    fn handle(&mut self, e: Event, _: &mut Context<Self>) {
        let line = match &e.kind {
            EventKind::Routed { from, to } => format!("{from} -> {to}"),
            EventKind::StepPassed { step, label, .. } => {
                format!("step {step} passed: {}", label.as_deref().unwrap_or(""))
            }
            EventKind::StepFailed { step, reason, .. } => format!("step {step} FAILED: {reason}"),
            EventKind::Violation { reason, .. } => format!("violation: {reason}"),
            EventKind::Output {
                stream: procession::Stream::Stderr,
                frame,
                ..
            } => {
                format!(
                    "{} says: {}",
                    e.child.as_deref().unwrap_or("?"),
                    frame.as_line().unwrap_or("")
                )
            }
            _ => return,
        };
        println!("{:>5} ms  {line}", e.t_ms);
    }
}

fn child(name: &str, script: &str, args: &[&str]) -> ChildSpec {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/two_phase_commit/");
    let mut cmd = vec!["python3".to_string(), "-u".into(), format!("{dir}{script}")];
    cmd.extend(args.iter().map(|a| a.to_string()));
    ChildSpec::new(name, cmd).framing(Framing::Json)
}

fn routed(from: &str, to: &str, message: serde_json::Value, label: &str) -> Step {
    Step::expect_json(from, message)
        .routed_to(to)
        .within(Duration::from_secs(5))
        .label(label)
}

#[actix::main]
async fn main() {
    let order = match std::env::args().nth(1).as_deref() {
        Some("strict") => Order::Strict,
        _ => Order::Hold,
    };
    let director = Director::start();
    director
        .subscribe(Timeline.start().recipient(), EventFilter::all())
        .await
        .unwrap();

    let steps = vec![
        Step::send_json("coordinator", json!({"cmd": "begin", "tx": "t1"})).label("begin t1"),
        routed(
            "coordinator",
            "p1",
            json!({"type": "prepare", "tx": "t1"}),
            "prepare p1",
        ),
        routed(
            "coordinator",
            "p2",
            json!({"type": "prepare", "tx": "t1"}),
            "prepare p2",
        ),
        routed(
            "p1",
            "coordinator",
            json!({"type": "vote", "vote": "yes"}),
            "p1 votes yes",
        ),
        routed(
            "p2",
            "coordinator",
            json!({"type": "vote", "vote": "yes"}),
            "p2 votes yes",
        ),
        routed("coordinator", "p1", json!({"type": "commit"}), "commit p1"),
        routed("coordinator", "p2", json!({"type": "commit"}), "commit p2"),
        routed("p1", "coordinator", json!({"type": "ack"}), "p1 acks"),
        routed("p2", "coordinator", json!({"type": "ack"}), "p2 acks"),
        Step::expect_json(
            "coordinator",
            json!({"type": "done", "outcome": "${outcome}"}),
        )
        .label("done"),
    ];
    let report = director
        .run(
            [
                child("coordinator", "coordinator.py", &["p1", "p2"]),
                child("p1", "participant.py", &["yes"]),
                child("p2", "participant.py", &["yes"]),
            ],
            [],
            Protocol {
                steps,
                order,
                unlisted: Unlisted::Reject,
                ..Protocol::default()
            },
        )
        .await
        .expect("a valid protocol");
    director.shutdown("protocol over").await;

    println!();
    for step in &report.steps {
        let outcome = match &step.outcome {
            StepOutcome::Passed { elapsed } => format!("passed in {elapsed:.1?}"),
            StepOutcome::Failed { .. } => "FAILED".to_string(),
            StepOutcome::NotRun => "not run".to_string(),
        };
        println!(
            "{:>2}. {:<14} {outcome}",
            step.step,
            step.label.as_deref().unwrap_or(step.kind)
        );
    }
    println!(
        "\n{}",
        if report.passed {
            "two-phase commit: protocol followed"
        } else {
            "protocol broken"
        }
    );
    std::process::exit(if report.passed { 0 } else { 1 });
}
