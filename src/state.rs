//! What the proxy runs on: `Shared` lives as long as the process (metrics, ids, the body
//! budget, tracked tasks, readiness); `Live` is one loaded config, swapped whole on reload.
//! Each worker has its own `Live`, so what a request does to it stays on its own cache lines.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use crossbeam_utils::CachePadded;
use http::HeaderValue;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::budget::{Budget, WorkerBudget};
use crate::config::{Config, Limits, Route};
use crate::deliveries::Deliveries;
use crate::forward::client::Client;
use crate::forward::{Forward, Holds};
use crate::in_flight::InFlight;
use crate::labels::UNMATCHED;
use crate::metrics::{Metrics, RouteMetrics};
use crate::redis::Redis;
use crate::route::Upstream;
use crate::store::Id;
use crate::store::Store;
use crate::tasks::Tasks;
use crate::tls::TlsError;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

/// One route, ready to serve on one worker.
pub struct RouteState {
    /// The route, its upstreams allocated for this worker.
    pub route: Route,
    /// This worker's handle on the route's series.
    pub metrics: Arc<RouteMetrics>,
    /// This worker's client (connection pool): a pooled connection is driven by the
    /// worker that uses it.
    pub client: Arc<Client>,
    /// Bounds concurrent forwards (`max_in_flight`), shared by every worker's `Live`; a
    /// forward that outlives its request keeps its permit.
    pub forwards: Arc<Semaphore>,
    /// What `forwards` is part of: the bound kept across reloads, resized by them.
    pub in_flight: Arc<InFlight>,
    /// `hookwall-route`, built once.
    pub name_header: HeaderValue,
}

impl RouteState {
    /// A forward of `request` to `upstream`, one of this route's, on this worker's client,
    /// with the route's timeouts and metrics.
    pub fn forward(
        &self,
        id: Id,
        upstream: &Arc<Upstream>,
        request: Request<Full<Bytes>>,
        holds: Holds,
    ) -> Forward {
        Forward {
            id,
            client: self.client.clone(),
            upstream: upstream.clone(),
            request,
            holds,
            metrics: self.metrics.clone(),
            connect: self.route.connect_timeout,
            wait: self.route.upstream_timeout,
            deadline: self.route.upstream_deadline,
        }
    }
}

/// One loaded config.
pub struct Live {
    /// Aligns `Live` to a cache line, so the `Arc`'s count (written by every request on
    /// every worker) does not share a line with the config every request reads.
    _align: CachePadded<()>,
    pub config: Config,
    routes: Vec<RouteState>,
    by_path: HashMap<String, usize>,
    pub tls: Option<TlsAcceptor>,
}

impl Live {
    /// One `Live` per worker (as many as `default_clients`): the clients and per-route
    /// state. A route that `before` (the config in force) has too keeps its bound on
    /// forwards, which `Shared::swap` resizes. A failure here (a CA bundle that went away
    /// since it was checked) refuses the config like a validation error.
    pub fn for_workers(
        config: Config,
        metrics: &Metrics,
        default_clients: &[Arc<Client>],
        before: Option<&Live>,
    ) -> Result<Vec<Live>, TlsError> {
        let workers = default_clients.len().max(1);
        // What every worker's copy shares, made once.
        let mut shared_routes = Vec::new();
        for route in &config.routes {
            let clients: Vec<Arc<Client>> = match &route.ca_file {
                Some(ca) => crate::forward::client::build_many(Some(ca), workers)?
                    .into_iter()
                    .map(Arc::new)
                    .collect(),
                None => default_clients.to_vec(),
            };
            let metrics = metrics.route(&route.name, route.secrets.len(), !route.enforce);
            let in_flight = before
                .and_then(|before| before.in_flight(&route.name))
                .unwrap_or_else(|| InFlight::new(route.max_in_flight));
            shared_routes.push((clients, metrics, in_flight));
        }
        let tls = config
            .listen
            .tls
            .as_ref()
            .map(|tls| TlsAcceptor::from(tls.server.clone()));
        Ok((0..workers)
            .map(|worker| {
                let mut routes = Vec::new();
                let mut by_path = HashMap::new();
                for (route, (clients, metrics, in_flight)) in
                    config.routes.iter().zip(&shared_routes)
                {
                    by_path.insert(route.path.clone(), routes.len());
                    routes.push(RouteState {
                        metrics: Arc::new(metrics.clone()),
                        client: clients[worker % clients.len()].clone(),
                        forwards: in_flight.permits().clone(),
                        in_flight: in_flight.clone(),
                        // Config validation keeps names to visible ASCII.
                        name_header: HeaderValue::from_str(&route.name)
                            .unwrap_or(HeaderValue::from_static("_invalid")),
                        route: Route {
                            rules: route.rules.for_worker(),
                            // Each worker's own: the recent-deliveries ring keeps a
                            // reference per request.
                            name: Arc::from(&*route.name),
                            ..route.clone()
                        },
                    });
                }
                Live {
                    _align: CachePadded::new(()),
                    config: config.clone(),
                    routes,
                    by_path,
                    tls: tls.clone(),
                }
            })
            .collect())
    }

    /// The route serving `path`.
    pub fn route(&self, path: &str) -> Option<&RouteState> {
        self.by_path
            .get(path)
            .and_then(|&index| self.routes.get(index))
    }

    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// The bound on forwards of the route named `name`.
    fn in_flight(&self, name: &str) -> Option<Arc<InFlight>> {
        let route = self
            .routes
            .iter()
            .find(|route| *route.route.name == *name)?;
        Some(route.in_flight.clone())
    }
}

/// Everything that outlives a config.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub unmatched: RouteMetrics,
    /// Message ids: memory, and Redis with `store = "redis"`; stream appends.
    pub store: Arc<Store>,
    /// Request bodies held right now, against `limits.max_buffered_bytes`.
    pub budget: Arc<Budget>,
    /// Each worker's handle on `budget`.
    budgets: Box<[Arc<WorkerBudget>]>,
    /// Each worker's `Live`, read-locked by its requests: each on cache lines of its own.
    live: Box<[CachePadded<RwLock<Arc<Live>>>]>,
    /// `/readyz`: true once both listeners are bound, false from the first shutdown signal
    /// or as soon as the public listener fails for good.
    pub ready: AtomicBool,
    /// Per worker, the client for routes without their own CA bundle.
    pub default_clients: Vec<Arc<Client>>,
    /// Forwards and Redis writes of a claim's end, which may outlive their request.
    pub tasks: Arc<Tasks>,
    /// The last `admin.recent_deliveries` requests answered, for `/deliveries` and `/`.
    pub deliveries: Deliveries,
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
        let budget = Arc::new(Budget::new(config.limits.max_buffered_bytes, workers));
        let unmatched = metrics.route(UNMATCHED, 0, false);
        let default_clients: Vec<Arc<Client>> = crate::forward::client::build_many(None, workers)?
            .into_iter()
            .map(Arc::new)
            .collect();
        // Whenever there is a [redis] section: a reload may add stream rules.
        let redis = match &config.redis {
            Some(redis) => Some(Arc::new(
                Redis::new(redis, workers, metrics.redis()).map_err(StartError::Redis)?,
            )),
            None => None,
        };
        let tasks = Arc::new(Tasks::new(workers));
        let store = Arc::new(Store::new(
            config.dedup,
            redis,
            metrics.clone(),
            tasks.clone(),
        ));
        let deliveries = Deliveries::new(config.recent_deliveries);
        let lives = Live::for_workers(config, &metrics, &default_clients, None)?;
        Ok(Shared {
            metrics,
            unmatched,
            store,
            budgets: budget.for_workers(),
            budget,
            live: lives
                .into_iter()
                .map(|live| CachePadded::new(RwLock::new(Arc::new(live))))
                .collect(),
            ready: AtomicBool::new(false),
            default_clients,
            tasks,
            deliveries,
        })
    }

    /// Worker `worker`'s way into the body budget.
    pub fn budget(&self, worker: usize) -> &Arc<WorkerBudget> {
        &self.budgets[worker % self.budgets.len()]
    }

    /// Worker threads serving the public listener: one client (pool) each.
    pub fn workers(&self) -> usize {
        self.default_clients.len()
    }

    /// The config in force (worker 0's copy), for what is not a request.
    pub fn live(&self) -> Arc<Live> {
        self.live_at(0)
    }

    /// Worker `worker`'s copy of the config in force; a request holds on to it until it
    /// is answered.
    pub fn live_at(&self, worker: usize) -> Arc<Live> {
        self.live[worker % self.live.len()]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One `Live` per worker for `config`, its routes keeping their bounds on forwards
    /// from the config in force.
    pub fn lives_for(&self, config: Config) -> Result<Vec<Live>, TlsError> {
        let before = self.live();
        Live::for_workers(config, &self.metrics, &self.default_clients, Some(&before))
    }

    /// Puts a new config in force (one `Live` per worker); dedup memory carries over, and
    /// each route's bound on forwards, resized to its `max_in_flight` (on the runtime:
    /// lowering one may start a task), and the recent deliveries, resized to
    /// `admin.recent_deliveries` (the newest kept).
    pub fn swap(&self, lives: Vec<Live>) {
        let Some(first) = lives.first() else {
            return;
        };
        self.budget.set_max(first.config.limits.max_buffered_bytes);
        self.store.reconfigure(first.config.dedup);
        self.deliveries.resize(first.config.recent_deliveries);
        for route in &first.routes {
            route.in_flight.resize(route.route.max_in_flight);
        }
        for (slot, live) in self.live.iter().zip(lives) {
            *slot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Decision;
    use std::path::Path;

    fn config(max_buffered_bytes: u64) -> Config {
        let text = format!(
            "[limits]\nworkers = 2\nmax_buffered_bytes = {max_buffered_bytes}\n\
             [[routes]]\nname = \"r\"\npath = \"/hook\"\n\
             secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n\
             upstream = \"http://127.0.0.1:9/x\"\n"
        );
        Config::parse(&text, Path::new("test.toml"), &[]).unwrap()
    }

    /// Each worker's copy has its own client, metric handles and upstreams (what a
    /// request writes stays on its worker), and shares the bound of `max_in_flight`.
    #[test]
    fn each_worker_has_its_own_copy_sharing_only_the_bounds() {
        let shared = Shared::new(config(4_000_000)).unwrap();
        assert_eq!(shared.workers(), 2);
        let (a, b) = (shared.live_at(0), shared.live_at(1));
        let (ra, rb) = (a.route("/hook").unwrap(), b.route("/hook").unwrap());
        assert!(a.route("/other").is_none());
        assert!(
            Arc::ptr_eq(&ra.forwards, &rb.forwards),
            "one max_in_flight bound"
        );
        assert!(!Arc::ptr_eq(&ra.client, &rb.client));
        assert!(!Arc::ptr_eq(&ra.metrics, &rb.metrics));
        let (Decision::Forward(ua), Decision::Forward(ub)) =
            (ra.route.rules.decide("x"), rb.route.rules.decide("x"))
        else {
            panic!("both forward")
        };
        assert_eq!(ua, ub);
        assert!(!Arc::ptr_eq(ua, ub));
        assert_eq!(ra.name_header, "r");
        assert!(!Arc::ptr_eq(shared.budget(0), shared.budget(1)));
    }

    /// A reload puts the new config in force for every worker, with its body budget; the
    /// ids remembered, the bodies held and each route's bound on forwards carry over.
    #[tokio::test]
    async fn a_swap_keeps_what_outlives_a_config() {
        let shared = Shared::new(config(4_000_000)).unwrap();
        let id = crate::store::Id::new("r", "msg_1");
        let unused = prometheus::IntCounter::new("unused", "unused").unwrap();
        let on_error = crate::config::OnStoreError::Refuse;
        let mut claim = shared
            .store
            .claim(0, &id, on_error, &unused)
            .await
            .unwrap()
            .unwrap();
        claim.delivered();
        let mut room = shared.budget(1).room();
        assert!(room.grow(3_000_000));

        let bound = shared.live_at(1).route("/hook").unwrap().forwards.clone();
        shared.swap(shared.lives_for(config(2_000_000)).unwrap());
        assert!(
            Arc::ptr_eq(&shared.live_at(1).route("/hook").unwrap().forwards, &bound),
            "the route keeps its bound on forwards"
        );
        assert_eq!(shared.live_at(1).limits().max_buffered_bytes, 2_000_000);
        assert_eq!(shared.budget.held(), 3_000_000, "held bodies carry over");
        assert!(
            !shared.budget(0).room().grow(1),
            "the new bound applies to new room"
        );
        drop(room);
        let seen = shared
            .store
            .lookup(0, &id, on_error, &unused)
            .await
            .unwrap();
        assert_eq!(seen, crate::dedup::Seen::Delivered);
    }
}
