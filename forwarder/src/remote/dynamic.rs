//! Dynamic remote forwarding: `-R [bind_address:]port` (or `RemoteForward port`) with no
//! target, the form OpenSSH's client has had since 7.6. The server listens as for any remote
//! forward, and every connection it takes there speaks SOCKS (4, 4A or 5) over its channel;
//! this end is the SOCKS server, and connects from here to wherever each request names.
//!
//! ```text
//!  forwarded-tcpip ─> confirm ─> SOCKS handshake over the channel (30 s at most)
//!                                 ├─ refused by PermitRemoteOpen ─> reply "not allowed", close
//!                                 └─ connect host:port from here (ConnectTimeout)
//!                                      ├─ failed ─> reply with why (refused, unreachable), close
//!                                      └─ done   ─> reply success, the client's early bytes,
//!                                                   then copy both ways as any forward
//! ```
//!
//! The channel is confirmed at once, as OpenSSH's client does: the request only arrives on
//! it. Unlike OpenSSH's client, which answers success as soon as the request parses and then
//! closes the channel if the connect fails, the answer here waits for the connect, so the
//! client on the server's side learns why it failed (the same order as `-D`).
//!
//! `PermitRemoteOpen` limits where requests may go: `any` (the default, as in OpenSSH),
//! `none`, or `host:port` entries where `*` stands for any host or any port. As in OpenSSH
//! names are compared as text, never looked up; here without regard to case, and two IP
//! addresses as addresses (`[::1]:22` allows a SOCKS5 request for `0:0::1`).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::driver::{ForwardedChannel, SessionHandle};
use crate::local::LocalStream;
use crate::socks::{self, Failure, Request, Step};
use crate::tunnel::TrafficObserver;

/// How long the client on the server's side has to send its whole SOCKS request, once its
/// channel is open (as `-D` gives a local client).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most one read of the handshake takes from the channel. What a read brings past the
/// request is the client's first data, kept for the target; [`socks::MAX_HANDSHAKE`] bounds
/// what the handshake asks for, so the buffer never holds more than the two together.
const READ_CHUNK: usize = 2048;

/// `PermitRemoteOpen`: where the connections of a dynamic remote forward may go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PermitRemoteOpen {
    /// Anywhere (`any`, the default).
    #[default]
    Any,
    /// Nowhere (`none`): every request is refused.
    None,
    /// Only to these.
    Only(Vec<PermittedOpen>),
}

/// One `host:port` of `PermitRemoteOpen`; `None` is the wildcard `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermittedOpen {
    host: Option<String>,
    port: Option<u16>,
}

impl PermitRemoteOpen {
    /// The words of a `PermitRemoteOpen` line: `any` or `none` alone, or `host:port` entries
    /// (`[v6]:port`; `*` for the host or the port). The error says what is wrong.
    pub fn parse<S: AsRef<str>>(words: &[S]) -> Result<Self, String> {
        let words: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
        match words.as_slice() {
            [] => Err("it needs any, none, or host:port entries".into()),
            [w] if w.eq_ignore_ascii_case("any") => Ok(Self::Any),
            [w] if w.eq_ignore_ascii_case("none") => Ok(Self::None),
            _ => words
                .iter()
                .map(|w| PermittedOpen::parse(w))
                .collect::<Result<Vec<_>, _>>()
                .map(Self::Only),
        }
    }

    /// Whether a request for `host:port` may be connected.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        match self {
            Self::Any => true,
            Self::None => false,
            Self::Only(list) => list.iter().any(|p| p.allows(host, port)),
        }
    }
}

impl PermittedOpen {
    fn parse(word: &str) -> Result<Self, String> {
        if word.eq_ignore_ascii_case("any") || word.eq_ignore_ascii_case("none") {
            return Err(format!("'{word}' must be the only word"));
        }
        let (host, port) = match word.strip_prefix('[') {
            Some(rest) => {
                let (host, after) = rest
                    .split_once(']')
                    .ok_or_else(|| format!("'{word}' has '[' without ']'"))?;
                let port = after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("'{word}' has no ':port' after ']'"))?;
                (host, port)
            }
            None => word
                .split_once(':')
                .ok_or_else(|| format!("'{word}' is not host:port"))?,
        };
        if host.is_empty() {
            return Err(format!("'{word}' has no host"));
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) || host.contains(['[', ']']) {
            return Err(format!("'{word}' is not a host name or address"));
        }
        let port = match port {
            "*" => None,
            p => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|n| *n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        format!("'{word}': '{p}' is not a port from 1 to 65535, or *")
                    })?,
            ),
        };
        let host = (host != "*").then(|| host.to_owned());
        Ok(Self { host, port })
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let Some(allowed) = &self.host else {
            return true;
        };
        match (allowed.parse::<IpAddr>(), host.parse::<IpAddr>()) {
            (Ok(a), Ok(h)) => a == h,
            _ => allowed.eq_ignore_ascii_case(host),
        }
    }
}

impl fmt::Display for PermitRemoteOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::None => f.write_str("none"),
            Self::Only(list) => {
                for (i, p) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    match p.host.as_deref() {
                        None => f.write_str("*")?,
                        Some(h) if h.contains(':') => write!(f, "[{h}]")?,
                        Some(h) => f.write_str(h)?,
                    }
                    match p.port {
                        None => f.write_str(":*")?,
                        Some(port) => write!(f, ":{port}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// Why a handshake ended without a request.
#[derive(Debug)]
enum Ended {
    /// The client sent something that is not a request we take; the reply (if SOCKS can
    /// say why) has been sent.
    Refused(socks::SocksError),
    /// The channel ended or failed first.
    Io(io::Error),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(e) => e.fmt(f),
            Self::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                f.write_str("the client closed the connection before its request was complete")
            }
            Self::Io(e) => e.fmt(f),
        }
    }
}

/// Runs the server's side of a SOCKS handshake over `chan`: answers SOCKS5's greeting and
/// returns the request with what came after it (the client's first data), or why not (a
/// request that is refused has been answered).
async fn handshake<C>(chan: &mut C) -> Result<(Request, Vec<u8>), Ended>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut hs = socks::Handshake::new();
    let mut buf = Vec::new();
    loop {
        match hs.step(&buf) {
            Ok(Step::Need(_)) => {
                let mut chunk = [0u8; READ_CHUNK];
                let n = chan.read(&mut chunk).await.map_err(Ended::Io)?;
                if n == 0 {
                    return Err(Ended::Io(io::ErrorKind::UnexpectedEof.into()));
                }
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
            Ok(Step::Reply { bytes, consumed }) => {
                chan.write_all(&bytes).await.map_err(Ended::Io)?;
                buf.drain(..consumed.min(buf.len()));
            }
            Ok(Step::Connect { request, consumed }) => {
                let early = buf.split_off(consumed.min(buf.len()));
                return Ok((request, early));
            }
            Err(e) => {
                if let Some(reply) = e.reply() {
                    let _ = chan.write_all(&reply).await;
                }
                return Err(Ended::Refused(e));
            }
        }
    }
}

/// What the client is told of a connect that failed here.
fn connect_failure(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Failure::ConnectionRefused,
        io::ErrorKind::NetworkUnreachable => Failure::NetworkUnreachable,
        io::ErrorKind::HostUnreachable | io::ErrorKind::TimedOut => Failure::HostUnreachable,
        // A name that does not resolve.
        _ if e.to_string().starts_with(super::LOOKUP_FAILED) => Failure::HostUnreachable,
        _ => Failure::General,
    }
}

/// Sends `reply` and ends the channel: EOF after the reply, then CLOSE when it is dropped.
async fn answer_and_close<C>(mut chan: C, reply: &[u8])
where
    C: AsyncWrite + Unpin,
{
    let _ = chan.write_all(reply).await;
    let _ = chan.shutdown().await;
}

/// Serves one channel of a dynamic remote forward: confirms it, reads the SOCKS request,
/// connects where it names if `permit` allows (waiting at most `limit`), answers, and
/// copies both ways.
pub(super) async fn serve(
    ch: ForwardedChannel,
    session: SessionHandle,
    observer: Arc<dyn TrafficObserver>,
    limit: Duration,
    permit: Arc<PermitRemoteOpen>,
) {
    if ch.session_failed() {
        debug!("remote forward: the channel's session ended before it was served");
        return;
    }
    let from = format!("{}:{}", ch.from.originator, ch.from.originator_port);
    let mut stream = match ch.confirm() {
        Ok(stream) => stream,
        Err(e) => {
            debug!(error = %e, "remote forward: the channel's session ended before it was confirmed");
            return;
        }
    };
    let (request, early) =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                info!("remote SOCKS connection from {from} closed: {e}");
                answer_and_close(stream, &[]).await;
                return;
            }
            Err(_) => {
                info!(
                    "remote SOCKS connection from {from} closed: no request within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                );
                answer_and_close(stream, &[]).await;
                return;
            }
        };
    let target = match request.host.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => format!("[{a}]:{}", request.port),
        _ => format!("{}:{}", request.host, request.port),
    };
    if !permit.allows(&request.host, request.port) {
        info!(
            "remote SOCKS connection from {from} to {target} refused: PermitRemoteOpen \
             ({permit}) does not allow it"
        );
        let reply = socks::failure_reply(request.version, Failure::NotAllowed);
        answer_and_close(stream, &reply).await;
        return;
    }
    let connect = TcpStream::connect((request.host.as_str(), request.port));
    let socket = match tokio::time::timeout(limit, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            info!(
                "remote SOCKS connection from {from}: connecting to {target} failed: {}",
                super::connect_error_text(&e)
            );
            let reply = socks::failure_reply(request.version, connect_failure(&e));
            answer_and_close(stream, &reply).await;
            return;
        }
        Err(_) => {
            info!(
                "remote SOCKS connection from {from}: connecting to {target} failed: no \
                 answer within {} s (ConnectTimeout)",
                limit.as_secs()
            );
            let reply = socks::failure_reply(request.version, Failure::HostUnreachable);
            answer_and_close(stream, &reply).await;
            return;
        }
    };
    debug!(%from, %target, "remote SOCKS connection");
    if stream
        .write_all(&socks::success_reply(request.version))
        .await
        .is_err()
    {
        return;
    }
    let socket = LocalStream::Tcp(socket);
    if !early.is_empty() && crate::tunnel::write_all(&socket, &early).await.is_err() {
        return;
    }
    let named = crate::tunnel::Destination::Tcp(crate::tunnel::Target {
        host: request.host,
        port: request.port,
    });
    super::carry(socket, &named, &session, stream, &observer).await;
}

#[cfg(test)]
mod tests;
