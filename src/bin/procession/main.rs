//! The `procession` command line: `run` and `check` a scenario file.
//!
//! Exit statuses (also in `--help`):
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | every step passed and every child ended as expected |
//! | 1 | a step failed or timed out, a protocol violation (strict), a child gave up or could not start, or a child exited badly without an `expect_exit` |
//! | 2 | the scenario or the command line is invalid |
//! | 129 | hung up (SIGHUP: the terminal closed), after every child was stopped |
//! | 130 | interrupted by SIGINT (Ctrl-C), after every child was stopped |
//! | 143 | terminated by SIGTERM, after every child was stopped |

/// Like `print!`, `eprint!` and `eprintln!`, but a closed or full stdout or
/// stderr (`| head`, `2>/dev/full`) is not a panic: the write is dropped,
/// the exit status stays what the run decided, and the first failure of
/// each stream goes to the events file (DESIGN.md "Command line").
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let written = write!(std::io::stdout().lock(), $($arg)*);
        $crate::stdio::check($crate::stdio::Target::Stdout, written);
    }};
}
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let written = writeln!(std::io::stdout().lock(), $($arg)*);
        $crate::stdio::check($crate::stdio::Target::Stdout, written);
    }};
}
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let written = write!(std::io::stderr().lock(), $($arg)*);
        $crate::stdio::check($crate::stdio::Target::Stderr, written);
    }};
}
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let written = writeln!(std::io::stderr().lock(), $($arg)*);
        $crate::stdio::check($crate::stdio::Target::Stderr, written);
    }};
}

/// Failed writes to our own stdout and stderr: each stream's first one is
/// reported to the running director (a `write_failed` event), once.
mod stdio {
    use std::cell::RefCell;

    use procession::Director;

    #[derive(Clone, Copy)]
    pub enum Target {
        Stdout = 0,
        Stderr = 1,
    }

    #[derive(Default)]
    struct State {
        director: Option<Director>,
        /// Per stream: not failed, failed and waiting for a director, or told.
        failures: [Option<(String, bool)>; 2],
    }

    thread_local! {
        static STATE: RefCell<State> = RefCell::default();
    }

    /// Records a write's outcome.
    pub fn check(target: Target, written: std::io::Result<()>) {
        if let Err(e) = written {
            let _ = STATE.try_with(|s| {
                let mut s = s.borrow_mut();
                let slot = &mut s.failures[target as usize];
                if slot.is_none() {
                    *slot = Some((e.to_string(), false));
                    tell(&mut s);
                }
            });
        }
    }

    /// Where to report failures from now on (`None` once the run is over).
    pub fn report_to(director: Option<Director>) {
        let _ = STATE.try_with(|s| {
            let mut s = s.borrow_mut();
            s.director = director;
            tell(&mut s);
        });
    }

    fn tell(s: &mut State) {
        let Some(director) = s.director.clone() else {
            return;
        };
        for (i, slot) in s.failures.iter_mut().enumerate() {
            if let Some((error, told @ false)) = slot {
                let target = if i == 0 { "stdout" } else { "stderr" };
                director.report_write_failure(target, &*error);
                *told = true;
            }
        }
    }
}

mod batch;
mod check;
mod ctl;
mod diagram;
mod run;
mod timeline;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

const EXIT_STATUSES: &str = "\
Exit status:
  0    every step passed and every child ended as expected
  1    a step failed or timed out, a protocol violation (strict order), a child
       gave up or could not start, or a child exited badly without an expect_exit
  2    the scenario or the command line is invalid
  129  hung up (SIGHUP: the terminal closed); every child was stopped first
  130  interrupted by SIGINT (Ctrl-C); every child was stopped first
  143  terminated by SIGTERM; every child was stopped first";

/// Run operating-system processes as actors, from a scenario file.
///
/// A scenario (TOML) names children (programs, never run by a shell), routes
/// between them, and ordered protocol steps: send to a child, expect what it
/// prints, expect a message routed between two children, kill one to show a
/// restart, expect an exit. procession starts the children in dependency
/// order, enforces the protocol, shows a live timeline, and stops every
/// child at the end, with everything it started: grandchildren, and daemons
/// that left its process group (`setsid`, a double fork). Every child has
/// PROCESSION_CHILD=<run>/<name> in its environment.
#[derive(Parser, Debug)]
#[command(name = "procession", version, about, long_about, after_help = EXIT_STATUSES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario: start its children, run its steps, stop everything.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Check a scenario without running it, and print what would run.
    #[command(after_help = CHECK_HELP)]
    Check {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Set `${vars.NAME}` (over the file's [vars]), e.g. --set port=8080.
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
        set: Vec<(String, String)>,
    },
    /// Run many commands, a bounded number at a time, and collect every result.
    #[command(after_help = BATCH_HELP)]
    Batch(batch::BatchArgs),
    /// Steer a running scenario over its control socket (run --control).
    #[command(after_help = ctl::CTL_HELP)]
    Ctl(ctl::CtlArgs),
    /// Draw a run's events file as a sequence diagram (Mermaid or SVG).
    #[command(after_help = diagram::DIAGRAM_HELP)]
    Diagram(diagram::DiagramArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example:\n  procession completions bash > ~/.local/share/bash-completion/completions/procession"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

const RUN_HELP: &str = "\
Examples:
  procession run examples/demo.toml
  procession run examples/two_phase_commit.toml --events run.jsonl
  procession run scenario.toml --timeout 30s -q

The timeline goes to stderr (in colour on a terminal, plain and greppable
otherwise); --events writes every event as one JSON line, flushed as it
happens. Ctrl-C stops every child with its grace; a second Ctrl-C kills
them at once.

Under a flood of output the timeline may skip children's lines (`… N lines
elided`, at most once a second); step results, failures and the summary
are never skipped, and the events file always has everything.

Exit status: 0 passed, 1 failed (also when procession itself hit a bug:
the run is stopped, never left hanging), 2 invalid scenario or arguments,
129 hung up (SIGHUP), 130 interrupted (SIGINT), 143 terminated (SIGTERM).";

const CHECK_HELP: &str = "\
Example:
  procession check examples/demo.toml

Prints the children in start order, the routes and the steps. Every problem
is reported with file:line:column and the key. Exit status 0 when valid, 2
when not.";

const BATCH_HELP: &str = "\
Examples:
  procession batch -j 8 jobs.toml                 # jobs.toml: build = [\"make\", \"-j2\"] ...
  printf 'gzip -k a.log\\ngzip -k b.log\\n' | procession batch -j 2 -
  procession batch jobs.json --results results.jsonl --output-dir out/ --timeout 5m

Each result is one JSON line, in the order jobs finish: key, exit_code,
signal (null unless signalled), stdout, stderr (the exact text), duration_ms;
with --output-dir, stdout_path and stderr_path instead of the texts. Lines
from stdin are split into words as a shell would, but never run by one
(`echo $HOME` prints `$HOME`); their keys are line numbers. Stdin is read
as a stream: jobs start as lines arrive, 64 lines at most read ahead. A progress bar
shows on stderr when it is a terminal. Ctrl-C stops the running jobs and
keeps the results finished so far.

Exit status: 0 every job exited 0, 1 otherwise, 2 bad input, 130/143
interrupted.";

/// Options of `procession run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The scenario file (TOML).
    pub scenario: PathBuf,
    /// Write every event as one JSON line to this file.
    #[arg(long, value_name = "FILE.jsonl")]
    pub events: Option<PathBuf>,
    /// Stop everything and fail if the run takes longer (e.g. 30s, 2m).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Less output: no child output in the timeline, only errors in the log.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More output: routed messages in the timeline; -v info, -vv debug logs.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Set `${vars.NAME}` (over the file's [vars]), e.g. --set port=8080.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
    /// Write each child's output to DIR/NAME.stdout and DIR/NAME.stderr:
    /// the exact bytes, appended across restarts (DIR is created if missing).
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Listen on this Unix socket for `procession ctl` (mode 0600, only your
    /// uid; removed at the end). See `procession ctl --help`.
    #[arg(long, value_name = "SOCKET")]
    pub control: Option<PathBuf>,
}

/// `NAME=VALUE` for `--set`.
pub(crate) fn parse_set(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got `{text}`")),
    }
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    procession::parse_duration(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are successes; everything else is a usage error.
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // Tests of invariant 5 make an actor panic on purpose (debug builds only).
    #[cfg(debug_assertions)]
    if let Ok(points) = std::env::var("PROCESSION_FAULT") {
        for unknown in procession::fault::arm_by_names(&points) {
            errln!("PROCESSION_FAULT: unknown fault point `{unknown}`");
        }
    }
    // Every child takes up to three pipes: a desktop's soft limit of 1024
    // open files would stop a scenario at a few hundred (DESIGN.md "Limits").
    if matches!(cli.command, Command::Run(_) | Command::Batch(_)) {
        if let Err(e) = procession::raise_open_files_limit() {
            errln!("cannot raise the limit of open files: {e}");
        }
        // This process starts no child of its own but procession's: every
        // orphan that re-parents to it came from one of them.
        procession::adopt_all_orphans();
    }
    match cli.command {
        Command::Run(args) => {
            init_logging(args.quiet, args.verbose);
            ExitCode::from(run::run(args))
        }
        Command::Check { scenario, set } => {
            init_logging(false, 0);
            ExitCode::from(check::check(&scenario, &set))
        }
        Command::Batch(args) => {
            init_logging(false, 0);
            ExitCode::from(batch::batch(args))
        }
        Command::Ctl(args) => ctl::main(args),
        Command::Diagram(args) => ExitCode::from(diagram::diagram(args)),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "procession",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}

/// Logs go to stderr; `RUST_LOG` (`warn`, `procession=debug`, ...) wins
/// over -q / -v.
///
/// `Targets`, not `EnvFilter`: the latter's regex engine (with full DFAs)
/// would also become the one every scenario regex is compiled with, and a
/// scenario of 100,000 steps would take gigabytes to check.
fn init_logging(quiet: bool, verbose: u8) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| level.parse().expect("a level is a valid filter"));
    // Colour only on a terminal, and never with NO_COLOR (a log file or a
    // pipe gets plain text).
    let colour = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
    };
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    tracing_subscriber::registry()
        .with(logs)
        .with(filter)
        .init();
}
