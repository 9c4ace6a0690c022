//! DirectorActor against real processes (the fixture program).

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use common::*;
use futures::future::join_all;
use procession::{ChildState, Director, PatternSpec, RequestError, Route};
use procession::{
    DirectorConfig, DirectorError, Event, EventFilter, EventKind, ExitStatus, Frame, Framing, Ready,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

#[actix_rt::test]
async fn frames_routed_a_to_b_arrive_complete_and_in_order() {
    let director = Director::start();
    director
        .launch(
            [
                fixture_spec("a", &["lines", "100000"]),
                fixture_spec("b", &["expect-seq"]),
            ],
            [Route::new("a", "b")],
        )
        .await
        .unwrap();
    let a = director.wait_exit("a").await.unwrap();
    assert!(a.status.success());
    // a's exit is handled after all its output was delivered to b's queue.
    director.close_stdin("b").await.unwrap();
    let b = director.wait_exit("b").await.unwrap();
    assert_eq!(b.status, ExitStatus::Code(0), "b saw a gap or a reordering");
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn concurrent_requests_each_get_their_own_reply() {
    let director = Director::start();
    director
        .launch(
            [
                fixture_spec("json-echo", &["echo"]).framing(Framing::Json),
                fixture_spec("line-echo", &["echo"]),
            ],
            [],
        )
        .await
        .unwrap();
    let t = Duration::from_secs(10);
    let json_replies = join_all((0..100).map(|i| {
        let director = director.clone();
        async move {
            let reply: Value = director
                .request("json-echo", &json!({"n": i}), t)
                .await
                .unwrap();
            (i, reply)
        }
    }))
    .await;
    for (i, reply) in json_replies {
        assert_eq!(reply["n"], i, "request {i} got {reply}");
    }
    let line_replies = join_all((0..100).map(|i| {
        let director = director.clone();
        async move {
            let reply: String = director
                .request("line-echo", &format!("question {i}"), t)
                .await
                .unwrap();
            (i, reply)
        }
    }))
    .await;
    for (i, reply) in line_replies {
        assert_eq!(reply, format!("question {i}"));
    }
    // A typed reply that does not fit says so.
    let err = director
        .request::<_, u32>("line-echo", "not a number", t)
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::BadReply { .. }), "{err}");
    assert!(err.to_string().contains("line-echo"), "{err}");
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn a_request_that_gets_no_reply_times_out() {
    let director = Director::start();
    director
        .add(fixture_spec("mute", &["sleep", "--quiet"]))
        .await
        .unwrap();
    let err = director
        .request::<_, String>("mute", "hello?", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Timeout { .. }), "{err}");
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn a_child_starts_only_after_its_dependency_is_ready() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    director
        .launch(
            [
                fixture_spec("client", &["sleep"]).depends_on("server"),
                fixture_spec("server", &["sleep"]).ready(Ready::Line("^ready$".into())),
            ],
            [],
        )
        .await
        .unwrap();
    let seen = until(&mut events, |e| is(e, "client", "spawned")).await;
    let server_ready = position(&seen, "server", "ready");
    assert!(position(&seen, "server", "spawned") < server_ready);
    assert!(position(&seen, "server", "output") < server_ready);
    assert!(server_ready < position(&seen, "client", "spawned"));
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn a_delay_and_a_json_object_can_mark_readiness() {
    let director = Director::start();
    let mut events = tap(
        &director,
        EventFilter::all().kinds([procession::Kind::Spawned, procession::Kind::Ready]),
    )
    .await;
    director
        .launch(
            [
                fixture_spec("slow", &["sleep"]).ready(Ready::After(Duration::from_millis(200))),
                fixture_spec("jsonic", &["json", "3"])
                    .framing(Framing::Json)
                    .ready(Ready::json(json!({"n": 2}))),
                fixture_spec("after-both", &["sleep"])
                    .depends_on("slow")
                    .depends_on("jsonic"),
            ],
            [],
        )
        .await
        .unwrap();
    let seen = until(&mut events, |e| is(e, "after-both", "spawned")).await;
    let t = |child, kind| seen[position(&seen, child, kind)].t_ms;
    assert!(t("slow", "ready") >= t("slow", "spawned") + 200);
    assert!(position(&seen, "jsonic", "ready") < position(&seen, "after-both", "spawned"));
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn a_child_whose_dependency_failed_is_not_started_and_told_why() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    director
        .launch(
            [
                procession::ChildSpec::new("broken", ["no-such-program-procession"]),
                fixture_spec("needy", &["sleep"]).depends_on("broken"),
            ],
            [],
        )
        .await
        .unwrap();
    let seen = until(&mut events, |e| is(e, "needy", "not_started")).await;
    assert!(seen.iter().any(|e| is(e, "broken", "spawn_failed")));
    match &seen.last().unwrap().kind {
        EventKind::NotStarted { reason } => {
            assert!(reason.contains("broken"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn a_cycle_and_an_unknown_name_are_rejected_before_anything_is_spawned() {
    let director = Director::start();
    let err = director
        .launch(
            [
                fixture_spec("a", &["sleep"]).depends_on("b"),
                fixture_spec("b", &["sleep"]).depends_on("a"),
                fixture_spec("c", &["sleep"]).depends_on("nobody"),
            ],
            [Route::new("a", "bb")],
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("dependency cycle: a -> b -> a"), "{text}");
    assert!(text.contains("`nobody`"), "{text}");
    assert!(
        text.contains("route 1 (a -> bb): `bb` is not a child (did you mean `b`?)"),
        "{text}"
    );
    assert!(
        director.children().await.unwrap().is_empty(),
        "nothing was added"
    );
    director.shutdown("test over").await;
}

/// A subscriber that takes the first event and then does not come back
/// until the test opens the gate.
struct Stuck {
    gate: Arc<Notify>,
    seen: mpsc::UnboundedSender<Event>,
}

impl Actor for Stuck {
    type Context = Context<Self>;
}

impl Handler<Event> for Stuck {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, event: Event, _: &mut Context<Self>) -> Self::Result {
        let _ = self.seen.send(event);
        let gate = self.gate.clone();
        Box::pin(async move { gate.notified().await })
    }
}

#[actix_rt::test]
async fn a_subscriber_that_does_not_keep_up_gets_lagged_while_routing_goes_on() {
    let director = Director::with_config(DirectorConfig {
        event_queue: 64,
        ..DirectorConfig::default()
    });
    let gate = Arc::new(Notify::new());
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let stuck = Stuck {
        gate: gate.clone(),
        seen: seen_tx,
    }
    .start();
    director
        .subscribe(stuck.recipient(), EventFilter::all())
        .await
        .unwrap();
    director
        .launch(
            [
                fixture_spec("a", &["lines", "20000"]),
                fixture_spec("b", &["expect-seq"]),
            ],
            [Route::new("a", "b")],
        )
        .await
        .unwrap();
    // All 20000 frames go through while the subscriber is stuck.
    assert!(director.wait_exit("a").await.unwrap().status.success());
    director.close_stdin("b").await.unwrap();
    assert!(director.wait_exit("b").await.unwrap().status.success());
    next_event(&mut seen).await; // the one it got before it stopped reading
                                 // Let it go: each event it handles now opens the gate for the next.
    loop {
        gate.notify_one();
        if let EventKind::Lagged { missed } = next_event(&mut seen).await.kind {
            assert!(missed > 0);
            break;
        }
    }
    director.shutdown("test over").await;
}

/// `drop_only`: a subscriber that falls behind loses only the kinds it
/// named (and is told how many), never the others.
#[actix_rt::test]
async fn a_subscriber_behind_loses_only_the_kinds_it_said_it_can_lose() {
    let director = Director::with_config(DirectorConfig {
        event_queue: 64,
        ..DirectorConfig::default()
    });
    let gate = Arc::new(Notify::new());
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let stuck = Stuck {
        gate: gate.clone(),
        seen: seen_tx,
    }
    .start();
    director
        .subscribe(
            stuck.recipient(),
            EventFilter::all().drop_only([procession::Kind::Output]),
        )
        .await
        .unwrap();
    director
        .add(fixture_spec("a", &["lines", "20000"]))
        .await
        .unwrap();
    assert!(director.wait_exit("a").await.unwrap().status.success());
    let (mut outputs, mut missed) = (0u64, 0u64);
    let mut kinds = Vec::new();
    loop {
        gate.notify_one();
        let event = next_event(&mut seen).await;
        match event.kind {
            EventKind::Output { .. } => outputs += 1,
            EventKind::Lagged { missed: n } => missed += n,
            EventKind::Exited { .. } => break,
            _ => kinds.push(event.kind.name()),
        }
    }
    assert!(missed > 0, "it fell behind");
    assert_eq!(outputs + missed, 20000, "every line is seen or counted");
    assert_eq!(kinds, ["spawned", "ready"], "and nothing else is lost");
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn shutdown_stops_in_reverse_dependency_order_and_leaves_nothing() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    let ready = || Ready::Line("^ready$".into());
    director
        .launch(
            [
                fixture_spec("db", &["fork", "1"]).ready(ready()),
                fixture_spec("api", &["fork", "1"])
                    .ready(ready())
                    .depends_on("db"),
                fixture_spec("web", &["fork", "1"])
                    .ready(ready())
                    .depends_on("api"),
            ],
            [],
        )
        .await
        .unwrap();
    let started = until(&mut events, |e| is(e, "web", "ready")).await;
    let mut pids = Vec::new();
    for e in &started {
        match &e.kind {
            EventKind::Spawned { pid, .. } => pids.push(*pid),
            EventKind::Output {
                frame: Frame::Line(l),
                ..
            } => pids.extend(grandchild_pids(std::slice::from_ref(l))),
            _ => {}
        }
    }
    let _reaper = Reaper(pids.clone());
    assert_eq!(pids.len(), 6, "three children, three grandchildren");

    director.shutdown("test over").await;
    let mut rest = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(PATIENCE, events.recv()).await {
        rest.push(e);
    }
    let order: Vec<&str> = rest
        .iter()
        .filter(|e| e.kind.name() == "exited")
        .map(|e| e.child.as_deref().unwrap())
        .collect();
    assert_eq!(order, ["web", "api", "db"]);
    assert!(rest.iter().filter(|e| e.kind.name() == "stopped").count() == 3);
    let survivors: Vec<u32> = pids.into_iter().filter(|&p| alive(p)).collect();
    assert!(survivors.is_empty(), "survivors: {survivors:?}");
}

#[actix_rt::test]
async fn messages_to_unknown_or_exited_children_are_refused_by_name() {
    let director = Director::start();
    director
        .launch([fixture_spec("quitter", &["exit", "3"])], [])
        .await
        .unwrap();
    let exit = director.wait_exit("quitter").await.unwrap();
    assert_eq!(exit.status, ExitStatus::Code(3));

    let err = director.deliver_line("quiter", "hi").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "no child named `quiter` (did you mean `quitter`?)"
    );
    let err = director.deliver_line("quitter", "hi").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "child `quitter` is not running (exited with exit code 3)"
    );
    let err = director
        .request::<_, String>("quitter", "hi", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::NotSent(DirectorError::NotRunning { .. })),
        "{err}"
    );
    let err = director.stop("ghost", None).await.unwrap_err();
    assert!(err.to_string().contains("`ghost`"), "{err}");
    let listed = director.children().await.unwrap();
    assert!(matches!(&listed[0].state, ChildState::Exited(e) if e.status == ExitStatus::Code(3)));
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn envelopes_and_filtered_routes_deliver_to_the_right_child() {
    let director = Director::start();
    let mut events = tap(
        &director,
        EventFilter::all()
            .children(["bob", "carol"])
            .kinds([procession::Kind::Output]),
    )
    .await;
    director
        .launch(
            [
                fixture_spec("bob", &["echo"]),
                fixture_spec("carol", &["echo"]),
                fixture_spec("alice", &["say", r#"{"to":"bob","n":1}"#, r#"{"n":2}"#])
                    .framing(Framing::Json)
                    .depends_on("bob")
                    .depends_on("carol"),
                fixture_spec("dave", &["say", "noise", "DATA 1", "more noise", "DATA 2"])
                    .depends_on("carol"),
            ],
            [Route::new("dave", "carol").filter(PatternSpec::Regex("^DATA".into()))],
        )
        .await
        .unwrap();
    let mut bob = Vec::new();
    let mut carol = Vec::new();
    while bob.is_empty() || carol.len() < 2 {
        let e = next_event(&mut events).await;
        if let EventKind::Output {
            frame: Frame::Line(l),
            ..
        } = e.kind
        {
            match e.child.as_deref() {
                Some("bob") => bob.push(l),
                Some("carol") => carol.push(l),
                _ => unreachable!("filtered"),
            }
        }
    }
    let got: Value = serde_json::from_str(&bob[0]).unwrap();
    assert_eq!(got, json!({"to": "bob", "n": 1, "from": "alice"}));
    assert_eq!(carol, ["DATA 1", "DATA 2"]);
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn sigint_to_the_host_shuts_the_director_down() {
    let mut host = Command::new(host())
        .args(["--director", fixture(), "sleep"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reaper = Reaper(vec![host.id()]);
    let mut out = BufReader::new(host.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let child: u32 = line.trim().strip_prefix("child ").unwrap().parse().unwrap();
    reaper.0.push(child);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = host.wait().unwrap();
    assert_eq!(rest.lines().last(), Some("shutdown by INT"), "{rest}");
    assert_eq!(status.code(), Some(130));
    assert!(
        !alive(child),
        "the child was stopped before the host exited"
    );
}

#[actix_rt::test]
async fn frames_for_a_gone_or_unknown_child_are_reported_undeliverable() {
    let director = Director::start();
    let mut events = tap(
        &director,
        EventFilter::all().kinds([procession::Kind::Undeliverable]),
    )
    .await;
    director
        .add(fixture_spec("gone", &["exit", "0"]))
        .await
        .unwrap();
    director.wait_exit("gone").await.unwrap();
    director
        .launch(
            [
                fixture_spec("talker", &["say", "one", "two"]),
                fixture_spec("mailer", &["say", r#"{"to":"nobody"}"#]).framing(Framing::Json),
            ],
            [Route::new("talker", "gone")],
        )
        .await
        .unwrap();
    let mut reasons = Vec::new();
    while reasons.len() < 3 {
        let e = next_event(&mut events).await;
        if let EventKind::Undeliverable { from, to, reason } = e.kind {
            reasons.push(format!("{} -> {to}: {reason}", from.unwrap()));
        }
    }
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "mailer -> nobody: no child has this name",
            "talker -> gone: not running (exited with exit code 0)",
            "talker -> gone: not running (exited with exit code 0)",
        ]
    );
    director.shutdown("test over").await;
}

/// Regression: a `wait_exit` that began while its child was restarting
/// failed with "never started" when a shutdown called the restart off.
#[actix_rt::test]
async fn a_wait_on_a_restarting_child_is_answered_when_a_shutdown_calls_the_restart_off() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    let slow_restart = procession::RestartSpec {
        backoff: Duration::from_secs(60),
        max_backoff: Duration::from_secs(60),
        ..procession::RestartSpec::policy(procession::RestartPolicy::OnFailure)
    };
    director
        .add(fixture_spec("flaky", &["exit", "3"]).restart(slow_restart))
        .await
        .unwrap();
    until(&mut events, |e| is(e, "flaky", "restarting")).await;
    // The wait reaches the director before the shutdown (join polls in order).
    let (exit, _) = futures::join!(director.wait_exit("flaky"), director.shutdown("test over"));
    let exit = exit.expect("answered with the exit it had");
    assert_eq!(exit.status, ExitStatus::Code(3));
}

/// Regression: a reply that came after its request had timed out was routed
/// to the other children as ordinary output.
#[actix_rt::test]
async fn a_reply_after_its_request_timed_out_is_published_late_and_not_routed() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    director
        .launch(
            [
                fixture_spec("slow", &["echo-after-usr1"]),
                fixture_spec("sink", &["count"]),
            ],
            [Route::new("slow", "sink")],
        )
        .await
        .unwrap();
    until(&mut events, |e| is(e, "slow", "routed")).await; // its `ready`
    let err = director
        .request::<_, String>("slow", "ping", Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Timeout { .. }), "{err}");
    director
        .signal("slow", procession::Signal::Usr1)
        .await
        .unwrap();
    let mut seen = until(&mut events, |e| {
        is(e, "slow", "output")
            && matches!(&e.kind, EventKind::Output { frame, .. } if frame.as_line() == Some("ping"))
    })
    .await;
    director.close_stdin("slow").await.unwrap();
    seen.extend(until(&mut events, |e| is(e, "slow", "exited")).await);
    assert_eq!(count(&seen, "slow", "late_reply"), 1, "{seen:#?}");
    assert_eq!(
        count(&seen, "slow", "routed"),
        0,
        "the late reply is not routed"
    );
    director.shutdown("test over").await;
}

fn journal_events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Frames kept for a child that never starts are reported `undeliverable`
/// when the run ends (they were dropped silently), and all of it comes
/// before the one `finished`.
#[actix_rt::test]
async fn frames_kept_for_a_child_that_never_starts_are_reported_before_finished() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let director = Director::with_config(DirectorConfig {
        journal: Some(procession::Journal::create(&path).unwrap()),
        ..DirectorConfig::default()
    });
    let mut events = tap(&director, EventFilter::all()).await;
    director
        .launch(
            [
                fixture_spec("gate", &["sleep", "--quiet"]).ready(Ready::Line("^never$".into())),
                fixture_spec("waiter", &["echo"]).depends_on("gate"),
                fixture_spec("talker", &["lines", "50"]),
            ],
            [Route::new("talker", "waiter")],
        )
        .await
        .unwrap();
    let seen = until(&mut events, |e| is(e, "talker", "exited")).await;
    assert_eq!(count(&seen, "talker", "routed"), 50, "kept for waiter");
    director.shutdown("test over").await;
    let evs = journal_events(&path);
    let last = evs.last().unwrap();
    assert_eq!(last["event"], "finished", "{last}");
    assert_eq!(evs.iter().filter(|e| e["event"] == "finished").count(), 1);
    let dropped = evs
        .iter()
        .filter(|e| e["event"] == "undeliverable" && e["to"] == "waiter")
        .count();
    assert_eq!(dropped, 50, "each kept frame is reported");
}

/// Review: a significant child that could not be spawned ended the run
/// before its protocol started: `finished` said passed, then the step failed.
#[actix_rt::test]
async fn a_significant_child_that_cannot_spawn_fails_the_run_and_finished_comes_last() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    let report = director
        .run(
            [
                procession::ChildSpec::new("ghost", ["/nonexistent/procession-test-ghost"])
                    .significant(),
                fixture_spec("bystander", &["sleep"]),
            ],
            [],
            procession::protocol::Protocol {
                steps: vec![procession::protocol::Step::wait(Duration::from_secs(30))],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!report.passed, "{report:#?}");
    let seen = until(&mut events, |e| {
        matches!(e.kind, EventKind::Finished { .. })
    })
    .await;
    assert!(
        matches!(
            seen.last().unwrap().kind,
            EventKind::Finished { passed: false }
        ),
        "{seen:#?}"
    );
    assert_eq!(
        count(&seen, "bystander", "spawned"),
        0,
        "never spawned: {seen:#?}"
    );
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn events_are_a_stream_that_ends_after_finished() {
    use futures::StreamExt;
    let director = Director::start();
    let mut events = director
        .events(procession::EventFilter::all().kinds([
            procession::Kind::Output,
            procession::Kind::Exited,
            procession::Kind::Finished,
        ]))
        .await
        .unwrap();
    director
        .add(fixture_spec("a", &["lines", "3"]))
        .await
        .unwrap();
    director.wait_exit("a").await.unwrap();
    director.shutdown("done").await;
    let mut kinds = Vec::new();
    let all = tokio::time::timeout(PATIENCE, async {
        while let Some(e) = events.next().await {
            kinds.push(e.kind.name());
        }
    })
    .await;
    assert!(
        all.is_ok(),
        "the stream ends once the director has stopped: {kinds:?}"
    );
    assert_eq!(kinds, ["output", "output", "output", "exited", "finished"]);
}

#[actix_rt::test]
async fn wait_ready_fails_with_the_reason_for_a_program_that_does_not_exist() {
    let director = Director::start();
    director
        .add(procession::ChildSpec::new(
            "ghost",
            ["procession-no-such-program"],
        ))
        .await
        .expect("added: the spawn is what fails");
    let err = director.wait_ready("ghost").await.unwrap_err();
    assert!(
        matches!(&err, DirectorError::NotReady { reason, .. }
            if reason.contains("could not be spawned") && reason.contains("not found")),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("child `ghost` is not ready: "),
        "{err}"
    );
    director.shutdown("done").await;
}

#[actix_rt::test]
async fn a_stopped_child_is_started_again_and_a_restart_does_not_use_its_intensity() {
    use procession::{RestartPolicy, RestartSpec};
    let director = Director::start();
    let mut spawned = tap(
        &director,
        EventFilter::all().kinds([procession::Kind::Spawned, procession::Kind::GaveUp]),
    )
    .await;
    let restart = RestartSpec {
        max: 1,
        ..RestartSpec::policy(RestartPolicy::OnFailure)
    };
    director
        .add(fixture_spec("echo", &["echo"]).restart(restart))
        .await
        .unwrap();
    director.wait_ready("echo").await.unwrap();
    director.stop("echo", None).await.unwrap();
    let err = director.wait_ready("echo").await.unwrap_err();
    assert!(err.to_string().contains("it was stopped"), "{err}");
    director.start_child("echo").await.unwrap();
    director.wait_ready("echo").await.unwrap();
    let t = Duration::from_secs(10);
    let reply: String = director.request("echo", "again", t).await.unwrap();
    assert_eq!(reply, "again");
    // Three restarts asked for, with an intensity of one: none gives up.
    for _ in 0..3 {
        director.restart("echo").await.unwrap();
        let reply: String = director.request("echo", "back", t).await.unwrap();
        assert_eq!(reply, "back", "the request waited for the new instance");
    }
    director.wait_ready("echo").await.unwrap();
    let mut attempts = Vec::new();
    while attempts.len() < 5 {
        let e = next_event(&mut spawned).await;
        assert_ne!(e.kind.name(), "gave_up");
        if let EventKind::Spawned { attempt, .. } = e.kind {
            attempts.push(attempt);
        }
    }
    assert_eq!(attempts, [1, 2, 3, 4, 5]);
    director.shutdown("done").await;
}

#[actix_rt::test]
async fn remove_forgets_a_child_and_refuses_one_others_depend_on() {
    let director = Director::start();
    director
        .launch(
            [
                fixture_spec("a", &["echo"]),
                fixture_spec("b", &["echo"]).depends_on("a"),
            ],
            [Route::new("a", "b")],
        )
        .await
        .unwrap();
    director.wait_ready("b").await.unwrap();
    let err = director.remove("a").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "child `a` cannot be removed: `b` depend on it"
    );
    director.remove("b").await.unwrap();
    let names: Vec<String> = director
        .children()
        .await
        .unwrap()
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    assert_eq!(names, ["a"]);
    assert!(matches!(
        director.wait_ready("b").await,
        Err(DirectorError::UnknownChild { .. })
    ));
    // Its name is free again.
    director.add(fixture_spec("b", &["echo"])).await.unwrap();
    director.wait_ready("b").await.unwrap();
    director.remove("a").await.unwrap();
    director.shutdown("done").await;
}

#[actix_rt::test]
async fn waits_with_a_bound_say_what_they_waited_for() {
    let director = Director::start();
    director
        .add(fixture_spec("mute", &["echo"]).ready(Ready::Line("^never$".into())))
        .await
        .unwrap();
    let short = Duration::from_millis(50);
    let err = director.wait_ready_within("mute", short).await.unwrap_err();
    assert_eq!(err.to_string(), "child `mute`: not ready within 50ms");
    let err = director.wait_exit_within("mute", short).await.unwrap_err();
    assert_eq!(err.to_string(), "child `mute`: not exited within 50ms");
    director.close_stdin("mute").await.unwrap();
    let exit = director.wait_exit_within("mute", PATIENCE).await.unwrap();
    assert!(exit.status.success());
    let err = director.wait_ready("mute").await.unwrap_err();
    assert!(err.to_string().contains("it exited with"), "{err}");
    director.shutdown("done").await;
}

#[actix_rt::test]
async fn a_request_correlates_by_its_childs_field_and_a_conflicting_one_is_refused() {
    let director = Director::start();
    director
        .launch(
            [
                fixture_spec("svc", &["echo"])
                    .framing(Framing::Json)
                    .request_id_field("rid"),
                fixture_spec("plain", &["echo"]).framing(Framing::Json),
            ],
            [],
        )
        .await
        .unwrap();
    let t = Duration::from_secs(10);
    // The caller's own `id` is left alone.
    let reply: Value = director
        .request("svc", &json!({"id": "mine", "x": 1}), t)
        .await
        .unwrap();
    assert_eq!(reply["id"], "mine");
    assert!(reply["rid"].is_u64(), "{reply}");
    let err = director
        .request::<_, Value>("svc", &json!({"rid": 5}), t)
        .await
        .unwrap_err();
    assert!(matches!(&err, RequestError::IdConflict { field, .. } if field == "rid"));
    assert_eq!(
        err.to_string(),
        "child `svc`: the request already has a `rid` field, which correlates requests with replies (choose another with `request_id_field`)"
    );
    let err = director
        .request::<_, Value>("plain", &json!({"id": 1}), t)
        .await
        .unwrap_err();
    assert!(matches!(&err, RequestError::IdConflict { field, .. } if field == "id"));
    // Errors that say what is wrong.
    let err = director
        .request::<_, Value>("plain", "a string", t)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "child `plain` speaks JSON: a request must be a JSON object, not a string"
    );
    let err = director
        .request::<_, u32>("plain", &json!({"n": 1}), t)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not fit the expected type: invalid type: map"),
        "{err}"
    );
    director.shutdown("done").await;
}

#[actix_rt::test]
async fn wait_ready_waits_through_restarts_and_fails_once_the_child_is_down_for_good() {
    use procession::{RestartPolicy, RestartSpec};
    let director = Director::start();
    let restart = RestartSpec {
        max: 2,
        backoff: Duration::from_millis(10),
        ..RestartSpec::policy(RestartPolicy::OnFailure)
    };
    director
        .add(
            procession::ChildSpec::new("flaky", ["sh", "-c", "exit 3"])
                .ready(Ready::line("^never$"))
                .restart(restart),
        )
        .await
        .unwrap();
    let err = director.wait_ready("flaky").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("exited with exit code 3 before it was ready"),
        "{err}"
    );
    let state = director.children().await.unwrap()[0].state.clone();
    assert!(
        matches!(state, ChildState::GaveUp { .. }),
        "answered only once it gave up, not at its first exit: {state:?}"
    );
    director.shutdown("done").await;
}

#[actix_rt::test]
async fn wait_ready_on_a_child_stopped_in_its_backoff_says_so() {
    use procession::{RestartPolicy, RestartSpec};
    let director = Director::start();
    let restart = RestartSpec {
        backoff: Duration::from_secs(60),
        ..RestartSpec::policy(RestartPolicy::OnFailure)
    };
    director
        .add(
            procession::ChildSpec::new("flaky", ["sh", "-c", "exit 3"])
                .ready(Ready::line("^never$"))
                .restart(restart),
        )
        .await
        .unwrap();
    // Now in its long backoff. join! polls in order: the wait is queued
    // before the stop.
    director.wait_exit("flaky").await.unwrap();
    let (ready, stopped) = futures::join!(
        director.wait_ready_within("flaky", PATIENCE),
        director.stop("flaky", None)
    );
    stopped.unwrap();
    let err = ready.unwrap_err();
    assert_eq!(
        err.to_string(),
        "child `flaky` is not ready: it was stopped"
    );
    director.shutdown("done").await;
}

#[actix_rt::test]
async fn shutdown_now_kills_a_child_that_ignores_term_without_waiting_for_its_grace() {
    let director = Director::start();
    let stubborn = fixture_spec("stubborn", &["ignore-term"])
        .ready(Ready::line("^ready$"))
        .grace(Duration::from_secs(120));
    director.add(stubborn).await.unwrap();
    director
        .wait_ready_within("stubborn", Duration::from_secs(20))
        .await
        .unwrap();
    // A plain shutdown would wait the whole 120 s grace.
    let finals = tokio::time::timeout(Duration::from_secs(20), director.shutdown_now("now"))
        .await
        .expect("shutdown_now does not wait for the grace");
    assert_eq!(finals.len(), 1);
    match &finals[0].state {
        ChildState::Stopped(exit) => {
            assert_eq!(exit.status, ExitStatus::Signal(procession::Signal::Kill))
        }
        other => panic!("stubborn is {other}"),
    }
}
