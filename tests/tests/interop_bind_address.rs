//! How the connection to the bastion is made, against the real sshd: `ConnectionAttempts`
//! (a bastion that starts listening late is reached, as by ssh) and `-b` / `BindAddress`, the
//! source address a bastion sees, which is
//! what a customer's firewall allows. Loopback has all of 127.0.0.0/8, so the lab's sshd
//! stands for a bastion that admits one platform address (`AllowUsers *@127.0.0.2`): refused
//! from the default source, admitted from `-b 127.0.0.2` (and so with OpenSSH's `ssh -b`,
//! run on the same lab as the reference), from `forwarder serve` with the option in its
//! file, and through a jump host, where the first connection (to the jump host) is the one
//! bound. An address this machine does not have is a clear error, not a connection from
//! elsewhere. `-B` / `BindInterface` connects from the named interface's address (loopback's
//! here), beside `ssh -B`; `-b` wins over it, and a missing interface is a clear error.

use std::fs;
use std::path::PathBuf;

use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Sshd, TunnelBuilder, UserKey, echo_round_trip,
};

/// The only source address the "bastion" admits.
const ALLOWED: &str = "127.0.0.2";

/// An sshd that admits logins only from [`ALLOWED`].
fn allowlisting_sshd(key: &UserKey) -> Sshd {
    Sshd::builder()
        .config(format!("AllowUsers *@{ALLOWED}"))
        .authorize(key)
        .start()
}

fn assert_echo(port: u16, what: &str, log: &dyn Fn() -> String) {
    let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let back = echo_round_trip(port, &sent)
        .unwrap_or_else(|e| panic!("{what}: the echo failed: {e}\n{}", log()));
    assert!(back == sent, "{what}: the echo came back different");
}

#[test]
fn a_bastion_that_admits_one_source_address_is_reached_from_it_with_b() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = allowlisting_sshd(&key);
    let echo = EchoServer::start();

    // From the system's choice (127.0.0.1): refused, and forwarder gives up as ssh does.
    let mut refused = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .spawn();
    refused.expect_failure();
    assert!(
        sshd.log()
            .contains("not allowed because not listed in AllowUsers"),
        "{}",
        sshd.log()
    );

    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        let tunnel = TunnelBuilder::new(kind, &sshd, &key)
            .forward_to(echo.port())
            .arg("-b")
            .arg(ALLOWED)
            .start();
        assert_echo(tunnel.local_port(), kind.name(), &|| tunnel.log());
    }
    // The same through the option, as ssh_config or a fleet file gives it.
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .option(&format!("BindAddress={ALLOWED}"))
        .start();
    assert_echo(tunnel.local_port(), "-o BindAddress", &|| tunnel.log());
    let log = sshd.log();
    assert_eq!(
        log.matches(&format!("Connection from {ALLOWED} port"))
            .count(),
        3,
        "{log}"
    );
}

#[test]
fn a_fleet_tunnel_connects_from_the_bind_address_of_its_options() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = allowlisting_sshd(&key);
    let echo = EchoServer::start();
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .option(&format!("BindAddress={ALLOWED}"))
        .as_fleet()
        .start();
    assert_echo(tunnel.local_port(), "forwarder serve", &|| tunnel.log());
    assert!(
        sshd.log()
            .contains(&format!("Connection from {ALLOWED} port")),
        "{}",
        sshd.log()
    );
}

#[test]
fn through_a_jump_host_the_connection_to_the_jump_host_is_the_one_bound() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let jump = allowlisting_sshd(&key);
    let target = Sshd::start(&key);
    let echo = EchoServer::start();
    let dir = tempfile::Builder::new()
        .prefix("bind-address-")
        .tempdir()
        .expect("temp dir");
    let kh: PathBuf = dir.path().join("known_hosts");
    fs::write(
        &kh,
        format!("{}{}", jump.known_hosts(), target.known_hosts()),
    )
    .expect("write known_hosts");
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &target, &key)
        .known_hosts(&kh)
        .option(&format!(
            "ProxyJump={}@127.0.0.1:{}",
            jump.user(),
            jump.port()
        ))
        .arg("-b")
        .arg(ALLOWED)
        .forward_to(echo.port())
        .start();
    assert_echo(tunnel.local_port(), "through the jump host", &|| {
        tunnel.log()
    });
    assert!(
        jump.log()
            .contains(&format!("Connection from {ALLOWED} port")),
        "{}",
        jump.log()
    );
    // The destination is reached from the jump host's side, which -b does not choose.
    assert!(
        target.log().contains("Connection from 127.0.0.1 port"),
        "{}",
        target.log()
    );
}

#[test]
fn an_address_this_machine_does_not_have_is_a_clear_error() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    // TEST-NET-1: never an address of this machine. (sshd's log may already show the lab's
    // own check that it listens.)
    let before = sshd.log().matches("Connection from").count();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .arg("-b")
        .arg("192.0.2.1")
        .spawn();
    let log = tunnel.expect_failure();
    assert!(
        log.contains(&format!("connect to host 127.0.0.1 port {}", sshd.port()))
            && log.contains("bind 192.0.2.1: Cannot assign requested address"),
        "{log}"
    );
    assert_eq!(
        sshd.log().matches("Connection from").count(),
        before,
        "no connection reached sshd:\n{}",
        sshd.log()
    );
    // An IPv6 source for an IPv4 bastion.
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .option("BindAddress=::1")
        .spawn();
    let log = tunnel.expect_failure();
    assert!(log.contains("BindAddress ::1 has no IPv4 address"), "{log}");
}

// `-B` / `BindInterface`: the connection comes from the interface's address. The lab's
// interface is loopback, whose one IPv4 address is 127.0.0.1, so a bastion that admits only
// 127.0.0.2 refuses `-B lo` (ssh's and ours alike), admits it when `-b 127.0.0.2` is given
// too (BindAddress wins), and a bastion that admits only 127.0.0.1 admits `-B lo` and
// `-o BindInterface=lo`.
#[test]
fn bind_interface_connects_from_the_interface_s_address_and_bind_address_wins() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let only_2 = allowlisting_sshd(&key);
    let only_1 = Sshd::builder()
        .config("AllowUsers *@127.0.0.1")
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        let mut refused = TunnelBuilder::new(kind, &only_2, &key)
            .forward_to(echo.port())
            .option("BatchMode=yes")
            .arg("-B")
            .arg("lo")
            .spawn();
        refused.expect_failure();
        let tunnel = TunnelBuilder::new(kind, &only_2, &key)
            .forward_to(echo.port())
            .arg("-B")
            .arg("lo")
            .arg("-b")
            .arg(ALLOWED)
            .start();
        assert_echo(tunnel.local_port(), kind.name(), &|| tunnel.log());
        let tunnel = TunnelBuilder::new(kind, &only_1, &key)
            .forward_to(echo.port())
            .arg("-B")
            .arg("lo")
            .start();
        assert_echo(tunnel.local_port(), kind.name(), &|| tunnel.log());
    }
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &only_1, &key)
        .forward_to(echo.port())
        .option("BindInterface=lo")
        .start();
    assert_echo(tunnel.local_port(), "-o BindInterface", &|| tunnel.log());
    let refusals = only_2
        .log()
        .matches("not allowed because not listed in AllowUsers")
        .count();
    assert_eq!(refusals, 2, "{}", only_2.log());
    assert_eq!(
        only_2
            .log()
            .matches(&format!("Connection from {ALLOWED} port"))
            .count(),
        2,
        "{}",
        only_2.log()
    );
}

// An interface this machine does not have: ssh and forwarder both exit 255 without
// connecting; forwarder names the interfaces there are.
#[test]
fn an_interface_this_machine_does_not_have_is_a_clear_error() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let before = sshd.log().matches("Connection from").count();
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        let mut tunnel = TunnelBuilder::new(kind, &sshd, &key)
            .forward_to(echo.port())
            .arg("-B")
            .arg("nosuch0")
            .spawn();
        let log = tunnel.expect_failure();
        if kind == ClientKind::Forwarder {
            assert!(
                log.contains("BindInterface nosuch0 does not exist (this machine has ")
                    && log.contains("lo"),
                "{log}"
            );
        }
    }
    assert_eq!(
        sshd.log().matches("Connection from").count(),
        before,
        "no connection reached sshd:\n{}",
        sshd.log()
    );
}

// ConnectionAttempts: sshd comes up about two seconds after the client starts; with ten
// tries a second apart the first session is made, as ssh makes it; with the default single
// try the client gives up at once, as ssh does.
#[test]
fn connection_attempts_reach_a_bastion_that_listens_late() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let mut sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    sshd.stop();
    let mut fails = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .spawn();
    let log = fails.expect_failure();
    assert!(log.contains("Connection refused"), "{log}");
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        sshd.stop();
        let mut tunnel = TunnelBuilder::new(kind, &sshd, &key)
            .forward_to(echo.port())
            .option("ConnectionAttempts=10")
            .spawn();
        std::thread::sleep(std::time::Duration::from_secs(2));
        assert!(
            tunnel.exited().is_none(),
            "{kind} gave up before its tries ran out:\n{}",
            tunnel.log()
        );
        sshd.restart();
        tunnel.wait_ready(std::time::Duration::from_secs(30));
        assert_echo(tunnel.local_port(), kind.name(), &|| tunnel.log());
    }
}
