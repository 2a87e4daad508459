//! Why Redis, the shared store, gave no answer: `StoreError`, which the store returns and
//! the request path turns into `store_unavailable`, and `connection_lost`, which tells a
//! broken connection from a refused command. A leaf: `store`, `outcome` and the rest of
//! `redis/` name these without importing one another.

use std::time::Duration;

/// Why the store gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis is unreachable (reconnecting in the background)")]
    Down,
    #[error("Redis did not answer within redis.timeout ({0:?})")]
    Timeout(Duration),
    #[error("cannot connect to Redis")]
    Connect(#[source] redis::RedisError),
    #[error("Redis refused the command")]
    Command(#[source] redis::RedisError),
    /// `sentinels`: none of them named a primary for `master` (none answered, or none
    /// knows the name).
    #[error("no sentinel named a primary for {master:?}")]
    NoPrimary {
        master: String,
        #[source]
        source: Option<redis::RedisError>,
    },
    /// `sentinels`: a failover runs; no primary is used until it ends.
    #[error("the sentinels fail {master:?} over: waiting for the new primary")]
    FailoverUnderWay { master: String },
    /// `sentinels`: the node they named is not a primary (yet): never written to.
    #[error("{addr}, named by the sentinels, says ROLE {role}, not master")]
    NotPrimary { addr: String, role: String },
    /// The key holds something hookwall never writes (another program's key, or a
    /// `key_prefix` shared with one).
    #[error("the dedup key holds a value that is neither \"i:…\" nor \"d:…\"")]
    ForeignValue,
}

impl StoreError {
    /// Whether the same command may succeed once the connection is back: Redis was
    /// unreachable, slow, or the connection broke (READONLY included). A command Redis
    /// refused for what it is would be refused again.
    pub fn may_pass_later(&self) -> bool {
        match self {
            StoreError::Down
            | StoreError::Timeout(_)
            | StoreError::Connect(_)
            | StoreError::NoPrimary { .. }
            | StoreError::FailoverUnderWay { .. }
            | StoreError::NotPrimary { .. } => true,
            StoreError::Command(err) => connection_lost(err),
            StoreError::ForeignValue => false,
        }
    }

    /// Whether the command certainly never reached Redis (so nothing of it needs undoing).
    pub fn never_sent(&self) -> bool {
        matches!(self, StoreError::Down)
    }
}

/// Errors after which the link cannot be trusted: gone, the server turned into a
/// read-only replica, a primary that lost its replicas (`min-replicas-to-write`: it is
/// being replaced), or a cluster without a primary for the slot (a failover under way).
/// After one the primary is found again: asked of the sentinels, or the cluster's slots
/// read again.
pub fn connection_lost(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_unrecoverable_error()
        || matches!(
            err.code(),
            Some("READONLY" | "NOREPLICAS" | "MASTERDOWN" | "CLUSTERDOWN" | "TRYAGAIN" | "LOADING")
        )
}
