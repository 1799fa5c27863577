//! Guards that keep the pool's accounting right whatever happens to the future holding them: a waiter
//! that gives up, a login in progress, a claimed slot.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Grant, Pool};
use crate::pool::Connect;

/// Removes a waiter that gave up (timeout, client gone) and returns whatever it had been granted.
pub(super) struct WaiterGuard<C: Connect> {
    pub(super) pool: Arc<Pool<C>>,
    pub(super) id: u64,
    pub(super) rx: Option<oneshot::Receiver<Grant<Box<C::Conn>>>>,
}

impl<C: Connect> Drop for WaiterGuard<C> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        self.pool.lock().waiters.retain(|w| w.id != self.id);
        rx.close();
        match rx.try_recv() {
            Ok(Grant::Conn(conn, created)) => self.pool.release(conn, created),
            Ok(Grant::Slot { .. }) => self.pool.free_slot(),
            Err(_) => {}
        }
    }
}

/// Counts a connection as logging in (SHOW POOLS sv_login) while it exists.
pub(super) struct LoginGuard<'a, C: Connect> {
    pub(super) pool: &'a Pool<C>,
}

impl<C: Connect> Drop for LoginGuard<'_, C> {
    fn drop(&mut self) {
        let mut g = self.pool.lock();
        g.connecting = g.connecting.saturating_sub(1);
    }
}

/// A claimed connection slot not yet owned by a Lease; freed on drop.
pub(super) struct SlotGuard<'a, C: Connect> {
    pub(super) pool: &'a Pool<C>,
}

impl<C: Connect> Drop for SlotGuard<'_, C> {
    fn drop(&mut self) {
        self.pool.free_slot();
    }
}
