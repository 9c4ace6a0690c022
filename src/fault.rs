//! Deliberate panics at chosen places, so that tests can show that a bug in
//! an actor fails the run and stops every child instead of hanging it
//! (DESIGN.md invariant 5). Not part of the API: nothing arms a fault
//! unless a test asks for one.

use std::cell::Cell;

/// A place where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// A child actor, as it is asked to stop (a message handler).
    ChildStop,
    /// A child actor's output pump, as it delivers a batch (a future).
    ChildOutput,
    /// The director, as it handles a batch of a child's events.
    Director,
}

impl Point {
    const ALL: [Point; 3] = [Point::ChildStop, Point::ChildOutput, Point::Director];

    fn bit(self) -> u8 {
        1 << self as u8
    }

    fn name(self) -> &'static str {
        match self {
            Point::ChildStop => "child-stop",
            Point::ChildOutput => "child-output",
            Point::Director => "director",
        }
    }
}

thread_local! {
    static ARMED: Cell<u8> = const { Cell::new(0) };
}

/// Makes the next pass through `point` on this thread panic (once).
pub fn arm(point: Point) {
    ARMED.with(|a| a.set(a.get() | point.bit()));
}

/// Arms the points named in `list` (comma-separated: `child-stop`,
/// `child-output`, `director`); returns the names it did not know.
pub fn arm_by_names(list: &str) -> Vec<String> {
    let mut unknown = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match Point::ALL.iter().find(|p| p.name() == name) {
            Some(point) => arm(*point),
            None => unknown.push(name.to_string()),
        }
    }
    unknown
}

/// Panics if `point` is armed on this thread (and disarms it).
pub(crate) fn hit(point: Point) {
    let armed = ARMED.with(|a| {
        let was = a.get();
        a.set(was & !point.bit());
        was & point.bit() != 0
    });
    if armed {
        panic!("injected fault at {}", point.name());
    }
}
