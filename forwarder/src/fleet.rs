//! `forwarder serve`: every tunnel of a file in one process, sessions shared between tunnels
//! whose sessions are the same thing, reloaded without dropping connections, probed, and shown
//! through the admin endpoint.
//!
//! ```text
//!  tunnels.toml ──config::load──> FleetConfig ──Fleet::apply──┐   (again on SIGHUP, or when the
//!                                                             │    file's content changed and
//!                                                             │    two polls 2 s apart agree)
//!        ┌────────────────────────────────────────────────────┘
//!        ▼
//!  Fleet ─┬─ slots: one SessionSlot per distinct session ── Supervisor ──watch──> watcher task
//!         │      (key = the session's arguments; users = tunnels on it)    (state, metrics)
//!         ├─ tunnels: RunningTunnel per [[tunnel]] ── tunnel::Tunnel (listeners, connections)
//!         │      └─ probe task: a channel to the remote every probe_interval ── probe::run
//!         └─ FleetState (behind FleetView) ──> admin::serve: /metrics /healthz /readyz /tunnels
//!
//!  removed or changed tunnel: listeners closed at once ── drain task: open connections get
//!  drain_timeout, then are reset ──Released──> the slot loses a user; its last user gone,
//!  the session ends with a DISCONNECT.
//! ```
//!
//! Each session lives on the home thread ([`homes`]) that had the fewest sessions when it
//! started, with its supervisor and driver, its tunnels' listeners and their connections; the
//! rest above runs on the main thread.
//!
//! The command line (`forwarder -L`) is a fleet of one on the same parts: `config::TunnelConfig`,
//! `connect::SshConnector`, `supervisor::Supervisor`, `tunnel::Tunnel`.

pub mod config;
pub mod homes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, error, info, warn};

use crate::cli::Environment;
use crate::connect::{self, SshConnector};
use crate::driver::SessionObserver;
use crate::metrics::{Metrics, SessionMetrics, TunnelMetrics};
use crate::probe::{self, ProbeKind};
use crate::remote::{ForwardContext, ForwardState, Router};
use crate::shard::Shard;
use crate::status::{FleetView, ProbeResult, TunnelState, TunnelStatus};
use crate::supervisor::{
    BastionGate, SessionState, Supervisor, SupervisorConfig, SupervisorHandle,
};
use crate::tunnel::{TrafficObserver, Tunnel};
use config::{FleetConfig, TunnelEntry, TunnelKind};

/// How often the file's content is compared with what was loaded (a mounted ConfigMap is
/// updated by swapping a symlink, which no inode watch sees).
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long a stopping session may take to send its DISCONNECT.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// How `forwarder serve` logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default: what log collectors read).
    Json,
    /// Text for a person at a terminal.
    Text,
}

/// `forwarder serve`'s command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// The fleet file.
    pub config: PathBuf,
    /// Only the tunnels this replica serves.
    pub shard: Option<Shard>,
    /// Log format.
    pub log_format: LogFormat,
    /// `-v` (debug) or `-q` (warnings and errors only).
    pub verbosity: i8,
    /// `--check`: load and check the file, print what it holds, and exit.
    pub check_only: bool,
    /// `--threads`: how many threads carry the sessions ([`homes`]).
    pub threads: usize,
}

/// The usage text of `forwarder serve`.
pub fn usage() -> &'static str {
    "usage: forwarder serve --config FILE [--shard I/N] [--threads N] [--log-format json|text]
                       [-v|-q] [--check]

Runs every [[tunnel]] of FILE (TOML) in one process until SIGTERM or SIGINT, which stop
accepting, let open connections finish for [admin] drain_timeout, and disconnect (exit 0).
SIGHUP, or a change of the file's content, reloads it: unchanged tunnels are not touched,
removed ones drain, added ones start, changed ones restart, failed ones are retried; a file
that does not load leaves the running set as it was.

  --config FILE      the fleet file (see the README, \"forwarder serve\")
  --shard I/N        serve only the tunnels that rendezvous hashing of their names gives to
                     replica I of N (0 <= I < N)
  --threads N        threads that carry the sessions, each session on one for its whole
                     life (1 to 64, default 2); the file, signals, probes and the admin
                     endpoint have a thread of their own
  --log-format F     json (one object per line, the default) or text
  -v, -q             more (debug) or less (warnings only) logging
  --check            check the file and list its tunnels, then exit (0 if it loads, 2 if not)
"
}

/// Parses `forwarder serve`'s arguments (after `serve`).
pub fn parse_args(args: &[String]) -> Result<ServeOptions, String> {
    let mut config = None;
    let mut shard = None;
    let mut log_format = LogFormat::Json;
    let mut verbosity = 0i8;
    let mut check_only = false;
    let mut threads = homes::HOMES;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "--config" | "-c" => config = Some(PathBuf::from(value("--config")?)),
            "--shard" => {
                let v = value("--shard")?;
                shard = Some(v.parse::<Shard>().map_err(|e| e.to_string())?);
            }
            "--log-format" => {
                log_format = match value("--log-format")?.as_str() {
                    "json" => LogFormat::Json,
                    "text" => LogFormat::Text,
                    other => return Err(format!("--log-format {other:?}: expected json or text")),
                }
            }
            "--threads" => {
                let v = value("--threads")?;
                threads = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_THREADS).contains(n))
                    .ok_or_else(|| {
                        format!("--threads {v:?}: expected a number from 1 to {MAX_THREADS}")
                    })?;
            }
            "-v" => verbosity = verbosity.saturating_add(1),
            "-q" => verbosity = verbosity.saturating_sub(1),
            "--check" => check_only = true,
            other => return Err(format!("serve: unknown argument {other:?}; see --help")),
        }
    }
    Ok(ServeOptions {
        config: config.ok_or("serve: --config FILE is required")?,
        shard,
        log_format,
        verbosity,
        check_only,
        threads,
    })
}

/// The most threads `--threads` may ask for: more than a machine has cores only adds
/// switching between them.
const MAX_THREADS: usize = 64;

/// Exit status for a file that does not load or a bad command line.
pub const EXIT_USAGE: i32 = 2;

/// Runs `forwarder serve`; returns the exit status.
pub fn run(opts: ServeOptions) -> i32 {
    init_logging(&opts);
    raise_open_file_limit();
    let env = Environment::from_process();
    // The bytes loaded are what the file poll compares with, not a second read.
    let loaded = config::read(&opts.config)
        .and_then(|bytes| Ok((config::from_bytes(&opts.config, &bytes, &env)?, bytes)));
    let (loaded, text) = match loaded {
        Ok(l) => l,
        Err(e) => {
            fatal(opts.log_format, &e.to_string());
            return EXIT_USAGE;
        }
    };
    // `--check` looks at every tunnel; a replica, at those it serves.
    warn_probe_hazards(&loaded, if opts.check_only { None } else { opts.shard });
    if opts.check_only {
        for t in &loaded.tunnels {
            let mine = opts.shard.is_none_or(|s| s.serves(&t.name));
            let (from, to) = match &t.kind {
                TunnelKind::Local => (t.local.clone(), t.remote.to_string()),
                TunnelKind::Remote(spec) => {
                    (format!("bastion {}", spec.label()), t.remote.to_string())
                }
            };
            println!(
                "{}\t{from} -> {to} via {}{}",
                t.name,
                t.config.session.label(),
                if mine { "" } else { "\t(another shard)" }
            );
        }
        return 0;
    }
    // The main thread runs the fleet itself; the sessions live on their homes.
    let started = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| Ok((runtime, homes::Homes::start(opts.threads)?)));
    let (runtime, homes) = match started {
        Ok(r) => r,
        Err(e) => {
            fatal(
                opts.log_format,
                &format!("cannot start the async runtime: {e}"),
            );
            return crate::app::EXIT_FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let code = serve(opts, env, loaded, text, homes.handles()).await;
        crate::kex_memory::settle().await;
        code
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    homes.stop();
    code
}

/// A fatal error before the fleet runs: the log event and, for a person reading text logs, the
/// usual `forwarder: ...` line. With JSON logs only the event is written, so that every line
/// of the log is one JSON object.
fn fatal(format: LogFormat, msg: &str) {
    error!("{msg}");
    if format == LogFormat::Text {
        eprintln!("forwarder: {msg}");
    }
}

/// One warning for each tunnel whose probe would get its bastion blocked by MySQL or MariaDB
/// ([`config::probe_hazard`]); with `shard`, only for the tunnels it serves.
fn warn_probe_hazards(fleet: &FleetConfig, shard: Option<Shard>) {
    for t in &fleet.tunnels {
        if shard.is_none_or(|s| s.serves(&t.name))
            && let Some(w) = config::probe_hazard(t)
        {
            warn!(tunnel = %t.name, "{w}");
        }
    }
    for w in config::unused_bastion_limits(fleet) {
        warn!("{w}");
    }
}

/// Raises the soft limit on open files to the hard one, as daemons that hold many sockets do:
/// each tunnel has a listener, each session a socket and each connection two, and the usual
/// soft limit of 1,024 would stop a fleet of a few hundred unshared tunnels.
fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let before = limit.current;
            limit.current = limit.maximum;
            match setrlimit(Resource::Nofile, limit) {
                Ok(()) => debug!(
                    "open-file limit raised from {before:?} to {:?}",
                    limit.maximum
                ),
                Err(e) => warn!("could not raise the open-file limit: {e}"),
            }
        }
    }
}

fn init_logging(opts: &ServeOptions) {
    use tracing::level_filters::LevelFilter;
    let level = match opts.verbosity {
        i8::MIN..=-1 => LevelFilter::WARN,
        0 => LevelFilter::INFO,
        _ => LevelFilter::DEBUG,
    };
    // Warnings and banners become log events too: no bare line among the log's.
    crate::notice::use_log_events();
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false);
    let _ = match opts.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// What the admin endpoint reads.
#[derive(Debug, Default)]
pub struct FleetState {
    loaded: AtomicBool,
    /// Set when SIGTERM or SIGINT starts the drain: no longer ready, whatever the tunnels.
    draining: AtomicBool,
    tunnels: Mutex<Vec<Arc<TunnelShared>>>,
}

impl FleetState {
    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Arc<TunnelShared>>> {
        self.tunnels.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl FleetView for FleetState {
    fn ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire)
            && self.loaded.load(Ordering::Acquire)
            && self.list().iter().all(|t| lock(&t.bind_error).is_none())
    }

    fn not_ready_reason(&self) -> String {
        if self.draining.load(Ordering::Acquire) {
            return "stopping: draining the open connections".into();
        }
        if !self.loaded.load(Ordering::Acquire) {
            return "the tunnels file is not loaded yet".into();
        }
        let failed: Vec<String> = self
            .list()
            .iter()
            .filter(|t| lock(&t.bind_error).is_some())
            .map(|t| format!("{:?}", t.name))
            .collect();
        const SHOWN: usize = 10;
        let mut reason = format!(
            "not listening: tunnel {}",
            failed.get(..SHOWN).unwrap_or(&failed).join(", ")
        );
        if failed.is_empty() {
            // Bound again since the answer was made.
            return "not every listener is bound".into();
        }
        if failed.len() > SHOWN {
            reason.push_str(&format!(" and {} more", failed.len() - SHOWN));
        }
        reason
    }

    fn tunnels(&self) -> Vec<TunnelStatus> {
        self.list().iter().map(|t| t.status()).collect()
    }

    fn tunnel_states(&self) -> Vec<TunnelState> {
        self.list().iter().map(|t| t.state(false).0).collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A session's state as tunnels show it.
#[derive(Debug)]
struct SessionStatus {
    state: TunnelState,
    since: SystemTime,
    last_error: Option<String>,
    /// The tunnels on the session, whose `up` gauges follow its state.
    tunnels: Vec<Weak<TunnelShared>>,
}

impl SessionStatus {
    fn new() -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            state: TunnelState::Connecting,
            since: SystemTime::now(),
            last_error: None,
            tunnels: Vec::new(),
        }))
    }
}

/// Where a remote tunnel's forward stands: a remote tunnel is `up` only while the bastion
/// listens for it, not as soon as its session is up.
#[derive(Clone, Copy, Debug)]
struct ForwardPhase {
    /// The bastion granted the forward on the current session.
    listening: bool,
    /// It was granted on some session before (a new request is a reconnection).
    granted_before: bool,
    /// When `listening` last changed.
    since: SystemTime,
}

/// One tunnel's shared part: counters and what `/tunnels` shows.
#[derive(Debug)]
pub struct TunnelShared {
    name: String,
    local: Mutex<String>,
    remote: String,
    bastion: String,
    metrics: TunnelMetrics,
    session: Arc<Mutex<SessionStatus>>,
    bind_error: Mutex<Option<(String, SystemTime)>>,
    probe: Mutex<Option<ProbeResult>>,
    /// A remote tunnel's forward; `None` for a local tunnel.
    forward: Option<Mutex<ForwardPhase>>,
}

impl TunnelShared {
    /// The state `/tunnels` shows, since when, and (with `error`) the last error.
    fn state(&self, error: bool) -> (TunnelState, SystemTime, Option<String>) {
        let cloned = |e: &Option<String>| if error { e.clone() } else { None };
        match &*lock(&self.bind_error) {
            Some((e, at)) => (TunnelState::Failed, *at, error.then(|| e.clone())),
            None => {
                let s = lock(&self.session);
                let forward = self.forward.as_ref().map(|f| *lock(f));
                match forward {
                    // The session is up but the bastion does not listen (yet): asked for, or
                    // asked again on a new session.
                    Some(f) if s.state == TunnelState::Up && !f.listening => (
                        if f.granted_before {
                            TunnelState::Reconnecting
                        } else {
                            TunnelState::Connecting
                        },
                        f.since.max(s.since),
                        cloned(&s.last_error),
                    ),
                    _ => (s.state, s.since, cloned(&s.last_error)),
                }
            }
        }
    }

    fn status(&self) -> TunnelStatus {
        let m = &self.metrics;
        let (state, since, last_error) = self.state(true);
        TunnelStatus {
            name: self.name.clone(),
            local: lock(&self.local).clone(),
            remote: self.remote.clone(),
            bastion: self.bastion.clone(),
            state,
            since,
            last_error,
            active_connections: m.active_connections.get().max(0) as u64,
            connections_total: m.connections_total.get(),
            bytes_to_remote: m.bytes_to_remote.get(),
            bytes_from_remote: m.bytes_from_remote.get(),
            probe: lock(&self.probe).clone(),
        }
    }

    /// Sets the `up` gauge from the state `/tunnels` shows: 1 only for `up`. Called whenever
    /// the session, a listener's bind or a remote forward changes.
    fn refresh_up(&self) {
        let up = self.state(false).0 == TunnelState::Up;
        self.metrics.up.set(i64::from(up));
    }
}

/// Counts a tunnel's traffic into its metrics (which `/tunnels` reads too).
#[derive(Debug)]
struct Traffic(TunnelMetrics);

impl TrafficObserver for Traffic {
    fn opened(&self) {
        self.0.connections_total.inc();
        self.0.active_connections.inc();
    }
    fn closed(&self) {
        self.0.active_connections.dec();
    }
    fn sent_to_remote(&self, bytes: u64) {
        self.0.bytes_to_remote.inc_by(bytes);
    }
    fn received_from_remote(&self, bytes: u64) {
        self.0.bytes_from_remote.inc_by(bytes);
    }
}

/// One SSH session and the tunnels on it.
#[derive(Debug)]
struct SessionSlot {
    key: String,
    label: String,
    supervisor: Supervisor,
    handle: SupervisorHandle,
    /// The thread its tasks, its tunnels' listeners and their connections run on (an index
    /// into [`Fleet::homes`]).
    home: usize,
    status: Arc<Mutex<SessionStatus>>,
    /// Tunnels on the session, draining ones included: the last one out ends it.
    users: usize,
    /// Tunnels on the session that are not stopping.
    running: usize,
    watcher: JoinHandle<()>,
    /// Hands forwarded channels to the remote tunnels on the session; started with the
    /// first one.
    router: Option<(Router, JoinHandle<()>)>,
}

/// One running `[[tunnel]]`.
#[derive(Debug)]
struct RunningTunnel {
    entry: TunnelEntry,
    slot: u64,
    tunnel: Tunnel,
    shared: Arc<TunnelShared>,
    probe_task: Option<JoinHandle<()>>,
    /// A remote tunnel's forward: its stop switch and task.
    remote: Option<RemoteRun>,
}

/// A remote tunnel's forward: its stop switch, the signal that it let go of the server's
/// listener, and its task.
#[derive(Debug)]
struct RemoteRun {
    stop: watch::Sender<bool>,
    released: Arc<tokio::sync::Notify>,
    task: JoinHandle<Result<(), String>>,
}

/// How long a stopping remote forward may take to let go of the server's listener before a
/// replacement is started anyway (it waits at most `remote::ANSWER_AFTER_STOP` for an answer
/// still due).
const REMOTE_RELEASE_WAIT: Duration = Duration::from_secs(6);

/// What the fleet's tasks tell its main loop.
#[derive(Debug)]
enum Event {
    /// A stopped tunnel's connections are gone: its session loses a user.
    Released { slot: u64 },
}

/// The running fleet.
#[derive(Debug)]
struct Fleet {
    env: Environment,
    shard: Option<Shard>,
    admin: config::AdminConfig,
    metrics: Arc<Metrics>,
    state: Arc<FleetState>,
    slots: HashMap<u64, SessionSlot>,
    /// Live slots by session key, for sharing.
    by_key: HashMap<String, u64>,
    next_slot: u64,
    /// Numbers for sessions that are not shared, per `user@host:port`.
    unshared: HashMap<String, u32>,
    gates: HashMap<(String, u16), Arc<BastionGate>>,
    tunnels: Vec<RunningTunnel>,
    events: mpsc::UnboundedSender<Event>,
    drains: Vec<JoinHandle<()>>,
    /// The runtimes sessions live on (see [`homes`]).
    homes: Vec<tokio::runtime::Handle>,
}

async fn serve(
    opts: ServeOptions,
    env: Environment,
    first: FleetConfig,
    text: Vec<u8>,
    homes: Vec<tokio::runtime::Handle>,
) -> i32 {
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(FleetState::default());
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut fleet = Fleet {
        env,
        shard: opts.shard,
        admin: first.admin.clone(),
        metrics: metrics.clone(),
        state: state.clone(),
        slots: HashMap::new(),
        by_key: HashMap::new(),
        next_slot: 1,
        unshared: HashMap::new(),
        gates: HashMap::new(),
        tunnels: Vec::new(),
        events: events_tx,
        drains: Vec::new(),
        homes,
    };

    // Handlers first: a SIGHUP or SIGTERM while the first configuration is applied (agents
    // asked for keys, listeners bound) waits for the loop below instead of killing the
    // process with the signal's default action.
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            fatal(
                opts.log_format,
                &format!("cannot install signal handlers: {e}"),
            );
            return crate::app::EXIT_FAILURE;
        }
    };

    // The admin endpoint keeps the address it started with; a reload does not move it.
    let (admin_stop_tx, admin_stop) = watch::channel(false);
    let mut admin_task = None;
    if let Some(addr) = first.admin.listen {
        match connect::listen(addr) {
            Ok(listener) => {
                info!("admin endpoint on http://{addr}/ (/metrics /healthz /readyz /tunnels)");
                let view: Arc<dyn FleetView> = state.clone();
                let mut stop = admin_stop.clone();
                admin_task = Some(tokio::spawn(crate::admin::serve(
                    listener,
                    view,
                    metrics.clone(),
                    async move {
                        let _ = stop.wait_for(|s| *s).await;
                    },
                )));
            }
            Err(e) => {
                fatal(
                    opts.log_format,
                    &format!("cannot listen for the admin endpoint on {addr}: {e}"),
                );
                return crate::app::EXIT_FAILURE;
            }
        }
    }

    let mut file = FilePoll::new(text);
    let mut reader = FileReader::new(&opts.config, FILE_READ_TIMEOUT);
    fleet.apply(first).await;
    metrics.config_reloaded(true);
    state.loaded.store(true, Ordering::Release);

    let mut poll = tokio::time::interval(FILE_POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            s = signals.next() => match s {
                Signal::Reload => {
                    info!("SIGHUP: reloading {}", opts.config.display());
                    let content = reader.read().await;
                    file.loaded(content.as_ref().ok().cloned());
                    fleet.reload(&opts.config, content).await;
                }
                Signal::Stop(name) => {
                    // Not ready from now on: a load balancer stops sending new clients.
                    state.draining.store(true, Ordering::Release);
                    info!("{name}: draining for up to {} s", fleet.admin.drain_timeout.as_secs());
                    break;
                }
            },
            _ = poll.tick() => {
                if let Some(content) = file.observe(reader.read().await.ok()) {
                    info!("{} changed: reloading", opts.config.display());
                    fleet.reload(&opts.config, Ok(content)).await;
                }
                fleet.forget_idle_gates();
            }
            Some(ev) = events.recv() => fleet.handle(ev),
        }
    }
    fleet.shutdown().await;
    let _ = admin_stop_tx.send(true);
    if let Some(t) = admin_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    info!("stopped");
    0
}

/// How long the main loop waits for one read of the file.
const FILE_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the fleet file off the runtime's threads, at most [`config::MAX_FILE_SIZE`] bytes of
/// it, and waits at most [`FILE_READ_TIMEOUT`] for it: a file on a hung network file system,
/// or a path that became a FIFO, holds up neither the signals nor the tunnels. A read that
/// did not finish is waited for again by the next one instead of starting another.
#[derive(Debug)]
struct FileReader {
    path: PathBuf,
    timeout: Duration,
    unfinished: Option<JoinHandle<Result<Vec<u8>, config::FileError>>>,
}

impl FileReader {
    fn new(path: &std::path::Path, timeout: Duration) -> Self {
        Self {
            path: path.to_owned(),
            timeout,
            unfinished: None,
        }
    }

    async fn read(&mut self) -> Result<Vec<u8>, config::FileError> {
        let mut task = match self.unfinished.take() {
            Some(t) => t,
            None => {
                let path = self.path.clone();
                tokio::task::spawn_blocking(move || config::read(&path))
            }
        };
        let failed = |message: String| config::FileError {
            file: self.path.display().to_string(),
            line: None,
            message,
        };
        match tokio::time::timeout(self.timeout, &mut task).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => Err(failed(format!("cannot read the file: {e}"))),
            Err(_) => {
                self.unfinished = Some(task);
                Err(failed(format!(
                    "cannot read the file: no answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }
}

/// When the file poll reloads: the content differs from the last one loaded (or tried), and
/// two reads in a row, a poll interval apart, found the same bytes. A file being written in
/// place (an editor, `kubectl cp`, a configuration tool) is read while it is only a prefix of
/// itself, often valid TOML that lacks the last tunnels: loading it would stop them and reset
/// their connections until the next poll. SIGHUP loads at once.
#[derive(Debug)]
struct FilePoll {
    /// The content last loaded or tried (a file that does not load is not tried again until
    /// it changes).
    loaded: Option<Vec<u8>>,
    /// A changed content the last read found, waiting for the next read to agree.
    pending: Option<Vec<u8>>,
}

impl FilePoll {
    fn new(loaded: Vec<u8>) -> Self {
        Self {
            loaded: Some(loaded),
            pending: None,
        }
    }

    /// What a poll's read found (`None`: the file could not be read); the content to reload,
    /// if it is time to.
    fn observe(&mut self, now: Option<Vec<u8>>) -> Option<Vec<u8>> {
        let Some(now) = now else {
            self.pending = None;
            return None;
        };
        if self.loaded.as_ref() == Some(&now) {
            self.pending = None;
            return None;
        }
        if self.pending.as_ref() == Some(&now) {
            self.pending = None;
            self.loaded = Some(now.clone());
            return Some(now);
        }
        self.pending = Some(now);
        None
    }

    /// A SIGHUP loaded (or tried) `content`.
    fn loaded(&mut self, content: Option<Vec<u8>>) {
        self.loaded = content;
        self.pending = None;
    }
}

enum Signal {
    Reload,
    Stop(&'static str),
}

/// SIGHUP, SIGTERM and SIGINT, each listened to once for the life of the process: a signal
/// that arrives while a reload runs is kept for the next `next()` (a listener made anew each
/// time would miss it).
struct Signals {
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals = Self {
                hup: signal(SignalKind::hangup())?,
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            };
            // Even while a prompt waits: the prompt's watcher leaves them to the fleet.
            crate::prompt::handled_by_program(&[
                rustix::process::Signal::HUP,
                rustix::process::Signal::TERM,
                rustix::process::Signal::INT,
            ]);
            Ok(signals)
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.hup.recv() => Signal::Reload,
                _ = self.term.recv() => Signal::Stop("SIGTERM"),
                _ = self.int.recv() => Signal::Stop("SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop("interrupt")
        }
    }
}

impl Fleet {
    /// Applies the file's new `content`; a file that cannot be read or does not load changes
    /// nothing.
    async fn reload(
        &mut self,
        path: &std::path::Path,
        content: Result<Vec<u8>, config::FileError>,
    ) {
        match content.and_then(|bytes| config::from_bytes(path, &bytes, &self.env)) {
            Ok(new) => {
                warn_probe_hazards(&new, self.shard);
                if new.admin.listen != self.admin.listen {
                    warn!(
                        "[admin] listen changed: the endpoint stays where it is until the \
                         process restarts"
                    );
                }
                let handshakes = new.admin.handshakes_per_bastion;
                if handshakes != self.admin.handshakes_per_bastion {
                    info!("[admin] handshakes_per_bastion is now {handshakes}");
                }
                for ((host, port), gate) in &self.gates {
                    let limit = new.admin.handshakes_for(host, *port);
                    if limit != gate.limit() {
                        info!(
                            "handshakes to {} now run {limit} at a time",
                            bastion_label(host, *port)
                        );
                        gate.set_limit(limit);
                    }
                }
                self.admin = new.admin.clone();
                self.apply(new).await;
                self.metrics.config_reloaded(true);
                info!("reloaded: {} tunnels", self.tunnels.len());
            }
            Err(e) => {
                self.metrics.config_reloaded(false);
                error!("reload failed, the running tunnels stay as they were: {e}");
            }
        }
    }

    /// Brings the running set to `new`: unchanged tunnels are left alone (unless failed),
    /// removed and changed ones drain, added and changed ones start.
    async fn apply(&mut self, new: FleetConfig) {
        let wanted: Vec<TunnelEntry> = new
            .tunnels
            .into_iter()
            .filter(|t| self.shard.is_none_or(|s| s.serves(&t.name)))
            .collect();
        let mut keep: Vec<RunningTunnel> = Vec::new();
        let old = std::mem::take(&mut self.tunnels);
        let mut stopping = Vec::new();
        for rt in old {
            let same = wanted.iter().any(|w| w.same_as(&rt.entry));
            if same && !self.is_failed(&rt) {
                keep.push(rt);
            } else {
                stopping.push(rt);
            }
        }
        // Failed sessions are not shared with anything new: a retry gets a fresh one.
        let failed: Vec<u64> = stopping
            .iter()
            .filter(|rt| self.session_failed(rt))
            .map(|rt| rt.slot)
            .collect();
        for id in failed {
            if let Some(slot) = self.slots.get(&id) {
                let key = slot.key.clone();
                if self.by_key.get(&key) == Some(&id) {
                    self.by_key.remove(&key);
                }
            }
        }
        for rt in stopping {
            let still_wanted = wanted.iter().any(|w| w.name == rt.entry.name);
            let why = if still_wanted {
                "restarting"
            } else {
                "removed"
            };
            self.stop_tunnel(rt, why).await;
        }
        let mut next = Vec::new();
        for w in wanted {
            if let Some(i) = keep.iter().position(|k| k.entry.name == w.name) {
                next.push(keep.remove(i));
            } else {
                next.push(self.start_tunnel(w).await);
            }
        }
        self.tunnels = next;
        *self.state.list() = self.tunnels.iter().map(|t| t.shared.clone()).collect();
    }

    /// Whether the tunnel is `failed`: its session gave up, or a listener could not bind.
    fn is_failed(&self, rt: &RunningTunnel) -> bool {
        lock(&rt.shared.bind_error).is_some() || self.session_failed(rt)
    }

    /// Whether the tunnel's session gave up (a changed host key): only then does a retry
    /// need a new session.
    fn session_failed(&self, rt: &RunningTunnel) -> bool {
        self.slots
            .get(&rt.slot)
            .is_some_and(|s| matches!(s.handle.state(), SessionState::Failed(_)))
    }

    /// Closes a tunnel's listeners now; its connections drain in a task of their own.
    async fn stop_tunnel(&mut self, mut rt: RunningTunnel, why: &str) {
        info!(tunnel = %rt.entry.name, "{why}: closing the listeners, draining open connections");
        if let Some(p) = rt.probe_task.take() {
            p.abort();
        }
        rt.tunnel.close_listeners().await;
        // A remote tunnel's forward is cancelled now; its connections drain in its task.
        // Its cancel is queued before anything starts after this (a replacement on the same
        // port would be refused by a server still listening there).
        let remote = match rt.remote.take() {
            Some(r) => {
                let _ = r.stop.send(true);
                let _ = tokio::time::timeout(REMOTE_RELEASE_WAIT, r.released.notified()).await;
                Some(r.task)
            }
            None => None,
        };
        self.metrics.remove_tunnel(&rt.entry.name);
        if let Some(s) = self.slots.get_mut(&rt.slot) {
            s.running = s.running.saturating_sub(1);
        }
        lock(&rt.shared.session)
            .tunnels
            .retain(|t| t.strong_count() > 0 && !std::ptr::eq(t.as_ptr(), Arc::as_ptr(&rt.shared)));
        let grace = self.admin.drain_timeout;
        let events = self.events.clone();
        let slot = rt.slot;
        let name = rt.entry.name.clone();
        self.drains.retain(|d| !d.is_finished());
        self.drains.push(tokio::spawn(async move {
            if let Some(task) = remote {
                let _ = tokio::time::timeout(grace + DISCONNECT_GRACE, task).await;
            }
            let cut = rt.tunnel.drain(grace).await;
            if cut > 0 {
                warn!(tunnel = %name, "{cut} connections still open after the drain time were reset");
            }
            let _ = events.send(Event::Released { slot });
        }));
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Released { slot } => self.release(slot),
        }
    }

    /// A tunnel left slot `id`; the last one out ends the session.
    fn release(&mut self, id: u64) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.users = slot.users.saturating_sub(1);
        if slot.users > 0 {
            return;
        }
        if let Some(slot) = self.slots.remove(&id) {
            if self.by_key.get(&slot.key) == Some(&id) {
                self.by_key.remove(&slot.key);
            }
            info!(session = %slot.label, "no tunnel uses the session any more: disconnecting");
            // A session that replaced this one (a reload changed its options) has the same
            // label and writes the same series: they stay while it lives.
            if !self.slots.values().any(|s| s.label == slot.label) {
                self.metrics.remove_session(&slot.label);
            }
            slot.watcher.abort();
            if let Some((_, routing)) = &slot.router {
                routing.abort();
            }
            tokio::spawn(async move {
                slot.supervisor.shutdown(DISCONNECT_GRACE).await;
            });
        }
    }

    /// Starts one tunnel: its session (shared or new), its listeners, its probe.
    async fn start_tunnel(&mut self, entry: TunnelEntry) -> RunningTunnel {
        let span = tracing::info_span!("tunnel", tunnel = %entry.name);
        let slot_id = self.session_for(&entry).await;
        let remote_spec = match &entry.kind {
            TunnelKind::Local => None,
            TunnelKind::Remote(spec) => Some(spec.clone()),
        };
        let homes = &self.homes;
        let (handle, status, router, home) = match self.slots.get_mut(&slot_id) {
            Some(s) => {
                s.users += 1;
                s.running += 1;
                let home = homes[s.home].clone();
                let router = remote_spec.as_ref().map(|_| {
                    s.router
                        .get_or_insert_with(|| {
                            let _home = home.enter();
                            Router::spawn(s.handle.clone())
                        })
                        .0
                        .clone()
                });
                (s.handle.clone(), s.status.clone(), router, home)
            }
            None => unreachable_slot(),
        };
        let metrics = self.metrics.tunnel(&entry.name);
        let shared = Arc::new(TunnelShared {
            name: entry.name.clone(),
            local: Mutex::new(entry.local.clone()),
            remote: entry.remote.to_string(),
            bastion: entry.config.session.label(),
            metrics: metrics.clone(),
            session: status,
            bind_error: Mutex::new(None),
            probe: Mutex::new(None),
            forward: remote_spec.as_ref().map(|_| {
                Mutex::new(ForwardPhase {
                    listening: false,
                    granted_before: false,
                    since: SystemTime::now(),
                })
            }),
        });
        lock(&shared.session).tunnels.push(Arc::downgrade(&shared));
        shared.refresh_up();
        let mut tunnel =
            Tunnel::with_observer(Arc::new(Traffic(metrics.clone()))).at_home(home.clone());
        let cfg = &entry.config;
        let mut bound = Vec::new();
        // Bound on the session's home, whose runtime then watches the sockets.
        let binding = {
            let cfg = cfg.clone();
            home.spawn(async move { connect::bind_forwards(&cfg).await })
        };
        let forwards = binding.await.unwrap_or_else(|e| {
            // Only if the home is gone (the fleet is stopping) or the bind panicked.
            let why = format!("binding failed: {e}");
            let failed =
                |f: &crate::cli::ForwardSpec| (f.clone(), Err(std::io::Error::other(why.clone())));
            cfg.forwards.iter().map(failed).collect()
        });
        for (fwd, listeners) in forwards {
            match listeners {
                Ok(listeners) => {
                    for l in listeners {
                        bound.push(l.label());
                        let _g = span.enter();
                        tunnel.listen(l, handle.clone(), fwd.to.clone(), cfg.session_wait_timeout);
                    }
                }
                Err(e) => {
                    let msg = format!("cannot listen on {}: {e}", entry.local);
                    error!(tunnel = %entry.name, "{msg}");
                    *lock(&shared.bind_error) = Some((msg, SystemTime::now()));
                    shared.refresh_up();
                }
            }
        }
        if let Some(first) = bound.first() {
            *lock(&shared.local) = first.clone();
            info!(tunnel = %entry.name, "listening on {} for {} via {}", bound.join(" "), entry.remote, shared.bastion);
        }
        let probe_task = (entry.probe != ProbeKind::None).then(|| {
            tokio::spawn(
                probe_loop(
                    entry.clone(),
                    handle.clone(),
                    shared.clone(),
                    self.admin.probe_interval,
                )
                .instrument(span.clone()),
            )
        });
        let remote = remote_spec.zip(router).map(|(spec, router)| {
            let (stop_tx, stop) = watch::channel(false);
            let released = Arc::new(tokio::sync::Notify::new());
            let ctx = ForwardContext {
                sessions: handle.clone(),
                router,
                observer: Arc::new(Traffic(metrics.clone())),
                report: remote_report(shared.clone()),
                exit_on_failure: false,
                drain: self.admin.drain_timeout,
                connect_limit: crate::remote::connect_limit(&entry.config),
                permit_open: Arc::default(),
                released: released.clone(),
            };
            let task = home.spawn(crate::remote::run_forward(ctx, spec, stop).instrument(span));
            RemoteRun {
                stop: stop_tx,
                released,
                task,
            }
        });
        RunningTunnel {
            entry,
            slot: slot_id,
            tunnel,
            shared,
            probe_task,
            remote,
        }
    }

    /// The slot for `entry`'s session: an existing one with the same key when sharing, else
    /// a new supervisor.
    async fn session_for(&mut self, entry: &TunnelEntry) -> u64 {
        let base = entry.session_args.join("\u{0}");
        if entry.share_session
            && let Some(id) = self.by_key.get(&base)
            && self.slots.contains_key(id)
        {
            return *id;
        }
        let spec = entry.config.session.clone();
        let mut label = spec.label();
        // A shared session keeps `user@host:port` unless another session of the fleet that
        // tunnels still run on has that label (the same login with other options: another
        // key, known_hosts file or option): then, as an unshared one, it is told apart by a
        // number. A session that only drains (a reload changed the options of all its
        // tunnels) passes its label on to the one that replaces it.
        let taken = self
            .slots
            .values()
            .any(|s| s.label == label && s.running > 0);
        let key = if entry.share_session && !taken {
            base
        } else if entry.share_session {
            let n = self.unshared.entry(label.clone()).or_insert(0);
            *n += 1;
            label = format!("{label}#{n}");
            base
        } else {
            let n = self.unshared.entry(label.clone()).or_insert(0);
            *n += 1;
            label = format!("{label}#{n}");
            format!("{base}\u{0}#{n}")
        };
        let gate = self
            .gates
            .entry(gate_key(&spec))
            .or_insert_with_key(|(host, port)| {
                BastionGate::observed(
                    self.admin.handshakes_for(host, *port),
                    self.metrics.bastion(&bastion_label(host, *port)),
                )
            })
            .clone();
        let reconnect = spec.reconnect;
        let login = spec.login();
        let span = tracing::info_span!("session", session = %label);
        let connector = Arc::new(SshConnector::prepare(spec).instrument(span.clone()).await);
        let home = homes::pick(self.homes.len(), self.slots.values().map(|s| s.home));
        let supervisor = {
            let _g = span.enter();
            let _home = self.homes[home].enter();
            Supervisor::spawn(
                connector,
                SupervisorConfig {
                    label: label.clone(),
                    login,
                    reconnect,
                    first_attempt_fatal: false,
                },
                gate,
            )
        };
        let handle = supervisor.handle();
        let status = SessionStatus::new();
        let smetrics = self.metrics.session(&label);
        let watcher =
            tokio::spawn(watch_session(handle.clone(), status.clone(), smetrics).instrument(span));
        let id = self.next_slot;
        self.next_slot += 1;
        self.slots.insert(
            id,
            SessionSlot {
                key: key.clone(),
                label,
                supervisor,
                handle,
                home,
                status,
                users: 0,
                running: 0,
                watcher,
                router: None,
            },
        );
        self.by_key.insert(key, id);
        id
    }

    /// Forgets the gates of bastions that no session uses any more and where, as far as
    /// their ledgers know, sshd holds nothing against this address: their series leave
    /// `/metrics`. A bastion that comes back gets a new gate, the same as the old one would
    /// have been by then.
    fn forget_idle_gates(&mut self) {
        let metrics = &self.metrics;
        self.gates.retain(|(host, port), gate| {
            // Each supervisor of the bastion holds the gate too.
            let keep = Arc::strong_count(gate) > 1 || !gate.is_idle();
            if !keep {
                metrics.remove_bastion(&bastion_label(host, *port));
            }
            keep
        });
    }

    /// SIGTERM: stop accepting everywhere, let connections finish for up to the drain
    /// time, then disconnect every session.
    async fn shutdown(mut self) {
        for rt in std::mem::take(&mut self.tunnels) {
            self.stop_tunnel(rt, "stopping").await;
        }
        self.state.list().clear();
        let drains = std::mem::take(&mut self.drains);
        let limit = self.admin.drain_timeout + Duration::from_secs(6);
        let _ = tokio::time::timeout(limit, async {
            for d in drains {
                let _ = d.await;
            }
        })
        .await;
        let mut ends = Vec::new();
        for (_, slot) in self.slots.drain() {
            slot.watcher.abort();
            if let Some((_, routing)) = &slot.router {
                routing.abort();
            }
            ends.push(tokio::spawn(slot.supervisor.shutdown(DISCONNECT_GRACE)));
        }
        for e in ends {
            let _ = e.await;
        }
    }
}

/// A bastion as logs and metrics name it: `host:port`, `[address]:port` for IPv6.
fn bastion_label(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The host a session's handshakes are paced by (four at a time, and sshd's
/// PerSourcePenalties ledger): the first host connected to, the outermost jump host of a
/// chain, since that login is the one a failing chain repeats first.
fn gate_key(spec: &crate::config::SessionSpec) -> (String, u16) {
    let (host, port) = spec.first_host();
    (host.to_owned(), port)
}

/// How a remote tunnel shows its forward: the port the bastion listens on in `local`, a
/// refusal as the tunnel's failure.
fn remote_report(shared: Arc<TunnelShared>) -> crate::remote::Report {
    Arc::new(move |spec, state| {
        remote_state(&shared, spec, state);
        shared.refresh_up();
    })
}

fn remote_state(shared: &TunnelShared, spec: &crate::remote::RemoteSpec, state: &ForwardState) {
    let listening = matches!(state, ForwardState::Listening(_));
    if let Some(f) = &shared.forward {
        let mut f = lock(f);
        if f.listening != listening {
            f.listening = listening;
            f.since = SystemTime::now();
        }
        f.granted_before |= listening;
    }
    match state {
        ForwardState::Requesting => {}
        ForwardState::Listening(port) => {
            let listen = spec.listen_label(*port);
            if spec.server_picks_port() {
                info!(
                    "Allocated port {port} for remote forward to {}",
                    spec.target
                );
            }
            info!(
                "the bastion listens on {listen} for {} via {}",
                spec.target, shared.bastion
            );
            *lock(&shared.local) = listen;
            *lock(&shared.bind_error) = None;
        }
        ForwardState::Refused(why) => {
            error!("{why}");
            *lock(&shared.bind_error) = Some((why.clone(), SystemTime::now()));
        }
    }
}

#[cold]
fn unreachable_slot() -> ! {
    // session_for always returns the id of a slot it keeps in the map.
    std::process::abort()
}

/// Follows a session's state into its status and metrics.
async fn watch_session(
    handle: SupervisorHandle,
    status: Arc<Mutex<SessionStatus>>,
    metrics: SessionMetrics,
) {
    let mut rx = handle.subscribe();
    let mut been_up = false;
    loop {
        let state = rx.borrow_and_update().clone();
        let (new_state, error, up_handle) = match &state {
            SessionState::Up(h) => (TunnelState::Up, None, Some(h.clone())),
            SessionState::Connecting { .. } if !been_up => (TunnelState::Connecting, None, None),
            SessionState::Connecting { .. } => (TunnelState::Reconnecting, None, None),
            SessionState::Waiting { cause, .. } => (
                if been_up {
                    TunnelState::Reconnecting
                } else {
                    TunnelState::Connecting
                },
                Some(cause.clone()),
                None,
            ),
            SessionState::Failed(why) => (TunnelState::Failed, Some(why.clone()), None),
            SessionState::Stopped => return,
        };
        if let Some(h) = &up_handle {
            if been_up {
                metrics.reconnects.inc();
            }
            been_up = true;
            // The driver counts keepalive round trips and rekeys into the metrics as they
            // happen: nothing wakes an idle session to collect them.
            h.observe(Arc::new(metrics.clone()));
            let log = h.log();
            if let Some(t) = log.auth_time {
                metrics.handshake_seconds.observe(t.as_secs_f64());
            }
        }
        metrics.up.set(i64::from(new_state == TunnelState::Up));
        {
            let mut st = lock(&status);
            if st.state != new_state {
                st.state = new_state;
                st.since = SystemTime::now();
            }
            if error.is_some() {
                st.last_error = error;
            }
        }
        // Each tunnel reads the session's state under the lock, so not while it is held.
        let tunnels = lock(&status).tunnels.clone();
        for t in tunnels.iter().filter_map(Weak::upgrade) {
            t.refresh_up();
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl SessionObserver for SessionMetrics {
    fn keepalive_answered(&self, rtt: Duration) {
        self.keepalive_rtt_seconds.observe(rtt.as_secs_f64());
    }

    fn rekeyed(&self, count: u64) {
        self.rekeys.inc_by(count);
    }
}

/// Probes a tunnel's remote at start and every `interval`.
async fn probe_loop(
    entry: TunnelEntry,
    sessions: SupervisorHandle,
    shared: Arc<TunnelShared>,
    interval: Duration,
) {
    loop {
        let started = Instant::now();
        let result = probe_once(&entry, &sessions, interval).await;
        let ok = result.is_ok();
        let detail = match result {
            Ok(d) | Err(d) => d,
        };
        if ok {
            debug!("probe of {}: {detail}", entry.remote);
        } else {
            warn!("probe of {} failed: {detail}", entry.remote);
        }
        shared.metrics.probe_success.set(i64::from(ok));
        shared
            .metrics
            .probe_duration_seconds
            .set(started.elapsed().as_secs_f64());
        *lock(&shared.probe) = Some(ProbeResult {
            ok,
            at: SystemTime::now(),
            detail,
        });
        tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
    }
}

async fn probe_once(
    entry: &TunnelEntry,
    sessions: &SupervisorHandle,
    wait: Duration,
) -> Result<String, String> {
    let session = sessions
        .session(wait.min(config::PROBE_TIMEOUT * 3))
        .await
        .map_err(|e| format!("no session: {e}"))?;
    let target = &entry.remote;
    let stream = tokio::time::timeout(
        config::PROBE_TIMEOUT,
        crate::tunnel::open_channel(&session, target, &crate::local::Peer::OURSELVES),
    )
    .await
    .map_err(|_| {
        format!(
            "the channel to {target} did not open within {} s",
            config::PROBE_TIMEOUT.as_secs()
        )
    })?
    .map_err(|e| format!("channel to {target}: {e}"))?;
    let login = match &entry.probe_login {
        None => None,
        // Read fresh each time (a rotated password is picked up), and wiped after use.
        Some((user, file)) => Some(probe::MysqlLogin::read(user, file)?),
    };
    let spec = probe::ProbeSpec {
        kind: entry.probe,
        mysql_login: login,
        timeout: config::PROBE_TIMEOUT,
    };
    probe::run(&spec, stream).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_arguments_parse_and_threads_are_bounded() {
        let args = |a: &[&str]| parse_args(&a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        let o = args(&["--config", "f.toml"]).unwrap();
        assert_eq!(o.threads, homes::HOMES);
        assert_eq!(o.config, PathBuf::from("f.toml"));
        assert_eq!(args(&["-c", "f", "--threads", "8"]).unwrap().threads, 8);
        assert_eq!(args(&["-c", "f", "--threads=1"]).unwrap().threads, 1);
        for bad in ["0", "65", "x", "-1"] {
            let e = args(&["-c", "f", "--threads", bad]).unwrap_err();
            assert!(e.contains("1 to 64"), "{bad}: {e}");
        }
        assert!(
            args(&["--threads", "2"]).is_err(),
            "--config is still required"
        );
    }

    #[test]
    fn handshakes_are_paced_by_the_first_host_of_a_jump_chain() {
        let env = crate::cli::Environment {
            home: Some(PathBuf::from("/home/tester")),
            user: Some("tester".into()),
            cache_home: None,
        };
        let text = "[defaults]\nbastion = \"u@inner:2200\"\n\
            [[tunnel]]\nname = \"direct\"\nlocal = \"127.0.0.1:1\"\nremote = \"db:1\"\n\
            [[tunnel]]\nname = \"chain\"\nlocal = \"127.0.0.1:2\"\nremote = \"db:2\"\n\
            jump = [\"j@outer:2222\", \"middle\"]\n";
        let c = match config::parse("t.toml", text, &env, &|_| Ok(())) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            gate_key(&c.tunnels[0].config.session),
            ("inner".to_owned(), 2200)
        );
        assert_eq!(
            gate_key(&c.tunnels[1].config.session),
            ("outer".to_owned(), 2222),
            "a chain's logins start at its outermost jump host"
        );
    }

    fn shared(remote: bool, session: TunnelState) -> (Arc<TunnelShared>, Metrics) {
        let metrics = Metrics::new();
        let status = SessionStatus::new();
        lock(&status).state = session;
        let shared = Arc::new(TunnelShared {
            name: "t".into(),
            local: Mutex::new("localhost:8022".into()),
            remote: "127.0.0.1:5432".into(),
            bastion: "u@b:22".into(),
            metrics: metrics.tunnel("t"),
            session: status.clone(),
            bind_error: Mutex::new(None),
            probe: Mutex::new(None),
            forward: remote.then(|| {
                Mutex::new(ForwardPhase {
                    listening: false,
                    granted_before: false,
                    since: SystemTime::now(),
                })
            }),
        });
        lock(&status).tunnels.push(Arc::downgrade(&shared));
        shared.refresh_up();
        (shared, metrics)
    }

    #[test]
    fn a_remote_tunnel_is_up_only_while_the_bastion_listens_for_it() {
        let (t, _m) = shared(true, TunnelState::Up);
        let spec = crate::remote::RemoteSpec::tcp(
            "localhost",
            8022,
            crate::tunnel::Destination::Tcp(crate::tunnel::Target {
                host: "127.0.0.1".into(),
                port: 5432,
            }),
        );
        let report = remote_report(t.clone());
        let seen = |t: &TunnelShared| (t.status().state, t.metrics.up.get());
        assert_eq!(
            seen(&t),
            (TunnelState::Connecting, 0),
            "session up, forward not granted yet"
        );
        report(&spec, &ForwardState::Requesting);
        assert_eq!(seen(&t), (TunnelState::Connecting, 0));
        report(&spec, &ForwardState::Listening(8022));
        assert_eq!(seen(&t), (TunnelState::Up, 1));
        // The session ended: asked again on the next one.
        report(&spec, &ForwardState::Requesting);
        assert_eq!(seen(&t), (TunnelState::Reconnecting, 0));
        report(&spec, &ForwardState::Refused("refused".into()));
        assert_eq!(seen(&t), (TunnelState::Failed, 0));
        report(&spec, &ForwardState::Listening(8022));
        assert_eq!(seen(&t), (TunnelState::Up, 1));
        // The session going down takes the gauge with it, and a grant shows nothing while
        // the session is not up.
        lock(&t.session).state = TunnelState::Reconnecting;
        t.refresh_up();
        assert_eq!(seen(&t), (TunnelState::Reconnecting, 0));
    }

    #[test]
    fn a_local_tunnel_follows_its_session_and_its_bind() {
        let (t, _m) = shared(false, TunnelState::Up);
        assert_eq!((t.status().state, t.metrics.up.get()), (TunnelState::Up, 1));
        *lock(&t.bind_error) = Some(("cannot listen".into(), SystemTime::now()));
        t.refresh_up();
        assert_eq!(
            (t.status().state, t.metrics.up.get()),
            (TunnelState::Failed, 0),
            "a tunnel whose listener is not bound is not up, whatever its session"
        );
        let (t, _m) = shared(false, TunnelState::Connecting);
        assert_eq!(
            (t.status().state, t.metrics.up.get()),
            (TunnelState::Connecting, 0)
        );
    }

    fn poll(p: &mut FilePoll, now: &str) -> Option<String> {
        p.observe(Some(now.as_bytes().to_vec()))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    #[test]
    fn the_file_poll_reloads_only_a_changed_content_that_two_reads_agree_on() {
        let full = "[[tunnel]]\nname = \"a\"\n[[tunnel]]\nname = \"b\"\n";
        let mut p = FilePoll::new(full.as_bytes().to_vec());
        assert_eq!(poll(&mut p, full), None, "unchanged");
        // Written in place, slower than the poll: every read finds another prefix (the
        // empty file and the first tunnel alone are valid TOML), none is loaded.
        for n in [0, 10, 21, 30] {
            assert_eq!(poll(&mut p, &full[..n]), None, "a prefix of {n} bytes");
        }
        // Done, as it was: nothing to reload.
        assert_eq!(poll(&mut p, full), None);
        // A prefix seen once, then the file as it was: nothing either.
        assert_eq!(poll(&mut p, &full[..21]), None);
        assert_eq!(poll(&mut p, full), None);
        assert_eq!(poll(&mut p, full), None);
        // A change that stays: loaded on the second read, once.
        let changed = "[[tunnel]]\nname = \"c\"\n";
        assert_eq!(poll(&mut p, changed), None);
        assert_eq!(poll(&mut p, changed).as_deref(), Some(changed));
        assert_eq!(poll(&mut p, changed), None);
        // A read that fails (a ConfigMap's symlink swapped) breaks the agreement.
        assert_eq!(poll(&mut p, full), None);
        assert_eq!(p.observe(None), None);
        assert_eq!(poll(&mut p, full), None);
        assert_eq!(poll(&mut p, full).as_deref(), Some(full));
        // What a SIGHUP loaded is what the poll compares with.
        p.loaded(Some(changed.as_bytes().to_vec()));
        assert_eq!(poll(&mut p, changed), None);
        assert_eq!(poll(&mut p, changed), None);
    }

    #[tokio::test]
    async fn the_poll_reads_at_most_the_largest_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tunnels.toml");
        let mut reader = FileReader::new(&path, FILE_READ_TIMEOUT);
        assert!(reader.read().await.is_err(), "no file yet");
        std::fs::write(&path, "[admin]\n").unwrap();
        assert_eq!(reader.read().await.unwrap(), b"[admin]\n");
        let big = std::fs::File::create(&path).unwrap();
        big.set_len(config::MAX_FILE_SIZE + 1).unwrap();
        let e = reader.read().await.unwrap_err();
        assert!(e.message.contains("cannot read the file"), "{e}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_read_that_hangs_holds_up_the_loop_for_a_bounded_time_and_is_not_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tunnels.toml");
        // A FIFO nobody writes to: opening it blocks until a writer comes.
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let mut reader = FileReader::new(&path, Duration::from_millis(100));
        let e = reader.read().await.unwrap_err();
        assert!(e.message.contains("no answer"), "{e}");
        assert!(reader.unfinished.is_some());
        let e = reader.read().await.unwrap_err();
        assert!(e.message.contains("no answer"), "{e}");
        // A writer lets the one read in flight finish; the next read picks it up.
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || std::fs::write(path, "[admin]\n"))
        };
        let mut read = reader.read().await;
        for _ in 0..100 {
            if read.is_ok() {
                break;
            }
            read = reader.read().await;
        }
        writer.join().unwrap().unwrap();
        assert_eq!(read.unwrap(), b"[admin]\n");
        assert!(reader.unfinished.is_none());
    }

    #[test]
    fn not_ready_while_draining() {
        let state = FleetState::default();
        assert!(!state.ready());
        assert!(state.not_ready_reason().contains("not loaded"));
        state.loaded.store(true, Ordering::Release);
        assert!(state.ready());
        state.draining.store(true, Ordering::Release);
        assert!(!state.ready(), "ready while draining");
        assert!(
            state.not_ready_reason().contains("draining"),
            "{}",
            state.not_ready_reason()
        );
    }
}
