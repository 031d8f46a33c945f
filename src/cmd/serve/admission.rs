//! Bounded concurrency with a bounded queue: at most `running` requests work at once, at most
//! `queue` more wait, and anything beyond is turned away at once (429) instead of piling up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

/// The server's work slots.
#[derive(Debug)]
pub struct Admission {
    running: usize,
    queue: usize,
    admitted: AtomicUsize,
    slots: Arc<Semaphore>,
}

/// A request let in: it holds its place (running or waiting) until dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
}

impl Admission {
    /// `running` work slots (at least one) and `queue` places to wait for one.
    pub fn new(running: usize, queue: usize) -> Arc<Self> {
        let running = running.max(1);
        Arc::new(Self {
            running,
            queue,
            admitted: AtomicUsize::new(0),
            slots: Arc::new(Semaphore::new(running)),
        })
    }

    /// A place for one more request, or `None` when every slot and queue place is taken.
    pub fn try_admit(self: &Arc<Self>) -> Option<Ticket> {
        let limit = self.running.saturating_add(self.queue);
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(Ticket {
            admission: Arc::clone(self),
        })
    }

    /// Requests working now.
    pub fn running(&self) -> usize {
        self.running - self.slots.available_permits()
    }

    /// Requests let in and waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.admitted
            .load(Ordering::Acquire)
            .saturating_sub(self.running())
    }
}

impl Ticket {
    /// Runs `work` on a blocking thread once a slot is free, and returns what it gives; `None`
    /// if it panicked. The slot is held until `work` ends, even when the caller stops waiting
    /// (a timeout): work that cannot be interrupted still counts against the limit while it runs.
    pub async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        // The semaphore is never closed, so waiting for it only ends with a slot.
        let slot = Arc::clone(&self.admission.slots)
            .acquire_owned()
            .await
            .ok()?;
        tokio::task::spawn_blocking(move || {
            let _held = (slot, self);
            work()
        })
        .await
        .ok()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_slots_plus_queue_then_refuses_until_one_leaves() {
        let admission = Admission::new(1, 2);
        let tickets: Vec<Ticket> = (0..3)
            .map(|_| admission.try_admit().expect("a place"))
            .collect();
        assert!(admission.try_admit().is_none());
        // Let in, none working yet: all three wait.
        assert_eq!((admission.running(), admission.waiting()), (0, 3));
        drop(tickets);
        assert_eq!(admission.waiting(), 0);
        assert!(admission.try_admit().is_some());
        // A queue as large as the type holds does not overflow the limit.
        assert!(Admission::new(2, usize::MAX).try_admit().is_some());
    }
}
