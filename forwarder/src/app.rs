//! The `forwarder` command: options to configs, keys from files, host key policy, the TCP
//! connection, listeners, and exit codes (255 on failure, as `ssh` uses).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ssh_auth::AuthError;
use ssh_transport::hostkey::PublicKey;
use ssh_transport::random::OsRandom;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::algorithms;
use crate::cli::{self, BindTarget, Command, Options};
use crate::config::{self, SessionSpec, TunnelConfig};
use crate::driver::{self, HostKeyVerifier};
use crate::known_hosts::{self, Decision, KnownHosts};
use crate::session::{Session, SessionConfig, SessionError};
use crate::supervisor::{
    BastionGate, ConnectError, Connected, Connector, Outcome, Supervisor, SupervisorConfig,
    WaitError,
};
use crate::tunnel::{Target, Tunnel};
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

/// Makes the command line's sessions: TCP to the bastion, known_hosts read afresh, the
/// identities prepared once at start-up.
struct CliConnector {
    spec: SessionSpec,
    identities: Vec<ssh_auth::Identity>,
    helper: Arc<userauth::Helper>,
    unusable: Vec<String>,
}

impl std::fmt::Debug for CliConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CliConnector")
    }
}

impl CliConnector {
    async fn start(&self) -> Result<Connected, ConnectError> {
        let spec = &self.spec;
        let opts = &spec.options;
        let started = Instant::now();
        // Read each time: a host key that is no longer trusted is not trusted on reconnect.
        let (known, warnings) = KnownHosts::load(&opts.user_known_hosts_files)
            .map_err(|e| ConnectError::Permanent(e.to_string()))?;
        for w in warnings {
            warn!("{w}");
        }
        let known_types = known.known_key_types(&spec.host, spec.port);
        let transport = config::prefer_known_host_key_types(spec.transport.clone(), &known_types);
        // Certificates' validity is judged by this clock; the auth crate has none.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let auth = userauth::auth_config(opts, self.identities.clone(), now)
            .map_err(ConnectError::Permanent)?;
        let stream = connect(spec).await?;
        debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "connected"
        );
        let verifier = Arc::new(KnownHostsVerifier {
            known,
            host: spec.host.clone(),
            port: spec.port,
            policy: opts.strict_host_key_checking,
            record_file: opts.known_hosts_record_file().map(Path::to_path_buf),
            hash: opts.hash_known_hosts,
        });
        let session = Session::new(
            SessionConfig {
                transport,
                connection: ssh_connection::Config::default(),
                auth,
                server_alive: spec.server_alive,
            },
            Box::new(OsRandom),
            Instant::now(),
        );
        let (handle, driver) =
            driver::start_with_auth(stream, session, verifier, self.helper.clone());
        Ok(Connected {
            handle,
            driver: Box::pin(driver),
        })
    }
}

impl Connector for CliConnector {
    fn connect(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Connected, ConnectError>> + Send + '_>,
    > {
        Box::pin(self.start())
    }

    fn describe(&self, e: &SessionError) -> String {
        // A refusal names the key files that could not even be offered, too.
        match e {
            SessionError::Auth(AuthError::Refused(refusal)) => {
                let mut refusal = refusal.clone();
                refusal.unusable = self.unusable.clone();
                refusal.to_string()
            }
            e => e.to_string(),
        }
    }
}

/// TCP to the bastion, with ConnectTimeout, TCP_NODELAY and (unless `TCPKeepAlive no`) TCP
/// keepalive probes, which also keep NAT mappings alive on an idle tunnel.
async fn connect(spec: &SessionSpec) -> Result<TcpStream, ConnectError> {
    let host = spec.host.as_str();
    let port = spec.port;
    let attempt = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ConnectError::Network(format!("could not resolve hostname {host}: {e}")))?
            .filter(|a| match spec.address_family {
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
        Err(ConnectError::Network(match last {
            Some(e) => format!("connect to host {host} port {port}: {e}"),
            None => format!("could not resolve hostname {host}: no usable address"),
        }))
    };
    let stream = match spec.connect_timeout {
        Some(t) => tokio::time::timeout(t, attempt).await.map_err(|_| {
            ConnectError::Network(format!(
                "connect to host {host} port {port}: timed out after {} s (ConnectTimeout)",
                t.as_secs()
            ))
        })??,
        None => attempt.await?,
    };
    let _ = stream.set_nodelay(true);
    if spec.tcp_keep_alive {
        let probes = socket2::TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE_IDLE)
            .with_interval(TCP_KEEPALIVE_INTERVAL);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&probes) {
            debug!(error = %e, "could not turn on TCP keepalive");
        }
    }
    Ok(stream)
}

/// Idle time before the first TCP keepalive probe (`TCPKeepAlive yes`).
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between TCP keepalive probes.
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

async fn run_async(opts: Options) -> Result<(), Fatal> {
    let tunnel_config = TunnelConfig::from_options(&opts).map_err(|e| Fatal(e.0))?;
    let spec = tunnel_config.session;
    let (password, passphrase) = userauth::secret_sources(&opts);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let prepared = userauth::prepare(&opts, &passphrase, now).await;
    let helper = Arc::new(userauth::Helper::new(
        &opts, &prepared, password, passphrase,
    ));

    // Listen first: a port that cannot be bound is known before any network traffic, and a
    // client that connects early waits for the session instead of being refused.
    let mut listeners = Vec::new();
    for fwd in &tunnel_config.forwards {
        match bind(
            &fwd.bind_target(tunnel_config.gateway_ports),
            fwd.bind_port,
            spec.address_family,
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
                if tunnel_config.exit_on_forward_failure {
                    return Err(Fatal(format!("{msg} (ExitOnForwardFailure)")));
                }
                eprintln!("forwarder: warning: {msg}");
            }
        }
    }

    let label = spec.label();
    let reconnect = spec.reconnect;
    let connector = Arc::new(CliConnector {
        spec,
        identities: prepared.identities.clone(),
        helper,
        unusable: prepared.unusable.clone(),
    });
    let mut supervisor = Supervisor::spawn(
        connector,
        SupervisorConfig {
            label,
            reconnect,
            first_attempt_fatal: true,
        },
        BastionGate::new(),
    );
    let sessions = supervisor.handle();
    let mut tunnel = Tunnel::new();
    for (listener, fwd) in listeners {
        let target = Target {
            host: fwd.host.clone(),
            port: fwd.host_port,
        };
        tunnel.listen(
            listener,
            sessions.clone(),
            target,
            tunnel_config.session_wait_timeout,
        );
    }

    // The first session fails fast, as ssh does, so a mistake is seen at once.
    tokio::select! {
        r = sessions.first_session() => match r {
            Ok(handle) => {
                let log = handle.log();
                debug!(
                    "authenticated in {} ms",
                    log.auth_time.unwrap_or_default().as_millis()
                );
            }
            Err(WaitError::Failed(msg)) => return Err(Fatal(msg)),
            Err(e) => return Err(Fatal(e.to_string())),
        },
        _ = shutdown_signal() => {
            // Perhaps at a password prompt: put the terminal back and leave politely.
            crate::prompt::restore_terminal();
            supervisor.shutdown(Duration::from_secs(2)).await;
            return Err(Fatal("interrupted during authentication".into()));
        }
    }
    let outcome = tokio::select! {
        o = supervisor.finished() => o,
        _ = shutdown_signal() => {
            debug!("signal received, disconnecting");
            tunnel.close();
            supervisor.shutdown(Duration::from_secs(2)).await;
            return Ok(());
        }
    };
    tunnel.close();
    match outcome {
        Outcome::Stopped => Ok(()),
        Outcome::Failed(msg) => Err(Fatal(msg)),
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
