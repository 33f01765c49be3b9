//! The connection protocol: the message decoder and the `Connection` channel table.
//!
//! Input: `setup, operations`. `setup & 1` picks a small window and packet size (so limits are
//! reached with small inputs) over the defaults; `(setup >> 1) & 3` channels are opened
//! first. Each operation is one byte and its arguments: a server payload (`u16` length and
//! bytes) through `handle_payload`, or one of `consume`, `send_data` (or `send_data_from`),
//! `send_eof`, `close`, `send_keepalive` (with the high bit `prove_host_keys` of the keys the
//! server listed), `open_direct_tcpip`, draining `poll_event`,
//! `request_tcpip_forward` (of [`FORWARD_ADDRESS`]:[`FORWARD_PORT`], so that the server's
//! `forwarded-tcpip` opens can be granted; with the high bit `request_streamlocal_forward` of
//! [`FORWARD_PATH`]), `confirm_forwarded` or `refuse_forwarded`.
//!
//! Beside a decoder round trip for every payload, a small model follows what the server sent
//! and checks the table against it: `received` holds exactly the accepted data not yet
//! consumed; no channel ends while it still holds data; ids end with exactly one
//! `Closed`/`OpenFailed` and are reused only after it; nothing is sent on a channel after our
//! EOF or CLOSE, nor before it is confirmed, nor beyond the window; every payload we send
//! decodes; errors are sticky. A channel the server opens is pending until we answer: nothing
//! is sent for it until then, the server may send nothing on it, our answer is exactly one
//! OPEN_CONFIRMATION (confirm) or OPEN_FAILURE (refuse, or close while pending, never a
//! CLOSE), and only a pending channel can be answered. The server's host key list comes as
//! one event at most, within its bound; each proof answer matches a proof asked for, with
//! one signature per key.

use std::collections::HashMap;

use ssh_connection::{
    ChannelId, Config, Connection, ConnectionError, Event, ForwardListen, MAX_OUTGOING_DATA,
    Message, OpenFailureReason, decode,
};

use crate::input::Input;

/// Operations per input, so one input costs bounded time.
const MAX_OPS: usize = 512;

/// The remote forward the harness asks for: the server's `forwarded-tcpip` opens name it.
pub const FORWARD_ADDRESS: &str = "localhost";
/// Its port.
pub const FORWARD_PORT: u32 = 8022;
/// The Unix socket forward the harness asks for: the server's `forwarded-streamlocal` opens
/// name it.
pub const FORWARD_PATH: &str = "/run/fwd.sock";

/// What the harness knows about one of our channel ids.
#[derive(Debug, Default, Clone)]
struct Model {
    /// Opened and its `Closed`/`OpenFailed` not yet polled.
    live: bool,
    confirmed: bool,
    remote_id: u32,
    /// `send_eof` or `close` was called.
    done_sending: bool,
    local_closed: bool,
    /// Accepted CHANNEL_DATA not yet consumed.
    received: Vec<u8>,
    /// The server opened it and we have not answered yet.
    pending: bool,
}

struct Harness {
    conn: Connection,
    sink: Vec<Vec<u8>>,
    channels: HashMap<u32, Model>,
    keepalives_sent: u32,
    forwards_requested: u32,
    forward_answers: u32,
    /// The keys of the server's host key list, once it came; proofs asked for and answered.
    host_keys: Option<Vec<Vec<u8>>>,
    proofs_asked: Vec<usize>,
    proofs_answered: usize,
    /// The server's numbers of the opens that became pending, in order, until their
    /// `ForwardedOpenRequest` is polled.
    pending_opens: std::collections::VecDeque<u32>,
    report: Report,
}

/// What a run did, so tests can tell that the seeds reach what they are meant to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// CHANNEL_DATA bytes accepted into channel buffers.
    pub data_accepted: usize,
    /// `Closed` events polled.
    pub closed: usize,
    /// `OpenFailed` events polled.
    pub open_failed: usize,
    /// Keepalive replies polled.
    pub keepalive_replies: u32,
    /// The connection refused a payload (and stayed failed).
    pub failed: bool,
    /// `ForwardedOpenRequest` events polled.
    pub forwarded_requests: usize,
    /// Pending channels confirmed.
    pub forwarded_confirmed: usize,
    /// Pending channels refused (by `refuse_forwarded` or `close`).
    pub forwarded_refused: usize,
    /// Keys in the server's host key list.
    pub host_keys: usize,
    /// Proofs of host keys answered with signatures.
    pub proofs: usize,
}

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    drive(data);
}

/// The harness, returning what happened.
pub fn drive(data: &[u8]) -> Report {
    let mut input = Input::new(data);
    let Some(setup) = input.byte() else {
        return Report::default();
    };
    let config = if setup & 1 != 0 {
        Config {
            initial_window: 4096,
            max_packet: 1024,
        }
    } else {
        Config::default()
    };
    let mut h = Harness {
        conn: Connection::new(config),
        sink: Vec::new(),
        channels: HashMap::new(),
        keepalives_sent: 0,
        forwards_requested: 0,
        forward_answers: 0,
        host_keys: None,
        proofs_asked: Vec::new(),
        proofs_answered: 0,
        pending_opens: std::collections::VecDeque::new(),
        report: Report::default(),
    };
    for _ in 0..(setup >> 1) & 3 {
        h.open(setup & 0x80 != 0);
    }
    for _ in 0..MAX_OPS {
        let Some(op) = input.byte() else { break };
        match op % 16 {
            0 => {
                let payload = input.payload().unwrap_or_default();
                if !h.handle(payload) {
                    h.check_sent();
                    // Errors are sticky: the next payload must get the same one.
                    let again = input.payload().unwrap_or_default();
                    let first = h.conn.error().cloned();
                    assert!(first.is_some(), "handle_payload failed but error() is None");
                    assert_eq!(h.conn.handle_payload(again, &mut h.sink).err(), first);
                    assert!(h.sink.is_empty(), "a failed connection sent something");
                    h.report.failed = true;
                    return h.report;
                }
            }
            1 => {
                let id = channel_id(&mut input);
                let n = usize::from(input.u16().unwrap_or(0));
                h.conn.consume(id, n, &mut h.sink);
                if let Some(m) = h.channels.get_mut(&id.0) {
                    let n = n.min(m.received.len());
                    m.received.drain(..n);
                }
            }
            2 => {
                let id = channel_id(&mut input);
                let n = usize::from(input.u16().unwrap_or(0));
                // The high bit sends through `send_data_from` (a read into the packets).
                h.send_data(id, n, op & 0x80 != 0);
            }
            3 => {
                let id = channel_id(&mut input);
                h.conn.send_eof(id, &mut h.sink);
                if let Some(m) = h.channels.get_mut(&id.0).filter(|m| m.live) {
                    m.done_sending = true;
                }
            }
            4 => {
                let id = channel_id(&mut input);
                h.conn.close(id, &mut h.sink);
                if let Some(m) = h.channels.get_mut(&id.0).filter(|m| m.live) {
                    if m.pending {
                        // Refused, never closed: the server never saw it open.
                        m.pending = false;
                        h.report.forwarded_refused += 1;
                        let remote = m.remote_id;
                        expect_refusal(&h.sink, remote, None);
                    }
                    m.done_sending = true;
                    m.local_closed = true;
                    m.received.clear();
                }
            }
            5 if op & 0x80 != 0 => {
                // Ask for the proof of the host keys listed so far (none: nothing is sent).
                let keys = h.host_keys.clone().unwrap_or_default();
                let before = h.sink.len();
                h.conn.prove_host_keys(&keys, &mut h.sink);
                if h.sink.len() > before {
                    h.proofs_asked.push(keys.len());
                }
            }
            5 => {
                h.conn.send_keepalive(&mut h.sink);
                h.keepalives_sent += 1;
            }
            // The high bit opens a channel to a Unix socket.
            6 => h.open(op & 0x80 != 0),
            // The high bit asks for the Unix socket forward.
            8 => {
                if op & 0x80 != 0 {
                    h.conn
                        .request_streamlocal_forward(FORWARD_PATH, &mut h.sink);
                } else {
                    h.conn
                        .request_tcpip_forward(FORWARD_ADDRESS, FORWARD_PORT, &mut h.sink);
                }
                h.forwards_requested += 1;
            }
            9 => {
                let id = channel_id(&mut input);
                h.confirm(id);
            }
            10 => {
                let id = channel_id(&mut input);
                let reason = OpenFailureReason(u32::from(input.byte().unwrap_or(2) % 5));
                h.refuse(id, reason);
            }
            _ => h.poll(),
        }
        h.check_sent();
        h.check_buffers();
    }
    h.poll();
    h.report
}

/// Asserts that `sent` is exactly one OPEN_FAILURE to the server's channel `recipient` (with
/// `reason`, if given), and no CLOSE.
fn expect_refusal(sent: &[Vec<u8>], recipient: u32, reason: Option<OpenFailureReason>) {
    assert_eq!(sent.len(), 1, "not exactly one reply: {sent:?}");
    match sent.first().map(|p| decode(p)) {
        Some(Ok(Message::ChannelOpenFailure(f))) => {
            assert_eq!(f.recipient, recipient, "refused the wrong channel");
            if let Some(reason) = reason {
                assert_eq!(f.reason, reason);
            }
        }
        other => panic!("expected one OPEN_FAILURE, got {other:?}"),
    }
}

/// A channel id from the input: small ones name channels we opened, 255 one never used.
fn channel_id(input: &mut Input<'_>) -> ChannelId {
    match input.byte().unwrap_or(0) {
        0xff => ChannelId(u32::MAX),
        b => ChannelId(u32::from(b % 8)),
    }
}

impl Harness {
    /// Opens a `direct-tcpip` channel, or a `direct-streamlocal@openssh.com` one.
    fn open(&mut self, streamlocal: bool) {
        let opened = if streamlocal {
            self.conn
                .open_direct_streamlocal("/run/pg/.s.PGSQL.5432", &mut self.sink)
        } else {
            self.conn
                .open_direct_tcpip("db.internal", 5432, "127.0.0.1", 50000, &mut self.sink)
        };
        let Ok(id) = opened else {
            return;
        };
        let m = self.channels.entry(id.0).or_default();
        assert!(!m.live, "{id:?} handed out again before its end was polled");
        *m = Model {
            live: true,
            ..Model::default()
        };
        self.check_sent();
    }

    /// Returns `false` if the connection refused the payload.
    fn handle(&mut self, payload: &[u8]) -> bool {
        let decoded = decode(payload);
        if let Ok(msg) = &decoded {
            let mut wire = Vec::new();
            msg.encode(&mut wire);
            match decode(&wire) {
                Ok(again) => assert_eq!(&again, msg, "decode(encode(m)) != m"),
                Err(e) => panic!("{msg:?} encodes to bytes that do not decode: {e}"),
            }
            assert_eq!(wire.first(), Some(&msg.message_type().0));
        }
        let result = self.conn.handle_payload(payload, &mut self.sink);
        if let Err(e) = &result {
            assert_eq!(self.conn.error(), Some(e), "error() disagrees");
            return false;
        }
        let Ok(msg) = decoded else {
            panic!("handle_payload accepted a payload that does not decode");
        };
        if let Message::ChannelOpen(o) = &msg {
            // Either refused at once (one OPEN_FAILURE to its sender) or pending (nothing
            // sent, a ForwardedOpenRequest queued).
            if self.sink.is_empty() {
                self.pending_opens.push_back(o.sender);
                // Its id is only known from the event, and the connection takes it as
                // pending at once: polled now, so the model knows what the fuzzer may name.
                self.poll_until(true);
            } else {
                assert_eq!(self.sink.len(), 1, "more than one reply to CHANNEL_OPEN");
                expect_refusal(&self.sink, o.sender, None);
            }
        }
        match msg {
            Message::Data(d) => {
                let m = self.channels.get_mut(&d.recipient);
                let Some(m) = m.filter(|m| m.live && m.confirmed) else {
                    panic!("data accepted on channel {} that is not open", d.recipient);
                };
                if !m.local_closed {
                    m.received.extend_from_slice(d.data);
                    self.report.data_accepted += d.data.len();
                }
            }
            Message::ChannelOpenConfirmation(c) => {
                let m = self.channels.get_mut(&c.recipient);
                let Some(m) = m.filter(|m| m.live && !m.confirmed && !m.pending) else {
                    panic!("confirmation accepted for channel {}", c.recipient);
                };
                m.confirmed = true;
                m.remote_id = c.sender;
            }
            _ => {}
        }
        true
    }

    /// `confirm_forwarded`: only a pending channel is confirmed, with exactly one
    /// OPEN_CONFIRMATION naming the server's number and ours (and the EOF asked for while it
    /// was pending).
    fn confirm(&mut self, id: ChannelId) {
        let result = self.conn.confirm_forwarded(id, &mut self.sink);
        let Some(m) = self.channels.get_mut(&id.0).filter(|m| m.live && m.pending) else {
            assert_eq!(result, Err(ConnectionError::NotPending(id)));
            assert!(self.sink.is_empty(), "sent for a channel not pending");
            return;
        };
        assert_eq!(result, Ok(()));
        let Some(Ok(Message::ChannelOpenConfirmation(c))) = self.sink.first().map(|p| decode(p))
        else {
            panic!("confirm_forwarded sent {:?}", self.sink.first());
        };
        assert_eq!((c.recipient, c.sender), (m.remote_id, id.0));
        assert_eq!(c.initial_window, self.conn.config().initial_window);
        assert_eq!(c.max_packet, self.conn.config().max_packet);
        let eof = self.sink.get(1).map(|p| decode(p));
        match (m.done_sending, eof) {
            (false, None) => {}
            (true, Some(Ok(Message::Eof(e)))) if e.recipient == m.remote_id => {}
            other => panic!("after the confirmation: {other:?}"),
        }
        assert!(
            self.sink.len() <= 2,
            "more than the confirmation and an EOF"
        );
        m.pending = false;
        m.confirmed = true;
        self.report.forwarded_confirmed += 1;
    }

    /// `refuse_forwarded`: only a pending channel is refused, with exactly one OPEN_FAILURE.
    fn refuse(&mut self, id: ChannelId, reason: OpenFailureReason) {
        self.conn
            .refuse_forwarded(id, reason, "connect failed", &mut self.sink);
        let Some(m) = self.channels.get_mut(&id.0).filter(|m| m.live && m.pending) else {
            assert!(self.sink.is_empty(), "sent for a channel not pending");
            return;
        };
        expect_refusal(&self.sink, m.remote_id, Some(reason));
        m.pending = false;
        m.done_sending = true;
        self.report.forwarded_refused += 1;
    }

    fn send_data(&mut self, id: ChannelId, n: usize, via_read: bool) {
        let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let capacity = self.conn.send_capacity(id);
        let before = self.sink.len();
        let taken = if via_read {
            let mut read = 0;
            let sent = self
                .conn
                .send_data_from(id, n, &mut self.sink, &mut |slices| {
                    for s in slices.iter_mut() {
                        let k = s.len().min(n - read);
                        s[..k].copy_from_slice(&data[read..read + k]);
                        read += k;
                    }
                    read
                });
            match sent {
                Ok(Some(t)) => {
                    assert_eq!(t, read, "sent {t} of the {read} bytes read");
                    t
                }
                Ok(None) => {
                    assert_eq!(read, 0, "read {read} bytes and sent none");
                    0
                }
                Err(_) => return,
            }
        } else {
            let Ok(taken) = self.conn.send_data(id, &data, &mut self.sink) else {
                return;
            };
            taken
        };
        assert!(
            taken <= n && taken <= capacity,
            "took {taken} of {n} with capacity {capacity}"
        );
        let model = self.channels.get(&id.0).cloned().unwrap_or_default();
        if !model.confirmed || model.pending || model.done_sending || !model.live {
            assert_eq!(taken, 0, "data sent on {id:?} in state {model:?}");
        }
        let mut sent = Vec::new();
        for payload in self.sink.get(before..).unwrap_or_default() {
            let Ok(Message::Data(d)) = decode(payload) else {
                panic!("send_data sent something other than CHANNEL_DATA: {payload:?}");
            };
            assert_eq!(
                d.recipient, model.remote_id,
                "data sent to the wrong channel"
            );
            assert!(!d.data.is_empty() && d.data.len() <= MAX_OUTGOING_DATA as usize);
            sent.extend_from_slice(d.data);
        }
        assert_eq!(
            sent,
            data.get(..taken).unwrap_or_default(),
            "bytes sent differ from bytes taken"
        );
    }

    fn poll(&mut self) {
        self.poll_until(false);
    }

    /// Polls every event, or only up to the first `ForwardedOpenRequest` when `open_request`.
    fn poll_until(&mut self, open_request: bool) {
        while let Some(event) = self.conn.poll_event() {
            let id = match &event {
                Event::KeepaliveReply => {
                    self.report.keepalive_replies += 1;
                    assert!(
                        self.report.keepalive_replies <= self.keepalives_sent,
                        "unasked keepalive reply"
                    );
                    continue;
                }
                Event::Unimplemented(n) => {
                    assert!((80..=127).contains(&n.0), "Unimplemented({n:?})");
                    continue;
                }
                Event::HostKeys(keys) => {
                    assert!(self.host_keys.is_none(), "a second host key list");
                    assert!(keys.len() <= ssh_connection::MAX_HOST_KEYS);
                    self.host_keys = Some(keys.clone());
                    self.report.host_keys = keys.len();
                    continue;
                }
                Event::HostKeysProof(proof) => {
                    let asked = self.proofs_asked.get(self.proofs_answered).copied();
                    self.proofs_answered += 1;
                    let Some(asked) = asked else {
                        panic!("{event:?} with no proof asked for");
                    };
                    if let Some(sigs) = proof {
                        assert_eq!(sigs.len(), asked, "one signature per key asked about");
                        self.report.proofs += 1;
                    }
                    continue;
                }
                Event::ForwardGranted { .. } | Event::ForwardRefused { .. } => {
                    self.forward_answers += 1;
                    assert!(
                        self.forward_answers <= self.forwards_requested,
                        "{event:?} without a tcpip-forward request"
                    );
                    continue;
                }
                Event::ForwardedOpenRequest { id, listen, .. } => {
                    assert!(
                        *listen == ForwardListen::tcp(FORWARD_ADDRESS, FORWARD_PORT)
                            || *listen == ForwardListen::unix(FORWARD_PATH),
                        "a channel for a forward never asked for: {listen:?}"
                    );
                    let Some(sender) = self.pending_opens.pop_front() else {
                        panic!("{event:?} for no open that was left pending");
                    };
                    let m = self.channels.entry(id.0).or_default();
                    assert!(!m.live, "{id:?} handed out again before its end was polled");
                    *m = Model {
                        live: true,
                        pending: true,
                        remote_id: sender,
                        ..Model::default()
                    };
                    self.report.forwarded_requests += 1;
                    if open_request {
                        return;
                    }
                    continue;
                }
                Event::Opened(id)
                | Event::OpenFailed { id, .. }
                | Event::Data(id)
                | Event::Eof(id)
                | Event::Closed(id)
                | Event::SendCapacity(id) => *id,
            };
            let Some(m) = self.channels.get_mut(&id.0).filter(|m| m.live) else {
                panic!("{event:?} for a channel that is not open");
            };
            match &event {
                Event::Closed(_) | Event::OpenFailed { .. } => {
                    if matches!(event, Event::Closed(_)) {
                        self.report.closed += 1;
                    } else {
                        self.report.open_failed += 1;
                    }
                    assert!(
                        m.received.is_empty(),
                        "{event:?} while {} bytes were unread",
                        m.received.len()
                    );
                    m.live = false;
                }
                Event::Opened(_) => assert!(m.confirmed),
                _ => {}
            }
        }
    }

    /// Everything sent must decode, and stay within what a server accepts.
    fn check_sent(&mut self) {
        for payload in self.sink.drain(..) {
            match decode(&payload) {
                Ok(Message::Data(d)) => assert!(d.data.len() <= MAX_OUTGOING_DATA as usize),
                Ok(_) => {}
                Err(e) => {
                    panic!("the connection sent a payload that does not decode ({e}): {payload:?}")
                }
            }
        }
    }

    fn check_buffers(&self) {
        let window = self.conn.config().initial_window as usize;
        for (&id, m) in &self.channels {
            let got = self.conn.received(ChannelId(id));
            assert!(
                got.len() <= window,
                "{} bytes buffered, window {window}",
                got.len()
            );
            if m.live {
                assert_eq!(
                    got,
                    &m.received[..],
                    "received({id}) differs from the data accepted"
                );
            }
        }
    }
}

/// Seeds that reach what the generic ones do not: remote forwards, and the server's
/// `forwarded-tcpip` opens confirmed, refused and closed while pending.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use ssh_connection::msg::{
        ChannelData, ChannelOpen, ConnectionMessage, OpenKind, RequestSuccess, TcpipEndpoints,
    };
    fn msg<'a, M: ConnectionMessage<'a>>(m: M) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode(&mut out);
        out
    }
    let forwarded = |sender: u32| {
        msg(ChannelOpen {
            sender,
            initial_window: 4096,
            max_packet: 512,
            kind: OpenKind::ForwardedTcpip(TcpipEndpoints {
                address: FORWARD_ADDRESS.as_bytes(),
                port: FORWARD_PORT,
                originator_address: b"192.0.2.7",
                originator_port: 50123,
            }),
        })
    };
    let mut ops = vec![0u8]; // the default window, no channels opened first
    let server = |ops: &mut Vec<u8>, payload: &[u8]| {
        ops.push(0);
        crate::input::put_payload(ops, payload);
    };
    // Ask for the forward; the server grants it and opens three channels: 0, 1, 2.
    ops.push(8);
    server(&mut ops, &msg(RequestSuccess { data: b"" }));
    ops.push(7);
    for sender in [50, 51, 52] {
        server(&mut ops, &forwarded(sender));
    }
    ops.push(7);
    // Nothing may be sent on a pending channel; its EOF waits for the confirmation.
    ops.extend_from_slice(&[2, 0, 0, 10, 3, 0]);
    // Confirm 0 (then data comes on it), refuse 1, close 2 while pending.
    ops.extend_from_slice(&[9, 0]);
    server(
        &mut ops,
        &msg(ChannelData {
            recipient: 0,
            data: b"abc",
        }),
    );
    ops.extend_from_slice(&[10, 1, 2, 4, 2, 7]);
    // Another open takes a freed id; both freed ids are confirmed, one of them is pending.
    server(&mut ops, &forwarded(53));
    ops.extend_from_slice(&[7, 9, 1, 9, 2, 7]);
    // A forward from a Unix socket on the server: granted, then one open for its path
    // (confirmed, with data) and one for another path (refused at once).
    let mut from_socket = vec![0u8, 0x88];
    server(&mut from_socket, &msg(RequestSuccess { data: b"" }));
    from_socket.push(7);
    let streamlocal = |sender: u32, path: &str| {
        msg(ChannelOpen {
            sender,
            initial_window: 4096,
            max_packet: 512,
            kind: OpenKind::ForwardedStreamlocal {
                path: path.as_bytes(),
            },
        })
    };
    server(&mut from_socket, &streamlocal(60, FORWARD_PATH));
    from_socket.extend_from_slice(&[7, 9, 0]);
    server(
        &mut from_socket,
        &msg(ChannelData {
            recipient: 0,
            data: b"sock",
        }),
    );
    server(&mut from_socket, &streamlocal(61, "/run/other.sock"));
    from_socket.push(7);

    // A channel to a Unix socket (set up first: the high bit and one open), confirmed, with
    // data both ways, then a second one the server refuses.
    let mut local = vec![0x82u8];
    server(
        &mut local,
        &msg(ssh_connection::msg::ChannelOpenConfirmation {
            recipient: 0,
            sender: 70,
            initial_window: 4096,
            max_packet: 1024,
        }),
    );
    server(
        &mut local,
        &msg(ChannelData {
            recipient: 0,
            data: b"pg!",
        }),
    );
    local.extend_from_slice(&[7, 2, 0, 0, 5, 0x86]);
    server(
        &mut local,
        &msg(ssh_connection::msg::ChannelOpenFailure {
            recipient: 1,
            reason: ssh_connection::OpenFailureReason::CONNECT_FAILED,
            description: b"open failed",
            language: b"",
        }),
    );
    local.push(7);

    // The server lists two host keys after the login; both are asked about and proven.
    let strings = |items: &[&[u8]]| -> Vec<u8> {
        let mut out = Vec::new();
        for i in items {
            out.extend_from_slice(&u32::try_from(i.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(i);
        }
        out
    };
    let mut host_keys = vec![0u8];
    let list = strings(&[b"host key one", b"host key two"]);
    server(
        &mut host_keys,
        &msg(ssh_connection::msg::GlobalRequest {
            name: b"hostkeys-00@openssh.com",
            want_reply: false,
            data: &list,
        }),
    );
    host_keys.extend_from_slice(&[7, 0x85]);
    let sigs = strings(&[b"signature one", b"signature two"]);
    server(&mut host_keys, &msg(RequestSuccess { data: &sigs }));
    host_keys.push(7);
    vec![
        ("conn-forwarded".to_owned(), ops),
        ("conn-streamlocal".to_owned(), local),
        ("conn-forwarded-streamlocal".to_owned(), from_socket),
        ("conn-host-keys".to_owned(), host_keys),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_seed_confirms_refuses_and_closes_pending_channels() {
        let r = report("conn-forwarded");
        assert!(!r.failed, "{r:?}");
        assert_eq!(r.forwarded_requests, 4, "{r:?}");
        assert_eq!(r.forwarded_confirmed, 2, "{r:?}");
        assert_eq!(r.forwarded_refused, 2, "{r:?}");
        assert_eq!(r.closed, 2, "the refused and the closed one: {r:?}");
        assert_eq!(r.data_accepted, 3, "{r:?}");
    }

    #[test]
    fn host_keys_seed_lists_keys_and_proves_them() {
        let r = report("conn-host-keys");
        assert!(!r.failed, "{r:?}");
        assert_eq!((r.host_keys, r.proofs), (2, 1), "{r:?}");
    }

    #[test]
    fn forwarded_streamlocal_seed_confirms_its_path_and_refuses_another() {
        let r = report("conn-forwarded-streamlocal");
        assert!(!r.failed, "{r:?}");
        assert_eq!(r.forwarded_requests, 1, "{r:?}");
        assert_eq!(r.forwarded_confirmed, 1, "{r:?}");
        assert_eq!(r.data_accepted, 4, "{r:?}");
    }

    #[test]
    fn streamlocal_seed_opens_socket_channels_and_moves_data() {
        let r = report("conn-streamlocal");
        assert!(!r.failed, "{r:?}");
        assert_eq!(r.data_accepted, 3, "{r:?}");
        assert_eq!(r.open_failed, 1, "{r:?}");
    }

    /// Data for a pending channel is the server's protocol error, and the harness sees the
    /// connection refuse it.
    #[test]
    fn data_on_a_pending_channel_fails_the_connection() {
        let mut data = seeds().remove(0).1;
        // Cut after the three opens and the poll (the first 2-byte op ends that part).
        let cut = data
            .windows(4)
            .position(|w| w == [2, 0, 0, 10])
            .expect("the send op");
        data.truncate(cut);
        let mut payload = Vec::new();
        ssh_connection::msg::ConnectionMessage::encode(
            &ssh_connection::msg::ChannelData {
                recipient: 1,
                data: b"early",
            },
            &mut payload,
        );
        data.push(0);
        crate::input::put_payload(&mut data, &payload);
        let r = drive(&data);
        assert!(r.failed, "{r:?}");
        assert_eq!((r.forwarded_requests, r.data_accepted), (3, 0), "{r:?}");
    }

    fn report(name: &str) -> Report {
        let seeds = crate::seeds::all();
        match seeds
            .iter()
            .find(|s| s.target == "connection_messages" && s.name == name)
        {
            Some(seed) => drive(&seed.data),
            None => panic!("no seed {name}"),
        }
    }

    #[test]
    fn lifecycle_seed_moves_data_and_closes_a_channel() {
        let r = report("conn-lifecycle");
        assert!(!r.failed, "{r:?}");
        assert_eq!(r.data_accepted, 6);
        assert_eq!(r.closed, 1);
    }

    #[test]
    fn refusals_seed_refuses_an_open_and_answers_a_keepalive() {
        let r = report("conn-refusals");
        assert!(!r.failed, "{r:?}");
        assert_eq!((r.open_failed, r.keepalive_replies), (1, 1));
    }

    #[test]
    fn window_seed_overruns_the_window_and_fails() {
        let r = report("conn-window");
        assert!(r.failed, "{r:?}");
        assert_eq!(r.data_accepted, 4096, "exactly the window is accepted");
    }
}
