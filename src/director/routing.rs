//! Routes and envelopes: which child a frame goes to. Pure code.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::child::Stream;
use crate::frame::Frame;
use crate::matching::{Pattern, PatternSpec};

/// Frames printed by `from` on `stream` go to `to`'s stdin, if they match
/// `filter`. In a scenario file this is a `[[routes]]` table, with `match`
/// for the filter.
///
/// Frames travel as they are: a JSON frame routed to a `lines` child is one
/// line of compact JSON. Frames from one sender reach one receiver in the
/// order they were printed.
///
/// ```
/// use procession::Route;
/// use procession::PatternSpec;
/// let route = Route::new("client", "server").filter(PatternSpec::Regex("^DATA".into()));
/// # let _ = route;
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The sending child.
    pub from: Arc<str>,
    /// The receiving child.
    pub to: Arc<str>,
    /// Which of the sender's pipes (default stdout).
    #[serde(default)]
    pub stream: Stream,
    /// Only frames that match (a regex on lines, a partial object on JSON).
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub filter: Option<PatternSpec>,
}

impl Route {
    /// A route for every stdout frame of `from` to `to`.
    pub fn new(from: impl Into<Arc<str>>, to: impl Into<Arc<str>>) -> Route {
        Route {
            from: from.into(),
            to: to.into(),
            stream: Stream::Stdout,
            filter: None,
        }
    }

    /// Routes this stream instead of stdout.
    pub fn stream(mut self, stream: Stream) -> Route {
        self.stream = stream;
        self
    }

    /// Routes only frames that match.
    pub fn filter(mut self, filter: PatternSpec) -> Route {
        self.filter = Some(filter);
        self
    }

    /// Only lines that match this regex: `Route::new("a", "b").matching("^DATA")`.
    /// (For a partial JSON object, [`Route::matching_json`].)
    pub fn matching(mut self, regex: impl Into<String>) -> Route {
        self.filter = Some(PatternSpec::Regex(regex.into()));
        self
    }

    /// Only JSON frames that contain this partial object:
    /// `.matching_json(json!({"type": "vote"}))`. Any other JSON value
    /// matches frames that are exactly it.
    pub fn matching_json(mut self, partial: serde_json::Value) -> Route {
        self.filter = Some(match partial {
            serde_json::Value::Object(map) => PatternSpec::Json(map),
            other => PatternSpec::Regex(format!("^{}$", regex::escape(&other.to_string()))),
        });
        self
    }
}

struct Compiled {
    to: Arc<str>,
    stream: Stream,
    filter: Option<Pattern>,
}

/// The routes, indexed by sender.
#[derive(Default)]
pub(crate) struct RouteTable {
    by_from: rustc_hash::FxHashMap<Arc<str>, Vec<Compiled>>,
    count: usize,
}

impl RouteTable {
    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.count
    }
}

impl RouteTable {
    /// Adds checked routes.
    pub fn add(&mut self, routes: Vec<Route>) {
        for route in routes {
            let filter = route.filter.as_ref().map(|f| {
                f.compile()
                    .expect("routes are checked before they are added")
            });
            self.by_from.entry(route.from).or_default().push(Compiled {
                to: route.to,
                stream: route.stream,
                filter,
            });
            self.count += 1;
        }
    }

    /// Drops every route from or to `name` (a child removed).
    pub fn remove_child(&mut self, name: &str) {
        self.by_from.remove(name);
        for routes in self.by_from.values_mut() {
            routes.retain(|r| &*r.to != name);
        }
        self.count = self.by_from.values().map(Vec::len).sum();
    }

    /// Whether every frame from `from` on `stream` goes to the same
    /// receivers: none of its routes has a filter.
    pub fn unfiltered(&self, from: &str, stream: Stream) -> bool {
        self.by_from.get(from).is_none_or(|routes| {
            routes
                .iter()
                .all(|r| r.stream != stream || r.filter.is_none())
        })
    }

    /// Every receiver of `from`'s frames on `stream`, in route order (see
    /// [`RouteTable::unfiltered`]).
    pub fn receivers<'a>(
        &'a self,
        from: &str,
        stream: Stream,
    ) -> impl Iterator<Item = &'a Arc<str>> + 'a {
        self.by_from
            .get(from)
            .into_iter()
            .flatten()
            .filter(move |r| r.stream == stream)
            .map(|r| &r.to)
    }

    /// The children a frame from `from` on `stream` goes to, in route order.
    pub fn targets<'a>(
        &'a self,
        from: &str,
        stream: Stream,
        frame: &'a Frame,
    ) -> impl Iterator<Item = &'a Arc<str>> + 'a {
        self.by_from
            .get(from)
            .into_iter()
            .flatten()
            .filter(move |r| {
                r.stream == stream && r.filter.as_ref().is_none_or(|f| f.matches(frame))
            })
            .map(|r| &r.to)
    }
}

/// Envelope addressing: a JSON object with a string `"to"` is meant for that
/// child. Returns the name and the frame to deliver, with `"from"` added.
pub(crate) fn envelope(from: &str, frame: &Frame) -> Option<(Arc<str>, Frame)> {
    let Frame::Json(Value::Object(map)) = frame else {
        return None;
    };
    let Some(Value::String(to)) = map.get("to") else {
        return None;
    };
    let mut map = map.clone();
    map.insert("from".to_string(), Value::String(from.to_string()));
    Some((Arc::from(to.as_str()), Frame::Json(Value::Object(map))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_make_the_filters_a_scenario_would() {
        use serde_json::json;
        let r = Route::new("a", "b").matching("^DATA");
        assert_eq!(r.filter, Some(PatternSpec::Regex("^DATA".into())));
        let r = Route::new("a", "b").matching_json(json!({"type": "vote"}));
        assert_eq!(
            r.filter,
            Some(PatternSpec::Json(
                json!({"type": "vote"}).as_object().unwrap().clone()
            ))
        );
        let exact = Route::new("a", "b")
            .matching_json(json!(42))
            .filter
            .unwrap();
        let exact = exact.compile().unwrap();
        assert!(exact.matches(&Frame::Json(json!(42))));
        assert!(!exact.matches(&Frame::Json(json!(420))));
    }
    use serde_json::json;

    #[test]
    fn routes_select_by_sender_stream_and_filter() {
        let mut table = RouteTable::default();
        let routes = vec![
            Route::new("a", "b"),
            Route::new("a", "c").filter(PatternSpec::Regex("^DATA".into())),
            Route::new("a", "d").stream(Stream::Stderr),
        ];
        table.add(routes);
        let to = |stream, line: &str| {
            let frame = Frame::line(line);
            table
                .targets("a", stream, &frame)
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(to(Stream::Stdout, "DATA 1"), ["b", "c"]);
        assert_eq!(to(Stream::Stdout, "hello"), ["b"]);
        assert_eq!(to(Stream::Stderr, "oops"), ["d"]);
        assert!(table
            .targets("b", Stream::Stdout, &Frame::line("x"))
            .next()
            .is_none());
    }

    #[test]
    fn envelopes_add_from_and_ignore_everything_else() {
        let (to, frame) = envelope("alice", &Frame::Json(json!({"to": "bob", "n": 1}))).unwrap();
        assert_eq!(&*to, "bob");
        assert_eq!(
            frame,
            Frame::Json(json!({"to": "bob", "n": 1, "from": "alice"}))
        );
        assert!(envelope("alice", &Frame::Json(json!({"to": 3}))).is_none());
        assert!(envelope("alice", &Frame::Json(json!(["to", "bob"]))).is_none());
        assert!(envelope("alice", &Frame::line("{\"to\":\"bob\"}")).is_none());
    }
}
