//! Lease renewal: while a forward runs, its claim's lease is renewed by one task per
//! worker (no task or timer per forward), so a replica that dies frees the id within one
//! lease and a slow but live forward keeps it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::Redis;
use crate::chain::chain;

/// The claims whose forwards run on one worker, renewed together.
#[derive(Default)]
pub(super) struct Renewals(Mutex<Held>);

#[derive(Default)]
struct Held {
    next: u64,
    claims: HashMap<u64, Renewed>,
}

struct Renewed {
    key: Arc<str>,
    token: Arc<str>,
    since: Instant,
}

impl Renewals {
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Redis {
    /// Renews the claim `key` = `token` while its forward runs, until `stop_renewing(worker,
    /// returned)`. Registering is a map insert on this worker's own lock.
    pub fn keep_renewing(&self, worker: usize, key: Arc<str>, token: Arc<str>) -> u64 {
        let mut held = self.link(worker).renewals.lock();
        let id = held.next;
        held.next += 1;
        let since = Instant::now();
        held.claims.insert(id, Renewed { key, token, since });
        id
    }

    /// Whether the claim was still renewed (false once its forward ended, or the claim was
    /// found gone).
    pub fn stop_renewing(&self, worker: usize, renewal: u64) -> bool {
        self.link(worker)
            .renewals
            .lock()
            .claims
            .remove(&renewal)
            .is_some()
    }

    /// Every third of the lease, renews the claims held on worker `worker` for at least
    /// that long (most forwards end well before: they cost nothing here). A claim found
    /// gone (Redis lost it, or it expired while Redis stalled) is renewed no more, and
    /// said once (unless its forward ended while the renewal was on its way).
    pub(super) async fn renew_leases(self: Arc<Self>, worker: usize) {
        let every = self.lease() / 3;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let due: Vec<(u64, Arc<str>, Arc<str>)> = self
                .link(worker)
                .renewals
                .lock()
                .claims
                .iter()
                .filter(|(_, claim)| claim.since.elapsed() >= every)
                .map(|(id, claim)| (*id, claim.key.clone(), claim.token.clone()))
                .collect();
            let mut renewing = tokio::task::JoinSet::new();
            for (id, key, token) in due {
                let this = self.clone();
                renewing.spawn(async move {
                    match this.renew(worker, &key, &token).await {
                        Ok(true) => {}
                        // The claim no longer holds this attempt's value. Its forward may
                        // have ended since the claim was collected: delivered (the value
                        // replaced) or released (deleted). Those ends stop renewing before
                        // they are sent to Redis, so only a claim still registered after
                        // this reply was really lost.
                        Ok(false) => {
                            if this.stop_renewing(worker, id) {
                                tracing::warn!(
                                    key = &*key,
                                    "Redis: a claim was gone before its forward ended (Redis \
                                     lost data, or it stalled past the lease); no longer renewed"
                                );
                            }
                        }
                        Err(err) => {
                            tracing::debug!(
                                key = &*key,
                                error = chain(&err),
                                "Redis: renewing a claim failed"
                            )
                        }
                    }
                });
            }
            while renewing.join_next().await.is_some() {}
        }
    }
}
