//! Request/reply correlation. JSON children: the director puts an `id` (or
//! the child's `request_id_field`) in the request, and the reply carrying
//! the same value there answers it. Line
//! children: replies are the next stdout frames, answered in request order.
//!
//! A request that timed out after it was written still owes its reply: when
//! that reply comes it is [`Answer::Late`], dropped and reported, never
//! routed as ordinary output nor taken as the answer to a later request.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::oneshot;

use crate::frame::Frame;

pub(crate) type Reply = oneshot::Sender<Frame>;

/// Timed-out requests remembered per director (older ones are forgotten:
/// their replies, if they ever come, count as output again).
const LATE_KEPT: usize = 1024;

/// What a frame is to the requests waiting on its child.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The reply to a waiting request.
    Reply(Reply),
    /// The reply to a request that timed out.
    Late,
}

/// A request to a line child, in order.
#[derive(Debug)]
enum Slot {
    Waiting(u64, Reply),
    /// Timed out after it was written: its reply is still owed.
    Expired,
}

#[derive(Default)]
pub(crate) struct Requests {
    next_id: u64,
    by_id: HashMap<(Arc<str>, u64), Reply>,
    in_order: HashMap<Arc<str>, VecDeque<Slot>>,
    /// JSON requests that timed out, oldest first (bounded by `LATE_KEPT`).
    late: VecDeque<(Arc<str>, u64)>,
    late_set: HashSet<(Arc<str>, u64)>,
}

impl Requests {
    /// Registers a request to a JSON child; returns the id to put in it.
    pub fn by_id(&mut self, child: &Arc<str>, reply: Reply) -> u64 {
        self.next_id += 1;
        self.by_id.insert((child.clone(), self.next_id), reply);
        self.next_id
    }

    /// Registers a request to a line child, answered by its next frame.
    pub fn in_order(&mut self, child: &Arc<str>, reply: Reply) -> u64 {
        self.next_id += 1;
        self.in_order
            .entry(child.clone())
            .or_default()
            .push_back(Slot::Waiting(self.next_id, reply));
        self.next_id
    }

    /// Whether anything waits for `child` (the fast path skips the lookup).
    pub fn waiting_on(&self, child: &Arc<str>) -> bool {
        !self.by_id.is_empty()
            || !self.late.is_empty()
            || (!self.in_order.is_empty()
                && self.in_order.get(child).is_some_and(|q| !q.is_empty()))
    }

    /// What `frame` from `child` answers, if anything; `field` carries the
    /// id of a JSON reply.
    pub fn answer(&mut self, child: &Arc<str>, frame: &Frame, field: &str) -> Option<Answer> {
        if let Frame::Json(Value::Object(map)) = frame {
            if let Some(id) = map.get(field).and_then(Value::as_u64) {
                let key = (child.clone(), id);
                if let Some(reply) = self.by_id.remove(&key) {
                    return Some(Answer::Reply(reply));
                }
                if self.late_set.remove(&key) {
                    self.late.retain(|k| *k != key);
                    return Some(Answer::Late);
                }
            }
        }
        let queue = self.in_order.get_mut(child)?;
        match queue.pop_front()? {
            Slot::Waiting(_, reply) => Some(Answer::Reply(reply)),
            Slot::Expired => Some(Answer::Late),
        }
    }

    /// Forgets a request that was never written (its reply cannot come).
    pub fn cancel(&mut self, child: &Arc<str>, id: u64) {
        self.by_id.remove(&(child.clone(), id));
        if let Some(queue) = self.in_order.get_mut(child) {
            queue.retain(|slot| !matches!(slot, Slot::Waiting(i, _) if *i == id));
        }
    }

    /// A request that was written timed out: its reply, if it comes, is late.
    pub fn expire(&mut self, child: &Arc<str>, id: u64) {
        let key = (child.clone(), id);
        if self.by_id.remove(&key).is_some() {
            if self.late.len() == LATE_KEPT {
                if let Some(old) = self.late.pop_front() {
                    self.late_set.remove(&old);
                }
            }
            self.late.push_back(key.clone());
            self.late_set.insert(key);
        }
        if let Some(queue) = self.in_order.get_mut(child) {
            for slot in queue.iter_mut() {
                if matches!(slot, Slot::Waiting(i, _) if *i == id) {
                    *slot = Slot::Expired;
                }
            }
        }
    }

    /// Drops every request to `child` (it exited): their callers learn that
    /// no reply will come, and no late reply is owed any more.
    pub fn fail_all(&mut self, child: &Arc<str>) {
        self.by_id.retain(|(c, _), _| c != child);
        self.in_order.remove(child);
        self.late.retain(|(c, _)| c != child);
        self.late_set.retain(|(c, _)| c != child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(r: &mut Requests, child: &Arc<str>, frame: &Frame) -> &'static str {
        match r.answer(child, frame, "id") {
            Some(Answer::Reply(tx)) => {
                let _ = tx.send(frame.clone());
                "reply"
            }
            Some(Answer::Late) => "late",
            None => "output",
        }
    }

    #[test]
    fn json_replies_match_by_id_in_any_order() {
        let mut r = Requests::default();
        let child: Arc<str> = Arc::from("echo");
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let id1 = r.by_id(&child, tx1);
        let id2 = r.by_id(&child, tx2);
        let reply2 = Frame::Json(json!({"id": id2, "ok": true}));
        assert_eq!(reply(&mut r, &child, &reply2), "reply");
        assert_eq!(rx2.try_recv().unwrap(), reply2);
        assert!(rx1.try_recv().is_err());
        assert_eq!(
            reply(&mut r, &child, &Frame::Json(json!({"id": 999}))),
            "output"
        );
        assert_eq!(
            reply(&mut r, &child, &Frame::Json(json!({"id": id1}))),
            "reply"
        );
    }

    #[test]
    fn line_replies_answer_in_request_order_and_cancel_removes() {
        let mut r = Requests::default();
        let child: Arc<str> = Arc::from("bc");
        let (tx1, _rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let id1 = r.in_order(&child, tx1);
        r.in_order(&child, tx2);
        r.cancel(&child, id1);
        let five = Frame::line("5");
        assert_eq!(reply(&mut r, &child, &five), "reply");
        assert_eq!(rx2.try_recv().unwrap(), five);
        assert_eq!(reply(&mut r, &child, &five), "output");
        assert!(!r.waiting_on(&child));
    }

    #[test]
    fn a_reply_to_an_expired_request_is_late_and_answers_no_other() {
        let mut r = Requests::default();
        let bc: Arc<str> = Arc::from("bc");
        let (tx1, _rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let first = r.in_order(&bc, tx1);
        r.expire(&bc, first);
        r.in_order(&bc, tx2);
        assert_eq!(reply(&mut r, &bc, &Frame::line("1")), "late");
        assert_eq!(reply(&mut r, &bc, &Frame::line("2")), "reply");
        assert_eq!(rx2.try_recv().unwrap(), Frame::line("2"));

        let svc: Arc<str> = Arc::from("svc");
        let (tx, _rx) = oneshot::channel();
        let id = r.by_id(&svc, tx);
        r.expire(&svc, id);
        let late = Frame::Json(json!({"id": id}));
        assert_eq!(reply(&mut r, &svc, &late), "late");
        assert_eq!(reply(&mut r, &svc, &late), "output", "owed once");
        let (tx, _rx) = oneshot::channel();
        let id = r.by_id(&svc, tx);
        r.expire(&svc, id);
        r.fail_all(&svc);
        assert_eq!(
            reply(&mut r, &svc, &Frame::Json(json!({"id": id}))),
            "output"
        );
    }
}
