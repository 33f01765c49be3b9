//! The SOCKS side of dynamic forwarding (`-D`): a local client's SOCKS4, SOCKS4A or SOCKS5
//! handshake, read without IO, becomes the host and port of a `direct-tcpip` channel.
//!
//! ```text
//!  client's bytes ──> buf ──> Handshake::step(buf)
//!                               ├─ Need(n)  read n more bytes into buf, step again
//!                               ├─ Reply    (SOCKS5) write 05 00, drop the greeting, step again
//!                               ├─ Connect  open direct-tcpip host:port; the bytes after
//!                               │           `consumed` are the client's first data
//!                               │             ├─ opened:  write success_reply(version), relay
//!                               │             └─ refused: write failure_reply(version, why), close
//!                               └─ Err(e)   write e.reply() if there is one, log e, close
//! ```
//!
//! What is accepted is what OpenSSH's `ssh -D` accepts: SOCKS4, SOCKS4A and SOCKS5, the
//! CONNECT command only, and for SOCKS5 only the "no authentication required" method. A
//! SOCKS4 user id is read and ignored. Beyond OpenSSH, this parser refuses:
//!
//! * destination port 0, which OpenSSH passes on: nothing listens on port 0, so the channel
//!   could only fail later with a less clear message;
//! * host names that are not printable ASCII (bytes 0x21 to 0x7e: no NUL, space, control
//!   character or byte above 0x7e). Host names are what DNS and `/etc/hosts` resolve; an
//!   internationalized name arrives as its `xn--` ASCII form. This keeps every name safe to
//!   log and to send in the channel open, which carries a UTF-8 string.
//!
//! OpenSSH writes its success reply as soon as the request parses; here the reply is the
//! caller's, so it can wait for the channel to open and say why it could not
//! ([`failure_reply`]).
//!
//! Every field is bounded before it is awaited (a user id or SOCKS4A host name at most 255
//! bytes, a SOCKS5 length byte at most 255), so `step` never asks for more than
//! [`MAX_HANDSHAKE`] bytes in its buffer, and a `Need` is exact wherever the length is known:
//! a caller that reads exactly what is asked never reads past the request into the client's
//! data.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The most bytes a handshake may take before its request is complete (SOCKS4A's user id and
/// host name can each be 255 bytes; SOCKS5's greeting 257 and request 262).
///
/// The longest request accepted is a SOCKS4A one of 520 bytes (8-byte header, 255-byte user id
/// and NUL, 255-byte host name and NUL); a SOCKS5 greeting and request together take at most
/// 519. 1024 is the round bound above both, so a caller can size its read buffer to it;
/// `step` returns [`SocksError::TooLong`] rather than ask for a buffer longer than this.
pub const MAX_HANDSHAKE: usize = 1024;

/// The longest SOCKS4 user id, SOCKS4A host name or SOCKS5 host name, in bytes.
const MAX_FIELD: usize = 255;

/// The SOCKS4 and SOCKS4A request header: VN, CD, DSTPORT, DSTIP.
const SOCKS4_HEADER: usize = 8;

/// The SOCKS5 request header: VER, CMD, RSV, ATYP.
const SOCKS5_HEADER: usize = 4;

/// The CONNECT command, in every version.
const CONNECT: u8 = 1;

/// SOCKS5's "no authentication required" method.
const NO_AUTH: u8 = 0;

/// SOCKS5 address types (RFC 1928 section 5).
const ATYP_IPV4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_IPV6: u8 = 4;

/// SOCKS5 reply codes (RFC 1928 section 6) that are not a [`Failure`].
const REP_SUCCEEDED: u8 = 0x00;
const REP_GENERAL: u8 = 0x01;
const REP_COMMAND: u8 = 0x07;
const REP_ADDRESS_TYPE: u8 = 0x08;

/// SOCKS4 reply codes: request granted, request rejected or failed.
const SOCKS4_GRANTED: u8 = 0x5a;
const SOCKS4_REJECTED: u8 = 0x5b;

/// The protocol a client spoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// SOCKS4: the destination is an IPv4 address.
    Socks4,
    /// SOCKS4A: a SOCKS4 request with address 0.0.0.x (x != 0) and a host name after the user id.
    Socks4a,
    /// SOCKS5 (RFC 1928): an IPv4 or IPv6 address or a host name.
    Socks5,
}

impl Version {
    fn name(self) -> &'static str {
        match self {
            Self::Socks4 => "SOCKS4",
            Self::Socks4a => "SOCKS4A",
            Self::Socks5 => "SOCKS5",
        }
    }
}

/// Where a client asks to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The protocol it asked in, which decides the form of the reply.
    pub version: Version,
    /// Dotted IPv4 (`10.0.0.5`), IPv6 as `std` displays it, without brackets (`::1`), or the
    /// host name as sent (SOCKS4A, SOCKS5 address type 3): 1 to 255 bytes of printable ASCII.
    pub host: String,
    /// The destination port, never 0.
    pub port: u16,
}

/// What the caller of [`Handshake::step`] does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Read at least this many more bytes (>= 1), append them to the buffer, and call `step`
    /// again with the whole buffer.
    Need(usize),
    /// Write `bytes` to the client (SOCKS5's method choice: 05 00), drop the first `consumed`
    /// bytes of the buffer, and call `step` again with the rest.
    Reply {
        /// The bytes to write.
        bytes: Vec<u8>,
        /// How many bytes of the buffer the greeting took.
        consumed: usize,
    },
    /// The request is complete and took the first `consumed` bytes; anything after them is
    /// the client's data.
    Connect {
        /// Where to connect.
        request: Request,
        /// How many bytes of the buffer the request took.
        consumed: usize,
    },
}

/// What the handshake waits for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum State {
    /// The first message: a SOCKS4/4A request or a SOCKS5 greeting.
    #[default]
    First,
    /// The SOCKS5 request, after the greeting was answered.
    Socks5Request,
    /// Nothing: the request was returned.
    Done,
    /// Nothing: the handshake failed with this error, which every later call returns.
    Failed(SocksError),
}

/// One client's SOCKS handshake: feed it what the client sent until it returns the request.
#[derive(Debug, Default)]
pub struct Handshake {
    state: State,
}

impl Handshake {
    /// A handshake that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `buf` is everything read and not yet consumed.
    ///
    /// Errors are final: once `step` has returned one it returns the same one again; after
    /// [`Step::Connect`] it returns [`SocksError::AlreadyComplete`].
    pub fn step(&mut self, buf: &[u8]) -> Result<Step, SocksError> {
        let result = match &self.state {
            State::First => first_message(buf),
            State::Socks5Request => socks5_request(buf),
            State::Done => return Err(SocksError::AlreadyComplete),
            State::Failed(e) => return Err(e.clone()),
        };
        match &result {
            Ok(Step::Need(_)) => {}
            Ok(Step::Reply { .. }) => self.state = State::Socks5Request,
            Ok(Step::Connect { .. }) => self.state = State::Done,
            Err(e) => self.state = State::Failed(e.clone()),
        }
        result
    }
}

/// Asks for the buffer to grow from `have` to `total` bytes, or fails if that would take it
/// past [`MAX_HANDSHAKE`]. Every `Need` comes from here, so the bound holds by construction.
fn need(have: usize, total: usize, version: Version) -> Result<Step, SocksError> {
    if total > MAX_HANDSHAKE {
        return Err(SocksError::TooLong { version });
    }
    Ok(Step::Need(total.saturating_sub(have).max(1)))
}

fn first_message(buf: &[u8]) -> Result<Step, SocksError> {
    match buf.first() {
        // Every message is at least 2 bytes (a SOCKS5 greeting, even one offering no
        // method); asking for more could leave a client that sent 05 00 waiting forever.
        None => Ok(Step::Need(2)),
        Some(4) => socks4_request(buf),
        Some(5) => socks5_greeting(buf),
        Some(&first) => Err(SocksError::NotSocks { first }),
    }
}

/// Where a NUL-terminated field starting at `from` ends: `Ok(Some(index of the NUL))`,
/// `Ok(None)` while it may still end, `Err(())` once it is longer than [`MAX_FIELD`].
fn nul_terminated(buf: &[u8], from: usize) -> Result<Option<usize>, ()> {
    let field = buf.get(from..).unwrap_or_default();
    match field.iter().take(MAX_FIELD + 1).position(|&b| b == 0) {
        Some(len) => Ok(Some(from + len)),
        None if field.len() > MAX_FIELD => Err(()),
        None => Ok(None),
    }
}

/// A host name as sent, if it is 1 to 255 bytes of printable ASCII.
fn host_name(bytes: &[u8], version: Version) -> Result<String, SocksError> {
    if bytes.is_empty() {
        return Err(SocksError::EmptyHost { version });
    }
    if let Some(offset) = bytes.iter().position(|b| !(0x21..=0x7e).contains(b)) {
        let byte = bytes.get(offset).copied().unwrap_or_default();
        return Err(SocksError::HostNotPrintable {
            version,
            byte,
            offset,
        });
    }
    Ok(bytes.iter().map(|&b| char::from(b)).collect())
}

fn socks4_request(buf: &[u8]) -> Result<Step, SocksError> {
    let Some(&[_, command, p0, p1, a, b, c, d]) = buf
        .get(..SOCKS4_HEADER)
        .and_then(|h| <&[u8; SOCKS4_HEADER]>::try_from(h).ok())
    else {
        return need(buf.len(), SOCKS4_HEADER, Version::Socks4);
    };
    let version = if [a, b, c] == [0, 0, 0] && d != 0 {
        Version::Socks4a
    } else {
        Version::Socks4
    };
    if command != CONNECT {
        return Err(SocksError::UnsupportedCommand { version, command });
    }
    let port = u16::from_be_bytes([p0, p1]);
    if port == 0 {
        return Err(SocksError::PortZero { version });
    }
    if [a, b, c, d] == [0; 4] {
        return Err(SocksError::ZeroAddress);
    }
    let user_end = match nul_terminated(buf, SOCKS4_HEADER) {
        Ok(Some(end)) => end,
        Ok(None) => return need(buf.len(), buf.len() + 1, version),
        Err(()) => return Err(SocksError::UserIdTooLong { version }),
    };
    let (host, consumed) = match version {
        Version::Socks4a => {
            let from = user_end + 1;
            let host_end = match nul_terminated(buf, from) {
                Ok(Some(end)) => end,
                Ok(None) => return need(buf.len(), buf.len() + 1, version),
                Err(()) => return Err(SocksError::HostTooLong),
            };
            let name = buf.get(from..host_end).unwrap_or_default();
            (host_name(name, version)?, host_end + 1)
        }
        _ => (Ipv4Addr::new(a, b, c, d).to_string(), user_end + 1),
    };
    Ok(Step::Connect {
        request: Request {
            version,
            host,
            port,
        },
        consumed,
    })
}

fn socks5_greeting(buf: &[u8]) -> Result<Step, SocksError> {
    let Some(&count) = buf.get(1) else {
        return need(buf.len(), 2, Version::Socks5);
    };
    if count == 0 {
        return Err(SocksError::NoAcceptableMethod {
            offered: Vec::new(),
        });
    }
    let total = 2 + usize::from(count);
    let Some(methods) = buf.get(2..total) else {
        return need(buf.len(), total, Version::Socks5);
    };
    if !methods.contains(&NO_AUTH) {
        return Err(SocksError::NoAcceptableMethod {
            offered: methods.to_vec(),
        });
    }
    Ok(Step::Reply {
        bytes: vec![5, NO_AUTH],
        consumed: total,
    })
}

fn socks5_request(buf: &[u8]) -> Result<Step, SocksError> {
    let version = Version::Socks5;
    let Some(&[ver, command, _reserved, atyp]) = buf
        .get(..SOCKS5_HEADER)
        .and_then(|h| <&[u8; SOCKS5_HEADER]>::try_from(h).ok())
    else {
        return need(buf.len(), SOCKS5_HEADER, version);
    };
    if ver != 5 {
        return Err(SocksError::RequestVersion { version: ver });
    }
    if command != CONNECT {
        return Err(SocksError::UnsupportedCommand { version, command });
    }
    // Where the address starts and how long it is.
    let (from, len) = match atyp {
        ATYP_IPV4 => (SOCKS5_HEADER, 4),
        ATYP_IPV6 => (SOCKS5_HEADER, 16),
        ATYP_DOMAIN => match buf.get(SOCKS5_HEADER) {
            Some(&len) => (SOCKS5_HEADER + 1, usize::from(len)),
            None => return need(buf.len(), SOCKS5_HEADER + 1, version),
        },
        _ => return Err(SocksError::UnknownAddressType { atyp }),
    };
    let to = from + len;
    let consumed = to + 2;
    let (Some(address), Some(&[p0, p1])) = (buf.get(from..to), buf.get(to..consumed)) else {
        return need(buf.len(), consumed, version);
    };
    let host = match atyp {
        ATYP_IPV4 => <[u8; 4]>::try_from(address)
            .map(|a| Ipv4Addr::from(a).to_string())
            .map_err(|_| SocksError::UnknownAddressType { atyp })?,
        ATYP_IPV6 => <[u8; 16]>::try_from(address)
            .map(|a| Ipv6Addr::from(a).to_string())
            .map_err(|_| SocksError::UnknownAddressType { atyp })?,
        _ => host_name(address, version)?,
    };
    let port = u16::from_be_bytes([p0, p1]);
    if port == 0 {
        return Err(SocksError::PortZero { version });
    }
    Ok(Step::Connect {
        request: Request {
            version,
            host,
            port,
        },
        consumed,
    })
}

/// What to tell the client when the channel could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Any other reason (SOCKS5 code 01).
    General,
    /// The server refused the forward by its rules (SOCKS5 code 02).
    NotAllowed,
    /// No route to the destination's network (SOCKS5 code 03).
    NetworkUnreachable,
    /// The destination host could not be reached or its name not resolved (SOCKS5 code 04).
    HostUnreachable,
    /// The destination refused the connection (SOCKS5 code 05).
    ConnectionRefused,
}

impl Failure {
    /// The RFC 1928 reply code.
    fn code(self) -> u8 {
        match self {
            Self::General => REP_GENERAL,
            Self::NotAllowed => 0x02,
            Self::NetworkUnreachable => 0x03,
            Self::HostUnreachable => 0x04,
            Self::ConnectionRefused => 0x05,
        }
    }
}

/// A whole reply: SOCKS4/4A `00 <code>` and 6 zero bytes (port and address); SOCKS5
/// `05 <code> 00 01` and 6 zero bytes (bound address 0.0.0.0, port 0).
fn reply(version: Version, socks4: u8, socks5: u8) -> Vec<u8> {
    match version {
        Version::Socks4 | Version::Socks4a => vec![0, socks4, 0, 0, 0, 0, 0, 0],
        Version::Socks5 => vec![5, socks5, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0],
    }
}

/// The reply once the channel is open: SOCKS4/4A 8 bytes (00 5A, then port and address zero);
/// SOCKS5 10 bytes (05 00 00 01, 0.0.0.0, port 0).
pub fn success_reply(version: Version) -> Vec<u8> {
    reply(version, SOCKS4_GRANTED, REP_SUCCEEDED)
}

/// The refusal: SOCKS4/4A 00 5B + 6 zero bytes; SOCKS5 `05 <code> 00 01` + 6 zero bytes with
/// the RFC 1928 code of `failure`.
pub fn failure_reply(version: Version, failure: Failure) -> Vec<u8> {
    reply(version, SOCKS4_REJECTED, failure.code())
}

/// Why a handshake was refused. Every text is a sentence for a log; none quotes more than a
/// byte of what the client sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocksError {
    /// The first byte is neither 4 nor 5.
    NotSocks {
        /// The byte.
        first: u8,
    },
    /// The SOCKS5 greeting does not offer method 0, "no authentication required".
    NoAcceptableMethod {
        /// The methods it offers (none at all when its count is 0).
        offered: Vec<u8>,
    },
    /// The SOCKS5 request, after the greeting, does not start with 5.
    RequestVersion {
        /// The version byte it has.
        version: u8,
    },
    /// A command other than CONNECT (1): BIND (2), UDP ASSOCIATE (3, SOCKS5), or unknown.
    UnsupportedCommand {
        /// The protocol of the request.
        version: Version,
        /// The command byte.
        command: u8,
    },
    /// A SOCKS5 address type other than 1 (IPv4), 3 (host name) and 4 (IPv6).
    UnknownAddressType {
        /// The address type byte.
        atyp: u8,
    },
    /// A SOCKS4 request for 0.0.0.0.
    ZeroAddress,
    /// Destination port 0.
    PortZero {
        /// The protocol of the request.
        version: Version,
    },
    /// A SOCKS4 or SOCKS4A user id of more than 255 bytes before its NUL.
    UserIdTooLong {
        /// The protocol of the request.
        version: Version,
    },
    /// A SOCKS4A host name of more than 255 bytes before its NUL.
    HostTooLong,
    /// An empty host name (SOCKS4A, or SOCKS5 address type 3 with length 0).
    EmptyHost {
        /// The protocol of the request.
        version: Version,
    },
    /// A host name with a byte outside printable ASCII (0x21 to 0x7e).
    HostNotPrintable {
        /// The protocol of the request.
        version: Version,
        /// The first such byte.
        byte: u8,
        /// Its offset in the name.
        offset: usize,
    },
    /// The handshake would take more than [`MAX_HANDSHAKE`] bytes. The per-field bounds stop
    /// every request before that; this keeps the bound true by construction.
    TooLong {
        /// The protocol of the request.
        version: Version,
    },
    /// `step` was called again after it returned the request.
    AlreadyComplete,
}

/// Method names for the SOCKS5 methods a client may offer instead of "no authentication".
fn method_name(method: u8) -> Option<&'static str> {
    match method {
        1 => Some("GSSAPI"),
        2 => Some("username/password"),
        _ => None,
    }
}

impl fmt::Display for SocksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotSocks { first } => {
                let hint = match first {
                    // GET, POST, PUT, PATCH, HEAD, CONNECT, OPTIONS, DELETE, TRACE.
                    b'G' | b'P' | b'H' | b'C' | b'O' | b'D' | b'T' => "; an HTTP client?",
                    0x16 => "; a TLS client?",
                    b'S' => "; an SSH client?",
                    _ => "",
                };
                write!(f, "not a SOCKS request (first byte {first:#04x}{hint})")
            }
            Self::NoAcceptableMethod { offered } => {
                write!(
                    f,
                    "the SOCKS5 client offers no method without authentication (it offers "
                )?;
                if offered.is_empty() {
                    f.write_str("none")?;
                }
                const SHOWN: usize = 8;
                for (i, &m) in offered.iter().take(SHOWN).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{m:#04x}")?;
                    if let Some(name) = method_name(m) {
                        write!(f, " {name}")?;
                    }
                }
                if offered.len() > SHOWN {
                    write!(f, " and {} more", offered.len() - SHOWN)?;
                }
                f.write_str("); set the client to use no authentication")
            }
            Self::RequestVersion { version } => {
                write!(f, "the SOCKS5 request has version {version}, expected 5")
            }
            Self::UnsupportedCommand { command, .. } => {
                let name = match command {
                    2 => " (BIND)",
                    3 => " (UDP ASSOCIATE)",
                    _ => "",
                };
                write!(
                    f,
                    "SOCKS command {command}{name} is not supported, only CONNECT"
                )
            }
            Self::UnknownAddressType { atyp } => {
                write!(f, "SOCKS5 address type {atyp} is unknown")
            }
            Self::ZeroAddress => f.write_str("the SOCKS4 destination address is 0.0.0.0"),
            Self::PortZero { .. } => {
                f.write_str("destination port 0 is not valid (nothing listens on port 0)")
            }
            Self::UserIdTooLong { version } => write!(
                f,
                "the {} user id is longer than {MAX_FIELD} bytes",
                version.name()
            ),
            Self::HostTooLong => {
                write!(f, "the SOCKS4A host name is longer than {MAX_FIELD} bytes")
            }
            Self::EmptyHost { .. } => f.write_str("empty host name"),
            Self::HostNotPrintable { byte, offset, .. } => write!(
                f,
                "host name is not printable ASCII (byte {byte:#04x} at offset {offset})"
            ),
            Self::TooLong { .. } => {
                write!(f, "the handshake is longer than {MAX_HANDSHAKE} bytes")
            }
            Self::AlreadyComplete => f.write_str("the SOCKS handshake is already complete"),
        }
    }
}

impl std::error::Error for SocksError {}

impl SocksError {
    /// Bytes to send the client before closing, where the protocol has a way to say no:
    /// SOCKS5 greeting without an acceptable method -> 05 FF; SOCKS5 request with an
    /// unsupported command -> failure with code 07, unknown address type -> 08, other SOCKS5
    /// request errors -> 01; SOCKS4 request errors -> 00 5B + 6 zeros; nothing for a first
    /// byte that is not 4 or 5 (nor for [`SocksError::AlreadyComplete`], which is the
    /// caller's mistake, not the client's).
    pub fn reply(&self) -> Option<Vec<u8>> {
        let refuse = |version: Version, code: u8| reply(version, SOCKS4_REJECTED, code);
        match self {
            Self::NotSocks { .. } | Self::AlreadyComplete => None,
            Self::NoAcceptableMethod { .. } => Some(vec![5, 0xff]),
            Self::RequestVersion { .. } => Some(refuse(Version::Socks5, REP_GENERAL)),
            Self::UnsupportedCommand { version, .. } => Some(refuse(*version, REP_COMMAND)),
            Self::UnknownAddressType { .. } => Some(refuse(Version::Socks5, REP_ADDRESS_TYPE)),
            Self::ZeroAddress => Some(refuse(Version::Socks4, REP_GENERAL)),
            Self::HostTooLong => Some(refuse(Version::Socks4a, REP_GENERAL)),
            Self::PortZero { version }
            | Self::UserIdTooLong { version }
            | Self::EmptyHost { version }
            | Self::HostNotPrintable { version, .. }
            | Self::TooLong { version } => Some(refuse(*version, REP_GENERAL)),
        }
    }
}

/// Encodes a request as a client would send it (SOCKS5 without the greeting), for tests and
/// the fuzz target's round trip.
///
/// SOCKS4 and SOCKS4A are sent with an empty user id. A SOCKS5 host that is an IPv4 or IPv6
/// address in the form [`Request::host`] gives it goes as address type 1 or 4, anything else
/// as a host name (cut to 255 bytes, the most the length byte can say). A SOCKS4 request whose
/// host is not an IPv4 address is sent the SOCKS4A way. Nothing else is checked: a request
/// the parser would refuse (port 0, an empty name) is encoded as given and refused when read.
pub fn encode_request(r: &Request) -> Vec<u8> {
    let port = r.port.to_be_bytes();
    let ipv4 = r
        .host
        .parse::<Ipv4Addr>()
        .ok()
        .filter(|a| a.to_string() == r.host);
    let mut out = Vec::with_capacity(SOCKS4_HEADER + r.host.len() + 2);
    match (r.version, ipv4) {
        (Version::Socks4, Some(addr)) => {
            out.extend_from_slice(&[4, CONNECT]);
            out.extend_from_slice(&port);
            out.extend_from_slice(&addr.octets());
            out.push(0);
        }
        (Version::Socks4 | Version::Socks4a, _) => {
            out.extend_from_slice(&[4, CONNECT]);
            out.extend_from_slice(&port);
            out.extend_from_slice(&[0, 0, 0, 1, 0]);
            out.extend_from_slice(r.host.as_bytes());
            out.push(0);
        }
        (Version::Socks5, _) => {
            out.extend_from_slice(&[5, CONNECT, 0]);
            let ipv6 = r
                .host
                .parse::<Ipv6Addr>()
                .ok()
                .filter(|a| a.to_string() == r.host);
            if let Some(addr) = ipv4 {
                out.push(ATYP_IPV4);
                out.extend_from_slice(&addr.octets());
            } else if let Some(addr) = ipv6 {
                out.push(ATYP_IPV6);
                out.extend_from_slice(&addr.octets());
            } else {
                let name = r.host.as_bytes();
                let name = name.get(..MAX_FIELD).unwrap_or(name);
                out.push(ATYP_DOMAIN);
                out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(name);
            }
            out.extend_from_slice(&port);
        }
    }
    out
}

#[cfg(test)]
mod tests;
