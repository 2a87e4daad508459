//! Cluster mode's count of promotions for `hookwall_redis_primary_changes_total`: the seed
//! nodes asked `CLUSTER SLOTS` every second (the first that answers, on connections of
//! its own); a node that serves slots as a primary now and was a replica in the previous
//! answer is a replica that took over. Slots moved between primaries (a reshard) and
//! nodes added count nothing. A leaf of `redis/`: redis-rs's cluster client follows the
//! slots by itself, this only counts.

use std::collections::HashSet;
use std::time::Duration;

use prometheus::IntCounter;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};

use crate::config::NodeAddr;

const ASK_EVERY: Duration = Duration::from_secs(1);

/// The nodes that serve slots as primaries, and those listed as their replicas.
#[derive(Default, Debug, PartialEq)]
struct Roles {
    primaries: HashSet<String>,
    replicas: HashSet<String>,
}

impl Roles {
    /// The primaries of `self` that were replicas in `before`.
    fn promoted_since(&self, before: &Roles) -> u64 {
        self.primaries.intersection(&before.replicas).count() as u64
    }
}

/// Asks the seeds for as long as the process runs; counts each promotion once.
pub(super) async fn watch(
    seeds: &[(NodeAddr, Client)],
    config: AsyncConnectionConfig,
    primary_changes: IntCounter,
) {
    let mut conns: Vec<Option<MultiplexedConnection>> = vec![None; seeds.len()];
    let mut last: Option<Roles> = None;
    let mut tick = tokio::time::interval(ASK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Always the first seed that answers: one node's view after another's.
        for ((_, client), conn) in seeds.iter().zip(conns.iter_mut()) {
            if let Some(roles) = ask(client, conn, &config).await {
                if let Some(before) = &last {
                    let promoted = roles.promoted_since(before);
                    if promoted > 0 {
                        primary_changes.inc_by(promoted);
                        tracing::info!(promoted, "Redis Cluster: a replica took over slots");
                    }
                }
                last = Some(roles);
                break;
            }
        }
    }
}

/// One seed's `CLUSTER SLOTS` read as roles; `None` (and its connection dropped) on any
/// failure.
async fn ask(
    client: &Client,
    conn: &mut Option<MultiplexedConnection>,
    config: &AsyncConnectionConfig,
) -> Option<Roles> {
    if conn.is_none() {
        *conn = client
            .get_multiplexed_async_connection_with_config(config)
            .await
            .ok();
    }
    let answer = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async::<Value>(conn.as_mut()?)
        .await;
    let roles = answer.ok().as_ref().and_then(roles);
    if roles.is_none() {
        *conn = None;
    }
    roles
}

/// `CLUSTER SLOTS`: each range `[from, to, primary, replica…]`, each node `[host, port,
/// id, …]`; a node named by its id (by `host:port` if the id is missing).
fn roles(answer: &Value) -> Option<Roles> {
    let Value::Array(ranges) = answer else {
        return None;
    };
    let mut roles = Roles::default();
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        for (i, node) in fields.iter().enumerate().skip(2) {
            let name = node_name(node)?;
            match i {
                2 => roles.primaries.insert(name),
                _ => roles.replicas.insert(name),
            };
        }
    }
    Some(roles)
}

fn node_name(node: &Value) -> Option<String> {
    let Value::Array(fields) = node else {
        return None;
    };
    match (fields.first(), fields.get(1), fields.get(2)) {
        (_, _, Some(Value::BulkString(id))) => Some(String::from_utf8_lossy(id).into_owned()),
        (Some(Value::BulkString(host)), Some(Value::Int(port)), _) => {
            Some(format!("{}:{port}", String::from_utf8_lossy(host)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: i64, id: &str) -> Value {
        Value::Array(vec![
            Value::BulkString(b"127.0.0.1".to_vec()),
            Value::Int(port),
            Value::BulkString(id.as_bytes().to_vec()),
        ])
    }

    fn range(from: i64, to: i64, nodes: Vec<Value>) -> Value {
        Value::Array([vec![Value::Int(from), Value::Int(to)], nodes].concat())
    }

    #[test]
    fn a_replica_that_serves_slots_now_is_one_promotion_and_a_reshard_is_none() {
        let before = roles(&Value::Array(vec![
            range(0, 8191, vec![node(1, "a"), node(3, "c")]),
            range(8192, 16383, vec![node(2, "b"), node(4, "d")]),
        ]))
        .unwrap();
        // `a` killed: its replica `c` serves its slots.
        let failover = roles(&Value::Array(vec![
            range(0, 8191, vec![node(3, "c")]),
            range(8192, 16383, vec![node(2, "b"), node(4, "d")]),
        ]))
        .unwrap();
        assert_eq!(failover.promoted_since(&before), 1);
        assert_eq!(failover.promoted_since(&failover), 0);
        // Slots moved from `a` to `b`: no replica promoted.
        let reshard = roles(&Value::Array(vec![
            range(0, 4095, vec![node(1, "a"), node(3, "c")]),
            range(4096, 16383, vec![node(2, "b"), node(4, "d")]),
        ]))
        .unwrap();
        assert_eq!(reshard.promoted_since(&before), 0);
        assert_eq!(roles(&Value::Int(1)), None);
    }
}
