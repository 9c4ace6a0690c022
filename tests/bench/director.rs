//! relay, request/reply, scale, restart and fan-out: the director against
//! shell pipes and plain tokio processes.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use procession::{
    ChildSpec, DirectorConfig, Event, EventBatch, EventFilter, EventKind, Frame, Journal, Ready,
    StderrMode,
};
use procession::{Director, RestartPolicy, RestartSpec, Route};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::report::{median, percentile, rss_mib, Row};
use crate::tap::{tap, until, EventLine};
use crate::{fixture, fixture_argv, Size};

const PATIENCE: Duration = Duration::from_secs(60);

fn spec(name: &str, args: &[&str]) -> ChildSpec {
    ChildSpec::new(name, fixture_argv(args))
}

fn raw_command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(fixture());
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

// ---------------------------------------------------------------- relay

/// `A | B` through a shell pipe: lines per second, spawns included.
async fn shell_relay(lines: usize) -> f64 {
    let script = format!("'{0}' lines64 {lines} | '{0}' count", fixture());
    let start = Instant::now();
    let out = tokio::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("count {lines}\n")
    );
    lines as f64 / secs
}

/// Who watches a relay's events.
#[derive(Debug, Clone, Copy)]
enum Watch {
    /// Nobody: the route is chunk-forwarded.
    Nobody,
    /// Subscribers on a thread of their own, each taking every event
    /// (`subscribe_batches`).
    Subscribers(usize),
    /// The journal (`--events`) gets every event.
    Journal,
}

/// What a relay measured.
struct Relay {
    lines_per_s: f64,
    /// Events the subscribers received (all together), and were told
    /// they missed.
    received: u64,
    missed: u64,
    /// Lines in the events file.
    journalled: u64,
}

/// A's lines routed by a director to B, watched by `watch`.
async fn director_relay(lines: usize, watch: Watch) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let counted = dir.path().join("count");
    // B writes its count to a file, so that nothing has to subscribe to
    // learn it.
    let b = ChildSpec::new(
        "b",
        [
            "sh".to_string(),
            "-c".into(),
            format!("exec '{}' count > '{}'", fixture(), counted.display()),
        ],
    );
    let events = dir.path().join("events.jsonl");
    let journal = matches!(watch, Watch::Journal).then(|| Journal::create(&events).unwrap());
    let director = Director::with_config(DirectorConfig {
        journal: journal.clone(),
        ..DirectorConfig::default()
    });
    let received = Arc::new(AtomicU64::new(0));
    let missed = Arc::new(AtomicU64::new(0));
    let arbiter = Arbiter::new();
    let (finished, mut finishes) = tokio::sync::mpsc::unbounded_channel();
    let subscribers = match watch {
        Watch::Subscribers(n) => n,
        _ => 0,
    };
    for _ in 0..subscribers {
        let counter = Counter {
            received: received.clone(),
            missed: missed.clone(),
            finished: finished.clone(),
        };
        let counter = Counter::start_in_arbiter(&arbiter.handle(), move |_| counter);
        director
            .subscribe_batches(counter.recipient(), EventFilter::all())
            .await
            .unwrap();
    }

    let start = Instant::now();
    director
        .launch(
            [spec("a", &["lines64", &lines.to_string()]), b],
            [Route::new("a", "b")],
        )
        .await
        .unwrap();
    let a = director.wait_exit("a").await.unwrap();
    assert!(a.status.success());
    director.close_stdin("b").await.unwrap();
    let b = director.wait_exit("b").await.unwrap();
    let mut secs = start.elapsed().as_secs_f64();
    assert!(b.status.success());
    assert_eq!(
        std::fs::read_to_string(&counted).unwrap(),
        format!("count {lines}\n")
    );
    director.shutdown("done").await;
    let mut journalled = 0;
    if let Some(journal) = journal {
        // The run is not over until its events are in the file.
        assert!(journal.error().is_none());
        secs = start.elapsed().as_secs_f64();
        let text = std::fs::read_to_string(&events).unwrap();
        journalled = text.lines().count() as u64;
        assert!(
            journalled as usize > 2 * lines,
            "every output and routed event"
        );
    }
    // The subscribers' last batches reach them after the run: until
    // each has seen `finished`.
    for _ in 0..subscribers {
        let heard = tokio::time::timeout(PATIENCE, finishes.recv()).await;
        assert!(
            matches!(heard, Ok(Some(()))),
            "a subscriber never heard the end"
        );
    }
    arbiter.stop();
    Relay {
        lines_per_s: lines as f64 / secs,
        received: received.load(Ordering::Relaxed),
        missed: missed.load(Ordering::Relaxed),
        journalled,
    }
}

/// A subscriber that counts what it gets.
struct Counter {
    received: Arc<AtomicU64>,
    missed: Arc<AtomicU64>,
    finished: tokio::sync::mpsc::UnboundedSender<()>,
}

impl Counter {
    fn count(&self, event: &Event) {
        self.received.fetch_add(1, Ordering::Relaxed);
        match event.kind {
            EventKind::Lagged { missed } => {
                self.missed.fetch_add(missed, Ordering::Relaxed);
            }
            EventKind::Finished { .. } => {
                let _ = self.finished.send(());
            }
            _ => {}
        }
    }
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<EventBatch> for Counter {
    type Result = ();
    fn handle(&mut self, batch: EventBatch, _: &mut Context<Self>) {
        for event in batch.iter() {
            self.count(event);
        }
    }
}

pub async fn relay(size: Size) -> Vec<Row> {
    let lines = size.relay_lines;
    let (mut shell, mut ours, mut watched, mut journalled) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut events = 0;
    for _ in 0..size.runs {
        shell.push(shell_relay(lines).await);
        ours.push(director_relay(lines, Watch::Nobody).await.lines_per_s);
        let one = Watch::Subscribers(1);
        watched.push(director_relay(lines, one).await.lines_per_s);
        let run = director_relay(lines, Watch::Journal).await;
        journalled.push(run.lines_per_s);
        events = run.journalled;
    }
    let shell = median(&mut shell);
    let ours = median(&mut ours);
    let watched = median(&mut watched);
    let journalled = median(&mut journalled);
    let events_per_s = journalled * events as f64 / lines as f64;
    let pipe = format!("A \\| B through a shell pipe: {:.2} M lines/s", shell / 1e6);
    vec![
        Row {
            workload: "relay",
            what: format!("A prints {lines} lines of 64 bytes, routed to B; nobody watches (chunks forwarded)"),
            baseline: pipe.clone(),
            figure: format!("{:.2} M lines/s", ours / 1e6),
            ratio: Some(ours / shell),
            target: ">= 0.5",
            met: ours / shell >= 0.5,
        },
        Row {
            workload: "relay watched",
            what: "the same, one subscriber takes every event (`subscribe_batches`)".into(),
            baseline: pipe,
            figure: format!("{:.2} M lines/s", watched / 1e6),
            ratio: Some(watched / shell),
            target: ">= 4 M lines/s",
            met: watched >= 4e6,
        },
        Row {
            workload: "relay --events",
            what: format!("the same, every event journalled ({events} lines of JSON), until the file is complete"),
            baseline: format!("nobody watches: {:.2} M lines/s", ours / 1e6),
            figure: format!(
                "{:.2} M lines/s, journal {:.2} M events/s ({:.2} x one subscriber)",
                journalled / 1e6,
                events_per_s / 1e6,
                journalled / watched
            ),
            ratio: Some(journalled / ours),
            target: "journal >= 2 M events/s, >= 0.7",
            met: events_per_s >= 2e6 && journalled / ours >= 0.7,
        },
    ]
}

// ------------------------------------------------------------- terminal

/// A bare pseudo-terminal read loop: the fixture prints `lines` lines onto
/// a pty's slave end; we read the master until EIO and count newlines.
/// Lines per second, spawn included.
fn bare_pty(lines: usize) -> f64 {
    use std::io::Read;
    let start = Instant::now();
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = std::process::Command::new(fixture())
        .args(["lines64", &lines.to_string()])
        .stdin(Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(slave);
    let mut master = std::fs::File::from(pty.master);
    let mut buf = vec![0u8; 64 * 1024];
    let mut newlines = 0;
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => newlines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => break,
            Err(e) => panic!("reading the terminal: {e}"),
        }
    }
    child.wait().unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(newlines, lines);
    lines as f64 / secs
}

/// The fixture's lines out of a terminal child (escape removal, `\r\n`
/// to `\n`, framing), routed by a director to a piped child that counts.
async fn terminal_relay(lines: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let counted = dir.path().join("count");
    let b = ChildSpec::new(
        "b",
        [
            "sh".to_string(),
            "-c".into(),
            format!("exec '{}' count > '{}'", fixture(), counted.display()),
        ],
    );
    let a = spec("a", &["lines64", &lines.to_string()]).terminal(procession::Terminal::default());
    let director = Director::start();
    let start = Instant::now();
    director
        .launch([a, b], [Route::new("a", "b")])
        .await
        .unwrap();
    let a = director.wait_exit("a").await.unwrap();
    assert!(a.status.success());
    director.close_stdin("b").await.unwrap();
    let b = director.wait_exit("b").await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(b.status.success());
    assert_eq!(
        std::fs::read_to_string(&counted).unwrap(),
        format!("count {lines}\n")
    );
    director.shutdown("done").await;
    lines as f64 / secs
}

pub async fn terminal(size: Size) -> Row {
    let lines = size.relay_lines / 4;
    let (mut bare, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..size.runs {
        bare.push(bare_pty(lines));
        ours.push(terminal_relay(lines).await);
    }
    let (bare, ours) = (median(&mut bare), median(&mut ours));
    Row {
        workload: "terminal",
        what: format!("A prints {lines} lines of 64 bytes in a terminal, routed to B"),
        baseline: format!("a bare pty read loop: {:.2} M lines/s", bare / 1e6),
        figure: format!("{:.2} M lines/s", ours / 1e6),
        ratio: Some(ours / bare),
        target: "none set (measured)",
        met: true,
    }
}

pub async fn fan_out(size: Size) -> Row {
    let lines = size.relay_lines / 2;
    let subscribers = size.subscribers;
    let (mut one, mut many) = (Vec::new(), Vec::new());
    let (mut received, mut missed) = (0, 0);
    for _ in 0..size.runs {
        let single = Watch::Subscribers(1);
        one.push(director_relay(lines, single).await.lines_per_s);
        let all = Watch::Subscribers(subscribers);
        let run = director_relay(lines, all).await;
        many.push(run.lines_per_s);
        (received, missed) = (run.received, run.missed);
    }
    let (one, many) = (median(&mut one), median(&mut many));
    let drop = 1.0 - many / one;
    // Every subscriber gets at least the output and routed event of each line.
    let all_got_all = missed == 0 && received >= (subscribers * 2 * lines) as u64;
    Row {
        workload: "fan-out",
        what: format!(
            "relay of {lines} lines (over {} events) with {subscribers} subscribers on their own thread (`subscribe_batches`)",
            2 * lines
        ),
        baseline: format!("one subscriber: {:.2} M lines/s", one / 1e6),
        figure: format!(
            "{:.2} M lines/s (rate drop {:.0} %); subscribers got {:.1} M events, {} missed",
            many / 1e6,
            drop * 100.0,
            received as f64 / 1e6,
            missed
        ),
        ratio: Some(many / one),
        target: ">= 0.9 (drop <= 10 %), none missed",
        met: drop <= 0.1 && all_got_all,
    }
}

// ---------------------------------------------------------- round trips

fn pin_to_one_core(pinned: bool) {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    // The set we started with, to go back to (after pinning, the number of
    // usable cores reads as 1).
    static ALL: std::sync::OnceLock<CpuSet> = std::sync::OnceLock::new();
    let all = *ALL.get_or_init(|| sched_getaffinity(Pid::from_raw(0)).unwrap());
    let set = if pinned {
        let first = (0..CpuSet::count())
            .find(|&c| all.is_set(c).unwrap())
            .unwrap();
        let mut one = CpuSet::new();
        one.set(first).unwrap();
        one
    } else {
        all
    };
    // Children inherit the affinity of the thread that forks them, and the
    // director spawns from this (the system's) thread.
    sched_setaffinity(Pid::from_raw(0), &set).unwrap();
}

/// Round trips in microseconds: a line to `echo` and its answer, on bare pipes.
async fn raw_round_trips(n: usize) -> Vec<f64> {
    let mut child = raw_command(&["echo"]).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut times = Vec::with_capacity(n);
    let mut answer = String::new();
    for i in 0..n {
        let line = format!("ping {i}\n");
        let start = Instant::now();
        stdin.write_all(line.as_bytes()).await.unwrap();
        answer.clear();
        stdout.read_line(&mut answer).await.unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e6);
        assert_eq!(answer, line);
    }
    drop(stdin);
    assert!(child.wait().await.unwrap().success());
    times
}

async fn director_round_trips(n: usize) -> Vec<f64> {
    let director = Director::start();
    director.add(spec("echo", &["echo"])).await.unwrap();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let line = format!("ping {i}");
        let start = Instant::now();
        let reply = director
            .request_frame("echo", Frame::line(line.clone()), PATIENCE)
            .await
            .unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e6);
        assert_eq!(reply.as_line(), Some(line.as_str()));
    }
    director.shutdown("done").await;
    times
}

pub async fn round_trips(size: Size) -> Vec<Row> {
    let n = size.round_trips;
    let mut rows = Vec::new();
    for pinned in [true, false] {
        pin_to_one_core(pinned);
        let mut raw = raw_round_trips(n).await;
        let mut ours = director_round_trips(n).await;
        let (raw50, ours50) = (percentile(&mut raw, 0.5), percentile(&mut ours, 0.5));
        let (raw99, ours99) = (percentile(&mut raw, 0.99), percentile(&mut ours, 0.99));
        let ratio = ours50 / raw50;
        rows.push(Row {
            workload: if pinned { "rtt pinned" } else { "rtt" },
            what: format!(
                "{n} request/reply round trips to an echo child{}",
                if pinned {
                    ", all on one core"
                } else {
                    ", unpinned"
                }
            ),
            baseline: format!("bare pipes: p50 {raw50:.1} us, p99 {raw99:.1} us"),
            figure: format!("`Director::request_frame`: p50 {ours50:.1} us, p99 {ours99:.1} us"),
            ratio: Some(ratio),
            target: "p50 <= 1.3",
            met: ratio <= 1.3,
        });
    }
    pin_to_one_core(false);
    rows
}

// ---------------------------------------------------------------- scale

/// Spawns `n` sleepers, waits for each one's `ready`, kills and reaps all.
/// Returns (seconds to ready, seconds to reaped).
async fn raw_scale(n: usize) -> (f64, f64) {
    let start = Instant::now();
    // stderr goes nowhere, here and under the director: with it, 5,000
    // children take 20,000 descriptors (three pipes and tokio's pidfd
    // each), this machine's hard limit.
    let mut children: Vec<_> = (0..n)
        .map(|_| {
            raw_command(&["sleep"])
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let readies = children.iter_mut().map(|c| {
        let mut out = BufReader::new(c.stdout.take().unwrap());
        async move {
            let mut line = String::new();
            out.read_line(&mut line).await.unwrap();
            assert_eq!(line, "ready\n");
        }
    });
    futures::future::join_all(readies).await;
    let ready = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for c in &children {
        let pgid = nix::unistd::Pid::from_raw(c.id().unwrap() as i32);
        nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }
    futures::future::join_all(children.iter_mut().map(|c| c.wait())).await;
    (ready, start.elapsed().as_secs_f64())
}

/// CPU time of the containment thread so far (the `procession-contain`
/// thread, which looks at /proc), in seconds.
fn containment_cpu() -> f64 {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != "procession-cont" {
            continue; // (names are cut to 15 bytes)
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat[stat.rfind(')').map_or(0, |i| i + 2)..]
            .split(' ')
            .collect();
        // utime and stime are fields 14 and 15 of the line; state is 3.
        let used: f64 = fields[11..13]
            .iter()
            .filter_map(|f| f.parse::<f64>().ok())
            .sum();
        return used / ticks;
    }
    0.0
}

pub async fn scale(size: Size) -> Row {
    let n = size.scale_children;
    let (raw_ready, raw_reaped) = raw_scale(n).await;

    let before = rss_mib();
    // Every child's `spawned` and `ready` are published in a burst: room
    // for all of them, so the tap never lags.
    let director = Director::with_config(DirectorConfig {
        event_queue: 4 * n,
        ..DirectorConfig::default()
    });
    let mut taps = tap(
        &director,
        EventFilter::all().kinds([
            procession::Kind::Spawned,
            procession::Kind::Ready,
            procession::Kind::Lagged,
        ]),
    )
    .await;
    let specs: Vec<_> = (0..n)
        .map(|i| {
            spec(&format!("s{i}"), &["sleep"])
                .ready(Ready::Line("^ready$".into()))
                .stderr(StderrMode::Discard)
        })
        .collect();
    let cpu_before = containment_cpu();
    let run_start = Instant::now();
    let start = Instant::now();
    director.launch(specs, []).await.unwrap();
    let mut pids = Vec::with_capacity(n);
    let mut ready = 0;
    while ready < n {
        let (_, event) = until(&mut taps, |_| true).await;
        match event.kind {
            EventKind::Spawned { pid, .. } => pids.push(pid),
            EventKind::Ready => ready += 1,
            EventKind::Lagged { .. } => panic!("the tap lagged: {:?}", event.kind),
            _ => {}
        }
    }
    let ours_ready = start.elapsed().as_secs_f64();
    let rss = rss_mib();
    let start = Instant::now();
    let infos = director.shutdown("done").await;
    let ours_reaped = start.elapsed().as_secs_f64();
    let contain_share = (containment_cpu() - cpu_before) / run_start.elapsed().as_secs_f64();
    assert_eq!(infos.len(), n);
    assert_eq!(pids.len(), n);
    for pid in pids {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
        assert!(!alive, "{pid} survived the shutdown");
    }
    Row {
        workload: "scale",
        what: format!("{n} long-running children under one director"),
        baseline: format!(
            "tokio: all ready in {:.0} ms, killed and reaped in {:.0} ms",
            raw_ready * 1e3,
            raw_reaped * 1e3
        ),
        figure: format!(
            "ready in {:.0} ms, RSS {rss:.1} MiB (+{:.1}), stopped and reaped in {:.0} ms; containment thread {:.1} % of a core",
            ours_ready * 1e3,
            rss - before,
            ours_reaped * 1e3,
            contain_share * 100.0
        ),
        ratio: Some(ours_ready / raw_ready),
        target: "ready <= 5 s, RSS <= 150 MiB, reaped <= 2 s",
        met: ours_ready <= 5.0 && rss <= 150.0 && ours_reaped <= 2.0,
    }
}

// -------------------------------------------------------------- restart

/// Each instance of `crash-stamp` prints when it started and when it was
/// about to exit (CLOCK_MONOTONIC, the same clock in every process); from
/// one's end to the next one's start is the crash-to-respawn time, in ms.
fn gaps(stamps: &[(u64, u64)]) -> Vec<f64> {
    stamps
        .windows(2)
        .map(|w| (w[1].0 - w[0].1) as f64 / 1e6)
        .collect()
}

fn stamp(line: &str) -> (u64, u64) {
    let mut words = line.split(' ').skip(1).map(|w| w.parse().unwrap());
    (words.next().unwrap(), words.next().unwrap())
}

/// A loop that respawns the child as soon as it has reaped it.
async fn raw_restart(n: usize) -> Vec<f64> {
    let mut stamps = Vec::with_capacity(n + 1);
    for _ in 0..=n {
        let out = raw_command(&["crash-stamp"]).output().await.unwrap();
        assert_eq!(out.status.code(), Some(1));
        stamps.push(stamp(String::from_utf8_lossy(&out.stdout).trim_end()));
    }
    gaps(&stamps)
}

async fn director_restart(n: usize) -> Vec<f64> {
    let director = Director::start();
    let mut taps = tap(
        &director,
        EventFilter::all()
            .children(["crash"])
            .kinds([procession::Kind::Output]),
    )
    .await;
    let restart = RestartSpec {
        policy: RestartPolicy::OnFailure,
        max: u32::MAX,
        within: Duration::from_secs(1),
        backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };
    director
        .add(spec("crash", &["crash-stamp"]).restart(restart))
        .await
        .unwrap();
    let mut stamps = Vec::with_capacity(n + 1);
    while stamps.len() <= n {
        let (_, event) = until(&mut taps, |_| true).await;
        if let Some(line) = event.kind_line() {
            stamps.push(stamp(line));
        }
    }
    director.shutdown("done").await;
    gaps(&stamps)
}

pub async fn restart(size: Size) -> Row {
    let n = size.restarts;
    let mut raw = raw_restart(n).await;
    let mut ours = director_restart(n).await;
    let (raw50, ours50) = (percentile(&mut raw, 0.5), percentile(&mut ours, 0.5));
    let ours99 = percentile(&mut ours, 0.99);
    Row {
        workload: "restart",
        what: format!("{n} restarts of a child that crashes at once, backoff 0; from its last instruction to its successor's first"),
        baseline: format!("tokio, respawned once reaped: p50 {raw50:.2} ms"),
        figure: format!("p50 {ours50:.2} ms, p99 {ours99:.2} ms"),
        ratio: Some(ours50 / raw50),
        target: "p50 <= 2 ms",
        met: ours50 <= 2.0,
    }
}
