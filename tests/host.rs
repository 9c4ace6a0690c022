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
use procession::child::{ChildActor, ChildEventKind, ChildEvents};
use procession::director::Director;
use procession::{ChildSpec, Event, EventFilter, EventKind, Frame, Signal};

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

impl Handler<Event> for PrintPid {
    type Result = ();
    fn handle(&mut self, event: Event, _: &mut Context<Self>) {
        match event.kind {
            EventKind::Spawned { pid, .. } => say(&format!("child {pid}")),
            EventKind::Output {
                frame: Frame::Line(line),
                ..
            } => say(&format!("out {line}")),
            _ => {}
        }
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
        let signals = director.shutdown_on_signals().unwrap();
        let printer = PrintPid.start();
        director
            .subscribe(
                printer.recipient(),
                EventFilter::all().kinds([
                    procession::event::Kind::Spawned,
                    procession::event::Kind::Output,
                ]),
            )
            .await
            .unwrap();
        director
            .add(ChildSpec::new("victim", args))
            .await
            .expect("the child starts");
        let signal = signals.await.unwrap();
        // Joins the shutdown the signal started; returns when all exited.
        director.shutdown("host").await;
        say(&format!("shutdown by {signal}"));
        if signal == Signal::Int {
            130
        } else {
            143
        }
    });
    std::process::exit(code);
}

/// `--many N EVENTS PANIC_AFTER PROGRAM [ARGS...]`: N children under a
/// director (watchdog on) that journals its events to EVENTS and shuts down
/// on SIGINT/SIGTERM. Prints `child PID` and `out LINE` like `--director`.
/// With PANIC_AFTER > 0, the loop that reads the subscription panics once it
/// has seen that many output lines: the panic unwinds out of `main`.
fn many(args: Vec<String>) {
    use procession::director::DirectorConfig;
    use procession::event::Journal;
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
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        director
            .subscribe(
                Forward(tx).start().recipient(),
                EventFilter::all().kinds([
                    procession::event::Kind::Spawned,
                    procession::event::Kind::Output,
                ]),
            )
            .await
            .unwrap();
        let specs = (0..n).map(|i| ChildSpec::new(format!("victim{i}"), cmd.clone()));
        director
            .launch(specs, [])
            .await
            .expect("the children start");
        let mut lines = 0;
        let reader = async {
            while let Some(event) = rx.recv().await {
                match event.kind {
                    EventKind::Spawned { pid, .. } => say(&format!("child {pid}")),
                    EventKind::Output {
                        frame: Frame::Line(line),
                        ..
                    } => {
                        say(&format!("out {line}"));
                        lines += 1;
                        if panic_after > 0 && lines >= panic_after {
                            panic!("a subscriber panics after {lines} lines");
                        }
                    }
                    _ => {}
                }
            }
        };
        let signal = tokio::select! {
            signal = signals => signal.unwrap(),
            _ = reader => unreachable!("the subscription ends only with the director"),
        };
        director.shutdown("host").await;
        if signal == Signal::Int {
            130
        } else {
            143
        }
    });
    std::process::exit(code);
}

struct Forward(tokio::sync::mpsc::UnboundedSender<Event>);

impl Actor for Forward {
    type Context = Context<Self>;
}

impl Handler<Event> for Forward {
    type Result = ();
    fn handle(&mut self, event: Event, _: &mut Context<Self>) {
        let _ = self.0.send(event);
    }
}
