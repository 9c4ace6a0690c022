//! Batch runs: many keyed commands, a bounded number at a time, every
//! stdout, stderr and exit status collected, none deadlocked by a full pipe.
//!
//! ```no_run
//! use procession::batch::{Batch, BatchOptions, Job};
//!
//! #[actix::main]
//! async fn main() {
//!     let jobs = vec![
//!         Job::new("hello", ["echo", "hello"]),
//!         Job::new("date", ["date"]),
//!     ];
//!     let options = BatchOptions { concurrency: 8, ..BatchOptions::default() };
//!     let mut batch = Batch::start(jobs, options).unwrap();
//!     while let Some(result) = batch.next().await {
//!         println!("{}: {:?}", result.key, result.exit_code());
//!     }
//! }
//! ```

mod capture;
pub mod jobs;
mod runner;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

pub use capture::Output;

use crate::child::ExitStatus;
use crate::spec::ChildSpec;
use crate::Signal;

/// One job: a key and what to run (its output and stderr are captured; its
/// framing and stderr mode are set by the batch).
#[derive(Debug, Clone)]
pub struct Job {
    /// Unique within the batch; names the result (and the output files).
    pub key: String,
    /// What to run. Its stop spec is used when the job times out.
    pub spec: ChildSpec,
    /// What its stdin reads, then end of file (`None`: `/dev/null`).
    pub stdin: Option<bytes::Bytes>,
}

/// How a batch runs.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Jobs running at once (at least 1). Default: the number of CPUs.
    pub concurrency: usize,
    /// A job running longer is stopped (its whole group) and reported as
    /// timed out.
    pub timeout: Option<Duration>,
    /// A failed job (non-zero exit, a signal, or not startable) is run again
    /// up to this many times; the result is the last attempt's.
    pub retries: u32,
    /// Bytes of one stream kept in memory before it spills to a temporary
    /// file. Default 1 MiB.
    pub spill_threshold: usize,
    /// Write outputs to `DIR/KEY.stdout` and `DIR/KEY.stderr` instead
    /// (created if missing).
    pub output_dir: Option<PathBuf>,
    /// How long a job stopped for its timeout (or a cancel) has, after its
    /// stop signal, before its group is killed. Default 5s.
    pub grace: Duration,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            timeout: None,
            retries: 0,
            spill_threshold: 1 << 20,
            output_dir: None,
            grace: Duration::from_secs(5),
        }
    }
}

/// How one job ended.
#[derive(Debug)]
pub struct JobResult {
    /// The job's key.
    pub key: String,
    /// Its exit, if it started.
    pub status: Option<ExitStatus>,
    /// Why it could not start, if it could not.
    pub error: Option<String>,
    /// Everything it wrote to stdout.
    pub stdout: Output,
    /// Everything it wrote to stderr.
    pub stderr: Output,
    /// When it started, since the batch started.
    pub started: Duration,
    /// When its exit was collected, since the batch started.
    pub ended: Duration,
    /// It was stopped because it ran past the timeout.
    pub timed_out: bool,
    /// Runs, retries included.
    pub attempts: u32,
    /// All its output was read (false: a grandchild held a pipe open past
    /// the drain time after it exited, and was killed with its group).
    pub output_complete: bool,
}

impl JobResult {
    /// Its exit code, if it exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self.status {
            Some(ExitStatus::Code(c)) => Some(c),
            _ => None,
        }
    }

    /// The signal that killed it, if one did.
    pub fn signal(&self) -> Option<Signal> {
        match self.status {
            Some(ExitStatus::Signal(s)) => Some(s),
            _ => None,
        }
    }

    /// It exited with code 0, in time: a job stopped for running past the
    /// timeout failed, whatever its exit status (a program that exits 0 on
    /// SIGTERM).
    pub fn success(&self) -> bool {
        self.exit_code() == Some(0) && !self.timed_out
    }

    /// How long it ran.
    pub fn duration(&self) -> Duration {
        self.ended.saturating_sub(self.started)
    }

    /// Writes the result as one JSON line: `key`, `exit_code`, `signal`,
    /// `stdout`, `stderr` (exact text; `stdout_base64` / `stderr_base64`
    /// for output that is not UTF-8), `duration_ms`; with an output
    /// directory `stdout_path` / `stderr_path` instead of the texts; plus
    /// `timed_out`, `error`, `attempts` and `output_complete: false` when
    /// they say something. Large
    /// outputs are streamed from their spill files, not loaded.
    pub fn write_json_line(&self, out: &mut impl Write) -> io::Result<()> {
        let key = serde_json::to_string(&self.key)?;
        let code = serde_json::to_string(&self.exit_code())?;
        let signal = serde_json::to_string(&self.signal().map(|s| s.to_string()))?;
        write!(
            out,
            "{{\"key\":{key},\"exit_code\":{code},\"signal\":{signal}"
        )?;
        for (name, output) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            match output {
                Output::File { path, .. } => {
                    let path = serde_json::to_string(&path.display().to_string())?;
                    write!(out, ",\"{name}_path\":{path}")?;
                }
                // The exact text; output that is not UTF-8 is given as
                // base64 instead, so that no byte is lost.
                _ if output.is_utf8()? => {
                    write!(out, ",\"{name}\":\"")?;
                    output.write_json_contents(out)?;
                    out.write_all(b"\"")?;
                }
                _ => {
                    write!(out, ",\"{name}_base64\":\"")?;
                    output.write_base64_contents(out)?;
                    out.write_all(b"\"")?;
                }
            }
        }
        write!(out, ",\"duration_ms\":{}", self.duration().as_millis())?;
        if self.timed_out {
            out.write_all(b",\"timed_out\":true")?;
        }
        if let Some(error) = &self.error {
            write!(out, ",\"error\":{}", serde_json::to_string(error)?)?;
        }
        if self.attempts > 1 {
            write!(out, ",\"attempts\":{}", self.attempts)?;
        }
        if !self.output_complete {
            out.write_all(b",\"output_complete\":false")?;
        }
        out.write_all(b"}\n")
    }
}

/// A batch that cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Two jobs share a key.
    #[error("job key `{key}` is used twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// With an output directory, a key must make a file name.
    #[error("job key `{key}` cannot name a file in the output directory (it has `/`, or is empty, `.` or `..`)")]
    KeyNotAFileName {
        /// The key.
        key: String,
    },
    /// The output directory cannot be created.
    #[error("cannot create the output directory {}", dir.display())]
    OutputDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Whether `key` can name a file in the output directory.
pub(crate) fn names_a_file(key: &str) -> bool {
    !(key.is_empty() || key.contains('/') || key == "." || key == "..")
}

/// A running batch: its results arrive in completion order.
pub struct Batch {
    results: mpsc::UnboundedReceiver<JobResult>,
    addr: Addr<runner::BatchActor>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
}

impl Batch {
    /// Checks the jobs and starts running them: inside an actix `System` on
    /// the current arbiter, else (plain tokio, or no runtime) on a thread
    /// of its own that ends with the batch.
    pub fn start(
        jobs: impl IntoIterator<Item = Job>,
        options: BatchOptions,
    ) -> Result<Batch, BatchError> {
        let jobs: Vec<Job> = jobs.into_iter().collect();
        let mut seen = std::collections::HashSet::new();
        for job in &jobs {
            if !seen.insert(job.key.as_str()) {
                return Err(BatchError::DuplicateKey {
                    key: job.key.clone(),
                });
            }
            if options.output_dir.is_some() && !names_a_file(&job.key) {
                return Err(BatchError::KeyNotAFileName {
                    key: job.key.clone(),
                });
            }
        }
        Batch::begin(jobs, None, options)
    }

    /// Starts a batch whose jobs arrive on `jobs` as they come (lines read
    /// from a pipe, say): the first job starts as soon as it arrives, and
    /// a job is taken off the channel only when it can start, so the
    /// channel's capacity is the whole look-ahead. The batch ends once the
    /// channel is closed and every job is done.
    ///
    /// Keys should be unique; a job whose key is running or waiting already,
    /// or (with an output directory) cannot name a file, is not run and
    /// gets a result with an `error` instead. Runs where [`Batch::start`]
    /// does.
    pub fn start_stream(
        jobs: mpsc::Receiver<Job>,
        options: BatchOptions,
    ) -> Result<Batch, BatchError> {
        Batch::begin(Vec::new(), Some(jobs), options)
    }

    fn begin(
        jobs: Vec<Job>,
        incoming: Option<mpsc::Receiver<Job>>,
        options: BatchOptions,
    ) -> Result<Batch, BatchError> {
        if let Some(dir) = &options.output_dir {
            std::fs::create_dir_all(dir).map_err(|source| BatchError::OutputDir {
                dir: dir.clone(),
                source,
            })?;
        }
        let (tx, results) = mpsc::unbounded_channel();
        let failure = Arc::default();
        let shared = Arc::clone(&failure);
        let addr = crate::runtime::start("procession-batch", move |own_thread| {
            let mut batch = runner::BatchActor::new(jobs, incoming, options, tx, shared);
            batch.own_thread = own_thread;
            batch
        });
        Ok(Batch {
            results,
            addr,
            failure,
        })
    }

    /// Why the batch failed as a whole, if it did: one of its actors
    /// panicked (a bug), so every job was stopped and the results end early.
    /// Ask once [`Batch::next`] has returned `None`.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The next result to finish; `None` once every job is done.
    pub async fn next(&mut self) -> Option<JobResult> {
        self.results.recv().await
    }

    /// Stops the running jobs (their whole groups) and starts no more; their
    /// results are not reported. Results already finished still arrive.
    pub fn cancel(&self) {
        self.addr.do_send(runner::Cancel);
    }

    /// Every result, by key.
    pub async fn collect(mut self) -> BTreeMap<String, JobResult> {
        let mut all = BTreeMap::new();
        while let Some(r) = self.next().await {
            all.insert(r.key.clone(), r);
        }
        all
    }
}

/// The results as they finish, like [`Batch::next`]: the stream ends when
/// the batch has (every job reported, and what escaped them killed).
impl futures::Stream for Batch {
    type Item = JobResult;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<JobResult>> {
        self.results.poll_recv(cx)
    }
}
