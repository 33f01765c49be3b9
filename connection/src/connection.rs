//! The channel table and everything that happens to a channel.
//!
//! # Channel lifecycle
//!
//! ```text
//!  open_direct_tcpip ─> Opening ──OPEN_FAILURE──────────────────────────> OpenFailed (id free)
//!                          │
//!                 OPEN_CONFIRMATION ─> Opened
//!                          ▼
//!                        Open ── send_eof ─> EOF sent     peer EOF ─> Eof (drain, then shut
//!                          │                                              down the write side)
//!                          │  both EOFs and received(id) drained ─> we send CLOSE
//!                          │  close() ─────────────────────────────> we send CLOSE
//!                          │  peer CLOSE ─> we send CLOSE at once (Eof first if data is left)
//!                          ▼
//!       CLOSE sent and received, received(id) drained (or close() called) ─> Closed (id free)
//! ```
//!
//! A `forwarded-tcpip` channel the server opens starts on our side of the open instead:
//!
//! ```text
//!  server CHANNEL_OPEN ─> ForwardedOpenRequest (pending: nothing sent, no window granted)
//!        │
//!        ├─ confirm_forwarded ─> we send OPEN_CONFIRMATION ─> Open (as above)
//!        └─ refuse_forwarded, close ─> we send OPEN_FAILURE ──────────> Closed (id free)
//! ```
//!
//! Every id returned by `open_direct_tcpip` or reported by `ForwardedOpenRequest` ends with
//! exactly one `OpenFailed` or `Closed` event, and the id is only handed out again after that
//! event has been polled, so an event can never be mistaken for one about a newer channel
//! with the same number.

use std::collections::VecDeque;
use std::io::IoSliceMut;

use ssh_transport::MessageType;
use ssh_transport::PayloadSink;
use ssh_transport::text::sanitize;

use crate::ConnectionError;
use crate::buffer::RecvBuffer;
use crate::msg::{
    CANCEL_STREAMLOCAL_FORWARD, CANCEL_TCPIP_FORWARD, ChannelClose, ChannelData, ChannelEof,
    ChannelFailure, ChannelOpen, ChannelOpenConfirmation, ChannelOpenFailure, ConnectionMessage,
    GlobalRequest, HOSTKEYS, HOSTKEYS_PROVE, KEEPALIVE, Message, OpenFailureReason, OpenKind,
    RequestFailure, STREAMLOCAL_FORWARD, TCPIP_FORWARD, TcpipEndpoints, WindowAdjust,
};
use crate::window::{ReceiveWindow, Window};

/// Our number for a channel: the index into the channel table, and the `recipient channel`
/// of every message the server sends about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u32);

/// The largest CHANNEL_DATA we send, whatever the server allows. RFC 4253 section 6.1 only
/// promises that packets with 32768 bytes of payload get through, and the transport's packet
/// limit is not visible from here.
pub const MAX_OUTGOING_DATA: u32 = 32768;

/// Longest open failure description kept, in characters.
const MAX_DESCRIPTION_CHARS: usize = 256;

/// What we tell the server about the channels we open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Our receive window per channel: the most the server may send before we have written
    /// it to the local socket, and so the most each channel buffers. A value of 0 is raised
    /// to 1.
    pub initial_window: u32,
    /// The largest CHANNEL_DATA we accept. A value of 0 is raised to 1.
    pub max_packet: u32,
}

impl Default for Config {
    /// 2 MiB window and 32 KiB packets, as OpenSSH uses for TCP forwards.
    fn default() -> Self {
        Self {
            initial_window: 2 * 1024 * 1024,
            max_packet: 32 * 1024,
        }
    }
}

/// The most channels the server may have open at once through our remote forwards
/// (`forwarded-tcpip`), pending ones (not yet confirmed or refused) included; more are
/// refused with RESOURCE_SHORTAGE until some end. Each one is a connection to a local target
/// (or an attempt at one) and, once confirmed, up to a receive window of buffered data, so a
/// server that opens channels without end would otherwise exhaust descriptors and memory. A
/// pending channel holds no window: the server may send nothing on it until we confirm.
pub const MAX_SERVER_CHANNELS: usize = 1024;

/// Something the driver must act on; drained with [`Connection::poll_event`].
///
/// Deliberately exhaustive: a driver should fail to compile, not silently ignore, when a new
/// kind of event appears.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The server opened the channel: start moving data.
    Opened(ChannelId),
    /// The server refused the channel. The id is free again; drop the local socket.
    OpenFailed {
        /// Which channel.
        id: ChannelId,
        /// The server's reason code.
        reason: OpenFailureReason,
        /// The server's explanation, sanitised and shortened, safe to log.
        description: String,
    },
    /// `received(id)` grew. Queued at most once until polled, however many messages came.
    Data(ChannelId),
    /// The server will send no more data: once `received(id)` is drained, shut down the
    /// write side of the local socket.
    Eof(ChannelId),
    /// Both sides closed the channel and `received(id)` is empty (or `close` was called). The
    /// id is free again; drop the local socket.
    Closed(ChannelId),
    /// A WINDOW_ADJUST made room: `send_data` takes more now. Queued at most once until polled.
    SendCapacity(ChannelId),
    /// An answer (success or failure) to one of our keepalives.
    KeepaliveReply,
    /// The server accepted a request of [`Connection::request_tcpip_forward`] or
    /// [`Connection::request_streamlocal_forward`]: it listens, and opens a
    /// `forwarded-tcpip` (`forwarded-streamlocal@openssh.com`) channel for each connection it
    /// accepts there.
    ForwardGranted {
        /// Where it listens, as we asked for it (port 0: the server picks).
        listen: ForwardListen,
        /// The port the server listens on: the one it allocated when we asked for 0. 0 for
        /// a Unix socket.
        bound_port: u32,
    },
    /// The server refused a forward request: nothing listens for it.
    ForwardRefused {
        /// Where we asked it to listen.
        listen: ForwardListen,
    },
    /// The server asks to open a `forwarded-tcpip` (or `forwarded-streamlocal@openssh.com`)
    /// channel for one of our granted forwards.
    /// It is *not confirmed yet*: nothing has been sent, and the server may send nothing on
    /// it. Connect to the forward's target first, then answer:
    /// [`Connection::confirm_forwarded`] once connected (from then on the channel moves
    /// data as after [`Event::Opened`]), or [`Connection::refuse_forwarded`] if the connect
    /// fails. Until answered it counts against [`MAX_SERVER_CHANNELS`]. It ends, like every
    /// channel, with [`Event::Closed`].
    ForwardedOpenRequest {
        /// The new channel.
        id: ChannelId,
        /// The forward's listening side as we asked for it (port 0 if the server picked
        /// one).
        listen: ForwardListen,
        /// The port the server listens on for the forward (the allocated one for port 0; 0
        /// for a Unix socket).
        bound_port: u32,
        /// Where the connection came from on the server's side, sanitised, safe to log;
        /// empty for a Unix socket, whose clients have no address.
        originator: String,
        /// Its port (0 for a Unix socket).
        originator_port: u32,
    },
    /// The server listed its host keys (`hostkeys-00@openssh.com`, sent once after the
    /// login): each a public key blob, undecoded, in the server's order. Only the first
    /// such request of a session becomes an event, with at most [`MAX_HOST_KEYS`] keys.
    HostKeys(Vec<Vec<u8>>),
    /// The answer to [`Connection::prove_host_keys`]: one signature blob per key asked
    /// about, in the same order; `None` when the server refused, or its answer does not
    /// hold one signature per key.
    HostKeysProof(Option<Vec<Vec<u8>>>),
    /// The server sent a connection-range message number that RFC 4254 does not assign; RFC
    /// 4253 section 11.4 wants SSH_MSG_UNIMPLEMENTED (with the packet's sequence number, which
    /// only the transport knows) in reply. Nothing else happened.
    Unimplemented(MessageType),
}

/// Where a channel's open stands: which side still owes the other its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpenState {
    /// We sent CHANNEL_OPEN and wait for the server's answer; `sent` (by the connection's
    /// clock) times it.
    AwaitingServer { sent: Option<std::time::Instant> },
    /// The server sent CHANNEL_OPEN (`forwarded-tcpip`) and waits for ours: nothing about the
    /// channel has gone to the server, which does not even know our number for it.
    AwaitingUs,
    /// Confirmed: the channel carries data.
    Open,
}

/// How far our side of a channel has ended, in the order it can only move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SendState {
    /// We may send data (once the open is confirmed).
    Open,
    /// EOF was asked for before the open was confirmed: it follows the confirmation.
    EofWanted,
    /// We sent EOF: no more data.
    EofSent,
    /// We sent CLOSE (with or without EOF before it): nothing more at all.
    CloseSent,
}

/// How far the server's side of a channel has ended, in the order it can only move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RecvState {
    /// The server may still send data.
    Open,
    /// The server sent EOF (or CLOSE while data still waited for the local socket, which
    /// the driver then drains as if EOF had come).
    Eof,
    /// The server sent CLOSE: nothing more may come (RFC 4254 5.3).
    Closed,
}

#[derive(Debug)]
struct Channel {
    /// The server's number for the channel; meaningless until the server confirms our open
    /// (known from its CHANNEL_OPEN for one it opened).
    remote_id: u32,
    open: OpenState,
    /// What we may still send.
    send_window: Window,
    /// The largest CHANNEL_DATA we send on it.
    send_max: u32,
    recv_window: ReceiveWindow,
    received: RecvBuffer,
    /// The server opened it (`forwarded-tcpip`): it counts against [`MAX_SERVER_CHANNELS`].
    by_server: bool,
    /// What we sent of EOF and CLOSE.
    send: SendState,
    /// What the server sent of EOF and CLOSE.
    recv: RecvState,
    /// `close` was called: the local socket is gone, incoming data goes nowhere.
    local_closed: bool,
    /// A `Data` event is queued and not yet polled.
    data_queued: bool,
    /// Its data may stay in the payloads for the caller to write out itself (see
    /// [`Connection::handle_payload_deferring`]).
    deferred_delivery: bool,
    /// A `SendCapacity` event is queued and not yet polled.
    capacity_queued: bool,
}

impl Channel {
    /// `n` received bytes were delivered (or dropped): credits the server's window, and
    /// grows it, with one WINDOW_ADJUST when either is due.
    fn credit(
        &mut self,
        n: usize,
        growth: &mut crate::window::WindowGrowth,
        sink: &mut dyn PayloadSink,
    ) {
        if let Some(add) = self
            .recv_window
            .consume_and_grow(n, self.received.len(), growth)
        {
            let msg = WindowAdjust {
                recipient: self.remote_id,
                bytes: add,
            };
            sink.send_with(&mut |buf| msg.encode(buf));
        }
    }

    fn new(config: &Config, open: OpenState) -> Self {
        Self {
            remote_id: 0,
            open,
            send_window: Window::new(0),
            send_max: 0,
            recv_window: ReceiveWindow::with_threshold(
                config.initial_window,
                config.max_packet.saturating_mul(3),
            ),
            received: RecvBuffer::default(),
            by_server: false,
            send: SendState::Open,
            recv: RecvState::Open,
            local_closed: false,
            data_queued: false,
            deferred_delivery: false,
            capacity_queued: false,
        }
    }

    fn confirmed(&self) -> bool {
        self.open == OpenState::Open
    }

    fn can_send(&self) -> bool {
        self.confirmed()
            && self.send < SendState::EofSent
            && self.recv != RecvState::Closed
            && !self.local_closed
    }

    /// Whether WINDOW_ADJUST still makes sense: the server may still send data we will read.
    fn wants_data(&self) -> bool {
        self.recv == RecvState::Open && self.send != SendState::CloseSent && !self.local_closed
    }

    /// Checks that the server may still send `message` about this channel at all.
    fn check_live(&self, message: MessageType, channel: u32) -> Result<(), ConnectionError> {
        if !self.confirmed() {
            return Err(ConnectionError::NotYetConfirmed { message, channel });
        }
        if self.recv == RecvState::Closed {
            return Err(ConnectionError::AfterClose { message, channel });
        }
        Ok(())
    }

    fn send_close(&mut self, sink: &mut dyn PayloadSink) {
        if self.send != SendState::CloseSent {
            self.send = SendState::CloseSent;
            let msg = ChannelClose {
                recipient: self.remote_id,
            };
            sink.send_with(&mut |buf| msg.encode(buf));
        }
    }

    fn send_eof(&mut self, sink: &mut dyn PayloadSink) {
        if self.send < SendState::EofSent {
            self.send = SendState::EofSent;
            let msg = ChannelEof {
                recipient: self.remote_id,
            };
            sink.send_with(&mut |buf| msg.encode(buf));
        }
    }

    /// Once both sides sent EOF and everything received is delivered, nothing more can
    /// happen on the channel, so close it as OpenSSH does.
    fn close_if_done(&mut self, sink: &mut dyn PayloadSink) {
        if self.confirmed()
            && self.send >= SendState::EofSent
            && self.recv >= RecvState::Eof
            && self.received.is_empty()
        {
            self.send_close(sink);
        }
    }

    /// Whether the channel can be freed: CLOSE went both ways and nobody still needs the
    /// received data.
    fn finished(&self) -> bool {
        self.send == SendState::CloseSent
            && self.recv == RecvState::Closed
            && (self.local_closed || self.received.is_empty())
    }
}

/// Where a remote forward asks the server to listen.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ForwardListen {
    /// `tcpip-forward` (RFC 4254 section 7.1): an address (empty for every one) and a port
    /// (0: the server picks).
    Tcp {
        /// The address, as sent.
        address: String,
        /// The port, as sent.
        port: u32,
    },
    /// `streamlocal-forward@openssh.com` (OpenSSH's `PROTOCOL`, section 2.4): a Unix socket
    /// at this path on the server.
    Unix {
        /// The socket's path on the server, as sent.
        path: String,
    },
}

impl ForwardListen {
    /// A TCP address and port.
    pub fn tcp(address: &str, port: u32) -> Self {
        Self::Tcp {
            address: address.to_owned(),
            port,
        }
    }

    /// A Unix socket's path.
    pub fn unix(path: &str) -> Self {
        Self::Unix {
            path: path.to_owned(),
        }
    }
}

/// A global request of ours still waiting for its reply. The server answers them in the
/// order they were sent (RFC 4254 section 4), so a queue matches every reply.
#[derive(Debug)]
enum PendingReply {
    Keepalive,
    Forward(ForwardListen),
    /// A `hostkeys-prove-00@openssh.com` about this many keys.
    HostKeysProve(usize),
}

/// The most host keys a `hostkeys-00@openssh.com` request is read for; a server has a
/// handful (OpenSSH's sshd at most one per key type).
pub const MAX_HOST_KEYS: usize = 32;

/// The strings of a request's or reply's data, at most `max` of them; `None` if the data is
/// not a whole number of strings.
fn strings(data: &[u8], max: usize) -> Option<Vec<Vec<u8>>> {
    let mut r = ssh_transport::wire::Reader::new(data);
    let mut out = Vec::new();
    while !r.is_empty() {
        let s = r.string().ok()?;
        if out.len() < max {
            out.push(s.to_vec());
        }
    }
    Some(out)
}

/// Sends the global request for a forward listening at `listen`, `port` standing for its
/// port: `tcpip-forward` and `cancel-tcpip-forward` carry an address and a port,
/// `streamlocal-forward@openssh.com` and its cancel a path. A request that asks (`cancel`
/// false) wants a reply; a cancel, as OpenSSH sends it, does not.
fn send_forward_request(
    listen: &ForwardListen,
    port: u32,
    cancel: bool,
    sink: &mut dyn PayloadSink,
) {
    let (name, field) = match (listen, cancel) {
        (ForwardListen::Tcp { address, .. }, false) => (TCPIP_FORWARD, address),
        (ForwardListen::Tcp { address, .. }, true) => (CANCEL_TCPIP_FORWARD, address),
        (ForwardListen::Unix { path }, false) => (STREAMLOCAL_FORWARD, path),
        (ForwardListen::Unix { path }, true) => (CANCEL_STREAMLOCAL_FORWARD, path),
    };
    let mut data = Vec::with_capacity(field.len().saturating_add(8));
    data.extend_from_slice(&u32::try_from(field.len()).unwrap_or(0).to_be_bytes());
    data.extend_from_slice(field.as_bytes());
    if matches!(listen, ForwardListen::Tcp { .. }) {
        data.extend_from_slice(&port.to_be_bytes());
    }
    let msg = GlobalRequest {
        name,
        want_reply: !cancel,
        data: &data,
    };
    sink.send_with(&mut |buf| msg.encode(buf));
}

/// A remote forward the server granted.
#[derive(Debug)]
struct Forward {
    listen: ForwardListen,
    /// The port the server listens on (0 for a Unix socket).
    bound_port: u32,
}

impl Forward {
    /// Whether a channel the server opens (`kind`) is for this forward. A `forwarded-tcpip`
    /// open names the address as we sent it and the port the server listens on (some name
    /// the port we asked for), as OpenSSH's client matches them; a
    /// `forwarded-streamlocal@openssh.com` open names the path as we sent it.
    fn matches(&self, kind: &OpenKind<'_>) -> bool {
        match (&self.listen, kind) {
            (ForwardListen::Tcp { address, port }, OpenKind::ForwardedTcpip(e)) => {
                address.as_bytes() == e.address
                    && (e.port == self.bound_port || (*port != 0 && e.port == *port))
            }
            (ForwardListen::Unix { path }, OpenKind::ForwardedStreamlocal { path: p }) => {
                path.as_bytes() == *p
            }
            _ => false,
        }
    }

    /// Whether `listen` names this forward: the same address and either the port asked for
    /// or the one the server listens on, or the same path.
    fn is(&self, listen: &ForwardListen) -> bool {
        match (&self.listen, listen) {
            (
                ForwardListen::Tcp { address, port },
                ForwardListen::Tcp {
                    address: a,
                    port: p,
                },
            ) => address == a && (port == p || self.bound_port == *p),
            (ForwardListen::Unix { path }, ForwardListen::Unix { path: p }) => path == p,
            _ => false,
        }
    }
}

#[derive(Debug)]
enum Slot {
    /// On the free list.
    Free,
    Live(Box<Channel>),
    /// Finished; the id goes back on the free list when its last event is polled.
    Retiring,
}

/// The client side of the SSH connection protocol: a table of `direct-tcpip` channels and
/// the keepalive bookkeeping. See the [crate docs](crate) for how it is driven.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    /// Live channels the server opened.
    server_live: usize,
    events: VecDeque<Event>,
    /// Global requests of ours the server still owes a reply, oldest first; a reply beyond
    /// these is a protocol error. Only the server's replies take them off.
    replies_due: VecDeque<PendingReply>,
    /// Whether the server's host key list came already: only the first is acted on.
    host_keys_seen: bool,
    /// Remote forwards the server granted: only these may open `forwarded-tcpip` channels.
    forwards: Vec<Forward>,
    /// Keepalives sent since the server last showed it is alive: what a keepalive policy
    /// reads. Replies and [`Connection::heard_from_server`] bring it down.
    unanswered_keepalives: u32,
    /// The clock, the round trip and the budget our receive windows grow by.
    growth: crate::window::WindowGrowth,
    failed: Option<ConnectionError>,
}

impl Connection {
    /// A connection with no channels.
    pub fn new(config: Config) -> Self {
        Self {
            config: Config {
                initial_window: config.initial_window.max(1),
                max_packet: config.max_packet.max(1),
            },
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            server_live: 0,
            events: VecDeque::new(),
            replies_due: VecDeque::new(),
            host_keys_seen: false,
            forwards: Vec::new(),
            unanswered_keepalives: 0,
            growth: crate::window::WindowGrowth::default(),
            failed: None,
        }
    }

    // ----- receive window growth -----

    /// The time is `now`: the driver passes it in before handing over input or consumption,
    /// so that receive windows can grow (see [`WindowGrowth`](crate::window::WindowGrowth)).
    /// A connection that is never given the time keeps fixed windows.
    pub fn set_clock(&mut self, now: std::time::Instant) {
        self.growth.set_clock(now);
    }

    /// A round trip to the server measured outside this crate (a keepalive's, or the TCP
    /// socket's); the smallest one is what windows grow by. The crate times each
    /// `direct-tcpip` open itself.
    pub fn observe_rtt(&mut self, rtt: std::time::Duration) {
        self.growth.observe_rtt(rtt);
    }

    /// Replaces the limits receive windows grow within (defaults:
    /// [`CHANNEL_WINDOW_CAP`](crate::window::CHANNEL_WINDOW_CAP) per channel,
    /// [`SESSION_WINDOW_BUDGET`](crate::window::SESSION_WINDOW_BUDGET) above the base
    /// windows for the session). Takes effect for growth from now on.
    pub fn set_window_limits(&mut self, channel_cap: u32, session_budget: u64) {
        self.growth.set_limits(channel_cap, session_budget);
    }

    /// The growth state: clock, round trip and window granted above the base windows.
    pub fn window_growth(&self) -> &crate::window::WindowGrowth {
        &self.growth
    }

    /// The current size of a channel's receive window (the configured one until it grows);
    /// `None` for an unknown channel.
    pub fn receive_window(&self, id: ChannelId) -> Option<u32> {
        match self.slots.get(usize::try_from(id.0).ok()?)? {
            Slot::Live(c) => Some(c.recv_window.max()),
            Slot::Free | Slot::Retiring => None,
        }
    }

    // ----- getters -----

    /// The configuration in use (after zero values were raised).
    pub fn config(&self) -> Config {
        self.config
    }

    /// The fatal error the connection stopped on, if any.
    pub fn error(&self) -> Option<&ConnectionError> {
        self.failed.as_ref()
    }

    /// Channels opened (by us, or by the server and pending or confirmed) and not yet
    /// reported `Closed` or `OpenFailed`.
    pub fn channel_count(&self) -> usize {
        self.live
    }

    /// Whether the channel is confirmed and neither side has closed it.
    pub fn is_open(&self, id: ChannelId) -> bool {
        self.channel(id).is_some_and(|c| {
            c.confirmed() && c.send != SendState::CloseSent && c.recv != RecvState::Closed
        })
    }

    /// Whether the server has sent EOF (or CLOSE) on the channel.
    pub fn peer_eof(&self, id: ChannelId) -> bool {
        self.channel(id).is_some_and(|c| c.recv >= RecvState::Eof)
    }

    /// Whether the channel will never send data again: we sent EOF or CLOSE, or closed it
    /// locally, or the server sent CLOSE (RFC 4254 5.3: nothing may follow it). False while
    /// an open is still waiting for its confirmation (by either side), and for an id not in
    /// use.
    pub fn send_ended(&self, id: ChannelId) -> bool {
        self.channel(id).is_some_and(|c| {
            c.send >= SendState::EofSent || c.recv == RecvState::Closed || c.local_closed
        })
    }

    /// Bytes `send_data` would accept now: the server's window, or 0 until the open is
    /// confirmed, after `send_eof` or `close`, after the server's CLOSE, or once failed.
    pub fn send_capacity(&self, id: ChannelId) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        match self.channel(id) {
            Some(c) if c.can_send() => c.send_window.allowance(usize::MAX),
            _ => 0,
        }
    }

    /// Data received on the channel, in order, waiting to be written to the local socket;
    /// empty for an unknown channel. Stays readable after the server's EOF or CLOSE until it
    /// is consumed.
    pub fn received(&self, id: ChannelId) -> &[u8] {
        self.channel(id).map_or(&[], |c| c.received.as_slice())
    }

    /// Keepalives sent since the server last showed it is alive: each reply takes one off,
    /// and [`heard_from_server`](Self::heard_from_server) clears them all. A keepalive
    /// policy (OpenSSH's ServerAliveCountMax) declares the server dead when this reaches its
    /// limit; this is the only count of unanswered keepalives, so the policy keeps none.
    pub fn outstanding_keepalives(&self) -> u32 {
        self.unanswered_keepalives
    }

    fn channel(&self, id: ChannelId) -> Option<&Channel> {
        match self.slots.get(usize::try_from(id.0).ok()?)? {
            Slot::Live(c) => Some(c),
            Slot::Free | Slot::Retiring => None,
        }
    }

    fn slot_mut(&mut self, id: u32) -> Option<&mut Slot> {
        self.slots.get_mut(usize::try_from(id).ok()?)
    }

    fn channel_mut(&mut self, id: u32) -> Option<&mut Channel> {
        match self.slot_mut(id)? {
            Slot::Live(c) => Some(c),
            Slot::Free | Slot::Retiring => None,
        }
    }

    // ----- commands -----

    /// Opens a `direct-tcpip` channel to `host:port` on the server's side; `originator` and
    /// `originator_port` say where the local connection came from. The channel is usable
    /// after [`Event::Opened`]; [`Event::OpenFailed`] says it never will be.
    pub fn open_direct_tcpip(
        &mut self,
        host: &str,
        port: u32,
        originator: &str,
        originator_port: u32,
        sink: &mut dyn PayloadSink,
    ) -> Result<ChannelId, ConnectionError> {
        self.open_channel(
            OpenKind::DirectTcpip(TcpipEndpoints {
                address: host.as_bytes(),
                port,
                originator_address: originator.as_bytes(),
                originator_port,
            }),
            sink,
        )
    }

    /// Opens a `direct-streamlocal@openssh.com` channel to the Unix socket at `path` on the
    /// server's side (OpenSSH's `PROTOCOL`, section 2.4); otherwise as
    /// [`open_direct_tcpip`](Self::open_direct_tcpip).
    pub fn open_direct_streamlocal(
        &mut self,
        path: &str,
        sink: &mut dyn PayloadSink,
    ) -> Result<ChannelId, ConnectionError> {
        self.open_channel(
            OpenKind::DirectStreamlocal {
                path: path.as_bytes(),
            },
            sink,
        )
    }

    fn open_channel(
        &mut self,
        kind: OpenKind<'_>,
        sink: &mut dyn PayloadSink,
    ) -> Result<ChannelId, ConnectionError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let channel = Box::new(Channel::new(
            &self.config,
            OpenState::AwaitingServer {
                sent: self.growth.now(),
            },
        ));
        let id = self.insert(channel)?;
        self.live = self.live.saturating_add(1);
        let msg = ChannelOpen {
            sender: id,
            initial_window: self.config.initial_window,
            max_packet: self.config.max_packet,
            kind,
        };
        sink.send_with(&mut |buf| msg.encode(buf));
        Ok(ChannelId(id))
    }

    /// Sends as much of `data` as the server's window allows, in CHANNEL_DATA messages of at
    /// most the server's maximum packet size (and [`MAX_OUTGOING_DATA`]), each built directly
    /// in the sink's buffer. Returns how many bytes were taken; 0 means blocked: wait for
    /// [`Event::SendCapacity`] (or, if the channel is closing, for [`Event::Closed`]).
    ///
    /// Errors: the fatal error if the connection has failed, or
    /// [`ConnectionError::NoSuchChannel`] for an id that is not in use.
    pub fn send_data(
        &mut self,
        id: ChannelId,
        data: &[u8],
        sink: &mut dyn PayloadSink,
    ) -> Result<usize, ConnectionError> {
        let Some((channel, take)) = self.sendable(id, data.len())? else {
            return Ok(0);
        };
        let Some(data) = data.get(..take) else {
            return Ok(0);
        };
        // Cannot fail: `take` came from the window.
        channel
            .send_window
            .take(take)
            .map_err(|e| ConnectionError::window(id.0, e))?;
        let chunk_len = usize::try_from(channel.send_max.max(1)).unwrap_or(usize::MAX);
        let recipient = channel.remote_id;
        for chunk in data.chunks(chunk_len) {
            let msg = ChannelData {
                recipient,
                data: chunk,
            };
            sink.send_with(&mut |buf| msg.encode(buf));
        }
        Ok(take)
    }

    /// The channel `id` and how much of `wanted` bytes its window lets it send now; `None`
    /// when it can send nothing (still opening, closing, or a window of 0). Errors as
    /// [`send_data`](Self::send_data)'s.
    fn sendable(
        &mut self,
        id: ChannelId,
        wanted: usize,
    ) -> Result<Option<(&mut Channel, usize)>, ConnectionError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let channel = match self.slot_mut(id.0) {
            Some(Slot::Live(c)) => c,
            Some(Slot::Retiring) => return Ok(None),
            Some(Slot::Free) | None => return Err(ConnectionError::NoSuchChannel(id)),
        };
        if !channel.can_send() {
            return Ok(None);
        }
        let take = channel.send_window.allowance(wanted);
        Ok((take > 0).then_some((channel, take)))
    }

    /// Like [`send_data`](Self::send_data), but the data is read by `fill` (one scatter read
    /// of up to `max` bytes, cut to the server's window) straight into the CHANNEL_DATA
    /// packets when the sink can build them in place, or else into a buffer that is then
    /// sent. `fill` returns how many bytes it wrote, all of which are sent. `Ok(None)`,
    /// without calling `fill`, when the channel cannot take data now (as `send_data`'s 0):
    /// wait for [`Event::SendCapacity`] (or [`Event::Closed`]).
    ///
    /// Errors: as `send_data`'s.
    pub fn send_data_from(
        &mut self,
        id: ChannelId,
        max: usize,
        sink: &mut dyn PayloadSink,
        fill: &mut dyn FnMut(&mut [IoSliceMut<'_>]) -> usize,
    ) -> Result<Option<usize>, ConnectionError> {
        let Some((channel, take)) = self.sendable(id, max)? else {
            return Ok(None);
        };
        let chunk = usize::try_from(channel.send_max.max(1)).unwrap_or(usize::MAX);
        let [r0, r1, r2, r3] = channel.remote_id.to_be_bytes();
        let head = [MessageType::CHANNEL_DATA.0, r0, r1, r2, r3];
        if let Some(sent) = sink.send_data_with(&head, chunk, take, fill) {
            // Cannot fail: the sink sent at most `take`, which came from the window.
            channel
                .send_window
                .take(sent.min(take))
                .map_err(|e| ConnectionError::window(id.0, e))?;
            return Ok(Some(sent));
        }
        // The sink cannot build the packets in place: read into a buffer and send that.
        let mut buf = vec![0; take];
        let n = fill(&mut [IoSliceMut::new(&mut buf)]).min(take);
        let sent = self.send_data(id, buf.get(..n).unwrap_or_default(), sink)?;
        Ok(Some(sent))
    }

    /// The local socket will send no more (it read EOF): sends CHANNEL_EOF, at once or as
    /// soon as the open is confirmed (by the server, or by
    /// [`confirm_forwarded`](Self::confirm_forwarded)). Does nothing for an unknown or
    /// closing channel.
    pub fn send_eof(&mut self, id: ChannelId, sink: &mut dyn PayloadSink) {
        if self.failed.is_some() {
            return;
        }
        let Some(channel) = self.channel_mut(id.0) else {
            return;
        };
        if channel.local_closed {
            return;
        }
        if !channel.confirmed() {
            channel.send = channel.send.max(SendState::EofWanted);
            return;
        }
        channel.send_eof(sink);
        channel.close_if_done(sink);
    }

    /// The local socket is gone: drops what was received and not consumed, and sends
    /// CHANNEL_CLOSE (for a channel still opening, once the open is confirmed). The channel
    /// ends with [`Event::Closed`] when the server's CLOSE has come too, or with
    /// [`Event::OpenFailed`] if the server refuses the open. A channel the server opened and
    /// we have not confirmed is refused instead ([`refuse_forwarded`](Self::refuse_forwarded)
    /// with ADMINISTRATIVELY_PROHIBITED, "open failed", as OpenSSH refuses an open it will not
    /// serve): the server never saw it open, so it gets no CLOSE. Does nothing for an unknown
    /// channel or a second call.
    pub fn close(&mut self, id: ChannelId, sink: &mut dyn PayloadSink) {
        if self.failed.is_some() {
            return;
        }
        let Some(channel) = self.channel_mut(id.0) else {
            return;
        };
        if channel.local_closed {
            return;
        }
        if channel.open == OpenState::AwaitingUs {
            self.refuse_forwarded(
                id,
                OpenFailureReason::ADMINISTRATIVELY_PROHIBITED,
                "open failed",
                sink,
            );
            return;
        }
        channel.local_closed = true;
        channel.received.discard();
        if !channel.confirmed() {
            return;
        }
        channel.send_close(sink);
        if channel.finished() {
            self.retire(id.0, Event::Closed(id));
        }
    }

    /// Confirms a channel the server opened ([`Event::ForwardedOpenRequest`]), once the local
    /// connection it is for is made: sends OPEN_CONFIRMATION with our window and packet size
    /// (as OpenSSH's client does only after its connect completes). From then on the channel
    /// is like one we opened after [`Event::Opened`]; an EOF asked for while it was pending
    /// follows the confirmation.
    ///
    /// Errors: the fatal error if the connection has failed, or
    /// [`ConnectionError::NotPending`] (nothing sent) for an id that is not a channel the
    /// server opened and still waits to have answered.
    pub fn confirm_forwarded(
        &mut self,
        id: ChannelId,
        sink: &mut dyn PayloadSink,
    ) -> Result<(), ConnectionError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let config = self.config;
        let channel = self
            .channel_mut(id.0)
            .filter(|c| c.open == OpenState::AwaitingUs)
            .ok_or(ConnectionError::NotPending(id))?;
        channel.open = OpenState::Open;
        let msg = ChannelOpenConfirmation {
            recipient: channel.remote_id,
            sender: id.0,
            initial_window: config.initial_window,
            max_packet: config.max_packet,
        };
        sink.send_with(&mut |buf| msg.encode(buf));
        if channel.send == SendState::EofWanted {
            channel.send_eof(sink);
        }
        Ok(())
    }

    /// Refuses a channel the server opened ([`Event::ForwardedOpenRequest`]) and has not had
    /// confirmed: sends OPEN_FAILURE with `reason` and `description` (OpenSSH sends
    /// CONNECT_FAILED and the system's error text when the connect to the target fails) and
    /// frees the channel, which ends with [`Event::Closed`]; it stops counting against
    /// [`MAX_SERVER_CHANNELS`] at once. No CLOSE follows: the channel never opened. Does
    /// nothing for any other id, or once the connection has failed.
    pub fn refuse_forwarded(
        &mut self,
        id: ChannelId,
        reason: OpenFailureReason,
        description: &str,
        sink: &mut dyn PayloadSink,
    ) {
        if self.failed.is_some() {
            return;
        }
        let Some(channel) = self.channel(id).filter(|c| c.open == OpenState::AwaitingUs) else {
            return;
        };
        let msg = ChannelOpenFailure {
            recipient: channel.remote_id,
            reason,
            description: description.as_bytes(),
            language: b"",
        };
        sink.send_with(&mut |buf| msg.encode(buf));
        self.retire(id.0, Event::Closed(id));
    }

    /// Sends a `keepalive@openssh.com` global request asking for a reply; the reply comes as
    /// [`Event::KeepaliveReply`]. Servers answer it with REQUEST_FAILURE, which counts.
    pub fn send_keepalive(&mut self, sink: &mut dyn PayloadSink) {
        if self.failed.is_some() {
            return;
        }
        let msg = GlobalRequest {
            name: KEEPALIVE,
            want_reply: true,
            data: &[],
        };
        sink.send_with(&mut |buf| msg.encode(buf));
        self.replies_due.push_back(PendingReply::Keepalive);
        self.unanswered_keepalives = self.unanswered_keepalives.saturating_add(1);
    }

    /// Asks the server to prove it holds the private halves of `keys` (public key blobs it
    /// listed in [`Event::HostKeys`]): `hostkeys-prove-00@openssh.com`, answered as
    /// [`Event::HostKeysProof`], in order with the answers to keepalives and forwards.
    pub fn prove_host_keys(&mut self, keys: &[Vec<u8>], sink: &mut dyn PayloadSink) {
        if self.failed.is_some() || keys.is_empty() {
            return;
        }
        let mut data = Vec::new();
        for k in keys {
            ssh_transport::wire::Writer::put_string(&mut data, k);
        }
        let msg = GlobalRequest {
            name: HOSTKEYS_PROVE,
            want_reply: true,
            data: &data,
        };
        sink.send_with(&mut |buf| msg.encode(buf));
        self.replies_due
            .push_back(PendingReply::HostKeysProve(keys.len()));
    }

    /// Asks the server to listen on `address:port` (RFC 4254 section 7.1; port 0: the server
    /// picks one) and to open a `forwarded-tcpip` channel for each connection it accepts
    /// there. The answer comes as [`Event::ForwardGranted`] or [`Event::ForwardRefused`], in
    /// order with the answers to keepalives. Only granted forwards may open channels; every
    /// other channel the server opens is refused.
    pub fn request_tcpip_forward(&mut self, address: &str, port: u32, sink: &mut dyn PayloadSink) {
        self.request_forward(ForwardListen::tcp(address, port), sink);
    }

    /// Asks the server to listen on a Unix socket at `path` (OpenSSH's
    /// `streamlocal-forward@openssh.com`) and to open a `forwarded-streamlocal@openssh.com`
    /// channel for each connection it accepts there; otherwise as
    /// [`request_tcpip_forward`](Self::request_tcpip_forward). The server creates the socket
    /// with its own `StreamLocalBindMask`, and refuses when the path exists unless its
    /// `StreamLocalBindUnlink` is set; it never removes the file.
    pub fn request_streamlocal_forward(&mut self, path: &str, sink: &mut dyn PayloadSink) {
        self.request_forward(ForwardListen::unix(path), sink);
    }

    /// Sends the request for a forward listening at `listen`; its answer is matched in order.
    pub fn request_forward(&mut self, listen: ForwardListen, sink: &mut dyn PayloadSink) {
        if self.failed.is_some() {
            return;
        }
        let port = match &listen {
            ForwardListen::Tcp { port, .. } => *port,
            ForwardListen::Unix { .. } => 0,
        };
        send_forward_request(&listen, port, false, sink);
        self.replies_due.push_back(PendingReply::Forward(listen));
    }

    /// Drops the granted remote forward requested as `address:port` (`port` may be the port
    /// asked for or the one the server allocated): sends `cancel-tcpip-forward` (RFC 4254
    /// section 7.1) naming the port the server listens on, as OpenSSH does without asking
    /// for a reply, and refuses every `forwarded-tcpip` channel for it from now on (channels
    /// already open carry on). Returns `false`, and sends nothing, when no such forward is
    /// in place.
    pub fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        sink: &mut dyn PayloadSink,
    ) -> bool {
        self.cancel_forward(&ForwardListen::tcp(address, port), sink)
    }

    /// Drops the granted forward listening on the Unix socket at `path`: sends
    /// `cancel-streamlocal-forward@openssh.com` (the server closes its listener; the file
    /// stays), otherwise as [`cancel_tcpip_forward`](Self::cancel_tcpip_forward).
    pub fn cancel_streamlocal_forward(&mut self, path: &str, sink: &mut dyn PayloadSink) -> bool {
        self.cancel_forward(&ForwardListen::unix(path), sink)
    }

    /// Drops the granted forward `listen` names (for TCP, by the port asked for or the one
    /// the server listens on); see [`cancel_tcpip_forward`](Self::cancel_tcpip_forward).
    pub fn cancel_forward(&mut self, listen: &ForwardListen, sink: &mut dyn PayloadSink) -> bool {
        let Some(i) = self.forwards.iter().position(|f| f.is(listen)) else {
            return false;
        };
        let f = self.forwards.swap_remove(i);
        if self.failed.is_none() {
            send_forward_request(&f.listen, f.bound_port, true, sink);
        }
        true
    }

    /// Bytes came from the server: it is alive, so no keepalive counts as unanswered any
    /// more ([`outstanding_keepalives`](Self::outstanding_keepalives) drops to 0), as OpenSSH
    /// counts any packet from the server. The replies still due are kept: when they come
    /// they are matched as usual, and one too many is still a protocol error.
    pub fn heard_from_server(&mut self) {
        self.unanswered_keepalives = 0;
    }

    /// The driver wrote `n` bytes of `received(id)` to the local socket: drops them, and
    /// credits the server's window with a WINDOW_ADJUST once at least half of our window has
    /// been consumed. `n` beyond what is held is clamped. May send CLOSE (both EOFs done) and
    /// queue [`Event::Closed`] (the server had closed and this drained the rest). Returns
    /// whether it queued that event: a caller other than the one that polls events must have
    /// them polled, as nothing else may come that would.
    pub fn consume(&mut self, id: ChannelId, n: usize, sink: &mut dyn PayloadSink) -> bool {
        let Some(Slot::Live(channel)) = usize::try_from(id.0)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
        else {
            return false;
        };
        // Dropped even after a failure: what was written must never be handed out again.
        let n = channel.received.consume(n);
        if self.failed.is_some() {
            return false;
        }
        if channel.wants_data() {
            channel.credit(n, &mut self.growth, sink);
        }
        if channel.received.is_empty() {
            channel.close_if_done(sink);
            if channel.finished() {
                self.retire(id.0, Event::Closed(id));
                return true;
            }
        }
        false
    }

    // ----- input -----

    /// Handles one payload from the server (message numbers 80 to 127), replying through
    /// `sink` where the protocol asks for it and queueing events. Every error is fatal: the
    /// connection keeps returning it, and the session should be disconnected with
    /// [`ConnectionError::disconnect_reason`].
    pub fn handle_payload(
        &mut self,
        payload: &[u8],
        sink: &mut dyn PayloadSink,
    ) -> Result<(), ConnectionError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = Message::decode(payload).and_then(|m| self.handle_message(m, sink));
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    /// Like [`handle_payload`](Self::handle_payload), except for CHANNEL_DATA on a channel
    /// set to [deferred delivery](Self::set_deferred_delivery): its data is checked and
    /// counted against the window and [`Event::Data`] is queued as usual, but it is not
    /// copied into the channel's buffer. Returns the channel and where the data lies in
    /// `payload` (its last field: the decoder rejects trailing bytes), which the caller keeps
    /// and must hand back
    /// before anything else happens on the channel: what it wrote to the local socket with
    /// [`deferred_written`](Self::deferred_written), the rest with
    /// [`buffer_deferred`](Self::buffer_deferred). A driver that writes several payloads'
    /// data in one system call saves the copy into the buffer this way.
    pub fn handle_payload_deferring(
        &mut self,
        payload: &[u8],
        sink: &mut dyn PayloadSink,
    ) -> Result<Option<(ChannelId, core::ops::Range<usize>)>, ConnectionError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = Message::decode(payload).and_then(|m| match m {
            Message::Data(d) => Ok(self
                .on_data(d.recipient, d.data, true)?
                .map(|id| (id, payload.len() - d.data.len()..payload.len()))),
            other => self.handle_message(other, sink).map(|()| None),
        });
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    /// CHANNEL_DATA: checked against the channel's state, the maximum packet and the
    /// window, then buffered, or left to the caller (`Some`) when `may_defer` and the
    /// channel is set to deferred delivery.
    fn on_data(
        &mut self,
        recipient: u32,
        data: &[u8],
        may_defer: bool,
    ) -> Result<Option<ChannelId>, ConnectionError> {
        let kind = MessageType::CHANNEL_DATA;
        let max = self.config.max_packet;
        let channel = lookup(&mut self.slots, recipient, kind)?;
        let accepted = accept_data(channel, kind, recipient, data.len(), max, &mut self.growth)?;
        if !accepted || data.is_empty() {
            return Ok(None);
        }
        let deferred = may_defer && channel.deferred_delivery;
        if !deferred {
            channel.received.push(data);
        }
        if !channel.data_queued {
            channel.data_queued = true;
            self.events.push_back(Event::Data(ChannelId(recipient)));
        }
        Ok(deferred.then_some(ChannelId(recipient)))
    }

    /// Whether channel `id`'s data may be left in the payloads for the caller (see
    /// [`handle_payload_deferring`](Self::handle_payload_deferring)): on while the caller
    /// writes the channel's data to its local socket itself. Does nothing for an unknown
    /// channel.
    pub fn set_deferred_delivery(&mut self, id: ChannelId, on: bool) {
        if let Some(channel) = self.channel_mut(id.0) {
            channel.deferred_delivery = on;
        }
    }

    /// The caller wrote `n` bytes of deferred data (see
    /// [`handle_payload_deferring`](Self::handle_payload_deferring)) to the local socket:
    /// credits them to the server's window as [`consume`](Self::consume) does for buffered
    /// bytes. Deferred data comes after whatever the buffer holds, so the caller writes the
    /// buffer first.
    pub fn deferred_written(&mut self, id: ChannelId, n: usize, sink: &mut dyn PayloadSink) {
        if self.failed.is_some() || n == 0 {
            return;
        }
        if let Some(Slot::Live(channel)) = usize::try_from(id.0)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            && channel.wants_data()
        {
            channel.credit(n, &mut self.growth, sink);
        }
    }

    /// Deferred data the caller did not write (see
    /// [`handle_payload_deferring`](Self::handle_payload_deferring)) goes into the channel's
    /// buffer after what it holds. It was counted against the window when it arrived; it is
    /// credited when consumed. Dropped for a channel whose local side is gone.
    pub fn buffer_deferred(&mut self, id: ChannelId, data: &[u8]) {
        if let Some(channel) = self.channel_mut(id.0)
            && !channel.local_closed
            && !data.is_empty()
        {
            channel.received.push(data);
        }
    }

    fn handle_message(
        &mut self,
        message: Message<'_>,
        sink: &mut dyn PayloadSink,
    ) -> Result<(), ConnectionError> {
        let kind = message.message_type();
        match message {
            Message::Data(m) => {
                self.on_data(m.recipient, m.data, false)?;
            }
            Message::ExtendedData(m) => {
                // Nobody reads stderr of a TCP forward; the bytes still used window, so
                // credit them as if they had been written out.
                let max = self.config.max_packet;
                let channel = lookup(&mut self.slots, m.recipient, kind)?;
                if accept_data(
                    channel,
                    kind,
                    m.recipient,
                    m.data.len(),
                    max,
                    &mut self.growth,
                )? {
                    channel.credit(m.data.len(), &mut self.growth, sink);
                }
            }
            Message::WindowAdjust(m) => {
                let channel = lookup(&mut self.slots, m.recipient, kind)?;
                channel.check_live(kind, m.recipient)?;
                if channel.local_closed {
                    return Ok(());
                }
                channel
                    .send_window
                    .grow(m.bytes)
                    .map_err(|e| ConnectionError::window(m.recipient, e))?;
                if m.bytes > 0 && channel.can_send() && !channel.capacity_queued {
                    channel.capacity_queued = true;
                    self.events
                        .push_back(Event::SendCapacity(ChannelId(m.recipient)));
                }
            }
            Message::ChannelOpenConfirmation(m) => {
                let channel = lookup(&mut self.slots, m.recipient, kind)?;
                // Only an open of ours waits for the server's answer; one the server opened
                // waits for ours.
                let OpenState::AwaitingServer { sent } = channel.open else {
                    return Err(ConnectionError::UnexpectedOpenReply {
                        message: kind,
                        channel: m.recipient,
                    });
                };
                if m.max_packet == 0 {
                    return Err(ConnectionError::ZeroMaxPacket {
                        channel: m.recipient,
                    });
                }
                channel.open = OpenState::Open;
                channel.remote_id = m.sender;
                channel.send_window = Window::new(m.initial_window);
                channel.send_max = m.max_packet.min(MAX_OUTGOING_DATA);
                if let (Some(sent), Some(now)) = (sent, self.growth.now()) {
                    self.growth.observe_rtt(now.saturating_duration_since(sent));
                }
                if channel.local_closed {
                    channel.send_close(sink);
                } else {
                    self.events.push_back(Event::Opened(ChannelId(m.recipient)));
                    if channel.send == SendState::EofWanted {
                        channel.send_eof(sink);
                    }
                }
            }
            Message::ChannelOpenFailure(m) => {
                let channel = lookup(&mut self.slots, m.recipient, kind)?;
                if !matches!(channel.open, OpenState::AwaitingServer { .. }) {
                    return Err(ConnectionError::UnexpectedOpenReply {
                        message: kind,
                        channel: m.recipient,
                    });
                }
                let id = ChannelId(m.recipient);
                let description = sanitize(m.description, false, MAX_DESCRIPTION_CHARS);
                self.retire(
                    m.recipient,
                    Event::OpenFailed {
                        id,
                        reason: m.reason,
                        description,
                    },
                );
            }
            Message::Eof(m) => {
                let channel = lookup(&mut self.slots, m.recipient, kind)?;
                channel.check_live(kind, m.recipient)?;
                if channel.recv >= RecvState::Eof {
                    return Err(ConnectionError::AfterEof {
                        message: kind,
                        channel: m.recipient,
                    });
                }
                channel.recv = RecvState::Eof;
                if !channel.local_closed {
                    self.events.push_back(Event::Eof(ChannelId(m.recipient)));
                    channel.close_if_done(sink);
                }
            }
            Message::Close(m) => {
                let channel = lookup(&mut self.slots, m.recipient, kind)?;
                channel.check_live(kind, m.recipient)?;
                let had_eof = channel.recv >= RecvState::Eof;
                channel.recv = RecvState::Closed;
                channel.send_close(sink);
                if channel.finished() {
                    self.retire(m.recipient, Event::Closed(ChannelId(m.recipient)));
                } else if !had_eof {
                    // Data is still waiting for the local socket: have the driver drain it
                    // and shut down the write side; Closed follows when it is consumed.
                    self.events.push_back(Event::Eof(ChannelId(m.recipient)));
                }
            }
            Message::ChannelRequest(m) => {
                let channel = lookup(&mut self.slots, m.recipient, kind)?;
                channel.check_live(kind, m.recipient)?;
                tracing::debug!(
                    channel = m.recipient,
                    request = %sanitize(m.request_type, false, 64),
                    "refusing channel request"
                );
                // After our CLOSE nothing more may be sent on the channel; the server will
                // not wait for the answer once it sees the CLOSE.
                if m.want_reply && channel.send != SendState::CloseSent {
                    let msg = ChannelFailure {
                        recipient: channel.remote_id,
                    };
                    sink.send_with(&mut |buf| msg.encode(buf));
                }
            }
            Message::ChannelSuccess(_) | Message::ChannelFailure(_) => {
                // We never send channel requests, so there is nothing to match these with;
                // like OpenSSH with no pending request, ignore them.
            }
            Message::GlobalRequest(m) if m.name == HOSTKEYS && !self.host_keys_seen => {
                // Never answered (OpenSSH's sshd asks for no reply); what is done with the
                // keys is the client's own business.
                self.host_keys_seen = true;
                if m.want_reply {
                    sink.send_with(&mut |buf| RequestFailure.encode(buf));
                }
                match strings(m.data, MAX_HOST_KEYS) {
                    Some(keys) => self.events.push_back(Event::HostKeys(keys)),
                    None => tracing::debug!("host key list that does not parse: ignored"),
                }
            }
            Message::GlobalRequest(m) => {
                tracing::debug!(
                    request = %sanitize(m.name, false, 64),
                    want_reply = m.want_reply,
                    "refusing global request"
                );
                if m.want_reply {
                    sink.send_with(&mut |buf| RequestFailure.encode(buf));
                }
            }
            Message::RequestSuccess(_) | Message::RequestFailure(_) => {
                let pending = self
                    .replies_due
                    .pop_front()
                    .ok_or(ConnectionError::UnexpectedRequestReply { message: kind })?;
                match pending {
                    PendingReply::Keepalive => {
                        self.unanswered_keepalives = self.unanswered_keepalives.saturating_sub(1);
                        self.events.push_back(Event::KeepaliveReply);
                    }
                    PendingReply::Forward(listen) => self.forward_reply(&message, listen),
                    PendingReply::HostKeysProve(asked) => {
                        let proof = match &message {
                            Message::RequestSuccess(m) => {
                                strings(m.data, asked).filter(|sigs| sigs.len() == asked)
                            }
                            _ => None,
                        };
                        self.events.push_back(Event::HostKeysProof(proof));
                    }
                }
            }
            Message::ChannelOpen(m) => self.server_open(&m, sink)?,
            Message::Unassigned { message, .. } => {
                self.events.push_back(Event::Unimplemented(message));
            }
        }
        Ok(())
    }

    /// The server answered a `tcpip-forward` request.
    fn forward_reply(&mut self, reply: &Message<'_>, listen: ForwardListen) {
        let Message::RequestSuccess(m) = reply else {
            self.events.push_back(Event::ForwardRefused { listen });
            return;
        };
        // With port 0 the reply carries the allocated port (RFC 4254 section 7.1); servers
        // that leave it out listen on the port we asked for. A socket has no port.
        let bound_port = match (&listen, m.data) {
            (ForwardListen::Tcp { port: 0, .. }, [a, b, c, d, ..]) => {
                u32::from_be_bytes([*a, *b, *c, *d])
            }
            (ForwardListen::Tcp { port, .. }, _) => *port,
            (ForwardListen::Unix { .. }, _) => 0,
        };
        self.forwards.push(Forward {
            listen: listen.clone(),
            bound_port,
        });
        self.events
            .push_back(Event::ForwardGranted { listen, bound_port });
    }

    /// A CHANNEL_OPEN from the server: a `forwarded-tcpip` channel for a granted forward
    /// becomes pending, answered later by `confirm_forwarded` or `refuse_forwarded` (as
    /// OpenSSH's client confirms only once the connect to the target completes, so a target
    /// that never answers costs no window); everything else is refused.
    fn server_open(
        &mut self,
        m: &ChannelOpen<'_>,
        sink: &mut dyn PayloadSink,
    ) -> Result<(), ConnectionError> {
        let forward = match &m.kind {
            OpenKind::ForwardedTcpip(_) | OpenKind::ForwardedStreamlocal { .. }
                if m.max_packet > 0 =>
            {
                self.forwards
                    .iter()
                    .find(|f| f.matches(&m.kind))
                    .map(|f| (f.listen.clone(), f.bound_port))
            }
            _ => None,
        };
        // Who connected: a socket's client has no address.
        let (originator, originator_port) = match &m.kind {
            OpenKind::ForwardedTcpip(e) => (
                sanitize(e.originator_address, false, 256),
                e.originator_port,
            ),
            _ => (String::new(), 0),
        };
        let refuse = |reason, description: &[u8], sink: &mut dyn PayloadSink| {
            let msg = ChannelOpenFailure {
                recipient: m.sender,
                reason,
                description,
                language: b"",
            };
            sink.send_with(&mut |buf| msg.encode(buf));
        };
        let Some((listen, bound_port)) = forward else {
            tracing::debug!(
                channel_type = %sanitize(m.kind.channel_type(), false, 64),
                "refusing channel opened by the server"
            );
            refuse(
                OpenFailureReason::ADMINISTRATIVELY_PROHIBITED,
                b"open refused",
                sink,
            );
            return Ok(());
        };
        if self.server_live >= MAX_SERVER_CHANNELS {
            tracing::debug!(
                open = self.server_live,
                "refusing a forwarded connection: too many open"
            );
            refuse(
                OpenFailureReason::RESOURCE_SHORTAGE,
                b"too many forwarded connections open",
                sink,
            );
            return Ok(());
        }
        let mut channel = Box::new(Channel::new(&self.config, OpenState::AwaitingUs));
        channel.by_server = true;
        channel.remote_id = m.sender;
        channel.send_window = Window::new(m.initial_window);
        channel.send_max = m.max_packet.min(MAX_OUTGOING_DATA);
        let id = self.insert(channel)?;
        self.live = self.live.saturating_add(1);
        self.server_live = self.server_live.saturating_add(1);
        self.events.push_back(Event::ForwardedOpenRequest {
            id: ChannelId(id),
            listen,
            bound_port,
            originator,
            originator_port,
        });
        Ok(())
    }

    /// Puts `channel` in a free slot (or a new one) and returns its id.
    fn insert(&mut self, channel: Box<Channel>) -> Result<u32, ConnectionError> {
        match self.free.pop() {
            Some(id) => {
                if let Some(slot) = self.slot_mut(id) {
                    *slot = Slot::Live(channel);
                }
                Ok(id)
            }
            None => {
                let id = u32::try_from(self.slots.len())
                    .map_err(|_| ConnectionError::TooManyChannels)?;
                self.slots.push(Slot::Live(channel));
                Ok(id)
            }
        }
    }

    /// Frees a channel's state and queues its last event; the id itself is reused only
    /// after that event is polled.
    fn retire(&mut self, id: u32, last: Event) {
        if let Some(slot) = self.slot_mut(id)
            && let Slot::Live(channel) = slot
        {
            let extra = channel.recv_window.extra();
            let by_server = channel.by_server;
            *slot = Slot::Retiring;
            self.growth.release(extra);
            self.live = self.live.saturating_sub(1);
            if by_server {
                self.server_live = self.server_live.saturating_sub(1);
            }
            self.events.push_back(last);
        }
    }

    // ----- output -----

    /// The next thing the driver must act on, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        match &event {
            Event::Data(id) => {
                if let Some(c) = self.channel_mut(id.0) {
                    c.data_queued = false;
                }
            }
            Event::SendCapacity(id) => {
                if let Some(c) = self.channel_mut(id.0) {
                    c.capacity_queued = false;
                }
            }
            Event::Closed(id) | Event::OpenFailed { id, .. } => {
                if let Some(slot) = self.slot_mut(id.0)
                    && matches!(slot, Slot::Retiring)
                {
                    *slot = Slot::Free;
                    self.free.push(id.0);
                }
            }
            Event::Opened(_)
            | Event::Eof(_)
            | Event::KeepaliveReply
            | Event::ForwardGranted { .. }
            | Event::ForwardRefused { .. }
            | Event::ForwardedOpenRequest { .. }
            | Event::HostKeys(_)
            | Event::HostKeysProof(_)
            | Event::Unimplemented(_) => {}
        }
        Some(event)
    }
}

/// The live channel a server message names, or the error for naming another. A free
/// function so the caller can still queue events while holding the channel.
fn lookup(
    slots: &mut [Slot],
    id: u32,
    message: MessageType,
) -> Result<&mut Channel, ConnectionError> {
    match usize::try_from(id).ok().and_then(|i| slots.get_mut(i)) {
        Some(Slot::Live(c)) => Ok(c),
        _ => Err(ConnectionError::UnknownChannel {
            message,
            channel: id,
        }),
    }
}

/// Checks CHANNEL_DATA or CHANNEL_EXTENDED_DATA of `len` bytes against the channel's state,
/// our maximum packet size and our window, and takes it from the window. Returns whether
/// anyone will read the bytes (not after `close`).
fn accept_data(
    channel: &mut Channel,
    message: MessageType,
    id: u32,
    len: usize,
    max_packet: u32,
    growth: &mut crate::window::WindowGrowth,
) -> Result<bool, ConnectionError> {
    channel.check_live(message, id)?;
    if channel.recv >= RecvState::Eof {
        return Err(ConnectionError::AfterEof {
            message,
            channel: id,
        });
    }
    if !u32::try_from(len).is_ok_and(|l| l <= max_packet) {
        return Err(ConnectionError::PacketTooLarge {
            channel: id,
            len,
            max: max_packet,
        });
    }
    channel
        .recv_window
        .receive_at(len, growth)
        .map_err(|e| ConnectionError::window(id, e))?;
    Ok(!channel.local_closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASSIGNED: [u8; 14] = [80, 81, 82, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100];

    /// The router leaves UNIMPLEMENTED for the connection range to this crate, so every
    /// number RFC 4254 leaves unassigned must come back as `Unimplemented`, queued by the
    /// very `handle_payload` call that took it, with no reply and no error.
    #[test]
    fn every_unassigned_connection_number_is_unimplemented_during_handle_payload() {
        let unassigned: Vec<u8> = (80..=127).filter(|n| !ASSIGNED.contains(n)).collect();
        assert_eq!(unassigned.len(), 48 - ASSIGNED.len());
        assert!(unassigned.contains(&83) && unassigned.contains(&89));
        assert!(unassigned.contains(&101) && unassigned.contains(&127));
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        for n in unassigned {
            assert_eq!(conn.handle_payload(&[n, 0, 0, 0, 7], &mut sink), Ok(()));
            assert_eq!(
                conn.poll_event(),
                Some(Event::Unimplemented(MessageType(n)))
            );
            assert_eq!(conn.poll_event(), None);
        }
        assert!(sink.is_empty());
        assert_eq!(conn.error(), None);
    }

    #[test]
    fn numbers_outside_the_connection_range_are_refused_not_unimplemented() {
        for n in [0, 1, 50, 79, 128, 255] {
            let mut conn = Connection::new(Config::default());
            let mut sink: Vec<Vec<u8>> = Vec::new();
            assert_eq!(
                conn.handle_payload(&[n], &mut sink),
                Err(ConnectionError::NotConnectionMessage(MessageType(n)))
            );
            assert_eq!(conn.poll_event(), None);
        }
    }

    #[test]
    fn hearing_from_the_server_clears_unanswered_keepalives_but_not_replies_due() {
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        conn.send_keepalive(&mut sink);
        conn.send_keepalive(&mut sink);
        assert_eq!(conn.outstanding_keepalives(), 2);
        conn.heard_from_server();
        assert_eq!(conn.outstanding_keepalives(), 0);
        // Both replies are still expected and matched; the count stays at 0.
        for _ in 0..2 {
            assert_eq!(conn.handle_payload(&[82], &mut sink), Ok(()));
            assert_eq!(conn.poll_event(), Some(Event::KeepaliveReply));
            assert_eq!(conn.outstanding_keepalives(), 0);
        }
        // A third reply answers nothing we sent.
        assert_eq!(
            conn.handle_payload(&[82], &mut sink),
            Err(ConnectionError::UnexpectedRequestReply {
                message: MessageType::REQUEST_FAILURE
            })
        );
    }

    #[test]
    fn a_reply_takes_one_unanswered_keepalive_off() {
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        for _ in 0..3 {
            conn.send_keepalive(&mut sink);
        }
        assert_eq!(conn.handle_payload(&[81], &mut sink), Ok(()));
        assert_eq!(conn.outstanding_keepalives(), 2);
    }

    fn encode(m: &dyn Fn(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        m(&mut out);
        out
    }

    fn success(port: Option<u32>) -> Vec<u8> {
        let data = port.map(u32::to_be_bytes);
        let data = data.as_ref().map_or(&[][..], |d| &d[..]);
        encode(&|out| crate::msg::RequestSuccess { data }.encode(out))
    }

    fn open(sender: u32, kind: OpenKind<'_>) -> Vec<u8> {
        encode(&|out| {
            ChannelOpen {
                sender,
                initial_window: 1000,
                max_packet: 500,
                kind,
            }
            .encode(out)
        })
    }

    fn forwarded(sender: u32, address: &str, port: u32) -> Vec<u8> {
        open(
            sender,
            OpenKind::ForwardedTcpip(TcpipEndpoints {
                address: address.as_bytes(),
                port,
                originator_address: b"192.0.2.7",
                originator_port: 50123,
            }),
        )
    }

    /// The OPEN_FAILURE we sent last, as (recipient, reason).
    fn refusal(sink: &[Vec<u8>]) -> (u32, OpenFailureReason) {
        let last = sink.last().expect("a reply");
        match Message::decode(last).expect("decodes") {
            Message::ChannelOpenFailure(f) => (f.recipient, f.reason),
            other => panic!("expected OPEN_FAILURE, got {other:?}"),
        }
    }

    fn granted(conn: &mut Connection, sink: &mut Vec<Vec<u8>>, address: &str, port: u32) -> u32 {
        conn.request_tcpip_forward(address, port, sink);
        let reply = success((port == 0).then_some(40000));
        assert_eq!(conn.handle_payload(&reply, sink), Ok(()));
        match conn.poll_event() {
            Some(Event::ForwardGranted { bound_port, .. }) => bound_port,
            other => panic!("expected ForwardGranted, got {other:?}"),
        }
    }

    fn global_request(payload: &[u8]) -> (Vec<u8>, bool, Vec<u8>) {
        match Message::decode(payload) {
            Ok(Message::GlobalRequest(g)) => (g.name.to_vec(), g.want_reply, g.data.to_vec()),
            other => panic!("not a global request: {other:?}"),
        }
    }

    fn ssh_string(s: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(s.len()).unwrap_or(0).to_be_bytes().to_vec();
        out.extend_from_slice(s);
        out
    }

    fn host_keys_request(keys: &[&[u8]], want_reply: bool) -> Vec<u8> {
        let data: Vec<u8> = keys.iter().flat_map(|k| ssh_string(k)).collect();
        encode(&|out| {
            GlobalRequest {
                name: HOSTKEYS,
                want_reply,
                data: &data,
            }
            .encode(out)
        })
    }

    // OpenSSH's PROTOCOL 2.5: the server's list of host keys becomes one event (never a
    // reply, unless asked for one: then a failure, as for any request we do not serve);
    // a second list, a list that does not parse, and keys past the bound are dropped.
    #[test]
    fn the_server_s_host_key_list_is_one_event() {
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        let req = host_keys_request(&[b"key one", b"key two"], false);
        assert_eq!(conn.handle_payload(&req, &mut sink), Ok(()));
        assert!(sink.is_empty(), "no reply: {sink:?}");
        assert_eq!(
            conn.poll_event(),
            Some(Event::HostKeys(vec![
                b"key one".to_vec(),
                b"key two".to_vec()
            ]))
        );
        let again = host_keys_request(&[b"key three"], true);
        assert_eq!(conn.handle_payload(&again, &mut sink), Ok(()));
        assert_eq!(conn.poll_event(), None, "only the first list counts");
        assert_eq!(sink.len(), 1, "a request that wants a reply gets one");

        let mut conn = Connection::new(Config::default());
        let mut bad = host_keys_request(&[b"k"], false);
        bad.extend_from_slice(&[0, 0, 0, 9, b'x']);
        assert_eq!(conn.handle_payload(&bad, &mut sink), Ok(()));
        assert_eq!(conn.poll_event(), None, "a list that does not parse");

        let mut conn = Connection::new(Config::default());
        let many: Vec<Vec<u8>> = (0..MAX_HOST_KEYS + 5).map(|i| vec![b'k'; i + 1]).collect();
        let refs: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        let req = host_keys_request(&refs, false);
        assert_eq!(conn.handle_payload(&req, &mut sink), Ok(()));
        match conn.poll_event() {
            Some(Event::HostKeys(keys)) => assert_eq!(keys, many[..MAX_HOST_KEYS]),
            other => panic!("expected HostKeys, got {other:?}"),
        }
    }

    // The proof request lists the keys; its answer is matched in order with the other
    // requests' and must hold exactly one signature per key.
    #[test]
    fn a_host_key_proof_is_asked_for_and_its_answer_matched_in_order() {
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        conn.prove_host_keys(&[], &mut sink);
        assert!(sink.is_empty(), "nothing to ask about");
        conn.send_keepalive(&mut sink);
        conn.prove_host_keys(&[b"new a".to_vec(), b"new b".to_vec()], &mut sink);
        let mut expected = ssh_string(b"new a");
        expected.extend(ssh_string(b"new b"));
        assert_eq!(
            global_request(&sink[1]),
            (b"hostkeys-prove-00@openssh.com".to_vec(), true, expected)
        );
        let sigs: Vec<u8> = [ssh_string(b"sig a"), ssh_string(b"sig b")].concat();
        let reply = encode(&|out| crate::msg::RequestSuccess { data: &sigs }.encode(out));
        assert_eq!(
            conn.handle_payload(&[82], &mut sink),
            Ok(()),
            "the keepalive's"
        );
        assert_eq!(conn.handle_payload(&reply, &mut sink), Ok(()));
        assert_eq!(conn.poll_event(), Some(Event::KeepaliveReply));
        assert_eq!(
            conn.poll_event(),
            Some(Event::HostKeysProof(Some(vec![
                b"sig a".to_vec(),
                b"sig b".to_vec()
            ])))
        );
        // Refused, or one signature short: no proof.
        conn.prove_host_keys(&[b"k".to_vec()], &mut sink);
        assert_eq!(conn.handle_payload(&[82], &mut sink), Ok(()));
        assert_eq!(conn.poll_event(), Some(Event::HostKeysProof(None)));
        conn.prove_host_keys(&[b"k".to_vec(), b"l".to_vec()], &mut sink);
        let short = ssh_string(b"sig");
        let reply = encode(&|out| crate::msg::RequestSuccess { data: &short }.encode(out));
        assert_eq!(conn.handle_payload(&reply, &mut sink), Ok(()));
        assert_eq!(conn.poll_event(), Some(Event::HostKeysProof(None)));
    }

    // OpenSSH's PROTOCOL 2.4: the request names the path alone; its reply carries nothing,
    // and a `forwarded-streamlocal@openssh.com` open naming the path is for it (with no
    // originator), while one naming another path, or a `forwarded-tcpip` open, is not.
    #[test]
    fn a_streamlocal_forward_is_requested_granted_opened_and_cancelled_by_its_path() {
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        conn.request_streamlocal_forward("/run/fwd.sock", &mut sink);
        assert_eq!(
            global_request(&sink[0]),
            (
                b"streamlocal-forward@openssh.com".to_vec(),
                true,
                ssh_string(b"/run/fwd.sock")
            )
        );
        assert_eq!(conn.handle_payload(&success(None), &mut sink), Ok(()));
        assert_eq!(
            conn.poll_event(),
            Some(Event::ForwardGranted {
                listen: ForwardListen::unix("/run/fwd.sock"),
                bound_port: 0
            })
        );
        let streamlocal = |sender, path: &str| {
            open(
                sender,
                OpenKind::ForwardedStreamlocal {
                    path: path.as_bytes(),
                },
            )
        };
        // Another path, and a TCP open with the path as its address, are refused.
        sink.clear();
        assert_eq!(
            conn.handle_payload(&streamlocal(3, "/run/other.sock"), &mut sink),
            Ok(())
        );
        assert_eq!(
            refusal(&sink),
            (3, OpenFailureReason::ADMINISTRATIVELY_PROHIBITED)
        );
        assert_eq!(
            conn.handle_payload(&forwarded(4, "/run/fwd.sock", 0), &mut sink),
            Ok(())
        );
        assert_eq!(
            refusal(&sink),
            (4, OpenFailureReason::ADMINISTRATIVELY_PROHIBITED)
        );
        assert_eq!(conn.poll_event(), None);
        // Its own path is a pending channel, with no originator.
        assert_eq!(
            conn.handle_payload(&streamlocal(5, "/run/fwd.sock"), &mut sink),
            Ok(())
        );
        let Some(Event::ForwardedOpenRequest {
            id,
            listen,
            bound_port,
            originator,
            originator_port,
        }) = conn.poll_event()
        else {
            panic!("no ForwardedOpenRequest");
        };
        assert_eq!(listen, ForwardListen::unix("/run/fwd.sock"));
        assert_eq!(
            (bound_port, originator.as_str(), originator_port),
            (0, "", 0)
        );
        sink.clear();
        assert_eq!(conn.confirm_forwarded(id, &mut sink), Ok(()));
        assert!(matches!(
            Message::decode(&sink[0]),
            Ok(Message::ChannelOpenConfirmation(c)) if c.recipient == 5
        ));
        // A TCP cancel does not name it; its own cancel does, once, with no reply asked.
        sink.clear();
        assert!(!conn.cancel_tcpip_forward("/run/fwd.sock", 0, &mut sink));
        assert!(!conn.cancel_streamlocal_forward("/run/other.sock", &mut sink));
        assert!(sink.is_empty());
        assert!(conn.cancel_streamlocal_forward("/run/fwd.sock", &mut sink));
        assert_eq!(
            global_request(&sink[0]),
            (
                b"cancel-streamlocal-forward@openssh.com".to_vec(),
                false,
                ssh_string(b"/run/fwd.sock")
            )
        );
        assert!(!conn.cancel_streamlocal_forward("/run/fwd.sock", &mut sink));
        sink.clear();
        assert_eq!(
            conn.handle_payload(&streamlocal(6, "/run/fwd.sock"), &mut sink),
            Ok(())
        );
        assert_eq!(
            refusal(&sink),
            (6, OpenFailureReason::ADMINISTRATIVELY_PROHIBITED)
        );
    }

    #[test]
    fn a_refused_streamlocal_forward_opens_nothing() {
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        conn.request_streamlocal_forward("/run/fwd.sock", &mut sink);
        assert_eq!(conn.handle_payload(&[82], &mut sink), Ok(()));
        assert_eq!(
            conn.poll_event(),
            Some(Event::ForwardRefused {
                listen: ForwardListen::unix("/run/fwd.sock")
            })
        );
        sink.clear();
        let open = open(
            8,
            OpenKind::ForwardedStreamlocal {
                path: b"/run/fwd.sock",
            },
        );
        assert_eq!(conn.handle_payload(&open, &mut sink), Ok(()));
        assert_eq!(
            refusal(&sink),
            (8, OpenFailureReason::ADMINISTRATIVELY_PROHIBITED)
        );
        assert_eq!(conn.poll_event(), None);
    }

    #[test]
    fn a_tcpip_forward_request_is_encoded_with_want_reply() {
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        conn.request_tcpip_forward("localhost", 8022, &mut sink);
        let Ok(Message::GlobalRequest(g)) = Message::decode(&sink[0]) else {
            panic!("not a global request");
        };
        assert_eq!(g.name, b"tcpip-forward");
        assert!(g.want_reply);
        assert_eq!(g.data, b"\0\0\0\x09localhost\0\0\x1f\x56");
    }

    #[test]
    fn a_cancelled_forward_sends_cancel_with_the_bound_port_and_refuses_its_channels() {
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        assert_eq!(granted(&mut conn, &mut sink, "localhost", 0), 40000);
        assert_eq!(granted(&mut conn, &mut sink, "", 8022), 8022);
        sink.clear();
        // Named by the port asked for (0): the cancel names the port the server picked.
        assert!(conn.cancel_tcpip_forward("localhost", 0, &mut sink));
        let Ok(Message::GlobalRequest(g)) = Message::decode(&sink[0]) else {
            panic!("not a global request");
        };
        assert_eq!(g.name, b"cancel-tcpip-forward");
        assert!(!g.want_reply);
        assert_eq!(g.data, b"\0\0\0\x09localhost\0\0\x9c\x40");
        // Twice, or a forward never granted: nothing is sent.
        sink.clear();
        assert!(!conn.cancel_tcpip_forward("localhost", 40000, &mut sink));
        assert!(!conn.cancel_tcpip_forward("localhost", 8022, &mut sink));
        assert!(sink.is_empty());
        assert_eq!(
            conn.handle_payload(&forwarded(9, "localhost", 40000), &mut sink),
            Ok(())
        );
        assert_eq!(
            refusal(&sink),
            (9, OpenFailureReason::ADMINISTRATIVELY_PROHIBITED)
        );
        // The other forward still opens channels.
        sink.clear();
        assert_eq!(
            conn.handle_payload(&forwarded(10, "", 8022), &mut sink),
            Ok(())
        );
        assert!(matches!(
            conn.poll_event(),
            Some(Event::ForwardedOpenRequest {
                listen: ForwardListen::Tcp { port: 8022, .. },
                ..
            })
        ));
        // Named by the allocated port works as well.
        assert!(conn.cancel_tcpip_forward("", 8022, &mut sink));
    }

    /// A granted forward's channel, opened by the server as `sender`: its id, with the
    /// event polled and nothing sent.
    fn pending(conn: &mut Connection, sink: &mut Vec<Vec<u8>>, sender: u32) -> ChannelId {
        let before = sink.len();
        assert_eq!(
            conn.handle_payload(&forwarded(sender, "localhost", 40000), sink),
            Ok(())
        );
        assert_eq!(
            sink.len(),
            before,
            "something was sent for a pending channel"
        );
        match conn.poll_event() {
            Some(Event::ForwardedOpenRequest { id, .. }) => id,
            other => panic!("expected ForwardedOpenRequest, got {other:?}"),
        }
    }

    /// A connection with the forward `localhost:0` granted (port 40000) and nothing sent.
    fn with_forward() -> (Connection, Vec<Vec<u8>>) {
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        assert_eq!(granted(&mut conn, &mut sink, "localhost", 0), 40000);
        sink.clear();
        (conn, sink)
    }

    fn decoded(payload: &[u8]) -> Message<'_> {
        Message::decode(payload).expect("decodes")
    }

    #[test]
    fn a_forwarded_channel_is_pending_until_confirmed_then_carries_data() {
        let (mut conn, mut sink) = with_forward();
        assert_eq!(
            conn.handle_payload(&forwarded(77, "localhost", 40000), &mut sink),
            Ok(())
        );
        let Some(Event::ForwardedOpenRequest {
            id,
            listen: ForwardListen::Tcp { address, port },
            bound_port,
            originator,
            originator_port,
        }) = conn.poll_event()
        else {
            panic!("no ForwardedOpenRequest");
        };
        assert_eq!(
            (
                address.as_str(),
                port,
                bound_port,
                originator.as_str(),
                originator_port
            ),
            ("localhost", 0, 40000, "192.0.2.7", 50123)
        );
        // Pending: nothing went to the server, and nothing moves.
        assert!(sink.is_empty(), "sent before the local connection was made");
        assert!(!conn.is_open(id));
        assert!(!conn.send_ended(id));
        assert_eq!(conn.send_capacity(id), 0);
        assert_eq!(conn.send_data(id, b"early", &mut sink), Ok(0));
        assert!(sink.is_empty());
        assert_eq!(conn.channel_count(), 1);
        assert_eq!(conn.poll_event(), None);

        assert_eq!(conn.confirm_forwarded(id, &mut sink), Ok(()));
        assert_eq!(sink.len(), 1);
        let Message::ChannelOpenConfirmation(c) = decoded(&sink[0]) else {
            panic!("not a confirmation");
        };
        assert_eq!((c.recipient, c.sender), (77, id.0));
        assert_eq!(c.initial_window, Config::default().initial_window);
        assert_eq!(c.max_packet, Config::default().max_packet);
        assert!(conn.is_open(id));
        assert_eq!(conn.channel_count(), 1);
        // Only once.
        sink.clear();
        assert_eq!(
            conn.confirm_forwarded(id, &mut sink),
            Err(ConnectionError::NotPending(id))
        );
        assert!(sink.is_empty());
        // The server's window and packet size (from its open) limit what we send.
        assert_eq!(conn.send_data(id, &[7; 1200], &mut sink), Ok(1000));
        assert_eq!(sink.len(), 2);
        // Data from the server lands in the channel's buffer.
        let data = encode(&|out| {
            ChannelData {
                recipient: id.0,
                data: b"hello",
            }
            .encode(out)
        });
        assert_eq!(conn.handle_payload(&data, &mut sink), Ok(()));
        assert_eq!(conn.poll_event(), Some(Event::Data(id)));
        assert_eq!(conn.received(id), b"hello");
        // It closes like our own channels.
        sink.clear();
        conn.close(id, &mut sink);
        assert!(matches!(decoded(&sink[0]), Message::Close(c) if c.recipient == 77));
        let close = encode(&|out| ChannelClose { recipient: id.0 }.encode(out));
        assert_eq!(conn.handle_payload(&close, &mut sink), Ok(()));
        assert_eq!(conn.poll_event(), Some(Event::Closed(id)));
        assert_eq!(conn.channel_count(), 0);
    }

    #[test]
    fn an_eof_asked_for_while_pending_follows_the_confirmation() {
        let (mut conn, mut sink) = with_forward();
        let id = pending(&mut conn, &mut sink, 5);
        conn.send_eof(id, &mut sink);
        assert!(
            sink.is_empty(),
            "EOF sent for a channel the server never saw confirmed"
        );
        assert_eq!(conn.confirm_forwarded(id, &mut sink), Ok(()));
        assert_eq!(sink.len(), 2);
        assert!(matches!(
            decoded(&sink[0]),
            Message::ChannelOpenConfirmation(_)
        ));
        assert!(matches!(decoded(&sink[1]), Message::Eof(e) if e.recipient == 5));
    }

    #[test]
    fn a_refused_forwarded_channel_sends_open_failure_and_no_close() {
        let (mut conn, mut sink) = with_forward();
        let id = pending(&mut conn, &mut sink, 41);
        conn.refuse_forwarded(
            id,
            OpenFailureReason::CONNECT_FAILED,
            "Connection refused",
            &mut sink,
        );
        assert_eq!(sink.len(), 1, "exactly one OPEN_FAILURE, no CLOSE");
        let Message::ChannelOpenFailure(f) = decoded(&sink[0]) else {
            panic!("not an open failure");
        };
        assert_eq!(
            (f.recipient, f.reason, f.description, f.language),
            (
                41,
                OpenFailureReason::CONNECT_FAILED,
                &b"Connection refused"[..],
                &b""[..]
            )
        );
        // Freed at once for the count; the id ends with Closed like every channel.
        assert_eq!(conn.channel_count(), 0);
        assert_eq!(conn.poll_event(), Some(Event::Closed(id)));
        assert_eq!(conn.poll_event(), None);
        // Nothing more can be done with it.
        sink.clear();
        conn.refuse_forwarded(id, OpenFailureReason::CONNECT_FAILED, "again", &mut sink);
        conn.close(id, &mut sink);
        assert_eq!(
            conn.confirm_forwarded(id, &mut sink),
            Err(ConnectionError::NotPending(id))
        );
        assert!(sink.is_empty());
        assert_eq!(conn.poll_event(), None);
        // The server naming it now names a channel that does not exist.
        let data = encode(&|out| {
            ChannelData {
                recipient: id.0,
                data: b"x",
            }
            .encode(out)
        });
        assert_eq!(
            conn.handle_payload(&data, &mut sink),
            Err(ConnectionError::UnknownChannel {
                message: MessageType::CHANNEL_DATA,
                channel: id.0
            })
        );
    }

    #[test]
    fn closing_a_pending_forwarded_channel_refuses_it_without_close() {
        let (mut conn, mut sink) = with_forward();
        let id = pending(&mut conn, &mut sink, 8);
        conn.close(id, &mut sink);
        assert_eq!(sink.len(), 1, "exactly one OPEN_FAILURE, no CLOSE");
        let Message::ChannelOpenFailure(f) = decoded(&sink[0]) else {
            panic!("not an open failure: {:?}", decoded(&sink[0]));
        };
        assert_eq!(
            (f.recipient, f.reason, f.description),
            (
                8,
                OpenFailureReason::ADMINISTRATIVELY_PROHIBITED,
                &b"open failed"[..]
            )
        );
        assert_eq!(conn.poll_event(), Some(Event::Closed(id)));
        assert_eq!(conn.channel_count(), 0);
        // A second close does nothing.
        sink.clear();
        conn.close(id, &mut sink);
        assert!(sink.is_empty());
        assert_eq!(conn.poll_event(), None);
    }

    #[test]
    fn refuse_and_confirm_leave_other_channels_alone() {
        let (mut conn, mut sink) = with_forward();
        // One of ours, still opening, and one the server opened and we confirmed.
        let ours = conn
            .open_direct_tcpip("db", 5432, "127.0.0.1", 40000, &mut sink)
            .expect("our open");
        let confirmed = pending(&mut conn, &mut sink, 3);
        assert_eq!(conn.confirm_forwarded(confirmed, &mut sink), Ok(()));
        sink.clear();
        for id in [ours, confirmed, ChannelId(99)] {
            conn.refuse_forwarded(id, OpenFailureReason::CONNECT_FAILED, "no", &mut sink);
            assert_eq!(
                conn.confirm_forwarded(id, &mut sink),
                Err(ConnectionError::NotPending(id))
            );
        }
        assert!(sink.is_empty());
        assert_eq!(conn.poll_event(), None);
        assert_eq!(conn.channel_count(), 2);
        assert!(conn.is_open(confirmed));
    }

    #[test]
    fn server_messages_for_a_pending_channel_are_protocol_errors() {
        let adjust = |id: u32| {
            encode(&|out| {
                WindowAdjust {
                    recipient: id,
                    bytes: 10,
                }
                .encode(out)
            })
        };
        let confirmation = |id: u32| {
            encode(&|out| {
                ChannelOpenConfirmation {
                    recipient: id,
                    sender: 1,
                    initial_window: 1000,
                    max_packet: 500,
                }
                .encode(out)
            })
        };
        let failure = |id: u32| {
            encode(&|out| {
                ChannelOpenFailure {
                    recipient: id,
                    reason: OpenFailureReason::CONNECT_FAILED,
                    description: b"",
                    language: b"",
                }
                .encode(out)
            })
        };
        let data = |id: u32| {
            encode(&|out| {
                ChannelData {
                    recipient: id,
                    data: b"x",
                }
                .encode(out)
            })
        };
        let ext = |id: u32| {
            encode(&|out| {
                crate::msg::ExtendedData {
                    recipient: id,
                    data_type: crate::msg::ExtendedDataType::STDERR,
                    data: b"x",
                }
                .encode(out)
            })
        };
        let eof = |id: u32| encode(&|out| ChannelEof { recipient: id }.encode(out));
        let close = |id: u32| encode(&|out| ChannelClose { recipient: id }.encode(out));
        let request = |id: u32| {
            encode(&|out| {
                crate::msg::ChannelRequest {
                    recipient: id,
                    request_type: b"exit-status",
                    want_reply: true,
                    data: &[0, 0, 0, 0],
                }
                .encode(out)
            })
        };
        let not_yet =
            |message| move |channel| ConnectionError::NotYetConfirmed { message, channel };
        let open_reply =
            |message| move |channel| ConnectionError::UnexpectedOpenReply { message, channel };
        type Make<'a> = &'a dyn Fn(u32) -> Vec<u8>;
        type Want = Box<dyn Fn(u32) -> ConnectionError>;
        let cases: Vec<(Make<'_>, Want)> = vec![
            (&data, Box::new(not_yet(MessageType::CHANNEL_DATA))),
            (&ext, Box::new(not_yet(MessageType::CHANNEL_EXTENDED_DATA))),
            (
                &adjust,
                Box::new(not_yet(MessageType::CHANNEL_WINDOW_ADJUST)),
            ),
            (&eof, Box::new(not_yet(MessageType::CHANNEL_EOF))),
            (&close, Box::new(not_yet(MessageType::CHANNEL_CLOSE))),
            (&request, Box::new(not_yet(MessageType::CHANNEL_REQUEST))),
            (
                &confirmation,
                Box::new(open_reply(MessageType::CHANNEL_OPEN_CONFIRMATION)),
            ),
            (
                &failure,
                Box::new(open_reply(MessageType::CHANNEL_OPEN_FAILURE)),
            ),
        ];
        for (make, want) in cases {
            let (mut conn, mut sink) = with_forward();
            let id = pending(&mut conn, &mut sink, 12);
            let payload = make(id.0);
            assert_eq!(conn.handle_payload(&payload, &mut sink), Err(want(id.0)));
            assert!(sink.is_empty(), "replied to {:?}", decoded(&payload));
            assert_eq!(conn.poll_event(), None);
            // Failed for good: the pending channel can no longer be answered.
            assert_eq!(conn.confirm_forwarded(id, &mut sink), Err(want(id.0)));
            conn.refuse_forwarded(id, OpenFailureReason::CONNECT_FAILED, "late", &mut sink);
            conn.close(id, &mut sink);
            assert!(sink.is_empty());
        }
    }

    #[test]
    fn a_refused_forwarded_channel_id_is_reused_only_after_its_closed_event() {
        let (mut conn, mut sink) = with_forward();
        let first = pending(&mut conn, &mut sink, 1);
        conn.refuse_forwarded(first, OpenFailureReason::CONNECT_FAILED, "no", &mut sink);
        // Closed(first) is still queued: the next channel gets another id.
        assert_eq!(
            conn.handle_payload(&forwarded(2, "localhost", 40000), &mut sink),
            Ok(())
        );
        assert_eq!(conn.poll_event(), Some(Event::Closed(first)));
        let Some(Event::ForwardedOpenRequest { id: second, .. }) = conn.poll_event() else {
            panic!("no ForwardedOpenRequest");
        };
        assert_ne!(second, first);
        // Once polled, the id is free for any channel, ours too.
        let ours = conn
            .open_direct_tcpip("db", 5432, "127.0.0.1", 40000, &mut sink)
            .expect("our open");
        assert_eq!(ours, first);
        // And one closed while pending is reused by the server's next channel.
        conn.close(second, &mut sink);
        assert_eq!(conn.poll_event(), Some(Event::Closed(second)));
        assert_eq!(pending(&mut conn, &mut sink, 3), second);
    }

    #[test]
    fn a_fixed_port_forward_matches_its_address_and_port_only() {
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        assert_eq!(granted(&mut conn, &mut sink, "localhost", 8022), 8022);
        for (sender, address, port) in [(5, "localhost", 8023), (6, "0.0.0.0", 8022)] {
            assert_eq!(
                conn.handle_payload(&forwarded(sender, address, port), &mut sink),
                Ok(())
            );
            assert_eq!(
                refusal(&sink),
                (sender, OpenFailureReason::ADMINISTRATIVELY_PROHIBITED)
            );
            assert_eq!(conn.poll_event(), None);
        }
        assert_eq!(
            conn.handle_payload(&forwarded(7, "localhost", 8022), &mut sink),
            Ok(())
        );
        assert!(matches!(
            conn.poll_event(),
            Some(Event::ForwardedOpenRequest {
                listen: ForwardListen::Tcp { port: 8022, .. },
                ..
            })
        ));
    }

    #[test]
    fn pending_forwarded_channels_count_against_the_limit_until_answered() {
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        assert_eq!(granted(&mut conn, &mut sink, "localhost", 8022), 8022);
        // Our own channels do not count against it.
        conn.open_direct_tcpip("db", 5432, "127.0.0.1", 40000, &mut sink)
            .expect("our open");
        sink.clear();
        let mut opened = Vec::new();
        for sender in 0..MAX_SERVER_CHANNELS as u32 {
            assert_eq!(
                conn.handle_payload(&forwarded(sender, "localhost", 8022), &mut sink),
                Ok(())
            );
            match conn.poll_event() {
                Some(Event::ForwardedOpenRequest { id, .. }) => opened.push((sender, id)),
                other => panic!("open {sender}: {other:?}"),
            }
        }
        // All pending: none was confirmed, so none was granted a window.
        assert!(sink.is_empty());
        let over = MAX_SERVER_CHANNELS as u32;
        let refused_for_shortage = |conn: &mut Connection, sink: &mut Vec<Vec<u8>>, n: u32| {
            sink.clear();
            assert_eq!(
                conn.handle_payload(&forwarded(n, "localhost", 8022), sink),
                Ok(())
            );
            assert_eq!(refusal(sink), (n, OpenFailureReason::RESOURCE_SHORTAGE));
            assert_eq!(conn.poll_event(), None);
            assert_eq!(conn.error(), None);
        };
        refused_for_shortage(&mut conn, &mut sink, over);
        // Confirming one does not make room: it still counts.
        let (_, confirmed) = opened[0];
        assert_eq!(conn.confirm_forwarded(confirmed, &mut sink), Ok(()));
        refused_for_shortage(&mut conn, &mut sink, over);
        // Refusing one does, at once (before its Closed is polled).
        let (_, refused) = opened[1];
        conn.refuse_forwarded(refused, OpenFailureReason::CONNECT_FAILED, "no", &mut sink);
        assert_eq!(
            conn.handle_payload(&forwarded(over, "localhost", 8022), &mut sink),
            Ok(())
        );
        assert_eq!(conn.poll_event(), Some(Event::Closed(refused)));
        assert!(matches!(
            conn.poll_event(),
            Some(Event::ForwardedOpenRequest { .. })
        ));
        refused_for_shortage(&mut conn, &mut sink, over + 1);
        // So does a confirmed one closing both ways.
        conn.close(confirmed, &mut sink);
        let close = encode(&|out| {
            ChannelClose {
                recipient: confirmed.0,
            }
            .encode(out)
        });
        assert_eq!(conn.handle_payload(&close, &mut sink), Ok(()));
        assert_eq!(conn.poll_event(), Some(Event::Closed(confirmed)));
        assert_eq!(
            conn.handle_payload(&forwarded(over + 2, "localhost", 8022), &mut sink),
            Ok(())
        );
        assert!(matches!(
            conn.poll_event(),
            Some(Event::ForwardedOpenRequest { .. })
        ));
        refused_for_shortage(&mut conn, &mut sink, over + 3);
        // Ours, still opening, and the server's at the limit.
        assert_eq!(conn.channel_count(), MAX_SERVER_CHANNELS + 1);
    }

    #[test]
    fn forwarded_channels_we_did_not_ask_for_or_were_refused_are_refused() {
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        // Never asked for.
        assert_eq!(
            conn.handle_payload(&forwarded(3, "localhost", 8022), &mut sink),
            Ok(())
        );
        assert_eq!(
            refusal(&sink),
            (3, OpenFailureReason::ADMINISTRATIVELY_PROHIBITED)
        );
        // Asked for, but the server said no.
        conn.request_tcpip_forward("localhost", 8022, &mut sink);
        assert_eq!(conn.handle_payload(&[82], &mut sink), Ok(()));
        assert_eq!(
            conn.poll_event(),
            Some(Event::ForwardRefused {
                listen: ForwardListen::tcp("localhost", 8022)
            })
        );
        assert_eq!(
            conn.handle_payload(&forwarded(4, "localhost", 8022), &mut sink),
            Ok(())
        );
        assert_eq!(
            refusal(&sink),
            (4, OpenFailureReason::ADMINISTRATIVELY_PROHIBITED)
        );
        // Asked for and not answered yet.
        conn.request_tcpip_forward("localhost", 9000, &mut sink);
        assert_eq!(
            conn.handle_payload(&forwarded(5, "localhost", 9000), &mut sink),
            Ok(())
        );
        assert_eq!(refusal(&sink).0, 5);
        assert_eq!(conn.poll_event(), None);
        assert_eq!(conn.channel_count(), 0);
    }

    #[test]
    fn other_channel_types_are_refused_even_with_forwards_granted() {
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        granted(&mut conn, &mut sink, "localhost", 8022);
        let kinds: [&[u8]; 4] = [
            b"session",
            b"x11",
            b"auth-agent@openssh.com",
            b"direct-tcpip",
        ];
        for (n, kind) in (10..).zip(kinds) {
            let payload = if kind == b"direct-tcpip" {
                open(
                    n,
                    OpenKind::DirectTcpip(TcpipEndpoints {
                        address: b"localhost",
                        port: 8022,
                        originator_address: b"::1",
                        originator_port: 1,
                    }),
                )
            } else {
                open(
                    n,
                    OpenKind::Other {
                        channel_type: kind,
                        data: b"",
                    },
                )
            };
            assert_eq!(conn.handle_payload(&payload, &mut sink), Ok(()));
            assert_eq!(
                refusal(&sink),
                (n, OpenFailureReason::ADMINISTRATIVELY_PROHIBITED)
            );
        }
        assert_eq!(conn.poll_event(), None);
        assert_eq!(conn.channel_count(), 0);
    }

    #[test]
    fn replies_answer_the_oldest_request_with_keepalives_interleaved() {
        let mut conn = Connection::new(Config::default());
        let mut sink: Vec<Vec<u8>> = Vec::new();
        conn.send_keepalive(&mut sink);
        conn.request_tcpip_forward("localhost", 0, &mut sink);
        conn.send_keepalive(&mut sink);
        conn.request_tcpip_forward("", 2222, &mut sink);
        conn.send_keepalive(&mut sink);
        assert_eq!(conn.outstanding_keepalives(), 3);
        // Keepalives are answered with failure by OpenSSH; the first forward gets port 41000.
        for reply in [
            vec![82],
            success(Some(41000)),
            vec![82],
            vec![82],
            success(None),
        ] {
            assert_eq!(conn.handle_payload(&reply, &mut sink), Ok(()));
        }
        let events: Vec<Event> = std::iter::from_fn(|| conn.poll_event()).collect();
        assert_eq!(
            events,
            vec![
                Event::KeepaliveReply,
                Event::ForwardGranted {
                    listen: ForwardListen::tcp("localhost", 0),
                    bound_port: 41000
                },
                Event::KeepaliveReply,
                Event::ForwardRefused {
                    listen: ForwardListen::tcp("", 2222)
                },
                Event::KeepaliveReply,
            ]
        );
        assert_eq!(conn.outstanding_keepalives(), 0);
        assert_eq!(
            conn.handle_payload(&[81], &mut sink),
            Err(ConnectionError::UnexpectedRequestReply {
                message: MessageType::REQUEST_SUCCESS
            })
        );
    }
}
