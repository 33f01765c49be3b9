//! sshd's pre-login banner (`Banner` in sshd_config, SSH_MSG_USERAUTH_BANNER): shown on
//! stderr with control characters made harmless, and not at all with `-q`, as in OpenSSH.

use std::time::Duration;

use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Sshd, TunnelBuilder, UserKey, echo_round_trip,
};

#[test]
fn interop_banner_is_shown_without_control_characters_and_hidden_by_q() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let dir = tempfile::tempdir().expect("temp dir");
    let banner = dir.path().join("banner");
    // A terminal escape that would turn the screen red, a bell, and a carriage return that
    // would let the rest overwrite what came before.
    std::fs::write(
        &banner,
        "Authorized use only.\n\x1b[31mRED\x1b[0m ring\x07 over\rwrite\nLast line\n",
    )
    .expect("write banner");
    let sshd = Sshd::builder()
        .config(format!("Banner {}", banner.display()))
        .authorize(&key)
        .start();
    let echo = EchoServer::start();

    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(tunnel.local_port(), b"after the banner").expect("echo"),
        b"after the banner"
    );
    let log = tunnel.wait_for_log("Last line", Duration::from_secs(10));
    assert!(log.contains("Authorized use only.\n"), "{log}");
    for raw in ['\x1b', '\x07', '\r'] {
        assert!(
            !log.contains(raw),
            "a raw {raw:?} from the server reached the terminal:\n{log:?}"
        );
    }
    assert!(
        log.contains("\\x1b[31mRED"),
        "the escape is shown escaped:\n{log}"
    );
    drop(tunnel);

    let quiet = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .option("LogLevel=QUIET")
        .forward_to(echo.port())
        .start();
    assert_eq!(
        echo_round_trip(quiet.local_port(), b"quiet").expect("echo"),
        b"quiet"
    );
    let log = quiet.log();
    assert!(
        !log.contains("Authorized use only"),
        "-q shows no banner:\n{log}"
    );
}
