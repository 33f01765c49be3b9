//! The OpenSSH-compatible command line.
//!
//! ```text
//!  argv ──> scan (getopt rules: grouped flags, attached or separate values, `--`)
//!             ├─ flags and -o Key=Value ──> Parsed (one slot per setting, first value wins)
//!             └─ [user@]host | ssh://[user@]host[:port] ──> Parsed
//!  Parsed + Environment ($HOME, $USER) ──> resolve (defaults, `~`, %-tokens) ──> Options
//! ```
//!
//! The precedence rules are OpenSSH's: for a single-valued setting the first value seen on the
//! command line wins, whether it came from a flag (`-p`, `-l`), from `-o`, or from the
//! destination (`user@`, `ssh://...:port`); list settings (`-i`, `-L`) accumulate. A few
//! flags override unconditionally, as in `ssh`: `-v`/`-q` over `LogLevel`, `-c` over `Ciphers`,
//! `-4`/`-6` over `AddressFamily`. Options may come before and right after the destination;
//! the first word after the destination that is not an option starts a remote command, which
//! forwarder refuses since it only forwards ports.
//!
//! Parsing and defaults resolution are separate steps ([`parse_args_with_env`] takes the
//! environment) so tests do not depend on the machine they run on. The user's ssh_config file
//! (`~/.ssh/config`, or `-F file`) is read after the command line, so the command line's
//! values win (see `ssh_config`).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod config;
mod destination;
mod env;
mod forward;
mod jump;
pub mod keygen;
pub mod show;
mod ssh_config;
#[cfg(test)]
mod tests;

use core::fmt;
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::tunnel::{Destination, Target};

pub use config::parse_time;
pub use env::Environment;

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
// One value per process, so boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Connect and forward.
    Run(Options),
    /// `--help` or `-h`: print [`usage`] to standard output and exit 0.
    Help,
    /// `--version` or `-V`: print [`version_text`] to standard output and exit 0.
    Version,
    /// `-Q what`: print the algorithms of one kind, one per line, like `ssh -Q`.
    Query(String),
    /// `forwarder keygen ...`: make a key pair for a bastion's authorized_keys.
    Keygen(keygen::KeygenOptions),
}

/// Everything the forwarder needs from the command line, with defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The host to connect to and to look up in known_hosts, lowercased: `HostName` if given
    /// (with `%h` expanded), else the destination's host. IPv6 literals carry no brackets.
    pub destination_host: String,
    /// The host as written in the destination, before `HostName` (OpenSSH's `%n`).
    pub original_host: String,
    /// Port on the server; 22 unless given.
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// Private key files to try, in order.
    pub identity_files: Vec<PathBuf>,
    /// True when `identity_files` are the defaults (`~/.ssh/id_ed25519`, `~/.ssh/id_rsa`)
    /// because none were given: missing defaults are skipped quietly, missing given files are
    /// an error.
    pub default_identity_files: bool,
    /// `-L` and `LocalForward`, in command-line order.
    pub local_forwards: Vec<ForwardSpec>,
    /// `-R` and `RemoteForward`, in command-line order: `listen` is where the server listens
    /// (a port, or a Unix socket's path on the server), `to` where we connect from here.
    pub remote_forwards: Vec<ForwardSpec>,
    /// `-J` / `ProxyJump`: the jump hosts, outermost first; empty for none.
    pub proxy_jump: Vec<JumpHost>,
    /// `-W host:port`: standard input and output forwarded there instead of listening.
    pub stdio_forward: Option<Destination>,
    /// How much to log.
    pub log_level: LogLevel,
    /// known_hosts files to read; new keys are recorded in the first. Empty for
    /// `UserKnownHostsFile none`. Default `~/.ssh/known_hosts ~/.ssh/known_hosts2`, as ssh.
    pub user_known_hosts_files: Vec<PathBuf>,
    /// `GlobalKnownHostsFile`: known_hosts files read after the user's (for keys,
    /// `@revoked` and `@cert-authority` lines alike) and never written. Empty for `none`. Default
    /// `/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2`, as ssh; missing files are
    /// fine.
    pub global_known_hosts_files: Vec<PathBuf>,
    /// `RevokedHostKeys`: key revocation lists (`ssh-keygen -k`) or lists of public keys,
    /// read afresh for every connection; a host key or certificate they revoke is refused
    /// under every StrictHostKeyChecking, and a file that cannot be read refuses every
    /// connection. Empty (the default) for none.
    pub revoked_host_keys: Vec<PathBuf>,
    /// `KnownHostsCommand`: a program whose output is read as known_hosts lines after the
    /// files, run before each key exchange and again with the key the server presented.
    /// `None` (the default) for none.
    pub known_hosts_command: Option<crate::known_hosts::command::KnownHostsCommand>,
    /// `-G`: print the settings ([`show::config_text`]) and exit instead of connecting.
    pub print_config: bool,
    /// `-E`: where the log and every error go instead of standard error, appended to.
    pub log_file: Option<PathBuf>,
    /// `-f` / `ForkAfterAuthentication`: go to the background once the tunnel is up (logged
    /// in, and with ExitOnForwardFailure every `-R` granted), as `ssh -f`.
    pub fork_after_authentication: bool,
    /// `-M` / `ControlMaster`: whether this command serves a control socket at
    /// `control_path` once the tunnel is up.
    pub control_master: ControlMaster,
    /// `-S` / `ControlPath`, expanded (`~`, `%` tokens, `${VAR}`); `None` for `none` or unset.
    pub control_path: Option<PathBuf>,
    /// `ControlPersist`: how long a master started for `-W` stays.
    pub control_persist: ControlPersist,
    /// `-O`: send this request to the master at `control_path` and exit, instead of
    /// connecting.
    pub control_command: Option<crate::mux::ControlCommand>,
    /// What to do with unknown and changed host keys.
    pub strict_host_key_checking: StrictHostKeyChecking,
    /// `HostKeyAlias`, lowercased: the name the host key is looked up and recorded under in
    /// known_hosts instead of the host's (and without its port, as ssh does).
    pub host_key_alias: Option<String>,
    /// `-c` or `Ciphers`, unparsed (OpenSSH's `+`/`-`/`^` list syntax is applied later).
    pub ciphers: Option<String>,
    /// `KexAlgorithms`, unparsed.
    pub kex_algorithms: Option<String>,
    /// `-m` or `MACs`, unparsed.
    pub macs: Option<String>,
    /// `PubkeyAcceptedAlgorithms` (or its old name `PubkeyAcceptedKeyTypes`), unparsed.
    pub pubkey_accepted_algorithms: Option<String>,
    /// `HostKeyAlgorithms`, unparsed.
    pub host_key_algorithms: Option<String>,
    /// `ConnectTimeout`; `None` waits as long as the system does.
    pub connect_timeout: Option<Duration>,
    /// `ServerAliveInterval` (default 15 s, unlike ssh, so that a dead session is noticed);
    /// `None` (set to 0) sends no keepalives.
    pub server_alive_interval: Option<Duration>,
    /// `ServerAliveCountMax`: unanswered keepalives before giving up (default 3).
    pub server_alive_count_max: u32,
    /// `ExitOnForwardFailure`.
    pub exit_on_forward_failure: bool,
    /// `UpdateHostKeys`: learn the host keys the server lists after the login (see
    /// [`crate::known_hosts::update`]). Default, as in ssh: on unless UserKnownHostsFile was
    /// set.
    pub update_host_keys: bool,
    /// `ConnectionAttempts`: how many times the TCP connection to the server is tried, a
    /// second apart, before an attempt fails (1 unless set, as in ssh).
    pub connection_attempts: u32,
    /// `-b` / `BindAddress`: the local address (or a name for it) the connection to the
    /// server comes from; the system chooses when `None`.
    pub bind_address: Option<String>,
    /// `-B` / `BindInterface`: the local interface whose address the connection to the server
    /// comes from (one that is not loopback or link-local first, as ssh chooses), when
    /// `bind_address` is not set.
    pub bind_interface: Option<String>,
    /// `PermitRemoteOpen`: where a dynamic remote forward's (`-R port`) connections may go.
    pub permit_remote_open: crate::remote::PermitRemoteOpen,
    /// `BatchMode`: never ask for a password, passphrase or answer on the terminal.
    pub batch_mode: bool,
    /// `RekeyLimit` (`"1G 1h"`), parsed.
    pub rekey_limit: Option<RekeyLimit>,
    /// `TCPKeepAlive` (default yes): TCP keepalive probes on the connection to the server.
    pub tcp_keep_alive: bool,
    /// `Reconnect` (forwarder's own, default yes): connect again after a session that was up
    /// ends; `no` exits with 255 as ssh does.
    pub reconnect: bool,
    /// `ReconnectBackoffMax` (forwarder's own, default 30 s): the cap of the delay between
    /// attempts, and the delay after a refused authentication.
    pub reconnect_backoff_max: Duration,
    /// `SessionWaitTimeout` (forwarder's own, default 60 s): how long an accepted connection
    /// waits for a session while none is up, before it is closed.
    pub session_wait_timeout: Duration,
    /// `-C` or `Compression yes`.
    pub compression: bool,
    /// `-g` or `GatewayPorts yes`: forwards without a bind address listen on all interfaces.
    pub gateway_ports: bool,
    /// `StreamLocalBindMask`: the mode bits cleared on a local forward's Unix socket file
    /// (default 0177: the file is 0600).
    pub stream_local_bind_mask: u32,
    /// `StreamLocalBindUnlink`: remove an existing socket at a local forward's path first.
    pub stream_local_bind_unlink: bool,
    /// `-4`, `-6` or `AddressFamily`.
    pub address_family: AddressFamily,
    /// `HashKnownHosts`: record new host keys with hashed names.
    pub hash_known_hosts: bool,
    /// `IdentityAgent`: which ssh-agent to ask for keys.
    pub identity_agent: IdentityAgent,
    /// `IdentitiesOnly`: offer only the agent's keys that match an identity file.
    pub identities_only: bool,
    /// `CertificateFile`: user certificates to offer, besides each identity file's
    /// `-cert.pub`.
    pub certificate_files: Vec<PathBuf>,
    /// `PubkeyAuthentication`.
    pub pubkey_authentication: bool,
    /// `PasswordAuthentication`.
    pub password_authentication: bool,
    /// `KbdInteractiveAuthentication` (or its old name `ChallengeResponseAuthentication`).
    pub kbd_interactive_authentication: bool,
    /// `NumberOfPasswordPrompts`: password (and keyboard-interactive) attempts.
    pub number_of_password_prompts: u32,
    /// PreferredAuthentications: the methods to use, in order (unknown names are kept and
    /// ignored, as OpenSSH does); `None` for the default order.
    pub preferred_authentications: Option<Vec<String>>,
    /// `PasswordFile` (forwarder's own): the password is the file's first line.
    pub password_file: Option<PathBuf>,
    /// `PasswordEnv` (forwarder's own): the password is this environment variable's value.
    pub password_env: Option<String>,
    /// `PassphraseFile` (forwarder's own): key passphrases are the file's first line.
    pub passphrase_file: Option<PathBuf>,
    /// `PassphraseEnv` (forwarder's own): key passphrases are this variable's value.
    pub passphrase_env: Option<String>,
    /// `KexGuessFile` (forwarder's own, default `$XDG_CACHE_HOME/forwarder/kex_firsts`, else
    /// `~/.cache/forwarder/kex_firsts`): where each bastion's first key exchange choices are
    /// kept between runs, so that a new process's first session guesses them
    /// ([`crate::kex_memory`]); `None` (`none`, or no home directory) keeps them in memory only.
    pub kex_guess_file: Option<PathBuf>,
    /// Things the user should be told before connecting (an option taken differently from
    /// OpenSSH, for instance). Print each on standard error.
    pub warnings: Vec<String>,
    /// What the ssh_config file did that `-v` should show (settings and `Match` criteria
    /// forwarder skips), each naming the file and line.
    pub notes: Vec<String>,
}

impl Options {
    /// The file new host keys are recorded in (the first known_hosts file), if any.
    pub fn known_hosts_record_file(&self) -> Option<&std::path::Path> {
        self.user_known_hosts_files.first().map(PathBuf::as_path)
    }

    /// Every known_hosts file host keys are looked up in, in the order ssh reads them: the
    /// user's, then the global ones.
    pub fn known_hosts_files(&self) -> Vec<PathBuf> {
        self.user_known_hosts_files
            .iter()
            .chain(&self.global_known_hosts_files)
            .cloned()
            .collect()
    }
}

/// One jump host of `-J` / `ProxyJump`, looked up in ssh_config under its own name as ssh
/// does: its user and port are its own `user@` and `:port`, else its block's `User` and
/// `Port`, else the local user and 22 (never the destination's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JumpHost {
    /// Who to log in as.
    pub user: String,
    /// The host, lowercased, as connected to: its block's `HostName`, else the name given.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Its own settings (identities, known_hosts, `HostKeyAlias`, ...): its ssh_config block
    /// first, then the command line's options that are not about the destination (see
    /// README). Its `proxy_jump` is empty: the hops before it are the chain's.
    pub options: Box<Options>,
}

impl fmt::Display for JumpHost {
    /// `user@host:port`, IPv6 literals in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.user, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.user, self.host, self.port)
        }
    }
}

/// `RekeyLimit`: rekey after this much data, this much time, or either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RekeyLimit {
    /// Bytes either way; `None` leaves the cipher's own limit.
    pub bytes: Option<u64>,
    /// Time since the last key exchange; `None` for no time limit.
    pub interval: Option<Duration>,
}

/// ServerAliveInterval when none is given: unlike ssh (which sends none), so that a dead
/// session is noticed within about a minute with the default count of 3.
pub const DEFAULT_SERVER_ALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// ReconnectBackoffMax when none is given.
pub const DEFAULT_RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// SessionWaitTimeout when none is given: longer than the backoff cap, so a connection made
/// during a reconnect is served by the next session.
pub const DEFAULT_SESSION_WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// One `-L` or `-R`: where one side listens, and where the other connects each connection
/// to. For `-L` we listen and the server connects; for `-R` the server listens and we
/// connect.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ForwardSpec {
    /// A TCP port, or a Unix socket's path.
    pub listen: Listen,
    /// `host:hostport` (brackets removed from IPv6 literals), or a Unix socket's path.
    pub to: Destination,
}

/// Where a forward listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Listen {
    /// `[bind_address:]port`.
    Port {
        /// `None` when not given; `Some("*")` for `*` and for an empty bind address (both
        /// mean all interfaces); otherwise the address or name as given, brackets removed.
        bind_address: Option<String>,
        /// Local port; 0 lets the system pick one.
        port: u16,
    },
    /// A Unix socket at this path (`StreamLocalBindMask`, `StreamLocalBindUnlink`).
    Path(PathBuf),
}

/// Where a local forward listens, after OpenSSH's rules for the client side.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BindTarget {
    /// 127.0.0.1 and ::1 only.
    Loopback,
    /// Every interface (0.0.0.0 and ::).
    AllInterfaces,
    /// This address or name.
    Address(String),
}

impl ForwardSpec {
    /// `[bind_address:]port:host:hostport`.
    pub fn tcp(bind_address: Option<&str>, port: u16, host: &str, host_port: u16) -> Self {
        Self {
            listen: Listen::Port {
                bind_address: bind_address.map(str::to_owned),
                port,
            },
            to: Destination::Tcp(Target {
                host: host.to_owned(),
                port: host_port,
            }),
        }
    }

    /// The TCP port it listens on; `None` for a Unix socket.
    pub fn port(&self) -> Option<u16> {
        match &self.listen {
            Listen::Port { port, .. } => Some(*port),
            Listen::Path(_) => None,
        }
    }
}

impl Listen {
    /// Where to listen on TCP (see [`BindTarget::of`]); `None` for a Unix socket.
    pub fn bind_target(&self, gateway_ports: bool) -> Option<BindTarget> {
        match self {
            Listen::Port { bind_address, .. } => {
                Some(BindTarget::of(bind_address.as_deref(), gateway_ports))
            }
            Listen::Path(_) => None,
        }
    }
}

impl BindTarget {
    /// Where a forward with `bind_address` listens: none means loopback only unless
    /// `gateway_ports` is set; `*` or empty means all interfaces; `localhost` means loopback.
    pub fn of(bind_address: Option<&str>, gateway_ports: bool) -> Self {
        match bind_address {
            None if gateway_ports => BindTarget::AllInterfaces,
            None => BindTarget::Loopback,
            Some("*") => BindTarget::AllInterfaces,
            Some(a) if a.eq_ignore_ascii_case("localhost") => BindTarget::Loopback,
            Some(a) => BindTarget::Address(a.to_owned()),
        }
    }
}

/// A field of a forward spec, in brackets when it contains `:` or starts with `[` (a field
/// that came out of brackets may), so that it parses back as one field.
fn spec_field(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if s.contains(':') || s.starts_with('[') {
        write!(f, "[{s}]")
    } else {
        f.write_str(s)
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Port { bind_address, port } => {
                if let Some(b) = bind_address {
                    spec_field(f, b)?;
                    f.write_str(":")?;
                }
                write!(f, "{port}")
            }
            Listen::Path(p) => spec_field(f, &p.to_string_lossy()),
        }
    }
}

impl fmt::Display for ForwardSpec {
    /// The `-L` form, brackets around fields that contain `:`; a `-D` forward is its listening
    /// side alone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.to == Destination::Socks {
            return self.listen.fmt(f);
        }
        write!(f, "{}:", self.listen)?;
        spec_destination(f, &self.to)
    }
}

impl ForwardSpec {
    /// The option a local forward came from: `-D` for a SOCKS proxy, else `-L`.
    pub fn flag(&self) -> &'static str {
        if self.to == Destination::Socks {
            "-D"
        } else {
            "-L"
        }
    }
}

/// `host:port` or the path, in a forward spec's form (brackets where a field needs them).
fn spec_destination(f: &mut fmt::Formatter<'_>, to: &Destination) -> fmt::Result {
    match to {
        Destination::Tcp(t) => {
            spec_field(f, &t.host)?;
            write!(f, ":{}", t.port)
        }
        Destination::Unix(path) => spec_field(f, path),
        Destination::Socks => Ok(()),
    }
}

/// `StrictHostKeyChecking`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum StrictHostKeyChecking {
    /// Refuse unknown and changed keys (also what `ask` means here: forwarder never prompts).
    #[default]
    Yes,
    /// Record keys of hosts that are not known at all, refuse changed ones (and a key of a
    /// new type for a host known with other keys).
    AcceptNew,
    /// `no` / `off`: as `accept-new` here. A changed key, or a key of a new type for a host
    /// known with other keys, is still refused, because OpenSSH too counts both as a changed
    /// key and turns port forwarding off in that case.
    No,
}

impl fmt::Display for StrictHostKeyChecking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Yes => "yes",
            Self::AcceptNew => "accept-new",
            Self::No => "no",
        })
    }
}

/// `LogLevel`, `-v` and `-q`, ordered from quietest to noisiest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum LogLevel {
    /// `-q`, `QUIET`
    Quiet,
    /// `FATAL`
    Fatal,
    /// `ERROR`
    Error,
    /// `INFO`, the default
    #[default]
    Info,
    /// `VERBOSE`
    Verbose,
    /// `-v`, `DEBUG`, `DEBUG1`
    Debug1,
    /// `-vv`, `DEBUG2`
    Debug2,
    /// `-vvv`, `DEBUG3`
    Debug3,
}

impl LogLevel {
    /// How many `-v` this level amounts to (0 below DEBUG1).
    pub fn verbosity(self) -> u8 {
        match self {
            Self::Debug1 => 1,
            Self::Debug2 => 2,
            Self::Debug3 => 3,
            _ => 0,
        }
    }

    /// The matching `tracing` filter: QUIET is off, FATAL and ERROR are errors, INFO and
    /// VERBOSE include warnings and info, DEBUG1 is debug, DEBUG2 and DEBUG3 are trace.
    pub fn tracing_filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            Self::Quiet => LevelFilter::OFF,
            Self::Fatal | Self::Error => LevelFilter::ERROR,
            Self::Info | Self::Verbose => LevelFilter::INFO,
            Self::Debug1 => LevelFilter::DEBUG,
            Self::Debug2 | Self::Debug3 => LevelFilter::TRACE,
        }
    }

    fn more_verbose(self) -> Self {
        match self {
            Self::Quiet => Self::Fatal,
            Self::Fatal => Self::Error,
            Self::Error => Self::Info,
            Self::Info => Self::Verbose,
            Self::Verbose => Self::Debug1,
            Self::Debug1 => Self::Debug2,
            Self::Debug2 | Self::Debug3 => Self::Debug3,
        }
    }
}

/// `IdentityAgent`: where the ssh-agent's socket is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum IdentityAgent {
    /// `SSH_AUTH_SOCK` (the default): the socket named by that environment variable.
    #[default]
    AuthSock,
    /// `none`: no agent.
    None,
    /// `$VAR` or `${VAR}`: the socket named by this environment variable.
    Env(String),
    /// A socket path (`~` and %-tokens expanded).
    Path(PathBuf),
}

/// `AddressFamily`, `-4`, `-6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum AddressFamily {
    /// IPv4 or IPv6.
    #[default]
    Any,
    /// IPv4 only.
    Inet,
    /// IPv6 only.
    Inet6,
}

/// A command line that cannot be used. The messages say what is wrong and what it should look
/// like; print them on standard error and exit with status 255 as `ssh` does.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CliError {
    /// An argument is not valid UTF-8.
    NotUtf8 {
        /// The argument, lossily converted.
        argument: String,
    },
    /// An option letter or long option that neither ssh nor forwarder knows.
    UnknownOption {
        /// The option as written (`-Z`, `--foo`).
        option: String,
    },
    /// An ssh option that forwarder does not implement.
    UnsupportedOption {
        /// The option (`-R`).
        option: String,
        /// Why, and what to use instead.
        why: &'static str,
    },
    /// An option that takes a value came last.
    MissingArgument {
        /// The option letter.
        option: char,
        /// How it is used.
        example: &'static str,
    },
    /// No destination was given.
    MissingDestination,
    /// Words after the destination that are not options.
    RemoteCommand {
        /// The words, joined by spaces.
        command: String,
    },
    /// The destination does not parse.
    BadDestination {
        /// The destination as given.
        destination: String,
        /// What is wrong with it.
        why: String,
    },
    /// A port that is not a number from 1 to 65535.
    BadPort {
        /// The value as given.
        value: String,
        /// Where it came from (`-p`, `Port`, `the ssh:// destination`).
        source: &'static str,
    },
    /// A `-L` or `LocalForward` value that does not parse.
    BadForward {
        /// The specification as given.
        spec: String,
        /// `-L` or `LocalForward`.
        form: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// A `PermitRemoteOpen` value that does not parse.
    BadPermitRemoteOpen {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// An `-o` argument without a key and value.
    BadConfigSyntax {
        /// The argument as given.
        option: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An `-o` key that OpenSSH does not know either.
    UnknownKey {
        /// The key as given.
        key: String,
    },
    /// An `-o` key that OpenSSH knows and forwarder does not implement.
    UnsupportedKey {
        /// The key as given.
        key: String,
    },
    /// A value that does not fit its key.
    BadValue {
        /// The key or option (`StrictHostKeyChecking`, `-l`).
        key: String,
        /// The value as given.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// No user was given and none could be found in the environment.
    NoUser,
    /// A path needs `~` expanded but the home directory is unknown.
    NoHome {
        /// The path as given.
        path: String,
    },
    /// A path that cannot be expanded.
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `ProxyCommand` other than `none` that would be used to reach the host: forwarder runs
    /// no local commands, and connecting straight to the host instead would bypass the proxy.
    ProxyCommand {
        /// The command as written.
        command: String,
    },
    /// `-J` after `-o ProxyCommand=none`, which ssh refuses too.
    JumpAfterProxyCommand,
    /// `~/.ssh/config` or an included file that someone else owns or may write, which ssh
    /// refuses too: its settings choose the keys, hosts and known_hosts files used.
    ConfigPermissions {
        /// The file's path.
        file: String,
        /// The file's owner when that is neither the user nor root.
        foreign_owner: Option<u32>,
    },
    /// An ssh_config file that cannot be read or has a bad line.
    ConfigFile {
        /// The file's path.
        file: String,
        /// The line (from 1), if the error is in one.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

/// Makes user-supplied text safe to print inside an error message.
fn shown(s: &str) -> String {
    ssh_transport::text::sanitize(s.as_bytes(), false, 200)
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUtf8 { argument } => write!(
                f,
                "argument '{}' is not valid UTF-8; hosts, users and paths must be UTF-8 text",
                shown(argument)
            ),
            Self::UnknownOption { option } => write!(
                f,
                "unknown option {}; run 'forwarder --help' for the options it takes",
                shown(option)
            ),
            Self::UnsupportedOption { option, why } => {
                write!(f, "option {option} is not supported by forwarder: {why}")
            }
            Self::MissingArgument { option, example } => {
                write!(f, "option -{option} needs a value, as in {example}")
            }
            Self::MissingDestination => f.write_str(
                "no destination given: expected [user@]host or ssh://[user@]host[:port] \
                 (run 'forwarder --help' for usage)",
            ),
            Self::RemoteCommand { command } => write!(
                f,
                "forwarder only forwards ports and never runs a remote command, but '{}' \
                 follows the destination; remove it (options may come before the destination \
                 or right after it)",
                shown(command)
            ),
            Self::BadDestination { destination, why } => write!(
                f,
                "bad destination '{}': {why}; expected [user@]host or ssh://[user@]host[:port]",
                shown(destination)
            ),
            Self::BadPort { value, source } => write!(
                f,
                "bad port '{}' in {source}: expected a number from 1 to 65535",
                shown(value)
            ),
            Self::BadForward { spec, form, why } => {
                let expected = match *form {
                    "-D" | "DynamicForward" => "[bind_address:]port",
                    "-R" => "[bind_address:]port[:host:hostport]",
                    "RemoteForward" => "[bind_address:]port [host:hostport]",
                    _ if form.starts_with('-') => "[bind_address:]port:host:hostport",
                    _ => "[bind_address:]port host:hostport",
                };
                write!(
                    f,
                    "bad {form} specification '{}': expected {expected} ({why})",
                    shown(spec)
                )
            }
            Self::BadPermitRemoteOpen { value, why } => write!(
                f,
                "bad PermitRemoteOpen '{}': {why}; expected any, none, or host:port entries \
                 (* for any host or any port)",
                shown(value)
            ),
            Self::BadConfigSyntax { option, why } => write!(
                f,
                "bad -o '{}': {why}; expected -o Key=Value or -o \"Key Value\"",
                shown(option)
            ),
            Self::UnknownKey { key } => write!(
                f,
                "unknown -o option '{}'; forwarder takes {} (see 'forwarder --help')",
                shown(key),
                config::SUPPORTED_KEYS
            ),
            Self::UnsupportedKey { key } => write!(
                f,
                "-o {} is an OpenSSH option that forwarder does not support; it takes {}",
                shown(key),
                config::SUPPORTED_KEYS
            ),
            Self::BadValue {
                key,
                value,
                expected,
            } => write!(
                f,
                "bad value '{}' for {}: expected {expected}",
                shown(value),
                shown(key)
            ),
            Self::NoUser => f.write_str(
                "cannot tell which user to log in as: $USER is not set and the current user \
                 has no name; give one with -l user or user@host",
            ),
            Self::NoHome { path } => write!(
                f,
                "cannot expand '~' in '{}': $HOME is not set; give the full path",
                shown(path)
            ),
            Self::BadPath { path, why } => write!(f, "cannot use path '{}': {why}", shown(path)),
            Self::ProxyCommand { command } => write!(
                f,
                "ProxyCommand '{}' is not supported: forwarder runs no local commands, and \
                 connecting to the host directly instead would bypass it; to go through a jump \
                 host use ProxyJump (ProxyCommand ssh -W %h:%p bastion is ProxyJump bastion, \
                 or -J bastion), or set ProxyCommand none",
                shown(command)
            ),
            Self::JumpAfterProxyCommand => f.write_str(
                "-J cannot follow -o ProxyCommand (ssh refuses the two together too); \
                 give one of them",
            ),
            Self::ConfigPermissions {
                file,
                foreign_owner,
            } => {
                let file = shown(file);
                write!(
                    f,
                    "Bad owner or permissions on {file}: an ssh_config file must be owned by \
                     you or root and writable by no one else, as ssh requires; "
                )?;
                match foreign_owner {
                    Some(uid) => write!(
                        f,
                        "it belongs to uid {uid}: make a copy of your own, then chmod go-w it"
                    ),
                    None => write!(f, "fix it with chmod go-w {file}"),
                }
            }
            Self::ConfigFile {
                file,
                line: Some(line),
                message,
            } => write!(f, "{} line {line}: {}", shown(file), shown(message)),
            Self::ConfigFile {
                file,
                line: None,
                message,
            } => write!(f, "{}: {}", shown(file), shown(message)),
        }
    }
}

impl std::error::Error for CliError {}

/// `forwarder <version>`, for `--version`.
pub fn version_text() -> String {
    format!("forwarder {}", env!("CARGO_PKG_VERSION"))
}

/// The `--help` text.
pub fn usage() -> &'static str {
    "\
forwarder: forward local TCP ports through an SSH server, like `ssh -N -L`.

usage: forwarder [options] [user@]host
       forwarder [options] ssh://[user@]host[:port]
       forwarder -Q cipher|cipher-auth|mac|kex|key|key-plain|key-cert|sig|HostKeyAlgorithms|compression
       forwarder keygen [-t rsa|ed25519] [--permit-open host:port]...  (keygen --help)
       forwarder serve --config tunnels.toml [--shard I/N]   a fleet of tunnels (serve --help)
       forwarder check [--json] [--probe KIND] [options] -L ... host   test a tunnel stage by stage (check --help)

Every connection to a local port is carried over one SSH session to the server, which
connects onward to host:hostport. Nothing runs on the server; forwarder stays in the
foreground until it is stopped.

options:
  -L [bind_address:]port:host:hostport
                 listen on the local port and forward connections to host:hostport as seen
                 from the server; repeatable. Without a bind address only loopback listens;
                 '*' or an empty address means every interface. IPv6 goes in brackets:
                 -L '[::1]:15432:db.internal:5432'. Either side may be a Unix socket
                 (a field with a '/'; brackets for one with a ':'), as in ssh:
                 -L 15432:/var/run/postgresql/.s.PGSQL.5432 (the server's socket),
                 -L /run/app/pg.sock:db.internal:5432 (listen on a socket, mode 0600
                 unless StreamLocalBindMask says otherwise), or a socket to a socket.
  -R [bind_address:]port:host:hostport
                 have the server listen on port (0: it picks one, printed as ssh prints
                 it) and forward connections to host:hostport as seen from here;
                 repeatable, requested again after each reconnect. Without a bind address
                 the server listens on localhost. A refused forward is a warning, fatal
                 with ExitOnForwardFailure=yes. A connect to host:hostport with no answer
                 within ConnectTimeout (default 30s) refuses that connection.
                 host:hostport may be a Unix socket's path here instead, and port a
                 Unix socket's path on the server (-R /run/app/db.sock:127.0.0.1:5432;
                 sshd leaves the file behind when the forward ends and refuses an
                 existing one unless its StreamLocalBindUnlink is yes).
                 Also -o RemoteForward='port host:hostport'.
  -R [bind_address:]port
                 without a target, as ssh: the server listens on port and each
                 connection there speaks SOCKS (4, 4A or 5), naming where to connect
                 from here; -o PermitRemoteOpen limits where (any, the default; none; or
                 host:port entries, * for any host or port). The reply waits for the
                 connect, so a refused target is a SOCKS error. Also -o RemoteForward=port.
  -D [bind_address:]port
                 a SOCKS proxy on the local port (loopback only unless a bind address or
                 -g says otherwise): each connection names its own target in SOCKS4,
                 SOCKS4A or SOCKS5 (CONNECT, no authentication), and the server connects
                 to it. The reply waits for the server's answer, so a refused target is a
                 SOCKS error, not a closed connection. Repeatable; also -o DynamicForward.
  -p port        server port (default 22)
  -l user        user to log in as (default: the local user name)
  -i file        private key to try; repeatable (default ~/.ssh/id_ed25519, ~/.ssh/id_rsa)
  -J [user@]host[:port][,...]
                 reach the server through these jump hosts, outermost first (as ProxyJump;
                 none for none). Each hop is looked up in ssh_config under its own name and
                 logs in as its own user@ (else its User, else the local user; never -l) on
                 its own :port (else its Port, else 22; never -p), with its own keys and
                 known_hosts files (else the command line's); each host key is checked under
                 the hop's own name or HostKeyAlias. A lost hop reconnects the whole chain;
                 the local ports stay bound.
  -W host:port   forward standard input and output to host:port through the server instead
                 of listening (no -L), for use as another tool's ProxyCommand:
                 ssh -o ProxyCommand='forwarder -W %h:%p bastion' db-host. Ends when the
                 connection closes; logs go to standard error only. -W /path goes to a
                 Unix socket on the server instead. With -S path (or ControlPath) and a
                 master answering there (forwarder's or ssh's), it goes through the
                 master's session instead of logging in again, as ssh -W does. Logs only
                 warnings and errors unless -v, LogLevel VERBOSE or -E.
  -o Key=Value   an ssh_config setting; see below
  -F file        read this ssh_config file instead of ~/.ssh/config; -F none reads none
  -N             accepted for ssh compatibility: forwarder never runs commands
  -f             go to the background once the tunnel is up (logged in; with
                 ExitOnForwardFailure, every -R granted), exiting 0, as ssh -f: a
                 first connection that fails is the exit status. Also
                 -o ForkAfterAuthentication=yes.
  -M             serve a control socket at -S once the tunnel is up (ControlMaster yes;
                 ControlMaster auto serves one unless a master already answers there), for
                 -O and -W from forwarder or ssh; removed when the tunnel ends
  -S path        the control socket's path (ControlPath; ~, % tokens, ${VAR}; none)
  -O command     ask the master at -S and exit: check (is it running, its pid), exit (stop
                 the tunnel, as SIGTERM does), stop (remove the socket; the tunnel goes on),
                 forward or cancel (add or cancel this command line's -L, -D and -R; an -R
                 on port 0 prints the port the server picked).
                 Speaks OpenSSH's control protocol: ssh -S path -O exit host stops a
                 forwarder master, and forwarder -O an ssh master.
  -v             more logging; repeat for more (-vvv)
  -q             log nothing but fatal errors
  -E file        append the log, and every error, to file instead of standard error
  -G             print the settings for the destination (after ssh_config's Host and
                 Match blocks and the defaults) as ssh -G does, and exit
  -C             compress the session
  -g             listen on every interface when -L has no bind address
  -4, -6         use IPv4 or IPv6 only
  -b address     connect to the server from this local address (or a name for one), the
                 source a bastion's firewall sees; with -J, the connection to the first
                 jump host. Also -o BindAddress.
  -B interface   connect to the server from this interface's address (one that is not
                 loopback or link-local first, as ssh chooses); -b wins over it. Also
                 -o BindInterface.
  -c ciphers     cipher list (as Ciphers)
  -m macs        MAC list (as MACs)
  -Q kind        list the algorithms supported of a kind, one per line, like ssh -Q
  -h, --help     print this text
  -V, --version  print the version

-o settings (keys are case-insensitive, the first value given wins, as in ssh):
  Port, User, HostName, IdentityFile, UserKnownHostsFile (space-separated list, or none),
  GlobalKnownHostsFile (the same), RevokedHostKeys (the same: KRLs or public key lists),
  KnownHostsCommand (a program printing known_hosts lines, see below),
  ProxyJump (as -J), HostKeyAlias (the name to look the host key up under in known_hosts),
  IgnoreUnknown (keywords to skip without a word),
  StrictHostKeyChecking (yes, accept-new, no; ask is treated as yes since forwarder never
  asks about host keys), Ciphers, MACs, KexAlgorithms, HostKeyAlgorithms,
  PubkeyAcceptedAlgorithms, ConnectTimeout, ServerAliveInterval, ServerAliveCountMax,
  ExitOnForwardFailure, BatchMode, LocalForward (\"15432 db:5432\"), DynamicForward,
  RemoteForward, PermitRemoteOpen, BindAddress, BindInterface, ControlMaster (yes, no,
  auto), ControlPath, ControlPersist (yes, no or a time: with -W and ControlMaster auto or
  yes, a master is started in the background when none answers, and stays until stopped or
  idle that long), ConnectionAttempts (TCP connects tried, a
  second apart, before an attempt fails; 1), UpdateHostKeys (yes: add the keys a bastion
  lists and proves, drop those it no longer lists, in the first UserKnownHostsFile; the
  default unless UserKnownHostsFile is set; ask is no, forwarder never asks),
  RekeyLimit, LogLevel, Compression, GatewayPorts, AddressFamily, HashKnownHosts,
  TCPKeepAlive, StreamLocalBindMask (octal, default 0177: a -L socket file is 0600),
  StreamLocalBindUnlink (yes: replace a stale socket at a -L path; never another file).
  Tunnels that stay up: ServerAliveInterval is 15 s unless set (0 turns keepalives off),
  so with ServerAliveCountMax 3 a dead session is noticed within about a minute.
  forwarder's own: Reconnect (yes: after a session that was up ends, connect again with
  backoff while the local ports stay bound; no: exit 255 as ssh does), ReconnectBackoffMax
  (the backoff's cap, default 30s; also the delay after a refused login), SessionWaitTimeout
  (how long a connection accepted while no session is up waits for one, default 60s),
  KexGuessFile (where each bastion's first key exchange choices are kept between runs, so
  that the next run saves half a round trip; default $XDG_CACHE_HOME/forwarder/kex_firsts, else
  ~/.cache/forwarder/kex_firsts; none keeps them in memory only).
  A changed host key is never retried. The first connection still fails at once.
  Algorithm lists take OpenSSH's syntax: a plain list replaces the default, +list appends,
  -list removes, ^list puts first; * and ? are wildcards. SHA-1 (ssh-rsa, hmac-sha1) is
  never in a default list and is used only when named.
  Authentication, as in ssh: IdentityAgent (a socket path, SSH_AUTH_SOCK (the default),
  $VAR or none), IdentitiesOnly (only agent keys that match an IdentityFile),
  CertificateFile (repeatable; id-cert.pub beside each key is used too),
  PubkeyAuthentication, PasswordAuthentication, KbdInteractiveAuthentication
  (or ChallengeResponseAuthentication), NumberOfPasswordPrompts, PreferredAuthentications
  (the methods to use, in order; default publickey,keyboard-interactive,password).
  forwarder's own, for running without a terminal (never put a secret on the command
  line): PasswordFile=path and PasswordEnv=VAR give the password (also the answer to a
  lone keyboard-interactive password prompt); PassphraseFile=path and PassphraseEnv=VAR
  give the passphrase of encrypted key files. The first line of the file is used.
  Without them, forwarder asks on the terminal unless BatchMode is yes.
  CheckHostIP is accepted and has no effect: forwarder checks host names, not addresses.

Host keys are checked, as ssh checks them, against the UserKnownHostsFile files (default
~/.ssh/known_hosts ~/.ssh/known_hosts2; new keys are recorded in the first) and then the
GlobalKnownHostsFile files (default /etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2,
never written; their @revoked and @cert-authority lines count too), under the HostName's
name, or under HostKeyAlias if set. On a port other than 22, without HostKeyAlias, a host
with no key listed as [host]:port is looked up under its bare name too. @cert-authority
lines are honoured as ssh honours them: for a host they name, host certificates are asked
for first, and one signed by a listed CA, valid now, naming the host (HostKeyAlias if set)
among its principals and without critical options is trusted and never recorded; one not
accepted for another reason is checked as a plain key (the error says why it was not
accepted), and one whose key or CA is @revoked is refused. StrictHostKeyChecking=no
records new keys like accept-new and, like it, refuses a key of a new type for a host known
with other keys. A key that could not be recorded (a read-only file, UserKnownHostsFile
none) is trusted until forwarder exits, and a different key for that host is refused as
changed in the meantime.
RevokedHostKeys files (key revocation lists made by ssh-keygen -k, or lists of public keys,
one per line) are read on every connection, before known_hosts: a host key they list, or a
host certificate whose serial, key id, key or CA key they revoke, is refused under every
StrictHostKeyChecking, and a file that is missing or cannot be read refuses the connection.
KnownHostsCommand (an absolute path, then arguments) prints known_hosts lines read after
the files; it runs before the key exchange (%I is ORDER) and with the server's key (%I is
HOSTNAME; %H the name looked up, %t %f %K the key's type, fingerprint and base64, NONE
before), must exit 0 within ConnectTimeout, and its failure fails the attempt.

~/.ssh/config (or the -F file) is read as ssh reads it, after the command line, whose values
win: Host and Match blocks (Match all, host, originalhost, user, localuser, also written
host=pattern; other criteria do not match), * ? and ! patterns, Include (relative to ~/.ssh,
globs), the settings above with the same meaning as with -o. As with ssh, ~/.ssh/config and
included files must be owned by you (or root) and writable by no one else. Settings
forwarder does not implement are skipped (-v names them); unknown keywords are skipped with
a warning unless IgnoreUnknown matches them; a ProxyCommand (use ProxyJump instead) other
than none is an error, as is a bad value, naming the file and line.
/etc/ssh/ssh_config is not read. Jump hosts (-J, ProxyJump) are looked up in it under their
own names (their own HostName, Port, User, IdentityFile, HostKeyAlias...), falling back on
the command line's -i and -o settings; -J wins over the file's ProxyJump, and ProxyJump and
ProxyCommand none exclude each other, the first one obtained winning.
Path tokens: %% %C %d %h %i %j %k %L %l %n %p %r %u, and ${VAR} in IdentityFile,
CertificateFile, UserKnownHostsFile, RevokedHostKeys and IdentityAgent.

example:
  forwarder -N -p 2222 -i ~/.ssh/id_rsa -L 15432:db.internal:5432 analytics@bastion.example.com
"
}

/// Parses the arguments (without the program name) and fills in defaults from this process's
/// environment ([`Environment::from_process`]).
pub fn parse_args<I, S>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    parse_args_with_env(args, &Environment::from_process())
}

/// The arguments as strings; one that is not UTF-8 is an error naming it.
fn utf8_args<I, S>(args: I) -> Result<Vec<String>, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    args.into_iter()
        .map(|a| {
            a.into().into_string().map_err(|bad| CliError::NotUtf8 {
                argument: bad.to_string_lossy().into_owned(),
            })
        })
        .collect()
}

/// [`parse_args`] with the environment given, for tests and embedding.
pub fn parse_args_with_env<I, S>(args: I, env: &Environment) -> Result<Command, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args = utf8_args(args)?;
    if let Some(("keygen", rest)) = args.split_first().map(|(a, r)| (a.as_str(), r)) {
        return Ok(Command::Keygen(keygen::parse(rest, env)?));
    }
    match scan(args)? {
        Scanned::Run(parsed) => Ok(Command::Run(build(
            *parsed,
            env,
            &env::process_variable,
            &ssh_config::Source::User,
        )?)),
        Scanned::Help => Ok(Command::Help),
        Scanned::Version => Ok(Command::Version),
        Scanned::Query(what) => Ok(Command::Query(what)),
    }
}

/// [`parse_args_with_env`] with `config` as the text of the user's ssh_config file instead of
/// `~/.ssh/config` or `-F` (which are not read); its `Include` lines are skipped. For tests
/// and fuzzing, where no file may be opened. `${VAR}` in paths reads this process's
/// environment, as with [`parse_args_with_env`].
pub fn parse_args_with_config_text<I, S>(
    args: I,
    env: &Environment,
    config: &str,
) -> Result<Command, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args = utf8_args(args)?;
    match scan(args)? {
        Scanned::Run(parsed) => Ok(Command::Run(build(
            *parsed,
            env,
            &env::process_variable,
            &ssh_config::Source::Text(config),
        )?)),
        Scanned::Help => Ok(Command::Help),
        Scanned::Version => Ok(Command::Version),
        Scanned::Query(what) => Ok(Command::Query(what)),
    }
}

/// The command line's settings, then the ssh_config file's for the destination, then the
/// jump hosts, each looked up in the file under its own name. `variables` gives `${VAR}`
/// in paths its value.
fn build(
    command_line: Parsed,
    env: &Environment,
    variables: env::Variables<'_>,
    source: &ssh_config::Source<'_>,
) -> Result<Options, CliError> {
    let mut p = command_line.clone();
    ssh_config::apply(&mut p, env, source)?;
    let jumps = p.proxy_jump.clone().unwrap_or_default();
    let mut opts = env::resolve(p, env, variables)?;
    opts.proxy_jump = jump::resolve_chain(&jumps, &command_line, env, variables, source, 0)?;
    // Each hop read the same file, so its notes and warnings about a line are mostly the
    // destination's; a config of many skipped lines makes these lists long, hence the sets.
    let mut seen_notes: HashSet<String> = opts.notes.iter().cloned().collect();
    let mut seen_warnings: HashSet<String> = opts.warnings.iter().cloned().collect();
    for hop in &opts.proxy_jump {
        for note in &hop.options.notes {
            if seen_notes.insert(note.clone()) {
                opts.notes.push(format!("jump host {}: {note}", hop.host));
            }
        }
        for w in &hop.options.warnings {
            if seen_warnings.insert(w.clone()) {
                opts.warnings.push(w.clone());
            }
        }
    }
    Ok(opts)
}

enum Scanned {
    Run(Box<Parsed>),
    Help,
    Version,
    Query(String),
}

/// The command line as given, before defaults. `None` slots were not set; each is set once,
/// by the first value seen.
#[derive(Clone, Debug, Default)]
struct Parsed {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    hostname: Option<String>,
    identity_files: Vec<String>,
    local_forwards: Vec<ForwardSpec>,
    remote_forwards: Vec<ForwardSpec>,
    proxy_jump: Option<Vec<jump::JumpSpec>>,
    /// `ProxyCommand none` was obtained, or a list of jump hosts, which sets it as in ssh: the
    /// two are exclusive and the first obtained wins. Any other `ProxyCommand` that would be
    /// obtained is refused, since forwarder runs no commands.
    proxy_command_set: bool,
    /// `RevokedHostKeys`: files as written (empty for `none`).
    revoked_host_keys: Option<Vec<String>>,
    /// `-f` / `ForkAfterAuthentication`.
    fork_after_authentication: Option<bool>,
    /// `-M` / `ControlMaster`.
    control_master: Option<ControlMaster>,
    /// `ControlPersist`.
    control_persist: Option<ControlPersist>,
    /// `-S` / `ControlPath`, as written (`None` inside for `none`).
    control_path: Option<Option<String>>,
    /// `-O`.
    control_command: Option<crate::mux::ControlCommand>,
    /// `-E`: the log file.
    log_file: Option<String>,
    /// `-G`.
    print_config: bool,
    /// `KnownHostsCommand`: its words as written (`None` for `none`).
    known_hosts_command: Option<Option<Vec<String>>>,
    stdio_forward: Option<Destination>,
    flag_log_level: Option<LogLevel>,
    seen_v: bool,
    log_level: Option<LogLevel>,
    known_hosts_files: Option<Vec<String>>,
    global_known_hosts_files: Option<Vec<String>>,
    strict: Option<StrictHostKeyChecking>,
    host_key_alias: Option<String>,
    /// `IgnoreUnknown`: keywords (a pattern list) skipped without a note.
    ignore_unknown: Option<String>,
    /// The command line's options a jump host falls back on where its own ssh_config block
    /// sets nothing (option letter and value; flags have an empty value).
    inherit: Vec<(char, String)>,
    flag_ciphers: Option<String>,
    ciphers: Option<String>,
    flag_macs: Option<String>,
    macs: Option<String>,
    pubkey_accepted_algorithms: Option<String>,
    kex_algorithms: Option<String>,
    host_key_algorithms: Option<String>,
    connect_timeout: Option<Option<Duration>>,
    server_alive_interval: Option<Option<Duration>>,
    server_alive_count_max: Option<u32>,
    exit_on_forward_failure: Option<bool>,
    bind_address: Option<String>,
    bind_interface: Option<String>,
    update_host_keys: Option<bool>,
    connection_attempts: Option<u32>,
    permit_remote_open: Option<crate::remote::PermitRemoteOpen>,
    batch_mode: Option<bool>,
    rekey_limit: Option<RekeyLimit>,
    tcp_keep_alive: Option<bool>,
    reconnect: Option<bool>,
    reconnect_backoff_max: Option<Duration>,
    session_wait_timeout: Option<Duration>,
    compression: Option<bool>,
    gateway_ports: Option<bool>,
    stream_local_bind_mask: Option<u32>,
    stream_local_bind_unlink: Option<bool>,
    flag_address_family: Option<AddressFamily>,
    address_family: Option<AddressFamily>,
    hash_known_hosts: Option<bool>,
    identity_agent: Option<String>,
    identities_only: Option<bool>,
    certificate_files: Vec<String>,
    pubkey_authentication: Option<bool>,
    password_authentication: Option<bool>,
    kbd_interactive_authentication: Option<bool>,
    number_of_password_prompts: Option<u32>,
    preferred_authentications: Option<Vec<String>>,
    password_file: Option<String>,
    password_env: Option<String>,
    passphrase_file: Option<String>,
    passphrase_env: Option<String>,
    kex_guess_file: Option<String>,
    warnings: Vec<String>,
    /// `-F`: the last one given wins, as in ssh.
    config_file: Option<String>,
    notes: Vec<String>,
}

/// Stores `value` unless the slot already has one; says whether it was stored.
fn set_first<T>(slot: &mut Option<T>, value: T) -> bool {
    if slot.is_none() {
        *slot = Some(value);
        true
    } else {
        false
    }
}

/// A port from 1 to 65535, digits only.
fn parse_port(value: &str, source: &'static str) -> Result<u16, CliError> {
    parse_port_allowing_zero(value)
        .filter(|p| *p != 0)
        .ok_or_else(|| CliError::BadPort {
            value: value.to_owned(),
            source,
        })
}

fn parse_port_allowing_zero(value: &str) -> Option<u16> {
    if value.is_empty() || value.len() > 5 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u16>().ok()
}

/// A user name: not empty, no whitespace or control characters.
fn check_user(value: &str, key: &str) -> Result<String, CliError> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CliError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            expected: "a user name without spaces or control characters",
        });
    }
    Ok(value.to_owned())
}

fn scan(args: Vec<String>) -> Result<Scanned, CliError> {
    let mut p = Parsed::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            // `--` ends one run of options. Before the destination, the next word is the
            // destination and options may follow it; after it, the rest is a command.
            if p.host.is_some() {
                if rest.as_slice().is_empty() {
                    break;
                }
                return Err(remote_command(rest.as_slice()));
            }
            match rest.next() {
                Some(dest) => p.destination(dest)?,
                None => break,
            }
            continue;
        }
        match arg.as_str() {
            "--help" => return Ok(Scanned::Help),
            "--version" => return Ok(Scanned::Version),
            _ => {}
        }
        if arg.starts_with("--") {
            return Err(CliError::UnknownOption {
                option: arg.clone(),
            });
        }
        if let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) {
            if let Some(early) = p.cluster(cluster, &mut rest)? {
                return Ok(early);
            }
            continue;
        }
        if p.host.is_some() {
            let mut words = vec![arg.clone()];
            words.extend(rest.cloned());
            return Err(remote_command(&words));
        }
        p.destination(arg)?;
    }
    if p.host.is_none() {
        return Err(CliError::MissingDestination);
    }
    Ok(Scanned::Run(Box::new(p)))
}

fn remote_command(words: &[String]) -> CliError {
    CliError::RemoteCommand {
        command: words.join(" "),
    }
}

impl Parsed {
    fn destination(&mut self, arg: &str) -> Result<(), CliError> {
        let dest = destination::parse(arg)?;
        if let Some(user) = dest.user {
            set_first(&mut self.user, user);
        }
        if let Some(port) = dest.port {
            set_first(&mut self.port, port);
        }
        self.host = Some(dest.host);
        Ok(())
    }

    /// One argument of grouped option letters (without the leading `-`). An option that takes
    /// a value uses the rest of the argument, or the next argument if nothing is left.
    fn cluster(
        &mut self,
        cluster: &str,
        rest: &mut std::slice::Iter<'_, String>,
    ) -> Result<Option<Scanned>, CliError> {
        for (at, letter) in cluster.char_indices() {
            match letter {
                // Things forwarder never does anyway: run a command, read stdin, allocate a
                // terminal, forward X11 or the agent, delegate GSSAPI credentials.
                'N' | 'n' | 'T' | 'x' | 'a' | 'k' => {}
                'G' => self.print_config = true,
                // As in ssh, -f wins over ForkAfterAuthentication from any source.
                'f' => self.fork_after_authentication = Some(true),
                // As in ssh, -M wins over ControlMaster from any source; ssh's -MM (ask, a
                // confirmation per control client) needs ssh-askpass, which forwarder has not.
                'M' => {
                    if self.control_master == Some(ControlMaster::Yes) {
                        return Err(CliError::UnsupportedOption {
                            option: "-MM".into(),
                            why: "ControlMaster ask confirms each control client with \
                                  ssh-askpass, which forwarder does not run; give -M",
                        });
                    }
                    self.control_master = Some(ControlMaster::Yes);
                }
                'v' => {
                    self.flag_log_level = Some(match self.flag_log_level {
                        Some(level) if self.seen_v => level.more_verbose(),
                        _ => LogLevel::Debug1,
                    });
                    self.seen_v = true;
                }
                'q' => self.flag_log_level = Some(LogLevel::Quiet),
                'C' => {
                    self.compression = Some(true);
                    self.inherit.push(('C', String::new()));
                }
                'g' => self.gateway_ports = Some(true),
                '4' | '6' => {
                    self.flag_address_family = Some(if letter == '4' {
                        AddressFamily::Inet
                    } else {
                        AddressFamily::Inet6
                    });
                    self.inherit.push((letter, String::new()));
                }
                'V' => return Ok(Some(Scanned::Version)),
                'h' => return Ok(Some(Scanned::Help)),
                'p' | 'l' | 'i' | 'L' | 'D' | 'R' | 'o' | 'c' | 'm' | 'Q' | 'J' | 'W' | 'F'
                | 'b' | 'B' | 'E' | 'S' | 'O' => {
                    let attached = cluster.get(at + letter.len_utf8()..).unwrap_or_default();
                    let value = if attached.is_empty() {
                        rest.next()
                            .map(String::as_str)
                            .ok_or(CliError::MissingArgument {
                                option: letter,
                                example: example_for(letter),
                            })?
                    } else {
                        attached
                    };
                    if letter == 'Q' {
                        return Ok(Some(Scanned::Query(value.to_owned())));
                    }
                    self.option_value(letter, value)?;
                    return Ok(None);
                }
                other => {
                    return Err(match unsupported_reason(other) {
                        Some(why) => CliError::UnsupportedOption {
                            option: format!("-{other}"),
                            why,
                        },
                        None => CliError::UnknownOption {
                            option: format!("-{other}"),
                        },
                    });
                }
            }
        }
        Ok(None)
    }

    fn option_value(&mut self, letter: char, value: &str) -> Result<(), CliError> {
        if jump::inherited(letter, value) {
            self.inherit.push((letter, value.to_owned()));
        }
        match letter {
            'p' => {
                let port = parse_port(value, "-p")?;
                set_first(&mut self.port, port);
            }
            // As in ssh, the last -E wins, and the path is taken as given.
            'E' => self.log_file = Some(value.to_owned()),
            'b' => {
                let address = config::bind_address("-b", value)?;
                set_first(&mut self.bind_address, address);
            }
            'B' => {
                let interface = config::bind_interface("-B", value)?;
                set_first(&mut self.bind_interface, interface);
            }
            // As in ssh, the last -S wins over the others and over ControlPath.
            'S' => self.control_path = Some(config::control_path("-S", value)?),
            'O' => {
                let command = crate::mux::ControlCommand::parse(value).map_err(|expected| {
                    CliError::BadValue {
                        key: "-O".into(),
                        value: value.to_owned(),
                        expected,
                    }
                })?;
                if self.control_command.is_some() {
                    return Err(CliError::BadValue {
                        key: "-O".into(),
                        value: value.to_owned(),
                        expected: "a single -O",
                    });
                }
                self.control_command = Some(command);
            }
            'l' => {
                let user = check_user(value, "-l")?;
                set_first(&mut self.user, user);
            }
            'i' => {
                if value.is_empty() {
                    return Err(CliError::BadValue {
                        key: "-i".into(),
                        value: String::new(),
                        expected: "the path of a private key file",
                    });
                }
                self.identity_files.push(value.to_owned());
            }
            'L' => self.local_forwards.push(forward::parse_dash_l(value)?),
            'D' => self.local_forwards.push(forward::parse_dash_d(value)?),
            'R' => self.remote_forwards.push(forward::parse_dash_r(value)?),
            'F' => self.config_file = Some(value.to_owned()),
            'J' => {
                let hops = jump::parse_list(value, "-J")?;
                // As in ssh: one -J, and not after -o ProxyJump (whose first value would win
                // without a word).
                if self.proxy_jump.is_some() {
                    return Err(CliError::BadValue {
                        key: "-J".into(),
                        value: value.to_owned(),
                        expected: "a single -J, not a second one or one after -o ProxyJump: \
                                   list the hops in one -J, separated by commas (ssh refuses \
                                   this too)",
                    });
                }
                if self.proxy_command_set {
                    return Err(CliError::JumpAfterProxyCommand);
                }
                let some = !hops.is_empty();
                if set_first(&mut self.proxy_jump, hops) && some {
                    self.proxy_command_set = true;
                }
            }
            'W' => {
                if self.stdio_forward.is_some() {
                    return Err(CliError::BadValue {
                        key: "-W".into(),
                        value: value.to_owned(),
                        expected: "a single -W: standard input and output go to one place",
                    });
                }
                self.stdio_forward = Some(jump::parse_stdio_forward(value)?);
            }
            'c' => {
                // As in ssh, -c replaces any Ciphers setting, wherever it appears.
                self.flag_ciphers = Some(config::algorithm_list(value, "-c")?);
            }
            'm' => {
                // Likewise -m replaces any MACs setting.
                self.flag_macs = Some(config::algorithm_list(value, "-m")?);
            }
            _ => config::apply(self, value)?,
        }
        Ok(())
    }
}

fn example_for(letter: char) -> &'static str {
    match letter {
        'p' => "-p 2222",
        'b' => "-b 203.0.113.7",
        'B' => "-B eth1",
        'S' => "-S ~/.ssh/cm-%C",
        'O' => "-O exit",
        'E' => "-E /var/log/forwarder.log",
        'l' => "-l alice",
        'i' => "-i ~/.ssh/id_ed25519",
        'L' => "-L 15432:db.internal:5432",
        'R' => "-R 8022:localhost:22",
        'c' => "-c aes256-gcm@openssh.com",
        'm' => "-m hmac-sha2-256-etm@openssh.com",
        'Q' => "-Q cipher",
        'F' => "-F ~/.ssh/other_config",
        'J' => "-J user@jump1:2222,jump2",
        'W' => "-W db.internal:5432",
        'D' => "-D 1080",
        _ => "-o StrictHostKeyChecking=accept-new",
    }
}

/// Why an ssh option letter that forwarder does not take is left out.
fn unsupported_reason(letter: char) -> Option<&'static str> {
    Some(match letter {
        't' => "forwarder never allocates a terminal",
        's' => "subsystems are not supported: forwarder never runs anything on the server",
        'A' => "agent forwarding is not supported",
        'X' | 'Y' => "X11 forwarding is not supported",
        'M' | 'S' | 'O' => "connection sharing (ControlMaster) is not supported",
        'y' => "logging to syslog is not supported; redirect standard error instead",
        'e' => "escape characters need a terminal, which forwarder never has",
        'I' => "PKCS#11 tokens are not supported; use a key file with -i",
        'K' => "GSSAPI authentication is not supported; use a key file with -i",
        'P' => "tags for configuration matching are not supported",
        'w' => "tunnel devices are not supported",
        _ => return None,
    })
}

/// `ControlPersist`: with `-W` and `ControlMaster` `auto` or `yes`, when no master answers
/// at `ControlPath`, a master is started in the background for this `-W` and later ones, and
/// stays as this says; as ssh's `ControlPersist` does for its own master.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ControlPersist {
    /// `no` (the default).
    #[default]
    No,
    /// `yes` or `0`: until stopped (`-O exit`).
    Forever,
    /// A time: until it has had no control client for that long.
    Idle(std::time::Duration),
}

/// `-M` / `ControlMaster`: whether this command serves a control socket (`-O check`, `exit`,
/// `stop`, `-O forward`, `-O cancel`, `-W` from ssh or forwarder) at `ControlPath`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ControlMaster {
    /// `no` (the default): none.
    #[default]
    No,
    /// `yes` (`-M`): serve one; a socket already at the path is left alone, with a warning,
    /// and the tunnel runs without.
    Yes,
    /// `auto`: serve one unless a master already answers at the path (ssh would then share
    /// its connection; forwarder connects on its own and leaves that master its socket).
    Auto,
}
