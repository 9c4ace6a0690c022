//! Embedding a director in an actix application: two children, a route
//! between them, a subscriber that prints events, a typed serde request with
//! a typed reply, and a clean shutdown.
//!
//! - `calc` (examples/calc.py) answers JSON requests and logs to stderr; it is
//!   ready when it prints `{"status": "up"}`.
//! - `audit` (`cat`) starts once calc is ready; a route sends calc's stderr
//!   lines to it, and it echoes them.
//!
//! Run it: `cargo run --example embed` (needs python3)

use std::time::Duration;

use actix::prelude::*;
use procession::director::{Director, Route};
use procession::{ChildSpec, Event, EventFilter, Framing, Ready, Stream};
use serde::{Deserialize, Serialize};

/// What we ask calc.
#[derive(Serialize)]
struct Compute {
    op: &'static str,
    args: Vec<f64>,
}

/// What calc answers (its `id` is matched by the director and ignored here).
#[derive(Debug, Deserialize)]
struct Answer {
    result: f64,
}

/// Prints every event it gets as one JSON line, as `--events` files will.
struct Printer;

impl Actor for Printer {
    type Context = Context<Self>;
}

impl Handler<Event> for Printer {
    type Result = ();

    fn handle(&mut self, event: Event, _: &mut Context<Self>) {
        println!("event {}", serde_json::to_string(&event).unwrap());
    }
}

#[actix::main]
async fn main() {
    let director = Director::start();
    let printer = Printer.start();
    director
        .subscribe(
            printer.recipient(),
            EventFilter::all().kinds([
                procession::event::Kind::Spawned,
                procession::event::Kind::Ready,
                procession::event::Kind::Output,
                procession::event::Kind::Routed,
                procession::event::Kind::Exited,
            ]),
        )
        .await
        .unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/calc.py");
    let calc = ChildSpec::new("calc", ["python3", "-u", script])
        .framing(Framing::Json)
        .ready(Ready::Json(
            serde_json::json!({"status": "up"})
                .as_object()
                .unwrap()
                .clone(),
        ));
    let audit = ChildSpec::new("audit", ["cat"]).depends_on("calc");
    let calc_log = Route::new("calc", "audit").stream(Stream::Stderr);
    director
        .launch([calc, audit], [calc_log])
        .await
        .expect("a valid set of children");

    let question = Compute {
        op: "add",
        args: vec![2.0, 3.0, 37.0],
    };
    let answer: Answer = director
        .request("calc", &question, Duration::from_secs(5))
        .await
        .expect("calc answers");
    println!("reply: 2 + 3 + 37 = {}", answer.result);

    // Let audit echo what was routed to it: at EOF `cat` finishes and exits 0.
    director.close_stdin("audit").await.unwrap();
    let audit_exit = director.wait_exit("audit").await.unwrap();
    println!("audit ended with {}", audit_exit.status);

    // Shutdown stops what still runs (calc), in reverse dependency order.
    director.shutdown("example done").await;
    println!("clean shutdown: every child stopped and reaped");
}
