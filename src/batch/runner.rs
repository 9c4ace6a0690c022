//! The actor that runs a batch: up to `concurrency` children at a time,
//! their output captured, results sent as they finish.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::prelude::*;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::capture::{Capture, Output};
use super::{BatchOptions, Job, JobResult};
use crate::child::{ChildActor, ChildEventKind, ChildEvents, SpawnOptions, Stop};
use crate::frame::{Frame, Framing};
use crate::spec::StderrMode;
use crate::sys::Watchdog;

/// Stop everything, start nothing more.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Cancel;

struct Running {
    job: Job,
    attempt: u32,
    addr: Addr<ChildActor>,
    pid: u32,
    stdout: Capture,
    stderr: Capture,
    started: std::time::Duration,
    timed_out: bool,
    write_error: Option<String>,
    /// When its process ended (what escaped it may still be being killed):
    /// a timeout after that no longer applies.
    ended: Option<std::time::Duration>,
}

pub(super) struct BatchActor {
    /// Jobs to start (first attempts and retries), in order.
    queue: VecDeque<(Job, u32)>,
    /// Where more jobs come from, if they stream in; `None` once it closed,
    /// and while `pulling` holds it.
    incoming: Option<mpsc::Receiver<Job>>,
    /// Waiting for the next job from `incoming`.
    pulling: bool,
    options: BatchOptions,
    running: HashMap<Arc<str>, Running>,
    results: mpsc::UnboundedSender<JobResult>,
    clock: Instant,
    cancelled: bool,
    /// Kills every job's process group if our process dies.
    watchdog: Option<Watchdog>,
    /// Containment of what escapes the jobs' groups (set at start).
    run: Option<crate::sys::Run>,
    /// The last jobs ended: what escaped them is being killed.
    ending: bool,
    /// Why the batch failed as a whole (an actor panicked: a bug).
    failure: Arc<Mutex<Option<String>>>,
    /// The thread's panic count when we started (see `crate::panics`).
    panics_before: u64,
    /// Set when the batch has a thread of its own: it ends with the batch.
    pub(super) own_thread: Option<crate::runtime::OwnThread>,
}

impl BatchActor {
    pub fn new(
        jobs: Vec<Job>,
        incoming: Option<mpsc::Receiver<Job>>,
        options: BatchOptions,
        results: mpsc::UnboundedSender<JobResult>,
        failure: Arc<Mutex<Option<String>>>,
    ) -> BatchActor {
        BatchActor {
            queue: jobs.into_iter().map(|j| (j, 1)).collect(),
            incoming,
            pulling: false,
            options,
            running: HashMap::new(),
            results,
            clock: Instant::now(),
            cancelled: false,
            watchdog: None,
            run: None,
            ending: false,
            failure,
            panics_before: 0,
            own_thread: None,
        }
    }

    fn captures(&self, key: &str) -> std::io::Result<(Capture, Capture)> {
        Ok(match &self.options.output_dir {
            Some(dir) => (
                Capture::to_file(dir.join(format!("{key}.stdout")))?,
                Capture::to_file(dir.join(format!("{key}.stderr")))?,
            ),
            None => (
                Capture::memory(self.options.spill_threshold),
                Capture::memory(self.options.spill_threshold),
            ),
        })
    }

    /// Starts jobs until the limit is reached, taking streamed jobs only
    /// as there is room for them; stops when all are done.
    fn fill(&mut self, ctx: &mut Context<Self>) {
        while !self.cancelled && self.running.len() < self.options.concurrency.max(1) {
            if let Some((job, attempt)) = self.queue.pop_front() {
                self.launch(job, attempt, ctx);
                continue;
            }
            match self.incoming.as_mut().map(|rx| rx.try_recv()) {
                Some(Ok(job)) => self.arrived(job),
                Some(Err(TryRecvError::Empty)) => {
                    self.pull(ctx);
                    break;
                }
                Some(Err(TryRecvError::Disconnected)) => self.incoming = None,
                None => break,
            }
        }
        let more = !self.queue.is_empty() || self.incoming.is_some() || self.pulling;
        if self.running.is_empty() && (self.cancelled || !more) && !self.ending {
            // The batch ends once what escaped its jobs is gone.
            self.ending = true;
            let killed = self.run.as_ref().map(|run| run.kill_all());
            ctx.wait(
                fut::wrap_future::<_, Self>(futures::future::OptionFuture::from(killed)).map(
                    |_, act, ctx| {
                        if let Some(watchdog) = &act.watchdog {
                            watchdog.clean_end();
                        }
                        ctx.stop();
                    },
                ),
            );
        }
    }

    /// Waits for the next streamed job (the channel goes with the wait).
    fn pull(&mut self, ctx: &mut Context<Self>) {
        let Some(mut rx) = self.incoming.take() else {
            return;
        };
        self.pulling = true;
        let next = async move {
            let job = rx.recv().await;
            (job, rx)
        };
        ctx.spawn(
            fut::wrap_future::<_, Self>(next).map(|(job, rx), act, ctx| {
                act.pulling = false;
                // Cancelled meanwhile: the channel is dropped, and the
                // sender learns that no more jobs are wanted.
                if let (Some(job), false) = (job, act.cancelled) {
                    act.incoming = Some(rx);
                    act.arrived(job);
                }
                act.fill(ctx);
            }),
        );
    }

    /// A streamed job: queued, or refused with a result that says why.
    fn arrived(&mut self, job: Job) {
        let key = job.key.as_str();
        let refusal =
            if self.running.contains_key(key) || self.queue.iter().any(|(j, _)| j.key == key) {
                Some(format!("job key `{key}` is used twice"))
            } else if self.options.output_dir.is_some() && !super::names_a_file(key) {
                Some(format!(
                    "job key `{key}` cannot name a file in the output directory"
                ))
            } else {
                None
            };
        match refusal {
            Some(error) => {
                let now = self.clock.elapsed();
                self.give_up(job, 0, now, error);
            }
            None => self.queue.push_back((job, 1)),
        }
    }

    fn launch(&mut self, job: Job, attempt: u32, ctx: &mut Context<Self>) {
        let started = self.clock.elapsed();
        let mut spec = job.spec.clone();
        spec.name = Arc::from(job.key.as_str());
        spec.framing = Framing::Bytes;
        spec.stderr = StderrMode::Events;
        spec.frame_cap = 64 * 1024;
        spec.stop.grace = self.options.grace;
        let (mut stdout, mut stderr) = match self.captures(&job.key) {
            Ok(c) => c,
            Err(e) => {
                return self.failed_to_start(
                    job,
                    attempt,
                    started,
                    format!("cannot create its output files: {e}"),
                )
            }
        };
        // A job without input gets /dev/null, so one that reads it sees
        // end of file instead of waiting forever.
        let options = SpawnOptions {
            parent_death_signal: self.watchdog.is_none(),
            stdin: job.stdin.is_some(),
            marker: self.run.as_ref().map(|run| run.marker(&job.key)),
            log_dir: None, // outputs are captured (or go to --output-dir)
            chunks: None,
            // An output file is the job's own stdout or stderr: no pipe,
            // no copy (a terminal's output is read and written as usual).
            stdout_file: spec
                .terminal
                .is_none()
                .then(|| stdout.hand_over())
                .flatten(),
            stderr_file: spec
                .terminal
                .is_none()
                .then(|| stderr.hand_over())
                .flatten(),
        };
        match ChildActor::spawn_with(spec, ctx.address().recipient(), options) {
            Ok(child) => {
                if let Some(watchdog) = &self.watchdog {
                    watchdog.watch(child.pid);
                }
                if let Some(input) = job.stdin.clone() {
                    // Written beside the job (it may read slowly), then
                    // closed; a job that exits without reading it all
                    // just loses the rest.
                    let stdin = child.stdin.clone();
                    ctx.spawn(
                        async move {
                            if stdin.send(input).await.is_ok() {
                                stdin.close().await;
                            }
                        }
                        .into_actor(self),
                    );
                }
                let addr = child.addr;
                if let Some(limit) = self.options.timeout {
                    let key: Arc<str> = Arc::from(job.key.as_str());
                    ctx.run_later(limit, move |act, _| {
                        if let Some(r) = act
                            .running
                            .get_mut(&key)
                            .filter(|r| r.attempt == attempt && r.ended.is_none())
                        {
                            r.timed_out = true;
                            r.addr.do_send(Stop::default());
                        }
                    });
                }
                let key = Arc::from(job.key.as_str());
                self.running.insert(
                    key,
                    Running {
                        job,
                        attempt,
                        addr,
                        pid: child.pid,
                        stdout,
                        stderr,
                        started,
                        timed_out: false,
                        write_error: None,
                        ended: None,
                    },
                );
            }
            Err(e) => self.failed_to_start(job, attempt, started, e.to_string()),
        }
    }

    fn failed_to_start(
        &mut self,
        job: Job,
        attempt: u32,
        started: std::time::Duration,
        error: String,
    ) {
        if attempt <= self.options.retries {
            self.queue.push_front((job, attempt + 1));
            return;
        }
        self.give_up(job, attempt, started, error);
    }

    /// The result of a job that never ran.
    fn give_up(&mut self, job: Job, attempt: u32, started: std::time::Duration, error: String) {
        let empty = |name: &str| match &self.options.output_dir {
            Some(dir) => Output::File {
                path: dir.join(format!("{}.{name}", job.key)),
                len: 0,
            },
            None => Output::Memory(Vec::new()),
        };
        let result = JobResult {
            key: job.key.clone(),
            status: None,
            error: Some(error),
            stdout: empty("stdout"),
            stderr: empty("stderr"),
            started,
            ended: self.clock.elapsed(),
            timed_out: false,
            attempts: attempt,
            output_complete: true,
        };
        let _ = self.results.send(result);
    }
}

impl Actor for BatchActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A panic in one of our actors fails the batch (see `crate::panics`).
        let panics = crate::panics::watch();
        self.panics_before = crate::panics::count();
        ctx.add_stream(futures::stream::unfold(panics, |mut rx| async move {
            rx.recv().await.map(|text| (Panicked(text), rx))
        }));
        let run = crate::sys::Run::start();
        match Watchdog::start(run.id()) {
            Ok(watchdog) => {
                run.watched_by(watchdog.input());
                self.watchdog = Some(watchdog);
            }
            Err(e) => tracing::warn!(error = %e,
                "cannot start the watchdog: if this process is killed, grandchildren may outlive it"),
        }
        self.run = Some(run);
        self.fill(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Also a panic whose report had not reached us before the end.
        if std::thread::panicking() || crate::panics::count() > self.panics_before {
            let why = crate::panics::last();
            self.fail(why.as_deref().unwrap_or("the batch panicked"));
        }
        // What still runs is stopped (and the watchdog, whose pipe closes
        // with us, kills what is left).
        for r in self.running.values() {
            r.addr.do_send(Stop::default());
        }
    }
}

impl BatchActor {
    fn fail(&mut self, panic: &str) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert_with(|| crate::panics::reason(panic));
    }
}

/// A panic on the batch's thread.
#[derive(Message)]
#[rtype(result = "()")]
struct Panicked(Arc<str>);

impl StreamHandler<Panicked> for BatchActor {
    fn handle(&mut self, Panicked(text): Panicked, ctx: &mut Context<Self>) {
        tracing::error!(panic = %text, "the batch fails");
        self.fail(&text);
        self.cancel(ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<ChildEvents> for BatchActor {
    type Result = ();

    fn handle(&mut self, batch: ChildEvents, ctx: &mut Context<Self>) {
        for event in batch.events {
            let Some(r) = self.running.get_mut(&batch.child) else {
                continue;
            };
            match event.kind {
                ChildEventKind::Output {
                    stream,
                    frame: Frame::Bytes(bytes),
                    ..
                } => {
                    let capture = match stream {
                        crate::Stream::Stdout => &mut r.stdout,
                        crate::Stream::Stderr => &mut r.stderr,
                    };
                    if let Err(e) = capture.write(&bytes) {
                        r.write_error
                            .get_or_insert_with(|| format!("cannot store its output: {e}"));
                    }
                }
                ChildEventKind::Exited(exit) => {
                    r.ended = Some(self.clock.elapsed());
                    let pid = r.pid;
                    if let Some(watchdog) = &self.watchdog {
                        watchdog.unwatch(pid); // the child actor killed what was left
                    }
                    // A job is done when it ends: what escaped its group goes
                    // too, before its slot takes the next job.
                    let Some(run) = &self.run else {
                        self.job_ended(&batch.child, exit);
                        continue;
                    };
                    let killed = run.kill_child(run.marker(&batch.child), pid);
                    let key = batch.child.clone();
                    ctx.spawn(fut::wrap_future::<_, Self>(killed).map(move |_, act, ctx| {
                        act.job_ended(&key, exit);
                        act.fill(ctx);
                    }));
                }
                _ => {}
            }
        }
        self.fill(ctx);
    }
}

impl BatchActor {
    /// A job's process ended and what escaped it is gone: its result (or
    /// its retry).
    fn job_ended(&mut self, key: &Arc<str>, exit: crate::child::Exit) {
        let Some(r) = self.running.remove(key) else {
            return; // (a job ends once)
        };
        if self.cancelled {
            return;
        }
        let failed = !exit.status.success() || r.write_error.is_some();
        if failed && !r.timed_out && r.attempt <= self.options.retries {
            self.queue.push_front((r.job, r.attempt + 1));
            return;
        }
        let (stdout, stderr) = match (r.stdout.finish(), r.stderr.finish()) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => (
                Output::Memory(Vec::new()),
                Output::Memory(format!("{e}").into_bytes()),
            ),
        };
        let result = JobResult {
            key: r.job.key,
            status: Some(exit.status),
            error: r.write_error,
            stdout,
            stderr,
            started: r.started,
            ended: r.ended.unwrap_or_else(|| self.clock.elapsed()),
            timed_out: r.timed_out,
            attempts: r.attempt,
            output_complete: exit.output_complete,
        };
        let _ = self.results.send(result);
    }
}

impl Handler<Cancel> for BatchActor {
    type Result = ();

    fn handle(&mut self, _: Cancel, ctx: &mut Context<Self>) {
        self.cancel(ctx);
    }
}

impl BatchActor {
    fn cancel(&mut self, ctx: &mut Context<Self>) {
        self.cancelled = true;
        self.queue.clear();
        self.incoming = None;
        for r in self.running.values() {
            r.addr.do_send(Stop::default());
        }
        self.fill(ctx);
    }
}
