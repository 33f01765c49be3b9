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
