//! `procession check`: validate a scenario and print what would run.

use std::path::Path;

use procession::matching::PatternSpec;
use procession::scenario::{self, Scenario};
use procession::{format_duration, ChildSpec};

pub fn check(path: &Path) -> u8 {
    match scenario::load(path) {
        Ok(s) => {
            print!("{}", plan(&s));
            0
        }
        Err(errors) => {
            report_invalid(&errors);
            2
        }
    }
}

/// Prints every problem and a count, on stderr.
pub fn report_invalid(errors: &scenario::ScenarioErrors) {
    eprintln!("{errors}");
    let n = errors.0.len();
    if let Some(first) = errors.0.first() {
        eprintln!(
            "{} is invalid: {n} problem{}",
            first.file.display(),
            if n == 1 { "" } else { "s" }
        );
    }
}

/// The plan: children in start order, routes, steps.
pub fn plan(s: &Scenario) -> String {
    let mut out = String::new();
    let name = s.name.as_deref().unwrap_or("(unnamed)");
    out.push_str(&format!("scenario {name} ({}): valid\n", s.path.display()));
    out.push_str("\nchildren, in start order:\n");
    for (i, child) in start_order(s.plan.children()).iter().enumerate() {
        out.push_str(&format!(
            "  {}. {:<12} {}\n",
            i + 1,
            child.name,
            describe_child(child)
        ));
    }
    if !s.plan.routes().is_empty() {
        out.push_str("\nroutes:\n");
        for r in s.plan.routes() {
            let filter = match &r.filter {
                Some(PatternSpec::Regex(re)) => format!(", lines matching {re}"),
                Some(PatternSpec::Json(j)) => {
                    format!(", JSON containing {}", serde_json::Value::Object(j.clone()))
                }
                None => String::new(),
            };
            out.push_str(&format!(
                "  {} -> {} ({}{filter})\n",
                r.from, r.to, r.stream
            ));
        }
    }
    let p = s.protocol();
    if p.steps.is_empty() {
        out.push_str("\nno steps: runs until every child has ended (or a significant one does)\n");
    } else {
        out.push_str(&format!(
            "\nsteps (order {}, unlisted {}):\n",
            serde_plain(&p.order),
            serde_plain(&p.unlisted)
        ));
        for (i, step) in p.steps.iter().enumerate() {
            let label = step
                .label
                .as_ref()
                .map(|l| format!("  [{l}]"))
                .unwrap_or_default();
            out.push_str(&format!("  {}. {}{label}\n", i + 1, step.action));
        }
    }
    out
}

fn serde_plain<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Children in the order they start: file order, each after its dependencies.
fn start_order(children: &[ChildSpec]) -> Vec<&ChildSpec> {
    let mut placed: Vec<&ChildSpec> = Vec::with_capacity(children.len());
    while placed.len() < children.len() {
        let next = children.iter().find(|c| {
            !placed.iter().any(|p| p.name == c.name)
                && c.depends_on
                    .iter()
                    .all(|d| placed.iter().any(|p| &p.name == d))
        });
        match next {
            Some(c) => placed.push(c),
            None => break, // a cycle: impossible after validation
        }
    }
    placed
}

fn describe_child(c: &ChildSpec) -> String {
    let mut notes = vec![serde_plain(&c.framing)];
    if !c.depends_on.is_empty() {
        let deps: Vec<&str> = c.depends_on.iter().map(|d| &**d).collect();
        notes.push(format!("after {}", deps.join(", ")));
    }
    match &c.ready {
        Some(procession::Ready::Line(re)) => notes.push(format!("ready on line {re}")),
        Some(procession::Ready::Json(j)) => notes.push(format!(
            "ready on JSON {}",
            serde_json::Value::Object(j.clone())
        )),
        Some(procession::Ready::After(d)) => {
            notes.push(format!("ready after {}", format_duration(*d)))
        }
        None => {}
    }
    let r = &c.restart;
    if r.policy != procession::director::RestartPolicy::Never {
        notes.push(format!(
            "restart {} (max {} in {}, backoff {}..{})",
            serde_plain(&r.policy),
            r.max,
            format_duration(r.within),
            format_duration(r.backoff),
            format_duration(r.max_backoff)
        ));
    }
    if c.significant {
        notes.push("significant".into());
    }
    format!("{}  [{}]", shell_words(&c.cmd), notes.join("; "))
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
