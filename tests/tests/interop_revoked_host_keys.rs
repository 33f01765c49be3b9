//! `RevokedHostKeys` against the real sshd, with revocation lists made by the real
//! `ssh-keygen -k`: a revoked host key is refused before known_hosts is consulted, under
//! StrictHostKeyChecking=no too, and `forwarder check` says which file revokes it; a list
//! that revokes another key lets the tunnel up; a host certificate whose serial is revoked
//! is refused though its CA is trusted; a missing file refuses the connection, naming it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use ssh_interop_tests::check::check_stage;
use ssh_interop_tests::keys::ssh_keygen;
use ssh_interop_tests::process::run_ok;
use ssh_interop_tests::{
    CertAuthority, ClientKind, EchoServer, KeyKind, Sshd, TunnelBuilder, UserKey, echo_round_trip,
};

/// How long ssh-keygen may take to write a KRL.
const KEYGEN_LIMIT: Duration = Duration::from_secs(30);

/// `ssh-keygen -k -f <dir>/<name> [-s ca.pub] inputs...`: the KRL's path.
fn krl(dir: &Path, name: &str, ca: Option<&Path>, inputs: &[&Path]) -> PathBuf {
    let out = dir.join(name);
    let mut cmd = Command::new(ssh_keygen());
    cmd.arg("-k").arg("-f").arg(&out);
    if let Some(ca) = ca {
        cmd.arg("-s").arg(ca);
    }
    cmd.args(inputs);
    run_ok(&mut cmd, KEYGEN_LIMIT, "ssh-keygen -k");
    out
}

fn host_public_key(sshd: &Sshd) -> PathBuf {
    sshd.host_key(KeyKind::Ed25519)
        .expect("sshd has an ed25519 host key")
        .private_key_path()
        .with_extension("pub")
}

/// A user key, an sshd with one Ed25519 host key that lets it in, an echo server, and a
/// known_hosts file that lists the host key.
fn lab() -> (UserKey, Sshd, EchoServer, PathBuf) {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .host_keys(&[KeyKind::Ed25519])
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    let known_hosts = known_hosts_with_host_key(&sshd);
    (key, sshd, echo, known_hosts)
}

fn known_hosts_with_host_key(sshd: &Sshd) -> PathBuf {
    let line = sshd
        .host_key(KeyKind::Ed25519)
        .expect("host key")
        .known_hosts_line("127.0.0.1", sshd.port());
    let path = sshd.dir().join("known_hosts_listed");
    fs::write(&path, line + "\n").expect("write known_hosts");
    path
}

fn forwarder(sshd: &Sshd, key: &UserKey, known_hosts: &Path, echo: &EchoServer) -> TunnelBuilder {
    TunnelBuilder::new(ClientKind::Forwarder, sshd, key)
        .known_hosts(known_hosts)
        .verbose()
        .forward_to(echo.port())
}

/// `forwarder check --json` of the tunnel, with `revoked` as RevokedHostKeys: stage 5's
/// report.
fn check_stage5(sshd: &Sshd, key: &UserKey, known_hosts: &Path, revoked: &Path) -> Value {
    let options = [
        "StrictHostKeyChecking=no".to_owned(),
        format!("RevokedHostKeys={}", revoked.display()),
    ];
    check_stage(sshd, key, known_hosts, &options, 5)
}

#[test]
fn interop_revoked_host_keys_a_krl_listing_the_host_key_refuses_it_under_every_policy() {
    let (key, sshd, echo, known_hosts) = lab();
    let revoked = krl(sshd.dir(), "host.krl", None, &[&host_public_key(&sshd)]);
    let fingerprint = sshd
        .host_key(KeyKind::Ed25519)
        .expect("host key")
        .fingerprint();
    for policy in ["yes", "no"] {
        let mut tunnel = forwarder(&sshd, &key, &known_hosts, &echo)
            .option(&format!("StrictHostKeyChecking={policy}"))
            .option(&format!("RevokedHostKeys={}", revoked.display()))
            .spawn();
        let log = tunnel.expect_failure();
        assert!(
            log.contains(&format!(
                "host key for [127.0.0.1]:{} (ED25519 {fingerprint}) is revoked by {} \
                 (RevokedHostKeys): the key is listed",
                sshd.port(),
                revoked.display()
            )),
            "{policy}: {log}"
        );
    }
    assert_eq!(echo.connections(), 0);

    let report = check_stage5(&sshd, &key, &known_hosts, &revoked);
    assert_eq!(report["ok"], false, "{report:#}");
    let detail = report["detail"].as_str().unwrap_or_default();
    let fix = report["fix"].as_str().unwrap_or_default();
    assert!(detail.contains("is revoked by"), "{report:#}");
    assert!(
        fix.contains(&revoked.display().to_string()) && fix.contains("new host key"),
        "{report:#}"
    );
}

#[test]
fn interop_revoked_host_keys_a_krl_revoking_another_key_lets_the_tunnel_up() {
    let (key, sshd, echo, known_hosts) = lab();
    // Another key, and a plain list of it (not a KRL): both leave this host alone.
    let other = UserKey::generate(KeyKind::Ed25519);
    let revoked = krl(sshd.dir(), "other.krl", None, &[other.public_key_path()]);
    let list = sshd.dir().join("revoked_keys");
    fs::write(&list, format!("{}\n", other.public_key_line())).expect("write the list");
    let tunnel = forwarder(&sshd, &key, &known_hosts, &echo)
        .option(&format!(
            "RevokedHostKeys={} {}",
            revoked.display(),
            list.display()
        ))
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"not revoked")
            .unwrap_or_else(|e| panic!("{e}\n{}", tunnel.log())),
        b"not revoked"
    );
}

#[test]
fn interop_revoked_host_keys_a_host_certificate_with_a_revoked_serial_is_refused() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let ca = CertAuthority::new();
    let mut sshd = Sshd::builder()
        .host_keys(&[KeyKind::Ed25519])
        .authorize(&key)
        .start();
    let cert = ca.certify(
        &host_public_key(&sshd),
        "lab-bastion-7",
        "127.0.0.1",
        &["-h", "-z", "7"],
    );
    sshd.restart_with_config_line(&format!("HostCertificate {}", cert.display()));
    let echo = EchoServer::start();
    let known_hosts = sshd.dir().join("known_hosts_ca");
    fs::write(
        &known_hosts,
        format!("@cert-authority * {}\n", ca.known_hosts_key()),
    )
    .expect("write known_hosts");
    let spec = sshd.dir().join("spec");
    // Serial 7 among others, so that ssh-keygen writes more than one kind of section.
    fs::write(&spec, "serial: 7\nserial: 20-30\nid: someone-else\n").expect("write the spec");
    let revoked = krl(
        sshd.dir(),
        "serials.krl",
        Some(&ca.public_key_path()),
        &[&spec],
    );

    // The CA alone trusts it.
    let tunnel = forwarder(&sshd, &key, &known_hosts, &echo).start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"cert").expect("echo"),
        b"cert"
    );
    drop(tunnel);

    let mut tunnel = forwarder(&sshd, &key, &known_hosts, &echo)
        .option(&format!("RevokedHostKeys={}", revoked.display()))
        .spawn();
    let log = tunnel.expect_failure();
    assert!(
        log.contains(&format!(
            "is revoked by {} (RevokedHostKeys)",
            revoked.display()
        )) && log.contains("certificate serial 7 is revoked for certificates of CA SHA256:")
            && log.contains("\"lab-bastion-7\""),
        "{log}"
    );
}

#[test]
fn interop_revoked_host_keys_a_missing_file_refuses_the_connection_naming_it() {
    let (key, sshd, echo, known_hosts) = lab();
    let missing = sshd.dir().join("no-such.krl");
    let mut tunnel = forwarder(&sshd, &key, &known_hosts, &echo)
        .option("StrictHostKeyChecking=no")
        .option(&format!("RevokedHostKeys={}", missing.display()))
        .spawn();
    let log = tunnel.expect_failure();
    assert!(
        log.contains(&format!(
            "cannot read RevokedHostKeys file {}",
            missing.display()
        )),
        "{log}"
    );
    assert_eq!(echo.connections(), 0);

    let report = check_stage5(&sshd, &key, &known_hosts, &missing);
    assert_eq!(report["ok"], false, "{report:#}");
    assert!(
        report["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(&missing.display().to_string()),
        "{report:#}"
    );
}
