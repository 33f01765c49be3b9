//! Test support: an in-memory SSH server, built from the workspace's own codecs, that the
//! tokio driver talks to over `tokio::io::duplex` (as quinn's tests join a client and a
//! server in a `Pair`), and a helper that starts a client session against it.
//!
//! ```text
//!  test ──SessionHandle / ChannelStream──> driver::Driver ══ duplex ══> ServerTask
//!                                                                       ServerTransport (test-server)
//!                                                                       + SERVICE_ACCEPT / USERAUTH_SUCCESS
//!                                                                       + direct-tcpip echo channels
//! ```
//!
//! - [`TestServer`] holds the options and a host key; [`TestServer::connect`] makes a fresh
//!   duplex pair per connection attempt, spawns a server task on one end and returns the
//!   other (so a reconnecting supervisor can be handed `|| server.connect()`). Every
//!   connection is kept as a [`ServerConn`]: [`ServerConn::kill`] drops the server's end (the
//!   session dies as if the TCP connection were cut), [`ServerConn::freeze`] stops it reading
//!   and answering (a SIGSTOPped sshd), [`ServerConn::rekey`] starts a key exchange now,
//!   [`ServerConn::open_forwarded`] opens a `forwarded-tcpip` channel (as for a connection to
//!   a remote forward's port; `tcpip-forward` requests are granted; and
//!   [`ServerConn::open_forwarded_socket`] a `forwarded-streamlocal@openssh.com` one, for a
//!   granted `streamlocal-forward@openssh.com`) and [`ServerConn::stats`]
//!   tells what it saw.
//! - [`start_client`] runs `forwarder::driver::start` on a stream with a seeded RNG, one
//!   Ed25519 identity and a verifier that trusts only the test server's key, spawns the
//!   driver and returns its [`Client`]; [`connected`] does both and waits for authentication.
//!
//! Each channel echoes what it receives, within the windows both ways: the server holds at
//! most the window it granted of unechoed data, sends only within the client's window and
//! credits its own window (WINDOW_ADJUST) as it echoes. EOF is answered with EOF and CLOSE
//! once everything was echoed, CLOSE with CLOSE; server channel numbers are the lowest free
//! ones, so they are reused after a close.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use forwarder::driver::{self, ChannelStream, HostKeyVerifier, SessionHandle};
use forwarder::session::{ServerAlive, Session, SessionConfig, SessionError};
use ssh_auth::msg::{ServiceAccept, ServiceRequest, UserauthSuccess};
use ssh_auth::{AuthConfig, Identity, PrivateKey};
use ssh_connection::msg::{
    ChannelClose, ChannelData, ChannelEof, ChannelFailure, ChannelOpen, ChannelOpenConfirmation,
    ChannelOpenFailure, ConnectionMessage, KEEPALIVE, OpenKind, RequestFailure, RequestSuccess,
    STREAMLOCAL_FORWARD, TCPIP_FORWARD, TcpipEndpoints, WindowAdjust,
};
use ssh_connection::{ForwardListen, Message, OpenFailureReason};
use ssh_transport::hostkey::PublicKey;
use ssh_transport::server::{SeededRandom, ServerConfig, ServerEvent, ServerTransport};
use ssh_transport::{ClientConfig, MessageType, PayloadSink};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a test waits for anything that should happen at once.
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test with `what` if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

// ---- the server ------------------------------------------------------------------------------

/// How the server answers `keepalive@openssh.com`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepaliveAnswer {
    /// REQUEST_FAILURE, as OpenSSH's sshd answers.
    Failure,
    /// REQUEST_SUCCESS.
    Success,
    /// No answer at all (the request is still read).
    Silent,
}

/// How a [`TestServer`] behaves.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The transport's algorithms and host key.
    pub transport: ServerConfig,
    /// The window the server grants the client on each channel: the most unechoed data a
    /// channel holds.
    pub window: u32,
    /// The largest CHANNEL_DATA the server accepts.
    pub max_packet: u32,
    /// `direct-tcpip` targets (host names) refused with ADMINISTRATIVELY_PROHIBITED.
    pub refuse_hosts: Vec<String>,
    /// How keepalives are answered.
    pub keepalive: KeepaliveAnswer,
    /// Start a key exchange each time this many channel bytes have come in since the last
    /// one this switch started completed.
    pub rekey_every: Option<u64>,
    /// Capacity of each direction of the duplex pipe.
    pub duplex_capacity: usize,
    /// Seed of the server's RNG (each connection adds its index).
    pub seed: u64,
    /// Connections start frozen: the pipe is open and nothing is ever read or sent (not even
    /// the version line) until [`ServerConn::thaw`].
    pub start_frozen: bool,
    /// Once a channel has echoed this many bytes, the server ends it by itself (EOF and
    /// CLOSE), as a database closes after its last answer, whatever the client still sends.
    pub close_after_echo: Option<u64>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            transport: ServerConfig::default(),
            window: 2 * 1024 * 1024,
            max_packet: 32 * 1024,
            refuse_hosts: Vec::new(),
            keepalive: KeepaliveAnswer::Failure,
            rekey_every: None,
            duplex_capacity: 64 * 1024,
            seed: 1000,
            start_frozen: false,
            close_after_echo: None,
        }
    }
}

/// What one server connection saw.
#[derive(Clone, Debug, Default)]
pub struct ServerStats {
    /// USERAUTH_SUCCESS was sent.
    pub authenticated: bool,
    /// Channels confirmed.
    pub opened: u64,
    /// Channels refused.
    pub refused: u64,
    /// Channels open now (confirmed, not yet closed both ways).
    pub open_now: usize,
    /// The most channels open at once.
    pub max_open: usize,
    /// The highest server channel number ever given.
    pub max_server_id: Option<u32>,
    /// Channel bytes received.
    pub bytes_in: u64,
    /// Channel bytes echoed.
    pub bytes_out: u64,
    /// The most unechoed bytes one channel held.
    pub max_pending: usize,
    /// CHANNEL_DATA beyond the window the server granted (a client bug).
    pub window_violations: u64,
    /// CHANNEL_DATA longer than the server's max packet (a client bug).
    pub packet_violations: u64,
    /// Messages for channels the server does not have open.
    pub unknown_channel: u64,
    /// `keepalive@openssh.com` requests received.
    pub keepalives: u64,
    /// Key exchanges this server asked for after the first (one asked for while another
    /// runs is ignored by the transport).
    pub rekeys_started: u64,
    /// Key exchanges completed (the first included).
    pub kex_count: u64,
    /// `bytes_in` when each later key exchange completed.
    pub rekeyed_at: Vec<u64>,
    /// CHANNEL_CLOSE received.
    pub closes_in: u64,
    /// `tcpip-forward` requests granted.
    pub forwards_granted: u64,
    /// `forwarded-tcpip` channels the client confirmed.
    pub forwarded_confirmed: u64,
    /// `forwarded-tcpip` channels the client refused: reason and description.
    pub forwarded_refused: Vec<(OpenFailureReason, String)>,
    /// Channel messages other than the open's answer for a `forwarded-tcpip` channel the
    /// client has not answered yet (a client bug: it never saw the channel confirmed).
    pub before_answer: u64,
    /// Why the connection ended on the server's side, if it did.
    pub ended: Option<String>,
}

enum Ctl {
    Kill,
    Freeze,
    Babble,
    Flood,
    Thaw,
    Rekey,
    OpenForwarded(ForwardListen),
}

/// One server connection, for the test to watch and misbehave with.
#[derive(Clone, Debug)]
pub struct ServerConn {
    ctl: mpsc::UnboundedSender<Ctl>,
    stats: Arc<Mutex<ServerStats>>,
    abort: tokio::task::AbortHandle,
}

impl ServerConn {
    /// Drops the server's end of the pipe now: the client reads EOF and its writes fail, as
    /// when the TCP connection is cut. Works when frozen too.
    pub fn kill(&self) {
        let _ = self.ctl.send(Ctl::Kill);
        self.abort.abort();
    }

    /// Stops reading and answering (the pipe stays open), like a SIGSTOPped sshd.
    pub fn freeze(&self) {
        let _ = self.ctl.send(Ctl::Freeze);
    }

    /// Stops reading and answering like [`freeze`](Self::freeze), but sends an IGNORE every
    /// 10 ms: a hostile server that keeps the connection busy (keepalives count any byte as
    /// life) while it never answers anything, a key exchange included.
    pub fn babble(&self) {
        let _ = self.ctl.send(Ctl::Babble);
    }

    /// Stops reading and answering like [`freeze`](Self::freeze), but writes IGNOREs (8 KiB
    /// each) whenever the pipe has room: a server that never lets the client's reads come up
    /// empty, so the driver is always busy.
    pub fn flood(&self) {
        let _ = self.ctl.send(Ctl::Flood);
    }

    /// Undoes [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        let _ = self.ctl.send(Ctl::Thaw);
    }

    /// Starts a key exchange now (ignored while one runs).
    pub fn rekey(&self) {
        let _ = self.ctl.send(Ctl::Rekey);
    }

    /// Opens a `forwarded-tcpip` channel for the forward `address:port` (as a connection to
    /// the port the server listens on would); once the client confirms it, it echoes like
    /// the others.
    pub fn open_forwarded(&self, address: &str, port: u32) {
        let _ = self
            .ctl
            .send(Ctl::OpenForwarded(ForwardListen::tcp(address, port)));
    }

    /// Opens a `forwarded-streamlocal@openssh.com` channel for the forward from the socket at
    /// `path` (as for a connection to a socket the server listens on); once the client
    /// confirms it, it echoes like the others.
    pub fn open_forwarded_socket(&self, path: &str) {
        let _ = self.ctl.send(Ctl::OpenForwarded(ForwardListen::unix(path)));
    }

    /// What the connection saw so far.
    pub fn stats(&self) -> ServerStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the server task has ended (killed, client gone, or an error).
    pub fn is_finished(&self) -> bool {
        self.abort.is_finished()
    }
}

/// A server that takes any number of connections, each over a fresh duplex pipe.
#[derive(Debug)]
pub struct TestServer {
    opts: ServerOptions,
    host_key: PublicKey,
    conns: Mutex<Vec<ServerConn>>,
    next: AtomicU64,
}

impl TestServer {
    /// A server with these options; it accepts connections from [`connect`](Self::connect).
    pub fn new(opts: ServerOptions) -> Arc<Self> {
        let host_key = ServerTransport::new(opts.transport.clone(), Box::new(SeededRandom::new(0)))
            .host_public_key();
        Arc::new(Self {
            opts,
            host_key,
            conns: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
        })
    }

    /// The host key every connection presents.
    pub fn host_key(&self) -> PublicKey {
        self.host_key.clone()
    }

    /// The options.
    pub fn options(&self) -> &ServerOptions {
        &self.opts
    }

    /// One connection attempt: a fresh duplex pipe whose far end a new server task serves.
    /// Returns the client's end. Must be called inside a tokio runtime.
    pub fn connect(&self) -> DuplexStream {
        self.connect_with_handle().0
    }

    /// Like [`connect`](Self::connect), with the new connection's handle.
    pub fn connect_with_handle(&self) -> (DuplexStream, ServerConn) {
        let (client_end, server_end) = tokio::io::duplex(self.opts.duplex_capacity);
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(ServerStats::default()));
        let transport = ServerTransport::new(
            self.opts.transport.clone(),
            Box::new(SeededRandom::new(self.opts.seed.wrapping_add(n))),
        );
        let task = ServerTask {
            io: server_end,
            t: transport,
            opts: self.opts.clone(),
            ctl: Some(rx),
            frozen: self.opts.start_frozen,
            babble: None,
            flood: false,
            stats: stats.clone(),
            chans: Vec::new(),
            awaiting_answer: Vec::new(),
            since_rekey: 0,
            rekey_pending: false,
            buf: vec![0; 64 * 1024],
        };
        let join = tokio::spawn(task);
        let conn = ServerConn {
            ctl: tx,
            stats,
            abort: join.abort_handle(),
        };
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn.clone());
        (client_end, conn)
    }

    /// Every connection made so far, oldest first.
    pub fn connections(&self) -> Vec<ServerConn> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The newest connection.
    pub fn last(&self) -> Option<ServerConn> {
        self.connections().pop()
    }

    /// Kills every connection.
    pub fn kill_all(&self) {
        for c in self.connections() {
            c.kill();
        }
    }
}

struct Chan {
    /// The client's number for the channel.
    peer: u32,
    /// What the client lets us send.
    send_window: u64,
    peer_max: u32,
    /// Received, not yet echoed.
    pending: VecDeque<u8>,
    /// What is left of the window we granted.
    recv_left: u64,
    /// Echoed bytes not yet credited with WINDOW_ADJUST.
    unadjusted: u32,
    /// Bytes echoed in all.
    echoed: u64,
    eof_in: bool,
    eof_out: bool,
    close_in: bool,
    close_out: bool,
}

struct ServerTask {
    io: DuplexStream,
    t: ServerTransport,
    opts: ServerOptions,
    ctl: Option<mpsc::UnboundedReceiver<Ctl>>,
    frozen: bool,
    /// Frozen, but sending an IGNORE at each tick ([`ServerConn::babble`]).
    babble: Option<tokio::time::Interval>,
    /// Frozen, but filling the pipe with IGNOREs ([`ServerConn::flood`]).
    flood: bool,
    stats: Arc<Mutex<ServerStats>>,
    chans: Vec<Option<Chan>>,
    /// Numbers of the `forwarded-tcpip` channels we opened that the client has not answered.
    awaiting_answer: Vec<u32>,
    since_rekey: u64,
    /// A key exchange `rekey_every` started has not completed yet.
    rekey_pending: bool,
    buf: Vec<u8>,
}

impl ServerTask {
    fn stats(&self) -> std::sync::MutexGuard<'_, ServerStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn end(&self, why: impl Into<String>) -> Poll<()> {
        self.stats().ended = Some(why.into());
        Poll::Ready(())
    }

    fn process(&mut self) -> Result<(), String> {
        loop {
            let payload = match self.t.poll_event() {
                Err(e) => return Err(format!("transport: {e}")),
                Ok(None) => break,
                Ok(Some(ev @ (ServerEvent::Established | ServerEvent::Rekeyed))) => {
                    let rekeyed = matches!(ev, ServerEvent::Rekeyed);
                    let k = self.t.kex_count;
                    let mut s = self.stats();
                    s.kex_count = k;
                    if rekeyed {
                        let at = s.bytes_in;
                        s.rekeyed_at.push(at);
                        drop(s);
                        self.rekey_pending = false;
                    }
                    continue;
                }
                Ok(Some(ServerEvent::Payload(p))) => p.to_vec(),
            };
            self.handle_payload(&payload)?;
        }
        Ok(())
    }

    fn handle_payload(&mut self, p: &[u8]) -> Result<(), String> {
        let msg = MessageType::of(p).unwrap_or(MessageType(0));
        if msg == MessageType::SERVICE_REQUEST {
            let req = ServiceRequest::decode(p).map_err(|e| format!("SERVICE_REQUEST: {e}"))?;
            if req.service != "ssh-userauth" {
                return Err(format!("service {:?} asked for", req.service));
            }
            let accept = ServiceAccept {
                service: "ssh-userauth",
            };
            self.t.send_with(&mut |b| accept.encode(b));
        } else if msg == MessageType::USERAUTH_REQUEST {
            // Whatever is offered (a query, a signature, a method) is accepted.
            self.t.send_with(&mut |b| UserauthSuccess.encode(b));
            self.stats().authenticated = true;
        } else if msg.is_connection() {
            let m = Message::decode(p).map_err(|e| format!("connection: {e}"))?;
            self.handle_connection(m);
        }
        // Anything else (IGNORE, UNIMPLEMENTED, ...) is ignored.
        Ok(())
    }

    fn chan(&mut self, id: u32) -> Option<&mut Chan> {
        self.chans.get_mut(id as usize).and_then(Option::as_mut)
    }

    /// The lowest free channel number, reserved with a channel that echoes to `peer`.
    fn new_chan(&mut self, peer: u32, send_window: u32, peer_max: u32) -> u32 {
        let id = match self.chans.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.chans.push(None);
                self.chans.len() - 1
            }
        };
        self.chans[id] = Some(Chan {
            peer,
            send_window: u64::from(send_window),
            peer_max: peer_max.max(1),
            pending: VecDeque::new(),
            recv_left: u64::from(self.opts.window),
            unadjusted: 0,
            echoed: 0,
            eof_in: false,
            eof_out: false,
            close_in: false,
            close_out: false,
        });
        id as u32
    }

    fn open_forwarded(&mut self, listen: &ForwardListen) {
        let id = self.new_chan(0, 0, 1);
        self.awaiting_answer.push(id);
        let kind = match listen {
            ForwardListen::Tcp { address, port } => OpenKind::ForwardedTcpip(TcpipEndpoints {
                address: address.as_bytes(),
                port: *port,
                originator_address: b"192.0.2.7",
                originator_port: 50123,
            }),
            ForwardListen::Unix { path } => OpenKind::ForwardedStreamlocal {
                path: path.as_bytes(),
            },
        };
        let open = ChannelOpen {
            sender: id,
            initial_window: self.opts.window,
            max_packet: self.opts.max_packet,
            kind,
        };
        self.t.send_with(&mut |b| open.encode(b));
    }

    /// The recipient of a channel message that is not an open's answer.
    fn recipient(m: &Message<'_>) -> Option<u32> {
        match m {
            Message::Data(d) => Some(d.recipient),
            Message::ExtendedData(d) => Some(d.recipient),
            Message::WindowAdjust(a) => Some(a.recipient),
            Message::Eof(e) => Some(e.recipient),
            Message::Close(c) => Some(c.recipient),
            Message::ChannelRequest(r) => Some(r.recipient),
            _ => None,
        }
    }

    fn handle_connection(&mut self, m: Message<'_>) {
        if Self::recipient(&m).is_some_and(|id| self.awaiting_answer.contains(&id)) {
            self.stats().before_answer += 1;
            return;
        }
        match m {
            Message::ChannelOpenConfirmation(c) if self.awaiting_answer.contains(&c.recipient) => {
                self.awaiting_answer.retain(|&id| id != c.recipient);
                if let Some(ch) = self.chan(c.recipient) {
                    ch.peer = c.sender;
                    ch.send_window = u64::from(c.initial_window);
                    ch.peer_max = c.max_packet.max(1);
                }
                self.stats().forwarded_confirmed += 1;
            }
            Message::ChannelOpenFailure(f) if self.awaiting_answer.contains(&f.recipient) => {
                self.awaiting_answer.retain(|&id| id != f.recipient);
                if let Some(slot) = self.chans.get_mut(f.recipient as usize) {
                    *slot = None;
                }
                let text = String::from_utf8_lossy(f.description).into_owned();
                self.stats().forwarded_refused.push((f.reason, text));
            }
            Message::ChannelOpen(o) => {
                let refuse = match &o.kind {
                    OpenKind::DirectTcpip(e) => {
                        let host = String::from_utf8_lossy(e.address);
                        self.opts.refuse_hosts.iter().any(|h| *h == host).then(|| {
                            (
                                OpenFailureReason::ADMINISTRATIVELY_PROHIBITED,
                                format!("open to {host}:{} refused by the test server", e.port),
                            )
                        })
                    }
                    _ => Some((
                        OpenFailureReason::UNKNOWN_CHANNEL_TYPE,
                        "only direct-tcpip here".to_owned(),
                    )),
                };
                if let Some((reason, text)) = refuse {
                    let f = ChannelOpenFailure {
                        recipient: o.sender,
                        reason,
                        description: text.as_bytes(),
                        language: b"",
                    };
                    self.t.send_with(&mut |b| f.encode(b));
                    self.stats().refused += 1;
                    return;
                }
                let id = self.new_chan(o.sender, o.initial_window, o.max_packet);
                let c = ChannelOpenConfirmation {
                    recipient: o.sender,
                    sender: id,
                    initial_window: self.opts.window,
                    max_packet: self.opts.max_packet,
                };
                self.t.send_with(&mut |b| c.encode(b));
                let open_now = self.chans.iter().flatten().count();
                let mut s = self.stats();
                s.opened += 1;
                s.open_now = open_now;
                s.max_open = s.max_open.max(open_now);
                s.max_server_id = Some(s.max_server_id.map_or(id, |m| m.max(id)));
            }
            Message::Data(d) => {
                let max_packet = self.opts.max_packet;
                let len = d.data.len();
                let Some(ch) = self.chan(d.recipient) else {
                    self.stats().unknown_channel += 1;
                    return;
                };
                if ch.close_out || ch.eof_in {
                    // Data after our CLOSE (crossing it) or after the client's EOF.
                    return;
                }
                let over_window = len as u64 > ch.recv_left;
                ch.recv_left = ch.recv_left.saturating_sub(len as u64);
                ch.pending.extend(d.data);
                let pending = ch.pending.len();
                {
                    let mut s = self.stats();
                    s.bytes_in += len as u64;
                    s.max_pending = s.max_pending.max(pending);
                    if over_window {
                        s.window_violations += 1;
                    }
                    if len > max_packet as usize {
                        s.packet_violations += 1;
                    }
                }
                self.flush(d.recipient);
                if let Some(every) = self.opts.rekey_every
                    && !self.rekey_pending
                {
                    self.since_rekey += len as u64;
                    if self.since_rekey >= every {
                        self.since_rekey = 0;
                        self.rekey_pending = true;
                        self.t.rekey();
                        self.stats().rekeys_started += 1;
                    }
                }
            }
            Message::WindowAdjust(a) => {
                let Some(ch) = self.chan(a.recipient) else {
                    self.stats().unknown_channel += 1;
                    return;
                };
                ch.send_window += u64::from(a.bytes);
                self.flush(a.recipient);
            }
            Message::Eof(e) => {
                let Some(ch) = self.chan(e.recipient) else {
                    self.stats().unknown_channel += 1;
                    return;
                };
                ch.eof_in = true;
                self.flush(e.recipient);
            }
            Message::Close(c) => {
                let Some(ch) = self.chan(c.recipient) else {
                    self.stats().unknown_channel += 1;
                    return;
                };
                ch.close_in = true;
                ch.pending.clear();
                let peer = ch.peer;
                if !ch.close_out {
                    ch.close_out = true;
                    self.t
                        .send_with(&mut |b| ChannelClose { recipient: peer }.encode(b));
                }
                self.stats().closes_in += 1;
                self.retire(c.recipient);
            }
            Message::GlobalRequest(g) if g.name == STREAMLOCAL_FORWARD => {
                // A path: granted, and the reply carries nothing.
                self.stats().forwards_granted += 1;
                if g.want_reply {
                    self.t
                        .send_with(&mut |b| RequestSuccess { data: b"" }.encode(b));
                }
            }
            Message::GlobalRequest(g) if g.name == TCPIP_FORWARD => {
                // address (string) and port: with port 0, "allocate" 40000.
                let asked = g
                    .data
                    .last_chunk::<4>()
                    .map_or(0, |p| u32::from_be_bytes(*p));
                self.stats().forwards_granted += 1;
                if g.want_reply {
                    let port = 40000u32.to_be_bytes();
                    let data: &[u8] = if asked == 0 { &port } else { b"" };
                    self.t.send_with(&mut |b| RequestSuccess { data }.encode(b));
                }
            }
            Message::GlobalRequest(g) => {
                if g.name == KEEPALIVE {
                    self.stats().keepalives += 1;
                    if g.want_reply {
                        match self.opts.keepalive {
                            KeepaliveAnswer::Failure => {
                                self.t.send_with(&mut |b| RequestFailure.encode(b));
                            }
                            KeepaliveAnswer::Success => {
                                self.t
                                    .send_with(&mut |b| RequestSuccess { data: b"" }.encode(b));
                            }
                            KeepaliveAnswer::Silent => {}
                        }
                    }
                } else if g.want_reply {
                    self.t.send_with(&mut |b| RequestFailure.encode(b));
                }
            }
            Message::ChannelRequest(r) => {
                if r.want_reply
                    && let Some(ch) = self.chan(r.recipient)
                {
                    let peer = ch.peer;
                    self.t
                        .send_with(&mut |b| ChannelFailure { recipient: peer }.encode(b));
                }
            }
            _ => {}
        }
    }

    /// Echoes what the client's window allows, credits our window, answers EOF.
    fn flush(&mut self, id: u32) {
        let window = self.opts.window;
        let Some(mut ch) = self.chans.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        let mut echoed = 0u64;
        while !ch.pending.is_empty() && ch.send_window > 0 && !ch.close_out {
            let n = ch
                .pending
                .len()
                .min(ch.send_window as usize)
                .min(ch.peer_max as usize)
                .min(32 * 1024);
            let chunk: Vec<u8> = ch.pending.drain(..n).collect();
            let msg = ChannelData {
                recipient: ch.peer,
                data: &chunk,
            };
            self.t.send_with(&mut |b| msg.encode(b));
            ch.send_window -= n as u64;
            ch.unadjusted += n as u32;
            ch.echoed += n as u64;
            echoed += n as u64;
        }
        let done = self
            .opts
            .close_after_echo
            .is_some_and(|limit| ch.echoed >= limit);
        if ch.unadjusted > 0 && ch.unadjusted >= window / 2 && !ch.eof_in && !ch.close_out {
            let msg = WindowAdjust {
                recipient: ch.peer,
                bytes: ch.unadjusted,
            };
            self.t.send_with(&mut |b| msg.encode(b));
            ch.recv_left += u64::from(ch.unadjusted);
            ch.unadjusted = 0;
        }
        if (done || ch.eof_in && ch.pending.is_empty()) && !ch.eof_out && !ch.close_out {
            ch.eof_out = true;
            ch.close_out = true;
            let peer = ch.peer;
            self.t
                .send_with(&mut |b| ChannelEof { recipient: peer }.encode(b));
            self.t
                .send_with(&mut |b| ChannelClose { recipient: peer }.encode(b));
        }
        if let Some(slot) = self.chans.get_mut(id as usize) {
            *slot = Some(ch);
        }
        if echoed > 0 {
            self.stats().bytes_out += echoed;
        }
        self.retire(id);
    }

    /// Frees the number of a channel closed both ways, for the next open to reuse.
    fn retire(&mut self, id: u32) {
        if let Some(slot) = self.chans.get_mut(id as usize)
            && slot.as_ref().is_some_and(|c| c.close_in && c.close_out)
        {
            *slot = None;
            let open_now = self.chans.iter().flatten().count();
            self.stats().open_now = open_now;
        }
    }
}

impl Future for ServerTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        for _ in 0..32 {
            let mut progress = false;
            let mut opens = Vec::new();
            if let Some(ctl) = &mut this.ctl {
                loop {
                    match ctl.poll_recv(cx) {
                        Poll::Ready(Some(Ctl::Kill)) => return this.end("killed"),
                        Poll::Ready(Some(Ctl::Freeze)) => this.frozen = true,
                        Poll::Ready(Some(Ctl::Babble)) => {
                            this.frozen = true;
                            this.babble = Some(tokio::time::interval(Duration::from_millis(10)));
                        }
                        Poll::Ready(Some(Ctl::Flood)) => {
                            this.frozen = true;
                            this.flood = true;
                        }
                        Poll::Ready(Some(Ctl::Thaw)) => {
                            this.frozen = false;
                            this.babble = None;
                            this.flood = false;
                            progress = true;
                        }
                        Poll::Ready(Some(Ctl::OpenForwarded(listen))) => {
                            opens.push(listen);
                        }
                        Poll::Ready(Some(Ctl::Rekey)) => {
                            this.t.rekey();
                            this.stats
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .rekeys_started += 1;
                            progress = true;
                        }
                        Poll::Ready(None) => {
                            this.ctl = None;
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
            }
            for listen in opens {
                this.open_forwarded(&listen);
                progress = true;
            }
            if this.flood {
                let mut ignore = vec![2, 0, 0, 0x20, 0];
                ignore.resize(5 + 8192, b'f');
                loop {
                    if this.t.output().is_empty() {
                        for _ in 0..16 {
                            this.t.send_raw_payload(&ignore);
                        }
                    }
                    match Pin::new(&mut this.io).poll_write(cx, this.t.output()) {
                        Poll::Ready(Ok(n)) if n > 0 => this.t.consume_output(n),
                        Poll::Ready(_) => return this.end("write failed while flooding"),
                        // Woken when the client has read some: then the pipe is filled again.
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
            if let Some(ticks) = &mut this.babble {
                while ticks.poll_tick(cx).is_ready() {
                    // Framed at once: IGNORE may be sent in the middle of a key exchange,
                    // when the transport would hold other payloads back.
                    this.t
                        .send_raw_payload(&[2, 0, 0, 0, 4, b'b', b'u', b's', b'y']);
                }
                while !this.t.output().is_empty() {
                    match Pin::new(&mut this.io).poll_write(cx, this.t.output()) {
                        Poll::Ready(Ok(n)) if n > 0 => this.t.consume_output(n),
                        Poll::Ready(_) => return this.end("write failed while babbling"),
                        Poll::Pending => break,
                    }
                }
                return Poll::Pending;
            }
            if this.frozen {
                return Poll::Pending;
            }
            let mut rb = ReadBuf::new(&mut this.buf);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    return this.end("the client closed the connection");
                }
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    this.t.handle_input(&this.buf[..n]);
                    progress = true;
                }
                Poll::Ready(Err(e)) => return this.end(format!("read: {e}")),
                Poll::Pending => {}
            }
            if let Err(e) = this.process() {
                // What was queued before the failure goes out first, as a real server's
                // version line and KEXINIT (sent on connecting) would have: the client may
                // have written before this task was first polled.
                while !this.t.output().is_empty() {
                    match Pin::new(&mut this.io).poll_write(cx, this.t.output()) {
                        Poll::Ready(Ok(n)) if n > 0 => this.t.consume_output(n),
                        _ => break,
                    }
                }
                return this.end(e);
            }
            while !this.t.output().is_empty() {
                match Pin::new(&mut this.io).poll_write(cx, this.t.output()) {
                    Poll::Ready(Ok(0)) => return this.end("write: zero"),
                    Poll::Ready(Ok(n)) => {
                        this.t.consume_output(n);
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return this.end(format!("write: {e}")),
                    Poll::Pending => break,
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

// ---- the client ------------------------------------------------------------------------------

/// How [`start_client`] builds the session.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Transport algorithms and limits.
    pub transport: ClientConfig,
    /// Channel window and max packet.
    pub connection: ssh_connection::Config,
    /// Keepalive policy.
    pub server_alive: Option<ServerAlive>,
    /// Seed of the client's RNG.
    pub seed: u64,
    /// The key exchange's reply is proven on a blocking thread
    /// ([`Session::set_kex_work_elsewhere`]).
    pub kex_work_elsewhere: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            transport: ClientConfig::default(),
            connection: ssh_connection::Config::default(),
            server_alive: None,
            seed: 7,
            kex_work_elsewhere: false,
        }
    }
}

/// The client's one identity: an Ed25519 key from a fixed seed.
pub fn identity() -> Identity {
    let key = PrivateKey::from_ed25519_seed(&[0x42; 32], "test@memory").expect("seeded key");
    Identity::new(key, "memory test key")
}

/// A session as the forwarder would build it, with a seeded RNG.
pub fn session(opts: &ClientOptions) -> Session {
    let config = SessionConfig {
        transport: opts.transport.clone(),
        connection: opts.connection,
        auth: AuthConfig::new("tester".into(), vec![identity()]),
        server_alive: opts.server_alive,
    };
    let mut session = Session::new(
        config,
        Box::new(SeededRandom::new(opts.seed)),
        Instant::now(),
    );
    session.set_kex_work_elsewhere(opts.kex_work_elsewhere);
    session
}

/// Trusts exactly one host key.
#[derive(Debug)]
pub struct TrustKey(pub PublicKey);

impl HostKeyVerifier for TrustKey {
    fn verify(&self, key: &PublicKey) -> Result<(), String> {
        if *key == self.0 {
            Ok(())
        } else {
            Err(format!("unexpected host key {}", key.fingerprint()))
        }
    }
}

/// A running client session.
#[derive(Debug)]
pub struct Client {
    /// Opens channels, tells the session's state.
    pub handle: SessionHandle,
    /// The spawned driver; completes with the error that ended the session.
    pub driver: JoinHandle<Result<(), SessionError>>,
}

impl Client {
    /// Waits (bounded) for the driver to end and returns its result.
    pub async fn finished(self, limit: Duration) -> Result<(), SessionError> {
        within(limit, "the driver to finish", self.driver)
            .await
            .expect("the driver task panicked")
    }
}

/// Starts a session over `stream` trusting `host_key`, and spawns its driver.
pub fn start_client<S>(stream: S, host_key: PublicKey, opts: &ClientOptions) -> Client
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (handle, driver) = driver::start(stream, session(opts), Arc::new(TrustKey(host_key)));
    Client {
        handle,
        driver: tokio::spawn(driver),
    }
}

/// A server, its first connection and an authenticated client session on it.
pub async fn connected(
    server: ServerOptions,
    client: ClientOptions,
) -> (Arc<TestServer>, ServerConn, Client) {
    let server = TestServer::new(server);
    let (stream, conn) = server.connect_with_handle();
    let c = start_client(stream, server.host_key(), &client);
    within(STEP, "authentication", c.handle.authenticated())
        .await
        .expect("authenticated");
    (server, conn, c)
}

// ---- data ------------------------------------------------------------------------------------

/// `len` bytes that differ per `seed` and per position (no short period).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `data` (then EOF) while reading the echo at the same time; checks the echo byte
/// for byte and that the server's EOF follows it.
pub async fn echo_check(stream: ChannelStream, data: &[u8]) -> io::Result<()> {
    let (mut r, mut w) = tokio::io::split(stream);
    let write = async {
        for chunk in data.chunks(48 * 1024) {
            w.write_all(chunk).await?;
        }
        w.shutdown().await?;
        Ok::<_, io::Error>(())
    };
    let read = async {
        let mut got = Vec::with_capacity(data.len());
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() > data.len() {
                break;
            }
        }
        Ok::<_, io::Error>(got)
    };
    let (wrote, got) = tokio::join!(write, read);
    wrote?;
    let got = got?;
    if got.len() != data.len() {
        return Err(io::Error::other(format!(
            "echo length {} != sent {}",
            got.len(),
            data.len()
        )));
    }
    if let Some(at) = got.iter().zip(data).position(|(a, b)| a != b) {
        return Err(io::Error::other(format!("echo differs at byte {at}")));
    }
    Ok(())
}
