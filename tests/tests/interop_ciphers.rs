//! AES-CTR with every MAC that both the forwarder and sshd 9.2 implement, delayed zlib
//! compression, and the ECDSA P-384/P-521 and `ssh-rsa` (SHA-1) host keys, against the real
//! OpenSSH sshd.
//!
//! Every case carries a few MiB each way (a download from a source server and an upload to a
//! sink, both checked by SHA-256) while sshd rekeys every MiB (`RekeyLimit 1M`), and reads what
//! was negotiated from both ends: sshd's `kex: client->server cipher: X MAC: Y compression: Z`
//! lines and the forwarder's `-v` line. What sshd 9.2 cannot do is tested in memory instead
//! (`ssh-transport`'s tests): plain `zlib` compression, which sshd stopped offering in 7.x
//! (it offers only `none,zlib@openssh.com`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread;
use std::time::Duration;

use ssh_interop_tests::process::{tail, wait_until};
use ssh_interop_tests::{
    ClientKind, CountingProxy, EchoServer, KeyKind, Pattern, SinkServer, SourceServer, Sshd,
    TunnelBuilder, UserKey, download, echo_round_trip, upload,
};

const CTR: [&str; 3] = ["aes128-ctr", "aes192-ctr", "aes256-ctr"];
/// Every MAC the forwarder implements; sshd 9.2 offers all of them by default (`ssh -Q mac`).
/// The SHA-1 ones the forwarder offers only when asked, as here.
const MACS: [&str; 6] = [
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1-etm@openssh.com",
    "hmac-sha1",
];
const MIB: u64 = 1024 * 1024;
/// Bytes each way per case: three rekeys or more at sshd's `RekeyLimit 1M`.
const TRANSFER: u64 = 3 * MIB + 4099;

/// sshd's log lines for the rekeys it completed (the first exchange logs no such line).
fn sshd_rekeys(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("debug1: ssh_set_newkeys: rekeying in,"))
        .count()
}

/// The forwarder's `negotiated=` line, as `-v` logs it after each key exchange.
fn negotiated_line(tunnel: &ssh_interop_tests::Tunnel) -> String {
    let log = tunnel.wait_for_log("negotiated=", Duration::from_secs(10));
    log.lines()
        .find(|l| l.contains("negotiated="))
        .unwrap_or_default()
        .to_owned()
}

/// One forwarder run: what it is given and what sshd must log for it.
struct Case {
    name: String,
    options: Vec<String>,
    /// `kex: client->server cipher: ... compression: ...` as sshd logs it, both directions.
    expect_sshd: Vec<String>,
    /// Substrings of the forwarder's `negotiated=` line.
    expect_forwarder: Vec<String>,
}

impl Case {
    fn ctr(cipher: &str, mac: &str) -> Case {
        Case {
            name: format!("{cipher} with {mac}"),
            options: vec![format!("Ciphers={cipher}"), format!("MACs={mac}")],
            expect_sshd: ["client->server", "server->client"]
                .iter()
                .map(|dir| format!("kex: {dir} cipher: {cipher} MAC: {mac} compression: none"))
                .collect(),
            expect_forwarder: vec![format!("cipher {cipher}, MAC {mac}")],
        }
    }

    /// Runs the case against `sshd` (which must rekey every MiB), failing with both logs.
    fn run(&self, sshd: &Sshd, key: &UserKey) {
        let log_start = sshd.log().len();
        let source = SourceServer::start(TRANSFER);
        let sink = SinkServer::start();
        let mut builder = TunnelBuilder::new(ClientKind::Forwarder, sshd, key)
            .verbose()
            .forward_to(source.port())
            .forward_to(sink.port());
        for option in &self.options {
            builder = builder.option(option);
        }
        let mut tunnel = builder.start();
        let diagnose = |tunnel: &ssh_interop_tests::Tunnel| {
            format!(
                "forwarder log ends with:\n{}\nsshd log for this connection ends with:\n{}",
                tail(&tunnel.log(), 30),
                tail(sshd.log().get(log_start..).unwrap_or_default(), 40)
            )
        };

        let (down_port, up_port) = (tunnel.local_ports()[0], tunnel.local_ports()[1]);
        let down = thread::spawn(move || download(down_port, true));
        let up = thread::spawn(move || upload(up_port, TRANSFER));
        let down = down.join().expect("download thread");
        let up = up.join().expect("upload thread");
        let expected = Pattern::get().sha256(TRANSFER);
        let down = down.unwrap_or_else(|e| panic!("download failed: {e}\n{}", diagnose(&tunnel)));
        let up = up.unwrap_or_else(|e| panic!("upload failed: {e}\n{}", diagnose(&tunnel)));
        assert_eq!(
            (down.bytes, down.sha256.as_deref()),
            (TRANSFER, Some(expected.as_str())),
            "download through the tunnel\n{}",
            diagnose(&tunnel)
        );
        assert_eq!(
            (up.bytes, up.sha256.as_deref()),
            (TRANSFER, Some(expected.as_str())),
            "upload through the tunnel, as the sink saw it\n{}",
            diagnose(&tunnel)
        );

        let ours = sshd.wait_for_log_after(
            log_start,
            &format!("Accepted publickey for {}", sshd.user()),
            Duration::from_secs(10),
        );
        for expected in &self.expect_sshd {
            assert!(
                ours.lines().any(|l| l.contains(expected.as_str())),
                "sshd did not log {expected:?}\n{}",
                diagnose(&tunnel)
            );
        }
        let line = negotiated_line(&tunnel);
        for expected in &self.expect_forwarder {
            assert!(
                line.contains(expected.as_str()),
                "the forwarder negotiated something else: {line}"
            );
        }
        // sshd rekeyed during the transfer, and the forwarder followed every time.
        let rekeys = wait_until(
            Duration::from_secs(10),
            "sshd logs the rekeys of this connection",
            || {
                let n = sshd_rekeys(sshd.log().get(log_start..).unwrap_or_default());
                (n >= 3).then_some(n)
            },
            || diagnose(&tunnel),
        );
        assert!(rekeys >= 3);
        assert_eq!(
            tunnel.exited(),
            None,
            "the forwarder must still run\n{}",
            diagnose(&tunnel)
        );
    }
}

/// Runs every case (all of them, even after a failure), then fails listing each that failed.
fn run_all(sshd: &Sshd, key: &UserKey, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| case.run(sshd, key))) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("--- {}:\n{why}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn interop_ciphers_every_ctr_cipher_with_every_mac_both_ways_with_rekeys() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .config("RekeyLimit 1M")
        .authorize(&key)
        .start();
    let cases: Vec<Case> = CTR
        .iter()
        .flat_map(|c| MACS.iter().map(move |m| Case::ctr(c, m)))
        .collect();
    run_all(&sshd, &key, &cases);
}

#[test]
fn interop_ciphers_sha1_macs_are_never_offered_unless_asked_for() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .config("Ciphers aes128-ctr")
        .config("MACs hmac-sha1,hmac-sha1-etm@openssh.com")
        .authorize(&key)
        .start();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(1)
        .spawn();
    let log = tunnel.expect_failure();
    assert!(
        log.contains("no MAC client to server algorithm in common")
            && log.contains("hmac-sha2-256-etm@openssh.com")
            && log.contains("the server offers hmac-sha1,hmac-sha1-etm@openssh.com")
            && !log.contains("we offer hmac-sha1"),
        "the error names both lists and we offered no SHA-1:\n{log}"
    );
}

/// Delayed compression (`zlib@openssh.com`, started after authentication) with a CTR cipher
/// and with an AEAD one, compressible data both ways through an echo while sshd rekeys. At the
/// end sshd's own statistics must show that what it sent and received was compressed.
#[test]
fn interop_ciphers_delayed_compression_with_rekeys_both_for_sshd_default_and_compression_yes() {
    let key = UserKey::generate(KeyKind::Ed25519);
    // sshd 9.2's default is `Compression delayed`; `yes` means the same there.
    for sshd_setting in [None, Some("Compression yes")] {
        let mut builder = Sshd::builder().config("RekeyLimit 128K").authorize(&key);
        if let Some(line) = sshd_setting {
            builder = builder.config(line);
        }
        let sshd = builder.start();
        let echo = EchoServer::start();
        for (cipher, mac) in [
            ("aes256-ctr", Some("hmac-sha2-256-etm@openssh.com")),
            ("chacha20-poly1305@openssh.com", None),
        ] {
            let what = format!("{cipher} with sshd {sshd_setting:?}");
            let log_start = sshd.log().len();
            // Through a proxy that counts what crosses the wire, trusted under its port.
            let proxy = CountingProxy::start(sshd.port());
            let known_hosts = sshd.dir().join(format!("known_hosts_{}", proxy.port()));
            std::fs::write(
                &known_hosts,
                sshd.known_hosts().replace(
                    &format!("]:{} ", sshd.port()),
                    &format!("]:{} ", proxy.port()),
                ),
            )
            .expect("write known_hosts");
            let mut builder = TunnelBuilder::to_port(
                ClientKind::Forwarder,
                proxy.port(),
                sshd.user(),
                &key,
                &known_hosts,
            )
            .verbose()
            .cipher(cipher)
            .option("Compression=yes")
            .forward_to(echo.port());
            if let Some(mac) = mac {
                builder = builder.option(&format!("MACs={mac}"));
            }
            let mut tunnel = builder.start();
            // Rows of a table: compressible, as database traffic often is.
            let data: Vec<u8> = (0..120_000u32)
                .flat_map(|i| {
                    format!("{i:08},customer {},2024-01-{:02}\n", i % 997, i % 28).into_bytes()
                })
                .collect();
            let back = echo_round_trip(tunnel.local_port(), &data).unwrap_or_else(|e| {
                panic!("{what}: echo failed: {e}\n{}", tail(&tunnel.log(), 30))
            });
            assert!(back == data, "{what}: the echo came back different");

            let ours = sshd.wait_for_log_after(
                log_start,
                "Enabling compression at level 6",
                Duration::from_secs(10),
            );
            let mac_shown = mac.unwrap_or("<implicit>");
            for dir in ["client->server", "server->client"] {
                let expected = format!(
                    "kex: {dir} cipher: {cipher} MAC: {mac_shown} compression: zlib@openssh.com"
                );
                assert!(
                    ours.contains(&expected),
                    "{what}: sshd did not log {expected:?}:\n{ours}"
                );
            }
            // Compression starts only after authentication succeeded.
            let accepted = ours
                .find("Accepted publickey")
                .expect("sshd logs the login");
            let enabled = ours.find("Enabling compression").expect("and compression");
            assert!(
                accepted < enabled,
                "{what}: compression started before authentication"
            );
            let line = negotiated_line(&tunnel);
            assert!(
                line.contains("compression zlib@openssh.com"),
                "{what}: {line}"
            );
            tunnel.terminate(Duration::from_secs(10));
            let log = sshd.log()[log_start..].to_owned();
            assert!(
                sshd_rekeys(&log) >= 2,
                "{what}: sshd did not rekey during the transfer:\n{}",
                tail(&log, 30)
            );
            // Both directions went compressed: what crossed the wire (with the handshake,
            // the rekeys and the MACs) is well under a third of what the echo carried.
            let (up, down) = proxy.bytes();
            let raw = data.len() as u64;
            for (direction, wire) in [("upload", up), ("download", down)] {
                assert!(
                    wire * 3 < raw,
                    "{what}: {direction}: {wire} bytes on the wire for {raw} bytes of data"
                );
            }
        }
    }
}

#[test]
fn interop_ciphers_compression_refused_by_sshd_falls_back_to_none() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .config("RekeyLimit 1M")
        .config("Compression no")
        .authorize(&key)
        .start();
    let mut case = Case::ctr("aes128-ctr", "hmac-sha2-512");
    case.options.push("Compression=yes".into());
    case.run(&sshd, &key);
    assert!(!sshd.log().contains("Enabling compression"));
}

#[test]
fn interop_ciphers_ecdsa_p384_and_p521_host_keys_with_ctr_and_rekeys() {
    let key = UserKey::generate(KeyKind::Ed25519);
    for (kind, alg) in [
        (KeyKind::EcdsaP384, "ecdsa-sha2-nistp384"),
        (KeyKind::EcdsaP521, "ecdsa-sha2-nistp521"),
    ] {
        let sshd = Sshd::builder()
            .host_keys(&[kind])
            .config("RekeyLimit 1M")
            .authorize(&key)
            .start();
        let mut case = Case::ctr("aes256-ctr", "hmac-sha2-512-etm@openssh.com");
        case.name = format!("{alg} host key");
        case.options.push(format!("HostKeyAlgorithms={alg}"));
        case.expect_sshd
            .push(format!("kex: host key algorithm: {alg}"));
        case.expect_forwarder.push(format!("host key {alg}"));
        case.run(&sshd, &key);
    }
}

/// The NIST curves are in the default list (after the others), so a bastion with only a
/// P-521 host key is reached without any option.
#[test]
fn interop_ciphers_p521_only_bastion_is_reached_with_the_defaults() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .host_keys(&[KeyKind::EcdsaP521])
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    let log_start = sshd.log().len();
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .start();
    let data = Pattern::get().chunk(77, 100_000).to_vec();
    assert!(echo_round_trip(tunnel.local_port(), &data).expect("echo") == data);
    let ours = sshd.wait_for_log_after(log_start, "Accepted publickey", Duration::from_secs(10));
    assert!(
        ours.contains("kex: host key algorithm: ecdsa-sha2-nistp521"),
        "{ours}"
    );
}

/// `ssh-rsa` signs with SHA-1: the forwarder uses it only when asked, and then it works, rekeys
/// included (each rekey checks a fresh SHA-1 signature).
#[test]
fn interop_ciphers_ssh_rsa_host_key_only_when_asked_for() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .host_keys(&[KeyKind::Rsa2048])
        .config("HostKeyAlgorithms +ssh-rsa")
        .config("RekeyLimit 1M")
        .authorize(&key)
        .start();
    let mut case = Case::ctr("aes128-ctr", "hmac-sha2-256-etm@openssh.com");
    case.name = "ssh-rsa host key".into();
    case.options.push("HostKeyAlgorithms=ssh-rsa".into());
    case.expect_sshd
        .push("kex: host key algorithm: ssh-rsa".into());
    case.expect_forwarder.push("host key ssh-rsa,".into());
    case.run(&sshd, &key);

    // Unasked, the same server is reached with rsa-sha2-512, never SHA-1.
    let mut case = Case::ctr("aes128-ctr", "hmac-sha2-256-etm@openssh.com");
    case.expect_sshd
        .push("kex: host key algorithm: rsa-sha2-512".into());
    case.expect_forwarder.push("host key rsa-sha2-512".into());
    case.run(&sshd, &key);

    // And a server that offers nothing but ssh-rsa is refused, naming both lists.
    let sha1_only = Sshd::builder()
        .host_keys(&[KeyKind::Rsa2048])
        .config("HostKeyAlgorithms ssh-rsa")
        .authorize(&key)
        .start();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sha1_only, &key)
        .forward_to(1)
        .spawn();
    let log = tunnel.expect_failure();
    assert!(
        log.contains("no host key algorithm in common")
            && log.contains("rsa-sha2-512")
            && log.contains("the server offers ssh-rsa"),
        "{log}"
    );
}
