//! Host certificates against the real sshd (`HostCertificate`, made by `ssh-keygen -s -h`):
//! a known_hosts with only a `@cert-authority` line trusts the bastion; a certificate that
//! names other hosts or has expired is refused, saying why, unless its key is also listed as
//! an ordinary key; a revoked authority is refused even then.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh_interop_tests::keys::fingerprint_of;
use ssh_interop_tests::process::wait_until;
use ssh_interop_tests::{
    CertAuthority, ClientKind, EchoServer, KeyKind, Sshd, TunnelBuilder, UserKey, echo_round_trip,
};

/// A lab sshd whose only host key, of `kind`, is certified by `ca` for `principals`, with
/// extra `ssh-keygen -s` arguments; it lets `key` in.
fn certified_sshd(
    key: &UserKey,
    kind: KeyKind,
    ca: &CertAuthority,
    principals: &str,
    extra: &[&str],
) -> Sshd {
    let mut sshd = Sshd::builder().host_keys(&[kind]).authorize(key).start();
    let host_key = sshd.host_key(kind).expect("sshd has its host key");
    let public = host_key.private_key_path().with_extension("pub");
    let mut args = vec!["-h"];
    args.extend_from_slice(extra);
    let cert = ca.certify(&public, "lab-bastion", principals, &args);
    sshd.restart_with_config_line(&format!("HostCertificate {}", cert.display()));
    sshd
}

fn write_known_hosts(sshd: &Sshd, name: &str, lines: &[String]) -> PathBuf {
    let path = sshd.dir().join(name);
    fs::write(&path, lines.join("\n") + "\n").expect("write known_hosts");
    path
}

fn forwarder(sshd: &Sshd, key: &UserKey, known_hosts: &Path, echo: &EchoServer) -> TunnelBuilder {
    TunnelBuilder::new(ClientKind::Forwarder, sshd, key)
        .known_hosts(known_hosts)
        .verbose()
        .forward_to(echo.port())
}

/// The host key algorithm sshd says it negotiated, from its DEBUG1 log.
fn sshd_negotiated(sshd: &Sshd, algorithm: &str) {
    let needle = format!("kex: host key algorithm: {algorithm}");
    wait_until(
        Duration::from_secs(10),
        "sshd logs the host key algorithm",
        || sshd.log().contains(&needle).then_some(()),
        || format!("no {needle:?} in the sshd log:\n{}", sshd.log()),
    );
}

#[test]
fn interop_host_cert_a_cert_authority_line_alone_trusts_an_ed25519_host_certificate() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let ca = CertAuthority::new();
    let sshd = certified_sshd(&key, KeyKind::Ed25519, &ca, "127.0.0.1,bastion.lab", &[]);
    let echo = EchoServer::start();
    for (name, hosts) in [
        ("exact", format!("[127.0.0.1]:{}", sshd.port())),
        ("wildcard", "*".to_owned()),
    ] {
        let known_hosts = write_known_hosts(
            &sshd,
            &format!("known_hosts_{name}"),
            &[format!("@cert-authority {hosts} {}", ca.known_hosts_key())],
        );
        let before = fs::read_to_string(&known_hosts).expect("read known_hosts");
        // accept-new would record a key it trusted as new: a certificate is never recorded.
        let tunnel = forwarder(&sshd, &key, &known_hosts, &echo)
            .option("StrictHostKeyChecking=accept-new")
            .start();
        assert_eq!(
            echo_round_trip(tunnel.local_port(), name.as_bytes())
                .unwrap_or_else(|e| panic!("{name}: {e}\n{}", tunnel.log())),
            name.as_bytes()
        );
        let log = tunnel.log();
        assert!(
            log.contains("host key ssh-ed25519-cert-v01@openssh.com,"),
            "{name}: the certificate algorithm was not negotiated:\n{log}"
        );
        assert!(
            log.contains("host certificate accepted") && log.contains("lab-bastion"),
            "{name}: the log tells the certificate was accepted:\n{log}"
        );
        sshd_negotiated(&sshd, "ssh-ed25519-cert-v01@openssh.com");
        assert_eq!(
            fs::read_to_string(&known_hosts).expect("read known_hosts"),
            before,
            "{name}: nothing is recorded for a host trusted through its certificate"
        );
    }
}

#[test]
fn interop_host_cert_an_rsa_host_certificate_negotiates_rsa_sha2_512_cert() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let ca = CertAuthority::new();
    let sshd = certified_sshd(&key, KeyKind::Rsa3072, &ca, "127.0.0.1", &[]);
    let echo = EchoServer::start();
    let known_hosts = write_known_hosts(
        &sshd,
        "known_hosts",
        &[format!(
            "@cert-authority 127.0.0.1 {}",
            ca.known_hosts_key()
        )],
    );
    let tunnel = forwarder(&sshd, &key, &known_hosts, &echo).start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"rsa").expect("echo"),
        b"rsa"
    );
    let log = tunnel.log();
    assert!(
        log.contains("host key rsa-sha2-512-cert-v01@openssh.com,"),
        "rsa-sha2-512-cert-v01 was not negotiated:\n{log}"
    );
    sshd_negotiated(&sshd, "rsa-sha2-512-cert-v01@openssh.com");
}

#[test]
fn interop_host_cert_for_another_principal_is_refused_unless_the_plain_key_is_known() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let ca = CertAuthority::new();
    let sshd = certified_sshd(&key, KeyKind::Ed25519, &ca, "other.example", &[]);
    let echo = EchoServer::start();
    let ca_line = format!("@cert-authority * {}", ca.known_hosts_key());
    let known_hosts = write_known_hosts(&sshd, "known_hosts_ca", std::slice::from_ref(&ca_line));
    let mut tunnel = forwarder(&sshd, &key, &known_hosts, &echo).spawn();
    let log = tunnel.expect_failure();
    assert!(
        log.contains("names principals [other.example], not `127.0.0.1`"),
        "the refusal says why the certificate was not accepted:\n{log}"
    );
    assert!(
        log.contains("is not known"),
        "and what became of its plain key:\n{log}"
    );
    assert_eq!(echo.connections(), 0);

    // Its plain key listed as an ordinary key: trusted through ssh's fallback.
    let host_key = sshd.host_key(KeyKind::Ed25519).expect("host key");
    let known_hosts = write_known_hosts(
        &sshd,
        "known_hosts_both",
        &[ca_line, host_key.known_hosts_line("127.0.0.1", sshd.port())],
    );
    let tunnel = forwarder(&sshd, &key, &known_hosts, &echo).start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"fallback").expect("echo"),
        b"fallback"
    );
    let log = tunnel.log();
    assert!(
        log.contains("host certificate not accepted") && log.contains("other.example"),
        "the log says why the certificate was not used:\n{log}"
    );
}

#[test]
fn interop_host_cert_expired_is_refused_with_expired() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let ca = CertAuthority::new();
    let sshd = certified_sshd(
        &key,
        KeyKind::Ed25519,
        &ca,
        "127.0.0.1",
        &["-V", "20200101:20200201"],
    );
    let echo = EchoServer::start();
    let known_hosts = write_known_hosts(
        &sshd,
        "known_hosts",
        &[format!("@cert-authority * {}", ca.known_hosts_key())],
    );
    let mut tunnel = forwarder(&sshd, &key, &known_hosts, &echo).spawn();
    let log = tunnel.expect_failure();
    assert!(
        log.contains("the host certificate expired on 2020-02-01"),
        "{log}"
    );
    assert!(log.contains("renew the host certificate"), "{log}");
}

#[test]
fn interop_host_cert_a_revoked_authority_is_refused_even_with_the_plain_key_listed() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let ca = CertAuthority::new();
    let sshd = certified_sshd(&key, KeyKind::Ed25519, &ca, "127.0.0.1", &[]);
    let echo = EchoServer::start();
    let host_key = sshd.host_key(KeyKind::Ed25519).expect("host key");
    let known_hosts = write_known_hosts(
        &sshd,
        "known_hosts",
        &[
            format!("@cert-authority * {}", ca.known_hosts_key()),
            host_key.known_hosts_line("127.0.0.1", sshd.port()),
            format!("@revoked * {}", ca.known_hosts_key()),
        ],
    );
    let mut tunnel = forwarder(&sshd, &key, &known_hosts, &echo).spawn();
    let log = tunnel.expect_failure();
    let ca_fingerprint = fingerprint_of(&ca.public_key_path());
    assert!(
        log.contains(&format!(
            "the certificate authority's key {ca_fingerprint} is marked @revoked on line 3"
        )),
        "{log}"
    );
    assert!(log.contains("not checked as a plain key"), "{log}");
    assert_eq!(echo.connections(), 0);
}

#[test]
fn interop_host_cert_signed_by_a_ca_no_line_lists_is_refused_naming_the_ca() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let ca = CertAuthority::new();
    let other = CertAuthority::new();
    let sshd = certified_sshd(&key, KeyKind::Ed25519, &ca, "127.0.0.1", &[]);
    let echo = EchoServer::start();
    let known_hosts = write_known_hosts(
        &sshd,
        "known_hosts",
        &[format!("@cert-authority * {}", other.known_hosts_key())],
    );
    let mut tunnel = forwarder(&sshd, &key, &known_hosts, &echo).spawn();
    let log = tunnel.expect_failure();
    let ca_fingerprint = fingerprint_of(&ca.public_key_path());
    assert!(
        log.contains(&format!(
            "signed by CA {ca_fingerprint}, which no @cert-authority line for [127.0.0.1]:{} lists",
            sshd.port()
        )),
        "{log}"
    );
    assert!(
        log.contains(&fingerprint_of(&other.public_key_path())),
        "the refusal names the CA that is listed:\n{log}"
    );
    assert_eq!(echo.connections(), 0);
}
