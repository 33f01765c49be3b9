//! `-f` against the real sshd, with OpenSSH's `ssh -f -N -L` as the reference: the command
//! returns 0 once the tunnel is up and the tunnel goes on in the background, out of the
//! terminal's session; a first connection that fails is the command's exit status; and with
//! ExitOnForwardFailure the command returns only once every `-R` is granted, or 255 when
//! one is refused.

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ssh_interop_tests::process::{processes_with, session_of, stop_background};
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Sshd, TunnelBuilder, UserKey, echo_round_trip, free_port,
    port_listening,
};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn the_command_returns_once_the_tunnel_is_up_and_the_tunnel_stays() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder().authorize(&key).start();
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        let client = TunnelBuilder::new(kind, &sshd, &key).forward_to(echo.port());
        let port = client.forwards()[0].local_port;
        let needle = format!("127.0.0.1:{port}:");
        let (status, log) = client.run_with_f(dir.path());
        assert_eq!(status, Some(0), "{}: {log}", kind.name());
        // Up when the command returns: no wait.
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let back = echo_round_trip(port, &sent)
            .unwrap_or_else(|e| panic!("{}: the echo failed: {e}\n{log}", kind.name()));
        assert!(
            back == sent,
            "{}: the echo came back different",
            kind.name()
        );
        let pids = processes_with(&needle);
        assert_eq!(pids.len(), 1, "{}: {pids:?}", kind.name());
        if kind == ClientKind::Forwarder {
            // Out of the terminal's session, as ssh's daemon(3) puts it.
            assert_eq!(session_of(pids[0]), Some(pids[0]), "not a session leader");
            assert_ne!(session_of(pids[0]), session_of(std::process::id()));
        }
        stop_background(&needle, WAIT);
    }
}

/// A user key, an sshd that lets it in, an echo server, a temp dir, and in it a known_hosts
/// file that lists nothing.
fn lab_with_an_empty_known_hosts() -> (UserKey, Sshd, EchoServer, tempfile::TempDir, PathBuf) {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder().authorize(&key).start();
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("known_hosts_empty");
    fs::write(&empty, "").expect("write known_hosts");
    (key, sshd, echo, dir, empty)
}

#[test]
fn a_first_connection_that_fails_is_the_command_s_exit_status() {
    let (key, sshd, echo, dir, empty) = lab_with_an_empty_known_hosts();
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        let client = TunnelBuilder::new(kind, &sshd, &key)
            .known_hosts(&empty)
            .forward_to(echo.port());
        let needle = format!("127.0.0.1:{}:", client.forwards()[0].local_port);
        let (status, log) = client.run_with_f(dir.path());
        assert_eq!(status, Some(255), "{}: {log}", kind.name());
        assert!(
            log.contains("Host key verification failed") || log.contains("is not known"),
            "{}: {log}",
            kind.name()
        );
        assert!(processes_with(&needle).is_empty(), "{}", kind.name());
    }
    assert_eq!(echo.connections(), 0);
}

#[test]
fn with_exit_on_forward_failure_the_command_waits_for_every_remote_forward() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder().authorize(&key).start();
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        // Granted: listening on the bastion by the time the command returns.
        let remote = free_port();
        let client = TunnelBuilder::new(kind, &sshd, &key)
            .arg("-R")
            .arg(&format!("127.0.0.1:{remote}:127.0.0.1:{}", echo.port()));
        let needle = format!("127.0.0.1:{remote}:127.0.0.1:");
        let (status, log) = client.run_with_f(dir.path());
        assert_eq!(status, Some(0), "{}: {log}", kind.name());
        assert!(port_listening(remote), "{}: not granted yet", kind.name());
        let back = echo_round_trip(remote, b"through -R")
            .unwrap_or_else(|e| panic!("{}: {e}\n{log}", kind.name()));
        assert_eq!(back, b"through -R");
        stop_background(&needle, WAIT);

        // Refused (the port is taken on the bastion): the script sees 255.
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("address").port();
        let client = TunnelBuilder::new(kind, &sshd, &key)
            .arg("-R")
            .arg(&format!("127.0.0.1:{port}:127.0.0.1:{}", echo.port()));
        let needle = format!("127.0.0.1:{port}:127.0.0.1:");
        let (status, log) = client.run_with_f(dir.path());
        assert_eq!(status, Some(255), "{}: {log}", kind.name());
        assert!(
            log.contains(&format!(
                "remote port forwarding failed for listen port {port}"
            )),
            "{}: {log}",
            kind.name()
        );
        assert!(processes_with(&needle).is_empty(), "{}", kind.name());
    }
}

#[test]
fn with_e_the_log_and_every_error_go_to_the_file() {
    let (key, sshd, echo, dir, empty) = lab_with_an_empty_known_hosts();
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        // An unknown host key: the error is in the file, nothing on stderr.
        let log_file = dir.path().join(format!("{}-refused.log", kind.name()));
        let client = TunnelBuilder::new(kind, &sshd, &key)
            .known_hosts(&empty)
            .forward_to(echo.port())
            .arg("-E")
            .arg(&log_file.display().to_string());
        let out = ssh_interop_tests::process::run_bounded(
            Command::new(kind.program()).args(client.args()),
            WAIT,
            "a client with -E",
        );
        assert_eq!(out.status.code(), Some(255), "{}", kind.name());
        assert!(out.stderr.is_empty(), "{}: {out:?}", kind.name());
        let logged = fs::read_to_string(&log_file).unwrap_or_default();
        assert!(
            logged.contains("Host key verification failed") || logged.contains("is not known"),
            "{}: {logged}",
            kind.name()
        );
    }
    // With -f, the background process's log goes there too; the file is only ours.
    let log_file = dir.path().join("forwarder-f.log");
    let client = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .verbose()
        .arg("-E")
        .arg(&log_file.display().to_string());
    let needle = format!("127.0.0.1:{}:", client.forwards()[0].local_port);
    let (status, stderr) = client.run_with_f(dir.path());
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(stderr, "");
    let logged = fs::read_to_string(&log_file).unwrap_or_default();
    assert!(logged.contains("session up"), "{logged}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(&log_file)
            .expect("the log")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    stop_background(&needle, WAIT);
}
