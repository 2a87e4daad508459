//! Sentinel discovery: the primary is asked of the sentinels whenever a link is made (the
//! link is made again after a READONLY answer, a refused write, a timeout or a dropped
//! connection), so hookwall follows a failover within a reconnection's backoff of the
//! promotion. The sentinels are asked together and the answer with the highest
//! `config-epoch` among a majority wins (a sentinel that has not heard of the last failover
//! yet names the old primary with an older epoch); the node named must then say `ROLE`
//! master before anything is written to it, so a replica is never written.
//!
//! A planned failover (`SENTINEL FAILOVER`) refuses no write on the old primary: it goes
//! on taking writes (and replicating them to the replicas not yet moved) until Sentinel
//! reconfigures it, and those writes are lost. So one task per process (`watch`) asks the
//! sentinels ten times a second: while one says `failover_in_progress`, or once they name
//! another primary, every link is made again (each on its own worker, at its next
//! command), and none is made while the failover runs. What is written in between is
//! refused (503), never lost.
//!
//! Ours rather than redis-rs's `sentinel` client: that one resolves once per client and
//! hides which sentinel said what; here every reconnection asks again and a new primary
//! is counted (`hookwall_redis_primary_changes_total`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};

use super::error::StoreError;
use super::node::{client, Node};
use crate::config::NodeAddr;

pub(super) struct Sentinel {
    /// One client per sentinel (with `sentinel_password`, and TLS as configured).
    sentinels: Vec<(NodeAddr, Client)>,
    master: Arc<str>,
    /// How the primary is reached once named (user, password, TLS).
    node: Node,
    /// The primary last found, and the epoch it was named in.
    known: Mutex<Option<(u64, NodeAddr)>>,
    changes: IntCounter,
    /// Set by `watch` while a failover runs: no link is made, none is used.
    fenced: AtomicBool,
    /// Raised by `watch` when a failover starts or another primary is named: links made
    /// before are stale.
    generation: AtomicU64,
    /// How long `ask` waits for the other sentinels once a majority answered
    /// (`redis.timeout`).
    grace: Duration,
}

/// How often `watch` asks the sentinels: a failover's first step comes a sentinel timer
/// tick (100 ms) before the promotion.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// A failover that runs longer than this no longer fences the old primary off: an aborted
/// one keeps its flag until `failover-timeout` (minutes), and the old primary still serves.
const FENCE_AT_MOST: Duration = Duration::from_secs(10);

impl Sentinel {
    pub(super) fn new(
        sentinels: &[NodeAddr],
        master: &str,
        sentinel_node: &Node,
        node: Node,
        changes: IntCounter,
        grace: Duration,
    ) -> Result<Sentinel, redis::RedisError> {
        Ok(Sentinel {
            sentinels: sentinels
                .iter()
                .map(|addr| Ok((addr.clone(), client(addr, sentinel_node)?)))
                .collect::<Result<_, redis::RedisError>>()?,
            master: master.into(),
            node,
            known: Mutex::new(None),
            changes,
            fenced: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            grace,
        })
    }

    /// The links' generation now (a link made in an older one is stale).
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a link made in `generation` may no longer be used.
    pub(super) fn stale(&self, generation: u64) -> bool {
        self.fenced.load(Ordering::Acquire) || self.generation() != generation
    }

    /// Asks the sentinels every `WATCH_EVERY`, on connections of its own, for as long as
    /// the process runs: fences links off while a failover runs, and makes them stale
    /// when another primary is named.
    pub(super) async fn watch(&self, config: AsyncConnectionConfig) {
        let mut conns: Vec<Option<MultiplexedConnection>> = vec![None; self.sentinels.len()];
        let mut named: Option<NodeAddr> = None;
        let mut fence_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (mut in_progress, mut best) = (false, None::<(u64, NodeAddr)>);
            for ((_, client), conn) in self.sentinels.iter().zip(conns.iter_mut()) {
                let Some(fields) = self.ask_one(client, conn, &config).await else {
                    continue;
                };
                in_progress |= fields
                    .get("flags")
                    .is_some_and(|flags| flags.contains("failover_in_progress"));
                if let Some(answer) = primary_of(&fields) {
                    if best.as_ref().is_none_or(|(epoch, _)| answer.0 > *epoch) {
                        best = Some(answer);
                    }
                }
            }
            let fence = in_progress
                && fence_since.get_or_insert_with(Instant::now).elapsed() < FENCE_AT_MOST;
            if !in_progress {
                fence_since = None;
            }
            let moved = match (&named, &best) {
                (Some(was), Some((_, now))) => was != now,
                _ => false,
            };
            if (fence && !self.fenced.load(Ordering::Acquire)) || (moved && !fence) {
                self.generation.fetch_add(1, Ordering::AcqRel);
                tracing::info!(
                    master = &*self.master,
                    failover_in_progress = fence,
                    "Redis: the sentinels report a failover; links are made again"
                );
            }
            self.fenced.store(fence, Ordering::Release);
            if !fence {
                if let Some((_, now)) = best {
                    named = Some(now);
                }
            }
        }
    }

    /// One sentinel's `SENTINEL MASTER`, on `conn` (made again after an error).
    async fn ask_one(
        &self,
        client: &Client,
        conn: &mut Option<MultiplexedConnection>,
        config: &AsyncConnectionConfig,
    ) -> Option<HashMap<String, String>> {
        if conn.is_none() {
            *conn = client
                .get_multiplexed_async_connection_with_config(config)
                .await
                .ok();
        }
        let answer = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(&*self.master)
            .query_async::<HashMap<String, String>>(conn.as_mut()?)
            .await;
        if answer.is_err() {
            *conn = None;
        }
        answer.ok()
    }

    /// A connection to the primary the sentinels name now, checked to be one.
    pub(super) async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, StoreError> {
        if self.fenced.load(Ordering::Acquire) {
            return Err(StoreError::FailoverUnderWay {
                master: self.master.to_string(),
            });
        }
        let (epoch, primary) = self.ask(config).await?;
        let mut conn = client(&primary, &self.node)
            .map_err(StoreError::Connect)?
            .get_multiplexed_async_connection_with_config(config)
            .await
            .map_err(StoreError::Connect)?;
        let role: Vec<Value> = redis::cmd("ROLE")
            .query_async(&mut conn)
            .await
            .map_err(StoreError::Command)?;
        let role = match role.first() {
            Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Some(Value::SimpleString(text)) => text.clone(),
            _ => String::from("(none)"),
        };
        if role != "master" {
            return Err(StoreError::NotPrimary {
                addr: primary.to_string(),
                role,
            });
        }
        self.found(epoch, primary);
        Ok(conn)
    }

    /// The primary named with the highest epoch by the sentinels that answer, each asked
    /// at once: all of them, or a majority and those that answer within `timeout` more
    /// (a sentinel that has not heard of the last failover names the old primary).
    async fn ask(&self, config: &AsyncConnectionConfig) -> Result<(u64, NodeAddr), StoreError> {
        let mut asking = tokio::task::JoinSet::new();
        for (_, sentinel) in &self.sentinels {
            let (sentinel, master, config) =
                (sentinel.clone(), self.master.clone(), config.clone());
            asking.spawn(async move {
                let mut conn = sentinel
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                redis::cmd("SENTINEL")
                    .arg("MASTER")
                    .arg(&*master)
                    .query_async::<HashMap<String, String>>(&mut conn)
                    .await
            });
        }
        let majority = self.sentinels.len() / 2 + 1;
        let (mut answers, mut best, mut last_error) = (0, None, None);
        let mut grace = None;
        loop {
            let next = match grace {
                None => asking.join_next().await,
                Some(until) => match tokio::time::timeout_at(until, asking.join_next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            let Some(answer) = next else { break };
            match answer {
                Ok(Ok(fields)) => {
                    if let Some(named) = primary_of(&fields) {
                        answers += 1;
                        if best.as_ref().is_none_or(|(epoch, _)| named.0 > *epoch) {
                            best = Some(named);
                        }
                    }
                }
                Ok(Err(err)) => last_error = Some(err),
                Err(_) => {}
            }
            if answers >= majority && grace.is_none() {
                grace = Some(tokio::time::Instant::now() + self.grace);
            }
        }
        best.ok_or_else(|| StoreError::NoPrimary {
            master: self.master.to_string(),
            source: last_error,
        })
    }

    /// Counts a primary other than the last one found, unless a sentinel that had not
    /// heard of a later failover named it.
    fn found(&self, epoch: u64, primary: NodeAddr) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match &*known {
            Some((_, addr)) if *addr == primary => {}
            Some((was, _)) if epoch < *was => return,
            Some((_, addr)) => {
                self.changes.inc();
                tracing::warn!(
                    master = &*self.master,
                    was = %addr,
                    now = %primary,
                    epoch,
                    "Redis: the sentinels name a new primary"
                );
            }
            None => {}
        }
        let epoch = known.as_ref().map_or(epoch, |(was, _)| epoch.max(*was));
        *known = Some((epoch, primary));
    }

    /// The sentinels, for `hookwall check`.
    pub(super) fn clients(&self) -> &[(NodeAddr, Client)] {
        &self.sentinels
    }
}

/// `ip`, `port` and `config-epoch` of a `SENTINEL MASTER` answer.
fn primary_of(fields: &HashMap<String, String>) -> Option<(u64, NodeAddr)> {
    let host = fields.get("ip")?.clone();
    let port = fields.get("port")?.parse().ok()?;
    let epoch = fields
        .get("config-epoch")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    Some((epoch, NodeAddr { host, port }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel() -> Sentinel {
        let node = Node::default();
        let changes = IntCounter::new("changes", "changes").unwrap();
        let grace = Duration::from_millis(250);
        Sentinel::new(&[], "mymaster", &node, node.clone(), changes, grace).unwrap()
    }

    fn addr(port: u16) -> NodeAddr {
        NodeAddr {
            host: "10.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn a_new_primary_counts_once_and_a_stale_answer_not_at_all() {
        let s = sentinel();
        s.found(1, addr(6379));
        assert_eq!(s.changes.get(), 0, "the first one found is no change");
        s.found(1, addr(6379));
        s.found(2, addr(6380));
        assert_eq!(s.changes.get(), 1);
        // A sentinel that missed the failover names the old one with the old epoch.
        s.found(1, addr(6379));
        s.found(2, addr(6380));
        assert_eq!(s.changes.get(), 1);
        s.found(3, addr(6379));
        assert_eq!(s.changes.get(), 2);
    }

    #[test]
    fn an_answer_names_host_port_and_epoch() {
        let fields: HashMap<String, String> = [
            ("name", "mymaster"),
            ("ip", "10.0.0.1"),
            ("port", "6380"),
            ("config-epoch", "4"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(primary_of(&fields), Some((4, addr(6380))));
        assert_eq!(primary_of(&HashMap::new()), None);
    }
}
