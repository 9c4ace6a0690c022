//! `procession diagram`: the Mermaid text of a small fixed events file
//! (golden), the SVG as XML, elision of long runs, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_procession");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn diagram(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("diagram")
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap()
}

fn small() -> String {
    Path::new(ROOT)
        .join("tests/diagram/small.jsonl")
        .display()
        .to_string()
}

/// A temp dir removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("procession-diagram-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_small_run_draws_as_the_golden_mermaid() {
    // small.jsonl has a routed line with Mermaid's own characters, an
    // over-long JSON reply, a control restart, a failed exit and its
    // restart, a violation, a failed step, a kill, and a torn last line.
    let out = diagram(&[&small()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let golden = std::fs::read_to_string(Path::new(ROOT).join("tests/diagram/small.mmd")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), golden);
}

#[test]
fn the_svg_is_xml_with_every_lifeline_and_failed_steps_in_their_own_colour() {
    let dir = Dir::new("svg");
    let file = dir.0.join("run.svg");
    let out = diagram(&[&small(), "--format", "svg", "-o", file.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&file).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the SVG is XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect();
    for name in ["procession", "client", "server"] {
        assert!(texts.contains(&name), "a header for {name}");
    }
    assert!(
        texts.iter().any(|t| t.starts_with("GET x; #1 <now>")),
        "labels are text, escaped as XML"
    );
    assert!(
        !doc.descendants().any(|n| n.has_tag_name("script")),
        "no scripts"
    );
    assert!(
        !svg.contains("href") && !svg.contains("@import"),
        "no external resources"
    );
    // A passed step and a failed one are filled differently.
    let fill_of = |prefix: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name("text") && n.text().is_some_and(|t| t.starts_with(prefix)))
            .and_then(|t| t.prev_sibling_element())
            .and_then(|rect| rect.attribute("fill"))
            .map(str::to_string)
    };
    let passed = fill_of("step 1 passed").expect("a note for step 1");
    let failed = fill_of("step 2 FAILED").expect("a note for step 2");
    assert_ne!(passed, failed);
}

#[test]
fn ten_thousand_events_draw_with_the_rest_elided_past_500_messages() {
    let dir = Dir::new("big");
    let file = dir.0.join("big.jsonl");
    let mut text = String::new();
    for i in 0..5_000 {
        text.push_str(&format!(
            "{{\"t_ms\":{i},\"child\":\"a\",\"event\":\"output\",\"stream\":\"stdout\",\"line\":\"m{i}\"}}\n\
             {{\"t_ms\":{i},\"child\":\"a\",\"event\":\"routed\",\"from\":\"a\",\"to\":\"b\"}}\n"
        ));
    }
    std::fs::write(&file, text).unwrap();
    let out = diagram(&[file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let mermaid = String::from_utf8(out.stdout).unwrap();
    assert_eq!(mermaid.matches("->>").count(), 500);
    assert!(mermaid.contains("p1->>p2: m499\n"));
    assert!(mermaid
        .trim_end()
        .ends_with("Note over p0: … 4500 more messages elided"));
}

#[test]
fn a_missing_empty_or_broken_events_file_is_exit_2_with_the_reason() {
    let dir = Dir::new("bad");
    let empty = dir.0.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let broken = dir.0.join("broken.jsonl");
    std::fs::write(
        &broken,
        "{\"t_ms\":0,\"event\":\"ready\"}\nnot json\n{\"t_ms\":1,\"event\":\"ready\"}\n",
    )
    .unwrap();
    let missing = dir.0.join("missing.jsonl");
    for (file, reason) in [
        (&empty, "no events in it"),
        (&broken, "line 2: not JSON"),
        (&missing, "No such file or directory"),
    ] {
        let out = diagram(&[file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", file.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&file.display().to_string()) && err.contains(reason),
            "{err}"
        );
    }
}
