//! The `forwarder` command: options to configs, keys from files, host key policy, the TCP
//! connection, listeners, and exit codes (255 on failure, as `ssh` uses).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ssh_auth::AuthError;
use ssh_transport::ClientConfig;
use ssh_transport::cipher;
use ssh_transport::compress::Compression;
use ssh_transport::hostkey::{PublicKey, SignatureAlgorithm};
use ssh_transport::kex::KexAlgorithm;
use ssh_transport::mac;
use ssh_transport::random::OsRandom;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::algorithms;
use crate::cli::{self, BindTarget, Command, Options};
use crate::driver::{self, HostKeyVerifier};
use crate::known_hosts::{self, Decision, KnownHosts};
use crate::session::{ServerAlive, Session, SessionConfig, SessionError};
use crate::tunnel::{self, Target};
use crate::userauth;

/// Exit status for every failure, as `ssh` uses.
pub const EXIT_FAILURE: i32 = 255;

/// A failure that ends the program, with the message to print.
#[derive(Debug)]
pub struct Fatal(pub String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<std::io::Error> for Fatal {
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<ssh_auth::KeyFileError> for Fatal {
    fn from(e: ssh_auth::KeyFileError) -> Self {
        Self(e.to_string())
    }
}

/// Runs the command line; returns the exit status.
pub fn run(args: Vec<std::ffi::OsString>) -> i32 {
    let opts = match cli::parse_args(args) {
        Ok(Command::Help) => {
            print!("{}", cli::usage());
            return 0;
        }
        Ok(Command::Version) => {
            println!("{}", cli::version_text());
            return 0;
        }
        Ok(Command::Run(o)) => o,
        Ok(Command::Query(what)) => {
            return match algorithms::query(&what) {
                Some(names) => {
                    for n in names {
                        println!("{n}");
                    }
                    0
                }
                None => {
                    eprintln!(
                        "forwarder: -Q {what:?}: unknown query; try one of {}",
                        algorithms::QUERY_KINDS
                    );
                    EXIT_FAILURE
                }
            };
        }
        Ok(Command::Keygen(k)) => return crate::keygen::run(&k),
        Err(e) => {
            eprintln!("forwarder: {e}");
            return EXIT_FAILURE;
        }
    };
    init_logging(&opts);
    for w in &opts.warnings {
        eprintln!("forwarder: warning: {w}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("forwarder: cannot start the async runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    let result = runtime.block_on(run_async(opts));
    // A prompt still waiting (the session ended under it) must not leave echo off, nor keep
    // the program from exiting.
    crate::prompt::restore_terminal();
    runtime.shutdown_background();
    match result {
        Ok(()) => 0,
        Err(Fatal(msg)) => {
            eprintln!("forwarder: {msg}");
            EXIT_FAILURE
        }
    }
}

fn init_logging(opts: &Options) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(opts.log_level.tracing_filter())
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .try_init();
}

/// Algorithm lists from the options, with host key algorithms ordered to prefer the types
/// already known for this host (as OpenSSH does), so a known host never fails over a type.
pub fn transport_config(opts: &Options, known_types: &[String]) -> Result<ClientConfig, Fatal> {
    let mut cfg = ClientConfig::default();
    if let Some(spec) = &opts.ciphers {
        let default: Vec<&str> = cfg.ciphers.iter().map(|c| c.name).collect();
        let all: Vec<&str> = cipher::ALL.iter().map(|c| c.name).collect();
        let names = algorithms::resolve("Ciphers", spec, &default, &all).map_err(fatal)?;
        cfg.ciphers = names.iter().filter_map(|n| cipher::by_name(n)).collect();
    }
    if let Some(spec) = &opts.kex_algorithms {
        let default: Vec<&str> = cfg.kex_algorithms.iter().map(|k| k.name()).collect();
        let all: Vec<&str> = KexAlgorithm::ALL.iter().map(|k| k.name()).collect();
        let names = algorithms::resolve("KexAlgorithms", spec, &default, &all).map_err(fatal)?;
        cfg.kex_algorithms = names
            .iter()
            .filter_map(|n| KexAlgorithm::from_name(n))
            .collect();
    }
    if let Some(spec) = &opts.host_key_algorithms {
        let default: Vec<&str> = cfg.host_key_algorithms.iter().map(|a| a.name()).collect();
        let all: Vec<&str> = SignatureAlgorithm::ALL.iter().map(|a| a.name()).collect();
        let names =
            algorithms::resolve("HostKeyAlgorithms", spec, &default, &all).map_err(fatal)?;
        cfg.host_key_algorithms = names
            .iter()
            .filter_map(|n| SignatureAlgorithm::from_name(n))
            .collect();
    }
    if let Some(spec) = &opts.macs {
        let default: Vec<&str> = cfg.macs.iter().map(|m| m.name).collect();
        let all: Vec<&str> = mac::ALL.iter().map(|m| m.name).collect();
        let names = algorithms::resolve("MACs", spec, &default, &all).map_err(fatal)?;
        cfg.macs = names.iter().filter_map(|n| mac::by_name(n)).collect();
    }
    if opts.compression {
        // As OpenSSH's `Compression yes`: delayed zlib first, `none` still accepted.
        cfg.compression = Compression::PREFERRED.to_vec();
    }
    let (known, rest): (Vec<_>, Vec<_>) = cfg
        .host_key_algorithms
        .iter()
        .partition(|a| known_types.iter().any(|t| t == a.key_type().name()));
    cfg.host_key_algorithms = known.into_iter().chain(rest).collect();
    if let Some(limit) = &opts.rekey_limit {
        let (bytes, time) = parse_rekey_limit(limit)?;
        cfg.rekey_limit = bytes;
        cfg.rekey_interval = time;
    }
    cfg.handshake_timeout = Some(opts.connect_timeout.unwrap_or(Duration::from_secs(30)));
    Ok(cfg)
}

fn fatal(e: impl std::fmt::Display) -> Fatal {
    Fatal(e.to_string())
}

/// `RekeyLimit bytes [time]`: sizes with K, M or G; `default` or `none` for no byte limit;
/// times with s, m, h, d or w (seconds without a unit).
pub fn parse_rekey_limit(s: &str) -> Result<(Option<u64>, Option<Duration>), Fatal> {
    let mut parts = s.split_whitespace();
    let bad = || {
        Fatal(format!(
            "bad RekeyLimit {s:?}: expected a size such as 1G and optionally a time such as 1h"
        ))
    };
    let size = parts.next().ok_or_else(bad)?;
    let bytes = match size {
        "default" | "none" => None,
        _ => {
            let (num, mult) = match size.chars().last() {
                Some('K' | 'k') => (&size[..size.len() - 1], 1u64 << 10),
                Some('M' | 'm') => (&size[..size.len() - 1], 1 << 20),
                Some('G' | 'g') => (&size[..size.len() - 1], 1 << 30),
                _ => (size, 1),
            };
            let n: u64 = num.parse().map_err(|_| bad())?;
            let b = n.checked_mul(mult).ok_or_else(bad)?;
            if b < 16 {
                return Err(bad());
            }
            Some(b)
        }
    };
    let time = match parts.next() {
        None | Some("none") => None,
        Some(t) => {
            let (num, mult) = match t.chars().last() {
                Some('s' | 'S') => (&t[..t.len() - 1], 1u64),
                Some('m' | 'M') => (&t[..t.len() - 1], 60),
                Some('h' | 'H') => (&t[..t.len() - 1], 3600),
                Some('d' | 'D') => (&t[..t.len() - 1], 86400),
                Some('w' | 'W') => (&t[..t.len() - 1], 604_800),
                _ => (t, 1),
            };
            let n: u64 = num.parse().map_err(|_| bad())?;
            let secs = n.checked_mul(mult).ok_or_else(bad)?;
            (secs > 0).then(|| Duration::from_secs(secs))
        }
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok((bytes, time))
}

/// Checks server host keys against known_hosts under StrictHostKeyChecking.
#[derive(Debug)]
pub struct KnownHostsVerifier {
    known: KnownHosts,
    host: String,
    port: u16,
    policy: cli::StrictHostKeyChecking,
    record_file: Option<PathBuf>,
    hash: bool,
}

impl HostKeyVerifier for KnownHostsVerifier {
    fn verify(&self, key: &PublicKey) -> Result<(), String> {
        let status = self.known.check(&self.host, self.port, key);
        match known_hosts::decide(
            status,
            self.policy,
            &self.host,
            self.port,
            key,
            self.record_file.as_deref(),
        ) {
            Decision::Trusted => Ok(()),
            Decision::TrustAndRecord { file } => {
                let mut salt = [0u8; 20];
                ssh_transport::random::SecureRandom::fill(&mut OsRandom, &mut salt);
                let line = known_hosts::entry_line(&self.host, self.port, key, self.hash, &salt);
                match known_hosts::append(&file, &line) {
                    Ok(()) => eprintln!(
                        "forwarder: warning: {}",
                        known_hosts::added_notice(&self.host, self.port, key, &file)
                    ),
                    Err(e) => eprintln!(
                        "forwarder: warning: could not record the host key in {}: {e}",
                        file.display()
                    ),
                }
                Ok(())
            }
            Decision::Refused(e) => Err(e.to_string()),
        }
    }
}

/// Binds the listeners for one forward. Loopback means 127.0.0.1 and, where the system has
/// IPv6, ::1; all interfaces means 0.0.0.0 and ::. IPv6 sockets are IPv6-only so that both
/// families can share the port, as OpenSSH does. The first address must bind; a missing IPv6
/// stack only drops the IPv6 listener.
async fn bind(
    target: &BindTarget,
    port: u16,
    family: cli::AddressFamily,
) -> std::io::Result<Vec<TcpListener>> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let (addrs, best_effort_after): (Vec<SocketAddr>, usize) = match target {
        BindTarget::Loopback => (
            vec![
                (Ipv4Addr::LOCALHOST, port).into(),
                (Ipv6Addr::LOCALHOST, port).into(),
            ],
            1,
        ),
        BindTarget::AllInterfaces => (
            vec![
                (Ipv4Addr::UNSPECIFIED, port).into(),
                (Ipv6Addr::UNSPECIFIED, port).into(),
            ],
            1,
        ),
        BindTarget::Address(a) => {
            let v: Vec<SocketAddr> = tokio::net::lookup_host((a.as_str(), port)).await?.collect();
            let n = v.len();
            (v, n)
        }
    };
    let addrs: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match family {
            cli::AddressFamily::Any => true,
            cli::AddressFamily::Inet => a.is_ipv4(),
            cli::AddressFamily::Inet6 => a.is_ipv6(),
        })
        .collect();
    let mut out = Vec::new();
    let mut port = port;
    for (i, mut a) in addrs.into_iter().enumerate() {
        // With port 0 the second family listens on the port the first one got.
        a.set_port(port);
        match listen(a) {
            Ok(l) => {
                if port == 0 {
                    port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                }
                out.push(l);
            }
            Err(e) if i >= best_effort_after && !out.is_empty() => {
                debug!(address = %a, error = %e, "not listening on this address");
            }
            Err(e) => return Err(e),
        }
    }
    if out.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "no address of the requested family",
        ));
    }
    Ok(out)
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

async fn connect(opts: &Options) -> Result<TcpStream, Fatal> {
    let host = opts.destination_host.as_str();
    let port = opts.port;
    let attempt = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Fatal(format!("could not resolve hostname {host}: {e}")))?
            .filter(|a| match opts.address_family {
                cli::AddressFamily::Any => true,
                cli::AddressFamily::Inet => a.is_ipv4(),
                cli::AddressFamily::Inet6 => a.is_ipv6(),
            })
            .collect();
        let mut last = None;
        for a in &addrs {
            debug!(address = %a, "connecting");
            match TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(Fatal(match last {
            Some(e) => format!("connect to host {host} port {port}: {e}"),
            None => format!("could not resolve hostname {host}: no usable address"),
        }))
    };
    match opts.connect_timeout {
        Some(t) => tokio::time::timeout(t, attempt).await.map_err(|_| {
            Fatal(format!(
                "connect to host {host} port {port}: timed out after {} s (ConnectTimeout)",
                t.as_secs()
            ))
        })?,
        None => attempt.await,
    }
}

async fn run_async(opts: Options) -> Result<(), Fatal> {
    let started = Instant::now();
    let (known, warnings) = KnownHosts::load(&opts.user_known_hosts_files)?;
    for w in warnings {
        warn!("{w}");
    }
    let known_types = known.known_key_types(&opts.destination_host, opts.port);
    let transport = transport_config(&opts, &known_types)?;
    // Certificates' validity is judged by this clock; the auth crate has none.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (password, passphrase) = userauth::secret_sources(&opts);
    let prepared = userauth::prepare(&opts, &passphrase, now).await;
    let auth_helper = userauth::Helper::new(&opts, &prepared, password, passphrase);
    let unusable = prepared.unusable.clone();
    let auth = userauth::auth_config(&opts, prepared.identities, now).map_err(Fatal)?;

    // Listen first: a port that cannot be bound is known before any network traffic, and a
    // client that connects early waits for the session instead of being refused.
    let mut listeners = Vec::new();
    for fwd in &opts.local_forwards {
        match bind(
            &fwd.bind_target(opts.gateway_ports),
            fwd.bind_port,
            opts.address_family,
        )
        .await
        {
            Ok(ls) => {
                for l in ls {
                    debug!(listen = ?l.local_addr().ok(), forward = %fwd, "listening");
                    listeners.push((l, fwd.clone()));
                }
            }
            Err(e) => {
                let msg = format!("cannot listen for -L {fwd}: {e}");
                if opts.exit_on_forward_failure {
                    return Err(Fatal(format!("{msg} (ExitOnForwardFailure)")));
                }
                eprintln!("forwarder: warning: {msg}");
            }
        }
    }

    let stream = connect(&opts).await?;
    let _ = stream.set_nodelay(true);
    debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "connected"
    );
    let verifier = Arc::new(KnownHostsVerifier {
        known,
        host: opts.destination_host.clone(),
        port: opts.port,
        policy: opts.strict_host_key_checking,
        record_file: opts.known_hosts_record_file().map(Path::to_path_buf),
        hash: opts.hash_known_hosts,
    });
    let session = Session::new(
        SessionConfig {
            transport,
            connection: ssh_connection::Config::default(),
            auth,
            server_alive: opts.server_alive_interval.map(|interval| ServerAlive {
                interval,
                count_max: opts.server_alive_count_max,
            }),
        },
        Box::new(OsRandom),
        Instant::now(),
    );
    let (handle, driver) =
        driver::start_with_auth(stream, session, verifier, Arc::new(auth_helper));
    let mut driver = tokio::spawn(driver);
    for (listener, fwd) in listeners {
        let target = Target {
            host: fwd.host.clone(),
            port: fwd.host_port,
        };
        tokio::spawn(tunnel::serve(listener, handle.clone(), target));
    }
    // A refusal names the key files that could not even be offered, too.
    let failed = |e: SessionError| match e {
        SessionError::Auth(AuthError::Refused(mut refusal)) => {
            refusal.unusable = unusable.clone();
            Fatal(refusal.to_string())
        }
        e => Fatal(e.to_string()),
    };
    tokio::select! {
        auth = handle.authenticated() => {
            auth.map_err(failed)?;
            let log = handle.log();
            debug!(
                "authenticated to {}:{} as {} in {} ms",
                opts.destination_host,
                opts.port,
                opts.user,
                log.auth_time.unwrap_or_default().as_millis()
            );
        }
        r = &mut driver => {
            return Err(match r {
                Ok(Err(e)) => failed(e),
                Ok(Ok(())) => Fatal("the session ended".into()),
                Err(e) => Fatal(format!("the session task failed: {e}")),
            });
        }
        _ = shutdown_signal() => {
            // Perhaps at a password prompt: put the terminal back and leave politely.
            crate::prompt::restore_terminal();
            handle.disconnect("forwarder exiting");
            let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
            return Err(Fatal("interrupted during authentication".into()));
        }
    }
    tokio::select! {
        r = &mut driver => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Fatal(e.to_string())),
            Err(e) => Err(Fatal(format!("the session task failed: {e}"))),
        },
        _ = shutdown_signal() => {
            debug!("signal received, disconnecting");
            handle.disconnect("forwarder exiting");
            let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Environment, parse_args_with_env};
    use ssh_transport::compress::Compression;

    fn options(args: &[&str]) -> Options {
        let env = Environment {
            home: Some(PathBuf::from("/nonexistent-home")),
            user: Some("tester".into()),
        };
        let mut all = args.to_vec();
        all.push("bastion");
        match parse_args_with_env(all, &env) {
            Ok(Command::Run(o)) => o,
            other => panic!("{other:?}"),
        }
    }

    fn config(args: &[&str], known: &[&str]) -> ClientConfig {
        let known: Vec<String> = known.iter().map(|s| (*s).to_owned()).collect();
        transport_config(&options(args), &known).unwrap()
    }

    fn host_keys(cfg: &ClientConfig) -> Vec<&'static str> {
        cfg.host_key_algorithms.iter().map(|a| a.name()).collect()
    }

    #[test]
    fn defaults_have_no_sha1_no_compression_and_post_quantum_kex_first() {
        let cfg = config(&[], &[]);
        assert_eq!(cfg.kex_algorithms[0].name(), "mlkem768x25519-sha256");
        assert!(cfg.macs.iter().all(|m| !m.is_sha1()));
        assert!(!host_keys(&cfg).contains(&"ssh-rsa"));
        assert_eq!(cfg.compression, [Compression::None]);
        assert_eq!(host_keys(&cfg)[0], "ssh-ed25519");
    }

    #[test]
    fn host_key_types_known_for_the_host_go_first_in_their_own_order() {
        let cfg = config(&[], &["ecdsa-sha2-nistp384", "ssh-rsa"]);
        assert_eq!(
            host_keys(&cfg)[..3],
            ["rsa-sha2-512", "rsa-sha2-256", "ecdsa-sha2-nistp384"]
        );
        assert_eq!(
            host_keys(&cfg).len(),
            config(&[], &[]).host_key_algorithms.len()
        );
        // A known type outside the configured list is not added back.
        let cfg = config(&["-o", "HostKeyAlgorithms=ssh-ed25519"], &["ssh-rsa"]);
        assert_eq!(host_keys(&cfg), ["ssh-ed25519"]);
    }

    #[test]
    fn macs_compression_and_lists_reach_the_transport() {
        let cfg = config(&["-m", "+hmac-sha1"], &[]);
        assert_eq!(cfg.macs.last().unwrap().name, "hmac-sha1");
        let cfg = config(&["-o", "MACs=^hmac-sha2-512"], &[]);
        assert_eq!(cfg.macs[0].name, "hmac-sha2-512");
        assert_eq!(cfg.macs.len(), 4);
        let cfg = config(&["-o", "MACs=-*-etm@openssh.com"], &[]);
        assert!(cfg.macs.iter().all(|m| !m.etm), "{:?}", cfg.macs);
        assert_eq!(
            config(&["-C"], &[]).compression,
            [
                Compression::ZlibOpenssh,
                Compression::Zlib,
                Compression::None
            ]
        );
        assert_eq!(
            config(&["-o", "Compression=yes"], &[]).compression,
            Compression::PREFERRED
        );
        let cfg = config(&["-o", "KexAlgorithms=-sntrup*,mlkem*"], &[]);
        assert_eq!(cfg.kex_algorithms[0].name(), "curve25519-sha256");
        let cfg = config(&["-c", "aes256-ctr"], &[]);
        assert_eq!(cfg.ciphers.len(), 1);
        let bad = transport_config(&options(&["-m", "hmac-md5"]), &[]).unwrap_err();
        assert!(bad.0.contains("hmac-md5"), "{}", bad.0);
    }

    #[test]
    fn rekey_limit_in_openssh_units() {
        let mib = |n: u64| n << 20;
        assert_eq!(parse_rekey_limit("1G").unwrap(), (Some(1 << 30), None));
        assert_eq!(
            parse_rekey_limit("512M 1h").unwrap(),
            (Some(mib(512)), Some(Duration::from_secs(3600)))
        );
        assert_eq!(
            parse_rekey_limit("default 30m").unwrap(),
            (None, Some(Duration::from_secs(1800)))
        );
        assert_eq!(
            parse_rekey_limit("64K none").unwrap(),
            (Some(64 << 10), None)
        );
        assert_eq!(
            parse_rekey_limit("100 2w").unwrap().1,
            Some(Duration::from_secs(1_209_600))
        );
        for bad in ["", "lots", "1T", "8", "1G 1y", "1G 1h 3", "99999999999999G"] {
            assert!(parse_rekey_limit(bad).is_err(), "{bad:?}");
        }
        let cfg = config(&["-o", "RekeyLimit=4M 10s"], &[]);
        assert_eq!(cfg.rekey_limit, Some(mib(4)));
        assert_eq!(cfg.rekey_interval, Some(Duration::from_secs(10)));
    }
}
