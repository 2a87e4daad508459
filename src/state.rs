//! What the proxy runs on: `Shared` lives as long as the process (metrics, dedup memory,
//! the body budget, forwards that outlived their request, readiness); `Live` is one loaded
//! config, swapped whole on reload, so a request (and its forward) sees one consistent
//! config from start to end.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use http::HeaderValue;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::budget::Budget;
use crate::client::Client;
use crate::config::{Config, Limits, Route, StoreKind};
use crate::metrics::{Metrics, RouteMetrics, UNMATCHED};
use crate::redis::Redis;
use crate::store::Store;
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
    pub metrics: Arc<Metrics>,
    pub unmatched: RouteMetrics,
    /// Message ids: memory, and Redis with `store = "redis"`.
    pub store: Arc<Store>,
    live: RwLock<Arc<Live>>,
    /// `/readyz`: true once both listeners are bound, false from the first shutdown signal.
    pub ready: AtomicBool,
    /// Per worker, the client for routes without their own CA bundle.
    pub default_clients: Vec<Arc<Client>>,
    /// Request bodies held right now, against `limits.max_buffered_bytes`.
    pub budget: Arc<Budget>,
    /// Work that outlived its request (forwards the sender stopped waiting for, Redis
    /// writes of a claim's end); waited for within `shutdown_grace`.
    pub detached: TaskTracker,
}

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("redis.url cannot be used")]
    Redis(#[source] redis::RedisError),
}

impl Shared {
    pub fn new(config: Config) -> Result<Shared, StartError> {
        let workers = config.limits.workers;
        let metrics = Arc::new(Metrics::new());
        let budget = Budget::new(
            config.limits.max_buffered_bytes,
            metrics.buffered_body_bytes.clone(),
        );
        let unmatched = metrics.route(UNMATCHED, 0);
        let default_clients: Vec<Arc<Client>> = crate::client::build_many(None, workers)?
            .into_iter()
            .map(Arc::new)
            .collect();
        let redis = match (&config.redis, config.dedup.store) {
            (Some(redis), StoreKind::Redis) => Some(Arc::new(
                Redis::new(redis, workers, metrics.redis()).map_err(StartError::Redis)?,
            )),
            _ => None,
        };
        let detached = TaskTracker::new();
        let store = Arc::new(Store::new(
            config.dedup,
            redis,
            metrics.clone(),
            detached.clone(),
        ));
        let live = Live::new(config, &metrics, &default_clients)?;
        Ok(Shared {
            metrics,
            unmatched,
            store,
            live: RwLock::new(Arc::new(live)),
            ready: AtomicBool::new(false),
            default_clients,
            budget,
            detached,
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
        self.store.reconfigure(live.config.dedup);
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
    }
}
