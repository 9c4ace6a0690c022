//! The rows the workloads produce, and `BENCHMARKS.md`.

use std::io;
use std::path::Path;

/// One measured workload.
pub struct Row {
    pub workload: &'static str,
    /// What ran, in a few words.
    pub what: String,
    /// The baseline's figure.
    pub baseline: String,
    /// procession's figure.
    pub figure: String,
    /// procession / baseline, oriented so that 1.0 is "as fast as raw"
    /// (above 1.0 is better for rates, worse for latencies: see `target`).
    pub ratio: Option<f64>,
    pub target: &'static str,
    pub met: bool,
}

impl Row {
    pub fn plain(&self) -> String {
        format!(
            "   {:<8} {}\n            baseline  {}\n            ours      {}\n            ratio     {}   target {}  {}",
            self.workload,
            self.what,
            self.baseline,
            self.figure,
            self.ratio.map_or("-".into(), |r| format!("{r:.2}")),
            self.target,
            if self.met { "MET" } else { "NOT MET" }
        )
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[i]
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Our resident set now, in MiB.
pub fn rss_mib() -> f64 {
    status_kib("VmRSS:") as f64 / 1024.0
}

/// Our peak resident set since the last [`reset_peak_rss`], in MiB.
pub fn peak_rss_mib() -> f64 {
    status_kib("VmHWM:") as f64 / 1024.0
}

/// Starts a new peak-RSS measurement (Linux 4.0+: `5` to `clear_refs`).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// 1,000 children need about 3,000 descriptors; take the hard limit.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("+%Y-%m-%d %H:%M %Z")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown date".into(), |s| s.trim().to_string())
}

const BEGIN: &str =
    "<!-- results: written by scripts/bench; edits between these markers are lost -->";
const END: &str = "<!-- end of results -->";

/// Replaces the results section of `path` (or creates the file), keeping
/// whatever was written around it by hand.
pub fn write(path: &Path, rows: &[Row]) -> io::Result<()> {
    let mut table = String::new();
    table.push_str(BEGIN);
    table.push('\n');
    table.push_str(&format!(
        "\nMeasured on {} with `scripts/bench` (release build), {}.\n\n",
        today(),
        machine()
    ));
    table.push_str("| workload | what | raw baseline | procession | ratio | target | met |\n");
    table.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for row in rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            row.workload,
            row.what,
            row.baseline,
            row.figure,
            row.ratio.map_or("-".into(), |r| format!("{r:.2}")),
            row.target,
            if row.met { "yes" } else { "**no**" }
        ));
    }
    table.push('\n');
    table.push_str(END);

    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{}{}", &old[..b], table, &old[e + END.len()..])
        }
        _ => format!("# Benchmarks\n\n{table}\n"),
    };
    std::fs::write(path, new)
}
