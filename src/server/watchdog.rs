//! The watchdog of one connection: what proves nothing (no complete request head within
//! `header_read_timeout` of the accept, nothing in progress for `idle_timeout`) is asked
//! to close; so is every connection when the worker shuts down.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why the watchdog asks a connection to close.
pub(super) enum Close {
    /// No complete request head within `header_read_timeout` of the accept.
    Silent,
    /// No request in progress for `idle_timeout`.
    Idle,
    /// The worker is shutting down.
    Shutdown,
}

/// Watches one connection until it ends (`close` is dropped), telling it why to close.
pub(super) async fn watchdog(
    activity: Arc<Activity>,
    (first, idle): (Duration, Duration),
    stop: CancellationToken,
    mut close: tokio::sync::oneshot::Sender<Close>,
) {
    let reason = tokio::select! {
        () = close.closed() => return,
        () = stop.cancelled() => Close::Shutdown,
        () = activity.idle(first, idle) => {
            if activity.started_any() { Close::Idle } else { Close::Silent }
        }
    };
    let _ = close.send(reason);
}

/// Completes at `when`, never if `None`.
pub(super) async fn sleep_until_some(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

/// What the watchdog knows of a connection: requests in progress, and since when there
/// have been none. Updated by the service on each request's start and end (a few atomic
/// operations; no wake-up), read by the watchdog when its timer fires.
pub(super) struct Activity {
    start: Instant,
    busy: AtomicUsize,
    /// Milliseconds from `start` to when the last request ended.
    idle_since_ms: AtomicU64,
    started_any: AtomicBool,
}

impl Activity {
    pub(super) fn new(start: Instant) -> Self {
        Activity {
            start,
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            started_any: AtomicBool::new(false),
        }
    }

    pub(super) fn start(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::AcqRel);
        if !self.started_any.load(Ordering::Relaxed) {
            self.started_any.store(true, Ordering::Release);
        }
        Busy(self)
    }

    fn started_any(&self) -> bool {
        self.started_any.load(Ordering::Acquire)
    }

    /// Completes once the connection should close: no request head yet `first` after the
    /// accept, or no request in progress for `idle`. It looks again at least every
    /// `min(first, idle)`, so a request that came and went while it slept is seen in time;
    /// otherwise it sleeps until exactly the due time.
    async fn idle(&self, first: Duration, idle: Duration) {
        let step = first.min(idle);
        loop {
            let now = Instant::now();
            let next = if self.busy.load(Ordering::Acquire) > 0 {
                now + step
            } else {
                let limit = if self.started_any() { idle } else { first };
                let since =
                    self.start + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
                let due = since + limit;
                if due <= now {
                    return;
                }
                due.min(now + step)
            };
            tokio::time::sleep_until(next).await;
        }
    }
}

/// A request in progress on its connection.
pub(super) struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let activity = self.0;
        let ms = activity.start.elapsed().as_millis() as u64;
        activity.idle_since_ms.fetch_max(ms, Ordering::AcqRel);
        activity.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watchdog's clock, on paused time: a silent connection is due `first` after its
    /// accept; one with a request in progress is never due; one whose request ended is due
    /// `idle` after that end.
    #[tokio::test(start_paused = true)]
    async fn the_watchdog_is_due_when_a_connection_proves_nothing() {
        let (first, idle) = (Duration::from_secs(10), Duration::from_secs(60));
        let accepted = Instant::now();
        Activity::new(accepted).idle(first, idle).await;
        let waited = accepted.elapsed();
        assert!(waited >= first && waited < first + Duration::from_millis(10));

        let activity = Arc::new(Activity::new(Instant::now()));
        let watching = activity.clone();
        let watcher = tokio::spawn(async move { watching.idle(first, idle).await });
        tokio::time::advance(Duration::from_secs(5)).await;
        let busy = activity.start();
        tokio::time::advance(Duration::from_secs(100)).await;
        tokio::task::yield_now().await;
        assert!(!watcher.is_finished(), "due while a request is in progress");
        drop(busy);
        tokio::time::advance(idle - Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        assert!(!watcher.is_finished(), "due before idle_timeout passed");
        tokio::time::advance(Duration::from_secs(2)).await;
        tokio::time::timeout(Duration::from_secs(1), watcher)
            .await
            .expect("due once idle_timeout passed")
            .unwrap();
    }
}
