//! Dialing through the bastion from Rust: a supervised session and streams to hosts behind
//! it, with no local port.
//!
//! ```text
//!  TunnelConfig::builder(host, user)…build() ──> TunnelConfig
//!                                                    │ Dialer::start
//!                                                    ▼
//!  SshConnector::prepare (keys, agent, known_hosts) ──> Supervisor (connect, watch, reconnect with backoff)
//!                                                    │ watch: the current SessionHandle
//!  dialer.dial("db.internal", 5432) ──wait (bounded) for a live session──> open_direct_tcpip
//!                                                    │
//!                                                    ▼
//!                     DialStream (AsyncRead + AsyncWrite + Unpin + Send) ──> your database client
//! ```
//! A [`Dialer`] is what the command line's listeners are without the listeners: one
//! supervised SSH session, replaced when it is lost, and a channel per [`Dialer::dial`].
//! A dial made while no session is up waits for the next one, up to the configuration's
//! `session_wait_timeout` (or the wait given to [`Dialer::dial_timeout`]). A stream that
//! was open when its session ended fails: reads and writes return an error (never a clean
//! end of data that a database driver could take for a complete answer); dial again for a
//! stream on the next session.
//!
//! A library never prompts: the configuration built by [`TunnelConfigBuilder`] has
//! `BatchMode` on, so passwords and passphrases come only from the sources named in its
//! options (`PasswordFile`, `PasswordEnv`, `PassphraseFile`, `PassphraseEnv`) or an agent.
//!
//! ```no_run
//! use forwarder::config::TunnelConfig;
//! use forwarder::dial::Dialer;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = TunnelConfig::builder("bastion.example.com", "analytics")
//!     .port(22)
//!     .identity_file("/etc/service/id_ed25519")
//!     .known_hosts_file("/etc/service/known_hosts")
//!     .build()?;
//! let dialer = Dialer::start(config).await?;
//! let mut stream = dialer.dial("db.internal", 5432).await?;
//! stream.write_all(b"hello").await?;
//! let mut reply = [0u8; 5];
//! stream.read_exact(&mut reply).await?;
//! dialer.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The reason codes of a refused channel (RFC 4254), as [`DialError::ChannelRefused`] carries.
pub use ssh_connection::OpenFailureReason;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::cli::{self, Command, Environment};
use crate::config::{ConfigError, TunnelConfig};
use crate::connect::SshConnector;
use crate::driver::{ChannelStream, OpenError};
use crate::local::Peer;
use crate::supervisor::{
    BastionGate, FailureKind, SessionState, Supervisor, SupervisorHandle, WaitError,
};
use crate::tunnel::{Destination, Target};

/// Why a dial (or starting a dialer) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialError {
    /// The bastion's host key is unknown, changed or not trusted: never retried.
    HostKey(String),
    /// The bastion refused every authentication method offered (the dialer keeps
    /// retrying at the backoff cap; this is the reason no session came up in time).
    Auth(String),
    /// The bastion refused the channel (`PermitOpen`, the target refused or unreachable).
    ChannelRefused {
        /// The reason code the server sent.
        reason: OpenFailureReason,
        /// The server's explanation, sanitized.
        description: String,
    },
    /// No session came up within this wait (the bastion unreachable, or reconnecting).
    Timeout(Duration),
    /// The supervisor gave up for another reason (reconnecting is off and the session was
    /// lost, for instance).
    Session(String),
    /// A setting cannot be used, or a file it names cannot be read.
    Config(String),
    /// The dialer was shut down.
    Stopped,
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HostKey(why) => write!(f, "the bastion's host key is not trusted: {why}"),
            Self::Auth(why) => write!(f, "the bastion refused authentication: {why}"),
            Self::ChannelRefused {
                reason,
                description,
            } => {
                write!(f, "the bastion refused the channel ({reason})")?;
                if !description.is_empty() {
                    write!(f, ": {description}")?;
                }
                Ok(())
            }
            Self::Timeout(d) => write!(f, "no SSH session came up within {:.1} s", d.as_secs_f64()),
            Self::Session(why) => write!(f, "the SSH session ended: {why}"),
            Self::Config(why) => write!(f, "invalid configuration: {why}"),
            Self::Stopped => f.write_str("the dialer has been shut down"),
        }
    }
}

impl std::error::Error for DialError {}

impl From<ConfigError> for DialError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e.0)
    }
}

/// Builds a [`TunnelConfig`] from code, through the command line's own parser and checks
/// (so every `-o` setting means what it means to `forwarder`), with `BatchMode` on.
#[derive(Clone, Debug)]
pub struct TunnelConfigBuilder {
    host: String,
    user: String,
    port: Option<u16>,
    identity_files: Vec<PathBuf>,
    known_hosts_files: Option<Vec<PathBuf>>,
    options: Vec<(String, String)>,
    session_wait_timeout: Option<Duration>,
}

impl TunnelConfig {
    /// A builder for a configuration with no forwards, for a [`Dialer`]: log in to `host`
    /// as `user`.
    pub fn builder(host: impl Into<String>, user: impl Into<String>) -> TunnelConfigBuilder {
        TunnelConfigBuilder {
            host: host.into(),
            user: user.into(),
            port: None,
            identity_files: Vec::new(),
            known_hosts_files: None,
            options: Vec::new(),
            session_wait_timeout: None,
        }
    }
}

impl TunnelConfigBuilder {
    /// The bastion's SSH port (22 unless given).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// A private key file to offer (repeatable, tried in order); without any, the defaults
    /// `~/.ssh/id_ed25519` and `~/.ssh/id_rsa` are tried when they exist.
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_files.push(path.into());
        self
    }

    /// A known_hosts file the bastion's key is checked against (repeatable); without any,
    /// `~/.ssh/known_hosts`.
    pub fn known_hosts_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.known_hosts_files
            .get_or_insert_with(Vec::new)
            .push(path.into());
        self
    }

    /// Any other ssh_config setting, as `-o key=value` (see `forwarder --help`), for
    /// instance `("ServerAliveInterval", "10")` or `("PasswordEnv", "BASTION_PASSWORD")`.
    /// `BatchMode` cannot be turned off.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// How long a dial made while no session is up waits for one (`SessionWaitTimeout`,
    /// 60 s unless given).
    pub fn session_wait_timeout(mut self, wait: Duration) -> Self {
        self.session_wait_timeout = Some(wait);
        self
    }

    /// Checks the settings and resolves them into a configuration.
    pub fn build(self) -> Result<TunnelConfig, ConfigError> {
        // The first value of a setting wins, so BatchMode comes first.
        // No ssh_config file: an embedded tunnel is configured by its builder alone.
        let mut args: Vec<String> = vec![
            "-F".into(),
            "none".into(),
            "-o".into(),
            "BatchMode=yes".into(),
        ];
        for (key, value) in &self.options {
            args.push("-o".into());
            args.push(format!("{key}={value}"));
        }
        args.push("-l".into());
        args.push(self.user.clone());
        if let Some(port) = self.port {
            args.push("-p".into());
            args.push(port.to_string());
        }
        if self.host.is_empty() || self.host.starts_with('-') || self.host.contains('@') {
            return Err(ConfigError(format!(
                "{:?} is not a host name or address",
                self.host
            )));
        }
        args.push(self.host.clone());
        let mut opts = match cli::parse_args_with_env(args, &Environment::from_process()) {
            Ok(Command::Run(opts)) => opts,
            Ok(_) => return Err(ConfigError("not a session's settings".into())),
            Err(e) => return Err(ConfigError(e.to_string())),
        };
        if !self.identity_files.is_empty() {
            opts.identity_files = self.identity_files;
            opts.default_identity_files = false;
        }
        if let Some(files) = self.known_hosts_files {
            opts.user_known_hosts_files = files;
        }
        for w in &opts.warnings {
            tracing::warn!("{w}");
        }
        let mut config = TunnelConfig::from_options(&opts)?;
        if let Some(wait) = self.session_wait_timeout {
            config.session_wait_timeout = wait;
        }
        Ok(config)
    }
}

/// One supervised SSH session to dial through; dropping it (or [`Dialer::shutdown`])
/// disconnects. Share it between tasks behind an [`Arc`].
#[derive(Debug)]
pub struct Dialer {
    handle: SupervisorHandle,
    supervisor: Option<Supervisor>,
    wait: Duration,
}

impl Dialer {
    /// Reads the identities `config` names and starts the supervised session in the
    /// background (the tokio runtime's); returns at once. Unlike the command line, a failed
    /// first attempt is retried like any other (a service may start while the bastion is
    /// down); only an untrusted host key or an unusable setting ends the dialer, and a dial
    /// reports it. [`Dialer::ready`] waits for the first session. `config.forwards` is
    /// ignored.
    pub async fn start(config: TunnelConfig) -> Result<Dialer, DialError> {
        Self::start_with_gate(config, BastionGate::new()).await
    }

    /// [`Dialer::start`], sharing `gate` (four handshakes at a time, sshd's penalties) with
    /// other dialers or tunnels to the same bastion.
    pub async fn start_with_gate(
        config: TunnelConfig,
        gate: Arc<BastionGate>,
    ) -> Result<Dialer, DialError> {
        if config.session_wait_timeout.is_zero() {
            return Err(DialError::Config(
                "the session wait must be longer than zero".into(),
            ));
        }
        let supervisor = SshConnector::supervise(config.session, false, gate).await;
        Ok(Dialer {
            handle: supervisor.handle(),
            supervisor: Some(supervisor),
            wait: config.session_wait_timeout,
        })
    }

    /// Waits up to `wait` for a live session (for a service that wants to fail at start-up
    /// when the bastion cannot be reached).
    pub async fn ready(&self, wait: Duration) -> Result<(), DialError> {
        self.handle
            .session(wait)
            .await
            .map(drop)
            .map_err(|e| self.wait_error(e))
    }

    /// A stream to `host:port` as the bastion resolves and reaches it, waiting for a live
    /// session up to the configuration's `session_wait_timeout`.
    pub async fn dial(&self, host: &str, port: u16) -> Result<DialStream, DialError> {
        self.dial_timeout(host, port, self.wait).await
    }

    /// [`Dialer::dial`] with its own bound: the whole dial (waiting for a session and
    /// opening the channel) takes at most `wait`. A session lost while the channel was
    /// opening is waited out too: the dial goes on with the next session.
    pub async fn dial_timeout(
        &self,
        host: &str,
        port: u16,
        wait: Duration,
    ) -> Result<DialStream, DialError> {
        let target = Destination::Tcp(Target {
            host: host.to_owned(),
            port,
        });
        self.dial_to(&target, wait).await
    }

    /// A stream to the Unix socket at `path` on the bastion (a `direct-streamlocal@openssh.com`
    /// channel, as `ssh -L port:/path` opens: OpenSSH's sshd allows them unless
    /// `AllowStreamLocalForwarding` says otherwise), waiting for a live session up to the
    /// configuration's `session_wait_timeout`.
    pub async fn dial_unix(&self, path: &str) -> Result<DialStream, DialError> {
        self.dial_unix_timeout(path, self.wait).await
    }

    /// [`Dialer::dial_unix`] with its own bound, as [`Dialer::dial_timeout`].
    pub async fn dial_unix_timeout(
        &self,
        path: &str,
        wait: Duration,
    ) -> Result<DialStream, DialError> {
        self.dial_to(&Destination::Unix(path.to_owned()), wait)
            .await
    }

    async fn dial_to(&self, target: &Destination, wait: Duration) -> Result<DialStream, DialError> {
        let deadline = crate::supervisor::deadline_after(wait);
        loop {
            if self.handle.is_stopping() {
                return Err(DialError::Stopped);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let session = match self.handle.session(left).await {
                Ok(s) => s,
                Err(WaitError::Timeout(_)) => {
                    return Err(self.wait_error(WaitError::Timeout(wait)));
                }
                Err(e) => return Err(self.wait_error(e)),
            };
            let open = crate::tunnel::open_channel(&session, target, &Peer::OURSELVES);
            match tokio::time::timeout_at(deadline, open).await {
                Err(_) => return Err(DialError::Timeout(wait)),
                Ok(Ok(inner)) => return Ok(DialStream { inner }),
                Ok(Err(OpenError::Refused {
                    reason,
                    description,
                })) => {
                    return Err(DialError::ChannelRefused {
                        reason,
                        description,
                    });
                }
                // The session ended while the channel was opening: wait for the next one.
                Ok(Err(_)) => {}
            }
        }
    }

    /// What the session is doing now.
    pub fn state(&self) -> SessionState {
        self.handle.state()
    }

    /// The supervisor's handle, for callers that watch its state.
    pub fn supervisor(&self) -> SupervisorHandle {
        self.handle.clone()
    }

    /// Disconnects and waits (up to 2 s) for the DISCONNECT to leave; dials fail with
    /// [`DialError::Stopped`] from then on, and open streams end with an error.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.supervisor.take() {
            s.shutdown(Duration::from_secs(2)).await;
        }
    }

    fn wait_error(&self, e: WaitError) -> DialError {
        let failure = self.handle.last_failure();
        match e {
            WaitError::Stopped => DialError::Stopped,
            WaitError::Failed(why) => match failure.map(|f| f.kind) {
                Some(FailureKind::HostKey) => DialError::HostKey(why),
                Some(FailureKind::Config) => DialError::Config(why),
                Some(FailureKind::Auth) => DialError::Auth(why),
                _ => DialError::Session(why),
            },
            // Timed out while the attempts fail for a reason a person must fix: say which.
            WaitError::Timeout(wait) => match failure {
                Some(f) if f.kind == FailureKind::Auth => DialError::Auth(f.message),
                _ => DialError::Timeout(wait),
            },
        }
    }
}

impl Drop for Dialer {
    fn drop(&mut self) {
        self.handle.stop();
    }
}

/// A stream to a host behind the bastion: one `direct-tcpip` channel. Shutting down the
/// write side sends EOF to the host; dropping the stream closes the channel. When the
/// session carrying it ends, reads and writes fail with [`io::ErrorKind::ConnectionAborted`].
#[derive(Debug)]
pub struct DialStream {
    inner: ChannelStream,
}

impl DialStream {
    /// The channel underneath.
    pub fn into_inner(self) -> ChannelStream {
        self.inner
    }
}

impl AsyncRead for DialStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for DialStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_stream<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>() {}
    fn assert_shared<T: Send + Sync>() {}

    #[test]
    fn streams_and_dialers_can_move_between_tasks() {
        assert_stream::<DialStream>();
        assert_shared::<Dialer>();
        assert_shared::<DialError>();
    }

    #[test]
    fn the_builder_uses_the_command_line_parser_with_batch_mode_on() {
        let c = TunnelConfig::builder("Bastion.Example.com", "svc")
            .port(2222)
            .identity_file("/keys/id")
            .known_hosts_file("/keys/known_hosts")
            .option("BatchMode", "no")
            .option("ServerAliveInterval", "5")
            .session_wait_timeout(Duration::from_secs(7))
            .build()
            .unwrap();
        assert_eq!(c.session.host, "bastion.example.com");
        assert_eq!(c.session.port, 2222);
        assert_eq!(c.session.user, "svc");
        assert!(c.session.options.batch_mode);
        assert_eq!(
            c.session.options.identity_files,
            [PathBuf::from("/keys/id")]
        );
        assert!(!c.session.options.default_identity_files);
        assert_eq!(
            c.session.options.user_known_hosts_files,
            [PathBuf::from("/keys/known_hosts")]
        );
        assert_eq!(
            c.session.server_alive.map(|a| a.interval),
            Some(Duration::from_secs(5))
        );
        assert_eq!(c.session_wait_timeout, Duration::from_secs(7));
        assert!(c.forwards.is_empty());
        // IPv6 literals, with or without brackets.
        for host in ["::1", "[::1]"] {
            let c = TunnelConfig::builder(host, "svc").build().unwrap();
            assert_eq!((c.session.host.as_str(), c.session.port), ("::1", 22));
        }
    }

    #[test]
    fn the_builder_refuses_what_the_command_line_refuses() {
        let bad = TunnelConfig::builder("bastion", "svc")
            .option("Ciphers", "rot13")
            .build();
        assert!(bad.is_err(), "{bad:?}");
        for host in ["", "-oProxyCommand=x", "a@b"] {
            assert!(
                TunnelConfig::builder(host, "svc").build().is_err(),
                "{host}"
            );
        }
    }

    #[test]
    fn errors_read_well() {
        let e = DialError::ChannelRefused {
            reason: OpenFailureReason::ADMINISTRATIVELY_PROHIBITED,
            description: "open failed".into(),
        };
        assert_eq!(
            e.to_string(),
            "the bastion refused the channel (administratively prohibited): open failed"
        );
    }
}
