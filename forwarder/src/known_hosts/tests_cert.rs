//! Host certificates against `@cert-authority` and `@revoked` lines, with certificates made
//! here by signing with test authorities.

use std::path::{Path, PathBuf};

use ssh_transport::cert::{CERT_TYPE_USER, Certificate};
use ssh_transport::hostkey::PublicKey;
use ssh_transport::server::{CertificateBuilder, ed25519_ca_key};

use super::tests::ed;
use super::*;
use crate::cli::StrictHostKeyChecking::{self, AcceptNew, No, Yes};

const CA: [u8; 32] = [0xca; 32];
const OTHER_CA: [u8; 32] = [0xcb; 32];
/// 2025-01-01T00:00:00Z.
const NOW: u64 = 1_735_689_600;

fn ca_line(hosts: &str, ca: &PublicKey) -> String {
    format!("@cert-authority {hosts} {}", ca.to_openssh_line())
}

fn kh(text: &str) -> KnownHosts {
    let (known, warnings) = KnownHosts::parse(text, Path::new("/kh"));
    assert!(warnings.is_empty(), "{warnings:?}");
    known
}

/// A host certificate for `ed(1)` naming `principals`, valid an hour either side of NOW.
fn builder(principals: &[&str]) -> CertificateBuilder {
    let mut b = CertificateBuilder::host(ed(1).blob(), principals);
    b.valid_after = NOW - 3600;
    b.valid_before = NOW + 3600;
    b.key_id = "bastion-2025".into();
    b.serial = 42;
    b
}

fn cert(b: &CertificateBuilder) -> Certificate {
    Certificate::decode(&b.sign_ed25519(CA)).unwrap_or_else(|e| panic!("{e}"))
}

fn check(k: &KnownHosts, host: &str, port: u16, c: &Certificate) -> HostKeyStatus {
    k.check_certificate(host, port, &host.to_ascii_lowercase(), c, NOW)
}

fn accepted_at(line: usize) -> HostKeyStatus {
    HostKeyStatus::CertificateAccepted {
        file: PathBuf::from("/kh"),
        line,
        ca_fingerprint: ed25519_ca_key(CA).fingerprint(),
        key_id: "bastion-2025".into(),
        serial: 42,
        valid_before: NOW + 3600,
    }
}

/// The refusal and the plain key's lookup of a certificate that was not accepted.
fn refused(status: HostKeyStatus) -> (CertificateRefusal, HostKeyStatus) {
    match status {
        HostKeyStatus::CertificateRefused { why, plain } => (why, *plain),
        other => panic!("expected a refused certificate, got {other:?}"),
    }
}

fn unknown() -> HostKeyStatus {
    HostKeyStatus::Unknown {
        other_types: Vec::new(),
    }
}

fn decide_all(status: &HostKeyStatus, host: &str, port: u16) -> Vec<Decision> {
    [Yes, AcceptNew, No]
        .into_iter()
        .map(|p: StrictHostKeyChecking| {
            decide(
                status.clone(),
                p,
                host,
                port,
                &ed(1),
                Some(Path::new("/home/u/.ssh/known_hosts")),
            )
        })
        .collect()
}

fn refusal_text(d: &Decision) -> String {
    match d {
        Decision::Refused(e) => e.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_certificate_from_a_listed_authority_is_trusted_and_never_recorded() {
    let k = kh(&ca_line("db.example.com", &ed25519_ca_key(CA)));
    let c = cert(&builder(&["db.example.com"]));
    let status = check(&k, "db.example.com", 22, &c);
    assert_eq!(status, accepted_at(1));
    // Under every policy, with a file to record in: trusted, nothing recorded.
    for d in decide_all(&status, "db.example.com", 22) {
        assert_eq!(d, Decision::Trusted);
    }
    assert!(k.has_cert_authority("db.example.com", 22));
    assert!(!k.has_cert_authority("other.example.com", 22));
}

#[test]
fn a_certificate_from_an_authority_no_line_lists_falls_back_on_its_key() {
    let k = kh(&ca_line("db.example.com", &ed25519_ca_key(OTHER_CA)));
    let c = cert(&builder(&["db.example.com"]));
    let (why, plain) = refused(check(&k, "db.example.com", 22, &c));
    match &why {
        CertificateRefusal::UnknownAuthority {
            ca_fingerprint,
            lookup,
            other_authorities,
        } => {
            assert_eq!(ca_fingerprint, &ed25519_ca_key(CA).fingerprint());
            assert_eq!(lookup, "db.example.com");
            assert_eq!(other_authorities.len(), 1);
            assert_eq!(other_authorities[0].line, 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(plain, unknown());
    let status = check(&k, "db.example.com", 22, &c);
    let [yes, accept_new, no] = decide_all(&status, "db.example.com", 22)
        .try_into()
        .unwrap();
    let text = refusal_text(&yes);
    assert!(
        text.starts_with(&format!(
            "host certificate for db.example.com not accepted: the host certificate is \
             signed by CA {}, which no @cert-authority line for db.example.com lists (the \
             host's CAs are {} (line 1 of /kh))",
            ed25519_ca_key(CA).fingerprint(),
            ed25519_ca_key(OTHER_CA).fingerprint()
        )),
        "{text}"
    );
    assert!(
        text.contains("add a @cert-authority line")
            && text.contains(
                "its key was then checked as a plain host key: host key for \
                 db.example.com is not known: ED25519 key"
            ),
        "{text}"
    );
    // accept-new and no record the plain key, as ssh does after its fallback.
    let record = Decision::TrustAndRecord {
        file: "/home/u/.ssh/known_hosts".into(),
    };
    assert_eq!(accept_new, record);
    assert_eq!(no, record);
}

#[test]
fn no_cert_authority_line_at_all_falls_back_to_unknown() {
    let k = kh(&super::tests::line("other", &ed(9)));
    let c = cert(&builder(&["h"]));
    let (why, plain) = refused(check(&k, "h", 22, &c));
    assert!(matches!(
        why,
        CertificateRefusal::UnknownAuthority { ref other_authorities, .. }
            if other_authorities.is_empty()
    ));
    assert_eq!(plain, unknown());
    assert!(!k.has_cert_authority("h", 22));
}

#[test]
fn a_known_plain_key_still_works_when_the_certificate_is_not_accepted() {
    // The certificate names another host, but its key is listed as an ordinary key.
    let text = [
        ca_line("*", &ed25519_ca_key(CA)),
        super::tests::line("db.example.com", &ed(1)),
    ]
    .join("\n");
    let k = kh(&text);
    let c = cert(&builder(&["other.example"]));
    let status = check(&k, "db.example.com", 22, &c);
    let (why, plain) = refused(status.clone());
    assert!(matches!(why, CertificateRefusal::PrincipalMismatch { .. }));
    assert_eq!(
        plain,
        HostKeyStatus::Known {
            file: "/kh".into(),
            line: 2
        }
    );
    for d in decide_all(&status, "db.example.com", 22) {
        assert_eq!(d, Decision::Trusted);
    }
    // A different plain key listed: the fallback reports the change.
    let text = [
        ca_line("*", &ed25519_ca_key(CA)),
        super::tests::line("db.example.com", &ed(2)),
    ]
    .join("\n");
    let status = check(&kh(&text), "db.example.com", 22, &c);
    for d in decide_all(&status, "db.example.com", 22) {
        let text = refusal_text(&d);
        assert!(
            text.contains("names principals [other.example], not `db.example.com`")
                && text.contains("has CHANGED"),
            "{text}"
        );
    }
}

#[test]
fn wildcard_host_patterns_and_ports_select_the_authority() {
    let text = [
        ca_line("*.corp,!evil.corp", &ed25519_ca_key(CA)), // 1
        ca_line("[10.0.0.5]:2222", &ed25519_ca_key(CA)),   // 2
        ca_line("plain", &ed25519_ca_key(CA)),             // 3
    ]
    .join("\n");
    let k = kh(&text);
    let c = cert(&builder(&["*"]));
    assert_eq!(check(&k, "db.corp", 22, &c), accepted_at(1));
    assert_eq!(check(&k, "DB.Corp", 22, &c), accepted_at(1));
    assert!(matches!(
        refused(check(&k, "evil.corp", 22, &c)).0,
        CertificateRefusal::UnknownAuthority { .. }
    ));
    assert!(matches!(
        refused(check(&k, "db.other", 22, &c)).0,
        CertificateRefusal::UnknownAuthority { .. }
    ));
    // [host]:port lines, and the bare name when nothing names [host]:port, as ssh's look
    // "without port identifier".
    assert_eq!(check(&k, "10.0.0.5", 2222, &c), accepted_at(2));
    assert!(matches!(
        refused(check(&k, "10.0.0.5", 22, &c)).0,
        CertificateRefusal::UnknownAuthority { .. }
    ));
    assert_eq!(check(&k, "plain", 2200, &c), accepted_at(3));
    assert!(k.has_cert_authority("plain", 2200));
}

#[test]
fn the_host_name_must_be_among_the_principals() {
    let k = kh(&ca_line("*", &ed25519_ca_key(CA)));
    let c = cert(&builder(&["a.example.com", "b.example.com"]));
    assert!(matches!(
        check(&k, "a.example.com", 22, &c),
        HostKeyStatus::CertificateAccepted { .. }
    ));
    let (why, _) = refused(check(&k, "db.example.com", 22, &c));
    assert_eq!(
        why,
        CertificateRefusal::PrincipalMismatch {
            principals: vec!["a.example.com".into(), "b.example.com".into()],
            name: "db.example.com".into(),
        }
    );
    assert_eq!(
        why.to_string(),
        "the host certificate names principals [a.example.com, b.example.com], not \
         `db.example.com`"
    );
    // The principal is the name, not the [host]:port lookup name; HostKeyAlias's is given.
    let c = cert(&builder(&["10.0.0.5"]));
    assert!(matches!(
        check(&k, "10.0.0.5", 2222, &c),
        HostKeyStatus::CertificateAccepted { .. }
    ));
    assert!(matches!(
        k.check_certificate("10.0.0.5", 22, "alias", &c, NOW),
        HostKeyStatus::CertificateRefused {
            why: CertificateRefusal::PrincipalMismatch { .. },
            ..
        }
    ));
}

#[test]
fn principals_may_be_wildcard_patterns() {
    let k = kh(&ca_line("*", &ed25519_ca_key(CA)));
    let c = cert(&builder(&["*.example.com", "db?.internal"]));
    for host in ["db.example.com", "x.y.example.com", "db1.internal"] {
        assert!(
            matches!(
                check(&k, host, 22, &c),
                HostKeyStatus::CertificateAccepted { .. }
            ),
            "{host}"
        );
    }
    for host in ["example.com", "db12.internal", "db.internal"] {
        assert!(
            matches!(
                refused(check(&k, host, 22, &c)).0,
                CertificateRefusal::PrincipalMismatch { .. }
            ),
            "{host}"
        );
    }
}

#[test]
fn a_certificate_without_principals_is_not_accepted() {
    let k = kh(&ca_line("*", &ed25519_ca_key(CA)));
    let (why, _) = refused(check(&k, "h", 22, &cert(&builder(&[]))));
    assert_eq!(why, CertificateRefusal::NoPrincipals);
    assert!(why.to_string().contains("lacks a principal list"));
}

#[test]
fn expired_and_not_yet_valid_certificates_are_not_accepted() {
    let k = kh(&ca_line("*", &ed25519_ca_key(CA)));
    let mut b = builder(&["h"]);
    b.valid_before = NOW;
    let (why, _) = refused(check(&k, "h", 22, &cert(&b)));
    assert_eq!(why, CertificateRefusal::Expired { valid_before: NOW });
    assert_eq!(
        why.to_string(),
        "the host certificate expired on 2025-01-01T00:00:00Z"
    );
    // valid_before is exclusive, valid_after inclusive.
    b.valid_before = NOW + 1;
    assert!(matches!(
        check(&k, "h", 22, &cert(&b)),
        HostKeyStatus::CertificateAccepted { .. }
    ));
    let mut b = builder(&["h"]);
    b.valid_after = NOW + 1;
    let (why, _) = refused(check(&k, "h", 22, &cert(&b)));
    assert_eq!(
        why,
        CertificateRefusal::NotYetValid {
            valid_after: NOW + 1
        }
    );
    assert!(why.to_string().contains("not valid yet"));
    b.valid_after = NOW;
    assert!(matches!(
        check(&k, "h", 22, &cert(&b)),
        HostKeyStatus::CertificateAccepted { .. }
    ));
}

#[test]
fn a_certificate_with_critical_options_is_not_accepted() {
    let k = kh(&ca_line("*", &ed25519_ca_key(CA)));
    let mut b = builder(&["h"]);
    b.critical_options = vec![("force-command".into(), b"\0\0\0\x04true".to_vec())];
    let (why, _) = refused(check(&k, "h", 22, &cert(&b)));
    assert_eq!(
        why,
        CertificateRefusal::CriticalOptions {
            names: vec!["force-command".into()]
        }
    );
    // Extensions are no reason to refuse.
    let mut b = builder(&["h"]);
    b.extensions = vec![("permit-pty".into(), Vec::new())];
    assert!(matches!(
        check(&k, "h", 22, &cert(&b)),
        HostKeyStatus::CertificateAccepted { .. }
    ));
}

#[test]
fn a_user_certificate_presented_as_a_host_certificate_is_not_accepted() {
    let k = kh(&ca_line("*", &ed25519_ca_key(CA)));
    let mut b = builder(&["h"]);
    b.cert_type = CERT_TYPE_USER;
    let (why, _) = refused(check(&k, "h", 22, &cert(&b)));
    assert_eq!(
        why,
        CertificateRefusal::NotAHostCertificate { cert_type: 1 }
    );
}

#[test]
fn a_revoked_authority_is_refused_without_falling_back_on_a_known_key() {
    let text = [
        ca_line("*", &ed25519_ca_key(CA)),                              // 1
        super::tests::line("h", &ed(1)),                                // 2
        format!("@revoked * {}", ed25519_ca_key(CA).to_openssh_line()), // 3
    ]
    .join("\n");
    let k = kh(&text);
    let c = cert(&builder(&["h"]));
    let status = check(&k, "h", 22, &c);
    assert_eq!(
        status,
        HostKeyStatus::CertificateRevoked {
            file: "/kh".into(),
            line: 3,
            authority: true,
            fingerprint: ed25519_ca_key(CA).fingerprint(),
        }
    );
    for d in decide_all(&status, "h", 22) {
        let text = refusal_text(&d);
        assert!(
            text.starts_with("host certificate for h is revoked: the certificate authority's key")
                && text.contains("line 3 of /kh")
                && text.contains("not checked as a plain key"),
            "{text}"
        );
    }
    // The plain key alone is still known: only the certificate path is revoked.
    assert!(matches!(
        k.check("h", 22, &ed(1)),
        HostKeyStatus::Known { .. }
    ));
}

#[test]
fn a_revoked_certified_key_is_refused() {
    let text = [
        ca_line("*", &ed25519_ca_key(CA)),
        format!("@revoked h {}", ed(1).to_openssh_line()),
    ]
    .join("\n");
    let k = kh(&text);
    let status = check(&k, "h", 22, &cert(&builder(&["h"])));
    assert_eq!(
        status,
        HostKeyStatus::CertificateRevoked {
            file: "/kh".into(),
            line: 2,
            authority: false,
            fingerprint: ed(1).fingerprint(),
        }
    );
    for d in decide_all(&status, "h", 22) {
        assert!(refusal_text(&d).contains("the certified key"));
    }
    // The marker applies to the hosts it names.
    assert!(matches!(
        check(&k, "g", 22, &cert(&builder(&["g"]))),
        HostKeyStatus::CertificateAccepted { .. }
    ));
}

/// The blob of the first line of an OpenSSH public key or certificate file.
fn blob_of_file(path: &Path) -> Vec<u8> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    base64::engine::general_purpose::STANDARD
        .decode(text.split(' ').nth(1).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs ssh-keygen with `args` in `dir`, which must succeed.
fn keygen(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("ssh-keygen")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen (OpenSSH's is needed): {e}"));
    assert!(out.status.success(), "ssh-keygen {args:?}: {out:?}");
}

/// Host certificates made by ssh-keygen itself: an RSA authority signing with SHA-2 is
/// accepted, with SHA-1 (`-t ssh-rsa`) refused as OpenSSH's default CASignatureAlgorithms
/// refuses it; its principals and validity read as ssh-keygen wrote them.
#[test]
fn ssh_keygen_host_certificates_and_an_rsa_authority_signing_with_sha1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d, &["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", "ca"]);
    keygen(d, &["-q", "-t", "ed25519", "-N", "", "-f", "host"]);
    let ca = PublicKey::from_blob(&blob_of_file(&d.join("ca.pub"))).unwrap();
    let k = kh(&ca_line("*", &ca));
    for (alg, accepted) in [
        ("rsa-sha2-512", true),
        ("rsa-sha2-256", true),
        ("ssh-rsa", false),
    ] {
        keygen(
            d,
            &[
                "-q", "-s", "ca", "-t", alg, "-h", "-I", "bastion", "-n", "h,*.corp", "host.pub",
            ],
        );
        let c = Certificate::decode(&blob_of_file(&d.join("host-cert.pub"))).unwrap();
        assert_eq!(c.principals(), ["h", "*.corp"]);
        assert_eq!(c.key_id(), "bastion");
        let status = k.check_certificate("db.corp", 22, "db.corp", &c, NOW);
        if accepted {
            assert!(
                matches!(status, HostKeyStatus::CertificateAccepted { .. }),
                "{alg}: {status:?}"
            );
        } else {
            assert_eq!(
                refused(status).0,
                CertificateRefusal::CaSignatureAlgorithm {
                    algorithm: Some("ssh-rsa")
                }
            );
        }
    }
    // An expired one, as `-V` writes it.
    keygen(
        d,
        &[
            "-q",
            "-s",
            "ca",
            "-h",
            "-I",
            "old",
            "-n",
            "h",
            "-V",
            "20200101:20200102",
            "host.pub",
        ],
    );
    let c = Certificate::decode(&blob_of_file(&d.join("host-cert.pub"))).unwrap();
    assert!(matches!(
        refused(k.check_certificate("h", 22, "h", &c, NOW)).0,
        CertificateRefusal::Expired { .. }
    ));
}

#[test]
fn certificate_refusals_carry_the_plain_lookup_through_accepted_keys() {
    let k = kh(&ca_line("*", &ed25519_ca_key(OTHER_CA)));
    let status = check(&k, "h", 22, &cert(&builder(&["h"])));
    let mapped = status.map_plain(|_| HostKeyStatus::AcceptedEarlier);
    assert_eq!(mapped.plain(), &HostKeyStatus::AcceptedEarlier);
    assert!(matches!(mapped, HostKeyStatus::CertificateRefused { .. }));
    assert_eq!(decide_all(&mapped, "h", 22)[0], Decision::Trusted);
}

/// An authority's key whose signatures this program cannot check (DSA here): its
/// certificate's fields are unproven, so even a `@cert-authority` line listing that key
/// does not make it trusted; its key is checked as a plain key.
#[test]
fn a_certificate_whose_authority_signature_cannot_be_checked_is_not_accepted() {
    use base64::Engine as _;
    use ssh_transport::wire::Writer as _;
    let mut dsa = Vec::new();
    dsa.put_str("ssh-dss");
    for _ in 0..4 {
        dsa.put_mpint(&[0x5a; 20]);
    }
    let blob = builder(&["h"]).sign_with(&dsa, |_| {
        let mut sig = Vec::new();
        sig.put_str("ssh-dss");
        sig.put_string(&[0; 40]);
        sig
    });
    let c = Certificate::decode(&blob).unwrap();
    assert_eq!(c.ca_signature_algorithm(), None);
    let k = kh(&format!(
        "@cert-authority * ssh-dss {}",
        base64::engine::general_purpose::STANDARD.encode(&dsa)
    ));
    let (why, plain) = refused(check(&k, "h", 22, &c));
    assert_eq!(
        why,
        CertificateRefusal::CaSignatureAlgorithm { algorithm: None }
    );
    assert_eq!(plain, unknown());
}
