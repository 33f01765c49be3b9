//! The client side of the transport: version exchange, key exchange states, rekeying and the
//! payload path, as one sans-IO object.
//!
//! ```text
//!            new(): our version line + KEXINIT queued
//!  ExpectKexInit ──KEXINIT──> ExpectKexReply ──(method's messages)──> HostKeyPending (first kex only;
//!       ^                                        │             the application decides)
//!       │ rekey: bytes, time,                    └──(rekey: same key)──┐     │ accept_host_key
//!       │ or the server's KEXINIT                                      v     v
//!     Idle <─────────────────────NEWKEYS (theirs)──────────────── ExpectNewKeys (ours sent)
//! ```
//! From the moment we send KEXINIT until we send NEWKEYS, payloads from the layers above are
//! queued (as OpenSSH's `ssh_packet_send2` does) and flushed, in order, right after our
//! NEWKEYS, so a rekey is invisible above the transport.

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::time::{Duration, Instant};

use tracing::{debug, trace};

use crate::cert::Certificate;
use crate::cipher::{self, CipherAlgorithm, PacketOpener, PacketSealer};
use crate::compress::Compression;
use crate::error::Error;
use crate::hostkey::{HostKeyAlgorithm, PublicKey, SignatureAlgorithm, fingerprint_sha256};
use crate::kex::{
    self, ClientKex, ClientStep, DebugMsg, Disconnect, ExtInfo, KexAlgorithm, KexError, KexInit,
    KexOutcome, Negotiated, PreparedKex, Unimplemented,
};
use crate::mac::{self, MacAlgorithm};
use crate::msg::{DisconnectReason, MessageType};
use crate::packet::{Received, Rx, Tx};
use crate::random::SecureRandom;
use crate::sink::PayloadSink;
use crate::text::sanitize;
use crate::version::{Line, VersionReader};
use crate::wire::DecodeError;

/// The most bytes of our packets that may wait to be sent: past it the transport fails with
/// [`Error::OutputOverflow`]. An application that holds its own data back at a high-water
/// mark (the driver's is 1 MiB) never comes near it; only a server that stops reading while
/// it keeps sending messages that ask for replies does.
pub const MAX_PENDING_OUTPUT: usize = 64 << 20;

/// What the client offers and how it behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Our identification line, without CR LF.
    pub version: String,
    /// Key exchange methods, in preference order.
    pub kex_algorithms: Vec<KexAlgorithm>,
    /// Host key algorithms, in preference order. The defaults are plain keys only: an
    /// application that trusts certificate authorities for the host puts the certificate
    /// algorithms first, as OpenSSH orders them when known_hosts has a `@cert-authority` line
    /// for the host.
    pub host_key_algorithms: Vec<HostKeyAlgorithm>,
    /// Ciphers, in preference order (both directions).
    pub ciphers: Vec<CipherAlgorithm>,
    /// MACs, in preference order (both directions), used only with a cipher that is not
    /// AEAD. SHA-1 MACs are never in the defaults; `none` is never a MAC.
    pub macs: Vec<MacAlgorithm>,
    /// Compression methods, in preference order (both directions). The default offers only
    /// `none`; [`Compression::PREFERRED`] is what `-C` asks for. With `zlib@openssh.com` the
    /// application must call [`ClientTransport::auth_succeeded`].
    pub compression: Vec<Compression>,
    /// Start a key exchange after this many bytes in either direction. `None` uses the
    /// cipher's own limit, as OpenSSH does (1 GiB for ChaCha20-Poly1305, 64 GiB for AES-GCM).
    pub rekey_limit: Option<u64>,
    /// Start a key exchange after this much time.
    pub rekey_interval: Option<Duration>,
    /// The version exchange and first key exchange must finish within this, and so must
    /// every later key exchange from its start: a server that never answers a rekey (while
    /// it keeps the connection busy with IGNORE or DEBUG, which keepalives count as life)
    /// would otherwise hold every channel's data back for good.
    pub handshake_timeout: Option<Duration>,
    /// Send the first key exchange message of our first method right behind our first
    /// KEXINIT, flagged with `first_kex_packet_follows` (RFC 4253 section 7.1): one round trip
    /// less when the server's first key exchange and host key algorithms are our first ones,
    /// and a wasted message (the server skips it) when not. Set it only when our first choices
    /// are likely the server's, for example because they were its first choices last time.
    /// Group exchange is never guessed: its first message is only a request.
    pub guess_first_kex: bool,
}

impl ClientConfig {
    /// Puts the certificate form of each host key algorithm of the list ahead of it, in the
    /// same order: what an application that trusts a certificate authority for the host
    /// offers, as OpenSSH orders them for a host with a `@cert-authority` line.
    pub fn put_certificate_algorithms_first(&mut self) {
        let certs: Vec<HostKeyAlgorithm> = self
            .host_key_algorithms
            .iter()
            .filter(|a| !a.certificate)
            .map(|a| HostKeyAlgorithm::certificate(a.signature))
            .collect();
        self.host_key_algorithms.splice(0..0, certs);
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            version: concat!("SSH-2.0-forwarder_", env!("CARGO_PKG_VERSION")).into(),
            kex_algorithms: KexAlgorithm::ALL.to_vec(),
            // The NIST curves come after the others but stay, for FIPS-mode bastions; SHA-1
            // (`ssh-rsa`) is never offered unless configured.
            host_key_algorithms: [
                SignatureAlgorithm::Ed25519,
                SignatureAlgorithm::RsaSha512,
                SignatureAlgorithm::RsaSha256,
                SignatureAlgorithm::EcdsaP256,
                SignatureAlgorithm::EcdsaP384,
                SignatureAlgorithm::EcdsaP521,
            ]
            .into_iter()
            .map(HostKeyAlgorithm::plain)
            .collect(),
            ciphers: cipher::ALL.to_vec(),
            macs: mac::DEFAULT.to_vec(),
            compression: vec![Compression::None],
            rekey_limit: None,
            rekey_interval: None,
            handshake_timeout: Some(Duration::from_secs(30)),
            guess_first_kex: false,
        }
    }
}

/// What the transport has for the application.
#[derive(Debug)]
pub enum Event<'a> {
    /// The server's host key, already proven by its signature over the exchange hash. The
    /// application must call [`ClientTransport::accept_host_key`] or
    /// [`ClientTransport::reject_host_key`]; nothing else happens until it does. When the
    /// server presented a certificate this is the certified (plain) key, and
    /// [`ClientTransport::host_certificate`] has the certificate: an application that does not
    /// look at it judges the plain key, which is what OpenSSH falls back to when it does not
    /// trust the certificate.
    VerifyHostKey(&'a PublicKey),
    /// The first key exchange is complete: user authentication may start.
    Established,
    /// A later key exchange completed.
    Rekeyed,
    /// A payload for the layers above (SERVICE_ACCEPT and message numbers 50 and up).
    Payload {
        /// The message, number first.
        data: &'a [u8],
        /// The packet's sequence number, for SSH_MSG_UNIMPLEMENTED.
        seq: u32,
        /// Where `data` starts in the receive buffer, when it lies there (it does unless it
        /// was decompressed). Its bytes stay at that place, readable with
        /// [`ClientTransport::received_bytes`], until the next
        /// [`read_space`](ClientTransport::read_space) or
        /// [`handle_input`](ClientTransport::handle_input): opening later packets does not
        /// move them.
        at: Option<usize>,
    },
}

enum Kex {
    Idle,
    ExpectKexInit(ExpectKexInit),
    ExpectKexReply(Box<ExpectKexReply>),
    /// The exchange waits for its work ([`KexWork`]) with this id: held, or taken by the
    /// application (`None`).
    WorkPending(u64, Option<Box<KexWork>>),
    HostKeyPending(Box<HostKeyPending>),
    ExpectNewKeys(ExpectNewKeys),
}

impl Kex {
    fn expected(&self) -> &'static str {
        match self {
            Self::Idle => "no key exchange message",
            Self::ExpectKexInit(_) => "SSH_MSG_KEXINIT",
            Self::ExpectKexReply(_) => "the key exchange method's reply",
            Self::WorkPending(..) => "nothing while the key exchange's work is done elsewhere",
            Self::HostKeyPending(_) => "nothing while the host key is checked",
            Self::ExpectNewKeys(_) => "SSH_MSG_NEWKEYS",
        }
    }
}

/// Our KEXINIT is sent; the server's has not arrived.
struct ExpectKexInit {
    ours: KexInit,
    ours_bytes: Vec<u8>,
    /// Our first method, its first message already sent as a guess.
    guess: Option<Box<dyn ClientKex>>,
    /// The guess was a [`PreparedKex`].
    guess_prepared: bool,
}

/// Both KEXINITs are known and the method's first message was sent.
struct ExpectKexReply {
    ours_bytes: Vec<u8>,
    theirs_bytes: Vec<u8>,
    negotiated: Negotiated,
    method: Box<dyn ClientKex>,
}

/// The exchange is done and proven; the host key awaits the application's decision.
struct HostKeyPending {
    negotiated: Negotiated,
    host_key: ServerHostKey,
    keys: NewKeys,
}

/// The host key the server proved: K_S as received, its plain key, and the certificate when
/// K_S was one.
#[derive(Clone, Debug)]
struct ServerHostKey {
    blob: Vec<u8>,
    key: PublicKey,
    certificate: Option<Certificate>,
}

struct NewKeys {
    sealer: Box<dyn PacketSealer>,
    opener: Box<dyn PacketOpener>,
}

/// Our NEWKEYS was sent; the server's is next.
struct ExpectNewKeys {
    negotiated: Negotiated,
    opener: Box<dyn PacketOpener>,
}

enum Phase {
    Version(VersionReader),
    Packets,
}

/// The client transport. See the module docs for the states.
pub struct ClientTransport {
    config: ClientConfig,
    rng: Box<dyn SecureRandom>,
    rx: Rx,
    tx: Tx,
    phase: Phase,
    kex: Kex,
    client_version: Vec<u8>,
    server_version: Option<Vec<u8>>,
    session_id: Option<Vec<u8>>,
    host_key: Option<ServerHostKey>,
    negotiated: Option<Negotiated>,
    strict: bool,
    established: bool,
    /// Payloads from above, each preceded by its u32 length, held while keys change.
    queued: Vec<u8>,
    events: VecDeque<Pending>,
    error: Option<Error>,
    server_sig_algs: Option<Vec<String>>,
    /// The server's first KEXINIT offered `ext-info-s`: an EXT_INFO follows its first NEWKEYS.
    server_ext_info: bool,
    /// The first key exchange and host key algorithms of the server's first KEXINIT.
    server_firsts: Option<(String, String)>,
    /// The server's key exchange methods from its first KEXINIT, in its order.
    server_kex: Vec<String>,
    /// Whether our guessed first key exchange message was right, when we sent one.
    guess_right: Option<bool>,
    ignore_next_kex_packet: bool,
    handshake_deadline: Option<Instant>,
    rekey_deadline: Option<Instant>,
    kex_finished_since_tick: bool,
    /// A key exchange after the first started since the last tick: its deadline counts
    /// from the next one.
    rekey_started_since_tick: bool,
    /// When the running key exchange after the first must have finished.
    rekey_kex_deadline: Option<Instant>,
    /// The latest time the application gave us ([`ClientTransport::new`] or
    /// [`ClientTransport::handle_timeout`]).
    last_tick: Instant,
    rekey_limit: u64,
    kex_count: u64,
    /// User authentication succeeded (delayed compression may run).
    authenticated: bool,
    /// A key exchange's first message the application made ahead of time, for the next
    /// exchange if it runs that method.
    prepared: Option<PreparedKex>,
    /// Key exchanges that ran on a prepared opening.
    prepared_used: u64,
    /// The application proves the server's key exchange reply elsewhere ([`KexWork`]).
    kex_work_elsewhere: bool,
    /// Key exchanges whose reply was proven elsewhere.
    kex_work_done: u64,
    /// Key exchanges whose key pair was made elsewhere.
    kex_started_elsewhere: u64,
}

#[derive(Debug)]
enum Pending {
    VerifyHostKey,
    Established,
    Rekeyed,
}

impl core::fmt::Debug for ClientTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientTransport")
            .field("established", &self.established)
            .field("kex", &self.kex.expected())
            .field("rx", &self.rx)
            .field("tx", &self.tx)
            .field("error", &self.error)
            .finish()
    }
}

impl ClientTransport {
    /// A transport that has queued our version line and first KEXINIT.
    pub fn new(config: ClientConfig, rng: Box<dyn SecureRandom>, now: Instant) -> Self {
        Self::with_prepared_kex(config, rng, now, None)
    }

    /// [`new`](Self::new), with the first key exchange's opening made ahead of time
    /// ([`PreparedKex`]): used for the guess (and sent now) when we guess with its method,
    /// or when the server's KEXINIT settles on its method.
    pub fn with_prepared_kex(
        config: ClientConfig,
        rng: Box<dyn SecureRandom>,
        now: Instant,
        prepared: Option<PreparedKex>,
    ) -> Self {
        let client_version = config.version.clone().into_bytes();
        let mut t = Self {
            handshake_deadline: config.handshake_timeout.map(|d| now + d),
            config,
            rng,
            rx: Rx::default(),
            tx: Tx::default(),
            phase: Phase::Version(VersionReader::default()),
            kex: Kex::Idle,
            client_version,
            server_version: None,
            session_id: None,
            host_key: None,
            negotiated: None,
            strict: false,
            established: false,
            queued: Vec::new(),
            events: VecDeque::new(),
            error: None,
            server_sig_algs: None,
            server_ext_info: false,
            server_firsts: None,
            server_kex: Vec::new(),
            guess_right: None,
            ignore_next_kex_packet: false,
            rekey_deadline: None,
            kex_finished_since_tick: false,
            rekey_started_since_tick: false,
            rekey_kex_deadline: None,
            last_tick: now,
            rekey_limit: u64::MAX,
            kex_count: 0,
            authenticated: false,
            prepared,
            prepared_used: 0,
            kex_work_elsewhere: false,
            kex_work_done: 0,
            kex_started_elsewhere: 0,
        };
        let mut line = t.client_version.clone();
        line.extend_from_slice(b"\r\n");
        t.tx.raw(&line);
        t.start_kex();
        t
    }

    // ---- getters -------------------------------------------------------------------------

    /// The session identifier (the first exchange hash), once the first exchange is done.
    pub fn session_id(&self) -> Option<&[u8]> {
        self.session_id.as_deref()
    }

    /// The configuration the client was made with (its algorithm lists).
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The algorithms of the most recent key exchange.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The server's identification line, sanitized.
    pub fn server_version(&self) -> Option<String> {
        self.server_version
            .as_deref()
            .map(|v| sanitize(v, false, 255))
    }

    /// The server's `server-sig-algs` (RFC 8308), if it sent them.
    pub fn server_sig_algs(&self) -> Option<&[String]> {
        self.server_sig_algs.as_deref()
    }

    /// Whether authentication may choose its algorithms now: the server's `server-sig-algs`
    /// arrived, or its first KEXINIT said no EXT_INFO would come. Before the first exchange
    /// ends this is false.
    pub fn server_sig_algs_settled(&self) -> bool {
        self.established && (self.server_sig_algs.is_some() || !self.server_ext_info)
    }

    /// The first key exchange and host key algorithm names in the server's first KEXINIT: its
    /// own first choices, which a later connection can put first to guess right
    /// ([`ClientConfig::guess_first_kex`]).
    pub fn server_first_choices(&self) -> Option<(&str, &str)> {
        self.server_firsts
            .as_ref()
            .map(|(k, h)| (k.as_str(), h.as_str()))
    }

    /// The server's key exchange methods from its first KEXINIT, in its order of preference
    /// (empty until it arrived).
    pub fn server_kex_algorithms(&self) -> &[String] {
        &self.server_kex
    }

    /// `Some(true)` when the first key exchange message went out as a guess and the server
    /// took it (a round trip saved), `Some(false)` when it skipped it, `None` when no guess
    /// was sent or the server's KEXINIT has not arrived.
    pub fn kex_guess_right(&self) -> Option<bool> {
        self.guess_right
    }

    /// The host key accepted at connection time (the certified key when it was a
    /// certificate).
    pub fn host_key(&self) -> Option<&PublicKey> {
        self.host_key.as_ref().map(|k| &k.key)
    }

    /// The server's host certificate: the one awaiting the application's decision while
    /// [`Event::VerifyHostKey`] is pending, then the one accepted at connection time. `None`
    /// when the server presented a plain key.
    pub fn host_certificate(&self) -> Option<&Certificate> {
        match &self.kex {
            Kex::HostKeyPending(p) => p.host_key.certificate.as_ref(),
            _ => self.host_key.as_ref().and_then(|k| k.certificate.as_ref()),
        }
    }

    /// Whether the first key exchange has completed.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// The method of the next key exchange, when it is worth preparing its opening now
    /// ([`offer_prepared_kex`](Self::offer_prepared_kex)): the method the last exchange ran
    /// (a rekey negotiates the same lists again), once a rekey is likely to come: this
    /// session has rekeyed before, or half of the byte limit or of the time limit has
    /// passed since the last exchange. A session that never rekeys never pays for a key
    /// pair it would not use. `None` for group exchange, while an exchange runs, or when an
    /// opening for the method is already held.
    pub fn wants_prepared_kex(&self) -> Option<KexAlgorithm> {
        let kex = self.negotiated.as_ref()?.kex;
        let held = self.prepared.as_ref().is_some_and(|p| p.algorithm() == kex);
        if !self.established || !matches!(self.kex, Kex::Idle) || !kex.is_single_pass() || held {
            return None;
        }
        let half_the_bytes = self.tx.bytes.max(self.rx.bytes) >= self.rekey_limit / 2;
        let half_the_time = match (self.rekey_deadline, self.config.rekey_interval) {
            (Some(deadline), Some(interval)) => {
                deadline.saturating_duration_since(self.last_tick) <= interval / 2
            }
            _ => false,
        };
        (self.kex_count >= 2 || half_the_bytes || half_the_time).then_some(kex)
    }

    /// Holds `prepared` for the next key exchange (replacing one held before): used if that
    /// exchange runs its method, dropped otherwise.
    pub fn offer_prepared_kex(&mut self, prepared: PreparedKex) {
        self.prepared = Some(prepared);
    }

    /// How many key exchanges ran on an opening made ahead of time ([`PreparedKex`]): a
    /// prepared guess the server skipped does not count.
    pub fn prepared_kex_used(&self) -> u64 {
        self.prepared_used
    }

    /// How many key exchanges have completed (the first included).
    pub fn kex_count(&self) -> u64 {
        self.kex_count
    }

    /// Whether payloads are compressed now: (what we send, what we receive).
    pub fn compressing(&self) -> (bool, bool) {
        (self.tx.is_compressing(), self.rx.is_compressing())
    }

    /// Whether a key exchange is running.
    pub fn is_rekeying(&self) -> bool {
        !matches!(self.kex, Kex::Idle)
    }

    /// The error that ended the transport, if any.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// Bytes waiting to be written to the socket.
    pub fn output(&self) -> &[u8] {
        self.tx.output()
    }

    /// Bytes not yet written, including payloads held while keys change. The driver stops
    /// reading local sockets while this is large.
    pub fn pending_output(&self) -> usize {
        self.tx.output().len() + self.queued.len()
    }

    /// The earliest time [`handle_timeout`](Self::handle_timeout) must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.error.is_some() {
            return None;
        }
        if (self.kex_finished_since_tick && self.config.rekey_interval.is_some())
            || (self.rekey_started_since_tick && self.config.handshake_timeout.is_some())
        {
            // A key exchange finished (the next time-based rekey counts from now) or a rekey
            // started (its deadline counts from now), and only the application's clock knows
            // when now is. Ask for a tick at once.
            return Some(self.last_tick);
        }
        [
            self.handshake_deadline,
            self.rekey_deadline,
            self.rekey_kex_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- input ---------------------------------------------------------------------------

    /// Bytes received from the socket.
    pub fn handle_input(&mut self, data: &[u8]) {
        self.rx.append(data);
    }

    /// Room to read at least `min` bytes from the socket into, without a copy; report how
    /// many arrived with [`commit_input`](Self::commit_input).
    pub fn read_space(&mut self, min: usize) -> &mut [u8] {
        self.rx.read_space(min)
    }

    /// Bytes of the receive buffer by position: a range within a payload that
    /// [`Event::Payload`] placed `at` an offset, read back after later packets were opened.
    /// Empty for a range outside the buffer.
    pub fn received_bytes(&self, range: core::ops::Range<usize>) -> &[u8] {
        self.rx.buffered(range)
    }

    /// `n` bytes were read into [`read_space`](Self::read_space).
    pub fn commit_input(&mut self, n: usize) {
        self.rx.commit(n);
    }

    /// The socket reached end of file.
    pub fn handle_eof(&mut self) {
        if self.error.is_none() {
            self.error = Some(Error::ConnectionLost);
        }
    }

    /// Time has passed: enforces the handshake timeout (for the first key exchange and each
    /// later one) and time-based rekeying.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.error.is_some() {
            return;
        }
        self.last_tick = self.last_tick.max(now);
        if self.kex_finished_since_tick {
            self.kex_finished_since_tick = false;
            self.rekey_deadline = self.config.rekey_interval.map(|d| now + d);
        }
        if self.rekey_started_since_tick {
            self.rekey_started_since_tick = false;
            if !matches!(self.kex, Kex::Idle) {
                self.rekey_kex_deadline = self.config.handshake_timeout.map(|d| now + d);
            }
        }
        if let Some(deadline) = self.rekey_kex_deadline
            && now >= deadline
            && !matches!(self.kex, Kex::Idle)
        {
            let d = self.config.handshake_timeout.unwrap_or_default();
            self.fail(Error::RekeyTimeout(d));
            return;
        }
        if let Some(deadline) = self.handshake_deadline
            && now >= deadline
            && !self.established
        {
            let d = self.config.handshake_timeout.unwrap_or_default();
            self.fail(Error::HandshakeTimeout(d));
            return;
        }
        if let Some(deadline) = self.rekey_deadline
            && now >= deadline
        {
            // Cleared even when an exchange is already running: that one renews the keys.
            self.rekey_deadline = None;
            if matches!(self.kex, Kex::Idle) && self.established {
                debug!("rekeying: RekeyLimit time reached");
                self.start_kex();
            }
        }
    }

    /// The next thing for the application, processing received bytes as needed.
    pub fn poll_event(&mut self) -> Result<Option<Event<'_>>, Error> {
        let payload = loop {
            if let Some(e) = &self.error {
                return Err(e.clone());
            }
            if let Some(p) = self.events.pop_front() {
                match p {
                    Pending::Established => return Ok(Some(Event::Established)),
                    Pending::Rekeyed => return Ok(Some(Event::Rekeyed)),
                    Pending::VerifyHostKey => break None,
                }
            }
            if matches!(self.kex, Kex::HostKeyPending(_) | Kex::WorkPending(..)) {
                return Ok(None);
            }
            if let Phase::Version(reader) = &mut self.phase {
                match reader.read(self.rx.unconsumed()) {
                    Ok(None) => return Ok(None),
                    Ok(Some(Line::Banner(line, n))) => {
                        debug!(line = %sanitize(line, false, 200), "server banner line");
                        self.rx.consume_raw(n);
                    }
                    Ok(Some(Line::Version(v, n))) => {
                        let v = v.to_vec();
                        debug!(version = %sanitize(&v, false, 255), "server version");
                        self.server_version = Some(v);
                        self.rx.consume_raw(n);
                        self.phase = Phase::Packets;
                    }
                    Err(e) => {
                        self.fail(e.into());
                    }
                }
                continue;
            }
            let received = match self.rx.next_packet() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.fail(e.into());
                    continue;
                }
            };
            match self.dispatch(&received) {
                Ok(true) => break Some(received),
                Ok(false) => {}
                Err(e) => self.fail(e),
            }
        };
        let Some(payload) = payload else {
            return Ok(match &self.kex {
                Kex::HostKeyPending(p) => Some(Event::VerifyHostKey(&p.host_key.key)),
                _ => None,
            });
        };
        self.maybe_rekey();
        Ok(Some(Event::Payload {
            data: self.rx.payload(&payload),
            seq: payload.seq,
            at: (!payload.inflated).then_some(payload.payload.start),
        }))
    }

    /// Handles one opened packet. `Ok(true)` means it is for the layers above.
    fn dispatch(&mut self, received: &Received) -> Result<bool, Error> {
        let payload = self.rx.payload(received);
        let msg = MessageType::of(payload).unwrap_or(MessageType(0));
        trace!(%msg, len = payload.len(), seq = received.seq, "received");
        let initial = !self.established;

        if msg == MessageType::DISCONNECT {
            let d = Disconnect::decode(payload).map_err(|error| Error::Decode {
                message: msg,
                error,
            })?;
            return Err(Error::Disconnected {
                reason: d.reason,
                description: sanitize(&d.description, false, 512),
            });
        }

        // OpenSSH's strict kex: during the first exchange only the expected kex messages may
        // arrive. (Whether the server is strict is known once its KEXINIT is read; packets
        // before that KEXINIT are caught by its sequence number in on_kexinit.)
        if initial && self.strict && !msg.is_kex() {
            return Err(Error::StrictKex(format!(
                "the server sent {msg} during the initial key exchange while we expected {}",
                self.kex.expected()
            )));
        }

        if msg.is_kex() {
            if self.ignore_next_kex_packet {
                self.ignore_next_kex_packet = false;
                debug!(%msg, "ignoring the server's wrongly guessed kex packet");
                return Ok(false);
            }
            // Outside a key exchange only KEXINIT starts one. Any other message of the kex
            // range (21-49) gets UNIMPLEMENTED and is otherwise ignored, as OpenSSH answers
            // it; it changes no key and no state.
            if self.established && matches!(self.kex, Kex::Idle) && msg != MessageType::KEXINIT {
                debug!(%msg, "key exchange message outside a key exchange: UNIMPLEMENTED");
                self.send_unimplemented(received.seq);
                return Ok(false);
            }
            let payload = payload.to_vec();
            self.handle_kex(msg, &payload)?;
            return Ok(false);
        }

        // A server that has sent KEXINIT may only send kex and generic messages until its
        // NEWKEYS (RFC 4253 7.1).
        let peer_in_kex = matches!(
            self.kex,
            Kex::ExpectKexReply(_) | Kex::HostKeyPending(_) | Kex::ExpectNewKeys(_)
        );
        match msg {
            MessageType::IGNORE => Ok(false),
            MessageType::DEBUG => {
                let d = DebugMsg::decode(payload).map_err(|error| Error::Decode {
                    message: msg,
                    error,
                })?;
                debug!(message = %sanitize(&d.message, false, 512), "server debug message");
                Ok(false)
            }
            MessageType::UNIMPLEMENTED => {
                let u = Unimplemented::decode(payload).map_err(|error| Error::Decode {
                    message: msg,
                    error,
                })?;
                debug!(
                    seq = u.seq,
                    "the server did not understand one of our packets"
                );
                Ok(false)
            }
            _ if initial || peer_in_kex => Err(Error::UnexpectedMessage {
                message: msg,
                expected: self.kex.expected(),
            }),
            MessageType::EXT_INFO => {
                let info = ExtInfo::decode(payload).map_err(|error| Error::Decode {
                    message: msg,
                    error,
                })?;
                if let Some(algs) = info.server_sig_algs() {
                    let algs = algs.map_err(|error| Error::Decode {
                        message: msg,
                        error,
                    })?;
                    debug!(server_sig_algs = %algs.join(","), "server-sig-algs");
                    self.server_sig_algs = Some(algs);
                }
                Ok(false)
            }
            MessageType::SERVICE_REQUEST => Err(Error::UnexpectedMessage {
                message: msg,
                expected: "no service request from a server",
            }),
            m if m.0 < 50 && m != MessageType::SERVICE_ACCEPT => {
                // Unknown transport-generic message: tell the server, as RFC 4253 11.4 asks.
                self.send_unimplemented(received.seq);
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    fn handle_kex(&mut self, msg: MessageType, payload: &[u8]) -> Result<(), Error> {
        let decode_err = |error: DecodeError| Error::Decode {
            message: msg,
            error,
        };
        let state = core::mem::replace(&mut self.kex, Kex::Idle);
        self.kex = match (state, msg) {
            (Kex::Idle, MessageType::KEXINIT) => {
                // The server starts a rekey: answer with our KEXINIT first.
                debug!("the server started a key exchange");
                self.start_kex();
                let Kex::ExpectKexInit(ours) = core::mem::replace(&mut self.kex, Kex::Idle) else {
                    return Err(Error::Closed);
                };
                self.on_kexinit(ours, payload)?
            }
            (Kex::ExpectKexInit(ours), MessageType::KEXINIT) => self.on_kexinit(ours, payload)?,
            (Kex::ExpectKexReply(mut st), m)
                if m != MessageType::KEXINIT && m != MessageType::NEWKEYS =>
            {
                let server_version = self.server_version.clone().unwrap_or_default();
                let strict_initial = self.strict && !self.established;
                if self.kex_work_elsewhere && st.negotiated.kex.is_single_pass() {
                    // A single-pass method's one server message is its reply: the rest of
                    // the exchange is the work, done where the application likes.
                    let st = *st;
                    KexWork::pending(KexWork {
                        id: 0,
                        job: Job::Reply {
                            reply: payload.to_vec(),
                            msg,
                            strict_initial,
                            client_version: self.client_version.clone(),
                            server_version,
                        },
                        method: st.method,
                        ours_bytes: st.ours_bytes,
                        theirs_bytes: st.theirs_bytes,
                        negotiated: st.negotiated,
                    })
                } else {
                    let prefix = kex::HashPrefix {
                        v_c: &self.client_version,
                        v_s: &server_version,
                        i_c: &st.ours_bytes,
                        i_s: &st.theirs_bytes,
                    };
                    match st.method.handle(payload, &prefix, self.rng.as_mut()) {
                        Ok(ClientStep::Send(next)) => {
                            self.send_internal(&mut |b| b.extend_from_slice(&next));
                            Kex::ExpectKexReply(st)
                        }
                        Ok(ClientStep::Done(outcome)) => {
                            let proven = prove(st.negotiated.host_key, outcome)?;
                            self.on_kex_done(st.negotiated, proven)?
                        }
                        Err(e) => return Err(kex_step_error(e, msg, strict_initial)),
                    }
                }
            }
            (Kex::ExpectNewKeys(st), MessageType::NEWKEYS) => {
                if payload.len() != 1 {
                    return Err(decode_err(DecodeError::TrailingBytes));
                }
                self.on_newkeys(st);
                Kex::Idle
            }
            (state, _) => {
                let expected = state.expected();
                self.kex = state;
                return Err(unexpected(msg, expected, self.strict && !self.established));
            }
        };
        Ok(())
    }

    fn on_kexinit(&mut self, ours: ExpectKexInit, payload: &[u8]) -> Result<Kex, Error> {
        let theirs = KexInit::decode(payload).map_err(|error| Error::Decode {
            message: MessageType::KEXINIT,
            error,
        })?;
        let initial = !self.established;
        let negotiated = kex::negotiate(&ours.ours, &theirs, initial)?;
        if initial {
            self.strict = negotiated.strict;
            self.server_ext_info = theirs.kex.iter().any(|k| k == kex::EXT_INFO_S);
            self.server_kex.clone_from(&theirs.kex);
            self.server_firsts = Some((
                theirs.kex.first().cloned().unwrap_or_default(),
                theirs.host_key.first().cloned().unwrap_or_default(),
            ));
            // The Terrapin countermeasure: with strict kex the server's KEXINIT must be the
            // first packet it sent. Counted by packets received (not reset before the first
            // NEWKEYS), which cannot wrap as the 32-bit sequence number would after 2^32.
            if self.strict && self.rx.packets != 1 {
                return Err(Error::StrictKex(
                    "the server's KEXINIT was not the first packet it sent".into(),
                ));
            }
        }
        if theirs.first_kex_packet_follows && kex::guess_was_wrong(&ours.ours, &theirs) {
            self.ignore_next_kex_packet = true;
        }
        debug!(%negotiated, "negotiated");
        let guess_right = ours.guess.is_some().then(|| {
            // The server takes our guess exactly when both first choices match (RFC 4253
            // section 7.1); the method it then runs is our first, which is the guessed one.
            !kex::guess_was_wrong(&ours.ours, &theirs)
                && ours.ours.kex.first().map(String::as_str) == Some(negotiated.kex.name())
        });
        self.guess_right = guess_right;
        let method = match (ours.guess, guess_right) {
            (Some(guessed), Some(true)) => {
                debug!(
                    kex = negotiated.kex.name(),
                    "the server takes our guessed first message"
                );
                if ours.guess_prepared {
                    self.prepared_used += 1;
                }
                guessed
            }
            (guessed, _) => {
                if guessed.is_some() {
                    debug!("our guessed first message was wrong: the server skips it");
                }
                let (method, first) =
                    match PreparedKex::take_for(&mut self.prepared, negotiated.kex) {
                        Some(prepared) => {
                            self.prepared_used += 1;
                            prepared
                        }
                        None if self.kex_work_elsewhere && negotiated.kex.is_single_pass() => {
                            // Its key pair (11 ms for sntrup761) is made where the
                            // application likes; the exchange waits for it.
                            // It draws on the transport's generator, lent to the work (the
                            // exchange's randomness is then what it would be in line); the
                            // operating system's stands in meanwhile.
                            let rng = core::mem::replace(
                                &mut self.rng,
                                Box::new(crate::random::OsRandom),
                            );
                            return Ok(KexWork::pending(KexWork {
                                id: 0,
                                job: Job::Start(rng),
                                method: negotiated.kex.client_for(&negotiated),
                                ours_bytes: ours.ours_bytes,
                                theirs_bytes: payload.to_vec(),
                                negotiated,
                            }));
                        }
                        None => {
                            let mut method = negotiated.kex.client_for(&negotiated);
                            let first = method
                                .start(self.rng.as_mut())
                                .map_err(|e| Error::KeyExchange(e.to_string()))?;
                            (method, first)
                        }
                    };
                self.send_internal(&mut |b| b.extend_from_slice(&first));
                method
            }
        };
        Ok(Kex::ExpectKexReply(Box::new(ExpectKexReply {
            ours_bytes: ours.ours_bytes,
            theirs_bytes: payload.to_vec(),
            negotiated,
            method,
        })))
    }

    /// The method finished and its host key signature is proven: derive the keys.
    fn on_kex_done(&mut self, n: Negotiated, proven: Proven) -> Result<Kex, Error> {
        let Proven { host_key, h, k } = proven;
        let session_id = self.session_id.get_or_insert_with(|| h.clone()).clone();
        let (c2s, s2c) = kex::derive_directions(&n, &k, &h, &session_id);
        let keys = NewKeys {
            sealer: n
                .cipher_c2s
                .sealer_with_mac(&c2s.key, &c2s.iv, c2s.mac(n.mac_c2s))
                .ok_or_else(|| Error::KeyExchange("bad key length".into()))?,
            opener: n
                .cipher_s2c
                .opener_with_mac(&s2c.key, &s2c.iv, s2c.mac(n.mac_s2c))
                .ok_or_else(|| Error::KeyExchange("bad key length".into()))?,
        };
        if let Some(first) = &self.host_key {
            // As OpenSSH compares them: a certificate must be the very same certificate.
            if first.blob != host_key.blob {
                return Err(Error::HostKeyChangedInRekey {
                    first: fingerprint_sha256(&first.blob),
                    now: fingerprint_sha256(&host_key.blob),
                });
            }
            return Ok(self.send_newkeys(n, keys));
        }
        self.events.push_back(Pending::VerifyHostKey);
        Ok(Kex::HostKeyPending(Box::new(HostKeyPending {
            negotiated: n,
            host_key,
            keys,
        })))
    }

    fn send_newkeys(&mut self, negotiated: Negotiated, keys: NewKeys) -> Kex {
        self.send_internal(&mut |b| b.push(MessageType::NEWKEYS.0));
        self.tx.set_sealer(keys.sealer);
        // As OpenSSH does: every NEWKEYS with compression starts a fresh stream.
        self.tx
            .set_compression(negotiated.compression_c2s, self.authenticated);
        if self.strict {
            self.tx.seq = 0;
        }
        // Payloads held during the exchange go out now, in order, under the new keys. They
        // are plaintext (a password may be among them): wiped once sealed.
        let queued = zeroize::Zeroizing::new(core::mem::take(&mut self.queued));
        let mut at = queued.as_slice();
        while let Some((len, rest)) = at.split_first_chunk::<4>() {
            let len = u32::from_be_bytes(*len) as usize;
            let Some(p) = rest.get(..len) else { break };
            self.tx
                .frame(self.rng.as_mut(), &mut |b| b.extend_from_slice(p));
            at = rest.get(len..).unwrap_or_default();
        }
        Kex::ExpectNewKeys(ExpectNewKeys {
            negotiated,
            opener: keys.opener,
        })
    }

    fn on_newkeys(&mut self, st: ExpectNewKeys) {
        self.rx.set_opener(st.opener);
        self.rx
            .set_compression(st.negotiated.compression_s2c, self.authenticated);
        if self.strict {
            self.rx.seq = 0;
        }
        self.rekey_limit = self.config.rekey_limit.unwrap_or(u64::MAX).min(
            cipher_rekey_limit(&st.negotiated.cipher_c2s)
                .min(cipher_rekey_limit(&st.negotiated.cipher_s2c)),
        );
        self.negotiated = Some(st.negotiated);
        self.kex_count += 1;
        self.kex_finished_since_tick = true;
        self.rekey_started_since_tick = false;
        self.rekey_kex_deadline = None;
        if self.established {
            self.events.push_back(Pending::Rekeyed);
        } else {
            self.established = true;
            self.handshake_deadline = None;
            self.events.push_back(Pending::Established);
        }
    }

    // ---- commands ------------------------------------------------------------------------

    /// Has the application do the heavy parts of each single-pass key exchange elsewhere
    /// (`true`): our key pair, when none was prepared for the method the server settled on
    /// (11 ms of CPU for sntrup761x25519), and the proof of the server's reply (the shared
    /// secret, the exchange hash, the host key's signature: about 2 ms). At each, the
    /// transport stops processing and [`ClientTransport::take_kex_work`] hands out the work,
    /// to be run with [`KexWork::run`] and given back with
    /// [`ClientTransport::finish_kex_work`]. Off by default: the transport does both in line.
    pub fn set_kex_work_elsewhere(&mut self, elsewhere: bool) {
        self.kex_work_elsewhere = elsewhere;
    }

    /// The work a key exchange waits for, if any: our key pair, or the proof of the server's
    /// reply (see [`ClientTransport::set_kex_work_elsewhere`]).
    pub fn take_kex_work(&mut self) -> Option<KexWork> {
        match &mut self.kex {
            Kex::WorkPending(_, work) => work.take().map(|w| *w),
            _ => None,
        }
    }

    /// The work's result: the exchange goes on (host key check, NEWKEYS) or fails. A result
    /// that this transport's exchange does not wait for (the transport failed meanwhile, or
    /// it is another transport's) is dropped.
    pub fn finish_kex_work(&mut self, done: KexWorkDone) {
        let waiting = matches!(self.kex, Kex::WorkPending(id, None) if id == done.id);
        if !waiting || self.error.is_some() {
            return;
        }
        self.kex = Kex::Idle;
        let next = match done.outcome {
            Outcome::Started { method, first, rng } => first.map(|first| {
                self.rng = rng;
                self.send_internal(&mut |b| b.extend_from_slice(&first));
                self.kex_started_elsewhere += 1;
                Kex::ExpectKexReply(Box::new(ExpectKexReply {
                    ours_bytes: done.ours_bytes,
                    theirs_bytes: done.theirs_bytes,
                    negotiated: done.negotiated,
                    method,
                }))
            }),
            Outcome::Proven(proven) => (*proven).and_then(|proven| {
                self.kex_work_done += 1;
                self.on_kex_done(done.negotiated, proven)
            }),
        };
        match next {
            Ok(kex) => self.kex = kex,
            Err(e) => self.fail(e),
        }
    }

    /// How many key exchanges had their reply proven elsewhere ([`KexWork`]).
    pub fn kex_work_done(&self) -> u64 {
        self.kex_work_done
    }

    /// How many key exchanges had their key pair made elsewhere ([`KexWork`]) because none
    /// was prepared for their method.
    pub fn kex_started_elsewhere(&self) -> u64 {
        self.kex_started_elsewhere
    }

    /// The application accepts the server's host key (first exchange only).
    pub fn accept_host_key(&mut self) {
        if let Kex::HostKeyPending(p) = core::mem::replace(&mut self.kex, Kex::Idle) {
            let HostKeyPending {
                negotiated,
                host_key,
                keys,
            } = *p;
            self.host_key = Some(host_key);
            self.kex = self.send_newkeys(negotiated, keys);
        }
    }

    /// The application refuses the server's host key; `why` becomes the error.
    pub fn reject_host_key(&mut self, why: String) {
        if matches!(self.kex, Kex::HostKeyPending(_)) {
            self.fail(Error::HostKeyRejected(why));
        }
    }

    /// User authentication succeeded: the session router calls this when it has processed
    /// SSH_MSG_USERAUTH_SUCCESS, before it polls for the next event. Delayed compression
    /// (`zlib@openssh.com`) starts here for both directions, exactly at the packet boundary:
    /// packets are opened one at a time, so the next one received is the server's first
    /// compressed packet, and the next one sent is our first.
    pub fn auth_succeeded(&mut self) {
        if self.authenticated {
            return;
        }
        self.authenticated = true;
        self.tx.start_delayed_compression();
        self.rx.start_delayed_compression();
        if self.tx.is_compressing() || self.rx.is_compressing() {
            debug!("user authentication succeeded: delayed compression starts");
        }
    }

    /// Starts a key exchange now, unless one is running or the transport is not established.
    pub fn rekey(&mut self) {
        if self.established && matches!(self.kex, Kex::Idle) && self.error.is_none() {
            self.start_kex();
        }
    }

    /// The driver wrote `n` bytes of [`output`](Self::output).
    pub fn consume_output(&mut self, n: usize) {
        self.tx.consume(n);
    }

    /// Replies SSH_MSG_UNIMPLEMENTED for a packet the layers above did not understand.
    pub fn send_unimplemented(&mut self, seq: u32) {
        let m = Unimplemented { seq };
        self.send_with(&mut |b| m.encode(b));
    }

    /// Sends SSH_MSG_DISCONNECT and closes the transport.
    pub fn disconnect(&mut self, reason: DisconnectReason, description: &str) {
        if self.error.is_some() {
            return;
        }
        if matches!(self.phase, Phase::Packets) {
            let d = Disconnect {
                reason,
                description: description.as_bytes().to_vec(),
            };
            self.send_internal(&mut |b| d.encode(b));
        }
        self.error = Some(Error::Closed);
    }

    // ---- internals -----------------------------------------------------------------------

    fn start_kex(&mut self) {
        let mut kex: Vec<String> = self
            .config
            .kex_algorithms
            .iter()
            .map(|k| k.name().to_owned())
            .collect();
        if !self.established {
            kex.push(kex::EXT_INFO_C.into());
            kex.push(kex::STRICT_KEX_C.into());
        }
        let host_key = self
            .config
            .host_key_algorithms
            .iter()
            .map(|a| a.name().to_owned())
            .collect();
        let ciphers = self
            .config
            .ciphers
            .iter()
            .map(|c| c.name.to_owned())
            .collect();
        let macs = self.config.macs.iter().map(|m| m.name.to_owned()).collect();
        let compression = self
            .config
            .compression
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        if self.established {
            // A rekey: it must finish within the handshake timeout, counted from the next
            // tick.
            self.rekey_started_since_tick = true;
        }
        let mut ours = KexInit::new(self.rng.as_mut(), kex, host_key, ciphers, macs, compression);
        // Only the first exchange is guessed: a rekey costs no waiting round trip.
        let mut guess = None;
        let mut guess_prepared = false;
        if self.config.guess_first_kex
            && !self.established
            && let Some(first) = self.config.kex_algorithms.first()
            && first.is_single_pass()
        {
            // One made for another method is left for the server's KEXINIT to settle on.
            let matches = self
                .prepared
                .as_ref()
                .is_some_and(|p| p.algorithm() == *first);
            let taken = if matches {
                PreparedKex::take_for(&mut self.prepared, *first)
            } else {
                None
            };
            let made = match taken {
                Some(prepared) => {
                    guess_prepared = true;
                    Ok(prepared)
                }
                None => {
                    let mut method = first.client();
                    method
                        .start(self.rng.as_mut())
                        .map(|message| (method, message))
                }
            };
            match made {
                Ok(made) => {
                    ours.first_kex_packet_follows = true;
                    guess = Some(made);
                }
                Err(e) => debug!(error = %e, "no guessed first message"),
            }
        }
        let mut ours_bytes = Vec::new();
        ours.encode(&mut ours_bytes);
        self.send_internal(&mut |b| b.extend_from_slice(&ours_bytes));
        let guess = guess.map(|(method, message)| {
            self.send_internal(&mut |b| b.extend_from_slice(&message));
            method
        });
        self.kex = Kex::ExpectKexInit(ExpectKexInit {
            ours,
            ours_bytes,
            guess,
            guess_prepared,
        });
    }

    fn maybe_rekey(&mut self) {
        if self.established
            && matches!(self.kex, Kex::Idle)
            && self.error.is_none()
            && (self.tx.bytes >= self.rekey_limit || self.rx.bytes >= self.rekey_limit)
        {
            debug!(
                sent = self.tx.bytes,
                received = self.rx.bytes,
                "rekeying: byte limit reached"
            );
            self.start_kex();
        }
    }

    /// Whether payloads from above must wait: from our KEXINIT until our NEWKEYS, which is
    /// every state of an exchange but the last (RFC 4253 section 7.1).
    fn holding(&self) -> bool {
        !matches!(self.kex, Kex::Idle | Kex::ExpectNewKeys(_))
    }

    fn send_internal(&mut self, build: &mut dyn FnMut(&mut Vec<u8>)) {
        self.tx.frame(self.rng.as_mut(), build);
    }

    /// Fails the transport once more than [`MAX_PENDING_OUTPUT`] bytes wait to be sent.
    fn check_output(&mut self) {
        if self.pending_output() > MAX_PENDING_OUTPUT {
            self.fail(Error::OutputOverflow(MAX_PENDING_OUTPUT));
        }
    }

    fn fail(&mut self, e: Error) {
        if self.error.is_some() {
            return;
        }
        debug!(error = %e, "transport failed");
        if let (Some(reason), Phase::Packets) = (e.disconnect_reason(), &self.phase) {
            let description = e.to_string();
            let d = Disconnect {
                reason,
                description: description.into_bytes(),
            };
            self.send_internal(&mut |b| d.encode(b));
        }
        self.error = Some(e);
    }
}

impl PayloadSink for ClientTransport {
    fn send_with(&mut self, build: &mut dyn FnMut(&mut Vec<u8>)) {
        if self.error.is_some() {
            return;
        }
        if self.holding() {
            let start = self.queued.len();
            self.queued.extend_from_slice(&[0; 4]);
            build(&mut self.queued);
            let len = u32::try_from(self.queued.len() - start - 4).unwrap_or(u32::MAX);
            if let Some(l) = self.queued.get_mut(start..start + 4) {
                l.copy_from_slice(&len.to_be_bytes());
            }
            self.check_output();
            return;
        }
        if self.tx.frame(self.rng.as_mut(), build).is_none() {
            self.fail(Error::Closed);
            return;
        }
        self.maybe_rekey();
        self.check_output();
    }

    fn send_data_with(
        &mut self,
        head: &[u8],
        chunk: usize,
        max: usize,
        fill: &mut dyn FnMut(&mut [IoSliceMut<'_>]) -> usize,
    ) -> Option<usize> {
        if self.error.is_some() || self.holding() || self.tx.is_compressing() {
            return None;
        }
        let n = self
            .tx
            .frame_data(self.rng.as_mut(), head, chunk, max, fill);
        self.maybe_rekey();
        self.check_output();
        Some(n)
    }
}

/// A finished method's outcome with its host key's signature over H checked.
struct Proven {
    host_key: ServerHostKey,
    h: Vec<u8>,
    k: zeroize::Zeroizing<Vec<u8>>,
}

/// Parses the host key the server sent and checks its signature over H.
fn prove(algorithm: HostKeyAlgorithm, outcome: KexOutcome) -> Result<Proven, Error> {
    let KexOutcome {
        host_key: k_s,
        signature,
        h,
        k,
    } = outcome;
    let host_key = server_host_key(algorithm, k_s)?;
    host_key
        .key
        .verify(algorithm.signature, &h, &signature)
        .map_err(Error::HostKey)?;
    Ok(Proven { host_key, h, k })
}

/// The error for a key exchange message `msg` that was not `expected`: under strict kex
/// during the first exchange, a strict kex violation.
fn unexpected(msg: MessageType, expected: &'static str, strict_initial: bool) -> Error {
    if strict_initial {
        Error::StrictKex(format!(
            "the server sent {msg} during the initial key exchange while we expected {expected}"
        ))
    } else {
        Error::UnexpectedMessage {
            message: msg,
            expected,
        }
    }
}

/// The error for a method that could not take the server's message `msg`.
fn kex_step_error(e: KexError, msg: MessageType, strict_initial: bool) -> Error {
    match e {
        KexError::Unexpected(_) => unexpected(
            msg,
            "the key exchange method's next message",
            strict_initial,
        ),
        KexError::Decode(message, error) => Error::Decode { message, error },
        e => Error::KeyExchange(e.to_string()),
    }
}

/// The heavy parts of a key exchange, taken out of the transport with
/// [`ClientTransport::take_kex_work`] so that the application can run them on another
/// thread: our key pair and first message, when none was prepared for the method the
/// server settled on (11 ms of CPU for sntrup761x25519); and the server's reply opened (the
/// shared secret: a post-quantum decapsulation and an X25519 or ECDH agreement, or a
/// Diffie-Hellman exponentiation), the exchange hash computed and the host key's signature
/// over it checked. It holds our secret of the exchange, wiped when the work is dropped, run
/// or not.
pub struct KexWork {
    /// Unique in the process: a result finds only the exchange that waits for it.
    id: u64,
    job: Job,
    method: Box<dyn ClientKex>,
    ours_bytes: Vec<u8>,
    theirs_bytes: Vec<u8>,
    negotiated: Negotiated,
}

impl core::fmt::Debug for KexWork {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KexWork")
            .field("kex", &self.negotiated.kex.name())
            .finish_non_exhaustive()
    }
}

/// Which part of the exchange a [`KexWork`] is.
enum Job {
    /// Our key pair and first message, with the transport's generator.
    Start(Box<dyn SecureRandom>),
    /// The server's reply `msg` to prove, with what the exchange hash covers besides the
    /// KEXINITs, and whether a failure is a strict kex violation.
    Reply {
        reply: Vec<u8>,
        msg: MessageType,
        strict_initial: bool,
        client_version: Vec<u8>,
        server_version: Vec<u8>,
    },
}

impl KexWork {
    /// The exchange's state while `work` waits for the application, `work` numbered.
    fn pending(mut work: KexWork) -> Kex {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        work.id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Kex::WorkPending(work.id, Some(Box::new(work)))
    }

    /// Does the work, for [`ClientTransport::finish_kex_work`]. Randomness comes from the
    /// operating system: the transport's generator stays with the transport.
    pub fn run(mut self) -> KexWorkDone {
        let outcome = match &mut self.job {
            Job::Start(rng) => {
                let first = self
                    .method
                    .start(rng.as_mut())
                    .map_err(|e| Error::KeyExchange(e.to_string()));
                let rng = core::mem::replace(rng, Box::new(crate::random::OsRandom));
                Outcome::Started {
                    method: self.method,
                    first,
                    rng,
                }
            }
            Job::Reply {
                reply,
                msg,
                strict_initial,
                client_version,
                server_version,
            } => {
                let prefix = kex::HashPrefix {
                    v_c: client_version,
                    v_s: server_version,
                    i_c: &self.ours_bytes,
                    i_s: &self.theirs_bytes,
                };
                let proven = match self
                    .method
                    .handle(reply, &prefix, &mut crate::random::OsRandom)
                {
                    Ok(ClientStep::Done(outcome)) => prove(self.negotiated.host_key, outcome),
                    Ok(ClientStep::Send(_)) => Err(Error::KeyExchange(format!(
                        "{} asked for another round after the server's reply",
                        self.negotiated.kex.name()
                    ))),
                    Err(e) => Err(kex_step_error(e, *msg, *strict_initial)),
                };
                Outcome::Proven(Box::new(proven))
            }
        };
        KexWorkDone {
            id: self.id,
            negotiated: self.negotiated,
            ours_bytes: self.ours_bytes,
            theirs_bytes: self.theirs_bytes,
            outcome,
        }
    }
}

/// A [`KexWork`]'s result. Our key pair's work brings the transport's generator back; a
/// transport that never gets it keeps the operating system's.
pub struct KexWorkDone {
    id: u64,
    negotiated: Negotiated,
    ours_bytes: Vec<u8>,
    theirs_bytes: Vec<u8>,
    outcome: Outcome,
}

enum Outcome {
    /// Our first message made, for the exchange to send.
    Started {
        method: Box<dyn ClientKex>,
        first: Result<Vec<u8>, Error>,
        /// The transport's generator, back.
        rng: Box<dyn SecureRandom>,
    },
    /// The server's reply proven.
    Proven(Box<Result<Proven, Error>>),
}

impl core::fmt::Debug for KexWorkDone {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (what, ok) = match &self.outcome {
            Outcome::Started { first, .. } => ("started", first.is_ok()),
            Outcome::Proven(p) => ("proven", p.is_ok()),
        };
        f.debug_struct("KexWorkDone")
            .field("kex", &self.negotiated.kex.name())
            .field(what, &ok)
            .finish()
    }
}

/// Reads K_S as the negotiated algorithm says it is: a plain key of its key type, or a
/// certificate (of any certificate type: the application judges that) whose certified key is
/// of its key type and whose authority's signature verifies.
fn server_host_key(algorithm: HostKeyAlgorithm, k_s: Vec<u8>) -> Result<ServerHostKey, Error> {
    let (key, certificate) = if algorithm.certificate {
        let cert = Certificate::decode(&k_s).map_err(|error| Error::HostCertificate {
            algorithm: algorithm.name(),
            error,
        })?;
        (cert.public_key().clone(), Some(cert))
    } else {
        (PublicKey::from_blob(&k_s).map_err(Error::HostKey)?, None)
    };
    if key.key_type() != algorithm.key_type() {
        return Err(Error::HostKey(crate::hostkey::KeyError::KeyTypeMismatch {
            algorithm: algorithm.name(),
            key_type: match &certificate {
                Some(c) => c.type_name(),
                None => key.key_type().name(),
            },
        }));
    }
    Ok(ServerHostKey {
        blob: k_s,
        key,
        certificate,
    })
}

/// OpenSSH's default rekey limits: 2^(2·block bits/8) blocks for 16-byte block ciphers,
/// 1 GiB for 8-byte ones.
fn cipher_rekey_limit(c: &CipherAlgorithm) -> u64 {
    if c.name.starts_with("aes") {
        (1u64 << 32) * 16
    } else {
        1 << 30
    }
}
