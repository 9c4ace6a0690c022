//! A small host program for the orchestrator-death test: it starts one child
//! through `ChildActor`, prints `child PID` once it is spawned, and runs
//! until it is killed.
//!
//! Usage: procession-test-host PROGRAM [ARGS...]

use std::io::Write;

use actix::prelude::*;
use procession::child::{ChildActor, ChildEventKind, ChildEvents};
use procession::ChildSpec;

struct PrintPid;

impl Actor for PrintPid {
    type Context = Context<Self>;
}

impl Handler<ChildEvents> for PrintPid {
    type Result = ();
    fn handle(&mut self, batch: ChildEvents, _: &mut Context<Self>) {
        for event in batch.events {
            if let ChildEventKind::Spawned { pid } = event.kind {
                let mut out = std::io::stdout().lock();
                writeln!(out, "child {pid}").unwrap();
                out.flush().unwrap();
            }
        }
    }
}

fn main() {
    let cmd: Vec<String> = std::env::args().skip(1).collect();
    let system = System::new();
    system.block_on(async move {
        let owner = PrintPid.start();
        ChildActor::start(ChildSpec::new("victim", cmd), owner.recipient())
            .expect("the child starts");
    });
    system.run().unwrap();
}
