//! Every key exchange method: in-memory handshakes with transfers and rekeys, published test
//! vectors through our `Agreement`s, and hostile server values refused with clear errors.

use std::time::Instant;

use ring::digest;

use crate::cipher;
use crate::client::{ClientConfig, ClientTransport, Event};
use crate::error::Error;
use crate::kex::dh::{self, Group};
use crate::kex::ecdh_nist::{NistEcdh, P256, P384, P521};
use crate::kex::gex::{self, GexGroup, GexRequest};
use crate::kex::{
    self, Agreement, ClientKex, ClientStep, HashPrefix, Hybrid, KexAlgorithm, KexError, KexInit,
    MlKem768Kem, Sntrup761Kem,
};
use crate::msg::MessageType;
use crate::packet::Tx;
use crate::random::SecureRandom;
use crate::server::{SeededRandom, ServerConfig, ServerEvent, ServerTransport};
use crate::sink::PayloadSink;
use crate::wire::Writer;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    digest::digest(&digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Random bytes from a script, for known-answer tests; zeros once the script runs out.
struct Script(Vec<u8>);

impl SecureRandom for Script {
    fn fill(&mut self, dest: &mut [u8]) {
        let n = dest.len().min(self.0.len());
        let rest: Vec<u8> = self.0.split_off(n);
        dest[..n].copy_from_slice(&self.0);
        dest[n..].fill(0);
        self.0 = rest;
    }
}

fn add_one(v: &[u8]) -> Vec<u8> {
    let mut out = v.to_vec();
    for b in out.iter_mut().rev() {
        let (sum, carry) = b.overflowing_add(1);
        *b = sum;
        if !carry {
            return out;
        }
    }
    out.insert(0, 1);
    out
}

fn mpint(magnitude: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.put_mpint(magnitude);
    v
}

fn string(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.put_string(bytes);
    v
}

// ---- the in-memory pair ---------------------------------------------------------------

struct Pair {
    client: ClientTransport,
    server: ServerTransport,
    to_client: Vec<Vec<u8>>,
    to_server: Vec<Vec<u8>>,
    client_error: Option<Error>,
}

impl Pair {
    fn new(kex: KexAlgorithm, ciphers: Vec<cipher::CipherAlgorithm>) -> Self {
        let client = ClientConfig {
            kex_algorithms: vec![kex],
            ciphers,
            ..ClientConfig::default()
        };
        Self {
            client: ClientTransport::new(client, Box::new(SeededRandom::new(11)), Instant::now()),
            server: ServerTransport::new(ServerConfig::default(), Box::new(SeededRandom::new(12))),
            to_client: Vec::new(),
            to_server: Vec::new(),
            client_error: None,
        }
    }

    fn drive(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let out = self.client.output().to_vec();
            if !out.is_empty() {
                self.client.consume_output(out.len());
                self.server.handle_input(&out);
                moved = true;
            }
            let out = self.server.output().to_vec();
            if !out.is_empty() {
                self.server.consume_output(out.len());
                self.client.handle_input(&out);
                moved = true;
            }
            while let Ok(Some(e)) = self.server.poll_event() {
                if let ServerEvent::Payload(p) = e {
                    self.to_server.push(p.to_vec());
                }
                moved = true;
            }
            loop {
                match self.client.poll_event() {
                    Ok(Some(Event::Payload { data, .. })) => self.to_client.push(data.to_vec()),
                    Ok(Some(Event::VerifyHostKey(_))) => self.client.accept_host_key(),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        self.client_error = Some(e);
                        return;
                    }
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("the pair did not settle");
    }
}

fn payload(i: u32, len: usize) -> Vec<u8> {
    let mut p = vec![94u8];
    p.extend_from_slice(&i.to_be_bytes());
    p.extend((0..len).map(|j| (j as u32 ^ i) as u8));
    p
}

#[test]
fn every_method_completes_a_handshake_a_transfer_and_rekeys_from_both_sides() {
    for &kex in KexAlgorithm::ALL {
        let mut p = Pair::new(kex, cipher::ALL.to_vec());
        p.drive();
        assert_eq!(p.client_error, None, "{kex}");
        assert!(p.client.is_established(), "{kex}");
        assert_eq!(p.client.negotiated().unwrap().kex, kex);
        let session_id = p.client.session_id().unwrap().to_vec();
        assert_eq!(session_id.len(), kex.hash().output_len(), "{kex}");
        assert_eq!(p.server.session_id(), Some(&session_id[..]), "{kex}");

        let mut sent_c = Vec::new();
        let mut sent_s = Vec::new();
        for i in 0..40u32 {
            let a = payload(i, 1000 + i as usize * 37);
            let b = payload(i + 1000, 2000 + i as usize * 11);
            p.client.send(&a);
            p.server.send(&b);
            sent_c.push(a);
            sent_s.push(b);
            match i {
                10 => p.client.rekey(),
                25 => p.server.rekey(),
                _ => {}
            }
            if i % 4 == 0 {
                p.drive();
            }
        }
        p.drive();
        assert_eq!(p.client_error, None, "{kex}");
        assert_eq!(p.to_server, sent_c, "{kex}");
        assert_eq!(p.to_client, sent_s, "{kex}");
        assert_eq!(p.client.kex_count(), 3, "{kex}");
        assert_eq!(p.server.kex_count, 3, "{kex}");
        // Rekeys keep the first exchange's session identifier.
        assert_eq!(p.client.session_id(), Some(&session_id[..]), "{kex}");
    }
}

#[test]
fn default_order_is_post_quantum_first_and_has_no_sha1() {
    let names: Vec<&str> = KexAlgorithm::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(
        names,
        [
            "mlkem768x25519-sha256",
            "sntrup761x25519-sha512",
            "sntrup761x25519-sha512@openssh.com",
            "curve25519-sha256",
            "curve25519-sha256@libssh.org",
            "ecdh-sha2-nistp256",
            "ecdh-sha2-nistp384",
            "ecdh-sha2-nistp521",
            "diffie-hellman-group-exchange-sha256",
            "diffie-hellman-group16-sha512",
            "diffie-hellman-group18-sha512",
            "diffie-hellman-group14-sha256",
        ]
    );
    for k in KexAlgorithm::ALL {
        assert_eq!(KexAlgorithm::from_name(k.name()), Some(*k));
        assert_ne!(k.hash().output_len(), 20, "{k} uses SHA-1");
    }
    assert_eq!(KexAlgorithm::from_name("diffie-hellman-group14-sha1"), None);
    assert_eq!(KexAlgorithm::from_name("diffie-hellman-group1-sha1"), None);
    assert_eq!(
        KexAlgorithm::from_name("diffie-hellman-group-exchange-sha1"),
        None
    );
}

#[test]
fn group_exchange_asks_for_a_group_sized_to_the_negotiated_cipher() {
    // AES-128-GCM needs 128 bits; AES-128-CTR with hmac-sha2-256's 32-byte key needs 256, as
    // in OpenSSH, which counts the MAC key too.
    for (c, want) in [
        (cipher::AES128_GCM, 3072),
        (cipher::AES128_CTR, 8192),
        (cipher::AES256_GCM, 8192),
        (cipher::CHACHA20_POLY1305, 8192),
    ] {
        let mut p = Pair::new(KexAlgorithm::DhGexSha256, vec![c]);
        p.drive();
        assert_eq!(p.client_error, None);
        let n = p.client.negotiated().unwrap().clone();
        let mut method = KexAlgorithm::DhGexSha256.client_for(&n);
        let req = GexRequest::decode(&method.start(&mut SeededRandom::new(1)).unwrap()).unwrap();
        assert_eq!(
            req,
            GexRequest {
                min: 2048,
                n: want,
                max: 8192
            },
            "{}",
            c.name
        );
    }
    assert_eq!(gex::preferred_bits(112), 2048);
    assert_eq!(gex::preferred_bits(192), 7680);
}

#[test]
fn test_server_answers_group_exchange_with_the_closest_rfc3526_group() {
    let req = |min, n, max| GexRequest { min, n, max };
    let bits = |p: Option<&[u8]>| p.map(|p| p.len() * 8);
    assert_eq!(bits(gex::choose_group(&req(2048, 3072, 8192))), Some(3072));
    assert_eq!(bits(gex::choose_group(&req(2048, 7680, 8192))), Some(8192));
    assert_eq!(bits(gex::choose_group(&req(2048, 8192, 6144))), Some(6144));
    assert_eq!(bits(gex::choose_group(&req(1024, 1024, 1536))), None);
}

// ---- published vectors ------------------------------------------------------------------

#[test]
fn rfc3526_primes_match_the_formula_in_the_rfc() {
    // SHA-256 of each prime's 2^n - 2^(n-64) - 1 + 2^64 * (floor(2^(n-130) pi) + k), computed
    // from the RFC's formula with an independent pi and cross-checked against OpenSSL's
    // modp_* named groups.
    let groups: [(&[u8], usize, &str); 5] = [
        (
            &crate::kex::groups::GROUP14,
            2048,
            "d66436f79bbd6b2e38c0ffbd079be904d2641415e2e67140e09448be9a60890e",
        ),
        (
            &crate::kex::groups::GROUP15,
            3072,
            "48cf8b092fbce4359d9871abf74f98e25b6163379eaa15cd9087e800c6d1c55c",
        ),
        (
            &crate::kex::groups::GROUP16,
            4096,
            "4ee95187682bcb230ad26a95205f6920e84708f6251b3894329b09ec23919e33",
        ),
        (
            &crate::kex::groups::GROUP17,
            6144,
            "d1bfe6d0925ce7e4da262b62861514a7755e35831e429f343e7b864848657efd",
        ),
        (
            &crate::kex::groups::GROUP18,
            8192,
            "39ab4feab950a3128fb71accb9fc3965d857012e081998a85996e3ea8b3c3bcf",
        ),
    ];
    for (p, bits, want) in groups {
        assert_eq!(p.len() * 8, bits);
        assert_eq!(sha256_hex(p), want, "group of {bits} bits");
        // The formula's fixed ends: 64 one bits at the top and at the bottom.
        assert!(p[..8].iter().chain(&p[p.len() - 8..]).all(|&b| b == 0xff));
        assert_eq!(Group::new(p, &[2]).unwrap().bits(), bits as u32);
    }
}

#[test]
fn group14_exchange_matches_values_computed_independently() {
    // x = 0x0102..40 and y = 0x4142..80 (512-bit exponents, as for a SHA-256 method);
    // e = 2^x, f = 2^y and K = 2^xy mod p computed with Python's pow() over the RFC prime.
    let mut client = dh::FixedGroupDh::group14(512);
    let e = client
        .client_public(&mut Script((1..=64).collect()))
        .unwrap();
    assert_eq!(
        sha256_hex(&e),
        "5141ed60d422816c251a9a61f4dc090fc6161ec870357a0af29fb84a0bb34e5e"
    );
    let mut server = dh::FixedGroupDh::group14(512);
    let (f, k_server) = server
        .server_respond(&e, &mut Script((65..=128).collect()))
        .unwrap();
    assert_eq!(
        sha256_hex(&f),
        "c86032ede6c39a8ab3623d4619a7f0107158ed6fd4af42defaf891141c17832c"
    );
    let k = client.client_finish(&f).unwrap();
    assert_eq!(k, k_server);
    // K is an mpint: length, then the magnitude (with a zero byte if its top bit is set).
    let len = u32::from_be_bytes(k[..4].try_into().unwrap()) as usize;
    assert_eq!(len, k.len() - 4);
    let magnitude = if k[4] == 0 { &k[5..] } else { &k[4..] };
    assert_eq!(
        sha256_hex(magnitude),
        "9413d3bfb3e5d8ee5ffd18d06b8460beddf411588c90cb1fedf4e995c5847429"
    );
}

/// RFC 5903 section 8: initiator and responder private keys, the initiator's public point
/// (where we check it) and the shared x coordinate.
#[test]
fn rfc5903_vectors_through_our_ecdh_agreements() {
    fn check<A: Agreement + Default>(i: &str, r: &str, gi: Option<&str>, girx: &str) {
        let mut client = A::default();
        let q_c = client.client_public(&mut Script(hex(i))).unwrap();
        if let Some(gi) = gi {
            assert_eq!(q_c, hex(gi));
        }
        let mut server = A::default();
        let (q_s, k_server) = server.server_respond(&q_c, &mut Script(hex(r))).unwrap();
        let k = client.client_finish(&q_s).unwrap();
        assert_eq!(k, k_server);
        assert_eq!(&k[..], &mpint(&hex(girx))[..]);
    }
    check::<NistEcdh<P256>>(
        "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
        "C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53",
        Some(
            "04DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180
               5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3",
        ),
        "D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE",
    );
    check::<NistEcdh<P384>>(
        "099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655
         E35B538041E649EE3FAEF896783AB194",
        "41CB0779B4BDB85D47846725FBEC3C9430FAB46CC8DC5060855CC9BDA0AA2942
         E0308312916B8ED2960E4BD55A7448FC",
        Some(
            "04667842D7D180AC2CDE6F74F37551F55755C7645C20EF73E31634FE72B4C55EE6
               DE3AC808ACB4BDB4C88732AEE95F41AA9482ED1FC0EEB9CAFC4984625CCFC23F
               65032149E0E144ADA024181535A0F38EEB9FCFF3C2C947DAE69B4C634573A81C",
        ),
        "11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4
         D603135569B9E9D09CF5D4A270F59746",
    );
    check::<NistEcdh<P521>>(
        "0037ADE9319A89F4DABDB3EF411AACCCA5123C61ACAB57B5393DCE47608172A0
         95AA85A30FE1C2952C6771D937BA9777F5957B2639BAB072462F68C27A57382D
         4A52",
        "0145BA99A847AF43793FDD0E872E7CDFA16BE30FDC780F97BCCC3F078380201E
         9C677D600B343757A3BDBF2A3163E4C2F869CCA7458AA4A4EFFC311F5CB15168
         5EB9",
        None,
        "01144C7D79AE6956BC8EDB8E7C787C4521CB086FA64407F97894E5E6B2D79B04
         D1427E73CA4BAA240A34786859810C06B3C715A3A8CC3151F2BEE417996D19F3
         DDEA",
    );
}

// RFC 7748 section 6.1.
const ALICE_X25519: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
const ALICE_X25519_PUB: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
const BOB_X25519: &str = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
const BOB_X25519_PUB: &str = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
const X25519_SHARED: &str = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

fn mlkem_vector(name: &str) -> Vec<u8> {
    let text = include_str!("kex/testdata/mlkem768.txt");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap();
    hex(&line[name.len() + 1..])
}

/// The hybrid's composition, from published component vectors: the ML-KEM-768 key pair,
/// ciphertext and secret of Wycheproof's FIPS 203 vector, and RFC 7748's X25519 pair. No
/// published vector covers mlkem768x25519-sha256 as a whole.
#[test]
fn mlkem768x25519_known_answer_from_component_vectors() {
    let (seed, ek, m, c, k_mlkem) = (
        mlkem_vector("seed"),
        mlkem_vector("ek"),
        mlkem_vector("m"),
        mlkem_vector("c"),
        mlkem_vector("K"),
    );
    let mut client = Hybrid::<MlKem768Kem>::new(&digest::SHA256);
    let q_c = client
        .client_public(&mut Script([seed, hex(ALICE_X25519)].concat()))
        .unwrap();
    assert_eq!(q_c.len(), 1184 + 32);
    assert_eq!(q_c, [ek.clone(), hex(ALICE_X25519_PUB)].concat());

    let mut server = Hybrid::<MlKem768Kem>::new(&digest::SHA256);
    let (q_s, k_server) = server
        .server_respond(&q_c, &mut Script([m, hex(BOB_X25519)].concat()))
        .unwrap();
    assert_eq!(q_s, [c, hex(BOB_X25519_PUB)].concat());

    let k = client.client_finish(&q_s).unwrap();
    assert_eq!(k, k_server);
    let expect = digest::digest(&digest::SHA256, &[k_mlkem, hex(X25519_SHARED)].concat());
    assert_eq!(&k[..], &string(expect.as_ref())[..]);
}

#[test]
fn mlkem768_encapsulation_key_failing_the_modulus_check_is_refused() {
    let mut server = Hybrid::<MlKem768Kem>::new(&digest::SHA256);
    let q_c = [mlkem_vector("bad_ek"), hex(ALICE_X25519_PUB)].concat();
    let e = server
        .server_respond(&q_c, &mut SeededRandom::new(1))
        .unwrap_err();
    assert!(
        matches!(&e, KexError::Invalid(w) if w.contains("modulo q")),
        "{e}"
    );
}

/// No published vector covers sntrup761x25519-sha512, nor (for this crate's seeded key
/// generation) sntrup761 alone: the composition is checked against the crate's own
/// deterministic API and RFC 7748, and the interop tests check it against OpenSSH.
#[test]
fn sntrup761x25519_composition_and_determinism() {
    let key_seed = [0x42u8; 32];
    let enc_seed = [0x24u8; 32];
    let mut client = Hybrid::<Sntrup761Kem>::new(&digest::SHA512);
    let q_c = client
        .client_public(&mut Script([&key_seed[..], &hex(ALICE_X25519)].concat()))
        .unwrap();
    let (pk, sk) = sntrup761::generate_key_from_seed(key_seed);
    assert_eq!(q_c, [pk.as_ref(), &hex(ALICE_X25519_PUB)[..]].concat());

    let mut server = Hybrid::<Sntrup761Kem>::new(&digest::SHA512);
    let (q_s, k_server) = server
        .server_respond(
            &q_c,
            &mut Script([&enc_seed[..], &hex(BOB_X25519)].concat()),
        )
        .unwrap();
    let (ct, ss) = pk.encapsulate_deterministic(enc_seed);
    assert_eq!(q_s, [ct.as_ref(), &hex(BOB_X25519_PUB)[..]].concat());
    assert!(sk.decapsulate(&ct) == ss);

    let k = client.client_finish(&q_s).unwrap();
    assert_eq!(k, k_server);
    let expect = digest::digest(
        &digest::SHA512,
        &[ss.as_ref(), &hex(X25519_SHARED)[..]].concat(),
    );
    assert_eq!(&k[..], &string(expect.as_ref())[..]);
    assert_eq!(k.len(), 4 + 64);
}

// ---- hostile server values --------------------------------------------------------------

const PREFIX: HashPrefix<'static> = HashPrefix {
    v_c: b"SSH-2.0-c",
    v_s: b"SSH-2.0-s",
    i_c: b"",
    i_s: b"",
};

fn started(kex: KexAlgorithm) -> (Box<dyn ClientKex>, Vec<u8>) {
    let mut m = kex.client();
    let first = m.start(&mut SeededRandom::new(5)).unwrap();
    (m, first)
}

/// A KEXDH/ECDH reply carrying `value` (an mpint for finite-field DH, else a string).
fn reply(kex: KexAlgorithm, value: &[u8]) -> Vec<u8> {
    let mut r = vec![31u8];
    r.put_string(b"host key");
    if kex.name().starts_with("diffie-hellman") {
        r.put_mpint(value);
    } else {
        r.put_string(value);
    }
    r.put_string(b"signature");
    r
}

fn refused(kex: KexAlgorithm, value: &[u8]) -> String {
    let (mut m, _) = started(kex);
    match m.handle(&reply(kex, value), &PREFIX, &mut SeededRandom::new(6)) {
        Err(KexError::Invalid(why)) => why,
        other => panic!("{kex}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn finite_field_values_outside_the_open_range_are_refused() {
    for (kex, p) in [
        (
            KexAlgorithm::DhGroup14Sha256,
            &crate::kex::groups::GROUP14[..],
        ),
        (
            KexAlgorithm::DhGroup16Sha512,
            &crate::kex::groups::GROUP16[..],
        ),
        (
            KexAlgorithm::DhGroup18Sha512,
            &crate::kex::groups::GROUP18[..],
        ),
    ] {
        let mut p_minus_1 = p.to_vec();
        *p_minus_1.last_mut().unwrap() -= 1;
        let p_plus_1 = add_one(p);
        let big = vec![0xffu8; p.len() + 1];
        for (what, f) in [
            ("0", vec![]),
            ("1", vec![1]),
            ("p-1", p_minus_1),
            ("p", p.to_vec()),
            ("p+1", p_plus_1),
            ("longer than p", big),
        ] {
            let why = refused(kex, &f);
            assert!(why.contains("outside 1 < f < p-1"), "{kex} f={what}: {why}");
        }
        // The smallest and largest values inside the range are accepted.
        let (mut m, _) = started(kex);
        assert!(
            m.handle(&reply(kex, &[2]), &PREFIX, &mut SeededRandom::new(6))
                .is_ok()
        );
    }
}

#[test]
fn ecdh_points_off_the_curve_or_not_uncompressed_are_refused() {
    for (kex, len) in [
        (KexAlgorithm::EcdhNistP256, 32usize),
        (KexAlgorithm::EcdhNistP384, 48),
        (KexAlgorithm::EcdhNistP521, 66),
    ] {
        // Our own public value is a valid point; nudging y moves it off the curve.
        let (_, init) = started(kex);
        let q = &init[5..];
        assert_eq!(q.len(), 1 + 2 * len);
        let mut off = q.to_vec();
        *off.last_mut().unwrap() ^= 1;
        let why = refused(kex, &off);
        assert!(why.contains("not a point on the curve"), "{kex}: {why}");
        let zeros = [&[4u8][..], &vec![0; 2 * len]].concat();
        assert!(refused(kex, &zeros).contains("not a point on the curve"));
        // Compressed points, the identity's encoding and other lengths.
        let compressed = [&[2u8][..], &q[1..=len]].concat();
        for bad in [compressed, vec![0], vec![], q[..q.len() - 1].to_vec()] {
            let why = refused(kex, &bad);
            assert!(why.contains("not an uncompressed point"), "{kex}: {why}");
        }
        // A valid point is accepted.
        let (mut m, _) = started(kex);
        assert!(
            m.handle(&reply(kex, q), &PREFIX, &mut SeededRandom::new(6))
                .is_ok()
        );
    }
}

#[test]
fn hybrid_replies_of_the_wrong_length_or_with_a_zero_x25519_part_are_refused() {
    for (kex, ct_len) in [
        (KexAlgorithm::MlKem768X25519Sha256, 1088usize),
        (KexAlgorithm::Sntrup761X25519Sha512, 1039),
        (KexAlgorithm::Sntrup761X25519Sha512OpenSsh, 1039),
    ] {
        for len in [0, 32, ct_len, ct_len + 31, ct_len + 33, 2 * ct_len] {
            let why = refused(kex, &vec![7u8; len]);
            assert!(
                why.contains(&format!("is {len} bytes"))
                    && why.contains(&format!("{}", ct_len + 32)),
                "{kex} {len}: {why}"
            );
        }
        // A well-formed ciphertext with the all-zero (low-order) X25519 point.
        let mut zero = vec![7u8; ct_len];
        zero.extend_from_slice(&[0; 32]);
        let why = refused(kex, &zero);
        assert!(why.contains("X25519 shared secret is zero"), "{kex}: {why}");
        // A tampered ciphertext is not an error here (implicit rejection): it yields a
        // different K, which the host key signature over H then fails to match.
        let (mut m, _) = started(kex);
        let mut ok = vec![7u8; ct_len];
        ok.extend_from_slice(&hex(BOB_X25519_PUB));
        assert!(
            m.handle(&reply(kex, &ok), &PREFIX, &mut SeededRandom::new(6))
                .is_ok()
        );
    }
}

#[test]
fn hybrid_client_values_of_the_wrong_length_are_refused_by_the_server_side() {
    let mut s = Hybrid::<MlKem768Kem>::new(&digest::SHA256);
    let e = s
        .server_respond(&[1; 1184 + 31], &mut SeededRandom::new(1))
        .unwrap_err();
    assert!(e.to_string().contains("1215 bytes"), "{e}");
    let mut s = Hybrid::<Sntrup761Kem>::new(&digest::SHA512);
    let e = s
        .server_respond(&[1; 10], &mut SeededRandom::new(1))
        .unwrap_err();
    assert!(e.to_string().contains("1190 bytes"), "{e}");
}

fn gex_group(p: &[u8], g: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    GexGroup {
        p: p.to_vec(),
        g: g.to_vec(),
    }
    .encode(&mut v);
    v
}

fn gex_refusal(group: Vec<u8>) -> KexError {
    let (mut m, req) = started(KexAlgorithm::DhGexSha256);
    assert_eq!(
        GexRequest::decode(&req).unwrap(),
        GexRequest {
            min: 2048,
            n: 8192,
            max: 8192
        }
    );
    m.handle(&group, &PREFIX, &mut SeededRandom::new(6))
        .unwrap_err()
}

#[test]
fn group_exchange_groups_too_small_too_large_or_even_are_refused() {
    let p14 = &crate::kex::groups::GROUP14[..];
    // 1024 bits: below the 2048 we ask for at least.
    let e = gex_refusal(gex_group(&[0xff; 128], &[2]));
    assert!(
        e.to_string()
            .contains("has 1024 bits, outside the 2048..=8192"),
        "{e}"
    );
    // 2047 bits.
    let mut short = p14.to_vec();
    short[0] = 0x7f;
    assert!(
        gex_refusal(gex_group(&short, &[2]))
            .to_string()
            .contains("has 2047 bits")
    );
    // 8200 bits: above the 8192 we accept at most.
    let e = gex_refusal(gex_group(&[0xff; 1025], &[2]));
    assert!(e.to_string().contains("has 8200 bits"), "{e}");
    // An even modulus cannot be prime.
    let mut even = p14.to_vec();
    *even.last_mut().unwrap() = 0xfe;
    let e = gex_refusal(gex_group(&even, &[2]));
    assert!(e.to_string().contains("even"), "{e}");
    // Generators 0, 1, p-1 and p.
    let mut p_minus_1 = p14.to_vec();
    *p_minus_1.last_mut().unwrap() = 0xfe;
    for g in [vec![], vec![1], p_minus_1, p14.to_vec()] {
        let e = gex_refusal(gex_group(p14, &g));
        assert!(e.to_string().contains("generator"), "{e}");
    }
    // A reply before the group, and trailing bytes after it.
    let e = gex_refusal(vec![33, 0, 0, 0, 0]);
    assert_eq!(e, KexError::Unexpected(MessageType::KEX_DH_GEX_REPLY));
    let mut trailing = gex_group(p14, &[2]);
    trailing.push(0);
    assert!(matches!(
        gex_refusal(trailing),
        KexError::Decode(MessageType::KEX_DH_GEX_GROUP, _)
    ));
}

#[test]
fn group_exchange_reply_values_are_range_checked() {
    let p14 = &crate::kex::groups::GROUP14[..];
    let mut p_minus_1 = p14.to_vec();
    *p_minus_1.last_mut().unwrap() = 0xfe;
    for f in [vec![], vec![1], p_minus_1, p14.to_vec()] {
        let (mut m, _) = started(KexAlgorithm::DhGexSha256);
        let step = m
            .handle(&gex_group(p14, &[2]), &PREFIX, &mut SeededRandom::new(6))
            .unwrap();
        let ClientStep::Send(init) = step else {
            panic!("expected KEX_DH_GEX_INIT")
        };
        assert_eq!(init[0], MessageType::KEX_DH_GEX_INIT.0);
        let mut r = vec![MessageType::KEX_DH_GEX_REPLY.0];
        r.put_string(b"host key");
        r.put_mpint(&f);
        r.put_string(b"sig");
        let e = m
            .handle(&r, &PREFIX, &mut SeededRandom::new(7))
            .unwrap_err();
        assert!(e.to_string().contains("outside 1 < f < p-1"), "{e}");
    }
}

// ---- the same refusals through the whole client transport --------------------------------

/// Feeds the client a hostile server's KEXINIT and `messages`, with the reply proven in line
/// or elsewhere ([`KexWork`](crate::KexWork)), until it has nothing more to do or fails.
fn scripted_with(kex: KexAlgorithm, messages: &[Vec<u8>], elsewhere: bool) -> Result<(), Error> {
    let config = ClientConfig {
        kex_algorithms: vec![kex],
        ..ClientConfig::default()
    };
    let mut c = ClientTransport::new(config, Box::new(SeededRandom::new(3)), Instant::now());
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let ciphers: Vec<String> = cipher::ALL.iter().map(|c| c.name.to_string()).collect();
    let theirs = KexInit {
        cookie: [7; 16],
        kex: names(&[kex.name(), kex::STRICT_KEX_S]),
        host_key: names(&["ssh-ed25519"]),
        cipher_c2s: ciphers.clone(),
        cipher_s2c: ciphers,
        mac_c2s: names(&["hmac-sha2-256"]),
        mac_s2c: names(&["hmac-sha2-256"]),
        comp_c2s: names(&["none"]),
        comp_s2c: names(&["none"]),
        lang_c2s: vec![],
        lang_s2c: vec![],
        first_kex_packet_follows: false,
    };
    let mut kexinit = Vec::new();
    theirs.encode(&mut kexinit);
    let mut tx = Tx::default();
    let mut rng = SeededRandom::new(9);
    tx.raw(b"SSH-2.0-Hostile\r\n");
    for p in std::iter::once(&kexinit).chain(messages) {
        tx.frame(&mut rng, &mut |b| b.extend_from_slice(p));
    }
    c.set_kex_work_elsewhere(elsewhere);
    c.handle_input(tx.output());
    loop {
        match c.poll_event() {
            Ok(Some(Event::VerifyHostKey(_))) => c.accept_host_key(),
            Ok(Some(_)) => {}
            Ok(None) => match c.take_kex_work() {
                Some(work) => c.finish_kex_work(work.run()),
                None => return Ok(()),
            },
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn hostile_values_end_the_transport_with_a_key_exchange_error() {
    let cases: Vec<(KexAlgorithm, Vec<u8>, &str)> = vec![
        (
            KexAlgorithm::DhGroup14Sha256,
            reply(KexAlgorithm::DhGroup14Sha256, &[1]),
            "outside 1 < f < p-1",
        ),
        (
            KexAlgorithm::EcdhNistP256,
            reply(KexAlgorithm::EcdhNistP256, &[4; 65]),
            "not a point on the curve",
        ),
        (
            KexAlgorithm::MlKem768X25519Sha256,
            reply(KexAlgorithm::MlKem768X25519Sha256, &[0; 1119]),
            "1119 bytes",
        ),
        (
            KexAlgorithm::DhGexSha256,
            gex_group(&[0xff; 128], &[2]),
            "1024 bits",
        ),
    ];
    for (kex, msg, want) in cases {
        for elsewhere in [false, true] {
            let r = scripted_with(kex, std::slice::from_ref(&msg), elsewhere);
            assert!(
                matches!(&r, Err(Error::KeyExchange(w)) if w.contains(want)),
                "{kex} (reply proven elsewhere: {elsewhere}): {r:?}"
            );
        }
    }
}

// ---- the server's reply proven elsewhere ---------------------------------------------------

#[test]
fn every_method_runs_with_its_reply_proven_elsewhere() {
    for &kex in KexAlgorithm::ALL {
        let mut pair = crate::tests::Pair::new(
            ClientConfig {
                kex_algorithms: vec![kex],
                ..ClientConfig::default()
            },
            ServerConfig::default(),
        );
        pair.client.set_kex_work_elsewhere(true);
        pair.drive();
        assert_eq!(pair.client_error, None, "{kex}");
        assert!(pair.client.is_established(), "{kex}");
        assert_eq!(pair.client.session_id(), pair.server.session_id(), "{kex}");
        pair.client.rekey();
        pair.drive();
        pair.server.rekey();
        pair.drive();
        assert_eq!(pair.client_error, None, "{kex}");
        assert_eq!(pair.client.kex_count(), 3, "{kex}");
        // Group exchange has two server messages: it is proven in line.
        let elsewhere = if kex.is_single_pass() { 3 } else { 0 };
        assert_eq!(pair.client.kex_work_done(), elsewhere, "{kex}");
        // Nothing was prepared, so every key pair was made elsewhere too.
        assert_eq!(pair.client.kex_started_elsewhere(), elsewhere, "{kex}");
        pair.client.send(&payload(1, 5000));
        pair.server.send(&payload(2, 5000));
        pair.drive();
        assert_eq!(pair.client_error, None, "{kex}");
        assert_eq!(pair.to_server.last(), Some(&payload(1, 5000)), "{kex}");
        assert_eq!(pair.to_client.last(), Some(&payload(2, 5000)), "{kex}");
    }
}

/// A client that proves its replies elsewhere, with `kex`, and a test server.
fn proving_elsewhere(kex: KexAlgorithm, seed: u64) -> (ClientTransport, ServerTransport) {
    let mut c = ClientTransport::new(
        ClientConfig {
            kex_algorithms: vec![kex],
            ..ClientConfig::default()
        },
        Box::new(SeededRandom::new(seed)),
        Instant::now(),
    );
    c.set_kex_work_elsewhere(true);
    let s = ServerTransport::new(
        ServerConfig::default(),
        Box::new(SeededRandom::new(seed + 1)),
    );
    (c, s)
}

/// Carries what the client has to the server, and the server's answer back.
fn trade(c: &mut ClientTransport, s: &mut ServerTransport) {
    let out = c.output().to_vec();
    c.consume_output(out.len());
    s.handle_input(&out);
    while let Ok(Some(_)) = s.poll_event() {}
    let back = s.output().to_vec();
    s.consume_output(back.len());
    c.handle_input(&back);
}

#[test]
fn while_the_reply_is_proven_elsewhere_nothing_behind_it_is_processed() {
    let kex = KexAlgorithm::Sntrup761X25519Sha512;
    // Other sessions' work, whose results must never be taken for this one's.
    let mut others: Vec<crate::KexWorkDone> = [9, 11]
        .into_iter()
        .map(|seed| {
            let (mut other, mut server) = proving_elsewhere(kex, seed);
            trade(&mut other, &mut server);
            while let Ok(Some(_)) = other.poll_event() {}
            other.take_kex_work().expect("its key pair's work").run()
        })
        .collect();
    let (mut c, mut s) = proving_elsewhere(kex, 5);
    // Versions and KEXINITs: our key pair is made elsewhere, nothing sent meanwhile.
    trade(&mut c, &mut s);
    assert!(matches!(c.poll_event(), Ok(None)));
    assert!(c.output().is_empty());
    let start = c.take_kex_work().expect("our key pair's work");
    assert!(c.take_kex_work().is_none(), "handed out once");
    c.finish_kex_work(others.remove(0));
    assert!(
        c.output().is_empty(),
        "another session's key pair was not taken"
    );
    c.finish_kex_work(start.run());
    assert!(!c.output().is_empty(), "our first message");
    assert_eq!(c.kex_started_elsewhere(), 1);
    // The server's reply and its NEWKEYS.
    trade(&mut c, &mut s);
    assert!(matches!(c.poll_event(), Ok(None)), "held for the work");
    let work = c.take_kex_work().expect("the reply's work");
    assert!(c.take_kex_work().is_none(), "handed out once");
    assert!(matches!(c.poll_event(), Ok(None)), "NEWKEYS waits");
    assert!(!c.is_established());
    assert!(c.is_rekeying());
    c.finish_kex_work(others.remove(0));
    assert!(
        matches!(c.poll_event(), Ok(None)),
        "another session's proof was not taken"
    );
    assert_eq!((c.error(), c.kex_work_done()), (None, 0));
    c.finish_kex_work(work.run());
    assert!(matches!(c.poll_event(), Ok(Some(Event::VerifyHostKey(_)))));
    c.accept_host_key();
    assert!(matches!(c.poll_event(), Ok(Some(Event::Established))));
    assert_eq!(c.error(), None);
    assert_eq!(c.kex_work_done(), 1);
}

/// Trades until the client is established, running its work where it waits.
fn establish_elsewhere(c: &mut ClientTransport, s: &mut ServerTransport) {
    for _ in 0..10 {
        trade(c, s);
        if let Some(work) = c.take_kex_work() {
            c.finish_kex_work(work.run());
        }
        loop {
            let verify = match c.poll_event() {
                Ok(Some(Event::VerifyHostKey(_))) => true,
                Ok(Some(_)) => false,
                _ => break,
            };
            if verify {
                c.accept_host_key();
            }
        }
        if c.is_established() && c.output().is_empty() {
            return;
        }
    }
    panic!("not established: {:?}", c.error());
}

/// Carries the client's bytes to the server; returns the payloads it received, or its error.
fn deliver(c: &mut ClientTransport, s: &mut ServerTransport) -> Result<Vec<Vec<u8>>, Error> {
    let out = c.output().to_vec();
    c.consume_output(out.len());
    s.handle_input(&out);
    let mut got = Vec::new();
    loop {
        match s.poll_event()? {
            Some(ServerEvent::Payload(p)) => got.push(p.to_vec()),
            Some(_) => {}
            None => return Ok(got),
        }
    }
}

/// Carries the server's bytes to the client and runs its events.
fn answer(c: &mut ClientTransport, s: &mut ServerTransport) {
    let back = s.output().to_vec();
    s.consume_output(back.len());
    c.handle_input(&back);
    while let Ok(Some(_)) = c.poll_event() {}
}

#[test]
fn payloads_sent_while_the_work_is_out_wait_for_our_newkeys() {
    // From our KEXINIT to our NEWKEYS nothing from above may go out (RFC 4253 7.1; Dropbear
    // ends the connection): not while our key pair is made elsewhere, nor while the reply is
    // proven there. The test server refuses such a packet as Dropbear does.
    for server_starts in [false, true] {
        let (mut c, mut s) = proving_elsewhere(KexAlgorithm::Curve25519Sha256, 31);
        establish_elsewhere(&mut c, &mut s);
        if server_starts {
            s.rekey();
        } else {
            // Held from our KEXINIT on, before the work: it must still go first.
            c.rekey();
            c.send(&payload(0, 300));
        }
        // KEXINITs both ways; our key pair's work is out.
        assert_eq!(deliver(&mut c, &mut s), Ok(vec![]));
        answer(&mut c, &mut s);
        if server_starts {
            // Our KEXINIT answers the server's.
            assert_eq!(deliver(&mut c, &mut s), Ok(vec![]));
        }
        let start = c.take_kex_work().expect("the key pair's work");
        c.send(&payload(1, 300));
        assert_eq!(deliver(&mut c, &mut s), Ok(vec![]), "held for the key pair");
        c.finish_kex_work(start.run());
        c.send(&payload(2, 300));
        // Our first message; the server's reply and NEWKEYS; the reply's work is out.
        assert_eq!(deliver(&mut c, &mut s), Ok(vec![]));
        answer(&mut c, &mut s);
        let proof = c.take_kex_work().expect("the reply's work");
        c.send(&payload(3, 300));
        assert_eq!(deliver(&mut c, &mut s), Ok(vec![]), "held for the proof");
        c.finish_kex_work(proof.run());
        while let Ok(Some(_)) = c.poll_event() {}
        assert_eq!(c.error(), None);
        // NEWKEYS, then what waited, in order, under the new keys.
        let mut sent = vec![payload(1, 300), payload(2, 300), payload(3, 300)];
        if !server_starts {
            sent.insert(0, payload(0, 300));
        }
        assert_eq!(
            deliver(&mut c, &mut s),
            Ok(sent),
            "server started: {server_starts}"
        );
        assert_eq!((c.kex_count(), s.kex_count), (2, 2));
        assert_eq!((c.kex_started_elsewhere(), c.kex_work_done()), (2, 2));
    }
}

/// Payloads the client passes up, collected; a host key to verify is accepted.
fn client_payloads(c: &mut ClientTransport, got: &mut Vec<Vec<u8>>) {
    loop {
        let verify = match c.poll_event() {
            Ok(Some(Event::Payload { data, .. })) => {
                got.push(data.to_vec());
                false
            }
            Ok(Some(Event::VerifyHostKey(_))) => true,
            Ok(Some(_)) => false,
            Ok(None) | Err(_) => return,
        };
        if verify {
            c.accept_host_key();
        }
    }
}

#[test]
fn random_schedules_of_sends_rekeys_and_work_keep_every_payload_in_order() {
    // Sends both ways, rekeys from either side, bytes carried either way and the work run
    // late, in a seeded random order: the strict test server never sees a payload inside our
    // exchange, and each side receives every payload the other sent, in order.
    let methods = [
        KexAlgorithm::Curve25519Sha256,
        KexAlgorithm::Sntrup761X25519Sha512,
        KexAlgorithm::EcdhNistP256,
        KexAlgorithm::DhGexSha256,
    ];
    let (mut rekeys, mut elsewhere, mut ahead, mut moved) = (0, 0, 0, 0);
    for seed in 0..48u64 {
        let kex = methods[(seed % 4) as usize];
        let (mut c, mut s) = proving_elsewhere(kex, 200 + seed);
        establish_elsewhere(&mut c, &mut s);
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut to_server, mut at_server) = (Vec::new(), Vec::new());
        let (mut to_client, mut at_client) = (Vec::new(), Vec::new());
        let mut work: Option<crate::KexWork> = None;
        let fail = |what: &str, e: &dyn core::fmt::Debug| -> ! {
            panic!("{kex}, seed {seed}: {what}: {e:?}")
        };
        for step in 0..300u32 {
            match next() % 8 {
                0 | 1 => {
                    let p = payload(step, (next() % 3000) as usize);
                    c.send(&p);
                    to_server.push(p);
                }
                2 => {
                    let p = payload(step, (next() % 3000) as usize);
                    s.send(&p);
                    to_client.push(p);
                }
                3 => c.rekey(),
                4 => s.rekey(),
                // As the driver does once a rekey is likely: the next opening made ahead.
                5 if next() % 2 == 0 => {
                    if let Some(method) = c.wants_prepared_kex() {
                        c.offer_prepared_kex(prepared(method, next()));
                    }
                }
                5 => match deliver(&mut c, &mut s) {
                    Ok(got) => at_server.extend(got),
                    Err(e) => fail("the server", &e),
                },
                6 => {
                    let back = s.output().to_vec();
                    s.consume_output(back.len());
                    c.handle_input(&back);
                    client_payloads(&mut c, &mut at_client);
                }
                _ => match work.take() {
                    Some(w) => {
                        c.finish_kex_work(w.run());
                        client_payloads(&mut c, &mut at_client);
                    }
                    None => work = c.take_kex_work(),
                },
            }
        }
        // Then everything settles: the work runs and the bytes move until nothing does.
        for _ in 0..50 {
            if let Some(w) = work.take().or_else(|| c.take_kex_work()) {
                c.finish_kex_work(w.run());
            }
            client_payloads(&mut c, &mut at_client);
            match deliver(&mut c, &mut s) {
                Ok(got) => at_server.extend(got),
                Err(e) => fail("the server", &e),
            }
            let back = s.output().to_vec();
            s.consume_output(back.len());
            c.handle_input(&back);
            client_payloads(&mut c, &mut at_client);
            if back.is_empty() && c.output().is_empty() && !c.is_rekeying() {
                break;
            }
        }
        if let Some(e) = c.error() {
            fail("the client", e);
        }
        assert!(!c.is_rekeying(), "{kex}, seed {seed}: still rekeying");
        assert!(at_server == to_server, "{kex}, seed {seed}: to the server");
        assert!(at_client == to_client, "{kex}, seed {seed}: to the client");
        assert_eq!(c.kex_count(), s.kex_count, "{kex}, seed {seed}");
        rekeys += c.kex_count() - 1;
        elsewhere += c.kex_work_done();
        ahead += c.prepared_kex_used();
        moved += at_server.len() + at_client.len();
    }
    // The schedules did what they are for (when written: 215 rekeys, 194 exchanges proven
    // elsewhere, 32 run on an opening made ahead, 5,363 payloads).
    assert!(
        rekeys >= 180 && elsewhere >= 150 && ahead >= 16 && moved >= 4000,
        "{rekeys} rekeys, {elsewhere} proven elsewhere, {ahead} made ahead, {moved} payloads"
    );
}

// ---- the first key exchange message sent as a guess --------------------------------------

/// Round trips until the client is established: each one carries everything the client has
/// to the server, then everything the server answers back. The test server queues its KEXINIT
/// at once, so without a guess this is 2 (KEXINITs, then the method's messages); sshd sends
/// its KEXINIT only after our version line, which adds one for every client.
fn round_trips_to_established(pair: &mut crate::tests::Pair) -> u32 {
    for trip in 1..=10 {
        let out = pair.client.output().to_vec();
        pair.client.consume_output(out.len());
        pair.server.handle_input(&out);
        while let Ok(Some(_)) = pair.server.poll_event() {}
        let back = pair.server.output().to_vec();
        pair.server.consume_output(back.len());
        pair.client.handle_input(&back);
        loop {
            match pair.client.poll_event() {
                Ok(Some(Event::VerifyHostKey(_))) => pair.client.accept_host_key(),
                Ok(Some(Event::Established)) => return trip,
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("round trip {trip}: {e}"),
            }
        }
    }
    panic!("not established after 10 round trips");
}

fn guessing(kex: Vec<KexAlgorithm>) -> ClientConfig {
    ClientConfig {
        kex_algorithms: kex,
        guess_first_kex: true,
        ..ClientConfig::default()
    }
}

#[test]
fn a_right_guess_saves_a_round_trip_and_the_session_works() {
    let server = ServerConfig {
        kex: vec![KexAlgorithm::Curve25519Sha256, KexAlgorithm::EcdhNistP256],
        ..ServerConfig::default()
    };
    let plain = ClientConfig {
        kex_algorithms: vec![KexAlgorithm::Curve25519Sha256],
        ..ClientConfig::default()
    };
    let mut without = crate::tests::Pair::new(plain, server.clone());
    assert_eq!(round_trips_to_established(&mut without), 2);
    assert_eq!(without.client.kex_guess_right(), None);

    let mut pair = crate::tests::Pair::new(guessing(vec![KexAlgorithm::Curve25519Sha256]), server);
    assert_eq!(round_trips_to_established(&mut pair), 1);
    assert_eq!(pair.client.kex_guess_right(), Some(true));
    assert_eq!(pair.server.guesses, (1, 0));
    assert_eq!(
        pair.client.server_first_choices(),
        Some(("curve25519-sha256", "ssh-ed25519"))
    );
    // The keys agree, and a rekey (never guessed) works.
    pair.drive();
    pair.client.rekey();
    pair.drive();
    assert_eq!(pair.client_error, None);
    assert_eq!(pair.client.kex_count(), 2);
    assert_eq!(pair.server.guesses, (1, 0));
}

#[test]
fn every_single_pass_method_can_be_guessed() {
    for &kex in KexAlgorithm::ALL {
        if !kex.is_single_pass() {
            continue;
        }
        let server = ServerConfig {
            kex: vec![kex],
            ..ServerConfig::default()
        };
        let mut pair = crate::tests::Pair::new(guessing(vec![kex]), server);
        assert_eq!(round_trips_to_established(&mut pair), 1, "{}", kex.name());
        assert_eq!(pair.client.kex_guess_right(), Some(true), "{}", kex.name());
    }
}

#[test]
fn a_wrong_guess_is_skipped_by_the_server_and_costs_nothing_but_the_message() {
    // The server prefers another method: our first is on its list, but not first.
    let server = ServerConfig {
        kex: vec![KexAlgorithm::EcdhNistP256, KexAlgorithm::Curve25519Sha256],
        ..ServerConfig::default()
    };
    let mut pair = crate::tests::Pair::new(
        guessing(vec![
            KexAlgorithm::Curve25519Sha256,
            KexAlgorithm::EcdhNistP256,
        ]),
        server,
    );
    assert_eq!(round_trips_to_established(&mut pair), 2);
    assert_eq!(pair.client.kex_guess_right(), Some(false));
    assert_eq!(pair.server.guesses, (0, 1));
    // The method negotiated is still ours first (client preference), run afresh.
    let negotiated = pair
        .client
        .negotiated()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(negotiated.contains("curve25519-sha256"), "{negotiated}");
    pair.drive();
    assert_eq!(pair.client_error, None);
}

#[test]
fn group_exchange_is_never_guessed() {
    let server = ServerConfig {
        kex: vec![KexAlgorithm::DhGexSha256],
        ..ServerConfig::default()
    };
    let mut pair = crate::tests::Pair::new(guessing(vec![KexAlgorithm::DhGexSha256]), server);
    pair.drive();
    assert_eq!(pair.client_error, None);
    assert_eq!(pair.client.kex_guess_right(), None);
    assert_eq!(pair.server.guesses, (0, 0));
}

// ---- a first message made ahead of time -------------------------------------------------

fn prepared(kex: KexAlgorithm, seed: u64) -> crate::PreparedKex {
    crate::PreparedKex::new(kex, &mut SeededRandom::new(seed)).unwrap()
}

/// A client that guesses with the first of `ours` and holds `prepared`, and a server that
/// runs only `server`.
fn guessing_with_prepared(
    ours: &[KexAlgorithm],
    server: KexAlgorithm,
    prepared: crate::PreparedKex,
) -> crate::tests::Pair {
    let server = ServerConfig {
        kex: vec![server],
        ..ServerConfig::default()
    };
    let mut pair = crate::tests::Pair::new(guessing(ours.to_vec()), server);
    pair.client = ClientTransport::with_prepared_kex(
        guessing(ours.to_vec()),
        Box::new(SeededRandom::new(1)),
        Instant::now(),
        Some(prepared),
    );
    pair
}

/// The first message `prepared(kex, seed)` holds, as the method makes it from the same bytes.
fn prepared_message(kex: KexAlgorithm, seed: u64) -> Vec<u8> {
    kex.client().start(&mut SeededRandom::new(seed)).unwrap()
}

#[test]
fn a_prepared_first_message_goes_out_as_the_guess() {
    let kex = KexAlgorithm::Sntrup761X25519Sha512;
    let server = ServerConfig {
        kex: vec![kex],
        ..ServerConfig::default()
    };
    let mut pair = crate::tests::Pair::new(guessing(vec![kex]), server);
    pair.client = ClientTransport::with_prepared_kex(
        guessing(vec![kex]),
        Box::new(SeededRandom::new(1)),
        Instant::now(),
        Some(prepared(kex, 77)),
    );
    assert_eq!(round_trips_to_established(&mut pair), 1);
    assert_eq!(pair.client.kex_guess_right(), Some(true));
    assert_eq!(pair.server.client_kex_messages, [prepared_message(kex, 77)]);
    assert_eq!(pair.client.prepared_kex_used(), 1);
    pair.drive();
    assert_eq!(pair.client_error, None);
}

#[test]
fn a_prepared_first_message_is_used_when_the_server_settles_on_its_method() {
    // No guess: the message goes out after the server's KEXINIT, the prepared one.
    let kex = KexAlgorithm::Curve25519Sha256;
    let config = || ClientConfig {
        kex_algorithms: vec![kex, KexAlgorithm::EcdhNistP256],
        ..ClientConfig::default()
    };
    let mut pair = crate::tests::Pair::new(config(), ServerConfig::default());
    pair.client = ClientTransport::with_prepared_kex(
        config(),
        Box::new(SeededRandom::new(1)),
        Instant::now(),
        Some(prepared(kex, 5)),
    );
    pair.drive();
    assert_eq!(pair.client_error, None);
    assert!(pair.client.is_established());
    assert_eq!(pair.server.client_kex_messages, [prepared_message(kex, 5)]);
    assert_eq!(pair.client.prepared_kex_used(), 1);
}

#[test]
fn a_prepared_message_of_another_method_is_not_used_and_the_handshake_still_works() {
    // Prepared for the method we prefer, but the server only runs another: our KEXINIT
    // offers both, the server settles on the second, and its message is made on the spot.
    let mut pair = guessing_with_prepared(
        &[
            KexAlgorithm::MlKem768X25519Sha256,
            KexAlgorithm::EcdhNistP256,
        ],
        KexAlgorithm::EcdhNistP256,
        prepared(KexAlgorithm::MlKem768X25519Sha256, 9),
    );
    pair.drive();
    assert_eq!(pair.client_error, None);
    assert_eq!(pair.client.kex_guess_right(), Some(false));
    assert_eq!(pair.server.guesses, (0, 1));
    assert_eq!(
        pair.client.prepared_kex_used(),
        0,
        "a skipped guess does not count"
    );
    // The guess (the prepared message) was skipped; the one the server ran is fresh.
    assert_eq!(pair.server.client_kex_messages.len(), 1);
    assert_ne!(
        pair.server.client_kex_messages[0],
        prepared_message(KexAlgorithm::MlKem768X25519Sha256, 9)
    );
    assert_eq!(pair.server.client_kex_messages[0][0], 30);
    assert_eq!(
        pair.client.negotiated().unwrap().kex,
        KexAlgorithm::EcdhNistP256
    );
    // Nothing is held for an exchange that will not come, and no rekey is near.
    assert_eq!(pair.client.wants_prepared_kex(), None);
    pair.client
        .offer_prepared_kex(prepared(KexAlgorithm::EcdhNistP256, 3));
    pair.client.rekey();
    pair.drive();
    assert_eq!(pair.client_error, None);
    assert_eq!(pair.client.prepared_kex_used(), 1);
}

#[test]
fn an_offered_message_serves_the_next_rekey_once() {
    let kex = KexAlgorithm::Sntrup761X25519Sha512;
    let server = ServerConfig {
        kex: vec![kex],
        ..ServerConfig::default()
    };
    let mut pair = crate::tests::Pair::new(
        ClientConfig {
            kex_algorithms: vec![kex],
            ..ClientConfig::default()
        },
        server,
    );
    assert_eq!(
        pair.client.wants_prepared_kex(),
        None,
        "nothing before the first exchange"
    );
    pair.drive();
    assert_eq!(pair.client_error, None);
    assert_eq!(
        pair.client.wants_prepared_kex(),
        None,
        "no rekey is near: a session that never rekeys makes no spare key pair"
    );
    pair.client.offer_prepared_kex(prepared(kex, 31));
    assert_eq!(pair.client.wants_prepared_kex(), None, "one is held");

    // A rekey the server starts uses it as well as one we start would.
    pair.server.rekey();
    pair.drive();
    assert_eq!(pair.client_error, None);
    assert_eq!(pair.client.kex_count(), 2);
    assert_eq!(pair.server.client_kex_messages.len(), 2);
    assert_eq!(
        pair.server.client_kex_messages[1],
        prepared_message(kex, 31)
    );
    assert_eq!(
        pair.client.wants_prepared_kex(),
        Some(kex),
        "used up, and this session rekeys: the next is worth making"
    );
    assert_eq!(pair.client.prepared_kex_used(), 1);

    // The next one, with nothing offered, makes its own.
    pair.client.rekey();
    pair.drive();
    assert_eq!(pair.client_error, None);
    assert_eq!(pair.client.kex_count(), 3);
    assert_eq!(pair.server.client_kex_messages.len(), 3);
    assert_ne!(
        pair.server.client_kex_messages[2],
        prepared_message(kex, 31)
    );
    assert_eq!(pair.client.prepared_kex_used(), 1);

    // And data still flows both ways under the keys it made.
    pair.client.send(&payload(1, 3000));
    pair.server.send(&payload(2, 3000));
    pair.drive();
    assert_eq!(pair.client_error, None);
    assert_eq!(pair.to_server.last(), Some(&payload(1, 3000)));
    assert_eq!(pair.to_client.last(), Some(&payload(2, 3000)));
}

#[test]
fn group_exchange_wants_nothing_prepared() {
    let server = ServerConfig {
        kex: vec![KexAlgorithm::DhGexSha256],
        ..ServerConfig::default()
    };
    let mut pair = crate::tests::Pair::new(
        ClientConfig {
            kex_algorithms: vec![KexAlgorithm::DhGexSha256],
            ..ClientConfig::default()
        },
        server,
    );
    pair.drive();
    assert_eq!(pair.client_error, None);
    assert_eq!(pair.client.wants_prepared_kex(), None);
}

#[test]
fn an_opening_is_wanted_once_half_the_byte_limit_has_gone() {
    let kex = KexAlgorithm::Curve25519Sha256;
    let mut pair = crate::tests::Pair::new(
        ClientConfig {
            kex_algorithms: vec![kex],
            rekey_limit: Some(256 * 1024),
            ..ClientConfig::default()
        },
        ServerConfig::default(),
    );
    pair.drive();
    assert_eq!(pair.client.wants_prepared_kex(), None);
    let mut sent = 0;
    while pair.client.wants_prepared_kex().is_none() {
        assert!(sent < 140_000, "{sent} bytes sent and nothing wanted");
        pair.client.send(&payload(sent, 4000));
        pair.drive();
        sent += 4000;
    }
    assert!(
        sent >= 120_000,
        "wanted after {sent} bytes of a 256 KiB limit"
    );
    assert_eq!(pair.client.wants_prepared_kex(), Some(kex));
    pair.client.offer_prepared_kex(prepared(kex, 8));
    assert_eq!(pair.client.wants_prepared_kex(), None, "one is held");
    // The limit's rekey runs on it.
    while pair.client.kex_count() < 2 {
        pair.client.send(&payload(sent, 4000));
        pair.drive();
        sent += 4000;
        assert!(sent < 512 * 1024, "no rekey at the byte limit");
    }
    assert_eq!(pair.client_error, None);
    assert_eq!(pair.client.prepared_kex_used(), 1);
}

#[test]
fn an_opening_is_wanted_once_half_the_time_limit_has_gone() {
    let kex = KexAlgorithm::Curve25519Sha256;
    let t0 = Instant::now();
    let mut pair = crate::tests::Pair::new(
        ClientConfig {
            kex_algorithms: vec![kex],
            rekey_interval: Some(std::time::Duration::from_secs(60)),
            ..ClientConfig::default()
        },
        ServerConfig::default(),
    );
    pair.drive();
    let at = |s| t0 + std::time::Duration::from_secs(s);
    pair.client.handle_timeout(at(1));
    assert_eq!(pair.client.wants_prepared_kex(), None);
    pair.client.handle_timeout(at(30));
    assert_eq!(pair.client.wants_prepared_kex(), None, "29 s of 60");
    pair.client.handle_timeout(at(31));
    assert_eq!(pair.client.wants_prepared_kex(), Some(kex), "30 s of 60");
}

#[test]
fn a_message_prepared_for_another_method_than_the_guess_waits_for_the_servers_kexinit() {
    // We guess with our first method; the message was made for our second, the one the
    // server runs: the guess is made on the spot, and the prepared message serves the
    // exchange the server settles on.
    let mut pair = guessing_with_prepared(
        &[KexAlgorithm::Curve25519Sha256, KexAlgorithm::EcdhNistP256],
        KexAlgorithm::EcdhNistP256,
        prepared(KexAlgorithm::EcdhNistP256, 12),
    );
    pair.drive();
    assert_eq!(pair.client_error, None);
    assert_eq!(pair.client.kex_guess_right(), Some(false));
    assert_eq!(
        pair.server.client_kex_messages,
        [prepared_message(KexAlgorithm::EcdhNistP256, 12)]
    );
    assert_eq!(pair.client.prepared_kex_used(), 1);
}
