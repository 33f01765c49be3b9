//! Password and keyboard-interactive authentication against the real sshd, for a user with a
//! known password made for the test: alone, after a key (`AuthenticationMethods
//! publickey,password`), from a file or an environment variable, and refused.
//!
//! Creating the user needs root, which the lab has in CI (`scripts/test`).

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use ssh_interop_tests::process::{is_root, run_bounded, run_ok};
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Sshd, SshdBuilder, TunnelBuilder, UserKey, echo_round_trip,
};

/// The user the tests log in as, and its password.
const USER: &str = "lab-password-user";
const PASSWORD: &str = "correct horse battery staple";

/// Creates [`USER`] with [`PASSWORD`] once per test run.
fn password_user() -> &'static str {
    static CREATED: Once = Once::new();
    CREATED.call_once(|| {
        assert!(
            is_root(),
            "these tests create a system user with a known password, which needs root; run \
             them as root (the CI lab does) or through scripts/test"
        );
        let exists = run_bounded(
            Command::new("id").arg("-u").arg(USER),
            Duration::from_secs(10),
            "id",
        )
        .status
        .success();
        if !exists {
            run_ok(
                Command::new("useradd")
                    .args(["-M", "-d", "/nonexistent", "-s", "/bin/sh"])
                    .arg(USER),
                Duration::from_secs(30),
                "useradd",
            );
        }
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run chpasswd (Debian package passwd)");
        chpasswd
            .stdin
            .take()
            .expect("chpasswd's stdin")
            .write_all(format!("{USER}:{PASSWORD}\n").as_bytes())
            .expect("write to chpasswd");
        let out = chpasswd.wait_with_output().expect("chpasswd");
        assert!(
            out.status.success(),
            "chpasswd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    USER
}

/// A file holding `text` and a newline, readable by its owner only.
fn secret_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(f, "{text}").expect("write the secret");
    f
}

/// sshd with passwords on, no PAM (the lab's default), and DEBUG logging.
fn sshd_with_passwords() -> SshdBuilder {
    Sshd::builder()
        .config("PasswordAuthentication yes")
        .config("LogLevel DEBUG2")
}

fn forwarder(sshd: &Sshd, key: &UserKey, user: &str) -> TunnelBuilder {
    TunnelBuilder::new(ClientKind::Forwarder, sshd, key).user(user)
}

#[test]
fn interop_password_after_publickey_with_authentication_methods() {
    let user = password_user();
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = sshd_with_passwords()
        .config("AuthenticationMethods publickey,password")
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    let password = secret_file(PASSWORD);
    let offset = sshd.log().len();
    let tunnel = forwarder(&sshd, &key, user)
        .option(&format!("PasswordFile={}", password.path().display()))
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"two factors")
            .unwrap_or_else(|e| panic!("{e}\n{}", tunnel.log())),
        b"two factors"
    );
    let log = sshd.wait_for_log_after(
        offset,
        &format!("Accepted password for {user}"),
        Duration::from_secs(10),
    );
    assert!(
        log.contains(&format!("Partial publickey for {user}")),
        "the key should have been accepted as the first of two steps:\n{log}"
    );
    assert!(log.contains(key.fingerprint()), "{log}");
}

#[test]
fn interop_password_alone_from_an_environment_variable() {
    let user = password_user();
    let stranger = UserKey::generate(KeyKind::Ed25519);
    let sshd = sshd_with_passwords().start();
    let echo = EchoServer::start();
    let offset = sshd.log().len();
    let tunnel = forwarder(&sshd, &stranger, user)
        .option("PasswordEnv=LAB_BASTION_PASSWORD")
        .env("LAB_BASTION_PASSWORD", PASSWORD)
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"password").expect("echo"),
        b"password"
    );
    let log = sshd.wait_for_log_after(
        offset,
        &format!("Accepted password for {user}"),
        Duration::from_secs(10),
    );
    assert!(
        log.contains("Failed publickey"),
        "the key was tried first:\n{log}"
    );
}

#[test]
fn interop_password_wrong_one_fails_listing_what_was_tried() {
    let user = password_user();
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = sshd_with_passwords().start();
    let wrong = secret_file("not the password");
    let mut tunnel = forwarder(&sshd, &key, user)
        .option(&format!("PasswordFile={}", wrong.path().display()))
        .forward_to(1)
        .spawn();
    let log = tunnel.expect_failure();
    for needle in [
        key.fingerprint(),
        "password refused once",
        "was refused and there is no other",
        "The server allows: publickey,password",
    ] {
        assert!(log.contains(needle), "{needle:?} missing from:\n{log}");
    }
    assert!(
        !log.contains("not the password"),
        "the password leaked:\n{log}"
    );
    sshd.wait_for_log(
        &format!("Failed password for {user}"),
        Duration::from_secs(10),
    );
}

#[test]
fn interop_password_is_not_used_when_password_authentication_is_off() {
    let user = password_user();
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = sshd_with_passwords().start();
    let password = secret_file(PASSWORD);
    let mut tunnel = forwarder(&sshd, &key, user)
        .option(&format!("PasswordFile={}", password.path().display()))
        .option("PasswordAuthentication=no")
        .option("KbdInteractiveAuthentication=no")
        .forward_to(1)
        .spawn();
    let log = tunnel.expect_failure();
    assert!(
        log.contains("password not tried: turned off (PasswordAuthentication no)"),
        "{log}"
    );
    assert!(!sshd.log().contains("Failed password"), "{}", sshd.log());
}

/// sshd 9.2 built with PAM (Debian's) offers keyboard-interactive through PAM only: without
/// PAM it has no keyboard-interactive device, lists the method, and fails every attempt
/// without a question. So this test turns PAM on; PAM's password prompt is answered from
/// PasswordFile.
#[test]
fn interop_keyboard_interactive_through_pam_answers_the_password_prompt() {
    let user = password_user();
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .config("UsePAM yes")
        .config("KbdInteractiveAuthentication yes")
        .config("PasswordAuthentication no")
        .config("AuthenticationMethods keyboard-interactive")
        .config("LogLevel DEBUG2")
        .start();
    let echo = EchoServer::start();
    let password = secret_file(PASSWORD);
    let offset = sshd.log().len();
    let tunnel = forwarder(&sshd, &key, user)
        .option(&format!("PasswordFile={}", password.path().display()))
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"pam")
            .unwrap_or_else(|e| panic!("{e}\n{}", tunnel.log())),
        b"pam"
    );
    let log = sshd.wait_for_log_after(
        offset,
        &format!("Accepted keyboard-interactive/pam for {user}"),
        Duration::from_secs(10),
    );
    assert!(!log.contains("Accepted publickey"), "{log}");
}

/// Without PAM, sshd 9.2 lists keyboard-interactive but cannot ask anything: the attempt
/// fails at once, and the forwarder goes on to the password.
#[test]
fn interop_keyboard_interactive_without_pam_falls_through_to_password() {
    let user = password_user();
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = sshd_with_passwords()
        .config("KbdInteractiveAuthentication yes")
        .start();
    let echo = EchoServer::start();
    let password = secret_file(PASSWORD);
    let offset = sshd.log().len();
    let tunnel = forwarder(&sshd, &key, user)
        .option(&format!("PasswordFile={}", password.path().display()))
        .verbose()
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"x").expect("echo"),
        b"x"
    );
    let log = sshd.wait_for_log_after(
        offset,
        &format!("Accepted password for {user}"),
        Duration::from_secs(10),
    );
    assert!(
        log.contains("keyboard-interactive"),
        "the forwarder should have tried keyboard-interactive first:\n{log}"
    );
}

#[test]
fn interop_password_first_with_preferred_authentications_even_with_an_authorized_key() {
    // PreferredAuthentications=password,publickey: the password is used although the key
    // would be accepted, and the key is never offered once the password gets in.
    let user = password_user();
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = sshd_with_passwords().authorize(&key).start();
    let echo = EchoServer::start();
    let offset = sshd.log().len();
    let tunnel = forwarder(&sshd, &key, user)
        .option("PreferredAuthentications=password,publickey")
        .option("PasswordEnv=LAB_BASTION_PASSWORD")
        .env("LAB_BASTION_PASSWORD", PASSWORD)
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"preferred").expect("echo"),
        b"preferred"
    );
    let log = sshd.wait_for_log_after(
        offset,
        &format!("Accepted password for {user}"),
        Duration::from_secs(10),
    );
    assert!(
        !log.contains("method publickey"),
        "the key was offered although password came first:\n{log}"
    );
}
