//! `-R` remote forwards against the real sshd: a fixed port and port 0 (the allocated port
//! read from the client's log as ssh prints it), data checked byte for byte both ways,
//! several connections at once, and a forward the server refuses.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ssh_interop_tests::{ClientKind, EchoServer, KeyKind, Sshd, TunnelBuilder, UserKey, free_port};

/// Sends `payload` through the server's listener on `port` and checks the echo from here.
fn round_trip(port: u16, payload: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the remote port");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let writer = {
        let mut w = s.try_clone().expect("clone");
        let data = payload.to_vec();
        std::thread::spawn(move || {
            w.write_all(&data).expect("write");
            w.shutdown(std::net::Shutdown::Write).expect("half-close");
        })
    };
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read the echo");
    writer.join().expect("writer");
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "the echo differs from what was sent");
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn interop_remote_forward_fixed_port_and_port_zero_carry_data_both_ways() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let echo = EchoServer::start();
    let sshd = Sshd::builder().authorize(&key).start();
    let fixed = free_port();
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .option(&format!("RemoteForward={fixed} 127.0.0.1:{}", echo.port()))
        .option(&format!("RemoteForward=0 127.0.0.1:{}", echo.port()))
        .start();
    let log = tunnel.wait_for_log("Allocated port ", Duration::from_secs(20));
    let allocated: u16 = log
        .split("Allocated port ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("an allocated port in the log");
    assert!(log.contains(&format!(
        "Allocated port {allocated} for remote forward to 127.0.0.1:{}",
        echo.port()
    )));
    // The fixed port is requested first; give the server a moment to listen on both.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", fixed)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{}", tunnel.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    round_trip(fixed, &pattern(1 << 20, 1));
    round_trip(allocated, &pattern(300_000, 2));
    // Several connections at once.
    let threads: Vec<_> = (0..8u8)
        .map(|i| std::thread::spawn(move || round_trip(allocated, &pattern(200_000, i))))
        .collect();
    for t in threads {
        t.join().expect("a concurrent connection");
    }
}

#[test]
fn interop_remote_forward_refused_warns_or_exits_255() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let echo = EchoServer::start();
    let sshd = Sshd::builder()
        .config("AllowTcpForwarding local")
        .authorize(&key)
        .start();
    let port = free_port();
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .option(&format!("RemoteForward={port} 127.0.0.1:{}", echo.port()))
        .option("ExitOnForwardFailure=no")
        .start();
    tunnel.wait_for_log(
        &format!("Warning: remote port forwarding failed for listen port {port}"),
        Duration::from_secs(20),
    );
    drop(tunnel);
    let mut fatal = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .option(&format!("RemoteForward={port} 127.0.0.1:{}", echo.port()))
        .option("ExitOnForwardFailure=yes")
        .spawn();
    let log = fatal.expect_failure();
    assert!(
        log.contains(&format!(
            "remote port forwarding failed for listen port {port}"
        )),
        "{log}"
    );
}
