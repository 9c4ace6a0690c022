//! Batch runs against the fixture: exact results, no pipe deadlock, bounded
//! concurrency, timeouts that take grandchildren along, retries.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use procession::batch::{Batch, BatchOptions, Job};
use procession::{ExitStatus, Signal};

fn job(key: &str, args: &[&str]) -> Job {
    let mut argv = vec![fixture().to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    Job::new(key, argv)
}

#[actix_rt::test]
async fn five_hundred_mixed_jobs_give_exact_results() {
    let jobs: Vec<Job> = (0..500)
        .map(|i| job(&format!("job{i}"), &["mixed", &i.to_string()]))
        .collect();
    let batch = Batch::start(
        jobs,
        BatchOptions {
            concurrency: 8,
            ..BatchOptions::default()
        },
    )
    .unwrap();
    let results = batch.collect().await;
    assert_eq!(results.len(), 500);
    for i in 0..500 {
        let r = &results[&format!("job{i}")];
        assert_eq!(r.exit_code(), Some(i % 4), "job{i}");
        assert_eq!(r.signal(), None);
        assert_eq!(
            r.stdout.bytes().unwrap(),
            format!("out {i}\n").as_bytes(),
            "job{i}"
        );
        assert_eq!(
            r.stderr.bytes().unwrap(),
            format!("err {i}\n").as_bytes(),
            "job{i}"
        );
        assert_eq!(r.attempts, 1);
    }
}

#[actix_rt::test]
async fn a_job_filling_its_stderr_pipe_finishes() {
    // 1 MiB on stderr and nothing on stdout: a reader that only drains
    // stdout deadlocks here.
    let results = Batch::start(
        vec![job("loud", &["flood", "1", "stderr"])],
        BatchOptions::default(),
    )
    .unwrap()
    .collect()
    .await;
    let r = &results["loud"];
    assert!(r.success());
    assert_eq!(r.stdout.len(), 0);
    assert_eq!(r.stderr.len(), 1 << 20);
}

#[actix_rt::test]
async fn concurrency_is_bounded() {
    let jobs: Vec<Job> = (0..12)
        .map(|i| job(&i.to_string(), &["lines", "20000"]))
        .collect();
    let results = Batch::start(
        jobs,
        BatchOptions {
            concurrency: 2,
            ..BatchOptions::default()
        },
    )
    .unwrap()
    .collect()
    .await;
    // At no moment did more than two jobs run: count overlaps at each start.
    let spans: Vec<(Duration, Duration)> = results.values().map(|r| (r.started, r.ended)).collect();
    let most = spans
        .iter()
        .map(|&(at, _)| spans.iter().filter(|&&(s, e)| s <= at && at < e).count())
        .max()
        .unwrap();
    assert_eq!(most, 2, "{spans:?}");
}

#[actix_rt::test]
async fn a_job_over_its_timeout_is_stopped_with_its_grandchildren() {
    let mut batch = Batch::start(
        vec![job("slow", &["fork", "2"])],
        BatchOptions {
            timeout: Some(Duration::from_millis(300)),
            ..BatchOptions::default()
        },
    )
    .unwrap();
    let r = batch.next().await.unwrap();
    let out = String::from_utf8(r.stdout.bytes().unwrap()).unwrap();
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    let pids = grandchild_pids(&lines);
    let _reaper = Reaper(pids.clone());
    assert_eq!(pids.len(), 2, "{out}");
    assert!(r.timed_out);
    assert_eq!(r.status, Some(ExitStatus::Signal(Signal::Term)));
    assert!(
        pids.iter().all(|&p| !alive(p)),
        "a grandchild survived the timeout"
    );
    let mut json = Vec::new();
    r.write_json_line(&mut json).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["timed_out"], true);
    assert_eq!(v["signal"], "TERM");
    assert!(batch.next().await.is_none());
}

#[actix_rt::test]
async fn failed_jobs_are_retried_and_a_missing_program_is_reported() {
    let results = Batch::start(
        vec![
            job("flaky", &["exit", "3"]),
            Job::new("ghost", ["no-such-program-procession"]),
        ],
        BatchOptions {
            retries: 2,
            ..BatchOptions::default()
        },
    )
    .unwrap()
    .collect()
    .await;
    assert_eq!(results["flaky"].attempts, 3);
    assert_eq!(results["flaky"].exit_code(), Some(3));
    let ghost = &results["ghost"];
    assert_eq!(ghost.status, None);
    assert!(
        ghost.error.as_deref().unwrap().contains("not found"),
        "{:?}",
        ghost.error
    );
}

#[actix_rt::test]
async fn large_output_spills_and_the_json_line_is_still_exact() {
    let results = Batch::start(
        vec![job("big", &["lines", "200000"])],
        BatchOptions {
            spill_threshold: 64 * 1024,
            ..BatchOptions::default()
        },
    )
    .unwrap()
    .collect()
    .await;
    let r = &results["big"];
    assert!(r.stdout.path().is_some(), "spilled to a file");
    let mut json = Vec::new();
    r.write_json_line(&mut json).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let expected: String = (1..=200000).map(|i| format!("line {i}\n")).collect();
    assert_eq!(v["stdout"].as_str().unwrap(), expected);
}

#[actix_rt::test]
async fn a_job_that_reads_stdin_sees_end_of_file() {
    // Batch jobs get /dev/null: `count` reads to end of file and reports 0.
    // With a stdin pipe that nobody closes it would wait forever.
    let results = Batch::start(
        vec![job("reader", &["count"])],
        BatchOptions {
            timeout: Some(PATIENCE),
            ..BatchOptions::default()
        },
    )
    .unwrap()
    .collect()
    .await;
    let r = &results["reader"];
    assert!(!r.timed_out);
    assert!(r.success(), "{r:?}");
    assert_eq!(r.stdout.bytes().unwrap(), b"count 0\n");
}

/// Regression (issue 15, item 10): a job that exits 0 when the timeout's
/// SIGTERM reaches it was a success (`timed_out: true`, `exit_code: 0`,
/// batch exit status 0); a timed-out job is a failure.
#[actix_rt::test]
async fn a_job_stopped_by_its_timeout_failed_even_if_it_exited_0() {
    let script = "trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done";
    let mut batch = Batch::start(
        vec![procession::batch::Job::new("polite", ["sh", "-c", script])],
        BatchOptions {
            timeout: Some(Duration::from_millis(300)),
            ..BatchOptions::default()
        },
    )
    .unwrap();
    let r = batch.next().await.unwrap();
    assert!(r.timed_out);
    assert_eq!(r.status, Some(ExitStatus::Code(0)), "it exited 0 on TERM");
    assert!(!r.success(), "timed out: a failure");
    assert!(batch.next().await.is_none());
}

/// Regression (issue 15, item 13): a grandchild holding a pipe open left no
/// trace in the result; it now says `output_complete: false`.
#[actix_rt::test]
async fn a_grandchild_holding_the_pipe_is_told_in_the_result() {
    let mut batch = Batch::start(
        vec![job("leaky", &["fork", "1", "--exit"])],
        BatchOptions::default(),
    )
    .unwrap();
    let r = batch.next().await.unwrap();
    let out = String::from_utf8(r.stdout.bytes().unwrap()).unwrap();
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    let pids = grandchild_pids(&lines);
    let _reaper = Reaper(pids.clone());
    assert!(!r.output_complete, "{out}");
    // Killed with the group once the drain time was over (SIGKILL is sent;
    // its death is the kernel's next step).
    eventually("the grandchild is gone", || pids.iter().all(|&p| !alive(p))).await;
    let mut json = Vec::new();
    r.write_json_line(&mut json).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["output_complete"], false);
    assert!(batch.next().await.is_none());
}

/// Regression (issue 15, item 14): the stop grace of a timed-out job was a
/// fixed 5 s; `BatchOptions::grace` (`--grace`) sets it. A job that ignores
/// TERM is killed once its 100 ms grace is over, well before 5 s.
#[actix_rt::test]
async fn a_timed_out_job_is_killed_after_the_grace_given() {
    let mut batch = Batch::start(
        vec![job("stubborn", &["ignore-term"])],
        BatchOptions {
            timeout: Some(Duration::from_millis(200)),
            grace: Duration::from_millis(100),
            ..BatchOptions::default()
        },
    )
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(4), batch.next())
        .await
        .expect("killed after its 100 ms grace, not after 5 s")
        .unwrap();
    assert!(r.timed_out);
    assert_eq!(r.status, Some(ExitStatus::Signal(Signal::Kill)));
}

/// Regression (issue 15, item 12): `--output-dir` followed an existing
/// symlink `DIR/KEY.stdout` and overwrote the file outside it points at.
#[actix_rt::test]
async fn an_output_file_that_is_a_symlink_is_refused_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let precious = outside.path().join("precious");
    std::fs::write(&precious, "keep me").unwrap();
    std::os::unix::fs::symlink(&precious, dir.path().join("j.stdout")).unwrap();
    let mut batch = Batch::start(
        vec![job("j", &["say", "overwritten?"])],
        BatchOptions {
            output_dir: Some(dir.path().to_path_buf()),
            ..BatchOptions::default()
        },
    )
    .unwrap();
    let r = batch.next().await.unwrap();
    let error = r.error.clone().expect("refused");
    assert!(error.contains("symbolic link"), "{error}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    assert!(batch.next().await.is_none());
}

/// Regression (issue 15, item 8): output that is not UTF-8 came back lossy
/// in `stdout` (U+FFFD, no flag); it is given as `stdout_base64`, exact.
#[actix_rt::test]
async fn output_that_is_not_utf8_is_given_exactly_as_base64() {
    use base64::Engine as _;
    for spill_threshold in [1 << 20, 8] {
        let mut batch = Batch::start(
            vec![job("raw", &["bad-utf8"]), job("text", &["say", "plain"])],
            BatchOptions {
                spill_threshold,
                ..BatchOptions::default()
            },
        )
        .unwrap();
        let mut lines = std::collections::BTreeMap::new();
        while let Some(r) = batch.next().await {
            let mut json = Vec::new();
            r.write_json_line(&mut json).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            lines.insert(r.key.clone(), (v, r.stdout.bytes().unwrap()));
        }
        let (raw, bytes) = &lines["raw"];
        assert!(raw.get("stdout").is_none(), "{raw}");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(raw["stdout_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(&decoded, bytes, "exact bytes (spill at {spill_threshold})");
        assert!(std::str::from_utf8(bytes).is_err());
        let (text, _) = &lines["text"];
        assert_eq!(text["stdout"], "plain\n", "text stays text");
        assert!(text.get("stdout_base64").is_none());
    }
}

/// `Batch::start_stream`: the first job runs as soon as it arrives, and a
/// job is taken off the channel only when there is room to start it, so
/// the channel's capacity bounds what is read ahead (issue 15, item 11).
#[actix_rt::test]
async fn a_streamed_batch_takes_a_job_only_when_it_can_start_it() {
    use tokio::sync::mpsc::error::TrySendError;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let options = BatchOptions {
        concurrency: 1,
        ..BatchOptions::default()
    };
    let mut batch = Batch::start_stream(rx, options).unwrap();
    tx.send(job("first", &["lines", "1"])).await.unwrap();
    let first = tokio::time::timeout(PATIENCE, batch.next())
        .await
        .expect("a result while the stream is open")
        .unwrap();
    assert_eq!(first.key, "first");
    assert!(first.success());

    // `sleeps` takes the one place; `waits` is then taken by nobody.
    tx.send(job("sleeps", &["sleep"])).await.unwrap();
    tx.send(job("waits", &["lines", "1"])).await.unwrap();
    assert!(
        matches!(
            tx.try_send(job("more", &["lines", "1"])),
            Err(TrySendError::Full(_))
        ),
        "nothing more is read ahead"
    );
    batch.cancel();
    let rest = tokio::time::timeout(PATIENCE, async {
        let mut keys = Vec::new();
        while let Some(r) = batch.next().await {
            keys.push(r.key);
        }
        keys
    })
    .await
    .expect("a cancelled batch ends");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(tx.is_closed(), "the batch wants no more jobs");
}

#[actix_rt::test]
async fn a_streamed_job_whose_key_is_running_is_refused_by_name() {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let options = BatchOptions {
        concurrency: 2,
        ..BatchOptions::default()
    };
    let mut batch = Batch::start_stream(rx, options).unwrap();
    tx.send(job("x", &["sleep"])).await.unwrap();
    tx.send(job("x", &["lines", "1"])).await.unwrap();
    let twice = tokio::time::timeout(PATIENCE, batch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(twice.key, "x");
    assert_eq!(twice.error.as_deref(), Some("job key `x` is used twice"));
    assert!(!twice.success());
    drop(tx);
    batch.cancel();
    while batch.next().await.is_some() {}
}

#[actix_rt::test]
async fn a_batch_is_a_stream_of_its_results() {
    use futures::StreamExt;
    let jobs: Vec<Job> = (0..5)
        .map(|i| {
            Job::new(
                i.to_string(),
                [fixture(), "exit", &(i % 2).to_string()]
                    .map(String::from)
                    .to_vec(),
            )
        })
        .collect();
    let batch = Batch::start(jobs, BatchOptions::default()).unwrap();
    let failed: Vec<String> = batch
        .filter(|r| std::future::ready(!r.success()))
        .map(|r| r.key)
        .collect()
        .await;
    let mut failed = failed;
    failed.sort();
    assert_eq!(failed, ["1", "3"]);
}

#[actix_rt::test]
async fn a_job_reads_the_input_it_was_given_then_end_of_file() {
    let big = "x".repeat(3 << 20); // more than a pipe and a stdin queue hold
    let jobs = vec![
        Job::new("cat", ["cat"]).stdin("one\ntwo\n"),
        Job::new("count", ["wc", "-c"]).stdin(big.clone()),
        Job::new("none", ["cat"]),
    ];
    let results = Batch::start(jobs, BatchOptions::default())
        .unwrap()
        .collect()
        .await;
    assert_eq!(results["cat"].stdout.text_lossy().unwrap(), "one\ntwo\n");
    let counted = results["count"].stdout.text_lossy().unwrap();
    assert_eq!(counted.trim(), big.len().to_string());
    assert_eq!(
        results["none"].stdout.text_lossy().unwrap(),
        "",
        "/dev/null"
    );
    assert!(results.values().all(|r| r.success()));
}

/// Issue 21: with an output directory, a job's stdout and stderr *are* its
/// files (no pipe, no copy), a retry starts them afresh, and the result
/// gives their exact lengths.
#[actix_rt::test]
async fn output_files_are_the_jobs_own_stdout_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    // The first attempt writes more than the second, then fails.
    let marker = dir.path().join("tried");
    let script = format!(
        "readlink /proc/self/fd/1; readlink /proc/self/fd/2 >&2; \
         if [ ! -e '{0}' ]; then touch '{0}'; echo first attempt, longer; exit 1; fi",
        marker.display()
    );
    let job = Job::new("j", ["sh", "-c", &script]);
    let mut batch = Batch::start(
        vec![job],
        BatchOptions {
            output_dir: Some(dir.path().to_path_buf()),
            retries: 1,
            ..BatchOptions::default()
        },
    )
    .unwrap();
    let r = batch.next().await.unwrap();
    assert_eq!(r.attempts, 2);
    assert!(r.status.unwrap().success());
    let out = dir.path().join("j.stdout");
    let err = dir.path().join("j.stderr");
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert_eq!(stdout, format!("{}\n", out.display()), "stdout is the file");
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert_eq!(stderr, format!("{}\n", err.display()), "stderr is the file");
    assert_eq!(r.stdout.len(), stdout.len() as u64);
    assert_eq!(r.stderr.len(), stderr.len() as u64);
    assert!(r.output_complete);
    assert!(batch.next().await.is_none());
}
