//! Every cipher, key exchange and host key algorithm the forwarder offers, negotiated one at a
//! time against the real OpenSSH sshd, each carrying a few MiB both ways while sshd's
//! `RekeyLimit 1M` forces key exchanges with the same algorithms during the transfer.
//!
//! One sshd per host key type serves all of that type's cases. Each case pins one algorithm
//! of each kind with `-o`, trusts a known_hosts file holding only that server's one key, and
//! checks the choice from both ends: the forwarder's `-v` line and sshd's `kex:` lines. All
//! cases run even when one fails, so a failure report shows the whole matrix.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use ring::digest::{SHA256, digest};
use ssh_interop_tests::process::wait_until;
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Pattern, Sshd, TunnelBuilder, UserKey, echo_round_trip,
};

const CIPHERS: [&str; 3] = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
];
const KEX: [&str; 2] = ["curve25519-sha256", "curve25519-sha256@libssh.org"];
/// Bytes sent through the echo server per case (as many come back).
const TRANSFER: usize = 3 * 1024 * 1024 + 17;

fn hex_sha256(data: &[u8]) -> String {
    digest(&SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Case<'a> {
    kex: &'a str,
    host_key: &'a str,
    cipher: &'a str,
    /// Where this case's data starts in the pattern, so that no case can pass on the bytes
    /// of another.
    offset: u64,
}

impl Case<'_> {
    fn name(&self) -> String {
        format!(
            "kex {}, host key {}, cipher {}",
            self.kex, self.host_key, self.cipher
        )
    }

    fn run(&self, sshd: &Sshd, key: &UserKey, echo: &EchoServer) {
        let what = self.name();
        let log_start = sshd.log().len();
        let tunnel = TunnelBuilder::new(ClientKind::Forwarder, sshd, key)
            .verbose()
            .cipher(self.cipher)
            .option(&format!("KexAlgorithms={}", self.kex))
            .option(&format!("HostKeyAlgorithms={}", self.host_key))
            .forward_to(echo.port())
            .start();
        let diagnose = || {
            format!(
                "forwarder log:\n{}\nsshd log for this connection:\n{}",
                tunnel.log(),
                sshd.log().get(log_start..).unwrap_or_default()
            )
        };

        let sent = Pattern::get().bytes_at(self.offset, TRANSFER);
        let back = echo_round_trip(tunnel.local_port(), &sent)
            .unwrap_or_else(|e| panic!("echo through the tunnel failed: {e}\n{}", diagnose()));
        assert_eq!(back.len(), sent.len(), "bytes echoed\n{}", diagnose());
        assert_eq!(hex_sha256(&back), hex_sha256(&sent), "SHA-256 of the echo");

        // The forwarder's view: one line naming all three, and the same cipher both ways (a
        // different server-to-client cipher would follow a '/').
        let log = tunnel.wait_for_log("negotiated=", Duration::from_secs(10));
        let line = log
            .lines()
            .find(|l| l.contains("negotiated="))
            .unwrap_or_default();
        let rest = line
            .split_once(&format!("negotiated={what}"))
            .unwrap_or_else(|| panic!("the forwarder negotiated something else: {line}"))
            .1;
        assert!(
            rest.is_empty() || rest.starts_with(','),
            "the forwarder negotiated something else: {line}"
        );

        // sshd's view of the same connection.
        let ours = sshd.wait_for_log_after(
            log_start,
            &format!("Accepted publickey for {}", sshd.user()),
            Duration::from_secs(10),
        );
        for expected in [
            format!("kex: algorithm: {} ", self.kex),
            format!("kex: host key algorithm: {} ", self.host_key),
            format!("kex: client->server cipher: {} ", self.cipher),
            format!("kex: server->client cipher: {} ", self.cipher),
        ] {
            assert!(
                ours.lines().any(|l| format!("{l} ").contains(&expected)),
                "sshd did not log {expected:?}; its log for this connection:\n{ours}"
            );
        }
        // Rekeys during the transfer (the first exchange logs no "rekeying in" line). sshd's
        // session process logs through its monitor, so the lines may come a little later.
        let rekeys = || {
            sshd.log()
                .get(log_start..)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("debug1: ssh_set_newkeys: rekeying in,"))
                .count()
        };
        wait_until(
            Duration::from_secs(10),
            "two rekeys in sshd's log for this connection",
            || (rekeys() >= 2).then_some(()),
            diagnose,
        );
    }
}

/// Runs every cipher x kex case for each of `host_key_algorithms` against one sshd whose only
/// host key is of `kind`, then fails listing every case that failed.
fn run_matrix(kind: KeyKind, host_key_algorithms: &[&str]) {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .host_keys(&[kind])
        .config("RekeyLimit 1M")
        .authorize(&key)
        .start();
    let known_hosts = fs::read_to_string(sshd.known_hosts_path()).expect("known_hosts");
    assert_eq!(
        known_hosts.lines().count(),
        1,
        "known_hosts must hold only the one host key:\n{known_hosts}"
    );
    assert!(known_hosts.contains(kind.ssh_name()), "{known_hosts}");
    let echo = EchoServer::start();

    let mut cases = Vec::new();
    for &host_key in host_key_algorithms {
        for cipher in CIPHERS {
            for kex in KEX {
                cases.push(Case {
                    kex,
                    host_key,
                    cipher,
                    offset: 7919 * cases.len() as u64,
                });
            }
        }
    }
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| case.run(&sshd, &key, &echo))) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("--- {}:\n{why}", case.name()));
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
fn interop_algorithms_ed25519_host_key_every_cipher_and_kex() {
    run_matrix(KeyKind::Ed25519, &["ssh-ed25519"]);
}

#[test]
fn interop_algorithms_rsa_host_key_both_sha2_signatures_every_cipher_and_kex() {
    run_matrix(KeyKind::Rsa2048, &["rsa-sha2-512", "rsa-sha2-256"]);
}

#[test]
fn interop_algorithms_ecdsa_p256_host_key_every_cipher_and_kex() {
    run_matrix(KeyKind::EcdsaP256, &["ecdsa-sha2-nistp256"]);
}
