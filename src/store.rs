//! Where message ids live: this process's memory (`dedup.rs`) and, with `store = "redis"`,
//! Redis (`redis/`), which then decides: the memory keeps this process's own forwards and
//! a copy of the delivered ids, which answers only when Redis cannot (an operator may have
//! forgotten an id through another replica, contract §12). A claim's end (delivered,
//! released) is written to Redis by a tracked task that no cancellation skips.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use prometheus::IntCounter;

use crate::chain::chain;
use crate::config::{DedupConfig, OnStoreError, StoreKind};
use crate::dedup::{Dedup, Seen, Taken};
use crate::metrics::Metrics;
use crate::redis::Redis;
pub use crate::redis::StoreError;
use crate::stream::Entry;
use crate::tasks::Tasks;

pub struct Store {
    /// Locked by every forward on every worker: on cache lines of its own.
    memory: CachePadded<Mutex<Dedup>>,
    dedup_entries: prometheus::IntGauge,
    metrics: Arc<Metrics>,
    /// With a `[redis]` section (store = "redis", stream rules).
    pub redis: Option<Arc<Redis>>,
    /// `store = "redis"`: ids are decided in Redis, this memory in front of it.
    decided_in_redis: bool,
    /// Writes that outlive the request (deliver, release), waited for at shutdown.
    tasks: Arc<Tasks>,
}

impl Store {
    pub fn new(
        config: DedupConfig,
        redis: Option<Arc<Redis>>,
        metrics: Arc<Metrics>,
        tasks: Arc<Tasks>,
    ) -> Store {
        Store {
            decided_in_redis: config.store == StoreKind::Redis && redis.is_some(),
            memory: CachePadded::new(Mutex::new(Dedup::new(
                NonZeroUsize::new(config.capacity).unwrap_or(NonZeroUsize::MIN),
                config.ttl,
            ))),
            dedup_entries: metrics.dedup_entries.clone(),
            metrics,
            redis,
            tasks,
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
        id: &Id,
        on_error: OnStoreError,
        fallbacks: &IntCounter,
    ) -> Result<Seen, StoreError> {
        let local = self.with_memory(|d| d.lookup(id.key(), Instant::now()));
        // This process's own forward is known for certain; a delivered copy is not.
        let Some(redis) = self.deciding_redis().filter(|_| local != Seen::Delivering) else {
            return Ok(local);
        };
        // Boxed: the Redis path's futures would otherwise enlarge every request's future,
        // which is moved on each request, Redis or not.
        let key = redis.dedup_key(id.route(), id.id());
        match Box::pin(redis.lookup(worker, &key)).await {
            Ok(seen) => {
                if seen == Seen::Delivered {
                    self.remember_delivered(id.key());
                } else if local == Seen::Delivered {
                    // Forgotten through another replica (or lost by Redis): so here too.
                    self.with_memory(|d| d.forget(id.key(), Instant::now()));
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

    /// Claims an id for a forward if it is new everywhere; otherwise what took it.
    pub async fn claim(
        self: &Arc<Self>,
        worker: usize,
        id: &Id,
        on_error: OnStoreError,
        fallbacks: &IntCounter,
    ) -> Result<Result<Claim, Taken>, StoreError> {
        let (mut claim, cached) = match self.claim_locally(id) {
            Ok(claimed) => claimed,
            Err(taken) => return Ok(Err(taken)),
        };
        let Some(redis) = self.deciding_redis() else {
            return Ok(Ok(claim));
        };
        let (key, token): (Arc<str>, Arc<str>) = (
            redis.dedup_key(id.route(), id.id()).into(),
            crate::redis::token().into(),
        );
        // From here until Redis answers, the claim may be written for nobody: this future
        // is dropped if the sender hangs up, and the SET still runs.
        let pending = Pending {
            store: self,
            remote: Some(Remote {
                redis: redis.clone(),
                worker,
                key: key.clone(),
                token: token.clone(),
                renewal: None,
            }),
        };
        match Box::pin(redis.claim(worker, &key, &token)).await {
            Ok(Ok(())) => {
                claim.remote = pending.answered().map(Remote::renewed);
                Ok(Ok(claim))
            }
            Ok(Err(taken)) => {
                // Another attempt's value is there: nothing of ours to give back.
                pending.answered();
                if taken == Taken::Delivered {
                    // Cached: the next duplicate here is answered without Redis.
                    claim.mark_delivered_locally();
                }
                Ok(Err(taken))
            }
            Err(err) => {
                // A claim that timed out (or whose connection broke) may still have been
                // written, now or when a stalled Redis resumes: the guard gives it back.
                if err.never_sent() {
                    pending.answered();
                } else {
                    drop(pending);
                }
                if cached {
                    // Whether it was forgotten elsewhere is unknown: the copy stays.
                    claim.mark_delivered_locally();
                }
                match on_error {
                    OnStoreError::Refuse => Err(err),
                    OnStoreError::Local => {
                        fallbacks.inc();
                        Ok(if cached {
                            Err(Taken::Delivered)
                        } else {
                            Ok(claim)
                        })
                    }
                }
            }
        }
    }

    /// Appends a stream rule's entry once per id: `Ok(entry id)`, or what took the id.
    /// With `store = "redis"` the check, the append and marking the id delivered are one
    /// script in Redis; otherwise this process's claim wraps the append. A failure
    /// releases the id (whatever `on_store_error` says: there is no stream without Redis).
    pub async fn enqueue(
        self: &Arc<Self>,
        worker: usize,
        id: &Id,
        stream: &str,
        entry: &Entry,
    ) -> Result<Result<String, Taken>, StoreError> {
        let (mut claim, cached) = match self.claim_locally(id) {
            Ok(claimed) => claimed,
            Err(taken) => return Ok(Err(taken)),
        };
        // Config validation puts a [redis] section beside every stream rule.
        let redis = self.redis.as_ref().ok_or(StoreError::Down)?;
        let appended = if self.decided_in_redis {
            let key = redis.dedup_key(id.route(), id.id());
            let token = crate::redis::token();
            let ttl = self.ttl();
            match Box::pin(redis.append_once(worker, &key, &token, ttl, stream, entry)).await {
                Ok(appended) => appended,
                Err(err) => {
                    if cached {
                        claim.mark_delivered_locally();
                    }
                    return Err(err);
                }
            }
        } else {
            Ok(Box::pin(redis.append(worker, stream, entry)).await?)
        };
        if matches!(appended, Ok(_) | Err(Taken::Delivered)) {
            claim.mark_delivered_locally();
        }
        Ok(appended)
    }

    /// Redis when it decides the ids (`store = "redis"`).
    fn deciding_redis(&self) -> Option<&Arc<Redis>> {
        self.redis.as_ref().filter(|_| self.decided_in_redis)
    }

    /// Claims an id in this process's memory first: its own forwards need no round trip,
    /// nor, when Redis does not decide, its delivered ids. When Redis decides, a delivered
    /// id here is only a copy (an operator may have forgotten it through another replica):
    /// it is claimed here again for Redis to decide, and `true` says a copy was there, for
    /// when Redis cannot answer.
    fn claim_locally(self: &Arc<Self>, id: &Id) -> Result<(Claim, bool), Taken> {
        let copy_only = self.decided_in_redis;
        let cached = self.with_memory(|d| {
            let now = Instant::now();
            match d.claim(id.key(), now) {
                Err(Taken::Delivered) if copy_only => {
                    d.forget(id.key(), now);
                    d.claim(id.key(), now).map(|()| true)
                }
                claimed => claimed.map(|()| false),
            }
        })?;
        let claim = Claim {
            store: self.clone(),
            key: id.key().to_owned(),
            delivered: false,
            remote: None,
        };
        Ok((claim, cached))
    }

    /// An operator's forget (contract §12), of what `id` was known as: `Delivered` is now
    /// forgotten, so the next request with it is forwarded; `Delivering` (in flight) and
    /// `New` (not remembered) change nothing. With Redis deciding it is forgotten there in
    /// one step, for every replica (their copies answer only when Redis cannot), and here;
    /// the command runs on the admin side's link, within `redis.timeout`.
    pub async fn forget(&self, id: &Id) -> Result<Seen, StoreError> {
        let Some(redis) = self.deciding_redis() else {
            return Ok(self.with_memory(|d| d.forget(id.key(), Instant::now())));
        };
        let key = redis.dedup_key(id.route(), id.id());
        let seen = redis.forget(redis.admin_link(), &key).await?;
        if seen != Seen::Delivering {
            self.with_memory(|d| d.forget(id.key(), Instant::now()));
        }
        Ok(seen)
    }

    /// Whether ids are decided in Redis, for every replica (`store = "redis"`).
    pub fn shared(&self) -> bool {
        self.decided_in_redis
    }

    fn remember_delivered(&self, key: &str) {
        self.with_memory(|d| {
            let now = Instant::now();
            if d.claim(key, now).is_ok() {
                d.delivered(key, now);
            }
        });
    }

    /// How long a delivered id is remembered (`dedup.ttl`, as reloaded).
    fn ttl(&self) -> Duration {
        self.with_memory(|d| d.ttl())
    }

    /// Runs `work` in a task of the current runtime (worker `worker`'s), tracked for
    /// shutdown. Outside a runtime (it is shutting down) the work is dropped: a claim
    /// left in Redis then expires with its lease.
    fn spawn_tracked(&self, worker: usize, work: impl Future<Output = ()> + Send + 'static) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.tasks.of(worker).track_future(work));
        }
    }
}

/// One id on one route: its key in this process's memory (`dedup::key`), of which the
/// route and the id are slices (Redis's key is made of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id {
    key: String,
    route_len: usize,
}

impl Id {
    pub fn new(route: &str, id: &str) -> Id {
        Id {
            key: crate::dedup::key(route, id),
            route_len: route.len(),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn route(&self) -> &str {
        &self.key[..self.route_len]
    }

    pub fn id(&self) -> &str {
        &self.key[self.route_len + 1..]
    }
}

/// An id in flight. Owned, so a forward that outlives its request keeps it. Dropped
/// without `delivered`, it is released: in memory at once, in Redis by a tracked task.
pub struct Claim {
    store: Arc<Store>,
    key: String,
    delivered: bool,
    remote: Option<Remote>,
}

/// The Redis side of a claim. While `renewal` is set, this worker renews the claim's
/// lease (`Redis::keep_renewing`), so a replica that dies frees the id within one lease.
struct Remote {
    redis: Arc<Redis>,
    worker: usize,
    key: Arc<str>,
    token: Arc<str>,
    renewal: Option<u64>,
}

impl Remote {
    fn renewed(mut self) -> Remote {
        let renewal = self
            .redis
            .keep_renewing(self.worker, self.key.clone(), self.token.clone());
        self.renewal = Some(renewal);
        self
    }

    fn stop_renewing(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            self.redis.stop_renewing(self.worker, renewal);
        }
    }

    /// Gives the claim back: renewing stops now, the compare-and-delete runs in the
    /// returned future, tried again once Redis is back for as long as the claim could
    /// still hold (a lease): a sender's retry then finds the id free, not in flight.
    fn release(self) -> impl Future<Output = ()> + Send + 'static {
        self.end(End::Released)
    }

    /// Marks the id delivered for `ttl`, tried again once Redis is back for as long as the
    /// mark would last: until it is written, a retry on another replica could be forwarded
    /// again.
    fn deliver(self, ttl: Duration) -> impl Future<Output = ()> + Send + 'static {
        self.end(End::Delivered(ttl))
    }

    /// Writes the claim's `end` (`settle`); renewing stops now.
    fn end(mut self, end: End) -> impl Future<Output = ()> + Send + 'static {
        self.stop_renewing();
        async move {
            let Remote {
                redis,
                worker,
                key,
                token,
                ..
            } = &self;
            let (within, failed) = match end {
                // The lease runs out by itself.
                End::Released => (
                    redis.lease(),
                    "Redis release failed; the claim expires with its lease",
                ),
                End::Delivered(ttl) => (
                    ttl,
                    "Redis: marking an id delivered failed; this process still remembers it",
                ),
            };
            let written = settle(redis, *worker, within, || async move {
                match end {
                    End::Released => redis.release(*worker, key, token).await,
                    End::Delivered(ttl) => redis.deliver(*worker, key, token, ttl).await,
                }
            })
            .await;
            if let Err(err) = written {
                tracing::warn!(key = &**key, error = chain(&err), "{failed}");
            }
        }
    }
}

/// A claim sent to Redis and not answered yet. Dropped before `answered` (the request's
/// future dropped because its sender hung up, or a claim that may have been written but
/// got no answer), it gives the claim back in a tracked task: Redis may set the key after
/// nobody waits for it, and would otherwise hold it in flight for a whole lease.
struct Pending<'a> {
    store: &'a Store,
    remote: Option<Remote>,
}

impl Pending<'_> {
    /// Redis answered: the claim is the caller's to keep (or there is none to give back).
    fn answered(mut self) -> Option<Remote> {
        self.remote.take()
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(remote) = self.remote.take() {
            self.store.spawn_tracked(remote.worker, remote.release());
        }
    }
}

/// How a claim ends in Redis.
#[derive(Clone, Copy)]
enum End {
    Released,
    /// Delivered, remembered for this long.
    Delivered(Duration),
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.stop_renewing();
    }
}

/// Writes a claim's end (delivered, released) until Redis takes it: after a failure that
/// may pass (Redis unreachable, slow, the connection lost), waits for this worker's link
/// to be back and writes again, for at most `within`. Both writes may be repeated: a
/// release deletes only this attempt's value, and delivered is a fact. Tries are spaced
/// (50 ms doubling to a second): a cluster's link stays up while one shard fails over, so
/// waiting for the link alone would not wait at all.
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
    let mut pause = Duration::from_millis(50);
    loop {
        match write().await {
            Ok(()) => return Ok(()),
            Err(err) if err.may_pass_later() && redis.until_up(worker, give_up).await => {
                let next = tokio::time::Instant::now() + pause;
                if next >= give_up {
                    return Err(err);
                }
                tokio::time::sleep_until(next).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(err) => return Err(err),
        }
    }
}

impl Claim {
    /// The upstream answered with a 2xx status line: delivered, whatever follows. Written
    /// to Redis by a tracked task (the answer the sender gets never waits on it).
    pub fn delivered(&mut self) {
        if self.delivered {
            return;
        }
        self.mark_delivered_locally();
        if let Some(remote) = self.remote.take() {
            let ttl = self.store.ttl();
            self.store.spawn_tracked(remote.worker, remote.deliver(ttl));
        }
    }

    fn mark_delivered_locally(&mut self) {
        self.store
            .with_memory(|d| d.delivered(&self.key, Instant::now()));
        self.delivered = true;
    }

    pub fn is_delivered(&self) -> bool {
        self.delivered
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.delivered {
            return;
        }
        self.store.with_memory(|d| d.release(&self.key));
        if let Some(remote) = self.remote.take() {
            self.store.spawn_tracked(remote.worker, remote.release());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(capacity: usize) -> Arc<Store> {
        let config = DedupConfig {
            capacity,
            ttl: Duration::from_secs(60),
            store: StoreKind::Memory,
            on_store_error: OnStoreError::Refuse,
        };
        Arc::new(Store::new(
            config,
            None,
            Arc::new(Metrics::new()),
            Arc::new(Tasks::new(1)),
        ))
    }

    async fn claim(store: &Arc<Store>, id: &Id) -> Result<Claim, Taken> {
        let unused = IntCounter::new("unused", "unused").unwrap();
        store
            .claim(0, id, OnStoreError::Refuse, &unused)
            .await
            .unwrap()
    }

    async fn lookup(store: &Store, id: &Id) -> Seen {
        let unused = IntCounter::new("unused", "unused").unwrap();
        store
            .lookup(0, id, OnStoreError::Refuse, &unused)
            .await
            .unwrap()
    }

    #[test]
    fn an_id_is_its_key_with_route_and_id_as_slices() {
        let id = Id::new("clerk", "msg_1");
        assert_eq!(id.key(), crate::dedup::key("clerk", "msg_1"));
        assert_eq!((id.route(), id.id()), ("clerk", "msg_1"));
    }

    #[tokio::test]
    async fn a_delivered_claim_is_remembered_and_counted() {
        let store = store(10);
        let k = Id::new("clerk", "msg_1");
        let mut held = claim(&store, &k).await.unwrap();
        assert!(matches!(claim(&store, &k).await, Err(Taken::Delivering)));
        assert_eq!(store.dedup_entries.get(), 1);
        held.delivered();
        held.delivered();
        drop(held);
        assert_eq!(lookup(&store, &k).await, Seen::Delivered);
        assert!(matches!(claim(&store, &k).await, Err(Taken::Delivered)));
        assert_eq!(store.dedup_entries.get(), 1);
    }

    #[tokio::test]
    async fn forget_frees_a_delivered_id_once_and_leaves_one_in_flight() {
        let store = store(10);
        let k = Id::new("clerk", "msg_1");
        assert_eq!(store.forget(&k).await.unwrap(), Seen::New);
        let mut held = claim(&store, &k).await.unwrap();
        assert_eq!(store.forget(&k).await.unwrap(), Seen::Delivering);
        held.delivered();
        drop(held);
        assert_eq!(store.forget(&k).await.unwrap(), Seen::Delivered);
        assert_eq!(store.dedup_entries.get(), 0);
        claim(&store, &k).await.unwrap().delivered();
        assert!(matches!(claim(&store, &k).await, Err(Taken::Delivered)));
    }

    #[tokio::test]
    async fn a_dropped_claim_is_released_so_the_retry_goes_through() {
        let store = store(10);
        let k = Id::new("clerk", "msg_1");
        drop(claim(&store, &k).await.unwrap());
        assert_eq!(lookup(&store, &k).await, Seen::New);
        assert_eq!(store.dedup_entries.get(), 0);
        // The retry claims it again, and a claim held by a task that ends is released too.
        let held = claim(&store, &k).await.unwrap();
        tokio::spawn(async move { drop(held) }).await.unwrap();
        assert_eq!(lookup(&store, &k).await, Seen::New);
    }

    #[tokio::test]
    async fn a_reload_keeps_memory_and_applies_capacity() {
        let store = store(10);
        for i in 0..4 {
            claim(&store, &Id::new("a", &format!("msg_{i}")))
                .await
                .unwrap()
                .delivered();
        }
        store.reconfigure(DedupConfig {
            capacity: 2,
            ttl: Duration::from_secs(600),
            store: StoreKind::Memory,
            on_store_error: OnStoreError::Refuse,
        });
        assert_eq!(store.ttl(), Duration::from_secs(600));
        assert_eq!(
            lookup(&store, &Id::new("a", "msg_3")).await,
            Seen::Delivered
        );
        assert_eq!(lookup(&store, &Id::new("a", "msg_0")).await, Seen::New);
        assert_eq!(store.dedup_entries.get(), 2);
    }

    /// Without Redis, a stream rule's enqueue fails and leaves the id free.
    #[tokio::test]
    async fn an_enqueue_without_redis_fails_and_releases() {
        let store = store(10);
        let k = Id::new("a", "msg_1");
        let entry = Entry::new(
            "msg_1",
            "t",
            "a",
            Some(1),
            bytes::Bytes::new(),
            &http::HeaderMap::new(),
        );
        assert!(matches!(
            store.enqueue(0, &k, "s", &entry).await,
            Err(StoreError::Down)
        ));
        assert_eq!(lookup(&store, &k).await, Seen::New);
    }
}
