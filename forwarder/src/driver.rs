//! The tokio driver: one future per SSH session owns the byte stream and the sans-IO
//! [`Session`]; channels are [`ChannelStream`]s (`AsyncRead + AsyncWrite`) that share the
//! session through a mutex, as quinn's streams share their connection.
//!
//! ```text
//!   server socket ──poll_read──> Session (decrypt in place, route) ──> channel buffers ──> local socket (one write per read) or ChannelStream::poll_read
//!   ChannelStream::poll_write ──> Session::send_data (sealed into the output buffer) ──poll_write──> server socket
//! ```
//! Backpressure is a return value plus a waker: a channel writer waits (Pending) while the
//! peer's window is closed or while the session's unsent output is above a high-water mark,
//! and the driver wakes it when that changes. Nothing here queues without bound, and the
//! driver never awaits anything the same loop must drain.
//!
//! The driver runs over any `AsyncRead + AsyncWrite`, so a session can run inside a channel
//! of another session (a jump host).
//!
//! What user authentication asks of the program (a signature from an agent, a password, a
//! passphrase, answers to prompts) goes to an [`AuthHelper`] in a task of its own: a prompt
//! may wait for a person, and the session keeps running (banners, keepalives) meanwhile.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ssh_auth::{AuthEvent, InfoRequest, PasswordRequest, SignRequest};
use ssh_connection::{ChannelId, ForwardListen, OpenFailureReason};
use ssh_transport::hostkey::PublicKey;
use ssh_transport::kex::KexAlgorithm;
use ssh_transport::random::OsRandom;
use ssh_transport::{KexWork, PreparedKex};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Sleep;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use crate::known_hosts;
use crate::session::{Session, SessionError, SessionEvent};

/// Unsent output above which channel writers wait.
const OUTPUT_HIGH_WATER: usize = 1024 * 1024;
/// Unsent output below which waiting writers are woken.
const OUTPUT_LOW_WATER: usize = 256 * 1024;
/// How much to ask the socket for in one read at first: a session that only ever carries
/// small packets (an idle tunnel, queries) keeps an input buffer about this small.
const READ_CHUNK_MIN: usize = 16 * 1024;
/// What a read asks for once reads keep filling what they were offered (bulk downloads).
const READ_CHUNK: usize = 256 * 1024;
/// Rounds of read/process/write per poll before yielding to other tasks.
const POLL_BUDGET: usize = 32;

/// Decides whether a server's host key is trusted. Called once per session, from the
/// driver, after the key has proven itself by signing the exchange hash.
pub trait HostKeyVerifier: Send + Sync {
    /// `Ok` to trust the key; `Err` with the message the user should read.
    fn verify(&self, key: &PublicKey) -> Result<(), String>;

    /// The same for a server that may have presented a host certificate: `key` is the
    /// certified key when it did. By default the certificate is not looked at and `key` is
    /// judged as a plain key, which is what OpenSSH falls back to for a certificate it does
    /// not trust.
    fn verify_presented(
        &self,
        key: &PublicKey,
        certificate: Option<&ssh_transport::cert::Certificate>,
    ) -> Result<(), String> {
        let _ = certificate;
        self.verify(key)
    }

    /// A check that needs work before it can answer (a `KnownHostsCommand` told of the key):
    /// a future the driver runs in a task of its own while the session waits, ending with
    /// the verdict. `None`, the default: [`Self::verify_presented`] answers at once.
    fn verify_later(
        self: Arc<Self>,
        key: &PublicKey,
        certificate: Option<&ssh_transport::cert::Certificate>,
    ) -> Option<VerdictFuture> {
        let _ = (key, certificate);
        None
    }

    /// The server listed all its host keys after the login (OpenSSH's
    /// `hostkeys-00@openssh.com`, certificates and unsupported types left out): what
    /// `UpdateHostKeys` would change in known_hosts, if anything. By default nothing.
    fn plan_host_key_update(&self, offered: &[PublicKey]) -> Option<known_hosts::update::Plan> {
        let _ = offered;
        None
    }

    /// Makes `plan`'s changes, `proven` being its new keys the server proved it holds.
    fn apply_host_key_update(&self, plan: &known_hosts::update::Plan, proven: &[PublicKey]) {
        let _ = (plan, proven);
    }
}

/// What [`HostKeyVerifier::verify_later`] ends with.
pub type VerdictFuture = Pin<Box<dyn Future<Output = Verdict> + Send>>;

/// A host key check's outcome, reached later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The key is trusted.
    Trusted,
    /// The key is refused, with the message the user should read; never retried.
    Refused(String),
    /// The check could not be made (a `KnownHostsCommand` failed): the session ends, and a
    /// tunnel tries again later.
    Unchecked(String),
}

/// What an [`AuthHelper`] answer is: the value, or why there is none (which the
/// authentication error will report).
pub type AuthFuture<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

/// Answers what user authentication asks of the program. Each answer may take as long as
/// it needs; the driver keeps the session running meanwhile.
pub trait AuthHelper: Send + Sync {
    /// A signature by a key the session does not hold (an agent's, or a key file still
    /// locked by its passphrase): a whole SSH signature blob of `request.algorithm`.
    fn sign(&self, request: SignRequest) -> AuthFuture<Vec<u8>>;
    /// A password.
    fn password(&self, request: PasswordRequest) -> AuthFuture<Zeroizing<String>>;
    /// Answers to keyboard-interactive prompts, one per prompt.
    fn respond(&self, request: InfoRequest) -> AuthFuture<Vec<Zeroizing<String>>>;
}

/// An [`AuthHelper`] with nothing to give: public keys held by the session only.
#[derive(Debug, Default)]
pub struct NoAuthHelper;

impl AuthHelper for NoAuthHelper {
    fn sign(&self, _: SignRequest) -> AuthFuture<Vec<u8>> {
        Box::pin(async { Err("no agent or key file to sign with".to_owned()) })
    }

    fn password(&self, _: PasswordRequest) -> AuthFuture<Zeroizing<String>> {
        Box::pin(async { Err("no password was given".to_owned()) })
    }

    fn respond(&self, _: InfoRequest) -> AuthFuture<Vec<Zeroizing<String>>> {
        Box::pin(async { Err("no answers were given".to_owned()) })
    }
}

/// Why a channel could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// The server refused it.
    Refused {
        /// Its reason code.
        reason: OpenFailureReason,
        /// Its explanation, sanitized.
        description: String,
    },
    /// The session ended first.
    Session(SessionError),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused {
                reason,
                description,
            } => {
                write!(f, "the server refused the channel ({reason})")?;
                if !description.is_empty() {
                    write!(f, ": {description}")?;
                }
                Ok(())
            }
            Self::Session(e) => write!(f, "the SSH session ended: {e}"),
        }
    }
}

impl std::error::Error for OpenError {}

enum SlotState {
    Opening(Option<oneshot::Sender<Result<u64, OpenError>>>),
    /// The server opened it and waits for our answer: a [`ForwardedChannel`] holds it.
    Pending,
    Open,
    Closed,
}

struct Slot {
    serial: u64,
    state: SlotState,
    peer_eof: bool,
    stream_alive: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// Who waits in [`ChannelStream::server_closed`].
    close_waker: Option<Waker>,
    /// The local socket, when the channel forwards to one: the driver writes what the
    /// channel received to it once per round of processing (see `State::write_direct`).
    direct: Option<Arc<crate::local::LocalStream>>,
    /// Told how many bytes each direct write delivered (traffic counters).
    direct_counter: Option<DeliveryCounter>,
}

impl Slot {
    /// A channel's slot, before anyone reads from it or writes to it.
    fn new(serial: u64, state: SlotState) -> Self {
        Self {
            serial,
            state,
            peer_eof: false,
            stream_alive: true,
            read_waker: None,
            write_waker: None,
            close_waker: None,
            direct: None,
            direct_counter: None,
        }
    }
}

/// Called with the number of bytes the driver wrote straight to a channel's socket.
pub type DeliveryCounter = Arc<dyn Fn(u64) + Send + Sync>;

struct PendingOpen {
    to: OpenTo,
    reply: oneshot::Sender<Result<u64, OpenError>>,
    serial: u64,
}

/// The channel a [`PendingOpen`] asks for.
enum OpenTo {
    /// `direct-tcpip` to `host:port`, from `originator:originator_port`.
    Tcp {
        host: String,
        port: u32,
        originator: String,
        originator_port: u32,
    },
    /// `direct-streamlocal@openssh.com` to the Unix socket at this path on the server.
    Unix(String),
}

struct State {
    session: Session,
    /// Set once, with the error that ended the session, for [`SessionHandle::ended`].
    ended: tokio::sync::watch::Sender<Option<SessionError>>,
    verifier: Arc<dyn HostKeyVerifier>,
    channels: HashMap<ChannelId, Slot>,
    pending_opens: Vec<PendingOpen>,
    next_serial: u64,
    driver_waker: Option<Waker>,
    auth_waiters: Vec<Waker>,
    output_waiters: Vec<Waker>,
    /// Requests from authentication for the driver to hand to its [`AuthHelper`].
    auth_requests: Vec<AuthEvent>,
    error: Option<SessionError>,
    finished: bool,
    started: Instant,
    log: SessionLog,
    /// Told of keepalive round trips and rekeys as they happen ([`SessionHandle::observe`]).
    observer: Option<Arc<dyn SessionObserver>>,
    /// Who waits for the answer to each `tcpip-forward` request, in the order they went.
    forward_replies: std::collections::VecDeque<oneshot::Sender<Result<u32, RemoteForwardError>>>,
    /// Channels the server opened for our remote forwards, pending (not yet confirmed), not
    /// yet taken by [`SessionHandle::accept_forwarded`].
    forwarded: std::collections::VecDeque<(ChannelId, u64, ForwardedFrom)>,
    /// Channels with a local socket that received data in this round of processing, to be
    /// written once each when it ends.
    direct_due: Vec<ChannelId>,
    /// Who waits in [`SessionHandle::accept_forwarded`].
    forwarded_waiter: Option<Waker>,
    /// The next key exchange's first message is being made ([`prepare_kex`]), or could not
    /// be (then it is made in line when the exchange runs, and not tried again).
    preparing_kex: bool,
    /// A known_hosts update waiting for the server to prove its new host keys.
    host_key_update: Option<known_hosts::update::Plan>,
    /// The host key check to run in a task of its own ([`HostKeyVerifier::verify_later`]).
    host_key_check: Option<VerdictFuture>,
}

/// Why a remote forward is not in place.
#[derive(Clone, Debug)]
pub enum RemoteForwardError {
    /// The server refused the `tcpip-forward` request.
    Refused,
    /// The session ended first.
    Session(SessionError),
}

impl std::fmt::Display for RemoteForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused => f.write_str("the server refused the remote forward"),
            Self::Session(e) => write!(f, "the SSH session ended: {e}"),
        }
    }
}

impl std::error::Error for RemoteForwardError {}

/// Which remote forward a channel the server opened belongs to, and who connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedFrom {
    /// Where the forward listens, as requested (port 0 if the server picked it).
    pub listen: ForwardListen,
    /// The port the server listens on for it (the allocated one when 0 was requested; 0 for
    /// a Unix socket).
    pub bound_port: u32,
    /// The address of the client that connected to the server's listener (sanitised); empty
    /// for a Unix socket.
    pub originator: String,
    /// Its port (0 for a Unix socket).
    pub originator_port: u32,
}

impl ForwardedFrom {
    /// The forward as the server listens for it: the port it listens on in place of a 0
    /// asked for. What a router matches channels on, and what a cancel names.
    pub fn bound(&self) -> ForwardListen {
        bound_listen(&self.listen, self.bound_port)
    }
}

/// `listen` with the port the server listens on (`bound_port`) in place of the one asked
/// for; a Unix socket as it is.
pub fn bound_listen(listen: &ForwardListen, bound_port: u32) -> ForwardListen {
    match listen {
        ForwardListen::Tcp { address, .. } => ForwardListen::Tcp {
            address: address.clone(),
            port: bound_port,
        },
        ForwardListen::Unix { .. } => listen.clone(),
    }
}

/// A `forwarded-tcpip` (or `forwarded-streamlocal@openssh.com`) channel the server asks to
/// open, not confirmed yet: the server has
/// been told nothing and may send nothing on it. Connect to the forward's target first, then
/// [`confirm`](Self::confirm) it (which gives the stream) or [`refuse`](Self::refuse) it, as
/// OpenSSH's client answers only once its connect has completed. Dropped unanswered (nobody
/// routes it, its queue is full, the task serving it ends), it is refused with
/// ADMINISTRATIVELY_PROHIBITED, "open failed", so the server never waits on it for ever.
pub struct ForwardedChannel {
    shared: Arc<Shared>,
    id: ChannelId,
    serial: u64,
    /// Confirmed or refused: nothing is left for the drop to do.
    answered: bool,
    /// The forward it belongs to.
    pub from: ForwardedFrom,
}

impl std::fmt::Debug for ForwardedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardedChannel")
            .field("id", &self.id.0)
            .field("answered", &self.answered)
            .field("from", &self.from)
            .finish()
    }
}

impl ForwardedChannel {
    /// Our channel number.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// Whether the channel's session has failed (lost, timed out, disconnected): nothing can
    /// be confirmed or refused any more.
    pub fn session_failed(&self) -> bool {
        self.shared.lock().error.is_some()
    }

    /// The local connection is made: sends OPEN_CONFIRMATION with our window and returns the
    /// channel as a stream. Fails, and the channel is gone, when the session has ended.
    pub fn confirm(mut self) -> Result<ChannelStream, OpenError> {
        self.answered = true;
        let mut st = self.shared.lock();
        if let Some(e) = &st.error {
            return Err(OpenError::Session(e.clone()));
        }
        let pending = st
            .channels
            .get(&self.id)
            .is_some_and(|s| s.serial == self.serial && matches!(s.state, SlotState::Pending));
        if !pending {
            return Err(OpenError::Session(SessionError::Ended));
        }
        if let Err(e) = st.session.confirm_forwarded(self.id) {
            st.channels.remove(&self.id);
            return Err(OpenError::Session(e));
        }
        if let Some(slot) = st.channels.get_mut(&self.id) {
            slot.state = SlotState::Open;
        }
        st.wake_driver();
        drop(st);
        Ok(ChannelStream {
            shared: self.shared.clone(),
            id: self.id,
            serial: self.serial,
            yield_next: AtomicBool::new(false),
        })
    }

    /// The local connection could not be made: sends OPEN_FAILURE with `reason` and
    /// `description` (OpenSSH sends CONNECT_FAILED and the system's error text). Nothing is
    /// sent once the session has ended.
    pub fn refuse(mut self, reason: OpenFailureReason, description: &str) {
        self.refuse_now(reason, description);
    }

    fn refuse_now(&mut self, reason: OpenFailureReason, description: &str) {
        if self.answered {
            return;
        }
        self.answered = true;
        let mut st = self.shared.lock();
        let pending = st
            .channels
            .get(&self.id)
            .is_some_and(|s| s.serial == self.serial && matches!(s.state, SlotState::Pending));
        if !pending {
            return;
        }
        // The channel's Closed event, which the connection queues, finds no slot: the id is
        // done with here.
        st.channels.remove(&self.id);
        st.session.refuse_forwarded(self.id, reason, description);
        st.wake_driver();
    }
}

impl Drop for ForwardedChannel {
    fn drop(&mut self) {
        self.refuse_now(
            OpenFailureReason::ADMINISTRATIVELY_PROHIBITED,
            "open failed",
        );
    }
}

/// Told of what a running session does that a fleet counts, as it happens: nothing has to
/// ask the session from time to time, so an idle session wakes only for its own timers.
/// Called with the session's lock held: an observer must not call back into the session.
pub trait SessionObserver: Send + Sync {
    /// A keepalive was answered `rtt` after it was sent.
    fn keepalive_answered(&self, rtt: Duration);
    /// `count` more key re-exchanges completed (the first key exchange is not one).
    fn rekeyed(&self, count: u64);
}

/// What happened during the handshake, for `-v` output and the demo.
#[derive(Clone, Debug, Default)]
pub struct SessionLog {
    /// The server's version line.
    pub server_version: Option<String>,
    /// The negotiated algorithms.
    pub algorithms: Option<String>,
    /// The host key's type and fingerprint.
    pub host_key: Option<String>,
    /// Time from start to keys in place.
    pub kex_time: Option<Duration>,
    /// Time from start to authenticated.
    pub auth_time: Option<Duration>,
    /// How many key exchanges completed.
    pub kex_count: u64,
    /// Time from start to the server's version line.
    pub version_time: Option<Duration>,
    /// The last authentication attempt (key or method); once authenticated, the one the
    /// server accepted.
    pub auth_attempt: Option<String>,
    /// The server's first key exchange and host key algorithms (from its first KEXINIT).
    pub server_first_choices: Option<(String, String)>,
    /// The server's key exchange methods (from its first KEXINIT), in its order.
    pub server_kex_algorithms: Vec<String>,
    /// Whether our first key exchange message went out as a guess, and was right.
    pub kex_guess: Option<bool>,
    /// How many key exchanges ran on a first message made ahead of time, off the thread
    /// that carries the session ([`prepare_kex`]).
    pub kex_prepared: u64,
    /// How many key exchanges had the server's reply proven off that thread
    /// ([`ssh_transport::KexWork`]).
    pub kex_proven_elsewhere: u64,
    /// How many had their key pair made off that thread when it was needed, none having been
    /// prepared for their method.
    pub kex_made_elsewhere: u64,
}

impl State {
    /// Nobody reads or writes channel `id` any more (its stream dropped, or an open given
    /// up): a channel already closed both ways is forgotten, any other is closed.
    fn let_go(&mut self, id: ChannelId) {
        let Some(slot) = self.channels.get_mut(&id) else {
            return;
        };
        slot.stream_alive = false;
        slot.direct = None;
        if matches!(slot.state, SlotState::Closed) {
            self.channels.remove(&id);
        } else {
            self.session.close(id);
        }
        self.wake_driver();
    }

    fn wake_driver(&mut self) {
        if let Some(w) = &self.driver_waker {
            w.wake_by_ref();
        }
    }

    fn fail_all(&mut self, e: &SessionError) {
        self.ended.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(e.clone());
                true
            } else {
                false
            }
        });
        for slot in self.channels.values_mut() {
            if let SlotState::Opening(reply) = &mut slot.state
                && let Some(tx) = reply.take()
            {
                let _ = tx.send(Err(OpenError::Session(e.clone())));
            }
            if let Some(w) = slot.close_waker.take() {
                w.wake();
            }
            if let Some(w) = slot.read_waker.take() {
                w.wake();
            }
            if let Some(w) = slot.write_waker.take() {
                w.wake();
            }
        }
        for p in self.pending_opens.drain(..) {
            let _ = p.reply.send(Err(OpenError::Session(e.clone())));
        }
        for tx in self.forward_replies.drain(..) {
            let _ = tx.send(Err(RemoteForwardError::Session(e.clone())));
        }
        if let Some(w) = self.forwarded_waiter.take() {
            w.wake();
        }
        for w in self
            .auth_waiters
            .drain(..)
            .chain(self.output_waiters.drain(..))
        {
            w.wake();
        }
    }

    /// Records the server's version line and when it came, once the transport has it.
    fn note_server_version(&mut self) {
        if self.log.version_time.is_none()
            && let Some(v) = self.session.transport().server_version()
        {
            self.log.server_version = Some(v);
            self.log.version_time = Some(self.started.elapsed());
        }
    }

    fn open_now(&mut self, p: PendingOpen) {
        // The open's round trip is timed: receive windows grow by it.
        self.session.set_clock(Instant::now());
        let opened = match &p.to {
            OpenTo::Tcp {
                host,
                port,
                originator,
                originator_port,
            } => self
                .session
                .open_direct_tcpip(host, *port, originator, *originator_port),
            OpenTo::Unix(path) => self.session.open_direct_streamlocal(path),
        };
        match opened {
            Ok(id) => {
                self.channels
                    .insert(id, Slot::new(p.serial, SlotState::Opening(Some(p.reply))));
            }
            Err(e) => {
                let _ = p.reply.send(Err(OpenError::Session(e)));
            }
        }
    }

    /// Drains session events, acting on each. Errors end the session.
    fn process(&mut self) -> Result<(), SessionError> {
        loop {
            // Channel data is buffered, not written packet by packet: the channels it went
            // to are written once each below, a whole read's worth in one system call.
            let ev = self.session.poll_event();
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    self.write_direct();
                    return Err(e);
                }
            };
            let Some(ev) = ev else { break };
            match ev {
                SessionEvent::VerifyHostKey(key) => {
                    let certificate = self.session.transport().host_certificate().cloned();
                    let key_type = certificate
                        .as_ref()
                        .map_or(key.key_type().name(), |c| c.type_name());
                    self.log.host_key = Some(format!("{key_type} {}", key.fingerprint()));
                    if let Some(check) = self
                        .verifier
                        .clone()
                        .verify_later(&key, certificate.as_ref())
                    {
                        // The transport waits for the verdict; the driver goes on meanwhile.
                        self.host_key_check = Some(check);
                        continue;
                    }
                    match self.verifier.verify_presented(&key, certificate.as_ref()) {
                        Ok(()) => self.session.accept_host_key(),
                        Err(why) => self.session.reject_host_key(why),
                    }
                }
                SessionEvent::Established => {
                    let t = self.session.transport();
                    self.log.server_version = t.server_version();
                    self.log.algorithms = t.negotiated().map(ToString::to_string);
                    self.log.kex_time = Some(self.started.elapsed());
                    self.log.kex_count = t.kex_count();
                    self.log.server_first_choices = t
                        .server_first_choices()
                        .map(|(k, h)| (k.to_owned(), h.to_owned()));
                    t.server_kex_algorithms()
                        .clone_into(&mut self.log.server_kex_algorithms);
                    self.log.kex_guess = t.kex_guess_right();
                    self.log.kex_prepared = t.prepared_kex_used();
                    self.log.kex_proven_elsewhere = t.kex_work_done();
                    self.log.kex_made_elsewhere = t.kex_started_elsewhere();
                    debug!(
                        server = %self.log.server_version.as_deref().unwrap_or("?"),
                        algorithms = %self.log.algorithms.as_deref().unwrap_or("?"),
                        host_key = %self.log.host_key.as_deref().unwrap_or("?"),
                        guess = ?self.log.kex_guess,
                        prepared = self.log.kex_prepared > 0,
                        made_elsewhere = self.log.kex_made_elsewhere > 0,
                        proven_elsewhere = self.log.kex_proven_elsewhere > 0,
                        elapsed_ms = self.started.elapsed().as_millis() as u64,
                        "key exchange complete"
                    );
                }
                SessionEvent::Rekeyed => {
                    let before = self.log.kex_count;
                    let t = self.session.transport();
                    self.log.kex_count = t.kex_count();
                    self.log.kex_prepared = t.prepared_kex_used();
                    self.log.kex_proven_elsewhere = t.kex_work_done();
                    self.log.kex_made_elsewhere = t.kex_started_elsewhere();
                    if let Some(o) = &self.observer {
                        o.rekeyed(self.log.kex_count.saturating_sub(before));
                    }
                    debug!(
                        count = self.log.kex_count,
                        prepared = self.log.kex_prepared,
                        made_elsewhere = self.log.kex_made_elsewhere,
                        proven_elsewhere = self.log.kex_proven_elsewhere,
                        "rekeyed"
                    );
                }
                SessionEvent::Authenticated => {
                    self.log.auth_time = Some(self.started.elapsed());
                    debug!(
                        elapsed_ms = self.started.elapsed().as_millis() as u64,
                        "authenticated"
                    );
                    for p in core::mem::take(&mut self.pending_opens) {
                        self.open_now(p);
                    }
                    for w in self.auth_waiters.drain(..) {
                        w.wake();
                    }
                }
                SessionEvent::Auth(ev) => match ev {
                    // Shown like OpenSSH shows a pre-login banner (already sanitized).
                    AuthEvent::Banner(text) => crate::notice::banner(&text),
                    AuthEvent::Attempt {
                        source,
                        fingerprint,
                        algorithm,
                        certificate,
                    } => {
                        debug!(
                            %source, %fingerprint, %algorithm, certificate, "offering public key"
                        );
                        let what = if certificate { "certificate" } else { "key" };
                        self.log.auth_attempt = Some(format!(
                            "publickey: {what} {source} ({fingerprint}, {algorithm})"
                        ));
                    }
                    AuthEvent::Query {
                        source,
                        fingerprint,
                        algorithm,
                        certificate,
                    } => debug!(
                        %source, %fingerprint, %algorithm, certificate,
                        "asking whether the server accepts this key"
                    ),
                    AuthEvent::Skipped {
                        source,
                        fingerprint,
                        reason,
                    } => debug!(%source, %fingerprint, %reason, "not offering key"),
                    AuthEvent::Method { method, attempt } => {
                        debug!(method, attempt, "trying authentication method");
                        self.log.auth_attempt = Some(method.to_owned());
                    }
                    AuthEvent::PartialSuccess { accepted } => info!(
                        %accepted,
                        "authenticated with partial success: the server wants another method"
                    ),
                    ev @ (AuthEvent::SignRequest(_)
                    | AuthEvent::PasswordRequest(_)
                    | AuthEvent::InfoRequest(_)) => self.auth_requests.push(ev),
                    other => debug!(?other, "authentication"),
                },
                SessionEvent::Channel(ssh_connection::Event::KeepaliveReply) => {
                    if let (Some(rtt), Some(o)) = (
                        self.session.keepalive_answered(Instant::now()),
                        &self.observer,
                    ) {
                        o.keepalive_answered(rtt);
                    }
                }
                SessionEvent::Channel(ssh_connection::Event::HostKeys(blobs)) => {
                    self.host_keys_offered(&blobs);
                }
                SessionEvent::Channel(ssh_connection::Event::HostKeysProof(proof)) => {
                    self.host_keys_proven(proof);
                }
                SessionEvent::Channel(ev) => self.channel_event(ev),
            }
        }
        self.write_direct();
        Ok(())
    }

    /// The server's list of its host keys: the keys we could use (a type HostKeyAlgorithms
    /// allows, no certificates) go to the verifier, and the new ones it wants added are
    /// sent back to be proven.
    fn host_keys_offered(&mut self, blobs: &[Vec<u8>]) {
        let allowed = &self.session.transport().config().host_key_algorithms;
        let mut offered: Vec<PublicKey> = Vec::new();
        for blob in blobs {
            let Ok(key) = PublicKey::from_blob(blob) else {
                continue;
            };
            if !allowed
                .iter()
                .any(|a| !a.certificate && a.key_type() == key.key_type())
            {
                continue;
            }
            if offered.contains(&key) {
                debug!("the server listed a host key twice: known_hosts not updated");
                return;
            }
            offered.push(key);
        }
        if offered.is_empty() {
            return;
        }
        let Some(plan) = self.verifier.plan_host_key_update(&offered) else {
            return;
        };
        if plan.new.is_empty() {
            self.verifier.apply_host_key_update(&plan, &[]);
            return;
        }
        debug!(
            keys = plan.new.len(),
            "asking the server to prove it holds its new host keys"
        );
        let new: Vec<Vec<u8>> = plan.new.iter().map(|k| k.blob().to_vec()).collect();
        self.session.prove_host_keys(&new);
        self.host_key_update = Some(plan);
    }

    /// The server's answer to the proof request: every signature must verify before
    /// anything is written.
    fn host_keys_proven(&mut self, proof: Option<Vec<Vec<u8>>>) {
        let Some(plan) = self.host_key_update.take() else {
            return;
        };
        let t = self.session.transport();
        let (Some(session_id), Some(negotiated)) = (t.session_id(), t.negotiated()) else {
            return;
        };
        let checked = match proof {
            Some(signatures) => known_hosts::update::verify_proofs(
                session_id,
                &plan.new,
                &signatures,
                negotiated.host_key.signature,
            ),
            None => Err("it refused".to_owned()),
        };
        match checked {
            Ok(proven) => self.verifier.apply_host_key_update(&plan, &proven),
            Err(why) => warn!(
                "the server did not prove it holds its new host keys ({why}); known_hosts \
                 not updated"
            ),
        }
    }

    /// Writes what the channels in `direct_due` received to their local sockets, each in
    /// one system call (a read from the server carries up to eight 32 KiB packets), straight
    /// from where it was decrypted ([`Session::deliver`]). What a socket does not take now
    /// is left to the channel's stream, which is woken to wait until the socket can take
    /// more.
    fn write_direct(&mut self) {
        if self.direct_due.is_empty() {
            self.session.buffer_deferred();
            return;
        }
        let mut due = core::mem::take(&mut self.direct_due);
        // Crediting the window times the delivery (receive windows grow by it).
        self.session.set_clock(Instant::now());
        for id in due.drain(..) {
            let Some(slot) = self.channels.get_mut(&id) else {
                continue;
            };
            let Some(sock) = slot.direct.as_ref() else {
                // The stream took its socket back since; it reads the buffer itself.
                if let Some(w) = slot.read_waker.take() {
                    w.wake();
                }
                continue;
            };
            let (n, len) = self
                .session
                .deliver(id, &mut |parts| sock.try_write_vectored(parts).unwrap_or(0));
            if n > 0
                && let Some(count) = &slot.direct_counter
            {
                count(n as u64);
            }
            if n < len
                && let Some(w) = slot.read_waker.take()
            {
                w.wake();
            }
        }
        self.direct_due = due;
        // Anything still deferred (a channel whose stream took its socket back) is buffered.
        self.session.buffer_deferred();
    }

    fn channel_event(&mut self, ev: ssh_connection::Event) {
        use ssh_connection::Event as E;
        match ev {
            E::Opened(id) => {
                let mut close = false;
                if let Some(slot) = self.channels.get_mut(&id) {
                    if let SlotState::Opening(reply) = &mut slot.state {
                        let delivered = reply
                            .take()
                            .is_some_and(|tx| tx.send(Ok(slot.serial)).is_ok());
                        slot.state = SlotState::Open;
                        if !delivered {
                            slot.stream_alive = false;
                            close = true;
                        }
                    }
                    if let Some(w) = slot.write_waker.take() {
                        w.wake();
                    }
                }
                if close {
                    self.session.close(id);
                }
            }
            E::OpenFailed {
                id,
                reason,
                description,
            } => {
                if let Some(mut slot) = self.channels.remove(&id)
                    && let SlotState::Opening(reply) = &mut slot.state
                    && let Some(tx) = reply.take()
                {
                    let _ = tx.send(Err(OpenError::Refused {
                        reason,
                        description,
                    }));
                }
            }
            E::Data(id) | E::Eof(id) | E::Closed(id) | E::SendCapacity(id) => {
                let remove = if let Some(slot) = self.channels.get_mut(&id) {
                    match ev {
                        E::Eof(_) => slot.peer_eof = true,
                        E::Closed(_) => {
                            slot.peer_eof = true;
                            slot.state = SlotState::Closed;
                            if let Some(w) = slot.close_waker.take() {
                                w.wake();
                            }
                        }
                        _ => {}
                    }
                    if matches!(ev, E::Data(_)) && slot.direct.is_some() {
                        // Written at the end of this round of processing (`write_direct`).
                        if !self.direct_due.contains(&id) {
                            self.direct_due.push(id);
                        }
                    } else if !matches!(ev, E::SendCapacity(_))
                        && let Some(w) = slot.read_waker.take()
                    {
                        w.wake();
                    }
                    if matches!(ev, E::SendCapacity(_) | E::Closed(_))
                        && let Some(w) = slot.write_waker.take()
                    {
                        w.wake();
                    }
                    matches!(slot.state, SlotState::Closed) && !slot.stream_alive
                } else {
                    false
                };
                if remove {
                    self.channels.remove(&id);
                }
            }
            E::ForwardGranted { bound_port, .. } => {
                if let Some(tx) = self.forward_replies.pop_front() {
                    let _ = tx.send(Ok(bound_port));
                }
            }
            E::ForwardRefused { .. } => {
                if let Some(tx) = self.forward_replies.pop_front() {
                    let _ = tx.send(Err(RemoteForwardError::Refused));
                }
            }
            E::ForwardedOpenRequest {
                id,
                listen,
                bound_port,
                originator,
                originator_port,
            } => {
                let serial = self.next_serial;
                self.next_serial += 1;
                self.channels
                    .insert(id, Slot::new(serial, SlotState::Pending));
                self.forwarded.push_back((
                    id,
                    serial,
                    ForwardedFrom {
                        listen,
                        bound_port,
                        originator,
                        originator_port,
                    },
                ));
                if let Some(w) = self.forwarded_waiter.take() {
                    w.wake();
                }
            }
            E::KeepaliveReply => {}
            other => debug!(?other, "channel event"),
        }
    }
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; the state is still consistent
        // enough to report errors, so keep going rather than poison every stream.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A handle on a running session: opens channels, waits for authentication, ends the session.
#[derive(Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionHandle")
    }
}

/// Starts driving `session` over `stream`. Spawn the returned [`Driver`] (it completes when the
/// session ends) and use the [`SessionHandle`] to open channels.
pub fn start<S>(
    stream: S,
    session: Session,
    verifier: Arc<dyn HostKeyVerifier>,
) -> (SessionHandle, Driver<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    start_with_auth(stream, session, verifier, Arc::new(NoAuthHelper))
}

/// Like [`start`], with `auth` answering authentication's requests (agent signatures,
/// passwords, passphrases, prompts).
pub fn start_with_auth<S>(
    stream: S,
    session: Session,
    verifier: Arc<dyn HostKeyVerifier>,
    auth: Arc<dyn AuthHelper>,
) -> (SessionHandle, Driver<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let now = Instant::now();
    let (ended, _) = tokio::sync::watch::channel(None);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            session,
            ended,
            verifier,
            channels: HashMap::new(),
            pending_opens: Vec::new(),
            next_serial: 1,
            driver_waker: None,
            auth_waiters: Vec::new(),
            output_waiters: Vec::new(),
            auth_requests: Vec::new(),
            error: None,
            finished: false,
            started: now,
            log: SessionLog::default(),
            observer: None,
            forward_replies: std::collections::VecDeque::new(),
            forwarded: std::collections::VecDeque::new(),
            forwarded_waiter: None,
            preparing_kex: false,
            direct_due: Vec::new(),
            host_key_update: None,
            host_key_check: None,
        }),
    });
    let driver = Driver {
        shared: shared.clone(),
        stream,
        auth,
        sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
        read_eof: false,
        flush_needed: false,
        read_chunk: READ_CHUNK_MIN,
    };
    (SessionHandle { shared }, driver)
}

/// The reply to an open that its caller may stop waiting for: dropped before the reply was
/// taken (a timeout, a `select!`, an aborted task), it closes the channel the driver may
/// already have confirmed to it, which no [`ChannelStream`] would ever close otherwise (the
/// server's data would fill its whole window and stay).
struct PendingReply<'a> {
    shared: &'a Arc<Shared>,
    rx: oneshot::Receiver<Result<u64, OpenError>>,
    /// The reply was taken: its caller owns the channel.
    taken: bool,
}

impl Drop for PendingReply<'_> {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        // From here a reply not yet sent fails to send, and the driver closes the channel.
        self.rx.close();
        let Ok(Ok(serial)) = self.rx.try_recv() else {
            return;
        };
        let mut st = self.shared.lock();
        let id = st
            .channels
            .iter()
            .find(|(_, s)| s.serial == serial)
            .map(|(id, _)| *id);
        if let Some(id) = id {
            st.let_go(id);
        }
    }
}

impl SessionHandle {
    /// Opens a `direct-tcpip` channel to `host:port`; waits for authentication first if
    /// needed. `originator` is the address of the local client, as OpenSSH reports it.
    pub async fn open_direct_tcpip(
        &self,
        host: &str,
        port: u16,
        originator: &str,
        originator_port: u16,
    ) -> Result<ChannelStream, OpenError> {
        self.open(OpenTo::Tcp {
            host: host.to_owned(),
            port: u32::from(port),
            originator: originator.to_owned(),
            originator_port: u32::from(originator_port),
        })
        .await
    }

    /// Opens a `direct-streamlocal@openssh.com` channel to the Unix socket at `path` on the
    /// server; waits for authentication first if needed.
    pub async fn open_direct_streamlocal(&self, path: &str) -> Result<ChannelStream, OpenError> {
        self.open(OpenTo::Unix(path.to_owned())).await
    }

    /// Opens a channel to `to`, or says why not.
    async fn open(&self, to: OpenTo) -> Result<ChannelStream, OpenError> {
        let (tx, rx) = oneshot::channel();
        let serial = {
            let mut st = self.shared.lock();
            if let Some(e) = &st.error {
                return Err(OpenError::Session(e.clone()));
            }
            let serial = st.next_serial;
            st.next_serial += 1;
            let p = PendingOpen {
                to,
                reply: tx,
                serial,
            };
            if st.session.is_authenticated() {
                st.open_now(p);
                st.wake_driver();
            } else {
                st.pending_opens.push(p);
            }
            serial
        };
        let mut pending = PendingReply {
            shared: &self.shared,
            rx,
            taken: false,
        };
        let answer = (&mut pending.rx).await;
        pending.taken = true;
        match answer {
            Ok(Ok(s)) => {
                let st = self.shared.lock();
                let id = st
                    .channels
                    .iter()
                    .find(|(_, slot)| slot.serial == s)
                    .map(|(id, _)| *id);
                drop(st);
                match id {
                    Some(id) => Ok(ChannelStream {
                        shared: self.shared.clone(),
                        id,
                        serial,
                        yield_next: AtomicBool::new(false),
                    }),
                    None => Err(OpenError::Session(SessionError::Ended)),
                }
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let st = self.shared.lock();
                Err(OpenError::Session(
                    st.error.clone().unwrap_or(SessionError::Ended),
                ))
            }
        }
    }

    /// Asks the server to listen at `listen` (an address and port, port 0: the server picks;
    /// or a Unix socket's path) and forward the connections it accepts there to us
    /// (`tcpip-forward`, `streamlocal-forward@openssh.com`); waits for authentication first.
    /// Returns the port the server listens on (0 for a Unix socket). The channels arrive
    /// through [`SessionHandle::accept_forwarded`].
    pub async fn request_remote_forward(
        &self,
        listen: ForwardListen,
    ) -> Result<u32, RemoteForwardError> {
        self.authenticated()
            .await
            .map_err(RemoteForwardError::Session)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.lock();
            if let Some(e) = &st.error {
                return Err(RemoteForwardError::Session(e.clone()));
            }
            st.session.request_forward(listen);
            st.forward_replies.push_back(tx);
            st.wake_driver();
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(RemoteForwardError::Session(
                self.error().unwrap_or(SessionError::Ended),
            )),
        }
    }

    /// Drops the remote forward `listen` names (for TCP, the port asked for or the
    /// allocated one): the server is told to stop listening (`cancel-tcpip-forward`,
    /// `cancel-streamlocal-forward@openssh.com`) and channels it opens for the forward from
    /// now on are refused. Returns whether such a forward was in place on this session.
    pub fn cancel_remote_forward(&self, listen: &ForwardListen) -> bool {
        let mut st = self.shared.lock();
        if st.error.is_some() {
            return false;
        }
        let cancelled = st.session.cancel_forward(listen);
        st.wake_driver();
        cancelled
    }

    /// The next channel the server asks to open for one of our remote forwards, not
    /// confirmed yet: connect, then [`ForwardedChannel::confirm`] or
    /// [`ForwardedChannel::refuse`] it (dropping it refuses it). `None` once the session has
    /// ended.
    pub async fn accept_forwarded(&self) -> Option<ForwardedChannel> {
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some((id, serial, from)) = st.forwarded.pop_front() {
                return Poll::Ready(Some(ForwardedChannel {
                    shared: self.shared.clone(),
                    id,
                    serial,
                    answered: false,
                    from,
                }));
            }
            if st.error.is_some() || st.finished {
                return Poll::Ready(None);
            }
            st.forwarded_waiter = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Waits until the server has accepted us, or the session failed.
    pub async fn authenticated(&self) -> Result<(), SessionError> {
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some(e) = &st.error {
                return Poll::Ready(Err(e.clone()));
            }
            if st.session.is_authenticated() {
                return Poll::Ready(Ok(()));
            }
            if st.finished {
                return Poll::Ready(Err(SessionError::Ended));
            }
            st.auth_waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Waits until the session has ended, and says why.
    pub async fn ended(&self) -> SessionError {
        let mut rx = self.shared.lock().ended.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(SessionError::Ended),
            Err(_) => SessionError::Ended,
        }
    }

    /// The session's error, once it has failed.
    pub fn error(&self) -> Option<SessionError> {
        self.shared.lock().error.clone()
    }

    /// What happened during the handshake.
    pub fn log(&self) -> SessionLog {
        self.shared.lock().log.clone()
    }

    /// Ends the session with SSH_MSG_DISCONNECT; the driver finishes once it is sent.
    pub fn disconnect(&self, description: &str) {
        let mut st = self.shared.lock();
        st.session.disconnect(description);
        st.wake_driver();
    }

    /// Tells `observer` of keepalive round trips and rekeys from now on (it replaces any
    /// earlier one); the rekeys already completed are reported to it at once.
    pub fn observe(&self, observer: Arc<dyn SessionObserver>) {
        let mut st = self.shared.lock();
        let done = st.log.kex_count.saturating_sub(1);
        if done > 0 {
            observer.rekeyed(done);
        }
        st.observer = Some(observer);
    }

    /// How many channels are open or opening.
    pub fn channel_count(&self) -> usize {
        self.shared.lock().session.connection().channel_count()
    }
}

/// A `direct-tcpip` channel as a byte stream. Shutting down the write side sends
/// CHANNEL_EOF; dropping the stream closes the channel.
pub struct ChannelStream {
    shared: Arc<Shared>,
    id: ChannelId,
    serial: u64,
    /// A WINDOW_ADJUST was just queued: step aside once so the driver sends it before this
    /// reader drains the rest of the buffer (on a single-threaded runtime it would otherwise
    /// wait, and the server with it).
    yield_next: AtomicBool,
}

/// What [`ChannelStream::poll_send_to`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// This many bytes went to the socket.
    Bytes(usize),
    /// The server sent EOF (or closed) and everything before it has been written.
    Eof,
}

impl std::fmt::Debug for ChannelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChannelStream({})", self.id.0)
    }
}

fn session_io_error(e: &SessionError) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string())
}

impl ChannelStream {
    /// Our channel number.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// Lets the driver write this channel's data to `sock` itself, everything a read from the
    /// server brought in one write, without waking the stream's task (see
    /// [`ChannelStream::poll_send_to`], which must then be the only reader, and which takes
    /// over when the socket cannot take everything at once).
    /// `counter`, if given, is told the size of every such write (the writes that go
    /// through [`ChannelStream::poll_send_to`] are counted by its caller).
    pub fn set_direct_writer(
        &self,
        sock: Arc<crate::local::LocalStream>,
        counter: Option<DeliveryCounter>,
    ) {
        let mut st = self.shared.lock();
        if let Some(slot) = self.slot(&mut st) {
            slot.direct = Some(sock);
            slot.direct_counter = counter;
            // The driver writes its data from the receive buffer, without a copy.
            st.session.set_deferred_delivery(self.id, true);
        }
    }

    /// Writes buffered channel data to `sock`, straight from the channel buffer under the
    /// session lock, so no copy is made and nothing is held outside the buffer (which keeps
    /// the driver's direct writes in order). `Ok(Sent::Eof)` once the server's EOF is reached.
    pub fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        sock: &crate::local::LocalStream,
    ) -> Poll<io::Result<Sent>> {
        if self.yield_next.swap(false, Ordering::Relaxed) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            let mut guard = self.shared.lock();
            let st = &mut *guard;
            if self.slot(st).is_none() {
                return Poll::Ready(Ok(Sent::Eof));
            }
            let data = st.session.connection().received(self.id);
            if data.is_empty() {
                if let Some(e) = &st.error {
                    return Poll::Ready(Err(session_io_error(e)));
                }
                let Some(slot) = self.slot(st) else {
                    return Poll::Ready(Ok(Sent::Eof));
                };
                if slot.peer_eof || matches!(slot.state, SlotState::Closed) {
                    return Poll::Ready(Ok(Sent::Eof));
                }
                match &slot.read_waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => slot.read_waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            match sock.try_write(data) {
                Ok(n) => {
                    let before = st.session.output().len();
                    st.session.set_clock(Instant::now());
                    let closed = st.session.consume(self.id, n);
                    if st.session.output().len() > before || closed {
                        // Something to send, or the channel closed (the server's CLOSE
                        // came before its data was drained): only the driver acts on it,
                        // and nothing from the server may come to wake it.
                        st.wake_driver();
                        self.yield_next.store(true, Ordering::Relaxed);
                    }
                    return Poll::Ready(Ok(Sent::Bytes(n)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drop(guard);
                    match sock.poll_write_ready(cx) {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// `Ok` when data may go into the output buffer now; else what a send returns: the
    /// session's error, a broken pipe for a closed channel, or pending (and registered)
    /// while the output buffer is over its high-water mark.
    fn may_send(&self, cx: &Context<'_>, st: &mut State) -> Result<(), Poll<io::Result<usize>>> {
        if let Some(e) = &st.error {
            return Err(Poll::Ready(Err(session_io_error(e))));
        }
        let Some(slot) = self.slot(st) else {
            return Err(Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())));
        };
        if matches!(slot.state, SlotState::Closed) {
            return Err(Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())));
        }
        if st.session.pending_output() > OUTPUT_HIGH_WATER {
            st.output_waiters.push(cx.waker().clone());
            st.wake_driver();
            return Err(Poll::Pending);
        }
        Ok(())
    }

    /// Reads up to `max` bytes from `sock` straight into CHANNEL_DATA packets (one scatter
    /// read into the output buffer, no copy) and sends them: `Ok(n)` for `n` bytes read and
    /// sent, `Ok(0)` at the socket's end of file. Waits while the server's window is closed
    /// or the output buffer is full, so nothing is read that cannot be sent at once.
    pub fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        sock: &crate::local::LocalStream,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = self.shared.lock();
            let st = &mut *guard;
            if let Err(wait) = self.may_send(cx, st) {
                return wait;
            }
            let mut read = None;
            let sent = st
                .session
                .send_data_from(self.id, max.max(1), &mut |slices| {
                    let r = sock.try_read_vectored(slices);
                    let n = *r.as_ref().unwrap_or(&0);
                    read = Some(r);
                    n
                });
            match (sent, read) {
                (Err(e), _) => return Poll::Ready(Err(session_io_error(&e))),
                (Ok(Some(_)), None) => {
                    return Poll::Ready(Err(io::Error::other("no read was made for the channel")));
                }
                (Ok(None), _) => {
                    if let Some(slot) = self.slot(st) {
                        slot.write_waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                (Ok(Some(n)), Some(Ok(_))) => {
                    if n > 0 {
                        st.wake_driver();
                    }
                    return Poll::Ready(Ok(n));
                }
                (Ok(Some(_)), Some(Err(e))) if e.kind() == io::ErrorKind::WouldBlock => {
                    drop(guard);
                    match sock.poll_read_ready(cx) {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                (Ok(Some(_)), Some(Err(e))) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Sends what the window allows of `data` (see `AsyncWrite::poll_write`), through a
    /// shared reference so that one task can read and write the channel at once.
    pub fn poll_send(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        if let Err(wait) = self.may_send(cx, st) {
            return wait;
        }
        // After the server's CLOSE, or our own EOF, no window will ever open: waiting for one
        // would hang a writer that reads only once its write is done. (What the server sent
        // before its CLOSE stays readable.)
        if st.session.send_ended(self.id) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // One call queues at most the output buffer's high-water mark, so that a window the
        // server made huge cannot make a single write outgrow the output limit.
        let data = data.get(..OUTPUT_HIGH_WATER).unwrap_or(data);
        match st.session.send_data(self.id, data) {
            Ok(0) => {
                if let Some(slot) = self.slot(st) {
                    slot.write_waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Ok(n) => {
                st.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(session_io_error(&e))),
        }
    }

    /// Whether the channel's session has failed (lost, timed out, disconnected).
    pub fn session_failed(&self) -> bool {
        self.shared.lock().error.is_some()
    }

    /// Whether the channel ended by CLOSE both ways, the session still up: what the local
    /// side sends has nowhere to go, as after a TCP peer's close.
    pub fn closed_by_server(&self) -> bool {
        let mut st = self.shared.lock();
        st.error.is_none()
            && self
                .slot(&mut st)
                .is_some_and(|slot| matches!(slot.state, SlotState::Closed))
    }

    /// Completes once the channel has ended by CLOSE both ways ([`closed_by_server`]) or its
    /// session has failed: woken by the driver, not polled.
    ///
    /// [`closed_by_server`]: Self::closed_by_server
    pub async fn server_closed(&self) {
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.error.is_some() {
                return Poll::Ready(());
            }
            match self.slot(&mut st) {
                Some(slot) if !matches!(slot.state, SlotState::Closed) => {
                    slot.close_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                // Closed, or its slot gone (the channel ended and was forgotten).
                _ => Poll::Ready(()),
            }
        })
        .await;
    }

    /// Sends CHANNEL_EOF: the local side will send nothing more.
    pub fn send_eof(&self) {
        let mut st = self.shared.lock();
        if self.slot(&mut st).is_some() {
            st.session.send_eof(self.id);
            st.wake_driver();
        }
    }

    fn slot<'a>(&self, st: &'a mut State) -> Option<&'a mut Slot> {
        st.channels
            .get_mut(&self.id)
            .filter(|s| s.serial == self.serial)
    }
}

impl AsyncRead for ChannelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_recv(cx, buf)
    }
}

/// Reading and writing through a shared reference, so that one task can do both at once and
/// still ask the channel how it ended ([`ChannelStream::closed_by_server`]).
impl AsyncRead for &ChannelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_recv(cx, buf)
    }
}

impl AsyncWrite for &ChannelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_send(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().send_eof();
        Poll::Ready(Ok(()))
    }
}

impl ChannelStream {
    /// Reads what the server sent (see `AsyncRead::poll_read`), through a shared reference.
    pub fn poll_recv(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.yield_next.swap(false, Ordering::Relaxed) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let shared = self.shared.clone();
        let mut guard = shared.lock();
        let st = &mut *guard;
        if self.slot(st).is_none() {
            return Poll::Ready(Ok(()));
        }
        let data = st.session.connection().received(self.id);
        if !data.is_empty() {
            let n = data.len().min(buf.remaining());
            if let Some(d) = data.get(..n) {
                buf.put_slice(d);
            }
            let before = st.session.output().len();
            st.session.set_clock(Instant::now());
            let closed = st.session.consume(self.id, n);
            if st.session.output().len() > before || closed {
                // As in `poll_send_to`: only the driver acts on the channel's end.
                st.wake_driver();
                self.yield_next.store(true, Ordering::Relaxed);
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = &st.error {
            return Poll::Ready(Err(session_io_error(e)));
        }
        let Some(slot) = self.slot(st) else {
            return Poll::Ready(Ok(()));
        };
        if slot.peer_eof || matches!(slot.state, SlotState::Closed) {
            return Poll::Ready(Ok(()));
        }
        match &slot.read_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.read_waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl AsyncWrite for ChannelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.send_eof();
        Poll::Ready(Ok(()))
    }
}

impl Drop for ChannelStream {
    fn drop(&mut self) {
        let mut guard = self.shared.lock();
        if self.slot(&mut guard).is_some() {
            guard.let_go(self.id);
        }
    }
}

/// The future that runs a session: reads and writes the server socket, processes events and
/// timers. It completes with the error that ended the session (or `Ok` after a disconnect
/// we asked for).
pub struct Driver<S> {
    shared: Arc<Shared>,
    stream: S,
    auth: Arc<dyn AuthHelper>,
    sleep: Pin<Box<Sleep>>,
    read_eof: bool,
    flush_needed: bool,
    /// How much the next read asks for: doubles, up to [`READ_CHUNK`], whenever a read fills
    /// what it was offered. The input buffer only grows as far as reads ask.
    read_chunk: usize,
}

impl<S> std::fmt::Debug for Driver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Driver")
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    /// One round of reading, processing and writing. Returns whether anything moved.
    fn round(&mut self, cx: &mut Context<'_>, st: &mut State) -> io::Result<bool> {
        let mut progress = false;
        if !self.read_eof {
            let space = st.session.read_space(self.read_chunk);
            let offered = space.len();
            let mut rb = ReadBuf::new(space);
            match Pin::new(&mut self.stream).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == offered {
                        self.read_chunk = (self.read_chunk * 2).min(READ_CHUNK);
                    }
                    if n == 0 {
                        self.read_eof = true;
                        st.session.handle_eof();
                    } else {
                        st.session.commit_input(n, Instant::now());
                        st.note_server_version();
                    }
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    self.read_eof = true;
                    debug!(error = %e, "reading from the server failed");
                    st.session.handle_eof();
                    progress = true;
                }
                Poll::Pending => {}
            }
        }
        let processed = st.process();
        // The version line may only be parsed now, and a failure in the same read (no
        // algorithm in common in the KEXINIT right behind it) must not hide that it came.
        st.note_server_version();
        if let Err(e) = processed
            && st.error.is_none()
        {
            st.fail_all(&e);
            st.error = Some(e);
        }
        for request in st.auth_requests.drain(..) {
            spawn_auth_answer(self.shared.clone(), self.auth.clone(), request);
        }
        if let Some(check) = st.host_key_check.take() {
            spawn_host_key_check(self.shared.clone(), check);
        }
        if let Some(work) = st.session.take_kex_work() {
            spawn_kex_work(self.shared.clone(), work);
        }
        if !st.preparing_kex
            && let Some(algorithm) = st.session.transport().wants_prepared_kex()
        {
            st.preparing_kex = true;
            spawn_kex_preparation(self.shared.clone(), algorithm);
        }
        while !st.session.output().is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, st.session.output()) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    st.session.consume_output(n);
                    self.flush_needed = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        if self.flush_needed {
            match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flush_needed = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        if st.session.pending_output() < OUTPUT_LOW_WATER && !st.output_waiters.is_empty() {
            for w in st.output_waiters.drain(..) {
                w.wake();
            }
        }
        Ok(progress)
    }
}

/// Runs one authentication request through `helper` in a task of its own and hands the
/// answer to the session, waking the driver to send what follows.
fn spawn_auth_answer(shared: Arc<Shared>, helper: Arc<dyn AuthHelper>, request: AuthEvent) {
    tokio::spawn(async move {
        match request {
            AuthEvent::SignRequest(r) => {
                let id = r.id;
                let answer = helper.sign(r).await;
                let mut st = shared.lock();
                st.session.provide_signature(id, answer, Instant::now());
                st.wake_driver();
            }
            AuthEvent::PasswordRequest(r) => {
                let id = r.id;
                let answer = helper.password(r).await;
                let mut st = shared.lock();
                st.session.provide_password(id, answer, Instant::now());
                st.wake_driver();
            }
            AuthEvent::InfoRequest(r) => {
                let id = r.id;
                let answer = helper.respond(r).await;
                let mut st = shared.lock();
                st.session.provide_responses(id, answer, Instant::now());
                st.wake_driver();
            }
            _ => {}
        }
    });
}

/// Runs a host key check in a task of its own and hands its verdict to the session, waking
/// the driver to go on (or to end, when the check could not be made).
fn spawn_host_key_check(shared: Arc<Shared>, check: VerdictFuture) {
    tokio::spawn(async move {
        let verdict = check.await;
        let mut st = shared.lock();
        match verdict {
            Verdict::Trusted => st.session.accept_host_key(),
            Verdict::Refused(why) => st.session.reject_host_key(why),
            Verdict::Unchecked(why) => {
                if st.error.is_none() {
                    let e = SessionError::HostKeyUnchecked(why);
                    st.fail_all(&e);
                    st.error = Some(e);
                }
            }
        }
        st.wake_driver();
    });
}

/// Makes the first message of a key exchange with `algorithm` on tokio's blocking threads
/// ([`PreparedKex`]): its key pair (about 11 ms of CPU for sntrup761, most of a client's
/// handshake) is then not made on the thread that carries the session, which in the fleet
/// carries other sessions' packets too. `None` when it cannot be made; the exchange then
/// makes its own when it runs, as it would have.
pub async fn prepare_kex(algorithm: KexAlgorithm) -> Option<PreparedKex> {
    let made =
        tokio::task::spawn_blocking(move || PreparedKex::new(algorithm, &mut OsRandom)).await;
    match made {
        Ok(Ok(prepared)) => Some(prepared),
        Ok(Err(e)) => {
            debug!(kex = algorithm.name(), error = %e, "no first message made ahead");
            None
        }
        // The runtime is shutting down.
        Err(_) => None,
    }
}

/// Prepares the next key exchange's first message for the session ([`prepare_kex`]) and
/// hands it over; the rekey then runs without making its key pair on the session's thread.
/// The transport asks for one only once a rekey is likely
/// ([`ClientTransport::wants_prepared_kex`](ssh_transport::ClientTransport::wants_prepared_kex)),
/// and it waits there (3 to 5 KiB) until that exchange.
fn spawn_kex_preparation(shared: Arc<Shared>, algorithm: KexAlgorithm) {
    tokio::spawn(async move {
        let made = prepare_kex(algorithm).await;
        let mut st = shared.lock();
        if let Some(prepared) = made {
            st.session.offer_prepared_kex(prepared);
            st.preparing_kex = false;
        }
    });
}

/// Does a key exchange's work on tokio's blocking threads ([`KexWork`]: our key pair when
/// none was prepared for the method, 11 ms of CPU for sntrup761; the proof of the server's
/// reply, 1.6 ms for its decapsulation plus the host key's signature) and hands the result
/// to the session, waking the driver to go on with the exchange. If the runtime is shutting
/// down the exchange never finishes, and the session's handshake or rekey timeout ends it.
fn spawn_kex_work(shared: Arc<Shared>, work: KexWork) {
    tokio::spawn(async move {
        if let Ok(done) = tokio::task::spawn_blocking(move || work.run()).await {
            let mut st = shared.lock();
            st.session.finish_kex_work(done);
            st.wake_driver();
        }
    });
}

impl<S> Drop for Driver<S> {
    /// A driver dropped before its session ended (its task aborted) still ends the session
    /// for everyone holding a channel, so no stream waits for data that cannot come.
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if !st.finished {
            st.finished = true;
            let e = st.error.clone().unwrap_or(SessionError::Ended);
            st.fail_all(&e);
            if st.error.is_none() {
                st.error = Some(e);
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Driver<S> {
    type Output = Result<(), SessionError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let shared = this.shared.clone();
        let mut guard = shared.lock();
        let st = &mut *guard;
        match &st.driver_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.driver_waker = Some(cx.waker().clone()),
        }
        for _ in 0..POLL_BUDGET {
            let progress = match this.round(cx, st) {
                Ok(p) => p,
                Err(e) => {
                    let err = st.error.clone().unwrap_or_else(|| {
                        SessionError::Transport(if e.kind() == io::ErrorKind::UnexpectedEof {
                            ssh_transport::Error::ConnectionLost
                        } else {
                            debug!(error = %e, "writing to the server failed");
                            ssh_transport::Error::ConnectionLost
                        })
                    });
                    st.fail_all(&err);
                    st.error = Some(err.clone());
                    st.finished = true;
                    return Poll::Ready(Err(err));
                }
            };
            if let Some(err) = st.error.clone() {
                // Give the DISCONNECT a chance to leave, then end.
                if st.session.output().is_empty() || this.read_eof || !progress {
                    st.finished = true;
                    st.fail_all(&err);
                    let polite =
                        matches!(err, SessionError::Transport(ssh_transport::Error::Closed));
                    return Poll::Ready(if polite { Ok(()) } else { Err(err) });
                }
                continue;
            }
            if !progress {
                // Timers: handshake timeout, time-based rekeying, keepalives.
                let Some(deadline) = st.session.poll_timeout() else {
                    return Poll::Pending;
                };
                let now = Instant::now();
                if now < deadline {
                    this.sleep
                        .as_mut()
                        .reset(tokio::time::Instant::from_std(deadline));
                    if this.sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                st.session.handle_timeout(now);
            }
        }
        // Out of budget with work left: run the timers that are due, since a server that
        // keeps us busy (an IGNORE flood while it never answers a rekey) must not keep them
        // from running; then let other tasks run, and continue.
        let now = Instant::now();
        if st.session.poll_timeout().is_some_and(|due| due <= now) {
            st.session.handle_timeout(now);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
