//! The session supervisor (`forwarder::supervisor`) and the tunnel (`forwarder::tunnel`)
//! against the in-memory test server of `support`: reconnecting after the connection dies,
//! waits for a session during an outage, a TCP tunnel across an outage, a changed host key,
//! the fail-fast first attempt, `Reconnect=no`, `stop()` and the one-handshake-at-a-time gate
//! shared by the supervisors of one bastion.
//!
//! Every test runs on real time (the driver keeps its clock on `std::time::Instant`) with a
//! small backoff (50 ms, capped at 200 ms), and every wait is bounded.

mod support;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use forwarder::config::ReconnectPolicy;
use forwarder::driver::{self, ChannelStream, OpenError, SessionHandle};
use forwarder::metrics::{BastionMetrics, Metrics};
use forwarder::session::SessionError;
use forwarder::supervisor::{
    BastionGate, ConnectError, Connected, Connector, DriverFuture, FailureKind,
    HANDSHAKES_PER_BASTION, Outcome, SessionState, Supervisor, SupervisorConfig, SupervisorHandle,
    WaitError,
};
use forwarder::tunnel::{Target, Tunnel};
use ssh_transport::hostkey::PublicKey;
use ssh_transport::server::ServerConfig;
use support::{ClientOptions, STEP, ServerConn, ServerOptions, TestServer, TrustKey, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---- a connector over the in-memory server ---------------------------------------------------

/// Connects to whichever [`TestServer`] is current, trusting only one host key; can be taken
/// "down" (every attempt fails with a network error), made to fail its first attempts, and
/// made slow. Counts attempts and how many run at once.
struct MemConnector {
    server: Mutex<Arc<TestServer>>,
    trusted: PublicKey,
    /// While set, attempts fail as if the TCP connect were refused.
    down: AtomicBool,
    /// Attempts still to fail with a network error (before `down` is looked at).
    fail_next: AtomicU32,
    /// How long each attempt takes before it connects (or fails).
    delay: Duration,
    calls: AtomicU32,
    /// Attempts from the start of `connect()` until authenticated or failed.
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    /// Set while no attempt has authenticated since [`MemConnector::kill_all`] (or the
    /// start): the attempts then are probes of the login.
    probing: Arc<AtomicBool>,
    /// The most attempts in flight at once while `probing`.
    max_probing: Arc<AtomicUsize>,
    /// Server connections made, in order.
    conns: Mutex<Vec<ServerConn>>,
    /// `prepare()` waits while this is false (an agent that does not answer).
    prepare_open: tokio::sync::watch::Sender<bool>,
    prepares: AtomicU32,
}

impl MemConnector {
    fn new(server: &Arc<TestServer>) -> Arc<Self> {
        Self::with(server, Duration::ZERO, 0)
    }

    fn with(server: &Arc<TestServer>, delay: Duration, fail_next: u32) -> Arc<Self> {
        Arc::new(Self {
            server: Mutex::new(server.clone()),
            trusted: server.host_key(),
            down: AtomicBool::new(false),
            fail_next: AtomicU32::new(fail_next),
            delay,
            calls: AtomicU32::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: Arc::new(AtomicUsize::new(0)),
            probing: Arc::new(AtomicBool::new(true)),
            max_probing: Arc::new(AtomicUsize::new(0)),
            conns: Mutex::new(Vec::new()),
            prepare_open: tokio::sync::watch::channel(true).0,
            prepares: AtomicU32::new(0),
        })
    }

    /// Makes `prepare()` wait (`false`) or go on (`true`).
    fn set_prepare_open(&self, open: bool) {
        self.prepare_open.send_replace(open);
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn switch_to(&self, server: &Arc<TestServer>) {
        *self.server.lock().unwrap() = server.clone();
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    fn max_probing(&self) -> usize {
        self.max_probing.load(Ordering::SeqCst)
    }

    /// Kills every session of `server`; the attempts after it probe the login again.
    fn kill_all(&self, server: &TestServer) {
        self.probing.store(true, Ordering::SeqCst);
        server.kill_all();
    }

    fn conns(&self) -> Vec<ServerConn> {
        self.conns.lock().unwrap().clone()
    }

    fn last_conn(&self) -> ServerConn {
        self.conns().pop().expect("a server connection was made")
    }

    async fn attempt(&self, n: u32) -> Result<Connected, ConnectError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let fail = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
            .is_ok();
        if fail || self.down.load(Ordering::SeqCst) {
            return Err(ConnectError::Network(format!(
                "connect to the test server: connection refused (attempt {n})"
            )));
        }
        let server = self.server.lock().unwrap().clone();
        let (stream, conn) = server.connect_with_handle();
        self.conns.lock().unwrap().push(conn);
        let opts = ClientOptions {
            seed: 100 + u64::from(n),
            ..ClientOptions::default()
        };
        let (handle, driver) = driver::start(
            stream,
            support::session(&opts),
            Arc::new(TrustKey(self.trusted.clone())),
        );
        Ok(Connected {
            handle,
            driver: Box::pin(driver),
        })
    }
}

/// Counts one attempt in flight until it is dropped (`authenticated` says whether it was).
struct InFlight {
    count: Arc<AtomicUsize>,
    probing: Arc<AtomicBool>,
    authenticated: bool,
}

impl InFlight {
    fn enter(c: &MemConnector) -> Self {
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if c.probing.load(Ordering::SeqCst) {
            c.max_probing.fetch_max(now, Ordering::SeqCst);
        }
        Self {
            count: c.in_flight.clone(),
            probing: c.probing.clone(),
            authenticated: false,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.authenticated {
            self.probing.store(false, Ordering::SeqCst);
        }
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

type AuthFuture = Pin<Box<dyn Future<Output = Result<(), SessionError>> + Send>>;

/// The driver, holding the attempt's [`InFlight`] until the session has authenticated or
/// failed. Authentication only ever completes inside the driver's poll, and this polls its
/// own `authenticated()` right after, so the count drops before the supervisor can see the
/// session up (and release the bastion's handshake permit).
struct Tracked {
    driver: DriverFuture,
    auth: Option<AuthFuture>,
    guard: Option<InFlight>,
}

impl Future for Tracked {
    type Output = Result<(), SessionError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let r = this.driver.as_mut().poll(cx);
        if let Some(auth) = &mut this.auth {
            let authenticated = matches!(auth.as_mut().poll(cx), Poll::Ready(Ok(())));
            if authenticated || r.is_ready() {
                if let Some(g) = &mut this.guard {
                    g.authenticated = authenticated;
                }
                this.auth = None;
                this.guard = None;
            }
        }
        r
    }
}

impl Connector for MemConnector {
    fn prepare(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.prepares.fetch_add(1, Ordering::SeqCst);
            let mut open = self.prepare_open.subscribe();
            let _ = open.wait_for(|o| *o).await;
        })
    }

    fn connect(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<Connected, ConnectError>> + Send + '_>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let guard = InFlight::enter(self);
            let Connected { handle, driver } = self.attempt(n).await?;
            let h = handle.clone();
            let driver = Tracked {
                driver,
                auth: Some(Box::pin(async move { h.authenticated().await })),
                guard: Some(guard),
            };
            Ok(Connected {
                handle,
                driver: Box::pin(driver),
            })
        })
    }
}

// ---- helpers ---------------------------------------------------------------------------------

fn fast(enabled: bool) -> ReconnectPolicy {
    ReconnectPolicy {
        enabled,
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        reset_after: Duration::from_secs(60),
    }
}

fn spawn_with(
    connector: &Arc<MemConnector>,
    reconnect: ReconnectPolicy,
    first_attempt_fatal: bool,
    gate: Arc<BastionGate>,
) -> Supervisor {
    spawn_login(
        connector,
        reconnect,
        first_attempt_fatal,
        gate,
        "tester@memory:22",
    )
}

fn spawn_login(
    connector: &Arc<MemConnector>,
    reconnect: ReconnectPolicy,
    first_attempt_fatal: bool,
    gate: Arc<BastionGate>,
    login: &str,
) -> Supervisor {
    let connector: Arc<dyn Connector> = connector.clone();
    Supervisor::spawn(
        connector,
        SupervisorConfig {
            label: "tester@memory:22".into(),
            login: login.into(),
            reconnect,
            first_attempt_fatal,
        },
        gate,
    )
}

fn spawn(connector: &Arc<MemConnector>) -> Supervisor {
    spawn_with(connector, fast(true), false, BastionGate::new())
}

async fn up(h: &SupervisorHandle) -> SessionHandle {
    within(STEP, "a session to come up", h.session(STEP))
        .await
        .expect("a session comes up")
}

async fn finished(sup: &mut Supervisor) -> Outcome {
    within(STEP, "the supervisor to end", sup.finished()).await
}

async fn open(h: &SessionHandle) -> Result<ChannelStream, OpenError> {
    within(
        STEP,
        "open_direct_tcpip",
        h.open_direct_tcpip("db.internal", 5432, "127.0.0.1", 40000),
    )
    .await
}

/// Writes `data` on a new channel of `h` and checks the echo.
async fn echo(h: &SessionHandle, data: &[u8]) {
    let mut ch = open(h).await.expect("channel opens");
    ch.write_all(data).await.unwrap();
    let mut got = vec![0u8; data.len()];
    within(STEP, "the echo", ch.read_exact(&mut got))
        .await
        .expect("echo read");
    assert_eq!(got, data);
}

/// Polls `cond` every 10 ms until it holds (bounded by [`STEP`]).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(STEP, what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

fn server_with_key_seed(seed: u8) -> Arc<TestServer> {
    TestServer::new(ServerOptions {
        transport: ServerConfig {
            host_key_seed: [seed; 32],
            ..ServerConfig::default()
        },
        ..ServerOptions::default()
    })
}

/// Reads until `want` bytes came or the stream ended.
async fn read_n(s: &mut TcpStream, want: usize) -> io::Result<Vec<u8>> {
    let mut got = vec![0u8; want];
    s.read_exact(&mut got).await?;
    Ok(got)
}

// ---- tests -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_session_is_replaced_and_its_channels_fail_promptly() {
    let server = TestServer::new(ServerOptions::default());
    let connector = MemConnector::new(&server);
    let sup = spawn(&connector);
    let h = sup.handle();

    let first = up(&h).await;
    echo(&first, b"first session").await;
    let mut old_chan = open(&first).await.expect("channel opens");
    old_chan.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    within(STEP, "ping", old_chan.read_exact(&mut b))
        .await
        .unwrap();

    connector.last_conn().kill();
    let t0 = Instant::now();
    let mut b = [0u8; 16];
    let r = within(
        Duration::from_secs(1),
        "old channel read",
        old_chan.read(&mut b),
    )
    .await;
    assert!(
        matches!(&r, Err(e) if e.kind() == io::ErrorKind::ConnectionAborted),
        "a channel of the dead session read {r:?}"
    );
    let e = old_chan.write(b"x").await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
    let opened = within(
        Duration::from_secs(1),
        "open on the dead session",
        first.open_direct_tcpip("db.internal", 5432, "127.0.0.1", 1),
    )
    .await;
    assert!(matches!(opened, Err(OpenError::Session(_))), "{opened:?}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    within(
        Duration::from_secs(1),
        "the old session's end",
        first.ended(),
    )
    .await;

    // A new session is published: it works while the old one does not.
    let second = up(&h).await;
    assert!(second.error().is_none());
    assert!(first.error().is_some());
    echo(&second, b"second session").await;
    assert!(matches!(h.state(), SessionState::Up(_)), "{:?}", h.state());
    assert_eq!(connector.calls(), 2);
    let conns = server.connections();
    assert_eq!(conns.len(), 2);
    // (A killed connection's task is aborted, so it may not record `ended`.)
    assert!(conns[0].is_finished());
    let s = conns[1].stats();
    assert!(
        s.authenticated && s.opened == 1 && s.ended.is_none(),
        "{s:?}"
    );

    let outcome = sup.shutdown(STEP).await;
    assert_eq!(outcome, Outcome::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_wait_spans_an_outage_and_times_out_when_it_lasts() {
    let server = TestServer::new(ServerOptions::default());
    let connector = MemConnector::new(&server);
    connector.set_down(true);
    let sup = spawn(&connector);
    let h = sup.handle();

    // Waits while the server is down...
    let waiter = {
        let h = h.clone();
        tokio::spawn(async move { h.session(Duration::from_secs(20)).await })
    };
    eventually("a few failed attempts", || connector.calls() >= 3).await;
    assert!(!waiter.is_finished());
    assert!(
        matches!(
            h.state(),
            SessionState::Waiting { .. } | SessionState::Connecting { .. }
        ),
        "{:?}",
        h.state()
    );
    assert!(server.connections().is_empty());
    // ...and gets a live session once it is back.
    connector.set_down(false);
    let t0 = Instant::now();
    let s = within(STEP, "the waiting session() call", waiter)
        .await
        .unwrap()
        .expect("a session after the outage");
    // The backoff is capped at 200 ms.
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(s.error().is_none());
    echo(&s, b"after the outage").await;

    // Down again and kept down: a short wait times out with the wait it was given.
    connector.set_down(true);
    connector.last_conn().kill();
    within(STEP, "the session's end", s.ended()).await;
    let calls = connector.calls();
    let wait = Duration::from_millis(400);
    let t0 = Instant::now();
    let r = within(STEP, "a short session() call", h.session(wait)).await;
    assert_eq!(r.unwrap_err(), WaitError::Timeout(wait));
    assert!(t0.elapsed() >= wait, "{:?}", t0.elapsed());
    assert!(connector.calls() > calls, "it kept trying meanwhile");
    assert_eq!(server.connections().len(), 1);

    assert_eq!(sup.shutdown(STEP).await, Outcome::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tunnel_holds_connections_across_an_outage_and_resets_them_on_loss() {
    let server = TestServer::new(ServerOptions::default());
    let connector = MemConnector::new(&server);
    let sup = spawn(&connector);
    let h = sup.handle();
    let first = up(&h).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut tunnel = Tunnel::new();
    tunnel.listen(
        listener,
        h.clone(),
        Target {
            host: "db.internal".into(),
            port: 5432,
        },
        Duration::from_secs(10),
    );
    assert_eq!(tunnel.listeners(), 1);

    // A connection while the session is up: echoed through the channel.
    let mut live = TcpStream::connect(addr).await.unwrap();
    live.write_all(b"hello through the tunnel").await.unwrap();
    let got = within(STEP, "echo through the tunnel", read_n(&mut live, 24))
        .await
        .unwrap();
    assert_eq!(got, b"hello through the tunnel");
    eventually("the channel is counted", || first.channel_count() == 1).await;

    // The session dies: the open connection is closed promptly.
    connector.set_down(true);
    connector.last_conn().kill();
    let t0 = Instant::now();
    let mut b = [0u8; 16];
    let r = within(
        Duration::from_secs(2),
        "the tunnelled connection to close",
        live.read(&mut b),
    )
    .await;
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "a connection of the dead session read {r:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
    within(STEP, "the session's end", first.ended()).await;

    // A connection during the outage waits for the next session, its bytes held.
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    waiting.write_all(b"sent during the outage").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(server.connections().len(), 1, "still down");
    connector.set_down(false);
    let got = within(STEP, "echo after the outage", read_n(&mut waiting, 22))
        .await
        .unwrap();
    assert_eq!(got, b"sent during the outage");
    let conns = server.connections();
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[1].stats().opened, 1);
    // Half-close: the server's EOF comes back as the end of the stream.
    waiting.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within(STEP, "EOF after the echo", waiting.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());

    tunnel.close();
    assert_eq!(sup.shutdown(STEP).await, Outcome::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_host_key_on_reconnect_fails_the_supervisor_for_good() {
    let trusted = server_with_key_seed(0x11);
    let impostor = server_with_key_seed(0x22);
    assert_ne!(trusted.host_key(), impostor.host_key());
    let connector = MemConnector::new(&trusted);
    let mut sup = spawn(&connector);
    let h = sup.handle();
    let first = up(&h).await;
    echo(&first, b"trusted").await;

    connector.switch_to(&impostor);
    connector.last_conn().kill();
    let outcome = finished(&mut sup).await;
    let expected = format!("unexpected host key {}", impostor.host_key().fingerprint());
    assert_eq!(outcome, Outcome::Failed(expected.clone()));
    assert!(
        matches!(h.state(), SessionState::Failed(ref why) if *why == expected),
        "{:?}",
        h.state()
    );
    let r = within(STEP, "session() after the failure", h.session(STEP)).await;
    assert_eq!(r.unwrap_err(), WaitError::Failed(expected.clone()));
    let r = within(STEP, "first_session() after the failure", h.first_session()).await;
    assert_eq!(r.unwrap_err(), WaitError::Failed(expected.clone()));
    // Published typed too, for the dialer's errors.
    let failure = h.last_failure().expect("the failure is published");
    assert_eq!(failure.kind, FailureKind::HostKey);
    assert_eq!(failure.message, expected);
    // The impostor was tried once, never again.
    assert_eq!(connector.calls(), 2);
    assert_eq!(impostor.connections().len(), 1);
    assert!(!impostor.connections()[0].stats().authenticated);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(connector.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_attempt_is_fatal_only_when_asked() {
    // Fail-fast: the first attempt's network error ends the supervisor.
    let server = TestServer::new(ServerOptions::default());
    let connector = MemConnector::with(&server, Duration::ZERO, 1);
    let mut sup = spawn_with(&connector, fast(true), true, BastionGate::new());
    let h = sup.handle();
    let outcome = finished(&mut sup).await;
    let why = "connect to the test server: connection refused (attempt 1)".to_owned();
    assert_eq!(outcome, Outcome::Failed(why.clone()));
    assert_eq!(h.last_failure().map(|f| f.kind), Some(FailureKind::Network));
    assert!(
        matches!(h.state(), SessionState::Failed(_)),
        "{:?}",
        h.state()
    );
    assert_eq!(
        within(STEP, "first_session", h.first_session())
            .await
            .unwrap_err(),
        WaitError::Failed(why)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(connector.calls(), 1);
    assert!(server.connections().is_empty());

    // Otherwise it retries until the connector works.
    let server = TestServer::new(ServerOptions::default());
    let connector = MemConnector::with(&server, Duration::ZERO, 3);
    let sup = spawn_with(&connector, fast(true), false, BastionGate::new());
    let h = sup.handle();
    let s = within(STEP, "first_session", h.first_session())
        .await
        .expect("up after three failures");
    assert_eq!(h.last_failure(), None, "cleared when a session comes up");
    echo(&s, b"fourth time lucky").await;
    assert_eq!(connector.calls(), 4);
    assert_eq!(server.connections().len(), 1);
    assert_eq!(sup.shutdown(STEP).await, Outcome::Stopped);

    // A session that comes up first time is unaffected by fail-fast, and later losses are
    // retried as usual.
    let server = TestServer::new(ServerOptions::default());
    let connector = MemConnector::new(&server);
    let sup = spawn_with(&connector, fast(true), true, BastionGate::new());
    let h = sup.handle();
    let s = up(&h).await;
    connector.set_down(true);
    connector.last_conn().kill();
    within(STEP, "the session's end", s.ended()).await;
    eventually("retries after the loss", || connector.calls() >= 3).await;
    assert!(
        !matches!(h.state(), SessionState::Failed(_)),
        "{:?}",
        h.state()
    );
    connector.set_down(false);
    let s = up(&h).await;
    echo(&s, b"back").await;
    assert_eq!(sup.shutdown(STEP).await, Outcome::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reconnect_a_lost_session_fails_the_supervisor_with_its_cause() {
    let server = TestServer::new(ServerOptions::default());
    let connector = MemConnector::new(&server);
    let mut sup = spawn_with(&connector, fast(false), false, BastionGate::new());
    let h = sup.handle();
    let s = up(&h).await;
    echo(&s, b"only session").await;

    connector.last_conn().kill();
    let outcome = finished(&mut sup).await;
    let cause = s.error().expect("the session failed");
    assert_eq!(
        cause,
        SessionError::Transport(ssh_transport::Error::ConnectionLost)
    );
    let cause = cause.to_string();
    assert_eq!(outcome, Outcome::Failed(cause.clone()));
    assert_eq!(h.last_failure().map(|f| f.kind), Some(FailureKind::Network));
    assert!(
        matches!(h.state(), SessionState::Failed(ref why) if *why == cause),
        "{:?}",
        h.state()
    );
    assert_eq!(
        within(STEP, "session()", h.session(STEP))
            .await
            .unwrap_err(),
        WaitError::Failed(cause)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(connector.calls(), 1);
    assert_eq!(server.connections().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_disconnects_the_session_and_ends_the_supervisor() {
    let server = TestServer::new(ServerOptions::default());
    let connector = MemConnector::new(&server);
    let mut sup = spawn(&connector);
    let h = sup.handle();
    let s = up(&h).await;
    let mut ch = open(&s).await.expect("channel opens");

    h.stop();
    let outcome = finished(&mut sup).await;
    assert_eq!(outcome, Outcome::Stopped);
    assert!(
        matches!(h.state(), SessionState::Stopped),
        "{:?}",
        h.state()
    );
    assert_eq!(
        within(STEP, "session()", h.session(STEP))
            .await
            .unwrap_err(),
        WaitError::Stopped
    );
    assert_eq!(
        within(STEP, "first_session()", h.first_session())
            .await
            .unwrap_err(),
        WaitError::Stopped
    );
    // The session ended (politely: the driver finished after sending DISCONNECT), its
    // channels with it, and the server saw the end.
    assert!(s.error().is_some());
    let mut b = [0u8; 4];
    let r = within(Duration::from_secs(1), "read after stop", ch.read(&mut b)).await;
    assert!(r.is_err(), "{r:?}");
    let conn = connector.last_conn();
    eventually("the server to see the end", || conn.stats().ended.is_some()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(connector.calls(), 1);
    assert_eq!(server.connections().len(), 1);

    // Stopped while waiting out an outage: at once, no further attempt.
    let server = TestServer::new(ServerOptions::default());
    let connector = MemConnector::with(&server, Duration::ZERO, 0);
    connector.set_down(true);
    let mut sup = spawn(&connector);
    let h = sup.handle();
    eventually("an attempt", || connector.calls() >= 1).await;
    h.stop();
    assert_eq!(
        within(Duration::from_secs(1), "stop while down", sup.finished()).await,
        Outcome::Stopped
    );
    let calls = connector.calls();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(connector.calls(), calls);
    assert!(
        matches!(h.state(), SessionState::Stopped),
        "{:?}",
        h.state()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_stops_the_supervisor() {
    let server = TestServer::new(ServerOptions::default());
    let connector = MemConnector::new(&server);
    let sup = spawn(&connector);
    let s = up(&sup.handle()).await;
    let mut rx = sup.handle().subscribe();
    drop(sup);
    within(STEP, "the session's end", s.ended()).await;
    let conn = connector.last_conn();
    eventually("the server to see the end", || conn.stats().ended.is_some()).await;
    within(
        STEP,
        "the Stopped state",
        rx.wait_for(|st| matches!(st, SessionState::Stopped)),
    )
    .await
    .expect("the state channel outlives the task");
    assert_eq!(connector.calls(), 1);
}

/// How [`concurrent_attempts`] spreads its supervisors.
#[derive(Clone, Copy, Debug)]
enum Spread {
    /// One bastion, one login.
    OneLogin,
    /// One bastion, a login each.
    LoginEach,
    /// A bastion each.
    BastionEach,
}

/// Starts eight supervisors over one slow connector, their gates letting `limit` handshakes
/// run at once, forces a few rounds of simultaneous reconnects, and returns the most attempts
/// seen at once, overall and while no attempt had authenticated since the last kill (the
/// probes).
async fn concurrent_attempts(spread: Spread, limit: usize) -> (usize, usize) {
    const N: usize = 8;
    let server = TestServer::new(ServerOptions::default());
    let connector = MemConnector::with(&server, Duration::from_millis(150), 0);
    let gate = BastionGate::with_limit(limit);
    let sups: Vec<Supervisor> = (0..N)
        .map(|i| {
            let (gate, login) = match spread {
                Spread::OneLogin => (gate.clone(), "tester@memory:22".to_owned()),
                Spread::LoginEach => (gate.clone(), format!("tester{i}@memory:22")),
                Spread::BastionEach => (
                    BastionGate::with_limit(limit),
                    "tester@memory:22".to_owned(),
                ),
            };
            spawn_login(&connector, fast(true), false, gate, &login)
        })
        .collect();
    let handles: Vec<SupervisorHandle> = sups.iter().map(Supervisor::handle).collect();
    for round in 1..=3 {
        let waits: Vec<_> = handles
            .iter()
            .map(|h| {
                let h = h.clone();
                tokio::spawn(async move { up(&h).await })
            })
            .collect();
        let mut sessions = Vec::new();
        for w in waits {
            sessions.push(w.await.expect("the wait for a session ran"));
        }
        for s in &sessions {
            echo(s, b"x").await;
        }
        if round < 3 {
            connector.kill_all(&server);
            for s in &sessions {
                within(STEP, "a session's end", s.ended()).await;
            }
        }
    }
    assert_eq!(connector.calls(), 3 * N as u32);
    assert_eq!(server.connections().len(), 3 * N);
    for sup in sups {
        assert_eq!(sup.shutdown(STEP).await, Outcome::Stopped);
    }
    (connector.max_in_flight(), connector.max_probing())
}

/// A reconnect storm to one bastion: the first attempts of a login probe it, two at a time
/// (two refused logins' penalties stay under sshd's threshold, three would not), and once
/// sshd has accepted the login the rest follow four at a time, never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bastions_handshakes_probe_two_at_a_time_then_run_four_at_a_time() {
    let (most, probing) = concurrent_attempts(Spread::OneLogin, HANDSHAKES_PER_BASTION).await;
    assert_eq!(most, HANDSHAKES_PER_BASTION);
    assert_eq!(probing, 2);
}

/// `[admin] handshakes_per_bastion` sets the gate's limit: six run at once once the login is
/// known good, and the probes still go two at a time (the penalty ledger, not the limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bastions_handshake_limit_is_what_the_fleet_file_sets() {
    assert_eq!(concurrent_attempts(Spread::OneLogin, 6).await, (6, 2));
}

/// Logins the bastion has not accepted since their sessions were lost may all be refused:
/// they go two at a time, however many there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logins_the_bastion_has_not_accepted_go_two_at_a_time() {
    assert_eq!(
        concurrent_attempts(Spread::LoginEach, HANDSHAKES_PER_BASTION).await,
        (2, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn supervisors_of_different_bastions_handshake_at_once() {
    // The control for the tests above: the measurement does see every overlapping attempt.
    assert_eq!(
        concurrent_attempts(Spread::BastionEach, HANDSHAKES_PER_BASTION).await,
        (8, 8)
    );
}

/// A fleet's gate keeps its bastion's series: attempts under way and waiting, and how long
/// each waited. An attempt stopped while it waits leaves the count and never begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bastions_gate_counts_attempts_under_way_and_waiting() {
    let server = TestServer::new(ServerOptions::default());
    // Slow enough that the queue behind the first attempt is seen.
    let connector = MemConnector::with(&server, Duration::from_millis(1500), 0);
    let metrics = Metrics::new();
    let m = metrics.bastion("memory:22");
    let gate = BastionGate::observed(1, m.clone());
    let now = |m: &BastionMetrics| (m.in_progress.get(), m.waiting.get());
    let a = spawn_with(&connector, fast(true), false, gate.clone());
    eventually("a's attempt under way", || now(&m) == (1, 0)).await;
    let b = spawn_with(&connector, fast(true), false, gate.clone());
    let c = spawn_with(&connector, fast(true), false, gate.clone());
    eventually("b and c waiting behind a", || now(&m) == (1, 2)).await;
    assert_eq!(c.shutdown(STEP).await, Outcome::Stopped);
    assert_eq!(now(&m), (1, 1), "c stopped while waiting");
    let sa = up(&a.handle()).await;
    let sb = up(&b.handle()).await;
    echo(&sa, b"a").await;
    echo(&sb, b"b").await;
    assert_eq!(now(&m), (0, 0));
    assert_eq!(connector.calls(), 2);
    // a began at once, b after a's attempt (1.5 s); c never began.
    assert_eq!(m.wait_seconds.get_sample_count(), 2);
    let waited = m.wait_seconds.get_sample_sum();
    assert!((1.0..STEP.as_secs_f64()).contains(&waited), "{waited} s");
    let text = metrics.encode();
    assert!(
        text.contains("forwarder_bastion_handshake_wait_seconds_count{bastion=\"memory:22\"} 2"),
        "{text}"
    );
    // The limit is a series too, and follows the gate's.
    assert_eq!(m.limit.get(), 1);
    gate.set_limit(3);
    assert_eq!(m.limit.get(), 3);
    for sup in [a, b] {
        assert_eq!(sup.shutdown(STEP).await, Outcome::Stopped);
    }
}

/// An attempt's preparation (asking the agent) runs before the bastion's handshake gate is
/// taken: a supervisor whose agent does not answer holds up no other supervisor of the same
/// bastion, and goes on once its agent answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_preparation_does_not_hold_the_bastion_s_handshake_gate() {
    let server = TestServer::new(ServerOptions::default());
    let stuck = MemConnector::new(&server);
    stuck.set_prepare_open(false);
    let other = MemConnector::new(&server);
    let gate = BastionGate::new();
    let a = spawn_with(&stuck, fast(true), false, gate.clone());
    within(STEP, "a's preparation to start", async {
        while stuck.prepares.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let b = spawn_with(&other, fast(true), false, gate);
    let sb = up(&b.handle()).await;
    echo(&sb, b"b").await;
    assert_eq!(stuck.calls(), 0, "a connected before its preparation ended");
    stuck.set_prepare_open(true);
    let sa = up(&a.handle()).await;
    echo(&sa, b"a").await;
    assert_eq!(
        (stuck.prepares.load(Ordering::SeqCst), stuck.calls()),
        (1, 1)
    );
    assert_eq!(a.shutdown(STEP).await, Outcome::Stopped);
    assert_eq!(b.shutdown(STEP).await, Outcome::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_connection_without_a_session_is_reset_after_its_wait_or_at_stop() {
    let server = TestServer::new(ServerOptions::default());
    let connector = MemConnector::new(&server);
    connector.set_down(true);
    let sup = spawn(&connector);
    let h = sup.handle();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let wait = Duration::from_millis(500);
    let mut tunnel = Tunnel::new();
    let target = Target {
        host: "db.internal".into(),
        port: 5432,
    };
    tunnel.listen(listener, h.clone(), target, wait);

    // The outage outlasts the connection's wait: closed with a reset once the wait is up.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"anyone there?").await.unwrap();
    let t0 = Instant::now();
    let mut b = [0u8; 16];
    let r = within(STEP, "the waiting connection to close", c.read(&mut b)).await;
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    let took = t0.elapsed();
    assert!(
        took >= wait - Duration::from_millis(50) && took < wait + Duration::from_secs(1),
        "closed after {took:?}"
    );
    assert!(server.connections().is_empty());

    // Stopping the supervisor ends a waiting connection at once.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"anyone there?").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.stop();
    let t0 = Instant::now();
    let r = within(
        Duration::from_secs(1),
        "the waiting connection to close at stop",
        c.read(&mut b),
    )
    .await;
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(sup.shutdown(STEP).await, Outcome::Stopped);
    tunnel.close();
}
