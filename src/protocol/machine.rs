//! The step machine: pure code from (state, event) to effects. The director
//! feeds it output frames, routed frames, exits, timeouts and completed
//! actions, and carries out the effects it returns.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::capture::{self, Captures};
use super::steps::{Action, ExpectedExit, Order, Payload, Protocol, Unlisted, DEFAULT_WITHIN};
use super::{StepOutcome, StepReport};
use crate::child::{Exit, ExitStatus, Stream};
use crate::error::{closest, ConfigError, Place};
use crate::frame::Frame;
use crate::matching::{Pattern, PatternSpec};
use crate::Signal;

/// The children a step's name means: a group's replicas, or the one child.
fn members<'a>(groups: &'a HashMap<Arc<str>, Vec<Arc<str>>>, name: &'a Arc<str>) -> &'a [Arc<str>] {
    groups
        .get(name)
        .map_or(std::slice::from_ref(name), Vec::as_slice)
}

/// Whether a step's `name` means `child` (it, or a group it is a replica of).
fn names(groups: &HashMap<Arc<str>, Vec<Arc<str>>>, name: &Arc<str>, child: &Arc<str>) -> bool {
    name == child || groups.get(name).is_some_and(|m| m.contains(child))
}

/// Bytes of unconsumed frames kept per child for `expect`, and of held
/// messages in all, unless set otherwise (oldest dropped first).
pub(crate) const DEFAULT_KEEP: usize = 1 << 20;
/// How long an `expect_not` waits when it does not say.
pub(crate) const DEFAULT_NOT_WITHIN: Duration = Duration::from_secs(1);
/// Frames per child shown in a failed step's diagnostic.
const RECENT_SHOWN: usize = 10;

/// Something the director must do, or publish.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    Send {
        step: usize,
        to: Arc<str>,
        frame: Frame,
        /// How long the write may wait for room.
        within: Duration,
    },
    Close {
        step: usize,
        child: Arc<str>,
    },
    Start {
        step: usize,
        child: Arc<str>,
    },
    Stop {
        step: usize,
        child: Arc<str>,
    },
    Kill {
        step: usize,
        child: Arc<str>,
        signal: Signal,
    },
    /// Call `timeout(step)` after this long.
    Timer {
        step: usize,
        after: Duration,
    },
    /// A routed message could not be held: the hold is full.
    Refused {
        from: Arc<str>,
        to: Arc<str>,
        reason: String,
    },
    /// Deliver a held routed message now.
    Deliver {
        from: Arc<str>,
        to: Arc<str>,
        frame: Frame,
    },
    Passed {
        step: usize,
        label: Option<String>,
        elapsed: Duration,
        /// How an `expect` that could go more than one way went.
        outcome: Option<Taken>,
    },
    /// `step` is `None` when the protocol has no steps (a run-level failure).
    Failed {
        step: Option<usize>,
        label: Option<String>,
        reason: String,
        elapsed: Duration,
    },
    Violation {
        from: Arc<str>,
        to: Arc<str>,
        step: Option<usize>,
        reason: String,
    },
    Done {
        passed: bool,
    },
}

/// Which way a step went, for its `step_passed` (`"outcome"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The 0-based alternative of an `any` that matched.
    Alternative(usize),
    /// Its time ran out, and it went on at `on_timeout`.
    Timeout,
    /// Its child ended for good first, and it went on at `on_exit`.
    Exit,
}

impl serde::Serialize for Taken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Taken::Alternative(i) => s.serialize_u64(*i as u64),
            Taken::Timeout => s.serialize_str("timeout"),
            Taken::Exit => s.serialize_str("exit"),
        }
    }
}

/// What happens to a routed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Deliver,
    Drop,
}

enum Compiled {
    Send {
        to: Arc<str>,
        payload: Payload,
        within: Duration,
    },
    Expect {
        from: Arc<str>,
        to: Option<Arc<str>>,
        alts: Vec<Alt>,
        /// Written as `any`: its outcome says which alternative matched.
        any: bool,
        stream: Option<Stream>,
        within: Duration,
        /// Where to go on (a step index) when the time is up.
        on_timeout: Option<usize>,
        /// Where to go on when `from` ends for good first.
        on_exit: Option<usize>,
    },
    ExpectNot {
        from: Arc<str>,
        alt: Alt,
        stream: Option<Stream>,
        within: Duration,
    },
    ExpectExit {
        child: Arc<str>,
        status: ExpectedExit,
        within: Duration,
    },
    Close(Arc<str>),
    Start(Arc<str>),
    Stop(Arc<str>),
    Kill(Arc<str>, Signal),
    Wait(Duration),
}

/// One pattern of an `expect`, and where it leads.
struct Alt {
    pattern: LazyPattern,
    spec: PatternSpec,
    /// Matches prompts (unterminated tails) only, instead of frames.
    prompt: bool,
    /// The step to go on at (the next when unset).
    goto: Option<usize>,
}

impl Alt {
    fn matches(&self, frame: &Frame, prompt: bool, captures: &mut Captures) -> bool {
        self.prompt == prompt && capture::match_frame(self.pattern.get(), frame, captures)
    }
}

/// The index of the first alternative that matches a frame of `stream`.
fn first_match(
    alts: &[Alt],
    only: Option<Stream>,
    stream: Stream,
    frame: &Frame,
    prompt: bool,
    captures: &mut Captures,
) -> Option<usize> {
    if only.is_some_and(|s| s != stream) {
        return None;
    }
    alts.iter().position(|a| a.matches(frame, prompt, captures))
}

/// An `expect`'s pattern, compiled when first matched against and dropped
/// once its step passed: a protocol of 100,000 expects does not hold
/// 100,000 compiled regexes (a few KiB each), from its check to its end.
struct LazyPattern {
    spec: PatternSpec,
    compiled: std::sync::OnceLock<Pattern>,
}

impl LazyPattern {
    /// A pattern known to compile (its step was checked).
    fn checked(spec: PatternSpec) -> LazyPattern {
        LazyPattern {
            spec,
            compiled: std::sync::OnceLock::new(),
        }
    }

    fn get(&self) -> &Pattern {
        self.compiled.get_or_init(|| {
            // Compiling is deterministic, and this very pattern compiled
            // when the protocol was checked.
            self.spec.compile().expect("checked when the protocol was")
        })
    }

    fn forget(&mut self) {
        self.compiled.take();
    }
}

struct Held {
    step: usize,
    from: Arc<str>,
    to: Arc<str>,
    frame: Frame,
}

pub(crate) struct Machine {
    steps: Vec<(Option<String>, &'static str, Compiled)>,
    order: Order,
    unlisted: Unlisted,
    children: Vec<Arc<str>>,
    /// Replica groups: a step naming one means its replicas (see `members`).
    groups: HashMap<Arc<str>, Vec<Arc<str>>>,
    /// Actions of the current step not carried out yet (a step on a group
    /// has one per replica).
    outstanding: usize,
    current: usize,
    entered: Instant,
    started: Instant,
    captures: Captures,
    unconsumed: HashMap<Arc<str>, Kept>,
    held: Vec<Held>,
    /// Bytes of `held`.
    held_bytes: usize,
    /// The bound of each child's `unconsumed` and of `held`, in bytes.
    keep: usize,
    exits: HashMap<Arc<str>, Exit>,
    /// Children that ended for good (no restart coming): an `expect` on
    /// one of them can only match what it printed already.
    gone: std::collections::HashSet<Arc<str>>,
    outcomes: Vec<StepOutcome>,
    /// How many times each step was entered (through `goto` loops).
    visits: Vec<u32>,
    max_visits: u32,
    /// Inside `enter`: a step to enter next waits in `pending`.
    entering: bool,
    pending: Option<usize>,
    passed: Option<bool>,
    failure: Option<String>,
}

impl Machine {
    /// Checks a protocol against the child names and compiles it. Every
    /// problem is reported, each naming its step.
    pub fn new(protocol: &Protocol, children: &[Arc<str>]) -> Result<Machine, Vec<ConfigError>> {
        Machine::grouped(protocol, children, &HashMap::new())
    }

    /// [`Machine::new`] where steps may also name replica groups.
    pub fn grouped(
        protocol: &Protocol,
        children: &[Arc<str>],
        groups: &HashMap<Arc<str>, Vec<Arc<str>>>,
    ) -> Result<Machine, Vec<ConfigError>> {
        let mut problems = Vec::new();
        let mut all_names: Vec<Arc<str>> = children.to_vec();
        all_names.extend(groups.keys().cloned());
        let known: std::collections::HashSet<&Arc<str>> = all_names.iter().collect();
        let mut defined: Vec<String> = Vec::new();
        let mut steps = Vec::new();
        // Where each label is (a `goto` target must be one step).
        let mut labels: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, step) in protocol.steps.iter().enumerate() {
            if let Some(l) = &step.label {
                labels.entry(l.as_str()).or_default().push(i);
            }
        }
        let names: Vec<&str> = labels.keys().copied().collect();
        let mut label_problems = Vec::new();
        let mut target = |step: usize, key: &'static str, label: &str| -> Option<usize> {
            match labels.get(label).map(Vec::as_slice) {
                Some([one]) => Some(*one),
                Some(many) => {
                    label_problems.push(ConfigError::DuplicateLabel {
                        step,
                        key,
                        label: label.to_string(),
                        steps: many.iter().map(|i| i + 1).collect(),
                    });
                    None
                }
                None => {
                    label_problems.push(ConfigError::UnknownLabel {
                        step,
                        key,
                        label: label.to_string(),
                        suggestion: crate::error::closest_str(label, &names),
                    });
                    None
                }
            }
        };
        for (i, step) in protocol.steps.iter().enumerate() {
            let n = i + 1;
            let mut known = |key: &'static str, name: &Arc<str>| {
                if !known.contains(name) {
                    problems.push(ConfigError::UnknownStepChild {
                        step: n,
                        key,
                        name: name.clone(),
                        suggestion: closest(name, &all_names),
                    });
                }
            };
            let compiled = match &step.action {
                Action::Send {
                    to,
                    payload,
                    within,
                } => {
                    known("to", to);
                    if matches!(payload, Payload::Line(l) if l.contains('\n')) {
                        problems.push(ConfigError::MultiLineSend { step: n });
                    }
                    let value = match payload {
                        Payload::Line(l) => serde_json::Value::String(l.clone()),
                        Payload::Json(j) => j.clone(),
                    };
                    for name in capture::used_by(&value) {
                        if !defined.contains(&name) {
                            problems.push(ConfigError::UnknownCapture { step: n, name });
                        }
                    }
                    Compiled::Send {
                        to: to.clone(),
                        payload: payload.clone(),
                        within: within.unwrap_or(DEFAULT_WITHIN),
                    }
                }
                Action::Expect {
                    from,
                    to,
                    alternatives,
                    any,
                    stream,
                    within,
                    on_timeout,
                    on_exit,
                } => {
                    known("from", from);
                    if let Some(to) = to {
                        known("to", to);
                    }
                    let mut alts = Vec::with_capacity(alternatives.len());
                    for a in alternatives {
                        match a.pattern.compile() {
                            Ok(compiled) => {
                                defined.extend(capture::defined_by(&compiled));
                                alts.push(Alt {
                                    pattern: LazyPattern::checked(a.pattern.clone()),
                                    spec: a.pattern.clone(),
                                    prompt: a.prompt,
                                    goto: a.goto.as_deref().and_then(|l| target(n, "goto", l)),
                                });
                            }
                            Err(source) => problems.push(ConfigError::BadRegex {
                                place: Place::Step(n),
                                key: if a.prompt {
                                    "expect.prompt"
                                } else {
                                    "expect.line"
                                },
                                source,
                            }),
                        }
                    }
                    if alts.len() != alternatives.len() {
                        continue;
                    }
                    Compiled::Expect {
                        from: from.clone(),
                        to: to.clone(),
                        alts,
                        any: *any,
                        stream: *stream,
                        within: within.unwrap_or(DEFAULT_WITHIN),
                        on_timeout: on_timeout
                            .as_deref()
                            .and_then(|l| target(n, "on_timeout", l)),
                        on_exit: on_exit.as_deref().and_then(|l| target(n, "on_exit", l)),
                    }
                }
                Action::ExpectNot {
                    from,
                    pattern,
                    stream,
                    within,
                } => {
                    known("from", from);
                    match pattern.pattern.compile() {
                        Ok(_) => Compiled::ExpectNot {
                            from: from.clone(),
                            alt: Alt {
                                pattern: LazyPattern::checked(pattern.pattern.clone()),
                                spec: pattern.pattern.clone(),
                                prompt: pattern.prompt,
                                goto: None,
                            },
                            stream: *stream,
                            within: within.unwrap_or(DEFAULT_NOT_WITHIN),
                        },
                        Err(source) => {
                            problems.push(ConfigError::BadRegex {
                                place: Place::Step(n),
                                key: if pattern.prompt {
                                    "expect_not.prompt"
                                } else {
                                    "expect_not.line"
                                },
                                source,
                            });
                            continue;
                        }
                    }
                }
                Action::ExpectExit {
                    child,
                    status,
                    within,
                } => {
                    known("child", child);
                    Compiled::ExpectExit {
                        child: child.clone(),
                        status: *status,
                        within: within.unwrap_or(DEFAULT_WITHIN),
                    }
                }
                Action::Close { child } => {
                    known("child", child);
                    Compiled::Close(child.clone())
                }
                Action::Start { child } => {
                    known("child", child);
                    Compiled::Start(child.clone())
                }
                Action::Stop { child } => {
                    known("child", child);
                    Compiled::Stop(child.clone())
                }
                Action::Kill { child, signal } => {
                    known("child", child);
                    Compiled::Kill(child.clone(), *signal)
                }
                Action::Wait(d) => Compiled::Wait(*d),
            };
            steps.push((step.label.clone(), step.kind(), compiled));
        }
        problems.extend(label_problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let now = Instant::now();
        Ok(Machine {
            outcomes: vec![StepOutcome::NotRun; steps.len()],
            visits: {
                let mut v = vec![0; steps.len()];
                if let Some(first) = v.first_mut() {
                    *first = 1;
                }
                v
            },
            max_visits: protocol.max_visits.max(1),
            entering: false,
            pending: None,
            steps,
            order: protocol.order,
            unlisted: protocol.unlisted,
            children: children.to_vec(),
            groups: groups.clone(),
            outstanding: 0,
            current: 0,
            entered: now,
            started: now,
            captures: Captures::new(),
            unconsumed: HashMap::new(),
            held: Vec::new(),
            held_bytes: 0,
            keep: DEFAULT_KEEP,
            exits: HashMap::new(),
            gone: std::collections::HashSet::new(),
            passed: None,
            failure: None,
        })
    }

    /// Bounds, in bytes, the frames kept per child for `expect` and the
    /// messages held under `hold` (default 1 MiB).
    pub fn keep(mut self, bytes: usize) -> Machine {
        self.keep = bytes;
        self
    }

    /// Whether the machine has finished (and how).
    #[cfg(test)]
    pub fn outcome(&self) -> Option<bool> {
        self.passed
    }

    /// How many steps hold a compiled pattern now.
    #[cfg(test)]
    pub fn compiled_patterns(&self) -> usize {
        self.steps
            .iter()
            .filter(|(_, _, s)| match s {
                Compiled::Expect { alts, .. } => {
                    alts.iter().any(|a| a.pattern.compiled.get().is_some())
                }
                Compiled::ExpectNot { alt, .. } => alt.pattern.compiled.get().is_some(),
                _ => false,
            })
            .count()
    }

    /// The report so far.
    pub fn report(&self) -> Vec<StepReport> {
        self.steps
            .iter()
            .zip(&self.outcomes)
            .enumerate()
            .map(|(i, ((label, kind, _), outcome))| StepReport {
                step: i + 1,
                label: label.clone(),
                kind,
                outcome: outcome.clone(),
            })
            .collect()
    }

    /// Starts with the first step. A protocol without steps stays running
    /// until `end_idle` (every child ended) or a failure.
    pub fn start(&mut self, now: Instant) -> Vec<Effect> {
        self.started = now;
        let mut fx = Vec::new();
        if !self.steps.is_empty() {
            self.enter(0, now, &mut fx);
        }
        fx
    }

    /// Whether this protocol has no steps (the run lasts as long as its children).
    pub fn is_idle(&self) -> bool {
        self.steps.is_empty()
    }

    /// Ends a protocol without steps: it passes unless it already failed.
    pub fn end_idle(&mut self) -> Vec<Effect> {
        if self.passed.is_some() || !self.steps.is_empty() {
            return Vec::new();
        }
        self.passed = Some(true);
        vec![Effect::Done { passed: true }]
    }

    /// A child printed a frame.
    pub fn on_output(
        &mut self,
        child: &Arc<str>,
        stream: Stream,
        frame: &Frame,
        prompt: bool,
        now: Instant,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.passed.is_some() {
            return fx;
        }
        // A prompt step sees only prompts, a line step only frames.
        match self.steps.get(self.current) {
            Some((
                _,
                _,
                Compiled::Expect {
                    from,
                    to: None,
                    alts,
                    any,
                    stream: only,
                    ..
                },
            )) if names(&self.groups, from, child) => {
                if let Some(k) = first_match(alts, *only, stream, frame, prompt, &mut self.captures)
                {
                    let goto = alts[k].goto;
                    let taken = any.then_some(Taken::Alternative(k));
                    // It is the newest frame: everything before it is consumed too.
                    self.unconsumed.remove(child);
                    self.pass_to(goto, taken, now, &mut fx);
                    return fx;
                }
            }
            Some((
                _,
                _,
                Compiled::ExpectNot {
                    from,
                    alt,
                    stream: only,
                    ..
                },
            )) if names(&self.groups, from, child)
                && first_match(
                    std::slice::from_ref(alt),
                    *only,
                    stream,
                    frame,
                    prompt,
                    &mut Captures::new(),
                )
                .is_some() =>
            {
                let reason = format!(
                    "`{child}` printed {}, which {} must not match",
                    frame_text(frame),
                    describe(&alt.spec, alt.prompt)
                );
                self.fail(reason, now, &mut fx);
                return fx;
            }
            _ => {}
        }
        let keep = self.keep;
        let kept = self.unconsumed.entry(child.clone()).or_default();
        kept.push(stream, frame.clone(), prompt, keep);
        fx
    }

    /// A child (re)started: what it did before no longer answers `expect_exit`.
    pub fn on_spawned(&mut self, child: &Arc<str>) {
        self.exits.remove(child);
        self.gone.remove(child);
    }

    /// Decides a frame routed from `from` to `to`.
    pub fn on_routed(
        &mut self,
        from: &Arc<str>,
        to: &Arc<str>,
        frame: &Frame,
        now: Instant,
    ) -> (Verdict, Vec<Effect>) {
        let mut fx = Vec::new();
        if self.passed.is_some() {
            return (Verdict::Deliver, fx);
        }
        // A routed expect has one pattern (checked when parsed).
        let mentions = |step: &Compiled| match step {
            Compiled::Expect {
                from: f,
                to: Some(t),
                alts,
                ..
            } => {
                names(&self.groups, f, from)
                    && names(&self.groups, t, to)
                    && alts
                        .iter()
                        .any(|a| capture::match_frame(a.pattern.get(), frame, &mut Captures::new()))
            }
            _ => false,
        };
        let at = (self.current..self.steps.len()).find(|&i| mentions(&self.steps[i].2));
        match at {
            Some(i) if i == self.current => {
                if let Compiled::Expect { alts, .. } = &self.steps[i].2 {
                    for a in alts {
                        if capture::match_frame(a.pattern.get(), frame, &mut self.captures) {
                            break;
                        }
                    }
                }
                self.pass(now, &mut fx);
                (Verdict::Deliver, fx)
            }
            Some(i) => match self.order {
                Order::Hold => {
                    let size = frame_size(frame);
                    if self.held_bytes + size > self.keep {
                        let reason = format!(
                            "it matches step {} and cannot be held: {} bytes are held already",
                            i + 1,
                            self.held_bytes
                        );
                        fx.push(Effect::Refused {
                            from: from.clone(),
                            to: to.clone(),
                            reason,
                        });
                        return (Verdict::Drop, fx);
                    }
                    self.held_bytes += size;
                    self.held.push(Held {
                        step: i,
                        from: from.clone(),
                        to: to.clone(),
                        frame: frame.clone(),
                    });
                    (Verdict::Drop, fx)
                }
                Order::Strict => {
                    let reason = format!(
                        "message from `{from}` to `{to}` matches step {} but step {} is current",
                        i + 1,
                        self.current + 1
                    );
                    fx.push(Effect::Violation {
                        from: from.clone(),
                        to: to.clone(),
                        step: Some(i + 1),
                        reason: reason.clone(),
                    });
                    self.fail(format!("protocol violation: {reason}"), now, &mut fx);
                    (Verdict::Drop, fx)
                }
            },
            None if (0..self.current).any(|i| mentions(&self.steps[i].2)) => (Verdict::Deliver, fx),
            None => match self.unlisted {
                Unlisted::Pass => (Verdict::Deliver, fx),
                Unlisted::Reject => {
                    let reason = format!("message from `{from}` to `{to}` is not in the protocol");
                    fx.push(Effect::Violation {
                        from: from.clone(),
                        to: to.clone(),
                        step: None,
                        reason: reason.clone(),
                    });
                    if self.order == Order::Strict {
                        self.fail(format!("protocol violation: {reason}"), now, &mut fx);
                    }
                    (Verdict::Drop, fx)
                }
            },
        }
    }

    /// A child exited. `for_good`: it will not be restarted.
    pub fn on_exit(
        &mut self,
        child: &Arc<str>,
        exit: &Exit,
        for_good: bool,
        now: Instant,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.passed.is_some() {
            return fx;
        }
        self.exits.insert(child.clone(), exit.clone());
        if for_good {
            self.gone.insert(child.clone());
        }
        let groups = &self.groups;
        let all_gone =
            |name: &Arc<str>| members(groups, name).iter().all(|m| self.gone.contains(m));
        match self.steps.get(self.current) {
            Some((_, _, Compiled::ExpectExit { child: c, .. })) if names(groups, c, child) => {
                let _ = self.check_exit(now, &mut fx); // its timer runs already
            }
            // Its output is all in (it comes before the exit) and nothing
            // matched: nothing more can come.
            Some((
                _,
                _,
                Compiled::Expect {
                    from,
                    alts,
                    to,
                    on_exit,
                    ..
                },
            )) if for_good && names(groups, from, child) && all_gone(from) => match on_exit {
                Some(next) => {
                    let next = Some(*next);
                    self.pass_to(next, Some(Taken::Exit), now, &mut fx);
                }
                None => {
                    let reason = ended_reason(child, to.as_ref(), &describe_all(alts), exit);
                    self.fail(reason, now, &mut fx);
                }
            },
            // Nothing more can come from it: nothing matched, nothing
            // will (unless it ended badly: that fails the run as anywhere).
            Some((_, _, Compiled::ExpectNot { from, .. }))
                if for_good
                    && names(groups, from, child)
                    && all_gone(from)
                    && (exit.requested || exit.status.success()) =>
            {
                self.pass(now, &mut fx);
            }
            Some((_, _, Compiled::Stop(c))) if names(groups, c, child) => {}
            _ => {
                let unexpected = !exit.requested && !exit.status.success();
                let awaited = self.steps[self.current..].iter().any(|(_, _, s)| {
                    matches!(s, Compiled::ExpectExit { child: c, .. } if names(groups, c, child))
                });
                if for_good && unexpected && !awaited {
                    let reason = format!(
                        "child `{child}` exited with {} and no expect_exit step says so",
                        exit.status
                    );
                    self.fail(reason, now, &mut fx);
                }
            }
        }
        fx
    }

    /// A timer set by `Effect::Timer` went off.
    pub fn on_timeout(&mut self, step: usize, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.passed.is_some() || step != self.current {
            return fx;
        }
        // A timer set on an earlier visit of this step (a `goto` came back
        // to it since) goes off before this visit's time is up: not ours.
        let limit = match &self.steps[step].2 {
            Compiled::Wait(d) => *d,
            Compiled::Expect { within, .. }
            | Compiled::ExpectNot { within, .. }
            | Compiled::ExpectExit { within, .. } => *within,
            _ => Duration::ZERO,
        };
        if now.duration_since(self.entered) < limit {
            return fx;
        }
        let waited = now.duration_since(self.entered);
        let reason = match &self.steps[step].2 {
            Compiled::Wait(_) => {
                self.pass(now, &mut fx);
                return fx;
            }
            Compiled::ExpectNot { .. } => {
                self.pass(now, &mut fx);
                return fx;
            }
            Compiled::Expect {
                on_timeout: Some(next),
                ..
            } => {
                let next = Some(*next);
                self.pass_to(next, Some(Taken::Timeout), now, &mut fx);
                return fx;
            }
            Compiled::Expect {
                from,
                to: None,
                alts,
                ..
            } => {
                format!(
                    "waited {waited:.1?} for {} from `{from}`",
                    describe_all(alts)
                )
            }
            Compiled::Expect {
                from,
                to: Some(to),
                alts,
                ..
            } => {
                format!(
                    "waited {waited:.1?} for a message from `{from}` to `{to}` with {}",
                    describe_all(alts)
                )
            }
            Compiled::ExpectExit { child, status, .. } => {
                format!(
                    "waited {waited:.1?} for `{child}` to exit with {}; it did not",
                    expected(status)
                )
            }
            _ => return fx, // actions have no timer
        };
        self.fail(reason, now, &mut fx);
        fx
    }

    /// The action of `step` was carried out.
    pub fn action_done(&mut self, step: usize, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.passed.is_none() && step == self.current {
            self.outstanding = self.outstanding.saturating_sub(1);
            if self.outstanding == 0 {
                self.pass(now, &mut fx);
            }
        }
        fx
    }

    /// The action of `step` could not be carried out.
    pub fn action_failed(&mut self, step: usize, reason: String, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.passed.is_none() && step == self.current {
            self.fail(reason, now, &mut fx);
        }
        fx
    }

    /// Ends the run as failed (a run timeout, an interruption).
    pub fn abort(&mut self, reason: String, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.passed.is_none() {
            self.fail(reason, now, &mut fx);
        }
        fx
    }

    /// Makes step `i` current and runs every step that can complete at once.
    ///
    /// A step that passes at once enters the next from inside this call:
    /// that one waits in `pending` and is entered by the loop here, so a
    /// long run of such steps (a `goto` loop over kept frames, say) takes
    /// no stack.
    fn enter(&mut self, i: usize, now: Instant, fx: &mut Vec<Effect>) {
        if self.entering {
            self.pending = Some(i);
            return;
        }
        self.entering = true;
        let mut next = Some(i);
        while let Some(i) = next {
            self.enter_one(i, now, fx);
            next = self.pending.take();
        }
        self.entering = false;
    }

    fn enter_one(&mut self, i: usize, now: Instant, fx: &mut Vec<Effect>) {
        self.current = i;
        self.entered = now;
        let Some((_, _, step)) = self.steps.get(i) else {
            self.passed = Some(true);
            fx.push(Effect::Done { passed: true });
            return;
        };
        match step {
            Compiled::Send {
                to,
                payload,
                within,
            } => {
                let frame = match payload {
                    Payload::Line(l) => {
                        let line = capture::substitute_text(l, &self.captures);
                        // A captured value (from a child's JSON) must not
                        // turn one message into several.
                        if line.contains('\n') {
                            let reason = format!(
                                "step {}: a captured value puts a newline into the line \
                                 for `{to}`; it would arrive as more than one line",
                                i + 1
                            );
                            return self.fail(reason, now, fx);
                        }
                        Frame::Line(line)
                    }
                    Payload::Json(j) => Frame::Json(capture::substitute_json(j, &self.captures)),
                };
                // To a group: each replica, in order.
                let within = *within;
                let to = members(&self.groups, to).to_vec();
                self.act(now, fx, to, |child| Effect::Send {
                    step: i,
                    to: child,
                    frame: frame.clone(),
                    within,
                });
            }
            Compiled::Close(c) => {
                let all = members(&self.groups, c).to_vec();
                self.act(now, fx, all, |child| Effect::Close { step: i, child });
            }
            Compiled::Start(c) => {
                let all = members(&self.groups, c).to_vec();
                self.act(now, fx, all, |child| Effect::Start { step: i, child });
            }
            Compiled::Stop(c) => {
                let all = members(&self.groups, c).to_vec();
                self.act(now, fx, all, |child| Effect::Stop { step: i, child });
            }
            Compiled::Kill(c, s) => {
                let (all, signal) = (members(&self.groups, c).to_vec(), *s);
                self.act(now, fx, all, |child| Effect::Kill {
                    step: i,
                    child,
                    signal,
                });
            }
            Compiled::Wait(d) => fx.push(Effect::Timer { step: i, after: *d }),
            Compiled::Expect {
                from,
                to: None,
                alts,
                any,
                stream: only,
                within,
                on_exit,
                ..
            } => {
                // Like expect(1): the earliest unconsumed frame that matches
                // any alternative, consuming everything up to it (from a
                // group: of the first replica that has one).
                let all = members(&self.groups, from);
                let mut found = None;
                for m in all {
                    let Some(kept) = self.unconsumed.get_mut(m) else {
                        continue;
                    };
                    found = kept.entries().enumerate().find_map(|(p, (st, f, pr))| {
                        first_match(alts, *only, st, f, pr, &mut self.captures).map(|k| (p, k))
                    });
                    if let Some((p, _)) = found {
                        kept.consume_through(p);
                        break;
                    }
                }
                let ended = all.iter().rev().find_map(|m| self.exits.get(m));
                let gone = all.iter().all(|m| self.gone.contains(m));
                match found {
                    Some((_, k)) => {
                        let goto = alts[k].goto;
                        let taken = any.then_some(Taken::Alternative(k));
                        self.pass_to(goto, taken, now, fx);
                    }
                    None if gone => {
                        match (on_exit, ended) {
                            (Some(next), _) => {
                                let next = Some(*next);
                                self.pass_to(next, Some(Taken::Exit), now, fx);
                            }
                            (None, Some(exit)) => {
                                let reason = ended_reason(from, None, &describe_all(alts), exit);
                                self.fail(reason, now, fx);
                            }
                            (None, None) => {
                                let reason = format!("`{from}` has no replicas (count = 0): nothing can come from it");
                                self.fail(reason, now, fx);
                            }
                        }
                    }
                    None => fx.push(Effect::Timer {
                        step: i,
                        after: *within,
                    }),
                }
            }
            Compiled::ExpectNot {
                from,
                alt,
                stream: only,
                within,
            } => {
                // What it printed before the step counts, as for `expect`.
                let all = members(&self.groups, from);
                let found = all.iter().find_map(|m| {
                    let kept = self.unconsumed.get(m)?;
                    kept.entries()
                        .find(|(st, f, pr)| {
                            first_match(
                                std::slice::from_ref(alt),
                                *only,
                                *st,
                                f,
                                *pr,
                                &mut Captures::new(),
                            )
                            .is_some()
                        })
                        .map(|(_, f, _)| (m, f))
                });
                match found {
                    Some((m, f)) => {
                        let reason = format!(
                            "`{m}` printed {}, which {} must not match",
                            frame_text(f),
                            describe(&alt.spec, alt.prompt)
                        );
                        self.fail(reason, now, fx);
                    }
                    None if all.iter().all(|m| self.gone.contains(m)) => self.pass(now, fx),
                    None => fx.push(Effect::Timer {
                        step: i,
                        after: *within,
                    }),
                }
            }
            Compiled::Expect {
                to: Some(_),
                alts,
                within,
                ..
            } => {
                let (release, keep): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
                    .into_iter()
                    .partition(|h| h.step == i);
                self.held = keep;
                self.held_bytes = self.held.iter().map(|h| frame_size(&h.frame)).sum();
                if release.is_empty() {
                    fx.push(Effect::Timer {
                        step: i,
                        after: *within,
                    });
                    return;
                }
                for held in release {
                    for a in alts {
                        if capture::match_frame(a.pattern.get(), &held.frame, &mut self.captures) {
                            break;
                        }
                    }
                    fx.push(Effect::Deliver {
                        from: held.from,
                        to: held.to,
                        frame: held.frame,
                    });
                }
                self.pass(now, fx);
            }
            Compiled::ExpectExit { within, .. } => {
                // Of a group: every replica; some may have exited already.
                let within = *within;
                if self.check_exit(now, fx) {
                    fx.push(Effect::Timer {
                        step: i,
                        after: within,
                    });
                }
            }
        }
    }

    /// The current step is an `expect_exit`: it passes if its child (every
    /// replica of a group) has exited so, fails if one exited otherwise.
    /// Gives whether it still waits.
    fn check_exit(&mut self, now: Instant, fx: &mut Vec<Effect>) -> bool {
        let Some((_, _, Compiled::ExpectExit { child, status, .. })) = self.steps.get(self.current)
        else {
            return false;
        };
        // Every replica of a group must have exited so; the first that
        // exited otherwise fails the step at once.
        let mut waiting = false;
        for m in members(&self.groups, child) {
            let Some(exit) = self.exits.get(m) else {
                waiting = true;
                continue;
            };
            let ok = match (status, exit.status) {
                (ExpectedExit::Code(want), ExitStatus::Code(got)) => *want == got,
                (ExpectedExit::Signal(want), ExitStatus::Signal(got)) => *want == got,
                _ => false,
            };
            if !ok {
                let reason = format!(
                    "`{m}` exited with {}, expected {}",
                    exit.status,
                    expected(status)
                );
                self.fail(reason, now, fx);
                return false;
            }
        }
        if !waiting {
            self.pass(now, fx);
        }
        waiting
    }

    /// Carries out an action step on each of `children` (one, or a group's
    /// replicas); it passes when every one is done (at once for none).
    fn act(
        &mut self,
        now: Instant,
        fx: &mut Vec<Effect>,
        children: Vec<Arc<str>>,
        effect: impl Fn(Arc<str>) -> Effect,
    ) {
        self.outstanding = children.len();
        if children.is_empty() {
            return self.pass(now, fx);
        }
        fx.extend(children.into_iter().map(effect));
    }

    fn pass(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        self.pass_to(None, None, now, fx);
    }

    /// The current step passed: the run goes on at `next` (a `goto`), else
    /// at the following step.
    fn pass_to(
        &mut self,
        next: Option<usize>,
        outcome: Option<Taken>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let i = self.current;
        // Nothing matches against a step that is not current; a loop back
        // to it compiles its patterns again.
        match &mut self.steps[i].2 {
            Compiled::Expect { alts, .. } => alts.iter_mut().for_each(|a| a.pattern.forget()),
            Compiled::ExpectNot { alt, .. } => alt.pattern.forget(),
            _ => {}
        }
        let elapsed = now.duration_since(self.entered);
        self.outcomes[i] = StepOutcome::Passed { elapsed };
        fx.push(Effect::Passed {
            step: i,
            label: self.steps[i].0.clone(),
            elapsed,
            outcome,
        });
        let next = next.unwrap_or(i + 1);
        if next < self.steps.len() {
            self.visits[next] += 1;
            if self.visits[next] > self.max_visits {
                self.current = next;
                self.entered = now;
                let reason = format!(
                    "step {} was reached more than max_visits ({}) times: a loop that does not end",
                    next + 1,
                    self.max_visits
                );
                self.fail(reason, now, fx);
                return;
            }
        }
        self.enter(next, now, fx);
    }

    fn fail(&mut self, reason: String, now: Instant, fx: &mut Vec<Effect>) {
        let step = (!self.steps.is_empty()).then(|| self.current.min(self.steps.len() - 1));
        let elapsed = now.duration_since(self.entered);
        let reason = format!("{reason}\n{}", self.recent_output());
        if let Some(outcome) = step.and_then(|i| self.outcomes.get_mut(i)) {
            *outcome = StepOutcome::Failed {
                reason: reason.clone(),
                elapsed,
            };
        }
        self.failure = Some(reason.clone());
        fx.push(Effect::Failed {
            step,
            label: step.and_then(|i| self.steps[i].0.clone()),
            reason,
            elapsed,
        });
        self.passed = Some(false);
        self.held.clear();
        self.held_bytes = 0;
        fx.push(Effect::Done { passed: false });
    }

    /// The last unconsumed frames of every child, for a failure's reader.
    fn recent_output(&self) -> String {
        let mut out = String::from("recent unconsumed output:");
        for child in &self.children {
            match self.unconsumed.get(child).filter(|k| k.len() > 0) {
                None => out.push_str(&format!("\n  {child}: (none)")),
                Some(kept) => {
                    if kept.dropped > 0 {
                        out.push_str(&format!(
                            "\n  {child}: ({} older frames dropped: more than {} bytes)",
                            kept.dropped, self.keep
                        ));
                    }
                    for (stream, frame, prompt) in
                        kept.entries().skip(kept.len().saturating_sub(RECENT_SHOWN))
                    {
                        let text = match frame {
                            Frame::Line(l) => l.clone(),
                            Frame::Json(v) => v.to_string(),
                            Frame::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                        };
                        let tag = match (stream, prompt) {
                            (Stream::Stderr, true) => " (stderr, prompt)",
                            (Stream::Stderr, false) => " (stderr)",
                            (_, true) => " (prompt)",
                            (_, false) => "",
                        };
                        out.push_str(&format!("\n  {child}{tag}: {text}"));
                    }
                }
            }
        }
        out
    }

    /// Why it failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Time since the protocol started.
    pub fn elapsed(&self, now: Instant) -> Duration {
        now.duration_since(self.started)
    }
}

/// The frames one child printed since its last match, bounded in bytes:
/// past the bound the oldest are dropped (and counted).
#[derive(Debug, Default)]
struct Kept {
    /// Each frame with its stream, whether it is a prompt, and its size.
    frames: VecDeque<(Stream, Frame, bool, usize)>,
    bytes: usize,
    dropped: u64,
}

impl Kept {
    fn push(&mut self, stream: Stream, frame: Frame, prompt: bool, limit: usize) {
        let size = frame_size(&frame);
        self.frames.push_back((stream, frame, prompt, size));
        self.bytes += size;
        while self.bytes > limit {
            let Some((_, _, _, size)) = self.frames.pop_front() else {
                break;
            };
            self.bytes -= size;
            self.dropped += 1;
        }
    }

    fn len(&self) -> usize {
        self.frames.len()
    }

    fn entries(&self) -> impl Iterator<Item = (Stream, &Frame, bool)> {
        self.frames.iter().map(|(s, f, p, _)| (*s, f, *p))
    }

    /// Consumes every frame up to and including the `p`-th.
    fn consume_through(&mut self, p: usize) {
        for (_, _, _, size) in self.frames.drain(..=p) {
            self.bytes -= size;
        }
    }
}

/// About how many bytes a frame holds: its text (JSON estimated from its
/// strings and a few bytes a value, without serializing it) and what
/// keeping it costs, so that empty frames count too.
fn frame_size(frame: &Frame) -> usize {
    const KEEPING: usize = 48;
    KEEPING + text_size(frame)
}

fn text_size(frame: &Frame) -> usize {
    fn json(v: &serde_json::Value) -> usize {
        use serde_json::Value;
        match v {
            Value::String(s) => s.len() + 2,
            Value::Array(a) => 2 + a.iter().map(json).sum::<usize>(),
            Value::Object(m) => 2 + m.iter().map(|(k, v)| k.len() + 4 + json(v)).sum::<usize>(),
            _ => 8,
        }
    }
    match frame {
        Frame::Line(l) => l.len(),
        Frame::Bytes(b) => b.len(),
        Frame::Json(v) => json(v),
    }
}

/// Why an `expect` on a child that ended for good fails at once.
fn ended_reason(from: &str, to: Option<&Arc<str>>, described: &str, exit: &Exit) -> String {
    let what = match to {
        None => format!("{described} from `{from}`"),
        Some(to) => format!("a message from `{from}` to `{to}` with {described}"),
    };
    format!(
        "expected {what}, but `{from}` exited with {} and will not run again",
        exit.status
    )
}

/// What a step's alternatives wait for, as a failure says it.
fn describe_all(alts: &[Alt]) -> String {
    let all: Vec<String> = alts.iter().map(|a| describe(&a.spec, a.prompt)).collect();
    all.join(" or ")
}

/// A frame as a failure quotes it.
fn frame_text(frame: &Frame) -> String {
    match frame {
        Frame::Line(l) => format!("`{l}`"),
        Frame::Json(v) => format!("`{v}`"),
        Frame::Bytes(b) => format!("`{}`", String::from_utf8_lossy(b)),
    }
}

fn describe(spec: &PatternSpec, prompt: bool) -> String {
    match spec {
        PatternSpec::Regex(re) if prompt => format!("a prompt matching `{re}`"),
        PatternSpec::Regex(re) => format!("a line matching `{re}`"),
        PatternSpec::Json(map) => {
            format!("JSON containing {}", serde_json::Value::Object(map.clone()))
        }
    }
}

fn expected(status: &ExpectedExit) -> String {
    match status {
        ExpectedExit::Code(c) => format!("exit code {c}"),
        ExpectedExit::Signal(s) => format!("signal {s}"),
    }
}
