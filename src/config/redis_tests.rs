//! `[redis]`'s modes: exactly one of url, sentinels (+ master), cluster; each mistake
//! under its key; the keys of a cluster's stream rules in one hash slot.
use super::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn route(extra: &str) -> String {
    format!("[[routes]]\nname = \"billing\"\npath = \"/hook\"\nsecrets = [\"{SECRET}\"]\n{extra}")
}

fn forward() -> String {
    route("upstream = \"http://127.0.0.1:3000/x\"\n")
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/hookwall/hookwall.toml"), &[])
}

fn problems(text: &str) -> Vec<String> {
    let err = load(text).expect_err("config should be invalid");
    err.problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect()
}

fn redis(section: &str) -> Result<RedisConfig, ConfigError> {
    load(&format!("[redis]\n{section}\n{}", forward())).map(|c| c.redis.unwrap())
}

#[test]
fn no_mode_is_the_default_url_and_url_keys_stay() {
    let config = redis("key_prefix = \"hw\"").unwrap();
    assert!(
        matches!(&config.mode, RedisMode::Url { url, .. } if url == defaults::REDIS_URL),
        "{config:?}"
    );
    assert!(!config.is_cluster());
    assert_eq!(config.describe(), "redis://127.0.0.1:6379/0 (literal)");
}

#[test]
fn sentinels_with_master_user_and_passwords() {
    let config = redis(
        "sentinels = [\"redis-sentinel-0:26379\", \"[::1]:26380\"]\nmaster = \"mymaster\"\n\
         username = \"hookwall\"\npassword = \"s3cret\"\nsentinel_password = \"other\"",
    )
    .unwrap();
    let RedisMode::Sentinel { sentinels, master } = &config.mode else {
        panic!("{config:?}")
    };
    assert_eq!(master, "mymaster");
    assert_eq!(sentinels[1].host, "::1");
    assert_eq!(
        config.describe(),
        "sentinels redis-sentinel-0:26379, [::1]:26380 (master mymaster)"
    );
    assert_eq!(config.username.as_deref(), Some("hookwall"));
    assert_eq!(config.password.as_ref().unwrap().value, "s3cret");
    // Passwords show as their source only.
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("other"),
        "{shown}"
    );
}

#[test]
fn cluster_with_tls() {
    let config = redis("cluster = [\"10.0.0.1:6379\", \"10.0.0.2:6379\"]\ntls = true").unwrap();
    assert!(config.is_cluster() && config.tls);
    assert_eq!(
        config.describe(),
        "cluster 10.0.0.1:6379, 10.0.0.2:6379, TLS"
    );
}

#[test]
fn every_mistake_is_named_with_its_key() {
    let found = |section: &str| {
        problems(&format!("[redis]\n{section}\n{}", forward()))
            .into_iter()
            .filter(|p| p.starts_with("redis"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        found("url = \"redis://a:1\"\ncluster = [\"a:1\"]\nsentinels = [\"b:2\"]"),
        ["redis: url and sentinels and cluster given: exactly one of url, sentinels, cluster"]
    );
    assert_eq!(
        found("sentinels = [\"a:26379\"]"),
        ["redis.master: needed with sentinels: the name they watch (e.g. \"mymaster\")"]
    );
    assert_eq!(
        found("sentinels = []\nmaster = \"m\""),
        ["redis.sentinels: empty: name at least one host:port"]
    );
    assert_eq!(
        found("cluster = [\"a:6379\", \"b\", \"c:0\", \"d:x\", \"e f:1\"]"),
        [
            "redis.cluster[1]: \"b\" is not host:port",
            "redis.cluster[2]: \"c:0\" is not host:port",
            "redis.cluster[3]: \"d:x\" is not host:port",
            "redis.cluster[4]: \"e f:1\" is not host:port",
        ]
    );
    assert_eq!(
        found("cluster = []"),
        ["redis.cluster: empty: name at least one host:port"]
    );
    assert_eq!(
        found("master = \"m\"\nsentinel_password = \"p\""),
        [
            "redis.master: only with sentinels",
            "redis.sentinel_password: only with sentinels",
        ]
    );
    assert_eq!(
        found("url = \"redis://a:1\"\nusername = \"u\"\npassword = \"p\"\ntls = true"),
        [
            "redis.username: only with sentinels or cluster (a url carries its own)",
            "redis.password: only with sentinels or cluster (a url carries its own)",
            "redis.tls: only with sentinels or cluster (a url carries its own)",
        ]
    );
    assert_eq!(
        found("cluster = [\"a:1\"]\nca_file = \"ca.pem\""),
        ["redis.ca_file: needs tls = true"]
    );
    assert_eq!(
        found("cluster = [\"a:1\"]\nkey_prefix = \"{hw}\""),
        ["redis.key_prefix: \"{hw}\": with cluster, no { or } (they would choose the keys' hash slot)"]
    );
    let missing = found("cluster = [\"a:1\"]\npassword = \"env:HOOKWALL_TEST_NO_SUCH_VAR\"");
    assert_eq!(missing.len(), 1);
    assert!(
        missing[0].starts_with("redis.password: env:HOOKWALL_TEST_NO_SUCH_VAR: "),
        "{missing:?}"
    );
}

#[test]
fn a_clusters_stream_rule_must_share_its_routes_hash_slot() {
    let stream_route = |stream: &str| {
        route(&format!(
            "[[routes.rules]]\nevents = [\"*\"]\nstream = \"{stream}\"\n"
        ))
    };
    let cluster = "[redis]\ncluster = [\"a:6379\"]\n";
    let shared = "[dedup]\nstore = \"redis\"\n";
    let found = problems(&format!(
        "{shared}{cluster}{}",
        stream_route("billing-events")
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "routes[0].rules[0].stream: \"billing-events\" is in another hash slot than the \
             route's dedup keys (hookwall:dedup:{billing}:…)"
        ),
        "{found:?}"
    );
    assert!(
        found[0].ends_with("e.g. \"{billing}:billing-events\""),
        "{found:?}"
    );
    // Tagged with the route: one slot, one script, no CROSSSLOT.
    load(&format!(
        "{shared}{cluster}{}",
        stream_route("{billing}:events")
    ))
    .unwrap();
    // Without store = "redis" the append is one key: any name will do; so with a url.
    load(&format!("{cluster}{}", stream_route("billing-events"))).unwrap();
    load(&format!(
        "{shared}[redis]\nurl = \"redis://a:1\"\n{}",
        stream_route("billing-events")
    ))
    .unwrap();
}

#[test]
fn node_addresses() {
    let parse = |text| NodeAddr::parse(text).map(|a| a.to_string());
    assert_eq!(
        parse("redis-0.redis:6379").as_deref(),
        Some("redis-0.redis:6379")
    );
    assert_eq!(parse("[fd00::1]:6379").as_deref(), Some("[fd00::1]:6379"));
    for bad in [
        "fd00::1:6379",
        "host",
        ":6379",
        "host:",
        "host:70000",
        "[::1:6379",
    ] {
        assert_eq!(parse(bad), None, "{bad}");
    }
}
