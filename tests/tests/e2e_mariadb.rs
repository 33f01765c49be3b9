//! End to end: the `mariadb` client against a real MariaDB through the forwarder and a real
//! sshd, as a BI tool or data platform reaches a MySQL-family database behind a bastion:
//! queries, a result of several megabytes, a connection per query, and TLS negotiated between
//! the client and the server through the tunnel.
//!
//! Each MariaDB (plain, and one offering TLS) is started once per test binary, in a `static`,
//! and stops when the test process exits (`stop_at_process_exit`); under nextest, which runs
//! each test in its own process, each test starts the server it uses. Every test has its own
//! sshd and tunnel, and the tests touch different tables, so they may share a server.

use std::process::Command;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use ssh_interop_tests::mariadb::{
    APP_DB, APP_PASSWORD, APP_USER, CUSTOMERS_QUERY, expected_customers, query_tcp, try_query_tcp,
};
use ssh_interop_tests::process::{require_program, run_bounded, run_ok};
use ssh_interop_tests::{ClientKind, KeyKind, Mariadb, Sshd, TunnelBuilder, UserKey};

/// Rows of the large answer, each 1 MiB of text (32 768 copies of an MD5 digest).
const LARGE_ROWS: usize = 8;
const LARGE_ROW_BYTES: usize = 32 * 32_768;
/// The large answer: `seq <TAB> 1 MiB` per row.
const LARGE_QUERY: &str = "SELECT seq, REPEAT(MD5(seq), 32768) FROM seq_1_to_8 ORDER BY seq";
/// The server's SHA-256 of each large row, to check the rows against without moving them.
const LARGE_DIGESTS_QUERY: &str =
    "SELECT seq, SHA2(REPEAT(MD5(seq), 32768), 256) FROM seq_1_to_8 ORDER BY seq";
/// `mariadb -e` runs, one TCP connection (and one direct-tcpip channel) each.
const SEQUENTIAL_CONNECTIONS: usize = 50;
/// `mariadb-slap`: clients at once, and rounds of them.
const SLAP_CONCURRENCY: usize = 4;
const SLAP_ITERATIONS: usize = 5;
const SLAP_TIMEOUT: Duration = Duration::from_secs(120);

static MARIADB: LazyLock<Mariadb> = LazyLock::new(|| {
    let db = Mariadb::start();
    db.stop_at_process_exit();
    db.create_app_database();
    db
});

static MARIADB_TLS: LazyLock<Mariadb> = LazyLock::new(|| {
    let db = Mariadb::start_with_ssl();
    db.stop_at_process_exit();
    db.create_app_database();
    db
});

/// A forwarder tunnel through a fresh sshd to `db`.
fn tunnel_to(db: &Mariadb, kind: KeyKind) -> (Sshd, ssh_interop_tests::Tunnel) {
    let key = UserKey::generate(kind);
    let sshd = Sshd::start(&key);
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(db.port())
        .start();
    assert_ne!(tunnel.local_port(), db.port());
    (sshd, tunnel)
}

/// How many direct-tcpip channels to `target_port` sshd opened.
fn channels_to(sshd: &Sshd, target_port: u16) -> usize {
    sshd.log()
        .lines()
        .filter(|l| {
            l.contains("server_request_direct_tcpip: originator")
                && l.contains(&format!("target 127.0.0.1 port {target_port}"))
        })
        .count()
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn e2e_mariadb_queries_and_a_large_answer_through_the_forwarder_match_direct_answers() {
    let db = &*MARIADB;
    let (sshd, mut tunnel) = tunnel_to(db, KeyKind::Rsa4096);
    let port = tunnel.local_port();

    // The known rows, and a table created, filled and read back through the tunnel.
    assert_eq!(query_tcp(port, &[], CUSTOMERS_QUERY), expected_customers());
    assert_eq!(
        query_tcp(
            port,
            &[],
            "CREATE TABLE e2e_orders (id INT PRIMARY KEY, item VARCHAR(40), qty INT); \
             INSERT INTO e2e_orders VALUES (1, 'disk', 3), (2, 'cable', 10), (3, 'rack', 1); \
             UPDATE e2e_orders SET qty = qty + 1 WHERE id = 2; \
             SELECT id, item, qty FROM e2e_orders ORDER BY id"
        ),
        "1\tdisk\t3\n2\tcable\t11\n3\track\t1"
    );
    // The server has the table as written, seen straight from it.
    assert_eq!(
        db.sql(&format!("SELECT SUM(qty) FROM {APP_DB}.e2e_orders")),
        "15"
    );

    // 8 MiB in 8 rows: each row's SHA-256 as the server computes it, and the whole answer
    // byte for byte the same as straight from the server.
    let digests = query_tcp(db.port(), &[], LARGE_DIGESTS_QUERY);
    let started = Instant::now();
    let through = query_tcp(port, &[], LARGE_QUERY);
    let took = started.elapsed();
    let rows: Vec<(&str, &str)> = through
        .lines()
        .map(|l| l.split_once('\t').expect("two columns"))
        .collect();
    assert_eq!(rows.len(), LARGE_ROWS);
    for ((seq, value), digest_line) in rows.iter().zip(digests.lines()) {
        assert_eq!(value.len(), LARGE_ROW_BYTES, "row {seq}");
        assert_eq!(
            format!("{seq}\t{}", sha256_hex(value.as_bytes())),
            digest_line,
            "row {seq}'s SHA-256 differs from the server's"
        );
    }
    let direct = query_tcp(db.port(), &[], LARGE_QUERY);
    assert!(
        through == direct,
        "the answer through the tunnel differs: {} bytes vs {} direct",
        through.len(),
        direct.len()
    );
    eprintln!("{} bytes through the tunnel in {took:?}", through.len());

    // One login, one sshd session, a channel per client run (the direct runs do not count).
    let log = sshd.log();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
    assert_eq!(sshd.session_pids().len(), 1);
    assert_eq!(channels_to(&sshd, db.port()), 3, "{log}");
    assert_eq!(tunnel.exited(), None, "{}", tunnel.log());
}

#[test]
fn e2e_mariadb_a_connection_per_query_through_one_session() {
    let db = &*MARIADB;
    let (sshd, mut tunnel) = tunnel_to(db, KeyKind::Ed25519);
    let port = tunnel.local_port();

    // Connection per query, as pools and BI tools often do: the server sees the forwarded
    // connections come from the bastion (127.0.0.1), and each is a new connection.
    let mut connection_ids = std::collections::BTreeSet::new();
    for i in 0..SEQUENTIAL_CONNECTIONS {
        let sql = format!("SELECT {i} * 7, CURRENT_USER(), CONNECTION_ID()");
        let out = query_tcp(port, &[], &sql);
        let fields: Vec<&str> = out.split('\t').collect();
        assert_eq!(fields.len(), 3, "{out:?}");
        assert_eq!(fields[0], (i * 7).to_string());
        assert_eq!(fields[1], format!("{APP_USER}@%"));
        assert!(connection_ids.insert(fields[2].to_owned()), "{out:?}");
    }

    // mariadb-slap: several clients at once, a connection per client per round.
    let slap = require_program(
        "mariadb-slap",
        &[],
        "install the MariaDB client (apt-get install mariadb-client; scripts/test does this)",
    );
    let mut cmd = Command::new(slap);
    cmd.arg("--no-defaults")
        .args(["--protocol=tcp", "-h", "127.0.0.1", "-P", &port.to_string()])
        .args(["-u", APP_USER, &format!("-p{APP_PASSWORD}")])
        .arg(format!("--create-schema={APP_DB}"))
        .arg(format!("--concurrency={SLAP_CONCURRENCY}"))
        .arg(format!("--iterations={SLAP_ITERATIONS}"))
        .arg("--query=SELECT COUNT(*), SUM(id) FROM customers")
        .arg("--number-of-queries=40");
    let out = run_bounded(&mut cmd, SLAP_TIMEOUT, "mariadb-slap");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    assert!(
        stdout.contains(&format!(
            "Number of clients running queries: {SLAP_CONCURRENCY}"
        )),
        "{stdout}"
    );
    eprintln!("mariadb-slap through the tunnel:\n{stdout}");

    // Everything went through one SSH session, and the database still answers.
    let log = sshd.log();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
    assert_eq!(sshd.session_pids().len(), 1);
    let channels = channels_to(&sshd, db.port());
    assert!(
        channels >= SEQUENTIAL_CONNECTIONS + SLAP_CONCURRENCY * SLAP_ITERATIONS,
        "{channels} channels:\n{log}"
    );
    assert_eq!(query_tcp(port, &[], CUSTOMERS_QUERY), expected_customers());
    assert_eq!(tunnel.exited(), None, "{}", tunnel.log());
}

#[test]
fn e2e_mariadb_tls_is_negotiated_end_to_end_through_the_tunnel() {
    let db = &*MARIADB_TLS;
    let cert = db.tls_cert().expect("the server offers TLS");
    let (sshd, mut tunnel) = tunnel_to(db, KeyKind::EcdsaP256);
    let port = tunnel.local_port();
    let ca = format!("--ssl-ca={}", cert.display());
    // The client checks the server's certificate (signed for 127.0.0.1) over the tunnel, so
    // nothing on the way could have ended the TLS session in its place.
    let tls = ["--ssl", "--ssl-verify-server-cert", ca.as_str()];

    // The server's view of the session, and the client's, in one connection. A failure
    // shows what the forwarder, sshd and MariaDB logged, to tell which of them ended it.
    let sql = "SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_cipher', 'Ssl_version')";
    let out = try_query_tcp(port, &tls, sql).unwrap_or_else(|e| {
        panic!(
            "mariadb through the tunnel on 127.0.0.1:{port} failed on {sql:?}: {e}\n\
             forwarder (exited: {:?}):\n{}\nsshd:\n{}\nMariaDB:\n{}",
            tunnel.exited(),
            tunnel.log(),
            ssh_interop_tests::process::tail(&sshd.log(), 30),
            ssh_interop_tests::process::tail(&db.log(), 20),
        )
    });
    let status: std::collections::BTreeMap<&str, &str> =
        out.lines().filter_map(|l| l.split_once('\t')).collect();
    let cipher = status.get("Ssl_cipher").copied().unwrap_or_default();
    let version = status.get("Ssl_version").copied().unwrap_or_default();
    assert!(
        !cipher.is_empty(),
        "no TLS cipher on the server's side: {out:?}"
    );
    assert!(version.starts_with("TLSv1."), "{out:?}");
    eprintln!("TLS through the tunnel: {version} {cipher}");

    // The client reports the same cipher in use, and the data arrive over it.
    let client_status = query_tcp(port, &tls, "status");
    assert!(
        client_status.contains(&format!("Cipher in use is {cipher}")),
        "the client's status does not name {cipher}:\n{client_status}"
    );
    assert_eq!(query_tcp(port, &tls, CUSTOMERS_QUERY), expected_customers());

    // A certificate the client cannot trust is refused through the tunnel too: the check
    // above really ran against what the server sent.
    let other = tempfile::tempdir().expect("a temp dir");
    let wrong_ca = other.path().join("other-ca.pem");
    let mut openssl = Command::new(require_program("openssl", &[], "install openssl"));
    openssl
        .args(["req", "-x509", "-nodes", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-days", "1", "-subj", "/CN=localhost"])
        .args([
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
        ])
        .arg(other.path().join("other-ca.key"))
        .arg("-out")
        .arg(&wrong_ca);
    run_ok(&mut openssl, Duration::from_secs(60), "openssl req");
    let wrong = try_query_tcp(
        port,
        &[
            "--ssl",
            "--ssl-verify-server-cert",
            &format!("--ssl-ca={}", wrong_ca.display()),
        ],
        "SELECT 1",
    );
    let error = wrong.expect_err("a certificate from another CA was accepted");
    assert!(error.contains("SSL") || error.contains("TLS"), "{error}");

    // Without TLS the same server and tunnel carry a plain session, and say so.
    let plain = query_tcp(
        port,
        &["--skip-ssl"],
        "SHOW SESSION STATUS LIKE 'Ssl_cipher'",
    );
    // (The empty value's tab is trimmed with the trailing newline.)
    assert_eq!(plain, "Ssl_cipher", "a cipher without TLS?");

    let log = sshd.log();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
    assert_eq!(channels_to(&sshd, db.port()), 5, "{log}");
    assert_eq!(tunnel.exited(), None, "{}", tunnel.log());
}
