//! The demo: a throwaway bastion (real sshd) and database (real PostgreSQL, or MariaDB with
//! `--mysql`) on loopback, a tunnel through the bastion with `forwarder -N -L` (or OpenSSH's
//! `ssh`, to compare), and a SQL query through the tunnel. Run by `scripts/demo`; everything
//! is torn down at the end.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ssh_interop_tests::client::READY_TIMEOUT;
use ssh_interop_tests::postgres::CUSTOMERS_QUERY;
use ssh_interop_tests::{
    ClientKind, KeyKind, Mariadb, Postgres, Sshd, TunnelBuilder, UserKey, try_psql,
};

const USAGE: &str = "\
usage: demo [--client forwarder|openssh] [--forwarder PATH] [--key KIND] [--mysql] [--full-log]

  --client      which SSH client makes the tunnel (default: forwarder)
  --forwarder   the forwarder binary (default: $FORWARDER_BIN, else next to this program)
  --key         user key type: rsa2048 rsa3072 rsa4096 ed25519 ecdsa256 ecdsa384 ecdsa521
                (default: rsa4096)
  --mysql       the database is MariaDB (the mariadb client queries it) instead of PostgreSQL
  --full-log    print the client's whole -v log instead of the interesting lines";

struct Args {
    client: ClientKind,
    forwarder: Option<PathBuf>,
    key: KeyKind,
    mysql: bool,
    full_log: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        client: ClientKind::Forwarder,
        forwarder: None,
        key: KeyKind::Rsa4096,
        mysql: false,
        full_log: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--client" => {
                let v = value()?;
                args.client = ClientKind::parse(&v)
                    .ok_or_else(|| format!("unknown client {v:?}: use forwarder or openssh"))?;
            }
            "--forwarder" => args.forwarder = Some(PathBuf::from(value()?)),
            "--key" => {
                let v = value()?;
                args.key = KeyKind::parse(&v).ok_or_else(|| format!("unknown key kind {v:?}"))?;
            }
            "--mysql" => args.mysql = true,
            "--full-log" => args.full_log = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("demo: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if run(&args) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn step(text: &str) {
    println!("\n== {text}");
}

fn run(args: &Args) -> bool {
    step(&format!(
        "user key: generating {} with ssh-keygen",
        args.key
    ));
    let t = Instant::now();
    let key = UserKey::generate(args.key);
    println!(
        "   {} ({:.1} s)",
        key.fingerprint(),
        t.elapsed().as_secs_f64()
    );

    step("bastion: starting OpenSSH sshd with fresh host keys");
    let sshd = Sshd::start(&key);
    println!(
        "   listening on 127.0.0.1:{} for user {}",
        sshd.port(),
        sshd.user()
    );
    for host_key in sshd.host_keys() {
        println!(
            "   host key {:<20} {}",
            host_key.key_type(),
            host_key.fingerprint()
        );
    }

    let db = Database::start(args.mysql);

    step("known_hosts: trusting the bastion's host keys");
    println!("   {}", sshd.known_hosts_path().display());
    for line in sshd.known_hosts().lines() {
        println!("   {}", shorten(line, 100));
    }

    step(&format!("tunnel: starting {}", args.client));
    let mut builder = TunnelBuilder::new(args.client, &sshd, &key)
        .verbose()
        .forward_to(db.port());
    if let Some(path) = &args.forwarder {
        builder = builder.program(path);
    }
    println!("   $ {}", builder.command_line());
    let mut tunnel = builder.spawn();
    let ready = tunnel.wait_ready(READY_TIMEOUT);
    println!(
        "   127.0.0.1:{} is forwarded to 127.0.0.1:{} after {} ms (process start to listening)",
        tunnel.local_port(),
        db.port(),
        ready.as_millis()
    );

    step(&format!(
        "query through the tunnel ({}): {CUSTOMERS_QUERY}",
        db.client()
    ));
    let t = Instant::now();
    let answer = db.query(tunnel.local_port());
    let ok = match &answer {
        Ok(rows) => {
            println!("   {} ms", t.elapsed().as_millis());
            println!("   id | name");
            for row in rows.lines() {
                let (id, name) = row.split_once(['|', '\t']).unwrap_or((row, ""));
                println!("   {id:>2} | {name}");
            }
            true
        }
        Err(e) => {
            println!("   {} failed: {e}", db.client());
            false
        }
    };

    step(&format!("{} -v log", args.client));
    let log = tunnel.log();
    let shown: Vec<&str> = if args.full_log {
        log.lines().collect()
    } else {
        log.lines().filter(|l| interesting(l)).collect()
    };
    for line in &shown {
        println!("   {line}");
    }
    if !args.full_log {
        println!(
            "   ({} of {} lines; --full-log shows all)",
            shown.len(),
            log.lines().count()
        );
    }

    step("bastion's view");
    // sshd may write its channel line a moment after the query has its answer.
    let deadline = Instant::now() + Duration::from_secs(3);
    while ok && !sshd.log().contains("server_request_direct_tcpip") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for line in sshd.log().lines().filter(|l| {
        l.starts_with("Accepted publickey") || l.contains("server_request_direct_tcpip")
    }) {
        println!("   {line}");
    }

    step("teardown");
    let status = tunnel.terminate(Duration::from_secs(5));
    println!(
        "   {} stopped ({})",
        args.client,
        status.map_or("killed".to_owned(), |s| s.to_string())
    );
    drop(tunnel);
    let name = db.name();
    drop(db);
    drop(sshd);
    println!("   {name} and sshd stopped, temp dirs removed");
    println!("\n{}", if ok { "demo OK" } else { "demo FAILED" });
    ok
}

/// The database behind the bastion.
enum Database {
    Postgres(Postgres),
    Mariadb(Mariadb),
}

impl Database {
    /// Starts PostgreSQL, or MariaDB with the same `appdb.customers` table when `mysql`.
    fn start(mysql: bool) -> Database {
        let t = Instant::now();
        let db = if mysql {
            step("database: starting MariaDB");
            let db = Mariadb::start();
            db.create_app_database();
            Database::Mariadb(db)
        } else {
            step("database: starting PostgreSQL");
            Database::Postgres(Postgres::start())
        };
        let who = match db {
            Database::Postgres(_) => "role app",
            Database::Mariadb(_) => "user app",
        };
        println!(
            "   listening on 127.0.0.1:{} (database appdb, {who}; {:.1} s)",
            db.port(),
            t.elapsed().as_secs_f64()
        );
        db
    }

    fn port(&self) -> u16 {
        match self {
            Database::Postgres(pg) => pg.port(),
            Database::Mariadb(db) => db.port(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Database::Postgres(_) => "PostgreSQL",
            Database::Mariadb(_) => "MariaDB",
        }
    }

    /// The client program that queries it.
    fn client(&self) -> &'static str {
        match self {
            Database::Postgres(_) => "psql",
            Database::Mariadb(_) => "mariadb",
        }
    }

    /// The customers, through 127.0.0.1:`port`: `id|name` or `id<TAB>name` lines.
    fn query(&self, port: u16) -> Result<String, String> {
        match self {
            Database::Postgres(_) => try_psql(port, CUSTOMERS_QUERY),
            Database::Mariadb(_) => {
                ssh_interop_tests::mariadb::try_query_tcp(port, &[], CUSTOMERS_QUERY)
            }
        }
    }
}

/// The log lines that tell the story: versions, negotiated algorithms, host key check,
/// authentication, forwarding and timing.
fn interesting(line: &str) -> bool {
    const WORDS: [&str; 14] = [
        "version",
        "kex",
        "algorithm",
        "cipher",
        "host key",
        "known and matches",
        "authenticat",
        "forward",
        "listening",
        "handshake",
        "negotiat",
        "connected",
        "rekey",
        "elapsed",
    ];
    let lower = line.to_ascii_lowercase();
    // OpenSSH echoes the server's authorized_keys options ("port-forwarding") and channel
    // bookkeeping, which mention forwarding without telling anything new.
    const NOISE: [&str; 4] = [
        "kex_input_ext_info",
        "remote: ",
        "server debug message",
        "channel ",
    ];
    WORDS.iter().any(|w| lower.contains(w)) && !NOISE.iter().any(|n| lower.contains(n))
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(max).collect();
        s.push_str("...");
        s
    }
}
