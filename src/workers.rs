//! Thread-per-core: `workers` threads, each with a runtime of its own. A client's task lives on one
//! worker for its whole life, its socket registered there, so the wake-up that reads a request is the
//! one that forwards it, with no other thread woken to steal work. Servers are lent across workers:
//! each remembers its worker (`current` where it was last registered), the pool prefers an idle server
//! of the asking worker, and one lent across moves its registration along (`transport::Stream::rehome`).
//! Where no workers were started (tests in one runtime), clients run on the caller's runtime.

use std::cell::Cell;
use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;

/// The worker of a thread that is none (the supervisor's runtime, blocking threads, tests).
pub const NONE: usize = usize::MAX;

thread_local! {
    static HOME: Cell<usize> = const { Cell::new(NONE) };
}

struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

static WORKERS: OnceLock<Workers> = OnceLock::new();

/// The worker this thread is, or `NONE`.
pub fn current() -> usize {
    HOME.get()
}

/// Starts `n` worker threads (at least one), each running a single-threaded runtime until the process
/// ends. Once per process.
pub fn start(n: usize) -> io::Result<()> {
    let mut handles = Vec::with_capacity(n.max(1));
    for i in 0..n.max(1) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("pgsluice-worker".into()).spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().thread_name("pgsluice-blocking").build();
            let runtime = match runtime {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            HOME.set(i);
            let _ = tx.send(Ok(runtime.handle().clone()));
            runtime.block_on(std::future::pending::<()>());
        })?;
        handles.push(rx.recv().map_err(|_| io::Error::other("a worker thread did not start"))??);
    }
    WORKERS.set(Workers { handles, next: AtomicUsize::new(0) }).map_err(|_| io::Error::other("workers already started"))
}

/// The worker for a new client, in turn; `None` when no workers were started.
pub fn next() -> Option<&'static Handle> {
    let w = WORKERS.get()?;
    let i = w.next.fetch_add(1, Ordering::Relaxed) % w.handles.len().max(1);
    w.handles.get(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_handed_to_the_workers_in_turn_and_each_knows_its_own() {
        assert_eq!(current(), NONE, "not a worker");
        start(2).expect("workers start");
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            next().expect("workers").spawn(async move {
                let _ = tx.send((current(), std::thread::current().name().map(str::to_string)));
            });
        }
        let mut seen: Vec<_> = (0..4).map(|_| rx.recv().expect("each task ran")).collect();
        seen.sort();
        let worker = Some("pgsluice-worker".to_string());
        assert_eq!(seen, vec![(0, worker.clone()), (0, worker.clone()), (1, worker.clone()), (1, worker)]);
        assert!(start(1).is_err(), "once per process");
    }
}
