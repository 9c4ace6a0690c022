//! Helpers shared by the integration tests: the fixture's path, an owner
//! actor that hands child events to the test, and waiting on conditions with
//! a deadline (never on time alone).
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use procession::child::{ChildEvent, ChildEventKind, ChildEvents};
use procession::Exit;
use procession::{ChildSpec, Frame, Stream};
use tokio::sync::mpsc;

/// How long any single wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The fixture program (see `tests/fixture.rs` for its modes).
pub fn fixture() -> &'static str {
    env!("CARGO_BIN_EXE_procession-fixture")
}

/// The host program for the orchestrator-death test.
pub fn host() -> &'static str {
    env!("CARGO_BIN_EXE_procession-test-host")
}

/// A spec that runs the fixture in `mode` with `args`.
pub fn fixture_spec(name: &str, args: &[&str]) -> ChildSpec {
    let mut cmd = vec![fixture().to_string()];
    cmd.extend(args.iter().map(|a| a.to_string()));
    ChildSpec::new(name, cmd)
}

/// An owner that forwards every event to the test, in order.
pub struct Collector {
    tx: mpsc::UnboundedSender<(Arc<str>, ChildEvent)>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<ChildEvents> for Collector {
    type Result = ();
    fn handle(&mut self, batch: ChildEvents, _: &mut Context<Self>) {
        for event in batch.events {
            let _ = self.tx.send((batch.child.clone(), event));
        }
    }
}

/// The test's end of a [`Collector`].
pub struct Events {
    rx: mpsc::UnboundedReceiver<(Arc<str>, ChildEvent)>,
}

/// A collector actor and the receiving end for the test.
pub fn collector() -> (Recipient<ChildEvents>, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Collector { tx }.start().recipient(), Events { rx })
}

impl Events {
    /// The next event, or a test failure after [`PATIENCE`].
    pub async fn next(&mut self) -> ChildEvent {
        match tokio::time::timeout(PATIENCE, self.rx.recv()).await {
            Ok(Some((_, event))) => event,
            Ok(None) => panic!("the event channel closed"),
            Err(_) => panic!("no event within {PATIENCE:?}"),
        }
    }

    /// The next output line (skipping other events); fails on `Exited`.
    pub async fn next_line(&mut self) -> String {
        loop {
            match self.next().await.kind {
                ChildEventKind::Output {
                    frame: Frame::Line(line),
                    ..
                } => return line,
                ChildEventKind::Exited(exit) => panic!("exited ({exit:?}) before a line came"),
                _ => {}
            }
        }
    }

    /// Every event up to and including `Exited`, and the exit.
    pub async fn until_exit(&mut self) -> (Vec<ChildEvent>, Exit) {
        let mut events = Vec::new();
        loop {
            let event = self.next().await;
            if let ChildEventKind::Exited(exit) = &event.kind {
                let exit = exit.clone();
                events.push(event);
                return (events, exit);
            }
            events.push(event);
        }
    }
}

/// The output lines of `stream` among `events`.
pub fn lines(events: &[ChildEvent], stream: Stream) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            ChildEventKind::Output {
                stream: s,
                frame: Frame::Line(line),
                ..
            } if *s == stream => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// Asserts that sequence numbers run 0, 1, 2, ... without a gap.
pub fn assert_contiguous(events: &[ChildEvent]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "sequence gap at event {i}: {:?}", e.kind);
    }
}

/// Whether `pid` is a live process (a zombie is dead: it only waits to be
/// collected by its parent).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap();
            state != 'Z' && state != 'X'
        }
        Err(_) => false,
    }
}

/// Polls `cond` until it holds; fails the test after [`PATIENCE`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {PATIENCE:?}: {what}"
        );
        tick.tick().await;
    }
}

/// Kills the given process groups (and pids) when dropped: a failing test
/// must not leave its grandchildren behind.
#[derive(Default)]
pub struct Reaper(pub Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, killpg, Signal};
        use nix::unistd::Pid;
        for &pid in &self.0 {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// The pids in `grandchild PID` lines.
pub fn grandchild_pids(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("grandchild "))
        .map(|p| p.parse().unwrap())
        .collect()
}

/// A subscriber that hands every director event to the test.
pub struct Tap(mpsc::UnboundedSender<procession::Event>);

impl Actor for Tap {
    type Context = Context<Self>;
}

impl Handler<procession::Event> for Tap {
    type Result = ();
    fn handle(&mut self, event: procession::Event, _: &mut Context<Self>) {
        let _ = self.0.send(event);
    }
}

/// Subscribes a [`Tap`] to `director` and returns the test's end.
pub async fn tap(
    director: &procession::Director,
    filter: procession::EventFilter,
) -> mpsc::UnboundedReceiver<procession::Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    director
        .subscribe(Tap(tx).start().recipient(), filter)
        .await
        .unwrap();
    rx
}

/// The next director event, or a test failure after [`PATIENCE`].
pub async fn next_event(rx: &mut mpsc::UnboundedReceiver<procession::Event>) -> procession::Event {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {PATIENCE:?}"))
        .expect("the director is gone")
}

/// Events until one satisfies `pred` (included).
pub async fn until(
    rx: &mut mpsc::UnboundedReceiver<procession::Event>,
    pred: impl Fn(&procession::Event) -> bool,
) -> Vec<procession::Event> {
    let mut seen = Vec::new();
    loop {
        let event = next_event(rx).await;
        let done = pred(&event);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

/// Whether `event` is of `kind` and about `child`.
pub fn is(event: &procession::Event, child: &str, kind: &str) -> bool {
    event.child.as_deref() == Some(child) && event.kind.name() == kind
}

/// How many of `events` are of `kind` and about `child`.
pub fn count(events: &[procession::Event], child: &str, kind: &str) -> usize {
    events.iter().filter(|e| is(e, child, kind)).count()
}

/// Where the first event of `kind` about `child` is; fails if there is none.
pub fn position(events: &[procession::Event], child: &str, kind: &str) -> usize {
    events
        .iter()
        .position(|e| is(e, child, kind))
        .unwrap_or_else(|| panic!("no {kind} of {child} in {events:#?}"))
}

/// Our open descriptors, leaving out those that read /proc: the
/// containment thread opens a few while it looks at the process table, at
/// moments of its own.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|target| !target.starts_with("/proc"))
                .unwrap_or(false) // closed while we looked
        })
        .count()
}

/// This process's peak resident memory (VmHWM), in KiB.
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
