//! Soak: 10,000 spawn/exit cycles (a batch) and 1,000 restart cycles (a
//! director): our descriptor count comes back exactly, and our resident
//! memory does not grow with the number of cycles. And 1,000 restarts of a
//! child that leaves a daemon behind each time: every daemon is gone before
//! the next instance runs, none is left a zombie. Prints the figures.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use procession::batch::{Batch, BatchOptions, Job};
use procession::EventFilter;
use procession::{Director, RestartPolicy, RestartSpec};

/// The two soaks measure the whole process: they must not run at once.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn fds() -> usize {
    open_fds()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn batch_of(jobs: usize) {
    let list: Vec<Job> = (0..jobs)
        .map(|i| {
            Job::new(
                i.to_string(),
                [fixture(), "mixed", "0"].map(String::from).to_vec(),
            )
        })
        .collect();
    let options = BatchOptions {
        concurrency: 8,
        ..BatchOptions::default()
    };
    let results = Batch::start(list, options).unwrap().collect().await;
    assert_eq!(results.len(), jobs);
    assert!(results.values().all(|r| r.success()));
}

#[actix_rt::test]
async fn ten_thousand_spawns_leak_no_descriptor_and_no_memory() {
    let _alone = ALONE.lock().await;
    // Ten batches of 1,000. A batch holds all its results until it ends, so
    // one batch of 9,000 would grow RSS by its results (about 0.5 KiB a
    // job, which the allocator keeps), not by a leak: batches of equal size
    // measure what stays behind. Two warm up (allocator pools, lazily built
    // statics), eight are measured.
    batch_of(1_000).await;
    batch_of(1_000).await;
    let (fds0, rss0) = (fds(), rss_kib());
    let mut rss = Vec::new();
    for _ in 0..8 {
        batch_of(1_000).await;
        rss.push(rss_kib());
    }
    let (fds1, rss1) = (fds(), rss_kib());
    println!(
        "spawn soak: 10,000 jobs; descriptors {fds0} -> {fds1}; RSS {rss0} KiB after 2,000, then {rss:?} KiB after each 1,000 more"
    );
    assert_eq!(fds1, fds0, "descriptors leaked");
    // 2 MiB over 8,000 jobs: a leak of 256 bytes per job fails this (runs
    // here grow 0.25 to 0.6 MiB, mostly in the first batches).
    assert!(rss1 < rss0 + 2048, "RSS grew from {rss0} to {rss1} KiB");
}

#[actix_rt::test]
async fn a_thousand_restarts_leak_no_descriptor_and_no_memory() {
    let _alone = ALONE.lock().await;
    // The first spawn of a process opens tokio's process and signal drivers
    // for good: spawn once before counting.
    batch_of(1).await;
    let (fds0, rss0) = (fds(), rss_kib());
    let director = Director::start();
    let mut events = tap(
        &director,
        EventFilter::all().kinds([procession::Kind::Spawned]),
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
        .add(fixture_spec("crash", &["exit", "1"]).restart(restart))
        .await
        .unwrap();
    let mut mid = None;
    for n in 1..=1_001 {
        next_event(&mut events).await;
        if n == 101 {
            mid = Some((fds(), rss_kib()));
        }
    }
    let (fds_mid, rss_mid) = mid.unwrap();
    let (fds_end, rss_end) = (fds(), rss_kib());
    director.shutdown("soak over").await;
    drop(events);
    let fds1 = fds();
    println!(
        "restart soak: 1,000 restarts; descriptors {fds0} -> {fds_mid} (after 100) -> {fds_end} (after 1,000) -> {fds1} (after shutdown); RSS {rss0} -> {rss_mid} -> {rss_end} KiB"
    );
    // While running: the same descriptors after 100 restarts and after
    // 1,000 (give or take the child of the moment's pipes).
    assert!(fds_end.abs_diff(fds_mid) <= 4, "{fds_mid} -> {fds_end}");
    assert!(
        rss_end < rss_mid + 4 * 1024,
        "RSS grew from {rss_mid} to {rss_end} KiB"
    );
    eventually("the director's descriptors are closed", || fds() == fds0).await;
    // The director's watchdog is collected when it has gone: give it time.
    let mut zombies = Vec::new();
    eventually("no zombie is left", || {
        zombies = our_zombies();
        zombies.is_empty()
    })
    .await;
}

/// What `tests/contain/daemon.sh` leaves: pids still in /proc (alive, or a
/// zombie nobody reaped).
fn present(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect()
}

/// Our own children that are zombies (pid and name).
fn our_zombies() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        if fields[0] == "Z" && fields[1] == me {
            out.push(stat.split(')').next().unwrap().to_string() + ")");
        }
    }
    out
}

#[actix_rt::test]
async fn a_thousand_restarts_that_each_leave_a_daemon_leave_none() {
    let _alone = ALONE.lock().await;
    batch_of(1).await;
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let pids = || -> Vec<u32> {
        std::fs::read_to_string(&pids_file)
            .unwrap_or_default()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect()
    };
    // Whatever happens, the daemons die with the test.
    struct KillAll<F: Fn() -> Vec<u32>>(F);
    impl<F: Fn() -> Vec<u32>> Drop for KillAll<F> {
        fn drop(&mut self) {
            for pid in (self.0)() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _kill_all = KillAll(pids);

    let (fds0, rss0) = (fds(), rss_kib());
    let director = Director::start();
    let mut events = tap(
        &director,
        EventFilter::all().kinds([procession::Kind::Spawned]),
    )
    .await;
    let restart = RestartSpec {
        policy: RestartPolicy::OnFailure,
        max: u32::MAX,
        within: Duration::from_secs(1),
        backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };
    let daemon = concat!(env!("CARGO_MANIFEST_DIR"), "/contain/daemon.sh");
    let d = dir.path().to_str().unwrap();
    director
        .add(
            procession::ChildSpec::new("d", ["sh", daemon, "double-fork", d, "crash"])
                .restart(restart),
        )
        .await
        .unwrap();
    let mut mid = None;
    for n in 1..=1_001 {
        next_event(&mut events).await;
        if n == 101 {
            mid = Some((fds(), rss_kib()));
        }
    }
    let (fds_mid, rss_mid) = mid.unwrap();
    let (fds_end, rss_end) = (fds(), rss_kib());
    // Each daemon went with its instance: at most the current one's is here.
    let so_far = pids();
    let during = present(&so_far);
    director.shutdown("soak over").await;
    drop(events);
    let after = present(&pids());

    println!(
        "containment soak: 1,000 restarts, {} daemons; {} present while running, {} after; descriptors {fds0} -> {fds_mid} -> {fds_end}; RSS {rss0} -> {rss_mid} -> {rss_end} KiB",
        so_far.len(),
        during.len(),
        after.len()
    );
    assert!(
        so_far.len() >= 1_000,
        "only {} daemons started",
        so_far.len()
    );
    assert!(
        during.len() <= 1,
        "daemons outlived their instance: {during:?}"
    );
    assert_eq!(after, Vec::<u32>::new(), "daemons outlived the run");
    assert!(fds_end.abs_diff(fds_mid) <= 4, "{fds_mid} -> {fds_end}");
    assert!(
        rss_end < rss_mid + 4 * 1024,
        "RSS grew from {rss_mid} to {rss_end} KiB"
    );
    eventually("the director's descriptors are closed", || fds() == fds0).await;
    // The director's watchdog is collected when it has gone: give it time.
    let mut zombies = Vec::new();
    eventually("no zombie is left", || {
        zombies = our_zombies();
        zombies.is_empty()
    })
    .await;
}
