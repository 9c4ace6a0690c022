//! A validated plan: children, routes and a protocol, with every problem
//! found at once (names, `depends_on`, cycles, routes, steps, regexes,
//! captures). [`scenario`](crate::scenario) produces one from a file; the
//! director launches one without checking it again. Pure code: specs in,
//! problems out.
//!
//! ```
//! use procession::Plan;
//! use procession::{ChildSpec, Route};
//!
//! let plan = Plan::check(
//!     [ChildSpec::new("a", ["echo", "hi"]), ChildSpec::new("b", ["cat"])],
//!     [Route::new("a", "b")],
//!     None,
//! )
//! .unwrap();
//! assert_eq!(plan.children().len(), 2);
//!
//! let problems = Plan::check([ChildSpec::new("a", ["true"])], [Route::new("a", "c")], None)
//!     .unwrap_err();
//! assert_eq!(
//!     problems.to_string(),
//!     "1 problem:\n  - route 1 (a -> c): `c` is not a child"
//! );
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::director::Route;
use crate::error::{closest, ConfigError, ConfigErrors, Place};
use crate::matching::PatternSpec;
use crate::protocol::machine::Machine;
use crate::protocol::Protocol;
use crate::spec::{ChildSpec, Ready};

/// Children, routes and a protocol that were checked together. Build it with
/// [`Plan::check`]; run it with [`Director::launch_plan`](crate::Director::launch_plan)
/// or [`Director::run_plan`](crate::Director::run_plan).
pub struct Plan {
    children: Vec<ChildSpec>,
    /// Replica groups: a name and its replicas `NAME-1` … `NAME-N`.
    groups: Vec<(Arc<str>, Vec<Arc<str>>)>,
    routes: Vec<Route>,
    protocol: Option<(Protocol, Machine)>,
}

/// Builds a [`Plan`] with replicas: a group of children made from one
/// template, named `NAME-1` … `NAME-N`, that routes, `depends_on` and steps
/// may name as a whole (as `count` does in a scenario file).
///
/// ```
/// use procession::Plan;
/// use procession::{ChildSpec, Route};
///
/// let plan = Plan::builder()
///     .child(ChildSpec::new("server", ["cat"]))
///     .replicas("worker", 3, |index, name| {
///         ChildSpec::new(name, ["echo", &format!("I am {index}")]).depends_on("server")
///     })
///     .route(Route::new("worker", "server")) // from each replica
///     .check()
///     .unwrap();
/// let names: Vec<&str> = plan.children().iter().map(|c| &*c.name).collect();
/// assert_eq!(names, ["server", "worker-1", "worker-2", "worker-3"]);
/// assert_eq!(plan.routes().len(), 3);
/// ```
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until `check`"]
pub struct PlanBuilder {
    children: Vec<ChildSpec>,
    groups: Vec<(Arc<str>, Vec<Arc<str>>)>,
    routes: Vec<Route>,
    protocol: Option<Protocol>,
}

impl PlanBuilder {
    /// Adds one child.
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(spec);
        self
    }

    /// Adds `count` replicas (0 is allowed): `make(index, name)` gives the
    /// spec of each, `index` from 1 and `name` = `GROUP-index` (the spec's
    /// own name is replaced by it).
    pub fn replicas(
        mut self,
        group: impl Into<Arc<str>>,
        count: usize,
        mut make: impl FnMut(usize, &str) -> ChildSpec,
    ) -> Self {
        let group = group.into();
        let mut names = Vec::with_capacity(count);
        for index in 1..=count {
            let name: Arc<str> = Arc::from(format!("{group}-{index}"));
            let mut spec = make(index, &name);
            spec.name = name.clone();
            names.push(name);
            self.children.push(spec);
        }
        self.groups.push((group, names));
        self
    }

    /// Adds a route; a group name as `from` means each replica, as `to`
    /// each replica gets the frame.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Sets the protocol; its steps may name groups.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Checks it all, as [`Plan::check`] does.
    pub fn check(self) -> Result<Plan, ConfigErrors> {
        Plan::check_with(
            &Existing::default(),
            self.children,
            self.groups,
            self.routes,
            self.protocol,
        )
    }
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("children", &self.children)
            .field("groups", &self.groups)
            .field("routes", &self.routes)
            .field("protocol", &self.protocol())
            .finish()
    }
}

/// What a director already has, for a plan that adds to it.
#[derive(Debug, Default)]
pub(crate) struct Existing {
    /// Each child and its `depends_on`.
    pub children: BTreeMap<Arc<str>, Vec<Arc<str>>>,
    /// Names in the order they were added.
    pub names: Vec<Arc<str>>,
    /// Routes so far (new ones are numbered after them).
    pub routes: usize,
}

impl Plan {
    /// Checks children, routes and a protocol as a whole, as if nothing
    /// ran yet. Every problem is reported, each naming its child, route or
    /// step.
    pub fn check(
        children: impl IntoIterator<Item = ChildSpec>,
        routes: impl IntoIterator<Item = Route>,
        protocol: Option<Protocol>,
    ) -> Result<Plan, ConfigErrors> {
        Plan::check_with(
            &Existing::default(),
            children.into_iter().collect(),
            Vec::new(),
            routes.into_iter().collect(),
            protocol,
        )
    }

    /// A builder for a plan with replicas.
    pub fn builder() -> PlanBuilder {
        PlanBuilder::default()
    }

    /// Checks a plan that adds to the children a director already has.
    /// Group names in `depends_on` and routes are expanded to their
    /// replicas here; steps keep them (the machine knows the groups).
    pub(crate) fn check_with(
        existing: &Existing,
        mut children: Vec<ChildSpec>,
        groups: Vec<(Arc<str>, Vec<Arc<str>>)>,
        routes: Vec<Route>,
        protocol: Option<Protocol>,
    ) -> Result<Plan, ConfigErrors> {
        let mut problems = Vec::new();
        let members: HashMap<Arc<str>, Vec<Arc<str>>> = groups.iter().cloned().collect();
        let mut group_names: HashSet<&Arc<str>> = HashSet::new();
        for (group, _) in &groups {
            let clash =
                existing.children.contains_key(group) || children.iter().any(|c| &c.name == group);
            if clash || !group_names.insert(group) {
                problems.push(ConfigError::GroupNameTaken {
                    group: group.clone(),
                });
            }
        }
        for spec in &mut children {
            if spec.depends_on.iter().any(|d| members.contains_key(d)) {
                let mut deps = Vec::new();
                for d in std::mem::take(&mut spec.depends_on) {
                    match members.get(&d) {
                        Some(replicas) => deps.extend(replicas.iter().cloned()),
                        None => deps.push(d),
                    }
                }
                spec.depends_on = deps;
            }
        }
        problems.extend(validate(&children, &existing.children, &members));
        let mut names = existing.names.clone();
        names.extend(children.iter().map(|s| s.name.clone()));
        let mut known = names.clone();
        known.extend(groups.iter().map(|(g, _)| g.clone()));
        problems.extend(check_routes(&routes, &known, existing.routes));
        let routes = expand_routes(routes, &members);
        if let Some(protocol) = &protocol {
            problems.extend(check_prompts(protocol, &children, &members));
        }
        let protocol = match protocol {
            None => None,
            Some(protocol) => match Machine::grouped(&protocol, &names, &members) {
                Ok(machine) => Some((protocol, machine)),
                Err(more) => {
                    problems.extend(more);
                    None
                }
            },
        };
        if problems.is_empty() {
            Ok(Plan {
                children,
                groups,
                routes,
                protocol,
            })
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Checks this plan again, against what a director already has.
    pub(crate) fn recheck(self, existing: &Existing) -> Result<Plan, ConfigErrors> {
        let protocol = self.protocol.map(|(p, _)| p);
        // Routes were expanded already; the groups still matter to steps.
        Plan::check_with(existing, self.children, self.groups, self.routes, protocol)
    }

    /// This plan, with an empty protocol if it has none (a run without
    /// steps lasts as long as its children).
    pub(crate) fn with_protocol(mut self) -> Plan {
        if self.protocol.is_none() {
            let names: Vec<Arc<str>> = self.children.iter().map(|c| c.name.clone()).collect();
            let protocol = Protocol::default();
            let machine = Machine::new(&protocol, &names).expect("no steps, no problems");
            self.protocol = Some((protocol, machine));
        }
        self
    }

    /// The children, in the order given.
    pub fn children(&self) -> &[ChildSpec] {
        &self.children
    }

    /// Replica groups, each with its replicas in order (a scenario's
    /// `count`, [`PlanBuilder::replicas`]).
    pub fn groups(&self) -> &[(Arc<str>, Vec<Arc<str>>)] {
        &self.groups
    }

    /// The routes, with group names expanded (one route per replica).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The protocol, if there is one.
    pub fn protocol(&self) -> Option<&Protocol> {
        self.protocol.as_ref().map(|(p, _)| p)
    }

    pub(crate) fn into_parts(self) -> (Vec<ChildSpec>, Vec<Route>, Option<Machine>) {
        (self.children, self.routes, self.protocol.map(|(_, m)| m))
    }
}

/// Checks `routes` against the known child names; `before` routes exist
/// already, so numbering starts after them.
fn check_routes(routes: &[Route], names: &[Arc<str>], before: usize) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    let known: HashSet<&Arc<str>> = names.iter().collect();
    for (i, route) in routes.iter().enumerate() {
        let index = before + i + 1;
        for name in [&route.from, &route.to] {
            if !known.contains(name) {
                problems.push(ConfigError::UnknownRouteChild {
                    index,
                    from: route.from.clone(),
                    to: route.to.clone(),
                    name: name.clone(),
                    suggestion: closest(name, names),
                });
            }
        }
        if let Some(Err(source)) = route.filter.as_ref().map(PatternSpec::compile) {
            problems.push(ConfigError::BadRegex {
                place: Place::Route {
                    index,
                    from: route.from.clone(),
                    to: route.to.clone(),
                },
                key: "match",
                source,
            });
        }
    }
    problems
}

/// Each route naming a group, as one route per replica (`from` a group:
/// from each; `to` a group: to each, so each gets the frame).
fn expand_routes(routes: Vec<Route>, members: &HashMap<Arc<str>, Vec<Arc<str>>>) -> Vec<Route> {
    if members.is_empty() {
        return routes;
    }
    let one = |name: &Arc<str>| -> Vec<Arc<str>> {
        members
            .get(name)
            .cloned()
            .unwrap_or_else(|| vec![name.clone()])
    };
    let mut out = Vec::with_capacity(routes.len());
    for route in routes {
        if !members.contains_key(&route.from) && !members.contains_key(&route.to) {
            out.push(route);
            continue;
        }
        for from in one(&route.from) {
            for to in one(&route.to) {
                if from == to {
                    continue; // a group routed to itself: to the others
                }
                let mut r = route.clone();
                r.from = from.clone();
                r.to = to;
                out.push(r);
            }
        }
    }
    out
}

/// A `prompt` expect on a child whose output is not lines: it has no
/// prompts (an unterminated tail exists only for `lines` framing).
fn check_prompts(
    protocol: &Protocol,
    children: &[ChildSpec],
    members: &HashMap<Arc<str>, Vec<Arc<str>>>,
) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    for (i, step) in protocol.steps.iter().enumerate() {
        let (from, prompts) = match &step.action {
            crate::protocol::Action::Expect {
                from, alternatives, ..
            } => (from, alternatives.iter().any(|a| a.prompt)),
            crate::protocol::Action::ExpectNot { from, pattern, .. } => (from, pattern.prompt),
            _ => continue,
        };
        if !prompts {
            continue;
        }
        let one = [from.clone()];
        let names = members.get(from).map_or(&one[..], Vec::as_slice);
        // Replicas share a template: the first says it for all.
        if let Some(spec) = children.iter().find(|c| names.contains(&c.name)) {
            if spec.framing != crate::Framing::Lines {
                problems.push(ConfigError::PromptNotLines {
                    step: i + 1,
                    child: from.clone(),
                    framing: match spec.framing {
                        crate::Framing::Lines => "lines",
                        crate::Framing::Json => "json",
                        crate::Framing::Bytes => "bytes",
                        crate::Framing::LengthDelimited => "length_delimited",
                    },
                });
            }
        }
    }
    problems
}

/// All problems with adding `new` to the children already known (`existing`:
/// name -> depends_on), in the order they were found.
fn validate(
    new: &[ChildSpec],
    existing: &BTreeMap<Arc<str>, Vec<Arc<str>>>,
    groups: &HashMap<Arc<str>, Vec<Arc<str>>>,
) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    let mut names: HashSet<Arc<str>> = existing.keys().cloned().collect();
    for spec in new {
        if !names.insert(spec.name.clone()) {
            problems.push(ConfigError::DuplicateChild {
                child: spec.name.clone(),
            });
        }
        if spec.name.is_empty() {
            problems.push(ConfigError::EmptyName);
        }
        if spec.frame_cap < 4 {
            problems.push(ConfigError::FrameCapTooSmall {
                child: spec.name.clone(),
                cap: spec.frame_cap,
            });
        }
        if spec.terminal.is_some() && spec.stderr != crate::spec::StderrMode::Events {
            problems.push(ConfigError::TerminalStderr {
                child: spec.name.clone(),
            });
        }
        if spec.terminal.is_some() && spec.framing == crate::Framing::LengthDelimited {
            problems.push(ConfigError::TerminalFraming {
                child: spec.name.clone(),
            });
        }
        if spec.cmd.is_empty() {
            problems.push(ConfigError::EmptyCommand {
                child: spec.name.clone(),
            });
        }
        if let Some(i) = spec.cmd.iter().position(|a| a.contains('\0')) {
            problems.push(ConfigError::NulInCommand {
                child: spec.name.clone(),
                index: i + 1,
            });
        }
        for (name, value) in &spec.env {
            let why = if name.is_empty() {
                Some("the name is empty")
            } else if name.contains('=') {
                Some("a name cannot hold `=`")
            } else if name.contains('\0') || value.contains('\0') {
                Some("it holds a NUL byte")
            } else {
                None
            };
            if let Some(why) = why {
                problems.push(ConfigError::BadEnv {
                    child: spec.name.clone(),
                    name: name.clone(),
                    why,
                });
            }
        }
        if spec.request_id_field.is_some() && spec.framing != crate::Framing::Json {
            problems.push(ConfigError::RequestIdNotJson {
                child: spec.name.clone(),
            });
        }
        if let Some(Ready::Json(other)) = &spec.ready {
            if !other.is_object() {
                problems.push(ConfigError::ReadyJsonNotObject {
                    child: spec.name.clone(),
                });
            }
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
                let known: Vec<Arc<str>> = names.iter().chain(groups.keys()).cloned().collect();
                problems.push(ConfigError::UnknownDependency {
                    child: spec.name.clone(),
                    dependency: dep.clone(),
                    suggestion: closest(dep, &known),
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
        assert!(validate(&new, &BTreeMap::new(), &HashMap::new()).is_empty());
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
        let got = messages(&validate(&new, &existing, &HashMap::new()));
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
        let got = messages(&validate(&new, &BTreeMap::new(), &HashMap::new()));
        assert_eq!(got, ["dependency cycle: b -> c -> b"]);
        let selfish = [spec("me", &["me"])];
        assert_eq!(
            messages(&validate(&selfish, &BTreeMap::new(), &HashMap::new())),
            ["dependency cycle: me -> me"]
        );
    }

    #[test]
    fn unknown_children_and_bad_filters_are_named_with_the_route_index() {
        use crate::matching::PatternSpec;
        let routes = vec![
            Route::new("client", "sever"),
            Route::new("client", "server").filter(PatternSpec::Regex("[".into())),
        ];
        let names: Vec<Arc<str>> = vec!["client".into(), "server".into()];
        assert_eq!(
            messages(&check_routes(&routes, &names, 2)),
            [
                "route 3 (client -> sever): `sever` is not a child (did you mean `server`?)",
                "route 4 (client -> server): invalid regex in `match`: unclosed character class"
            ],
            "numbered after the 2 routes there are"
        );
    }

    #[test]
    fn every_problem_of_a_plan_is_reported_at_once() {
        use crate::protocol::Step;
        let problems = Plan::check(
            [spec("a", &["b"]), spec("b", &["a"])],
            [Route::new("a", "c")],
            Some(Protocol {
                steps: vec![Step::send_line("d", "hi")],
                ..Protocol::default()
            }),
        )
        .unwrap_err();
        assert_eq!(
            messages(&problems.0),
            [
                "dependency cycle: a -> b -> a",
                "route 1 (a -> c): `c` is not a child",
                "step 1: `to` names `d`, which is not a child",
            ]
        );
    }

    #[test]
    fn a_request_id_field_on_a_line_child_is_named() {
        let spec = spec("svc", &[]).request_id_field("rid");
        assert_eq!(
            messages(&validate(&[spec], &BTreeMap::new(), &HashMap::new())),
            ["child `svc`: request_id_field is for a child with framing = \"json\" (a line child's replies come in order)"]
        );
    }

    #[test]
    fn a_bad_ready_regex_and_an_empty_cmd_are_named() {
        let mut bad = spec("srv", &[]).ready(Ready::Line("(".into()));
        bad.cmd.clear();
        let got = messages(&validate(&[bad], &BTreeMap::new(), &HashMap::new()));
        assert_eq!(
            got,
            [
                "child `srv`: cmd is empty (it needs at least the program)",
                "child `srv`: invalid regex in `ready.line`: unclosed group"
            ]
        );
    }
}
