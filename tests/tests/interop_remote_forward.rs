//! `-R` remote forwards against the real sshd: a fixed port and port 0 (the allocated port
//! read from the client's log as ssh prints it), data checked byte for byte both ways,
//! several connections at once, and a forward the server refuses; `-R` alone (no `-L`), the
//! forwards requested again after the bastion drops the session, a target nothing listens
//! on (the channel refused with OPEN_FAILURE, served once the target is up), a target that
//! does not answer (no confirmation until the connect completes, as ssh; refused at
//! ConnectTimeout, unlike ssh), and the bastion's port closed after SIGTERM.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use std::time::Instant;

use ssh_interop_tests::servers::UnixEchoServer;
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Sshd, TunnelBuilder, UserKey, free_port, port_listening,
};

const WAIT: Duration = Duration::from_secs(30);
/// How soon a client of the bastion's port must see its connection end when the target
/// refuses: one round trip to the forwarder and its connect, not a timeout.
const PROMPT: Duration = Duration::from_secs(10);

/// Accepts the next connection on `listener` (waiting at most [`WAIT`]) and echoes it in a
/// thread until its EOF.
fn echo_next(listener: &TcpListener) -> std::thread::JoinHandle<()> {
    let listener = listener.try_clone().expect("clone the listener");
    std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("non-blocking accept");
        let deadline = Instant::now() + WAIT;
        let mut conn = loop {
            match listener.accept() {
                Ok((conn, _)) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "no connection reached the target"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        conn.set_nonblocking(false).expect("blocking");
        let mut reader = conn.try_clone().expect("clone");
        let _ = std::io::copy(&mut reader, &mut conn);
        let _ = conn.shutdown(std::net::Shutdown::Write);
    })
}

/// The port of the `n`th (0-based) "Allocated port N" line of `log`.
fn allocated(log: &str, n: usize) -> u16 {
    log.split("Allocated port ")
        .nth(n + 1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no allocated port number {n} in the log:\n{log}"))
}

/// Waits (bounded) until something listens on `port`, or stops listening.
fn wait_listening(port: u16, listening: bool, what: &str) {
    let deadline = Instant::now() + WAIT;
    while port_listening(port) != listening {
        assert!(
            Instant::now() < deadline,
            "{what}: port {port} still {}",
            if listening { "closed" } else { "listening" }
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `payload` through the server's listener on `port` and checks the echo from here.
fn round_trip(port: u16, payload: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the remote port");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let writer = {
        let mut w = s.try_clone().expect("clone");
        let data = payload.to_vec();
        std::thread::spawn(move || {
            w.write_all(&data).expect("write");
            w.shutdown(std::net::Shutdown::Write).expect("half-close");
        })
    };
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read the echo");
    writer.join().expect("writer");
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "the echo differs from what was sent");
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn interop_remote_forward_fixed_port_and_port_zero_carry_data_both_ways() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let echo = EchoServer::start();
    let sshd = Sshd::builder().authorize(&key).start();
    let fixed = free_port();
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .option(&format!("RemoteForward={fixed} 127.0.0.1:{}", echo.port()))
        .option(&format!("RemoteForward=0 127.0.0.1:{}", echo.port()))
        .start();
    let log = tunnel.wait_for_log("Allocated port ", Duration::from_secs(20));
    let allocated: u16 = log
        .split("Allocated port ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("an allocated port in the log");
    assert!(log.contains(&format!(
        "Allocated port {allocated} for remote forward to 127.0.0.1:{}",
        echo.port()
    )));
    // The fixed port is requested first; give the server a moment to listen on both.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", fixed)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{}", tunnel.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    round_trip(fixed, &pattern(1 << 20, 1));
    round_trip(allocated, &pattern(300_000, 2));
    // Several connections at once.
    let threads: Vec<_> = (0..8u8)
        .map(|i| std::thread::spawn(move || round_trip(allocated, &pattern(200_000, i))))
        .collect();
    for t in threads {
        t.join().expect("a concurrent connection");
    }
}

#[test]
fn interop_remote_forward_refused_warns_or_exits_255() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let echo = EchoServer::start();
    let sshd = Sshd::builder()
        .config("AllowTcpForwarding local")
        .authorize(&key)
        .start();
    let port = free_port();
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .option(&format!("RemoteForward={port} 127.0.0.1:{}", echo.port()))
        .option("ExitOnForwardFailure=no")
        .start();
    tunnel.wait_for_log(
        &format!("Warning: remote port forwarding failed for listen port {port}"),
        Duration::from_secs(20),
    );
    drop(tunnel);
    let mut fatal = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .option(&format!("RemoteForward={port} 127.0.0.1:{}", echo.port()))
        .option("ExitOnForwardFailure=yes")
        .spawn();
    let log = fatal.expect_failure();
    assert!(
        log.contains(&format!(
            "remote port forwarding failed for listen port {port}"
        )),
        "{log}"
    );
}

#[test]
fn interop_remote_forward_refused_while_the_port_is_taken_is_asked_again_on_the_same_session() {
    // The bastion's port is held by someone else (after a reconnect: the old session's sshd
    // process that has not noticed the loss yet). The refusal must not leave the forward
    // down for the whole life of the new session: it is asked for again until granted.
    let key = UserKey::generate(KeyKind::Ed25519);
    let echo = EchoServer::start();
    // The forward asks for 127.0.0.1 alone (with `localhost` sshd would also take ::1 and
    // succeed there).
    let sshd = Sshd::builder()
        .config("GatewayPorts clientspecified")
        .authorize(&key)
        .start();
    let port = free_port();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("hold the port");
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .forward_to(echo.port())
        .option(&format!(
            "RemoteForward=127.0.0.1:{port} 127.0.0.1:{}",
            echo.port()
        ))
        .option("ExitOnForwardFailure=no")
        .start();
    tunnel.wait_for_log(
        &format!("Warning: remote port forwarding failed for listen port {port}"),
        WAIT,
    );
    drop(squatter);
    wait_listening(port, true, "once the port was free again");
    round_trip(port, &pattern(200_000, 9));
    let log = tunnel.log();
    assert_eq!(
        log.matches("session up").count(),
        1,
        "granted on the same session: {log}"
    );
    assert!(tunnel.exited().is_none(), "{log}");
}

#[test]
fn interop_remote_forward_alone_survives_dropped_sessions_and_requests_again() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let echo = EchoServer::start();
    let mut sshd = Sshd::builder().authorize(&key).start();
    let fixed = free_port();
    // No -L at all: the client runs for the remote forwards alone.
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .option(&format!("RemoteForward={fixed} 127.0.0.1:{}", echo.port()))
        .option(&format!("RemoteForward=0 127.0.0.1:{}", echo.port()))
        .option("ExitOnForwardFailure=no")
        .option("ServerAliveInterval=1")
        .option("ServerAliveCountMax=2")
        .option("ReconnectBackoffMax=2s")
        .spawn();
    let log = tunnel.wait_for_log_count("Allocated port ", 1, WAIT);
    let first = allocated(&log, 0);
    wait_listening(fixed, true, "first session");
    round_trip(fixed, &pattern(300_000, 3));
    round_trip(first, &pattern(100_000, 4));
    assert!(tunnel.exited().is_none(), "{}", tunnel.log());

    // The bastion drops the session: both forwards are requested again on the next one.
    assert!(sshd.kill_sessions() >= 1);
    wait_listening(first, false, "the dropped session's port");
    let log = tunnel.wait_for_log_count("Allocated port ", 2, WAIT);
    let second = allocated(&log, 1);
    wait_listening(fixed, true, "after the reconnect");
    round_trip(fixed, &pattern(400_000, 5));
    round_trip(second, &pattern(100_000, 6));

    // And again after sshd itself restarts.
    sshd.restart();
    let log = tunnel.wait_for_log_count("Allocated port ", 3, WAIT);
    let third = allocated(&log, 2);
    wait_listening(fixed, true, "after sshd restarted");
    round_trip(fixed, &pattern(200_000, 7));
    round_trip(third, &pattern(100_000, 8));
    assert!(tunnel.exited().is_none(), "{}", tunnel.log());
}

#[test]
fn interop_remote_forward_target_down_refuses_the_channel_and_serves_once_it_is_up() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let echo = EchoServer::start();
    let sshd = Sshd::builder().authorize(&key).start();
    let dead = free_port();
    let (to_dead, to_echo) = (free_port(), free_port());
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .option(&format!("RemoteForward={to_dead} 127.0.0.1:{dead}"))
        .option(&format!(
            "RemoteForward={to_echo} 127.0.0.1:{}",
            echo.port()
        ))
        .spawn();
    wait_listening(to_dead, true, "forward to nothing");
    wait_listening(to_echo, true, "forward to the echo server");
    let failure = format!("connecting to 127.0.0.1:{dead} failed");
    // What sshd logs when the channel's open is refused with CONNECT_FAILED and the system's
    // words, as ssh refuses it; a channel confirmed and then closed would log nothing of the
    // kind.
    let refused = "open failed: connect failed: Connection refused";
    for n in 1..=2 {
        // The client on the bastion's side sees the connection end promptly, not a hang.
        let started = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", to_dead)).expect("connect");
        s.set_read_timeout(Some(PROMPT)).expect("read timeout");
        let _ = s.write_all(b"hello");
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(k) => panic!("{k} bytes from a target that does not exist"),
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "the connection was left open for {:?}: {e}",
                started.elapsed()
            ),
        }
        tunnel.wait_for_log_count(&failure, n, WAIT);
        assert_eq!(tunnel.log_count(&failure), n, "logged once per connection");
        sshd.wait_for_log(refused, WAIT);
        let deadline = Instant::now() + WAIT;
        while sshd.log().matches(refused).count() < n {
            assert!(
                Instant::now() < deadline,
                "sshd saw {} refusals, not {n}:\n{}",
                sshd.log().matches(refused).count(),
                sshd.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The next connections, through either forward, are served.
    round_trip(to_echo, &pattern(100_000, 9));
    // And once the target is up, through the same forward on the same session.
    let target = TcpListener::bind(("127.0.0.1", dead)).expect("the target comes up");
    let serving = echo_next(&target);
    round_trip(to_dead, &pattern(200_000, 11));
    serving.join().expect("the target's echo");
    let log = tunnel.log();
    assert_eq!(log.matches("session up").count(), 1, "one session: {log}");
    assert!(tunnel.exited().is_none(), "{log}");
}

/// A target on loopback whose connects do not complete: a listener with a backlog of 0 whose
/// one queued connection (the filler, returned) is never accepted, so the kernel drops
/// further SYNs. Returns its port, the listener and the filler.
fn unanswering_target() -> (u16, TcpListener, TcpStream) {
    use socket2::{Domain, Socket, Type};
    let port = free_port();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("bind the target");
    socket.listen(0).expect("listen");
    let listener = TcpListener::from(socket);
    let filler = TcpStream::connect(("127.0.0.1", port)).expect("fill the accept queue");
    let probe = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(700),
    );
    assert!(
        probe
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut),
        "this kernel does not drop SYNs to a full accept queue ({probe:?}), so a connect \
         that does not complete cannot be made here"
    );
    (port, listener, filler)
}

#[test]
fn interop_remote_forward_target_that_never_answers_is_refused_at_connect_timeout() {
    // OpenSSH's client waits for the kernel to give up on the connect (about two minutes);
    // forwarder refuses the channel after ConnectTimeout, with the system's words for it.
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder().authorize(&key).start();
    let (slow, _target, _filler) = unanswering_target();
    let fwd = free_port();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .option(&format!("RemoteForward={fwd} 127.0.0.1:{slow}"))
        .option("ConnectTimeout=2")
        .spawn();
    wait_listening(fwd, true, "the forward");
    let started = Instant::now();
    let mut client = TcpStream::connect(("127.0.0.1", fwd)).expect("connect to the bastion");
    client.write_all(b"hello").expect("write");
    client.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut buf = [0u8; 16];
    // Ended: closed, or reset since sshd closes it with our bytes unread.
    match client.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection was not ended: {other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1500), "ended after {took:?}");
    let failure = format!("connecting to 127.0.0.1:{slow} failed: no answer within 2 s");
    tunnel.wait_for_log_count(&failure, 1, WAIT);
    sshd.wait_for_log("open failed: connect failed: Connection timed out", WAIT);
    // One refused connection does not end the forward.
    assert!(tunnel.exited().is_none(), "{}", tunnel.log());
}

#[test]
fn interop_remote_forward_is_confirmed_only_once_the_target_accepts() {
    // A target whose accept queue is full drops the forwarder's SYNs, so its connect stays
    // in progress: until it completes, sshd must not receive the channel's confirmation
    // (which, with its 2 MiB window, would let the bastion's client send data the forwarder
    // has to hold), and the bastion's client must wait rather than be cut off.
    let key = UserKey::generate(KeyKind::Ed25519);
    // "open confirm" is logged at DEBUG2.
    let sshd = Sshd::builder()
        .config("LogLevel DEBUG2")
        .authorize(&key)
        .start();
    let (slow, target, filler) = unanswering_target();
    let fwd = free_port();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .option(&format!("RemoteForward={fwd} 127.0.0.1:{slow}"))
        .spawn();
    wait_listening(fwd, true, "the forward");

    let mut client = TcpStream::connect(("127.0.0.1", fwd)).expect("connect to the bastion");
    client.write_all(b"hello").expect("write");
    sshd.wait_for_log(&format!("Connection to port {fwd} forwarding to"), WAIT);
    // The forwarder has the channel and its connect is in progress: it must stay
    // unconfirmed, and the bastion's client connected.
    std::thread::sleep(Duration::from_secs(2));
    let log = sshd.log();
    assert!(
        !log.contains("open confirm"),
        "confirmed before the target accepted:\n{}",
        sshd.log_tail(30)
    );
    assert!(!log.contains("open failed"), "{}", sshd.log_tail(30));
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let mut buf = [0u8; 16];
    match client.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the bastion's client did not wait for the target: {other:?}"),
    }

    // The queue frees: the forwarder's next SYN gets through, and only now is the channel
    // confirmed and the data carried.
    drop(filler);
    let (queued, _) = target.accept().expect("the filler's connection");
    drop(queued);
    let serving = echo_next(&target);
    sshd.wait_for_log("open confirm", WAIT);
    client.set_read_timeout(Some(WAIT)).expect("read timeout");
    client.read_exact(&mut buf[..5]).expect("the echo");
    assert_eq!(&buf[..5], b"hello");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("the end");
    assert!(rest.is_empty(), "{rest:?}");
    serving.join().expect("the target's echo");
    assert!(tunnel.exited().is_none(), "{}", tunnel.log());
}

#[test]
fn interop_remote_forward_port_closes_after_sigterm() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let echo = EchoServer::start();
    let sshd = Sshd::builder().authorize(&key).start();
    let fixed = free_port();
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .option(&format!("RemoteForward={fixed} 127.0.0.1:{}", echo.port()))
        .spawn();
    wait_listening(fixed, true, "the forward");
    round_trip(fixed, &pattern(50_000, 10));
    let status = tunnel.terminate(WAIT).expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}: {}", tunnel.log());
    wait_listening(fixed, false, "after SIGTERM");
}

#[test]
fn interop_remote_forward_to_a_unix_socket_here() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder().authorize(&key).start();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("echo.sock");
    let missing = dir.path().join("missing.sock");
    let _echo = UnixEchoServer::start(&socket);
    let (port, dead) = (free_port(), free_port());
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .option(&format!("RemoteForward={port} {}", socket.display()))
        .option(&format!("RemoteForward={dead} {}", missing.display()))
        .spawn();
    wait_listening(port, true, "the bastion's port");
    round_trip(port, &pattern(1 << 20, 3));
    round_trip(port, &pattern(70_000, 4));

    // No socket at the target: the channel is refused with the system's reason, and the
    // client on the bastion's side sees its connection end.
    wait_listening(dead, true, "the bastion's second port");
    let mut s = TcpStream::connect(("127.0.0.1", dead)).expect("connect");
    s.set_read_timeout(Some(PROMPT)).expect("timeout");
    let mut buf = [0u8; 1];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    let log = tunnel.wait_for_log("No such file or directory", WAIT);
    assert!(
        log.contains(&format!("connecting to {} failed", missing.display())),
        "{log}"
    );
    assert!(
        sshd.log()
            .contains("open failed: connect failed: No such file or directory"),
        "{}",
        sshd.log()
    );
}
