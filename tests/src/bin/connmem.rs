//! Memory of one tunnel process per connection, forwarder against OpenSSH's `ssh -N -L`
//! through the same lab sshd: resident memory per idle connection (each has carried one small
//! exchange) and peak resident memory while many connections transfer at once. Not a test.
//!
//! The baseline is read once the session is up and has echoed a byte: forwarder listens
//! before it logs in, ssh only after, so reading it when the ports listen would leave the
//! session's own memory in forwarder's per-connection figure. Every transfer is compared
//! byte for byte with what was sent (see [`download`] and [`upload`]).
//!
//! `connmem [--connections N] [--size SIZE_MIB] [--forwarder PATH]`

use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use ssh_interop_tests::process::{peak_rss_kib, rss_kib};
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, SinkServer, SourceServer, Sshd, TunnelBuilder, UserKey,
    download, echo_one_byte, upload,
};

const USAGE: &str = "usage: connmem [--connections N] [--size SIZE_MIB] [--forwarder PATH]";

/// The options, or a message saying what is wrong with them.
#[derive(Debug, PartialEq)]
struct Options {
    connections: usize,
    size_mib: u64,
    program: Option<std::path::PathBuf>,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        connections: 64,
        size_mib: 32,
        program: None,
    };
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        if a == "--help" || a == "-h" {
            return Err(USAGE.to_owned());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))?;
        match a.as_str() {
            "--connections" => {
                o.connections = value.parse().ok().filter(|&n| n >= 2).ok_or_else(|| {
                    format!("--connections wants a count of 2 or more, not {value:?}")
                })?;
            }
            "--size" => {
                o.size_mib = value
                    .parse()
                    .ok()
                    .filter(|&n| (1..=1 << 20).contains(&n))
                    .ok_or_else(|| format!("--size wants MiB from 1 to 1048576, not {value:?}"))?;
            }
            "--forwarder" => o.program = Some(std::path::PathBuf::from(value)),
            _ => return Err(format!("unknown option {a}\n{USAGE}")),
        }
    }
    Ok(o)
}

fn main() {
    let Options {
        connections,
        size_mib,
        program,
    } = parse(std::env::args().skip(1)).unwrap_or_else(|e| {
        if e == USAGE {
            println!("{USAGE}");
            std::process::exit(0);
        }
        eprintln!("connmem: {e}");
        std::process::exit(2);
    });
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
        // One byte through its own connection, closed before the baseline: the session is
        // up (ssh is, once it listens; forwarder logs in after) and has opened a channel.
        if let Err(e) = echo_one_byte(ports[0]) {
            panic!("{kind}: no echo through the new tunnel: {e}");
        }
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
            moved += w
                .join()
                .expect("worker")
                .unwrap_or_else(|e| panic!("{kind}: a transfer through the tunnel: {e}"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_parse_and_bad_ones_are_explained() {
        assert_eq!(
            parse(args("")),
            Ok(Options {
                connections: 64,
                size_mib: 32,
                program: None
            })
        );
        assert_eq!(
            parse(args("--connections 8 --size 4 --forwarder /x/fwd")),
            Ok(Options {
                connections: 8,
                size_mib: 4,
                program: Some("/x/fwd".into())
            })
        );
        for (bad, says) in [
            ("--help", "usage"),
            ("--connections", "needs a value"),
            ("--connections x", "--connections wants"),
            ("--connections 1", "--connections wants"),
            ("--size 0", "--size wants"),
            ("--size 99999999999", "--size wants"),
            ("--frobnicate 1", "unknown option"),
        ] {
            let e = parse(args(bad)).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
