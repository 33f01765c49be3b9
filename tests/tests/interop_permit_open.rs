//! Forwards the server refuses (`PermitOpen`, `AllowTcpForwarding no`) and a local port that
//! cannot be bound: the refused connection is closed and explained, everything else goes on.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, SinkServer, Sshd, Tunnel, TunnelBuilder, UserKey,
    echo_round_trip, free_port,
};

/// Connects to a forward the server will refuse, sends a little, and checks that the local
/// client sees the connection end (EOF or reset) without data, quickly.
fn assert_closed_without_data(port: u16, tunnel: &Tunnel) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the -L port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    // The server's refusal may close the socket before this arrives; that is fine.
    let _ = stream.write_all(b"this must not reach anyone");
    let mut got = Vec::new();
    let read = stream.read_to_end(&mut got);
    let took = started.elapsed();
    if let Err(e) = &read {
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
            "expected EOF or a reset, got {e} after {took:?}; forwarder log:\n{}",
            tunnel.log()
        );
    }
    assert!(
        got.is_empty(),
        "received {} bytes from a refused forward",
        got.len()
    );
    assert!(
        took < Duration::from_secs(5),
        "the refused connection took {took:?} to close; forwarder log:\n{}",
        tunnel.log()
    );
}

#[test]
fn interop_permit_open_refused_channel_is_closed_and_explained_while_allowed_one_works() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let echo = EchoServer::start();
    let sink = SinkServer::start();
    let sshd = Sshd::builder()
        .config(format!("PermitOpen 127.0.0.1:{}", echo.port()))
        .authorize(&key)
        .start();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .forward_to(sink.port())
        .start();
    let (allowed, refused) = (tunnel.local_ports()[0], tunnel.local_ports()[1]);

    assert_eq!(
        echo_round_trip(allowed, b"before").expect("echo before"),
        b"before"
    );

    // An allowed connection stays open across the refusal.
    let mut during = TcpStream::connect(("127.0.0.1", allowed)).expect("connect");
    during
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    during.write_all(b"first half ").expect("write");
    let mut buf = [0u8; 11];
    during.read_exact(&mut buf).expect("echo of the first half");
    assert_eq!(&buf, b"first half ");

    assert_closed_without_data(refused, &tunnel);

    during
        .write_all(b"second half")
        .expect("write after the refusal");
    during.shutdown(Shutdown::Write).expect("half-close");
    let mut rest = Vec::new();
    during
        .read_to_end(&mut rest)
        .expect("echo of the second half");
    assert_eq!(rest, b"second half");

    assert_eq!(
        echo_round_trip(allowed, b"after").expect("echo after"),
        b"after"
    );

    // The server's reason, in the forwarder's log without -v, names the forward.
    let log = tunnel.wait_for_log("refused", Duration::from_secs(10));
    let line = log
        .lines()
        .find(|l| l.contains("refused"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("administratively prohibited") && line.contains(&sink.port().to_string()),
        "the refusal should name the reason and the forward: {line}"
    );
    sshd.wait_for_log("but the request was denied", Duration::from_secs(10));
    assert!(
        sink.results().is_empty(),
        "nothing reached the refused target"
    );
    assert_eq!(tunnel.exited(), None, "the forwarder keeps running:\n{log}");
    assert_eq!(echo.connections(), 3);
}

#[test]
fn interop_permit_open_allow_tcp_forwarding_no_refuses_every_channel_but_forwarder_stays_up() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let echo = EchoServer::start();
    let sshd = Sshd::builder()
        .config("AllowTcpForwarding no")
        .authorize(&key)
        .start();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .start();

    for _ in 0..3 {
        assert_closed_without_data(tunnel.local_port(), &tunnel);
    }
    let log = tunnel.wait_for_log("refused", Duration::from_secs(10));
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("refused")).collect();
    assert_eq!(
        refusals.len(),
        3,
        "one message per refused connection:\n{log}"
    );
    assert!(
        refusals
            .iter()
            .all(|l| l.contains("administratively prohibited")
                && l.contains(&echo.port().to_string())),
        "{log}"
    );
    assert_eq!(echo.connections(), 0, "sshd opened nothing");
    assert_eq!(tunnel.exited(), None, "the forwarder keeps running:\n{log}");
}

#[test]
fn interop_permit_open_exit_on_forward_failure_with_local_port_in_use() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let echo = EchoServer::start();
    let sshd = Sshd::start(&key);
    let busy_port = free_port();
    let _squatter = TcpListener::bind(("127.0.0.1", busy_port)).expect("take the port");
    let log_start = sshd.log().len();

    let started = Instant::now();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .option("ExitOnForwardFailure=yes")
        .forward(busy_port, "127.0.0.1", echo.port())
        .spawn();
    let status = tunnel
        .wait_exit(Duration::from_secs(20))
        .expect("the forwarder exits");
    let log = tunnel.log();
    assert_eq!(status.code(), Some(255), "{status}; log:\n{log}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        log.contains(&format!("127.0.0.1:{busy_port}"))
            && log.to_ascii_lowercase().contains("address already in use")
            && log.contains("ExitOnForwardFailure"),
        "the message should name the forward, the bind error and the option:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    // The bind is tried before connecting, so sshd never heard from it.
    let sshd_log = sshd.log();
    assert!(
        !sshd_log
            .get(log_start..)
            .unwrap_or_default()
            .contains("Connection from"),
        "{sshd_log}"
    );
}
