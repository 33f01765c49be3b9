//! `bench --rtt LIST`: download and upload through both clients over a long, fat link.
//!
//! A delaying proxy on loopback sits between each client and the lab sshd: everything it
//! reads in one direction is stamped and written on RTT/2 later, so a round trip through it
//! takes the RTT asked for on top of loopback's. It never drops anything.
//!
//! The proxy also stands in for TCP on that path. Its own sockets are on loopback, where
//! acknowledgements come back at once, so without a limit of its own sshd could hand it
//! any amount and only the SSH channel window would feel the round trip. A real path of
//! that RTT lets one TCP connection have at most a window in flight: the sender's largest
//! send buffer, or the receiver's advertised window, whichever is smaller. So each direction
//! of each proxied connection is a TCP sender in miniature:
//!
//! ```text
//!  sshd ──> read at once ──> waits ──> released while in flight < cwnd ──> written RTT/2
//!                                            ^                             later to the client
//!                                            └── acknowledged RTT/2 after it was written
//! ```
//!
//! - what the sender writes is read at once, so the loopback connection to it never backs
//!   up (zero windows and retransmissions there stalled transfers for seconds): on a real
//!   path the bytes would wait in the sender's own buffer, here they wait in the proxy's;
//! - in flight: bytes released and not yet acknowledged; an acknowledgement comes back RTT/2
//!   after the bytes were written to the far side, so each byte holds the window for one
//!   round trip at least, more if the far side reads slowly;
//! - cwnd starts at 10 segments of 1448 bytes and grows by what is acknowledged (slow start;
//!   nothing is lost, so it never shrinks) up to the window;
//! - the window (`--link-window`) defaults to this kernel's own limits, which a bastion with
//!   default settings has too: the largest send buffer (`net.ipv4.tcp_wmem`), capped by half
//!   the largest receive buffer (`net.ipv4.tcp_rmem`; TCP advertises about half its buffer).
//!
//! Both clients connect to sshd through it (the host key is trusted under the proxy's
//! port), and the target servers stay behind sshd on plain loopback, as a database next to
//! its bastion would.
//!
//! For each RTT (default 0, 10 and 50 ms) the figures are the usual throughput ones, each
//! named with its RTT: download and upload MiB/s and the client's peak RSS. The "direct"
//! column is a plain TCP download from the same source through the proxy alone: the
//! ceiling the path (window / RTT) and this machine put on any client at that RTT. Each
//! transfer starts once the tunnel has carried an echoed byte, so the handshake is not
//! timed inside it.
//!
//! Each RTT also has a query result from the lab's PostgreSQL: psql
//! through the tunnel runs a `COPY ... TO STDOUT` of `--size` bytes of rows the server
//! generates, timed by psql's `\timing` (from sending the query to the result's end, without
//! the login); its "direct" column is psql through a proxy of its own to PostgreSQL.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use ssh_interop_tests::postgres::psql_command;
use ssh_interop_tests::process::{signal, wait_bounded};
use ssh_interop_tests::sshd::known_hosts_host;
use ssh_interop_tests::{ClientKind, Sshd, Transfer, TunnelBuilder, download, upload};

use super::{
    Args, Better, Contender, Figure, Lab, fail, first_echoed_byte, order, peak_rss_mib, progress,
};
use ssh_interop_tests::{echo_one_byte, free_port};

/// Round trips measured unless `--rtt` lists others, in milliseconds.
pub(crate) const DEFAULT_RTTS: [u32; 3] = [0, 10, 50];
/// The most one direction of one proxied connection holds: 64 MiB, one 50 ms round trip's
/// worth at 1.28 GiB/s. A reader that finds it full waits, so nothing is ever dropped.
const QUEUE_BYTES: usize = 64 << 20;
/// The most chunks one direction holds, so that many tiny reads cannot cost more than the
/// bytes they carry.
const QUEUE_CHUNKS: usize = 1 << 16;
/// The largest single read, and so the largest chunk.
const CHUNK: usize = 256 << 10;
/// TCP's initial congestion window: 10 segments (RFC 6928) of a 1500-byte MTU's payload.
const INITIAL_CWND: usize = 10 * 1448;
/// The window when the kernel's limits cannot be read: Linux's default largest send buffer.
const FALLBACK_WINDOW: u64 = 4 << 20;

/// The window a real path gives one TCP connection with this kernel's limits (see the
/// module's notes), at most [`QUEUE_BYTES`].
pub(crate) fn default_link_window() -> u64 {
    let largest = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .ok()
            .and_then(|t| t.split_whitespace().nth(2)?.parse::<u64>().ok())
    };
    let send = largest("tcp_wmem").unwrap_or(FALLBACK_WINDOW);
    let receive = largest("tcp_rmem").map_or(u64::MAX, |r| r / 2);
    send.min(receive).clamp(64 << 10, QUEUE_BYTES as u64)
}

/// `0,10,50`: round trips in milliseconds, each at most 10 s.
pub(crate) fn parse_list(text: &str) -> Result<Vec<u32>, String> {
    let list: Vec<u32> = text
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|&ms| ms <= 10_000)
                .ok_or_else(|| format!("--rtt: not a round trip in ms: {v:?}"))
        })
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Err("--rtt: no round trips".to_owned());
    }
    Ok(list)
}

/// A TCP proxy on 127.0.0.1 to one port, delaying each direction by half the round trip
/// set with [`set_rtt`](Self::set_rtt) (for connections accepted after it), with at most
/// `window` bytes in flight per direction.
pub(crate) struct DelayProxy {
    port: u16,
    /// Half the round trip, in microseconds.
    one_way_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl DelayProxy {
    /// A proxy to 127.0.0.1:`target` with TCP's `window` in flight, with no delay yet.
    pub(crate) fn start(target: u16, window: u64) -> DelayProxy {
        let window = usize::try_from(window)
            .unwrap_or(QUEUE_BYTES)
            .clamp(INITIAL_CWND, QUEUE_BYTES);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the delaying proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let one_way_us = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (delay, stopped) = (one_way_us.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let one_way = Duration::from_micros(delay.load(Ordering::Relaxed));
                if let Ok(server) = TcpStream::connect(("127.0.0.1", target)) {
                    splice(client, server, one_way, window);
                }
            }
        });
        DelayProxy {
            port,
            one_way_us,
            stop,
        }
    }

    /// The port clients connect to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Round trip added to connections accepted from now on.
    pub(crate) fn set_rtt(&self, rtt: Duration) {
        let half = u64::try_from((rtt / 2).as_micros()).unwrap_or(u64::MAX);
        self.one_way_us.store(half, Ordering::Relaxed);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Two delaying pumps, one per direction, for one accepted connection.
fn splice(client: TcpStream, server: TcpStream, one_way: Duration, window: usize) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    for (from, to) in [(&client, &server), (&server, &client)] {
        let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        };
        pump(from, to, one_way, window);
    }
}

/// What one direction holds, as the sending side of TCP on the path would: bytes read from
/// the sender and not yet released onto the path (the sender's own buffer), bytes on the
/// path with the time each reaches the far side, acknowledgements on their way back, and
/// the congestion window; and whether the reading side ended (`Some(clean)`).
struct Queue {
    /// Read, waiting for the window.
    pending: VecDeque<Vec<u8>>,
    /// On the path: each chunk with the time it may be written to the far side.
    chunks: VecDeque<(Instant, Vec<u8>)>,
    /// Bytes in `pending` and `chunks`.
    bytes: usize,
    ended: Option<bool>,
    /// Released and not yet acknowledged.
    in_flight: usize,
    /// When each written chunk's acknowledgement arrives, and its size.
    acks: VecDeque<(Instant, usize)>,
    cwnd: usize,
    window: usize,
}

impl Queue {
    fn new(window: usize) -> Queue {
        Queue {
            pending: VecDeque::new(),
            chunks: VecDeque::new(),
            bytes: 0,
            ended: None,
            in_flight: 0,
            acks: VecDeque::new(),
            cwnd: INITIAL_CWND.min(window),
            window,
        }
    }

    /// Whether the reader may read more: the proxy's own bound, far above any window.
    fn has_room(&self) -> bool {
        self.bytes < QUEUE_BYTES && self.pending.len() + self.chunks.len() < QUEUE_CHUNKS
    }

    /// Takes in the acknowledgements due by `now`: they leave the flight and grow the
    /// congestion window (slow start, up to the window).
    fn acknowledge(&mut self, now: Instant) {
        while let Some(&(due, n)) = self.acks.front() {
            if due > now {
                break;
            }
            self.acks.pop_front();
            self.in_flight -= n;
            self.cwnd = (self.cwnd + n).min(self.window);
        }
    }

    /// Puts as much of what waits onto the path as the window allows, each piece due at the
    /// far side at `arrives`.
    fn release(&mut self, arrives: Instant) {
        while let Some(front) = self.pending.front_mut() {
            let room = self.cwnd.saturating_sub(self.in_flight);
            if room == 0 {
                break;
            }
            let piece = if front.len() <= room {
                self.pending.pop_front().unwrap_or_default()
            } else {
                let rest = front.split_off(room);
                std::mem::replace(front, rest)
            };
            self.in_flight += piece.len();
            self.chunks.push_back((arrives, piece));
        }
    }

    /// The next time something is due: a chunk to write or an acknowledgement to take in.
    fn next_due(&self) -> Option<Instant> {
        let chunk = self.chunks.front().map(|c| c.0);
        let ack = self.acks.front().map(|a| a.0);
        match (chunk, ack) {
            (Some(c), Some(a)) => Some(c.min(a)),
            (c, a) => c.or(a),
        }
    }
}

struct Pipe {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_until<'a>(&self, guard: MutexGuard<'a, Queue>, due: Instant) -> MutexGuard<'a, Queue> {
        let timeout = due.saturating_duration_since(Instant::now());
        self.changed
            .wait_timeout(guard, timeout)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }
}

/// Copies `from` to `to` as a path of round trip `2 * delay` with at most `window` bytes in
/// flight would: a reader thread takes everything `from` sends at once (so the loopback
/// connection to the sender never backs up: on a real path the sender's data goes into
/// its own buffer), and a sender thread releases it onto the path as the window allows,
/// writes each piece `delay` later and takes its acknowledgement `delay` after that. The
/// reader ending cleanly shuts `to` for writing once everything before it is written; an
/// error on either side closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration, window: usize) {
    let pipe = Arc::new(Pipe {
        queue: Mutex::new(Queue::new(window)),
        changed: Condvar::new(),
    });
    let reader_pipe = pipe.clone();
    let reader_to = to.try_clone().ok();
    thread::spawn(move || {
        let pipe = reader_pipe;
        let mut buf = vec![0u8; CHUNK];
        let clean = loop {
            {
                let mut q = pipe.lock();
                while q.ended.is_none() && !q.has_room() {
                    q = pipe.wait(q);
                }
                if q.ended.is_some() {
                    // The writer gave up: the other side is gone.
                    break false;
                }
            }
            let n = match from.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break false,
            };
            let chunk = buf.get(..n).unwrap_or_default().to_vec();
            let mut q = pipe.lock();
            if q.ended.is_some() {
                break false;
            }
            q.bytes += n;
            q.pending.push_back(chunk);
            pipe.changed.notify_all();
        };
        let mut q = pipe.lock();
        q.ended.get_or_insert(clean);
        pipe.changed.notify_all();
        drop(q);
        if !clean {
            let _ = from.shutdown(Shutdown::Both);
            if let Some(to) = reader_to {
                let _ = to.shutdown(Shutdown::Both);
            }
        }
    });
    thread::spawn(move || {
        let mut q = pipe.lock();
        loop {
            let now = Instant::now();
            q.acknowledge(now);
            q.release(now + delay);
            if let Some(&(due, _)) = q.chunks.front()
                && due <= now
            {
                let Some((_, chunk)) = q.chunks.pop_front() else {
                    continue;
                };
                q.bytes -= chunk.len();
                pipe.changed.notify_all();
                drop(q);
                let written = to.write_all(&chunk);
                q = pipe.lock();
                if written.is_err() {
                    q.ended = Some(false);
                    q.pending.clear();
                    q.chunks.clear();
                    q.bytes = 0;
                    pipe.changed.notify_all();
                    drop(q);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
                // Written: its acknowledgement is back at the sender half a round trip later.
                q.acks.push_back((Instant::now() + delay, chunk.len()));
                continue;
            }
            if let Some(clean) = q.ended
                && q.pending.is_empty()
                && q.chunks.is_empty()
            {
                drop(q);
                let _ = to.shutdown(if clean {
                    Shutdown::Write
                } else {
                    Shutdown::Both
                });
                return;
            }
            q = match q.next_due() {
                Some(due) => pipe.wait_until(q, due),
                None => pipe.wait(q),
            };
        }
    });
}

/// A known_hosts file trusting `sshd`'s host keys under the proxy's port as well.
pub(crate) fn known_hosts_for(sshd: &Sshd, proxy_port: u16, dir: &Path) -> PathBuf {
    let original = std::fs::read_to_string(sshd.known_hosts_path()).expect("read known_hosts");
    let renamed = original.replace(
        &known_hosts_host("127.0.0.1", sshd.port()),
        &known_hosts_host("127.0.0.1", proxy_port),
    );
    let path = dir.join("known_hosts_via_proxy");
    std::fs::write(&path, format!("{original}{renamed}")).expect("write known_hosts");
    path
}

/// A client of `c` through the proxy, with the bench's usual cipher and options.
fn tunnel_via(lab: &Lab, c: &Contender, args: &Args, port: u16, known: &Path) -> TunnelBuilder {
    args.client(
        c,
        TunnelBuilder::to_port(c.kind, port, lab.sshd.user(), &lab.key, known),
    )
}

/// Download, upload and peak RSS for both clients at each of `rtts` (ms), plus the proxy's
/// own ceiling (a plain download through it) as the "direct" column.
pub(crate) fn bench(lab: &Lab, contenders: &[Contender], args: &Args, rtts: &[u32]) -> Vec<Figure> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let window = args.link_window.unwrap_or_else(default_link_window);
    progress(&format!(
        "rtt: the path lets one TCP connection have {:.1} MiB in flight{}",
        window as f64 / f64::from(1 << 20),
        if args.link_window.is_some() {
            " (--link-window)"
        } else {
            " (this kernel's largest TCP buffers)"
        }
    ));
    let proxy = DelayProxy::start(lab.sshd.port(), window);
    let known = known_hosts_for(&lab.sshd, proxy.port(), dir.path());
    // The ceiling: the same source straight through a proxy with the same delay and window.
    let ceiling = DelayProxy::start(lab.source.port(), window);
    let pg = lab
        .pg
        .as_ref()
        .map(|pg| (pg.port(), DelayProxy::start(pg.port(), window)));
    let (sql, result_bytes) = result_query(args.size);
    let mut figures = Vec::new();
    for &ms in rtts {
        let rtt = Duration::from_millis(u64::from(ms));
        proxy.set_rtt(rtt);
        ceiling.set_rtt(rtt);
        if let Some((_, direct)) = &pg {
            direct.set_rtt(rtt);
        }
        let mut query = Figure::new(format!("query result MiB/s, {ms} ms RTT"), Better::Higher);
        let mut down = Figure::new(format!("download MiB/s, {ms} ms RTT"), Better::Higher);
        let mut up = Figure::new(format!("upload MiB/s, {ms} ms RTT"), Better::Higher);
        let mut rss = Figure::new(format!("client peak RSS MiB, {ms} ms RTT"), Better::Lower);
        // `--skip-throughput` leaves only the latency figures.
        let reps = if args.rtt_throughput { args.reps } else { 0 };
        for round in 0..reps {
            let raw = download(ceiling.port(), false).expect("download through the proxy");
            assert_eq!(raw.bytes, args.size, "the proxy delivers everything");
            progress(&format!(
                "rtt {ms} ms {}/{} {:<12} down {:>8.1} MiB/s (the proxy alone)",
                round + 1,
                args.reps,
                "direct",
                raw.mib_per_sec()
            ));
            down.direct.push(raw.mib_per_sec());
            if let Some((_, direct)) = &pg {
                let q = query_result(direct.port(), &sql)
                    .unwrap_or_else(|e| panic!("query through the proxy alone: {e}"));
                assert_eq!(q.bytes, result_bytes, "the whole result came");
                query.direct.push(q.mib_per_sec());
            }
            for i in order(round) {
                let c = &contenders[i];
                let mut builder = tunnel_via(lab, c, args, proxy.port(), &known)
                    .forward_to(lab.source.port())
                    .forward_to(lab.sink.port())
                    .forward_to(lab.echo.port());
                if let Some((port, _)) = &pg {
                    builder = builder.forward_to(*port);
                }
                let mut tunnel = builder.start();
                let ports = tunnel.local_ports();
                // Logged in and carrying data: the handshake is not timed in the download.
                super::wait_until_carrying(&mut tunnel, ports[2]);
                let d = download(ports[0], false)
                    .unwrap_or_else(|e| fail(&tunnel, &format!("download: {e}")));
                if d.bytes != args.size {
                    fail(&tunnel, &format!("download delivered {} bytes", d.bytes));
                }
                let u = upload(ports[1], args.size)
                    .unwrap_or_else(|e| fail(&tunnel, &format!("upload: {e}")));
                if u.bytes != args.size {
                    fail(&tunnel, &format!("upload delivered {} bytes", u.bytes));
                }
                let queried = pg.as_ref().map(|_| {
                    let q = query_result(ports[3], &sql)
                        .unwrap_or_else(|e| fail(&tunnel, &format!("query: {e}")));
                    if q.bytes != result_bytes {
                        fail(&tunnel, &format!("the query result had {} bytes", q.bytes));
                    }
                    q.mib_per_sec()
                });
                let peak = peak_rss_mib(&tunnel);
                super::stop_client(&mut tunnel, &lab.sshd);
                progress(&format!(
                    "rtt {ms} ms {}/{} {:<12} down {:>8.1} MiB/s  up {:>8.1} MiB/s  peak RSS {peak:.1} MiB",
                    round + 1,
                    args.reps,
                    c.label,
                    d.mib_per_sec(),
                    u.mib_per_sec(),
                ));
                down.samples[i].push(d.mib_per_sec());
                up.samples[i].push(u.mib_per_sec());
                rss.samples[i].push(peak);
                if let Some(q) = queried {
                    progress(&format!(
                        "rtt {ms} ms {}/{} {:<12} query result {q:>8.1} MiB/s",
                        round + 1,
                        args.reps,
                        c.label,
                    ));
                    query.samples[i].push(q);
                }
            }
        }
        if args.rtt_throughput {
            figures.extend([down, up, rss]);
            if pg.is_some() {
                figures.push(query);
            }
        }
        if args.ttfb {
            figures.extend(latency(lab, contenders, args, &proxy, &known, ms));
        }
    }
    figures
}

/// Characters of text in each row of the query result (a line of COPY text apiece, with its
/// newline).
const ROW_TEXT: u64 = 1000;
/// Longest wait for one query result.
const QUERY_TIMEOUT: Duration = Duration::from_secs(300);

/// The query-result download of about `size` bytes: SQL for a `COPY ... TO STDOUT` of rows
/// that PostgreSQL generates, and the exact bytes of COPY text it returns.
pub(crate) fn result_query(size: u64) -> (String, u64) {
    let rows = (size / (ROW_TEXT + 1)).max(1);
    let sql =
        format!("COPY (SELECT repeat('x', {ROW_TEXT}) FROM generate_series(1, {rows})) TO STDOUT");
    (sql, rows * (ROW_TEXT + 1))
}

/// Runs `sql` (a `COPY ... TO STDOUT`) with psql through 127.0.0.1:`port`, counting what it
/// writes as it comes; returns the result's bytes and the time psql's `\timing` gives the
/// query. Killed after [`QUERY_TIMEOUT`].
pub(crate) fn query_result(port: u16, sql: &str) -> Result<Transfer, String> {
    let mut cmd = psql_command(port);
    // Quiet: no "Timing is on." before the result.
    cmd.args(["-q", "-c", "\\timing on", "-c", sql])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("psql: {e}"))?;
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + QUERY_TIMEOUT;
            while !done.load(Ordering::Relaxed) {
                if Instant::now() >= deadline {
                    signal(pid, rustix::process::Signal::KILL);
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut total = 0u64;
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    if let Some(mut out) = child.stdout.take() {
        loop {
            match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n as u64;
                    tail.extend_from_slice(&buf[..n]);
                    let keep = tail.len().saturating_sub(256);
                    tail.drain(..keep);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading psql's output: {e}")),
            }
        }
    }
    let mut errors = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut errors);
    }
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    if !status.is_some_and(|s| s.success()) {
        return Err(format!("psql failed ({status:?}): {}", errors.trim()));
    }
    // The result, then `Time: 1234.567 ms (00:01.235)` from \timing.
    let (result, elapsed) = split_timing(&tail)?;
    Ok(Transfer {
        bytes: total - (tail.len() - result) as u64,
        elapsed,
        sha256: None,
    })
}

/// Where psql's closing `Time: N ms` line starts in `tail` (the end of its output), and the
/// time it gives.
fn split_timing(tail: &[u8]) -> Result<(usize, Duration), String> {
    let at = tail
        .windows(6)
        .rposition(|w| w == b"Time: ")
        .ok_or("no timing after the result")?;
    let line = String::from_utf8_lossy(&tail[at..]);
    let ms: f64 = line["Time: ".len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .filter(|ms: &f64| ms.is_finite() && *ms > 0.0)
        .ok_or_else(|| format!("unreadable timing {line:?}"))?;
    Ok((at, Duration::from_secs_f64(ms / 1000.0)))
}

/// New connections per client and RTT for [`latency`]: the first through a fresh client, then
/// this many through the warm one.
const WARM_CONNECTIONS: usize = 5;

/// Start to first echoed byte, and a new connection's first echoed byte on a warm tunnel, at
/// `ms` of round trip; each also as a count of round trips (the figure divided by the RTT),
/// which is what the handshake's design decides. Then start to first echoed byte for a run
/// after an earlier one: forwarder with a KexGuessFile the earlier run wrote (it guesses the
/// key exchange), ssh the same as its first run (it keeps nothing between runs).
fn latency(
    lab: &Lab,
    contenders: &[Contender],
    args: &Args,
    proxy: &DelayProxy,
    known: &Path,
    ms: u32,
) -> Vec<Figure> {
    let mut start = Figure::new(
        format!("start to first echoed byte ms, {ms} ms RTT"),
        Better::Lower,
    );
    let mut warm = Figure::new(
        format!("new connection on a warm tunnel to first echoed byte ms, {ms} ms RTT"),
        Better::Lower,
    );
    let mut again = Figure::new(
        format!("start to first echoed byte ms, a run after an earlier one, {ms} ms RTT"),
        Better::Lower,
    );
    let round_trips = |t: f64| {
        if ms == 0 {
            String::new()
        } else {
            format!(" ({:.1} RTT)", t / f64::from(ms))
        }
    };
    let guess_file = known.with_file_name("kex_firsts");
    let with_file = |c: &Contender, local: u16| {
        tunnel_via(lab, c, args, proxy.port(), known)
            .option(&format!("KexGuessFile={}", guess_file.display()))
            .forward(local, "127.0.0.1", lab.echo.port())
            .spawn()
    };
    // The earlier run, once, so that the file holds the bastion's choices.
    if let Some(c) = contenders.iter().find(|c| c.kind == ClientKind::Forwarder)
        && !guess_file.exists()
    {
        let local = free_port();
        let mut tunnel = with_file(c, local);
        first_echoed_byte(&mut tunnel, local);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !guess_file.exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        super::stop_client(&mut tunnel, &lab.sshd);
        if !guess_file.exists() {
            fail(&tunnel, "the KexGuessFile was not written");
        }
    }
    for round in 0..args.ttfb_reps {
        for i in order(round) {
            let c = &contenders[i];
            let local = free_port();
            let mut tunnel = tunnel_via(lab, c, args, proxy.port(), known)
                .forward(local, "127.0.0.1", lab.echo.port())
                .spawn();
            let first = first_echoed_byte(&mut tunnel, local).as_secs_f64() * 1000.0;
            let mut warm_ms = Vec::with_capacity(WARM_CONNECTIONS);
            for _ in 0..WARM_CONNECTIONS {
                let t = Instant::now();
                if let Err(e) = echo_one_byte(local) {
                    fail(
                        &tunnel,
                        &format!("a new connection on the warm tunnel: {e}"),
                    );
                }
                warm_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            super::stop_client(&mut tunnel, &lab.sshd);
            let warm_median = super::median(&warm_ms).unwrap_or(f64::NAN);
            progress(&format!(
                "rtt {ms} ms {}/{} {:<12} first byte {first:.1} ms{}, warm connection {warm_median:.1} ms{}",
                round + 1,
                args.ttfb_reps,
                c.label,
                round_trips(first),
                round_trips(warm_median),
            ));
            start.samples[i].push(first);
            warm.samples[i].push(warm_median);
            let later = if c.kind == ClientKind::Forwarder {
                let local = free_port();
                let mut tunnel = with_file(c, local);
                let t = first_echoed_byte(&mut tunnel, local).as_secs_f64() * 1000.0;
                super::stop_client(&mut tunnel, &lab.sshd);
                progress(&format!(
                    "rtt {ms} ms {}/{} {:<12} first byte {t:.1} ms{} with the KexGuessFile",
                    round + 1,
                    args.ttfb_reps,
                    c.label,
                    round_trips(t),
                ));
                t
            } else {
                first
            };
            again.samples[i].push(later);
        }
    }
    vec![start, warm, again]
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_interop_tests::{SourceServer, download};

    #[test]
    fn rtt_lists_parse() {
        assert_eq!(parse_list("0,10,50"), Ok(vec![0, 10, 50]));
        assert_eq!(parse_list(" 5 "), Ok(vec![5]));
        assert!(parse_list("").is_err());
        assert!(parse_list("10,x").is_err());
        assert!(parse_list("20000").is_err());
    }

    #[test]
    fn the_query_result_is_sized_and_timed_from_psqls_output() {
        let (sql, bytes) = result_query(10_010);
        assert!(sql.contains("generate_series(1, 10)"), "{sql}");
        assert_eq!(bytes, 10_010, "ten rows of 1,000 characters and a newline");
        assert_eq!(result_query(5).1, 1001, "at least one row");
        let out = b"xxxx\nxxxx\nTime: 1234.500 ms (00:01.235)\n";
        let (at, took) = split_timing(out).expect("timed");
        assert_eq!(at, 10, "the result ends where the timing starts");
        assert_eq!(took, Duration::from_micros(1_234_500));
        assert!(split_timing(b"xxxx\n").is_err(), "no timing line");
        assert!(split_timing(b"Time: soon\n").is_err());
    }

    #[test]
    fn rtt_option_parses_with_and_without_a_list() {
        let parse = |v: &[&str]| super::super::parse_args(v.iter().map(|s| (*s).to_owned()));
        let args = parse(&["--rtt"]).expect("bare --rtt");
        assert_eq!(args.rtt, Some(DEFAULT_RTTS.to_vec()));
        assert!(
            !args.throughput,
            "--rtt replaces the plain throughput figures"
        );
        assert!(args.rtt_throughput);
        for order in [
            ["--rtt", "--skip-throughput"],
            ["--skip-throughput", "--rtt"],
        ] {
            let args = parse(&order).expect("--rtt with --skip-throughput");
            assert!(!args.rtt_throughput, "{order:?}: latency figures only");
        }
        let args = parse(&["--rtt", "--skip-pgbench"]).expect("--rtt before a flag");
        assert_eq!(args.rtt, Some(DEFAULT_RTTS.to_vec()));
        assert!(!args.pgbench);
        assert_eq!(
            parse(&["--rtt", "0,25"]).expect("list").rtt,
            Some(vec![0, 25])
        );
        assert_eq!(parse(&["--rtt=50"]).expect("inline").rtt, Some(vec![50]));
        assert!(parse(&["--rtt", "fast"]).is_err());
        assert_eq!(parse(&[]).expect("no options").rtt, None);
    }

    #[test]
    fn each_direction_keeps_at_most_the_window_in_flight_and_grows_it_by_acknowledgements() {
        let window = 100_000;
        let mut q = Queue::new(window);
        let t0 = Instant::now();
        let arrives = t0 + Duration::from_millis(25);
        q.pending.push_back(vec![7; 2_000_000]);
        q.bytes = 2_000_000;
        // Slow start: ten segments first, the rest waits.
        q.release(arrives);
        assert_eq!(q.in_flight, INITIAL_CWND);
        assert_eq!(q.chunks.len(), 1);
        assert_eq!(
            q.pending.front().map(Vec::len),
            Some(2_000_000 - INITIAL_CWND)
        );
        q.release(arrives);
        assert_eq!(
            q.in_flight, INITIAL_CWND,
            "nothing more until an acknowledgement"
        );
        q.acks
            .push_back((t0 + Duration::from_millis(50), INITIAL_CWND));
        q.acknowledge(t0 + Duration::from_millis(49));
        assert_eq!(q.in_flight, INITIAL_CWND, "not yet due");
        q.acknowledge(t0 + Duration::from_millis(50));
        assert_eq!(q.in_flight, 0);
        assert_eq!(q.cwnd, 2 * INITIAL_CWND, "doubled per round trip");
        // Up to the window, never past it.
        for _ in 0..10 {
            q.release(arrives);
            let n = q.in_flight;
            q.acks.push_back((t0, n));
            q.acknowledge(t0);
        }
        assert_eq!(q.cwnd, window);
        q.release(arrives);
        assert_eq!(q.in_flight, window);
        // Every byte is still there, in order.
        let on_path: usize = q.chunks.iter().map(|c| c.1.len()).sum();
        let waiting: usize = q.pending.iter().map(Vec::len).sum();
        assert_eq!(on_path + waiting, 2_000_000);
        assert_eq!(q.next_due(), Some(arrives));
        // The proxy's own bound stops the reader whatever the window says.
        let mut full = Queue::new(QUEUE_BYTES);
        full.bytes = QUEUE_BYTES;
        assert!(!full.has_room());
    }

    #[test]
    fn the_default_window_is_the_kernels_send_buffer_at_most() {
        let w = default_link_window();
        assert!((64 << 10..=QUEUE_BYTES as u64).contains(&w), "{w}");
    }

    #[test]
    fn the_proxy_delivers_every_byte_and_delays() {
        let source = SourceServer::start(8 << 20);
        let proxy = DelayProxy::start(source.port(), default_link_window());
        let t = download(proxy.port(), false).expect("download through the proxy");
        assert_eq!(t.bytes, 8 << 20);
        proxy.set_rtt(Duration::from_millis(200));
        let t = download(proxy.port(), false).expect("download through the delaying proxy");
        assert_eq!(t.bytes, 8 << 20);
    }
}
