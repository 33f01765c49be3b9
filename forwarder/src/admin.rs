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

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::metrics::{self, Metrics};
use crate::status::FleetView;

/// The largest request head (request line and headers) accepted; larger ones get 431.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// How long a client has to send a complete request head, also between the requests of a
/// keep-alive connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// After this long a connection is closed once its current response is written.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// How long a connection that is being closed (lifetime over, or the server stopping) may take
/// to finish its response before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The largest read buffer of a connection (hyper's minimum is 8 KiB).
const MAX_READ_BUFFER: usize = 16 * 1024;
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
    let mut connections = JoinSet::new();
    let mut errors = crate::tunnel::AcceptErrors::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&slots).acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((socket, peer)) => {
                connections.spawn(connection(
                    socket,
                    peer,
                    Arc::clone(&state),
                    stop_rx.clone(),
                    permit,
                ));
            }
            Err(e) => {
                errors.report(&format!("the admin endpoint {local}"), &e);
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(crate::tunnel::ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
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

/// Serves one connection until the client closes it, it times out, its lifetime ends or the
/// server stops.
async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    // Responses are small and written at once; failing to set this only costs latency.
    let _ = socket.set_nodelay(true);
    let service = service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(respond(&state, &req)) }
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
    };
    let result = match ended {
        Some(r) => r,
        None => {
            // Finish the response being written, if any, then close; past the grace period
            // the connection is dropped.
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
        "/metrics" => reply(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            state.metrics.encode(),
        ),
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
