//! Rekeying mid-transfer, started by sshd (`RekeyLimit 1M` in sshd_config) and by the
//! forwarder (`-o RekeyLimit=1M`), with every byte checked by SHA-256 on the far side.

use std::thread;
use std::time::{Duration, Instant};

use ssh_interop_tests::process::wait_until;
use ssh_interop_tests::{
    ClientKind, KeyKind, Pattern, SinkServer, SourceServer, Sshd, TunnelBuilder, UserKey, download,
    upload,
};

const MIB: u64 = 1024 * 1024;

/// Key exchanges sshd finished after authentication, that is rekeys. At LogLevel DEBUG1 sshd
/// logs "ssh_set_newkeys: rekeying in, ..." when the new incoming keys of a rekey take effect
/// (the first key exchange logs no such line).
fn rekeys_in_sshd_log(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("debug1: ssh_set_newkeys: rekeying in,"))
        .count()
}

/// Downloads `bytes` from a source and uploads as many to a sink through one tunnel at the
/// same time, checking both by SHA-256; returns how long it took and how many rekeys both
/// ends counted.
fn transfer_both_ways(sshd: &Sshd, key: &UserKey, extra: &[&str], bytes: u64) -> (Duration, usize) {
    let source = SourceServer::start(bytes);
    let sink = SinkServer::start();
    let mut builder = TunnelBuilder::new(ClientKind::Forwarder, sshd, key)
        .verbose()
        .forward_to(source.port())
        .forward_to(sink.port());
    for option in extra {
        builder = builder.option(option);
    }
    let mut tunnel = builder.start();
    let (down_port, up_port) = (tunnel.local_ports()[0], tunnel.local_ports()[1]);
    let started = Instant::now();

    let down = thread::spawn(move || download(down_port, true));
    let up = thread::spawn(move || upload(up_port, bytes));
    let down = down.join().expect("download thread").unwrap_or_else(|e| {
        panic!(
            "download failed: {e}\nforwarder log ends with:\n{}",
            tail(&tunnel.log())
        )
    });
    let up = up.join().expect("upload thread").unwrap_or_else(|e| {
        panic!(
            "upload failed: {e}\nforwarder log ends with:\n{}",
            tail(&tunnel.log())
        )
    });
    let elapsed = started.elapsed();

    let expected = Pattern::get().sha256(bytes);
    assert_eq!(down.bytes, bytes, "bytes downloaded");
    assert_eq!(
        down.sha256.as_deref(),
        Some(expected.as_str()),
        "download SHA-256"
    );
    assert_eq!(up.bytes, bytes, "bytes the sink received");
    assert_eq!(
        up.sha256.as_deref(),
        Some(expected.as_str()),
        "upload SHA-256 at the sink"
    );
    let sunk = sink.wait_for_results(1, Duration::from_secs(10));
    assert!(sunk[0].clean, "the upload ended with a clean EOF: {sunk:?}");

    assert_eq!(
        tunnel.exited(),
        None,
        "the forwarder must still run; its log ends with:\n{}",
        tail(&tunnel.log())
    );
    // And the session still carries new connections after all those key exchanges.
    let again = upload(up_port, MIB).expect("a second upload");
    assert_eq!(again.sha256, Some(Pattern::get().sha256(MIB)));

    // A rekey the last bytes started may still be finishing; once it has, both ends must
    // have counted the same key exchanges.
    let rekeys = wait_until(
        Duration::from_secs(10),
        "the forwarder and sshd count the same rekeys",
        || {
            let ours = rekeys_in_forwarder_log(&tunnel.log());
            (ours == rekeys_in_sshd_log(&sshd.log())).then_some(ours)
        },
        || {
            format!(
                "forwarder: {}, sshd: {}",
                rekeys_in_forwarder_log(&tunnel.log()),
                rekeys_in_sshd_log(&sshd.log())
            )
        },
    );
    (elapsed, rekeys)
}

/// Rekeys the forwarder reports at `-v` ("rekeyed count=N", N counting the first exchange).
fn rekeys_in_forwarder_log(log: &str) -> usize {
    log.lines().filter(|l| l.contains("rekeyed")).count()
}

fn tail(log: &str) -> String {
    ssh_interop_tests::process::tail(log, 30)
}

#[test]
fn interop_rekey_server_initiated_every_mebibyte_while_256_mib_pass_each_way() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .config("RekeyLimit 1M")
        .authorize(&key)
        .start();
    let bytes = 256 * MIB;
    let (elapsed, rekeys) = transfer_both_ways(&sshd, &key, &[], bytes);
    eprintln!(
        "{} MiB each way in {elapsed:?} with {rekeys} server-initiated rekeys",
        bytes / MIB
    );
    // 512 MiB in all (plus the second download) at 1 MiB per key: hundreds of key exchanges.
    // OpenSSH counts the limit per direction and in cipher blocks, so allow some slack.
    assert!(
        rekeys >= 200,
        "sshd logged only {rekeys} key exchanges after authentication; its log ends with:\n{}",
        tail(&sshd.log())
    );
}

#[test]
fn interop_rekey_client_initiated_every_mebibyte_while_64_mib_pass_each_way() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let bytes = 64 * MIB;
    let (elapsed, rekeys) = transfer_both_ways(&sshd, &key, &["RekeyLimit=1M"], bytes);
    eprintln!(
        "{} MiB each way in {elapsed:?} with {rekeys} client-initiated rekeys",
        bytes / MIB
    );
    assert!(
        rekeys >= 50,
        "sshd logged only {rekeys} key exchanges after authentication; its log ends with:\n{}",
        tail(&sshd.log())
    );
}

#[test]
fn interop_rekey_client_initiated_by_time_on_an_idle_session_then_data_still_flows() {
    // `RekeyLimit default 1s`: no byte limit of our own, a new key every second, even while
    // nothing is sent (as OpenSSH's client does), and the tunnel works after.
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let source = SourceServer::start(MIB);
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .verbose()
        .option("RekeyLimit=default 1s")
        .forward_to(source.port())
        .start();
    wait_until(
        Duration::from_secs(20),
        "three time-based rekeys in sshd's log",
        || (rekeys_in_sshd_log(&sshd.log()) >= 3).then_some(()),
        || tail(&sshd.log()),
    );
    assert!(
        rekeys_in_forwarder_log(&tunnel.log()) >= 3,
        "the forwarder does not report its rekeys:\n{}",
        tail(&tunnel.log())
    );
    let down = download(tunnel.local_port(), true).expect("download after the rekeys");
    assert_eq!(down.bytes, MIB);
    assert_eq!(
        down.sha256.as_deref(),
        Some(Pattern::get().sha256(MIB).as_str())
    );
}
