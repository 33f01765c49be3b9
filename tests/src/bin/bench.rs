//! The whole-system benchmark: two SSH clients (our `forwarder` and OpenSSH's `ssh` by
//! default) side by side, against the same lab sshd with the same cipher and the same
//! `-N -L` options, measured in one run and reported with their ratio. Run by `bench/run`.
//!
//! Figures, each the median of several runs in which the two clients take turns at going
//! first (every run count is even, so each goes first equally often):
//! - bulk throughput through the tunnel, download (server to client) and upload, every byte
//!   compared with the data sent (see [`download`]);
//! - the client process's own CPU seconds per GiB moved (nanoseconds on a CPU from
//!   `/proc/<pid>/task/*/schedstat`, so neither sshd nor the load generator is counted; see
//!   [`ClientCpu`]);
//! - the client's peak resident memory after the transfers;
//! - time from process start to the first byte echoed through the tunnel;
//! - pgbench select-only TPS through the tunnel, with persistent connections and with a new
//!   connection (a new channel) per transaction (`pgbench -C`), the last also beside a
//!   download of query results through the same tunnel (a platform's extract sharing the
//!   session with small queries);
//! - recovery: how soon the tunnel serves again after sshd restarts, and after the session's
//!   sshd processes freeze (see [`bench_restart`] and [`bench_freeze`]); a run that never
//!   recovers counts as slower than any that did ([`FAILED`]). Here OpenSSH runs
//!   under `autossh -M 0`, the usual way to keep `ssh -N -L` up, and forwarder with its own
//!   reconnect, each with its default settings apart from the keepalive OpenSSH lacks by
//!   default (ServerAliveInterval 15, ServerAliveCountMax 3 for both).
//!
//! Every timed run starts once the client's session is up and has carried data
//! ([`wait_until_carrying`]): forwarder listens before it logs in and ssh only after, so the
//! login would otherwise fall inside the first timed transfer of one and before that of the
//! other. Between runs the previous client's sshd session is left to close first
//! ([`stop_client`]).
//!
//! Where it means something, the same load is also run straight to the server without a
//! tunnel ("direct"), which shows the ceiling this machine puts on both clients. For the
//! client CPU figures "direct" is a plain relay moving the same bytes (see `relay`): the
//! floor the kernel sets under any client's CPU per GiB. PostgreSQL
//! trusts loopback TCP logins during the benchmark unless `--pg-scram` is given: SCRAM's
//! deliberately slow key derivation would otherwise dominate `pgbench -C` and hide the
//! tunnel's share.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use ssh_interop_tests::postgres::pgbench_command;
use ssh_interop_tests::process::{
    children_of, file_tail, find_program, run_bounded, run_ok, signal, wait_until,
};
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Pattern, Postgres, SinkServer, SourceServer, Sshd, Tunnel,
    TunnelBuilder, UserKey, download, echo_one_byte, free_port, openssh_binary, port_listening,
    upload,
};
use tempfile::TempDir;

// In a directory of its own: a file directly in src/bin would be a program of its own.
#[path = "bench/fleet.rs"]
mod fleet;
#[path = "bench/relay.rs"]
mod relay;
#[path = "bench/rtt.rs"]
mod rtt;
#[path = "bench/storm.rs"]
mod storm;

const USAGE: &str = "\
usage: bench [options]

  --client-a NAME        first client: forwarder or openssh (default: forwarder)
  --client-b NAME        second client, the yardstick (default: openssh)
  --forwarder PATH       forwarder binary (default: $FORWARDER_BIN, else next to this program)
  --serve                run forwarder as `forwarder serve`, the fleet daemon, with a fleet
                         file of the run's forwards (one tunnel each, on one shared session)
                         instead of `forwarder -L`
  --cipher NAME          cipher for both clients (default: aes128-gcm@openssh.com);
                         `default` leaves each client its own choice, as a user who sets
                         none gets (the report names what each negotiated)
  --kex NAME             key exchange for both clients (default: each client's own choice;
                         OpenSSH 9.2 prefers sntrup761x25519-sha512, which is slower)
  --size SIZE            bytes per transfer, with K/M/G suffix (default: 1G)
  --reps N               runs per client for throughput and pgbench (default: 4)
  --ttfb-reps N          runs per client for time to first byte (default: 10)
  --pgbench-seconds N    duration of each pgbench run (default: 10)
  --pgbench-clients N    pgbench concurrent clients (default: 4)
  --key KIND             user key: rsa4096 (default), rsa2048, ed25519, ecdsa256, ...
  --pg-scram             keep scram-sha-256 password logins for pgbench (default: trust)
  --verify               also SHA-256 every transfer end to end (every byte of every transfer
                         is compared with the data sent in any case; the hash costs more CPU
                         on the same machine)
  --restart-reps N       recovery runs per client after an sshd restart (default: 6)
  --restart-outage SECS  how long sshd stays down before it starts again (default: 0)
  --freeze-reps N        recovery runs per client after a frozen session (default: 2; each
                         takes the keepalive's 45-60 s)
  --recovery-timeout SECS  longest wait for one recovery (default: 120)
  --recovery             only the recovery figures (sshd restart and frozen session)
  --skip-throughput, --skip-ttfb, --skip-pgbench, --skip-recovery, --skip-freeze
  --quick                64M transfers, 2 reps, 4 ttfb reps, 3 s pgbench, 4 restart reps and
                         no frozen-session runs
  --fleet                only the memory of `forwarder serve` per idle tunnel and per idle
                         session: 1, 100 and 1000 tunnels on one session, then each with its
                         own (share_session = false), then up to 100 as as many
                         `ssh -N -L` processes; with idle CPU and sshd's memory for each
  --fleet-sizes LIST     tunnel counts for --fleet, comma-separated (implies --fleet)
  --fleet-settle SECS    idle time before a fleet's memory is read (default: 5; implies
                         --fleet)
  --storm                only what a reconnect storm costs the fleet's other tunnels: one
                         `forwarder serve` with a tunnel through one sshd, echoing 64 bytes at
                         a time, and N sessions to a second sshd whose session processes are
                         killed a few times; the echo's round trips while quiet and during
                         the reconnects, and the CPU per reconnect on the session threads
  --storm-sessions N     sessions that reconnect at once (default: 40; implies --storm)
  --storm-rounds N       times they are made to (default: 3; implies --storm)
  --storm-rtt MS         the N sessions reach their sshd through the delaying proxy with
                         this round trip (default: 0, straight; implies --storm)
  --storm-handshakes N   the fleet file's [admin] handshakes_per_bastion, 1 to 64
                         (default: the fleet's own; implies --storm)
  --rtt [LIST]           throughput (with a PostgreSQL query result), start to first byte
                         and a new connection's first byte through a delaying proxy in front
                         of sshd, at each round trip of LIST in ms (default: 0,10,50), instead
                         of the plain throughput figures (--skip-throughput, --skip-ttfb leave
                         out either part)
  --link-window SIZE     the most a --rtt connection has in flight per direction, as TCP
                         allows it on a real path of that round trip (default: this
                         machine's largest TCP send buffer, net.ipv4.tcp_wmem, capped by its
                         largest receive buffer; K/M/G suffix)
  --congestion-control NAME  the kernel's default TCP congestion control for the run (cubic,
                         bbr, reno; as root), put back at its end; every socket of the run
                         uses it, sshd's and both clients'. The report names the one used

Run counts (--reps, --ttfb-reps, --restart-reps, --freeze-reps) are rounded up to even
numbers: the two clients take turns at going first, so each goes first in half the rounds.
A recovery run that fails counts as slower than the recovery timeout in the median.";

#[derive(Debug)]
struct Args {
    clients: [ClientKind; 2],
    forwarder: Option<PathBuf>,
    /// `None` for each client's own choice (`--cipher default`).
    cipher: Option<String>,
    kex: Option<String>,
    size: u64,
    reps: usize,
    ttfb_reps: usize,
    pgbench_seconds: u32,
    pgbench_clients: u32,
    key: KeyKind,
    verify: bool,
    pg_scram: bool,
    throughput: bool,
    ttfb: bool,
    pgbench: bool,
    /// Recovery runs per client after an sshd restart; 0 skips them.
    restart_reps: usize,
    restart_outage: Duration,
    /// Recovery runs per client after a frozen session; 0 skips them.
    freeze_reps: usize,
    recovery_timeout: Duration,
    /// `--fleet`: only the fleet's memory.
    fleet: Option<fleet::Options>,
    /// `--storm`: only the reconnect storm.
    storm: Option<storm::Options>,
    /// `--rtt`: throughput at these round trips (ms) through a delaying proxy.
    rtt: Option<Vec<u32>>,
    /// Throughput at each `--rtt` round trip (off with `--skip-throughput`, in either order).
    rtt_throughput: bool,
    /// `--link-window`: TCP's window on the `--rtt` path; `None` for this kernel's default.
    link_window: Option<u64>,
    /// `--congestion-control`: the kernel's TCP congestion control for the run.
    congestion_control: Option<String>,
    /// `--serve`: forwarder runs as `forwarder serve` with a fleet file.
    serve: bool,
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        clients: [ClientKind::Forwarder, ClientKind::OpenSsh],
        forwarder: None,
        cipher: Some("aes128-gcm@openssh.com".to_owned()),
        kex: None,
        size: 1 << 30,
        reps: 4,
        ttfb_reps: 10,
        pgbench_seconds: 10,
        pgbench_clients: 4,
        key: KeyKind::Rsa4096,
        verify: false,
        pg_scram: false,
        throughput: true,
        ttfb: true,
        pgbench: true,
        restart_reps: 6,
        restart_outage: Duration::ZERO,
        freeze_reps: 2,
        recovery_timeout: Duration::from_secs(120),
        fleet: None,
        storm: None,
        rtt: None,
        rtt_throughput: true,
        link_window: None,
        congestion_control: None,
        serve: false,
    };
    let mut it = argv.into_iter().peekable();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let number = |v: String| {
            v.parse::<u32>()
                .map_err(|_| format!("{flag}: not a number: {v:?}"))
        };
        let seconds = |v: String| {
            v.parse::<f64>()
                .ok()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or_else(|| format!("{flag}: not a number of seconds: {v:?}"))
        };
        match flag.as_str() {
            "--client-a" | "--client-b" => {
                let v = value()?;
                let kind = ClientKind::parse(&v)
                    .ok_or_else(|| format!("unknown client {v:?}: use forwarder or openssh"))?;
                args.clients[usize::from(flag == "--client-b")] = kind;
            }
            // Absolute: `--serve` runs it from the lab's directory.
            "--forwarder" => {
                let v = value()?;
                let path =
                    std::path::absolute(&v).map_err(|e| format!("--forwarder: {v:?}: {e}"))?;
                args.forwarder = Some(path);
            }
            "--cipher" => args.cipher = Some(value()?).filter(|c| c != "default"),
            "--kex" => args.kex = Some(value()?),
            "--size" => args.size = parse_size(&value()?)?,
            "--reps" => args.reps = balanced_runs(number(value()?)?),
            "--ttfb-reps" => args.ttfb_reps = balanced_runs(number(value()?)?),
            "--pgbench-seconds" => args.pgbench_seconds = number(value()?)?.max(1),
            "--pgbench-clients" => args.pgbench_clients = number(value()?)?.max(1),
            "--key" => {
                let v = value()?;
                args.key = KeyKind::parse(&v).ok_or_else(|| format!("unknown key kind {v:?}"))?;
            }
            "--verify" => args.verify = true,
            "--serve" => args.serve = true,
            "--pg-scram" => args.pg_scram = true,
            "--skip-throughput" => {
                args.throughput = false;
                args.rtt_throughput = false;
            }
            "--skip-ttfb" => args.ttfb = false,
            "--skip-pgbench" => args.pgbench = false,
            "--restart-reps" => args.restart_reps = balanced_runs(number(value()?)?),
            "--restart-outage" => args.restart_outage = seconds(value()?)?,
            "--freeze-reps" => args.freeze_reps = balanced_runs(number(value()?)?),
            "--recovery-timeout" => {
                args.recovery_timeout = seconds(value()?)?.max(Duration::from_secs(1));
            }
            "--recovery" => {
                args.throughput = false;
                args.ttfb = false;
                args.pgbench = false;
            }
            "--skip-recovery" => {
                args.restart_reps = 0;
                args.freeze_reps = 0;
            }
            "--skip-freeze" => args.freeze_reps = 0,
            "--quick" => {
                args.size = 64 << 20;
                args.reps = 2;
                args.ttfb_reps = 4;
                args.pgbench_seconds = 3;
                args.restart_reps = args.restart_reps.min(4);
                args.freeze_reps = 0;
            }
            "--fleet" => {
                args.fleet.get_or_insert_with(fleet::Options::default);
            }
            "--storm" => {
                args.storm.get_or_insert_with(storm::Options::default);
            }
            "--storm-sessions" => {
                let n = number(value()?)?.max(1) as usize;
                args.storm
                    .get_or_insert_with(storm::Options::default)
                    .sessions = n;
            }
            "--storm-rounds" => {
                let n = number(value()?)?.max(1) as usize;
                args.storm
                    .get_or_insert_with(storm::Options::default)
                    .rounds = n;
            }
            "--storm-rtt" => {
                let ms = number(value()?)?;
                if ms > 10_000 {
                    return Err(format!("--storm-rtt: at most 10000 ms, not {ms}"));
                }
                args.storm
                    .get_or_insert_with(storm::Options::default)
                    .rtt_ms = ms;
            }
            "--storm-handshakes" => {
                let n = number(value()?)?;
                let most = forwarder::supervisor::MAX_HANDSHAKES_PER_BASTION;
                if !(1..=most).contains(&(n as usize)) {
                    return Err(format!("--storm-handshakes: 1 to {most}, not {n}"));
                }
                args.storm
                    .get_or_insert_with(storm::Options::default)
                    .handshakes = Some(n);
            }
            "--fleet-sizes" => {
                let sizes = fleet::parse_sizes(&value()?)?;
                args.fleet.get_or_insert_with(fleet::Options::default).sizes = sizes;
            }
            "--fleet-settle" => {
                let settle = seconds(value()?)?.max(Duration::from_secs(1));
                args.fleet
                    .get_or_insert_with(fleet::Options::default)
                    .settle = settle;
            }
            "--rtt" => {
                let list = inline
                    .or_else(|| it.next_if(|v| !v.starts_with('-')))
                    .unwrap_or_default();
                args.rtt = Some(if list.is_empty() {
                    rtt::DEFAULT_RTTS.to_vec()
                } else {
                    rtt::parse_list(&list)?
                });
                args.throughput = false;
            }
            "--link-window" => {
                let window = parse_size(&value()?)?;
                if window < 64 << 10 {
                    return Err("--link-window: at least 64K".to_owned());
                }
                args.link_window = Some(window);
            }
            "--congestion-control" => {
                let name = value()?;
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(format!(
                        "--congestion-control: not an algorithm name: {name:?}"
                    ));
                }
                args.congestion_control = Some(name);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// `123`, `64K`, `512M`, `1G` (also `MiB`, `GiB`, `MB`: all powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number.parse().map_err(|_| format!("bad size {text:?}"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("bad size unit in {text:?}: use K, M or G")),
    };
    number
        .checked_mul(1 << shift)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("bad size {text:?}"))
}

/// One client under test.
struct Contender {
    label: String,
    kind: ClientKind,
    program: Option<PathBuf>,
}

/// Everything the clients connect to.
struct Lab {
    key: UserKey,
    sshd: Sshd,
    echo: EchoServer,
    source: SourceServer,
    sink: SinkServer,
    pg: Option<Postgres>,
}

impl Lab {
    fn tunnel(&self, c: &Contender, args: &Args) -> TunnelBuilder {
        args.client(c, TunnelBuilder::new(c.kind, &self.sshd, &self.key))
    }
}

impl Args {
    /// `b` with what every client of the bench gets: the cipher and key exchange asked for
    /// and the forwarder binary.
    fn client(&self, c: &Contender, mut b: TunnelBuilder) -> TunnelBuilder {
        if let Some(cipher) = &self.cipher {
            b = b.cipher(cipher);
        }
        if let Some(kex) = &self.kex {
            b = b.option(&format!("KexAlgorithms={kex}"));
        }
        if let Some(p) = &c.program {
            b = b.program(p);
        }
        if self.serve && c.kind == ClientKind::Forwarder {
            b = b.as_fleet();
        }
        b
    }
}

/// The cipher each client negotiates with the lab's sshd when it is left its own choice:
/// one verbose session each, read from the client's own log.
fn negotiated_ciphers(lab: &Lab, contenders: &[Contender], args: &Args) -> Vec<String> {
    contenders
        .iter()
        .map(|c| {
            progress(&format!("lab: which cipher {} chooses", c.label));
            let mut tunnel = lab
                .tunnel(c, args)
                .verbose()
                .forward_to(lab.echo.port())
                .start();
            let port = tunnel.local_ports()[0];
            wait_until_carrying(&mut tunnel, port);
            let cipher = negotiated_cipher(&tunnel.log())
                .unwrap_or_else(|| fail(&tunnel, "the negotiated cipher is not in its log"));
            tunnel.kill();
            wait_for_sessions_closed(&lab.sshd);
            cipher
        })
        .collect()
}

/// The server-to-client cipher named in a client's `-v` log: OpenSSH's `kex: server->client
/// cipher: NAME MAC: ...` or forwarder's `cipher NAME` (`NAME/NAME` when the directions
/// differ) in its key exchange line.
fn negotiated_cipher(log: &str) -> Option<String> {
    let name = |rest: &str| {
        let end = rest
            .find(|ch: char| ch == ',' || ch == '"' || ch.is_whitespace())
            .unwrap_or(rest.len());
        Some(rest[..end].to_owned()).filter(|n| !n.is_empty())
    };
    log.lines().find_map(|line| {
        if let Some((_, rest)) = line.split_once("kex: server->client cipher: ") {
            return name(rest);
        }
        let (_, after) = line.split_once("key exchange complete")?;
        let (_, rest) = after.split_once(", cipher ")?;
        let both = name(rest)?;
        // forwarder writes client-to-server first.
        Some(both.rsplit('/').next().unwrap_or(&both).to_owned())
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

struct Figure {
    name: String,
    better: Better,
    samples: [Vec<f64>; 2],
    /// The same load without a tunnel, where that means something.
    direct: Vec<f64>,
    /// Runs of each client that gave no figure (a recovery that never came); each is also in
    /// `samples` as [`FAILED`].
    failed: [usize; 2],
}

impl Figure {
    fn new(name: impl Into<String>, better: Better) -> Figure {
        Figure {
            name: name.into(),
            better,
            samples: [Vec::new(), Vec::new()],
            direct: Vec::new(),
            failed: [0, 0],
        }
    }
}

/// The sample of a run that gave no figure: a recovery that did not come within
/// `--recovery-timeout` (or a client that gave up). It sorts after every real figure, so
/// in the median a failure counts as a run slower than the timeout, and the client that
/// fails more often cannot look faster for it; a median that is a failure shows as
/// ">timeout", with no ratio.
const FAILED: f64 = f64::INFINITY;

/// The median of `values`; NaN is a missing value and left out, [`FAILED`] is not.
fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let _congestion_control = match args
        .congestion_control
        .as_deref()
        .map(CongestionControl::set)
        .transpose()
    {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    run(&args);
    ExitCode::SUCCESS
}

/// The kernel's default TCP congestion control, set for the run and put back when dropped
/// (at the end of the run, or when it panics; not when it is killed).
struct CongestionControl {
    before: String,
}

const CONGESTION_CONTROL: &str = "/proc/sys/net/ipv4/tcp_congestion_control";

impl CongestionControl {
    fn set(name: &str) -> Result<CongestionControl, String> {
        let before = std::fs::read_to_string(CONGESTION_CONTROL)
            .map_err(|e| format!("--congestion-control: reading {CONGESTION_CONTROL}: {e}"))?
            .trim()
            .to_owned();
        std::fs::write(CONGESTION_CONTROL, name).map_err(|e| {
            format!(
                "--congestion-control {name}: writing {CONGESTION_CONTROL}: {e} (it takes root, \
                 and an algorithm the kernel has: net.ipv4.tcp_available_congestion_control)"
            )
        })?;
        progress(&format!(
            "TCP congestion control {name} for this run (it was {before})"
        ));
        Ok(CongestionControl { before })
    }
}

impl Drop for CongestionControl {
    fn drop(&mut self) {
        match std::fs::write(CONGESTION_CONTROL, &self.before) {
            Ok(()) => progress(&format!("TCP congestion control {} again", self.before)),
            Err(e) => eprintln!(
                "bench: could not put back the TCP congestion control {}: {e}",
                self.before
            ),
        }
    }
}

fn run(args: &Args) {
    if let Some(options) = &args.fleet {
        fleet::run(args.forwarder.as_deref(), options);
        return;
    }
    if let Some(options) = &args.storm {
        storm::run(args.forwarder.as_deref(), options, args.key);
        return;
    }
    let same = args.clients[0] == args.clients[1];
    let contenders: Vec<Contender> = args
        .clients
        .iter()
        .enumerate()
        .map(|(i, &kind)| Contender {
            label: if same {
                format!("{}:{}", ["A", "B"][i], kind.name())
            } else {
                kind.name().to_owned()
            },
            kind,
            program: (kind == ClientKind::Forwarder)
                .then(|| args.forwarder.clone())
                .flatten(),
        })
        .collect();

    progress(&format!(
        "lab: generating a {} user key, starting sshd",
        args.key
    ));
    let key = UserKey::generate(args.key);
    // Quiet logging: sshd's own log writes would otherwise be part of what is measured.
    let sshd = Sshd::builder()
        .authorize(&key)
        .config("LogLevel INFO")
        .start();
    // The --rtt throughput figures include a query result.
    let rtt_query = args.rtt.is_some() && args.rtt_throughput;
    let pg = (args.pgbench || rtt_query).then(|| {
        progress("lab: starting PostgreSQL");
        let pg = Postgres::start();
        if args.pgbench {
            progress("lab: creating the pgbench tables");
            pg.pgbench_init(10);
        }
        if !args.pg_scram {
            pg.trust_host_connections();
        }
        pg
    });
    let mut lab = Lab {
        key,
        sshd,
        echo: EchoServer::start(),
        source: SourceServer::start(args.size),
        sink: if args.verify {
            SinkServer::start()
        } else {
            SinkServer::counting()
        },
        pg,
    };

    // Every report names the cipher; left to the clients, it is asked of them first.
    let ciphers = if args.cipher.is_none() {
        negotiated_ciphers(&lab, &contenders, args)
    } else {
        Vec::new()
    };
    let mut figures = Vec::new();
    if args.throughput {
        figures.extend(bench_throughput(&lab, &contenders, args));
    }
    if let Some(rtts) = &args.rtt {
        figures.extend(rtt::bench(&lab, &contenders, args, rtts));
    }
    if args.ttfb {
        figures.push(bench_first_byte(&lab, &contenders, args));
    }
    if args.pgbench {
        figures.extend(bench_pgbench(&lab, &contenders, args));
    }
    // Last: these restart sshd and leave frozen sessions behind (killed, but still).
    let mut notes = Vec::new();
    if args.restart_reps > 0 || args.freeze_reps > 0 {
        let autossh = contenders
            .iter()
            .any(|c| c.kind == ClientKind::OpenSsh)
            .then(Autossh::prepare);
        let mut down = Vec::new();
        if args.restart_reps > 0 {
            let (figure, outages) = bench_restart(&mut lab, &contenders, args, autossh.as_ref());
            figures.push(figure);
            down = outages;
        }
        if args.freeze_reps > 0 {
            figures.push(bench_freeze(&lab, &contenders, args, autossh.as_ref()));
        }
        notes = recovery_notes(args, &contenders, autossh.as_ref(), median(&down));
    }
    print_report(args, &contenders, &figures, &notes, &ciphers);
}

fn progress(text: &str) {
    eprintln!("bench: {text}");
}

/// The order of the two clients in round `round`: alternating, so neither always runs on a
/// machine the other one just warmed up (or heated). With an even number of rounds (see
/// [`balanced_runs`]) each goes first in half of them, and the runs go A B B A A B ...
fn order(round: usize) -> [usize; 2] {
    if round.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    }
}

/// A run count as given, rounded up to an even number (at least 2), so that [`order`] lets
/// each client go first equally often: the run that goes first tends to be ahead.
fn balanced_runs(n: u32) -> usize {
    (n.max(1) as usize).next_multiple_of(2)
}

fn bench_throughput(lab: &Lab, contenders: &[Contender], args: &Args) -> Vec<Figure> {
    let mut down = Figure::new("download MiB/s", Better::Higher);
    let mut up = Figure::new("upload MiB/s", Better::Higher);
    let mut down_cpu = Figure::new("download client CPU s/GiB", Better::Lower);
    let mut up_cpu = Figure::new("upload client CPU s/GiB", Better::Lower);
    // The client's user-mode share of the above: the kernel's (TCP on both sockets) is most
    // of the rest, and about the same for any client that moves the same bytes.
    let mut down_user = Figure::new("download client user CPU s/GiB", Better::Lower);
    let mut up_user = Figure::new("upload client user CPU s/GiB", Better::Lower);
    // Everything on the machine (client, sshd, source and sink): on a saturated machine this,
    // not the client's share alone, is what sets the throughput.
    let mut down_sys = Figure::new("download machine CPU s/GiB", Better::Lower);
    let mut up_sys = Figure::new("upload machine CPU s/GiB", Better::Lower);
    let mut down_sshd = Figure::new("download sshd CPU s/GiB", Better::Lower);
    let mut up_sshd = Figure::new("upload sshd CPU s/GiB", Better::Lower);
    let mut rss = Figure::new("client peak RSS MiB", Better::Lower);
    let gib = args.size as f64 / f64::from(1u32 << 30);
    let expected_sha = args.verify.then(|| lab.source.expected_sha256());
    for round in 0..args.reps {
        let d = download(lab.source.port(), args.verify).expect("direct download");
        let u = upload(lab.sink.port(), args.size).expect("direct upload");
        assert_eq!(
            (d.bytes, u.bytes),
            (args.size, args.size),
            "direct transfers are whole"
        );
        progress(&format!(
            "throughput {}/{} {:<12} down {:>8.1} MiB/s  up {:>8.1} MiB/s",
            round + 1,
            args.reps,
            "direct",
            d.mib_per_sec(),
            u.mib_per_sec()
        ));
        down.direct.push(d.mib_per_sec());
        up.direct.push(u.mib_per_sec());
        // The same transfers through a plain relay: the CPU rows' "direct" column.
        let (d_cpu, u_cpu) = relayed_transfers(lab, args.size);
        down_cpu.direct.push(d_cpu.total() / gib);
        up_cpu.direct.push(u_cpu.total() / gib);
        down_user.direct.push(d_cpu.user / gib);
        up_user.direct.push(u_cpu.user / gib);
        progress(&format!(
            "throughput {}/{} {:<12} down {:.2} CPU s/GiB  up {:.2} CPU s/GiB",
            round + 1,
            args.reps,
            "plain relay",
            d_cpu.total() / gib,
            u_cpu.total() / gib
        ));
        for i in order(round) {
            let c = &contenders[i];
            let mut tunnel = lab
                .tunnel(c, args)
                .forward_to(lab.source.port())
                .forward_to(lab.sink.port())
                .forward_to(lab.echo.port())
                .start();
            let ports = tunnel.local_ports();
            wait_until_carrying(&mut tunnel, ports[2]);

            let cpu0 = ClientCpu::read(&tunnel);
            let user0 = tunnel.user_cpu_seconds();
            let sys0 = machine_busy_seconds();
            let sshd0 = sshd_session_cpu(&lab.sshd);
            let d = download(ports[0], args.verify)
                .unwrap_or_else(|e| fail(&tunnel, &format!("download: {e}")));
            let cpu1 = ClientCpu::read(&tunnel);
            let user1 = tunnel.user_cpu_seconds();
            let sys1 = machine_busy_seconds();
            let sshd1 = sshd_session_cpu(&lab.sshd);
            if d.bytes != args.size || (args.verify && d.sha256 != expected_sha) {
                fail(
                    &tunnel,
                    &format!(
                        "download delivered {} of {} bytes or wrong data",
                        d.bytes, args.size
                    ),
                );
            }
            let u = upload(ports[1], args.size)
                .unwrap_or_else(|e| fail(&tunnel, &format!("upload: {e}")));
            let cpu2 = ClientCpu::read(&tunnel);
            let user2 = tunnel.user_cpu_seconds();
            let sys2 = machine_busy_seconds();
            let sshd2 = sshd_session_cpu(&lab.sshd);
            let expected_up = args.verify.then(|| Pattern::get().sha256(args.size));
            if u.bytes != args.size || u.sha256 != expected_up {
                fail(
                    &tunnel,
                    &format!(
                        "upload delivered {} of {} bytes or wrong data",
                        u.bytes, args.size
                    ),
                );
            }
            let peak = peak_rss_mib(&tunnel);
            stop_client(&mut tunnel, &lab.sshd);
            let (down_s, up_s) = (cpu1.seconds_since(&cpu0), cpu2.seconds_since(&cpu1));

            progress(&format!(
                "throughput {}/{} {:<12} down {:>8.1} MiB/s ({:.2} CPU s/GiB)  up {:>8.1} MiB/s ({:.2} CPU s/GiB)  peak RSS {:.1} MiB",
                round + 1,
                args.reps,
                c.label,
                d.mib_per_sec(),
                down_s / gib,
                u.mib_per_sec(),
                up_s / gib,
                peak
            ));
            down.samples[i].push(d.mib_per_sec());
            up.samples[i].push(u.mib_per_sec());
            down_cpu.samples[i].push(down_s / gib);
            up_cpu.samples[i].push(up_s / gib);
            down_user.samples[i].push((user1 - user0) / gib);
            up_user.samples[i].push((user2 - user1) / gib);
            down_sys.samples[i].push((sys1 - sys0) / gib);
            down_sshd.samples[i].push(cpu_used_since(&sshd1, &sshd0) / gib);
            up_sshd.samples[i].push(cpu_used_since(&sshd2, &sshd1) / gib);
            up_sys.samples[i].push((sys2 - sys1) / gib);
            rss.samples[i].push(peak);
        }
    }
    vec![
        down, up, down_cpu, up_cpu, down_user, up_user, down_sshd, up_sshd, down_sys, up_sys, rss,
    ]
}

/// A download and an upload of `size` bytes through [`relay::Relay`]; its CPU for each.
fn relayed_transfers(lab: &Lab, size: u64) -> (relay::RelayCpu, relay::RelayCpu) {
    let relay = relay::Relay::start(lab.source.port()).expect("relay for the download");
    let d = download(relay.port(), false).expect("download through the plain relay");
    let d_cpu = relay.finish().expect("the relay's download");
    let relay = relay::Relay::start(lab.sink.port()).expect("relay for the upload");
    let u = upload(relay.port(), size).expect("upload through the plain relay");
    let u_cpu = relay.finish().expect("the relay's upload");
    assert_eq!(
        (d.bytes, u.bytes),
        (size, size),
        "transfers through the plain relay are whole"
    );
    (d_cpu, u_cpu)
}

/// The client's peak resident memory so far, in MiB (NaN if unknown).
fn peak_rss_mib(tunnel: &Tunnel) -> f64 {
    tunnel
        .peak_rss_kib()
        .map_or(f64::NAN, |k| k as f64 / 1024.0)
}

fn bench_first_byte(lab: &Lab, contenders: &[Contender], args: &Args) -> Figure {
    let mut figure = Figure::new("start to first echoed byte ms", Better::Lower);
    for round in 0..args.ttfb_reps {
        for i in order(round) {
            let c = &contenders[i];
            let local = free_port();
            let mut tunnel = lab
                .tunnel(c, args)
                .forward(local, "127.0.0.1", lab.echo.port())
                .spawn();
            let ms = first_echoed_byte(&mut tunnel, local).as_secs_f64() * 1000.0;
            stop_client(&mut tunnel, &lab.sshd);
            progress(&format!(
                "first byte {}/{} {:<12} {ms:.1} ms",
                round + 1,
                args.ttfb_reps,
                c.label
            ));
            figure.samples[i].push(ms);
        }
    }
    figure
}

/// Waits until `tunnel`'s session is up and has carried data: one byte echoed through
/// `local`, a forward to the lab's echo server, within 30 s of the client's start (the test
/// fails with the client's log otherwise). forwarder listens before it connects and logs
/// in, ssh only after, so a run that starts timing or takes CPU snapshots when the ports
/// listen would count the key exchange, the user key's signature and sshd's session start
/// for one client and not for the other. Call it before any snapshot.
pub(crate) fn wait_until_carrying(tunnel: &mut Tunnel, local: u16) {
    first_echoed_byte(tunnel, local);
}

/// Time from the client's start to the first byte echoed through `local`, retrying the
/// connection until the client listens (OpenSSH listens only once logged in).
fn first_echoed_byte(tunnel: &mut Tunnel, local: u16) -> Duration {
    let deadline = tunnel.started() + Duration::from_secs(30);
    loop {
        if echo_one_byte(local).is_ok() {
            return tunnel.started().elapsed();
        }
        if tunnel.exited().is_some() || Instant::now() > deadline {
            fail(tunnel, "no byte came back through the tunnel");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn bench_pgbench(lab: &Lab, contenders: &[Contender], args: &Args) -> Vec<Figure> {
    let Some(pg) = &lab.pg else {
        return Vec::new();
    };
    // Persistent connections, then a new connection (a new channel) per transaction with as
    // many pgbench threads as clients, and the same with the clients on one and on two
    // threads: there several connections share each thread, and a reply that waits for a
    // delayed ACK stalls all of them (the case `-j` = clients hides).
    let c = args.pgbench_clients;
    // The last: the same beside query results downloaded through the same tunnel, one after
    // another (straight to the server for "direct").
    let runs: Vec<(String, bool, u32, bool)> = vec![
        (format!("pgbench select-only TPS (-c{c})"), false, c, false),
        (
            format!("pgbench -C select-only TPS (-c{c} -j{c})"),
            true,
            c,
            false,
        ),
        (
            format!("pgbench -C select-only TPS (-c{c} -j1)"),
            true,
            1,
            false,
        ),
        (
            format!("pgbench -C select-only TPS (-c{c} -j2)"),
            true,
            2.min(c),
            false,
        ),
        (
            format!("pgbench -C select-only TPS (-c{c} -j2) beside a download"),
            true,
            2.min(c),
            true,
        ),
    ];
    let mut figures: Vec<Figure> = runs
        .iter()
        .map(|(name, ..)| Figure::new(name.as_str(), Better::Higher))
        .collect();
    let show = |round: usize, label: &str, tps: &[f64]| {
        let list: Vec<String> = tps.iter().map(|t| format!("{t:.0}")).collect();
        progress(&format!(
            "pgbench {}/{} {label:<12} TPS (select, -C -j{c}, -C -j1, -C -j2, -C -j2 beside a download): {}",
            round + 1,
            args.reps,
            list.join(", ")
        ));
    };
    for round in 0..args.reps {
        let direct: Vec<f64> = runs
            .iter()
            .map(|&(_, each, threads, beside)| {
                pgbench_beside(None, pg.port(), args, each, threads, beside)
            })
            .collect();
        show(round, "direct", &direct);
        for (figure, tps) in figures.iter_mut().zip(&direct) {
            figure.direct.push(*tps);
        }
        for i in order(round) {
            let contender = &contenders[i];
            let mut tunnel = lab
                .tunnel(contender, args)
                .forward_to(pg.port())
                .forward_to(lab.echo.port())
                .start();
            let ports = tunnel.local_ports();
            wait_until_carrying(&mut tunnel, ports[1]);
            let tps: Vec<f64> = runs
                .iter()
                .map(|&(_, each, threads, beside)| {
                    pgbench_beside(Some(&tunnel), ports[0], args, each, threads, beside)
                })
                .collect();
            stop_client(&mut tunnel, &lab.sshd);
            show(round, &contender.label, &tps);
            for (figure, tps) in figures.iter_mut().zip(&tps) {
                figure.samples[i].push(*tps);
            }
        }
    }
    figures
}

/// The size of each query result downloaded beside pgbench.
const BESIDE_RESULT: u64 = 64 << 20;

/// [`pgbench_tps`], and when `beside` is set, with query results of [`BESIDE_RESULT`]
/// downloaded through the same `port` one after another from just before pgbench starts
/// until it ends, each checked to be whole.
fn pgbench_beside(
    tunnel: Option<&Tunnel>,
    port: u16,
    args: &Args,
    connect_each: bool,
    threads: u32,
    beside: bool,
) -> f64 {
    if !beside {
        return pgbench_tps(tunnel, port, args, connect_each, threads);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let downloads = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (sql, expected) = rtt::result_query(BESIDE_RESULT);
            let mut bytes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let got = rtt::query_result(port, &sql)?.bytes;
                if got != expected {
                    return Err(format!("a result had {got} bytes, not {expected}"));
                }
                bytes += got;
            }
            Ok::<u64, String>(bytes)
        })
    };
    // The first result under way before pgbench's first connection.
    std::thread::sleep(Duration::from_millis(300));
    let tps = pgbench_tps(tunnel, port, args, connect_each, threads);
    stop.store(true, Ordering::Relaxed);
    let problem = match downloads.join() {
        Ok(Ok(bytes)) => {
            let secs = started.elapsed().as_secs_f64();
            progress(&format!(
                "pgbench beside a download: {:.0} MiB/s of query results meanwhile",
                bytes as f64 / f64::from(1u32 << 20) / secs
            ));
            return tps;
        }
        Ok(Err(e)) => format!("the download beside pgbench: {e}"),
        Err(_) => "the download beside pgbench panicked".to_owned(),
    };
    match tunnel {
        Some(tunnel) => fail(tunnel, &problem),
        None => panic!("direct to PostgreSQL: {problem}"),
    }
}

/// One pgbench run against `port`: a tunnel's local port, or the server itself when
/// `tunnel` is `None`.
fn pgbench_tps(
    tunnel: Option<&Tunnel>,
    port: u16,
    args: &Args,
    connect_each: bool,
    threads: u32,
) -> f64 {
    let clients = args.pgbench_clients.to_string();
    let mut cmd = pgbench_command(port);
    cmd.args(["-n", "-S", "-T", &args.pgbench_seconds.to_string()])
        .args(["-c", &clients, "-j", &threads.to_string()]);
    if connect_each {
        cmd.arg("-C");
    }
    cmd.arg("appdb");
    let timeout = Duration::from_secs(u64::from(args.pgbench_seconds) + 120);
    let out = run_bounded(&mut cmd, timeout, "pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let problem = if !out.status.success() {
        format!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    } else if let Some(tps) = parse_tps(&stdout) {
        return tps;
    } else {
        format!("no tps in pgbench output:\n{stdout}")
    };
    match tunnel {
        Some(tunnel) => fail(tunnel, &problem),
        None => panic!("direct to PostgreSQL: {problem}"),
    }
}

/// The number on pgbench's `tps = N (...)` line.
fn parse_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The ssh options OpenSSH gets under autossh in the recovery runs: the keepalive forwarder
/// has by default (OpenSSH has none by default, so a frozen session would go unnoticed), and
/// ExitOnForwardFailure, without which an ssh that cannot listen would stay up uselessly
/// instead of exiting for autossh to restart it.
const AUTOSSH_SSH_OPTIONS: [&str; 3] = [
    "ServerAliveInterval=15",
    "ServerAliveCountMax=3",
    "ExitOnForwardFailure=yes",
];

/// `autossh -M 0`: OpenSSH's ssh kept up the usual way. Without a monitor port (`-M 0`)
/// autossh restarts ssh whenever ssh exits, which with a keepalive is when the session is
/// lost. `AUTOSSH_GATETIME=0` makes it retry even when the very first ssh fails early (it
/// would give up otherwise). `AUTOSSH_POLL` keeps its default of 600 s, which with `-M 0`
/// only sets the back-off: autossh restarts ssh at once five times in a row, then, while ssh
/// keeps dying within `max(POLL/10, 10 s)` (60 s) of its start, sleeps 2, 8, 18, 32, ...
/// (`POLL/100 * n*n/3`) seconds up to POLL before each further start.
#[derive(Debug)]
struct Autossh {
    /// A two-line script that runs `autossh -M 0 "$@"`: the lab's client builder runs one
    /// program with ssh's arguments.
    wrapper: PathBuf,
    version: String,
    _dir: TempDir,
}

impl Autossh {
    fn prepare() -> Autossh {
        let autossh = find_program("autossh", &[]).unwrap_or_else(|| {
            panic!(
                "`autossh` not found on PATH; the recovery figures run OpenSSH under it: \
                 install it with `apt-get install autossh` (bench/run does this) or use \
                 --skip-recovery"
            )
        });
        let out = run_ok(
            Command::new(&autossh).arg("-V"),
            Duration::from_secs(10),
            "autossh -V",
        );
        let version = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_owned();
        let dir = tempfile::Builder::new()
            .prefix("bench-autossh-")
            .tempdir()
            .expect("create a temp dir for the autossh wrapper");
        let wrapper = dir.path().join("autossh-m0");
        let quoted = autossh.display().to_string().replace('\'', r"'\''");
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec '{quoted}' -M 0 \"$@\"\n"),
        )
        .expect("write the autossh wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
            .expect("make the autossh wrapper executable");
        Autossh {
            wrapper,
            version,
            _dir: dir,
        }
    }

    /// Runs `b`'s ssh under autossh. autossh's own log (when it starts ssh, why ssh exited)
    /// goes to the same log as ssh's stderr.
    fn wrap(&self, mut b: TunnelBuilder) -> TunnelBuilder {
        for option in AUTOSSH_SSH_OPTIONS {
            b = b.option(option);
        }
        b.program(&self.wrapper)
            .env("AUTOSSH_GATETIME", "0")
            .env("AUTOSSH_PATH", openssh_binary())
            .env("AUTOSSH_LOGFILE", "/dev/stderr")
    }
}

/// The lines above the table that say how the recovery figures were taken.
fn recovery_notes(
    args: &Args,
    contenders: &[Contender],
    autossh: Option<&Autossh>,
    down_ms: Option<f64>,
) -> Vec<String> {
    let mut notes =
        vec!["recovery: each client keeps a tunnel to the echo server up on its own:".to_owned()];
    for c in contenders {
        let how = match (c.kind, autossh) {
            (ClientKind::OpenSsh, Some(a)) => format!(
                "ssh under `{}`: autossh -M 0 (no monitor port: it restarts ssh when ssh \
                 exits), AUTOSSH_GATETIME=0, AUTOSSH_POLL default (600 s: 5 immediate \
                 restarts, then sleeps of 2, 8, 18, ... s while ssh keeps failing within \
                 60 s), ssh -o {}",
                a.version,
                AUTOSSH_SSH_OPTIONS.join(" -o ")
            ),
            _ => "forwarder's own reconnect with its defaults (keepalive 15 s x 3, at once \
                  after a loss, then full-jitter back-off up to 1 s, 2 s, 4 s ..., or up to \
                  0.2 s, 0.4 s ... while the port refuses connections, capped at 30 s)"
                .to_owned(),
        };
        if !notes.iter().any(|n| n.ends_with(&how)) {
            notes.push(format!("  {}: {how}", c.kind));
        }
    }
    notes.push(
        "  probe: right after the kill or freeze a connection to the tunnel sends one byte; \
         another is made whenever the last one failed (10 ms later) or after 1 s without an \
         answer, earlier ones kept open; the time ends when a byte first comes back"
            .to_owned(),
    );
    if args.restart_reps > 0 {
        notes.push(format!(
            "  sshd restart: listener and sessions killed, started again on the same port with \
             the same host keys after {:.1} s; timed from listening again to the first byte; \
             {} runs per client (median)",
            args.restart_outage.as_secs_f64(),
            args.restart_reps
        ));
        if let Some(ms) = down_ms {
            notes.push(format!(
                "  sshd was down {ms:.0} ms (median) per restart, from the kill to listening again"
            ));
        }
    }
    if args.freeze_reps > 0 {
        notes.push(format!(
            "  frozen session: the session's sshd processes SIGSTOPped (the listener keeps \
             accepting); timed from the freeze to the first byte; {} run(s) per client, each \
             45-60 s by the keepalive",
            args.freeze_reps
        ));
    }
    notes
}

/// A client of `c`'s kind forwarding a free local port to the echo server, as the recovery
/// runs keep it: OpenSSH under autossh.
fn recovery_tunnel(
    lab: &Lab,
    c: &Contender,
    args: &Args,
    autossh: Option<&Autossh>,
) -> TunnelBuilder {
    let b = lab
        .tunnel(c, args)
        .forward(free_port(), "127.0.0.1", lab.echo.port());
    match (c.kind, autossh) {
        (ClientKind::OpenSsh, Some(a)) => a.wrap(b),
        _ => b,
    }
}

/// Starts the client and makes sure its session is up and carries data before the outage.
fn start_recovery_tunnel(b: &TunnelBuilder, sshd: &Sshd) -> Tunnel {
    let tunnel = b.start();
    if let Err(e) = echo_one_byte(tunnel.local_port()) {
        fail(&tunnel, &format!("no echo before the outage: {e}"));
    }
    wait_until(
        Duration::from_secs(10),
        "an sshd session process for the client",
        || (!sshd.session_pids().is_empty()).then_some(()),
        || format!("sshd log ends with:\n{}", file_tail(sshd.log_path(), 20)),
    );
    tunnel
}

/// When the tunnel served again.
struct Recovery {
    /// When sshd listened again (restart runs only).
    listening: Option<Instant>,
    served: Instant,
    /// Probe connections made.
    attempts: usize,
}

/// Probes `tunnel` (see [`Probe`]) until a byte comes back, the client exits or `deadline`
/// passes. With `sshd_port`, also notes when sshd listens on it again.
fn await_recovery(
    tunnel: &mut Tunnel,
    deadline: Instant,
    sshd_port: Option<u16>,
) -> Result<Recovery, String> {
    let mut probe = Probe::new(tunnel.local_port());
    let mut listening = None;
    loop {
        if listening.is_none()
            && let Some(port) = sshd_port
            && port_listening(port)
        {
            listening = Some(Instant::now());
        }
        if let Some(served) = probe.poll() {
            return Ok(Recovery {
                listening: sshd_port.map(|_| listening.unwrap_or(served)),
                served,
                attempts: probe.attempts,
            });
        }
        if let Some(status) = tunnel.exited() {
            return Err(format!(
                "the client exited ({status}) after {} probe connections",
                probe.attempts
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no byte came back before the deadline ({} probe connections)",
                probe.attempts
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Connections to a tunnel's local port, each sending one byte for the echo server behind
/// it. A new one is made when there is none waiting (10 ms after the last attempt: a client
/// that is not listening refuses at once) or when the newest has waited 1 s (a client may
/// hold a connection it cannot serve yet, or keep one it opened on a dead session); all are
/// kept until one gets its byte back. So a client that holds connections through an outage
/// is timed by the first one, and one that refuses them by the first try after it listens.
struct Probe {
    port: u16,
    open: Vec<TcpStream>,
    last_attempt: Option<Instant>,
    attempts: usize,
}

impl Probe {
    const RETRY: Duration = Duration::from_millis(10);
    const ANOTHER: Duration = Duration::from_secs(1);

    fn new(port: u16) -> Probe {
        Probe {
            port,
            open: Vec::new(),
            last_attempt: None,
            attempts: 0,
        }
    }

    /// One round; `Some(when)` once a byte came back.
    fn poll(&mut self) -> Option<Instant> {
        let due = self.last_attempt.is_none_or(|t| {
            let waited = t.elapsed();
            waited >= Self::ANOTHER || (self.open.is_empty() && waited >= Self::RETRY)
        });
        if due {
            self.attempt();
        }
        let mut served = None;
        self.open.retain_mut(|stream| {
            let mut byte = [0u8; 1];
            match stream.read(&mut byte) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                Ok(1) if byte == *b"x" => {
                    served.get_or_insert_with(Instant::now);
                    false
                }
                // Closed, reset, or not the byte sent: this one failed.
                _ => false,
            }
        });
        served
    }

    fn attempt(&mut self) {
        self.attempts += 1;
        self.last_attempt = Some(Instant::now());
        let addr = SocketAddr::from((ssh_interop_tests::net::LOCALHOST, self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return;
        };
        let sent = stream
            .set_nodelay(true)
            .and_then(|()| stream.write_all(b"x"))
            .and_then(|()| stream.set_nonblocking(true));
        if sent.is_ok() {
            self.open.push(stream);
        }
    }
}

/// sshd restart: the listener and every session are killed (the client's connection
/// drops), and sshd starts again on the same port with the same host keys after
/// `--restart-outage`. Timed from sshd listening again to the first byte echoed through the
/// tunnel. Returns the figure and how long sshd was down each time, in ms.
fn bench_restart(
    lab: &mut Lab,
    contenders: &[Contender],
    args: &Args,
    autossh: Option<&Autossh>,
) -> (Figure, Vec<f64>) {
    let mut figure = Figure::new("recovery after sshd restart ms", Better::Lower);
    let mut down = Vec::new();
    for round in 0..args.restart_reps {
        for i in order(round) {
            let c = &contenders[i];
            let builder = recovery_tunnel(lab, c, args, autossh);
            let mut tunnel = start_recovery_tunnel(&builder, &lab.sshd);
            let tries_before = connection_attempts(&tunnel);
            lab.sshd.stop();
            let killed = Instant::now();
            let deadline = killed + args.recovery_timeout;
            let port = lab.sshd.port();
            let sshd = &mut lab.sshd;
            let outcome = std::thread::scope(|s| {
                s.spawn(|| {
                    std::thread::sleep(args.restart_outage);
                    sshd.restart();
                });
                await_recovery(&mut tunnel, deadline, Some(port))
            });
            let line = match outcome {
                Ok(r) => {
                    let listening = r.listening.unwrap_or(r.served);
                    let ms = r.served.saturating_duration_since(listening).as_secs_f64() * 1000.0;
                    let down_ms = listening.duration_since(killed).as_secs_f64() * 1000.0;
                    figure.samples[i].push(ms);
                    down.push(down_ms);
                    format!(
                        "{ms:.1} ms after sshd listened again (down {down_ms:.0} ms; {} \
                         tries to log in, {} probe connections)",
                        connection_attempts(&tunnel).saturating_sub(tries_before),
                        r.attempts
                    )
                }
                Err(e) => {
                    figure.failed[i] += 1;
                    figure.samples[i].push(FAILED);
                    failed_run(&tunnel, &e)
                }
            };
            stop_client(&mut tunnel, &lab.sshd);
            progress(&format!(
                "recovery after sshd restart {}/{} {:<12} {line}",
                round + 1,
                args.restart_reps,
                c.label
            ));
        }
    }
    (figure, down)
}

/// Frozen session: the sshd processes serving the client's session are stopped (SIGSTOP),
/// so its connection stays open but nothing answers, as with a hung server or a dead network
/// path, while the listener keeps accepting. Only the client's keepalive can tell, so this
/// takes 45-60 s with 15 s x 3. Timed from the freeze to the first byte echoed through the
/// tunnel.
fn bench_freeze(
    lab: &Lab,
    contenders: &[Contender],
    args: &Args,
    autossh: Option<&Autossh>,
) -> Figure {
    let mut figure = Figure::new("recovery after frozen session s", Better::Lower);
    for round in 0..args.freeze_reps {
        for i in order(round) {
            let c = &contenders[i];
            let builder = recovery_tunnel(lab, c, args, autossh);
            let mut tunnel = start_recovery_tunnel(&builder, &lab.sshd);
            progress(&format!(
                "recovery after frozen session {}/{} {:<12} freezing its session (45-60 s)",
                round + 1,
                args.freeze_reps,
                c.label
            ));
            let tries_before = connection_attempts(&tunnel);
            let frozen = FrozenSessions::freeze(&lab.sshd);
            let start = Instant::now();
            let outcome = await_recovery(&mut tunnel, start + args.recovery_timeout, None);
            let line = match outcome {
                Ok(r) => {
                    let s = r.served.duration_since(start).as_secs_f64();
                    figure.samples[i].push(s);
                    format!(
                        "{s:.2} s after the freeze ({} tries to log in, {} probe \
                         connections)",
                        connection_attempts(&tunnel).saturating_sub(tries_before),
                        r.attempts
                    )
                }
                Err(e) => {
                    figure.failed[i] += 1;
                    figure.samples[i].push(FAILED);
                    failed_run(&tunnel, &e)
                }
            };
            tunnel.terminate(Duration::from_secs(5));
            drop(frozen);
            wait_for_sessions_closed(&lab.sshd);
            progress(&format!(
                "recovery after frozen session {}/{} {:<12} {line}",
                round + 1,
                args.freeze_reps,
                c.label
            ));
        }
    }
    figure
}

/// sshd's session processes (every process below the listener), stopped with SIGSTOP and
/// killed when dropped, so no frozen process outlives its run, even on a panic.
struct FrozenSessions(Vec<u32>);

impl FrozenSessions {
    fn freeze(sshd: &Sshd) -> FrozenSessions {
        let mut pids = sshd.session_pids();
        let mut i = 0;
        while let Some(&pid) = pids.get(i) {
            for child in children_of(pid) {
                if !pids.contains(&child) {
                    pids.push(child);
                }
            }
            i += 1;
        }
        for &pid in &pids {
            signal(pid, Signal::STOP);
        }
        FrozenSessions(pids)
    }
}

impl Drop for FrozenSessions {
    fn drop(&mut self) {
        for &pid in &self.0 {
            signal(pid, Signal::KILL);
        }
    }
}

/// How many times the client has connected to sshd so far, from its log: the lines where
/// autossh starts ssh, or where forwarder says when its next attempt comes (one per lost
/// session or failed attempt) plus its first connection.
fn connection_attempts(tunnel: &Tunnel) -> usize {
    let log = tunnel.log();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    match tunnel.kind() {
        ClientKind::OpenSsh => count("starting ssh (count"),
        ClientKind::Forwarder => 1 + count("next attempt in"),
    }
}

/// The progress line of a recovery run that gave no figure, with the client's log tail.
fn failed_run(tunnel: &Tunnel, what: &str) -> String {
    format!(
        "FAILED: {what}\n  command: {}\n  its log ends with:\n{}",
        tunnel.command_line(),
        file_tail(tunnel.log_path(), 15)
    )
}

fn fail(tunnel: &Tunnel, what: &str) -> ! {
    panic!(
        "{} ({}): {what}\ncommand: {}\nits log ends with:\n{}",
        tunnel.kind(),
        tunnel.pid(),
        tunnel.command_line(),
        file_tail(tunnel.log_path(), 30)
    )
}

/// The kernel's TCP congestion control, which every socket of the run uses (sshd's, both
/// clients', the local ones): one that paces (bbr) arms a timer for each burst it sends,
/// which on a virtual machine costs every process here CPU per GiB.
fn congestion_control_line() -> String {
    let cc = std::fs::read_to_string(CONGESTION_CONTROL)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let paces = if cc == "bbr" {
        " (it paces its sends with timers, which costs the CPU rows of both clients)"
    } else {
        ""
    };
    format!("TCP congestion control {cc} on every socket of the run{paces}")
}

fn print_report(
    args: &Args,
    contenders: &[Contender],
    figures: &[Figure],
    notes: &[String],
    ciphers: &[String],
) {
    let ssh_version = {
        let mut cmd = std::process::Command::new(ssh_interop_tests::openssh_binary());
        cmd.arg("-V");
        let out = run_ok(&mut cmd, Duration::from_secs(10), "ssh -V");
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    println!();
    if args.throughput || args.ttfb || args.pgbench {
        println!(
            "transfers of {} MiB, {} reps (median), first byte {} reps, pgbench {} s x {} clients",
            args.size >> 20,
            args.reps,
            args.ttfb_reps,
            args.pgbench_seconds,
            args.pgbench_clients
        );
    }
    if args.throughput {
        println!(
            "\"direct\" in the client CPU rows: a plain relay (256 KiB reads, no encryption) \
             moving the same bytes, the kernel's share for any process in the middle"
        );
        println!(
            "every transfer compared byte for byte with the data sent{}; timed runs start once \
             the client's session has echoed a byte",
            if args.verify {
                ", and SHA-256 end to end"
            } else {
                ""
            }
        );
        println!(
            "client and sshd CPU: nanoseconds on a CPU per thread; user, machine and relay \
             CPU: 10 ms ticks"
        );
        if args.size < SHORT_TRANSFER {
            println!(
                "caveat: at {} MiB per transfer the user-mode, machine and relay CPU rows \
                 count too few 10 ms ticks for their ratios to mean much (the client and \
                 sshd CPU rows count nanoseconds)",
                args.size >> 20
            );
        }
    }
    println!(
        "cipher {}, kex {}, user key {}, {ssh_version}, {cpus} x {cpu_model}",
        match &args.cipher {
            Some(cipher) => cipher.clone(),
            None => {
                let chosen: Vec<String> = contenders
                    .iter()
                    .zip(ciphers)
                    .map(|(c, cipher)| format!("{} {cipher}", c.label))
                    .collect();
                format!("each client's default ({})", chosen.join(", "))
            }
        },
        args.kex.as_deref().unwrap_or("each client's default"),
        args.key
    );
    println!("{}", congestion_control_line());
    if args.serve {
        println!(
            "forwarder runs as `forwarder serve` with a fleet file of the forwards (one shared \
             session)"
        );
    }
    if args.pgbench {
        let auth = if args.pg_scram {
            "scram-sha-256"
        } else {
            "trust"
        };
        println!("pgbench logins over loopback TCP use {auth} authentication");
    }
    for note in notes {
        println!("{note}");
    }
    println!();
    let (a, b) = (&contenders[0].label, &contenders[1].label);
    let a_over_b = format!("{a}/{b}");
    println!(
        "{:<32} {:>14} {:>14} {:>16} {:>10}  note",
        "figure", a, b, a_over_b, "direct"
    );
    for f in figures {
        let (ma, mb) = (median(&f.samples[0]), median(&f.samples[1]));
        let r = ratio(ma, mb).map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
        let mut note = match f.better {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
        }
        .to_owned();
        for (i, c) in contenders.iter().enumerate() {
            let failed = f.failed[i];
            if failed > 0 {
                note.push_str(&format!(
                    "; {} failed {failed} of {} (counted as slower than the timeout)",
                    c.label,
                    f.samples[i].len()
                ));
            }
        }
        println!(
            "{:<32} {:>14} {:>14} {:>16} {:>10}  {note}",
            f.name,
            show(ma),
            show(mb),
            r,
            show(median(&f.direct))
        );
    }
}

/// `a / b`, when both are figures: none when either median is missing or a failure.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) if x.is_finite() && y.is_finite() && y != 0.0 => Some(x / y),
        _ => None,
    }
}

/// Transfers smaller than this are too short for CPU figures counted in 10 ms ticks.
const SHORT_TRANSFER: u64 = 512 << 20;

fn show(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) if v == FAILED => ">timeout".to_owned(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// CPU seconds the whole machine has spent busy (all CPUs: user, nice, system, irq, softirq),
/// from /proc/stat, in the kernel's clock ticks of 1/100 s.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = [0usize, 1, 2, 5, 6].iter().filter_map(|&i| v.get(i)).sum();
    busy as f64 / 100.0
}

/// Nanoseconds each thread of the live process `pid` has spent on a CPU, by thread id: the
/// first field of `/proc/<pid>/task/<tid>/schedstat`. Empty if the process is gone.
fn thread_cpu_ns(pid: u32) -> HashMap<u32, u64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let tid = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            Some((tid, stat.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// How far the nanosecond sum of [`ClientCpu`] may stray from the process's ticks before
/// the ticks are taken instead: each reading of the ticks truncates user and system time
/// to 10 ms apiece, so the difference of two readings is off by less than 20 ms.
const TICK_SLACK_SECONDS: f64 = 0.025;

/// A client's CPU time at one moment, read two ways: per thread in nanoseconds on a CPU
/// (see [`thread_cpu_ns`]), and for the whole process in `/proc/<pid>/stat`'s ticks of
/// 10 ms, which also keep the time of threads that have ended. A `--quick` transfer takes a
/// few hundredths of a second, a handful of ticks: the nanoseconds keep its figures
/// meaningful.
struct ClientCpu {
    threads: HashMap<u32, u64>,
    ticks: f64,
}

impl ClientCpu {
    /// Fails the run with the client's log if it is gone.
    fn read(tunnel: &Tunnel) -> ClientCpu {
        let threads = thread_cpu_ns(tunnel.pid());
        ClientCpu {
            threads,
            ticks: tunnel.cpu_seconds(),
        }
    }

    /// CPU seconds used since `earlier`: the threads' nanoseconds when they account for all
    /// of it, else the ticks. A thread that ended in between took its nanoseconds with it
    /// (the ticks keep them), and one that started and ended in between was never seen;
    /// the second shows as nanoseconds short of the ticks by more than the ticks' error.
    fn seconds_since(&self, earlier: &ClientCpu) -> f64 {
        let ticks = self.ticks - earlier.ticks;
        if earlier
            .threads
            .keys()
            .any(|tid| !self.threads.contains_key(tid))
        {
            return ticks;
        }
        let ns: u64 = self
            .threads
            .iter()
            .map(|(tid, &ns)| ns.saturating_sub(earlier.threads.get(tid).copied().unwrap_or(0)))
            .sum();
        let seconds = ns as f64 / 1e9;
        if (seconds - ticks).abs() <= TICK_SLACK_SECONDS {
            seconds
        } else {
            ticks
        }
    }
}

/// CPU seconds of each of sshd's session processes (every process below the listener), in
/// nanoseconds on a CPU, by process id.
fn sshd_session_cpu(sshd: &Sshd) -> HashMap<u32, f64> {
    let mut cpu = HashMap::new();
    let mut pending = sshd.session_pids();
    while let Some(pid) = pending.pop() {
        pending.extend(children_of(pid));
        let threads = thread_cpu_ns(pid);
        if !threads.is_empty() {
            cpu.insert(pid, threads.values().sum::<u64>() as f64 / 1e9);
        }
    }
    cpu
}

/// CPU seconds the processes of `after` used since `before`, both by process id. A process
/// gone by `after` counts for nothing instead of having all its time subtracted (at
/// `before` it was a previous client's session, still closing); one that started in
/// between counts whole.
fn cpu_used_since(after: &HashMap<u32, f64>, before: &HashMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, &now)| (now - before.get(pid).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

/// The longest a run waits for the previous client's sshd session to close.
const SESSION_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Stops the client (SIGTERM, then SIGKILL after 5 s) and waits for sshd's session processes
/// to go (see [`wait_for_sessions_closed`]).
pub(crate) fn stop_client(tunnel: &mut Tunnel, sshd: &Sshd) {
    tunnel.terminate(Duration::from_secs(5));
    wait_for_sessions_closed(sshd);
}

/// Waits, at most [`SESSION_CLOSE_WAIT`], until sshd has no session process left, so that
/// the next client neither shares the CPU with a session still closing nor has that
/// session's CPU in its figures. Says so and goes on if one stays.
fn wait_for_sessions_closed(sshd: &Sshd) {
    let deadline = Instant::now() + SESSION_CLOSE_WAIT;
    loop {
        let left = sshd.session_pids();
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            progress(&format!(
                "warning: sshd session processes {left:?} still there {SESSION_CLOSE_WAIT:?} \
                 after their client stopped; going on"
            ));
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1T").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn congestion_control_takes_an_algorithm_name_only() {
        let args =
            parse_args(["--congestion-control".to_owned(), "cubic".to_owned()]).expect("parses");
        assert_eq!(args.congestion_control.as_deref(), Some("cubic"));
        let args = parse_args(["--congestion-control=reno".to_owned()]).expect("parses");
        assert_eq!(args.congestion_control.as_deref(), Some("reno"));
        for bad in ["", "cubic\n", "../x", "bbr reno"] {
            let e = parse_args([format!("--congestion-control={bad}")]).unwrap_err();
            assert!(e.contains("not an algorithm name"), "{bad:?}: {e}");
        }
        assert!(parse_args(["--congestion-control".to_owned()]).is_err());
        assert!(congestion_control_line().starts_with("TCP congestion control "));
    }

    #[test]
    fn pgbench_tps_line_is_found() {
        let out = "number of failed transactions: 0 (0.000%)\n\
                   latency average = 0.345 ms\n\
                   initial connection time = 12.3 ms\n\
                   tps = 11570.123456 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(11570.123456));
        assert_eq!(parse_tps("nothing here"), None);
    }

    #[test]
    fn median_ignores_missing_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(median(&[f64::NAN, 1.0, 3.0]), Some(2.0));
    }

    #[test]
    fn median_counts_failed_runs_as_slower_than_any() {
        // Two runs out of three failed: the median is a failure, not the one success.
        assert_eq!(median(&[FAILED, 0.5, FAILED]), Some(FAILED));
        // One of three failed: it still pushes the median up to the slower success.
        assert_eq!(median(&[FAILED, 0.5, 0.9]), Some(0.9));
        assert_eq!(median(&[0.4, FAILED]), Some(FAILED));
        // The client that fails more is not the faster one.
        let (flaky, steady) = ([0.1, FAILED, FAILED, 0.1], [0.3, 0.3, 0.3, 0.3]);
        assert!(median(&flaky) > median(&steady));
        assert_eq!(show(median(&flaky)), ">timeout");
        assert_eq!(ratio(median(&flaky), median(&steady)), None);
        assert_eq!(ratio(median(&steady), median(&flaky)), None);
        assert_eq!(ratio(Some(0.3), Some(0.6)), Some(0.5));
        assert_eq!(ratio(Some(0.3), None), None);
    }

    #[test]
    fn every_schedule_lets_each_client_go_first_equally_often() {
        for given in 0..12u32 {
            let n = given.to_string();
            for flag in ["--reps", "--ttfb-reps", "--restart-reps", "--freeze-reps"] {
                let args = parse_args([flag.to_owned(), n.clone()]).expect("parses");
                let runs = match flag {
                    "--reps" => args.reps,
                    "--ttfb-reps" => args.ttfb_reps,
                    "--restart-reps" => args.restart_reps,
                    _ => args.freeze_reps,
                };
                assert!(runs >= given as usize && runs > 0, "{flag} {given}: {runs}");
                assert_balanced(runs, &format!("{flag} {given}"));
            }
        }
        for options in [&[][..], &["--quick"], &["--restart-reps", "9", "--quick"]] {
            let args = parse_args(options.iter().map(|s| (*s).to_owned())).expect("parses");
            for runs in [
                args.reps,
                args.ttfb_reps,
                args.restart_reps,
                args.freeze_reps,
            ] {
                assert_balanced(runs, &format!("{options:?}"));
            }
        }
    }

    /// Each client goes first in exactly half of `rounds` rounds, and runs once in each.
    fn assert_balanced(rounds: usize, what: &str) {
        let first = |client| (0..rounds).filter(|&r| order(r)[0] == client).count();
        assert_eq!(first(0), first(1), "{what}: {rounds} rounds");
        for r in 0..rounds {
            let mut both = order(r);
            both.sort_unstable();
            assert_eq!(both, [0, 1], "{what}: round {r}");
        }
    }

    #[test]
    fn a_session_still_closing_is_not_subtracted() {
        let before = HashMap::from([(10, 5.0), (20, 1.0)]);
        // 10 (the previous client's session) is gone, 20 used 0.5 s, 30 is new.
        let after = HashMap::from([(20, 1.5), (30, 0.25)]);
        assert_eq!(cpu_used_since(&after, &before), 0.75);
        assert_eq!(cpu_used_since(&after, &HashMap::new()), 1.75);
    }

    #[test]
    fn client_cpu_takes_nanoseconds_unless_a_thread_went_missing() {
        let at = |threads: &[(u32, u64)], ticks: f64| ClientCpu {
            threads: threads.iter().copied().collect(),
            ticks,
        };
        let start = at(&[(1, 1_000_000_000), (2, 0)], 1.0);
        // 37 ms of nanoseconds where the ticks saw 30 ms: the nanoseconds.
        let end = at(&[(1, 1_030_000_000), (2, 7_000_000)], 1.03);
        assert!((end.seconds_since(&start) - 0.037).abs() < 1e-9);
        // A new thread counts whole.
        let end = at(&[(1, 1_000_000_000), (2, 0), (3, 12_000_000)], 1.01);
        assert!((end.seconds_since(&start) - 0.012).abs() < 1e-9);
        // Thread 2 ended: its time is only in the ticks.
        let end = at(&[(1, 1_010_000_000)], 1.2);
        assert!((end.seconds_since(&start) - 0.2).abs() < 1e-9);
        // A thread came and went in between: the ticks hold far more than the nanoseconds.
        let end = at(&[(1, 1_010_000_000), (2, 0)], 1.5);
        assert!((end.seconds_since(&start) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn quick_and_clients_parse() {
        let args = parse_args(
            [
                "--quick",
                "--client-a",
                "openssh",
                "--cipher=chacha20-poly1305@openssh.com",
            ]
            .map(String::from),
        )
        .expect("parses");
        assert_eq!(args.clients, [ClientKind::OpenSsh, ClientKind::OpenSsh]);
        assert_eq!(args.size, 64 << 20);
        assert_eq!(
            args.cipher.as_deref(),
            Some("chacha20-poly1305@openssh.com")
        );
        let args = parse_args(["--cipher", "default"].map(String::from)).expect("parses");
        assert_eq!(args.cipher, None, "each client's own choice");
        assert!(parse_args(["--bogus".to_owned()]).is_err());
    }

    #[test]
    fn negotiated_cipher_is_read_from_either_log() {
        let openssh = "debug1: kex: algorithm: sntrup761x25519-sha512@openssh.com\n\
            debug1: kex: server->client cipher: chacha20-poly1305@openssh.com MAC: <implicit> \
            compression: none\n";
        assert_eq!(
            negotiated_cipher(openssh).as_deref(),
            Some("chacha20-poly1305@openssh.com")
        );
        let forwarder = "DEBUG key exchange complete server=SSH-2.0-OpenSSH_9.2p1 \
            algorithms=kex curve25519-sha256, host key ssh-ed25519, cipher \
            aes128-ctr/aes256-ctr, MAC hmac-sha2-256-etm@openssh.com, strict kex guess=None\n";
        assert_eq!(negotiated_cipher(forwarder).as_deref(), Some("aes256-ctr"));
        assert_eq!(
            negotiated_cipher("debug1: Authentications that can continue\n"),
            None
        );
    }

    #[test]
    fn recovery_options_parse() {
        let args = parse_args(
            ["--recovery", "--restart-outage=0.5", "--freeze-reps", "2"].map(String::from),
        )
        .expect("parses");
        assert!(!args.throughput && !args.ttfb && !args.pgbench);
        assert_eq!(args.restart_outage, Duration::from_millis(500));
        assert_eq!((args.restart_reps, args.freeze_reps), (6, 2));
        let quick = parse_args(["--quick".to_owned()]).expect("parses");
        assert_eq!((quick.restart_reps, quick.freeze_reps), (4, 0));
        let none = parse_args(["--skip-recovery".to_owned()]).expect("parses");
        assert_eq!((none.restart_reps, none.freeze_reps), (0, 0));
        assert!(parse_args(["--restart-outage=-1".to_owned()]).is_err());
    }
}
