//! One SSH client session as a sans-IO object: the transport, user authentication and the
//! connection protocol, with the router between them. No sockets, clock or tasks here; a
//! driver feeds it socket bytes and the time, and drains its output and events.
//!
//! ```text
//!  socket bytes ─> read_space / commit_input ─> transport (deframe, decrypt, kex inside)
//!                                                   │ payloads, with their sequence numbers
//!               ┌──── SERVICE_ACCEPT, 50..=79 (before authentication) ───> ClientAuth
//!  router ──────┤
//!               ├──── 80..=127 (after authentication) ─────────────────> Connection
//!               │       Connection says Unimplemented ─> UNIMPLEMENTED(seq of that payload)
//!               ├──── 128..=255 ───────────────────────────────────────> UNIMPLEMENTED(seq)
//!               └──── anything else out of place ──────────────────────> protocol error
//!
//!  driver: signatures (agent), passwords, prompt answers ──provide_*──> ClientAuth
//!  driver: open_direct_tcpip, send_data, consume, send_eof, close ────> Connection
//!  ClientAuth, Connection replies ─> transport (seal) ─> output / consume_output ─> socket
//!  poll_event ─> SessionEvent: VerifyHostKey | Established | Auth | Authenticated | Channel
//! ```
//!
//! Which numbers the connection protocol assigns is the `ssh_connection` crate's business:
//! the router hands it the whole 80..=127 range and answers SSH_MSG_UNIMPLEMENTED when it
//! reports [`ssh_connection::Event::Unimplemented`], because only the router knows the
//! packet's sequence number.
//!
//! Keepalives (OpenSSH's ServerAliveInterval and ServerAliveCountMax) run after
//! authentication. The count of unanswered ones lives in the [`Connection`] alone
//! ([`Connection::outstanding_keepalives`]); any byte from the server clears it.
//!
//! Replies the upper layers make while a received payload is still borrowed from the
//! transport's buffer go to a small outbox and are handed to the transport right after.
//!
//! ```
//! use std::time::Instant;
//! use ssh_auth::AuthConfig;
//! use ssh_session::{Session, SessionConfig};
//! use ssh_transport::ClientConfig;
//! use ssh_transport::random::OsRandom;
//!
//! let config = SessionConfig {
//!     transport: ClientConfig::default(),
//!     connection: ssh_connection::Config::default(),
//!     auth: AuthConfig::new("analytics".to_owned(), Vec::new()),
//!     server_alive: None,
//! };
//! let mut session = Session::new(config, Box::new(OsRandom), Instant::now());
//! // A driver writes `output()` to the socket, then says how much went out.
//! assert!(session.output().starts_with(b"SSH-2.0-"));
//! let written = session.output().len();
//! session.consume_output(written);
//! // Channels are opened once the server has accepted us; until then a driver queues them.
//! assert!(!session.is_authenticated());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::fmt;
use std::io::{IoSlice, IoSliceMut};
use std::ops::Range;
use std::time::{Duration, Instant};

use ssh_auth::{AuthConfig, AuthContext, AuthError, AuthEvent, ClientAuth};
use ssh_connection::{ChannelId, Connection, ConnectionError};
use ssh_transport::hostkey::PublicKey;
use ssh_transport::random::SecureRandom;
use ssh_transport::{
    ClientConfig, ClientTransport, DisconnectReason, Event, MessageType, PayloadSink, PreparedKex,
};
use zeroize::Zeroizing;

/// How many unanswered keepalives are timed (the session ends long before this many).
const MAX_KEEPALIVES_TIMED: usize = 64;

/// What a session needs to start.
#[derive(Debug)]
pub struct SessionConfig {
    /// Transport algorithms and limits.
    pub transport: ClientConfig,
    /// Channel window and packet sizes.
    pub connection: ssh_connection::Config,
    /// Who to authenticate as, with which keys and methods.
    pub auth: AuthConfig,
    /// OpenSSH's ServerAliveInterval and ServerAliveCountMax: after `interval` without a byte
    /// from the server send a keepalive, and give up when `count_max` go unanswered.
    pub server_alive: Option<ServerAlive>,
}

/// Keepalive policy (see [`SessionConfig::server_alive`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerAlive {
    /// Quiet time before a keepalive.
    pub interval: Duration,
    /// Unanswered keepalives before the session is declared dead.
    pub count_max: u32,
}

/// Something for the driver.
#[derive(Debug)]
pub enum SessionEvent {
    /// The server's host key, proven by its signature: call
    /// [`Session::accept_host_key`] or [`Session::reject_host_key`].
    VerifyHostKey(PublicKey),
    /// Keys are in place for the first time.
    Established,
    /// The server accepted us: channels may be opened.
    Authenticated,
    /// Progress of user authentication (banner, attempts) for the log, and its requests
    /// for signatures, passwords and answers, for the driver to answer with
    /// [`Session::provide_signature`] and the like.
    Auth(AuthEvent),
    /// Something happened to a channel.
    Channel(ssh_connection::Event),
    /// A later key exchange completed.
    Rekeyed,
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// The transport failed or the server disconnected.
    Transport(ssh_transport::Error),
    /// Authentication failed.
    Auth(AuthError),
    /// The connection protocol failed.
    Connection(ConnectionError),
    /// A message arrived in the wrong phase.
    Protocol(String),
    /// The session is gone (closed, or ended by another error already reported) and the
    /// request cannot be served. Not a fault of the server: nothing is sent on the wire.
    Ended,
    /// The server did not answer keepalives.
    ServerNotResponding {
        /// How many keepalives went unanswered.
        missed: u32,
    },
    /// The server's host key could not be checked (a `KnownHostsCommand` failed): not the
    /// server's fault, and not a verdict on its key, so a tunnel tries again later.
    HostKeyUnchecked(String),
    /// After the key exchange, the server sent nothing for this long while the login waited
    /// for its answer (the handshake limit, `ConnectTimeout`).
    LoginTimeout(Duration),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(e) => e.fmt(f),
            Self::Auth(e) => e.fmt(f),
            Self::Connection(e) => e.fmt(f),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Ended => f.write_str("the session ended"),
            Self::HostKeyUnchecked(why) => {
                write!(f, "the server's host key could not be checked: {why}")
            }
            Self::ServerNotResponding { missed } => write!(
                f,
                "the server did not answer {missed} keepalives in a row (ServerAliveInterval): \
                 the connection is dead or the server is hung"
            ),
            Self::LoginTimeout(d) => write!(
                f,
                "the server did not answer the login for {} s; the connection is dead or the \
                 server is hung (raise ConnectTimeout if it is just slow)",
                d.as_secs()
            ),
        }
    }
}

impl std::error::Error for SessionError {}

impl SessionError {
    fn disconnect_reason(&self) -> Option<DisconnectReason> {
        match self {
            Self::Transport(e) => e.disconnect_reason(),
            Self::Auth(e) => Some(e.disconnect_reason()),
            Self::Connection(e) => e.disconnect_reason(),
            Self::Protocol(_) => Some(DisconnectReason::PROTOCOL_ERROR),
            Self::Ended => None,
            Self::HostKeyUnchecked(_) => Some(DisconnectReason::HOST_KEY_NOT_VERIFIABLE),
            Self::ServerNotResponding { .. } | Self::LoginTimeout(_) => {
                Some(DisconnectReason::CONNECTION_LOST)
            }
        }
    }
}

/// Payloads made while the transport's receive buffer is borrowed, each after its u32 length.
#[derive(Debug, Default)]
struct Outbox(Vec<u8>);

impl PayloadSink for Outbox {
    fn send_with(&mut self, build: &mut dyn FnMut(&mut Vec<u8>)) {
        let start = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        build(&mut self.0);
        let len = u32::try_from(self.0.len() - start - 4).unwrap_or(u32::MAX);
        if let Some(l) = self.0.get_mut(start..start + 4) {
            l.copy_from_slice(&len.to_be_bytes());
        }
    }
}

impl Outbox {
    fn flush_into(&mut self, sink: &mut dyn PayloadSink) {
        let mut at = self.0.as_slice();
        while let Some((len, rest)) = at.split_first_chunk::<4>() {
            let len = u32::from_be_bytes(*len) as usize;
            let Some(p) = rest.get(..len) else { break };
            sink.send(p);
            at = rest.get(len..).unwrap_or_default();
        }
        self.0.clear();
    }
}

/// One SSH session.
#[derive(Debug)]
pub struct Session {
    transport: ClientTransport,
    auth: ClientAuth,
    conn: Connection,
    outbox: Outbox,
    scratch: Vec<u8>,
    authenticated: bool,
    error: Option<SessionError>,
    server_alive: Option<ServerAlive>,
    /// When the last byte came from the server.
    last_heard: Instant,
    /// How long the server may stay silent while the login waits for its answer: the
    /// transport's handshake limit, which ends with the key exchange.
    login_limit: Option<Duration>,
    /// When the caller last answered a request of the login (a signature, a password): the
    /// server's answer is awaited from then.
    answered_at: Instant,
    /// Sequence number of the payload last handed to the connection: an
    /// `Event::Unimplemented` is queued by that very call, and the queue is drained before
    /// the next payload is handed over, so this is the packet it is about.
    conn_seq: u32,
    /// When each keepalive still unanswered went out, oldest first (bounded).
    keepalives_sent: std::collections::VecDeque<Instant>,
    /// SERVICE_REQUEST is out and the first authentication request may follow it at once,
    /// as soon as the server's `server-sig-algs` are known ([`ClientAuth::send_ahead`]).
    auth_ahead: bool,
    /// Channel data left in the transport's receive buffer, in arrival order: each
    /// channel's bytes there follow what its buffer holds (see [`Session::deliver`]).
    deferred: Vec<(ChannelId, Range<usize>)>,
}

/// The most payloads whose data is left in the receive buffer at once; one more goes into
/// the channel buffers with everything before it. A read of 256 KiB holds eight 32 KiB
/// packets, so this only stops reads full of small ones from making long write lists.
pub const MAX_DEFERRED: usize = 64;

/// Moves every deferred payload's data into its channel's buffer, in order.
fn buffer_deferred(
    transport: &ClientTransport,
    conn: &mut Connection,
    deferred: &mut Vec<(ChannelId, Range<usize>)>,
) {
    for (id, range) in deferred.drain(..) {
        conn.buffer_deferred(id, transport.received_bytes(range));
    }
}

enum Routed {
    Nothing,
    /// A connection payload, copied to `scratch`, to handle once deferred data is buffered.
    AfterDeferred,
    Auth,
    Unimplemented(u32),
    Error(SessionError),
}

impl Session {
    /// A session whose version line and first KEXINIT are already in [`output`](Self::output).
    pub fn new(config: SessionConfig, rng: Box<dyn SecureRandom>, now: Instant) -> Self {
        Self::with_prepared_kex(config, rng, now, None)
    }

    /// [`new`](Self::new), with the first key exchange's opening made ahead of time
    /// ([`ClientTransport::with_prepared_kex`]).
    pub fn with_prepared_kex(
        config: SessionConfig,
        rng: Box<dyn SecureRandom>,
        now: Instant,
        prepared: Option<PreparedKex>,
    ) -> Self {
        let login_limit = config.transport.handshake_timeout;
        Self {
            transport: ClientTransport::with_prepared_kex(config.transport, rng, now, prepared),
            auth: ClientAuth::with_config(config.auth),
            conn: Connection::new(config.connection),
            outbox: Outbox::default(),
            scratch: Vec::new(),
            authenticated: false,
            error: None,
            server_alive: config.server_alive,
            last_heard: now,
            login_limit,
            answered_at: now,
            conn_seq: 0,
            keepalives_sent: std::collections::VecDeque::new(),
            auth_ahead: false,
            deferred: Vec::new(),
        }
    }

    /// A keepalive reply ([`ssh_connection::Event::KeepaliveReply`]) came: the round trip of
    /// the oldest keepalive not yet answered. Replies come in the order the requests went.
    /// The round trip also feeds the connection's receive window growth.
    pub fn keepalive_answered(&mut self, now: Instant) -> Option<Duration> {
        let rtt = self
            .keepalives_sent
            .pop_front()
            .map(|sent| now.saturating_duration_since(sent))?;
        self.conn.observe_rtt(rtt);
        Some(rtt)
    }

    /// Holds `prepared` for the next key exchange ([`ClientTransport::offer_prepared_kex`]);
    /// [`ClientTransport::wants_prepared_kex`] says which method, if any, is worth it.
    pub fn offer_prepared_kex(&mut self, prepared: PreparedKex) {
        self.transport.offer_prepared_kex(prepared);
    }

    /// Has the driver make key exchange key pairs and prove their replies elsewhere
    /// ([`ClientTransport::set_kex_work_elsewhere`]): [`take_kex_work`](Self::take_kex_work)
    /// hands the work out, [`finish_kex_work`](Self::finish_kex_work) takes the result.
    pub fn set_kex_work_elsewhere(&mut self, elsewhere: bool) {
        self.transport.set_kex_work_elsewhere(elsewhere);
    }

    /// The work a key exchange waits for, if any ([`ClientTransport::take_kex_work`]).
    pub fn take_kex_work(&mut self) -> Option<ssh_transport::KexWork> {
        self.transport.take_kex_work()
    }

    /// The work's result ([`ClientTransport::finish_kex_work`]).
    pub fn finish_kex_work(&mut self, done: ssh_transport::KexWorkDone) {
        self.transport.finish_kex_work(done);
    }

    // ---- getters ---------------------------------------------------------------------------

    /// The transport, for its getters (negotiated algorithms, server version).
    pub fn transport(&self) -> &ClientTransport {
        &self.transport
    }

    /// The connection protocol, for its getters (`received`, `send_capacity`, ...).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Whether the server accepted us.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Bytes to write to the socket.
    pub fn output(&self) -> &[u8] {
        self.transport.output()
    }

    /// Bytes not yet written, queued payloads included.
    pub fn pending_output(&self) -> usize {
        self.transport.pending_output()
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.error.is_some() {
            return None;
        }
        [
            self.transport.poll_timeout(),
            self.keepalive_deadline(),
            self.login_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// After the key exchange and before authentication, while the login waits for the
    /// server (not for the caller's signature, password or answers): one handshake limit
    /// after the server's last byte or the caller's last answer, whichever is later. A path
    /// that dies during the login would otherwise hold the attempt until TCP gives up, many
    /// minutes; keepalives only start after authentication, as in OpenSSH.
    fn login_deadline(&self) -> Option<Instant> {
        if self.authenticated
            || self.error.is_some()
            || !self.transport.is_established()
            || self.auth.is_waiting_for_caller()
        {
            return None;
        }
        self.last_heard
            .max(self.answered_at)
            .checked_add(self.login_limit?)
    }

    /// One interval after the last byte from the server, and one more for each keepalive
    /// already sent since. None before authentication, or if it lies beyond any clock.
    fn keepalive_deadline(&self) -> Option<Instant> {
        let policy = self.server_alive.filter(|_| self.authenticated)?;
        let intervals = self.conn.outstanding_keepalives().saturating_add(1);
        self.last_heard
            .checked_add(policy.interval.checked_mul(intervals)?)
    }

    // ---- input -----------------------------------------------------------------------------

    /// Room to read socket bytes into.
    pub fn read_space(&mut self, min: usize) -> &mut [u8] {
        // The receive buffer may move: deferred data goes into the channel buffers first.
        buffer_deferred(&self.transport, &mut self.conn, &mut self.deferred);
        self.transport.read_space(min)
    }

    /// `n` bytes were read into [`read_space`](Self::read_space) at `now`.
    pub fn commit_input(&mut self, n: usize, now: Instant) {
        self.transport.commit_input(n);
        self.conn.set_clock(now);
        // Any byte from the server shows it is alive, as OpenSSH counts it.
        if n > 0 {
            self.last_heard = now;
            self.conn.heard_from_server();
        }
    }

    /// The time is `now`: the driver says so before [`consume`](Self::consume) and opens,
    /// so that receive windows grow with what is delivered per round trip (see
    /// [`ssh_connection::window::WindowGrowth`]).
    pub fn set_clock(&mut self, now: Instant) {
        self.conn.set_clock(now);
    }

    /// The socket closed.
    pub fn handle_eof(&mut self) {
        self.transport.handle_eof();
    }

    /// Time passed: the transport's timers (handshake timeout, time-based rekeying) and
    /// keepalives.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.transport.handle_timeout(now);
        if let (Some(deadline), Some(limit)) = (self.login_deadline(), self.login_limit)
            && now >= deadline
        {
            self.fail(SessionError::LoginTimeout(limit));
            return;
        }
        let (Some(policy), Some(deadline)) = (self.server_alive, self.keepalive_deadline()) else {
            return;
        };
        // Keepalives belong to the connection protocol, after authentication (as in
        // OpenSSH's client loop); before it, the handshake limit bounds the key exchange
        // and each wait for the server during the login (`login_deadline`).
        if now < deadline || self.error.is_some() || !self.authenticated {
            return;
        }
        let missed = self.conn.outstanding_keepalives();
        if missed >= policy.count_max {
            self.fail(SessionError::ServerNotResponding { missed });
        } else {
            tracing::debug!(missed = missed + 1, "sending keepalive");
            self.conn.send_keepalive(&mut self.transport);
            if self.keepalives_sent.len() >= MAX_KEEPALIVES_TIMED {
                self.keepalives_sent.pop_front();
            }
            self.keepalives_sent.push_back(now);
        }
    }

    /// Processes received bytes and returns the next event. Channel data goes to the
    /// channel's buffer ([`Connection::received`]), which the driver drains.
    pub fn poll_event(&mut self) -> Result<Option<SessionEvent>, SessionError> {
        loop {
            if let Some(e) = &self.error {
                return Err(e.clone());
            }
            if let Some(ev) = self.auth.poll_event() {
                if ev == AuthEvent::Success {
                    self.authenticated = true;
                    // Delayed compression (zlib@openssh.com) starts at this packet boundary.
                    self.transport.auth_succeeded();
                    return Ok(Some(SessionEvent::Authenticated));
                }
                return Ok(Some(SessionEvent::Auth(ev)));
            }
            if let Some(ev) = self.conn.poll_event() {
                if let ssh_connection::Event::Unimplemented(m) = ev {
                    // Only the router knows the packet's sequence number.
                    tracing::debug!(message = %m, seq = self.conn_seq, "unimplemented");
                    self.transport.send_unimplemented(self.conn_seq);
                    continue;
                }
                return Ok(Some(SessionEvent::Channel(ev)));
            }
            let routed = match self.transport.poll_event() {
                Err(e) => {
                    self.error = Some(SessionError::Transport(e));
                    continue;
                }
                Ok(None) => {
                    if self.auth_send_ahead() {
                        continue;
                    }
                    return Ok(None);
                }
                Ok(Some(Event::VerifyHostKey(k))) => {
                    return Ok(Some(SessionEvent::VerifyHostKey(k.clone())));
                }
                Ok(Some(Event::Rekeyed)) => return Ok(Some(SessionEvent::Rekeyed)),
                Ok(Some(Event::Established)) => {
                    self.auth.start(&mut self.transport);
                    self.auth_ahead = true;
                    return Ok(Some(SessionEvent::Established));
                }
                Ok(Some(Event::Payload { data, seq, at })) => {
                    let msg = MessageType::of(data).unwrap_or(MessageType(0));
                    let deferrable =
                        msg == MessageType::CHANNEL_DATA && self.deferred.len() < MAX_DEFERRED;
                    if msg.is_connection() && self.authenticated {
                        // The connection classifies the whole range, unassigned numbers
                        // included (see `conn_seq`).
                        self.conn_seq = seq;
                        if let (Some(at), true) = (at, deferrable) {
                            match self.conn.handle_payload_deferring(data, &mut self.outbox) {
                                Ok(Some((id, data))) => {
                                    self.deferred.push((id, at + data.start..at + data.end));
                                    Routed::Nothing
                                }
                                Ok(None) => Routed::Nothing,
                                Err(e) => Routed::Error(SessionError::Connection(e)),
                            }
                        } else if self.deferred.is_empty() {
                            match self.conn.handle_payload(data, &mut self.outbox) {
                                Ok(()) => Routed::Nothing,
                                Err(e) => Routed::Error(SessionError::Connection(e)),
                            }
                        } else {
                            // It may concern a channel with deferred data (its EOF, its
                            // CLOSE, more data), so that data goes into the channel buffers
                            // first, which needs the receive buffer this payload borrows.
                            self.scratch.clear();
                            self.scratch.extend_from_slice(data);
                            Routed::AfterDeferred
                        }
                    } else if (msg.is_userauth() || msg == MessageType::SERVICE_ACCEPT)
                        && !self.authenticated
                    {
                        // Authentication needs the transport's session id while it answers,
                        // so its few small messages are copied out of the receive buffer.
                        self.scratch.clear();
                        self.scratch.extend_from_slice(data);
                        Routed::Auth
                    } else if msg.0 >= 128 {
                        Routed::Unimplemented(seq)
                    } else {
                        Routed::Error(SessionError::Protocol(format!(
                            "the server sent {msg} {}",
                            if self.authenticated {
                                "after authentication succeeded"
                            } else {
                                "before authentication succeeded"
                            }
                        )))
                    }
                }
            };
            let routed = match routed {
                Routed::AfterDeferred => {
                    buffer_deferred(&self.transport, &mut self.conn, &mut self.deferred);
                    match self.conn.handle_payload(&self.scratch, &mut self.outbox) {
                        Ok(()) => Routed::Nothing,
                        Err(e) => Routed::Error(SessionError::Connection(e)),
                    }
                }
                other => other,
            };
            self.outbox.flush_into(&mut self.transport);
            match routed {
                Routed::Nothing | Routed::AfterDeferred => {}
                Routed::Unimplemented(seq) => self.transport.send_unimplemented(seq),
                Routed::Error(e) => self.fail(e),
                Routed::Auth => {
                    let session_id = self.transport.session_id().unwrap_or_default().to_vec();
                    let algs = self.transport.server_sig_algs().map(<[String]>::to_vec);
                    let ctx = AuthContext {
                        session_id: &session_id,
                        server_sig_algs: algs.as_deref(),
                    };
                    if let Err(e) =
                        self.auth
                            .handle_payload(&self.scratch, &ctx, &mut self.transport)
                    {
                        self.fail(SessionError::Auth(e));
                    }
                }
            }
        }
    }

    /// Sends the first authentication request behind SERVICE_REQUEST once everything the
    /// server sent with its NEWKEYS has been read (its EXT_INFO comes in the same flight).
    /// Returns whether it tried, so that the caller polls again for what it queued.
    fn auth_send_ahead(&mut self) -> bool {
        if !self.auth_ahead || !self.transport.server_sig_algs_settled() {
            return false;
        }
        self.auth_ahead = false;
        let session_id = self.transport.session_id().unwrap_or_default().to_vec();
        let algs = self.transport.server_sig_algs().map(<[String]>::to_vec);
        let ctx = AuthContext {
            session_id: &session_id,
            server_sig_algs: algs.as_deref(),
        };
        match self.auth.send_ahead(&ctx, &mut self.transport) {
            Ok(sent) => sent,
            Err(e) => {
                self.fail(SessionError::Auth(e));
                true
            }
        }
    }

    fn fail(&mut self, e: SessionError) {
        if self.error.is_some() {
            return;
        }
        if let Some(reason) = e.disconnect_reason() {
            let text = e.to_string();
            self.transport.disconnect(reason, &text);
        }
        self.error = Some(e);
    }

    // ---- commands --------------------------------------------------------------------------

    /// Answers an [`AuthEvent::SignRequest`] at `now`: a whole signature blob, or why there
    /// is none.
    pub fn provide_signature(&mut self, id: u64, signature: Result<Vec<u8>, String>, now: Instant) {
        self.answered(now);
        if self.error.is_none()
            && let Err(e) = self
                .auth
                .provide_signature(id, signature, &mut self.transport)
        {
            self.fail(SessionError::Auth(e));
        }
    }

    /// Answers an [`AuthEvent::PasswordRequest`] at `now`: the password, or why there is
    /// none.
    pub fn provide_password(
        &mut self,
        id: u64,
        password: Result<Zeroizing<String>, String>,
        now: Instant,
    ) {
        self.answered(now);
        if self.error.is_none()
            && let Err(e) = self
                .auth
                .provide_password(id, password, &mut self.transport)
        {
            self.fail(SessionError::Auth(e));
        }
    }

    /// Answers an [`AuthEvent::InfoRequest`] at `now`: one answer per prompt, or why there
    /// are none.
    pub fn provide_responses(
        &mut self,
        id: u64,
        responses: Result<Vec<Zeroizing<String>>, String>,
        now: Instant,
    ) {
        self.answered(now);
        if self.error.is_none()
            && let Err(e) = self
                .auth
                .provide_responses(id, responses, &mut self.transport)
        {
            self.fail(SessionError::Auth(e));
        }
    }

    /// The caller answered a request of the login at `now`: from then the login waits for
    /// the server.
    fn answered(&mut self, now: Instant) {
        self.answered_at = self.answered_at.max(now);
    }

    /// Trusts the server's host key.
    pub fn accept_host_key(&mut self) {
        self.transport.accept_host_key();
    }

    /// Refuses the server's host key; `why` is what the user reads.
    pub fn reject_host_key(&mut self, why: String) {
        self.transport.reject_host_key(why);
    }

    /// The driver wrote `n` bytes of [`output`](Self::output).
    pub fn consume_output(&mut self, n: usize) {
        self.transport.consume_output(n);
    }

    /// Opens a `direct-tcpip` channel (after authentication).
    pub fn open_direct_tcpip(
        &mut self,
        host: &str,
        port: u32,
        originator: &str,
        originator_port: u32,
    ) -> Result<ChannelId, SessionError> {
        self.conn
            .open_direct_tcpip(host, port, originator, originator_port, &mut self.transport)
            .map_err(SessionError::Connection)
    }

    /// Opens a `direct-streamlocal@openssh.com` channel to the Unix socket at `path` on the
    /// server's side (after authentication).
    pub fn open_direct_streamlocal(&mut self, path: &str) -> Result<ChannelId, SessionError> {
        self.conn
            .open_direct_streamlocal(path, &mut self.transport)
            .map_err(SessionError::Connection)
    }

    /// Asks the server to listen for a remote forward (after authentication): on a TCP
    /// address and port (`tcpip-forward`) or a Unix socket (`streamlocal-forward@openssh.com`).
    /// The answer comes as [`ssh_connection::Event::ForwardGranted`] or
    /// [`ssh_connection::Event::ForwardRefused`].
    pub fn request_forward(&mut self, listen: ssh_connection::ForwardListen) {
        self.conn.request_forward(listen, &mut self.transport);
    }

    /// Asks the server to prove it holds the private halves of host keys it listed (public
    /// key blobs); the answer comes as [`ssh_connection::Event::HostKeysProof`].
    pub fn prove_host_keys(&mut self, keys: &[Vec<u8>]) {
        self.conn.prove_host_keys(keys, &mut self.transport);
    }

    /// Drops the remote forward `listen` names (for TCP, the port asked for or the allocated
    /// one): sends its cancel, and its channels are refused from now on. `false` when no such
    /// forward is in place.
    pub fn cancel_forward(&mut self, listen: &ssh_connection::ForwardListen) -> bool {
        self.conn.cancel_forward(listen, &mut self.transport)
    }

    /// Whether the channel will never send data again (see [`Connection::send_ended`]).
    pub fn send_ended(&self, id: ChannelId) -> bool {
        self.conn.send_ended(id)
    }

    /// Sends what the channel's window allows of `data`; returns how much was taken.
    pub fn send_data(&mut self, id: ChannelId, data: &[u8]) -> Result<usize, SessionError> {
        self.conn
            .send_data(id, data, &mut self.transport)
            .map_err(SessionError::Connection)
    }

    /// Sends up to `max` bytes (cut to what the channel's window allows) that `fill` reads
    /// straight into the packets in the output buffer, one scatter read, with no copy (see
    /// [`Connection::send_data_from`]). `fill` returns how many bytes it wrote, all of which
    /// are sent. `Ok(None)`, without calling `fill`, when the channel cannot take data now.
    pub fn send_data_from(
        &mut self,
        id: ChannelId,
        max: usize,
        fill: &mut dyn FnMut(&mut [IoSliceMut<'_>]) -> usize,
    ) -> Result<Option<usize>, SessionError> {
        self.conn
            .send_data_from(id, max, &mut self.transport, fill)
            .map_err(SessionError::Connection)
    }

    /// The local side will send no more.
    pub fn send_eof(&mut self, id: ChannelId) {
        self.conn.send_eof(id, &mut self.transport);
    }

    /// The local side is gone (a pending channel the server opened is refused).
    pub fn close(&mut self, id: ChannelId) {
        self.conn.close(id, &mut self.transport);
    }

    /// Confirms a pending channel the server opened once its local connection is made (see
    /// [`Connection::confirm_forwarded`]).
    pub fn confirm_forwarded(&mut self, id: ChannelId) -> Result<(), SessionError> {
        self.conn
            .confirm_forwarded(id, &mut self.transport)
            .map_err(SessionError::Connection)
    }

    /// Refuses a pending channel the server opened (see [`Connection::refuse_forwarded`]).
    pub fn refuse_forwarded(
        &mut self,
        id: ChannelId,
        reason: ssh_connection::OpenFailureReason,
        description: &str,
    ) {
        self.conn
            .refuse_forwarded(id, reason, description, &mut self.transport);
    }

    /// `n` bytes of `received(id)` were written to the local socket. Returns whether the
    /// channel is now closed and an event says so ([`Connection::consume`]).
    pub fn consume(&mut self, id: ChannelId, n: usize) -> bool {
        self.conn.consume(id, n, &mut self.transport)
    }

    /// Lets channel `id`'s data stay in the receive buffer until [`deliver`](Self::deliver)
    /// writes it (on), or has it copied into the channel's buffer as it arrives (off, the
    /// default). On only while the caller delivers that channel's data after every
    /// [`poll_event`](Self::poll_event) round: deferred data reaches the channel's buffer only
    /// through `deliver`, [`buffer_deferred`](Self::buffer_deferred), or before the receive
    /// buffer is next read into or the server's next message other than CHANNEL_DATA.
    pub fn set_deferred_delivery(&mut self, id: ChannelId, on: bool) {
        if !on {
            // Data that comes next is buffered at once: what waits goes first.
            self.buffer_deferred();
        }
        self.conn.set_deferred_delivery(id, on);
    }

    /// Hands channel `id`'s pending data to `write` as one list (what the channel's buffer
    /// holds, then the data still in the receive buffer), for one vectored write to the
    /// local socket without copying it first. `write` returns how many bytes it wrote; those
    /// are consumed (credited to the server's window) and the rest of the deferred data goes
    /// into the channel's buffer. Returns the bytes written and the bytes there were.
    pub fn deliver(
        &mut self,
        id: ChannelId,
        write: &mut dyn FnMut(&[IoSlice<'_>]) -> usize,
    ) -> (usize, usize) {
        let buffered = self.conn.received(id).len();
        let (written, total) = {
            let mut slices = [IoSlice::new(&[]); MAX_DEFERRED + 1];
            let mut count = 0;
            let mut total = 0;
            let parts = core::iter::once(self.conn.received(id)).chain(
                self.deferred
                    .iter()
                    .filter(|(d, _)| *d == id)
                    .map(|(_, r)| self.transport.received_bytes(r.clone())),
            );
            for part in parts.filter(|p| !p.is_empty()) {
                if let Some(slot) = slices.get_mut(count) {
                    *slot = IoSlice::new(part);
                    count += 1;
                    total += part.len();
                }
            }
            if total == 0 {
                return (0, 0);
            }
            let n = write(slices.get(..count).unwrap_or_default()).min(total);
            (n, total)
        };
        let from_buffer = written.min(buffered);
        if from_buffer > 0 {
            self.conn.consume(id, from_buffer, &mut self.transport);
        }
        // What was written of the deferred data, payload by payload; the rest is buffered.
        let mut left = written - from_buffer;
        let mut i = 0;
        while let Some((d, range)) = self.deferred.get(i) {
            if *d != id {
                i += 1;
                continue;
            }
            let taken = left.min(range.len());
            left -= taken;
            let rest = range.start + taken..range.end;
            self.conn
                .buffer_deferred(id, self.transport.received_bytes(rest));
            self.deferred.remove(i);
        }
        self.conn
            .deferred_written(id, written - from_buffer, &mut self.transport);
        (written, total)
    }

    /// Moves all deferred data into the channel buffers (see
    /// [`set_deferred_delivery`](Self::set_deferred_delivery)).
    pub fn buffer_deferred(&mut self) {
        buffer_deferred(&self.transport, &mut self.conn, &mut self.deferred);
    }

    /// Ends the session politely.
    pub fn disconnect(&mut self, description: &str) {
        self.transport
            .disconnect(DisconnectReason::BY_APPLICATION, description);
    }
}

#[cfg(test)]
mod tests;
