//! Three of the four programs an experienced Rust developer wrote from the
//! docs alone (issue 17), as a user writes them now: plain tokio, the
//! prelude, no actor of their own, no internal import. (The fourth, an
//! actix service that reacts to events and exits 130 on Ctrl-C, is
//! `procession-test-host --director`, driven by the death tests.)

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::fixture;
use futures::StreamExt;
use procession::prelude::*;
use serde::Deserialize;
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(20);

/// Bounds a whole test, so that a call that never returns fails it.
async fn bounded(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("the test ends within a minute")
}

/// A mediator: two children, input given at runtime to the first, whose
/// output feeds the second; the second's output read from the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mediator_feeds_what_it_is_given_through_one_child_into_another() {
    bounded(async {
        let director = Director::start();
        let mut from_b = director
            .events(EventFilter::all().children(["b"]).kinds([Kind::Output]))
            .await
            .unwrap();
        let a = ChildSpec::new("a", [fixture(), "echo"]);
        let b = ChildSpec::new("b", [fixture(), "echo"]);
        director
            .launch([a, b], [Route::new("a", "b")])
            .await
            .unwrap();
        for word in ["one", "two", "three"] {
            director.deliver_line("a", word).await.unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 3 {
            let event = tokio::time::timeout(PATIENCE, from_b.next())
                .await
                .expect("b prints what a printed")
                .expect("the stream lasts as long as the director");
            if let EventKind::Output {
                frame: Frame::Line(line),
                ..
            } = event.kind
            {
                got.push(line);
            }
        }
        assert_eq!(got, ["one", "two", "three"]);
        director.shutdown("done").await;
    })
    .await;
}

/// A keyed pool: jobs with keys, a few at a time, results collected by key
/// from the batch's stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_pool_runs_every_job_once_and_gives_each_result_its_key() {
    bounded(async {
        let jobs =
            (1..=12).map(|i| Job::new(format!("job{i}"), [fixture(), "mixed", &i.to_string()]));
        let options = BatchOptions {
            concurrency: 3,
            ..BatchOptions::default()
        };
        let batch = Batch::start(jobs, options).unwrap();
        let results: HashMap<String, JobResult> =
            tokio::time::timeout(PATIENCE, batch.map(|r| (r.key.clone(), r)).collect())
                .await
                .expect("the batch ends");
        assert_eq!(results.len(), 12);
        for i in 1..=12 {
            let r = &results[&format!("job{i}")];
            assert_eq!(r.status, Some(ExitStatus::Code(i % 4)), "job{i}");
            assert_eq!(
                r.stdout.text_lossy().unwrap(),
                format!("out {i}\n"),
                "job{i}"
            );
        }
    })
    .await;
}

/// Adds `a` and `b` of each request; exits 1 on `{"op": "crash"}`.
const WORKER: &str = r#"
import json, sys
for line in sys.stdin:
    req = json.loads(line)
    if req.get("op") == "crash":
        sys.exit(1)
    print(json.dumps({"id": req["id"], "sum": req["a"] + req["b"]}), flush=True)
"#;

/// A worker that answers correlated requests, crashes on one, and is
/// restarted: the crash is the failed request's error, and the next
/// request reaches the new instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_a_worker_that_crashes_fail_with_the_reason_and_resume_after_its_restart() {
    bounded(async {
        #[derive(Debug, Deserialize)]
        struct Sum {
            sum: i64,
        }
        let director = Director::start();
        let worker = ChildSpec::new("adder", ["python3", "-c", WORKER])
            .framing(Framing::Json)
            .restart(RestartSpec::on_failure());
        director.add(worker).await.unwrap();
        director.wait_ready_within("adder", PATIENCE).await.unwrap();

        let reply: Sum = director
            .request("adder", &json!({"a": 1, "b": 2}), PATIENCE)
            .await
            .unwrap();
        assert_eq!(reply.sum, 3);
        let err = director
            .request::<_, Sum>("adder", &json!({"op": "crash"}), PATIENCE)
            .await
            .unwrap_err();
        assert!(matches!(err, RequestError::NoReply { .. }), "{err}");
        // wait_ready waits through the restart.
        director.wait_ready_within("adder", PATIENCE).await.unwrap();
        let reply: Sum = director
            .request("adder", &json!({"a": 3, "b": 4}), PATIENCE)
            .await
            .unwrap();
        assert_eq!(reply.sum, 7);
        let adder = director
            .children()
            .await
            .unwrap()
            .into_iter()
            .find(|c| &*c.name == "adder");
        assert_eq!(adder.map(|c| c.restarts), Some(1));
        director.shutdown("done").await;
    })
    .await;
}
