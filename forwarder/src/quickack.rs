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
//!
//! Not during a bulk transfer: when two reads in a row bring at least [`BULK_READ`] bytes each,
//! data is streaming in, Linux acknowledges every second full segment by itself, and the
//! window adjusts we send carry ACKs too. Forcing an ACK there takes the socket out of its
//! delayed-ACK mode, so every packet the bastion sends is acknowledged on its own: more
//! segments and wakeups on both ends for nothing. On a 1 GiB download (aes128-gcm, cubic) it
//! cost about 0.04 s of client CPU per GiB, a tenth of the total.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The smallest read that counts as part of a bulk transfer: 16 KiB, half a full SSH packet
/// and more than any request-and-answer exchange of a database's small queries.
pub const BULK_READ: usize = 16 * 1024;

/// A [`TcpStream`] that acknowledges data it read at once when nothing we send would.
#[derive(Debug)]
pub struct QuickAck {
    stream: TcpStream,
    /// Cleared after the first failure (not Linux, or a socket that refuses): not tried again.
    enabled: bool,
    /// Whether an ACK may be held back, and whether the driver already yielded once for it.
    ack: Ack,
    /// Whether the last read brought at least [`BULK_READ`] bytes.
    last_read_bulk: bool,
    /// Quick ACKs asked for (tests read it).
    forced: u64,
}

/// Where the ACK for data we read stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ack {
    /// Nothing read since our last segment or forced ACK.
    Sent,
    /// The last two reads brought [`BULK_READ`] bytes or more each: data is streaming in and
    /// Linux acknowledges it without being asked.
    Streaming,
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
            last_read_bulk: false,
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
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let bulk = buf.filled().len() - before >= BULK_READ;
                self.ack = if bulk && self.last_read_bulk {
                    Ack::Streaming
                } else {
                    Ack::Owed
                };
                self.last_read_bulk = bulk;
            }
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

    /// A loopback connection: our end wrapped, the server's end plain.
    async fn connected() -> (QuickAck, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (QuickAck::new(client), server)
    }

    #[tokio::test]
    async fn acks_are_forced_only_when_owed_and_bytes_flow_both_ways() {
        let (mut client, mut server) = connected().await;
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

    /// Waits (bounded) until `len` bytes are waiting on the client's socket, so that one read
    /// of `len` bytes gets them all at once.
    async fn wait_until_waiting(client: &QuickAck, len: usize) {
        let mut peeked = vec![0u8; len];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let n = tokio::time::timeout_at(deadline, client.stream.peek(&mut peeked))
                .await
                .expect("data arrives within 10 s")
                .unwrap();
            if n == len {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Reads exactly `len` bytes in one read and checks them against `byte`.
    async fn read_at_once(client: &mut QuickAck, len: usize, byte: u8) {
        wait_until_waiting(client, len).await;
        let mut got = vec![0u8; len];
        let n = client.read(&mut got).await.unwrap();
        assert_eq!(n, len, "one read takes all that waits");
        assert!(got.iter().all(|&b| b == byte));
    }

    /// Looks for more data for 50 ms, finding none: where the driver forces an owed ACK.
    async fn idle_look(client: &mut QuickAck) {
        let mut more = [0u8; 1];
        let nothing =
            tokio::time::timeout(std::time::Duration::from_millis(50), client.read(&mut more))
                .await;
        assert!(nothing.is_err(), "nothing more to read");
    }

    #[tokio::test]
    async fn acks_are_left_to_linux_while_data_streams_in_and_forced_for_small_reads() {
        let (mut client, mut server) = connected().await;
        // Two bulk reads in a row: streaming, nothing forced when the socket runs dry.
        server.write_all(&[1u8; 2 * BULK_READ]).await.unwrap();
        wait_until_waiting(&client, 2 * BULK_READ).await;
        let mut half = vec![0u8; BULK_READ];
        client.read_exact(&mut half).await.unwrap();
        assert_eq!(client.ack, Ack::Owed, "one bulk read is not yet a stream");
        client.read_exact(&mut half).await.unwrap();
        assert!(half.iter().all(|&b| b == 1));
        assert_eq!(client.ack, Ack::Streaming);
        idle_look(&mut client).await;
        assert_eq!(client.ack, Ack::Streaming);
        assert_eq!(client.forced, 0, "no ACK forced while data streams in");
        // A small read after the stream: owed, and forced once the socket runs dry.
        server.write_all(b"ping").await.unwrap();
        let mut ping = [0u8; 4];
        client.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"ping");
        assert_eq!(client.ack, Ack::Owed);
        idle_look(&mut client).await;
        assert_eq!(client.ack, Ack::Sent);
        #[cfg(target_os = "linux")]
        assert_eq!(client.forced, 1, "the small read's ACK was forced");
        // One bulk read after a small one (a large answer): owed and forced too.
        server.write_all(&[2u8; BULK_READ + 1]).await.unwrap();
        read_at_once(&mut client, BULK_READ + 1, 2).await;
        assert_eq!(client.ack, Ack::Owed, "a single large read is an answer");
        idle_look(&mut client).await;
        assert_eq!(client.ack, Ack::Sent);
        #[cfg(target_os = "linux")]
        assert_eq!(client.forced, 2, "the large answer's ACK was forced");
        #[cfg(target_os = "linux")]
        assert!(client.enabled, "setting TCP_QUICKACK failed on Linux");
    }
}
