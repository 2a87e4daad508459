//! The Redis / Valkey edge: one multiplexed connection per worker runtime (created inside
//! it, so its driver shares the worker's thread and no command crosses threads), every
//! command bounded by `redis.timeout`, an answer at once while Redis is known to be down,
//! and reconnection in the background. A connection counts as up only once a probe has
//! *written* (so a server left READONLY after a failover stays down until it is writable
//! again).
//!
//! The dedup protocol (contract §8), on keys `{prefix}:dedup:{route}:{id}`:
//! - claim: `SET key i:<token> NX PX lease GET` (nil: ours; `i:…`: in flight elsewhere;
//!   `d:…`: delivered), the token unique to the attempt, the lease renewed while the
//!   forward runs (`renew`), so a replica that dies frees the id within one lease;
//! - deliver: `SET key d:<token> PX ttl` (delivered is a fact: no compare needed);
//! - release: delete only if the value is still this attempt's (a Lua compare-and-delete:
//!   Debian's Redis 7.0 has neither DELEX nor DELIFEQ);
//! - lookup (events that are not forwarded): `GET key`.
//!
//! Stream rules (contract §9) append with `XADD stream MAXLEN ~ n * field value …`; with
//! `store = "redis"` the claim and the append are one script (`APPEND_ONCE`): the id is
//! checked, the entry appended and the id marked delivered in one step, so replicas
//! racing on one id append it once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, FromRedisValue, Script};

use crate::config::RedisConfig;
use crate::dedup::Seen;
use crate::metrics::{RedisMetrics, RedisOp};
use crate::stream::Entry;

/// Deletes KEYS[1] only if it still holds ARGV[1].
const RELEASE: &str =
    r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// Extends KEYS[1]'s lease to ARGV[2] ms only if it still holds ARGV[1].
const RENEW: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";

/// KEYS[1] the dedup key, KEYS[2] the stream; ARGV[1] ttl ms, ARGV[2] the delivered
/// value, ARGV[3] the stream's approximate max length, then the entry's fields and values.
/// Returns `{1, entry id}` once appended, or `{0, value}` if the id was already known.
const APPEND_ONCE: &str = r"
local old = redis.call('GET', KEYS[1])
if old then return {0, old} end
local entry = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
return {1, entry}
";

/// The shortest lease: a claim is renewed every third of it while its forward runs.
const MIN_LEASE: Duration = Duration::from_secs(1);

/// Reconnection waits this long after a failed attempt, doubling up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why the store gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis is unreachable (reconnecting in the background)")]
    Down,
    #[error("Redis did not answer within redis.timeout ({0:?})")]
    Timeout(Duration),
    #[error("Redis refused the command")]
    Command(#[source] redis::RedisError),
    #[error("Redis answered {0:?}, which is no dedup value")]
    Unexpected(String),
}

impl StoreError {
    /// Whether the same command may succeed once the connection is back: Redis was
    /// unreachable, slow, or the connection broke (READONLY included). A command Redis
    /// refused for what it is would be refused again.
    pub fn may_pass_later(&self) -> bool {
        match self {
            StoreError::Down | StoreError::Timeout(_) => true,
            StoreError::Command(err) => connection_lost(err),
            StoreError::Unexpected(_) => false,
        }
    }

    /// Whether the command certainly never reached Redis (so nothing of it needs undoing).
    pub fn never_sent(&self) -> bool {
        matches!(self, StoreError::Down)
    }
}

/// The shared store: one link per worker.
pub struct Redis {
    client: Client,
    prefix: String,
    timeout: Duration,
    links: Vec<Link>,
    metrics: RedisMetrics,
    release: Script,
    renew: Script,
    append_once: Script,
    stream_max_len: u64,
}

/// One worker's connection: `None` while down. `up` mirrors it for the other workers
/// (reading it touches no lock and no reference count); `back` wakes the writes waiting
/// for it to return (`until_up`). `leases`: the claims whose forwards run on this worker,
/// renewed together by its `keep_leases` task.
#[derive(Default)]
struct Link {
    conn: Mutex<Option<MultiplexedConnection>>,
    up: AtomicBool,
    back: tokio::sync::Notify,
    reconnecting: AtomicBool,
    leases: Mutex<Leases>,
}

#[derive(Default)]
struct Leases {
    next: u64,
    held: HashMap<u64, Lease>,
}

struct Lease {
    key: Arc<str>,
    token: Arc<str>,
    since: Instant,
}

impl Redis {
    pub fn new(
        config: &RedisConfig,
        workers: usize,
        metrics: RedisMetrics,
    ) -> Result<Redis, redis::RedisError> {
        let client = match &config.ca_file {
            Some((_, pem)) => Client::build_with_tls(
                config.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            )?,
            None => Client::open(config.url.as_str())?,
        };
        Ok(Redis {
            client,
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            links: (0..workers.max(1)).map(|_| Link::default()).collect(),
            metrics,
            release: Script::new(RELEASE),
            renew: Script::new(RENEW),
            append_once: Script::new(APPEND_ONCE),
            stream_max_len: config.stream_max_len,
        })
    }

    /// How long a claim holds without renewal: eight command timeouts, at least a second.
    pub fn lease(&self) -> Duration {
        (self.timeout * 8).max(MIN_LEASE)
    }

    /// `{prefix}:dedup:{route}:{id}`.
    pub fn dedup_key(&self, route: &str, id: &str) -> String {
        format!("{}:dedup:{route}:{id}", self.prefix)
    }

    /// Connects worker `worker`'s link in the background and starts renewing its claims'
    /// leases, on the calling (worker) runtime.
    pub fn start(self: &Arc<Self>, worker: usize) {
        self.reconnect_in_background(worker);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.clone().keep_leases(worker));
        }
    }

    /// Renews the claim `key` = `token` while its forward runs, until `let_go(worker,
    /// returned)`: a replica that dies frees the id within one lease. Registering is a
    /// map insert on this worker's own lock; no task per forward.
    pub fn hold(&self, worker: usize, key: Arc<str>, token: Arc<str>) -> u64 {
        let mut leases = self.link(worker).leases();
        let id = leases.next;
        leases.next += 1;
        let since = Instant::now();
        leases.held.insert(id, Lease { key, token, since });
        id
    }

    pub fn let_go(&self, worker: usize, lease: u64) {
        self.link(worker).leases().held.remove(&lease);
    }

    /// Every third of the lease, renews the claims held on worker `worker` for at least
    /// that long (most forwards end well before: they cost nothing here).
    async fn keep_leases(self: Arc<Self>, worker: usize) {
        let every = self.lease() / 3;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let due: Vec<(Arc<str>, Arc<str>)> = self
                .link(worker)
                .leases()
                .held
                .values()
                .filter(|lease| lease.since.elapsed() >= every)
                .map(|lease| (lease.key.clone(), lease.token.clone()))
                .collect();
            let mut renewals = tokio::task::JoinSet::new();
            for (key, token) in due {
                let this = self.clone();
                renewals.spawn(async move {
                    match this.renew(worker, &key, &token).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(
                            key = &*key,
                            "Redis: a claim was gone before its forward ended (Redis lost data?)"
                        ),
                        Err(err) => {
                            tracing::debug!(key = &*key, error = %err, "Redis: renewing a claim failed")
                        }
                    }
                });
            }
            while renewals.join_next().await.is_some() {}
        }
    }

    fn link(&self, worker: usize) -> &Link {
        &self.links[worker % self.links.len()]
    }

    pub async fn claim(
        self: &Arc<Self>,
        worker: usize,
        key: &str,
        token: &str,
    ) -> Result<Seen, StoreError> {
        let lease = self.lease().as_millis() as u64;
        let value = format!("i:{token}");
        let old: Option<String> = self
            .run(worker, RedisOp::Claim, |mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(lease)
                    .arg("GET")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        match old {
            None => Ok(Seen::New),
            Some(old) => seen(old),
        }
    }

    /// Extends this attempt's lease; false if the claim is no longer this attempt's.
    pub async fn renew(
        self: &Arc<Self>,
        worker: usize,
        key: &str,
        token: &str,
    ) -> Result<bool, StoreError> {
        let lease = self.lease().as_millis() as u64;
        let value = format!("i:{token}");
        let renewed: i64 = self
            .run(worker, RedisOp::Claim, |mut conn| async move {
                self.renew
                    .key(key)
                    .arg(value)
                    .arg(lease)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(renewed == 1)
    }

    pub async fn deliver(
        self: &Arc<Self>,
        worker: usize,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let ttl = ttl.as_millis() as u64;
        let value = format!("d:{token}");
        self.run(worker, RedisOp::Deliver, |mut conn| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    pub async fn release(
        self: &Arc<Self>,
        worker: usize,
        key: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        let value = format!("i:{token}");
        self.run(worker, RedisOp::Release, |mut conn| async move {
            self.release
                .key(key)
                .arg(value)
                .invoke_async::<i64>(&mut conn)
                .await
        })
        .await
        .map(|_| ())
    }

    pub async fn lookup(self: &Arc<Self>, worker: usize, key: &str) -> Result<Seen, StoreError> {
        let value: Option<String> = self
            .run(worker, RedisOp::Lookup, |mut conn| async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await?;
        match value {
            None => Ok(Seen::New),
            Some(value) => seen(value),
        }
    }

    /// Appends `entry` to `stream` (store = "memory": this process's claim wraps it).
    /// Returns the entry's id.
    pub async fn append(
        self: &Arc<Self>,
        worker: usize,
        stream: &str,
        entry: &Entry,
    ) -> Result<String, StoreError> {
        let max_len = self.stream_max_len;
        self.run(worker, RedisOp::Append, |mut conn| async move {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(stream).arg("MAXLEN").arg("~").arg(max_len).arg("*");
            for (name, value) in &entry.fields {
                cmd.arg(*name).arg(value.as_ref());
            }
            cmd.query_async(&mut conn).await
        })
        .await
    }

    /// Appends `entry` to `stream` unless the id at `key` is known, and marks it
    /// delivered for `ttl`, in one step: the entry's id, or what was known.
    pub async fn append_once(
        self: &Arc<Self>,
        worker: usize,
        key: &str,
        token: &str,
        ttl: Duration,
        stream: &str,
        entry: &Entry,
    ) -> Result<Result<String, Seen>, StoreError> {
        let ttl = ttl.as_millis() as u64;
        let max_len = self.stream_max_len;
        let (appended, value): (i64, String) = self
            .run(worker, RedisOp::Append, |mut conn| async move {
                let mut call = self.append_once.key(key);
                call.key(stream)
                    .arg(ttl)
                    .arg(format!("d:{token}"))
                    .arg(max_len);
                for (name, value) in &entry.fields {
                    call.arg(*name).arg(value.as_ref());
                }
                call.invoke_async(&mut conn).await
            })
            .await?;
        if appended == 1 {
            Ok(Ok(value))
        } else {
            seen(value).map(Err)
        }
    }

    /// One command on worker `worker`'s link, within `redis.timeout`, counted. While the
    /// link is down it fails at once; a timeout, a dropped connection or READONLY marks
    /// it down and starts reconnecting.
    pub(crate) async fn run<T, F, Fut>(
        self: &Arc<Self>,
        worker: usize,
        op: RedisOp,
        command: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
        T: FromRedisValue,
    {
        let Some(conn) = self.link(worker).current() else {
            self.metrics.command(op, "error");
            self.reconnect_in_background(worker);
            return Err(StoreError::Down);
        };
        let started = Instant::now();
        // Bounded by the connection's response timeout (`redis.timeout`), which covers
        // queueing the command as well as its answer.
        let result = command(conn).await;
        self.metrics.observe(op, started.elapsed());
        match result {
            Ok(value) => {
                self.metrics.command(op, "ok");
                self.refresh_up();
                Ok(value)
            }
            Err(err) if err.is_timeout() => {
                self.metrics.command(op, "timeout");
                self.down(worker);
                Err(StoreError::Timeout(self.timeout))
            }
            Err(err) => {
                self.metrics.command(op, "error");
                self.metrics.up.set(0);
                if connection_lost(&err) {
                    self.down(worker);
                }
                Err(StoreError::Command(err))
            }
        }
    }

    fn down(self: &Arc<Self>, worker: usize) {
        if self.link(worker).take().is_some() {
            tracing::warn!(
                worker,
                "Redis unreachable: answering by on_store_error until it is back"
            );
        }
        self.refresh_up();
        self.reconnect_in_background(worker);
    }

    /// `hookwall_redis_up`: 1 while every worker's link is up (and, set by `run`, the
    /// last command succeeded). Written only when it changes: this runs after every
    /// command, on every worker.
    fn refresh_up(&self) {
        let up = i64::from(
            self.links
                .iter()
                .all(|link| link.up.load(Ordering::Acquire)),
        );
        if self.metrics.up.get() != up {
            self.metrics.up.set(up);
        }
    }

    /// Starts worker `worker`'s reconnection loop unless one runs (outside a runtime,
    /// nothing: the next command tries again).
    fn reconnect_in_background(self: &Arc<Self>, worker: usize) {
        let link = self.link(worker);
        if link.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            link.reconnecting.store(false, Ordering::Release);
            return;
        };
        let this = self.clone();
        runtime.spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                match this.connect().await {
                    Ok(conn) => {
                        let link = this.link(worker);
                        link.set(conn);
                        link.reconnecting.store(false, Ordering::Release);
                        this.refresh_up();
                        tracing::info!(worker, "Redis reachable and writable");
                        return;
                    }
                    Err(err) => {
                        tracing::debug!(worker, error = %err, "Redis not reachable yet");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        });
    }

    /// A new connection that has written a probe key (a READONLY replica fails here).
    async fn connect(&self) -> Result<MultiplexedConnection, StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(self.timeout));
        let attempt = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(StoreError::Command)?;
            redis::cmd("SET")
                .arg(format!("{}:probe", self.prefix))
                .arg(1)
                .arg("PX")
                .arg(1000)
                .query_async::<()>(&mut conn)
                .await
                .map_err(StoreError::Command)?;
            Ok(conn)
        };
        let bound = self.timeout.max(Duration::from_secs(1)) * 2;
        tokio::time::timeout(bound, attempt)
            .await
            .map_err(|_| StoreError::Timeout(bound))?
    }

    /// Waits until worker `worker`'s link is up again (reconnecting in the background),
    /// or `until` passes: whether it is up.
    pub async fn until_up(self: &Arc<Self>, worker: usize, until: tokio::time::Instant) -> bool {
        let link = self.link(worker);
        loop {
            let back = link.back.notified();
            if link.up.load(Ordering::Acquire) {
                return true;
            }
            self.reconnect_in_background(worker);
            if tokio::time::timeout_at(until, back).await.is_err() {
                return link.up.load(Ordering::Acquire);
            }
        }
    }

    /// For `hookwall check`: whether Redis answers and takes writes now.
    pub async fn probe(&self) -> Result<(), StoreError> {
        self.connect().await.map(|_| ())
    }
}

impl Link {
    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, conn: MultiplexedConnection) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
        self.up.store(true, Ordering::Release);
        self.back.notify_waiters();
    }

    fn take(&self) -> Option<MultiplexedConnection> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        self.up.store(false, Ordering::Release);
        conn.take()
    }
}

/// What a stored value says: `i:` in flight, `d:` delivered.
fn seen(value: String) -> Result<Seen, StoreError> {
    if value.starts_with("d:") {
        Ok(Seen::Delivered)
    } else if value.starts_with("i:") {
        Ok(Seen::InFlight)
    } else {
        Err(StoreError::Unexpected(value))
    }
}

/// Errors after which the connection cannot be trusted: gone, or the server turned into
/// a read-only replica.
fn connection_lost(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_unrecoverable_error()
        || err.code() == Some("READONLY")
}

/// A token unique to one claim attempt: 128 bits, the first 64 drawn from the system's
/// random source once per thread, the last a per-thread counter from a random start, so
/// two attempts (in this process or any other) never share one, and a claim costs no
/// system call. Tokens only tell attempts apart: they guard nothing secret.
pub fn token() -> String {
    use std::cell::Cell;
    use std::fmt::Write as _;
    thread_local! {
        static NEXT: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
    }
    let (high, low) = NEXT.with(|next| {
        let (high, low) = next.get().unwrap_or_else(seed);
        next.set(Some((high, low.wrapping_add(1))));
        (high, low)
    });
    let mut text = String::with_capacity(32);
    let _ = write!(text, "{high:016x}{low:016x}");
    text
}

fn seed() -> (u64, u64) {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // Never seen; the time and the thread still tell processes apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    let (high, low) = bytes.split_at(8);
    (
        u64::from_le_bytes(high.try_into().unwrap_or_default()),
        u64::from_le_bytes(low.try_into().unwrap_or_default()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_say_what_is_known() {
        assert_eq!(seen("d:abc".into()).unwrap(), Seen::Delivered);
        assert_eq!(seen("i:abc".into()).unwrap(), Seen::InFlight);
        assert!(seen("x".into()).is_err());
    }

    #[test]
    fn tokens_are_unique_and_hex() {
        let (a, b) = (token(), token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        // Another thread draws its own random half.
        let other = std::thread::spawn(token).join().unwrap();
        assert_ne!(other[..16], a[..16]);
    }
}
