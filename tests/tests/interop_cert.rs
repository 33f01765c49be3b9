//! OpenSSH user certificates against the real sshd: a certificate authority made and used by
//! the real `ssh-keygen -s`, sshd trusting it with `TrustedUserCAKeys` and authorizing no key
//! at all; the forwarder finds `-cert.pub` beside the key, or takes `CertificateFile`, and
//! never offers one whose authority's signature does not verify.

use std::path::PathBuf;
use std::time::Duration;

use ssh_interop_tests::{
    CertAuthority, ClientKind, EchoServer, KeyKind, Sshd, TunnelBuilder, UserKey, echo_round_trip,
};

fn forwarder(sshd: &Sshd, key: &UserKey) -> TunnelBuilder {
    TunnelBuilder::new(ClientKind::Forwarder, sshd, key)
}

fn accepted_line(sshd: &Sshd, offset: usize) -> String {
    let log = sshd.wait_for_log_after(offset, "Accepted publickey for", Duration::from_secs(10));
    log.lines()
        .find(|l| l.contains("Accepted publickey for"))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn interop_cert_beside_the_key_logs_in_with_no_authorized_key() {
    let ca = CertAuthority::new();
    let sshd = ca.sshd();
    let echo = EchoServer::start();
    for kind in [KeyKind::Ed25519, KeyKind::Rsa2048, KeyKind::EcdsaP256] {
        let key = UserKey::generate(kind);
        let id = format!("lab-{kind}");
        ca.certify(key.public_key_path(), &id, sshd.user(), &[]);
        let offset = sshd.log().len();
        let tunnel = forwarder(&sshd, &key).forward_to(echo.port()).start();
        assert_eq!(
            echo_round_trip(tunnel.local_port(), id.as_bytes())
                .unwrap_or_else(|e| panic!("{kind}: {e}\n{}", tunnel.log())),
            id.as_bytes()
        );
        let accepted = accepted_line(&sshd, offset);
        // sshd names the certificate: "... ED25519-CERT SHA256:... ID lab-ed25519 (serial 0)
        // CA ED25519 SHA256:...".
        assert!(
            accepted.contains("-CERT ") && accepted.contains(&format!("ID {id} ")),
            "{kind}: sshd did not accept the certificate: {accepted}"
        );
        assert!(accepted.contains(key.fingerprint()), "{kind}: {accepted}");
        let log = sshd.log();
        if kind == KeyKind::Rsa2048 {
            assert!(
                log.get(offset..)
                    .unwrap_or_default()
                    .contains("rsa-sha2-512-cert-v01@openssh.com"),
                "the RSA certificate should be offered with SHA-512:\n{}",
                log.get(offset..).unwrap_or_default()
            );
        }
    }
}

#[test]
fn interop_cert_from_certificate_file() {
    let ca = CertAuthority::new();
    let sshd = ca.sshd();
    let echo = EchoServer::start();
    let key = UserKey::generate(KeyKind::Ed25519);
    let beside = ca.certify(
        key.public_key_path(),
        "lab-certificate-file",
        sshd.user(),
        &[],
    );
    // Move it away from the key, so only CertificateFile can find it.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let moved: PathBuf = elsewhere.path().join("issued.pub");
    std::fs::rename(&beside, &moved).expect("move the certificate");
    let offset = sshd.log().len();
    let tunnel = forwarder(&sshd, &key)
        .option(&format!("CertificateFile={}", moved.display()))
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"cert file").expect("echo"),
        b"cert file"
    );
    let accepted = accepted_line(&sshd, offset);
    assert!(
        accepted.contains("ID lab-certificate-file "),
        "sshd did not accept the certificate: {accepted}"
    );
}

#[test]
fn interop_cert_expired_is_skipped_with_a_note_and_the_login_fails() {
    let ca = CertAuthority::new();
    let sshd = ca.sshd();
    let key = UserKey::generate(KeyKind::Ed25519);
    ca.certify(
        key.public_key_path(),
        "lab-expired",
        sshd.user(),
        &["-V", "20200101:20210101"],
    );
    let offset = sshd.log().len();
    let mut tunnel = forwarder(&sshd, &key).forward_to(1).spawn();
    let log = tunnel.expect_failure();
    assert!(
        log.contains("certificate ID \"lab-expired\"")
            && log.contains("skipped: the certificate expired at 2021-01-01T"),
        "the error should name the expired certificate:\n{log}"
    );
    // The plain key was still offered (and refused: nothing authorizes it).
    assert!(log.contains(key.fingerprint()), "{log}");
    let sshd_log = sshd.log();
    let since = sshd_log.get(offset..).unwrap_or_default();
    assert!(
        !since.contains("ID lab-expired"),
        "the expired certificate reached sshd:\n{since}"
    );
}

#[test]
fn interop_cert_without_port_forwarding_is_warned_about() {
    let ca = CertAuthority::new();
    let sshd = ca.sshd();
    let key = UserKey::generate(KeyKind::Ed25519);
    ca.certify(
        key.public_key_path(),
        "lab-no-forwarding",
        sshd.user(),
        &["-O", "no-port-forwarding"],
    );
    let echo = EchoServer::start();
    let tunnel = forwarder(&sshd, &key)
        .option("ExitOnForwardFailure=no")
        .forward_to(echo.port())
        .start();
    let log = tunnel.wait_for_log("permit-port-forwarding", Duration::from_secs(10));
    assert!(
        log.contains("will refuse every forward made with it"),
        "{log}"
    );
    // And indeed sshd refuses the forward.
    let refused = echo_round_trip(tunnel.local_port(), b"x");
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(echo.connections(), 0);
}

// A certificate whose authority's signature does not verify (damaged in transit, or edited)
// would only be refused by sshd, costing one of its MaxAuthTries and saying nothing of why:
// it is never offered, and the warning and the final error name its file and the reason.
#[test]
fn interop_cert_with_a_bad_authority_signature_is_not_offered_and_is_named() {
    let ca = CertAuthority::new();
    let sshd = ca.sshd();
    let key = UserKey::generate(KeyKind::Ed25519);
    let cert = ca.certify(key.public_key_path(), "lab-damaged", sshd.user(), &[]);
    CertAuthority::damage_signature(&cert);
    let offset = sshd.log().len();
    let mut tunnel = forwarder(&sshd, &key).forward_to(1).spawn();
    let log = tunnel.expect_failure();
    let reason = "certificate authority's signature (by ssh-ed25519 key";
    assert!(
        log.contains(&format!(
            "warning: ignoring certificate {}: its {reason}",
            cert.display()
        )),
        "the warning should name the file and the reason:\n{log}"
    );
    // The refusal lists it among the files that could not be used.
    let refusal = log
        .lines()
        .find(|l| l.contains("authentication as"))
        .unwrap_or_default();
    assert!(
        refusal.contains(&format!("certificate {}: its {reason}", cert.display())),
        "{refusal}"
    );
    // The plain key was offered (and refused: nothing authorizes it); the certificate never.
    sshd.wait_for_log_after(offset, "Received disconnect", Duration::from_secs(10));
    let sshd_log = sshd.log();
    let since = sshd_log.get(offset..).unwrap_or_default();
    assert!(since.contains(key.fingerprint()), "{since}");
    assert!(
        !since.contains("ID lab-damaged") && !since.contains("-CERT"),
        "the damaged certificate reached sshd:\n{since}"
    );
}
