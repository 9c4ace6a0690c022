//! The control socket (`procession run --control SOCKET`): one JSON object a
//! line each way over a Unix socket that only procession's own uid may use.
//! Requests become [`Director`] calls; nothing here knows a terminal.
//!
//! ```text
//!  client ──{"op":..}──► connection task ──► Director calls ──► reply line
//!                              ▲ event lines (bounded queue per connection, `lagged`)
//!  director.events() ──► pump ─┴─► history (the last 10,000 lines)
//! ```
//!
//! The pump never waits for a client: each connection that follows the
//! events has a bounded queue, and what does not fit is counted and told
//! as a `lagged` line on that connection only.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, FramedRead, LinesCodec, LinesCodecError};

use crate::{ChildInfo, ChildState, Director, EventFilter, EventKind, EventStream, Signal};

/// The longest request line; a longer one is refused (and skipped).
pub const MAX_REQUEST: usize = 1 << 20;
/// Event lines kept for `events` (the newest), and at most this many bytes.
const HISTORY: usize = 10_000;
const HISTORY_BYTES: usize = 16 << 20;
/// Event lines queued for one following connection before it lags, and at
/// most this many bytes.
const FOLLOWER_QUEUE: usize = 1024;
const FOLLOWER_BYTES: usize = 4 << 20;

/// The control socket could not be set up. Each names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Something that is not a socket is at the path.
    #[error("{}: exists and is not a socket (remove it or choose another path)", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A live socket is at the path: another run listens on it.
    #[error("{}: another process is listening on this socket", path.display())]
    InUse {
        /// The path.
        path: PathBuf,
    },
    /// Binding or setting it up failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A listening control socket. Dropping it stops listening and removes the
/// socket file (if it is still the one it made); [`close`](Self::close)
/// first lets the clients that follow the events have the last ones.
pub struct ControlSocket {
    path: PathBuf,
    inode: u64,
    accept: JoinHandle<()>,
    pump: Option<JoinHandle<()>>,
    /// Every connection task holds a clone; all gone when `recv` is `None`.
    connections: Option<mpsc::Receiver<()>>,
}

impl ControlSocket {
    /// Listens at `path` (mode 0600; a stale socket left by a run that died
    /// is replaced) and serves requests to `director`. Call it before the
    /// run starts so that `events` sees everything, inside the runtime the
    /// director was started on (an actix System or tokio).
    pub async fn bind(
        path: impl Into<PathBuf>,
        director: &Director,
    ) -> Result<ControlSocket, ControlError> {
        let path = path.into();
        clear_stale(&path).await?;
        let listener =
            std::os::unix::net::UnixListener::bind(&path).map_err(|source| ControlError::Io {
                path: path.clone(),
                source,
            })?;
        // From here on, a failure removes the socket it made.
        let set_up = async {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            let inode = std::fs::metadata(&path)?.ino();
            listener.set_nonblocking(true)?;
            let listener = UnixListener::from_std(listener)?;
            let events = director
                .events(EventFilter::all())
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            Ok::<_, io::Error>((inode, listener, events))
        };
        let (inode, listener, events) = match set_up.await {
            Ok(parts) => parts,
            Err(source) => {
                let _ = std::fs::remove_file(&path);
                return Err(ControlError::Io { path, source });
            }
        };
        let shared = Arc::new(Mutex::new(Shared::default()));
        let pump = spawn(pump(events, shared.clone()));
        let (alive, connections) = mpsc::channel(1);
        let accept = spawn(accept(listener, director.clone(), shared, alive));
        Ok(ControlSocket {
            path,
            inode,
            accept,
            pump: Some(pump),
            connections: Some(connections),
        })
    }

    /// Stops listening, waits (up to `patience`) until the director's last
    /// event has reached every following client and their connections
    /// closed, then removes the socket. Call it once the director stopped.
    pub async fn close(mut self, patience: std::time::Duration) {
        self.accept.abort();
        let pump = self.pump.take();
        let connections = self.connections.take();
        let _ = tokio::time::timeout(patience, async move {
            if let Some(pump) = pump {
                let _ = pump.await;
            }
            if let Some(mut connections) = connections {
                let _ = connections.recv().await;
            }
        })
        .await;
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // The pump ends with the director's events; connections with it.
        self.accept.abort();
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Nothing at `path`, or a socket nobody listens on (then removed).
async fn clear_stale(path: &Path) -> Result<(), ControlError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ControlError::Io {
                path: path.into(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket { path: path.into() });
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(ControlError::InUse { path: path.into() }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .map_err(|source| ControlError::Io {
                path: path.into(),
                source,
            }),
        Err(source) => Err(ControlError::Io {
            path: path.into(),
            source,
        }),
    }
}

fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
    if actix::System::try_current().is_some() {
        actix::spawn(task)
    } else {
        tokio::spawn(task)
    }
}

/// One event, serialized once.
struct Line {
    /// The child it is about.
    child: Option<Arc<str>>,
    /// A director-level `lagged`: for every follower, whatever its filter.
    everyone: bool,
    text: Arc<str>,
}

/// The event lines so far (the last [`HISTORY`], at most
/// [`HISTORY_BYTES`]), and the connections that follow new ones.
#[derive(Default)]
struct Shared {
    history: VecDeque<Line>,
    history_bytes: usize,
    followers: Vec<Follower>,
    /// The director has stopped: no more events.
    over: bool,
}

impl Shared {
    fn keep(&mut self, line: &Line) {
        self.history_bytes += line.text.len();
        self.history.push_back(Line {
            child: line.child.clone(),
            everyone: line.everyone,
            text: line.text.clone(),
        });
        while self.history.len() > HISTORY || self.history_bytes > HISTORY_BYTES {
            match self.history.pop_front() {
                Some(old) => self.history_bytes -= old.text.len(),
                None => break,
            }
        }
    }
}

/// A connection that follows the events: a bounded queue (in lines and in
/// bytes) that its writer drains, and what did not fit.
struct Follower {
    tx: mpsc::Sender<Arc<str>>,
    /// Bytes in the queue (the writer takes off what it took).
    queued: Arc<AtomicUsize>,
    /// Only events about these children (all when empty).
    children: Vec<String>,
    /// Lines that did not fit since the last one that did.
    missed: u64,
}

impl Follower {
    fn wants(&self, line: &Line) -> bool {
        line.everyone
            || self.children.is_empty()
            || line
                .child
                .as_deref()
                .is_some_and(|c| self.children.iter().any(|n| n == c))
    }

    /// Room for `bytes` more, keeping one slot free for a `lagged` line.
    fn has_room(&self, bytes: usize) -> bool {
        self.tx.capacity() >= 2 && self.queued.load(Ordering::Relaxed) + bytes <= FOLLOWER_BYTES
    }

    fn push(&self, text: Arc<str>) -> bool {
        self.queued.fetch_add(text.len(), Ordering::Relaxed);
        self.tx.try_send(text).is_ok()
    }

    /// Tells what was missed, in the slot kept free for it.
    fn tell_missed(&mut self, t_ms: u64) -> bool {
        let lagged = json!({"t_ms": t_ms, "event": "lagged", "missed": self.missed});
        self.missed = 0;
        self.push(lagged.to_string().into())
    }

    /// Queues a line, after a `lagged` line if some were missed; false once
    /// the connection is gone.
    fn offer(&mut self, line: &Line, t_ms: u64) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        if self.missed > 0 && self.has_room(line.text.len() + 64) {
            self.tell_missed(t_ms);
        }
        if self.missed == 0 && self.has_room(line.text.len()) {
            return self.push(line.text.clone());
        }
        self.missed += 1;
        true
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serializes each event once, keeps it, and offers it to the followers.
async fn pump(mut events: EventStream, shared: Arc<Mutex<Shared>>) {
    let mut t_ms = 0;
    while let Some(event) = events.next().await {
        let Ok(text) = serde_json::to_string(&event) else {
            continue;
        };
        t_ms = event.t_ms;
        let line = Line {
            everyone: event.child.is_none() && matches!(event.kind, EventKind::Lagged { .. }),
            child: event.child,
            text: text.into(),
        };
        let mut s = lock(&shared);
        s.keep(&line);
        s.followers
            .retain_mut(|f| !f.wants(&line) || f.offer(&line, t_ms));
    }
    let mut s = lock(&shared);
    s.over = true;
    // What a follower missed last is told in the slot kept for it; then
    // their connections see the end of the events and close.
    for follower in &mut s.followers {
        if follower.missed > 0 {
            follower.tell_missed(t_ms);
        }
    }
    s.followers.clear();
}

async fn accept(
    listener: UnixListener,
    director: Director,
    shared: Arc<Mutex<Shared>>,
    alive: mpsc::Sender<()>,
) {
    let uid = nix::unistd::getuid().as_raw();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "control socket: accept failed");
                // EMFILE and the like: try again after a breath.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (director, shared, alive) = (director.clone(), shared.clone(), alive.clone());
        spawn(async move {
            serve(stream, uid, director, shared).await;
            drop(alive);
        });
    }
}

/// One request, as the wire spells it.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Status,
    Send {
        child: String,
        line: Option<String>,
        json: Option<Value>,
    },
    Close {
        child: String,
    },
    Start {
        child: String,
    },
    Stop {
        child: String,
    },
    Restart {
        child: String,
    },
    Signal {
        child: String,
        signal: String,
    },
    Events {
        #[serde(default)]
        follow: bool,
        #[serde(default)]
        children: Vec<String>,
        /// The events so far first (default); `false`: only new ones.
        #[serde(default = "yes")]
        history: bool,
    },
    Shutdown,
}

fn yes() -> bool {
    true
}

/// What a request is answered with.
enum Answer {
    Reply(Value),
    /// Event lines, then, when following, new ones from the queue (with
    /// its byte count) until the run ends; then the connection ends.
    Events(
        Vec<Arc<str>>,
        Option<(mpsc::Receiver<Arc<str>>, Arc<AtomicUsize>)>,
    ),
}

fn refused(error: impl std::fmt::Display) -> Answer {
    Answer::Reply(json!({"ok": false, "error": error.to_string()}))
}

fn done() -> Answer {
    Answer::Reply(json!({"ok": true}))
}

async fn serve(stream: UnixStream, uid: u32, director: Director, shared: Arc<Mutex<Shared>>) {
    let peer = stream.peer_cred().map(|c| c.uid());
    let (read, mut write) = stream.into_split();
    if peer.as_ref().ok() != Some(&uid) {
        let who = match peer {
            Ok(peer) => format!("uid {peer}"),
            Err(e) => format!("a peer whose uid is unknown ({e})"),
        };
        let error = format!("refused: {who} is not procession's uid {uid}");
        let refusal = json!({"ok": false, "error": error});
        let _ = write.write_all(format!("{refusal}\n").as_bytes()).await;
        return;
    }
    let mut lines: Requests = FramedRead::new(read, RequestLines::default());
    while let Some(line) = lines.next().await {
        let answer = match line {
            Ok(Ok(line)) if line.trim().is_empty() => continue,
            Ok(Ok(line)) => match serde_json::from_str::<Request>(&line) {
                Ok(request) => answer(request, &director, &shared).await,
                Err(e) => refused(format!("bad request: {e}")),
            },
            Ok(Err(BadLine::TooLong)) => refused(format!(
                "bad request: a line is longer than {MAX_REQUEST} bytes"
            )),
            Ok(Err(BadLine::NotUtf8)) => refused("bad request: the line is not UTF-8"),
            Err(_) => return,
        };
        let events = matches!(answer, Answer::Events(..));
        if send(&mut write, &mut lines, answer).await.is_err() || events {
            return;
        }
    }
}

/// A request line that cannot be read (skipped up to its newline).
enum BadLine {
    /// Longer than [`MAX_REQUEST`].
    TooLong,
    /// Not UTF-8.
    NotUtf8,
}

type Requests = FramedRead<OwnedReadHalf, RequestLines>;

/// Request lines of at most [`MAX_REQUEST`] bytes. A longer one is an item
/// of its own, not an error: `FramedRead` ends at the first error, and the
/// connection should go on after a refusal.
struct RequestLines(LinesCodec);

impl Default for RequestLines {
    fn default() -> Self {
        RequestLines(LinesCodec::new_with_max_length(MAX_REQUEST))
    }
}

impl RequestLines {
    fn item(
        got: Result<Option<String>, LinesCodecError>,
    ) -> io::Result<Option<Result<String, BadLine>>> {
        match got {
            Ok(line) => Ok(line.map(Ok)),
            Err(LinesCodecError::MaxLineLengthExceeded) => Ok(Some(Err(BadLine::TooLong))),
            // The codec has taken the line off before it checked it.
            Err(LinesCodecError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                Ok(Some(Err(BadLine::NotUtf8)))
            }
            Err(LinesCodecError::Io(e)) => Err(e),
        }
    }
}

impl Decoder for RequestLines {
    type Item = Result<String, BadLine>;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        RequestLines::item(self.0.decode(buf))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        RequestLines::item(self.0.decode_eof(buf))
    }
}

/// Writes an answer. While following, the client's end of input (it went
/// away) ends the connection too, not only the end of the run.
async fn send(write: &mut OwnedWriteHalf, lines: &mut Requests, answer: Answer) -> io::Result<()> {
    let (history, live) = match answer {
        Answer::Reply(value) => return write.write_all(format!("{value}\n").as_bytes()).await,
        Answer::Events(history, live) => (history, live),
    };
    let mut out = tokio::io::BufWriter::new(write);
    for line in history {
        out.write_all(line.as_bytes()).await?;
        out.write_all(b"\n").await?;
    }
    out.flush().await?;
    if let Some((mut live, queued)) = live {
        loop {
            tokio::select! {
                line = live.recv() => {
                    let Some(line) = line else { break };
                    queued.fetch_sub(line.len(), Ordering::Relaxed);
                    out.write_all(line.as_bytes()).await?;
                    out.write_all(b"\n").await?;
                    if live.is_empty() {
                        out.flush().await?;
                    }
                }
                input = lines.next() => match input {
                    // More requests while following are not read.
                    Some(Ok(_)) => {}
                    None | Some(Err(_)) => return Ok(()),
                },
            }
        }
    }
    out.flush().await?;
    out.into_inner().shutdown().await
}

async fn answer(request: Request, director: &Director, shared: &Mutex<Shared>) -> Answer {
    let outcome = match request {
        Request::Status => {
            return match director.children().await {
                Ok(children) => {
                    let children: Vec<Value> = children.iter().map(status).collect();
                    Answer::Reply(json!({"ok": true, "children": children}))
                }
                Err(e) => refused(e),
            }
        }
        Request::Events {
            follow,
            children,
            history,
        } => return events(shared, follow, children, history),
        Request::Shutdown => {
            director.note_control("shutdown", None);
            let director = director.clone();
            spawn(async move {
                director
                    .shutdown_by_operator("asked over the control socket")
                    .await;
            });
            return done();
        }
        Request::Send { child, line, json } => match (line, json) {
            (Some(line), None) => {
                let child = noted(director, "send", child).await;
                director.deliver_line(child, line).await
            }
            (None, Some(json)) => {
                let child = noted(director, "send", child).await;
                director.deliver_json(child, &json).await
            }
            _ => return refused("bad request: `send` takes `line` or `json`, one of them"),
        },
        Request::Close { child } => {
            let child = noted(director, "close", child).await;
            director.close_stdin(child).await
        }
        Request::Start { child } => {
            let child = noted(director, "start", child).await;
            director.start_child(child).await
        }
        Request::Stop { child } => {
            let child = noted(director, "stop", child).await;
            director.stop(child, None).await.map(drop)
        }
        Request::Restart { child } => {
            let child = noted(director, "restart", child).await;
            director.restart(child).await
        }
        Request::Signal { child, signal } => {
            let signal: Signal = match signal.parse() {
                Ok(signal) => signal,
                Err(e) => return refused(e),
            };
            let child = noted(director, "signal", child).await;
            director.signal(child, signal).await
        }
    };
    match outcome {
        Ok(()) => done(),
        Err(e) => refused(e),
    }
}

/// Publishes the `control` event for a child the director knows (a request
/// naming another is refused by the call that follows, with a "did you
/// mean"); the event comes before what the call does.
async fn noted(director: &Director, op: &'static str, child: String) -> Arc<str> {
    let child: Arc<str> = child.into();
    let known = director
        .children()
        .await
        .is_ok_and(|all| all.iter().any(|c| c.name == child));
    if known {
        director.note_control(op, Some(child.clone()));
    }
    child
}

fn events(shared: &Mutex<Shared>, follow: bool, children: Vec<String>, history: bool) -> Answer {
    let mut s = lock(shared);
    let follower = Follower {
        tx: mpsc::channel(1).0,
        queued: Arc::default(),
        children,
        missed: 0,
    };
    let past = if history {
        let lines = s.history.iter().filter(|l| follower.wants(l));
        lines.map(|l| l.text.clone()).collect()
    } else {
        Vec::new()
    };
    // Registered under the same lock as the snapshot: nothing between the
    // two is lost or told twice.
    let live = (follow && !s.over).then(|| {
        let (tx, rx) = mpsc::channel(FOLLOWER_QUEUE);
        let queued = follower.queued.clone();
        s.followers.push(Follower { tx, ..follower });
        (rx, queued)
    });
    Answer::Events(past, live)
}

/// A child as `status` gives it.
fn status(child: &ChildInfo) -> Value {
    let (state, pid, ready) = match &child.state {
        ChildState::Pending | ChildState::NotStarted { .. } => ("pending", None, false),
        ChildState::Starting { pid } => ("starting", *pid, false),
        ChildState::Running { pid, ready } => ("running", Some(*pid), *ready),
        ChildState::Stopping { pid } => ("stopping", Some(*pid), false),
        ChildState::Restarting { .. } => ("restarting", None, false),
        ChildState::Exited(_) | ChildState::SpawnFailed { .. } => ("exited", None, false),
        ChildState::Stopped(_) => ("stopped", None, false),
        ChildState::GaveUp { .. } => ("gave_up", None, false),
    };
    json!({
        "name": &*child.name,
        "state": state,
        "ready": ready,
        "pid": pid,
        "restarts": child.restarts,
        "uptime_ms": child.uptime.map(|u| u.as_millis() as u64),
        "detail": child.state.to_string(),
    })
}
