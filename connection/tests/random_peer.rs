//! Random servers: arbitrary payloads, and random sessions in which a modelled server mostly
//! follows the protocol (and now and then does not) while a random driver opens, sends,
//! consumes and closes. Nothing may panic, and the connection's promises must hold throughout:
//! it never errors on a well-behaved server, never overruns the server's window or packet size,
//! never buffers more than its own window, never reports an ended id, and every channel ends.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use ssh_connection::msg::{
    ChannelClose, ChannelData, ChannelEof, ChannelOpenConfirmation, ChannelOpenFailure,
    ChannelRequest, ConnectionMessage, ExtendedData, GlobalRequest, RequestFailure, RequestSuccess,
    WindowAdjust,
};
use ssh_connection::{
    ChannelId, Config, Connection, ConnectionError, Event, ExtendedDataType, MAX_OUTGOING_DATA,
    Message, OpenFailureReason, decode,
};

const CONFIG: Config = Config {
    initial_window: 100,
    max_packet: 40,
};

fn enc<'a, M: ConnectionMessage<'a>>(m: M) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut v);
    v
}

/// What the server does, legally, to the channel `pick` selects among those it applies to.
#[derive(Clone, Copy, Debug)]
enum Legal {
    Confirm { window: u32, max_packet: u32 },
    Refuse,
    Data(usize),
    Ext(usize),
    Adjust(u32),
    Eof,
    Close,
    ChannelRequest(bool),
    GlobalRequest(bool),
    KeepaliveReply(bool),
}

#[derive(Clone, Debug)]
enum Op {
    Open,
    Send(usize, usize),
    SendEof(usize),
    Close(usize),
    Consume(usize, usize),
    Keepalive,
    Poll,
    Server(Legal, usize),
    /// A message that may well break the protocol: any well-formed message to any small
    /// channel number, or random bytes.
    Hostile(Vec<u8>),
}

fn legal() -> impl Strategy<Value = Legal> {
    prop_oneof![
        3 => (0u32..300, prop_oneof![1u32..60, Just(u32::MAX)])
            .prop_map(|(window, max_packet)| Legal::Confirm { window, max_packet }),
        1 => Just(Legal::Refuse),
        6 => (0usize..60).prop_map(Legal::Data),
        1 => (0usize..60).prop_map(Legal::Ext),
        3 => (0u32..200).prop_map(Legal::Adjust),
        1 => Just(Legal::Eof),
        1 => Just(Legal::Close),
        1 => any::<bool>().prop_map(Legal::ChannelRequest),
        1 => any::<bool>().prop_map(Legal::GlobalRequest),
        1 => any::<bool>().prop_map(Legal::KeepaliveReply),
    ]
}

fn hostile() -> impl Strategy<Value = Vec<u8>> {
    let ch = 0u32..4;
    prop_oneof![
        (ch.clone(), 0usize..200).prop_map(|(c, n)| enc(ChannelData {
            recipient: c,
            data: &vec![9; n]
        })),
        (ch.clone(), any::<u32>()).prop_map(|(c, n)| enc(WindowAdjust {
            recipient: c,
            bytes: n
        })),
        ch.clone().prop_map(|c| enc(ChannelEof { recipient: c })),
        ch.clone().prop_map(|c| enc(ChannelClose { recipient: c })),
        (ch.clone(), any::<u32>(), any::<u32>()).prop_map(|(c, w, m)| enc(
            ChannelOpenConfirmation {
                recipient: c,
                sender: 99,
                initial_window: w,
                max_packet: m,
            }
        )),
        Just(enc(RequestSuccess { data: b"" })),
        (80u8..=127, proptest::collection::vec(any::<u8>(), 0..24)).prop_map(|(n, mut b)| {
            b.insert(0, n);
            b
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0usize..8;
    prop_oneof![
        3 => Just(Op::Open),
        4 => (k.clone(), 0usize..120).prop_map(|(c, n)| Op::Send(c, n)),
        1 => k.clone().prop_map(Op::SendEof),
        1 => k.clone().prop_map(Op::Close),
        4 => (k.clone(), 0usize..120).prop_map(|(c, n)| Op::Consume(c, n)),
        1 => Just(Op::Keepalive),
        4 => Just(Op::Poll),
        16 => (legal(), k).prop_map(|(l, c)| Op::Server(l, c)),
        1 => hostile().prop_map(Op::Hostile),
    ]
}

/// The server's view of one of our channels.
#[derive(Clone, Debug, Default)]
struct ServerChannel {
    /// Its own number for the channel, once it has answered the open.
    remote: Option<u32>,
    /// What we may still send to the client (the client's receive window as far as we know).
    client_window: u64,
    /// What the client may still send to us, and our max packet.
    our_window: u64,
    our_max_packet: u32,
    sent_eof: bool,
    sent_close: bool,
    client_eof: bool,
    client_close: bool,
}

#[derive(Default)]
struct Server {
    /// By the client's channel number.
    channels: BTreeMap<u32, ServerChannel>,
    /// Our channel number -> the client's.
    by_remote: BTreeMap<u32, u32>,
    next_remote: u32,
    keepalives: u32,
}

impl Server {
    /// Reads what the client sent, checking it against what the server allowed.
    fn observe(&mut self, sent: &[Vec<u8>]) -> Result<(), TestCaseError> {
        for p in sent {
            let m = decode(p).map_err(|e| TestCaseError::fail(format!("client sent junk: {e}")))?;
            let client_id = |recipient: u32, by_remote: &BTreeMap<u32, u32>| {
                by_remote.get(&recipient).copied().ok_or_else(|| {
                    TestCaseError::fail(format!("client named server channel {recipient}"))
                })
            };
            match m {
                Message::ChannelOpen(o) => {
                    prop_assert!(
                        !self.channels.contains_key(&o.sender),
                        "open reused a live id"
                    );
                    self.channels.insert(
                        o.sender,
                        ServerChannel {
                            client_window: u64::from(o.initial_window),
                            ..ServerChannel::default()
                        },
                    );
                }
                Message::Data(d) => {
                    let id = client_id(d.recipient, &self.by_remote)?;
                    let ch = self
                        .channels
                        .get_mut(&id)
                        .ok_or_else(|| TestCaseError::fail("data on a dead channel"))?;
                    prop_assert!(
                        !ch.client_eof && !ch.client_close,
                        "data after the client's EOF or CLOSE"
                    );
                    prop_assert!(!d.data.is_empty());
                    prop_assert!(
                        d.data.len() as u64 <= ch.our_window,
                        "client overran the window"
                    );
                    prop_assert!(d.data.len() as u32 <= ch.our_max_packet.min(MAX_OUTGOING_DATA));
                    ch.our_window -= d.data.len() as u64;
                }
                Message::WindowAdjust(a) => {
                    let id = client_id(a.recipient, &self.by_remote)?;
                    let ch = self
                        .channels
                        .get_mut(&id)
                        .ok_or_else(|| TestCaseError::fail("adjust on a dead channel"))?;
                    prop_assert!(!ch.client_close, "adjust after the client's CLOSE");
                    ch.client_window += u64::from(a.bytes);
                    prop_assert!(
                        ch.client_window <= u64::from(CONFIG.initial_window),
                        "client granted more than its window"
                    );
                }
                Message::Eof(e) => {
                    let id = client_id(e.recipient, &self.by_remote)?;
                    let ch = self
                        .channels
                        .get_mut(&id)
                        .ok_or_else(|| TestCaseError::fail("EOF on a dead channel"))?;
                    prop_assert!(
                        !ch.client_eof && !ch.client_close,
                        "second EOF or EOF after CLOSE"
                    );
                    ch.client_eof = true;
                }
                Message::Close(c) => {
                    let id = client_id(c.recipient, &self.by_remote)?;
                    let ch = self
                        .channels
                        .get_mut(&id)
                        .ok_or_else(|| TestCaseError::fail("CLOSE on a dead channel"))?;
                    prop_assert!(!ch.client_close, "second CLOSE");
                    ch.client_close = true;
                    if ch.sent_close {
                        self.forget(id);
                    }
                }
                Message::ChannelFailure(f) => {
                    let id = client_id(f.recipient, &self.by_remote)?;
                    let ch = self
                        .channels
                        .get(&id)
                        .ok_or_else(|| TestCaseError::fail("reply on a dead channel"))?;
                    prop_assert!(!ch.client_close);
                }
                Message::GlobalRequest(_) => self.keepalives += 1,
                Message::RequestFailure(_) | Message::ChannelOpenFailure(_) => {}
                other => prop_assert!(false, "client sent {:?}", other),
            }
        }
        Ok(())
    }

    fn forget(&mut self, id: u32) {
        if let Some(ch) = self.channels.remove(&id)
            && let Some(r) = ch.remote
        {
            self.by_remote.remove(&r);
        }
    }

    /// The legal message `what` for the `pick`-th channel it applies to, if any.
    fn message(&mut self, what: Legal, pick: usize) -> Option<Vec<u8>> {
        let applies = |ch: &ServerChannel| match what {
            Legal::Confirm { .. } | Legal::Refuse => ch.remote.is_none(),
            Legal::Data(_) | Legal::Ext(_) | Legal::Eof => {
                ch.remote.is_some() && !ch.sent_eof && !ch.sent_close
            }
            Legal::Adjust(_) | Legal::Close | Legal::ChannelRequest(_) => {
                ch.remote.is_some() && !ch.sent_close
            }
            Legal::GlobalRequest(_) | Legal::KeepaliveReply(_) => false,
        };
        match what {
            Legal::GlobalRequest(want_reply) => {
                return Some(enc(GlobalRequest {
                    name: b"keepalive@openssh.com",
                    want_reply,
                    data: b"",
                }));
            }
            Legal::KeepaliveReply(ok) => {
                self.keepalives = self.keepalives.checked_sub(1)?;
                return Some(if ok {
                    enc(RequestSuccess { data: b"" })
                } else {
                    enc(RequestFailure)
                });
            }
            _ => {}
        }
        let candidates: Vec<u32> = self
            .channels
            .iter()
            .filter(|(_, c)| applies(c))
            .map(|(id, _)| *id)
            .collect();
        let id = *candidates.get(pick % candidates.len().max(1))?;
        let ch = self.channels.get_mut(&id)?;
        Some(match what {
            Legal::Confirm { window, max_packet } => {
                let remote = self.next_remote;
                self.next_remote += 1;
                ch.remote = Some(remote);
                ch.our_window = u64::from(window);
                ch.our_max_packet = max_packet;
                self.by_remote.insert(remote, id);
                enc(ChannelOpenConfirmation {
                    recipient: id,
                    sender: remote,
                    initial_window: window,
                    max_packet,
                })
            }
            Legal::Refuse => {
                self.channels.remove(&id);
                enc(ChannelOpenFailure {
                    recipient: id,
                    reason: OpenFailureReason::CONNECT_FAILED,
                    description: b"no",
                    language: b"",
                })
            }
            Legal::Data(n) | Legal::Ext(n) => {
                let n = (n as u64)
                    .min(ch.client_window)
                    .min(u64::from(CONFIG.max_packet)) as usize;
                ch.client_window -= n as u64;
                if let Legal::Data(_) = what {
                    enc(ChannelData {
                        recipient: id,
                        data: &vec![2; n],
                    })
                } else {
                    enc(ExtendedData {
                        recipient: id,
                        data_type: ExtendedDataType::STDERR,
                        data: &vec![3; n],
                    })
                }
            }
            Legal::Adjust(n) => {
                ch.our_window += u64::from(n);
                enc(WindowAdjust {
                    recipient: id,
                    bytes: n,
                })
            }
            Legal::Eof => {
                ch.sent_eof = true;
                enc(ChannelEof { recipient: id })
            }
            Legal::Close => {
                ch.sent_close = true;
                if ch.client_close {
                    self.forget(id);
                }
                enc(ChannelClose { recipient: id })
            }
            Legal::ChannelRequest(want_reply) => enc(ChannelRequest {
                recipient: id,
                request_type: b"exit-status",
                want_reply,
                data: &[0, 0, 0, 0],
            }),
            Legal::GlobalRequest(_) | Legal::KeepaliveReply(_) => return None,
        })
    }
}

/// The driver's side of the bookkeeping: ids handed out and not yet ended by a polled
/// Closed or OpenFailed.
fn poll_all(conn: &mut Connection, active: &mut BTreeSet<u32>) -> Result<(), TestCaseError> {
    while let Some(e) = conn.poll_event() {
        let id = match &e {
            Event::Opened(i)
            | Event::Data(i)
            | Event::Eof(i)
            | Event::Closed(i)
            | Event::SendCapacity(i) => Some(*i),
            Event::OpenFailed { id, .. } => Some(*id),
            _ => None,
        };
        if let Some(id) = id {
            prop_assert!(active.contains(&id.0), "event {:?} for an ended id", e);
        }
        if let Event::Closed(i) | Event::OpenFailed { id: i, .. } = e {
            active.remove(&i.0);
        }
    }
    Ok(())
}

fn nth(active: &BTreeSet<u32>, k: usize) -> ChannelId {
    ChannelId(
        active
            .iter()
            .nth(k % active.len().max(1))
            .copied()
            .unwrap_or(k as u32),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_payloads_never_panic(payloads in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let mut conn = Connection::new(CONFIG);
        let mut sink: Vec<Vec<u8>> = Vec::new();
        let _ = conn.open_direct_tcpip("db", 5432, "127.0.0.1", 1, &mut sink);
        let mut first_error = None;
        for p in payloads {
            let r = conn.handle_payload(&p, &mut sink);
            match (&first_error, r) {
                (None, Err(e)) => first_error = Some(e),
                (Some(e), r) => prop_assert_eq!(r, Err(e.clone())),
                (None, Ok(())) => {}
            }
            while conn.poll_event().is_some() {}
        }
    }

    #[test]
    fn random_sessions_keep_their_promises(ops in proptest::collection::vec(op(), 0..150),
                                           well_behaved in any::<bool>()) {
        let mut conn = Connection::new(CONFIG);
        let mut server = Server::default();
        let mut active: BTreeSet<u32> = BTreeSet::new();
        let mut hostile_sent = false;
        let mut failed: Option<ConnectionError> = None;
        for op in ops {
            // Half the sessions run against a server that never misbehaves, so they get
            // deep and end with the wind-down below.
            let op = match op {
                Op::Hostile(_) if well_behaved => Op::Poll,
                op => op,
            };
            let mut sink: Vec<Vec<u8>> = Vec::new();
            // Only calls that return a result are compared with the failure once failed.
            let result: Option<Result<(), ConnectionError>> = match op {
                Op::Open => Some(conn.open_direct_tcpip("db", 1, "o", 2, &mut sink).map(|id| {
                    assert!(active.insert(id.0), "id {} handed out twice", id.0);
                })),
                Op::Send(k, n) => {
                    let id = nth(&active, k);
                    let cap = conn.send_capacity(id);
                    Some(match conn.send_data(id, &vec![1; n], &mut sink) {
                        Ok(took) => {
                            assert_eq!(took, n.min(cap));
                            Ok(())
                        }
                        Err(e) if !e.is_fatal() => Ok(()),
                        Err(e) => Err(e),
                    })
                }
                Op::SendEof(k) => { conn.send_eof(nth(&active, k), &mut sink); None }
                Op::Close(k) => { conn.close(nth(&active, k), &mut sink); None }
                Op::Consume(k, n) => { conn.consume(nth(&active, k), n, &mut sink); None }
                Op::Keepalive => { conn.send_keepalive(&mut sink); None }
                Op::Poll => { poll_all(&mut conn, &mut active)?; None }
                Op::Server(what, pick) => server.message(what, pick).map(|p| conn.handle_payload(&p, &mut sink)),
                Op::Hostile(p) => {
                    hostile_sent = true;
                    Some(conn.handle_payload(&p, &mut sink))
                }
            };
            match (&failed, result) {
                (None, Some(Err(e))) => {
                    prop_assert!(hostile_sent, "failed on a well-behaved server: {}", e);
                    prop_assert!(e.is_fatal());
                    failed = Some(e);
                }
                (Some(e), Some(r)) => prop_assert_eq!(r, Err(e.clone())),
                _ => {}
            }
            if failed.is_some() {
                prop_assert!(sink.is_empty(), "sent {:?} after failing", sink);
            }
            if !hostile_sent {
                server.observe(&sink)?;
            }
            for &id in &active {
                prop_assert!(conn.received(ChannelId(id)).len() <= CONFIG.initial_window as usize);
            }
            prop_assert!(conn.channel_count() <= active.len());
        }
        if failed.is_some() || hostile_sent {
            return Ok(());
        }
        // Wind everything down politely: every channel must end, and every id with it.
        for _ in 0..4 {
            let mut sink: Vec<Vec<u8>> = Vec::new();
            while let Some(p) = server.message(Legal::Confirm { window: 10, max_packet: 10 }, 0) {
                prop_assert_eq!(conn.handle_payload(&p, &mut sink), Ok(()));
            }
            while let Some(p) = server.message(Legal::Close, 0) {
                prop_assert_eq!(conn.handle_payload(&p, &mut sink), Ok(()));
            }
            for &id in &active {
                conn.consume(ChannelId(id), usize::MAX, &mut sink);
            }
            server.observe(&sink)?;
            poll_all(&mut conn, &mut active)?;
        }
        prop_assert!(active.is_empty(), "channels never ended: {:?}", active);
        prop_assert_eq!(conn.channel_count(), 0);
    }
}
