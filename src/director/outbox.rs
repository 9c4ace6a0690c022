//! The outbox: one ordered queue per child for everything written to its
//! stdin. Routed frames, envelopes, `send` steps, released held messages,
//! callers' `deliver` and `request` writes, `close`, and what is kept while
//! the child is restarting or not started yet all go through it, in the order
//! the director pushed them; nothing else writes to a child's stdin. So the
//! order of writes holds by construction (DESIGN.md "Order of writes").
//!
//! Each entry carries its acknowledgement ([`Ack`]): a `routed` event to
//! publish, a step to pass, a caller to answer. It is settled once the bytes
//! are queued at the child (moved into its bounded stdin queue), or kept
//! for its next instance; or it fails: its deadline passed while the child's
//! queue stayed full, its stdin was closed, the child is gone for good, or
//! the restart buffer is full. Nothing is dropped without a settlement.
//!
//! Pushing does not write: the director pushes what one handler decides,
//! then calls [`Outbox::flush`], which moves what fits into the children's
//! queues (coalescing the frames of one output batch into one write) and
//! returns the settlements to carry out. A queue that is full reports
//! [`Flush::blocked`]; the director then waits for room (or the earliest
//! deadline) and flushes again.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::oneshot;

use crate::child::StdinSender;
use crate::error::DirectorError;

/// A token shared by the routed entries of one output batch: when the last
/// of them is settled (and dropped), the receiver of its channel resolves,
/// and the sender's next batch may be handled. This is how a slow receiver
/// slows its sender through the pipes instead of filling memory.
pub(crate) type BatchToken = Rc<oneshot::Sender<()>>;

/// What to do once an entry is settled.
#[derive(Debug)]
pub(crate) enum Ack {
    /// Frames routed from `from` (publish `routed`, or `undeliverable`).
    Routed {
        from: Arc<str>,
        frames: usize,
        batch: Option<BatchToken>,
    },
    /// The action of protocol step `step` (it passes, or fails).
    Step(usize),
    /// A caller waiting for the write (`deliver`, `request`, `close_stdin`).
    Caller(oneshot::Sender<Result<(), DirectorError>>),
    /// Frames kept for a next instance that never came (settled as kept
    /// already: now they are reported `undeliverable`). `from`: the sender
    /// of routed frames; `None` for a step's or a caller's write.
    Dropped {
        from: Option<Arc<str>>,
        frames: usize,
    },
}

/// One settled entry: its acknowledgement and how it went.
#[derive(Debug)]
pub(crate) struct Settled {
    pub to: Arc<str>,
    pub ack: Ack,
    pub result: Result<(), DirectorError>,
}

#[derive(Debug)]
enum Write {
    Bytes(BytesMut),
    Close,
}

#[derive(Debug)]
struct Entry {
    write: Write,
    ack: Ack,
    /// Past this, an entry still waiting for room fails.
    deadline: Option<Instant>,
    /// When it was pushed (to say how long it waited).
    since: Instant,
}

/// Where a queue's entries go.
#[derive(Debug)]
enum Sink {
    /// The child runs: into its stdin queue.
    Stdin(StdinSender),
    /// The child's stdin was closed by a `close`: later writes fail.
    Closed,
    /// The child is not running yet, or restarting: kept (bounded) for its
    /// next instance, and settled as queued.
    Keep,
}

#[derive(Debug)]
struct Queue {
    sink: Sink,
    /// Bytes kept for the next instance (already settled); written first.
    kept: BytesMut,
    /// Who the kept bytes came from, and how many frames each: what is
    /// reported if they are dropped.
    kept_from: Vec<(Option<Arc<str>>, usize)>,
    entries: VecDeque<Entry>,
}

/// What a flush found: the settlements, and the children whose queues are
/// full.
#[derive(Debug, Default)]
pub(crate) struct Flush {
    pub settled: Vec<Settled>,
    pub blocked: Vec<Blocked>,
}

/// A child's queue that is full: what the next write needs, and the
/// earliest deadline among the entries that wait.
#[derive(Debug)]
pub(crate) struct Blocked {
    pub to: Arc<str>,
    pub stdin: StdinSender,
    /// Bytes the first waiting write needs.
    pub needs: usize,
    pub deadline: Option<Instant>,
}

/// Every child's queue. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Outbox {
    queues: FxHashMap<Arc<str>, Queue>,
    /// Queues pushed to since the last flush.
    dirty: FxHashSet<Arc<str>>,
    /// Children whose queue a waiter is watching for room, and when that
    /// waiter fires at the latest (`None`: only when there is room).
    watched: FxHashMap<Arc<str>, Option<Instant>>,
    /// Entries of queues failed as a whole, settled at the next flush.
    failed: Vec<Settled>,
    /// Bytes kept per child while it is not running.
    keep_limit: usize,
}

impl Outbox {
    pub fn new(keep_limit: usize) -> Outbox {
        Outbox {
            queues: FxHashMap::default(),
            dirty: FxHashSet::default(),
            watched: FxHashMap::default(),
            failed: Vec::new(),
            keep_limit,
        }
    }

    fn queue(&mut self, to: &Arc<str>) -> &mut Queue {
        self.queues.entry(to.clone()).or_insert_with(|| Queue {
            sink: Sink::Keep,
            kept: BytesMut::new(),
            kept_from: Vec::new(),
            entries: VecDeque::new(),
        })
    }

    /// Queues a copy of `bytes` for `to`, with their acknowledgement.
    #[cfg(test)]
    pub fn push(
        &mut self,
        to: &Arc<str>,
        bytes: &[u8],
        ack: Ack,
        deadline: Option<Instant>,
        now: Instant,
    ) {
        self.push_bytes(to, BytesMut::from(bytes), ack, deadline, now)
    }

    /// Queues bytes for `to`, with their acknowledgement.
    pub fn push_bytes(
        &mut self,
        to: &Arc<str>,
        bytes: BytesMut,
        ack: Ack,
        deadline: Option<Instant>,
        now: Instant,
    ) {
        self.queue(to).entries.push_back(Entry {
            write: Write::Bytes(bytes),
            ack,
            deadline,
            since: now,
        });
        self.dirty.insert(to.clone());
    }

    /// The write that `frames` frames routed from `from` in the output
    /// batch `batch` are encoded into: the batch's last write to `to` if
    /// nothing came between, else a new one. Counts the frames.
    pub fn routed(
        &mut self,
        to: &Arc<str>,
        from: &Arc<str>,
        batch: &BatchToken,
        deadline: Option<Instant>,
        now: Instant,
        frames: usize,
    ) -> &mut BytesMut {
        if !self.queues.contains_key(to) {
            self.queue(to);
        }
        let queue = self.queues.get_mut(to).expect("just made");
        let same_batch = matches!(
            queue.entries.back(),
            Some(Entry {
                write: Write::Bytes(_),
                ack: Ack::Routed { from: f, batch: Some(b), .. },
                ..
            }) if Rc::ptr_eq(b, batch) && (Arc::ptr_eq(f, from) || f == from)
        );
        if !same_batch {
            queue.entries.push_back(Entry {
                write: Write::Bytes(BytesMut::new()),
                ack: Ack::Routed {
                    from: from.clone(),
                    frames: 0,
                    batch: Some(batch.clone()),
                },
                deadline,
                since: now,
            });
            self.dirty.insert(to.clone());
        }
        let entry = queue.entries.back_mut().expect("just pushed");
        if let Ack::Routed { frames: n, .. } = &mut entry.ack {
            *n += frames;
        }
        match &mut entry.write {
            Write::Bytes(bytes) => bytes,
            Write::Close => unreachable!("matched or pushed as bytes"),
        }
    }

    /// Queues the end of `to`'s input, after everything queued before it.
    pub fn push_close(&mut self, to: &Arc<str>, ack: Ack, now: Instant) {
        self.queue(to).entries.push_back(Entry {
            write: Write::Close,
            ack,
            deadline: None,
            since: now,
        });
        self.dirty.insert(to.clone());
    }

    /// A new instance of `to` runs: what was kept goes first, then the rest.
    pub fn attach(&mut self, to: &Arc<str>, stdin: StdinSender) {
        self.watched.remove(to); // a waiter on the last instance's stdin says nothing of this one
        self.queue(to).sink = Sink::Stdin(stdin);
        self.dirty.insert(to.clone());
    }

    /// `to`'s instance ended and another may follow: what still waited
    /// for the one that ended fails with `why` (settled at the next flush);
    /// what comes from now on is kept for the next instance (within the
    /// restart buffer).
    pub fn keep(&mut self, to: &Arc<str>, why: impl Fn() -> DirectorError) {
        self.watched.remove(to);
        let queue = self.queue(to);
        queue.sink = Sink::Keep;
        let waited: Vec<Entry> = queue.entries.drain(..).collect();
        self.failed.extend(waited.into_iter().map(|e| Settled {
            to: to.clone(),
            ack: e.ack,
            result: Err(why()),
        }));
    }

    /// `to` is gone for good: everything waiting fails with `why`, and what
    /// was kept for its next instance is reported dropped (all settled at
    /// the next flush). The queue is forgotten (a later `start` makes a new
    /// one).
    pub fn fail_all(&mut self, to: &Arc<str>, why: impl Fn() -> DirectorError) {
        self.dirty.remove(to);
        self.watched.remove(to);
        let Some(queue) = self.queues.remove(to) else {
            return;
        };
        let dropped = queue
            .kept_from
            .into_iter()
            .map(|(from, frames)| Ack::Dropped { from, frames });
        let waiting = queue.entries.into_iter().map(|e| e.ack);
        self.failed
            .extend(dropped.chain(waiting).map(|ack| Settled {
                to: to.clone(),
                ack,
                result: Err(why()),
            }));
    }

    /// Records a waiter for room in `to`'s queue that also fires at
    /// `deadline`; false if one that fires at least as early is armed.
    pub fn watch(&mut self, to: &Arc<str>, deadline: Option<Instant>) -> bool {
        match self.watched.get(to) {
            Some(&armed) if !earlier(deadline, armed) => false,
            _ => {
                self.watched.insert(to.clone(), deadline);
                true
            }
        }
    }

    /// A waiter fired: flush `to` again.
    pub fn unwatch(&mut self, to: &Arc<str>) {
        self.watched.remove(to);
        self.dirty.insert(to.clone());
    }

    /// Whether anything was pushed since the last flush.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || !self.failed.is_empty()
    }

    /// Moves what fits from every queue pushed to into its child's stdin
    /// queue, and fails what waited past its deadline.
    pub fn flush(&mut self, now: Instant) -> Flush {
        let mut out = Flush {
            settled: std::mem::take(&mut self.failed),
            blocked: Vec::new(),
        };
        let dirty: Vec<Arc<str>> = self.dirty.drain().collect();
        for to in dirty {
            let Some(queue) = self.queues.get_mut(&to) else {
                continue;
            };
            if let Some((stdin, needs)) = queue.flush(&to, now, self.keep_limit, &mut out.settled) {
                let deadline = queue.entries.iter().filter_map(|e| e.deadline).min();
                out.blocked.push(Blocked {
                    to: to.clone(),
                    stdin,
                    needs,
                    deadline,
                });
            }
        }
        out
    }

    /// Bytes waiting or kept for `to` (for tests and diagnostics).
    #[cfg(test)]
    fn waiting_bytes(&self, to: &str) -> usize {
        self.queues.get(to).map_or(0, |q| {
            q.kept.len()
                + q.entries
                    .iter()
                    .map(|e| match &e.write {
                        Write::Bytes(b) => b.len(),
                        Write::Close => 0,
                    })
                    .sum::<usize>()
        })
    }
}

impl Queue {
    /// Flushes one queue; returns its stdin, and the bytes the next write
    /// needs, when it is full with entries still waiting.
    fn flush(
        &mut self,
        to: &Arc<str>,
        now: Instant,
        keep_limit: usize,
        settled: &mut Vec<Settled>,
    ) -> Option<(StdinSender, usize)> {
        let settle = |settled: &mut Vec<Settled>, ack, result| {
            settled.push(Settled {
                to: to.clone(),
                ack,
                result,
            })
        };
        // Entries past their deadline fail where they stand; the rest keep
        // their order.
        let mut i = 0;
        while i < self.entries.len() {
            let entry = &self.entries[i];
            let gone_caller = matches!(&entry.ack, Ack::Caller(tx) if tx.is_closed());
            if gone_caller {
                // Its caller gave up (a cancelled future): write nothing.
                self.entries.remove(i);
            } else if entry.deadline.is_some_and(|d| now >= d) {
                let entry = self.entries.remove(i).expect("in range");
                let waited = now.saturating_duration_since(entry.since);
                let error = DirectorError::StdinFull {
                    child: to.clone(),
                    waited,
                };
                settle(settled, entry.ack, Err(error));
            } else {
                i += 1;
            }
        }
        match &self.sink {
            Sink::Keep => {
                while let Some(entry) = self.entries.pop_front() {
                    let result = match entry.write {
                        // One write larger than the buffer still fits an empty one.
                        Write::Bytes(bytes)
                            if self.kept.is_empty()
                                || self.kept.len() + bytes.len() <= keep_limit =>
                        {
                            self.kept.extend_from_slice(&bytes);
                            let from = match &entry.ack {
                                Ack::Routed { from, frames, .. } => (Some(from.clone()), *frames),
                                _ => (None, 1),
                            };
                            match self.kept_from.last_mut() {
                                Some((f, n)) if *f == from.0 => *n += from.1,
                                _ => self.kept_from.push(from),
                            }
                            Ok(())
                        }
                        Write::Bytes(_) => Err(DirectorError::BufferFull {
                            child: to.clone(),
                            limit: keep_limit,
                        }),
                        // The next instance gets a new stdin: nothing to close.
                        Write::Close => Ok(()),
                    };
                    settle(settled, entry.ack, result);
                }
                None
            }
            Sink::Closed => {
                for entry in self.entries.drain(..) {
                    let result = match entry.write {
                        // Closing a closed stdin: done already.
                        Write::Close => Ok(()),
                        Write::Bytes(_) => Err(DirectorError::StdinClosed { child: to.clone() }),
                    };
                    settle(settled, entry.ack, result);
                }
                None
            }
            Sink::Stdin(stdin) => {
                let stdin = stdin.clone();
                if !self.kept.is_empty() {
                    if !stdin.has_room(self.kept.len()) {
                        return Some((stdin, self.kept.len()));
                    }
                    // Refused only if its stdin is closed: then the entries
                    // below fail the same way.
                    if stdin.try_send(self.kept.split().freeze()).is_err() {
                        // Its stdin is closed already: what was kept is lost.
                        for (from, frames) in self.kept_from.drain(..) {
                            let error = DirectorError::StdinClosed { child: to.clone() };
                            settle(settled, Ack::Dropped { from, frames }, Err(error));
                        }
                    }
                    self.kept_from.clear();
                }
                while let Some(entry) = self.entries.front_mut() {
                    if stdin.is_closed() {
                        // The child closed it (or the writer ended): the
                        // rest fails as after a `close`.
                        self.sink = Sink::Closed;
                        return self.flush(to, now, keep_limit, settled);
                    }
                    let needs = match &entry.write {
                        Write::Bytes(bytes) => bytes.len(),
                        Write::Close => 0, // the end of input takes no room
                    };
                    if needs > 0 && !stdin.has_room(needs) {
                        return Some((stdin, needs));
                    }
                    let closing = matches!(entry.write, Write::Close);
                    let result = match &mut entry.write {
                        Write::Bytes(bytes) => stdin
                            .try_send(bytes.split().freeze())
                            .map_err(DirectorError::from),
                        Write::Close => {
                            stdin.try_close();
                            Ok(())
                        }
                    };
                    let entry = self.entries.pop_front().expect("front");
                    settle(settled, entry.ack, result);
                    if closing {
                        self.sink = Sink::Closed;
                        return self.flush(to, now, keep_limit, settled);
                    }
                }
                None
            }
        }
    }
}

/// Whether deadline `a` comes before `b` (`None` is never).
fn earlier(a: Option<Instant>, b: Option<Instant>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a < b,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// How long an entry may wait for room, as a deadline from `now`.
pub(crate) fn deadline(now: Instant, within: Duration) -> Option<Instant> {
    now.checked_add(within)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::StdinCmd as Cmd;

    /// A stdin whose queue holds `bytes`, and the child's end of it.
    fn stdin_for_test(
        child: &str,
        bytes: usize,
    ) -> (StdinSender, tokio::sync::mpsc::UnboundedReceiver<Cmd>) {
        StdinSender::for_test(child, bytes)
    }

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn caller() -> (Ack, oneshot::Receiver<Result<(), DirectorError>>) {
        let (tx, rx) = oneshot::channel();
        (Ack::Caller(tx), rx)
    }

    /// What was queued at the child (receiving it frees its room).
    fn written(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Cmd>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(cmd) = rx.try_recv() {
            out.push(match cmd {
                Cmd::Data(b, _room) => String::from_utf8_lossy(&b).into_owned(),
                Cmd::Close => "<close>".into(),
            });
        }
        out
    }

    #[test]
    fn entries_are_written_in_push_order_and_one_batch_is_one_write() {
        let b = name("b");
        let now = Instant::now();
        let mut outbox = Outbox::new(1 << 20);
        let (stdin, mut rx) = stdin_for_test("b", 1024);
        outbox.attach(&b, stdin);
        let (tx, mut batch_done) = oneshot::channel();
        let token = Rc::new(tx);
        let a = name("a");
        let route = |outbox: &mut Outbox, text: &[u8]| {
            outbox
                .routed(&b, &a, &token, None, now, 1)
                .extend_from_slice(text)
        };
        route(&mut outbox, b"x1\n");
        route(&mut outbox, b"x2\n");
        outbox.push(&b, b"y\n", Ack::Step(1), None, now);
        route(&mut outbox, b"x3\n");
        outbox.push_close(&b, Ack::Step(2), now);
        drop(token);
        let flush = outbox.flush(now);
        assert!(flush.blocked.is_empty());
        assert_eq!(written(&mut rx), ["x1\nx2\n", "y\n", "x3\n", "<close>"]);
        let kinds: Vec<String> = flush
            .settled
            .iter()
            .map(|s| match &s.ack {
                Ack::Routed { frames, .. } => format!("routed {frames}"),
                Ack::Step(i) => format!("step {i}"),
                Ack::Caller(_) => "caller".into(),
                Ack::Dropped { .. } => "dropped".into(),
            })
            .collect();
        assert_eq!(kinds, ["routed 2", "step 1", "routed 1", "step 2"]);
        assert!(batch_done.try_recv().is_err(), "token held by settlements");
        drop(flush);
        assert!(matches!(
            batch_done.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }

    #[test]
    fn a_full_queue_blocks_in_order_and_deadlines_fail_only_their_entry() {
        let b = name("b");
        let t0 = Instant::now();
        let mut outbox = Outbox::new(1 << 20);
        let (stdin, mut rx) = stdin_for_test("b", 1);
        outbox.attach(&b, stdin);
        let (first, _r1) = caller();
        let (second, mut r2) = caller();
        let (third, _r3) = caller();
        outbox.push(&b, b"1\n", first, None, t0);
        outbox.push(&b, b"2\n", second, deadline(t0, Duration::from_secs(1)), t0);
        outbox.push(&b, b"3\n", third, None, t0);
        let flush = outbox.flush(t0);
        assert_eq!(flush.settled.len(), 1, "only the first fits");
        assert_eq!(flush.blocked.len(), 1);
        assert_eq!(
            flush.blocked[0].deadline,
            deadline(t0, Duration::from_secs(1))
        );
        assert_eq!(flush.blocked[0].needs, 2);
        // Two seconds later, still full: the second fails, the third waits.
        outbox.unwatch(&b);
        let later = t0 + Duration::from_secs(2);
        let flush = outbox.flush(later);
        assert_eq!(flush.settled.len(), 1);
        let Settled { ack, result, .. } = flush.settled.into_iter().next().unwrap();
        assert!(matches!(ack, Ack::Caller(_)));
        let error = result.unwrap_err().to_string();
        assert_eq!(
            error,
            "child `b` did not read its stdin: its queue stayed full for 2.0s"
        );
        assert!(
            r2.try_recv().is_err(),
            "the director answers, not the outbox"
        );
        // Room again: the third goes.
        assert_eq!(written(&mut rx), ["1\n"]);
        outbox.unwatch(&b);
        let flush = outbox.flush(later);
        assert_eq!(flush.settled.len(), 1);
        assert_eq!(written(&mut rx), ["3\n"]);
    }

    #[test]
    fn kept_bytes_go_first_to_the_next_instance_and_are_bounded() {
        let b = name("b");
        let now = Instant::now();
        let mut outbox = Outbox::new(6);
        outbox.push(&b, b"one\n", Ack::Step(0), None, now);
        outbox.push(&b, b"two\n", Ack::Step(1), None, now);
        let flush = outbox.flush(now);
        let results: Vec<bool> = flush.settled.iter().map(|s| s.result.is_ok()).collect();
        assert_eq!(results, [true, false], "6 bytes: the second does not fit");
        assert_eq!(
            flush.settled[1].result.as_ref().unwrap_err().to_string(),
            "child `b` is not running yet and its buffer of 6 bytes is full"
        );
        assert_eq!(outbox.waiting_bytes("b"), 4);
        let (stdin, mut rx) = stdin_for_test("b", 64);
        outbox.attach(&b, stdin);
        outbox.push(&b, b"three\n", Ack::Step(2), None, now);
        let flush = outbox.flush(now);
        assert_eq!(flush.settled.len(), 1);
        assert_eq!(written(&mut rx), ["one\n", "three\n"]);
    }

    #[test]
    fn after_close_and_when_gone_every_entry_fails_with_a_reason() {
        let b = name("b");
        let now = Instant::now();
        let mut outbox = Outbox::new(1 << 20);
        let (stdin, mut rx) = stdin_for_test("b", 4);
        outbox.attach(&b, stdin);
        outbox.push_close(&b, Ack::Step(0), now);
        outbox.push(&b, b"late\n", Ack::Step(1), None, now);
        let flush = outbox.flush(now);
        assert!(flush.settled[0].result.is_ok());
        assert_eq!(
            flush.settled[1].result.as_ref().unwrap_err().to_string(),
            "child `b`: its stdin is closed"
        );
        assert_eq!(written(&mut rx), ["<close>"]);

        let c = name("c");
        let (stdin, _rx) = stdin_for_test("c", 1);
        outbox.attach(&c, stdin);
        outbox.push(&c, b"1\n", Ack::Step(0), None, now);
        outbox.push(&c, b"2\n", Ack::Step(1), None, now);
        assert_eq!(outbox.flush(now).blocked.len(), 1);
        outbox.fail_all(&c, || DirectorError::NotRunning {
            child: c.clone(),
            state: "exited".into(),
        });
        let failed = outbox.flush(now).settled;
        assert_eq!(failed.len(), 1);
        assert_eq!(
            failed[0].result.as_ref().unwrap_err().to_string(),
            "child `c` is not running (exited)"
        );
        assert_eq!(outbox.waiting_bytes("c"), 0);
    }

    #[test]
    fn what_was_kept_for_an_instance_that_never_comes_is_reported_dropped() {
        let b = name("b");
        let now = Instant::now();
        let mut outbox = Outbox::new(1 << 20);
        let (tx, _rx) = oneshot::channel();
        let token = Rc::new(tx);
        outbox
            .routed(&b, &name("a"), &token, None, now, 1)
            .extend_from_slice(b"1\n2\n");
        outbox.routed(&b, &name("a"), &token, None, now, 1);
        outbox.push(&b, b"3\n", Ack::Step(4), None, now);
        assert!(
            outbox.flush(now).settled.iter().all(|s| s.result.is_ok()),
            "kept"
        );
        outbox.fail_all(&b, || DirectorError::NotRunning {
            child: b.clone(),
            state: "not started".into(),
        });
        let dropped: Vec<String> = outbox
            .flush(now)
            .settled
            .iter()
            .map(|s| format!("{:?} {}", s.ack, s.result.is_err()))
            .collect();
        assert_eq!(
            dropped,
            [
                "Dropped { from: Some(\"a\"), frames: 2 } true",
                "Dropped { from: None, frames: 1 } true"
            ]
        );
    }

    #[test]
    fn a_cancelled_caller_writes_nothing() {
        let b = name("b");
        let now = Instant::now();
        let mut outbox = Outbox::new(1 << 20);
        let (stdin, mut rx) = stdin_for_test("b", 4);
        outbox.attach(&b, stdin);
        let (ack, answer) = caller();
        drop(answer);
        outbox.push(&b, b"never\n", ack, None, now);
        assert!(outbox.flush(now).settled.is_empty());
        assert!(written(&mut rx).is_empty());
    }

    /// Review: entries that waited for an instance that ended were replayed
    /// to the next one (and a `close` among them was dropped); they fail now,
    /// and what comes while it restarts is kept.
    #[test]
    fn an_instance_that_ends_fails_what_waited_for_it_and_keeps_what_follows() {
        let b = name("b");
        let now = Instant::now();
        let mut outbox = Outbox::new(1 << 20);
        let (stdin, _rx) = stdin_for_test("b", 1);
        outbox.attach(&b, stdin);
        outbox.push(&b, b"1\n", Ack::Step(0), None, now);
        outbox.push(&b, b"2\n", Ack::Step(1), None, now);
        outbox.push_close(&b, Ack::Step(2), now);
        assert_eq!(outbox.flush(now).blocked.len(), 1);
        assert!(outbox.watch(&b, None));
        outbox.keep(&b, || DirectorError::NotRunning {
            child: b.clone(),
            state: "it ended before reading it".into(),
        });
        outbox.push(&b, b"3\n", Ack::Step(3), None, now);
        let results: Vec<(String, bool)> = outbox
            .flush(now)
            .settled
            .iter()
            .map(|s| (format!("{:?}", s.ack), s.result.is_ok()))
            .collect();
        assert_eq!(
            results,
            [
                ("Step(1)".to_string(), false),
                ("Step(2)".to_string(), false),
                ("Step(3)".to_string(), true)
            ]
        );
        // The next instance gets `3` first, and a waiter can be armed for it.
        assert!(
            outbox.watch(&b, None),
            "the ended instance's waiter is forgotten"
        );
        let (stdin, mut rx) = stdin_for_test("b", 64);
        outbox.attach(&b, stdin);
        assert!(outbox.flush(now).settled.is_empty());
        assert_eq!(written(&mut rx), ["3\n"]);
    }

    #[test]
    fn closing_a_closed_stdin_is_done_and_one_big_write_fits_an_empty_buffer() {
        let b = name("b");
        let now = Instant::now();
        let mut outbox = Outbox::new(4);
        outbox.push(&b, b"far more than four bytes\n", Ack::Step(0), None, now);
        assert!(
            outbox.flush(now).settled[0].result.is_ok(),
            "an empty buffer takes it"
        );
        let (stdin, mut rx) = stdin_for_test("b", 64);
        outbox.attach(&b, stdin);
        outbox.push_close(&b, Ack::Step(1), now);
        outbox.push_close(&b, Ack::Step(2), now);
        let flush = outbox.flush(now);
        assert!(flush.settled.iter().all(|s| s.result.is_ok()), "{flush:?}");
        assert_eq!(written(&mut rx), ["far more than four bytes\n", "<close>"]);
    }
}
