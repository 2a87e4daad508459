//! What the proxy runs on: `Shared` lives as long as the process (metrics, dedup memory,
//! the body budget, forwards that outlived their request, readiness); `Live` is one loaded
//! config, swapped whole on reload, so a request (and its forward) sees one consistent
//! config from start to end.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use http::HeaderValue;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::budget::Budget;
use crate::client::Client;
use crate::config::{Config, Limits, Route};
use crate::dedup::{Dedup, Seen};
use crate::metrics::{Metrics, RouteMetrics, UNMATCHED};
use crate::tls::TlsError;

/// One route, ready to serve.
pub struct RouteState {
    pub route: Route,
    pub metrics: RouteMetrics,
    /// One client (connection pool) per worker: a pooled connection is driven by the
    /// worker that uses it.
    clients: Vec<Arc<Client>>,
    /// Bounds concurrent forwards (`max_in_flight`); a forward that outlives its request
    /// keeps its permit.
    pub forwards: Arc<Semaphore>,
    /// `hookwall-route`, built once.
    pub name_header: HeaderValue,
}

impl RouteState {
    /// Worker `worker`'s client: a pooled connection is driven by the worker that uses it.
    pub fn client(&self, worker: usize) -> &Client {
        &self.clients[worker % self.clients.len()]
    }
}

/// One loaded config.
pub struct Live {
    pub config: Config,
    routes: Vec<RouteState>,
    by_path: HashMap<String, usize>,
    pub tls: Option<TlsAcceptor>,
}

impl Live {
    /// Builds the clients and per-route state. A failure here (a CA bundle that went away
    /// since it was checked) refuses the config like a validation error.
    pub fn new(
        config: Config,
        metrics: &Metrics,
        default_clients: &[Arc<Client>],
    ) -> Result<Live, TlsError> {
        let mut routes = Vec::new();
        let mut by_path = HashMap::new();
        for route in &config.routes {
            let clients = match &route.ca_file {
                Some(ca) => crate::client::build_many(Some(ca), default_clients.len())?
                    .into_iter()
                    .map(Arc::new)
                    .collect(),
                None => default_clients.to_vec(),
            };
            let state = RouteState {
                metrics: metrics.route(&route.name, route.secrets.len()),
                clients,
                forwards: Arc::new(Semaphore::new(route.max_in_flight)),
                // Config validation keeps names to visible ASCII.
                name_header: HeaderValue::from_str(&route.name)
                    .unwrap_or(HeaderValue::from_static("_invalid")),
                route: route.clone(),
            };
            by_path.insert(route.path.clone(), routes.len());
            routes.push(state);
        }
        let tls = config
            .listen
            .tls
            .as_ref()
            .map(|tls| TlsAcceptor::from(tls.server.clone()));
        Ok(Live {
            config,
            routes,
            by_path,
            tls,
        })
    }

    /// The route serving `path`, and its index for `route_at`.
    pub fn route(&self, path: &str) -> Option<(usize, &RouteState)> {
        let index = *self.by_path.get(path)?;
        Some((index, &self.routes[index]))
    }

    /// The route at an index `route` gave, for work that holds the `Live` but not a borrow.
    pub fn route_at(&self, index: usize) -> &RouteState {
        &self.routes[index]
    }

    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }
}

/// Everything that outlives a config.
pub struct Shared {
    pub metrics: Metrics,
    pub unmatched: RouteMetrics,
    dedup: Mutex<Dedup>,
    live: RwLock<Arc<Live>>,
    /// `/readyz`: true once both listeners are bound, false from the first shutdown signal.
    pub ready: AtomicBool,
    /// Per worker, the client for routes without their own CA bundle.
    pub default_clients: Vec<Arc<Client>>,
    /// Request bodies held right now, against `limits.max_buffered_bytes`.
    pub budget: Arc<Budget>,
    /// Forwards that outlived their request (the sender timed out or hung up); waited
    /// for within `shutdown_grace`.
    pub detached: TaskTracker,
}

impl Shared {
    pub fn new(config: Config) -> Result<Shared, TlsError> {
        let workers = config.limits.workers;
        let metrics = Metrics::new();
        let budget = Budget::new(
            config.limits.max_buffered_bytes,
            metrics.buffered_body_bytes.clone(),
        );
        let unmatched = metrics.route(UNMATCHED, 0);
        let default_clients: Vec<Arc<Client>> = crate::client::build_many(None, workers)?
            .into_iter()
            .map(Arc::new)
            .collect();
        let dedup = Dedup::new(
            NonZeroUsize::new(config.dedup.capacity).unwrap_or(NonZeroUsize::MIN),
            config.dedup.ttl,
        );
        let live = Live::new(config, &metrics, &default_clients)?;
        Ok(Shared {
            metrics,
            unmatched,
            dedup: Mutex::new(dedup),
            live: RwLock::new(Arc::new(live)),
            ready: AtomicBool::new(false),
            default_clients,
            budget,
            detached: TaskTracker::new(),
        })
    }

    /// Worker threads serving the public listener: one client (pool) each.
    pub fn workers(&self) -> usize {
        self.default_clients.len()
    }

    /// The config in force; a request holds on to it until it is answered.
    pub fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts a new config in force; dedup memory carries over.
    pub fn swap(&self, live: Live) {
        self.budget.set_max(live.config.limits.max_buffered_bytes);
        let dedup = live.config.dedup;
        self.with_dedup(|d| {
            d.reconfigure(
                NonZeroUsize::new(dedup.capacity).unwrap_or(NonZeroUsize::MIN),
                dedup.ttl,
                Instant::now(),
            )
        });
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
    }

    /// One dedup operation under the lock (never held across an `.await`), then the
    /// gauge and eviction counters updated from what it did.
    fn with_dedup<T>(&self, op: impl FnOnce(&mut Dedup) -> T) -> T {
        let (result, len, evictions) = {
            // Dedup's state stays consistent even if a panic poisoned the lock.
            let mut d = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
            let result = op(&mut d);
            (result, d.len(), d.take_evictions())
        };
        self.metrics.dedup_entries.set(len as i64);
        self.metrics.evictions(evictions);
        result
    }

    pub fn dedup_lookup(&self, key: &str) -> Seen {
        self.with_dedup(|d| d.lookup(key, Instant::now()))
    }

    /// Claims `key` if new. The returned guard releases it when dropped unless
    /// `delivered` was called: every path out of a forward, panics, cancellation and an
    /// abandoned forward included, gives the id back.
    pub fn dedup_claim(self: &Arc<Self>, key: String) -> Result<Claim, Seen> {
        match self.with_dedup(|d| d.claim(&key, Instant::now())) {
            Seen::New => Ok(Claim {
                shared: self.clone(),
                key,
                done: false,
            }),
            other => Err(other),
        }
    }
}

/// An id in flight. Owned, so a forward that outlives its request keeps it.
pub struct Claim {
    shared: Arc<Shared>,
    key: String,
    done: bool,
}

impl Claim {
    /// The upstream answered with a 2xx status line: delivered, whatever follows.
    pub fn delivered(&mut self) {
        if !self.done {
            self.shared
                .with_dedup(|d| d.delivered(&self.key, Instant::now()));
            self.done = true;
        }
    }

    pub fn is_delivered(&self) -> bool {
        self.done
    }

    /// The route and the message id, from the key.
    pub fn route_and_id(&self) -> (&str, &str) {
        self.key.split_once('\0').unwrap_or(("", &self.key))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.done {
            self.shared.with_dedup(|d| d.release(&self.key));
        }
    }
}
