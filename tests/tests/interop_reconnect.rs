//! Reconnecting: the forwarder keeps its listeners and connects again when a session that
//! was up ends (sshd restarted, frozen, closing idle connections, refusing logins for a
//! while), with keepalives on by default. A changed host key stops it for good; so does
//! `-o Reconnect=no` at the first loss; and a first connection that fails still fails fast.
//!
//! Every test shortens the timings (`ServerAliveInterval=1`, `ServerAliveCountMax=2`,
//! `ReconnectBackoffMax=2`) so that each takes well under 40 s; every wait is bounded.

use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ssh_interop_tests::process::Frozen;
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Pattern, Sshd, Tunnel, TunnelBuilder, UserKey,
    echo_round_trip, free_port, port_listening,
};

/// The options every test here runs with: losses noticed within ~3 s, retries at most 2 s
/// apart.
const FAST: [&str; 3] = [
    "ServerAliveInterval=1",
    "ServerAliveCountMax=2",
    "ReconnectBackoffMax=2",
];

/// The INFO lines the forwarder logs at the default level.
const UP: &str = "session up";
const LOST: &str = "session lost";
const NEXT: &str = "next attempt in";
const FAILED: &str = "attempt failed";

fn forwarder(sshd: &Sshd, key: &UserKey) -> TunnelBuilder {
    FAST.iter().fold(
        TunnelBuilder::new(ClientKind::Forwarder, sshd, key),
        |builder, option| builder.option(option),
    )
}

/// A distinct payload per use, so crossed or stale connections show.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    Pattern::get().bytes_at(seed.wrapping_mul(7919), len)
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

fn assert_running(tunnel: &mut Tunnel, when: &str) {
    if let Some(status) = tunnel.exited() {
        panic!(
            "the forwarder exited ({status}) {when}; its log:\n{}",
            tunnel.log()
        );
    }
}

fn assert_echo(tunnel: &Tunnel, seed: u64, what: &str) {
    let sent = payload(seed, 64 * 1024);
    let back = echo_round_trip(tunnel.local_port(), &sent).unwrap_or_else(|e| {
        panic!(
            "{what}: the echo through the tunnel failed: {e}; forwarder log:\n{}",
            tunnel.log()
        )
    });
    assert!(
        back == sent,
        "{what}: sent {} bytes, {} came back, not the same bytes; forwarder log:\n{}",
        sent.len(),
        back.len(),
        tunnel.log()
    );
}

/// Connects to the tunnel and sends `data` without waiting for anything back: a client that
/// arrives while there is no session.
fn waiting_connection(port: u16, data: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to the tunnel's port {port}: {e}"));
    stream.write_all(data).expect("send to the tunnel");
    stream
}

/// Reads exactly `len` bytes within `timeout`.
fn read_echo(stream: &mut TcpStream, len: usize, timeout: Duration) -> io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(timeout))?;
    let mut back = vec![0u8; len];
    stream.read_exact(&mut back)?;
    Ok(back)
}

/// How a connection ended while we waited on it.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// EOF or a reset: the other side closed it.
    Closed,
    /// Bytes arrived: the connection was served.
    Data(usize),
    /// Nothing within the time: still open.
    StillOpen,
}

fn wait_for_close(stream: &mut TcpStream, timeout: Duration) -> Ending {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ending::StillOpen;
        }
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("set a read timeout");
        return match stream.read(&mut buf) {
            Ok(0) => Ending::Closed,
            Ok(n) => Ending::Data(n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Ending::StillOpen
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => Ending::Closed,
        };
    }
}

/// Waits until the log has more than `seen` lines with `needle`, polling every few
/// milliseconds (for a session that sshd closes again 2 s after it came up), and returns
/// the new count.
fn wait_for_more(tunnel: &mut Tunnel, needle: &str, seen: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let now = count(&tunnel.log(), needle);
        if now > seen {
            return now;
        }
        assert_running(tunnel, &format!("while waiting for {needle:?}"));
        if Instant::now() >= deadline {
            panic!(
                "no new {needle:?} line within {timeout:?} (had {seen}); forwarder log:\n{}",
                tunnel.log()
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn assert_no_panic(log: &str) {
    assert!(!log.contains("panicked"), "the forwarder panicked:\n{log}");
}

/// 1. sshd dies (listener and sessions) and comes back on the same port with the same host
///    keys: the forwarder stays up, keeps its port, serves a connection made during the
///    outage once sshd is back, and new connections afterwards.
#[test]
fn interop_reconnect_sshd_killed_and_restarted_keeps_the_port_and_serves_waiting_connections() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let mut sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let mut tunnel = forwarder(&sshd, &key).forward_to(echo.port()).start();
    let port = tunnel.local_port();
    tunnel.wait_for_log(UP, Duration::from_secs(10));
    assert_echo(&tunnel, 1, "before the outage");

    // A connection open through the tunnel when the session dies.
    let mut open = waiting_connection(port, b"open");
    assert_eq!(
        read_echo(&mut open, 4, Duration::from_secs(10)).expect("echo on the open connection"),
        b"open"
    );
    assert_eq!(sshd.session_pids().len(), 1, "one sshd session");

    // Kill the listener and the session processes.
    sshd.stop();
    let killed = Instant::now();
    let ending = wait_for_close(&mut open, Duration::from_secs(10));
    assert_eq!(
        ending,
        Ending::Closed,
        "a connection open when the session died must be closed at once, not left hanging; \
         forwarder log:\n{}",
        tunnel.log()
    );
    tunnel.wait_for_log(LOST, Duration::from_secs(15));
    eprintln!("session loss noticed {:?} after the kill", killed.elapsed());

    // The outage: the port stays bound and accepts connections.
    let outage = Instant::now() + Duration::from_secs(2);
    while Instant::now() < outage {
        assert!(
            port_listening(port),
            "the local port {port} stopped listening during the outage; forwarder log:\n{}",
            tunnel.log()
        );
        assert_running(&mut tunnel, "during the outage");
        thread::sleep(Duration::from_millis(50));
    }
    let during = payload(2, 32 * 1024);
    let mut waiting = waiting_connection(port, &during);
    thread::sleep(Duration::from_millis(500));
    assert!(
        port_listening(port),
        "port {port} listens during the outage"
    );
    assert_running(&mut tunnel, "during the outage");

    sshd.restart();
    let back = read_echo(&mut waiting, during.len(), Duration::from_secs(20)).unwrap_or_else(|e| {
        panic!(
            "the connection made during the outage was not served after sshd came back: {e}; \
             forwarder log:\n{}",
            tunnel.log()
        )
    });
    assert!(
        back == during,
        "the waiting connection got other bytes back"
    );
    waiting.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(
        wait_for_close(&mut waiting, Duration::from_secs(10)),
        Ending::Closed,
        "the echo finishes the waiting connection"
    );

    assert_echo(&tunnel, 3, "after sshd came back");
    assert_echo(&tunnel, 4, "again after sshd came back");
    assert_running(&mut tunnel, "after the reconnect");
    let log = tunnel.log();
    assert!(count(&log, LOST) >= 1, "a `session lost` line:\n{log}");
    assert!(count(&log, UP) >= 2, "two `session up` lines:\n{log}");
    assert_no_panic(&log);
    assert_eq!(sshd.session_pids().len(), 1, "one new sshd session");
}

/// 2. sshd's session processes frozen (SIGSTOP): the connection stays open but nothing
///    answers. Short keepalives notice, and the forwarder reconnects to the (unfrozen)
///    listener and serves a connection made after the freeze.
#[test]
fn interop_reconnect_frozen_session_is_noticed_by_keepalives_and_replaced() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let mut tunnel = forwarder(&sshd, &key).forward_to(echo.port()).start();
    tunnel.wait_for_log(UP, Duration::from_secs(10));
    assert_echo(&tunnel, 10, "before the freeze");

    let sessions = sshd.session_pids();
    assert_eq!(sessions.len(), 1, "one sshd session: {sessions:?}");
    // Declared after sshd and the tunnel, so it is dropped (continued) before they are.
    let frozen = Frozen::trees(&sessions);
    let stopped = Instant::now();

    let log = tunnel.wait_for_log(LOST, Duration::from_secs(15));
    let noticed = stopped.elapsed();
    let lost_line = log
        .lines()
        .find(|l| l.contains(LOST))
        .unwrap_or_default()
        .to_owned();
    assert!(
        lost_line.to_ascii_lowercase().contains("keepalive"),
        "the loss should be put down to unanswered keepalives: {lost_line:?}\nlog:\n{log}"
    );
    assert!(
        noticed >= Duration::from_secs(1),
        "lost after {noticed:?}, before two keepalives could go unanswered; log:\n{log}"
    );
    tunnel.wait_for_log_count(UP, 2, Duration::from_secs(20));
    assert_running(&mut tunnel, "after the freeze");
    eprintln!(
        "loss noticed after {noticed:?}, new session after {:?}",
        stopped.elapsed()
    );

    assert_echo(&tunnel, 11, "after the freeze");
    assert_echo(&tunnel, 12, "again after the freeze");
    let fresh: Vec<u32> = sshd
        .session_pids()
        .into_iter()
        .filter(|p| !frozen.pids().contains(p))
        .collect();
    assert_eq!(
        fresh.len(),
        1,
        "one new, unfrozen sshd session carries the tunnel: {fresh:?}"
    );
    assert_no_panic(&tunnel.log());
    drop(frozen);
}

/// 3. sshd 9.2's `UnusedConnectionTimeout 2` closes a session with no open channel 2 s after
///    login: the idle forwarder loses its session, reconnects, and serves the next connection.
#[test]
fn interop_reconnect_unused_connection_timeout_closes_the_idle_session_and_it_comes_back() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .config("UnusedConnectionTimeout 2")
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    let mut tunnel = forwarder(&sshd, &key).forward_to(echo.port()).start();
    tunnel.wait_for_log(UP, Duration::from_secs(10));

    // Idle: sshd ends the session after 2 s.
    tunnel.wait_for_log(LOST, Duration::from_secs(15));
    sshd.wait_for_log("terminating inactive connection", Duration::from_secs(5));
    assert_running(&mut tunnel, "after sshd closed the idle session");
    assert!(
        port_listening(tunnel.local_port()),
        "the port stays bound while the session is down"
    );

    // The next session: use it at once, before sshd's 2 s run out again.
    let seen = count(&tunnel.log(), UP);
    wait_for_more(&mut tunnel, UP, seen, Duration::from_secs(15));
    assert_echo(&tunnel, 20, "on the session after the idle timeout");
    assert_running(&mut tunnel, "after the reconnect");
    let log = tunnel.log();
    assert!(count(&log, UP) >= 2, "{log}");
    assert_no_panic(&log);
}

/// 4. sshd comes back on the same port with a new host key: the forwarder stops for good
///    (exit 255) with both fingerprints, and a connection waiting for the session is closed,
///    never forwarded.
#[test]
fn interop_reconnect_new_host_key_stops_the_tunnel_and_forwards_nothing() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let mut sshd = Sshd::builder()
        .host_keys(&[KeyKind::Ed25519])
        .authorize(&key)
        .start();
    let old = sshd.host_keys()[0].fingerprint().to_owned();
    // The client keeps trusting the old key (restarting sshd rewrites its own known_hosts).
    let known_hosts = sshd.dir().join("known_hosts_before_the_new_key");
    fs::copy(sshd.known_hosts_path(), &known_hosts).expect("copy known_hosts");
    let echo = EchoServer::start();
    let mut tunnel = forwarder(&sshd, &key)
        .known_hosts(&known_hosts)
        .forward_to(echo.port())
        .start();
    let port = tunnel.local_port();
    tunnel.wait_for_log(UP, Duration::from_secs(10));
    assert_echo(&tunnel, 30, "with the known key");
    let served = echo.connections();

    sshd.stop();
    tunnel.wait_for_log(LOST, Duration::from_secs(15));
    let mut waiting = waiting_connection(port, b"must never reach the echo server");
    let offset = sshd.log().len();
    let new_keys = sshd.restart_with_new_host_keys();
    let new = new_keys[0].fingerprint().to_owned();
    assert_ne!(old, new);

    let status = tunnel
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| {
            panic!(
                "the forwarder still runs 20 s after sshd came back with another host key; \
                 its log:\n{}",
                tunnel.log()
            )
        });
    let log = tunnel.log();
    eprintln!("forwarder log:\n{log}");
    assert_eq!(status.code(), Some(255), "{status}; log:\n{log}");
    assert!(
        log.contains(&old),
        "the message should show the known key's fingerprint {old}:\n{log}"
    );
    assert!(
        log.contains(&new),
        "the message should show the offered key's fingerprint {new}:\n{log}"
    );
    assert_no_panic(&log);
    assert_eq!(
        wait_for_close(&mut waiting, Duration::from_secs(10)),
        Ending::Closed,
        "the waiting connection is closed, not served"
    );
    assert_eq!(
        echo.connections(),
        served,
        "nothing was forwarded through the impostor"
    );
    assert!(!port_listening(port), "nothing listens after the exit");
    // The key is checked before authentication: no login to the impostor.
    let after = sshd.log().get(offset..).unwrap_or_default().to_owned();
    assert!(
        !after.contains("Accepted publickey") && !after.contains("Failed publickey"),
        "no authentication after the key changed:\n{after}"
    );
}

/// 5. sshd comes back refusing the key (authorized_keys emptied): the forwarder keeps
///    trying, spaced so that sshd's penalties never apply, logs the refusal once rather than
///    per attempt, and recovers once the key is authorized again.
#[test]
fn interop_reconnect_refused_login_is_retried_logged_once_and_recovers() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let mut sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let mut tunnel = forwarder(&sshd, &key).forward_to(echo.port()).start();
    tunnel.wait_for_log(UP, Duration::from_secs(10));
    assert_echo(&tunnel, 40, "before the key is removed");

    let authorized_keys = sshd.authorized_keys_path().to_path_buf();
    let authorized = fs::read(&authorized_keys).expect("read authorized_keys");
    sshd.stop();
    tunnel.wait_for_log(LOST, Duration::from_secs(15));
    fs::write(&authorized_keys, "").expect("empty authorized_keys");
    let offset = sshd.log().len();
    sshd.restart();

    // Watch sshd's log for refused logins and note when each one happens. Five of them
    // take the forwarder past any allowance for a first burst into its steady pace.
    const REFUSED: &str = "Failed publickey for";
    const WANTED: usize = 5;
    let back_at = Instant::now();
    let deadline = back_at + Duration::from_secs(25);
    let mut refusals: Vec<Instant> = Vec::new();
    while refusals.len() < WANTED {
        let since = sshd.log().get(offset..).unwrap_or_default().to_owned();
        let n = count(&since, REFUSED);
        let now = Instant::now();
        refusals.resize(n.max(refusals.len()), now);
        assert_running(&mut tunnel, "while the key is refused");
        if now >= deadline {
            panic!(
                "only {n} refused logins within 25 s of sshd coming back; the forwarder should \
                 keep retrying on the 2 s backoff cap. Its log:\n{}",
                tunnel.log()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let offsets: Vec<f64> = refusals
        .iter()
        .map(|t| (*t - back_at).as_secs_f64())
        .collect();
    eprintln!("refused logins at {offsets:.2?} s after sshd came back");
    // OpenSSH 9.8's PerSourcePenalties (defaults): each failed login adds `authfail:5s` to
    // what the source owes (running out in real time), and sshd refuses the source once it
    // owes `min:15s`. Replay the observed failures through that accounting: we must never
    // get there.
    let mut expiry: Option<Instant> = None;
    for (i, &at) in refusals.iter().enumerate() {
        let base = expiry.filter(|e| *e > at).unwrap_or(at);
        let owed = base + Duration::from_secs(5) - at;
        assert!(
            owed < Duration::from_secs(15),
            "refused login {} (at {:.2} s) would leave {owed:?} of PerSourcePenalties \
             owed, enough for sshd 9.8+ to block us; refused logins at {offsets:.2?} s; \
             forwarder log:\n{}",
            i + 1,
            offsets[i],
            tunnel.log()
        );
        expiry = Some(base + Duration::from_secs(5));
    }

    let log = tunnel.log();
    let refusal_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused every key"))
        .collect();
    assert!(
        !refusal_lines.is_empty() && refusal_lines.len() <= 2,
        "the refusal is logged once per distinct reason, not once per attempt: {} lines for \
         {WANTED} attempts:\n{}",
        refusal_lines.len(),
        refusal_lines.join("\n")
    );

    // Authorized again: the next attempt gets in and the tunnel serves.
    fs::write(&authorized_keys, &authorized).expect("restore authorized_keys");
    let restored = Instant::now();
    tunnel.wait_for_log_count(UP, 2, Duration::from_secs(15));
    eprintln!(
        "recovered {:?} after the key was restored",
        restored.elapsed()
    );
    assert_echo(&tunnel, 41, "after the key was restored");
    assert_running(&mut tunnel, "after recovering");
    let log = tunnel.log();
    assert_no_panic(&log);
    // Last, so that a wording difference does not hide the behaviour checked above: the
    // refusal comes in an INFO line with the contract's `attempt failed: <cause>`.
    assert!(
        log.lines()
            .any(|l| l.contains(FAILED) && l.contains("refused every key")),
        "an {FAILED:?} line should give the refusal; log:\n{log}"
    );
}

#[test]
fn interop_reconnect_a_rotated_key_file_is_read_again_before_the_next_attempt() {
    // A platform rotates its key: the new key replaces the file (as a Kubernetes Secret
    // update does, a new file renamed into place), the bastion authorizes only the new key,
    // and the session ends. The next attempt must log in with the new key, without a
    // restart or a reload of the tunnel.
    let old = UserKey::generate(KeyKind::Ed25519);
    let new = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&old);
    let echo = EchoServer::start();
    let mut tunnel = forwarder(&sshd, &old).forward_to(echo.port()).start();
    tunnel.wait_for_log(UP, Duration::from_secs(10));
    assert_echo(&tunnel, 50, "with the old key");

    for (from, to) in [
        (new.private_key_path(), old.private_key_path()),
        (new.public_key_path(), old.public_key_path()),
    ] {
        let staged = to.with_extension("rotating");
        fs::copy(from, &staged).expect("stage the new key file");
        fs::rename(&staged, to).expect("rename the new key file into place");
    }
    fs::write(
        sshd.authorized_keys_path(),
        format!("{}\n", new.public_key_line()),
    )
    .expect("authorize only the new key");
    assert!(sshd.kill_sessions() > 0, "no sshd session to end");

    tunnel.wait_for_log_count(UP, 2, Duration::from_secs(20));
    assert_echo(&tunnel, 51, "with the new key");
    assert_running(&mut tunnel, "after the rotation");
    let log = tunnel.log();
    assert!(log.contains("key files changed"), "{log}");
    assert_no_panic(&log);
}

/// 6. The listener runs out of file descriptors (a low `ulimit -n`): accept errors are
///    logged, the listener keeps going, and once descriptors are free a new connection is
///    served.
#[test]
fn interop_reconnect_listener_out_of_descriptors_recovers_when_they_free_up() {
    const LIMIT: u64 = 48;
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let mut tunnel = forwarder(&sshd, &key)
        .max_open_files(LIMIT)
        .forward_to(echo.port())
        .start();
    let port = tunnel.local_port();
    tunnel.wait_for_log(UP, Duration::from_secs(10));
    assert_echo(&tunnel, 50, "before running out of descriptors");
    let in_use = fs::read_dir(format!("/proc/{}/fd", tunnel.pid()))
        .map(|d| d.count())
        .unwrap_or(0);
    eprintln!("the forwarder has {in_use} descriptors open at rest, limit {LIMIT}");

    // More connections than the forwarder has descriptors for. Each sends a byte and waits
    // for it (or not: those beyond the limit stay in the kernel's backlog).
    let mut held = Vec::new();
    for i in 0..(2 * LIMIT) {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                let _ = s.write_all(&[i as u8]);
                held.push(s);
            }
            Err(e) => panic!("connect {i} to the tunnel failed: {e}"),
        }
    }
    let log = tunnel.wait_for_log("Too many open files", Duration::from_secs(15));
    assert_running(&mut tunnel, "after running out of descriptors");
    for line in log.lines().filter(|l| l.contains("Too many open files")) {
        eprintln!("accept error logged: {line}");
    }

    // Free them: the forwarder must pick up again by itself.
    drop(held);
    thread::sleep(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(15);
    let sent = payload(51, 64 * 1024);
    loop {
        assert_running(&mut tunnel, "after the descriptors were freed");
        // A reset while the backlog of closed connections drains is not the bug we look for;
        // a wrong echo is, and so is never recovering.
        match echo_round_trip(port, &sent) {
            Ok(back) if back == sent => break,
            Ok(back) => panic!(
                "{} bytes came back for {} sent, not the same bytes; log:\n{}",
                back.len(),
                sent.len(),
                tunnel.log()
            ),
            Err(e) if Instant::now() < deadline => {
                eprintln!("echo after freeing descriptors failed ({e}); retrying");
                thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!(
                "no connection served within 15 s of freeing the descriptors: {e}; log:\n{}",
                tunnel.log()
            ),
        }
    }
    assert_echo(&tunnel, 52, "again after recovering");
    assert_running(&mut tunnel, "at the end");
    let log = tunnel.log();
    let mentions = count(&log, "Too many open files");
    assert!(
        mentions <= 20,
        "accept errors are rate-limited in the log, found {mentions} lines:\n{log}"
    );
    assert_no_panic(&log);
}

/// 7. 400 connections at once through one tunnel, each echoing its own 64 KiB, byte for
///    byte. (Direct-tcpip channels are not limited by sshd's MaxSessions, which counts
///    shells and commands, nor by MaxStartups, which counts unauthenticated connections.)
#[test]
fn interop_reconnect_400_concurrent_connections_through_one_tunnel() {
    const CONNECTIONS: usize = 400;
    const EACH: usize = 64 * 1024;
    raise_fd_limit(8 * CONNECTIONS as u64 + 256);
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let mut tunnel = forwarder(&sshd, &key).forward_to(echo.port()).start();
    let port = tunnel.local_port();

    let started = Instant::now();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CONNECTIONS));
    let (done, results) = mpsc::channel();
    for i in 0..CONNECTIONS {
        let (barrier, done) = (barrier.clone(), done.clone());
        thread::Builder::new()
            .name(format!("conn-{i}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                let sent = payload(1000 + i as u64, EACH);
                barrier.wait();
                let result = match echo_round_trip(port, &sent) {
                    Ok(back) if back == sent => Ok(()),
                    Ok(back) => Err(format!(
                        "connection {i}: sent {} bytes, {} came back, not the same bytes",
                        sent.len(),
                        back.len()
                    )),
                    Err(e) => Err(format!("connection {i}: {e}")),
                };
                let _ = done.send(result);
            })
            .expect("spawn a client thread");
    }
    drop(done);
    let deadline = started + Duration::from_secs(60);
    let mut failures = Vec::new();
    for _ in 0..CONNECTIONS {
        let left = deadline.saturating_duration_since(Instant::now());
        match results.recv_timeout(left) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(_) => {
                failures.push("not all connections finished within 60 s".into());
                break;
            }
        }
    }
    let took = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {CONNECTIONS} connections failed:\n{}\nforwarder log:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        tunnel.log()
    );
    eprintln!("{CONNECTIONS} x {} KiB echoed in {took:?}", EACH / 1024);
    assert_eq!(echo.connections(), CONNECTIONS);
    assert_running(&mut tunnel, "after 400 connections");
    assert_eq!(sshd.session_pids().len(), 1, "one SSH session carried them");
    assert_no_panic(&tunnel.log());
}

/// Raises this process's soft `RLIMIT_NOFILE` (inherited by sshd and the forwarder it
/// starts) to at least `want`, within the hard limit.
fn raise_fd_limit(want: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return;
    }
    let target = limit.maximum.map_or(want, |max| max.min(want));
    let mut raised = limit;
    raised.current = Some(target);
    setrlimit(Resource::Nofile, raised).expect("raise RLIMIT_NOFILE");
    assert!(
        target >= want,
        "the hard limit on open files ({target}) is too low for this test ({want})"
    );
}

/// 8. `-o Reconnect=no`: ssh's behaviour, the first lost session ends the forwarder with 255.
#[test]
fn interop_reconnect_disabled_exits_255_when_the_session_is_lost() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let mut sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let mut tunnel = forwarder(&sshd, &key)
        .option("Reconnect=no")
        .forward_to(echo.port())
        .start();
    assert_echo(&tunnel, 60, "before the kill");
    sshd.stop();
    let killed = Instant::now();
    let status = tunnel
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "with Reconnect=no the forwarder still runs 10 s after sshd died; log:\n{}",
                tunnel.log()
            )
        });
    let took = killed.elapsed();
    let log = tunnel.log();
    assert_eq!(status.code(), Some(255), "{status}; log:\n{log}");
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?} after sshd died; log:\n{log}"
    );
    assert!(!log.contains(NEXT), "no retry with Reconnect=no:\n{log}");
    assert_no_panic(&log);
}

/// 9. Start-up still fails fast: nothing listens on the server port, reconnect on (the
///    default), exit 255 at once with the error.
#[test]
fn interop_reconnect_first_connection_failure_still_fails_fast() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let nothing_there = free_port();
    let echo = EchoServer::start();
    let builder = FAST.iter().fold(
        TunnelBuilder::to_port(
            ClientKind::Forwarder,
            nothing_there,
            sshd.user(),
            &key,
            sshd.known_hosts_path(),
        ),
        |b, o| b.option(o),
    );
    let started = Instant::now();
    let mut tunnel = builder.forward_to(echo.port()).spawn();
    let status = tunnel
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| {
            panic!(
                "the forwarder still runs 15 s after a refused first connection; log:\n{}",
                tunnel.log()
            )
        });
    let took = started.elapsed();
    let log = tunnel.log();
    assert_eq!(status.code(), Some(255), "{status}; log:\n{log}");
    assert!(
        took < Duration::from_secs(5),
        "fail fast: exit took {took:?}; log:\n{log}"
    );
    assert!(
        log.to_ascii_lowercase().contains("refused"),
        "the error should say the connection was refused:\n{log}"
    );
    assert!(!log.contains(NEXT), "no retry at start-up:\n{log}");
    assert!(!log.contains(UP), "{log}");
    assert_no_panic(&log);
}

/// SIGTERM while the session is down (between attempts): exit 0 at once.
#[test]
fn interop_reconnect_sigterm_during_an_outage_exits_zero_at_once() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let mut sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let mut tunnel = forwarder(&sshd, &key).forward_to(echo.port()).start();
    tunnel.wait_for_log(UP, Duration::from_secs(10));
    sshd.stop();
    tunnel.wait_for_log(NEXT, Duration::from_secs(15));
    let asked = Instant::now();
    let status = tunnel
        .terminate(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit within 10 s of SIGTERM:\n{}", tunnel.log()));
    let took = asked.elapsed();
    let log = tunnel.log();
    assert_eq!(status.code(), Some(0), "{status}; log:\n{log}");
    assert!(took < Duration::from_secs(3), "SIGTERM took {took:?}");
    assert_no_panic(&log);
}

/// A connection accepted while there is no session waits `SessionWaitTimeout` for one, then
/// is closed; the forwarder itself keeps going and serves once sshd is back.
#[test]
fn interop_reconnect_connection_waiting_past_session_wait_timeout_is_closed() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let mut sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let mut tunnel = forwarder(&sshd, &key)
        .option("SessionWaitTimeout=2")
        .forward_to(echo.port())
        .start();
    let port = tunnel.local_port();
    tunnel.wait_for_log(UP, Duration::from_secs(10));
    sshd.stop();
    tunnel.wait_for_log(LOST, Duration::from_secs(15));

    let mut waiting = waiting_connection(port, b"nobody serves this");
    let since = Instant::now();
    let ending = wait_for_close(&mut waiting, Duration::from_secs(15));
    let took = since.elapsed();
    assert_eq!(
        ending,
        Ending::Closed,
        "a connection waiting past SessionWaitTimeout=2 must be closed; log:\n{}",
        tunnel.log()
    );
    assert!(
        took >= Duration::from_millis(1500),
        "closed after {took:?}, before SessionWaitTimeout=2 ran out; log:\n{}",
        tunnel.log()
    );
    assert_running(&mut tunnel, "after closing a waiting connection");
    assert!(port_listening(port), "the port stays bound");

    sshd.restart();
    tunnel.wait_for_log_count(UP, 2, Duration::from_secs(15));
    assert_echo(&tunnel, 70, "after sshd came back");
    assert_no_panic(&tunnel.log());
}
