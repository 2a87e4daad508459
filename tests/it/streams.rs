//! Stream rules (contract §9) against a real `redis-server` that each test starts on a
//! free port: what an entry holds, at most once per id (across replicas too), Redis down
//! or stalled, and the example workers consuming what hookwall queued.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::redis_server::RedisServer;
use crate::helpers::running::Running;
use crate::helpers::*;

const STREAM: &str = "clerk-events";

/// A config: `store`, Redis at `redis`, route `clerk` at `/hook` whose `user.*` events go
/// to the stream and `session.*` are dropped; the rest forward to `upstream` if given.
fn config(redis: &RedisServer, store: &str, timeout: &str) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[log]
format = "json"
[limits]
shutdown_delay = "0s"
[dedup]
store = "{store}"
[redis]
url = "{}"
timeout = "{timeout}"
[[routes]]
name = "clerk"
path = "/hook"
secrets = ["{SECRET}"]
  [[routes.rules]]
  events = ["user.*"]
  stream = "{STREAM}"
  [[routes.rules]]
  events = ["session.*"]
  action = "drop"
"#,
        redis.url()
    )
}

/// The config in a folder of its own: the folder (removed when dropped) and the file.
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookwall.toml");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

/// One stream entry: its id and its fields in order.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

fn entries(redis: &RedisServer) -> Vec<StreamEntry> {
    let bulk = |v: &redis::Value| match v {
        redis::Value::BulkString(bytes) => bytes.clone(),
        other => panic!("not a bulk string: {other:?}"),
    };
    let redis::Value::Array(list) = redis.cmd(&["XRANGE", STREAM, "-", "+"]) else {
        panic!("XRANGE answers an array")
    };
    list.iter()
        .map(|entry| {
            let redis::Value::Array(parts) = entry else {
                panic!("{entry:?}")
            };
            let redis::Value::Array(fields) = &parts[1] else {
                panic!("{entry:?}")
            };
            let fields = fields
                .chunks(2)
                .map(|pair| (String::from_utf8(bulk(&pair[0])).unwrap(), bulk(&pair[1])))
                .collect();
            (String::from_utf8(bulk(&parts[0])).unwrap(), fields)
        })
        .collect()
}

/// The value of field `name`, as text.
fn field(entry: &StreamEntry, name: &str) -> String {
    let (_, value) = entry
        .1
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no field {name} in {entry:?}"));
    String::from_utf8(value.clone()).unwrap()
}

const QUEUED: &str = r#"{"outcome":"queued"}"#;
const DUPLICATE: &str = r#"{"outcome":"duplicate"}"#;

#[tokio::test]
async fn an_entry_holds_exactly_what_was_sent_and_enters_once() {
    let redis = RedisServer::start();
    let (_dir, file) = config_file(&config(&redis, "memory", "250ms"));
    let hookwall = Running::start(&file).await;
    redis_up(hookwall.admin).await;

    // Bytes a re-serializing parser would change: spacing, key order, an escape, UTF-8.
    let body =
        "{ \"type\":\"user.created\",\n \"data\":{\"id\":\"user_1\",\"name\":\"Zo\\u00eb Zoë\"} }"
            .as_bytes()
            .to_vec();
    let timestamp = now();
    let mut headers = signed(SECRET, "msg_exact", timestamp, &body);
    headers.push(("x-tenant".into(), "acme".into()));
    let url = format!("{}?source=clerk", hookwall.url("/hook"));
    let (status, _, reply) = post(&url, &headers, &body).await;
    assert_eq!((status, &reply[..]), (200, QUEUED.as_bytes()));

    let all = entries(&redis);
    assert_eq!(all.len(), 1);
    let entry = &all[0];
    let names: Vec<&str> = entry.1.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "type",
            "route",
            "timestamp",
            "body",
            "headers",
            "traceparent"
        ]
    );
    // Traces are off and the sender sent no traceparent: none to pass on.
    assert_eq!(field(entry, "traceparent"), "");
    assert_eq!(field(entry, "id"), "msg_exact");
    assert_eq!(field(entry, "type"), "user.created");
    assert_eq!(field(entry, "route"), "clerk");
    assert_eq!(field(entry, "timestamp"), timestamp.to_string());
    assert_eq!(entry.1[4].1, body, "the body's bytes, unchanged");
    let sent: serde_json::Value = serde_json::from_str(&field(entry, "headers")).unwrap();
    for (name, value) in &headers {
        assert_eq!(sent[name], value.as_str(), "{name}");
    }
    assert_eq!(sent["hookwall-route"], "clerk");
    assert_eq!(sent["x-forwarded-for"], "127.0.0.1");
    assert!(
        sent.get("host").is_none(),
        "no upstream, so no Host: {sent}"
    );
    // A worker can verify the signature again from the entry alone.
    let again = signer(SECRET).sign(
        &field(entry, "id"),
        field(entry, "timestamp").parse().unwrap(),
        &entry.1[4].1,
    );
    assert_eq!(sent["svix-signature"], again.as_str());

    // A retry is a duplicate; a dropped or unmatched type never enters the stream.
    let (status, _, reply) = post(&url, &headers, &body).await;
    assert_eq!((status, &reply[..]), (200, DUPLICATE.as_bytes()));
    let url = hookwall.url("/hook");
    assert_eq!(
        send_kind(&url, "msg_session", "session.created").await.2,
        r#"{"outcome":"filtered"}"#
    );
    assert_eq!(
        send_kind(&url, "msg_org", "organization.created").await.2,
        r#"{"outcome":"filtered"}"#
    );
    assert_eq!(entries(&redis).len(), 1);

    let m = hookwall.metrics().await;
    let requests = |outcome| {
        m.get(
            "hookwall_requests_total",
            &[("route", "clerk"), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("queued"), Some(1.0));
    assert_eq!(requests("duplicate"), Some(1.0));
    assert_eq!(m.redis_commands("append", "ok"), 1.0);
    // The request's log line names the stream and the entry.
    let line = hookwall
        .log()
        .into_iter()
        .find(|l| l.contains(r#""outcome":"queued""#))
        .expect("a log line for the queued request");
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    let span = &line["span"];
    assert_eq!(span["name"], "request", "{line}");
    assert_eq!(span["stream"], STREAM, "{line}");
    assert_eq!(span["entry"], entry.0.as_str(), "{line}");
    assert_eq!(span["id"], "msg_exact", "{line}");
    assert_eq!(span["route"], "clerk", "{line}");
}

#[tokio::test]
async fn replicas_racing_on_one_id_append_it_once() {
    let redis = RedisServer::start();
    let (_dir, file) = config_file(&config(&redis, "redis", "1s"));
    let (a, b) = (Running::start(&file).await, Running::start(&file).await);
    redis_up(a.admin).await;
    redis_up(b.admin).await;

    // Each id sent to both replicas at the same moment, 40 times.
    let ids: Vec<String> = (0..40).map(|i| format!("msg_race_{i}")).collect();
    let races: Vec<_> = ids
        .iter()
        .map(|id| {
            let (url_a, url_b, id) = (a.url("/hook"), b.url("/hook"), id.clone());
            tokio::spawn(async move {
                let (x, y) = tokio::join!(
                    send_kind(&url_a, &id, "user.created"),
                    send_kind(&url_b, &id, "user.created")
                );
                let mut bodies = [x.2, y.2];
                bodies.sort();
                (id, (x.0, y.0), bodies)
            })
        })
        .collect();
    for race in races {
        let (id, statuses, bodies) = race.await.unwrap();
        assert_eq!(statuses, (200, 200), "{id}");
        assert_eq!(
            bodies,
            [DUPLICATE, QUEUED],
            "{id}: one queued, one duplicate"
        );
    }
    let all = entries(&redis);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for entry in &all {
        *seen.entry(field(entry, "id")).or_default() += 1;
    }
    assert_eq!(all.len(), ids.len());
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");

    // Later retries, on either replica, are duplicates.
    assert_eq!(
        send_kind(&b.url("/hook"), "msg_race_0", "user.created")
            .await
            .2,
        DUPLICATE
    );
    assert_eq!(
        send_kind(&a.url("/hook"), "msg_race_1", "user.created")
            .await
            .2,
        DUPLICATE
    );
    assert_eq!(entries(&redis).len(), ids.len());
    // Each id is marked delivered in Redis for the dedup ttl.
    assert!(redis
        .get("hookwall:dedup:clerk:msg_race_0")
        .unwrap()
        .starts_with("d:"));
}

#[tokio::test]
async fn redis_down_is_503_and_the_retry_is_queued_once_it_is_back() {
    for store in ["memory", "redis"] {
        let mut redis = RedisServer::start();
        let (_dir, file) = config_file(&config(&redis, store, "250ms"));
        let hookwall = Running::start(&file).await;
        redis_up(hookwall.admin).await;
        let url = hookwall.url("/hook");

        redis.stop();
        let (status, retry_after, body) = send_kind(&url, "msg_down", "user.created").await;
        assert_eq!(
            (status, retry_after.as_deref(), body.as_str()),
            (503, Some("5"), r#"{"error":"store_unavailable"}"#),
            "{store}"
        );

        redis.restart();
        let mut answers = Vec::new();
        until("the retry to be queued", async || {
            let answer = send_kind(&url, "msg_down", "user.created").await;
            answers.push(answer.0);
            answer.2 == QUEUED
        })
        .await;
        assert!(answers.iter().all(|&s| s == 503 || s == 200), "{answers:?}");
        let all = entries(&redis);
        assert_eq!(all.len(), 1, "{store}: queued once");
        assert_eq!(field(&all[0], "id"), "msg_down");
        // With store = "redis" a worker's delivered copy answers only when Redis cannot
        // (an operator may have forgotten the id through another replica): every worker's
        // link back, the duplicate is Redis's answer.
        redis_up(hookwall.admin).await;
        assert_eq!(
            send_kind(&url, "msg_down", "user.created").await.2,
            DUPLICATE,
            "{store}"
        );
        let m = hookwall.metrics().await;
        assert!(
            m.get(
                "hookwall_requests_total",
                &[("route", "clerk"), ("outcome", "store_unavailable")]
            ) >= Some(1.0)
        );
    }
}

/// Redis SIGSTOPped: the append times out (503) and the id is released; Redis then runs
/// the script it had received. With `store = "redis"` the sender's retry finds the id
/// delivered: one entry, nothing lost, nothing twice.
#[tokio::test]
async fn a_timed_out_append_loses_nothing_and_enters_once_with_the_redis_store() {
    let redis = RedisServer::start();
    let (_dir, file) = config_file(&config(&redis, "redis", "250ms"));
    let hookwall = Running::start(&file).await;
    redis_up(hookwall.admin).await;
    let url = hookwall.url("/hook");

    redis.pause();
    let (status, retry_after, body) = send_kind(&url, "msg_stall", "user.created").await;
    assert_eq!(
        (status, retry_after.as_deref(), body.as_str()),
        (503, Some("5"), r#"{"error":"store_unavailable"}"#)
    );
    redis.resume();
    let mut last = String::new();
    until("the retry to be answered 200", async || {
        let answer = send_kind(&url, "msg_stall", "user.created").await;
        last = answer.2;
        answer.0 == 200
    })
    .await;
    assert!(last == QUEUED || last == DUPLICATE, "{last}");
    let all = entries(&redis);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(field(&all[0], "id"), "msg_stall");
}

/// Where an example worker lives, and how to run it.
fn worker(language: &str) -> (PathBuf, Command) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/workers")
        .join(language);
    let command = match language {
        "node" => {
            assert!(
                dir.join("node_modules/redis").exists(),
                "run `npm ci` in examples/workers/node (scripts/test.sh does)"
            );
            let mut command = Command::new("node");
            command.arg("worker.js");
            command
        }
        _ => {
            let mut command = Command::new("python3");
            command.arg("worker.py");
            command
        }
    };
    (dir, command)
}

/// Both example workers drain what hookwall queued, in their own consumer group each:
/// they handle `user.created`/`updated`/`deleted`, reclaim the entry a dead consumer
/// left pending, and acknowledge everything.
#[tokio::test]
async fn the_example_workers_consume_and_acknowledge_what_was_queued() {
    let redis = RedisServer::start();
    let (_dir, file) = config_file(&config(&redis, "memory", "1s"));
    let hookwall = Running::start(&file).await;
    redis_up(hookwall.admin).await;
    let url = hookwall.url("/hook");
    for (id, kind) in [
        ("msg_w1", "user.created"),
        ("msg_w2", "user.updated"),
        ("msg_w3", "user.deleted"),
    ] {
        assert_eq!(send_kind(&url, id, kind).await.2, QUEUED);
    }

    for (language, group) in [("node", "node-workers"), ("python", "python-workers")] {
        // A consumer that read the first entry and died before acknowledging it.
        redis.cmd(&["XGROUP", "CREATE", STREAM, group, "0"]);
        redis.cmd(&[
            "XREADGROUP",
            "GROUP",
            group,
            "dead",
            "COUNT",
            "1",
            "STREAMS",
            STREAM,
            ">",
        ]);
        assert_eq!(pending(&redis, group), 1);

        let (dir, mut command) = worker(language);
        let mut child = command
            .current_dir(&dir)
            .env("REDIS_URL", redis.url())
            .env("STREAM", STREAM)
            .env("GROUP", group)
            .env("CLAIM_MIN_IDLE_MS", "0")
            .env("DRAIN", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{language} worker: {e}"));
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("the {language} worker did not finish within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(status.success(), "{language}: {status}\n{stdout}\n{stderr}");
        for (id, kind) in [
            ("msg_w1", "user.created"),
            ("msg_w2", "user.updated"),
            ("msg_w3", "user.deleted"),
        ] {
            let handled = format!("handled {kind} user_1 (webhook {id},");
            assert_eq!(
                stdout.matches(&handled).count(),
                1,
                "{language}: {handled}\n{stdout}\n{stderr}"
            );
        }
        assert_eq!(
            pending(&redis, group),
            0,
            "{language}: nothing left pending"
        );
        assert_eq!(lag(&redis, group), 0, "{language}: everything read");
    }
}

/// XINFO GROUPS: the field `name` of group `group`.
fn group_info(redis: &RedisServer, group: &str, name: &str) -> i64 {
    let redis::Value::Array(groups) = redis.cmd(&["XINFO", "GROUPS", STREAM]) else {
        panic!("XINFO GROUPS answers an array")
    };
    for info in groups {
        let fields: Vec<redis::Value> = match info {
            redis::Value::Array(fields) => fields,
            redis::Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            other => panic!("{other:?}"),
        };
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            other => format!("{other:?}"),
        };
        let map: HashMap<String, &redis::Value> = fields
            .chunks(2)
            .map(|pair| (text(&pair[0]), &pair[1]))
            .collect();
        if text(map["name"]) == group {
            return match map[name] {
                redis::Value::Int(n) => *n,
                other => panic!("{name}: {other:?}"),
            };
        }
    }
    panic!("no group {group}")
}

fn pending(redis: &RedisServer, group: &str) -> i64 {
    group_info(redis, group, "pending")
}

fn lag(redis: &RedisServer, group: &str) -> i64 {
    group_info(redis, group, "lag")
}
