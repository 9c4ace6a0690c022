//! The `procession` command line. The commands of DESIGN.md (`run`, `check`,
//! `batch`) arrive with their issues; until then this prints what the tool
//! is and how to embed the library.

use std::process::ExitCode;

use clap::Parser;

/// Run operating-system processes as actors.
///
/// procession wraps each child process in an actor that owns its pipes, cuts
/// its output into frames (lines, JSON values, bytes), stops it with its whole
/// process group, and never leaks a process.
///
/// The scenario commands (`run`, `check`, `batch`) are not built yet. The
/// library is: see `cargo run --example child` and the README.
#[derive(Parser, Debug)]
#[command(name = "procession", version, about, long_about)]
struct Cli {}

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(Cli {}) => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = e.print();
            // clap's --help and --version are successes; everything else is
            // a usage error (exit 2, as DESIGN.md's exit table says).
            ExitCode::from(if e.use_stderr() { 2 } else { 0 })
        }
    }
}
