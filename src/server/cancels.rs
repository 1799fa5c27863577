//! Cancel requests in flight to a server, which hold it back from the next client until they settle.

/// Cancel requests on their way to a server: counted from the moment a client's cancel picks this server
/// until the server closes the cancel connection (it has signalled its backend by then). While any is in
/// flight the server must not serve another client, whose query a late cancel would hit.
#[derive(Debug, Default)]
pub struct CancelsInFlight {
    n: std::sync::atomic::AtomicUsize,
    settled: tokio::sync::Notify,
}

impl CancelsInFlight {
    pub fn start(self: &std::sync::Arc<Self>) -> CancelInFlight {
        self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        CancelInFlight(self.clone())
    }

    pub fn busy(&self) -> bool {
        self.n.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// Returns once no cancel is in flight.
    pub async fn settled(&self) {
        loop {
            let notified = self.settled.notified();
            if !self.busy() {
                return;
            }
            notified.await;
        }
    }
}

/// One cancel in flight; done when dropped.
#[derive(Debug)]
pub struct CancelInFlight(std::sync::Arc<CancelsInFlight>);

impl Drop for CancelInFlight {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}
