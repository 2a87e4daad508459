//! Life cycle, as Kubernetes drives it: the real binary, real signals. SIGHUP reloads the
//! config and re-reads secret files; SIGTERM drains in-flight requests and exits 0.

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hookwall");

/// `hookwall run` as a child process, its stderr (JSON log lines) collected.
struct Running {
    child: Child,
    public: SocketAddr,
    admin: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    async fn start(config: &std::path::Path) -> Running {
        let mut child = Command::new(BIN)
            .args(["run", "-c"])
            .arg(config)
            .env("HOOKWALL_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut addrs = None;
        until("the listening line", async || {
            addrs = lines.lock().unwrap().iter().find_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                (v["message"] == "listening").then(|| {
                    (
                        v["public"].as_str().unwrap().parse().unwrap(),
                        v["admin"].as_str().unwrap().parse().unwrap(),
                    )
                })
            });
            addrs.is_some()
        })
        .await;
        let (public, admin) = addrs.unwrap();
        Running {
            child,
            public,
            admin,
            lines,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn metrics(&self) -> Metrics {
        let (_, _, body) = get(&format!("http://{}/metrics", self.admin)).await;
        Metrics::parse(&String::from_utf8_lossy(&body))
    }

    async fn reloads(&self, result: &str) -> f64 {
        self.metrics()
            .await
            .get("hookwall_config_reloads_total", &[("result", result)])
            .unwrap()
    }

    async fn post_event(&self, secret: &str, id: &str) -> u16 {
        let body = event("user.created");
        post(&self.url("/hook"), &signed(secret, id, now(), &body), &body)
            .await
            .0
    }

    fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &std::path::Path, upstream: &Upstream, extra: &str) -> std::path::PathBuf {
    let file = dir.join("hookwall.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[log]
format = "json"
{extra}
[[routes]]
name = "hook"
path = "/hook"
secrets = ["file:secret"]
upstream = "{}"
"#,
            upstream.url("/")
        ),
    )
    .unwrap();
    file
}

#[tokio::test]
async fn sighup_rereads_secret_files_and_refuses_a_broken_config() {
    let upstream = Upstream::ok().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let config = write_config(dir.path(), &upstream, "");
    let hw = Running::start(&config).await;
    assert_eq!(hw.post_event(SECRET, "msg_1").await, 200);

    // Kubernetes rotates the mounted secret; SIGHUP makes hookwall read it again.
    std::fs::write(dir.path().join("secret"), format!("{OTHER_SECRET}\n")).unwrap();
    hw.signal("HUP");
    until("the reload", async || hw.reloads("ok").await == 1.0).await;
    assert_eq!(hw.post_event(SECRET, "msg_2").await, 401);
    assert_eq!(hw.post_event(OTHER_SECRET, "msg_3").await, 200);
    // Dedup memory survived the reload.
    assert_eq!(hw.post_event(OTHER_SECRET, "msg_3").await, 200);
    assert_eq!(upstream.ids()["msg_3"], 1);

    // A broken config is refused, logged and counted; the old one keeps serving.
    std::fs::write(&config, "[[routes]]\npath = \"/hook\"\nupstreem = \"x\"\n").unwrap();
    hw.signal("HUP");
    until("the refused reload", async || {
        hw.reloads("error").await == 1.0
    })
    .await;
    assert_eq!(hw.post_event(OTHER_SECRET, "msg_4").await, 200);
    // Log lines are written by a writer thread, so they arrive a moment after the fact.
    until("the refusal in the log", async || {
        hw.log()
            .iter()
            .any(|l| l.contains("config reload refused") && l.contains("upstreem"))
    })
    .await;

    // One log line per request, and never a secret or a body.
    until("the last request's log line", async || {
        hw.log().iter().any(|l| l.contains(r#""id":"msg_4""#))
    })
    .await;
    let log = hw.log().join("\n");
    assert!(log.contains(r#""outcome":"forwarded""#) && log.contains(r#""id":"msg_3""#));
    assert!(!log.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") && !log.contains("C2FVsBQIhrsc"));
    assert!(!log.contains("user_1"), "a body leaked into the log");
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let (upstream, arrived, release) = holding_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let config = write_config(dir.path(), &upstream, "");
    let mut hw = Running::start(&config).await;
    // Ready once both listeners are bound and the workers run (probes poll, so do we).
    let admin = hw.admin;
    until("readyz to turn 200", async || {
        get(&format!("http://{admin}/readyz")).await.0 == 200
    })
    .await;

    let url = hw.url("/hook");
    let in_flight = tokio::spawn(async move {
        let body = event("user.created");
        post(&url, &signed(SECRET, "msg_drain", now(), &body), &body)
            .await
            .0
    });
    arrived.notified().await;
    hw.signal("TERM");
    until("readyz to turn 503", async || {
        get(&format!("http://{admin}/readyz")).await.0 == 503
    })
    .await;
    release.notify_one();
    assert_eq!(
        in_flight.await.unwrap(),
        200,
        "the request in flight completed"
    );
    let status = tokio::task::spawn_blocking(move || hw.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_shutdown_grace_cuts_off_what_does_not_finish() {
    let (upstream, arrived, release) = holding_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let config = write_config(
        dir.path(),
        &upstream,
        "[limits]\nshutdown_grace = \"200ms\"\n",
    );
    let mut hw = Running::start(&config).await;
    let url = hw.url("/hook");
    let stuck = tokio::spawn(async move {
        let body = event("user.created");
        try_post(&url, &signed(SECRET, "msg_stuck", now(), &body), &body).await
    });
    arrived.notified().await;
    hw.signal("TERM");
    let (status, hw) = tokio::task::spawn_blocking(move || {
        let status = hw.child.wait().unwrap();
        (status, hw)
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
    // The reader thread may still be taking the last lines off the pipe.
    until("the cut-off warning in the log", async || {
        hw.log().iter().any(|l| l.contains("cut off"))
    })
    .await;
    assert!(
        stuck.await.unwrap().is_err(),
        "a cut-off request gets no answer"
    );
    release.notify_one();
}
