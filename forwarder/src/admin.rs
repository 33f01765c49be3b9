//! The admin endpoint of `forwarder serve`: a small HTTP/1 server for monitoring.
//!
//! | path       | answer                                                                  |
//! |------------|-------------------------------------------------------------------------|
//! | `/metrics` | [`Metrics::encode`], Prometheus text format 0.0.4                       |
//! | `/healthz` | 200 `ok` while the process runs                                         |
//! | `/readyz`  | 200 when [`FleetView::ready`], else 503 with a short reason             |
//! | `/tunnels` | a JSON array of [`TunnelStatus`](crate::status::TunnelStatus)           |
//!
//! Only `GET` is served (405 otherwise) and request bodies are never read. Every connection is
//! bounded: headers of at most [`MAX_HEADER_BYTES`], read within [`HEADER_READ_TIMEOUT`]
//! (idle keep-alive connections included), at most [`MAX_CONNECTIONS`] at once, and each
//! closed after [`CONNECTION_LIFETIME`] (gracefully: a response being written is finished).
//!
//! The slots are shared by the kubelet's probes, the Prometheus scraper and whatever else may
//! connect, so that no client can hold them all:
//!
//! - one source address holds at most [`MAX_CONNECTIONS_PER_ADDRESS`] of them; a connection
//!   past that is closed as soon as it is accepted, without an answer;
//! - when every slot is taken, the newcomer is not left waiting: the connection that waits for a
//!   request (its first, or the next one of a keep-alive connection) of the address holding the
//!   most slots, the longest-waiting one of these, is closed to make room. One that has never
//!   had a request is dropped at once; a keep-alive one is closed the way a connection at the
//!   end of its lifetime is, so the response it last sent is not cut. A connection with a
//!   request in progress is never chosen; when all are in that state, the newcomer waits for
//!   the first slot to free (one connection is accepted and held, the others wait in the
//!   listen backlog).
//!
//! So one address cannot take more than a quarter of the slots, and idle or slow connections
//! from any number of addresses give way to a new client instead of shutting it out. Both kinds
//! of closing are counted in `forwarder_admin_connections_closed_total{reason}`
//! (`address_limit`, `reclaimed`), so a scraper or pod that keeps hitting the limits shows.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::metrics::{self, AdminClose, Metrics};
use crate::status::FleetView;

/// The largest request head (request line and headers) accepted; larger ones get 431.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// How long a client has to send a complete request head, also between the requests of a
/// keep-alive connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once. When all are taken, a connection waiting for a request is
/// closed to make room for a new one (see the module documentation); if none is, the new
/// one waits for a slot and further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections one source address may have open at once, a quarter of [`MAX_CONNECTIONS`];
/// one more from that address is closed as soon as it is accepted.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = MAX_CONNECTIONS / 4;
/// After this long a connection is closed once its current response is written.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// How long a connection that is being closed (lifetime over, reclaimed for a new client, or
/// the server stopping) may take to finish its response before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The largest read buffer of a connection (hyper's minimum is 8 KiB).
const MAX_READ_BUFFER: usize = 16 * 1024;
/// At most one warning per this long about connections refused over the per-address limit.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// What every connection's handler reads.
struct State {
    view: Arc<dyn FleetView>,
    metrics: Arc<Metrics>,
}

/// Serves the admin endpoint on `listener` until `shutdown` completes. Then it stops accepting,
/// lets open connections finish their response (for at most a few seconds) and returns.
///
/// A failed `accept()` (out of descriptors and the like) is logged, rate-limited, and retried
/// after a short pause: it never ends the server. The only error is the listener's address
/// not being readable at the start.
pub async fn serve(
    listener: TcpListener,
    view: Arc<dyn FleetView>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let state = Arc::new(State { view, metrics });
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let registry = Arc::new(Registry::default());
    let mut connections = JoinSet::new();
    let mut errors = crate::tunnel::AcceptErrors::default();
    let mut refusals = Refusals::default();
    let mut shutdown = std::pin::pin!(shutdown);
    'accept: loop {
        while connections.try_join_next().is_some() {}
        // Accepting before a slot is free is what lets the peer's address be looked at; at
        // most this one connection is held beyond the slots.
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                errors.report(&format!("the admin endpoint {local}"), &e);
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(crate::tunnel::ACCEPT_ERROR_PAUSE) => {}
                }
                continue;
            }
        };
        let ip = peer.ip().to_canonical();
        if registry.held_by(ip) >= MAX_CONNECTIONS_PER_ADDRESS {
            state
                .metrics
                .admin_connection_closed(AdminClose::AddressLimit);
            refusals.refused(local, ip);
            drop(socket);
            continue;
        }
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => permit,
            // Every slot is taken: ask a connection that waits for a request to make room,
            // and again whenever one finishes a response, until a slot frees.
            Err(_) => loop {
                if let Some(victim) = registry.reclaim_one() {
                    state.metrics.admin_connection_closed(AdminClose::Reclaimed);
                    debug!(%peer, "admin endpoint {local}: all {MAX_CONNECTIONS} connections \
                           in use; closing an idle one from {victim} to serve this one");
                }
                tokio::select! {
                    () = &mut shutdown => break 'accept,
                    Ok(permit) = Arc::clone(&slots).acquire_owned() => break permit,
                    () = registry.fell_idle.notified() => {}
                }
            },
        };
        let slot = registry.admit(ip, permit);
        connections.spawn(connection(
            socket,
            peer,
            Arc::clone(&state),
            stop_rx.clone(),
            slot,
        ));
    }
    drop(listener);
    // Ignored error: no connection is left to tell.
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(CLOSE_GRACE + Duration::from_secs(1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!("admin endpoint {local}: dropping connections that did not finish in time");
        connections.abort_all();
    }
    Ok(())
}

/// Serves one connection until the client closes it, it times out, its lifetime ends, it is
/// reclaimed for a new client or the server stops.
async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    slot: Slot,
) {
    // Responses are small and written at once; failing to set this only costs latency.
    let _ = socket.set_nodelay(true);
    let tracker = slot.tracker.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        let answering = tracker.answering();
        async move {
            let (parts, body) = respond(&state, &req).into_parts();
            Ok::<_, Infallible>(Response::from_parts(
                parts,
                Answer {
                    body,
                    _answering: answering,
                },
            ))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_READ_BUFFER);
    let conn = builder.serve_connection(TokioIo::new(socket), service);
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        // Also when the server's task is gone (the sender dropped).
        _ = stop.wait_for(|stopping| *stopping) => None,
        () = tokio::time::sleep(CONNECTION_LIFETIME) => None,
        () = slot.close.notified() => {
            if slot.tracker.never_asked() {
                // Nothing was ever written on it: close it now, a partial request head and all.
                debug!(%peer, "admin connection closed before its first request, for a new client");
                return;
            }
            debug!(%peer, "admin keep-alive connection closed for a new client");
            None
        }
    };
    let result = match ended {
        Some(r) => r,
        None => {
            // Finish the response being written, if any, then close (at once when between
            // requests); past the grace period the connection is dropped.
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(CLOSE_GRACE, conn)
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        debug!(%peer, "admin connection ended with an error: {e}");
    }
}

// ---- who holds the slots -----------------------------------------------------------------------

/// The connections being served, shared by the accept loop (the per-address limit, choosing a
/// connection to reclaim) and the connections (what each is doing). At most
/// [`MAX_CONNECTIONS`] entries.
#[derive(Debug, Default)]
struct Registry {
    open: Mutex<Open>,
    /// Told when a connection finishes a response, so becomes one that may be reclaimed.
    fell_idle: Notify,
}

#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    ip: IpAddr,
    phase: Phase,
    /// Whether the accept loop has asked it to close.
    reclaimed: bool,
    close: Arc<Notify>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Accepted, no request yet: nothing has been written on it.
    Fresh { since: Instant },
    /// A request has been received and its response is not yet all handed to hyper.
    Answering,
    /// A keep-alive connection between requests.
    Idle { since: Instant },
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Open> {
        // A panic elsewhere cannot leave `Open` half-updated: every change is one assignment.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connections from `ip` being served.
    fn held_by(&self, ip: IpAddr) -> usize {
        self.lock().entries.iter().filter(|e| e.ip == ip).count()
    }

    /// Records a connection from `ip` that holds `permit`.
    fn admit(self: &Arc<Self>, ip: IpAddr, permit: OwnedSemaphorePermit) -> Slot {
        let close = Arc::new(Notify::new());
        let mut open = self.lock();
        let id = open.next_id;
        open.next_id += 1;
        open.entries.push(Entry {
            id,
            ip,
            phase: Phase::Fresh {
                since: Instant::now(),
            },
            reclaimed: false,
            close: Arc::clone(&close),
        });
        Slot {
            tracker: Tracker {
                registry: Arc::clone(self),
                id,
            },
            close,
            _permit: permit,
        }
    }

    /// Asks one connection waiting for a request to close, unless one asked before is still
    /// closing: of the address holding the most connections, the one that has waited
    /// longest. Returns its address, or `None` when no connection was asked.
    fn reclaim_one(&self) -> Option<IpAddr> {
        let mut open = self.lock();
        if open.entries.iter().any(|e| e.reclaimed) {
            return None;
        }
        let held = |ip: IpAddr| open.entries.iter().filter(|e| e.ip == ip).count();
        let (victim, ..) = open
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e.phase {
                Phase::Fresh { since } | Phase::Idle { since } => {
                    Some((i, held(e.ip), since, e.id))
                }
                Phase::Answering => None,
            })
            // The most connections held, then the earliest wait, then the first accepted.
            .max_by(|a, b| {
                a.1.cmp(&b.1)
                    .then_with(|| b.2.cmp(&a.2))
                    .then_with(|| b.3.cmp(&a.3))
            })?;
        let entry = open.entries.get_mut(victim)?;
        entry.reclaimed = true;
        entry.close.notify_one();
        Some(entry.ip)
    }

    fn set_phase(&self, id: u64, phase: Phase) {
        if let Some(e) = self.lock().entries.iter_mut().find(|e| e.id == id) {
            e.phase = phase;
        }
    }
}

/// A connection's place in the [`Registry`]; gone (and its slot free) when dropped.
#[derive(Debug)]
struct Slot {
    tracker: Tracker,
    /// Told when the accept loop reclaims the connection.
    close: Arc<Notify>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Before the permit (a field) is released, so the accept loop never counts a
        // connection that is gone.
        let id = self.tracker.id;
        self.tracker.registry.lock().entries.retain(|e| e.id != id);
    }
}

/// What the handler of a connection uses to record its requests.
#[derive(Debug, Clone)]
struct Tracker {
    registry: Arc<Registry>,
    id: u64,
}

impl Tracker {
    /// Marks the connection as answering a request until the returned guard is dropped.
    fn answering(&self) -> Answering {
        self.registry.set_phase(self.id, Phase::Answering);
        Answering(self.clone())
    }

    /// Whether the connection has had no request yet.
    fn never_asked(&self) -> bool {
        let open = self.registry.lock();
        open.entries
            .iter()
            .any(|e| e.id == self.id && matches!(e.phase, Phase::Fresh { .. }))
    }
}

/// Held by a response's body: the connection is between requests again once hyper has taken
/// all of it and dropped it.
#[derive(Debug)]
struct Answering(Tracker);

impl Drop for Answering {
    fn drop(&mut self) {
        let Tracker { registry, id } = &self.0;
        registry.set_phase(
            *id,
            Phase::Idle {
                since: Instant::now(),
            },
        );
        registry.fell_idle.notify_one();
    }
}

/// A response's body, with the mark of the request it answers.
#[derive(Debug)]
struct Answer {
    body: Full<Bytes>,
    _answering: Answering,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connections closed over the per-address limit, for a rate-limited warning.
#[derive(Debug, Default)]
struct Refusals {
    last_logged: Option<Instant>,
    unreported: u64,
}

impl Refusals {
    fn refused(&mut self, local: SocketAddr, ip: IpAddr) {
        self.unreported += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_EVERY)
        {
            return;
        }
        self.last_logged = Some(now);
        let n = std::mem::take(&mut self.unreported);
        warn!(
            "admin endpoint {local}: closed a connection from {ip}, which already has \
             {MAX_CONNECTIONS_PER_ADDRESS} open ({n} closed over that limit since the last report)"
        );
    }
}

/// The answer to one request. The body of the request is never read.
fn respond(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz" | "/tunnels") {
        return reply(StatusCode::NOT_FOUND, TEXT, "not found\n");
    }
    if req.method() != Method::GET {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    match path {
        "/metrics" => {
            // Counted when asked for: nothing counts them while nobody scrapes.
            state.metrics.set_tunnel_states(state.view.tunnel_states());
            reply(
                StatusCode::OK,
                metrics::CONTENT_TYPE,
                state.metrics.encode(),
            )
        }
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n"),
        "/readyz" if state.view.ready() => reply(StatusCode::OK, TEXT, "ready\n"),
        "/readyz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            format!("not ready: {}\n", state.view.not_ready_reason()),
        ),
        _ => match serde_json::to_vec(&state.view.tunnels()) {
            Ok(json) => reply(StatusCode::OK, JSON, json),
            Err(e) => {
                warn!("admin endpoint: serializing /tunnels failed: {e}");
                reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    "serializing the tunnels failed\n",
                )
            }
        },
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn admit(registry: &Arc<Registry>, slots: &Arc<Semaphore>, ip: IpAddr) -> Slot {
        registry.admit(ip, Arc::clone(slots).try_acquire_owned().unwrap())
    }

    #[test]
    fn reclaims_the_longest_waiting_connection_of_the_address_holding_most() {
        let registry = Arc::new(Registry::default());
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let a1 = admit(&registry, &slots, A);
        let b1 = admit(&registry, &slots, B);
        let b2 = admit(&registry, &slots, B);
        let b3 = admit(&registry, &slots, B);
        assert_eq!((registry.held_by(A), registry.held_by(B)), (1, 3));
        // b1 answers a request: not a candidate while it does.
        let answering = b1.tracker.answering();
        assert_eq!(registry.reclaim_one(), Some(B));
        assert!(!b1.tracker.never_asked());
        assert!(b2.tracker.never_asked());
        // b2 was asked (its notification is stored); nobody else is while it is still open.
        assert_eq!(registry.reclaim_one(), None);
        drop(b2);
        assert_eq!(registry.held_by(B), 2);
        assert_eq!(slots.available_permits(), MAX_CONNECTIONS - 3);
        // b1 between requests now; it waits since after b3 was accepted, so b3 goes first.
        // (The pause only makes the two instants differ on a coarse clock.)
        std::thread::sleep(Duration::from_millis(2));
        drop(answering);
        assert_eq!(registry.reclaim_one(), Some(B));
        drop(b3);
        // One each: the longest-waiting one, a1.
        assert_eq!(registry.reclaim_one(), Some(A));
        drop(a1);
        assert_eq!(registry.reclaim_one(), Some(B));
        drop(b1);
        assert_eq!(registry.reclaim_one(), None);
        assert_eq!(slots.available_permits(), MAX_CONNECTIONS);
    }

    #[tokio::test]
    async fn the_reclaimed_connection_and_the_accept_loop_are_told() {
        let registry = Arc::new(Registry::default());
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let a1 = admit(&registry, &slots, A);
        let answering = a1.tracker.answering();
        assert_eq!(
            registry.reclaim_one(),
            None,
            "a connection answering is kept"
        );
        drop(answering);
        let limit = Duration::from_secs(10);
        tokio::time::timeout(limit, registry.fell_idle.notified())
            .await
            .unwrap();
        assert_eq!(registry.reclaim_one(), Some(A));
        tokio::time::timeout(limit, a1.close.notified())
            .await
            .unwrap();
    }
}
