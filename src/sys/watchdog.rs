//! The watchdog: what kills our children's process groups when our own
//! process dies, even by SIGKILL.
//!
//! The parent-death signal reaches only direct children; their grandchildren
//! would live on. So each director starts one small `/bin/sh` process (in its
//! own process group, without a parent-death signal, ignoring SIGINT and
//! SIGHUP) that reads `+PGID` and `-PGID` lines on its stdin. Its stdin is a
//! pipe whose only write end is ours: when our process dies the kernel closes
//! it, the watchdog reads EOF and SIGKILLs every group still listed. On a
//! normal end we close the pipe with no group listed and it just exits.
//!
//! It is a shell script, using only builtins, so that a library user has no
//! helper binary to install. Groups are removed when their child has ended,
//! so a group id the kernel reuses later is never killed by mistake.

use std::io;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const SCRIPT: &str = r#"trap '' INT HUP
groups=" "
while IFS= read -r line; do
  case $line in
    +*) groups="$groups${line#+} " ;;
    -*) g=${line#-}
        case $groups in *" $g "*) groups="${groups%%" $g "*} ${groups#*" $g "}" ;; esac ;;
  esac
done
for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
"#;

/// A running watchdog. Dropping it (with every sender) ends it normally.
pub(crate) struct Watchdog {
    tx: mpsc::UnboundedSender<String>,
}

impl Watchdog {
    /// Starts the watchdog on the current arbiter.
    pub fn start() -> io::Result<Watchdog> {
        let mut child = tokio::process::Command::new("/bin/sh")
            .args(["-c", SCRIPT, "procession-watchdog"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a Ctrl-C to our terminal's foreground group or a
            // signal to one of our children's groups never reaches it.
            .process_group(0)
            .spawn()?;
        let pid = child.id().unwrap_or(0);
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
}
