//! `UpdateHostKeys` against OpenSSH's sshd 9.2, which lists its host keys after each login
//! (`hostkeys-00@openssh.com`): a bastion's key rotation followed without anyone editing
//! known_hosts. The client's file lists the Ed25519 key of an sshd that also has an ECDSA
//! one (the admin's new key): the ECDSA key is proven by sshd and added, as OpenSSH's `ssh`
//! adds it on the same lab; then the admin retires the Ed25519 key, the tunnel reconnects
//! with the ECDSA key and the retired line is removed. Without the option (the default when
//! UserKnownHostsFile is given) the file is left alone and the tunnel fails closed after the
//! rotation.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Sshd, Tunnel, TunnelBuilder, UserKey, echo_round_trip,
};

const WAIT: Duration = Duration::from_secs(30);

/// An sshd with an Ed25519, an ECDSA and an RSA host key, and a known_hosts file of the
/// client's own in `dir` that lists only the Ed25519 one.
fn rotating_bastion(key: &UserKey, dir: &Path) -> (Sshd, PathBuf) {
    let sshd = Sshd::builder()
        .host_keys(&[KeyKind::Ed25519, KeyKind::EcdsaP256, KeyKind::Rsa2048])
        .authorize(key)
        .start();
    let ed = sshd
        .host_keys()
        .iter()
        .find(|k| k.kind() == KeyKind::Ed25519)
        .expect("an Ed25519 host key");
    let path = dir.join("known_hosts");
    fs::write(
        &path,
        format!("{}\n", ed.known_hosts_line("127.0.0.1", sshd.port())),
    )
    .expect("write known_hosts");
    (sshd, path)
}

fn ecdsa_blob(sshd: &Sshd) -> String {
    sshd.host_keys()
        .iter()
        .find(|k| k.kind() == KeyKind::EcdsaP256)
        .expect("an ECDSA host key")
        .base64()
        .to_owned()
}

/// Waits (bounded) until `path` satisfies `ok`; returns its text.
fn wait_for_file(
    path: &Path,
    what: &str,
    ok: impl Fn(&str) -> bool,
    log: &dyn Fn() -> String,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if ok(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: known_hosts is\n{text}\nclient log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_echo(tunnel: &Tunnel, what: &str) {
    let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let back = echo_round_trip(tunnel.local_port(), &sent)
        .unwrap_or_else(|e| panic!("{what}: the echo failed: {e}\n{}", tunnel.log()));
    assert!(back == sent, "{what}: the echo came back different");
}

#[test]
fn a_bastion_s_key_rotation_is_followed_as_ssh_follows_it() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let dir = tempfile::tempdir().expect("temp dir");
    let echo = EchoServer::start();
    let (mut sshd, kh) = rotating_bastion(&key, dir.path());
    let ecdsa = ecdsa_blob(&sshd);

    // OpenSSH's client, on its own copy: it learns the ECDSA key.
    let ssh_kh = dir.path().join("known_hosts.ssh");
    fs::copy(&kh, &ssh_kh).expect("copy known_hosts");
    let ssh = TunnelBuilder::new(ClientKind::OpenSsh, &sshd, &key)
        .known_hosts(&ssh_kh)
        .option("UpdateHostKeys=yes")
        .forward_to(echo.port())
        .start();
    let ssh_text = wait_for_file(&ssh_kh, "ssh", |t| t.lines().count() == 3, &|| ssh.log());
    assert!(ssh_text.contains(&ecdsa), "{ssh_text}");
    drop(ssh);

    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .known_hosts(&kh)
        .option("UpdateHostKeys=yes")
        .option("ServerAliveInterval=1")
        .option("ReconnectBackoffMax=1s")
        .forward_to(echo.port())
        .start();
    assert_echo(&tunnel, "before the rotation");
    // The ECDSA and RSA keys (proven with rsa-sha2, the exchange having used Ed25519), the
    // lines ssh added, byte for byte.
    let text = wait_for_file(&kh, "forwarder", |t| t.lines().count() == 3, &|| {
        tunnel.log()
    });
    let sorted = |t: &str| {
        let mut lines: Vec<String> = t.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&text), sorted(&ssh_text));
    tunnel.wait_for_log("learned new host key for [127.0.0.1]:", WAIT);
    assert!(
        sshd.log().contains("hostkeys-prove-00@openssh.com"),
        "the new key was proven:\n{}",
        sshd.log()
    );

    // The admin retires the Ed25519 key: the tunnel comes back with the ECDSA one, and the
    // retired key's line goes.
    let sessions = tunnel.log_count("session up");
    sshd.restart_keeping_host_keys(&[KeyKind::EcdsaP256]);
    let deadline = Instant::now() + WAIT;
    while tunnel.log_count("session up") <= sessions {
        assert!(
            Instant::now() < deadline,
            "no new session:\n{}",
            tunnel.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_echo(&tunnel, "after the rotation");
    let text = wait_for_file(
        &kh,
        "the retired keys removed",
        |t| t.lines().count() == 1,
        &|| tunnel.log(),
    );
    assert!(
        text.contains(&ecdsa) && text.contains("ecdsa-sha2-nistp256"),
        "{text}"
    );
    tunnel.wait_for_log("removed 2 host key line(s) of [127.0.0.1]:", WAIT);
}

#[test]
fn without_update_host_keys_the_file_is_left_alone_and_a_rotation_fails_closed() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let dir = tempfile::tempdir().expect("temp dir");
    let echo = EchoServer::start();
    let (mut sshd, kh) = rotating_bastion(&key, dir.path());
    let before = fs::read_to_string(&kh).expect("read known_hosts");
    // UserKnownHostsFile given and no UpdateHostKeys: off, as in ssh.
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .known_hosts(&kh)
        .option("ServerAliveInterval=1")
        .option("ReconnectBackoffMax=1s")
        .forward_to(echo.port())
        .start();
    assert_echo(&tunnel, "before the rotation");
    // The server's list came with the login; give the client a moment to (not) act on it.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fs::read_to_string(&kh).expect("read"), before);
    sshd.restart_keeping_host_keys(&[KeyKind::EcdsaP256]);
    tunnel.wait_for_log("is not known: the server offered ECDSA key", WAIT);
    assert_eq!(fs::read_to_string(&kh).expect("read"), before);
    assert!(
        echo_round_trip(tunnel.local_port(), b"x").is_err(),
        "a connection went through a bastion with an unknown key:\n{}",
        tunnel.log()
    );
}
