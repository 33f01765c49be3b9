//! Many connections at once through one forwarder, all multiplexed over one SSH session.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ring::digest::{SHA256, digest};
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Pattern, Sshd, TunnelBuilder, UserKey, echo_round_trip,
};

const CONNECTIONS: usize = 100;
const PER_CONNECTION: usize = 256 * 1024;

fn hex_sha256(data: &[u8]) -> String {
    digest(&SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn interop_concurrency_100_parallel_connections_share_one_ssh_session() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .start();
    let port = tunnel.local_port();

    let started = Instant::now();
    // All threads connect at once, to put 100 channel opens in flight together.
    let barrier = Arc::new(Barrier::new(CONNECTIONS));
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let barrier = barrier.clone();
            thread::spawn(move || -> Result<(), String> {
                // Each connection sends a different stretch of the pattern, so crossed
                // channels would show as a wrong digest.
                let sent = Pattern::get()
                    .chunk(i as u64 * 10_007, PER_CONNECTION)
                    .to_vec();
                barrier.wait();
                let back =
                    echo_round_trip(port, &sent).map_err(|e| format!("connection {i}: {e}"))?;
                if back.len() != sent.len() || hex_sha256(&back) != hex_sha256(&sent) {
                    return Err(format!(
                        "connection {i}: sent {} bytes, {} came back, digests differ",
                        sent.len(),
                        back.len()
                    ));
                }
                Ok(())
            })
        })
        .collect();
    let failures: Vec<String> = workers
        .into_iter()
        .filter_map(|w| {
            w.join()
                .unwrap_or_else(|_| Err("thread panicked".into()))
                .err()
        })
        .collect();
    let took = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {CONNECTIONS} connections failed:\n{}\nforwarder log:\n{}",
        failures.len(),
        failures.join("\n"),
        tunnel.log()
    );
    eprintln!(
        "{CONNECTIONS} x {} KiB echoed in {took:?}",
        PER_CONNECTION / 1024
    );
    assert!(
        took < Duration::from_secs(60),
        "{CONNECTIONS} echoes took {took:?}"
    );
    assert_eq!(echo.connections(), CONNECTIONS);

    // One SSH session carried them all: one sshd session process, one login, and sshd
    // opened a direct-tcpip channel for each connection.
    assert_eq!(sshd.session_pids().len(), 1, "sshd sessions");
    let log = sshd.log();
    assert_eq!(
        log.matches("Accepted publickey").count(),
        1,
        "one login:\n{log}"
    );
    assert_eq!(
        log.matches("server_request_direct_tcpip: originator")
            .count(),
        CONNECTIONS,
        "one direct-tcpip channel per connection"
    );
    assert_eq!(tunnel.exited(), None, "the forwarder keeps running");
}
