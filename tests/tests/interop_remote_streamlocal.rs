//! `-R` with the bastion listening on a Unix socket (OpenSSH's
//! `streamlocal-forward@openssh.com`) against the real sshd and PostgreSQL 15: psql on the
//! bastion's socket reaches the database's TCP port here, with OpenSSH's `ssh -R` run first
//! as the reference; socket to socket, with the forward cancelled at exit; and the socket
//! sshd leaves behind when a session ends, which it refuses to replace unless its
//! `StreamLocalBindUnlink` is set, the refusal saying so.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use ssh_interop_tests::client::{spawn_with_forward, wait_for_socket};
use ssh_interop_tests::net::is_socket;
use ssh_interop_tests::postgres::{CUSTOMERS_QUERY, psql_socket};
use ssh_interop_tests::servers::{UnixEchoServer, echo_round_trip_unix};
use ssh_interop_tests::{ClientKind, KeyKind, Postgres, Sshd, UserKey, expected_customers};

const WAIT: Duration = Duration::from_secs(30);

/// Sends `payload` through the socket at `path` to an echo and checks what comes back.
fn round_trip(path: &Path, payload: &[u8]) {
    match echo_round_trip_unix(path, payload) {
        Ok(back) => assert!(back == payload, "the echo differs from what was sent"),
        Err(e) => panic!("through {}: {e}", path.display()),
    }
}

#[test]
fn interop_remote_streamlocal_psql_on_the_bastions_socket_reaches_postgres_here() {
    let key = UserKey::generate(KeyKind::Ed25519);
    // Each client's socket stays behind when it exits (sshd never removes one), so each
    // gets its own port number in the `.s.PGSQL.N` name.
    let sshd = Sshd::start(&key);
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("temp dir");
    for (kind, port) in [
        (ClientKind::OpenSsh, 6601u16),
        (ClientKind::Forwarder, 6602),
    ] {
        let socket = dir.path().join(format!(".s.PGSQL.{port}"));
        let mut tunnel = spawn_with_forward(
            kind,
            &sshd,
            &key,
            "RemoteForward",
            &socket.display().to_string(),
            &format!("127.0.0.1:{}", pg.port()),
            &[],
        );
        wait_for_socket(&socket, true, WAIT, &tunnel);
        // sshd's StreamLocalBindMask (0177 by default) made it 0600.
        let mode = std::fs::metadata(&socket)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{kind}");
        assert_eq!(
            psql_socket(dir.path(), port, CUSTOMERS_QUERY),
            expected_customers(),
            "{kind}"
        );
        // PostgreSQL saw a TCP connection: the client's connect from here.
        assert_eq!(
            psql_socket(dir.path(), port, "SELECT inet_client_addr() IS NOT NULL"),
            "t",
            "{kind}"
        );
        let large =
            "SELECT string_agg(md5(g::text), '' ORDER BY g) FROM generate_series(1, 50000) g";
        assert!(
            psql_socket(dir.path(), port, large) == pg.psql(large),
            "{kind}: the large answer differs"
        );
        let status = tunnel.terminate(WAIT).expect("exits on SIGTERM");
        assert!(
            status.success() || kind == ClientKind::OpenSsh,
            "{kind}: {status:?}: {}",
            tunnel.log()
        );
        // The forward ends with the client: nothing listens there any more, and the file
        // stays, as sshd leaves it.
        wait_for_socket(&socket, false, WAIT, &tunnel);
        assert!(is_socket(&socket), "{kind}: sshd removed its socket");
    }
    let log = sshd.log();
    assert!(
        log.contains("streamlocal-forward@openssh.com"),
        "sshd saw no streamlocal-forward request:\n{log}"
    );
}

#[test]
fn interop_remote_streamlocal_socket_to_socket_is_cancelled_at_exit() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let dir = tempfile::tempdir().expect("temp dir");
    let here = dir.path().join("echo.sock");
    let there = dir.path().join("bastion.sock");
    let _echo = UnixEchoServer::start(&here);
    let mut tunnel = spawn_with_forward(
        ClientKind::Forwarder,
        &sshd,
        &key,
        "RemoteForward",
        &there.display().to_string(),
        &here.display().to_string(),
        &["ExitOnForwardFailure=yes"],
    );
    wait_for_socket(&there, true, WAIT, &tunnel);
    round_trip(&there, &[7u8; 1 << 20]);
    round_trip(&there, b"a short one");
    let status = tunnel.terminate(WAIT).expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}: {}", tunnel.log());
    wait_for_socket(&there, false, WAIT, &tunnel);
    let log = sshd.log();
    assert!(
        log.contains("cancel-streamlocal-forward@openssh.com"),
        "no cancel reached sshd:\n{log}"
    );
}

#[test]
fn interop_remote_streamlocal_stale_socket_is_refused_until_sshd_may_replace_it() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let mut sshd = Sshd::start(&key);
    let dir = tempfile::tempdir().expect("temp dir");
    let here = dir.path().join("echo.sock");
    let there = dir.path().join("bastion.sock");
    let _echo = UnixEchoServer::start(&here);
    let mut tunnel = spawn_with_forward(
        ClientKind::Forwarder,
        &sshd,
        &key,
        "RemoteForward",
        &there.display().to_string(),
        &here.display().to_string(),
        &[
            "ExitOnForwardFailure=no",
            "ServerAliveInterval=1",
            "ServerAliveCountMax=2",
            "ReconnectBackoffMax=1s",
        ],
    );
    wait_for_socket(&there, true, WAIT, &tunnel);
    round_trip(&there, b"first session");

    // The bastion drops the session: its sshd process leaves the socket file, and the next
    // session's request for the path is refused, with what to do about it.
    assert!(sshd.kill_sessions() >= 1);
    let log = tunnel.wait_for_log("StreamLocalBindUnlink yes", WAIT);
    assert!(
        log.contains(&format!(
            "Warning: remote port forwarding failed for listen path {}",
            there.display()
        )),
        "{log}"
    );
    assert!(is_socket(&there));
    wait_for_socket(&there, false, WAIT, &tunnel);

    // With StreamLocalBindUnlink, sshd replaces the stale file: the forward, asked again,
    // is granted and carries data.
    sshd.restart_with_config_line("StreamLocalBindUnlink yes");
    wait_for_socket(&there, true, WAIT, &tunnel);
    round_trip(&there, b"after the replacement");
    assert!(tunnel.exited().is_none(), "{}", tunnel.log());
}

#[test]
fn interop_remote_streamlocal_refused_exits_255_with_exit_on_forward_failure() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .authorize(&key)
        .config("AllowStreamLocalForwarding no")
        .start();
    let dir = tempfile::tempdir().expect("temp dir");
    let there = dir.path().join("bastion.sock");
    let mut tunnel = spawn_with_forward(
        ClientKind::Forwarder,
        &sshd,
        &key,
        "RemoteForward",
        &there.display().to_string(),
        "127.0.0.1:9",
        &["ExitOnForwardFailure=yes"],
    );
    let status = tunnel.wait_exit(WAIT).expect("exits");
    assert_eq!(status.code(), Some(255), "{}", tunnel.log());
    assert!(
        tunnel.log().contains(&format!(
            "Error: remote port forwarding failed for listen path {}",
            there.display()
        )),
        "{}",
        tunnel.log()
    );
    assert!(!there.exists());
}
