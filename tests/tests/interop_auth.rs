//! Public key authentication against the real sshd: the key types and file formats data
//! platforms hand out, the refusals a person must be able to act on, and RSA with SHA-2 only.

use std::time::Duration;

use ssh_interop_tests::{
    ClientKind, EchoServer, KeyFormat, KeyKind, Sshd, TunnelBuilder, UserKey, echo_round_trip,
};

fn forwarder(sshd: &Sshd, key: &UserKey) -> TunnelBuilder {
    TunnelBuilder::new(ClientKind::Forwarder, sshd, key)
}

#[test]
fn interop_auth_rsa4096_openssh_rsa_pem_and_ed25519_keys_log_in() {
    let keys = [
        UserKey::generate(KeyKind::Rsa4096),
        UserKey::generate_pem(KeyKind::Rsa2048),
        UserKey::generate(KeyKind::Ed25519),
    ];
    assert_eq!(keys[0].format(), KeyFormat::OpenSsh);
    assert_eq!(keys[1].format(), KeyFormat::Pem);
    let sshd = keys
        .iter()
        .fold(Sshd::builder(), |b, k| b.authorize(k))
        .start();
    let echo = EchoServer::start();
    for key in &keys {
        let what = format!("{} key in {:?} format", key.kind(), key.format());
        let log_start = sshd.log().len();
        let tunnel = forwarder(&sshd, key).forward_to(echo.port()).start();
        assert_eq!(
            echo_round_trip(tunnel.local_port(), what.as_bytes())
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", tunnel.log())),
            what.as_bytes()
        );
        // sshd names the key that got in by its fingerprint.
        let ours =
            sshd.wait_for_log_after(log_start, "Accepted publickey for", Duration::from_secs(10));
        let accepted = ours
            .lines()
            .find(|l| l.contains("Accepted publickey for"))
            .unwrap_or_default();
        assert!(
            accepted.ends_with(key.fingerprint()),
            "{what}: sshd accepted another key: {accepted}"
        );
    }
}

#[test]
fn interop_auth_unauthorized_key_fails_naming_the_key_and_its_fingerprint() {
    let authorized = UserKey::generate(KeyKind::Ed25519);
    let stranger = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&authorized);
    let echo = EchoServer::start();
    let mut tunnel = forwarder(&sshd, &stranger).forward_to(echo.port()).spawn();
    let log = tunnel.expect_failure();
    let path = stranger.private_key_path().display().to_string();
    assert!(
        log.contains(&path) && log.contains(stranger.fingerprint()),
        "the message should list the key tried ({path}) and its fingerprint ({}):\n{log}",
        stranger.fingerprint()
    );
    assert!(!log.contains("panicked"), "{log}");
    sshd.wait_for_log("Failed publickey", Duration::from_secs(10));
    assert_eq!(echo.connections(), 0);
}

#[test]
fn interop_auth_passphrase_protected_key_without_a_passphrase_source_says_how_to_give_one() {
    let key = UserKey::generate_with(KeyKind::Ed25519, KeyFormat::OpenSsh, Some("s3cret"));
    let sshd = Sshd::start(&key);
    // BatchMode (the lab's default): no terminal prompt, and no PassphraseFile.
    let mut tunnel = forwarder(&sshd, &key).forward_to(1).spawn();
    let log = tunnel.expect_failure();
    assert!(
        log.contains(&key.private_key_path().display().to_string())
            && log.contains("is protected by a passphrase")
            && log.contains("-o PassphraseFile=FILE"),
        "the message should name the key file and say how to give its passphrase:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn interop_auth_passphrase_from_passphrase_file_and_a_wrong_one() {
    let key = UserKey::generate_with(KeyKind::Ed25519, KeyFormat::OpenSsh, Some("s3cret"));
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let right = dir.path().join("right");
    std::fs::write(&right, "s3cret\n").expect("passphrase file");
    let tunnel = forwarder(&sshd, &key)
        .option(&format!("PassphraseFile={}", right.display()))
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"unlocked").expect("echo"),
        b"unlocked"
    );
    drop(tunnel);

    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "guess\n").expect("passphrase file");
    let mut tunnel = forwarder(&sshd, &key)
        .option(&format!("PassphraseFile={}", wrong.display()))
        .forward_to(1)
        .spawn();
    let log = tunnel.expect_failure();
    assert!(
        log.contains(&format!(
            "wrong passphrase for {}",
            key.private_key_path().display()
        )),
        "{log}"
    );
    assert!(!log.contains("guess"), "the passphrase leaked:\n{log}");
}

#[test]
fn interop_auth_rsa_with_only_rsa_sha2_256_accepted_never_uses_ssh_rsa() {
    rsa_logs_in_with_only(SHA2_256);
}

#[test]
fn interop_auth_rsa_with_only_rsa_sha2_512_accepted_never_uses_ssh_rsa() {
    rsa_logs_in_with_only(SHA2_512);
}

const SHA2_256: &str = "rsa-sha2-256";
const SHA2_512: &str = "rsa-sha2-512";

/// sshd accepts RSA signatures with `accepted` only: the forwarder logs in with that
/// algorithm and never tries the SHA-1 `ssh-rsa`. OpenSSH 9.2's server-sig-algs lists every
/// algorithm sshd knows whatever PubkeyAcceptedAlgorithms says, so with `rsa-sha2-256` only
/// the forwarder first tries `rsa-sha2-512`, is refused, and tries `rsa-sha2-256`.
fn rsa_logs_in_with_only(accepted: &str) {
    let key = UserKey::generate(KeyKind::Rsa2048);
    // DEBUG2 makes sshd log the signature algorithm of every attempt.
    let sshd = Sshd::builder()
        .config(format!("PubkeyAcceptedAlgorithms {accepted}"))
        .config("LogLevel DEBUG2")
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    let tunnel = forwarder(&sshd, &key).forward_to(echo.port()).start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), accepted.as_bytes()).expect("echo"),
        accepted.as_bytes()
    );
    let log = sshd.wait_for_log(
        &format!("userauth_pubkey: authenticated 1 pkalg {accepted}"),
        Duration::from_secs(10),
    );
    let attempts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("attempting public key") || l.contains("querying public key"))
        .collect();
    assert!(!attempts.is_empty(), "{log}");
    assert!(
        attempts.iter().all(|l| !l.contains(" ssh-rsa ")),
        "the forwarder tried the SHA-1 ssh-rsa signature:\n{}",
        attempts.join("\n")
    );
    assert!(!log.contains("pkalg ssh-rsa"), "{log}");
    assert!(
        !log.contains("signature algorithm ssh-rsa"),
        "the forwarder offered ssh-rsa:\n{log}"
    );
}

#[test]
fn interop_auth_key_files_sign_at_once_without_asking_the_server_first() {
    // A key from a file costs nothing to sign with, so the forwarder sends the signature in
    // its first request (one round trip fewer than a PK_OK query), even for a key the server
    // then refuses. sshd logs a query without a signature as "test pkalg".
    let stranger = UserKey::generate(KeyKind::Ed25519);
    let authorized = UserKey::generate(KeyKind::Rsa2048);
    let sshd = Sshd::start(&authorized);
    let echo = EchoServer::start();
    let offset = sshd.log().len();
    let tunnel = forwarder(&sshd, &stranger)
        .option(&format!(
            "IdentityFile={}",
            authorized.private_key_path().display()
        ))
        .verbose()
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"second key").expect("echo"),
        b"second key"
    );
    let log = sshd.wait_for_log_after(offset, "Accepted publickey for", Duration::from_secs(10));
    let failed = log
        .lines()
        .find(|l| l.contains("Failed publickey"))
        .unwrap_or_else(|| panic!("sshd refused nothing first:\n{log}"));
    assert!(failed.ends_with(stranger.fingerprint()), "{failed}");
    let accepted = log
        .lines()
        .find(|l| l.contains("Accepted publickey for"))
        .unwrap_or_default();
    assert!(accepted.ends_with(authorized.fingerprint()), "{accepted}");
    assert!(
        !log.contains("test pkalg"),
        "a key from a file was queried before signing:\n{log}"
    );
}

#[test]
fn interop_auth_key_file_readable_by_others_is_refused_with_openssh_warning() {
    use std::os::unix::fs::PermissionsExt as _;
    let key = UserKey::generate(KeyKind::Ed25519);
    std::fs::set_permissions(
        key.private_key_path(),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod 0644");
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let offset = sshd.log().len();
    let mut tunnel = forwarder(&sshd, &key).forward_to(echo.port()).spawn();
    let log = tunnel.expect_failure();
    let path = key.private_key_path().display().to_string();
    assert!(
        log.contains(&path) && log.contains("0644 are too open"),
        "the refusal names the file and its permissions:\n{log}"
    );
    assert!(
        log.lines()
            .last()
            .is_some_and(|l| l.contains("no key could be used") && l.contains(&path)),
        "the final error names the unusable key:\n{log}"
    );
    assert!(
        !sshd.log()[offset..].contains("Accepted publickey"),
        "the key was used anyway"
    );
    assert_eq!(echo.connections(), 0);
}
