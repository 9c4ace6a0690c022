use std::io;
use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::Pid;

use super::Signal;

/// Sends `sig` to every process in group `pgid`.
///
/// Returns `Ok(false)` when the group no longer exists (nothing was signalled).
pub(crate) fn signal_group(pgid: u32, sig: Signal) -> io::Result<bool> {
    let Some(nix_sig) = sig.to_nix() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {sig} is not supported on this platform"),
        ));
    };
    match killpg(Pid::from_raw(pgid as i32), nix_sig) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Whether any live (not zombie) process is still in group `pgid`.
///
/// A zombie is dead: it only waits for its parent to collect it, and the
/// parent of an orphaned grandchild is init (or a subreaper), not us. So a
/// group whose only members are zombies counts as empty, except for the
/// leader: it is our child, and until we collect it its group is not done.
pub(crate) fn group_alive(pgid: u32) -> bool {
    match killpg(Pid::from_raw(pgid as i32), None) {
        Err(Errno::ESRCH) => false,
        // EPERM: a member we may not signal (it changed its credentials); it
        // is alive all the same.
        Err(_) => true,
        // The leader is there (alive, or a zombie that its parent, the
        // actor, is about to collect): no need to look further. Only a group
        // whose leader was collected costs a scan of /proc.
        Ok(()) if std::path::Path::new(&format!("/proc/{pgid}")).exists() => true,
        Ok(()) => live_member_in_proc(pgid).unwrap_or(true),
    }
}

/// Scans `/proc` for a member of `pgid` that is not a zombie.
fn live_member_in_proc(pgid: u32) -> io::Result<bool> {
    let table = super::procfs::Table::read();
    if table.len() == 0 {
        return Err(io::Error::other("cannot read /proc"));
    }
    let alive = table.all().any(|(_, p)| p.pgrp == pgid && !p.is_zombie());
    Ok(alive)
}

/// Asks the kernel to SIGKILL the calling process when the thread that
/// forked it exits. Runs in the forked child before `exec`, so it only makes
/// async-signal-safe calls.
///
/// `parent` is our process id, read before forking: if we already died
/// between `fork` and `prctl`, the death signal would never come, so the
/// child kills itself instead.
pub(crate) fn set_parent_death_signal(parent: u32) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(io::Error::from)?;
    if nix::unistd::getppid().as_raw() as u32 != parent {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    Ok(())
}

nix::ioctl_read_bad!(fionread, nix::libc::FIONREAD, nix::libc::c_int);

/// How many bytes wait unread in pipe `fd` (0 if it cannot tell).
pub(crate) fn unread_bytes(fd: RawFd) -> u64 {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at
    // one. A stale `fd` gives EBADF (or another file's count: the caller
    // only uses this for open pipes).
    match unsafe { fionread(fd, &mut n) } {
        Ok(_) => n.max(0) as u64,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_that_never_existed_is_not_alive() {
        // Group ids above pid_max cannot exist.
        assert!(!group_alive(0x3fff_fff0));
        assert!(!signal_group(0x3fff_fff0, Signal::Term).unwrap());
    }
}
