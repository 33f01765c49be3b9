//! `-D` (dynamic forwarding) against OpenSSH's sshd 9.2: a local SOCKS4, SOCKS4A and SOCKS5
//! proxy whose connections become `direct-tcpip` channels to whatever each one names. psql
//! reaches PostgreSQL through it in every form, with OpenSSH's `ssh -D` run first on the
//! same lab as the reference; refusals come back as SOCKS replies; a client that speaks
//! nonsense or goes away mid-request costs the tunnel nothing; a request made while sshd is
//! down waits for the next session and is granted on it.

use std::io::Write;
use std::time::Duration;

use ssh_interop_tests::servers::{EchoServer, echo_round_trip_stream};
use ssh_interop_tests::socks::{SocksError, SocksForm, request, socks_connect};
use ssh_interop_tests::{
    ClientKind, KeyKind, Postgres, Sshd, Tunnel, TunnelBuilder, UserKey, free_port,
};

const WAIT: Duration = Duration::from_secs(30);

/// A client of `kind` with `-D 127.0.0.1:port` (as `DynamicForward`, which both read),
/// waited for until the port listens.
fn start_socks(kind: ClientKind, sshd: &Sshd, key: &UserKey) -> (Tunnel, u16) {
    let port = free_port();
    let tunnel = TunnelBuilder::new(kind, sshd, key)
        .verbose()
        .option(&format!("DynamicForward=127.0.0.1:{port}"))
        .listens_on(port)
        .start();
    (tunnel, port)
}

#[test]
fn psql_reaches_postgres_through_every_socks_form_as_through_ssh_d() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = Postgres::start();
    let echo = EchoServer::start();
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        let (tunnel, proxy) = start_socks(kind, &sshd, &key);
        ssh_interop_tests::socks::check_every_form(
            proxy,
            pg.port(),
            echo.port(),
            kind.name(),
            || tunnel.log(),
        );
        drop(tunnel);
    }
    let log = sshd.log();
    assert!(
        log.contains(&format!("target localhost port {}", pg.port()))
            && log.contains(&format!("target 127.0.0.1 port {}", pg.port())),
        "sshd opened the channels each request named:\n{log}"
    );
}

#[test]
fn refused_targets_get_socks_replies_and_the_proxy_keeps_serving() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let echo = EchoServer::start();
    // The echo server and a port where nothing listens may be reached, nothing else.
    let closed = free_port();
    let sshd = Sshd::builder()
        .config(format!(
            "PermitOpen 127.0.0.1:{} 127.0.0.1:{closed}",
            echo.port()
        ))
        .authorize(&key)
        .start();
    let (tunnel, proxy) = start_socks(ClientKind::Forwarder, &sshd, &key);
    let forbidden = free_port();

    // Nothing listens: sshd's connect is refused, and SOCKS says so (REP 05; SOCKS4 5B).
    match socks_connect(proxy, SocksForm::V5Address, "127.0.0.1", closed) {
        Err(SocksError::Refused(code)) => assert_eq!(code, 0x05, "SOCKS5 REP, connection refused"),
        other => panic!("expected a refusal, got {other:?}\n{}", tunnel.log()),
    }
    match socks_connect(proxy, SocksForm::V4, "127.0.0.1", closed) {
        Err(SocksError::Refused(code)) => assert_eq!(code, 0x5B, "SOCKS4 rejection"),
        other => panic!("expected a refusal, got {other:?}\n{}", tunnel.log()),
    }
    // PermitOpen forbids it: REP 02, not allowed by the ruleset.
    match socks_connect(proxy, SocksForm::V5Address, "127.0.0.1", forbidden) {
        Err(SocksError::Refused(code)) => assert_eq!(code, 0x02, "SOCKS5 REP for PermitOpen"),
        other => panic!("expected a refusal, got {other:?}\n{}", tunnel.log()),
    }
    // BIND is not offered: REP 07, command not supported.
    let mut s = ssh_interop_tests::net::connect(proxy).expect("connect to the proxy");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut bind = request(SocksForm::V5Address, "127.0.0.1", echo.port());
    bind[4] = 2;
    s.write_all(&bind).expect("send a BIND");
    let mut reply = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut reply).expect("read the refusal");
    assert_eq!(
        &reply[..4],
        &[5, 0, 5, 7],
        "method choice, then REP 07: {reply:?}"
    );

    // Not SOCKS at all (an HTTP request), and a request cut off half way: closed, logged.
    let mut s = ssh_interop_tests::net::connect(proxy).expect("connect to the proxy");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send HTTP");
    let mut reply = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut reply);
    assert!(reply.is_empty(), "no SOCKS answer to HTTP: {reply:?}");
    let mut s = ssh_interop_tests::net::connect(proxy).expect("connect to the proxy");
    s.write_all(&request(SocksForm::V4a, "localhost", echo.port())[..10])
        .expect("send half a request");
    drop(s);
    tunnel.wait_for_log("not a SOCKS request", WAIT);
    tunnel.wait_for_log("before its request was complete", WAIT);
    tunnel.wait_for_log("SOCKS command 2 (BIND) is not supported", WAIT);

    // Still serving, on the same session.
    let stream = socks_connect(proxy, SocksForm::V5Address, "127.0.0.1", echo.port())
        .unwrap_or_else(|e| panic!("SOCKS5 to the echo server: {e:?}\n{}", tunnel.log()));
    let back = echo_round_trip_stream(stream, b"still here").expect("echo");
    assert_eq!(back, b"still here");
    assert_eq!(
        tunnel.log_count("session up"),
        1,
        "one session throughout:\n{}",
        tunnel.log()
    );
}

#[test]
fn a_socks_request_made_while_sshd_is_down_is_granted_once_it_is_back() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let mut sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let port = free_port();
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .option("ServerAliveInterval=1")
        .option("ServerAliveCountMax=2")
        .option("ReconnectBackoffMax=2")
        .dynamic(port)
        .start();
    let open = socks_connect(port, SocksForm::V5Name, "localhost", echo.port())
        .unwrap_or_else(|e| panic!("SOCKS5 before the outage: {e:?}\n{}", tunnel.log()));

    // The session dies: the connection open through it ends at once.
    sshd.stop();
    let mut open = open;
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut rest = Vec::new();
    match std::io::Read::read_to_end(&mut open, &mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "the open connection did not end with the session: {e}\n{}",
            tunnel.log()
        ),
    }
    assert!(rest.is_empty(), "nothing came back: {rest:?}");
    tunnel.wait_for_log("session lost", WAIT);

    // A request made during the outage waits for the next session, then is granted.
    let echo_port = echo.port();
    let asking = std::thread::spawn(move || {
        socks_connect(port, SocksForm::V4a, "localhost", echo_port)
            .map(|s| echo_round_trip_stream(s, b"after the outage"))
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !asking.is_finished(),
        "the request waits while sshd is down"
    );
    sshd.restart();
    let back = asking
        .join()
        .expect("the SOCKS client thread")
        .unwrap_or_else(|e| panic!("SOCKS4A after the outage: {e:?}\n{}", tunnel.log()))
        .expect("echo after the outage");
    assert_eq!(back, b"after the outage");
    assert!(tunnel.log_count("session up") >= 2, "{}", tunnel.log());
}

#[test]
fn dash_d_on_the_command_line_listens_on_loopback_only() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let port = free_port();
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .verbose()
        .arg("-D")
        .arg(&port.to_string())
        .listens_on(port)
        .start();
    let stream = socks_connect(port, SocksForm::V5Name, "localhost", echo.port())
        .unwrap_or_else(|e| panic!("SOCKS5: {e:?}\n{}", tunnel.log()));
    assert_eq!(
        echo_round_trip_stream(stream, b"dash d").expect("echo"),
        b"dash d"
    );
    let listens = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let hex_port = format!(":{port:04X} ");
    let lines: Vec<&str> = listens
        .lines()
        .filter(|l| l.contains(&hex_port) && l.split_whitespace().nth(3) == Some("0A"))
        .collect();
    assert!(
        !lines.is_empty()
            && lines.iter().all(|l| l
                .split_whitespace()
                .nth(1)
                .is_some_and(|a| a.starts_with("0100007F:"))),
        "listening on 127.0.0.1 only: {lines:?}"
    );
}
