//! `procession batch`: keyed commands, a bounded number at a time, one JSON
//! result line each, in completion order.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use procession::batch::{jobs, Batch, BatchOptions};
use procession::Signal;

/// Options of `procession batch`.
#[derive(clap::Args, Debug)]
pub struct BatchArgs {
    /// The jobs: a TOML or JSON file mapping key -> argv array, or `-` for
    /// one command a line on stdin.
    #[arg(value_name = "JOBS")]
    pub jobs: String,
    /// Jobs running at once [default: the number of CPUs].
    #[arg(short = 'j', long = "concurrency", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Write the result lines to this file instead of stdout.
    #[arg(long, value_name = "FILE.jsonl")]
    pub results: Option<PathBuf>,
    /// Write outputs to DIR/KEY.stdout and DIR/KEY.stderr (created if missing).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Stop a job that runs longer, e.g. 30s: its process group, then what
    /// escaped it (as when any job ends).
    #[arg(long, value_name = "DUR", value_parser = crate::parse_duration)]
    pub timeout: Option<Duration>,
    /// Run a failed job again, up to N more times.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,
    /// How long a timed-out job has after SIGTERM before its group is
    /// killed, e.g. 500ms.
    #[arg(long, value_name = "DUR", value_parser = crate::parse_duration, default_value = "5s")]
    pub grace: Duration,
}

/// Jobs read from stdin but not started yet: the look-ahead of `batch -`.
const STDIN_LOOKAHEAD: usize = 64;

/// The longest line `batch -` takes (a command, not a data file).
const MAX_LINE: u64 = 1 << 20;

pub fn batch(args: BatchArgs) -> u8 {
    // Jobs from a file are read and checked whole; from stdin they stream.
    let jobs = if args.jobs == "-" {
        None
    } else {
        match jobs::from_file(std::path::Path::new(&args.jobs)) {
            Ok(jobs) => Some(jobs),
            Err(errors) => {
                for e in errors {
                    errln!("{e}");
                }
                return 2;
            }
        }
    };
    let mut out: Box<dyn Write> = match &args.results {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                errln!("cannot create the results file {}: {e}", path.display());
                return 2;
            }
        },
        None => Box::new(std::io::stdout().lock()),
    };
    let mut options = BatchOptions {
        timeout: args.timeout,
        grace: args.grace,
        retries: args.retries,
        output_dir: args.output_dir,
        ..BatchOptions::default()
    };
    if let Some(n) = args.concurrency {
        options.concurrency = n as usize;
    }
    let progress = std::io::stderr().is_terminal().then(|| {
        let (bar, template) = match &jobs {
            Some(jobs) => (
                indicatif::ProgressBar::new(jobs.len() as u64),
                "{bar:30} {pos}/{len} done, {msg}  {per_sec}  eta {eta}",
            ),
            None => (
                indicatif::ProgressBar::no_length(),
                "{spinner} {pos} done, {msg}  {per_sec}",
            ),
        };
        bar.set_style(indicatif::ProgressStyle::with_template(template).expect("a valid template"));
        bar.set_message("0 failed");
        bar
    });
    let bad_lines = Arc::new(AtomicBool::new(false));

    System::new().block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let started = match jobs {
            Some(jobs) => Batch::start(jobs, options),
            None => {
                let (tx, rx) = tokio::sync::mpsc::channel(STDIN_LOOKAHEAD);
                let bad_lines = bad_lines.clone();
                std::thread::spawn(move || read_stdin_jobs(tx, &bad_lines));
                Batch::start_stream(rx, options)
            }
        };
        let mut batch = match started {
            Ok(b) => b,
            Err(e) => {
                errln!("{e}");
                return 2;
            }
        };
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            errln!("cannot listen for signals");
            return 2;
        };
        let mut failed = 0u64;
        let mut interrupted = None;
        loop {
            let result = tokio::select! {
                r = batch.next() => r,
                _ = int.recv(), if interrupted.is_none() => { interrupted = Some(Signal::Int); batch.cancel(); continue }
                _ = term.recv(), if interrupted.is_none() => { interrupted = Some(Signal::Term); batch.cancel(); continue }
            };
            let Some(result) = result else { break };
            if !result.success() {
                failed += 1;
            }
            let written = result.write_json_line(&mut out).and_then(|()| out.flush());
            if let Err(e) = written {
                errln!("cannot write the results: {e}");
                batch.cancel();
                return 2;
            }
            if let Some(bar) = &progress {
                bar.inc(1);
                bar.set_message(format!("{failed} failed"));
            }
        }
        if let Some(bar) = &progress {
            bar.finish();
        }
        if let Some(failure) = batch.failure() {
            errln!("the batch failed: {failure}");
            return 1;
        }
        match interrupted {
            Some(Signal::Int) => 130,
            Some(_) => 143,
            None if bad_lines.load(Ordering::Relaxed) => 2,
            None if failed > 0 => 1,
            None => 0,
        }
    })
}

/// Reads `batch -` jobs from stdin, one a line, and hands them on as the
/// batch takes them (the channel's capacity is the look-ahead). A bad line
/// is reported with its number and skipped; the rest still run, and the
/// batch exits 2 at the end. Stops at end of input, or when the batch no
/// longer wants jobs.
fn read_stdin_jobs(tx: tokio::sync::mpsc::Sender<procession::batch::Job>, bad_lines: &AtomicBool) {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        match (&mut input).take(MAX_LINE + 1).read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                errln!("stdin: cannot read the jobs: {e}");
                bad_lines.store(true, Ordering::Relaxed);
                return;
            }
        }
        if line.len() as u64 > MAX_LINE {
            errln!("stdin: line {number}: longer than {MAX_LINE} bytes; stopped reading");
            bad_lines.store(true, Ordering::Relaxed);
            return;
        }
        let parsed = match std::str::from_utf8(&line) {
            Ok(text) => jobs::from_line(text, number, "stdin"),
            Err(e) => {
                errln!("stdin: line {number}: not UTF-8 ({e})");
                bad_lines.store(true, Ordering::Relaxed);
                continue;
            }
        };
        match parsed {
            Ok(Some(job)) => {
                if tx.blocking_send(job).is_err() {
                    return; // the batch is over (cancelled)
                }
            }
            Ok(None) => {}
            Err(e) => {
                errln!("{e}");
                bad_lines.store(true, Ordering::Relaxed);
            }
        }
    }
}
