//! Round trips the handshake saves against the real sshd: a session after the first to the
//! same bastion sends its first key exchange message as a guess built from the bastion's own
//! first choices, and sshd takes it; the first authentication request goes out right behind
//! the service request. The round trips themselves are counted by `bench/run --rtt`.

use std::time::Duration;

use ssh_interop_tests::{
    ClientKind, EchoServer, KEX_COMPLETE, KeyKind, Pattern, Sshd, Tunnel, TunnelBuilder, UserKey,
    echo_round_trip, kex_guesses, kex_prepared,
};

fn assert_echo(tunnel: &Tunnel, seed: u64) {
    let sent = Pattern::get().bytes_at(seed * 4099, 48 * 1024);
    let back = echo_round_trip(tunnel.local_port(), &sent)
        .unwrap_or_else(|e| panic!("echo failed: {e}; log:\n{}", tunnel.log()));
    assert!(back == sent, "the echo differs; log:\n{}", tunnel.log());
}

/// A verbose tunnel to `echo` that notices a lost session within ~2 s and retries at once.
fn reconnecting_tunnel(sshd: &Sshd, key: &UserKey, echo: &EchoServer) -> Tunnel {
    TunnelBuilder::new(ClientKind::Forwarder, sshd, key)
        .verbose()
        .option("ServerAliveInterval=1")
        .option("ServerAliveCountMax=2")
        .option("ReconnectBackoffMax=1")
        .forward_to(echo.port())
        .start()
}

#[test]
fn a_reconnect_guesses_the_key_exchange_and_sshd_takes_the_guess() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let mut tunnel = reconnecting_tunnel(&sshd, &key, &echo);
    assert_echo(&tunnel, 1);
    tunnel.wait_for_log(KEX_COMPLETE, Duration::from_secs(10));
    assert_eq!(
        kex_guesses(&tunnel.log()),
        ["None"],
        "the first session cannot guess"
    );

    for round in 2..=3u64 {
        assert!(sshd.kill_sessions() > 0, "no session to kill");
        tunnel.wait_for_log_count(KEX_COMPLETE, round as usize, Duration::from_secs(20));
        assert_echo(&tunnel, round);
    }
    let log = tunnel.log();
    assert_eq!(
        kex_guesses(&log),
        ["None", "Some(true)", "Some(true)"],
        "later sessions guess from sshd's first choices and sshd takes it; log:\n{log}"
    );
    // Their first messages were made ahead, while the TCP connection came up, for the method
    // sshd chose last time. (The first session's was made for our own first choice, which
    // sshd 9.2 does not offer; it made another when sshd chose.)
    let prepared = kex_prepared(&log);
    assert_eq!(prepared.len(), 3, "log:\n{log}");
    assert_eq!(prepared[1..], ["true", "true"], "log:\n{log}");
    // sshd saw nothing it disliked: no protocol complaint in its log.
    let sshd_log = sshd.log();
    for bad in [
        "protocol error",
        "Bad packet",
        "ssh_dispatch_run_fatal",
        "incorrect signature",
    ] {
        assert!(!sshd_log.contains(bad), "sshd logged {bad:?}:\n{sshd_log}");
    }
    tunnel.terminate(Duration::from_secs(5));
}

#[test]
fn a_guess_from_an_algorithm_the_bastion_no_longer_prefers_is_skipped_and_still_connects() {
    // The first session learns sshd's first choices; sshd then restarts preferring another
    // key exchange, so the second session's guess is wrong: sshd must skip it, and the session
    // must come up with the method negotiated afresh.
    let key = UserKey::generate(KeyKind::Ed25519);
    let mut sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let mut tunnel = reconnecting_tunnel(&sshd, &key, &echo);
    assert_echo(&tunnel, 10);
    sshd.restart_with_config_line(
        "KexAlgorithms curve25519-sha256,sntrup761x25519-sha512@openssh.com",
    );
    tunnel.wait_for_log_count(KEX_COMPLETE, 2, Duration::from_secs(20));
    assert_echo(&tunnel, 11);
    let log = tunnel.log();
    assert_eq!(kex_guesses(&log), ["None", "Some(false)"], "log:\n{log}");
    tunnel.terminate(Duration::from_secs(5));
}

#[test]
fn a_new_process_guesses_from_the_file_the_last_one_wrote() {
    // A `forwarder -W` under ssh's ProxyCommand, or a tunnel started again, is a new process:
    // its first session guesses from the KexGuessFile the last run wrote.
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("kex_firsts");
    let run = |setting: &str, seed: u64| {
        let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
            .verbose()
            .option(&format!("KexGuessFile={setting}"))
            .forward_to(echo.port())
            .start();
        assert_echo(&tunnel, seed);
        tunnel.wait_for_log(KEX_COMPLETE, Duration::from_secs(10));
        let log = tunnel.log();
        tunnel.terminate(Duration::from_secs(5));
        kex_guesses(&log)
    };

    assert_eq!(
        run(&file.display().to_string(), 20),
        ["None"],
        "nothing known yet"
    );
    // Written once the server let us in, and waited for before the process exits.
    assert!(file.exists(), "the process exited without writing the file");
    let text = std::fs::read_to_string(&file).expect("read the file");
    assert!(
        !text.contains("127.0.0.1"),
        "the file names no host:\n{text}"
    );
    assert!(text.contains("sntrup761x25519-sha512"), "{text}");

    assert_eq!(
        run(&file.display().to_string(), 21),
        ["Some(true)"],
        "the next process guesses from the file, and sshd takes it"
    );
    assert_eq!(run("none", 22), ["None"], "KexGuessFile=none reads no file");
}
