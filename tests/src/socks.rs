//! A SOCKS client for the tests of `-D` (written here, not taken from a crate, so the tests
//! can send each form byte for byte, the odd ones included). With
//! [`SocksBridge`](crate::servers::SocksBridge) it turns a SOCKS proxy into a plain port for
//! programs that cannot speak SOCKS (psql).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpStream};

use crate::net;
use crate::servers::IDLE_TIMEOUT;

/// How the client names its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocksForm {
    /// SOCKS4: an IPv4 address (the host must be one).
    V4,
    /// SOCKS4A: a host name, resolved by the proxy's side.
    V4a,
    /// SOCKS5 with an IPv4 or IPv6 address (the host must be one).
    V5Address,
    /// SOCKS5 with a host name.
    V5Name,
}

/// Why [`socks_connect`] got no connection.
#[derive(Debug)]
pub enum SocksError {
    /// The proxy said no with this code: SOCKS4's (0x5B and the like), SOCKS5's REP
    /// (RFC 1928), or the SOCKS5 method byte when it accepted no method.
    Refused(u8),
    /// The proxy closed the connection before its reply was whole.
    Closed,
    /// An I/O error (a timeout among them), or a reply that does not parse.
    Io(io::Error),
}

impl From<io::Error> for SocksError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            SocksError::Closed
        } else {
            SocksError::Io(e)
        }
    }
}

/// Connects to the SOCKS proxy on 127.0.0.1:`proxy` and asks for `host:port` in `form`.
/// Returns the stream once the proxy said yes (what follows is the target's).
pub fn socks_connect(
    proxy: u16,
    form: SocksForm,
    host: &str,
    port: u16,
) -> Result<TcpStream, SocksError> {
    let mut s = net::connect(proxy)?;
    s.set_read_timeout(Some(IDLE_TIMEOUT))?;
    s.set_write_timeout(Some(IDLE_TIMEOUT))?;
    s.write_all(&request(form, host, port))?;
    let code = match form {
        SocksForm::V4 | SocksForm::V4a => {
            let mut reply = [0u8; 8];
            s.read_exact(&mut reply)?;
            if reply[1] == 0x5A { 0 } else { reply[1] }
        }
        SocksForm::V5Address | SocksForm::V5Name => {
            let mut method = [0u8; 2];
            s.read_exact(&mut method)?;
            if method != [5, 0] {
                return Err(SocksError::Refused(method[1]));
            }
            let mut head = [0u8; 4];
            s.read_exact(&mut head)?;
            let rest = match head[3] {
                1 => 4 + 2,
                4 => 16 + 2,
                3 => {
                    let mut n = [0u8; 1];
                    s.read_exact(&mut n)?;
                    usize::from(n[0]) + 2
                }
                other => {
                    return Err(SocksError::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("reply with address type {other}"),
                    )));
                }
            };
            let mut bound = vec![0u8; rest];
            s.read_exact(&mut bound)?;
            head[1]
        }
    };
    match code {
        0 => Ok(s),
        refused => Err(SocksError::Refused(refused)),
    }
}

/// The bytes a client sends in `form`: for SOCKS5 the greeting (no authentication) and the
/// request at once, as clients that do not wait for the method choice send them.
pub fn request(form: SocksForm, host: &str, port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    match form {
        SocksForm::V4 => {
            let ip: Ipv4Addr = host.parse().expect("SOCKS4 takes an IPv4 address");
            out.extend_from_slice(&[4, 1]);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&ip.octets());
            out.extend_from_slice(b"lab\0");
        }
        SocksForm::V4a => {
            out.extend_from_slice(&[4, 1]);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(b"lab\0");
            out.extend_from_slice(host.as_bytes());
            out.push(0);
        }
        SocksForm::V5Address | SocksForm::V5Name => {
            out.extend_from_slice(&[5, 1, 0, 5, 1, 0]);
            if form == SocksForm::V5Name {
                let len = u8::try_from(host.len()).expect("a host name of at most 255 bytes");
                out.extend_from_slice(&[3, len]);
                out.extend_from_slice(host.as_bytes());
            } else if let Ok(ip) = host.parse::<Ipv4Addr>() {
                out.push(1);
                out.extend_from_slice(&ip.octets());
            } else {
                let ip: Ipv6Addr = host.parse().expect("an IPv4 or IPv6 address");
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            out.extend_from_slice(&port.to_be_bytes());
        }
    }
    out
}

/// Checks a SOCKS proxy on 127.0.0.1:`proxy` end to end: psql reaches PostgreSQL on
/// `pg_port` in every form (SOCKS4 and SOCKS5 by address, SOCKS4A and SOCKS5 by name, all
/// `localhost`), and 1 MiB goes to the echo server on `echo_port` and back byte for byte,
/// with a half-close. Failures name `who` and show `log()` (the client's log).
pub fn check_every_form(
    proxy: u16,
    pg_port: u16,
    echo_port: u16,
    who: &str,
    log: impl Fn() -> String,
) {
    use crate::postgres::{CUSTOMERS_QUERY, expected_customers, psql};
    use crate::servers::{SocksBridge, echo_round_trip_stream};
    for (form, host) in [
        (SocksForm::V4, "127.0.0.1"),
        (SocksForm::V4a, "localhost"),
        (SocksForm::V5Address, "127.0.0.1"),
        (SocksForm::V5Name, "localhost"),
    ] {
        let bridge = SocksBridge::start(proxy, form, host, pg_port);
        assert_eq!(
            psql(bridge.port(), CUSTOMERS_QUERY),
            expected_customers(),
            "{who} {form:?} to {host}:{pg_port}:\n{}",
            log()
        );
    }
    let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let stream = socks_connect(proxy, SocksForm::V5Name, "localhost", echo_port)
        .unwrap_or_else(|e| panic!("{who} SOCKS5 to the echo server: {e:?}\n{}", log()));
    let back = echo_round_trip_stream(stream, &data).expect("echo round trip");
    assert!(back == data, "{who}: the echo came back different");
}
