//! A subscriber that hands director events to the benchmark, stamped with
//! the instant they arrived.

use std::time::Instant;

use actix::prelude::*;
use procession::Director;
use procession::{Event, EventFilter, EventKind, Frame};
use tokio::sync::mpsc;

pub struct Tap(mpsc::UnboundedSender<(Instant, Event)>);

impl Actor for Tap {
    type Context = Context<Self>;
}

impl Handler<Event> for Tap {
    type Result = ();
    fn handle(&mut self, event: Event, _: &mut Context<Self>) {
        let _ = self.0.send((Instant::now(), event));
    }
}

pub type Taps = mpsc::UnboundedReceiver<(Instant, Event)>;

pub async fn tap(director: &Director, filter: EventFilter) -> Taps {
    let (tx, rx) = mpsc::unbounded_channel();
    director
        .subscribe(Tap(tx).start().recipient(), filter)
        .await
        .expect("the director runs");
    rx
}

/// Waits for the next event that `pick` accepts (panics after a minute:
/// a benchmark that hangs has found a bug).
pub async fn until(taps: &mut Taps, mut pick: impl FnMut(&Event) -> bool) -> (Instant, Event) {
    let deadline = std::time::Duration::from_secs(60);
    loop {
        let next = tokio::time::timeout(deadline, taps.recv())
            .await
            .expect("an event within a minute")
            .expect("the director runs");
        if pick(&next.1) {
            return next;
        }
    }
}

/// The line of an output event.
pub trait EventLine {
    fn kind_line(&self) -> Option<&str>;
}

impl EventLine for Event {
    fn kind_line(&self) -> Option<&str> {
        match &self.kind {
            EventKind::Output {
                frame: Frame::Line(line),
                ..
            } => Some(line),
            _ => None,
        }
    }
}
