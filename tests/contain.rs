//! Containment (DESIGN.md invariant 1): processes that leave their child's
//! process group never outlive it. Three kinds of escapee (see
//! `tests/contain/daemon.sh`): a `setsid` grandchild, a double-fork daemon,
//! and a daemon that re-parents twice; each under a `stop` step, a restart,
//! the end of a run, Ctrl-C, SIGKILL of procession, a batch timeout and the
//! end of a batch. Survivors are looked up in /proc by pid: by the test, and
//! where the moment matters, by a probe child inside the run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_procession");
const DAEMON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/contain/daemon.sh");
const PROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/contain/probe.sh");
const KINDS: [&str; 3] = ["setsid", "double-fork", "reparent-twice"];
const PATIENCE: Duration = Duration::from_secs(30);

/// A scratch directory for one case; on drop, kills every pid the daemons
/// wrote (a failing test leaves nothing behind) and removes it.
struct Case {
    dir: PathBuf,
    kind: &'static str,
    host: Option<Child>,
}

impl Case {
    fn new(kind: &'static str) -> Case {
        let dir = tempfile::Builder::new()
            .prefix("procession-contain-")
            .tempdir()
            .unwrap()
            .keep();
        Case {
            dir,
            kind,
            host: None,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn d(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// The child that leaves escapees, as a scenario's `cmd`.
    fn daemon(&self, after: &str) -> String {
        format!(
            r#"["sh", "{DAEMON}", "{}", "{}", "{after}"]"#,
            self.kind,
            self.d()
        )
    }

    fn probe(&self) -> String {
        format!(r#"["sh", "{PROBE}", "{}"]"#, self.d())
    }

    fn scenario(&self, text: &str) -> PathBuf {
        let path = self.file("scenario.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The pids the daemons left (empty until they wrote them).
    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.file("pids"))
            .unwrap_or_default()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect()
    }

    fn survivors(&self) -> Vec<u32> {
        self.pids().into_iter().filter(|&p| present(p)).collect()
    }

    fn assert_none_left(&self, when: &str) {
        let pids = self.pids();
        assert!(!pids.is_empty(), "{}: the daemons never started", self.kind);
        assert_eq!(
            self.survivors(),
            Vec::<u32>::new(),
            "{}: {when} left these of {pids:?}",
            self.kind
        );
    }

    /// Polls until the daemons wrote their pids.
    fn wait_for_daemons(&self) {
        let deadline = Instant::now() + PATIENCE;
        while self.pids().is_empty() {
            assert!(
                Instant::now() < deadline,
                "{}: no daemon in time",
                self.kind
            );
            // Polling a condition, with a deadline.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn run(&self, scenario: &Path) -> Output {
        Command::new(BIN)
            .arg("run")
            .arg(scenario)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        if let Some(host) = &mut self.host {
            let _ = host.kill();
            let _ = host.wait();
        }
        for pid in self.pids() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `pid` is still in /proc at all: alive, or a zombie nobody reaped.
fn present(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_stop_step_kills_what_escaped_the_child_before_the_next_step() {
    for kind in KINDS {
        let case = Case::new(kind);
        let scenario = case.scenario(&format!(
            r#"
[children.d]
cmd = {}
[children.probe]
cmd = {}

[[steps]]
expect = {{ from = "d", line = "^left" }}
[[steps]]
send = {{ to = "probe", line = "still there?" }}
[[steps]]
expect = {{ from = "probe", line = "^alive" }}
[[steps]]
stop = {{ child = "d" }}
[[steps]]
send = {{ to = "probe", line = "gone?" }}
[[steps]]
expect = {{ from = "probe", line = "^none left$", within = "1s" }}
"#,
            case.daemon("stay"),
            case.probe()
        ));
        let out = case.run(&scenario);
        assert_eq!(out.status.code(), Some(0), "{kind}: {}", text(&out));
        case.assert_none_left("a stop step");
    }
}

#[test]
fn a_restart_kills_what_the_last_instance_left_before_the_next_starts() {
    for kind in KINDS {
        let case = Case::new(kind);
        let scenario = case.scenario(&format!(
            r#"
[children.d]
cmd = {}
restart = "on-failure"
[children.probe]
cmd = {}

[[steps]]
expect = {{ from = "d", line = "^left" }}
[[steps]]
expect = {{ from = "d", line = "^again$" }}
[[steps]]
send = {{ to = "probe", line = "gone?" }}
[[steps]]
expect = {{ from = "probe", line = "^none left$", within = "1s" }}
"#,
            case.daemon("fail"),
            case.probe()
        ));
        let out = case.run(&scenario);
        assert_eq!(out.status.code(), Some(0), "{kind}: {}", text(&out));
        case.assert_none_left("a restart");
    }
}

#[test]
fn the_end_of_a_run_kills_what_a_child_that_ended_by_itself_left_running() {
    for kind in KINDS {
        let case = Case::new(kind);
        // A launcher that exits 0 leaves its daemon serving for the rest of
        // the run; the end of the run takes it down.
        let scenario = case.scenario(&format!(
            r#"
[children.d]
cmd = {}
[children.probe]
cmd = {}

[[steps]]
expect = {{ from = "d", line = "^left" }}
[[steps]]
expect_exit = {{ child = "d", code = 0 }}
[[steps]]
send = {{ to = "probe", line = "still there?" }}
[[steps]]
expect = {{ from = "probe", line = "^alive" }}
"#,
            case.daemon("done"),
            case.probe()
        ));
        let out = case.run(&scenario);
        assert_eq!(out.status.code(), Some(0), "{kind}: {}", text(&out));
        case.assert_none_left("the end of the run");
    }
}

/// Starts a run that waits forever once the daemons are up, and waits
/// until they are.
fn start_waiting_run(case: &mut Case) {
    let scenario = case.scenario(&format!(
        r#"
[children.d]
cmd = {}

[[steps]]
expect = {{ from = "d", line = "^left" }}
[[steps]]
wait = "1h"
"#,
        case.daemon("stay")
    ));
    let host = Command::new(BIN)
        .arg("run")
        .arg(&scenario)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    case.host = Some(host);
    case.wait_for_daemons();
}

#[test]
fn ctrl_c_kills_what_escaped_before_procession_exits() {
    for kind in KINDS {
        let mut case = Case::new(kind);
        start_waiting_run(&mut case);
        let host = case.host.take().unwrap();
        kill(Pid::from_raw(host.id() as i32), Signal::SIGINT).unwrap();
        let out = host.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{kind}: {}", text(&out));
        case.assert_none_left("Ctrl-C");
    }
}

#[test]
fn sigkill_of_procession_leaves_nothing_that_escaped() {
    for kind in KINDS {
        let mut case = Case::new(kind);
        start_waiting_run(&mut case);
        let mut host = case.host.take().unwrap();
        host.kill().unwrap(); // SIGKILL: only the watchdog is left to act
        host.wait().unwrap();
        // The watchdog acts on its own time: poll, with a deadline.
        let deadline = Instant::now() + PATIENCE;
        while !case.survivors().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        case.assert_none_left("SIGKILL of procession");
    }
}

fn batch(case: &Case, args: &[&str], jobs: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("batch")
        .args(args)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir(&case.dir)
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), jobs.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn results(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_batch_timeout_kills_what_escaped_the_job_before_its_slot_takes_the_next() {
    for kind in KINDS {
        let case = Case::new(kind);
        // One job at a time: the second looks for what the first left.
        let jobs = format!(
            "sh {DAEMON} {kind} {d} stay\nsh {PROBE} {d} once\n",
            d = case.d()
        );
        let out = batch(&case, &["-j", "1", "--timeout", "2s"], &jobs);
        assert_eq!(out.status.code(), Some(1), "{kind}: {}", text(&out));
        let results = results(&out);
        let first = results.iter().find(|r| r["key"] == "1").expect("job 1");
        let second = results.iter().find(|r| r["key"] == "2").expect("job 2");
        assert_eq!(first["timed_out"], true, "{kind}: {first}");
        assert_eq!(second["stdout"], "none left\n", "{kind}: {second}");
        case.assert_none_left("a batch timeout");
    }
}

#[test]
fn the_end_of_a_batch_kills_what_escaped_its_jobs() {
    for kind in KINDS {
        let case = Case::new(kind);
        let jobs = format!("sh {DAEMON} {kind} {} done\n", case.d());
        let out = batch(&case, &[], &jobs);
        assert_eq!(out.status.code(), Some(0), "{kind}: {}", text(&out));
        case.assert_none_left("the end of a batch");
    }
}
