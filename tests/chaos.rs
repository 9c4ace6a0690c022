//! Chaos: 200 children under one director, with mixed restart policies.
//! They exit, crash, hang, ignore SIGTERM, trickle output until killed, fork
//! grandchildren, flood, and close stdout early. Meanwhile the test sends
//! random stops, kills, TERMs and deliveries. Then it shuts the director down
//! and checks:
//! - no process is left: no child and no grandchild is alive;
//! - no zombie is left among our own children;
//! - our descriptors are back to where they were;
//! - no event was lost (each child's `seq` has no gap), and no frame was
//!   lost. Each instance's stdout lines arrive as 1, 2, 3, ... with no gap,
//!   and before its `exited`. They reach at least the count that the child
//!   recorded as written to the pipe, and exactly that count when it exited
//!   by itself.
//!
//! The choices come from a seed: `PROCESSION_CHAOS_SEED` replays a run, and
//! `PROCESSION_CHAOS_ACTIONS` (default 1,500) makes it longer. The seed and
//! the figures are printed (`--nocapture`).

#[path = "common/mod.rs"]
mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use procession::Journal;
use procession::{ChildState, Director, RestartPolicy, RestartSpec};
use procession::{DirectorConfig, DirectorError, Signal, StdinError};

const CHILDREN: usize = 200;

/// splitmix64: small, seedable, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn env_or(key: &str, default: u64) -> u64 {
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// What a child does after its first lines (see the fixture's `chaos` mode).
fn behaviour(rng: &mut Rng) -> (String, u64) {
    let lines = rng.below(20);
    match rng.below(20) {
        0..=2 => ("exit:0".into(), lines),
        3..=4 => ("exit:3".into(), lines),
        5..=6 => ("crash".into(), lines),
        7..=8 => ("hang".into(), lines),
        9..=10 => ("ignore-term".into(), lines),
        11..=12 => ("trickle".into(), lines),
        13 => (format!("fork:{}", 1 + rng.below(3)), lines),
        14 => (format!("fork-exit:{}", 1 + rng.below(3)), lines),
        15..=16 => ("flood".into(), 2_000 + rng.below(8_000)),
        17..=18 => ("close-stdout".into(), lines),
        _ => ("close-stdout-exit".into(), lines),
    }
}

fn fds() -> usize {
    open_fds()
}

/// One line of /proc/PID/stat: the fields the checks need.
struct Proc {
    pid: u32,
    state: char,
    ppid: u32,
    pgrp: u32,
}

fn processes() -> Vec<Proc> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A process may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let mut rest = stat[stat.rfind(')').unwrap() + 2..].split(' ');
        let state = rest.next().unwrap().chars().next().unwrap();
        let ppid = rest.next().unwrap().parse().unwrap();
        let pgrp = rest.next().unwrap().parse().unwrap();
        all.push(Proc {
            pid,
            state,
            ppid,
            pgrp,
        });
    }
    all
}

/// One event of the journal: the fields the checks need.
#[derive(serde::Deserialize)]
struct Record {
    event: String,
    child: Option<String>,
    seq: Option<u64>,
    pid: Option<u32>,
    stream: Option<String>,
    line: Option<String>,
    #[serde(default)]
    partial: bool,
    code: Option<i32>,
    signal: Option<String>,
    output_complete: Option<bool>,
}

fn read_journal(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("journal line {l:?}: {e}")))
        .collect()
}

/// SIGKILLs the group of every child the journal says was spawned, when
/// dropped: a failing run leaves nothing behind (the watchdog would see to
/// that too, but only when the whole test process ends).
struct GroupReaper(PathBuf);

impl Drop for GroupReaper {
    fn drop(&mut self) {
        let Ok(text) = std::fs::read_to_string(&self.0) else {
            return;
        };
        let pids = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Record>(l).ok()?.pid)
            .collect();
        drop(Reaper(pids));
    }
}

/// What the test did, and what came of it.
#[derive(Default, Debug)]
struct Tally {
    stops: usize,
    kills: usize,
    terms: usize,
    deliveries: usize,
    /// Refusals (the child was not running), by the child's state.
    refused: BTreeMap<String, usize>,
}

#[actix_rt::test]
async fn two_hundred_children_in_chaos_lose_nothing_and_leave_nothing() {
    let seed = env_or("PROCESSION_CHAOS_SEED", 0x0c4a_0500);
    let actions = env_or("PROCESSION_CHAOS_ACTIONS", 1_500) as usize;
    println!("chaos: seed {seed} (PROCESSION_CHAOS_SEED), {actions} actions");
    let mut rng = Rng(seed);
    let records = tempfile::tempdir().unwrap();
    let dir = records.path().to_str().unwrap().to_string();
    let started = Instant::now();

    // The first spawn opens tokio's signal and process drivers for good.
    let warm = tokio::process::Command::new(fixture())
        .args(["exit", "0"])
        .status()
        .await
        .unwrap();
    assert!(warm.success());
    let fds0 = fds();

    // The journal, not a subscriber, is the record to check: it is written
    // as each event is published and never lags. (A subscriber may: with
    // floods it falls more than any sane queue behind, by design.)
    let journal = records.path().join("events.jsonl");
    let director = Director::with_config(DirectorConfig {
        journal: Some(Journal::create(&journal).unwrap()),
        ..DirectorConfig::default()
    });
    let _reaper = GroupReaper(journal.clone());

    // `always` twice: restarted children keep the chaos going.
    let policies = [
        RestartPolicy::Never,
        RestartPolicy::OnFailure,
        RestartPolicy::Always,
        RestartPolicy::Always,
    ];
    let mut plan = BTreeMap::new();
    let names: Vec<Arc<str>> = (0..CHILDREN).map(|i| format!("c{i:03}").into()).collect();
    for name in &names {
        let (what, lines) = behaviour(&mut rng);
        let restart = RestartSpec {
            policy: *rng.pick(&policies),
            max: 2 + rng.below(7) as u32,
            within: Duration::from_secs(10),
            backoff: Duration::from_millis(rng.below(20)),
            max_backoff: Duration::from_millis(50),
        };
        let lines_arg = lines.to_string();
        let spec = fixture_spec(name, &["chaos", &dir, name, &what, &lines_arg])
            .restart(restart)
            .grace(Duration::from_millis(100))
            // Short drains too: a drain cuts only what others write after
            // the child's own output, never that output.
            .drain(Duration::from_millis(*rng.pick(&[0, 2, 20, 200])));
        plan.insert(
            name.clone(),
            (
                what.clone(),
                format!("{what} after {lines} lines, {restart:?}"),
            ),
        );
        director.add(spec).await.unwrap();
    }

    // The test's own chaos: random actions at random children, up to 16 at
    // a time, up to 1.5 ms apart.
    let tally = Rc::new(RefCell::new(Tally::default()));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::with_capacity(actions);
    for i in 0..actions {
        let name = rng.pick(&names).clone();
        let action = rng.below(10);
        let pause = Duration::from_micros(rng.below(1_500));
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        let (director, tally) = (director.clone(), tally.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = permit;
            let result = tokio::time::timeout(PATIENCE, async {
                match action {
                    0..=1 => {
                        tally.borrow_mut().stops += 1;
                        director.stop(name.clone(), None).await.map(drop)
                    }
                    2..=3 => {
                        tally.borrow_mut().kills += 1;
                        director.signal(name.clone(), Signal::Kill).await
                    }
                    4 => {
                        tally.borrow_mut().terms += 1;
                        director.signal(name.clone(), Signal::Term).await
                    }
                    _ => {
                        tally.borrow_mut().deliveries += 1;
                        director.deliver_line(name.clone(), format!("m{i}")).await
                    }
                }
            })
            .await;
            match result {
                Ok(Ok(())) => {}
                // Not running, gave up, stopped: refusals are answers.
                Ok(Err(DirectorError::NotRunning { state, .. })) => {
                    let why = ["gone", "exited", "gave up", "stopped", "restarting"]
                        .into_iter()
                        .find(|w| state.contains(w))
                        .unwrap_or(&state)
                        .to_string();
                    *tally.borrow_mut().refused.entry(why).or_default() += 1
                }
                // A delivery to a child that exits meanwhile.
                Ok(Err(DirectorError::Stdin(StdinError::Closed { .. }))) => {
                    *tally
                        .borrow_mut()
                        .refused
                        .entry("stdin closed".into())
                        .or_default() += 1
                }
                Ok(Err(e)) => panic!("action {action} on {name}: {e}"),
                Err(_) => panic!("action {action} on {name} hung for {PATIENCE:?}"),
            }
        }));
        // Pacing, not waiting: the random gap spreads the actions over the
        // children's lives. Nothing is assumed to have happened after it.
        tokio::time::sleep(pause).await;
    }
    for task in tasks {
        task.await.expect("an action failed");
    }
    let chaos_took = started.elapsed();

    let finals = tokio::time::timeout(PATIENCE, director.shutdown("chaos over"))
        .await
        .expect("the shutdown ends");
    assert_eq!(finals.len(), CHILDREN);
    for info in &finals {
        assert!(
            !matches!(info.state, ChildState::Running { .. }),
            "{} still runs after the shutdown",
            info.name
        );
    }
    drop(director);
    let events = read_journal(&journal);
    assert_eq!(
        events.last().map(|e| e.event.as_str()),
        Some("finished"),
        "the journal ends with `finished`"
    );

    // Nothing left: no process in any of the children's groups, and no
    // grandchild, is alive. (A zombie is dead; the kernel keeps it for its
    // parent to collect, which for grandchildren is no longer us.)
    let leaders: HashSet<u32> = events.iter().filter_map(|e| e.pid).collect();
    let grandchildren: HashSet<u32> = events
        .iter()
        .filter_map(|e| {
            e.line
                .as_deref()?
                .split_once(" grandchild ")?
                .1
                .parse()
                .ok()
        })
        .collect();
    eventually("no child or grandchild survives", || {
        processes().iter().all(|p| {
            let ours = leaders.contains(&p.pgrp) || grandchildren.contains(&p.pid);
            !ours || matches!(p.state, 'Z' | 'X')
        })
    })
    .await;
    // No zombie among our own children: every one was collected (the
    // watchdog, our other child, exits when the director is gone).
    let me = std::process::id();
    eventually("every child of ours is collected", || {
        processes().iter().all(|p| p.ppid != me)
    })
    .await;
    eventually("our descriptors are back", || fds() == fds0).await;

    // Nothing lost.
    let mut per_child: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for event in &events {
        if let Some(child) = &event.child {
            per_child.entry(child).or_default().push(event);
        }
    }
    assert_eq!(per_child.len(), CHILDREN);
    let mut figures = Figures::default();
    for (name, events) in &per_child {
        let (what, described) = &plan[*name];
        check_child(name, what, events, &dir, &mut figures)
            .unwrap_or_else(|e| panic!("{name} ({described}): {e}"));
    }
    assert!(figures.instances >= CHILDREN);
    println!(
        "chaos: {} children, {} instances ({} restarts), {} grandchildren; {:?}; \
         exits: {} by code, {} by signal ({} output-incomplete); {} stdout lines checked; \
         chaos {:.1} s, in all {:.1} s",
        CHILDREN,
        figures.instances,
        figures.instances - CHILDREN,
        grandchildren.len(),
        tally.borrow(),
        figures.by_code,
        figures.by_signal,
        figures.incomplete,
        figures.lines,
        chaos_took.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
}

#[derive(Default)]
struct Figures {
    instances: usize,
    by_code: usize,
    by_signal: usize,
    incomplete: usize,
    lines: u64,
}

/// One child's events, in order: no gap in `seq`, and each instance's
/// numbered lines complete and before its `exited`.
fn check_child(
    name: &str,
    behaviour: &str,
    events: &[&Record],
    dir: &str,
    f: &mut Figures,
) -> Result<(), String> {
    for (i, e) in events.iter().enumerate() {
        if e.seq != Some(i as u64) {
            return Err(format!("event {i} has seq {:?}: {}", e.seq, e.event));
        }
    }
    // (pid, lines so far) of the instance running now.
    let mut instance: Option<(u32, u64)> = None;
    for e in events {
        match e.event.as_str() {
            "spawned" => {
                if let Some((pid, _)) = instance {
                    return Err(format!("spawned again before {pid} exited"));
                }
                instance = Some((e.pid.expect("spawned has a pid"), 0));
            }
            "output" if e.stream.as_deref() == Some("stdout") => {
                let Some((pid, seen)) = &mut instance else {
                    return Err(format!("output outside an instance: {:?}", e.line));
                };
                let Some(line) = &e.line else {
                    return Err(format!("{pid}: a frame that is not a line"));
                };
                let n = line
                    .split_once(' ')
                    .and_then(|(n, _)| n.parse::<u64>().ok());
                if e.partial || n != Some(*seen + 1) {
                    return Err(format!("{pid}: after line {seen} came {line:?}"));
                }
                *seen += 1;
            }
            "exited" => {
                let Some((pid, seen)) = instance.take() else {
                    return Err("exited without an instance".into());
                };
                // How many lines the child knew had reached the pipe.
                let written = std::fs::read_to_string(format!("{dir}/{name}-{pid}"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                f.instances += 1;
                f.lines += seen;
                let (code, signal) = (e.code, e.signal.as_deref());
                match (code, signal) {
                    (Some(0 | 3), None) => f.by_code += 1,
                    (None, Some("KILL" | "TERM" | "ABRT")) => f.by_signal += 1,
                    _ => return Err(format!("{pid}: unexpected end {code:?} {signal:?}")),
                }
                if e.output_complete != Some(true) {
                    // Only grandchildren can hold a pipe open past the drain
                    // time (dying with the group, or left behind by
                    // `fork-exit`), and that cuts only what they would write:
                    // the lines below are still all there.
                    if !behaviour.starts_with("fork") {
                        return Err(format!("{pid}: output incomplete"));
                    }
                    f.incomplete += 1;
                }
                if seen < written || (code.is_some() && seen != written) {
                    return Err(format!(
                        "{pid}: {seen} lines arrived before `exited` ({code:?} {signal:?}), \
                         {written} were written"
                    ));
                }
            }
            _ => {}
        }
    }
    match instance {
        Some((pid, _)) => Err(format!("{pid} never exited")),
        None => Ok(()),
    }
}
