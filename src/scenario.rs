//! Scenario files: TOML -> children, routes, and a protocol.
//!
//! Every problem is found in one pass and reported together, each with the
//! file, line, column and key, and a "did you mean" for near misses:
//!
//! ```text
//! demo.toml:12:1: children.server.framng: unknown field `framng` (did you mean `framing`?)
//! demo.toml:30:30: steps[2].expect.from: `from` names `sever`, which is not a child (did you mean `server`?)
//! ```
//!
//! Each section (a child, a route, a step) is deserialized on its own from
//! toml's spanned document, so one bad section does not hide the next.
//! Checks across sections (dependencies, routes and steps naming children,
//! captures) run on what parsed, and are pointed back at the key they are
//! about.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

#[path = "scenario/vars.rs"]
mod vars;

use crate::director::{Route, Strategy};
use crate::error::{closest, ConfigError, Location};
use crate::plan::Plan;
use crate::protocol::{Order, Protocol, Unlisted};
use crate::spec::ChildSpec;

/// A scenario, ready to run.
#[derive(Debug)]
pub struct Scenario {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its `name`, if it has one.
    pub name: Option<String>,
    /// `[children.NAME]` (in file order), `[[routes]]`, and `[[steps]]` with
    /// the `[protocol]` settings, checked together.
    pub plan: Plan,
    /// `[supervision] strategy`.
    pub strategy: Strategy,
    /// Every variable the file used (`vars.NAME`, `env.NAME`) and its value.
    pub vars: std::collections::BTreeMap<String, String>,
}

impl Scenario {
    /// `[[steps]]` and the `[protocol]` settings.
    pub fn protocol(&self) -> &Protocol {
        self.plan
            .protocol()
            .expect("a scenario always has a protocol")
    }
}

/// The sections of a file as they are read, before they are checked.
struct Sections {
    name: Option<String>,
    children: Vec<ChildSpec>,
    routes: Vec<Route>,
    protocol: Protocol,
    strategy: Strategy,
}

/// One problem in a scenario file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when the file could not be read).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The dotted key it is about (`children.server.framing`, `steps[2].expect`),
    /// arrays counted from 1; empty for the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a scenario file, in file order.
#[derive(Debug, Clone)]
pub struct ScenarioErrors(pub Vec<ScenarioError>);

impl fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioErrors {}

/// The top-level keys a scenario may have.
const TOP_KEYS: [&str; 8] = [
    "name",
    "vars",
    "defaults",
    "protocol",
    "supervision",
    "children",
    "routes",
    "steps",
];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ProtocolSettings {
    #[serde(default)]
    order: Order,
    #[serde(default)]
    unlisted: Unlisted,
    #[serde(default = "crate::protocol::default_max_visits")]
    max_visits: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SupervisionSettings {
    #[serde(default)]
    strategy: Strategy,
}

/// Reads and checks a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioErrors> {
    load_with(path, &[])
}

/// [`load`], with `--set NAME=VALUE` values over the file's `[vars]`.
pub fn load_with(path: &Path, set: &[(String, String)]) -> Result<Scenario, ScenarioErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ScenarioErrors(vec![ScenarioError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    parse_with(&text, path, set)
}

/// `[defaults]`: every child table gets each key it does not set itself,
/// as a whole value (a child's `stop` replaces the default `stop`; it is
/// not merged field by field). A problem with a default is reported where
/// the default is written.
fn apply_defaults(root: &mut DeTable<'_>, problems: &mut Vec<vars::Problem>) {
    let defaults = match root.iter().find(|(k, _)| k.get_ref() == "defaults") {
        None => return,
        Some((_, v)) => match v.get_ref() {
            DeValue::Table(t) => t.clone(),
            _ => {
                problems.push(vars::Problem {
                    key: None,
                    offset: v.span().start,
                    message: "[defaults] is a table of child keys".into(),
                });
                return;
            }
        },
    };
    let Some((_, children)) = root.iter_mut().find(|(k, _)| k.get_ref() == "children") else {
        return;
    };
    let DeValue::Table(children) = children.get_mut() else {
        return;
    };
    for (name, child) in children.iter_mut() {
        let DeValue::Table(child) = child.get_mut() else {
            continue;
        };
        for (key, value) in &defaults {
            // A default `depends_on = ["db"]` is not for `db` itself.
            let names_itself = key.get_ref() == "depends_on"
                && matches!(value.get_ref(), DeValue::Array(deps)
                    if deps.iter().any(|d| d.get_ref().as_str() == Some(name.get_ref())));
            if !names_itself && !child.iter().any(|(k, _)| k.get_ref() == key.get_ref()) {
                child.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Checks scenario text; `path` is only used in messages and as `path`.
pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioErrors> {
    parse_with(text, path, &[])
}

/// [`parse`], with `--set NAME=VALUE` values over the file's `[vars]`.
pub fn parse_with(
    text: &str,
    path: &Path,
    set: &[(String, String)],
) -> Result<Scenario, ScenarioErrors> {
    let mut root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let mut p = Parser::new(text, path, None);
            p.error_at(
                e.span().map_or(0, |s| s.start),
                e.message().trim().to_string(),
            );
            return Err(ScenarioErrors(p.errors));
        }
    };
    // Variables are substituted once, before anything else reads a string.
    let mut values = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    if let Some((_, table)) = root.get_ref().iter().find(|(k, _)| k.get_ref() == "vars") {
        match table.get_ref() {
            DeValue::Table(t) => {
                for (k, v) in t {
                    let value = match v.get_ref() {
                        DeValue::String(s) => Some(s.to_string()),
                        DeValue::Integer(i) => Some(i.to_string()),
                        DeValue::Float(f) => Some(f.to_string()),
                        DeValue::Boolean(b) => Some(b.to_string()),
                        _ => None,
                    };
                    match value {
                        Some(value) => {
                            values.insert(k.get_ref().to_string(), value);
                        }
                        None => problems.push(vars::Problem {
                            key: None,
                            offset: v.span().start,
                            message: "a variable is a string, a number or true/false".into(),
                        }),
                    }
                }
            }
            _ => problems.push(vars::Problem {
                key: None,
                offset: table.span().start,
                message: "[vars] is a table of NAME = \"value\"".into(),
            }),
        }
    }
    for (k, v) in set {
        values.insert(k.clone(), v.clone());
    }
    let env = |name: &str| std::env::var(name).ok();
    let mut vars = vars::Vars {
        values,
        env: &env,
        used: std::collections::BTreeMap::new(),
        child: None,
    };
    // Defaults first, so that a default may say `${child.name}`; then
    // replicas, each a copy of its table; then every string, once.
    apply_defaults(root.get_mut(), &mut problems);
    let replicas = expand_counts(root.get_mut(), &mut vars, &mut problems);
    let mut numbers: std::collections::HashMap<String, usize> = replicas
        .groups
        .iter()
        .flat_map(|(_, names)| names.iter().enumerate())
        .map(|(i, n)| (n.to_string(), i + 1))
        .collect();
    // A `count = 0` table is checked as a replica would be.
    numbers.extend(replicas.templates.iter().map(|t| (t.clone(), 0)));
    vars.substitute_all(root.get_mut(), &numbers, &mut problems);
    let used = vars.used;
    let mut p = Parser::new(text, path, Some(root.get_ref()));
    p.replica_of = replicas
        .groups
        .iter()
        .flat_map(|(g, names)| names.iter().map(move |n| (n.to_string(), g.to_string())))
        .collect();
    for problem in problems {
        p.error_at(problem.offset, problem.message);
        if let (Some(key), Some(e)) = (problem.key, p.errors.last_mut()) {
            e.key = key;
        }
    }
    let mut scenario = Sections {
        name: None,
        children: Vec::new(),
        routes: Vec::new(),
        protocol: Protocol::default(),
        strategy: Strategy::default(),
    };
    // Children that did not parse still count as names, so that references
    // to them are not reported as unknown too.
    let mut all_names: Vec<Arc<str>> = Vec::new();
    let known: Vec<Arc<str>> = TOP_KEYS.iter().map(|k| Arc::from(*k)).collect();
    for (key, value) in root.get_ref() {
        match key.get_ref().as_ref() {
            "name" => scenario.name = p.de(value),
            "protocol" => {
                if let Some(s) = p.de::<ProtocolSettings>(value) {
                    scenario.protocol.order = s.order;
                    scenario.protocol.unlisted = s.unlisted;
                    scenario.protocol.max_visits = s.max_visits;
                }
            }
            "vars" | "defaults" => {} // applied above
            "supervision" => {
                if let Some(s) = p.de::<SupervisionSettings>(value) {
                    scenario.strategy = s.strategy;
                }
            }
            "children" => match value.get_ref() {
                DeValue::Table(children) => {
                    for (name, child) in children {
                        let name: Arc<str> = Arc::from(name.get_ref().as_ref());
                        if replicas.templates.contains(&*name) {
                            // Checked for its problems, never run.
                            let _ = p.de_child(&name, child);
                            p.rejected.retain(|s| s.name != name);
                            continue;
                        }
                        all_names.push(name.clone());
                        if let Some(mut spec) = p.de_child(&name, child) {
                            spec.name = name;
                            scenario.children.push(spec);
                        }
                    }
                }
                _ => p.error_at(
                    value.span().start,
                    "expected a table of children: [children.NAME]".into(),
                ),
            },
            "routes" => scenario.routes = p.de_each(value, "routes"),
            "steps" => scenario.protocol.steps = p.de_each(value, "steps"),
            other => {
                let hint = closest(other, &known)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                p.error_at(
                    key.span().start,
                    format!("unknown key `{other}`{hint}; a scenario has name, [protocol], [supervision], [children.NAME], [[routes]] and [[steps]]"),
                );
            }
        }
    }
    let plan = p.check(
        scenario.children,
        replicas.groups,
        scenario.routes,
        scenario.protocol,
        &all_names,
    );
    match plan {
        Some(plan) if p.errors.is_empty() => Ok(Scenario {
            path: path.to_path_buf(),
            name: scenario.name,
            plan,
            strategy: scenario.strategy,
            vars: used,
        }),
        _ => {
            // A bad `[defaults]` key is found once per child that takes
            // it, a bad key of a replicated child once per replica: each
            // is reported once (replicas told apart only by their names).
            let mut seen = std::collections::HashSet::new();
            let mut errors = std::mem::take(&mut p.errors);
            errors.retain(|e| {
                let same = same_message(&p.replica_of, &e.message);
                seen.insert((e.line, e.column, e.key.clone(), same))
            });
            errors.sort_by_key(|e| (e.line, e.column));
            Err(ScenarioErrors(errors))
        }
    }
}

/// Replica groups made by `count`, each with its replicas' names.
struct Replicas {
    groups: Vec<(Arc<str>, Vec<Arc<str>>)>,
    /// Tables of groups with `count = 0`, kept under the group's name to
    /// be checked (a file valid with `--set n=0` is valid with `n=3`), but
    /// not run.
    templates: std::collections::HashSet<String>,
}

/// The most replicas one `count` may make.
const MAX_COUNT: i64 = 100_000;

/// `count = N` on a child: its table becomes N tables `NAME-1` … `NAME-N`
/// (in its place, in file order), each without `count` and keeping the
/// original's positions, so that problems are reported where they are
/// written. A bad count is an error at it, and the child stays one child.
fn expand_counts(
    root: &mut DeTable<'_>,
    vars: &mut vars::Vars<'_>,
    problems: &mut Vec<vars::Problem>,
) -> Replicas {
    let mut groups = Vec::new();
    let mut templates = std::collections::HashSet::new();
    let Some((_, children)) = root.iter_mut().find(|(k, _)| k.get_ref() == "children") else {
        return Replicas { groups, templates };
    };
    let DeValue::Table(table) = children.get_mut() else {
        return Replicas { groups, templates };
    };
    let counted = |v: &Spanned<DeValue<'_>>| match v.get_ref() {
        DeValue::Table(t) => t.iter().any(|(k, _)| k.get_ref() == "count"),
        _ => false,
    };
    if !table.iter().any(|(_, v)| counted(v)) {
        return Replicas { groups, templates };
    }
    // A replica may not take the name of a child written out.
    let plain: std::collections::HashSet<String> = table
        .iter()
        .filter(|(_, v)| !counted(v))
        .map(|(k, _)| k.get_ref().to_string())
        .collect();
    let mut expanded = DeTable::new();
    for (name, mut child) in std::mem::take(table) {
        if !counted(&child) {
            expanded.insert(name, child);
            continue;
        }
        let DeValue::Table(t) = child.get_mut() else {
            unreachable!("counted: a table")
        };
        let mut count = t
            .iter()
            .find(|(k, _)| k.get_ref() == "count")
            .map(|(_, v)| v.clone())
            .expect("counted: has count");
        let mut without = DeTable::new();
        for (k, v) in std::mem::take(t) {
            if k.get_ref() != "count" {
                without.insert(k, v);
            }
        }
        *t = without;
        vars.value(&mut count, problems);
        let n = match count.get_ref() {
            DeValue::Integer(i) => i.to_string().parse::<i64>().ok(),
            DeValue::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        let n = match n {
            Some(n) if (0..=MAX_COUNT).contains(&n) => n as usize,
            other => {
                let what = match other {
                    Some(n) => format!("{n} is out of range"),
                    None => "it is not a whole number".to_string(),
                };
                problems.push(vars::Problem {
                    key: Some(format!("children.{}.count", name.get_ref())),
                    offset: count.span().start,
                    message: format!(
                        "`count` is how many replicas, 0 to {MAX_COUNT} (a number, or a string that becomes one): {what}"
                    ),
                });
                expanded.insert(name, child);
                continue;
            }
        };
        let group: Arc<str> = Arc::from(name.get_ref().as_ref());
        let mut names = Vec::with_capacity(n);
        for index in 1..=n {
            let replica = format!("{group}-{index}");
            if plain.contains(&replica) {
                problems.push(vars::Problem {
                    key: Some(format!("children.{group}.count")),
                    offset: count.span().start,
                    message: format!(
                        "replica `{replica}` of `{group}` has the name of another child"
                    ),
                });
                continue;
            }
            names.push(Arc::from(replica.as_str()));
            expanded.insert(
                Spanned::new(name.span(), std::borrow::Cow::Owned(replica)),
                child.clone(),
            );
        }
        if n == 0 {
            templates.insert(group.to_string());
            expanded.insert(name, child);
        }
        groups.push((group, names));
    }
    *table = expanded;
    Replicas { groups, templates }
}

/// A message with replicas' names replaced by their group's, to tell
/// whether two problems are the same one.
fn same_message(replica_of: &std::collections::HashMap<String, String>, message: &str) -> String {
    if replica_of.is_empty() || !message.contains('`') {
        return message.to_string();
    }
    message
        .split('`')
        .enumerate()
        .map(|(i, part)| match replica_of.get(part) {
            Some(group) if i % 2 == 1 => group.as_str(),
            _ => part,
        })
        .collect::<Vec<_>>()
        .join("`")
}

struct Parser<'a> {
    text: &'a str,
    file: &'a Path,
    root: Option<&'a DeTable<'a>>,
    errors: Vec<ScenarioError>,
    /// Children whose table had problems, made from their good keys.
    rejected: Vec<ChildSpec>,
    /// Each replica's group: its problems are reported at the group's key.
    replica_of: std::collections::HashMap<String, String>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, file: &'a Path, root: Option<&'a DeTable<'a>>) -> Parser<'a> {
        Parser {
            text,
            file,
            root,
            errors: Vec::new(),
            rejected: Vec::new(),
            replica_of: std::collections::HashMap::new(),
        }
    }

    /// Deserializes one section; on failure records the error and gives None.
    fn de<T: DeserializeOwned>(&mut self, value: &Spanned<DeValue<'_>>) -> Option<T> {
        let deserializer = toml::de::ValueDeserializer::from(value.clone());
        match T::deserialize(deserializer) {
            Ok(v) => Some(v),
            Err(e) => {
                let at = e.span().unwrap_or(value.span()).start;
                self.error_at(at, with_suggestion(e.message()));
                None
            }
        }
    }

    /// Deserializes a child's table, reporting every problem in it, not
    /// just the first one serde meets: on failure each key is tried on its
    /// own, and what the good keys make is still checked as a spec (so a
    /// bad `frame_cap` is reported next to a misspelled key). Gives the
    /// spec only when the whole table was good.
    fn de_child(&mut self, name: &Arc<str>, child: &Spanned<DeValue<'_>>) -> Option<ChildSpec> {
        let deserialize = |value: Spanned<DeValue<'_>>| {
            ChildSpec::deserialize(toml::de::ValueDeserializer::from(value))
        };
        let whole = match deserialize(child.clone()) {
            Ok(spec) => return Some(spec),
            Err(e) => e,
        };
        let DeValue::Table(table) = child.get_ref() else {
            return self.de::<ChildSpec>(child);
        };
        let missing = |e: &toml::de::Error| e.message().starts_with("missing field");
        let mut good = DeTable::new();
        let mut found = 0;
        for (key, value) in table {
            let mut alone = DeTable::new();
            alone.insert(key.clone(), value.clone());
            match deserialize(Spanned::new(child.span(), DeValue::Table(alone))) {
                Err(e) if !missing(&e) => {
                    let at = e.span().unwrap_or(key.span()).start;
                    self.error_at(at, with_suggestion(e.message()));
                    found += 1;
                }
                _ => {
                    good.insert(key.clone(), value.clone());
                }
            }
        }
        // The good keys together: a missing `cmd`, or (when no key alone
        // was wrong) the whole table's problem. If they make a spec, it is
        // checked with the others, for what only a check finds; it is not
        // returned, the child being invalid all the same.
        match deserialize(Spanned::new(child.span(), DeValue::Table(good))) {
            Ok(mut spec) => {
                spec.name = name.clone();
                self.rejected.push(spec);
            }
            Err(e) => {
                let e = if found == 0 { whole } else { e };
                let at = e.span().unwrap_or(child.span()).start;
                self.error_at(at, with_suggestion(e.message()));
            }
        }
        None
    }

    /// Deserializes every element of an array of tables.
    fn de_each<T: DeserializeOwned>(&mut self, value: &Spanned<DeValue<'_>>, what: &str) -> Vec<T> {
        match value.get_ref() {
            DeValue::Array(items) => items.iter().filter_map(|item| self.de(item)).collect(),
            _ => {
                self.error_at(
                    value.span().start,
                    format!("expected an array of tables: [[{what}]]"),
                );
                Vec::new()
            }
        }
    }

    fn error_at(&mut self, offset: usize, message: String) {
        let (line, column) = line_column(self.text, offset);
        let mut key = self.root.map(|r| key_path(r, offset)).unwrap_or_default();
        // A replica's key is where its group is written.
        if let Some(rest) = key.strip_prefix("children.") {
            let (name, tail) = rest.split_once('.').unwrap_or((rest, ""));
            if let Some(group) = self.replica_of.get(name) {
                let dot = if tail.is_empty() { "" } else { "." };
                key = format!("children.{group}{dot}{tail}");
            }
        }
        self.errors.push(ScenarioError {
            file: self.file.to_path_buf(),
            line,
            column,
            key,
            message,
        });
    }

    /// Checks across sections, pointing each problem at its key.
    /// Checks the sections as a plan; its problems are reported at their keys.
    fn check(
        &mut self,
        mut specs: Vec<ChildSpec>,
        groups: Vec<(Arc<str>, Vec<Arc<str>>)>,
        routes: Vec<Route>,
        protocol: Protocol,
        all_names: &[Arc<str>],
    ) -> Option<Plan> {
        let parsed: std::collections::HashSet<Arc<str>> =
            specs.iter().map(|s| s.name.clone()).collect();
        for name in all_names {
            if !parsed.contains(name) {
                // It did not parse (already reported): what its good keys
                // make is checked too, and its dependencies still count.
                match self.rejected.iter().position(|s| &s.name == name) {
                    Some(i) => specs.push(self.rejected.swap_remove(i)),
                    None => {
                        let mut placeholder = ChildSpec::new(name.clone(), ["(did not parse)"]);
                        placeholder.depends_on = self.raw_depends_on(name);
                        specs.push(placeholder);
                    }
                }
            }
        }
        let existing = crate::plan::Existing::default();
        match Plan::check_with(&existing, specs, groups, routes, Some(protocol)) {
            Ok(plan) => Some(plan),
            Err(problems) => {
                for problem in problems.0 {
                    let offset = self.locate(&problem);
                    self.error_at(offset, problem.to_string());
                }
                None
            }
        }
    }

    /// `children.NAME.depends_on` read straight from the document.
    fn raw_depends_on(&self, name: &str) -> Vec<Arc<str>> {
        let Some(root) = self.root else {
            return Vec::new();
        };
        let children = root.iter().find(|(k, _)| k.get_ref() == "children");
        let Some(DeValue::Table(children)) = children.map(|(_, v)| v.get_ref()) else {
            return Vec::new();
        };
        let child = children.iter().find(|(k, _)| k.get_ref() == name);
        let Some(DeValue::Table(child)) = child.map(|(_, v)| v.get_ref()) else {
            return Vec::new();
        };
        match child
            .iter()
            .find(|(k, _)| k.get_ref() == "depends_on")
            .map(|(_, v)| v.get_ref())
        {
            Some(DeValue::Array(deps)) => deps
                .iter()
                .filter_map(|d| d.get_ref().as_str())
                .map(Arc::from)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The offset of the key a cross-section problem is about.
    fn locate(&self, problem: &ConfigError) -> usize {
        let Some(root) = self.root else { return 0 };
        let path: Vec<Seg> = match problem.place() {
            Location::Child {
                child,
                key,
                element,
            } => {
                let mut p = vec![
                    Seg::Key("children".into()),
                    Seg::Key(child.to_string()),
                    Seg::Key(key.into()),
                ];
                p.extend(element.map(|e| Seg::Element(e.to_string())));
                p
            }
            Location::Route { index, key } => vec![
                Seg::Key("routes".into()),
                Seg::Index(index - 1),
                Seg::Key(key.into()),
            ],
            Location::Step { step, key } => {
                let mut p = vec![
                    Seg::Key("steps".into()),
                    Seg::Index(step - 1),
                    Seg::FirstKeyExcept("label"),
                ];
                p.extend(key.map(|k| Seg::Key(k.into())));
                p
            }
        };
        resolve(root, &path)
    }
}

enum Seg {
    Key(String),
    Index(usize),
    /// In a table: the first key other than this one (a step's action).
    FirstKeyExcept(&'static str),
    /// In an array: the element equal to this string.
    Element(String),
}

/// Follows `path` as far as it goes and returns the offset of the deepest
/// item found.
fn resolve(root: &DeTable<'_>, path: &[Seg]) -> usize {
    let mut offset = 0;
    let mut table = Some(root);
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for seg in path {
        let next = match (seg, table, value.map(|v| v.get_ref())) {
            (Seg::Key(k), Some(t), _) => t
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == k.as_str()),
            (Seg::FirstKeyExcept(skip), Some(t), _) => {
                t.iter().find(|(key, _)| key.get_ref().as_ref() != *skip)
            }
            (Seg::Index(i), _, Some(DeValue::Array(a))) => {
                value = a.get(*i);
                table = value.and_then(|v| match v.get_ref() {
                    DeValue::Table(t) => Some(t),
                    _ => None,
                });
                match value {
                    Some(v) => {
                        offset = v.span().start;
                        continue;
                    }
                    None => break,
                }
            }
            (Seg::Element(s), _, Some(DeValue::Array(a))) => {
                if let Some(v) = a.iter().find(|v| v.get_ref().as_str() == Some(s.as_str())) {
                    offset = v.span().start;
                }
                break;
            }
            _ => break,
        };
        let Some((key, v)) = next else { break };
        offset = key.span().start;
        value = Some(v);
        table = match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    offset
}

/// The dotted key at `offset`: the innermost key, or value, that contains
/// it. Searched through the whole document, because the span of a
/// `[header]` table covers its header, not its body.
fn key_path(root: &DeTable<'_>, offset: usize) -> String {
    fn in_table(t: &DeTable<'_>, offset: usize, path: &mut Vec<String>, best: &mut Vec<String>) {
        for (key, value) in t {
            path.push(key.get_ref().to_string());
            let here = key.span().contains(&offset) || value.span().contains(&offset);
            if here && path.len() > best.len() {
                *best = path.clone();
            }
            in_value(value, offset, path, best);
            path.pop();
        }
    }
    fn in_value(
        v: &Spanned<DeValue<'_>>,
        offset: usize,
        path: &mut Vec<String>,
        best: &mut Vec<String>,
    ) {
        match v.get_ref() {
            DeValue::Table(t) => in_table(t, offset, path, best),
            DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    let last = path.pop().unwrap_or_default();
                    path.push(format!("{last}[{}]", i + 1));
                    if item.span().contains(&offset) && path.len() >= best.len() {
                        *best = path.clone();
                    }
                    in_value(item, offset, path, best);
                    path.pop();
                    path.push(last);
                }
            }
            _ => {}
        }
    }
    let mut best = Vec::new();
    in_table(root, offset, &mut Vec::new(), &mut best);
    best.join(".")
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Adds "did you mean" to serde's "unknown field/variant `x`, expected one
/// of `a`, `b`" messages.
fn with_suggestion(message: &str) -> String {
    let message = message.trim();
    let (Some(start), Some(list)) = (message.find('`'), message.find("expected one of ")) else {
        return message.to_string();
    };
    let Some(end) = message[start + 1..].find('`') else {
        return message.to_string();
    };
    let got = &message[start + 1..start + 1 + end];
    let options: Vec<Arc<str>> = message[list + "expected one of ".len()..]
        .split(", ")
        .map(|o| Arc::from(o.trim_matches('`')))
        .collect();
    match closest(got, &options) {
        Some(s) => format!(
            "{} (did you mean `{s}`?)",
            &message[..list].trim_end_matches([',', ' '])
        ),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse(text, Path::new("s.toml"))
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn defaults_are_whole_values_a_child_replaces() {
        let text = r#"
[defaults]
stop = { signal = "INT", grace = "1s" }
env = { LEVEL = "info" }

[children.a]
cmd = ["true"]

[children.b]
cmd = ["true"]
env = { OTHER = "x" }
stop = { signal = "TERM" }
"#;
        let s = parse(text, Path::new("s.toml")).unwrap();
        let a = &s.plan.children()[0];
        let b = &s.plan.children()[1];
        assert_eq!(a.stop.signal, crate::Signal::Int);
        assert_eq!(a.stop.grace, std::time::Duration::from_secs(1));
        assert_eq!(a.env.get("LEVEL").map(String::as_str), Some("info"));
        assert_eq!(b.stop.signal, crate::Signal::Term);
        assert_eq!(
            b.stop.grace,
            crate::spec::StopSpec::default().grace,
            "replaced, not merged"
        );
        assert!(!b.env.contains_key("LEVEL"), "replaced, not merged");
        // A default dependency is not its own.
        let deps = "[defaults]\ndepends_on = [\"db\"]\n\n[children.db]\ncmd = [\"true\"]\n\n[children.web]\ncmd = [\"true\"]\n";
        let s = parse(deps, Path::new("s.toml")).unwrap();
        let db = s.plan.children().iter().find(|c| &*c.name == "db").unwrap();
        let web = s
            .plan
            .children()
            .iter()
            .find(|c| &*c.name == "web")
            .unwrap();
        assert!(db.depends_on.is_empty());
        assert_eq!(web.depends_on, [Arc::from("db")]);
        // A bad default is reported once, where it is written.
        let bad = "[defaults]\nframng = \"json\"\n\n[children.a]\ncmd = [\"true\"]\n\n[children.b]\ncmd = [\"true\"]\n";
        let errs = errors(bad);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("s.toml:2:1:"), "{errs:?}");
    }

    fn names(s: &Scenario) -> Vec<String> {
        s.plan
            .children()
            .iter()
            .map(|c| c.name.to_string())
            .collect()
    }

    #[test]
    fn count_makes_replicas_with_their_index_and_name() {
        let text = r#"
[vars]
n = 3

[defaults]
env = { ME = "${child.name}" }

[children.server]
cmd = ["cat"]

[children.worker]
count = "${vars.n}"
cmd = ["echo", "${child.index}", "${child.name}", "$${child.index}"]
depends_on = ["server"]

[children.client]
cmd = ["cat"]
depends_on = ["worker"]

[[routes]]
from = "worker"
to = "server"
"#;
        let s = parse(text, Path::new("s.toml")).unwrap();
        assert_eq!(
            names(&s),
            ["server", "worker-1", "worker-2", "worker-3", "client"]
        );
        let w2 = &s.plan.children()[2];
        assert_eq!(w2.cmd, ["echo", "2", "worker-2", "${child.index}"]);
        assert_eq!(w2.env["ME"], "worker-2", "a default says child.name too");
        assert_eq!(s.plan.children()[0].env["ME"], "server");
        assert_eq!(
            s.plan.children()[4].depends_on,
            [Arc::from("worker-1"), "worker-2".into(), "worker-3".into()],
            "depends_on a group: on every replica"
        );
        let routes: Vec<String> = s
            .plan
            .routes()
            .iter()
            .map(|r| format!("{}>{}", r.from, r.to))
            .collect();
        assert_eq!(
            routes,
            ["worker-1>server", "worker-2>server", "worker-3>server"]
        );
        assert_eq!(s.plan.groups().len(), 1);

        // --set over [vars]; 0 is allowed and the group name stays valid.
        let set = [("n".to_string(), "0".to_string())];
        let s = parse_with(text, Path::new("s.toml"), &set).unwrap();
        assert_eq!(names(&s), ["server", "client"]);
        assert!(s.plan.routes().is_empty());
        assert!(s.plan.children()[1].depends_on.is_empty());
    }

    #[test]
    fn a_bad_count_is_an_error_at_its_key_and_a_replica_problem_is_told_once() {
        for (count, why) in [
            ("-1", "-1 is out of range"),
            ("\"x\"", "it is not a whole number"),
            ("1.5", "it is not a whole number"),
            ("1000001", "1000001 is out of range"),
        ] {
            let text = format!("[children.w]\ncount = {count}\ncmd = [\"true\"]\n");
            let errs = errors(&text);
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(
                errs[0].starts_with("s.toml:2:9: children.w.count: `count` is how many replicas")
                    && errs[0].ends_with(why),
                "{errs:?}"
            );
        }
        let text = "[children.w]\ncount = 3\ncmd = [\"true\"]\nframng = \"json\"\ndepends_on = [\"nope\"]\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 2, "one each, not one per replica: {errs:?}");
        assert!(errs[0].contains("children.w.framng"), "{errs:?}");
        assert!(errs[1].contains("children.w.depends_on"), "{errs:?}");
        // count = 0 runs nothing, but its table is checked all the same.
        let text =
            "[children.w]\ncount = 0\ncmd = [\"echo\", \"${vars.nope}\"]\nframng = \"json\"\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].contains("children.w.cmd") && errs[0].contains("vars.nope"),
            "{errs:?}"
        );
        assert!(errs[1].contains("children.w.framng"), "{errs:?}");
        // A replica may not take a written-out child's name, before or after it.
        for text in [
            "[children.w]\ncount = 2\ncmd = [\"true\"]\n[children.w-2]\ncmd = [\"false\"]\n",
            "[children.w-2]\ncmd = [\"false\"]\n[children.w]\ncount = 2\ncmd = [\"true\"]\n",
        ] {
            let errs = errors(text);
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(
                errs[0].contains(
                    "children.w.count: replica `w-2` of `w` has the name of another child"
                ),
                "{errs:?}"
            );
        }
        let text = "[children.w]\ncmd = [\"echo\", \"${child.index}\"]\n";
        let errs = errors(text);
        assert!(errs[0].contains("child `w` has no `count`"), "{errs:?}");
        let text = "[children.w]\ncmd = [\"true\"]\n[[steps]]\nsend = { to = \"w\", line = \"${child.name}\" }\n";
        let errs = errors(text);
        assert!(errs[0].contains("only for a child's table"), "{errs:?}");
    }

    #[test]
    fn bad_probes_are_errors_at_their_keys() {
        let cases = [
            (
                "ready = { tcp = \"localhost\" }",
                "children.a.ready",
                "`tcp` is HOST:PORT",
            ),
            (
                "ready = { http = \"https://x/\" }",
                "children.a.ready",
                "is https",
            ),
            (
                "ready = { http = \"not a url\" }",
                "children.a.ready",
                "`http` is a URL",
            ),
            (
                "ready = { exec = [] }",
                "children.a.ready",
                "`exec` needs at least the program",
            ),
            (
                "ready = { line = \"x\", every = \"1s\" }",
                "children.a.ready",
                "go with a probe",
            ),
            (
                "ready = { tcp = \"h:1\", http = \"http://h/\" }",
                "children.a.ready",
                "more than one",
            ),
            (
                "ready = { tcp = \"h:1\", evry = \"1s\" }",
                "children.a.ready",
                "unknown field `evry`",
            ),
            (
                "alive = { every = \"1s\" }",
                "children.a.alive",
                "`alive` needs a probe",
            ),
            (
                "alive = { tcp = \"h:1\", failures = 0 }",
                "children.a.alive",
                "1 or more",
            ),
            (
                "alive = { tcp = \"h:1\", within = \"1s\" }",
                "children.a.alive",
                "unknown field `within`",
            ),
            (
                "alive = { tcp = \"h:1\", every = \"0s\" }",
                "children.a.alive",
                "more than 0",
            ),
        ];
        for (line, key, message) in cases {
            let text = format!("[children.a]\ncmd = [\"true\"]\n{line}\n");
            let errs = errors(&text);
            assert_eq!(errs.len(), 1, "{line}: {errs:?}");
            assert!(
                errs[0].starts_with("s.toml:3:")
                    && errs[0].contains(key)
                    && errs[0].contains(message),
                "{line}: {errs:?}"
            );
        }
        let good = "[children.a]\ncmd = [\"true\"]\nready = { http = \"http://127.0.0.1:80/h\", within = \"2s\" }\nalive = { exec = [\"true\"] }\n";
        let s = parse(good, Path::new("s.toml")).unwrap();
        let a = &s.plan.children()[0];
        assert_eq!(
            a.ready,
            Some(crate::Ready::Probe(crate::Probe {
                check: crate::Check::Http("http://127.0.0.1:80/h".into()),
                every: std::time::Duration::from_millis(100),
                timeout: std::time::Duration::from_secs(1),
                within: Some(std::time::Duration::from_secs(2)),
            }))
        );
        assert_eq!(
            a.alive,
            Some(crate::Alive::new(crate::Check::Exec(vec!["true".into()])))
        );
    }

    #[test]
    fn steps_may_name_a_group() {
        let text = r#"
[children.w]
count = 2
cmd = ["cat"]

[[steps]]
send = { to = "w", line = "hi" }
[[steps]]
expect = { from = "w", line = "hi" }
[[steps]]
close = { child = "w" }
[[steps]]
expect_exit = { child = "w", code = 0 }
[[steps]]
send = { to = "w-3", line = "no" }
"#;
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("`to` names `w-3`, which is not a child"),
            "{errs:?}"
        );
    }

    const GOOD: &str = r#"
name = "ping-pong"

[protocol]
order = "hold"

[children.server]
cmd = ["python3", "-u", "server.py"]
framing = "json"
ready = { line = "^listening" }
restart = { policy = "on-failure", max = 3, within = "10s", backoff = "100ms", max_backoff = "2s" }
stop = { signal = "TERM", grace = "2s" }

[children.client]
cmd = ["python3", "-u", "client.py"]
depends_on = ["server"]

[[routes]]
from = "client"
to = "server"
match = "^DATA"

[[steps]]
send = { to = "server", json = { type = "hello" } }
label = "greet"
[[steps]]
expect = { from = "server", json = { type = "welcome", session = "${sid}" }, within = "2s" }
[[steps]]
send = { to = "client", line = "resume ${sid}" }
"#;

    #[test]
    fn the_design_example_reads() {
        let s = parse(GOOD, Path::new("s.toml")).unwrap();
        assert_eq!(s.name.as_deref(), Some("ping-pong"));
        let names: Vec<&str> = s.plan.children().iter().map(|c| &*c.name).collect();
        assert_eq!(names, ["server", "client"], "file order");
        assert_eq!(s.plan.routes().len(), 1);
        assert_eq!(s.protocol().steps.len(), 3);
        assert_eq!(s.protocol().order, Order::Hold);
        assert_eq!(s.plan.children()[0].restart.max, 3);
    }

    #[test]
    fn a_misspelled_key_is_named_with_line_column_and_a_suggestion() {
        let text = "[children.server]\ncmd = [\"x\"]\nframng = \"json\"\n";
        assert_eq!(
            errors(text),
            ["s.toml:3:1: children.server.framng: unknown field `framng` (did you mean `framing`?)"]
        );
    }

    #[test]
    fn all_problems_are_reported_together_in_file_order() {
        let text = r#"
nmae = "x"
[children.a]
cmd = ["a"]
framing = "jsn"
depends_on = ["c"]
[children.b]
cmd = ["b"]
depends_on = ["bb"]
stop = { grace = "soon" }
[children.c]
cmd = ["c"]
depends_on = ["a"]
[[routes]]
from = "a"
to = "d"
[[steps]]
expect = { from = "b", line = "(" }
[[steps]]
send = { to = "a", line = "${nope}" }
"#;
        let got = errors(text);
        let expected = [
            "s.toml:2:1: nmae: unknown key `nmae` (did you mean `name`?)",
            "s.toml:5:11: children.a.framing: unknown variant `jsn` (did you mean `json`?)",
            "s.toml:6:1: children.a.depends_on: dependency cycle: a -> c -> a",
            "s.toml:9:15: children.b.depends_on[1]: child `b`: depends_on names `bb`, which is not a child (did you mean `b`?)",
            "s.toml:10:18: children.b.stop.grace: invalid duration `soon`",
            "s.toml:16:1: routes[1].to: route 1 (a -> d): `d` is not a child",
            "s.toml:18:24: steps[1].expect.line: step 1: invalid regex in `expect.line`",
            "s.toml:20:1: steps[2].send: step 2: `${nope}` is not captured by any earlier step",
        ];
        assert_eq!(got.len(), expected.len(), "{got:#?}");
        for (g, e) in got.iter().zip(expected) {
            assert!(g.starts_with(e), "\n got: {g}\nwant: {e}...");
        }
    }

    #[test]
    fn a_send_line_with_a_newline_is_named_at_its_key() {
        let text =
            "[children.a]\ncmd = [\"a\"]\n[[steps]]\nsend = { to = \"a\", line = \"one\\ntwo\" }\n";
        assert_eq!(
            errors(text),
            ["s.toml:4:20: steps[1].send.line: step 1: `send.line` holds a newline; a send is one line (use one step per line)"]
        );
    }

    /// Regression (issue 15, item 1): a duration that `check` accepted
    /// overflowed an instant at run time (a panic, then a hang).
    #[test]
    fn a_duration_over_100_years_is_an_error_at_its_key() {
        let got = errors(
            "[children.a]\ncmd = [\"a\"]\nstop = { signal = \"TERM\", grace = \"5000000000000000h\" }\n",
        );
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("s.toml:3:"), "{}", got[0]);
        assert!(got[0].contains("children.a.stop"), "{}", got[0]);
        assert!(got[0].contains("over 100 years"), "{}", got[0]);
        let hundred_years = "[children.a]\ncmd = [\"a\"]\ndrain = \"876000h\"\n";
        assert!(
            parse(hundred_years, Path::new("s.toml")).is_ok(),
            "100 years pass"
        );
    }

    /// Regression (issue 15, item 5): a NUL byte in `cmd` or `env`, and `=`
    /// in an env name, passed `check` and failed only at spawn.
    #[test]
    fn nul_bytes_and_bad_env_names_are_errors_at_their_keys() {
        let got = errors(
            "[children.a]\ncmd = [\"echo\", \"a\\u0000b\"]\nenv = { \"A=B\" = \"x\", OK = \"y\\u0000\" }\n",
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("s.toml:2:"), "{}", got[0]);
        assert!(
            got[0].ends_with("child `a`: cmd argument 2 holds a NUL byte"),
            "{}",
            got[0]
        );
        assert!(got[1].starts_with("s.toml:3:"), "{}", got[1]);
        assert!(
            got[1].ends_with("child `a`: env `A=B`: a name cannot hold `=`"),
            "{}",
            got[1]
        );
        assert!(
            got[2].ends_with("child `a`: env `OK`: it holds a NUL byte"),
            "{}",
            got[2]
        );
    }

    /// Regression (issue 15, item 7): `frame_cap = 0` silently became 4,
    /// Regression (issue 15, item 7): a child table with several problems
    /// reported only the first one serde met.
    #[test]
    fn every_problem_of_one_child_table_is_reported_at_its_key() {
        let got = errors(
            "[children.a]\ncmd = [\"a\"]\nframe_cap = 0\ncolour = \"red\"\n\
             stop = { grace = \"abc\" }\nframing = \"xml\"\n\
             [children.b]\ncolour = 1\n",
        );
        let wanted = [
            ("s.toml:3:", "children.a.frame_cap", "frame_cap is 0"),
            ("s.toml:4:", "children.a.colour", "unknown field `colour`"),
            (
                "s.toml:5:",
                "children.a.stop.grace",
                "invalid duration `abc`",
            ),
            ("s.toml:6:", "children.a.framing", "unknown variant `xml`"),
            ("s.toml:7:", "children.b", "missing field `cmd`"),
            ("s.toml:8:", "children.b.colour", "unknown field `colour`"),
        ];
        assert_eq!(got.len(), wanted.len(), "{got:#?}");
        for (line, (place, key, text)) in got.iter().zip(wanted) {
            assert!(line.starts_with(place), "{line} (wanted {place})");
            assert!(line.contains(&format!(" {key}: ")), "{line} (wanted {key})");
            assert!(line.contains(text), "{line} (wanted {text})");
        }
    }

    /// and a child named `""` was accepted.
    #[test]
    fn a_tiny_frame_cap_and_an_empty_name_are_errors() {
        let got = errors("[children.a]\ncmd = [\"a\"]\nframe_cap = 0\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("s.toml:3:"), "{}", got[0]);
        assert!(
            got[0].ends_with(
                "child `a`: frame_cap is 0; it must be at least 4 bytes (one UTF-8 character)"
            ),
            "{}",
            got[0]
        );
        let got = errors("[children.\"\"]\ncmd = [\"a\"]\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("a child needs a name"), "{}", got[0]);
    }

    #[test]
    fn a_syntax_error_has_a_position_too() {
        let got = errors("[children.a]\ncmd = [\"a\"\n");
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("s.toml:2:"), "{}", got[0]);
    }

    #[test]
    fn a_step_with_two_actions_is_named() {
        let got = errors(
            "[children.a]\ncmd = [\"a\"]\n[[steps]]\nwait = \"1s\"\nclose = { child = \"a\" }\n",
        );
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("s.toml:3:1: steps[1]: a step has exactly one action"),
            "{}",
            got[0]
        );
    }
}
