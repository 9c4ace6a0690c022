//! Pseudo-terminals for terminal children: open one with a size and an echo
//! setting, make it the child's controlling terminal (in a session of its
//! own), and read and write its master end without blocking. The child's
//! side closing shows as `EIO` on the master: that is end of file.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, Winsize};
use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The end-of-file character of a terminal in canonical mode (VEOF, ^D).
pub(crate) const VEOF: u8 = 0x04;

/// Both ends of a new pseudo-terminal, close-on-exec.
pub(crate) struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a terminal of `rows` x `cols`, echoing input back only if `echo`.
///
/// Both ends are opened close-on-exec at once (not set afterwards): a child
/// another thread starts meanwhile must not inherit them, or the terminal
/// would live as long as that child.
pub(crate) fn open(rows: u16, cols: u16, echo: bool) -> io::Result<Pty> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = posix_openpt(flags).map_err(io::Error::from)?;
    grantpt(&master).map_err(io::Error::from)?;
    unlockpt(&master).map_err(io::Error::from)?;
    let path = ptsname_r(&master).map_err(io::Error::from)?;
    let slave = nix::fcntl::open(path.as_str(), flags, nix::sys::stat::Mode::empty())
        .map_err(io::Error::from)?;
    let master = OwnedFd::from(master);
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer, which
    // points at one.
    unsafe { tiocswinsz(slave.as_raw_fd(), &size) }.map_err(io::Error::from)?;
    let mut termios = tcgetattr(&slave).map_err(io::Error::from)?;
    termios.local_flags.set(LocalFlags::ECHO, echo);
    tcsetattr(&slave, SetArg::TCSANOW, &termios).map_err(io::Error::from)?;
    let flags = fcntl(&master, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(&master, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(Pty { master, slave })
}

nix::ioctl_write_ptr_bad!(tiocswinsz, nix::libc::TIOCSWINSZ, Winsize);
nix::ioctl_write_int_bad!(tiocsctty, nix::libc::TIOCSCTTY);

/// In the forked child, before `exec`: a new session, with the terminal on
/// stdin as its controlling terminal. Only async-signal-safe calls.
pub(crate) fn make_controlling() -> io::Result<()> {
    nix::unistd::setsid().map_err(io::Error::from)?;
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal a terminal
    // another session controls); fd 0 is the terminal's slave end.
    unsafe { tiocsctty(0, 0) }.map_err(io::Error::from)?;
    Ok(())
}

/// The master end, for reading (`EIO` is end of file) or writing.
pub(crate) struct Master(AsyncFd<OwnedFd>);

impl Master {
    /// Registers (a duplicate of) the master end with the runtime.
    pub fn new(fd: &OwnedFd) -> io::Result<Master> {
        let own = fd.try_clone()?;
        // SAFETY: `own` is an open descriptor that the `AsyncFd` owns from
        // here on: it stays open, and the same, until the `AsyncFd` drops.
        let registered = unsafe { AsyncFd::register(own) };
        Ok(Master(registered.map_err(|e| e.into_parts().1)?))
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl AsyncRead for Master {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_fd(), unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The child's side is closed: end of file.
                Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => {
                    return Poll::Ready(Ok(()))
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Master {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
