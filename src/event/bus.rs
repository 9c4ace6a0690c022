//! The bus: how the director's events reach subscribers and the journal.
//!
//! The director publishes into a pending batch. The batch is closed when it
//! holds [`BATCH`] events, or when the director's thread is idle again (a
//! flusher task, woken by the first event of a batch, runs after the handler
//! that published it). A closed batch is one `Arc<[Event]>`, shared by every
//! subscriber's queue and the journal: an event is built once and never
//! copied on the director's thread, however many subscribers there are.
//!
//! Each subscriber has a [`Queue`], bounded in events. A consumer takes all
//! that waits in it at once: an [`EventStream`] on the caller's own task,
//! a forwarder task for a `Recipient`. Filters are applied by the consumer,
//! so a subscriber's cost falls on the director's thread once per batch,
//! not once per event. When a queue is full, the oldest events go and a
//! `lagged` takes their place at its front; a subscriber with
//! [`EventFilter::drop_only`](super::EventFilter::drop_only) instead loses
//! only those kinds, of the events that arrive while it is behind.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use actix::{Message, Recipient};
use tokio::sync::Notify;

use super::{Event, EventFilter, EventKind, Journal, Kind};

/// Events closed into one shared batch at most.
const BATCH: usize = 1024;

/// A run of events, shared by everyone it is handed to.
type Batch = Arc<[Event]>;

/// Publishes events with timestamps and per-child sequence numbers, and
/// hands them to subscribers and the journal in shared batches (see the
/// [module docs](self)).
pub(crate) struct Bus {
    inner: Rc<RefCell<Inner>>,
}

struct Inner {
    started: Instant,
    seqs: rustc_hash::FxHashMap<Arc<str>, u64>,
    /// Published and not yet handed out.
    pending: Vec<Event>,
    /// The last `t_ms` read from the clock (see [`Inner::t_ms`]).
    t_ms: u64,
    queues: Vec<Arc<Queue>>,
    journal: Option<Journal>,
    /// What a queue holds before it loses some.
    bound: Bound,
    /// Wakes the flusher task (started with the first pending event).
    flusher: Option<Rc<Notify>>,
}

/// How far behind a subscriber may fall: in events, and in bytes (see
/// [`weight`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub events: usize,
    pub bytes: usize,
}

/// What an event weighs in a queue: its payload and a fixed cost.
fn weight(event: &Event) -> usize {
    const FIXED: usize = 64;
    FIXED
        + match &event.kind {
            EventKind::Output { frame, .. } => match frame {
                crate::Frame::Line(s) => s.len(),
                crate::Frame::Bytes(b) => b.len(),
                crate::Frame::Json(_) => FIXED, // a fair guess, as the pump's
            },
            _ => 0,
        }
}

impl Bus {
    pub fn new(bound: Bound, journal: Option<Journal>) -> Bus {
        Bus {
            inner: Rc::new(RefCell::new(Inner {
                started: Instant::now(),
                seqs: Default::default(),
                pending: Vec::new(),
                t_ms: 0,
                queues: Vec::new(),
                journal,
                bound: Bound {
                    events: bound.events.max(1),
                    bytes: bound.bytes.max(1),
                },
                flusher: None,
            })),
        }
    }

    /// Whether anyone may want `child`'s `output` or `routed` events: the
    /// journal, or a subscriber whose filter lets either through.
    pub fn watches_output(&self, child: &Arc<str>) -> bool {
        let inner = self.inner.borrow();
        inner.journal.is_some()
            || inner.queues.iter().any(|q| {
                q.filter.takes(Some(child), Kind::Output)
                    || q.filter.takes(Some(child), Kind::Routed)
            })
    }

    /// Publishes an event about `child` (or the whole director with `None`).
    pub fn publish(&mut self, child: Option<&Arc<str>>, kind: EventKind) {
        let mut inner = self.inner.borrow_mut();
        let seq = child.map(|c| inner.next_seq(c, 1));
        if inner.queues.is_empty() && inner.journal.is_none() {
            return;
        }
        let event = Event {
            t_ms: inner.t_ms(),
            child: child.cloned(),
            seq,
            kind,
        };
        inner.pending.push(event);
        if inner.pending.len() >= BATCH {
            inner.hand_out();
        } else if inner.pending.len() == 1 {
            drop(inner);
            self.wake_flusher();
        }
    }

    /// Counts `n` events about `child` that nobody watches, without making
    /// them (see [`Bus::watches_output`]): the sequence numbers go on as if
    /// they had been published.
    pub fn count_unwatched(&mut self, child: &Arc<str>, n: u64) {
        self.inner.borrow_mut().next_seq(child, n);
    }

    /// Hands out what is pending now, and waits until the journal has
    /// written it: the end of a run, after `finished` (so that whoever is
    /// told the run ended finds the events file complete).
    pub fn finish(&mut self) {
        let mut inner = self.inner.borrow_mut();
        inner.hand_out();
        if let Some(journal) = &inner.journal {
            journal.flush();
        }
    }

    fn wake_flusher(&mut self) {
        let mut inner = self.inner.borrow_mut();
        if let Some(notify) = &inner.flusher {
            notify.notify_one();
            return;
        }
        let notify = Rc::new(Notify::new());
        notify.notify_one();
        inner.flusher = Some(notify.clone());
        actix::spawn(flusher(Rc::downgrade(&self.inner), notify));
    }

    /// A new subscriber's queue.
    fn queue(&mut self, filter: EventFilter) -> Arc<Queue> {
        let queue = Arc::new(Queue {
            filter,
            state: Mutex::new(State::default()),
        });
        self.inner.borrow_mut().queues.push(queue.clone());
        queue
    }

    /// Starts forwarding to `to`; aborting the returned task (or dropping
    /// `to`'s actor) unsubscribes.
    pub fn subscribe(
        &mut self,
        to: Recipient<Event>,
        filter: EventFilter,
    ) -> (Arc<Queue>, tokio::task::JoinHandle<()>) {
        let queue = self.queue(filter);
        (queue.clone(), actix::spawn(forward(queue, to)))
    }

    /// Starts forwarding to `to` in batches.
    pub fn subscribe_batches(
        &mut self,
        to: Recipient<EventBatch>,
        filter: EventFilter,
    ) -> (Arc<Queue>, tokio::task::JoinHandle<()>) {
        let queue = self.queue(filter);
        (queue.clone(), actix::spawn(forward_batches(queue, to)))
    }

    /// A stream of the events that pass `filter`.
    pub fn stream(&mut self, filter: EventFilter) -> EventStream {
        EventStream {
            queue: self.queue(filter),
            taken: VecDeque::new(),
        }
    }

    /// Ends a subscription at once: what waits in its queue is not delivered.
    pub fn unsubscribe(&mut self, queue: &Arc<Queue>) {
        self.inner
            .borrow_mut()
            .queues
            .retain(|q| !Arc::ptr_eq(q, queue));
        queue.close(true);
    }
}

impl Drop for Bus {
    /// The director is gone: what is pending is handed out, and every
    /// queue ends once its consumer has taken what it holds.
    fn drop(&mut self) {
        let mut inner = self.inner.borrow_mut();
        inner.hand_out();
        if let Some(journal) = &inner.journal {
            journal.flush();
        }
        for queue in inner.queues.drain(..) {
            queue.close(false);
        }
        if let Some(notify) = inner.flusher.take() {
            notify.notify_one(); // it finds the bus gone and ends
        }
    }
}

/// Events published in a row that may share one reading of the clock.
const CLOCK_EVERY: usize = 32;

impl Inner {
    /// Milliseconds since the start, read from the clock for the first
    /// event of a batch and every [`CLOCK_EVERY`] events after it (events
    /// that close together are published within microseconds).
    fn t_ms(&mut self) -> u64 {
        if self.pending.len().is_multiple_of(CLOCK_EVERY) {
            self.t_ms = self.started.elapsed().as_millis() as u64;
        }
        self.t_ms
    }

    /// Takes `n` sequence numbers of `child` and returns the first.
    fn next_seq(&mut self, child: &Arc<str>, n: u64) -> u64 {
        // Two events per routed frame pass here: look up without cloning
        // the name, hash it cheaply.
        match self.seqs.get_mut(child) {
            Some(next) => {
                *next += n;
                *next - n
            }
            None => {
                self.seqs.insert(child.clone(), n);
                0
            }
        }
    }

    /// Closes the pending events into a batch and hands it to every queue
    /// and the journal.
    fn hand_out(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch: Batch = std::mem::take(&mut self.pending).into();
        if let Some(journal) = &self.journal {
            journal.write(batch.clone());
        }
        if self.queues.is_empty() {
            return;
        }
        let bytes = batch.iter().map(weight).sum();
        let (bound, t_ms) = (self.bound, self.started.elapsed().as_millis() as u64);
        // A queue only we hold belongs to a subscriber that is gone.
        self.queues
            .retain(|q| Arc::strong_count(q) > 1 && q.offer(&batch, bytes, bound, t_ms));
    }
}

/// Hands out pending events once the director's thread has run what it
/// was doing when the first of them was published.
async fn flusher(bus: Weak<RefCell<Inner>>, wake: Rc<Notify>) {
    loop {
        wake.notified().await;
        let Some(bus) = bus.upgrade() else { return };
        // Not borrowed while a handler runs: we run between them.
        if let Ok(mut inner) = bus.try_borrow_mut() {
            inner.hand_out();
        };
    }
}

/// One subscriber's events: batches shared with the others, and the
/// subscriber's filter. Shared by the bus and the consumer.
pub(crate) struct Queue {
    filter: EventFilter,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    items: VecDeque<Item>,
    /// Events in `items` (before the filter; `lagged` not counted), and
    /// their weight.
    queued: usize,
    bytes: usize,
    /// No more will come: the consumer ends once `items` is empty.
    closed: bool,
    waker: Option<Waker>,
}

enum Item {
    /// The events of a batch from this index on.
    Events(Batch, usize),
    /// Events lost here.
    Lagged { missed: u64, t_ms: u64 },
}

impl Queue {
    fn state(&self) -> MutexGuard<'_, State> {
        // A consumer that panicked holding the lock left a queue that is
        // still consistent (every change is made in one step).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `batch` (which weighs `bytes`), or what of it may not be
    /// lost; false once closed.
    fn offer(&self, batch: &Batch, bytes: usize, bound: Bound, t_ms: u64) -> bool {
        let mut st = self.state();
        if st.closed {
            return false;
        }
        match self.filter.droppable() {
            Some(droppable) if st.queued >= bound.events || st.bytes >= bound.bytes => {
                // Behind: keep what may not be lost, count the rest.
                let mut missed = 0;
                let kept: Vec<Event> = batch
                    .iter()
                    .filter(|e| self.filter.accepts(e))
                    .filter(|e| {
                        let drop = droppable.contains(&e.kind.kind());
                        missed += u64::from(drop);
                        !drop
                    })
                    .cloned()
                    .collect();
                if missed > 0 {
                    st.lagged_at_back(missed, t_ms);
                }
                if !kept.is_empty() {
                    let bytes = kept.iter().map(weight).sum();
                    st.push(kept.into(), 0, bytes);
                }
            }
            Some(_) => st.push(batch.clone(), 0, bytes),
            None => {
                st.push(batch.clone(), 0, bytes);
                let dropped = st.shed(bound);
                if dropped > 0 {
                    st.lagged_at_front(dropped, t_ms);
                }
            }
        }
        if let Some(waker) = st.waker.take() {
            waker.wake();
        }
        true
    }

    /// No more events; with `now`, what waits is dropped as well.
    fn close(&self, now: bool) {
        let mut st = self.state();
        st.closed = true;
        if now {
            st.items.clear();
            (st.queued, st.bytes) = (0, 0);
        }
        if let Some(waker) = st.waker.take() {
            waker.wake();
        }
    }

    /// Takes everything queued, or `None` once the queue is closed and empty.
    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Taken>> {
        let mut st = self.state();
        if st.items.is_empty() {
            if st.closed {
                return Poll::Ready(None);
            }
            st.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        (st.queued, st.bytes) = (0, 0);
        let items = std::mem::take(&mut st.items);
        drop(st);
        let parts = items
            .into_iter()
            .map(|item| match item {
                Item::Events(batch, start) => (batch, start),
                Item::Lagged { missed, t_ms } => {
                    let lagged = Event {
                        t_ms,
                        child: None,
                        seq: None,
                        kind: EventKind::Lagged { missed },
                    };
                    (Arc::from([lagged]), 0)
                }
            })
            .collect();
        Poll::Ready(Some(Taken { parts }))
    }

    async fn take(&self) -> Option<Taken> {
        std::future::poll_fn(|cx| self.poll_take(cx)).await
    }
}

impl State {
    fn push(&mut self, batch: Batch, start: usize, bytes: usize) {
        self.queued += batch.len() - start;
        self.bytes += bytes;
        self.items.push_back(Item::Events(batch, start));
    }

    /// Drops the oldest events until the queue is within `bound`; returns
    /// how many it dropped.
    fn shed(&mut self, bound: Bound) -> u64 {
        let mut dropped = 0;
        let mut index = 0;
        while (self.queued > bound.events || self.bytes > bound.bytes) && index < self.items.len() {
            match &mut self.items[index] {
                Item::Lagged { .. } => index += 1,
                Item::Events(batch, start) => {
                    self.bytes -= weight(&batch[*start]);
                    self.queued -= 1;
                    *start += 1;
                    dropped += 1;
                    if *start == batch.len() {
                        self.items.remove(index);
                    }
                }
            }
        }
        dropped
    }

    /// Counts `missed` events lost before everything queued (merged with
    /// the `lagged` items already there).
    fn lagged_at_front(&mut self, missed: u64, t_ms: u64) {
        let mut total = missed;
        // Lost events are told once, first: fold the older lags in.
        self.items.retain(|item| match item {
            Item::Lagged { missed, .. } => {
                total += missed;
                false
            }
            Item::Events(..) => true,
        });
        self.items.push_front(Item::Lagged {
            missed: total,
            t_ms,
        });
    }

    /// Counts `missed` events lost after everything queued.
    fn lagged_at_back(&mut self, missed: u64, t_ms: u64) {
        if let Some(Item::Lagged { missed: m, t_ms: t }) = self.items.back_mut() {
            *m += missed;
            *t = t_ms;
        } else {
            self.items.push_back(Item::Lagged { missed, t_ms });
        }
    }
}

/// What a consumer took from its queue at once.
struct Taken {
    parts: VecDeque<(Batch, usize)>,
}

impl Taken {
    /// The next event that passes `filter`.
    fn next(&mut self, filter: &EventFilter) -> Option<&Event> {
        while let Some((batch, start)) = self.parts.front_mut() {
            if let Some(offset) = batch[*start..].iter().position(|e| filter.accepts(e)) {
                let at = *start + offset;
                *start = at + 1;
                return self.parts.front().map(|(batch, _)| &batch[at]);
            }
            self.parts.pop_front();
        }
        None
    }
}

async fn forward(queue: Arc<Queue>, to: Recipient<Event>) {
    // What was taken goes all but the last without waiting, the last
    // awaited, which (the mailbox being in order) means the subscriber
    // handled them all: one round trip per batch, not per event.
    while let Some(mut taken) = queue.take().await {
        let mut last = None;
        while let Some(event) = taken.next(&queue.filter) {
            if let Some(before) = last.replace(event.clone()) {
                to.do_send(before);
            }
        }
        if let Some(last) = last {
            if to.send(last).await.is_err() {
                return; // the subscriber is gone
            }
        }
    }
}

async fn forward_batches(queue: Arc<Queue>, to: Recipient<EventBatch>) {
    while let Some(taken) = queue.take().await {
        let batch = EventBatch {
            taken,
            queue: queue.clone(),
        };
        if batch.iter().next().is_none() {
            continue; // nothing in it passes the filter
        }
        if to.send(batch).await.is_err() {
            return;
        }
    }
}

/// Events for one subscriber, handed over in one message (see
/// [`Director::subscribe_batches`](crate::Director::subscribe_batches)):
/// what waited in its queue, in order, filtered. The events are shared with
/// the other subscribers, not copied for each.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EventBatch {
    taken: Taken,
    queue: Arc<Queue>,
}

impl EventBatch {
    /// The events, in order (a `lagged` among them where some were lost).
    pub fn iter(&self) -> impl Iterator<Item = &Event> + '_ {
        self.taken
            .parts
            .iter()
            .flat_map(|(batch, start)| batch[*start..].iter())
            .filter(|e| self.queue.filter.accepts(e))
    }
}

impl std::fmt::Debug for EventBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What [`Director::events`](crate::Director::events) returns: a `Stream`
/// of [`Event`]s. It takes what waits for it in one go, on the task that
/// reads it; the events are copied there, not on the director's thread.
pub struct EventStream {
    queue: Arc<Queue>,
    taken: VecDeque<Event>,
}

impl futures::Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = &mut *self;
        loop {
            if let Some(event) = this.taken.pop_front() {
                return Poll::Ready(Some(event));
            }
            match std::task::ready!(this.queue.poll_take(cx)) {
                None => return Poll::Ready(None),
                Some(mut taken) => {
                    while let Some(event) = taken.next(&this.queue.filter) {
                        this.taken.push_back(event.clone());
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("taken", &self.taken.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::Stream;

    fn output(n: usize, len: usize) -> Event {
        Event {
            t_ms: 0,
            child: Some("a".into()),
            seq: Some(n as u64),
            kind: EventKind::Output {
                stream: Stream::Stdout,
                frame: crate::Frame::Line("x".repeat(len)),
                partial: false,
                prompt: false,
            },
        }
    }

    fn ready(n: usize) -> Event {
        Event {
            t_ms: 0,
            child: Some("a".into()),
            seq: Some(n as u64),
            kind: EventKind::Ready,
        }
    }

    fn queue(filter: EventFilter) -> Queue {
        Queue {
            filter,
            state: Mutex::new(State::default()),
        }
    }

    fn offer(q: &Queue, events: Vec<Event>, bound: Bound) {
        let bytes = events.iter().map(weight).sum();
        assert!(q.offer(&events.into(), bytes, bound, 7));
    }

    /// What a consumer takes now: `Some(missed)` for a `lagged`, else the seq.
    fn take(q: &Queue) -> Vec<Result<u64, u64>> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let Poll::Ready(Some(mut taken)) = q.poll_take(&mut cx) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(e) = taken.next(&q.filter) {
            out.push(match e.kind {
                EventKind::Lagged { missed } => Err(missed),
                _ => Ok(e.seq.unwrap()),
            });
        }
        out
    }

    const ROOMY: Bound = Bound {
        events: 1000,
        bytes: 1 << 20,
    };

    #[test]
    fn a_full_queue_loses_the_oldest_and_says_so_first() {
        let q = queue(EventFilter::all());
        let bound = Bound { events: 4, ..ROOMY };
        offer(&q, (0..3).map(|n| output(n, 1)).collect(), bound);
        offer(&q, (3..6).map(|n| output(n, 1)).collect(), bound);
        offer(&q, vec![output(6, 1)], bound);
        assert_eq!(take(&q), [Err(3), Ok(3), Ok(4), Ok(5), Ok(6)]);
        assert!(take(&q).is_empty(), "taken all at once");
    }

    #[test]
    fn a_queue_is_bounded_in_bytes_too() {
        let q = queue(EventFilter::all());
        let bound = Bound {
            events: 1000,
            bytes: 3 * (64 + 1000),
        };
        offer(&q, (0..5).map(|n| output(n, 1000)).collect(), bound);
        assert_eq!(take(&q), [Err(2), Ok(2), Ok(3), Ok(4)]);
    }

    #[test]
    fn a_keeper_behind_loses_only_what_it_may() {
        let q = queue(EventFilter::all().drop_only([Kind::Output]));
        let bound = Bound { events: 2, ..ROOMY };
        offer(&q, vec![output(0, 1), output(1, 1)], bound);
        offer(&q, vec![output(2, 1), ready(3), output(4, 1)], bound);
        offer(&q, vec![ready(5)], bound);
        assert_eq!(take(&q), [Ok(0), Ok(1), Err(2), Ok(3), Ok(5)]);
    }

    #[test]
    fn a_closed_queue_ends_after_what_it_holds() {
        let q = queue(EventFilter::all().kinds([Kind::Ready]));
        offer(&q, vec![output(0, 1), ready(1)], ROOMY);
        q.close(false);
        assert_eq!(take(&q), [Ok(1)], "filtered by the consumer");
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(q.poll_take(&mut cx), Poll::Ready(None)));
        assert!(!q.offer(&Arc::from([ready(2)]), 64, ROOMY, 0));
    }
}
