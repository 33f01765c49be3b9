//! Unix socket forwarding (OpenSSH's "streamlocal") against the real sshd and PostgreSQL 15:
//! a local port to the database's Unix socket on the bastion (`-L port:/path`), a local Unix
//! socket to its TCP port (`-L /path:host:port`), socket to socket, and a fleet tunnel with
//! both ends sockets. PostgreSQL tells the two apart: `inet_client_addr()` is NULL for a
//! connection that came in on its socket.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use ssh_interop_tests::client::{spawn_with_forward, wait_for_socket};
use ssh_interop_tests::fleet::{Fleet, without_global_known_hosts};
use ssh_interop_tests::net::is_socket;
use ssh_interop_tests::postgres::{CUSTOMERS_QUERY, psql_socket, try_psql_conninfo};
use ssh_interop_tests::process::wait_until;
use ssh_interop_tests::{
    ClientKind, KeyKind, Postgres, Sshd, UserKey, expected_customers, free_port, port_listening,
    psql,
};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn a_local_port_reaches_postgres_through_its_unix_socket_on_the_bastion() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = Postgres::start();
    let socket = pg.socket_path();
    // ssh first, as the reference, then ours: both must give the same answers.
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        let port = free_port();
        let tunnel = spawn_with_forward(
            kind,
            &sshd,
            &key,
            "LocalForward",
            &format!("127.0.0.1:{port}"),
            &socket.display().to_string(),
            &[],
        );
        wait_until(
            WAIT,
            &format!("{kind} listening on {port}"),
            || port_listening(port).then_some(()),
            || tunnel.log(),
        );
        assert_eq!(psql(port, CUSTOMERS_QUERY), expected_customers(), "{kind}");
        // NULL: PostgreSQL took the connection on its Unix socket, not on its TCP port.
        assert_eq!(
            psql(port, "SELECT inet_client_addr() IS NULL"),
            "t",
            "{kind}"
        );
        let large =
            "SELECT string_agg(md5(g::text), '' ORDER BY g) FROM generate_series(1, 50000) g";
        assert!(
            psql(port, large) == pg.psql(large),
            "{kind}: the large answer differs"
        );
    }
    let log = sshd.log();
    let channels = log
        .lines()
        .filter(|l| {
            l.contains("server_request_direct_streamlocal: originator")
                && l.contains(&format!("target {}", socket.display()))
        })
        .count();
    assert_eq!(
        channels, 6,
        "three psql runs per client, each its own channel:\n{log}"
    );
}

#[test]
fn a_local_unix_socket_serves_psql_with_mode_0600_and_is_removed_at_exit() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let local_port = 6543;
    let socket = dir.path().join(format!(".s.PGSQL.{local_port}"));
    let mut tunnel = spawn_with_forward(
        ClientKind::Forwarder,
        &sshd,
        &key,
        "LocalForward",
        &socket.display().to_string(),
        &format!("127.0.0.1:{}", pg.port()),
        &[],
    );
    wait_for_socket(&socket, true, WAIT, &tunnel);
    let mode = std::fs::metadata(&socket)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "StreamLocalBindMask's default");
    assert_eq!(
        psql_socket(dir.path(), local_port, CUSTOMERS_QUERY),
        expected_customers()
    );
    // PostgreSQL itself saw a TCP connection from the bastion.
    assert_eq!(
        psql_socket(dir.path(), local_port, "SELECT inet_client_addr()"),
        "127.0.0.1"
    );
    assert!(
        sshd.log()
            .contains("server_request_direct_tcpip: originator 127.0.0.1 port 65535"),
        "a socket client is reported as OpenSSH reports it:\n{}",
        sshd.log()
    );

    // SIGTERM: the socket file goes with the listener.
    assert!(tunnel.terminate(WAIT).is_some(), "{}", tunnel.log());
    assert!(!socket.exists(), "the socket file outlived the forwarder");
}

#[test]
fn a_stale_socket_is_refused_unless_stream_local_bind_unlink_and_the_mask_is_kept() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join(".s.PGSQL.6544");
    let listen = socket.display().to_string();
    let target = format!("127.0.0.1:{}", pg.port());

    // A forwarder killed outright leaves its socket behind.
    let mut first = spawn_with_forward(
        ClientKind::Forwarder,
        &sshd,
        &key,
        "LocalForward",
        &listen,
        &target,
        &[],
    );
    wait_for_socket(&socket, true, WAIT, &first);
    first.kill();
    assert!(
        is_socket(&socket),
        "SIGKILL left no stale socket to test with"
    );

    // The next one refuses it (ExitOnForwardFailure=yes, as the lab runs both clients).
    let mut second = spawn_with_forward(
        ClientKind::Forwarder,
        &sshd,
        &key,
        "LocalForward",
        &listen,
        &target,
        &[],
    );
    let log = second.expect_failure();
    assert!(
        log.contains(&listen) && log.contains("StreamLocalBindUnlink"),
        "the refusal names the path and the option:\n{log}"
    );
    assert!(
        is_socket(&socket),
        "the stale socket was removed without being asked"
    );

    // Told to, it replaces the stale socket, and a wider mask gives the group access.
    let third = spawn_with_forward(
        ClientKind::Forwarder,
        &sshd,
        &key,
        "LocalForward",
        &listen,
        &target,
        &["StreamLocalBindUnlink=yes", "StreamLocalBindMask=0117"],
    );
    wait_until(
        WAIT,
        "the replaced socket to answer",
        || {
            try_psql_conninfo(
                &format!(
                    "host={} port=6544 user=app dbname=appdb",
                    dir.path().display()
                ),
                "SELECT 7",
            )
            .ok()
            .filter(|r| r == "7")
        },
        || third.log(),
    );
    let mode = std::fs::metadata(&socket)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);

    // A regular file is never removed, StreamLocalBindUnlink or not.
    let plain = dir.path().join("notes");
    std::fs::write(&plain, "keep").expect("write");
    let mut fourth = spawn_with_forward(
        ClientKind::Forwarder,
        &sshd,
        &key,
        "LocalForward",
        &plain.display().to_string(),
        &target,
        &["StreamLocalBindUnlink=yes"],
    );
    let log = fourth.expect_failure();
    assert!(log.contains("is not a socket"), "{log}");
    assert_eq!(std::fs::read_to_string(&plain).expect("read"), "keep");
}

#[test]
fn a_local_socket_reaches_the_database_socket_on_the_bastion() {
    let key = UserKey::generate(KeyKind::Rsa4096);
    let sshd = Sshd::start(&key);
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join(".s.PGSQL.7000");
    let tunnel = spawn_with_forward(
        ClientKind::Forwarder,
        &sshd,
        &key,
        "LocalForward",
        &socket.display().to_string(),
        &pg.socket_path().display().to_string(),
        &[],
    );
    wait_for_socket(&socket, true, WAIT, &tunnel);
    assert_eq!(
        psql_socket(dir.path(), 7000, CUSTOMERS_QUERY),
        expected_customers()
    );
    assert_eq!(
        psql_socket(dir.path(), 7000, "SELECT inet_client_addr() IS NULL"),
        "t"
    );
}

#[test]
fn a_fleet_tunnel_from_a_socket_to_a_socket_is_probed_and_its_socket_goes_with_it() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket: PathBuf = dir.path().join(".s.PGSQL.7100");
    let admin = free_port();
    let head = without_global_known_hosts(&format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ndrain_timeout = \"1s\"\nprobe_interval = \"1s\"\n\n\
         [defaults]\nidentity_file = {:?}\nknown_hosts = {:?}\n",
        key.private_key_path().display().to_string(),
        sshd.known_hosts_path().display().to_string(),
    ));
    let tunnel = format!(
        "\n[[tunnel]]\nname = \"pg-socket\"\nbastion = \"{}@127.0.0.1:{}\"\nlocal = {:?}\n\
         remote = {:?}\nprobe = \"postgres\"\n",
        sshd.user(),
        sshd.port(),
        socket.display().to_string(),
        pg.socket_path().display().to_string(),
    );
    let mut fleet = Fleet::start(&format!("{head}{tunnel}"), Some(admin), &[]);
    let body = fleet.wait_for_admin("/tunnels", WAIT, |code, body| {
        code == 200
            && serde_json::from_str::<serde_json::Value>(body)
                .is_ok_and(|v| v[0]["state"] == "up" && v[0]["probe"]["ok"] == true)
    });
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v[0]["local"], socket.display().to_string(), "{v}");
    assert_eq!(
        v[0]["remote"],
        pg.socket_path().display().to_string(),
        "{v}"
    );
    assert_eq!(
        psql_socket(dir.path(), 7100, CUSTOMERS_QUERY),
        expected_customers()
    );

    // Changed by a reload (a restart of the tunnel): the old listener's socket goes before
    // the new one binds the same path, and it serves again.
    fleet.rewrite(&format!(
        "{head}{}",
        tunnel.replace("probe = \"postgres\"", "probe = \"tcp\"")
    ));
    fleet.reload();
    fleet.wait_for_log_count("reloaded: 1 tunnels", 1, WAIT);
    let body = fleet.wait_for_admin("/tunnels", WAIT, |code, body| {
        code == 200
            && serde_json::from_str::<serde_json::Value>(body)
                .is_ok_and(|v| v[0]["state"] == "up" && v[0]["probe"]["detail"].is_string())
    });
    assert!(!body.contains("cannot listen"), "{body}");
    assert_eq!(psql_socket(dir.path(), 7100, "SELECT 1"), "1");

    // Removed by a reload: its socket goes at once.
    fleet.rewrite(&head);
    fleet.reload();
    fleet.wait_for_log_count("reloaded: 0 tunnels", 1, WAIT);
    wait_until(
        WAIT,
        "the removed tunnel's socket to go",
        || (!socket.exists()).then_some(()),
        || fleet.log(),
    );
    fleet.terminate();
    assert!(fleet.wait_exit(WAIT).is_some(), "{}", fleet.log());
}

#[test]
fn a_socket_is_removed_when_the_first_login_fails_and_forwarder_exits() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let stranger = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("s.sock");
    // Listening starts before the login; the refused login ends the run (exit 255, as ssh).
    let mut tunnel = spawn_with_forward(
        ClientKind::Forwarder,
        &sshd,
        &stranger,
        "LocalForward",
        &socket.display().to_string(),
        "127.0.0.1:5432",
        &[],
    );
    let log = tunnel.expect_failure();
    assert!(
        log.contains("Permission denied") || log.contains("refused"),
        "{log}"
    );
    assert!(
        !socket.exists(),
        "the socket file outlived a failed run:\n{log}"
    );
}
