//! Dynamic remote forwarding (`-R port` with no target, OpenSSH 7.6's form) against
//! OpenSSH's sshd 9.2: the bastion listens, each connection there speaks SOCKS over its
//! channel, and the client connects from its own side to what the request names. psql
//! reaches PostgreSQL through it in every SOCKS form, with OpenSSH's `ssh -R port` run first
//! on the same lab as the reference; `PermitRemoteOpen` limits the targets; refusals and
//! failed connects come back as SOCKS replies, where OpenSSH's client only closes; bytes a
//! client sends right behind its request reach the target; nonsense costs nothing.

use std::io::{Read, Write};
use std::time::Duration;

use ssh_interop_tests::servers::{EchoServer, echo_round_trip_stream};
use ssh_interop_tests::socks::{SocksError, SocksForm, request, socks_connect};
use ssh_interop_tests::{
    ClientKind, KeyKind, Postgres, Sshd, Tunnel, TunnelBuilder, UserKey, free_port, port_listening,
};

const WAIT: Duration = Duration::from_secs(30);

/// A client of `kind` with `-v`, `RemoteForward=127.0.0.1:PORT` and the `options`; returns
/// once sshd listens on PORT (the bastion's port, held by sshd, not by the client).
fn start_dynamic(kind: ClientKind, sshd: &Sshd, key: &UserKey, options: &[&str]) -> (Tunnel, u16) {
    let port = free_port();
    let mut builder = TunnelBuilder::new(kind, sshd, key)
        .verbose()
        .option(&format!("RemoteForward=127.0.0.1:{port}"));
    for o in options {
        builder = builder.option(o);
    }
    let mut tunnel = builder.spawn();
    let deadline = std::time::Instant::now() + WAIT;
    while !port_listening(port) {
        assert!(
            tunnel.exited().is_none() && std::time::Instant::now() < deadline,
            "{}: sshd does not listen on {port}:\n{}",
            kind.name(),
            tunnel.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (tunnel, port)
}

#[test]
fn psql_reaches_postgres_through_a_dynamic_remote_forward_as_through_ssh_r() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = Postgres::start();
    let echo = EchoServer::start();
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        // The bastion listens on its loopback; the SOCKS clients below are on the bastion's
        // side (the lab's bastion is this machine).
        let (tunnel, port) = start_dynamic(kind, &sshd, &key, &[]);
        ssh_interop_tests::socks::check_every_form(
            port,
            pg.port(),
            echo.port(),
            kind.name(),
            || tunnel.log(),
        );
        drop(tunnel);
    }
}

#[test]
fn permit_remote_open_and_failed_connects_get_socks_replies_and_the_forward_keeps_serving() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let closed = free_port();
    let forbidden = EchoServer::start();
    let permit = format!(
        "PermitRemoteOpen=127.0.0.1:{} 127.0.0.1:{closed} localhost:*",
        echo.port()
    );
    let (tunnel, port) = start_dynamic(ClientKind::Forwarder, &sshd, &key, &[&permit]);

    // Allowed, but nothing listens there: the connect from here is refused, and SOCKS says
    // so (REP 05; SOCKS4 5B).
    match socks_connect(port, SocksForm::V5Address, "127.0.0.1", closed) {
        Err(SocksError::Refused(code)) => assert_eq!(code, 0x05, "SOCKS5 REP, connection refused"),
        other => panic!("expected a refusal, got {other:?}\n{}", tunnel.log()),
    }
    match socks_connect(port, SocksForm::V4, "127.0.0.1", closed) {
        Err(SocksError::Refused(code)) => assert_eq!(code, 0x5B, "SOCKS4 rejection"),
        other => panic!("expected a refusal, got {other:?}\n{}", tunnel.log()),
    }
    // Something listens, but PermitRemoteOpen does not name it: REP 02, not allowed, and no
    // connection reaches it.
    match socks_connect(port, SocksForm::V5Address, "127.0.0.1", forbidden.port()) {
        Err(SocksError::Refused(code)) => assert_eq!(code, 0x02, "SOCKS5 REP, not allowed"),
        other => panic!("expected a refusal, got {other:?}\n{}", tunnel.log()),
    }
    tunnel.wait_for_log(
        &format!(
            "to 127.0.0.1:{} refused: PermitRemoteOpen (127.0.0.1:{} 127.0.0.1:{closed} \
             localhost:*) does not allow it",
            forbidden.port(),
            echo.port()
        ),
        WAIT,
    );
    assert_eq!(
        forbidden.connections(),
        0,
        "a refused request reached its target"
    );
    // A name is allowed by its own entry (any port), never by the address it resolves to.
    let stream = socks_connect(port, SocksForm::V5Name, "localhost", echo.port())
        .unwrap_or_else(|e| panic!("SOCKS5 to localhost: {e:?}\n{}", tunnel.log()));
    assert_eq!(
        echo_round_trip_stream(stream, b"by name").expect("echo"),
        b"by name"
    );
    match socks_connect(port, SocksForm::V5Name, "localhost", forbidden.port()) {
        Ok(s) => drop(s),
        Err(e) => panic!("localhost:* allows any port: {e:?}\n{}", tunnel.log()),
    }

    // A client that sends its data right behind its request, before any reply: the reply,
    // then the echo of that data.
    let mut s = ssh_interop_tests::net::connect(port).expect("connect to the bastion's port");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut sent = request(SocksForm::V5Address, "127.0.0.1", echo.port());
    sent.extend_from_slice(b"early bytes");
    s.write_all(&sent).expect("send the request and the data");
    let mut reply = [0u8; 2 + 10 + 11];
    s.read_exact(&mut reply).expect("the reply and the echo");
    assert_eq!(&reply[..2], &[5, 0], "the method choice");
    assert_eq!(&reply[2..4], &[5, 0], "SOCKS5 success");
    assert_eq!(&reply[12..], b"early bytes");

    // Not SOCKS at all (an HTTP request), and BIND: closed, the second with REP 07.
    let mut s = ssh_interop_tests::net::connect(port).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send HTTP");
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert!(reply.is_empty(), "no SOCKS answer to HTTP: {reply:?}");
    let mut s = ssh_interop_tests::net::connect(port).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut bind = request(SocksForm::V5Address, "127.0.0.1", echo.port());
    bind[4] = 2;
    s.write_all(&bind).expect("send a BIND");
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).expect("read the refusal");
    assert_eq!(reply.get(..4), Some(&[5, 0, 5, 7][..]), "{reply:?}");
    tunnel.wait_for_log("not a SOCKS request", WAIT);
    tunnel.wait_for_log("SOCKS command 2 (BIND) is not supported", WAIT);

    // Still serving, on the same session.
    let stream = socks_connect(port, SocksForm::V4, "127.0.0.1", echo.port())
        .unwrap_or_else(|e| panic!("SOCKS4 to the echo server: {e:?}\n{}", tunnel.log()));
    assert_eq!(
        echo_round_trip_stream(stream, b"still here").expect("echo"),
        b"still here"
    );
    assert_eq!(
        tunnel.log_count("session up"),
        1,
        "one session throughout:\n{}",
        tunnel.log()
    );
}

#[test]
fn permit_remote_open_none_refuses_every_request() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let (tunnel, port) = start_dynamic(
        ClientKind::Forwarder,
        &sshd,
        &key,
        &["PermitRemoteOpen=none"],
    );
    for (form, host) in [
        (SocksForm::V5Address, "127.0.0.1"),
        (SocksForm::V4a, "localhost"),
    ] {
        match socks_connect(port, form, host, echo.port()) {
            Err(SocksError::Refused(code)) => {
                let expected = if form == SocksForm::V4a { 0x5B } else { 0x02 };
                assert_eq!(code, expected, "{form:?}");
            }
            other => panic!(
                "{form:?}: expected a refusal, got {other:?}\n{}",
                tunnel.log()
            ),
        }
    }
    assert_eq!(
        echo.connections(),
        0,
        "a refused request reached its target"
    );
}
