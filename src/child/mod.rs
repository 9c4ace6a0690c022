//! [`ChildActor`]: one OS process, its pipes, its frames, and a clean end.
//!
//! ```text
//!             Write / GetStdin ──► bounded queue ──► writer task ──► stdin
//!  owner ◄── ChildEvents batches ◄── output pump ◄── stdout, stderr (frames)
//!             Stop / SendSignal ──► process group (signal, grace, SIGKILL)
//!                        waiter ◄── exit status (tokio reaps; no waitpid(-1))
//! ```
//!
//! The actor lives exactly as long as its process: it reports
//! [`ChildEventKind::Spawned`] first and [`ChildEventKind::Exited`] last, after
//! every frame, then stops. A restart is a new actor built from the spec.

mod lifecycle;
pub(crate) mod messages;
mod output;
mod spawn;
mod stdin;
mod stop;
mod terminal;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use tokio::sync::oneshot;

pub use messages::{
    ChildEvent, ChildEventKind, ChildEvents, CloseStdin, GetStdin, SendSignal, Stop, WaitExit,
    Write,
};
pub(crate) use messages::{Exit, ExitStatus, Stream};
pub(crate) use spawn::{ChunkFlags, Options as SpawnOptions};
#[cfg(test)]
pub(crate) use stdin::StdinCmd;
pub use stdin::StdinSender;

use crate::error::{ChildError, SpawnError};
use crate::spec::ChildSpec;
use crate::{sys, Signal};
use lifecycle::{Lifecycle, Next};
use stop::{ProcessGroup, StopOutcome};

/// The actor that owns one child process.
///
/// Start it with [`ChildActor::start`] inside an actix `System`. It sends
/// everything that happens to the child, in order, to its owner as
/// [`ChildEvents`] batches, and takes [`Write`], [`CloseStdin`], [`Stop`],
/// [`SendSignal`], [`GetStdin`] and [`WaitExit`].
///
/// Guarantees:
/// - The child leads its own process group and gets SIGKILL if the thread
///   that spawned it dies (spawn from a long-lived arbiter, such as the
///   system's).
/// - Every frame is delivered before the `Exited` event. All the child
///   wrote before it exited is read, however long that takes. If something
///   else (a grandchild) holds a pipe open past the spec's `drain` time
///   after that, it is killed with the rest of the group, what it wrote
///   after the child's exit may be cut off, and [`Exit::output_complete`]
///   is false.
/// - When the leader has exited and its exit was reported, whatever is left
///   in its process group is killed: nothing outlives the actor. Dropping the
///   actor (its system stopping) kills the group too.
///
/// ```
/// use actix::prelude::*;
/// use procession::child::{ChildActor, ChildEventKind, ChildEvents, CloseStdin, WaitExit, Write};
/// use procession::ChildSpec;
///
/// struct Printer;
/// impl Actor for Printer { type Context = Context<Self>; }
/// impl Handler<ChildEvents> for Printer {
///     type Result = ();
///     fn handle(&mut self, batch: ChildEvents, _: &mut Context<Self>) {
///         for event in batch.events {
///             if let ChildEventKind::Output { frame, .. } = event.kind {
///                 println!("{}: {}", batch.child, frame.as_line().unwrap_or(""));
///             }
///         }
///     }
/// }
///
/// #[actix::main]
/// async fn main() {
///     let printer = Printer.start();
///     let sort = ChildActor::start(ChildSpec::new("sort", ["sort"]), printer.recipient())
///         .expect("sort starts");
///     sort.send(Write("pear\napple\n".into())).await.unwrap().unwrap();
///     sort.do_send(CloseStdin); // sort answers at EOF
///     let exit = sort.send(WaitExit).await.unwrap().unwrap();
///     assert!(exit.status.success());
/// }
/// ```
pub struct ChildActor {
    spec: Arc<ChildSpec>,
    pid: u32,
    owner: Recipient<ChildEvents>,
    seq: Rc<Cell<u64>>,
    started: Instant,
    stdin: Option<StdinSender>,
    life: Lifecycle,
    sent: Vec<Signal>,
    pump: Option<SpawnHandle>,
    drain: Rc<output::Drain>,
    exit: Option<Exit>,
    waiters: Vec<oneshot::Sender<Exit>>,
    /// The pipe budget its grown pipes hold, given back with the actor.
    _pipes: Vec<sys::PipeGrant>,
    /// A terminal child's master end (see `spawn::Spawned::terminal`).
    _terminal: Option<std::os::fd::OwnedFd>,
}

impl ChildActor {
    /// Spawns the process and starts its actor on the current arbiter.
    ///
    /// Fails, with nothing left running, when the process cannot be started
    /// (program not found or not executable, bad working directory).
    ///
    /// # Panics
    /// Outside a running actix `System`.
    pub fn start(
        spec: impl Into<Arc<ChildSpec>>,
        owner: Recipient<ChildEvents>,
    ) -> Result<Addr<ChildActor>, SpawnError> {
        Self::spawn(spec, owner).map(|started| started.addr)
    }

    /// Like [`ChildActor::start`], and also returns the pid and a sender for
    /// the child's stdin, for owners that write without going through the
    /// actor.
    pub fn spawn(
        spec: impl Into<Arc<ChildSpec>>,
        owner: Recipient<ChildEvents>,
    ) -> Result<Started, SpawnError> {
        Self::spawn_with(spec, owner, SpawnOptions::default())
    }

    /// [`ChildActor::spawn`] with parts left out by owners that do not need
    /// them (a director or batch whose watchdog covers the child).
    pub(crate) fn spawn_with(
        spec: impl Into<Arc<ChildSpec>>,
        owner: Recipient<ChildEvents>,
        options: SpawnOptions,
    ) -> Result<Started, SpawnError> {
        let spec = spec.into();
        let with_stdin = options.stdin;
        let spawned = spawn::spawn(&spec, options)?;
        let pid = spawned.pid;
        tracing::debug!(child = %spec.name, pid, "spawned");
        let stdin = match spawned.stdin {
            Some(pipe) => {
                stdin::start_writer(spec.name.clone(), spec.framing, spec.stdin_queue, pipe)
            }
            None => StdinSender::without_pipe(spec.name.clone(), spec.framing),
        };
        let stdin_for_actor = with_stdin.then(|| stdin.clone());
        let addr = ChildActor::create(move |ctx| {
            let name = spec.name.clone();
            owner.do_send(ChildEvents {
                child: name.clone(),
                events: vec![ChildEvent {
                    seq: 0,
                    kind: ChildEventKind::Spawned { pid },
                }],
            });
            let seq = Rc::new(Cell::new(1));
            let drain = Rc::new(output::Drain::new(&spawned.sources));
            let pump = output::pump(
                name,
                owner.clone(),
                seq.clone(),
                spawned.sources,
                drain.clone(),
                spec.frame_cap,
            );
            let pump = ctx.spawn(fut::wrap_future::<_, Self>(pump).map(|complete, act, ctx| {
                let next = if complete {
                    act.life.drained()
                } else {
                    act.life.drain_expired()
                };
                act.advance(next, ctx);
            }));
            let mut child = spawned.child;
            ctx.spawn(
                fut::wrap_future::<_, Self>(async move { child.wait().await }).map(
                    |status, act, ctx| {
                        // Collected: the pid is no longer our child's.
                        sys::collected(act.pid);
                        let status = match status {
                            Ok(s) => ExitStatus::from_std(s),
                            Err(e) => {
                                tracing::error!(child = %act.spec.name, error = %e, "cannot collect the exit status");
                                ExitStatus::Unknown
                            }
                        };
                        let next = act.life.leader_exited(status);
                        act.advance(next, ctx);
                    },
                ),
            );
            ChildActor {
                spec,
                pid,
                owner,
                seq,
                started: Instant::now(),
                stdin: stdin_for_actor,
                life: Lifecycle::default(),
                sent: Vec::new(),
                pump: Some(pump),
                drain,
                exit: None,
                waiters: Vec::new(),
                _pipes: spawned.pipes,
                _terminal: spawned.terminal,
            }
        });
        Ok(Started { addr, pid, stdin })
    }

    fn advance(&mut self, next: Next, ctx: &mut Context<Self>) {
        match next {
            Next::Wait => {}
            // The pump reads what the child left in the pipes, then gives
            // whoever else holds them `drain` to close them; its end
            // finishes us.
            Next::Drain => self.drain.leader_exited(self.spec.drain),
            Next::Finish { output_complete } => self.finish(output_complete, ctx),
        }
    }

    fn finish(&mut self, output_complete: bool, ctx: &mut Context<Self>) {
        if let Some(pump) = self.pump.take() {
            ctx.cancel_future(pump);
        }
        if !output_complete {
            tracing::warn!(child = %self.spec.name, drain = ?self.spec.drain,
                "a pipe is still open after the child exited (a grandchild holds it?); output may be incomplete");
        }
        // Whatever is left of the group dies with its leader.
        // (One signal: a group that is gone costs an ESRCH, not a scan.)
        let _ = sys::signal_group(self.pid, Signal::Kill);
        let status = self.life.status().unwrap_or(ExitStatus::Unknown);
        let requested = self.life.stop_requested()
            || matches!(status, ExitStatus::Signal(s) if self.sent.contains(&s));
        let exit = Exit {
            status,
            requested,
            output_complete,
            runtime: self.started.elapsed(),
        };
        tracing::debug!(child = %self.spec.name, pid = self.pid, %status, "exited");
        let n = self.seq.get();
        self.seq.set(n + 1);
        // Every batch of the pump was handled (it awaits each send) or is
        // queued ahead of this one, so `Exited` comes last.
        self.owner.do_send(ChildEvents {
            child: self.spec.name.clone(),
            events: vec![ChildEvent {
                seq: n,
                kind: ChildEventKind::Exited(exit.clone()),
            }],
        });
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(exit.clone());
        }
        self.exit = Some(exit);
        self.stdin = None;
        ctx.stop();
    }

    fn wait_for_exit(&mut self) -> ResponseFuture<Result<Exit, ChildError>> {
        if let Some(exit) = &self.exit {
            let exit = exit.clone();
            return Box::pin(async move { Ok(exit) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        let child = self.spec.name.clone();
        Box::pin(async move { rx.await.map_err(|_| ChildError::Gone { child }) })
    }
}

/// A child that was just started by [`ChildActor::spawn`].
#[derive(Debug, Clone)]
pub struct Started {
    /// The actor.
    pub addr: Addr<ChildActor>,
    /// The process id, which is also its process group id.
    pub pid: u32,
    /// Writes to the child's stdin (closing it closes the stdin for all).
    pub stdin: StdinSender,
}

impl Actor for ChildActor {
    type Context = Context<Self>;
}

impl Drop for ChildActor {
    fn drop(&mut self) {
        // Reached without `finish` only when the actor is torn down early:
        // its system stopped, or it panicked (a bug). Take the whole group
        // down with it, and tell the owner, so that nobody waits for an exit
        // that no actor is left to report. (tokio reaps the process.)
        if self.exit.is_none() {
            let _ = sys::signal_group(self.pid, Signal::Kill);
            // tokio collects it later, without us: the pid is no longer
            // one procession should call its own.
            sys::collected(self.pid);
            let n = self.seq.get();
            self.seq.set(n + 1);
            let exit = Exit {
                status: ExitStatus::Unknown,
                requested: false,
                output_complete: false,
                runtime: self.started.elapsed(),
            };
            self.owner.do_send(ChildEvents {
                child: self.spec.name.clone(),
                events: vec![ChildEvent {
                    seq: n,
                    kind: ChildEventKind::Exited(exit),
                }],
            });
        }
    }
}

impl Handler<Stop> for ChildActor {
    type Result = ResponseFuture<Result<Exit, ChildError>>;

    fn handle(&mut self, msg: Stop, ctx: &mut Context<Self>) -> Self::Result {
        crate::fault::hit(crate::fault::Point::ChildStop);
        if self.life.begin_stop() {
            let grace = msg.grace.unwrap_or(self.spec.stop.grace);
            let signal = self.spec.stop.signal;
            let pid = self.pid;
            tracing::debug!(child = %self.spec.name, pid, %signal, ?grace, "stopping");
            ctx.spawn(
                fut::wrap_future::<_, Self>(async move {
                    stop::stop_group(&ProcessGroup(pid), signal, grace).await
                })
                .map(|outcome, act, ctx| {
                    if outcome == StopOutcome::Lingering {
                        tracing::error!(child = %act.spec.name, pid = act.pid,
                            "process group survives SIGKILL (stuck in the kernel?)");
                    }
                    let next = act.life.stop_done();
                    act.advance(next, ctx);
                }),
            );
        }
        self.wait_for_exit()
    }
}

impl Handler<WaitExit> for ChildActor {
    type Result = ResponseFuture<Result<Exit, ChildError>>;

    fn handle(&mut self, _: WaitExit, _: &mut Context<Self>) -> Self::Result {
        self.wait_for_exit()
    }
}

impl Handler<SendSignal> for ChildActor {
    type Result = Result<(), ChildError>;

    fn handle(&mut self, SendSignal(signal): SendSignal, _: &mut Context<Self>) -> Self::Result {
        let gone = || ChildError::Gone {
            child: self.spec.name.clone(),
        };
        if self.life.status().is_some() {
            return Err(gone());
        }
        match sys::signal_group(self.pid, signal) {
            Ok(true) => {
                self.sent.push(signal);
                Ok(())
            }
            Ok(false) => Err(gone()),
            Err(source) => Err(ChildError::Signal {
                child: self.spec.name.clone(),
                signal,
                source,
            }),
        }
    }
}

impl Handler<CloseStdin> for ChildActor {
    type Result = ();

    fn handle(&mut self, _: CloseStdin, ctx: &mut Context<Self>) {
        if let Some(stdin) = self.stdin.take() {
            ctx.spawn(fut::wrap_future(async move { stdin.close().await }));
        }
    }
}

impl Handler<Write> for ChildActor {
    type Result = ResponseFuture<Result<(), crate::error::StdinError>>;

    fn handle(&mut self, Write(data): Write, _: &mut Context<Self>) -> Self::Result {
        match &self.stdin {
            Some(stdin) => {
                let stdin = stdin.clone();
                Box::pin(async move { stdin.send(data).await })
            }
            None => {
                let child = self.spec.name.clone();
                Box::pin(async move { Err(crate::error::StdinError::Closed { child, data }) })
            }
        }
    }
}

impl Handler<GetStdin> for ChildActor {
    type Result = Option<StdinSender>;

    fn handle(&mut self, _: GetStdin, _: &mut Context<Self>) -> Self::Result {
        self.stdin.clone()
    }
}
