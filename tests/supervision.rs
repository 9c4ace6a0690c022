//! Supervision: restart policies, intensity, backoff, strategies,
//! significant children, buffering while restarting, and the watchdog.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use procession::{ChildSpec, DirectorConfig, DirectorError, Event, EventFilter, EventKind, Frame};
use procession::{ChildState, Director, RestartPolicy, RestartSpec, Strategy};
use tokio::sync::mpsc;

fn restart(policy: RestartPolicy, max: u32, backoff_ms: u64) -> RestartSpec {
    RestartSpec {
        max,
        backoff: Duration::from_millis(backoff_ms),
        max_backoff: Duration::from_secs(5),
        ..RestartSpec::policy(policy)
    }
}

fn spawned_attempt(e: &Event, child: &str, attempt: u32) -> bool {
    e.child.as_deref() == Some(child)
        && matches!(e.kind, EventKind::Spawned { attempt: a, .. } if a == attempt)
}

#[actix_rt::test]
async fn on_failure_with_max_3_spawns_4_times_then_gives_up() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    let spec =
        fixture_spec("crasher", &["exit", "3"]).restart(restart(RestartPolicy::OnFailure, 3, 10));
    director.add(spec).await.unwrap();
    let seen = until(&mut events, |e| is(e, "crasher", "gave_up")).await;
    assert_eq!(count(&seen, "crasher", "spawned"), 4);
    assert_eq!(count(&seen, "crasher", "restarting"), 3);
    assert!(matches!(
        seen.last().unwrap().kind,
        EventKind::GaveUp { restarts: 3 }
    ));
    // It stays down, and says so to whoever writes to it.
    let listed = director.children().await.unwrap();
    assert!(matches!(
        listed[0].state,
        ChildState::GaveUp { restarts: 3, .. }
    ));
    let err = director.deliver_line("crasher", "hello").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "child `crasher` is not running (gave up after 3 restarts (last: exit code 3))"
    );
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn always_restarts_after_exit_0_and_never_spawns_once() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    director
        .launch(
            [
                fixture_spec("phoenix", &["exit", "0"]).restart(restart(
                    RestartPolicy::Always,
                    2,
                    10,
                )),
                fixture_spec("once", &["exit", "0"]).restart(restart(RestartPolicy::Never, 2, 10)),
                fixture_spec("clean", &["exit", "0"]).restart(restart(
                    RestartPolicy::OnFailure,
                    2,
                    10,
                )),
            ],
            [],
        )
        .await
        .unwrap();
    let seen = until(&mut events, |e| is(e, "phoenix", "gave_up")).await;
    assert_eq!(
        count(&seen, "phoenix", "spawned"),
        3,
        "always: max 2 -> 3 spawns"
    );
    // `never` and a clean exit under `on-failure` are final at once: the
    // restart decision is made when the exit is handled.
    for name in ["once", "clean"] {
        let exit = director.wait_exit(name).await.unwrap();
        assert!(exit.status.success());
        let state = director
            .children()
            .await
            .unwrap()
            .into_iter()
            .find(|c| &*c.name == name)
            .unwrap()
            .state;
        assert!(matches!(state, ChildState::Exited(_)), "{name}: {state:?}");
    }
    let all: Vec<Event> = seen;
    assert_eq!(count(&all, "once", "restarting"), 0);
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn backoff_delays_are_at_least_the_configured_ones_and_grow() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    let spec = fixture_spec("flaky", &["exit", "1"]).restart(RestartSpec {
        max: 4,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        ..RestartSpec::policy(RestartPolicy::OnFailure)
    });
    director.add(spec).await.unwrap();
    let seen = until(&mut events, |e| is(e, "flaky", "gave_up")).await;
    let delays: Vec<u64> = seen
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Restarting { delay_ms, .. } => Some(delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [100, 200, 400, 800]);
    let spawns: Vec<u64> = seen
        .iter()
        .filter(|e| is(e, "flaky", "spawned"))
        .map(|e| e.t_ms)
        .collect();
    assert_eq!(spawns.len(), 5);
    for (i, pair) in spawns.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= delays[i],
            "spawn {} came {gap} ms after the one before, under {} ms",
            i + 2,
            delays[i]
        );
    }
    director.shutdown("test over").await;
}

/// Three siblings a, b, c started in that order; b fails on request.
async fn siblings_under(
    strategy: Strategy,
) -> (Director, mpsc::UnboundedReceiver<Event>, Vec<Event>) {
    let director = Director::with_config(DirectorConfig {
        strategy,
        ..DirectorConfig::default()
    });
    let mut events = tap(&director, EventFilter::all()).await;
    let child = |name: &str| {
        fixture_spec(name, &["echo-or-die"])
            .restart(restart(RestartPolicy::OnFailure, 3, 10))
            .grace(Duration::from_secs(2))
    };
    director
        .launch([child("a"), child("b"), child("c")], [])
        .await
        .unwrap();
    let mut first = until(&mut events, |e| is(e, "c", "spawned")).await;
    for name in ["a", "b", "c"] {
        assert!(first.iter().any(|e| spawned_attempt(e, name, 1)));
    }
    director.deliver_line("b", "die").await.unwrap();
    first.extend(until(&mut events, |e| is(e, "b", "exited")).await);
    (director, events, first)
}

#[actix_rt::test]
async fn one_for_all_restarts_every_sibling_in_start_order() {
    let (director, mut events, _) = siblings_under(Strategy::OneForAll).await;
    let seen = until(&mut events, |e| spawned_attempt(e, "c", 2)).await;
    let respawned: Vec<&str> = seen
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Spawned { attempt: 2, .. }))
        .map(|e| e.child.as_deref().unwrap())
        .collect();
    assert_eq!(respawned, ["a", "b", "c"]);
    assert_eq!(
        count(&seen, "a", "exited"),
        1,
        "a was stopped for the restart"
    );
    assert_eq!(
        count(&seen, "c", "exited"),
        1,
        "c was stopped for the restart"
    );
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn rest_for_one_restarts_the_failed_child_and_those_started_after_it() {
    let (director, mut events, _) = siblings_under(Strategy::RestForOne).await;
    let seen = until(&mut events, |e| spawned_attempt(e, "c", 2)).await;
    assert!(seen.iter().any(|e| spawned_attempt(e, "b", 2)));
    assert_eq!(
        count(&seen, "a", "exited"),
        0,
        "a, started before b, was left alone"
    );
    assert_eq!(count(&seen, "a", "spawned"), 0);
    assert_eq!(count(&seen, "c", "exited"), 1);
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn one_for_one_restarts_only_the_failed_child() {
    let (director, mut events, _) = siblings_under(Strategy::OneForOne).await;
    let seen = until(&mut events, |e| spawned_attempt(e, "b", 2)).await;
    for other in ["a", "c"] {
        assert_eq!(count(&seen, other, "exited"), 0, "{other} was stopped");
    }
    // b is back and answers.
    let echo: String = director
        .request("b", "still there?", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(echo, "ready", "a new instance says ready first");
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn frames_sent_while_a_child_restarts_reach_the_new_instance_in_order() {
    let director = Director::with_config(DirectorConfig {
        restart_buffer: 4096,
        ..DirectorConfig::default()
    });
    let mut events = tap(&director, EventFilter::all()).await;
    let spec =
        fixture_spec("svc", &["echo-or-die"]).restart(restart(RestartPolicy::OnFailure, 3, 300));
    director.add(spec).await.unwrap();
    until(&mut events, |e| is(e, "svc", "ready")).await;
    director.deliver_line("svc", "die").await.unwrap();
    until(&mut events, |e| is(e, "svc", "restarting")).await;
    for i in 1..=100 {
        director.deliver_line("svc", format!("m{i}")).await.unwrap();
    }
    // Past the buffer, a sender is told.
    let err = director
        .deliver_line("svc", "x".repeat(5000))
        .await
        .unwrap_err();
    assert!(matches!(err, DirectorError::BufferFull { .. }), "{err}");
    assert!(err.to_string().contains("svc"));

    // The new instance says `ready`, then echoes what waited for it.
    let mut echoed = Vec::new();
    while echoed.last().map(String::as_str) != Some("m100") {
        let e = next_event(&mut events).await;
        if let (
            Some("svc"),
            EventKind::Output {
                frame: Frame::Line(line),
                ..
            },
        ) = (e.child.as_deref(), e.kind)
        {
            if line.starts_with('m') {
                echoed.push(line);
            }
        }
    }
    let expected: Vec<String> = (1..=100).map(|i| format!("m{i}")).collect();
    assert_eq!(echoed, expected);
    director.shutdown("test over").await;
}

#[actix_rt::test]
async fn a_significant_child_ending_shuts_the_director_down() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    director
        .launch(
            [
                fixture_spec("sidecar", &["sleep"]),
                fixture_spec("main", &["exit", "0"])
                    .significant()
                    .depends_on("sidecar"),
            ],
            [],
        )
        .await
        .unwrap();
    let seen = until(&mut events, |e| is(e, "sidecar", "exited")).await;
    let reason = seen
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Shutdown { reason } => Some(reason.clone()),
            _ => None,
        })
        .expect("a shutdown event");
    assert_eq!(reason, "significant child `main` ended");
    match &seen.last().unwrap().kind {
        EventKind::Exited { requested, .. } => assert!(requested),
        other => panic!("{other:?}"),
    }
    // The director is gone once everything stopped.
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while director.children().await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the director did not stop"
        );
        tick.tick().await;
    }
}

#[actix_rt::test]
async fn a_sigkilled_host_leaves_no_child_or_grandchild_behind() {
    let mut host = Command::new(host())
        .args(["--director", fixture(), "fork", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reaper = Reaper(vec![host.id()]);
    let mut out = BufReader::new(host.stdout.take().unwrap());
    let mut pids = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the host ended early"
        );
        let line = line.trim();
        if let Some(pid) = line.strip_prefix("child ") {
            pids.push(pid.parse().unwrap());
        } else if let Some(pid) = line.strip_prefix("out grandchild ") {
            pids.push(pid.parse().unwrap());
        } else if line == "out ready" {
            break;
        }
    }
    reaper.0.extend(&pids);
    assert_eq!(pids.len(), 3, "a child and two grandchildren: {pids:?}");
    assert!(pids.iter().all(|&p| alive(p)));

    let killed = std::time::Instant::now();
    host.kill().unwrap(); // SIGKILL
    host.wait().unwrap();
    eventually("no child or grandchild survives", || {
        pids.iter().all(|&p| !alive(p))
    })
    .await;
    eprintln!("all gone {:?} after the host's SIGKILL", killed.elapsed());
}

#[actix_rt::test]
async fn a_restart_is_rebuilt_from_the_spec() {
    // The environment of the spec, not anything the old instance did.
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    let spec = ChildSpec::new("envy", ["/bin/sh", "-c", "echo $TOKEN; exit 1"])
        .env("TOKEN", "from-spec")
        .restart(restart(RestartPolicy::OnFailure, 1, 10));
    director.add(spec).await.unwrap();
    let seen = until(&mut events, |e| is(e, "envy", "gave_up")).await;
    let lines: Vec<&str> = seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Output {
                frame: Frame::Line(l),
                ..
            } => Some(l.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(lines, ["from-spec", "from-spec"]);
    director.shutdown("test over").await;
}
