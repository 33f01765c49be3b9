//! Servers that are not SSH servers, or hostile ones: the forwarder must give up quickly with
//! a clear message, never panic, and never let the server make it allocate much.
//!
//! These are plain TCP servers scripted in the test, not sshd. The forwarder runs under a
//! 64 MiB data-segment limit (`ulimit -d`, which covers the heap and anonymous mappings), so
//! a large allocation made on a server's say-so fails loudly (an abort, not exit status 255)
//! instead of passing unnoticed; its peak resident size is also sampled while it runs.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ssh_interop_tests::{ClientKind, KeyKind, TunnelBuilder, UserKey, forwarder_binary, free_port};
use tempfile::TempDir;

/// The data-segment limit the forwarder runs under, and the peak RSS it must stay below.
const MEMORY_LIMIT_KIB: u64 = 64 * 1024;

/// What the scripted server does with each connection.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// A valid version line, then a packet length of almost 4 GiB.
    HugePacketLength,
    /// Endless pseudo-random bytes, never a version line.
    Garbage,
    /// `SSH-2.0-` and then a version line that never ends.
    EndlessBanner,
    /// Accepts and says nothing.
    Silent,
}

/// A scripted server on 127.0.0.1; stops writing and closes when dropped.
struct Hostile {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hostile {
    fn start(script: Script) -> Hostile {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind a hostile server");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                // One connection is all a forwarder makes.
                if let Ok((stream, _)) = listener.accept() {
                    serve(script, stream, &stop);
                }
            })
        };
        Hostile {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblock an accept that never got its connection.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(script: Script, mut stream: TcpStream, stop: &AtomicBool) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    // Drain what the client sends, so it is never blocked writing its version and KEXINIT.
    if let Ok(mut reader) = stream.try_clone() {
        thread::spawn(move || {
            let mut sink = [0u8; 4096];
            while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
        });
    }
    match script {
        Script::HugePacketLength => {
            let mut bytes = b"SSH-2.0-Hostile_1.0\r\n".to_vec();
            bytes.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
            bytes.extend_from_slice(&[0x07; 64]);
            let _ = stream.write_all(&bytes);
            hold(stop);
        }
        Script::Garbage => {
            let mut state: u64 = 0x2545_F491_4F6C_DD1D;
            endless(&mut stream, stop, move || {
                (0..4096)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect()
            });
        }
        Script::EndlessBanner => {
            let _ = stream.write_all(b"SSH-2.0-");
            endless(&mut stream, stop, || vec![b'A'; 4096]);
        }
        Script::Silent => hold(stop),
    }
}

/// Writes what `next` makes until the client stops reading or the test ends.
fn endless(stream: &mut TcpStream, stop: &AtomicBool, mut next: impl FnMut() -> Vec<u8>) {
    while !stop.load(Ordering::SeqCst) {
        match stream.write(&next()) {
            Ok(0) => return,
            Ok(_) => {}
            // The write timeout only lets the loop look at `stop` now and then.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Keeps the connection open, saying nothing, until the test ends.
fn hold(stop: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
}

/// A script that runs the forwarder under the data-segment limit (exec keeps the pid, so
/// the sampled process is the forwarder itself).
fn limited_forwarder(dir: &Path) -> PathBuf {
    let path = dir.join("forwarder-limited");
    fs::write(
        &path,
        format!(
            "#!/bin/sh\nulimit -d {MEMORY_LIMIT_KIB} || exit 99\nexec '{}' \"$@\"\n",
            forwarder_binary().display()
        ),
    )
    .expect("write the wrapper script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod the wrapper");
    path
}

/// Points the forwarder at `script`'s server and returns its log after checking that it
/// failed cleanly (exit status 255, no panic, no abort) within `limit`, under the memory limit.
fn run_against(script: Script, options: &[&str], limit: Duration) -> (String, Duration) {
    let dir = TempDir::new().expect("temp dir");
    let key = UserKey::generate(KeyKind::Ed25519);
    let known_hosts = dir.path().join("known_hosts");
    fs::write(&known_hosts, "").expect("write known_hosts");
    let server = Hostile::start(script);
    let mut builder = TunnelBuilder::to_port(
        ClientKind::Forwarder,
        server.port,
        "lab",
        &key,
        &known_hosts,
    )
    .program(&limited_forwarder(dir.path()))
    .forward(free_port(), "127.0.0.1", 9);
    for option in options {
        builder = builder.option(option);
    }

    let started = Instant::now();
    let mut tunnel = builder.spawn();
    let mut peak_kib = 0;
    let status = loop {
        if let Some(kib) = tunnel.peak_rss_kib() {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = tunnel.exited() {
            break status;
        }
        if started.elapsed() > limit {
            tunnel.kill();
            panic!(
                "{script:?}: the forwarder still ran after {limit:?}; its log:\n{}",
                tunnel.log()
            );
        }
        thread::sleep(Duration::from_millis(1));
    };
    let took = started.elapsed();
    let log = tunnel.log();
    assert!(
        !log.contains("panicked") && !log.contains("memory allocation"),
        "{script:?}: {log}"
    );
    assert_eq!(
        status.code(),
        Some(255),
        "{script:?}: exit status {status} (a signal means an abort); log:\n{log}"
    );
    // A forwarder that gives up within a millisecond or two may be gone before the first
    // sample; the data-segment limit it ran under still bounded it (going over it fails an
    // allocation, which aborts: not exit status 255, checked above).
    assert!(
        peak_kib < MEMORY_LIMIT_KIB,
        "{script:?}: peak RSS {peak_kib} KiB"
    );
    if peak_kib == 0 {
        eprintln!("{script:?}: exited in {took:?}, before its memory could be sampled");
    }
    let message = log
        .lines()
        .find(|l| l.starts_with("forwarder: ") && !l.starts_with("forwarder: warning"))
        .unwrap_or_else(|| panic!("{script:?}: no error message; log:\n{log}"))
        .to_owned();
    // The message quotes the server's bytes at most briefly and made safe to print.
    assert!(
        message.len() < 1000,
        "{script:?}: a {}-byte message:\n{message}",
        message.len()
    );
    assert!(
        message.chars().all(|c| !c.is_control()),
        "{script:?}: control characters in {message:?}"
    );
    eprintln!("{script:?}: exit 255 after {took:?}, peak RSS {peak_kib} KiB: {message}");
    (message, took)
}

#[test]
fn interop_hostile_huge_packet_length_after_a_valid_version_line() {
    let (message, _) = run_against(Script::HugePacketLength, &[], Duration::from_secs(10));
    assert!(
        message.contains("packet") && message.contains("256 KiB"),
        "{message}"
    );
}

#[test]
fn interop_hostile_garbage_instead_of_a_version_line() {
    let (message, _) = run_against(Script::Garbage, &[], Duration::from_secs(10));
    assert!(
        message.contains("version line") || message.contains("SSH server"),
        "{message}"
    );
}

#[test]
fn interop_hostile_version_line_that_never_ends() {
    let (message, _) = run_against(Script::EndlessBanner, &[], Duration::from_secs(10));
    assert!(message.contains("version line"), "{message}");
}

#[test]
fn interop_hostile_silent_server_times_out_with_connect_timeout() {
    let (message, took) = run_against(
        Script::Silent,
        &["ConnectTimeout=3"],
        Duration::from_secs(15),
    );
    assert!(
        took >= Duration::from_millis(2500),
        "gave up after {took:?}, before ConnectTimeout=3"
    );
    assert!(
        message.contains("3 s") && message.contains("ConnectTimeout"),
        "{message}"
    );
}
