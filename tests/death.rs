//! Orchestrator death: the process running a director is SIGKILLed,
//! SIGTERMed, or panics in the loop that reads its subscription, while 50
//! children with two grandchildren each run. Nothing may survive, and a
//! SIGTERM ends the events file with `finished`.

#[path = "common/mod.rs"]
mod common;

use std::process::Stdio;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

const CHILDREN: usize = 50;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Death {
    Kill,
    Term,
    Panic,
}

async fn orchestrator_dies(death: Death) {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    // Each child prints two `grandchild PID` lines and `ready`.
    let panic_after = if death == Death::Panic {
        3 * CHILDREN
    } else {
        0
    };
    let mut host = tokio::process::Command::new(host())
        .args(["--many", &CHILDREN.to_string()])
        .arg(&events)
        .arg(panic_after.to_string())
        .args([fixture(), "fork", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut reaper = Reaper(vec![host.id().unwrap()]);
    let mut out = BufReader::new(host.stdout.take().unwrap()).lines();
    let (mut children, mut grandchildren, mut ready) = (Vec::new(), Vec::new(), 0);
    while ready < CHILDREN {
        let line = tokio::time::timeout(PATIENCE, out.next_line())
            .await
            .expect("the host reports its children in time")
            .unwrap()
            .expect("the host runs until all are ready");
        if let Some(pid) = line.strip_prefix("child ") {
            children.push(pid.parse::<u32>().unwrap());
        } else if let Some(pid) = line.strip_prefix("out grandchild ") {
            grandchildren.push(pid.parse::<u32>().unwrap());
        } else if line == "out ready" {
            ready += 1;
        }
        reaper.0 = children.iter().chain(&grandchildren).copied().collect();
        reaper.0.push(host.id().unwrap());
    }
    assert_eq!(children.len(), CHILDREN);
    assert_eq!(grandchildren.len(), 2 * CHILDREN);
    assert!(children.iter().chain(&grandchildren).all(|&p| alive(p)));

    match death {
        Death::Kill => kill(Pid::from_raw(host.id().unwrap() as i32), Signal::SIGKILL).unwrap(),
        Death::Term => kill(Pid::from_raw(host.id().unwrap() as i32), Signal::SIGTERM).unwrap(),
        Death::Panic => {} // it panics by itself after the last line
    }
    let status = tokio::time::timeout(PATIENCE, host.wait())
        .await
        .expect("the host ends")
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    match death {
        Death::Kill => assert_eq!(status.signal(), Some(9)),
        Death::Term => assert_eq!(status.code(), Some(143)),
        Death::Panic => assert_eq!(status.code(), Some(101)),
    }
    let all: Vec<u32> = children.iter().chain(&grandchildren).copied().collect();
    eventually("every child and grandchild is gone", || {
        all.iter().all(|&p| !alive(p))
    })
    .await;

    let journal = std::fs::read_to_string(&events).unwrap();
    let last = journal.lines().last().unwrap_or_default();
    if death == Death::Term {
        assert!(last.contains(r#""event":"finished""#), "last event: {last}");
        assert_eq!(
            journal.matches(r#""event":"exited""#).count(),
            CHILDREN,
            "every child's exit is in the events"
        );
    }
}

#[actix_rt::test]
async fn sigkill_of_the_orchestrator_leaves_nothing() {
    orchestrator_dies(Death::Kill).await;
}

#[actix_rt::test]
async fn sigterm_of_the_orchestrator_stops_everything_and_ends_with_finished() {
    orchestrator_dies(Death::Term).await;
}

#[actix_rt::test]
async fn a_panicking_subscriber_loop_leaves_nothing() {
    orchestrator_dies(Death::Panic).await;
}
