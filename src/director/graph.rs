//! Dependency checks before anything starts: names, `depends_on`, cycles,
//! readiness regexes. Pure code: specs in, problems out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::error::{closest, ConfigError, Place};
use crate::spec::{ChildSpec, Ready};

/// All problems with adding `new` to the children already known (`existing`:
/// name -> depends_on), in the order they were found.
pub(crate) fn validate(
    new: &[ChildSpec],
    existing: &BTreeMap<Arc<str>, Vec<Arc<str>>>,
) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    let mut names: HashSet<Arc<str>> = existing.keys().cloned().collect();
    for spec in new {
        if !names.insert(spec.name.clone()) {
            problems.push(ConfigError::DuplicateChild {
                child: spec.name.clone(),
            });
        }
        if spec.cmd.is_empty() {
            problems.push(ConfigError::EmptyCommand {
                child: spec.name.clone(),
            });
        }
        if let Some(Ready::Line(re)) = &spec.ready {
            if let Err(source) = regex::Regex::new(re) {
                problems.push(ConfigError::BadRegex {
                    place: Place::Child(spec.name.clone()),
                    key: "ready.line",
                    source,
                });
            }
        }
    }
    for spec in new {
        for dep in &spec.depends_on {
            if !names.contains(dep) {
                problems.push(ConfigError::UnknownDependency {
                    child: spec.name.clone(),
                    dependency: dep.clone(),
                    suggestion: closest(dep, &names),
                });
            }
        }
    }
    let mut graph: BTreeMap<Arc<str>, Vec<Arc<str>>> = existing.clone();
    for spec in new {
        // With duplicates, the first definition counts (the rest are errors).
        graph
            .entry(spec.name.clone())
            .or_insert_with(|| spec.depends_on.clone());
    }
    problems.extend(cycles(&graph));
    problems
}

/// Every cycle in the graph, each reported once, as a path that ends where
/// it starts.
fn cycles(graph: &BTreeMap<Arc<str>, Vec<Arc<str>>>) -> Vec<ConfigError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    fn visit(
        node: &Arc<str>,
        graph: &BTreeMap<Arc<str>, Vec<Arc<str>>>,
        marks: &mut HashMap<Arc<str>, Mark>,
        path: &mut Vec<Arc<str>>,
        found: &mut Vec<ConfigError>,
    ) {
        marks.insert(node.clone(), Mark::Active);
        path.push(node.clone());
        for dep in graph.get(node).into_iter().flatten() {
            match marks.get(dep) {
                Some(Mark::Active) => {
                    let start = path.iter().position(|n| n == dep).expect("on the path");
                    let mut cycle = path[start..].to_vec();
                    cycle.push(dep.clone());
                    found.push(ConfigError::Cycle { path: cycle });
                }
                Some(Mark::Done) => {}
                None if graph.contains_key(dep) => visit(dep, graph, marks, path, found),
                None => {} // unknown: reported elsewhere
            }
        }
        path.pop();
        marks.insert(node.clone(), Mark::Done);
    }
    let mut marks = HashMap::new();
    let mut found = Vec::new();
    for node in graph.keys() {
        if !marks.contains_key(node) {
            visit(node, graph, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, deps: &[&str]) -> ChildSpec {
        let mut s = ChildSpec::new(name, ["true"]);
        for d in deps {
            s = s.depends_on(*d);
        }
        s
    }

    fn messages(problems: &[ConfigError]) -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_good_graph_has_no_problems() {
        let new = [
            spec("db", &[]),
            spec("api", &["db"]),
            spec("web", &["api", "db"]),
        ];
        assert!(validate(&new, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn unknown_names_duplicates_and_cycles_are_all_reported() {
        let new = [
            spec("a", &["b"]),
            spec("b", &["c"]),
            spec("c", &["a"]),
            spec("d", &["serer"]),
            spec("a", &[]),
        ];
        let mut existing = BTreeMap::new();
        existing.insert(Arc::from("server"), vec![]);
        let got = messages(&validate(&new, &existing));
        assert!(
            got.contains(&"child `a` is defined twice".to_string()),
            "{got:?}"
        );
        assert!(
            got.contains(
                &"child `d`: depends_on names `serer`, which is not a child (did you mean `server`?)"
                    .to_string()
            ),
            "{got:?}"
        );
        assert!(
            got.iter().any(|m| m.starts_with("dependency cycle: ")),
            "{got:?}"
        );
    }

    #[test]
    fn a_cycle_is_shown_as_a_closed_path() {
        let new = [spec("a", &["b"]), spec("b", &["c"]), spec("c", &["b"])];
        let got = messages(&validate(&new, &BTreeMap::new()));
        assert_eq!(got, ["dependency cycle: b -> c -> b"]);
        let selfish = [spec("me", &["me"])];
        assert_eq!(
            messages(&validate(&selfish, &BTreeMap::new())),
            ["dependency cycle: me -> me"]
        );
    }

    #[test]
    fn a_bad_ready_regex_and_an_empty_cmd_are_named() {
        let mut bad = spec("srv", &[]).ready(Ready::Line("(".into()));
        bad.cmd.clear();
        let got = messages(&validate(&[bad], &BTreeMap::new()));
        assert_eq!(
            got,
            [
                "child `srv`: cmd is empty (it needs at least the program)",
                "child `srv`: invalid regex in `ready.line`"
            ]
        );
    }
}
