//! Where an id lives in Redis. A leaf (it imports nothing of this crate): the store names
//! keys with it, and config checks with it that a cluster's stream rules can work.
//!
//! With `url` and `sentinels` a key is `{prefix}:dedup:{route}:{id}`, exactly as before
//! Sentinel and Cluster existed, so a deployment keeps its memory across the upgrade.
//! In a Redis Cluster a Lua script may only touch keys of one hash slot; a stream rule's
//! append is one script over the dedup key and the stream. So there the route is the
//! keys' hash tag, `{prefix}:dedup:{{route}}:{id}` (the braces literal), and a stream with
//! the same tag (`{billing}:events`) shares its slot. The cost: one route's ids live on
//! one shard (as its stream does anyway).

use redis::cluster_routing::Slot;

/// The dedup key of `id` on `route`; `cluster`: tagged with the route.
pub fn dedup_key(prefix: &str, cluster: bool, route: &str, id: &str) -> String {
    if cluster {
        format!("{prefix}:dedup:{{{route}}}:{id}")
    } else {
        format!("{prefix}:dedup:{route}:{id}")
    }
}

/// The cluster hash slot of `key` (CRC16 of its hash tag, or of the whole key).
pub fn slot(key: &str) -> Slot {
    Slot::for_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_keys_are_unchanged_and_cluster_keys_carry_the_route_as_hash_tag() {
        assert_eq!(
            dedup_key("hookwall", false, "clerk", "msg_1"),
            "hookwall:dedup:clerk:msg_1"
        );
        let tagged = dedup_key("hookwall", true, "billing", "msg_1");
        assert_eq!(tagged, "hookwall:dedup:{billing}:msg_1");
        // Every id of the route, and a stream named with its tag, share one slot; an id
        // holding braces of its own cannot move its key.
        for other in ["msg_2", "{x}", "a}b{c}"] {
            assert_eq!(
                slot(&dedup_key("hookwall", true, "billing", other)),
                slot(&tagged)
            );
        }
        assert_eq!(slot("{billing}:events"), slot(&tagged));
        assert_ne!(slot("billing-events"), slot(&tagged));
    }
}
