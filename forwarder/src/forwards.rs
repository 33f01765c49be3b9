//! The forwards of one forwarder command: those given when it started, and those a control
//! client adds or cancels later (`ssh -S path -O forward -L ...`, `-O cancel`). Local ones
//! (`-L`, `-D`) each have their own listeners here; remote ones (`-R`) are served by
//! [`crate::remote::serve`], which this asks.
//!
//! ```text
//!  start ──> serve(spec, listeners) for each -L / -D that bound
//!  -O forward -L/-D ──> open(spec): the same forward again is done already; else bind, listen
//!  -O cancel -L/-D  ──> cancel(spec): its listeners close (connections on them carry on)
//!  -O forward -R    ──> open_remote(spec): answered once the server has answered
//!  -O cancel -R     ──> cancel_remote(spec): answered once the server has been told
//!  stop ──> close(): every listener closes
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::info;

use crate::cli::ForwardSpec;
use crate::config::TunnelConfig;
use crate::local::Listener;
use crate::remote::{RemoteChange, RemoteSpec};
use crate::supervisor::SupervisorHandle;
use crate::tunnel::Tunnel;

/// Local forwards one command serves at once; a control client asking for more is refused.
pub const MAX_FORWARDS: usize = 256;

/// How long a control client's `-R` waits for the server's answer.
pub const REMOTE_ANSWER: Duration = Duration::from_secs(30);

/// The forwards of one command.
#[derive(Debug)]
pub struct Forwards {
    served: Mutex<Vec<(ForwardSpec, Tunnel)>>,
    sessions: SupervisorHandle,
    config: Arc<TunnelConfig>,
    remote: mpsc::Sender<RemoteChange>,
}

impl Forwards {
    /// No local forward yet; connections will go through the sessions of `sessions`, new
    /// local forwards bind as `config` says, and remote ones are asked of `remote`'s server.
    pub fn new(
        sessions: SupervisorHandle,
        config: Arc<TunnelConfig>,
        remote: mpsc::Sender<RemoteChange>,
    ) -> Self {
        Self {
            served: Mutex::new(Vec::new()),
            sessions,
            config,
            remote,
        }
    }

    /// The session connections go through, waited for as long as a connection would wait
    /// (`-W` through the control socket).
    pub async fn session(&self) -> Result<crate::driver::SessionHandle, String> {
        self.sessions
            .session(self.config.session_wait_timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// Serves `listeners`, already bound for `spec`.
    pub async fn serve(&self, spec: ForwardSpec, listeners: Vec<Listener>) {
        let tunnel = self.tunnel(&spec, listeners);
        self.served.lock().await.push((spec, tunnel));
    }

    fn tunnel(&self, spec: &ForwardSpec, listeners: Vec<Listener>) -> Tunnel {
        let mut tunnel = Tunnel::new();
        for l in listeners {
            tunnel.listen(
                l,
                self.sessions.clone(),
                spec.to.clone(),
                self.config.session_wait_timeout,
            );
        }
        tunnel
    }

    /// Adds `spec` (`-O forward`): done already when it is served; otherwise bound and
    /// served, or why not.
    pub async fn open(&self, spec: ForwardSpec) -> Result<(), String> {
        let mut served = self.served.lock().await;
        if served.iter().any(|(s, _)| *s == spec) {
            return Ok(());
        }
        if served.len() >= MAX_FORWARDS {
            return Err(format!(
                "cannot add {} {spec}: {MAX_FORWARDS} forwards are served already",
                spec.flag()
            ));
        }
        let listeners = crate::connect::bind_forward(&spec, &self.config)
            .await
            .map_err(|e| format!("cannot listen for {} {spec}: {e}", spec.flag()))?;
        let on: Vec<String> = listeners.iter().map(Listener::label).collect();
        info!(
            "{} {spec} added on the control socket, listening on {}",
            spec.flag(),
            on.join(" ")
        );
        let tunnel = self.tunnel(&spec, listeners);
        served.push((spec, tunnel));
        Ok(())
    }

    /// Cancels `spec` (`-O cancel`): its listeners are closed when this returns, so that the
    /// port can be bound again at once; connections already accepted carry on.
    pub async fn cancel(&self, spec: &ForwardSpec) -> Result<(), String> {
        let mut served = self.served.lock().await;
        let Some(i) = served.iter().position(|(s, _)| s == spec) else {
            return Err("port not forwarded".to_owned());
        };
        let (spec, mut tunnel) = served.remove(i);
        tunnel.close_listeners().await;
        info!("{} {spec} cancelled on the control socket", spec.flag());
        Ok(())
    }

    /// Adds the remote forward `spec` (`-O forward -R`): the port the server picked when it
    /// picks one, once it listens; or why not. A server that does not answer within
    /// [`REMOTE_ANSWER`] leaves the forward asked for, as a `-R` given at the start is.
    pub async fn open_remote(&self, spec: &ForwardSpec) -> Result<Option<u16>, String> {
        let remote = RemoteSpec::from_forward(spec);
        let (tell, answer) = oneshot::channel();
        self.remote
            .send(RemoteChange::Add(remote.clone(), tell))
            .await
            .map_err(|_| STOPPING.to_owned())?;
        match tokio::time::timeout(REMOTE_ANSWER, answer).await {
            Ok(Ok(Ok(port))) if remote.server_picks_port() => u16::try_from(port)
                .ok()
                .filter(|p| *p != 0)
                .map(Some)
                .ok_or_else(|| format!("the server picked port {port}")),
            Ok(Ok(Ok(_))) => Ok(None),
            Ok(Ok(Err(refused))) => Err(refused),
            Ok(Err(_)) => Err(STOPPING.to_owned()),
            Err(_) => Err(format!(
                "no answer from the server within {} s; the forward stays asked for on every \
                 session (-O cancel removes it)",
                REMOTE_ANSWER.as_secs()
            )),
        }
    }

    /// Cancels the remote forward `spec` (`-O cancel -R`), once the server has been told.
    pub async fn cancel_remote(&self, spec: &ForwardSpec) -> Result<(), String> {
        let (tell, done) = oneshot::channel();
        self.remote
            .send(RemoteChange::Cancel(RemoteSpec::from_forward(spec), tell))
            .await
            .map_err(|_| STOPPING.to_owned())?;
        match tokio::time::timeout(REMOTE_ANSWER, done).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(STOPPING.to_owned()),
            Err(_) => Err(format!(
                "the forward did not end within {} s",
                REMOTE_ANSWER.as_secs()
            )),
        }
    }

    /// How many local forwards are served.
    pub async fn len(&self) -> usize {
        self.served.lock().await.len()
    }

    /// Whether no local forward is.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// Stops every local forward's listener (connections already accepted carry on until
    /// they end).
    pub async fn close(&self) {
        for (_, mut tunnel) in self.served.lock().await.drain(..) {
            tunnel.close();
        }
    }
}

/// Why a change could not be made: the tunnel is going.
const STOPPING: &str = "the tunnel is stopping";
