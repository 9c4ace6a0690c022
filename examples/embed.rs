//! Embedding a director in an actix application: two children, a route
//! between them, the events as a stream, a typed serde request with a typed
//! reply, and a clean shutdown.
//!
//! - `calc` (examples/calc.py) answers JSON requests and logs to stderr; it is
//!   ready when it prints `{"status": "up"}`.
//! - `audit` (`cat`) starts once calc is ready; a route sends calc's stderr
//!   lines to it, and it echoes them.
//!
//! Run it: `cargo run --example embed` (needs python3)

use std::time::Duration;

use futures::StreamExt;
use procession::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

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

#[actix::main]
async fn main() -> Result<(), DirectorError> {
    let director = Director::start();
    // Every event of these kinds, as one JSON line (as `--events` files
    // have them); the stream ends after the run's `finished`.
    let kinds = [
        Kind::Spawned,
        Kind::Ready,
        Kind::Output,
        Kind::Routed,
        Kind::Exited,
    ];
    let mut events = director.events(EventFilter::all().kinds(kinds)).await?;
    let printer = actix::spawn(async move {
        while let Some(event) = events.next().await {
            println!(
                "event {}",
                serde_json::to_string(&event).unwrap_or_default()
            );
        }
    });

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/calc.py");
    let calc = ChildSpec::new("calc", ["python3", "-u", script])
        .framing(Framing::Json)
        .ready(Ready::json(json!({"status": "up"})));
    let audit = ChildSpec::new("audit", ["cat"]).depends_on("calc");
    let calc_log = Route::new("calc", "audit").stream(Stream::Stderr);
    director.launch([calc, audit], [calc_log]).await?;
    director.wait_ready("calc").await?;

    let question = Compute {
        op: "add",
        args: vec![2.0, 3.0, 37.0],
    };
    let answer: Answer = director
        .request("calc", &question, Duration::from_secs(5))
        .await?;
    println!("reply: 2 + 3 + 37 = {}", answer.result);

    // Let audit echo what was routed to it: at EOF `cat` finishes and exits 0.
    director.close_stdin("audit").await?;
    let audit_exit = director
        .wait_exit_within("audit", Duration::from_secs(10))
        .await?;
    println!("audit ended with {}", audit_exit.status);

    // Shutdown stops what still runs (calc), in reverse dependency order;
    // when it returns, every event is in the stream.
    director.shutdown("example done").await;
    let _ = printer.await;
    println!("clean shutdown: every child stopped and reaped");
    Ok(())
}
