//! OpenSSH user certificates: `Certificate::from_blob` and `from_openssh_line`.
//!
//! Input: `mode, rest`. Mode 0 parses `rest` as a certificate blob, mode 1 as the text of a
//! `-cert.pub` file, mode 2 as the base64 body of one line behind the Ed25519 certificate
//! type name. Parsing checks the authority's signature, which a mutated input almost never
//! keeps, so mode 3 issues `rest` again first: its last two strings (the authority's key and
//! signature) are replaced by a fixture authority's key and its signature over the rest, and
//! the fields the fuzzer changed reach every property below.
//!
//! Properties: what parses keeps its blob exactly and parses again to the same certificate;
//! its key is a valid plain key of the type its name says; principals stay within their
//! bound; validity agrees with `valid after <= now < valid before` at the edges; a
//! certified identity made from it offers the blob and the certificate algorithm names. A
//! certificate issued again by the fixture authority names that authority, and with one bit
//! of that authority's signature flipped it no longer parses.

use ssh_auth::Identity;
use ssh_auth::cert::{
    Certificate, MAX_PRINCIPALS, Validity, certificate_algorithm_from_name,
    certificate_algorithm_name, certificate_type_name,
};
use ssh_transport::hostkey::{PublicKey, SignatureAlgorithm};
use ssh_transport::wire::{Reader, Writer as _};

use crate::fixtures;

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    drive(data);
}

/// The harness; returns the certificate that parsed, if any.
pub fn drive(data: &[u8]) -> Option<Certificate> {
    let (&mode, rest) = data.split_first()?;
    let cert = match mode % 4 {
        0 => Certificate::from_blob(rest).ok()?,
        1 => Certificate::from_openssh_line(core::str::from_utf8(rest).ok()?).ok()?,
        3 => {
            let blob = issue_again(rest)?;
            let cert = Certificate::from_blob(&blob).ok()?;
            check_reissued(&cert, &blob);
            check(&cert, true, &blob);
            return Some(cert);
        }
        _ => {
            let text = format!(
                "ssh-ed25519-cert-v01@openssh.com {}",
                String::from_utf8_lossy(rest)
            );
            Certificate::from_openssh_line(&text).ok()?
        }
    };
    check(&cert, mode == 0, rest);
    Some(cert)
}

/// The authority that issues mode 3's certificates again.
fn authority() -> &'static ssh_auth::PrivateKey {
    static KEY: std::sync::OnceLock<ssh_auth::PrivateKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| fixtures::ed25519(0xca))
}

/// `blob` with its last two strings replaced by [`authority`]'s key and signature over all
/// before it: the first split where exactly two strings remain. `None` if there is none.
fn issue_again(blob: &[u8]) -> Option<Vec<u8>> {
    let two_strings = |tail: &[u8]| {
        let mut r = Reader::new(tail);
        r.string().is_ok() && r.string().is_ok() && r.is_empty()
    };
    let split = (0..blob.len()).find(|&at| blob.get(at..).is_some_and(two_strings))?;
    let mut out = blob.get(..split)?.to_vec();
    out.put_string(authority().public_key().blob());
    let signature = match authority().sign(SignatureAlgorithm::Ed25519, &out) {
        Ok(s) => s,
        Err(e) => panic!("the fixture authority cannot sign: {e}"),
    };
    out.put_string(&signature);
    Some(out)
}

fn check_reissued(cert: &Certificate, blob: &[u8]) {
    assert_eq!(
        cert.ca_fingerprint(),
        authority().public_key().fingerprint(),
        "a certificate issued again names another authority"
    );
    let mut altered = blob.to_vec();
    if let Some(last) = altered.last_mut() {
        *last ^= 0x01;
    }
    assert!(
        matches!(
            Certificate::from_blob(&altered),
            Err(ssh_auth::CertError::BadSignature { .. })
        ),
        "a certificate whose authority's signature was altered still parses"
    );
}

fn check(cert: &Certificate, from_blob: bool, input: &[u8]) {
    if from_blob {
        assert_eq!(cert.blob(), input, "the blob was not kept as given");
    }
    let again = match Certificate::from_blob(cert.blob()) {
        Ok(c) => c,
        Err(e) => panic!("a certificate's own blob does not parse again: {e}"),
    };
    assert_eq!(again.blob(), cert.blob());
    assert_eq!(again.public_key(), cert.public_key());
    assert_eq!(again.key_id(), cert.key_id());
    // The certified key is a plain key of the certificate's type.
    assert_eq!(cert.public_key().key_type(), cert.key_type());
    assert_eq!(cert.type_name(), certificate_type_name(cert.key_type()));
    assert!(
        PublicKey::from_blob(cert.public_key().blob()).is_ok(),
        "the certified key's blob does not parse"
    );
    assert!(cert.principals().len() <= MAX_PRINCIPALS);
    for text in cert
        .principals()
        .iter()
        .chain(cert.extensions())
        .chain(cert.critical_options())
        .chain([&cert.key_id().to_owned()])
    {
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\t'),
            "certificate text not sanitized: {text:?}"
        );
    }
    let (after, before) = (cert.valid_after(), cert.valid_before());
    if after > 0 {
        assert_eq!(cert.validity_at(after - 1), Validity::NotYetValid);
    }
    if after < before {
        assert_eq!(cert.validity_at(after), Validity::Valid);
        assert_eq!(cert.validity_at(before - 1), Validity::Valid);
    }
    assert_ne!(cert.validity_at(before), Validity::Valid);
    let _ = cert.describe();
    let id = Identity::external_certified(cert.clone(), "fuzz", false);
    assert_eq!(id.key_blob(), cert.blob());
    for alg in ssh_transport::hostkey::SignatureAlgorithm::ALL {
        if alg.key_type() == cert.key_type() {
            let name = id.algorithm_name(*alg);
            assert_eq!(name, certificate_algorithm_name(*alg));
            assert_eq!(certificate_algorithm_from_name(name), Some(*alg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_parses() {
        let seeds = crate::seeds::all();
        let mine: Vec<_> = seeds
            .iter()
            .filter(|s| s.target == "auth_certificate")
            .collect();
        assert!(mine.len() >= 4);
        for seed in mine {
            assert!(
                drive(&seed.data).is_some(),
                "seed {} does not parse",
                seed.name
            );
            // Each blob seed, issued again by the fixture authority, parses too.
            if let Some((0, blob)) = seed.data.split_first() {
                let mut again = vec![3];
                again.extend_from_slice(blob);
                assert!(drive(&again).is_some(), "seed {} issued again", seed.name);
            }
        }
    }

    #[test]
    fn a_seed_with_one_flipped_bit_does_not_parse_but_issued_again_does() {
        let seeds = crate::seeds::all();
        let Some(seed) = seeds.iter().find(|s| s.name == "cert-blob-ed25519") else {
            panic!("no cert-blob-ed25519 seed");
        };
        // A bit of the key id, which the authority signed.
        let mut data = seed.data.clone();
        data[1 + 130] ^= 0x01;
        assert!(drive(&data).is_none());
        data[0] = 3;
        let cert = drive(&data).unwrap_or_else(|| panic!("issued again, it parses"));
        assert_ne!(cert.key_id(), "fixture-ed25519-user");
    }
}
