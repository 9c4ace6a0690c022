//! The child program that procession's tests drive. One binary, one mode per
//! behaviour a test needs; never installed (it lives in an unpublished crate).
//!
//! Usage: procession-fixture MODE [ARGS...]

use std::io::{self, BufRead, BufWriter, Read, Write};
use std::process::{Command, Stdio};

use nix::sys::signal::{signal, SigHandler, SigSet, Signal};

const MODES: &str = "\
lines N            print `line 1` .. `line N`, exit 0
json N             print {\"n\":1} .. {\"n\":N}, one per line
lines64 N          print N lines of exactly 64 bytes (newline included)
echo               copy stdin to stdout line by line, exit at EOF
exit CODE          exit with CODE
crash-stamp        print `stamp START END` (CLOCK_MONOTONIC ns at start and just
                   before the exit), exit 1
sleep [--quiet]    print `ready` (unless --quiet), then sleep until killed
ignore-term [--quiet]
                   ignore SIGTERM, print `ready`, sleep until killed
fork N [--exit] [--ignore-term]
                   start N grandchildren that sleep (sharing our pipes), print
                   `grandchild PID` for each and `ready`; with --exit, exit 0
                   at once instead of sleeping
flood MIB [stderr] write MIB MiB of 1 KiB lines to stdout (or stderr)
huge-line MIB      write MIB MiB of `x` without a newline
bad-utf8           print `ok`, a line with invalid UTF-8, `after`
bad-json           print {\"n\":1}, `not json`, {\"n\":2}
count              count stdin lines until EOF, print `count N`
say LINE...        print each LINE, exit 0
mixed I            print `out I` to stdout and `err I` to stderr, exit I % 4
echo-or-die        print `ready`, then copy stdin to stdout line by line;
                   on the line `die`, exit 1
expect-seq         read `line 1`, `line 2`, ... from stdin until EOF; print `ok N`
                   and exit 0, or `bad at N: LINE` and exit 1
count-after-usr1   print `ready`, wait for SIGUSR1, then do `count`";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> u64 {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| usage())
    };
    let flag = |name: &str| args.iter().any(|a| a == name);
    let out = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, out.lock());
    match args.first().map(String::as_str) {
        Some("lines") => {
            for i in 1..=arg(1) {
                writeln!(out, "line {i}").unwrap();
            }
        }
        Some("lines64") => {
            // Fast enough that a reader is the bottleneck: the line number
            // is written into a fixed template, no formatting per line.
            let mut line = *b"00000000000000000000 000000000000000000000000000000000000000000\n";
            for i in 1..=arg(1) {
                let mut n = i;
                for digit in line[..20].iter_mut().rev() {
                    *digit = b'0' + (n % 10) as u8;
                    n /= 10;
                }
                out.write_all(&line).unwrap();
            }
        }
        Some("json") => {
            for i in 1..=arg(1) {
                writeln!(out, "{{\"n\":{i}}}").unwrap();
            }
        }
        Some("echo") => {
            for line in io::stdin().lock().lines() {
                writeln!(out, "{}", line.unwrap()).unwrap();
                out.flush().unwrap();
            }
        }
        Some("exit") => std::process::exit(arg(1) as i32),
        Some("crash-stamp") => {
            let start = monotonic_ns();
            writeln!(out, "stamp {start} {}", monotonic_ns()).unwrap();
            out.flush().unwrap();
            std::process::exit(1);
        }
        Some("sleep") => {
            say_ready(&mut out);
            sleep_forever();
        }
        Some("ignore-term") => {
            ignore_term();
            say_ready(&mut out);
            sleep_forever();
        }
        Some("fork") => {
            if flag("--ignore-term") {
                ignore_term();
            }
            let mode = if flag("--ignore-term") {
                "ignore-term"
            } else {
                "sleep"
            };
            for _ in 0..arg(1) {
                // The grandchild inherits our stdout and stderr: it holds
                // the pipes open, as real grandchildren do. Not waiting for it
                // is the point: it must outlive us unless procession kills it.
                #[allow(clippy::zombie_processes)]
                let child = Command::new(std::env::current_exe().unwrap())
                    .args([mode, "--quiet"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::inherit())
                    .spawn()
                    .unwrap();
                writeln!(out, "grandchild {}", child.id()).unwrap();
            }
            out.flush().unwrap();
            if flag("--exit") {
                std::process::exit(0);
            }
            say_ready(&mut out);
            sleep_forever();
        }
        Some("flood") => {
            let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
            let total = arg(1) * 1024;
            if args.get(2).map(String::as_str) == Some("stderr") {
                let err = io::stderr();
                let mut err = BufWriter::with_capacity(1 << 16, err.lock());
                for _ in 0..total {
                    err.write_all(&line).unwrap();
                }
                err.flush().unwrap();
            } else {
                for _ in 0..total {
                    out.write_all(&line).unwrap();
                }
            }
        }
        Some("huge-line") => {
            let block = vec![b'x'; 1 << 20];
            for _ in 0..arg(1) {
                out.write_all(&block).unwrap();
            }
        }
        Some("bad-utf8") => {
            out.write_all(b"ok\nbad\xff\xfe\nafter\n").unwrap();
        }
        Some("bad-json") => {
            out.write_all(b"{\"n\":1}\nnot json\n{\"n\":2}\n").unwrap();
        }
        Some("count") => count(&mut out),
        Some("echo-or-die") => {
            say_ready(&mut out);
            for line in io::stdin().lock().lines() {
                let line = line.unwrap();
                if line == "die" {
                    out.flush().unwrap();
                    std::process::exit(1);
                }
                writeln!(out, "{line}").unwrap();
                out.flush().unwrap();
            }
        }
        Some("mixed") => {
            let i = arg(1);
            writeln!(out, "out {i}").unwrap();
            out.flush().unwrap();
            eprintln!("err {i}");
            std::process::exit((i % 4) as i32);
        }
        Some("say") => {
            for line in &args[1..] {
                writeln!(out, "{line}").unwrap();
            }
        }
        Some("expect-seq") => {
            let mut n = 0u64;
            for line in io::stdin().lock().lines() {
                let line = line.unwrap();
                n += 1;
                if line != format!("line {n}") {
                    writeln!(out, "bad at {n}: {line}").unwrap();
                    out.flush().unwrap();
                    std::process::exit(1);
                }
            }
            writeln!(out, "ok {n}").unwrap();
        }
        Some("count-after-usr1") => {
            let mut usr1 = SigSet::empty();
            usr1.add(Signal::SIGUSR1);
            usr1.thread_block().unwrap();
            say_ready(&mut out);
            usr1.wait().unwrap();
            count(&mut out);
        }
        _ => usage(),
    }
    out.flush().unwrap();
}

fn count(out: &mut impl Write) {
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let mut stdin = io::stdin().lock();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("{e}"),
        }
    }
    writeln!(out, "count {n}").unwrap();
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process here.
fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn say_ready(out: &mut impl Write) {
    if std::env::args().any(|a| a == "--quiet") {
        return;
    }
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
}

fn ignore_term() {
    // SAFETY: installing SIG_IGN has no handler code to be unsafe in.
    unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) }.unwrap();
}

fn sleep_forever() -> ! {
    loop {
        std::thread::park();
    }
}

fn usage() -> ! {
    eprintln!("usage: procession-fixture MODE [ARGS]\n\nmodes:\n{MODES}");
    std::process::exit(64);
}
