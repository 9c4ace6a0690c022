//! Protocols: ordered steps over many processes, expect(1)-style, and guards
//! on the order in which children may talk to each other.
//!
//! The step machine (`machine.rs`) is pure code, tested here without
//! processes; the director carries out its effects.

mod capture;
pub(crate) mod machine;
mod steps;

use std::time::Duration;

pub use machine::Taken;
pub(crate) use steps::default_max_visits;
pub use steps::{
    Action, Alternative, ExpectedExit, Order, Payload, Protocol, Step, Unlisted, DEFAULT_WITHIN,
};

/// How each step of a protocol went.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// 1-based.
    pub step: usize,
    /// Its label.
    pub label: Option<String>,
    /// Its action's key (`send`, `expect`, ...).
    pub kind: &'static str,
    /// What happened.
    pub outcome: StepOutcome,
}

/// What happened to a step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// It passed after this long (from when it became current).
    Passed {
        /// Time from becoming current to passing.
        elapsed: Duration,
    },
    /// It failed.
    Failed {
        /// What it waited for, and the recent unconsumed output of every child.
        reason: String,
        /// Time from becoming current to failing.
        elapsed: Duration,
    },
    /// The run ended before it.
    NotRun,
}

/// The result of a protocol run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolReport {
    /// Every step passed (and nothing else failed the run).
    pub passed: bool,
    /// Why the run failed: the failed step's reason, or a run-level one
    /// (a timeout, an unexpected exit) when the protocol has no steps.
    pub reason: Option<String>,
    /// Each step.
    pub steps: Vec<StepReport>,
    /// From the first step to the end.
    pub elapsed: Duration,
}

impl ProtocolReport {
    /// The failed step, if one failed.
    pub fn failure(&self) -> Option<&StepReport> {
        self.steps
            .iter()
            .find(|s| matches!(s.outcome, StepOutcome::Failed { .. }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use serde_json::json;

    use super::machine::{Effect, Machine, Taken, Verdict};
    use super::*;
    use crate::child::{Exit, ExitStatus, Stream};
    use crate::frame::Frame;

    fn names(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().map(|s| Arc::from(*s)).collect()
    }

    fn machine(steps: Vec<Step>, order: Order, unlisted: Unlisted, children: &[&str]) -> Machine {
        Machine::new(
            &Protocol {
                steps,
                order,
                unlisted,
                ..Protocol::default()
            },
            &names(children),
        )
        .unwrap()
    }

    fn kinds(fx: &[Effect]) -> Vec<String> {
        fx.iter()
            .map(|e| match e {
                Effect::Send { step, .. } => format!("send {step}"),
                Effect::Timer { step, .. } => format!("timer {step}"),
                Effect::Passed { step, .. } => format!("passed {step}"),
                Effect::Failed { step, .. } => format!("failed {}", step.unwrap_or(usize::MAX)),
                Effect::Done { passed } => format!("done {passed}"),
                Effect::Deliver { .. } => "deliver".into(),
                Effect::Violation { .. } => "violation".into(),
                Effect::Close { step, .. } => format!("close {step}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn exit(code: i32) -> Exit {
        Exit {
            status: ExitStatus::Code(code),
            requested: false,
            output_complete: true,
            runtime: Duration::ZERO,
        }
    }

    #[test]
    fn a_prompt_step_sees_only_prompts_and_a_line_step_only_lines() {
        let sh: Arc<str> = Arc::from("sh");
        let mut m = machine(
            vec![
                Step::expect_prompt("sh", "^Name: $"),
                Step::expect_line("sh", "^Name: $"),
            ],
            Order::Strict,
            Unlisted::Pass,
            &["sh"],
        );
        let t = Instant::now();
        m.start(t);
        // A complete line with the same text is not a prompt.
        let fx = m.on_output(&sh, Stream::Stdout, &Frame::line("Name: "), false, t);
        assert!(
            !kinds(&fx).contains(&"passed 0".to_string()),
            "{:?}",
            kinds(&fx)
        );
        let fx = m.on_output(&sh, Stream::Stdout, &Frame::line("Name: "), true, t);
        assert!(
            kinds(&fx).contains(&"passed 0".to_string()),
            "{:?}",
            kinds(&fx)
        );
        // And a prompt does not pass a line step.
        let fx = m.on_output(&sh, Stream::Stdout, &Frame::line("Name: "), true, t);
        assert!(
            !kinds(&fx).contains(&"passed 1".to_string()),
            "{:?}",
            kinds(&fx)
        );
        let fx = m.on_output(&sh, Stream::Stdout, &Frame::line("Name: "), false, t);
        assert!(
            kinds(&fx).contains(&"passed 1".to_string()),
            "{:?}",
            kinds(&fx)
        );
    }

    #[test]
    fn a_prompt_kept_from_before_the_step_is_found_by_it() {
        let sh: Arc<str> = Arc::from("sh");
        let mut m = machine(
            vec![
                Step::wait(Duration::from_secs(1)),
                Step::expect_prompt("sh", "\\? $"),
            ],
            Order::Strict,
            Unlisted::Pass,
            &["sh"],
        );
        let t = Instant::now();
        m.start(t);
        m.on_output(&sh, Stream::Stdout, &Frame::line("continue? "), false, t);
        m.on_output(&sh, Stream::Stdout, &Frame::line("continue? "), true, t);
        let fx = m.on_timeout(0, t + Duration::from_secs(1));
        assert!(
            kinds(&fx).contains(&"passed 1".to_string()),
            "{:?}",
            kinds(&fx)
        );
    }

    #[test]
    fn patterns_match_across_framings_and_capture_from_a_json_line() {
        let a: Arc<str> = Arc::from("a");
        let mut m = machine(
            vec![
                Step::expect_json("a", json!({"session": "${sid}"})),
                Step::expect_line("a", "^raw ok$"),
                Step::send_line("a", "resume ${sid}"),
            ],
            Order::Strict,
            Unlisted::Pass,
            &["a"],
        );
        let t = Instant::now();
        m.start(t);
        // A lines child printing JSON.
        let fx = m.on_output(
            &a,
            Stream::Stdout,
            &Frame::line(r#"{"session": "s-9"}"#),
            false,
            t,
        );
        assert!(
            kinds(&fx).contains(&"passed 0".to_string()),
            "{:?}",
            kinds(&fx)
        );
        // A bytes frame, read as text.
        let raw = Frame::Bytes(bytes::Bytes::from_static(b"raw ok"));
        let fx = m.on_output(&a, Stream::Stdout, &raw, false, t);
        let sent = fx.iter().find_map(|e| match e {
            Effect::Send { frame, .. } => Some(frame.clone()),
            _ => None,
        });
        assert_eq!(sent, Some(Frame::line("resume s-9")), "{:?}", kinds(&fx));
    }

    fn passed_with(fx: &[Effect]) -> Vec<(usize, Option<Taken>)> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Passed { step, outcome, .. } => Some((*step, *outcome)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_expect_with_alternatives_goes_on_where_the_match_says() {
        let ssh: Arc<str> = Arc::from("ssh");
        for (prompt, expected_send) in [("Password: ", "secret"), ("(yes/no)? ", "yes")] {
            let mut m = machine(
                vec![
                    Step::expect_any(
                        "ssh",
                        vec![
                            Alternative::prompt("Password: $").goto("password"),
                            Alternative::prompt("yes/no").goto("accept"),
                        ],
                    ),
                    Step::send_line("ssh", "yes").label("accept"),
                    Step::expect_prompt("ssh", "Password: $"),
                    Step::send_line("ssh", "secret").label("password"),
                ],
                Order::Strict,
                Unlisted::Pass,
                &["ssh"],
            );
            let t = Instant::now();
            m.start(t);
            let fx = m.on_output(&ssh, Stream::Stdout, &Frame::line(prompt), true, t);
            let sent = fx.iter().find_map(|e| match e {
                Effect::Send { frame, .. } => Some(frame.clone()),
                _ => None,
            });
            assert_eq!(sent, Some(Frame::line(expected_send)), "{prompt}");
            let taken = if prompt.starts_with("Pass") { 0 } else { 1 };
            assert_eq!(passed_with(&fx)[0], (0, Some(Taken::Alternative(taken))));
        }
    }

    #[test]
    fn on_timeout_and_on_exit_go_on_instead_of_failing() {
        let a: Arc<str> = Arc::from("a");
        let steps = || {
            vec![
                Step::expect_line("a", "^never$")
                    .on_timeout("late")
                    .on_exit("gone"),
                Step::wait(Duration::from_secs(1)).label("late"),
                Step::wait(Duration::from_secs(2)).label("gone"),
            ]
        };
        let t = Instant::now();
        let mut m = machine(steps(), Order::Strict, Unlisted::Pass, &["a"]);
        m.start(t);
        let fx = m.on_timeout(0, t + Duration::from_secs(10));
        assert_eq!(passed_with(&fx), [(0, Some(Taken::Timeout))]);
        assert!(
            kinds(&fx).contains(&"timer 1".to_string()),
            "{:?}",
            kinds(&fx)
        );

        let mut m = machine(steps(), Order::Strict, Unlisted::Pass, &["a"]);
        m.start(t);
        let fx = m.on_exit(&a, &exit(0), true, t);
        assert_eq!(passed_with(&fx), [(0, Some(Taken::Exit))]);
        assert!(
            kinds(&fx).contains(&"timer 2".to_string()),
            "{:?}",
            kinds(&fx)
        );
    }

    #[test]
    fn expect_not_passes_after_its_time_and_fails_at_the_first_match() {
        let a: Arc<str> = Arc::from("a");
        let t = Instant::now();
        let steps = || vec![Step::expect_not("a", Alternative::line("error"))];
        let mut m = machine(steps(), Order::Strict, Unlisted::Pass, &["a"]);
        m.start(t);
        m.on_output(&a, Stream::Stdout, &Frame::line("all good"), false, t);
        let fx = m.on_timeout(0, t + Duration::from_secs(1));
        assert!(
            kinds(&fx).contains(&"passed 0".to_string()),
            "{:?}",
            kinds(&fx)
        );

        let mut m = machine(steps(), Order::Strict, Unlisted::Pass, &["a"]);
        m.start(t);
        let fx = m.on_output(&a, Stream::Stdout, &Frame::line("an error here"), false, t);
        assert!(
            kinds(&fx).contains(&"failed 0".to_string()),
            "{:?}",
            kinds(&fx)
        );
        assert!(
            m.failure().unwrap().contains("`an error here`"),
            "{:?}",
            m.failure()
        );
    }

    #[test]
    fn a_group_name_in_a_step_means_its_replicas() {
        let t = Instant::now();
        let (w1, w2, srv): (Arc<str>, Arc<str>, Arc<str>) =
            ("w-1".into(), "w-2".into(), "srv".into());
        let mut groups = std::collections::HashMap::new();
        groups.insert(Arc::from("w"), vec![w1.clone(), w2.clone()]);
        groups.insert(Arc::from("none"), vec![]);
        let mut m = Machine::grouped(
            &Protocol {
                steps: vec![
                    Step::send_line("w", "hi"),
                    Step::expect_line("w", "^from 2$"),
                    Step::expect_line("srv", "^x$").routed_to("w"),
                    Step::close("w"),
                    Step::send_line("none", "nobody hears"),
                    Step::expect_exit_code("w", 0),
                    Step::expect_exit_code("none", 0),
                ],
                ..Protocol::default()
            },
            &names(&["w-1", "w-2", "srv"]),
            &groups,
        )
        .unwrap();
        // send: each replica, in order; passes when both are done.
        let fx = m.start(t);
        let to: Vec<String> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Send { to, .. } => Some(to.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(to, ["w-1", "w-2"]);
        m.action_done(0, t);
        assert_eq!(
            m.report()[0].outcome,
            StepOutcome::NotRun,
            "one of two done"
        );
        m.action_done(0, t);
        assert!(matches!(m.report()[0].outcome, StepOutcome::Passed { .. }));
        // expect: from any replica.
        m.on_output(&w1, Stream::Stdout, &Frame::line("from 1"), false, t);
        m.on_output(&w2, Stream::Stdout, &Frame::line("from 2"), false, t);
        assert!(matches!(m.report()[1].outcome, StepOutcome::Passed { .. }));
        // a routed expect to a group: to any replica.
        let (verdict, fx) = m.on_routed(&srv, &w2, &Frame::line("x"), t);
        assert_eq!(verdict, Verdict::Deliver);
        assert!(matches!(m.report()[2].outcome, StepOutcome::Passed { .. }));
        // close: every replica; then a send to an empty group passes at once.
        let closes: Vec<String> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Close { child, .. } => Some(child.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(closes, ["w-1", "w-2"]);
        m.action_done(3, t);
        let fx = m.action_done(3, t);
        assert!(
            kinds(&fx).contains(&"passed 4".to_string()),
            "{:?}",
            kinds(&fx)
        );
        // expect_exit: every replica.
        m.on_exit(&w2, &exit(0), true, t);
        assert_eq!(
            m.report()[5].outcome,
            StepOutcome::NotRun,
            "w-1 is still running"
        );
        m.on_exit(&w1, &exit(0), true, t);
        assert_eq!(m.outcome(), Some(true), "{:?}", m.failure());
    }

    #[test]
    fn a_group_expect_exit_with_one_replica_gone_already_still_has_its_timer() {
        let t = Instant::now();
        let (w1, w2): (Arc<str>, Arc<str>) = ("w-1".into(), "w-2".into());
        let mut groups = std::collections::HashMap::new();
        groups.insert(Arc::from("w"), vec![w1.clone(), w2.clone()]);
        let mut m = Machine::grouped(
            &Protocol {
                steps: vec![
                    Step::wait(Duration::from_secs(1)),
                    Step::expect_exit_code("w", 0).within(Duration::from_secs(2)),
                ],
                ..Protocol::default()
            },
            &names(&["w-1", "w-2"]),
            &groups,
        )
        .unwrap();
        m.start(t);
        m.on_exit(&w1, &exit(0), true, t);
        let fx = m.on_timeout(0, t + Duration::from_secs(1));
        assert!(
            kinds(&fx).contains(&"timer 1".to_string()),
            "{:?}",
            kinds(&fx)
        );
        m.on_timeout(1, t + Duration::from_secs(3));
        assert_eq!(m.outcome(), Some(false), "w-2 never exited");
    }

    #[test]
    fn a_replica_that_exits_otherwise_fails_a_group_expect_exit() {
        let t = Instant::now();
        let (w1, w2): (Arc<str>, Arc<str>) = ("w-1".into(), "w-2".into());
        let mut groups = std::collections::HashMap::new();
        groups.insert(Arc::from("w"), vec![w1.clone(), w2.clone()]);
        let mut m = Machine::grouped(
            &Protocol {
                steps: vec![Step::expect_exit_code("w", 0)],
                ..Protocol::default()
            },
            &names(&["w-1", "w-2"]),
            &groups,
        )
        .unwrap();
        m.start(t);
        m.on_exit(&w2, &exit(3), true, t);
        assert_eq!(m.outcome(), Some(false));
        assert!(
            m.failure()
                .unwrap()
                .starts_with("`w-2` exited with exit code 3"),
            "{:?}",
            m.failure()
        );
    }

    #[test]
    fn a_loop_ends_when_its_exit_matches_and_max_visits_stops_one_that_does_not() {
        let a: Arc<str> = Arc::from("a");
        let t = Instant::now();
        let looped = |max_visits| {
            Machine::new(
                &Protocol {
                    steps: vec![
                        Step::send_line("a", "again?").label("top"),
                        Step::expect_any(
                            "a",
                            vec![
                                Alternative::line("^more$").goto("top"),
                                Alternative::line("^done$"),
                            ],
                        ),
                    ],
                    max_visits,
                    ..Protocol::default()
                },
                &names(&["a"]),
            )
            .unwrap()
        };
        // Each round: the send is done, then the child answers.
        let round = |m: &mut Machine, answer: &str| {
            m.action_done(0, t);
            m.on_output(&a, Stream::Stdout, &Frame::line(answer), false, t)
        };
        let mut m = looped(5);
        m.start(t);
        for _ in 0..3 {
            round(&mut m, "more");
        }
        let fx = round(&mut m, "done");
        assert_eq!(m.outcome(), Some(true), "{:?}", kinds(&fx));

        let mut m = looped(3);
        m.start(t);
        for _ in 0..3 {
            round(&mut m, "more");
        }
        assert_eq!(m.outcome(), Some(false));
        assert!(
            m.failure().unwrap().contains("max_visits (3)"),
            "{:?}",
            m.failure()
        );
    }

    #[test]
    fn a_loop_through_many_kept_frames_takes_no_stack() {
        // 20,000 frames kept while a wait runs, then an expect that loops
        // on itself once per frame: entered iteratively, not recursively
        // (a test thread's 2 MiB stack would not hold 20,000 nested steps).
        let a: Arc<str> = Arc::from("a");
        let t = Instant::now();
        let mut m = Machine::new(
            &Protocol {
                steps: vec![
                    Step::wait(Duration::from_secs(1)),
                    Step::expect_any(
                        "a",
                        vec![
                            Alternative::line("^x$").goto("again"),
                            Alternative::line("^end$"),
                        ],
                    )
                    .label("again"),
                ],
                max_visits: 1_000_000,
                ..Protocol::default()
            },
            &names(&["a"]),
        )
        .unwrap()
        .keep(64 << 20);
        m.start(t);
        for _ in 0..20_000 {
            m.on_output(&a, Stream::Stdout, &Frame::line("x"), false, t);
        }
        m.on_output(&a, Stream::Stdout, &Frame::line("end"), false, t);
        m.on_timeout(0, t + Duration::from_secs(1));
        assert_eq!(m.outcome(), Some(true));
    }

    #[test]
    fn a_timer_from_an_earlier_visit_of_a_step_is_not_this_visits() {
        let a: Arc<str> = Arc::from("a");
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut m = machine(
            vec![
                Step::send_line("a", "status?").label("poll"),
                Step::expect_any(
                    "a",
                    vec![
                        Alternative::line("^busy$").goto("poll"),
                        Alternative::line("^done$"),
                    ],
                )
                .within(s(5)),
            ],
            Order::Strict,
            Unlisted::Pass,
            &["a"],
        );
        m.start(t);
        m.action_done(0, t); // step 2 entered at t: its timer is for t+5s
        m.on_output(&a, Stream::Stdout, &Frame::line("busy"), false, t + s(1));
        m.action_done(0, t + s(1)); // entered again at t+1s
        let fx = m.on_timeout(1, t + s(5));
        assert!(
            fx.is_empty(),
            "the first visit's timer is ignored: {:?}",
            kinds(&fx)
        );
        m.on_output(&a, Stream::Stdout, &Frame::line("done"), false, t + s(5));
        assert_eq!(m.outcome(), Some(true));
    }

    #[test]
    fn expect_not_does_not_hide_a_child_that_ends_badly() {
        let a: Arc<str> = Arc::from("a");
        let t = Instant::now();
        let steps = || vec![Step::expect_not("a", Alternative::line("Traceback"))];
        let mut m = machine(steps(), Order::Strict, Unlisted::Pass, &["a"]);
        m.start(t);
        m.on_exit(&a, &exit(0), true, t);
        assert_eq!(
            m.outcome(),
            Some(true),
            "a clean end: nothing more can match"
        );
        let mut m = machine(steps(), Order::Strict, Unlisted::Pass, &["a"]);
        m.start(t);
        m.on_exit(&a, &exit(3), true, t);
        assert_eq!(m.outcome(), Some(false), "a crash fails the run");
    }

    #[test]
    fn steps_with_flow_keep_it_through_serde() {
        let steps = vec![
            Step::expect_any("a", vec![Alternative::line("x").goto("end")]),
            Step::expect_any(
                "a",
                vec![
                    Alternative::prompt("> $"),
                    Alternative::line("y").goto("end"),
                ],
            )
            .on_timeout("end")
            .on_exit("end"),
            Step::expect_not("a", Alternative::line("error")).label("end"),
        ];
        for step in steps {
            let json = serde_json::to_value(&step).unwrap();
            let back: Step = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(back, step, "{json}");
        }
        // A plain expect given a goto from Rust keeps it (as an `any`).
        let mut step = Step::expect_line("a", "x");
        if let Action::Expect { alternatives, .. } = &mut step.action {
            alternatives[0].goto = Some("end".into());
        }
        let back: Step = serde_json::from_value(serde_json::to_value(&step).unwrap()).unwrap();
        let Action::Expect { alternatives, .. } = &back.action else {
            panic!("{back:?}")
        };
        assert_eq!(alternatives[0].goto.as_deref(), Some("end"));
    }

    #[test]
    fn a_stream_filter_ignores_the_other_stream() {
        let a: Arc<str> = Arc::from("a");
        let t = Instant::now();
        let mut step = Step::expect_line("a", "^x$");
        if let Action::Expect { stream, .. } = &mut step.action {
            *stream = Some(Stream::Stderr);
        }
        let mut m = machine(vec![step], Order::Strict, Unlisted::Pass, &["a"]);
        m.start(t);
        let fx = m.on_output(&a, Stream::Stdout, &Frame::line("x"), false, t);
        assert!(passed_with(&fx).is_empty());
        let fx = m.on_output(&a, Stream::Stderr, &Frame::line("x"), false, t);
        assert_eq!(passed_with(&fx).len(), 1);
    }

    #[test]
    fn goto_targets_are_checked_by_name() {
        let problems = Machine::new(
            &Protocol {
                steps: vec![
                    Step::expect_any("a", vec![Alternative::line("x").goto("tpo")]),
                    Step::wait(Duration::from_secs(1)).label("top"),
                    Step::expect_line("a", "y").on_timeout("twice"),
                    Step::wait(Duration::from_secs(1)).label("twice"),
                    Step::wait(Duration::from_secs(1)).label("twice"),
                ],
                ..Protocol::default()
            },
            &names(&["a"]),
        )
        .err()
        .unwrap();
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            text,
            [
                "step 1: `goto` goes to `tpo`, which no step is labelled (did you mean `top`?)",
                "step 3: `on_timeout` goes to `twice`, but steps [4, 5] are all labelled so",
            ]
        );
    }

    #[test]
    fn a_dialogue_runs_step_by_step() {
        let bc: Arc<str> = Arc::from("bc");
        let mut m = machine(
            vec![
                Step::send_line("bc", "2+3"),
                Step::expect_line("bc", "^5$"),
                Step::close("bc"),
                Step::expect_exit_code("bc", 0),
            ],
            Order::Strict,
            Unlisted::Pass,
            &["bc"],
        );
        let t = Instant::now();
        assert_eq!(kinds(&m.start(t)), ["send 0"]);
        assert_eq!(kinds(&m.action_done(0, t)), ["passed 0", "timer 1"]);
        assert!(m
            .on_output(&bc, Stream::Stdout, &Frame::line("4"), false, t)
            .is_empty());
        assert_eq!(
            kinds(&m.on_output(&bc, Stream::Stdout, &Frame::line("5"), false, t)),
            ["passed 1", "close 2"]
        );
        assert_eq!(kinds(&m.action_done(2, t)), ["passed 2", "timer 3"]);
        assert_eq!(
            kinds(&m.on_exit(&bc, &exit(0), true, t)),
            ["passed 3", "done true"]
        );
        assert_eq!(m.outcome(), Some(true));
    }

    /// Regression (issue 15, item 19): every expect's compiled regex was
    /// held from the check to the end of the run (a 100,000-step scenario
    /// held a gigabyte of them). A pattern is compiled when first matched
    /// and dropped once its step passed.
    #[test]
    fn an_expects_regex_is_compiled_only_while_its_step_can_match() {
        let a: Arc<str> = Arc::from("a");
        let steps = (0..100)
            .map(|i| Step::expect_line("a", format!("^line {i}$")))
            .collect();
        let mut m = machine(steps, Order::Strict, Unlisted::Pass, &["a"]);
        assert_eq!(
            m.compiled_patterns(),
            0,
            "checking compiles nothing to keep"
        );
        let t = Instant::now();
        m.start(t);
        for i in 0..50 {
            m.on_output(
                &a,
                Stream::Stdout,
                &Frame::line(format!("line {i}")),
                false,
                t,
            );
        }
        assert!(m.compiled_patterns() <= 1, "{}", m.compiled_patterns());
        for i in 50..100 {
            m.on_output(
                &a,
                Stream::Stdout,
                &Frame::line(format!("line {i}")),
                false,
                t,
            );
        }
        assert_eq!(m.outcome(), Some(true));
        assert_eq!(m.compiled_patterns(), 0);
    }

    #[test]
    fn a_frame_printed_before_its_expect_counts_and_earlier_ones_are_consumed() {
        let a: Arc<str> = Arc::from("a");
        let mut m = machine(
            vec![
                Step::wait(Duration::from_secs(1)),
                Step::expect_line("a", "^two$"),
                Step::expect_line("a", "^one$"),
            ],
            Order::Strict,
            Unlisted::Pass,
            &["a"],
        );
        let t = Instant::now();
        m.start(t);
        for line in ["one", "two", "three"] {
            m.on_output(&a, Stream::Stdout, &Frame::line(line), false, t);
        }
        // Step 2 takes `two` (consuming `one`), so step 3 waits for a new `one`.
        assert_eq!(
            kinds(&m.on_timeout(0, t + Duration::from_secs(1))),
            ["passed 0", "passed 1", "timer 2"]
        );
        let fx = m.on_timeout(2, t + Duration::from_secs(20));
        let Effect::Failed { reason, .. } = &fx[0] else {
            panic!("{fx:?}")
        };
        assert!(
            reason.contains("for a line matching `^one$` from `a`"),
            "{reason}"
        );
        assert!(
            reason.contains("a: three"),
            "the diagnostic shows what is left: {reason}"
        );
    }

    #[test]
    fn captures_flow_into_later_sends() {
        let srv: Arc<str> = Arc::from("server");
        let mut m = machine(
            vec![
                Step::expect_json("server", json!({"type": "welcome", "session": "${sid}"})),
                Step::send_json("server", json!({"type": "resume", "session": "${sid}"})),
                Step::send_line("server", "bye ${sid}"),
            ],
            Order::Strict,
            Unlisted::Pass,
            &["server"],
        );
        let t = Instant::now();
        m.start(t);
        let fx = m.on_output(
            &srv,
            Stream::Stdout,
            &Frame::Json(json!({"type": "welcome", "session": 7})),
            false,
            t,
        );
        assert!(fx.contains(&Effect::Send {
            step: 1,
            to: srv.clone(),
            frame: Frame::Json(json!({"type": "resume", "session": 7})),
            within: DEFAULT_WITHIN,
        }));
        let fx = m.action_done(1, t);
        assert!(fx.contains(&Effect::Send {
            step: 2,
            to: srv.clone(),
            frame: Frame::line("bye 7"),
            within: DEFAULT_WITHIN,
        }));
    }

    #[test]
    fn a_captured_newline_fails_a_line_send_instead_of_making_two_lines() {
        let srv: Arc<str> = Arc::from("server");
        let mut m = machine(
            vec![
                Step::expect_json("server", json!({"session": "${sid}"})),
                Step::send_json("server", json!({"resume": "${sid}"})),
                Step::send_line("server", "resume ${sid}"),
            ],
            Order::Strict,
            Unlisted::Pass,
            &["server"],
        );
        let t = Instant::now();
        m.start(t);
        let hostile = "7\nshutdown now";
        let fx = m.on_output(
            &srv,
            Stream::Stdout,
            &Frame::Json(json!({ "session": hostile })),
            false,
            t,
        );
        // As JSON, the newline is escaped: one line, the value intact.
        assert!(fx.contains(&Effect::Send {
            step: 1,
            to: srv.clone(),
            frame: Frame::Json(json!({ "resume": hostile })),
            within: DEFAULT_WITHIN,
        }));
        // As a line it would be two: the step fails and nothing is sent.
        let fx = m.action_done(1, t);
        assert!(
            !fx.iter().any(|e| matches!(e, Effect::Send { .. })),
            "{fx:?}"
        );
        let reason = fx
            .iter()
            .find_map(|e| match e {
                Effect::Failed { step, reason, .. } => Some((*step, reason.clone())),
                _ => None,
            })
            .expect("the step fails");
        assert_eq!(reason.0, Some(2));
        assert!(
            reason
                .1
                .starts_with("step 3: a captured value puts a newline"),
            "{}",
            reason.1
        );
        assert!(fx.contains(&Effect::Done { passed: false }));
    }

    #[test]
    fn a_send_line_with_a_newline_is_refused_before_the_run() {
        let problems = Machine::new(
            &Protocol {
                steps: vec![Step::send_line("server", "one\ntwo")],
                ..Protocol::default()
            },
            &names(&["server"]),
        )
        .err()
        .unwrap();
        assert_eq!(
            problems[0].to_string(),
            "step 1: `send.line` holds a newline; a send is one line (use one step per line)"
        );
    }

    #[test]
    fn an_undefined_capture_and_unknown_children_are_reported_per_step() {
        let problems = Machine::new(
            &Protocol {
                steps: vec![
                    Step::send_line("sever", "${nope}"),
                    Step::expect_line("server", "("),
                ],
                ..Protocol::default()
            },
            &names(&["server"]),
        )
        .err()
        .unwrap();
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "step 1: `to` names `sever`, which is not a child (did you mean `server`?)",
                "step 1: `${nope}` is not captured by any earlier step",
                "step 2: invalid regex in `expect.line`: unclosed group",
            ]
        );
    }

    fn three_party(order: Order) -> Machine {
        machine(
            vec![
                Step::expect_json("a", json!({"type": "syn"})).routed_to("b"),
                Step::expect_json("b", json!({"type": "ack"})).routed_to("c"),
            ],
            order,
            Unlisted::Pass,
            &["a", "b", "c"],
        )
    }

    #[test]
    fn strict_order_refuses_a_message_for_a_later_step() {
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        let mut m = three_party(Order::Strict);
        let t = Instant::now();
        m.start(t);
        let (verdict, fx) = m.on_routed(&b, &c, &Frame::Json(json!({"type": "ack"})), t);
        assert_eq!(verdict, Verdict::Drop);
        assert_eq!(kinds(&fx), ["violation", "failed 0", "done false"]);
        let _ = a;
    }

    #[test]
    fn hold_order_delivers_a_held_message_when_its_step_comes() {
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        let mut m = three_party(Order::Hold);
        let t = Instant::now();
        m.start(t);
        let ack = Frame::Json(json!({"type": "ack"}));
        let (verdict, fx) = m.on_routed(&b, &c, &ack, t);
        assert_eq!(verdict, Verdict::Drop, "held, not delivered yet");
        assert!(fx.is_empty());
        let (verdict, fx) = m.on_routed(&a, &b, &Frame::Json(json!({"type": "syn"})), t);
        assert_eq!(verdict, Verdict::Deliver);
        assert_eq!(kinds(&fx), ["passed 0", "deliver", "passed 1", "done true"]);
        assert!(fx.contains(&Effect::Deliver {
            from: b,
            to: c,
            frame: ack
        }));
    }

    /// A machine that waits, then expects `first` from `a`, after `a`
    /// printed `first` and then `more` frames; returns what the wait's end
    /// leads to.
    fn first_then(more: impl Iterator<Item = Frame>) -> (Machine, Vec<Effect>) {
        let a: Arc<str> = Arc::from("a");
        let mut m = machine(
            vec![
                Step::wait(Duration::from_secs(1)),
                Step::expect_line("a", "^first$"),
            ],
            Order::Strict,
            Unlisted::Pass,
            &["a"],
        );
        let t = Instant::now();
        m.start(t);
        m.on_output(&a, Stream::Stdout, &Frame::line("first"), false, t);
        for frame in more {
            m.on_output(&a, Stream::Stdout, &frame, false, t);
        }
        let fx = m.on_timeout(0, t + Duration::from_secs(1));
        (m, fx)
    }

    /// Regression: 10,000 frames were kept per child whatever their size
    /// (up to ~10 GiB with 1 MiB lines); now 1 MiB a child by default.
    #[test]
    fn unconsumed_output_is_bounded_in_bytes_oldest_first() {
        let kib = "x".repeat(1024);
        let (mut m, fx) = first_then((0..2048).map(|_| Frame::line(kib.clone())));
        // 2 MiB came after `first`: it was dropped, so step 2 waits.
        assert_eq!(kinds(&fx), ["passed 0", "timer 1"]);
        let fx = m.on_timeout(1, Instant::now() + Duration::from_secs(20));
        let Effect::Failed { reason, .. } = &fx[0] else {
            panic!("{fx:?}")
        };
        assert!(
            reason.contains("older frames dropped: more than 1048576 bytes"),
            "{reason}"
        );
    }

    /// Review: empty frames counted nothing, so blank lines grew the kept
    /// frames without bound.
    #[test]
    fn empty_frames_count_against_the_bound_too() {
        let (_, fx) = first_then((0..100_000).map(|_| Frame::line("")));
        assert_eq!(kinds(&fx), ["passed 0", "timer 1"], "`first` was dropped");
    }

    #[test]
    fn held_messages_are_bounded_in_bytes_and_refused_past_it() {
        let (b, c): (Arc<str>, Arc<str>) = ("b".into(), "c".into());
        let mut m = three_party(Order::Hold).keep(1100);
        m.start(Instant::now());
        let ack = |pad: &str| Frame::Json(json!({"type": "ack", "pad": pad}));
        let (verdict, fx) = m.on_routed(&b, &c, &ack(&"p".repeat(600)), Instant::now());
        assert_eq!((verdict, fx.len()), (Verdict::Drop, 0), "held");
        let (verdict, fx) = m.on_routed(&b, &c, &ack(&"q".repeat(600)), Instant::now());
        assert_eq!(verdict, Verdict::Drop);
        let Some(Effect::Refused { reason, .. }) = fx.first() else {
            panic!("{fx:?}")
        };
        assert!(reason.contains("cannot be held"), "{reason}");
    }

    /// Regression (issue 15, item 4): an `expect` on a child that had
    /// ended for good waited its whole `within`; it fails at once, naming
    /// how the child ended, when it ends and when the step comes later.
    #[test]
    fn an_expect_on_a_child_that_ended_for_good_fails_at_once() {
        let a: Arc<str> = Arc::from("a");
        let t = Instant::now();
        let mut m = machine(
            vec![Step::expect_line("a", "^never$")],
            Order::Strict,
            Unlisted::Pass,
            &["a"],
        );
        m.start(t);
        assert!(
            m.on_exit(&a, &exit(0), false, t).is_empty(),
            "a restart is coming: it waits"
        );
        m.on_spawned(&a);
        let fx = m.on_exit(&a, &exit(0), true, t);
        let Effect::Failed { reason, .. } = &fx[0] else {
            panic!("{fx:?}")
        };
        assert!(
            reason.starts_with(
                "expected a line matching `^never$` from `a`, but `a` exited with exit code 0 \
                 and will not run again"
            ),
            "{reason}"
        );

        let mut m = machine(
            vec![
                Step::wait(Duration::from_secs(1)),
                Step::expect_line("a", "^left$"),
                Step::expect_line("a", "^never$"),
            ],
            Order::Strict,
            Unlisted::Pass,
            &["a"],
        );
        m.start(t);
        m.on_output(&a, Stream::Stdout, &Frame::line("left"), false, t);
        m.on_exit(&a, &exit(0), true, t);
        // What it printed still counts; then the next expect fails at once.
        assert_eq!(
            kinds(&m.on_timeout(0, t + Duration::from_secs(1))),
            ["passed 0", "passed 1", "failed 2", "done false"]
        );
    }

    /// Regression (issue 15, item 6): a regex error said only "invalid
    /// regex", without the regex crate's reason.
    #[test]
    fn a_regex_that_is_too_big_says_so() {
        let problems = Machine::new(
            &Protocol {
                steps: vec![Step::expect_line("a", "a{100000}{100000}")],
                ..Protocol::default()
            },
            &names(&["a"]),
        )
        .err()
        .unwrap();
        let text = problems[0].to_string();
        assert!(
            text.starts_with(
                "step 1: invalid regex in `expect.line`: it would compile to more than"
            ),
            "{text}"
        );
    }

    #[test]
    fn unlisted_messages_pass_or_are_rejected() {
        let (a, c): (Arc<str>, Arc<str>) = ("a".into(), "c".into());
        let mut pass = three_party(Order::Strict);
        pass.start(Instant::now());
        assert_eq!(
            pass.on_routed(&a, &c, &Frame::line("hi"), Instant::now()).0,
            Verdict::Deliver
        );
        let mut reject = machine(
            vec![Step::wait(Duration::from_secs(1))],
            Order::Hold,
            Unlisted::Reject,
            &["a", "c"],
        );
        reject.start(Instant::now());
        let (verdict, fx) = reject.on_routed(&a, &c, &Frame::line("hi"), Instant::now());
        assert_eq!(verdict, Verdict::Drop);
        assert_eq!(
            kinds(&fx),
            ["violation"],
            "under hold a rejection does not fail the run"
        );
    }

    #[test]
    fn expect_exit_uses_a_remembered_exit_and_unexpected_exits_fail() {
        let x: Arc<str> = Arc::from("x");
        let mut m = machine(
            vec![
                Step::wait(Duration::from_secs(1)),
                Step::expect_exit_code("x", 3),
            ],
            Order::Strict,
            Unlisted::Pass,
            &["x", "y"],
        );
        let t = Instant::now();
        m.start(t);
        assert!(
            m.on_exit(&x, &exit(3), true, t).is_empty(),
            "an expect_exit for it is ahead"
        );
        assert_eq!(
            kinds(&m.on_timeout(0, t + Duration::from_secs(1))),
            ["passed 0", "passed 1", "done true"]
        );

        let y: Arc<str> = Arc::from("y");
        let mut m = machine(
            vec![Step::wait(Duration::from_secs(1))],
            Order::Strict,
            Unlisted::Pass,
            &["y"],
        );
        m.start(t);
        let fx = m.on_exit(&y, &exit(1), true, t);
        let Effect::Failed { reason, .. } = &fx[0] else {
            panic!("{fx:?}")
        };
        assert!(
            reason.starts_with("child `y` exited with exit code 1 and no expect_exit step says so"),
            "{reason}"
        );
        assert!(
            m.on_exit(&y, &exit(1), false, t).is_empty(),
            "finished machines ignore events"
        );
    }
}
