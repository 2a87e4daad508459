//! Dedup memory: which (route, key) pairs are being delivered now, and which were delivered
//! (upstream answered 2xx) within the ttl, in an LRU bounded by `capacity`; an operator may
//! forget a delivered one. The key is the signed id, or a `sha256:` digest of the signed
//! content where the id is not signed (`verify::ContentDigest`). Pure
//! and synchronous: the clock is passed in. Lookups do not refresh an entry, so the least
//! recently used end is also the oldest delivery, and expired entries are swept from there.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

/// What is known about a (route, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Neither delivered within the ttl nor being delivered.
    New,
    /// Being forwarded right now.
    Delivering,
    /// Delivered (upstream answered 2xx) within the ttl.
    Delivered,
}

/// Why an id cannot be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Being forwarded right now (answered 409 `in_flight`).
    Delivering,
    /// Delivered within the ttl (answered 200 `duplicate`).
    Delivered,
}

impl Seen {
    /// `Err` with what took the id, unless it is new.
    pub fn new_or_taken(self) -> Result<(), Taken> {
        match self {
            Seen::New => Ok(()),
            Seen::Delivering => Err(Taken::Delivering),
            Seen::Delivered => Err(Taken::Delivered),
        }
    }
}

/// Entries dropped since the last `take_evictions`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evictions {
    /// Live entries pushed out by the capacity bound.
    pub capacity: u64,
    /// Entries dropped because their ttl had passed.
    pub expired: u64,
}

/// The key of one (route, id): route name and id joined by a NUL, which neither a
/// (visible-ASCII) id nor the split can produce by accident.
pub fn key(route: &str, id: &str) -> String {
    let mut key = String::with_capacity(route.len() + 1 + id.len());
    key.push_str(route);
    key.push('\0');
    key.push_str(id);
    key
}

/// Most expired entries swept per call: keeps each call O(1) while still draining.
const SWEEP_PER_CALL: usize = 8;

pub struct Dedup {
    delivered: LruCache<String, Instant>,
    in_flight: HashSet<String>,
    ttl: Duration,
    evictions: Evictions,
}

impl Dedup {
    pub fn new(capacity: NonZeroUsize, ttl: Duration) -> Self {
        Dedup {
            delivered: LruCache::new(capacity),
            in_flight: HashSet::new(),
            ttl,
            evictions: Evictions::default(),
        }
    }

    /// Applies a reloaded config; memory survives. Shrinking counts as capacity evictions.
    pub fn reconfigure(&mut self, capacity: NonZeroUsize, ttl: Duration, now: Instant) {
        self.ttl = ttl;
        while self.delivered.len() > capacity.get() {
            self.pop_oldest(now);
        }
        self.delivered.resize(capacity);
    }

    /// What is known about `key`, without changing it (for events that will not be forwarded).
    pub fn lookup(&mut self, key: &str, now: Instant) -> Seen {
        self.sweep(now);
        if self.in_flight.contains(key) {
            return Seen::Delivering;
        }
        match self.delivered.peek(key) {
            Some(expires) if *expires > now => Seen::Delivered,
            Some(_) => {
                self.delivered.pop(key);
                self.evictions.expired += 1;
                Seen::New
            }
            None => Seen::New,
        }
    }

    /// Claims `key` for a forward if it is new: then it is in flight. Otherwise nothing
    /// changes and what took it is returned.
    pub fn claim(&mut self, key: &str, now: Instant) -> Result<(), Taken> {
        self.lookup(key, now).new_or_taken()?;
        self.in_flight.insert(key.to_owned());
        Ok(())
    }

    /// The upstream answered 2xx: remember `key` as delivered for the ttl.
    pub fn delivered(&mut self, key: &str, now: Instant) {
        let Some(key) = self.in_flight.take(key) else {
            return;
        };
        self.sweep(now);
        if let Some((_, expires)) = self.delivered.push(key, now + self.ttl) {
            if expires > now {
                self.evictions.capacity += 1;
            } else {
                self.evictions.expired += 1;
            }
        }
    }

    /// The forward failed or was abandoned: forget the claim so a retry goes through.
    pub fn release(&mut self, key: &str) {
        self.in_flight.remove(key);
    }

    /// An operator's forget (contract §12): a delivered `key` is forgotten, so the next
    /// request with it is forwarded. One in flight is left alone. Returns what was known.
    pub fn forget(&mut self, key: &str, now: Instant) -> Seen {
        let seen = self.lookup(key, now);
        if seen == Seen::Delivered {
            self.delivered.pop(key);
        }
        seen
    }

    /// How long a delivered id is remembered.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Ids remembered: delivered plus in flight.
    pub fn len(&self) -> usize {
        self.delivered.len() + self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evictions since the last call (for the metrics).
    pub fn take_evictions(&mut self) -> Evictions {
        std::mem::take(&mut self.evictions)
    }

    fn sweep(&mut self, now: Instant) {
        for _ in 0..SWEEP_PER_CALL {
            match self.delivered.peek_lru() {
                Some((_, expires)) if *expires <= now => {
                    self.delivered.pop_lru();
                    self.evictions.expired += 1;
                }
                _ => break,
            }
        }
    }

    fn pop_oldest(&mut self, now: Instant) {
        if let Some((_, expires)) = self.delivered.pop_lru() {
            if expires > now {
                self.evictions.capacity += 1;
            } else {
                self.evictions.expired += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dedup(capacity: usize, ttl_secs: u64) -> Dedup {
        Dedup::new(
            NonZeroUsize::new(capacity).unwrap(),
            Duration::from_secs(ttl_secs),
        )
    }

    #[test]
    fn new_then_in_flight_then_delivered() {
        let t0 = Instant::now();
        let mut d = dedup(10, 60);
        let k = key("clerk", "msg_1");
        assert_eq!(d.lookup(&k, t0), Seen::New);
        assert_eq!(d.claim(&k, t0), Ok(()));
        assert_eq!(d.claim(&k, t0), Err(Taken::Delivering));
        assert_eq!(d.lookup(&k, t0), Seen::Delivering);
        d.delivered(&k, t0);
        assert_eq!(d.claim(&k, t0), Err(Taken::Delivered));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn released_ids_can_be_claimed_again() {
        let t0 = Instant::now();
        let mut d = dedup(10, 60);
        let k = key("clerk", "msg_1");
        assert_eq!(d.claim(&k, t0), Ok(()));
        d.release(&k);
        assert!(d.is_empty());
        assert_eq!(d.claim(&k, t0), Ok(()));
    }

    #[test]
    fn a_forgotten_id_is_claimed_again_and_one_in_flight_is_left_alone() {
        let t0 = Instant::now();
        let mut d = dedup(10, 60);
        let k = key("a", "msg_1");
        assert_eq!(d.forget(&k, t0), Seen::New);
        d.claim(&k, t0).unwrap();
        assert_eq!(d.forget(&k, t0), Seen::Delivering);
        assert_eq!(d.claim(&k, t0), Err(Taken::Delivering));
        d.delivered(&k, t0);
        assert_eq!(d.forget(&k, t0), Seen::Delivered);
        assert!(d.is_empty());
        assert_eq!(d.claim(&k, t0), Ok(()), "forwarded once more");
        d.delivered(&k, t0);
        assert_eq!(d.claim(&k, t0), Err(Taken::Delivered), "then remembered");
        // An expired id is not remembered: nothing to forget.
        assert_eq!(d.forget(&k, t0 + Duration::from_secs(60)), Seen::New);
    }

    #[test]
    fn routes_are_separate() {
        let t0 = Instant::now();
        let mut d = dedup(10, 60);
        assert_eq!(d.claim(&key("a", "msg_1"), t0), Ok(()));
        assert_eq!(d.claim(&key("b", "msg_1"), t0), Ok(()));
    }

    #[test]
    fn lookup_never_claims() {
        let t0 = Instant::now();
        let mut d = dedup(10, 60);
        let k = key("a", "msg_1");
        assert_eq!(d.lookup(&k, t0), Seen::New);
        assert_eq!(d.lookup(&k, t0), Seen::New);
        assert!(d.is_empty());
    }

    #[test]
    fn delivered_ids_expire_after_the_ttl() {
        let t0 = Instant::now();
        let mut d = dedup(10, 60);
        let k = key("a", "msg_1");
        d.claim(&k, t0).unwrap();
        d.delivered(&k, t0);
        assert_eq!(d.lookup(&k, t0 + Duration::from_secs(59)), Seen::Delivered);
        assert_eq!(d.lookup(&k, t0 + Duration::from_secs(60)), Seen::New);
        assert_eq!(
            d.take_evictions(),
            Evictions {
                capacity: 0,
                expired: 1
            }
        );
        assert!(d.is_empty());
    }

    #[test]
    fn expired_entries_are_swept_by_other_traffic() {
        let t0 = Instant::now();
        let mut d = dedup(100, 60);
        for i in 0..5 {
            let k = key("a", &format!("msg_{i}"));
            d.claim(&k, t0).unwrap();
            d.delivered(&k, t0);
        }
        let later = t0 + Duration::from_secs(61);
        d.lookup(&key("a", "other"), later);
        assert!(d.is_empty());
        assert_eq!(d.take_evictions().expired, 5);
    }

    #[test]
    fn capacity_pushes_out_the_oldest_and_counts_it() {
        let t0 = Instant::now();
        let mut d = dedup(2, 60);
        for i in 0..3 {
            let k = key("a", &format!("msg_{i}"));
            d.claim(&k, t0).unwrap();
            d.delivered(&k, t0);
        }
        assert_eq!(d.lookup(&key("a", "msg_0"), t0), Seen::New);
        assert_eq!(d.lookup(&key("a", "msg_2"), t0), Seen::Delivered);
        assert_eq!(
            d.take_evictions(),
            Evictions {
                capacity: 1,
                expired: 0
            }
        );
    }

    #[test]
    fn in_flight_ids_are_never_pushed_out() {
        let t0 = Instant::now();
        let mut d = dedup(1, 60);
        let busy = key("a", "busy");
        d.claim(&busy, t0).unwrap();
        for i in 0..5 {
            let k = key("a", &format!("msg_{i}"));
            d.claim(&k, t0).unwrap();
            d.delivered(&k, t0);
        }
        assert_eq!(d.lookup(&busy, t0), Seen::Delivering);
    }

    #[test]
    fn reconfigure_keeps_memory_and_shrinks() {
        let t0 = Instant::now();
        let mut d = dedup(10, 60);
        for i in 0..4 {
            let k = key("a", &format!("msg_{i}"));
            d.claim(&k, t0).unwrap();
            d.delivered(&k, t0);
        }
        d.reconfigure(NonZeroUsize::new(2).unwrap(), Duration::from_secs(600), t0);
        assert_eq!(d.len(), 2);
        assert_eq!(d.lookup(&key("a", "msg_3"), t0), Seen::Delivered);
        assert_eq!(d.take_evictions().capacity, 2);
    }

    #[test]
    fn racing_tasks_never_hold_one_id_twice() {
        use std::sync::{Arc, Barrier, Mutex};
        let d = Arc::new(Mutex::new(dedup(10_000, 60)));
        let holders = Arc::new(Mutex::new(HashSet::new()));
        let threads = 8;
        let barrier = Arc::new(Barrier::new(threads));
        let claimed_total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (d, holders, barrier, total) = (
                    d.clone(),
                    holders.clone(),
                    barrier.clone(),
                    claimed_total.clone(),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    for round in 0..2_000 {
                        let id = format!("msg_{}", round % 50);
                        let k = key("a", &id);
                        let now = Instant::now();
                        if d.lock().unwrap().claim(&k, now).is_ok() {
                            assert!(holders.lock().unwrap().insert(k.clone()), "{k} held twice");
                            total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            holders.lock().unwrap().remove(&k);
                            // Half fail (released, retried later), half are delivered.
                            if (round + t) % 2 == 0 {
                                d.lock().unwrap().release(&k);
                            } else {
                                d.lock().unwrap().delivered(&k, now);
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // Nothing is left in flight, and an id that was never delivered can still be
        // claimed: released ids are not stuck. (Whether every id ended delivered depends on
        // scheduling, so it is not asserted.)
        let mut d = d.lock().unwrap();
        let now = Instant::now();
        for i in 0..50 {
            let k = key("a", &format!("msg_{i}"));
            match d.lookup(&k, now) {
                Seen::Delivered => {}
                Seen::New => assert_eq!(d.claim(&k, now), Ok(())),
                Seen::Delivering => panic!("{k} left in flight"),
            }
        }
        assert!(claimed_total.load(std::sync::atomic::Ordering::Relaxed) >= 50);
    }
}
