//! Remote port forwarding (`-R`, and the fleet's `kind = "remote"` tunnels): on every session
//! the supervisor brings up, each forward is requested with `tcpip-forward`; each
//! `forwarded-tcpip` channel the server then opens is connected to its target from here and
//! copied both ways as a local forward is. A forward that is stopped (the command line shuts
//! down, a reload removes the tunnel) sends `cancel-tcpip-forward` for the port granted.
//!
//! ```text
//!  Router (one per supervisor): accept_forwarded ─(address, bound port)─> the forward's queue
//!  run_forward (one per forward):
//!    SupervisorHandle::session ─> request_remote_forward ─> report(Listening(port))
//!          ▲                      queue ─> TcpStream::connect(target) ─> tunnel::forward
//!          └── session ended: wait for the next one, request again ──┘
//!    stop ─> cancel_remote_forward ─> open connections get the drain time
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::driver::{ForwardedChannel, RemoteForwardError, SessionHandle};
use crate::supervisor::SupervisorHandle;
use crate::tunnel::{NoObserver, Target, TrafficObserver};

/// How many channels may wait for one forward before more are refused (closed).
const MAX_QUEUED: usize = 256;
/// How long to wait for a session before asking again.
const SESSION_WAIT: Duration = Duration::from_secs(3600);

/// One remote forward: where the server listens, and where we connect from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSpec {
    /// The address sent in `tcpip-forward`: `localhost` when none was given, empty for `*`.
    pub listen_address: String,
    /// The port the server listens on; 0 lets it pick.
    pub listen_port: u16,
    /// Where connections go from here.
    pub target: Target,
}

impl RemoteSpec {
    /// The spec of a `-R` forward, with ssh's address rules.
    pub fn from_forward(f: &crate::cli::LocalForward) -> Self {
        let listen_address = match f.bind_address.as_deref() {
            None => "localhost".to_owned(),
            Some("*") | Some("") => String::new(),
            Some(a) => a.to_owned(),
        };
        Self {
            listen_address,
            listen_port: f.bind_port,
            target: Target {
                host: f.host.clone(),
                port: f.host_port,
            },
        }
    }

    /// Where the server listens, `port` standing for the port (`localhost:8022`, `*:0`).
    pub fn listen_label(&self, port: u32) -> String {
        match self.listen_address.as_str() {
            "" => format!("*:{port}"),
            a if a.contains(':') => format!("[{a}]:{port}"),
            a => format!("{a}:{port}"),
        }
    }
}

/// Where a remote forward stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardState {
    /// Waiting for a session or for the server's answer.
    Requesting,
    /// The server listens on this port.
    Listening(u32),
    /// The server refused the forward on the current session (asked again on the next).
    Refused(String),
}

/// Told every change of a forward's state.
pub type Report = Arc<dyn Fn(&RemoteSpec, &ForwardState) + Send + Sync>;

type Routes = Arc<Mutex<HashMap<(String, u32), mpsc::Sender<ForwardedChannel>>>>;

/// Hands each `forwarded-tcpip` channel of a supervisor's sessions to the forward it belongs
/// to (by listen address and the port the server listens on), so that any number of
/// forwards share a session. A channel nobody claims is closed.
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
    ) -> std::sync::MutexGuard<'_, HashMap<(String, u32), mpsc::Sender<ForwardedChannel>>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, address: &str, port: u32, to: &mpsc::Sender<ForwardedChannel>) {
        self.routes().insert((address.to_owned(), port), to.clone());
    }

    /// Removes the route of `address:port` if it still leads to `to`.
    fn remove(&self, address: &str, port: u32, to: &mpsc::Sender<ForwardedChannel>) {
        let mut routes = self.routes();
        let key = (address.to_owned(), port);
        if routes.get(&key).is_some_and(|t| t.same_channel(to)) {
            routes.remove(&key);
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
            let key = (ch.from.address.clone(), ch.from.bound_port);
            let to = routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned();
            match to {
                Some(to) => {
                    if to.try_send(ch).is_err() {
                        debug!(port = key.1, "remote forward busy or gone: channel closed");
                    }
                }
                None => debug!(port = key.1, "channel for no running forward: closed"),
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
            .finish_non_exhaustive()
    }
}

/// How long a forward stopped while its request was out waits for the answer, to cancel a
/// grant.
const ANSWER_AFTER_STOP: Duration = Duration::from_secs(5);

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender stops the forward too.
    let _ = stop.wait_for(|s| *s).await;
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
        report(ForwardState::Requesting);
        // A fixed port is routed before the answer, so that no channel opened right after
        // it finds no route (a picked port can only be routed once it is known).
        if spec.listen_port != 0 {
            ctx.router
                .add(&spec.listen_address, u32::from(spec.listen_port), &tx);
        }
        let request = session.request_remote_forward(&spec.listen_address, spec.listen_port);
        tokio::pin!(request);
        let answer = tokio::select! {
            r = &mut request => r,
            _ = stopped(&mut stop) => {
                // Stopped while asking: a grant may still come, and the server would keep
                // listening with nobody to serve it. Wait for the answer a while, cancel a
                // grant.
                if let Ok(Ok(port)) = tokio::time::timeout(ANSWER_AFTER_STOP, &mut request).await {
                    session.cancel_remote_forward(&spec.listen_address, port);
                    debug!(port, "remote forward granted after the stop: cancelled");
                }
                break Ok(());
            }
        };
        let port = match answer {
            Ok(port) => port,
            Err(RemoteForwardError::Refused) => {
                let msg = format!(
                    "remote port forwarding failed for listen port {}",
                    spec.listen_port
                );
                report(ForwardState::Refused(msg.clone()));
                if ctx.exit_on_failure {
                    break Err(format!("Error: {msg}"));
                }
                warn!("Warning: {msg}");
                // Asked again on the next session, as ssh does.
                tokio::select! {
                    _ = session.ended() => continue,
                    _ = stopped(&mut stop) => break Ok(()),
                }
            }
            Err(RemoteForwardError::Session(e)) => {
                debug!(error = %e, "session ended while requesting the remote forward");
                continue;
            }
        };
        debug!(port, target = %spec.target, "remote forward in place");
        report(ForwardState::Listening(port));
        ctx.router.add(&spec.listen_address, port, &tx);
        let stopping = loop {
            tokio::select! {
                Some(ch) = rx.recv() => {
                    conns.spawn(connect(ch, spec.target.clone(), session.clone(), ctx.observer.clone()));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = session.ended() => break false,
                _ = stopped(&mut stop) => break true,
            }
        };
        ctx.router.remove(&spec.listen_address, port, &tx);
        if stopping {
            session.cancel_remote_forward(&spec.listen_address, port);
            debug!(port, "remote forward cancelled");
            break Ok(());
        }
        report(ForwardState::Requesting);
    };
    ctx.released.notify_one();
    if spec.listen_port != 0 {
        ctx.router
            .remove(&spec.listen_address, u32::from(spec.listen_port), &tx);
    }
    rx.close();
    let _ = tokio::time::timeout(ctx.drain, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
    result
}

/// Connects one channel of the forward to its target and copies both ways. A target that
/// cannot be reached closes the channel (the client on the server's side sees the
/// connection end).
async fn connect(
    ch: ForwardedChannel,
    target: Target,
    session: SessionHandle,
    observer: Arc<dyn TrafficObserver>,
) {
    // A channel of a session that ended before it was taken (queued while the session
    // died, picked up under the next one) has nothing to carry.
    if ch.stream.session_failed() {
        debug!("remote forward: the channel's session ended before it was served");
        return;
    }
    let socket = match TcpStream::connect((target.host.as_str(), target.port)).await {
        Ok(s) => s,
        Err(e) => {
            info!("remote forward: connecting to {target} failed: {e}");
            return;
        }
    };
    let _ = socket.set_nodelay(true);
    let peer = socket
        .local_addr()
        .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    debug!(
        from = %ch.from.originator, port = ch.from.originator_port, %target,
        "remote forward connection"
    );
    observer.opened();
    let _ = crate::tunnel::forward(Arc::new(socket), peer, &session, ch.stream, &observer).await;
    observer.closed();
}

/// Serves `forwards` (the command line's `-R`) over every session of `sessions` until `stop`
/// turns true, which cancels them. Returns an error message (for exit status 255) when
/// `exit_on_failure` is set and the server refuses a forward.
pub async fn serve(
    sessions: SupervisorHandle,
    forwards: Vec<RemoteSpec>,
    exit_on_failure: bool,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    if forwards.is_empty() {
        stopped(&mut stop).await;
        return Ok(());
    }
    let (router, routing) = Router::spawn(sessions.clone());
    let ctx = ForwardContext {
        sessions,
        router,
        observer: Arc::new(NoObserver),
        report: Arc::new(|spec: &RemoteSpec, state: &ForwardState| {
            // As ssh prints it, on every session.
            if let ForwardState::Listening(port) = state
                && spec.listen_port == 0
                && tracing::enabled!(tracing::Level::INFO)
            {
                eprintln!(
                    "Allocated port {port} for remote forward to {}",
                    spec.target
                );
            }
        }),
        exit_on_failure,
        drain: Duration::ZERO,
        released: Arc::default(),
    };
    let mut running = JoinSet::new();
    for f in forwards {
        running.spawn(run_forward(ctx.clone(), f, stop.clone()));
    }
    let mut result = Ok(());
    while let Some(r) = running.join_next().await {
        if let Ok(Err(msg)) = r {
            result = Err(msg);
            break;
        }
    }
    routing.abort();
    result
}
