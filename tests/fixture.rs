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
count-after-usr1   print `ready`, wait for SIGUSR1, then do `count`
echo-after-usr1    print `ready`, wait for SIGUSR1, then do `echo`
chaos DIR NAME BEHAVIOUR LINES
                   number every stdout line from 1 (`N text`), keep in
                   DIR/NAME-PID how many have been written to the pipe, and
                   echo each stdin line as `N echo LINE`. Print LINES lines,
                   then by BEHAVIOUR: exit:CODE; flood (the same, written in
                   16 KiB blocks, then exit 0); crash (SIGABRT, no core);
                   hang; ignore-term (ignore SIGTERM first, then hang);
                   trickle (a line every 2 ms until killed); fork:K (K
                   sleeping grandchildren holding our pipes, then hang);
                   fork-exit:K (the same, then exit 0); close-stdout (close
                   it, then hang); close-stdout-exit (close it, write to
                   stderr, exit 0)";

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
        Some("chaos") if args.len() == 5 => {
            out.flush().unwrap();
            chaos::run(&args[1], &args[2], &args[3], arg(4))
        }
        Some("echo-after-usr1") => {
            let mut usr1 = SigSet::empty();
            usr1.add(Signal::SIGUSR1);
            usr1.thread_block().unwrap();
            say_ready(&mut out);
            usr1.wait().unwrap();
            for line in io::stdin().lock().lines() {
                writeln!(out, "{}", line.unwrap()).unwrap();
                out.flush().unwrap();
            }
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

/// The chaos test's child: numbered lines with a record of how many have
/// reached the pipe, so that the test can tell a lost line from one never
/// written.
mod chaos {
    use std::fs::File;
    use std::io::{self, BufRead, Write};
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::FileExt;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use nix::sys::resource::{setrlimit, Resource};

    struct Out {
        /// Fd 1; `None` once closed.
        stdout: Option<File>,
        buf: Vec<u8>,
        /// Lines numbered so far (in `buf` or written).
        numbered: u64,
        /// Where the count of written lines is kept.
        record: File,
    }

    impl Out {
        fn line(&mut self, text: std::fmt::Arguments) {
            if self.stdout.is_some() {
                self.numbered += 1;
                writeln!(self.buf, "{} {text}", self.numbered).unwrap();
            }
        }

        /// Writes what is buffered, then records that it was written.
        fn flush(&mut self) {
            if let Some(stdout) = &mut self.stdout {
                stdout.write_all(&self.buf).unwrap();
                self.buf.clear();
                let count = format!("{:020}", self.numbered);
                self.record.write_all_at(count.as_bytes(), 0).unwrap();
            }
        }
    }

    pub fn run(dir: &str, name: &str, behaviour: &str, lines: u64) -> ! {
        let record = File::create(format!("{dir}/{name}-{}", std::process::id())).unwrap();
        // SAFETY: fd 1 is open (procession gives every child a stdout pipe)
        // and from here on only this `File` uses it.
        let stdout = unsafe { File::from_raw_fd(1) };
        let out = Arc::new(Mutex::new(Out {
            stdout: Some(stdout),
            buf: Vec::with_capacity(1 << 15),
            numbered: 0,
            record,
        }));
        let echo = out.clone();
        std::thread::spawn(move || {
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else { return };
                let mut out = echo.lock().unwrap();
                out.line(format_args!("echo {line}"));
                out.flush();
            }
        });
        let (behaviour, k) = match behaviour.split_once(':') {
            Some((b, k)) => (b, k.parse::<u64>().unwrap()),
            None => (behaviour, 0),
        };
        if behaviour == "ignore-term" {
            super::ignore_term();
        }
        {
            let mut out = out.lock().unwrap();
            for i in 1..=lines {
                out.line(format_args!("line {i}"));
                if behaviour != "flood" || out.buf.len() >= 1 << 14 {
                    out.flush();
                }
            }
            out.flush();
        }
        match behaviour {
            "exit" => finish(&out, k as i32),
            "flood" => finish(&out, 0),
            "crash" => {
                setrlimit(Resource::RLIMIT_CORE, 0, 0).unwrap();
                let _held = out.lock().unwrap();
                std::process::abort();
            }
            "hang" | "ignore-term" => super::sleep_forever(),
            "trickle" => loop {
                {
                    let mut out = out.lock().unwrap();
                    out.line(format_args!("tick"));
                    out.flush();
                }
                // The child's own pace (it is what a test kills mid-stream).
                std::thread::sleep(Duration::from_millis(2));
            },
            "fork" | "fork-exit" => {
                let mut out_ = out.lock().unwrap();
                for _ in 0..k {
                    // Not waited for: it must die with our process group.
                    #[allow(clippy::zombie_processes)]
                    let child = std::process::Command::new(std::env::current_exe().unwrap())
                        .args(["sleep", "--quiet"])
                        .stdin(std::process::Stdio::null())
                        .spawn()
                        .unwrap();
                    out_.line(format_args!("grandchild {}", child.id()));
                    out_.flush();
                }
                drop(out_);
                if behaviour == "fork-exit" {
                    finish(&out, 0);
                }
                super::sleep_forever()
            }
            "close-stdout" | "close-stdout-exit" => {
                out.lock().unwrap().stdout = None;
                if behaviour == "close-stdout-exit" {
                    eprintln!("stdout closed");
                    finish(&out, 0);
                }
                super::sleep_forever()
            }
            _ => super::usage(),
        }
    }

    /// Exits with `code`, holding the lock so that no echo is half written.
    fn finish(out: &Mutex<Out>, code: i32) -> ! {
        let mut out = out.lock().unwrap();
        out.flush();
        std::process::exit(code)
    }
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
