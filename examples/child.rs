//! Embedding a `ChildActor`: start `sort`, feed it lines through the bounded
//! stdin queue, close stdin (sort answers only at EOF), and print every event
//! the child reports, in order, ending with its exit.
//!
//! Run it: `cargo run --example child`

use actix::prelude::*;
use procession::child::{ChildActor, ChildEventKind, ChildEvents, CloseStdin, GetStdin};
use procession::{ChildSpec, Frame};
use tokio::sync::oneshot;

/// The owner: any actor that handles `ChildEvents`. It says when the exit
/// (always the last event) has arrived.
struct Printer {
    done: Option<oneshot::Sender<()>>,
}

impl Actor for Printer {
    type Context = Context<Self>;
}

impl Handler<ChildEvents> for Printer {
    type Result = ();

    fn handle(&mut self, batch: ChildEvents, _: &mut Context<Self>) {
        for event in batch.events {
            let what = match event.kind {
                ChildEventKind::Spawned { pid } => format!("spawned, pid {pid}"),
                ChildEventKind::Output {
                    stream,
                    frame: Frame::Line(line),
                    ..
                } => format!("{stream}: {line}"),
                ChildEventKind::Exited(exit) => {
                    self.done.take().map(|done| done.send(()));
                    format!("exited with {} after {:?}", exit.status, exit.runtime)
                }
                other => format!("{other:?}"),
            };
            println!("[{}#{}] {what}", batch.child, event.seq);
        }
    }
}

#[actix::main]
async fn main() {
    let (done, exited) = oneshot::channel();
    let printer = Printer { done: Some(done) }.start();
    let spec = ChildSpec::new("sort", ["sort", "--ignore-case"]);
    let sort = ChildActor::start(spec, printer.recipient()).expect("sort is on PATH");

    // A StdinSender writes without a round trip through the actor; `send`
    // waits whenever the child's queue is full.
    let stdin = sort.send(GetStdin).await.unwrap().expect("stdin is open");
    for fruit in ["pear", "Apple", "fig", "banana", "Cherry"] {
        stdin.send(format!("{fruit}\n")).await.unwrap();
    }
    sort.do_send(CloseStdin);
    exited.await.expect("the printer sees the exit");
}
