//! Reading batch jobs: a TOML or JSON file mapping key -> argv array, or one
//! command a line (split into words as a shell would, never run by one).

use std::path::Path;

use crate::spec::ChildSpec;

use super::Job;

/// A problem in the jobs input, naming the file and the key or line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {place}{message}")]
pub struct JobsError {
    /// The file, or `stdin`.
    pub source_name: String,
    /// `key `x`: `, `line 3: `, or empty.
    pub place: String,
    /// What is wrong.
    pub message: String,
}

fn error(source_name: &str, place: String, message: impl Into<String>) -> JobsError {
    JobsError {
        source_name: source_name.to_string(),
        place,
        message: message.into(),
    }
}

/// A JSON object's entries in file order, duplicates kept.
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Entries, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object mapping key -> argv array")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Jobs from a file: `.json` is JSON, anything else TOML. Keys keep their
/// file order.
pub fn from_file(path: &Path) -> Result<Vec<Job>, Vec<JobsError>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![error(
            &name,
            String::new(),
            format!("cannot read the file: {e}"),
        )]
    })?;
    let map: Vec<(String, serde_json::Value)> = if path.extension().is_some_and(|e| e == "json") {
        match serde_json::from_str::<Entries>(&text) {
            Ok(Entries(entries)) => {
                // A JSON object may repeat a key (serde keeps the last one
                // silently); a jobs file may not, as in TOML.
                let mut seen = std::collections::HashSet::new();
                let dups: Vec<JobsError> = entries
                    .iter()
                    .filter(|(k, _)| !seen.insert(k.clone()))
                    .map(|(k, _)| {
                        error(
                            &name,
                            format!("key `{k}`: "),
                            "duplicate key: each job needs its own key",
                        )
                    })
                    .collect();
                if !dups.is_empty() {
                    return Err(dups);
                }
                entries
            }
            Err(e) => {
                return Err(vec![error(
                    &name,
                    String::new(),
                    format!("invalid JSON: {e} (expected an object mapping key -> argv array)"),
                )])
            }
        }
    } else {
        match toml::from_str::<toml::Table>(&text) {
            Ok(t) => t
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
                    )
                })
                .collect(),
            Err(e) => {
                return Err(vec![error(
                    &name,
                    String::new(),
                    format!("invalid TOML: {}", e.to_string().trim()),
                )])
            }
        }
    };
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    for (key, value) in map {
        let argv: Option<Vec<String>> = value
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect());
        match argv {
            Some(argv) if !argv.is_empty() => jobs.push(Job::new(key, argv)),
            _ => errors.push(error(
                &name,
                format!("key `{key}`: "),
                format!(
                    "expected a non-empty array of strings (program and arguments), got {value}"
                ),
            )),
        }
    }
    if jobs.is_empty() && errors.is_empty() {
        errors.push(error(&name, String::new(), "no jobs"));
    }
    if errors.is_empty() {
        Ok(jobs)
    } else {
        Err(errors)
    }
}

/// Jobs from lines: one command a line, keys are 1-based line numbers;
/// blank lines and lines starting with `#` are skipped.
pub fn from_lines(text: &str, source_name: &str) -> Result<Vec<Job>, Vec<JobsError>> {
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match from_line(line, i + 1, source_name) {
            Ok(Some(job)) => jobs.push(job),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(jobs)
    } else {
        Err(errors)
    }
}

/// The job on line `number` (1-based, its key), or `None` for a blank or
/// `#` line.
pub fn from_line(line: &str, number: usize, source_name: &str) -> Result<Option<Job>, JobsError> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    match shell_words::split(trimmed) {
        Ok(argv) if !argv.is_empty() => Ok(Some(Job::new(number.to_string(), argv))),
        Ok(_) => Ok(None),
        Err(e) => Err(error(
            source_name,
            format!("line {number}: "),
            format!("{e} in `{trimmed}`"),
        )),
    }
}

impl Job {
    /// A job running `argv` under this key, with default settings:
    /// `Job::new("hello", ["echo", "hello"])`.
    pub fn new<I, S>(key: impl Into<String>, argv: I) -> Job
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let key = key.into();
        Job {
            spec: ChildSpec::new(key.as_str(), argv),
            key,
            stdin: None,
        }
    }

    /// Gives the job this input on its stdin, then end of file (without,
    /// its stdin is `/dev/null`): `Job::new("count", ["wc", "-l"]).stdin("a\nb\n")`.
    pub fn stdin(mut self, input: impl Into<bytes::Bytes>) -> Job {
        self.stdin = Some(input.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(jobs: &[Job]) -> Vec<(String, Vec<String>)> {
        jobs.iter()
            .map(|j| (j.key.clone(), j.spec.cmd.clone()))
            .collect()
    }

    #[test]
    fn lines_are_split_like_a_shell_without_one() {
        let jobs = from_lines(
            "echo $HOME;x\n\n# a comment\n  ls -l 'a b' \"c d\"\n",
            "stdin",
        )
        .unwrap();
        assert_eq!(
            argv(&jobs),
            [
                (
                    "1".to_string(),
                    vec!["echo".to_string(), "$HOME;x".to_string()]
                ),
                (
                    "4".to_string(),
                    vec!["ls".into(), "-l".into(), "a b".into(), "c d".into()]
                ),
            ]
        );
        let err = from_lines("ok\necho 'unclosed\n", "stdin").unwrap_err();
        assert_eq!(
            err[0].to_string(),
            "stdin: line 2: missing closing quote in `echo 'unclosed`"
        );
    }

    #[test]
    fn files_map_keys_to_argv_in_file_order_and_name_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("jobs.toml");
        std::fs::write(&toml, "zeta = [\"echo\", \"z\"]\nalpha = [\"true\"]\n").unwrap();
        assert_eq!(
            argv(&from_file(&toml).unwrap())[0].0,
            "zeta",
            "file order, not sorted"
        );
        let json = dir.path().join("jobs.json");
        std::fs::write(&json, r#"{"a": ["echo", "hi"], "b": "echo hi", "c": []}"#).unwrap();
        let errs = from_file(&json).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2);
        assert!(text[0].ends_with("key `b`: expected a non-empty array of strings (program and arguments), got \"echo hi\""), "{}", text[0]);
        assert!(text[1].contains("key `c`"));
    }

    /// Regression (issue 15, item 9): a JSON jobs file with a duplicate key
    /// silently ran one job (serde keeps the last value); TOML rejects it.
    #[test]
    fn a_duplicate_key_in_a_json_jobs_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("jobs.json");
        std::fs::write(&json, r#"{"a": ["true"], "b": ["true"], "a": ["false"]}"#).unwrap();
        let errs = from_file(&json).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(
            text[0].ends_with("key `a`: duplicate key: each job needs its own key"),
            "{}",
            text[0]
        );
    }
}
