//! The request-body budget: bytes of request bodies held right now, all connections
//! together, bounded by `limits.max_buffered_bytes`. A body reserves its room before a
//! byte of it is read (its whole Content-Length, or frame by frame when it has none), and
//! gives it back when it is dropped, so a crowd of senders who stall mid-body holds at
//! most the budget, however many connections they open.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The shared count, with its gauge (`hookwall_buffered_body_bytes`).
#[derive(Debug)]
pub struct Budget {
    held: AtomicU64,
    /// `limits.max_buffered_bytes`; a reload may change it.
    max: AtomicU64,
    gauge: prometheus::IntGauge,
}

impl Budget {
    pub fn new(max: u64, gauge: prometheus::IntGauge) -> Arc<Budget> {
        Arc::new(Budget {
            held: AtomicU64::new(0),
            max: AtomicU64::new(max),
            gauge,
        })
    }

    pub fn set_max(&self, max: u64) {
        self.max.store(max, Ordering::Relaxed);
    }

    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Room for `bytes` more, or `None` when that would pass the bound.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut reservation = Reservation {
            budget: self.clone(),
            bytes: 0,
        };
        reservation.grow(bytes).then_some(reservation)
    }

    fn add(&self, bytes: u64) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        let added = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= max)
            })
            .is_ok();
        if added {
            self.gauge.add(bytes as i64);
        }
        added
    }

    fn sub(&self, bytes: u64) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
        self.gauge.sub(bytes as i64);
    }
}

/// Room held in the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Reservation {
    /// Holds `bytes` more; false (and nothing changed) when the budget has no room.
    pub fn grow(&mut self, bytes: u64) -> bool {
        if bytes == 0 {
            return true;
        }
        let added = self.budget.add(bytes);
        if added {
            self.bytes += bytes;
        }
        added
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.sub(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max: u64) -> Arc<Budget> {
        Budget::new(max, prometheus::IntGauge::new("g", "g").unwrap())
    }

    #[test]
    fn reservations_never_pass_the_bound_and_give_back_when_dropped() {
        let b = budget(100);
        let first = b.reserve(60).unwrap();
        assert!(b.reserve(41).is_none());
        let mut second = b.reserve(40).unwrap();
        assert!(!second.grow(1));
        assert_eq!((b.held(), b.gauge.get()), (100, 100));
        drop(first);
        assert!(second.grow(60));
        assert_eq!(second.bytes(), 100);
        drop(second);
        assert_eq!((b.held(), b.gauge.get()), (0, 0));
    }

    #[test]
    fn a_lower_bound_after_a_reload_refuses_new_room_only() {
        let b = budget(100);
        let held = b.reserve(80).unwrap();
        b.set_max(50);
        assert!(b.reserve(1).is_none());
        drop(held);
        assert!(b.reserve(50).is_some());
    }

    #[test]
    fn racing_threads_hold_at_most_the_bound() {
        let b = budget(1000);
        let peak = std::sync::Mutex::new(0u64);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..2000 {
                        if let Some(r) = b.reserve(300) {
                            let now = b.held();
                            let mut peak = peak.lock().unwrap();
                            *peak = (*peak).max(now);
                            drop(r);
                        }
                    }
                });
            }
        });
        assert!(*peak.lock().unwrap() <= 1000);
        assert_eq!(b.held(), 0);
    }
}
