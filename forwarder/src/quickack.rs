//! The bastion's TCP connection with quick ACKs: after every read that returned data, the
//! socket is told to acknowledge at once (`TCP_QUICKACK`, which Linux clears again by itself).
//!
//! Why: sshd 9.2 leaves Nagle's algorithm on for a session that only forwards (it sets
//! `TCP_NODELAY` only for sessions that run a command). A small packet it sends while an
//! earlier one is unacknowledged then waits for our ACK, and Linux delays that ACK by up to
//! 40 ms when we have nothing to send back. Several connections sharing one session, each a
//! short request and answer, hit that wait again and again: new database connections through a
//! shared session took ten times longer than direct ones. Acknowledging at once costs one
//! system call per read (reads are up to 256 KiB) and a few more ACK segments.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A [`TcpStream`] that asks for a quick ACK after each read that returned data.
#[derive(Debug)]
pub struct QuickAck {
    stream: TcpStream,
    /// Cleared after the first failure (not Linux, or a socket that refuses): not tried again.
    enabled: bool,
}

impl QuickAck {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            enabled: true,
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn acknowledge_now(&mut self) {
        if self.enabled
            && socket2::SockRef::from(&self.stream)
                .set_tcp_quickack(true)
                .is_err()
        {
            self.enabled = false;
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn acknowledge_now(&mut self) {}
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.acknowledge_now();
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn carries_bytes_both_ways_and_keeps_asking_for_quick_acks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut client = QuickAck::new(client);
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        for round in 0..3u8 {
            server.write_all(&[round; 3]).await.unwrap();
            let mut back = [0u8; 3];
            client.read_exact(&mut back).await.unwrap();
            assert_eq!(back, [round; 3]);
        }
        #[cfg(target_os = "linux")]
        assert!(client.enabled, "setting TCP_QUICKACK failed on Linux");
        drop(server);
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
