//! `store = "redis"`: one dedup memory for every replica, against a real `redis-server`
//! that each test starts on a free port. Replicas are real: two hookwall processes (or two
//! proxies in this process where only their memories matter), and so are the faults:
//! SIGKILL, Redis killed, SIGSTOPped, FLUSHALLed, turned into a read-only replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::redis_server::RedisServer;
use crate::helpers::running::{config_dir, Running};
use crate::helpers::*;

/// The `[dedup]` and `[redis]` tables for `redis`.
fn store(redis: &RedisServer, on_error: &str, timeout: &str) -> String {
    format!(
        "[dedup]\nstore = \"redis\"\non_store_error = \"{on_error}\"\n[redis]\nurl = \"{}\"\ntimeout = \"{timeout}\"\n",
        redis.url()
    )
}

/// An in-process proxy on `redis` forwarding `/hook` to `upstream`.
async fn proxy(redis: &RedisServer, upstream: &Upstream, on_error: &str, timeout: &str) -> Proxy {
    Proxy::start(&format!(
        "[limits]\nshutdown_delay = \"0s\"\n{}[[routes]]\nname = \"r\"\npath = \"/hook\"\nsecrets = [\"{SECRET}\"]\nupstream = \"{}\"\n",
        store(redis, on_error, timeout),
        upstream.url("/")
    ))
    .await
}

/// Two hookwall processes on `redis` (`redis.timeout` 250ms: a 2 s lease), forwarding to
/// an upstream that holds every request until released, and an event `id` sent to A and
/// held there in flight: what a test then does to Redis, A or the upstream.
struct HeldOnA {
    upstream: Upstream,
    arrived: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
    a: Running,
    b: Running,
    /// A's answer to the held event.
    first: tokio::task::JoinHandle<(u16, Option<String>, String)>,
    _dir: tempfile::TempDir,
}

async fn held_on_a(redis: &RedisServer, id: &str) -> HeldOnA {
    let (upstream, arrived, release) = holding_upstream().await;
    let (dir, file) = config_dir(&upstream, &store(redis, "refuse", "250ms"));
    let (a, b) = (Running::start(&file).await, Running::start(&file).await);
    redis_up(a.admin).await;
    redis_up(b.admin).await;
    let first = delivering(a.url("/hook"), &arrived, id, "user.created").await;
    HeldOnA {
        upstream,
        arrived,
        release,
        a,
        b,
        first,
        _dir: dir,
    }
}

#[tokio::test]
async fn two_replicas_share_in_flight_and_delivered() {
    let redis = RedisServer::start();
    let (arrived, release) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let (a2, r2) = (arrived.clone(), release.clone());
    // The first request is held until released; any other is answered at once.
    let upstream = Upstream::start(move |_, n| {
        if n == 0 {
            Reply::Hold {
                arrived: a2.clone(),
                release: r2.clone(),
            }
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let (_dir, file) = config_dir(&upstream, &store(&redis, "refuse", "250ms"));
    let (a, b) = (Running::start(&file).await, Running::start(&file).await);
    redis_up(a.admin).await;
    redis_up(b.admin).await;

    // In flight on A: 409 on B.
    let first = delivering(a.url("/hook"), &arrived, "msg_1", "user.created").await;
    assert_eq!(send_event(&b.url("/hook"), "msg_1").await.0, 409);
    assert!(redis
        .get("hookwall:dedup:hook:msg_1")
        .unwrap()
        .starts_with("i:"));
    release.notify_one();
    assert_eq!(first.await.unwrap().0, 200);

    // Delivered on A: a duplicate on B (the mark is written right after A's answer).
    until("B to answer duplicate", async || {
        send_event(&b.url("/hook"), "msg_1").await == (200, r#"{"outcome":"duplicate"}"#.to_owned())
    })
    .await;
    assert!(redis
        .get("hookwall:dedup:hook:msg_1")
        .unwrap()
        .starts_with("d:"));
    let ttl = redis.cmd(&["PTTL", "hookwall:dedup:hook:msg_1"]);
    assert!(
        matches!(ttl, redis::Value::Int(ms) if ms > 14 * 60 * 1000),
        "{ttl:?}"
    );
    assert_eq!(upstream.ids()["msg_1"], 1);
    // A failure releases at once: B's retry of a rejected id goes through.
    let m = b.metrics().await;
    assert!(m.redis_commands("claim", "ok") >= 1.0);
}

#[tokio::test]
async fn a_replica_killed_mid_forward_frees_the_id_when_its_lease_runs_out() {
    let redis = RedisServer::start();
    // The lease is 2 s, renewed every 2/3 s while a forward runs.
    let HeldOnA {
        upstream,
        arrived,
        release,
        mut a,
        b,
        first: lost,
        _dir,
    } = held_on_a(&redis, "msg_k").await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert_eq!(lost.await.unwrap().0, 0, "A died without answering");

    // Until A's lease runs out the id is in flight; then B delivers the sender's retry.
    let started = Instant::now();
    let url_b = b.url("/hook");
    let retry = tokio::spawn(async move {
        let mut in_flight = 0;
        loop {
            match send_event(&url_b, "msg_k").await.0 {
                409 => in_flight += 1,
                status => return (status, in_flight),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    arrived.notified().await;
    release.notify_waiters();
    let (status, in_flight) = tokio::time::timeout(Duration::from_secs(20), retry)
        .await
        .expect("B delivers once the lease ran out")
        .unwrap();
    assert_eq!(status, 200);
    assert!(in_flight > 0, "409 while A's lease held");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(
        upstream.ids()["msg_k"],
        2,
        "A's attempt (never answered), then B's"
    );
}

#[tokio::test]
async fn a_forward_longer_than_its_lease_keeps_the_claim() {
    let redis = RedisServer::start();
    // The lease is 2 s; A's forward is held for three of them.
    let held = held_on_a(&redis, "msg_long").await;
    let (b, release, first, upstream) = (&held.b, &held.release, held.first, &held.upstream);
    let key = "hookwall:dedup:hook:msg_long";
    let claimed = redis.get(key).unwrap();
    assert!(claimed.starts_with("i:"), "{claimed}");
    let held = Instant::now();
    let mut checks = 0;
    while held.elapsed() < Duration::from_secs(6) {
        // Still A's claim, with time left: renewed, not expired and taken over.
        assert_eq!(send_event(&b.url("/hook"), "msg_long").await.0, 409);
        assert_eq!(redis.get(key).as_deref(), Some(claimed.as_str()));
        let ttl = redis.cmd(&["PTTL", key]);
        assert!(matches!(ttl, redis::Value::Int(ms) if ms > 0), "{ttl:?}");
        checks += 1;
        // Paces the checks; what is tested is that time passes without a takeover.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(checks > 10);
    release.notify_one();
    assert_eq!(first.await.unwrap().0, 200);
    until("B to answer duplicate", async || {
        send_event(&b.url("/hook"), "msg_long").await
            == (200, r#"{"outcome":"duplicate"}"#.to_owned())
    })
    .await;
    assert_eq!(upstream.ids()["msg_long"], 1);
}

#[tokio::test]
async fn redis_down_refuses_then_recovers_by_itself_and_readyz_does_not_care() {
    let mut redis = RedisServer::start();
    redis.stop();
    let upstream = Upstream::ok().await;
    // Started with Redis down: it runs, is ready, and connects in the background.
    let proxy = proxy(&redis, &upstream, "refuse", "1s").await;
    until("readyz 200 without Redis", async || {
        get(&format!("http://{}/readyz", proxy.admin)).await.0 == 200
    })
    .await;
    let body = event("user.created");
    let (status, headers, reply) = post(
        &proxy.url("/hook"),
        &signed(SECRET, "msg_down", now(), &body),
        &body,
    )
    .await;
    assert_eq!(
        (status, reply.as_ref()),
        (503, br#"{"error":"store_unavailable"}"#.as_ref())
    );
    assert_eq!(headers["retry-after"], "5");
    // While Redis is known to be down, answers come at once, not after a timeout each.
    let started = Instant::now();
    for i in 0..5 {
        assert_eq!(
            send_event(&proxy.url("/hook"), &format!("msg_fast_{i}"))
                .await
                .0,
            503
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(upstream.count(), 0, "nothing forwarded while refusing");

    redis.restart();
    until("delivery to resume without a restart", async || {
        send_event(&proxy.url("/hook"), "msg_down").await.0 == 200
    })
    .await;
    assert_eq!(upstream.ids()["msg_down"], 1);
    // Every worker reconnects on its own backoff: the gauge is 1 once all of them have.
    redis_up(proxy.admin).await;
    let m = proxy.metrics().await;
    // Six above, and those of the polls while it reconnected.
    assert!(m.requests("r", "store_unavailable") >= 6.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn with_local_this_process_decides_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let upstream = Upstream::ok().await;
    let proxy = proxy(&redis, &upstream, "local", "250ms").await;
    redis_up(proxy.admin).await;
    redis.stop();
    assert_eq!(send_event(&proxy.url("/hook"), "msg_l").await.0, 200);
    assert_eq!(
        send_event(&proxy.url("/hook"), "msg_l").await,
        (200, r#"{"outcome":"duplicate"}"#.to_owned())
    );
    assert_eq!(upstream.ids()["msg_l"], 1);
    let m = proxy.metrics().await;
    assert_eq!(
        m.get("hookwall_dedup_fallbacks_total", &[("route", "r")]),
        Some(2.0),
        "the claim fell back, and so did the duplicate: this process's copy of a \
         delivered id answers only when Redis cannot"
    );
    assert_eq!(m.get("hookwall_redis_up", &[]), Some(0.0));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_paused_redis_gets_the_policy_not_a_hang() {
    let redis = RedisServer::start();
    let upstream = Upstream::ok().await;
    let proxy = proxy(&redis, &upstream, "refuse", "200ms").await;
    redis_up(proxy.admin).await;
    assert_eq!(send_event(&proxy.url("/hook"), "msg_before").await.0, 200);
    redis.pause();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        send_event(&proxy.url("/hook"), "msg_paused"),
    )
    .await
    .expect("answered, not hung");
    assert_eq!(answer.0, 503);
    redis.resume();
    until("delivery to resume", async || {
        send_event(&proxy.url("/hook"), "msg_paused").await.0 == 200
    })
    .await;
    let m = proxy.metrics().await;
    assert!(m.redis_commands("claim", "timeout") >= 1.0);
    proxy.shutdown().await;
}

/// A claim sent to a stalled Redis times out (503), but the server runs it when it
/// resumes: hookwall gives it back once its link is up again, so the sender's retry is
/// delivered rather than refused as in flight until the lease runs out.
#[tokio::test]
async fn a_claim_a_stalled_redis_ran_late_is_given_back_once_it_resumes() {
    let redis = RedisServer::start();
    let upstream = Upstream::ok().await;
    let proxy = proxy(&redis, &upstream, "refuse", "200ms").await;
    redis_up(proxy.admin).await;
    redis.pause();
    assert_eq!(send_event(&proxy.url("/hook"), "msg_late").await.0, 503);
    redis.resume();
    until("the late claim to be released", async || {
        proxy.metrics().await.redis_commands("release", "ok") >= 1.0
    })
    .await;
    assert_eq!(redis.get("hookwall:dedup:hook:msg_late"), None);
    assert_eq!(send_event(&proxy.url("/hook"), "msg_late").await.0, 200);
    assert_eq!(upstream.ids()["msg_late"], 1);
    proxy.shutdown().await;
}

/// A sender that hangs up while its claim is on its way (Redis holds it, as `CLIENT
/// PAUSE WRITE` holds every write, and `redis.timeout` is longer): Redis then sets the key
/// for nobody, and hookwall gives it back once it has, so the sender's retry is forwarded
/// at once rather than refused as in flight until the 40 s lease runs out.
#[tokio::test]
async fn a_claim_whose_sender_hung_up_while_it_was_in_flight_is_given_back() {
    use tokio::io::AsyncWriteExt as _;
    let redis = RedisServer::start();
    let upstream = Upstream::ok().await;
    // redis.timeout 5 s: a 40 s lease.
    let proxy = proxy(&redis, &upstream, "refuse", "5s").await;
    redis_up(proxy.admin).await;
    // Reads (the lookup) are served; the claim's SET waits until the pause ends.
    redis.cmd(&["CLIENT", "PAUSE", "4000", "WRITE"]);
    let mut sender = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    sender
        .write_all(&raw_signed_request("/hook", "msg_hung_up"))
        .await
        .unwrap();
    until("the claim to be held by Redis", async || {
        let info = redis.cmd(&["INFO", "clients"]);
        matches!(&info, redis::Value::BulkString(text)
            if String::from_utf8_lossy(text).contains("blocked_clients:1"))
    })
    .await;
    drop(sender);
    until("the request to be dropped", async || {
        proxy
            .metrics()
            .await
            .get("hookwall_in_flight_requests", &[])
            == Some(0.0)
    })
    .await;
    redis.cmd(&["CLIENT", "UNPAUSE"]);
    // The release goes after the claim on the same connection: once it is done, Redis
    // ran both.
    until_within(
        "the claim to be given back",
        Duration::from_secs(3),
        async || proxy.metrics().await.redis_commands("release", "ok") >= 1.0,
    )
    .await;
    assert_eq!(redis.get("hookwall:dedup:r:msg_hung_up"), None);
    assert_eq!(send_event(&proxy.url("/hook"), "msg_hung_up").await.0, 200);
    assert_eq!(upstream.ids()["msg_hung_up"], 1);
    proxy.shutdown().await;
}

/// Redis dies while a forward runs, so marking the id delivered fails; once Redis is
/// back, the replica writes the mark it missed, and a retry on another replica is a
/// duplicate instead of a second delivery.
#[tokio::test]
async fn a_delivered_mark_redis_missed_is_written_once_it_is_back() {
    let mut redis = RedisServer::start();
    let HeldOnA {
        upstream,
        release,
        a,
        b,
        first,
        ..
    } = held_on_a(&redis, "msg_mark").await;
    redis.stop();
    release.notify_one();
    assert_eq!(first.await.unwrap().0, 200, "the upstream's answer");
    until("A to fail marking the id delivered", async || {
        a.metrics().await.redis_commands("deliver", "error") >= 1.0
    })
    .await;
    // Restarted empty: the claim went with the old server.
    redis.restart();
    let key = "hookwall:dedup:hook:msg_mark";
    until("A to write the mark it missed", async || {
        redis.get(key).is_some_and(|value| value.starts_with("d:"))
    })
    .await;
    // B learns that its connection went with the old server on its first command (503,
    // the sender retries); then it reconnects.
    let mut answer = send_event(&b.url("/hook"), "msg_mark").await;
    until("B to answer from Redis", async || {
        answer = send_event(&b.url("/hook"), "msg_mark").await;
        answer.0 != 503
    })
    .await;
    assert_eq!(answer, (200, r#"{"outcome":"duplicate"}"#.to_owned()));
    assert_eq!(upstream.ids()["msg_mark"], 1);
}

/// `rediss://` to a real redis-server serving TLS: the URL, password included, read from
/// a `file:` as a secret is, and the server's certificate checked against `redis.ca_file`.
/// Without that CA the certificate is refused, and so is every event (503): the TLS is
/// verified, not merely spoken.
#[tokio::test]
async fn rediss_with_a_password_from_a_file_and_a_private_ca() {
    let redis = RedisServer::start_tls(&pki("Redis CA"), "s3cret-redis-pass");
    let upstream = Upstream::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("redis-url");
    std::fs::write(&url_file, format!("{}\n", redis.tls_url())).unwrap();
    let config = |ca: &str| {
        format!(
            "[limits]\nshutdown_delay = \"0s\"\n[dedup]\nstore = \"redis\"\n[redis]\nurl = \"file:{}\"\n{ca}\
             [[routes]]\nname = \"hook\"\npath = \"/hook\"\nsecrets = [\"{SECRET}\"]\nupstream = \"{}\"\n",
            url_file.display(),
            upstream.url("/")
        )
    };
    let ca = format!("ca_file = \"{}\"\n", redis.dir().join("ca.pem").display());
    let proxy = Proxy::start(&config(&ca)).await;
    redis_up(proxy.admin).await;
    assert_eq!(send_event(&proxy.url("/hook"), "msg_tls").await.0, 200);
    assert_eq!(
        send_event(&proxy.url("/hook"), "msg_tls").await,
        (200, r#"{"outcome":"duplicate"}"#.to_owned())
    );
    let value = redis.get("hookwall:dedup:hook:msg_tls").unwrap();
    assert!(value.starts_with("d:"), "{value}");
    proxy.shutdown().await;

    // The system's roots do not vouch for this CA.
    let untrusted = Proxy::start(&config("")).await;
    assert_eq!(
        send_event(&untrusted.url("/hook"), "msg_untrusted").await.0,
        503
    );
    let m = untrusted.metrics().await;
    assert_eq!(m.get("hookwall_redis_up", &[]), Some(0.0));
    assert_eq!(upstream.ids()["msg_tls"], 1);
    assert!(!upstream.ids().contains_key("msg_untrusted"));
    untrusted.shutdown().await;
}

#[tokio::test]
async fn a_replica_turned_read_only_counts_as_down_until_writable() {
    let redis = RedisServer::start();
    let upstream = Upstream::ok().await;
    let proxy = proxy(&redis, &upstream, "refuse", "250ms").await;
    redis_up(proxy.admin).await;
    // A failover left this server a replica (of a primary that is not there): READONLY.
    redis.cmd(&["REPLICAOF", "127.0.0.1", "1"]);
    assert_eq!(send_event(&proxy.url("/hook"), "msg_ro").await.0, 503);
    assert_eq!(send_event(&proxy.url("/hook"), "msg_ro").await.0, 503);
    redis.cmd(&["REPLICAOF", "NO", "ONE"]);
    until("writable again", async || {
        send_event(&proxy.url("/hook"), "msg_ro").await.0 == 200
    })
    .await;
    assert_eq!(upstream.ids()["msg_ro"], 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn flushall_loses_nothing() {
    let redis = RedisServer::start();
    let upstream = Upstream::ok().await;
    let a = proxy(&redis, &upstream, "refuse", "250ms").await;
    let b = proxy(&redis, &upstream, "refuse", "250ms").await;
    redis_up(a.admin).await;
    redis_up(b.admin).await;
    assert_eq!(send_event(&a.url("/hook"), "msg_f").await.0, 200);
    until("the delivered mark", async || {
        redis
            .get("hookwall:dedup:r:msg_f")
            .is_some_and(|v| v.starts_with("d:"))
    })
    .await;
    redis.cmd(&["FLUSHALL"]);
    // Redis forgot: B forwards the retry again rather than drop it (a duplicate may pass;
    // nothing is lost). A's own copy does not decide while Redis answers (an operator
    // may have forgotten the id, contract §12): A's duplicate is B's new mark.
    assert_eq!(
        send_event(&b.url("/hook"), "msg_f").await,
        (200, "upstream says 200".to_owned())
    );
    until("B's delivered mark", async || {
        redis
            .get("hookwall:dedup:r:msg_f")
            .is_some_and(|v| v.starts_with("d:"))
    })
    .await;
    assert_eq!(
        send_event(&a.url("/hook"), "msg_f").await,
        (200, r#"{"outcome":"duplicate"}"#.to_owned())
    );
    assert_eq!(send_event(&b.url("/hook"), "msg_new").await.0, 200);
    assert_eq!(upstream.ids()["msg_f"], 2);
    a.shutdown().await;
    b.shutdown().await;
}

/// The promise across replicas: thousands of events, each attempt sent to a random
/// replica, the upstream failing a third of the attempts, the sender retrying as Svix
/// does. Every event is delivered, and none reaches the upstream again after its 2xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_lost_or_delivered_again_across_two_replicas() {
    const EVENTS: usize = 2000;
    const SENDERS: usize = 16;
    let redis = RedisServer::start();
    // Per id: what the upstream answered each attempt, in order.
    let answers: Arc<Mutex<HashMap<String, Vec<u16>>>> = Arc::default();
    let seen = answers.clone();
    let upstream = Upstream::start(move |got, _| {
        let id = got.headers["svix-id"].to_str().unwrap().to_owned();
        let mut seen = seen.lock().unwrap();
        let attempts = seen.entry(id.clone()).or_default();
        // A third of attempts fail, decided by the id and attempt (repeatable).
        let status = if mix(&id, attempts.len()).is_multiple_of(3) {
            500
        } else {
            200
        };
        attempts.push(status);
        Reply::Status(status)
    })
    .await;
    let replicas = Arc::new([
        proxy(&redis, &upstream, "refuse", "250ms").await,
        proxy(&redis, &upstream, "refuse", "250ms").await,
    ]);
    redis_up(replicas[0].admin).await;
    redis_up(replicas[1].admin).await;

    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let replicas = replicas.clone();
        senders.push(tokio::spawn(async move {
            let mut attempts = 0usize;
            for e in (s..EVENTS).step_by(SENDERS) {
                let id = format!("msg_{e}");
                for attempt in 0.. {
                    attempts += 1;
                    let replica = &replicas[mix(&id, attempt + 7) as usize % 2];
                    match send_event(&replica.url("/hook"), &id).await.0 {
                        200 => break,
                        409 | 500 | 502 | 503 => {
                            assert!(attempt < 50, "{id}: never delivered");
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        other => panic!("{id}: {other}"),
                    }
                }
            }
            attempts
        }));
    }
    let mut attempts = 0;
    for sender in senders {
        attempts += sender.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    assert_eq!(answers.len(), EVENTS, "every event reached the upstream");
    for (id, statuses) in answers.iter() {
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{id}: {statuses:?}"
        );
        assert_eq!(
            statuses.last(),
            Some(&200),
            "{id}: sent again after its 2xx: {statuses:?}"
        );
    }
    let failed: usize = answers.values().map(|s| s.len() - 1).sum();
    assert!(failed > EVENTS / 5, "the upstream failed {failed} attempts");
    eprintln!("{EVENTS} events, {attempts} attempts, {failed} failed at the upstream");
    for replica in Arc::try_unwrap(replicas).ok().unwrap() {
        replica.shutdown().await;
    }
}

/// A small repeatable hash (FNV-1a) of an id and a number.
fn mix(id: &str, n: usize) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes().chain(n.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// A claim that is gone while its forward runs (deleted here, as a Redis that lost data
/// would): the next renewal finds it gone, says so once (`op="renew"`) and stops renewing
/// it, rather than warning every tick until the forward ends.
#[tokio::test]
async fn a_renewal_that_finds_its_claim_gone_stops_and_says_so_once() {
    let redis = RedisServer::start();
    let held = held_on_a(&redis, "msg_gone").await;
    let key = "hookwall:dedup:hook:msg_gone";
    assert!(redis.get(key).unwrap().starts_with("i:"));
    redis.cmd(&["DEL", key]);
    let gone = |a: &Running| {
        a.log()
            .iter()
            .filter(|l| l.contains("a claim was gone before its forward ended"))
            .count()
    };
    until("the renewal to find the claim gone", async || {
        gone(&held.a) == 1
    })
    .await;
    let renewals = held.a.metrics().await.redis_commands("renew", "ok");
    assert!(renewals >= 1.0);
    // Three more renewal ticks (every 667 ms): no renewal, no warning.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gone(&held.a), 1);
    assert_eq!(
        held.a.metrics().await.redis_commands("renew", "ok"),
        renewals
    );
    held.release.notify_one();
    assert_eq!(held.first.await.unwrap().0, 200);
}
