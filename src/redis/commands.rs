//! The dedup protocol's commands on `{prefix}:dedup:{route}:{id}` (values `i:<token>` in
//! flight, `d:<token>` delivered): claim (`SET NX PX GET`), renew and release (Lua
//! compare-and-…, so only this attempt's value is touched), deliver (`SET PX ttl`), lookup
//! (`GET`); an operator's forget (`FORGET`: deletes a delivered mark, never a claim); and
//! stream appends (`XADD`, or with the claim in one script, `APPEND_ONCE`).

use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::error::StoreError;
use super::Redis;
use crate::dedup::{Seen, Taken};
use crate::labels::RedisOp;
use crate::stream::Entry;

/// Deletes KEYS[1] only if it still holds ARGV[1].
const RELEASE: &str =
    r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// Extends KEYS[1]'s lease to ARGV[2] ms only if it still holds ARGV[1].
const RENEW: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";

/// Deletes KEYS[1] only if it holds a delivered mark, in one step (a claim written between
/// a GET and a DEL is never deleted). Returns 1 deleted, 0 no key, 2 a claim (in flight),
/// 3 a value hookwall never writes.
const FORGET: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local kind = string.sub(value, 1, 2)
if kind == 'd:' then redis.call('DEL', KEYS[1]) return 1 end
if kind == 'i:' then return 2 end
return 3
";

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

/// The Lua scripts, loaded by their hash once per connection.
pub(super) struct Scripts {
    release: Script,
    renew: Script,
    append_once: Script,
    forget: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            release: Script::new(RELEASE),
            renew: Script::new(RENEW),
            append_once: Script::new(APPEND_ONCE),
            forget: Script::new(FORGET),
        }
    }
}

impl Redis {
    pub async fn claim(
        self: &Arc<Self>,
        worker: usize,
        key: &str,
        token: &str,
    ) -> Result<Result<(), Taken>, StoreError> {
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
            None => Ok(Ok(())),
            Some(old) => taken(old).map(Err),
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
            .run(worker, RedisOp::Renew, |mut conn| async move {
                self.scripts
                    .renew
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
            self.scripts
                .release
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
            Some(value) => Ok(match taken(value)? {
                Taken::Delivering => Seen::Delivering,
                Taken::Delivered => Seen::Delivered,
            }),
        }
    }

    /// An operator's forget of `key`: what it held (`Delivered` if the mark was deleted;
    /// a claim in flight is left alone).
    pub async fn forget(self: &Arc<Self>, worker: usize, key: &str) -> Result<Seen, StoreError> {
        let held: i64 = self
            .run(worker, RedisOp::Forget, |mut conn| async move {
                self.scripts.forget.key(key).invoke_async(&mut conn).await
            })
            .await?;
        match held {
            0 => Ok(Seen::New),
            1 => Ok(Seen::Delivered),
            2 => Ok(Seen::Delivering),
            _ => Err(StoreError::ForeignValue),
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
    ) -> Result<Result<String, Taken>, StoreError> {
        let ttl = ttl.as_millis() as u64;
        let max_len = self.stream_max_len;
        let (appended, value): (i64, String) = self
            .run(worker, RedisOp::Append, |mut conn| async move {
                let mut call = self.scripts.append_once.key(key);
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
            taken(value).map(Err)
        }
    }
}

/// What a stored value says: `i:` in flight, `d:` delivered.
fn taken(value: String) -> Result<Taken, StoreError> {
    if value.starts_with("d:") {
        Ok(Taken::Delivered)
    } else if value.starts_with("i:") {
        Ok(Taken::Delivering)
    } else {
        Err(StoreError::ForeignValue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_say_what_is_known() {
        assert_eq!(taken("d:abc".into()).unwrap(), Taken::Delivered);
        assert_eq!(taken("i:abc".into()).unwrap(), Taken::Delivering);
        assert!(taken("x".into()).is_err());
    }
}
