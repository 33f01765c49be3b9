//! Remote port forwarding (`-R`): on every session the supervisor brings up, each forward is
//! requested with `tcpip-forward`; each `forwarded-tcpip` channel the server then opens is
//! connected to its target from here and copied both ways as a local forward is.
//!
//! ```text
//!  SupervisorHandle::session ─> request_remote_forward (each -R, in order) ─> report
//!        ▲                      accept_forwarded ─> TcpStream::connect(target) ─> tunnel::forward
//!        └──── session ended: wait for the next one, request again ────┘
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::driver::{RemoteForwardError, SessionHandle};
use crate::supervisor::SupervisorHandle;
use crate::tunnel::{NoObserver, Target, TrafficObserver};

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
}

/// Serves `forwards` over every session of `sessions` until the supervisor stops. Returns an
/// error message (for exit status 255) when `exit_on_failure` is set and the server refuses
/// a forward.
pub async fn serve(
    sessions: SupervisorHandle,
    forwards: Vec<RemoteSpec>,
    exit_on_failure: bool,
) -> Result<(), String> {
    if forwards.is_empty() {
        return std::future::pending().await;
    }
    loop {
        let session = match sessions.session(Duration::from_secs(3600)).await {
            Ok(s) => s,
            Err(e) => {
                if sessions.is_stopping() {
                    return Ok(());
                }
                debug!(error = %e, "no session for the remote forwards yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut granted = Vec::new();
        for f in &forwards {
            match session
                .request_remote_forward(&f.listen_address, f.listen_port)
                .await
            {
                Ok(port) => {
                    if f.listen_port == 0 && tracing::enabled!(tracing::Level::INFO) {
                        eprintln!("Allocated port {port} for remote forward to {}", f.target);
                    }
                    debug!(port, target = %f.target, "remote forward in place");
                    granted.push((
                        f.listen_address.clone(),
                        u32::from(f.listen_port),
                        f.target.clone(),
                    ));
                }
                Err(RemoteForwardError::Refused) => {
                    let msg = format!(
                        "remote port forwarding failed for listen port {}",
                        f.listen_port
                    );
                    if exit_on_failure {
                        return Err(format!("Error: {msg}"));
                    }
                    warn!("Warning: {msg}");
                }
                Err(RemoteForwardError::Session(e)) => {
                    debug!(error = %e, "session ended while requesting remote forwards");
                    break;
                }
            }
        }
        accept_all(&session, &granted).await;
        if sessions.is_stopping() {
            return Ok(());
        }
    }
}

/// Connects every channel the server opens for one of `granted` until the session ends.
async fn accept_all(session: &SessionHandle, granted: &[(String, u32, Target)]) {
    let observer: Arc<dyn TrafficObserver> = Arc::new(NoObserver);
    while let Some(ch) = session.accept_forwarded().await {
        let Some((_, _, target)) = granted
            .iter()
            .find(|(a, p, _)| *a == ch.from.address && *p == ch.from.port)
        else {
            continue;
        };
        let target = target.clone();
        let session = session.clone();
        let observer = observer.clone();
        tokio::spawn(async move {
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
            let _ = crate::tunnel::forward(Arc::new(socket), peer, &session, ch.stream, &observer)
                .await;
        });
    }
}
