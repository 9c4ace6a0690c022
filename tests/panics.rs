//! A bug that panics inside an actor fails the run, stops every child and
//! never leaves anything hung (DESIGN.md invariant 5). The panics are made
//! on purpose with `procession::fault`, armed on the test's own thread (the
//! thread its actors run on).

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use procession::batch::{Batch, BatchOptions, Job};
use procession::fault::{self, Point};
use procession::protocol::{Protocol, Step};
use procession::Director;
use procession::{DirectorError, EventFilter, EventKind};

/// The pid in the first `spawned` event of `child`.
async fn spawned_pid(events: &mut tokio::sync::mpsc::UnboundedReceiver<procession::Event>) -> u32 {
    let seen = until(events, |e| e.kind.name() == "spawned").await;
    match seen.last().map(|e| &e.kind) {
        Some(EventKind::Spawned { pid, .. }) => *pid,
        other => panic!("{other:?}"),
    }
}

/// The run's last events: the `shutdown` reasons and `finished`'s verdict.
async fn ending(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<procession::Event>,
) -> (Vec<String>, bool) {
    let seen = until(events, |e| e.kind.name() == "finished").await;
    let reasons = seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Shutdown { reason } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    match seen.last().map(|e| &e.kind) {
        Some(EventKind::Finished { passed }) => (reasons, *passed),
        other => panic!("{other:?}"),
    }
}

#[actix_rt::test]
async fn a_child_actor_that_panics_as_it_stops_does_not_hang_the_shutdown() {
    // The defect: the actor died in its `Stop` handler, and the director
    // waited for its exit forever, deaf to signals.
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    director.add(fixture_spec("a", &["sleep"])).await.unwrap();
    let pid = spawned_pid(&mut events).await;
    let _reaper = Reaper(vec![pid]);
    until(&mut events, |e| is(e, "a", "ready")).await;

    fault::arm(Point::ChildStop);
    let finals = tokio::time::timeout(PATIENCE, director.shutdown("test over"))
        .await
        .expect("the shutdown ends although the child's actor panicked");
    assert_eq!(finals.len(), 1);
    let (reasons, passed) = ending(&mut events).await;
    assert!(!passed, "a run in which an actor panicked did not pass");
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("internal error") && r.contains("injected fault at child-stop")),
        "{reasons:?}"
    );
    eventually("the child is gone", || !alive(pid)).await;
}

#[actix_rt::test]
async fn a_panic_in_a_child_actors_output_fails_the_protocol_at_once() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    fault::arm(Point::ChildOutput);
    // It would wait a minute for a line that never comes.
    let steps = Protocol {
        steps: vec![Step::expect_line("a", "^never$").within(Duration::from_secs(60))],
        ..Protocol::default()
    };
    let run = director.run([fixture_spec("a", &["sleep"])], [], steps);
    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("the run ends at once")
        .unwrap();
    assert!(!report.passed);
    let (reasons, passed) = ending_after_shutdown(&director, &mut events).await;
    assert!(!passed);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("injected fault at child-output")),
        "{reasons:?}"
    );
}

/// Shuts the director down (a no-op if it is shutting down already) and
/// returns [`ending`].
async fn ending_after_shutdown(
    director: &Director,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<procession::Event>,
) -> (Vec<String>, bool) {
    tokio::time::timeout(PATIENCE, director.shutdown("test over"))
        .await
        .expect("the shutdown ends");
    ending(events).await
}

#[actix_rt::test]
async fn a_director_that_panics_stops_its_children_and_ends_its_events() {
    let director = Director::start();
    let mut events = tap(&director, EventFilter::all()).await;
    director.add(fixture_spec("a", &["echo"])).await.unwrap();
    let pid = spawned_pid(&mut events).await;
    let _reaper = Reaper(vec![pid]);
    // The echo of this line makes the director panic.
    fault::arm(Point::Director);
    let r = director.deliver_line("a", "hello").await;
    assert!(r.is_ok(), "{r:?}");
    let (reasons, passed) = ending(&mut events).await;
    assert!(!passed);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("injected fault at director")),
        "{reasons:?}"
    );
    eventually("the child is gone", || !alive(pid)).await;
    assert!(matches!(
        director.children().await,
        Err(DirectorError::Gone)
    ));
}

#[actix_rt::test]
async fn a_panic_in_a_batch_fails_it_and_stops_every_job() {
    fault::arm(Point::ChildOutput);
    let jobs = vec![
        Job::new("talks", [fixture(), "lines", "3"]),
        Job::new("sleeps", [fixture(), "sleep"]),
    ];
    let options = BatchOptions {
        concurrency: 2,
        ..BatchOptions::default()
    };
    let mut batch = Batch::start(jobs, options).unwrap();
    let drained = tokio::time::timeout(PATIENCE, async { while batch.next().await.is_some() {} });
    drained
        .await
        .expect("the batch ends although a job's actor panicked");
    let failure = batch.failure().expect("the batch failed as a whole");
    assert!(
        failure.contains("injected fault at child-output"),
        "{failure}"
    );
}
