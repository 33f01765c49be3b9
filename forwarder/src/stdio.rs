//! `-W host:port`: standard input and output forwarded to `host:port` through the session, so
//! that forwarder can be another tool's `ProxyCommand`. Nothing listens; the program ends when
//! the channel closes, or both directions have ended (exit 0), or the session fails (exit
//! 255). Logs go to standard error
//! only: standard output carries the data.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use crate::app::Fatal;
use crate::config::TunnelConfig;
use crate::connect::SshConnector;
use crate::local::Peer;
use crate::supervisor::BastionGate;
use crate::tunnel::Destination;

/// Connects as `cfg` says, opens a `direct-tcpip` channel to `target` (a
/// `direct-streamlocal@openssh.com` one for a Unix socket) and copies standard input to it
/// and it to standard output until the channel closes.
pub async fn run(cfg: TunnelConfig, target: Destination) -> Result<(), Fatal> {
    if !cfg.forwards.is_empty() {
        return Err(Fatal(
            "-W forwards standard input and output; it cannot be combined with -L".into(),
        ));
    }
    let mut spec = cfg.session;
    // A byte stream cannot survive a new session: the first loss ends it.
    spec.reconnect.enabled = false;
    let supervisor = SshConnector::supervise(spec, true, BastionGate::new()).await;
    let sessions = supervisor.handle();
    let handle = sessions
        .first_session()
        .await
        .map_err(|e| Fatal(e.to_string()))?;
    let channel = crate::tunnel::open_channel(&handle, &target, &Peer::OURSELVES)
        .await
        .map_err(|e| Fatal(format!("stdio forwarding to {target} failed: {e}")))?;
    debug!("stdio forwarding to {target}");
    // Only waited for once the server's data is all out (see `copy_both`).
    let server_closed = channel.server_closed();
    let result = copy_both(
        tokio::io::stdin(),
        Stdout(tokio::io::stdout()),
        &channel,
        &channel,
        server_closed,
    )
    .await;
    supervisor.shutdown(Duration::from_secs(2)).await;
    result.map_err(|e| Fatal(format!("stdio forwarding to {target}: {e}")))
}

/// Copies `input` to the channel (`to_channel`, then EOF at the input's end) and the channel
/// (`from_channel`) to `output` (then `output`'s shutdown at the server's EOF), as ssh's `-W`
/// does: the server's EOF ends only what comes back, and the input is still forwarded until
/// its own end. It is over when both directions are, or, once everything the server sent is
/// written out, when `server_closed` completes (the server's CLOSE: nothing more can go
/// either way).
pub async fn copy_both<I, O, R, W, F>(
    mut input: I,
    mut output: O,
    mut from_channel: R,
    mut to_channel: W,
    server_closed: F,
) -> std::io::Result<()>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    F: Future<Output = ()>,
{
    let upload = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = input.read(&mut buf).await?;
            if n == 0 {
                return to_channel.shutdown().await;
            }
            match to_channel.write_all(buf.get(..n).unwrap_or_default()).await {
                Ok(()) => {}
                // The server closed the channel: nothing more can go that way.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    };
    let download = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = from_channel.read(&mut buf).await?;
            if n == 0 {
                output.flush().await?;
                return output.shutdown().await;
            }
            output.write_all(buf.get(..n).unwrap_or_default()).await?;
            output.flush().await?;
        }
    };
    tokio::pin!(upload, download, server_closed);
    let (mut uploaded, mut downloaded) = (false, false);
    while !(uploaded && downloaded) {
        tokio::select! {
            r = &mut upload, if !uploaded => {
                r?;
                uploaded = true;
            }
            r = &mut download, if !downloaded => {
                r?;
                downloaded = true;
            }
            () = &mut server_closed, if downloaded => break,
        }
    }
    Ok(())
}

/// Standard output whose shutdown closes it: the program on the other end of the pipe sees
/// the end of the data (as when ssh closes its output at the server's EOF) while standard
/// input is still forwarded. Closing is done by putting `/dev/null` in its place, so that
/// descriptor 1 stays valid for anything that writes to it later.
struct Stdout(tokio::io::Stdout);

impl AsyncWrite for Stdout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(Pin::new(&mut self.0).poll_flush(cx))?;
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        rustix::stdio::dup2_stdout(&null)?;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    const STEP: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn input_is_still_forwarded_after_the_server_half_closes() {
        let (mut input_w, input) = duplex(1024);
        let (output, mut output_r) = duplex(1024);
        let (local, mut remote) = duplex(1024);
        let (from_channel, to_channel) = tokio::io::split(local);
        let copying = tokio::spawn(copy_both(
            input,
            output,
            from_channel,
            to_channel,
            std::future::pending(),
        ));

        // The server answers and ends its side (shutdown(SHUT_WR)), but keeps reading.
        remote.write_all(b"x").await.unwrap();
        remote.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(STEP, output_r.read_to_end(&mut got))
            .await
            .expect("the output ends at the server's EOF")
            .unwrap();
        assert_eq!(got, b"x");

        // What the input sends afterwards still reaches the server, then its end.
        input_w.write_all(b"B").await.unwrap();
        drop(input_w);
        let mut sent = Vec::new();
        tokio::time::timeout(STEP, remote.read_to_end(&mut sent))
            .await
            .expect("the server sees the input's end")
            .unwrap();
        assert_eq!(sent, b"B");
        tokio::time::timeout(STEP, copying)
            .await
            .expect("forwarding ends when both directions have")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn the_servers_close_ends_it_once_the_answer_is_out_though_the_input_goes_on() {
        let (_input_w, input) = duplex(1024);
        let (output, mut output_r) = duplex(1024);
        let (local, mut remote) = duplex(1024);
        let (from_channel, to_channel) = tokio::io::split(local);
        remote.write_all(b"last answer").await.unwrap();
        remote.shutdown().await.unwrap();
        tokio::time::timeout(
            STEP,
            copy_both(
                input,
                output,
                from_channel,
                to_channel,
                std::future::ready(()),
            ),
        )
        .await
        .expect("the CLOSE ends the forwarding while the input stays open")
        .unwrap();
        let mut got = Vec::new();
        output_r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last answer");
    }
}
