//! The registry of children: one state enum per child, changed only by the
//! transitions below. Each transition returns the [`Fact`]s the director
//! must carry out, in order: publish an event, spawn a process, stop one,
//! arm a timer, tell the protocol, answer waiters, open or close a child's
//! outbox queue. Pure code: no actors, no processes, time passed in; the
//! tests at the end run the transitions as tables.
//!
//! ```text
//!            ┌──────────────── restart group due ◄────────────┐
//!            ▼                                                │
//!  Pending ─deps ready─► Spawning ─spawned─► Starting ─first event─► Running
//!     │                     │                    │                    │
//!     │ dependency down     │ spawn failed       └──── stop ──► Stopping
//!     ▼                     ▼                                         │
//!  NotStarted           SpawnFailed            exit ─┬─ asked / shutdown ─► Stopped
//!                                                    ├─ policy stays ─────► Exited
//!                                                    ├─ intensity used ───► GaveUp
//!                                                    └─ restart ──────────► Restarting
//! ```
//!
//! The handle type `H` is the child actor's address in the director and
//! anything cheap in tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::messages::{ChildInfo, ChildState};
use super::supervision::{self, Decision, History, RestartGroup, Strategy};
use crate::child::Exit;
use crate::event::EventKind;
use crate::frame::Framing;
use crate::matching::{Pattern, PatternSpec};
use crate::spec::{ChildSpec, Ready, RestartPolicy};

/// Why a child is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// A caller or a `stop` step asked: it stays down.
    Asked,
    /// The director is shutting down.
    Shutdown,
    /// It is restarted with a failed sibling (this restart group).
    Restart(u64),
    /// A probe failed it: its exit counts as a failure.
    Failed,
    /// A restart was asked for: it starts again at once, whatever its
    /// policy, without counting against its restart intensity.
    Again,
}

/// Whether a child is ready, will perhaps be, or will not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    Ready,
    Waiting,
    /// It is down, or will never start: why.
    Never(String),
}

/// Which probe of a child a try is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    /// `ready`: until one try passes.
    Ready,
    /// `alive`: from readiness on; `failures` failed tries in a row so far.
    Alive { failures: u32 },
}

/// Why a shutdown began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShutdownCause {
    /// Asked for (a caller, a signal, a run timeout): a running protocol fails.
    Requested,
    /// A significant child ended: the run is over, and a protocol without
    /// steps ends as it would have anyway.
    Significant,
    /// The person running it asked (`procession ctl shutdown`): a protocol
    /// with steps left fails, one without steps ends as passed.
    Operator,
}

/// Where one child is. See the [module docs](self) for the transitions.
#[derive(Debug)]
pub(crate) enum State<H> {
    /// Waiting for its dependencies to be ready.
    Pending,
    /// Its spawn was asked for.
    Spawning,
    /// Its process runs; its first event has not been handled yet.
    Starting { handle: H, pid: u32 },
    /// Its process runs.
    Running { handle: H, pid: u32 },
    /// A stop was asked for; its exit will come.
    Stopping {
        handle: H,
        pid: u32,
        reason: StopReason,
    },
    /// It exited and will start again with its restart group.
    Restarting { last: Exit, group: u64 },
    /// It exited, and its policy does not restart it.
    Exited(Exit),
    /// It was stopped on purpose and stays down.
    Stopped(Exit),
    /// Its restart intensity is used up.
    GaveUp { last: Exit, restarts: u32 },
    /// Its process could not be started.
    SpawnFailed(String),
    /// It was never started (a dependency went down, a shutdown came first).
    NotStarted(String),
}

/// One child: its spec, its state, and what outlives its instances.
#[derive(Debug)]
pub(crate) struct Child<H> {
    pub spec: Arc<ChildSpec>,
    /// The pattern of a `ready = { line | json }` spec.
    ready_on: Option<Pattern>,
    pub state: State<H>,
    /// The current (or last) instance was ready.
    pub ready: bool,
    /// Spawns so far (the `attempt` of the next `spawned`).
    spawns: u32,
    history: History,
    /// Why the last probe try of this instance failed.
    probe_error: Option<String>,
    /// When the current instance reported it was spawned.
    up_since: Option<std::time::Instant>,
}

/// Something the director must do, in order.
#[derive(Debug)]
pub(crate) enum Fact {
    /// Publish an event about a child.
    Publish(Arc<str>, EventKind),
    /// Publish an event about the run.
    PublishRun(EventKind),
    /// Spawn the child's process and report `spawned` or `spawn_failed`.
    Spawn(Arc<str>),
    /// Ask the running child to stop (with this grace, or its spec's).
    Stop(Arc<str>, Option<Duration>),
    /// SIGKILL the child's group (a second shutdown).
    Kill(Arc<str>),
    /// Call `ready_after(child, pid)` after `delay` (`ready = { after }`).
    ReadyAfter {
        child: Arc<str>,
        pid: u32,
        delay: Duration,
    },
    /// Call `restart_delay_over(group)` after `delay`.
    RestartAfter { group: u64, delay: Duration },
    /// Try a probe of instance `pid` after `after` (see `probe_try`).
    Probe {
        child: Arc<str>,
        pid: u32,
        kind: ProbeKind,
        after: Duration,
    },
    /// Call `ready_deadline(child, pid)` after `within` (a probe's bound).
    ReadyDeadline {
        child: Arc<str>,
        pid: u32,
        within: Duration,
    },
    /// Tell the protocol.
    Tell(Tell),
    /// What waits for the child's stdin waits for its next instance.
    KeepInput(Arc<str>),
    /// What waits for the child's stdin fails: it is down for good.
    CloseInput(Arc<str>),
    /// Answer `wait_exit` callers (`None`: it never ran).
    AnswerExit(Arc<str>, Option<Exit>),
    /// Answer `wait_ready` callers: it will not be ready, for this reason.
    NotReady(Arc<str>, String),
    /// Nothing runs any more after a shutdown: publish `finished` (once).
    Finished,
}

/// What the protocol learns from the registry.
#[derive(Debug)]
pub(crate) enum Tell {
    Spawned(Arc<str>),
    Ready(Arc<str>),
    Exit {
        child: Arc<str>,
        exit: Exit,
        for_good: bool,
    },
    /// A child a `start` step may wait for cannot start.
    StartFailed(Arc<str>, String),
    /// The run fails for this reason.
    Abort(String),
    /// A protocol without steps ends as passed (unless it failed).
    EndIdle,
}

/// Whether a child takes input now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// No child has this name.
    Unknown,
    /// It is down for good (until a `start`).
    Refused,
    /// It runs or will: bytes are encoded for this framing.
    Open(Framing),
}

/// What a `start` step finds.
#[derive(Debug)]
pub(crate) enum Start {
    /// The child runs and is ready: the step passes now.
    Ready,
    /// It will be ready later (or fail to be): wait.
    Later(Vec<Fact>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    ShuttingDown,
    Finished,
}

/// Every child of a director. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Children<H> {
    children: FxHashMap<Arc<str>, Child<H>>,
    /// Names in the order they were added.
    order: Vec<Arc<str>>,
    /// Names in the order they first started (for `rest_for_one`).
    start_order: Vec<Arc<str>>,
    /// For each child, the children that depend on it.
    dependents: FxHashMap<Arc<str>, Vec<Arc<str>>>,
    groups: FxHashMap<u64, RestartGroup<Arc<str>>>,
    next_group: u64,
    strategy: Strategy,
    phase: Phase,
}

impl<H: Clone> Children<H> {
    pub fn new(strategy: Strategy) -> Children<H> {
        Children {
            children: FxHashMap::default(),
            order: Vec::new(),
            start_order: Vec::new(),
            dependents: FxHashMap::default(),
            groups: FxHashMap::default(),
            next_group: 0,
            strategy,
            phase: Phase::Running,
        }
    }

    // --- Queries ---

    pub fn get(&self, name: &str) -> Option<&Child<H>> {
        self.children.get(name)
    }

    /// Names in the order they were added.
    pub fn names(&self) -> &[Arc<str>] {
        &self.order
    }

    /// The child actor of a child whose process runs.
    pub fn handle(&self, name: &str) -> Option<&H> {
        match &self.children.get(name)?.state {
            State::Starting { handle, .. }
            | State::Running { handle, .. }
            | State::Stopping { handle, .. } => Some(handle),
            _ => None,
        }
    }

    /// The pid of a child whose process runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        match &self.children.get(name)?.state {
            State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Stopping { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// Whether its process runs.
    pub fn is_live(&self, name: &str) -> bool {
        self.handle(name).is_some()
    }

    /// Whether input for it is taken now (it runs, or will: pending,
    /// spawning, restarting), with one lookup: this runs once per routed frame.
    pub fn input(&self, name: &str) -> Input {
        let Some(child) = self.children.get(name) else {
            return Input::Unknown;
        };
        match child.state {
            State::Pending
            | State::Spawning
            | State::Starting { .. }
            | State::Running { .. }
            | State::Stopping { .. }
            | State::Restarting { .. } => Input::Open(child.spec.framing),
            State::Exited(_)
            | State::Stopped(_)
            | State::GaveUp { .. }
            | State::SpawnFailed(_)
            | State::NotStarted(_) => Input::Refused,
        }
    }

    /// Whether `frame` makes the child ready (it is not yet, and its spec
    /// waits for a matching frame).
    /// Whether `name`'s output is `lines` and no frame of it can make it
    /// ready (it is, or has no ready line): what chunk forwarding needs of
    /// the child itself.
    pub fn lines_past_ready(&self, name: &str) -> bool {
        self.children.get(name).is_some_and(|c| {
            c.spec.framing == crate::frame::Framing::Lines && (c.ready || c.ready_on.is_none())
        })
    }

    pub fn readies(&self, name: &str, frame: &crate::frame::Frame) -> bool {
        self.children
            .get(name)
            .is_some_and(|c| !c.ready && c.ready_on.as_ref().is_some_and(|p| p.matches(frame)))
    }

    /// Whether this exit of `name` is one its restart policy restarts.
    pub fn restarts_after(&self, name: &str, exit: &Exit) -> bool {
        self.children.get(name).is_some_and(|c| {
            !matches!(c.state, State::Stopping { .. })
                && super::supervision::wants_restart(c.spec.restart.policy, exit)
        })
    }

    /// Whether nothing runs, starts, waits or restarts.
    pub fn all_down(&self) -> bool {
        self.children.values().all(|c| {
            !matches!(
                c.state,
                State::Pending
                    | State::Spawning
                    | State::Starting { .. }
                    | State::Running { .. }
                    | State::Stopping { .. }
                    | State::Restarting { .. }
            )
        })
    }

    pub fn shutting_down(&self) -> bool {
        self.phase != Phase::Running
    }

    #[cfg(test)]
    pub fn finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Whether the child is ready now, may be later, or will not be
    /// (without a start): for `wait_ready`.
    pub fn readiness(&self, name: &str) -> Readiness {
        let child = &self.children[name];
        match &child.state {
            State::Running { .. } if child.ready => Readiness::Ready,
            // Once ready is enough, as for `depends_on`: a job that did its
            // work and exited was ready.
            State::Exited(_) if child.ready => Readiness::Ready,
            State::Pending
            | State::Spawning
            | State::Starting { .. }
            | State::Running { .. }
            | State::Restarting { .. } => Readiness::Waiting,
            // Stopped to be started again (asked, with its group, or after
            // a probe failed it): the next instance may be.
            State::Stopping {
                reason: StopReason::Again | StopReason::Restart(_) | StopReason::Failed,
                ..
            } => Readiness::Waiting,
            State::Stopping { .. } => Readiness::Never("it is being stopped".into()),
            State::Exited(exit) => Readiness::Never(format!("it exited with {}", exit.status)),
            State::Stopped(_) => Readiness::Never("it was stopped".into()),
            State::GaveUp { restarts, .. } => {
                Readiness::Never(format!("it gave up after {restarts} restarts"))
            }
            State::SpawnFailed(e) => Readiness::Never(format!("it could not be spawned: {e}")),
            State::NotStarted(r) => Readiness::Never(format!("it was not started: {r}")),
        }
    }

    /// The public view of a child's state.
    pub fn public_state(&self, name: &str) -> ChildState {
        let child = &self.children[name];
        match &child.state {
            State::Pending => ChildState::Pending,
            State::Spawning => ChildState::Starting { pid: None },
            State::Starting { pid, .. } => ChildState::Starting { pid: Some(*pid) },
            State::Running { pid, .. } => ChildState::Running {
                pid: *pid,
                ready: child.ready,
            },
            State::Stopping { pid, .. } => ChildState::Stopping { pid: *pid },
            State::Restarting { last, .. } => ChildState::Restarting { last: last.clone() },
            State::Exited(exit) => ChildState::Exited(exit.clone()),
            State::Stopped(exit) => ChildState::Stopped(exit.clone()),
            State::GaveUp { last, restarts } => ChildState::GaveUp {
                last: last.clone(),
                restarts: *restarts,
            },
            State::SpawnFailed(error) => ChildState::SpawnFailed {
                error: error.clone(),
            },
            State::NotStarted(reason) => ChildState::NotStarted {
                reason: reason.clone(),
            },
        }
    }

    /// Every child and its state, in the order they were added.
    pub fn list(&self) -> Vec<ChildInfo> {
        self.order
            .iter()
            .map(|name| {
                let state = self.public_state(name);
                let up = matches!(
                    state,
                    ChildState::Running { .. } | ChildState::Stopping { .. }
                );
                let child = &self.children[name];
                ChildInfo {
                    name: name.clone(),
                    uptime: child.up_since.filter(|_| up).map(|t| t.elapsed()),
                    state,
                    restarts: child.history.total,
                }
            })
            .collect()
    }

    // --- Transitions ---

    /// Adds checked specs and starts what can start.
    #[cfg(test)]
    pub fn add(&mut self, specs: Vec<ChildSpec>) -> Vec<Fact> {
        let names = self.register(specs);
        self.start_new(&names)
    }

    /// Adds checked specs as pending, starting none: input for them is kept
    /// until they run. Returns their names.
    pub fn register(&mut self, specs: Vec<ChildSpec>) -> Vec<Arc<str>> {
        let mut names = Vec::with_capacity(specs.len());
        for spec in specs {
            let ready_on = match &spec.ready {
                Some(Ready::Line(re)) => PatternSpec::Regex(re.clone()).compile().ok(),
                Some(Ready::Json(serde_json::Value::Object(map))) => {
                    PatternSpec::Json(map.clone()).compile().ok()
                }
                _ => None,
            };
            for dep in &spec.depends_on {
                self.dependents
                    .entry(dep.clone())
                    .or_default()
                    .push(spec.name.clone());
            }
            let name = spec.name.clone();
            self.order.push(name.clone());
            names.push(name.clone());
            let child = Child {
                spec: Arc::new(spec),
                ready_on,
                state: State::Pending,
                ready: false,
                spawns: 0,
                history: History::default(),
                probe_error: None,
                up_since: None,
            };
            self.children.insert(name, child);
        }
        names
    }

    /// Starts registered children whose dependencies are ready.
    pub fn start_new(&mut self, names: &[Arc<str>]) -> Vec<Fact> {
        let mut facts = Vec::new();
        for name in names {
            self.try_start(name, &mut facts);
        }
        facts
    }

    /// A spawn asked for before a shutdown began is not carried out.
    pub fn spawn_called_off(&mut self, name: &Arc<str>) -> Vec<Fact> {
        let mut facts = Vec::new();
        if matches!(self.child(name).state, State::Spawning) {
            self.not_started(name, "the director is shutting down".into(), &mut facts);
        }
        facts
    }

    /// The spawn asked for by `Fact::Spawn` succeeded.
    pub fn spawned(&mut self, name: &Arc<str>, handle: H, pid: u32) {
        let child = self.child(name);
        if matches!(child.state, State::Spawning) {
            child.state = State::Starting { handle, pid };
        }
    }

    /// The spawn asked for by `Fact::Spawn` failed.
    pub fn spawn_failed(&mut self, name: &Arc<str>, error: String) -> Vec<Fact> {
        let mut facts = Vec::new();
        self.child(name).state = State::SpawnFailed(error.clone());
        facts.extend([
            Fact::CloseInput(name.clone()),
            Fact::AnswerExit(name.clone(), None),
            Fact::Publish(
                name.clone(),
                EventKind::SpawnFailed {
                    error: error.clone(),
                },
            ),
            Fact::Tell(Tell::StartFailed(name.clone(), error.clone())),
            Fact::Tell(Tell::Abort(format!(
                "child `{name}` could not be spawned: {error}"
            ))),
        ]);
        self.resolve_dependents(name, &mut facts);
        self.end_if_significant(name, &mut facts);
        self.check_shutdown(&mut facts);
        facts
    }

    /// The child's first event: it is running; readiness by spec.
    pub fn on_spawned(&mut self, name: &Arc<str>) -> Vec<Fact> {
        let mut facts = Vec::new();
        let child = self.child(name);
        let pid = match &child.state {
            State::Starting { handle, pid } => {
                let pid = *pid;
                child.state = State::Running {
                    handle: handle.clone(),
                    pid,
                };
                pid
            }
            // Asked to stop before its first event: it still started.
            State::Stopping { pid, .. } => *pid,
            _ => return facts,
        };
        let attempt = child.spawns;
        let ready = child.spec.ready.clone();
        facts.push(Fact::Publish(
            name.clone(),
            EventKind::Spawned { pid, attempt },
        ));
        facts.push(Fact::Tell(Tell::Spawned(name.clone())));
        child.probe_error = None;
        child.up_since = Some(Instant::now());
        match ready {
            None => self.mark_ready(name, &mut facts),
            Some(Ready::After(delay)) => facts.push(Fact::ReadyAfter {
                child: name.clone(),
                pid,
                delay,
            }),
            Some(Ready::Probe(probe)) => {
                // The first try at once, then every `every`.
                facts.push(Fact::Probe {
                    child: name.clone(),
                    pid,
                    kind: ProbeKind::Ready,
                    after: Duration::ZERO,
                });
                if let Some(within) = probe.within {
                    facts.push(Fact::ReadyDeadline {
                        child: name.clone(),
                        pid,
                        within,
                    });
                }
            }
            Some(_) => {} // a matching frame will make it ready
        }
        facts
    }

    /// What a try of this probe checks, and its timeout, if instance `pid`
    /// still wants it (running; not ready yet for `ready`, ready for
    /// `alive`).
    pub fn probe_try(
        &self,
        name: &Arc<str>,
        pid: u32,
        kind: ProbeKind,
    ) -> Option<(crate::probe::Check, Duration)> {
        let child = self.children.get(name)?;
        // A shutdown stops children in its own order: probes are over.
        let running = matches!(child.state, State::Running { pid: p, .. } if p == pid);
        if !running || self.shutting_down() {
            return None;
        }
        match (kind, &child.spec.ready, &child.spec.alive) {
            (ProbeKind::Ready, Some(Ready::Probe(p)), _) if !child.ready => {
                Some((p.check.clone(), p.timeout))
            }
            (ProbeKind::Alive { .. }, _, Some(a)) if child.ready => {
                Some((a.check.clone(), a.timeout))
            }
            _ => None,
        }
    }

    /// A try of a probe of instance `pid` ended: ready, the next try, or
    /// (`alive` failing `failures` times in a row) unhealthy.
    pub fn probe_result(
        &mut self,
        name: &Arc<str>,
        pid: u32,
        kind: ProbeKind,
        result: Result<(), crate::probe::Failure>,
    ) -> Vec<Fact> {
        let mut facts = Vec::new();
        if self.probe_try(name, pid, kind).is_none() {
            return facts; // another instance, or no longer wanted
        }
        let child = self.child(name);
        let next = |kind, after| Fact::Probe {
            child: name.clone(),
            pid,
            kind,
            after,
        };
        match (kind, result) {
            // A probe that cannot run (its program is missing) never will.
            (_, Err(crate::probe::Failure::CannotRun(e))) => {
                let reason = format!("its probe cannot run: {e}");
                self.unhealthy(name, reason, &mut facts);
            }
            (ProbeKind::Ready, Ok(())) => self.mark_ready(name, &mut facts),
            (ProbeKind::Ready, Err(crate::probe::Failure::Failed(e))) => {
                child.probe_error = Some(e);
                if let Some(Ready::Probe(p)) = &child.spec.ready {
                    facts.push(next(ProbeKind::Ready, p.every));
                }
            }
            (ProbeKind::Alive { .. }, result) => {
                let Some(alive) = child.spec.alive.clone() else {
                    return facts;
                };
                match result {
                    Ok(()) => facts.push(next(ProbeKind::Alive { failures: 0 }, alive.every)),
                    Err(e) => {
                        let e = e.to_string();
                        let ProbeKind::Alive { failures } = kind else {
                            unreachable!("matched above")
                        };
                        let failures = failures + 1;
                        if failures >= alive.failures {
                            let reason = format!(
                                "{failures} liveness checks failed in a row; the last: {e}"
                            );
                            self.unhealthy(name, reason, &mut facts);
                        } else {
                            facts.push(next(ProbeKind::Alive { failures }, alive.every));
                        }
                    }
                }
            }
        }
        facts
    }

    /// A readiness probe's `within` passed for instance `pid`: if it is
    /// still not ready, it is unhealthy.
    pub fn ready_deadline(&mut self, name: &Arc<str>, pid: u32) -> Vec<Fact> {
        let mut facts = Vec::new();
        if self.probe_try(name, pid, ProbeKind::Ready).is_none() {
            return facts;
        }
        let child = self.child(name);
        let within = match &child.spec.ready {
            Some(Ready::Probe(p)) => p.within.unwrap_or_default(),
            _ => return facts,
        };
        let last = child
            .probe_error
            .as_deref()
            .map(|e| format!("; the last try: {e}"))
            .unwrap_or_default();
        let reason = format!(
            "not ready within {}{last}",
            crate::duration::format_duration(within)
        );
        self.unhealthy(name, reason, &mut facts);
        facts
    }

    /// A probe failed the child: published, and stopped with its stop spec;
    /// its exit counts as a failure.
    fn unhealthy(&mut self, name: &Arc<str>, reason: String, facts: &mut Vec<Fact>) {
        facts.push(Fact::Publish(name.clone(), EventKind::Unhealthy { reason }));
        self.stop_with(name, None, StopReason::Failed, facts);
    }

    /// A frame made the child ready.
    pub fn on_ready(&mut self, name: &Arc<str>) -> Vec<Fact> {
        let mut facts = Vec::new();
        self.mark_ready(name, &mut facts);
        facts
    }

    /// A `ready = { after }` delay passed for instance `pid`.
    pub fn ready_after(&mut self, name: &Arc<str>, pid: u32) -> Vec<Fact> {
        let mut facts = Vec::new();
        let same = match &self.child(name).state {
            State::Running { pid: p, .. } | State::Stopping { pid: p, .. } => *p == pid,
            _ => false,
        };
        if same {
            self.mark_ready(name, &mut facts);
        }
        facts
    }

    /// The child's process ended, after all its output.
    pub fn on_exit(&mut self, name: &Arc<str>, exit: Exit, now: Instant) -> Vec<Fact> {
        let mut facts = Vec::new();
        let reason = match &self.child(name).state {
            State::Starting { .. } | State::Running { .. } => None,
            State::Stopping { reason, .. } => Some(*reason),
            _ => return facts,
        };
        facts.push(Fact::Publish(name.clone(), EventKind::exited(&exit)));
        facts.push(Fact::AnswerExit(name.clone(), Some(exit.clone())));
        match reason {
            // A shutdown calls restarts off, also those whose siblings were
            // already being stopped for them.
            Some(StopReason::Restart(group)) if !self.shutting_down() => {
                self.sibling_exited(group, name, exit, &mut facts)
            }
            Some(StopReason::Failed) if !self.shutting_down() => {
                self.decide(name, exit, true, now, &mut facts)
            }
            Some(StopReason::Again) if !self.shutting_down() => self.again(name, exit, &mut facts),
            Some(_) => self.stopped(name, exit, &mut facts),
            None if self.shutting_down() => self.stopped(name, exit, &mut facts),
            None => self.decide(name, exit, false, now, &mut facts),
        }
        facts
    }

    /// The backoff of restart group `group` is over.
    pub fn restart_delay_over(&mut self, group: u64) -> Vec<Fact> {
        let mut facts = Vec::new();
        if let Some(g) = self.groups.get_mut(&group) {
            g.delay_over();
            self.respawn_group(group, &mut facts);
        }
        facts
    }

    /// Asks a running child to stop; `Err` if it does not run (or is
    /// already stopping for another reason than being asked).
    pub fn stop(&mut self, name: &Arc<str>, grace: Option<Duration>) -> Result<Vec<Fact>, ()> {
        let mut facts = Vec::new();
        match &mut self.child(name).state {
            State::Starting { .. } | State::Running { .. } => {
                self.stop_with(name, grace, StopReason::Asked, &mut facts);
            }
            // Stopped to be restarted with a sibling: asked now, it stays
            // down, and its group goes on without it.
            State::Stopping { reason, .. } => {
                // Stopped because a probe failed it, or to be started again:
                // asked now, it stays down.
                if matches!(*reason, StopReason::Failed | StopReason::Again) {
                    *reason = StopReason::Asked;
                }
                if let StopReason::Restart(group) = *reason {
                    // The group still waits for its exit (all down before
                    // any comes back), then goes on without it.
                    *reason = StopReason::Asked;
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.leave(name);
                    }
                }
            }
            _ => return Err(()),
        }
        Ok(facts)
    }

    /// A restart that has not happened yet is called off (a stop, a
    /// shutdown): the child stays down with the exit it had.
    pub fn call_off_restart(&mut self, name: &Arc<str>) -> Option<(Exit, Vec<Fact>)> {
        let child = self.child(name);
        let State::Restarting { last, .. } = &child.state else {
            return None;
        };
        let last = last.clone();
        child.state = State::Stopped(last.clone());
        let mut facts = vec![
            Fact::CloseInput(name.clone()),
            Fact::Publish(name.clone(), EventKind::Stopped),
            Fact::AnswerExit(name.clone(), Some(last.clone())),
            Fact::NotReady(name.clone(), "it was stopped".into()),
        ];
        // Restarting means not ready: waiting dependents learn it stays down.
        self.resolve_dependents(name, &mut facts);
        Some((last, facts))
    }

    /// A `start` step: a child that is down starts again from its spec,
    /// with a fresh restart history; the step passes once it is ready.
    pub fn start(&mut self, name: &Arc<str>) -> Start {
        let child = self.child(name);
        let ready = child.ready;
        match &mut child.state {
            State::Running { .. } if ready => return Start::Ready,
            // Being stopped on request: started again once it exited.
            State::Stopping { reason, .. } if *reason == StopReason::Asked => {
                *reason = StopReason::Again;
            }
            State::Pending
            | State::Spawning
            | State::Starting { .. }
            | State::Running { .. }
            | State::Stopping { .. }
            | State::Restarting { .. } => {}
            State::Exited(_)
            | State::Stopped(_)
            | State::GaveUp { .. }
            | State::SpawnFailed(_)
            | State::NotStarted(_) => {
                child.state = State::Pending;
                child.history = History::default();
            }
        }
        let mut facts = Vec::new();
        self.try_start(name, &mut facts);
        Start::Later(facts)
    }

    /// A restart asked for (the API, the control socket): a running child
    /// is stopped with its stop spec and started again once it exited; one
    /// that is down starts now. Neither counts against its intensity.
    pub fn restart(&mut self, name: &Arc<str>) -> Vec<Fact> {
        let mut facts = Vec::new();
        match &mut self.child(name).state {
            State::Starting { .. } | State::Running { .. } => {
                self.stop_with(name, None, StopReason::Again, &mut facts);
            }
            // Its exit comes: then it starts again. (One stopped for its
            // restart group starts with the group, as asked.)
            State::Stopping { reason, .. } => {
                if !matches!(*reason, StopReason::Restart(_)) {
                    *reason = StopReason::Again;
                }
            }
            State::Pending | State::Spawning => {}
            _ => {
                if let Start::Later(more) = self.start(name) {
                    facts.extend(more);
                }
            }
        }
        facts
    }

    /// It exited after a restart asked for: it starts again (its restart
    /// intensity untouched), and what is sent to it waits for the new one.
    fn again(&mut self, name: &Arc<str>, exit: Exit, facts: &mut Vec<Fact>) {
        let child = self.child(name);
        child.state = State::Pending;
        child.ready = false;
        facts.push(Fact::KeepInput(name.clone()));
        facts.push(Fact::Tell(Tell::Exit {
            child: name.clone(),
            exit,
            for_good: false,
        }));
        self.try_start(name, facts);
    }

    /// Forgets a child that is down for good (not running, starting or
    /// restarting). Refused while others depend on it: they are named.
    pub fn remove(&mut self, name: &Arc<str>) -> Result<(), Vec<Arc<str>>> {
        self.remove_check(name)?;
        let Some(child) = self.children.remove(name) else {
            return Ok(());
        };
        for dep in &child.spec.depends_on {
            if let Some(list) = self.dependents.get_mut(dep) {
                list.retain(|d| d != name);
            }
        }
        self.dependents.remove(name);
        self.order.retain(|n| n != name);
        self.start_order.retain(|n| n != name);
        Ok(())
    }

    /// Whether `name` may be removed: no other child depends on it.
    pub fn remove_check(&self, name: &Arc<str>) -> Result<(), Vec<Arc<str>>> {
        let dependents: Vec<Arc<str>> = self
            .dependents
            .get(name)
            .into_iter()
            .flatten()
            .filter(|d| self.children.contains_key(*d))
            .cloned()
            .collect();
        if dependents.is_empty() {
            Ok(())
        } else {
            Err(dependents)
        }
    }

    /// Begins a shutdown (once): nothing new starts, restarts are called
    /// off, and running children are stopped in reverse dependency order.
    pub fn begin_shutdown(&mut self, reason: String, cause: ShutdownCause) -> Vec<Fact> {
        let mut facts = Vec::new();
        self.shutdown_into(reason, cause, &mut facts);
        facts
    }

    /// A second shutdown: SIGKILL every group still running.
    pub fn kill_all(&mut self) -> Vec<Fact> {
        let mut facts = Vec::new();
        for name in &self.order {
            let child = self.children.get_mut(name).expect("listed");
            let (handle, pid) = match &child.state {
                State::Starting { handle, pid }
                | State::Running { handle, pid }
                | State::Stopping { handle, pid, .. } => (handle.clone(), *pid),
                _ => continue,
            };
            let reason = match &child.state {
                State::Stopping { reason, .. } => *reason,
                _ => StopReason::Shutdown,
            };
            child.state = State::Stopping {
                handle,
                pid,
                reason,
            };
            facts.push(Fact::Kill(name.clone()));
        }
        facts
    }

    // --- Inside the transitions ---

    fn child(&mut self, name: &str) -> &mut Child<H> {
        self.children.get_mut(name).expect("a known child")
    }

    /// Starts a pending child if its dependencies are ready, or gives it up
    /// if one of them can no longer become ready.
    fn try_start(&mut self, name: &Arc<str>, facts: &mut Vec<Fact>) {
        if !matches!(self.children[name].state, State::Pending) {
            return;
        }
        if self.shutting_down() {
            return self.not_started(name, "the director is shutting down".into(), facts);
        }
        let mut all_ready = true;
        for dep in &self.children[name].spec.depends_on {
            let d = &self.children[dep];
            // Once ready is enough: a setup job that became ready and then
            // exited has done its part.
            match &d.state {
                _ if d.ready => {}
                State::Pending
                | State::Spawning
                | State::Starting { .. }
                | State::Running { .. }
                | State::Stopping { .. }
                | State::Restarting { .. } => all_ready = false,
                State::Exited(_)
                | State::Stopped(_)
                | State::GaveUp { .. }
                | State::SpawnFailed(_)
                | State::NotStarted(_) => {
                    let reason = format!("dependency `{dep}` {}", self.public_state(dep));
                    return self.not_started(name, reason, facts);
                }
            }
        }
        if all_ready {
            let child = self.child(name);
            child.state = State::Spawning;
            child.spawns += 1;
            child.ready = false;
            if child.spawns == 1 {
                self.start_order.push(name.clone());
            }
            facts.push(Fact::Spawn(name.clone()));
        }
    }

    fn not_started(&mut self, name: &Arc<str>, reason: String, facts: &mut Vec<Fact>) {
        self.child(name).state = State::NotStarted(reason.clone());
        facts.extend([
            Fact::CloseInput(name.clone()),
            Fact::AnswerExit(name.clone(), None),
            Fact::Publish(
                name.clone(),
                EventKind::NotStarted {
                    reason: reason.clone(),
                },
            ),
            Fact::Tell(Tell::StartFailed(
                name.clone(),
                format!("`{name}` was not started: {reason}"),
            )),
        ]);
        self.resolve_dependents(name, facts);
        self.check_shutdown(facts);
    }

    /// Something changed for `name` (ready, or down for good): its pending
    /// dependents start or give up.
    fn resolve_dependents(&mut self, name: &Arc<str>, facts: &mut Vec<Fact>) {
        for dependent in self.dependents.get(name).cloned().unwrap_or_default() {
            self.try_start(&dependent, facts);
        }
    }

    fn mark_ready(&mut self, name: &Arc<str>, facts: &mut Vec<Fact>) {
        let child = self.child(name);
        let running = matches!(child.state, State::Running { .. } | State::Stopping { .. });
        if child.ready || !running {
            return;
        }
        child.ready = true;
        if let (Some(alive), State::Running { pid, .. }) = (&child.spec.alive, &child.state) {
            facts.push(Fact::Probe {
                child: name.clone(),
                pid: *pid,
                kind: ProbeKind::Alive { failures: 0 },
                after: alive.every,
            });
        }
        facts.push(Fact::Publish(name.clone(), EventKind::Ready));
        facts.push(Fact::Tell(Tell::Ready(name.clone())));
        self.resolve_dependents(name, facts);
    }

    fn stop_with(
        &mut self,
        name: &Arc<str>,
        grace: Option<Duration>,
        reason: StopReason,
        facts: &mut Vec<Fact>,
    ) {
        let child = self.child(name);
        if let State::Starting { handle, pid } | State::Running { handle, pid } = &child.state {
            child.state = State::Stopping {
                handle: handle.clone(),
                pid: *pid,
                reason,
            };
            facts.push(Fact::Stop(name.clone(), grace));
        }
    }

    /// It exited after a stop (or during a shutdown): it stays down.
    fn stopped(&mut self, name: &Arc<str>, exit: Exit, facts: &mut Vec<Fact>) {
        self.child(name).state = State::Stopped(exit.clone());
        facts.extend([
            Fact::CloseInput(name.clone()),
            Fact::Publish(name.clone(), EventKind::Stopped),
            Fact::Tell(Tell::Exit {
                child: name.clone(),
                exit,
                for_good: true,
            }),
        ]);
        if !self.children[name].ready {
            self.resolve_dependents(name, facts); // they will not see it ready
        }
        // A restart group that waited for it to exit (it was asked to stop
        // while being stopped for the group) goes on.
        let waiting: Vec<u64> = (self.groups.iter())
            .filter(|(_, g)| g.waits_for(name))
            .map(|(id, _)| *id)
            .collect();
        for group in waiting {
            if let Some(g) = self.groups.get_mut(&group) {
                g.exited(name, false);
            }
            self.respawn_group(group, facts);
        }
        self.check_shutdown(facts);
    }

    /// It exited by itself (or, `failed`, was stopped because a probe
    /// failed it): its restart policy decides.
    fn decide(
        &mut self,
        name: &Arc<str>,
        exit: Exit,
        failed: bool,
        now: Instant,
        facts: &mut Vec<Fact>,
    ) {
        let group = self.next_group + 1;
        let child = self.child(name);
        let decision =
            supervision::decide_as(&child.spec.restart, &exit, failed, &mut child.history, now);
        let restarts = child.history.total;
        // The state changes first and the input queue is settled before the
        // protocol hears of the exit (a step it passes may start the child
        // again), then the rest: a significant child's end may shut
        // everything down.
        match decision {
            Decision::Stay => {
                child.state = State::Exited(exit.clone());
                facts.push(Fact::CloseInput(name.clone()));
            }
            Decision::GiveUp => {
                child.state = State::GaveUp {
                    last: exit.clone(),
                    restarts,
                };
                facts.push(Fact::CloseInput(name.clone()));
            }
            Decision::Restart { .. } => {
                child.state = State::Restarting {
                    last: exit.clone(),
                    group,
                };
                child.ready = false;
                facts.push(Fact::KeepInput(name.clone()));
            }
        }
        facts.push(Fact::Tell(Tell::Exit {
            child: name.clone(),
            exit,
            for_good: !matches!(decision, Decision::Restart { .. }),
        }));
        match decision {
            Decision::Stay => {
                if failed {
                    facts.push(Fact::Tell(Tell::Abort(format!(
                        "child `{name}` was unhealthy and is not restarted"
                    ))));
                }
                self.down_for_good(name, facts)
            }
            Decision::GiveUp => {
                facts.push(Fact::Publish(name.clone(), EventKind::GaveUp { restarts }));
                facts.push(Fact::Tell(Tell::Abort(format!(
                    "child `{name}` gave up after {restarts} restarts"
                ))));
                self.down_for_good(name, facts);
            }
            Decision::Restart { delay, attempt } => {
                facts.push(Fact::Publish(
                    name.clone(),
                    EventKind::Restarting {
                        attempt,
                        delay_ms: delay.as_millis() as u64,
                    },
                ));
                self.restart_group(name, group, delay, facts);
            }
        }
    }

    /// The child will not run again: its dependents may stop waiting, and a
    /// significant child ends the whole run.
    fn down_for_good(&mut self, name: &Arc<str>, facts: &mut Vec<Fact>) {
        if !self.children[name].ready {
            self.resolve_dependents(name, facts);
        }
        self.end_if_significant(name, facts);
    }

    fn end_if_significant(&mut self, name: &Arc<str>, facts: &mut Vec<Fact>) {
        if self.children[name].spec.significant {
            let reason = format!("significant child `{name}` ended");
            self.shutdown_into(reason, ShutdownCause::Significant, facts);
        }
    }

    /// Restarts `failed` (already `Restarting` in `group`) after `delay`,
    /// with the running siblings its strategy names.
    fn restart_group(
        &mut self,
        failed: &Arc<str>,
        group: u64,
        delay: Duration,
        facts: &mut Vec<Fact>,
    ) {
        self.next_group = group;
        let siblings = supervision::siblings(self.strategy, failed, &self.start_order).to_vec();
        let mut stopped = Vec::new();
        for sibling in siblings.iter().filter(|s| *s != failed) {
            if matches!(
                self.children[sibling].state,
                State::Starting { .. } | State::Running { .. }
            ) {
                self.stop_with(sibling, None, StopReason::Restart(group), facts);
                stopped.push(sibling.clone());
            }
        }
        let members = RestartGroup::new(failed.clone(), stopped, &self.start_order);
        self.groups.insert(group, members);
        facts.push(Fact::RestartAfter { group, delay });
    }

    /// A sibling stopped for `group` exited.
    fn sibling_exited(&mut self, group: u64, name: &Arc<str>, exit: Exit, facts: &mut Vec<Fact>) {
        let child = self.child(name);
        let restarts = child.spec.restart.policy != RestartPolicy::Never;
        if restarts {
            child.state = State::Restarting {
                last: exit.clone(),
                group,
            };
            child.ready = false;
            child.history.total += 1;
            let attempt = child.history.total;
            facts.extend([
                Fact::KeepInput(name.clone()),
                Fact::Tell(Tell::Exit {
                    child: name.clone(),
                    exit,
                    for_good: false,
                }),
                Fact::Publish(
                    name.clone(),
                    EventKind::Restarting {
                        attempt,
                        delay_ms: 0,
                    },
                ),
            ]);
        } else {
            // Like OTP's temporary children: stopped with the group, not restarted.
            child.state = State::Stopped(exit.clone());
            facts.extend([
                Fact::CloseInput(name.clone()),
                Fact::Tell(Tell::Exit {
                    child: name.clone(),
                    exit,
                    for_good: true,
                }),
                Fact::Publish(name.clone(), EventKind::Stopped),
            ]);
        }
        if !restarts && !self.children[name].ready {
            self.resolve_dependents(name, facts); // it stays down, never ready
        }
        if let Some(g) = self.groups.get_mut(&group) {
            g.exited(name, restarts);
        }
        self.respawn_group(group, facts);
    }

    fn respawn_group(&mut self, group: u64, facts: &mut Vec<Fact>) {
        let Some(members) = self.groups.get(&group).and_then(|g| g.due()) else {
            return;
        };
        // A member removed meanwhile (`remove` of a child in its backoff)
        // is not respawned.
        let members: Vec<Arc<str>> = members
            .iter()
            .filter(|m| self.children.contains_key(*m))
            .cloned()
            .collect();
        self.groups.remove(&group);
        for name in &members {
            let child = self.child(name);
            if matches!(child.state, State::Restarting { group: g, .. } if g == group) {
                child.state = State::Pending;
            }
        }
        // Each starts once its dependencies are ready again.
        for name in &members {
            self.try_start(name, facts);
        }
    }

    fn shutdown_into(&mut self, reason: String, cause: ShutdownCause, facts: &mut Vec<Fact>) {
        if self.shutting_down() {
            return;
        }
        if cause != ShutdownCause::Requested {
            facts.push(Fact::Tell(Tell::EndIdle));
        }
        facts.push(Fact::Tell(Tell::Abort(format!(
            "the run was ended: {reason}"
        ))));
        self.phase = Phase::ShuttingDown;
        facts.push(Fact::PublishRun(EventKind::Shutdown { reason }));
        self.groups.clear();
        for name in self.order.clone() {
            match &self.children[&name].state {
                State::Pending => {
                    self.not_started(&name, "the director is shutting down".into(), facts)
                }
                State::Restarting { .. } => {
                    let (_, more) = self.call_off_restart(&name).expect("restarting");
                    facts.extend(more);
                }
                _ => {}
            }
        }
        self.check_shutdown(facts);
    }

    /// During a shutdown: stops what may stop now (children whose
    /// dependents all ended), and finishes (once) when nothing runs.
    fn check_shutdown(&mut self, facts: &mut Vec<Fact>) {
        if self.phase != Phase::ShuttingDown {
            return;
        }
        let mut running = false;
        let mut to_stop = Vec::new();
        for name in &self.order {
            match &self.children[name].state {
                // Not over while anything may still run (a shutdown turns
                // pending and restarting children into ended ones).
                State::Pending
                | State::Spawning
                | State::Restarting { .. }
                | State::Stopping { .. } => running = true,
                State::Starting { .. } | State::Running { .. } => {
                    running = true;
                    let dependents_done = self
                        .dependents
                        .get(name)
                        .into_iter()
                        .flatten()
                        .all(|d| !self.is_live(d));
                    if dependents_done {
                        to_stop.push(name.clone());
                    }
                }
                _ => {}
            }
        }
        if !running {
            self.phase = Phase::Finished;
            facts.push(Fact::Finished);
            return;
        }
        for name in to_stop {
            self.stop_with(&name, None, StopReason::Shutdown, facts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::ExitStatus;
    use crate::probe::Failure;
    use crate::spec::RestartSpec;

    fn n(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn exit(code: i32) -> Exit {
        Exit {
            status: ExitStatus::Code(code),
            requested: false,
            output_complete: true,
            runtime: Duration::from_millis(5),
        }
    }

    /// Facts as short words, for tables.
    fn words(facts: &[Fact]) -> Vec<String> {
        facts
            .iter()
            .map(|f| match f {
                Fact::Publish(c, kind) => {
                    let json = serde_json::to_value(kind).unwrap();
                    format!("{c}:{}", json["event"].as_str().unwrap())
                }
                Fact::PublishRun(kind) => {
                    let json = serde_json::to_value(kind).unwrap();
                    format!("run:{}", json["event"].as_str().unwrap())
                }
                Fact::Spawn(c) => format!("spawn {c}"),
                Fact::Stop(c, _) => format!("stop {c}"),
                Fact::Kill(c) => format!("kill {c}"),
                Fact::ReadyAfter { child, .. } => format!("ready-timer {child}"),
                Fact::RestartAfter { group, .. } => format!("restart-timer {group}"),
                Fact::Probe { child, kind, .. } => match kind {
                    ProbeKind::Ready => format!("probe-ready {child}"),
                    ProbeKind::Alive { failures } => format!("probe-alive {child} {failures}"),
                },
                Fact::ReadyDeadline { child, .. } => format!("ready-deadline {child}"),
                Fact::Tell(Tell::Spawned(c)) => format!("tell spawned {c}"),
                Fact::Tell(Tell::Ready(c)) => format!("tell ready {c}"),
                Fact::Tell(Tell::Exit {
                    child, for_good, ..
                }) => {
                    format!("tell exit {child} for_good={for_good}")
                }
                Fact::Tell(Tell::StartFailed(c, _)) => format!("tell start-failed {c}"),
                Fact::Tell(Tell::Abort(_)) => "tell abort".into(),
                Fact::Tell(Tell::EndIdle) => "tell end-idle".into(),
                Fact::KeepInput(c) => format!("keep-input {c}"),
                Fact::CloseInput(c) => format!("close-input {c}"),
                Fact::AnswerExit(c, e) => format!("answer {c} {}", e.is_some()),
                Fact::NotReady(c, _) => format!("not-ready {c}"),
                Fact::Finished => "finished".into(),
            })
            .collect()
    }

    /// A registry with these children, each spawned and through its first event.
    fn running(specs: Vec<ChildSpec>, strategy: Strategy) -> Children<u32> {
        let mut reg = Children::new(strategy);
        let names: Vec<Arc<str>> = specs.iter().map(|s| s.name.clone()).collect();
        let mut facts = reg.add(specs);
        let mut pid = 100;
        while let Some(Fact::Spawn(name)) = facts
            .iter()
            .position(|f| matches!(f, Fact::Spawn(_)))
            .map(|i| facts.remove(i))
        {
            pid += 1;
            reg.spawned(&name, pid, pid);
            facts.extend(reg.on_spawned(&name));
        }
        for name in names {
            assert!(reg.is_live(&name), "{name} runs");
        }
        reg
    }

    #[test]
    fn children_start_in_dependency_order_as_their_dependencies_become_ready() {
        let mut reg: Children<u32> = Children::new(Strategy::OneForOne);
        let facts = reg.add(vec![
            ChildSpec::new("db", ["db"]).ready(Ready::Line("^up$".into())),
            ChildSpec::new("api", ["api"]).depends_on("db"),
        ]);
        assert_eq!(words(&facts), ["spawn db"]);
        reg.spawned(&n("db"), 1, 10);
        assert_eq!(
            words(&reg.on_spawned(&n("db"))),
            ["db:spawned", "tell spawned db"],
            "db waits for its line"
        );
        assert!(reg.readies("db", &crate::frame::Frame::line("up")));
        assert_eq!(
            words(&reg.on_ready(&n("db"))),
            ["db:ready", "tell ready db", "spawn api"]
        );
        assert_eq!(reg.public_state("api"), ChildState::Starting { pid: None });
    }

    #[test]
    fn a_failing_liveness_probe_stops_the_child_and_its_exit_counts_as_a_failure() {
        use crate::probe::{Alive, Check};
        let alive = Alive {
            failures: 2,
            ..Alive::new(Check::Tcp("127.0.0.1:1".into()))
        };
        let spec = ChildSpec::new("srv", ["srv"])
            .alive(alive)
            .restart(RestartSpec::policy(RestartPolicy::OnFailure));
        let mut reg: Children<u32> = Children::new(Strategy::OneForOne);
        reg.add(vec![spec]);
        reg.spawned(&n("srv"), 1, 10);
        let facts = reg.on_spawned(&n("srv"));
        assert!(
            words(&facts).contains(&"probe-alive srv 0".to_string()),
            "{:?}",
            words(&facts)
        );
        let alive0 = ProbeKind::Alive { failures: 0 };
        // Another instance's result is not this one's.
        let failed = |e: &str| Err(Failure::Failed(e.into()));
        assert!(reg
            .probe_result(&n("srv"), 9, alive0, failed("x"))
            .is_empty());
        let fail = |reg: &mut Children<u32>, kind| {
            words(&reg.probe_result(&n("srv"), 10, kind, failed("refused")))
        };
        assert_eq!(fail(&mut reg, alive0), ["probe-alive srv 1"]);
        assert_eq!(
            words(&reg.probe_result(&n("srv"), 10, ProbeKind::Alive { failures: 1 }, Ok(()))),
            ["probe-alive srv 0"],
            "a pass starts the count again"
        );
        assert_eq!(fail(&mut reg, alive0), ["probe-alive srv 1"]);
        assert_eq!(
            fail(&mut reg, ProbeKind::Alive { failures: 1 }),
            ["srv:unhealthy", "stop srv"]
        );
        // It exits 0 after the TERM, asked: on-failure restarts it all the same.
        let mut quit = exit(0);
        quit.requested = true;
        let facts = reg.on_exit(&n("srv"), quit.clone(), Instant::now());
        assert!(
            words(&facts).contains(&"srv:restarting".to_string()),
            "{:?}",
            words(&facts)
        );

        // Made unhealthy again, then stopped on request before it exits:
        // the request wins, it stays down.
        let facts = reg.restart_delay_over(1);
        assert!(
            words(&facts).contains(&"spawn srv".to_string()),
            "{:?}",
            words(&facts)
        );
        reg.spawned(&n("srv"), 2, 20);
        reg.on_spawned(&n("srv"));
        let alive1 = ProbeKind::Alive { failures: 1 };
        let facts = reg.probe_result(&n("srv"), 20, alive1, failed("refused"));
        assert_eq!(words(&facts), ["srv:unhealthy", "stop srv"]);
        assert!(reg.stop(&n("srv"), None).is_ok());
        let facts = reg.on_exit(&n("srv"), quit, Instant::now());
        assert!(
            words(&facts).contains(&"srv:stopped".to_string()),
            "{:?}",
            words(&facts)
        );
        assert!(!words(&facts).contains(&"srv:restarting".to_string()));
    }

    #[test]
    fn a_requested_restart_then_a_stop_stays_down_and_a_removed_child_in_backoff_is_not_respawned()
    {
        let spec = ChildSpec::new("w", ["w"]).restart(RestartSpec::policy(RestartPolicy::Always));
        let mut reg = running(vec![spec], Strategy::OneForOne);
        assert_eq!(words(&reg.restart(&n("w"))), ["stop w"]);
        assert_eq!(reg.readiness("w"), Readiness::Waiting, "it comes back");
        assert!(reg.stop(&n("w"), None).is_ok(), "then asked to stop");
        let mut asked = exit(0);
        asked.requested = true;
        let facts = reg.on_exit(&n("w"), asked, Instant::now());
        assert!(
            words(&facts).contains(&"w:stopped".to_string()),
            "{:?}",
            words(&facts)
        );
        assert!(!words(&facts).contains(&"spawn w".to_string()));
        // It starts again; then crashes, and is removed during its backoff.
        let Start::Later(facts) = reg.start(&n("w")) else {
            panic!("not ready")
        };
        assert_eq!(words(&facts), ["spawn w"]);
        reg.spawned(&n("w"), 7, 70);
        reg.on_spawned(&n("w"));
        let facts = reg.on_exit(&n("w"), exit(1), Instant::now());
        assert!(
            words(&facts).iter().any(|f| f.starts_with("restart-timer")),
            "{:?}",
            words(&facts)
        );
        assert!(reg.call_off_restart(&n("w")).is_some());
        reg.remove(&n("w")).unwrap();
        assert!(
            reg.restart_delay_over(1).is_empty(),
            "nothing left to respawn"
        );
    }

    #[test]
    fn a_probe_that_cannot_run_makes_the_child_unhealthy_at_once() {
        use crate::probe::{Check, Probe};
        let spec =
            ChildSpec::new("srv", ["srv"]).ready(Ready::Probe(Probe::new(Check::Exec(vec![
                "no-such-program".into(),
            ]))));
        let mut reg: Children<u32> = Children::new(Strategy::OneForOne);
        reg.add(vec![spec]);
        reg.spawned(&n("srv"), 1, 10);
        assert!(words(&reg.on_spawned(&n("srv"))).contains(&"probe-ready srv".to_string()));
        let missing = Err(Failure::CannotRun("exec no-such-program: not found".into()));
        let facts = reg.probe_result(&n("srv"), 10, ProbeKind::Ready, missing);
        assert_eq!(words(&facts), ["srv:unhealthy", "stop srv"]);
        // During a shutdown no probe runs.
        reg.begin_shutdown("done".into(), ShutdownCause::Requested);
        assert!(reg.probe_try(&n("srv"), 10, ProbeKind::Ready).is_none());
    }

    #[test]
    fn a_failed_dependency_leaves_its_dependents_not_started() {
        let mut reg: Children<u32> = Children::new(Strategy::OneForOne);
        reg.add(vec![
            ChildSpec::new("db", ["db"]).ready(Ready::Line("^up$".into())),
            ChildSpec::new("api", ["api"]).depends_on("db"),
        ]);
        let facts = reg.spawn_failed(&n("db"), "no such program".into());
        assert_eq!(
            words(&facts),
            [
                "close-input db",
                "answer db false",
                "db:spawn_failed",
                "tell start-failed db",
                "tell abort",
                "close-input api",
                "answer api false",
                "api:not_started",
                "tell start-failed api",
            ]
        );
        let ChildState::NotStarted { reason } = reg.public_state("api") else {
            panic!()
        };
        assert_eq!(
            reason,
            "dependency `db` could not be spawned: no such program"
        );
    }

    #[test]
    fn exits_go_by_policy_intensity_and_stop_requests() {
        let t = Instant::now();
        let mut reg = running(
            vec![
                ChildSpec::new("once", ["x"]),
                ChildSpec::new("flaky", ["x"]).restart(RestartSpec {
                    max: 1,
                    ..RestartSpec::policy(RestartPolicy::OnFailure)
                }),
                ChildSpec::new("asked", ["x"]).restart(RestartSpec::policy(RestartPolicy::Always)),
            ],
            Strategy::OneForOne,
        );
        assert_eq!(
            words(&reg.on_exit(&n("once"), exit(1), t)),
            [
                "once:exited",
                "answer once true",
                "close-input once",
                "tell exit once for_good=true"
            ]
        );
        assert!(matches!(reg.public_state("once"), ChildState::Exited(_)));
        assert_eq!(
            words(&reg.on_exit(&n("flaky"), exit(1), t)),
            [
                "flaky:exited",
                "answer flaky true",
                "keep-input flaky",
                "tell exit flaky for_good=false",
                "flaky:restarting",
                "restart-timer 1"
            ]
        );
        assert_eq!(words(&reg.restart_delay_over(1)), ["spawn flaky"]);
        reg.spawned(&n("flaky"), 7, 7);
        reg.on_spawned(&n("flaky"));
        let facts = words(&reg.on_exit(&n("flaky"), exit(1), t));
        assert_eq!(
            facts[2..],
            [
                "close-input flaky",
                "tell exit flaky for_good=true",
                "flaky:gave_up",
                "tell abort"
            ]
        );
        assert_eq!(words(&reg.stop(&n("asked"), None).unwrap()), ["stop asked"]);
        let facts = words(&reg.on_exit(&n("asked"), exit(0), t));
        assert_eq!(
            facts[2..],
            [
                "close-input asked",
                "asked:stopped",
                "tell exit asked for_good=true"
            ]
        );
        assert!(reg.stop(&n("asked"), None).is_err(), "no longer running");
        assert_eq!(reg.list()[1].restarts, 1);
    }

    #[test]
    fn one_for_all_stops_the_siblings_and_respawns_them_together() {
        let t = Instant::now();
        let mut reg = running(
            vec![
                ChildSpec::new("a", ["x"]).restart(RestartSpec::policy(RestartPolicy::OnFailure)),
                ChildSpec::new("b", ["x"]).restart(RestartSpec::policy(RestartPolicy::OnFailure)),
                ChildSpec::new("temp", ["x"]),
            ],
            Strategy::OneForAll,
        );
        let facts = words(&reg.on_exit(&n("b"), exit(1), t));
        assert_eq!(
            facts[4..],
            ["b:restarting", "stop a", "stop temp", "restart-timer 1"]
        );
        assert!(
            reg.restart_delay_over(1).is_empty(),
            "a and temp have not exited"
        );
        let facts = words(&reg.on_exit(&n("a"), exit(143), t));
        assert_eq!(
            facts[2..],
            ["keep-input a", "tell exit a for_good=false", "a:restarting"]
        );
        let facts = words(&reg.on_exit(&n("temp"), exit(143), t));
        assert_eq!(
            facts[2..],
            [
                "close-input temp",
                "tell exit temp for_good=true",
                "temp:stopped",
                "spawn a",
                "spawn b"
            ],
            "respawned in start order; the `never` child stays down"
        );
    }

    #[test]
    fn shutdown_stops_dependents_first_and_finishes_exactly_once() {
        let t = Instant::now();
        let mut reg = running(
            vec![
                ChildSpec::new("db", ["x"]),
                ChildSpec::new("api", ["x"]).depends_on("db"),
            ],
            Strategy::OneForOne,
        );
        let facts = words(&reg.begin_shutdown("test".into(), ShutdownCause::Requested));
        assert_eq!(facts, ["tell abort", "run:shutdown", "stop api"]);
        assert!(reg
            .begin_shutdown("again".into(), ShutdownCause::Requested)
            .is_empty());
        let facts = words(&reg.on_exit(&n("api"), exit(0), t));
        assert_eq!(facts.last().unwrap(), "stop db");
        let facts = words(&reg.on_exit(&n("db"), exit(0), t));
        assert_eq!(facts.iter().filter(|f| *f == "finished").count(), 1);
        assert!(reg.finished());
        assert!(reg.on_exit(&n("db"), exit(0), t).is_empty());
        assert!(reg
            .begin_shutdown("late".into(), ShutdownCause::Requested)
            .is_empty());
    }

    #[test]
    fn a_shutdown_calls_off_restarts_and_answers_their_waiters() {
        let t = Instant::now();
        let mut reg = running(
            vec![ChildSpec::new("w", ["x"]).restart(RestartSpec::policy(RestartPolicy::OnFailure))],
            Strategy::OneForOne,
        );
        reg.on_exit(&n("w"), exit(1), t);
        let facts = words(&reg.begin_shutdown("bye".into(), ShutdownCause::Requested));
        assert_eq!(
            facts,
            [
                "tell abort",
                "run:shutdown",
                "close-input w",
                "w:stopped",
                "answer w true",
                "not-ready w",
                "finished"
            ]
        );
        assert!(reg.restart_delay_over(1).is_empty(), "the restart is off");
    }

    #[test]
    fn a_start_step_brings_a_child_back_from_any_end() {
        let t = Instant::now();
        let mut reg = running(vec![ChildSpec::new("svc", ["x"])], Strategy::OneForOne);
        assert!(matches!(reg.start(&n("svc")), Start::Ready));
        reg.on_exit(&n("svc"), exit(1), t);
        let Start::Later(facts) = reg.start(&n("svc")) else {
            panic!("it is down")
        };
        assert_eq!(words(&facts), ["spawn svc"]);
        reg.spawned(&n("svc"), 9, 9);
        let facts = reg.on_spawned(&n("svc"));
        assert_eq!(
            words(&facts),
            [
                "svc:spawned",
                "tell spawned svc",
                "svc:ready",
                "tell ready svc"
            ]
        );
        assert!(
            matches!(
                &facts[0],
                Fact::Publish(_, EventKind::Spawned { pid: 9, attempt: 2 })
            ),
            "{facts:?}"
        );
    }

    /// Review: a shutdown while a sibling was being stopped for a group
    /// restart never finished (the sibling was restarted instead).
    #[test]
    fn a_shutdown_during_a_group_restart_finishes() {
        let t = Instant::now();
        let mut reg = running(
            vec![
                ChildSpec::new("a", ["x"]).restart(RestartSpec::policy(RestartPolicy::OnFailure)),
                ChildSpec::new("b", ["x"]).restart(RestartSpec::policy(RestartPolicy::OnFailure)),
            ],
            Strategy::OneForAll,
        );
        let facts = words(&reg.on_exit(&n("b"), exit(1), t));
        assert!(facts.contains(&"stop a".to_string()), "{facts:?}");
        reg.begin_shutdown("bye".into(), ShutdownCause::Requested);
        let facts = words(&reg.on_exit(&n("a"), exit(143), t));
        assert!(facts.contains(&"a:stopped".to_string()), "{facts:?}");
        assert_eq!(facts.last().unwrap(), "finished");
        assert!(matches!(reg.public_state("a"), ChildState::Stopped(_)));
    }

    /// Review: a spawn asked for just before a shutdown began was carried
    /// out, and nothing stopped that child.
    #[test]
    fn a_spawn_asked_for_before_a_shutdown_is_called_off() {
        let mut reg: Children<u32> = Children::new(Strategy::OneForOne);
        let facts = reg.add(vec![
            ChildSpec::new("sig", ["missing"]).significant(),
            ChildSpec::new("b", ["x"]),
        ]);
        assert_eq!(words(&facts), ["spawn sig", "spawn b"]);
        let facts = words(&reg.spawn_failed(&n("sig"), "not found".into()));
        assert!(facts.contains(&"run:shutdown".to_string()), "{facts:?}");
        assert!(
            !facts.contains(&"finished".to_string()),
            "b's spawn is pending"
        );
        let facts = words(&reg.spawn_called_off(&n("b")));
        assert!(facts.contains(&"b:not_started".to_string()), "{facts:?}");
        assert_eq!(facts.last().unwrap(), "finished");
    }

    /// Review: `finished` came in the middle of a shutdown, before the
    /// `not_started` of a later pending child.
    #[test]
    fn finished_comes_after_every_pending_child_is_told() {
        let t = Instant::now();
        let mut reg = running(
            vec![ChildSpec::new("db", ["x"])
                .ready(Ready::Line("^never$".into()))
                .restart(RestartSpec::policy(RestartPolicy::OnFailure))],
            Strategy::OneForOne,
        );
        reg.register(vec![
            ChildSpec::new("api", ["x"]).depends_on("db"),
            ChildSpec::new("web", ["x"]).depends_on("db"),
        ]);
        reg.on_exit(&n("db"), exit(1), t);
        let facts = words(&reg.begin_shutdown("bye".into(), ShutdownCause::Requested));
        let at = |w: &str| {
            facts
                .iter()
                .position(|f| f == w)
                .unwrap_or_else(|| panic!("{w}: {facts:?}"))
        };
        assert!(at("web:not_started") < at("finished"));
        assert!(at("api:not_started") < at("finished"));
        assert_eq!(facts.iter().filter(|f| *f == "finished").count(), 1);
    }

    /// Review: a `stop` of a sibling already being stopped for a group
    /// restart passed, and the sibling was restarted anyway.
    #[test]
    fn a_stop_asked_during_a_group_restart_keeps_the_child_down() {
        let t = Instant::now();
        let mut reg = running(
            vec![
                ChildSpec::new("a", ["x"]).restart(RestartSpec::policy(RestartPolicy::Always)),
                ChildSpec::new("b", ["x"]).restart(RestartSpec::policy(RestartPolicy::Always)),
            ],
            Strategy::OneForAll,
        );
        reg.on_exit(&n("a"), exit(1), t); // b is stopped for the restart
        assert!(reg.stop(&n("b"), None).unwrap().is_empty());
        assert!(
            reg.restart_delay_over(1).is_empty(),
            "all down before any comes back: the group waits for b's exit"
        );
        let facts = words(&reg.on_exit(&n("b"), exit(143), t));
        assert!(facts.contains(&"b:stopped".to_string()), "{facts:?}");
        assert!(facts.contains(&"spawn a".to_string()), "{facts:?}");
        assert!(!facts.contains(&"spawn b".to_string()), "{facts:?}");
        assert!(matches!(reg.public_state("b"), ChildState::Stopped(_)));
        let Start::Later(_) = reg.start(&n("a")) else {
            panic!("a is respawning")
        };
    }

    /// Review: a child asked to stop before its first event lost its
    /// `spawned` event.
    #[test]
    fn a_child_stopped_before_its_first_event_still_reports_spawned() {
        let mut reg: Children<u32> = Children::new(Strategy::OneForOne);
        reg.add(vec![ChildSpec::new("a", ["x"])]);
        reg.spawned(&n("a"), 1, 1);
        assert_eq!(words(&reg.stop(&n("a"), None).unwrap()), ["stop a"]);
        let facts = words(&reg.on_spawned(&n("a")));
        assert_eq!(facts[..2], ["a:spawned", "tell spawned a"]);
        assert!(matches!(reg.public_state("a"), ChildState::Stopping { .. }));
    }

    /// Review: dependents waiting on a child that was stopped before it
    /// was ready waited forever.
    #[test]
    fn dependents_of_a_child_stopped_before_it_was_ready_are_not_started() {
        let t = Instant::now();
        let mut reg: Children<u32> = Children::new(Strategy::OneForOne);
        reg.add(vec![
            ChildSpec::new("db", ["x"]).ready(Ready::Line("^up$".into())),
            ChildSpec::new("api", ["x"]).depends_on("db"),
        ]);
        reg.spawned(&n("db"), 1, 1);
        reg.on_spawned(&n("db"));
        reg.stop(&n("db"), None).unwrap();
        let facts = words(&reg.on_exit(&n("db"), exit(143), t));
        assert!(facts.contains(&"api:not_started".to_string()), "{facts:?}");
        assert!(reg.all_down());
    }
}
