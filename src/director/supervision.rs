//! Restart decisions, after Erlang/OTP's supervisor plus what it lacks
//! (exponential backoff). Pure code: a table of cases tests it without
//! processes.
//!
//! - Policy: `never` restarts nothing; `on-failure` restarts after a
//!   non-zero exit or a signal we did not send; `always` restarts after any
//!   exit, including one by a signal we sent (a `kill` step). A stop we
//!   asked for is never restarted.
//! - Intensity: at most `max` restarts within any `within` window (`max = 3`
//!   means 3 restarts, 4 spawns); one more makes the child give up.
//! - Backoff: the n-th restart of an episode waits `backoff * 2^(n-1)`,
//!   capped at `max_backoff`. An instance that stayed up at least `within`
//!   ends the episode: the next failure waits `backoff` again.
//! - Strategy: which siblings restart with a failed child: none
//!   (`one_for_one`), all others (`one_for_all`), or those started after it
//!   (`rest_for_one`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::child::{Exit, ExitStatus};
pub use crate::spec::{RestartPolicy, RestartSpec};

/// Which siblings are restarted with a failed child.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the failed child (the default).
    #[default]
    OneForOne,
    /// Every child.
    OneForAll,
    /// The failed child and every child started after it, in start order.
    RestForOne,
}

/// One child's restart history, kept across its instances.
#[derive(Debug, Default, Clone)]
pub(crate) struct History {
    /// When each restart within the window happened.
    restarts: VecDeque<Instant>,
    /// Restarts in the current backoff episode.
    episode: u32,
    /// Restarts in all.
    pub total: u32,
}

/// What to do about an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The policy does not restart this exit.
    Stay,
    /// Restart after `delay`; this is restart number `attempt` (from 1).
    Restart { delay: Duration, attempt: u32 },
    /// The intensity is used up: the child stays down.
    GiveUp,
}

/// Whether `policy` restarts `exit`. Stops never get here (the director
/// handles a child it stopped before asking), so `requested` means a signal
/// we sent (a `kill` step): `always` restarts after it, `on-failure` does not.
pub(crate) fn wants_restart(policy: RestartPolicy, exit: &Exit) -> bool {
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !exit.requested && exit.status != ExitStatus::Code(0),
    }
}

/// Decides about one exit at `now`, updating the history.
#[cfg(test)]
pub(crate) fn decide(
    spec: &RestartSpec,
    exit: &Exit,
    history: &mut History,
    now: Instant,
) -> Decision {
    decide_as(spec, exit, false, history, now)
}

/// [`decide`]; `failed`: the exit counts as a failure whatever its status
/// (a child stopped because a probe failed it).
pub(crate) fn decide_as(
    spec: &RestartSpec,
    exit: &Exit,
    failed: bool,
    history: &mut History,
    now: Instant,
) -> Decision {
    let wanted = match spec.policy {
        RestartPolicy::OnFailure if failed => true,
        policy => wants_restart(policy, exit),
    };
    if !wanted {
        return Decision::Stay;
    }
    if exit.runtime >= spec.within {
        history.episode = 0;
    }
    while history
        .restarts
        .front()
        .is_some_and(|&t| now.duration_since(t) >= spec.within)
    {
        history.restarts.pop_front();
    }
    if history.restarts.len() as u32 >= spec.max {
        return Decision::GiveUp;
    }
    history.restarts.push_back(now);
    let factor = 2u32.saturating_pow(history.episode.min(31));
    let delay = spec
        .backoff
        .saturating_mul(factor)
        .min(spec.max_backoff.max(spec.backoff));
    history.episode += 1;
    history.total += 1;
    Decision::Restart {
        delay,
        attempt: history.total,
    }
}

/// The siblings restarted with `failed` under `strategy`, in start order.
/// `started` is every child in the order they first started.
pub(crate) fn siblings<'a, T: PartialEq>(
    strategy: Strategy,
    failed: &T,
    started: &'a [T],
) -> &'a [T] {
    let at = started.iter().position(|c| c == failed);
    match (strategy, at) {
        (Strategy::OneForOne, _) | (_, None) => &[],
        (Strategy::OneForAll, _) => started,
        (Strategy::RestForOne, Some(i)) => &started[i..],
    }
}

/// Children restarted together: the failed one and its strategy's
/// siblings. They respawn, in start order, once the backoff delay has
/// passed and every sibling that was stopped for it has exited.
#[derive(Debug, Default)]
pub(crate) struct RestartGroup<N> {
    /// In start order.
    members: Vec<N>,
    /// Siblings stopped for the restart that have not exited yet.
    exiting: Vec<N>,
    delay_over: bool,
}

impl<N: PartialEq + Clone> RestartGroup<N> {
    /// A group for `failed` and the `stopped` siblings, respawned in the
    /// order of `started`.
    pub fn new(failed: N, stopped: Vec<N>, started: &[N]) -> RestartGroup<N> {
        let mut members = stopped.clone();
        if !members.contains(&failed) {
            members.push(failed);
        }
        members.sort_by_key(|m| started.iter().position(|s| s == m));
        RestartGroup {
            members,
            exiting: stopped,
            delay_over: false,
        }
    }

    /// A stopped sibling exited; `restarts`: it comes back with the group
    /// (false: a `never` child, which stays down).
    pub fn exited(&mut self, member: &N, restarts: bool) {
        self.exiting.retain(|m| m != member);
        if !restarts {
            self.members.retain(|m| m != member);
        }
    }

    /// A member leaves the group: it will not come back with it, but the
    /// group still waits for its exit if it is being stopped.
    pub fn leave(&mut self, member: &N) {
        self.members.retain(|m| m != member);
    }

    /// Whether the group waits for `member` to exit.
    pub fn waits_for(&self, member: &N) -> bool {
        self.exiting.contains(member)
    }

    /// The backoff delay has passed.
    pub fn delay_over(&mut self) {
        self.delay_over = true;
    }

    /// The members to respawn now (in start order), once nothing is left
    /// to wait for.
    pub fn due(&self) -> Option<&[N]> {
        (self.delay_over && self.exiting.is_empty()).then_some(&self.members[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(status: ExitStatus, requested: bool, up_ms: u64) -> Exit {
        Exit {
            status,
            requested,
            output_complete: true,
            runtime: Duration::from_millis(up_ms),
        }
    }

    #[test]
    fn policies_decide_which_exits_restart() {
        use ExitStatus::*;
        use RestartPolicy::*;
        let cases = [
            // policy, status, requested by us, restarts?
            (Never, Code(1), false, false),
            (Never, Code(0), false, false),
            (OnFailure, Code(0), false, false),
            (OnFailure, Code(3), false, true),
            (OnFailure, Signal(crate::Signal::Segv), false, true),
            (OnFailure, Signal(crate::Signal::Term), true, false),
            (Always, Code(0), false, true),
            (Always, Signal(crate::Signal::Kill), true, true),
            (Always, Unknown, false, true),
        ];
        for (policy, status, requested, want) in cases {
            assert_eq!(
                wants_restart(policy, &exit(status, requested, 5)),
                want,
                "{policy:?} {status:?} requested={requested}"
            );
        }
    }

    #[test]
    fn max_restarts_within_the_window_then_give_up() {
        let spec = RestartSpec {
            max: 3,
            ..RestartSpec::policy(RestartPolicy::OnFailure)
        };
        let mut h = History::default();
        let t0 = Instant::now();
        let crash = exit(ExitStatus::Code(3), false, 1);
        let got: Vec<Decision> = (0..5)
            .map(|i| decide(&spec, &crash, &mut h, t0 + Duration::from_millis(i)))
            .collect();
        assert!(matches!(got[0], Decision::Restart { attempt: 1, .. }));
        assert!(matches!(got[2], Decision::Restart { attempt: 3, .. }));
        assert_eq!(got[3], Decision::GiveUp, "max = 3: the 4th exit gives up");
    }

    #[test]
    fn restarts_older_than_the_window_do_not_count() {
        let spec = RestartSpec {
            max: 2,
            within: Duration::from_secs(10),
            ..RestartSpec::policy(RestartPolicy::Always)
        };
        let mut h = History::default();
        let t0 = Instant::now();
        let quit = exit(ExitStatus::Code(0), false, 1);
        assert!(matches!(
            decide(&spec, &quit, &mut h, t0),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            decide(&spec, &quit, &mut h, t0 + Duration::from_secs(1)),
            Decision::Restart { .. }
        ));
        assert_eq!(
            decide(&spec, &quit, &mut h, t0 + Duration::from_secs(2)),
            Decision::GiveUp
        );
        // 11 s after the first: only one restart is still in the window.
        assert!(matches!(
            decide(&spec, &quit, &mut h, t0 + Duration::from_secs(11)),
            Decision::Restart { attempt: 3, .. }
        ));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_after_a_long_run() {
        let spec = RestartSpec {
            max: 100,
            within: Duration::from_secs(10),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            ..RestartSpec::policy(RestartPolicy::OnFailure)
        };
        let mut h = History::default();
        let t0 = Instant::now();
        let delays: Vec<u64> = (0..5)
            .map(|i| {
                match decide(
                    &spec,
                    &exit(ExitStatus::Code(1), false, 1),
                    &mut h,
                    t0 + Duration::from_millis(i),
                ) {
                    Decision::Restart { delay, .. } => delay.as_millis() as u64,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        // An instance that stayed up for `within` starts a new episode.
        let long_run = exit(ExitStatus::Code(1), false, 10_000);
        assert_eq!(
            decide(&spec, &long_run, &mut h, t0 + Duration::from_secs(1)),
            Decision::Restart {
                delay: Duration::from_millis(100),
                attempt: 6
            }
        );
    }

    #[test]
    fn strategies_pick_siblings_in_start_order() {
        let started = ["db", "api", "web", "worker"];
        assert!(siblings(Strategy::OneForOne, &"api", &started).is_empty());
        assert_eq!(siblings(Strategy::OneForAll, &"api", &started), started);
        assert_eq!(
            siblings(Strategy::RestForOne, &"api", &started),
            ["api", "web", "worker"]
        );
        assert_eq!(
            siblings(Strategy::RestForOne, &"worker", &started),
            ["worker"]
        );
    }

    #[test]
    fn a_group_respawns_in_start_order_after_its_delay_and_its_siblings() {
        let started = ["db", "api", "web"];
        let mut group = RestartGroup::new("api", vec!["web", "db"], &started);
        assert_eq!(group.due(), None, "nothing is over yet");
        group.exited(&"db", true);
        group.delay_over();
        assert_eq!(group.due(), None, "web has not exited");
        group.exited(&"web", false);
        assert_eq!(
            group.due(),
            Some(&["db", "api"][..]),
            "web is `never`: it stays down"
        );
        let alone = {
            let mut g = RestartGroup::new("web", vec![], &started);
            g.delay_over();
            g.due().map(<[_]>::to_vec)
        };
        assert_eq!(alone, Some(vec!["web"]));
    }

    #[test]
    fn restart_specs_read_a_word_or_a_table() {
        #[derive(Debug, Deserialize)]
        struct T {
            restart: RestartSpec,
        }
        let word: T = toml::from_str("restart = \"always\"").unwrap();
        assert_eq!(word.restart, RestartSpec::policy(RestartPolicy::Always));
        let table: T = toml::from_str(
            "restart = { policy = \"on-failure\", max = 5, backoff = \"50ms\", max_backoff = \"2s\" }",
        )
        .unwrap();
        assert_eq!(table.restart.max, 5);
        assert_eq!(table.restart.backoff, Duration::from_millis(50));
        assert_eq!(table.restart.within, Duration::from_secs(10), "default");
        let bad = toml::from_str::<T>("restart = \"sometimes\"")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("sometimes"), "{bad}");
        let bad = toml::from_str::<T>("restart = { policy = \"always\", maxx = 3 }")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("maxx"), "{bad}");
    }
}
