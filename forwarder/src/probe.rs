//! Probes: does the expected database answer at a tunnel's remote?
//!
//! ```text
//!  fleet (every probe_interval) ──opens a channel──> remote ──stream──> run(spec, stream)
//!     postgres: SSLRequest ──> 'N' ──> close                               Ok
//!                          └─> 'S' ──> TLS handshake ──> close_notify ──> Ok
//!     mysql:    <── greeting (protocol 10) ──> [login, COM_QUIT] ──> close Ok
//!     tcp:      the channel opened                                         Ok
//!     anything else answering: SSH, HTTP, TLS, another database, silence   Err(what it looked like)
//! ```
//!
//! A probe runs every few seconds for as long as the fleet runs, so it must not leave a trace
//! in the database's logs or counters. What the servers record, observed with PostgreSQL 15
//! and MariaDB 10.11 at their default log settings:
//!
//! * PostgreSQL, TLS off: it answers `N`; a client that then closes without a startup packet
//!   is not logged at all (the server stays quiet about an EOF before the first byte).
//! * PostgreSQL, TLS on: it answers `S`. Closing right then is logged ("could not accept SSL
//!   connection: EOF detected"), and so is closing after the handshake without a TLS
//!   close_notify ("could not receive data from client: Connection reset by peer"). Completing
//!   the handshake and closing the TLS session with close_notify is not logged, so that is
//!   what this probe does. (A StartupMessage would be worse: it ends in a logged failed
//!   login.)
//! * MariaDB: every way of leaving before authenticating is logged at the default
//!   `log_warnings = 2` ("Aborted connection ... (This connection closed normally without
//!   authentication)"): closing after the greeting, a half-close, a reset, a COM_QUIT instead
//!   of a handshake response ("Bad handshake"), a TLS request then close, waiting for
//!   `connect_timeout`. From any host but 127.0.0.1/::1 each of these also counts as a
//!   handshake error against `max_connect_errors`, so a probe that runs forever would end up
//!   blocking the host ("Host ... is blocked because of many connection errors") for every
//!   client behind the same bastion. A login that fails is logged too ("Access denied"). The
//!   one silent way is a successful login followed by COM_QUIT, which needs credentials: give
//!   [`ProbeSpec::mysql_login`] (a user with no privileges is enough: `CREATE USER probe
//!   IDENTIFIED BY '...'`). Without it the probe reads the greeting and closes, and each
//!   probe costs a warning line in the error log and, from a non-loopback address, one
//!   handshake error counted for the bastion's address (a successful login from that host
//!   resets the count, but `max_connect_errors`, 100 by default, is reached within 100
//!   probes if nothing else logs in).
//!
//! Every read and write is bounded by [`ProbeSpec::timeout`] (one deadline for the whole
//! probe), every length read from the peer is capped ([`MAX_PACKET`]), and everything the peer
//! sends that ends up in a message is cut short and stripped of control characters.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use core::fmt;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::time::Instant;
use zeroize::Zeroizing;

/// How long a probe may take when the fleet file does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest MySQL packet or first answer the probe accepts. A greeting is about 100 bytes,
/// so anything near this is not a database answering.
pub const MAX_PACKET: usize = 64 * 1024;

/// What to check at a tunnel's remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// A PostgreSQL server: SSLRequest, and a TLS handshake if it offers TLS.
    Postgres,
    /// A MySQL or MariaDB server: its greeting, and a login when credentials are given.
    Mysql,
    /// Only that the channel to the remote opens (the bastion could connect).
    Tcp,
    /// No probe. The caller should not open a channel at all; [`run`] answers
    /// `Ok("not probed")` without touching the stream.
    None,
}

impl ProbeKind {
    /// Every kind, in the order the error message of [`FromStr`] lists them.
    pub const ALL: [ProbeKind; 4] = [
        ProbeKind::Postgres,
        ProbeKind::Mysql,
        ProbeKind::Tcp,
        ProbeKind::None,
    ];

    /// The name used in the fleet file.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Postgres => "postgres",
            ProbeKind::Mysql => "mysql",
            ProbeKind::Tcp => "tcp",
            ProbeKind::None => "none",
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProbeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProbeKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ProbeKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown probe {:?}: expected one of {}",
                    sanitize(s.as_bytes(), 40),
                    names.join(", ")
                )
            })
    }
}

/// Credentials for the `mysql` probe: with them it logs in and quits, which MariaDB and MySQL
/// do not log; without them it leaves after the greeting, which they do log (see the module
/// docs). Only `mysql_native_password` accounts are supported.
#[derive(Clone)]
pub struct MysqlLogin {
    /// The account name.
    pub user: String,
    /// Its password (empty for none).
    pub password: Zeroizing<String>,
}

impl MysqlLogin {
    /// `user` with the password in `file` (`probe_password_file`): its text without the line
    /// end, at most 4 KiB, UTF-8; the bytes read are wiped after use.
    pub fn read(user: &str, file: &std::path::Path) -> Result<Self, String> {
        let text = Zeroizing::new(
            crate::files::read_bounded(file, 4096)
                .map_err(|e| format!("probe_password_file {}: {e}", file.display()))?,
        );
        let password = std::str::from_utf8(&text)
            .map_err(|_| format!("probe_password_file {}: not UTF-8", file.display()))?;
        Ok(Self {
            user: user.to_owned(),
            password: Zeroizing::new(password.trim_end_matches(['\n', '\r']).to_owned()),
        })
    }
}

impl fmt::Debug for MysqlLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlLogin")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One probe's settings.
#[derive(Clone, Debug)]
pub struct ProbeSpec {
    /// What to check.
    pub kind: ProbeKind,
    /// For [`ProbeKind::Mysql`]: log in with these (recommended, see [`MysqlLogin`]).
    pub mysql_login: Option<MysqlLogin>,
    /// The deadline for the whole probe, from the call of [`run`] to its answer.
    pub timeout: Duration,
}

impl ProbeSpec {
    /// A probe of `kind` without credentials and with [`DEFAULT_TIMEOUT`].
    pub fn new(kind: ProbeKind) -> ProbeSpec {
        ProbeSpec {
            kind,
            mysql_login: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Runs the probe over `stream` (a channel opened to the tunnel's remote) and closes it.
///
/// `Ok(detail)` when the expected service answered, e.g. `"postgres: TLS offered, handshake
/// completed (TLSv1_3, TLS13_AES_256_GCM_SHA384)"` or `"mysql: MariaDB 10.11.6
/// (10.11.6-MariaDB-0+deb12u1), logged in as probe"`. `Err(detail)` otherwise, saying what
/// answered instead: `"expected PostgreSQL, got an SSH server: SSH-2.0-OpenSSH_9.2p1"`,
/// `"nothing answered within 5 s"`, `"connection closed before any answer"`, or the
/// database's own refusal. Never takes longer than `spec.timeout` (plus scheduling).
pub async fn run<S>(spec: &ProbeSpec, stream: S) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut conn = Conn::new(stream, spec.timeout);
    match spec.kind {
        ProbeKind::Postgres => postgres(conn).await,
        ProbeKind::Mysql => mysql(conn, spec.mysql_login.as_ref()).await,
        ProbeKind::Tcp => {
            // EOF to the remote, without waiting for whatever listens there to close.
            let _ = tokio::time::timeout_at(conn.deadline, conn.stream.shutdown()).await;
            Ok("tcp: channel opened".to_owned())
        }
        ProbeKind::None => Ok("not probed".to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// The stream, under one deadline.

/// What a bounded read got.
enum Got {
    Bytes(usize),
    Eof,
    TimedOut,
    Failed(io::Error),
}

struct Conn<S> {
    stream: S,
    deadline: Instant,
    timeout: Duration,
    /// MySQL bytes read past the end of the last packet.
    pending: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S, timeout: Duration) -> Conn<S> {
        Conn {
            stream,
            deadline: Instant::now() + timeout,
            timeout,
            pending: Vec::new(),
        }
    }

    async fn read_some(&mut self, buf: &mut [u8]) -> Got {
        match tokio::time::timeout_at(self.deadline, self.stream.read(buf)).await {
            Err(_) => Got::TimedOut,
            Ok(Ok(0)) => Got::Eof,
            Ok(Ok(n)) => Got::Bytes(n),
            Ok(Err(e)) => Got::Failed(e),
        }
    }

    async fn send(&mut self, bytes: &[u8], what: &str) -> Result<(), String> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout_at(self.deadline, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("could not send {what}: {e}")),
            Err(_) => Err(format!(
                "could not send {what} within {}",
                seconds(self.timeout)
            )),
        }
    }

    /// Half-closes (EOF to the server), then waits, within the deadline, for the server to
    /// close its side, so that neither side resets the connection. Errors do not matter here.
    async fn close(&mut self) {
        let _ = tokio::time::timeout_at(self.deadline, self.stream.shutdown()).await;
        drain(&mut self.stream, self.deadline).await;
    }

    /// Reads one MySQL packet: `(sequence id, payload)`. On failure, the error and what had
    /// arrived of the packet.
    async fn mysql_packet(&mut self) -> Result<(u8, Vec<u8>), (PacketError, Vec<u8>)> {
        let mut buf = std::mem::take(&mut self.pending);
        let mut chunk = [0u8; 4096];
        loop {
            match mysql_frame(&buf) {
                MysqlFrame::Complete { seq, len } => {
                    let rest = buf.split_off((4 + len).min(buf.len()));
                    self.pending = rest;
                    buf.drain(..4.min(buf.len()));
                    return Ok((seq, buf));
                }
                MysqlFrame::TooLong(len) => return Err((PacketError::TooLong(len), buf)),
                MysqlFrame::Incomplete => {}
            }
            match self.read_some(&mut chunk).await {
                Got::Bytes(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Got::Eof => return Err((PacketError::Eof, buf)),
                Got::TimedOut => return Err((PacketError::TimedOut, buf)),
                Got::Failed(e) => return Err((PacketError::Failed(e), buf)),
            }
        }
    }
}

/// How long a probe that got its answer waits for the server to close after the probe did.
/// The databases close at once; this only bounds the wait for a server that does not.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Reads and discards until EOF, an error, the deadline, or [`CLOSE_GRACE`].
async fn drain<S: AsyncRead + Unpin>(stream: &mut S, deadline: Instant) {
    let mut sink = [0u8; 1024];
    let deadline = deadline.min(Instant::now() + CLOSE_GRACE);
    let _ = tokio::time::timeout_at(deadline, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

enum PacketError {
    TooLong(usize),
    Eof,
    TimedOut,
    Failed(io::Error),
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL.

/// The SSLRequest: length 8, then the code 1234 5679 (80877103).
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// How a server answered an SSLRequest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SslAnswer {
    /// `S`: PostgreSQL, ready for a TLS handshake.
    Tls,
    /// `N`: PostgreSQL without TLS.
    Plain,
    /// Something else, described.
    Other(String),
}

/// Classifies the first bytes answering an SSLRequest. PostgreSQL answers with exactly one
/// byte and then waits, so `S` or `N` followed by more bytes is something else (an SSH
/// server's banner also starts with `S`).
pub fn classify_ssl_answer(answer: &[u8]) -> SslAnswer {
    match answer {
        [b'S'] => SslAnswer::Tls,
        [b'N'] => SslAnswer::Plain,
        _ => SslAnswer::Other(classify_first_bytes(answer)),
    }
}

async fn postgres<S>(mut conn: Conn<S>) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    conn.send(&SSL_REQUEST, "the SSLRequest").await?;
    let mut answer = [0u8; 512];
    let n = match conn.read_some(&mut answer).await {
        Got::Bytes(n) => n,
        Got::Eof => return Err("connection closed before any answer".to_owned()),
        Got::TimedOut => {
            return Err(format!("nothing answered within {}", seconds(conn.timeout)));
        }
        Got::Failed(e) => return Err(format!("reading the answer to the SSLRequest: {e}")),
    };
    match classify_ssl_answer(answer.get(..n).unwrap_or_default()) {
        SslAnswer::Plain => {
            // No startup packet follows: PostgreSQL does not log an EOF here.
            conn.close().await;
            Ok("postgres: TLS not offered (answered N to the SSLRequest)".to_owned())
        }
        SslAnswer::Tls => postgres_tls(conn).await,
        SslAnswer::Other(what) => Err(format!("expected PostgreSQL, got {what}")),
    }
}

async fn postgres_tls<S>(conn: Conn<S>) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let config = tls_config()?;
    let deadline = conn.deadline;
    let timeout = conn.timeout;
    let tap = Tap {
        inner: conn.stream,
        seen: Vec::new(),
    };
    // The name is neither sent (SNI is off) nor checked (see `AnyServerCert`).
    let name = ServerName::try_from("postgres")
        .map_err(|e| format!("internal error: a TLS server name: {e}"))?;
    let connect = tokio_rustls::TlsConnector::from(config)
        .connect(name, tap)
        .into_fallible();
    let mut tls = match tokio::time::timeout_at(deadline, connect).await {
        Ok(Ok(tls)) => tls,
        Ok(Err((e, tap))) => return Err(tls_failure(&e, &tap.seen)),
        Err(_) => {
            return Err(format!(
                "expected PostgreSQL: it answered S (TLS) to the SSLRequest, but the TLS \
                 handshake did not finish within {}",
                seconds(timeout)
            ));
        }
    };
    let (_, session) = tls.get_ref();
    let version = session
        .protocol_version()
        .map_or_else(|| "TLS".to_owned(), |v| format!("{v:?}"));
    let suite = session
        .negotiated_cipher_suite()
        .map_or_else(String::new, |s| format!(", {:?}", s.suite()));
    // close_notify, then EOF; PostgreSQL answers with its own close_notify and closes, and
    // logs nothing (without close_notify it logs the connection as reset).
    let _ = tokio::time::timeout_at(deadline, tls.shutdown()).await;
    drain(&mut tls, deadline).await;
    Ok(format!(
        "postgres: TLS offered, handshake completed ({version}{suite})"
    ))
}

fn tls_failure(error: &io::Error, seen: &[u8]) -> String {
    let tls_record = matches!(seen, [0x14..=0x17, 0x03, ..]);
    if seen.is_empty() || tls_record {
        format!(
            "expected PostgreSQL: it answered S (TLS) to the SSLRequest, but the TLS handshake \
             failed: {error}"
        )
    } else {
        // Not TLS after the `S`: say what the whole answer looks like.
        let mut answer = Vec::with_capacity(seen.len() + 1);
        answer.push(b'S');
        answer.extend_from_slice(seen);
        format!("expected PostgreSQL, got {}", classify_first_bytes(&answer))
    }
}

/// The client configuration for the probe's TLS handshakes, built once.
fn tls_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("internal error: TLS configuration: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert))
                .with_no_client_auth();
            config.enable_sni = false;
            // What PostgreSQL 17 expects from a client that offers ALPN; older servers ignore it.
            config.alpn_protocols = vec![b"postgresql".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

/// Accepts any server certificate and any handshake signature.
///
/// The probe asks one question, "is a PostgreSQL server there and able to complete a TLS
/// handshake?", and sends nothing over the session: no password, no query. There is nothing
/// for a certificate check to protect, and the probe has no CA or expected name to check
/// against (the database client behind the tunnel does its own checks, with its own
/// settings). Checking anyway would only make a healthy database look down when its
/// certificate is self-signed, expired, for another name, or one that webpki refuses to
/// parse (an X.509 v1 certificate, as old `openssl x509 -req` recipes make). Since no
/// signature is checked, every scheme TLS defines is offered ([`ALL_SCHEMES`]), not only those
/// the ring provider can verify: a server whose certificate is P-521 or Ed448 must not fail the
/// probe for a check that is never made.
#[derive(Debug)]
struct AnyServerCert;

/// The signature schemes offered in the probe's handshakes: all of them (rustls leaves out of
/// a TLS 1.3 handshake those TLS 1.3 forbids).
const ALL_SCHEMES: [SignatureScheme; 13] = [
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP521_SHA512,
    SignatureScheme::ED448,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA1,
    SignatureScheme::ECDSA_SHA1_Legacy,
];

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ALL_SCHEMES.to_vec()
    }
}

/// A stream that keeps the first bytes read through it, to tell what answered when a TLS
/// handshake fails.
struct Tap<S> {
    inner: S,
    seen: Vec<u8>,
}

const TAP_LIMIT: usize = 512;

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let room = TAP_LIMIT.saturating_sub(this.seen.len());
            let new = buf.filled().get(before..).unwrap_or_default();
            this.seen.extend(new.iter().take(room));
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A PostgreSQL ErrorResponse (`E`, length, fields): `SEVERITY: message`, if `bytes` starts
/// with one. A cut-off message still yields what arrived.
fn postgres_error(bytes: &[u8]) -> Option<String> {
    let (&tag, rest) = bytes.split_first()?;
    let len = rest.get(..4)?;
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    if tag != b'E' || !(5..=MAX_PACKET).contains(&len) {
        return None;
    }
    let body = rest.get(4..len.min(rest.len()))?;
    let (mut severity, mut message) = (None, None);
    for field in body.split(|&b| b == 0) {
        match field.split_first() {
            Some((b'S', text)) => severity = Some(sanitize(text, 20)),
            Some((b'M', text)) => message = Some(sanitize(text, 200)),
            Some((code, _)) if code.is_ascii_alphabetic() => {}
            _ => break,
        }
    }
    let message = message?;
    Some(match severity {
        Some(severity) => format!("{severity}: {message}"),
        None => message,
    })
}

// ---------------------------------------------------------------------------------------------
// MySQL and MariaDB.

/// Capability flags (the low 32 bits the probe uses).
const CLIENT_LONG_PASSWORD: u32 = 1;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
const NATIVE_PASSWORD: &str = "mysql_native_password";
/// utf8mb4_general_ci, for the user name.
const CHARSET_UTF8MB4: u8 = 45;
const COM_QUIT: u8 = 0x01;
/// Longer user names than this are refused before anything is sent (MariaDB allows 80
/// characters, MySQL 32).
const MAX_USER_LEN: usize = 256;

/// How far the bytes at the start of a buffer make a MySQL packet (3-byte little-endian
/// length, sequence id, payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MysqlFrame {
    /// A whole packet: its sequence id and payload length (the payload starts at byte 4).
    Complete {
        /// The sequence id.
        seq: u8,
        /// The payload length.
        len: usize,
    },
    /// Not all of it yet.
    Incomplete,
    /// The length field says more than [`MAX_PACKET`] (or zero): not a packet the probe reads.
    TooLong(usize),
}

/// Frames the first packet in `bytes`.
pub fn mysql_frame(bytes: &[u8]) -> MysqlFrame {
    let Some(&[a, b, c, seq]) = bytes.get(..4) else {
        return MysqlFrame::Incomplete;
    };
    let len = usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16;
    if len == 0 || len > MAX_PACKET {
        MysqlFrame::TooLong(len)
    } else if bytes.len() - 4 < len {
        MysqlFrame::Incomplete
    } else {
        MysqlFrame::Complete { seq, len }
    }
}

/// The initial handshake packet (protocol 10) of a MySQL or MariaDB server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MysqlGreeting {
    /// The version string as sent, control characters removed (MariaDB 10 prefixes it with
    /// `5.5.5-` for old replicas).
    pub server_version: String,
    /// The thread id the server gave this connection.
    pub connection_id: u32,
    /// The server's capability flags (low 32 bits).
    pub capabilities: u32,
    /// The authentication seed (20 bytes from any server of this century).
    pub seed: Vec<u8>,
    /// The default authentication plugin, if the server names one.
    pub auth_plugin: Option<String>,
}

impl MysqlGreeting {
    /// `MariaDB 10.11.6 (10.11.6-MariaDB-0+deb12u1)` or `MySQL 8.0.36`.
    pub fn describe(&self) -> String {
        let raw = self.server_version.as_str();
        let mariadb = raw.contains("MariaDB");
        let shown = match raw.strip_prefix("5.5.5-") {
            Some(rest) if mariadb => rest,
            _ => raw,
        };
        let number_len = shown
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(shown.len());
        let number = shown.get(..number_len).unwrap_or(shown);
        let product = if mariadb { "MariaDB" } else { "MySQL" };
        if number.is_empty() {
            format!("{product} ({shown})")
        } else if number == shown {
            format!("{product} {number}")
        } else {
            format!("{product} {number} ({shown})")
        }
    }
}

/// An ERR packet (`0xff`, error code, optional `#` and SQL state, message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MysqlError {
    /// The error number, e.g. 1045 (access denied) or 1129 (host blocked).
    pub code: u16,
    /// The SQL state, e.g. `28000`, when sent.
    pub state: Option<String>,
    /// The message, control characters removed.
    pub message: String,
}

impl fmt::Display for MysqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            Some(state) => write!(f, "error {} ({state}): {}", self.code, self.message),
            None => write!(f, "error {}: {}", self.code, self.message),
        }
    }
}

/// Parses an ERR packet's payload; `None` if it is not one.
pub fn parse_mysql_error(payload: &[u8]) -> Option<MysqlError> {
    let (&0xff, rest) = payload.split_first()? else {
        return None;
    };
    let code = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?);
    let rest = rest.get(2..)?;
    let (state, message) = match rest.split_first() {
        Some((b'#', after)) if after.len() >= 5 => (
            Some(sanitize(after.get(..5)?, 5)),
            after.get(5..).unwrap_or_default(),
        ),
        _ => (None, rest),
    };
    Some(MysqlError {
        code,
        state,
        message: sanitize(message, 300),
    })
}

/// Parses a server's first packet payload: a greeting, or an error (`Err` with the server's
/// refusal, e.g. "Host ... is blocked" or "Too many connections"), or something else.
pub fn parse_mysql_greeting(payload: &[u8]) -> Result<MysqlGreeting, String> {
    if let Some(error) = parse_mysql_error(payload) {
        return Err(format!("the server refused the connection: {error}"));
    }
    let mut r = Reader(payload);
    match r.u8() {
        Some(10) => {}
        Some(9) => return Err("the server speaks protocol 9 (MySQL before 3.22)".to_owned()),
        Some(other) => return Err(format!("not a greeting (protocol byte {other})")),
        None => return Err("an empty packet".to_owned()),
    }
    let version = r.cstr().ok_or("the greeting's version is cut off")?;
    let connection_id = r.u32().ok_or("the greeting is cut off")?;
    let mut seed = r.take(8).ok_or("the greeting is cut off")?.to_vec();
    r.u8().ok_or("the greeting is cut off")?; // filler
    let mut capabilities = u32::from(r.u16().ok_or("the greeting is cut off")?);
    let mut auth_plugin = None;
    if !r.0.is_empty() {
        // charset, status
        r.take(3).ok_or("the greeting is cut off")?;
        capabilities |= u32::from(r.u16().ok_or("the greeting is cut off")?) << 16;
        let seed_len = usize::from(r.u8().ok_or("the greeting is cut off")?);
        r.take(10).ok_or("the greeting is cut off")?; // reserved (MariaDB: extended flags)
        if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let part2 = seed_len.saturating_sub(8).max(13);
            let part2 = r.take(part2.min(r.0.len())).unwrap_or_default();
            // The second part ends with a NUL that is not part of the seed.
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            seed.extend_from_slice(part2);
        }
        if capabilities & CLIENT_PLUGIN_AUTH != 0 && !r.0.is_empty() {
            // NUL-terminated, though some old servers omit the NUL.
            let name = r.0.split(|&b| b == 0).next().unwrap_or_default();
            auth_plugin = Some(sanitize(name, 64));
        }
    }
    Ok(MysqlGreeting {
        server_version: sanitize(version, 100),
        connection_id,
        capabilities,
        seed,
        auth_plugin,
    })
}

/// The `mysql_native_password` answer to a seed:
/// SHA1(password) XOR SHA1(seed + SHA1(SHA1(password))). Empty for an empty password.
pub fn mysql_native_scramble(password: &[u8], seed: &[u8]) -> Zeroizing<Vec<u8>> {
    use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY as SHA1, digest};
    if password.is_empty() {
        return Zeroizing::new(Vec::new());
    }
    let stage1 = Zeroizing::new(digest(&SHA1, password).as_ref().to_vec());
    let stage2 = digest(&SHA1, &stage1);
    let mut ctx = ring::digest::Context::new(&SHA1);
    ctx.update(seed);
    ctx.update(stage2.as_ref());
    let mask = ctx.finish();
    Zeroizing::new(
        stage1
            .iter()
            .zip(mask.as_ref())
            .map(|(a, b)| a ^ b)
            .collect(),
    )
}

/// The server's answer to a handshake response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MysqlAuthReply {
    /// OK: logged in.
    Ok,
    /// ERR: refused.
    Error(MysqlError),
    /// Auth switch request: use this plugin with this seed.
    Switch {
        /// The plugin the server wants.
        plugin: String,
        /// Its seed (trailing NUL removed).
        seed: Vec<u8>,
    },
    /// Anything else (more authentication data, an old-password switch), described.
    Other(String),
}

/// Classifies the payload of the server's answer to a handshake response or auth switch
/// response.
pub fn parse_mysql_auth_reply(payload: &[u8]) -> MysqlAuthReply {
    match payload.split_first() {
        Some((0x00, _)) => MysqlAuthReply::Ok,
        Some((0xff, _)) => match parse_mysql_error(payload) {
            Some(error) => MysqlAuthReply::Error(error),
            None => MysqlAuthReply::Other("a cut-off error packet".to_owned()),
        },
        Some((0xfe, [])) => MysqlAuthReply::Other(
            "a switch to the pre-4.1 password scheme (mysql_old_password)".to_owned(),
        ),
        Some((0xfe, rest)) => {
            let mut parts = rest.splitn(2, |&b| b == 0);
            let plugin = sanitize(parts.next().unwrap_or_default(), 64);
            let data = parts.next().unwrap_or_default();
            let seed = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
            MysqlAuthReply::Switch { plugin, seed }
        }
        Some((0x01, _)) => MysqlAuthReply::Other(
            "more authentication data (a plugin other than mysql_native_password, such as \
             caching_sha2_password)"
                .to_owned(),
        ),
        Some((other, _)) => MysqlAuthReply::Other(format!("a packet of type 0x{other:02x}")),
        None => MysqlAuthReply::Other("an empty packet".to_owned()),
    }
}

async fn mysql<S>(mut conn: Conn<S>, login: Option<&MysqlLogin>) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (seq, payload) = match conn.mysql_packet().await {
        Ok(packet) => packet,
        Err((error, got)) => return Err(first_packet_failure(error, &got, conn.timeout)),
    };
    let greeting = parse_mysql_greeting(&payload).map_err(|e| {
        if payload.first() == Some(&0xff) {
            format!("mysql: {e}")
        } else {
            // Put the packet back together to describe the whole answer.
            let mut all = Vec::with_capacity(payload.len() + 4);
            let len = payload.len() as u32;
            all.extend_from_slice(len.to_le_bytes().get(..3).unwrap_or_default());
            all.push(seq);
            all.extend_from_slice(&payload);
            format!("expected MySQL, got {} ({e})", classify_first_bytes(&all))
        }
    })?;
    let server = greeting.describe();
    let Some(login) = login else {
        // Logged by the server as an aborted connection; see the module docs.
        conn.close().await;
        return Ok(format!("mysql: {server} (greeting only, no login)"));
    };
    mysql_login(&mut conn, &greeting, seq, login)
        .await
        .map_err(|e| format!("mysql: {server}: {e}"))?;
    // COM_QUIT starts a new command: sequence 0. The server closes without answering.
    conn.send(&[1, 0, 0, 0, COM_QUIT], "COM_QUIT").await?;
    conn.close().await;
    Ok(format!(
        "mysql: {server}, logged in as {}",
        sanitize(login.user.as_bytes(), 80)
    ))
}

/// Logs in with `mysql_native_password`, following one auth switch to it.
async fn mysql_login<S>(
    conn: &mut Conn<S>,
    greeting: &MysqlGreeting,
    greeting_seq: u8,
    login: &MysqlLogin,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let needed = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION;
    if greeting.capabilities & needed != needed {
        return Err("the server lacks the 4.1 protocol; the probe cannot log in".to_owned());
    }
    if login.user.len() > MAX_USER_LEN || login.user.contains('\0') {
        return Err(format!(
            "the user name must be at most {MAX_USER_LEN} bytes without NUL"
        ));
    }
    let plugin_auth = greeting.capabilities & CLIENT_PLUGIN_AUTH != 0;
    let mut capabilities = CLIENT_LONG_PASSWORD | needed;
    if plugin_auth {
        capabilities |= CLIENT_PLUGIN_AUTH;
    }
    let seed = native_seed(&greeting.seed)?;
    let scramble = mysql_native_scramble(login.password.as_bytes(), seed);
    let mut body = Zeroizing::new(Vec::with_capacity(128));
    body.extend_from_slice(&capabilities.to_le_bytes());
    body.extend_from_slice(&(MAX_PACKET as u32).to_le_bytes());
    body.push(CHARSET_UTF8MB4);
    body.extend_from_slice(&[0; 23]);
    body.extend_from_slice(login.user.as_bytes());
    body.push(0);
    body.push(scramble.len() as u8);
    body.extend_from_slice(&scramble);
    if plugin_auth {
        body.extend_from_slice(NATIVE_PASSWORD.as_bytes());
        body.push(0);
    }
    let mut seq = greeting_seq.wrapping_add(1);
    send_packet(conn, seq, &body, "the login").await?;

    let mut switched = false;
    loop {
        let (reply_seq, payload) = conn.mysql_packet().await.map_err(|(error, _)| {
            later_packet_failure(error, conn.timeout, "the answer to the login")
        })?;
        match parse_mysql_auth_reply(&payload) {
            MysqlAuthReply::Ok => return Ok(()),
            MysqlAuthReply::Error(error) => {
                return Err(format!(
                    "login as {} refused: {error}",
                    sanitize(login.user.as_bytes(), 80)
                ));
            }
            MysqlAuthReply::Switch { plugin, seed } if plugin == NATIVE_PASSWORD && !switched => {
                switched = true;
                let seed = native_seed(&seed)?;
                let scramble = mysql_native_scramble(login.password.as_bytes(), seed);
                seq = reply_seq.wrapping_add(1);
                send_packet(conn, seq, &scramble, "the auth switch response").await?;
            }
            MysqlAuthReply::Switch { plugin, .. } => {
                return Err(format!(
                    "the server asks for the {plugin} authentication plugin; the probe only \
                     speaks {NATIVE_PASSWORD} (create the probe user with \
                     IDENTIFIED WITH {NATIVE_PASSWORD})"
                ));
            }
            MysqlAuthReply::Other(what) => {
                return Err(format!(
                    "unexpected answer to the login: {what}; the probe only speaks \
                     {NATIVE_PASSWORD}"
                ));
            }
        }
    }
}

fn native_seed(seed: &[u8]) -> Result<&[u8], String> {
    // Servers send 20 bytes; some clients take the first 20 of a longer one.
    seed.get(..20).ok_or_else(|| {
        format!(
            "the server's seed is {} bytes; {NATIVE_PASSWORD} needs 20",
            seed.len()
        )
    })
}

async fn send_packet<S>(conn: &mut Conn<S>, seq: u8, body: &[u8], what: &str) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&len| len < 1 << 24)
        .ok_or_else(|| format!("{what} is too long"))?;
    let mut packet = Zeroizing::new(Vec::with_capacity(body.len() + 4));
    packet.extend_from_slice(len.to_le_bytes().get(..3).unwrap_or_default());
    packet.push(seq);
    packet.extend_from_slice(body);
    conn.send(&packet, what).await
}

fn first_packet_failure(error: PacketError, got: &[u8], timeout: Duration) -> String {
    if got.is_empty() {
        return match error {
            PacketError::Eof => "connection closed before any answer".to_owned(),
            PacketError::TimedOut => format!("nothing answered within {}", seconds(timeout)),
            PacketError::Failed(e) => format!("reading the greeting: {e}"),
            PacketError::TooLong(_) => "nothing answered".to_owned(),
        };
    }
    let what = classify_first_bytes(got);
    match error {
        PacketError::TooLong(_) => format!("expected MySQL, got {what}"),
        PacketError::Eof => format!("expected MySQL, got {what} (then the connection closed)"),
        PacketError::TimedOut => format!(
            "expected MySQL, got {what} (then nothing more within {})",
            seconds(timeout)
        ),
        PacketError::Failed(e) => format!("expected MySQL, got {what} (then {e})"),
    }
}

fn later_packet_failure(error: PacketError, timeout: Duration, what: &str) -> String {
    match error {
        PacketError::TooLong(len) => {
            format!("{what} is {len} bytes long, over the probe's limit of {MAX_PACKET}")
        }
        PacketError::Eof => format!("the connection closed before {what}"),
        PacketError::TimedOut => format!("no {what} within {}", seconds(timeout)),
        PacketError::Failed(e) => format!("reading {what}: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Telling what answered.

/// Describes what the first bytes a server sent look like, for error messages: "an SSH
/// server: SSH-2.0-OpenSSH_9.2p1", "an HTTP server: HTTP/1.1 200 OK", "a MySQL server:
/// MariaDB 10.11.6", "a PostgreSQL error: FATAL: ...", "a TLS alert", or the first bytes.
pub fn classify_first_bytes(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "no answer".to_owned();
    }
    let line = first_line(bytes);
    if bytes.starts_with(b"SSH-") {
        return format!("an SSH server: {line}");
    }
    if bytes.starts_with(b"HTTP/") {
        return format!("an HTTP server: {line}");
    }
    if let Some(error) = postgres_error(bytes) {
        return format!("a PostgreSQL error: {error}");
    }
    if let MysqlFrame::Complete { seq: 0, len } = mysql_frame(bytes) {
        let payload = bytes.get(4..4 + len).unwrap_or_default();
        match parse_mysql_greeting(payload) {
            Ok(greeting) => return format!("a MySQL server: {}", greeting.describe()),
            Err(_) => {
                if let Some(error) = parse_mysql_error(payload) {
                    return format!("a MySQL server refusing the connection: {error}");
                }
            }
        }
    }
    match bytes {
        [0x15, 0x03, 0..=4, ..] => return "a TLS alert (a TLS server, not PostgreSQL)".to_owned(),
        [0x16, 0x03, 0..=4, ..] => return "a TLS handshake record".to_owned(),
        _ => {}
    }
    for (prefix, what) in [
        (&b"220"[..], "an SMTP or FTP server"),
        (b"+OK", "a POP3 server"),
        (b"-ERR", "a Redis or POP3 error"),
        (b"* OK", "an IMAP server"),
        (b"RFB ", "a VNC server"),
    ] {
        if bytes.starts_with(prefix) {
            return format!("{what}: {line}");
        }
    }
    let text = bytes
        .iter()
        .take(64)
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if text {
        return format!("text: {line}");
    }
    let hex: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let more = if bytes.len() > 16 { " ..." } else { "" };
    format!(
        "{} bytes of something else: {}{more}",
        bytes.len(),
        hex.join(" ")
    )
}

/// The first line of `bytes`, sanitized and cut at 100 characters.
fn first_line(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    sanitize(bytes.get(..end).unwrap_or(bytes), 100)
}

/// Text from the peer, made safe for a log line: lossy UTF-8, control characters shown as
/// escapes, at most `max_chars` characters (then `...`).
fn sanitize(bytes: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i >= max_chars {
            out.push_str("...");
            break;
        }
        // Bidirectional overrides could make the text read differently from what it says.
        if c.is_control() || ssh_transport::text::is_bidi_control(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `5 s`, `1.5 s`, `250 ms`.
fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A cursor over a packet.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    /// Up to a NUL (consumed); `None` without one.
    fn cstr(&mut self) -> Option<&'a [u8]> {
        let end = self.0.iter().position(|&b| b == 0)?;
        let text = self.take(end)?;
        self.take(1)?;
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{DuplexStream, duplex};

    #[test]
    fn server_text_with_a_bidirectional_override_is_escaped() {
        // A version or error text that reorders what a terminal or dashboard shows.
        let shown = sanitize("10.11\u{202e}BDairaM".as_bytes(), 100);
        assert!(!shown.contains('\u{202e}'), "{shown}");
        assert_eq!(shown, "10.11\\u{202e}BDairaM");
    }

    /// A MariaDB 10.11 greeting as the real server sent it (header included).
    const MARIADB_GREETING: &str = "640000000a352e352e352d31302e31312e31392d4d6172696144422d302b\
        64656231327531000f00000042446f235b243f5200fef7080200ff81150000000000001d0000005e5f4577\
        4d574d5d6a215f3d006d7973716c5f6e61746976655f70617373776f726400";

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn mariadb_greeting() -> Vec<u8> {
        unhex(MARIADB_GREETING)
    }

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        out.push(seq);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn kinds_parse_and_print() {
        for kind in ProbeKind::ALL {
            assert_eq!(kind.to_string().parse::<ProbeKind>(), Ok(kind));
        }
        let err = "redis".parse::<ProbeKind>().unwrap_err();
        assert!(err.contains("postgres, mysql, tcp, none"), "{err}");
        let err = "Postgres\n".parse::<ProbeKind>().unwrap_err();
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn kinds_deserialize_from_lowercase_names() {
        #[derive(serde::Deserialize)]
        struct T {
            probe: ProbeKind,
        }
        let t: T = toml::from_str("probe = \"mysql\"").unwrap();
        assert_eq!(t.probe, ProbeKind::Mysql);
        assert!(toml::from_str::<T>("probe = \"oracle\"").is_err());
    }

    #[test]
    fn login_debug_hides_the_password() {
        let login = MysqlLogin {
            user: "probe".into(),
            password: Zeroizing::new("hunter2".into()),
        };
        let shown = format!("{login:?}");
        assert!(
            shown.contains("probe") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn ssl_answers_are_classified() {
        assert_eq!(classify_ssl_answer(b"S"), SslAnswer::Tls);
        assert_eq!(classify_ssl_answer(b"N"), SslAnswer::Plain);
        let other = |bytes: &[u8]| match classify_ssl_answer(bytes) {
            SslAnswer::Other(what) => what,
            answer => panic!("{bytes:?} classified as {answer:?}"),
        };
        assert_eq!(
            other(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"),
            "an SSH server: SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"
        );
        assert_eq!(
            other(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            "an HTTP server: HTTP/1.1 200 OK"
        );
        assert_eq!(
            other(&mariadb_greeting()),
            "a MySQL server: MariaDB 10.11.19 (10.11.19-MariaDB-0+deb12u1)"
        );
        // An old server's refusal: ErrorResponse with severity and message.
        let mut e =
            b"E\0\0\0\0SFATAL\0C0A000\0Munsupported frontend protocol 1234.5679\0\0".to_vec();
        let len = (e.len() - 1) as u32;
        e[1..5].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            other(&e),
            "a PostgreSQL error: FATAL: unsupported frontend protocol 1234.5679"
        );
        assert_eq!(other(b"SN"), "text: SN");
        assert_eq!(
            other(b"\x15\x03\x03\x00\x02\x02\x46"),
            "a TLS alert (a TLS server, not PostgreSQL)"
        );
        assert_eq!(
            other(b"\x00\x01\xfe"),
            "3 bytes of something else: 00 01 fe"
        );
        assert_eq!(other(b""), "no answer");
        // Control characters from the peer never reach a log line raw.
        let shown = other(b"SSH-2.0-\x1b[31mred\x07");
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
    }

    #[test]
    fn mysql_frames_cap_hostile_lengths() {
        assert_eq!(mysql_frame(b""), MysqlFrame::Incomplete);
        assert_eq!(mysql_frame(b"\x05\x00\x00"), MysqlFrame::Incomplete);
        assert_eq!(mysql_frame(b"\x05\x00\x00\x00abcd"), MysqlFrame::Incomplete);
        assert_eq!(
            mysql_frame(b"\x05\x00\x00\x07abcde"),
            MysqlFrame::Complete { seq: 7, len: 5 }
        );
        assert_eq!(
            mysql_frame(b"\xff\xff\xff\x00"),
            MysqlFrame::TooLong(0xff_ffff)
        );
        assert_eq!(mysql_frame(b"\x00\x00\x00\x00"), MysqlFrame::TooLong(0));
        // "SSH-": 0x485353 bytes claimed.
        assert_eq!(mysql_frame(b"SSH-2.0-"), MysqlFrame::TooLong(0x48_5353));
        assert_eq!(
            mysql_frame(&[0x00, 0x00, 0x01, 0x00]),
            MysqlFrame::Incomplete,
            "exactly 64 KiB is allowed"
        );
        assert_eq!(
            mysql_frame(&[0x01, 0x00, 0x01, 0x00]),
            MysqlFrame::TooLong(65537)
        );
    }

    #[test]
    fn real_mariadb_greeting_parses() {
        let bytes = mariadb_greeting();
        let greeting = parse_mysql_greeting(&bytes[4..]).unwrap();
        assert_eq!(greeting.server_version, "5.5.5-10.11.19-MariaDB-0+deb12u1");
        assert_eq!(greeting.connection_id, 15);
        assert_eq!(greeting.seed.len(), 20);
        assert_eq!(
            hex(&greeting.seed),
            "42446f235b243f525e5f45774d574d5d6a215f3d"
        );
        assert_eq!(
            greeting.auth_plugin.as_deref(),
            Some("mysql_native_password")
        );
        assert_eq!(
            greeting.capabilities & CLIENT_PLUGIN_AUTH,
            CLIENT_PLUGIN_AUTH
        );
        assert_eq!(
            greeting.describe(),
            "MariaDB 10.11.19 (10.11.19-MariaDB-0+deb12u1)"
        );
    }

    #[test]
    fn greetings_cut_or_corrupted_anywhere_do_not_panic() {
        let bytes = mariadb_greeting();
        let payload = &bytes[4..];
        for end in 0..payload.len() {
            let _ = parse_mysql_greeting(&payload[..end]);
            let _ = classify_first_bytes(&bytes[..end + 4]);
        }
        // Every byte set to every interesting value.
        for i in 0..payload.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff] {
                let mut p = payload.to_vec();
                p[i] = v;
                if let Ok(g) = parse_mysql_greeting(&p) {
                    assert!(g.seed.len() <= p.len());
                    let _ = g.describe();
                }
            }
        }
        // A greeting claiming a 255-byte seed but ending early.
        let mut p = payload[..payload.len() - 30].to_vec();
        let seed_len_at = 1 + payload.iter().position(|&b| b == 0).unwrap() + 4 + 8 + 1 + 2 + 3 + 2;
        p[seed_len_at] = 0xff;
        let g = parse_mysql_greeting(&p).unwrap();
        assert!(g.seed.len() < 40);
        // No NUL after the version.
        assert!(parse_mysql_greeting(b"\x0a5.7.44").is_err());
        assert!(parse_mysql_greeting(b"").is_err());
        assert!(
            parse_mysql_greeting(b"\x09")
                .unwrap_err()
                .contains("protocol 9")
        );
    }

    #[test]
    fn a_minimal_old_style_greeting_parses() {
        // Version, id, 8 seed bytes, filler, capabilities; nothing more.
        let mut p = b"\x0a5.0.96\0".to_vec();
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        p.extend_from_slice(&0x0200u16.to_le_bytes());
        let g = parse_mysql_greeting(&p).unwrap();
        assert_eq!(g.describe(), "MySQL 5.0.96");
        assert_eq!(g.seed, b"abcdefgh");
        assert_eq!(g.auth_plugin, None);
    }

    #[test]
    fn versions_are_described() {
        let described = |v: &str| {
            MysqlGreeting {
                server_version: v.into(),
                connection_id: 1,
                capabilities: 0,
                seed: vec![],
                auth_plugin: None,
            }
            .describe()
        };
        assert_eq!(described("8.0.36"), "MySQL 8.0.36");
        assert_eq!(described("8.0.36-28"), "MySQL 8.0.36 (8.0.36-28)");
        assert_eq!(
            described("11.4.2-MariaDB"),
            "MariaDB 11.4.2 (11.4.2-MariaDB)"
        );
        assert_eq!(
            described("5.5.5-10.6.18-MariaDB-log"),
            "MariaDB 10.6.18 (10.6.18-MariaDB-log)"
        );
        assert_eq!(described("weird"), "MySQL (weird)");
    }

    #[test]
    fn error_packets_parse_with_and_without_sql_state() {
        let e = parse_mysql_error(
            b"\xff\x15\x04#28000Access denied for user 'probe'@'localhost' (using password: YES)",
        )
        .unwrap();
        assert_eq!(e.code, 1045);
        assert_eq!(e.state.as_deref(), Some("28000"));
        assert_eq!(
            e.to_string(),
            "error 1045 (28000): Access denied for user 'probe'@'localhost' (using password: YES)"
        );
        let e = parse_mysql_error(
            b"\xff\x69\x04Host '10.0.0.5' is blocked because of many connection errors",
        )
        .unwrap();
        assert_eq!(e.code, 1129);
        assert_eq!(e.state, None);
        assert_eq!(
            parse_mysql_error(b"\xff\x15\x04"),
            Some(MysqlError {
                code: 1045,
                state: None,
                message: String::new()
            })
        );
        assert_eq!(parse_mysql_error(b"\xff\x15"), None);
        assert_eq!(parse_mysql_error(b"\xff"), None);
        assert_eq!(parse_mysql_error(b"\x00\x15\x04"), None);
        let err = parse_mysql_greeting(b"\xff\x10\x04Too many connections").unwrap_err();
        assert_eq!(
            err,
            "the server refused the connection: error 1040: Too many connections"
        );
    }

    #[test]
    fn native_scramble_matches_independent_vectors() {
        // Computed with Python's hashlib: sha1(pw) XOR sha1(seed + sha1(sha1(pw))).
        let seed: Vec<u8> = (1..=20).collect();
        assert_eq!(
            hex(&mysql_native_scramble(b"probe-pw", &seed)),
            "bac3e41f32f88be7ca3c785dc829a87fbad47cc9"
        );
        assert_eq!(
            hex(&mysql_native_scramble(b"secret", b"abcdefghijklmnopqrst")),
            "8817c50fa779daef010ee7577825b0847df9842e"
        );
        assert!(mysql_native_scramble(b"", &seed).is_empty());
    }

    #[test]
    fn auth_replies_are_classified() {
        assert_eq!(
            parse_mysql_auth_reply(b"\x00\x00\x00\x02\x00\x00\x00"),
            MysqlAuthReply::Ok
        );
        assert!(matches!(
            parse_mysql_auth_reply(b"\xff\x15\x04#28000Access denied"),
            MysqlAuthReply::Error(MysqlError { code: 1045, .. })
        ));
        assert_eq!(
            parse_mysql_auth_reply(b"\xfemysql_native_password\0abcdefghijklmnopqrst\0"),
            MysqlAuthReply::Switch {
                plugin: "mysql_native_password".into(),
                seed: b"abcdefghijklmnopqrst".to_vec()
            }
        );
        assert_eq!(
            parse_mysql_auth_reply(b"\xfeclient_ed25519"),
            MysqlAuthReply::Switch {
                plugin: "client_ed25519".into(),
                seed: vec![]
            }
        );
        assert!(matches!(
            parse_mysql_auth_reply(b"\xfe"),
            MysqlAuthReply::Other(_)
        ));
        assert!(matches!(
            parse_mysql_auth_reply(b"\x01\x03"),
            MysqlAuthReply::Other(_)
        ));
        assert!(matches!(
            parse_mysql_auth_reply(b""),
            MysqlAuthReply::Other(_)
        ));
        assert!(matches!(
            parse_mysql_auth_reply(b"\x02"),
            MysqlAuthReply::Other(_)
        ));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(seconds(Duration::from_secs(5)), "5 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(seconds(Duration::from_millis(250)), "250 ms");
    }

    // ---- whole probes against scripted servers over an in-memory pipe

    fn spec(kind: ProbeKind) -> ProbeSpec {
        ProbeSpec {
            timeout: Duration::from_millis(500),
            ..ProbeSpec::new(kind)
        }
    }

    fn login(user: &str, password: &str) -> MysqlLogin {
        MysqlLogin {
            user: user.into(),
            password: Zeroizing::new(password.into()),
        }
    }

    /// Runs `probe` against a server task over a duplex pipe; returns the probe's answer and
    /// everything the client sent.
    async fn against<F, Fut>(spec: &ProbeSpec, server: F) -> (Result<String, String>, Vec<u8>)
    where
        F: FnOnce(DuplexStream) -> Fut,
        Fut: std::future::Future<Output = Vec<u8>> + Send + 'static,
    {
        let (client, server_end) = duplex(MAX_PACKET * 2);
        let server = tokio::spawn(server(server_end));
        let answer = tokio::time::timeout(Duration::from_secs(10), run(spec, client))
            .await
            .expect("the probe keeps to its deadline");
        let sent = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server task ends")
            .expect("the server task does not panic");
        (answer, sent)
    }

    /// Reads what the client sends until it closes (or 5 s).
    async fn rest(mut s: DuplexStream, mut sent: Vec<u8>) -> Vec<u8> {
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sent)).await;
        sent
    }

    #[tokio::test]
    async fn probe_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let (client, _server) = duplex(64);
        let spec = spec(ProbeKind::Postgres);
        let fut = run(&spec, client);
        assert_send(&fut);
    }

    #[tokio::test]
    async fn postgres_without_tls_sends_the_ssl_request_and_closes() {
        let (answer, sent) = against(&spec(ProbeKind::Postgres), |mut s| async move {
            let mut req = [0u8; 8];
            s.read_exact(&mut req).await.unwrap();
            s.write_all(b"N").await.unwrap();
            rest(s, req.to_vec()).await
        })
        .await;
        assert_eq!(
            answer.unwrap(),
            "postgres: TLS not offered (answered N to the SSLRequest)"
        );
        assert_eq!(sent, SSL_REQUEST, "nothing after the SSLRequest");
        assert_eq!(
            u32::from_be_bytes(SSL_REQUEST[4..].try_into().unwrap()),
            80877103
        );
    }

    #[tokio::test]
    async fn postgres_probe_names_what_answered_instead() {
        let cases: [(&[u8], &str); 4] = [
            (
                b"SSH-2.0-OpenSSH_9.2p1\r\n",
                "expected PostgreSQL, got an SSH server: SSH-2.0-OpenSSH_9.2p1",
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n",
                "expected PostgreSQL, got an HTTP server: HTTP/1.1 200 OK",
            ),
            (b"NO", "expected PostgreSQL, got text: NO"),
            (
                b"\x16\x03\x01\x00\x05hello",
                "expected PostgreSQL, got a TLS handshake record",
            ),
        ];
        for (reply, expected) in cases {
            let (answer, _) = against(&spec(ProbeKind::Postgres), move |mut s| async move {
                s.write_all(reply).await.unwrap();
                rest(s, Vec::new()).await
            })
            .await;
            assert_eq!(answer.unwrap_err(), expected);
        }
        let greeting = mariadb_greeting();
        let (answer, _) = against(&spec(ProbeKind::Postgres), move |mut s| async move {
            s.write_all(&greeting).await.unwrap();
            rest(s, Vec::new()).await
        })
        .await;
        assert_eq!(
            answer.unwrap_err(),
            "expected PostgreSQL, got a MySQL server: MariaDB 10.11.19 (10.11.19-MariaDB-0+deb12u1)"
        );
    }

    #[tokio::test]
    async fn postgres_s_then_an_ssh_banner_is_not_taken_for_tls() {
        // The banner arrives split right after its first byte.
        let (answer, _) = against(&spec(ProbeKind::Postgres), |mut s| async move {
            s.write_all(b"S").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.write_all(b"SH-2.0-OpenSSH_9.2p1\r\n").await.unwrap();
            rest(s, Vec::new()).await
        })
        .await;
        assert_eq!(
            answer.unwrap_err(),
            "expected PostgreSQL, got an SSH server: SSH-2.0-OpenSSH_9.2p1"
        );
    }

    #[tokio::test]
    async fn silence_and_closing_are_errors_within_the_deadline() {
        for kind in [ProbeKind::Postgres, ProbeKind::Mysql] {
            let started = std::time::Instant::now();
            let (answer, _) = against(&spec(kind), |s| async move {
                // Holds the connection open and says nothing.
                rest(s, Vec::new()).await
            })
            .await;
            assert_eq!(answer.unwrap_err(), "nothing answered within 500 ms");
            assert!(started.elapsed() < Duration::from_secs(3));

            let (answer, _) = against(&spec(kind), |s| async move {
                drop(s);
                Vec::new()
            })
            .await;
            assert_eq!(answer.unwrap_err(), "connection closed before any answer");
        }
    }

    #[tokio::test]
    async fn postgres_s_then_silence_times_out_in_the_handshake() {
        let (answer, _) = against(&spec(ProbeKind::Postgres), |mut s| async move {
            s.write_all(b"S").await.unwrap();
            rest(s, Vec::new()).await
        })
        .await;
        let err = answer.unwrap_err();
        assert!(err.contains("did not finish within 500 ms"), "{err}");
    }

    #[tokio::test]
    async fn postgres_s_then_close_is_a_failed_handshake() {
        let (answer, _) = against(&spec(ProbeKind::Postgres), |mut s| async move {
            let mut req = [0u8; 8];
            s.read_exact(&mut req).await.unwrap();
            s.write_all(b"S").await.unwrap();
            // Read the ClientHello's record header, then hang up.
            let mut header = [0u8; 5];
            s.read_exact(&mut header).await.unwrap();
            assert_eq!(header[0], 0x16, "a TLS handshake record");
            Vec::new()
        })
        .await;
        let err = answer.unwrap_err();
        assert!(err.contains("TLS handshake failed"), "{err}");
    }

    /// A scripted MySQL server: sends the greeting, then answers each client packet with the
    /// next of `replies`; returns everything the client sent.
    fn mysql_server(
        replies: Vec<Vec<u8>>,
    ) -> impl FnOnce(DuplexStream) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send>>
    {
        move |mut s| {
            Box::pin(async move {
                s.write_all(&mariadb_greeting()).await.unwrap();
                let mut sent = Vec::new();
                for reply in replies {
                    let mut header = [0u8; 4];
                    if s.read_exact(&mut header).await.is_err() {
                        return sent;
                    }
                    let len = usize::from(header[0]) | usize::from(header[1]) << 8;
                    let mut body = vec![0u8; len];
                    s.read_exact(&mut body).await.unwrap();
                    sent.extend_from_slice(&header);
                    sent.extend_from_slice(&body);
                    s.write_all(&reply).await.unwrap();
                }
                rest(s, sent).await
            })
        }
    }

    const OK: &[u8] = b"\x00\x00\x00\x02\x00\x00\x00";

    #[tokio::test]
    async fn mysql_login_sends_the_scramble_then_quits() {
        let spec = ProbeSpec {
            mysql_login: Some(login("probe", "probe-pw")),
            ..spec(ProbeKind::Mysql)
        };
        let (answer, sent) = against(&spec, mysql_server(vec![packet(2, OK)])).await;
        assert_eq!(
            answer.unwrap(),
            "mysql: MariaDB 10.11.19 (10.11.19-MariaDB-0+deb12u1), logged in as probe"
        );
        // The handshake response: header with sequence 1, capabilities, max packet, charset,
        // 23 zero bytes, user, scramble, plugin; then COM_QUIT with sequence 0.
        let greeting = mariadb_greeting();
        let seed = parse_mysql_greeting(&greeting[4..]).unwrap().seed;
        let scramble = mysql_native_scramble(b"probe-pw", &seed);
        let mut body = (CLIENT_LONG_PASSWORD
            | CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH)
            .to_le_bytes()
            .to_vec();
        body.extend_from_slice(&(MAX_PACKET as u32).to_le_bytes());
        body.push(45);
        body.extend_from_slice(&[0; 23]);
        body.extend_from_slice(b"probe\0");
        body.push(20);
        body.extend_from_slice(&scramble);
        body.extend_from_slice(b"mysql_native_password\0");
        let mut expected = packet(1, &body);
        expected.extend_from_slice(&packet(0, &[COM_QUIT]));
        assert_eq!(hex(&sent), hex(&expected));
    }

    #[tokio::test]
    async fn mysql_login_follows_a_switch_to_native_password() {
        let new_seed = b"ABCDEFGHIJKLMNOPQRST";
        let mut switch = b"\xfemysql_native_password\0".to_vec();
        switch.extend_from_slice(new_seed);
        switch.push(0);
        let spec = ProbeSpec {
            mysql_login: Some(login("probe", "secret")),
            ..spec(ProbeKind::Mysql)
        };
        let (answer, sent) =
            against(&spec, mysql_server(vec![packet(2, &switch), packet(4, OK)])).await;
        assert!(answer.unwrap().ends_with("logged in as probe"));
        // After the handshake response: the switch response with sequence 3, then COM_QUIT.
        let mut tail = packet(3, &mysql_native_scramble(b"secret", new_seed));
        tail.extend_from_slice(&packet(0, &[COM_QUIT]));
        assert!(hex(&sent).ends_with(&hex(&tail)), "{}", hex(&sent));
    }

    #[tokio::test]
    async fn mysql_login_refusals_and_other_plugins_are_errors() {
        let spec = ProbeSpec {
            mysql_login: Some(login("probe", "wrong")),
            ..spec(ProbeKind::Mysql)
        };
        let denied = packet(
            2,
            b"\xff\x15\x04#28000Access denied for user 'probe'@'10.0.0.5' (using password: YES)",
        );
        let (answer, _) = against(&spec, mysql_server(vec![denied])).await;
        assert_eq!(
            answer.unwrap_err(),
            "mysql: MariaDB 10.11.19 (10.11.19-MariaDB-0+deb12u1): login as probe refused: \
             error 1045 (28000): Access denied for user 'probe'@'10.0.0.5' (using password: YES)"
        );

        let (answer, _) = against(
            &spec,
            mysql_server(vec![packet(
                2,
                b"\xfecaching_sha2_password\0abcdefghijklmnopqrst\0",
            )]),
        )
        .await;
        let err = answer.unwrap_err();
        assert!(
            err.contains("caching_sha2_password authentication plugin"),
            "{err}"
        );

        // A second switch is not followed.
        let mut switch = b"\xfemysql_native_password\0".to_vec();
        switch.extend_from_slice(b"abcdefghijklmnopqrst\0");
        let (answer, _) = against(
            &spec,
            mysql_server(vec![packet(2, &switch), packet(4, &switch)]),
        )
        .await;
        assert!(
            answer
                .unwrap_err()
                .contains("only speaks mysql_native_password")
        );

        // A hostile length after the greeting.
        let (answer, _) = against(&spec, mysql_server(vec![b"\xff\xff\xff\x02".to_vec()])).await;
        let err = answer.unwrap_err();
        assert!(err.contains("over the probe's limit"), "{err}");
    }

    #[tokio::test]
    async fn mysql_without_login_reads_the_greeting_and_closes() {
        let (answer, sent) = against(&spec(ProbeKind::Mysql), mysql_server(vec![])).await;
        assert_eq!(
            answer.unwrap(),
            "mysql: MariaDB 10.11.19 (10.11.19-MariaDB-0+deb12u1) (greeting only, no login)"
        );
        assert!(sent.is_empty());
    }

    #[tokio::test]
    async fn mysql_probe_names_what_answered_instead() {
        let cases: [(&[u8], &str); 4] = [
            (
                b"SSH-2.0-OpenSSH_9.2p1\r\n",
                "expected MySQL, got an SSH server: SSH-2.0-OpenSSH_9.2p1",
            ),
            (
                b"\xff\xff\xff\x00abc",
                "expected MySQL, got 7 bytes of something else: ff ff ff 00 61 62 63",
            ),
            (
                b"\x16\x00\x00\x00\xff\x69\x04Host 'x' is blocked",
                "mysql: the server refused the connection: error 1129: Host 'x' is blocked",
            ),
            (
                b"\x03\x00\x00\x00abc",
                "expected MySQL, got 7 bytes of something else: 03 00 00 00 61 62 63 \
                 (not a greeting (protocol byte 97))",
            ),
        ];
        for (reply, expected) in cases {
            let (answer, _) = against(&spec(ProbeKind::Mysql), move |mut s| async move {
                s.write_all(reply).await.unwrap();
                rest(s, Vec::new()).await
            })
            .await;
            assert_eq!(answer.unwrap_err(), expected);
        }
        // Part of a packet, then silence.
        let (answer, _) = against(&spec(ProbeKind::Mysql), |mut s| async move {
            s.write_all(b"\x40\x00\x00\x00\x0a5.7").await.unwrap();
            rest(s, Vec::new()).await
        })
        .await;
        let err = answer.unwrap_err();
        assert!(err.ends_with("(then nothing more within 500 ms)"), "{err}");
    }

    #[tokio::test]
    async fn tcp_probe_does_not_wait_for_the_remote_to_close() {
        let (client, _held_open) = duplex(64);
        let started = std::time::Instant::now();
        let spec = ProbeSpec {
            timeout: Duration::from_secs(5),
            ..spec(ProbeKind::Tcp)
        };
        assert_eq!(run(&spec, client).await.unwrap(), "tcp: channel opened");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn tcp_and_none_need_no_answer() {
        let (answer, _) = against(&spec(ProbeKind::Tcp), |s| rest(s, Vec::new())).await;
        assert_eq!(answer.unwrap(), "tcp: channel opened");
        let (answer, sent) = against(&spec(ProbeKind::None), |s| rest(s, Vec::new())).await;
        assert_eq!(answer.unwrap(), "not probed");
        assert!(sent.is_empty());
    }
}
