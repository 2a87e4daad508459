//! Forget (contract §12): `POST /dedup/forget` on the admin port and `hookwall forget`. A
//! delivered id, forgotten, is forwarded once more on the sender's next resend and is a
//! duplicate again after that; in memory for the process, with `store = "redis"` for every
//! replica. Real sockets, real processes, a real redis-server.

use std::net::SocketAddr;
use std::process::{Command, Output};

use serde_json::json;
use sha2::Digest as _;

use crate::helpers::redis_server::RedisServer;
use crate::helpers::running::Running;
use crate::helpers::*;
use crate::providers::{github_sign, GITHUB_SECRET};

const BIN: &str = env!("CARGO_BIN_EXE_hookwall");

const TOKEN: &str = "an-admin-token-for-the-tests";

const DUPLICATE: &str = r#"{"outcome":"duplicate"}"#;
const FORWARDED: &str = "upstream says 200";

/// POSTs `body` to `admin`'s `/dedup/forget`, with `token` as a bearer token: status,
/// headers and body.
async fn forget_raw(
    admin: SocketAddr,
    token: Option<&str>,
    body: &[u8],
) -> (u16, http::HeaderMap, String) {
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    if let Some(token) = token {
        headers.push(("authorization".to_owned(), format!("Bearer {token}")));
    }
    let url = format!("http://{admin}/dedup/forget");
    let (status, headers, reply) = post(&url, &headers, body).await;
    (
        status,
        headers,
        String::from_utf8_lossy(&reply).into_owned(),
    )
}

/// Forgets `key` on `route` with the right token: status and body.
async fn forget(admin: SocketAddr, route: &str, key: &str) -> (u16, String) {
    let body = json!({ "route": route, "key": key }).to_string();
    let (status, _, reply) = forget_raw(admin, Some(TOKEN), body.as_bytes()).await;
    (status, reply)
}

/// Route `r` at `/hook` to `upstream`, with the admin token unless `token` is false.
fn proxy_config(upstream: &Upstream, token: bool, extra: &str) -> String {
    let admin = if token {
        format!("[admin]\ntoken = \"{TOKEN}\"\n")
    } else {
        String::new()
    };
    format!(
        "{admin}{extra}{}",
        one_route(upstream, "shutdown_delay = \"0s\"")
    )
}

#[tokio::test]
async fn without_a_token_forget_is_disabled() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&proxy_config(&upstream, false, "")).await;
    assert_eq!(send_event(&proxy.url("/hook"), "msg_1").await.0, 200);
    for token in [None, Some(TOKEN)] {
        let body = br#"{"route":"r","key":"msg_1"}"#;
        let (status, _, reply) = forget_raw(proxy.admin, token, body).await;
        assert_eq!(
            (status, reply.as_str()),
            (403, r#"{"error":"forget_disabled"}"#)
        );
    }
    assert_eq!(
        send_event(&proxy.url("/hook"), "msg_1").await,
        (200, DUPLICATE.to_owned()),
        "nothing was forgotten"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_unauthorized() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&proxy_config(&upstream, true, "")).await;
    assert_eq!(send_event(&proxy.url("/hook"), "msg_1").await.0, 200);
    let body = br#"{"route":"r","key":"msg_1"}"#;
    let longer = format!("{TOKEN}x");
    let wrongs = [None, Some(""), Some(&TOKEN[1..]), Some(longer.as_str())];
    for token in wrongs {
        let (status, headers, reply) = forget_raw(proxy.admin, token, body).await;
        assert_eq!(
            (status, reply.as_str()),
            (401, r#"{"error":"unauthorized"}"#),
            "{token:?}"
        );
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
    // Another scheme carrying the right token is refused too.
    let url = format!("http://{}/dedup/forget", proxy.admin);
    let basic = [("authorization".to_owned(), format!("Basic {TOKEN}"))];
    assert_eq!(post(&url, &basic, body).await.0, 401);
    assert_eq!(
        send_event(&proxy.url("/hook"), "msg_1").await,
        (200, DUPLICATE.to_owned())
    );
    // The right one forgets.
    assert_eq!(
        forget(proxy.admin, "r", "msg_1").await,
        (200, r#"{"forgotten":true}"#.to_owned())
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_keys_are_404_and_bad_bodies_refused() {
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&proxy_config(&upstream, true, "")).await;
    assert_eq!(
        forget(proxy.admin, "nope", "msg_1").await,
        (404, r#"{"error":"unknown_route"}"#.to_owned())
    );
    assert_eq!(
        forget(proxy.admin, "r", "msg_never").await,
        (404, r#"{"forgotten":false}"#.to_owned())
    );
    let bad_request = (400, r#"{"error":"bad_request"}"#.to_owned());
    let bodies: [&[u8]; 5] = [
        b"{",
        b"[]",
        br#"{"route":"r"}"#,
        br#"{"route":"r","key":""}"#,
        br#"{"route":"r","key":"msg_1","id":"msg_1"}"#,
    ];
    for body in bodies {
        let (status, _, reply) = forget_raw(proxy.admin, Some(TOKEN), body).await;
        assert_eq!(
            (status, reply),
            bad_request,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let large = json!({ "route": "r", "key": "k".repeat(5000) }).to_string();
    let (status, _, reply) = forget_raw(proxy.admin, Some(TOKEN), large.as_bytes()).await;
    assert_eq!(
        (status, reply.as_str()),
        (413, r#"{"error":"body_too_large"}"#)
    );
    let (status, headers, _) = get(&format!("http://{}/dedup/forget", proxy.admin)).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");
    proxy.shutdown().await;
}

/// While the id is being delivered, forget is 409 and changes nothing: once the forward
/// ends delivered, the id is a duplicate, and can be forgotten then.
#[tokio::test]
async fn a_key_being_delivered_is_409_and_nothing_changes() {
    let (upstream, arrived, release) = holding_upstream().await;
    let proxy = Proxy::start(&proxy_config(&upstream, true, "")).await;
    let first = delivering(proxy.url("/hook"), &arrived, "msg_held", "user.created").await;
    assert_eq!(
        forget(proxy.admin, "r", "msg_held").await,
        (409, r#"{"error":"in_flight"}"#.to_owned())
    );
    assert_eq!(send_event(&proxy.url("/hook"), "msg_held").await.0, 409);
    release.notify_one();
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(
        send_event(&proxy.url("/hook"), "msg_held").await,
        (200, DUPLICATE.to_owned())
    );
    assert_eq!(forget(proxy.admin, "r", "msg_held").await.0, 200);
    assert_eq!(upstream.ids()["msg_held"], 1);
    proxy.shutdown().await;
}

/// A config for `Running`: JSON logs, addresses picked by the OS unless `admin` is given,
/// the admin token in the file `token` beside it (unless `token` is false), route `hook`
/// at `/hook` with `extra` before it.
fn running_config(
    dir: &std::path::Path,
    upstream: &Upstream,
    admin: &str,
    token: bool,
    extra: &str,
) -> std::path::PathBuf {
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    let token = if token { "token = \"file:token\"" } else { "" };
    let file = dir.join("hookwall.toml");
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"{admin}\"\n{token}\n\
         [log]\nformat = \"json\"\n[limits]\nshutdown_delay = \"0s\"\n{extra}\n\
         [[routes]]\nname = \"hook\"\npath = \"/hook\"\nsecrets = [\"file:secret\"]\n\
         upstream = \"{}\"\n",
        upstream.url("/")
    );
    std::fs::write(&file, text).unwrap();
    file
}

/// The whole loop on the real binary: delivered, a duplicate, forgotten, forwarded once
/// more, a duplicate again; counted in `hookwall_dedup_forgotten_total` and logged at
/// warn with route and key, the token in no log line.
#[tokio::test]
async fn forgotten_then_forwarded_once_then_a_duplicate_counted_and_logged() {
    let upstream = Upstream::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let file = running_config(dir.path(), &upstream, "127.0.0.1:0", true, "");
    let proxy = Running::start(&file).await;
    let hook = proxy.url("/hook");
    assert_eq!(
        send_event(&hook, "msg_1").await,
        (200, FORWARDED.to_owned())
    );
    assert_eq!(
        send_event(&hook, "msg_1").await,
        (200, DUPLICATE.to_owned())
    );
    assert_eq!(
        forget(proxy.admin, "hook", "msg_1").await,
        (200, r#"{"forgotten":true}"#.to_owned())
    );
    assert_eq!(
        send_event(&hook, "msg_1").await,
        (200, FORWARDED.to_owned())
    );
    assert_eq!(
        send_event(&hook, "msg_1").await,
        (200, DUPLICATE.to_owned())
    );
    assert_eq!(upstream.ids()["msg_1"], 2);

    let metrics = proxy.metrics().await;
    let forgotten = |route| metrics.get("hookwall_dedup_forgotten_total", &[("route", route)]);
    assert_eq!(forgotten("hook"), Some(1.0));
    assert_eq!(metrics.requests("hook", "forwarded"), 2.0);
    assert_eq!(metrics.requests("hook", "duplicate"), 2.0);

    let mut warned = None;
    until("the warn line of the forget", async || {
        warned = proxy.log().into_iter().find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(&line).ok()?;
            (v["level"] == "WARN" && v["key"] == "msg_1").then_some(v)
        });
        warned.is_some()
    })
    .await;
    let warned = warned.unwrap();
    assert_eq!(warned["route"], "hook", "{warned}");
    assert!(
        warned["message"].as_str().unwrap().contains("forgotten"),
        "{warned}"
    );
    let log = proxy.log();
    assert!(log.iter().all(|line| !line.contains(TOKEN)), "{log:#?}");
}

/// `store = "redis"`: an id delivered through replica A and forgotten through replica B
/// is forwarded on its next resend through A, though A's memory had it as delivered.
/// A claim in flight is left alone (409), and without Redis forget is 503.
#[tokio::test]
async fn with_redis_a_forget_through_one_replica_holds_on_the_other() {
    let mut redis = RedisServer::start();
    let upstream = Upstream::ok().await;
    let store = format!(
        "[dedup]\nstore = \"redis\"\n[redis]\nurl = \"{}\"\ntimeout = \"250ms\"\n",
        redis.url()
    );
    let a = Proxy::start(&proxy_config(&upstream, true, &store)).await;
    let b = Proxy::start(&proxy_config(&upstream, true, &store)).await;
    redis_up(a.admin).await;
    redis_up(b.admin).await;
    let key = "hookwall:dedup:r:msg_r";

    assert_eq!(
        send_event(&a.url("/hook"), "msg_r").await,
        (200, FORWARDED.to_owned())
    );
    until("A's delivered mark", async || {
        redis.get(key).is_some_and(|v| v.starts_with("d:"))
    })
    .await;
    // Both replicas now hold it as delivered in their own memory.
    for proxy in [&a, &b] {
        let resend = send_event(&proxy.url("/hook"), "msg_r").await;
        assert_eq!(resend, (200, DUPLICATE.to_owned()));
    }
    assert_eq!(
        forget(b.admin, "r", "msg_r").await,
        (200, r#"{"forgotten":true}"#.to_owned())
    );
    assert_eq!(redis.get(key), None);
    assert_eq!(
        send_event(&a.url("/hook"), "msg_r").await,
        (200, FORWARDED.to_owned())
    );
    assert_eq!(upstream.ids()["msg_r"], 2);
    until("A's new delivered mark", async || {
        redis.get(key).is_some_and(|v| v.starts_with("d:"))
    })
    .await;
    for proxy in [&a, &b] {
        let resend = send_event(&proxy.url("/hook"), "msg_r").await;
        assert_eq!(resend, (200, DUPLICATE.to_owned()));
    }
    assert_eq!(upstream.ids()["msg_r"], 2);
    assert_eq!(
        forget(a.admin, "r", "msg_never").await,
        (404, r#"{"forgotten":false}"#.to_owned())
    );

    // Another replica's claim: left alone.
    redis.cmd(&[
        "SET",
        "hookwall:dedup:r:msg_claimed",
        "i:a-claim",
        "PX",
        "60000",
    ]);
    assert_eq!(
        forget(b.admin, "r", "msg_claimed").await,
        (409, r#"{"error":"in_flight"}"#.to_owned())
    );
    assert_eq!(
        redis.get("hookwall:dedup:r:msg_claimed").as_deref(),
        Some("i:a-claim")
    );

    let metrics = b.metrics().await;
    assert_eq!(
        metrics.get("hookwall_dedup_forgotten_total", &[("route", "r")]),
        Some(1.0)
    );
    assert_eq!(metrics.redis_commands("forget", "ok"), 2.0);

    redis.stop();
    let body = br#"{"route":"r","key":"msg_r"}"#;
    let (status, headers, reply) = forget_raw(b.admin, Some(TOKEN), body).await;
    assert_eq!(
        (status, reply.as_str()),
        (503, r#"{"error":"store_unavailable"}"#)
    );
    assert_eq!(headers["retry-after"], "5");
    a.shutdown().await;
    b.shutdown().await;
}

/// A GitHub route dedups on the digest of the signed body (contract §10): forget takes
/// that key, not the unsigned delivery id.
#[tokio::test]
async fn a_github_digest_key_is_forgotten() {
    let upstream = Upstream::ok().await;
    let config = format!(
        "[admin]\ntoken = \"{TOKEN}\"\n[[routes]]\nname = \"gh\"\npath = \"/gh\"\n\
         secrets = [{GITHUB_SECRET:?}]\nprovider = \"github\"\nupstream = \"{}\"\n",
        upstream.url("/")
    );
    let proxy = Proxy::start(&config).await;
    let body = r#"{"ref":"refs/heads/main","commits":[{"id":"abc"}]}"#;
    let signature = github_sign(json!([{"secret": GITHUB_SECRET, "body": body}]));
    let deliver = async |delivery: &str| {
        let headers = [
            ("x-hub-signature-256".to_owned(), signature[0].clone()),
            ("x-github-event".to_owned(), "push".to_owned()),
            ("x-github-delivery".to_owned(), delivery.to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        let (status, _, reply) = post(&proxy.url("/gh"), &headers, body.as_bytes()).await;
        (status, String::from_utf8_lossy(&reply).into_owned())
    };
    let key = format!("sha256:{:x}", sha2::Sha256::digest(body.as_bytes()));

    assert_eq!(deliver("delivery-1").await, (200, FORWARDED.to_owned()));
    assert_eq!(deliver("delivery-2").await, (200, DUPLICATE.to_owned()));
    assert_eq!(
        forget(proxy.admin, "gh", "delivery-1").await,
        (404, r#"{"forgotten":false}"#.to_owned()),
        "the delivery id is not the key"
    );
    assert_eq!(
        forget(proxy.admin, "gh", &key).await,
        (200, r#"{"forgotten":true}"#.to_owned())
    );
    assert_eq!(deliver("delivery-3").await, (200, FORWARDED.to_owned()));
    assert_eq!(deliver("delivery-4").await, (200, DUPLICATE.to_owned()));
    assert_eq!(upstream.count(), 2);
    proxy.shutdown().await;
}

/// `hookwall forget`, run as an operator runs it (on a blocking thread: the proxy it asks
/// may be in this process): its exit code and the line it prints.
async fn hookwall_forget(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(BIN);
    command
        .arg("forget")
        .args(args)
        .envs(env.iter().copied())
        .env_remove("HOOKWALL_CONFIG");
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::task::spawn_blocking(move || command.output().expect("hookwall runs"))
        .await
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.code(), said)
}

/// A port free now on every address (the admin side binds it on 0.0.0.0 next).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Each exit code of `hookwall forget` against a running proxy: 0 forgotten, 3 not
/// remembered or being delivered, 1 usage or config, 2 unreachable or refused. The admin
/// address and token come from the config (admin.addr 0.0.0.0 is reached on 127.0.0.1,
/// the token from a `file:`), or from `--admin` and `--token` (an `env:` reference).
#[tokio::test]
async fn the_cli_forgets_and_says_so_with_each_exit_code() {
    let (upstream, arrived, release) = holding_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("0.0.0.0:{}", free_port());
    let file = running_config(dir.path(), &upstream, &admin, true, "");
    let proxy = Running::start(&file).await;
    let config = file.to_str().unwrap();
    let hook = proxy.url("/hook");
    let sent = delivering(hook.clone(), &arrived, "msg_c", "user.created").await;
    release.notify_one();
    assert_eq!(sent.await.unwrap().0, 200);

    let (code, said) = hookwall_forget(&["-c", config, "--route", "hook", "msg_c"], &[]).await;
    assert_eq!(code, Some(0), "{said}");
    assert!(said.starts_with("forgotten: msg_c on route hook"), "{said}");
    let (code, said) = hookwall_forget(&["-c", config, "--route", "hook", "msg_c"], &[]).await;
    assert_eq!(code, Some(3), "{said}");
    assert!(said.starts_with("not remembered: msg_c"), "{said}");

    // Being delivered: 3, and nothing changes.
    let held = delivering(hook.clone(), &arrived, "msg_h", "user.created").await;
    let (code, said) = hookwall_forget(&["-c", config, "--route", "hook", "msg_h"], &[]).await;
    assert_eq!(code, Some(3), "{said}");
    assert!(said.starts_with("being delivered now: msg_h"), "{said}");
    release.notify_one();
    assert_eq!(held.await.unwrap().0, 200);

    // --admin and --token, the token from the environment: no config needed.
    let admin_url = format!("http://127.0.0.1:{}", proxy.admin.port());
    let env_token = [("FORGET_TEST_TOKEN", TOKEN)];
    let args = [
        "--admin",
        &admin_url,
        "--token",
        "env:FORGET_TEST_TOKEN",
        "--route",
        "hook",
        "msg_h",
    ];
    let (code, said) = hookwall_forget(&args, &env_token).await;
    assert_eq!(code, Some(0), "{said}");

    // Usage and config: 1.
    let (code, said) = hookwall_forget(&["-c", config, "--route", "nope", "msg_c"], &[]).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("no route named \"nope\""), "{said}");
    let (code, said) = hookwall_forget(
        &["-c", "/nonexistent/hookwall.toml", "--route", "hook", "x"],
        &[],
    )
    .await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("cannot read the config file"), "{said}");
    let (code, said) = hookwall_forget(&["-c", config, "msg_c"], &[]).await;
    assert_eq!(code, Some(1), "--route is required: {said}");
    let tokenless = tempfile::tempdir().unwrap();
    let tokenless_file = running_config(tokenless.path(), &upstream, "127.0.0.1:0", false, "");
    let tokenless_config = tokenless_file.to_str().unwrap();
    let (code, said) =
        hookwall_forget(&["-c", tokenless_config, "--route", "hook", "x"], &[]).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("admin.token is not set"), "{said}");
    let (code, said) = hookwall_forget(
        &[
            "--admin",
            &admin_url,
            "--token",
            "env:FORGET_UNSET",
            "--route",
            "hook",
            "x",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(1), "{said}");

    // Refused or unreachable: 2.
    let (code, said) = hookwall_forget(
        &[
            "-c",
            config,
            "--token",
            "wrong-token-of-some-length",
            "--route",
            "hook",
            "msg_c",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("refused: the admin token"), "{said}");
    let disabled = Proxy::start(&proxy_config(&upstream, false, "")).await;
    let disabled_url = format!("http://{}", disabled.admin);
    let args = [
        "--admin",
        &disabled_url,
        "--token",
        TOKEN,
        "--route",
        "r",
        "x",
    ];
    let (code, said) = hookwall_forget(&args, &[]).await;
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("forget is disabled"), "{said}");
    disabled.shutdown().await;
    let (refusing, _held) = refusing_addr();
    let refusing_url = format!("http://{refusing}");
    let args = [
        "--admin",
        &refusing_url,
        "--token",
        TOKEN,
        "--route",
        "hook",
        "x",
    ];
    let (code, said) = hookwall_forget(&args, &[]).await;
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("cannot reach the admin side"), "{said}");
    assert_eq!(upstream.ids()["msg_c"], 1);
}
