//! Where message ids live: this process's memory (`dedup.rs`, the default), and with
//! `store = "redis"` Redis as well, shared by every replica (contract §8). The memory then
//! caches delivered ids in front of Redis (never the absence of one) and holds this
//! process's own forwards, so a duplicate of either is answered without a round trip; it
//! is also what decides while Redis is unreachable and `on_store_error = "local"`.
//! Stream rules append through here too (`enqueue`), so an id enters a stream once.
//!
//! A claim's end (delivered, or released) is written to Redis by a task of its own,
//! tracked for shutdown, so neither cancellation nor a sender hanging up can skip it.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use prometheus::IntCounter;
use tokio_util::task::TaskTracker;

use crate::budget::{Budget, Held};
use crate::config::{DedupConfig, OnStoreError, StoreKind};
use crate::dedup::{Dedup, Seen};
use crate::metrics::Metrics;
use crate::redis::{Redis, StoreError};
use crate::stream::Entry;

pub struct Store {
    /// Request bodies held right now, against `limits.max_buffered_bytes`. Read by every
    /// request, written rarely: on cache lines apart from the lock below.
    pub budget: CachePadded<Budget>,
    /// Locked by every forward on every worker: on cache lines of its own.
    memory: CachePadded<Mutex<Dedup>>,
    dedup_entries: prometheus::IntGauge,
    metrics: Arc<Metrics>,
    /// With a `[redis]` section (store = "redis", stream rules).
    pub redis: Option<Arc<Redis>>,
    /// `store = "redis"`: ids are decided in Redis, this memory in front of it.
    shared: bool,
    /// Writes that outlive the request (deliver, release), waited for at shutdown.
    tracker: TaskTracker,
}

impl Store {
    pub fn new(
        config: DedupConfig,
        budget: Budget,
        redis: Option<Arc<Redis>>,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
    ) -> Store {
        Store {
            shared: config.store == StoreKind::Redis && redis.is_some(),
            budget: CachePadded::new(budget),
            memory: CachePadded::new(Mutex::new(Dedup::new(
                NonZeroUsize::new(config.capacity).unwrap_or(NonZeroUsize::MIN),
                config.ttl,
            ))),
            dedup_entries: metrics.dedup_entries.clone(),
            metrics,
            redis,
            tracker,
        }
    }

    /// A reloaded `[dedup]`: capacity and ttl apply, memory survives.
    pub fn reconfigure(&self, config: DedupConfig) {
        self.with_memory(|d| {
            d.reconfigure(
                NonZeroUsize::new(config.capacity).unwrap_or(NonZeroUsize::MIN),
                config.ttl,
                Instant::now(),
            )
        });
    }

    /// One operation on the memory under its lock (never held across an `.await`), then
    /// the gauge and eviction counters updated from what it did.
    fn with_memory<T>(&self, op: impl FnOnce(&mut Dedup) -> T) -> T {
        let (result, len, evictions) = {
            // Dedup's state stays consistent even if a panic poisoned the lock.
            let mut d = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            let result = op(&mut d);
            (result, d.len(), d.take_evictions())
        };
        self.dedup_entries.set(len as i64);
        self.metrics.evictions(evictions);
        result
    }

    /// What is known about an id that will not be forwarded (nothing changes).
    pub async fn lookup(
        &self,
        worker: usize,
        id: Id<'_>,
        on_error: OnStoreError,
        fallbacks: &IntCounter,
    ) -> Result<Seen, StoreError> {
        let local = self.with_memory(|d| d.lookup(id.key, Instant::now()));
        let Some(redis) = self.shared_redis().filter(|_| local == Seen::New) else {
            return Ok(local);
        };
        // Boxed: the Redis path's futures would otherwise enlarge every request's future,
        // which is moved on each request, Redis or not.
        let key = redis.dedup_key(id.route, id.id);
        match Box::pin(redis.lookup(worker, &key)).await {
            Ok(seen) => {
                if seen == Seen::Delivered {
                    self.remember_delivered(id.key);
                }
                Ok(seen)
            }
            Err(err) => match on_error {
                OnStoreError::Refuse => Err(err),
                OnStoreError::Local => {
                    fallbacks.inc();
                    Ok(local)
                }
            },
        }
    }

    /// Claims an id for a forward if it is new everywhere; otherwise what is known.
    pub async fn claim(
        self: &Arc<Self>,
        worker: usize,
        id: Id<'_>,
        on_error: OnStoreError,
        fallbacks: &IntCounter,
    ) -> Result<Result<Claim, Seen>, StoreError> {
        let mut claim = match self.claim_locally(id) {
            Ok(claim) => claim,
            Err(seen) => return Ok(Err(seen)),
        };
        let Some(redis) = self.shared_redis() else {
            return Ok(Ok(claim));
        };
        let mut remote = Remote {
            redis: redis.clone(),
            worker,
            key: redis.dedup_key(id.route, id.id).into(),
            token: crate::redis::token().into(),
            lease: None,
        };
        match Box::pin(redis.claim(worker, &remote.key, &remote.token)).await {
            Ok(Seen::New) => {
                remote.hold();
                claim.remote = Some(remote);
                Ok(Ok(claim))
            }
            Ok(Seen::Delivered) => {
                // Cached: the next duplicate here is answered without Redis.
                claim.mark_delivered_locally();
                Ok(Err(Seen::Delivered))
            }
            Ok(Seen::InFlight) => Ok(Err(Seen::InFlight)),
            Err(err) => {
                // A claim that timed out (or whose connection broke) may still have been
                // written, now or when a stalled Redis resumes: give it back.
                if !err.never_sent() {
                    self.spawn_tracked(remote.release());
                }
                match on_error {
                    OnStoreError::Refuse => Err(err),
                    OnStoreError::Local => {
                        fallbacks.inc();
                        Ok(Ok(claim))
                    }
                }
            }
        }
    }

    /// Appends a stream rule's entry once per id: `Ok(entry id)`, or what was known.
    /// With `store = "redis"` the check, the append and marking the id delivered are one
    /// script in Redis; otherwise this process's claim wraps the append. A failure
    /// releases the id (whatever `on_store_error` says: there is no stream without Redis).
    pub async fn enqueue(
        self: &Arc<Self>,
        worker: usize,
        id: Id<'_>,
        stream: &str,
        entry: &Entry,
    ) -> Result<Result<String, Seen>, StoreError> {
        let mut claim = match self.claim_locally(id) {
            Ok(claim) => claim,
            Err(seen) => return Ok(Err(seen)),
        };
        // Config validation puts a [redis] section beside every stream rule.
        let redis = self.redis.as_ref().ok_or(StoreError::Down)?;
        let appended = if self.shared {
            let key = redis.dedup_key(id.route, id.id);
            let token = crate::redis::token();
            let ttl = self.ttl();
            Box::pin(redis.append_once(worker, &key, &token, ttl, stream, entry)).await?
        } else {
            Ok(Box::pin(redis.append(worker, stream, entry)).await?)
        };
        match appended {
            Ok(entry_id) => {
                claim.mark_delivered_locally();
                Ok(Ok(entry_id))
            }
            Err(Seen::Delivered) => {
                claim.mark_delivered_locally();
                Ok(Err(Seen::Delivered))
            }
            Err(seen) => Ok(Err(seen)),
        }
    }

    /// Redis when it decides the ids (`store = "redis"`).
    fn shared_redis(&self) -> Option<&Arc<Redis>> {
        self.redis.as_ref().filter(|_| self.shared)
    }

    /// Claims an id in this process's memory first: its delivered cache and its own
    /// forwards need no round trip.
    fn claim_locally(self: &Arc<Self>, id: Id<'_>) -> Result<Claim, Seen> {
        match self.with_memory(|d| d.claim(id.key, Instant::now())) {
            Seen::New => Ok(Claim {
                store: self.clone(),
                key: id.key.to_owned(),
                done: false,
                remote: None,
                body: Held::default(),
            }),
            seen => Err(seen),
        }
    }

    fn remember_delivered(&self, key: &str) {
        self.with_memory(|d| {
            let now = Instant::now();
            if d.claim(key, now) == Seen::New {
                d.delivered(key, now);
            }
        });
    }

    /// How long a delivered id is remembered (`dedup.ttl`, as reloaded).
    fn ttl(&self) -> Duration {
        self.with_memory(|d| d.ttl())
    }

    /// Runs `work` in a task of the current runtime, tracked for shutdown. Outside a
    /// runtime (it is shutting down) the work is dropped: a claim left in Redis then
    /// expires with its lease.
    fn spawn_tracked(&self, work: impl Future<Output = ()> + Send + 'static) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.tracker.track_future(work));
        }
    }
}

/// One id on one route: the memory's key, and its parts for Redis's.
#[derive(Clone, Copy)]
pub struct Id<'a> {
    pub route: &'a str,
    pub id: &'a str,
    /// `dedup::key(route, id)`.
    pub key: &'a str,
}

/// An id in flight. Owned, so a forward that outlives its request keeps it. Dropped
/// without `delivered`, it is released: in memory at once, in Redis by a tracked task.
/// It also keeps the forward's body room in the budget, given back when it is dropped.
pub struct Claim {
    store: Arc<Store>,
    key: String,
    done: bool,
    remote: Option<Remote>,
    body: Held,
}

/// The Redis side of a claim. While `lease` is held, this worker renews the claim's
/// lease (`Redis::hold`), so a replica that dies frees the id within one lease.
struct Remote {
    redis: Arc<Redis>,
    worker: usize,
    key: Arc<str>,
    token: Arc<str>,
    lease: Option<u64>,
}

impl Remote {
    fn hold(&mut self) {
        let lease = self
            .redis
            .hold(self.worker, self.key.clone(), self.token.clone());
        self.lease = Some(lease);
    }

    fn let_go(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.redis.let_go(self.worker, lease);
        }
    }

    /// Gives the claim back: renewing stops now, the compare-and-delete runs in the
    /// returned future, tried again once Redis is back for as long as the claim could
    /// still hold (a lease): a sender's retry then finds the id free, not in flight.
    fn release(mut self) -> impl Future<Output = ()> + Send + 'static {
        self.let_go();
        async move {
            let Remote {
                redis,
                worker,
                key,
                token,
                ..
            } = &self;
            let released = settle(redis, *worker, redis.lease(), || {
                redis.release(*worker, key, token)
            })
            .await;
            if let Err(err) = released {
                // The lease runs out by itself.
                tracing::warn!(key = &**key, error = %err, "Redis release failed; the claim expires with its lease");
            }
        }
    }
}

/// Writes a claim's end (delivered, released) until Redis takes it: after a failure that
/// may pass (Redis unreachable, slow, the connection lost), waits for this worker's link
/// to be back and writes again, for at most `within`. Both writes may be repeated: a
/// release deletes only this attempt's value, and delivered is a fact.
async fn settle<F, Fut>(
    redis: &Arc<Redis>,
    worker: usize,
    within: Duration,
    mut write: F,
) -> Result<(), StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let give_up = tokio::time::Instant::now() + within;
    loop {
        match write().await {
            Ok(()) => return Ok(()),
            Err(err) if err.may_pass_later() && redis.until_up(worker, give_up).await => {}
            Err(err) => return Err(err),
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.let_go();
    }
}

impl Claim {
    /// Keeps the body's room in the budget until the claim ends.
    pub fn hold_body(&mut self, body: Held) {
        self.body = body;
    }

    /// The upstream answered with a 2xx status line: delivered, whatever follows. Written
    /// to Redis by a tracked task (the answer the sender gets never waits on it).
    pub fn delivered(&mut self) {
        if self.done {
            return;
        }
        self.mark_delivered_locally();
        if let Some(mut remote) = self.remote.take() {
            // Renewing stops now: the value becomes the delivered one.
            remote.let_go();
            let ttl = self.store.ttl();
            // Tried again once Redis is back, for as long as the mark would last: until it
            // is written, a retry on another replica could be forwarded again.
            self.store.spawn_tracked(async move {
                let Remote { redis, worker, key, token, .. } = &remote;
                let delivered = settle(redis, *worker, ttl, || redis.deliver(*worker, key, token, ttl)).await;
                if let Err(err) = delivered {
                    tracing::warn!(key = &**key, error = %err, "Redis: marking an id delivered failed; this process still remembers it");
                }
            });
        }
    }

    fn mark_delivered_locally(&mut self) {
        self.store
            .with_memory(|d| d.delivered(&self.key, Instant::now()));
        self.done = true;
    }

    pub fn is_delivered(&self) -> bool {
        self.done
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let body = std::mem::take(&mut self.body);
        if body.bytes > 0 {
            self.store.budget.give(body.worker, body.bytes);
        }
        if self.done {
            return;
        }
        self.store.with_memory(|d| d.release(&self.key));
        if let Some(remote) = self.remote.take() {
            self.store.spawn_tracked(remote.release());
        }
    }
}
