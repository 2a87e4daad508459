//! `hookwall run` as a child process, for what only the real binary shows: signals, its
//! log lines, its threads and its memory.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::*;

const BIN: &str = env!("CARGO_BIN_EXE_hookwall");

/// `hookwall run` as a child process, its stderr (JSON log lines) collected.
pub struct Running {
    pub child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// With `HOOKWALL_LOG=info`.
    pub async fn start(config: &std::path::Path) -> Running {
        Running::start_with(config, Some("info")).await
    }

    /// With `HOOKWALL_LOG` set to `log`, or unset (then `log.level` decides).
    pub async fn start_with(config: &std::path::Path, log: Option<&str>) -> Running {
        Running::start_env(config, log, &[]).await
    }

    /// `start_with`, and the variables `env` set in the process's environment.
    pub async fn start_env(
        config: &std::path::Path,
        log: Option<&str>,
        env: &[(&str, &str)],
    ) -> Running {
        let mut command = Command::new(BIN);
        command
            .args(["run", "-c"])
            .arg(config)
            .envs(env.iter().copied());
        match log {
            Some(filter) => command.env("HOOKWALL_LOG", filter),
            None => command.env_remove("HOOKWALL_LOG"),
        };
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
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

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub async fn metrics(&self) -> Metrics {
        let (_, _, body) = get(&format!("http://{}/metrics", self.admin)).await;
        Metrics::parse(&String::from_utf8_lossy(&body))
    }

    pub async fn reloads(&self, result: &str) -> f64 {
        self.metrics()
            .await
            .get("hookwall_config_reloads_total", &[("result", result)])
            .unwrap()
    }

    pub async fn post_event(&self, secret: &str, id: &str) -> u16 {
        let body = event("user.created");
        post(&self.url("/hook"), &signed(secret, id, now(), &body), &body)
            .await
            .0
    }

    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config in `dir` for `Running`: JSON logs, addresses picked by the OS, `extra` after
/// `[log]` (e.g. a `[limits]` table), and route `hook` at `/hook` with the secret in the
/// file `secret` beside it.
pub fn write_config(dir: &std::path::Path, upstream: &Upstream, extra: &str) -> std::path::PathBuf {
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

/// A folder with the route's secret file and a config (`write_config`) in it: the folder
/// (removed when dropped) and the config's path.
pub fn config_dir(upstream: &Upstream, extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let config = write_config(dir.path(), upstream, extra);
    (dir, config)
}
