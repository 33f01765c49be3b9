//! The demo: a throwaway bastion (real sshd) and database (real PostgreSQL) on loopback, a
//! tunnel through the bastion with `forwarder -N -L` (or OpenSSH's `ssh`, to compare), and a
//! SQL query through the tunnel. Run by `scripts/demo`; everything is torn down at the end.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ssh_interop_tests::client::READY_TIMEOUT;
use ssh_interop_tests::postgres::CUSTOMERS_QUERY;
use ssh_interop_tests::{ClientKind, KeyKind, Postgres, Sshd, TunnelBuilder, UserKey, try_psql};

const USAGE: &str = "\
usage: demo [--client forwarder|openssh] [--forwarder PATH] [--key KIND] [--full-log]

  --client      which SSH client makes the tunnel (default: forwarder)
  --forwarder   the forwarder binary (default: $FORWARDER_BIN, else next to this program)
  --key         user key type: rsa2048 rsa3072 rsa4096 ed25519 ecdsa256 ecdsa384 ecdsa521
                (default: rsa4096)
  --full-log    print the client's whole -v log instead of the interesting lines";

struct Args {
    client: ClientKind,
    forwarder: Option<PathBuf>,
    key: KeyKind,
    full_log: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        client: ClientKind::Forwarder,
        forwarder: None,
        key: KeyKind::Rsa4096,
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

    step("database: starting PostgreSQL");
    let t = Instant::now();
    let pg = Postgres::start();
    println!(
        "   listening on 127.0.0.1:{} (database appdb, role app; {:.1} s)",
        pg.port(),
        t.elapsed().as_secs_f64()
    );

    step("known_hosts: trusting the bastion's host keys");
    println!("   {}", sshd.known_hosts_path().display());
    for line in sshd.known_hosts().lines() {
        println!("   {}", shorten(line, 100));
    }

    step(&format!("tunnel: starting {}", args.client));
    let mut builder = TunnelBuilder::new(args.client, &sshd, &key)
        .verbose()
        .forward_to(pg.port());
    if let Some(path) = &args.forwarder {
        builder = builder.program(path);
    }
    println!("   $ {}", builder.command_line());
    let mut tunnel = builder.spawn();
    let ready = tunnel.wait_ready(READY_TIMEOUT);
    println!(
        "   127.0.0.1:{} is forwarded to 127.0.0.1:{} after {} ms (process start to listening)",
        tunnel.local_port(),
        pg.port(),
        ready.as_millis()
    );

    step(&format!("query through the tunnel: {CUSTOMERS_QUERY}"));
    let t = Instant::now();
    let answer = try_psql(tunnel.local_port(), CUSTOMERS_QUERY);
    let ok = match &answer {
        Ok(rows) => {
            println!("   {} ms", t.elapsed().as_millis());
            println!("   id | name");
            for row in rows.lines() {
                let (id, name) = row.split_once('|').unwrap_or((row, ""));
                println!("   {id:>2} | {name}");
            }
            true
        }
        Err(e) => {
            println!("   psql failed: {e}");
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
    drop(pg);
    drop(sshd);
    println!("   PostgreSQL and sshd stopped, temp dirs removed");
    println!("\n{}", if ok { "demo OK" } else { "demo FAILED" });
    ok
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
