//! Remote port forwarding (`-R`, and the fleet's `kind = "remote"` tunnels): on every session
//! the supervisor brings up, each forward is requested with `tcpip-forward` (or OpenSSH's
//! `streamlocal-forward@openssh.com`, for a Unix socket on the server); each
//! `forwarded-tcpip` (`forwarded-streamlocal@openssh.com`) channel the server then opens is
//! connected to its target from here, confirmed only once that connect succeeds (refused with
//! CONNECT_FAILED if it fails, as OpenSSH's client answers), and copied both ways as a local
//! forward is. A forward that is stopped (the command line shuts down, a reload removes the
//! tunnel) sends the cancel for what was granted. A forward with no target (`-R port`) is a
//! dynamic one: its channels are confirmed at once and carry a SOCKS request
//! (`dynamic::serve`).
//!
//! ```text
//!  Router (one per supervisor): accept_forwarded ─(address and bound port, or path)─> queue
//!                               (no route: refused; queue full: refused, resource shortage)
//!  run_forward (one per forward):
//!    SupervisorHandle::session ─> request_remote_forward ─> report(Listening(port))
//!          ▲        queue ─> TcpStream::connect(target) ─> confirm ─> tunnel::forward
//!          │                                      └ failed ─> refuse (connect failed)
//!          └── session ended: wait for the next one, request again
//!    stop ─> cancel_remote_forward ─> open connections get the drain time
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ssh_connection::OpenFailureReason;
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use ssh_connection::ForwardListen;

use crate::cli::{ForwardSpec, Listen};
use crate::driver::{ForwardedChannel, RemoteForwardError, SessionHandle, bound_listen};
use crate::local::{LocalStream, Peer};
use crate::supervisor::SupervisorHandle;
use crate::tunnel::{Destination, NoObserver, TrafficObserver};

mod dynamic;

pub use dynamic::{PermitRemoteOpen, PermittedOpen};

/// How many channels may wait for one forward before more are refused.
const MAX_QUEUED: usize = 256;
/// How long to wait for a session before asking again.
const SESSION_WAIT: Duration = Duration::from_secs(3600);

/// One remote forward: where the server listens, and where we connect from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSpec {
    /// Where the server listens: the address sent in `tcpip-forward` (`localhost` when none
    /// was given, empty for `*`) and the port (0 lets it pick); or the path of a Unix socket
    /// on the server, sent in `streamlocal-forward@openssh.com`.
    pub listen: ForwardListen,
    /// Where connections go from here: a host and port, or a Unix socket.
    pub target: Destination,
}

impl RemoteSpec {
    /// The spec of a `-R` forward, with ssh's address rules.
    pub fn from_forward(f: &ForwardSpec) -> Self {
        let listen = match &f.listen {
            Listen::Port { bind_address, port } => ForwardListen::Tcp {
                address: match bind_address.as_deref() {
                    None => "localhost".to_owned(),
                    Some("*") | Some("") => String::new(),
                    Some(a) => a.to_owned(),
                },
                port: u32::from(*port),
            },
            Listen::Path(path) => ForwardListen::Unix {
                path: path.to_string_lossy().into_owned(),
            },
        };
        Self {
            listen,
            target: f.to.clone(),
        }
    }

    /// A TCP forward on `address:port` (port 0: the server picks) to `target`.
    pub fn tcp(address: &str, port: u16, target: Destination) -> Self {
        Self {
            listen: ForwardListen::tcp(address, u32::from(port)),
            target,
        }
    }

    /// Whether the server picks the port (TCP, port 0 asked for).
    pub fn server_picks_port(&self) -> bool {
        matches!(self.listen, ForwardListen::Tcp { port: 0, .. })
    }

    /// What the server listens on before it answers, when that is known: a fixed port or a
    /// path (`None` when the server picks the port).
    fn known_listen(&self) -> Option<&ForwardListen> {
        (!self.server_picks_port()).then_some(&self.listen)
    }

    /// Where the server listens, `port` standing for the port (`localhost:8022`, `*:0`); a
    /// socket's path as it is.
    pub fn listen_label(&self, port: u32) -> String {
        match &self.listen {
            ForwardListen::Tcp { address, .. } => match address.as_str() {
                "" => format!("*:{port}"),
                a if a.contains(':') => format!("[{a}]:{port}"),
                a => format!("{a}:{port}"),
            },
            ForwardListen::Unix { path } => path.clone(),
        }
    }

    /// Where the server listens as asked for (`localhost:8022`, `*:0`, a path).
    pub fn label(&self) -> String {
        self.listen_label(listen_port(&self.listen))
    }

    /// How ssh names the forward in its messages: `listen port 8022`, `listen path /p`.
    fn what(&self) -> String {
        match &self.listen {
            ForwardListen::Tcp { port, .. } => format!("listen port {port}"),
            ForwardListen::Unix { path } => format!("listen path {path}"),
        }
    }
}

/// Where a remote forward stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardState {
    /// Waiting for a session or for the server's answer.
    Requesting,
    /// The server listens on this port (0 for a Unix socket).
    Listening(u32),
    /// The server refused the forward on the current session (asked again on the next).
    Refused(String),
}

/// Told every change of a forward's state.
pub type Report = Arc<dyn Fn(&RemoteSpec, &ForwardState) + Send + Sync>;

type Routes = Arc<Mutex<HashMap<ForwardListen, mpsc::Sender<ForwardedChannel>>>>;

/// Hands each channel the server opens on a supervisor's sessions to the forward it belongs
/// to (by listen address and the port the server listens on, or by path), so that any number
/// of forwards share a session. A channel nobody claims is refused (never confirmed).
#[derive(Clone, Debug, Default)]
pub struct Router {
    routes: Routes,
}

impl Router {
    /// Starts routing the channels of every session `sessions` brings up; the task ends when
    /// the supervisor stops.
    pub fn spawn(sessions: SupervisorHandle) -> (Self, JoinHandle<()>) {
        let router = Self::default();
        let routes = router.routes.clone();
        (router, tokio::spawn(route(sessions, routes)))
    }

    fn routes(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ForwardListen, mpsc::Sender<ForwardedChannel>>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes `listen` (with the port the server listens on) to `to`; false, and nothing
    /// changed, when another forward that
    /// still runs has the route. Overwriting it would hand that forward's connections to this
    /// one, which the server refuses (it listens there for the other), so they would be
    /// queued to a forward that never serves them. The fleet refuses two remote tunnels with
    /// one port on one bastion when it loads the file, and a stopped forward lets go of its
    /// route before a replacement on the same port starts; this is the last guard.
    fn add(&self, listen: &ForwardListen, to: &mpsc::Sender<ForwardedChannel>) -> bool {
        let mut routes = self.routes();
        if let Some(held) = routes.get(listen)
            && !held.same_channel(to)
            && !held.is_closed()
        {
            return false;
        }
        routes.insert(listen.clone(), to.clone());
        true
    }

    /// Removes the route of `listen` if it still leads to `to`.
    fn remove(&self, listen: &ForwardListen, to: &mpsc::Sender<ForwardedChannel>) {
        let mut routes = self.routes();
        if routes.get(listen).is_some_and(|t| t.same_channel(to)) {
            routes.remove(listen);
        }
    }
}

async fn route(sessions: SupervisorHandle, routes: Routes) {
    loop {
        let Ok(session) = sessions.session(SESSION_WAIT).await else {
            if sessions.is_stopping() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        while let Some(ch) = session.accept_forwarded().await {
            let key = ch.from.bound();
            let to = routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned();
            // A channel dropped here is refused (OPEN_FAILURE, administratively prohibited).
            match to.map(|to| to.try_send(ch)) {
                Some(Ok(())) => {}
                Some(Err(TrySendError::Full(ch))) => {
                    debug!(forward = ?key, "remote forward busy: channel refused");
                    ch.refuse(
                        OpenFailureReason::RESOURCE_SHORTAGE,
                        "too many connections waiting for the forward",
                    );
                }
                Some(Err(TrySendError::Closed(_))) => {
                    debug!(forward = ?key, "remote forward gone: channel refused");
                }
                None => debug!(forward = ?key, "channel for no running forward: refused"),
            }
        }
        if sessions.is_stopping() {
            return;
        }
        // The session ended; the supervisor publishes the next one.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a running remote forward works with.
#[derive(Clone)]
pub struct ForwardContext {
    /// The sessions to request the forward on.
    pub sessions: SupervisorHandle,
    /// The router of those sessions.
    pub router: Router,
    /// Counts the forward's connections and bytes.
    pub observer: Arc<dyn TrafficObserver>,
    /// Told every change of the forward's state.
    pub report: Report,
    /// With `ExitOnForwardFailure`: a refusal ends the forward with an error.
    pub exit_on_failure: bool,
    /// How long open connections may finish once the forward stops.
    pub drain: Duration,
    /// How long a connect to the target may take (`ConnectTimeout`, else 30 s) before the
    /// channel is refused: a target that drops SYNs would otherwise hold the server's
    /// connection for the kernel's two minutes, and a slot of the 1024 meanwhile.
    pub connect_limit: Duration,
    /// Where a dynamic forward's (`-R port`, SOCKS) connections may go: `PermitRemoteOpen`.
    pub permit_open: Arc<PermitRemoteOpen>,
    /// Notified once the forward has stopped asking the server for it: its cancel, if it had
    /// been granted, is queued on the session. A replacement with the same port asked for
    /// after that reaches the server after the cancel.
    pub released: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for ForwardContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardContext")
            .field("exit_on_failure", &self.exit_on_failure)
            .field("drain", &self.drain)
            .field("connect_limit", &self.connect_limit)
            .finish_non_exhaustive()
    }
}

/// How long a forward stopped while its request was out waits for the answer, to cancel a
/// grant.
const ANSWER_AFTER_STOP: Duration = Duration::from_secs(5);
/// How often a forward whose port another forward of the session still routes asks again.
const ROUTE_RETRY: Duration = Duration::from_secs(1);
/// The first pause before a forward the server refused is asked for again on the same
/// session; it doubles with each refusal in a row, up to [`REFUSED_RETRY_MAX`].
const REFUSED_RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest pause between two requests for a forward the server keeps refusing.
const REFUSED_RETRY_MAX: Duration = Duration::from_secs(30);

/// The port of `listen`; 0 for a Unix socket.
fn listen_port(listen: &ForwardListen) -> u32 {
    match listen {
        ForwardListen::Tcp { port, .. } => *port,
        ForwardListen::Unix { .. } => 0,
    }
}

/// What is said when the server refuses `spec`: ssh's words, and for a Unix socket what
/// sshd refuses one for. sshd never removes the socket files it listens on, so the path of
/// a forward whose session ended stays taken for every later session, unless sshd's
/// `StreamLocalBindUnlink` lets it replace the file.
fn refused_message(spec: &RemoteSpec) -> String {
    let msg = format!("remote port forwarding failed for {}", spec.what());
    match spec.listen {
        ForwardListen::Tcp { .. } => msg,
        ForwardListen::Unix { .. } => format!(
            "{msg} (OpenSSH's sshd refuses a path where a file exists, and leaves its sockets \
             behind when a session ends: set StreamLocalBindUnlink yes in its sshd_config; it \
             also refuses when AllowStreamLocalForwarding or the key's options forbid it, or \
             when it cannot create the socket there; other servers, Dropbear for one, may not \
             listen on sockets at all)"
        ),
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender stops the forward too.
    let _ = stop.wait_for(|s| *s).await;
}

/// What a forward does after a try that failed.
enum Next {
    /// Ask again on the same session.
    Retry,
    /// The session ended: ask on the next one.
    NewSession,
    /// Stopped, or ended by `ExitOnForwardFailure`, with this result.
    Stop(Result<(), String>),
}

/// After a failed try (`msg`): reports it, ends the forward under `ExitOnForwardFailure`,
/// warns when `tell` (once per run of failures, not at every retry), then waits `pause`, the
/// session's end or the stop, whichever comes first.
async fn failed_try(
    ctx: &ForwardContext,
    report: &impl Fn(ForwardState),
    msg: &str,
    tell: bool,
    session: &SessionHandle,
    stop: &mut watch::Receiver<bool>,
    pause: Duration,
) -> Next {
    report(ForwardState::Refused(msg.to_owned()));
    if ctx.exit_on_failure {
        return Next::Stop(Err(format!("Error: {msg}")));
    }
    if tell {
        warn!("Warning: {msg}");
    } else {
        debug!("{msg}");
    }
    tokio::select! {
        _ = session.ended() => Next::NewSession,
        _ = stopped(stop) => Next::Stop(Ok(())),
        _ = tokio::time::sleep(pause) => Next::Retry,
    }
}

/// Serves one forward on every session until `stop` turns true: then the server is told to
/// stop listening (`cancel-tcpip-forward`), and open connections get the drain time. Returns
/// an error message (for exit status 255) when the server refuses the forward and
/// `exit_on_failure` is set.
pub async fn run_forward(
    ctx: ForwardContext,
    spec: RemoteSpec,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let (tx, mut rx) = mpsc::channel(MAX_QUEUED);
    let mut conns = JoinSet::new();
    let report = |state: ForwardState| (ctx.report)(&spec, &state);
    // Whether the last try found the port routed to another forward (told once, not on
    // every retry).
    let mut route_taken = false;
    // Refusals by the server in a row on this session.
    let mut refusals = 0u32;
    let result = loop {
        let session = tokio::select! {
            s = ctx.sessions.session(SESSION_WAIT) => s,
            _ = stopped(&mut stop) => break Ok(()),
        };
        let session = match session {
            Ok(s) => s,
            Err(e) => {
                if ctx.sessions.is_stopping() {
                    break Ok(());
                }
                debug!(error = %e, "no session for the remote forward yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // A fixed port or a path is routed before the answer, so that no channel opened
        // right after it finds no route (a picked port can only be routed once it is known).
        if let Some(listen) = spec.known_listen()
            && !ctx.router.add(listen, &tx)
        {
            // Another forward of this session has the port (one being stopped that has not
            // let go yet): the server would refuse this one. Asked again shortly.
            let msg = format!(
                "remote port forwarding failed for {}: another forward on the session has {}",
                spec.what(),
                spec.listen_label(listen_port(listen))
            );
            let tell = !route_taken;
            route_taken = true;
            match failed_try(&ctx, &report, &msg, tell, &session, &mut stop, ROUTE_RETRY).await {
                Next::Retry | Next::NewSession => continue,
                Next::Stop(r) => break r,
            }
        }
        route_taken = false;
        report(ForwardState::Requesting);
        let request = session.request_remote_forward(spec.listen.clone());
        tokio::pin!(request);
        let answer = tokio::select! {
            r = &mut request => r,
            _ = stopped(&mut stop) => {
                // Stopped while asking: a grant may still come, and the server would keep
                // listening with nobody to serve it. Wait for the answer a while, cancel a
                // grant.
                if let Ok(Ok(port)) = tokio::time::timeout(ANSWER_AFTER_STOP, &mut request).await {
                    session.cancel_remote_forward(&bound_listen(&spec.listen, port));
                    debug!(port, "remote forward granted after the stop: cancelled");
                }
                break Ok(());
            }
        };
        let port = match answer {
            Ok(port) => port,
            Err(RemoteForwardError::Refused) => {
                // Nothing comes for a port the server does not listen on for us.
                if let Some(listen) = spec.known_listen() {
                    ctx.router.remove(listen, &tx);
                }
                let msg = refused_message(&spec);
                // Told once per session; asked again on this session after a pause that
                // doubles up to a cap, and at once on the next session. ssh asks once per
                // connection, but it does not reconnect: a refusal right after a reconnect
                // often means the previous session's sshd process still holds the port until
                // it notices its client is gone, and the port is free minutes later.
                let pause = REFUSED_RETRY_MIN
                    .saturating_mul(1u32 << refusals.min(5))
                    .min(REFUSED_RETRY_MAX);
                let tell = refusals == 0;
                refusals = refusals.saturating_add(1);
                match failed_try(&ctx, &report, &msg, tell, &session, &mut stop, pause).await {
                    Next::Retry => continue,
                    Next::NewSession => {
                        refusals = 0;
                        continue;
                    }
                    Next::Stop(r) => break r,
                }
            }
            Err(RemoteForwardError::Session(e)) => {
                debug!(error = %e, "session ended while requesting the remote forward");
                continue;
            }
        };
        debug!(port, target = %spec.target, "remote forward in place");
        refusals = 0;
        let granted = bound_listen(&spec.listen, port);
        if !ctx.router.add(&granted, &tx) {
            // A port the server picked that another forward of the session routes (it asked
            // for that port and was refused, or was granted after a stop): give it back.
            session.cancel_remote_forward(&granted);
            let msg = format!(
                "remote port forwarding failed for {}: port {port} the server gave is routed \
                 to another forward on the session",
                spec.what()
            );
            match failed_try(&ctx, &report, &msg, true, &session, &mut stop, ROUTE_RETRY).await {
                Next::Retry | Next::NewSession => continue,
                Next::Stop(r) => break r,
            }
        }
        report(ForwardState::Listening(port));
        let stopping = loop {
            tokio::select! {
                Some(ch) = rx.recv() => {
                    if spec.target == Destination::Socks {
                        conns.spawn(dynamic::serve(
                            ch,
                            session.clone(),
                            ctx.observer.clone(),
                            ctx.connect_limit,
                            ctx.permit_open.clone(),
                        ));
                    } else {
                        conns.spawn(connect(
                            ch,
                            spec.target.clone(),
                            session.clone(),
                            ctx.observer.clone(),
                            ctx.connect_limit,
                        ));
                    }
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = session.ended() => break false,
                _ = stopped(&mut stop) => break true,
            }
        };
        ctx.router.remove(&granted, &tx);
        if stopping {
            session.cancel_remote_forward(&granted);
            debug!(port, "remote forward cancelled");
            break Ok(());
        }
        report(ForwardState::Requesting);
    };
    // The route goes before the release is told: a replacement on the same port, started
    // once this one let go, finds the route free.
    if let Some(listen) = spec.known_listen() {
        ctx.router.remove(listen, &tx);
    }
    ctx.released.notify_one();
    rx.close();
    let _ = tokio::time::timeout(ctx.drain, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
    result
}

/// A connection to the target: TCP, or a Unix socket here.
async fn connect_to(target: &Destination) -> std::io::Result<LocalStream> {
    match target {
        Destination::Tcp(t) => TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map(LocalStream::Tcp),
        Destination::Unix(path) => tokio::net::UnixStream::connect(path)
            .await
            .map(LocalStream::Unix),
        // A dynamic forward's connections name their targets (`dynamic::serve`).
        Destination::Socks => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "a dynamic remote forward's connections name their own targets",
        )),
    }
}

/// How Rust's standard library starts the message of a failed name lookup.
const LOOKUP_FAILED: &str = "failed to lookup address information: ";

/// Connects one channel of the forward to its target, then confirms it and copies both
/// ways. Until the connect succeeds the channel stays unconfirmed, so the server may send
/// nothing on it (a target that never answers costs no window); a target that cannot be
/// reached gets the channel refused with CONNECT_FAILED and the system's error text, as
/// OpenSSH's client does (the client on the server's side sees the connection end). A
/// connect still unanswered after `limit` is refused the same way, as "Connection timed
/// out": OpenSSH's client leaves that to the kernel (about two minutes on Linux).
async fn connect(
    ch: ForwardedChannel,
    target: Destination,
    session: SessionHandle,
    observer: Arc<dyn TrafficObserver>,
    limit: Duration,
) {
    // A channel of a session that ended before it was taken (queued while the session
    // died, picked up under the next one) has nothing to carry.
    if ch.session_failed() {
        debug!("remote forward: the channel's session ended before it was served");
        return;
    }
    let socket = match tokio::time::timeout(limit, connect_to(&target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            info!("remote forward: connecting to {target} failed: {e}");
            ch.refuse(OpenFailureReason::CONNECT_FAILED, &connect_error_text(&e));
            return;
        }
        Err(_) => {
            info!(
                "remote forward: connecting to {target} failed: no answer within {} s \
                 (ConnectTimeout)",
                limit.as_secs()
            );
            ch.refuse(OpenFailureReason::CONNECT_FAILED, "Connection timed out");
            return;
        }
    };
    debug!(
        from = %ch.from.originator, port = ch.from.originator_port, %target,
        "remote forward connection"
    );
    let stream = match ch.confirm() {
        Ok(stream) => stream,
        Err(e) => {
            debug!(
                error = %e,
                "remote forward: the channel's session ended before it was confirmed"
            );
            return;
        }
    };
    carry(socket, &target, &session, stream, &observer).await;
}

/// Copies a connected channel and its local connection both ways until both end, counted by
/// `observer`; in logs the connection is our end of it (or the socket's path).
async fn carry(
    socket: LocalStream,
    target: &Destination,
    session: &SessionHandle,
    stream: crate::driver::ChannelStream,
    observer: &Arc<dyn TrafficObserver>,
) {
    socket.set_nodelay();
    let peer = match &socket {
        LocalStream::Tcp(s) => Peer::Tcp(
            s.local_addr()
                .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        ),
        LocalStream::Unix(_) => Peer::Unix(Arc::from(std::path::Path::new(&target.to_string()))),
    };
    observer.opened();
    let _ = crate::tunnel::forward(Arc::new(socket), peer, session, stream, observer).await;
    observer.closed();
}

/// The text of a failed connect as the system words it ("Connection refused"), without the
/// " (os error N)" Rust adds: what OpenSSH's client sends in its OPEN_FAILURE (`strerror`).
/// A name that does not resolve is worded as `getaddrinfo` words it ("Name or service not
/// known"), without the prefix Rust adds, as OpenSSH's client sends `gai_strerror`.
fn connect_error_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    if let Some(gai) = text.strip_prefix(LOOKUP_FAILED) {
        return gai.to_owned();
    }
    match e.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .unwrap_or(&text)
            .to_owned(),
        None => text,
    }
}

/// How long a remote forward's connect to its target may take under `config`: its
/// `ConnectTimeout`, else the handshake's default limit (30 s).
pub fn connect_limit(config: &crate::config::TunnelConfig) -> Duration {
    config
        .session
        .connect_timeout
        .unwrap_or(crate::config::DEFAULT_HANDSHAKE_TIMEOUT)
}

/// A change to the remote forwards of [`serve`], asked on the control socket (`-O forward
/// -R`, `-O cancel -R`).
#[derive(Debug)]
pub enum RemoteChange {
    /// Add this forward. Answered with the port the server listens on (0 for a Unix socket)
    /// once it first does, or with the server's refusal, which ends it (ssh's master forgets
    /// a forward its server refused); once granted, it is asked again on every new session
    /// as a `-R` given at the start is. A forward already served is answered as it stands.
    Add(
        RemoteSpec,
        tokio::sync::oneshot::Sender<Result<u32, String>>,
    ),
    /// Cancel this forward (one given at the start too): answered once the server has been
    /// told to stop listening, or with why not.
    Cancel(RemoteSpec, tokio::sync::oneshot::Sender<Result<(), String>>),
}

/// Remote forwards one command serves at once; more asked on the control socket are refused.
pub const MAX_FORWARDS: usize = 256;

/// One forward [`serve`] runs.
struct Served {
    id: u64,
    spec: RemoteSpec,
    /// Stops it (cancels it on the server).
    stop: watch::Sender<bool>,
    /// The port the server last said it listens on.
    port: Option<u32>,
    /// Added on the control socket and not yet answered: a refusal ends it.
    first_answer_pending: bool,
    /// Waiting for the server's answer.
    answers: Vec<tokio::sync::oneshot::Sender<Result<u32, String>>>,
    /// Waiting for it to end.
    ended: Vec<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

/// Serves `forwards` (the command line's `-R`) over every session of `sessions` until `stop`
/// turns true, which cancels them; each connect to a target waits at most `connect_limit`,
/// and a dynamic forward's connections go only where `permit_open` allows; `up` is told once
/// the server has granted every forward (at once when there are none); `changes` adds and
/// cancels forwards on the way. Returns an error message (for exit status 255) when
/// `exit_on_failure` is set and the server refuses a forward given at the start.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    sessions: SupervisorHandle,
    forwards: Vec<RemoteSpec>,
    exit_on_failure: bool,
    connect_limit: Duration,
    permit_open: PermitRemoteOpen,
    up: tokio::sync::oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
    mut changes: mpsc::Receiver<RemoteChange>,
) -> Result<(), String> {
    // `up` is told once every forward given at the start has been granted.
    let waiting: std::collections::HashSet<String> =
        forwards.iter().map(|f| format!("{f:?}")).collect();
    let up = if waiting.is_empty() {
        let _ = up.send(());
        None
    } else {
        Some(up)
    };
    let up = Arc::new(Mutex::new((waiting, up)));
    // Each forward's state, by its id, for the answers to the control socket.
    let (events_tx, mut events) = mpsc::unbounded_channel::<(u64, ForwardState)>();
    let permit_open = Arc::new(permit_open);
    let released: Arc<tokio::sync::Notify> = Arc::default();
    // The router is spawned with the first forward.
    let mut routing: Option<(Router, JoinHandle<()>)> = None;
    let mut running: JoinSet<(u64, Result<(), String>)> = JoinSet::new();
    let mut served: Vec<Served> = Vec::new();
    let mut next_id = 0u64;
    let mut start = |spec: RemoteSpec,
                     at_start: bool,
                     running: &mut JoinSet<(u64, Result<(), String>)>,
                     served: &mut Vec<Served>|
     -> u64 {
        let router = routing
            .get_or_insert_with(|| Router::spawn(sessions.clone()))
            .0
            .clone();
        let id = next_id;
        next_id += 1;
        let events = events_tx.clone();
        let up = up.clone();
        let ctx = ForwardContext {
            sessions: sessions.clone(),
            router,
            observer: Arc::new(NoObserver),
            report: Arc::new(move |spec: &RemoteSpec, state: &ForwardState| {
                let _ = events.send((id, state.clone()));
                if !at_start {
                    return;
                }
                if let ForwardState::Listening(_) = state
                    && let Ok(mut up) = up.lock()
                {
                    up.0.remove(&format!("{spec:?}"));
                    if up.0.is_empty()
                        && let Some(tell) = up.1.take()
                    {
                        let _ = tell.send(());
                    }
                }
                // As ssh prints it, on every session.
                if let ForwardState::Listening(port) = state
                    && spec.server_picks_port()
                    && tracing::enabled!(tracing::Level::INFO)
                {
                    eprintln!(
                        "Allocated port {port} for remote forward to {}",
                        spec.target
                    );
                }
            }),
            exit_on_failure: exit_on_failure && at_start,
            drain: Duration::ZERO,
            connect_limit,
            permit_open: permit_open.clone(),
            released: released.clone(),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let task_spec = spec.clone();
        running.spawn(async move { (id, run_forward(ctx, task_spec, stop_rx).await) });
        served.push(Served {
            id,
            spec,
            stop: stop_tx,
            port: None,
            first_answer_pending: !at_start,
            answers: Vec::new(),
            ended: Vec::new(),
        });
        id
    };
    for f in forwards {
        start(f, true, &mut running, &mut served);
    }
    let result = loop {
        tokio::select! {
            Some(joined) = running.join_next(), if !running.is_empty() => {
                let Ok((id, r)) = joined else { continue };
                let Some(i) = served.iter().position(|s| s.id == id) else { continue };
                let s = served.remove(i);
                // Only a forward given at the start with ExitOnForwardFailure ends with an
                // error: the command's exit status.
                if let Err(msg) = r {
                    break Err(msg);
                }
                for e in s.ended {
                    let _ = e.send(Ok(()));
                }
                for a in s.answers {
                    let _ = a.send(Err("the forward ended".to_owned()));
                }
            }
            Some((id, state)) = events.recv() => {
                let Some(s) = served.iter_mut().find(|s| s.id == id) else { continue };
                match state {
                    ForwardState::Listening(port) => {
                        s.port = Some(port);
                        s.first_answer_pending = false;
                        for a in s.answers.drain(..) {
                            let _ = a.send(Ok(port));
                        }
                    }
                    ForwardState::Refused(msg) => {
                        s.port = None;
                        for a in s.answers.drain(..) {
                            let _ = a.send(Err(msg.clone()));
                        }
                        if s.first_answer_pending {
                            info!("{msg}: the forward asked on the control socket is dropped");
                            let _ = s.stop.send(true);
                        }
                    }
                    ForwardState::Requesting => s.port = None,
                }
            }
            Some(change) = changes.recv() => match change {
                RemoteChange::Add(spec, answer) => {
                    let full = served.len() >= MAX_FORWARDS;
                    let live = served.iter_mut().find(|s| s.spec == spec && !*s.stop.borrow());
                    match live {
                        Some(s) => match s.port {
                            Some(port) => {
                                let _ = answer.send(Ok(port));
                            }
                            None => s.answers.push(answer),
                        },
                        None if full => {
                            let _ = answer.send(Err(format!(
                                "{MAX_FORWARDS} remote forwards are served already"
                            )));
                        }
                        None => {
                            info!("-R {} added on the control socket", spec.label());
                            let id = start(spec, false, &mut running, &mut served);
                            if let Some(s) = served.iter_mut().find(|s| s.id == id) {
                                s.answers.push(answer);
                            }
                        }
                    }
                }
                RemoteChange::Cancel(spec, done) => {
                    match served.iter_mut().find(|s| s.spec == spec && !*s.stop.borrow()) {
                        Some(s) => {
                            info!("-R {} cancelled on the control socket", spec.label());
                            let _ = s.stop.send(true);
                            s.ended.push(done);
                        }
                        None => {
                            let _ = done.send(Err("port not forwarded".to_owned()));
                        }
                    }
                }
            },
            () = stopped(&mut stop) => {
                for s in &served {
                    let _ = s.stop.send(true);
                }
                while let Some(joined) = running.join_next().await {
                    if let Ok((id, _)) = joined
                        && let Some(i) = served.iter().position(|s| s.id == id)
                    {
                        for e in served.remove(i).ended {
                            let _ = e.send(Ok(()));
                        }
                    }
                }
                break Ok(());
            }
        }
    };
    if let Some((_, task)) = routing {
        task.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_error_is_described_as_the_system_words_it() {
        let refused = std::io::Error::from_raw_os_error(111);
        assert!(refused.to_string().ends_with("(os error 111)"), "{refused}");
        let text = connect_error_text(&refused);
        assert!(!text.contains("os error") && !text.is_empty(), "{text}");
        #[cfg(target_os = "linux")]
        assert_eq!(text, "Connection refused");
        assert_eq!(
            connect_error_text(&std::io::Error::other("no route")),
            "no route"
        );
    }

    // A target whose name does not resolve: the refusal reads as OpenSSH's client words it
    // (`gai_strerror`), without the standard library's prefix.
    #[tokio::test]
    async fn a_target_name_that_does_not_resolve_is_worded_as_getaddrinfo_words_it() {
        // `.invalid` never resolves (RFC 6761); the lookup fails without waiting on DNS
        // where no server answers for it, and within the bound where one does.
        let lookup = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            TcpStream::connect(("no-such-target.invalid", 5432)),
        )
        .await
        .unwrap_or_else(|_| panic!("the lookup did not end within 30 s"));
        let e = lookup
            .err()
            .unwrap_or_else(|| panic!("connected to a .invalid name"));
        assert!(e.to_string().starts_with(LOOKUP_FAILED), "{e}");
        let text = connect_error_text(&e);
        assert!(
            !text.is_empty() && !text.starts_with(LOOKUP_FAILED),
            "{text}"
        );
        assert_eq!(format!("{LOOKUP_FAILED}{text}"), e.to_string());
    }

    fn routed_to(
        router: &Router,
        address: &str,
        port: u32,
    ) -> Option<mpsc::Sender<ForwardedChannel>> {
        router
            .routes()
            .get(&ForwardListen::tcp(address, port))
            .cloned()
    }

    // A socket forward is routed by its path, apart from every TCP route, and its refusal
    // says what sshd refuses one for.
    #[test]
    fn a_socket_forward_is_routed_by_its_path_and_its_refusal_says_why() {
        let router = Router::default();
        let (first, _first_rx) = mpsc::channel(1);
        let (second, _second_rx) = mpsc::channel(1);
        let path = ForwardListen::unix("/run/a.sock");
        assert!(router.add(&path, &first));
        assert!(!router.add(&path, &second));
        assert!(router.add(&ForwardListen::tcp("/run/a.sock", 0), &second));
        assert!(router.add(&ForwardListen::unix("/run/b.sock"), &second));
        router.remove(&path, &first);
        assert!(router.add(&path, &second));

        let spec = RemoteSpec::from_forward(&ForwardSpec {
            listen: Listen::Path("/run/a.sock".into()),
            to: Destination::Unix("/here.sock".into()),
        });
        assert_eq!(spec.listen, path);
        assert!(!spec.server_picks_port());
        assert_eq!(spec.known_listen(), Some(&path));
        assert_eq!(bound_listen(&spec.listen, 0), path);
        let msg = refused_message(&spec);
        assert!(
            msg.starts_with("remote port forwarding failed for listen path /run/a.sock (")
                && msg.contains("StreamLocalBindUnlink yes"),
            "{msg}"
        );
        let tcp = RemoteSpec::tcp("", 0, Destination::Unix("/here.sock".into()));
        assert!(tcp.server_picks_port() && tcp.known_listen().is_none());
        assert_eq!(tcp.label(), "*:0");
        assert_eq!(
            refused_message(&tcp),
            "remote port forwarding failed for listen port 0"
        );
    }

    #[test]
    fn a_route_is_never_taken_from_a_forward_that_still_runs() {
        let router = Router::default();
        let (first, first_rx) = mpsc::channel(1);
        let (second, _second_rx) = mpsc::channel(1);
        assert!(router.add(&ForwardListen::tcp("localhost", 8022), &first));
        assert!(
            router.add(&ForwardListen::tcp("localhost", 8022), &first),
            "its own route, again"
        );
        assert!(
            !router.add(&ForwardListen::tcp("localhost", 8022), &second),
            "another running forward's route was overwritten"
        );
        assert!(routed_to(&router, "localhost", 8022).is_some_and(|t| t.same_channel(&first)));
        // Another address or port is another route.
        assert!(router.add(&ForwardListen::tcp("127.0.0.1", 8022), &second));
        assert!(router.add(&ForwardListen::tcp("localhost", 8023), &second));
        // Removing is only for the route's own forward.
        router.remove(&ForwardListen::tcp("localhost", 8022), &second);
        assert!(routed_to(&router, "localhost", 8022).is_some_and(|t| t.same_channel(&first)));
        // A forward that ended (its queue gone) without removing its route does not keep it.
        drop(first_rx);
        assert!(router.add(&ForwardListen::tcp("localhost", 8022), &second));
        assert!(routed_to(&router, "localhost", 8022).is_some_and(|t| t.same_channel(&second)));
        // Once the first lets go, the next one gets the route.
        let (third, _third_rx) = mpsc::channel(1);
        router.remove(&ForwardListen::tcp("localhost", 8022), &second);
        assert!(router.add(&ForwardListen::tcp("localhost", 8022), &third));
    }
}
