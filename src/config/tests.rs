//! Config loading and validation: defaults, every rule, environment overrides.
use super::*;
use crate::route::Action;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookwall.toml");
    std::fs::write(&file, text).unwrap();
    std::fs::write(dir.path().join("current"), format!("{SECRET}\n")).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_with_env(&file, &env)
}

fn problems(text: &str, env: &[(&str, &str)]) -> Vec<String> {
    let err = load(text, env).expect_err("config should be invalid");
    err.problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect()
}

fn minimal() -> String {
    format!(
        "[[routes]]\npath = \"/hook\"\nsecrets = [\"{SECRET}\"]\nupstream = \"http://127.0.0.1:3000/x\"\n"
    )
}

#[test]
fn defaults_fill_everything_but_routes() {
    let config = load(&minimal(), &[]).unwrap();
    assert_eq!(config.listen.addr.to_string(), "0.0.0.0:8080");
    assert_eq!(config.admin_addr.to_string(), "0.0.0.0:9090");
    assert_eq!(config.limits.max_body_bytes, 1024 * 1024);
    assert_eq!(config.tolerance, Duration::from_secs(300));
    assert_eq!(config.dedup.ttl, Duration::from_secs(900));
    assert_eq!(config.routes[0].name.as_ref(), "/hook");
    assert_eq!(config.routes[0].upstream_timeout, Duration::from_secs(10));
    assert_eq!(config.routes[0].max_in_flight, defaults::MAX_IN_FLIGHT);
}

#[test]
fn default_ttl_is_three_tolerances_when_longer() {
    let text = format!("[verify]\ntolerance = \"10m\"\n{}", minimal());
    assert_eq!(
        load(&text, &[]).unwrap().dedup.ttl,
        Duration::from_secs(1800)
    );
}

#[test]
fn four_problems_at_once_each_with_its_key() {
    let text = r#"
[listen]
adress = "0.0.0.0:8080"

[[routes]]
path = "/a"
secrets = ["env:HOOKWALL_TEST_UNSET_SECRET"]
upstream = "ftp://x"

[[routes]]
path = "/a"
secrets = ["file:current"]
upstream = "http://127.0.0.1:3000/"
"#;
    let found = problems(text, &[]);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(
        found.contains(&"listen.adress: unknown key".to_string()),
        "{found:#?}"
    );
    assert!(found.contains(
        &"routes[0].secrets[0]: env:HOOKWALL_TEST_UNSET_SECRET: environment variable HOOKWALL_TEST_UNSET_SECRET is not set".to_string()
    ), "{found:#?}");
    assert!(found.contains(&"routes[0].upstream: \"ftp://x\" is not an http(s) URL".to_string()));
    assert!(found.contains(&"routes[1].path: \"/a\" is used by an earlier route".to_string()));
}

#[test]
fn display_is_file_key_message() {
    let err = load("[[routes]]\npath = \"/a\"\n", &[]).unwrap_err();
    let text = err.to_string();
    for line in text.lines() {
        assert!(line.contains("hookwall.toml: routes[0]."), "{line}");
    }
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
fn every_rule_of_validation() {
    let cases: &[(&str, &str)] = &[
        ("", "routes: no routes"),
        ("[[routes]]\npath=\"/a\"\nsecrets=[\"whsec_\"]\nupstream=\"http://h/\"", "routes[0].secrets[0]: literal: secret is empty"),
        ("[[routes]]\npath=\"/a\"\nsecrets=[\"no base64!\"]\nupstream=\"http://h/\"", "routes[0].secrets[0]: literal: secret is not base64"),
        ("[[routes]]\npath=\"/a\"\nsecrets=[]\nupstream=\"http://h/\"", "routes[0].secrets: missing"),
        ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]", "routes[0].upstream: missing"),
        ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"\n[[routes.rules]]\nevents=[\"*\"]\naction=\"drop\"", "routes[0].upstream: a route has either"),
        ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\n[[routes.rules]]\nevents=[]\naction=\"drop\"", "routes[0].rules[0].events: is empty"),
        ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\n[[routes.rules]]\nevents=[\"*\"]", "routes[0].rules[0].upstream: missing"),
        ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\n[[routes.rules]]\nevents=[\"*\"]\naction=\"drop\"\nupstream=\"http://h/\"", "routes[0].rules[0].action: a rule has one of"),
        ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\n[[routes.rules]]\nevents=[\"*\"]\naction=\"keep\"", "routes[0].rules[0].action: \"keep\" is not an action"),
        ("[[routes]]\nname=\"_unmatched\"\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "routes[0].name: \"_unmatched\" is reserved"),
        ("[[routes]]\nname=\"x\"\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"\n[[routes]]\nname=\"x\"\npath=\"/b\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "routes[1].name: \"x\" is used by an earlier route"),
        ("[[routes]]\npath=\"a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "routes[0].path: \"a\" must start with"),
        ("[dedup]\nttl=\"1m\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "dedup.ttl: \"1m\" is shorter than verify.tolerance"),
        ("[dedup]\ncapacity=0\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "dedup.capacity: 0 must be at least 1"),
        ("[limits]\nmax_body_bytes=0\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "limits.max_body_bytes: 0 must be at least 1"),
        ("[limits]\nbody_read_timeout=\"0s\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "limits.body_read_timeout: \"0s\" must be longer than zero"),
        ("[limits]\nshutdown_grace=\"soon\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "limits.shutdown_grace: \"soon\" is not a duration"),
        ("[log]\nformat=\"xml\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "log.format: \"xml\" is neither"),
        ("[log]\nlevel=\"=[\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "log.level: invalid log filter"),
        ("[listen]\naddr=\"nowhere\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "listen.addr: \"nowhere\" is not an address"),
        ("[listen]\ntls_cert=\"c.pem\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "listen.tls_key: missing"),
        ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"\nca_file=\"nope.pem\"", "routes[0].ca_file: cannot read"),
        ("[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"\nmax_in_flight=0", "routes[0].max_in_flight: 0 must be at least 1"),
        ("[limits]\nmax_headers=\"many\"\n[[routes]]\npath=\"/a\"\nsecrets=[\"S\"]\nupstream=\"http://h/\"", "limits.max_headers: invalid type"),
        ("this is not toml", ""),
    ];
    for (text, expected) in cases {
        let text = text.replace("\"S\"", &format!("\"{SECRET}\""));
        let found = problems(&text, &[]);
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{text}\nexpected {expected:?} in {found:#?}"
        );
    }
}

#[test]
fn file_secrets_are_read_relative_to_the_config_and_trimmed() {
    let text = minimal().replace(SECRET, "file:current");
    let config = load(&text, &[]).unwrap();
    assert!(config.routes[0].secrets[0]
        .to_string()
        .ends_with("/current"));
}

#[test]
fn environment_overrides_and_their_errors() {
    let config = load(
        &minimal(),
        &[
            ("HOOKWALL_LISTEN__ADDR", "127.0.0.1:18080"),
            ("HOOKWALL_LIMITS__MAX_BODY_BYTES", "2048"),
            ("HOOKWALL_DEDUP__TTL", "1h"),
            ("HOOKWALL_CONFIG", "ignored.toml"),
            ("HOOKWALL_LOG", "debug"),
        ],
    )
    .unwrap();
    assert_eq!(config.listen.addr.to_string(), "127.0.0.1:18080");
    assert_eq!(config.limits.max_body_bytes, 2048);
    assert_eq!(config.dedup.ttl, Duration::from_secs(3600));

    let found = problems(
        &minimal(),
        &[
            ("HOOKWALL_LISTEN__ADRESS", "x"),
            ("HOOKWALL_ROUTES__PATH", "/x"),
            ("HOOKWALL_LOG", "=["),
            ("HOOKWALL_LIMITS__MAX_HEADERS", "lots"),
        ],
    );
    assert!(
        found.contains(&"HOOKWALL_LISTEN__ADRESS: names no configuration key".into()),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("HOOKWALL_ROUTES__PATH: routes cannot")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("HOOKWALL_LOG: invalid log filter")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("HOOKWALL_LIMITS__MAX_HEADERS: invalid type")),
        "{found:#?}"
    );
}

/// Kubernetes puts `HOOKWALL_SERVICE_HOST`, `HOOKWALL_PORT`, ... into every pod of a
/// namespace with a Service named `hookwall`: they are not overrides and must not stop
/// hookwall from starting; `check` lists them.
#[test]
fn service_link_variables_are_not_read() {
    let k8s = [
        ("HOOKWALL_SERVICE_HOST", "10.0.0.7"),
        ("HOOKWALL_SERVICE_PORT", "8080"),
        ("HOOKWALL_PORT", "tcp://10.0.0.7:8080"),
        ("HOOKWALL_PORT_8080_TCP_ADDR", "10.0.0.7"),
        ("HOOKWALL_PORT_8080_TCP_PROTO", "tcp"),
    ];
    let mut env = k8s.to_vec();
    env.push(("HOOKWALL_LIMITS__MAX_HEADERS", "50"));
    let config = load(&minimal(), &env).unwrap();
    assert_eq!(config.limits.max_headers, 50);
    let names: Vec<&str> = env.iter().map(|(name, _)| *name).collect();
    let unread = unread_env(names.iter().copied().chain(["HOOKWALL_LOG", "PATH"]));
    assert_eq!(unread, k8s.map(|(name, _)| name));
}

#[test]
fn connection_drain_and_forward_limits_default_and_validate() {
    let config = load(&minimal(), &[]).unwrap();
    let l = &config.limits;
    assert_eq!(l.idle_timeout, Duration::from_secs(60));
    assert_eq!(l.shutdown_delay, Duration::from_secs(5));
    assert_eq!(l.max_buffered_bytes, 64 * 1024 * 1024);
    assert!(l.workers >= 1);
    assert_eq!(config.routes[0].upstream_deadline, Duration::from_secs(300));
    // A zero delay is allowed (tests, the demo); zero elsewhere is not.
    let text = format!(
        "[limits]\nshutdown_delay = \"0s\"\nworkers = 3\nupstream_deadline = \"2m\"\n{}",
        minimal()
    );
    let config = load(&text, &[]).unwrap();
    assert_eq!(config.limits.shutdown_delay, Duration::ZERO);
    assert_eq!(config.limits.workers, 3);
    assert_eq!(config.routes[0].upstream_deadline, Duration::from_secs(120));
    let found = problems(
        &format!(
            "[limits]\nidle_timeout = \"0s\"\nworkers = 0\nmax_buffered_bytes = 10\n{}",
            minimal().replace("upstream = ", "upstream_deadline = \"1s\"\nupstream = ")
        ),
        &[],
    );
    for want in [
        "limits.idle_timeout: \"0s\" must be longer than zero",
        "limits.workers: 0 must be at least 1",
        "limits.max_buffered_bytes: 10 is below limits.max_body_bytes",
        "routes[0].upstream_deadline: 1s is shorter than upstream_timeout",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(want)),
            "{want}: {found:#?}"
        );
    }
}

/// `connect_timeout` is 3 s by default, per route too, never longer than the route's
/// `upstream_timeout`: written longer, an error where it is written; inherited, capped.
#[test]
fn connect_timeout_defaults_and_is_never_above_upstream_timeout() {
    let config = load(&minimal(), &[]).unwrap();
    assert_eq!(config.routes[0].connect_timeout, Duration::from_secs(3));
    assert_eq!(config.limits.min_body_rate, 65536);
    let short = minimal().replace("upstream = ", "upstream_timeout = \"1s\"\nupstream = ");
    let config = load(&short, &[]).unwrap();
    assert_eq!(config.routes[0].connect_timeout, Duration::from_secs(1));
    let own = minimal().replace("upstream = ", "connect_timeout = \"500ms\"\nupstream = ");
    let config = load(&format!("[limits]\nmin_body_rate = 0\n{own}"), &[]).unwrap();
    assert_eq!(config.routes[0].connect_timeout, Duration::from_millis(500));
    assert_eq!(config.limits.min_body_rate, 0);
    let found = problems(
        &format!(
            "[limits]\nconnect_timeout = \"20s\"\n{}",
            minimal().replace(
                "upstream = ",
                "upstream_timeout = \"2s\"\nconnect_timeout = \"5s\"\nupstream = "
            )
        ),
        &[],
    );
    for want in [
        "limits.connect_timeout: 20s is longer than upstream_timeout (10s)",
        "routes[0].connect_timeout: 5s is longer than upstream_timeout (2s)",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(want)),
            "{want}: {found:#?}"
        );
    }
    assert_eq!(found.len(), 2, "{found:#?}");
}

#[test]
fn cpu_quota_rounds_up_and_no_quota_is_none() {
    use super::build::{cpu_quota_v1, cpu_quota_v2};
    assert_eq!(cpu_quota_v2("150000 100000\n"), Some(2));
    assert_eq!(cpu_quota_v2("100000 100000"), Some(1));
    assert_eq!(cpu_quota_v2("50000 100000"), Some(1));
    assert_eq!(cpu_quota_v2("max 100000"), None);
    assert_eq!(cpu_quota_v1("-1", "100000"), None);
    assert_eq!(cpu_quota_v1("250000\n", "100000\n"), Some(3));
}

#[test]
fn missing_file_is_an_error_not_an_empty_config() {
    let err = Config::load_with_env(Path::new("/nonexistent/hookwall.toml"), &[]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/hookwall.toml: cannot read"),
        "{err}"
    );
}

fn stream_route(rule: &str) -> String {
    format!(
        "[[routes]]\npath = \"/hook\"\nsecrets = [\"{SECRET}\"]\n[[routes.rules]]\nevents = [\"user.*\"]\n{rule}\n"
    )
}

#[test]
fn stream_rules_need_redis_and_exclude_upstream_and_action() {
    let redis = "[redis]\nurl = \"redis://127.0.0.1:6379/0\"\n";
    let config = load(
        &format!("{redis}{}", stream_route("stream = \"clerk-events\"")),
        &[],
    )
    .unwrap();
    assert_eq!(
        config.routes[0].rules.0[0].action,
        Action::Stream("clerk-events".into())
    );
    assert_eq!(config.dedup.store, StoreKind::Memory);

    assert_eq!(
        problems(&stream_route("stream = \"clerk-events\""), &[]),
        ["routes[0].rules[0].stream: a stream rule needs a [redis] section (at least `url`)"]
    );
    for both in [
        "stream = \"s\"\nupstream = \"http://127.0.0.1:3000/\"",
        "stream = \"s\"\naction = \"drop\"",
    ] {
        assert_eq!(
            problems(&format!("{redis}{}", stream_route(both)), &[]),
            ["routes[0].rules[0].action: a rule has one of `upstream`, `stream` or `action = \"drop\"`, not several"],
            "{both}"
        );
    }
    for bad in ["", "two words"] {
        let found = problems(
            &format!("{redis}{}", stream_route(&format!("stream = {bad:?}"))),
            &[],
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("routes[0].rules[0].stream: "),
            "{found:?}"
        );
    }
    // A broken [redis] is reported once, not again for each stream rule.
    let found = problems(
        &format!(
            "[redis]\nurl = \"http://x\"\n{}",
            stream_route("stream = \"s\"")
        ),
        &[],
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("redis.url: "), "{found:?}");
}

#[test]
fn redis_ca_file_needs_tls_and_a_certificate() {
    let route = minimal();
    let found = problems(
        &format!("[redis]\nurl = \"redis://127.0.0.1:6379/0\"\nca_file = \"ca.pem\"\n{route}"),
        &[],
    );
    assert_eq!(found, ["redis.ca_file: needs a rediss:// URL (TLS)"]);
    let found = problems(
        &format!("[redis]\nurl = \"rediss://127.0.0.1:6379/0\"\nca_file = \"/nonexistent/ca.pem\"\n{route}"),
        &[],
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("redis.ca_file: cannot read /nonexistent/ca.pem"),
        "{found:?}"
    );
}

/// Each provider builds its scheme; a declaration that cannot work, a table for the wrong
/// provider and a shadow route without its upstream are each refused, with their keys.
#[test]
fn providers_and_shadow_routes_validate() {
    let route = |settings: &str| {
        format!(
            "[[routes]]\npath = \"/hook\"\nsecrets = [\"{SECRET}\"]\nupstream = \"http://127.0.0.1:3000/x\"\n{settings}\n"
        )
    };
    for provider in ["svix", "stripe", "github", "shopify"] {
        let config = load(&route(&format!("provider = \"{provider}\"")), &[]).unwrap();
        assert_eq!(config.routes[0].scheme.provider(), provider);
        assert!(config.routes[0].enforce);
    }
    let slack = "provider = \"hmac\"\n[routes.hmac]\nsignature_header = \"X-Slack-Signature\"\n\
                 signature_prefix = \"v0=\"\nsigned_content = \"v0:{timestamp}:{body}\"\n\
                 timestamp_header = \"X-Slack-Request-Timestamp\"\nid = \"json:/event_id\"";
    assert_eq!(
        load(&route(slack), &[]).unwrap().routes[0]
            .scheme
            .provider(),
        "hmac"
    );
    let shadow = load(&route("enforce = false"), &[]).unwrap();
    assert!(!shadow.routes[0].enforce);

    let cases = [
        ("provider = \"paypal\"", "routes[0].provider: \"paypal\" is not a provider"),
        ("provider = \"stripe\"\n[routes.hmac]\nid = \"header:x\"", "routes[0].hmac: [routes.hmac] declares a scheme"),
        ("provider = \"hmac\"", "routes[0].hmac: missing"),
        (
            "provider = \"hmac\"\n[routes.hmac]\nsignature_header = \"s\"\nid = \"header:i\"\nsigned_content = \"{id}\"",
            "routes[0].hmac.signed_content: \"{id}\" has no {body}",
        ),
        (
            "provider = \"hmac\"\n[routes.hmac]\nsignature_header = \"s\"\nid = \"header:i\"\nsigned_content = \"{timestamp}.{body}\"",
            "routes[0].hmac.signed_content: {timestamp} needs a timestamp_header",
        ),
        (
            "provider = \"hmac\"\n[routes.hmac]\nsignature_header = \"s\"\nid = \"json:/id\"\nsigned_content = \"{id}.{body}\"",
            "routes[0].hmac.signed_content: {id} needs an id from a header",
        ),
        (
            "provider = \"hmac\"\n[routes.hmac]\nsignature_header = \"s\"\nid = \"header:i\"\ntimestamp_header = \"t\"",
            "routes[0].hmac.timestamp_header: timestamp_header is set but {timestamp} is not in signed_content",
        ),
        (
            "provider = \"hmac\"\n[routes.hmac]\nsignature_header = \"s\"\nid = \"header:i\"\nsigned_content = \"{id}{body}\"",
            "routes[0].hmac.signed_content: \"{id}{body}\": placeholders need literal text between them",
        ),
        (
            "provider = \"hmac\"\n[routes.hmac]\nsignature_header = \"s\"\nid = \"body:/id\"",
            "routes[0].hmac.id: \"body:/id\" is neither",
        ),
        (
            "provider = \"hmac\"\n[routes.hmac]\nsignature_header = \"s\"\nid = \"header:i\"\nalgorithm = \"md5\"",
            "routes[0].hmac.algorithm: \"md5\" is not sha256, sha512 or sha1",
        ),
        (
            "provider = \"hmac\"\n[routes.hmac]\nid = \"header:i\"",
            "routes[0].hmac.signature_header: missing",
        ),
    ];
    for (settings, want) in cases {
        let found = problems(&route(settings), &[]);
        assert!(
            found.iter().any(|p| p.starts_with(want)),
            "{want}: {found:#?}"
        );
    }
    let not_base64 = route(
        "provider = \"hmac\"\n[routes.hmac]\nsignature_header = \"s\"\nid = \"header:i\"\nsecret_encoding = \"base64\"",
    )
    .replace(SECRET, "not base64!");
    let found = problems(&not_base64, &[]);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("routes[0].secrets[0]: literal: not base64")),
        "{found:#?}"
    );
    let rules = format!(
        "[[routes]]\npath = \"/hook\"\nsecrets = [\"{SECRET}\"]\nenforce = false\n\
         [[routes.rules]]\nevents = [\"*\"]\naction = \"drop\"\n"
    );
    let found = problems(&rules, &[]);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("routes[0].enforce: false (shadow mode) needs")),
        "{found:#?}"
    );
}

#[test]
fn admin_token_recent_deliveries_and_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "an-admin-token-of-some-length\n").unwrap();
    let file = dir.path().join("hookwall.toml");
    let write = |extra: &str| {
        std::fs::write(
            &file,
            format!(
                "{extra}\n[[routes]]\npath = \"/hook\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\nupstream = \"http://127.0.0.1:3000/\"\n"
            ),
        )
        .unwrap();
    };
    write("");
    let config = Config::load_with_env(&file, &[]).unwrap();
    assert_eq!((config.admin_token, config.recent_deliveries), (None, 1000));
    assert_eq!(config.telemetry.otlp_endpoint, None);
    write(&format!(
        "[admin]\ntoken = \"file:{}\"\nrecent_deliveries = 0\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 0.5",
        token.display()
    ));
    let config = Config::load_with_env(&file, &[]).unwrap();
    assert_eq!(
        config.admin_token.unwrap().0,
        "an-admin-token-of-some-length"
    );
    assert_eq!(config.recent_deliveries, 0);
    assert_eq!(config.telemetry.sample_ratio, 0.5);
    write(
        "[admin]\ntoken = \"short\"\n[telemetry]\notlp_endpoint = \"grpc://x\"\nsample_ratio = 2.0",
    );
    let err = Config::load_with_env(&file, &[]).unwrap_err().to_string();
    for key in [
        "admin.token: shorter than 16",
        "telemetry.otlp_endpoint",
        "telemetry.sample_ratio",
    ] {
        assert!(err.contains(key), "{key} in {err}");
    }
    assert!(
        !err.contains("short\""),
        "the token is never printed: {err}"
    );
}
