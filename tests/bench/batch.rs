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
        target: ">= 0.95",
        met: ratio >= 0.95,
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

/// 4 children each write `mib` MiB straight into a file of their own (it
/// is their stdout): the kernel's limit for this job.
async fn raw_output_dir(mib: usize, dir: &std::path::Path) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let file = std::fs::File::create(dir.join(format!("raw{i}.stdout"))).unwrap();
            let argv = fixture_argv(&["huge-line", &mib.to_string()]);
            tokio::spawn(async move {
                let status = tokio::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(Stdio::null())
                    .stdout(file)
                    .stderr(Stdio::null())
                    .process_group(0)
                    .kill_on_drop(true)
                    .status()
                    .await
                    .unwrap();
                assert!(status.success());
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for i in 0..4 {
        let len = std::fs::metadata(dir.join(format!("raw{i}.stdout")))
            .unwrap()
            .len();
        assert_eq!(len, (mib as u64) << 20);
    }
    (4 * mib) as f64 / start.elapsed().as_secs_f64()
}

async fn batch_output_dir(mib: usize, dir: &std::path::Path) -> (f64, f64) {
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
        output_dir: Some(dir.to_path_buf()),
        ..BatchOptions::default()
    };
    let start = Instant::now();
    let results = Batch::start(list, options).unwrap().collect().await;
    let secs = start.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    for r in results.values() {
        assert!(r.success() && r.output_complete, "{r:?}");
        assert_eq!(r.stdout.len(), (mib as u64) << 20);
    }
    ((4 * mib) as f64 / secs, peak)
}

pub async fn output_dir(size: Size) -> Row {
    let mib = size.capture_mib;
    let dir = tempfile::tempdir().unwrap();
    let (mut raw, mut ours, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    // Writing files is noisier than pipes here (page cache, writeback):
    // more runs, and the files go after each so no run writes over another's.
    let clear = || {
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
    };
    for _ in 0..size.runs.max(5) {
        let (rate, peak) = batch_output_dir(mib, dir.path()).await;
        clear();
        raw.push(raw_output_dir(mib, dir.path()).await);
        clear();
        ours.push(rate);
        peaks.push(peak);
    }
    let (raw, ours) = (median(&mut raw), median(&mut ours));
    let peak = peaks.iter().copied().fold(0.0, f64::max);
    let ratio = ours / raw;
    Row {
        workload: "output-dir",
        what: format!("4 children x {mib} MiB to stdout, `Batch` with an output directory"),
        baseline: format!(
            "each child's stdout is its file (tokio spawn): {:.2} GiB/s",
            raw / 1024.0
        ),
        figure: format!("{:.2} GiB/s, peak RSS {peak:.1} MiB", ours / 1024.0),
        ratio: Some(ratio),
        target: ">= 0.95, RSS <= 32 MiB",
        met: ratio >= 0.95 && peak <= 32.0,
    }
}

/// The `procession` binary beside the fixture (`scripts/bench` builds it;
/// under `cargo test` the workspace's tests do).
fn cli() -> Option<std::path::PathBuf> {
    let bin = std::path::Path::new(crate::fixture()).with_file_name("procession");
    bin.exists().then_some(bin)
}

/// Runs `program args` with `input` on its stdin and its stdout discarded;
/// jobs per second.
fn whole_process(program: &std::path::Path, args: &[&str], input: &str, jobs: usize) -> f64 {
    let start = Instant::now();
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{} {args:?}: {status}", program.display());
    jobs as f64 / start.elapsed().as_secs_f64()
}

pub async fn batch_cli(size: Size) -> Row {
    let jobs = size.spawn_jobs;
    let Some(cli) = cli() else {
        assert!(
            !size.full,
            "scripts/bench builds target/release/procession first"
        );
        eprintln!("   (skipped: no procession binary beside the fixture)");
        return Row {
            workload: "batch cli",
            what: "skipped".into(),
            baseline: "-".into(),
            figure: "-".into(),
            ratio: None,
            target: "-",
            met: true,
        };
    };
    let line = short_job().join(" ");
    let input: String = (0..jobs).map(|_| format!("{line}\n")).collect();
    let xargs = std::path::Path::new("xargs");
    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..size.runs {
        raw.push(whole_process(xargs, &["-P", "8", "-L", "1"], &input, jobs));
        let j = IN_FLIGHT.to_string();
        ours.push(whole_process(&cli, &["batch", "-j", &j, "-"], &input, jobs));
    }
    let (raw, ours) = (median(&mut raw), median(&mut ours));
    let ratio = ours / raw;
    Row {
        workload: "batch cli",
        what: format!("`procession batch -j 8 -` on {jobs} short jobs from stdin, results to /dev/null: the whole process"),
        baseline: format!("`xargs -P 8 -L 1`, which collects nothing: {raw:.0} jobs/s"),
        figure: format!("{ours:.0} jobs/s"),
        ratio: Some(ratio),
        target: ">= 0.85",
        met: ratio >= 0.85,
    }
}
