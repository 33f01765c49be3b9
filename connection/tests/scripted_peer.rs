//! A scripted server: each case is a table of steps, each step one thing the driver or the
//! server does, followed by exactly the payloads the client must send and exactly the events
//! it must report.

use ssh_connection::msg::{
    ChannelClose, ChannelData, ChannelEof, ChannelOpen, ChannelOpenConfirmation,
    ChannelOpenFailure, ChannelRequest, ChannelSuccess, ConnectionMessage, ExtendedData,
    GlobalRequest, OpenKind, RequestFailure, RequestSuccess, TcpipEndpoints, WindowAdjust,
};
use ssh_connection::{
    ChannelId, Config, Connection, ConnectionError, Event, ExtendedDataType, OpenFailureReason,
};
use ssh_transport::MessageType;
use ssh_transport::wire::DecodeError;

// ----- the script language -----

enum Act {
    /// `open_direct_tcpip("db", 5432, "127.0.0.1", 40000)`, which must return this id.
    Open(u32),
    /// `send_data(id, bytes)`, which must take this many.
    Send(u32, Vec<u8>, usize),
    SendEof(u32),
    Close(u32),
    Consume(u32, usize),
    Keepalive,
    /// The server sends these payloads, all before the events are polled.
    Peer(Vec<Vec<u8>>),
    /// The server sends this payload and the client must fail with this error.
    PeerErr(Vec<u8>, ConnectionError),
    /// `received(id)` must be exactly this.
    Received(u32, Vec<u8>),
    /// `send_capacity(id)` must be exactly this.
    Capacity(u32, usize),
    /// `channel_count()` must be exactly this.
    Count(usize),
}

struct Step {
    act: Act,
    sent: Vec<Vec<u8>>,
    events: Vec<Event>,
}

fn step(act: Act, sent: Vec<Vec<u8>>, events: Vec<Event>) -> Step {
    Step { act, sent, events }
}

/// A step after which the client sends nothing and reports nothing.
fn quiet(act: Act) -> Step {
    step(act, vec![], vec![])
}

fn peer(payload: Vec<u8>) -> Act {
    Act::Peer(vec![payload])
}

fn run(name: &str, config: Config, steps: Vec<Step>) -> Connection {
    let mut conn = Connection::new(config);
    for (i, s) in steps.into_iter().enumerate() {
        let mut sink: Vec<Vec<u8>> = Vec::new();
        match s.act {
            Act::Open(want) => {
                let id = conn.open_direct_tcpip("db", 5432, "127.0.0.1", 40000, &mut sink);
                assert_eq!(id, Ok(ChannelId(want)), "{name} step {i}: open");
            }
            Act::Send(id, data, want) => {
                let took = conn.send_data(ChannelId(id), &data, &mut sink);
                assert_eq!(took, Ok(want), "{name} step {i}: send_data");
            }
            Act::SendEof(id) => conn.send_eof(ChannelId(id), &mut sink),
            Act::Close(id) => conn.close(ChannelId(id), &mut sink),
            Act::Consume(id, n) => {
                // It says whether it queued Closed: whoever consumes must have it polled.
                let closed = conn.consume(ChannelId(id), n, &mut sink);
                assert_eq!(
                    closed,
                    s.events.contains(&Event::Closed(ChannelId(id))),
                    "{name} step {i}: consume's answer"
                );
            }
            Act::Keepalive => conn.send_keepalive(&mut sink),
            Act::Peer(payloads) => {
                for p in payloads {
                    let r = conn.handle_payload(&p, &mut sink);
                    assert_eq!(r, Ok(()), "{name} step {i}: handle_payload({p:?})");
                }
            }
            Act::PeerErr(p, want) => {
                let r = conn.handle_payload(&p, &mut sink);
                assert_eq!(r, Err(want.clone()), "{name} step {i}: handle_payload");
                // Failed for good: the same error again, even for a harmless message.
                assert_eq!(
                    conn.handle_payload(&[82], &mut sink),
                    Err(want.clone()),
                    "{name} step {i}: stays failed"
                );
                assert_eq!(conn.error(), Some(&want));
                assert!(want.is_fatal());
            }
            Act::Received(id, want) => {
                assert_eq!(conn.received(ChannelId(id)), &want[..], "{name} step {i}");
            }
            Act::Capacity(id, want) => {
                assert_eq!(conn.send_capacity(ChannelId(id)), want, "{name} step {i}");
            }
            Act::Count(want) => assert_eq!(conn.channel_count(), want, "{name} step {i}"),
        }
        assert_eq!(sink, s.sent, "{name} step {i}: payloads sent");
        let events: Vec<Event> = std::iter::from_fn(|| conn.poll_event()).collect();
        assert_eq!(events, s.events, "{name} step {i}: events");
    }
    conn
}

// ----- what the server sends -----

fn enc<'a, M: ConnectionMessage<'a>>(m: M) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut v);
    v
}

fn confirm(recipient: u32, sender: u32, window: u32, max_packet: u32) -> Vec<u8> {
    enc(ChannelOpenConfirmation {
        recipient,
        sender,
        initial_window: window,
        max_packet,
    })
}

fn refuse(recipient: u32, reason: OpenFailureReason, description: &[u8]) -> Vec<u8> {
    enc(ChannelOpenFailure {
        recipient,
        reason,
        description,
        language: b"",
    })
}

fn data(recipient: u32, bytes: &[u8]) -> Vec<u8> {
    enc(ChannelData {
        recipient,
        data: bytes,
    })
}

fn ext(recipient: u32, bytes: &[u8]) -> Vec<u8> {
    enc(ExtendedData {
        recipient,
        data_type: ExtendedDataType::STDERR,
        data: bytes,
    })
}

fn adjust(recipient: u32, bytes: u32) -> Vec<u8> {
    enc(WindowAdjust { recipient, bytes })
}

fn eof(recipient: u32) -> Vec<u8> {
    enc(ChannelEof { recipient })
}

fn close(recipient: u32) -> Vec<u8> {
    enc(ChannelClose { recipient })
}

fn channel_request(recipient: u32, name: &[u8], want_reply: bool) -> Vec<u8> {
    enc(ChannelRequest {
        recipient,
        request_type: name,
        want_reply,
        data: &[0, 0, 0, 0],
    })
}

fn global_request(name: &[u8], want_reply: bool) -> Vec<u8> {
    enc(GlobalRequest {
        name,
        want_reply,
        data: b"",
    })
}

fn server_open(kind: OpenKind<'_>, sender: u32) -> Vec<u8> {
    enc(ChannelOpen {
        sender,
        initial_window: 1 << 21,
        max_packet: 1 << 15,
        kind,
    })
}

// ----- what the client must send, written out byte by byte -----

fn be(n: u32) -> [u8; 4] {
    n.to_be_bytes()
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&be(s.len() as u32));
    out.extend_from_slice(s);
}

fn c_open(id: u32, config: Config) -> Vec<u8> {
    let mut v = vec![90];
    string(&mut v, b"direct-tcpip");
    v.extend_from_slice(&be(id));
    v.extend_from_slice(&be(config.initial_window));
    v.extend_from_slice(&be(config.max_packet));
    string(&mut v, b"db");
    v.extend_from_slice(&be(5432));
    string(&mut v, b"127.0.0.1");
    v.extend_from_slice(&be(40000));
    v
}

fn c_data(remote: u32, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![94];
    v.extend_from_slice(&be(remote));
    string(&mut v, bytes);
    v
}

fn c_adjust(remote: u32, n: u32) -> Vec<u8> {
    let mut v = vec![93];
    v.extend_from_slice(&be(remote));
    v.extend_from_slice(&be(n));
    v
}

fn c_simple(number: u8, remote: u32) -> Vec<u8> {
    let mut v = vec![number];
    v.extend_from_slice(&be(remote));
    v
}

fn c_eof(remote: u32) -> Vec<u8> {
    c_simple(96, remote)
}

fn c_close(remote: u32) -> Vec<u8> {
    c_simple(97, remote)
}

fn c_channel_failure(remote: u32) -> Vec<u8> {
    c_simple(100, remote)
}

fn c_open_refused(recipient: u32) -> Vec<u8> {
    let mut v = vec![92];
    v.extend_from_slice(&be(recipient));
    v.extend_from_slice(&be(1));
    string(&mut v, b"open refused");
    string(&mut v, b"");
    v
}

fn c_keepalive() -> Vec<u8> {
    let mut v = vec![80];
    string(&mut v, b"keepalive@openssh.com");
    v.push(1);
    v
}

fn c_request_failure() -> Vec<u8> {
    vec![82]
}

fn bytes(n: usize, fill: u8) -> Vec<u8> {
    vec![fill; n]
}

const SMALL: Config = Config {
    initial_window: 100,
    max_packet: 40,
};

fn id(n: u32) -> ChannelId {
    ChannelId(n)
}

/// Opens channel 0 and has the server confirm it as its channel 7 with the given window
/// and packet size.
fn opened(window: u32, max_packet: u32) -> Vec<Step> {
    vec![
        step(Act::Open(0), vec![c_open(0, SMALL)], vec![]),
        step(
            peer(confirm(0, 7, window, max_packet)),
            vec![],
            vec![Event::Opened(id(0))],
        ),
    ]
}

fn with(mut prefix: Vec<Step>, rest: Vec<Step>) -> Vec<Step> {
    prefix.extend(rest);
    prefix
}

// ----- the cases -----

#[test]
fn full_lifecycle_with_data_both_ways_and_half_close() {
    run(
        "lifecycle",
        SMALL,
        vec![
            step(Act::Open(0), vec![c_open(0, SMALL)], vec![]),
            quiet(Act::Count(1)),
            quiet(Act::Capacity(0, 0)),
            quiet(Act::Send(0, b"early".to_vec(), 0)),
            step(
                peer(confirm(0, 7, 50, 20)),
                vec![],
                vec![Event::Opened(id(0))],
            ),
            quiet(Act::Capacity(0, 50)),
            step(
                Act::Send(0, bytes(45, b'a'), 45),
                vec![
                    c_data(7, &bytes(20, b'a')),
                    c_data(7, &bytes(20, b'a')),
                    c_data(7, &bytes(5, b'a')),
                ],
                vec![],
            ),
            step(
                Act::Send(0, bytes(10, b'b'), 5),
                vec![c_data(7, &bytes(5, b'b'))],
                vec![],
            ),
            quiet(Act::Capacity(0, 0)),
            quiet(Act::Send(0, b"x".to_vec(), 0)),
            step(
                peer(adjust(0, 30)),
                vec![],
                vec![Event::SendCapacity(id(0))],
            ),
            quiet(Act::Capacity(0, 30)),
            step(
                peer(data(0, &bytes(30, b'c'))),
                vec![],
                vec![Event::Data(id(0))],
            ),
            step(
                peer(data(0, &bytes(20, b'd'))),
                vec![],
                vec![Event::Data(id(0))],
            ),
            quiet(Act::Received(
                0,
                [bytes(30, b'c'), bytes(20, b'd')].concat(),
            )),
            quiet(Act::Consume(0, 49)),
            quiet(Act::Received(0, bytes(1, b'd'))),
            step(Act::Consume(0, 1), vec![c_adjust(7, 50)], vec![]),
            step(peer(eof(0)), vec![], vec![Event::Eof(id(0))]),
            quiet(Act::Capacity(0, 30)),
            step(Act::SendEof(0), vec![c_eof(7), c_close(7)], vec![]),
            quiet(Act::Capacity(0, 0)),
            quiet(Act::Count(1)),
            step(peer(close(0)), vec![], vec![Event::Closed(id(0))]),
            quiet(Act::Count(0)),
            // The id is free again.
            step(Act::Open(0), vec![c_open(0, SMALL)], vec![]),
        ],
    );
}

#[test]
fn our_eof_first_then_server_eof_closes() {
    run(
        "eof order",
        SMALL,
        with(
            opened(100, 40),
            vec![
                step(Act::SendEof(0), vec![c_eof(7)], vec![]),
                quiet(Act::SendEof(0)),
                step(peer(data(0, b"tail")), vec![], vec![Event::Data(id(0))]),
                // Server EOF while data is still buffered: no CLOSE until it is drained.
                step(peer(eof(0)), vec![], vec![Event::Eof(id(0))]),
                step(Act::Consume(0, 4), vec![c_close(7)], vec![]),
                step(peer(close(0)), vec![], vec![Event::Closed(id(0))]),
            ],
        ),
    );
}

#[test]
fn data_events_are_coalesced_until_polled() {
    run(
        "coalesce",
        SMALL,
        with(
            opened(100, 40),
            vec![
                step(
                    Act::Peer(vec![data(0, b"ab"), data(0, b"cd"), data(0, b"ef")]),
                    vec![],
                    vec![Event::Data(id(0))],
                ),
                quiet(Act::Received(0, b"abcdef".to_vec())),
                step(
                    Act::Peer(vec![adjust(0, 1), adjust(0, 1)]),
                    vec![],
                    vec![Event::SendCapacity(id(0))],
                ),
                quiet(Act::Capacity(0, 102)),
            ],
        ),
    );
}

#[test]
fn server_close_with_data_buffered_keeps_it_readable() {
    run(
        "close with data",
        SMALL,
        with(
            opened(100, 40),
            vec![
                step(peer(data(0, b"hello")), vec![], vec![Event::Data(id(0))]),
                step(peer(close(0)), vec![c_close(7)], vec![Event::Eof(id(0))]),
                quiet(Act::Capacity(0, 0)),
                quiet(Act::Received(0, b"hello".to_vec())),
                quiet(Act::Consume(0, 2)),
                quiet(Act::Received(0, b"llo".to_vec())),
                // No WINDOW_ADJUST after CLOSE, and Closed only once drained.
                step(Act::Consume(0, 3), vec![], vec![Event::Closed(id(0))]),
                quiet(Act::Received(0, vec![])),
            ],
        ),
    );
}

#[test]
fn server_eof_then_close_with_data_reports_eof_once() {
    run(
        "eof then close",
        SMALL,
        with(
            opened(100, 40),
            vec![
                step(peer(data(0, b"xy")), vec![], vec![Event::Data(id(0))]),
                step(peer(eof(0)), vec![], vec![Event::Eof(id(0))]),
                step(peer(close(0)), vec![c_close(7)], vec![]),
                step(Act::Consume(0, 10), vec![], vec![Event::Closed(id(0))]),
            ],
        ),
    );
}

#[test]
fn server_close_without_data_frees_at_once() {
    run(
        "close empty",
        SMALL,
        with(
            opened(100, 40),
            vec![
                step(peer(close(0)), vec![c_close(7)], vec![Event::Closed(id(0))]),
                quiet(Act::Count(0)),
                // Commands on the freed id are harmless.
                step(Act::Close(0), vec![], vec![]),
                quiet(Act::SendEof(0)),
                quiet(Act::Consume(0, 5)),
            ],
        ),
    );
}

#[test]
fn open_refused_reports_a_sanitized_reason_and_frees_the_id() {
    run(
        "refused",
        SMALL,
        vec![
            step(Act::Open(0), vec![c_open(0, SMALL)], vec![]),
            step(
                peer(refuse(
                    0,
                    OpenFailureReason::CONNECT_FAILED,
                    b"connect failed: \x1b[31mno route\n",
                )),
                vec![],
                vec![Event::OpenFailed {
                    id: id(0),
                    reason: OpenFailureReason::CONNECT_FAILED,
                    description: "connect failed: \\x1b[31mno route\\x0a".to_string(),
                }],
            ),
            quiet(Act::Count(0)),
            step(Act::Open(0), vec![c_open(0, SMALL)], vec![]),
        ],
    );
}

#[test]
fn close_while_opening_closes_after_confirmation() {
    run(
        "close pending, confirmed",
        SMALL,
        vec![
            step(Act::Open(0), vec![c_open(0, SMALL)], vec![]),
            quiet(Act::Close(0)),
            step(peer(confirm(0, 9, 100, 40)), vec![c_close(9)], vec![]),
            quiet(Act::Capacity(0, 0)),
            // Data the server sent before it saw our CLOSE is accepted and dropped.
            quiet(peer(data(0, b"late"))),
            quiet(Act::Received(0, vec![])),
            step(peer(close(0)), vec![], vec![Event::Closed(id(0))]),
        ],
    );
}

#[test]
fn close_while_opening_then_refused_ends_with_open_failed() {
    run(
        "close pending, refused",
        SMALL,
        vec![
            step(Act::Open(0), vec![c_open(0, SMALL)], vec![]),
            quiet(Act::Close(0)),
            step(
                peer(refuse(
                    0,
                    OpenFailureReason::ADMINISTRATIVELY_PROHIBITED,
                    b"no",
                )),
                vec![],
                vec![Event::OpenFailed {
                    id: id(0),
                    reason: OpenFailureReason::ADMINISTRATIVELY_PROHIBITED,
                    description: "no".to_string(),
                }],
            ),
            quiet(Act::Count(0)),
        ],
    );
}

#[test]
fn eof_while_opening_is_sent_on_confirmation() {
    run(
        "eof pending",
        SMALL,
        vec![
            step(Act::Open(0), vec![c_open(0, SMALL)], vec![]),
            quiet(Act::SendEof(0)),
            step(
                peer(confirm(0, 3, 100, 40)),
                vec![c_eof(3)],
                vec![Event::Opened(id(0))],
            ),
            quiet(Act::Capacity(0, 0)),
            step(peer(data(0, b"reply")), vec![], vec![Event::Data(id(0))]),
        ],
    );
}

#[test]
fn local_close_discards_data_and_waits_for_the_server() {
    run(
        "local close",
        SMALL,
        with(
            opened(100, 40),
            vec![
                step(peer(data(0, b"unread")), vec![], vec![Event::Data(id(0))]),
                step(Act::Close(0), vec![c_close(7)], vec![]),
                quiet(Act::Close(0)),
                quiet(Act::Received(0, vec![])),
                quiet(Act::Send(0, b"x".to_vec(), 0)),
                quiet(peer(data(0, b"in flight"))),
                quiet(peer(adjust(0, 10))),
                quiet(peer(eof(0))),
                quiet(peer(channel_request(0, b"exit-status", true))),
                quiet(Act::Count(1)),
                step(peer(close(0)), vec![], vec![Event::Closed(id(0))]),
                quiet(Act::Count(0)),
            ],
        ),
    );
}

#[test]
fn local_close_after_server_close_frees_at_once() {
    run(
        "close after server close",
        SMALL,
        with(
            opened(100, 40),
            vec![
                step(peer(data(0, b"abc")), vec![], vec![Event::Data(id(0))]),
                step(peer(close(0)), vec![c_close(7)], vec![Event::Eof(id(0))]),
                // The local socket failed before the data could be written.
                step(Act::Close(0), vec![], vec![Event::Closed(id(0))]),
            ],
        ),
    );
}

#[test]
fn server_requests_and_opens_are_refused() {
    run(
        "refusals",
        SMALL,
        with(
            opened(100, 40),
            vec![
                step(
                    peer(global_request(b"keepalive@openssh.com", true)),
                    vec![c_request_failure()],
                    vec![],
                ),
                // The host key list is handed on (UpdateHostKeys), never answered.
                step(
                    peer(global_request(b"hostkeys-00@openssh.com", false)),
                    vec![],
                    vec![Event::HostKeys(vec![])],
                ),
                step(
                    peer(server_open(
                        OpenKind::ForwardedTcpip(TcpipEndpoints {
                            address: b"0.0.0.0",
                            port: 8080,
                            originator_address: b"10.0.0.1",
                            originator_port: 5555,
                        }),
                        42,
                    )),
                    vec![c_open_refused(42)],
                    vec![],
                ),
                step(
                    peer(server_open(
                        OpenKind::Other {
                            channel_type: b"x11",
                            data: &[0, 0, 0, 1, b'h', 0, 0, 0, 1],
                        },
                        43,
                    )),
                    vec![c_open_refused(43)],
                    vec![],
                ),
                step(
                    peer(server_open(
                        OpenKind::Other {
                            channel_type: b"auth-agent@openssh.com",
                            data: b"",
                        },
                        44,
                    )),
                    vec![c_open_refused(44)],
                    vec![],
                ),
                step(
                    peer(channel_request(0, b"keepalive@openssh.com", true)),
                    vec![c_channel_failure(7)],
                    vec![],
                ),
                quiet(peer(channel_request(0, b"exit-status", false))),
                // Stray replies to channel requests we never sent are ignored.
                quiet(peer(enc(ChannelSuccess { recipient: 0 }))),
                quiet(peer(enc(ssh_connection::msg::ChannelFailure {
                    recipient: 99,
                }))),
                quiet(Act::Count(1)),
            ],
        ),
    );
}

#[test]
fn keepalives_are_answered_in_order() {
    let conn = run(
        "keepalive",
        SMALL,
        vec![
            step(Act::Keepalive, vec![c_keepalive()], vec![]),
            step(Act::Keepalive, vec![c_keepalive()], vec![]),
            step(
                peer(enc(RequestFailure)),
                vec![],
                vec![Event::KeepaliveReply],
            ),
            step(
                peer(enc(RequestSuccess { data: b"" })),
                vec![],
                vec![Event::KeepaliveReply],
            ),
            step(
                Act::PeerErr(
                    enc(RequestSuccess { data: b"" }),
                    ConnectionError::UnexpectedRequestReply {
                        message: MessageType::REQUEST_SUCCESS,
                    },
                ),
                vec![],
                vec![],
            ),
        ],
    );
    assert_eq!(conn.outstanding_keepalives(), 0);
}

#[test]
fn outstanding_keepalives_count_up_and_down() {
    let mut conn = Connection::new(SMALL);
    let mut sink: Vec<Vec<u8>> = Vec::new();
    for _ in 0..3 {
        conn.send_keepalive(&mut sink);
    }
    assert_eq!(conn.outstanding_keepalives(), 3);
    assert_eq!(conn.handle_payload(&[82], &mut sink), Ok(()));
    assert_eq!(conn.outstanding_keepalives(), 2);
}

#[test]
fn extended_data_is_discarded_but_credited() {
    run(
        "stderr",
        SMALL,
        with(
            opened(100, 40),
            vec![
                quiet(peer(ext(0, &bytes(40, b'e')))),
                quiet(peer(ext(0, &bytes(9, b'e')))),
                quiet(Act::Received(0, vec![])),
                step(peer(ext(0, &bytes(1, b'e'))), vec![c_adjust(7, 50)], vec![]),
                // Extended data still counts against the window.
                quiet(peer(ext(0, &bytes(40, b'e')))),
                step(
                    peer(data(0, &bytes(40, b'd'))),
                    vec![],
                    vec![Event::Data(id(0))],
                ),
                step(
                    Act::PeerErr(
                        data(0, &bytes(21, b'd')),
                        ConnectionError::WindowExceeded {
                            channel: 0,
                            window: 20,
                            len: 21,
                        },
                    ),
                    vec![],
                    vec![],
                ),
            ],
        ),
    );
}

#[test]
fn unassigned_message_numbers_ask_for_unimplemented() {
    run(
        "unassigned",
        SMALL,
        vec![step(
            peer(vec![85, 1, 2, 3]),
            vec![],
            vec![Event::Unimplemented(MessageType(85))],
        )],
    );
}

#[test]
fn window_adjust_up_to_exactly_u32_max_is_fine() {
    run(
        "adjust to max",
        SMALL,
        with(
            opened(u32::MAX - 5, 40),
            vec![
                step(peer(adjust(0, 5)), vec![], vec![Event::SendCapacity(id(0))]),
                quiet(peer(adjust(0, 0))),
            ],
        ),
    );
}

#[test]
fn send_is_clamped_to_our_own_packet_limit() {
    let config = Config::default();
    let mut conn = Connection::new(config);
    let mut sink: Vec<Vec<u8>> = Vec::new();
    let ch = conn
        .open_direct_tcpip("db", 5432, "127.0.0.1", 1, &mut sink)
        .unwrap();
    conn.handle_payload(&confirm(ch.0, 1, u32::MAX, u32::MAX), &mut sink)
        .unwrap();
    sink.clear();
    let big = vec![7u8; 100_000];
    assert_eq!(conn.send_data(ch, &big, &mut sink), Ok(100_000));
    let sizes: Vec<usize> = sink.iter().map(|p| p.len() - 9).collect();
    assert_eq!(sizes, [32768, 32768, 32768, 100_000 - 3 * 32768]);
    assert!(sink.iter().all(|p| p.first() == Some(&94)));
}

#[test]
fn send_data_on_an_unknown_id_is_a_local_error() {
    let mut conn = Connection::new(SMALL);
    let mut sink: Vec<Vec<u8>> = Vec::new();
    let e = conn.send_data(ChannelId(3), b"x", &mut sink);
    assert_eq!(e, Err(ConnectionError::NoSuchChannel(ChannelId(3))));
    assert!(!ConnectionError::NoSuchChannel(ChannelId(3)).is_fatal());
    // Not fatal: the connection carries on.
    assert!(conn.open_direct_tcpip("h", 1, "o", 2, &mut sink).is_ok());
    assert_eq!(conn.error(), None);
}

#[test]
fn zero_config_values_are_raised() {
    let conn = Connection::new(Config {
        initial_window: 0,
        max_packet: 0,
    });
    assert_eq!(
        conn.config(),
        Config {
            initial_window: 1,
            max_packet: 1
        }
    );
}

// ----- hostile servers -----

fn hostile(name: &str, setup: Vec<Step>, payload: Vec<u8>, want: ConnectionError) {
    let conn = run(
        name,
        SMALL,
        with(
            setup,
            vec![step(Act::PeerErr(payload, want.clone()), vec![], vec![])],
        ),
    );
    // Every command now reports the error or does nothing.
    let mut conn = conn;
    let mut sink: Vec<Vec<u8>> = Vec::new();
    assert_eq!(
        conn.open_direct_tcpip("h", 1, "o", 2, &mut sink),
        Err(want.clone()),
        "{name}"
    );
    assert_eq!(
        conn.send_data(ChannelId(0), b"x", &mut sink),
        Err(want.clone()),
        "{name}"
    );
    assert_eq!(conn.send_capacity(ChannelId(0)), 0, "{name}");
    conn.send_keepalive(&mut sink);
    conn.send_eof(ChannelId(0), &mut sink);
    conn.close(ChannelId(0), &mut sink);
    conn.consume(ChannelId(0), 1, &mut sink);
    assert!(sink.is_empty(), "{name}: sent {sink:?} after failing");
    assert_eq!(want.disconnect_reason().map(|r| r.0), Some(2), "{name}");
}

#[test]
fn hostile_window_overflow() {
    hostile(
        "window overflow",
        opened(u32::MAX - 5, 40),
        adjust(0, 6),
        ConnectionError::WindowOverflow {
            channel: 0,
            window: u32::MAX - 5,
            add: 6,
        },
    );
}

#[test]
fn hostile_data_beyond_window() {
    hostile(
        "beyond window",
        with(
            opened(100, 40),
            vec![
                step(
                    peer(data(0, &bytes(40, 1))),
                    vec![],
                    vec![Event::Data(id(0))],
                ),
                step(
                    peer(data(0, &bytes(40, 1))),
                    vec![],
                    vec![Event::Data(id(0))],
                ),
            ],
        ),
        data(0, &bytes(21, 1)),
        ConnectionError::WindowExceeded {
            channel: 0,
            window: 20,
            len: 21,
        },
    );
}

#[test]
fn hostile_oversized_packet() {
    hostile(
        "oversized",
        opened(100, 40),
        data(0, &bytes(41, 1)),
        ConnectionError::PacketTooLarge {
            channel: 0,
            len: 41,
            max: 40,
        },
    );
}

#[test]
fn hostile_unknown_channel_ids() {
    for (name, payload, message) in [
        ("data", data(5, b"x"), MessageType::CHANNEL_DATA),
        ("adjust", adjust(5, 1), MessageType::CHANNEL_WINDOW_ADJUST),
        ("eof", eof(u32::MAX), MessageType::CHANNEL_EOF),
        ("close", close(1), MessageType::CHANNEL_CLOSE),
        (
            "request",
            channel_request(2, b"x", true),
            MessageType::CHANNEL_REQUEST,
        ),
        (
            "confirm",
            confirm(3, 1, 1, 1),
            MessageType::CHANNEL_OPEN_CONFIRMATION,
        ),
        (
            "refuse",
            refuse(3, OpenFailureReason(9), b""),
            MessageType::CHANNEL_OPEN_FAILURE,
        ),
        ("ext", ext(4, b"x"), MessageType::CHANNEL_EXTENDED_DATA),
    ] {
        let channel = match ssh_connection::decode(&payload) {
            Ok(ssh_connection::Message::Eof(_)) => u32::MAX,
            Ok(ssh_connection::Message::Data(_)) => 5,
            Ok(ssh_connection::Message::WindowAdjust(_)) => 5,
            Ok(ssh_connection::Message::Close(_)) => 1,
            Ok(ssh_connection::Message::ChannelRequest(_)) => 2,
            Ok(ssh_connection::Message::ExtendedData(_)) => 4,
            _ => 3,
        };
        hostile(
            name,
            opened(100, 40),
            payload,
            ConnectionError::UnknownChannel { message, channel },
        );
    }
}

#[test]
fn hostile_data_after_close() {
    // With data still buffered, the channel is still known: data after CLOSE is named as such.
    hostile(
        "data after close",
        with(
            opened(100, 40),
            vec![
                step(peer(data(0, b"a")), vec![], vec![Event::Data(id(0))]),
                step(peer(close(0)), vec![c_close(7)], vec![Event::Eof(id(0))]),
            ],
        ),
        data(0, b"b"),
        ConnectionError::AfterClose {
            message: MessageType::CHANNEL_DATA,
            channel: 0,
        },
    );
    // Once freed, the id is simply unknown.
    hostile(
        "data after close, freed",
        with(
            opened(100, 40),
            vec![step(
                peer(close(0)),
                vec![c_close(7)],
                vec![Event::Closed(id(0))],
            )],
        ),
        data(0, b"b"),
        ConnectionError::UnknownChannel {
            message: MessageType::CHANNEL_DATA,
            channel: 0,
        },
    );
    hostile(
        "close twice",
        with(
            opened(100, 40),
            vec![
                step(peer(data(0, b"a")), vec![], vec![Event::Data(id(0))]),
                step(peer(close(0)), vec![c_close(7)], vec![Event::Eof(id(0))]),
            ],
        ),
        close(0),
        ConnectionError::AfterClose {
            message: MessageType::CHANNEL_CLOSE,
            channel: 0,
        },
    );
    hostile(
        "adjust after close",
        with(
            opened(100, 40),
            vec![
                step(peer(data(0, b"a")), vec![], vec![Event::Data(id(0))]),
                step(peer(close(0)), vec![c_close(7)], vec![Event::Eof(id(0))]),
            ],
        ),
        adjust(0, 1),
        ConnectionError::AfterClose {
            message: MessageType::CHANNEL_WINDOW_ADJUST,
            channel: 0,
        },
    );
}

#[test]
fn hostile_data_after_eof() {
    hostile(
        "data after eof",
        with(
            opened(100, 40),
            vec![step(peer(eof(0)), vec![], vec![Event::Eof(id(0))])],
        ),
        data(0, b"b"),
        ConnectionError::AfterEof {
            message: MessageType::CHANNEL_DATA,
            channel: 0,
        },
    );
    hostile(
        "eof twice",
        with(
            opened(100, 40),
            vec![step(peer(eof(0)), vec![], vec![Event::Eof(id(0))])],
        ),
        eof(0),
        ConnectionError::AfterEof {
            message: MessageType::CHANNEL_EOF,
            channel: 0,
        },
    );
}

#[test]
fn hostile_messages_before_confirmation() {
    let pending = || vec![step(Act::Open(0), vec![c_open(0, SMALL)], vec![])];
    for (payload, message) in [
        (data(0, b"x"), MessageType::CHANNEL_DATA),
        (adjust(0, 1), MessageType::CHANNEL_WINDOW_ADJUST),
        (eof(0), MessageType::CHANNEL_EOF),
        (close(0), MessageType::CHANNEL_CLOSE),
        (
            channel_request(0, b"x", false),
            MessageType::CHANNEL_REQUEST,
        ),
    ] {
        hostile(
            "before confirmation",
            pending(),
            payload,
            ConnectionError::NotYetConfirmed {
                message,
                channel: 0,
            },
        );
    }
}

#[test]
fn hostile_open_replies() {
    hostile(
        "duplicate confirmation",
        opened(100, 40),
        confirm(0, 8, 100, 40),
        ConnectionError::UnexpectedOpenReply {
            message: MessageType::CHANNEL_OPEN_CONFIRMATION,
            channel: 0,
        },
    );
    hostile(
        "failure after confirmation",
        opened(100, 40),
        refuse(0, OpenFailureReason::CONNECT_FAILED, b""),
        ConnectionError::UnexpectedOpenReply {
            message: MessageType::CHANNEL_OPEN_FAILURE,
            channel: 0,
        },
    );
    hostile(
        "confirmation for a channel we never opened",
        vec![],
        confirm(0, 8, 100, 40),
        ConnectionError::UnknownChannel {
            message: MessageType::CHANNEL_OPEN_CONFIRMATION,
            channel: 0,
        },
    );
    hostile(
        "zero max packet",
        vec![step(Act::Open(0), vec![c_open(0, SMALL)], vec![])],
        confirm(0, 8, 100, 0),
        ConnectionError::ZeroMaxPacket { channel: 0 },
    );
}

#[test]
fn hostile_trailing_and_truncated_bytes() {
    let mut long_data = data(0, b"x");
    long_data.push(0);
    hostile(
        "data with trailing byte",
        opened(100, 40),
        long_data,
        ConnectionError::Malformed {
            message: MessageType::CHANNEL_DATA,
            error: DecodeError::TrailingBytes,
        },
    );
    let mut long_eof = eof(0);
    long_eof.extend_from_slice(b"junk");
    hostile(
        "eof with trailing bytes",
        opened(100, 40),
        long_eof,
        ConnectionError::Malformed {
            message: MessageType::CHANNEL_EOF,
            error: DecodeError::TrailingBytes,
        },
    );
    let mut long_confirm = confirm(0, 1, 1, 1);
    long_confirm.push(1);
    hostile(
        "confirmation with trailing byte",
        vec![step(Act::Open(0), vec![c_open(0, SMALL)], vec![])],
        long_confirm,
        ConnectionError::Malformed {
            message: MessageType::CHANNEL_OPEN_CONFIRMATION,
            error: DecodeError::TrailingBytes,
        },
    );
    hostile(
        "data length beyond the payload",
        opened(100, 40),
        vec![94, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 2],
        ConnectionError::Malformed {
            message: MessageType::CHANNEL_DATA,
            error: DecodeError::Truncated,
        },
    );
    hostile(
        "request failure with a body",
        vec![step(Act::Keepalive, vec![c_keepalive()], vec![])],
        vec![82, 0],
        ConnectionError::Malformed {
            message: MessageType::REQUEST_FAILURE,
            error: DecodeError::TrailingBytes,
        },
    );
    hostile(
        "empty payload",
        vec![],
        vec![],
        ConnectionError::EmptyPayload,
    );
    hostile(
        "not a connection message",
        vec![],
        vec![2, 0, 0, 0, 0],
        ConnectionError::NotConnectionMessage(MessageType::IGNORE),
    );
}

// ----- many channels -----

#[test]
fn a_hundred_channels_at_once() {
    let mut conn = Connection::new(SMALL);
    let mut sink: Vec<Vec<u8>> = Vec::new();
    let ids: Vec<ChannelId> = (0..100)
        .map(|i| {
            conn.open_direct_tcpip("db", 5432, "127.0.0.1", 40000 + i, &mut sink)
                .unwrap()
        })
        .collect();
    assert_eq!(ids, (0..100).map(ChannelId).collect::<Vec<_>>());
    assert_eq!(conn.channel_count(), 100);
    assert_eq!(sink.len(), 100);
    sink.clear();
    for ch in &ids {
        conn.handle_payload(&confirm(ch.0, 1000 + ch.0, 100, 40), &mut sink)
            .unwrap();
    }
    let opened: Vec<Event> = std::iter::from_fn(|| conn.poll_event()).collect();
    assert_eq!(
        opened,
        ids.iter().map(|&i| Event::Opened(i)).collect::<Vec<_>>()
    );
    // Interleave data on every channel, then check each got its own bytes.
    for round in 0..3u8 {
        for ch in &ids {
            let payload = data(ch.0, &[ch.0 as u8, round]);
            conn.handle_payload(&payload, &mut sink).unwrap();
        }
    }
    for ch in &ids {
        let b = ch.0 as u8;
        assert_eq!(conn.received(*ch), &[b, 0, b, 1, b, 2]);
        assert_eq!(conn.send_data(*ch, b"pong", &mut sink), Ok(4));
    }
    assert_eq!(sink.len(), 100);
    for (ch, p) in ids.iter().zip(&sink) {
        assert_eq!(p, &c_data(1000 + ch.0, b"pong"));
    }
    sink.clear();
    // Close the even ones from our side, the odd ones from the server's.
    for ch in &ids {
        if ch.0 % 2 == 0 {
            conn.close(*ch, &mut sink);
        }
        conn.handle_payload(&close(ch.0), &mut sink).unwrap();
        if ch.0 % 2 == 1 {
            conn.consume(*ch, 6, &mut sink);
        }
    }
    assert_eq!(sink.len(), 100, "one CLOSE per channel");
    let events: Vec<Event> = std::iter::from_fn(|| conn.poll_event()).collect();
    let closed: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Closed(_)))
        .collect();
    assert_eq!(closed.len(), 100);
    assert_eq!(conn.channel_count(), 0);
    // Every id is reused before the table grows.
    let mut again: Vec<u32> = (0..100)
        .map(|_| {
            conn.open_direct_tcpip("db", 1, "o", 2, &mut sink)
                .unwrap()
                .0
        })
        .collect();
    again.sort_unstable();
    assert_eq!(again, (0..100).collect::<Vec<_>>());
    assert_eq!(
        conn.open_direct_tcpip("db", 1, "o", 2, &mut sink),
        Ok(ChannelId(100))
    );
}

#[test]
fn id_is_not_reused_before_its_last_event_is_polled() {
    let mut conn = Connection::new(SMALL);
    let mut sink: Vec<Vec<u8>> = Vec::new();
    let a = conn.open_direct_tcpip("db", 1, "o", 2, &mut sink).unwrap();
    conn.handle_payload(
        &refuse(a.0, OpenFailureReason::CONNECT_FAILED, b""),
        &mut sink,
    )
    .unwrap();
    // OpenFailed is queued but not polled: a new channel must get another number.
    let b = conn.open_direct_tcpip("db", 1, "o", 2, &mut sink).unwrap();
    assert_ne!(a, b);
    assert!(matches!(conn.poll_event(), Some(Event::OpenFailed { id, .. }) if id == a));
    let c = conn.open_direct_tcpip("db", 1, "o", 2, &mut sink).unwrap();
    assert_eq!(c, a);
}

#[test]
fn data_written_after_a_failure_is_dropped_and_never_handed_out_again() {
    let overflow = ConnectionError::WindowOverflow {
        channel: 0,
        window: u32::MAX - 5,
        add: 6,
    };
    run(
        "consume after failure",
        SMALL,
        with(
            opened(u32::MAX - 5, 40),
            vec![
                step(peer(data(0, b"hello")), vec![], vec![Event::Data(id(0))]),
                step(Act::PeerErr(adjust(0, 6), overflow), vec![], vec![]),
                quiet(Act::Received(0, b"hello".to_vec())),
                // Written to the local socket: gone, and nothing is sent.
                quiet(Act::Consume(0, 2)),
                quiet(Act::Received(0, b"llo".to_vec())),
                quiet(Act::Consume(0, 3)),
                quiet(Act::Received(0, vec![])),
            ],
        ),
    );
}
