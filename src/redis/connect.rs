//! One link to Redis, in each mode of `[redis]`: a `url`'s primary, the primary the
//! sentinels name (`sentinel.rs`), or a Redis Cluster (redis-rs's cluster client, which
//! follows MOVED / ASK and refreshes its slots). `Conn` is the link whatever the mode: the
//! commands (`commands.rs`, and any new one) run on it through `Redis::run` and never ask
//! which mode they are in.

use std::time::Duration;

use prometheus::IntCounter;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, RedisResult, TlsCertificates, Value,
};

use super::error::StoreError;
use super::node::{client, Node};
use super::promotions;
use super::sentinel::Sentinel;
use crate::config::{NodeAddr, RedisConfig, RedisMode};

/// A cluster command is tried again this often after a redirect or a node's failure
/// (within `redis.timeout` in all), waiting 10 to 100 ms between tries: enough for a
/// MOVED after a failover, not so many that a request waits on a shard that is down.
const CLUSTER_RETRIES: u32 = 3;
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 10;
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 100;

/// A link: one node's multiplexed connection (`url`, `sentinels`) or a cluster's.
#[derive(Clone)]
pub enum Conn {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// What makes links, per mode.
pub(super) enum Connector {
    Url(Client),
    Sentinel(Sentinel),
    Cluster {
        /// Boxed: it is twice the others' size.
        client: Box<ClusterClient>,
        /// The seed nodes, each on its own, for `hookwall check` and the promotions'
        /// count (`promotions.rs`).
        seeds: Vec<(NodeAddr, Client)>,
        primary_changes: IntCounter,
    },
}

impl Connector {
    /// `primary_changes`: counted when the sentinels name a new primary, or when a
    /// cluster's replica takes over slots.
    pub(super) fn new(config: &RedisConfig, primary_changes: IntCounter) -> RedisResult<Self> {
        let ca = config.ca_file.as_ref().map(|(_, pem)| pem.clone());
        let node = Node::new(
            config.username.clone(),
            config.password.as_ref().map(|p| p.value.clone()),
            config.tls,
            ca.clone(),
        );
        Ok(match &config.mode {
            RedisMode::Url { url, .. } => match &config.ca_file {
                Some((_, pem)) => Connector::Url(Client::build_with_tls(
                    url.as_str(),
                    TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.clone()),
                    },
                )?),
                None => Connector::Url(Client::open(url.as_str())?),
            },
            RedisMode::Sentinel { sentinels, master } => {
                let sentinel_node = Node::new(
                    None,
                    config.sentinel_password.as_ref().map(|p| p.value.clone()),
                    config.tls,
                    ca,
                );
                Connector::Sentinel(Sentinel::new(
                    sentinels,
                    master,
                    &sentinel_node,
                    node,
                    primary_changes,
                    config.timeout,
                )?)
            }
            RedisMode::Cluster { nodes } => Connector::Cluster {
                client: Box::new(cluster_client(nodes, &node, config.timeout)?),
                seeds: nodes
                    .iter()
                    .map(|addr| Ok((addr.clone(), client(addr, &node)?)))
                    .collect::<RedisResult<_>>()?,
                primary_changes,
            },
        })
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Connector::Cluster { .. })
    }

    /// The links' generation now (sentinels: raised by a failover; otherwise always 0).
    pub(super) fn generation(&self) -> u64 {
        match self {
            Connector::Sentinel(sentinel) => sentinel.generation(),
            _ => 0,
        }
    }

    /// Whether a link made in `generation` may no longer be used (sentinels: a failover
    /// runs or has named another primary since).
    pub(super) fn stale(&self, generation: u64) -> bool {
        match self {
            Connector::Sentinel(sentinel) => sentinel.stale(generation),
            _ => false,
        }
    }

    /// Sentinels: asks them for as long as the process runs (`Sentinel::watch`); a
    /// cluster: asks its seeds, to count promotions (`promotions::watch`); `url`: returns
    /// at once.
    pub(super) async fn watch(&self, timeout: Duration) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout(timeout)))
            .set_response_timeout(Some(timeout));
        match self {
            Connector::Url(_) => {}
            Connector::Sentinel(sentinel) => sentinel.watch(config).await,
            Connector::Cluster {
                seeds,
                primary_changes,
                ..
            } => promotions::watch(seeds, config, primary_changes.clone()).await,
        }
    }

    /// A new link that has written `probe_key` (a replica, READONLY, fails here), each
    /// step within `timeout` (connecting within `connect_timeout`).
    pub(super) async fn connect(
        &self,
        timeout: Duration,
        probe_key: &str,
    ) -> Result<Conn, StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout(timeout)))
            .set_response_timeout(Some(timeout));
        let mut conn = match self {
            Connector::Url(client) => Conn::Node(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(StoreError::Connect)?,
            ),
            Connector::Sentinel(sentinel) => Conn::Node(sentinel.connect(&config).await?),
            Connector::Cluster { client, .. } => Conn::Cluster(
                client
                    .get_async_connection()
                    .await
                    .map_err(StoreError::Connect)?,
            ),
        };
        redis::cmd("SET")
            .arg(probe_key)
            .arg(1)
            .arg("PX")
            .arg(1000)
            .query_async::<()>(&mut conn)
            .await
            .map_err(StoreError::Command)?;
        Ok(conn)
    }

    /// How long making a link may take in all: a sentinel's answer, then the primary's.
    pub(super) fn connect_bound(&self, timeout: Duration) -> Duration {
        match self {
            Connector::Sentinel(_) => connect_timeout(timeout) * 3,
            _ => connect_timeout(timeout) * 2,
        }
    }

    /// Each sentinel or seed node on its own, for `hookwall check`: whether it answers
    /// PING now.
    pub(super) async fn ping_each(
        &self,
        timeout: Duration,
    ) -> Vec<(String, Result<(), StoreError>)> {
        let nodes: &[(NodeAddr, Client)] = match self {
            Connector::Url(_) => &[],
            Connector::Sentinel(sentinel) => sentinel.clients(),
            Connector::Cluster { seeds, .. } => seeds,
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout(timeout)))
            .set_response_timeout(Some(timeout));
        let mut answers = Vec::with_capacity(nodes.len());
        for (addr, client) in nodes {
            let ping = async {
                let mut conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(StoreError::Connect)?;
                redis::cmd("PING")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(StoreError::Command)
            };
            let bound = connect_timeout(timeout) * 2;
            let answer = tokio::time::timeout(bound, ping)
                .await
                .unwrap_or(Err(StoreError::Timeout(bound)));
            answers.push((addr.to_string(), answer));
        }
        answers
    }
}

/// Connecting (TCP, TLS, AUTH) may take longer than a command: at least a second.
fn connect_timeout(timeout: Duration) -> Duration {
    timeout.max(Duration::from_secs(1))
}

/// A cluster client: each command within `timeout` in all, retries included.
fn cluster_client(
    nodes: &[NodeAddr],
    node: &Node,
    timeout: Duration,
) -> RedisResult<ClusterClient> {
    let seeds = nodes
        .iter()
        .map(|addr| node.info(addr))
        .collect::<RedisResult<Vec<_>>>()?;
    let mut builder = ClusterClient::builder(seeds)
        .connection_timeout(connect_timeout(timeout))
        .response_timeout(timeout)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
        .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS);
    if let Some(username) = node.username() {
        builder = builder.username(username);
    }
    if let Some(password) = node.password() {
        builder = builder.password(password);
    }
    if node.tls() {
        builder = builder.tls(redis::TlsMode::Secure);
    }
    if let Some(certs) = node.certs() {
        builder = builder.certs(certs);
    }
    builder.build()
}
