//! The recent-deliveries ring (contract §12): the last `admin.recent_deliveries` requests
//! this process answered, every outcome, for `GET /deliveries` and the page `GET /`.
//!
//! Pure data, no I/O. A request notes what it learns as it goes (`Facts`: its id, then
//! once verified its key, event type and secret) and `pipeline::handle` records one
//! `Delivery` when it has answered. What an entry holds is the list of §12 and nothing
//! else: never a body, a signature, a secret or any other header value. The strings a
//! sender chose are cut to `MAX_SENDER_BYTES`.
//!
//! Memory is bounded: the slots are reserved once (`capacity` of them), an entry is about
//! 130 bytes plus its strings (each at most 256 bytes), and a full ring overwrites its
//! oldest entry. Strings are `Arc<str>`: a key that is the id shares its allocation, and
//! the admin side's snapshot copies an entry without copying its strings, so the lock the
//! request path takes is never held for long.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::labels::Outcome;

/// Longest string a sender chose (an id, a key, an event type) an entry keeps, in bytes.
pub const MAX_SENDER_BYTES: usize = 256;

/// What one request has told about itself so far. Collected only while the ring is on:
/// with it off (`Facts::new(false)`) every method returns at once, and nothing is
/// allocated.
#[derive(Debug, Default)]
pub struct Facts {
    on: bool,
    id: Option<Arc<str>>,
    key: Option<Arc<str>>,
    event_type: Option<Arc<str>>,
    secret_index: Option<u8>,
    trace_id: Option<Arc<str>>,
}

impl Facts {
    pub fn new(on: bool) -> Facts {
        Facts {
            on,
            ..Facts::default()
        }
    }

    /// Whether the ring wants this request.
    pub fn on(&self) -> bool {
        self.on
    }

    /// The id as the sender sent it, once read (from a header, or a verified body).
    pub fn id(&mut self, id: &str) {
        if self.on && self.id.as_deref() != Some(cut(id)) {
            self.id = Some(Arc::from(cut(id)));
        }
    }

    /// A verified request: its id, the key dedup holds it by (the id, or a digest of what
    /// was signed), its event type (`None` when it has no valid one) and the first secret
    /// that verified it.
    pub fn verified(
        &mut self,
        id: &str,
        key: &str,
        event_type: Option<&str>,
        secret_index: Option<usize>,
    ) {
        if !self.on {
            return;
        }
        self.id(id);
        self.key = match &self.id {
            // The common case: the key is the id, which shares its allocation.
            Some(id) if **id == *cut(key) => Some(id.clone()),
            _ => Some(Arc::from(cut(key))),
        };
        self.event_type = event_type.map(|name| Arc::from(cut(name)));
        self.secret_index = secret_index.and_then(|index| u8::try_from(index).ok());
    }

    /// The request's trace id (32 hex digits), when tracing sampled it. The traces' code
    /// sets it in `pipeline::handle`, before the delivery is recorded.
    pub fn trace_id(&mut self, trace_id: Option<String>) {
        if self.on {
            self.trace_id = trace_id.map(Arc::from);
        }
    }

    /// The entry for this request, now that it was answered.
    pub fn answered(self, answer: Answer) -> Delivery {
        Delivery {
            time: answer.arrived,
            route: answer.route,
            provider: answer.provider,
            id: self.id,
            key: self.key,
            event_type: self.event_type,
            outcome: answer.outcome,
            status: answer.status,
            upstream_status: answer.upstream_status,
            duration_us: u32::try_from(answer.duration.as_micros()).unwrap_or(u32::MAX),
            secret_index: self.secret_index,
            trace_id: self.trace_id,
        }
    }
}

/// How a request was answered: what `pipeline::handle` knows at its end.
#[derive(Debug)]
pub struct Answer {
    /// When the request arrived.
    pub arrived: SystemTime,
    /// The route's name (`None`: no route has the path).
    pub route: Option<Arc<str>>,
    pub provider: Option<&'static str>,
    pub outcome: Outcome,
    /// What the sender got.
    pub status: u16,
    /// What the upstream answered, if it was forwarded and answered.
    pub upstream_status: Option<u16>,
    pub duration: Duration,
}

/// One entry of the ring: the fields of §12.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub time: SystemTime,
    pub route: Option<Arc<str>>,
    pub provider: Option<&'static str>,
    pub id: Option<Arc<str>>,
    pub key: Option<Arc<str>>,
    pub event_type: Option<Arc<str>>,
    pub outcome: Outcome,
    pub status: u16,
    pub upstream_status: Option<u16>,
    /// Microseconds (saturating at about 71 minutes).
    pub duration_us: u32,
    pub secret_index: Option<u8>,
    pub trace_id: Option<Arc<str>>,
}

impl Delivery {
    pub fn duration_ms(&self) -> f64 {
        f64::from(self.duration_us) / 1000.0
    }

    /// The route's name as the filters and the page name it: `_unmatched` for none.
    pub fn route_label(&self) -> &str {
        self.route.as_deref().unwrap_or(crate::labels::UNMATCHED)
    }
}

/// At most `MAX_SENDER_BYTES` of `text`, cut on a character boundary.
pub fn cut(text: &str) -> &str {
    if text.len() <= MAX_SENDER_BYTES {
        return text;
    }
    let mut end = MAX_SENDER_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Which entries to read, as `/deliveries` and `/` take them from their query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// A route's name; `_unmatched` for requests no route had.
    pub route: Option<String>,
    /// An outcome label (§3).
    pub outcome: Option<String>,
    /// The id, exactly.
    pub id: Option<String>,
    /// At most this many (the newest).
    pub limit: usize,
}

impl Filter {
    fn matches(&self, delivery: &Delivery) -> bool {
        self.route
            .as_deref()
            .is_none_or(|route| delivery.route_label() == route)
            && self
                .outcome
                .as_deref()
                .is_none_or(|outcome| delivery.outcome.label() == outcome)
            && self
                .id
                .as_deref()
                .is_none_or(|id| delivery.id.as_deref() == Some(id))
    }
}

/// What the admin side reads: the entries a filter chose, newest first, and counts over
/// the whole ring.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub entries: Vec<Delivery>,
    /// Entries that matched the filter, `limit` aside.
    pub matched: usize,
    /// Entries in the ring.
    pub held: usize,
    /// How many it holds at most.
    pub capacity: usize,
    /// Entries in the ring by outcome (`outcome as usize`).
    pub by_outcome: [usize; Outcome::COUNT],
}

/// The ring, shared by every worker. One short lock per request: a `Delivery` moves in,
/// the one it overwrites moves out and is dropped after the lock is let go.
#[derive(Debug)]
pub struct Deliveries {
    /// `ring.capacity`, readable without the lock: whether a request collects `Facts`.
    capacity: AtomicUsize,
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    /// Reserved once for `capacity` entries; filled, then overwritten oldest first.
    slots: Vec<Delivery>,
    /// Where the next entry goes.
    next: usize,
    capacity: usize,
}

impl Ring {
    fn new(capacity: usize) -> Ring {
        Ring {
            slots: Vec::with_capacity(capacity),
            next: 0,
            capacity,
        }
    }

    /// Puts `delivery` in; gives back the entry it overwrote (or itself, with no room).
    fn push(&mut self, delivery: Delivery) -> Option<Delivery> {
        if self.capacity == 0 {
            return Some(delivery);
        }
        let replaced = if self.slots.len() < self.capacity {
            self.slots.push(delivery);
            None
        } else {
            Some(std::mem::replace(&mut self.slots[self.next], delivery))
        };
        self.next = (self.next + 1) % self.capacity;
        replaced
    }

    /// The entries, newest first.
    fn newest_first(&self) -> impl Iterator<Item = &Delivery> {
        let len = self.slots.len();
        // `next` is where the oldest entry is (a full ring) or `len` (one still filling).
        (0..len).map(move |i| &self.slots[(self.next + 2 * len - 1 - i) % len])
    }
}

impl Deliveries {
    /// A ring of `capacity` entries (0: off).
    pub fn new(capacity: usize) -> Deliveries {
        Deliveries {
            capacity: AtomicUsize::new(capacity),
            ring: Mutex::new(Ring::new(capacity)),
        }
    }

    /// Whether requests are recorded (`admin.recent_deliveries` > 0).
    pub fn on(&self) -> bool {
        self.capacity() > 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one answered request, overwriting the oldest entry of a full ring.
    pub fn record(&self, delivery: Delivery) {
        let replaced = self.lock().push(delivery);
        // Its strings are freed here, outside the lock.
        drop(replaced);
    }

    /// Holds `capacity` entries from now on (a reload changed `admin.recent_deliveries`),
    /// keeping the newest that fit; 0 turns the ring off and frees its memory.
    pub fn resize(&self, capacity: usize) {
        let mut ring = self.lock();
        if capacity == ring.capacity {
            return;
        }
        let mut resized = Ring::new(capacity);
        let kept: Vec<Delivery> = ring.newest_first().take(capacity).cloned().collect();
        for delivery in kept.into_iter().rev() {
            resized.push(delivery);
        }
        let old = std::mem::replace(&mut *ring, resized);
        self.capacity.store(capacity, Ordering::Relaxed);
        drop(ring);
        drop(old);
    }

    /// The entries `filter` chooses, newest first, and counts over the ring. The entries
    /// are copied under the lock (their strings are shared, not copied); whatever is made
    /// of them is made after.
    pub fn snapshot(&self, filter: &Filter) -> Snapshot {
        let ring = self.lock();
        let mut snapshot = Snapshot {
            held: ring.slots.len(),
            capacity: ring.capacity,
            ..Snapshot::default()
        };
        for delivery in ring.newest_first() {
            snapshot.by_outcome[delivery.outcome as usize] += 1;
            if filter.matches(delivery) {
                snapshot.matched += 1;
                if snapshot.entries.len() < filter.limit {
                    snapshot.entries.push(delivery.clone());
                }
            }
        }
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(n: u64, route: Option<&str>, outcome: Outcome, id: &str) -> Delivery {
        let mut facts = Facts::new(true);
        facts.id(id);
        facts.answered(Answer {
            arrived: SystemTime::UNIX_EPOCH + Duration::from_secs(n),
            route: route.map(Arc::from),
            provider: route.map(|_| "svix"),
            outcome,
            status: 200,
            upstream_status: None,
            duration: Duration::from_micros(n),
        })
    }

    fn all() -> Filter {
        Filter {
            limit: usize::MAX,
            ..Filter::default()
        }
    }

    fn ids(snapshot: &Snapshot) -> Vec<&str> {
        snapshot
            .entries
            .iter()
            .map(|d| d.id.as_deref().unwrap())
            .collect()
    }

    /// Filling, then overwriting the oldest: always the newest `capacity`, newest first.
    #[test]
    fn keeps_the_newest_newest_first() {
        let ring = Deliveries::new(3);
        assert!(ring.snapshot(&all()).entries.is_empty());
        for n in 1..=2 {
            ring.record(delivery(n, Some("r"), Outcome::Forwarded, &n.to_string()));
        }
        assert_eq!(ids(&ring.snapshot(&all())), ["2", "1"]);
        for n in 3..=7 {
            ring.record(delivery(n, Some("r"), Outcome::Forwarded, &n.to_string()));
            let snapshot = ring.snapshot(&all());
            assert_eq!(snapshot.held, n.min(3) as usize);
            assert_eq!(ids(&snapshot)[0], n.to_string());
        }
        let snapshot = ring.snapshot(&all());
        assert_eq!(ids(&snapshot), ["7", "6", "5"]);
        assert_eq!((snapshot.held, snapshot.capacity), (3, 3));
        assert_eq!(snapshot.by_outcome[Outcome::Forwarded as usize], 3);
    }

    #[test]
    fn filters_and_limit() {
        let ring = Deliveries::new(10);
        ring.record(delivery(1, Some("a"), Outcome::Forwarded, "m1"));
        ring.record(delivery(2, Some("b"), Outcome::Duplicate, "m1"));
        ring.record(delivery(3, None, Outcome::NotFound, "m2"));
        ring.record(delivery(4, Some("a"), Outcome::Duplicate, "m3"));
        let by = |route: Option<&str>, outcome: Option<&str>, id: Option<&str>, limit| {
            let filter = Filter {
                route: route.map(str::to_owned),
                outcome: outcome.map(str::to_owned),
                id: id.map(str::to_owned),
                limit,
            };
            let snapshot = ring.snapshot(&filter);
            let ids = ids(&snapshot).into_iter().map(str::to_owned).collect();
            (snapshot.matched, ids)
        };
        let list = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(by(Some("a"), None, None, 10), (2, list(&["m3", "m1"])));
        assert_eq!(
            by(None, Some("duplicate"), None, 10),
            (2, list(&["m3", "m1"]))
        );
        assert_eq!(by(None, None, Some("m1"), 10), (2, list(&["m1", "m1"])));
        assert_eq!(by(Some("_unmatched"), None, None, 10), (1, list(&["m2"])));
        assert_eq!(
            by(Some("a"), Some("duplicate"), None, 10),
            (1, list(&["m3"]))
        );
        assert_eq!(by(None, None, None, 2), (4, list(&["m3", "m2"])));
        assert_eq!(by(None, None, Some("m"), 10), (0, list(&[])));
        assert_eq!(by(None, Some("nonsense"), None, 10), (0, list(&[])));
    }

    /// A larger ring keeps what it had; a smaller one the newest; 0 is off and empty.
    #[test]
    fn resizes_keeping_the_newest() {
        let ring = Deliveries::new(4);
        for n in 1..=6 {
            ring.record(delivery(n, Some("r"), Outcome::Forwarded, &n.to_string()));
        }
        ring.resize(8);
        assert_eq!(ids(&ring.snapshot(&all())), ["6", "5", "4", "3"]);
        ring.record(delivery(7, Some("r"), Outcome::Forwarded, "7"));
        assert_eq!(ids(&ring.snapshot(&all())), ["7", "6", "5", "4", "3"]);
        ring.resize(2);
        assert_eq!(ids(&ring.snapshot(&all())), ["7", "6"]);
        ring.record(delivery(8, Some("r"), Outcome::Forwarded, "8"));
        assert_eq!(ids(&ring.snapshot(&all())), ["8", "7"]);
        ring.resize(0);
        assert!(!ring.on());
        ring.record(delivery(9, Some("r"), Outcome::Forwarded, "9"));
        assert_eq!(ring.snapshot(&all()).held, 0);
        ring.resize(1);
        assert!(ring.on());
        ring.record(delivery(10, Some("r"), Outcome::Forwarded, "10"));
        assert_eq!(ids(&ring.snapshot(&all())), ["10"]);
    }

    /// Off, nothing is collected; on, a key that is the id shares its allocation, and
    /// what a sender chose is cut to 256 bytes on a character boundary.
    #[test]
    fn facts_collect_only_when_on_and_cut_what_senders_chose() {
        let mut off = Facts::new(false);
        off.id("msg_1");
        off.verified("msg_1", "msg_1", Some("user.created"), Some(0));
        off.trace_id(Some("0af7651916cd43dd8448eb211c80319c".into()));
        assert!(off.id.is_none() && off.key.is_none() && off.event_type.is_none());
        assert!(off.secret_index.is_none() && off.trace_id.is_none());

        let mut facts = Facts::new(true);
        facts.id("msg_1");
        facts.verified("msg_1", "msg_1", Some("user.created"), Some(1));
        let (id, key) = (facts.id.clone().unwrap(), facts.key.clone().unwrap());
        assert!(Arc::ptr_eq(&id, &key));
        let digest = format!("sha256:{}", "a".repeat(64));
        facts.verified("delivery-1", &digest, None, None);
        assert_eq!(facts.id.as_deref(), Some("delivery-1"));
        assert_eq!(facts.key.as_deref(), Some(digest.as_str()));
        assert!(facts.event_type.is_none() && facts.secret_index.is_none());

        let long = format!("{}é{}", "x".repeat(255), "y".repeat(300));
        facts.id(&long);
        assert_eq!(facts.id.as_deref(), Some("x".repeat(255).as_str()));
        assert_eq!(cut("short"), "short");
        assert_eq!(cut(&"z".repeat(256)).len(), 256);
        let delivery = facts.answered(Answer {
            arrived: SystemTime::UNIX_EPOCH,
            route: None,
            provider: None,
            outcome: Outcome::NotFound,
            status: 404,
            upstream_status: None,
            duration: Duration::from_micros(1_234),
        });
        assert_eq!(delivery.duration_ms(), 1.234);
        assert_eq!(delivery.route_label(), "_unmatched");
    }

    /// Two threads recording at once: the ring holds its bound and their order.
    #[test]
    fn concurrent_records_keep_the_bound() {
        let ring = Arc::new(Deliveries::new(100));
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for n in 0..1000 {
                        let id = format!("{t}-{n}");
                        ring.record(delivery(n, Some("r"), Outcome::Forwarded, &id));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let snapshot = ring.snapshot(&all());
        assert_eq!(snapshot.held, 100);
        // Newest first, each thread's in the order it recorded them, its last the newest.
        let mut last = [u32::MAX; 2];
        for id in ids(&snapshot) {
            let (thread, n) = id.split_once('-').unwrap();
            let (thread, n): (usize, u32) = (thread.parse().unwrap(), n.parse().unwrap());
            assert!(n < last[thread]);
            last[thread] = n;
        }
        assert!(ids(&snapshot)[0].ends_with("-999"));
    }

    /// Not a test: the numbers the README states, printed. The ring's memory (RSS full of
    /// 1,000 entries with 256-byte ids, against empty) and the cost of recording (one
    /// thread, then two at once). Timings want an optimised build:
    /// `cargo test --release --lib deliveries::tests::measure -- --ignored --nocapture`
    #[test]
    #[ignore = "measures and prints"]
    fn measure() {
        // Anonymous memory only: the code pages run for the first time are not the ring's.
        fn rss_kib() -> usize {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        }
        fn one(ring: &Deliveries, route: &Arc<str>, id: &str) {
            let mut facts = Facts::new(true);
            facts.id(id);
            facts.verified(id, id, Some("user.created"), Some(0));
            ring.record(facts.answered(Answer {
                arrived: SystemTime::now(),
                route: Some(route.clone()),
                provider: Some("svix"),
                outcome: Outcome::Forwarded,
                status: 200,
                upstream_status: Some(200),
                duration: Duration::from_micros(800),
            }));
        }
        let route: Arc<str> = Arc::from("clerk");
        let ids: Vec<String> = (0..1000).map(|n| format!("{n:0>256}")).collect();
        one(&Deliveries::new(1), &route, "warm-up");
        let empty = rss_kib();
        let ring = Deliveries::new(1000);
        for id in &ids {
            one(&ring, &route, id);
        }
        let full = rss_kib();
        println!(
            "Delivery: {} bytes; 1,000 entries with 256-byte ids: RSS +{} KiB",
            std::mem::size_of::<Delivery>(),
            full - empty
        );

        let rounds = 1_000_000;
        let started = std::time::Instant::now();
        for n in 0..rounds {
            one(&ring, &route, &ids[n % ids.len()][..20]);
        }
        let alone = started.elapsed() / rounds as u32;
        let ring = Arc::new(ring);
        let started = std::time::Instant::now();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (ring, route, ids) = (ring.clone(), route.clone(), ids.clone());
                std::thread::spawn(move || {
                    for n in 0..rounds {
                        one(&ring, &route, &ids[n % ids.len()][..20]);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let both = started.elapsed() / rounds as u32;
        let all = Filter {
            limit: 1000,
            ..Filter::default()
        };
        let started = std::time::Instant::now();
        let snapshot = ring.snapshot(&all);
        let read = started.elapsed();
        assert_eq!(snapshot.entries.len(), 1000);
        println!(
            "record (20-byte id, its facts and entry): {alone:?} alone, {both:?} per \
             request with two threads at once; a snapshot of 1,000: {read:?}"
        );
    }
}
