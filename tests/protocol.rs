//! Protocols against real processes: dialogues, diagnostics, expect(1)
//! consumption, guarded routing through envelopes, captures, expect_exit.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use procession::protocol::{Order, Protocol, ProtocolReport, Step, StepOutcome, Unlisted};
use procession::Director;
use procession::{EventFilter, EventKind, Frame, Framing};
use serde_json::json;

fn protocol(steps: Vec<Step>) -> Protocol {
    Protocol {
        steps,
        ..Protocol::default()
    }
}

fn failure(report: &ProtocolReport) -> (usize, String) {
    let step = report.failure().expect("a failed step");
    match &step.outcome {
        StepOutcome::Failed { reason, .. } => (step.step, reason.clone()),
        _ => unreachable!(),
    }
}

#[actix_rt::test]
async fn a_dialogue_with_the_echo_fixture_passes() {
    let director = Director::start();
    let report = director
        .run(
            [fixture_spec("echo", &["echo"])],
            [],
            protocol(vec![
                Step::send_line("echo", "hello"),
                Step::expect_line("echo", "^hello$").label("greeted"),
                Step::send_line("echo", "2+3"),
                Step::expect_line("echo", r"^2\+3$"),
                Step::close("echo"),
                Step::expect_exit_code("echo", 0),
            ]),
        )
        .await
        .unwrap();
    assert!(report.passed, "{report:#?}");
    assert_eq!(report.steps.len(), 6);
    assert_eq!(report.steps[1].label.as_deref(), Some("greeted"));
    assert!(report
        .steps
        .iter()
        .all(|s| matches!(s.outcome, StepOutcome::Passed { .. })));
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn a_wrong_expectation_fails_and_shows_the_actual_last_lines() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    let report = director
        .run(
            [
                fixture_spec("echo", &["echo"]),
                fixture_spec("quiet", &["sleep", "--quiet"]),
            ],
            [],
            protocol(vec![
                Step::send_line("echo", "hello"),
                Step::send_line("echo", "world"),
                Step::expect_line("echo", "^goodbye$").within(Duration::from_millis(300)),
                Step::send_line("echo", "never sent"),
            ]),
        )
        .await
        .unwrap();
    assert!(!report.passed);
    let (step, reason) = failure(&report);
    assert_eq!(step, 3);
    assert!(
        reason.contains("for a line matching `^goodbye$` from `echo`"),
        "{reason}"
    );
    assert!(
        reason.contains("echo: hello") && reason.contains("echo: world"),
        "{reason}"
    );
    assert!(reason.contains("quiet: (none)"), "{reason}");
    assert!(matches!(report.steps[3].outcome, StepOutcome::NotRun));
    // The same diagnostic is published.
    loop {
        let e = tokio::time::timeout(PATIENCE, events.recv())
            .await
            .unwrap()
            .unwrap();
        if let EventKind::StepFailed { step, reason, .. } = e.kind {
            assert_eq!(step, 3);
            assert!(reason.contains("echo: world"));
            break;
        }
    }
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn a_frame_printed_just_before_its_expect_became_current_is_matched() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    let report = director
        .run(
            [fixture_spec("early", &["say", "first", "token 42", "last"])],
            [],
            protocol(vec![
                // `early` prints everything (and exits) while this waits.
                Step::expect_exit_code("early", 0),
                Step::expect_line("early", r"^token (?P<n>\d+)$"),
                Step::expect_line("early", "^last$"),
            ]),
        )
        .await
        .unwrap();
    assert!(report.passed, "{report:#?}");
    // The lines were all printed before step 2 became current.
    let mut order = Vec::new();
    while order.len() < 2 {
        let e = tokio::time::timeout(PATIENCE, events.recv())
            .await
            .unwrap()
            .unwrap();
        match e.kind {
            EventKind::Output {
                frame: Frame::Line(l),
                ..
            } if l == "token 42" => order.push("printed"),
            EventKind::StepPassed { step: 2, .. } => order.push("step 2 passed"),
            _ => {}
        }
    }
    assert_eq!(order, ["printed", "step 2 passed"]);
    director.shutdown("test over").await;
}

/// a and c are JSON children that talk to b through envelopes: c sends its
/// `ack` at once, a sends `syn` only when step 2 tells it to. b echoes
/// what it receives.
async fn three_party(order: Order) -> (Director, ProtocolReport, Vec<String>) {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    let report = director
        .run(
            [
                fixture_spec("b", &["echo"]),
                fixture_spec("a", &["echo"]).framing(Framing::Json),
                fixture_spec("c", &["say", r#"{"to":"b","type":"ack"}"#]).framing(Framing::Json),
            ],
            [],
            Protocol {
                steps: vec![
                    Step::wait(Duration::from_millis(200)),
                    Step::send_json("a", json!({"to": "b", "type": "syn"})),
                    Step::expect_json("a", json!({"type": "syn"})).routed_to("b"),
                    Step::expect_json("c", json!({"type": "ack"})).routed_to("b"),
                    Step::expect_line("b", r#""type":"syn""#),
                    Step::expect_line("b", r#""type":"ack""#),
                ],
                order,
                unlisted: Unlisted::Pass,
                ..Protocol::default()
            },
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        match e.kind {
            EventKind::Output {
                frame: Frame::Line(l),
                ..
            } if e.child.as_deref() == Some("b") => seen.push(format!("b got {l}")),
            EventKind::Violation { reason, .. } => seen.push(format!("violation: {reason}")),
            EventKind::StepPassed { step, .. } => seen.push(format!("step {step} passed")),
            _ => {}
        }
    }
    (director, report, seen)
}

#[actix_rt::test]
async fn strict_order_fails_a_message_sent_out_of_order() {
    let (director, report, seen) = three_party(Order::Strict).await;
    assert!(!report.passed);
    let (step, reason) = failure(&report);
    // c sends at once, so step 1 (or, on a very slow machine, 2 or 3) is current.
    assert!(step < 4, "{step}");
    assert!(
        reason.contains(&format!(
            "message from `c` to `b` matches step 4 but step {step} is current"
        )),
        "{reason}"
    );
    assert!(seen.iter().any(|s| s.starts_with("violation")), "{seen:?}");
    assert!(
        !seen.iter().any(|s| s.contains("ack")),
        "b never got the ack: {seen:?}"
    );
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn hold_order_delivers_the_held_message_after_the_earlier_step() {
    let (director, report, seen) = three_party(Order::Hold).await;
    assert!(report.passed, "{report:#?}");
    let at = |needle: &str| {
        seen.iter()
            .position(|s| s.contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {seen:?}"))
    };
    // b receives c's ack (with "from" added) only after step 3.
    assert!(at("step 3 passed") < at(r#""from":"c""#));
    assert!(at(r#""type":"syn""#) < at(r#""type":"ack""#));
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn a_captured_session_id_is_sent_back_later() {
    let director = Director::start();
    let report = director
        .run(
            [
                fixture_spec("server", &["echo"]).framing(Framing::Json),
                fixture_spec("client", &["echo"]),
            ],
            [],
            protocol(vec![
                Step::send_json(
                    "server",
                    json!({"type": "welcome", "session": "s-42", "ttl": 30}),
                ),
                Step::expect_json(
                    "server",
                    json!({"type": "welcome", "session": "${sid}", "ttl": "${ttl}"}),
                ),
                Step::send_line("client", "resume ${sid} for ${ttl}s"),
                Step::expect_line("client", r"^resume (?P<again>s-\d+) for 30s$"),
                Step::send_json("server", json!({"session": "${again}", "ttl": "${ttl}"})),
                Step::expect_json("server", json!({"session": "s-42", "ttl": 30})),
            ]),
        )
        .await
        .unwrap();
    assert!(report.passed, "{report:#?}");
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn expect_exit_passes_from_a_remembered_exit_and_fails_on_another() {
    let director = Director::start();
    let report = director
        .run(
            [fixture_spec("quitter", &["exit", "3"])],
            [],
            protocol(vec![
                Step::wait(Duration::from_millis(200)),
                Step::expect_exit_code("quitter", 3),
            ]),
        )
        .await
        .unwrap();
    assert!(report.passed, "{report:#?}");
    match report.steps[1].outcome {
        StepOutcome::Passed { elapsed } => {
            assert!(elapsed < Duration::from_millis(100), "{elapsed:?}")
        }
        ref other => panic!("{other:?}"),
    }
    director.shutdown("test over").await;

    let director = Director::start();
    let report = director
        .run(
            [fixture_spec("quitter", &["exit", "3"])],
            [],
            protocol(vec![Step::expect_exit_code("quitter", 0)]),
        )
        .await
        .unwrap();
    let (_, reason) = failure(&report);
    assert!(
        reason.starts_with("`quitter` exited with exit code 3, expected exit code 0"),
        "{reason}"
    );
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn an_unexpected_failing_exit_fails_the_run() {
    let director = Director::start();
    let report = director
        .run(
            [
                fixture_spec("crash", &["exit", "1"]),
                fixture_spec("echo", &["echo"]),
            ],
            [],
            protocol(vec![Step::wait(Duration::from_secs(20))]),
        )
        .await
        .unwrap();
    let (_, reason) = failure(&report);
    assert!(
        reason.starts_with("child `crash` exited with exit code 1 and no expect_exit step says so"),
        "{reason}"
    );
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn kill_stop_and_start_steps_drive_children() {
    let director = Director::start();
    let report = director
        .run(
            [fixture_spec("svc", &["echo-or-die"])
                .ready(procession::Ready::Line("^ready$".into()))],
            [],
            protocol(vec![
                Step::expect_line("svc", "^ready$"),
                Step::kill("svc", procession::Signal::Term),
                Step::expect_exit_signal("svc", procession::Signal::Term),
                Step::start("svc"),
                Step::send_line("svc", "back"),
                Step::expect_line("svc", "^back$"),
                Step::stop("svc"),
                Step::expect_exit_signal("svc", procession::Signal::Term),
            ]),
        )
        .await
        .unwrap();
    assert!(report.passed, "{report:#?}");
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn an_invalid_protocol_is_refused_before_anything_starts() {
    let director = Director::start();
    let err = director
        .run(
            [fixture_spec("echo", &["echo"])],
            [],
            protocol(vec![Step::send_line("ecko", "${nothing}")]),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("step 1: `to` names `ecko`, which is not a child (did you mean `echo`?)"),
        "{text}"
    );
    assert!(
        text.contains("step 1: `${nothing}` is not captured by any earlier step"),
        "{text}"
    );
    assert!(director.children().await.unwrap().is_empty());
    director.shutdown("test over").await;
}

// --- Order of writes (DESIGN.md "Order of writes", invariant 6) ---

/// Regression: a routed frame that let step N pass reached its receiver after
/// what step N+1 sent it (the route's write was spawned, the send was not).
#[actix_rt::test]
async fn a_routed_frame_that_passed_a_step_is_written_before_the_next_send() {
    let director = Director::start();
    let report = director
        .run(
            [
                fixture_spec("a", &["say", "x"]),
                fixture_spec("b", &["echo"]),
            ],
            [procession::Route::new("a", "b")],
            protocol(vec![
                Step::expect_line("a", "^x$").routed_to("b"),
                Step::send_line("b", "y"),
                Step::expect_line("b", "^x$"),
                Step::expect_line("b", "^y$").within(Duration::from_secs(5)),
            ]),
        )
        .await
        .unwrap();
    assert!(report.passed, "b must read x, then y: {report:#?}");
    director.shutdown("test over").await;
}

/// Regression: under `hold`, a released message was written after what the
/// following step sent.
#[actix_rt::test]
async fn under_hold_a_released_message_is_written_before_the_next_send() {
    let director = Director::start();
    let report = director
        .run(
            [
                fixture_spec("a", &["say", "x"]),
                fixture_spec("b", &["echo"]),
            ],
            [procession::Route::new("a", "b")],
            Protocol {
                steps: vec![
                    // Current while `a` prints: its routed `x` is held for step 2.
                    Step::expect_line("a", "^x$"),
                    Step::expect_line("a", "^x$").routed_to("b"),
                    Step::send_line("b", "y"),
                    Step::expect_line("b", "^x$"),
                    Step::expect_line("b", "^y$").within(Duration::from_secs(5)),
                ],
                order: Order::Hold,
                unlisted: Unlisted::Pass,
                ..Protocol::default()
            },
        )
        .await
        .unwrap();
    assert!(report.passed, "b must read x, then y: {report:#?}");
    director.shutdown("test over").await;
}

/// Regression: a `close` step overtook the routed frames queued before it,
/// so the receiver counted fewer lines than were routed to it.
#[actix_rt::test]
async fn close_comes_after_everything_routed_before_it() {
    let director = Director::start();
    let report = director
        .run(
            [
                fixture_spec("a", &["lines", "500"]),
                fixture_spec("b", &["count"]).stdin_queue(1),
            ],
            [procession::Route::new("a", "b")],
            protocol(vec![
                Step::expect_line("a", "^line 500$"),
                Step::close("b"),
                Step::expect_line("b", "^count 500$").within(Duration::from_secs(5)),
            ]),
        )
        .await
        .unwrap();
    assert!(report.passed, "b must count every routed line: {report:#?}");
    director.shutdown("test over").await;
}

/// Regression: a `send` to a child that never reads blocked the run forever
/// once its stdin queue was full; it now fails after its `within`.
#[actix_rt::test]
async fn a_send_to_a_child_that_never_reads_fails_after_its_within() {
    let director = Director::start();
    let big = "x".repeat(4 << 20);
    let send = || Step::send_line("deaf", big.as_str()).within(Duration::from_millis(300));
    let run = director.run(
        [fixture_spec("deaf", &["sleep"]).stdin_queue(1)],
        [],
        protocol(vec![
            Step::expect_line("deaf", "^ready$"), // it runs (and never reads)
            send(),
            send(),
            send(),
            send(),
            send(),
        ]),
    );
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the run ends instead of blocking")
        .unwrap();
    let (step, reason) = failure(&report);
    assert!(step > 2, "the first sends fit: {report:#?}");
    assert!(
        reason.starts_with("child `deaf` did not read its stdin: its queue stayed full for"),
        "{reason}"
    );
    director.shutdown("test over").await;
}

/// Review: with the protocol started before its children were spawned, a
/// `close` among the first steps found nothing to close and passed, so a
/// program that answers at end of input never answered.
#[actix_rt::test]
async fn the_first_steps_send_to_and_close_a_running_child() {
    let director = Director::start();
    let report = director
        .run(
            [fixture_spec("counter", &["count"])],
            [],
            protocol(vec![
                Step::send_line("counter", "a"),
                Step::send_line("counter", "b"),
                Step::close("counter"),
                Step::expect_line("counter", "^count 2$").within(Duration::from_secs(5)),
                Step::expect_exit_code("counter", 0),
            ]),
        )
        .await
        .unwrap();
    assert!(report.passed, "{report:#?}");
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn wait_protocol_gives_the_report_of_the_protocol_a_plan_started() {
    let director = Director::start();
    assert!(
        director.wait_protocol().await.unwrap().is_none(),
        "none started yet"
    );
    let plan = procession::Plan::check(
        [fixture_spec("echo", &["echo"])],
        [],
        Some(protocol(vec![
            Step::send_line("echo", "hi"),
            Step::expect_line("echo", "^hi$").label("echoed"),
        ])),
    )
    .unwrap();
    director.launch_plan(plan).await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(20), director.wait_protocol())
        .await
        .expect("the protocol ends")
        .unwrap()
        .expect("a plan with steps started a protocol");
    assert!(report.passed, "{report:#?}");
    assert_eq!(report.steps[1].label.as_deref(), Some("echoed"));
    director.shutdown("test over").await;
}
