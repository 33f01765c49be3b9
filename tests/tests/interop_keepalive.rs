//! Keepalives both ways: the forwarder answers sshd's (`ClientAliveInterval`), and its own
//! (`ServerAliveInterval`) notice a server that stopped answering.

use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use ssh_interop_tests::process::{children_of, signal};
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Sshd, TunnelBuilder, UserKey, echo_round_trip,
};

#[test]
fn interop_keepalive_forwarder_answers_sshd_client_alive_checks_while_idle() {
    let key = UserKey::generate(KeyKind::Ed25519);
    // sshd asks every second and drops a client that leaves 3 questions unanswered.
    let sshd = Sshd::builder()
        .config("ClientAliveInterval 1")
        .config("ClientAliveCountMax 3")
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .verbose()
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"before").expect("echo"),
        b"before"
    );

    // Well past the 3 s after which sshd drops a client that does not answer.
    thread::sleep(Duration::from_secs(6));

    assert_eq!(
        tunnel.exited(),
        None,
        "the forwarder exited while idle; its log:\n{}",
        tunnel.log()
    );
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"after six idle seconds").expect("echo after idling"),
        b"after six idle seconds"
    );
    let sshd_log = sshd.log();
    assert!(
        !sshd_log.contains("Timeout, client not responding"),
        "sshd gave up on the forwarder:\n{sshd_log}"
    );
    assert_eq!(sshd.session_pids().len(), 1, "still the one session");
    // sshd's checks really happened and reached the forwarder: keepalive@openssh.com global
    // requests that want a reply (sshd sends one after each idle second without input, and
    // an answer counts as input, so about one every two seconds).
    let asked = tunnel
        .log()
        .lines()
        .filter(|l| l.contains("keepalive@openssh.com"))
        .count();
    assert!(
        asked >= 2,
        "expected sshd's keepalive requests in the forwarder's -v log, found {asked}:\n{}",
        tunnel.log()
    );
}

/// Stops processes with SIGSTOP and continues them when dropped, so a failing test leaves
/// no frozen process behind.
struct Frozen(Vec<u32>);

impl Frozen {
    /// Stops `root` and everything it forked (sshd's monitor and its unprivileged child both
    /// take part in a session).
    fn tree(root: u32) -> Frozen {
        let mut pids = vec![root];
        let mut i = 0;
        while let Some(&pid) = pids.get(i) {
            pids.extend(children_of(pid));
            i += 1;
        }
        for &pid in &pids {
            signal(pid, Signal::STOP);
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.0 {
            signal(pid, Signal::CONT);
        }
    }
}

#[test]
fn interop_keepalive_forwarder_without_reconnect_gives_up_on_a_server_that_stops_answering() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    // Reconnect=no keeps ssh's behaviour: a dead session ends the program (exit 255).
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .verbose()
        .option("Reconnect=no")
        .option("ServerAliveInterval=1")
        .option("ServerAliveCountMax=2")
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"ping").expect("echo"),
        b"ping"
    );

    // While sshd answers, idle keepalives keep the session up.
    thread::sleep(Duration::from_secs(4));
    assert_eq!(
        tunnel.exited(),
        None,
        "the forwarder gave up on a server that answers; its log:\n{}",
        tunnel.log()
    );
    assert!(
        tunnel.log().contains("sending keepalive"),
        "the forwarder sent keepalives while idle:\n{}",
        tunnel.log()
    );

    let sessions = sshd.session_pids();
    assert_eq!(sessions.len(), 1, "one sshd session: {sessions:?}");
    // Declared after sshd and the tunnel, so it is dropped (continued) before they are.
    let _frozen = Frozen::tree(sessions[0]);
    let stopped = Instant::now();

    // Two unanswered keepalives a second apart, then give up: about 3 s; allow for a slow
    // machine but not for a hang.
    let status = tunnel
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| {
            panic!(
                "the forwarder still runs 20 s after the server stopped answering; its log:\n{}",
                tunnel.log()
            )
        });
    let took = stopped.elapsed();
    let log = tunnel.log();
    assert!(!status.success(), "exit status {status}; log:\n{log}");
    assert_eq!(status.code(), Some(255), "log:\n{log}");
    // The last answer came at most a second before the freeze, so two unanswered
    // keepalives take at least another second.
    assert!(
        took >= Duration::from_secs(1),
        "gave up after {took:?}, before two keepalives could go unanswered; log:\n{log}"
    );
    assert!(
        log.contains("did not answer") && log.contains("ServerAliveInterval"),
        "the message should say the server stopped answering keepalives; log:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    eprintln!("gave up {took:?} after the server froze");
}
