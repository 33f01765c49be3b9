//! The client side of user authentication: publickey, keyboard-interactive and password.
//!
//! ```text
//!  start ──> SERVICE_REQUEST "ssh-userauth"
//!  send_ahead (server-sig-algs known) or else SERVICE_ACCEPT ──> plan: (key, algorithm) pairs PubkeyAcceptedAlgorithms and the server's
//!                     server-sig-algs allow, certificates before their plain keys
//!   key from a file ──> signed USERAUTH_REQUEST ──> SUCCESS | FAILURE
//!   key signed elsewhere (agent) ──> query ──> PK_OK ──> AuthEvent::SignRequest (pause)
//!        ──> provide_signature ──> signed USERAUTH_REQUEST ──> SUCCESS | FAILURE
//!  publickey exhausted or refused, server allows more:
//!   keyboard-interactive ──> INFO_REQUEST ──> AuthEvent::InfoRequest (pause)
//!        ──> provide_responses ──> INFO_RESPONSE ──> ... ──> SUCCESS | FAILURE
//!   password ──> AuthEvent::PasswordRequest (pause) ──> provide_password ──> SUCCESS | FAILURE
//!  FAILURE with partial success ──> the next method the server still wants
//!  nothing left ──> AuthError::Refused (every key, every method, and why)
//! ```
//!
//! Keys loaded from files are signed straight away instead of first asking the server with a
//! PK_OK query: one round trip less per key, and a refused key costs the same either way.
//! Keys the caller signs with (an agent, or a key file that still needs its passphrase) are
//! queried first, because signing may cost a passphrase prompt or a touch of a hardware
//! token, which a key the server would refuse should not.
//!
//! Whenever the machine needs something from outside (a signature, a password, answers to
//! prompts) it emits an event carrying a request id and waits; the caller answers with the
//! matching `provide_*` call, however much later. Nothing here blocks or calls back.

use std::collections::VecDeque;
use std::sync::Arc;

use ssh_transport::PayloadSink;
use ssh_transport::hostkey::{KeyType, PublicKey, SignatureAlgorithm};
use ssh_transport::text::sanitize;
use ssh_transport::wire::Reader;
use zeroize::Zeroizing;

use crate::cert::{CertError, Certificate, Validity, certificate_algorithm_from_name};
use crate::error::{AuthError, KeyReport, MethodReport, Refusal, SkipReason};
use crate::keys::PrivateKey;
use crate::msg::{
    AuthMethod, METHOD_KEYBOARD_INTERACTIVE, METHOD_PASSWORD, METHOD_PUBLICKEY, MethodInFlight,
    SERVICE_CONNECTION, SERVICE_USERAUTH, ServerMessage, ServiceRequest, UserauthFailure,
    UserauthInfoRequest, UserauthInfoResponse, UserauthRequest, decode_server_message_for,
    publickey_signed_data,
};

/// Banners longer than this many characters are cut.
const MAX_BANNER_CHARS: usize = 8 * 1024;
/// Method lists are shown to people; longer ones are cut.
const MAX_METHODS_CHARS: usize = 512;
/// Keyboard-interactive names and instructions are cut to this many characters.
const MAX_INSTRUCTION_CHARS: usize = 2 * 1024;
/// Keyboard-interactive prompts are cut to this many characters.
const MAX_PROMPT_CHARS: usize = 256;
/// INFO_REQUESTs in one keyboard-interactive attempt beyond this end it: a server that keeps
/// asking without deciding is broken or stalling.
const MAX_INFO_ROUNDS: u32 = 16;
/// Events not yet polled beyond this are dropped (only banners can pile up: a server may send
/// any number of them).
const MAX_PENDING_EVENTS: usize = 64;

/// Public key algorithm names this crate can use, best first, certificates before plain keys:
/// the default `PubkeyAcceptedAlgorithms`. SHA-1 `ssh-rsa` is not among them.
pub const DEFAULT_PUBKEY_ALGORITHMS: &[&str] = &[
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
];

/// Every public key algorithm name this crate knows: the defaults and the SHA-1 `ssh-rsa`
/// forms, which are used only when configured (and only through an agent: keys loaded here
/// never make SHA-1 signatures).
pub const SUPPORTED_PUBKEY_ALGORITHMS: &[&str] = &[
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
];

/// Who makes an identity's signatures.
#[derive(Debug, Clone)]
enum Signer {
    /// A key this crate holds: signed at once.
    Key(Arc<PrivateKey>),
    /// The caller signs, through [`AuthEvent::SignRequest`].
    External {
        /// An agent holds the key (else, say, a key file still locked by its passphrase).
        agent: bool,
    },
}

/// A key to try, with where it came from for messages: a private key held here, or a public
/// key whose signatures the caller makes (an agent's), either one possibly with an OpenSSH
/// user certificate.
#[derive(Debug, Clone)]
pub struct Identity {
    source: String,
    public: PublicKey,
    certificate: Option<Certificate>,
    signer: Signer,
}

impl Identity {
    /// A private key loaded here, e.g. from a file.
    pub fn new(key: PrivateKey, source: impl Into<String>) -> Self {
        Self::from_shared(Arc::new(key), source)
    }

    /// A private key shared with other identities (its certificate's, say).
    pub fn from_shared(key: Arc<PrivateKey>, source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            public: key.public_key().clone(),
            certificate: None,
            signer: Signer::Key(key),
        }
    }

    /// A private key offered with its certificate; the certificate must be for this key.
    pub fn certified(
        key: Arc<PrivateKey>,
        certificate: Certificate,
        source: impl Into<String>,
    ) -> Result<Self, CertError> {
        check_certificate(key.public_key(), &certificate)?;
        Ok(Self {
            source: source.into(),
            public: key.public_key().clone(),
            certificate: Some(certificate),
            signer: Signer::Key(key),
        })
    }

    /// A public key whose signatures the caller makes when asked: `agent` says whether an
    /// agent holds it (for messages), else it is, say, a key file whose passphrase is only
    /// asked for once the server has said it would accept the key.
    pub fn external(public: PublicKey, source: impl Into<String>, agent: bool) -> Self {
        Self {
            source: source.into(),
            public,
            certificate: None,
            signer: Signer::External { agent },
        }
    }

    /// A certificate whose key's signatures the caller makes.
    pub fn external_certified(
        certificate: Certificate,
        source: impl Into<String>,
        agent: bool,
    ) -> Self {
        Self {
            source: source.into(),
            public: certificate.public_key().clone(),
            certificate: Some(certificate),
            signer: Signer::External { agent },
        }
    }

    /// A key an agent listed: a plain public key or a certificate blob.
    pub fn from_agent(key_blob: &[u8], source: impl Into<String>) -> Result<Self, String> {
        let name = ssh_transport::hostkey::blob_key_type(key_blob).map_err(|e| e.to_string())?;
        if name.ends_with("-cert-v01@openssh.com") {
            let cert = Certificate::from_blob(key_blob).map_err(|e| e.to_string())?;
            Ok(Self::external_certified(cert, source, true))
        } else {
            let public = PublicKey::from_blob(key_blob).map_err(|e| e.to_string())?;
            Ok(Self::external(public, source, true))
        }
    }

    /// Where it came from, as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The private key, when it is held here (not an agent's or a locked file's): what a
    /// caller that signs for held keys ([`AuthConfig::caller_signs_held_keys`]) signs with.
    pub fn private_key(&self) -> Option<&Arc<PrivateKey>> {
        match &self.signer {
            Signer::Key(key) => Some(key),
            Signer::External { .. } => None,
        }
    }

    /// The (plain) public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The public key's `SHA256:` fingerprint.
    pub fn fingerprint(&self) -> String {
        self.public.fingerprint()
    }

    /// The certificate it is offered with, if any.
    pub fn certificate(&self) -> Option<&Certificate> {
        self.certificate.as_ref()
    }

    /// Whether the caller signs for it.
    pub fn is_external(&self) -> bool {
        matches!(self.signer, Signer::External { .. })
    }

    /// Whether an agent holds it.
    pub fn is_from_agent(&self) -> bool {
        matches!(self.signer, Signer::External { agent: true })
    }

    /// The blob a publickey request carries: the certificate's, or the plain key's.
    pub fn key_blob(&self) -> &[u8] {
        match &self.certificate {
            Some(c) => c.blob(),
            None => self.public.blob(),
        }
    }

    /// The public key algorithm name a request with signature algorithm `alg` carries.
    pub fn algorithm_name(&self, alg: SignatureAlgorithm) -> &'static str {
        if self.certificate.is_some() {
            crate::cert::certificate_algorithm_name(alg)
        } else {
            alg.name()
        }
    }

    /// What its signer can make, best first.
    fn can_sign(&self) -> &'static [SignatureAlgorithm] {
        match &self.signer {
            Signer::Key(k) => k.signature_algorithms(),
            Signer::External { .. } => match self.public.key_type() {
                KeyType::Rsa => &[
                    SignatureAlgorithm::RsaSha512,
                    SignatureAlgorithm::RsaSha256,
                    SignatureAlgorithm::RsaSha1,
                ],
                KeyType::Ed25519 => &[SignatureAlgorithm::Ed25519],
                KeyType::EcdsaP256 => &[SignatureAlgorithm::EcdsaP256],
                KeyType::EcdsaP384 => &[SignatureAlgorithm::EcdsaP384],
                KeyType::EcdsaP521 => &[SignatureAlgorithm::EcdsaP521],
                _ => &[],
            },
        }
    }

    fn report(&self) -> KeyReport {
        let mut r = KeyReport::new(self.source.clone(), self.fingerprint());
        r.from_agent = self.is_from_agent();
        r.certificate = self.certificate.as_ref().map(Certificate::describe);
        r
    }
}

/// Checks that `certificate` certifies `key`.
pub fn check_certificate(key: &PublicKey, certificate: &Certificate) -> Result<(), CertError> {
    if certificate.public_key() == key {
        Ok(())
    } else {
        Err(CertError::KeyMismatch {
            certificate_key: certificate.public_key().fingerprint(),
            private_key: key.fingerprint(),
        })
    }
}

/// What authentication may use, and how.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuthConfig {
    /// The user to authenticate as.
    pub user: String,
    /// Keys to try. Certificates are offered before the plain key they certify; otherwise
    /// the order is kept.
    pub identities: Vec<Identity>,
    /// Public key algorithm names that may be used, best first (OpenSSH's
    /// PubkeyAcceptedAlgorithms, resolved): plain names such as `rsa-sha2-512` and
    /// certificate names such as `rsa-sha2-512-cert-v01@openssh.com`. Names this crate does
    /// not know are ignored.
    pub pubkey_algorithms: Vec<String>,
    /// Whether to use publickey (PubkeyAuthentication).
    pub publickey: bool,
    /// Whether to use keyboard-interactive (KbdInteractiveAuthentication).
    pub keyboard_interactive: bool,
    /// Whether to use password (PasswordAuthentication).
    pub password: bool,
    /// The methods to use, in the order to try them (OpenSSH's PreferredAuthentications):
    /// a method not listed is not used, names this crate does not implement are ignored.
    /// The default is `publickey`, `keyboard-interactive`, `password`.
    pub preferred: Vec<String>,
    /// Password and keyboard-interactive attempts each (NumberOfPasswordPrompts).
    pub attempts: u32,
    /// The current time in seconds since the Unix epoch, to skip certificates that are not
    /// valid; `None` offers them whatever their validity.
    pub now: Option<u64>,
    /// Hand the signatures of keys held here to the caller too, through
    /// [`AuthEvent::SignRequest`] (at once, without the query a key signed elsewhere needs), so
    /// that it can make them off the thread that drives the session: an RSA-4096 signature
    /// takes about 3.5 ms of CPU. The caller signs with the identity's key
    /// ([`Identity::private_key`]). Off by default: the machine signs them itself.
    pub caller_signs_held_keys: bool,
}

impl AuthConfig {
    /// Every method on, the default algorithms, three attempts, no clock.
    pub fn new(user: String, identities: Vec<Identity>) -> Self {
        Self {
            user,
            identities,
            pubkey_algorithms: DEFAULT_PUBKEY_ALGORITHMS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            publickey: true,
            keyboard_interactive: true,
            password: true,
            preferred: METHODS.iter().map(|m| (*m).to_owned()).collect(),
            attempts: 3,
            now: None,
            caller_signs_held_keys: false,
        }
    }
}

/// The methods this client implements, in its default order (OpenSSH's, less the ones it
/// does not implement).
const METHODS: [&str; 3] = [
    METHOD_PUBLICKEY,
    METHOD_KEYBOARD_INTERACTIVE,
    METHOD_PASSWORD,
];

/// What the transport knows that authentication needs, passed with every message.
#[derive(Clone, Copy, Debug)]
pub struct AuthContext<'a> {
    /// The session identifier (the first exchange hash).
    pub session_id: &'a [u8],
    /// The `server-sig-algs` extension from the server's EXT_INFO, if it sent one.
    pub server_sig_algs: Option<&'a [String]>,
}

/// A signature the caller must make: answer with [`ClientAuth::provide_signature`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignRequest {
    /// The request id to answer with.
    pub id: u64,
    /// Which identity, as an index into the identities given.
    pub identity: usize,
    /// The identity's source.
    pub source: String,
    /// The blob the request offers: the certificate's for a key offered with one, else the
    /// plain key's. An agent that holds the key but not this certificate knows it only by the
    /// plain key's blob ([`Identity::public_key`]); it signs the same either way.
    pub key_blob: Vec<u8>,
    /// The bytes to sign.
    pub data: Vec<u8>,
    /// The signature algorithm; the answer must be a whole signature blob of it.
    pub algorithm: SignatureAlgorithm,
}

/// A password the caller must find: answer with [`ClientAuth::provide_password`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordRequest {
    /// The request id to answer with.
    pub id: u64,
    /// The user the password is for.
    pub user: String,
    /// 1 for the first attempt; more after the server refused earlier ones.
    pub attempt: u32,
}

/// One question of a keyboard-interactive request, sanitized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    /// The text to show (e.g. `Password: `).
    pub text: String,
    /// Whether the answer may be shown as it is typed.
    pub echo: bool,
}

/// Keyboard-interactive questions the caller must answer: answer with
/// [`ClientAuth::provide_responses`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoRequest {
    /// The request id to answer with.
    pub id: u64,
    /// The server's title for the questions (sanitized, often empty).
    pub name: String,
    /// The server's instructions (sanitized, often empty).
    pub instruction: String,
    /// The questions, in order; never empty (an empty request is answered here).
    pub prompts: Vec<Prompt>,
    /// Which keyboard-interactive attempt (1 for the first).
    pub attempt: u32,
    /// Which request within the attempt (1 for the first).
    pub round: u32,
}

/// What happened, or what the caller must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthEvent {
    /// The server's banner, sanitized, to show the user.
    Banner(String),
    /// A signed publickey request was sent with this key and algorithm.
    Attempt {
        /// The identity's source.
        source: String,
        /// The key's fingerprint.
        fingerprint: String,
        /// The signature algorithm.
        algorithm: SignatureAlgorithm,
        /// Whether it was offered as a certificate.
        certificate: bool,
    },
    /// The server was asked whether it would accept a key the caller signs for.
    Query {
        /// The identity's source.
        source: String,
        /// The key's fingerprint.
        fingerprint: String,
        /// The signature algorithm.
        algorithm: SignatureAlgorithm,
        /// Whether it was offered as a certificate.
        certificate: bool,
    },
    /// An identity (or its remaining algorithms) will not be offered.
    Skipped {
        /// The identity's source.
        source: String,
        /// The key's fingerprint.
        fingerprint: String,
        /// Why.
        reason: SkipReason,
    },
    /// Keyboard-interactive or password authentication is being tried.
    Method {
        /// `keyboard-interactive` or `password`.
        method: &'static str,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// No key could be offered, so a `none` request asks which methods the server allows.
    ProbingMethods,
    /// The server accepted one step but wants another as well.
    PartialSuccess {
        /// What it accepted: a key's source and fingerprint, or a method name.
        accepted: String,
    },
    /// The caller must sign: see [`SignRequest`].
    SignRequest(SignRequest),
    /// The caller must find a password: see [`PasswordRequest`].
    PasswordRequest(PasswordRequest),
    /// The caller must answer prompts: see [`InfoRequest`].
    InfoRequest(InfoRequest),
    /// Authenticated: the connection protocol may start.
    Success,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeyStep {
    identity: usize,
    algorithm: SignatureAlgorithm,
}

/// A request whose answer is SUCCESS or FAILURE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    Key(KeyStep),
    Password,
    KeyboardInteractive,
    /// `none`, to learn the allowed methods when no key can be offered.
    Probe,
}

#[derive(Debug)]
enum State {
    /// `start` has not been called.
    Idle,
    ExpectServiceAccept,
    /// A signed publickey, password or `none` request is out.
    ExpectReply(Sent),
    /// A publickey query is out: PK_OK or FAILURE.
    ExpectPkOk(KeyStep),
    /// The caller is signing `data`.
    AwaitSignature {
        step: KeyStep,
        request: u64,
        data: Vec<u8>,
    },
    /// The caller is finding a password.
    AwaitPassword {
        request: u64,
    },
    /// A keyboard-interactive request or response is out: INFO_REQUEST, SUCCESS or FAILURE.
    ExpectInfoRequest {
        rounds: u32,
    },
    /// The caller is answering `count` prompts.
    AwaitResponses {
        request: u64,
        count: u32,
        rounds: u32,
    },
    Authenticated,
    Failed(AuthError),
}

/// Password or keyboard-interactive: what has been done with it.
#[derive(Debug)]
struct MethodState {
    enabled: bool,
    /// Left out of PreferredAuthentications (so not enabled).
    unlisted: bool,
    /// Attempts sent (refused or pending).
    attempts: u32,
    /// No more attempts: accepted as a step, out of attempts, or the caller had nothing.
    done: bool,
    report: MethodReport,
}

impl MethodState {
    /// Turned on and not finished.
    fn usable(&self) -> bool {
        self.enabled && !self.done
    }

    /// Counts one more attempt and returns its number, if the method is usable, the server
    /// `offered` it, and fewer than `max` were made; out of attempts, it is done.
    fn take_attempt(&mut self, offered: bool, max: u32) -> Option<u32> {
        if !self.usable() || !offered {
            return None;
        }
        if self.attempts >= max {
            self.done = true;
            return None;
        }
        self.attempts += 1;
        Some(self.attempts)
    }

    fn new(name: &'static str, enabled: bool, listed: bool) -> Self {
        Self {
            enabled: enabled && listed,
            unlisted: !listed,
            attempts: 0,
            done: false,
            report: MethodReport::new(name),
        }
    }
}

/// Client-side user authentication (RFC 4252, RFC 4256, RFC 8332, OpenSSH certificates),
/// sans-IO: payloads in through [`ClientAuth::handle_payload`], answers from the caller
/// through the `provide_*` methods, payloads out through a [`PayloadSink`], events out
/// through [`ClientAuth::poll_event`].
#[derive(Debug)]
pub struct ClientAuth {
    user: String,
    identities: Vec<Identity>,
    /// One per identity, filled in as things happen; becomes the [`Refusal`].
    reports: Vec<KeyReport>,
    pubkey_algorithms: Vec<String>,
    publickey: bool,
    publickey_unlisted: bool,
    /// The methods in the order to try them.
    order: Vec<&'static str>,
    max_attempts: u32,
    now: Option<u64>,
    caller_signs_held_keys: bool,
    keyboard_interactive: MethodState,
    password: MethodState,
    plan: VecDeque<KeyStep>,
    state: State,
    events: VecDeque<AuthEvent>,
    /// The session id, kept from SERVICE_ACCEPT on for the `provide_*` calls.
    session_id: Vec<u8>,
    /// The methods the last FAILURE allowed, sanitized for messages.
    server_allows: Option<String>,
    /// The same, as names.
    allowed: Option<Vec<String>>,
    probed: bool,
    next_request: u64,
    /// The first request went out right after SERVICE_REQUEST ([`ClientAuth::send_ahead`]);
    /// SERVICE_ACCEPT is still due.
    sent_ahead: bool,
}

impl ClientAuth {
    /// Authenticates `user` with `identities` and every other method on (the caller
    /// declines passwords and prompts it cannot answer).
    pub fn new(user: String, identities: Vec<Identity>) -> Self {
        Self::with_config(AuthConfig::new(user, identities))
    }

    /// Authenticates as `config` says.
    pub fn with_config(config: AuthConfig) -> Self {
        let reports = config.identities.iter().map(Identity::report).collect();
        let mut order: Vec<&'static str> = Vec::new();
        for name in &config.preferred {
            if let Some(m) = METHODS.into_iter().find(|m| m == name)
                && !order.contains(&m)
            {
                order.push(m);
            }
        }
        let listed = |m: &str| order.contains(&m);
        Self {
            user: config.user,
            identities: config.identities,
            reports,
            pubkey_algorithms: config.pubkey_algorithms,
            publickey: config.publickey && listed(METHOD_PUBLICKEY),
            publickey_unlisted: !listed(METHOD_PUBLICKEY),
            max_attempts: config.attempts,
            now: config.now,
            caller_signs_held_keys: config.caller_signs_held_keys,
            keyboard_interactive: MethodState::new(
                METHOD_KEYBOARD_INTERACTIVE,
                config.keyboard_interactive,
                listed(METHOD_KEYBOARD_INTERACTIVE),
            ),
            password: MethodState::new(METHOD_PASSWORD, config.password, listed(METHOD_PASSWORD)),
            order,
            plan: VecDeque::new(),
            state: State::Idle,
            events: VecDeque::new(),
            session_id: Vec::new(),
            server_allows: None,
            allowed: None,
            probed: false,
            next_request: 1,
            sent_ahead: false,
        }
    }

    /// Whether the server accepted us.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated)
    }

    /// The error authentication ended with, if it did.
    pub fn error(&self) -> Option<&AuthError> {
        match &self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// The user name being authenticated.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The identities, in the order given (a [`SignRequest::identity`] indexes them).
    pub fn identities(&self) -> &[Identity] {
        &self.identities
    }

    /// Whether the machine waits for a `provide_*` call.
    pub fn is_waiting_for_caller(&self) -> bool {
        matches!(
            self.state,
            State::AwaitSignature { .. }
                | State::AwaitPassword { .. }
                | State::AwaitResponses { .. }
        )
    }

    /// Sends SSH_MSG_SERVICE_REQUEST "ssh-userauth". Only the first call does anything.
    pub fn start(&mut self, sink: &mut dyn PayloadSink) {
        if matches!(self.state, State::Idle) {
            sink.send_with(&mut |buf| {
                ServiceRequest {
                    service: SERVICE_USERAUTH,
                }
                .encode(buf);
            });
            self.state = State::ExpectServiceAccept;
        }
    }

    /// Sends the first request now, without waiting for SERVICE_ACCEPT: one round trip less.
    /// A server handles our packets in order, so the request is read after the service
    /// request it follows (RFC 4253 section 10 lets the server refuse the service by
    /// disconnecting, which ends the session either way). The first request is a key (signed
    /// if it is loaded here, a query if the caller signs) or the `none` request that asks for
    /// the server's methods; passwords and prompts come only after an answer. Does nothing
    /// (returns false) unless the machine still waits for SERVICE_ACCEPT. Call it only once the
    /// server's `server-sig-algs` are known (or known not to come): the keys' algorithms are
    /// chosen from them here, as they would be at SERVICE_ACCEPT.
    pub fn send_ahead(
        &mut self,
        ctx: &AuthContext<'_>,
        sink: &mut dyn PayloadSink,
    ) -> Result<bool, AuthError> {
        if !matches!(self.state, State::ExpectServiceAccept) || self.sent_ahead {
            return Ok(false);
        }
        self.guarded(|this| {
            this.session_id = ctx.session_id.to_vec();
            this.plan_attempts(ctx);
            this.sent_ahead = true;
            this.next(sink)
        })?;
        Ok(true)
    }

    /// Takes one payload the router routes to authentication: SERVICE_ACCEPT (6) and
    /// 50..=79. After an error every call returns that error again.
    pub fn handle_payload(
        &mut self,
        payload: &[u8],
        ctx: &AuthContext<'_>,
        sink: &mut dyn PayloadSink,
    ) -> Result<(), AuthError> {
        self.guarded(|this| this.handle(payload, ctx, sink))
    }

    /// Answers [`AuthEvent::SignRequest`] `id` with a whole signature blob, or with why
    /// there is none (the key is skipped and the next one tried). The signature is checked
    /// against the key and algorithm before it is sent. An answer to a request that is no
    /// longer awaited is ignored.
    pub fn provide_signature(
        &mut self,
        id: u64,
        signature: Result<Vec<u8>, String>,
        sink: &mut dyn PayloadSink,
    ) -> Result<(), AuthError> {
        self.guarded(|this| {
            let state = core::mem::replace(&mut this.state, State::Idle);
            let State::AwaitSignature {
                step,
                request,
                data,
            } = state
            else {
                this.state = state;
                return Ok(());
            };
            if request != id {
                this.state = State::AwaitSignature {
                    step,
                    request,
                    data,
                };
                return Ok(());
            }
            match signature.and_then(|sig| this.check_signature(step, &data, sig)) {
                Ok(sig) => {
                    this.send_signed(step, &sig, sink);
                    Ok(())
                }
                Err(why) => {
                    this.drop_identity(step.identity, SkipReason::SignerFailed(why));
                    this.next(sink)
                }
            }
        })
    }

    /// Answers [`AuthEvent::PasswordRequest`] `id` with the password, or with why there is
    /// none (password authentication then stops, and that reason is reported). An answer to
    /// a request that is no longer awaited is ignored.
    pub fn provide_password(
        &mut self,
        id: u64,
        password: Result<Zeroizing<String>, String>,
        sink: &mut dyn PayloadSink,
    ) -> Result<(), AuthError> {
        self.guarded(|this| {
            if !matches!(this.state, State::AwaitPassword { request } if request == id) {
                return Ok(());
            }
            match password {
                Ok(password) => {
                    let request = UserauthRequest {
                        user: &this.user,
                        service: SERVICE_CONNECTION,
                        method: AuthMethod::Password {
                            password: &password,
                            new_password: None,
                        },
                    };
                    sink.send_with(&mut |buf| request.encode(buf));
                    this.state = State::ExpectReply(Sent::Password);
                    Ok(())
                }
                Err(why) => {
                    this.password.attempts = this.password.attempts.saturating_sub(1);
                    this.password.done = true;
                    this.password.report.skipped = Some(why);
                    this.next(sink)
                }
            }
        })
    }

    /// Answers [`AuthEvent::InfoRequest`] `id` with one answer per prompt, in order, or with
    /// why there are none (keyboard-interactive then stops, and that reason is reported).
    /// A wrong number of answers counts as none. An answer to a request that is no longer
    /// awaited is ignored.
    pub fn provide_responses(
        &mut self,
        id: u64,
        responses: Result<Vec<Zeroizing<String>>, String>,
        sink: &mut dyn PayloadSink,
    ) -> Result<(), AuthError> {
        self.guarded(|this| {
            let State::AwaitResponses {
                request,
                count,
                rounds,
            } = this.state
            else {
                return Ok(());
            };
            if request != id {
                return Ok(());
            }
            let responses = responses.and_then(|r| {
                if r.len() == count as usize {
                    Ok(r)
                } else {
                    Err(format!("{} answers were given to {count} prompts", r.len()))
                }
            });
            match responses {
                Ok(answers) => {
                    let strs: Vec<&str> = answers.iter().map(|a| a.as_str()).collect();
                    sink.send_with(&mut |buf| UserauthInfoResponse::encode_from(&strs, buf));
                    this.state = State::ExpectInfoRequest { rounds };
                    Ok(())
                }
                Err(why) => {
                    // RFC 4256 section 3.1: a new request abandons this exchange.
                    let kbd = &mut this.keyboard_interactive;
                    kbd.attempts = kbd.attempts.saturating_sub(1);
                    kbd.done = true;
                    kbd.report.skipped = Some(why);
                    this.next(sink)
                }
            }
        })
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<AuthEvent> {
        self.events.pop_front()
    }

    /// Runs `f` unless failed already, and stays failed if it fails.
    fn guarded(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), AuthError>,
    ) -> Result<(), AuthError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let result = f(self);
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    fn handle(
        &mut self,
        payload: &[u8],
        ctx: &AuthContext<'_>,
        sink: &mut dyn PayloadSink,
    ) -> Result<(), AuthError> {
        let in_flight = match &self.state {
            State::ExpectReply(Sent::Password) => MethodInFlight::Password,
            State::ExpectInfoRequest { .. } => MethodInFlight::KeyboardInteractive,
            _ => MethodInFlight::PublicKey,
        };
        let msg = decode_server_message_for(payload, in_flight)?;
        let state = core::mem::replace(&mut self.state, State::Idle);
        match (state, msg) {
            (State::Idle, msg) => Err(unexpected(msg, "before authentication started")),
            (State::Authenticated, msg) => Err(unexpected(msg, "after authentication succeeded")),
            (State::Failed(e), _) => Err(e),
            (state, ServerMessage::Banner(banner)) => {
                self.state = state;
                self.push_banner(sanitize(banner.message, true, MAX_BANNER_CHARS));
                Ok(())
            }
            (state, ServerMessage::ServiceAccept(accept))
                if matches!(state, State::ExpectServiceAccept) || self.sent_ahead =>
            {
                if accept.service != SERVICE_USERAUTH {
                    return Err(AuthError::Protocol(format!(
                        "the server accepted service {:?} instead of {SERVICE_USERAUTH:?}",
                        sanitize(accept.service.as_bytes(), false, 64)
                    )));
                }
                if self.sent_ahead {
                    // The request sent ahead is on its way (or answered): carry on.
                    self.sent_ahead = false;
                    self.state = state;
                    return Ok(());
                }
                self.session_id = ctx.session_id.to_vec();
                self.plan_attempts(ctx);
                self.next(sink)
            }
            (
                State::ExpectReply(_) | State::ExpectPkOk(_) | State::ExpectInfoRequest { .. },
                ServerMessage::Success(_),
            ) => {
                self.state = State::Authenticated;
                self.events.push_back(AuthEvent::Success);
                Ok(())
            }
            (State::ExpectReply(sent), ServerMessage::Failure(failure)) => {
                self.handle_failure(sent, &failure, sink)
            }
            (State::ExpectPkOk(step), ServerMessage::Failure(failure)) => {
                // A query is never a partial success; its refusal is the key's.
                let refused = UserauthFailure {
                    partial_success: false,
                    ..failure
                };
                self.handle_failure(Sent::Key(step), &refused, sink)
            }
            (State::ExpectInfoRequest { rounds }, ServerMessage::Failure(failure)) => {
                if rounds == 0 && !failure.partial_success {
                    // Refused without a single question (sshd without PAM has no device):
                    // another attempt would go the same way, so stop, as OpenSSH does.
                    let kbd = &mut self.keyboard_interactive;
                    kbd.done = true;
                    kbd.report.skipped =
                        Some("the server asked no question, so it has nothing to ask with".into());
                }
                self.handle_failure(Sent::KeyboardInteractive, &failure, sink)
            }
            (State::ExpectPkOk(step), ServerMessage::PkOk(ok)) => {
                let Some(id) = self.identities.get(step.identity) else {
                    return Err(AuthError::Protocol("PK_OK for an unknown key".into()));
                };
                let name = id.algorithm_name(step.algorithm);
                if ok.algorithm != name || ok.key_blob != id.key_blob() {
                    return Err(AuthError::Protocol(format!(
                        "SSH_MSG_USERAUTH_PK_OK (60) names another key or algorithm ({:?}) \
                         than the query it answers ({name})",
                        sanitize(ok.algorithm.as_bytes(), false, 64)
                    )));
                }
                let data = self.signed_data(step);
                self.ask_for_signature(step, data);
                Ok(())
            }
            (State::ExpectReply(Sent::Password), ServerMessage::PasswdChangereq(req)) => {
                Err(AuthError::PasswordChangeRequired {
                    user: self.user.clone(),
                    prompt: sanitize(req.prompt, false, MAX_PROMPT_CHARS),
                })
            }
            (State::ExpectInfoRequest { rounds }, ServerMessage::InfoRequest(req)) => {
                self.handle_info_request(rounds + 1, &req, sink)
            }
            (State::ExpectServiceAccept, msg) => Err(unexpected(
                msg,
                "before the server accepted the ssh-userauth service",
            )),
            (
                State::AwaitSignature { .. }
                | State::AwaitPassword { .. }
                | State::AwaitResponses { .. },
                msg,
            ) => Err(unexpected(
                msg,
                "while no request was outstanding (the client was still preparing one)",
            )),
            (
                State::ExpectReply(_) | State::ExpectPkOk(_) | State::ExpectInfoRequest { .. },
                msg,
            ) => Err(unexpected(msg, "while waiting for the answer to a request")),
        }
    }

    fn push_banner(&mut self, text: String) {
        if self.events.len() < MAX_PENDING_EVENTS {
            self.events.push_back(AuthEvent::Banner(text));
        } else {
            tracing::warn!("dropping a USERAUTH_BANNER: too many events are waiting to be polled");
        }
    }

    /// The order keys are offered in: as given, except that a certificate goes before the
    /// plain key it certifies, as OpenSSH offers them.
    fn offer_order(&self) -> Vec<usize> {
        let n = self.identities.len();
        let mut placed = vec![false; n];
        let mut order = Vec::with_capacity(n);
        for (i, id) in self.identities.iter().enumerate() {
            if placed.get(i).copied().unwrap_or(true) {
                continue;
            }
            if id.certificate.is_none() {
                for (j, other) in self.identities.iter().enumerate().skip(i + 1) {
                    if other.certificate.is_some()
                        && other.public == id.public
                        && let Some(p) = placed.get_mut(j)
                        && !*p
                    {
                        *p = true;
                        order.push(j);
                    }
                }
            }
            if let Some(p) = placed.get_mut(i) {
                *p = true;
            }
            order.push(i);
        }
        order
    }

    /// Decides every publickey request to send, from the keys, the configured algorithms,
    /// certificates' validity and the server's `server-sig-algs`: each key with its best
    /// algorithm first, in offer order, and only then the other algorithms of each. sshd
    /// counts every refused request against `MaxAuthTries` (6 by default), so a second
    /// algorithm of one key must not use up the tries of the keys after it; OpenSSH offers
    /// each key once.
    fn plan_attempts(&mut self, ctx: &AuthContext<'_>) {
        let mut fallbacks = Vec::new();
        for index in self.offer_order() {
            match self.choose_algorithms(index, ctx) {
                Ok(chosen) => {
                    let mut steps = chosen.into_iter().map(|algorithm| KeyStep {
                        identity: index,
                        algorithm,
                    });
                    self.plan.extend(steps.next());
                    fallbacks.extend(steps);
                }
                Err(reason) => self.skip(index, reason),
            }
        }
        self.plan.extend(fallbacks);
    }

    /// The algorithms to offer identity `index` with, best first, or why there are none.
    fn choose_algorithms(
        &self,
        index: usize,
        ctx: &AuthContext<'_>,
    ) -> Result<Vec<SignatureAlgorithm>, SkipReason> {
        let Some(identity) = self.identities.get(index) else {
            return Err(SkipReason::NotTried);
        };
        if !self.publickey {
            return Err(if self.publickey_unlisted {
                SkipReason::PublickeyNotPreferred
            } else {
                SkipReason::PublickeyDisabled
            });
        }
        if let (Some(cert), Some(now)) = (&identity.certificate, self.now) {
            match cert.validity_at(now) {
                Validity::Valid => {}
                Validity::NotYetValid => {
                    return Err(SkipReason::CertificateNotYetValid {
                        valid_after: cert.valid_after(),
                    });
                }
                Validity::Expired => {
                    return Err(SkipReason::CertificateExpired {
                        valid_before: cert.valid_before(),
                    });
                }
            }
        }
        let can_sign = identity.can_sign();
        let certified = identity.certificate.is_some();
        let mut configured: Vec<SignatureAlgorithm> = Vec::new();
        for name in &self.pubkey_algorithms {
            let alg = if certified {
                certificate_algorithm_from_name(name)
            } else {
                SignatureAlgorithm::from_name(name)
            };
            if let Some(alg) = alg
                && can_sign.contains(&alg)
                && !configured.contains(&alg)
            {
                configured.push(alg);
            }
        }
        if configured.is_empty() {
            return Err(SkipReason::NotInAcceptedAlgorithms {
                key_can_sign: can_sign
                    .iter()
                    .copied()
                    .filter(|a| *a != SignatureAlgorithm::RsaSha1)
                    .collect(),
            });
        }
        // Every listed one is tried, not just the first (the others after every key's
        // first, see `plan_attempts`): OpenSSH servers up to at least 9.2 list every
        // algorithm they know in server-sig-algs, even those their PubkeyAcceptedAlgorithms
        // turns off, so a refusal of `rsa-sha2-512` does not mean `rsa-sha2-256` will be
        // refused too.
        let chosen: Vec<SignatureAlgorithm> = configured
            .iter()
            .copied()
            .filter(|a| {
                ctx.server_sig_algs
                    .is_none_or(|listed| listed.iter().any(|n| n == a.name()))
            })
            .collect();
        if chosen.is_empty() {
            return Err(SkipReason::NoAllowedAlgorithm {
                key_can_sign: configured,
            });
        }
        Ok(chosen)
    }

    fn skip(&mut self, index: usize, reason: SkipReason) {
        if let (Some(report), Some(identity)) =
            (self.reports.get_mut(index), self.identities.get(index))
        {
            self.events.push_back(AuthEvent::Skipped {
                source: identity.source.clone(),
                fingerprint: report.fingerprint.clone(),
                reason: reason.clone(),
            });
            report.skipped = Some(reason);
        }
    }

    /// Gives up on an identity's remaining algorithms.
    fn drop_identity(&mut self, index: usize, reason: SkipReason) {
        self.plan.retain(|s| s.identity != index);
        self.skip(index, reason);
    }

    /// Whether the server allows `method`, or has not said yet.
    fn may_use(&self, method: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|list| list.iter().any(|m| m == method))
    }

    /// Whether the server has said it allows `method`.
    fn server_offers(&self, method: &str) -> bool {
        self.allowed
            .as_ref()
            .is_some_and(|list| list.iter().any(|m| m == method))
    }

    /// Sends the next request the plan and the server's methods allow, trying the methods
    /// in the preferred order, or gives up.
    fn next(&mut self, sink: &mut dyn PayloadSink) -> Result<(), AuthError> {
        for i in 0..self.order.len() {
            let method = self.order.get(i).copied().unwrap_or_default();
            let sent = if method == METHOD_PUBLICKEY {
                self.next_publickey(sink)
            } else {
                let state = if method == METHOD_KEYBOARD_INTERACTIVE {
                    &self.keyboard_interactive
                } else {
                    &self.password
                };
                if state.usable() && self.allowed.is_none() && !self.probed {
                    // Whether the server takes this method is not known yet, and it comes
                    // before any that might be: ask for the list first.
                    break;
                }
                if method == METHOD_KEYBOARD_INTERACTIVE {
                    self.next_keyboard_interactive(sink)
                } else {
                    self.next_password()
                }
            };
            if sent {
                return Ok(());
            }
        }
        if self.allowed.is_none() && !self.probed {
            self.probed = true;
            let request = UserauthRequest {
                user: &self.user,
                service: SERVICE_CONNECTION,
                method: AuthMethod::None,
            };
            sink.send_with(&mut |buf| request.encode(buf));
            self.events.push_back(AuthEvent::ProbingMethods);
            self.state = State::ExpectReply(Sent::Probe);
            return Ok(());
        }
        Err(self.refusal())
    }

    /// The next key step, if publickey may be used and a key is left.
    fn next_publickey(&mut self, sink: &mut dyn PayloadSink) -> bool {
        if self.may_use(METHOD_PUBLICKEY) {
            while let Some(step) = self.plan.pop_front() {
                if self.send_key_step(step, sink) {
                    return true;
                }
            }
        }
        false
    }

    /// A keyboard-interactive attempt, if the server allows one and attempts are left.
    fn next_keyboard_interactive(&mut self, sink: &mut dyn PayloadSink) -> bool {
        let offered = self.server_offers(METHOD_KEYBOARD_INTERACTIVE);
        let Some(attempt) = self
            .keyboard_interactive
            .take_attempt(offered, self.max_attempts)
        else {
            return false;
        };
        let request = UserauthRequest {
            user: &self.user,
            service: SERVICE_CONNECTION,
            method: AuthMethod::KeyboardInteractive {
                language: "",
                submethods: "",
            },
        };
        sink.send_with(&mut |buf| request.encode(buf));
        self.events.push_back(AuthEvent::Method {
            method: METHOD_KEYBOARD_INTERACTIVE,
            attempt,
        });
        self.state = State::ExpectInfoRequest { rounds: 0 };
        true
    }

    /// A password attempt (asking the caller for the password), if the server allows one
    /// and attempts are left.
    fn next_password(&mut self) -> bool {
        let offered = self.server_offers(METHOD_PASSWORD);
        let Some(attempt) = self.password.take_attempt(offered, self.max_attempts) else {
            return false;
        };
        let request = self.next_request;
        self.next_request += 1;
        self.events.push_back(AuthEvent::Method {
            method: METHOD_PASSWORD,
            attempt,
        });
        self.events
            .push_back(AuthEvent::PasswordRequest(PasswordRequest {
                id: request,
                user: self.user.clone(),
                attempt,
            }));
        self.state = State::AwaitPassword { request };
        true
    }

    /// Sends one publickey request: signed at once for a key held here, a query for one the
    /// caller signs for. `false` if the key could not be used and the next should be tried.
    fn send_key_step(&mut self, step: KeyStep, sink: &mut dyn PayloadSink) -> bool {
        let Some(id) = self.identities.get(step.identity) else {
            return false;
        };
        let name = id.algorithm_name(step.algorithm);
        match &id.signer {
            Signer::External { .. } => {
                let request = UserauthRequest {
                    user: &self.user,
                    service: SERVICE_CONNECTION,
                    method: AuthMethod::PublicKey {
                        algorithm: name,
                        key_blob: id.key_blob(),
                        signature: None,
                    },
                };
                sink.send_with(&mut |buf| request.encode(buf));
                self.events.push_back(AuthEvent::Query {
                    source: id.source.clone(),
                    fingerprint: id.fingerprint(),
                    algorithm: step.algorithm,
                    certificate: id.certificate.is_some(),
                });
                self.state = State::ExpectPkOk(step);
                true
            }
            Signer::Key(_) if self.caller_signs_held_keys => {
                let data = self.signed_data(step);
                self.ask_for_signature(step, data);
                true
            }
            Signer::Key(key) => {
                let data = self.signed_data(step);
                match key.sign(step.algorithm, &data) {
                    Ok(signature) => {
                        self.send_signed(step, &signature, sink);
                        true
                    }
                    Err(e) => {
                        // Only this key is unusable; the others may still work.
                        self.drop_identity(step.identity, SkipReason::SignFailed(e));
                        false
                    }
                }
            }
        }
    }

    /// What the signature of a publickey request for `step` covers.
    fn signed_data(&self, step: KeyStep) -> Vec<u8> {
        let Some(id) = self.identities.get(step.identity) else {
            return Vec::new();
        };
        publickey_signed_data(
            &self.session_id,
            &self.user,
            SERVICE_CONNECTION,
            id.algorithm_name(step.algorithm),
            id.key_blob(),
        )
    }

    /// Asks the caller to sign `data` for `step` ([`AuthEvent::SignRequest`]) and waits.
    fn ask_for_signature(&mut self, step: KeyStep, data: Vec<u8>) {
        let Some(id) = self.identities.get(step.identity) else {
            return;
        };
        let request = self.next_request;
        self.next_request += 1;
        self.events.push_back(AuthEvent::SignRequest(SignRequest {
            id: request,
            identity: step.identity,
            source: id.source.clone(),
            key_blob: id.key_blob().to_vec(),
            data: data.clone(),
            algorithm: step.algorithm,
        }));
        self.state = State::AwaitSignature {
            step,
            request,
            data,
        };
    }

    fn send_signed(&mut self, step: KeyStep, signature: &[u8], sink: &mut dyn PayloadSink) {
        let Some(id) = self.identities.get(step.identity) else {
            return;
        };
        let request = UserauthRequest {
            user: &self.user,
            service: SERVICE_CONNECTION,
            method: AuthMethod::PublicKey {
                algorithm: id.algorithm_name(step.algorithm),
                key_blob: id.key_blob(),
                signature: Some(signature),
            },
        };
        sink.send_with(&mut |buf| request.encode(buf));
        self.events.push_back(AuthEvent::Attempt {
            source: id.source.clone(),
            fingerprint: id.fingerprint(),
            algorithm: step.algorithm,
            certificate: id.certificate.is_some(),
        });
        self.state = State::ExpectReply(Sent::Key(step));
    }

    /// A signature from the caller must be a whole blob of the algorithm asked for that
    /// verifies: an old agent may ignore the RSA flags and make SHA-1 signatures, and the
    /// server would only say "refused".
    fn check_signature(
        &self,
        step: KeyStep,
        data: &[u8],
        signature: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let id = self
            .identities
            .get(step.identity)
            .ok_or_else(|| "no such key".to_owned())?;
        let name = Reader::new(&signature)
            .utf8()
            .map_err(|e| format!("the signature is malformed ({e})"))?;
        if name != step.algorithm.name() {
            return Err(format!(
                "a {} signature came back where {} was asked for (an agent too old for \
                 SHA-2 RSA signatures?)",
                sanitize(name.as_bytes(), false, 64),
                step.algorithm
            ));
        }
        id.public
            .verify(step.algorithm, data, &signature)
            .map_err(|e| format!("the signature does not verify with the key ({e})"))?;
        Ok(signature)
    }

    fn handle_info_request(
        &mut self,
        rounds: u32,
        req: &UserauthInfoRequest<'_>,
        sink: &mut dyn PayloadSink,
    ) -> Result<(), AuthError> {
        if rounds > MAX_INFO_ROUNDS {
            return Err(AuthError::Protocol(format!(
                "the server sent more than {MAX_INFO_ROUNDS} keyboard-interactive requests \
                 in one attempt without deciding"
            )));
        }
        if req.prompts.is_empty() {
            // Nothing to ask (often a server's way to show text); answer at once, as
            // OpenSSH does.
            let none: [&str; 0] = [];
            sink.send_with(&mut |buf| UserauthInfoResponse::encode_from(&none, buf));
            self.state = State::ExpectInfoRequest { rounds };
            return Ok(());
        }
        let prompts: Vec<Prompt> = req
            .prompts
            .iter()
            .map(|p| Prompt {
                text: sanitize(p.prompt, false, MAX_PROMPT_CHARS),
                echo: p.echo,
            })
            .collect();
        let request = self.next_request;
        self.next_request += 1;
        self.state = State::AwaitResponses {
            request,
            count: req.prompts.len(),
            rounds,
        };
        self.events.push_back(AuthEvent::InfoRequest(InfoRequest {
            id: request,
            name: sanitize(req.name, true, MAX_INSTRUCTION_CHARS),
            instruction: sanitize(req.instruction, true, MAX_INSTRUCTION_CHARS),
            prompts,
            attempt: self.keyboard_interactive.attempts,
            round: rounds,
        }));
        Ok(())
    }

    fn handle_failure(
        &mut self,
        sent: Sent,
        failure: &UserauthFailure<'_>,
        sink: &mut dyn PayloadSink,
    ) -> Result<(), AuthError> {
        self.server_allows = Some(sanitize(
            failure.methods.as_str().as_bytes(),
            false,
            MAX_METHODS_CHARS,
        ));
        self.allowed = Some(failure.methods.iter().map(str::to_owned).collect());
        let partial = failure.partial_success;
        match sent {
            Sent::Probe => {}
            Sent::Key(step) => {
                if partial {
                    let accepted = self
                        .reports
                        .get(step.identity)
                        .map(|r| format!("{} ({})", r.source, r.fingerprint))
                        .unwrap_or_default();
                    if let Some(report) = self.reports.get_mut(step.identity) {
                        report.accepted_with = Some(step.algorithm);
                    }
                    // This key has counted; its other algorithms are pointless.
                    self.plan.retain(|s| s.identity != step.identity);
                    self.events
                        .push_back(AuthEvent::PartialSuccess { accepted });
                } else if let Some(report) = self.reports.get_mut(step.identity) {
                    report.refused_with.push(step.algorithm);
                }
            }
            Sent::Password | Sent::KeyboardInteractive => {
                let method = if sent == Sent::Password {
                    &mut self.password
                } else {
                    &mut self.keyboard_interactive
                };
                if partial {
                    method.report.accepted = true;
                    method.done = true;
                    let accepted = method.report.method.to_owned();
                    self.events
                        .push_back(AuthEvent::PartialSuccess { accepted });
                } else {
                    method.report.refused += 1;
                }
            }
        }
        self.next(sink)
    }

    /// The error for "nothing more to try", naming every key and method and what became of
    /// each.
    fn refusal(&mut self) -> AuthError {
        for report in &mut self.reports {
            if report.refused_with.is_empty()
                && report.accepted_with.is_none()
                && report.skipped.is_none()
            {
                report.skipped = Some(SkipReason::NotTried);
            }
        }
        let max = self.max_attempts;
        let mut methods = Vec::new();
        for (state, switch) in [
            (&self.keyboard_interactive, "KbdInteractiveAuthentication"),
            (&self.password, "PasswordAuthentication"),
        ] {
            let name = state.report.method;
            let offered = self.server_offers(name);
            let mut report = state.report.clone();
            if state.unlisted && offered {
                report.skipped = Some("not in PreferredAuthentications".into());
            } else if !state.enabled && offered {
                report.skipped = Some(format!("turned off ({switch} no)"));
            } else if report.skipped.is_none() && state.enabled && offered && state.attempts >= max
            {
                report.skipped = Some(format!("all {max} attempts were used"));
            }
            if report.refused > 0 || report.accepted || report.skipped.is_some() {
                methods.push(report);
            }
        }
        let mut refusal = Refusal::new(
            self.user.clone(),
            self.reports.clone(),
            self.server_allows.clone(),
        );
        refusal.methods = methods;
        AuthError::Refused(refusal)
    }
}

fn unexpected(msg: ServerMessage<'_>, when: &str) -> AuthError {
    AuthError::Protocol(format!("{} arrived {when}", msg.describe()))
}

#[cfg(test)]
mod tests;
