//! The watchdog: what kills our children, and what escaped their groups,
//! when our own process dies, even by SIGKILL.
//!
//! The parent-death signal reaches only direct children; their descendants
//! would live on. So each director (and batch) starts one small `/bin/sh`
//! process (in its own process group, without a parent-death signal,
//! ignoring SIGINT and SIGHUP) that reads lines on its stdin:
//!
//! | line          | meaning                                               |
//! |---------------|-------------------------------------------------------|
//! | `+PGID`       | a child's process group to kill                       |
//! | `-PGID`       | that group is done (its child ended)                  |
//! | `ePID:START`  | an escapee (left its group) to kill, if still the same process |
//! | `xPID:START`  | that escapee is gone                                  |
//! | `.`           | the run ended cleanly: nothing to sweep               |
//!
//! Its stdin is a pipe whose only write end is ours: when our process dies
//! the kernel closes it, and the watchdog SIGKILLs every group still
//! listed, then freezes (SIGSTOP) every escapee it was told about, every
//! process whose environment carries the run's `PROCESSION_CHILD=<run>/`
//! marker, and every child of one frozen, looking three times so that what
//! forked meanwhile is found too; then it kills each of them that is still
//! the same process (pid and start time). On a clean end it just exits.
//!
//! It is a shell script, using only builtins, so that a library user has no
//! helper binary to install. Groups are removed when their child has ended,
//! and escapees are checked by start time, so a reused id is never killed
//! by mistake.

use std::io;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const SCRIPT: &str = r#"trap '' INT HUP
run=$1
groups=" "
escaped=" "
clean=
while IFS= read -r line; do
  case $line in
    +*) groups="$groups${line#+} " ;;
    -*) g=${line#-}
        case $groups in *" $g "*) groups="${groups%%" $g "*} ${groups#*" $g "}" ;; esac ;;
    e*) escaped="$escaped${line#e} " ;;
    x*) e=${line#x}
        case $escaped in *" $e "*) escaped="${escaped%%" $e "*} ${escaped#*" $e "}" ;; esac ;;
    .) clean=1 ;;
  esac
done
for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
[ -n "$clean" ] && exit 0
# Freeze (SIGSTOP: a stopped process cannot fork) what is ours, noting
# PID:START; kill them all at the end, each only if still the same process.
doomed=" "
freeze() { # PID [START]: the start time it must have, if known
  IFS= read -r s < "/proc/$1/stat" 2>/dev/null || return
  s=${s##*) }
  set -- "$1" "$2" $s
  case $3 in Z|X) return ;; esac
  [ -n "$2" ] && [ "$2" != "${22}" ] && return
  case $doomed in *" $1:"*) return ;; esac
  kill -s STOP "$1" 2>/dev/null && doomed="$doomed$1:${22} "
}
for round in 1 2 3; do
  for e in $escaped; do freeze "${e%%:*}" "${e#*:}"; done
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    # A child of a frozen one is ours too (even with its environment cleared).
    IFS= read -r s < "$d/stat" 2>/dev/null || continue
    s=${s##*) }
    set -- $s
    case $doomed in *" $2:"*) freeze "$p"; continue ;; esac
    { while IFS= read -r l || [ -n "$l" ]; do
        case $l in *"PROCESSION_CHILD=$run/"*) freeze "$p"; break ;; esac
      done < "$d/environ"; } 2>/dev/null
  done
done
for e in $doomed; do
  p=${e%%:*}
  IFS= read -r s < "/proc/$p/stat" 2>/dev/null || continue
  s=${s##*) }
  set -- $s
  [ "${20}" = "${e#*:}" ] && kill -s KILL "$p" 2>/dev/null
done
"#;

/// A running watchdog. Dropping it (with every sender) ends it.
pub(crate) struct Watchdog {
    tx: mpsc::UnboundedSender<String>,
}

impl Watchdog {
    /// Starts the watchdog of run `run` on the current arbiter.
    pub fn start(run: &str) -> io::Result<Watchdog> {
        let spawning = super::contain::spawning();
        let mut child = tokio::process::Command::new("/bin/sh")
            .args(["-c", SCRIPT, "procession-watchdog", run])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a Ctrl-C to our terminal's foreground group or a
            // signal to one of our children's groups never reaches it.
            .process_group(0)
            .spawn()?;
        let pid = child.id().unwrap_or(0);
        spawning.spawned(pid, None);
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        actix::spawn(async move {
            while let Some(line) = rx.recv().await {
                if let Err(e) = stdin.write_all(line.as_bytes()).await {
                    tracing::error!(error = %e, "the watchdog is gone; grandchildren may outlive a crash");
                    break;
                }
            }
            drop(stdin);
            let _ = child.wait().await;
            super::contain::collected(pid);
        });
        tracing::debug!(pid, "watchdog started");
        Ok(Watchdog { tx })
    }

    /// Adds a process group to kill if we die.
    pub fn watch(&self, pgid: u32) {
        let _ = self.tx.send(format!("+{pgid}\n"));
    }

    /// Removes a process group (its child has ended and the group was killed).
    pub fn unwatch(&self, pgid: u32) {
        let _ = self.tx.send(format!("-{pgid}\n"));
    }

    /// Where escapees are told (see `contain`).
    pub fn input(&self) -> mpsc::UnboundedSender<String> {
        self.tx.clone()
    }

    /// The run ended and left nothing behind: no sweep when we go.
    pub fn clean_end(&self) {
        let _ = self.tx.send(".\n".to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command};

    fn sleeper(marker: Option<&str>) -> Child {
        let mut cmd = Command::new("sleep");
        cmd.arg("100").env_clear();
        if let Some(m) = marker {
            cmd.env(crate::sys::MARKER, m);
        }
        cmd.spawn().expect("sleep starts")
    }

    /// Kills (by pid) what the test started, even when it fails.
    struct Reaper(Vec<u32>);

    impl Drop for Reaper {
        fn drop(&mut self) {
            for &pid in &self.0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    #[test]
    fn when_we_die_it_kills_the_escapees_it_was_told_of_and_the_runs_marked_processes() {
        let mut told = sleeper(None);
        let mut reused = sleeper(None); // told, with another start time
        let mut marked = sleeper(Some("r1-test/web"));
        let mut other_run = sleeper(Some("r2-test/web"));
        // Told of too, with a child that cleared its environment.
        let mut parent = Command::new("sh")
            .args(["-c", "env -i sleep 100 & echo $!; wait"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh starts");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(parent.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let grandchild: u32 = line.trim().parse().expect("a pid");
        let mut pids = [&told, &reused, &marked, &other_run, &parent]
            .map(Child::id)
            .to_vec();
        pids.push(grandchild);
        let _reaper = Reaper(pids);
        let start = |c: &Child| crate::sys::procfs::stat(c.id()).expect("running").start;
        let lines = [
            format!("e{}:{}\n", told.id(), start(&told)),
            format!("e{}:{}\n", reused.id(), start(&reused) + 1),
            format!("e{}:{}\n", parent.id(), start(&parent)),
        ];
        let (told_status, marked_status, parent_status) =
            actix_rt::System::new().block_on(async move {
                let watchdog = Watchdog::start("r1-test").expect("the watchdog starts");
                for line in lines {
                    watchdog.input().send(line).unwrap();
                }
                // No `.` line: our end, as if we were killed.
                drop(watchdog);
                // Their deaths are the event to wait for (the watchdog acts on
                // its own; they are killed last, after every freeze). The
                // system runs meanwhile, so the lines reach the watchdog.
                tokio::task::spawn_blocking(move || (told.wait(), marked.wait(), parent.wait()))
                    .await
                    .unwrap()
            });
        assert_eq!(
            told_status.unwrap().signal(),
            Some(9),
            "an escapee it was told of"
        );
        assert_eq!(marked_status.unwrap().signal(), Some(9), "the run's marker");
        assert_eq!(parent_status.unwrap().signal(), Some(9), "told of too");
        // Its child went with it (killed, then collected by init: polling,
        // with a deadline, until it is a zombie or gone).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while crate::sys::procfs::stat(grandchild).is_some_and(|p| !p.is_zombie()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the child of a frozen one lives"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let state = |c: &Child| crate::sys::procfs::stat(c.id()).map_or('?', |p| p.state);
        assert_eq!(
            state(&reused),
            'S',
            "a pid whose start time differs: untouched"
        );
        assert_eq!(state(&other_run), 'S', "another run's marker: untouched");
        for c in [&mut reused, &mut other_run] {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}
