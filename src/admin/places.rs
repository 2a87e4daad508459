//! The admin listener's places: at most `MAX_CONNECTIONS` connections at once, each
//! registered with its age and whether a request is in progress on it. When every place is
//! taken, a new connection takes the place of the oldest idle one, which is closed: a
//! connection with no request in progress (one still sending its head included) has proven
//! nothing, and a probe that just connected must not be refused because something else
//! holds the port. A request in progress (a Prometheus scrape being answered) keeps its
//! connection for `PROTECTED` at most; if every place is held by one, the new connection
//! is refused.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most admin connections at once: probes and a scraper or two need a handful.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a request in progress keeps its connection from being closed for a new one:
/// Prometheus' default `scrape_timeout`, after which the scraper has given up on it anyway.
/// Without a bound, clients that pipeline requests and never read the answers would hold
/// every place.
const PROTECTED: Duration = Duration::from_secs(10);

/// The open admin connections.
pub(super) struct Places {
    max: usize,
    open: Mutex<Open>,
}

struct Open {
    /// The next connection's id: ids grow, so the first entry is the oldest.
    next: u64,
    entries: BTreeMap<u64, Entry>,
}

struct Entry {
    /// Requests in progress (answers not yet written), and since when there have been some.
    busy: usize,
    busy_since: Option<Instant>,
    /// Cancelled to close the connection for a new one.
    close: CancellationToken,
}

impl Entry {
    fn idle(&self, now: Instant) -> bool {
        self.busy_since
            .is_none_or(|since| now.saturating_duration_since(since) >= PROTECTED)
    }
}

impl Places {
    pub(super) fn new(max: usize) -> Arc<Places> {
        Arc::new(Places {
            max,
            open: Mutex::new(Open {
                next: 0,
                entries: BTreeMap::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection. When all are taken, the oldest idle connection is
    /// asked to close and gives its place up at once; `None` if none is idle.
    pub(super) fn take(self: &Arc<Self>) -> Option<Place> {
        let mut open = self.lock();
        if open.entries.len() >= self.max {
            let now = Instant::now();
            let oldest_idle = open
                .entries
                .iter()
                .find(|(_, entry)| entry.idle(now))
                .map(|(&id, _)| id)?;
            if let Some(evicted) = open.entries.remove(&oldest_idle) {
                evicted.close.cancel();
                tracing::debug!("admin side full: its oldest idle connection closed for a new one");
            }
        }
        let id = open.next;
        open.next += 1;
        let close = CancellationToken::new();
        open.entries.insert(
            id,
            Entry {
                busy: 0,
                busy_since: None,
                close: close.clone(),
            },
        );
        Some(Place {
            places: self.clone(),
            id,
            close,
        })
    }

    /// Marks a request in progress on connection `id` until the guard is dropped.
    fn busy(self: &Arc<Self>, id: u64) -> Busy {
        if let Some(entry) = self.lock().entries.get_mut(&id) {
            entry.busy += 1;
            entry.busy_since.get_or_insert_with(Instant::now);
        }
        Busy {
            places: self.clone(),
            id,
        }
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().entries.len()
    }
}

/// One connection's place, given back when dropped.
pub(super) struct Place {
    places: Arc<Places>,
    id: u64,
    close: CancellationToken,
}

impl Place {
    /// Completes when the connection is to close for a new one.
    pub(super) async fn evicted(&self) {
        self.close.cancelled().await;
    }

    /// What the connection's service marks its requests with.
    pub(super) fn requests(&self) -> Requests {
        Requests {
            places: self.places.clone(),
            id: self.id,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        // Gone already if it was closed for a new connection.
        self.places.lock().entries.remove(&self.id);
    }
}

/// Marks the requests of one connection as in progress.
#[derive(Clone)]
pub(super) struct Requests {
    places: Arc<Places>,
    id: u64,
}

impl Requests {
    /// A request started; it is in progress until the guard is dropped (with its answer,
    /// once written).
    pub(super) fn start(&self) -> Busy {
        self.places.busy(self.id)
    }
}

/// A request in progress.
pub(super) struct Busy {
    places: Arc<Places>,
    id: u64,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(entry) = self.places.lock().entries.get_mut(&self.id) {
            entry.busy = entry.busy.saturating_sub(1);
            if entry.busy == 0 {
                entry.busy_since = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(place: &Place) -> bool {
        place.close.is_cancelled()
    }

    /// Full, a new connection takes the place of the oldest idle one (one still sending its
    /// head counts as idle); one with a request in progress is passed over.
    #[tokio::test(start_paused = true)]
    async fn the_oldest_idle_connection_gives_way() {
        let places = Places::new(3);
        let first = places.take().unwrap();
        let second = places.take().unwrap();
        let third = places.take().unwrap();
        let scrape = first.requests().start();
        let fourth = places.take().unwrap();
        assert!(!closed(&first), "a request in progress keeps its place");
        assert!(closed(&second), "the oldest idle connection is closed");
        assert!(!closed(&third));
        assert_eq!(places.open(), 3);
        drop(second);
        assert_eq!(
            places.open(),
            3,
            "an evicted connection's place is given once"
        );
        drop(scrape);
        let _fifth = places.take().unwrap();
        assert!(closed(&first), "idle again once its answer is written");
        assert!(!closed(&third) && !closed(&fourth));
    }

    /// With every place held by a request in progress, a new connection is refused, until
    /// one of them has been in progress for `PROTECTED`.
    #[tokio::test(start_paused = true)]
    async fn requests_in_progress_are_not_closed_for_a_new_connection() {
        let places = Places::new(2);
        let (a, b) = (places.take().unwrap(), places.take().unwrap());
        let _busy = (a.requests().start(), b.requests().start());
        assert!(places.take().is_none());
        assert!(!closed(&a) && !closed(&b));
        tokio::time::advance(PROTECTED).await;
        let _c = places.take().unwrap();
        assert!(closed(&a) && !closed(&b));
    }

    /// A place comes back when its connection ends.
    #[test]
    fn a_place_is_given_back_when_dropped() {
        let places = Places::new(1);
        let a = places.take().unwrap();
        drop(a);
        assert_eq!(places.open(), 0);
        let _b = places.take().unwrap();
        assert_eq!(places.open(), 1);
    }
}
