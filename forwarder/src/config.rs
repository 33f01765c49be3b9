//! The typed, validated configuration of a tunnel, resolved once before anything runs.
//!
//! ```text
//!  argv ──cli::parse_args──> Options ──TunnelConfig::from_options──> TunnelConfig
//!                                                                      ├─ SessionSpec: what decides an SSH session
//!                                                                      │    (bastion, user, algorithms, keepalive,
//!                                                                      │     reconnect policy, auth options)
//!                                                                      └─ forwards + how long a connection waits
//! ```
//! Every algorithm list, RekeyLimit and time interval is parsed by the command line's one
//! parser and checked here, so a supervisor that reconnects for months never meets a
//! setting it cannot use. The same types are meant to come from a file later.

use std::time::Duration;

use ssh_transport::ClientConfig;
use ssh_transport::cipher;
use ssh_transport::compress::Compression;
use ssh_transport::hostkey::HostKeyAlgorithm;
use ssh_transport::kex::KexAlgorithm;
use ssh_transport::mac;

use crate::algorithms;
use crate::cli::{AddressFamily, ForwardSpec, JumpHost, Options};
use crate::session::ServerAlive;

/// The handshake limit when ConnectTimeout is not given.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A setting that cannot be used, with what to write instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// How a supervisor waits between connection attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Connect again after a session that was up ends (`Reconnect`).
    pub enabled: bool,
    /// The first backoff step; the delay before attempt n is drawn uniformly from
    /// `[0, min(max, initial * 2^n)]` (full jitter).
    pub initial: Duration,
    /// The cap (`ReconnectBackoffMax`), and the delay after a refused authentication.
    pub max: Duration,
    /// A session that stayed up this long resets the backoff.
    pub reset_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            initial: Duration::from_millis(500),
            max: crate::cli::DEFAULT_RECONNECT_BACKOFF_MAX,
            reset_after: Duration::from_secs(60),
        }
    }
}

/// One SSH server on a session's path ([`SessionSpec::hops`]): a jump host or the
/// destination, with the settings its own session uses.
#[derive(Clone, Copy, Debug)]
pub struct HopSpec<'a> {
    /// Who logs in there.
    pub user: &'a str,
    /// Its host, as connected to.
    pub host: &'a str,
    /// Its port.
    pub port: u16,
    /// Its own options (known_hosts, identities, `HostKeyAlias`, ...).
    pub options: &'a Options,
    /// Its algorithms and transport limits.
    pub transport: &'a ClientConfig,
    /// The jump host it is; `None` for the destination.
    pub jump: Option<&'a JumpHost>,
}

/// Everything that decides one SSH session: two tunnels with equal specs may share it.
#[derive(Clone, Debug)]
pub struct SessionSpec {
    /// The bastion's host name or address, as connected to and looked up in known_hosts.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Who to log in as.
    pub user: String,
    /// `-J` / `ProxyJump`: the jump hosts, outermost first. Each session after the first runs
    /// over a `direct-tcpip` channel of the one before. Each hop has its own options (keys,
    /// known_hosts, `HostKeyAlias`, algorithms); all of them use this spec's keepalives.
    pub jump: Vec<JumpHost>,
    /// Each jump host's transport algorithms and limits, from its own options, in the order
    /// of `jump`: a hop that needs an old algorithm does not bring it to the others.
    pub jump_transport: Vec<ClientConfig>,
    /// Transport algorithms and limits (host key algorithms before the per-host reordering
    /// each attempt does from known_hosts).
    pub transport: ClientConfig,
    /// Keepalives (`ServerAliveInterval`, `ServerAliveCountMax`); `None` for none.
    pub server_alive: Option<ServerAlive>,
    /// `ConnectTimeout` for the TCP connect; the handshake has its own limit in `transport`.
    pub connect_timeout: Option<Duration>,
    /// TCP keepalive probes on the socket (`TCPKeepAlive`).
    pub tcp_keep_alive: bool,
    /// `-4` / `-6`.
    pub address_family: AddressFamily,
    /// Reconnection.
    pub reconnect: ReconnectPolicy,
    /// The options authentication and host key checking read (keys, agent, known_hosts).
    pub options: Options,
    /// Our signatures ([`ssh_auth::AuthConfig::caller_signs_held_keys`]), and each key
    /// exchange's key pair not made ahead and the proof of its reply
    /// ([`ssh_transport::KexWork`]), are worked on tokio's blocking threads rather than on
    /// the session's: for the fleet, whose threads carry many
    /// sessions. A command line's one session has no other to hold up, and signing in line
    /// sends its first request together with the service request.
    pub handshake_off_thread: bool,
}

impl SessionSpec {
    /// The host and port connected to first: the outermost jump host of a chain, else the
    /// destination. Its sshd is the one a session's handshakes are paced for.
    pub fn first_host(&self) -> (&str, u16) {
        match self.jump.first() {
            Some(hop) => (&hop.host, hop.port),
            None => (&self.host, self.port),
        }
    }

    /// The SSH servers of the path: each jump host, outermost first, then the destination.
    pub fn hops(&self) -> Vec<HopSpec<'_>> {
        let jumps = self
            .jump
            .iter()
            .zip(&self.jump_transport)
            .map(|(j, transport)| HopSpec {
                user: &j.user,
                host: &j.host,
                port: j.port,
                options: &j.options,
                transport,
                jump: Some(j),
            });
        jumps
            .chain(std::iter::once(HopSpec {
                user: &self.user,
                host: &self.host,
                port: self.port,
                options: &self.options,
                transport: &self.transport,
                jump: None,
            }))
            .collect()
    }

    /// `user@host:port`, for logs; with jump hosts, `user@host:port via jump1,jump2`.
    pub fn label(&self) -> String {
        let mut label = format!("{}@{}:{}", self.user, self.host, self.port);
        if !self.jump.is_empty() {
            let hops: Vec<String> = self.jump.iter().map(ToString::to_string).collect();
            label.push_str(" via ");
            label.push_str(&hops.join(","));
        }
        label
    }

    /// The login the session makes at its first host (the outermost jump host, else the
    /// destination), whose sshd's penalties the bastion's handshake gate keeps: the user,
    /// host and port, and that hop's key and certificate files. Sessions with the same
    /// login there are accepted or refused together.
    pub fn login(&self) -> String {
        let (user, host, port, opts) = match self.jump.first() {
            Some(j) => (&j.user, &j.host, j.port, &*j.options),
            None => (&self.user, &self.host, self.port, &self.options),
        };
        let mut login = format!("{user}@{host}:{port}");
        for f in opts.identity_files.iter().chain(&opts.certificate_files) {
            login.push('\u{0}');
            login.push_str(&f.to_string_lossy());
        }
        login
    }
}

/// One tunnel: a session and the local forwards through it.
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    /// The session.
    pub session: SessionSpec,
    /// `-L` forwards.
    pub forwards: Vec<ForwardSpec>,
    /// How long a connection accepted while no session is up waits for one.
    pub session_wait_timeout: Duration,
    /// Exit when a listener cannot be bound.
    pub exit_on_forward_failure: bool,
    /// `-g`.
    pub gateway_ports: bool,
    /// `StreamLocalBindMask`, for forwards that listen on a Unix socket.
    pub stream_local_bind_mask: u32,
    /// `StreamLocalBindUnlink`.
    pub stream_local_bind_unlink: bool,
}

impl TunnelConfig {
    /// Resolves and checks the command line's options.
    pub fn from_options(opts: &Options) -> Result<Self, ConfigError> {
        let transport = transport_config(opts)?;
        let jump_transport = opts
            .proxy_jump
            .iter()
            .map(|j| {
                transport_config(&j.options)
                    .map_err(|e| ConfigError(format!("jump host {j}: {}", e.0)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            session: SessionSpec {
                host: opts.destination_host.clone(),
                port: opts.port,
                user: opts.user.clone(),
                jump: opts.proxy_jump.clone(),
                jump_transport,
                transport,
                server_alive: opts.server_alive_interval.map(|interval| ServerAlive {
                    interval,
                    count_max: opts.server_alive_count_max,
                }),
                connect_timeout: opts.connect_timeout,
                tcp_keep_alive: opts.tcp_keep_alive,
                address_family: opts.address_family,
                reconnect: ReconnectPolicy {
                    enabled: opts.reconnect,
                    max: opts.reconnect_backoff_max,
                    ..ReconnectPolicy::default()
                },
                options: opts.clone(),
                handshake_off_thread: false,
            },
            forwards: opts.local_forwards.clone(),
            session_wait_timeout: opts.session_wait_timeout,
            exit_on_forward_failure: opts.exit_on_forward_failure,
            gateway_ports: opts.gateway_ports,
            stream_local_bind_mask: opts.stream_local_bind_mask,
            stream_local_bind_unlink: opts.stream_local_bind_unlink,
        })
    }
}

/// The transport settings from the options: algorithm lists in OpenSSH's syntax, compression,
/// RekeyLimit and the handshake limit.
pub fn transport_config(opts: &Options) -> Result<ClientConfig, ConfigError> {
    let mut cfg = ClientConfig::default();
    if let Some(spec) = &opts.ciphers {
        let default: Vec<&str> = cfg.ciphers.iter().map(|c| c.name).collect();
        let all: Vec<&str> = cipher::ALL.iter().map(|c| c.name).collect();
        let names = algorithms::resolve("Ciphers", spec, &default, &all)
            .map_err(|e| ConfigError(e.to_string()))?;
        cfg.ciphers = names.iter().filter_map(|n| cipher::by_name(n)).collect();
    }
    if let Some(spec) = &opts.kex_algorithms {
        let default: Vec<&str> = cfg.kex_algorithms.iter().map(|k| k.name()).collect();
        let all: Vec<&str> = KexAlgorithm::ALL.iter().map(|k| k.name()).collect();
        let names = algorithms::resolve("KexAlgorithms", spec, &default, &all)
            .map_err(|e| ConfigError(e.to_string()))?;
        cfg.kex_algorithms = names
            .iter()
            .filter_map(|n| KexAlgorithm::from_name(n))
            .collect();
    }
    if let Some(spec) = &opts.host_key_algorithms {
        let default: Vec<&str> = cfg.host_key_algorithms.iter().map(|a| a.name()).collect();
        let all: Vec<&str> = HostKeyAlgorithm::ALL.iter().map(|a| a.name()).collect();
        let names = algorithms::resolve("HostKeyAlgorithms", spec, &default, &all)
            .map_err(|e| ConfigError(e.to_string()))?;
        cfg.host_key_algorithms = names
            .iter()
            .filter_map(|n| HostKeyAlgorithm::from_name(n))
            .collect();
    }
    if let Some(spec) = &opts.macs {
        let default: Vec<&str> = cfg.macs.iter().map(|m| m.name).collect();
        let all: Vec<&str> = mac::ALL.iter().map(|m| m.name).collect();
        let names = algorithms::resolve("MACs", spec, &default, &all)
            .map_err(|e| ConfigError(e.to_string()))?;
        cfg.macs = names.iter().filter_map(|n| mac::by_name(n)).collect();
    }
    if opts.compression {
        // As OpenSSH's `Compression yes`: delayed zlib first, `none` still accepted.
        cfg.compression = Compression::PREFERRED.to_vec();
    }
    if let Some(limit) = opts.rekey_limit {
        cfg.rekey_limit = limit.bytes;
        cfg.rekey_interval = limit.interval;
    }
    cfg.handshake_timeout = Some(opts.connect_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT));
    Ok(cfg)
}

/// `cfg` with the host key algorithms of types already known for the host first (in their
/// configured order), as OpenSSH orders them (sshconnect2.c `order_hostkeyalgs`), so a known
/// host never fails over a key type. With `cert_authority` (an `@cert-authority` line names
/// the host) the certificate algorithms go first: the ones the list names, or, when it names
/// none and `certificates_as_configured` is false, the certificate forms of its plain ones.
/// Without a `@cert-authority` line certificate algorithms are offered only when the list
/// names them (the default list does not): a certificate nothing can vouch for would only
/// be checked as its plain key, which the plain algorithms get anyway.
pub fn prefer_known_host_key_types(
    mut cfg: ClientConfig,
    known_types: &[String],
    cert_authority: bool,
    certificates_as_configured: bool,
) -> ClientConfig {
    let has_certs = cfg.host_key_algorithms.iter().any(|a| a.certificate);
    if cert_authority && !has_certs && !certificates_as_configured {
        cfg.put_certificate_algorithms_first();
    }
    let (known, rest): (Vec<_>, Vec<_>) = cfg.host_key_algorithms.iter().partition(|a| {
        if a.certificate {
            cert_authority
        } else {
            known_types.iter().any(|t| t == a.key_type().name())
        }
    });
    cfg.host_key_algorithms = known.into_iter().chain(rest).collect();
    cfg
}

/// Whether a HostKeyAlgorithms setting speaks of certificate algorithms (names, adds or
/// removes them): then its list is used as written, with no certificate algorithm added for
/// a `@cert-authority` line.
pub fn names_certificate_algorithms(opts: &Options) -> bool {
    opts.host_key_algorithms
        .as_deref()
        .is_some_and(|spec| spec.contains("cert-v01"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Command, Environment, RekeyLimit, parse_args_with_env};
    use std::path::PathBuf;

    /// A user `tester` whose home has no files.
    fn test_env() -> Environment {
        Environment {
            home: Some(PathBuf::from("/nonexistent-home")),
            user: Some("tester".into()),
            cache_home: None,
        }
    }

    fn options(args: &[&str]) -> Options {
        let env = test_env();
        let mut all = args.to_vec();
        all.push("bastion");
        match parse_args_with_env(all, &env) {
            Ok(Command::Run(o)) => o,
            other => panic!("{other:?}"),
        }
    }

    fn config(args: &[&str], known: &[&str]) -> ClientConfig {
        let known: Vec<String> = known.iter().map(|s| (*s).to_owned()).collect();
        prefer_known_host_key_types(
            transport_config(&options(args)).unwrap(),
            &known,
            false,
            false,
        )
    }

    fn host_keys(cfg: &ClientConfig) -> Vec<&'static str> {
        cfg.host_key_algorithms.iter().map(|a| a.name()).collect()
    }

    #[test]
    fn each_jump_host_has_its_own_algorithms_and_a_bad_list_is_refused() {
        let env = test_env();
        let parse = |args: &[&str]| match parse_args_with_env(args.to_vec(), &env) {
            Ok(Command::Run(o)) => TunnelConfig::from_options(&o),
            other => panic!("{other:?}"),
        };
        let cfg = parse(&["-J", "jump", "-m", "hmac-sha2-256,hmac-sha1", "bastion"]);
        let cfg = cfg.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.session.jump_transport.len(), 1);
        let names = |c: &ClientConfig| c.macs.iter().map(|m| m.name).collect::<Vec<_>>();
        // Without a block of its own, the hop falls back on the command line's `-m`.
        assert_eq!(
            names(&cfg.session.jump_transport[0]),
            names(&cfg.session.transport)
        );
        let bad = parse(&["-J", "jump", "-m", "hmac-md5", "bastion"]).unwrap_err();
        assert!(bad.to_string().contains("hmac-md5"), "{bad}");
    }

    #[test]
    fn a_sessions_login_is_its_first_hops_user_host_port_and_key_files() {
        let env = test_env();
        let login = |args: &[&str]| match parse_args_with_env(args.to_vec(), &env) {
            Ok(Command::Run(o)) => TunnelConfig::from_options(&o)
                .unwrap_or_else(|e| panic!("{e}"))
                .session
                .login(),
            other => panic!("{other:?}"),
        };
        let plain = login(&["-i", "/k/a", "u@bastion"]);
        assert_eq!(plain, "u@bastion:22\u{0}/k/a");
        assert_ne!(plain, login(&["-i", "/k/b", "u@bastion"]), "another key");
        assert_ne!(plain, login(&["-i", "/k/a", "v@bastion"]), "another user");
        assert_ne!(plain, login(&["-i", "/k/a", "-p", "2222", "u@bastion"]));
        // Through a jump host, the login is the jump host's, whatever the destination.
        let via = login(&["-J", "j@jump:2200", "u@db1"]);
        assert!(via.starts_with("j@jump:2200"), "{via}");
        assert_eq!(via, login(&["-J", "j@jump:2200", "w@db2"]));
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
    fn certificate_algorithms_go_first_only_for_a_host_with_a_cert_authority() {
        let order = |args: &[&str], known: &[&str], ca: bool| {
            let opts = options(args);
            let known: Vec<String> = known.iter().map(|s| (*s).to_owned()).collect();
            let cfg = prefer_known_host_key_types(
                transport_config(&opts).unwrap(),
                &known,
                ca,
                names_certificate_algorithms(&opts),
            );
            host_keys(&cfg)
        };
        // No @cert-authority line: no certificate algorithm is offered.
        assert!(order(&[], &[], false).iter().all(|a| !a.contains("cert")));
        // A @cert-authority line: the certificate forms of the configured algorithms first,
        // in their order, then the known plain types, then the rest.
        let with_ca = order(&[], &["ssh-rsa"], true);
        assert_eq!(
            with_ca[..8],
            [
                "ssh-ed25519-cert-v01@openssh.com",
                "rsa-sha2-512-cert-v01@openssh.com",
                "rsa-sha2-256-cert-v01@openssh.com",
                "ecdsa-sha2-nistp256-cert-v01@openssh.com",
                "ecdsa-sha2-nistp384-cert-v01@openssh.com",
                "ecdsa-sha2-nistp521-cert-v01@openssh.com",
                "rsa-sha2-512",
                "rsa-sha2-256",
            ]
        );
        assert_eq!(with_ca.len(), 12);
        // SHA-1 only when configured, in both forms.
        assert!(!with_ca.contains(&"ssh-rsa-cert-v01@openssh.com"));
        let sha1 = order(&["-o", "HostKeyAlgorithms=+ssh-rsa"], &[], true);
        assert!(sha1.contains(&"ssh-rsa-cert-v01@openssh.com") && sha1.contains(&"ssh-rsa"));
        // Named in HostKeyAlgorithms: offered without a CA line, and the list is used as
        // written (no other certificate forms added) with one.
        let named = [
            "-o",
            "HostKeyAlgorithms=ssh-ed25519,ssh-ed25519-cert-v01@openssh.com",
        ];
        assert_eq!(
            order(&named, &[], false),
            ["ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com"]
        );
        assert_eq!(
            order(&named, &[], true),
            ["ssh-ed25519-cert-v01@openssh.com", "ssh-ed25519"]
        );
        let plus = ["-o", "HostKeyAlgorithms=^rsa-sha2-512-cert-v01@openssh.com"];
        assert_eq!(
            order(&plus, &[], false)[0],
            "rsa-sha2-512-cert-v01@openssh.com"
        );
        // Removing them keeps them off even with a CA line.
        let minus = ["-o", "HostKeyAlgorithms=-*-cert-v01@openssh.com"];
        assert!(order(&minus, &[], true).iter().all(|a| !a.contains("cert")));
        let bad = transport_config(&options(&[
            "-o",
            "HostKeyAlgorithms=ssh-dss-cert-v01@openssh.com",
        ]));
        assert!(bad.is_err());
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
        let bad = transport_config(&options(&["-m", "hmac-md5"])).unwrap_err();
        assert!(bad.0.contains("hmac-md5"), "{}", bad.0);
    }

    #[test]
    fn rekey_limit_in_openssh_units_reaches_the_transport() {
        let mib = |n: u64| n << 20;
        let limit = |s: &str| options(&["-o", &format!("RekeyLimit={s}")]).rekey_limit;
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(
            limit("1G"),
            Some(RekeyLimit {
                bytes: Some(1 << 30),
                interval: None
            })
        );
        assert_eq!(
            limit("512M 1h"),
            Some(RekeyLimit {
                bytes: Some(mib(512)),
                interval: secs(3600)
            })
        );
        assert_eq!(limit("default 30m").unwrap().interval, secs(1800));
        assert_eq!(limit("default 1h30m").unwrap().interval, secs(5400));
        assert_eq!(limit("64K none").unwrap().bytes, Some(64 << 10));
        assert_eq!(limit("100 2w").unwrap().interval, secs(1_209_600));
        let env = test_env();
        for bad in [
            "",
            "lots",
            "1T",
            "8",
            "1G 1y",
            "1G 1h 3",
            "99999999999999G",
            "K",
            "-1G",
        ] {
            let arg = format!("RekeyLimit={bad}");
            let r = parse_args_with_env(["-o", arg.as_str(), "bastion"], &env);
            assert!(
                matches!(&r, Err(e) if e.to_string().contains("RekeyLimit")),
                "{bad:?}: {r:?}"
            );
        }
        let cfg = config(&["-o", "RekeyLimit=4M 10s"], &[]);
        assert_eq!(cfg.rekey_limit, Some(mib(4)));
        assert_eq!(cfg.rekey_interval, Some(Duration::from_secs(10)));
    }

    #[test]
    fn keepalive_and_reconnect_defaults_and_settings() {
        let t = TunnelConfig::from_options(&options(&[])).unwrap();
        assert!(
            !t.session.handshake_off_thread,
            "the command line signs in line"
        );
        assert_eq!(
            t.session.server_alive,
            Some(ServerAlive {
                interval: Duration::from_secs(15),
                count_max: 3
            })
        );
        assert!(t.session.tcp_keep_alive);
        assert_eq!(t.session.reconnect, ReconnectPolicy::default());
        assert_eq!(t.session.reconnect.max, Duration::from_secs(30));
        assert_eq!(t.session_wait_timeout, Duration::from_secs(60));
        assert_eq!(
            t.session.transport.handshake_timeout,
            Some(DEFAULT_HANDSHAKE_TIMEOUT)
        );

        let t = TunnelConfig::from_options(&options(&[
            "-o",
            "ServerAliveInterval=0",
            "-o",
            "Reconnect=no",
            "-o",
            "ReconnectBackoffMax=2",
            "-o",
            "SessionWaitTimeout=1m30s",
            "-o",
            "TCPKeepAlive=no",
        ]))
        .unwrap();
        assert_eq!(t.session.server_alive, None);
        assert!(!t.session.reconnect.enabled);
        assert_eq!(t.session.reconnect.max, Duration::from_secs(2));
        assert_eq!(t.session_wait_timeout, Duration::from_secs(90));
        assert!(!t.session.tcp_keep_alive);

        let t = TunnelConfig::from_options(&options(&[
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=2",
        ]))
        .unwrap();
        assert_eq!(
            t.session.server_alive,
            Some(ServerAlive {
                interval: Duration::from_secs(5),
                count_max: 2
            })
        );
    }

    #[test]
    fn bad_reconnect_settings_are_refused_by_name() {
        let env = test_env();
        for (arg, key) in [
            ("Reconnect=maybe", "Reconnect"),
            ("ReconnectBackoffMax=0", "ReconnectBackoffMax"),
            ("ReconnectBackoffMax=soon", "ReconnectBackoffMax"),
            ("SessionWaitTimeout=0", "SessionWaitTimeout"),
            ("SessionWaitTimeout=1y", "SessionWaitTimeout"),
            ("TCPKeepAlive=sometimes", "TCPKeepAlive"),
        ] {
            let r = parse_args_with_env(["-o", arg, "bastion"], &env);
            assert!(
                matches!(&r, Err(e) if e.to_string().contains(key)),
                "{arg}: {r:?}"
            );
        }
    }
}
