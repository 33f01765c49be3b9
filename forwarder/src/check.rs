//! `forwarder check`: the path from this machine to the database, one stage at a time, each
//! timed, with what to do (and who should do it) when a stage fails.
//!
//! ```text
//!  1 resolve ─> 2 tcp ─> 3 ssh version ─> 4 key exchange ─> 5 host key ─> 6 authentication
//!     ─> for each forward: 7 channel to host:port ─> 8 database (probe::run)
//!     ─> for each remote forward: 7 the bastion listens (asked, then cancelled)
//!                                 ─> 8 its target, connected (and probed) from here
//!  exit status: 0 all passed, 2 bad command line or file, 10 + (stage - 1) for the first failure
//! ```
//!
//! Stages 3 to 6 are one SSH handshake run by the ordinary driver over a TCP stream connected
//! here; how far it got ([`SessionLog`]) and the error it ended with say which stage failed.
//! Through jump hosts, the first jump host gets stages 1 to 6, and each next hop (the
//! destination last) stages 2 to 6, its stage 2 being the `direct-tcpip` channel the hop
//! before opens to it, as the tunnel connects; each line names its jump host.
//! known_hosts is read and never written: `accept-new` and `no` report what a tunnel would do.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use ssh_auth::AuthError;
use ssh_connection::OpenFailureReason;
use ssh_transport::hostkey::PublicKey;
use ssh_transport::random::OsRandom;
use tokio::net::TcpStream;

use crate::cli::{self, Command, Destination, ForwardSpec};
use crate::config::TunnelConfig;
use crate::driver::{self, HostKeyVerifier, OpenError, SessionLog};
use crate::known_hosts::{self, Decision, HostKeyStatus, KnownHosts};
use crate::local::Peer;
use crate::probe::{self, ProbeKind, ProbeSpec};
use crate::remote::RemoteSpec;
use crate::session::{Session, SessionConfig, SessionError};
use crate::userauth;

/// Every stage passed.
pub const EXIT_OK: i32 = 0;
/// Bad command line, unreadable or invalid file, unknown tunnel name.
pub const EXIT_USAGE: i32 = 2;
/// The exit status of the first stage (name resolution); stage n fails with `EXIT_STAGE + n - 1`.
pub const EXIT_STAGE: i32 = 10;

/// The time limit of a stage that has no other: connecting, a channel, a probe.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The stages, in order: (number, name in JSON, label in text).
pub const STAGES: [(u8, &str, &str); 8] = [
    (1, "resolve", "name resolution"),
    (2, "tcp", "tcp connect"),
    (3, "ssh-version", "ssh version"),
    (4, "kex", "key exchange"),
    (5, "host-key", "host key"),
    (6, "auth", "authentication"),
    (7, "channel", "channel"),
    (8, "database", "database"),
];

/// The help text of `forwarder check`.
pub fn usage() -> &'static str {
    "\
usage: forwarder check [--json] [--probe postgres|mysql|tcp] [options] -L port:host:hostport [user@]host
       forwarder check [--json] [--probe KIND] [options] -R port:host:hostport [user@]host
       forwarder check [--json] [--probe KIND] --config tunnels.toml [NAME...]
       (options of check itself: --json, --probe, --probe-user, --probe-password-file, --config)

Runs each stage of a tunnel once and prints one line per stage with its time, then a
verdict. A failing stage says what to do and for whom (the platform, the bastion's admin,
the DBA). The options are a tunnel's (-p, -l, -i, -o Key=Value, -L ...); with --config,
the tunnels of a fleet file (all, or those NAMEd). Nothing is listened on, and known_hosts
is read but never written.

  1 name resolution   the bastion's name
  2 tcp connect       to the bastion (ConnectTimeout, default 10 s)
  3 ssh version       the server's version line
  4 key exchange      the algorithms agreed
  5 host key          known, unknown or changed (with fingerprints)
  6 authentication    which key or method was accepted
                      Through jump hosts (-J, ProxyJump, a fleet's jump): stages 1 to 6
                      for the first jump host, then 2 (a channel through the hop before)
                      to 6 for each next one and the destination, each line naming its hop
  7 channel           a direct-tcpip channel to each forward's host:port; for -R, the
                      bastion asked to listen (and told to stop again at once)
  8 database          --probe postgres|mysql|tcp, or from the port (5432 and 5439:
                      postgres, 3306: mysql); skipped otherwise. For -R, the target
                      connected to (and probed) from here, where the tunnel connects

  --json              one JSON document: {\"target\", \"stages\": [{\"stage\", \"name\", \"ok\",
                      \"ms\", \"detail\", \"fix\"}], \"verdict\", \"exit_code\"}; \"ok\" is null
                      for a skipped stage. With --config: {\"tunnels\": [{\"name\", ...}],
                      \"exit_code\"}
  --probe KIND        what to expect behind every forward (overrides the file's probe)
  --config FILE       check the tunnels of a fleet file
  --probe-user USER, --probe-password-file FILE
                      log the mysql probe in (and quit), which MariaDB and MySQL do not
                      log; without them it reads the greeting and leaves

Exit status (the first stage that failed; with several tunnels, the lowest):
   0 every stage passed (skipped stages do not fail)
   2 bad command line or file
  10 name resolution    11 TCP connect        12 SSH version line (not an SSH server)
  13 key exchange       14 host key           15 authentication
  16 channel to the target                    17 the database's answer
"
}

/// One stage's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    /// 1 to 8.
    pub stage: u8,
    /// Its name (`resolve`, `tcp`, `ssh-version`, `kex`, `host-key`, `auth`, `channel`,
    /// `database`).
    pub name: &'static str,
    /// `true` passed, `false` failed, `None` (null) skipped.
    pub ok: Option<bool>,
    /// How long it took; null when skipped.
    pub ms: Option<u64>,
    /// What was found.
    pub detail: String,
    /// What to do, and who should, when it failed.
    pub fix: Option<String>,
}

/// One tunnel's check.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The tunnel's name in a fleet file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `user@host:port` and the forwards' targets.
    pub target: String,
    /// The stages in order.
    pub stages: Vec<StageReport>,
    /// One line.
    pub verdict: String,
    /// 0 or the exit status of the first failed stage.
    pub exit_code: i32,
}

#[derive(Serialize)]
struct FleetReport<'a> {
    tunnels: &'a [Report],
    exit_code: i32,
}

/// The options of `check` itself, and the rest (a tunnel's command line, or tunnel names).
#[derive(Debug, Default)]
struct CheckArgs {
    json: bool,
    probe: Option<ProbeKind>,
    config: Option<PathBuf>,
    probe_user: Option<String>,
    probe_password_file: Option<PathBuf>,
    help: bool,
    rest: Vec<String>,
}

fn parse_check_args(args: &[OsString]) -> Result<CheckArgs, String> {
    let mut out = CheckArgs::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a
            .clone()
            .into_string()
            .map_err(|_| "check: arguments must be UTF-8".to_owned())?;
        let value = |it: &mut std::slice::Iter<'_, OsString>, flag: &str| {
            it.next()
                .and_then(|v| v.clone().into_string().ok())
                .ok_or_else(|| format!("check: {flag} needs a value"))
        };
        match a.as_str() {
            "--json" => out.json = true,
            "--help" | "-h" => out.help = true,
            "--probe" => {
                let v = value(&mut it, "--probe")?;
                out.probe = Some(parse_probe(&v)?);
            }
            "--config" => out.config = Some(PathBuf::from(value(&mut it, "--config")?)),
            "--probe-user" => out.probe_user = Some(value(&mut it, "--probe-user")?),
            "--probe-password-file" => {
                out.probe_password_file =
                    Some(PathBuf::from(value(&mut it, "--probe-password-file")?));
            }
            _ if a.starts_with("--probe=") => {
                out.probe = Some(parse_probe(&a["--probe=".len()..])?);
            }
            _ if a.starts_with("--config=") => {
                out.config = Some(PathBuf::from(&a["--config=".len()..]));
            }
            _ => out.rest.push(a),
        }
    }
    if out.probe_password_file.is_some() && out.probe_user.is_none() {
        return Err("check: --probe-password-file needs --probe-user".into());
    }
    Ok(out)
}

fn parse_probe(v: &str) -> Result<ProbeKind, String> {
    match v.parse::<ProbeKind>() {
        Ok(ProbeKind::None) => Err("check: --probe none: leave --probe out instead".into()),
        Ok(k) => Ok(k),
        Err(e) => Err(format!("check: --probe: {e}")),
    }
}

/// What one tunnel's check needs.
struct Job {
    name: Option<String>,
    config: TunnelConfig,
    /// One per forward: its probe, or `None` for none.
    probes: Vec<Option<ProbeKind>>,
    /// The remote forwards (`-R`, a fleet's remote tunnel), each with its probe.
    remote: Vec<(RemoteSpec, Option<ProbeKind>)>,
    mysql_login: Option<probe::MysqlLogin>,
}

/// The probe a target implies: by its port, or by a Unix socket's file name as PostgreSQL
/// (`.s.PGSQL.5432`) and MySQL or MariaDB (`mysqld.sock`, `mysql.sock`) name theirs.
pub fn inferred_probe(target: &Destination) -> Option<ProbeKind> {
    match target {
        Destination::Tcp(t) => match t.port {
            5432 | 5439 => Some(ProbeKind::Postgres),
            3306 => Some(ProbeKind::Mysql),
            _ => None,
        },
        Destination::Socks => None,
        Destination::Unix(path) => {
            let name = path.rsplit('/').next().unwrap_or_default();
            if name.starts_with(".s.PGSQL.") {
                Some(ProbeKind::Postgres)
            } else if matches!(name, "mysqld.sock" | "mysql.sock") {
                Some(ProbeKind::Mysql)
            } else {
                None
            }
        }
    }
}

/// Runs `forwarder check ...` (the arguments after `check`); returns the exit status.
pub fn run(args: &[OsString]) -> i32 {
    let parsed = match parse_check_args(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("forwarder: {e}");
            return EXIT_USAGE;
        }
    };
    if parsed.help {
        print!("{}", usage());
        return EXIT_OK;
    }
    let jobs = match jobs(&parsed) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("forwarder: check: {e}");
            return EXIT_USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("forwarder: cannot start the async runtime: {e}");
            return crate::app::EXIT_FAILURE;
        }
    };
    let fleet = parsed.config.is_some();
    let reports = runtime.block_on(async {
        let mut out = Vec::new();
        for job in jobs {
            let report = check(job).await;
            if !parsed.json {
                print!("{}", render(&report));
            }
            out.push(report);
        }
        crate::kex_memory::settle().await;
        out
    });
    runtime.shutdown_background();
    let code = overall_exit_code(&reports);
    if parsed.json {
        let text = if fleet {
            serde_json::to_string_pretty(&FleetReport {
                tunnels: &reports,
                exit_code: code,
            })
        } else {
            serde_json::to_string_pretty(&reports[0])
        };
        match text {
            Ok(t) => println!("{t}"),
            Err(e) => eprintln!("forwarder: check: cannot write JSON: {e}"),
        }
    }
    code
}

/// The lowest failing stage's exit status, or 0.
pub fn overall_exit_code(reports: &[Report]) -> i32 {
    reports
        .iter()
        .map(|r| r.exit_code)
        .filter(|&c| c != EXIT_OK)
        .min()
        .unwrap_or(EXIT_OK)
}

fn jobs(args: &CheckArgs) -> Result<Vec<Job>, String> {
    let env = cli::Environment::from_process();
    if let Some(path) = &args.config {
        if let Some(flag) = args.rest.iter().find(|a| a.starts_with('-')) {
            return Err(format!(
                "{flag}: with --config only tunnel names may follow (the options are in the file)"
            ));
        }
        let fleet = crate::fleet::config::load(path, &env).map_err(|e| e.to_string())?;
        for name in &args.rest {
            if !fleet.tunnels.iter().any(|t| &t.name == name) {
                let names: Vec<&str> = fleet.tunnels.iter().map(|t| t.name.as_str()).collect();
                return Err(format!(
                    "no tunnel named {name:?} in {}; it has: {}",
                    path.display(),
                    names.join(", ")
                ));
            }
        }
        let mut out = Vec::new();
        for t in fleet.tunnels {
            if !args.rest.is_empty() && !args.rest.contains(&t.name) {
                continue;
            }
            let kind = args.probe.or(match t.probe {
                ProbeKind::None => None,
                k => Some(k),
            });
            let mysql_login = match (&t.probe_login, cli_login(args)?) {
                (_, Some(l)) => Some(l),
                (Some((user, file)), None) => Some(probe::MysqlLogin::read(user, file)?),
                (None, None) => None,
            };
            let mut config = t.config;
            let remote = match &t.kind {
                crate::fleet::config::TunnelKind::Remote(spec) => {
                    let kind = args.probe.or_else(|| inferred_probe(&spec.target));
                    vec![(spec.clone(), kind)]
                }
                crate::fleet::config::TunnelKind::Local => Vec::new(),
            };
            if config.session.connect_timeout.is_none() {
                config.session.connect_timeout = Some(DEFAULT_TIMEOUT);
            }
            out.push(Job {
                name: Some(t.name.clone()),
                probes: config.forwards.iter().map(|_| kind).collect(),
                remote,
                config,
                mysql_login,
            });
        }
        return Ok(out);
    }
    let opts = match cli::parse_args_with_env(args.rest.iter().map(String::as_str), &env) {
        Ok(Command::Run(o)) => o,
        Ok(Command::Help) => return Err("see forwarder check --help".into()),
        Ok(_) => return Err("check takes a tunnel's options and destination".into()),
        Err(e) => return Err(e.to_string()),
    };
    for w in &opts.warnings {
        eprintln!("forwarder: warning: {w}");
    }
    let mut config = TunnelConfig::from_options(&opts).map_err(|e| e.0)?;
    if opts.stdio_forward.is_some() {
        return Err("check tests -L forwards; -W is not checked".into());
    }
    if config.forwards.is_empty() && opts.remote_forwards.is_empty() {
        return Err("give at least one -L port:host:hostport (or -R) to check".into());
    }
    let remote = opts
        .remote_forwards
        .iter()
        .map(|f| {
            let spec = RemoteSpec::from_forward(f);
            let kind = args.probe.or_else(|| inferred_probe(&spec.target));
            (spec, kind)
        })
        .collect();
    if config.session.connect_timeout.is_none() {
        config.session.connect_timeout = Some(DEFAULT_TIMEOUT);
    }
    let probes = config
        .forwards
        .iter()
        .map(|f| args.probe.or_else(|| inferred_probe(&f.to)))
        .collect();
    Ok(vec![Job {
        name: None,
        config,
        probes,
        remote,
        mysql_login: cli_login(args)?,
    }])
}

/// The mysql probe's login from `--probe-user` and `--probe-password-file` (no password
/// without the file).
fn cli_login(args: &CheckArgs) -> Result<Option<probe::MysqlLogin>, String> {
    match (&args.probe_user, &args.probe_password_file) {
        (Some(user), Some(file)) => probe::MysqlLogin::read(user, file).map(Some),
        (Some(user), None) => Ok(Some(probe::MysqlLogin {
            user: user.clone(),
            password: zeroize::Zeroizing::new(String::new()),
        })),
        (None, _) => Ok(None),
    }
}

// ---------------------------------------------------------------------------------------------
// The stages.

/// Collects stage reports; after the first failure every later stage is skipped.
struct Stages {
    list: Vec<StageReport>,
    failed: Option<u8>,
    /// Put before every detail: which jump host stages 1 to 6 are about (empty for the
    /// destination).
    prefix: String,
}

impl Stages {
    fn pass(&mut self, stage: u8, took: Option<Duration>, detail: impl Into<String>) {
        self.push(stage, Some(true), took, detail.into(), None);
    }

    fn fail(&mut self, stage: u8, took: Option<Duration>, detail: impl Into<String>, fix: String) {
        self.failed.get_or_insert(stage);
        self.push(stage, Some(false), took, detail.into(), Some(fix));
    }

    fn skip(&mut self, stage: u8, detail: impl Into<String>) {
        self.push(stage, None, None, detail.into(), None);
    }

    fn push(
        &mut self,
        stage: u8,
        ok: Option<bool>,
        took: Option<Duration>,
        detail: String,
        fix: Option<String>,
    ) {
        let name = STAGES[usize::from(stage - 1)].1;
        let detail = if self.prefix.is_empty() {
            detail
        } else {
            format!("{}{detail}", self.prefix)
        };
        self.list.push(StageReport {
            stage,
            name,
            ok,
            ms: took.map(|d| d.as_millis() as u64),
            detail,
            fix,
        });
    }

    /// Skips `stages` (in order) because an earlier one failed.
    fn skip_rest(&mut self, stages: impl IntoIterator<Item = u8>) {
        for s in stages {
            self.skip(s, "not run: an earlier stage failed");
        }
    }
}

/// What the host key check saw, for stage 5.
#[derive(Debug, Clone)]
enum HostKeySeen {
    Known {
        key: String,
        file: PathBuf,
        line: usize,
    },
    /// A host certificate whose authority a `@cert-authority` line lists: `accepted` is
    /// [`HostKeyStatus::CertificateAccepted`].
    Certificate {
        key: String,
        accepted: HostKeyStatus,
    },
    /// Accepted without being known (`accept-new` or `no`); not recorded by check.
    Unknown {
        key: String,
        accepted: bool,
        why: String,
    },
    Changed {
        key: String,
        why: String,
    },
    Revoked {
        why: String,
    },
    /// Revoked by a RevokedHostKeys file.
    RevokedByList {
        why: String,
        file: PathBuf,
    },
}

/// A verifier that decides as a tunnel's does, records what it saw, and writes nothing.
struct RecordingVerifier {
    known: KnownHosts,
    /// `KnownHostsCommand`, run with the presented key before it is judged.
    command: Option<crate::connect::CommandCheck>,
    /// The RevokedHostKeys files, consulted first, as the tunnel's verifier does.
    revoked: known_hosts::RevokedHostKeys,
    host: String,
    port: u16,
    /// The name a host certificate must name.
    principal: String,
    policy: cli::StrictHostKeyChecking,
    /// The known_hosts lines that were skipped as unreadable, shown with an unknown key: a
    /// line pasted broken is often why a key the admin thinks was added is not known.
    skipped: Vec<known_hosts::Warning>,
    /// What it saw, and how long the lookup took.
    seen: Mutex<Option<(HostKeySeen, Duration)>>,
}

impl HostKeyVerifier for RecordingVerifier {
    fn verify(&self, key: &PublicKey) -> Result<(), String> {
        self.verify_presented(key, None)
    }

    fn verify_later(
        self: Arc<Self>,
        key: &PublicKey,
        certificate: Option<&ssh_transport::cert::Certificate>,
    ) -> Option<driver::VerdictFuture> {
        crate::connect::verify_with_command(
            self,
            |v| Some((v.command.as_ref()?, &v.known)),
            key,
            certificate,
        )
    }

    fn verify_presented(
        &self,
        key: &PublicKey,
        certificate: Option<&ssh_transport::cert::Certificate>,
    ) -> Result<(), String> {
        let started = Instant::now();
        if let Some(revocation) = self.revoked.check(key, certificate) {
            let why = revocation.refusal(&self.host, self.port, key, certificate);
            let seen = HostKeySeen::RevokedByList {
                why: why.clone(),
                file: revocation.file,
            };
            if let Ok(mut s) = self.seen.lock() {
                *s = Some((seen, started.elapsed()));
            }
            return Err(why);
        }
        let mut described = format!("{} {}", key.key_type().name(), key.fingerprint());
        let known = match &self.command {
            Some(c) => c.known(&self.known),
            None => &self.known,
        };
        let status = crate::connect::look_up(
            known,
            &self.host,
            self.port,
            &self.principal,
            key,
            certificate,
        );
        if matches!(status, HostKeyStatus::CertificateAccepted { .. }) {
            let seen = HostKeySeen::Certificate {
                key: format!(
                    "{} {}",
                    certificate.map_or(key.key_type().name(), |c| c.type_name()),
                    key.fingerprint()
                ),
                accepted: status,
            };
            if let Ok(mut s) = self.seen.lock() {
                *s = Some((seen, started.elapsed()));
            }
            return Ok(());
        }
        if let HostKeyStatus::CertificateRefused { why, .. } = &status {
            described.push_str(&format!(
                " (the key of a host certificate that was not accepted: {why})"
            ));
        }
        let known_at = match status.plain() {
            HostKeyStatus::Known { file, line } => Some((file.clone(), *line)),
            _ => None,
        };
        let changed = matches!(status.plain(), HostKeyStatus::Changed { .. });
        let revoked = matches!(
            status.plain(),
            HostKeyStatus::Revoked { .. } | HostKeyStatus::CertificateRevoked { .. }
        );
        let decision = known_hosts::decide(status, self.policy, &self.host, self.port, key, None);
        let (seen, result) = match decision {
            Decision::Trusted | Decision::TrustAndRecord { .. } => match known_at {
                Some((file, line)) => (
                    HostKeySeen::Known {
                        key: described,
                        file,
                        line,
                    },
                    Ok(()),
                ),
                None => (
                    HostKeySeen::Unknown {
                        key: described,
                        accepted: true,
                        why: format!(
                            "not in known_hosts; accepted under StrictHostKeyChecking={} \
                             (check records nothing)",
                            policy_name(self.policy)
                        ),
                    },
                    Ok(()),
                ),
            },
            Decision::Refused(e) => {
                let why = e.to_string();
                let seen = if revoked {
                    HostKeySeen::Revoked { why: why.clone() }
                } else if changed {
                    HostKeySeen::Changed {
                        key: described,
                        why: why.clone(),
                    }
                } else {
                    let mut shown = why.clone();
                    if !self.skipped.is_empty() {
                        let lines: Vec<String> = self
                            .skipped
                            .iter()
                            .take(5)
                            .map(ToString::to_string)
                            .collect();
                        shown.push_str(&format!(
                            "; {} known_hosts line(s) were skipped as unreadable (the host's \
                             line may be one of them): {}",
                            self.skipped.len(),
                            lines.join("; ")
                        ));
                    }
                    HostKeySeen::Unknown {
                        key: described,
                        accepted: false,
                        why: shown,
                    }
                };
                (seen, Err(why))
            }
        };
        if let Ok(mut s) = self.seen.lock() {
            *s = Some((seen, started.elapsed()));
        }
        result
    }
}

fn policy_name(p: cli::StrictHostKeyChecking) -> &'static str {
    match p {
        cli::StrictHostKeyChecking::Yes => "yes",
        cli::StrictHostKeyChecking::AcceptNew => "accept-new",
        cli::StrictHostKeyChecking::No => "no",
    }
}

fn target_label(fwd: &ForwardSpec) -> String {
    match fwd.to {
        Destination::Socks => format!("-D {}", fwd.listen),
        _ => fwd.to.to_string(),
    }
}

/// Runs one tunnel's stages.
async fn check(job: Job) -> Report {
    let spec = &job.config.session;
    let mut target = spec.label();
    let targets: Vec<String> = job
        .config
        .forwards
        .iter()
        .map(target_label)
        .chain(
            job.remote
                .iter()
                .map(|(r, _)| format!("bastion {} -> {} here", r.label(), r.target)),
        )
        .collect();
    if !targets.is_empty() {
        target.push_str(" -> ");
        target.push_str(&targets.join(", "));
    }
    let mut st = Stages {
        list: Vec::new(),
        failed: None,
        prefix: String::new(),
    };
    run_stages(&job, &mut st).await;
    let exit_code = st.failed.map_or(EXIT_OK, |s| EXIT_STAGE + i32::from(s) - 1);
    let verdict = match st.failed {
        None => {
            let skipped = st.list.iter().filter(|s| s.ok.is_none()).count();
            if skipped == 0 {
                "PASS: every stage passed".to_owned()
            } else {
                format!("PASS: every stage run passed ({skipped} skipped)")
            }
        }
        Some(s) => format!(
            "FAIL at stage {s} ({}): exit status {exit_code}",
            STAGES[usize::from(s - 1)].2
        ),
    };
    Report {
        name: job.name,
        target,
        stages: st.list,
        verdict,
        exit_code,
    }
}

/// One SSH server of the path, with what its stages' details start with.
struct Hop<'a> {
    at: crate::config::HopSpec<'a>,
    /// `jump host user@host:port: ` for a jump host; empty for the destination.
    prefix: String,
}

/// The servers of `spec`'s path, the first jump host first, the destination last.
fn hops(spec: &crate::config::SessionSpec) -> Vec<Hop<'_>> {
    spec.hops()
        .into_iter()
        .map(|at| Hop {
            prefix: at
                .jump
                .map_or_else(String::new, |j| format!("jump host {j}: ")),
            at,
        })
        .collect()
}

async fn run_stages(job: &Job, st: &mut Stages) {
    let spec = &job.config.session;
    let hops = hops(spec);
    let Some(first) = hops.first() else {
        return;
    };
    st.prefix.clone_from(&first.prefix);
    let host = first.at.host;
    let port = first.at.port;
    let timeout = spec.connect_timeout.unwrap_or(DEFAULT_TIMEOUT);
    // The forwards' stages are not about a jump host: no prefix.
    let per_forward_rest = |st: &mut Stages| {
        st.prefix.clear();
        for _ in 0..job.config.forwards.len() + job.remote.len() {
            st.skip_rest([7, 8]);
        }
    };

    // 1. Name resolution.
    let started = Instant::now();
    let resolved = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await;
    let took = started.elapsed();
    let addrs: Vec<SocketAddr> = match resolved {
        Ok(Ok(a)) => a
            .filter(|a| match spec.address_family {
                cli::AddressFamily::Any => true,
                cli::AddressFamily::Inet => a.is_ipv4(),
                cli::AddressFamily::Inet6 => a.is_ipv6(),
            })
            .collect(),
        Ok(Err(e)) => {
            st.fail(
                1,
                Some(took),
                format!("could not resolve {host}: {e}"),
                format!(
                    "platform: the bastion's name {host} does not resolve from here; check its \
                     spelling, and that this machine's DNS can see it (a name only the \
                     customer's network knows needs a public name or an address)"
                ),
            );
            st.skip_rest(2..=6);
            per_forward_rest(st);
            return;
        }
        Err(_) => {
            st.fail(
                1,
                Some(took),
                format!("resolving {host} took more than {} s", timeout.as_secs()),
                "platform: this machine's DNS did not answer in time; check its resolver"
                    .to_owned(),
            );
            st.skip_rest(2..=6);
            per_forward_rest(st);
            return;
        }
    };
    if addrs.is_empty() {
        st.fail(
            1,
            Some(took),
            format!("{host} has no address of the requested family"),
            "platform: drop -4/-6, or use a name with an address of that family".to_owned(),
        );
        st.skip_rest(2..=6);
        per_forward_rest(st);
        return;
    }
    let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    st.pass(1, Some(took), format!("{host} -> {}", list.join(", ")));

    // 2. TCP connect, from BindAddress or BindInterface if set.
    let started = Instant::now();
    let options = first.at.options;
    let from = match tokio::time::timeout(timeout, crate::connect::Origin::of(options)).await {
        Ok(Ok(from)) => from,
        unusable => {
            let detail = match unusable {
                Ok(Err(e)) => e.to_string(),
                _ => format!(
                    "resolving BindAddress {} took more than {} s",
                    options.bind_address.as_deref().unwrap_or_default(),
                    timeout.as_secs()
                ),
            };
            st.fail(2, Some(started.elapsed()), detail, origin_fix(options));
            st.skip_rest(3..=6);
            per_forward_rest(st);
            return;
        }
    };
    let mut stream = None;
    let mut errors = Vec::new();
    for a in &addrs {
        let left = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, crate::connect::tcp_connect(*a, &from)).await {
            Ok(Ok(s)) => {
                stream = Some((s, *a));
                break;
            }
            Ok(Err(e)) => errors.push((*a, Some(e))),
            Err(_) => {
                errors.push((*a, None));
                break;
            }
        }
    }
    let took = started.elapsed();
    let Some((stream, addr)) = stream else {
        let detail: Vec<String> = errors
            .iter()
            .map(|(a, e)| match e {
                Some(e) => format!("{a}: {e}"),
                None => format!("{a}: no answer within {} s", timeout.as_secs()),
            })
            .collect();
        let refused = errors.iter().any(|(_, e)| {
            e.as_ref()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        let unbound = errors.iter().any(|(_, e)| {
            e.as_ref()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::AddrNotAvailable)
        });
        let fix = if unbound && from.is_set() {
            origin_fix(options)
        } else if refused {
            format!(
                "nothing listens on port {port} at {host}: platform: check the port (-p); \
                 bastion admin: check that sshd runs and listens there (sshd_config Port, \
                 ListenAddress)"
            )
        } else {
            format!(
                "no answer from {host} port {port}: bastion admin: a firewall or security \
                 group drops the connection; allow this platform's address to reach port \
                 {port}; platform: check the address and port"
            )
        };
        st.fail(2, Some(took), detail.join("; "), fix);
        st.skip_rest(3..=6);
        per_forward_rest(st);
        return;
    };
    let _ = stream.set_nodelay(true);
    let detail = match (from.is_set(), stream.local_addr()) {
        (true, Ok(local)) => match (&options.bind_address, &options.bind_interface) {
            (None, Some(interface)) => format!("{addr} from {} ({interface})", local.ip()),
            _ => format!("{addr} from {}", local.ip()),
        },
        _ => addr.to_string(),
    };
    st.pass(2, Some(took), detail);

    // 3 to 6: the handshake, with each hop after the first over a channel of the one before
    // (stage 2 of that hop).
    let mut sessions: Vec<(driver::SessionHandle, tokio::task::JoinHandle<_>)> = Vec::new();
    let permit = |i: usize| -> Permits {
        match hops.get(i + 1) {
            Some(next) => Permits {
                open: vec![permit_spec(next.at.host, u32::from(next.at.port))],
                listen: Vec::new(),
            },
            None => Permits::of(job),
        }
    };
    match handshake(first, &permit(0), stream, st).await {
        Some(s) => sessions.push(s),
        None => per_forward_rest(st),
    }
    for (i, hop) in hops.iter().enumerate().skip(1) {
        let Some((last, _)) = sessions.last() else {
            break;
        };
        let before = hops.get(i - 1).map_or("", |h| h.at.host);
        st.prefix.clone_from(&hop.prefix);
        let started = Instant::now();
        let opened = tokio::time::timeout(
            timeout,
            last.open_direct_tcpip(hop.at.host, hop.at.port, "127.0.0.1", 0),
        )
        .await;
        let took = started.elapsed();
        // No channel to this hop: its stage 2 fails, the rest of its stages and the
        // forwards' are skipped.
        let no_channel = |st: &mut Stages, detail: String, fix: String| {
            st.fail(2, Some(took), detail, fix);
            st.skip_rest(3..=6);
            per_forward_rest(st);
        };
        let channel = match opened {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                no_channel(
                    st,
                    format!("through {before}: {e}"),
                    format!(
                        "jump host admin: {before} did not connect to {}:{}: its sshd must let \
                         the login forward there (AllowTcpForwarding yes or local, PermitOpen, \
                         the key's permitopen), and reach that address",
                        hop.at.host, hop.at.port
                    ),
                );
                break;
            }
            Err(_) => {
                no_channel(
                    st,
                    format!("through {before}: no answer within {} s", timeout.as_secs()),
                    format!(
                        "jump host admin: {before} is still trying to reach {}:{}: a firewall \
                         between them drops the packets",
                        hop.at.host, hop.at.port
                    ),
                );
                break;
            }
        };
        st.pass(
            2,
            Some(took),
            format!("{}:{} through {before}", hop.at.host, hop.at.port),
        );
        match handshake(hop, &permit(i), channel, st).await {
            Some(s) => sessions.push(s),
            None => {
                per_forward_rest(st);
                break;
            }
        }
    }
    st.prefix.clear();
    // The forwards are checked only when every hop came up; the hops that did are told
    // goodbye either way.
    if sessions.len() == hops.len()
        && let Some((handle, _)) = sessions.last()
    {
        channels(job, st, handle).await;
    }
    for (handle, task) in sessions.into_iter().rev() {
        handle.disconnect("forwarder check finished");
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
}

/// Stages 3 to 6 with `hop` over `stream`: its session once it has let us in, else `None`
/// (the failure reported, stages 7 and 8 left to the caller).
async fn handshake<S>(
    hop: &Hop<'_>,
    permit: &Permits,
    stream: S,
    st: &mut Stages,
) -> Option<(
    driver::SessionHandle,
    tokio::task::JoinHandle<Result<(), SessionError>>,
)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let opts = hop.at.options;
    // The files the tunnel reads: the user's and the global ones.
    let (known, skipped) = match KnownHosts::load(&opts.known_hosts_files()) {
        Ok(k) => k,
        Err(e) => {
            // The handshake is not started without the files its host key check needs.
            for s in [3, 4] {
                st.skip(s, "not run: known_hosts cannot be read (stage 5)");
            }
            st.fail(
                5,
                None,
                format!("cannot read known_hosts: {e}"),
                "platform: fix UserKnownHostsFile or GlobalKnownHostsFile".to_owned(),
            );
            st.skip_rest([6]);
            return None;
        }
    };
    let revoked = match known_hosts::RevokedHostKeys::load(&opts.revoked_host_keys) {
        Ok(r) => r,
        Err(e) => {
            // The tunnel would not start its handshake without them either.
            for s in [3, 4] {
                st.skip(
                    s,
                    "not run: a RevokedHostKeys file cannot be read (stage 5)",
                );
            }
            st.fail(
                5,
                None,
                e.to_string(),
                "platform: make the RevokedHostKeys file readable (a KRL from ssh-keygen -k, \
                 or public keys one per line), or remove it from RevokedHostKeys; until then \
                 no connection is made"
                    .to_owned(),
            );
            st.skip_rest([6]);
            return None;
        }
    };
    // Under HostKeyAlias when one is set, as the tunnel looks it up.
    let (key_host, key_port) = crate::connect::known_hosts_name(opts, hop.at.host, hop.at.port);
    let order = match crate::connect::order_lines(opts, key_host, key_port).await {
        Ok(order) => order,
        Err(why) => {
            for s in [3, 4] {
                st.skip(s, "not run: KnownHostsCommand failed (stage 5)");
            }
            st.fail(5, None, why, KNOWN_HOSTS_COMMAND_FIX.to_owned());
            st.skip_rest([6]);
            return None;
        }
    };
    let for_order = crate::connect::known_for_order(&known, order.as_deref());
    let (transport, known_types) =
        crate::connect::host_key_order(hop.at.transport, &for_order, opts, key_host, key_port);
    // The guessed first key exchange message the tunnel sends to a bastion it has seen, so
    // that a pass covers that path too; and what this run learns is kept for the tunnel.
    let transport = crate::kex_memory::prepare(
        transport,
        key_host,
        key_port,
        &known_types,
        opts.kex_guess_file.as_deref(),
    );
    let our_version = transport.version.clone();
    let handshake_limit = transport
        .handshake_timeout
        .unwrap_or(crate::config::DEFAULT_HANDSHAKE_TIMEOUT);
    let now = crate::connect::unix_now();
    let (password, passphrase) = userauth::secret_sources(opts);
    let prepared = userauth::prepare(opts, &passphrase, now).await;
    let helper = Arc::new(userauth::Helper::new(opts, &prepared, password, passphrase));
    let auth = match userauth::auth_config(opts, prepared.identities.clone(), now) {
        Ok(mut a) => {
            // The hop's own login (a jump host's `user@` or its block's User).
            hop.at.user.clone_into(&mut a.user);
            a
        }
        Err(e) => {
            for s in 3..=5 {
                st.skip(s, "not run: the identity options are wrong (stage 6)");
            }
            st.fail(6, None, e, "platform: fix the identity options".to_owned());
            return None;
        }
    };
    let verifier = Arc::new(RecordingVerifier {
        command: crate::connect::CommandCheck::new(opts, key_host, key_port),
        known,
        revoked,
        host: key_host.to_owned(),
        port: key_port,
        principal: crate::connect::certificate_principal(opts, key_host),
        policy: opts.strict_host_key_checking,
        skipped,
        seen: Mutex::new(None),
    });
    let session = Session::new(
        SessionConfig {
            transport,
            connection: ssh_connection::Config::default(),
            auth,
            server_alive: None,
        },
        Box::new(OsRandom),
        Instant::now(),
    );
    let (handle, driver) = driver::start_with_auth(stream, session, verifier.clone(), helper);
    crate::kex_memory::watch(
        handle.clone(),
        key_host.to_owned(),
        key_port,
        hop.at
            .transport
            .kex_algorithms
            .iter()
            .map(|k| k.name())
            .collect(),
        opts.kex_guess_file.clone(),
    );
    let started = Instant::now();
    let driver_task = tokio::spawn(driver);
    let result = match tokio::time::timeout(
        handshake_limit + Duration::from_secs(5),
        handle.authenticated(),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(SessionError::Transport(
            ssh_transport::Error::HandshakeTimeout(handshake_limit),
        )),
    };
    let log = handle.log();
    let (seen, host_key_took) = match verifier.seen.lock().ok().and_then(|s| s.clone()) {
        Some((seen, took)) => (Some(seen), Some(took)),
        None => (None, None),
    };
    let took = started.elapsed();
    let ok = report_handshake(
        hop,
        permit,
        st,
        &log,
        (seen, host_key_took),
        &our_version,
        result,
        &prepared,
        took,
    );
    if ok {
        return Some((handle, driver_task));
    }
    handle.disconnect("forwarder check finished");
    let _ = tokio::time::timeout(Duration::from_secs(2), driver_task).await;
    None
}

/// What to do when `KnownHostsCommand` fails.
const KNOWN_HOSTS_COMMAND_FIX: &str = "platform: fix KnownHostsCommand: run it by hand with the \
     arguments shown; it must exit 0 and print known_hosts lines (`host keytype base64`) for the \
     host, or nothing when it has none (then the key is unknown)";

/// Reports stages 3 to 6 from how far the handshake got; returns whether it got through.
#[allow(clippy::too_many_arguments)]
fn report_handshake(
    hop: &Hop<'_>,
    permit: &Permits,
    st: &mut Stages,
    log: &SessionLog,
    (seen, host_key_took): (Option<HostKeySeen>, Option<Duration>),
    our_version: &str,
    result: Result<(), SessionError>,
    prepared: &userauth::Prepared,
    total: Duration,
) -> bool {
    use ssh_transport::Error as T;
    let (host, port) = (hop.at.host, hop.at.port);
    let err = result.err();
    let not_ssh_fix = format!(
        "platform: {host} port {port} is not an SSH server; check the port (-p) with the \
         bastion's admin (sshd_config Port)"
    );

    // 3. The version line.
    let echoed = log.server_version.as_deref() == Some(our_version);
    match (&log.server_version, &err) {
        (Some(_), _) if echoed => {
            st.fail(
                3,
                log.version_time,
                "the server sent our own version line back: an echo service, not an SSH server",
                not_ssh_fix,
            );
            st.skip_rest(4..=6);
            return false;
        }
        (Some(v), _) => st.pass(3, log.version_time, sanitize(v)),
        (None, Some(e)) => {
            let detail = match e {
                SessionError::Transport(T::Version(v)) => v.to_string(),
                SessionError::Transport(T::ConnectionLost) => {
                    "the server closed the connection without sending an SSH version line"
                        .to_owned()
                }
                SessionError::Transport(T::HandshakeTimeout(d)) => format!(
                    "no SSH version line within {} s: the server is silent (not an SSH server, \
                     or one that waits for the client to speak)",
                    d.as_secs()
                ),
                e => e.to_string(),
            };
            let fix = match e {
                SessionError::Transport(T::ConnectionLost) => format!(
                    "{not_ssh_fix}; if it is sshd, it dropped the connection at once: \
                     bastion admin: check MaxStartups, PerSourcePenalties and any TCP \
                     wrapper or firewall rule for this platform's address"
                ),
                _ => not_ssh_fix,
            };
            st.fail(3, Some(total), detail, fix);
            st.skip_rest(4..=6);
            return false;
        }
        (None, None) => st.pass(3, None, "(version line not recorded)"),
    }

    // 4. Key exchange. A host key refusal happens inside it, but is stage 5.
    let host_key_error = matches!(
        &err,
        Some(
            SessionError::Transport(
                T::HostKey(_) | T::HostKeyRejected(_) | T::HostKeyChangedInRekey { .. }
            ) | SessionError::HostKeyUnchecked(_)
        )
    );
    if log.kex_time.is_none() && !host_key_error {
        let e = err.as_ref().map_or_else(
            || "the key exchange did not complete".to_owned(),
            ToString::to_string,
        );
        let fix = match &err {
            Some(SessionError::Transport(T::NoCommonAlgorithm(_))) => {
                "bastion admin and platform: no algorithm in common; enable a modern \
                 algorithm on the bastion (an OpenSSH older than 7.4 should be upgraded), or \
                 name one the bastion offers with -o KexAlgorithms=/Ciphers=/MACs=/\
                 HostKeyAlgorithms= (forwarder -Q lists what is supported)"
                    .to_owned()
            }
            _ => "bastion admin: the server failed the key exchange; its log (sshd -d or \
                  journalctl -u ssh) says why"
                .to_owned(),
        };
        let since = log.version_time.unwrap_or_default();
        st.fail(4, Some(total.saturating_sub(since)), e, fix);
        st.skip_rest(5..=6);
        return false;
    }
    if host_key_error {
        // Negotiation agreed on algorithms even though the key was refused.
        st.pass(
            4,
            None,
            "algorithms agreed (the exchange stopped at the host key)",
        );
    } else {
        let mut detail = log.algorithms.clone().unwrap_or_default();
        match log.kex_guess {
            Some(true) => detail.push_str("; first message guessed right (KexGuessFile)"),
            Some(false) => detail.push_str(
                "; first message guessed wrong (KexGuessFile): one round trip lost, the \
                 next run guesses from this one",
            ),
            None => {}
        }
        st.pass(
            4,
            log.kex_time
                .map(|k| k.saturating_sub(log.version_time.unwrap_or_default())),
            detail,
        );
    }

    // 5. Host key.
    if let Some(SessionError::HostKeyUnchecked(why)) = &err {
        st.fail(
            5,
            host_key_took,
            why.clone(),
            KNOWN_HOSTS_COMMAND_FIX.to_owned(),
        );
        st.skip_rest([6]);
        return false;
    }
    match (&seen, host_key_error) {
        (Some(HostKeySeen::Known { key, file, line }), false) => st.pass(
            5,
            host_key_took,
            format!("{key}, known ({}:{line})", file.display()),
        ),
        (
            Some(HostKeySeen::Certificate {
                key,
                accepted:
                    HostKeyStatus::CertificateAccepted {
                        file,
                        line,
                        ca_fingerprint,
                        key_id,
                        serial,
                        valid_before,
                    },
            }),
            false,
        ) => st.pass(
            5,
            host_key_took,
            format!(
                "{key}, trusted through its host certificate: signed by CA {ca_fingerprint} \
                 (@cert-authority at {}:{line}), key id {key_id:?}, serial {serial}, valid {}",
                file.display(),
                ssh_transport::cert::describe_validity(0, *valid_before)
            ),
        ),
        (
            Some(HostKeySeen::Unknown {
                key,
                accepted: true,
                why,
            }),
            false,
        ) => st.pass(5, host_key_took, format!("{key}: {why}")),
        (Some(HostKeySeen::Changed { key, why }), _) => {
            st.fail(
                5,
                host_key_took,
                format!("CHANGED: the server offers {key}; {why}"),
                format!(
                    "bastion admin: confirm whether {host}'s host key was changed and send its \
                     fingerprint; platform: if it was, replace the known_hosts line (never \
                     accept a changed key without that confirmation: it may be an attack)"
                ),
            );
            st.skip_rest([6]);
            return false;
        }
        (Some(HostKeySeen::Unknown { key, why, .. }), _) => {
            st.fail(
                5,
                host_key_took,
                format!("unknown: {key}; {why}"),
                format!(
                    "platform: ask the bastion's admin for the host key's fingerprint (on the \
                     bastion: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub); if it matches \
                     {key}, add the key to known_hosts (or connect once with \
                     -o StrictHostKeyChecking=accept-new)"
                ),
            );
            st.skip_rest([6]);
            return false;
        }
        (Some(HostKeySeen::RevokedByList { why, file }), _) => {
            st.fail(
                5,
                host_key_took,
                why.clone(),
                format!(
                    "bastion admin: the host key is revoked by the list {} (RevokedHostKeys); \
                     install a new host key (or certificate) and send its fingerprint; \
                     platform: if the revocation is a mistake, have whoever keeps that list \
                     correct it",
                    file.display()
                ),
            );
            st.skip_rest([6]);
            return false;
        }
        (Some(HostKeySeen::Revoked { why }), _) => {
            st.fail(
                5,
                host_key_took,
                why.clone(),
                "bastion admin: the key is marked revoked; install a new host key and send \
                 its fingerprint"
                    .to_owned(),
            );
            st.skip_rest([6]);
            return false;
        }
        (_, true) => {
            st.fail(
                5,
                host_key_took,
                err.as_ref().map(ToString::to_string).unwrap_or_default(),
                "bastion admin: the server's host key or its signature is not acceptable; \
                 check the host key files"
                    .to_owned(),
            );
            st.skip_rest([6]);
            return false;
        }
        (_, false) => st.pass(
            5,
            host_key_took,
            log.host_key.clone().unwrap_or_else(|| "accepted".into()),
        ),
    }

    // 6. Authentication.
    let auth_took = Some(
        log.auth_time
            .unwrap_or(total)
            .saturating_sub(log.kex_time.unwrap_or_default()),
    );
    match err {
        None => {
            st.pass(
                6,
                auth_took,
                format!(
                    "as {}: {}",
                    hop.at.user,
                    log.auth_attempt.as_deref().unwrap_or("accepted")
                ),
            );
            true
        }
        Some(SessionError::Auth(AuthError::Refused(refusal))) => {
            let mut refusal = refusal.clone();
            refusal.unusable = prepared.unusable.clone();
            let (detail, fix) = auth_fix(permit, &refusal, prepared);
            st.fail(6, auth_took, format!("{detail}: {refusal}"), fix);
            false
        }
        Some(e) => {
            let fix = format!(
                "bastion admin: sshd ended the login of {:?}; its log says why (a disconnect \
                 during authentication is often MaxAuthTries: give one key with -i and \
                 -o IdentitiesOnly=yes)",
                hop.at.user
            );
            st.fail(6, auth_took, e.to_string(), fix);
            false
        }
    }
}

/// What the authorized_keys line a refused login gets lets the key do: the `permitopen`
/// and `permitlisten` values.
struct Permits {
    open: Vec<String>,
    listen: Vec<String>,
}

impl Permits {
    /// What `job`'s forwards need at the destination: a `permitopen` per local forward's
    /// `host:port` (none at all, so any, when one goes to a Unix socket, which no
    /// `permitopen` can name and any list refuses; one that matches nothing when there is no
    /// local forward), and a `permitlisten` per remote forward on a TCP port (sockets have
    /// no per-key option).
    fn of(job: &Job) -> Self {
        let forwards = &job.config.forwards;
        let open = if forwards.is_empty() {
            vec![crate::keygen::PERMIT_NOTHING.to_owned()]
        } else if forwards
            .iter()
            .any(|f| matches!(f.to, Destination::Unix(_) | Destination::Socks))
        {
            Vec::new()
        } else {
            forwards
                .iter()
                .filter_map(|f| match &f.to {
                    Destination::Tcp(t) => Some(permit_spec(&t.host, u32::from(t.port))),
                    Destination::Unix(_) | Destination::Socks => None,
                })
                .collect()
        };
        let listen = job
            .remote
            .iter()
            .filter_map(|(r, _)| match &r.listen {
                ssh_connection::ForwardListen::Tcp { address, port } => {
                    let host = if address.is_empty() { "*" } else { address };
                    Some(match port {
                        // The server picks: any port (sshd compares the port asked for).
                        0 => format!("{}:*", bracketed(host)),
                        p => permit_spec(host, *p),
                    })
                }
                ssh_connection::ForwardListen::Unix { .. } => None,
            })
            .collect();
        Self { open, listen }
    }
}

/// `host` in brackets when it has a `:` (an IPv6 address).
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// `host:port` as authorized_keys options write it.
fn permit_spec(host: &str, port: u32) -> String {
    format!("{}:{port}", bracketed(host))
}

/// The summary and the fix for a refused login.
fn auth_fix(
    permit: &Permits,
    refusal: &ssh_auth::Refusal,
    prepared: &userauth::Prepared,
) -> (String, String) {
    let user = &refusal.user;
    let tried: Vec<&ssh_auth::KeyReport> = refusal
        .keys
        .iter()
        .filter(|k| !k.refused_with.is_empty() || k.accepted_with.is_some())
        .collect();
    let key = tried
        .first()
        .and_then(|k| {
            prepared
                .identities
                .iter()
                .find(|i| i.fingerprint() == k.fingerprint)
        })
        .or_else(|| prepared.identities.first());
    let cannot_tell = format!(
        "a user that does not exist or may not log in cannot be told apart from a refused \
         key (sshd answers the same), so the bastion admin should also check that the account exists, that AllowUsers / \
         AllowGroups / DenyUsers let it in, that its shell is not a nologin shell, and that \
         ~{user}/.ssh and authorized_keys are owned by {user} and not writable by others \
         (StrictModes)"
    );
    // A key (or password) accepted as one step of several: the key is authorized, and what
    // is missing is a second factor the tunnel cannot give unattended.
    let step = refusal
        .keys
        .iter()
        .find(|k| k.accepted_with.is_some())
        .map(|k| format!("key {}", k.fingerprint))
        .or_else(|| {
            refusal
                .methods
                .iter()
                .find(|m| m.accepted)
                .map(|m| m.method.to_owned())
        });
    let allows = refusal.server_allows.as_deref().unwrap_or("?");
    if let Some(step) = step {
        return (
            format!(
                "the bastion accepted {step} for user {user:?} as one step, then asked for \
                 more ({allows})"
            ),
            format!(
                "bastion admin: a tunnel logs in unattended with its key alone, so let \
                 {user} in with the key by itself: in sshd_config, `Match User {user}` then \
                 `AuthenticationMethods publickey` (sshd now requires several methods in \
                 turn, AuthenticationMethods)"
            ),
        );
    }
    // The server does not take keys from this user at all.
    if refusal
        .server_allows
        .as_deref()
        .is_some_and(|m| !m.split(',').any(|m| m == "publickey"))
    {
        return (
            format!("the bastion does not accept keys for user {user:?} (it allows: {allows})"),
            format!(
                "bastion admin: allow public-key login for {user}: PubkeyAuthentication yes, \
                 and publickey in AuthenticationMethods if that is set (in sshd_config, or in \
                 the Match block that applies to {user})"
            ),
        );
    }
    // Keys were there, but none reached the server: each one's reason is in the detail.
    if tried.is_empty() && !refusal.keys.is_empty() {
        let reasons: Vec<String> = refusal
            .keys
            .iter()
            .filter_map(|k| Some(format!("{}: {}", k.fingerprint, k.skipped.as_ref()?)))
            .collect();
        if !reasons.is_empty() {
            return (
                format!("no key was offered to the bastion ({})", reasons.join("; ")),
                "platform: make a key the bastion can take (see why each was not offered: \
                 an algorithm the bastion refuses needs another key type, e.g. forwarder \
                 keygen makes an RSA key every sshd since 7.2 accepts)"
                    .to_owned(),
            );
        }
    }
    match key {
        Some(identity) => {
            let line = crate::keygen::authorized_keys_line(
                &identity.public_key().to_openssh_line(),
                &permit.open,
                &permit.listen,
            );
            (
                format!(
                    "the bastion refused key {} for user {user:?}",
                    identity.fingerprint()
                ),
                format!(
                    "bastion admin: add this line to ~{user}/.ssh/authorized_keys on the \
                     bastion (key {}; it allows only these forwards): {line} -- if the key is \
                     already there: {cannot_tell}",
                    identity.fingerprint()
                ),
            )
        }
        None => (
            format!("no key to offer for user {user:?}"),
            format!(
                "platform: give the key with -i (forwarder keygen makes one); then {cannot_tell}"
            ),
        ),
    }
}

fn sanitize(s: &str) -> String {
    ssh_transport::text::sanitize(s.as_bytes(), false, 200)
}

/// Stages 7 and 8 for each forward.
async fn channels(job: &Job, st: &mut Stages, handle: &driver::SessionHandle) {
    let mut failed = false;
    for (fwd, kind) in job.config.forwards.iter().zip(&job.probes) {
        let target = target_label(fwd);
        if failed {
            st.skip_rest([7, 8]);
            continue;
        }
        if fwd.to == Destination::Socks {
            let why = format!(
                "{target}: not run: each SOCKS connection names its own target (to check one, \
                 add -L 0:host:port)"
            );
            st.skip(7, why.clone());
            st.skip(8, why);
            continue;
        }
        let started = Instant::now();
        let opened = tokio::time::timeout(
            DEFAULT_TIMEOUT,
            crate::tunnel::open_channel(handle, &fwd.to, &Peer::OURSELVES),
        )
        .await;
        let took = started.elapsed();
        let stream = match opened {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let fix = channel_fix(&e, &fwd.to);
                st.fail(7, Some(took), format!("{target}: {e}"), fix);
                st.skip(8, "not run: an earlier stage failed");
                failed = true;
                continue;
            }
            Err(_) => {
                st.fail(
                    7,
                    Some(took),
                    format!(
                        "{target}: the bastion did not answer the channel request within {} s",
                        DEFAULT_TIMEOUT.as_secs()
                    ),
                    format!(
                        "DBA and bastion admin: the bastion is still trying to reach {target}: \
                         a firewall between them drops the packets; allow the bastion to reach \
                         {target}"
                    ),
                );
                st.skip(8, "not run: an earlier stage failed");
                failed = true;
                continue;
            }
        };
        st.pass(7, Some(took), format!("{target}: channel opened"));

        // 8. The database.
        let Some(kind) = kind else {
            drop(stream);
            st.skip(
                8,
                format!(
                    "{target}: no probe kind (give --probe postgres|mysql|tcp; only ports \
                     5432, 5439 and 3306, and sockets named .s.PGSQL.* or mysqld.sock, imply \
                     one)"
                ),
            );
            continue;
        };
        let spec = ProbeSpec {
            kind: *kind,
            mysql_login: job.mysql_login.clone(),
            timeout: DEFAULT_TIMEOUT,
        };
        let started = Instant::now();
        let answer = probe::run(&spec, stream).await;
        let took = started.elapsed();
        match answer {
            Ok(detail) => {
                let mut detail = format!("{target}: {detail}");
                if *kind == ProbeKind::Mysql && spec.mysql_login.is_none() {
                    detail.push_str(
                        "; the server logs a client that leaves after the greeting as an \
                         aborted connection (--probe-user avoids that)",
                    );
                }
                st.pass(8, Some(took), detail);
            }
            Err(e) => {
                let expected = match kind {
                    ProbeKind::Postgres => "PostgreSQL",
                    ProbeKind::Mysql => "MySQL or MariaDB",
                    _ => "the service",
                };
                st.fail(
                    8,
                    Some(took),
                    format!("{target}: {e}"),
                    probe_fix(expected, &target, &e),
                );
                failed = true;
            }
        }
    }
    remote_forwards(job, st, handle, failed).await;
}

/// Stages 7 and 8 of each remote forward: the bastion is asked to listen (and told to stop
/// again at once: nothing is served), then the target is connected to from here, where the
/// tunnel connects, and probed when a probe kind is known. A PASS means the bastion would
/// listen and the target answers here; the path from the bastion's listener to us is the
/// session itself, which stages 3 to 6 passed.
async fn remote_forwards(
    job: &Job,
    st: &mut Stages,
    handle: &driver::SessionHandle,
    mut failed: bool,
) {
    for (spec, kind) in &job.remote {
        if failed {
            st.skip_rest([7, 8]);
            continue;
        }
        let listen = spec.label();
        let started = Instant::now();
        let asked = tokio::time::timeout(
            DEFAULT_TIMEOUT,
            handle.request_remote_forward(spec.listen.clone()),
        )
        .await;
        let took = started.elapsed();
        match asked {
            Ok(Ok(port)) => {
                handle.cancel_remote_forward(&driver::bound_listen(&spec.listen, port));
                st.pass(
                    7,
                    Some(took),
                    format!(
                        "the bastion listens on {} for {} (and was told to stop again)",
                        spec.listen_label(port),
                        spec.target
                    ),
                );
            }
            Ok(Err(e)) => {
                st.fail(
                    7,
                    Some(took),
                    format!("bastion {listen}: {e}"),
                    remote_fix(spec),
                );
                st.skip(8, "not run: an earlier stage failed");
                failed = true;
                continue;
            }
            Err(_) => {
                st.fail(
                    7,
                    Some(took),
                    format!(
                        "bastion {listen}: no answer to the forward request within {} s",
                        DEFAULT_TIMEOUT.as_secs()
                    ),
                    "bastion admin: the SSH server took the session but does not answer its \
                     requests; look at its load and its log"
                        .to_owned(),
                );
                st.skip(8, "not run: an earlier stage failed");
                failed = true;
                continue;
            }
        }
        if spec.target == Destination::Socks {
            st.skip(
                8,
                format!(
                    "{listen}: not run: each SOCKS connection names its own target (to check \
                     one, add -R 0:host:port)"
                ),
            );
            continue;
        }
        let target = spec.target.to_string();
        let started = Instant::now();
        let probe = kind.map(|kind| ProbeSpec {
            kind,
            mysql_login: job.mysql_login.clone(),
            timeout: DEFAULT_TIMEOUT,
        });
        let answer = tokio::time::timeout(
            DEFAULT_TIMEOUT,
            connect_and_probe(&spec.target, probe.as_ref()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Here::Connect(format!(
                "no answer within {} s",
                DEFAULT_TIMEOUT.as_secs()
            )))
        });
        let took = started.elapsed();
        match answer {
            Ok(detail) => st.pass(8, Some(took), format!("{target} here: {detail}")),
            Err(Here::Connect(e)) => {
                st.fail(
                    8,
                    Some(took),
                    format!("{target} here: connect failed: {e}"),
                    format!(
                        "platform: the tunnel connects to {target} from this machine for each \
                         connection the bastion takes on {listen}; start the service there, \
                         or correct the tunnel's target"
                    ),
                );
                failed = true;
            }
            Err(Here::Probe(e)) => {
                let expected = match kind {
                    Some(ProbeKind::Postgres) => "PostgreSQL",
                    Some(ProbeKind::Mysql) => "MySQL or MariaDB",
                    _ => "the service",
                };
                st.fail(
                    8,
                    Some(took),
                    format!("{target} here: {e}"),
                    probe_fix(expected, &target, &e),
                );
                failed = true;
            }
        }
    }
}

/// Why a remote forward's target failed here.
enum Here {
    /// No connection.
    Connect(String),
    /// Connected, but the probe failed.
    Probe(String),
}

/// Connects to `target` from here, then runs `probe` over the connection if there is one.
async fn connect_and_probe(
    target: &Destination,
    probe: Option<&ProbeSpec>,
) -> Result<String, Here> {
    let connect = |e: std::io::Error| Here::Connect(e.to_string());
    let detail = match target {
        Destination::Tcp(t) => {
            let stream = TcpStream::connect((t.host.as_str(), t.port))
                .await
                .map_err(connect)?;
            let detail = format!(
                "connected to {}",
                stream
                    .peer_addr()
                    .map_or_else(|_| t.to_string(), |a| a.to_string())
            );
            match probe {
                Some(p) => probe::run(p, stream).await.map_err(Here::Probe)?,
                None => detail,
            }
        }
        Destination::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(connect)?;
            match probe {
                Some(p) => probe::run(p, stream).await.map_err(Here::Probe)?,
                None => "connected".to_owned(),
            }
        }
        Destination::Socks => {
            return Err(Here::Connect(
                "a SOCKS forward has no target of its own".to_owned(),
            ));
        }
    };
    Ok(match probe {
        Some(_) => detail,
        None => format!("{detail} (no probe kind: give --probe postgres|mysql|tcp)"),
    })
}

/// What to do when the connection cannot come from where `BindAddress` or `BindInterface`
/// says.
fn origin_fix(options: &cli::Options) -> String {
    match (&options.bind_address, &options.bind_interface) {
        (None, Some(i)) => format!(
            "platform: BindInterface (-B) {i} must name an interface of this machine that is \
             up and has an address of the bastion's family (ip addr shows them); its address \
             is the source the bastion's firewall sees, so name the interface whose address \
             the customer allowed, or give that address with -b"
        ),
        (b, _) => format!(
            "platform: BindAddress (-b) {} must be an address of this machine (ip addr shows \
             them), of the bastion's address family; it is the source address the bastion's \
             firewall sees, so give the one the customer allowed",
            b.as_deref().unwrap_or_default()
        ),
    }
}

/// What to do when the bastion refused to listen for a remote forward.
fn remote_fix(spec: &RemoteSpec) -> String {
    use ssh_connection::ForwardListen;
    match &spec.listen {
        ForwardListen::Tcp { address, port } => {
            let label = spec.label();
            let mut fix = format!(
                "bastion admin: sshd refused to listen on {label}: sshd_config's \
                 AllowTcpForwarding must be yes or remote, DisableForwarding no, and neither \
                 the key's restrict or no-port-forwarding nor a PermitListen list may forbid \
                 the port"
            );
            if *port != 0 && *port < 1024 {
                fix.push_str(&format!(
                    "; port {port} is below 1024, which only root may listen on"
                ));
            }
            if !matches!(address.as_str(), "localhost" | "127.0.0.1" | "::1") {
                fix.push_str(
                    "; an address other than loopback needs GatewayPorts clientspecified (or \
                     yes)",
                );
            }
            if *port != 0 {
                fix.push_str(&format!(
                    ". If all of that holds, port {port} is taken on the bastion: by another \
                     program, or by an earlier session of this login that sshd has not yet \
                     noticed is gone"
                ));
            }
            fix
        }
        ForwardListen::Unix { path } => format!(
            "bastion admin: sshd refused to listen on the socket {path}: if a file exists \
             there, remove it or set StreamLocalBindUnlink yes in sshd_config (sshd leaves its \
             sockets behind when a session ends, so a tunnel that reconnects is refused \
             without it); otherwise sshd_config's AllowStreamLocalForwarding must be yes or \
             remote, DisableForwarding no, the key must not have restrict or \
             no-port-forwarding, and the login user must be able to create files in the \
             socket's directory. A server other than OpenSSH's may not listen on sockets at all"
        ),
    }
}

/// What to do about a failed stage 8, from what the probe saw: the database's own error when
/// it answered (a refused probe login, a blocked host, no free connections), else that
/// something other than the expected database is at the target.
fn probe_fix(expected: &str, target: &str, detail: &str) -> String {
    let answered = |code: &str| {
        detail.contains(&format!("error {code} (")) || detail.contains(&format!("error {code}:"))
    };
    if answered("1129") {
        format!(
            "DBA: the database at {target} blocks the bastion's address after too many \
             connections that did not log in (max_connect_errors): run FLUSH HOSTS (or \
             mariadb-admin flush-hosts / mysqladmin flush-hosts), and give probes a login \
             (--probe-user, or probe_user in the fleet file) so they stop counting"
        )
    } else if detail.contains("caching_sha2_password") {
        format!(
            "DBA: the database at {target} answered, but the probe user authenticates with \
             caching_sha2_password, which the probe does not speak: create the probe user \
             IDENTIFIED WITH mysql_native_password (it needs no privileges)"
        )
    } else if answered("1045") || answered("1044") || detail.contains("login as") {
        format!(
            "DBA or platform: the database at {target} answered but refused the probe's \
             login: check the probe user and its password file (--probe-user, \
             --probe-password-file), and that the user may connect from the bastion's address"
        )
    } else if answered("1040") || answered("1203") {
        format!(
            "DBA: the database at {target} answered but has no free connections \
             (max_connections, or the user's max_user_connections)"
        )
    } else {
        format!(
            "platform and DBA: {expected} was expected at {target} but something else \
             answered (see the detail); check the forward's port (and --probe), and ask the \
             DBA which address and port the database listens on"
        )
    }
}

/// What to do about a channel the bastion refused.
fn channel_fix(e: &OpenError, to: &Destination) -> String {
    let target = to.to_string();
    match (e, to) {
        (OpenError::Refused { reason, .. }, Destination::Unix(path))
            if *reason == OpenFailureReason::UNKNOWN_CHANNEL_TYPE =>
        {
            format!(
                "the bastion's SSH server does not forward to Unix sockets (it does not know \
                 direct-streamlocal@openssh.com channels; Dropbear, for one, does not, while \
                 OpenSSH's sshd does): platform: forward to the database's TCP port instead \
                 of {path}"
            )
        }
        // sshd gives one answer for every failure of a Unix socket channel: "open failed".
        (OpenError::Refused { description, .. }, Destination::Unix(path)) => format!(
            "the bastion did not connect to the Unix socket {path} ({}): bastion admin: check \
             that sshd allows it (sshd_config's AllowStreamLocalForwarding must be yes or \
             local; neither DisableForwarding nor the key's restrict or no-port-forwarding \
             options may forbid it; and a PermitOpen or permitopen=\"...\" list of \
             host:port never matches a socket: only any, or *:*, lets one through), that a \
             socket exists at that path on \
             the bastion, and that the login user may connect to it (the socket file's mode \
             and its directories' permissions)",
            if description.is_empty() {
                "no reason given"
            } else {
                description
            }
        ),
        _ => channel_fix_tcp(e, &target),
    }
}

/// [`channel_fix`] for a `host:port` target.
fn channel_fix_tcp(e: &OpenError, target: &str) -> String {
    match e {
        OpenError::Refused {
            reason,
            description,
        } if *reason == OpenFailureReason::ADMINISTRATIVELY_PROHIBITED => format!(
            "bastion admin: the bastion does not allow forwarding to {target} \
             (\"administratively prohibited\"{}): check sshd_config's AllowTcpForwarding \
             (must be yes or local), PermitOpen (must list {target}), and the key's \
             permitopen=\"...\" options in authorized_keys (must include {target})",
            if description.is_empty() {
                String::new()
            } else {
                format!(": {description}")
            }
        ),
        OpenError::Refused {
            reason,
            description,
        } if *reason == OpenFailureReason::CONNECT_FAILED => {
            let d = description.to_ascii_lowercase();
            let what = if d.contains("name") || d.contains("resolution") || d.contains("known") {
                format!(
                    "the bastion cannot resolve the name in {target}; platform: check the \
                     host name; bastion admin: check the bastion's DNS"
                )
            } else if d.contains("refused") {
                format!(
                    "nothing accepts connections at {target} as seen from the bastion; DBA: \
                     check the database's address and port and that it listens on an \
                     interface the bastion reaches"
                )
            } else {
                format!(
                    "DBA and bastion admin: check the database's address and the firewall \
                     between the bastion and {target}"
                )
            };
            format!(
                "the bastion could not connect to {target} ({}): {what}",
                if description.is_empty() {
                    "no reason given"
                } else {
                    description
                }
            )
        }
        OpenError::Refused { .. } => {
            format!("bastion admin: the bastion refused the channel to {target}; its log says why")
        }
        OpenError::Session(_) => {
            "bastion admin: the session ended when the channel was asked for; sshd's log \
             says why"
                .to_owned()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Text output.

/// The text form of a report.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    match &r.name {
        Some(n) => out.push_str(&format!("tunnel {n}: {}\n", r.target)),
        None => out.push_str(&format!("check {}\n", r.target)),
    }
    for s in &r.stages {
        let tag = match s.ok {
            Some(true) => "[ ok ]",
            Some(false) => "[FAIL]",
            None => "[skip]",
        };
        let label = STAGES[usize::from(s.stage - 1)].2;
        let ms = s.ms.map_or_else(String::new, |m| format!("{m} ms"));
        out.push_str(&format!(
            "{tag} {} {label:<16} {ms:>8}  {}\n",
            s.stage, s.detail
        ));
        if let Some(fix) = &s.fix {
            out.push_str(&format!("       fix: {fix}\n"));
        }
    }
    out.push_str(&format!("{}\n", r.verdict));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_refused_unix_socket_channel_gets_the_fix_its_reason_points_to() {
        let refused = |reason| OpenError::Refused {
            reason,
            description: "open failed".into(),
        };
        let socket = Destination::Unix("/run/pg/.s.PGSQL.5432".into());
        let sshd = channel_fix(&refused(OpenFailureReason::CONNECT_FAILED), &socket);
        assert!(sshd.contains("AllowStreamLocalForwarding"), "{sshd}");
        assert!(
            sshd.contains("/run/pg/.s.PGSQL.5432 (open failed)"),
            "{sshd}"
        );
        let dropbear = channel_fix(&refused(OpenFailureReason::UNKNOWN_CHANNEL_TYPE), &socket);
        assert!(
            dropbear.contains("does not forward to Unix sockets"),
            "{dropbear}"
        );
        assert!(
            !dropbear.contains("AllowStreamLocalForwarding"),
            "{dropbear}"
        );
        // A TCP target keeps its own fixes.
        let tcp = Destination::Tcp(crate::tunnel::Target {
            host: "db".into(),
            port: 5432,
        });
        let fix = channel_fix(
            &refused(OpenFailureReason::ADMINISTRATIVELY_PROHIBITED),
            &tcp,
        );
        assert!(fix.contains("AllowTcpForwarding"), "{fix}");
    }

    #[test]
    fn a_database_that_answered_gets_a_fix_for_what_it_said() {
        let fix = |detail: &str| probe_fix("MySQL or MariaDB", "db:3306", detail);
        let blocked = fix(
            "db:3306: mysql: error 1129: Host '10.0.0.5' is blocked because of many connection errors",
        );
        assert!(blocked.contains("FLUSH HOSTS"), "{blocked}");
        let full = fix("db:3306: mysql: error 1040 (08004): Too many connections");
        assert!(full.contains("max_connections"), "{full}");
        let plugin = fix(
            "db:3306: mysql: MySQL 8.4.0: login as probe refused: more authentication data (a plugin other than mysql_native_password, such as caching_sha2_password)",
        );
        assert!(plugin.contains("mysql_native_password"), "{plugin}");
        let sha2 = fix("db:3306: mysql: MySQL 9.1.0: caching_sha2_password authentication plugin");
        assert!(sha2.contains("mysql_native_password"), "{sha2}");
        let other = fix("db:3306: expected MySQL, got an SSH server (SSH-2.0-OpenSSH_9.2)");
        assert!(other.contains("something else answered"), "{other}");
        // An error number inside other text is not taken for the database's error.
        let nested = fix("db:3306: expected MySQL, got HTTP (error 10450)");
        assert!(nested.contains("something else answered"), "{nested}");
    }

    #[test]
    fn remote_forwards_are_checked_with_a_probe_inferred_from_their_target() {
        let args = parse_check_args(&os(&[
            "-F",
            "none",
            "-R",
            "8022:127.0.0.1:5432",
            "-R",
            "/run/b.sock:/run/here.sock",
            "-L",
            "1:db:5432",
            "bastion",
        ]))
        .expect("check's own flags");
        let jobs = jobs(&args).expect("-R is checked");
        let [job] = &jobs[..] else { panic!("one job") };
        assert_eq!(job.probes, [Some(ProbeKind::Postgres)]);
        let remote: Vec<(String, Option<ProbeKind>)> =
            job.remote.iter().map(|(r, k)| (r.label(), *k)).collect();
        assert_eq!(
            remote,
            [
                ("localhost:8022".to_owned(), Some(ProbeKind::Postgres)),
                ("/run/b.sock".to_owned(), None)
            ]
        );
        let only_remote = parse_check_args(&os(&["-F", "none", "-R", "0:h:1", "bastion"]))
            .expect("check's own flags");
        assert!(super::jobs(&only_remote).is_ok(), "-R alone is a check");
        let none = parse_check_args(&os(&["-F", "none", "bastion"])).expect("flags");
        let error = super::jobs(&none).err().expect("no forward at all");
        assert!(error.contains("-L") && error.contains("-R"), "{error}");
    }

    // What the authorized_keys line of a refused login permits, from the job's forwards.
    #[test]
    fn permits_follow_the_forwards() {
        let permits = |args: &[&str]| {
            let args = parse_check_args(&os(args)).expect("check's own flags");
            let jobs = jobs(&args).expect("a job");
            let p = Permits::of(&jobs[0]);
            (p.open, p.listen)
        };
        let (open, listen) = permits(&["-F", "none", "-L", "1:[fd00::1]:5432", "b"]);
        assert_eq!((open, listen), (vec!["[fd00::1]:5432".to_owned()], vec![]));
        // A socket target: no permitopen at all, since any list refuses sockets.
        let (open, _) = permits(&["-F", "none", "-L", "1:db:1", "-L", "2:/run/s.sock", "b"]);
        assert!(open.is_empty(), "{open:?}");
        // Remote forwards only: nothing to open, each listen named (any port for 0).
        let (open, listen) = permits(&[
            "-F",
            "none",
            "-R",
            "8022:h:1",
            "-R",
            "*:0:h:1",
            "-R",
            "/run/b.sock:h:1",
            "b",
        ]);
        assert_eq!(open, ["NONE:1"]);
        assert_eq!(listen, ["localhost:8022", "*:*"]);
    }

    #[test]
    fn a_refused_remote_forward_fix_fits_what_was_asked() {
        let tcp = |spec: &str| {
            let f = crate::cli::ForwardSpec {
                listen: match spec.split_once(':') {
                    Some((a, p)) => crate::cli::Listen::Port {
                        bind_address: Some(a.to_owned()),
                        port: p.parse().expect("port"),
                    },
                    None => crate::cli::Listen::Path(spec.into()),
                },
                to: Destination::Unix("/here".into()),
            };
            remote_fix(&RemoteSpec::from_forward(&f))
        };
        let low = tcp("localhost:80");
        assert!(
            low.contains("below 1024") && !low.contains("GatewayPorts"),
            "{low}"
        );
        let wide = tcp("*:8022");
        assert!(
            wide.contains("GatewayPorts") && wide.contains("port 8022 is taken"),
            "{wide}"
        );
        let picked = tcp("localhost:0");
        assert!(!picked.contains("is taken"), "{picked}");
        let socket = tcp("/run/a.sock");
        assert!(
            socket.contains("StreamLocalBindUnlink yes")
                && socket.contains("AllowStreamLocalForwarding"),
            "{socket}"
        );
    }

    #[test]
    fn check_flags_are_taken_out_and_the_rest_is_left() {
        let a = parse_check_args(&os(&[
            "--json",
            "-p",
            "2222",
            "--probe",
            "mysql",
            "-L",
            "1:db:3306",
            "bastion",
        ]))
        .unwrap();
        assert!(a.json);
        assert_eq!(a.probe, Some(ProbeKind::Mysql));
        assert_eq!(a.rest, ["-p", "2222", "-L", "1:db:3306", "bastion"]);
        let a = parse_check_args(&os(&["--config=f.toml", "one", "two"])).unwrap();
        assert_eq!(a.config, Some(PathBuf::from("f.toml")));
        assert_eq!(a.rest, ["one", "two"]);
        assert!(parse_check_args(&os(&["--probe", "redis"])).is_err());
        assert!(parse_check_args(&os(&["--probe", "none"])).is_err());
        assert!(parse_check_args(&os(&["--config"])).is_err());
    }

    #[test]
    fn check_probe_is_inferred_from_well_known_ports_only() {
        let tcp = |port| {
            Destination::Tcp(crate::tunnel::Target {
                host: "db".into(),
                port,
            })
        };
        let unix = |path: &str| Destination::Unix(path.into());
        assert_eq!(inferred_probe(&tcp(5432)), Some(ProbeKind::Postgres));
        assert_eq!(inferred_probe(&tcp(5439)), Some(ProbeKind::Postgres));
        assert_eq!(inferred_probe(&tcp(3306)), Some(ProbeKind::Mysql));
        assert_eq!(inferred_probe(&tcp(6432)), None);
        let pg = unix("/var/run/postgresql/.s.PGSQL.5432");
        assert_eq!(inferred_probe(&pg), Some(ProbeKind::Postgres));
        let my = unix("/run/mysqld/mysqld.sock");
        assert_eq!(inferred_probe(&my), Some(ProbeKind::Mysql));
        assert_eq!(inferred_probe(&unix("/run/app.sock")), None);
    }

    #[test]
    fn check_lowest_failing_stage_decides() {
        let r = |code| Report {
            name: None,
            target: String::new(),
            stages: Vec::new(),
            verdict: String::new(),
            exit_code: code,
        };
        assert_eq!(overall_exit_code(&[r(0), r(16), r(14)]), 14);
        assert_eq!(overall_exit_code(&[r(0), r(0)]), 0);
    }

    #[test]
    fn check_bad_command_lines_exit_2() {
        assert_eq!(run(&os(&["--probe", "nope"])), EXIT_USAGE);
        assert_eq!(run(&os(&["bastion"])), EXIT_USAGE, "no -L");
        assert_eq!(run(&os(&["-L", "1:db:5432"])), EXIT_USAGE, "no host");
        assert_eq!(
            run(&os(&["--config", "/nonexistent/tunnels.toml"])),
            EXIT_USAGE
        );
    }

    #[test]
    fn check_text_lines_carry_tag_stage_time_and_fix() {
        let report = Report {
            name: None,
            target: "u@h:22 -> db:5432".into(),
            stages: vec![
                StageReport {
                    stage: 1,
                    name: "resolve",
                    ok: Some(true),
                    ms: Some(3),
                    detail: "h -> 127.0.0.1".into(),
                    fix: None,
                },
                StageReport {
                    stage: 2,
                    name: "tcp",
                    ok: Some(false),
                    ms: Some(1),
                    detail: "refused".into(),
                    fix: Some("do this".into()),
                },
                StageReport {
                    stage: 3,
                    name: "ssh-version",
                    ok: None,
                    ms: None,
                    detail: "not run".into(),
                    fix: None,
                },
            ],
            verdict: "FAIL".into(),
            exit_code: 11,
        };
        let text = render(&report);
        assert!(text.contains("[ ok ] 1 name resolution"), "{text}");
        assert!(text.contains("[FAIL] 2 tcp connect"), "{text}");
        assert!(text.contains("       fix: do this"), "{text}");
        assert!(text.contains("[skip] 3 ssh version"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["stages"][2]["ok"], serde_json::Value::Null);
        assert_eq!(json["exit_code"], 11);
    }
}
