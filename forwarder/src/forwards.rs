//! The local forwards (`-L`, `-D`) of one forwarder command: those given when it started,
//! and those a control client adds or cancels later (`ssh -S path -O forward -L ...`,
//! `-O cancel`), each with its own listeners.
//!
//! ```text
//!  start ──> serve(spec, listeners) for each -L / -D that bound
//!  -O forward ──> open(spec): the same forward again is done already; else bind, listen
//!  -O cancel  ──> cancel(spec): its listeners close (connections on them carry on)
//!  stop ──> close(): every listener closes
//! ```

use std::sync::Arc;

use tokio::sync::Mutex;
use tracing::info;

use crate::cli::ForwardSpec;
use crate::config::TunnelConfig;
use crate::local::Listener;
use crate::supervisor::SupervisorHandle;
use crate::tunnel::Tunnel;

/// Forwards one command serves at once; a control client asking for more is refused.
pub const MAX_FORWARDS: usize = 256;

/// The local forwards of one command.
#[derive(Debug)]
pub struct LocalForwards {
    served: Mutex<Vec<(ForwardSpec, Tunnel)>>,
    sessions: SupervisorHandle,
    config: Arc<TunnelConfig>,
}

impl LocalForwards {
    /// None yet; connections will go through the sessions of `sessions`, and new forwards
    /// bind as `config` says.
    pub fn new(sessions: SupervisorHandle, config: Arc<TunnelConfig>) -> Self {
        Self {
            served: Mutex::new(Vec::new()),
            sessions,
            config,
        }
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

    /// How many forwards are served.
    pub async fn len(&self) -> usize {
        self.served.lock().await.len()
    }

    /// Whether none is.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// Stops every listener (connections already accepted carry on until they end).
    pub async fn close(&self) {
        for (_, mut tunnel) in self.served.lock().await.drain(..) {
            tunnel.close();
        }
    }
}
