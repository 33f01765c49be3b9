//! Local port forwarding: a listener per `-L`, and for each accepted connection a channel
//! through the session with bytes copied both ways and half-closes passed on.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use std::sync::Arc;

use crate::driver::{ChannelStream, Sent, SessionHandle};

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
///
/// Server to client, channel data goes to the socket without a copy of ours: the driver
/// writes it straight from the decrypted packet when the channel buffer is empty, and
/// [`ChannelStream::poll_send_to`] writes from the buffer otherwise. Client to server, reads
/// go through one buffer into the packet being built.
pub async fn forward(
    socket: TcpStream,
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
    let socket = Arc::new(socket);
    channel.set_direct_writer(socket.clone());
    let (a, b) = tokio::join!(upload(&socket, &channel), download(&socket, &channel));
    debug!(%peer, sent = ?a, received = ?b, "connection finished");
    a.and(b).map(|_| ())
}

/// Local socket to channel, then CHANNEL_EOF at the socket's end of file.
async fn upload(socket: &TcpStream, channel: &ChannelStream) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        socket.readable().await?;
        let n = match socket.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                channel.send_eof();
                return Err(e);
            }
        };
        let mut at = 0;
        while at < n {
            let chunk = buf.get(at..n).unwrap_or_default();
            at += std::future::poll_fn(|cx| channel.poll_send(cx, chunk)).await?;
        }
        total += n as u64;
    }
    channel.send_eof();
    Ok(total)
}

/// Channel to local socket, then a half-close of the socket at the server's EOF.
async fn download(socket: &TcpStream, channel: &ChannelStream) -> io::Result<u64> {
    let mut total = 0u64;
    while let Sent::Bytes(n) = std::future::poll_fn(|cx| channel.poll_send_to(cx, socket)).await? {
        total += n as u64;
    }
    let _ = socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write);
    Ok(total)
}
