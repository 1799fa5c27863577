//! Which idle server and which waiter: the asking worker's own first (see `workers`), so a server
//! seldom has to move its registration to another thread.

use super::{IdleConn, Waiter};
use std::collections::VecDeque;

/// A waiter of this worker among the first few, so the server stays on its worker (no registration to
/// move, no other thread to wake); else the first. A waiter is passed over at most `MAX_PASSED` times, so
/// the order stays first come, first served within a few hand-overs.
pub(super) fn next_waiter<T>(waiters: &mut VecDeque<Waiter<T>>) -> Option<Waiter<T>> {
    const WINDOW: usize = 8;
    const MAX_PASSED: u8 = 4;
    let here = crate::workers::current();
    let front = waiters.front()?;
    if here != crate::workers::NONE && front.home != here && front.passed < MAX_PASSED {
        let near = waiters.iter().take(WINDOW).position(|w| w.home == here);
        if let Some(i) = near {
            for w in waiters.iter_mut().take(i) {
                w.passed += 1;
            }
            return waiters.remove(i);
        }
    }
    waiters.pop_front()
}

/// The most recently used idle connection of this worker, else the most recently used one.
pub(super) fn take_idle<T>(idle: &mut Vec<IdleConn<T>>) -> Option<IdleConn<T>> {
    let here = crate::workers::current();
    match idle.iter().rposition(|c| c.home == here) {
        Some(i) => Some(idle.remove(i)),
        None => idle.pop(),
    }
}
