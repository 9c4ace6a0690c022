//! The output pump: reads stdout and stderr concurrently as frames and hands
//! them to the owner in numbered batches.
//!
//! Batches amortise the cost of an actor message over many frames. The next
//! batch is sent only after the owner handled the previous one: a slow owner
//! slows our reading and so, through the full pipe, the child, instead of
//! piling up memory here.
//!
//! After the leader exits, [`Drain`] tells the pump when it may stop before
//! the pipes close: never before it has read what was in them at the exit.

use std::cell::Cell;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix::Recipient;
use futures::{Future, FutureExt, StreamExt};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use super::messages::{ChildEvent, ChildEventKind, ChildEvents, Stream};
use crate::frame::{Decoded, FrameDecoder, Framing};

/// A pipe to read, boxed so that a child's stdout and our own merge pipe fit.
pub(crate) type Pipe = Pin<Box<dyn AsyncRead>>;

/// Frames per batch, at most.
const BATCH_FRAMES: usize = 1024;
/// Payload bytes per batch before it is sent (one frame may exceed it).
const BATCH_BYTES: usize = 256 * 1024;
/// Bytes read per `read` call, at most.
const READ_CAPACITY: usize = 64 * 1024;

/// Decoded items of one pipe, tagged with the pipe.
type Frames = futures::stream::LocalBoxStream<'static, (Stream, std::io::Result<Decoded>)>;

/// One pipe and how to cut it.
pub(crate) struct Source {
    pub stream: Stream,
    pub pipe: Pipe,
    /// The pipe's descriptor, owned by `pipe` (for [`Drain::leader_exited`]).
    pub fd: RawFd,
    pub framing: Framing,
    /// A terminal's output: escape sequences go, `\r\n` is `\n` (see
    /// `terminal::Clean`).
    pub clean: bool,
    /// Gets every byte read (after the cleaning), as it is read.
    pub log: Option<std::fs::File>,
    /// While set, whole lines come in chunks (see `FrameDecoder::chunks_when`).
    pub chunks: Option<Arc<AtomicBool>>,
}

/// A reader that copies what it reads into a log file. A write that fails
/// is reported once and the copying stops; the reading never does.
struct Tee {
    inner: Pipe,
    file: Option<std::fs::File>,
}

impl AsyncRead for Tee {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.inner.as_mut().poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(file)) = (&polled, self.file.as_mut()) {
            use std::io::Write;
            if let Err(e) = file.write_all(&buf.filled()[before..]) {
                tracing::warn!(error = %e, "cannot write a log file; it stops here");
                self.file = None;
            }
        }
        polled
    }
}

/// What the pump and its actor share about the end of the output.
///
/// When the leader exits, whatever is still in a pipe was written before
/// the exit: [`Drain::leader_exited`] marks, for each pipe, the byte count
/// the pump must reach to have read it all, and wakes the pump. Once it has
/// read up to every mark and delivered what it decoded, the pump waits at
/// most the drain time for the pipes to close (a grandchild may hold them)
/// and then stops. So the drain time bounds the wait for someone else's
/// pipe, never the reading of the child's own last output, however slow
/// the owner is.
pub(crate) struct Drain {
    pipes: Vec<PipeProgress>,
    /// Set when the leader exited: how long to wait for EOF after its output.
    after_exit: Cell<Option<Duration>>,
    wake: Notify,
}

struct PipeProgress {
    fd: RawFd,
    read: Cell<u64>,
    mark: Cell<u64>,
    eof: Cell<bool>,
}

impl Drain {
    pub fn new(sources: &[Source]) -> Drain {
        Drain {
            pipes: sources
                .iter()
                .map(|s| PipeProgress {
                    fd: s.fd,
                    read: Cell::new(0),
                    mark: Cell::new(0),
                    eof: Cell::new(false),
                })
                .collect(),
            after_exit: Cell::new(None),
            wake: Notify::new(),
        }
    }

    /// The leader exited: marks what is in the pipes now as output the pump
    /// must read, and lets it stop `drain` after that.
    ///
    /// Call it while the pump runs (so its pipes are open): the actor does,
    /// when the leader exits before the pipes reached EOF.
    pub fn leader_exited(&self, drain: Duration) {
        for p in self.pipes.iter().filter(|p| !p.eof.get()) {
            p.mark.set(p.read.get() + crate::sys::unread_bytes(p.fd));
        }
        self.after_exit.set(Some(drain));
        self.wake.notify_one();
    }

    /// Whether everything up to the marks has been read.
    fn own_output_read(&self) -> bool {
        self.pipes
            .iter()
            .all(|p| p.eof.get() || p.read.get() >= p.mark.get())
    }
}

/// A pipe that counts what is read from it into its [`Drain`] entry.
struct Counted {
    pipe: Pipe,
    drain: Rc<Drain>,
    index: usize,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.pipe.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = (buf.filled().len() - before) as u64;
            let p = &self.drain.pipes[self.index];
            p.read.set(p.read.get() + n);
            if n == 0 && buf.remaining() > 0 {
                p.eof.set(true);
            }
        }
        polled
    }
}

/// Reads every source to its end (or, after the leader's exit, at least up
/// to its mark: see [`Drain`]) and sends all it decodes to `owner`. `seq`
/// is the child's event counter, shared with the actor. Returns whether
/// every pipe reached its end.
pub(crate) async fn pump(
    child: Arc<str>,
    owner: Recipient<ChildEvents>,
    seq: Rc<Cell<u64>>,
    sources: Vec<Source>,
    drain: Rc<Drain>,
    cap: usize,
) -> bool {
    let mut streams = sources.into_iter().enumerate().map(|(index, s)| -> Frames {
        let stream = s.stream;
        let pipe = Counted {
            pipe: s.pipe,
            drain: drain.clone(),
            index,
        };
        // Counted inside the cleaning: the drain compares raw byte counts.
        let pipe: Pipe = if s.clean {
            Box::pin(super::terminal::Clean::new(pipe))
        } else {
            Box::pin(pipe)
        };
        let pipe: Pipe = match s.log {
            Some(file) => Box::pin(Tee {
                inner: pipe,
                file: Some(file),
            }),
            None => pipe,
        };
        let mut decoder = FrameDecoder::new(s.framing, cap);
        if let Some(flag) = s.chunks {
            decoder = decoder.chunks_when(flag);
        }
        let reader = FramedRead::with_capacity(pipe, decoder, READ_CAPACITY);
        Prompting::new(reader, s.framing == Framing::Lines)
            .map(move |item| (stream, item))
            .boxed_local()
    });
    // One pipe or two (stdout, stderr). `select` polls two streams by
    // turns; `select_all` would re-queue its stream after every frame.
    let Some(first) = streams.next() else {
        return true; // the child writes into files of its own
    };
    let mut frames = match streams.next() {
        Some(second) => futures::stream::select(first, second).boxed_local(),
        None => first,
    };
    let mut owner_gone = false;

    // When the wait for EOF after the child's own output ends.
    let mut deadline = None;
    loop {
        let next = match frames.next().now_or_never() {
            Some(next) => next,
            // Nothing ready: everything read so far is decoded and sent.
            None => match drain.after_exit.get() {
                None => tokio::select! {
                    next = frames.next() => next,
                    () = drain.wake.notified() => continue,
                },
                Some(wait) if drain.own_output_read() => {
                    let deadline = *deadline
                        .get_or_insert_with(|| crate::duration::later(Instant::now(), wait));
                    tokio::select! {
                        next = frames.next() => next,
                        () = tokio::time::sleep_until(deadline) => return false,
                    }
                }
                // The child's output is in the pipe: it comes.
                Some(_) => frames.next().await,
            },
        };
        let Some(first) = next else { return true };
        let mut events = Vec::with_capacity(64);
        let mut bytes = push(&seq, &mut events, first);
        while events.len() < BATCH_FRAMES && bytes < BATCH_BYTES {
            match frames.next().now_or_never() {
                Some(Some(item)) => bytes += push(&seq, &mut events, item),
                _ => break,
            }
        }
        if owner_gone {
            continue; // keep reading so the child never blocks on a full pipe
        }
        owner_gone = !deliver(&child, &owner, events).await;
    }
}

/// How long a begun line must stay unfinished, with nothing else arriving,
/// before its tail is published as a prompt. Programs write a line in more
/// than one piece now and then; a person's prompt waits far longer.
pub(crate) const PROMPT_SILENCE: Duration = Duration::from_millis(100);

/// A reader's frames, and, for `lines`, its unterminated tail as a
/// [`Decoded::Prompt`] once nothing more has arrived for [`PROMPT_SILENCE`].
/// The timer runs only while a begun line waits in the buffer.
struct Prompting {
    reader: FramedRead<Pipe, FrameDecoder>,
    lines: bool,
    /// The silence timer, and the buffered length it was armed for.
    silence: Pin<Box<tokio::time::Sleep>>,
    armed_for: Option<usize>,
}

impl Prompting {
    fn new(reader: FramedRead<Pipe, FrameDecoder>, lines: bool) -> Prompting {
        Prompting {
            reader,
            lines,
            silence: Box::pin(tokio::time::sleep(PROMPT_SILENCE)),
            armed_for: None,
        }
    }
}

impl futures::Stream for Prompting {
    type Item = std::io::Result<Decoded>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Poll::Ready(item) = this.reader.poll_next_unpin(cx) {
            this.armed_for = None;
            return Poll::Ready(item);
        }
        // Nothing more to read now (the reader will wake us when there is).
        let waiting = this.reader.read_buffer().len();
        if !this.lines || waiting == 0 {
            this.armed_for = None;
            return Poll::Pending;
        }
        if this.armed_for != Some(waiting) {
            // New bytes of the line came: the silence starts again.
            this.silence.as_mut().reset(Instant::now() + PROMPT_SILENCE);
            this.armed_for = Some(waiting);
        }
        std::task::ready!(this.silence.as_mut().poll(cx));
        this.armed_for = None;
        let mut buf = std::mem::take(this.reader.read_buffer_mut());
        let tail = this.reader.decoder_mut().take_tail(&mut buf);
        *this.reader.read_buffer_mut() = buf;
        match tail {
            Some(text) => Poll::Ready(Some(Ok(Decoded::Prompt { text }))),
            None => Poll::Pending, // an over-long line goes on in chunks
        }
    }
}

/// Sends one batch to the owner; false if the owner is gone.
async fn deliver(
    child: &Arc<str>,
    owner: &Recipient<ChildEvents>,
    events: Vec<ChildEvent>,
) -> bool {
    let batch = ChildEvents {
        child: child.clone(),
        events,
    };
    crate::fault::hit(crate::fault::Point::ChildOutput);
    if owner.send(batch).await.is_err() {
        tracing::debug!(child = %child, "owner is gone; output is read and dropped");
        return false;
    }
    true
}

/// Numbers one decoded item and appends it; returns its payload size.
fn push(
    seq: &Cell<u64>,
    events: &mut Vec<ChildEvent>,
    (stream, item): (Stream, std::io::Result<Decoded>),
) -> usize {
    let (kind, size) = match item {
        Ok(Decoded::Frame { frame, partial }) => {
            let size = match &frame {
                crate::Frame::Line(s) => s.len(),
                crate::Frame::Bytes(b) => b.len(),
                crate::Frame::Json(_) => 64, // a fair guess; exact size is not needed here
            };
            (
                ChildEventKind::Output {
                    stream,
                    frame,
                    partial,
                    prompt: false,
                },
                size,
            )
        }
        Ok(Decoded::Prompt { text }) => {
            let size = text.len();
            (
                ChildEventKind::Output {
                    stream,
                    frame: crate::Frame::Line(text),
                    partial: false,
                    prompt: true,
                },
                size,
            )
        }
        Ok(Decoded::Chunk { bytes, frames }) => {
            let size = bytes.len();
            (
                ChildEventKind::Chunk {
                    stream,
                    bytes,
                    frames,
                },
                size,
            )
        }
        Ok(Decoded::Oversized { limit }) => (ChildEventKind::Oversized { stream, limit }, 0),
        Ok(Decoded::Invalid { error, preview }) => (
            ChildEventKind::DecodeError {
                stream,
                error,
                preview,
            },
            0,
        ),
        Err(e) => (
            ChildEventKind::DecodeError {
                stream,
                error: format!("read failed: {e}"),
                preview: String::new(),
            },
            0,
        ),
    };
    let n = seq.get();
    seq.set(n + 1);
    events.push(ChildEvent { seq: n, kind });
    size
}
