//! spawn and capture: procession's `Batch` against tokio spawn-and-wait.

use std::io::Write;
use std::os::fd::AsFd;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use procession::batch::{Batch, BatchOptions, Job};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use crate::report::{median, peak_rss_mib, reset_peak_rss, Row};
use crate::{fixture_argv, Size};

const IN_FLIGHT: usize = 8;

/// A short job that writes to both streams and exits 0.
fn short_job() -> Vec<String> {
    fixture_argv(&["mixed", "0"])
}

/// The same settings as a batch job: stdin from /dev/null, stdout and
/// stderr piped, its own process group, all output and the exit status
/// collected.
async fn raw_spawn(jobs: usize) -> f64 {
    let start = Instant::now();
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        let permit = permits.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let argv = short_job();
            let out = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true)
                .output()
                .await
                .unwrap();
            drop(permit);
            assert!(out.status.success() && out.stdout == b"out 0\n" && out.stderr == b"err 0\n");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    jobs as f64 / start.elapsed().as_secs_f64()
}

async fn batch_spawn(jobs: usize) -> f64 {
    let start = Instant::now();
    let list: Vec<Job> = (0..jobs)
        .map(|i| Job::new(i.to_string(), short_job()))
        .collect();
    let options = BatchOptions {
        concurrency: IN_FLIGHT,
        ..BatchOptions::default()
    };
    let results = Batch::start(list, options).unwrap().collect().await;
    assert_eq!(results.len(), jobs);
    for r in results.values() {
        assert!(r.success(), "{r:?}");
        assert_eq!(r.stdout.bytes().unwrap(), b"out 0\n");
        assert_eq!(r.stderr.bytes().unwrap(), b"err 0\n");
    }
    jobs as f64 / start.elapsed().as_secs_f64()
}

pub async fn spawn(size: Size) -> Row {
    let jobs = size.spawn_jobs;
    // Warm both paths once, then alternate so drift hits both alike.
    raw_spawn(jobs / 4).await;
    batch_spawn(jobs / 4).await;
    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..size.runs {
        raw.push(raw_spawn(jobs).await);
        ours.push(batch_spawn(jobs).await);
    }
    let (raw, ours) = (median(&mut raw), median(&mut ours));
    let ratio = ours / raw;
    Row {
        workload: "spawn",
        what: format!("{jobs} short jobs, {IN_FLIGHT} in flight, stdin /dev/null, stdout and stderr piped, own process group, output and status collected"),
        baseline: format!("tokio spawn-and-wait loop: {raw:.0} jobs/s"),
        figure: format!("`Batch`: {ours:.0} jobs/s"),
        ratio: Some(ratio),
        target: ">= 0.85",
        met: ratio >= 0.85,
    }
}

/// Reads one child's stdout into a temporary file, as batch capture does.
async fn raw_capture_one(mib: usize) -> u64 {
    let argv = fixture_argv(&["huge-line", &mib.to_string()]);
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let _ = nix::fcntl::fcntl(stdout.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    let mut file = tempfile::tempfile().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = stdout.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).unwrap();
        total += n as u64;
    }
    assert!(child.wait().await.unwrap().success());
    total
}

async fn raw_capture(mib: usize) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..4).map(|_| tokio::spawn(raw_capture_one(mib))).collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), (mib as u64) << 20);
    }
    (4 * mib) as f64 / start.elapsed().as_secs_f64()
}

async fn batch_capture(mib: usize) -> (f64, f64) {
    reset_peak_rss();
    let list: Vec<Job> = (0..4)
        .map(|i| {
            Job::new(
                format!("j{i}"),
                fixture_argv(&["huge-line", &mib.to_string()]),
            )
        })
        .collect();
    let options = BatchOptions {
        concurrency: 4,
        ..BatchOptions::default()
    };
    let start = Instant::now();
    let results = Batch::start(list, options).unwrap().collect().await;
    let secs = start.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    for r in results.values() {
        assert!(r.success(), "{r:?}");
        assert_eq!(r.stdout.len(), (mib as u64) << 20);
    }
    ((4 * mib) as f64 / secs, peak)
}

pub async fn capture(size: Size) -> Row {
    let mib = size.capture_mib;
    let (mut raw, mut ours, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..size.runs {
        raw.push(raw_capture(mib).await);
        let (rate, peak) = batch_capture(mib).await;
        ours.push(rate);
        peaks.push(peak);
    }
    let (raw, ours) = (median(&mut raw), median(&mut ours));
    let peak = peaks.iter().copied().fold(0.0, f64::max);
    let gib = ours / 1024.0;
    Row {
        workload: "capture",
        what: format!(
            "4 children x {mib} MiB to stdout, captured by `Batch` (spilled to temporary files)"
        ),
        baseline: format!(
            "tokio read into a temporary file, 1 MiB pipes: {:.2} GiB/s",
            raw / 1024.0
        ),
        figure: format!("{gib:.2} GiB/s, peak RSS {peak:.1} MiB"),
        ratio: Some(ours / raw),
        target: ">= 1.5 GiB/s, RSS <= 32 MiB",
        met: gib >= 1.5 && peak <= 32.0,
    }
}
