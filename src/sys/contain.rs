//! Containment: what keeps descendants that leave their child's process
//! group (`setsid`, a double fork, a daemon) from outliving it.
//!
//! ```text
//!  spawn ──► registry of our direct children (pid → PROCESSION_CHILD marker)
//!  director / batch ──► Run ──► kill requests ──► the `procession-contain` thread
//!                                                 ├─ reads /proc, learns escapees ──► the run's watchdog
//!                                                 ├─ reaps the orphans that died, by pid
//!                                                 └─ freezes (SIGSTOP), then SIGKILLs, escapees
//! ```
//!
//! - The process becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`): an
//!   orphaned descendant re-parents to us instead of init, so it stays in
//!   our process tree, where we can find it.
//! - Every child of a run gets `PROCESSION_CHILD=<run>/<name>` in its
//!   environment, which its descendants inherit.
//! - One thread looks at the process table from time to time (more rarely
//!   the more it costs: at most 1 % of a core). It learns which processes
//!   left their child's group while their parents lived (so that one which
//!   later clears its environment is still known), tells the run's watchdog
//!   about them, and reaps those that re-parented to us and died.
//! - Asked to, it kills the escapees of one child or of a whole run: it
//!   freezes them (a stopped process cannot fork), looks again until
//!   nothing new appears, then SIGKILLs them all and reaps them.
//!
//! It never signals a process outside our own process tree, and never
//! calls `waitpid(-1)`. A process that re-parented to us is reaped only if
//! it is known to descend from one of our children: any other child of the
//! process may be one that another part of the program started and will
//! wait for (unless the program said otherwise: [`adopt_all_orphans`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, LazyLock, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal as NixSignal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc::UnboundedSender, oneshot};

use super::procfs::{self, Table};

/// The periodic look runs at most this often...
const MIN_PERIOD: Duration = Duration::from_millis(250);
/// ...at least this often...
const MAX_PERIOD: Duration = Duration::from_secs(5);
/// ...and otherwise waits this many times what the last one cost (1 %).
const PERIOD_PER_COST: u32 = 100;
/// How long killed escapees (and an ended child's group) get to die.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// Freeze-and-look rounds before the kill, at most.
const ROUNDS: usize = 8;

static SHARED: LazyLock<Shared> = LazyLock::new(|| Shared {
    spawning: RwLock::new(()),
    state: Mutex::new(State::default()),
});

struct Shared {
    /// Held (shared) from before a fork until its pid is registered, so a
    /// look that takes it (exclusive) after reading /proc finds every
    /// process it read that we spawned already registered.
    spawning: RwLock<()>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Our direct children that procession spawned, with their marker
    /// (`None`: a watchdog). Any other child of ours re-parented to us, or
    /// was started by someone else in the process.
    direct: FxHashMap<u32, Option<Arc<str>>>,
    /// The process groups our children lead or led, with their marker, for
    /// as long as a process is in one: a member that re-parented to us is
    /// the child's, even as a zombie (which has no environment left).
    groups: FxHashMap<u32, Arc<str>>,
    /// Runs in progress, with their watchdog's input.
    runs: FxHashMap<Arc<str>, Option<UnboundedSender<String>>>,
    /// Every child of the process that procession did not spawn is an orphan.
    adopt: bool,
    /// The thread, once started.
    thread: Option<mpsc::Sender<Request>>,
    /// The process is a child subreaper now (only while a run is in
    /// progress: a program that embeds procession gets its own orphans'
    /// usual fate back between runs).
    subreaper: bool,
}

fn state() -> MutexGuard<'static, State> {
    SHARED.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Tells procession that this process starts no child process of its own
/// other than through procession (the `procession` binary is such a
/// process).
///
/// A process that hosts a director or a batch becomes a child subreaper:
/// descendants of its children that are orphaned re-parent to it instead of
/// init. Without this call, procession reaps and kills only those it can
/// attribute to one of its children (their ancestry, seen while their
/// parents lived, or their `PROCESSION_CHILD` marker), so that it never
/// collects an exit status another part of the program waits for; an orphan
/// that dies before procession saw it stays a zombie until the process
/// exits. With it, every such orphan is reaped, and killed at the end of a
/// run or batch.
pub fn adopt_all_orphans() {
    state().adopt = true;
}

/// Held across one spawn (see [`Shared::spawning`]).
pub(crate) struct Spawning(#[allow(dead_code)] RwLockReadGuard<'static, ()>);

/// Call before forking a child; then [`Spawning::spawned`] with its pid.
pub(crate) fn spawning() -> Spawning {
    Spawning(SHARED.spawning.read().unwrap_or_else(|e| e.into_inner()))
}

impl Spawning {
    /// Registers a child we just spawned (`marker`: its `PROCESSION_CHILD`).
    pub fn spawned(self, pid: u32, marker: Option<Arc<str>>) {
        let mut state = state();
        if let Some(m) = &marker {
            state.groups.insert(pid, m.clone());
        }
        state.direct.insert(pid, marker);
    }
}

/// A child we spawned was reaped (by tokio): its pid is no longer ours.
pub(crate) fn collected(pid: u32) {
    state().direct.remove(&pid);
}

/// One director's or batch's share of containment. Dropping it kills what
/// is left of the run's escapees and forgets the run.
pub(crate) struct Run {
    id: Arc<str>,
    thread: Option<mpsc::Sender<Request>>,
}

impl Run {
    /// Registers a run (starting the containment thread and making the
    /// process a subreaper, once).
    pub fn start() -> Run {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let id: Arc<str> = Arc::from(format!(
            "{}-{:x}-{}",
            std::process::id(),
            nanos,
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut state = state();
        let thread = state.thread.clone().or_else(|| enable(&mut state));
        if !state.subreaper {
            match nix::sys::prctl::set_child_subreaper(true) {
                Ok(()) => state.subreaper = true,
                Err(e) => tracing::warn!(error = %e,
                    "cannot become a child subreaper: descendants that leave their group may outlive their child"),
            }
        }
        state.runs.insert(id.clone(), None);
        Run { id, thread }
    }

    /// The run's watchdog learns its escapees from now on.
    pub fn watched_by(&self, watchdog: UnboundedSender<String>) {
        if let Some(slot) = state().runs.get_mut(&self.id) {
            *slot = Some(watchdog);
        }
    }

    /// The run's id, as in its markers.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// The `PROCESSION_CHILD` value of the run's child `name`.
    pub fn marker(&self, name: &str) -> Arc<str> {
        Arc::from(format!("{}/{name}", self.id))
    }

    /// Kills what escaped the group of the instance `pgid` of child
    /// `marker` (once that group is empty). Answers with how many died.
    pub fn kill_child(&self, marker: Arc<str>, pgid: u32) -> oneshot::Receiver<usize> {
        // The common case, answered here without a trip to the thread:
        // the group is gone and no orphan of ours exists, so nothing
        // escaped (what escaped an ended child is below an orphan now).
        let group_gone = matches!(
            nix::sys::signal::killpg(Pid::from_raw(pgid as i32), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if group_gone && no_orphans() {
            let (done, rx) = oneshot::channel();
            let _ = done.send(0);
            return rx;
        }
        self.ask(Scope::Child(marker), vec![pgid], false)
    }

    /// Kills what escaped any child of the run.
    pub fn kill_all(&self) -> oneshot::Receiver<usize> {
        self.ask(Scope::Run(self.id.clone()), Vec::new(), false)
    }

    fn ask(&self, scope: Scope, groups: Vec<u32>, forget: bool) -> oneshot::Receiver<usize> {
        let (done, rx) = oneshot::channel();
        if let Some(thread) = &self.thread {
            let _ = thread.send(Request {
                scope,
                groups,
                forget,
                done: Some(done),
            });
        }
        // Without a thread the sender is dropped: the answer is "nothing".
        rx
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // The run is over however it ended: nothing of it may stay. Its
        // watchdog goes now (its input closes with the run's last sender);
        // the run is forgotten once the thread has killed what is left.
        if let Some(slot) = state().runs.get_mut(&self.id) {
            *slot = None;
        }
        match &self.thread {
            Some(thread) => {
                let _ = thread.send(Request {
                    scope: Scope::Run(self.id.clone()),
                    groups: Vec::new(),
                    forget: true,
                    done: None,
                });
            }
            None => {
                state().runs.remove(&self.id);
            }
        }
    }
}

/// Starts the thread.
fn enable(state: &mut State) -> Option<mpsc::Sender<Request>> {
    let (tx, rx) = mpsc::channel();
    match std::thread::Builder::new()
        .name("procession-contain".into())
        .spawn(move || Watcher::default().run(rx))
    {
        Ok(_) => {
            state.thread = Some(tx.clone());
            Some(tx)
        }
        Err(e) => {
            tracing::error!(error = %e,
                "cannot start the containment thread: descendants that leave their group may outlive their child");
            None
        }
    }
}

struct Request {
    scope: Scope,
    /// Groups whose leader ended: wait for them to empty first (their
    /// members' children re-parent to us only once those are dead).
    groups: Vec<u32>,
    /// Forget the run afterwards.
    forget: bool,
    done: Option<oneshot::Sender<usize>>,
}

#[derive(Debug, Clone)]
enum Scope {
    /// What escaped one child (a marker), and is no longer below a
    /// running instance of it.
    Child(Arc<str>),
    /// What escaped any child of a run.
    Run(Arc<str>),
}

/// Whose a process is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// A child's (its marker).
    Child(Arc<str>),
    /// Some orphan of ours (under [`adopt_all_orphans`]).
    Unknown,
}

impl Scope {
    fn covers(&self, owner: &Owner, attached: bool) -> bool {
        match (self, owner) {
            (Scope::Child(m), Owner::Child(o)) => !attached && m == o,
            (Scope::Child(_), Owner::Unknown) => false,
            (Scope::Run(r), Owner::Child(o)) => run_of(o) == &**r,
            (Scope::Run(_), Owner::Unknown) => true,
        }
    }
}

/// The run part of a marker.
fn run_of(marker: &str) -> &str {
    marker.split_once('/').map_or(marker, |(run, _)| run)
}

/// A process outside its child's group, once seen.
#[derive(Debug, Clone)]
struct Escapee {
    start: u64,
    owner: Owner,
    /// Its watchdog knows it.
    told: bool,
}

/// What a look at the table found about one process of ours.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    pid: u32,
    owner: Owner,
    /// Still below a running instance of its child (not yet an orphan).
    attached: bool,
}

/// What a process's marker says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lookup {
    /// It names a child of one of our runs.
    Ours(Arc<str>),
    /// It names none of ours (another run's, or there is none).
    NotOurs,
    /// It cannot be read (a zombie, a process in the middle of `exec`).
    Unknown,
}

/// Attributes every process below `me` that left its child's group, or
/// that re-parented to us, to the child it came from.
///
/// - Below a child we spawned (`direct`), whatever is not in the child's
///   group (its pid) is that child's.
/// - A child of ours that we did not spawn re-parented to us: it, and
///   everything below it, is the child's that `known` says (same pid and
///   start time), or its marker names, or (when its marker cannot be read,
///   as a zombie's cannot) whose process group it is still in without
///   leading it, or, under `adopt`, an unknown orphan's.
fn attribute(
    table: &Table,
    me: u32,
    direct: &FxHashMap<u32, Option<Arc<str>>>,
    groups: &FxHashMap<u32, Arc<str>>,
    known: &FxHashMap<u32, Escapee>,
    adopt: bool,
    mut marker: impl FnMut(u32) -> Lookup,
) -> Vec<Seen> {
    let mut seen = Vec::new();
    for &top in table.children(me) {
        let Some(p) = table.get(top) else { continue };
        match direct.get(&top) {
            Some(Some(m)) => {
                for pid in table.subtree(top).into_iter().skip(1) {
                    if table.get(pid).is_some_and(|d| d.pgrp != top) {
                        seen.push(Seen {
                            pid,
                            owner: Owner::Child(m.clone()),
                            attached: true,
                        });
                    }
                }
            }
            Some(None) => {} // a watchdog
            None => {
                let lookup = match known.get(&top) {
                    Some(e) if e.start == p.start => None,
                    _ if p.is_zombie() => Some(Lookup::Unknown), // its environment is gone
                    _ => Some(marker(top)),
                };
                let owner = match lookup {
                    None => known.get(&top).map(|e| e.owner.clone()),
                    Some(Lookup::Ours(m)) => Some(Owner::Child(m)),
                    Some(Lookup::NotOurs) => None,
                    // A group's leader is one of our children, registered
                    // until collected: a leader here is a new process that
                    // got a pid (and group id) once ours.
                    Some(Lookup::Unknown) if p.pgrp != top => {
                        groups.get(&p.pgrp).map(|m| Owner::Child(m.clone()))
                    }
                    Some(Lookup::Unknown) => None,
                };
                let Some(owner) = owner.or(adopt.then_some(Owner::Unknown)) else {
                    continue;
                };
                for pid in table.subtree(top) {
                    seen.push(Seen {
                        pid,
                        owner: owner.clone(),
                        attached: false,
                    });
                }
            }
        }
    }
    seen
}

/// The containment thread's own state.
#[derive(Default)]
struct Watcher {
    known: FxHashMap<u32, Escapee>,
    /// Children of ours, by pid and start time, that carry no marker of
    /// our runs (another part of the program started them): read once.
    strangers: FxHashMap<u32, u64>,
}

impl Watcher {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut period = MIN_PERIOD;
        loop {
            let mut requests = Vec::new();
            match rx.recv_timeout(period) {
                Ok(r) => requests.push(r),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            requests.extend(rx.try_iter());
            let began = Instant::now();
            if requests.is_empty() {
                if state().runs.is_empty() && self.known.is_empty() {
                    continue; // nothing to watch: cost nothing
                }
                self.look();
            } else {
                self.serve(requests);
            }
            period = began
                .elapsed()
                .saturating_mul(PERIOD_PER_COST)
                .clamp(MIN_PERIOD, MAX_PERIOD);
        }
    }

    /// Reads the table, learns, reaps; returns what it saw.
    fn look(&mut self) -> (Table, Vec<Seen>) {
        let me = std::process::id();
        let table = Table::read();
        // Spawns that forked before the read have registered by now.
        drop(SHARED.spawning.write().unwrap_or_else(|e| e.into_inner()));
        // Markers are read without holding the lock (reading an environment
        // can block, on a process stuck in a page fault): first which to
        // read, then read them, then attribute.
        let (wanted, runs): (Vec<u32>, Vec<Arc<str>>) = {
            let state = state();
            let wanted = table
                .children(me)
                .iter()
                .copied()
                .filter(|pid| !state.direct.contains_key(pid))
                .filter(|&pid| {
                    let start = table.get(pid).map_or(0, |p| p.start);
                    self.known.get(&pid).is_none_or(|e| e.start != start)
                        && self.strangers.get(&pid) != Some(&start)
                })
                .collect();
            (wanted, state.runs.keys().cloned().collect())
        };
        let mut markers: FxHashMap<u32, Lookup> = FxHashMap::default();
        for pid in wanted {
            let lookup = match procfs::marker(pid) {
                procfs::Marker::Found(m) if runs.iter().any(|r| **r == *run_of(&m)) => {
                    Lookup::Ours(Arc::from(m))
                }
                // Another run's, or none: not ours, and it will not change.
                procfs::Marker::Found(_) | procfs::Marker::None => {
                    let start = table.get(pid).map_or(0, |p| p.start);
                    self.strangers.insert(pid, start);
                    Lookup::NotOurs
                }
                // Ask again next time.
                procfs::Marker::Unreadable => Lookup::Unknown,
            };
            markers.insert(pid, lookup);
        }
        let mut state = state();
        let state = &mut *state;
        let strangers = &self.strangers;
        let seen = attribute(
            &table,
            me,
            &state.direct,
            &state.groups,
            &self.known,
            state.adopt,
            |pid| match markers.remove(&pid) {
                Some(lookup) => lookup,
                None if strangers.contains_key(&pid) => Lookup::NotOurs,
                None => Lookup::Unknown,
            },
        );

        for s in &seen {
            let Some(p) = table.get(s.pid) else { continue };
            let e = self.known.entry(s.pid).or_insert_with(|| Escapee {
                start: p.start,
                owner: s.owner.clone(),
                told: false,
            });
            if e.start != p.start {
                *e = Escapee {
                    start: p.start,
                    owner: s.owner.clone(),
                    told: false,
                };
            }
            if p.is_zombie() {
                if p.ppid == me {
                    reap(s.pid, p.start);
                }
                continue;
            }
            if !e.told {
                e.told = true;
                tell(state, &e.owner, format!("e{}:{}\n", s.pid, p.start));
            }
        }
        // A zombie stays known until it is reaped: one whose parent dies
        // first re-parents to us, and is ours to reap then.
        self.known.retain(|pid, e| {
            let stays = table.get(*pid).is_some_and(|p| p.start == e.start);
            if e.told
                && !table
                    .get(*pid)
                    .is_some_and(|p| p.start == e.start && !p.is_zombie())
            {
                e.told = false;
                tell(state, &e.owner, format!("x{pid}:{}\n", e.start));
            }
            stays
        });
        self.strangers
            .retain(|pid, start| table.get(*pid).is_some_and(|p| p.start == *start));
        // A group with nobody left in it is done (its id may be reused).
        let in_use: rustc_hash::FxHashSet<u32> = table.all().map(|(_, p)| p.pgrp).collect();
        let direct = &state.direct;
        state
            .groups
            .retain(|g, _| in_use.contains(g) || direct.contains_key(g));
        (table, seen)
    }

    /// Carries out kill requests (all of them at once).
    fn serve(&mut self, requests: Vec<Request>) {
        let groups: Vec<u32> = requests
            .iter()
            .flat_map(|r| r.groups.iter().copied())
            .collect();
        wait_groups_empty(&groups);
        let scopes: Vec<Scope> = requests.iter().map(|r| r.scope.clone()).collect();
        let killed = if scopes.iter().all(|s| matches!(s, Scope::Child(_))) && no_orphans() {
            // What escaped an ended child can only be below an orphan of
            // ours now: without one, there is nothing to look for.
            0
        } else {
            self.kill(&scopes)
        };
        if killed > 0 {
            tracing::info!(
                killed,
                ?scopes,
                "killed descendants that had left their child's group"
            );
        }
        let mut state = state();
        for r in requests {
            if r.forget {
                if let Scope::Run(run) = &r.scope {
                    state.runs.remove(run);
                }
                if state.runs.is_empty() && state.subreaper {
                    let _ = nix::sys::prctl::set_child_subreaper(false);
                    state.subreaper = false;
                }
            }
            if let Some(done) = r.done {
                let _ = done.send(killed);
            }
        }
    }

    fn kill(&mut self, scopes: &[Scope]) -> usize {
        let me = std::process::id();
        let mut doomed: FxHashMap<u32, u64> = FxHashMap::default();
        for _ in 0..ROUNDS {
            let (table, seen) = self.look();
            let mut more = false;
            for s in seen {
                let Some(p) = table.get(s.pid) else { continue };
                if p.is_zombie() || !scopes.iter().any(|sc| sc.covers(&s.owner, s.attached)) {
                    continue;
                }
                if doomed.contains_key(&s.pid) {
                    continue;
                }
                // Frozen, it cannot fork (nor exit and free its pid) while
                // we look again. One that is gone already is not doomed:
                // its pid may be another process's by the time we kill.
                if kill(Pid::from_raw(s.pid as i32), NixSignal::SIGSTOP).is_ok() {
                    doomed.insert(s.pid, p.start);
                    more = true;
                }
            }
            if !more {
                break;
            }
        }
        for pid in doomed.keys() {
            let _ = kill(Pid::from_raw(*pid as i32), NixSignal::SIGKILL);
        }
        let killed = doomed.len();
        // Reap those that re-parented to us as they die.
        let deadline = Instant::now() + KILL_WAIT;
        let mut pause = Duration::from_millis(1);
        while !doomed.is_empty() {
            doomed.retain(|pid, start| match procfs::stat(*pid) {
                Some(p) if p.start == *start && p.is_zombie() => {
                    if p.ppid == me {
                        reap(*pid, p.start);
                    }
                    false // a zombie of someone else's is theirs to reap
                }
                Some(p) => p.start == *start,
                None => false,
            });
            if doomed.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        if !doomed.is_empty() {
            tracing::error!(pids = ?doomed.keys().collect::<Vec<_>>(),
                "escaped descendants survive SIGKILL (stuck in the kernel?)");
        }
        self.look(); // forget the dead, reap the last
        killed
    }
}

/// Whether every child of ours is one procession spawned (a cheap look,
/// where the kernel lists a thread's children).
fn no_orphans() -> bool {
    let Some(children) = procfs::own_children() else {
        return false;
    };
    drop(SHARED.spawning.write().unwrap_or_else(|e| e.into_inner()));
    let state = state();
    children.iter().all(|pid| state.direct.contains_key(pid))
}

/// Collects one zombie that re-parented to us (by its pid, never -1), if
/// it still is the process we saw (a pid and a start time) and still a
/// zombie of ours: a pid seen in an older read may be another process's now.
fn reap(pid: u32, start: u64) {
    let me = std::process::id();
    if procfs::stat(pid).is_some_and(|p| p.start == start && p.is_zombie() && p.ppid == me) {
        let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
    }
}

/// Sends a line to the watchdog(s) that should know about `owner`.
fn tell(state: &State, owner: &Owner, line: String) {
    match owner {
        Owner::Child(m) => {
            if let Some(Some(tx)) = state.runs.get(run_of(m)) {
                let _ = tx.send(line);
            }
        }
        Owner::Unknown => {
            for tx in state.runs.values().flatten() {
                let _ = tx.send(line.clone());
            }
        }
    }
}

/// Waits (a bounded time) until none of `groups` has a live member.
fn wait_groups_empty(groups: &[u32]) {
    let deadline = Instant::now() + KILL_WAIT;
    let mut pause = Duration::from_millis(1);
    while groups.iter().any(|&g| super::group_alive(g)) && Instant::now() < deadline {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::Proc;

    const ME: u32 = 100;

    fn p(ppid: u32, pgrp: u32) -> Proc {
        Proc {
            state: 'S',
            ppid,
            pgrp,
            start: 7,
        }
    }

    fn owner(m: &str) -> Owner {
        Owner::Child(Arc::from(m))
    }

    /// A run `r` with child `web` (pid 200) and our watchdog (pid 300).
    fn setup() -> (Table, FxHashMap<u32, Option<Arc<str>>>) {
        let mut t = Table::default();
        t.insert(ME, p(1, ME));
        t.insert(200, p(ME, 200)); // web
        t.insert(201, p(200, 200)); // in web's group
        t.insert(202, p(201, 202)); // setsid below it
        t.insert(203, p(202, 202)); // its child
        t.insert(300, p(ME, 300)); // the watchdog
        let mut direct = FxHashMap::default();
        direct.insert(200, Some(Arc::from("r/web")));
        direct.insert(300, None);
        (t, direct)
    }

    #[test]
    fn what_leaves_the_group_of_a_running_child_is_its_attached_escapee() {
        let (t, direct) = setup();
        let seen = attribute(
            &t,
            ME,
            &direct,
            &FxHashMap::default(),
            &FxHashMap::default(),
            false,
            |_| Lookup::NotOurs,
        );
        let pids: Vec<u32> = seen.iter().map(|s| s.pid).collect();
        assert_eq!(pids, [202, 203], "the group member 201 is the group's");
        assert!(seen.iter().all(|s| s.attached && s.owner == owner("r/web")));
    }

    #[test]
    fn an_orphan_is_attributed_by_what_was_known_then_by_its_marker() {
        let (mut t, direct) = setup();
        t.insert(400, p(ME, 400)); // known from before
        t.insert(401, p(400, 400));
        t.insert(500, p(ME, 500)); // has a marker
        t.insert(600, p(ME, 600)); // a stranger
        let mut known = FxHashMap::default();
        known.insert(
            400,
            Escapee {
                start: 7,
                owner: owner("r/db"),
                told: true,
            },
        );
        let seen = attribute(
            &t,
            ME,
            &direct,
            &FxHashMap::default(),
            &known,
            false,
            |pid| {
                if pid == 500 {
                    Lookup::Ours(Arc::from("r/web"))
                } else {
                    Lookup::NotOurs
                }
            },
        );
        let find = |pid| seen.iter().find(|s| s.pid == pid).map(|s| s.owner.clone());
        assert_eq!(find(400), Some(owner("r/db")));
        assert_eq!(find(401), Some(owner("r/db")), "below a known orphan");
        assert_eq!(find(500), Some(owner("r/web")));
        assert_eq!(find(600), None, "never touch a child someone else started");
        assert!(seen.iter().filter(|s| s.pid >= 400).all(|s| !s.attached));
    }

    #[test]
    fn a_zombie_still_in_a_group_of_ours_is_that_childs() {
        let (mut t, direct) = setup();
        // It re-parented to us while still in the group of `db` (led by
        // 250, now gone), and died there before we saw it alive.
        t.insert(
            251,
            Proc {
                state: 'Z',
                ..p(ME, 250)
            },
        );
        let mut groups = FxHashMap::default();
        groups.insert(250, Arc::from("r/db"));
        let seen = attribute(
            &t,
            ME,
            &direct,
            &groups,
            &FxHashMap::default(),
            false,
            |_| Lookup::NotOurs,
        );
        let s = seen.iter().find(|s| s.pid == 251).expect("attributed");
        assert_eq!(s.owner, owner("r/db"));
        let seen = attribute(
            &t,
            ME,
            &direct,
            &FxHashMap::default(),
            &FxHashMap::default(),
            false,
            |_| Lookup::NotOurs,
        );
        assert!(
            seen.iter().all(|s| s.pid != 251),
            "without the group, a stranger"
        );
    }

    #[test]
    fn a_group_id_once_ours_does_not_make_a_stranger_ours() {
        let (mut t, direct) = setup();
        let mut groups = FxHashMap::default();
        groups.insert(250, Arc::from("r/db"));
        // A new process got pid 250, leads its own group 250, and died.
        t.insert(
            250,
            Proc {
                state: 'Z',
                ..p(ME, 250)
            },
        );
        // One in group 250 whose environment says it is not ours.
        t.insert(252, p(ME, 250));
        let none = FxHashMap::default();
        let seen = attribute(&t, ME, &direct, &groups, &none, false, |_| Lookup::NotOurs);
        assert!(
            seen.iter().all(|s| s.pid != 250 && s.pid != 252),
            "{seen:?}"
        );
    }

    #[test]
    fn a_reused_pid_is_not_taken_for_the_process_once_known() {
        let (mut t, direct) = setup();
        t.insert(400, p(ME, 400));
        let mut known = FxHashMap::default();
        known.insert(
            400,
            Escapee {
                start: 3, // another process, long gone
                owner: owner("r/db"),
                told: true,
            },
        );
        let seen = attribute(
            &t,
            ME,
            &direct,
            &FxHashMap::default(),
            &known,
            false,
            |_| Lookup::NotOurs,
        );
        assert!(seen.iter().all(|s| s.pid != 400));
        let seen = attribute(&t, ME, &direct, &FxHashMap::default(), &known, true, |_| {
            Lookup::NotOurs
        });
        let s = seen.iter().find(|s| s.pid == 400).expect("adopted");
        assert_eq!(s.owner, Owner::Unknown);
    }

    #[test]
    fn scopes_cover_their_child_once_detached_and_their_whole_run() {
        let web = owner("r/web");
        let child = Scope::Child(Arc::from("r/web"));
        assert!(child.covers(&web, false));
        assert!(!child.covers(&web, true), "its next instance's is not");
        assert!(!child.covers(&owner("r/db"), false));
        let run = Scope::Run(Arc::from("r"));
        assert!(run.covers(&web, true));
        assert!(!run.covers(&owner("r2/web"), false));
        assert!(run.covers(&Owner::Unknown, false));
        assert_eq!(run_of("1-ab-2/web"), "1-ab-2");
    }
}
