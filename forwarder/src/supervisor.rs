//! One supervisor per SSH session: it connects, watches the session, and connects again
//! when the session ends, publishing the current session to everyone who needs one.
//!
//! ```text
//!             ┌────────────── BastionGate (four handshakes at a time; PerSourcePenalties ledger)
//!             ▼
//!  Connector::connect ──> handshake ──authenticated──> Up(SessionHandle) ──watch──> tunnels, dialers
//!       ▲       │ failed                                   │ driver ended (server closed, network
//!       │       ▼                                          │ error, keepalive timeout, protocol error)
//!       └── Waiting (backoff with full jitter) <───────────┘
//!               │ host key changed / not trusted, or Reconnect=no
//!               ▼
//!             Failed (never retried)            stop() ──> DISCONNECT, Stopped
//! ```
//! The first attempt fails fast unless told otherwise, so a mistake on the command line is
//! seen at once. A refused authentication waits the backoff cap (an admin may be fixing
//! `authorized_keys`); the same failure is logged in full once, not once per attempt.
//!
//! The backoff and the penalty ledger are plain values fed the time, tested without tokio.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ssh_transport::random::{OsRandom, SecureRandom};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::ReconnectPolicy;
use crate::driver::SessionHandle;
use crate::metrics::BastionMetrics;
use crate::session::SessionError;

/// A future the supervisor owns: the session's driver.
pub type DriverFuture = Pin<Box<dyn Future<Output = Result<(), SessionError>> + Send>>;

/// A session that has been started (TCP connected, driver ready to run) but not yet
/// authenticated: the supervisor runs `driver` and waits on `handle`.
pub struct Connected {
    /// The running session's handle.
    pub handle: SessionHandle,
    /// The driver; the supervisor polls it for the life of the session.
    pub driver: DriverFuture,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connected")
    }
}

/// Why an attempt failed before a session could start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// Nothing reached an SSH server (name resolution, TCP connect): sshd keeps no penalty.
    Network(String),
    /// Every address of the host refused the TCP connection: nothing listens on the port,
    /// as while sshd restarts. Costs the server nothing (a SYN answered by a reset), so it
    /// is retried on a faster schedule than other failures ([`Backoff::next_delay_refused`]).
    Refused(String),
    /// Something only a person can fix (a known_hosts file that cannot be read, a key file
    /// gone): never retried.
    Permanent(String),
    /// A jump host's session failed before it was up: an SSH server saw us, so sshd charges
    /// its penalty (`auth`: the login was refused, else the connection ended before it).
    Hop {
        /// What failed, naming the jump host.
        message: String,
        /// Whether the login was refused.
        auth: bool,
    },
}

/// Makes sessions: the part of an attempt that knows about sockets and keys.
pub trait Connector: Send + Sync + 'static {
    /// What an attempt can do before it needs the bastion (ask the agent for its keys, read
    /// changed key files): run before the bastion's handshake gate is taken, so that a slow
    /// agent holds up no other session to the same bastion. The next [`connect`] uses it.
    ///
    /// [`connect`]: Connector::connect
    fn prepare(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }

    /// Connects and starts a session (its driver not yet polled).
    fn connect(&self)
    -> Pin<Box<dyn Future<Output = Result<Connected, ConnectError>> + Send + '_>>;

    /// How a session's failure reads for a person.
    fn describe(&self, error: &SessionError) -> String {
        error.to_string()
    }
}

/// What the supervisor is doing, as published to tunnels and dialers.
#[derive(Clone, Debug)]
pub enum SessionState {
    /// An attempt is under way (the first one is attempt 1).
    Connecting {
        /// Attempt number since the supervisor started.
        attempt: u32,
    },
    /// A session is up.
    Up(SessionHandle),
    /// Waiting before the next attempt.
    Waiting {
        /// Why the last session or attempt ended.
        cause: String,
        /// When the next attempt starts.
        retry_at: Instant,
    },
    /// Given up: only a person can fix this (or reconnecting is off).
    Failed(String),
    /// Stopped on request.
    Stopped,
}

/// What kind of failure ended the last attempt or session, for callers that act on it
/// (a dialer's typed errors); the message a person reads is published with the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Nothing reached an SSH server (name resolution, TCP connect, connection lost).
    Network,
    /// The server's host key is unknown, changed or not trusted.
    HostKey,
    /// The server refused every authentication method we offered.
    Auth,
    /// Something only a person can fix before the session starts (an unreadable
    /// known_hosts file, a key file gone).
    Config,
    /// The session failed or ended for another reason (a protocol error, keepalives
    /// unanswered, the server closed it).
    Session,
}

/// The last failure a supervisor saw, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Its kind.
    pub kind: FailureKind,
    /// The message a person reads (the same as in [`SessionState`]).
    pub message: String,
}

/// The kind of a session error.
pub fn failure_kind(e: &SessionError) -> FailureKind {
    use ssh_transport::Error as T;
    match e {
        _ if is_permanent(e) => FailureKind::HostKey,
        SessionError::Auth(_) => FailureKind::Auth,
        SessionError::Transport(T::ConnectionLost) => FailureKind::Network,
        _ => FailureKind::Session,
    }
}

/// Why [`SupervisorHandle::session`] returned no session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// No session came up within the wait.
    Timeout(Duration),
    /// The supervisor gave up.
    Failed(String),
    /// The supervisor was stopped.
    Stopped,
}

impl std::fmt::Display for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout(d) => write!(
                f,
                "no SSH session came up within {} s (SessionWaitTimeout)",
                d.as_secs()
            ),
            Self::Failed(why) => write!(f, "the tunnel has stopped: {why}"),
            Self::Stopped => f.write_str("the tunnel is stopping"),
        }
    }
}

impl std::error::Error for WaitError {}

/// How a supervisor ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on request.
    Stopped,
    /// Gave up, with the message a person reads.
    Failed(String),
}

/// How much sooner a refused connection is retried than other failures.
const REFUSED_SPEEDUP: u32 = 5;

/// Exponential backoff with full jitter: attempt n waits a uniformly random time in
/// `[0, min(max, initial * 2^n)]`.
#[derive(Debug)]
pub struct Backoff {
    policy: ReconnectPolicy,
    step: u32,
}

impl Backoff {
    /// A backoff at its first step.
    pub fn new(policy: ReconnectPolicy) -> Self {
        Self { policy, step: 0 }
    }

    /// The ceiling of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.step.min(20)).unwrap_or(u32::MAX);
        self.policy
            .initial
            .checked_mul(factor)
            .unwrap_or(self.policy.max)
            .min(self.policy.max)
    }

    /// The next delay, `unit` in `[0, 1)` being the jitter draw.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let d = self.ceiling().mul_f64(unit.clamp(0.0, 1.0));
        self.step = self.step.saturating_add(1);
        d
    }

    /// The next delay after a connection the host refused (nothing listening: sshd
    /// restarting). Its ceiling starts at a fifth of the usual one and doubles the same way
    /// up to the same cap, so a restart that takes a fraction of a second is noticed within
    /// about a tenth of a second (a fifth after a lost session, whose immediate try takes the
    /// first step) while a long outage is still probed at most every `max`.
    pub fn next_delay_refused(&mut self, unit: f64) -> Duration {
        let factor = 1u32.checked_shl(self.step.min(20)).unwrap_or(u32::MAX);
        let ceiling = (self.policy.initial / REFUSED_SPEEDUP)
            .checked_mul(factor)
            .unwrap_or(self.policy.max)
            .min(self.policy.max);
        self.step = self.step.saturating_add(1);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The delay after a session that was up ended. Most losses are one dropped connection,
    /// so with the backoff at its first step the first try is at once (the handshake gate
    /// and the penalty ledger still apply); a session that keeps dropping soon after coming
    /// up (the backoff resets only after one stayed up) gets the growing delays instead.
    pub fn after_loss(&mut self, unit: f64) -> Duration {
        if self.step == 0 {
            self.step = 1;
            Duration::ZERO
        } else {
            self.next_delay(unit)
        }
    }

    /// Back to the first step (after a session that stayed up long enough).
    pub fn reset(&mut self) {
        self.step = 0;
    }
}

/// What an attempt cost with sshd's PerSourcePenalties (OpenSSH 9.8 and later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Penalty {
    /// A failed authentication (`authfail`, 5 s by default).
    AuthFail,
    /// A connection closed before authentication (`noauth`, 1 s by default).
    NoAuth,
}

impl Penalty {
    /// sshd's default for it.
    pub fn duration(self) -> Duration {
        match self {
            Self::AuthFail => Duration::from_secs(5),
            Self::NoAuth => Duration::from_secs(1),
        }
    }
}

/// A model of the penalty sshd holds against our address: penalties add up (each one
/// extends the expiry by its length), they run out in real time, and sshd refuses the
/// source while what is outstanding reaches `min` (15 s by default). We keep what is
/// outstanding, plus the worst penalty of every attempt under way and of the next one,
/// under [`PenaltyLedger::LIMIT`], so that sshd never blocks the platform's address.
#[derive(Clone, Copy, Debug, Default)]
pub struct PenaltyLedger {
    expiry: Option<Instant>,
    /// The worst penalties of the attempts under way, reserved when each began.
    reserved: Duration,
}

impl PenaltyLedger {
    /// Outstanding penalty plus the next attempt's worst are kept at or under this: 3 s
    /// under sshd's default `min` of 15 s, for clock differences.
    pub const LIMIT: Duration = Duration::from_secs(12);

    /// An attempt at `now` cost `penalty`.
    pub fn record(&mut self, now: Instant, penalty: Penalty) {
        let base = self.expiry.filter(|e| *e > now).unwrap_or(now);
        self.expiry = Some(base + penalty.duration());
    }

    /// What sshd would still hold against us at `now`.
    pub fn outstanding(&self, now: Instant) -> Duration {
        self.expiry
            .map(|e| e.saturating_duration_since(now))
            .unwrap_or_default()
    }

    /// How long to wait from `now`, at most, before an attempt whose worst penalty is
    /// `worst` may begin beside the attempts under way (one that ends sooner frees its
    /// reservation sooner).
    pub fn wait_before_attempt(&self, now: Instant, worst: Penalty) -> Duration {
        (self.outstanding(now) + self.reserved + worst.duration()).saturating_sub(Self::LIMIT)
    }

    /// How much of that wait is for penalties sshd already holds, not for the attempts
    /// under way.
    pub fn penalty_wait(&self, now: Instant, worst: Penalty) -> Duration {
        (self.outstanding(now) + worst.duration()).saturating_sub(Self::LIMIT)
    }

    /// An attempt whose worst penalty is `worst` begins.
    pub fn reserve(&mut self, worst: Penalty) {
        self.reserved += worst.duration();
    }

    /// The attempt that reserved `worst` ended at `now`, charged `charged`.
    pub fn settle(&mut self, now: Instant, worst: Penalty, charged: Option<Penalty>) {
        self.reserved = self.reserved.saturating_sub(worst.duration());
        if let Some(p) = charged {
            self.record(now, p);
        }
    }
}

/// Handshakes to one bastion that may run at once, unless the fleet file says otherwise
/// (`[admin] handshakes_per_bastion`). sshd's `MaxStartups` (10:30:100 by default) starts
/// dropping unauthenticated connections at ten, counting every client of the bastion; four
/// leave room for people and for a second replica of the fleet.
pub const HANDSHAKES_PER_BASTION: usize = 4;

/// The most handshakes to one bastion a fleet file may allow at once.
pub const MAX_HANDSHAKES_PER_BASTION: usize = 64;

/// What all supervisors of one bastion share: at most its limit of handshakes at a time
/// ([`HANDSHAKES_PER_BASTION`] unless the fleet file sets another), so a reconnect storm
/// cannot trip sshd's `MaxStartups`; the penalty ledger of our address there; and which
/// logins it accepted lately.
///
/// An attempt reserves in the ledger the worst penalty it can earn: a failed login's,
/// unless sshd accepted the same login since this supervisor last saw a failure, in which
/// case a connection's that ends before its login. So after a bastion restarts, the first
/// attempts of a login probe it (two at a time, as sshd's 15 s threshold allows), and once
/// one is in, the others follow four at a time. A refused login forgets the acceptance.
#[derive(Debug)]
pub struct BastionGate {
    handshakes: tokio::sync::Semaphore,
    state: Mutex<GateState>,
    /// Woken when an attempt ends and frees its reservation.
    settled: tokio::sync::Notify,
    /// The fleet's series of this bastion, if it keeps them.
    metrics: Option<BastionMetrics>,
}

#[derive(Debug, Default)]
struct GateState {
    /// How many handshakes may run at once.
    limit: usize,
    /// Permits of running handshakes to forget as they end, after the limit was lowered:
    /// the semaphore's permits are `limit + owed`.
    owed: usize,
    ledger: PenaltyLedger,
    /// When sshd last accepted each login (by [`SupervisorConfig::login`]).
    accepted: HashMap<String, Instant>,
}

impl GateState {
    /// The worst penalty an attempt with `login` can earn, for a supervisor whose last
    /// failure (or start) was at `since`.
    fn worst(&self, login: &str, since: Instant) -> Penalty {
        match self.accepted.get(login) {
            Some(at) if *at >= since => Penalty::NoAuth,
            _ => Penalty::AuthFail,
        }
    }
}

impl BastionGate {
    /// A gate for a bastion nobody has connected to yet, [`HANDSHAKES_PER_BASTION`] at a
    /// time.
    pub fn new() -> Arc<Self> {
        Self::with_limit(HANDSHAKES_PER_BASTION)
    }

    /// A gate that lets `limit` handshakes run at once (1 to
    /// [`MAX_HANDSHAKES_PER_BASTION`]; outside, the nearest).
    pub fn with_limit(limit: usize) -> Arc<Self> {
        Self::build(limit, None)
    }

    /// A gate like [`with_limit`](Self::with_limit)'s that keeps `metrics`: its attempts
    /// under way and waiting, and how long each waited.
    pub fn observed(limit: usize, metrics: BastionMetrics) -> Arc<Self> {
        Self::build(limit, Some(metrics))
    }

    fn build(limit: usize, metrics: Option<BastionMetrics>) -> Arc<Self> {
        let limit = limit.clamp(1, MAX_HANDSHAKES_PER_BASTION);
        if let Some(m) = &metrics {
            m.limit.set(limit as i64);
        }
        Arc::new(Self {
            handshakes: tokio::sync::Semaphore::new(limit),
            state: Mutex::new(GateState {
                limit,
                ..GateState::default()
            }),
            settled: tokio::sync::Notify::new(),
            metrics,
        })
    }

    /// How many handshakes may run at once.
    pub fn limit(&self) -> usize {
        self.state().limit
    }

    /// Changes how many handshakes may run at once (a reloaded fleet file). A higher limit
    /// lets waiting attempts go now. A lower one takes back free permits now, and those of
    /// running handshakes as they end, so no attempt starts until the running ones are
    /// within it.
    pub fn set_limit(&self, limit: usize) {
        let limit = limit.clamp(1, MAX_HANDSHAKES_PER_BASTION);
        let mut st = self.state();
        let old = std::mem::replace(&mut st.limit, limit);
        if let Some(m) = &self.metrics {
            m.limit.set(limit as i64);
        }
        if limit > old {
            let more = limit - old;
            let forgiven = more.min(st.owed);
            st.owed -= forgiven;
            self.handshakes.add_permits(more - forgiven);
        } else {
            let fewer = old - limit;
            st.owed += fewer - self.handshakes.forget_permits(fewer);
        }
    }

    /// Whether sshd holds nothing against this address there, as far as the ledger knows, and
    /// no attempt has a reservation in it: forgetting the gate would lose nothing.
    pub fn is_idle(&self) -> bool {
        let st = self.state();
        st.ledger.outstanding(now()).is_zero() && st.ledger.reserved.is_zero()
    }

    /// Waits for a handshake's turn: one of [`limit`](Self::limit) at a time.
    async fn turn(&self) -> Turn<'_> {
        // The semaphore is never closed: `None` cannot happen.
        Turn {
            gate: self,
            permit: self.handshakes.acquire().await.ok(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An attempt with `login` that reserved `worst` ended at `now`: its reservation is
    /// freed, its penalty charged, and an accepted or refused login remembered.
    fn settle(&self, login: &str, worst: Penalty, now: Instant, ended: Settled) {
        {
            let mut st = self.state();
            let charged = match ended {
                Settled::Accepted => {
                    st.accepted.insert(login.to_owned(), now);
                    None
                }
                Settled::Refused(p) => {
                    if p == Some(Penalty::AuthFail) {
                        st.accepted.remove(login);
                    }
                    p
                }
            };
            st.ledger.settle(now, worst, charged);
        }
        self.settled.notify_waiters();
    }
}

/// A handshake's place at its bastion's gate, given back when it ends (or forgotten, when the
/// limit was lowered meanwhile).
struct Turn<'a> {
    gate: &'a BastionGate,
    permit: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            let mut st = self.gate.state();
            if st.owed > 0 {
                st.owed -= 1;
                p.forget();
            }
        }
    }
}

/// An attempt waiting at its gate (for its turn, then for the penalties), counted in
/// `forwarder_bastion_handshakes_waiting` until it begins or is stopped.
struct Queued<'g> {
    gate: &'g BastionGate,
    since: Instant,
}

impl<'g> Queued<'g> {
    fn new(gate: &'g BastionGate) -> Self {
        if let Some(m) = &gate.metrics {
            m.waiting.inc();
        }
        Self { gate, since: now() }
    }

    /// The attempt begins: how long it waited is observed, and it counts as in progress
    /// until `reservation` is dropped.
    fn begin<'a>(self, login: &'a str, worst: Penalty) -> Reservation<'a>
    where
        'g: 'a,
    {
        if let Some(m) = &self.gate.metrics {
            m.wait_seconds
                .observe(now().saturating_duration_since(self.since).as_secs_f64());
            m.in_progress.inc();
        }
        Reservation {
            gate: self.gate,
            login,
            worst,
            ended: Settled::Refused(None),
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if let Some(m) = &self.gate.metrics {
            m.waiting.dec();
        }
    }
}

/// How an attempt ended, for the gate.
#[derive(Clone, Copy, Debug)]
enum Settled {
    /// sshd accepted the login.
    Accepted,
    /// It did not, charging this.
    Refused(Option<Penalty>),
}

/// An attempt's place in the gate: settled when dropped, with what `ended` says by then
/// (a refusal that cost nothing, if the attempt was stopped).
struct Reservation<'g> {
    gate: &'g BastionGate,
    login: &'g str,
    worst: Penalty,
    ended: Settled,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(m) = &self.gate.metrics {
            m.in_progress.dec();
        }
        self.gate.settle(self.login, self.worst, now(), self.ended);
    }
}

/// Now, on tokio's clock (which tests pause and advance).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A cloneable handle on a supervisor: the current session, waits, and stop.
#[derive(Clone, Debug)]
pub struct SupervisorHandle {
    state: watch::Receiver<SessionState>,
    stop: Arc<watch::Sender<bool>>,
    last_failure: Arc<Mutex<Option<Failure>>>,
}

impl SupervisorHandle {
    /// The current state.
    pub fn state(&self) -> SessionState {
        self.state.borrow().clone()
    }

    /// The last failure seen since a session was last up (of an attempt, or of the session
    /// that was up), typed; set before the state that reports it is published, cleared when
    /// a session comes up.
    pub fn last_failure(&self) -> Option<Failure> {
        self.last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A receiver of every state change.
    pub fn subscribe(&self) -> watch::Receiver<SessionState> {
        self.state.clone()
    }

    /// A live session, waiting up to `wait` for one while a reconnect is under way.
    pub async fn session(&self, wait: Duration) -> Result<SessionHandle, WaitError> {
        let deadline = deadline_after(wait);
        let mut rx = self.state.clone();
        loop {
            match &*rx.borrow_and_update() {
                SessionState::Up(h) if h.error().is_none() => return Ok(h.clone()),
                SessionState::Failed(why) => return Err(WaitError::Failed(why.clone())),
                SessionState::Stopped => return Err(WaitError::Stopped),
                _ => {}
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => return Err(WaitError::Timeout(wait)),
                Ok(Err(_)) => return Err(WaitError::Stopped),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Waits for the first attempt's result: `Ok` once a session is up.
    pub async fn first_session(&self) -> Result<SessionHandle, WaitError> {
        self.session(Duration::from_secs(u64::from(u32::MAX))).await
    }

    /// Whether [`SupervisorHandle::stop`] has been called (the state may still say `Up`
    /// while the DISCONNECT leaves).
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Stops the supervisor: the session (if any) is disconnected and no attempt follows.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// A running supervisor task.
#[derive(Debug)]
pub struct Supervisor {
    handle: SupervisorHandle,
    task: tokio::task::JoinHandle<Outcome>,
}

/// How a supervisor runs.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// The session's name in logs (`user@host:port`).
    pub label: String,
    /// What it logs in with ([`SessionSpec::login`](crate::config::SessionSpec::login)):
    /// sessions with the same login to a bastion are accepted or refused together.
    pub login: String,
    /// Reconnection.
    pub reconnect: ReconnectPolicy,
    /// Whether a failure of the very first attempt ends the supervisor (the command line's
    /// fail-fast start) instead of being retried.
    pub first_attempt_fatal: bool,
}

impl Supervisor {
    /// Starts supervising the sessions `connector` makes.
    pub fn spawn(
        connector: Arc<dyn Connector>,
        config: SupervisorConfig,
        gate: Arc<BastionGate>,
    ) -> Self {
        let (state_tx, state_rx) = watch::channel(SessionState::Connecting { attempt: 1 });
        let (stop_tx, stop_rx) = watch::channel(false);
        let last_failure = Arc::new(Mutex::new(None));
        let task = tokio::spawn(tracing::Instrument::instrument(
            run(
                connector,
                config,
                gate,
                state_tx,
                stop_rx,
                last_failure.clone(),
            ),
            tracing::Span::current(),
        ));
        Self {
            handle: SupervisorHandle {
                state: state_rx,
                stop: Arc::new(stop_tx),
                last_failure,
            },
            task,
        }
    }

    /// A handle for tunnels and dialers.
    pub fn handle(&self) -> SupervisorHandle {
        self.handle.clone()
    }

    /// Waits for the supervisor to end.
    pub async fn finished(&mut self) -> Outcome {
        match (&mut self.task).await {
            Ok(o) => o,
            Err(e) => Outcome::Failed(format!("the session supervisor failed: {e}")),
        }
    }

    /// Stops it and waits (up to `grace`) for the DISCONNECT to leave.
    pub async fn shutdown(mut self, grace: Duration) -> Outcome {
        self.handle.stop();
        match tokio::time::timeout(grace, self.finished()).await {
            Ok(o) => o,
            Err(_) => {
                self.task.abort();
                Outcome::Stopped
            }
        }
    }
}

/// How an attempt ended before a session was up.
enum AttemptFailure {
    /// Retry after the backoff; `penalty` is what sshd charged, if it saw us.
    Retry {
        message: String,
        penalty: Option<Penalty>,
        auth: bool,
        kind: FailureKind,
        /// The host refused the TCP connection (nothing listening).
        refused: bool,
    },
    /// Never retried.
    Permanent(String, FailureKind),
}

impl AttemptFailure {
    /// A failure before any SSH server saw us (sshd charges nothing), `refused` when the
    /// host refused the TCP connection.
    fn unseen(message: String, refused: bool) -> Self {
        Self::Retry {
            message,
            penalty: None,
            auth: false,
            kind: FailureKind::Network,
            refused,
        }
    }

    /// A failure an SSH server saw, retried: a refused login (`auth`) or a connection that
    /// ended before one, each with sshd's penalty for it.
    fn seen_by_sshd(message: String, auth: bool, kind: FailureKind) -> Self {
        Self::Retry {
            message,
            penalty: Some(if auth {
                Penalty::AuthFail
            } else {
                Penalty::NoAuth
            }),
            auth,
            kind,
            refused: false,
        }
    }
}

/// Whether only a person can fix this session error.
pub fn is_permanent(e: &SessionError) -> bool {
    use ssh_transport::Error as T;
    matches!(
        e,
        SessionError::Transport(
            T::HostKey(_) | T::HostKeyRejected(_) | T::HostKeyChangedInRekey { .. }
        )
    )
}

/// `wait` from now, or about a century from now when `wait` reaches past any clock
/// (`Duration::MAX` for "no limit" is common among callers of an API).
pub fn deadline_after(wait: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)))
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender (every handle gone) stops the supervisor too.
    let _ = stop.wait_for(|s| *s).await;
}

fn jitter() -> f64 {
    let mut b = [0u8; 8];
    OsRandom.fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

async fn attempt(
    connector: &dyn Connector,
) -> Result<(SessionHandle, DriverFuture, Duration), AttemptFailure> {
    let started = Instant::now();
    let Connected { handle, mut driver } = match connector.connect().await {
        Ok(c) => c,
        Err(ConnectError::Network(message)) => {
            return Err(AttemptFailure::unseen(message, false));
        }
        Err(ConnectError::Refused(message)) => {
            return Err(AttemptFailure::unseen(message, true));
        }
        Err(ConnectError::Permanent(message)) => {
            return Err(AttemptFailure::Permanent(message, FailureKind::Config));
        }
        Err(ConnectError::Hop { message, auth }) => {
            let kind = if auth {
                FailureKind::Auth
            } else {
                FailureKind::Session
            };
            return Err(AttemptFailure::seen_by_sshd(message, auth, kind));
        }
    };
    let failed = |e: SessionError| {
        let message = connector.describe(&e);
        let kind = failure_kind(&e);
        if is_permanent(&e) {
            AttemptFailure::Permanent(message, kind)
        } else {
            AttemptFailure::seen_by_sshd(message, matches!(e, SessionError::Auth(_)), kind)
        }
    };
    tokio::select! {
        r = handle.authenticated() => match r {
            Ok(()) => Ok((handle, driver, started.elapsed())),
            Err(e) => {
                // Let the DISCONNECT leave.
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut driver).await;
                Err(failed(e))
            }
        },
        r = &mut driver => Err(failed(match r {
            Err(e) => e,
            Ok(()) => SessionError::Ended,
        })),
    }
}

async fn run(
    connector: Arc<dyn Connector>,
    config: SupervisorConfig,
    gate: Arc<BastionGate>,
    state: watch::Sender<SessionState>,
    mut stop: watch::Receiver<bool>,
    failures_seen: Arc<Mutex<Option<Failure>>>,
) -> Outcome {
    let record = |kind: FailureKind, message: &str| {
        *failures_seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Failure {
            kind,
            message: message.to_owned(),
        });
    };
    let label = config.label.as_str();
    let policy = config.reconnect;
    let mut backoff = Backoff::new(policy);
    let mut last_failure: Option<String> = None;
    let mut attempts: u32 = 0;
    // The last failure this supervisor saw (or its start): a login sshd accepted since then
    // is known good.
    let mut since = now();
    let fail = |why: String| {
        state.send_replace(SessionState::Failed(why.clone()));
        Outcome::Failed(why)
    };
    let stop_now = || {
        state.send_replace(SessionState::Stopped);
        Outcome::Stopped
    };
    loop {
        attempts = attempts.saturating_add(1);
        state.send_replace(SessionState::Connecting { attempt: attempts });
        let result = {
            tokio::select! {
                () = connector.prepare() => {}
                _ = stopped(&mut stop) => return stop_now(),
            }
            let queued = Queued::new(&gate);
            let turn = tokio::select! {
                t = gate.turn() => t,
                _ = stopped(&mut stop) => return stop_now(),
            };
            // Spaced so sshd's PerSourcePenalties never block the address; the handshake's
            // turn is held meanwhile.
            let mut told = false;
            let worst = loop {
                let settled = gate.settled.notified();
                tokio::pin!(settled);
                settled.as_mut().enable();
                let (wait, penalised) = {
                    let mut st = gate.state();
                    let worst = st.worst(&config.login, since);
                    let t = now();
                    let wait = st.ledger.wait_before_attempt(t, worst);
                    if wait.is_zero() {
                        st.ledger.reserve(worst);
                        break worst;
                    }
                    (wait, st.ledger.penalty_wait(t, worst))
                };
                if !penalised.is_zero() && !told {
                    told = true;
                    info!(
                        "waiting {:.1} s more before attempt {attempts}: failed logins to \
                         {label} are spaced so that sshd's PerSourcePenalties never block this \
                         address",
                        penalised.as_secs_f64()
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    () = &mut settled => {}
                    _ = stopped(&mut stop) => return stop_now(),
                }
            };
            let mut reservation = queued.begin(&config.login, worst);
            let r = tokio::select! {
                r = attempt(&*connector) => r,
                _ = stopped(&mut stop) => return stop_now(),
            };
            reservation.ended = match &r {
                Ok(_) => Settled::Accepted,
                Err(AttemptFailure::Retry { penalty, .. }) => Settled::Refused(*penalty),
                Err(AttemptFailure::Permanent(..)) => Settled::Refused(None),
            };
            drop(reservation);
            drop(turn);
            r
        };
        let (cause, delay) = match result {
            Ok((handle, mut driver, handshake)) => {
                info!(
                    "session up: {label} (handshake {} ms{})",
                    handshake.as_millis(),
                    if attempts > 1 {
                        format!(", attempt {attempts}")
                    } else {
                        String::new()
                    }
                );
                last_failure = None;
                *failures_seen.lock().unwrap_or_else(|p| p.into_inner()) = None;
                let up_at = Instant::now();
                state.send_replace(SessionState::Up(handle.clone()));
                let end = tokio::select! {
                    r = &mut driver => r,
                    _ = stopped(&mut stop) => {
                        handle.disconnect("forwarder exiting");
                        let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
                        return stop_now();
                    }
                };
                since = now();
                let error = end.err().unwrap_or(SessionError::Ended);
                let cause = connector.describe(&error);
                record(failure_kind(&error), &cause);
                info!("session lost: {cause}");
                if is_permanent(&error) {
                    return fail(cause);
                }
                if !policy.enabled {
                    return fail(cause);
                }
                if up_at.elapsed() >= policy.reset_after {
                    backoff.reset();
                }
                (cause, backoff.after_loss(jitter()))
            }
            Err(AttemptFailure::Permanent(message, kind)) => {
                record(kind, &message);
                warn!("attempt failed: {message} (attempt {attempts})");
                return fail(message);
            }
            Err(AttemptFailure::Retry {
                message,
                auth,
                kind,
                refused,
                ..
            }) => {
                since = now();
                record(kind, &message);
                if attempts == 1 && config.first_attempt_fatal {
                    return fail(message);
                }
                if last_failure.as_deref() == Some(message.as_str()) {
                    info!("attempt failed again, for the same reason (attempt {attempts})");
                } else {
                    warn!("attempt failed: {message} (attempt {attempts})");
                    last_failure = Some(message.clone());
                }
                // A refused login waits the cap: an admin is needed, and sshd penalises it.
                let delay = if auth {
                    policy.max
                } else if refused {
                    backoff.next_delay_refused(jitter())
                } else {
                    backoff.next_delay(jitter())
                };
                (message, delay)
            }
        };
        info!(
            "next attempt in {:.1} s (attempt {})",
            delay.as_secs_f64(),
            attempts.saturating_add(1)
        );
        state.send_replace(SessionState::Waiting {
            cause,
            retry_at: Instant::now() + delay,
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => return stop_now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_secs: u64) -> ReconnectPolicy {
        ReconnectPolicy {
            max: Duration::from_secs(max_secs),
            ..ReconnectPolicy::default()
        }
    }

    #[test]
    fn backoff_doubles_from_half_a_second_to_the_cap_with_full_jitter() {
        let mut b = Backoff::new(policy(30));
        let ceilings: Vec<u64> = (0..9)
            .map(|_| {
                let c = b.ceiling().as_millis() as u64;
                b.next_delay(0.5);
                c
            })
            .collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        // Full jitter: anything from 0 to the ceiling.
        let mut b = Backoff::new(policy(30));
        assert_eq!(b.next_delay(0.0), Duration::ZERO);
        assert_eq!(
            b.next_delay(0.999_999),
            Duration::from_millis(999) + Duration::from_nanos(999_000)
        );
        for _ in 0..100 {
            b.next_delay(1.0);
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(500));
        // Out-of-range draws are clamped, never past the cap.
        assert!(b.next_delay(7.0) <= Duration::from_millis(500));
    }

    #[test]
    fn a_lost_session_is_retried_at_once_unless_it_keeps_dropping() {
        let mut b = Backoff::new(policy(30));
        assert_eq!(b.after_loss(0.9), Duration::ZERO);
        // The attempt failed: the backoff goes on from its second step.
        assert_eq!(b.ceiling(), Duration::from_secs(1));
        b.next_delay(0.5);
        // Up again briefly, then lost again: no immediate try this time.
        assert_eq!(b.after_loss(1.0), Duration::from_secs(2));
        b.reset();
        assert_eq!(b.after_loss(1.0), Duration::ZERO);
    }

    #[test]
    fn a_refused_connection_is_retried_five_times_sooner_up_to_the_same_cap() {
        let mut b = Backoff::new(policy(30));
        let ceilings: Vec<u64> = (0..11)
            .map(|_| b.next_delay_refused(1.0).as_millis() as u64)
            .collect();
        assert_eq!(
            ceilings,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000
            ]
        );
        // It shares the step with the other failures: a refusal after handshake failures
        // does not start the schedule over, nor the other way round.
        let mut b = Backoff::new(policy(30));
        b.next_delay(0.5);
        b.next_delay(0.5);
        assert_eq!(b.next_delay_refused(1.0), Duration::from_millis(400));
        assert_eq!(b.ceiling(), Duration::from_secs(4));
        assert!(b.next_delay_refused(7.0) <= Duration::from_millis(800));
        assert_eq!(b.next_delay_refused(0.0), Duration::ZERO);
    }

    /// A connector whose every attempt finds nothing listening, recording when it was tried.
    struct NothingListening {
        tries: Arc<Mutex<Vec<tokio::time::Instant>>>,
        refused: bool,
    }

    impl Connector for NothingListening {
        fn connect(
            &self,
        ) -> Pin<Box<dyn Future<Output = Result<Connected, ConnectError>> + Send + '_>> {
            note_try(&self.tries);
            let message = "connect to host h port 22: Connection refused (os error 111)".into();
            let e = if self.refused {
                ConnectError::Refused(message)
            } else {
                ConnectError::Network(message)
            };
            Box::pin(async move { Err(e) })
        }
    }

    // sshd restarting: the port refuses connections for a fraction of a second. The
    // supervisor must look again within a tenth of a second, then back off as usual.
    #[tokio::test(start_paused = true)]
    async fn while_the_port_refuses_connections_the_supervisor_retries_on_the_fast_schedule() {
        for refused in [true, false] {
            let tries = Arc::new(Mutex::new(Vec::new()));
            let connector = Arc::new(NothingListening {
                tries: tries.clone(),
                refused,
            });
            let config = SupervisorConfig {
                label: "u@h:22".into(),
                login: "u@h:22".into(),
                reconnect: policy(30),
                first_attempt_fatal: false,
            };
            let sup = Supervisor::spawn(connector, config, BastionGate::new());
            // Paused time: the sleeps run at once, in order.
            tokio::time::sleep(Duration::from_secs(60)).await;
            sup.handle().stop();
            let tries = tries.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1] - w[0]).collect();
            assert!(gaps.len() >= 6, "{refused}: {gaps:?}");
            let initial = if refused { 100 } else { 500 };
            for (n, gap) in gaps.iter().enumerate() {
                let ceiling = Duration::from_millis(initial << n.min(20)).min(policy(30).max);
                assert!(
                    *gap <= ceiling,
                    "refused {refused}: gap {n} is {gap:?} > {ceiling:?}"
                );
            }
            // Every failure was a network one: no penalty, no permanent failure.
            assert!(matches!(
                *sup.handle().state.borrow(),
                SessionState::Waiting { .. }
                    | SessionState::Connecting { .. }
                    | SessionState::Stopped
            ));
        }
    }

    #[test]
    fn jitter_draws_are_in_the_unit_interval() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn penalty_ledger_keeps_sshd_from_blocking_us() {
        let t0 = Instant::now();
        let mut l = PenaltyLedger::default();
        assert_eq!(l.wait_before_attempt(t0, Penalty::AuthFail), Duration::ZERO);
        // Simulate a client that retries as soon as the ledger allows and always fails
        // authentication: what sshd holds must stay under its 15 s block threshold.
        let mut now = t0;
        for _ in 0..50 {
            now += l.wait_before_attempt(now, Penalty::AuthFail);
            assert!(
                l.outstanding(now) + Penalty::AuthFail.duration() <= PenaltyLedger::LIMIT,
                "an attempt would push sshd's penalty to {:?}",
                l.outstanding(now) + Penalty::AuthFail.duration()
            );
            l.record(now, Penalty::AuthFail);
            assert!(l.outstanding(now) < Duration::from_secs(15));
            now += Duration::from_millis(100);
        }
        // In steady state that is one failed login per 5 s, sshd's own rate.
        let before = now;
        for _ in 0..10 {
            now += l.wait_before_attempt(now, Penalty::AuthFail);
            l.record(now, Penalty::AuthFail);
        }
        let per_attempt = (now - before) / 10;
        assert!(
            per_attempt >= Duration::from_millis(4900),
            "{per_attempt:?}"
        );
    }

    #[test]
    fn penalties_add_up_and_run_out() {
        let t0 = Instant::now();
        let mut l = PenaltyLedger::default();
        l.record(t0, Penalty::NoAuth);
        l.record(t0, Penalty::NoAuth);
        assert_eq!(l.outstanding(t0), Duration::from_secs(2));
        assert_eq!(
            l.outstanding(t0 + Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(l.outstanding(t0 + Duration::from_secs(3)), Duration::ZERO);
        // An expired penalty does not carry into the next one.
        l.record(t0 + Duration::from_secs(10), Penalty::AuthFail);
        assert_eq!(
            l.outstanding(t0 + Duration::from_secs(10)),
            Duration::from_secs(5)
        );
        assert_eq!(
            l.wait_before_attempt(t0 + Duration::from_secs(10), Penalty::AuthFail),
            Duration::ZERO
        );
        l.record(t0 + Duration::from_secs(10), Penalty::AuthFail);
        // 10 s outstanding + 5 s for the next: wait until 7 s remain.
        assert_eq!(
            l.wait_before_attempt(t0 + Duration::from_secs(10), Penalty::AuthFail),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn attempts_under_way_hold_their_worst_penalty_until_they_settle() {
        let t0 = Instant::now();
        let mut l = PenaltyLedger::default();
        // Two refused logins fit under sshd's threshold; a third must wait for one of them.
        l.reserve(Penalty::AuthFail);
        assert_eq!(l.wait_before_attempt(t0, Penalty::AuthFail), Duration::ZERO);
        l.reserve(Penalty::AuthFail);
        assert_eq!(
            l.wait_before_attempt(t0, Penalty::AuthFail),
            Duration::from_secs(3)
        );
        // None of that wait is for penalties sshd holds.
        assert_eq!(l.penalty_wait(t0, Penalty::AuthFail), Duration::ZERO);
        // A known-good login's attempt risks only a dropped connection's second.
        assert_eq!(l.wait_before_attempt(t0, Penalty::NoAuth), Duration::ZERO);
        // One is refused: its reservation becomes sshd's penalty, which runs out in time.
        l.settle(t0, Penalty::AuthFail, Some(Penalty::AuthFail));
        assert_eq!(l.outstanding(t0), Duration::from_secs(5));
        assert_eq!(
            l.wait_before_attempt(t0, Penalty::AuthFail),
            Duration::from_secs(3)
        );
        assert_eq!(l.penalty_wait(t0, Penalty::AuthFail), Duration::ZERO);
        // The other is accepted: nothing charged, its reservation freed.
        l.settle(t0, Penalty::AuthFail, None);
        assert_eq!(l.outstanding(t0), Duration::from_secs(5));
        assert_eq!(l.wait_before_attempt(t0, Penalty::AuthFail), Duration::ZERO);
        // Freeing more than was reserved does not wrap.
        l.settle(t0, Penalty::AuthFail, None);
        assert_eq!(l.wait_before_attempt(t0, Penalty::AuthFail), Duration::ZERO);
    }

    #[test]
    fn a_login_is_known_good_from_its_acceptance_until_a_refusal() {
        let gate = BastionGate::new();
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        let worst = |since| gate.state().worst("u@h:22", since);
        assert_eq!(worst(t0), Penalty::AuthFail, "never accepted");
        gate.settle("u@h:22", Penalty::AuthFail, later, Settled::Accepted);
        assert_eq!(worst(t0), Penalty::NoAuth, "accepted after our failure");
        assert_eq!(worst(later), Penalty::NoAuth, "accepted at our failure");
        assert_eq!(
            worst(later + Duration::from_secs(1)),
            Penalty::AuthFail,
            "accepted before our failure"
        );
        assert_eq!(
            gate.state().worst("v@h:22", t0),
            Penalty::AuthFail,
            "another login"
        );
        // A connection that ends before its login forgets nothing; a refused login does.
        for (charged, after) in [
            (Penalty::NoAuth, Penalty::NoAuth),
            (Penalty::AuthFail, Penalty::AuthFail),
        ] {
            let ended = Settled::Refused(Some(charged));
            gate.settle("u@h:22", Penalty::NoAuth, later, ended);
            assert_eq!(worst(t0), after, "after {charged:?}");
        }
        // Every reservation was freed: only the charged penalties remain.
        let st = gate.state();
        assert_eq!(st.ledger.reserved, Duration::ZERO);
        assert_eq!(st.ledger.outstanding(later), Duration::from_secs(6));
    }

    /// Records when an attempt began.
    fn note_try(tries: &Mutex<Vec<tokio::time::Instant>>) {
        tries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tokio::time::Instant::now());
    }

    /// A connector whose every login is refused, recording when each attempt began.
    struct Refused {
        tries: Arc<Mutex<Vec<tokio::time::Instant>>>,
    }

    impl Connector for Refused {
        fn connect(
            &self,
        ) -> Pin<Box<dyn Future<Output = Result<Connected, ConnectError>> + Send + '_>> {
            note_try(&self.tries);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Err(ConnectError::Hop {
                    message: "jump host j: Permission denied (publickey)".into(),
                    auth: true,
                })
            })
        }
    }

    // A key the bastion no longer accepts, on many sessions at once: their attempts run
    // side by side, yet what sshd holds against our address never reaches its threshold.
    #[tokio::test(start_paused = true)]
    async fn many_refused_sessions_of_one_bastion_never_reach_sshds_threshold() {
        let gate = BastionGate::new();
        let tries = Arc::new(Mutex::new(Vec::new()));
        let sups: Vec<Supervisor> = (0..6)
            .map(|i| {
                let connector = Arc::new(Refused {
                    tries: tries.clone(),
                });
                let config = SupervisorConfig {
                    label: format!("u{i}@h:22"),
                    login: format!("u{}@h:22", i % 2),
                    reconnect: policy(30),
                    first_attempt_fatal: false,
                };
                Supervisor::spawn(connector, config, gate.clone())
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(120)).await;
        for s in &sups {
            s.handle().stop();
        }
        let mut tries = tries.lock().unwrap_or_else(|p| p.into_inner()).clone();
        tries.sort();
        // sshd's view: each attempt is charged 5 s when it ends, 200 ms after it began.
        let mut sshd = PenaltyLedger::default();
        let mut ends: Vec<tokio::time::Instant> = Vec::new();
        for &t in &tries {
            for e in ends.extract_if(.., |e| *e <= t) {
                sshd.record(e.into_std(), Penalty::AuthFail);
            }
            // Everything under way ending refused must stay under the 15 s threshold.
            let worst = sshd.outstanding(t.into_std())
                + Penalty::AuthFail.duration() * (ends.len() as u32 + 1);
            assert!(worst <= PenaltyLedger::LIMIT, "{worst:?} at try {t:?}");
            ends.push(t + Duration::from_millis(200));
        }
        // The ledger does not stall them either: about one refused login per 5 s, sshd's
        // own rate, and two at once at the start.
        assert!(tries.len() >= 22, "{} tries in 120 s", tries.len());
        assert_eq!(tries[1] - tries[0], Duration::ZERO);
    }

    /// A connector whose every attempt fails with a jump host's error.
    struct FailingHop {
        auth: bool,
    }

    impl Connector for FailingHop {
        fn connect(
            &self,
        ) -> Pin<Box<dyn Future<Output = Result<Connected, ConnectError>> + Send + '_>> {
            let auth = self.auth;
            Box::pin(async move {
                Err(ConnectError::Hop {
                    message: "jump host j: refused".into(),
                    auth,
                })
            })
        }
    }

    #[tokio::test]
    async fn a_jump_hosts_refused_login_costs_what_the_destinations_would() {
        for (auth, penalty, kind) in [
            (true, Penalty::AuthFail, FailureKind::Auth),
            (false, Penalty::NoAuth, FailureKind::Session),
        ] {
            match attempt(&FailingHop { auth }).await {
                Err(AttemptFailure::Retry {
                    message,
                    penalty: p,
                    auth: a,
                    kind: k,
                    refused,
                }) => {
                    assert!(
                        !refused,
                        "a jump host's failure is not a refused connection"
                    );
                    assert_eq!(p, Some(penalty), "auth {auth}");
                    assert_eq!(a, auth);
                    assert_eq!(k, kind);
                    assert!(message.contains("jump host j"), "{message}");
                }
                Err(AttemptFailure::Permanent(m, _)) => panic!("permanent: {m}"),
                Ok(_) => panic!("no session can come up"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_gate_is_idle_only_with_no_reservation_and_no_penalty_left() {
        let gate = BastionGate::new();
        assert!(gate.is_idle());
        // As an attempt begins (see `run`).
        gate.state().ledger.reserve(Penalty::AuthFail);
        let reservation = Reservation {
            gate: &gate,
            login: "u@h:22",
            worst: Penalty::AuthFail,
            ended: Settled::Refused(Some(Penalty::AuthFail)),
        };
        assert!(!gate.is_idle(), "an attempt under way");
        drop(reservation);
        // Refused: sshd holds 5 s against us, and the gate keeps counting them.
        assert!(!gate.is_idle(), "a penalty outstanding");
        tokio::time::advance(Duration::from_millis(4900)).await;
        assert!(!gate.is_idle(), "a penalty outstanding");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(gate.is_idle());
        // An accepted login costs nothing.
        gate.state().ledger.reserve(Penalty::NoAuth);
        let mut r = Reservation {
            gate: &gate,
            login: "u@h:22",
            worst: Penalty::NoAuth,
            ended: Settled::Refused(None),
        };
        assert!(!gate.is_idle(), "an attempt under way");
        r.ended = Settled::Accepted;
        drop(r);
        assert!(gate.is_idle());
    }

    #[tokio::test]
    async fn a_gates_limit_follows_a_reload_and_a_lower_one_waits_for_running_handshakes() {
        let gate = BastionGate::with_limit(4);
        let free = |g: &BastionGate| g.handshakes.available_permits();
        let (a, b, c) = (gate.turn().await, gate.turn().await, gate.turn().await);
        assert_eq!(free(&gate), 1);
        // Lowered to two while three run: the free permit goes now, one more is owed.
        gate.set_limit(2);
        assert_eq!((gate.limit(), free(&gate)), (2, 0));
        // An attempt that waits meanwhile is not let in by the first handshake to end...
        let waiter = gate.turn();
        tokio::pin!(waiter);
        assert!(poll_once(waiter.as_mut()).await.is_none());
        drop(a);
        assert!(
            poll_once(waiter.as_mut()).await.is_none(),
            "three would run"
        );
        // ...but by the second: two run again.
        drop(b);
        let d = poll_once(waiter.as_mut()).await.expect("its turn");
        assert_eq!(free(&gate), 0);
        // Lowered and raised again while handshakes run: what was owed is forgiven first.
        gate.set_limit(1);
        gate.set_limit(3);
        assert_eq!((gate.limit(), free(&gate)), (3, 1));
        drop((c, d));
        assert_eq!(free(&gate), 3);
        // Limits out of range take the nearest.
        gate.set_limit(0);
        assert_eq!((gate.limit(), free(&gate)), (1, 1));
        gate.set_limit(1000);
        assert_eq!(gate.limit(), MAX_HANDSHAKES_PER_BASTION);
        assert_eq!(free(&gate), MAX_HANDSHAKES_PER_BASTION);
        assert_eq!(BastionGate::with_limit(0).limit(), 1);
        assert_eq!(BastionGate::new().limit(), HANDSHAKES_PER_BASTION);
    }

    /// Polls `f` once: its output if it is ready.
    async fn poll_once<F: Future + Unpin>(mut f: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| match Pin::new(&mut f).poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await
    }

    #[tokio::test]
    async fn a_wait_past_any_clock_is_a_far_deadline_not_a_panic() {
        let far = deadline_after(Duration::MAX);
        assert!(far > tokio::time::Instant::now() + Duration::from_secs(3600 * 24 * 365 * 100));
        let near = deadline_after(Duration::from_secs(5));
        assert!(near <= tokio::time::Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn only_host_key_failures_are_permanent() {
        use ssh_transport::Error as T;
        assert!(is_permanent(&SessionError::Transport(T::HostKeyRejected(
            "changed".into()
        ))));
        assert!(!is_permanent(&SessionError::Transport(T::ConnectionLost)));
        assert!(!is_permanent(&SessionError::ServerNotResponding {
            missed: 3
        }));
        assert!(!is_permanent(&SessionError::Ended));
    }
}
