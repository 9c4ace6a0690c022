//! The `procession` binary: exit statuses, error texts, the events file,
//! SIGINT, and every example scenario. Scenarios here use system tools and
//! the bundled examples (python3), not the fixture crate.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_procession");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn procession(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(ROOT)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not signalled")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A scenario file in a fresh temp dir, removed on drop.
struct TempScenario {
    dir: PathBuf,
    path: PathBuf,
}

impl TempScenario {
    fn new(name: &str, text: &str) -> TempScenario {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("procession-cli-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        TempScenario { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for TempScenario {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills what a test started, even when it fails.
struct Reaper(Vec<u32>, Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, killpg, Signal};
        use nix::unistd::Pid;
        if let Some(child) = &mut self.1 {
            let _ = child.kill();
            let _ = child.wait();
        }
        for &pid in &self.0 {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap();
            state != 'Z' && state != 'X'
        }
        Err(_) => false,
    }
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// The whole lines of an events file still being written.
fn events_so_far(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_example_scenario_passes() {
    for example in [
        "examples/demo.toml",
        "examples/two_phase_commit.toml",
        "examples/pipeline.toml",
        "examples/repl.toml",
        "examples/login.toml",
    ] {
        let out = procession(&["run", example, "--timeout", "60s"]);
        assert_eq!(code(&out), 0, "{example}:\n{}", stderr(&out));
        assert!(stderr(&out).contains("PASSED"), "{example}");
    }
    // The web example listens: on a port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let set = format!("port={port}");
    let out = procession(&[
        "run",
        "examples/web.toml",
        "--set",
        &set,
        "--timeout",
        "60s",
    ]);
    assert_eq!(code(&out), 0, "examples/web.toml:\n{}", stderr(&out));
    assert!(stderr(&out).contains("PASSED"));
}

#[test]
fn a_failing_step_exits_1_with_its_diagnostic() {
    let s = TempScenario::new(
        "fail.toml",
        r#"
[children.cat]
cmd = ["cat"]
[[steps]]
send = { to = "cat", line = "hello" }
[[steps]]
expect = { from = "cat", line = "^goodbye$", within = "300ms" }
label = "farewell"
"#,
    );
    let out = procession(&["run", s.path()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("step 2 FAILED (farewell): waited"), "{err}");
    assert!(
        err.contains("cat: hello"),
        "the diagnostic shows the last lines: {err}"
    );
    assert!(err.contains("FAILED  1/2 steps passed"), "{err}");
}

#[test]
fn invalid_scenarios_exit_2_naming_file_line_column_and_key() {
    let s = TempScenario::new(
        "bad.toml",
        "[children.a]\ncmd = [\"cat\"]\nframng = \"json\"\n\n[children.b]\ncmd = [\"cat\"]\ndepends_on = [\"c\"]\n\n[children.c]\ncmd = [\"cat\"]\ndepends_on = [\"b\"]\n\n[[routes]]\nfrom = \"a\"\nto = \"bb\"\n",
    );
    for command in ["run", "check"] {
        let out = procession(&[command, s.path()]);
        assert_eq!(code(&out), 2, "{command}");
        let f = s.path();
        let expected = format!(
            "{f}:3:1: children.a.framng: unknown field `framng` (did you mean `framing`?)\n\
             {f}:7:1: children.b.depends_on: dependency cycle: b -> c -> b\n\
             {f}:15:1: routes[1].to: route 1 (a -> bb): `bb` is not a child (did you mean `b`?)\n\
             {f} is invalid: 3 problems\n"
        );
        assert_eq!(stderr(&out), expected, "{command}");
    }
}

#[test]
fn terminal_children_are_checked_at_their_keys() {
    let s = TempScenario::new(
        "term.toml",
        "[children.a]\ncmd = [\"cat\"]\nterminal = true\nstderr = \"merge\"\n\n[children.b]\ncmd = [\"cat\"]\nterminal = \"yes\"\n\n[children.c]\ncmd = [\"cat\"]\nterminal = true\nframing = \"length_delimited\"\n",
    );
    let out = procession(&["check", s.path()]);
    assert_eq!(code(&out), 2);
    let f = s.path();
    let expected = format!(
        "{f}:4:1: children.a.stderr: child `a`: a terminal child has one output stream, its terminal: leave `stderr` unset\n\
         {f}:8:12: children.b.terminal: expected `true`, `false` or a table `{{ rows, cols, echo }}` (rows and cols as numbers, echo as true or false)\n\
         {f}:13:1: children.c.framing: child `c`: a terminal rewrites what passes it; use lines, json or bytes framing\n\
         {f} is invalid: 3 problems\n"
    );
    assert_eq!(stderr(&out), expected);

    let good = TempScenario::new(
        "term-ok.toml",
        "[children.a]\ncmd = [\"cat\"]\nterminal = { rows = 40, cols = 120, echo = true }\n",
    );
    let out = procession(&["check", good.path()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[lines; terminal 120x40, echo]"), "{text}");
}

#[test]
fn a_prompt_is_checked_against_the_childs_framing_and_never_routed() {
    let s = TempScenario::new(
        "prompt.toml",
        "[children.j]\ncmd = [\"cat\"]\nframing = \"json\"\n\n[[steps]]\nexpect = { from = \"j\", prompt = \"> $\" }\n[[steps]]\nexpect = { from = \"j\", to = \"j\", prompt = \"x\" }\n",
    );
    let out = procession(&["check", s.path()]);
    assert_eq!(code(&out), 2);
    let f = s.path();
    let expected = format!(
        "{f}:6:24: steps[1].expect.prompt: step 1: `j` has framing `json`, which has no prompts (a prompt is the unterminated tail of a line: use `lines` framing, or expect `line` or `json`)\n\
         {f}:7:1: steps[2]: a routed message (`to`) is never a prompt: use `line` or `json`\n\
         {f} is invalid: 2 problems\n"
    );
    assert_eq!(stderr(&out), expected);
}

#[test]
fn both_paths_of_the_login_example_pass_and_say_which_way_they_went() {
    for (asks, outcome, steps) in [("key", 1, 7), ("password", 0, 4)] {
        let s = TempScenario::new("unused.toml", "");
        let events_file = s.file("events.jsonl");
        let out = Command::new(BIN)
            .args(["run", "examples/login.toml", "--events"])
            .arg(&events_file)
            .current_dir(ROOT)
            .env("NO_COLOR", "1")
            .env("LOGIN_ASKS", asks)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{asks}: {}", stderr(&out));
        let evs = events(&events_file);
        let passed: Vec<&Value> = evs.iter().filter(|e| e["event"] == "step_passed").collect();
        assert_eq!(passed.len(), steps, "{asks}: {passed:?}");
        assert_eq!(passed[0]["outcome"], outcome, "{asks}: {}", passed[0]);
        assert!(passed[1].get("outcome").is_none(), "a plain step has none");
    }
}

#[test]
fn flow_keys_are_checked_and_expect_not_and_max_visits_run() {
    let bad = TempScenario::new(
        "flow.toml",
        "[children.a]\ncmd = [\"cat\"]\n\n[[steps]]\nexpect = { from = \"a\", line = \"x\", on_timeout = \"ned\" }\n[[steps]]\nwait = \"1s\"\nlabel = \"end\"\n",
    );
    let out = procession(&["check", bad.path()]);
    assert_eq!(code(&out), 2);
    let f = bad.path();
    assert_eq!(
        stderr(&out),
        format!(
            "{f}:5:36: steps[1].expect.on_timeout: step 1: `on_timeout` goes to `ned`, which no step is labelled (did you mean `end`?)\n{f} is invalid: 1 problem\n"
        )
    );
    // A loop that never ends is stopped by max_visits; expect_not passes
    // when nothing matches.
    let looping = TempScenario::new(
        "loop.toml",
        "[protocol]\nmax_visits = 3\n\n[children.a]\ncmd = [\"sh\", \"-c\", \"while read l; do echo more; done\"]\n\n[[steps]]\nexpect_not = { from = \"a\", line = \"error\", within = \"50ms\" }\n[[steps]]\nsend = { to = \"a\", line = \"again?\" }\nlabel = \"top\"\n[[steps]]\nexpect = { from = \"a\", any = [ { line = \"^more$\", goto = \"top\" }, { line = \"^done$\" } ] }\n",
    );
    let out = procession(&["run", looping.path()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("step 1 passed"), "{err}");
    assert!(
        err.contains("step 2 was reached more than max_visits (3) times"),
        "{err}"
    );
}

#[test]
fn variables_are_substituted_at_load_from_vars_set_and_env() {
    let s = TempScenario::new(
        "vars.toml",
        "[vars]\nword = \"from-file\"\n\n[children.e]\ncmd = [\"echo\", \"${vars.word}\", \"${env.PROCESSION_TEST_VAR}\", \"${env.PROCESSION_UNSET_VAR:-dflt}\", \"$${vars.word}\", \"${sid}\"]\n",
    );
    let events_file = s.file("events.jsonl");
    let run = |set: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg(s.path())
            .arg("--events")
            .arg(&events_file);
        for v in set {
            cmd.args(["--set", v]);
        }
        let out = cmd
            .env("NO_COLOR", "1")
            .env("PROCESSION_TEST_VAR", "from-env")
            .env_remove("PROCESSION_UNSET_VAR")
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        output_lines(&events(&events_file), "e")
    };
    assert_eq!(run(&[]), ["from-file from-env dflt ${vars.word} ${sid}"]);
    assert_eq!(
        run(&["word=from-set"]),
        ["from-set from-env dflt ${vars.word} ${sid}"]
    );

    let unknown = TempScenario::new(
        "unknown.toml",
        "[children.e]\ncmd = [\"echo\", \"${vars.wrod}\"]\n",
    );
    let out = procession(&["check", unknown.path(), "--set", "word=x"]);
    assert_eq!(code(&out), 2);
    let f = unknown.path();
    assert_eq!(
        stderr(&out),
        format!("{f}:2:16: children.e.cmd[2]: unknown variable `vars.wrod`: set it in [vars] or with --set wrod=VALUE (did you mean `vars.word`?)\n{f} is invalid: 1 problem\n")
    );
    let out = procession(&["check", unknown.path(), "--set", "novalue"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("expected NAME=VALUE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn two_phase_commit_runs_with_five_participants() {
    let dir = TempScenario::new("unused.toml", "");
    let events_file = dir.file("events.jsonl");
    let out = procession(&[
        "run",
        "examples/two_phase_commit.toml",
        "--set",
        "participants=5",
        "--timeout",
        "60s",
        "--events",
        events_file.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let evs = events(&events_file);
    for i in 1..=5 {
        let p = format!("participant-{i}");
        let votes = evs
            .iter()
            .filter(|e| {
                e["event"] == "routed" && e["from"] == p.as_str() && e["to"] == "coordinator"
            })
            .count();
        assert_eq!(votes, 2, "{p} voted and acked");
        assert!(
            evs.iter()
                .any(|e| e["event"] == "exited" && e["child"] == p.as_str() && e["code"] == 0),
            "{p} ended cleanly"
        );
    }
}

#[test]
fn a_group_name_means_every_replica_in_routes_steps_and_depends_on() {
    let s = TempScenario::new(
        "group.toml",
        r#"
[vars]
n = 3

[children.hub]
cmd = ["cat"]
depends_on = ["w"]

[children.w]
count = "${vars.n}"
cmd = ["sh", "-c", "echo up ${child.index}; exec cat"]
ready = { line = "^up" }

[[routes]]
from = "w"
to = "hub"
match = "^echo"

[[routes]]
from = "hub"
to = "w"
match = "^bcast"

[[steps]]
expect = { from = "w", line = "^up 2$" }
[[steps]]
send = { to = "w", line = "echo hi" }
[[steps]]
expect = { from = "hub", line = "^echo hi$" }
[[steps]]
expect = { from = "hub", line = "^echo hi$" }
[[steps]]
expect = { from = "hub", line = "^echo hi$" }
[[steps]]
send = { to = "hub", line = "bcast x" }
[[steps]]
expect = { from = "w-3", line = "^bcast x$" }
[[steps]]
expect = { from = "w-1", line = "^bcast x$" }
[[steps]]
expect = { from = "w-2", line = "^bcast x$" }
[[steps]]
stop = { child = "w" }
[[steps]]
start = { child = "w" }
[[steps]]
kill = { child = "w", signal = "KILL" }
[[steps]]
expect_exit = { child = "w", signal = "KILL" }
[[steps]]
close = { child = "hub" }
[[steps]]
expect_exit = { child = "hub", code = 0 }
"#,
    );
    let events_file = s.file("events.jsonl");
    let out = procession(&[
        "run",
        s.path(),
        "--timeout",
        "30s",
        "--events",
        events_file.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let evs = events(&events_file);
    let count = |kind: &str, child: &str, f: &dyn Fn(&Value) -> bool| {
        evs.iter()
            .filter(|e| e["event"] == kind && e["child"] == child && f(e))
            .count()
    };
    let hub = output_lines(&evs, "hub");
    assert_eq!(
        hub.iter().filter(|l| *l == "echo hi").count(),
        3,
        "send to the group reached each replica, and each routed to hub: {hub:?}"
    );
    for i in 1..=3 {
        let w = format!("w-{i}");
        assert!(
            output_lines(&evs, &w).contains(&"bcast x".to_string()),
            "a route to the group gives each replica the frame"
        );
        assert_eq!(count("spawned", &w, &|_| true), 2, "{w}: started again");
        assert_eq!(count("stopped", &w, &|_| true), 1, "{w}: stopped");
        assert_eq!(
            count("exited", &w, &|e| e["signal"] == "KILL"),
            1,
            "{w}: killed"
        );
    }
    // depends_on the group: hub was spawned after every replica was ready.
    let at = |kind: &str, child: &str| {
        evs.iter()
            .position(|e| e["event"] == kind && e["child"] == child)
            .unwrap()
    };
    let hub_spawned = at("spawned", "hub");
    for i in 1..=3 {
        assert!(at("ready", &format!("w-{i}")) < hub_spawned);
    }
}

#[test]
fn log_dir_keeps_each_childs_exact_bytes_across_restarts() {
    let s = TempScenario::new(
        "logs.toml",
        r#"
[children.noisy]
cmd = ["sh", "-c", "printf 'out\\377 no newline'; printf 'err line\\n' >&2; exit 3"]
restart = { policy = "on-failure", max = 1, backoff = "10ms" }

[children.tty]
cmd = ["printf", "t1\\nt2\\n"]
terminal = true
"#,
    );
    let logs = s.file("logs/deeper");
    let out = procession(&["run", s.path(), "--log-dir", logs.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "noisy gave up: {}", stderr(&out));
    let read = |name: &str| std::fs::read(logs.join(name)).unwrap();
    assert_eq!(
        read("noisy.stdout"),
        b"out\xff no newlineout\xff no newline",
        "both instances, exact"
    );
    assert_eq!(read("noisy.stderr"), b"err line\nerr line\n");
    assert_eq!(
        read("tty.stdout"),
        b"t1\nt2\n",
        "after the terminal's \\r\\n"
    );
    assert_eq!(
        read("tty.stderr"),
        b"",
        "a terminal has one stream; the file exists"
    );
    // A directory that cannot be made: exit 2, naming it, before anything runs.
    let under_a_file = format!("{}/logs", s.path());
    let out = procession(&["run", s.path(), "--log-dir", &under_a_file]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("cannot create the log directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_arguments_and_a_missing_file_exit_2() {
    let out = procession(&["run", "examples/demo.toml", "--timeout", "soon"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("invalid duration `soon`"),
        "{}",
        stderr(&out)
    );
    let out = procession(&["run", "no/such/file.toml"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).starts_with("no/such/file.toml: cannot read the file:"),
        "{}",
        stderr(&out)
    );
    let out = procession(&["frobnicate"]);
    assert_eq!(code(&out), 2);
}

#[test]
fn the_events_file_has_the_documented_kinds_and_fields() {
    let s = TempScenario::new("x.toml", "");
    let file = s.file("events.jsonl");
    let out = procession(&[
        "run",
        "examples/demo.toml",
        "--events",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let evs = events(&file);
    let of = |kind: &str| -> Vec<&Value> { evs.iter().filter(|e| e["event"] == kind).collect() };
    for e in &evs {
        assert!(e["t_ms"].is_u64(), "{e}");
        if e.get("child").is_some() {
            assert!(e["seq"].is_u64(), "child events carry seq: {e}");
        }
    }
    let spawned = of("spawned");
    assert_eq!(spawned.len(), 2, "one restart");
    assert!(spawned[0]["pid"].is_u64() && spawned[1]["attempt"] == 2);
    assert!(of("ready").len() == 2);
    assert!(of("output")
        .iter()
        .any(|e| e["stream"] == "stdout" && e["line"] == "listening"));
    let restarting = of("restarting");
    assert_eq!(restarting[0]["attempt"], 1);
    assert_eq!(restarting[0]["delay_ms"], 200);
    assert!(of("exited")
        .iter()
        .any(|e| e["signal"] == "KILL" && e["requested"] == true));
    let passed = of("step_passed");
    assert_eq!(passed.len(), 11);
    assert_eq!(passed[0]["step"], 1);
    assert_eq!(passed[0]["label"], "the service is up");
    assert!(passed[0]["duration_ms"].is_u64());
    assert!(of("stopped").len() == 1 && of("shutdown").len() == 1);
    // Per-child sequence numbers are consecutive.
    let seqs: Vec<u64> = evs
        .iter()
        .filter(|e| e["child"] == "kv")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    // The last line is `finished`.
    assert_eq!(evs.last().unwrap()["event"], "finished");
    assert_eq!(evs.last().unwrap()["passed"], true);

    // Routed frames, from the pipeline.
    let out = procession(&[
        "run",
        "examples/pipeline.toml",
        "--events",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0);
    let evs = events(&file);
    let routed: Vec<&Value> = evs.iter().filter(|e| e["event"] == "routed").collect();
    assert_eq!(routed.len(), 2000);
    assert!(routed
        .iter()
        .any(|e| e["from"] == "produce" && e["to"] == "double"));
}

/// Regression: `finished` was published twice when every child had already
/// exited before the run ended (here: a scenario without steps).
#[test]
fn finished_is_published_exactly_once_and_last_when_every_child_already_exited() {
    let s = TempScenario::new("x.toml", "");
    let file = s.file("events.jsonl");
    for scenario in ["examples/pipeline.toml", "examples/demo.toml"] {
        let out = procession(&["run", scenario, "--events", file.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{scenario}: {}", stderr(&out));
        let evs = events(&file);
        let finished = evs.iter().filter(|e| e["event"] == "finished").count();
        assert_eq!(finished, 1, "{scenario}: one `finished`");
        assert_eq!(evs.last().unwrap()["event"], "finished", "{scenario}: last");
    }
}

#[test]
fn sigint_stops_every_child_completes_the_events_file_and_exits_130() {
    interrupted_run(
        nix::sys::signal::Signal::SIGINT,
        130,
        "INTERRUPTED (SIGINT)",
    );
}

#[test]
fn sigterm_does_the_same_and_exits_143() {
    interrupted_run(
        nix::sys::signal::Signal::SIGTERM,
        143,
        "INTERRUPTED (SIGTERM)",
    );
}

/// Regression (issue 15, item 3): SIGHUP (a closed terminal, a dropped
/// ssh) ended procession at once with 129 and no graceful stop.
#[test]
fn sighup_stops_every_child_gracefully_and_exits_129() {
    interrupted_run(
        nix::sys::signal::Signal::SIGHUP,
        129,
        "INTERRUPTED (SIGHUP)",
    );
}

fn interrupted_run(signal: nix::sys::signal::Signal, status: i32, headline: &str) {
    let s = TempScenario::new(
        "sleepy.toml",
        r#"
[children.parent]
cmd = ["sh", "-c", "sleep 60 & echo grandchild $!; echo ready; wait"]
ready = { line = "^ready$" }
[children.other]
cmd = ["sleep", "60"]
depends_on = ["parent"]
"#,
    );
    let file = s.file("events.jsonl");
    let child = Command::new(BIN)
        .args(["run", s.path(), "--events", file.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reaper = Reaper(Vec::new(), Some(child));
    // Wait (with a deadline) until the timeline says `other` is running.
    let stderr = reaper.1.as_mut().unwrap().stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines.next().expect("the run ended early").unwrap();
        if line.contains("other") && line.contains("spawned") {
            break;
        }
        assert!(Instant::now() < deadline, "other never started");
    }
    // The events file is written within 100 ms, not at once: read it
    // (whole lines only) until it has them, with a deadline. Nothing tells
    // us when the writer flushed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pids = loop {
        let pids: Vec<u32> = events_so_far(&file)
            .iter()
            .filter_map(|e| {
                e["pid"].as_u64().or_else(|| {
                    e["line"]
                        .as_str()?
                        .strip_prefix("grandchild ")?
                        .parse()
                        .ok()
                })
            })
            .map(|p| p as u32)
            .collect();
        if pids.len() >= 3 || Instant::now() > deadline {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    reaper.0.extend(&pids);
    assert_eq!(pids.len(), 3, "two children and a grandchild: {pids:?}");

    let host = reaper.1.as_ref().unwrap().id();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(host as i32), signal).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = reaper.1.as_mut().unwrap().wait().unwrap();
    assert_eq!(exit.code(), Some(status), "{rest:#?}");
    assert!(rest.iter().any(|l| l.contains(headline)), "{rest:#?}");
    let survivors: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(survivors.is_empty(), "survivors: {survivors:?}");
    let evs = events(&file);
    assert_eq!(
        evs.last().unwrap()["event"],
        "finished",
        "the events file is complete"
    );
    assert_eq!(evs.iter().filter(|e| e["event"] == "exited").count(), 2);
}

#[test]
fn check_prints_children_in_start_order_routes_and_steps() {
    let out = procession(&["check", "examples/pipeline.toml"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let sum = text.find("1. sum").unwrap();
    let double = text.find("2. double").unwrap();
    let produce = text.find("3. produce").unwrap();
    assert!(sum < double && double < produce, "{text}");
    assert!(text.contains("produce -> double (stdout)"), "{text}");
    assert!(
        text.contains("5. expect from sum: JSON containing"),
        "{text}"
    );
}

#[test]
fn help_teaches_by_example_and_completions_are_generated() {
    let out = procession(&["run", "--help"]);
    assert_eq!(code(&out), 0);
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("procession run examples/demo.toml"), "{help}");
    assert!(help.contains("130 interrupted"), "{help}");
    for (command, example) in [
        ("ctl", "procession ctl /tmp/kv.sock restart kv"),
        (
            "diagram",
            "procession diagram run.jsonl --format svg -o run.svg",
        ),
    ] {
        let out = procession(&[command, "--help"]);
        assert_eq!(code(&out), 0);
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains(example), "{command} --help: {help}");
    }
    let out = procession(&["completions", "bash"]);
    assert_eq!(code(&out), 0);
    let script = String::from_utf8(out.stdout).unwrap();
    for word in [
        "procession__subcmd__ctl",
        "procession__subcmd__diagram",
        "ctl__subcmd__attach",
    ] {
        assert!(script.contains(word), "completions know {word}");
    }
}

/// `procession batch ARGS` run in `cwd` with `input` on its stdin.
fn batch_with_stdin(cwd: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("batch")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn result_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn batch_lines_are_split_like_a_shell_and_never_reach_one() {
    let out = batch_with_stdin(
        Path::new(ROOT),
        &["-j", "2", "-"],
        "echo $HOME;x\n\n# skipped\nsh -c 'echo oops >&2; exit 3'\n",
    );
    assert_eq!(code(&out), 1, "a job failed: {}", stderr(&out));
    let mut lines = result_lines(&out);
    lines.sort_by_key(|v| v["key"].as_str().unwrap().to_string());
    assert_eq!(lines[0]["key"], "1");
    assert_eq!(lines[0]["stdout"], "$HOME;x\n");
    assert_eq!(lines[0]["exit_code"], 0);
    assert_eq!(lines[0]["signal"], Value::Null);
    assert_eq!(lines[1]["key"], "4");
    assert_eq!(lines[1]["stderr"], "oops\n");
    assert_eq!(lines[1]["exit_code"], 3);
    assert!(lines[1]["duration_ms"].is_u64());
}

#[test]
fn batch_files_output_dirs_and_bad_input() {
    let s = TempScenario::new(
        "jobs.toml",
        "a = [\"echo\", \"A\"]\nb = [\"sh\", \"-c\", \"printf B\"]\n",
    );
    let results = s.file("results.jsonl");
    let outdir = s.file("out");
    let out = procession(&[
        "batch",
        s.path(),
        "--results",
        results.to_str().unwrap(),
        "--output-dir",
        outdir.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "results went to the file");
    let lines = events(&results);
    assert_eq!(lines.len(), 2);
    let a = lines.iter().find(|l| l["key"] == "a").unwrap();
    assert!(a.get("stdout").is_none());
    assert_eq!(
        std::fs::read_to_string(a["stdout_path"].as_str().unwrap()).unwrap(),
        "A\n"
    );
    assert_eq!(
        std::fs::read_to_string(outdir.join("b.stdout")).unwrap(),
        "B"
    );

    let bad = TempScenario::new("bad.json", r#"{"a": "echo hi"}"#);
    let out = procession(&["batch", bad.path()]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("key `a`: expected a non-empty array of strings"),
        "{}",
        stderr(&out)
    );
    let out = batch_with_stdin(Path::new(ROOT), &["-"], "echo 'unclosed\n");
    assert_eq!(code(&out), 2);
    assert_eq!(
        stderr(&out).trim(),
        "stdin: line 1: missing closing quote in `echo 'unclosed`"
    );
}

#[test]
fn batch_ctrl_c_stops_running_jobs_and_keeps_finished_results() {
    let mut child = Command::new(BIN)
        .args(["batch", "-j", "3", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        b"echo quick\nsh -c 'echo $$; exec sleep 60'\nsh -c 'echo $$; exec sleep 60'\n",
    )
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reaper = Reaper(Vec::new(), Some(child));
    let mut lines = BufReader::new(stdout).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["stdout"], "quick\n");
    // The sleepers are running: find them by their parent, the batch.
    let batch_pid = reaper.1.as_ref().unwrap().id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let sleepers = loop {
        let kids: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    let rest = &s[s.rfind(')').unwrap() + 2..];
                    rest.split_whitespace().nth(1) == Some(&batch_pid.to_string())
                        && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                            .is_ok_and(|c| c.starts_with("sleep"))
                })
            })
            .collect();
        if kids.len() == 2 {
            break kids;
        }
        assert!(Instant::now() < deadline, "the sleepers did not start");
        std::thread::yield_now();
    };
    reaper.0.extend(&sleepers);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(batch_pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = reaper.1.as_mut().unwrap().wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        rest.is_empty(),
        "stopped jobs are not reported as finished: {rest:?}"
    );
    assert!(sleepers.iter().all(|&p| !alive(p)), "a job survived Ctrl-C");
}

#[test]
fn a_scenario_without_steps_ends_when_every_child_has_ended() {
    let fine = TempScenario::new(
        "fine.toml",
        "[children.a]\ncmd = [\"echo\", \"hi\"]\n[children.b]\ncmd = [\"sh\", \"-c\", \"exit 0\"]\n",
    );
    let out = procession(&["run", fine.path(), "--timeout", "30s"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("PASSED  0/0 steps"),
        "{}",
        stderr(&out)
    );

    let bad = TempScenario::new(
        "bad.toml",
        "[children.ok]\ncmd = [\"true\"]\n[children.crash]\ncmd = [\"sh\", \"-c\", \"exit 1\"]\n",
    );
    let out = procession(&["run", bad.path(), "--timeout", "30s"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("child `crash` exited with exit code 1 and no expect_exit step says so"),
        "{}",
        stderr(&out)
    );

    // A child that cannot start fails the run, with or without steps (its
    // spawn fails before the run begins).
    for steps in ["", "[[steps]]\nexpect = { from = \"ok\", line = \"hi\" }\n"] {
        let missing = TempScenario::new(
            "missing.toml",
            &format!(
                "[children.ok]\ncmd = [\"echo\", \"hi\"]\n[children.gone]\ncmd = [\"no-such-program-procession\"]\n{steps}"
            ),
        );
        let out = procession(&["run", missing.path(), "--timeout", "30s"]);
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        assert!(
            stderr(&out).contains(
                "child `gone` could not be spawned: child `gone`: program `no-such-program-procession` not found"
            ),
            "{}",
            stderr(&out)
        );
    }
}

// Security basics: commands are argv, never a shell unless the user writes
// one; values from files reach the child literally, one argument each;
// `env_clear` leaves only what the scenario sets; and procession opens no
// network socket.

/// Values a shell would act on (`;`, `$(...)`, backticks, redirections,
/// globs) and values an option parser would (`--help`, `-n`).
const HOSTILE: [&str; 7] = [
    "a; touch pwned1",
    "$(touch pwned2)",
    "`touch pwned3`",
    "x > pwned4",
    "*",
    "--help",
    "two words -n",
];

/// The `output` lines of `child` in an events file.
fn output_lines(evs: &[Value], child: &str) -> Vec<String> {
    evs.iter()
        .filter(|e| e["event"] == "output" && e["child"] == child)
        .map(|e| e["line"].as_str().unwrap().to_string())
        .collect()
}

fn no_file_named_pwned(dir: &Path) {
    let made: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("pwned"))
        .collect();
    assert!(made.is_empty(), "a shell ran: it made {made:?}");
}

#[test]
fn scenario_values_reach_the_child_literally_one_argument_each() {
    let s = TempScenario::new("s.toml", "");
    let dir = s.file("");
    let quoted: Vec<String> = HOSTILE
        .iter()
        .map(|v| serde_json::to_string(v).unwrap())
        .collect();
    let text = format!(
        r#"
[children.args]
cmd = ["printf", "[%s]\n", {args}]
cwd = {cwd}
[children.env]
cmd = ["/usr/bin/env"]
env_clear = true
env = {{ ONLY = {value} }}
cwd = {cwd}
"#,
        args = quoted.join(", "),
        cwd = serde_json::to_string(dir.to_str().unwrap()).unwrap(),
        value = quoted[1],
    );
    std::fs::write(s.path(), text).unwrap();
    let file = s.file("events.jsonl");
    let out = procession(&["run", s.path(), "--events", file.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let evs = events(&file);
    // printf repeats its format for each argument: one bracketed line per
    // argument shows how many there were and that each is untouched.
    let expected: Vec<String> = HOSTILE.iter().map(|v| format!("[{v}]")).collect();
    assert_eq!(output_lines(&evs, "args"), expected);
    // With env_clear, the child sees exactly what the scenario set, and
    // the marker every child gets (how what escapes it is known as its).
    let env = output_lines(&evs, "env");
    assert_eq!(env[0], "ONLY=$(touch pwned2)", "{env:?}");
    assert!(
        env.len() == 2 && env[1].starts_with("PROCESSION_CHILD=") && env[1].ends_with("/env"),
        "{env:?}"
    );
    no_file_named_pwned(&dir);
}

#[test]
fn batch_lines_are_words_and_quotes_never_commands() {
    let s = TempScenario::new("unused", "");
    let dir = s.file("");
    // Quoted, each value is one word; unquoted, it is split at blanks as a
    // shell would, but never expanded, substituted or redirected.
    let quoted: Vec<String> = HOSTILE
        .iter()
        .map(|v| format!("'{}'", v.replace('\'', r"'\''")))
        .collect();
    let input = format!(
        "printf '[%s]\\n' {}\nprintf '[%s]\\n' $(touch pwned5) x>pwned6 `touch pwned7`\n",
        quoted.join(" ")
    );
    let out = batch_with_stdin(&dir, &["-j", "1", "-"], &input);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut results = result_lines(&out);
    results.sort_by_key(|v| v["key"].as_str().unwrap().to_string());
    let expected: String = HOSTILE.iter().map(|v| format!("[{v}]\n")).collect();
    assert_eq!(results[0]["stdout"], expected);
    assert_eq!(
        results[1]["stdout"],
        "[$(touch]\n[pwned5)]\n[x>pwned6]\n[`touch]\n[pwned7`]\n"
    );
    no_file_named_pwned(&dir);
}

/// The socket inodes among `pid`'s open descriptors.
fn socket_inodes(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let target = std::fs::read_link(e.ok()?.path()).ok()?;
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect()
}

/// The inode column of a /proc/net table (tcp, udp, unix, ...).
fn net_inodes(table: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap_or_default();
    // The inode is the 10th column of tcp/udp/raw and the 7th of unix.
    let column = if table == "unix" { 6 } else { 9 };
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(column).map(str::to_string))
        .collect()
}

#[test]
fn a_run_opens_no_network_socket() {
    let s = TempScenario::new(
        "quiet.toml",
        "[children.sleeper]\ncmd = [\"sleep\", \"60\"]\n",
    );
    let file = s.file("events.jsonl");
    let child = Command::new(BIN)
        .args(["run", s.path(), "--events", file.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = child.id();
    let mut reaper = Reaper(Vec::new(), Some(child));
    let deadline = Instant::now() + Duration::from_secs(30);
    let sleeper = loop {
        let pid = std::fs::read_to_string(&file).ok().and_then(|t| {
            t.lines()
                .find_map(|l| serde_json::from_str::<Value>(l).ok()?["pid"].as_u64())
        });
        if let Some(pid) = pid {
            break pid as u32;
        }
        assert!(Instant::now() < deadline, "the sleeper never started");
        std::thread::yield_now();
    };
    reaper.0.push(sleeper);
    // Ours: the run and its watchdog (a child of the run, like the sleeper).
    let watchdog = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("procession-watchdog"))
                && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    s[s.rfind(')').unwrap() + 2..].split(' ').nth(1) == Some(&run.to_string())
                })
        })
        .expect("the run has a watchdog");
    let network: Vec<String> = ["tcp", "tcp6", "udp", "udp6", "raw", "raw6"]
        .iter()
        .flat_map(|t| net_inodes(t))
        .collect();
    // The run has sockets (tokio's signal driver uses a unix socket pair):
    // each must be a unix one.
    let unix = net_inodes("unix");
    for pid in [run, watchdog] {
        for inode in socket_inodes(pid) {
            assert!(
                !network.contains(&inode),
                "process {pid} has a network socket (inode {inode})"
            );
            assert!(
                unix.contains(&inode),
                "process {pid}: socket {inode} is not a unix socket"
            );
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = reaper.1.as_mut().unwrap().wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(!alive(sleeper));
}

/// Regression (issue 15, item 19): `check` was cubic in the number of
/// children (2,000 in a chain took 18 s in a debug build, 10,000 would take
/// over half an hour); it is now linear, and this runs in about a second.
#[test]
fn check_orders_ten_thousand_children_in_a_chain() {
    let n = 10_000;
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!("[children.c{i}]\ncmd = [\"true\"]\n"));
        if i + 1 < n {
            text.push_str(&format!("depends_on = [\"c{}\"]\n", i + 1));
        }
    }
    let s = TempScenario::new("big.toml", &text);
    let out = procession(&["check", s.path()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("  1. c9999 "),
        "{}",
        &stdout[..stdout.len().min(400)]
    );
    assert!(stdout.contains(&format!("  {n}. c0 ")), "the last to start");
}

/// Regression (issue 15, item 17): log lines were coloured even when
/// stderr was a file or a pipe.
#[test]
fn logs_are_plain_text_when_stderr_is_not_a_terminal() {
    let out = Command::new(BIN)
        .args(["run", "examples/pipeline.toml", "-v"])
        .current_dir(ROOT)
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("INFO"), "-v logs at info: {err}");
    assert!(!err.contains('\x1b'), "no escape codes in a pipe: {err:?}");
}

/// Regression (issue 15, item 2): the summary printed to a closed stderr
/// (`2>&1 | head -2`) panicked and exited 101; `check >/dev/full` panicked.
/// A closed or full stdout or stderr changes nothing.
#[test]
fn a_closed_or_full_stdout_or_stderr_changes_no_exit_status() {
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let check = Command::new(BIN)
        .args(["check", "examples/pipeline.toml"])
        .current_dir(ROOT)
        .stdout(full())
        .output()
        .unwrap();
    assert_eq!(code(&check), 0, "{}", stderr(&check));

    // The failed writes are reported once, in the events file.
    let s = TempScenario::new("unused.toml", "");
    let file = s.file("events.jsonl");
    let run = Command::new(BIN)
        .args(["run", "examples/pipeline.toml", "--events"])
        .arg(&file)
        .current_dir(ROOT)
        .env("NO_COLOR", "1")
        .stderr(full())
        .status()
        .unwrap();
    assert_eq!(run.code(), Some(0), "stderr full");
    let evs = events(&file);
    let failed: Vec<&Value> = evs
        .iter()
        .filter(|e| e["event"] == "write_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["target"], "stderr");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{failed:?}"
    );
    assert_eq!(evs.last().unwrap()["event"], "finished");

    // A pipe whose reader is gone before the run writes its timeline.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let run = Command::new(BIN)
        .args(["run", "examples/pipeline.toml"])
        .current_dir(ROOT)
        .env("NO_COLOR", "1")
        .stderr(Stdio::from(writer))
        .status()
        .unwrap();
    assert_eq!(run.code(), Some(0), "stderr closed");
}

/// Regression (issue 15, item 18): `--events /dev/full` logged an error
/// for every event and exited 0. It is reported once, and the run fails.
#[test]
fn an_events_file_that_cannot_be_written_is_reported_once_and_fails_the_run() {
    let out = procession(&["run", "examples/pipeline.toml", "--events", "/dev/full"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert_eq!(
        err.matches("cannot write the events file").count(),
        1,
        "{err}"
    );
    assert!(err.contains("events not written"), "{err}");
}

/// Regression (issue 15, item 16): a child's output reached the terminal
/// raw, so `printf '\033]0;PWNED\007\033[2J'` set the title and cleared the
/// screen. Control characters are shown escaped.
#[test]
fn control_characters_in_child_output_are_shown_escaped() {
    let s = TempScenario::new(
        "hostile.toml",
        r#"
[children.hostile]
cmd = ["printf", "\\033]0;PWNED\\007\\033[2Jafter\n"]
"#,
    );
    let out = procession(&["run", s.path()]);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert!(err.contains(r"\e]0;PWNED\x07\e[2Jafter"), "{err}");
}

/// Runs `procession ARGS` with `PROCESSION_FAULT=fault` (an actor panics on
/// purpose); fails the test if it does not end within 30 s.
#[cfg(debug_assertions)]
fn run_with_fault(fault: &str, args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .env("PROCESSION_FAULT", fault)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reaper = Reaper(vec![child.id()], Some(child));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let child = reaper.1.as_mut().unwrap();
        if child.try_wait().unwrap().is_some() {
            return reaper.1.take().unwrap().wait_with_output().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "procession hung after a panic ({fault})"
        );
        std::thread::sleep(Duration::from_millis(10)); // polling a condition, with a deadline
    }
}

/// Regression (issue 15, item 1): a panic inside an actor (here the child's,
/// as it was asked to stop) left the run hung, deaf to SIGTERM; now the run
/// fails, says why, ends its events and leaves no child behind.
#[cfg(debug_assertions)]
#[test]
fn a_panic_inside_an_actor_fails_the_run_instead_of_hanging_it() {
    let s = TempScenario::new(
        "panic.toml",
        r#"
[children.a]
cmd = ["sh", "-c", "echo pid $$; exec sleep 60"]

[[steps]]
expect = { from = "a", line = "^pid" }
"#,
    );
    let file = s.file("events.jsonl");
    for fault in ["child-stop", "child-output", "director"] {
        let out = run_with_fault(
            fault,
            &["run", s.path(), "--events", file.to_str().unwrap()],
        );
        let err = stderr(&out);
        assert_eq!(code(&out), 1, "{fault}: {err}");
        assert!(err.contains("FAILED"), "{fault}: {err}");
        assert!(
            err.contains("internal error (a bug in procession, please report it): panicked at"),
            "{fault}: {err}"
        );
        let events = events(&file);
        let pids: Vec<u32> = events
            .iter()
            .filter_map(|e| e["pid"].as_u64())
            .map(|p| p as u32)
            .collect();
        let _reaper = Reaper(pids.clone(), None);
        let last = events.last().unwrap();
        assert_eq!(last["event"], "finished", "{fault}");
        assert_eq!(last["passed"], false, "{fault}");
        assert_eq!(pids.len(), 1, "{fault}: {events:?}");
        // A director that panicked cannot wait for its children: they are
        // killed as procession ends, and die a moment later.
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pids[0]) {
            assert!(
                Instant::now() < deadline,
                "{fault}: the child outlived the run"
            );
            std::thread::sleep(Duration::from_millis(10)); // polling a condition, with a deadline
        }
    }
}

/// The same for a batch: it fails as a whole and stops every job.
#[cfg(debug_assertions)]
#[test]
fn a_panic_inside_a_batch_fails_it_instead_of_hanging_it() {
    let s = TempScenario::new(
        "jobs.toml",
        "talks = [\"echo\", \"hi\"]\nsleeps = [\"sleep\", \"60\"]\n",
    );
    let out = run_with_fault("child-output", &["batch", "-j", "2", s.path()]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("the batch failed: internal error"), "{err}");
}

/// Regression (issue 15, item 15): under a flood of output the timeline lost
/// the step's result and its diagnostic (only the summary survived), and
/// `-q` printed a `(timeline skipped N events)` line for nearly every batch.
/// Step results, diagnostics and the end are never dropped; elided output
/// is reported at most once a second.
#[test]
fn under_a_flood_the_timeline_keeps_every_step_result_and_elides_only_output() {
    let s = TempScenario::new(
        "flood.toml",
        r#"
[children.flood]
cmd = ["seq", "1000000000"]

[[steps]]
expect = { from = "flood", line = "^never$", within = "1s" }
"#,
    );
    for quiet in [false, true] {
        let started = Instant::now();
        let out = if quiet {
            procession(&["run", "-q", s.path()])
        } else {
            procession(&["run", s.path()])
        };
        let took = started.elapsed().as_secs() as usize;
        let err = stderr(&out);
        assert_eq!(code(&out), 1);
        let lines: Vec<&str> = err.lines().collect();
        let failed = lines
            .iter()
            .position(|l| l.contains("] step 1 FAILED: waited"))
            .unwrap_or_else(|| panic!("quiet {quiet}: no step result in the timeline"));
        assert!(
            lines[failed + 1].contains("recent unconsumed output:"),
            "quiet {quiet}: the diagnostic is cut: {:?}",
            &lines[failed..failed + 2]
        );
        assert!(lines.iter().any(|l| l.contains("] stopping everything")));
        assert!(!err.contains("timeline skipped"), "quiet {quiet}");
        let elided = lines.iter().filter(|l| l.ends_with("lines elided")).count();
        if quiet {
            assert_eq!(elided, 0, "-q shows no output, so nothing is elided");
        } else {
            // Once a second at most, and once more at the end.
            assert!(elided <= took + 2, "{elided} elision lines in {took} s");
        }
    }
}

/// Regression (issue 15, item 11): `batch -` read all of stdin before it
/// started a job (`yes 'echo hi' | procession batch -` ran out of memory).
/// Jobs stream: the first result comes while stdin is still open.
#[test]
fn batch_from_stdin_starts_jobs_before_stdin_ends() {
    use std::io::Write;
    let child = Command::new(BIN)
        .args(["batch", "-j", "1", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reaper = Reaper(vec![], Some(child));
    let child = reaper.1.as_mut().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    writeln!(stdin, "echo first").unwrap();
    stdin.flush().unwrap();
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a result while stdin is still open");
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["key"], "1");
    assert_eq!(first["stdout"], "first\n");
    // A bad line is reported and skipped; the jobs after it still run.
    writeln!(stdin, "echo 'unclosed\necho third").unwrap();
    drop(stdin);
    let third: Value =
        serde_json::from_str(&rx.recv_timeout(Duration::from_secs(30)).unwrap()).unwrap();
    assert_eq!(third["key"], "3");
    let out = reaper.1.take().unwrap().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad line is bad input");
    assert!(
        stderr(&out).contains("stdin: line 2: missing closing quote"),
        "{}",
        stderr(&out)
    );
}

/// Issue 20, item 4: under a desktop's soft limit of 1024 open files, a
/// scenario of 1,000 children failed with `Too many open files` (three
/// pipes each). procession raises the soft limit to the hard one at start.
#[test]
fn a_thousand_children_start_and_stop_under_a_soft_limit_of_1024_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use std::os::unix::process::CommandExt;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= 5000,
        "this machine's hard limit ({hard}) cannot show it"
    );
    let n = 1000;
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!("[children.s{i}]\ncmd = [\"sleep\", \"60\"]\n"));
    }
    let all: Vec<String> = (0..n).map(|i| format!("\"s{i}\"")).collect();
    text.push_str(&format!(
        "[children.last]\ncmd = [\"true\"]\nsignificant = true\ndepends_on = [{}]\n",
        all.join(", ")
    ));
    let s = TempScenario::new("thousand.toml", &text);
    let file = s.file("events.jsonl");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "-q", s.path(), "--events", file.to_str().unwrap()])
        .env("NO_COLOR", "1");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the hook.
    unsafe {
        cmd.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NOFILE, 1024, hard).map_err(std::io::Error::from)
        });
    }
    let out = cmd.output().unwrap();
    let evs = events(&file);
    let pids: Vec<u32> = evs
        .iter()
        .filter_map(|e| e["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    let _reaper = Reaper(pids.clone(), None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(pids.len(), n + 1, "every child started");
    assert!(!evs.iter().any(|e| e["event"] == "spawn_failed"));
    let survivors: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(survivors.is_empty(), "survivors: {survivors:?}");
}
