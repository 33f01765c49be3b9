//! A session against the transport's in-memory test server, driven through key exchange and
//! a `none` authentication that the server accepts, with a simulated clock.

use std::time::{Duration, Instant};

use ssh_auth::AuthConfig;
use ssh_transport::server::{SeededRandom, ServerConfig, ServerEvent, ServerTransport};
use ssh_transport::{ClientConfig, DisconnectReason, MessageType, PayloadSink};

use super::*;

const ALIVE: ServerAlive = ServerAlive {
    interval: Duration::from_secs(10),
    count_max: 3,
};

/// A session and the test server joined in memory. The server answers SERVICE_REQUEST and
/// accepts the first USERAUTH_REQUEST when `answer_auth` is set, and does nothing else by
/// itself: keepalives stay unanswered unless a test answers them.
struct Pair {
    session: Session,
    server: ServerTransport,
    now: Instant,
    answer_auth: bool,
    /// Payloads the server received.
    to_server: Vec<Vec<u8>>,
    /// Payloads the test server sent after the first key exchange. With strict kex (both
    /// sides' default) sequence numbers restart at 0 after NEWKEYS, and the server sends no
    /// EXT_INFO here, so the n-th of these has sequence number n.
    sent_after_kex: u32,
    established: bool,
    events: Vec<String>,
    /// Ids of the password requests the session asked the caller for.
    password_requests: Vec<u64>,
    error: Option<SessionError>,
}

impl Pair {
    fn new(server_alive: Option<ServerAlive>) -> Self {
        let mut auth = AuthConfig::new("tester".into(), Vec::new());
        auth.publickey = false;
        auth.password = false;
        auth.keyboard_interactive = false;
        Self::with_auth(auth, server_alive)
    }

    fn with_auth(auth: AuthConfig, server_alive: Option<ServerAlive>) -> Self {
        Self::with_config(auth, ClientConfig::default(), server_alive)
    }

    fn with_config(
        auth: AuthConfig,
        transport: ClientConfig,
        server_alive: Option<ServerAlive>,
    ) -> Self {
        let now = Instant::now();
        let config = SessionConfig {
            transport,
            connection: ssh_connection::Config::default(),
            auth,
            server_alive,
        };
        let server = ServerConfig {
            server_sig_algs: None,
            ..ServerConfig::default()
        };
        Self {
            session: Session::new(config, Box::new(SeededRandom::new(1)), now),
            server: ServerTransport::new(server, Box::new(SeededRandom::new(2))),
            now,
            answer_auth: true,
            to_server: Vec::new(),
            sent_after_kex: 0,
            established: false,
            events: Vec::new(),
            password_requests: Vec::new(),
            error: None,
        }
    }

    /// A pair that has authenticated.
    fn authenticated(server_alive: Option<ServerAlive>) -> Self {
        let mut pair = Self::new(server_alive);
        pair.drive();
        assert_eq!(pair.error, None);
        assert!(pair.session.is_authenticated(), "events: {:?}", pair.events);
        pair
    }

    /// Sends `payload` from the server, counting it for sequence numbers.
    fn server_sends(&mut self, payload: &[u8]) {
        self.server.send(payload);
        if self.established {
            self.sent_after_kex += 1;
        }
    }

    /// Moves bytes both ways, at `self.now`, until nothing moves.
    fn drive(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let out = self.session.output().to_vec();
            if !out.is_empty() {
                self.session.consume_output(out.len());
                self.server.handle_input(&out);
                moved = true;
            }
            let out = self.server.output().to_vec();
            if !out.is_empty() {
                self.server.consume_output(out.len());
                let space = self.session.read_space(out.len());
                space[..out.len()].copy_from_slice(&out);
                self.session.commit_input(out.len(), self.now);
                moved = true;
            }
            let mut received = Vec::new();
            loop {
                match self.server.poll_event() {
                    Ok(Some(ServerEvent::Payload(p))) => received.push(p.to_vec()),
                    Ok(Some(ServerEvent::Established)) => self.established = true,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
                moved = true;
            }
            for p in received {
                if self.answer_auth {
                    match p.first() {
                        Some(5) => {
                            let mut accept = vec![6, 0, 0, 0, 12];
                            accept.extend_from_slice(b"ssh-userauth");
                            self.server_sends(&accept);
                        }
                        Some(50) => self.server_sends(&[MessageType::USERAUTH_SUCCESS.0]),
                        _ => {}
                    }
                }
                self.to_server.push(p);
            }
            if self.error.is_none() {
                loop {
                    match self.session.poll_event() {
                        Ok(None) => break,
                        Ok(Some(SessionEvent::VerifyHostKey(_))) => {
                            self.session.accept_host_key();
                        }
                        Ok(Some(SessionEvent::Auth(AuthEvent::PasswordRequest(r)))) => {
                            self.password_requests.push(r.id);
                        }
                        Ok(Some(ev)) => self.events.push(format!("{ev:?}")),
                        Err(e) => {
                            self.error = Some(e);
                            break;
                        }
                    }
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the pair did not settle");
    }

    /// Payloads the server received since the last call.
    fn take_received(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.to_server)
    }

    /// Lets time pass to `at` and fires the session's timers.
    fn advance_to(&mut self, at: Instant) {
        self.now = at;
        self.session.handle_timeout(at);
        self.drive();
    }
}

fn unimplemented(seq: u32) -> Vec<u8> {
    let mut p = vec![MessageType::UNIMPLEMENTED.0];
    p.extend_from_slice(&seq.to_be_bytes());
    p
}

fn is_keepalive(p: &[u8]) -> bool {
    p.first() == Some(&80)
        && p.get(5..5 + ssh_connection::msg::KEEPALIVE.len())
            == Some(ssh_connection::msg::KEEPALIVE)
}

fn disconnect_reason(p: &[u8]) -> Option<u32> {
    (p.first() == Some(&MessageType::DISCONNECT.0))
        .then(|| p.get(1..5)?.try_into().ok().map(u32::from_be_bytes))
        .flatten()
}

/// The session sent exactly one DISCONNECT since the last look, with this reason; returns
/// what it sent.
fn assert_disconnected(pair: &mut Pair, reason: DisconnectReason) -> Vec<Vec<u8>> {
    let sent = pair.take_received();
    assert_eq!(
        sent.iter()
            .filter_map(|p| disconnect_reason(p))
            .collect::<Vec<_>>(),
        vec![reason.0],
        "{sent:?}"
    );
    sent
}

/// GLOBAL_REQUEST "x" without want_reply: assigned, handled by the connection, no answer.
const QUIET_GLOBAL_REQUEST: [u8; 7] = [80, 0, 0, 0, 1, b'x', 0];

#[test]
fn unassigned_connection_number_after_authentication_gets_unimplemented_with_its_seq() {
    let mut pair = Pair::authenticated(None);
    pair.take_received();
    let first = pair.sent_after_kex;
    pair.server_sends(&QUIET_GLOBAL_REQUEST);
    pair.server_sends(&[85, 1, 2, 3]);
    pair.server_sends(&QUIET_GLOBAL_REQUEST);
    pair.server_sends(&[127]);
    pair.drive();
    assert_eq!(pair.error, None);
    assert_eq!(
        pair.take_received(),
        vec![unimplemented(first + 1), unimplemented(first + 3)]
    );
    // The router swallowed the connection's Unimplemented events.
    assert!(
        !pair.events.iter().any(|e| e.contains("Unimplemented")),
        "{:?}",
        pair.events
    );
}

#[test]
fn every_unassigned_connection_number_is_answered_in_order() {
    let mut pair = Pair::authenticated(None);
    pair.take_received();
    let unassigned: Vec<u8> = (80..=127)
        .filter(|n| !matches!(n, 80..=82 | 90..=100))
        .collect();
    let mut expected = Vec::new();
    for &n in &unassigned {
        expected.push(unimplemented(pair.sent_after_kex));
        pair.server_sends(&[n]);
    }
    pair.drive();
    assert_eq!(pair.error, None);
    assert_eq!(pair.take_received(), expected);
}

#[test]
fn number_above_the_connection_range_gets_unimplemented_from_the_router() {
    let mut pair = Pair::authenticated(None);
    pair.take_received();
    let seq = pair.sent_after_kex;
    pair.server_sends(&[192, 0]);
    pair.drive();
    assert_eq!(pair.error, None);
    assert_eq!(pair.take_received(), vec![unimplemented(seq)]);
}

#[test]
fn connection_message_before_authentication_is_a_protocol_error() {
    let mut pair = Pair::new(None);
    pair.answer_auth = false;
    pair.drive();
    assert!(pair.established && !pair.session.is_authenticated());
    pair.take_received();
    pair.server_sends(&[85]);
    pair.drive();
    match &pair.error {
        Some(SessionError::Protocol(why)) => {
            assert!(why.contains("before authentication"), "{why}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    let sent = assert_disconnected(&mut pair, DisconnectReason::PROTOCOL_ERROR);
    assert!(
        !sent
            .iter()
            .any(|p| p.first() == Some(&MessageType::UNIMPLEMENTED.0))
    );
}

#[test]
fn no_keepalives_before_authentication() {
    let mut pair = Pair::new(Some(ALIVE));
    pair.answer_auth = false;
    pair.drive();
    assert!(pair.established && !pair.session.is_authenticated());
    assert_eq!(pair.session.keepalive_deadline(), None);
    pair.take_received();
    // Past three keepalive intervals, within the login limit.
    let at = pair.now + Duration::from_secs(29);
    assert!(ALIVE.interval * 2 < at - pair.now);
    pair.advance_to(at);
    assert!(!pair.take_received().iter().any(|p| is_keepalive(p)));
    assert_eq!(pair.error, None);
}

/// The default handshake limit, which also bounds each wait for the server during the login.
fn login_limit() -> Duration {
    ClientConfig::default()
        .handshake_timeout
        .expect("a default handshake limit")
}

#[test]
fn a_server_silent_after_the_key_exchange_ends_the_login_after_the_handshake_limit() {
    let mut pair = Pair::new(Some(ALIVE));
    pair.answer_auth = false;
    pair.drive();
    assert!(pair.established && !pair.session.is_authenticated());
    let heard = pair.now;
    let limit = login_limit();
    assert_eq!(pair.session.login_deadline(), Some(heard + limit));
    assert!(
        pair.session
            .poll_timeout()
            .is_some_and(|t| t <= heard + limit)
    );
    pair.take_received();

    pair.advance_to(heard + limit - Duration::from_millis(1));
    assert_eq!(pair.error, None);
    pair.advance_to(heard + limit);
    assert_eq!(pair.error, Some(SessionError::LoginTimeout(limit)));
    assert_disconnected(&mut pair, DisconnectReason::CONNECTION_LOST);
    assert_eq!(pair.session.poll_timeout(), None);
    assert!(
        SessionError::LoginTimeout(limit)
            .to_string()
            .contains("did not answer the login for 30 s"),
    );
}

#[test]
fn any_byte_from_the_server_during_the_login_restarts_the_limit() {
    let mut pair = Pair::new(None);
    pair.answer_auth = false;
    pair.drive();
    let limit = login_limit();
    let heard = pair.now + limit - Duration::from_secs(1);
    pair.advance_to(heard - Duration::from_millis(1));
    pair.now = heard;
    pair.server_sends(&[MessageType::IGNORE.0, 0, 0, 0, 0]);
    pair.drive();
    assert_eq!(pair.session.login_deadline(), Some(heard + limit));
    pair.advance_to(heard + limit - Duration::from_millis(1));
    assert_eq!(pair.error, None);
    pair.advance_to(heard + limit);
    assert_eq!(pair.error, Some(SessionError::LoginTimeout(limit)));
}

#[test]
fn time_the_caller_takes_to_answer_does_not_count_against_the_server() {
    let mut auth = AuthConfig::new("tester".into(), Vec::new());
    auth.publickey = false;
    auth.password = true;
    auth.keyboard_interactive = false;
    let mut pair = Pair::with_auth(auth, None);
    pair.answer_auth = false;
    pair.drive();
    // The server refuses `none` and offers passwords: the session asks the caller for one.
    let mut failure = vec![MessageType::USERAUTH_FAILURE.0, 0, 0, 0, 8];
    failure.extend_from_slice(b"password");
    failure.push(0);
    pair.server_sends(&failure);
    pair.drive();
    let id = *pair
        .password_requests
        .first()
        .unwrap_or_else(|| panic!("no password request: {:?}", pair.events));
    assert_eq!(pair.session.login_deadline(), None);

    // A person takes five minutes to type it.
    let typed = pair.now + Duration::from_secs(300);
    pair.advance_to(typed);
    assert_eq!(pair.error, None);
    pair.session
        .provide_password(id, Ok(Zeroizing::new("secret".into())), typed);
    pair.drive();
    assert!(
        pair.take_received()
            .iter()
            .any(|p| p.first() == Some(&MessageType::USERAUTH_REQUEST.0))
    );
    let limit = login_limit();
    assert_eq!(pair.session.login_deadline(), Some(typed + limit));
    pair.advance_to(typed + limit - Duration::from_millis(1));
    assert_eq!(pair.error, None);
    pair.advance_to(typed + limit);
    assert_eq!(pair.error, Some(SessionError::LoginTimeout(limit)));
}

#[test]
fn without_a_handshake_limit_the_login_waits_as_long_as_the_server_takes() {
    let mut auth = AuthConfig::new("tester".into(), Vec::new());
    auth.publickey = false;
    auth.password = false;
    auth.keyboard_interactive = false;
    let transport = ClientConfig {
        handshake_timeout: None,
        ..ClientConfig::default()
    };
    let mut pair = Pair::with_config(auth, transport, None);
    pair.answer_auth = false;
    pair.drive();
    assert!(pair.established);
    assert_eq!(pair.session.login_deadline(), None);
    pair.advance_to(pair.now + Duration::from_secs(3600));
    assert_eq!(pair.error, None);
}

#[test]
fn unanswered_keepalives_end_the_session_after_count_max() {
    let mut pair = Pair::authenticated(Some(ALIVE));
    pair.take_received();
    let t0 = pair.now;
    for n in 1..=3u32 {
        let due = t0 + ALIVE.interval * n;
        assert_eq!(pair.session.keepalive_deadline(), Some(due));
        assert!(pair.session.poll_timeout().is_some_and(|t| t <= due));
        // Not yet: nothing happens a moment before the deadline.
        pair.advance_to(due - Duration::from_millis(1));
        assert!(pair.take_received().is_empty());
        pair.advance_to(due);
        let sent = pair.take_received();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(is_keepalive(&sent[0]), "{sent:?}");
        assert_eq!(pair.session.connection().outstanding_keepalives(), n);
    }
    pair.advance_to(t0 + ALIVE.interval * 4);
    assert_eq!(
        pair.error,
        Some(SessionError::ServerNotResponding { missed: 3 })
    );
    assert_disconnected(&mut pair, DisconnectReason::CONNECTION_LOST);
    assert_eq!(pair.session.poll_timeout(), None);
}

#[test]
fn any_byte_from_the_server_resets_the_keepalive_count() {
    let mut pair = Pair::authenticated(Some(ALIVE));
    pair.take_received();
    let t0 = pair.now;
    pair.advance_to(t0 + ALIVE.interval);
    pair.advance_to(t0 + ALIVE.interval * 2);
    assert_eq!(
        pair.take_received()
            .iter()
            .filter(|p| is_keepalive(p))
            .count(),
        2
    );
    assert_eq!(pair.session.connection().outstanding_keepalives(), 2);

    // Not a reply, just traffic (SSH_MSG_IGNORE): the server is alive.
    let heard = t0 + Duration::from_secs(25);
    pair.now = heard;
    pair.server_sends(&[MessageType::IGNORE.0, 0, 0, 0, 0]);
    pair.drive();
    assert_eq!(pair.session.connection().outstanding_keepalives(), 0);
    assert_eq!(
        pair.session.keepalive_deadline(),
        Some(heard + ALIVE.interval)
    );

    // The two replies still due come late and are matched, not a protocol error.
    pair.server_sends(&[MessageType::REQUEST_FAILURE.0]);
    pair.server_sends(&[MessageType::REQUEST_FAILURE.0]);
    pair.drive();
    assert_eq!(pair.error, None);
    assert_eq!(pair.session.connection().outstanding_keepalives(), 0);

    // A full count_max again from the last byte heard.
    for n in 1..=3u32 {
        pair.advance_to(heard + ALIVE.interval * n);
        assert_eq!(pair.error, None);
    }
    pair.advance_to(heard + ALIVE.interval * 4);
    assert_eq!(
        pair.error,
        Some(SessionError::ServerNotResponding { missed: 3 })
    );
}

#[test]
fn ended_is_not_a_protocol_fault() {
    assert_eq!(SessionError::Ended.to_string(), "the session ended");
    assert_eq!(SessionError::Ended.disconnect_reason(), None);
    assert_eq!(
        SessionError::Protocol("x".into()).disconnect_reason(),
        Some(DisconnectReason::PROTOCOL_ERROR)
    );
}

/// Message numbers of what the server received.
fn kinds(payloads: &[Vec<u8>]) -> Vec<u8> {
    payloads.iter().filter_map(|p| p.first().copied()).collect()
}

#[test]
fn a_key_from_a_file_is_offered_right_behind_the_service_request() {
    let key = ssh_auth::keys::PrivateKey::generate_ed25519().unwrap();
    let mut auth = AuthConfig::new(
        "tester".into(),
        vec![ssh_auth::Identity::new(key, "memory")],
    );
    auth.password = false;
    auth.keyboard_interactive = false;
    let mut pair = Pair::with_auth(auth, None);
    pair.answer_auth = false;
    pair.drive();
    assert_eq!(pair.error, None);
    // No SERVICE_ACCEPT was sent, yet the signed request is already out: one round trip less.
    assert_eq!(
        kinds(&pair.take_received()),
        [
            MessageType::SERVICE_REQUEST.0,
            MessageType::USERAUTH_REQUEST.0
        ]
    );
    // The answers arrive in the server's order; SERVICE_ACCEPT changes nothing.
    let mut accept = vec![MessageType::SERVICE_ACCEPT.0, 0, 0, 0, 12];
    accept.extend_from_slice(b"ssh-userauth");
    pair.server_sends(&accept);
    pair.server_sends(&[MessageType::USERAUTH_SUCCESS.0]);
    pair.drive();
    assert_eq!(pair.error, None);
    assert!(pair.session.is_authenticated(), "events: {:?}", pair.events);
    assert_eq!(kinds(&pair.take_received()), [] as [u8; 0]);
}

#[test]
fn without_a_key_the_none_request_goes_ahead_and_nothing_more() {
    let mut pair = Pair::new(None);
    pair.answer_auth = false;
    pair.drive();
    assert_eq!(pair.error, None);
    let received = pair.take_received();
    assert_eq!(
        kinds(&received),
        [
            MessageType::SERVICE_REQUEST.0,
            MessageType::USERAUTH_REQUEST.0
        ]
    );
    assert!(
        received[1].ends_with(b"\0\0\0\x04none"),
        "the request ahead is `none`"
    );
    let mut accept = vec![MessageType::SERVICE_ACCEPT.0, 0, 0, 0, 12];
    accept.extend_from_slice(b"ssh-userauth");
    pair.server_sends(&accept);
    pair.drive();
    assert_eq!(pair.error, None);
    // SERVICE_ACCEPT sends nothing more: the `none` request is already answered or due.
    assert_eq!(kinds(&pair.take_received()), [] as [u8; 0]);
}

// ---- deferred channel data ----------------------------------------------------------------

/// An authenticated pair with one confirmed `direct-tcpip` channel set to deferred delivery.
fn deferring_channel() -> (Pair, ChannelId) {
    let (mut pair, id) = open_channel(Pair::authenticated(None), 1 << 20);
    pair.session.set_deferred_delivery(id, true);
    (pair, id)
}

/// `pair` with one more `direct-tcpip` channel, confirmed by the server with `window` and a
/// maximum packet of 32 KiB.
fn open_channel(mut pair: Pair, window: u32) -> (Pair, ChannelId) {
    let id = pair
        .session
        .open_direct_tcpip("db", 5432, "127.0.0.1", 40000)
        .expect("open");
    pair.drive();
    let mut confirm = vec![MessageType::CHANNEL_OPEN_CONFIRMATION.0];
    for v in [id.0, 7, window, 32768] {
        confirm.extend_from_slice(&v.to_be_bytes());
    }
    pair.server_sends(&confirm);
    pair.drive();
    assert_eq!(pair.error, None);
    (pair, id)
}

fn channel_data(id: ChannelId, data: &[u8]) -> Vec<u8> {
    let mut p = vec![MessageType::CHANNEL_DATA.0];
    p.extend_from_slice(&id.0.to_be_bytes());
    p.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
    p.extend_from_slice(data);
    p
}

/// Delivers channel `id`'s data to a writer that takes at most `limit` bytes; returns what
/// it wrote, the count `deliver` reported and the number of parts it was handed.
fn deliver_up_to(pair: &mut Pair, id: ChannelId, limit: usize) -> (Vec<u8>, (usize, usize), usize) {
    let mut wrote = Vec::new();
    let mut parts = 0;
    let counts = pair.session.deliver(id, &mut |slices| {
        parts = slices.len();
        for s in slices {
            let room = limit - wrote.len();
            wrote.extend_from_slice(&s[..s.len().min(room)]);
        }
        wrote.len()
    });
    (wrote, counts, parts)
}

#[test]
fn deferred_data_is_handed_out_in_order_from_the_receive_buffer_and_the_rest_is_buffered() {
    let (mut pair, id) = deferring_channel();
    for byte in [b'a', b'b', b'c'] {
        pair.server_sends(&channel_data(id, &[byte; 1000]));
    }
    pair.drive();
    assert_eq!(pair.error, None);
    assert!(
        pair.events.iter().any(|e| e.contains("Data")),
        "{:?}",
        pair.events
    );
    assert!(
        pair.session.connection().received(id).is_empty(),
        "the data stays where it was decrypted"
    );

    // A writer that takes half: the rest goes into the channel's buffer, in order.
    let (wrote, counts, parts) = deliver_up_to(&mut pair, id, 1500);
    assert_eq!(parts, 3, "one part per payload");
    assert_eq!(counts, (1500, 3000));
    assert_eq!(wrote, [[b'a'; 1000].as_slice(), &[b'b'; 500]].concat());
    assert_eq!(
        pair.session.connection().received(id),
        [[b'b'; 500].as_slice(), &[b'c'; 1000]].concat()
    );

    // More data, then EOF: the EOF makes the deferred data go into the buffer first.
    pair.server_sends(&channel_data(id, &[b'd'; 700]));
    let mut eof = vec![MessageType::CHANNEL_EOF.0];
    eof.extend_from_slice(&id.0.to_be_bytes());
    pair.server_sends(&eof);
    pair.drive();
    assert_eq!(pair.error, None);
    assert_eq!(pair.session.connection().received(id).len(), 2200);
    let (wrote, counts, parts) = deliver_up_to(&mut pair, id, usize::MAX);
    assert_eq!((counts, parts), ((2200, 2200), 1));
    assert_eq!(
        wrote,
        [[b'b'; 500].as_slice(), &[b'c'; 1000], &[b'd'; 700]].concat()
    );
    assert!(pair.session.connection().received(id).is_empty());
}

#[test]
fn buffered_data_goes_first_and_reading_into_the_receive_buffer_buffers_what_waits() {
    let (mut pair, id) = deferring_channel();
    pair.server_sends(&channel_data(id, b"first "));
    pair.drive();
    // Nothing delivered: the next read moves the deferred bytes into the channel buffer.
    let _ = pair.session.read_space(1);
    pair.session.commit_input(0, pair.now);
    assert_eq!(pair.session.connection().received(id), b"first ");
    pair.server_sends(&channel_data(id, b"second"));
    pair.drive();
    assert_eq!(pair.session.connection().received(id), b"first ");
    let (wrote, counts, parts) = deliver_up_to(&mut pair, id, usize::MAX);
    assert_eq!(
        (counts, parts),
        ((12, 12), 2),
        "the buffer, then the payload"
    );
    assert_eq!(wrote, b"first second");
    // Nothing left: delivering again hands out nothing.
    assert_eq!(deliver_up_to(&mut pair, id, usize::MAX).1, (0, 0));
}

#[test]
fn many_small_payloads_are_deferred_at_most_max_deferred_at_once_and_stay_in_order() {
    let (mut pair, id) = deferring_channel();
    let mut expected = Vec::new();
    for i in 0..(MAX_DEFERRED * 2 + 5) {
        let chunk = format!("<{i}>");
        expected.extend_from_slice(chunk.as_bytes());
        pair.server_sends(&channel_data(id, chunk.as_bytes()));
    }
    pair.drive();
    assert_eq!(pair.error, None);
    let (wrote, counts, parts) = deliver_up_to(&mut pair, id, usize::MAX);
    assert!(parts <= MAX_DEFERRED + 1, "{parts} parts");
    assert_eq!(counts, (expected.len(), expected.len()));
    assert_eq!(wrote, expected);
}

#[test]
fn turning_deferral_off_buffers_what_waits_and_later_data_follows_it() {
    let (mut pair, id) = deferring_channel();
    pair.server_sends(&channel_data(id, b"one "));
    pair.drive();
    pair.session.set_deferred_delivery(id, false);
    assert_eq!(pair.session.connection().received(id), b"one ");
    pair.server_sends(&channel_data(id, b"two"));
    pair.drive();
    assert_eq!(pair.session.connection().received(id), b"one two");
}

#[test]
fn delivered_deferred_data_is_credited_to_the_server_window() {
    let (mut pair, id) = deferring_channel();
    let _ = pair.take_received();
    // Enough for the credit threshold (three maximum packets at most, half the window).
    for _ in 0..40 {
        pair.server_sends(&channel_data(id, &[7; 32768]));
        pair.drive();
        let (_, (n, total), _) = deliver_up_to(&mut pair, id, usize::MAX);
        assert_eq!(n, total);
        pair.drive();
    }
    assert_eq!(pair.error, None);
    let adjusts = pair
        .take_received()
        .into_iter()
        .filter(|p| p.first() == Some(&MessageType::CHANNEL_WINDOW_ADJUST.0))
        .count();
    assert!(adjusts > 0, "written deferred data was credited");
}

/// What to do after the server sent one CHANNEL_DATA.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Nothing: more data piles up behind it.
    Wait,
    /// A write that takes at most this many bytes.
    Deliver(usize),
    /// A read into the receive buffer (which buffers what was deferred).
    Read,
    /// Deferral off and on again.
    Toggle,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        Just(Step::Wait),
        (0usize..70_000).prop_map(Step::Deliver),
        Just(Step::Read),
        Just(Step::Toggle),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Whatever the sizes, partial writes, reads and toggles, the bytes written and then
    /// buffered are exactly the bytes the server sent, in order.
    #[test]
    fn deferred_delivery_loses_and_reorders_nothing(
        ops in proptest::collection::vec((1usize..=32768, step()), 1..40)
    ) {
        let (mut pair, id) = deferring_channel();
        let mut sent = Vec::new();
        let mut out = Vec::new();
        for (i, (size, step)) in ops.into_iter().enumerate() {
            let data: Vec<u8> = (0..size).map(|j| (i * 7 + j / 251) as u8).collect();
            sent.extend_from_slice(&data);
            pair.server_sends(&channel_data(id, &data));
            pair.drive();
            proptest::prop_assert_eq!(&pair.error, &None);
            match step {
                Step::Wait => {}
                Step::Deliver(limit) => {
                    let (wrote, (n, total), _) = deliver_up_to(&mut pair, id, limit);
                    proptest::prop_assert_eq!(n, wrote.len());
                    proptest::prop_assert_eq!(n, total.min(limit));
                    out.extend_from_slice(&wrote);
                }
                Step::Read => {
                    let _ = pair.session.read_space(1);
                    pair.session.commit_input(0, pair.now);
                }
                Step::Toggle => {
                    pair.session.set_deferred_delivery(id, false);
                    pair.session.set_deferred_delivery(id, true);
                }
            }
        }
        let (wrote, (n, total), _) = deliver_up_to(&mut pair, id, usize::MAX);
        proptest::prop_assert_eq!(n, total);
        out.extend_from_slice(&wrote);
        proptest::prop_assert_eq!(out.len(), sent.len());
        proptest::prop_assert!(out == sent, "the bytes differ");
        proptest::prop_assert!(pair.session.connection().received(id).is_empty());
    }
}

// ---- data read straight into packets ------------------------------------------------------

/// Reads up to `limit` bytes of `source` (from `at` on) into the slices `send_data_from`
/// hands out; returns the bytes read, or `None` if the closure was not called.
fn send_from(
    pair: &mut Pair,
    id: ChannelId,
    max: usize,
    source: &[u8],
    at: &mut usize,
    limit: usize,
) -> Option<usize> {
    let mut called = false;
    let sent = pair
        .session
        .send_data_from(id, max, &mut |slices| {
            called = true;
            let mut n = 0;
            for s in slices.iter_mut() {
                let k = s.len().min(limit - n).min(source.len() - *at);
                s[..k].copy_from_slice(&source[*at..*at + k]);
                *at += k;
                n += k;
            }
            n
        })
        .expect("send_data_from");
    assert_eq!(
        sent.is_some(),
        called,
        "fill is called exactly when data can go"
    );
    sent
}

/// The data of the CHANNEL_DATA messages the server received for recipient 7, in order;
/// each message is checked to be at most the maximum packet.
fn data_received(pair: &mut Pair) -> Vec<u8> {
    let mut data = Vec::new();
    for p in pair.take_received() {
        if p.first() == Some(&MessageType::CHANNEL_DATA.0) {
            assert_eq!(&p[1..5], &7u32.to_be_bytes());
            let len = u32::from_be_bytes(p[5..9].try_into().unwrap()) as usize;
            assert_eq!(p.len(), 9 + len);
            assert!(len > 0 && len <= 32768, "{len}");
            data.extend_from_slice(&p[9..]);
        }
    }
    data
}

#[test]
fn data_read_into_packets_arrives_in_order_and_stops_at_the_window() {
    let (mut pair, id) = open_channel(Pair::authenticated(None), 300_000);
    pair.take_received();
    let source: Vec<u8> = (0..400_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut at = 0;
    // Reads of every shape: full, short, empty, then one the window cuts.
    for (max, limit) in [
        (131_072, 131_072),
        (131_072, 5),
        (131_072, 0),
        (40_000, 40_000),
        (16_384, 100),
        (200_000, 200_000),
    ] {
        let before = at;
        let n = send_from(&mut pair, id, max, &source, &mut at, limit).expect("window open");
        assert_eq!(n, at - before);
        pair.drive();
        assert_eq!(pair.error, None);
    }
    assert_eq!(at, 300_000, "the last read was cut to the window");
    assert_eq!(data_received(&mut pair), &source[..300_000]);
    // The window is spent: no read until the server adjusts it.
    assert_eq!(send_from(&mut pair, id, 1000, &source, &mut at, 1000), None);
    let mut adjust = vec![MessageType::CHANNEL_WINDOW_ADJUST.0];
    adjust.extend_from_slice(&id.0.to_be_bytes());
    adjust.extend_from_slice(&50_000u32.to_be_bytes());
    pair.server_sends(&adjust);
    pair.drive();
    assert_eq!(
        send_from(&mut pair, id, 131_072, &source, &mut at, usize::MAX),
        Some(50_000)
    );
    pair.drive();
    assert_eq!(data_received(&mut pair), &source[300_000..350_000]);
    // After our EOF the channel takes no more.
    pair.session.send_eof(id);
    assert_eq!(send_from(&mut pair, id, 1000, &source, &mut at, 1000), None);
}

#[test]
fn data_read_while_a_key_exchange_holds_packets_back_is_sent_after_it_in_order() {
    let mut auth = AuthConfig::new("tester".into(), Vec::new());
    auth.publickey = false;
    auth.password = false;
    auth.keyboard_interactive = false;
    let transport = ClientConfig {
        rekey_limit: Some(100_000),
        ..ClientConfig::default()
    };
    let mut pair = Pair::with_config(auth, transport, None);
    pair.drive();
    assert!(pair.session.is_authenticated(), "{:?}", pair.events);
    let (mut pair, id) = open_channel(pair, 1 << 30);
    pair.take_received();
    let source: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13 % 253) as u8).collect();
    let mut at = 0;
    // Without driving in between, a rekey starts after the first 100 kB and the next reads
    // are held back with the rest until it ends.
    let mut reads = 0;
    while at < source.len() {
        let n = send_from(&mut pair, id, 65_536, &source, &mut at, 65_536).expect("window");
        assert!(n > 0);
        reads += 1;
        if reads % 4 == 0 {
            pair.drive();
            assert_eq!(pair.error, None);
        }
    }
    pair.drive();
    assert_eq!(pair.error, None);
    let kexes = pair.session.transport().kex_count();
    assert!(kexes >= 5, "rekeyed {} times", kexes - 1);
    assert_eq!(data_received(&mut pair), source);
}
