//! hookwall's load generator: signs every request inline (unique id, fresh timestamp,
//! ~2 µs each), over N keep-alive HTTP/1.1 connections, either flat out (closed loop) or
//! at a fixed rate (open loop, latency measured from each request's scheduled time so a
//! stall cannot hide). Prints one JSON line; exits 1 unless every reply had the status its
//! kind expects.
//!
//! At a fixed rate a pacing thread releases the requests that are due every `PACE`: tokio's
//! timers tick in whole milliseconds, so pacing with them sent rate/1000 requests at once
//! and measured the generator's bursts as much as the server's latency.
//!
//!   cargo run --release --example loadgen -- --url http://127.0.0.1:8080/bench \
//!       --secret whsec_... --connections 64 --duration 10s [--rate 20000] [--mix soak]
//!
//! `--mix soak` sends, per 20 requests: 16 valid, 1 forged, 1 stale, 1 duplicate of an
//! earlier delivered id, 1 for an event type no rule wants (soak and security runs).
//! `--retry` resends a valid event that got no 2xx, as Svix does, and counts it lost if it
//! never gets one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hookwall::secret::Key;
use hookwall::sign::Signer;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const CLERK_EVENT: &[u8] = include_bytes!("../../src/cli/clerk_user_created.json");

/// How often the pacing thread releases the requests that are due (at a fixed rate).
const PACE: Duration = Duration::from_micros(100);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Valid,
    Forged,
    Stale,
    Duplicate,
    Unwanted,
}

impl Kind {
    fn expected(self, status: u16) -> bool {
        match self {
            Kind::Valid | Kind::Duplicate | Kind::Unwanted => (200..300).contains(&status),
            Kind::Forged | Kind::Stale => status == 401,
        }
    }

    fn of(n: u64, soak: bool) -> Kind {
        if !soak {
            return Kind::Valid;
        }
        match n % 20 {
            3 => Kind::Forged,
            7 => Kind::Stale,
            11 if n > 40 => Kind::Duplicate,
            15 => Kind::Unwanted,
            _ => Kind::Valid,
        }
    }
}

struct Args {
    url: http::Uri,
    secret: String,
    connections: usize,
    duration: Duration,
    rate: Option<f64>,
    soak: bool,
    id_prefix: String,
    threads: usize,
    /// Like Svix: resend a valid event (fresh timestamp and signature) until it gets a 2xx.
    retry: bool,
    /// Sign as Stripe does (valid events only): the same Clerk body with the id as its
    /// top-level `id`, `Stripe-Signature`, the secret's bytes.
    stripe: bool,
    /// Sign as GitHub does (valid events only): the same body, `X-Hub-Signature-256`.
    github: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "http://127.0.0.1:8080/bench".parse().unwrap(),
        secret: String::new(),
        connections: 64,
        duration: Duration::from_secs(10),
        rate: None,
        soak: false,
        id_prefix: format!("msg_{}_", std::process::id()),
        threads: 1,
        retry: false,
        stripe: false,
        github: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value()?.parse().map_err(|e| format!("--url: {e}"))?,
            "--secret" => args.secret = value()?,
            "--connections" => {
                args.connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            "--duration" => {
                args.duration =
                    humantime::parse_duration(&value()?).map_err(|e| format!("--duration: {e}"))?
            }
            "--rate" => args.rate = Some(value()?.parse().map_err(|e| format!("--rate: {e}"))?),
            "--mix" => args.soak = value()? == "soak",
            "--id-prefix" => args.id_prefix = value()?,
            "--threads" => {
                args.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?
            }
            "--retry" => args.retry = true,
            "--provider" => {
                let provider = value()?;
                args.stripe = provider == "stripe";
                args.github = provider == "github";
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.secret.is_empty() {
        return Err("--secret is required".into());
    }
    Ok(args)
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    unexpected: Vec<(Kind, u16)>,
    errors: u64,
    /// Valid events resent after a non-2xx (with --retry).
    retries: u64,
    /// Valid events never acknowledged with a 2xx (with --retry: after 50 tries).
    lost: u64,
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .unwrap();
    let ok = runtime.block_on(run(args));
    std::process::exit(if ok { 0 } else { 1 });
}

/// Starts the pacing thread: request `n` (0-based) is released once `n / rate` seconds have
/// passed since `start`, checked every `PACE`; at `end` the semaphore closes.
fn pace(rate: f64, start: Instant, end: Instant) -> Arc<tokio::sync::Semaphore> {
    let due = Arc::new(tokio::sync::Semaphore::new(0));
    let released = due.clone();
    std::thread::spawn(move || {
        let mut sent: u64 = 0;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let upto = ((now - start).as_secs_f64() * rate) as u64 + 1;
            if upto > sent {
                released.add_permits((upto - sent) as usize);
                sent = upto;
            }
            std::thread::sleep(PACE);
        }
        released.close();
    });
    due
}

async fn run(args: Args) -> bool {
    let key = match args.stripe || args.github {
        // Any key: Stripe requests are signed with the secret's bytes (`stripe_request`).
        true => Key::decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
        false => Key::decode(&args.secret).expect("--secret decodes"),
    };
    let signer = Arc::new(Signer::try_from(&key).expect("--secret can sign"));
    let forger = Arc::new(
        Signer::try_from(&Key::decode("whsec_Zm9yZ2VkIGJ5IHNvbWVib2R5IGVsc2UhIQ==").unwrap())
            .unwrap(),
    );
    let authority = args.url.authority().unwrap().to_string();
    let next = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let end = start + args.duration;
    let due = args.rate.map(|rate| pace(rate, start, end));
    let args = Arc::new(args);

    let tasks: Vec<_> = (0..args.connections)
        .map(|_| {
            let (args, signer, forger, next, tally, authority, due) = (
                args.clone(),
                signer.clone(),
                forger.clone(),
                next.clone(),
                tally.clone(),
                authority.clone(),
                due.clone(),
            );
            tokio::spawn(async move {
                let mut local = Tally::default();
                let unwanted_body = Bytes::from_static(br#"{"type":"loadgen.unwanted","data":{}}"#);
                let clerk = Bytes::from_static(CLERK_EVENT);
                'connections: loop {
                    let Ok(tcp) = TcpStream::connect(&authority).await else {
                        local.errors += 1;
                        if Instant::now() >= end {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let Ok((mut sender, conn)) =
                        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
                            .await
                    else {
                        local.errors += 1;
                        continue;
                    };
                    tokio::spawn(conn);
                    loop {
                        if let Some(due) = &due {
                            match due.acquire().await {
                                Ok(permit) => permit.forget(),
                                Err(_) => break 'connections,
                            }
                        }
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let scheduled = match args.rate {
                            Some(rate) => start + Duration::from_secs_f64(n as f64 / rate),
                            None => Instant::now(),
                        };
                        if scheduled >= end {
                            break 'connections;
                        }
                        let kind = Kind::of(n, args.soak);
                        let mut attempt = 0;
                        loop {
                            attempt += 1;
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap()
                                .as_secs();
                            let (id, timestamp, body, who) = match kind {
                                Kind::Valid => {
                                    (format!("{}{n}", args.id_prefix), now, &clerk, &signer)
                                }
                                Kind::Forged => {
                                    (format!("{}{n}", args.id_prefix), now, &clerk, &forger)
                                }
                                Kind::Stale => (
                                    format!("{}{n}", args.id_prefix),
                                    now - 3600,
                                    &clerk,
                                    &signer,
                                ),
                                // An id 40 requests back: delivered by now, or at worst in flight.
                                Kind::Duplicate => (
                                    format!("{}{}", args.id_prefix, n - 40 + (n % 2)),
                                    now,
                                    &clerk,
                                    &signer,
                                ),
                                Kind::Unwanted => (
                                    format!("{}{n}", args.id_prefix),
                                    now,
                                    &unwanted_body,
                                    &signer,
                                ),
                            };
                            let request = if args.stripe {
                                stripe_request(&args, &authority, &id, timestamp)
                            } else if args.github {
                                github_request(&args, &authority, &id)
                            } else {
                                let signature = who.sign(&id, timestamp, body);
                                Request::post(args.url.clone())
                                    .header("host", &authority)
                                    .header("content-type", "application/json")
                                    .header("svix-id", &id)
                                    .header("svix-timestamp", timestamp.to_string())
                                    .header("svix-signature", signature)
                                    .body(Full::new(body.clone()))
                                    .unwrap()
                            };
                            if sender.ready().await.is_err() {
                                local.errors += 1;
                                continue 'connections;
                            }
                            let status = match sender.send_request(request).await {
                                Ok(response) => {
                                    let status = response.status().as_u16();
                                    let _ = response.into_body().collect().await;
                                    status
                                }
                                Err(_) => {
                                    local.errors += 1;
                                    continue 'connections;
                                }
                            };
                            let elapsed =
                                scheduled.elapsed().as_micros().min(u32::MAX as u128) as u32;
                            local.latencies_us.push(elapsed);
                            let acknowledged = (200..300).contains(&status);
                            if args.retry && kind == Kind::Valid && !acknowledged {
                                if attempt < 50 {
                                    local.retries += 1;
                                    continue;
                                }
                                local.lost += 1;
                            }
                            // A duplicate may meet its original still in flight (409), or
                            // its original's delivery may have failed (the upstream's 5xx).
                            let fine = kind.expected(status)
                                || (kind == Kind::Duplicate
                                    && (status == 409 || (args.retry && status >= 500)))
                                || (args.retry && kind == Kind::Valid);
                            if !fine {
                                local.unexpected.push((kind, status));
                            }
                            break;
                        }
                    }
                }
                let mut all = tally.lock().unwrap();
                all.latencies_us.extend(local.latencies_us);
                all.unexpected.extend(local.unexpected);
                all.errors += local.errors;
                all.retries += local.retries;
                all.lost += local.lost;
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut tally = Arc::try_unwrap(tally).ok().unwrap().into_inner().unwrap();
    tally.latencies_us.sort_unstable();
    let n = tally.latencies_us.len();
    let pct = |p: f64| {
        if n == 0 {
            0
        } else {
            tally.latencies_us[((n as f64 * p) as usize).min(n - 1)]
        }
    };
    let mut statuses: std::collections::BTreeMap<String, u64> = Default::default();
    for (kind, status) in &tally.unexpected {
        *statuses.entry(format!("{kind:?}:{status}")).or_default() += 1;
    }
    println!(
        "{{\"requests\":{n},\"seconds\":{elapsed:.3},\"rps\":{:.0},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"errors\":{},\"retries\":{},\"lost\":{},\"unexpected\":{}}}",
        n as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        tally.latencies_us.last().copied().unwrap_or(0),
        tally.errors,
        tally.retries,
        tally.lost,
        serde_json::to_string(&statuses).unwrap(),
    );
    n > 0 && tally.errors == 0 && tally.lost == 0 && tally.unexpected.is_empty()
}

/// A valid event signed as GitHub does: the Clerk body with the id in it (GitHub's dedup
/// key is the body's digest), `X-GitHub-Delivery`, `X-GitHub-Event`, `X-Hub-Signature-256`.
fn github_request(args: &Args, authority: &str, id: &str) -> Request<Full<Bytes>> {
    let mut body = format!("{{\"id\": \"{id}\", ").into_bytes();
    body.extend_from_slice(&CLERK_EVENT[1..]);
    let signature = hookwall::sign::github(args.secret.as_bytes(), &body);
    Request::post(args.url.clone())
        .header("host", authority)
        .header("content-type", "application/json")
        .header("x-github-delivery", id)
        .header("x-github-event", "user")
        .header("x-hub-signature-256", signature)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A valid event signed as Stripe does: the Clerk body with `id` first, `Stripe-Signature`.
fn stripe_request(args: &Args, authority: &str, id: &str, timestamp: u64) -> Request<Full<Bytes>> {
    let mut body = format!("{{\"id\": \"{id}\", ").into_bytes();
    body.extend_from_slice(&CLERK_EVENT[1..]);
    let signature = hookwall::sign::stripe(args.secret.as_bytes(), timestamp, &body);
    Request::post(args.url.clone())
        .header("host", authority)
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}
