//! check: validating a big scenario against a plain TOML parse of the same
//! text (issue 15, item 19: a 10 MB scenario took 8 s and 1.46 GB).

use std::path::Path;
use std::time::Instant;

use crate::report::{median, Row};
use crate::Size;

/// A generated scenario: `steps` send/expect pairs over two children (each
/// expect with its own regex), plus `children` children in a chain.
fn scenario(steps: usize, children: usize) -> String {
    let mut text = String::from("[children.a]\ncmd = [\"cat\"]\n\n");
    for i in 0..children {
        text.push_str(&format!(
            "[children.c{i}]\ncmd = [\"sh\", \"-c\", \"echo hello {i}; sleep 1\"]\nready = {{ line = \"^hello\" }}\n"
        ));
        if i > 0 {
            text.push_str(&format!("depends_on = [\"c{}\"]\n", i - 1));
        }
    }
    for i in 0..steps {
        text.push_str(&format!(
            "[[steps]]\nsend = {{ to = \"a\", line = \"hello {i}\" }}\n[[steps]]\nexpect = {{ from = \"a\", line = \"^hello {i}$\" }}\n"
        ));
    }
    text
}

/// Seconds and peak heap growth (MiB) of `work`.
fn measure(work: impl FnOnce()) -> (f64, f64) {
    let start = Instant::now();
    let peak = crate::heap::peak_mib(work);
    (start.elapsed().as_secs_f64(), peak)
}

pub fn check(size: Size) -> Row {
    let (steps, children) = if size.full {
        (50_000, 20_000)
    } else {
        (500, 200)
    };
    let text = scenario(steps, children);
    let mb = text.len() as f64 / 1e6;
    let (mut raw, mut ours, mut raw_mem, mut our_mem) = (vec![], vec![], vec![], vec![]);
    for _ in 0..size.runs {
        let (t, m) = measure(|| {
            let table: toml::Table = text.parse().expect("valid TOML");
            assert_eq!(table.len(), 2);
        });
        raw.push(t);
        raw_mem.push(m);
        let (t, m) = measure(|| {
            let s = procession::scenario::parse(&text, Path::new("big.toml")).expect("valid");
            assert_eq!(s.protocol().steps.len(), 2 * steps);
            assert_eq!(s.plan.children().len(), children + 1);
        });
        ours.push(t);
        our_mem.push(m);
    }
    let (raw, ours) = (median(&mut raw), median(&mut ours));
    let (raw_mem, our_mem) = (median(&mut raw_mem), median(&mut our_mem));
    let ratio = ours / raw;
    Row {
        workload: "check",
        what: format!(
            "check a {mb:.1} MB scenario: {children} children in a chain, {} steps ({steps} regexes)",
            2 * steps
        ),
        baseline: format!("toml::Table parse of the same text: {raw:.2} s, peak heap {raw_mem:.0} MiB"),
        figure: format!("{ours:.2} s, peak heap {our_mem:.0} MiB ({:.0} x the file)", our_mem / (mb / 1.048_576)),
        ratio: Some(ratio),
        target: "<= 4 x a plain TOML parse, peak <= 50 x the file",
        met: ratio <= 4.0 && our_mem <= 50.0 * mb / 1.048_576,
    }
}
