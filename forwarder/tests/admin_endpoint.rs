//! The admin endpoint (`forwarder::admin`) over real TCP with a fake fleet of two tunnels and
//! the real metrics: every path's status, content type and body, `/readyz` following the
//! fleet, 404/405/431, a large `/metrics`, shutdown, the connection limits (per source address,
//! and idle connections giving way to new clients when every slot is taken); then
//! `promtool check metrics` on the output, and a real Prometheus server scraping the endpoint.
//!
//! The last two need Debian's `prometheus` package (`promtool` and `prometheus`); without it
//! they fail and say so. Every wait is bounded.

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use forwarder::admin;
use forwarder::metrics::Metrics;
use forwarder::status::{FleetView, ProbeResult, TunnelState, TunnelStatus};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The bound of one HTTP exchange.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Prometheus gets to start and scrape both tunnels.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(30);
/// The bound of one `promtool` run.
const PROMTOOL_TIMEOUT: Duration = Duration::from_secs(30);

const PROMETHEUS_MISSING: &str = "is not installed: install Debian's `prometheus` package \
     (`apt-get install prometheus`; the lab's ensure_lab_tools in scripts/lib.sh does)";

// ---- a fake fleet ------------------------------------------------------------------------------

struct FakeFleet {
    ready: AtomicBool,
    tunnels: Mutex<Vec<TunnelStatus>>,
}

impl FleetView for FakeFleet {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
    fn tunnels(&self) -> Vec<TunnelStatus> {
        self.tunnels.lock().unwrap().clone()
    }
}

fn two_tunnels() -> Vec<TunnelStatus> {
    let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_378_400);
    vec![
        TunnelStatus {
            name: "acme-pg".into(),
            local: "127.0.0.1:15432".into(),
            remote: "db.internal:5432".into(),
            bastion: "deploy@bastion.example:22".into(),
            state: TunnelState::Up,
            since,
            last_error: None,
            active_connections: 2,
            connections_total: 7,
            bytes_to_remote: 1234,
            bytes_from_remote: 56789,
            probe: Some(ProbeResult {
                ok: true,
                at: since,
                detail: "postgres: TLS offered".into(),
            }),
        },
        TunnelStatus {
            name: "beta-mysql".into(),
            local: "127.0.0.1:13306".into(),
            remote: "mysql.internal:3306".into(),
            bastion: "deploy@bastion.example:22".into(),
            state: TunnelState::Reconnecting,
            since,
            last_error: Some("connection reset by peer".into()),
            active_connections: 0,
            connections_total: 0,
            bytes_to_remote: 0,
            bytes_from_remote: 0,
            probe: None,
        },
    ]
}

/// Metrics matching [`two_tunnels`], with one shared session.
fn fleet_metrics() -> Metrics {
    let m = Metrics::new();
    let a = m.tunnel("acme-pg");
    a.up.set(1);
    a.connections_total.inc_by(7);
    a.active_connections.set(2);
    a.bytes_to_remote.inc_by(1234);
    a.bytes_from_remote.inc_by(56789);
    a.probe_success.set(1);
    a.probe_duration_seconds.set(0.004);
    let b = m.tunnel("beta-mysql");
    b.up.set(0);
    let s = m.session("deploy@bastion.example:22");
    s.up.set(1);
    s.reconnects.inc();
    s.handshake_seconds.observe(0.35);
    s.keepalive_rtt_seconds.observe(0.002);
    s.keepalive_rtt_seconds.observe(0.004);
    let s2 = m.session("deploy@bastion.example:22#2");
    s2.handshake_seconds.observe(1.5);
    m.config_reloaded(true);
    // forwarder_tunnels is not set here: a scrape counts the view's states.
    m
}

/// A running endpoint; dropping it stops the server task.
struct Endpoint {
    addr: SocketAddr,
    fleet: Arc<FakeFleet>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(metrics: Metrics) -> Endpoint {
    let fleet = Arc::new(FakeFleet {
        ready: AtomicBool::new(false),
        tunnels: Mutex::new(two_tunnels()),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let view: Arc<dyn FleetView> = fleet.clone();
    let task = tokio::spawn(admin::serve(
        listener,
        view,
        Arc::new(metrics),
        async move {
            let _ = stopped.await;
        },
    ));
    Endpoint {
        addr,
        fleet,
        stop: Some(stop),
        task,
    }
}

// ---- a tiny HTTP client ------------------------------------------------------------------------

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }
}

/// Sends `raw` as the whole request and reads the reply to the end of the connection.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Reply {
    let io = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(raw).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(REQUEST_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| panic!("no complete reply from {addr} within {REQUEST_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("HTTP exchange with {addr}: {e}"));
    parse_reply(&buf)
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    exchange(addr, raw.as_bytes()).await
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path).await
}

fn parse_reply(buf: &[u8]) -> Reply {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(buf)));
    let head = std::str::from_utf8(&buf[..split]).expect("a UTF-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("a header line");
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let mut reply = Reply {
        status,
        headers,
        body: buf[split + 4..].to_vec(),
    };
    if reply
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        reply.body = dechunk(&reply.body);
    }
    reply
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").expect("chunk size");
        let size_field = std::str::from_utf8(&b[..eol]).unwrap();
        let size = usize::from_str_radix(size_field.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        b = &b[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

// ---- the paths ---------------------------------------------------------------------------------

#[tokio::test]
async fn healthz_answers_ok() {
    let ep = start(fleet_metrics()).await;
    let r = get(ep.addr, "/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), "ok\n");
}

#[tokio::test]
async fn metrics_are_the_text_format_with_every_family() {
    let ep = start(fleet_metrics()).await;
    let r = get(ep.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    let text = r.text();
    for line in [
        r#"forwarder_tunnel_up{tunnel="acme-pg"} 1"#,
        r#"forwarder_tunnel_up{tunnel="beta-mysql"} 0"#,
        r#"forwarder_tunnel_connections_total{tunnel="acme-pg"} 7"#,
        r#"forwarder_tunnel_active_connections{tunnel="acme-pg"} 2"#,
        r#"forwarder_tunnel_bytes_total{direction="to_remote",tunnel="acme-pg"} 1234"#,
        r#"forwarder_tunnel_bytes_total{direction="from_remote",tunnel="acme-pg"} 56789"#,
        r#"forwarder_tunnel_probe_success{tunnel="acme-pg"} 1"#,
        r#"forwarder_session_up{session="deploy@bastion.example:22"} 1"#,
        r#"forwarder_session_reconnects_total{session="deploy@bastion.example:22"} 1"#,
        r#"forwarder_session_handshake_seconds_count{session="deploy@bastion.example:22#2"} 1"#,
        r#"forwarder_session_keepalive_rtt_seconds_count{session="deploy@bastion.example:22"} 2"#,
        "forwarder_config_last_reload_successful 1",
        r#"forwarder_tunnels{state="up"} 1"#,
        r#"forwarder_tunnels{state="reconnecting"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(text.contains("# HELP forwarder_tunnel_up "));
    assert!(text.contains("# TYPE forwarder_session_handshake_seconds histogram\n"));
}

#[tokio::test]
async fn tunnels_is_a_json_array_of_statuses() {
    let ep = start(fleet_metrics()).await;
    let r = get(ep.addr, "/tunnels").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&r.body).expect("JSON");
    let list = v.as_array().expect("an array");
    assert_eq!(list.len(), 2);
    for t in list {
        let o = t.as_object().expect("an object per tunnel");
        for field in [
            "name",
            "local",
            "remote",
            "bastion",
            "state",
            "since",
            "last_error",
            "active_connections",
            "connections_total",
            "bytes_to_remote",
            "bytes_from_remote",
            "probe",
        ] {
            assert!(o.contains_key(field), "no {field:?} in {t}");
        }
    }
    let (a, b) = (&list[0], &list[1]);
    assert_eq!(a["name"], "acme-pg");
    assert_eq!(a["local"], "127.0.0.1:15432");
    assert_eq!(a["remote"], "db.internal:5432");
    assert_eq!(a["bastion"], "deploy@bastion.example:22");
    assert_eq!(a["state"], "up");
    assert_eq!(a["since"], "2026-12-04T10:00:00Z");
    assert!(a["last_error"].is_null());
    assert_eq!(a["active_connections"], 2);
    assert_eq!(a["connections_total"], 7);
    assert_eq!(a["bytes_to_remote"], 1234);
    assert_eq!(a["bytes_from_remote"], 56789);
    assert_eq!(a["probe"]["ok"], true);
    assert_eq!(a["probe"]["at"], "2026-12-04T10:00:00Z");
    assert_eq!(a["probe"]["detail"], "postgres: TLS offered");
    assert_eq!(b["name"], "beta-mysql");
    assert_eq!(b["state"], "reconnecting");
    assert_eq!(b["last_error"], "connection reset by peer");
    assert!(b["probe"].is_null());

    // The list follows the fleet.
    ep.fleet.tunnels.lock().unwrap().pop();
    let r = get(ep.addr, "/tunnels").await;
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn readyz_follows_the_fleet() {
    let ep = start(fleet_metrics()).await;
    let r = get(ep.addr, "/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(r.text().starts_with("not ready"), "{:?}", r.text());
    ep.fleet.ready.store(true, Ordering::SeqCst);
    let r = get(ep.addr, "/readyz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ready\n");
    ep.fleet.ready.store(false, Ordering::SeqCst);
    assert_eq!(get(ep.addr, "/readyz").await.status, 503);
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405() {
    let ep = start(fleet_metrics()).await;
    for path in ["/", "/metrics/", "/nope", "/tunnels/acme-pg"] {
        assert_eq!(get(ep.addr, path).await.status, 404, "{path}");
    }
    assert_eq!(request(ep.addr, "POST", "/nope").await.status, 404);
    for (method, path) in [
        ("POST", "/metrics"),
        ("PUT", "/tunnels"),
        ("DELETE", "/readyz"),
        ("HEAD", "/healthz"),
    ] {
        let r = request(ep.addr, method, path).await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some("GET"), "{method} {path}");
    }
    // A query string does not change the path.
    assert_eq!(get(ep.addr, "/healthz?verbose=1").await.status, 200);
}

#[tokio::test]
async fn a_request_with_a_body_is_answered_without_reading_it() {
    let ep = start(fleet_metrics()).await;
    let body = "x".repeat(1000);
    let raw = format!(
        "POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(exchange(ep.addr, raw.as_bytes()).await.status, 405);
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let ep = start(fleet_metrics()).await;
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
        "p".repeat(admin::MAX_HEADER_BYTES * 2)
    );
    // hyper answers 431 (or just closes, if it is still reading): never 200.
    let io = async {
        let mut s = TcpStream::connect(ep.addr).await?;
        // The server may close before taking everything; a failed write is fine.
        let _ = s.write_all(raw.as_bytes()).await;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(REQUEST_TIMEOUT, io)
        .await
        .expect("the server ends the connection")
        .unwrap();
    if !buf.is_empty() {
        assert_eq!(parse_reply(&buf).status, 431);
    }
    // The server carries on.
    assert_eq!(get(ep.addr, "/healthz").await.status, 200);
}

#[tokio::test]
async fn a_large_metrics_body_arrives_whole() {
    let m = fleet_metrics();
    for i in 0..2000 {
        let t = m.tunnel(&format!("tenant-{i:04}-postgres"));
        t.bytes_from_remote.inc_by(i);
    }
    let ep = start(m).await;
    let r = get(ep.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 500_000, "{} bytes", r.body.len());
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    let text = r.text();
    assert!(text.ends_with('\n'));
    assert!(text.contains(
        "forwarder_tunnel_bytes_total{direction=\"from_remote\",tunnel=\"tenant-1999-postgres\"} 1999\n"
    ));
}

#[tokio::test]
async fn keep_alive_connections_serve_several_requests() {
    let ep = start(fleet_metrics()).await;
    let raw = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let io = async {
        let mut s = TcpStream::connect(ep.addr).await?;
        s.write_all(raw.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(REQUEST_TIMEOUT, io)
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("HTTP/1.1 503 Service Unavailable\r\n"),
        "{text}"
    );
}

#[tokio::test]
async fn shutdown_stops_accepting_and_ends_open_connections() {
    let mut ep = start(fleet_metrics()).await;
    // An idle keep-alive connection, open when the server stops.
    let mut idle = TcpStream::connect(ep.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 17];
    tokio::time::timeout(REQUEST_TIMEOUT, idle.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 200 OK\r\n");

    ep.stop.take().unwrap().send(()).unwrap();
    let result = tokio::time::timeout(REQUEST_TIMEOUT, &mut ep.task)
        .await
        .expect("serve returns soon after the shutdown future completes")
        .expect("the server task did not panic");
    assert!(result.is_ok(), "{result:?}");
    // The idle connection was closed (after the rest of its reply).
    let mut rest = Vec::new();
    tokio::time::timeout(REQUEST_TIMEOUT, idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection is closed")
        .unwrap();
    // The listener is gone.
    assert!(TcpStream::connect(ep.addr).await.is_err());
}

// ---- the connection limits --------------------------------------------------------------------

/// Connects to `addr` from the loopback address `source` (all of 127.0.0.0/8 is loopback on
/// Linux), so that the endpoint sees several client addresses.
async fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    tokio::time::timeout(REQUEST_TIMEOUT, socket.connect(addr))
        .await
        .unwrap_or_else(|_| panic!("no connection to {addr} within {REQUEST_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("connecting to {addr} from {source:?}: {e}"))
}

/// `GET path` on a new connection from `source`, to the end of the connection.
async fn get_from(source: [u8; 4], addr: SocketAddr, path: &str) -> Reply {
    let io = async {
        let mut s = connect_from(source, addr).await;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(REQUEST_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| panic!("no reply to {path} from {addr} within {REQUEST_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("GET {path} from {source:?}: {e}"));
    parse_reply(&buf)
}

/// `GET /healthz` on the open keep-alive connection `s`; reads exactly the reply.
async fn healthz_on(s: &mut TcpStream) -> Reply {
    get_on(s, "/healthz").await
}

/// `GET path` on the open keep-alive connection `s`; reads exactly the reply.
async fn get_on(s: &mut TcpStream, path: &str) -> Reply {
    let io = async {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = parse_reply(&buf[..split + 4]);
                let length: usize = head.header("content-length").unwrap().parse().unwrap();
                if buf.len() >= split + 4 + length {
                    return Ok(buf);
                }
            }
        }
    };
    let buf = tokio::time::timeout(REQUEST_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| {
            panic!("no reply to {path} on a keep-alive connection within {REQUEST_TIMEOUT:?}")
        })
        .unwrap_or_else(|e| panic!("GET {path} on a keep-alive connection: {e}"));
    parse_reply(&buf)
}

/// Asserts that the server closes `s` (end of stream or reset) without sending anything more.
async fn assert_closed_by_server(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(REQUEST_TIMEOUT, s.read(&mut buf)).await {
        Err(_) => panic!("{what} is still open after {REQUEST_TIMEOUT:?}"),
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!(
            "{what}: got {:?} instead of the end of the connection",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    let ep = start(fleet_metrics()).await;
    let one = [127, 0, 0, 1];
    // As many idle connections from one address as the endpoint has slots.
    let mut idle = Vec::new();
    for _ in 0..admin::MAX_CONNECTIONS {
        idle.push(connect_from(one, ep.addr).await);
    }
    // Another address is served at once.
    let r = get_from([127, 0, 0, 2], ep.addr, "/healthz").await;
    assert_eq!((r.status, r.text()), (200, "ok\n"));
    // Those past the address's share were closed unanswered; the others are served.
    let (kept, over) = idle.split_at_mut(admin::MAX_CONNECTIONS_PER_ADDRESS);
    for (i, s) in over.iter_mut().enumerate() {
        let n = admin::MAX_CONNECTIONS_PER_ADDRESS + i + 1;
        assert_closed_by_server(s, &format!("connection {n} from {one:?}")).await;
    }
    for s in kept {
        assert_eq!(healthz_on(s).await.status, 200);
    }
    // Counted, and no connection was reclaimed (slots were left for the others).
    let over_limit = admin::MAX_CONNECTIONS - admin::MAX_CONNECTIONS_PER_ADDRESS;
    let text = get_from([127, 0, 0, 2], ep.addr, "/metrics")
        .await
        .text()
        .to_owned();
    for line in [
        format!(
            r#"forwarder_admin_connections_closed_total{{reason="address_limit"}} {over_limit}"#
        ),
        r#"forwarder_admin_connections_closed_total{reason="reclaimed"} 0"#.to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    // The address gets its share again once its connections are closed (as soon as the server
    // has seen them close).
    drop(idle);
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        let mut s = connect_from(one, ep.addr).await;
        let io = async {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        if let Ok(Ok(buf)) = tokio::time::timeout(REQUEST_TIMEOUT, io).await
            && !buf.is_empty()
        {
            assert_eq!(parse_reply(&buf).status, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{one:?} was not served again within {REQUEST_TIMEOUT:?} of closing its connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_full_endpoint_closes_an_idle_connection_of_the_busiest_address() {
    let ep = start(fleet_metrics()).await;
    let per = admin::MAX_CONNECTIONS_PER_ADDRESS;
    // The oldest connection: a keep-alive one, its address holding no other.
    let a = [127, 0, 0, 3];
    let mut a1 = connect_from(a, ep.addr).await;
    assert_eq!(healthz_on(&mut a1).await.status, 200);
    // b: a keep-alive connection, then slow clients that send half a request head.
    let b = [127, 0, 0, 4];
    let mut b1 = connect_from(b, ep.addr).await;
    assert_eq!(healthz_on(&mut b1).await.status, 200);
    let mut held = Vec::new();
    for _ in 1..per {
        let mut s = connect_from(b, ep.addr).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost:")
            .await
            .unwrap();
        held.push(s);
    }
    // c and d: half request heads; e: connections that send nothing.
    let c = [127, 0, 0, 5];
    let mut c1 = connect_from(c, ep.addr).await;
    c1.write_all(b"GET /metr").await.unwrap();
    for source in [c, [127, 0, 0, 6]] {
        for _ in 0..per - usize::from(source == c) {
            let mut s = connect_from(source, ep.addr).await;
            s.write_all(b"GET /metr").await.unwrap();
            held.push(s);
        }
    }
    let e = [127, 0, 0, 7];
    let fill = admin::MAX_CONNECTIONS - 2 - held.len() - 1;
    assert!(fill < per, "the test needs more addresses");
    for _ in 0..fill {
        held.push(connect_from(e, ep.addr).await);
    }
    // Every slot is taken; a new client is served.
    let newcomer = [127, 0, 0, 2];
    let r = get_from(newcomer, ep.addr, "/healthz").await;
    assert_eq!((r.status, r.text()), (200, "ok\n"));
    // The connection closed for it was b's keep-alive one (b, c and d hold the most, and it
    // has waited longest of theirs); a's older one was kept.
    assert_closed_by_server(&mut b1, "b's keep-alive connection").await;
    assert_eq!(healthz_on(&mut a1).await.status, 200);

    // Full again; now c's first connection, half a request head, has waited longest among the
    // addresses that hold the most.
    held.push(connect_from(e, ep.addr).await);
    let r = get_from(newcomer, ep.addr, "/healthz").await;
    assert_eq!(r.status, 200);
    assert_closed_by_server(&mut c1, "c's first slow connection").await;
    assert_eq!(healthz_on(&mut a1).await.status, 200);
    // Both closings were counted; no address went over its share.
    let text = get_on(&mut a1, "/metrics").await.text().to_owned();
    for line in [
        r#"forwarder_admin_connections_closed_total{reason="reclaimed"} 2"#,
        r#"forwarder_admin_connections_closed_total{reason="address_limit"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

// ---- promtool ----------------------------------------------------------------------------------

/// Runs `program args` with `input` on stdin, within `limit`; returns (exit code, stdout,
/// stderr). Panics with `missing` if the program is not installed.
fn run_with_input(
    program: &str,
    args: &[&str],
    input: &[u8],
    limit: Duration,
) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; {program} {PROMETHEUS_MISSING}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // A failed write shows in the exit status.
        let _ = stdin.write_all(&input);
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    writer.join().unwrap();
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(out_path).unwrap(),
        std::fs::read_to_string(err_path).unwrap(),
    )
}

#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let m = fleet_metrics();
    // Label values that need escaping stay valid.
    m.tunnel("quote\" back\\slash").up.set(1);
    let ep = start(m).await;
    let r = get(ep.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    let body = r.body;
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run_with_input("promtool", &["check", "metrics"], &body, PROMTOOL_TIMEOUT)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    assert_eq!(
        (code, out.trim(), err.trim()),
        (0, "", ""),
        "promtool check metrics found problems"
    );
}

// ---- a real Prometheus server ------------------------------------------------------------------

/// Kills the child process when dropped (also when the test panics).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn log_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Starts Prometheus scraping `target` every second; returns it with its web address once it
/// answers `/-/ready`. Retries with another port if the chosen one was taken meanwhile.
async fn start_prometheus(dir: &Path, target: SocketAddr) -> (KillOnDrop, SocketAddr) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: forwarder\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let log = dir.join("prometheus.log");
    let deadline = Instant::now() + SCRAPE_DEADLINE;
    for attempt in 0..3 {
        let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let data = dir.join(format!("data{attempt}"));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(File::create(&log).unwrap())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run prometheus: {e}; prometheus {PROMETHEUS_MISSING}")
            });
        let mut child = KillOnDrop(child);
        loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                eprintln!("prometheus exited with {status}:\n{}", log_of(&log));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not get ready within {SCRAPE_DEADLINE:?}:\n{}",
                log_of(&log)
            );
            let ready =
                tokio::time::timeout(Duration::from_secs(2), try_get(web, "/-/ready")).await;
            if matches!(ready, Ok(Ok(ref r)) if r.status == 200) {
                return (child, web);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("prometheus did not start:\n{}", log_of(&log));
}

/// [`get`] that returns connection errors instead of panicking (Prometheus starting up).
async fn try_get(addr: SocketAddr, path: &str) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(parse_reply(&buf))
}

/// The instant vector of `query`, as (labels, value) pairs.
async fn query(web: SocketAddr, query: &str) -> Vec<(serde_json::Map<String, Value>, String)> {
    let r = get(web, &format!("/api/v1/query?query={query}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).expect("JSON from the query API");
    assert_eq!(v["status"], "success", "{v}");
    v["data"]["result"]
        .as_array()
        .expect("a vector")
        .iter()
        .map(|s| {
            (
                s["metric"].as_object().unwrap().clone(),
                s["value"][1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The value of the series of `samples` whose `label` is `value`.
fn value_of<'a>(
    samples: &'a [(serde_json::Map<String, Value>, String)],
    label: &str,
    value: &str,
) -> Option<&'a str> {
    samples
        .iter()
        .find(|(m, _)| m.get(label).and_then(Value::as_str) == Some(value))
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_endpoint() {
    let ep = start(fleet_metrics()).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut prometheus, web) = start_prometheus(dir.path(), ep.addr).await;

    let deadline = Instant::now() + SCRAPE_DEADLINE;
    let up = loop {
        let up = query(web, "forwarder_tunnel_up").await;
        if value_of(&up, "tunnel", "acme-pg").is_some()
            && value_of(&up, "tunnel", "beta-mysql").is_some()
        {
            break up;
        }
        if let Some(status) = prometheus.0.try_wait().unwrap() {
            panic!(
                "prometheus exited with {status}:\n{}",
                log_of(&dir.path().join("prometheus.log"))
            );
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape both tunnels within {SCRAPE_DEADLINE:?}; last answer {up:?}; \
             targets: {}",
            get(web, "/api/v1/targets").await.text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(value_of(&up, "tunnel", "acme-pg"), Some("1"));
    assert_eq!(value_of(&up, "tunnel", "beta-mysql"), Some("0"));
    let (labels, _) = &up[0];
    assert_eq!(labels["job"], "forwarder");
    assert_eq!(labels["instance"], ep.addr.to_string().as_str());

    // The same scrape brought the other families, histograms included.
    let bytes = query(
        web,
        "forwarder_tunnel_bytes_total%7Bdirection%3D%22from_remote%22%7D",
    )
    .await;
    assert_eq!(value_of(&bytes, "tunnel", "acme-pg"), Some("56789"));
    let handshakes = query(web, "forwarder_session_handshake_seconds_count").await;
    assert_eq!(
        value_of(&handshakes, "session", "deploy@bastion.example:22#2"),
        Some("1")
    );
    let scrape = query(web, "up").await;
    assert_eq!(value_of(&scrape, "job", "forwarder"), Some("1"));
    drop(prometheus);
}
