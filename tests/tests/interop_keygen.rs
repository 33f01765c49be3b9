//! `forwarder keygen` against the real sshd: the printed authorized_keys line lets the key
//! forward to exactly the named destination, refuses any other, and refuses a shell.

use std::process::Command;
use std::time::Duration;

use ssh_interop_tests::client::{ClientKind, TunnelBuilder, forwarder_binary, openssh_binary};
use ssh_interop_tests::keys::{KeyKind, UserKey};
use ssh_interop_tests::net::free_port;
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
