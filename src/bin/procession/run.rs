//! `procession run`: one scenario, start to end.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use procession::protocol::{ProtocolReport, StepOutcome};
use procession::{format_duration, scenario, DirectorConfig, ExitStatus, Signal};
use procession::{ChildInfo, ChildState, Director, Journal};
use tokio::sync::oneshot;

use crate::check::report_invalid;
use crate::timeline::{Detail, Ending, Timeline};
use crate::RunArgs;

/// Runs the scenario and returns the exit status.
pub fn run(args: RunArgs) -> u8 {
    let scenario = match scenario::load_with(&args.scenario, &args.set) {
        Ok(s) => s,
        Err(errors) => {
            report_invalid(&errors);
            return 2;
        }
    };
    let journal = match &args.events {
        None => None,
        Some(path) => match Journal::create(path) {
            Ok(j) => Some(j),
            Err(e) => {
                errln!("cannot create the events file {}: {e}", path.display());
                return 2;
            }
        },
    };
    if let Some(dir) = &args.log_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            errln!("cannot create the log directory {}: {e}", dir.display());
            return 2;
        }
    }
    let detail = match (args.quiet, args.verbose) {
        (true, _) => Detail::Quiet,
        (false, 0) => Detail::Normal,
        _ => Detail::Verbose,
    };
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let system = System::new();
    system.block_on(async move {
        let started = Instant::now();
        let director = Director::with_config(DirectorConfig {
            strategy: scenario.strategy,
            journal: journal.clone(),
            log_dir: args.log_dir.clone(),
            ..DirectorConfig::default()
        });
        crate::stdio::report_to(Some(director.clone()));
        let control = match &args.control {
            Some(path) => match procession::control::ControlSocket::bind(path, &director).await {
                Ok(socket) => Some(socket),
                Err(e) => {
                    errln!("--control: {e}");
                    director.shutdown("cannot listen for control").await;
                    return 2;
                }
            },
            None => None,
        };
        let mut signals = match director.shutdown_on_signals() {
            Ok(rx) => rx,
            Err(e) => {
                errln!("cannot listen for signals: {e}");
                return 2;
            }
        };
        let names: Vec<Arc<str>> = scenario
            .plan
            .children()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let (timeline_done, timeline_stopped) = oneshot::channel();
        let timeline = Timeline::new(colour, detail, &names, timeline_done).start();
        let _ = director
            .subscribe(timeline.recipient(), crate::timeline::filter(detail))
            .await;
        let steps = scenario.protocol().steps.len();
        // Launch, then wait for the protocol to end: by itself, by a signal,
        // or by the timeout.
        let runner = director.clone();
        let mut report_fut = Box::pin(async move { runner.run_plan(scenario.plan).await });
        let timeout = async {
            match args.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let mut interrupted = None;
        let report = tokio::select! {
            report = &mut report_fut => report,
            signal = &mut signals => {
                interrupted = signal.ok();
                report_fut.await
            }
            () = timeout => {
                let t = format_duration(args.timeout.unwrap_or_default());
                let director = director.clone();
                actix::spawn(async move {
                    director.shutdown(format!("timed out after {t}")).await;
                });
                report_fut.await
            }
        };
        let report = match report {
            Ok(report) => Some(report),
            Err(e @ procession::DirectorError::Invalid(_)) => {
                errln!("{}: {e}", args.scenario.display());
                director.shutdown("invalid scenario").await;
                return 2;
            }
            // The director is gone (it panicked: the message is above).
            Err(procession::DirectorError::Gone) => None,
            Err(e) => {
                errln!("the run could not go on: {e}");
                None
            }
        };
        let finals = director.shutdown("the scenario is over").await;
        crate::stdio::report_to(None);
        if interrupted.is_none() {
            interrupted = signals.try_recv().ok();
        }
        drop(director);
        if let Some(control) = control {
            // After the director's end: `ctl events --follow` gets `finished`.
            // A client that stopped reading holds the end by at most this.
            control.close(std::time::Duration::from_secs(1)).await;
        }
        // Let the timeline print the last events before the summary; it
        // also tells how the run ended (a panic can fail a run whose steps
        // all passed).
        let ending = tokio::time::timeout(std::time::Duration::from_secs(5), timeline_stopped)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let passed = report.as_ref().is_some_and(|r| r.passed) && ending.passed == Some(true);
        err!(
            "{}",
            summary(
                report.as_ref(),
                &ending,
                steps,
                &finals,
                started,
                interrupted,
                colour
            )
        );
        // An events file that could not be written is a failed run.
        let events_lost = journal.as_ref().and_then(Journal::error);
        if let (Some(e), Some(path)) = (&events_lost, &args.events) {
            errln!("cannot write the events file {}: {e}", path.display());
        }
        match interrupted {
            Some(Signal::Int) => 130,
            Some(Signal::Term) => 143,
            Some(Signal::Hup) => 129,
            Some(_) | None if passed && events_lost.is_none() => 0,
            _ => 1,
        }
    })
}

fn summary(
    report: Option<&ProtocolReport>,
    ending: &Ending,
    steps: usize,
    finals: &[ChildInfo],
    started: Instant,
    interrupted: Option<Signal>,
    colour: bool,
) -> String {
    let paint = |code: &str, text: String| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text
        }
    };
    let mut out = String::from("\n");
    let passed = report.is_some_and(|r| r.passed) && ending.passed == Some(true);
    let done = report
        .map(|r| {
            r.steps
                .iter()
                .filter(|s| matches!(s.outcome, StepOutcome::Passed { .. }))
                .count()
        })
        .unwrap_or(0);
    let headline = match (interrupted, passed) {
        (Some(s), _) => paint("1;33", format!("INTERRUPTED (SIG{s})")),
        (None, true) => paint("1;32", "PASSED".into()),
        (None, false) => paint("1;31", "FAILED".into()),
    };
    // A run that passed and left steps out took a `goto` past them.
    let skipped = if passed && done < steps {
        format!(" ({} not reached: a goto went past them)", steps - done)
    } else {
        String::new()
    };
    out.push_str(&format!(
        "{headline}  {done}/{steps} steps passed{skipped} in {:.2?}\n",
        started.elapsed()
    ));
    if interrupted.is_none() {
        let failed_step = report.and_then(|r| r.failure());
        let reason = report.and_then(|r| r.reason.as_deref());
        match (failed_step, reason) {
            (Some(step), Some(reason)) => {
                let label = step
                    .label
                    .as_deref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default();
                let first = reason.lines().next().unwrap_or("");
                out.push_str(&format!("  step {}{label} failed: {first}\n", step.step));
            }
            (None, Some(reason)) => {
                out.push_str(&format!("  {}\n", reason.lines().next().unwrap_or("")));
            }
            // The steps passed (or never reported) and yet the run failed:
            // the end says why.
            _ if !passed => {
                let why = ending
                    .reason
                    .as_deref()
                    .unwrap_or("the director stopped before the run ended");
                out.push_str(&format!("  {}\n", why.lines().next().unwrap_or("")));
            }
            _ => {}
        }
    }
    for child in finals {
        let state = match &child.state {
            ChildState::Exited(exit) | ChildState::Stopped(exit) => {
                let how = match exit.status {
                    ExitStatus::Code(c) => format!("exit code {c}"),
                    ExitStatus::Signal(s) => format!("signal {s}"),
                    _ => "unknown status".into(),
                };
                if exit.requested {
                    format!("{how} (stopped)")
                } else {
                    how
                }
            }
            other => other.to_string(),
        };
        let restarts = match child.restarts {
            0 => String::new(),
            1 => ", 1 restart".into(),
            n => format!(", {n} restarts"),
        };
        out.push_str(&format!("  {:<12} {state}{restarts}\n", child.name));
    }
    out
}
