//! The child's stdin: a queue bounded in bytes in front of a writer task
//! that owns the pipe.
//!
//! `actix::io::FramedWrite` neither pushes back (a child that does not read
//! lets it pile up without bound) nor delivers EOF on close. Here each write
//! first takes as many permits of a semaphore as it has bytes (at most the
//! whole queue, so one large write can always go into an empty queue), and
//! the writer gives them back once the bytes are in the pipe: senders wait
//! while the queue is full. A `Close` marker ends the writer, which drops
//! the pipe after everything queued before it.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::error::StdinError;
use crate::frame::{Frame, Framing};

pub(crate) enum StdinCmd {
    /// Bytes, and the room they take until they are written.
    Data(Bytes, OwnedSemaphorePermit),
    Close,
}

/// A handle for writing to one child's stdin. Cheap to clone; all clones
/// feed the same queue, bounded in bytes, and writes from one task arrive
/// in order.
///
/// # Caveats
/// `Ok` means queued, not read: if the child exits or closes its stdin, what
/// is still queued is discarded.
#[derive(Debug, Clone)]
pub struct StdinSender {
    child: Arc<str>,
    framing: Framing,
    tx: mpsc::UnboundedSender<StdinCmd>,
    /// Free bytes in the queue.
    room: Arc<Semaphore>,
    /// The queue's size in bytes.
    capacity: usize,
}

impl std::fmt::Debug for StdinCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StdinCmd::Data(b, _) => write!(f, "Data({} bytes)", b.len()),
            StdinCmd::Close => f.write_str("Close"),
        }
    }
}

impl StdinSender {
    fn new(
        child: Arc<str>,
        framing: Framing,
        capacity: usize,
    ) -> (StdinSender, mpsc::UnboundedReceiver<StdinCmd>) {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        let (tx, rx) = mpsc::unbounded_channel();
        let sender = StdinSender {
            child,
            framing,
            tx,
            room: Arc::new(Semaphore::new(capacity)),
            capacity,
        };
        (sender, rx)
    }

    /// A sender for a child without a stdin pipe: every send fails as closed.
    pub(crate) fn without_pipe(child: Arc<str>, framing: Framing) -> StdinSender {
        let (sender, _) = StdinSender::new(child, framing, 1);
        sender.room.close();
        sender
    }

    /// The permits a write of `len` bytes takes.
    fn permits(&self, len: usize) -> u32 {
        len.clamp(1, self.capacity) as u32
    }

    /// Queues bytes as they are, waiting while the queue is full.
    ///
    /// # Cancel safety
    /// Cancelling the future before it resolves queues nothing.
    pub async fn send(&self, data: impl Into<Bytes>) -> Result<(), StdinError> {
        let data = data.into();
        let permits = self.permits(data.len());
        match self.room.clone().acquire_many_owned(permits).await {
            Ok(permit) => self.queue(data, permit),
            Err(_) => Err(self.closed(data)),
        }
    }

    /// Queues bytes if there is room now.
    pub fn try_send(&self, data: impl Into<Bytes>) -> Result<(), StdinError> {
        let data = data.into();
        let permits = self.permits(data.len());
        match self.room.clone().try_acquire_many_owned(permits) {
            Ok(permit) => self.queue(data, permit),
            Err(TryAcquireError::NoPermits) => Err(StdinError::Full {
                child: self.child.clone(),
                data,
            }),
            Err(TryAcquireError::Closed) => Err(self.closed(data)),
        }
    }

    fn queue(&self, data: Bytes, permit: OwnedSemaphorePermit) -> Result<(), StdinError> {
        self.tx
            .send(StdinCmd::Data(data, permit))
            .map_err(|e| match e.0 {
                StdinCmd::Data(data, _) => self.closed(data),
                StdinCmd::Close => unreachable!("we sent data"),
            })
    }

    /// Queues a frame encoded for the child's framing (see [`Frame::encode`]).
    pub async fn send_frame(&self, frame: &Frame) -> Result<(), StdinError> {
        self.send(frame.to_bytes(self.framing)).await
    }

    /// Closes stdin after everything queued so far is written. Later sends
    /// fail with [`StdinError::Closed`].
    pub async fn close(&self) {
        self.try_close();
    }

    /// Queues the end of input after everything queued so far (it takes no
    /// room, so it never waits).
    pub(crate) fn try_close(&self) {
        let _ = self.tx.send(StdinCmd::Close);
    }

    /// Whether a write of `len` bytes would be queued now without waiting
    /// (or fail at once: the queue is closed). Only meaningful for the only
    /// writer of a queue (the director's outbox): nobody else can take the
    /// room between this check and the write.
    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.room.available_permits() >= self.permits(len) as usize || self.is_closed()
    }

    /// Resolves once a write of `len` bytes would fit (or the queue is closed).
    ///
    /// # Cancel safety
    /// Cancel safe: it keeps none of the room it waited for.
    pub(crate) async fn room(&self, len: usize) {
        let _ = self.room.acquire_many(self.permits(len)).await;
    }

    /// A sender and the receiving end of its queue, for tests of writers.
    #[cfg(test)]
    pub(crate) fn for_test(
        child: &str,
        capacity: usize,
    ) -> (StdinSender, mpsc::UnboundedReceiver<StdinCmd>) {
        StdinSender::new(child.into(), Framing::Lines, capacity)
    }

    /// Whether stdin is closed (nothing more can be queued).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.room.is_closed()
    }

    /// The child's framing, which [`StdinSender::send_frame`] encodes for.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    fn closed(&self, data: Bytes) -> StdinError {
        StdinError::Closed {
            child: self.child.clone(),
            data,
        }
    }
}

/// Starts the writer task on the current arbiter and returns its sender;
/// its queue holds `capacity` bytes.
/// Where a child's stdin goes.
pub(crate) enum Stdin {
    /// A pipe: closing it is end of file.
    Pipe(ChildStdin),
    /// A terminal's master end: end of file is a character (VEOF), and the
    /// terminal stays open (closing it would hang the child up).
    Terminal(crate::sys::pty::Master),
}

pub(crate) fn start_writer(
    child: Arc<str>,
    framing: Framing,
    capacity: usize,
    stdin: Stdin,
) -> StdinSender {
    let (sender, rx) = StdinSender::new(child.clone(), framing, capacity);
    let room = sender.room.clone();
    match stdin {
        Stdin::Pipe(pipe) => actix::spawn(write_loop(child, pipe, None, rx, room)),
        Stdin::Terminal(master) => actix::spawn(write_loop(
            child,
            master,
            Some(crate::sys::pty::VEOF),
            rx,
            room,
        )),
    };
    sender
}

/// Writes what is queued to `stdin`; on `Close`, writes `eof` (a terminal's
/// end-of-file character) if there is one, then drops `stdin`.
async fn write_loop<W: AsyncWrite + Unpin>(
    child: Arc<str>,
    mut stdin: W,
    eof: Option<u8>,
    mut rx: mpsc::UnboundedReceiver<StdinCmd>,
    room: Arc<Semaphore>,
) {
    // A terminal takes VEOF as end of file only at the start of a line;
    // elsewhere it only hands over the line so far.
    let mut line_start = true;
    while let Some(cmd) = rx.recv().await {
        match cmd {
            StdinCmd::Data(data, permit) => {
                let written = stdin.write_all(&data).await;
                drop(permit); // the room is free again
                if let Err(e) = written {
                    tracing::debug!(child = %child, error = %e, "stdin closed by the child");
                    break;
                }
                if let Some(&last) = data.last() {
                    line_start = last == b'\n';
                }
            }
            StdinCmd::Close => {
                if let Some(eof) = eof {
                    let end: &[u8] = if line_start { &[eof] } else { &[eof, eof] };
                    let _ = stdin.write_all(end).await;
                }
                break;
            }
        }
    }
    // Refuse further sends before the pipe closes, so that no sender gets Ok
    // for bytes that can never be written.
    room.close();
    rx.close();
    drop(stdin);
    tracing::trace!(child = %child, "stdin closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the queue counted writes (64 of any size), so 64 writes
    /// of 1 MiB were queued at a child that did not read.
    #[test]
    fn the_queue_is_bounded_in_bytes_and_one_big_write_still_fits_when_empty() {
        let (stdin, mut rx) = StdinSender::for_test("x", 1000);
        stdin.try_send(vec![b'a'; 600]).unwrap();
        assert!(matches!(
            stdin.try_send(vec![b'b'; 600]),
            Err(StdinError::Full { .. })
        ));
        assert!(stdin.try_send(vec![b'c'; 400]).is_ok(), "400 more fit");
        assert!(!stdin.has_room(1));
        // The writer takes both: their room is free again.
        drop((rx.try_recv().unwrap(), rx.try_recv().unwrap()));
        assert!(stdin.has_room(1000));
        stdin.try_send(vec![b'd'; 5000]).unwrap();
        assert!(!stdin.has_room(1), "a write over the size takes it all");
        stdin.try_close(); // the end of input takes no room
        assert!(matches!(rx.try_recv(), Ok(StdinCmd::Data(d, _)) if d.len() == 5000));
        assert!(matches!(rx.try_recv(), Ok(StdinCmd::Close)));
    }
}
