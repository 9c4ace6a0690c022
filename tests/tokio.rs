//! The library from plain tokio: `#[tokio::main]`-style multi-threaded
//! runtimes, no actix System, no LocalSet. The director and a batch run on
//! threads of their own, which end with them.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use procession::batch::{Batch, BatchOptions, Job};
use procession::Director;
use procession::{EventFilter, Framing};
use serde_json::{json, Value};

/// Threads of this process whose name starts with `prefix` (as the kernel
/// keeps it: at most 15 bytes).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end().starts_with(prefix))
        .count()
}

/// Waits, up to PATIENCE, until `f` holds (a thread ends a moment after
/// its actor stopped).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await; // polling a condition
    }
}

#[test]
fn the_handle_is_clone_send_and_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<Director>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_director_runs_from_plain_tokio_and_its_thread_ends_with_it() {
    let before = threads_named("procession-dire");
    let director = Director::start();
    let mut events = director
        .events(EventFilter::all().kinds([
            procession::Kind::Output,
            procession::Kind::Exited,
            procession::Kind::Finished,
        ]))
        .await
        .unwrap();
    director
        .add(fixture_spec("echo", &["echo"]).framing(Framing::Json))
        .await
        .unwrap();
    // Called from a worker thread of tokio's own, and moved between them.
    let handle = director.clone();
    let reply: Value = tokio::spawn(async move {
        handle
            .request("echo", &json!({"n": 7}), Duration::from_secs(10))
            .await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(reply["n"], 7);
    director.close_stdin("echo").await.unwrap();
    assert!(director.wait_exit("echo").await.unwrap().status.success());
    director.shutdown("done").await;
    let mut kinds = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while let Some(e) = events.next().await {
            kinds.push(e.kind.name());
        }
    })
    .await
    .expect("the stream ends after finished");
    assert_eq!(kinds.last(), Some(&"finished"), "{kinds:?}");
    assert!(kinds.contains(&"exited"), "{kinds:?}");
    eventually("the director's thread ends after its shutdown", || {
        threads_named("procession-dire") == before
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_from_plain_tokio_and_is_a_stream() {
    let jobs = (0..5).map(|i| Job::new(format!("j{i}"), ["echo", &format!("job {i}")]));
    let batch = Batch::start(jobs, BatchOptions::default()).unwrap();
    let mut results: Vec<_> = StreamExt::collect::<Vec<_>>(batch).await;
    results.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(results.len(), 5);
    for (i, r) in results.iter().enumerate() {
        assert!(r.success(), "{r:?}");
        assert_eq!(r.stdout.text_lossy().unwrap(), format!("job {i}\n"));
    }
    eventually("the batch's thread ends with it", || {
        threads_named("procession-batc") == 0
    })
    .await;
}
