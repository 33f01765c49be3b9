//! Local port forwarding: a listener per `-L`, and for each accepted connection a channel
//! through the session with bytes copied both ways and half-closes passed on.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::driver::{ChannelStream, SessionHandle};

/// Bytes moved per read; large reads mean fewer wakeups and packets of the full 32 KiB.
const COPY_BUFFER: usize = 128 * 1024;

/// Where a forward goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name or address, resolved by the server.
    pub host: String,
    /// Port on that host.
    pub port: u16,
}

/// Accepts connections on `listener` forever, forwarding each through `session` to `target`.
pub async fn serve(
    listener: TcpListener,
    session: SessionHandle,
    target: Target,
) -> io::Result<()> {
    loop {
        let (socket, peer) = listener.accept().await?;
        let session = session.clone();
        let target = target.clone();
        tokio::spawn(async move {
            if let Err(e) = forward(socket, peer, &session, &target).await {
                debug!(%peer, error = %e, "forwarded connection ended with an error");
            }
        });
    }
}

/// Forwards one accepted connection.
pub async fn forward(
    mut socket: TcpStream,
    peer: SocketAddr,
    session: &SessionHandle,
    target: &Target,
) -> io::Result<()> {
    let _ = socket.set_nodelay(true);
    let channel = match session
        .open_direct_tcpip(
            &target.host,
            target.port,
            &peer.ip().to_string(),
            peer.port(),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            warn!(
                "channel to {}:{} for {peer} failed: {e}",
                target.host, target.port
            );
            return Ok(());
        }
    };
    debug!(
        channel = channel.id().0,
        %peer,
        "forwarding to {}:{}",
        target.host,
        target.port
    );
    let (mut local_r, mut local_w) = socket.split();
    let (mut chan_r, mut chan_w) = tokio::io::split(channel);
    let up = pump(&mut local_r, &mut chan_w);
    let down = pump(&mut chan_r, &mut local_w);
    let (a, b) = tokio::join!(up, down);
    debug!(%peer, sent = ?a, received = ?b, "connection finished");
    a.and(b).map(|_| ())
}

/// Copies until end of file, then shuts the writer down (half-close).
async fn pump<R, W>(r: &mut R, w: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = w.shutdown().await;
                return Err(e);
            }
        };
        w.write_all(buf.get(..n).unwrap_or_default()).await?;
        total += n as u64;
    }
    w.shutdown().await?;
    Ok(total)
}

/// The type a channel's halves are split into.
pub type ChannelHalves = (
    tokio::io::ReadHalf<ChannelStream>,
    tokio::io::WriteHalf<ChannelStream>,
);
