//! Every cipher, MAC, compression method and host key type, run in memory between the client
//! and the test server: handshakes, transfers with rekeys in the middle, altered packets,
//! decompression bombs and negotiation failures.

use crate::cipher::{self, CipherAlgorithm};
use crate::client::ClientConfig;
use crate::compress::{Compression, DecompressError, Deflater, MAX_INFLATED_PAYLOAD};
use crate::error::Error;
use crate::hostkey::SignatureAlgorithm;
use crate::kex::{self, KexAlgorithm, KexInit};
use crate::mac::{self, MacAlgorithm};
use crate::msg::{DisconnectReason, MessageType};
use crate::packet::PacketError;
use crate::server::{SeededRandom, ServerConfig, TestHostKey};
use crate::sink::PayloadSink;
use crate::tests::{Pair, client_fed, payload, plaintext_packets};

/// Every cipher, each MAC (SHA-1 included) with every cipher that takes one.
fn protections() -> Vec<(CipherAlgorithm, Option<MacAlgorithm>)> {
    let mut v = Vec::new();
    for c in cipher::ALL {
        if c.aead {
            v.push((*c, None));
        } else {
            v.extend(mac::ALL.iter().map(|m| (*c, Some(*m))));
        }
    }
    v
}

fn config(c: CipherAlgorithm, m: Option<MacAlgorithm>, comp: &[Compression]) -> ClientConfig {
    ClientConfig {
        kex_algorithms: vec![KexAlgorithm::Curve25519Sha256],
        ciphers: vec![c],
        macs: m.map_or_else(|| mac::DEFAULT.to_vec(), |m| vec![m]),
        compression: comp.to_vec(),
        ..ClientConfig::default()
    }
}

fn name(c: CipherAlgorithm, m: Option<MacAlgorithm>) -> String {
    format!("{} {}", c.name, m.map_or("(AEAD)", |m| m.name))
}

/// A payload that compresses well, as database rows do.
fn rows(i: u32, n: usize) -> Vec<u8> {
    let mut p = vec![94u8];
    p.extend_from_slice(&i.to_be_bytes());
    for r in 0..n {
        p.extend_from_slice(
            format!("{r:06},customer {},2024-01-{:02};", r % 97, r % 28).as_bytes(),
        );
    }
    p
}

/// Sends `count` payloads each way, rekeying from both ends along the way and delivering only
/// now and then so that rekeys overlap queued data; checks everything arrived in order.
fn transfer_with_rekeys(p: &mut Pair, count: u32, make: impl Fn(u32) -> Vec<u8>) {
    let kex_before = p.client.kex_count();
    let (mut sent_c, mut sent_s) = (Vec::new(), Vec::new());
    let (base_c, base_s) = (p.to_server.len(), p.to_client.len());
    for i in 0..count {
        let a = make(i);
        let b = make(i + 100_000);
        p.client.send(&a);
        p.server.send(&b);
        sent_c.push(a);
        sent_s.push(b);
        match i % 50 {
            10 => p.client.rekey(),
            35 => p.server.rekey(),
            _ => {}
        }
        if i % 7 == 0 {
            p.drive();
        }
    }
    p.drive();
    assert_eq!(p.client_error, None);
    assert_eq!(p.to_server[base_c..], sent_c[..]);
    assert_eq!(p.to_client[base_s..], sent_s[..]);
    let rekeys = u64::from(count / 50) * 2;
    assert!(
        p.client.kex_count() >= kex_before + rekeys,
        "{} exchanges, expected {rekeys} more than {kex_before}",
        p.client.kex_count()
    );
    assert_eq!(p.client.kex_count(), p.server.kex_count);
}

#[test]
fn every_cipher_with_every_mac_handshakes_and_carries_data() {
    for (c, m) in protections() {
        let mut p = Pair::new(config(c, m, &[Compression::None]), ServerConfig::default());
        p.drive();
        assert_eq!(p.client_error, None, "{}", name(c, m));
        let n = p.client.negotiated().unwrap().clone();
        assert_eq!((n.cipher_c2s, n.cipher_s2c), (c, c), "{}", name(c, m));
        assert_eq!((n.mac_c2s, n.mac_s2c), (m, m), "{}", name(c, m));
        let shown = n.to_string();
        match m {
            Some(m) => assert!(shown.contains(&format!(", MAC {}", m.name)), "{shown}"),
            None => assert!(!shown.contains("MAC"), "{shown}"),
        }
        let big = payload(1, 32 * 1024);
        p.client.send(&big);
        p.server.send(&big);
        p.client.send(b"\x5asmall");
        p.drive();
        assert_eq!(
            p.to_server,
            [big.clone(), b"\x5asmall".to_vec()],
            "{}",
            name(c, m)
        );
        assert_eq!(p.to_client, [big], "{}", name(c, m));
    }
}

#[test]
fn rekey_in_the_middle_of_a_transfer_with_every_cipher_and_mac() {
    for (c, m) in protections() {
        let mut p = Pair::new(config(c, m, &[Compression::None]), ServerConfig::default());
        p.drive();
        transfer_with_rekeys(&mut p, 120, |i| payload(i, (i as usize * 53) % 3000));
        let n = p.client.negotiated().unwrap();
        assert_eq!((n.cipher_c2s, n.mac_c2s), (c, m), "{}", name(c, m));
    }
}

#[test]
fn flipped_byte_is_a_mac_error_under_each_mac_mode() {
    for (c, m) in protections() {
        // One byte of the body, one of the tag.
        for from_end in [m.map_or(16, |m| m.tag_len) + 3, 1] {
            let mut p = Pair::new(config(c, m, &[Compression::None]), ServerConfig::default());
            p.drive();
            p.server
                .send(b"\x5eimportant data that must not be altered");
            let mut out = p.server.output().to_vec();
            p.server.consume_output(out.len());
            let at = out.len() - from_end;
            out[at] ^= 0x01;
            p.client.handle_input(&out);
            match p.client.poll_event() {
                Err(e @ Error::Packet(PacketError::Integrity)) => {
                    assert_eq!(e.disconnect_reason(), Some(DisconnectReason::MAC_ERROR));
                }
                other => panic!("{}: expected a MAC error, got {other:?}", name(c, m)),
            }
            assert!(p.to_client.is_empty());
            assert!(!p.client.output().is_empty(), "a DISCONNECT is queued");
        }
    }
}

#[test]
fn defaults_offer_no_sha1_no_none_and_no_compression() {
    let d = ClientConfig::default();
    assert_eq!(d.macs, mac::DEFAULT);
    assert!(d.macs.iter().all(|m| !m.is_sha1()));
    assert_eq!(d.macs[0], mac::HMAC_SHA2_256_ETM);
    assert_eq!(d.compression, [Compression::None]);
    assert!(
        d.host_key_algorithms
            .iter()
            .all(|a| a.signature != SignatureAlgorithm::RsaSha1 && !a.certificate)
    );
    let plain: Vec<SignatureAlgorithm> =
        d.host_key_algorithms.iter().map(|a| a.signature).collect();
    assert_eq!(
        plain,
        [
            SignatureAlgorithm::Ed25519,
            SignatureAlgorithm::RsaSha512,
            SignatureAlgorithm::RsaSha256,
            SignatureAlgorithm::EcdsaP256,
            SignatureAlgorithm::EcdsaP384,
            SignatureAlgorithm::EcdsaP521,
        ]
    );
    let names: Vec<&str> = d.ciphers.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "aes128-gcm@openssh.com",
            "aes256-gcm@openssh.com",
            "chacha20-poly1305@openssh.com",
            "aes128-ctr",
            "aes192-ctr",
            "aes256-ctr",
        ]
    );
    // What goes on the wire: the client's first KEXINIT.
    let c = crate::client::ClientTransport::new(
        d,
        Box::new(SeededRandom::new(4)),
        std::time::Instant::now(),
    );
    let out = c.output();
    let line_end = out.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let packet = &out[line_end..];
    let padding = usize::from(packet[4]);
    let len = u32::from_be_bytes(packet[..4].try_into().unwrap()) as usize;
    let ours = KexInit::decode(&packet[5..4 + len - padding]).unwrap();
    for list in [&ours.mac_c2s, &ours.mac_s2c] {
        assert!(
            !list.iter().any(|m| m == "none" || m.contains("sha1")),
            "{list:?}"
        );
    }
    assert_eq!(ours.comp_c2s, ["none"]);
    assert!(!ours.host_key.iter().any(|h| h == "ssh-rsa"));
}

#[test]
fn a_server_offering_only_the_none_mac_is_refused_naming_both_lists() {
    let mut s = b"SSH-2.0-NoMac\r\n".to_vec();
    let server = KexInit::new(
        &mut SeededRandom::new(5),
        vec!["curve25519-sha256".into(), kex::STRICT_KEX_S.into()],
        vec!["ssh-ed25519".into()],
        vec!["aes128-ctr".into()],
        vec!["none".into()],
        vec!["none".into()],
    );
    let mut b = Vec::new();
    server.encode(&mut b);
    s.extend(plaintext_packets(&[b]));
    let (_, r) = client_fed(&s);
    let e = r.unwrap_err();
    assert!(
        matches!(&e, Error::NoCommonAlgorithm(n) if n.what == "MAC client to server"),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("hmac-sha2-256-etm@openssh.com") && text.contains("offers none"),
        "{text}"
    );
    assert_eq!(
        e.disconnect_reason(),
        Some(DisconnectReason::KEY_EXCHANGE_FAILED)
    );
}

#[test]
fn none_is_never_chosen_as_a_mac_even_if_both_sides_list_it() {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let make = |ciphers: &[&str], macs: &[&str]| KexInit {
        cookie: [0; 16],
        kex: s(&["curve25519-sha256"]),
        host_key: s(&["ssh-ed25519"]),
        cipher_c2s: s(ciphers),
        cipher_s2c: s(ciphers),
        mac_c2s: s(macs),
        mac_s2c: s(macs),
        comp_c2s: s(&["none"]),
        comp_s2c: s(&["none"]),
        lang_c2s: vec![],
        lang_s2c: vec![],
        first_kex_packet_follows: false,
    };
    let ctr = make(&["aes256-ctr"], &["none", "hmac-sha2-512"]);
    let only_none = make(&["aes256-ctr"], &["none"]);
    let e = kex::negotiate(&ctr, &only_none, true).unwrap_err();
    assert_eq!(e.what, "MAC client to server");
    assert_eq!(
        (e.ours.as_str(), e.theirs.as_str()),
        ("hmac-sha2-512", "none")
    );
    let n = kex::negotiate(&ctr, &ctr, true).unwrap();
    assert_eq!(n.mac_c2s, Some(mac::HMAC_SHA2_512));
    // With an AEAD cipher the MAC lists are not consulted at all.
    let gcm = make(&["aes128-gcm@openssh.com"], &["none"]);
    let n = kex::negotiate(&gcm, &make(&["aes128-gcm@openssh.com"], &[]), true).unwrap();
    assert_eq!((n.mac_c2s, n.mac_s2c), (None, None));
}

#[test]
fn mac_and_compression_mismatches_name_both_lists() {
    let server = ServerConfig {
        macs: vec![mac::HMAC_SHA2_256],
        ..ServerConfig::default()
    };
    let mut p = Pair::new(
        config(
            cipher::AES128_CTR,
            Some(mac::HMAC_SHA2_512_ETM),
            &[Compression::None],
        ),
        server,
    );
    p.drive();
    let text = p.client_error.expect("a negotiation error").to_string();
    assert!(
        text.contains("no MAC client to server algorithm")
            && text.contains("we offer hmac-sha2-512-etm@openssh.com")
            && text.contains("the server offers hmac-sha2-256"),
        "{text}"
    );
    let server = ServerConfig {
        compression: vec![Compression::None],
        ..ServerConfig::default()
    };
    let mut p = Pair::new(
        config(
            cipher::AES128_GCM,
            None,
            &[Compression::ZlibOpenssh, Compression::Zlib],
        ),
        server,
    );
    p.drive();
    let text = p.client_error.expect("a negotiation error").to_string();
    assert!(
        text.contains("no compression client to server algorithm")
            && text.contains("we offer zlib@openssh.com,zlib")
            && text.contains("the server offers none"),
        "{text}"
    );
}

#[test]
fn zlib_compresses_from_newkeys_and_survives_rekeys() {
    for (c, m) in [
        (cipher::AES128_GCM, None),
        (cipher::CHACHA20_POLY1305, None),
        (cipher::AES256_CTR, Some(mac::HMAC_SHA2_256_ETM)),
        (cipher::AES192_CTR, Some(mac::HMAC_SHA2_512)),
    ] {
        let mut p = Pair::new(config(c, m, &[Compression::Zlib]), ServerConfig::default());
        p.drive();
        assert_eq!(p.client_error, None);
        let n = p.client.negotiated().unwrap();
        assert_eq!(
            (n.compression_c2s, n.compression_s2c),
            (Compression::Zlib, Compression::Zlib)
        );
        assert!(n.to_string().contains(", compression zlib"), "{n}");
        assert_eq!(p.client.compressing(), (true, true));
        assert_eq!(p.server.is_compressing(), (true, true));
        let before = p.wire_to_server;
        transfer_with_rekeys(&mut p, 150, |i| rows(i, 40));
        let raw: usize = (0..150).map(|i| rows(i, 40).len()).sum();
        let wire = p.wire_to_server - before;
        assert!(
            wire * 4 < raw,
            "{}: {wire} bytes on the wire for {raw}",
            name(c, m)
        );
        assert_eq!(p.client.compressing(), (true, true));
    }
}

#[test]
fn delayed_compression_starts_at_auth_success_and_survives_rekeys() {
    for (c, m) in protections() {
        let mut p = Pair::new(
            config(c, m, &[Compression::ZlibOpenssh, Compression::None]),
            ServerConfig::default(),
        );
        p.drive();
        let n = p.client.negotiated().unwrap();
        assert_eq!(n.compression_c2s, Compression::ZlibOpenssh);
        assert_eq!(p.client.compressing(), (false, false), "{}", name(c, m));
        // A rekey before authentication keeps compression off.
        p.client.rekey();
        p.drive();
        assert_eq!(p.client.compressing(), (false, false));
        assert_eq!(p.server.is_compressing(), (false, false));
        // The auth exchange itself travels uncompressed; the server starts compressing right
        // after its USERAUTH_SUCCESS, the client right after reading it.
        p.client.send(b"\x32userauth request");
        p.drive();
        p.server.send(&[MessageType::USERAUTH_SUCCESS.0]);
        assert_eq!(p.server.is_compressing(), (true, true));
        p.server.send(b"\x50first compressed packet");
        p.drive();
        assert_eq!(p.client_error, None, "{}", name(c, m));
        assert_eq!(p.client.compressing(), (true, true));
        assert_eq!(
            p.to_client,
            [
                vec![MessageType::USERAUTH_SUCCESS.0],
                b"\x50first compressed packet".to_vec()
            ]
        );
        p.client.send(b"\x50client's first compressed packet");
        p.drive();
        assert_eq!(
            p.to_server.last().unwrap(),
            b"\x50client's first compressed packet"
        );
        transfer_with_rekeys(&mut p, 100, |i| rows(i, 30));
        assert_eq!(p.client.compressing(), (true, true), "{}", name(c, m));
        assert_eq!(p.server.is_compressing(), (true, true));
    }
}

#[test]
fn auth_succeeded_without_delayed_compression_changes_nothing() {
    let mut p = Pair::new(
        config(cipher::AES128_GCM, None, &[Compression::None]),
        ServerConfig::default(),
    );
    p.drive();
    p.server.send(&[MessageType::USERAUTH_SUCCESS.0]);
    p.drive();
    p.client.auth_succeeded();
    assert_eq!(p.client.compressing(), (false, false));
    p.client.send(b"\x5aafter auth");
    p.drive();
    assert_eq!(p.to_server, [b"\x5aafter auth".to_vec()]);
}

/// A few hundred bytes that inflate to far more than any payload may be.
fn bomb() -> Vec<u8> {
    let mut d = Deflater::default();
    d.new_keys(Compression::Zlib, true);
    let mut bomb = Vec::new();
    assert!(d.compress(&vec![0x5e; 4 * MAX_INFLATED_PAYLOAD], &mut bomb));
    assert!(bomb.len() < 4096, "{}", bomb.len());
    bomb
}

fn assert_refused_as_bomb(p: &Pair) {
    let e = p.client_error.clone().expect("the bomb is refused");
    assert_eq!(
        e,
        Error::Packet(PacketError::Decompress(DecompressError::TooLarge))
    );
    assert_eq!(
        e.disconnect_reason(),
        Some(DisconnectReason::COMPRESSION_ERROR)
    );
    assert!(e.to_string().contains("decompression bomb"), "{e}");
    assert!(p.to_client.iter().all(|m| m.len() <= MAX_INFLATED_PAYLOAD));
}

#[test]
fn a_decompression_bomb_from_the_server_is_refused() {
    // zlib: the bomb is the first packet of the server's stream after NEWKEYS (no EXT_INFO
    // before it).
    let server = ServerConfig {
        server_sig_algs: None,
        ..ServerConfig::default()
    };
    let mut p = Pair::new(
        config(
            cipher::AES128_CTR,
            Some(mac::HMAC_SHA2_256),
            &[Compression::Zlib],
        ),
        server,
    );
    p.drive();
    assert_eq!(p.client_error, None);
    p.server.send_raw_payload(&bomb());
    p.drive();
    assert_refused_as_bomb(&p);

    // zlib@openssh.com: the bomb is the first packet after USERAUTH_SUCCESS.
    let mut p = Pair::new(
        config(cipher::CHACHA20_POLY1305, None, &[Compression::ZlibOpenssh]),
        ServerConfig::default(),
    );
    p.drive();
    p.server.send(&[MessageType::USERAUTH_SUCCESS.0]);
    p.server.send_raw_payload(&bomb());
    p.drive();
    assert_refused_as_bomb(&p);
}

#[test]
fn every_ecdsa_host_key_type_handshakes() {
    for (kind, alg) in [
        (TestHostKey::EcdsaP256, SignatureAlgorithm::EcdsaP256),
        (TestHostKey::EcdsaP384, SignatureAlgorithm::EcdsaP384),
        (TestHostKey::EcdsaP521, SignatureAlgorithm::EcdsaP521),
        (TestHostKey::Ed25519, SignatureAlgorithm::Ed25519),
    ] {
        let server = ServerConfig {
            host_key_type: kind,
            ..ServerConfig::default()
        };
        let mut p = Pair::new(ClientConfig::default(), server);
        p.drive();
        assert_eq!(p.client_error, None, "{alg}");
        assert_eq!(p.client.negotiated().unwrap().host_key, alg.into());
        let key = p.client.host_key().unwrap();
        assert_eq!(key.key_type(), alg.key_type());
        assert_eq!(key, &p.server.host_public_key());
        // Rekeys re-verify the same key's signature.
        p.client.rekey();
        p.drive();
        assert_eq!(p.client_error, None, "{alg}");
        assert_eq!(p.client.kex_count(), 2);
    }
}

#[test]
fn a_host_key_type_we_do_not_offer_is_refused() {
    let server = ServerConfig {
        host_key_type: TestHostKey::EcdsaP521,
        ..ServerConfig::default()
    };
    let client = ClientConfig {
        host_key_algorithms: vec![
            SignatureAlgorithm::Ed25519.into(),
            SignatureAlgorithm::EcdsaP384.into(),
        ],
        ..ClientConfig::default()
    };
    let mut p = Pair::new(client, server);
    p.drive();
    let text = p.client_error.expect("refused").to_string();
    assert!(
        text.contains("no host key algorithm")
            && text.contains("ssh-ed25519,ecdsa-sha2-nistp384")
            && text.contains("ecdsa-sha2-nistp521"),
        "{text}"
    );
}
