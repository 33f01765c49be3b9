//! Making sessions and listeners: the TCP connection to the bastion (ConnectTimeout, TCP
//! keepalive), known_hosts checking, the identities, and binding local listeners as OpenSSH
//! does. Shared by the command line and the fleet.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ssh_auth::AuthError;
use ssh_transport::PreparedKex;
use ssh_transport::hostkey::PublicKey;
use ssh_transport::random::OsRandom;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::cli::{self, BindTarget};
use crate::config::{self, SessionSpec};
use crate::driver::{self, HostKeyVerifier};
use crate::kex_memory;
use crate::known_hosts::{
    self, AcceptedKey, AcceptedKeys, Decision, HostKeyStatus, KnownHosts, Record, RevokedHostKeys,
};
use crate::local::Listener;
use crate::notice;
use crate::quickack::QuickAck;
use crate::session::{Session, SessionConfig, SessionError};
use crate::supervisor::{ConnectError, Connected, Connector};
use crate::userauth;

/// Checks server host keys against known_hosts under StrictHostKeyChecking, and against the
/// keys this process trusted before without a file to vouch for them ([`AcceptedKeys`]).
#[derive(Debug)]
pub struct KnownHostsVerifier {
    known: KnownHosts,
    /// `KnownHostsCommand`, run with the presented key before it is judged.
    command: Option<CommandCheck>,
    /// The RevokedHostKeys files, consulted before `known` under every policy.
    revoked: RevokedHostKeys,
    host: String,
    port: u16,
    /// The name a host certificate must name: HostKeyAlias, else the host name.
    principal: String,
    policy: cli::StrictHostKeyChecking,
    record_file: Option<PathBuf>,
    hash: bool,
    accepted: &'static AcceptedKeys,
    /// `UpdateHostKeys`, and the user's known_hosts files it edits the first of.
    update_host_keys: bool,
    user_files: Vec<PathBuf>,
    /// Whether this attempt's host key was trusted as a plain key that the first user file
    /// lists for the host (or now records): only then may the server's list change it.
    trusted_from_first_file: std::sync::atomic::AtomicBool,
}

/// A `KnownHostsCommand` for one attempt's host key: what it runs with, and the hosts it
/// adds to the files' once it has run.
#[derive(Debug)]
pub(crate) struct CommandCheck {
    command: known_hosts::command::KnownHostsCommand,
    /// `%H`: the name known_hosts is searched for.
    lookup_name: String,
    /// How long a run may take: the handshake's limit.
    limit: Duration,
    /// The files' hosts and the command's, once it ran with the key.
    known: std::sync::OnceLock<KnownHosts>,
}

impl CommandCheck {
    /// The check for `opts`' command, if it has one.
    pub(crate) fn new(opts: &cli::Options, key_name: &str, key_port: u16) -> Option<Self> {
        Some(Self {
            command: opts.known_hosts_command.clone()?,
            lookup_name: known_hosts::lookup_name(key_name, key_port),
            limit: command_limit(opts),
            known: std::sync::OnceLock::new(),
        })
    }

    /// Runs the command with the presented key and keeps `files`' hosts with its lines,
    /// for [`Self::known`].
    pub(crate) async fn run(
        &self,
        files: &KnownHosts,
        key: &PublicKey,
        certificate: Option<&ssh_transport::cert::Certificate>,
    ) -> Result<(), String> {
        use known_hosts::command::{Invocation, PresentedKey, origin};
        let presented = PresentedKey { key, certificate };
        let text = self
            .command
            .run(
                &self.lookup_name,
                Invocation::Hostname,
                Some(presented),
                self.limit,
            )
            .await?;
        let mut known = files.clone();
        for w in known.add(&text, &origin(Invocation::Hostname)) {
            warn!("{w}");
        }
        let _ = self.known.set(known);
        Ok(())
    }

    /// The hosts the key is judged against: the files' and the command's once it ran.
    pub(crate) fn known<'a>(&'a self, files: &'a KnownHosts) -> &'a KnownHosts {
        self.known.get().unwrap_or(files)
    }
}

/// [`HostKeyVerifier::verify_later`] for a verifier with a `KnownHostsCommand` (`parts` gives
/// it and the files' hosts; `None` when there is none): the command runs with the key, then
/// `verifier` judges the key against the files and the command's lines.
pub(crate) fn verify_with_command<V: HostKeyVerifier + 'static>(
    verifier: Arc<V>,
    parts: fn(&V) -> Option<(&CommandCheck, &KnownHosts)>,
    key: &PublicKey,
    certificate: Option<&ssh_transport::cert::Certificate>,
) -> Option<driver::VerdictFuture> {
    parts(&verifier)?;
    let key = key.clone();
    let certificate = certificate.cloned();
    Some(Box::pin(async move {
        if let Some((check, files)) = parts(&verifier)
            && let Err(why) = check.run(files, &key, certificate.as_ref()).await
        {
            return driver::Verdict::Unchecked(why);
        }
        match verifier.verify_presented(&key, certificate.as_ref()) {
            Ok(()) => driver::Verdict::Trusted,
            Err(why) => driver::Verdict::Refused(why),
        }
    }))
}

/// How long a `KnownHostsCommand` run may take: the handshake's limit.
fn command_limit(opts: &cli::Options) -> Duration {
    opts.connect_timeout
        .unwrap_or(config::DEFAULT_HANDSHAKE_TIMEOUT)
}

/// The lines `opts`' `KnownHostsCommand` gives for `key_name`/`key_port` before the key
/// exchange (`%I` ORDER, no key), to choose which host key types to ask for; `None` without
/// one. Its failure fails the attempt, which a tunnel tries again.
pub(crate) async fn order_lines(
    opts: &cli::Options,
    key_name: &str,
    key_port: u16,
) -> Result<Option<String>, String> {
    let Some(command) = &opts.known_hosts_command else {
        return Ok(None);
    };
    let name = known_hosts::lookup_name(key_name, key_port);
    command
        .run(
            &name,
            known_hosts::command::Invocation::Order,
            None,
            command_limit(opts),
        )
        .await
        .map(Some)
}

/// `files`' hosts, with `order`'s lines (a `KnownHostsCommand`'s for ORDER) when there are
/// some: what the host key types to ask for are chosen from.
pub(crate) fn known_for_order<'a>(
    files: &'a KnownHosts,
    order: Option<&str>,
) -> std::borrow::Cow<'a, KnownHosts> {
    match order {
        None => std::borrow::Cow::Borrowed(files),
        Some(text) => {
            let mut known = files.clone();
            // Its bad lines are reported when it runs to check the key.
            let _ = known.add(
                text,
                &known_hosts::command::origin(known_hosts::command::Invocation::Order),
            );
            std::borrow::Cow::Owned(known)
        }
    }
}

impl KnownHostsVerifier {
    /// What the key is judged against: the files, and the command's lines once it ran.
    fn known(&self) -> &KnownHosts {
        match &self.command {
            Some(c) => c.known(&self.known),
            None => &self.known,
        }
    }

    /// Refuses `key` because `accepted` were trusted for the host before.
    fn changed_since_accepted(&self, key: &PublicKey, accepted: Vec<AcceptedKey>) -> String {
        let status = HostKeyStatus::ChangedSinceAccepted { accepted };
        match self.decide(status, key) {
            Decision::Refused(e) => e.to_string(),
            // decide refuses that status under every policy.
            _ => format!("host key {} refused", key.fingerprint()),
        }
    }

    fn decide(&self, status: HostKeyStatus, key: &PublicKey) -> Decision {
        known_hosts::decide(
            status,
            self.policy,
            &self.host,
            self.port,
            key,
            self.record_file.as_deref(),
        )
    }
}

/// What known_hosts says of a presented host key: of the certificate when the server presented
/// one (logged as [`log_certificate_status`] says), else of the plain key.
pub(crate) fn look_up(
    known: &KnownHosts,
    host: &str,
    port: u16,
    principal: &str,
    key: &PublicKey,
    certificate: Option<&ssh_transport::cert::Certificate>,
) -> HostKeyStatus {
    match certificate {
        Some(cert) => {
            let status = known.check_certificate(host, port, principal, cert, unix_now());
            log_certificate_status(host, port, &status);
            status
        }
        None => known.check(host, port, key),
    }
}

/// Logs how a host certificate was judged, as ssh does: an accepted one at debug, one
/// refused for a reason the server's admin should hear of as a warning, one whose authority
/// is simply not listed (a wildcard `@cert-authority` line need not cover every host) at debug.
pub(crate) fn log_certificate_status(host: &str, port: u16, status: &HostKeyStatus) {
    let host = known_hosts::lookup_name(host, port);
    match status {
        HostKeyStatus::CertificateAccepted {
            file,
            line,
            ca_fingerprint,
            key_id,
            serial,
            valid_before,
        } => debug!(
            %host,
            ca = %ca_fingerprint,
            key_id = %key_id,
            serial,
            valid_until = %ssh_transport::cert::describe_validity(0, *valid_before),
            at = %format!("{}:{line}", file.display()),
            "host certificate accepted: its CA is listed by a @cert-authority line"
        ),
        HostKeyStatus::CertificateRefused {
            why: why @ known_hosts::CertificateRefusal::UnknownAuthority { .. },
            ..
        } => {
            debug!(%host, "host certificate not accepted ({why}); checking its key as a plain host key")
        }
        HostKeyStatus::CertificateRefused { why, .. } => warn!(
            %host,
            "host certificate not accepted ({why}); checking its key as a plain host key"
        ),
        _ => {}
    }
}

impl HostKeyVerifier for KnownHostsVerifier {
    fn verify(&self, key: &PublicKey) -> Result<(), String> {
        self.verify_presented(key, None)
    }

    fn verify_presented(
        &self,
        key: &PublicKey,
        certificate: Option<&ssh_transport::cert::Certificate>,
    ) -> Result<(), String> {
        // As ssh does, before any known_hosts lookup: nothing there, nor any policy, can
        // trust a revoked key.
        if let Some(revocation) = self.revoked.check(key, certificate) {
            return Err(revocation.refusal(&self.host, self.port, key, certificate));
        }
        let scope = self.record_file.as_deref();
        let status = look_up(
            self.known(),
            &self.host,
            self.port,
            &self.principal,
            key,
            certificate,
        );
        let status = status.map_plain(|plain| {
            self.accepted
                .recall(plain, scope, &self.host, self.port, key)
        });
        let new_host = matches!(status.plain(), HostKeyStatus::Unknown { .. });
        let in_first_file = matches!(
            &status,
            HostKeyStatus::Known { file, .. } if Some(file) == self.user_files.first()
        );
        match self.decide(status, key) {
            Decision::Trusted => {
                self.trusted_from_first_file
                    .store(in_first_file, std::sync::atomic::Ordering::Relaxed);
                if new_host {
                    // Nowhere to record it: this process remembers it instead.
                    self.accepted
                        .accept(scope, &self.host, self.port, key, Record::Nowhere)
                        .map_err(|earlier| self.changed_since_accepted(key, earlier))?;
                }
                Ok(())
            }
            Decision::TrustAndRecord { file } => {
                // Remembered before it is written, so that a concurrent attempt offering
                // another key is refused, and so that a write that fails still counts.
                self.accepted
                    .accept(
                        scope,
                        &self.host,
                        self.port,
                        key,
                        Record::Failed(file.clone()),
                    )
                    .map_err(|earlier| self.changed_since_accepted(key, earlier))?;
                let mut salt = [0u8; 20];
                ssh_transport::random::SecureRandom::fill(&mut OsRandom, &mut salt);
                let line = known_hosts::entry_line(&self.host, self.port, key, self.hash, &salt);
                match known_hosts::append(&file, &line) {
                    Ok(()) => {
                        self.trusted_from_first_file.store(
                            self.user_files.first() == Some(&file),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        let _ = self.accepted.accept(
                            scope,
                            &self.host,
                            self.port,
                            key,
                            Record::In(file.clone()),
                        );
                        notice::warning(format_args!(
                            "{}",
                            known_hosts::added_notice(&self.host, self.port, key, &file)
                        ));
                    }
                    Err(e) => notice::warning(format_args!(
                        "could not record the host key in {}: {e}; it is trusted until \
                         forwarder exits, and a different key for {} will be refused as \
                         changed",
                        file.display(),
                        known_hosts::lookup_name(&self.host, self.port)
                    )),
                }
                Ok(())
            }
            Decision::Refused(e) => Err(e.to_string()),
        }
    }

    fn verify_later(
        self: Arc<Self>,
        key: &PublicKey,
        certificate: Option<&ssh_transport::cert::Certificate>,
    ) -> Option<driver::VerdictFuture> {
        verify_with_command(
            self,
            |v| Some((v.command.as_ref()?, &v.known)),
            key,
            certificate,
        )
    }

    fn plan_host_key_update(&self, offered: &[PublicKey]) -> Option<known_hosts::update::Plan> {
        if !self.update_host_keys {
            return None;
        }
        let name = known_hosts::lookup_name(&self.host, self.port);
        if !self
            .trusted_from_first_file
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            debug!(
                host = %name,
                "UpdateHostKeys: the host key was not trusted from the first UserKnownHostsFile; \
                 not updating it"
            );
            return None;
        }
        match known_hosts::update::plan(&self.user_files, &self.host, self.port, offered) {
            known_hosts::update::Outcome::Nothing => {
                debug!(host = %name, "UpdateHostKeys: known_hosts lists the server's keys");
                None
            }
            known_hosts::update::Outcome::Skip(why) => {
                debug!(host = %name, "UpdateHostKeys: {why}; not updating known_hosts");
                None
            }
            known_hosts::update::Outcome::Update(plan) => Some(plan),
        }
    }

    fn apply_host_key_update(&self, plan: &known_hosts::update::Plan, proven: &[PublicKey]) {
        let name = known_hosts::lookup_name(&self.host, self.port);
        let Some(file) = self.user_files.first() else {
            return;
        };
        match known_hosts::update::apply(plan, proven, self.hash) {
            Ok(done) => {
                for key in &done.added {
                    info!(
                        "learned new host key for {name}: {} {} (added to {})",
                        key.key_type().name(),
                        key.fingerprint(),
                        file.display()
                    );
                }
                if done.removed > 0 {
                    info!(
                        "removed {} host key line(s) of {name} from {}: the server no longer \
                         offers {}",
                        done.removed,
                        file.display(),
                        plan.stale
                            .iter()
                            .map(|k| format!("{} {}", k.key_type().name(), k.fingerprint()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            Err(e) => warn!(
                "could not update {} with the host keys of {name}: {e}",
                file.display()
            ),
        }
    }
}

/// Binds the listeners of every forward of `cfg`, in order: each forward with its listeners
/// or why it could not bind. The command line and the fleet decide what a failure means.
pub async fn bind_forwards(
    cfg: &crate::config::TunnelConfig,
) -> Vec<(cli::ForwardSpec, std::io::Result<Vec<Listener>>)> {
    let mut out = Vec::new();
    for fwd in &cfg.forwards {
        out.push((fwd.clone(), bind_forward(fwd, cfg).await));
    }
    out
}

/// The listeners of one local forward, as `cfg` says to bind them (`GatewayPorts`,
/// `AddressFamily`, `StreamLocalBindMask`, `StreamLocalBindUnlink`).
pub async fn bind_forward(
    fwd: &cli::ForwardSpec,
    cfg: &crate::config::TunnelConfig,
) -> std::io::Result<Vec<Listener>> {
    match &fwd.listen {
        cli::Listen::Port { bind_address, port } => {
            let target = BindTarget::of(bind_address.as_deref(), cfg.gateway_ports);
            bind(&target, *port, cfg.session.address_family)
                .await
                .map(|v| v.into_iter().map(Listener::Tcp).collect())
        }
        cli::Listen::Path(path) => crate::local::listen_unix(
            path,
            cfg.stream_local_bind_mask,
            cfg.stream_local_bind_unlink,
        )
        .map(|l| vec![l]),
    }
}

/// Binds the listeners for one forward. Loopback means 127.0.0.1 and, where the system has
/// IPv6, ::1; all interfaces means 0.0.0.0 and ::. IPv6 sockets are IPv6-only so that both
/// families can share the port, as OpenSSH does. The first address must bind; a missing IPv6
/// stack only drops the IPv6 listener.
pub async fn bind(
    target: &BindTarget,
    port: u16,
    family: cli::AddressFamily,
) -> std::io::Result<Vec<TcpListener>> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let (addrs, best_effort_after): (Vec<SocketAddr>, usize) = match target {
        BindTarget::Loopback => (
            vec![
                (Ipv4Addr::LOCALHOST, port).into(),
                (Ipv6Addr::LOCALHOST, port).into(),
            ],
            1,
        ),
        BindTarget::AllInterfaces => (
            vec![
                (Ipv4Addr::UNSPECIFIED, port).into(),
                (Ipv6Addr::UNSPECIFIED, port).into(),
            ],
            1,
        ),
        BindTarget::Address(a) => {
            let v: Vec<SocketAddr> = tokio::net::lookup_host((a.as_str(), port)).await?.collect();
            let n = v.len();
            (v, n)
        }
    };
    let addrs: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match family {
            cli::AddressFamily::Any => true,
            cli::AddressFamily::Inet => a.is_ipv4(),
            cli::AddressFamily::Inet6 => a.is_ipv6(),
        })
        .collect();
    let mut out = Vec::new();
    let mut port = port;
    for (i, mut a) in addrs.into_iter().enumerate() {
        // With port 0 the second family listens on the port the first one got.
        a.set_port(port);
        match listen(a) {
            Ok(l) => {
                if port == 0 {
                    port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                }
                out.push(l);
            }
            Err(e) if i >= best_effort_after && !out.is_empty() => {
                debug!(address = %a, error = %e, "not listening on this address");
            }
            Err(e) => return Err(e),
        }
    }
    if out.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "no address of the requested family",
        ));
    }
    Ok(out)
}

/// A non-blocking TCP listener on `addr` (SO_REUSEADDR, IPv6 sockets IPv6-only, backlog 1024).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Makes a tunnel's sessions: TCP to the bastion, known_hosts read afresh on every attempt
/// (with the keys trusted earlier in the process that no file lists, [`AcceptedKeys`]), the
/// key files read at start-up ([`SshConnector::prepare`]) and again before an attempt when
/// they have changed (a rotated key, a renewed certificate), and the agent's keys asked for
/// before every attempt, as OpenSSH asks at every connection (a key replaced in the agent).
pub struct SshConnector {
    spec: SessionSpec,
    /// The key files of every hop, as last read.
    auth: std::sync::Mutex<Arc<ChainAuth>>,
    /// The identities [`Connector::prepare`] gathered for the next attempt (the agent asked,
    /// changed key files read again) before the bastion's handshake gate was taken.
    prepared: std::sync::Mutex<Option<ChainIdentities>>,
}

/// The key files of a chain's hops, and what they looked like when read.
struct ChainAuth {
    /// The destination's key files and secrets.
    destination: Arc<HopAuth>,
    /// Each jump host's, outermost first, from its own options.
    jumps: Vec<Arc<HopAuth>>,
    /// The key files of every hop, destination first, just before they were read.
    files: Vec<KeyFiles>,
}

/// The length, modification time and inode of each key file a hop reads (each
/// IdentityFile with its `.pub` and `-cert.pub`, each CertificateFile), `None` for a file
/// that is missing: when any of it changes, the files are read again before the next
/// attempt. A Kubernetes Secret or a certificate renewal replaces the file (a new inode or
/// time) without touching the tunnel's configuration.
#[derive(Debug, PartialEq, Eq)]
struct KeyFiles(Vec<Option<(u64, Option<std::time::SystemTime>, u64)>>);

impl KeyFiles {
    fn now(opts: &cli::Options) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        let mut paths = Vec::new();
        for f in &opts.identity_files {
            paths.push(f.clone());
            paths.push(userauth::with_suffix(f, ".pub"));
            paths.push(userauth::with_suffix(f, "-cert.pub"));
        }
        paths.extend(opts.certificate_files.iter().cloned());
        Self(
            paths
                .iter()
                .map(|p| {
                    std::fs::metadata(p)
                        .ok()
                        .map(|m| (m.len(), m.modified().ok(), m.ino()))
                })
                .collect(),
        )
    }
}

/// One hop's key files and secrets.
struct HopAuth {
    key_files: userauth::KeyFileSet,
    /// The secrets and the keys unlocked so far, shared by every attempt's helper.
    helper: userauth::Helper,
    /// What the last attempt's identities warned of: an attempt tells a person only what
    /// is new, not the same thing at every reconnect.
    warned: std::sync::Mutex<Vec<String>>,
}

/// One attempt's identities of a hop, the agent's as it listed them just before.
struct HopIdentities {
    identities: Vec<ssh_auth::Identity>,
    helper: Arc<userauth::Helper>,
}

/// The options that decide a hop's identities and secrets: hops equal in these share one
/// [`HopAuth`], so a key's passphrase is asked for once per run, not once per hop.
fn auth_settings(o: &cli::Options) -> impl PartialEq + '_ {
    (
        (
            &o.identity_files,
            &o.certificate_files,
            &o.identity_agent,
            o.identities_only,
            o.pubkey_authentication,
            o.password_authentication,
            o.kbd_interactive_authentication,
            o.number_of_password_prompts,
        ),
        (
            &o.preferred_authentications,
            &o.pubkey_accepted_algorithms,
            &o.password_file,
            &o.password_env,
            &o.passphrase_file,
            &o.passphrase_env,
            o.batch_mode,
        ),
    )
}

impl HopAuth {
    async fn prepare(opts: &cli::Options) -> Self {
        let (password, passphrase) = userauth::secret_sources(opts);
        let key_files = userauth::read_key_files(opts, &passphrase).await;
        let helper =
            userauth::Helper::new(opts, &userauth::Prepared::default(), password, passphrase);
        Self {
            key_files,
            helper,
            warned: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The identities for an attempt: the key files as read, and the keys the agent holds
    /// now (none when it cannot be asked, as when it could not be at start-up).
    async fn for_attempt(&self, opts: &cli::Options) -> HopIdentities {
        let agent = userauth::list_agent(opts).await;
        let prepared = userauth::identities(opts, &self.key_files, &agent, unix_now());
        {
            let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
            for w in prepared.warnings.iter().filter(|w| !warned.contains(w)) {
                notice::warning(format_args!("{w}"));
            }
            warned.clone_from(&prepared.warnings);
        }
        HopIdentities {
            helper: Arc::new(self.helper.for_identities(&prepared)),
            identities: prepared.identities,
        }
    }
}

impl ChainAuth {
    /// Reads every hop's identities; hops whose settings are equal share one [`HopAuth`].
    async fn prepare(spec: &SessionSpec) -> Self {
        let files = Self::key_files(spec);
        let destination = Arc::new(HopAuth::prepare(&spec.options).await);
        let mut prepared: Vec<(&cli::Options, Arc<HopAuth>)> =
            vec![(&spec.options, destination.clone())];
        let mut jumps = Vec::new();
        for hop in &spec.jump {
            let same = prepared
                .iter()
                .find(|(o, _)| auth_settings(o) == auth_settings(&hop.options))
                .map(|(_, a)| a.clone());
            let hop_auth = match same {
                Some(a) => a,
                None => Arc::new(HopAuth::prepare(&hop.options).await),
            };
            prepared.push((&hop.options, hop_auth.clone()));
            jumps.push(hop_auth);
        }
        Self {
            destination,
            jumps,
            files,
        }
    }

    /// Every hop's identities for an attempt, the agent asked once per distinct
    /// [`HopAuth`].
    async fn for_attempt(&self, spec: &SessionSpec) -> ChainIdentities {
        let destination = Arc::new(self.destination.for_attempt(&spec.options).await);
        let mut asked: Vec<(&Arc<HopAuth>, Arc<HopIdentities>)> =
            vec![(&self.destination, destination.clone())];
        let mut jumps = Vec::new();
        for (hop, auth) in spec.jump.iter().zip(&self.jumps) {
            let same = asked
                .iter()
                .find(|(a, _)| Arc::ptr_eq(a, auth))
                .map(|(_, ids)| ids.clone());
            let ids = match same {
                Some(ids) => ids,
                None => {
                    let ids = Arc::new(auth.for_attempt(&hop.options).await);
                    asked.push((auth, ids.clone()));
                    ids
                }
            };
            jumps.push(ids);
        }
        ChainIdentities { destination, jumps }
    }

    fn key_files(spec: &SessionSpec) -> Vec<KeyFiles> {
        std::iter::once(&spec.options)
            .chain(spec.jump.iter().map(|j| &*j.options))
            .map(KeyFiles::now)
            .collect()
    }
}

/// One attempt's identities of a chain's hops.
struct ChainIdentities {
    destination: Arc<HopIdentities>,
    /// Each jump host's, outermost first.
    jumps: Vec<Arc<HopIdentities>>,
}

/// One session of a chain: where it goes and with which settings.
struct Hop<'a> {
    at: crate::config::HopSpec<'a>,
    auth: &'a HopIdentities,
}

/// The name and port a host's key is looked up and recorded under: `HostKeyAlias` alone (as
/// ssh writes it, without a port), else the host and port. Port 22 for an alias also keeps
/// [`KnownHosts::check`] from looking the bare name up when `[host]:port` lists nothing,
/// which ssh does only without an alias.
pub(crate) fn known_hosts_name<'a>(
    options: &'a cli::Options,
    host: &'a str,
    port: u16,
) -> (&'a str, u16) {
    match &options.host_key_alias {
        Some(alias) => (alias, 22),
        None => (host, port),
    }
}

impl Hop<'_> {
    /// The name and port its host key is looked up under.
    fn known_hosts_name(&self) -> (&str, u16) {
        known_hosts_name(self.at.options, self.at.host, self.at.port)
    }

    /// `user@host:port`, as in logs.
    fn label(&self) -> String {
        let host = if self.at.host.contains(':') {
            format!("[{}]", self.at.host)
        } else {
            self.at.host.to_owned()
        };
        format!("{}@{host}:{}", self.at.user, self.at.port)
    }
}

impl SshConnector {
    /// Reads the key files `spec` names (keys, certificates) and the secret sources its
    /// options call for; each jump host's too, from its own options. The agent is asked at
    /// each attempt.
    pub async fn prepare(spec: SessionSpec) -> Self {
        let auth = std::sync::Mutex::new(Arc::new(ChainAuth::prepare(&spec).await));
        Self {
            spec,
            auth,
            prepared: std::sync::Mutex::new(None),
        }
    }

    /// An attempt's identities: the key files (read again if changed) and the agent's keys
    /// now.
    async fn identities_for_attempt(&self) -> ChainIdentities {
        self.current_auth().await.for_attempt(&self.spec).await
    }

    /// The key files to use for an attempt: as last read, or read again first when a key
    /// file of any hop has changed since.
    async fn current_auth(&self) -> Arc<ChainAuth> {
        let current = self.auth.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if current.files == ChainAuth::key_files(&self.spec) {
            return current;
        }
        tracing::info!("key files changed since they were read: reading them again");
        let fresh = Arc::new(ChainAuth::prepare(&self.spec).await);
        *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        fresh
    }

    /// A supervisor of sessions made from `spec`, with its reconnect policy, sharing `gate`
    /// (at most four handshakes at a time per bastion). With `first_attempt_fatal` a first attempt that
    /// fails ends it, as a command run by hand should.
    pub async fn supervise(
        spec: SessionSpec,
        first_attempt_fatal: bool,
        gate: Arc<crate::supervisor::BastionGate>,
    ) -> crate::supervisor::Supervisor {
        let config = crate::supervisor::SupervisorConfig {
            label: spec.label(),
            login: spec.login(),
            reconnect: spec.reconnect,
            first_attempt_fatal,
        };
        let connector = Arc::new(Self::prepare(spec).await);
        crate::supervisor::Supervisor::spawn(connector, config, gate)
    }

    /// The session it makes.
    pub fn spec(&self) -> &SessionSpec {
        &self.spec
    }
}

/// A known_hosts file that cannot be read: permanent when a person must act (no permission,
/// not a file, too large), retried when the cause passes by itself (out of descriptors or
/// memory, an I/O hiccup), so a fleet short of descriptors for a moment does not give up on
/// its tunnels.
fn known_hosts_error(e: std::io::Error) -> ConnectError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::PermissionDenied | K::InvalidData | K::InvalidInput | K::IsADirectory => {
            ConnectError::Permanent(e.to_string())
        }
        _ => ConnectError::Network(e.to_string()),
    }
}

/// The verifier of one attempt's host key for `key_name`/`key_port` under `opts`: the
/// RevokedHostKeys files, the user's known_hosts files and then the global ones, read now (so
/// that a key removed or revoked since the last attempt is not trusted on reconnect), and
/// `accepted`, the keys this process trusted before that no file may list.
fn host_key_verifier(
    opts: &cli::Options,
    key_name: &str,
    key_port: u16,
    accepted: &'static AcceptedKeys,
) -> Result<KnownHostsVerifier, ConnectError> {
    // A revocation list that cannot be read or used refuses the attempt as known_hosts does:
    // for good when only a person can mend it (contents, permissions), else retried. A
    // missing one is retried too, every attempt refused until it is back, so a daemon whose
    // list is being replaced does not give its tunnels up (ssh, making one attempt, refuses).
    let revoked = RevokedHostKeys::load(&opts.revoked_host_keys).map_err(known_hosts_error)?;
    let (known, warnings) =
        KnownHosts::load(&opts.known_hosts_files()).map_err(known_hosts_error)?;
    for w in warnings {
        warn!("{w}");
    }
    Ok(KnownHostsVerifier {
        known,
        command: CommandCheck::new(opts, key_name, key_port),
        revoked,
        host: key_name.to_owned(),
        port: key_port,
        principal: certificate_principal(opts, key_name),
        policy: opts.strict_host_key_checking,
        record_file: opts.known_hosts_record_file().map(Path::to_path_buf),
        hash: opts.hash_known_hosts,
        accepted,
        update_host_keys: opts.update_host_keys,
        user_files: opts.user_known_hosts_files.clone(),
        trusted_from_first_file: std::sync::atomic::AtomicBool::new(false),
    })
}

/// The name a host certificate must name (sshconnect.c passes the same to
/// `sshkey_cert_check_host`): HostKeyAlias as written when one is set, else the host name,
/// lowercased as ssh lowercases it, without `[ ]:port`.
pub(crate) fn certificate_principal(opts: &cli::Options, key_name: &str) -> String {
    if opts.host_key_alias.is_some() {
        key_name.to_owned()
    } else {
        key_name.to_ascii_lowercase()
    }
}

/// `transport` with its host key algorithms ordered for the host as known_hosts knows it
/// (`key_name`/`key_port`): certificate algorithms first when a `@cert-authority` line names
/// it, then the types of its known keys ([`config::prefer_known_host_key_types`]). Also the
/// key types a remembered first choice may ask for ([`kex_memory::prepare`]): the known plain
/// types, and the certificate types offered for a `@cert-authority` line.
pub(crate) fn host_key_order(
    transport: &ssh_transport::ClientConfig,
    known: &KnownHosts,
    opts: &cli::Options,
    key_name: &str,
    key_port: u16,
) -> (ssh_transport::ClientConfig, Vec<String>) {
    let mut known_types = known.known_key_types(key_name, key_port);
    let cert_authority = known.has_cert_authority(key_name, key_port);
    let transport = config::prefer_known_host_key_types(
        transport.clone(),
        &known_types,
        cert_authority,
        config::names_certificate_algorithms(opts),
    );
    if cert_authority {
        debug!(
            host = %known_hosts::lookup_name(key_name, key_port),
            "a @cert-authority line names the host: certificate host key algorithms first"
        );
        for a in transport
            .host_key_algorithms
            .iter()
            .filter(|a| a.certificate)
        {
            let t = a.key_type_name().to_owned();
            if !known_types.contains(&t) {
                known_types.push(t);
            }
        }
    }
    (transport, known_types)
}

/// Seconds since the Unix epoch; certificates' validity is judged by this clock.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl std::fmt::Debug for SshConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SshConnector")
    }
}

impl SshConnector {
    /// A session to `hop` over `stream`, its host key checked under the hop's own name (or
    /// its `HostKeyAlias`) in its own known_hosts files, read afresh on every attempt so that
    /// a host key that is no longer trusted is not trusted on reconnect, and in the process's
    /// memory of keys it trusted that no file lists, so that a key that could not be recorded
    /// does not make the host new again on reconnect.
    fn start_hop<S>(
        &self,
        stream: S,
        hop: &Hop<'_>,
        prepared: Option<PreparedKex>,
        order: Option<String>,
    ) -> Result<(crate::driver::SessionHandle, driver::Driver<S>), ConnectError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let spec = &self.spec;
        let opts = hop.at.options;
        let (key_name, key_port) = hop.known_hosts_name();
        let verifier = host_key_verifier(opts, key_name, key_port, AcceptedKeys::process())?;
        let for_order = known_for_order(&verifier.known, order.as_deref());
        let (transport, known_types) =
            host_key_order(hop.at.transport, &for_order, opts, key_name, key_port);
        let transport = kex_memory::prepare(
            transport,
            key_name,
            key_port,
            &known_types,
            opts.kex_guess_file.as_deref(),
        );
        // Certificates' validity is judged by this clock; the auth crate has none.
        let mut auth = userauth::auth_config(opts, hop.auth.identities.clone(), unix_now())
            .map_err(ConnectError::Permanent)?;
        // Our signatures (3.5 ms for RSA-4096) off the thread that carries the session's
        // packets, where other sessions share it ([`Helper`](userauth::Helper)).
        auth.caller_signs_held_keys = spec.handshake_off_thread;
        hop.at.user.clone_into(&mut auth.user);
        let verifier = Arc::new(verifier);
        let mut session = Session::with_prepared_kex(
            SessionConfig {
                transport,
                connection: ssh_connection::Config::default(),
                auth,
                server_alive: spec.server_alive,
            },
            Box::new(OsRandom),
            Instant::now(),
            prepared,
        );
        // And the key exchange's work there too: a key pair none was prepared for (11 ms for
        // sntrup761x25519), the proof of the server's reply (2 ms).
        session.set_kex_work_elsewhere(spec.handshake_off_thread);
        let (handle, driver) =
            driver::start_with_auth(stream, session, verifier, hop.auth.helper.clone());
        // A server that let us in is the one to guess for next time (kex_memory).
        kex_memory::watch(
            handle.clone(),
            key_name.to_owned(),
            key_port,
            hop.at
                .transport
                .kex_algorithms
                .iter()
                .map(|k| k.name())
                .collect(),
            opts.kex_guess_file.clone(),
        );
        Ok((handle, driver))
    }

    /// Starts making the first key exchange message for `hop` on a blocking thread
    /// ([`driver::prepare_kex`]), for the method it will most likely run: its key pair is
    /// made while the TCP connection (or the jump host's channel) comes up, and not on the
    /// thread that carries the session.
    fn prepare_kex_for(&self, hop: &Hop<'_>) -> tokio::task::JoinHandle<Option<PreparedKex>> {
        let expected = expected_kex(hop);
        tokio::spawn(async move {
            match expected {
                Some(algorithm) => driver::prepare_kex(algorithm).await,
                None => None,
            }
        })
    }

    /// The first message [`prepare_kex_for`](Self::prepare_kex_for) made for `hop`, or one
    /// made now (on a blocking thread as well) when the method expected has changed since:
    /// another session to the same bastion finished its handshake meanwhile and taught the
    /// process the bastion's choice, which this session will now guess with.
    async fn kex_ready(
        &self,
        hop: &Hop<'_>,
        kex: AbortOnDrop<Option<PreparedKex>>,
    ) -> Option<PreparedKex> {
        let prepared = kex.finish().await;
        let expected = expected_kex(hop)?;
        if prepared.as_ref().is_some_and(|p| p.algorithm() == expected) {
            return prepared;
        }
        debug!(
            kex = expected.name(),
            "the bastion's choice was learned meanwhile: its first message is made now"
        );
        driver::prepare_kex(expected).await.or(prepared)
    }

    /// The chain's sessions, outermost first, the destination last.
    fn hops<'a>(&'a self, auth: &'a ChainIdentities) -> Vec<Hop<'a>> {
        let ids = auth.jumps.iter().chain(std::iter::once(&auth.destination));
        self.spec
            .hops()
            .into_iter()
            .zip(ids)
            .map(|(at, auth)| Hop { at, auth })
            .collect()
    }

    async fn start(&self) -> Result<Connected, ConnectError> {
        let spec = &self.spec;
        let started = Instant::now();
        let prepared = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let auth = match prepared {
            Some(auth) => auth,
            None => self.identities_for_attempt().await,
        };
        let hops = self.hops(&auth);
        let Some((destination, jumps)) = hops.split_last() else {
            return Err(ConnectError::Permanent("no host to connect to".into()));
        };
        let first = jumps.first().unwrap_or(destination);
        let kex = AbortOnDrop(self.prepare_kex_for(first));
        let attempts = first.at.options.connection_attempts;
        // A KnownHostsCommand's ORDER run, while the connection is made.
        let (stream, order) = tokio::join!(
            connect(
                spec,
                first.at.host,
                first.at.port,
                first.at.options,
                attempts
            ),
            Self::order_for(first)
        );
        let (stream, order) = (stream?, order?);
        debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "connected"
        );
        let prepared = self.kex_ready(first, kex).await;
        let Some((outermost, inner_jumps)) = jumps.split_first() else {
            let (handle, driver) = self.start_hop(stream, destination, prepared, order)?;
            return Ok(Connected {
                handle,
                driver: Box::pin(driver),
            });
        };
        // Jump hosts: each hop's driver runs in a task of its own, aborted with the chain;
        // each session after the first runs over a direct-tcpip channel of the one before.
        let mut chain = JumpChain::default();
        let (handle, driver) = self.start_hop(stream, outermost, prepared, order)?;
        chain.push(outermost, handle, tokio::spawn(driver));
        self.hop_up(&chain).await?;
        // A channel from a jump host to the next is the TCP connect of that hop.
        let open_limit = spec
            .connect_timeout
            .or(spec.transport.handshake_timeout)
            .unwrap_or(config::DEFAULT_HANDSHAKE_TIMEOUT);
        for hop in inner_jumps {
            let kex = AbortOnDrop(self.prepare_kex_for(hop));
            let (channel, order) =
                tokio::join!(chain.open_next(hop, open_limit), Self::order_for(hop));
            let (channel, order) = (channel?, order?);
            let prepared = self.kex_ready(hop, kex).await;
            let (handle, driver) = self.start_hop(channel, hop, prepared, order)?;
            chain.push(hop, handle, tokio::spawn(driver));
            self.hop_up(&chain).await?;
        }
        let kex = AbortOnDrop(self.prepare_kex_for(destination));
        let (channel, order) = tokio::join!(
            chain.open_next(destination, open_limit),
            Self::order_for(destination)
        );
        let (channel, order) = (channel?, order?);
        let prepared = self.kex_ready(destination, kex).await;
        let (handle, driver) = self.start_hop(channel, destination, prepared, order)?;
        Ok(Connected {
            handle,
            driver: Box::pin(chain.run_with(driver)),
        })
    }

    /// The hop's `KnownHostsCommand` lines for choosing host key types ([`order_lines`]).
    async fn order_for(hop: &Hop<'_>) -> Result<Option<String>, ConnectError> {
        let (key_name, key_port) = hop.known_hosts_name();
        order_lines(hop.at.options, key_name, key_port)
            .await
            .map_err(ConnectError::Network)
    }

    /// Waits until the chain's innermost hop has authenticated; its failure names the hop.
    async fn hop_up(&self, chain: &JumpChain) -> Result<(), ConnectError> {
        let Some((label, handle, _)) = chain.hops.last() else {
            return Ok(());
        };
        let limit = self
            .spec
            .transport
            .handshake_timeout
            .unwrap_or(config::DEFAULT_HANDSHAKE_TIMEOUT);
        let result = match tokio::time::timeout(limit, handle.authenticated()).await {
            Ok(r) => r,
            Err(_) => {
                return Err(ConnectError::Hop {
                    message: format!("jump host {label}: no login within {} s", limit.as_secs()),
                    auth: false,
                });
            }
        };
        result.map_err(|e| {
            let message = format!("jump host {label}: {}", self.describe(&e));
            if crate::supervisor::is_permanent(&e) {
                ConnectError::Permanent(message)
            } else {
                // A refused login or a session that ended before it: sshd's penalties count
                // them as they do the destination's.
                ConnectError::Hop {
                    message,
                    auth: matches!(e, SessionError::Auth(_)),
                }
            }
        })
    }
}

/// A task aborted when dropped unfinished: a key exchange message made for a connection
/// attempt that failed is not waited for.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

/// The key exchange method `hop`'s session will most likely run, as the process knows now
/// ([`kex_memory::expected_kex`]).
fn expected_kex(hop: &Hop<'_>) -> Option<ssh_transport::kex::KexAlgorithm> {
    let (key_name, key_port) = hop.known_hosts_name();
    kex_memory::expected_kex(
        &hop.at.transport.kex_algorithms,
        key_name,
        key_port,
        hop.at.options.kex_guess_file.as_deref(),
    )
}

impl<T> AbortOnDrop<Option<T>> {
    /// The task's answer; `None` when it failed.
    async fn finish(mut self) -> Option<T> {
        (&mut self.0).await.ok().flatten()
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The outer sessions of a jump chain, outermost first: their handles and driver tasks.
#[derive(Default)]
struct JumpChain {
    hops: Vec<(String, crate::driver::SessionHandle, HopTask)>,
}

/// The task running one outer hop's driver.
type HopTask = tokio::task::JoinHandle<Result<(), SessionError>>;

impl JumpChain {
    fn push(&mut self, hop: &Hop<'_>, handle: crate::driver::SessionHandle, task: HopTask) {
        self.hops.push((hop.label(), handle, task));
    }

    /// A `direct-tcpip` channel from the innermost hop so far to `next`, within `limit`: a
    /// jump host whose own connect to `next` hangs (a firewall that drops) would otherwise
    /// hold the attempt, and the bastion's handshake gate, for as long as its TCP tries.
    async fn open_next(
        &self,
        next: &Hop<'_>,
        limit: Duration,
    ) -> Result<crate::driver::ChannelStream, ConnectError> {
        let Some((label, handle, _)) = self.hops.last() else {
            return Err(ConnectError::Permanent("no jump host to go through".into()));
        };
        let open = handle.open_direct_tcpip(next.at.host, next.at.port, "127.0.0.1", 0);
        match tokio::time::timeout(limit, open).await {
            Ok(r) => r.map_err(|e| {
                ConnectError::Network(format!(
                    "jump host {label}: cannot connect to {}:{}: {e}",
                    next.at.host, next.at.port
                ))
            }),
            Err(_) => Err(ConnectError::Network(format!(
                "jump host {label}: cannot connect to {}:{}: no answer within {} s",
                next.at.host,
                next.at.port,
                limit.as_secs()
            ))),
        }
    }

    /// Runs the innermost session's driver while the outer hops run in their tasks: it ends
    /// when the innermost session ends or any outer hop does (which takes the inner ones'
    /// transport with it), then says goodbye to the outer hops and stops their tasks.
    async fn run_with<F>(mut self, inner: F) -> Result<(), SessionError>
    where
        F: std::future::Future<Output = Result<(), SessionError>>,
    {
        let outer_ended = async {
            let ends = self.hops.iter().map(|(label, handle, _)| {
                Box::pin(async move { (label.clone(), handle.ended().await) })
            });
            futures_select_all(ends).await
        };
        let result = tokio::select! {
            r = inner => r,
            (label, e) = outer_ended => {
                warn!("jump host {label}: session ended: {e}");
                // A changed host key (in a rekey) stays what it is: never retried, as on
                // the destination; anything else is a lost connection for the inner ones.
                if crate::supervisor::is_permanent(&e) {
                    Err(e)
                } else {
                    Err(SessionError::Transport(ssh_transport::Error::ConnectionLost))
                }
            }
        };
        // Innermost first, so each DISCONNECT still has a transport to leave by.
        // (Dropped half-way, the chain's Drop aborts the tasks left.)
        while let Some((_, handle, mut task)) = self.hops.pop() {
            handle.disconnect("forwarder exiting");
            if tokio::time::timeout(Duration::from_secs(1), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        result
    }
}

impl Drop for JumpChain {
    fn drop(&mut self) {
        for (_, _, task) in &self.hops {
            task.abort();
        }
    }
}

/// The first of `futures` to finish, with its output.
async fn futures_select_all<F>(futures: impl Iterator<Item = F>) -> F::Output
where
    F: std::future::Future + Unpin,
{
    let mut futures: Vec<F> = futures.collect();
    if futures.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for f in futures.iter_mut() {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

impl Connector for SshConnector {
    fn prepare(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async {
            let auth = self.identities_for_attempt().await;
            *self.prepared.lock().unwrap_or_else(|p| p.into_inner()) = Some(auth);
        })
    }

    fn connect(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Connected, ConnectError>> + Send + '_>,
    > {
        Box::pin(self.start())
    }

    fn describe(&self, e: &SessionError) -> String {
        // A refusal names the key files that could not even be offered, too.
        match e {
            SessionError::Auth(AuthError::Refused(refusal)) => {
                let mut refusal = refusal.clone();
                refusal.unusable = self
                    .auth
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .destination
                    .key_files
                    .unusable
                    .clone();
                refusal.to_string()
            }
            e => e.to_string(),
        }
    }
}

/// Where the connection to the first hop comes from: the local addresses `BindAddress` (`-b`)
/// or, when it is not set, `BindInterface` (`-B`) gives, in order of preference; none when
/// neither is set (the system chooses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The setting, as messages name it (`BindAddress 127.0.0.2`, `BindInterface eth1`).
    setting: Option<String>,
    /// Port 0; an IPv6 link-local address keeps its interface's scope.
    addresses: Vec<SocketAddr>,
}

impl Origin {
    /// The origin `options` set. `BindAddress` wins over `BindInterface`, as in ssh.
    pub(crate) async fn of(options: &cli::Options) -> std::io::Result<Self> {
        let (setting, addresses) = match (&options.bind_address, &options.bind_interface) {
            (Some(address), _) => (
                format!("BindAddress {address}"),
                bind_addresses(address).await?,
            ),
            (None, Some(interface)) => (
                format!("BindInterface {interface}"),
                interface_addresses(interface)?,
            ),
            (None, None) => return Ok(Self::default()),
        };
        Ok(Self {
            setting: Some(setting),
            addresses,
        })
    }

    /// The origin of a connection from these addresses (tests).
    #[cfg(test)]
    fn addresses(setting: &str, addresses: &[IpAddr]) -> Self {
        Self {
            setting: Some(setting.to_owned()),
            addresses: addresses.iter().map(|ip| SocketAddr::new(*ip, 0)).collect(),
        }
    }

    /// Whether a setting chose the origin.
    pub(crate) fn is_set(&self) -> bool {
        self.setting.is_some()
    }
}

/// The local addresses `BindAddress` (`-b`) names: the address itself, or what the name
/// resolves to.
async fn bind_addresses(bind: &str) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = bind.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, 0)]);
    }
    let resolved = tokio::net::lookup_host((bind, 0)).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("could not resolve BindAddress {bind}: {e}"),
        )
    })?;
    Ok(resolved.collect())
}

/// The addresses of interface `name` (`BindInterface`, `-B`), in ssh's order of preference:
/// those that are neither loopback nor link-local first. An interface that does not exist, is
/// down or has no address is an error that says which.
#[cfg(unix)]
fn interface_addresses(name: &str) -> std::io::Result<Vec<SocketAddr>> {
    use nix::net::if_::InterfaceFlags;
    let mut names = std::collections::BTreeSet::new();
    let (mut exists, mut up) = (false, false);
    let mut found = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
        if ifa.interface_name != name {
            names.insert(ifa.interface_name);
            continue;
        }
        exists = true;
        if !ifa.flags.contains(InterfaceFlags::IFF_UP) {
            continue;
        }
        up = true;
        let Some(address) = ifa.address else { continue };
        if let Some(v4) = address.as_sockaddr_in() {
            found.push(SocketAddr::V4(std::net::SocketAddrV4::new(v4.ip(), 0)));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            let v6 = std::net::SocketAddrV6::from(*v6);
            found.push(SocketAddr::V6(std::net::SocketAddrV6::new(
                *v6.ip(),
                0,
                0,
                v6.scope_id(),
            )));
        }
    }
    if found.is_empty() {
        let why = if up {
            "has no address".to_owned()
        } else if exists {
            "is down".to_owned()
        } else {
            let names: Vec<String> = names.into_iter().collect();
            format!("does not exist (this machine has {})", names.join(", "))
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("BindInterface {name} {why}"),
        ));
    }
    Ok(prefer_routable(found))
}

#[cfg(not(unix))]
fn interface_addresses(name: &str) -> std::io::Result<Vec<SocketAddr>> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("BindInterface {name}: not supported on this system; give an address with -b"),
    ))
}

/// `addresses` with those neither loopback nor link-local first, each group in its order.
fn prefer_routable(mut addresses: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let local = |a: &SocketAddr| match a.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.is_unicast_link_local(),
    };
    addresses.sort_by_key(local);
    addresses
}

/// A TCP connection to `to`, from the first address of `from` of its family when `from` is
/// set (`BindAddress`, `BindInterface`: the source address a bastion's firewall allows),
/// else from wherever the system chooses.
pub(crate) async fn tcp_connect(to: SocketAddr, from: &Origin) -> std::io::Result<TcpStream> {
    let Some(setting) = &from.setting else {
        return TcpStream::connect(to).await;
    };
    let Some(local) = from.addresses.iter().find(|a| a.is_ipv4() == to.is_ipv4()) else {
        let family = if to.is_ipv4() { "IPv4" } else { "IPv6" };
        let list: Vec<String> = from.addresses.iter().map(|a| a.ip().to_string()).collect();
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!(
                "{setting} has no {family} address for {to} (it has {})",
                list.join(", ")
            ),
        ));
    };
    let socket = if to.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket
        .bind(*local)
        .map_err(|e| std::io::Error::new(e.kind(), format!("bind {}: {e}", local.ip())))?;
    socket.connect(to).await
}

/// How long `ConnectionAttempts` waits between two tries, as ssh (one a second).
const CONNECTION_ATTEMPT_PAUSE: Duration = Duration::from_secs(1);

/// TCP to the bastion (from the [`Origin`] `options` set, if any), tried `attempts` times a
/// second apart (`ConnectionAttempts`) while it fails, with ConnectTimeout for each try,
/// TCP_NODELAY, quick ACKs ([`QuickAck`]) and (unless `TCPKeepAlive no`) TCP keepalive
/// probes, which also keep NAT mappings alive on an idle tunnel.
async fn connect(
    spec: &SessionSpec,
    host: &str,
    port: u16,
    options: &cli::Options,
    attempts: u32,
) -> Result<QuickAck, ConnectError> {
    let mut tried = 1;
    let stream = loop {
        match connect_once(spec, host, port, options).await {
            Ok(s) => break s,
            Err(e) if tried < attempts => {
                debug!(error = ?e, tried, attempts, "connect failed; trying again (ConnectionAttempts)");
                tried += 1;
                tokio::time::sleep(CONNECTION_ATTEMPT_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    };
    let _ = stream.set_nodelay(true);
    if spec.tcp_keep_alive {
        let probes = socket2::TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE_IDLE)
            .with_interval(TCP_KEEPALIVE_INTERVAL);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&probes) {
            debug!(error = %e, "could not turn on TCP keepalive");
        }
    }
    Ok(QuickAck::new(stream))
}

/// One try of [`connect`]: the name resolved, each address tried in turn, within
/// ConnectTimeout.
async fn connect_once(
    spec: &SessionSpec,
    host: &str,
    port: u16,
    options: &cli::Options,
) -> Result<TcpStream, ConnectError> {
    let attempt = async {
        let from = Origin::of(options)
            .await
            .map_err(|e| ConnectError::Network(e.to_string()))?;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ConnectError::Network(format!("could not resolve hostname {host}: {e}")))?
            .filter(|a| match spec.address_family {
                cli::AddressFamily::Any => true,
                cli::AddressFamily::Inet => a.is_ipv4(),
                cli::AddressFamily::Inet6 => a.is_ipv6(),
            })
            .collect();
        let mut last = None;
        let mut all_refused = true;
        for a in &addrs {
            debug!(address = %a, "connecting");
            match tcp_connect(*a, &from).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    all_refused &= e.kind() == std::io::ErrorKind::ConnectionRefused;
                    last = Some(e);
                }
            }
        }
        Err(match last {
            Some(e) if all_refused => {
                ConnectError::Refused(format!("connect to host {host} port {port}: {e}"))
            }
            Some(e) => ConnectError::Network(format!("connect to host {host} port {port}: {e}")),
            None => ConnectError::Network(format!(
                "could not resolve hostname {host}: no usable address"
            )),
        })
    };
    let stream = match spec.connect_timeout {
        Some(t) => tokio::time::timeout(t, attempt).await.map_err(|_| {
            ConnectError::Network(format!(
                "connect to host {host} port {port}: timed out after {} s (ConnectTimeout)",
                t.as_secs()
            ))
        })??,
        None => attempt.await?,
    };
    Ok(stream)
}

/// Idle time before the first TCP keepalive probe (`TCPKeepAlive yes`).
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between TCP keepalive probes.
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::known_hosts::tests::{ecdsa, ed};

    fn options(args: &[&str]) -> cli::Options {
        let env = cli::Environment {
            home: Some(PathBuf::from("/nonexistent-home")),
            user: Some("tester".into()),
            cache_home: None,
        };
        let mut all = vec!["-F", "none"];
        all.extend_from_slice(args);
        match cli::parse_args_with_env(all, &env) {
            Ok(cli::Command::Run(o)) => o,
            other => panic!("{other:?}"),
        }
    }

    /// One connection attempt's host key check, as [`SshConnector`] makes it for the
    /// destination of `opts`: known_hosts read afresh, the process's memory of accepted keys.
    fn attempt(opts: &cli::Options, key: &PublicKey) -> Result<(), String> {
        let (name, port) = known_hosts_name(opts, &opts.destination_host, opts.port);
        host_key_verifier(opts, name, port, AcceptedKeys::process())
            .unwrap_or_else(|e| panic!("{e:?}"))
            .verify(key)
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    // Each test below uses host names of its own: the memory of accepted keys is the
    // process's, shared by every test in this binary.

    #[cfg(unix)]
    #[test]
    fn a_host_key_that_could_not_be_recorded_is_remembered_and_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // A record file that reads as missing and cannot be written, even by root (a
        // read-only mount, in production): a link into a directory that does not exist.
        let kh = dir.path().join("known_hosts");
        std::os::unix::fs::symlink(dir.path().join("missing/known_hosts"), &kh)
            .unwrap_or_else(|e| panic!("{e}"));
        let opts = options(&[
            "-o",
            &format!("UserKnownHostsFile={}", kh.display()),
            "-o",
            "GlobalKnownHostsFile=none",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-p",
            "2222",
            "unrecordable.test",
        ]);
        assert_eq!(attempt(&opts, &ed(1)), Ok(()), "attempt 1: a new host");
        assert!(!kh.exists(), "the key could not be recorded");
        // A reconnect to someone else's key: refused as a change, naming both keys.
        let refused = attempt(&opts, &ed(2)).err().unwrap_or_default();
        assert!(
            refused.starts_with(&format!(
                "host key for [unrecordable.test]:2222 has CHANGED: the server offered \
                 ED25519 key {}, but earlier in this run forwarder accepted another key for \
                 it: ED25519 key {} (which could not be recorded in {})",
                ed(2).fingerprint(),
                ed(1).fingerprint(),
                kh.display()
            )),
            "{refused}"
        );
        // So is a key of another type, and the first key is still trusted.
        assert!(
            attempt(&opts, &ecdsa(1))
                .err()
                .is_some_and(|e| e.contains("CHANGED")),
        );
        assert_eq!(attempt(&opts, &ed(1)), Ok(()));
        // Another name, or the same name on another port, is another host.
        let other = options(&[
            "-o",
            &format!("UserKnownHostsFile={}", kh.display()),
            "-o",
            "GlobalKnownHostsFile=none",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-p",
            "2223",
            "unrecordable.test",
        ]);
        assert_eq!(attempt(&other, &ed(2)), Ok(()));
    }

    #[test]
    fn with_user_known_hosts_file_none_the_first_key_stands_until_exit() {
        for (policy, host) in [
            ("no", "nowhere-no.test"),
            ("accept-new", "nowhere-new.test"),
        ] {
            let opts = options(&[
                "-o",
                "UserKnownHostsFile=none",
                "-o",
                "GlobalKnownHostsFile=none",
                "-o",
                &format!("StrictHostKeyChecking={policy}"),
                host,
            ]);
            assert_eq!(attempt(&opts, &ed(3)), Ok(()), "{policy}");
            assert_eq!(attempt(&opts, &ed(3)), Ok(()), "{policy}");
            let refused = attempt(&opts, &ed(4)).err().unwrap_or_default();
            assert!(
                refused.contains("has CHANGED")
                    && refused.contains("with no known_hosts file to record it in")
                    && refused.contains(&ed(3).fingerprint()),
                "{policy}: {refused}"
            );
        }
    }

    #[test]
    fn a_recorded_key_whose_line_is_removed_still_stands() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let kh = dir.path().join("known_hosts");
        let opts = options(&[
            "-o",
            &format!("UserKnownHostsFile={}", kh.display()),
            "-o",
            "GlobalKnownHostsFile=none",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "recorded.test",
        ]);
        assert_eq!(attempt(&opts, &ed(5)), Ok(()));
        assert_eq!(
            read(&kh),
            format!("recorded.test {}\n", ed(5).to_openssh_line())
        );
        // The file is replaced by one without the line (a config map synced again).
        std::fs::write(&kh, "").unwrap_or_else(|e| panic!("{e}"));
        let refused = attempt(&opts, &ed(6)).err().unwrap_or_default();
        assert!(
            refused.contains("has CHANGED")
                && refused.contains(&format!(
                    "recorded in {}, which no longer lists it",
                    kh.display()
                )),
            "{refused}"
        );
        assert_eq!(read(&kh), "", "nothing recorded for a refused key");
        // A key listed in the file is the file's answer, whatever was accepted before.
        std::fs::write(&kh, format!("recorded.test {}\n", ed(6).to_openssh_line()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(attempt(&opts, &ed(6)), Ok(()));
    }

    #[test]
    fn a_key_listed_under_the_bare_name_is_trusted_on_another_port_and_not_recorded_again() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let kh = dir.path().join("known_hosts");
        let listed = format!("bare.test {}\n", ed(7).to_openssh_line());
        std::fs::write(&kh, &listed).unwrap_or_else(|e| panic!("{e}"));
        let with = |extra: &[&str]| {
            let user = format!("UserKnownHostsFile={}", kh.display());
            let mut args = vec!["-o", &user, "-o", "GlobalKnownHostsFile=none", "-p", "2222"];
            args.extend_from_slice(extra);
            args.push("bare.test");
            options(&args)
        };
        for policy in ["yes", "accept-new", "no"] {
            let opts = with(&["-o", &format!("StrictHostKeyChecking={policy}")]);
            assert_eq!(attempt(&opts, &ed(7)), Ok(()), "{policy}");
        }
        assert_eq!(read(&kh), listed, "no [bare.test]:2222 line is added");
        // With HostKeyAlias the key is looked up under the alias alone, as ssh does.
        let opts = with(&["-o", "HostKeyAlias=alias-of-bare.test"]);
        let refused = attempt(&opts, &ed(7)).err().unwrap_or_default();
        assert!(
            refused.starts_with("host key for alias-of-bare.test is not known"),
            "{refused}"
        );
    }

    #[test]
    fn a_key_a_revoked_host_keys_file_lists_is_refused_first_under_every_policy_and_each_attempt() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let kh = dir.path().join("known_hosts");
        let revoked = dir.path().join("revoked_keys");
        std::fs::write(
            &kh,
            format!("listed.revoked.test {}\n", ed(11).to_openssh_line()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&revoked, format!("# gone\n{}\n", ed(11).to_openssh_line()))
            .unwrap_or_else(|e| panic!("{e}"));
        let opts = |policy: &str, host: &str| {
            options(&[
                "-o",
                &format!("UserKnownHostsFile={}", kh.display()),
                "-o",
                "GlobalKnownHostsFile=none",
                "-o",
                &format!("RevokedHostKeys={}", revoked.display()),
                "-o",
                &format!("StrictHostKeyChecking={policy}"),
                host,
            ])
        };
        // Known in known_hosts, yet revoked, whatever the policy.
        for policy in ["yes", "accept-new", "no"] {
            let refused = attempt(&opts(policy, "listed.revoked.test"), &ed(11))
                .err()
                .unwrap_or_default();
            assert!(
                refused.starts_with(&format!(
                    "host key for listed.revoked.test (ED25519 {}) is revoked by {} \
                     (RevokedHostKeys)",
                    ed(11).fingerprint(),
                    revoked.display()
                )),
                "{policy}: {refused}"
            );
        }
        // Another key is judged by known_hosts as before.
        assert_eq!(attempt(&opts("no", "other.revoked.test"), &ed(12)), Ok(()));
        // The file is read again for each attempt: a key revoked since is refused.
        std::fs::write(&revoked, format!("{}\n", ed(12).to_openssh_line()))
            .unwrap_or_else(|e| panic!("{e}"));
        let refused = attempt(&opts("no", "other.revoked.test"), &ed(12))
            .err()
            .unwrap_or_default();
        assert!(refused.contains("is revoked by"), "{refused}");
        // A missing file refuses every attempt (retried: it may be being replaced), naming
        // the file; an unusable one refuses it for good.
        std::fs::remove_file(&revoked).unwrap_or_else(|e| panic!("{e}"));
        let o = opts("no", "other.revoked.test");
        match host_key_verifier(&o, "other.revoked.test", 22, AcceptedKeys::process()) {
            Err(ConnectError::Network(e)) => assert!(
                e.contains(&revoked.display().to_string()) && e.contains("RevokedHostKeys"),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
        std::fs::write(&revoked, "not a key\n").unwrap_or_else(|e| panic!("{e}"));
        match host_key_verifier(&o, "other.revoked.test", 22, AcceptedKeys::process()) {
            Err(ConnectError::Permanent(e)) => assert!(
                e.contains(&revoked.display().to_string()) && e.contains("RevokedHostKeys"),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn global_known_hosts_files_are_read_never_written_and_their_revocations_count() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let user = dir.path().join("known_hosts");
        let global = dir.path().join("ssh_known_hosts");
        let global2 = dir.path().join("ssh_known_hosts2");
        std::fs::write(&user, format!("revoked.test {}\n", ed(8).to_openssh_line()))
            .unwrap_or_else(|e| panic!("{e}"));
        let global_text = format!(
            "@revoked revoked.test {}\nglobal.test {}\n",
            ed(8).to_openssh_line(),
            ed(9).to_openssh_line()
        );
        std::fs::write(&global, &global_text).unwrap_or_else(|e| panic!("{e}"));
        let opts = |host: &str| {
            options(&[
                "-o",
                &format!("UserKnownHostsFile={}", user.display()),
                "-o",
                &format!(
                    "GlobalKnownHostsFile={} {}",
                    global.display(),
                    global2.display()
                ),
                "-o",
                "StrictHostKeyChecking=accept-new",
                host,
            ])
        };
        // The user's file lists the key; the global file revokes it.
        let refused = attempt(&opts("revoked.test"), &ed(8))
            .err()
            .unwrap_or_default();
        assert!(
            refused.starts_with("host key for revoked.test is revoked")
                && refused.contains(&format!("line 1 of {}", global.display())),
            "{refused}"
        );
        // A key only the global file lists is trusted, and recorded nowhere.
        let user_before = read(&user);
        assert_eq!(attempt(&opts("global.test"), &ed(9)), Ok(()));
        // A changed key is shown with the global file's line.
        let refused = attempt(&opts("global.test"), &ed(10))
            .err()
            .unwrap_or_default();
        assert!(
            refused.contains(&format!("line 2 of {}", global.display())),
            "{refused}"
        );
        assert_eq!(read(&user), user_before);
        // A new host is recorded in the user's file, never in a global one.
        assert_eq!(attempt(&opts("new-global.test"), &ed(11)), Ok(()));
        assert!(read(&user).ends_with(&format!("new-global.test {}\n", ed(11).to_openssh_line())));
        assert_eq!(read(&global), global_text);
        assert!(!global2.exists());
    }

    /// An agent at `path` that lists the keys `keys` holds when it is asked, each with the
    /// comment `key<n>` for its first byte, as ssh-agent does after `ssh-add` and `ssh-add -d`.
    fn agent_listing(
        path: &Path,
        keys: Arc<std::sync::Mutex<Vec<u8>>>,
    ) -> tokio::task::JoinHandle<()> {
        use ssh_auth::agent::{AgentIdentity, AgentResponse, frame_length};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::UnixListener::bind(path).unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut header = [0u8; 4];
                s.read_exact(&mut header)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let mut body = vec![0u8; frame_length(header).unwrap_or_else(|e| panic!("{e}"))];
                s.read_exact(&mut body)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(body, [11], "only REQUEST_IDENTITIES is expected");
                let held = keys.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let listed: Vec<(PublicKey, String)> =
                    held.iter().map(|&n| (ed(n), format!("key{n}"))).collect();
                let mut answer = Vec::new();
                AgentResponse::Identities(
                    listed
                        .iter()
                        .map(|(key, comment)| AgentIdentity {
                            key_blob: key.blob(),
                            comment: comment.as_bytes(),
                        })
                        .collect(),
                )
                .encode_frame(&mut answer);
                s.write_all(&answer).await.unwrap_or_else(|e| panic!("{e}"));
            }
        })
    }

    // A platform rotates the key in its agent (ssh-add of the new key, ssh-add -d of the
    // old) while its tunnel runs: the next attempt must offer the new key, as OpenSSH asks
    // the agent at every connection; a list read once would offer the old key for ever.
    #[tokio::test]
    async fn the_agent_is_asked_for_its_keys_before_every_attempt() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let socket = dir.path().join("agent.sock");
        let held = Arc::new(std::sync::Mutex::new(vec![21]));
        let agent = agent_listing(&socket, held.clone());
        // A key file beside the agent: it must keep working whatever the agent does.
        let file = dir.path().join("id_ed25519");
        std::fs::write(&file, include_str!("../../auth/testdata/ed25519"))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        let opts = options(&[
            "-o",
            &format!("IdentityAgent={}", socket.display()),
            "-i",
            &file.display().to_string(),
            "agent-rotation.test",
        ]);
        let spec = config::TunnelConfig::from_options(&opts)
            .unwrap_or_else(|e| panic!("{e}"))
            .session;
        let connector = SshConnector::prepare(spec).await;
        let attempt = || async {
            let auth = connector.current_auth().await;
            let ids = auth.for_attempt(&connector.spec).await;
            ids.destination
                .identities
                .iter()
                .map(|i| i.source().to_owned())
                .collect::<Vec<_>>()
        };
        let file_source = file.display().to_string();
        assert_eq!(attempt().await, ["agent key key21", file_source.as_str()]);
        // Rotated in the agent: no file changed.
        *held.lock().unwrap_or_else(|p| p.into_inner()) = vec![22];
        assert_eq!(attempt().await, ["agent key key22", file_source.as_str()]);
        // An agent that cannot be reached: the key files alone, as at start-up.
        agent.abort();
        let _ = agent.await;
        std::fs::remove_file(&socket).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(attempt().await, [file_source.as_str()]);
    }

    // BindAddress: the connection comes from the address given (127.0.0.2, which loopback
    // has too), or a name for it; an address of the wrong family, or one this machine does
    // not have, is an error that says so, never a connection from elsewhere.
    #[tokio::test]
    async fn a_bind_address_is_the_source_of_the_connection_or_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let to = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let from = Origin::of(&options(&["-b", "127.0.0.2", "h"]))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            from,
            Origin::addresses("BindAddress 127.0.0.2", &[IpAddr::from([127, 0, 0, 2])])
        );
        let _client = tcp_connect(to, &from)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, peer) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 2]));
        // A name: what it resolves to.
        let named = bind_addresses("localhost")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(named.iter().any(|a| a.ip().is_loopback()), "{named:?}");
        // No address of the target's family.
        let v6 = Origin::addresses("BindAddress ::1", &[std::net::Ipv6Addr::LOCALHOST.into()]);
        let e = tcp_connect(to, &v6)
            .await
            .err()
            .unwrap_or_else(|| panic!("connected"));
        assert_eq!(e.kind(), std::io::ErrorKind::AddrNotAvailable);
        assert!(
            e.to_string()
                .starts_with("BindAddress ::1 has no IPv4 address"),
            "{e}"
        );
        // Not an address of this machine (TEST-NET-1).
        let elsewhere = Origin::addresses("BindAddress 192.0.2.1", &[[192, 0, 2, 1].into()]);
        let e = tcp_connect(to, &elsewhere)
            .await
            .err()
            .unwrap_or_else(|| panic!("bound to an address this machine does not have"));
        assert_eq!(e.kind(), std::io::ErrorKind::AddrNotAvailable, "{e}");
        assert!(e.to_string().starts_with("bind 192.0.2.1: "), "{e}");
        // Through `connect`, as a session makes it: an error naming the host and the bind.
        let spec = config::TunnelConfig::from_options(&options(&["127.0.0.1"]))
            .unwrap_or_else(|e| panic!("{e}"))
            .session;
        let bound = options(&["-b", "192.0.2.1", "127.0.0.1"]);
        match connect(&spec, "127.0.0.1", to.port(), &bound, 1).await {
            Err(ConnectError::Network(m)) => assert!(
                m.contains(&format!("port {}", to.port())) && m.contains("bind 192.0.2.1"),
                "{m}"
            ),
            Err(e) => panic!("not a network error: {e:?}"),
            Ok(_) => panic!("connected from an address this machine does not have"),
        }
    }

    // BindInterface: the loopback interface's address is the source (loopback is used when
    // the interface has nothing else, as ssh does); BindAddress wins over it; an interface
    // that does not exist is an error that names the ones that do.
    #[tokio::test]
    async fn a_bind_interface_is_the_source_of_the_connection_or_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let to = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let from = Origin::of(&options(&["-B", "lo", "h"]))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Loopback's own address, read from the kernel's list of interfaces.
        let loopback = interface_addresses("lo").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            loopback.contains(&SocketAddr::from(([127, 0, 0, 1], 0))),
            "{loopback:?}"
        );
        assert_eq!(
            from,
            Origin {
                setting: Some("BindInterface lo".into()),
                addresses: loopback
            }
        );
        let _client = tcp_connect(to, &from)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, peer) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 1]));
        let both = Origin::of(&options(&["-B", "lo", "-b", "127.0.0.3", "h"]))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            both,
            Origin::addresses("BindAddress 127.0.0.3", &[[127, 0, 0, 3].into()])
        );
        let e = Origin::of(&options(&["-B", "nosuch0", "h"]))
            .await
            .err()
            .unwrap_or_else(|| panic!("an interface that does not exist"));
        assert_eq!(e.kind(), std::io::ErrorKind::AddrNotAvailable);
        let e = e.to_string();
        assert!(
            e.starts_with("BindInterface nosuch0 does not exist (this machine has ")
                && e.contains("lo"),
            "{e}"
        );
    }

    #[test]
    fn an_interface_s_routable_addresses_come_before_loopback_and_link_local_ones() {
        let a = |s: &str| SocketAddr::new(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")), 0);
        let sorted = prefer_routable(vec![
            a("127.0.0.1"),
            a("fe80::1"),
            a("::1"),
            a("192.0.2.7"),
            a("2001:db8::7"),
            a("198.51.100.7"),
        ]);
        assert_eq!(
            sorted,
            [
                a("192.0.2.7"),
                a("2001:db8::7"),
                a("198.51.100.7"),
                a("127.0.0.1"),
                a("fe80::1"),
                a("::1"),
            ]
        );
    }

    // ConnectionAttempts: a port nothing listens on yet is tried again a second later, until
    // it listens or the tries run out.
    #[tokio::test]
    async fn connection_attempts_try_again_a_second_apart() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            l.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
        };
        let unbound = options(&["127.0.0.1"]);
        let spec = config::TunnelConfig::from_options(&unbound)
            .unwrap_or_else(|e| panic!("{e}"))
            .session;
        assert!(matches!(
            connect(&spec, "127.0.0.1", port, &unbound, 1).await,
            Err(ConnectError::Refused(_))
        ));
        // Listening from half a second on: the second or third try gets it.
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let _ = tokio::time::timeout(Duration::from_secs(10), l.accept()).await;
        });
        let connected = tokio::time::timeout(
            Duration::from_secs(20),
            connect(&spec, "127.0.0.1", port, &unbound, 5),
        )
        .await
        .unwrap_or_else(|_| panic!("five tries took more than 20 s"));
        assert!(connected.is_ok(), "{:?}", connected.err());
        let _ = late.await;
    }

    // A port nothing listens on (sshd restarting) is told apart from other network
    // failures: the supervisor retries it sooner.
    #[tokio::test]
    async fn a_port_nobody_listens_on_is_a_refused_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let unbound = options(&["127.0.0.1"]);
        let spec = config::TunnelConfig::from_options(&unbound)
            .unwrap_or_else(|e| panic!("{e}"))
            .session;
        // Listening: connected.
        assert!(connect(&spec, "127.0.0.1", port, &unbound, 1).await.is_ok());
        drop(listener);
        match connect(&spec, "127.0.0.1", port, &unbound, 1).await {
            Err(ConnectError::Refused(m)) => {
                assert!(m.contains(&format!("port {port}")), "{m}");
                assert!(m.contains("refused"), "{m}");
            }
            Err(e) => panic!("not a refusal: {e:?}"),
            Ok(_) => panic!("connected to a closed port"),
        }
    }

    #[test]
    fn known_hosts_read_errors_are_retried_unless_a_person_must_act() {
        let transient = [
            std::io::Error::from_raw_os_error(24), // EMFILE
            std::io::Error::from_raw_os_error(23), // ENFILE
            std::io::Error::from_raw_os_error(5),  // EIO
        ];
        for e in transient {
            assert!(
                matches!(known_hosts_error(e), ConnectError::Network(_)),
                "should be retried"
            );
        }
        let permanent = [
            std::io::Error::from_raw_os_error(13), // EACCES
            std::io::Error::from_raw_os_error(21), // EISDIR
            std::io::Error::new(std::io::ErrorKind::InvalidData, "too large"),
        ];
        for e in permanent {
            assert!(matches!(known_hosts_error(e), ConnectError::Permanent(_)));
        }
    }
}
