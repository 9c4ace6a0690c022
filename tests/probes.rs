//! Readiness and liveness probes against real listeners on 127.0.0.1, on
//! ports chosen free here; each listener is a child of the run, so it
//! stops with it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_procession");

/// A fresh temp dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("procession-probes-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port that was free a moment ago (the listener is the run's child).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `scenario` with `--set` values; gives the exit code, stderr and
/// the events.
fn run(dir: &Dir, scenario: &str, set: &[(&str, String)]) -> (i32, String, Vec<Value>) {
    let file = dir.path("s.toml");
    std::fs::write(&file, scenario).unwrap();
    let events = dir.path("events.jsonl");
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg(&file)
        .arg("--timeout")
        .arg("30s")
        .arg("--events")
        .arg(&events);
    for (k, v) in set {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    let out: Output = cmd.env("NO_COLOR", "1").output().unwrap();
    let evs = read_events(&events);
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        evs,
    )
}

fn read_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Where the first event of `kind` about `child` (and passing `f`) is.
fn at(evs: &[Value], kind: &str, child: &str, f: impl Fn(&Value) -> bool) -> usize {
    evs.iter()
        .position(|e| e["event"] == kind && e["child"] == child && f(e))
        .unwrap_or_else(|| panic!("no {kind} of {child} in {evs:#?}"))
}

fn line(want: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["line"] == want
}

/// A TCP server that waits for `listen` on stdin before it binds, then
/// holds connections until its stdin ends.
const TCP_SERVER: &str = r#"
import socket, sys
port = int(sys.argv[1])
print("waiting", flush=True)
sys.stdin.readline()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
print("listening", flush=True)
sys.stdin.read()
"#;

#[test]
fn a_tcp_probe_is_ready_only_once_the_port_listens() {
    let dir = Dir::new();
    let scenario = format!(
        r#"
[children.srv]
cmd = ["python3", "-u", "-c", '''{TCP_SERVER}''', "${{vars.port}}"]
ready = {{ tcp = "127.0.0.1:${{vars.port}}", every = "20ms" }}

[children.client]
cmd = ["echo", "client up"]
depends_on = ["srv"]

[[steps]]
expect = {{ from = "srv", line = "^waiting$" }}
[[steps]]
send = {{ to = "srv", line = "listen" }}
[[steps]]
expect = {{ from = "client", line = "^client up$" }}
[[steps]]
close = {{ child = "srv" }}
[[steps]]
expect_exit = {{ child = "srv", code = 0 }}
"#
    );
    let (code, err, evs) = run(&dir, &scenario, &[("port", free_port().to_string())]);
    assert_eq!(code, 0, "{err}");
    let listening = at(&evs, "output", "srv", line("listening"));
    let ready = at(&evs, "ready", "srv", |_| true);
    assert!(listening < ready, "not ready before it listened");
    assert!(ready < at(&evs, "spawned", "client", |_| true));
}

#[test]
fn an_http_probe_waits_through_503_for_a_200() {
    let dir = Dir::new();
    let server = r#"
import http.server, sys
n = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global n
        n += 1
        status = 503 if n <= 3 else 200
        print(f"served {n} {status}", flush=True)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;
    let scenario = format!(
        r#"
[children.web]
cmd = ["python3", "-u", "-c", '''{server}''', "${{vars.port}}"]
ready = {{ http = "http://127.0.0.1:${{vars.port}}/health", every = "20ms" }}

[children.client]
cmd = ["echo", "client up"]
depends_on = ["web"]

[[steps]]
expect = {{ from = "client", line = "^client up$" }}
[[steps]]
stop = {{ child = "web" }}
"#
    );
    let (code, err, evs) = run(&dir, &scenario, &[("port", free_port().to_string())]);
    assert_eq!(code, 0, "{err}");
    let ready = at(&evs, "ready", "web", |_| true);
    for n in 1..=3 {
        let served = format!("served {n} 503");
        assert!(at(&evs, "output", "web", |e| e["line"] == served.as_str()) < ready);
    }
    assert!(at(&evs, "output", "web", line("served 4 200")) < ready);
}

#[test]
fn an_exec_probe_is_ready_when_its_program_exits_0() {
    let dir = Dir::new();
    let flag = dir.path("flag");
    let scenario = r#"
[children.srv]
cmd = ["sh", "-c", "echo waiting; read x; touch \"$1\"; echo flagged; exec cat", "sh", "${vars.flag}"]
ready = { exec = ["test", "-e", "${vars.flag}"], every = "20ms" }

[children.client]
cmd = ["echo", "client up"]
depends_on = ["srv"]

[[steps]]
expect = { from = "srv", line = "^waiting$" }
[[steps]]
send = { to = "srv", line = "go" }
[[steps]]
expect = { from = "client", line = "^client up$" }
[[steps]]
close = { child = "srv" }
"#;
    let (code, err, evs) = run(&dir, scenario, &[("flag", flag.display().to_string())]);
    assert_eq!(code, 0, "{err}");
    assert!(at(&evs, "output", "srv", line("flagged")) < at(&evs, "ready", "srv", |_| true));
}

#[test]
fn a_readiness_probe_past_within_stops_the_child_and_its_dependents_are_not_started() {
    let dir = Dir::new();
    let scenario = r#"
[children.srv]
cmd = ["sleep", "30"]
ready = { tcp = "127.0.0.1:${vars.port}", every = "20ms", within = "300ms" }

[children.client]
cmd = ["echo", "client up"]
depends_on = ["srv"]
"#;
    let (code, err, evs) = run(&dir, scenario, &[("port", free_port().to_string())]);
    assert_eq!(code, 1, "{err}");
    let unhealthy = &evs[at(&evs, "unhealthy", "srv", |_| true)];
    let reason = unhealthy["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("not ready within 300ms; the last try: tcp 127.0.0.1:"),
        "{reason}"
    );
    assert!(at(&evs, "exited", "srv", |_| true) > at(&evs, "unhealthy", "srv", |_| true));
    at(&evs, "not_started", "client", |_| true);
    assert!(err.contains("unhealthy"), "{err}");
}

#[test]
fn a_failing_liveness_probe_makes_the_child_unhealthy_and_it_is_restarted() {
    let dir = Dir::new();
    let flag = dir.path("alive");
    // Each instance says `up` and creates the flag; told `sick`, it removes
    // it and hangs on; at the end of its input it exits 0.
    let scenario = r#"
[children.srv]
cmd = ["sh", "-c", "touch \"$1\"; echo up; read x || exit 0; rm \"$1\"; exec sleep 30", "sh", "${vars.flag}"]
alive = { exec = ["test", "-e", "${vars.flag}"], every = "30ms", failures = 2 }
restart = { policy = "on-failure", backoff = "10ms" }
stop = { signal = "TERM", grace = "1s" }

[[steps]]
expect = { from = "srv", line = "^up$" }
[[steps]]
send = { to = "srv", line = "sick" }
[[steps]]
expect = { from = "srv", line = "^up$", within = "10s" }
[[steps]]
close = { child = "srv" }
[[steps]]
expect_exit = { child = "srv", code = 0 }
"#;
    let (code, err, evs) = run(&dir, scenario, &[("flag", flag.display().to_string())]);
    assert_eq!(code, 0, "{err}");
    let unhealthy = at(&evs, "unhealthy", "srv", |_| true);
    assert!(
        evs[unhealthy]["reason"]
            .as_str()
            .unwrap()
            .starts_with("2 liveness checks failed in a row; the last: exec test: exit status: 1"),
        "{:?}",
        evs[unhealthy]
    );
    assert!(unhealthy < at(&evs, "restarting", "srv", |_| true));
    at(&evs, "spawned", "srv", |e| e["attempt"] == 2);
}

#[test]
fn a_probe_that_hangs_is_bounded_by_its_timeout_and_stalls_no_frames() {
    let dir = Dir::new();
    // Accepts connections and never answers them, saying when the other
    // side closes one; echoes its stdin.
    let server = r#"
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
def hold(c, n):
    while c.recv(4096):
        pass
    print(f"closed {n}", flush=True)
def accept():
    n = 0
    while True:
        c, _ = s.accept()
        n += 1
        print(f"conn {n}", flush=True)
        threading.Thread(target=hold, args=(c, n), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
for line in sys.stdin:
    print("echo " + line.strip(), flush=True)
"#;
    let scenario = format!(
        r#"
[children.mute]
cmd = ["python3", "-u", "-c", '''{server}''', "${{vars.port}}"]
ready = {{ http = "http://127.0.0.1:${{vars.port}}/", every = "20ms", timeout = "150ms", within = "20s" }}

[[steps]]
expect = {{ from = "mute", line = "^conn 1$", within = "5s" }}
[[steps]]
send = {{ to = "mute", line = "ping" }}
[[steps]]
expect = {{ from = "mute", line = "^echo ping$", within = "5s" }}
[[steps]]
expect = {{ from = "mute", line = "^closed 1$", within = "5s" }}
[[steps]]
expect = {{ from = "mute", line = "^conn 3$", within = "5s" }}
[[steps]]
stop = {{ child = "mute" }}
"#
    );
    let (code, err, evs) = run(&dir, &scenario, &[("port", free_port().to_string())]);
    assert_eq!(code, 0, "{err}");
    // Three tries reached it, and the first closed its connection: each
    // gave up after its timeout, not after `within`; and the echo came
    // while they hung.
    let echo = at(&evs, "output", "mute", line("echo ping"));
    assert!(at(&evs, "output", "mute", line("conn 1")) < echo);
    assert!(echo < at(&evs, "output", "mute", line("conn 3")));
    assert!(
        !evs.iter().any(|e| e["event"] == "ready"),
        "a mute server is never ready"
    );
}

#[test]
fn an_exec_probe_whose_program_is_missing_fails_the_child_at_once() {
    let dir = Dir::new();
    let scenario = r#"
[children.srv]
cmd = ["sleep", "30"]
ready = { exec = ["procession-no-such-program"] }
"#;
    let (code, err, evs) = run(&dir, scenario, &[]);
    assert_eq!(code, 1, "{err}");
    let unhealthy = &evs[at(&evs, "unhealthy", "srv", |_| true)];
    assert!(
        unhealthy["reason"]
            .as_str()
            .unwrap()
            .starts_with("its probe cannot run: exec procession-no-such-program:"),
        "{unhealthy}"
    );
}
