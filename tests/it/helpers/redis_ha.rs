//! Redis run highly available, for one test: a primary with replicas and three
//! `redis-sentinel` processes (Debian's package), or a six-node Redis Cluster (three
//! primaries with a replica each, made by `redis-cli --cluster create`). Every process on
//! a free loopback port in a folder of its own, failure detection tuned small
//! (down-after-milliseconds 1000, failover-timeout 3000, cluster-node-timeout 1000), all
//! stopped when dropped. Options: an ACL user (the default user off), a password for the
//! sentinels, TLS everywhere (every port TLS; the test's own commands too).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::Value;

pub const MASTER: &str = "mymaster";
pub const USER: &str = "hookwall";
pub const PASSWORD: &str = "data-nodes-password";
pub const SENTINEL_PASSWORD: &str = "sentinels-password";

/// How the processes are set up.
#[derive(Clone, Default)]
pub struct Options {
    /// The primary's replicas (sentinel sets).
    pub replicas: usize,
    /// `min-replicas-to-write 1` on every data node (the README's advice).
    pub min_replicas: bool,
    /// The ACL user `USER` / `PASSWORD`; the default user off.
    pub acl: bool,
    /// `requirepass SENTINEL_PASSWORD` on the sentinels.
    pub sentinel_password: bool,
    /// TLS on every port, with this PKI's certificate (files written in each folder).
    pub tls: Option<std::sync::Arc<super::Pki>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `redis-server` or `redis-sentinel` process.
pub struct Node {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    program: &'static str,
    options: Options,
    /// A sentinel: asked with `SENTINEL_PASSWORD`; a data node: as `USER`.
    sentinel: bool,
}

impl Node {
    fn start(program: &'static str, options: &Options, lines: &[String]) -> Node {
        let mut node = Node {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            program,
            options: options.clone(),
            sentinel: program == "redis-sentinel",
        };
        let mut config = vec![
            "bind 127.0.0.1".to_owned(),
            format!("dir {}", node.dir.path().display()),
            format!("logfile {}", node.dir.path().join("node.log").display()),
        ];
        match &options.tls {
            Some(pki) => {
                for (name, pem) in [
                    ("ca.pem", &pki.ca),
                    ("cert.pem", &pki.cert),
                    ("key.pem", &pki.key),
                ] {
                    std::fs::write(node.dir.path().join(name), pem).unwrap();
                }
                let file = |name: &str| node.dir.path().join(name).display().to_string();
                config.extend([
                    "port 0".to_owned(),
                    format!("tls-port {}", node.port),
                    format!("tls-cert-file {}", file("cert.pem")),
                    format!("tls-key-file {}", file("key.pem")),
                    format!("tls-ca-cert-file {}", file("ca.pem")),
                    "tls-auth-clients no".to_owned(),
                    "tls-replication yes".to_owned(),
                    "tls-cluster yes".to_owned(),
                ]);
            }
            None => config.push(format!("port {}", node.port)),
        }
        if !node.sentinel {
            // A replica syncs at once (not after diskless sync's 5 s delay).
            config.extend([
                "save \"\"".to_owned(),
                "appendonly no".to_owned(),
                "repl-diskless-sync-delay 0".to_owned(),
            ]);
            if options.acl {
                config.extend([
                    "user default off".to_owned(),
                    format!("user {USER} on >{PASSWORD} ~* &* +@all"),
                    format!("masteruser {USER}"),
                    format!("masterauth {PASSWORD}"),
                ]);
            }
            if options.min_replicas {
                config.extend([
                    "min-replicas-to-write 1".to_owned(),
                    "min-replicas-max-lag 10".to_owned(),
                ]);
            }
        } else if options.sentinel_password {
            config.extend([
                format!("requirepass {SENTINEL_PASSWORD}"),
                format!("sentinel sentinel-pass {SENTINEL_PASSWORD}"),
            ]);
        }
        config.extend(lines.iter().cloned());
        std::fs::write(node.conf(), config.join("\n") + "\n").unwrap();
        node.restart();
        node
    }

    fn conf(&self) -> std::path::PathBuf {
        self.dir.path().join("node.conf")
    }

    /// Starts it (again, from the config file it rewrote) and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new(self.program)
            .arg(self.conf())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} runs (scripts/test.sh installs it): {e}", self.program));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.try_cmd(&["PING"]).is_err() {
            assert!(Instant::now() < deadline, "{} did not start", self.program);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: connections reset, the port refuses.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn client(&self) -> redis::RedisResult<redis::Client> {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let auth = match (self.sentinel, &self.options) {
            (true, o) if o.sentinel_password => format!(":{SENTINEL_PASSWORD}@"),
            (false, o) if o.acl => format!("{USER}:{PASSWORD}@"),
            _ => String::new(),
        };
        let url = format!("{scheme}://{auth}127.0.0.1:{}", self.port);
        match &self.options.tls {
            Some(pki) => redis::Client::build_with_tls(
                url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pki.ca.clone().into_bytes()),
                },
            ),
            None => redis::Client::open(url),
        }
    }

    pub fn try_cmd(&self, args: &[&str]) -> redis::RedisResult<Value> {
        let mut conn = self
            .client()?
            .get_connection_with_timeout(Duration::from_secs(2))?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut conn)
    }

    pub fn cmd(&self, args: &[&str]) -> Value {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("{args:?} on {}: {e}", self.port))
    }

    /// `INFO section`'s field `name`.
    pub fn info(&self, section: &str, name: &str) -> Option<String> {
        let text = match self.try_cmd(&["INFO", section]).ok()? {
            Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Value::VerbatimString { text, .. } => text,
            _ => return None,
        };
        let field = format!("{name}:");
        text.lines()
            .find_map(|line| line.strip_prefix(&field).map(|v| v.trim().to_owned()))
    }

    /// The first element of `ROLE`: "master", "slave" or "sentinel".
    pub fn role(&self) -> Option<String> {
        match self.try_cmd(&["ROLE"]).ok()? {
            Value::Array(items) => match items.first()? {
                Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                Value::SimpleString(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<String> {
        match self.cmd(&["GET", key]) {
            Value::Nil => None,
            Value::BulkString(bytes) => Some(String::from_utf8(bytes).unwrap()),
            other => panic!("GET {key}: {other:?}"),
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 20 ms for at most `within`.
pub fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A primary, its replicas and three sentinels watching it as `MASTER` (quorum 2).
pub struct Sentinels {
    /// The data nodes; the first started as the primary.
    pub nodes: Vec<Node>,
    pub sentinels: Vec<Node>,
}

impl Sentinels {
    pub fn start(options: &Options) -> Sentinels {
        let primary = Node::start("redis-server", options, &[]);
        let mut nodes = vec![primary];
        for _ in 0..options.replicas.max(1) {
            let line = format!("replicaof 127.0.0.1 {}", nodes[0].port);
            nodes.push(Node::start("redis-server", options, &[line]));
        }
        let mut monitor = vec![
            format!("sentinel monitor {MASTER} 127.0.0.1 {} 2", nodes[0].port),
            format!("sentinel down-after-milliseconds {MASTER} 1000"),
            format!("sentinel failover-timeout {MASTER} 3000"),
            format!("sentinel parallel-syncs {MASTER} 1"),
        ];
        if options.acl {
            monitor.extend([
                format!("sentinel auth-user {MASTER} {USER}"),
                format!("sentinel auth-pass {MASTER} {PASSWORD}"),
            ]);
        }
        let sentinels = (0..3)
            .map(|_| Node::start("redis-sentinel", options, &monitor))
            .collect();
        let set = Sentinels { nodes, sentinels };
        set.wait_ready(options.replicas.max(1));
        set
    }

    /// Until every replica replicates and every sentinel knows them and the two others
    /// (only then can they agree on a failover).
    fn wait_ready(&self, replicas: usize) {
        wait_for(
            "the replicas and sentinels",
            Duration::from_secs(30),
            || {
                let synced = self.nodes[1..]
                    .iter()
                    .all(|n| n.info("replication", "master_link_status").as_deref() == Some("up"));
                let known = self.sentinels.iter().all(|s| {
                    let count = |what: &str| match s.try_cmd(&["SENTINEL", what, MASTER]) {
                        Ok(Value::Array(items)) => items.len(),
                        _ => 0,
                    };
                    count("REPLICAS") == replicas && count("SENTINELS") == 2
                });
                synced && known
            },
        );
    }

    /// The sentinels' and the data nodes' last log lines, for a failure's message.
    pub fn logs(&self) -> String {
        logs(&self.sentinels, 30) + &logs(&self.nodes, 15)
    }

    /// `host:port` of each sentinel.
    pub fn addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(Node::addr).collect()
    }

    /// The port sentinel `i` names as the primary.
    pub fn named_by(&self, i: usize) -> Option<u16> {
        match self.sentinels[i]
            .try_cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER])
            .ok()?
        {
            Value::Array(items) => match items.get(1)? {
                Value::BulkString(port) => String::from_utf8_lossy(port).parse().ok(),
                _ => None,
            },
            _ => None,
        }
    }

    /// The data node on `port`.
    pub fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("a data node")
    }

    pub fn primary(&self) -> &Node {
        self.node(self.named_by(0).expect("a primary"))
    }

    /// Until every sentinel names a primary other than `old` and it says ROLE master;
    /// returns its port.
    pub fn wait_promoted(&self, old: u16, within: Duration) -> u16 {
        let mut promoted = 0;
        wait_for("a promoted replica", within, || {
            let named: Vec<Option<u16>> = (0..3).map(|i| self.named_by(i)).collect();
            match named[0] {
                Some(port) if port != old && named.iter().all(|n| *n == Some(port)) => {
                    promoted = port;
                    self.node(port).role().as_deref() == Some("master")
                }
                _ => false,
            }
        });
        promoted
    }

    /// `SENTINEL FAILOVER`: a planned failover, asked of the first sentinel.
    pub fn failover(&self) {
        self.sentinels[0].cmd(&["SENTINEL", "FAILOVER", MASTER]);
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a data node")
            .kill();
    }
}

/// Six cluster nodes: three primaries, a replica each.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn start(options: &Options) -> Cluster {
        let lines = [
            "cluster-enabled yes".to_owned(),
            "cluster-config-file nodes.conf".to_owned(),
            "cluster-node-timeout 1000".to_owned(),
        ];
        // The bus on a free port of its own (by default port + 10000: maybe taken, or past
        // 65535).
        let nodes: Vec<Node> = (0..6)
            .map(|_| {
                let bus = format!("cluster-port {}", free_port());
                Node::start("redis-server", options, &[&lines[..], &[bus]].concat())
            })
            .collect();
        let mut create = Command::new("redis-cli");
        if options.tls.is_some() {
            let ca = nodes[0].dir.path().join("ca.pem");
            create.arg("--tls").arg("--cacert").arg(ca);
        }
        if options.acl {
            create.args(["--user", USER, "--pass", PASSWORD]);
        }
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(node.addr());
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Cluster { nodes };
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    }

    /// Until every running node says `cluster_state:ok` and every replica has synced
    /// (a replica that never did cannot take over).
    pub fn wait_ok(&self, within: Duration) {
        wait_for("cluster_state:ok, replicas synced", within, || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                cluster_ok(n)
                    && (n.role().as_deref() != Some("slave")
                        || n.info("replication", "master_link_status").as_deref() == Some("up"))
            })
        });
    }

    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(Node::addr).collect()
    }

    /// The port of the primary that serves `key`'s slot now, as a running node says.
    pub fn primary_of(&self, key: &str) -> u16 {
        let node = self.nodes.iter().find(|n| n.is_running()).expect("a node");
        let Value::Int(slot) = node.cmd(&["CLUSTER", "KEYSLOT", key]) else {
            panic!("KEYSLOT")
        };
        let Value::Array(ranges) = node.cmd(&["CLUSTER", "SLOTS"]) else {
            panic!("SLOTS")
        };
        for range in ranges {
            let Value::Array(fields) = range else {
                continue;
            };
            let (Value::Int(from), Value::Int(to)) = (&fields[0], &fields[1]) else {
                continue;
            };
            if (*from..=*to).contains(&slot) {
                let Value::Array(primary) = &fields[2] else {
                    continue;
                };
                let Value::Int(port) = primary[1] else {
                    continue;
                };
                return port as u16;
            }
        }
        panic!("no primary for {key}")
    }

    pub fn node(&self, port: u16) -> &Node {
        self.nodes.iter().find(|n| n.port == port).expect("a node")
    }

    /// Each node's log's last lines, for a failure's message.
    pub fn logs(&self) -> String {
        logs(&self.nodes, 8)
    }

    /// `CLUSTER NODES` as a running node sees it, for a failure's message.
    pub fn nodes_view(&self) -> String {
        let node = self.nodes.iter().find(|n| n.is_running()).expect("a node");
        match node.cmd(&["CLUSTER", "NODES"]) {
            Value::BulkString(text) => String::from_utf8_lossy(&text).into_owned(),
            Value::VerbatimString { text, .. } => text,
            other => format!("{other:?}"),
        }
    }

    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node")
            .kill();
    }

    /// A command through a cluster client (slots followed).
    pub fn cmd(&self, args: &[&str]) -> Value {
        let first = self.nodes.iter().find(|n| n.is_running()).expect("a node");
        let client = first.client().unwrap();
        let info =
            redis::IntoConnectionInfo::into_connection_info(client.get_connection_info().clone())
                .unwrap();
        let mut builder = redis::cluster::ClusterClient::builder(vec![info]);
        if let Some(pki) = &first.options.tls {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pki.ca.clone().into_bytes()),
            });
        }
        let mut conn = builder.build().unwrap().get_connection().unwrap();
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut conn)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }
}

/// `CLUSTER INFO` says `cluster_state:ok`.
fn cluster_ok(node: &Node) -> bool {
    match node.try_cmd(&["CLUSTER", "INFO"]) {
        Ok(Value::BulkString(text)) => String::from_utf8_lossy(&text).contains("cluster_state:ok"),
        Ok(Value::VerbatimString { text, .. }) => text.contains("cluster_state:ok"),
        _ => false,
    }
}

/// The last `lines` lines of each node's log.
pub fn logs(nodes: &[Node], lines: usize) -> String {
    let mut out = String::new();
    for node in nodes {
        let log = std::fs::read_to_string(node.dir.path().join("node.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        out.push_str(&format!("== {}\n{tail}\n", node.port));
    }
    out
}
