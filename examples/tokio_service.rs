//! A service on plain tokio (no actix System of its own): a worker child
//! kept alive by the director, events handled in a `select!` beside a
//! periodic job, and Ctrl-C (or SIGTERM) turned into a clean stop that
//! exits 130 (or 143) once every child has stopped.
//!
//! Run it: `cargo run --example tokio_service`, then press Ctrl-C; or
//! `cargo run --example tokio_service -- 3` to stop by itself after 3 ticks.

use std::time::Duration;

use futures::StreamExt;
use procession::prelude::*;

#[tokio::main]
async fn main() -> Result<(), DirectorError> {
    let ticks: Option<u32> = std::env::args().nth(1).and_then(|n| n.parse().ok());
    // Outside an actix System, the director runs on a thread of its own.
    let director = Director::start();
    let signals = director
        .shutdown_on_signals()
        .expect("signal handlers can be installed");
    let mut events = director
        .events(EventFilter::all().kinds([Kind::Ready, Kind::Exited, Kind::Restarting]))
        .await?;
    // `cat` echoes each request line: our stand-in for a worker process.
    let worker = ChildSpec::new("worker", ["cat"]).restart(RestartSpec::on_failure());
    director.add(worker).await?;
    director.wait_ready("worker").await?;

    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut n = 0u32;
    let mut signals = signals;
    let signal = loop {
        tokio::select! {
            event = events.next() => match event {
                Some(event) => println!("[{:>6} ms] {}: {}", event.t_ms,
                    event.child.as_deref().unwrap_or("-"), event.kind.name()),
                // The run is over (a signal may have ended it).
                None => break signals.try_recv().ok(),
            },
            _ = tick.tick() => {
                n += 1;
                let asked = director
                    .request::<_, String>("worker", &format!("tick {n}"), Duration::from_secs(2))
                    .await;
                match asked {
                    Ok(reply) => println!("worker answered: {reply}"),
                    // A signal may have begun the stop meanwhile (the
                    // worker is going): the next turn of the loop sees it.
                    Err(e) => eprintln!("tick {n}: {e}"),
                }
                if ticks.is_some_and(|t| n >= t) {
                    break None;
                }
            }
            got = &mut signals => break got.ok(),
        }
    };
    // A signal already began the shutdown; this waits for its end (and
    // starts one when we stop by ourselves).
    let finals = director.shutdown("the service is stopping").await;
    for child in finals {
        println!("{} ended {}", child.name, child.state);
    }
    let code = match signal {
        Some(Signal::Int) => 130,
        Some(Signal::Term) => 143,
        Some(Signal::Hup) => 129,
        _ => 0,
    };
    std::process::exit(code);
}
