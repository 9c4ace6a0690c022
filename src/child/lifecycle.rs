//! When is a child finished? A pure state machine, so the rule can be read
//! in one place and tested without processes.
//!
//! The exit is reported once the leader's status is known **and** both pipes
//! reached EOF (or the drain time ran out) **and** a stop in progress has
//! finished with the group. Any order of those events works.

use super::messages::ExitStatus;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum StopPhase {
    #[default]
    NotAsked,
    InProgress,
    Done,
}

/// What the actor should do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing yet.
    Wait,
    /// The leader exited but a pipe is still open: tell the pump, which
    /// reads the rest and then waits the drain time at most.
    Drain,
    /// Report the exit now.
    Finish { output_complete: bool },
}

#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    status: Option<ExitStatus>,
    drained: bool,
    drain_told: bool,
    drain_expired: bool,
    stop: StopPhase,
    finished: bool,
}

impl Lifecycle {
    pub fn leader_exited(&mut self, status: ExitStatus) -> Next {
        self.status = Some(status);
        self.next()
    }

    pub fn drained(&mut self) -> Next {
        self.drained = true;
        self.next()
    }

    pub fn drain_expired(&mut self) -> Next {
        self.drain_expired = true;
        self.next()
    }

    /// Whether a stop flow should start now (false if one ran or is running,
    /// or the child is already finished).
    pub fn begin_stop(&mut self) -> bool {
        if self.finished || self.stop != StopPhase::NotAsked {
            return false;
        }
        self.stop = StopPhase::InProgress;
        true
    }

    pub fn stop_done(&mut self) -> Next {
        self.stop = StopPhase::Done;
        self.next()
    }

    pub fn stop_requested(&self) -> bool {
        self.stop != StopPhase::NotAsked
    }

    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    fn next(&mut self) -> Next {
        if self.finished || self.status.is_none() || self.stop == StopPhase::InProgress {
            return Next::Wait;
        }
        if self.drained || self.drain_expired {
            self.finished = true;
            return Next::Finish {
                output_complete: self.drained,
            };
        }
        if !self.drain_told {
            self.drain_told = true;
            return Next::Drain;
        }
        Next::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DONE: Next = Next::Finish {
        output_complete: true,
    };

    #[test]
    fn exit_then_eof_and_eof_then_exit_both_finish_complete() {
        let mut l = Lifecycle::default();
        assert_eq!(l.leader_exited(ExitStatus::Code(0)), Next::Drain);
        assert_eq!(l.drained(), DONE);

        let mut l = Lifecycle::default();
        assert_eq!(l.drained(), Next::Wait);
        assert_eq!(l.leader_exited(ExitStatus::Code(0)), DONE);
    }

    #[test]
    fn a_pipe_held_open_finishes_incomplete_once() {
        let mut l = Lifecycle::default();
        assert_eq!(l.leader_exited(ExitStatus::Code(0)), Next::Drain);
        assert_eq!(
            l.drain_expired(),
            Next::Finish {
                output_complete: false
            }
        );
        assert_eq!(l.drained(), Next::Wait, "finished only once");
        assert!(!l.begin_stop(), "no stop after the end");
    }

    #[test]
    fn a_stop_in_progress_holds_the_report_until_the_group_is_done() {
        let mut l = Lifecycle::default();
        assert!(l.begin_stop());
        assert!(!l.begin_stop(), "one stop flow at a time");
        assert_eq!(l.drained(), Next::Wait);
        assert_eq!(l.leader_exited(ExitStatus::Code(143)), Next::Wait);
        assert_eq!(l.stop_done(), DONE);
        assert!(l.stop_requested());
    }

    #[test]
    fn drain_expiry_during_a_stop_waits_for_the_stop() {
        let mut l = Lifecycle::default();
        assert_eq!(l.leader_exited(ExitStatus::Code(0)), Next::Drain);
        assert!(l.begin_stop());
        assert_eq!(l.drain_expired(), Next::Wait);
        assert_eq!(
            l.stop_done(),
            Next::Finish {
                output_complete: false
            }
        );
    }
}
