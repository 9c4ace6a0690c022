//! The journal: every event as one JSON line in a file, written by a thread
//! of its own.

use std::io::Write;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Event;

/// Written bytes wait at most this long in memory before they go to the file.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Bytes gathered before a write, at most (one event may exceed it).
const WRITE_SIZE: usize = 256 * 1024;
/// Batches handed to the writer and not yet written, before the director
/// waits for it (so memory stays bounded and nothing is dropped).
const BACKLOG: usize = 16;

/// A file that receives every event as one JSON line. The director hands
/// it its events in batches, in order, and a thread of its own writes
/// them; it never lags and never misses one (if the writer falls
/// `BACKLOG` batches behind, the director waits for it). What is written
/// reaches the file within 100 ms, at the end of the director's run
/// (before `shutdown` or `wait` return), and at once on
/// [`Journal::flush`] and [`Journal::error`]: a crash loses at most the
/// last 100 ms.
///
/// A write that fails (a full disk, `/dev/full`) is logged once; the run
/// goes on, and [`Journal::error`] says what went wrong, so that the caller
/// can fail the run: an events file that could not be written is not one.
#[derive(Clone)]
pub struct Journal(Arc<Shared>);

struct Shared {
    tx: mpsc::SyncSender<Work>,
    /// The first failed write, and how many events were lost.
    failed: Arc<Mutex<Option<(std::io::Error, u64)>>>,
}

enum Work {
    Events(Arc<[Event]>),
    /// Write everything before this now, then answer.
    Flush(mpsc::Sender<()>),
}

impl Journal {
    /// Creates (or truncates) the file, and starts its writer.
    pub fn create(path: &std::path::Path) -> std::io::Result<Journal> {
        let file = std::fs::File::create(path)?;
        let (tx, rx) = mpsc::sync_channel(BACKLOG);
        let failed = Arc::new(Mutex::new(None));
        let writer = Writer {
            file,
            buf: Vec::with_capacity(WRITE_SIZE),
            events: 0,
            failed: failed.clone(),
        };
        std::thread::Builder::new()
            .name("procession-journal".into())
            .spawn(move || writer.run(rx))?;
        Ok(Journal(Arc::new(Shared { tx, failed })))
    }

    /// Hands a batch to the writer, waiting while it is far behind.
    pub(crate) fn write(&self, batch: Arc<[Event]>) {
        let _ = self.0.tx.send(Work::Events(batch));
    }

    /// Waits until every event handed over so far is in the file (or
    /// failed to be).
    pub fn flush(&self) {
        let (done, flushed) = mpsc::channel();
        if self.0.tx.send(Work::Flush(done)).is_ok() {
            let _ = flushed.recv();
        }
    }

    /// Why events could not be written, and how many, if any could not.
    /// Everything handed over so far is flushed first.
    pub fn error(&self) -> Option<String> {
        self.flush();
        let failed = self.0.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.as_ref().map(|(e, n)| {
            format!(
                "{e} ({n} event{} not written)",
                if *n == 1 { "" } else { "s" }
            )
        })
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal")
    }
}

struct Writer {
    file: std::fs::File,
    /// Lines not written yet, and how many events they are.
    buf: Vec<u8>,
    events: u64,
    failed: Arc<Mutex<Option<(std::io::Error, u64)>>>,
}

impl Writer {
    /// Writes until every [`Journal`] is gone, then flushes and ends.
    fn run(mut self, rx: mpsc::Receiver<Work>) {
        // When the oldest unwritten line was made.
        let mut since: Option<Instant> = None;
        loop {
            let work = match since {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(t) => rx.recv_timeout(FLUSH_EVERY.saturating_sub(t.elapsed())),
            };
            match work {
                Ok(Work::Events(batch)) => {
                    for event in batch.iter() {
                        // Straight into the buffer: no intermediate value.
                        serde_json::to_writer(&mut self.buf, event)
                            .expect("events always serialize");
                        self.buf.push(b'\n');
                        self.events += 1;
                    }
                    let since = *since.get_or_insert_with(Instant::now);
                    if self.buf.len() >= WRITE_SIZE || since.elapsed() >= FLUSH_EVERY {
                        self.write_out();
                    }
                }
                Ok(Work::Flush(done)) => {
                    self.write_out();
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => self.write_out(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.write_out();
                    return;
                }
            }
            if self.buf.is_empty() {
                since = None;
            }
        }
    }

    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            match &mut *failed {
                Some((_, n)) => *n += self.events,
                None => {
                    tracing::debug!(error = %e, "cannot write the events file");
                    *failed = Some((e, self.events));
                }
            }
        }
        self.buf.clear();
        self.events = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn events(n: usize) -> Arc<[Event]> {
        (0..n)
            .map(|i| Event {
                t_ms: i as u64,
                child: None,
                seq: None,
                kind: EventKind::Ready,
            })
            .collect()
    }

    #[test]
    fn what_is_handed_over_reaches_the_file_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let journal = Journal::create(&path).unwrap();
        journal.write(events(3));
        // The writer's own timer puts it in the file (FLUSH_EVERY); the
        // deadline is far past it. Nothing tells us when it did.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&path).unwrap().lines().count() < 3 {
            assert!(Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(10));
        }
        journal.write(events(2));
        journal.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5, "flush writes everything before it");
        assert!(text.starts_with(r#"{"t_ms":0,"event":"ready"}"#), "{text}");
        assert!(journal.error().is_none());
    }

    #[test]
    fn a_failed_write_counts_the_events_lost() {
        let journal = Journal::create(std::path::Path::new("/dev/full")).unwrap();
        journal.write(events(4));
        journal.write(events(1));
        let error = journal.error().expect("/dev/full refuses");
        assert!(error.ends_with("(5 events not written)"), "{error}");
    }
}
