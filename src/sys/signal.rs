//! Our own `Signal` type, so that no `nix` type appears in the public API.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Unix signal, named as people write it: `"TERM"`, `"SIGTERM"` or `"15"`.
///
/// Serializes as its short name (`"TERM"`), or as the number for signals
/// without a name here.
///
/// ```
/// use procession::Signal;
/// let s: Signal = "SIGINT".parse().unwrap();
/// assert_eq!(s, Signal::Int);
/// assert_eq!(s.to_string(), "INT");
/// assert_eq!("9".parse::<Signal>().unwrap(), Signal::Kill);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// SIGHUP (1)
    Hup,
    /// SIGINT (2)
    Int,
    /// SIGQUIT (3)
    Quit,
    /// SIGABRT (6)
    Abrt,
    /// SIGKILL (9): cannot be caught or ignored.
    Kill,
    /// SIGUSR1 (10)
    Usr1,
    /// SIGSEGV (11)
    Segv,
    /// SIGUSR2 (12)
    Usr2,
    /// SIGPIPE (13)
    Pipe,
    /// SIGALRM (14)
    Alrm,
    /// SIGTERM (15): the default stop signal.
    Term,
    /// SIGCONT (18)
    Cont,
    /// SIGSTOP (19): cannot be caught or ignored.
    Stop,
    /// SIGTSTP (20)
    Tstp,
    /// SIGWINCH (28)
    Winch,
    /// Any other signal, by number.
    Other(i32),
}

const NAMED: [(Signal, &str, i32); 15] = [
    (Signal::Hup, "HUP", libc_num::SIGHUP),
    (Signal::Int, "INT", libc_num::SIGINT),
    (Signal::Quit, "QUIT", libc_num::SIGQUIT),
    (Signal::Abrt, "ABRT", libc_num::SIGABRT),
    (Signal::Kill, "KILL", libc_num::SIGKILL),
    (Signal::Usr1, "USR1", libc_num::SIGUSR1),
    (Signal::Segv, "SEGV", libc_num::SIGSEGV),
    (Signal::Usr2, "USR2", libc_num::SIGUSR2),
    (Signal::Pipe, "PIPE", libc_num::SIGPIPE),
    (Signal::Alrm, "ALRM", libc_num::SIGALRM),
    (Signal::Term, "TERM", libc_num::SIGTERM),
    (Signal::Cont, "CONT", libc_num::SIGCONT),
    (Signal::Stop, "STOP", libc_num::SIGSTOP),
    (Signal::Tstp, "TSTP", libc_num::SIGTSTP),
    (Signal::Winch, "WINCH", libc_num::SIGWINCH),
];

/// Signal numbers, taken from nix so they are right for the target.
mod libc_num {
    use nix::sys::signal::Signal as N;
    pub const SIGHUP: i32 = N::SIGHUP as i32;
    pub const SIGINT: i32 = N::SIGINT as i32;
    pub const SIGQUIT: i32 = N::SIGQUIT as i32;
    pub const SIGABRT: i32 = N::SIGABRT as i32;
    pub const SIGKILL: i32 = N::SIGKILL as i32;
    pub const SIGUSR1: i32 = N::SIGUSR1 as i32;
    pub const SIGSEGV: i32 = N::SIGSEGV as i32;
    pub const SIGUSR2: i32 = N::SIGUSR2 as i32;
    pub const SIGPIPE: i32 = N::SIGPIPE as i32;
    pub const SIGALRM: i32 = N::SIGALRM as i32;
    pub const SIGTERM: i32 = N::SIGTERM as i32;
    pub const SIGCONT: i32 = N::SIGCONT as i32;
    pub const SIGSTOP: i32 = N::SIGSTOP as i32;
    pub const SIGTSTP: i32 = N::SIGTSTP as i32;
    pub const SIGWINCH: i32 = N::SIGWINCH as i32;
}

impl Signal {
    /// The signal's number on this platform.
    pub fn number(self) -> i32 {
        match self {
            Signal::Other(n) => n,
            named => NAMED
                .iter()
                .find(|(s, _, _)| *s == named)
                .map(|(_, _, n)| *n)
                .expect("every named signal is in the table"),
        }
    }

    /// The signal with this number (named where we have a name for it).
    pub fn from_number(n: i32) -> Signal {
        NAMED
            .iter()
            .find(|(_, _, num)| *num == n)
            .map(|(s, _, _)| *s)
            .unwrap_or(Signal::Other(n))
    }

    fn name(self) -> Option<&'static str> {
        NAMED
            .iter()
            .find(|(s, _, _)| *s == self)
            .map(|(_, name, _)| *name)
    }

    pub(crate) fn to_nix(self) -> Option<nix::sys::signal::Signal> {
        nix::sys::signal::Signal::try_from(self.number()).ok()
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.number()),
        }
    }
}

/// The text was not a signal name or number we know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal `{0}` (expected a name like TERM, SIGKILL, or a number from 1 to 64)")]
pub struct UnknownSignal(pub String);

impl FromStr for Signal {
    type Err = UnknownSignal;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if let Ok(n) = trimmed.parse::<i32>() {
            return if (1..=64).contains(&n) {
                Ok(Signal::from_number(n))
            } else {
                Err(UnknownSignal(s.to_string()))
            };
        }
        let upper = trimmed.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        NAMED
            .iter()
            .find(|(_, name, _)| *name == bare)
            .map(|(s, _, _)| *s)
            .ok_or_else(|| UnknownSignal(s.to_string()))
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Number(i32),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Name(s) => s.parse().map_err(serde::de::Error::custom),
            Raw::Number(n) => n.to_string().parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_prefixes_parse() {
        assert_eq!("TERM".parse::<Signal>().unwrap(), Signal::Term);
        assert_eq!("sigkill".parse::<Signal>().unwrap(), Signal::Kill);
        assert_eq!("15".parse::<Signal>().unwrap(), Signal::Term);
        assert_eq!("34".parse::<Signal>().unwrap(), Signal::Other(34));
        assert!("TERMINATE".parse::<Signal>().is_err());
        assert!("0".parse::<Signal>().is_err());
    }

    #[test]
    fn display_round_trips() {
        for (sig, _, n) in NAMED {
            assert_eq!(sig.to_string().parse::<Signal>().unwrap(), sig);
            assert_eq!(Signal::from_number(n), sig);
        }
        assert_eq!(Signal::Other(40).to_string(), "40");
    }
}
