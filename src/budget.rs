//! The request-body budget: bytes of request bodies held right now, all connections
//! together, bounded exactly by `limits.max_buffered_bytes`. A body holds a `Room`, which
//! gives itself back when dropped. Each worker takes room from the shared count in chunks
//! and hands it out from its own credit, so a request touches no cache line another worker
//! writes. When the budget is full, bodies that have stalled (fallen behind
//! `min_body_rate` over the last second) give their room up to one that is arriving
//! (`Room::grow_or_make_room`). A body that is whole is no longer watched: its room is held
//! until its request ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use tokio::sync::Notify;
// tokio's clock, so that tests on paused time can make a body stall.
use tokio::time::Instant;

/// Most credit a worker takes at once, and keeps at most twice of.
const CHUNK: u64 = 256 * 1024;

/// The window a body's pace is judged over: one that has not received `min_body_rate`
/// bytes over the last `STALLED` (with no rate: no byte for that long) has stalled, and
/// when the budget is full it gives its room up to a body that is arriving. A body that
/// sent much at once is paid up at most this far ahead, so it cannot buy a long stall.
pub const STALLED: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Budget {
    /// Taken from the bound: bodies' bytes plus the workers' credit.
    taken: AtomicU64,
    /// `limits.max_buffered_bytes`; a reload may change it.
    max: AtomicU64,
    shards: Box<[Shard]>,
    /// Per worker, the bodies read in more than one piece: those that can stall.
    watched: Box<[CachePadded<Mutex<Watched>>]>,
    /// The clock of `Watcher::paid_until_us`.
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Watched {
    next: u64,
    by_id: HashMap<u64, Arc<Watcher>>,
}

/// What the budget knows of a body it watches: its room (moved here from the `Room`, so
/// that another worker can take it back), until when what arrived pays for its pace, and
/// whether it was told to give way.
#[derive(Debug, Default)]
struct Watcher {
    held: AtomicU64,
    /// The body has stalled from this instant on (µs of `Budget::epoch`), unless more
    /// arrives.
    paid_until_us: AtomicU64,
    gave_way: AtomicBool,
    wake: Notify,
}

/// One worker's credit, on a cache line of its own; only that worker takes from it.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard {
    credit: AtomicU64,
}

impl Budget {
    pub fn new(max: u64, workers: usize) -> Budget {
        let workers = workers.max(1);
        Budget {
            taken: AtomicU64::new(0),
            max: AtomicU64::new(max),
            shards: (0..workers).map(|_| Shard::default()).collect(),
            watched: (0..workers).map(|_| CachePadded::default()).collect(),
            epoch: Instant::now(),
        }
    }

    /// One handle per worker: cloning a worker's handle (once per request) touches only
    /// that worker's reference count.
    pub fn for_workers(self: &Arc<Self>) -> Box<[Arc<WorkerBudget>]> {
        (0..self.shards.len())
            .map(|worker| {
                Arc::new(WorkerBudget {
                    budget: self.clone(),
                    worker,
                })
            })
            .collect()
    }

    pub fn set_max(&self, max: u64) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Bytes held by bodies right now (`hookwall_buffered_body_bytes`).
    pub fn held(&self) -> u64 {
        let credit: u64 = self
            .shards
            .iter()
            .map(|s| s.credit.load(Ordering::Relaxed))
            .sum();
        self.taken.load(Ordering::Relaxed).saturating_sub(credit)
    }

    fn shard(&self, worker: usize) -> &Shard {
        &self.shards[worker % self.shards.len()]
    }

    /// Chunks are small against a small bound, so idle credit never hides much of it.
    fn chunk(&self) -> u64 {
        CHUNK.min(self.max.load(Ordering::Relaxed) / (8 * self.shards.len() as u64))
    }

    fn take(&self, worker: usize, bytes: u64) -> bool {
        let shard = self.shard(worker);
        // From this worker's credit (CAS: correct even if a room is given back elsewhere).
        let from_credit = shard
            .credit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                c.checked_sub(bytes)
            });
        if from_credit.is_ok() {
            return true;
        }
        // Else all of the credit, and the rest from the shared count: a small piece with a
        // chunk of new credit if it fits, else (and always for a piece larger than a
        // chunk, which would leave idle credit the other workers cannot take) just what
        // the body needs.
        let credit = shard.credit.swap(0, Ordering::AcqRel);
        let need = bytes.saturating_sub(credit);
        let chunk = self.chunk();
        if bytes <= chunk && self.take_shared(need + chunk) {
            shard.credit.fetch_add(chunk, Ordering::AcqRel);
            return true;
        }
        if self.take_shared(need) {
            return true;
        }
        shard.credit.fetch_add(credit, Ordering::AcqRel);
        false
    }

    fn take_shared(&self, bytes: u64) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                taken.checked_add(bytes).filter(|&total| total <= max)
            })
            .is_ok()
    }

    /// Makes room for `need` bytes by taking it back from bodies that have stalled (behind
    /// their pace: see `STALLED`), which are told to give way: whether any was taken. What
    /// is taken goes to the shared count, where any worker can take it.
    fn make_room(&self, need: u64) -> bool {
        let now = self.now_us();
        let mut freed = 0;
        for watched in self.watched.iter() {
            let watched = lock(watched);
            for watcher in watched.by_id.values() {
                let stalled = now >= watcher.paid_until_us.load(Ordering::Acquire);
                if !stalled
                    || watcher.held.load(Ordering::Acquire) == 0
                    || watcher.gave_way.swap(true, Ordering::AcqRel)
                {
                    continue;
                }
                let bytes = watcher.held.swap(0, Ordering::AcqRel);
                self.taken.fetch_sub(bytes, Ordering::AcqRel);
                freed += bytes;
                watcher.wake.notify_one();
                if freed >= need {
                    return true;
                }
            }
        }
        freed > 0
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Gives `bytes` back to worker `worker`'s credit; past two chunks of it, the rest
    /// goes back to the shared count.
    fn give(&self, worker: usize, bytes: u64) {
        let shard = self.shard(worker);
        let keep = self.chunk();
        let credit = shard.credit.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if credit > 2 * keep {
            let excess = credit - keep;
            if shard
                .credit
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                    c.checked_sub(excess)
                })
                .is_ok()
            {
                self.taken.fetch_sub(excess, Ordering::AcqRel);
            }
        }
    }
}

/// A worker's way into the budget. Aligned to a cache line: the other workers' handles,
/// whose reference counts their requests write, are never on its line.
#[derive(Debug)]
#[repr(align(64))]
pub struct WorkerBudget {
    budget: Arc<Budget>,
    worker: usize,
}

impl WorkerBudget {
    /// An empty room, to grow as a body arrives.
    pub fn room(self: &Arc<Self>) -> Room {
        Room {
            owner: self.clone(),
            bytes: 0,
            watched: None,
        }
    }
}

fn lock(watched: &Mutex<Watched>) -> MutexGuard<'_, Watched> {
    watched.lock().unwrap_or_else(|e| e.into_inner())
}

/// Room held in the budget by one body; given back when dropped.
#[derive(Debug)]
pub struct Room {
    owner: Arc<WorkerBudget>,
    /// What the room holds, unless watched (then `Watcher::held` does).
    bytes: u64,
    /// Once the body is read in more than one piece: its key in its worker's `watched`.
    watched: Option<(u64, Arc<Watcher>)>,
}

impl Room {
    /// Holds `bytes` more; false (and nothing changed) when the budget has no room.
    pub fn grow(&mut self, bytes: u64) -> bool {
        if bytes == 0 {
            return true;
        }
        let taken = self.owner.budget.take(self.owner.worker, bytes);
        if taken {
            match &self.watched {
                Some((_, watcher)) => {
                    watcher.held.fetch_add(bytes, Ordering::AcqRel);
                }
                None => self.bytes += bytes,
            }
        }
        taken
    }

    /// `grow`, and if the budget is full, once more after the bodies that stalled gave
    /// their room up.
    pub fn grow_or_make_room(&mut self, bytes: u64) -> bool {
        self.grow(bytes) || (self.owner.budget.make_room(bytes) && self.grow(bytes))
    }

    pub fn bytes(&self) -> u64 {
        match &self.watched {
            Some((_, watcher)) => watcher.held.load(Ordering::Acquire),
            None => self.bytes,
        }
    }

    /// `bytes` of the body arrived, and more are to come: from now on the budget watches
    /// the body, and may tell it to give way once it falls behind `rate` bytes a second
    /// over the last `STALLED` (`gave_way`); with a `rate` of 0, once no byte came for that
    /// long.
    pub fn arrived(&mut self, bytes: u64, rate: u64) {
        let budget = &self.owner.budget;
        let now = budget.now_us();
        let window = STALLED.as_micros() as u64;
        let bought = match rate {
            0 => window,
            rate => bytes.saturating_mul(1_000_000) / rate,
        };
        let pay = |paid_until: u64| paid_until.max(now).saturating_add(bought).min(now + window);
        if let Some((_, watcher)) = &self.watched {
            let paid_until = pay(watcher.paid_until_us.load(Ordering::Acquire));
            watcher.paid_until_us.store(paid_until, Ordering::Release);
            return;
        }
        let watcher = Arc::new(Watcher {
            held: AtomicU64::new(std::mem::take(&mut self.bytes)),
            // A body's first second is its grace, as for `min_body_rate`.
            paid_until_us: AtomicU64::new(now + window),
            ..Watcher::default()
        });
        let mut watched = lock(&budget.watched[self.owner.worker % budget.watched.len()]);
        let key = watched.next;
        watched.next += 1;
        watched.by_id.insert(key, watcher.clone());
        self.watched = Some((key, watcher));
    }

    /// The body is whole: the budget stops watching it, so its room stays held until the
    /// request ends (a body waiting for its upstream has not stalled). False if the budget
    /// took the room back before that (`gave_way`): the body is then not counted whole, and
    /// must be refused; what the room still holds is given back when it is dropped.
    pub fn settle(&mut self) -> bool {
        let Some((key, watcher)) = self.watched.take() else {
            return true;
        };
        let budget = &self.owner.budget;
        // Under the lock `make_room` takes: once removed, no body can take this room.
        lock(&budget.watched[self.owner.worker % budget.watched.len()])
            .by_id
            .remove(&key);
        // `arrived` moved the room's bytes to the watcher: they come back.
        self.bytes += watcher.held.swap(0, Ordering::AcqRel);
        !watcher.gave_way.load(Ordering::Acquire)
    }

    /// Completes once the budget took this room back for a body that was arriving (never,
    /// for a body that is not watched).
    pub async fn gave_way(&self) {
        match &self.watched {
            Some((_, watcher)) => loop {
                if watcher.gave_way.load(Ordering::Acquire) {
                    return;
                }
                watcher.wake.notified().await;
            },
            None => std::future::pending().await,
        }
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        let budget = &self.owner.budget;
        let bytes = match self.watched.take() {
            Some((key, watcher)) => {
                lock(&budget.watched[self.owner.worker % budget.watched.len()])
                    .by_id
                    .remove(&key);
                watcher.held.swap(0, Ordering::AcqRel)
            }
            None => self.bytes,
        };
        if bytes > 0 {
            budget.give(self.owner.worker, bytes);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Yields to the runtime until `holds` (what another task does shows up at once).
    pub(crate) async fn until(holds: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if holds() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never held");
    }

    fn budget(max: u64, workers: usize) -> (Arc<Budget>, Box<[Arc<WorkerBudget>]>) {
        let budget = Arc::new(Budget::new(max, workers));
        let handles = budget.for_workers();
        (budget, handles)
    }

    fn room(worker: &Arc<WorkerBudget>, bytes: u64) -> Option<Room> {
        let mut room = worker.room();
        room.grow(bytes).then_some(room)
    }

    #[test]
    fn rooms_never_pass_the_bound_and_give_back_when_dropped() {
        let (b, w) = budget(100, 1);
        let first = room(&w[0], 60).unwrap();
        assert!(room(&w[0], 41).is_none());
        let mut second = room(&w[0], 40).unwrap();
        assert!(!second.grow(1));
        assert_eq!(b.held(), 100);
        drop(first);
        assert!(second.grow(60));
        assert_eq!(second.bytes(), 100);
        drop(second);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn workers_take_credit_in_chunks_and_give_the_excess_back() {
        let (b, w) = budget(64 * 1024 * 1024, 2);
        let small = room(&w[0], 1000).unwrap();
        assert_eq!(b.held(), 1000);
        // The rest of the chunk is this worker's credit, not held by any body.
        assert_eq!(b.taken.load(Ordering::Relaxed), 1000 + CHUNK);
        let more = room(&w[0], 2000).unwrap();
        assert_eq!(
            b.taken.load(Ordering::Relaxed),
            1000 + CHUNK,
            "served from credit"
        );
        let big = room(&w[1], 10 * CHUNK).unwrap();
        assert_eq!(b.held(), 3000 + 10 * CHUNK);
        drop((small, more, big));
        assert_eq!(b.held(), 0);
        // Each worker keeps at most two chunks of idle credit.
        assert!(b.taken.load(Ordering::Relaxed) <= 2 * 2 * CHUNK);
    }

    /// A body read in pieces is watched while it arrives; once whole (`settle`) its room
    /// is held however long it then waits, and no arriving body can take it.
    #[tokio::test(start_paused = true)]
    async fn a_settled_room_is_never_given_up() {
        let (b, w) = budget(1_000, 1);
        let mut whole = w[0].room();
        assert!(whole.grow(600));
        whole.arrived(600, 0);
        assert!(whole.settle());
        tokio::time::sleep(STALLED * 2).await;
        let mut arriving = w[0].room();
        assert!(
            !arriving.grow_or_make_room(600),
            "the settled room is not taken"
        );
        assert_eq!((whole.bytes(), b.held()), (600, 600));
        // One that stalled before it settled gave its room up: it cannot settle.
        drop(whole);
        let mut stalled = w[0].room();
        assert!(stalled.grow(600));
        stalled.arrived(600, 0);
        tokio::time::sleep(STALLED).await;
        assert!(arriving.grow_or_make_room(600));
        assert!(!stalled.settle());
        drop(stalled);
        assert_eq!(b.held(), 600);
    }

    /// A piece larger than a chunk takes what it needs and no idle credit beside it.
    #[test]
    fn a_large_piece_takes_no_idle_credit() {
        let (b, w) = budget(64 * 1024 * 1024, 2);
        let big = room(&w[0], 3 * CHUNK).unwrap();
        assert_eq!(b.taken.load(Ordering::Relaxed), 3 * CHUNK);
        drop(big);
    }

    #[test]
    fn a_lower_bound_after_a_reload_refuses_new_room_only() {
        let (b, w) = budget(100, 1);
        let held = room(&w[0], 80).unwrap();
        b.set_max(50);
        assert!(room(&w[0], 30).is_none());
        drop(held);
        assert!(room(&w[0], 50).is_some());
    }

    #[test]
    fn workers_on_their_own_threads_hold_at_most_the_bound() {
        let (b, w) = budget(100_000, 4);
        std::thread::scope(|s| {
            for worker in w.iter() {
                let b = &b;
                s.spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..5000u64 {
                        if let Some(r) = room(worker, 1000 + i % 7000) {
                            held.push(r);
                        }
                        assert!(b.taken.load(Ordering::Relaxed) <= 100_000);
                        if held.len() > 8 {
                            held.remove(0);
                        }
                    }
                });
            }
        });
        assert_eq!(b.held(), 0);
    }

    /// A forward's room is dropped wherever its task ends: rooms taken by one worker and
    /// given back on other threads still add up, and the bound holds throughout.
    #[test]
    fn rooms_given_back_on_other_threads_add_up() {
        let (b, w) = budget(1_000_000, 2);
        let (send, receive) = std::sync::mpsc::sync_channel::<Room>(64);
        std::thread::scope(|s| {
            let (b, w) = (&b, &w);
            s.spawn(move || {
                for i in 0..4000u64 {
                    let mut r = w[(i % 2) as usize].room();
                    while !r.grow(100 + i % 900) {
                        std::thread::yield_now();
                    }
                    send.send(r).unwrap();
                }
            });
            s.spawn(move || {
                for r in receive {
                    assert!(b.held() <= 1_000_000);
                    drop(r);
                }
            });
        });
        assert_eq!(b.held(), 0);
        assert!(b.taken.load(Ordering::Relaxed) <= 2 * 2 * b.chunk());
    }
}
