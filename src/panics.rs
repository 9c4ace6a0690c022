//! What a panic inside an actor turns into: a failed run, never a hang.
//!
//! A panicking actor's task is dropped by tokio and the rest of the thread
//! goes on, so nobody would hear of it: a director would wait forever for a
//! child whose actor is gone. So the first director or batch on a thread
//! installs a panic hook (once per process, keeping whatever hook was there
//! before, which still prints the message), and each one on that thread
//! [`watch`]es it. The hook runs on the panicking thread, and every actor of
//! a director runs on the director's thread (one arbiter), so a director
//! hears exactly its own actors' panics and not another thread's.
//!
//! A hook set later by the application replaces ours: panics are then no
//! longer reported, but a child actor that panics still reports its exit as
//! it is dropped (see `ChildActor`'s `Drop`), so nothing hangs.

use std::cell::RefCell;
use std::sync::{Arc, Once};

use tokio::sync::mpsc;

thread_local! {
    static WATCHERS: RefCell<Vec<mpsc::UnboundedSender<Arc<str>>>> = const { RefCell::new(Vec::new()) };
    static LAST: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
    static COUNT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

static HOOK: Once = Once::new();

/// A receiver of every panic on this thread from now on, as
/// `panicked at FILE:LINE:COL: MESSAGE`.
pub(crate) fn watch() -> mpsc::UnboundedReceiver<Arc<str>> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            tell_watchers(describe(info));
            previous(info);
        }));
    });
    let (tx, rx) = mpsc::unbounded_channel();
    WATCHERS.with(|w| w.borrow_mut().push(tx));
    rx
}

/// How many panics this thread has had since its watch was installed: a
/// director compares it before it declares a run passed, because the watch
/// may be read after the dead actor's last message.
pub(crate) fn count() -> u64 {
    COUNT.try_with(|c| c.get()).unwrap_or(0)
}

/// The last panic on this thread (for an actor that finds itself dropped
/// while unwinding, before its watch could be read).
pub(crate) fn last() -> Option<Arc<str>> {
    LAST.try_with(|l| l.try_borrow().ok().and_then(|l| l.clone()))
        .ok()
        .flatten()
}

fn tell_watchers(text: Arc<str>) {
    // `try_`: the thread may be tearing down its thread-locals, or have
    // panicked while registering a watcher.
    let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    let _ = LAST.try_with(|l| {
        if let Ok(mut last) = l.try_borrow_mut() {
            *last = Some(text.clone());
        }
    });
    let _ = WATCHERS.try_with(|w| {
        if let Ok(mut watchers) = w.try_borrow_mut() {
            watchers.retain(|tx| tx.send(text.clone()).is_ok());
        }
    });
}

fn describe(info: &std::panic::PanicHookInfo<'_>) -> Arc<str> {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    match info.location() {
        Some(at) => format!("panicked at {at}: {message}").into(),
        None => format!("panicked: {message}").into(),
    }
}

/// Why a run failed when one of its actors panicked.
pub(crate) fn reason(panic: &str) -> String {
    format!("internal error (a bug in procession, please report it): {panic}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_hears_panics_of_its_own_thread_only() {
        let mut rx = watch();
        let other = std::thread::spawn(|| std::panic::catch_unwind(|| panic!("elsewhere")));
        assert!(other.join().unwrap().is_err());
        assert!(rx.try_recv().is_err(), "another thread's panic is not ours");
        let caught = std::panic::catch_unwind(|| panic!("here {}", 42));
        assert!(caught.is_err());
        let text = rx.try_recv().expect("our panic is reported");
        assert!(text.starts_with("panicked at src/panics.rs:"), "{text}");
        assert!(text.ends_with(": here 42"), "{text}");
    }
}
