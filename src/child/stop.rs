//! The stop flow: signal the group, wait for it to empty within the grace,
//! then SIGKILL the group. The group sits behind a small trait so the flow is
//! tested by the calls it makes (TERM, then KILL after the grace), with
//! tokio's paused clock instead of wall time.

use std::io;
use std::time::Duration;

use tokio::time::Instant;

use crate::Signal;

/// How long to wait for the group to empty after SIGKILL before giving up.
/// SIGKILL cannot be ignored, but a process in uninterruptible sleep (D
/// state) dies only when its I/O returns.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(2);

/// A process group, as the stop flow sees it.
pub(crate) trait Group {
    /// Signals every member; `Ok(false)` if the group is gone.
    fn signal(&self, sig: Signal) -> io::Result<bool>;
    /// Whether a live (not zombie) member remains.
    fn alive(&self) -> bool;
}

/// The real thing: the group whose id is the child's pid.
pub(crate) struct ProcessGroup(pub u32);

impl Group for ProcessGroup {
    fn signal(&self, sig: Signal) -> io::Result<bool> {
        crate::sys::signal_group(self.0, sig)
    }
    fn alive(&self) -> bool {
        crate::sys::group_alive(self.0)
    }
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopOutcome {
    /// The group emptied within the grace.
    Graceful,
    /// SIGKILL was needed, and the group is now empty.
    Killed,
    /// Even after SIGKILL some member lives on (stuck in the kernel).
    Lingering,
}

pub(crate) async fn stop_group(group: &impl Group, signal: Signal, grace: Duration) -> StopOutcome {
    if signal != Signal::Kill {
        send(group, signal);
        // A stopped (SIGSTOP) process acts on TERM only once continued.
        send(group, Signal::Cont);
        if wait_empty(group, grace).await {
            return StopOutcome::Graceful;
        }
    }
    send(group, Signal::Kill);
    if wait_empty(group, KILL_WAIT).await {
        StopOutcome::Killed
    } else {
        StopOutcome::Lingering
    }
}

fn send(group: &impl Group, sig: Signal) {
    if let Err(e) = group.signal(sig) {
        tracing::warn!(signal = %sig, error = %e, "cannot signal the process group");
    }
}

/// Polls until the group is empty or `within` has passed; true if empty.
/// Polling starts at 1 ms and backs off to 20 ms: most children leave within
/// a few milliseconds of TERM, and there is no event for "group empty".
async fn wait_empty(group: &impl Group, within: Duration) -> bool {
    let deadline = crate::duration::later(Instant::now(), within);
    let mut pause = Duration::from_millis(1);
    loop {
        if !group.alive() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A group that records signals and dies on the signals in `dies_on`,
    /// at a given time.
    struct FakeGroup {
        calls: RefCell<Vec<(Signal, Duration)>>,
        dies_on: Vec<Signal>,
        dead_at: RefCell<Option<Instant>>,
        start: Instant,
    }

    impl FakeGroup {
        fn new(dies_on: &[Signal]) -> FakeGroup {
            FakeGroup {
                calls: RefCell::new(Vec::new()),
                dies_on: dies_on.to_vec(),
                dead_at: RefCell::new(None),
                start: Instant::now(),
            }
        }
    }

    impl Group for FakeGroup {
        fn signal(&self, sig: Signal) -> io::Result<bool> {
            self.calls.borrow_mut().push((sig, self.start.elapsed()));
            if self.dies_on.contains(&sig) && self.dead_at.borrow().is_none() {
                // It takes 30 ms to clean up and leave.
                *self.dead_at.borrow_mut() = Some(Instant::now() + Duration::from_millis(30));
            }
            Ok(true)
        }
        fn alive(&self) -> bool {
            !matches!(*self.dead_at.borrow(), Some(t) if Instant::now() >= t)
        }
    }

    fn signals(g: &FakeGroup) -> Vec<Signal> {
        g.calls.borrow().iter().map(|(s, _)| *s).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_that_leaves_on_term_is_not_killed() {
        let g = FakeGroup::new(&[Signal::Term]);
        let outcome = stop_group(&g, Signal::Term, Duration::from_secs(5)).await;
        assert_eq!(outcome, StopOutcome::Graceful);
        assert_eq!(signals(&g), [Signal::Term, Signal::Cont]);
        assert!(g.start.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_that_ignores_term_is_killed_after_the_grace() {
        let g = FakeGroup::new(&[Signal::Kill]);
        let outcome = stop_group(&g, Signal::Term, Duration::from_secs(2)).await;
        assert_eq!(outcome, StopOutcome::Killed);
        let calls = g.calls.borrow();
        assert_eq!(signals(&g), [Signal::Term, Signal::Cont, Signal::Kill]);
        assert_eq!(
            calls[2].1,
            Duration::from_secs(2),
            "KILL exactly at the grace"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn kill_as_the_stop_signal_skips_the_grace() {
        let g = FakeGroup::new(&[Signal::Kill]);
        let outcome = stop_group(&g, Signal::Kill, Duration::from_secs(5)).await;
        assert_eq!(outcome, StopOutcome::Killed);
        assert_eq!(signals(&g), [Signal::Kill]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_that_survives_kill_is_reported_lingering() {
        let g = FakeGroup::new(&[]);
        let outcome = stop_group(&g, Signal::Term, Duration::from_millis(100)).await;
        assert_eq!(outcome, StopOutcome::Lingering);
    }
}
