//! Keys held by the real `ssh-agent`, loaded with the real `ssh-add`, against the real sshd:
//! the forwarder finds the agent through SSH_AUTH_SOCK, asks sshd before signing (PK_OK),
//! has the agent sign with rsa-sha2-512, honours IdentitiesOnly, offers a certificate
//! issued for a key the agent holds, the agent signing with the plain key, and asks the agent
//! again before every attempt, so a key replaced in the agent is the one a reconnect offers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ssh_interop_tests::process::{LabChild, require_program, run_ok};
use ssh_interop_tests::{
    CertAuthority, ClientKind, EchoServer, KeyFormat, KeyKind, Sshd, TunnelBuilder, UserKey,
    echo_round_trip,
};

/// A real `ssh-agent -D` on a socket in its own temp dir, killed on drop.
struct Agent {
    _process: LabChild,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Agent {
        let program = require_program(
            "ssh-agent",
            &[],
            "install the OpenSSH client (apt-get install openssh-client; scripts/test does this)",
        );
        let dir = tempfile::Builder::new()
            .prefix("lab-agent-")
            .tempdir()
            .expect("a temp dir for the agent");
        let socket = dir.path().join("agent.sock");
        let mut cmd = Command::new(program);
        cmd.arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = LabChild::spawn("ssh-agent", &mut cmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "ssh-agent did not create {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Agent {
            _process: process,
            socket,
            _dir: dir,
        }
    }

    /// `ssh-add` of each key, in order (the agent lists them in that order).
    fn add(&self, keys: &[&UserKey]) {
        let program = require_program("ssh-add", &[], "install the OpenSSH client");
        for key in keys {
            let mut cmd = Command::new(&program);
            cmd.arg(key.private_key_path())
                .env("SSH_AUTH_SOCK", &self.socket)
                .env("SSH_ASKPASS_REQUIRE", "never");
            run_ok(&mut cmd, Duration::from_secs(30), "ssh-add");
        }
        let mut list = Command::new(&program);
        list.arg("-l").env("SSH_AUTH_SOCK", &self.socket);
        let out = run_ok(&mut list, Duration::from_secs(30), "ssh-add -l");
        let listed = String::from_utf8_lossy(&out.stdout);
        for key in keys {
            assert!(
                listed.contains(key.fingerprint()),
                "ssh-add -l does not list {}:\n{listed}",
                key.fingerprint()
            );
        }
    }

    /// `ssh-add -D`: the agent forgets every key.
    fn remove_all(&self) {
        let program = require_program("ssh-add", &[], "install the OpenSSH client");
        let mut cmd = Command::new(program);
        cmd.arg("-D").env("SSH_AUTH_SOCK", &self.socket);
        run_ok(&mut cmd, Duration::from_secs(30), "ssh-add -D");
    }
}

/// A home directory with no `.ssh`, so the default identity files do not exist.
fn empty_home() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("lab-home-")
        .tempdir()
        .expect("a temp home")
}

fn forwarder(sshd: &Sshd, key: &UserKey) -> TunnelBuilder {
    TunnelBuilder::new(ClientKind::Forwarder, sshd, key)
}

/// The lines of sshd's log about publickey attempts since `offset`.
fn pubkey_lines(sshd: &Sshd, offset: usize) -> String {
    sshd.log()
        .get(offset..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("publickey") || l.contains("public key"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (bounded) for sshd's next accepted login after `offset`: sshd's log from there, and
/// the line that accepted it.
fn accepted_after(sshd: &Sshd, offset: usize) -> (String, String) {
    let log = sshd.wait_for_log_after(offset, "Accepted publickey for", Duration::from_secs(10));
    let accepted = log
        .lines()
        .find(|l| l.contains("Accepted publickey for"))
        .unwrap_or_default()
        .to_owned();
    (log, accepted)
}

/// Waits (bounded) for sshd's next accepted login after `offset`, checks it was `key`'s and
/// returns sshd's log from `offset`.
fn assert_accepted(sshd: &Sshd, offset: usize, key: &UserKey, which: &str) -> String {
    let (log, accepted) = accepted_after(sshd, offset);
    assert!(
        accepted.ends_with(key.fingerprint()),
        "sshd accepted another key than {which}: {accepted}"
    );
    log
}

#[test]
fn interop_agent_keys_log_in_with_no_identity_file() {
    let unauthorized = UserKey::generate(KeyKind::Ed25519);
    let authorized = UserKey::generate(KeyKind::Rsa2048);
    let agent = Agent::start();
    agent.add(&[&unauthorized, &authorized]);
    // DEBUG2 makes sshd log queries and the signature algorithm of every attempt.
    let sshd = Sshd::builder()
        .config("LogLevel DEBUG2")
        .authorize(&authorized)
        .start();
    let echo = EchoServer::start();
    let home = empty_home();
    let offset = sshd.log().len();
    let tunnel = forwarder(&sshd, &authorized)
        .without_identity()
        .env("SSH_AUTH_SOCK", &agent.socket)
        .env("HOME", home.path())
        .verbose()
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"signed by the agent")
            .unwrap_or_else(|e| panic!("{e}\n{}", tunnel.log())),
        b"signed by the agent"
    );
    let log = assert_accepted(&sshd, offset, &authorized, "the agent's RSA key");
    let attempts = pubkey_lines(&sshd, offset);
    // Both agent keys were first offered without a signature (sshd logs these as
    // "test pkalg" queries), and the RSA key was signed with SHA-512.
    assert!(
        attempts.contains(unauthorized.fingerprint()) && attempts.contains("test pkalg"),
        "the agent's Ed25519 key should have been queried first:\n{attempts}"
    );
    assert!(
        log.contains("pkalg rsa-sha2-512"),
        "the agent should sign with rsa-sha2-512:\n{attempts}"
    );
    assert!(
        !log.contains("pkalg ssh-rsa "),
        "SHA-1 was used:\n{attempts}"
    );
    let client_log = tunnel.log();
    assert!(
        client_log.contains("asking whether the server accepts this key"),
        "{client_log}"
    );
}

#[test]
fn interop_agent_identities_only_offers_only_keys_named_with_i() {
    let in_agent = UserKey::generate(KeyKind::Ed25519);
    let named = UserKey::generate(KeyKind::Ed25519);
    let agent = Agent::start();
    agent.add(&[&in_agent]);
    // Only the agent's key is authorized: with IdentitiesOnly and another -i, it must not
    // be offered, so the login fails.
    let sshd = Sshd::builder()
        .config("LogLevel DEBUG2")
        .authorize(&in_agent)
        .start();
    let home = empty_home();
    let offset = sshd.log().len();
    let mut tunnel = forwarder(&sshd, &named)
        .option("IdentitiesOnly=yes")
        .env("SSH_AUTH_SOCK", &agent.socket)
        .env("HOME", home.path())
        .forward_to(1)
        .spawn();
    let log = tunnel.expect_failure();
    assert!(log.contains(named.fingerprint()), "{log}");
    assert!(
        !log.contains(in_agent.fingerprint()),
        "the agent's key was offered despite IdentitiesOnly:\n{log}"
    );
    sshd.wait_for_log_after(offset, "Received disconnect", Duration::from_secs(10));
    let attempts = pubkey_lines(&sshd, offset);
    assert!(
        !attempts.contains(in_agent.fingerprint()),
        "sshd saw the agent's key:\n{attempts}"
    );

    // The control: without IdentitiesOnly the same command line gets in with the agent key.
    let echo = EchoServer::start();
    let tunnel = forwarder(&sshd, &named)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .env("HOME", home.path())
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"x").expect("echo"),
        b"x"
    );
}

#[test]
fn interop_agent_signs_for_an_encrypted_key_file_so_no_passphrase_is_needed() {
    let key = UserKey::generate_with(KeyKind::Ed25519, KeyFormat::OpenSsh, Some("s3cret"));
    let agent = Agent::start();
    add_with_passphrase(&agent.socket, key.private_key_path(), "s3cret");
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let home = empty_home();
    // BatchMode (the lab's default) and no PassphraseFile: only the agent can sign.
    let tunnel = forwarder(&sshd, &key)
        .option("IdentitiesOnly=yes")
        .env("SSH_AUTH_SOCK", &agent.socket)
        .env("HOME", home.path())
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"no passphrase asked").expect("echo"),
        b"no passphrase asked"
    );
    assert!(!tunnel.log().contains("passphrase"), "{}", tunnel.log());
}

/// `ssh-add` of an encrypted key, its passphrase given through SSH_ASKPASS.
fn add_with_passphrase(socket: &Path, key: &Path, passphrase: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let askpass = dir.path().join("askpass");
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{passphrase}'\n")).expect("askpass");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let program = require_program("ssh-add", &[], "install the OpenSSH client");
    let mut cmd = Command::new(program);
    cmd.arg(key)
        .env("SSH_AUTH_SOCK", socket)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0");
    run_ok(&mut cmd, Duration::from_secs(30), "ssh-add (with askpass)");
}

/// Copies `key`'s public key to `dir/name.pub` and certifies it for `principal` with key id
/// `name`: returns `dir/name-cert.pub`.
fn certify_copy(
    ca: &CertAuthority,
    key: &UserKey,
    dir: &Path,
    name: &str,
    principal: &str,
) -> PathBuf {
    let public = dir.join(format!("{name}.pub"));
    std::fs::copy(key.public_key_path(), &public).expect("copy the public key");
    ca.certify(&public, name, principal, &[])
}

/// The line in which sshd accepted a certificate with key id `id`.
fn accepted_certificate(sshd: &Sshd, offset: usize, id: &str) -> String {
    let (_, accepted) = accepted_after(sshd, offset);
    assert!(
        accepted.contains("-CERT ") && accepted.contains(&format!("ID {id} ")),
        "sshd did not accept the certificate {id}: {accepted}"
    );
    accepted
}

// The agent was given the key before the CA issued its certificate (`ssh-add`, then a CA
// signs), so it holds the plain key only; it finds keys by their exact blob, so it must be
// asked to sign with the plain key while the request carries the certificate. sshd trusts
// the CA and authorizes no key, so only the certificate gets in.
#[test]
fn interop_agent_signs_for_a_certificate_file_with_the_plain_key_it_holds() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let agent = Agent::start();
    agent.add(&[&key]);
    let ca = CertAuthority::new();
    let sshd = ca.sshd();
    let issued = tempfile::tempdir().expect("temp dir");
    let cert = certify_copy(&ca, &key, issued.path(), "lab-agent-cert-file", sshd.user());
    let echo = EchoServer::start();
    let home = empty_home();
    let offset = sshd.log().len();
    let tunnel = forwarder(&sshd, &key)
        .without_identity()
        .option(&format!("CertificateFile={}", cert.display()))
        .env("SSH_AUTH_SOCK", &agent.socket)
        .env("HOME", home.path())
        .verbose()
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"certificate file")
            .unwrap_or_else(|e| panic!("{e}\n{}", tunnel.log())),
        b"certificate file"
    );
    let accepted = accepted_certificate(&sshd, offset, "lab-agent-cert-file");
    assert!(accepted.contains(key.fingerprint()), "{accepted}");
}

#[test]
fn interop_agent_signs_for_a_certificate_beside_a_public_key_with_the_plain_key_it_holds() {
    for kind in [KeyKind::Ed25519, KeyKind::Rsa2048, KeyKind::EcdsaP256] {
        let key = UserKey::generate(kind);
        let agent = Agent::start();
        agent.add(&[&key]);
        let ca = CertAuthority::new();
        let sshd = ca.sshd();
        // Only `id.pub` and `id-cert.pub`: the private key is in the agent alone.
        let dir = tempfile::tempdir().expect("temp dir");
        let id = format!("lab-agent-{kind}");
        certify_copy(&ca, &key, dir.path(), &id, sshd.user());
        let echo = EchoServer::start();
        let home = empty_home();
        let offset = sshd.log().len();
        let tunnel = forwarder(&sshd, &key)
            .identity(&dir.path().join(&id))
            .option("IdentitiesOnly=yes")
            .env("SSH_AUTH_SOCK", &agent.socket)
            .env("HOME", home.path())
            .verbose()
            .forward_to(echo.port())
            .start();
        assert_eq!(
            echo_round_trip(tunnel.local_port(), id.as_bytes())
                .unwrap_or_else(|e| panic!("{kind}: {e}\n{}", tunnel.log())),
            id.as_bytes()
        );
        let accepted = accepted_certificate(&sshd, offset, &id);
        assert!(accepted.contains(key.fingerprint()), "{kind}: {accepted}");
    }
}

// A platform rotates the key its agent holds (ssh-add -D, ssh-add of the new key) and the
// bastion authorizes only the new key; the session ends. The tunnel must come back with the
// new key without a restart: the agent is asked again before every attempt, as OpenSSH asks
// it at every connection. A list read once at start-up offers the old key for ever.
#[test]
fn interop_agent_a_key_replaced_in_the_agent_is_offered_at_the_next_attempt() {
    let old = UserKey::generate(KeyKind::Ed25519);
    let new = UserKey::generate(KeyKind::Ed25519);
    let agent = Agent::start();
    agent.add(&[&old]);
    let sshd = Sshd::start(&old);
    let echo = EchoServer::start();
    let home = empty_home();
    let mut tunnel = forwarder(&sshd, &old)
        .without_identity()
        // Losses noticed within ~3 s, retries at most 2 s apart.
        .option("ServerAliveInterval=1")
        .option("ServerAliveCountMax=2")
        .option("ReconnectBackoffMax=2")
        .env("SSH_AUTH_SOCK", &agent.socket)
        .env("HOME", home.path())
        .forward_to(echo.port())
        .start();
    tunnel.wait_for_log("session up", Duration::from_secs(10));
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"old key")
            .unwrap_or_else(|e| panic!("{e}\n{}", tunnel.log())),
        b"old key"
    );

    agent.remove_all();
    agent.add(&[&new]);
    std::fs::write(
        sshd.authorized_keys_path(),
        format!("{}\n", new.public_key_line()),
    )
    .expect("authorize only the new key");
    let offset = sshd.log().len();
    assert!(sshd.kill_sessions() > 0, "no sshd session to end");

    tunnel.wait_for_log_count("session up", 2, Duration::from_secs(20));
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"new key")
            .unwrap_or_else(|e| panic!("{e}\n{}", tunnel.log())),
        b"new key"
    );
    assert_accepted(&sshd, offset, &new, "the agent's new key");
    if let Some(status) = tunnel.exited() {
        panic!(
            "the forwarder exited ({status}); its log:\n{}",
            tunnel.log()
        );
    }
}
