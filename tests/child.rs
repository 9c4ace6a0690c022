//! ChildActor against real processes (the fixture program).

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use procession::child::{
    ChildActor, ChildEventKind, CloseStdin, GetStdin, SendSignal, Stop, WaitExit, Write,
};
use procession::{
    ChildSpec, ExitStatus, Frame, Framing, Signal, SpawnError, StderrMode, StdinError, Stream,
};
use serde_json::json;

#[actix_rt::test]
async fn lines_printed_right_before_exit_arrive_complete_and_in_order() {
    const RUNS: usize = 10;
    const LINES: usize = 100_000;
    for run in 0..RUNS {
        let (owner, mut events) = collector();
        let spec = fixture_spec("printer", &["lines", "100000"]);
        ChildActor::start(spec, owner).unwrap();
        let (all, exit) = events.until_exit().await;
        assert_eq!(exit.status, ExitStatus::Code(0));
        assert!(exit.output_complete, "run {run}");
        assert!(!exit.requested);
        assert!(matches!(all[0].kind, ChildEventKind::Spawned { .. }));
        assert_contiguous(&all);
        let got = lines(&all, Stream::Stdout);
        assert_eq!(got.len(), LINES, "run {run}: lines lost");
        for (i, line) in got.iter().enumerate() {
            assert_eq!(line, &format!("line {}", i + 1), "run {run}: out of order");
        }
    }
}

#[actix_rt::test]
async fn stopping_a_child_with_grandchildren_leaves_no_survivor() {
    let (owner, mut events) = collector();
    let child = ChildActor::start(fixture_spec("forker", &["fork", "3"]), owner).unwrap();
    let mut reaper = Reaper::default();
    let mut seen = Vec::new();
    loop {
        let line = events.next_line().await;
        if line == "ready" {
            break;
        }
        seen.push(line);
    }
    let pids = grandchild_pids(&seen);
    reaper.0.extend(&pids);
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&p| alive(p)));

    let exit = child.send(Stop::default()).await.unwrap().unwrap();
    assert_eq!(exit.status, ExitStatus::Signal(Signal::Term));
    assert!(exit.requested);
    assert!(exit.output_complete);
    // Stop resolves once the group is empty: no polling needed.
    let survivors: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(survivors.is_empty(), "survivors: {survivors:?}");
    // The owner got the same exit, last.
    let (_, reported) = events.until_exit().await;
    assert_eq!(reported, exit);
}

#[actix_rt::test]
async fn a_group_that_ignores_term_is_killed_after_its_grace() {
    let (owner, mut events) = collector();
    let grace = Duration::from_millis(300);
    let spec = fixture_spec("stubborn", &["fork", "2", "--ignore-term"]).grace(grace);
    let child = ChildActor::start(spec, owner).unwrap();
    let mut reaper = Reaper::default();
    let mut seen = Vec::new();
    loop {
        let line = events.next_line().await;
        if line == "ready" {
            break;
        }
        seen.push(line);
    }
    let pids = grandchild_pids(&seen);
    reaper.0.extend(&pids);
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| alive(p)));

    let asked = Instant::now();
    let exit = child.send(Stop::default()).await.unwrap().unwrap();
    assert_eq!(exit.status, ExitStatus::Signal(Signal::Kill));
    assert!(exit.requested);
    assert!(asked.elapsed() >= grace, "killed before the grace ended");
    assert!(pids.iter().all(|&p| !alive(p)), "a grandchild survived");
}

#[actix_rt::test]
async fn a_host_killed_by_sigkill_takes_its_child_along() {
    let mut host = Command::new(host())
        .args([fixture(), "sleep"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reaper = Reaper(vec![host.id()]);
    let mut out = BufReader::new(host.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let child: u32 = line
        .trim()
        .strip_prefix("child ")
        .unwrap_or_else(|| panic!("unexpected host output {line:?}"))
        .parse()
        .unwrap();
    reaper.0.push(child);
    assert!(alive(child));

    host.kill().unwrap(); // SIGKILL: no destructor of the host runs
    host.wait().unwrap();
    eventually("the child dies with its host", || !alive(child)).await;
}

#[actix_rt::test]
async fn closing_stdin_makes_the_counter_answer() {
    let (owner, mut events) = collector();
    let child = ChildActor::start(fixture_spec("counter", &["count"]), owner).unwrap();
    for i in 0..1000 {
        child
            .send(Write(Bytes::from(format!("item {i}\n"))))
            .await
            .unwrap()
            .unwrap();
    }
    child.send(CloseStdin).await.unwrap();
    assert_eq!(events.next_line().await, "count 1000");
    let (_, exit) = events.until_exit().await;
    assert!(exit.status.success());
    // After the close, writes are refused and the bytes given back.
    let err = child.send(Write(Bytes::from_static(b"late\n"))).await;
    if let Ok(Err(e)) = err {
        assert!(matches!(&e, StdinError::Closed { child, .. } if &**child == "counter"));
        assert_eq!(&e.into_data()[..], b"late\n");
    } // Err(_) is fine too: the actor already stopped after the exit.
}

#[actix_rt::test]
async fn a_child_that_does_not_read_makes_the_sender_wait() {
    const CHUNK: usize = 64 * 1024;
    const QUEUE: usize = 4; // chunks
    let line = [vec![b'x'; 63], vec![b'\n']].concat();
    let chunk = Bytes::from(line.repeat(CHUNK / 64));

    let (owner, mut events) = collector();
    let spec = fixture_spec("sluggard", &["count-after-usr1"]).stdin_queue(QUEUE * CHUNK);
    let child = ChildActor::start(spec, owner).unwrap();
    assert_eq!(events.next_line().await, "ready");
    let stdin = child.send(GetStdin).await.unwrap().unwrap();

    // Fill the queue and the pipe: eventually there is no more room.
    let mut accepted = 0usize;
    let full = loop {
        match stdin.try_send(chunk.clone()) {
            Ok(()) => accepted += 1,
            Err(StdinError::Full { data, .. }) => break data,
            Err(e) => panic!("{e}"),
        }
        if accepted.is_multiple_of(QUEUE) {
            // Let the writer task move what it can into the pipe.
            actix_rt::task::yield_now().await;
        }
        assert!(accepted < 10_000, "the queue never filled: no push back");
    };
    // Bounded: the queue, the 1 MiB pipe, and one chunk in the writer's hands.
    let bound = (QUEUE + 1) * CHUNK + (1 << 20);
    assert!(
        accepted * CHUNK <= bound,
        "{accepted} chunks accepted, bound {bound} bytes"
    );

    // A blocking send waits...
    let mut pending = Box::pin(stdin.send(full));
    assert!(
        futures::poll!(pending.as_mut()).is_pending(),
        "send did not wait"
    );
    // ...until the child reads.
    child.send(SendSignal(Signal::Usr1)).await.unwrap().unwrap();
    tokio::time::timeout(PATIENCE, pending)
        .await
        .expect("the send completes once the child reads")
        .unwrap();
    child.send(CloseStdin).await.unwrap();
    let expected = (accepted + 1) * CHUNK / 64;
    assert_eq!(events.next_line().await, format!("count {expected}"));
    let (_, exit) = events.until_exit().await;
    assert!(exit.status.success());
}

#[actix_rt::test]
async fn spawn_failures_name_the_child_and_the_program() {
    let (owner, _events) = collector();
    let err = ChildActor::start(
        ChildSpec::new("ghost", ["no-such-program-procession"]),
        owner.clone(),
    )
    .unwrap_err();
    assert!(matches!(err, SpawnError::NotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("ghost") && text.contains("no-such-program-procession"),
        "{text}"
    );

    let err = ChildActor::start(
        ChildSpec::new("lost", [fixture(), "exit", "0"]).cwd("/no/such/dir"),
        owner.clone(),
    )
    .unwrap_err();
    assert!(matches!(err, SpawnError::BadCwd { .. }), "{err:?}");
    assert!(err.to_string().contains("/no/such/dir"));

    let not_exec = std::env::temp_dir().join(format!("procession-noexec-{}", std::process::id()));
    std::fs::write(&not_exec, "plain text").unwrap();
    let err = ChildActor::start(
        ChildSpec::new("text", [not_exec.to_str().unwrap()]),
        owner.clone(),
    )
    .unwrap_err();
    std::fs::remove_file(&not_exec).unwrap();
    assert!(matches!(err, SpawnError::NotExecutable { .. }), "{err:?}");

    let err = ChildActor::start(ChildSpec::new("empty", Vec::<String>::new()), owner).unwrap_err();
    assert!(matches!(err, SpawnError::EmptyCommand { .. }), "{err:?}");
}

#[actix_rt::test]
async fn invalid_utf8_is_replaced_and_reported_and_reading_goes_on() {
    let (owner, mut events) = collector();
    ChildActor::start(fixture_spec("garbler", &["bad-utf8"]), owner).unwrap();
    let (all, exit) = events.until_exit().await;
    assert!(exit.status.success());
    assert_eq!(
        lines(&all, Stream::Stdout),
        ["ok", "bad\u{fffd}\u{fffd}", "after"]
    );
    let report = all
        .iter()
        .find_map(|e| match &e.kind {
            ChildEventKind::DecodeError {
                stream,
                error,
                preview,
            } => Some((*stream, error.clone(), preview.clone())),
            _ => None,
        })
        .expect("a decode_error event");
    assert_eq!(report.0, Stream::Stdout);
    assert!(report.1.contains("UTF-8"), "{}", report.1);
    assert!(report.2.starts_with("bad"), "{}", report.2);
}

#[actix_rt::test]
async fn invalid_json_is_reported_and_reading_goes_on() {
    let (owner, mut events) = collector();
    let spec = fixture_spec("jsonish", &["bad-json"]).framing(Framing::Json);
    ChildActor::start(spec, owner).unwrap();
    let (all, exit) = events.until_exit().await;
    assert!(exit.status.success());
    let values: Vec<_> = all
        .iter()
        .filter_map(|e| match &e.kind {
            ChildEventKind::Output {
                frame: Frame::Json(v),
                ..
            } => Some(v.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(values, [json!({"n": 1}), json!({"n": 2})]);
    assert!(all.iter().any(|e| matches!(&e.kind,
        ChildEventKind::DecodeError { error, preview, .. }
            if error.contains("invalid JSON") && preview == "not json")));
}

#[actix_rt::test]
async fn stderr_modes_route_stderr_where_asked() {
    for (mode, stdout_lines, stderr_lines) in [
        (StderrMode::Events, 0, 1024),
        (StderrMode::Merge, 1024, 0),
        (StderrMode::Discard, 0, 0),
    ] {
        let (owner, mut events) = collector();
        let spec = fixture_spec("noisy", &["flood", "1", "stderr"]).stderr(mode);
        ChildActor::start(spec, owner).unwrap();
        let (all, exit) = events.until_exit().await;
        assert!(exit.status.success(), "{mode:?}");
        assert!(exit.output_complete, "{mode:?}");
        assert_contiguous(&all);
        assert_eq!(
            lines(&all, Stream::Stdout).len(),
            stdout_lines,
            "{mode:?} stdout"
        );
        assert_eq!(
            lines(&all, Stream::Stderr).len(),
            stderr_lines,
            "{mode:?} stderr"
        );
    }
}

#[actix_rt::test]
async fn a_grandchild_holding_the_pipe_is_reported_and_then_killed() {
    let (owner, mut events) = collector();
    let spec = fixture_spec("leaky", &["fork", "1", "--exit"]).drain(Duration::from_millis(200));
    ChildActor::start(spec, owner).unwrap();
    let (all, exit) = events.until_exit().await;
    let pids = grandchild_pids(&lines(&all, Stream::Stdout));
    let _reaper = Reaper(pids.clone());
    assert_eq!(exit.status, ExitStatus::Code(0));
    assert!(!exit.output_complete, "the grandchild held stdout open");
    assert_eq!(pids.len(), 1);
    eventually("the leftover grandchild is killed", || !alive(pids[0])).await;
}

/// The drain time bounds the wait for a pipe that someone else holds open,
/// not the reading of what the child wrote before it exited: a megabyte
/// left in the pipe at the exit arrives whole, however short the drain.
#[actix_rt::test]
async fn output_left_in_the_pipe_at_exit_arrives_whatever_the_drain() {
    let (owner, mut events) = collector();
    let spec = fixture_spec("printer", &["lines", "100000"]).drain(Duration::from_millis(1));
    ChildActor::start(spec, owner).unwrap();
    let (all, exit) = events.until_exit().await;
    assert_eq!(lines(&all, Stream::Stdout).len(), 100_000, "lines lost");
    assert!(exit.output_complete);

    // The same with a grandchild holding the pipe: the drain runs out, the
    // grandchild is killed, and still nothing the child wrote is lost.
    let records = tempfile::tempdir().unwrap();
    let dir = records.path().to_str().unwrap();
    let (owner, mut events) = collector();
    let spec = fixture_spec("leaky", &["chaos", dir, "leaky", "fork-exit:1", "100000"])
        .drain(Duration::from_millis(1));
    ChildActor::start(spec, owner).unwrap();
    let (all, exit) = events.until_exit().await;
    let got = lines(&all, Stream::Stdout);
    let pids = grandchild_pids(
        &got.iter()
            .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_string()))
            .collect::<Vec<_>>(),
    );
    let _reaper = Reaper(pids.clone());
    assert_eq!(exit.status, ExitStatus::Code(0));
    assert!(!exit.output_complete, "the grandchild held stdout open");
    assert_eq!(got.len(), 100_001, "lines lost");
    assert_eq!(pids.len(), 1);
    eventually("the grandchild is killed", || !alive(pids[0])).await;
}

#[actix_rt::test]
async fn a_signal_reaches_the_group_and_the_exit_says_we_sent_it() {
    let (owner, mut events) = collector();
    let child = ChildActor::start(fixture_spec("sleeper", &["sleep"]), owner).unwrap();
    assert_eq!(events.next_line().await, "ready");
    child.send(SendSignal(Signal::Usr1)).await.unwrap().unwrap();
    let exit = child.send(WaitExit).await.unwrap().unwrap();
    assert_eq!(exit.status, ExitStatus::Signal(Signal::Usr1));
    assert!(exit.requested);
}

#[actix_rt::test]
async fn an_exit_code_is_reported_as_such() {
    let (owner, mut events) = collector();
    ChildActor::start(fixture_spec("failing", &["exit", "3"]), owner).unwrap();
    let (all, exit) = events.until_exit().await;
    assert_eq!(exit.status, ExitStatus::Code(3));
    assert!(!exit.requested);
    assert_eq!(all.len(), 2, "spawned and exited: {all:?}");
}

#[actix_rt::test]
async fn environment_is_set_and_can_be_cleared() {
    let (owner, mut events) = collector();
    // `env` with a cleared environment prints exactly what we set.
    let spec = ChildSpec::new("env", ["/usr/bin/env"])
        .env_clear()
        .env("ONLY", "this");
    ChildActor::start(spec, owner).unwrap();
    let (all, exit) = events.until_exit().await;
    assert!(exit.status.success());
    assert_eq!(lines(&all, Stream::Stdout), ["ONLY=this"]);
}

/// Regression (issue 15, item 1): a grace or drain too long to add to an
/// instant (Rust lets `Duration::MAX` through; a scenario up to 100 years)
/// panicked the actor, and the run then hung. Instants saturate now.
#[actix_rt::test]
async fn an_endless_grace_and_drain_do_not_overflow_the_clock() {
    let (owner, mut events) = collector();
    let spec = fixture_spec("forever", &["sleep"])
        .grace(Duration::MAX)
        .drain(Duration::MAX);
    let child = ChildActor::start(spec, owner).unwrap();
    assert_eq!(events.next_line().await, "ready");
    let stop = child.send(Stop::default());
    let exit = tokio::time::timeout(PATIENCE, stop)
        .await
        .expect("the stop resolves")
        .expect("the actor is alive")
        .unwrap();
    assert_eq!(exit.status, ExitStatus::Signal(Signal::Term));
    let (_, reported) = events.until_exit().await;
    assert_eq!(reported, exit);
}

/// Regression (issue 15, item 5): spawn errors lost their cause. E2BIG and
/// a NUL byte printed only ``cannot start `echo` ``, and a script whose `#!`
/// interpreter is missing was reported as "program not found".
#[actix_rt::test]
async fn spawn_errors_say_the_os_reason() {
    let (owner, _events) = collector();
    let huge = "x".repeat(200 * 1024);
    let err = ChildActor::start(
        ChildSpec::new("big", ["echo", huge.as_str()]),
        owner.clone(),
    )
    .unwrap_err();
    assert!(matches!(err, SpawnError::Os { .. }), "{err:?}");
    assert!(err.to_string().contains("Argument list too long"), "{err}");

    let err =
        ChildActor::start(ChildSpec::new("nul", ["echo", "a\0b"]), owner.clone()).unwrap_err();
    assert!(err.to_string().contains("nul byte"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("orphan.sh");
    std::fs::write(&script, "#!/no/such/interpreter -x\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err =
        ChildActor::start(ChildSpec::new("orphan", [script.to_str().unwrap()]), owner).unwrap_err();
    assert!(matches!(err, SpawnError::BadInterpreter { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("is a script whose interpreter `/no/such/interpreter` was not found"),
        "{err}"
    );
}
