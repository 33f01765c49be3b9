//! Every key exchange method the forwarder offers that the real sshd also supports, forced
//! one at a time with `-o KexAlgorithms=`, each carrying a few MiB both ways (checked by
//! SHA-256) while sshd's `RekeyLimit 1M` makes it rekey with the same method mid-transfer.
//!
//! The method is checked from both ends: the forwarder's `-v` "negotiated=" line and sshd's
//! DEBUG1 "kex: algorithm:" lines, one per key exchange. Methods this sshd does not list in
//! `ssh -Q kex` (mlkem768x25519-sha256 before OpenSSH 9.9) are reported, and are covered by
//! the in-memory tests and published vectors of ssh-transport instead; any method sshd does
//! list must pass. All methods run even when one fails, so a failure report shows them all.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::thread;
use std::time::Duration;

use ssh_interop_tests::{
    ClientKind, KeyKind, Pattern, SinkServer, SourceServer, Sshd, TunnelBuilder, UserKey, download,
    forwarder_binary, upload,
};

const MIB: u64 = 1024 * 1024;
/// Bytes each way per method: enough for several 1 MiB rekeys in each direction.
const TRANSFER: u64 = 4 * MIB + 4099;

/// The key exchange methods the local OpenSSH supports (`ssh -Q kex`; sshd is built from the
/// same source package).
fn openssh_kex_methods() -> Vec<String> {
    query(Command::new("ssh"))
}

/// The methods the forwarder offers, in its default order (`forwarder -Q kex`).
fn forwarder_kex_methods() -> Vec<String> {
    query(Command::new(forwarder_binary()))
}

fn query(mut command: Command) -> Vec<String> {
    let out = command
        .args(["-Q", "kex"])
        .output()
        .unwrap_or_else(|e| panic!("run {command:?} -Q kex: {e}"));
    assert!(out.status.success(), "{command:?} -Q kex failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn tail(log: &str) -> String {
    ssh_interop_tests::process::tail(log, 40)
}

fn run_one(kex: &str, sshd: &Sshd, key: &UserKey, source: &SourceServer, sink: &SinkServer) {
    let log_start = sshd.log().len();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, sshd, key)
        .verbose()
        .option(&format!("KexAlgorithms={kex}"))
        .forward_to(source.port())
        .forward_to(sink.port())
        .start();
    let diagnose = |tunnel: &ssh_interop_tests::Tunnel| {
        format!(
            "forwarder log ends with:\n{}\nsshd log for this connection ends with:\n{}",
            tail(&tunnel.log()),
            tail(sshd.log().get(log_start..).unwrap_or_default())
        )
    };
    let (down_port, up_port) = (tunnel.local_ports()[0], tunnel.local_ports()[1]);
    let down = thread::spawn(move || download(down_port, true));
    let up = thread::spawn(move || upload(up_port, TRANSFER));
    let down = down.join().expect("download thread");
    let up = up.join().expect("upload thread");
    let (down, up) = match (down, up) {
        (Ok(d), Ok(u)) => (d, u),
        (d, u) => panic!(
            "transfer failed: download {:?}, upload {:?}\n{}",
            d.err(),
            u.err(),
            diagnose(&tunnel)
        ),
    };
    let expected = Pattern::get().sha256(TRANSFER);
    assert_eq!(
        down.bytes,
        TRANSFER,
        "bytes downloaded\n{}",
        diagnose(&tunnel)
    );
    assert_eq!(
        down.sha256.as_deref(),
        Some(expected.as_str()),
        "download SHA-256"
    );
    assert_eq!(up.bytes, TRANSFER, "bytes the sink received");
    assert_eq!(
        up.sha256.as_deref(),
        Some(expected.as_str()),
        "upload SHA-256"
    );
    assert_eq!(
        tunnel.exited(),
        None,
        "the forwarder must still run\n{}",
        diagnose(&tunnel)
    );

    // The forwarder's view: the method it negotiated.
    let log = tunnel.wait_for_log("negotiated=", Duration::from_secs(10));
    let line = log
        .lines()
        .find(|l| l.contains("negotiated="))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("negotiated=kex {kex},")),
        "the forwarder negotiated something else: {line}"
    );

    // sshd's view: every key exchange of this connection, the first and the rekeys, used it.
    sshd.wait_for_log_after(
        log_start,
        &format!("Accepted publickey for {}", sshd.user()),
        Duration::from_secs(10),
    );
    let ours = sshd.log().get(log_start..).unwrap_or_default().to_owned();
    let methods: Vec<&str> = ours
        .lines()
        .filter_map(|l| l.split_once("kex: algorithm: "))
        // The first exchange runs in sshd's unprivileged child, which appends " [preauth]".
        .filter_map(|(_, m)| m.split_whitespace().next())
        .collect();
    let rekeys = ours
        .lines()
        .filter(|l| l.contains("debug1: ssh_set_newkeys: rekeying in,"))
        .count();
    assert!(
        rekeys >= 2,
        "sshd logged {rekeys} rekeys for {kex} during {TRANSFER} bytes each way at RekeyLimit \
         1M\n{}",
        diagnose(&tunnel)
    );
    assert!(
        methods.len() > rekeys && methods.iter().all(|m| *m == kex),
        "sshd's key exchanges for this connection: {methods:?} ({rekeys} rekeys), expected \
         all {kex}\n{}",
        diagnose(&tunnel)
    );
    eprintln!(
        "{kex}: {} MiB each way, {} key exchanges, SHA-256 checked",
        TRANSFER / MIB,
        methods.len()
    );
}

#[test]
fn interop_kex_every_method_sshd_supports_with_a_transfer_and_rekeys() {
    let supported = openssh_kex_methods();
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .config("RekeyLimit 1M")
        .authorize(&key)
        .start();
    let source = SourceServer::start(TRANSFER);
    let sink = SinkServer::start();

    let mut tested = Vec::new();
    let mut skipped = Vec::new();
    let mut failures = Vec::new();
    let ours = forwarder_kex_methods();
    assert!(
        ours.iter().any(|k| k == "curve25519-sha256"),
        "forwarder -Q kex: {ours:?}"
    );
    for kex in ours.iter().map(String::as_str) {
        if !supported.iter().any(|s| s == kex) {
            skipped.push(kex);
            continue;
        }
        tested.push(kex);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| {
            run_one(kex, &sshd, &key, &source, &sink)
        })) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("--- {kex}:\n{why}"));
        }
    }
    eprintln!("tested against sshd: {tested:?}; not supported by this sshd: {skipped:?}");
    // Only mlkem768x25519-sha256 may be missing, and only from an sshd older than 9.9.
    assert!(
        skipped.iter().all(|k| *k == "mlkem768x25519-sha256"),
        "this sshd lacks methods it should have: {skipped:?}"
    );
    assert!(tested.len() >= 10, "only {} methods tested", tested.len());
    assert!(
        failures.is_empty(),
        "{} of {} methods failed:\n{}",
        failures.len(),
        tested.len(),
        failures.join("\n")
    );
}
