//! Host key checking against known_hosts: a wrong key stops the connection before
//! authentication, an unknown one is refused or recorded by policy, hashed entries match.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ssh_interop_tests::process::{require_program, run_ok, wait_until};
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Sshd, Tunnel, TunnelBuilder, UserKey, echo_round_trip,
};

/// Lines sshd logs when a client tries to authenticate (DEBUG1 and above).
const AUTH_LOG_LINES: [&str; 5] = [
    "userauth-request",
    "Accepted publickey",
    "Failed publickey",
    "Postponed publickey",
    "matching key found",
];

fn forwarder(sshd: &Sshd, key: &UserKey, known_hosts: &Path) -> TunnelBuilder {
    TunnelBuilder::new(ClientKind::Forwarder, sshd, key).known_hosts(known_hosts)
}

/// Waits for a forwarder that must fail, meanwhile connecting to its `-L` port the way an
/// application would (the port listens before the SSH connection is made) and checking that
/// no byte ever comes back. Returns the log.
fn expect_refusal(tunnel: &mut Tunnel) -> String {
    let started = Instant::now();
    let mut probed = false;
    let status = loop {
        if let Some(status) = tunnel.exited() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the forwarder still runs after 20 s; its log:\n{}",
            tunnel.log()
        );
        if !probed && let Ok(mut stream) = TcpStream::connect(("127.0.0.1", tunnel.local_port())) {
            probed = true;
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .expect("read timeout");
            let _ = stream.write_all(b"secret query");
            let mut got = Vec::new();
            let _ = stream.read_to_end(&mut got);
            assert!(
                got.is_empty(),
                "the forwarder forwarded {} bytes before the host key was trusted",
                got.len()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let log = tunnel.log();
    assert_eq!(status.code(), Some(255), "{status}; log:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    log
}

/// The part of sshd's log after `offset`, once it shows that connection ended.
fn sshd_log_of_ended_connection(sshd: &Sshd, offset: usize) -> String {
    wait_until(
        Duration::from_secs(10),
        "sshd logs the end of the connection",
        || {
            let log = sshd.log();
            let ours = log.get(offset..).unwrap_or_default().to_owned();
            (ours.contains("Connection from")
                && [
                    "Received disconnect",
                    "Connection closed",
                    "Disconnected from",
                ]
                .iter()
                .any(|end| ours.contains(end)))
            .then_some(ours)
        },
        || format!("sshd log:\n{}", sshd.log()),
    )
}

#[test]
fn interop_host_key_wrong_key_is_refused_before_authentication_and_nothing_is_forwarded() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let server_key = sshd
        .host_key(KeyKind::Ed25519)
        .expect("an Ed25519 host key");
    // Another Ed25519 key under this server's name, on line 3.
    let impostor = UserKey::generate(KeyKind::Ed25519);
    let known_hosts = sshd.dir().join("wrong_known_hosts");
    fs::write(
        &known_hosts,
        format!(
            "# keys of the test lab\nbastion.example ssh-ed25519 {}\n{}\n",
            server_key.base64(),
            ssh_interop_tests::known_hosts_line(
                "127.0.0.1",
                sshd.port(),
                impostor.public_key_line()
            )
        ),
    )
    .expect("write known_hosts");
    let before = fs::read(&known_hosts).expect("read known_hosts");
    let log_start = sshd.log().len();

    let mut tunnel = forwarder(&sshd, &key, &known_hosts)
        .forward_to(echo.port())
        .spawn();
    let log = expect_refusal(&mut tunnel);

    assert!(
        log.contains(server_key.fingerprint()),
        "the message should show the key the server offered ({}):\n{log}",
        server_key.fingerprint()
    );
    assert!(
        log.contains(impostor.fingerprint()),
        "the message should show the key known_hosts expects ({}):\n{log}",
        impostor.fingerprint()
    );
    let path = known_hosts.display().to_string();
    assert!(
        log.contains(&format!("line 3 of {path}")) || log.contains(&format!("{path}:3")),
        "the message should point at line 3 of {path}:\n{log}"
    );
    assert!(log.contains("CHANGED"), "{log}");

    let ours = sshd_log_of_ended_connection(&sshd, log_start);
    for line in AUTH_LOG_LINES {
        assert!(
            !ours.contains(line),
            "sshd saw an authentication attempt ({line:?}) from a client that distrusts it:\n{ours}"
        );
    }
    assert_eq!(echo.connections(), 0, "nothing was forwarded");
    assert_eq!(
        fs::read(&known_hosts).expect("read known_hosts"),
        before,
        "known_hosts must not change"
    );
}

#[test]
fn interop_host_key_unknown_host_is_refused_by_default_with_its_fingerprint() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let known_hosts = sshd.dir().join("empty_known_hosts");
    fs::write(&known_hosts, "").expect("write known_hosts");
    let log_start = sshd.log().len();

    let mut tunnel = forwarder(&sshd, &key, &known_hosts)
        .forward_to(echo.port())
        .spawn();
    let log = expect_refusal(&mut tunnel);

    assert!(
        sshd.host_keys()
            .iter()
            .any(|k| log.contains(k.fingerprint())),
        "the message should show the offered key's fingerprint (one of {:?}):\n{log}",
        sshd.host_keys()
            .iter()
            .map(|k| k.fingerprint())
            .collect::<Vec<_>>()
    );
    assert!(log.contains("not known"), "{log}");
    let ours = sshd_log_of_ended_connection(&sshd, log_start);
    for line in AUTH_LOG_LINES {
        assert!(!ours.contains(line), "{line:?} in:\n{ours}");
    }
    assert_eq!(echo.connections(), 0);
    assert_eq!(fs::read_to_string(&known_hosts).expect("read"), "");
}

#[test]
fn interop_host_key_accept_new_records_the_key_and_the_next_run_trusts_it() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    // A known_hosts that does not exist yet, as on a first connection from a new machine.
    let known_hosts = sshd.dir().join("fresh").join("known_hosts");
    fs::create_dir(sshd.dir().join("fresh")).expect("create dir");

    let tunnel = forwarder(&sshd, &key, &known_hosts)
        .option("StrictHostKeyChecking=accept-new")
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"first").expect("echo"),
        b"first"
    );
    let recorded = fs::read_to_string(&known_hosts).expect("the forwarder wrote known_hosts");
    let lines: Vec<&str> = recorded.lines().collect();
    assert_eq!(lines.len(), 1, "one line recorded:\n{recorded}");
    let matching = sshd
        .host_keys()
        .iter()
        .find(|k| lines[0] == k.known_hosts_line("127.0.0.1", sshd.port()))
        .unwrap_or_else(|| {
            panic!(
                "the recorded line is not one of the server's keys:\n{recorded}\nexpected one of:\n{}",
                sshd.known_hosts()
            )
        });
    assert!(
        tunnel.log().contains(matching.fingerprint()),
        "the forwarder tells what it added:\n{}",
        tunnel.log()
    );
    drop(tunnel);

    // The lab's default StrictHostKeyChecking=yes now trusts the recorded key.
    let tunnel = forwarder(&sshd, &key, &known_hosts)
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"second").expect("echo"),
        b"second"
    );
    assert_eq!(
        fs::read_to_string(&known_hosts).expect("read"),
        recorded,
        "nothing more is recorded for a known host"
    );
}

fn hash_known_hosts(path: &Path) {
    run_ok(
        Command::new(require_program(
            "ssh-keygen",
            &[],
            "install the OpenSSH client (apt-get install openssh-client; scripts/test does this)",
        ))
        .arg("-H")
        .arg("-f")
        .arg(path),
        Duration::from_secs(30),
        "ssh-keygen -H",
    );
    let hashed = fs::read_to_string(path).expect("read hashed known_hosts");
    assert!(
        hashed.lines().all(|l| l.starts_with("|1|")) && !hashed.contains("127.0.0.1"),
        "ssh-keygen -H hashed every name:\n{hashed}"
    );
}

#[test]
fn interop_host_key_hashed_known_hosts_entries_match() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();

    let hashed = sshd.dir().join("hashed_known_hosts");
    fs::write(&hashed, sshd.known_hosts()).expect("write known_hosts");
    hash_known_hosts(&hashed);
    let tunnel = forwarder(&sshd, &key, &hashed)
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"hashed").expect("echo"),
        b"hashed"
    );
    drop(tunnel);

    // A hashed entry with the wrong key is a changed key, not an unknown host.
    let server_key = sshd
        .host_key(KeyKind::Ed25519)
        .expect("an Ed25519 host key");
    let impostor = UserKey::generate(KeyKind::Ed25519);
    let wrong = sshd.dir().join("hashed_wrong_known_hosts");
    fs::write(
        &wrong,
        ssh_interop_tests::known_hosts_line("127.0.0.1", sshd.port(), impostor.public_key_line())
            + "\n",
    )
    .expect("write known_hosts");
    hash_known_hosts(&wrong);
    let mut tunnel = forwarder(&sshd, &key, &wrong)
        .forward_to(echo.port())
        .spawn();
    let log = expect_refusal(&mut tunnel);
    assert!(
        log.contains("CHANGED")
            && log.contains(server_key.fingerprint())
            && log.contains(impostor.fingerprint()),
        "{log}"
    );
    assert_eq!(echo.connections(), 1, "only the trusted run forwarded");
}

#[test]
fn interop_host_key_known_type_is_preferred_so_a_known_host_never_fails_over_a_key_type() {
    // sshd offers every type; our default order would pick Ed25519 first. A known_hosts that
    // holds only one other type must make the forwarder ask for that type, as OpenSSH does,
    // instead of failing on an "unknown" Ed25519 key.
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .host_keys(&[
            KeyKind::Ed25519,
            KeyKind::EcdsaP256,
            KeyKind::EcdsaP384,
            KeyKind::Rsa3072,
        ])
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    for (kind, algorithm) in [
        (KeyKind::EcdsaP256, "ecdsa-sha2-nistp256"),
        (KeyKind::EcdsaP384, "ecdsa-sha2-nistp384"),
        (KeyKind::Rsa3072, "rsa-sha2-512"),
    ] {
        let known_hosts = sshd.dir().join(format!("known_hosts_{algorithm}"));
        let host_key = sshd.host_key(kind).expect("sshd has the key");
        fs::write(
            &known_hosts,
            host_key.known_hosts_line("127.0.0.1", sshd.port()) + "\n",
        )
        .expect("write known_hosts");
        let tunnel = forwarder(&sshd, &key, &known_hosts)
            .verbose()
            .forward_to(echo.port())
            .start();
        assert_eq!(
            echo_round_trip(tunnel.local_port(), algorithm.as_bytes())
                .unwrap_or_else(|e| panic!("{algorithm}: {e}\n{}", tunnel.log())),
            algorithm.as_bytes()
        );
        let log = tunnel.log();
        assert!(
            log.contains(&format!("host key {algorithm},")),
            "{algorithm} was not the negotiated host key algorithm:\n{log}"
        );
        assert!(
            log.contains(host_key.fingerprint()),
            "{algorithm}: the log names the verified key:\n{log}"
        );
    }
}

#[test]
fn interop_host_key_global_known_hosts_file_is_read_and_its_revocation_wins_over_the_user_file() {
    // Regression: GlobalKnownHostsFile was never read, so an `@revoked` line an admin puts in
    // /etc/ssh/ssh_known_hosts did not stop the forwarder (it stops ssh).
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();

    // A global file that lists the server's keys trusts them, and is never written, even by
    // accept-new; nor is the (empty) user file, since the key is known.
    let user = sshd.dir().join("user_known_hosts");
    fs::write(&user, "").expect("write the user's known_hosts");
    let global = sshd.dir().join("ssh_known_hosts");
    fs::write(&global, sshd.known_hosts()).expect("write the global known_hosts");
    let global_option = format!("GlobalKnownHostsFile={}", global.display());
    let tunnel = forwarder(&sshd, &key, &user)
        .option(&global_option)
        .option("StrictHostKeyChecking=accept-new")
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"global").expect("echo"),
        b"global"
    );
    drop(tunnel);
    assert_eq!(fs::read_to_string(&user).expect("read"), "");
    assert_eq!(
        fs::read_to_string(&global).expect("read"),
        sshd.known_hosts()
    );

    // The user's file lists every key of the server; the global file revokes them all.
    let revoked = sshd.dir().join("revoking_known_hosts");
    let revocations: String = sshd
        .host_keys()
        .iter()
        .map(|k| format!("# revoked by the admin\n@revoked * {}\n", k.public_line()))
        .collect();
    fs::write(&revoked, &revocations).expect("write the global known_hosts");
    let revoked_option = format!("GlobalKnownHostsFile={}", revoked.display());
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        let log_start = sshd.log().len();
        let mut tunnel = TunnelBuilder::new(kind, &sshd, &key)
            .option(&revoked_option)
            .option("StrictHostKeyChecking=no")
            .forward_to(echo.port())
            .spawn();
        let log = expect_refusal(&mut tunnel);
        assert!(
            log.to_ascii_lowercase().contains("revoked"),
            "{kind}: the message should say the key is revoked:\n{log}"
        );
        let ours = sshd_log_of_ended_connection(&sshd, log_start);
        for line in AUTH_LOG_LINES {
            assert!(!ours.contains(line), "{kind}: {line:?} in:\n{ours}");
        }
        if kind == ClientKind::Forwarder {
            let path = revoked.display().to_string();
            assert!(
                log.contains(&format!("of {path} marks @revoked")),
                "the message should point at the global file's line:\n{log}"
            );
            assert!(
                sshd.host_keys()
                    .iter()
                    .any(|k| log.contains(k.fingerprint())),
                "the message should show the offered key's fingerprint:\n{log}"
            );
        }
    }
    assert_eq!(echo.connections(), 1, "only the first run forwarded");
    assert_eq!(fs::read_to_string(&revoked).expect("read"), revocations);
}
