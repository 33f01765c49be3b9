//! End to end: `psql` against a real PostgreSQL 15 through the forwarder and a real sshd,
//! the way a BI tool or data platform reaches a database behind a bastion.

use std::time::{Duration, Instant};

use ssh_interop_tests::postgres::CUSTOMERS_QUERY;
use ssh_interop_tests::{
    ClientKind, KeyKind, Postgres, Sshd, TunnelBuilder, UserKey, expected_customers, psql,
};

/// A query whose answer is 6.4 MB of text: 200 000 MD5 digests in one value.
const LARGE_QUERY: &str =
    "SELECT string_agg(md5(g::text), '' ORDER BY g) FROM generate_series(1, 200000) g";
const SEQUENTIAL_CONNECTIONS: usize = 20;

#[test]
fn e2e_postgres_queries_through_the_forwarder_match_direct_answers() {
    // The key data platforms typically hand out.
    let key = UserKey::generate(KeyKind::Rsa4096);
    let sshd = Sshd::start(&key);
    let pg = Postgres::start();
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(pg.port())
        .start();
    let port = tunnel.local_port();
    assert_ne!(port, pg.port());

    // The known rows.
    assert_eq!(psql(port, CUSTOMERS_QUERY), expected_customers());

    // A large answer, byte for byte the same as straight from the server.
    let started = Instant::now();
    let through = psql(port, LARGE_QUERY);
    let took = started.elapsed();
    let direct = pg.psql(LARGE_QUERY);
    assert_eq!(direct.len(), 200_000 * 32, "the direct answer's size");
    assert!(
        through == direct,
        "the answer through the tunnel differs: {} bytes vs {} direct",
        through.len(),
        direct.len()
    );
    eprintln!("{} bytes through the tunnel in {took:?}", through.len());

    // Connection per query, as pools and BI tools often do, through the one forwarder.
    for i in 0..SEQUENTIAL_CONNECTIONS {
        let sql = format!("SELECT {i} * 7, current_user, inet_client_addr()");
        assert_eq!(psql(port, &sql), format!("{}|app|127.0.0.1", i * 7));
    }

    // All of it went through one SSH session: one login, one sshd session process, and a
    // direct-tcpip channel to PostgreSQL per psql run.
    let log = sshd.log();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
    assert_eq!(sshd.session_pids().len(), 1);
    let psql_runs = 2 + SEQUENTIAL_CONNECTIONS;
    let channels = log
        .lines()
        .filter(|l| {
            l.contains("server_request_direct_tcpip: originator")
                && l.contains(&format!("target 127.0.0.1 port {}", pg.port()))
        })
        .count();
    assert_eq!(channels, psql_runs, "one channel per psql run:\n{log}");
    assert!(
        tunnel.peak_rss_kib().is_some(),
        "the forwarder is still running"
    );
}

#[test]
fn e2e_postgres_wrong_password_and_slow_query_pass_through_and_tunnel_stays_up() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = Postgres::start();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(pg.port())
        .start();
    let port = tunnel.local_port();

    // A wrong database password fails inside PostgreSQL's protocol, end to end, and says so.
    let psql_program = ssh_interop_tests::process::require_program(
        "psql",
        &[],
        "install the PostgreSQL 15 client (apt-get install postgresql-client-15; scripts/test does this)",
    );
    let mut wrong = std::process::Command::new(psql_program);
    wrong
        .args(["-X", "-w", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "app", "-d", "appdb", "-c", "SELECT 1"])
        .env("PGPASSWORD", "not-the-password")
        .env("PGPASSFILE", "/dev/null");
    let out = ssh_interop_tests::process::run_bounded(&mut wrong, Duration::from_secs(30), "psql");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A query that keeps the channel quiet for a few seconds before answering.
    assert_eq!(
        psql(port, "SELECT pg_sleep(3), 'still here'"),
        "|still here"
    );
    assert_eq!(psql(port, CUSTOMERS_QUERY), expected_customers());
    assert_eq!(tunnel.exited(), None, "{}", tunnel.log());
}
