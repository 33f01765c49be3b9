//! The bastion's TCP connection with quick ACKs: data read and not yet answered by anything
//! we sent is acknowledged at once (`TCP_QUICKACK`, which sends an ACK Linux was holding back)
//! before the driver waits for more.
//!
//! Why: sshd 9.2 leaves Nagle's algorithm on for a session that only forwards (it sets
//! `TCP_NODELAY` only for sessions that run a command). A small packet it sends while an
//! earlier one is unacknowledged then waits for our ACK, and Linux delays that ACK by up to
//! 40 ms when we have nothing to send back. Several connections sharing one session, each a
//! short request and answer, hit that wait again and again: new database connections through a
//! shared session took ten times longer than direct ones.
//!
//! The ACK is forced only when it is owed: after a read that returned data, when no write has
//! carried an ACK since, once a read has found nothing more twice in a row. The first time the
//! driver only lets the other tasks run (it wakes itself and yields): a connection's task that
//! was waiting for window or for room in the output then usually has data for the bastion, and
//! that write carries the ACK. During an upload every window adjust read from the bastion is
//! answered that way, without a system call or a bare ACK segment; a busy download reads back
//! to back; the small answers that meet Nagle's algorithm are acknowledged one scheduler pass
//! after they are read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A [`TcpStream`] that acknowledges data it read at once when nothing we send would.
#[derive(Debug)]
pub struct QuickAck {
    stream: TcpStream,
    /// Cleared after the first failure (not Linux, or a socket that refuses): not tried again.
    enabled: bool,
    /// Whether an ACK may be held back, and whether the driver already yielded once for it.
    ack: Ack,
    /// Quick ACKs asked for (tests read it).
    forced: u64,
}

/// Where the ACK for data we read stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ack {
    /// Nothing read since our last segment or forced ACK.
    Sent,
    /// Data was read and nothing has been written since: Linux may be holding the ACK back.
    Owed,
    /// Still owed after a read found nothing once and the driver yielded: the next such read
    /// forces it.
    OwedAfterYield,
}

impl QuickAck {
    /// A write that sent bytes carried the ACK (Nagle is off on this socket).
    fn wrote(&mut self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.ack = Ack::Sent;
        }
    }

    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            enabled: true,
            ack: Ack::Sent,
            forced: 0,
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn acknowledge_now(&mut self) {
        self.ack = Ack::Sent;
        if !self.enabled {
            return;
        }
        self.forced += 1;
        if socket2::SockRef::from(&self.stream)
            .set_tcp_quickack(true)
            .is_err()
        {
            self.enabled = false;
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn acknowledge_now(&mut self) {
        self.ack = Ack::Sent;
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => self.ack = Ack::Owed,
            Poll::Pending if self.ack == Ack::Owed => {
                // Let the other tasks run first: what they send carries the ACK.
                self.ack = Ack::OwedAfterYield;
                cx.waker().wake_by_ref();
            }
            Poll::Pending if self.ack == Ack::OwedAfterYield => self.acknowledge_now(),
            _ => {}
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
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
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
    async fn acks_are_forced_only_when_owed_and_bytes_flow_both_ways() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut client = QuickAck::new(client);
        // A read that finds more waiting, then one that would block: one forced ACK.
        server.write_all(b"answer").await.unwrap();
        let mut got = [0u8; 6];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"answer");
        assert_eq!(
            client.ack,
            Ack::Owed,
            "data was read and nothing written since"
        );
        let mut more = [0u8; 1];
        let nothing =
            tokio::time::timeout(std::time::Duration::from_millis(50), client.read(&mut more))
                .await;
        assert!(nothing.is_err(), "nothing more to read");
        assert_eq!(client.ack, Ack::Sent);
        #[cfg(target_os = "linux")]
        assert_eq!(client.forced, 1, "the owed ACK was forced before waiting");
        // Read, then write: the write carries the ACK, none is forced.
        server.write_all(b"ping").await.unwrap();
        let mut four = [0u8; 4];
        client.read_exact(&mut four).await.unwrap();
        client.write_all(b"pong").await.unwrap();
        assert_eq!(client.ack, Ack::Sent, "our data carried the ACK");
        let nothing =
            tokio::time::timeout(std::time::Duration::from_millis(50), client.read(&mut more))
                .await;
        assert!(nothing.is_err());
        #[cfg(target_os = "linux")]
        assert_eq!(client.forced, 1, "no ACK forced after our own write");
        let mut back = [0u8; 4];
        server.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"pong");
        // Read, find nothing once (the driver yields), then write before the next look: the
        // write carries the ACK, none is forced.
        server.write_all(b"query").await.unwrap();
        let mut five = [0u8; 5];
        client.read_exact(&mut five).await.unwrap();
        let mut spare = [0u8; 1];
        let first_look_waits = std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut spare);
            Poll::Ready(Pin::new(&mut client).poll_read(cx, &mut rb).is_pending())
        })
        .await;
        assert!(first_look_waits, "nothing more to read");
        assert_eq!(
            client.ack,
            Ack::OwedAfterYield,
            "the ACK waits one scheduler pass"
        );
        client.write_all(b"reply").await.unwrap();
        let nothing =
            tokio::time::timeout(std::time::Duration::from_millis(50), client.read(&mut more))
                .await;
        assert!(nothing.is_err());
        #[cfg(target_os = "linux")]
        assert_eq!(client.forced, 1, "the write that followed carried the ACK");
        let mut reply = [0u8; 5];
        server.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"reply");
        #[cfg(target_os = "linux")]
        assert!(client.enabled, "setting TCP_QUICKACK failed on Linux");
        drop(server);
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
