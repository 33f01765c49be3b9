//! Memory of one tunnel process per connection, forwarder against OpenSSH's `ssh -N -L`
//! through the same lab sshd: resident memory per idle connection (each has carried one small
//! exchange) and peak resident memory while many connections transfer at once. Not a test.
//!
//! `connmem [--connections N] [--size SIZE_MIB] [--forwarder PATH]`

use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use ssh_interop_tests::process::{peak_rss_kib, rss_kib};
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, SinkServer, SourceServer, Sshd, TunnelBuilder, UserKey,
    download, upload,
};

fn main() {
    let mut connections = 64usize;
    let mut size_mib = 32u64;
    let mut program = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--connections" => connections = value.parse().expect("--connections N"),
            "--size" => size_mib = value.parse().expect("--size MIB"),
            "--forwarder" => program = Some(std::path::PathBuf::from(value)),
            _ => panic!("unknown option {a}"),
        }
    }
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .authorize(&key)
        .config("LogLevel INFO")
        .config("MaxSessions 1000")
        .config("MaxStartups 1000")
        .start();
    let echo = EchoServer::start();
    let source = SourceServer::start(size_mib << 20);
    let sink = SinkServer::counting();
    for kind in [ClientKind::Forwarder, ClientKind::OpenSsh] {
        let mut b = TunnelBuilder::new(kind, &sshd, &key)
            .cipher("aes128-gcm@openssh.com")
            .forward_to(echo.port())
            .forward_to(source.port())
            .forward_to(sink.port());
        if let (ClientKind::Forwarder, Some(p)) = (kind, &program) {
            b = b.program(p);
        }
        let tunnel = b.start();
        let ports = tunnel.local_ports();
        let pid = tunnel.pid();
        thread::sleep(Duration::from_millis(500));
        let before = rss_kib(pid).expect("client alive");
        let mut idle = Vec::new();
        for i in 0..connections {
            let mut s = TcpStream::connect(("127.0.0.1", ports[0])).expect("connect");
            let msg = format!("hello {i}");
            let back = echo_round_trip_on(&mut s, msg.as_bytes());
            assert_eq!(back, msg.as_bytes(), "echo through the tunnel");
            idle.push(s);
        }
        thread::sleep(Duration::from_secs(3));
        let after = rss_kib(pid).expect("client alive");
        drop(idle);
        let per_idle = (after.saturating_sub(before)) as f64 / connections as f64;
        let half = connections / 2;
        let (down_port, up_port) = (ports[1], ports[2]);
        let workers: Vec<_> = (0..connections)
            .map(|i| {
                thread::spawn(move || {
                    if i < half {
                        download(down_port, false).map(|t| t.bytes)
                    } else {
                        upload(up_port, size_mib << 20).map(|t| t.bytes)
                    }
                })
            })
            .collect();
        let mut moved = 0u64;
        for w in workers {
            moved += w.join().expect("worker").expect("transfer");
        }
        assert_eq!(
            moved,
            connections as u64 * (size_mib << 20),
            "every transfer whole"
        );
        let peak = peak_rss_kib(pid).expect("client alive");
        println!(
            "{:<10} idle: {:.1} KiB per connection ({} KiB before, {} KiB with {connections} idle); busy: peak RSS {:.1} MiB with {connections} connections ({half} down, {} up, {size_mib} MiB each)",
            kind.name(),
            per_idle,
            before,
            after,
            peak as f64 / 1024.0,
            connections - half
        );
    }
}

fn echo_round_trip_on(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(data).expect("write");
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).expect("read");
    back
}
