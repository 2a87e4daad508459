//! How one named node (a sentinel, a primary, a cluster seed) is reached: its ACL user and
//! password, TLS and the CAs to trust. A leaf of `redis/`: `connect` and `sentinel` both
//! make clients with it.

use redis::{
    Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, RedisResult,
    TlsCertificates,
};

use crate::config::NodeAddr;

/// How a named node is reached: its ACL user and password, TLS and the CAs to trust.
#[derive(Clone, Default)]
pub(super) struct Node {
    username: Option<String>,
    password: Option<String>,
    tls: bool,
    ca: Option<Vec<u8>>,
}

impl Node {
    pub(super) fn new(
        username: Option<String>,
        password: Option<String>,
        tls: bool,
        ca: Option<Vec<u8>>,
    ) -> Node {
        Node {
            username,
            password,
            tls,
            ca,
        }
    }

    pub(super) fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    pub(super) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub(super) fn tls(&self) -> bool {
        self.tls
    }

    pub(super) fn info(&self, addr: &NodeAddr) -> RedisResult<ConnectionInfo> {
        let address = match self.tls {
            true => ConnectionAddr::TcpTls {
                host: addr.host.clone(),
                port: addr.port,
                insecure: false,
                tls_params: None,
            },
            false => ConnectionAddr::Tcp(addr.host.clone(), addr.port),
        };
        let mut settings = RedisConnectionInfo::default();
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        Ok(address.into_connection_info()?.set_redis_settings(settings))
    }

    pub(super) fn certs(&self) -> Option<TlsCertificates> {
        self.ca.as_ref().map(|pem| TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        })
    }
}

/// A client for the node at `addr`.
pub(super) fn client(addr: &NodeAddr, node: &Node) -> RedisResult<Client> {
    let info = node.info(addr)?;
    match node.certs() {
        Some(certs) => Client::build_with_tls(info, certs),
        None => Client::open(info),
    }
}
