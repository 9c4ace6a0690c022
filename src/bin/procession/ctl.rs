//! `procession ctl SOCKET ...`: the control socket's client. One request,
//! one reply line (or event lines), printed readably; `attach` types into a
//! child and prints what it says.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{json, Value};

/// Options of `procession ctl`.
#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// The socket a `procession run --control SOCKET` listens on.
    pub socket: PathBuf,
    #[command(subcommand)]
    pub op: Op,
}

/// What to ask.
#[derive(clap::Subcommand, Debug)]
pub enum Op {
    /// Every child: state, ready, pid, restarts, uptime.
    Status {
        /// Print the reply as it is (one JSON line).
        #[arg(long)]
        json: bool,
    },
    /// Write a line (or a JSON value) to a child's stdin.
    #[command(arg_required_else_help = true)]
    Send {
        /// The child.
        child: String,
        /// The line (without its newline).
        #[arg(required_unless_present = "json", conflicts_with = "json")]
        line: Option<String>,
        /// Send this JSON value instead, e.g. --json '{"op":"get"}'.
        #[arg(long, value_name = "JSON")]
        json: Option<String>,
    },
    /// Close a child's stdin (after what was queued before).
    Close {
        /// The child.
        child: String,
    },
    /// Start a child that is not running.
    Start {
        /// The child.
        child: String,
    },
    /// Stop a child with its stop signal and grace; it stays down.
    Stop {
        /// The child.
        child: String,
    },
    /// Stop a child and start it again, whatever its restart policy.
    Restart {
        /// The child.
        child: String,
    },
    /// Send a signal to a child's process group (HUP, INT, TERM, USR1, 9, ...).
    Signal {
        /// The child.
        child: String,
        /// The signal.
        signal: String,
    },
    /// Print the run's events so far (the last 10,000); --follow keeps going.
    Events {
        /// Keep printing new events until the run ends.
        #[arg(long, short)]
        follow: bool,
        /// Only events about this child (repeat for more).
        #[arg(long = "child", value_name = "NAME")]
        children: Vec<String>,
        /// Print each event as its JSON line (as --events writes it).
        #[arg(long)]
        json: bool,
    },
    /// Type into a child: each line on stdin goes to it, and what it prints
    /// comes out here, until the end of input or the child ends.
    Attach {
        /// The child.
        child: String,
    },
    /// Stop every child (each with its grace) and end the run.
    Shutdown,
}

pub const CTL_HELP: &str = "\
Examples (with `procession run examples/kv.toml --control /tmp/kv.sock` in another terminal):
  procession ctl /tmp/kv.sock status
  procession ctl /tmp/kv.sock send kv 'GET x'
  procession ctl /tmp/kv.sock send worker --json '{\"op\": \"get\"}'   # a json child
  procession ctl /tmp/kv.sock restart kv
  procession ctl /tmp/kv.sock events --follow --child kv
  procession ctl /tmp/kv.sock attach kv
  procession ctl /tmp/kv.sock shutdown

The wire protocol is one JSON object a line each way (README: \"Steering a
run\"), so socat or a short script can speak it too.

Exit status: 0 done, 1 refused (the reason on stderr), 2 bad arguments,
3 cannot connect to the socket.";

/// Runs one `ctl` command.
pub fn main(args: CtlArgs) -> ExitCode {
    let request = match &args.op {
        Op::Status { .. } => json!({"op": "status"}),
        Op::Send { child, line, json } => match (line, json) {
            (_, Some(text)) => match serde_json::from_str::<Value>(text) {
                Ok(value) => json!({"op": "send", "child": child, "json": value}),
                Err(e) => {
                    errln!("--json: not JSON: {e}");
                    return ExitCode::from(2);
                }
            },
            // clap asks for a line when --json is not given.
            (line, None) => json!({"op": "send", "child": child, "line": line}),
        },
        Op::Close { child } => json!({"op": "close", "child": child}),
        Op::Start { child } => json!({"op": "start", "child": child}),
        Op::Stop { child } => json!({"op": "stop", "child": child}),
        Op::Restart { child } => json!({"op": "restart", "child": child}),
        Op::Signal { child, signal } => json!({"op": "signal", "child": child, "signal": signal}),
        Op::Events {
            follow, children, ..
        } => json!({"op": "events", "follow": follow, "children": children}),
        Op::Attach { child } => return attach(&args.socket, child),
        Op::Shutdown => json!({"op": "shutdown"}),
    };
    let mut conn = match Conn::open(&args.socket) {
        Ok(conn) => conn,
        Err(code) => return code,
    };
    if let Op::Events { json, .. } = args.op {
        return conn.print_events(&request, json);
    }
    let reply = match conn.ask(&request) {
        Ok(reply) => reply,
        Err(code) => return code,
    };
    if reply["ok"] != true {
        errln!(
            "refused: {}",
            reply["error"].as_str().unwrap_or("(no reason given)")
        );
        return ExitCode::from(1);
    }
    match args.op {
        Op::Status { json: true } => outln!("{reply}"),
        Op::Status { json: false } => out!("{}", table(&reply["children"])),
        _ => {}
    }
    ExitCode::SUCCESS
}

/// One connection to the socket.
struct Conn {
    write: UnixStream,
    read: BufReader<UnixStream>,
    path: PathBuf,
}

impl Conn {
    fn open(path: &Path) -> Result<Conn, ExitCode> {
        let stream = UnixStream::connect(path).map_err(|e| {
            errln!("cannot connect to {}: {e}", path.display());
            ExitCode::from(3)
        })?;
        let read = stream.try_clone().map_err(|e| {
            errln!("{}: {e}", path.display());
            ExitCode::from(3)
        })?;
        Ok(Conn {
            write: stream,
            read: BufReader::new(read),
            path: path.into(),
        })
    }

    /// Sends a request. A run that refuses the connection (another uid)
    /// answers and closes before reading it: then the write fails, and the
    /// refusal is still there to read.
    fn request(&mut self, request: &Value) -> Result<(), ExitCode> {
        if let Err(e) = writeln!(self.write, "{request}") {
            return match self.line()? {
                Some(reply) => Err(refusal(&reply)),
                None => {
                    errln!(
                        "{}: the run closed the connection: {e}",
                        self.path.display()
                    );
                    Err(ExitCode::from(3))
                }
            };
        }
        Ok(())
    }

    /// The next line, `None` at the end.
    fn line(&mut self) -> Result<Option<Value>, ExitCode> {
        let mut line = String::new();
        match self.read.read_line(&mut line) {
            Ok(0) => Ok(None),
            Ok(_) => serde_json::from_str(&line).map(Some).map_err(|e| {
                errln!(
                    "{}: a reply that is not JSON ({e}): {line}",
                    self.path.display()
                );
                ExitCode::from(1)
            }),
            Err(e) => {
                errln!("{}: {e}", self.path.display());
                Err(ExitCode::from(3))
            }
        }
    }

    fn ask(&mut self, request: &Value) -> Result<Value, ExitCode> {
        self.request(request)?;
        self.line()?.ok_or_else(|| {
            errln!("{}: the run ended before it replied", self.path.display());
            ExitCode::from(3)
        })
    }

    fn print_events(&mut self, request: &Value, json: bool) -> ExitCode {
        if let Err(code) = self.request(request) {
            return code;
        }
        loop {
            match self.line() {
                Ok(Some(event)) if event.get("ok") == Some(&Value::Bool(false)) => {
                    return refusal(&event)
                }
                Ok(Some(event)) => {
                    let text = if json {
                        event.to_string()
                    } else {
                        readable(&event)
                    };
                    // A closed stdout (`| head`) ends it.
                    if writeln!(std::io::stdout().lock(), "{text}").is_err() {
                        return ExitCode::SUCCESS;
                    }
                }
                Ok(None) => return ExitCode::SUCCESS,
                Err(code) => return code,
            }
        }
    }
}

/// Prints a refusal's reason: exit status 1.
fn refusal(reply: &Value) -> ExitCode {
    let reason = reply["error"].as_str().unwrap_or("(no reason given)");
    errln!("refused: {reason}");
    ExitCode::from(1)
}

/// `   1234 ms  kv          exited {"code":0,...}`
fn readable(event: &Value) -> String {
    let mut rest = event.clone();
    let mut take = |key: &str| rest.as_object_mut().and_then(|m| m.remove(key));
    let t = take("t_ms").and_then(|t| t.as_u64()).unwrap_or(0);
    let child = take("child");
    let kind = take("event");
    take("seq");
    let child = child.as_ref().and_then(Value::as_str).unwrap_or("-");
    let kind = kind.as_ref().and_then(Value::as_str).unwrap_or("?");
    let rest = match &rest {
        Value::Object(m) if m.is_empty() => String::new(),
        other => format!(" {other}"),
    };
    format!("{t:>8} ms  {child:<12} {kind}{rest}")
}

fn table(children: &Value) -> String {
    let mut out = format!(
        "{:<16} {:<11} {:<6} {:>8} {:>8} {:>10}\n",
        "NAME", "STATE", "READY", "PID", "RESTARTS", "UPTIME"
    );
    for child in children.as_array().into_iter().flatten() {
        let pid = child["pid"].as_u64().map_or("-".into(), |p| p.to_string());
        let uptime = child["uptime_ms"].as_u64().map_or("-".into(), |ms| {
            procession::format_duration(std::time::Duration::from_millis(ms))
        });
        out.push_str(&format!(
            "{:<16} {:<11} {:<6} {:>8} {:>8} {:>10}\n",
            child["name"].as_str().unwrap_or("?"),
            child["state"].as_str().unwrap_or("?"),
            if child["ready"] == true { "yes" } else { "no" },
            pid,
            child["restarts"].as_u64().unwrap_or_default(),
            uptime,
        ));
    }
    out
}

/// Lines from stdin to the child; its output to stdout (stderr lines to
/// stderr) until the end of input or the child ends.
fn attach(socket: &Path, child: &str) -> ExitCode {
    let mut events = match Conn::open(socket) {
        Ok(conn) => conn,
        Err(code) => return code,
    };
    let follow = json!({"op": "events", "follow": true, "children": [child], "history": false});
    if let Err(code) = events.request(&follow) {
        return code;
    }
    let mut sends = match Conn::open(socket) {
        Ok(conn) => conn,
        Err(code) => return code,
    };
    // Refuse an unknown child (with its "did you mean") before typing.
    match sends.ask(&json!({"op": "status"})) {
        Ok(reply) if reply["ok"] != true => return refusal(&reply),
        Ok(reply) => {
            let known = reply["children"]
                .as_array()
                .is_some_and(|all| all.iter().any(|c| c["name"] == child));
            if !known {
                let names: Vec<&str> = reply["children"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["name"].as_str())
                    .collect();
                errln!(
                    "refused: no child named `{child}` (children: {})",
                    names.join(", ")
                );
                return ExitCode::from(1);
            }
        }
        Err(code) => return code,
    }
    // Three sources, one loop: the child's events, the end of our input,
    // and a refused send.
    enum Heard {
        Event(Value),
        End(ExitCode),
        InputDone,
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let to_loop = tx.clone();
    let child_name = child.to_string();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let request = json!({"op": "send", "child": child_name, "line": line});
            match sends.ask(&request) {
                Ok(reply) if reply["ok"] == true => {}
                Ok(reply) => {
                    let _ = to_loop.send(Heard::End(refusal(&reply)));
                    return;
                }
                Err(code) => {
                    let _ = to_loop.send(Heard::End(code));
                    return;
                }
            }
        }
        let _ = to_loop.send(Heard::InputDone);
    });
    std::thread::spawn(move || loop {
        let heard = match events.line() {
            Ok(Some(event)) => Heard::Event(event),
            Ok(None) => Heard::End(ExitCode::SUCCESS),
            Err(code) => Heard::End(code),
        };
        let end = matches!(heard, Heard::End(_));
        if tx.send(heard).is_err() || end {
            return;
        }
    });
    // After the end of input, what the child still says to the last lines
    // is printed until it has been quiet for this long.
    const LAST_WORDS: std::time::Duration = std::time::Duration::from_millis(500);
    let mut input_done = false;
    loop {
        let heard = if input_done {
            match rx.recv_timeout(LAST_WORDS) {
                Ok(heard) => heard,
                Err(_) => return ExitCode::SUCCESS,
            }
        } else {
            match rx.recv() {
                Ok(heard) => heard,
                Err(_) => return ExitCode::SUCCESS,
            }
        };
        let event = match heard {
            Heard::Event(event) => event,
            Heard::End(code) => return code,
            Heard::InputDone => {
                input_done = true;
                continue;
            }
        };
        match event["event"].as_str() {
            Some("output") => {
                let text = match (&event["line"], &event["json"]) {
                    (Value::String(line), _) => line.clone(),
                    (_, Value::Null) => event["bytes"].to_string(),
                    (_, json) => json.to_string(),
                };
                if event["stream"] == "stderr" {
                    errln!("{text}");
                } else if writeln!(std::io::stdout().lock(), "{text}").is_err() {
                    return ExitCode::SUCCESS; // a closed stdout
                }
            }
            Some("exited" | "gave_up" | "stopped" | "spawn_failed") => return ExitCode::SUCCESS,
            _ => {}
        }
    }
}
