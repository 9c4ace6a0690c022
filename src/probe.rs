//! Readiness and liveness probes: a TCP connect, an HTTP GET, or a
//! program's exit status, tried every so often, each try bounded.
//!
//! In a scenario:
//!
//! ```toml
//! ready = { tcp = "127.0.0.1:8080", every = "100ms", timeout = "1s", within = "10s" }
//! alive = { http = "http://127.0.0.1:8080/health", every = "1s", timeout = "1s", failures = 3 }
//! ```
//!
//! A try runs off the director's work: a connect is asynchronous, an HTTP
//! request runs on tokio's blocking pool (with [`ureq`], plain http only),
//! a program runs as a process of its own group, killed with its group
//! when its time is up. A slow or hung probe delays nothing but its next
//! try.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What one try checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// A TCP connection to `HOST:PORT` succeeds.
    Tcp(String),
    /// A GET of this plain-http URL answers 2xx.
    Http(String),
    /// This program (argv, never a shell) exits 0.
    Exec(Vec<String>),
}

/// A readiness probe: tried every `every` from the spawn until one try
/// passes; past `within` (if set) the child is stopped and counts as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What a try checks.
    pub check: Check,
    /// Time between tries (default 100ms).
    pub every: Duration,
    /// The bound of one try (default 1s).
    pub timeout: Duration,
    /// The bound of the whole wait (default: none).
    pub within: Option<Duration>,
}

impl Probe {
    /// A probe with the default timings.
    pub fn new(check: Check) -> Probe {
        Probe {
            check,
            every: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
            within: None,
        }
    }

    /// Gives up on readiness after `limit`.
    pub fn within(mut self, limit: Duration) -> Probe {
        self.within = Some(limit);
        self
    }
}

/// A liveness probe: from readiness on, tried every `every`; after
/// `failures` failed tries in a row the child is published `unhealthy`,
/// stopped, and its restart policy decides as for a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alive {
    /// What a try checks.
    pub check: Check,
    /// Time between tries (default 1s).
    pub every: Duration,
    /// The bound of one try (default 1s).
    pub timeout: Duration,
    /// Failed tries in a row that make it unhealthy (default 3).
    pub failures: u32,
}

impl Alive {
    /// A liveness probe with the default timings.
    pub fn new(check: Check) -> Alive {
        Alive {
            check,
            every: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failures: 3,
        }
    }
}

/// The probe keys of a `ready` or `alive` table, as written.
#[derive(Debug, Default, Clone)]
struct ProbeTable {
    tcp: Option<String>,
    http: Option<String>,
    exec: Option<Vec<String>>,
    every: Option<Duration>,
    timeout: Option<Duration>,
}

impl ProbeTable {
    /// The check, if the table has exactly one kind; `what` names the key
    /// (`ready`, `alive`) in messages.
    fn check(&self, what: &str) -> Result<Option<Check>, String> {
        let mut kinds = Vec::new();
        if let Some(addr) = &self.tcp {
            check_tcp(addr)?;
            kinds.push(Check::Tcp(addr.clone()));
        }
        if let Some(url) = &self.http {
            check_http(url)?;
            kinds.push(Check::Http(url.clone()));
        }
        if let Some(argv) = &self.exec {
            if argv.is_empty() || argv[0].is_empty() {
                return Err("`exec` needs at least the program: exec = [\"pg_isready\"]".into());
            }
            if argv.iter().any(|a| a.contains('\0')) {
                return Err("`exec` holds a NUL byte".into());
            }
            kinds.push(Check::Exec(argv.clone()));
        }
        if kinds.len() > 1 {
            return Err(format!(
                "`{what}` has more than one of tcp, http, exec: give one"
            ));
        }
        for (key, d) in [("every", self.every), ("timeout", self.timeout)] {
            if d == Some(Duration::ZERO) {
                return Err(format!("`{what}.{key}` must be more than 0"));
            }
        }
        Ok(kinds.pop())
    }

    fn has_timings(&self) -> bool {
        self.every.is_some() || self.timeout.is_some()
    }

    fn from_check(check: &Check, every: Duration, timeout: Duration) -> ProbeTable {
        let mut t = ProbeTable {
            every: Some(every),
            timeout: Some(timeout),
            ..ProbeTable::default()
        };
        match check {
            Check::Tcp(a) => t.tcp = Some(a.clone()),
            Check::Http(u) => t.http = Some(u.clone()),
            Check::Exec(argv) => t.exec = Some(argv.clone()),
        }
        t
    }
}

/// `HOST:PORT`, with a port from 1 to 65535 (`[::1]:80` for IPv6).
fn check_tcp(addr: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`tcp` is HOST:PORT, such as \"127.0.0.1:8080\": `{addr}` {why}"
        ))
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("has no port");
    };
    if host.is_empty() || host == "[]" {
        return bad("has no host");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return bad("has an IPv6 address without [brackets]");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => bad("has no port from 1 to 65535"),
    }
}

/// A plain-http URL with a host.
fn check_http(url: &str) -> Result<(), String> {
    let bad = |why: String| {
        Err(format!(
            "`http` is a URL such as \"http://127.0.0.1:8080/health\": `{url}` {why}"
        ))
    };
    let uri: ureq::http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return bad(format!("does not parse ({e})")),
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return bad("is https; probes speak plain http".into()),
        Some(other) => return bad(format!("has scheme `{other}`, not http")),
        None => return bad("has no scheme (write http://...)".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return bad("has no host".into());
    }
    Ok(())
}

/// `ready` as written: a frame, a delay, or a probe.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadyTable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    json: Option<serde_json::Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_text_opt"
    )]
    after: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exec: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_text_opt"
    )]
    every: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_text_opt"
    )]
    timeout: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_text_opt"
    )]
    within: Option<Duration>,
}

impl TryFrom<ReadyTable> for crate::spec::Ready {
    type Error = String;

    fn try_from(t: ReadyTable) -> Result<Self, String> {
        use crate::spec::Ready;
        let probe = ProbeTable {
            tcp: t.tcp,
            http: t.http,
            exec: t.exec,
            every: t.every,
            timeout: t.timeout,
        };
        let check = probe.check("ready")?;
        let mut forms = Vec::new();
        if let Some(line) = t.line {
            forms.push(Ready::Line(line));
        }
        if let Some(json) = t.json {
            if !json.is_object() {
                return Err(
                    "`ready.json` is a partial JSON object: { json = { status = \"up\" } }".into(),
                );
            }
            forms.push(Ready::Json(json));
        }
        if let Some(after) = t.after {
            forms.push(Ready::After(after));
        }
        let is_probe = check.is_some();
        if let Some(check) = check {
            let d = Probe::new(check.clone());
            forms.push(Ready::Probe(Probe {
                check,
                every: probe.every.unwrap_or(d.every),
                timeout: probe.timeout.unwrap_or(d.timeout),
                within: t.within,
            }));
        }
        match forms.len() {
            0 => Err("`ready` needs one of line, json, after, tcp, http, exec".into()),
            1 if !is_probe && (probe.has_timings() || t.within.is_some()) => {
                Err("`every`, `timeout` and `within` go with a probe (tcp, http or exec)".into())
            }
            1 => Ok(forms.pop().expect("one")),
            _ => Err(
                "`ready` has more than one of line, json, after, tcp, http, exec: give one".into(),
            ),
        }
    }
}

impl From<crate::spec::Ready> for ReadyTable {
    fn from(r: crate::spec::Ready) -> ReadyTable {
        use crate::spec::Ready;
        match r {
            Ready::Line(l) => ReadyTable {
                line: Some(l),
                ..ReadyTable::default()
            },
            Ready::Json(j) => ReadyTable {
                json: Some(j),
                ..ReadyTable::default()
            },
            Ready::After(d) => ReadyTable {
                after: Some(d),
                ..ReadyTable::default()
            },
            Ready::Probe(p) => {
                let probe = ProbeTable::from_check(&p.check, p.every, p.timeout);
                ReadyTable {
                    tcp: probe.tcp,
                    http: probe.http,
                    exec: probe.exec,
                    every: probe.every,
                    timeout: probe.timeout,
                    within: p.within,
                    ..ReadyTable::default()
                }
            }
        }
    }
}

/// `alive` as written. (The probe keys are written out here and in
/// [`ReadyTable`] rather than flattened from one struct: serde's
/// `deny_unknown_fields` does not work through `flatten`.)
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AliveTable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exec: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_text_opt"
    )]
    every: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_text_opt"
    )]
    timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failures: Option<u32>,
}

impl TryFrom<AliveTable> for Alive {
    type Error = String;

    fn try_from(t: AliveTable) -> Result<Self, String> {
        let probe = ProbeTable {
            tcp: t.tcp,
            http: t.http,
            exec: t.exec,
            every: t.every,
            timeout: t.timeout,
        };
        let Some(check) = probe.check("alive")? else {
            return Err("`alive` needs a probe: one of tcp, http, exec".into());
        };
        let d = Alive::new(check.clone());
        if t.failures == Some(0) {
            return Err("`alive.failures` must be 1 or more".into());
        }
        Ok(Alive {
            check,
            every: probe.every.unwrap_or(d.every),
            timeout: probe.timeout.unwrap_or(d.timeout),
            failures: t.failures.unwrap_or(d.failures),
        })
    }
}

impl From<Alive> for AliveTable {
    fn from(a: Alive) -> AliveTable {
        let probe = ProbeTable::from_check(&a.check, a.every, a.timeout);
        AliveTable {
            tcp: probe.tcp,
            http: probe.http,
            exec: probe.exec,
            every: probe.every,
            timeout: probe.timeout,
            failures: Some(a.failures),
        }
    }
}

impl Serialize for Alive {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        AliveTable::from(self.clone()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Alive {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = AliveTable::deserialize(d)?;
        Alive::try_from(t).map_err(serde::de::Error::custom)
    }
}

/// Why a try did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The check ran and failed (no connection, a 503, an exit status).
    Failed(String),
    /// The check cannot run at all (an exec probe's program is missing or
    /// not executable): trying again will not help.
    CannotRun(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Failed(e) | Failure::CannotRun(e) => f.write_str(e),
        }
    }
}

/// One try: `Ok` when the check passed, else why not. Never longer than
/// `timeout` (an exec probe's program and its group are killed then).
/// `marker` (the probed child's containment marker) goes into an exec
/// probe's environment, so that what it leaves behind counts as that
/// child's, and dies with it.
pub(crate) async fn attempt(
    check: &Check,
    timeout: Duration,
    marker: Option<std::sync::Arc<str>>,
) -> Result<(), Failure> {
    match check {
        Check::Tcp(addr) => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str())).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(Failure::Failed(format!("tcp {addr}: {e}"))),
                Err(_) => Err(Failure::Failed(format!(
                    "tcp {addr}: no connection within {timeout:?}"
                ))),
            }
        }
        Check::Http(url) => {
            let url = url.clone();
            let get = tokio::task::spawn_blocking(move || http_get(&url, timeout));
            // The request is bounded by its own timeout; this one is in
            // case the blocking pool is slow to start it.
            match tokio::time::timeout(timeout + Duration::from_millis(200), get).await {
                Ok(Ok(result)) => result.map_err(Failure::Failed),
                Ok(Err(e)) => Err(Failure::Failed(format!("http probe: {e}"))),
                Err(_) => Err(Failure::Failed(format!(
                    "http: no answer within {timeout:?}"
                ))),
            }
        }
        Check::Exec(argv) => exec(argv, timeout, marker).await,
    }
}

fn http_get(url: &str, timeout: Duration) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        // A probe of 127.0.0.1 must not go through `http_proxy`.
        .proxy(None)
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("http {url}: status {status}"))
            }
        }
        Err(e) => Err(format!("http {url}: {e}")),
    }
}

async fn exec(
    argv: &[String],
    timeout: Duration,
    marker: Option<std::sync::Arc<str>>,
) -> Result<(), Failure> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    if let Some(marker) = marker {
        cmd.env(crate::sys::MARKER, &*marker);
    }
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        let message = format!("exec {}: {e}", argv[0]);
        match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                Failure::CannotRun(message)
            }
            _ => Failure::Failed(message),
        }
    })?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(Failure::Failed(format!("exec {}: {status}", argv[0]))),
        Ok(Err(e)) => Err(Failure::Failed(format!("exec {}: {e}", argv[0]))),
        Err(_) => {
            // Not reaped yet, so its pid is still its group's id: the group
            // goes, then the leader is reaped. (What a finished try left
            // behind carries its child's marker: containment's to kill.)
            if let Some(pid) = pid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            Err(Failure::Failed(format!(
                "exec {}: still running after {timeout:?}",
                argv[0]
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_urls_are_checked() {
        assert!(check_tcp("127.0.0.1:8080").is_ok());
        assert!(check_tcp("[::1]:80").is_ok());
        assert!(check_tcp("localhost:1").is_ok());
        for bad in ["127.0.0.1", ":80", "host:0", "host:99999", "::1:80", "h:x"] {
            assert!(check_tcp(bad).is_err(), "{bad}");
        }
        assert!(check_http("http://127.0.0.1:8080/health").is_ok());
        for bad in [
            "https://x/",
            "127.0.0.1:80/x",
            "http:///x",
            "ftp://x/",
            "http://exa mple/",
        ] {
            let err = check_http(bad).unwrap_err();
            assert!(err.starts_with("`http` is a URL"), "{bad}: {err}");
        }
    }
}
