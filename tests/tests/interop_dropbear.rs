//! The forwarder against Dropbear, the lab's second SSH server: logins with RSA and Ed25519
//! keys, every key exchange method and cipher both implement, data echoed byte for byte,
//! concurrent channels, client-initiated rekeys, keepalives both ways, a wrong host key,
//! PostgreSQL through the tunnel and through `-D`'s SOCKS proxy, `-W` / `-J` with Dropbear
//! as the jump host, and a fleet proving its key exchanges off its session threads.
//!
//! Debian 12's Dropbear (2022.83) lacks some of what the forwarder offers: no
//! diffie-hellman-group16-sha512 or sntrup761x25519 key exchange, no AES-GCM, no
//! rsa-sha2-512 signatures, and no log line naming the negotiated algorithms. Those cases are
//! left out below (each at the place it would be); the forwarder's `-v` "negotiated=" line is
//! what shows which algorithm ran.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::thread;
use std::time::Duration;

use ssh_interop_tests::dropbear::{Dropbear, dropbear_version};
use ssh_interop_tests::process::run_ok;
use ssh_interop_tests::{
    ClientKind, EchoServer, KEX_COMPLETE, KeyKind, Pattern, Postgres, Sshd, Tunnel, TunnelBuilder,
    UserKey, echo_round_trip, expected_customers, forwarder_binary, kex_guesses, psql,
};

const MIB: usize = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(30);

/// The forwarder with `-v` for `dropbear`, logging in with `key`, trusting its host keys.
fn forwarder(dropbear: &Dropbear, key: &UserKey) -> TunnelBuilder {
    TunnelBuilder::to_port(
        ClientKind::Forwarder,
        dropbear.port(),
        dropbear.user(),
        key,
        dropbear.known_hosts_path(),
    )
    .verbose()
}

/// Distinct bytes per call site, so a mixed-up channel cannot echo someone else's data.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    Pattern::get().bytes_at(seed.wrapping_mul(15_485_863), len)
}

/// Echoes `len` bytes through the tunnel's first forward and checks them byte for byte.
fn assert_echo(tunnel: &Tunnel, dropbear: &Dropbear, seed: u64, len: usize) {
    let sent = payload(seed, len);
    let back = echo_round_trip(tunnel.local_port(), &sent).unwrap_or_else(|e| {
        panic!(
            "echo of {len} bytes failed: {e}\n{}",
            diagnose(tunnel, dropbear)
        )
    });
    assert!(
        back.len() == sent.len() && back == sent,
        "sent {} bytes, got {} back{}\n{}",
        sent.len(),
        back.len(),
        if back.len() == sent.len() {
            ", not the same bytes"
        } else {
            ""
        },
        diagnose(tunnel, dropbear)
    );
}

fn diagnose(tunnel: &Tunnel, dropbear: &Dropbear) -> String {
    format!(
        "forwarder log ends with:\n{}\ndropbear log ends with:\n{}",
        ssh_interop_tests::process::tail(&tunnel.log(), 40),
        dropbear.log_tail(30)
    )
}

/// The forwarder's "negotiated=..." line.
fn negotiated(tunnel: &Tunnel) -> String {
    let log = tunnel.wait_for_log("negotiated=", Duration::from_secs(10));
    log.lines()
        .find(|l| l.contains("negotiated="))
        .unwrap_or_default()
        .to_owned()
}

/// Key exchanges after the first, as the forwarder reports them at `-v`.
fn rekeys(tunnel: &Tunnel) -> usize {
    tunnel.log_count("rekeyed")
}

/// Logins Dropbear accepted so far.
fn logins(dropbear: &Dropbear) -> usize {
    dropbear.log().matches("Pubkey auth succeeded").count()
}

/// Runs `case` for each of `items`, collecting failures so that a report shows them all.
fn each(items: &[&str], case: impl Fn(&str)) {
    let failures: Vec<String> = items
        .iter()
        .filter_map(|item| {
            catch_unwind(AssertUnwindSafe(|| case(item)))
                .err()
                .map(|panic| {
                    let why = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    format!("--- {item}:\n{why}")
                })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} failed against {}:\n{}",
        failures.len(),
        items.len(),
        dropbear_version(),
        failures.join("\n")
    );
}

#[test]
fn interop_dropbear_logs_in_with_rsa_and_ed25519_keys() {
    let rsa = UserKey::generate(KeyKind::Rsa2048);
    let ed25519 = UserKey::generate(KeyKind::Ed25519);
    let dropbear = Dropbear::builder()
        .authorize(&rsa)
        .authorize(&ed25519)
        .start();
    let echo = EchoServer::start();
    // Dropbear 2022.83 announces rsa-sha2-256 but not rsa-sha2-512 in server-sig-algs, so
    // the RSA login must use rsa-sha2-256 (never SHA-1 ssh-rsa); rsa-sha2-512 is left out.
    for (seed, key, key_type, algorithm) in [
        (1, &rsa, "ssh-rsa", "rsa-sha2-256"),
        (2, &ed25519, "ssh-ed25519", "ssh-ed25519"),
    ] {
        let tunnel = forwarder(&dropbear, key).forward_to(echo.port()).start();
        assert_echo(&tunnel, &dropbear, seed, 64 * 1024);
        // Dropbear names the key type and its SHA-256 fingerprint.
        let expected = format!(
            "Pubkey auth succeeded for '{}' with {key_type} key {}",
            dropbear.user(),
            key.fingerprint()
        );
        dropbear.wait_for_log(&expected, WAIT);
        let offered = format!("algorithm={algorithm} ");
        assert!(
            tunnel
                .log()
                .lines()
                .any(|l| l.contains("offering public key") && l.contains(&offered)),
            "the forwarder did not sign with {algorithm}\n{}",
            diagnose(&tunnel, &dropbear)
        );
    }
}

#[test]
fn interop_dropbear_every_shared_kex_method_with_rekeys_mid_transfer() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let dropbear = Dropbear::start(&key);
    let echo = EchoServer::start();
    // What both implement. Not here: diffie-hellman-group16-sha512 (compiled out of Debian's
    // Dropbear), sntrup761x25519-sha512 and mlkem768x25519-sha256 (newer than 2022.83),
    // diffie-hellman-group-exchange-sha256 (Dropbear has no group exchange).
    let methods = [
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
        "ecdh-sha2-nistp256",
        "ecdh-sha2-nistp384",
        "ecdh-sha2-nistp521",
        "diffie-hellman-group14-sha256",
    ];
    each(&methods, |kex| {
        let tunnel = forwarder(&dropbear, &key)
            .option(&format!("KexAlgorithms={kex}"))
            .option("RekeyLimit=1M")
            .forward_to(echo.port())
            .start();
        assert_echo(&tunnel, &dropbear, 10, 3 * MIB);
        let line = negotiated(&tunnel);
        assert!(
            line.contains(&format!("negotiated=kex {kex},")),
            "the forwarder negotiated something else: {line}"
        );
        // 3 MiB each way at RekeyLimit 1M: the forwarder rekeyed with the same method.
        let n = rekeys(&tunnel);
        assert!(
            n >= 2,
            "{n} rekeys in 6 MiB at RekeyLimit 1M\n{}",
            diagnose(&tunnel, &dropbear)
        );
    });
}

#[test]
fn interop_dropbear_every_shared_cipher_carries_data_both_ways() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let dropbear = Dropbear::start(&key);
    let echo = EchoServer::start();
    // Not here: aes128-gcm / aes256-gcm (Debian's Dropbear is built without GCM) and
    // aes192-ctr (Dropbear has no 192-bit AES).
    let ciphers = [
        ("chacha20-poly1305@openssh.com", None),
        ("aes128-ctr", Some("hmac-sha2-256")),
        ("aes256-ctr", Some("hmac-sha2-256")),
    ];
    let names: Vec<&str> = ciphers.iter().map(|(c, _)| *c).collect();
    each(&names, |cipher| {
        let mac = ciphers
            .iter()
            .find(|(c, _)| *c == cipher)
            .and_then(|(_, m)| *m);
        let mut builder = forwarder(&dropbear, &key).cipher(cipher);
        if let Some(mac) = mac {
            builder = builder.option(&format!("MACs={mac}"));
        }
        let tunnel = builder.forward_to(echo.port()).start();
        assert_echo(&tunnel, &dropbear, 20, 4 * MIB + 4099);
        let line = negotiated(&tunnel);
        assert!(line.contains(cipher), "not {cipher}: {line}");
        if let Some(mac) = mac {
            assert!(line.contains(mac), "not {mac}: {line}");
        }
    });
}

#[test]
fn interop_dropbear_fifty_concurrent_connections_echo_their_own_bytes() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let dropbear = Dropbear::start(&key);
    let echo = EchoServer::start();
    let tunnel = forwarder(&dropbear, &key).forward_to(echo.port()).start();
    let port = tunnel.local_port();
    let workers: Vec<_> = (0..50u64)
        .map(|i| {
            thread::spawn(move || {
                let sent = payload(100 + i, 256 * 1024);
                let back = echo_round_trip(port, &sent);
                (i, back.map(|b| b == sent))
            })
        })
        .collect();
    let mut failed = Vec::new();
    for worker in workers {
        let (i, result) = worker.join().expect("echo thread");
        if !matches!(result, Ok(true)) {
            failed.push(format!("connection {i}: {result:?}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 50 connections failed: {failed:?}\n{}",
        failed.len(),
        diagnose(&tunnel, &dropbear)
    );
    assert!(
        echo.connections() >= 50,
        "{} echo connections",
        echo.connections()
    );
    assert_eq!(logins(&dropbear), 1, "one SSH connection carried them all");
}

#[test]
fn interop_dropbear_client_rekeys_every_mebibyte_while_16_mib_echo() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let dropbear = Dropbear::start(&key);
    let echo = EchoServer::start();
    let tunnel = forwarder(&dropbear, &key)
        .option("RekeyLimit=1M")
        .forward_to(echo.port())
        .start();
    assert_echo(&tunnel, &dropbear, 30, 16 * MIB);
    // 32 MiB crossed the connection (16 each way) at one rekey per MiB sent or received.
    let n = rekeys(&tunnel);
    assert!(n >= 10, "only {n} rekeys\n{}", diagnose(&tunnel, &dropbear));
    // The session is still usable after them.
    assert_echo(&tunnel, &dropbear, 31, 1024);
}

/// How many lines of the forwarder's log contain `needle`.
fn count(tunnel: &Tunnel, needle: &str) -> usize {
    tunnel.log().lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn interop_dropbear_answers_the_forwarders_keepalives_while_idle() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let dropbear = Dropbear::start(&key);
    let echo = EchoServer::start();
    // -vv: the keepalives and the answers are DEBUG and TRACE lines.
    let mut tunnel = forwarder(&dropbear, &key)
        .verbose()
        .option("ServerAliveInterval=1")
        .option("ServerAliveCountMax=2")
        .forward_to(echo.port())
        .start();
    assert_echo(&tunnel, &dropbear, 40, 1024);
    // Well past the 2 s after which the forwarder gives up on a server that does not answer.
    thread::sleep(Duration::from_secs(6));
    assert_eq!(
        tunnel.exited(),
        None,
        "the forwarder gave up on Dropbear while idle\n{}",
        diagnose(&tunnel, &dropbear)
    );
    assert_echo(&tunnel, &dropbear, 41, 1024);
    // Dropbear answers keepalive@openssh.com with SSH_MSG_REQUEST_FAILURE, which is an answer.
    let sent = count(&tunnel, "sending keepalive");
    let answered = count(&tunnel, "msg=SSH_MSG_REQUEST_FAILURE");
    assert!(
        sent >= 3 && answered >= 3,
        "{sent} keepalives sent, {answered} answered in 6 idle seconds\n{}",
        diagnose(&tunnel, &dropbear)
    );
    assert_eq!(logins(&dropbear), 1, "still the first session");
}

#[test]
fn interop_dropbear_forwarder_answers_dropbears_keepalives_while_idle() {
    let key = UserKey::generate(KeyKind::Ed25519);
    // -K 1: Dropbear asks every idle second, and drops a client that leaves three of its
    // questions unanswered.
    let dropbear = Dropbear::builder()
        .arg("-K")
        .arg("1")
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    let mut tunnel = forwarder(&dropbear, &key).forward_to(echo.port()).start();
    assert_echo(&tunnel, &dropbear, 42, 1024);
    thread::sleep(Duration::from_secs(6));
    assert_eq!(
        tunnel.exited(),
        None,
        "Dropbear dropped the forwarder while idle\n{}",
        diagnose(&tunnel, &dropbear)
    );
    assert_echo(&tunnel, &dropbear, 43, 1024);
    let asked = count(&tunnel, "request=keepalive@openssh.com want_reply=true");
    assert!(
        asked >= 3,
        "expected Dropbear's keepalive requests in the forwarder's -v log, found {asked}\n{}",
        diagnose(&tunnel, &dropbear)
    );
    assert_eq!(logins(&dropbear), 1, "still the first session");
}

#[test]
fn interop_dropbear_wrong_host_key_is_refused_with_255() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let dropbear = Dropbear::start(&key);
    let impostor = Dropbear::start(&key);
    let echo = EchoServer::start();
    // known_hosts lists the other server's keys under this server's name and port.
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong = dir.path().join("known_hosts");
    let lines: String = impostor
        .host_keys()
        .iter()
        .map(|k| k.known_hosts_line("127.0.0.1", dropbear.port()) + "\n")
        .collect();
    fs::write(&wrong, lines).expect("write known_hosts");
    let mut tunnel = forwarder(&dropbear, &key)
        .known_hosts(&wrong)
        .forward_to(echo.port())
        .spawn();
    let log = tunnel.expect_failure();
    assert_eq!(
        logins(&dropbear),
        0,
        "the forwarder logged in to a server whose key it does not know:\n{log}"
    );
    assert_eq!(echo.connections(), 0);
}

#[test]
fn interop_dropbear_postgres_query_through_the_tunnel() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let dropbear = Dropbear::start(&key);
    let pg = Postgres::start();
    let tunnel = forwarder(&dropbear, &key).forward_to(pg.port()).start();
    assert_eq!(
        psql(
            tunnel.local_port(),
            ssh_interop_tests::postgres::CUSTOMERS_QUERY
        ),
        expected_customers()
    );
    let large = "SELECT string_agg(md5(g::text), '' ORDER BY g) FROM generate_series(1, 100000) g";
    assert_eq!(psql(tunnel.local_port(), large), pg.psql(large));
}

#[test]
fn interop_dropbear_dash_d_socks_proxy_to_postgres_and_a_refused_port() {
    use ssh_interop_tests::servers::SocksBridge;
    use ssh_interop_tests::socks::{SocksError, SocksForm, socks_connect};
    let key = UserKey::generate(KeyKind::Ed25519);
    let dropbear = Dropbear::start(&key);
    let pg = Postgres::start();
    let proxy = ssh_interop_tests::free_port();
    let tunnel = forwarder(&dropbear, &key).dynamic(proxy).start();
    let bridge = SocksBridge::start(proxy, SocksForm::V5Name, "localhost", pg.port());
    assert_eq!(
        psql(bridge.port(), ssh_interop_tests::postgres::CUSTOMERS_QUERY),
        expected_customers(),
        "{}",
        diagnose(&tunnel, &dropbear)
    );
    // Dropbear says why a connect failed in its own words; SOCKS hears a refusal either way.
    let closed = ssh_interop_tests::free_port();
    match socks_connect(proxy, SocksForm::V4, "127.0.0.1", closed) {
        Err(SocksError::Refused(code)) => assert_eq!(code, 0x5B),
        other => panic!(
            "expected a SOCKS4 rejection, got {other:?}\n{}",
            tunnel.log()
        ),
    }
}

#[test]
fn interop_dropbear_dash_w_stdio_forward() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let dropbear = Dropbear::start(&key);
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("input");
    // Printable bytes: the lab's bounded runner reads output as (lossy) UTF-8.
    let sent: Vec<u8> = payload(50, MIB).iter().map(|b| b'!' + b % 94).collect();
    fs::write(&input, &sent).expect("write the input");
    // The lab's bounded runner gives commands no standard input, so a shell redirects it.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "exec \"$@\" < \"$0\""])
        .arg(&input)
        .arg(forwarder_binary())
        .args(["-W", &format!("127.0.0.1:{}", echo.port())])
        .arg("-i")
        .arg(key.private_key_path())
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            dropbear.known_hosts_path().display()
        ))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes", "-p", &dropbear.port().to_string()])
        .arg(dropbear.destination())
        .env_remove("SSH_AUTH_SOCK")
        .env("XDG_CACHE_HOME", dir.path());
    let out = run_ok(&mut cmd, WAIT, "forwarder -W");
    assert_eq!(
        out.stdout.len(),
        sent.len(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == sent, "not the same bytes back");
    dropbear.wait_for_log("Pubkey auth succeeded", WAIT);
}

#[test]
fn interop_dropbear_as_jump_host_to_sshd() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let jump = Dropbear::start(&key);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let known_hosts = dir.path().join("known_hosts");
    fs::write(&known_hosts, jump.known_hosts() + &sshd.known_hosts()).expect("known_hosts");
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .known_hosts(&known_hosts)
        .verbose()
        .option(&format!(
            "ProxyJump={}@127.0.0.1:{}",
            jump.user(),
            jump.port()
        ))
        .forward_to(echo.port())
        .start();
    assert_echo(&tunnel, &jump, 60, 2 * MIB);
    jump.wait_for_log("Pubkey auth succeeded", WAIT);
    sshd.wait_for_log("Accepted publickey", WAIT);
    assert_eq!(logins(&jump), 1, "one login on the jump host");
}

#[test]
fn interop_dropbear_restarted_the_forwarder_reconnects_on_the_same_port() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let mut dropbear = Dropbear::start(&key);
    let echo = EchoServer::start();
    let mut tunnel = forwarder(&dropbear, &key).forward_to(echo.port()).start();
    assert_echo(&tunnel, &dropbear, 70, 64 * 1024);
    // The listener and the session die; Dropbear comes back with the same host keys.
    dropbear.restart();
    let sent = payload(71, 64 * 1024);
    ssh_interop_tests::process::wait_until(
        WAIT,
        "an echo through the forwarder after Dropbear restarted",
        || {
            echo_round_trip(tunnel.local_port(), &sent)
                .ok()
                .filter(|b| *b == sent)
        },
        || diagnose(&tunnel, &dropbear),
    );
    assert_eq!(
        tunnel.exited(),
        None,
        "the forwarder exited\n{}",
        diagnose(&tunnel, &dropbear)
    );
    assert_eq!(logins(&dropbear), 2, "a second login after the restart");
}

#[test]
fn interop_dropbear_takes_the_key_exchange_guessed_from_the_last_run() {
    // The second process reads the first one's KexGuessFile, sends its first key exchange
    // message as a guess of Dropbear's own first choices, and Dropbear takes it.
    let key = UserKey::generate(KeyKind::Ed25519);
    let dropbear = Dropbear::start(&key);
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kex_firsts");
    let mut guesses = Vec::new();
    for seed in [70, 71] {
        let mut tunnel = forwarder(&dropbear, &key)
            .option(&format!("KexGuessFile={}", path.display()))
            .forward_to(echo.port())
            .start();
        assert_echo(&tunnel, &dropbear, seed, 64 * 1024);
        guesses.extend(kex_guesses(&tunnel.wait_for_log(KEX_COMPLETE, WAIT)));
        tunnel.terminate(Duration::from_secs(5));
        // The first run wrote the file before it exited.
        assert!(path.exists(), "no KexGuessFile written");
    }
    assert_eq!(
        guesses,
        ["None", "Some(true)"],
        "against Dropbear {}:\n{}",
        dropbear_version(),
        fs::read_to_string(&path).unwrap_or_default()
    );
}

#[test]
fn a_unix_socket_target_is_refused_by_dropbear_and_the_session_carries_on() {
    // Dropbear knows no direct-streamlocal@openssh.com channels: the connection is closed, the
    // refusal logged with a hint, and the session's other forwards keep working.
    let key = UserKey::generate(KeyKind::Ed25519);
    let dropbear = Dropbear::start(&key);
    let echo = EchoServer::start();
    let socket_port = ssh_interop_tests::free_port();
    let socket = "/var/run/postgresql/.s.PGSQL.5432";
    let tunnel = forwarder(&dropbear, &key)
        .forward_to(echo.port())
        .option(&format!("LocalForward=127.0.0.1:{socket_port} {socket}"))
        .start();
    assert_echo(&tunnel, &dropbear, 1, 64 * 1024);
    let mut conn =
        std::net::TcpStream::connect(("127.0.0.1", socket_port)).expect("connect to the forward");
    conn.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = [0u8; 1];
    let read = std::io::Read::read(&mut conn, &mut buf);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the refused connection is closed: {read:?}"
    );
    let log = tunnel.wait_for_log("does not forward to Unix sockets", WAIT);
    assert!(
        log.contains(&format!("channel to {socket}")) && log.contains("unknown channel type"),
        "{log}"
    );
    assert_echo(&tunnel, &dropbear, 2, 64 * 1024);
}

#[test]
fn a_forward_from_a_socket_on_dropbear_is_refused_with_exit_on_forward_failure() {
    // Dropbear does not listen on Unix sockets for a client (no
    // streamlocal-forward@openssh.com): the request is refused, and with
    // ExitOnForwardFailure=yes (the builder's default) forwarder exits 255 saying so.
    let key = UserKey::generate(KeyKind::Ed25519);
    let dropbear = Dropbear::start(&key);
    let dir = tempfile::tempdir().expect("temp dir");
    let there = dir.path().join("bastion.sock");
    let mut tunnel = forwarder(&dropbear, &key)
        .option(&format!("RemoteForward={} 127.0.0.1:9", there.display()))
        .spawn();
    let status = tunnel.wait_exit(WAIT).expect("exits");
    assert_eq!(status.code(), Some(255), "{}", tunnel.log());
    assert!(
        tunnel.log().contains(&format!(
            "Error: remote port forwarding failed for listen path {}",
            there.display()
        )) && tunnel.log().contains("Dropbear"),
        "{}",
        tunnel.log()
    );
    assert!(!there.exists(), "Dropbear made a socket");
}

#[test]
fn interop_dropbear_a_fleet_proves_every_exchange_off_its_session_threads() {
    // `forwarder serve` hands each key exchange's reply to a blocking thread; against
    // Dropbear, for each single-pass method both implement, the first exchange and the
    // rekeys of a 2 MiB echo at RekeyLimit 1M are all proven there, and the bytes arrive.
    use ssh_interop_tests::fleet::{Fleet, TunnelSpec, fleet_file};
    let key = UserKey::generate(KeyKind::Ed25519);
    let dropbear = Dropbear::start(&key);
    let echo = EchoServer::start();
    let remote = format!("127.0.0.1:{}", echo.port());
    let bastion = format!("{}@127.0.0.1:{}", dropbear.user(), dropbear.port());
    let methods = [
        "curve25519-sha256",
        "ecdh-sha2-nistp256",
        "diffie-hellman-group14-sha256",
    ];
    let ports: Vec<u16> = methods
        .iter()
        .map(|_| ssh_interop_tests::free_port())
        .collect();
    let tunnels: Vec<TunnelSpec> = methods
        .iter()
        .zip(&ports)
        .enumerate()
        .map(|(i, (kex, &port))| {
            TunnelSpec::new(&format!("t{i}"), &bastion, port, &remote).with(&format!(
                "options = {{ KexAlgorithms = {kex:?}, RekeyLimit = \"1M\" }}"
            ))
        })
        .collect();
    let admin = ssh_interop_tests::free_port();
    let head = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ndrain_timeout = \"1s\"\n\n\
         [defaults]\nidentity_file = {:?}\nknown_hosts = {:?}\nprobe = \"none\"\n",
        key.private_key_path().display().to_string(),
        dropbear.known_hosts_path().display().to_string(),
    );
    let mut fleet = Fleet::start(&fleet_file(&head, &tunnels), Some(admin), &["-v"]);
    fleet.wait_for_admin("/readyz", WAIT, |code, _| code == 200);
    for (i, &port) in ports.iter().enumerate() {
        let sent = payload(40 + i as u64, 2 * MIB);
        let back = echo_round_trip(port, &sent).unwrap_or_else(|e| {
            panic!(
                "{}: {e}\n{}\ndropbear:\n{}",
                methods[i],
                fleet.log(),
                dropbear.log()
            )
        });
        assert!(back == sent, "{}: the echo differs", methods[i]);
    }
    // The last rekey of a session may start as its echo ends: wait for it to finish.
    let rekeys = 2 * methods.len();
    fleet.wait_for_log_count("\"rekeyed\"", rekeys, WAIT);
    let log = fleet.log();
    let firsts = log.matches("\"proven_elsewhere\":true").count();
    assert!(
        firsts == methods.len() && !log.contains("\"proven_elsewhere\":false"),
        "{firsts} first exchanges proven elsewhere:\n{log}"
    );
    // Every rekey line counts its session's exchanges proven elsewhere: never none.
    assert!(
        !log.contains("\"proven_elsewhere\":0"),
        "a rekey proven in line:\n{log}"
    );
    fleet.terminate();
    assert!(fleet.wait_exit(WAIT).is_some(), "the fleet did not exit");
}
