//! `procession check`: validate a scenario and print what would run.

use std::path::Path;

use procession::scenario::{self, Scenario};
use procession::PatternSpec;
use procession::{format_duration, ChildSpec};

pub fn check(path: &Path, set: &[(String, String)]) -> u8 {
    match scenario::load_with(path, set) {
        Ok(s) => {
            out!("{}", plan(&s));
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
    errln!("{errors}");
    let n = errors.0.len();
    if let Some(first) = errors.0.first() {
        errln!(
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
    if !s.vars.is_empty() {
        out.push_str("\nvariables used:\n");
        for (name, value) in &s.vars {
            out.push_str(&format!("  {name} = {value:?}\n"));
        }
    }
    if !s.plan.groups().is_empty() {
        out.push_str("\nreplicas:\n");
        for (group, names) in s.plan.groups() {
            let list = match names.as_slice() {
                [] => "none (count = 0)".to_string(),
                [one] => one.to_string(),
                [first, .., last] => format!("{first} … {last}"),
            };
            out.push_str(&format!("  {group}: {} ({list})\n", names.len()));
        }
    }
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
/// Children in the order they start: each after its dependencies, and
/// otherwise in file order (the first child whose dependencies are all
/// placed comes next). Kahn's algorithm with the ready children in a heap
/// by file position: O(n log n + edges). It was quadratic in the children
/// times the edges (issue 15, item 19: 8,000 children took over a minute).
fn start_order(children: &[ChildSpec]) -> Vec<&ChildSpec> {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashMap};
    let index: HashMap<&str, usize> = children
        .iter()
        .enumerate()
        .map(|(i, c)| (&*c.name, i))
        .collect();
    let mut waiting_on = vec![0usize; children.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); children.len()];
    for (i, c) in children.iter().enumerate() {
        for d in &c.depends_on {
            if let Some(&j) = index.get(&**d) {
                waiting_on[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..children.len())
        .filter(|&i| waiting_on[i] == 0)
        .map(Reverse)
        .collect();
    let mut placed = Vec::with_capacity(children.len());
    while let Some(Reverse(i)) = ready.pop() {
        placed.push(&children[i]);
        for &k in &dependents[i] {
            waiting_on[k] -= 1;
            if waiting_on[k] == 0 {
                ready.push(Reverse(k));
            }
        }
    }
    placed // a cycle leaves some out: impossible after validation
}

fn describe_child(c: &ChildSpec) -> String {
    let mut notes = vec![serde_plain(&c.framing)];
    if let Some(t) = c.terminal {
        let echo = if t.echo { ", echo" } else { "" };
        notes.push(format!("terminal {}x{}{echo}", t.cols, t.rows));
    }
    if !c.depends_on.is_empty() {
        let deps: Vec<&str> = c.depends_on.iter().map(|d| &**d).collect();
        notes.push(format!("after {}", deps.join(", ")));
    }
    match &c.ready {
        Some(procession::Ready::Line(re)) => notes.push(format!("ready on line {re}")),
        Some(procession::Ready::Json(j)) => notes.push(format!("ready on JSON {j}")),
        Some(procession::Ready::After(d)) => {
            notes.push(format!("ready after {}", format_duration(*d)))
        }
        Some(procession::Ready::Probe(p)) => {
            let within = p
                .within
                .map(|w| format!(", within {}", format_duration(w)))
                .unwrap_or_default();
            notes.push(format!(
                "ready when {} (every {}, timeout {}{within})",
                describe_check(&p.check),
                format_duration(p.every),
                format_duration(p.timeout)
            ));
        }
        None => {}
    }
    if let Some(a) = &c.alive {
        notes.push(format!(
            "alive while {} (every {}, timeout {}, {} failures)",
            describe_check(&a.check),
            format_duration(a.every),
            format_duration(a.timeout),
            a.failures
        ));
    }
    let r = &c.restart;
    if r.policy != procession::RestartPolicy::Never {
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

fn describe_check(check: &procession::Check) -> String {
    match check {
        procession::Check::Tcp(addr) => format!("tcp {addr} connects"),
        procession::Check::Http(url) => format!("GET {url} answers 2xx"),
        procession::Check::Exec(argv) => format!("`{}` exits 0", shell_words(argv)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(children: &[&ChildSpec]) -> Vec<String> {
        children.iter().map(|c| c.name.to_string()).collect()
    }

    #[test]
    fn children_start_after_their_dependencies_and_otherwise_in_file_order() {
        let specs = vec![
            ChildSpec::new("web", ["x"]).depends_on("api"),
            ChildSpec::new("db", ["x"]),
            ChildSpec::new("api", ["x"]).depends_on("db"),
            ChildSpec::new("cache", ["x"]),
        ];
        assert_eq!(names(&start_order(&specs)), ["db", "api", "web", "cache"]);
    }

    #[test]
    fn ten_thousand_children_in_a_chain_are_ordered() {
        // Each depends on the next one in the file: the worst case of the
        // old quadratic search, now one pass.
        let n = 10_000;
        let specs: Vec<ChildSpec> = (0..n)
            .map(|i| {
                let c = ChildSpec::new(format!("c{i}"), ["x"]);
                if i + 1 < n {
                    c.depends_on(format!("c{}", i + 1))
                } else {
                    c
                }
            })
            .collect();
        let order = start_order(&specs);
        assert_eq!(order.len(), n);
        assert_eq!(&*order[0].name, "c9999");
        assert_eq!(&*order[n - 1].name, "c0");
    }
}
