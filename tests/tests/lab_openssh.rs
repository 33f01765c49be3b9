//! The lab itself, checked with the real OpenSSH client: these runs are the reference our
//! own client is compared against.

use std::fs;
use std::time::Duration;

use ssh_interop_tests::{
    ClientKind, EchoServer, KeyFormat, KeyKind, Pattern, Postgres, SinkServer, SourceServer, Sshd,
    TunnelBuilder, UserKey, download, echo_round_trip, expected_customers, port_listening, psql,
    try_psql, upload,
};

fn openssh(sshd: &Sshd, key: &UserKey) -> TunnelBuilder {
    TunnelBuilder::new(ClientKind::OpenSsh, sshd, key)
}

#[test]
fn interop_lab_openssh_tunnel_reaches_postgres() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = Postgres::start();
    assert_eq!(
        pg.psql("SELECT id, name FROM customers ORDER BY id"),
        expected_customers()
    );

    let tunnel = openssh(&sshd, &key).forward_to(pg.port()).start();
    let through = psql(
        tunnel.local_port(),
        "SELECT id, name FROM customers ORDER BY id",
    );
    assert_eq!(through, expected_customers());
    // The query really went through sshd: it logged the forwarded connection.
    sshd.wait_for_log(
        &format!("127.0.0.1 port {}", pg.port()),
        Duration::from_secs(10),
    );
    // And the app password is really checked over TCP.
    let mut wrong = std::process::Command::new("psql");
    wrong
        .args([
            "-X",
            "-w",
            "-h",
            "127.0.0.1",
            "-p",
            &tunnel.local_port().to_string(),
        ])
        .args(["-U", "app", "-d", "appdb", "-c", "SELECT 1"])
        .env("PGPASSWORD", "not-the-password")
        .env("PGPASSFILE", "/dev/null");
    let out = ssh_interop_tests::process::run_bounded(&mut wrong, Duration::from_secs(30), "psql");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password authentication failed"));
}

#[test]
fn interop_lab_openssh_tunnel_carries_echo_upload_and_download_intact() {
    let key = UserKey::generate(KeyKind::EcdsaP256);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let sink = SinkServer::start();
    let size = 8 * Pattern::LEN as u64 + 12345;
    let source = SourceServer::start(size);
    let tunnel = openssh(&sshd, &key)
        .cipher("aes128-gcm@openssh.com")
        .forward_to(echo.port())
        .forward_to(sink.port())
        .forward_to(source.port())
        .start();
    let ports = tunnel.local_ports();

    let payload = Pattern::get().chunk(100, 1_000_000).to_vec();
    assert_eq!(
        echo_round_trip(ports[0], &payload).expect("echo through the tunnel"),
        payload
    );

    let up = upload(ports[1], size).expect("upload through the tunnel");
    assert_eq!(up.bytes, size);
    assert_eq!(up.sha256, Some(Pattern::get().sha256(size)));
    assert_eq!(
        sink.wait_for_results(1, Duration::from_secs(10))[0].bytes,
        size
    );

    let down = download(ports[2], true).expect("download through the tunnel");
    assert_eq!(down.bytes, size);
    assert_eq!(down.sha256, Some(source.expected_sha256()));
    assert!(
        tunnel.cpu_seconds() > 0.0,
        "moving {size} bytes twice costs the client CPU"
    );
}

#[test]
fn interop_lab_every_user_key_kind_and_format_logs_in() {
    let keys = [
        UserKey::generate_pem(KeyKind::Rsa2048),
        UserKey::generate_with(KeyKind::EcdsaP384, KeyFormat::Pkcs8, None),
        UserKey::generate(KeyKind::EcdsaP521),
        UserKey::generate(KeyKind::Ed25519),
    ];
    let sshd = keys
        .iter()
        .fold(Sshd::builder(), |b, k| b.authorize(k))
        .start();
    let echo = EchoServer::start();
    for key in &keys {
        let tunnel = openssh(&sshd, key).forward_to(echo.port()).start();
        assert_eq!(
            echo_round_trip(tunnel.local_port(), b"ping").expect("echo"),
            b"ping"
        );
        // sshd names the accepted key by its fingerprint.
        sshd.wait_for_log(key.fingerprint(), Duration::from_secs(10));
    }
}

#[test]
fn interop_lab_sshd_refuses_a_key_it_does_not_know() {
    let known = UserKey::generate(KeyKind::Ed25519);
    let stranger = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&known);
    let mut tunnel = openssh(&sshd, &stranger).forward_to(1).spawn();
    let status = tunnel
        .wait_exit(Duration::from_secs(30))
        .expect("ssh gives up");
    assert!(!status.success());
    assert!(
        tunnel.log().contains("Permission denied (publickey)"),
        "{}",
        tunnel.log()
    );
}

#[test]
fn interop_lab_client_rejects_a_host_key_it_does_not_know() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let other = Sshd::start(&key);
    // Trust the other server's keys, under this server's name.
    let wrong = sshd.dir().join("wrong_known_hosts");
    let lines: String = other
        .host_keys()
        .iter()
        .map(|k| k.known_hosts_line("127.0.0.1", sshd.port()) + "\n")
        .collect();
    fs::write(&wrong, lines).expect("write known_hosts");
    let mut tunnel = openssh(&sshd, &key)
        .known_hosts(&wrong)
        .forward_to(1)
        .spawn();
    let status = tunnel
        .wait_exit(Duration::from_secs(30))
        .expect("ssh gives up");
    assert!(!status.success());
    assert!(
        tunnel.log().contains("Host key verification failed"),
        "{}",
        tunnel.log()
    );
}

#[test]
fn interop_lab_host_key_choice_and_extra_config_take_effect() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let echo = EchoServer::start();
    let sink = SinkServer::start();
    let sshd = Sshd::builder()
        .host_keys(&[KeyKind::EcdsaP384])
        .authorize(&key)
        .config(format!("PermitOpen 127.0.0.1:{}", echo.port()))
        .start();
    assert_eq!(sshd.host_keys().len(), 1);
    assert!(
        fs::read_to_string(sshd.known_hosts_path())
            .expect("known_hosts")
            .contains("ecdsa-sha2-nistp384")
    );

    let tunnel = openssh(&sshd, &key)
        .verbose()
        .forward_to(echo.port())
        .forward_to(sink.port())
        .start();
    assert!(
        tunnel.log().contains(sshd.host_keys()[0].fingerprint()),
        "ssh -v shows the one host key's fingerprint"
    );
    assert_eq!(
        echo_round_trip(tunnel.local_ports()[0], b"allowed").expect("echo"),
        b"allowed"
    );
    // The sink is not in PermitOpen: sshd refuses the channel and ssh closes the connection.
    let refused = upload(tunnel.local_ports()[1], 10);
    assert!(refused.is_err(), "upload must fail, got {refused:?}");
    sshd.wait_for_log("but the request was denied", Duration::from_secs(10));
    assert!(sink.results().is_empty());
}

#[test]
fn interop_lab_killed_sessions_and_restarts_behave_like_a_network_fault() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let mut sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let mut tunnel = openssh(&sshd, &key).forward_to(echo.port()).start();
    assert_eq!(sshd.session_pids().len(), 1);
    assert_eq!(sshd.kill_sessions(), 1);
    let status = tunnel
        .wait_exit(Duration::from_secs(30))
        .expect("ssh notices the dead connection");
    assert!(!status.success());

    let port = sshd.port();
    let host_keys: Vec<String> = sshd
        .host_keys()
        .iter()
        .map(|k| k.public_line().to_owned())
        .collect();
    sshd.restart();
    assert_eq!(sshd.port(), port);
    let again: Vec<String> = sshd
        .host_keys()
        .iter()
        .map(|k| k.public_line().to_owned())
        .collect();
    assert_eq!(again, host_keys, "a restart keeps the host keys");
    let tunnel = openssh(&sshd, &key).forward_to(echo.port()).start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"back").expect("echo"),
        b"back"
    );
}

#[test]
fn interop_lab_teardown_removes_processes_and_files() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = Postgres::start();
    let (sshd_port, sshd_pid, sshd_dir) = (
        sshd.port(),
        sshd.pid().expect("running"),
        sshd.dir().to_path_buf(),
    );
    let (pg_port, pg_dir) = (pg.port(), pg.dir().to_path_buf());
    let tunnel = openssh(&sshd, &key).forward_to(pg.port()).start();
    let (client_port, client_pid) = (tunnel.local_port(), tunnel.pid());

    drop(tunnel);
    drop(sshd);
    drop(pg);
    for port in [sshd_port, pg_port, client_port] {
        assert!(!port_listening(port), "port {port} still listening");
    }
    for pid in [sshd_pid, client_pid] {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still there"
        );
    }
    assert!(!sshd_dir.exists());
    assert!(!pg_dir.exists());
    assert!(try_psql(pg_port, "SELECT 1").is_err());
}

#[test]
fn interop_lab_servers_are_cleaned_up_when_a_test_panics() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let sshd = Sshd::start(&key);
        let pg = Postgres::start();
        *seen.lock().expect("lock") = Some((
            sshd.pid().expect("running"),
            sshd.port(),
            sshd.dir().to_path_buf(),
            pg.port(),
            pg.dir().to_path_buf(),
        ));
        panic!("a failing test");
    });
    assert!(result.is_err());
    let (pid, sshd_port, sshd_dir, pg_port, pg_dir) =
        seen.lock().expect("lock").take().expect("servers started");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!port_listening(sshd_port) && !port_listening(pg_port));
    assert!(!sshd_dir.exists() && !pg_dir.exists());
}
