//! Where procession's actors run: on the caller's actix `System` when there
//! is one, else (plain tokio, `#[tokio::main]`, or no runtime at all) on a
//! thread of their own that runs a `System` for them and ends with them.

use actix::prelude::*;

/// Held by an actor that has a thread of its own: dropped with the actor
/// (after it stopped), it stops that thread's `System`, and the thread ends.
#[derive(Debug)]
pub(crate) struct OwnThread(());

impl Drop for OwnThread {
    fn drop(&mut self) {
        if let Some(system) = System::try_current() {
            system.stop();
        }
    }
}

/// Starts the actor `make` builds: here, inside an actix `System`, else on
/// a new thread named `name` (then `make` gets the [`OwnThread`] to keep).
///
/// # Panics
/// If the OS cannot start a thread (out of threads or memory).
pub(crate) fn start<A>(
    name: &str,
    make: impl FnOnce(Option<OwnThread>) -> A + Send + 'static,
) -> Addr<A>
where
    A: Actor<Context = Context<A>>,
{
    if System::try_current().is_some() {
        return make(None).start();
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let system = System::new();
            system.block_on(async move {
                let _ = tx.send(make(Some(OwnThread(()))).start());
            });
            let _ = system.run();
        })
        .expect("procession could not start a thread for its actors");
    rx.recv()
        .expect("procession's actor thread ended before starting its actor")
}

/// Spawns a future beside the actors: on the actix `System` if there is
/// one, else on the caller's tokio runtime.
pub(crate) fn spawn(future: impl std::future::Future<Output = ()> + Send + 'static) {
    if System::try_current().is_some() {
        actix::spawn(future);
    } else {
        tokio::spawn(future);
    }
}
