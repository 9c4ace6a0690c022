//! procession's benchmark suite: every workload against a raw baseline
//! written in plain Rust (std or tokio, no actors) doing the same work in the
//! same run, because absolute times on a shared machine drift.
//!
//! ```text
//! cargo bench -p procession-tests --bench suite                  # all workloads
//! cargo bench -p procession-tests --bench suite -- relay rtt     # some
//! cargo bench -p procession-tests --bench suite -- --write BENCHMARKS.md
//! ```
//!
//! `scripts/bench` runs the whole suite and writes `BENCHMARKS.md`. Under
//! `cargo test` (no `--bench` argument) every workload runs once at a tiny
//! size and checks its own results, so the suite keeps working, not only
//! compiling.

mod batch;
mod check;
mod director;
mod heap;
mod report;
mod tap;

use std::path::PathBuf;

use report::Row;

#[global_allocator]
static HEAP: heap::Counting = heap::Counting;

/// How big each workload is: the issue's sizes, or a quick check.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub full: bool,
    pub spawn_jobs: usize,
    pub capture_mib: usize,
    pub relay_lines: usize,
    pub round_trips: usize,
    pub scale_children: usize,
    pub restarts: usize,
    pub subscribers: usize,
    /// Interleaved repetitions of the cheap workloads (the median is kept).
    pub runs: usize,
}

impl Size {
    const FULL: Size = Size {
        full: true,
        spawn_jobs: 2_000,
        capture_mib: 64,
        relay_lines: 1_000_000,
        round_trips: 10_000,
        scale_children: 5_000,
        restarts: 1_000,
        subscribers: 100,
        runs: 3,
    };
    const SMOKE: Size = Size {
        full: false,
        spawn_jobs: 40,
        capture_mib: 2,
        relay_lines: 20_000,
        round_trips: 200,
        scale_children: 20,
        restarts: 20,
        subscribers: 5,
        runs: 1,
    };
}

/// The workloads, in the order they run and are reported.
const WORKLOADS: &[&str] = &[
    "spawn",
    "batch-cli",
    "capture",
    "output-dir",
    "relay",
    "terminal",
    "rtt",
    "scale",
    "restart",
    "fanout",
    "check",
];

/// The fixture program (see `tests/fixture.rs`); its modes are the children.
pub fn fixture() -> &'static str {
    env!("CARGO_BIN_EXE_procession-fixture")
}

pub fn fixture_argv(args: &[&str]) -> Vec<String> {
    std::iter::once(fixture())
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = if args.iter().any(|a| a == "--bench") {
        Size::FULL
    } else {
        Size::SMOKE
    };
    let mut write = None;
    let mut only = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--write" => write = Some(PathBuf::from(iter.next().expect("--write PATH"))),
            "--bench" => {}
            "--help" | "-h" => {
                println!("usage: suite [--bench] [--write BENCHMARKS.md] [WORKLOAD...]");
                println!("workloads: {}", WORKLOADS.join(" "));
                return;
            }
            name if WORKLOADS.contains(&name) => only.push(name.to_string()),
            other => panic!("unknown argument {other:?}; workloads: {WORKLOADS:?}"),
        }
    }
    report::raise_fd_limit();

    let system = actix::System::new();
    let rows: Vec<Row> = system.block_on(async move {
        let mut rows = Vec::new();
        for &name in WORKLOADS {
            if !only.is_empty() && !only.iter().any(|o| o == name) {
                continue;
            }
            eprintln!("== {name}");
            let started = std::time::Instant::now();
            let mut got = match name {
                "spawn" => vec![batch::spawn(size).await],
                "batch-cli" => vec![batch::batch_cli(size).await],
                "capture" => vec![batch::capture(size).await],
                "output-dir" => vec![batch::output_dir(size).await],
                "relay" => director::relay(size).await,
                "terminal" => vec![director::terminal(size).await],
                "rtt" => director::round_trips(size).await,
                "scale" => vec![director::scale(size).await],
                "restart" => vec![director::restart(size).await],
                "fanout" => vec![director::fan_out(size).await],
                "check" => vec![check::check(size)],
                _ => unreachable!(),
            };
            for row in &got {
                eprintln!("{}", row.plain());
            }
            eprintln!("   ({:.1} s)", started.elapsed().as_secs_f64());
            rows.append(&mut got);
        }
        rows
    });
    if let Some(path) = write {
        report::write(&path, &rows).expect("cannot write the report");
        eprintln!("wrote {}", path.display());
    }
}
