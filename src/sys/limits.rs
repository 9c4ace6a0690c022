//! Resource limits: open files, and the kernel's budget for pipe buffers.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The soft limit of open files before and after [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit found.
    pub before: u64,
    /// The soft limit now (the hard limit, unless that could not be set).
    pub now: u64,
}

/// Raises this process's soft limit of open files to its hard limit.
///
/// Every child takes up to three pipes, so a desktop's default soft limit of
/// 1024 stops a scenario at a few hundred children. The `procession` binary
/// calls this at start; a program embedding the library decides for itself
/// (it is not a side effect of starting a director or a batch).
pub fn raise_open_files_limit() -> io::Result<OpenFiles> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(OpenFiles {
        before: soft,
        now: soft.max(hard),
    })
}

/// A pipe's default capacity on Linux.
const DEFAULT_PIPE: usize = 64 * 1024;

/// Bytes of pipe buffer a process may hold, per user, above the defaults,
/// before the kernel gives new pipes a single page:
/// `/proc/sys/fs/pipe-user-pages-soft` (0: no limit; root is exempt).
/// We use half of it, leaving the rest to the user's other programs.
fn pipe_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        if nix::unistd::geteuid().is_root() {
            return usize::MAX;
        }
        let pages = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok());
        match pages {
            Some(0) | None => usize::MAX,
            Some(pages) => pages.saturating_mul(4096) / 2,
        }
    })
}

/// The pipe buffer bytes we added above the defaults, across the process.
static GROWN: AtomicUsize = AtomicUsize::new(0);

/// A share of the pipe budget, held as long as the grown pipe lives.
#[derive(Debug)]
pub(crate) struct PipeGrant(usize);

impl Drop for PipeGrant {
    fn drop(&mut self) {
        GROWN.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// Takes `extra` bytes of `budget` from `grown`, if they fit.
fn reserve(grown: &AtomicUsize, budget: usize, extra: usize) -> bool {
    grown
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
            now.checked_add(extra).filter(|&total| total <= budget)
        })
        .is_ok()
}

/// Grows a pipe's kernel buffer to `bytes`, while the process stays within
/// its share of the pipe budget (else the pipe keeps its default, and a
/// thousand children do not push every later pipe of the user down to one
/// page). Best effort: `/proc/sys/fs/pipe-max-size` may refuse it too.
/// Larger buffers let the child write more before it blocks, and let us read
/// more per syscall. Keep the grant as long as the pipe.
pub(crate) fn grow_pipe(fd: BorrowedFd<'_>, bytes: usize) -> Option<PipeGrant> {
    let extra = bytes.saturating_sub(DEFAULT_PIPE);
    if !reserve(&GROWN, pipe_budget(), extra) {
        return None;
    }
    match nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(bytes as i32)) {
        Ok(_) => Some(PipeGrant(extra)),
        Err(_) => {
            GROWN.fetch_sub(extra, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipe_budget_is_shared_and_given_back() {
        let grown = AtomicUsize::new(0);
        let mib = 1 << 20;
        assert!(reserve(&grown, 3 * mib, mib));
        assert!(reserve(&grown, 3 * mib, mib));
        assert!(reserve(&grown, 3 * mib, mib));
        assert!(!reserve(&grown, 3 * mib, mib), "over the budget");
        grown.fetch_sub(mib, Ordering::Relaxed);
        assert!(
            reserve(&grown, 3 * mib, mib),
            "room again once a pipe closed"
        );
    }

    #[test]
    fn the_open_files_limit_goes_up_to_the_hard_limit() {
        let got = raise_open_files_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((got.now, soft), (hard, hard));
        assert!(got.before <= got.now);
    }
}
