//! The forwarder against AsyncSSH, the lab's third SSH server: the first authentication
//! request (a signed publickey request, or `none` when there is no key) goes out right
//! behind SERVICE_REQUEST, before SERVICE_ACCEPT (one round trip less), and AsyncSSH takes
//! it; data crosses a `direct-tcpip` channel byte for byte both ways; a wrong host key ends
//! the forwarder with 255 before it logs in; a host certificate is trusted through a
//! `@cert-authority` line.

use std::fs;
use std::time::Duration;

use ssh_interop_tests::asyncssh::{AsyncSsh, asyncssh_version};
use ssh_interop_tests::keys::fingerprint_of;
use ssh_interop_tests::process::tail;
use ssh_interop_tests::sshd::known_hosts_line;
use ssh_interop_tests::{
    CertAuthority, ClientKind, EchoServer, KEX_COMPLETE, KeyKind, Pattern, Tunnel, TunnelBuilder,
    UserKey, echo_round_trip, kex_guesses,
};

const MIB: usize = 1024 * 1024;
const WAIT: Duration = Duration::from_secs(30);

/// What the forwarder logs at `-vv` when SERVICE_ACCEPT arrives.
const SERVICE_ACCEPT: &str = "received msg=SSH_MSG_SERVICE_ACCEPT";
/// What AsyncSSH logs when it logged the user in.
const AUTH_SUCCEEDED: &str = "Auth for user lab succeeded";

/// The forwarder with `-vv` (the received messages are TRACE lines) for `server`, logging in
/// with `key`, trusting its host key.
fn forwarder(server: &AsyncSsh, key: &UserKey) -> TunnelBuilder {
    TunnelBuilder::to_port(
        ClientKind::Forwarder,
        server.port(),
        server.user(),
        key,
        server.known_hosts_path(),
    )
    .verbose()
    .verbose()
}

fn diagnose(tunnel: &Tunnel, server: &AsyncSsh) -> String {
    format!(
        "against AsyncSSH {}\nforwarder log ends with:\n{}\nasyncssh log ends with:\n{}",
        asyncssh_version(),
        tail(&tunnel.log(), 40),
        server.log_tail(40)
    )
}

/// The index of the first line of `log` containing every one of `needles`.
fn line_of(log: &str, needles: &[&str]) -> Option<usize> {
    log.lines()
        .position(|l| needles.iter().all(|n| l.contains(n)))
}

/// Whether `log` has a line containing all of `needles` before SERVICE_ACCEPT arrived.
fn before_service_accept(log: &str, needles: &[&str]) -> bool {
    matches!(
        (line_of(log, needles), line_of(log, &[SERVICE_ACCEPT])),
        (Some(sent), Some(accepted)) if sent < accepted
    )
}

/// How many connections may go by before one sends its first request ahead. The forwarder
/// sends it ahead once it has read the server's EXT_INFO (server-sig-algs), which AsyncSSH
/// writes right behind its NEWKEYS; should the forwarder read EXT_INFO only once the
/// server has already answered SERVICE_REQUEST (a busy machine), both can come in one read
/// and the request then goes out the usual way, after SERVICE_ACCEPT.
const CONNECTIONS: usize = 5;

/// Runs `connect` (a new forwarder, and its log once authentication is settled) until a
/// connection's log passes `ahead`, at most [`CONNECTIONS`] times. Returns that forwarder
/// and AsyncSSH's number for its connection.
fn until_sent_ahead(
    server: &AsyncSsh,
    what: &str,
    mut connect: impl FnMut() -> (Tunnel, String),
    ahead: impl Fn(&str) -> bool,
) -> (Tunnel, usize) {
    for conn in 0..CONNECTIONS {
        let (tunnel, log) = connect();
        if ahead(&log) {
            return (tunnel, conn);
        }
        let order: Vec<&str> = log
            .lines()
            .filter(|l| {
                [
                    "EXT_INFO",
                    "SERVICE_ACCEPT",
                    "offering public key",
                    "ProbingMethods",
                ]
                .iter()
                .any(|n| l.contains(n))
            })
            .collect();
        eprintln!(
            "connection {}: {what} went out after SERVICE_ACCEPT:\n{}",
            conn + 1,
            order.join("\n")
        );
        if conn + 1 == CONNECTIONS {
            panic!(
                "{what} went out after SERVICE_ACCEPT in {CONNECTIONS} connections in a row; \
                 the last one:\n{}",
                diagnose(&tunnel, server)
            );
        }
    }
    unreachable!("the last connection either returns or panics")
}

/// AsyncSSH's log lines about its connection `conn` (it numbers them from 0 and tags their
/// lines "[conn=N]" or "[conn=N, chan=M]").
fn connection_log(server: &AsyncSsh, conn: usize) -> String {
    let tags = [format!("[conn={conn}]"), format!("[conn={conn},")];
    server
        .log()
        .lines()
        .filter(|l| tags.iter().any(|t| l.contains(t.as_str())))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The lines of `log` holding each of `steps` come in that order.
fn assert_in_order(log: &str, steps: &[&str]) {
    let at: Vec<Option<usize>> = steps.iter().map(|s| line_of(log, &[s])).collect();
    assert!(
        at.iter().all(Option::is_some) && at.is_sorted(),
        "asyncssh did not log {steps:?} in this order (lines {at:?}):\n{log}"
    );
}

#[test]
fn interop_asyncssh_takes_the_signed_request_sent_ahead_and_echoes_a_mebibyte() {
    for (seed, kind, algorithm) in [
        (1, KeyKind::Ed25519, "ssh-ed25519"),
        (2, KeyKind::Rsa2048, "rsa-sha2-512"),
    ] {
        let key = UserKey::generate(kind);
        let server = AsyncSsh::start(&key);
        let echo = EchoServer::start();
        let offered = format!("algorithm={algorithm} ");
        let (tunnel, conn) = until_sent_ahead(
            &server,
            &format!("the signed {algorithm} request"),
            || {
                let tunnel = forwarder(&server, &key).forward_to(echo.port()).start();
                let log = tunnel.wait_for_log("authenticated", WAIT);
                (tunnel, log)
            },
            // One request, with this key and algorithm: the one sent ahead logged us in.
            |log| {
                before_service_accept(log, &["offering public key", key.fingerprint(), &offered])
                    && log.matches("offering public key").count() == 1
            },
        );

        let sent = Pattern::get().bytes_at(seed * 15_485_863, MIB);
        let back = echo_round_trip(tunnel.local_port(), &sent).unwrap_or_else(|e| {
            panic!("echo of 1 MiB failed: {e}\n{}", diagnose(&tunnel, &server))
        });
        assert!(
            back == sent,
            "sent {} bytes, got {} back{}\n{}",
            sent.len(),
            back.len(),
            if back.len() == sent.len() {
                ", not the same bytes"
            } else {
                ""
            },
            diagnose(&tunnel, &server)
        );

        // AsyncSSH's side of that connection: it accepted the service, then verified the
        // signature queued behind the service request and let the user in, with nothing
        // refused on the way, and opened the channel to the echo server.
        server.wait_for_log(
            &format!(
                "Accepted direct TCP connection request to 127.0.0.1, port {}",
                echo.port()
            ),
            WAIT,
        );
        let server_log = connection_log(&server, conn);
        assert_in_order(
            &server_log,
            &[
                "Accepting request for service ssh-userauth",
                &format!("Verifying request with {algorithm} key"),
                AUTH_SUCCEEDED,
                "Accepted direct TCP connection request",
            ],
        );
        assert_eq!(server_log.matches(AUTH_SUCCEEDED).count(), 1);
        assert!(
            !server_log.contains("failed"),
            "asyncssh logged a failure:\n{server_log}"
        );
    }
}

#[test]
fn interop_asyncssh_answers_the_none_request_sent_ahead_with_its_methods() {
    // No key at all (no -i, and a home without ~/.ssh): the first request is `none`, which
    // asks for the server's methods.
    let key = UserKey::generate(KeyKind::Ed25519);
    let server = AsyncSsh::start(&key);
    let home = tempfile::tempdir().expect("temp dir");
    let (tunnel, conn) = until_sent_ahead(
        &server,
        "the `none` request",
        || {
            let mut tunnel = forwarder(&server, &key)
                .without_identity()
                .env("HOME", home.path())
                .spawn();
            let log = tunnel.expect_failure();
            (tunnel, log)
        },
        |log| before_service_accept(log, &["ProbingMethods"]),
    );
    let log = tunnel.log();
    assert!(
        log.contains("The server allows: publickey."),
        "the forwarder did not get AsyncSSH's methods\n{}",
        diagnose(&tunnel, &server)
    );
    let server_log = connection_log(&server, conn);
    assert_in_order(
        &server_log,
        &[
            "Accepting request for service ssh-userauth",
            "Beginning auth for user lab",
            "Remaining auth methods: publickey",
        ],
    );
    assert!(
        !server_log.contains(AUTH_SUCCEEDED),
        "asyncssh let a client without a key in:\n{server_log}"
    );
}

#[test]
fn interop_asyncssh_wrong_host_key_is_refused_with_255() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let server = AsyncSsh::start(&key);
    let impostor = AsyncSsh::start(&key);
    let echo = EchoServer::start();
    // known_hosts lists the other server's key under this server's name and port.
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong = dir.path().join("known_hosts");
    fs::write(
        &wrong,
        known_hosts_line("127.0.0.1", server.port(), impostor.host_key_line()) + "\n",
    )
    .expect("write known_hosts");
    let mut tunnel = forwarder(&server, &key)
        .known_hosts(&wrong)
        .forward_to(echo.port())
        .spawn();
    let log = tunnel.expect_failure();
    assert!(
        log.contains(server.host_key_fingerprint()),
        "the forwarder's log does not name the key it was shown:\n{log}"
    );
    assert!(
        !log.contains("offering public key"),
        "the forwarder offered a key to a server it does not know:\n{log}"
    );
    let server_log = server.log();
    assert!(
        !server_log.contains("Beginning auth"),
        "asyncssh saw an authentication request:\n{server_log}"
    );
    assert_eq!(echo.connections(), 0);
}

#[test]
fn interop_asyncssh_takes_the_key_exchange_guessed_from_the_last_run() {
    // The second process reads the first one's KexGuessFile, sends its first key exchange
    // message as a guess of AsyncSSH's own first choices, and AsyncSSH takes it.
    let key = UserKey::generate(KeyKind::Ed25519);
    let server = AsyncSsh::start(&key);
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = format!("KexGuessFile={}", dir.path().join("kex_firsts").display());
    let mut guesses = Vec::new();
    for seed in [3, 4] {
        let mut tunnel = forwarder(&server, &key)
            .option(&file)
            .forward_to(echo.port())
            .start();
        let sent = Pattern::get().bytes_at(seed * 7919, 64 * 1024);
        let back = echo_round_trip(tunnel.local_port(), &sent)
            .unwrap_or_else(|e| panic!("echo failed: {e}\n{}", diagnose(&tunnel, &server)));
        assert!(back == sent, "not the same bytes back");
        guesses.extend(kex_guesses(&tunnel.wait_for_log(KEX_COMPLETE, WAIT)));
        tunnel.terminate(Duration::from_secs(5));
        // The first run wrote the file before it exited.
        assert!(
            dir.path().join("kex_firsts").exists(),
            "no KexGuessFile written"
        );
    }
    assert_eq!(
        guesses,
        ["None", "Some(true)"],
        "against AsyncSSH {}:\n{}",
        asyncssh_version(),
        server.log_tail(40)
    );
    assert_eq!(server.log().matches(AUTH_SUCCEEDED).count(), 2);
    assert!(!server.log().contains("failed"), "{}", server.log_tail(40));
}

// Host certificates with a second server implementation: AsyncSSH presents its certificate
// when asked for the certificate algorithm, and a known_hosts with only a `@cert-authority`
// line trusts it; the certificate of a CA no line lists is refused, naming the CA.
#[test]
fn interop_asyncssh_host_certificate_is_trusted_through_a_cert_authority_line() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let ca = CertAuthority::new();
    let server = AsyncSsh::start_certified(&key, &ca, "127.0.0.1");
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let known_hosts = dir.path().join("known_hosts");
    fs::write(
        &known_hosts,
        format!(
            "@cert-authority [127.0.0.1]:{} {}\n",
            server.port(),
            ca.known_hosts_key()
        ),
    )
    .expect("write known_hosts");
    let tunnel = forwarder(&server, &key)
        .known_hosts(&known_hosts)
        .option("StrictHostKeyChecking=accept-new")
        .forward_to(echo.port())
        .start();
    let data = b"certified by the lab CA";
    assert_eq!(
        echo_round_trip(tunnel.local_port(), data)
            .unwrap_or_else(|e| panic!("{e}\n{}", diagnose(&tunnel, &server))),
        data
    );
    let log = tunnel.log();
    assert!(
        log.contains("host key ssh-ed25519-cert-v01@openssh.com,")
            && log.contains("host certificate accepted")
            && log.contains("lab-asyncssh"),
        "the certificate was not negotiated and accepted:\n{}",
        diagnose(&tunnel, &server)
    );
    assert_eq!(
        fs::read_to_string(&known_hosts).expect("read known_hosts"),
        format!(
            "@cert-authority [127.0.0.1]:{} {}\n",
            server.port(),
            ca.known_hosts_key()
        ),
        "nothing is recorded for a host trusted through its certificate"
    );
    drop(tunnel);

    // Another CA on the line: the certificate is not accepted, its key is not listed either.
    let other = CertAuthority::new();
    fs::write(
        &known_hosts,
        format!("@cert-authority * {}\n", other.known_hosts_key()),
    )
    .expect("write known_hosts");
    let mut tunnel = forwarder(&server, &key)
        .known_hosts(&known_hosts)
        .forward_to(echo.port())
        .spawn();
    let log = tunnel.expect_failure();
    let ca_fingerprint = fingerprint_of(&ca.public_key_path());
    assert!(
        log.contains(&format!(
            "the host certificate is signed by CA {ca_fingerprint}, which no @cert-authority line"
        )),
        "the refusal does not name the certificate's CA ({ca_fingerprint}):\n{log}"
    );
    assert_eq!(echo.connections(), 1, "only the trusted run's connection");
}
