//! End to end: forwarder's database probes against a real PostgreSQL 15 (TLS off and on), a
//! real MariaDB, and services that are not the expected database. The point beyond "the
//! answer is right": a probe runs every few seconds forever, so after many probes the
//! database's log must not have gained a line, and MariaDB must not have counted a handshake
//! error against the client's address (`max_connect_errors`).
//!
//! MariaDB counts no errors for 127.0.0.1 and ::1 (its host cache skips loopback), so the
//! MariaDB tests also probe from 127.0.0.2 and 127.0.0.3: still this machine, but addresses
//! the server treats like any remote host.
//!
//! Each database is started once per test binary and shared (a `static`); a lock per server
//! keeps one test at a time on it, since the tests compare its log before and after. The
//! servers stop when the test process exits (`stop_at_process_exit`). Under nextest, which
//! runs each test in its own process, each test starts the servers it uses.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use forwarder::probe::{self, MysqlLogin, ProbeKind, ProbeSpec};
use ssh_interop_tests::mariadb::{PROBE_PASSWORD, PROBE_USER};
use ssh_interop_tests::process::{tail, wait_until};
use ssh_interop_tests::{KeyKind, Mariadb, Postgres, Sshd, UserKey};

/// Probes per variant before the logs are compared.
const PROBES: usize = 20;
/// How long a server gets to write a log line about a connection that has ended.
const LOG_SETTLE: Duration = Duration::from_millis(500);
const LOG_WAIT: Duration = Duration::from_secs(15);

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Not loopback to MariaDB: its host cache counts errors for it.
const REMOTE_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const REMOTE_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// A server started on first use and shared by the tests of this binary, and this test's
/// turn on it (a test that failed while holding the lock leaves the server usable).
fn shared<T>(
    server: &'static LazyLock<T>,
    lock: &'static Mutex<()>,
) -> (&'static T, MutexGuard<'static, ()>) {
    let turn = lock.lock().unwrap_or_else(|p| p.into_inner());
    (LazyLock::force(server), turn)
}

static PG_PLAIN: LazyLock<Postgres> = LazyLock::new(|| {
    let pg = Postgres::start();
    pg.stop_at_process_exit();
    pg
});
static PG_PLAIN_LOCK: Mutex<()> = Mutex::new(());

static PG_TLS: LazyLock<Postgres> = LazyLock::new(|| {
    let pg = Postgres::start_with_ssl();
    pg.stop_at_process_exit();
    pg
});
static PG_TLS_LOCK: Mutex<()> = Mutex::new(());

static MARIADB: LazyLock<Mariadb> = LazyLock::new(|| {
    let db = Mariadb::start();
    db.stop_at_process_exit();
    db
});
static MARIADB_LOCK: Mutex<()> = Mutex::new(());

fn postgres() -> (&'static Postgres, MutexGuard<'static, ()>) {
    shared(&PG_PLAIN, &PG_PLAIN_LOCK)
}

fn postgres_tls() -> (&'static Postgres, MutexGuard<'static, ()>) {
    shared(&PG_TLS, &PG_TLS_LOCK)
}

fn mariadb() -> (&'static Mariadb, MutexGuard<'static, ()>) {
    shared(&MARIADB, &MARIADB_LOCK)
}

fn spec(kind: ProbeKind) -> ProbeSpec {
    ProbeSpec::new(kind)
}

fn mysql_spec(user: &str, password: &str) -> ProbeSpec {
    ProbeSpec {
        mysql_login: Some(MysqlLogin {
            user: user.to_owned(),
            password: password.to_owned().into(),
        }),
        ..ProbeSpec::new(ProbeKind::Mysql)
    }
}

/// Connects from `source` to 127.0.0.1:`port` and runs the probe over the connection, as
/// the fleet runs it over a channel. Bounded: connect within 5 s, the probe within its
/// timeout (plus a margin checked here).
fn probe_from(source: Ipv4Addr, port: u16, spec: &ProbeSpec) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = Instant::now();
    let answer = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .unwrap_or_else(|e| panic!("bind {source}: {e}"));
        let target = SocketAddr::new(IpAddr::V4(LOOPBACK), port);
        let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(target))
            .await
            .unwrap_or_else(|_| panic!("connecting to {target} took over 5 s"))
            .unwrap_or_else(|e| panic!("connect to {target}: {e}"));
        probe::run(spec, stream).await
    });
    let took = started.elapsed();
    assert!(
        took < spec.timeout + Duration::from_secs(2),
        "the probe took {took:?}, its timeout is {:?}",
        spec.timeout
    );
    answer
}

fn probe(port: u16, spec: &ProbeSpec) -> Result<String, String> {
    probe_from(LOOPBACK, port, spec)
}

/// What a log gained since `before` (its earlier content), after letting the server finish.
fn log_gained(log: impl Fn() -> String, before: &str) -> String {
    thread::sleep(LOG_SETTLE);
    let now = log();
    now.get(before.len()..).unwrap_or_default().to_owned()
}

/// Waits until the log gains a line containing `needle` after `before`.
fn wait_for_log(log: impl Fn() -> String, before: &str, needle: &str) -> String {
    wait_until(
        LOG_WAIT,
        &format!("the log shows {needle:?}"),
        || {
            let now = log();
            let gained = now.get(before.len()..).unwrap_or_default();
            gained.contains(needle).then(|| gained.to_owned())
        },
        || format!("log ends with:\n{}", tail(&log(), 20)),
    )
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

#[test]
fn e2e_probe_postgres_without_tls_answers_n_and_logs_nothing() {
    let (pg, _turn) = postgres();
    let before = pg.log();
    for _ in 0..PROBES {
        assert_eq!(
            probe(pg.port(), &spec(ProbeKind::Postgres)),
            Ok("postgres: TLS not offered (answered N to the SSLRequest)".to_owned())
        );
    }
    let gained = log_gained(|| pg.log(), &before);
    assert!(
        gained.is_empty(),
        "{PROBES} probes left lines in PostgreSQL's log:\n{gained}"
    );

    // The check can see a line: a startup packet cut short is logged.
    let before = pg.log();
    let mut raw = std::net::TcpStream::connect((LOOPBACK, pg.port())).unwrap();
    raw.write_all(&[0, 0, 0, 40, 0, 3]).unwrap();
    drop(raw);
    wait_for_log(|| pg.log(), &before, "incomplete startup packet");
}

#[test]
fn e2e_probe_postgres_with_tls_completes_the_handshake_and_logs_nothing() {
    let (pg, _turn) = postgres_tls();
    let before = pg.log();
    for _ in 0..PROBES {
        let detail = probe(pg.port(), &spec(ProbeKind::Postgres)).unwrap();
        assert!(
            detail.starts_with("postgres: TLS offered, handshake completed (TLSv1_3, TLS13_"),
            "{detail}"
        );
    }
    let gained = log_gained(|| pg.log(), &before);
    assert!(
        gained.is_empty(),
        "{PROBES} TLS probes left lines in PostgreSQL's log:\n{gained}"
    );

    // The check can see a line: closing right after the server's `S` is logged, which is
    // why the probe completes the handshake and closes the session with close_notify.
    let before = pg.log();
    let mut raw = std::net::TcpStream::connect((LOOPBACK, pg.port())).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .unwrap();
    let mut answer = [0u8; 1];
    raw.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"S");
    drop(raw);
    wait_for_log(|| pg.log(), &before, "could not accept SSL connection");
}

#[test]
fn e2e_probe_postgres_with_a_p521_certificate_completes_the_handshake() {
    // The probe checks no signature, so a certificate whose key ring cannot verify (P-521)
    // must not fail it: the server can only sign with ecdsa_secp521r1_sha512, and a probe
    // that did not offer it failed the handshake while the database was healthy.
    let pg = Postgres::start_with_ssl_on_curve("secp521r1");
    pg.stop_at_process_exit();
    let before = pg.log();
    let detail = probe(pg.port(), &spec(ProbeKind::Postgres))
        .unwrap_or_else(|e| panic!("the probe failed against a P-521 certificate: {e}"));
    assert!(
        detail.starts_with("postgres: TLS offered, handshake completed (TLSv1_3, TLS13_"),
        "{detail}"
    );
    let gained = log_gained(|| pg.log(), &before);
    assert!(
        gained.is_empty(),
        "the probe left lines in PostgreSQL's log:\n{gained}"
    );
}

#[test]
fn e2e_probe_mysql_probe_at_postgres_finds_silence_and_logs_nothing() {
    let (pg, _turn) = postgres();
    let before = pg.log();
    let spec = ProbeSpec {
        timeout: Duration::from_secs(1),
        ..spec(ProbeKind::Mysql)
    };
    assert_eq!(
        probe(pg.port(), &spec),
        Err("nothing answered within 1 s".to_owned())
    );
    let gained = log_gained(|| pg.log(), &before);
    assert!(gained.is_empty(), "{gained}");
}

// ---------------------------------------------------------------------------------------------
// MariaDB

/// The host cache row for `ip`: (SUM_CONNECT_ERRORS, COUNT_HANDSHAKE_ERRORS,
/// COUNT_AUTHENTICATION_ERRORS), zeros when there is no row.
fn host_errors(db: &Mariadb, ip: Ipv4Addr) -> (u64, u64, u64) {
    let row = db.sql(&format!(
        "SELECT SUM_CONNECT_ERRORS, COUNT_HANDSHAKE_ERRORS, COUNT_AUTHENTICATION_ERRORS \
         FROM performance_schema.host_cache WHERE IP = '{ip}'"
    ));
    let numbers: Vec<u64> = row
        .split_whitespace()
        .map(|n| n.parse().unwrap_or_else(|e| panic!("{row:?}: {e}")))
        .collect();
    match numbers[..] {
        [] => (0, 0, 0),
        [a, b, c] => (a, b, c),
        _ => panic!("unexpected host_cache row {row:?}"),
    }
}

fn status(db: &Mariadb, name: &str) -> u64 {
    let row = db.sql(&format!("SHOW GLOBAL STATUS LIKE '{name}'"));
    row.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("status {name}: {row:?}"))
}

/// Probes once from `ip` with a login so that the server has resolved the address (its
/// first connection from a new address logs that the name could not be resolved, whoever
/// connects).
fn introduce(db: &Mariadb, ip: Ipv4Addr) {
    probe_from(ip, db.port(), &mysql_spec(PROBE_USER, PROBE_PASSWORD)).unwrap();
}

#[test]
fn e2e_probe_mysql_login_reports_the_version_and_leaves_no_trace() {
    let (db, _turn) = mariadb();
    introduce(db, REMOTE_A);
    let before = db.log();
    let aborted_before = status(db, "Aborted_connects");
    let host_before = host_errors(db, REMOTE_A);
    let spec = mysql_spec(PROBE_USER, PROBE_PASSWORD);
    for source in [LOOPBACK, REMOTE_A] {
        for _ in 0..PROBES {
            let detail = probe_from(source, db.port(), &spec).unwrap();
            assert!(
                detail.starts_with("mysql: MariaDB 1") && detail.ends_with(", logged in as probe"),
                "{detail}"
            );
        }
    }
    let gained = log_gained(|| db.log(), &before);
    assert!(
        gained.is_empty(),
        "{} login probes left lines in MariaDB's error log:\n{gained}",
        2 * PROBES
    );
    assert_eq!(status(db, "Aborted_connects"), aborted_before);
    assert_eq!(host_errors(db, REMOTE_A), host_before);
    assert_eq!(host_before, (0, 0, 0));
}

#[test]
fn e2e_probe_mysql_without_login_costs_a_logged_handshake_error_each() {
    // What the probe's docs say an unauthenticated probe costs, checked so a change in
    // MariaDB's behaviour shows up here.
    let (db, _turn) = mariadb();
    introduce(db, REMOTE_B);
    let before = db.log();
    let (_, handshakes_before, _) = host_errors(db, REMOTE_B);
    const N: usize = 3;
    for _ in 0..N {
        let detail = probe_from(REMOTE_B, db.port(), &spec(ProbeKind::Mysql)).unwrap();
        assert!(
            detail.starts_with("mysql: MariaDB 1") && detail.ends_with("(greeting only, no login)"),
            "{detail}"
        );
    }
    let gained = wait_until(
        LOG_WAIT,
        "one warning per unauthenticated probe",
        || {
            let now = db.log();
            let gained = now.get(before.len()..).unwrap_or_default().to_owned();
            (gained.matches("Aborted connection").count() >= N).then_some(gained)
        },
        || tail(&db.log(), 20),
    );
    assert!(
        gained
            .lines()
            .all(|l| l.contains("[Warning] Aborted connection")
                && l.contains("user: 'unauthenticated' host: '127.0.0.3'")),
        "{gained}"
    );
    let (sum, handshakes, _) = host_errors(db, REMOTE_B);
    assert_eq!(handshakes, handshakes_before + N as u64);
    assert_eq!(sum, N as u64, "counted against max_connect_errors");

    // A successful login from the host resets the count that blocks it.
    introduce(db, REMOTE_B);
    assert_eq!(host_errors(db, REMOTE_B).0, 0);

    // From loopback the same probe is logged but never counted.
    let before = db.log();
    probe(db.port(), &spec(ProbeKind::Mysql)).unwrap();
    wait_for_log(|| db.log(), &before, "host: 'localhost'");
    assert_eq!(host_errors(db, LOOPBACK), (0, 0, 0));
}

#[test]
fn e2e_probe_mysql_refusals_say_why() {
    let (db, _turn) = mariadb();
    let err = probe(db.port(), &mysql_spec(PROBE_USER, "wrong password")).unwrap_err();
    assert!(
        err.contains(
            "login as probe refused: error 1045 (28000): Access denied for user 'probe'@'localhost' (using password: YES)"
        ),
        "{err}"
    );

    // An account with another plugin: the server asks to switch, the probe says it cannot.
    match db.try_sql("INSTALL SONAME 'auth_ed25519'") {
        Ok(_) => {
            db.sql(
                "CREATE USER IF NOT EXISTS 'edprobe'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('pw')",
            );
            let err = probe(db.port(), &mysql_spec("edprobe", "pw")).unwrap_err();
            assert!(
                err.contains("asks for the client_ed25519 authentication plugin"),
                "{err}"
            );
        }
        Err(e) if e.contains("already installed") => {}
        Err(e) => eprintln!("skipping the ed25519 account: no auth_ed25519 plugin ({e})"),
    }
}

#[test]
fn e2e_probe_postgres_probe_at_mariadb_names_it() {
    let (db, _turn) = mariadb();
    let err = probe(db.port(), &spec(ProbeKind::Postgres)).unwrap_err();
    assert!(
        err.starts_with("expected PostgreSQL, got a MySQL server: MariaDB 1"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Not a database

/// A TCP server on loopback that greets each connection with `greeting` (if any), then
/// holds it until the client closes or 10 s pass, or with `close_at_once` closes it (after
/// reading for 200 ms).
struct FakeServer {
    port: u16,
}

impl FakeServer {
    fn start(greeting: Option<&'static [u8]>, close_at_once: bool) -> FakeServer {
        let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                thread::spawn(move || {
                    if let Some(greeting) = greeting {
                        let _ = conn.write_all(greeting);
                    }
                    if close_at_once {
                        // Take what the client sent first, so that closing is a FIN, not
                        // a reset for unread data.
                        let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                        let _ = conn.read(&mut [0u8; 512]);
                        return;
                    }
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut sink = [0u8; 512];
                    while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
                });
            }
        });
        FakeServer { port }
    }
}

#[test]
fn e2e_probe_at_sshd_names_an_ssh_server() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let err = probe(sshd.port(), &spec(ProbeKind::Postgres)).unwrap_err();
    assert!(
        err.starts_with("expected PostgreSQL, got an SSH server: SSH-2.0-OpenSSH_"),
        "{err}"
    );
    let err = probe(sshd.port(), &spec(ProbeKind::Mysql)).unwrap_err();
    assert!(
        err.starts_with("expected MySQL, got an SSH server: SSH-2.0-OpenSSH_"),
        "{err}"
    );
    assert_eq!(
        probe(sshd.port(), &spec(ProbeKind::Tcp)),
        Ok("tcp: channel opened".to_owned())
    );
}

#[test]
fn e2e_probe_at_http_silent_and_closing_servers_fails_in_time() {
    let http = FakeServer::start(Some(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), false);
    assert_eq!(
        probe(http.port, &spec(ProbeKind::Postgres)),
        Err("expected PostgreSQL, got an HTTP server: HTTP/1.1 200 OK".to_owned())
    );
    assert_eq!(
        probe(http.port, &spec(ProbeKind::Mysql)),
        Err("expected MySQL, got an HTTP server: HTTP/1.1 200 OK".to_owned())
    );

    let silent = FakeServer::start(None, false);
    let quick = |kind| ProbeSpec {
        timeout: Duration::from_millis(1500),
        ..spec(kind)
    };
    for kind in [ProbeKind::Postgres, ProbeKind::Mysql] {
        let started = Instant::now();
        assert_eq!(
            probe(silent.port, &quick(kind)),
            Err("nothing answered within 1.5 s".to_owned())
        );
        assert!(started.elapsed() >= Duration::from_millis(1400));
    }

    let closing = FakeServer::start(None, true);
    for kind in [ProbeKind::Postgres, ProbeKind::Mysql] {
        assert_eq!(
            probe(closing.port, &spec(kind)),
            Err("connection closed before any answer".to_owned())
        );
    }
    assert_eq!(
        probe(closing.port, &spec(ProbeKind::None)),
        Ok("not probed".to_owned())
    );
}
