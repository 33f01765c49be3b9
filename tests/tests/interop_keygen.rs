//! `forwarder keygen` against the real sshd: the printed authorized_keys line lets the key
//! forward to exactly the named destination, refuses any other, refuses every remote
//! forward, and refuses a shell.

use std::process::Command;
use std::time::Duration;

use ssh_interop_tests::client::{ClientKind, TunnelBuilder, forwarder_binary, openssh_binary};
use ssh_interop_tests::keys::{KeyKind, UserKey};
use ssh_interop_tests::net::{free_port, port_listening};
use ssh_interop_tests::process::run_bounded;
use ssh_interop_tests::servers::{EchoServer, echo_round_trip};
use ssh_interop_tests::sshd::Sshd;

/// Runs `forwarder keygen` with `args`; returns its stdout.
fn keygen(args: &[&str]) -> String {
    let out = run_bounded(
        Command::new(forwarder_binary()).arg("keygen").args(args),
        Duration::from_secs(300),
        "forwarder keygen",
    );
    assert!(
        out.status.success(),
        "forwarder keygen {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn authorized_line(stdout: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with("restrict,"))
        .unwrap_or_else(|| panic!("no authorized_keys line in:\n{stdout}"))
        .to_owned()
}

fn check_key(kind: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_path = dir.path().join("platform_key");
    let allowed = EchoServer::start();
    let other = EchoServer::start();
    let permit = format!("127.0.0.1:{}", allowed.port());
    let mut args: Vec<&str> = kind.to_vec();
    let key_str = key_path.to_str().expect("utf-8 path");
    args.extend([
        "-f",
        key_str,
        "-C",
        "platform@test",
        "--permit-open",
        &permit,
    ]);
    let stdout = keygen(&args);
    let line = authorized_line(&stdout);
    assert!(line.contains(&format!("permitopen=\"{permit}\"")), "{line}");
    assert!(line.ends_with(" platform@test"), "{line}");
    // The private key is private, and a second run never overwrites it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_path)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key file mode {mode:o}");
    }
    let again = run_bounded(
        Command::new(forwarder_binary())
            .arg("keygen")
            .args(["-t", "ed25519", "-f", key_str]),
        Duration::from_secs(60),
        "forwarder keygen again",
    );
    assert!(!again.status.success(), "keygen overwrote an existing key");

    let sshd = Sshd::builder().authorized_key_line(line.clone()).start();
    // TunnelBuilder wants a lab key; the generated one replaces it with .identity().
    let placeholder = UserKey::generate(KeyKind::Ed25519);
    let ok_port = free_port();
    let refused_port = free_port();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &placeholder)
        .identity(&key_path)
        .forward(ok_port, "127.0.0.1", allowed.port())
        .forward(refused_port, "127.0.0.1", other.port())
        .verbose()
        .start();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        echo_round_trip(ok_port, &data).expect("echo through the allowed forward"),
        data
    );
    // The other destination is refused by sshd: the local connection ends without data.
    let refused = echo_round_trip(refused_port, b"hello");
    assert!(
        refused.as_ref().map_or(true, |d| d.is_empty()),
        "a destination outside permitopen was reached: {refused:?}"
    );
    tunnel.wait_for_log("refused", Duration::from_secs(10));
    assert!(tunnel.exited().is_none(), "forwarder must keep running");

    // A shell (or any command) is refused for this key.
    let shell = run_bounded(
        Command::new(openssh_binary()).args([
            "-F",
            "none",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            &format!("UserKnownHostsFile={}", sshd.known_hosts_path().display()),
            "-i",
            key_str,
            "-p",
            &sshd.port().to_string(),
            &format!("{}@127.0.0.1", sshd.user()),
            "echo",
            "shell-ran",
        ]),
        Duration::from_secs(30),
        "ssh with the generated key",
    );
    assert!(
        !shell.status.success() && !String::from_utf8_lossy(&shell.stdout).contains("shell-ran"),
        "a command ran with the forwarding-only key: {:?} {}",
        shell.status,
        String::from_utf8_lossy(&shell.stdout)
    );
}

#[test]
fn interop_keygen_ed25519_line_allows_only_the_named_forward() {
    check_key(&["-t", "ed25519"]);
}

#[test]
fn interop_keygen_default_rsa_4096_line_allows_only_the_named_forward() {
    check_key(&[]);
}

/// `port-forwarding` turns remote forwarding back on too, and without a `permitlisten` sshd
/// lets the key listen on any port: the line must refuse every `-R`, whatever listen host
/// and port it names (the lowercased request can never match the upper-case pattern, not
/// even when it names that pattern), while the `-L` to the permitted destination works.
#[test]
fn interop_keygen_line_refuses_every_remote_forward() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_path = dir.path().join("platform_key");
    let key_str = key_path.to_str().expect("utf-8 path");
    let allowed = EchoServer::start();
    let permit = format!("127.0.0.1:{}", allowed.port());
    let line = authorized_line(&keygen(&[
        "-t",
        "ed25519",
        "-f",
        key_str,
        "-C",
        "platform@test",
        "--permit-open",
        &permit,
    ]));
    let sshd = Sshd::builder().authorized_key_line(line.clone()).start();
    let placeholder = UserKey::generate(KeyKind::Ed25519);
    let fixed = free_port();
    let target = format!("127.0.0.1:{}", allowed.port());

    // Port 0 on the default listen host, a fixed loopback port, and the pattern's own host
    // and port; the lab's ExitOnForwardFailure=yes makes a refusal fatal.
    for (listen, host, port) in [
        ("0".to_owned(), "localhost", 0),
        (format!("127.0.0.1:{fixed}"), "127.0.0.1", fixed),
        ("NONE:1".to_owned(), "NONE", 1),
    ] {
        let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &placeholder)
            .identity(&key_path)
            .forward_to(allowed.port())
            .option(&format!("RemoteForward={listen} {target}"))
            .spawn();
        let log = tunnel.expect_failure();
        assert!(
            log.contains(&format!(
                "remote port forwarding failed for listen port {port}"
            )),
            "{line}\n{log}"
        );
        // Refused by the key's permission, not by a failed bind.
        sshd.wait_for_log(
            &format!("remote forward to host {host} port {port}, but the request was denied"),
            Duration::from_secs(10),
        );
    }

    // Without ExitOnForwardFailure the refused -R only warns, and the -L carries data.
    let ok_port = free_port();
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &placeholder)
        .identity(&key_path)
        .forward(ok_port, "127.0.0.1", allowed.port())
        .option(&format!("RemoteForward=127.0.0.1:{fixed} {target}"))
        .option("ExitOnForwardFailure=no")
        .start();
    tunnel.wait_for_log(
        &format!("Warning: remote port forwarding failed for listen port {fixed}"),
        Duration::from_secs(20),
    );
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        echo_round_trip(ok_port, &data).expect("echo through the allowed forward"),
        data
    );
    assert!(
        !port_listening(fixed),
        "sshd listens on {fixed} for the forwarding-only key"
    );
}
