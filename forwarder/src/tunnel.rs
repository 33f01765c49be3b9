//! Local port forwarding: the listeners belong to the tunnel, not to a session. Each accepted
//! connection asks the supervisor for a live session (waiting, bounded, while a reconnect is
//! under way), becomes a `direct-tcpip` channel (a `direct-streamlocal@openssh.com` one for a
//! Unix socket on the server), and has its bytes copied both ways with half-closes passed on.
//!
//! ```text
//!     Listener ──accept──> connection task ──SupervisorHandle::session(wait)──> SessionHandle
//!     │ (errors: logged, rate-limited;                 │ open_direct_tcpip / _streamlocal
//!     │  a short pause, never the end)                 ▼
//!     └── owned by Tunnel (JoinHandles)        ChannelStream <──copy both ways──> socket
//!                                                      │ session died: socket reset at once
//! ```

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, warn};

use crate::driver::{ChannelStream, OpenError, Sent, SessionHandle};
use crate::local::{Listener, LocalStream, Peer};
use crate::socks::{self, Failure, Step};
use crate::supervisor::SupervisorHandle;

/// A connection's first read, client to server: a query or a login fits.
const READ_MIN: usize = 16 * 1024;
/// What reads grow to while they fill (bulk uploads): four packets of the full 32 KiB per
/// read, and fewer wakeups (64 KiB looked costlier per GiB uploaded).
const READ_MAX: usize = 128 * 1024;
/// The pause after a failed `accept()` (EMFILE and the like), so a listener out of
/// descriptors does not spin.
pub(crate) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one log line per this long about failing accepts.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Where a forward goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host name or address, resolved by the server.
    pub host: String,
    /// Port on that host.
    pub port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where a local forward's connections go, as seen from the server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// `host:port`: a `direct-tcpip` channel.
    Tcp(Target),
    /// The path of a Unix socket on the server: a `direct-streamlocal@openssh.com` channel
    /// (OpenSSH's `-L port:/path`).
    Unix(String),
    /// Wherever each connection's SOCKS request names (`-D`, OpenSSH's dynamic forwarding):
    /// a `direct-tcpip` channel per connection.
    Socks,
}

impl Destination {
    /// The TCP port, if it is one.
    pub fn port(&self) -> Option<u16> {
        match self {
            Self::Tcp(t) => Some(t.port),
            Self::Unix(_) | Self::Socks => None,
        }
    }
}

impl From<Target> for Destination {
    fn from(t: Target) -> Self {
        Self::Tcp(t)
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(t) => t.fmt(f),
            Self::Unix(path) => f.write_str(path),
            Self::Socks => f.write_str("SOCKS"),
        }
    }
}

/// What a tunnel reports of its traffic as it happens (the fleet's metrics); the command line
/// uses [`NoObserver`].
pub trait TrafficObserver: Send + Sync + std::fmt::Debug + 'static {
    /// A connection was accepted.
    fn opened(&self) {}
    /// A connection ended (however it ended).
    fn closed(&self) {}
    /// Bytes read from a local client and sent to the remote.
    fn sent_to_remote(&self, _bytes: u64) {}
    /// Bytes from the remote written to a local client.
    fn received_from_remote(&self, _bytes: u64) {}
}

/// Observes nothing.
#[derive(Debug)]
pub struct NoObserver;

impl TrafficObserver for NoObserver {}

/// The connections of one tunnel: how many are open, and the switch that cuts them.
#[derive(Debug)]
struct Connections {
    active: watch::Sender<usize>,
    cut: watch::Sender<bool>,
    observer: Arc<dyn TrafficObserver>,
}

/// Counts one open connection while it lives.
struct Open(Arc<Connections>);

impl Open {
    fn new(conns: &Arc<Connections>) -> Self {
        conns.active.send_modify(|n| *n += 1);
        conns.observer.opened();
        Self(conns.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.active.send_modify(|n| *n = n.saturating_sub(1));
        self.0.observer.closed();
    }
}

/// The listeners of one tunnel, their tasks, and the connections they accepted; dropping it
/// stops the listeners (connections carry on until they end or [`Tunnel::drain`] cuts them).
#[derive(Debug)]
pub struct Tunnel {
    tasks: Vec<JoinHandle<()>>,
    conns: Arc<Connections>,
    /// The runtime its listeners and connections run on; the caller's when `None`.
    home: Option<tokio::runtime::Handle>,
}

impl Default for Tunnel {
    fn default() -> Self {
        Self::new()
    }
}

impl Tunnel {
    /// An empty tunnel that reports its traffic to nobody.
    pub fn new() -> Self {
        Self::with_observer(Arc::new(NoObserver))
    }

    /// An empty tunnel that reports its traffic to `observer`.
    pub fn with_observer(observer: Arc<dyn TrafficObserver>) -> Self {
        Self {
            tasks: Vec::new(),
            conns: Arc::new(Connections {
                active: watch::channel(0).0,
                cut: watch::channel(false).0,
                observer,
            }),
            home: None,
        }
    }

    /// Runs its listeners, and the connections they accept, on `home` (the runtime of the
    /// session they use: see `fleet::homes`), whose runtime must also watch the listening
    /// sockets given to [`Tunnel::listen`].
    pub fn at_home(mut self, home: tokio::runtime::Handle) -> Self {
        self.home = Some(home);
        self
    }

    /// Serves `listener`, forwarding every connection through the sessions of `sessions` to
    /// `target`; a connection waits up to `wait` for a session.
    pub fn listen(
        &mut self,
        listener: impl Into<Listener>,
        sessions: SupervisorHandle,
        target: impl Into<Destination>,
        wait: Duration,
    ) {
        let (listener, target) = (listener.into(), target.into());
        let conns = self.conns.clone();
        // The caller's span (the fleet's tunnel name) follows the listener and its connections.
        let task =
            serve(listener, sessions, target, wait, conns).instrument(tracing::Span::current());
        self.tasks.push(match &self.home {
            Some(home) => home.spawn(task),
            None => tokio::spawn(task),
        });
    }

    /// How many listeners it serves.
    pub fn listeners(&self) -> usize {
        self.tasks.len()
    }

    /// How many accepted connections are open.
    pub fn active(&self) -> usize {
        *self.conns.active.borrow()
    }

    /// Stops every listener (connections already accepted carry on until they end).
    pub fn close(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }

    /// Stops every listener and returns once their sockets are closed, so the addresses can
    /// be bound again at once.
    pub async fn close_listeners(&mut self) {
        let tasks: Vec<_> = self.tasks.drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Stops the listeners, lets open connections finish for up to `grace`, then resets the
    /// ones still open. Returns how many were cut.
    pub async fn drain(&mut self, grace: Duration) -> usize {
        self.close_listeners().await;
        let mut active = self.conns.active.subscribe();
        if tokio::time::timeout(grace, active.wait_for(|n| *n == 0))
            .await
            .is_ok()
        {
            return 0;
        }
        let left = *active.borrow();
        let _ = self.conns.cut.send(true);
        // Bounded: each connection task resets its socket as soon as it sees the switch.
        let _ = tokio::time::timeout(Duration::from_secs(5), active.wait_for(|n| *n == 0)).await;
        left
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.close();
    }
}

/// Rate-limits the log of failing accepts: the first at once, then a summary at most every
/// [`ACCEPT_ERROR_LOG_EVERY`].
#[derive(Debug, Default)]
pub(crate) struct AcceptErrors {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    /// Whether to log this one now, and how many were not logged since the last line.
    fn should_log(&mut self, now: Instant) -> Option<u64> {
        match self.last_logged {
            Some(t) if now.duration_since(t) < ACCEPT_ERROR_LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_logged = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Logs a failed accept on `listener` (named in the line), rate-limited.
    pub(crate) fn report(&mut self, listener: &str, e: &io::Error) {
        if let Some(suppressed) = self.should_log(Instant::now()) {
            let more = if suppressed > 0 {
                format!(" ({suppressed} more since the last report)")
            } else {
                String::new()
            };
            warn!("accepting a connection on {listener} failed: {e}{more}; retrying");
        }
    }
}

/// Accepts connections on `listener` until the task is aborted. A failed accept is logged
/// (rate-limited) and retried after a short pause; it never ends the listener.
async fn serve(
    listener: Listener,
    sessions: SupervisorHandle,
    target: Destination,
    wait: Duration,
    conns: Arc<Connections>,
) {
    let mut errors = AcceptErrors::default();
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                let sessions = sessions.clone();
                let target = target.clone();
                let open = Open::new(&conns);
                tokio::spawn(async move {
                    let conns = open.0.clone();
                    let mut cut = conns.cut.subscribe();
                    let socket = Arc::new(socket);
                    let served = serve_connection(
                        socket.clone(),
                        peer.clone(),
                        &sessions,
                        &target,
                        wait,
                        &conns.observer,
                    );
                    tokio::select! {
                        r = served => if let Err(e) = r {
                            debug!(%peer, error = %e, "forwarded connection ended with an error");
                        },
                        _ = cut.wait_for(|c| *c) => {
                            info!("connection from {peer} to {target} cut: the drain time is over");
                            socket.set_reset_on_close();
                        }
                    }
                    drop(open);
                }.instrument(tracing::Span::current()));
            }
            Err(e) => {
                errors.report(&listener.label(), &e);
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Serves one accepted connection: waits (up to `wait` in all) for a live session, opens a
/// channel (again on the next session if this one dies while opening), and forwards. For a
/// SOCKS forward (`-D`) the client's request names the target first, and the reply tells it
/// whether the channel opened.
pub async fn serve_connection(
    socket: Arc<LocalStream>,
    peer: Peer,
    sessions: &SupervisorHandle,
    target: &Destination,
    wait: Duration,
    observer: &Arc<dyn TrafficObserver>,
) -> io::Result<()> {
    let named;
    let (target, socks) = match target {
        Destination::Socks => {
            let Some(request) = socks_request(&socket, &peer).await else {
                return Ok(());
            };
            named = Destination::Tcp(Target {
                host: request.host,
                port: request.port,
            });
            (&named, Some(request.version))
        }
        fixed => (fixed, None),
    };
    let deadline = crate::supervisor::deadline_after(wait);
    let channel = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let session = match sessions.session(left).await {
            Ok(s) => s,
            Err(e) => {
                info!("connection from {peer} to {target} closed: {e}");
                match socks {
                    Some(v) => refuse(&socket, &socks::failure_reply(v, Failure::General)).await,
                    None => socket.set_reset_on_close(),
                }
                return Ok(());
            }
        };
        match open(&session, &socket, &peer, target).await {
            Ok(c) => break (session, c),
            Err(OpenError::Session(e)) => {
                debug!(%peer, error = %e, "the session ended while opening a channel; waiting for the next");
                continue;
            }
            Err(e) => {
                let hint = match (&e, target) {
                    (OpenError::Refused { reason, .. }, Destination::Unix(_))
                        if *reason == ssh_connection::OpenFailureReason::UNKNOWN_CHANNEL_TYPE =>
                    {
                        " (this server does not forward to Unix sockets)"
                    }
                    _ => "",
                };
                warn!("channel to {target} for {peer} failed: {e}{hint}");
                if let Some(v) = socks {
                    refuse(&socket, &socks::failure_reply(v, socks_failure(&e))).await;
                }
                return Ok(());
            }
        }
    };
    let (session, channel) = channel;
    if let Some(v) = socks {
        write_all(&socket, &socks::success_reply(v)).await?;
    }
    forward(socket, peer, &session, channel, observer).await
}

/// How long a SOCKS client has to send its whole request once connected.
const SOCKS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a SOCKS client's request (answering SOCKS5's choice of method on the way), reading
/// no further than the request's last byte; `None`, logged, when it is refused or does not
/// come within [`SOCKS_HANDSHAKE_TIMEOUT`] (the client is told why where SOCKS can say it).
async fn socks_request(socket: &LocalStream, peer: &Peer) -> Option<socks::Request> {
    let handshake = async {
        let mut hs = socks::Handshake::new();
        let mut buf = Vec::new();
        loop {
            match hs.step(&buf) {
                Ok(Step::Need(n)) => read_more(socket, &mut buf, n).await?,
                Ok(Step::Reply { bytes, consumed }) => {
                    write_all(socket, &bytes).await?;
                    buf.drain(..consumed.min(buf.len()));
                }
                Ok(Step::Connect { request, .. }) => return Ok(request),
                Err(e) => {
                    if let Some(reply) = e.reply() {
                        refuse(socket, &reply).await;
                    }
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
                }
            }
        }
    };
    match tokio::time::timeout(SOCKS_HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(request)) => Some(request),
        Ok(Err(e)) => {
            info!("SOCKS connection from {peer} closed: {e}");
            None
        }
        Err(_) => {
            info!(
                "SOCKS connection from {peer} closed: no request within {} s",
                SOCKS_HANDSHAKE_TIMEOUT.as_secs()
            );
            None
        }
    }
}

/// What a SOCKS client is told of a channel the server refused. sshd says why a connect
/// failed only in words (its `strerror`), so those decide between the codes.
fn socks_failure(e: &OpenError) -> Failure {
    use ssh_connection::OpenFailureReason as R;
    match e {
        OpenError::Refused { reason, .. } if *reason == R::ADMINISTRATIVELY_PROHIBITED => {
            Failure::NotAllowed
        }
        OpenError::Refused {
            reason,
            description,
        } if *reason == R::CONNECT_FAILED => {
            let d = description.to_ascii_lowercase();
            if d.contains("refused") {
                Failure::ConnectionRefused
            } else if d.contains("network is unreachable") {
                Failure::NetworkUnreachable
            } else {
                Failure::HostUnreachable
            }
        }
        _ => Failure::General,
    }
}

/// Sends a SOCKS refusal and ends the connection so that the client reads it: closing a
/// socket with unread input would reset it, and the reset can overtake the reply. So the
/// write side is closed after the reply, and what the client still sends (the rest of a
/// refused request) is read and dropped, for at most a second and [`socks::MAX_HANDSHAKE`]
/// bytes.
async fn refuse(socket: &LocalStream, reply: &[u8]) {
    if write_all(socket, reply).await.is_err() {
        return;
    }
    socket.shutdown_write();
    let drain = async {
        let mut left = socks::MAX_HANDSHAKE;
        let mut scratch = [0u8; 256];
        while left > 0 {
            if std::future::poll_fn(|cx| socket.poll_read_ready(cx))
                .await
                .is_err()
            {
                return;
            }
            match socket.try_read_vectored(&mut [io::IoSliceMut::new(&mut scratch)]) {
                Ok(0) => return,
                Ok(k) => left = left.saturating_sub(k),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Reads exactly `n` more bytes onto the end of `buf`.
async fn read_more(socket: &LocalStream, buf: &mut Vec<u8>, n: usize) -> io::Result<()> {
    let start = buf.len();
    buf.resize(start + n, 0);
    let mut got = 0;
    while got < n {
        std::future::poll_fn(|cx| socket.poll_read_ready(cx)).await?;
        match socket.try_read_vectored(&mut [io::IoSliceMut::new(&mut buf[start + got..])]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection before its request was complete",
                ));
            }
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `bytes` to the socket.
pub(crate) async fn write_all(socket: &LocalStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        std::future::poll_fn(|cx| socket.poll_write_ready(cx)).await?;
        match socket.try_write(bytes) {
            Ok(k) => bytes = &bytes[k..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn open(
    session: &SessionHandle,
    socket: &LocalStream,
    peer: &Peer,
    target: &Destination,
) -> Result<ChannelStream, OpenError> {
    socket.set_nodelay();
    open_channel(session, target, peer).await
}

/// Opens the channel `target` takes (`direct-tcpip` or `direct-streamlocal@openssh.com`) for
/// a connection from `peer`.
pub async fn open_channel(
    session: &SessionHandle,
    target: &Destination,
    peer: &Peer,
) -> Result<ChannelStream, OpenError> {
    match target {
        Destination::Tcp(t) => {
            let (originator, originator_port) = peer.originator();
            session
                .open_direct_tcpip(&t.host, t.port, &originator, originator_port)
                .await
        }
        Destination::Unix(path) => session.open_direct_streamlocal(path).await,
        Destination::Socks => Err(OpenError::Refused {
            reason: ssh_connection::OpenFailureReason::CONNECT_FAILED,
            description: "a SOCKS forward's connections name their own targets".into(),
        }),
    }
}

/// Forwards one connection over `channel`; if the session dies meanwhile, the socket is
/// reset at once.
///
/// Server to client, the driver writes what one read from the server brought for the
/// channel to the socket in one system call, from the channel buffer, and
/// [`ChannelStream::poll_send_to`] writes what the socket did not take at once. Client to
/// server, reads go through one buffer into the packet being built.
pub async fn forward(
    socket: Arc<LocalStream>,
    peer: Peer,
    session: &SessionHandle,
    channel: ChannelStream,
    observer: &Arc<dyn TrafficObserver>,
) -> io::Result<()> {
    debug!(channel = channel.id().0, %peer, "forwarding");
    let counter = observer.clone();
    channel.set_direct_writer(
        socket.clone(),
        Some(Arc::new(move |n| counter.received_from_remote(n))),
    );
    let copy = async {
        tokio::try_join!(
            upload(&socket, &channel, &**observer),
            download(&socket, &channel, &**observer)
        )
    };
    let result = tokio::select! {
        r = copy => r.map(|(sent, received)| {
            debug!(%peer, sent, received, "connection finished");
        }),
        e = session.ended() => Err(io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string())),
    };
    if result.is_err()
        && let Some(e) = session.error()
    {
        info!("connection from {peer} reset: the SSH session ended ({e})");
        socket.set_reset_on_close();
    }
    result
}

/// Local socket to channel, then CHANNEL_EOF at the socket's end of file. Each read goes
/// straight into the CHANNEL_DATA packets being built (see
/// [`ChannelStream::poll_recv_from`]): the connection holds no buffer of its own.
async fn upload(
    socket: &LocalStream,
    channel: &ChannelStream,
    observer: &dyn TrafficObserver,
) -> io::Result<u64> {
    let mut size = ReadSize::default();
    let mut total = 0u64;
    loop {
        let n = match std::future::poll_fn(|cx| channel.poll_recv_from(cx, socket, size.0)).await {
            Ok(0) => break,
            Ok(n) => n,
            // The server closed the channel (its end of the connection is gone): an end like
            // a TCP peer's close, not a failure of the session.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe && channel.closed_by_server() => {
                return Ok(total);
            }
            Err(e) => {
                channel.send_eof();
                return Err(e);
            }
        };
        size.read(n);
        total += n as u64;
        observer.sent_to_remote(n as u64);
    }
    channel.send_eof();
    Ok(total)
}

/// How much the next read from a connection asks for, client to server: little while reads
/// are short (a query, a login), so their packets claim little room in the output buffer;
/// doubling while reads fill it (bulk uploads), up to [`READ_MAX`]; halving again when they
/// come back under a quarter of it.
#[derive(Debug)]
struct ReadSize(usize);

impl Default for ReadSize {
    fn default() -> Self {
        Self(READ_MIN)
    }
}

impl ReadSize {
    fn read(&mut self, n: usize) {
        if n >= self.0 {
            self.0 = (self.0 * 2).min(READ_MAX);
        } else if n < self.0 / 4 {
            self.0 = (self.0 / 2).max(READ_MIN);
        }
    }
}

/// Channel to local socket, then a half-close of the socket at the server's EOF.
async fn download(
    socket: &LocalStream,
    channel: &ChannelStream,
    observer: &dyn TrafficObserver,
) -> io::Result<u64> {
    let mut total = 0u64;
    while let Sent::Bytes(n) = std::future::poll_fn(|cx| channel.poll_send_to(cx, socket)).await? {
        total += n as u64;
        observer.received_from_remote(n as u64);
    }
    socket.shutdown_write();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_logged_at_most_once_per_period_with_a_count() {
        let t0 = Instant::now();
        let mut e = AcceptErrors::default();
        assert_eq!(e.should_log(t0), Some(0));
        for i in 1..=50 {
            assert_eq!(e.should_log(t0 + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(e.should_log(t0 + ACCEPT_ERROR_LOG_EVERY), Some(50));
        assert_eq!(e.should_log(t0 + ACCEPT_ERROR_LOG_EVERY), None);
    }

    #[test]
    fn reads_grow_while_they_fill_and_shrink_when_short() {
        let mut r = ReadSize::default();
        assert_eq!(r.0, READ_MIN);
        r.read(READ_MIN / 2);
        assert_eq!(r.0, READ_MIN, "a read of half does not change it");
        r.read(READ_MIN);
        assert_eq!(r.0, READ_MIN * 2, "a full read doubles it");
        for _ in 0..10 {
            r.read(r.0);
        }
        assert_eq!(r.0, READ_MAX, "it grows no further");
        r.read(READ_MAX / 4 - 1);
        assert_eq!(r.0, READ_MAX / 2, "a short read halves it");
        for _ in 0..10 {
            r.read(1);
        }
        assert_eq!(r.0, READ_MIN, "it shrinks no further");
    }

    #[test]
    fn targets_print_as_ssh_does() {
        let t = Target {
            host: "db.internal".into(),
            port: 5432,
        };
        assert_eq!(t.to_string(), "db.internal:5432");
        let t = Target {
            host: "fd00::5".into(),
            port: 5432,
        };
        assert_eq!(t.to_string(), "[fd00::5]:5432");
    }
}
