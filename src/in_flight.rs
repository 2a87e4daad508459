//! A route's `max_in_flight`: the semaphore its forwards take a permit of, kept across
//! reloads (a new one per config let a route run its cap twice over: the forwards held
//! under the old one, and as many again under the new). A reload that changes the value
//! resizes it: a raise adds permits at once; a lower value forgets the permits that are
//! free, and those held by running forwards as they come back.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;

/// One route's bound on concurrent forwards, shared by every worker's copy of the route
/// and by every config that has the route (by name).
pub struct InFlight {
    permits: Arc<Semaphore>,
    count: Mutex<Count>,
}

struct Count {
    /// The `max_in_flight` in force.
    configured: usize,
    /// Permits still to forget as forwards give them back (after a lower value).
    owed: usize,
    /// Whether a task is collecting what is owed.
    collecting: bool,
}

impl InFlight {
    pub fn new(max: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            permits: Arc::new(Semaphore::new(max)),
            count: Mutex::new(Count {
                configured: max,
                owed: 0,
                collecting: false,
            }),
        })
    }

    /// What forwards take their permit of.
    pub fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    fn lock(&self) -> MutexGuard<'_, Count> {
        self.count.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `max` in force. Lowering it while forwards hold more than `max` permits
    /// forgets the rest as they come back, in a task on the current runtime (reloads run
    /// on the main one).
    pub fn resize(self: &Arc<Self>, max: usize) {
        let mut count = self.lock();
        if max >= count.configured {
            let raise = max - count.configured;
            // What is still owed is simply not forgotten any more.
            let unowed = raise.min(count.owed);
            count.owed -= unowed;
            self.permits.add_permits(raise - unowed);
        } else {
            let lower = count.configured - max;
            let forgotten = self.permits.forget_permits(lower);
            count.owed += lower - forgotten;
            if count.owed > 0 && !count.collecting {
                count.collecting = true;
                tokio::spawn(self.clone().collect());
            }
        }
        count.configured = max;
    }

    /// Takes the permits owed as forwards give them back, and forgets them. Queued on the
    /// semaphore, it is given a permit that comes back before a new forward can take it.
    async fn collect(self: Arc<Self>) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                return;
            };
            let mut count = self.lock();
            if count.owed == 0 {
                // A raise meanwhile settled the debt: this permit goes back.
                count.collecting = false;
                return;
            }
            permit.forget();
            count.owed -= 1;
            if count.owed == 0 {
                count.collecting = false;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_raise_adds_permits_at_once() {
        let cap = InFlight::new(2);
        let _held = cap.permits().clone().try_acquire_many_owned(2).unwrap();
        cap.resize(3);
        assert_eq!(cap.permits().available_permits(), 1);
        assert_eq!(cap.lock().configured, 3);
    }

    /// Lowered from 4 to 1 with 3 permits held: the free one is forgotten at once, two of
    /// the held ones as they come back, and the third comes back to be taken again.
    #[tokio::test]
    async fn a_lower_value_forgets_held_permits_as_they_come_back() {
        let cap = InFlight::new(4);
        let held: Vec<_> = (0..3)
            .map(|_| cap.permits().clone().try_acquire_owned().unwrap())
            .collect();
        cap.resize(1);
        assert_eq!(cap.permits().available_permits(), 0);
        tokio::task::yield_now().await;
        for permit in held {
            drop(permit);
            tokio::task::yield_now().await;
        }
        assert_eq!(cap.permits().available_permits(), 1);
        let one = cap.permits().clone().try_acquire_owned().unwrap();
        assert!(cap.permits().clone().try_acquire_owned().is_err());
        drop(one);
        assert!(!cap.lock().collecting);
    }

    /// Lowered, then raised again before the held permits came back: the debt is settled
    /// by the raise, and nothing more is forgotten.
    #[tokio::test]
    async fn a_raise_settles_what_a_lower_value_still_owed() {
        let cap = InFlight::new(2);
        let held = cap.permits().clone().try_acquire_many_owned(2).unwrap();
        cap.resize(1);
        tokio::task::yield_now().await;
        cap.resize(3);
        // The collector, queued first, is handed the added permit and gives it back.
        tokio::task::yield_now().await;
        assert_eq!(cap.permits().available_permits(), 1);
        drop(held);
        tokio::task::yield_now().await;
        assert_eq!(cap.permits().available_permits(), 3);
        assert!(!cap.lock().collecting);
    }
}
