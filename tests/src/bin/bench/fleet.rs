//! `bench --fleet`: the resident memory of one `forwarder serve` holding many idle tunnels.
//!
//! For each tunnel count N (default 1, 100 and 1000) a fleet file of N tunnels, all to the
//! lab's echo server through one lab sshd, is served twice: with the tunnels sharing one SSH
//! session (the default for tunnels with equal session settings) and with
//! `share_session = false` (N sessions). Each run waits until `/tunnels` shows every tunnel
//! `up`, lets the process settle, reads its `VmRSS`, and then checks that a few tunnels carry
//! an echo. The cost of one more idle tunnel, and of one more idle session, is the slope
//! between the smallest and the largest N.
//!
//! Then, for each N up to [`OPENSSH_MAX`], the same tunnels as N `ssh -N -L` processes (one
//! session each, keepalives as forwarder's defaults): what a platform runs without a fleet
//! daemon. For every run the report has the clients' proportional memory (PSS, so that many
//! processes sharing a library's pages are not counted N times), their CPU while idle, and
//! the PSS of the sshd processes serving them (one or two per session), which the bastion
//! pays.
//!
//! Probes are off (`probe = "none"`) so that nothing but the idle tunnels and sessions, with
//! their keepalives, runs. Everything else is forwarder's default.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use ssh_interop_tests::fleet::{TunnelSpec, fleet_file, http_get};
use ssh_interop_tests::process::{
    LabChild, file_tail, peak_rss_kib, pss_kib, rss_kib, run_bounded, tree,
};
use ssh_interop_tests::sshd::sshd_binary;
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Pattern, Sshd, Tunnel, TunnelBuilder, UserKey,
    echo_round_trip, forwarder_binary, free_port,
};
use tempfile::TempDir;

/// Tunnel counts measured unless `--fleet-sizes` says otherwise.
pub(crate) const DEFAULT_SIZES: [usize; 3] = [1, 100, 1000];
/// Longest wait for every tunnel of one run to be up (1,000 handshakes, four at a time).
const ALL_UP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a run may go without one more tunnel coming up before it is given up.
const STALLED: Duration = Duration::from_secs(60);
/// How long the fleet idles after the last tunnel came up before its memory is read, unless
/// `--fleet-settle` says otherwise.
const DEFAULT_SETTLE: Duration = Duration::from_secs(5);
/// RSS samples taken over the settling time, to see whether memory still moves.
const SAMPLES: u32 = 5;
/// Descriptors `forwarder serve` needs besides one per listener and one per session.
const SPARE_FILES: u64 = 64;
/// The largest N run as N `ssh -N -L` processes (each with one or two sshd processes on the
/// other side, several MiB apiece).
pub(crate) const OPENSSH_MAX: usize = 100;

/// What `--fleet`, `--fleet-sizes` and `--fleet-settle` ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// Tunnel counts, ascending.
    pub(crate) sizes: Vec<usize>,
    /// Idle time before the memory is read.
    pub(crate) settle: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sizes: DEFAULT_SIZES.to_vec(),
            settle: DEFAULT_SETTLE,
        }
    }
}

/// `1,100,1000`: tunnel counts, each at least 1, sorted, without repeats.
pub(crate) fn parse_sizes(text: &str) -> Result<Vec<usize>, String> {
    let mut sizes = text
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| (1..=20_000).contains(&n))
                .ok_or_else(|| format!("--fleet-sizes: {s:?} is not a tunnel count (1 to 20000)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    sizes.sort_unstable();
    sizes.dedup();
    Ok(sizes)
}

/// One run: N tunnels, shared session or not.
#[derive(Debug)]
struct Sample {
    tunnels: usize,
    sessions: usize,
    /// From the process start until `/tunnels` showed every tunnel up.
    all_up: Duration,
    /// VmRSS samples over the settling time, KiB; the last one is the figure.
    rss: Vec<u64>,
    /// VmHWM at the end of the settling time, KiB (the startup's peak).
    peak: u64,
    /// VmRSS after the echo checks, KiB.
    after_echo: u64,
    /// PSS at the end of the settling time, KiB.
    pss: u64,
    /// CPU time the client spent over the settling time.
    idle_cpu: Duration,
    /// PSS of sshd's session processes at the end of the settling time, KiB.
    sshd_pss: u64,
    /// Warnings and errors in the fleet's log.
    complaints: Vec<String>,
}

impl Sample {
    fn idle_rss(&self) -> u64 {
        self.rss.last().copied().unwrap_or(0)
    }
}

/// Nanoseconds on a CPU of all of `pid`'s live threads so far.
fn cpu_ns(pid: u32) -> u64 {
    super::thread_cpu_ns(pid).values().sum()
}

/// PSS of every process that serves a session of `sshd` (the listener's descendants), KiB.
fn sshd_sessions_pss(sshd: &Sshd) -> u64 {
    sshd.session_pids()
        .into_iter()
        .flat_map(tree)
        .filter_map(pss_kib)
        .sum()
}

/// Everything the fleets connect to.
#[derive(Debug)]
struct Lab {
    key: UserKey,
    sshd: Sshd,
    echo: EchoServer,
}

/// Runs the fleet measurements with `program` (default: [`forwarder_binary`]) and prints the
/// report.
pub(crate) fn run(program: Option<&Path>, options: &Options) {
    let program = program.map_or_else(forwarder_binary, Path::to_path_buf);
    let (sizes, settle) = (&options.sizes, options.settle);
    let largest = sizes.iter().copied().max().unwrap_or(1);
    let open_files = raise_open_file_limit();
    let needed = 2 * largest as u64 + SPARE_FILES;
    if open_files.is_some_and(|n| n < needed) {
        super::progress(&format!(
            "fleet: the open-file limit is {} and {largest} unshared tunnels need about \
             {needed}: expect the largest runs to fail",
            open_files.unwrap_or(0)
        ));
    }

    super::progress("fleet: generating an ed25519 user key, starting sshd and an echo server");
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .authorize(&key)
        // Quiet logging: 1,000 sessions at the lab's DEBUG1 write a lot.
        .config("LogLevel INFO")
        // forwarder makes at most four handshakes at a time per bastion, so at most four
        // connections are unauthenticated; this only keeps sshd from dropping any if that
        // ever changed.
        // Forwarded channels (direct-tcpip) do not count against MaxSessions.
        .config("MaxStartups 2000:30:2000")
        .start();
    let lab = Lab {
        key,
        sshd,
        echo: EchoServer::start(),
    };

    let mut shared = Vec::new();
    let mut unshared = Vec::new();
    let mut openssh = Vec::new();
    for share in [true, false] {
        for &n in sizes {
            let what = describe(n, share);
            super::progress(&format!("fleet: {what}: starting"));
            match measure(&lab, &program, n, share, settle) {
                Ok(s) => {
                    super::progress(&format!(
                        "fleet: {what}: all up in {:.1} s; RSS over {} s: {} KiB; peak {} \
                         KiB; after the echo checks {} KiB",
                        s.all_up.as_secs_f64(),
                        settle.as_secs(),
                        s.rss
                            .iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        s.peak,
                        s.after_echo
                    ));
                    for line in &s.complaints {
                        super::progress(&format!("fleet: {what}: logged: {line}"));
                    }
                    if share {
                        shared.push(s);
                    } else {
                        unshared.push(s);
                    }
                }
                Err(e) => super::progress(&format!("fleet: {what}: FAILED: {e}")),
            }
        }
    }
    for &n in sizes.iter().filter(|&&n| n <= OPENSSH_MAX) {
        super::progress(&format!("fleet: {n} x ssh -N -L: starting"));
        match measure_openssh(&lab, n, settle) {
            Ok(s) => {
                super::progress(&format!(
                    "fleet: {n} x ssh -N -L: all up in {:.1} s; PSS {} KiB, RSS {} KiB",
                    s.all_up.as_secs_f64(),
                    s.pss,
                    s.idle_rss()
                ));
                openssh.push(s);
            }
            Err(e) => super::progress(&format!("fleet: {n} x ssh -N -L: FAILED: {e}")),
        }
    }
    print_report(&program, open_files, settle, &shared, &unshared, &openssh);
}

fn describe(n: usize, share: bool) -> String {
    let plural = if n == 1 { "" } else { "s" };
    if share {
        format!("{n} tunnel{plural} on one session")
    } else {
        format!("{n} tunnel{plural} with a session each")
    }
}

/// Sets this process's soft limit on open files to its hard limit, so that the fleet, which
/// inherits it, has one descriptor for each listener and each session. Returns the limit.
fn raise_open_file_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            super::progress(&format!("fleet: could not raise the open-file limit: {e}"));
        }
    }
    getrlimit(Resource::Nofile).current
}

/// A running `forwarder serve` with its file and log in a temp dir.
#[derive(Debug)]
pub(crate) struct Serve {
    // Declared first so it is killed before the temp dir goes.
    child: LabChild,
    log: PathBuf,
    admin: u16,
    _dir: TempDir,
}

impl Serve {
    pub(crate) fn start(program: &Path, text: &str, admin: u16) -> Serve {
        let dir = tempfile::Builder::new()
            .prefix("bench-fleet-")
            .tempdir()
            .expect("temp dir for the fleet");
        let config = dir.path().join("tunnels.toml");
        fs::write(&config, text).expect("write the fleet file");
        let log = dir.path().join("serve.log");
        let out = fs::File::create(&log).expect("create the fleet's log");
        let err = out.try_clone().expect("clone the fleet's log");
        let mut cmd = Command::new(program);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        Serve {
            child: LabChild::spawn("forwarder serve", &mut cmd),
            log,
            admin,
            _dir: dir,
        }
    }

    fn log_tail(&self) -> String {
        file_tail(&self.log, 20)
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// How many tunnels `/tunnels` shows `up` now; `None` when it does not answer.
    pub(crate) fn up_now(&self) -> Option<usize> {
        match http_get(self.admin, "/tunnels") {
            Some((200, body)) => Tally::of(&body).ok().map(|t| t.count("up")),
            _ => None,
        }
    }

    /// The busiest bastion's handshake gate in `/metrics`: how many attempts waited for
    /// their turn and for how many seconds in all (`forwarder_bastion_handshake_wait_seconds`
    /// count and sum).
    pub(crate) fn gate_waits(&self) -> Option<(f64, f64)> {
        let (200, body) = http_get(self.admin, "/metrics")? else {
            return None;
        };
        gate_waits(&body)
    }

    /// Polls `/tunnels` until every one of `n` tunnels is `up`; the time that took.
    /// Gives up after [`ALL_UP_TIMEOUT`], or sooner when no tunnel came up for [`STALLED`].
    pub(crate) fn wait_all_up(&mut self, n: usize, started: Instant) -> Result<Duration, String> {
        let deadline = started + ALL_UP_TIMEOUT;
        let mut last_report = Instant::now();
        let mut last = String::from("no answer from /tunnels");
        let mut errors = Vec::new();
        let (mut most_up, mut moved) = (0, Instant::now());
        let mut answered = None;
        loop {
            if let Some((200, body)) = http_get(self.admin, "/tunnels") {
                answered = Some(Instant::now());
                let tally = Tally::of(&body)?;
                let up = tally.count("up");
                if up == n && tally.total() == n {
                    return Ok(started.elapsed());
                }
                if up > most_up {
                    (most_up, moved) = (up, Instant::now());
                }
                last = tally.show();
                errors = tally.errors;
            }
            if let Some(status) = self.child.exited() {
                return Err(format!(
                    "forwarder serve exited ({status}); its log ends with:\n{}",
                    self.log_tail()
                ));
            }
            let stalled = moved.elapsed() >= STALLED;
            if stalled || Instant::now() >= deadline {
                let why = if stalled {
                    format!("no more tunnels up for {STALLED:?}")
                } else {
                    format!("not every tunnel up within {ALL_UP_TIMEOUT:?}")
                };
                // An endpoint out of descriptors stops answering: say how old `last` is.
                let age = answered.map_or(f64::NAN, |t: Instant| t.elapsed().as_secs_f64());
                return Err(format!(
                    "{why} ({last}, as /tunnels answered {age:.0} s ago); errors in /tunnels: \
                     {}; in its log: {}; its log ends with:\n{}",
                    if errors.is_empty() {
                        "none".to_owned()
                    } else {
                        errors.join(" | ")
                    },
                    self.complaints().join("\n"),
                    self.log_tail()
                ));
            }
            if last_report.elapsed() >= Duration::from_secs(15) {
                super::progress(&format!(
                    "fleet: {:.0} s: {last}",
                    started.elapsed().as_secs_f64()
                ));
                last_report = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The log's warning and error lines, at most a few, with how many there were.
    fn complaints(&self) -> Vec<String> {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
            .collect();
        let mut out: Vec<String> = bad.iter().take(3).map(|l| (*l).to_owned()).collect();
        if bad.len() > out.len() {
            out.push(format!("... {} warning and error lines in all", bad.len()));
        }
        out
    }

    /// SIGTERM, then a kill if it has not exited within a few seconds.
    pub(crate) fn stop(mut self) {
        self.child.terminate();
        if self.child.wait_timeout(Duration::from_secs(15)).is_none() {
            super::progress("fleet: forwarder serve did not exit within 15 s of SIGTERM");
        }
    }
}

/// What `/tunnels` shows, summed up.
#[derive(Debug, PartialEq, Eq)]
struct Tally {
    /// `(state, how many)`, in the order first seen.
    counts: Vec<(String, usize)>,
    /// A few distinct `last_error`s of tunnels that are not up.
    errors: Vec<String>,
}

impl Tally {
    fn of(body: &str) -> Result<Tally, String> {
        let v: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("/tunnels is not JSON ({e})"))?;
        let all = v
            .as_array()
            .ok_or_else(|| "/tunnels is not a JSON array".to_owned())?;
        let mut tally = Tally {
            counts: Vec::new(),
            errors: Vec::new(),
        };
        for t in all {
            let state = t["state"].as_str().unwrap_or("?");
            match tally.counts.iter_mut().find(|(s, _)| s == state) {
                Some(c) => c.1 += 1,
                None => tally.counts.push((state.to_owned(), 1)),
            }
            if state != "up"
                && let Some(e) = t["last_error"].as_str()
                && tally.errors.len() < 3
                && !tally.errors.iter().any(|x| x == e)
            {
                tally.errors.push(e.to_owned());
            }
        }
        Ok(tally)
    }

    fn count(&self, state: &str) -> usize {
        self.counts
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |c| c.1)
    }

    fn total(&self) -> usize {
        self.counts.iter().map(|c| c.1).sum()
    }

    fn show(&self) -> String {
        self.counts
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One run of `n` tunnels.
fn measure(
    lab: &Lab,
    program: &Path,
    n: usize,
    share: bool,
    settle: Duration,
) -> Result<Sample, String> {
    let admin = free_port();
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let bastion = format!("{}@127.0.0.1:{}", lab.sshd.user(), lab.sshd.port());
    let remote = format!("127.0.0.1:{}", lab.echo.port());
    let head = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ndrain_timeout = \"1s\"\n\n\
         [defaults]\nbastion = {bastion:?}\nidentity_file = {:?}\nknown_hosts = {:?}\n\
         probe = \"none\"\nshare_session = {share}\n",
        lab.key.private_key_path().display().to_string(),
        lab.sshd.known_hosts_path().display().to_string(),
    );
    let tunnels: Vec<TunnelSpec> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| TunnelSpec::new(&format!("t{i:05}"), &bastion, port, &remote))
        .collect();
    let logins_before = lab.sshd.log().matches("Accepted publickey").count();

    let started = Instant::now();
    let mut serve = Serve::start(program, &fleet_file(&head, &tunnels), admin);
    let pid = serve.child.pid();
    let all_up = serve.wait_all_up(n, started)?;

    let cpu_before = cpu_ns(pid);
    let mut rss = Vec::new();
    for _ in 0..SAMPLES {
        std::thread::sleep(settle / SAMPLES);
        rss.push(rss_kib(pid).ok_or("forwarder serve is gone")?);
    }
    let idle_cpu = Duration::from_nanos(cpu_ns(pid).saturating_sub(cpu_before));
    let pss = pss_kib(pid).unwrap_or(0);
    let sshd_pss = sshd_sessions_pss(&lab.sshd);
    let peak = peak_rss_kib(pid).unwrap_or(0);

    let sessions = if share { 1 } else { n };
    let logins = lab.sshd.log().matches("Accepted publickey").count() - logins_before;
    let live = lab.sshd.session_pids().len();
    if logins != sessions || live != sessions {
        return Err(format!(
            "expected {sessions} session(s); sshd logged {logins} logins and has {live} \
             session processes"
        ));
    }

    check_echoes(&ports, |i| format!("tunnel t{i:05}"))?;
    let after_echo = rss_kib(pid).unwrap_or(0);
    let complaints = serve.complaints();
    serve.stop();
    wait_sessions_gone(&lab.sshd);
    Ok(Sample {
        tunnels: n,
        sessions,
        all_up,
        rss,
        peak,
        after_echo,
        pss,
        idle_cpu,
        sshd_pss,
        complaints,
    })
}

/// The same `n` tunnels as `n` `ssh -N -L` processes, each with its own session and
/// forwarder's keepalive settings, started one after the other.
fn measure_openssh(lab: &Lab, n: usize, settle: Duration) -> Result<Sample, String> {
    let started = Instant::now();
    let mut tunnels: Vec<Tunnel> = Vec::with_capacity(n);
    for _ in 0..n {
        let tunnel = TunnelBuilder::new(ClientKind::OpenSsh, &lab.sshd, &lab.key)
            .option("ServerAliveInterval=15")
            .option("ServerAliveCountMax=3")
            .forward_to(lab.echo.port())
            .start();
        tunnels.push(tunnel);
    }
    let all_up = started.elapsed();
    let pids: Vec<u32> = tunnels.iter().map(Tunnel::pid).collect();
    let sum = |read: fn(u32) -> Option<u64>| -> Result<u64, String> {
        pids.iter()
            .map(|&p| read(p).ok_or_else(|| format!("ssh process {p} is gone")))
            .sum()
    };
    let cpu = || pids.iter().map(|&p| cpu_ns(p)).sum::<u64>();
    let cpu_before = cpu();
    let mut rss = Vec::new();
    for _ in 0..SAMPLES {
        std::thread::sleep(settle / SAMPLES);
        rss.push(sum(rss_kib)?);
    }
    let idle_cpu = Duration::from_nanos(cpu().saturating_sub(cpu_before));
    let pss = sum(pss_kib)?;
    let sshd_pss = sshd_sessions_pss(&lab.sshd);
    let peak = sum(peak_rss_kib)?;
    let live = lab.sshd.session_pids().len();
    if live != n {
        return Err(format!(
            "expected {n} sessions; sshd has {live} session processes"
        ));
    }
    let ports: Vec<u16> = tunnels.iter().map(Tunnel::local_port).collect();
    check_echoes(&ports, |i| format!("ssh tunnel {i}"))?;
    let after_echo = sum(rss_kib)?;
    for t in &mut tunnels {
        t.kill();
    }
    drop(tunnels);
    wait_sessions_gone(&lab.sshd);
    Ok(Sample {
        tunnels: n,
        sessions: n,
        all_up,
        rss,
        peak,
        after_echo,
        pss,
        idle_cpu,
        sshd_pss,
        complaints: Vec::new(),
    })
}

/// Echoes 4 KiB through the first, middle and last of `ports`; `name` says which tunnel
/// failed.
fn check_echoes(ports: &[u16], name: impl Fn(usize) -> String) -> Result<(), String> {
    let mut checked: Vec<usize> = vec![0, ports.len() / 2, ports.len().saturating_sub(1)];
    checked.dedup();
    for i in checked {
        let port = *ports.get(i).ok_or("no tunnel to check")?;
        let data = Pattern::get().bytes_at(i as u64 * 4096, 4096);
        match echo_round_trip(port, &data) {
            Ok(back) if back == data => {}
            Ok(back) => {
                return Err(format!(
                    "{}: {} bytes came back for 4096 sent, or other bytes",
                    name(i),
                    back.len()
                ));
            }
            Err(e) => return Err(format!("{}: no echo: {e}", name(i))),
        }
    }
    Ok(())
}

/// Waits (at most 30 s) until sshd has no session processes left, so that the next run
/// starts on a quiet sshd.
fn wait_sessions_gone(sshd: &Sshd) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = sshd.session_pids().len();
        if left == 0 {
            return;
        }
        if Instant::now() >= deadline {
            super::progress(&format!(
                "fleet: sshd still has {left} session processes 30 s after the fleet stopped"
            ));
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Idle RSS in KiB per added unit between the smallest and the largest run.
fn slope(samples: &[Sample], per: impl Fn(&Sample) -> usize) -> Option<f64> {
    slope_of(samples, per, Sample::idle_rss)
}

/// `value` per added unit between the smallest and the largest run.
fn slope_of(
    samples: &[Sample],
    per: impl Fn(&Sample) -> usize,
    value: impl Fn(&Sample) -> u64,
) -> Option<f64> {
    let first = samples.iter().min_by_key(|s| per(s))?;
    let last = samples.iter().max_by_key(|s| per(s))?;
    let units = per(last).checked_sub(per(first)).filter(|&d| d > 0)?;
    Some((value(last) as f64 - value(first) as f64) / units as f64)
}

fn print_report(
    program: &Path,
    open_files: Option<u64>,
    settle: Duration,
    shared: &[Sample],
    unshared: &[Sample],
    openssh: &[Sample],
) {
    // sshd has no version option; the usage it prints for an unknown one starts with it.
    let usage = run_bounded(
        Command::new(sshd_binary()).arg("-V"),
        Duration::from_secs(10),
        "sshd -V",
    );
    let sshd_version = String::from_utf8_lossy(&usage.stderr)
        .split([',', '\n'])
        .next()
        .filter(|v| v.starts_with("OpenSSH"))
        .unwrap_or("OpenSSH sshd")
        .trim()
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "fleet memory: {} serve, every tunnel to one echo server through one lab sshd \
         ({sshd_version}), ed25519 user key, probe = \"none\", other settings default",
        program.display()
    );
    println!(
        "RSS (VmRSS) and PSS (smaps_rollup) read {} s after every tunnel was up (/tunnels, or \
         each ssh listening), before any connection; peak is VmHWM; idle CPU is what the \
         client spent over those {} s; sshd PSS sums its session processes; open-file limit \
         {}; {cpus} CPUs",
        settle.as_secs(),
        settle.as_secs(),
        open_files.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
    );
    println!(
        "N x ssh -N -L: one process and session per tunnel, -o ServerAliveInterval=15 -o \
         ServerAliveCountMax=3 (forwarder's defaults); its memory columns are sums over the N \
         processes"
    );
    println!();
    println!(
        "{:<24} {:>8} {:>9} {:>13} {:>13} {:>13} {:>15} {:>12} {:>13}",
        "client",
        "tunnels",
        "all up s",
        "idle RSS KiB",
        "idle PSS KiB",
        "peak RSS KiB",
        "after echo KiB",
        "idle CPU ms",
        "sshd PSS KiB"
    );
    let rows = shared
        .iter()
        .map(|s| ("serve, 1 session".to_owned(), s))
        .chain(
            unshared
                .iter()
                .map(|s| ("serve, a session each".to_owned(), s)),
        )
        .chain(
            openssh
                .iter()
                .map(|s| (format!("{} x ssh -N -L", s.tunnels), s)),
        );
    for (client, s) in rows {
        println!(
            "{:<24} {:>8} {:>9.1} {:>13} {:>13} {:>13} {:>15} {:>12.1} {:>13}",
            client,
            s.tunnels,
            s.all_up.as_secs_f64(),
            s.idle_rss(),
            s.pss,
            s.peak,
            s.after_echo,
            s.idle_cpu.as_secs_f64() * 1000.0,
            s.sshd_pss
        );
    }
    println!();
    let tunnel = slope(shared, |s| s.tunnels);
    let own = slope(unshared, |s| s.sessions);
    let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let range = |samples: &[Sample], what: &str| match (samples.first(), samples.last()) {
        (Some(a), Some(b)) if b.tunnels > a.tunnels => format!(
            "({what}({}) - {what}({})) / {}",
            b.tunnels,
            a.tunnels,
            b.tunnels - a.tunnels
        ),
        _ => "needs two sizes".to_owned(),
    };
    let pss = |samples: &[Sample]| slope_of(samples, |s| s.tunnels, |s| s.pss);
    let sshd_pss = |samples: &[Sample]| slope_of(samples, |s| s.tunnels, |s| s.sshd_pss);
    let rows = [
        (
            "per idle tunnel",
            tunnel,
            format!("{}, one shared session", range(shared, "RSS")),
        ),
        (
            "per idle tunnel with its own session",
            own,
            format!("{}, share_session = false", range(unshared, "RSS")),
        ),
        (
            "per idle session",
            own.zip(tunnel).map(|(o, t)| o - t),
            "the difference of the two".to_owned(),
        ),
        (
            "PSS per idle tunnel",
            pss(shared),
            format!("{}, one shared session", range(shared, "PSS")),
        ),
        (
            "PSS per idle tunnel with its own session",
            pss(unshared),
            format!("{}, share_session = false", range(unshared, "PSS")),
        ),
        (
            "PSS per idle tunnel, ssh -N -L",
            pss(openssh),
            format!("{}, a process and session each", range(openssh, "PSS")),
        ),
        (
            "sshd PSS per tunnel, one shared session",
            sshd_pss(shared),
            format!("{}, of sshd's session processes", range(shared, "PSS")),
        ),
        (
            "sshd PSS per tunnel, a session each",
            sshd_pss(unshared),
            range(unshared, "PSS"),
        ),
        (
            "sshd PSS per tunnel, ssh -N -L",
            sshd_pss(openssh),
            range(openssh, "PSS"),
        ),
    ];
    println!("{:<44} {:>8}  how", "figure", "KiB");
    for (figure, kib, how) in rows {
        println!("{figure:<44} {:>8}  {how}", show(kib));
    }
    // What an idle session costs: its keepalives (and whatever else wakes it).
    let cpu = |samples: &[Sample]| {
        slope_of(
            samples,
            |s| s.sessions,
            |s| u64::try_from(s.idle_cpu.as_micros()).unwrap_or(u64::MAX),
        )
    };
    let (ours, theirs) = (cpu(unshared), cpu(openssh));
    let ratio = ours
        .zip(theirs)
        .filter(|&(_, t)| t > 0.0)
        .map_or_else(String::new, |(o, t)| format!("; {:.2}x ssh's", o / t));
    println!();
    println!(
        "{:<44} {:>8}  how",
        format!("figure (CPU over {} s idle)", settle.as_secs()),
        "us"
    );
    println!(
        "{:<44} {:>8}  {}, share_session = false{ratio}",
        "per idle session",
        show(ours),
        range(unshared, "CPU")
    );
    println!(
        "{:<44} {:>8}  {}, a process and session each",
        "per idle session, ssh -N -L",
        show(theirs),
        range(openssh, "CPU")
    );
}

/// The attempts and seconds waited of the bastion with the most attempts in a scrape.
fn gate_waits(metrics: &str) -> Option<(f64, f64)> {
    let value = |line: &str, name: &str| -> Option<(String, f64)> {
        let rest = line.strip_prefix(name)?.strip_prefix("{bastion=\"")?;
        let (bastion, v) = rest.split_once("\"} ")?;
        Some((bastion.to_owned(), v.trim().parse().ok()?))
    };
    let (bastion, count) = metrics
        .lines()
        .filter_map(|l| value(l, "forwarder_bastion_handshake_wait_seconds_count"))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    let sum = metrics
        .lines()
        .filter_map(|l| value(l, "forwarder_bastion_handshake_wait_seconds_sum"))
        .find(|(b, _)| *b == bastion)?
        .1;
    Some((count, sum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_waits_are_the_busiest_bastions() {
        let m = "# HELP x\n\
            forwarder_bastion_handshake_wait_seconds_sum{bastion=\"a:22\"} 0.5\n\
            forwarder_bastion_handshake_wait_seconds_count{bastion=\"a:22\"} 2\n\
            forwarder_bastion_handshake_wait_seconds_sum{bastion=\"b:22\"} 12.25\n\
            forwarder_bastion_handshake_wait_seconds_count{bastion=\"b:22\"} 41\n";
        assert_eq!(gate_waits(m), Some((41.0, 12.25)));
        assert_eq!(gate_waits("nothing"), None);
    }

    #[test]
    fn sizes_parse_sorted_without_repeats() {
        assert_eq!(parse_sizes("1,100,1000"), Ok(vec![1, 100, 1000]));
        assert_eq!(parse_sizes("1000, 1,1"), Ok(vec![1, 1000]));
        assert!(parse_sizes("0,10").is_err());
        assert!(parse_sizes("ten").is_err());
        assert!(parse_sizes("").is_err());
    }

    #[test]
    fn fleet_options_parse() {
        let parse = |a: &[&str]| super::super::parse_args(a.iter().map(|s| (*s).to_owned()));
        assert_eq!(parse(&[]).expect("parses").fleet, None);
        let all = parse(&["--fleet"]).expect("parses").fleet;
        assert_eq!(all, Some(Options::default()));
        let some = parse(&["--fleet-settle", "60", "--fleet-sizes=10,2"])
            .expect("parses")
            .fleet
            .expect("implies --fleet");
        assert_eq!(some.sizes, vec![2, 10]);
        assert_eq!(some.settle, Duration::from_secs(60));
        assert!(parse(&["--fleet-sizes", "0"]).is_err());
    }

    #[test]
    fn states_are_counted() {
        let body = r#"[{"state":"up","last_error":"old"},{"state":"connecting","last_error":"x"},
                       {"state":"up"},{"state":"failed","last_error":"x"}]"#;
        let tally = Tally::of(body).expect("parses");
        assert_eq!(
            (tally.count("up"), tally.count("failed"), tally.total()),
            (2, 1, 4)
        );
        assert_eq!(tally.show(), "2 up, 1 connecting, 1 failed");
        assert_eq!(tally.errors, vec!["x".to_owned()]);
        assert!(Tally::of("{").is_err());
    }

    #[test]
    fn slope_is_per_added_unit() {
        let sample = |tunnels: usize, rss: u64| Sample {
            tunnels,
            sessions: tunnels,
            all_up: Duration::ZERO,
            rss: vec![rss],
            peak: rss,
            after_echo: rss,
            pss: rss / 2,
            idle_cpu: Duration::ZERO,
            sshd_pss: 0,
            complaints: Vec::new(),
        };
        let runs = [sample(1, 5000), sample(100, 6000), sample(1000, 14990)];
        assert_eq!(slope(&runs, |s| s.tunnels), Some(10.0));
        assert_eq!(slope(&runs[..1], |s| s.tunnels), None);
        assert_eq!(slope_of(&runs, |s| s.tunnels, |s| s.pss), Some(5.0));
    }
}
