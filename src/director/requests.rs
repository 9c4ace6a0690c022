//! Request/reply correlation. JSON children: the director puts an `id` in
//! the request and the reply carrying the same `id` answers it. Line
//! children: replies are the next stdout frames, answered in request order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::oneshot;

use crate::frame::Frame;

pub(crate) type Reply = oneshot::Sender<Frame>;

#[derive(Default)]
pub(crate) struct Requests {
    next_id: u64,
    by_id: HashMap<(Arc<str>, u64), Reply>,
    in_order: HashMap<Arc<str>, VecDeque<(u64, Reply)>>,
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
            .push_back((self.next_id, reply));
        self.next_id
    }

    /// Whether anything waits for `child` (the fast path skips the lookup).
    pub fn waiting_on(&self, child: &Arc<str>) -> bool {
        !self.by_id.is_empty() || self.in_order.get(child).is_some_and(|q| !q.is_empty())
    }

    /// The waiting request that `frame` from `child` answers, if any.
    pub fn answer(&mut self, child: &Arc<str>, frame: &Frame) -> Option<Reply> {
        if let Frame::Json(Value::Object(map)) = frame {
            if let Some(id) = map.get("id").and_then(Value::as_u64) {
                if let Some(reply) = self.by_id.remove(&(child.clone(), id)) {
                    return Some(reply);
                }
            }
        }
        let queue = self.in_order.get_mut(child)?;
        let (_, reply) = queue.pop_front()?;
        Some(reply)
    }

    /// Forgets a request that timed out.
    pub fn cancel(&mut self, child: &Arc<str>, id: u64) {
        self.by_id.remove(&(child.clone(), id));
        if let Some(queue) = self.in_order.get_mut(child) {
            queue.retain(|(i, _)| *i != id);
        }
    }

    /// Drops every request to `child` (it exited): their callers learn that
    /// no reply will come.
    pub fn fail_all(&mut self, child: &Arc<str>) {
        self.by_id.retain(|(c, _), _| c != child);
        self.in_order.remove(child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_replies_match_by_id_in_any_order() {
        let mut r = Requests::default();
        let child: Arc<str> = Arc::from("echo");
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let id1 = r.by_id(&child, tx1);
        let id2 = r.by_id(&child, tx2);
        let reply2 = Frame::Json(json!({"id": id2, "ok": true}));
        r.answer(&child, &reply2)
            .unwrap()
            .send(reply2.clone())
            .unwrap();
        assert_eq!(rx2.try_recv().unwrap(), reply2);
        assert!(rx1.try_recv().is_err());
        assert!(r.answer(&child, &Frame::Json(json!({"id": 999}))).is_none());
        assert!(r.answer(&child, &Frame::Json(json!({"id": id1}))).is_some());
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
        r.answer(&child, &five).unwrap().send(five.clone()).unwrap();
        assert_eq!(rx2.try_recv().unwrap(), five);
        assert!(r.answer(&child, &five).is_none());
        assert!(!r.waiting_on(&child));
    }
}
