//! `-W host:port`: standard input and output forwarded to `host:port` through the session, so
//! that forwarder can be another tool's `ProxyCommand`. Nothing listens; the program ends when
//! the channel closes (exit 0) or the session fails (exit 255). Logs go to standard error
//! only: standard output carries the data.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use crate::app::Fatal;
use crate::config::TunnelConfig;
use crate::connect::SshConnector;
use crate::supervisor::BastionGate;

/// Connects as `cfg` says, opens a `direct-tcpip` channel to `host:port` and copies standard
/// input to it and it to standard output until the channel closes.
pub async fn run(cfg: TunnelConfig, host: String, port: u16) -> Result<(), Fatal> {
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
    let channel = handle
        .open_direct_tcpip(&host, port, "127.0.0.1", 0)
        .await
        .map_err(|e| Fatal(format!("stdio forwarding to {host}:{port} failed: {e}")))?;
    debug!("stdio forwarding to {host}:{port}");
    let result = copy_both(tokio::io::stdin(), tokio::io::stdout(), channel).await;
    supervisor.shutdown(Duration::from_secs(2)).await;
    result.map_err(|e| Fatal(format!("stdio forwarding to {host}:{port}: {e}")))
}

/// Copies `input` to `channel` (then EOF) and `channel` to `output` until the channel has
/// sent its EOF: the end of what comes back ends the forwarding, as with ssh.
pub async fn copy_both<I, O, C>(mut input: I, mut output: O, channel: C) -> std::io::Result<()>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut from_channel, mut to_channel) = tokio::io::split(channel);
    let upload = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = input.read(&mut buf).await?;
            if n == 0 {
                to_channel.shutdown().await?;
                return std::future::pending::<std::io::Result<()>>().await;
            }
            match to_channel.write_all(buf.get(..n).unwrap_or_default()).await {
                Ok(()) => {}
                // The server closed the channel: nothing more can go that way, and what it
                // sent before its CLOSE is still to be written out by the other half.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return std::future::pending::<std::io::Result<()>>().await;
                }
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
                return Ok(());
            }
            output.write_all(buf.get(..n).unwrap_or_default()).await?;
            output.flush().await?;
        }
    };
    tokio::select! {
        r = upload => r,
        r = download => r,
    }
}
