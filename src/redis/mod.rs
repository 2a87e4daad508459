//! The Redis / Valkey edge: one multiplexed connection per worker, made on its thread, and
//! one for the admin side (forget), made on the main thread that serves it; every command
//! bounded by `redis.timeout`; an answer at once while Redis is known to be
//! down, reconnection in the background, and up only once a probe has written (a READONLY
//! replica stays down). The link goes to a `url`'s primary, to the primary the sentinels
//! name (asked again on every reconnection: after READONLY, a refused write, an error), or
//! to a Redis Cluster (`connect.rs`); the commands run on it the same way in every mode.

mod commands;
mod connect;
mod error;
pub mod keys;
mod node;
mod promotions;
mod renewals;
mod sentinel;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::FromRedisValue;

use crate::chain::chain;
use crate::config::RedisConfig;
use crate::labels::RedisOp;
use crate::metrics::RedisMetrics;
pub use connect::Conn;
use connect::Connector;
use error::connection_lost;
pub use error::StoreError;

/// The shortest lease: a claim is renewed every third of it while its forward runs.
const MIN_LEASE: Duration = Duration::from_secs(1);

/// Reconnection waits this long after a failed attempt, doubling up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// With sentinels or a cluster, at most this: a failover promotes a replica within a few
/// seconds, and each attempt is a few cheap commands; hookwall should follow at once.
const HA_MAX_BACKOFF: Duration = Duration::from_millis(250);
/// A cluster's link is rebuilt (its slots read again) at most this often: its commands
/// fail while a shard fails over, and every failure asks for a rebuild.
const CLUSTER_REBUILD_PAUSE: Duration = Duration::from_millis(250);

/// The shared store: one link per worker, then the admin side's.
pub struct Redis {
    connector: Connector,
    prefix: String,
    timeout: Duration,
    links: Vec<Link>,
    metrics: RedisMetrics,
    scripts: commands::Scripts,
    stream_max_len: u64,
}

/// One worker's connection: `None` while down. `up` mirrors it for the other workers
/// (reading it touches no lock and no reference count); `back` wakes the writes waiting
/// for it to return (`until_up`). `renewals`: the claims whose forwards run on this
/// worker, renewed together by its `renew_leases` task.
#[derive(Default)]
struct Link {
    conn: Mutex<Option<Conn>>,
    up: AtomicBool,
    back: tokio::sync::Notify,
    reconnecting: AtomicBool,
    /// Sentinels: the watcher's generation when this link was made (`Connector::stale`).
    generation: std::sync::atomic::AtomicU64,
    renewals: renewals::Renewals,
}

impl Redis {
    pub fn new(
        config: &RedisConfig,
        workers: usize,
        metrics: RedisMetrics,
    ) -> Result<Redis, redis::RedisError> {
        let connector = Connector::new(config, metrics.primary_changes.clone())?;
        Ok(Redis {
            connector,
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            links: (0..workers.max(1) + 1).map(|_| Link::default()).collect(),
            metrics,
            scripts: commands::Scripts::default(),
            stream_max_len: config.stream_max_len,
        })
    }

    /// How long a claim holds without renewal: eight command timeouts, at least a second.
    pub fn lease(&self) -> Duration {
        (self.timeout * 8).max(MIN_LEASE)
    }

    /// `{prefix}:dedup:{route}:{id}`; in a cluster the route is its hash tag (`keys.rs`).
    pub fn dedup_key(&self, route: &str, id: &str) -> String {
        keys::dedup_key(&self.prefix, self.connector.is_cluster(), route, id)
    }

    /// Connects worker `worker`'s link in the background and starts renewing its claims'
    /// leases, on the calling (worker) runtime.
    pub fn start(self: &Arc<Self>, worker: usize) {
        self.reconnect_in_background(worker);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.clone().renew_leases(worker));
            if worker == 0 {
                // Sentinels, cluster: one watcher per process (on the first worker's runtime).
                let this = self.clone();
                runtime.spawn(async move { this.connector.watch(this.timeout).await });
            }
        }
    }

    /// The admin side's link, as a `worker` index: its commands (an operator's forget)
    /// run on the runtime that serves the admin listener, never on a worker's connection,
    /// whose driver that runtime must not take over by reconnecting it.
    pub fn admin_link(&self) -> usize {
        self.links.len() - 1
    }

    /// Connects the admin side's link in the background, on the calling runtime (the one
    /// serving the admin listener). It counts in `hookwall_redis_up` like the others.
    pub fn start_admin(self: &Arc<Self>) {
        self.reconnect_in_background(self.admin_link());
    }

    fn link(&self, worker: usize) -> &Link {
        &self.links[worker % self.links.len()]
    }

    /// One command on worker `worker`'s link, within `redis.timeout`, counted. While the
    /// link is down it fails at once; a timeout, a dropped connection, READONLY (and the
    /// rest of `connection_lost`) marks it down and starts reconnecting (a cluster's link
    /// keeps serving the shards that answer while it is rebuilt).
    ///
    /// Every command goes through here, whatever the mode: a new one (a script in
    /// `commands.rs`) takes the `Conn` it is given and needs nothing else.
    pub(crate) async fn run<T, F, Fut>(
        self: &Arc<Self>,
        worker: usize,
        op: RedisOp,
        command: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
        T: FromRedisValue,
    {
        let link = self.link(worker);
        let Some(conn) = link.current() else {
            self.metrics.command(op, "error");
            self.reconnect_in_background(worker);
            return Err(StoreError::Down);
        };
        if self
            .connector
            .stale(link.generation.load(Ordering::Acquire))
        {
            // Sentinels: a failover runs, or named another primary since this link was made.
            self.metrics.command(op, "error");
            self.down(worker);
            return Err(StoreError::Down);
        }
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
        if self.connector.is_cluster() {
            // The cluster client follows MOVED and retries by itself; a rebuilt link reads
            // the slots afresh (a killed primary's replica promoted), and until it is ready
            // the other shards go on answering.
            self.reconnect_in_background(worker);
            return;
        }
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
                let generation = this.connector.generation();
                match this.connect().await {
                    Ok(conn) => {
                        let link = this.link(worker);
                        link.generation.store(generation, Ordering::Release);
                        link.set(conn);
                        if this.connector.is_cluster() {
                            tokio::time::sleep(CLUSTER_REBUILD_PAUSE).await;
                        }
                        link.reconnecting.store(false, Ordering::Release);
                        this.refresh_up();
                        tracing::info!(worker, "Redis reachable and writable");
                        return;
                    }
                    Err(err) => {
                        tracing::debug!(worker, error = chain(&err), "Redis not reachable yet");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(this.max_backoff());
                    }
                }
            }
        });
    }

    fn max_backoff(&self) -> Duration {
        match self.connector {
            Connector::Url(_) => MAX_BACKOFF,
            _ => HA_MAX_BACKOFF,
        }
    }

    /// A new link that has written a probe key (a READONLY replica fails here).
    async fn connect(&self) -> Result<Conn, StoreError> {
        let probe = format!("{}:probe", self.prefix);
        let bound = self.connector.connect_bound(self.timeout);
        tokio::time::timeout(bound, self.connector.connect(self.timeout, &probe))
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

    /// For `hookwall check`: each sentinel or cluster seed node, whether it answers now
    /// (none with `url`).
    pub async fn ping_each(&self) -> Vec<(String, Result<(), StoreError>)> {
        self.connector.ping_each(self.timeout).await
    }
}

impl Link {
    fn current(&self) -> Option<Conn> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, conn: Conn) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
        self.up.store(true, Ordering::Release);
        self.back.notify_waiters();
    }

    fn take(&self) -> Option<Conn> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        self.up.store(false, Ordering::Release);
        conn.take()
    }
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
