//! The library's dialer (`forwarder::dial`) against a real sshd: streams to hosts behind the
//! bastion with no local port, across reconnects, refused by `PermitOpen`, a hundred at once,
//! and the typed errors (host key, authentication, timeout). Then forwarder's examples
//! (`dial_postgres`, `mysql_greeting`, built by cargo as this package's `lab-*` examples)
//! against a real PostgreSQL and MariaDB, and TLS to PostgreSQL inside the tunnel with
//! `verify-full`: libpq through a local port (`host=db.internal hostaddr=127.0.0.1`) and
//! tokio-postgres with rustls over a dialed stream, each also refusing a certificate for
//! another name.
//!
//! Every wait is bounded: each test runs its async part under a timeout, every dial has its
//! own bound, and the examples and psql run under a time limit. Each database is started
//! once per test binary (a `static`) and stopped when the process exits.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, LazyLock};
use std::thread;
use std::time::{Duration, Instant};

use forwarder::config::TunnelConfig;
use forwarder::dial::{DialError, Dialer, OpenFailureReason};
use ssh_interop_tests::postgres::{
    APP_DB, APP_PASSWORD, APP_USER, CUSTOMERS_QUERY, try_psql_conninfo,
};
use ssh_interop_tests::process::{run_bounded, wait_until};
use ssh_interop_tests::{ClientKind, Mariadb, Postgres, TunnelBuilder, expected_customers};
use ssh_interop_tests::{EchoServer, KeyKind, Sshd, UserKey, known_hosts_line};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The bound on each test's async part.
const TEST_LIMIT: Duration = Duration::from_secs(90);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Runs `f` on a fresh runtime, failing the test if it takes longer than [`TEST_LIMIT`].
fn run<F: std::future::Future<Output = ()>>(f: F) {
    runtime().block_on(async {
        tokio::time::timeout(TEST_LIMIT, f)
            .await
            .expect("the test finished within its limit");
    });
}

/// A configuration for `sshd` with `key`, short backoffs so a reconnect is quick.
fn config(sshd: &Sshd, key: &UserKey) -> TunnelConfig {
    TunnelConfig::builder(sshd.host(), sshd.user())
        .port(sshd.port())
        .identity_file(key.private_key_path())
        .known_hosts_file(sshd.known_hosts_path())
        .option("ReconnectBackoffMax", "1s")
        .session_wait_timeout(Duration::from_secs(30))
        .build()
        .expect("a valid configuration")
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `data` through a stream to an echo server and checks every byte that comes back.
async fn echo_through<S>(stream: &mut S, data: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let write = async {
        w.write_all(data).await.expect("write through the stream");
        w.shutdown().await.expect("EOF through the stream");
    };
    let read = async {
        let mut back = Vec::with_capacity(data.len());
        r.read_to_end(&mut back).await.expect("read the echo");
        back
    };
    let ((), back) = tokio::join!(write, read);
    assert_eq!(back.len(), data.len(), "echoed length");
    assert!(back == data, "the echo differs from what was sent");
}

#[test]
fn embed_dial_echo_and_reconnect_after_sshd_returns() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let mut sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let rt = runtime();
    let dialer = rt.block_on(async {
        let dialer = Dialer::start(config(&sshd, &key)).await.expect("started");
        dialer
            .ready(Duration::from_secs(20))
            .await
            .expect("a session");
        let mut s = dialer.dial("127.0.0.1", echo.port()).await.expect("dial");
        echo_through(&mut s, &payload(1, 200_000)).await;
        dialer
    });

    // sshd goes away; a dial started during the outage waits, and succeeds once it is back.
    sshd.stop();
    let dialer = Arc::new(dialer);
    let waiting = {
        let dialer = dialer.clone();
        let port = echo.port();
        rt.spawn(async move {
            let started = Instant::now();
            let r = dialer
                .dial_timeout("127.0.0.1", port, Duration::from_secs(30))
                .await;
            (r, started.elapsed())
        })
    };
    thread::sleep(Duration::from_secs(3));
    assert!(!waiting.is_finished(), "the dial waits while sshd is down");
    sshd.restart();
    rt.block_on(async {
        let (r, took) = tokio::time::timeout(TEST_LIMIT, waiting)
            .await
            .expect("the waiting dial ended in time")
            .expect("the task");
        let mut s = r.unwrap_or_else(|e| panic!("the dial made during the outage failed: {e}"));
        assert!(took >= Duration::from_secs(3), "it waited: {took:?}");
        echo_through(&mut s, &payload(2, 100_000)).await;
        let mut again = dialer.dial("127.0.0.1", echo.port()).await.expect("dial");
        echo_through(&mut again, b"after the reconnect").await;
    });
    if let Ok(d) = Arc::try_unwrap(dialer) {
        rt.block_on(d.shutdown());
    }
}

#[test]
fn embed_dial_stream_open_when_its_session_dies_ends_with_an_error() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let rt = runtime();
    let (dialer, mut open) = rt.block_on(async {
        let dialer = Dialer::start(config(&sshd, &key)).await.expect("started");
        let mut s = dialer
            .dial_timeout("127.0.0.1", echo.port(), Duration::from_secs(20))
            .await
            .expect("dial");
        s.write_all(b"ping").await.expect("write");
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.expect("echo");
        assert_eq!(&b, b"ping");
        (dialer, s)
    });
    assert_eq!(sshd.kill_sessions(), 1, "one sshd session killed");
    rt.block_on(async {
        let mut b = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(20), open.read(&mut b))
            .await
            .expect("the read ended in time");
        let e = match r {
            Err(e) => e,
            Ok(n) => panic!("a read on a stream whose session died returned Ok({n}), not an error"),
        };
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted, "{e}");
        let w = open.write_all(b"more").await;
        assert!(w.is_err(), "a write after the session died fails");
        // The next dial is served by the next session.
        let mut s = dialer
            .dial_timeout("127.0.0.1", echo.port(), Duration::from_secs(20))
            .await
            .expect("dial on the next session");
        echo_through(&mut s, b"next session").await;
        dialer.shutdown().await;
    });
}

#[test]
fn embed_dial_refused_by_permit_open_is_a_typed_error() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let echo = EchoServer::start();
    let other = EchoServer::start();
    let sshd = Sshd::builder()
        .config(format!("PermitOpen 127.0.0.1:{}", echo.port()))
        .authorize(&key)
        .start();
    run(async {
        let dialer = Dialer::start(config(&sshd, &key)).await.expect("started");
        let e = dialer
            .dial_timeout("127.0.0.1", other.port(), Duration::from_secs(20))
            .await
            .expect_err("PermitOpen refuses the other port");
        match &e {
            DialError::ChannelRefused { reason, .. } => {
                assert_eq!(
                    *reason,
                    OpenFailureReason::ADMINISTRATIVELY_PROHIBITED,
                    "{e}"
                );
            }
            other => panic!("expected ChannelRefused, got {other:?}"),
        }
        assert_eq!(other.connections(), 0, "nothing reached the refused target");
        // The session is still fine for what is permitted.
        let mut s = dialer
            .dial_timeout("127.0.0.1", echo.port(), Duration::from_secs(20))
            .await
            .expect("the permitted target");
        echo_through(&mut s, b"permitted").await;
        // Once stopped, a dial says so at once.
        dialer.supervisor().stop();
        let e = dialer
            .dial_timeout("127.0.0.1", echo.port(), Duration::from_secs(20))
            .await
            .expect_err("the dialer is stopped");
        assert_eq!(e, DialError::Stopped);
        dialer.shutdown().await;
    });
}

#[test]
fn embed_dial_100_concurrent_dials_each_checked_byte_for_byte() {
    const DIALS: usize = 100;
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    run(async {
        let dialer = Arc::new(Dialer::start(config(&sshd, &key)).await.expect("started"));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..DIALS {
            let dialer = dialer.clone();
            let port = echo.port();
            tasks.spawn(async move {
                let mut s = dialer
                    .dial_timeout("127.0.0.1", port, Duration::from_secs(60))
                    .await
                    .unwrap_or_else(|e| panic!("dial {i}: {e}"));
                let data = payload(i as u64 + 10, 16 * 1024 + i * 97);
                echo_through(&mut s, &data).await;
            });
        }
        let mut done = 0;
        while let Some(r) = tasks.join_next().await {
            r.expect("a dial task");
            done += 1;
        }
        assert_eq!(done, DIALS);
        // A target nothing listens on: the bastion's connect fails, and says so, typed.
        let closed = ssh_interop_tests::free_port();
        let e = dialer
            .dial_timeout("127.0.0.1", closed, Duration::from_secs(20))
            .await
            .expect_err("nothing listens there");
        assert!(
            matches!(
                e,
                DialError::ChannelRefused { reason, .. } if reason == OpenFailureReason::CONNECT_FAILED
            ),
            "{e:?}"
        );
        if let Ok(d) = Arc::try_unwrap(dialer) {
            d.shutdown().await;
        }
    });
    assert_eq!(echo.connections(), DIALS, "one connection per dial");
    wait_until(
        Duration::from_secs(10),
        "the session closed at shutdown",
        || sshd.session_pids().is_empty().then_some(()),
        || sshd.log(),
    );
}

#[test]
fn embed_dial_untrusted_host_key_is_a_typed_error_and_not_retried() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let dir = tempfile::tempdir().expect("temp dir");
    // A known_hosts that lists another key for the bastion: a changed host key.
    let known = dir.path().join("known_hosts");
    let impostor = UserKey::generate(KeyKind::Ed25519);
    std::fs::write(
        &known,
        known_hosts_line(sshd.host(), sshd.port(), impostor.public_key_line()) + "\n",
    )
    .expect("write known_hosts");
    let config = TunnelConfig::builder(sshd.host(), sshd.user())
        .port(sshd.port())
        .identity_file(key.private_key_path())
        .known_hosts_file(&known)
        .build()
        .expect("config");
    run(async {
        let dialer = Dialer::start(config).await.expect("started");
        let e = dialer
            .dial_timeout("127.0.0.1", 9, Duration::from_secs(20))
            .await
            .expect_err("the host key is not trusted");
        assert!(matches!(e, DialError::HostKey(_)), "{e:?}");
    });
}

#[test]
fn embed_dial_refused_login_is_reported_as_auth_when_the_wait_runs_out() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let stranger = UserKey::generate(KeyKind::Ed25519);
    run(async {
        let dialer = Dialer::start(config(&sshd, &stranger))
            .await
            .expect("started");
        let e = dialer
            .dial_timeout("127.0.0.1", 9, Duration::from_secs(4))
            .await
            .expect_err("the key is not authorized");
        assert!(matches!(e, DialError::Auth(_)), "{e:?}");
    });
}

#[test]
fn embed_dial_unreachable_bastion_times_out() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let port = ssh_interop_tests::free_port();
    let config = TunnelConfig::builder("127.0.0.1", "nobody")
        .port(port)
        .identity_file(key.private_key_path())
        .build()
        .expect("config");
    run(async {
        let dialer = Dialer::start(config).await.expect("started");
        let wait = Duration::from_secs(2);
        let started = Instant::now();
        let e = dialer
            .dial_timeout("127.0.0.1", 9, wait)
            .await
            .expect_err("nothing listens");
        assert_eq!(e, DialError::Timeout(wait));
        assert!(started.elapsed() < Duration::from_secs(5));
    });
}

/// The name the TLS PostgreSQL's certificate is for (the bastion reaches it as 127.0.0.1).
const DB_NAME: &str = "db.internal";
/// A name its certificate does not carry.
const OTHER_NAME: &str = "other.internal";
const EXAMPLE_LIMIT: Duration = Duration::from_secs(60);

static PG_PLAIN: LazyLock<Postgres> = LazyLock::new(|| {
    let pg = Postgres::start();
    pg.stop_at_process_exit();
    pg
});

static PG_TLS: LazyLock<Postgres> = LazyLock::new(|| {
    let pg = Postgres::start_with_ca_signed_certificate(DB_NAME);
    pg.stop_at_process_exit();
    pg
});

static MARIADB: LazyLock<Mariadb> = LazyLock::new(|| {
    let db = Mariadb::start();
    db.stop_at_process_exit();
    db
});

/// One of forwarder's examples, as cargo built it for this package (`lab-<name>`), next to
/// this test binary's directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = profile_dir.join("examples").join(format!("lab-{name}"));
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../forwarder/examples")
        .join(format!("{}.rs", name.replace('-', "_")));
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (modified(&path), modified(&source)) {
        (Some(built), Some(written)) => built >= written,
        (Some(_), None) => true,
        (None, _) => false,
    };
    assert!(
        fresh,
        "{} is missing or older than {}: build the examples with `cargo build -p \
         ssh-interop-tests --examples` (`cargo test` and `cargo nextest run` on this package \
         do; `cargo test --test embed_dial` alone does not)",
        path.display(),
        source.display()
    );
    path
}

/// The settings every example reads for the bastion.
fn example_command(name: &str, sshd: &Sshd, key: &UserKey) -> Command {
    let mut cmd = Command::new(example(name));
    cmd.env("BASTION", sshd.host())
        .env("BASTION_PORT", sshd.port().to_string())
        .env("BASTION_USER", sshd.user())
        .env("BASTION_IDENTITY", key.private_key_path())
        .env("BASTION_KNOWN_HOSTS", sshd.known_hosts_path());
    cmd
}

/// `dial_postgres` aimed at `pg` (reached as 127.0.0.1 from the bastion) as the app role.
fn dial_postgres(sshd: &Sshd, key: &UserKey, pg: &Postgres, sql: &str) -> Command {
    let mut cmd = example_command("dial-postgres", sshd, key);
    cmd.env("PG_HOST", "127.0.0.1")
        .env("PG_PORT", pg.port().to_string())
        .env("PG_USER", APP_USER)
        .env("PG_PASSWORD", APP_PASSWORD)
        .env("PG_DBNAME", APP_DB)
        .arg(sql);
    cmd
}

fn output_text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim_end().to_owned(),
    )
}

#[test]
fn embed_dial_example_dial_postgres_queries_with_tokio_postgres_over_a_dialed_stream() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = &*PG_PLAIN;
    let out = run_bounded(
        &mut dial_postgres(&sshd, &key, pg, CUSTOMERS_QUERY),
        EXAMPLE_LIMIT,
        "the dial_postgres example",
    );
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "dial_postgres failed: {stderr}");
    assert_eq!(stdout, expected_customers());
}

#[test]
fn embed_dial_example_mysql_greeting_reads_mariadbs_greeting_through_the_bastion() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let db = &*MARIADB;
    let version = db.sql("SELECT VERSION()");
    let mut cmd = example_command("mysql-greeting", &sshd, &key);
    cmd.env("MYSQL_HOST", "127.0.0.1")
        .env("MYSQL_PORT", db.port().to_string());
    let out = run_bounded(&mut cmd, EXAMPLE_LIMIT, "the mysql_greeting example");
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "mysql_greeting failed: {stderr}");
    assert!(
        stdout.starts_with("protocol 10, server ")
            && stdout.contains(&format!("{version}, connection ")),
        "greeting {stdout:?}, server version {version:?}"
    );
}

/// libpq's verify-full through a local port: the host name checked is `host=`, the address
/// connected to is `hostaddr=` (the tunnel's local port).
fn psql_verify_full(local_port: u16, name: &str, ca: &std::path::Path) -> Result<String, String> {
    let conninfo = format!(
        "host={name} hostaddr=127.0.0.1 port={local_port} user={APP_USER} dbname={APP_DB} \
         sslmode=verify-full sslrootcert={}",
        ca.display()
    );
    try_psql_conninfo(
        &conninfo,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
}

#[test]
fn embed_dial_tls_verify_full_through_a_local_port_with_libpq() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = &*PG_TLS;
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(pg.port())
        .start();
    let ca = pg.ca_cert_path();
    let ssl = psql_verify_full(tunnel.local_port(), DB_NAME, &ca).unwrap_or_else(|e| {
        panic!(
            "verify-full for {DB_NAME} through the tunnel failed: {e}\nforwarder log:\n{}",
            tunnel.log()
        )
    });
    assert_eq!(ssl, "t", "the session inside the tunnel is TLS");
    // The same certificate, asked for under another name: libpq refuses it.
    let refused = psql_verify_full(tunnel.local_port(), OTHER_NAME, &ca)
        .expect_err("verify-full must refuse a certificate for another name");
    assert!(
        refused.contains("does not match host name") && refused.contains(OTHER_NAME),
        "{refused}"
    );
    // Without the CA, the self-made chain is refused too.
    let dir = tempfile::tempdir().expect("temp dir");
    let stranger_ca = dir.path().join("empty.pem");
    std::fs::write(&stranger_ca, "").expect("write");
    assert!(psql_verify_full(tunnel.local_port(), DB_NAME, &stranger_ca).is_err());
}

#[test]
fn embed_dial_tls_verify_full_with_tokio_postgres_over_a_dialed_stream() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = &*PG_TLS;
    let ca = pg.ca_cert_path();
    let query = "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let mut cmd = dial_postgres(&sshd, &key, pg, query);
    cmd.env("PG_SSLROOTCERT", &ca).env("PG_TLS_NAME", DB_NAME);
    let out = run_bounded(&mut cmd, EXAMPLE_LIMIT, "dial_postgres with TLS");
    let (stdout, stderr) = output_text(&out);
    assert!(
        out.status.success(),
        "dial_postgres with TLS failed: {stderr}"
    );
    assert!(stdout.starts_with("t|TLSv1."), "{stdout:?}");

    // A certificate for another name than the one asked for: refused by the verifier.
    let mut cmd = dial_postgres(&sshd, &key, pg, query);
    cmd.env("PG_SSLROOTCERT", &ca)
        .env("PG_TLS_NAME", OTHER_NAME);
    let out = run_bounded(&mut cmd, EXAMPLE_LIMIT, "dial_postgres with a wrong name");
    let (stdout, stderr) = output_text(&out);
    assert!(
        !out.status.success(),
        "a certificate for {DB_NAME} was accepted for {OTHER_NAME}: {stdout}"
    );
    assert!(
        stderr.contains("not valid for name") && stderr.contains(OTHER_NAME),
        "{stderr}"
    );
    assert!(
        stdout.is_empty(),
        "no rows without a verified server: {stdout}"
    );
}

#[test]
fn embed_dial_unix_reaches_postgres_on_its_socket_with_tokio_postgres() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = &*PG_PLAIN;
    let socket = pg.socket_path().display().to_string();
    run(async {
        let dialer = Dialer::start(config(&sshd, &key)).await.expect("started");
        let stream = dialer
            .dial_unix_timeout(&socket, Duration::from_secs(20))
            .await
            .expect("dial the socket");
        // Socket connections are trusted in the lab's pg_hba: no password.
        let (client, connection) = tokio_postgres::Config::new()
            .user(APP_USER)
            .dbname(APP_DB)
            .connect_raw(stream, tokio_postgres::NoTls)
            .await
            .expect("log in over the socket");
        let driver = tokio::spawn(connection);
        let row = client
            .query_one("SELECT inet_client_addr() IS NULL, current_user::text", &[])
            .await
            .expect("query");
        let (on_socket, user): (bool, String) = (row.get(0), row.get(1));
        assert!(on_socket, "PostgreSQL saw a TCP connection, not its socket");
        assert_eq!(user, APP_USER);
        drop(client);
        let _ = driver.await;

        // No socket there: the bastion refuses the channel, and the error says so.
        match dialer
            .dial_unix_timeout("/nonexistent/.s.PGSQL.1", Duration::from_secs(20))
            .await
        {
            Err(DialError::ChannelRefused { description, .. }) => {
                assert_eq!(description, "open failed");
            }
            other => panic!("expected a refused channel, got {other:?}"),
        }
        dialer.shutdown().await;
    });
    assert!(
        sshd.log().contains(&format!(
            "server_request_direct_streamlocal: originator  port 0, target {socket}"
        )),
        "{}",
        sshd.log()
    );
}
