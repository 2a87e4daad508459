//! Life cycle, as Kubernetes drives it: the real binary, real signals. SIGHUP reloads the
//! config and re-reads secret files (a refused one changes nothing); SIGTERM turns unready,
//! still serves new connections for `shutdown_delay`, then drains in-flight requests and
//! forwards that outlived their request, and exits 0; SIGINT skips the delay. A route's
//! `max_in_flight` survives reloads; a public listener that breaks turns `/readyz` 503 at
//! once.

use crate::helpers::running::*;
use crate::helpers::*;

#[tokio::test]
async fn sighup_rereads_secret_files_and_refuses_a_broken_config() {
    let upstream = Upstream::ok().await;
    let (dir, config) = config_dir(&upstream, "");
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

/// The Kubernetes-shaped drain: after SIGTERM, /readyz is 503 at once, but new
/// connections are still served for `shutdown_delay` (the Service still routes here for
/// a moment); then the listener closes and the request in flight finishes.
#[tokio::test]
async fn sigterm_serves_the_delay_then_finishes_the_request_in_flight_and_exits_0() {
    let (upstream, arrived, release) = holding_upstream().await;
    let (_dir, config) = config_dir(&upstream, "[limits]\nshutdown_delay = \"3s\"\n");
    let mut hw = Running::start(&config).await;
    // Ready once both listeners are bound and the workers run (probes poll, so do we).
    let admin = hw.admin;
    until("readyz to turn 200", async || {
        get(&format!("http://{admin}/readyz")).await.0 == 200
    })
    .await;

    let in_flight = delivering(hw.url("/hook"), &arrived, "msg_drain", "user.created").await;
    hw.signal("TERM");
    until("readyz to turn 503", async || {
        get(&format!("http://{admin}/readyz")).await.0 == 503
    })
    .await;
    // Unready, but a sender the Service still sends here is served, on a new connection.
    let late = delivering(hw.url("/hook"), &arrived, "msg_late", "user.created").await;
    release.notify_waiters();
    assert_eq!(late.await.unwrap().0, 200, "served within shutdown_delay");
    // The delay over, the listener closes; the request in flight still finishes.
    until("the end of the delay", async || {
        hw.log().iter().any(|l| l.contains("no new connections"))
    })
    .await;
    let public = hw.public;
    until("the listener to close", async || {
        tokio::net::TcpStream::connect(public).await.is_err()
    })
    .await;
    release.notify_waiters();
    assert_eq!(
        in_flight.await.unwrap().0,
        200,
        "the request in flight completed"
    );
    let status = tokio::task::spawn_blocking(move || hw.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A person at a terminal: SIGINT stops without waiting for `shutdown_delay`.
#[tokio::test]
async fn sigint_skips_the_shutdown_delay() {
    let upstream = Upstream::ok().await;
    let (_dir, config) = config_dir(&upstream, "[limits]\nshutdown_delay = \"10m\"\n");
    let mut hw = Running::start(&config).await;
    assert_eq!(hw.post_event(SECRET, "msg_1").await, 200);
    hw.signal("INT");
    // Far below the delay: the bound only keeps a broken build from hanging the suite.
    let status = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::task::spawn_blocking(move || hw.child.wait().unwrap()),
    )
    .await
    .expect("SIGINT does not wait for shutdown_delay")
    .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A forward the sender stopped waiting for (504) still runs at SIGTERM: the drain waits
/// for it, its 2xx marks the id delivered, and a line names its id and how it ended.
#[tokio::test]
async fn sigterm_waits_for_a_forward_that_outlived_its_request() {
    let (upstream, arrived, release) = holding_upstream().await;
    let (_dir, config) = config_dir(
        &upstream,
        "[limits]\nshutdown_delay = \"0s\"\nupstream_timeout = \"100ms\"\n",
    );
    let mut hw = Running::start(&config).await;
    assert_eq!(hw.post_event(SECRET, "msg_slow").await, 504);
    arrived.notified().await;
    hw.signal("TERM");
    until("the drain to start", async || {
        hw.log().iter().any(|l| l.contains("draining"))
    })
    .await;
    release.notify_one();
    let (status, hw) = tokio::task::spawn_blocking(move || {
        let status = hw.child.wait().unwrap();
        (status, hw)
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
    until("the forward's own line", async || {
        hw.log().iter().any(|l| {
            l.contains("forward ended after its request")
                && l.contains(r#""id":"msg_slow""#)
                && l.contains(r#""detached":"upstream_timeout""#)
                && l.contains(r#""delivered":true"#)
        })
    })
    .await;
    assert!(!hw.log().iter().any(|l| l.contains("cut off")));
}

/// A forward still running when `shutdown_grace` runs out is cut off, logged, and its id
/// released (a restarted hookwall would forward the sender's retry).
#[tokio::test]
async fn the_grace_cuts_off_a_forward_that_outlived_its_request() {
    let (upstream, arrived, release) = holding_upstream().await;
    let (_dir, config) = config_dir(&upstream, "[limits]\nshutdown_delay = \"0s\"\nshutdown_grace = \"300ms\"\nupstream_timeout = \"100ms\"\n");
    let mut hw = Running::start(&config).await;
    assert_eq!(hw.post_event(SECRET, "msg_stuck").await, 504);
    arrived.notified().await;
    hw.signal("TERM");
    let (status, hw) = tokio::task::spawn_blocking(move || {
        let status = hw.child.wait().unwrap();
        (status, hw)
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
    until("the cut-off warning", async || {
        hw.log()
            .iter()
            .any(|l| l.contains("forwards that outlived their request were cut off"))
    })
    .await;
    release.notify_one();
}

/// A route's `max_in_flight` holds across reloads: with its two places taken by forwards
/// that a reload does not end, a third forward is refused 503 (a new bound per config let
/// the route run twice its cap); a reload that raises it to three lets the third through,
/// and a fourth is refused.
#[tokio::test]
async fn max_in_flight_holds_across_a_reload() {
    let (upstream, arrived, release) = holding_upstream().await;
    let (_dir, config) = config_dir(&upstream, "");
    let capped = |max: usize| {
        let text = std::fs::read_to_string(&config).unwrap();
        let text = match text.find("\nmax_in_flight") {
            Some(at) => text[..at].to_owned() + "\n",
            None => text,
        };
        std::fs::write(&config, format!("{text}max_in_flight = {max}\n")).unwrap();
    };
    capped(2);
    let hw = Running::start(&config).await;
    let url = hw.url("/hook");
    let mut held = Vec::new();
    for id in ["msg_a", "msg_b"] {
        held.push(delivering(url.clone(), &arrived, id, "user.created").await);
    }
    let refused = async |id: &str| {
        let sent = send_kind(&url, id, "user.created");
        match tokio::time::timeout(std::time::Duration::from_secs(2), sent).await {
            Ok((status, _, _)) => status == 503,
            Err(_) => panic!("{id} was forwarded past max_in_flight"),
        }
    };

    hw.signal("HUP");
    until("the reload", async || hw.reloads("ok").await == 1.0).await;
    assert!(
        refused("msg_c").await,
        "the cap is the route's, across reloads"
    );

    capped(3);
    hw.signal("HUP");
    until("the second reload", async || hw.reloads("ok").await == 2.0).await;
    let raised = delivering(url.clone(), &arrived, "msg_d", "user.created");
    held.push(
        tokio::time::timeout(std::time::Duration::from_secs(5), raised)
            .await
            .expect("a raised cap lets a third forward through"),
    );
    assert!(refused("msg_e").await);

    release.notify_waiters();
    for forward in held {
        assert_eq!(forward.await.unwrap().0, 200);
    }
}

/// A reload that is refused changes nothing, the log level included.
#[tokio::test]
async fn a_refused_reload_keeps_the_log_level() {
    let upstream = Upstream::ok().await;
    let (_dir, config) = config_dir(&upstream, "");
    let hw = Running::start_with(&config, None).await;
    assert_eq!(hw.post_event(SECRET, "msg_1").await, 200);
    // A new level, and a route whose secret file is missing: refused as a whole.
    let broken = std::fs::read_to_string(&config)
        .unwrap()
        .replace("format = \"json\"", "format = \"json\"\nlevel = \"trace\"")
        .replace("file:secret", "file:gone");
    std::fs::write(&config, broken).unwrap();
    hw.signal("HUP");
    until("the refused reload", async || {
        hw.reloads("error").await == 1.0
    })
    .await;
    assert_eq!(hw.post_event(SECRET, "msg_2").await, 200);
    until("the request's line", async || {
        hw.log().iter().any(|l| l.contains(r#""id":"msg_2""#))
    })
    .await;
    let verbose: Vec<String> = hw
        .log()
        .into_iter()
        .filter(|l| l.contains(r#""level":"DEBUG""#) || l.contains(r#""level":"TRACE""#))
        .collect();
    assert!(
        verbose.is_empty(),
        "the refused level took effect: {verbose:#?}"
    );
}

/// `limits.workers` request threads, no more (a sidecar shares its node).
#[tokio::test]
async fn limits_workers_is_the_number_of_request_threads() {
    let upstream = Upstream::ok().await;
    let (_dir, config) = config_dir(&upstream, "[limits]\nworkers = 3\n");
    let hw = Running::start(&config).await;
    assert_eq!(hw.post_event(SECRET, "msg_1").await, 200);
    let workers = || {
        std::fs::read_dir(format!("/proc/{}/task", hw.child.id()))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("hookwall-worker"))
            .count()
    };
    // A thread names itself once it first runs, which a loaded machine may delay.
    until("the worker threads to be named", async || workers() >= 3).await;
    assert_eq!(workers(), 3);
}

#[tokio::test]
async fn the_shutdown_grace_cuts_off_what_does_not_finish() {
    let (upstream, arrived, release) = holding_upstream().await;
    let (_dir, config) = config_dir(
        &upstream,
        "[limits]\nshutdown_grace = \"200ms\"\nshutdown_delay = \"0s\"\n",
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

/// `hookwall::run` on a public listener the test can break from outside (`shutdown` on a
/// duplicate of its socket: every accept then fails with EINVAL).
struct Breakable {
    breaker: socket2::Socket,
    addr: std::net::SocketAddr,
    readyz: String,
    running: tokio::task::JoinHandle<Result<(), hookwall::RunError>>,
    _dir: tempfile::TempDir,
}

impl Breakable {
    /// Runs one route to `upstream` and waits until it is ready.
    async fn start(upstream: &Upstream) -> Breakable {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookwall.toml");
        std::fs::write(&file, one_route(upstream, "")).unwrap();
        let config = hookwall::config::Config::load_with_env(&file, &[]).unwrap();
        let public = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let breaker = socket2::Socket::from(public.try_clone().unwrap());
        public.set_nonblocking(true).unwrap();
        let public = tokio::net::TcpListener::from_std(public).unwrap();
        let addr = public.local_addr().unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let readyz = format!("http://{}/readyz", admin.local_addr().unwrap());
        let (control, requests) = tokio::sync::mpsc::channel(1);
        // The control channel stays open while `run` runs: closing it would stop it.
        let running = tokio::spawn(async move {
            let _control = control;
            hookwall::run(config, public, admin, requests).await
        });
        until("ready", async || get(&readyz).await.0 == 200).await;
        Breakable {
            breaker,
            addr,
            readyz,
            running,
            _dir: dir,
        }
    }

    fn break_listener(&self) {
        self.breaker.shutdown(std::net::Shutdown::Both).unwrap();
    }

    /// What `run` returned, which must be the listener's failure.
    async fn ended(self) {
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), self.running)
            .await
            .expect("run returns")
            .unwrap();
        assert!(
            matches!(
                ended,
                Err(hookwall::RunError::Serve(
                    hookwall::server::ServeError::Accept(_)
                ))
            ),
            "{ended:?}"
        );
    }
}

/// The public listener breaks for good: hookwall turns unready and `run` returns the error
/// (the binary exits 2 on it, and Kubernetes restarts the container), rather than staying
/// Ready and serving nothing.
#[tokio::test]
async fn a_public_listener_that_breaks_makes_hookwall_unready_and_stop() {
    let upstream = Upstream::ok().await;
    let hw = Breakable::start(&upstream).await;
    assert_eq!(
        send_event(&format!("http://{}/hook", hw.addr), "msg_1")
            .await
            .0,
        200
    );
    hw.break_listener();
    let readyz = hw.readyz.clone();
    hw.ended().await;
    // Its admin listener went with it: nothing says Ready any more.
    assert!(try_send("GET", &readyz, &[], b"").await.is_err());
}

/// The public listener breaks while a forward is in flight: `/readyz` is 503 at once, not
/// once the drain (which waits for the forward, up to `shutdown_grace`) is over; the
/// forward still finishes.
#[tokio::test]
async fn a_public_listener_that_breaks_turns_unready_before_the_drain() {
    let (upstream, arrived, release) = holding_upstream().await;
    let hw = Breakable::start(&upstream).await;
    let url = format!("http://{}/hook", hw.addr);
    let in_flight = delivering(url, &arrived, "msg_held", "user.created").await;
    hw.break_listener();
    let broken = std::time::Instant::now();
    let readyz = hw.readyz.clone();
    until_within(
        "readyz to turn 503",
        std::time::Duration::from_secs(1),
        async || matches!(try_send("GET", &readyz, &[], b"").await, Ok((503, _, _))),
    )
    .await;
    eprintln!("unready {:?} after the listener broke", broken.elapsed());
    release.notify_waiters();
    assert_eq!(
        in_flight.await.unwrap().0,
        200,
        "the forward in flight finished"
    );
    hw.ended().await;
}
