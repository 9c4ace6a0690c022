//! Variables in a scenario file: `${vars.NAME}` (from `[vars]`, overridden
//! by `--set NAME=VALUE`), `${env.NAME}` and `${env.NAME:-default}`,
//! substituted once, when the file is read, in every string. `$${` writes a
//! literal `${`. In a child's table, `${child.name}` is its name and (for a
//! replica, made by `count`) `${child.index}` its number from 1. Run-time
//! captures (`${name}`: a bare identifier) are left as they are for later.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

/// Where variables come from, and which were used.
pub(crate) struct Vars<'a> {
    /// `[vars]`, with `--set` on top.
    pub values: BTreeMap<String, String>,
    /// The environment, looked up by name (`std::env::var` in real use).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Every `vars.NAME` / `env.NAME` substituted, with its value.
    pub used: BTreeMap<String, String>,
    /// The child whose table is being substituted, if any.
    pub child: Option<Child>,
}

/// The child a string belongs to, for `${child.name}` / `${child.index}`.
#[derive(Clone)]
pub(crate) struct Child {
    pub name: String,
    /// For a replica: its number, from 1.
    pub index: Option<usize>,
}

/// A problem at a byte offset of the file.
pub(crate) struct Problem {
    pub offset: usize,
    pub message: String,
    /// The dotted key, when it cannot be found from the offset (a key
    /// taken out of the document).
    pub key: Option<String>,
}

impl Vars<'_> {
    /// Substitutes in every string of `table` (keys stay as they are),
    /// except in `[vars]` itself, whose values are taken literally, and in
    /// `[defaults]`, which were copied into the children (and are
    /// substituted there, as each child's own). `replicas` gives each
    /// replica's number by its name.
    pub fn substitute_all(
        &mut self,
        table: &mut DeTable<'_>,
        replicas: &std::collections::HashMap<String, usize>,
        problems: &mut Vec<Problem>,
    ) {
        for (key, value) in table.iter_mut() {
            match key.get_ref().as_ref() {
                "vars" | "defaults" => continue,
                "children" => {
                    if let DeValue::Table(children) = value.get_mut() {
                        for (name, child) in children.iter_mut() {
                            self.child = Some(Child {
                                name: name.get_ref().to_string(),
                                index: replicas.get(name.get_ref().as_ref()).copied(),
                            });
                            self.value(child, problems);
                        }
                        self.child = None;
                        continue;
                    }
                }
                _ => {}
            }
            self.value(value, problems);
        }
    }

    /// Substitutes in one value.
    pub fn value(&mut self, value: &mut Spanned<DeValue<'_>>, problems: &mut Vec<Problem>) {
        let start = value.span().start;
        match value.get_mut() {
            DeValue::String(s) => {
                // Problems are reported at the string: an offset in its
                // unescaped text is not one in the file.
                match self.text(s, start) {
                    Ok(Some(new)) => *s = Cow::Owned(new),
                    Ok(None) => {}
                    Err(p) => problems.push(p),
                }
            }
            DeValue::Array(items) => {
                for item in items.iter_mut() {
                    self.value(item, problems);
                }
            }
            DeValue::Table(t) => {
                for (_, v) in t.iter_mut() {
                    self.value(v, problems);
                }
            }
            _ => {}
        }
    }

    /// `text` with its variables substituted (`None`: nothing to change).
    /// `at` is where the text starts in the file, for errors.
    fn text(&mut self, text: &str, at: usize) -> Result<Option<String>, Problem> {
        if !text.contains("${") {
            return Ok(None);
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut changed = false;
        while let Some(i) = rest.find("${") {
            // `$${` is a literal `${`.
            if i > 0 && rest.as_bytes()[i - 1] == b'$' {
                out.push_str(&rest[..i - 1]);
                out.push_str("${");
                rest = &rest[i + 2..];
                changed = true;
                continue;
            }
            out.push_str(&rest[..i]);
            let offset = at;
            let Some(end) = rest[i..].find('}') else {
                return Err(Problem {
                    offset,
                    key: None,
                    message: format!(
                        "`{}` has no closing `}}` (write `$${{` for a literal `${{`)",
                        &rest[i..]
                    ),
                });
            };
            let inner = &rest[i + 2..i + end];
            match self.resolve(inner) {
                Some(Ok(value)) => {
                    out.push_str(&value);
                    changed = true;
                }
                Some(Err(message)) => {
                    return Err(Problem {
                        offset,
                        message,
                        key: None,
                    })
                }
                // A capture: for later.
                None => out.push_str(&rest[i..=i + end]),
            }
            rest = &rest[i + end + 1..];
        }
        out.push_str(rest);
        Ok(changed.then_some(out))
    }

    /// The value of one `${...}`; `None` if it is not ours to substitute.
    fn resolve(&mut self, inner: &str) -> Option<Result<String, String>> {
        if let Some(name) = inner.strip_prefix("vars.") {
            return Some(match self.values.get(name) {
                Some(v) => {
                    self.used.insert(format!("vars.{name}"), v.clone());
                    Ok(v.clone())
                }
                None => {
                    let known: Vec<&str> = self.values.keys().map(String::as_str).collect();
                    let hint = crate::error::closest_str(name, &known)
                        .map(|s| format!(" (did you mean `vars.{s}`?)"))
                        .unwrap_or_default();
                    Err(format!(
                        "unknown variable `vars.{name}`: set it in [vars] or with --set {name}=VALUE{hint}"
                    ))
                }
            });
        }
        if let Some(spec) = inner.strip_prefix("env.") {
            let (name, default) = match spec.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (spec, None),
            };
            let found = (self.env)(name).filter(|v| !v.is_empty() || default.is_none());
            return Some(match (found, default) {
                (Some(v), _) => {
                    self.used.insert(format!("env.{name}"), v.clone());
                    Ok(v)
                }
                (None, Some(d)) => {
                    self.used.insert(format!("env.{name}"), d.to_string());
                    Ok(d.to_string())
                }
                (None, None) => Err(format!(
                    "environment variable `{name}` is not set (write `${{env.{name}:-default}}` for a default)"
                )),
            });
        }
        if let Some(what) = inner.strip_prefix("child.") {
            return Some(match (&self.child, what) {
                (None, _) => Err(format!(
                    "`{inner}` is only for a child's table ([children.NAME] or [defaults])"
                )),
                (Some(c), "name") => Ok(c.name.clone()),
                (Some(Child { index: Some(i), .. }), "index") => Ok(i.to_string()),
                (Some(c), "index") => Err(format!(
                    "`child.index` is for replicas: child `{}` has no `count`",
                    c.name
                )),
                (Some(_), _) => Err(format!(
                    "unknown variable `{inner}`: a child has `child.name` and `child.index`"
                )),
            });
        }
        if inner.contains('.') {
            let (space, _) = inner.split_once('.').unwrap_or((inner, ""));
            return Some(Err(format!(
                "unknown variable `{inner}`: `{space}.` is not a kind of variable: use `vars.NAME`, `env.NAME` or `child.name`"
            )));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(env: &'a dyn Fn(&str) -> Option<String>) -> Vars<'a> {
        let mut values = BTreeMap::new();
        values.insert("port".to_string(), "8080".to_string());
        Vars {
            values,
            env,
            used: BTreeMap::new(),
            child: None,
        }
    }

    #[test]
    fn every_form_is_substituted_and_captures_stay() {
        let env = |n: &str| (n == "HOME").then(|| "/home/ada".to_string());
        let mut v = vars(&env);
        let text = "${vars.port} ${env.HOME} ${env.NOPE:-x} $${vars.port} ${sid}";
        let out = v.text(text, 0).ok().flatten().unwrap();
        assert_eq!(out, "8080 /home/ada x ${vars.port} ${sid}");
        assert_eq!(v.used.len(), 3);
    }

    #[test]
    fn an_unknown_variable_is_located() {
        let env = |_: &str| None;
        let mut v = vars(&env);
        let err = v.text("port ${vars.prot}", 10).err().unwrap();
        assert_eq!(err.offset, 10, "at the string");
        assert!(
            err.message.contains("did you mean `vars.port`"),
            "{}",
            err.message
        );
        let err = v.text("${env.UNSET}", 0).err().unwrap();
        assert!(
            err.message.contains("`UNSET` is not set"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_missing_brace_and_an_unknown_kind_of_variable_are_errors() {
        let env = |_: &str| None;
        let mut v = vars(&env);
        let err = v.text("--port=${vars.port", 0).err().unwrap();
        assert!(err.message.contains("no closing `}`"), "{}", err.message);
        let err = v.text("${var.port}", 0).err().unwrap();
        assert!(
            err.message.contains("`var.` is not a kind of variable"),
            "{}",
            err.message
        );
        let err = v.text("${child.index}", 0).err().unwrap();
        assert!(err.message.contains("only for a child"), "{}", err.message);
    }

    #[test]
    fn a_child_has_its_name_and_a_replica_its_index() {
        let env = |_: &str| None;
        let mut v = vars(&env);
        v.child = Some(Child {
            name: "worker-2".into(),
            index: Some(2),
        });
        let out = v.text("${child.name}:${child.index} $${child.index}", 0);
        assert_eq!(out.ok().flatten().unwrap(), "worker-2:2 ${child.index}");
        v.child = Some(Child {
            name: "db".into(),
            index: None,
        });
        assert_eq!(v.text("${child.name}", 0).ok().flatten().unwrap(), "db");
        let err = v.text("${child.index}", 0).err().unwrap();
        assert!(
            err.message.contains("`db` has no `count`"),
            "{}",
            err.message
        );
        let err = v.text("${child.nmae}", 0).err().unwrap();
        assert!(err.message.contains("child.name"), "{}", err.message);
    }

    #[test]
    fn an_empty_environment_variable_takes_the_default() {
        let env = |_: &str| Some(String::new());
        let mut v = vars(&env);
        assert_eq!(v.text("${env.E:-d}", 0).ok().flatten().unwrap(), "d");
        assert_eq!(v.text("[${env.E}]", 0).ok().flatten().unwrap(), "[]");
    }
}
