use super::*;
use crate::hostkey::HostKeyAlgorithm;
use crate::server::{CertificateBuilder, ed25519_ca_key};

const CA_SEED: [u8; 32] = [0xca; 32];

fn host_key() -> PublicKey {
    PublicKey::ed25519(&[0x33; 32])
}

#[test]
fn a_host_certificate_decodes_with_its_authority_and_type() {
    let blob = CertificateBuilder::host(host_key().blob(), &["db.example.com", "*.corp"])
        .sign_ed25519(CA_SEED);
    let cert = Certificate::decode(&blob).unwrap();
    assert_eq!(cert.cert_type(), CERT_TYPE_HOST);
    assert_eq!(cert.public_key(), &host_key());
    assert_eq!(cert.ca_key(), ed25519_ca_key(CA_SEED).blob());
    assert_eq!(cert.ca_fingerprint(), ed25519_ca_key(CA_SEED).fingerprint());
    assert_eq!(
        cert.ca_signature_algorithm(),
        Some(SignatureAlgorithm::Ed25519)
    );
    assert_eq!(cert.principals(), ["db.example.com", "*.corp"]);
    assert_eq!(cert.type_name(), "ssh-ed25519-cert-v01@openssh.com");
    // What ssh-auth reads is a user certificate only.
    assert_eq!(
        Certificate::from_blob(&blob),
        Err(CertError::NotAUserCertificate { cert_type: 2 })
    );
}

#[test]
fn a_host_certificate_with_a_bad_authority_signature_does_not_decode() {
    let mut blob = CertificateBuilder::host(host_key().blob(), &["h"]).sign_ed25519(CA_SEED);
    *blob.last_mut().unwrap() ^= 1;
    assert!(matches!(
        Certificate::decode(&blob),
        Err(CertError::BadSignature { .. })
    ));
}

#[test]
fn host_key_algorithm_names_round_trip() {
    for alg in HostKeyAlgorithm::ALL {
        assert_eq!(HostKeyAlgorithm::from_name(alg.name()), Some(*alg));
    }
    let cert = HostKeyAlgorithm::certificate(SignatureAlgorithm::RsaSha512);
    assert_eq!(cert.name(), "rsa-sha2-512-cert-v01@openssh.com");
    assert_eq!(cert.key_type_name(), "ssh-rsa-cert-v01@openssh.com");
    assert_eq!(
        HostKeyAlgorithm::from_name("ssh-rsa-cert-v01@openssh.com"),
        Some(HostKeyAlgorithm::certificate(SignatureAlgorithm::RsaSha1))
    );
    assert_eq!(
        HostKeyAlgorithm::from_name("ssh-ed25519"),
        Some(HostKeyAlgorithm::plain(SignatureAlgorithm::Ed25519))
    );
    assert_eq!(
        HostKeyAlgorithm::from_name("ssh-dss-cert-v01@openssh.com"),
        None
    );
}
