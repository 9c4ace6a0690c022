//! Terminal children (`ChildSpec::terminal`): a pseudo-terminal on stdin,
//! stdout and stderr; text without escape sequences; end of file the
//! terminal's way; stop reaching the whole session.

#[path = "common/mod.rs"]
mod common;

use common::*;
use procession::Director;
use procession::{ChildSpec, Event, EventFilter, EventKind, Frame, Terminal};
use tokio::sync::mpsc::UnboundedReceiver;

fn sh(name: &str, script: &str) -> ChildSpec {
    ChildSpec::new(name, ["sh", "-c", script]).terminal(Terminal::default())
}

/// The next output line of `child` (fails the test on its exit).
async fn line(events: &mut UnboundedReceiver<Event>, child: &str) -> String {
    loop {
        let e = next_event(events).await;
        if e.child.as_deref() != Some(child) {
            continue;
        }
        match e.kind {
            EventKind::Output {
                frame: Frame::Line(l),
                ..
            } => return l,
            EventKind::Exited { .. } => panic!("{child} exited before the line"),
            _ => {}
        }
    }
}

/// Every output line of `child` until it exits.
async fn lines_until_exit(events: &mut UnboundedReceiver<Event>, child: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let e = next_event(events).await;
        if e.child.as_deref() != Some(child) {
            continue;
        }
        match e.kind {
            EventKind::Output {
                frame: Frame::Line(l),
                ..
            } => lines.push(l),
            EventKind::Exited { .. } => return lines,
            _ => {}
        }
    }
}

#[actix_rt::test]
async fn a_terminal_child_has_a_terminal_on_every_stream_and_term_dumb() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    let script = r#"for fd in 0 1 2; do [ -t $fd ] && printf "tty$fd "; done; echo; echo "TERM=$TERM"; echo oops >&2"#;
    director.add(sh("t", script)).await.unwrap();
    let lines = lines_until_exit(&mut events, "t").await;
    assert_eq!(lines, ["tty0 tty1 tty2 ", "TERM=dumb", "oops"]);
    director.shutdown("done").await;
}

#[actix_rt::test]
async fn a_program_that_buffers_on_a_pipe_is_seen_line_by_line_in_a_terminal() {
    // Python's print block-buffers on a pipe (nothing would arrive before
    // its exit, 30 s later) and line-buffers on a terminal.
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    let program = "import time\nprint('first', flush=False)\ntime.sleep(30)";
    let spec = ChildSpec::new("py", ["python3", "-c", program]).terminal(Terminal::default());
    director.add(spec).await.unwrap();
    assert_eq!(line(&mut events, "py").await, "first");
    director.shutdown("done").await;
}

#[actix_rt::test]
async fn escape_sequences_never_reach_a_frame_or_an_event() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    let script =
        r"printf '\033[1;31mred\033[0m\n\033]0;a title\007plain\n\033[2J\033[Hafter clear\n'";
    director.add(sh("t", script)).await.unwrap();
    let lines = lines_until_exit(&mut events, "t").await;
    assert_eq!(lines, ["red", "plain", "after clear"]);
    director.shutdown("done").await;
}

#[actix_rt::test]
async fn closing_a_terminal_childs_stdin_ends_cat_and_echo_is_off_unless_asked() {
    for (echo, expected) in [(false, vec!["hello"]), (true, vec!["hello", "hello"])] {
        let director = Director::start();
        let mut events = tap(&director, EventFilter::all()).await;
        let spec = ChildSpec::new("cat", ["cat"]).terminal(Terminal {
            echo,
            ..Terminal::default()
        });
        director.add(spec).await.unwrap();
        director.deliver_line("cat", "hello").await.unwrap();
        director.close_stdin("cat").await.unwrap();
        let lines = lines_until_exit(&mut events, "cat").await;
        assert_eq!(lines, expected, "echo {echo}");
        let exit = director.wait_exit("cat").await.unwrap();
        assert!(
            exit.status.success(),
            "cat ends at end of file (echo {echo}): {exit:?}"
        );
        director.shutdown("done").await;
    }
}

#[actix_rt::test]
async fn a_line_without_its_newline_is_ended_before_end_of_file() {
    // ^D after a partial line only hands the line over: a second one is
    // needed for end of file.
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    director.add(sh("wc", "wc -c")).await.unwrap();
    director
        .deliver("wc", Frame::Bytes(b"abc".to_vec().into()))
        .await
        .unwrap();
    director.close_stdin("wc").await.unwrap();
    let lines = lines_until_exit(&mut events, "wc").await;
    assert_eq!(lines.iter().map(|l| l.trim()).collect::<Vec<_>>(), ["3"]);
    director.shutdown("done").await;
}

#[actix_rt::test]
async fn stop_reaches_the_terminal_childs_grandchildren() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    director
        .add(sh("t", "sleep 1000 & echo $!; wait"))
        .await
        .unwrap();
    let grandchild: u32 = line(&mut events, "t").await.parse().unwrap();
    let _reaper = Reaper(vec![grandchild]);
    assert!(alive(grandchild));
    let exit = director.stop("t", None).await.unwrap();
    assert!(exit.requested);
    eventually("the grandchild is gone", || !alive(grandchild)).await;
    director.shutdown("done").await;
}

/// Runs `steps` against `children` and returns whether the protocol passed.
async fn run(children: Vec<ChildSpec>, steps: Vec<procession::protocol::Step>) -> (bool, String) {
    let director = Director::start();
    let protocol = procession::protocol::Protocol {
        steps,
        ..Default::default()
    };
    let report = director.run(children, [], protocol).await.unwrap();
    director.shutdown("done").await;
    (report.passed, format!("{report:?}"))
}

#[actix_rt::test]
async fn a_prompt_without_a_newline_is_matched_on_a_pipe_and_in_a_terminal() {
    use procession::protocol::Step;
    let script = r#"printf 'Password: '; read p; echo "got $p""#;
    for terminal in [false, true] {
        let mut spec = ChildSpec::new("login", ["sh", "-c", script]);
        if terminal {
            spec = spec.terminal(Terminal::default());
        }
        let steps = vec![
            Step::expect_prompt("login", "^Password: $"),
            Step::send_line("login", "secret"),
            // The rest of the line after the prompt is its own frame.
            Step::expect_line("login", "^got secret$"),
        ];
        let (passed, report) = run(vec![spec], steps).await;
        assert!(passed, "terminal {terminal}: {report}");
    }
}

#[actix_rt::test]
async fn a_prompt_is_published_as_an_output_event_marked_prompt() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    director
        .add(ChildSpec::new("ask", ["sh", "-c", "printf '> '; read x"]))
        .await
        .unwrap();
    let prompt = loop {
        let e = next_event(&mut events).await;
        if let EventKind::Output { frame, prompt, .. } = &e.kind {
            break (frame.clone(), *prompt, serde_json::to_value(&e).unwrap());
        }
    };
    assert_eq!(prompt.0, Frame::line("> "));
    assert!(prompt.1, "marked as a prompt");
    assert_eq!(prompt.2["prompt"], true);
    director.shutdown("done").await;
}

#[actix_rt::test]
async fn a_line_that_pauses_midway_reaches_a_route_whole() {
    // `Building... ` waits 300 ms: it is published as a prompt, and routed
    // as the start of its line, so the receiver still gets one line.
    use procession::Route;
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    let slow = ChildSpec::new(
        "slow",
        ["sh", "-c", "printf 'Building... '; sleep 0.3; echo ok"],
    );
    director
        .launch(
            [
                ChildSpec::new("cat", ["sh", "-c", r#"read l; echo "got [$l]""#]),
                slow,
            ],
            [Route::new("slow", "cat")],
        )
        .await
        .unwrap();
    let mut saw_prompt = false;
    let line = loop {
        let e = next_event(&mut events).await;
        match (e.child.as_deref(), &e.kind) {
            (Some("slow"), EventKind::Output { prompt: true, .. }) => saw_prompt = true,
            (
                Some("cat"),
                EventKind::Output {
                    frame: Frame::Line(l),
                    prompt: false,
                    ..
                },
            ) => break l.clone(),
            _ => {}
        }
    };
    assert!(saw_prompt, "the pause made a prompt");
    assert_eq!(line, "got [Building... ok]", "the receiver read one line");
    director.shutdown("done").await;
}
