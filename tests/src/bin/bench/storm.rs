//! `bench --storm`: what many sessions reconnecting at once cost the other tunnels of the
//! same `forwarder serve`.
//!
//! A platform's fleet holds sessions to many customers' bastions; when one bastion restarts,
//! every session to it reconnects at once, and the handshakes run on the threads that carry
//! the sessions of every other customer. This mode measures what a tunnel through another
//! bastion feels meanwhile: one fleet with one tunnel through sshd A (the steady one) and N
//! tunnels through sshd B, each on its own session (`share_session = false`). A client
//! echoes 64 bytes at a time through the steady tunnel, one round trip after another, all
//! along. After a quiet spell, B's session processes are killed (its listener stays), and the
//! fleet reconnects all N; this is done a few times. The report has the steady tunnel's round
//! trips while quiet and during the reconnects (median, 99th percentile, worst), how long
//! the N took to be up again, and the client CPU each reconnect cost, split between the
//! threads that carry sessions (`session-home-*`) and the others.
//!
//! With `--storm-rtt MS`, the N sessions reach their sshd through the bench's delaying
//! proxy, as a bastion in another region would be reached; the steady tunnel does not.
//!
//! There is no OpenSSH column: `ssh -N -L` runs a process per tunnel, so other tunnels'
//! reconnects reach it only through the CPU they take.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ssh_interop_tests::fleet::{TunnelSpec, fleet_file};
use ssh_interop_tests::{EchoServer, KeyKind, Sshd, UserKey, forwarder_binary, free_port};

use super::fleet::Serve;
use super::rtt::{DelayProxy, default_link_window, known_hosts_for};

/// Sessions that reconnect at once, unless `--storm-sessions` says otherwise.
pub(crate) const DEFAULT_SESSIONS: usize = 40;
/// Times they are made to, unless `--storm-rounds` says otherwise.
pub(crate) const DEFAULT_ROUNDS: usize = 3;
/// Bytes of each echo through the steady tunnel.
const PING: usize = 64;
/// Quiet time before the first reconnect and after each.
const QUIET: Duration = Duration::from_secs(2);
/// Longest wait for the N sessions to be up again after one kill.
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for one echo through the steady tunnel.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// What `--storm`, `--storm-sessions` and `--storm-rounds` ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) sessions: usize,
    pub(crate) rounds: usize,
    /// Round trip between the fleet and the stormy bastion (`--storm-rtt`), 0 for none.
    pub(crate) rtt_ms: u32,
    /// `[admin] handshakes_per_bastion` (`--storm-handshakes`); `None` for the default.
    pub(crate) handshakes: Option<u32>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sessions: DEFAULT_SESSIONS,
            rounds: DEFAULT_ROUNDS,
            rtt_ms: 0,
            handshakes: None,
        }
    }
}

/// One round trip through the steady tunnel: when it ended, how long it took.
type Ping = (Instant, Duration);

/// Echoes [`PING`] bytes through `port` until `stop`, recording each round trip; ends with
/// an error when the tunnel fails.
fn pinger(port: u16, stop: Arc<AtomicBool>, pings: Arc<Mutex<Vec<Ping>>>) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, PING_TIMEOUT)
        .map_err(|e| format!("connect to the steady tunnel: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(PING_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut n = 0u8;
    let mut back = [0u8; PING];
    while !stop.load(Ordering::Relaxed) {
        n = n.wrapping_add(1);
        let sent = [n; PING];
        let t0 = Instant::now();
        s.write_all(&sent)
            .map_err(|e| format!("write to the steady tunnel: {e}"))?;
        s.read_exact(&mut back)
            .map_err(|e| format!("read from the steady tunnel: {e}"))?;
        let took = t0.elapsed();
        if back != sent {
            return Err("the steady tunnel echoed other bytes".into());
        }
        pings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Instant::now(), took));
        // About a query's pace: a round trip every millisecond, not a busy loop.
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// CPU nanoseconds of `pid`'s live threads, split: the session threads, the others.
fn cpu_split(pid: u32) -> (u64, u64) {
    let mut homes = 0;
    let mut others = 0;
    for (tid, ns) in super::thread_cpu_ns(pid) {
        let name =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
        if name.trim().starts_with("session-home") {
            homes += ns;
        } else {
            others += ns;
        }
    }
    (homes, others)
}

/// The `q` quantile of sorted `v` (nearest rank).
fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// `median / p99 / worst` of `v` in ms.
fn describe(v: &mut [Duration]) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{:.2} / {:.2} / {:.2} ms over {} round trips",
        ms(quantile(v, 0.5)),
        ms(quantile(v, 0.99)),
        ms(v.last().copied().unwrap_or_default()),
        v.len()
    )
}

/// Runs the storm with `program` (default: [`forwarder_binary`]) and prints the report.
pub(crate) fn run(program: Option<&Path>, options: &Options, key: KeyKind) {
    let program = program.map_or_else(forwarder_binary, Path::to_path_buf);
    let n = options.sessions;
    super::progress(&format!(
        "storm: generating a {} user key, starting two sshd and an echo server",
        key.label()
    ));
    let key = UserKey::generate(key);
    let start_sshd = || {
        Sshd::builder()
            .authorize(&key)
            .config("LogLevel INFO")
            .config("MaxStartups 2000:30:2000")
            .start()
    };
    let steady = start_sshd();
    let stormy = start_sshd();
    let dir = tempfile::tempdir().expect("temporary directory");
    // The stormy bastion as the fleet reaches it: straight, or through the delaying proxy.
    let proxy = (options.rtt_ms > 0).then(|| {
        let proxy = DelayProxy::start(stormy.port(), default_link_window());
        proxy.set_rtt(Duration::from_millis(options.rtt_ms.into()));
        let known = known_hosts_for(&stormy, proxy.port(), dir.path());
        (proxy, known)
    });
    let echo = EchoServer::start();
    let remote = format!("127.0.0.1:{}", echo.port());
    let admin = free_port();
    let limit = options
        .handshakes
        .map(|n| format!("handshakes_per_bastion = {n}\n"))
        .unwrap_or_default();
    let head = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ndrain_timeout = \"1s\"\n{limit}\n\
         [defaults]\nidentity_file = {:?}\nprobe = \"none\"\nshare_session = false\n",
        key.private_key_path().display().to_string(),
    );
    let tunnel = |name: String, sshd: &Sshd, via: Option<&(DelayProxy, std::path::PathBuf)>| {
        let (port, known) = match via {
            Some((proxy, known)) => (proxy.port(), known.as_path()),
            None => (sshd.port(), sshd.known_hosts_path()),
        };
        let bastion = format!("{}@127.0.0.1:{port}", sshd.user());
        let listen = free_port();
        let spec = TunnelSpec::new(&name, &bastion, listen, &remote)
            .with(&format!("known_hosts = {:?}", known.display().to_string()));
        (spec, listen)
    };
    let (first, steady_port) = tunnel("steady".into(), &steady, None);
    let mut tunnels = vec![first];
    tunnels.extend((0..n).map(|i| tunnel(format!("storm{i:04}"), &stormy, proxy.as_ref()).0));

    let started = Instant::now();
    let mut serve = Serve::start(&program, &fleet_file(&head, &tunnels), admin);
    if let Err(e) = serve.wait_all_up(n + 1, started) {
        super::progress(&format!("storm: FAILED: {e}"));
        return;
    }
    let pid = serve.pid();
    let first_up = started.elapsed();
    // The first start: every session's first handshake in this process (no remembered
    // choice of the bastion's), the process's own start included.
    let (start_home_ns, start_other_ns) = cpu_split(pid);
    let start_waits = serve.gate_waits();
    super::progress(&format!(
        "storm: {} tunnels up in {:.1} s",
        n + 1,
        first_up.as_secs_f64()
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let pings = Arc::new(Mutex::new(Vec::new()));
    let pinging = {
        let (stop, pings) = (stop.clone(), pings.clone());
        std::thread::spawn(move || pinger(steady_port, stop, pings))
    };
    std::thread::sleep(QUIET);
    let mut windows = Vec::new();
    let mut up_again = Vec::new();
    let (mut home_ns, mut other_ns) = (0u64, 0u64);
    let mut failed = None;
    for round in 1..=options.rounds {
        let logins = |s: &Sshd| s.log().matches("Accepted publickey").count();
        let before = logins(&stormy);
        let (h0, o0) = cpu_split(pid);
        let t0 = Instant::now();
        let killed = stormy.kill_sessions();
        // Up again: every session logged in anew and every tunnel shows `up`.
        let done = loop {
            if logins(&stormy) >= before + n && serve.up_now() == Some(n + 1) {
                break Ok(t0.elapsed());
            }
            if t0.elapsed() > ROUND_TIMEOUT {
                break Err(format!(
                    "round {round}: {} of {n} sessions logged in again within {ROUND_TIMEOUT:?}",
                    logins(&stormy) - before
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (h1, o1) = cpu_split(pid);
        match done {
            Ok(took) => {
                windows.push((t0, t0 + took));
                up_again.push(took);
                home_ns += h1.saturating_sub(h0);
                other_ns += o1.saturating_sub(o0);
                super::progress(&format!(
                    "storm: round {round}: {killed} sessions killed, all {n} up again in {:.0} ms",
                    took.as_secs_f64() * 1000.0
                ));
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        std::thread::sleep(QUIET);
    }
    let storm_waits = serve.gate_waits();
    stop.store(true, Ordering::Relaxed);
    let pinged = pinging
        .join()
        .unwrap_or_else(|_| Err("the pinger panicked".into()));
    serve.stop();
    if let Some(e) = failed.or(pinged.err()) {
        super::progress(&format!("storm: FAILED: {e}"));
        return;
    }

    let pings = std::mem::take(&mut *pings.lock().unwrap_or_else(|p| p.into_inner()));
    let in_storm = |at: Instant, took: Duration| {
        // A round trip counts as in a storm when any of it overlapped one.
        let began = at.checked_sub(took).unwrap_or(at);
        windows.iter().any(|&(s, e)| began < e && at > s)
    };
    let (mut stormy_rtts, mut quiet_rtts): (Vec<Duration>, Vec<Duration>) =
        (Vec::new(), Vec::new());
    for &(at, took) in &pings {
        if in_storm(at, took) {
            stormy_rtts.push(took);
        } else {
            quiet_rtts.push(took);
        }
    }
    let reconnects = (n * windows.len()).max(1) as f64;
    let per = |ns: u64| ns as f64 / 1e6 / reconnects;
    up_again.sort();
    println!();
    println!(
        "== storm: {n} sessions to one bastion reconnecting at once, {} rounds{}{} ==",
        windows.len(),
        if options.rtt_ms > 0 {
            format!(", {} ms away", options.rtt_ms)
        } else {
            String::new()
        },
        match options.handshakes {
            Some(h) => format!(", {h} handshakes at a time"),
            None => String::new(),
        }
    );
    println!(
        "forwarder: {} (forwarder serve), user key {}",
        program.display(),
        key.kind().label()
    );
    println!(
        "  first start: all {} up in {:.0} ms, client CPU per session {:.2} ms on the session \
         threads, {:.2} ms on others",
        n + 1,
        first_up.as_secs_f64() * 1000.0,
        start_home_ns as f64 / 1e6 / (n + 1) as f64,
        start_other_ns as f64 / 1e6 / (n + 1) as f64
    );
    println!(
        "  all {n} up again after the kill: median {:.0} ms (rounds: {})",
        quantile(&up_again, 0.5).as_secs_f64() * 1000.0,
        up_again
            .iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // What /metrics says of the queue at the stormy bastion's gate.
    if let (Some((c0, s0)), Some((c1, s1))) = (start_waits, storm_waits) {
        let mean = |count: f64, sum: f64| sum / count.max(1.0) * 1000.0;
        println!(
            "  wait for a handshake's turn (forwarder_bastion_handshake_wait_seconds): first \
             start {:.0} ms per attempt ({c0} attempts), reconnects {:.0} ms ({} attempts)",
            mean(c0, s0),
            mean(c1 - c0, s1 - s0),
            c1 - c0
        );
    }
    println!("  steady tunnel (another bastion), {PING}-byte echo, median / p99 / worst:");
    println!("    quiet:              {}", describe(&mut quiet_rtts));
    println!("    during reconnects:  {}", describe(&mut stormy_rtts));
    println!(
        "  client CPU per reconnect: {:.2} ms on the session threads, {:.2} ms on others",
        per(home_ns),
        per(other_ns)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
        assert_eq!(
            quantile(&[Duration::from_millis(7)], 0.99),
            Duration::from_millis(7)
        );
    }

    #[test]
    fn storm_options_parse() {
        let parse = |a: &[&str]| super::super::parse_args(a.iter().map(|s| (*s).to_owned()));
        assert_eq!(parse(&[]).expect("parses").storm, None);
        let all = parse(&["--storm"]).expect("parses").storm;
        assert_eq!(all, Some(Options::default()));
        let some = parse(&["--storm-rounds", "5", "--storm-sessions=100"])
            .expect("parses")
            .storm
            .expect("implies --storm");
        assert_eq!(
            some,
            Options {
                sessions: 100,
                rounds: 5,
                rtt_ms: 0,
                handshakes: None,
            }
        );
        assert_eq!(
            parse(&["--storm-sessions", "0"]).expect("parses").storm,
            Some(Options {
                sessions: 1,
                rounds: DEFAULT_ROUNDS,
                rtt_ms: 0,
                handshakes: None,
            })
        );
        assert_eq!(
            parse(&["--storm-rtt", "50"])
                .expect("parses")
                .storm
                .map(|o| o.rtt_ms),
            Some(50)
        );
        assert!(parse(&["--storm-rtt", "20000"]).is_err());
        assert_eq!(
            parse(&["--storm-handshakes", "8"])
                .expect("parses")
                .storm
                .and_then(|o| o.handshakes),
            Some(8)
        );
        assert!(parse(&["--storm-handshakes", "0"]).is_err());
        assert!(parse(&["--storm-handshakes", "65"]).is_err());
        assert!(parse(&["--storm-rounds", "x"]).is_err());
    }
}
