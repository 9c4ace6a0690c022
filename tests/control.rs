//! `procession run --control SOCKET` and `procession ctl`, over a real Unix
//! socket: every op, refusals, the peer-uid check, stale sockets, following
//! the events, `attach`, and a client that never reads.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_procession");
const PATIENCE: Duration = Duration::from_secs(30);

/// `kv` reads lines and says them back; `ticker` runs until stopped;
/// `idle` keeps the run going when both have ended (a run without steps
/// lasts as long as its children).
const SCENARIO: &str = r#"
[children.kv]
cmd = ["cat"]

[children.ticker]
cmd = ["sh", "-c", "while true; do echo tick; sleep 1; done"]

[children.idle]
cmd = ["sleep", "1000"]
"#;

/// A temp dir with a scenario; a `procession run --control` in it.
struct Run {
    dir: PathBuf,
    scenario: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
}

impl Run {
    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("procession-ctl-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Starts the run and waits until its socket listens.
    fn start(name: &str, scenario: &str) -> Run {
        let mut run = Run::prepare(name, scenario);
        run.spawn();
        run.wait_for_socket();
        run
    }

    fn prepare(name: &str, scenario: &str) -> Run {
        let dir = Run::dir(name);
        std::fs::write(dir.join("s.toml"), scenario).unwrap();
        let socket = dir.join("ctl.sock");
        Run {
            scenario: dir.join("s.toml"),
            dir,
            socket,
            child: None,
        }
    }

    fn spawn(&mut self) {
        let child = Command::new(BIN)
            .arg("run")
            .arg(&self.scenario)
            .arg("--control")
            .arg(self.socket())
            .arg("--events")
            .arg(self.dir.join("events.jsonl"))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            // A file, not a pipe nobody reads: the timeline must not block.
            .stderr(std::fs::File::create(self.dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn socket(&self) -> PathBuf {
        self.socket.clone()
    }

    fn wait_for_socket(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        // Polls until the run listens (it binds at start; a stale socket
        // may be there before).
        while UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the run ended ({status}) before it listened: {}",
                    self.stderr()
                );
            }
            assert!(Instant::now() < deadline, "no socket after {PATIENCE:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `procession ctl SOCKET ARGS`, bounded: killed past the patience.
    fn ctl(&self, args: &[&str]) -> Output {
        let child = Command::new(BIN)
            .arg("ctl")
            .arg(self.socket())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        bounded(child, PATIENCE, |c| c.wait_with_output().unwrap())
            .unwrap_or_else(|| panic!("ctl {args:?} did not end within {PATIENCE:?}"))
    }

    /// Waits for the run to end by itself; its exit status.
    fn wait(&mut self) -> i32 {
        let child = self.child.take().expect("the run was started");
        let status = exit_within(child, PATIENCE).expect("the run ends by itself");
        status.code().expect("exited, not signalled")
    }

    /// `procession ctl SOCKET ARGS` started, its stdin and stdout piped.
    fn ctl_piped(&self, args: &[&str]) -> Child {
        Command::new(BIN)
            .arg("ctl")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // SIGKILL: its watchdog then kills every child it started.
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn status_of(run: &Run, child: &str) -> Value {
    let out = run.ctl(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    reply["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == child)
        .cloned()
        .unwrap_or_else(|| panic!("no {child} in {reply}"))
}

/// Asks until `child` is in `state` (a stop or restart is carried out
/// asynchronously by the run).
fn wait_state(run: &Run, child: &str, state: &str) -> Value {
    wait_status(run, child, state, |s| s["state"] == state)
}

/// Asks for `child`'s status until `wanted` holds. Polled with a deadline:
/// the socket has no event for a state reached, and the timeline's
/// events would need a second connection to follow.
fn wait_status(run: &Run, child: &str, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = status_of(run, child);
        if wanted(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{child} is {status}, not {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a process to end, at most `patience`; killed (by its pid)
/// and `None` past it.
fn exit_within(child: Child, patience: Duration) -> Option<std::process::ExitStatus> {
    bounded(child, patience, |mut c| c.wait().unwrap())
}

/// `wait(child)` (which ends when the child does) on a thread of its own,
/// for at most `patience`: past it the child is killed (by its pid), and
/// reaped, and the answer is `None`.
fn bounded<T: Send + 'static>(
    child: Child,
    patience: Duration,
    wait: impl FnOnce(Child) -> T + Send + 'static,
) -> Option<T> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(wait(child));
    });
    match rx.recv_timeout(patience) {
        Ok(done) => Some(done),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = rx.recv();
            None
        }
    }
}

/// A raw connection: one request line, one reply line.
struct Raw(BufReader<UnixStream>);

impl Raw {
    fn connect(path: &Path) -> Raw {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Raw(BufReader::new(stream))
    }

    fn ask(&mut self, line: &[u8]) -> Value {
        self.0.get_mut().write_all(line).unwrap();
        self.0.get_mut().write_all(b"\n").unwrap();
        let mut reply = String::new();
        self.0.read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"))
    }
}

#[test]
fn every_op_steers_the_run_and_shows_in_its_events() {
    let mut run = Run::start("ops", SCENARIO);
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(run.socket()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "only its owner may connect"
    );
    let kv = status_of(&run, "kv");
    assert_eq!(kv["state"], "running");
    assert_eq!(kv["ready"], true);
    assert!(
        kv["pid"].as_u64().is_some() && kv["uptime_ms"].as_u64().is_some(),
        "{kv}"
    );
    assert_eq!(kv["restarts"], 0);
    let table = run.ctl(&["status"]);
    let table = text(&table);
    assert!(
        table.contains("NAME") && table.contains("ticker") && table.contains("running"),
        "{table}"
    );

    // A follower, started before the changes: it ends with the run.
    let follower = run.ctl_piped(&["events", "--follow", "--json", "--child", "kv"]);
    let _reap_follower = Reap(Some(follower));

    for args in [
        &["send", "kv", "hello"][..],
        &["send", "kv", "--json", r#"{"n": 1}"#],
        &["stop", "ticker"],
    ] {
        let out = run.ctl(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
    wait_state(&run, "ticker", "stopped");
    assert_eq!(run.ctl(&["start", "ticker"]).status.code(), Some(0));
    let before = wait_state(&run, "ticker", "running")["pid"].clone();
    assert_eq!(run.ctl(&["restart", "ticker"]).status.code(), Some(0));
    wait_status(&run, "ticker", "running as another pid", |s| {
        s["state"] == "running" && s["pid"] != before
    });
    assert_eq!(
        run.ctl(&["signal", "ticker", "KILL"]).status.code(),
        Some(0)
    );
    wait_state(&run, "ticker", "exited");
    assert_eq!(run.ctl(&["close", "kv"]).status.code(), Some(0));
    wait_state(&run, "kv", "exited"); // cat ends at the end of its input

    let past = run.ctl(&["events", "--json", "--child", "kv"]);
    let past: Vec<Value> = String::from_utf8_lossy(&past.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(past.iter().all(|e| e["child"] == "kv"), "only kv's");
    assert!(past.iter().any(|e| e["line"] == "hello"));

    assert_eq!(run.ctl(&["shutdown"]).status.code(), Some(0));
    assert_eq!(
        run.wait(),
        0,
        "an operator's shutdown of a run without steps passes"
    );
    assert!(!run.socket().exists(), "the socket is removed at the end");
    let timeline = run.stderr();
    for shown in ["ctl: send", "ctl: restart", "ctl: shutdown"] {
        assert!(
            timeline.contains(shown),
            "the timeline shows {shown}: {timeline}"
        );
    }

    let events = run.events();
    let ops: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["event"] == "control")
        .map(|e| {
            let child = e["child"].as_str().unwrap_or("-").to_string();
            (e["op"].as_str().unwrap().to_string(), child)
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("send", "kv"),
        ("send", "kv"),
        ("stop", "ticker"),
        ("start", "ticker"),
        ("restart", "ticker"),
        ("signal", "ticker"),
        ("close", "kv"),
        ("shutdown", "-"),
    ]
    .iter()
    .map(|(o, c)| (o.to_string(), c.to_string()))
    .collect();
    assert_eq!(ops, want);
    let sent: Vec<&Value> = events
        .iter()
        .filter(|e| e["child"] == "kv" && e["event"] == "output")
        .collect();
    assert_eq!(sent[0]["line"], "hello");
    assert_eq!(sent[1]["line"], r#"{"n":1}"#);

    // The follower had every kv event up to the end, then ended.
    let mut follower = _reap_follower;
    let stdout = follower.0.as_mut().unwrap().stdout.take().unwrap();
    let out = read_all_within(stdout, PATIENCE).expect("the follower ends with the run");
    let child = follower.0.take().unwrap();
    assert!(exit_within(child, PATIENCE).expect("it ended").success());
    let followed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kv_events: Vec<&Value> = events.iter().filter(|e| e["child"] == "kv").collect();
    assert_eq!(followed.iter().collect::<Vec<_>>(), kv_events);
}

/// Everything `from` gives until its end, if that comes within `patience`.
fn read_all_within(mut from: impl Read + Send + 'static, patience: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = from.read_to_string(&mut out);
        let _ = tx.send(out);
    });
    rx.recv_timeout(patience).ok()
}

/// Kills a helper process the test started, even when it fails.
struct Reap(Option<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn refusals_say_why_and_leave_the_connection_usable() {
    let run = Run::start("refusals", SCENARIO);
    let out = run.ctl(&["send", "kb", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no child named `kb` (did you mean `kv`?)"),
        "{}",
        text(&out)
    );
    assert_eq!(run.ctl(&["stop", "ticker"]).status.code(), Some(0));
    wait_state(&run, "ticker", "stopped");
    let out = run.ctl(&["send", "ticker", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("`ticker` is not running"),
        "{}",
        text(&out)
    );
    let out = run.ctl(&["signal", "kv", "NOPE"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("unknown signal `NOPE`"),
        "{}",
        text(&out)
    );
    assert_eq!(run.ctl(&["stat"]).status.code(), Some(2), "bad arguments");
    let out = Command::new(BIN)
        .args(["ctl", "/nonexistent/ctl.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "cannot connect");

    let mut raw = Raw::connect(&run.socket());
    let reply = raw.ask(b"{not json");
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"].as_str().unwrap().starts_with("bad request"),
        "{reply}"
    );
    let reply = raw.ask(br#"{"op": "stpo", "child": "kv"}"#);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("unknown variant `stpo`"),
        "{reply}"
    );
    let mut long = br#"{"op": "send", "child": "kv", "line": ""#.to_vec();
    long.extend(std::iter::repeat_n(b'x', (1 << 20) + 10));
    long.extend(br#""}"#);
    let reply = raw.ask(&long);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("longer than 1048576 bytes"),
        "{reply}"
    );
    let reply = raw.ask(b"{\"op\": \"status\xff\"}");
    assert!(
        reply["error"].as_str().unwrap().contains("not UTF-8"),
        "{reply}"
    );
    let reply = raw.ask(json!({"op": "status"}).to_string().as_bytes());
    assert_eq!(reply["ok"], true, "the connection still answers: {reply}");
}

#[test]
fn a_peer_with_another_uid_is_refused() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root to run a client as another uid (setpriv)");
        return;
    }
    let run = Run::start("uid", SCENARIO);
    let as_nobody = |socket: &Path| {
        Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                BIN,
                "ctl",
            ])
            .arg(socket)
            .arg("status")
            .output()
            .unwrap()
    };
    // Mode 0600: the file system already keeps another uid out.
    let out = as_nobody(&run.socket());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("Permission denied"), "{}", text(&out));
    // Past the mode, SO_PEERCRED still refuses it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(run.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&run.socket());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("refused: uid 65534 is not procession's uid 0"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_stale_socket_is_replaced_and_anything_else_at_the_path_is_refused() {
    // A socket whose listener is gone (a run that was killed).
    let mut run = Run::prepare("stale", SCENARIO);
    drop(std::os::unix::net::UnixListener::bind(run.socket()).unwrap());
    assert!(run.socket().exists());
    run.spawn();
    run.wait_for_socket();
    let reply = Raw::connect(&run.socket()).ask(br#"{"op": "status"}"#);
    assert_eq!(reply["ok"], true, "{reply}");

    // A live socket: another run's.
    let mut second = Run::prepare("live", SCENARIO);
    second.socket = run.socket();
    second.spawn();
    assert_eq!(second.wait(), 2);
    assert!(second.stderr().contains("another process is listening"));
    let reply = Raw::connect(&run.socket()).ask(br#"{"op": "status"}"#);
    assert_eq!(reply["ok"], true, "the first run still listens: {reply}");

    // A file that is not a socket.
    let mut third = Run::prepare("file", SCENARIO);
    std::fs::write(third.socket(), "keep me").unwrap();
    third.spawn();
    assert_eq!(third.wait(), 2);
    assert!(third.stderr().contains("exists and is not a socket"));
    assert_eq!(std::fs::read_to_string(third.socket()).unwrap(), "keep me");
}

#[test]
fn attach_types_into_a_child_and_prints_what_it_says() {
    let run = Run::start("attach", SCENARIO);
    let mut attach = run.ctl_piped(&["attach", "kv"]);
    let mut stdin = attach.stdin.take().unwrap();
    let stdout = attach.stdout.take().unwrap();
    let reap = Reap(Some(attach));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    for word in ["ping", "pong"] {
        writeln!(stdin, "{word}").unwrap();
        assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), word);
    }
    drop(stdin); // the end of input ends attach
    let mut reap = reap;
    let status = exit_within(reap.0.take().unwrap(), PATIENCE);
    assert!(status.expect("attach ends with its input").success());
    assert_eq!(
        status_of(&run, "kv")["state"],
        "running",
        "attach leaves the child running"
    );
}

#[test]
fn a_client_that_never_reads_loses_events_on_its_connection_only() {
    // 200,000 output events once told to go; the run lasts as long as its
    // child.
    let scenario = "[children.flood]\ncmd = [\"sh\", \"-c\", \"read go; seq 200000\"]\n";
    let mut run = Run::start("stall", scenario);
    let mut stalled = UnixStream::connect(run.socket()).unwrap();
    stalled
        .write_all(b"{\"op\": \"events\", \"follow\": true}\n")
        .unwrap();
    assert_eq!(run.ctl(&["send", "flood", "go"]).status.code(), Some(0));
    // Never read while the run goes on: it still ends by itself.
    assert_eq!(run.wait(), 0);
    let events = run.events();
    let outputs = events.iter().filter(|e| e["event"] == "output").count();
    assert_eq!(outputs, 200_000, "the events file has every line");
    // What it missed was counted in `lagged` lines (what was still queued
    // for it when the run ended is neither: it never read it).
    stalled.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = String::new();
    stalled.read_to_string(&mut got).unwrap();
    let lines: Vec<Value> = got
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let missed: u64 = lines
        .iter()
        .filter(|e| e["event"] == "lagged")
        .map(|e| e["missed"].as_u64().unwrap())
        .sum();
    let delivered = lines.iter().filter(|e| e["event"] != "lagged").count() as u64;
    assert!(missed > 0, "it lagged");
    assert!(delivered + missed <= events.len() as u64);
    assert!(delivered < 200_000);
}

#[test]
fn the_kv_example_is_steered_as_the_readme_shows() {
    let mut run = Run::prepare("kv", "");
    run.scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kv.toml");
    run.spawn();
    run.wait_for_socket();
    wait_until_ready(&run, "kv");
    assert_eq!(
        run.ctl(&["send", "kv", "SET colour blue"]).status.code(),
        Some(0)
    );
    let mut attach = run.ctl_piped(&["attach", "kv"]);
    // Piped input: attach prints the answer to the last line, then ends.
    attach
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET colour\n")
        .unwrap();
    let stdout = attach.stdout.take().unwrap();
    let _reap = Reap(Some(attach));
    let out = read_all_within(stdout, PATIENCE).expect("attach ends after its input");
    assert_eq!(out, "VALUE blue\n");
    assert_eq!(run.ctl(&["shutdown"]).status.code(), Some(0));
    assert_eq!(run.wait(), 0);
}

fn wait_until_ready(run: &Run, child: &str) {
    wait_status(run, child, "ready", |s| s["ready"] == true);
}
