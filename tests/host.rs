//! A small host program for the orchestrator-death tests.
//!
//! `procession-test-host PROGRAM [ARGS...]` starts one child through
//! `ChildActor`, prints `child PID` once it is spawned, and runs until it is
//! killed.
//!
//! `procession-test-host --director PROGRAM [ARGS...]` does the same under a
//! `Director` (with its watchdog) that turns SIGINT/SIGTERM into a shutdown;
//! it also prints `out LINE` for each line the child prints. After the
//! shutdown it prints `shutdown by SIG` and exits 130 (INT) or 143 (TERM).

use std::io::Write;

use actix::prelude::*;
use futures::StreamExt;
use procession::child::{ChildActor, ChildEventKind, ChildEvents};
use procession::{ChildSpec, Director, Event, EventFilter, EventKind, Frame, Kind, Signal};

struct PrintPid;

impl Actor for PrintPid {
    type Context = Context<Self>;
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").unwrap();
    out.flush().unwrap();
}

impl Handler<ChildEvents> for PrintPid {
    type Result = ();
    fn handle(&mut self, batch: ChildEvents, _: &mut Context<Self>) {
        for event in batch.events {
            if let ChildEventKind::Spawned { pid } = event.kind {
                say(&format!("child {pid}"));
            }
        }
    }
}

/// What both director modes print of an event; true for an output line.
fn print(event: Event) -> bool {
    match event.kind {
        EventKind::Spawned { pid, .. } => say(&format!("child {pid}")),
        EventKind::Output {
            frame: Frame::Line(line),
            ..
        } => {
            say(&format!("out {line}"));
            return true;
        }
        _ => {}
    }
    false
}

fn exit_status(signal: Signal) -> i32 {
    if signal == Signal::Int {
        130
    } else {
        143
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--many") {
        return many(args);
    }
    let director = args.first().map(String::as_str) == Some("--director");
    if director {
        args.remove(0);
    }
    let system = System::new();
    if !director {
        system.block_on(async move {
            let owner = PrintPid.start();
            ChildActor::start(ChildSpec::new("victim", args), owner.recipient())
                .expect("the child starts");
        });
        system.run().unwrap();
        return;
    }
    let code = system.block_on(async move {
        let director = Director::start();
        let mut signals = director.shutdown_on_signals().unwrap();
        let mut events = director
            .events(EventFilter::all().kinds([Kind::Spawned, Kind::Output]))
            .await
            .unwrap();
        director
            .add(ChildSpec::new("victim", args))
            .await
            .expect("the child starts");
        let signal = loop {
            tokio::select! {
                Some(event) = events.next() => { print(event); }
                signal = &mut signals => break signal.unwrap(),
            }
        };
        // Joins the shutdown the signal started; returns when all exited.
        director.shutdown("host").await;
        say(&format!("shutdown by {signal}"));
        exit_status(signal)
    });
    std::process::exit(code);
}

/// `--many N EVENTS PANIC_AFTER PROGRAM [ARGS...]`: N children under a
/// director (watchdog on) that journals its events to EVENTS and shuts down
/// on SIGINT/SIGTERM. Prints `child PID` and `out LINE` like `--director`.
/// With PANIC_AFTER > 0, the loop that reads the subscription panics once it
/// has seen that many output lines: the panic unwinds out of `main`.
fn many(args: Vec<String>) {
    use procession::DirectorConfig;
    use procession::Journal;
    let n: usize = args[1].parse().unwrap();
    let journal = Journal::create(std::path::Path::new(&args[2])).unwrap();
    let panic_after: usize = args[3].parse().unwrap();
    let cmd = args[4..].to_vec();
    let system = System::new();
    let code = system.block_on(async move {
        let director = Director::with_config(DirectorConfig {
            journal: Some(journal),
            ..DirectorConfig::default()
        });
        let signals = director.shutdown_on_signals().unwrap();
        let mut events = director
            .events(EventFilter::all().kinds([Kind::Spawned, Kind::Output]))
            .await
            .unwrap();
        let specs = (0..n).map(|i| ChildSpec::new(format!("victim{i}"), cmd.clone()));
        director
            .launch(specs, [])
            .await
            .expect("the children start");
        let mut lines = 0;
        let reader = async {
            while let Some(event) = events.next().await {
                if print(event) {
                    lines += 1;
                    if panic_after > 0 && lines >= panic_after {
                        panic!("a subscriber panics after {lines} lines");
                    }
                }
            }
        };
        let signal = tokio::select! {
            signal = signals => signal.unwrap(),
            _ = reader => unreachable!("the stream ends only with the director"),
        };
        director.shutdown("host").await;
        exit_status(signal)
    });
    std::process::exit(code);
}
