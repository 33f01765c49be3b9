use proptest::prelude::*;
use ssh_transport::hostkey::{KeyType, PublicKey, SignatureAlgorithm};
use ssh_transport::wire::{Reader, Writer as _};

use super::*;

const ED25519_CERT: &str = include_str!("../../testdata/certs/ed25519-cert.pub");
const RSA_CERT: &str = include_str!("../../testdata/certs/rsa2048-cert.pub");
const ECDSA_CERT: &str = include_str!("../../testdata/certs/ecdsa-p256-cert.pub");
const EXPIRED_CERT: &str = include_str!("../../testdata/certs/ed25519-expired-cert.pub");
const NOFORWARD_CERT: &str = include_str!("../../testdata/certs/ed25519-noforward-cert.pub");
const HOST_CERT: &str = include_str!("../../testdata/certs/ed25519-host-cert.pub");
const ED25519_PUB: &str = include_str!("../../testdata/ed25519.pub");
const RSA_PUB: &str = include_str!("../../testdata/rsa2048.pub");

/// 2020-01-01T00:00:00Z and 2099-12-31T00:00:00Z, the fixtures' usual validity.
const JAN_2020: u64 = 1_577_836_800;
const DEC_2099: u64 = 4_102_358_400;

fn public_of(line: &str) -> PublicKey {
    use base64::Engine as _;
    let b64 = line.split_whitespace().nth(1).unwrap();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    PublicKey::from_blob(&blob).unwrap()
}

fn blob_of(line: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(line.split_whitespace().nth(1).unwrap())
        .unwrap()
}

#[test]
fn ssh_keygen_certificates_parse_with_every_field() {
    let c = Certificate::from_openssh_line(ED25519_CERT).unwrap();
    assert_eq!(c.key_type(), KeyType::Ed25519);
    assert_eq!(c.type_name(), "ssh-ed25519-cert-v01@openssh.com");
    assert_eq!(c.public_key(), &public_of(ED25519_PUB));
    assert_eq!(c.key_id(), "fixture-ed25519-user");
    assert_eq!(c.serial(), 7);
    assert_eq!(c.principals(), ["deploy", "admin"]);
    assert!(c.allows_principal("admin") && !c.allows_principal("root"));
    assert_eq!((c.valid_after(), c.valid_before()), (JAN_2020, DEC_2099));
    assert!(c.permits_port_forwarding());
    assert!(c.extensions().iter().any(|e| e == "permit-pty"));
    assert!(c.critical_options().is_empty());
    assert_eq!(
        c.ca_fingerprint(),
        "SHA256:nFxVWk/xIaDsEHRu5S9Wq4YjOqqZJZDNQ1A3pS/z9kU"
    );
    assert_eq!(c.blob(), blob_of(ED25519_CERT));
    assert_eq!(
        c.describe(),
        "certificate ID \"fixture-ed25519-user\" serial 7 valid from \
         2020-01-01T00:00:00Z to 2099-12-31T00:00:00Z"
    );

    let r = Certificate::from_openssh_line(RSA_CERT).unwrap();
    assert_eq!(r.key_type(), KeyType::Rsa);
    assert_eq!(r.public_key(), &public_of(RSA_PUB));
    assert_eq!((r.valid_after(), r.valid_before()), (0, u64::MAX));
    assert_eq!(r.validity_at(u64::MAX - 1), Validity::Valid);
    assert!(r.describe().ends_with("valid forever"), "{}", r.describe());
    assert_eq!(
        r.ca_fingerprint(),
        "SHA256:Sa/sL1tAE9UMutA/jWxrxqyyFejSBYFTBEy/mbfs8iM"
    );

    let e = Certificate::from_openssh_line(ECDSA_CERT).unwrap();
    assert_eq!(e.key_type(), KeyType::EcdsaP256);
    assert!(e.principals().is_empty() && e.allows_principal("anyone"));

    let n = Certificate::from_openssh_line(NOFORWARD_CERT).unwrap();
    assert!(!n.permits_port_forwarding());
    assert_eq!(n.critical_options(), ["force-command"]);
}

#[test]
fn validity_is_half_open() {
    let c = Certificate::from_openssh_line(EXPIRED_CERT).unwrap();
    let (after, before) = (c.valid_after(), c.valid_before());
    assert_eq!(c.validity_at(after - 1), Validity::NotYetValid);
    assert_eq!(c.validity_at(after), Validity::Valid);
    assert_eq!(c.validity_at(before - 1), Validity::Valid);
    assert_eq!(c.validity_at(before), Validity::Expired);
}

#[test]
fn host_certificates_and_plain_keys_are_refused() {
    assert_eq!(
        Certificate::from_openssh_line(HOST_CERT),
        Err(CertError::NotAUserCertificate { cert_type: 2 })
    );
    let err = Certificate::from_openssh_line(ED25519_PUB).unwrap_err();
    assert!(
        err.to_string().contains("is not a certificate type"),
        "{err}"
    );
    assert!(Certificate::from_openssh_line("").is_err());
    assert!(Certificate::from_openssh_line("ssh-ed25519-cert-v01@openssh.com").is_err());
    assert!(Certificate::from_openssh_line("ssh-ed25519-cert-v01@openssh.com !!!").is_err());
}

#[test]
fn a_line_whose_type_disagrees_with_its_blob_is_refused() {
    let b64 = ED25519_CERT.split_whitespace().nth(1).unwrap();
    let line = format!("ssh-rsa-cert-v01@openssh.com {b64} c");
    let err = Certificate::from_openssh_line(&line).unwrap_err();
    assert!(
        err.to_string()
            .contains("but the blob is a ssh-ed25519-cert"),
        "{err}"
    );
}

#[test]
fn comments_around_the_line_are_skipped_and_the_comment_kept() {
    let text = format!("# issued today\n\n{ED25519_CERT}");
    let c = Certificate::from_openssh_line(&text).unwrap();
    assert_eq!(
        c.comment(),
        ED25519_CERT.split_whitespace().nth(2).unwrap_or("")
    );
}

#[test]
fn trailing_bytes_and_every_truncation_are_refused() {
    let blob = blob_of(ED25519_CERT);
    let mut longer = blob.clone();
    longer.push(0);
    let err = Certificate::from_blob(&longer).unwrap_err();
    assert!(
        err.to_string().contains("bytes after its last field"),
        "{err}"
    );
    for len in 0..blob.len() {
        assert!(
            Certificate::from_blob(&blob[..len]).is_err(),
            "a certificate cut to {len} bytes parsed"
        );
    }
}

/// Rebuilds the ed25519 fixture with some fields replaced, to reach each check.
fn rebuild(edit: impl Fn(usize, &[u8], &mut Vec<u8>) -> bool) -> Vec<u8> {
    let blob = blob_of(ED25519_CERT);
    let mut r = Reader::new(&blob);
    let mut out = Vec::new();
    // name, nonce, pk, serial(8), type(4), key id, principals, after(8), before(8),
    // critical, extensions, reserved, ca key, signature
    let layout: [u8; 14] = [
        b's', b's', b's', 8, 4, b's', b's', 8, 8, b's', b's', b's', b's', b's',
    ];
    for (i, kind) in layout.iter().enumerate() {
        let field = match kind {
            b's' => r.string().unwrap(),
            n => r.bytes(usize::from(*n)).unwrap(),
        };
        if !edit(i, field, &mut out) {
            if *kind == b's' {
                out.put_string(field);
            } else {
                out.put_raw(field);
            }
        }
    }
    out
}

#[test]
fn each_field_is_checked() {
    // A security-key certificate type is named as unsupported.
    let sk = rebuild(|i, _, out| {
        (i == 0)
            .then(|| out.put_str("sk-ssh-ed25519-cert-v01@openssh.com"))
            .is_some()
    });
    assert!(matches!(
        Certificate::from_blob(&sk),
        Err(CertError::UnsupportedType(_))
    ));
    // A public key of the wrong length.
    let short = rebuild(|i, _, out| (i == 2).then(|| out.put_string(&[1; 31])).is_some());
    assert!(Certificate::from_blob(&short).is_err());
    // Principals that do not parse.
    let bad = rebuild(|i, _, out| (i == 6).then(|| out.put_string(&[0, 0, 0, 9, 1])).is_some());
    assert!(Certificate::from_blob(&bad).is_err());
    // Extensions out of order.
    let unordered = rebuild(|i, _, out| {
        (i == 10)
            .then(|| {
                let mut ext = Vec::new();
                for name in ["permit-pty", "permit-agent-forwarding"] {
                    ext.put_str(name);
                    ext.put_string(b"");
                }
                out.put_string(&ext);
            })
            .is_some()
    });
    let err = Certificate::from_blob(&unordered).unwrap_err();
    assert!(err.to_string().contains("not in order"), "{err}");
    // A certificate as its own authority.
    let chained = rebuild(|i, _, out| {
        (i == 12)
            .then(|| {
                let mut ca = Vec::new();
                ca.put_str("ssh-ed25519-cert-v01@openssh.com");
                out.put_string(&ca);
            })
            .is_some()
    });
    let err = Certificate::from_blob(&chained).unwrap_err();
    assert!(err.to_string().contains("itself a certificate"), "{err}");
    // An empty signature.
    let unsigned = rebuild(|i, _, out| (i == 13).then(|| out.put_string(b"")).is_some());
    assert!(Certificate::from_blob(&unsigned).is_err());
    // And the unedited rebuild is the original.
    assert_eq!(rebuild(|_, _, _| false), blob_of(ED25519_CERT));
}

#[test]
fn too_many_principals_are_refused() {
    let mut principals = Vec::new();
    for i in 0..=MAX_PRINCIPALS {
        principals.put_str(&format!("u{i}"));
    }
    let blob = rebuild(|i, _, out| (i == 6).then(|| out.put_string(&principals)).is_some());
    let err = Certificate::from_blob(&blob).unwrap_err();
    assert!(
        err.to_string().contains("more than 256 principals"),
        "{err}"
    );
    let huge = vec![0u8; MAX_CERTIFICATE_LEN + 1];
    assert!(Certificate::from_blob(&huge).is_err());
}

#[test]
fn algorithm_names() {
    assert_eq!(
        certificate_algorithm_name(SignatureAlgorithm::RsaSha512),
        "rsa-sha2-512-cert-v01@openssh.com"
    );
    assert_eq!(
        certificate_algorithm_name(SignatureAlgorithm::Ed25519),
        "ssh-ed25519-cert-v01@openssh.com"
    );
    for alg in SignatureAlgorithm::ALL {
        assert_eq!(
            certificate_algorithm_from_name(certificate_algorithm_name(*alg)),
            Some(*alg)
        );
    }
    assert_eq!(certificate_algorithm_from_name("ssh-ed25519"), None);
}

#[test]
fn utc_dates() {
    assert_eq!(utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(utc(JAN_2020), "2020-01-01T00:00:00Z");
    assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(utc(4_107_542_399), "2100-02-28T23:59:59Z");
    assert_eq!(utc(4_107_542_400), "2100-03-01T00:00:00Z");
    // The largest value still formats (a far-future year), without overflow.
    assert!(utc(u64::MAX - 1).ends_with('Z'));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Certificate::from_blob(&data);
    }

    #[test]
    fn one_flipped_byte_never_panics(at in 0usize..300, bit in 0u8..8) {
        let mut blob = blob_of(ED25519_CERT);
        let at = at % blob.len();
        blob[at] ^= 1 << bit;
        if let Ok(c) = Certificate::from_blob(&blob) {
            // Whatever still parses is described without panicking.
            let _ = c.describe();
            prop_assert_eq!(c.blob(), &blob[..]);
        }
    }
}

const CA_RSA: &str = "ssh-rsa key SHA256:nFxVWk/xIaDsEHRu5S9Wq4YjOqqZJZDNQ1A3pS/z9kU";
const CA_ED25519: &str = "ssh-ed25519 key SHA256:Sa/sL1tAE9UMutA/jWxrxqyyFejSBYFTBEy/mbfs8iM";
const NO_MATCH: &str = "it does not match the certificate's contents";

/// The `-cert.pub` line of `blob`, with the type word its blob names.
fn line_of(blob: &[u8]) -> String {
    use base64::Engine as _;
    let name = Reader::new(blob).utf8().unwrap();
    format!(
        "{name} {} user@host",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

fn assert_bad_signature(result: Result<Certificate, CertError>, ca: &str, why: &str) {
    match result {
        Err(CertError::BadSignature { ca: c, why: w }) => {
            assert_eq!((c.as_str(), w.as_str()), (ca, why));
        }
        other => panic!("expected a bad signature by {ca}, got {other:?}"),
    }
}

#[test]
fn a_certificate_whose_authority_signature_does_not_verify_is_refused() {
    for (line, ca) in [
        (ED25519_CERT, CA_RSA),
        (RSA_CERT, CA_ED25519),
        (ECDSA_CERT, CA_ED25519),
    ] {
        // The last byte of the signature.
        let mut blob = blob_of(line);
        *blob.last_mut().unwrap() ^= 0x01;
        assert_bad_signature(Certificate::from_blob(&blob), ca, NO_MATCH);
        let err = Certificate::from_openssh_line(&line_of(&blob)).unwrap_err();
        assert_bad_signature(Err(err.clone()), ca, NO_MATCH);
        assert_eq!(
            err.to_string(),
            format!(
                "its certificate authority's signature (by {ca}) is not valid: {NO_MATCH}; \
                 the certificate was damaged or altered after it was issued, so the server \
                 would refuse it: have it issued again (ssh-keygen -s) and replace the file"
            )
        );
    }
    // A field the authority signed, changed: another serial, another key id.
    let serial = rebuild(|i, _, out| (i == 3).then(|| out.put_u64(8)).is_some());
    assert_bad_signature(Certificate::from_blob(&serial), CA_RSA, NO_MATCH);
    let key_id = rebuild(|i, _, out| (i == 5).then(|| out.put_str("admin")).is_some());
    assert_bad_signature(Certificate::from_blob(&key_id), CA_RSA, NO_MATCH);
    // The signature of another authority's key, put in place of the one that signed.
    let other_ca = rebuild(|i, _, out| {
        (i == 12)
            .then(|| out.put_string(public_of(RSA_PUB).blob()))
            .is_some()
    });
    let other = format!("ssh-rsa key {}", public_of(RSA_PUB).fingerprint());
    assert_bad_signature(Certificate::from_blob(&other_ca), &other, NO_MATCH);
    // A signature of an algorithm the authority's key cannot make.
    let renamed = rebuild(|i, _, out| {
        (i == 13)
            .then(|| {
                let mut sig = Vec::new();
                sig.put_str("ssh-ed25519");
                sig.put_string(&[7; 64]);
                out.put_string(&sig);
            })
            .is_some()
    });
    assert_bad_signature(
        Certificate::from_blob(&renamed),
        CA_RSA,
        "a ssh-rsa key cannot make a \"ssh-ed25519\" signature",
    );
}

// Every byte of a certificate is either signed by the authority or part of its signature.
#[test]
fn no_certificate_with_a_flipped_bit_parses() {
    let blob = blob_of(ED25519_CERT);
    for at in 0..blob.len() {
        for bit in 0..8 {
            let mut flipped = blob.clone();
            flipped[at] ^= 1 << bit;
            assert!(
                Certificate::from_blob(&flipped).is_err(),
                "bit {bit} of byte {at} flipped still parses"
            );
        }
    }
}

/// The ed25519 fixture issued again by `ca` with `alg`.
fn issued_by(ca: &crate::PrivateKey, alg: SignatureAlgorithm) -> Vec<u8> {
    rebuild(|i, _, out| match i {
        12 => {
            out.put_string(ca.public_key().blob());
            true
        }
        13 => {
            let signature = ca.sign(alg, out).unwrap();
            out.put_string(&signature);
            true
        }
        _ => false,
    })
}

#[test]
fn authorities_of_every_key_type_are_verified_rsa_above_8192_bits_too() {
    use crate::PrivateKey;
    let ed = PrivateKey::from_file_contents(include_bytes!("../../testdata/ed25519")).unwrap();
    let ecdsa =
        PrivateKey::from_file_contents(include_bytes!("../../testdata/ecdsa-p256")).unwrap();
    let rsa = PrivateKey::from_file_contents(include_bytes!("../../testdata/rsa2048")).unwrap();
    let rsa16384 =
        PrivateKey::from_file_contents(include_bytes!("../../testdata/rsa16384")).unwrap();
    for (ca, alg) in [
        (&ed, SignatureAlgorithm::Ed25519),
        (&ecdsa, SignatureAlgorithm::EcdsaP256),
        (&rsa, SignatureAlgorithm::RsaSha256),
        (&rsa16384, SignatureAlgorithm::RsaSha512),
    ] {
        let mut blob = issued_by(ca, alg);
        let cert = Certificate::from_blob(&blob).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(cert.ca_fingerprint(), ca.public_key().fingerprint());
        let byte = blob.len() - 10;
        blob[byte] ^= 0x80;
        let name = format!(
            "{} key {}",
            ca.public_key().key_type().name(),
            ca.public_key().fingerprint()
        );
        match Certificate::from_blob(&blob) {
            Err(CertError::BadSignature { ca, .. }) => assert_eq!(ca, name, "{alg}"),
            other => panic!("{alg}: {other:?}"),
        }
    }
}

// OpenSSH also takes authorities this client cannot verify with (a security key): their
// signature is left to the server, as it was before the client checked any.
#[test]
fn an_authority_key_this_client_cannot_use_leaves_the_signature_to_the_server() {
    let sk = rebuild(|i, _, out| {
        (i == 12)
            .then(|| {
                let mut key = Vec::new();
                key.put_str("sk-ssh-ed25519@openssh.com");
                key.put_string(&[3; 32]);
                key.put_str("ssh:");
                out.put_string(&key);
            })
            .is_some()
    });
    let cert = Certificate::from_blob(&sk).unwrap();
    assert_eq!(cert.key_id(), "fixture-ed25519-user");
    // Nor RSA under 2048 bits, down to OpenSSH's floor of 1024; below it, nothing takes it.
    let rsa_ca = |bytes: usize| {
        rebuild(move |i, _, out| {
            (i == 12)
                .then(|| {
                    let mut key = Vec::new();
                    key.put_str("ssh-rsa");
                    key.put_mpint(&[1, 0, 1]);
                    key.put_mpint(&vec![0xc5; bytes]);
                    out.put_string(&key);
                })
                .is_some()
        })
    };
    assert!(Certificate::from_blob(&rsa_ca(128)).is_ok());
    let err = Certificate::from_blob(&rsa_ca(127)).unwrap_err();
    assert!(err.to_string().contains("shorter than 2048 bits"), "{err}");
    // An unknown type is refused, as OpenSSH refuses it.
    let unknown = rebuild(|i, _, out| {
        (i == 12)
            .then(|| {
                let mut key = Vec::new();
                key.put_str("ssh-rs");
                out.put_string(&key);
            })
            .is_some()
    });
    let err = Certificate::from_blob(&unknown).unwrap_err();
    assert!(
        err.to_string().contains("of unknown type \"ssh-rs\""),
        "{err}"
    );
    // A key of a type it knows that does not even decode is refused, as OpenSSH refuses it.
    let truncated = rebuild(|i, _, out| {
        (i == 12)
            .then(|| {
                let mut key = Vec::new();
                key.put_str("ssh-ed25519");
                key.put_raw(&[0, 0, 0, 32, 1]);
                out.put_string(&key);
            })
            .is_some()
    });
    let err = Certificate::from_blob(&truncated).unwrap_err();
    assert!(
        matches!(&err, CertError::Malformed(m) if m.starts_with("signature key:")),
        "{err:?}"
    );
}
