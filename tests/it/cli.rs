//! The `check` and `send` commands, run as a user runs them: the real binary.
//! `send` is checked against a receiver that verifies with the official svix library.

use std::process::{Command, Output};

use crate::helpers::Helper;

const BIN: &str = env!("CARGO_BIN_EXE_hookwall");
use crate::helpers::{OTHER_SECRET, SECRET};

fn hookwall(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("HOOKWALL_CONFIG")
        .output()
        .expect("hookwall runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The official svix library, behind a tiny Python HTTP server.
struct SvixReceiver {
    _process: Helper,
    url: String,
}

impl SvixReceiver {
    fn start(secret: &str) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/svix_receiver.py"
        );
        let process = Helper::start(
            Command::new("python3")
                .arg(script)
                .env("SVIX_SECRET", secret),
            "the svix receiver (python3 with the svix package)",
        );
        let url = format!("http://127.0.0.1:{}/webhook", process.port);
        SvixReceiver {
            _process: process,
            url,
        }
    }
}

#[test]
fn send_is_accepted_by_the_official_svix_library() {
    let receiver = SvixReceiver::start(SECRET);
    for family in ["svix", "webhook"] {
        let out = hookwall(
            &[
                "send",
                &receiver.url,
                "--secret",
                SECRET,
                "--headers",
                family,
            ],
            &[],
        );
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{family}: {stdout}{}",
            text(&out.stderr)
        );
        assert!(stdout.starts_with("204 No Content\n"), "{stdout}");
        assert!(
            stdout.contains(&format!("> {family}-signature: v1,")),
            "{stdout}"
        );
    }

    // A secret given through the environment, and a body from a file with a fixed id.
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, br#"{"type":"invoice.paid","data":{}}"#).unwrap();
    let out = hookwall(
        &[
            "send",
            &receiver.url,
            "--secret",
            "env:MY_SECRET",
            "--body",
            body.to_str().unwrap(),
            "--id",
            "msg_fixed",
        ],
        &[("MY_SECRET", SECRET)],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("> svix-id: msg_fixed"), "{stdout}");
}

#[test]
fn send_with_the_wrong_secret_is_refused_and_exits_3() {
    let receiver = SvixReceiver::start(SECRET);
    let out = hookwall(&["send", &receiver.url, "--secret", OTHER_SECRET], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.starts_with("401 Unauthorized\n"), "{stdout}");

    // A stale timestamp is refused by the library too.
    let out = hookwall(
        &[
            "send",
            &receiver.url,
            "--secret",
            SECRET,
            "--timestamp",
            "1600000000",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
}

#[test]
fn send_usage_and_runtime_errors() {
    let out = hookwall(
        &[
            "send",
            "http://127.0.0.1:9/",
            "--secret",
            SECRET,
            "--event",
            "a",
            "--body",
            "-",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "both --event and --body is a usage error"
    );

    let out = hookwall(
        &[
            "send",
            "http://127.0.0.1:9/",
            "--secret",
            "env:SURELY_UNSET_X",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("SURELY_UNSET_X is not set"));

    let (refusing, _held) = crate::helpers::refusing_addr();
    let url = format!("http://{refusing}/");
    let out = hookwall(&["send", &url, "--secret", SECRET], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

fn example_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CLERK_WEBHOOK_SIGNING_SECRET", SECRET),
        ("BILLING_SECRET_CURRENT", OTHER_SECRET),
        ("BILLING_SECRET_PREVIOUS", SECRET),
        ("STRIPE_WEBHOOK_SECRET", "whsec_stripe_example"),
    ]
}

#[test]
fn check_accepts_the_example_config_and_prints_the_table() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/hookwall.toml");
    let out = hookwall(&["check", "-c", config], &example_env());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("env:CLERK_WEBHOOK_SIGNING_SECRET"),
        "{stdout}"
    );
    assert!(stdout.contains("session.*"), "{stdout}");
    // Never a secret's value.
    assert!(!stdout.contains("MfKQ9r8"), "{stdout}");

    // HOOKWALL_CONFIG names the file when -c is absent.
    let out = Command::new(BIN)
        .arg("check")
        .envs(example_env())
        .env("HOOKWALL_CONFIG", config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

/// In a namespace with a Service named `hookwall`, Kubernetes sets `HOOKWALL_PORT`,
/// `HOOKWALL_SERVICE_HOST`, ... in every pod. They are not overrides: `check` passes and
/// lists them as a warning, and `run` starts (it used to exit 1 on the next rollout).
#[test]
fn kubernetes_service_link_variables_are_a_warning_not_an_error() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/hookwall.toml");
    let mut env = example_env();
    env.extend([
        ("HOOKWALL_SERVICE_HOST", "10.96.0.12"),
        ("HOOKWALL_PORT", "tcp://10.96.0.12:8080"),
        ("HOOKWALL_PORT_8080_TCP_ADDR", "10.96.0.12"),
    ]);
    let out = hookwall(&["check", "-c", config], &env);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for name in [
        "HOOKWALL_SERVICE_HOST",
        "HOOKWALL_PORT ",
        "HOOKWALL_PORT_8080_TCP_ADDR",
    ] {
        assert!(
            stderr.contains(&format!("warning: {name}")),
            "{name}: {stderr}"
        );
    }
    // A double-underscore name that names no key is still an error.
    env.push(("HOOKWALL_LISTEN__ADRESS", "x"));
    let out = hookwall(&["check", "-c", config], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("HOOKWALL_LISTEN__ADRESS: names no configuration key"));
}

/// A Redis that does not answer is a warning for `check`, not an error: the config is
/// valid, and `run` connects in the background.
#[test]
fn check_warns_about_an_unreachable_redis_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookwall.toml");
    // A bound socket that does not listen: connections are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(
        &file,
        format!(
            "[dedup]\nstore = \"redis\"\n[redis]\nurl = \"redis://:hunter2@127.0.0.1:{port}/0\"\n\
             [[routes]]\npath = \"/hook\"\nsecrets = [\"{SECRET}\"]\nupstream = \"http://127.0.0.1:3000/\"\n"
        ),
    )
    .unwrap();
    let out = hookwall(&["check", "-c", file.to_str().unwrap()], &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: redis redis://127.0.0.1:"),
        "{stderr}"
    );
    assert!(
        stdout.contains(r#"dedup store = "redis"; on_store_error = "refuse""#),
        "{stdout}"
    );
    // The cause once, though redis-rs repeats its source's text in its own message.
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("warning: redis"))
        .unwrap();
    assert_eq!(
        warning.matches("Connection refused").count(),
        1,
        "{warning}"
    );
    // The password is never printed.
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
    // Without a [redis] section, store = "redis" is an error.
    std::fs::write(
        &file,
        format!(
            "[dedup]\nstore = \"redis\"\n[[routes]]\npath = \"/hook\"\nsecrets = [\"{SECRET}\"]\nupstream = \"http://127.0.0.1:3000/\"\n"
        ),
    )
    .unwrap();
    let out = hookwall(&["check", "-c", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("dedup.store: \"redis\" needs a [redis] section"));
}

#[test]
fn check_lists_every_problem_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        r#"
[listen]
addr = "0.0.0.0:8080"
trust_forwarded_header = true

[[routes]]
name = "clerk"
path = "/webhooks/clerk"
secrets = ["env:CLERK_SECRET_THAT_IS_NOT_SET"]
upstream = "ftp://127.0.0.1/"

[[routes]]
name = "other"
path = "/webhooks/clerk"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
upstream = "http://127.0.0.1:3000/"
"#,
    )
    .unwrap();
    let out = hookwall(&["check", "-c", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let f = file.display().to_string();
    for expected in [
        format!("{f}: listen.trust_forwarded_header: unknown key"),
        format!("{f}: routes[0].secrets[0]: env:CLERK_SECRET_THAT_IS_NOT_SET: environment variable CLERK_SECRET_THAT_IS_NOT_SET is not set"),
        format!("{f}: routes[0].upstream: \"ftp://127.0.0.1/\" is not an http(s) URL"),
        format!("{f}: routes[1].path: \"/webhooks/clerk\" is used by an earlier route"),
    ] {
        assert!(stderr.lines().any(|l| l == expected), "missing {expected:?} in\n{stderr}");
    }

    let out = hookwall(&["check", "-c", "/nonexistent/hookwall.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/hookwall.toml: cannot read"));
}

/// A declared scheme that checks what it does not sign is refused by `check` (contract
/// §10, "What decides is signed"): a timestamp header outside `signed_content` could be
/// changed to pass the window, and `{id}{body}` lets bytes move from one to the other.
#[test]
fn check_refuses_a_declared_scheme_that_checks_what_it_does_not_sign() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hmac.toml");
    let route = |name: &str, path: &str, hmac: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\npath = \"{path}\"\nprovider = \"hmac\"\n\
             secrets = [\"s3cret\"]\nupstream = \"http://127.0.0.1:3000/\"\n\
             [routes.hmac]\nsignature_header = \"X-Sig\"\nid = \"header:X-Id\"\n{hmac}\n"
        )
    };
    let config = [
        route("unsigned-time", "/a", "timestamp_header = \"X-Time\""),
        route("adjacent", "/b", "signed_content = \"{id}{body}\""),
        route(
            "fine",
            "/c",
            "signed_content = \"{id}.{timestamp}.{body}\"\ntimestamp_header = \"X-Time\"",
        ),
    ]
    .concat();
    std::fs::write(&file, config).unwrap();
    let out = hookwall(&["check", "-c", file.to_str().unwrap()], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let f = file.display().to_string();
    for expected in [
        format!("{f}: routes[0].hmac.timestamp_header: timestamp_header is set but {{timestamp}} is not in signed_content"),
        format!("{f}: routes[1].hmac.signed_content: \"{{id}}{{body}}\": placeholders need literal text between them"),
    ] {
        assert!(stderr.lines().any(|l| l.starts_with(&expected)), "missing {expected:?} in\n{stderr}");
    }
    assert!(!stderr.contains("routes[2]"), "{stderr}");
}

#[test]
fn the_demo_shows_every_case_behaving() {
    let out = hookwall(&["demo"], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for row in [
        "valid event",
        "same id again",
        "forged signature",
        "stale timestamp",
        "filtered type",
        "upstream fails",
        "its retry",
        "Standard Webhooks",
        "v1a",
        "an event the backend lost",
        "its resend",
        "operator: POST /dedup/forget",
        "forgotten, then resent",
        "resent once more",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(row) && l.ends_with("yes")),
            "{row}: {stdout}"
        );
    }
    assert!(stdout.contains("hookwall_requests_total{outcome=\"duplicate\",route=\"clerk\"} 3"));
    assert!(stdout.contains("hookwall_dedup_forgotten_total{route=\"clerk\"} 1"));
    assert!(stdout.contains("recent deliveries, while the demo runs: http://127.0.0.1:"));
}
