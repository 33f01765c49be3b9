//! Every transport message decoder, public key blobs, signature checks and the version line
//! reader.
//!
//! Input: `selector, body`. `selector % 11` picks the parser. For the message decoders the
//! right message number is put in front of `body` unless `selector & 0x80` is set, so the
//! fuzzer spends its time on the fields; with the bit set `body` is the whole payload.
//! Whatever decodes must survive encode -> decode unchanged.

use core::fmt::Debug;

use ssh_transport::MessageType;
use ssh_transport::hostkey::{KeyType, PublicKey, SignatureAlgorithm, blob_key_type};
use ssh_transport::kex::{
    self, DebugMsg, Disconnect, EcdhInit, EcdhReply, ExtInfo, KexAlgorithm, KexInit, Unimplemented,
};
use ssh_transport::text::sanitize;
use ssh_transport::version::{
    Line, MAX_LINE_LEN, MAX_PRE_VERSION_LINES, MAX_VERSION_LEN, VersionReader,
};

use crate::input::{Input, chunks};

/// The parsers, in selector order.
pub const PARSERS: &[&str] = &[
    "KexInit",
    "EcdhInit",
    "EcdhReply",
    "Disconnect",
    "DebugMsg",
    "Unimplemented",
    "ExtInfo",
    "PublicKey::from_blob",
    "PublicKey::verify",
    "VersionReader",
    "text::sanitize",
];

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let whole = selector & 0x80 != 0;
    let payload = |number: MessageType| -> Vec<u8> {
        if whole {
            body.to_vec()
        } else {
            let mut p = Vec::with_capacity(body.len() + 1);
            p.push(number.0);
            p.extend_from_slice(body);
            p
        }
    };
    match usize::from(selector & 0x7f) % PARSERS.len() {
        0 => {
            if let Some(theirs) =
                round_trip(&payload(MessageType::KEXINIT), KexInit::decode, |m, o| {
                    m.encode(o)
                })
            {
                negotiate(&theirs);
            }
        }
        1 => {
            round_trip(
                &payload(MessageType::KEX_ECDH_INIT),
                EcdhInit::decode,
                |m, o| m.encode(o),
            );
        }
        2 => {
            round_trip(
                &payload(MessageType::KEX_ECDH_REPLY),
                EcdhReply::decode,
                |m, o| m.encode(o),
            );
        }
        3 => {
            if let Some(d) = round_trip(
                &payload(MessageType::DISCONNECT),
                Disconnect::decode,
                |m, o| m.encode(o),
            ) {
                check_sanitized(&d.description, false, 512);
            }
        }
        4 => {
            if let Some(d) = round_trip(&payload(MessageType::DEBUG), DebugMsg::decode, |m, o| {
                m.encode(o)
            }) {
                check_sanitized(&d.message, false, 512);
            }
        }
        5 => {
            round_trip(
                &payload(MessageType::UNIMPLEMENTED),
                Unimplemented::decode,
                |m, o| m.encode(o),
            );
        }
        6 => {
            if let Some(info) =
                round_trip(&payload(MessageType::EXT_INFO), ExtInfo::decode, |m, o| {
                    m.encode(o)
                })
                && let Some(Ok(names)) = info.server_sig_algs()
            {
                assert!(names.len() <= 128, "{} server-sig-algs kept", names.len());
                assert!(names.iter().all(|n| !n.is_empty() && !n.contains(',')));
            }
        }
        7 => public_key(body),
        8 => verify(body),
        9 => version(body),
        _ => {
            let mut input = Input::new(body);
            let max = usize::from(input.byte().unwrap_or(0));
            let keep_newlines = max & 1 == 1;
            check_sanitized(input.rest(), keep_newlines, max);
        }
    }
}

/// Decodes; if that works, encodes and decodes again, which must give the same value.
fn round_trip<T, E>(
    payload: &[u8],
    decode: fn(&[u8]) -> Result<T, E>,
    encode: fn(&T, &mut Vec<u8>),
) -> Option<T>
where
    T: PartialEq + Debug,
    E: Debug,
{
    let msg = decode(payload).ok()?;
    let mut wire = Vec::new();
    encode(&msg, &mut wire);
    match decode(&wire) {
        Ok(again) => assert_eq!(again, msg, "decode(encode(m)) != m"),
        Err(e) => panic!("{msg:?} encodes to bytes that do not decode: {e:?}"),
    }
    Some(msg)
}

/// Negotiates the decoded KEXINIT against what our client offers: what comes out must be on
/// both sides' lists.
fn negotiate(theirs: &KexInit) {
    let ours = KexInit {
        cookie: [0; 16],
        kex: KexAlgorithm::ALL
            .iter()
            .map(|k| k.name().to_owned())
            .chain([kex::EXT_INFO_C.into(), kex::STRICT_KEX_C.into()])
            .collect(),
        host_key: SignatureAlgorithm::ALL
            .iter()
            .map(|a| a.name().to_owned())
            .collect(),
        cipher_c2s: ssh_transport::cipher::ALL
            .iter()
            .map(|c| c.name.to_owned())
            .collect(),
        cipher_s2c: ssh_transport::cipher::ALL
            .iter()
            .map(|c| c.name.to_owned())
            .collect(),
        mac_c2s: Vec::new(),
        mac_s2c: Vec::new(),
        comp_c2s: vec!["none".into()],
        comp_s2c: vec!["none".into()],
        lang_c2s: Vec::new(),
        lang_s2c: Vec::new(),
        first_kex_packet_follows: false,
    };
    let _ = kex::guess_was_wrong(&ours, theirs);
    for initial in [true, false] {
        let Ok(n) = kex::negotiate(&ours, theirs, initial) else {
            continue;
        };
        let on_both = |name: &str, a: &[String], b: &[String]| {
            assert!(
                a.iter().any(|x| x == name) && b.iter().any(|x| x == name),
                "negotiated {name:?}, which is not offered by both sides"
            );
        };
        on_both(n.kex.name(), &ours.kex, &theirs.kex);
        on_both(n.host_key.name(), &ours.host_key, &theirs.host_key);
        on_both(n.cipher_c2s.name, &ours.cipher_c2s, &theirs.cipher_c2s);
        on_both(n.cipher_s2c.name, &ours.cipher_s2c, &theirs.cipher_s2c);
        if n.strict {
            assert!(initial, "strict kex negotiated in a rekey");
            assert!(theirs.kex.iter().any(|k| k == kex::STRICT_KEX_S));
        }
    }
}

fn public_key(blob: &[u8]) {
    let Ok(key) = PublicKey::from_blob(blob) else {
        return;
    };
    assert_eq!(key.blob(), blob, "the blob was not kept as received");
    assert_eq!(
        blob_key_type(blob).ok(),
        Some(key.key_type().name()),
        "blob_key_type disagrees with from_blob"
    );
    match PublicKey::from_blob(key.blob()) {
        Ok(again) => assert_eq!(again, key),
        Err(e) => panic!("{key:?} does not decode from its own blob: {e:?}"),
    }
    assert!(key.fingerprint().starts_with("SHA256:"));
    let line = key.to_openssh_line();
    assert!(line.starts_with(key.key_type().name()) && !line.contains('\n'));
    let bits = key.rsa_bits();
    if key.key_type() == KeyType::Rsa {
        assert!(
            (2048..=16384).contains(&bits),
            "RSA key of {bits} bits accepted"
        );
    }
}

/// `alg, u16 key length, key blob, signature blob`, checked over [`crate::fixtures::SIGNED_DATA`].
fn verify(body: &[u8]) {
    let mut input = Input::new(body);
    let Some(alg) = input.byte() else { return };
    let Some(key_len) = input.u16() else { return };
    let blob = input.bytes(usize::from(key_len));
    let signature = input.rest();
    let Ok(key) = PublicKey::from_blob(blob) else {
        return;
    };
    let all = SignatureAlgorithm::ALL;
    let alg = all[usize::from(alg) % all.len()];
    if key
        .verify(alg, crate::fixtures::SIGNED_DATA, signature)
        .is_ok()
    {
        assert_eq!(alg.key_type(), key.key_type(), "{alg:?} verified a {key:?}");
        // The same signature must not also verify other data.
        assert!(
            key.verify(alg, b"other data", signature).is_err(),
            "one signature verified two messages"
        );
    }
}

/// The client's use of `VersionReader`: keep what has arrived, take lines off the front.
fn version(body: &[u8]) {
    let mut input = Input::new(body);
    let chunking = input.byte().unwrap_or(0);
    let mut reader = VersionReader::default();
    let mut buffered: Vec<u8> = Vec::new();
    let mut banners = 0usize;
    for chunk in chunks(input.rest(), chunking) {
        buffered.extend_from_slice(chunk);
        loop {
            match reader.read(&buffered) {
                Ok(None) => {
                    assert!(
                        buffered.len() <= MAX_LINE_LEN,
                        "{} bytes held while waiting for a line",
                        buffered.len()
                    );
                    break;
                }
                Ok(Some(Line::Banner(line, n))) => {
                    banners += 1;
                    assert!(banners <= MAX_PRE_VERSION_LINES, "too many banner lines");
                    assert!(n > line.len() && n <= buffered.len());
                    assert_eq!(buffered.get(n - 1), Some(&b'\n'));
                    buffered.drain(..n);
                }
                Ok(Some(Line::Version(v, n))) => {
                    assert!(v.starts_with(b"SSH-2.0-") || v.starts_with(b"SSH-1.99-"));
                    assert!(n <= MAX_VERSION_LEN && n <= buffered.len() && n > v.len());
                    assert!(!v.contains(&0) && !v.contains(&b'\n'));
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

/// Sanitized text must hold no control character but tab (and newline when kept), and be cut
/// near `max` characters.
fn check_sanitized(raw: &[u8], keep_newlines: bool, max: usize) {
    let text = sanitize(raw, keep_newlines, max);
    for c in text.chars() {
        let allowed = c == '\t' || (keep_newlines && c == '\n');
        assert!(
            !c.is_control() || allowed,
            "control character {c:?} survived sanitize"
        );
        assert!(
            !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'),
            "bidi override {c:?} survived sanitize"
        );
    }
    // Each kept character may become up to four `\xNN` escapes (16 characters).
    assert!(text.chars().count() <= max * 16 + "[...]".len());
}
