//! Stopping the forwarder with SIGTERM, as a service manager does: exit status 0, promptly,
//! and a proper SSH disconnect that sshd logs as such.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Sshd, TunnelBuilder, UserKey, echo_round_trip, port_listening,
};

#[test]
fn interop_shutdown_sigterm_exits_zero_promptly_with_a_clean_disconnect() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .start();
    let port = tunnel.local_port();
    assert_eq!(echo_round_trip(port, b"up").expect("echo"), b"up");

    // A connection still open when the signal comes.
    let mut open = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    open.write_all(b"held").expect("write");
    let mut held = [0u8; 4];
    open.read_exact(&mut held).expect("echo");
    assert_eq!(&held, b"held");

    let started = Instant::now();
    let status = tunnel
        .terminate(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit within 10 s of SIGTERM:\n{}", tunnel.log()));
    let took = started.elapsed();
    let log = tunnel.log();
    assert_eq!(status.code(), Some(0), "{status}; log:\n{log}");
    assert!(
        took < Duration::from_secs(3),
        "SIGTERM took {took:?} to act"
    );
    assert!(!log.contains("panicked"), "{log}");

    // sshd got an SSH_MSG_DISCONNECT (reason 11, by application) rather than a dropped
    // connection, and closed the session. The lab's readiness probe leaves a reset
    // connection in the log too, so look at our connection's lines only, by its port.
    let sshd_log = sshd.wait_for_log("Disconnected from user", Duration::from_secs(10));
    let client_port = sshd_log
        .lines()
        .find_map(|l| {
            l.split_once("Accepted publickey for ")?
                .1
                .split_once(" port ")?
                .1
                .split_whitespace()
                .next()
        })
        .unwrap_or_else(|| panic!("no login in the sshd log:\n{sshd_log}"))
        .to_owned();
    let ours: Vec<&str> = sshd_log
        .lines()
        .filter(|l| l.contains(&format!("127.0.0.1 port {client_port}")))
        .collect();
    assert!(
        ours.iter().any(|l| l.contains(&format!(
            "Received disconnect from 127.0.0.1 port {client_port}:11: forwarder exiting"
        ))),
        "expected an SSH disconnect with reason 11 (by application):\n{}",
        ours.join("\n")
    );
    assert!(
        !ours
            .iter()
            .any(|l| l.contains("reset") || l.contains("closed by")),
        "{}",
        ours.join("\n")
    );

    // The held connection ended, and nothing listens any more.
    let mut rest = Vec::new();
    let _ = open.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    assert!(!port_listening(port), "the -L port still listens");
    wait_for_no_sessions(&sshd);
}

/// sshd's session process goes away once the client disconnected.
fn wait_for_no_sessions(sshd: &Sshd) {
    ssh_interop_tests::process::wait_until(
        Duration::from_secs(10),
        "sshd's session process exits",
        || sshd.session_pids().is_empty().then_some(()),
        || format!("sessions: {:?}", sshd.session_pids()),
    );
}
