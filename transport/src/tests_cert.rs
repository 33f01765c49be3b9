//! Host certificates: a certificate host key algorithm negotiated, K_S a certificate whose
//! certified key signs the exchange hash, and the ways a server can get that wrong.

use crate::cert::{CERT_TYPE_HOST, CertError};
use crate::client::ClientConfig;
use crate::error::Error;
use crate::hostkey::{HostKeyAlgorithm, KeyError, SignatureAlgorithm};
use crate::server::{CertificateBuilder, ServerConfig, ServerTransport, TestHostKey};
use crate::tests::Pair;

const CA_SEED: [u8; 32] = [0xca; 32];

/// The client as an application that trusts a certificate authority for the host configures
/// it: the certificate algorithms first, then the plain ones.
fn cert_first() -> ClientConfig {
    let mut cfg = ClientConfig::default();
    cfg.put_certificate_algorithms_first();
    cfg
}

fn host_key_of(kind: TestHostKey) -> Vec<u8> {
    let server = ServerTransport::new(
        ServerConfig {
            host_key_type: kind,
            ..ServerConfig::default()
        },
        Box::new(crate::server::SeededRandom::new(3)),
    );
    server.host_public_key().blob().to_vec()
}

fn server_with(cert: Vec<u8>) -> ServerConfig {
    ServerConfig {
        host_certificate: Some(cert),
        ..ServerConfig::default()
    }
}

fn ed25519_host_cert() -> Vec<u8> {
    CertificateBuilder::host(&host_key_of(TestHostKey::Ed25519), &["db.example.com"])
        .sign_ed25519(CA_SEED)
}

#[test]
fn a_certificate_host_key_is_negotiated_and_its_key_signs_the_exchange() {
    let cert = ed25519_host_cert();
    let mut p = Pair::new(cert_first(), server_with(cert.clone()));
    p.drive();
    assert_eq!(p.client_error, None);
    assert!(p.client.is_established());
    let n = p.client.negotiated().unwrap();
    assert_eq!(
        n.host_key,
        HostKeyAlgorithm::certificate(SignatureAlgorithm::Ed25519)
    );
    assert_eq!(n.host_key.name(), "ssh-ed25519-cert-v01@openssh.com");
    // The application saw the certified key, and can read the certificate.
    assert_eq!(p.client.host_key(), Some(&p.server.host_public_key()));
    let presented = p.client.host_certificate().expect("a certificate");
    assert_eq!(presented.blob(), cert.as_slice());
    assert_eq!(presented.cert_type(), CERT_TYPE_HOST);
    assert_eq!(presented.principals(), ["db.example.com"]);
    assert!(p.client_events.contains(&format!(
        "hostkey {}",
        p.server.host_public_key().fingerprint()
    )));
    // A rekey presenting the same certificate goes through.
    p.client.rekey();
    p.drive();
    assert_eq!(p.client_error, None);
    assert_eq!(p.client.kex_count(), 2);
}

#[test]
fn every_ecdsa_certificate_host_key_type_handshakes() {
    for (kind, alg) in [
        (TestHostKey::EcdsaP256, SignatureAlgorithm::EcdsaP256),
        (TestHostKey::EcdsaP384, SignatureAlgorithm::EcdsaP384),
        (TestHostKey::EcdsaP521, SignatureAlgorithm::EcdsaP521),
    ] {
        // The server's ECDSA keys from ring are random: certify the one it holds.
        let mut server = ServerConfig {
            host_key_type: kind,
            ..ServerConfig::default()
        };
        server.host_certificate = Some(Vec::new());
        let mut p = Pair::new(cert_first(), server);
        let key = p.server.host_public_key();
        p.server.replace_host_certificate(Some(
            CertificateBuilder::host(key.blob(), &["h"]).sign_ed25519(CA_SEED),
        ));
        p.drive();
        assert_eq!(p.client_error, None, "{alg}");
        assert_eq!(
            p.client.negotiated().unwrap().host_key,
            HostKeyAlgorithm::certificate(alg)
        );
        assert_eq!(p.client.host_key(), Some(&key));
    }
}

#[test]
fn without_certificate_algorithms_offered_a_certificate_only_server_is_refused() {
    let mut p = Pair::new(ClientConfig::default(), server_with(ed25519_host_cert()));
    p.drive();
    match p.client_error {
        Some(Error::NoCommonAlgorithm(e)) => {
            assert_eq!(e.what, "host key");
            assert_eq!(e.theirs, "ssh-ed25519-cert-v01@openssh.com");
        }
        other => panic!("expected no common host key algorithm, got {other:?}"),
    }
}

#[test]
fn a_certificate_for_another_key_type_than_negotiated_is_refused() {
    // The server offers ssh-ed25519-cert-v01 (its key is Ed25519) but sends an ECDSA
    // certificate.
    let cert = CertificateBuilder::host(&host_key_of(TestHostKey::EcdsaP256), &["h"])
        .sign_ed25519(CA_SEED);
    let mut p = Pair::new(cert_first(), server_with(cert));
    p.drive();
    assert_eq!(
        p.client_error,
        Some(Error::HostKey(KeyError::KeyTypeMismatch {
            algorithm: "ssh-ed25519-cert-v01@openssh.com",
            key_type: "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        }))
    );
    assert!(p.client.host_certificate().is_none());
}

#[test]
fn a_certificate_whose_authority_signature_is_bad_is_refused() {
    let mut cert = ed25519_host_cert();
    *cert.last_mut().unwrap() ^= 1;
    let mut p = Pair::new(cert_first(), server_with(cert));
    p.drive();
    match &p.client_error {
        Some(
            e @ Error::HostCertificate {
                algorithm: "ssh-ed25519-cert-v01@openssh.com",
                error: CertError::BadSignature { .. },
            },
        ) => {
            let text = e.to_string();
            assert!(
                text.contains("host certificate")
                    && text.contains("certificate authority's signature")
                    && text.contains("does not match the certificate's contents"),
                "{text}"
            );
        }
        other => panic!("expected a bad certificate signature, got {other:?}"),
    }
}

#[test]
fn a_plain_key_where_a_certificate_was_negotiated_is_refused() {
    let plain = host_key_of(TestHostKey::Ed25519);
    let mut p = Pair::new(cert_first(), server_with(plain));
    p.drive();
    match &p.client_error {
        Some(
            e @ Error::HostCertificate {
                error: CertError::Malformed(what),
                ..
            },
        ) => {
            assert!(what.contains("is not a certificate type"), "{what}");
            assert!(
                e.to_string()
                    .contains("\"ssh-ed25519\" is not a certificate type")
            );
        }
        other => panic!("expected a malformed certificate, got {other:?}"),
    }
}

#[test]
fn a_certificate_not_signed_by_the_certified_key_is_refused() {
    // The certificate certifies another Ed25519 key than the one signing the exchange hash.
    let other = crate::hostkey::PublicKey::ed25519(&[0x77; 32]);
    let cert = CertificateBuilder::host(other.blob(), &["h"]).sign_ed25519(CA_SEED);
    let mut p = Pair::new(cert_first(), server_with(cert));
    p.drive();
    assert_eq!(p.client_error, Some(Error::HostKey(KeyError::BadSignature)));
}

#[test]
fn a_different_certificate_in_a_rekey_is_refused() {
    let mut p = Pair::new(cert_first(), server_with(ed25519_host_cert()));
    p.drive();
    assert_eq!(p.client_error, None);
    // Same key, another certificate (other principals): OpenSSH compares the certificate.
    let renewed = CertificateBuilder::host(&host_key_of(TestHostKey::Ed25519), &["other"])
        .sign_ed25519(CA_SEED);
    p.server.replace_host_certificate(Some(renewed));
    p.client.rekey();
    p.drive();
    assert!(
        matches!(p.client_error, Some(Error::HostKeyChangedInRekey { .. })),
        "{:?}",
        p.client_error
    );
}

#[test]
fn a_user_certificate_reaches_the_application_to_judge() {
    // The transport checks the certificate's form and signature; its type is the
    // application's to judge (known_hosts refuses a user certificate as a host's).
    let mut b = CertificateBuilder::host(&host_key_of(TestHostKey::Ed25519), &["h"]);
    b.cert_type = crate::cert::CERT_TYPE_USER;
    let mut p = Pair::new(cert_first(), server_with(b.sign_ed25519(CA_SEED)));
    p.accept_host_key = false;
    p.drive();
    assert_eq!(
        p.client_error,
        Some(Error::HostKeyRejected("refused by test".into()))
    );
}
