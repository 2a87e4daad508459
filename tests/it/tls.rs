//! TLS with rustls, with certificates made at test time: the listener terminates TLS (and
//! re-reads its certificate on reload), and https upstreams are verified against a
//! configured CA bundle, failing closed against an unknown one.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::helpers::*;
use bytes::Bytes;
use http_body_util::BodyExt as _;

/// POSTs a signed event over https, trusting only `ca_file`.
async fn post_tls(ca_file: &Path, url: &str, id: &str) -> Result<u16, BoxError> {
    let client = hookwall::forward::client::build(Some(ca_file))?;
    let body = event("user.created");
    let upstream = hookwall::route::Upstream::parse(url)?;
    let headers = signed(SECRET, id, now(), &body);
    let mut request =
        hookwall::forward::client::request_to(&upstream, http::Method::POST, Bytes::from(body));
    for (k, v) in headers {
        request.headers_mut().insert(
            http::HeaderName::try_from(k)?,
            http::HeaderValue::try_from(v)?,
        );
    }
    let (response, _connection) = client
        .send(&upstream.origin, request, std::time::Duration::from_secs(5))
        .await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

#[tokio::test]
async fn the_listener_terminates_tls_and_rereads_its_certificate_on_reload() {
    let upstream = Upstream::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (pki("first CA"), pki("second CA"));
    std::fs::write(dir.path().join("tls.crt"), &first.cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), &first.key).unwrap();
    std::fs::write(dir.path().join("first-ca.pem"), &first.ca).unwrap();
    std::fs::write(dir.path().join("second-ca.pem"), &second.ca).unwrap();
    let toml = format!(
        r#"
[listen]
addr = "127.0.0.1:0"
tls_cert = "{dir}/tls.crt"
tls_key = "{dir}/tls.key"
[admin]
addr = "127.0.0.1:0"
[[routes]]
path = "/hook"
secrets = ["{SECRET}"]
upstream = "{up}"
"#,
        dir = dir.path().display(),
        up = upstream.url("/"),
    );
    let proxy = Proxy::start(&toml).await;
    let url = format!("https://127.0.0.1:{}/hook", proxy.addr.port());
    let first_ca = dir.path().join("first-ca.pem");
    let second_ca = dir.path().join("second-ca.pem");

    assert_eq!(post_tls(&first_ca, &url, "msg_1").await.unwrap(), 200);
    let got = upstream.received();
    assert_eq!(got[0].headers["x-forwarded-proto"], "https");
    // A client that does not trust the certificate's CA cannot talk to it.
    assert!(post_tls(&second_ca, &url, "msg_2").await.is_err());
    // Plain HTTP on the TLS port gets nothing forwarded.
    assert!(try_post(&format!("http://{}/hook", proxy.addr), &[], b"")
        .await
        .is_err());

    // The certificate is rotated on disk; a reload serves the new one to new connections.
    std::fs::write(dir.path().join("tls.crt"), &second.cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), &second.key).unwrap();
    proxy.reload().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while post_tls(&second_ca, &url, "msg_3").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(post_tls(&first_ca, &url, "msg_4").await.is_err());
    assert_eq!(upstream.count(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn https_upstreams_are_verified_against_the_configured_ca() {
    let pki = pki("upstream CA");
    let upstream = Upstream::start_tls(&pki.cert, &pki.key).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &pki.ca).unwrap();
    let https = format!("https://localhost:{}/", upstream.addr.port());
    let toml = format!(
        r#"
[[routes]]
name = "trusted"
path = "/trusted"
secrets = ["{SECRET}"]
upstream = "{https}"
ca_file = "{ca}"

[[routes]]
name = "system-roots"
path = "/system"
secrets = ["{SECRET}"]
upstream = "{https}"
"#,
        ca = dir.path().join("ca.pem").display(),
    );
    let proxy = Proxy::start(&toml).await;
    let (status, _) = deliver(&proxy, "/trusted", SECRET, "msg_t", "user.created").await;
    assert_eq!(status, 200);
    assert_eq!(upstream.count(), 1);
    // The system's roots do not know this CA: fail closed, nothing delivered.
    let (status, reply) = deliver(&proxy, "/system", SECRET, "msg_s", "user.created").await;
    assert_eq!(
        (status, reply.as_ref()),
        (502, br#"{"error":"upstream_unavailable"}"#.as_ref())
    );
    assert_eq!(upstream.count(), 1);
    proxy.shutdown().await;
}

#[test]
fn bad_tls_files_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let toml = format!(
        "[listen]\ntls_cert = \"empty.pem\"\ntls_key = \"missing.key\"\n[[routes]]\npath = \"/a\"\nsecrets = [\"{SECRET}\"]\nupstream = \"http://127.0.0.1:1/\"\nca_file = \"empty.pem\"\n"
    );
    let err =
        hookwall::config::Config::parse(&toml, &dir.path().join("hookwall.toml"), &[]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("listen.tls_cert: ") && text.contains("empty.pem holds no certificate"),
        "{text}"
    );
    assert!(text.contains("routes[0].ca_file: "), "{text}");
}
