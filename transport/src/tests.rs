//! The client transport run in memory against the test server, and against scripted hostile
//! peers that send exactly the bytes a test wants.

use std::time::{Duration, Instant};

use crate::cipher::{self, CipherAlgorithm};
use crate::client::{ClientConfig, ClientTransport, Event};
use crate::error::Error;
use crate::kex::{self, KexAlgorithm, KexInit};
use crate::msg::MessageType;
use crate::packet::{PacketError, Tx};
use crate::server::{SeededRandom, ServerConfig, ServerEvent, ServerTransport};
use crate::sink::PayloadSink;
use crate::wire::Writer;

/// A client and the test server joined in memory. Like the session router, it tells the
/// client transport that authentication succeeded as soon as it is handed USERAUTH_SUCCESS.
pub(crate) struct Pair {
    pub(crate) client: ClientTransport,
    pub(crate) server: ServerTransport,
    pub(crate) to_client: Vec<Vec<u8>>,
    pub(crate) to_server: Vec<Vec<u8>>,
    pub(crate) client_events: Vec<String>,
    pub(crate) accept_host_key: bool,
    pub(crate) client_error: Option<Error>,
    /// Bytes moved each way, for compression ratios.
    pub(crate) wire_to_server: usize,
    pub(crate) wire_to_client: usize,
}

impl Pair {
    pub(crate) fn new(client: ClientConfig, server: ServerConfig) -> Self {
        Self {
            client: ClientTransport::new(client, Box::new(SeededRandom::new(1)), Instant::now()),
            server: ServerTransport::new(server, Box::new(SeededRandom::new(2))),
            to_client: Vec::new(),
            to_server: Vec::new(),
            client_events: Vec::new(),
            accept_host_key: true,
            client_error: None,
            wire_to_server: 0,
            wire_to_client: 0,
        }
    }

    /// Moves bytes both ways and collects events until nothing moves.
    pub(crate) fn drive(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let out = self.client.output().to_vec();
            if !out.is_empty() {
                self.client.consume_output(out.len());
                self.server.handle_input(&out);
                self.wire_to_server += out.len();
                moved = true;
            }
            let out = self.server.output().to_vec();
            if !out.is_empty() {
                self.server.consume_output(out.len());
                self.client.handle_input(&out);
                self.wire_to_client += out.len();
                moved = true;
            }
            loop {
                match self.server.poll_event() {
                    Ok(Some(ServerEvent::Payload(p))) => self.to_server.push(p.to_vec()),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
                moved = true;
            }
            loop {
                let mut auth_success = false;
                let decision = match self.client.poll_event() {
                    Ok(Some(Event::Payload { data, .. })) => {
                        auth_success = data.first() == Some(&MessageType::USERAUTH_SUCCESS.0);
                        self.to_client.push(data.to_vec());
                        None
                    }
                    Ok(Some(Event::VerifyHostKey(k))) => Some(k.fingerprint()),
                    Ok(Some(Event::Established)) => {
                        self.client_events.push("established".into());
                        None
                    }
                    Ok(Some(Event::Rekeyed)) => {
                        self.client_events.push("rekeyed".into());
                        None
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.client_error = Some(e);
                        break;
                    }
                };
                if auth_success {
                    self.client.auth_succeeded();
                }
                if let Some(fp) = decision {
                    self.client_events.push(format!("hostkey {fp}"));
                    if self.accept_host_key {
                        self.client.accept_host_key();
                    } else {
                        self.client.reject_host_key("refused by test".into());
                    }
                }
                moved = true;
            }
            // A reply to prove elsewhere (when the client was told to): on another thread.
            if let Some(work) = self.client.take_kex_work() {
                let done = std::thread::spawn(move || work.run())
                    .join()
                    .expect("the work ran");
                self.client.finish_kex_work(done);
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("the pair did not settle");
    }
}

fn config(kex: KexAlgorithm, cipher: CipherAlgorithm) -> ClientConfig {
    ClientConfig {
        kex_algorithms: vec![kex],
        ciphers: vec![cipher],
        ..ClientConfig::default()
    }
}

#[test]
fn handshake_completes_for_every_kex_and_cipher() {
    for kex in KexAlgorithm::ALL {
        for c in cipher::ALL {
            let mut p = Pair::new(config(*kex, *c), ServerConfig::default());
            p.drive();
            assert_eq!(p.client_error, None, "{kex} {}", c.name);
            assert!(p.client.is_established());
            assert_eq!(p.client.session_id(), p.server.session_id());
            let n = p.client.negotiated().unwrap();
            assert_eq!((n.kex, n.cipher_c2s, n.cipher_s2c), (*kex, *c, *c));
            assert!(n.strict);
            assert_eq!(
                p.client.server_sig_algs().map(<[String]>::to_vec),
                ServerConfig::default().server_sig_algs
            );
            let fp = p.server.host_public_key().fingerprint();
            assert_eq!(
                p.client_events,
                [format!("hostkey {fp}"), "established".into()]
            );
            // Payloads flow both ways.
            p.client.send(b"\x5ahello server");
            p.server.send(b"\x5bhello client");
            p.drive();
            assert_eq!(p.to_server, [b"\x5ahello server".to_vec()]);
            assert_eq!(p.to_client, [b"\x5bhello client".to_vec()]);
        }
    }
}

pub(crate) fn payload(i: u32, len: usize) -> Vec<u8> {
    let mut p = vec![94u8];
    p.extend_from_slice(&i.to_be_bytes());
    p.extend((0..len).map(|j| (j as u32 ^ i) as u8));
    p
}

#[test]
fn rekey_in_the_middle_of_a_transfer_loses_nothing() {
    for c in cipher::ALL {
        let mut p = Pair::new(
            config(KexAlgorithm::Curve25519Sha256, *c),
            ServerConfig::default(),
        );
        p.drive();
        let mut sent_c = Vec::new();
        let mut sent_s = Vec::new();
        for i in 0..600u32 {
            let a = payload(i, (i as usize * 53) % 3000);
            let b = payload(i + 7, (i as usize * 31) % 3000);
            p.client.send(&a);
            p.server.send(&b);
            sent_c.push(a);
            sent_s.push(b);
            match i % 100 {
                10 => p.client.rekey(),
                60 => p.server.rekey(),
                _ => {}
            }
            // Deliver only some of the time so that rekeys overlap with queued data.
            if i % 7 == 0 {
                p.drive();
            }
        }
        p.drive();
        assert_eq!(p.client_error, None);
        assert_eq!(p.to_server, sent_c, "{}", c.name);
        assert_eq!(p.to_client, sent_s, "{}", c.name);
        assert!(
            p.client.kex_count() >= 12,
            "kex count {}",
            p.client.kex_count()
        );
        assert_eq!(p.client.kex_count(), p.server.kex_count);
    }
}

#[test]
fn byte_limit_triggers_client_rekeys() {
    let mut cfg = config(KexAlgorithm::Curve25519Sha256, cipher::AES128_GCM);
    cfg.rekey_limit = Some(64 * 1024);
    let mut p = Pair::new(cfg, ServerConfig::default());
    p.drive();
    let mut sent = Vec::new();
    for i in 0..400u32 {
        let a = payload(i, 4000);
        p.client.send(&a);
        sent.push(a);
        if i % 3 == 0 {
            p.drive();
        }
    }
    p.drive();
    assert_eq!(p.to_server, sent);
    // 1.6 MB at 64 KiB a key: about 24 exchanges.
    assert!(
        p.client.kex_count() > 20,
        "kex count {}",
        p.client.kex_count()
    );
    assert!(p.client_events.iter().filter(|e| *e == "rekeyed").count() > 20);
}

#[test]
fn time_limit_triggers_a_rekey() {
    let cfg = ClientConfig {
        rekey_interval: Some(Duration::from_secs(60)),
        ..ClientConfig::default()
    };
    let t0 = Instant::now();
    let mut p = Pair::new(cfg, ServerConfig::default());
    p.drive();
    // The exchange finished with no clock at hand: the transport asks for a tick at once
    // (an idle session has nothing else that would give it one), then counts from it.
    let due = p.client.poll_timeout().expect("a tick is asked for");
    assert!(due <= Instant::now());
    p.client.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(p.client.poll_timeout(), Some(t0 + Duration::from_secs(61)));
    p.client.handle_timeout(t0 + Duration::from_secs(62));
    p.drive();
    assert_eq!(p.client.kex_count(), 2);
    // And again after the rekey, from the tick that follows it.
    assert_eq!(p.client.poll_timeout(), Some(t0 + Duration::from_secs(62)));
    p.client.handle_timeout(t0 + Duration::from_secs(63));
    assert_eq!(p.client.poll_timeout(), Some(t0 + Duration::from_secs(123)));
}

#[test]
fn without_a_time_limit_an_established_transport_wants_no_timer() {
    let mut p = Pair::new(ClientConfig::default(), ServerConfig::default());
    p.drive();
    assert_eq!(p.client.poll_timeout(), None);
}

/// The server sends `n` IGNORE messages to the client, and never reads what the client sent
/// (as a server that does not answer our KEXINIT): only the client's input moves.
fn ignore_flood(p: &mut Pair, n: usize) {
    for _ in 0..n {
        p.server
            .send(&[MessageType::IGNORE.0, 0, 0, 0, 4, b'b', b'u', b's', b'y']);
    }
    let out = p.server.output().to_vec();
    p.server.consume_output(out.len());
    p.client.handle_input(&out);
    let held = p.client.output().len();
    p.client.consume_output(held);
}

#[test]
fn a_rekey_the_server_never_answers_fails_at_the_handshake_timeout_despite_ignore_traffic() {
    let mut p = Pair::new(ClientConfig::default(), ServerConfig::default());
    p.drive();
    assert!(p.client.is_established());
    assert_eq!(p.client.poll_timeout(), None);
    p.client.rekey();
    // Our KEXINIT left; the deadline counts from the next tick, which is asked for at once.
    let due = p.client.poll_timeout().expect("a tick is asked for");
    assert!(due <= Instant::now());
    let t0 = Instant::now() + Duration::from_secs(1);
    p.client.handle_timeout(t0);
    assert_eq!(p.client.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    for s in [1, 10, 29] {
        ignore_flood(&mut p, 100);
        assert_eq!(client_failure(&mut p.client), None);
        p.client.handle_timeout(t0 + Duration::from_secs(s));
        assert_eq!(client_failure(&mut p.client), None, "at {s} s");
    }
    ignore_flood(&mut p, 100);
    p.client.handle_timeout(t0 + Duration::from_secs(30));
    let e = client_failure(&mut p.client).expect("the rekey timed out");
    assert_eq!(e, Error::RekeyTimeout(Duration::from_secs(30)));
    assert!(
        e.to_string()
            .starts_with("the server did not finish a key re-exchange within 30 s"),
        "{e}"
    );
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn a_rekey_the_server_starts_and_never_finishes_fails_at_the_handshake_timeout() {
    let cfg = ClientConfig {
        handshake_timeout: Some(Duration::from_secs(5)),
        ..ClientConfig::default()
    };
    let mut p = Pair::new(cfg, ServerConfig::default());
    p.drive();
    // The server's KEXINIT reaches the client, which answers; the server goes no further.
    p.server.rekey();
    ignore_flood(&mut p, 1);
    assert_eq!(client_failure(&mut p.client), None);
    let t0 = Instant::now() + Duration::from_secs(1);
    p.client.handle_timeout(t0);
    assert_eq!(p.client.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    ignore_flood(&mut p, 10);
    p.client.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(
        client_failure(&mut p.client),
        Some(Error::RekeyTimeout(Duration::from_secs(5)))
    );
}

#[test]
fn a_rekey_that_finishes_leaves_no_deadline_behind() {
    let mut p = Pair::new(ClientConfig::default(), ServerConfig::default());
    p.drive();
    p.client.rekey();
    let t0 = Instant::now() + Duration::from_secs(1);
    p.client.handle_timeout(t0);
    assert!(p.client.poll_timeout().is_some());
    p.drive();
    assert_eq!(p.client.kex_count(), 2);
    assert_eq!(p.client.poll_timeout(), None);
    p.client.handle_timeout(t0 + Duration::from_secs(3600));
    assert_eq!(client_failure(&mut p.client), None);
    // The session still carries data both ways.
    p.client.send(&[MessageType::IGNORE.0, 0, 0, 0, 0]);
    p.server.send(&[94, 1]);
    p.drive();
    assert!(p.to_client.iter().any(|m| m == &[94, 1]));
    assert_eq!(p.client_error, None);
}

#[test]
fn flipped_byte_is_a_mac_error_and_nothing_is_delivered() {
    for c in cipher::ALL {
        let mut p = Pair::new(
            config(KexAlgorithm::Curve25519Sha256, *c),
            ServerConfig::default(),
        );
        p.drive();
        p.server
            .send(b"\x5eimportant data that must not be altered");
        let mut out = p.server.output().to_vec();
        p.server.consume_output(out.len());
        let at = out.len() - 20;
        out[at] ^= 0x01;
        p.client.handle_input(&out);
        match p.client.poll_event() {
            Err(Error::Packet(PacketError::Integrity)) => {}
            other => panic!("{}: expected a MAC error, got {other:?}", c.name),
        }
        // The client stays failed and has queued a DISCONNECT for the server.
        assert!(p.client.poll_event().is_err());
        assert!(!p.client.output().is_empty());
        assert!(p.to_client.is_empty());
    }
}

#[test]
fn rejected_host_key_stops_before_newkeys() {
    let mut p = Pair::new(ClientConfig::default(), ServerConfig::default());
    p.accept_host_key = false;
    p.drive();
    assert_eq!(
        p.client_error,
        Some(Error::HostKeyRejected("refused by test".into()))
    );
    assert!(!p.client.is_established());
}

#[test]
fn host_key_change_during_rekey_is_refused() {
    let mut p = Pair::new(ClientConfig::default(), ServerConfig::default());
    p.drive();
    p.server.replace_host_key([0x99; 32]);
    p.client.rekey();
    p.drive();
    assert!(matches!(
        p.client_error,
        Some(Error::HostKeyChangedInRekey { .. })
    ));
}

#[test]
fn strict_kex_refuses_a_packet_before_kexinit() {
    let server = ServerConfig {
        ignore_before_kexinit: true,
        ..ServerConfig::default()
    };
    let mut p = Pair::new(ClientConfig::default(), server);
    p.drive();
    assert!(
        matches!(p.client_error, Some(Error::StrictKex(_))),
        "{:?}",
        p.client_error
    );
    // Without strict kex the same IGNORE is harmless.
    let server = ServerConfig {
        ignore_before_kexinit: true,
        strict_kex: false,
        ..ServerConfig::default()
    };
    let mut p = Pair::new(ClientConfig::default(), server);
    p.drive();
    assert_eq!(p.client_error, None);
    assert!(p.client.is_established());
    assert!(!p.client.negotiated().unwrap().strict);
}

#[test]
fn no_ext_info_means_no_server_sig_algs() {
    let server = ServerConfig {
        server_sig_algs: None,
        ..ServerConfig::default()
    };
    let mut p = Pair::new(ClientConfig::default(), server);
    p.drive();
    assert!(p.client.is_established());
    assert_eq!(p.client.server_sig_algs(), None);
}

#[test]
fn no_common_cipher_names_both_lists() {
    let server = ServerConfig {
        ciphers: vec![cipher::CHACHA20_POLY1305],
        ..ServerConfig::default()
    };
    let mut p = Pair::new(
        config(KexAlgorithm::Curve25519Sha256, cipher::AES256_GCM),
        server,
    );
    p.drive();
    let e = p.client_error.expect("error");
    let text = e.to_string();
    assert!(
        text.contains("aes256-gcm@openssh.com") && text.contains("chacha20-poly1305@openssh.com"),
        "{text}"
    );
}

// ---- scripted hostile peers ------------------------------------------------------------

/// A client fed `bytes` as the whole server stream.
pub(crate) fn client_fed(bytes: &[u8]) -> (ClientTransport, Result<(), Error>) {
    let mut c = ClientTransport::new(
        ClientConfig::default(),
        Box::new(SeededRandom::new(3)),
        Instant::now(),
    );
    c.handle_input(bytes);
    let r = loop {
        match c.poll_event() {
            Ok(Some(Event::VerifyHostKey(_))) => c.accept_host_key(),
            Ok(Some(_)) => {}
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    (c, r)
}

pub(crate) fn plaintext_packets(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut tx = Tx::default();
    let mut rng = SeededRandom::new(9);
    for p in payloads {
        tx.frame(&mut rng, &mut |b| b.extend_from_slice(p));
    }
    tx.output().to_vec()
}

fn server_kexinit(strict: bool) -> Vec<u8> {
    let mut kexes = vec!["curve25519-sha256".to_string()];
    if strict {
        kexes.push(kex::STRICT_KEX_S.into());
    }
    let k = KexInit::new(
        &mut SeededRandom::new(5),
        kexes,
        vec!["ssh-ed25519".into()],
        vec!["aes128-gcm@openssh.com".into()],
        vec![],
        vec!["none".into()],
    );
    let mut b = Vec::new();
    k.encode(&mut b);
    b
}

#[test]
fn banner_that_never_ends_is_an_error_after_bounded_input() {
    let endless = vec![b'x'; 100_000];
    let (_, r) = client_fed(&endless);
    assert!(matches!(r, Err(Error::Version(_))), "{r:?}");
    let lines = b"hello\r\n".repeat(2000);
    let (_, r) = client_fed(&lines);
    assert!(matches!(r, Err(Error::Version(_))), "{r:?}");
}

#[test]
fn silent_server_hits_the_handshake_timeout() {
    let t0 = Instant::now();
    let mut c = ClientTransport::new(ClientConfig::default(), Box::new(SeededRandom::new(3)), t0);
    c.handle_input(b"SSH-2.0-Silent\r\n");
    assert!(matches!(c.poll_event(), Ok(None)));
    let deadline = c.poll_timeout().expect("a deadline");
    assert_eq!(deadline, t0 + Duration::from_secs(30));
    c.handle_timeout(deadline);
    assert!(matches!(c.poll_event(), Err(Error::HandshakeTimeout(_))));
}

#[test]
fn huge_packet_length_is_refused_without_waiting_or_allocating() {
    let mut s = b"SSH-2.0-Evil\r\n".to_vec();
    s.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 0, 0]);
    let (_, r) = client_fed(&s);
    assert_eq!(r, Err(Error::Packet(PacketError::TooLong(0x7fff_ffff))));
}

#[test]
fn wrong_padding_is_refused() {
    let mut s = b"SSH-2.0-Evil\r\n".to_vec();
    // length 12, padding 2
    s.extend_from_slice(&[0, 0, 0, 12, 2, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let (_, r) = client_fed(&s);
    assert_eq!(r, Err(Error::Packet(PacketError::BadPadding(2))));
}

#[test]
fn garbage_after_version_is_an_error() {
    let mut s = b"SSH-2.0-Evil\r\n".to_vec();
    s.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (_, r) = client_fed(&s);
    assert!(matches!(r, Err(Error::Packet(_))), "{r:?}");
}

#[test]
fn unexpected_message_during_initial_kex_disconnects() {
    let mut s = b"SSH-2.0-Evil\r\n".to_vec();
    // Non-strict server, then a channel message in the middle of the key exchange.
    s.extend(plaintext_packets(&[
        server_kexinit(false),
        vec![94, 0, 0, 0, 0],
    ]));
    let (c, r) = client_fed(&s);
    assert!(
        matches!(
            r,
            Err(Error::UnexpectedMessage {
                message: MessageType::CHANNEL_DATA,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(!c.output().is_empty(), "a DISCONNECT is queued");
    // A strict server may not even send IGNORE there.
    let mut s = b"SSH-2.0-Evil\r\n".to_vec();
    s.extend(plaintext_packets(&[
        server_kexinit(true),
        vec![2, 0, 0, 0, 0],
    ]));
    let (_, r) = client_fed(&s);
    assert!(matches!(r, Err(Error::StrictKex(_))), "{r:?}");
    // And a NEWKEYS out of order is refused too.
    let mut s = b"SSH-2.0-Evil\r\n".to_vec();
    s.extend(plaintext_packets(&[server_kexinit(true), vec![21]]));
    let (_, r) = client_fed(&s);
    assert!(matches!(r, Err(Error::StrictKex(_))), "{r:?}");
}

#[test]
fn zero_shared_secret_is_refused() {
    let mut s = b"SSH-2.0-Evil\r\n".to_vec();
    let mut reply = Vec::new();
    kex::EcdhReply {
        host_key: crate::hostkey::PublicKey::ed25519(&[1; 32]).blob().to_vec(),
        q_s: vec![0; 32],
        signature: vec![],
    }
    .encode(&mut reply);
    s.extend(plaintext_packets(&[server_kexinit(true), reply]));
    let (_, r) = client_fed(&s);
    assert!(
        matches!(&r, Err(Error::KeyExchange(w)) if w.contains("zero")),
        "{r:?}"
    );
}

#[test]
fn disconnect_from_server_is_reported_sanitized() {
    let mut s = b"SSH-2.0-Evil\r\n".to_vec();
    let mut d = Vec::new();
    kex::Disconnect {
        reason: crate::msg::DisconnectReason::TOO_MANY_CONNECTIONS,
        description: b"go away\x1b[31m".to_vec(),
    }
    .encode(&mut d);
    s.extend(plaintext_packets(&[d]));
    let (_, r) = client_fed(&s);
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        "the server disconnected (too many connections): go away\\x1b[31m"
    );
}

#[test]
fn host_key_of_another_type_than_negotiated_is_refused() {
    // The server negotiates ssh-ed25519 but sends an RSA-typed blob.
    let mut s = b"SSH-2.0-Evil\r\n".to_vec();
    let mut blob = Vec::new();
    blob.put_str("ssh-rsa");
    blob.put_mpint(&[1, 0, 1]);
    blob.put_mpint(&[0xc1; 256]);
    let mut reply = Vec::new();
    kex::EcdhReply {
        host_key: blob,
        q_s: vec![9; 32],
        signature: vec![],
    }
    .encode(&mut reply);
    s.extend(plaintext_packets(&[server_kexinit(true), reply]));
    let (_, r) = client_fed(&s);
    assert!(matches!(r, Err(Error::HostKey(_))), "{r:?}");
}

#[test]
fn random_server_bytes_never_panic() {
    use proptest::prelude::*;
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..600), |bytes| {
            let mut s = b"SSH-2.0-Fuzz\r\n".to_vec();
            s.extend_from_slice(&bytes);
            let _ = client_fed(&s);
            Ok(())
        })
        .unwrap();
}

#[test]
fn key_exchange_messages_outside_a_key_exchange_get_unimplemented_and_change_nothing() {
    let mut pair = Pair::new(ClientConfig::default(), ServerConfig::default());
    pair.drive();
    assert!(pair.client.is_established(), "{:?}", pair.client_events);
    let kex_count = pair.client.kex_count();
    // NEWKEYS (21), a kex method's reply (31) and the last of the range (49), each with a
    // body that would not decode as what it names.
    for msg in [21u8, 31, 49] {
        pair.server.send(&[msg, 1, 2, 3]);
        pair.drive();
        assert_eq!(pair.client_error, None, "message {msg}");
    }
    let unimplemented: Vec<&Vec<u8>> = pair
        .to_server
        .iter()
        .filter(|p| p.first() == Some(&MessageType::UNIMPLEMENTED.0))
        .collect();
    assert_eq!(unimplemented.len(), 3, "{:?}", pair.to_server);
    assert_eq!(
        pair.client.kex_count(),
        kex_count,
        "no key exchange started"
    );
    // The session still carries data both ways.
    pair.server.send(&[94, 0, 0, 0, 0, 0, 0, 0, 1, 7]);
    pair.client.send(&[94, 0, 0, 0, 0, 0, 0, 0, 1, 8]);
    pair.drive();
    assert_eq!(pair.client_error, None);
    assert!(pair.to_client.iter().any(|p| p.last() == Some(&7)));
    assert!(pair.to_server.iter().any(|p| p.last() == Some(&8)));
}

#[test]
fn a_server_that_stops_reading_while_it_asks_for_replies_fails_the_transport_at_the_output_limit() {
    let mut pair = Pair::new(ClientConfig::default(), ServerConfig::default());
    pair.drive();
    assert!(pair.client.is_established(), "{:?}", pair.client_events);
    // An unassigned transport message: each one asks for an UNIMPLEMENTED reply. The
    // client's output is never taken, as if the server had stopped reading.
    let mut sent = 0u64;
    let error = loop {
        for _ in 0..10_000 {
            pair.server.send(&[15]);
        }
        sent += 10_000;
        let out = pair.server.output().to_vec();
        pair.server.consume_output(out.len());
        pair.client.handle_input(&out);
        match client_failure(&mut pair.client) {
            Some(e) => break e,
            None => assert!(
                pair.client.pending_output() <= crate::client::MAX_PENDING_OUTPUT,
                "{} bytes pending",
                pair.client.pending_output()
            ),
        }
        assert!(sent < 10_000_000, "no limit after {sent} messages");
    };
    assert_eq!(
        error,
        Error::OutputOverflow(crate::client::MAX_PENDING_OUTPUT)
    );
    assert_eq!(error.disconnect_reason(), None);
    assert!(error.to_string().contains("stopped reading"), "{error}");
    // Failed for good, and what it held was not allowed to grow further.
    let held = pair.client.pending_output();
    assert!(
        held <= crate::client::MAX_PENDING_OUTPUT + 64 * 1024,
        "{held}"
    );
    for _ in 0..1000 {
        pair.server.send(&[15]);
    }
    let out = pair.server.output().to_vec();
    pair.client.handle_input(&out);
    assert!(matches!(
        pair.client.poll_event(),
        Err(Error::OutputOverflow(_))
    ));
    assert_eq!(pair.client.pending_output(), held);
}

#[test]
fn an_application_that_holds_its_data_back_never_meets_the_output_limit() {
    let mut pair = Pair::new(ClientConfig::default(), ServerConfig::default());
    pair.drive();
    // 1 MiB queued and unsent, as the driver's high-water mark allows, and more than the
    // limit sent and taken in turn: nothing fails.
    let chunk = vec![0x5a; 32 * 1024];
    for round in 0..100 {
        for _ in 0..32 {
            pair.client.send(&chunk);
        }
        assert!(pair.client.pending_output() >= 1 << 20, "round {round}");
        let out = pair.client.output().len();
        pair.client.consume_output(out);
        assert_eq!(client_failure(&mut pair.client), None, "round {round}");
    }
}

/// Polls the client's events until none is left: the error, if it failed.
fn client_failure(client: &mut ClientTransport) -> Option<Error> {
    loop {
        match client.poll_event() {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}
