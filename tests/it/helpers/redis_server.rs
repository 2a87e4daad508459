//! A real `redis-server` (Debian's package; `scripts/test.sh` installs it) for one test:
//! its own free port and folder, no persistence, stopped when dropped. Faults are real:
//! kill it, SIGSTOP it, restart it on the same port, FLUSHALL it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// With `start_tls`: the TLS port, and the password every client needs.
    tls: Option<(u16, String)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            tls: None,
        };
        server.restart();
        server
    }

    /// Also serving TLS on a port of its own with `pki`'s certificate (`tls_url`), and
    /// asking every client for `password`; the plain port stays for the test's own
    /// commands.
    pub fn start_tls(pki: &super::Pki, password: &str) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        for (name, pem) in [
            ("ca.pem", &pki.ca),
            ("cert.pem", &pki.cert),
            ("key.pem", &pki.key),
        ] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir,
            tls: Some((free_port(), password.to_owned())),
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:PORT/0` (with the password, if it has one).
    pub fn url(&self) -> String {
        match &self.tls {
            Some((_, password)) => format!("redis://:{password}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// With `start_tls`: `rediss://:PASSWORD@127.0.0.1:TLS_PORT/0`.
    pub fn tls_url(&self) -> String {
        let (port, password) = self.tls.as_ref().expect("started with start_tls");
        format!("rediss://:{password}@127.0.0.1:{port}/0")
    }

    /// Its folder (the TLS files are `ca.pem`, `cert.pem` and `key.pem` there).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Starts it (again) on its port, and waits until it answers.
    pub fn restart(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        if let Some((port, password)) = &self.tls {
            let file = |name: &str| self.dir.path().join(name);
            command
                .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(file("cert.pem"))
                .arg("--tls-key-file")
                .arg(file("key.pem"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.pem"))
                .args(["--requirepass", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test.sh installs Debian's redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.try_cmd(&["PING"]).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills it (SIGKILL): connections are reset, the port refuses.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// A command by a client of its own (not hookwall's).
    pub fn cmd(&self, args: &[&str]) -> redis::Value {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn try_cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut conn)
    }

    /// The value at `key`, if any.
    pub fn get(&self, key: &str) -> Option<String> {
        match self.cmd(&["GET", key]) {
            redis::Value::Nil => None,
            redis::Value::BulkString(bytes) => Some(String::from_utf8(bytes).unwrap()),
            other => panic!("GET {key}: {other:?}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server would not die from SIGTERM; SIGKILL always works.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
        }
        self.stop();
    }
}
