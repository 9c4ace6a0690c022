//! Batch throughput against a raw baseline, in the same run.
//!
//! `cargo bench --bench batch` prints:
//! - jobs/s for 500 short jobs at 8 in flight (piped stdio, own process
//!   group, output and exit status collected), procession's `Batch` against
//!   a plain tokio spawn-and-wait loop with the same settings;
//! - MiB/s and our peak RSS for 4 jobs writing 64 MiB each to stdout, sent
//!   to an output directory.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use procession::batch::{Batch, BatchOptions, Job};
use tokio::sync::Semaphore;

const JOBS: usize = 500;
const IN_FLIGHT: usize = 8;

fn short_job() -> Vec<String> {
    ["sh", "-c", "echo out; echo err >&2"]
        .map(String::from)
        .to_vec()
}

async fn raw_loop() -> f64 {
    let start = Instant::now();
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        let permit = permits.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let argv = short_job();
            let out = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .output()
                .await
                .unwrap();
            drop(permit);
            assert!(out.status.success() && out.stdout == b"out\n");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    JOBS as f64 / start.elapsed().as_secs_f64()
}

async fn with_batch() -> f64 {
    let start = Instant::now();
    let jobs = (0..JOBS)
        .map(|i| Job::new(i.to_string(), short_job()))
        .collect();
    let options = BatchOptions {
        concurrency: IN_FLIGHT,
        ..BatchOptions::default()
    };
    let results = Batch::start(jobs, options).unwrap().collect().await;
    assert!(results.values().all(|r| r.success()));
    JOBS as f64 / start.elapsed().as_secs_f64()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

async fn capture() -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let jobs = (0..4)
        .map(|i| {
            Job::new(
                format!("j{i}"),
                ["head", "-c", "67108864", "/dev/zero"]
                    .map(String::from)
                    .to_vec(),
            )
        })
        .collect();
    let options = BatchOptions {
        concurrency: 4,
        output_dir: Some(dir.path().to_path_buf()),
        ..BatchOptions::default()
    };
    let start = Instant::now();
    let results = Batch::start(jobs, options).unwrap().collect().await;
    let secs = start.elapsed().as_secs_f64();
    assert!(results.values().all(|r| r.stdout.len() == 64 << 20));
    (256.0 / secs, peak_rss_mib())
}

fn main() {
    let system = actix::System::new();
    system.block_on(async {
        // Warm up both paths once, then measure each three times, interleaved.
        raw_loop().await;
        with_batch().await;
        let (mut raw, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            raw.push(raw_loop().await);
            ours.push(with_batch().await);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (raw, ours) = (median(&mut raw), median(&mut ours));
        println!("spawn: {JOBS} short jobs, {IN_FLIGHT} in flight");
        println!("  raw tokio spawn-and-wait  {raw:8.0} jobs/s");
        println!(
            "  procession Batch          {ours:8.0} jobs/s   ratio {:.2}",
            ours / raw
        );
        let (mib_s, rss) = capture().await;
        println!("capture: 4 x 64 MiB to an output directory");
        println!("  {mib_s:.0} MiB/s, peak RSS of this process {rss:.1} MiB");
    });
}
