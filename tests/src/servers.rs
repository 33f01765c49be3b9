//! Small TCP servers on 127.0.0.1 to put behind a tunnel: echo, sink (count and hash what
//! arrives) and source (send N known bytes), plus the client side of each transfer.
//!
//! Data sent by the source and the uploader is a fixed pseudo-random [`Pattern`] repeated.
//! Whatever receives it ([`download`], the sink) compares every byte with the pattern as it
//! arrives ([`PatternCheck`]: one `memcmp` per read, no allocation), so a tunnel that drops,
//! repeats or reorders bytes fails the transfer at the first byte that differs. The pattern's
//! length is not a power of two, so no buffer's worth of bytes moved by a power of two lines
//! up with itself. A SHA-256 of the stream is there on top, for tests that want a digest.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ring::digest::{Context, SHA256};

use crate::net::{self, LOCALHOST};

/// A connection that moves no byte for this long is abandoned rather than hanging a test.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const BUFFER: usize = 256 * 1024;

/// The repeating byte pattern for transfers.
#[derive(Debug)]
pub struct Pattern {
    bytes: Vec<u8>,
}

impl Pattern {
    /// 1 MiB plus an odd prime number of bytes.
    pub const LEN: usize = (1 << 20) + 4099;

    /// The one pattern every server and client uses.
    pub fn get() -> &'static Pattern {
        static PATTERN: OnceLock<Pattern> = OnceLock::new();
        PATTERN.get_or_init(|| {
            // xorshift64*: any fixed seed gives the same bytes on every run.
            let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut bytes = Vec::with_capacity(Pattern::LEN + 8);
            while bytes.len() < Pattern::LEN {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                bytes.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
            }
            bytes.truncate(Pattern::LEN);
            Pattern { bytes }
        })
    }

    /// The bytes at stream offset `offset`, at most `max` of them (never empty for max > 0).
    pub fn chunk(&self, offset: u64, max: usize) -> &[u8] {
        let start = (offset % Pattern::LEN as u64) as usize;
        let end = Pattern::LEN.min(start + max);
        &self.bytes[start..end]
    }

    /// `n` bytes of the stream from `offset`, wrapping around the pattern as often as needed.
    pub fn bytes_at(&self, offset: u64, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.extend_from_slice(self.chunk(offset + out.len() as u64, n - out.len()));
        }
        out
    }

    /// Writes the first `n` bytes of the stream.
    pub fn write_stream(&self, out: &mut impl Write, n: u64) -> io::Result<()> {
        let mut sent = 0u64;
        while sent < n {
            let want = usize::try_from(n - sent).unwrap_or(usize::MAX).min(BUFFER);
            let chunk = self.chunk(sent, want);
            out.write_all(chunk)?;
            sent += chunk.len() as u64;
        }
        Ok(())
    }

    /// Hex SHA-256 of the first `n` bytes of the stream.
    pub fn sha256(&self, n: u64) -> String {
        let mut hasher = Context::new(&SHA256);
        let mut done = 0u64;
        while done < n {
            let want = usize::try_from(n - done)
                .unwrap_or(usize::MAX)
                .min(Pattern::LEN);
            let chunk = self.chunk(done, want);
            hasher.update(chunk);
            done += chunk.len() as u64;
        }
        hex(hasher.finish().as_ref())
    }
}

/// Compares a stream, as it arrives, with the [`Pattern`] stream it should be, and
/// remembers where it first differed. Cheap enough to run on every byte of a benchmark: one
/// `memcmp` per pattern piece of each read, no allocation, no hashing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatternCheck {
    bytes: u64,
    first_difference: Option<u64>,
}

impl PatternCheck {
    /// Checks the next bytes of the stream. After the first difference, bytes are only
    /// counted: everything after it is suspect anyway.
    pub fn update(&mut self, data: &[u8]) {
        if self.first_difference.is_none() {
            let pattern = Pattern::get();
            let mut done = 0;
            while let Some(rest) = data.get(done..).filter(|r| !r.is_empty()) {
                let expected = pattern.chunk(self.bytes + done as u64, rest.len());
                let got = rest.get(..expected.len()).unwrap_or(rest);
                if got != expected {
                    let at = got.iter().zip(expected).take_while(|(g, e)| g == e).count();
                    self.first_difference = Some(self.bytes + (done + at) as u64);
                    break;
                }
                done += expected.len();
            }
        }
        self.bytes += data.len() as u64;
    }

    /// Bytes seen so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The stream offset of the first byte that differs from the pattern, if one has.
    pub fn first_difference(&self) -> Option<u64> {
        self.first_difference
    }
}

/// The error of a transfer whose bytes differ from the pattern from `offset` on.
fn differs_from_pattern(what: &str, offset: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{what}: byte {offset} of the stream differs from the pattern that was sent \
             (data lost, repeated, reordered or altered on the way)"
        ),
    )
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&SHA256, data).as_ref())
}

type Handler = Arc<dyn Fn(TcpStream) + Send + Sync>;

/// Accepts connections on a thread and runs a handler per connection on its own thread.
/// Dropping it stops accepting and shuts down the open connections, which ends the handlers.
struct Acceptor {
    port: u16,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<HashMap<u64, TcpStream>>>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    fn start(name: &str, handler: Handler) -> Acceptor {
        // The listener is ours from the start, so the kernel may pick the port.
        let listener = listen_on_free_port().expect("bind a lab server on 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(HashMap::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, open, accepted) = (stop.clone(), open.clone(), accepted.clone());
            thread::Builder::new()
                .name(format!("lab-{name}-accept"))
                .spawn(move || accept_loop(&listener, &stop, &open, &accepted, &handler))
                .expect("spawn an accept thread")
        };
        Acceptor {
            port,
            stop,
            open,
            accepted,
            thread: Some(thread),
        }
    }
}

/// How many connections a lab server's listener queues before accepting them: enough for
/// the tests' bursts (400 connections at once through one tunnel reach the echo server
/// together). With the standard library's 128, the kernel's queue overflows, it answers
/// with SYN cookies, and some of those connections are reset after sshd has connected and
/// sent the data: the test then sees an echo that brought nothing back.
const LAB_BACKLOG: i32 = 1024;

/// A listener on a free port of 127.0.0.1 with [`LAB_BACKLOG`].
fn listen_on_free_port() -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&std::net::SocketAddr::from((LOCALHOST, 0)).into())?;
    socket.listen(LAB_BACKLOG)?;
    Ok(socket.into())
}

fn accept_loop(
    listener: &TcpListener,
    stop: &AtomicBool,
    open: &Arc<Mutex<HashMap<u64, TcpStream>>>,
    accepted: &AtomicUsize,
    handler: &Handler,
) {
    let next_id = AtomicU64::new(0);
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        accepted.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            lock(open).insert(id, clone);
        }
        let (open, handler) = (open.clone(), handler.clone());
        let spawned = thread::Builder::new()
            .name("lab-conn".into())
            .spawn(move || {
                handler(stream);
                lock(&open).remove(&id);
            });
        if spawned.is_err() {
            eprintln!("lab: could not spawn a connection thread");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag. If even that fails, leave the
        // thread be rather than wait for it forever.
        let woken = net::connect(self.port).is_ok();
        if let Some(thread) = self.thread.take().filter(|_| woken) {
            let _ = thread.join();
        }
        for (_, stream) in lock(&self.open).drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Echoes every byte back; on EOF from the client, finishes sending and closes.
pub struct EchoServer {
    acceptor: Acceptor,
}

impl EchoServer {
    /// Starts listening on a free 127.0.0.1 port.
    pub fn start() -> EchoServer {
        let handler: Handler = Arc::new(|mut stream: TcpStream| {
            let Ok(mut reader) = stream.try_clone() else {
                return;
            };
            let _ = io::copy(&mut reader, &mut stream);
            let _ = stream.shutdown(Shutdown::Write);
        });
        EchoServer {
            acceptor: Acceptor::start("echo", handler),
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.acceptor.port
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.acceptor.accepted.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for EchoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoServer")
            .field("port", &self.port())
            .finish()
    }
}

/// Relays every connection to a port on 127.0.0.1 and counts the bytes it carries each way,
/// as they are on the wire: to see what compression saved, for instance.
pub struct CountingProxy {
    acceptor: Acceptor,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl CountingProxy {
    /// Starts listening on a free 127.0.0.1 port, relaying to `target` on 127.0.0.1.
    pub fn start(target: u16) -> CountingProxy {
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let handler: Handler = {
            let (up, down) = (up.clone(), down.clone());
            Arc::new(move |client: TcpStream| {
                let Ok(server) = net::connect(target) else {
                    return;
                };
                let _ = server.set_nodelay(true);
                let _ = server.set_read_timeout(Some(IDLE_TIMEOUT));
                let (Ok(client_r), Ok(server_r)) = (client.try_clone(), server.try_clone()) else {
                    return;
                };
                let down = down.clone();
                let back = thread::spawn(move || {
                    relay(server_r, client, |n| {
                        down.fetch_add(n as u64, Ordering::SeqCst);
                    })
                });
                relay(client_r, server, |n| {
                    up.fetch_add(n as u64, Ordering::SeqCst);
                });
                let _ = back.join();
            })
        };
        CountingProxy {
            acceptor: Acceptor::start("proxy", handler),
            up,
            down,
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.acceptor.port
    }

    /// Bytes relayed so far: (client to target, target to client).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::SeqCst),
            self.down.load(Ordering::SeqCst),
        )
    }
}

impl std::fmt::Debug for CountingProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingProxy")
            .field("port", &self.port())
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// A plain port whose every connection goes through a SOCKS proxy to one target: for
/// programs that cannot speak SOCKS themselves (psql), so they can be run through `-D`.
pub struct SocksBridge {
    acceptor: Acceptor,
}

impl SocksBridge {
    /// Listens on a free 127.0.0.1 port; each connection asks the proxy on 127.0.0.1:`proxy`
    /// for `host:port` in `form`, and is closed if the proxy says no.
    pub fn start(proxy: u16, form: crate::socks::SocksForm, host: &str, port: u16) -> SocksBridge {
        let host = host.to_owned();
        let handler: Handler = Arc::new(move |client: TcpStream| {
            let Ok(server) = crate::socks::socks_connect(proxy, form, &host, port) else {
                return;
            };
            let _ = server.set_nodelay(true);
            let (Ok(client_r), Ok(server_r)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            let back = thread::spawn(move || relay(server_r, client, |_| {}));
            relay(client_r, server, |_| {});
            let _ = back.join();
        });
        SocksBridge {
            acceptor: Acceptor::start("socks bridge", handler),
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.acceptor.port
    }
}

impl std::fmt::Debug for SocksBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocksBridge")
            .field("port", &self.port())
            .finish()
    }
}

/// Copies `from` to `to` until EOF or an error, telling `moved` each amount written, then
/// half-closes `to`.
fn relay(mut from: TcpStream, mut to: TcpStream, mut moved: impl FnMut(usize)) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                moved(n);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// What a [`SinkServer`] received on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkResult {
    /// Bytes read before EOF.
    pub bytes: u64,
    /// Hex SHA-256 of them, when the sink hashes.
    pub sha256: Option<String>,
    /// Where they first differed from the [`Pattern`] stream an [`upload`] sends, if they
    /// did (see [`PatternCheck`]); other data differs early.
    pub first_difference: Option<u64>,
    /// Whether the connection ended with a clean EOF (not an error or timeout).
    pub clean: bool,
}

#[derive(Default)]
struct SinkState {
    results: Mutex<Vec<SinkResult>>,
    changed: Condvar,
}

/// Reads each connection to EOF, comparing it with the [`Pattern`] stream, then answers one
/// line, `<bytes> <sha256 hex or -> <first byte that differed from the pattern or ->\n`, and
/// closes; the line lets an uploader know its last byte arrived and what arrived.
pub struct SinkServer {
    acceptor: Acceptor,
    state: Arc<SinkState>,
}

impl SinkServer {
    /// A sink that hashes what it receives (SHA-256).
    pub fn start() -> SinkServer {
        SinkServer::start_with(true)
    }

    /// A sink that only counts and compares with the pattern, for benchmarks where hashing
    /// would compete for the CPU.
    pub fn counting() -> SinkServer {
        SinkServer::start_with(false)
    }

    fn start_with(hash: bool) -> SinkServer {
        let state = Arc::new(SinkState::default());
        let handler: Handler = {
            let state = state.clone();
            Arc::new(move |stream: TcpStream| sink_connection(stream, hash, &state))
        };
        SinkServer {
            acceptor: Acceptor::start("sink", handler),
            state,
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.acceptor.port
    }

    /// Results of the connections finished so far, in finishing order.
    pub fn results(&self) -> Vec<SinkResult> {
        lock(&self.state.results).clone()
    }

    /// Waits until `n` connections have finished and returns their results.
    pub fn wait_for_results(&self, n: usize, timeout: Duration) -> Vec<SinkResult> {
        let deadline = Instant::now() + timeout;
        let mut results = lock(&self.state.results);
        while results.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "sink: {} of {n} connections finished within {timeout:?}",
                    results.len()
                );
            }
            results = self
                .state
                .changed
                .wait_timeout(results, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        results.clone()
    }
}

impl std::fmt::Debug for SinkServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkServer")
            .field("port", &self.port())
            .finish()
    }
}

fn sink_connection(mut stream: TcpStream, hash: bool, state: &SinkState) {
    let mut hasher = hash.then(|| Context::new(&SHA256));
    let mut check = PatternCheck::default();
    let mut buf = vec![0u8; BUFFER];
    let clean = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                let data = buf.get(..n).unwrap_or_default();
                check.update(data);
                if let Some(h) = hasher.as_mut() {
                    h.update(data);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    let sha256 = hasher.map(|h| hex(h.finish().as_ref()));
    let first_difference = check.first_difference();
    if clean {
        let line = format!(
            "{} {} {}\n",
            check.bytes(),
            sha256.as_deref().unwrap_or("-"),
            first_difference.map_or_else(|| "-".to_owned(), |at| at.to_string())
        );
        let _ = stream.write_all(line.as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
    }
    lock(&state.results).push(SinkResult {
        bytes: check.bytes(),
        sha256,
        first_difference,
        clean,
    });
    state.changed.notify_all();
}

/// Sends the first `n` bytes of the [`Pattern`] stream on every connection, then closes.
pub struct SourceServer {
    acceptor: Acceptor,
    bytes: u64,
}

impl SourceServer {
    /// Starts listening on a free 127.0.0.1 port.
    pub fn start(bytes: u64) -> SourceServer {
        let handler: Handler = Arc::new(move |mut stream: TcpStream| {
            if Pattern::get().write_stream(&mut stream, bytes).is_ok() {
                let _ = stream.shutdown(Shutdown::Write);
                // Closing with unread input would reset the connection and could discard the
                // tail of what we sent, so wait for the client to close first.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            }
        });
        SourceServer {
            acceptor: Acceptor::start("source", handler),
            bytes,
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.acceptor.port
    }

    /// How many bytes each connection gets.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Hex SHA-256 of what each connection gets.
    pub fn expected_sha256(&self) -> String {
        Pattern::get().sha256(self.bytes)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.acceptor.accepted.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for SourceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceServer")
            .field("port", &self.port())
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// One transfer as the client saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Transfer {
    /// Bytes that made it through (for an upload, as counted by the sink).
    pub bytes: u64,
    /// From connect to the last byte (download) or to the sink's answer (upload).
    pub elapsed: Duration,
    /// Hex SHA-256 of the bytes, when hashed.
    pub sha256: Option<String>,
}

impl Transfer {
    /// Throughput in MiB/s.
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn connect_for_transfer(port: u16) -> io::Result<TcpStream> {
    let stream = net::connect(port)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects to 127.0.0.1:`port` (a tunnel to a [`SourceServer`]) and reads to EOF,
/// comparing every byte with the [`Pattern`] stream the source sends, and also hashing when
/// `hash` is set. Bytes that differ from the pattern are an `InvalidData` error naming the
/// first of them; the caller checks the count.
pub fn download(port: u16, hash: bool) -> io::Result<Transfer> {
    let start = Instant::now();
    let mut stream = connect_for_transfer(port)?;
    let mut hasher = hash.then(|| Context::new(&SHA256));
    let mut check = PatternCheck::default();
    let mut buf = vec![0u8; BUFFER];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let data = buf.get(..n).unwrap_or_default();
                check.update(data);
                if let Some(offset) = check.first_difference() {
                    return Err(differs_from_pattern("download", offset));
                }
                if let Some(h) = hasher.as_mut() {
                    h.update(data);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Transfer {
        bytes: check.bytes(),
        elapsed: start.elapsed(),
        sha256: hasher.map(|h| hex(h.finish().as_ref())),
    })
}

/// Connects to 127.0.0.1:`port` (a tunnel to a [`SinkServer`]), sends `n` pattern bytes,
/// half-closes and waits for the sink's answer line, which the result reports. A sink that
/// received bytes other than the pattern's makes it an `InvalidData` error naming the first
/// of them; the caller checks the count.
pub fn upload(port: u16, n: u64) -> io::Result<Transfer> {
    let start = Instant::now();
    let mut stream = connect_for_transfer(port)?;
    Pattern::get().write_stream(&mut stream, n)?;
    stream.shutdown(Shutdown::Write)?;
    let mut line = String::new();
    BufReader::new(&stream).take(256).read_line(&mut line)?;
    let elapsed = start.elapsed();
    let mut fields = line.split_whitespace();
    let bytes = fields.next().and_then(|f| f.parse().ok()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sink answered {line:?}"),
        )
    })?;
    let sha256 = fields.next().filter(|f| *f != "-").map(str::to_owned);
    if let Some(offset) = fields.next().and_then(|f| f.parse().ok()) {
        return Err(differs_from_pattern(
            "upload, as the sink received it",
            offset,
        ));
    }
    Ok(Transfer {
        bytes,
        elapsed,
        sha256,
    })
}

/// Sends `data` to 127.0.0.1:`port` (a tunnel to an [`EchoServer`]), half-closes, and
/// returns everything that comes back.
pub fn echo_round_trip(port: u16, data: &[u8]) -> io::Result<Vec<u8>> {
    let stream = connect_for_transfer(port)?;
    let writer = stream.try_clone()?;
    round_trip_on(stream, writer, |w| w.shutdown(Shutdown::Write), data)
}

/// [`echo_round_trip`] over a stream already connected (through a SOCKS proxy, say).
pub fn echo_round_trip_stream(stream: TcpStream, data: &[u8]) -> io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let writer = stream.try_clone()?;
    round_trip_on(stream, writer, |w| w.shutdown(Shutdown::Write), data)
}

/// [`echo_round_trip`] through the Unix socket at `path`.
pub fn echo_round_trip_unix(path: &std::path::Path, data: &[u8]) -> io::Result<Vec<u8>> {
    let stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let writer = stream.try_clone()?;
    round_trip_on(stream, writer, |w| w.shutdown(Shutdown::Write), data)
}

/// Writes `data` through `writer` and half-closes it with `shutdown`, while reading
/// everything `reader` (the other half of the same stream) gets back.
fn round_trip_on<S: Read + Write + Send + 'static>(
    mut reader: S,
    mut writer: S,
    shutdown: fn(&S) -> io::Result<()>,
    data: &[u8],
) -> io::Result<Vec<u8>> {
    // Write on another thread: a large payload would otherwise fill both directions'
    // buffers and deadlock against the echo.
    let data_owned = data.to_vec();
    let sender = thread::spawn(move || -> io::Result<()> {
        writer.write_all(&data_owned)?;
        shutdown(&writer)
    });
    let mut back = Vec::with_capacity(data.len());
    let read = reader.read_to_end(&mut back);
    let sent = sender
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("echo writer thread panicked")));
    sent?;
    read?;
    Ok(back)
}

/// Connects to `port` and echoes one byte; `Ok` once the byte came back. Used to time how
/// soon a tunnel carries data.
pub fn echo_one_byte(port: u16) -> io::Result<()> {
    let mut stream = net::connect(port)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"x")?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    if &byte == b"x" {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "echo returned another byte",
        ))
    }
}

/// Echoes every connection to a Unix socket at `path`, each in its own thread, until the
/// returned guard is dropped (and for two minutes at most).
#[derive(Debug)]
pub struct UnixEchoServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl UnixEchoServer {
    /// Binds `path` and starts echoing.
    pub fn start(path: &std::path::Path) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::os::unix::net::UnixListener::bind(path).expect("bind the socket");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !stopped.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        std::thread::spawn(move || {
                            conn.set_nonblocking(false).expect("blocking");
                            let mut reader = conn.try_clone().expect("clone");
                            let _ = std::io::copy(&mut reader, &mut conn);
                            let _ = conn.shutdown(std::net::Shutdown::Write);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { stop }
    }
}

impl Drop for UnixEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_chunks_wrap_around() {
        let p = Pattern::get();
        assert_eq!(p.chunk(0, 10), p.chunk(Pattern::LEN as u64, 10));
        assert_eq!(p.chunk(Pattern::LEN as u64 - 3, 10).len(), 3);
        let mut streamed = Vec::new();
        p.write_stream(&mut streamed, 3 * Pattern::LEN as u64 + 17)
            .expect("write to a Vec");
        assert_eq!(streamed.len(), 3 * Pattern::LEN + 17);
        assert_eq!(sha256_hex(&streamed), p.sha256(streamed.len() as u64));
        assert_eq!(p.bytes_at(0, streamed.len()), streamed);
        assert_eq!(
            p.bytes_at(5, 2 * Pattern::LEN),
            streamed[5..5 + 2 * Pattern::LEN]
        );
    }

    #[test]
    fn pattern_is_not_constant() {
        let p = Pattern::get();
        assert_ne!(p.chunk(0, 4096), p.chunk(4096, 4096));
    }

    /// `data` fed to a [`PatternCheck`] in reads of `read` bytes.
    fn first_difference_in_reads(data: &[u8], read: usize) -> Option<u64> {
        let mut check = PatternCheck::default();
        for piece in data.chunks(read) {
            check.update(piece);
        }
        assert_eq!(check.bytes(), data.len() as u64);
        check.first_difference()
    }

    #[test]
    fn pattern_check_passes_the_pattern_in_any_reads() {
        let stream = Pattern::get().bytes_at(0, 3 * Pattern::LEN + 17);
        for read in [1, 7, 4096, 256 * 1024, Pattern::LEN + 1, stream.len()] {
            assert_eq!(
                first_difference_in_reads(&stream, read),
                None,
                "reads of {read}"
            );
        }
    }

    #[test]
    fn pattern_check_finds_a_swapped_chunk() {
        let mut stream = Pattern::get().bytes_at(0, 2 * Pattern::LEN);
        // Two 64 KiB pieces in the wrong order, across the pattern's wrap-around.
        let (a, b) = (Pattern::LEN - 65536, Pattern::LEN);
        let first = stream[a..b].to_vec();
        stream.copy_within(b..b + 65536, a);
        stream[b..b + 65536].copy_from_slice(&first);
        let at = first_difference_in_reads(&stream, 256 * 1024).expect("a difference");
        assert!(
            (a as u64..a as u64 + 8).contains(&at),
            "found at {at}, swapped from {a}"
        );
        assert_eq!(first_difference_in_reads(&stream, 1000), Some(at));
    }

    #[test]
    fn pattern_check_finds_a_duplicated_or_lost_chunk() {
        let pattern = Pattern::get().bytes_at(0, 1 << 20);
        let mut repeated = pattern[..300_000].to_vec();
        repeated.extend_from_slice(&pattern[200_000..]);
        let at = first_difference_in_reads(&repeated, 65536).expect("a repeated chunk");
        assert!((300_000..300_008).contains(&at), "found at {at}");
        let mut lost = pattern[..300_000].to_vec();
        lost.extend_from_slice(&pattern[300_001..]);
        let at = first_difference_in_reads(&lost, 65536).expect("a lost byte");
        assert!((300_000..300_008).contains(&at), "found at {at}");
        let mut altered = pattern.clone();
        altered[123_456] ^= 1;
        assert_eq!(first_difference_in_reads(&altered, 4096), Some(123_456));
    }

    #[test]
    fn download_of_reordered_data_fails_naming_the_byte() {
        let listener = TcpListener::bind((LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("address").port();
        let sender = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let p = Pattern::get();
            // The stream's second 1000 bytes before its first.
            let _ = stream.write_all(p.chunk(1000, 1000));
            let _ = stream.write_all(p.chunk(0, 1000));
        });
        let e = download(port, false).expect_err("reordered data");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.to_string().contains("byte 0 of the stream differs"),
            "{e}"
        );
        let _ = sender.join();
    }

    #[test]
    fn sink_names_the_first_byte_that_differs_and_upload_fails() {
        let sink = SinkServer::counting();
        let mut data = Pattern::get().bytes_at(0, 100_000);
        data[70_000] ^= 0x80;
        let mut stream = net::connect(sink.port()).expect("connect");
        stream.write_all(&data).expect("send");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer");
        assert_eq!(answer, "100000 - 70000\n");
        let results = sink.wait_for_results(1, Duration::from_secs(10));
        assert_eq!(results[0].first_difference, Some(70_000));
        // A good upload on the same sink still passes.
        assert_eq!(upload(sink.port(), 5000).expect("upload").bytes, 5000);
        // One the sink found wrong fails with the sink's offset.
        let listener = TcpListener::bind((LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("address").port();
        let wrong_sink = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut all = Vec::new();
            let _ = stream.read_to_end(&mut all);
            let _ = stream.write_all(b"5000 - 42\n");
        });
        let e = upload(port, 5000).expect_err("the sink saw other bytes");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.to_string().contains("byte 42 of the stream differs"),
            "{e}"
        );
        let _ = wrong_sink.join();
    }

    #[test]
    fn echo_returns_what_was_sent() {
        let echo = EchoServer::start();
        let data = Pattern::get().bytes_at(0, 3_000_000);
        assert_eq!(echo_round_trip(echo.port(), &data).expect("echo"), data);
        echo_one_byte(echo.port()).expect("one byte");
        assert_eq!(echo.connections(), 2);
    }

    #[test]
    fn source_download_has_expected_digest() {
        let source = SourceServer::start(5 * Pattern::LEN as u64 + 1);
        let got = download(source.port(), true).expect("download");
        assert_eq!(got.bytes, source.bytes());
        assert_eq!(got.sha256, Some(source.expected_sha256()));
    }

    #[test]
    fn sink_reports_count_and_digest() {
        let sink = SinkServer::start();
        let n = 2 * Pattern::LEN as u64 + 5;
        let sent = upload(sink.port(), n).expect("upload");
        assert_eq!(sent.bytes, n);
        assert_eq!(sent.sha256, Some(Pattern::get().sha256(n)));
        let results = sink.wait_for_results(1, Duration::from_secs(10));
        assert_eq!(
            results,
            vec![SinkResult {
                bytes: n,
                sha256: Some(Pattern::get().sha256(n)),
                first_difference: None,
                clean: true
            }]
        );
        let counting = SinkServer::counting();
        assert_eq!(upload(counting.port(), 10).expect("upload").sha256, None);
    }

    #[test]
    fn dropping_a_server_closes_its_connections() {
        let echo = EchoServer::start();
        let mut stream = net::connect(echo.port()).expect("connect");
        stream.write_all(b"hi").expect("write");
        let mut two = [0u8; 2];
        stream.read_exact(&mut two).expect("echo");
        drop(echo);
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut rest = Vec::new();
        let n = stream.read_to_end(&mut rest).unwrap_or(0);
        assert_eq!(n, 0, "the server closed the connection");
    }
}
