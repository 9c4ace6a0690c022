//! Reading the process table from `/proc`: who is whose parent, in which
//! group, alive or a zombie, since when, and a process's `PROCESSION_CHILD`
//! marker. Processes come and go while we read: whatever vanished midway is
//! simply not in the table.

use std::io::Read;

use rustc_hash::FxHashMap;

/// The environment variable that names the child a process descends from.
pub(crate) const MARKER: &str = "PROCESSION_CHILD";

/// One process, as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Proc {
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    /// Clock ticks after boot: with the pid, it names one process for good
    /// (a pid is reused, a pid and a start time are not).
    pub start: u64,
}

impl Proc {
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Every process on the machine at one moment, with a parent → children
/// index.
#[derive(Debug, Default)]
pub(crate) struct Table {
    procs: FxHashMap<u32, Proc>,
    kids: FxHashMap<u32, Vec<u32>>,
}

impl Table {
    /// Reads `/proc` (one `stat` file per process).
    pub fn read() -> Table {
        let mut table = Table::default();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return table;
        };
        let mut buf = Vec::with_capacity(512);
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(p) = read_stat(pid, &mut buf) {
                table.insert(pid, p);
            }
        }
        table
    }

    pub fn insert(&mut self, pid: u32, p: Proc) {
        self.procs.insert(pid, p);
        self.kids.entry(p.ppid).or_default().push(pid);
    }

    pub fn get(&self, pid: u32) -> Option<&Proc> {
        self.procs.get(&pid)
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn all(&self) -> impl Iterator<Item = (u32, &Proc)> {
        self.procs.iter().map(|(pid, p)| (*pid, p))
    }

    pub fn children(&self, pid: u32) -> &[u32] {
        self.kids.get(&pid).map_or(&[], Vec::as_slice)
    }

    /// `root` and everything below it, parents before their children.
    pub fn subtree(&self, root: u32) -> Vec<u32> {
        let mut out = vec![root];
        let mut i = 0;
        while i < out.len() {
            out.extend_from_slice(self.children(out[i]));
            i += 1;
        }
        out
    }
}

/// Our own children (as each of our threads' `children` file lists them),
/// or `None` where the kernel does not offer those files. Costs one read per
/// thread, not one per process on the machine.
pub(crate) fn own_children() -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(text) => out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            ),
            // Not offered (the thread is still there), or the thread ended
            // while we looked (then it has no children to list).
            Err(_) if task.path().exists() => return None,
            Err(_) => {}
        }
    }
    Some(out)
}

/// One process's stat, or `None` if it is gone.
pub(crate) fn stat(pid: u32) -> Option<Proc> {
    read_stat(pid, &mut Vec::with_capacity(512))
}

fn read_stat(pid: u32, buf: &mut Vec<u8>) -> Option<Proc> {
    buf.clear();
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    file.read_to_end(buf).ok()?;
    parse_stat(std::str::from_utf8(buf).ok()?)
}

/// Parses a `/proc/PID/stat` line. The command name may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(stat: &str) -> Option<Proc> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    // Field 22 of the line; `state` was field 3.
    let start = fields.nth(22 - 3 - 3)?.parse().ok()?;
    Some(Proc {
        state,
        ppid,
        pgrp,
        start,
    })
}

/// What a process's environment says about its `PROCESSION_CHILD` marker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Marker {
    /// It has one.
    Found(String),
    /// Its environment has none.
    None,
    /// Its environment cannot be read now (a zombie has none left, a
    /// process in the middle of `exec` may show none for a moment, another
    /// user's is not ours to read).
    Unreadable,
}

/// The process's `PROCESSION_CHILD` marker.
pub(crate) fn marker(pid: u32) -> Marker {
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(environ) if environ.is_empty() => Marker::Unreadable,
        Ok(environ) => match find_marker(&environ) {
            Some(m) => Marker::Found(m.to_string()),
            None => Marker::None,
        },
        Err(_) => Marker::Unreadable,
    }
}

fn find_marker(environ: &[u8]) -> Option<&str> {
    environ.split(|&b| b == 0).find_map(|var| {
        let value = var.strip_prefix(MARKER.as_bytes())?.strip_prefix(b"=")?;
        std::str::from_utf8(value).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parentheses_in_the_name_parses() {
        let line =
            "4242 (a (weird) name) S 1 4240 4240 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Proc {
                state: 'S',
                ppid: 1,
                pgrp: 4240,
                start: 987654
            })
        );
    }

    #[test]
    fn our_own_stat_names_our_parent() {
        let me = stat(std::process::id()).expect("we exist");
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw() as u32);
        assert!(me.start > 0);
    }

    #[test]
    fn our_own_children_are_listed() {
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let listed = own_children();
        child.kill().unwrap();
        child.wait().unwrap();
        if let Some(children) = listed {
            assert!(children.contains(&child.id()), "{children:?}");
        }
    }

    #[test]
    fn the_marker_is_found_only_as_a_whole_variable() {
        let env = b"A=1\0XPROCESSION_CHILD=no\0PROCESSION_CHILD=r1/web\0B=2\0";
        assert_eq!(find_marker(env), Some("r1/web"));
        assert_eq!(find_marker(b"PROCESSION_CHILDREN=x\0"), None);
        assert_eq!(find_marker(b""), None);
    }

    #[test]
    fn a_subtree_lists_parents_before_children() {
        let mut t = Table::default();
        let p = |ppid| Proc {
            state: 'S',
            ppid,
            pgrp: 1,
            start: 1,
        };
        t.insert(10, p(1));
        t.insert(11, p(10));
        t.insert(12, p(11));
        t.insert(13, p(10));
        t.insert(20, p(1));
        let tree = t.subtree(10);
        assert_eq!(tree[0], 10);
        assert_eq!(tree.len(), 4);
        assert!(!tree.contains(&20));
    }
}
