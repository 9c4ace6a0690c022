//! Starting the OS process: argv (never a shell), its own process group, a
//! parent-death signal, and the pipes the spec asks for.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::process::{Child, Command};

use super::messages::Stream;
use super::output::Source;
use super::stdin::Stdin;
use crate::error::SpawnError;
use crate::frame::Framing;
use crate::spec::{ChildSpec, StderrMode};
use crate::sys;

/// Pipe buffers are grown to this size: with large reads it moves two to
/// four times more than the 64 KiB default.
const PIPE_SIZE: usize = 1 << 20;

pub(crate) struct Spawned {
    pub child: Child,
    pub pid: u32,
    pub stdin: Option<Stdin>,
    pub sources: Vec<Source>,
    /// The pipe budget the grown pipes hold (see `sys::grow_pipe`).
    pub pipes: Vec<sys::PipeGrant>,
    /// A terminal child's master end, held for as long as the actor lives:
    /// the terminal is hung up (SIGHUP to the child) only once every copy
    /// of it is closed, so never while the child runs.
    pub terminal: Option<std::os::fd::OwnedFd>,
}

/// What an owner inside the crate may leave out of (or add to) a spawn.
#[derive(Debug)]
pub(crate) struct Options {
    /// Set the parent-death signal in the child. That takes a `pre_exec`
    /// hook, which forces fork instead of the faster vfork-like spawn (about
    /// 0.2 ms per child here); owners whose watchdog already covers the
    /// child's group turn it off.
    pub parent_death_signal: bool,
    /// Give the child a stdin pipe (else `/dev/null`).
    pub stdin: bool,
    /// Its `PROCESSION_CHILD` marker (`<run>/<name>`), which its
    /// descendants inherit: how an escapee is known as the child's.
    pub marker: Option<Arc<str>>,
    /// Where `NAME.stdout` / `NAME.stderr` get what it writes (`--log-dir`).
    pub log_dir: Option<std::path::PathBuf>,
    /// While a flag is set, that pipe's whole lines come in chunks
    /// (stdout's, stderr's; see `ChildEventKind::Chunk`).
    pub chunks: Option<ChunkFlags>,
    /// Files the child's stdout and stderr are, instead of pipes (not for
    /// a terminal): it writes into them itself and nothing is read.
    pub stdout_file: Option<std::fs::File>,
    pub stderr_file: Option<std::fs::File>,
}

/// Set by the owner while it would only forward and count a pipe's lines.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChunkFlags {
    pub stdout: Arc<AtomicBool>,
    pub stderr: Arc<AtomicBool>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parent_death_signal: true,
            stdin: true,
            marker: None,
            log_dir: None,
            chunks: None,
            stdout_file: None,
            stderr_file: None,
        }
    }
}

/// Opens (appending, creating) the log files of `name` in `dir` and gives
/// each source its own; both files exist afterwards even when a stream has
/// no pipe (stderr merged, a terminal). A file that cannot be opened is
/// reported and left out: the child runs all the same.
pub(crate) fn attach_logs(sources: &mut [Source], name: &str, dir: Option<&std::path::Path>) {
    let Some(dir) = dir else { return };
    // A name is one path component: `/` and a leading `.` are escaped.
    let mut file_name = name.replace('%', "%25").replace('/', "%2F");
    if file_name.starts_with('.') {
        file_name = format!("%2E{}", &file_name[1..]);
    }
    for stream in [Stream::Stdout, Stream::Stderr] {
        let path = dir.join(format!("{file_name}.{stream}"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        match file {
            Ok(file) => {
                if let Some(source) = sources.iter_mut().find(|s| s.stream == stream) {
                    source.log = Some(file);
                }
            }
            Err(e) => tracing::warn!(child = %name, path = %path.display(), error = %e,
                "cannot open the log file; the child runs without it"),
        }
    }
}

pub(crate) fn spawn(spec: &ChildSpec, mut options: Options) -> Result<Spawned, SpawnError> {
    let name = spec.name.clone();
    let program = spec.program().to_string();
    if spec.cmd.is_empty() {
        return Err(SpawnError::EmptyCommand { child: name });
    }
    if let Some(cwd) = &spec.cwd {
        // exec reports a missing cwd as ENOENT, like a missing program:
        // check first so the error says which.
        match std::fs::metadata(cwd) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SpawnError::BadCwd {
                    child: name,
                    cwd: cwd.clone(),
                    source: io::Error::from_raw_os_error(nix::libc::ENOTDIR),
                })
            }
            Err(source) => {
                return Err(SpawnError::BadCwd {
                    child: name,
                    cwd: cwd.clone(),
                    source,
                })
            }
        }
    }

    let os_error = |source: io::Error| SpawnError::Os {
        child: spec.name.clone(),
        program: program.clone(),
        source,
    };

    let mut cmd = Command::new(&program);
    cmd.args(spec.args()).kill_on_drop(true);
    if spec.env_clear {
        cmd.env_clear();
    }
    if spec.terminal.is_some() && !spec.env.contains_key("TERM") {
        cmd.env("TERM", "dumb");
    }
    cmd.envs(&spec.env);
    if let Some(marker) = &options.marker {
        cmd.env(sys::MARKER, &**marker);
    }
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    if let Some(terminal) = spec.terminal {
        return spawn_in_terminal(spec, options, cmd, terminal, os_error);
    }
    cmd.stdin(if options.stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .process_group(0);

    // stdout is ours in every mode; with `merge` stderr shares its pipe.
    let merged = if spec.stderr == StderrMode::Merge {
        let (tx, rx) = tokio::net::unix::pipe::pipe().map_err(os_error)?;
        let write_end = tx.into_blocking_fd().map_err(os_error)?;
        cmd.stdout(Stdio::from(write_end.try_clone().map_err(os_error)?));
        cmd.stderr(Stdio::from(write_end));
        Some(rx)
    } else {
        cmd.stdout(
            options
                .stdout_file
                .take()
                .map_or_else(Stdio::piped, Stdio::from),
        );
        cmd.stderr(match spec.stderr {
            StderrMode::Events => options
                .stderr_file
                .take()
                .map_or_else(Stdio::piped, Stdio::from),
            StderrMode::Inherit => Stdio::inherit(),
            StderrMode::Discard | StderrMode::Merge => Stdio::null(),
        });
        None
    };

    if options.parent_death_signal {
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe calls (prctl, getppid, raise); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || sys::set_parent_death_signal(parent));
        }
    }

    let spawning = sys::spawning();
    let mut child = cmd.spawn().map_err(|e| spawn_error(spec, e))?;
    // The command holds the write ends of a merge pipe: drop it now, or the
    // pipe never reaches EOF.
    drop(cmd);

    let pid = child.id().expect("a child that was just spawned has a pid");
    spawning.spawned(pid, options.marker);
    let stdin = child.stdin.take();
    let mut pipes = Vec::with_capacity(2);
    if let Some(stdin) = &stdin {
        pipes.extend(sys::grow_pipe(stdin.as_fd(), PIPE_SIZE));
    }
    let stdin = stdin.map(Stdin::Pipe);

    let mut sources = Vec::with_capacity(2);
    match merged {
        Some(rx) => {
            pipes.extend(sys::grow_pipe(rx.as_fd(), PIPE_SIZE));
            sources.push(Source {
                stream: Stream::Stdout,
                fd: rx.as_raw_fd(),
                pipe: Box::pin(rx),
                framing: spec.framing,
                clean: false,
                log: None,
                chunks: None,
            });
        }
        None => 'stdout: {
            let Some(stdout) = child.stdout.take() else {
                break 'stdout; // it writes into a file
            };
            pipes.extend(sys::grow_pipe(stdout.as_fd(), PIPE_SIZE));
            sources.push(Source {
                stream: Stream::Stdout,
                fd: stdout.as_raw_fd(),
                pipe: Box::pin(stdout),
                framing: spec.framing,
                clean: false,
                log: None,
                chunks: None,
            });
        }
    }
    if let Some(stderr) = child.stderr.take() {
        sources.push(Source {
            stream: Stream::Stderr,
            fd: stderr.as_raw_fd(),
            pipe: Box::pin(stderr),
            framing: stderr_framing(spec.framing),
            clean: false,
            log: None,
            chunks: None,
        });
    }
    attach_logs(&mut sources, &spec.name, options.log_dir.as_deref());
    attach_chunks(&mut sources, options.chunks.as_ref());
    Ok(Spawned {
        child,
        pid,
        stdin,
        sources,
        pipes,
        terminal: None,
    })
}

/// Gives each source its pipe's chunk flag, if the owner wants chunks.
fn attach_chunks(sources: &mut [Source], flags: Option<&ChunkFlags>) {
    let Some(flags) = flags else { return };
    for source in sources {
        source.chunks = Some(match source.stream {
            Stream::Stdout => flags.stdout.clone(),
            Stream::Stderr => flags.stderr.clone(),
        });
    }
}

/// The error for a spawn that failed, with the OS reason.
fn spawn_error(spec: &ChildSpec, source: io::Error) -> SpawnError {
    let program = spec.program().to_string();
    match source.kind() {
        // ENOENT for a program that exists: its `#!` interpreter is missing.
        io::ErrorKind::NotFound => match locate(&program, spec) {
            Some(path) => SpawnError::BadInterpreter {
                child: spec.name.clone(),
                interpreter: shebang(&path),
                program,
                source,
            },
            None => SpawnError::NotFound {
                child: spec.name.clone(),
                program,
                source,
            },
        },
        io::ErrorKind::PermissionDenied => SpawnError::NotExecutable {
            child: spec.name.clone(),
            program,
            source,
        },
        _ => SpawnError::Os {
            child: spec.name.clone(),
            program,
            source,
        },
    }
}

/// The terminal flavour of [`spawn`]: the child's stdin, stdout and stderr
/// are a pseudo-terminal's slave end, which becomes its controlling
/// terminal in a session of its own (so it leads its own process group, as
/// every child does); we read and write the master end.
fn spawn_in_terminal(
    spec: &ChildSpec,
    options: Options,
    mut cmd: Command,
    terminal: crate::spec::Terminal,
    os_error: impl Fn(io::Error) -> SpawnError,
) -> Result<Spawned, SpawnError> {
    let pty = sys::pty::open(terminal.rows, terminal.cols, terminal.echo).map_err(&os_error)?;
    for (i, fd) in [0, 1, 2]
        .map(|_| pty.slave.try_clone())
        .into_iter()
        .enumerate()
    {
        let fd = Stdio::from(fd.map_err(&os_error)?);
        match i {
            0 => cmd.stdin(fd),
            1 => cmd.stdout(fd),
            _ => cmd.stderr(fd),
        };
    }
    let parent = std::process::id();
    let death_signal = options.parent_death_signal;
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (setsid, ioctl, prctl, getppid, raise).
    unsafe {
        cmd.pre_exec(move || {
            sys::pty::make_controlling()?;
            if death_signal {
                sys::set_parent_death_signal(parent)?;
            }
            Ok(())
        });
    }
    // Everything that can fail is done before the spawn: once the child
    // runs, it is registered and ours.
    let reader = sys::pty::Master::new(&pty.master).map_err(&os_error)?;
    let stdin = if options.stdin {
        Some(Stdin::Terminal(
            sys::pty::Master::new(&pty.master).map_err(&os_error)?,
        ))
    } else {
        None
    };
    let spawning = sys::spawning();
    let child = cmd.spawn().map_err(|e| spawn_error(spec, e))?;
    // Our copies of the slave end go: the terminal reads as closed (EIO)
    // once the child's side is.
    drop(cmd);
    drop(pty.slave);
    let pid = child.id().expect("a child that was just spawned has a pid");
    spawning.spawned(pid, options.marker.clone());
    let mut sources = vec![Source {
        stream: Stream::Stdout,
        fd: reader.raw_fd(),
        pipe: Box::pin(reader),
        framing: spec.framing,
        // Raw bytes stay raw; everything else is text without escapes.
        clean: spec.framing != crate::Framing::Bytes,
        log: None,
        chunks: None,
    }];
    attach_logs(&mut sources, &spec.name, options.log_dir.as_deref());
    attach_chunks(&mut sources, options.chunks.as_ref());
    Ok(Spawned {
        child,
        pid,
        stdin,
        sources,
        pipes: Vec::new(),
        terminal: Some(pty.master),
    })
}

/// stderr is for people: read it as lines unless the child speaks raw bytes.
fn stderr_framing(stdout: Framing) -> Framing {
    match stdout {
        Framing::Bytes => Framing::Bytes,
        _ => Framing::Lines,
    }
}

/// Where `program` is, as the spawn would look for it: a path as given
/// (from the child's `cwd`), or the first match on `PATH`.
fn locate(program: &str, spec: &ChildSpec) -> Option<std::path::PathBuf> {
    use std::path::{Path, PathBuf};
    if program.contains('/') {
        let path = match &spec.cwd {
            Some(cwd) if !Path::new(program).is_absolute() => cwd.join(program),
            _ => PathBuf::from(program),
        };
        return path.is_file().then_some(path);
    }
    let search = spec
        .env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())?;
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The interpreter a script's `#!` line names, if it has one.
fn shebang(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let text = String::from_utf8_lossy(line);
    text.split_whitespace().next().map(str::to_string)
}
