//! The child's stdin: a bounded queue in front of a writer task that owns
//! the pipe.
//!
//! `actix::io::FramedWrite` neither pushes back (a child that does not read
//! lets it pile up without bound) nor delivers EOF on close. A bounded
//! channel does both: senders wait while it is full, and a `Close` marker
//! ends the writer, which drops the pipe after everything queued before it.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::sync::mpsc;

use crate::error::StdinError;
use crate::frame::{Frame, Framing};

pub(crate) enum StdinCmd {
    Data(Bytes),
    Close,
}

/// A handle for writing to one child's stdin. Cheap to clone; all clones
/// feed the same bounded queue, and writes from one task arrive in order.
///
/// # Caveats
/// `Ok` means queued, not read: if the child exits or closes its stdin, what
/// is still queued is discarded.
#[derive(Debug, Clone)]
pub struct StdinSender {
    child: Arc<str>,
    framing: Framing,
    tx: mpsc::Sender<StdinCmd>,
}

impl std::fmt::Debug for StdinCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StdinCmd::Data(b) => write!(f, "Data({} bytes)", b.len()),
            StdinCmd::Close => f.write_str("Close"),
        }
    }
}

impl StdinSender {
    /// A sender for a child without a stdin pipe: every send fails as closed.
    pub(crate) fn without_pipe(child: Arc<str>, framing: Framing) -> StdinSender {
        let (tx, _) = mpsc::channel(1);
        StdinSender { child, framing, tx }
    }

    /// Queues bytes as they are, waiting while the queue is full.
    ///
    /// # Cancel safety
    /// Cancelling the future before it resolves queues nothing.
    pub async fn send(&self, data: impl Into<Bytes>) -> Result<(), StdinError> {
        let data = data.into();
        match self.tx.reserve().await {
            Ok(permit) => {
                permit.send(StdinCmd::Data(data));
                Ok(())
            }
            Err(_) => Err(self.closed(data)),
        }
    }

    /// Queues bytes if there is room now.
    pub fn try_send(&self, data: impl Into<Bytes>) -> Result<(), StdinError> {
        let data = data.into();
        match self.tx.try_send(StdinCmd::Data(data)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(StdinCmd::Data(data))) => Err(StdinError::Full {
                child: self.child.clone(),
                data,
            }),
            Err(mpsc::error::TrySendError::Closed(StdinCmd::Data(data))) => Err(self.closed(data)),
            Err(_) => unreachable!("we sent data"),
        }
    }

    /// Queues a frame encoded for the child's framing (see [`Frame::encode`]).
    pub async fn send_frame(&self, frame: &Frame) -> Result<(), StdinError> {
        self.send(frame.to_bytes(self.framing)).await
    }

    /// Closes stdin after everything queued so far is written. Later sends
    /// fail with [`StdinError::Closed`].
    pub async fn close(&self) {
        let _ = self.tx.send(StdinCmd::Close).await;
    }

    /// Whether a write would be queued now without waiting. Only meaningful
    /// for the only writer of a queue (the director's outbox): nobody else
    /// can take the room between this check and the write.
    pub(crate) fn has_room(&self) -> bool {
        self.tx.capacity() > 0 || self.tx.is_closed()
    }

    /// Resolves once there is room in the queue (or it is closed).
    ///
    /// # Cancel safety
    /// Cancel safe: it reserves nothing that outlives it.
    pub(crate) async fn room(&self) {
        let _ = self.tx.reserve().await;
    }

    /// Queues the end of input if there is room now (false: the queue is full).
    pub(crate) fn try_close(&self) -> bool {
        !matches!(
            self.tx.try_send(StdinCmd::Close),
            Err(mpsc::error::TrySendError::Full(_))
        )
    }

    /// A sender and the receiving end of its queue, for tests of writers.
    #[cfg(test)]
    pub(crate) fn for_test(child: &str, slots: usize) -> (StdinSender, mpsc::Receiver<StdinCmd>) {
        let (tx, rx) = mpsc::channel(slots);
        let sender = StdinSender {
            child: child.into(),
            framing: Framing::Lines,
            tx,
        };
        (sender, rx)
    }

    /// Whether stdin is closed (nothing more can be queued).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
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

/// Starts the writer task on the current arbiter and returns its sender.
pub(crate) fn start_writer(
    child: Arc<str>,
    framing: Framing,
    queue: usize,
    stdin: ChildStdin,
) -> StdinSender {
    let (tx, rx) = mpsc::channel(queue.max(1));
    actix::spawn(write_loop(child.clone(), stdin, rx));
    StdinSender { child, framing, tx }
}

async fn write_loop(child: Arc<str>, mut stdin: ChildStdin, mut rx: mpsc::Receiver<StdinCmd>) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            StdinCmd::Data(data) => {
                if let Err(e) = stdin.write_all(&data).await {
                    tracing::debug!(child = %child, error = %e, "stdin closed by the child");
                    break;
                }
            }
            StdinCmd::Close => break,
        }
    }
    // Refuse further sends before the pipe closes, so that no sender gets Ok
    // for bytes that can never be written.
    rx.close();
    drop(stdin);
    tracing::trace!(child = %child, "stdin closed");
}
