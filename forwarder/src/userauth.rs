//! Which keys to offer, in which order, and who signs with each; and the [`AuthHelper`] that
//! answers authentication's requests: agent signatures, passphrases of key files, passwords
//! and keyboard-interactive answers.
//!
//! ```text
//!  CertificateFile ─────────────────────────────┐
//!  agent keys ── matching an IdentityFile ───────┤ (in this order, as OpenSSH offers them;
//!            └── others (unless IdentitiesOnly) ─┤  a certificate goes before its key)
//!  IdentityFile (+ its -cert.pub) not in agent ──┘
//!       unencrypted: loaded now, signed in the session
//!       encrypted with a .pub beside it: queried first, unlocked only if the server would
//!         accept it (passphrase from PassphraseFile/Env or the terminal)
//!       encrypted without a .pub: unlocked now, on a blocking thread
//! ```
//! A key the agent holds is signed by the agent even when its file is given too, so its
//! passphrase is never needed, as in OpenSSH. The agent is asked with a certificate's blob
//! only when it listed that very certificate; for any other certificate of a key it holds
//! (issued after `ssh-add`, or named by CertificateFile) it is asked with the plain key,
//! whose signature the certificate's is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ssh_auth::{
    AuthConfig, Certificate, Identity, InfoRequest, PasswordRequest, PrivateKey, SignRequest,
    check_key_file_mode, is_encrypted,
};
use ssh_transport::hostkey::PublicKey;
use tracing::debug;
use zeroize::Zeroizing;

use crate::agent::{self, AgentClient, AgentKey};
use crate::algorithms;
use crate::cli::{IdentityAgent, Options};
use crate::driver::{AuthFuture, AuthHelper};
use crate::files;
use crate::notice;
use crate::prompt::{self, SecretSource};

/// The most read of a `.pub` or certificate file (an RSA-16384 certificate is under 5 KiB).
const MAX_PUBLIC_FILE_LEN: u64 = 64 * 1024;

/// Passphrase attempts on the terminal before a key is given up, as in ssh.
const PASSPHRASE_ATTEMPTS: u32 = 3;

/// One passphrase prompt at a time among sessions prepared at once (each reads its key files
/// on a thread of its own): two would each take part of what is typed.
static PREPARE_PROMPT: Mutex<()> = Mutex::new(());

/// Who signs for one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    /// The session holds the private key.
    Session,
    /// The agent.
    Agent {
        /// The blob to ask it with, one it listed: a certificate's only if it holds that
        /// certificate, else the plain key's.
        key_blob: Vec<u8>,
    },
    /// This key file, unlocked on first use.
    LockedFile(PathBuf),
}

/// The identities to offer and how to sign with each; build with [`prepare`] or
/// [`identities`].
#[derive(Debug, Default)]
pub struct Prepared {
    /// Identities in the order to offer them.
    pub identities: Vec<Identity>,
    /// One per identity.
    pub signers: Vec<Signer>,
    /// The agent, if one answered.
    pub agent: Option<AgentClient>,
    /// Identity files given that could not be used, each with why, for the final error.
    pub unusable: Vec<String>,
    /// What a person should be told about these identities (a certificate that cannot work,
    /// an agent that cannot be asked).
    pub warnings: Vec<String>,
}

impl Prepared {
    /// Adds a warning, once.
    fn warn(&mut self, text: String) {
        if !self.warnings.contains(&text) {
            self.warnings.push(text);
        }
    }
}

/// One IdentityFile, as far as it could be read.
#[derive(Debug)]
struct FileKey {
    path: PathBuf,
    public: PublicKey,
    /// The private key when it is loaded; `None` while locked (or absent: a `.pub` only).
    key: Option<Arc<PrivateKey>>,
    /// Whether the private key file exists (else only the agent can sign for it).
    has_private: bool,
    certificates: Vec<(Certificate, String)>,
}

/// The public key of a `.pub` line (`type base64 [comment]`).
fn parse_public_line(text: &str) -> Option<PublicKey> {
    use base64::Engine as _;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?;
    let b64 = line.split_whitespace().nth(1)?;
    let blob = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    PublicKey::from_blob(&blob).ok()
}

pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Reads a certificate file: `Ok(None)` if it is simply missing and that is fine, else why
/// it cannot be used (with a warning), for the list of unusable files. Parsing checks the
/// authority's signature, so a damaged or altered certificate never costs a login attempt.
fn read_certificate(path: &Path, warn_missing: bool) -> Result<Option<Certificate>, String> {
    match files::read_text_bounded(path, MAX_PUBLIC_FILE_LEN) {
        Ok(text) => match Certificate::from_openssh_line(&text) {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                notice::warning(format_args!("ignoring certificate {}: {e}", path.display()));
                Err(format!("certificate {}: {e}", path.display()))
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !warn_missing => Ok(None),
        Err(e) => {
            notice::warning(format_args!(
                "cannot read certificate {}: {e}",
                path.display()
            ));
            Err(format!("certificate {}: {e}", path.display()))
        }
    }
}

/// Warns about a certificate that cannot work for this tunnel.
fn check_certificate_use(
    out: &mut Prepared,
    cert: &Certificate,
    source: &str,
    user: &str,
    now: u64,
) {
    if !cert.permits_port_forwarding() {
        out.warn(format!(
            "certificate {source} ({}) lacks the permit-port-forwarding \
             extension, so the server will refuse every forward made with it; have it signed \
             without -O no-port-forwarding",
            cert.key_id()
        ));
    }
    if !cert.allows_principal(user) {
        debug!(
            %source, principals = ?cert.principals(), %user,
            "the certificate does not name this user; the server may still map it"
        );
    }
    if cert.validity_at(now) != ssh_auth::cert::Validity::Valid {
        debug!(%source, validity = %cert.describe(), "certificate not valid now");
    }
}

/// Reads a private key file, refusing it first (as OpenSSH does) when its owner is us and
/// other users may read or write it; the check looks at the opened file, so what is
/// checked is what is read. `Ok(None)` when there is no such file.
fn read_private_key_file(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read the permissions of {}: {e}", path.display()))?;
        let me = rustix::process::getuid().as_raw();
        check_key_file_mode(&path.display().to_string(), meta.uid(), me, meta.mode())
            .map_err(|e| e.to_string())?;
    }
    // Room for the longest file read, so no reallocation leaves a copy of the key behind.
    let mut data = Zeroizing::new(Vec::with_capacity(ssh_auth::keys::MAX_KEY_FILE_LEN + 1));
    files::read_to_end_bounded(file, ssh_auth::keys::MAX_KEY_FILE_LEN as u64, &mut data)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(data))
}

/// Reads an identity file: the key itself when unencrypted (or when it has no `.pub` to
/// query with, after asking for its passphrase), else its public key from `.pub`.
fn read_identity_file(path: &Path, passphrase: &SecretSource) -> Result<Option<FileKey>, String> {
    let pub_path = with_suffix(path, ".pub");
    let data = match read_private_key_file(path)? {
        Some(d) => d,
        None => {
            // A public key alone still picks a key in the agent, as in OpenSSH.
            return Ok(files::read_text_bounded(&pub_path, MAX_PUBLIC_FILE_LEN)
                .ok()
                .and_then(|t| parse_public_line(&t))
                .map(|public| FileKey {
                    path: path.to_path_buf(),
                    public,
                    key: None,
                    has_private: false,
                    certificates: Vec::new(),
                }));
        }
    };
    let (public, key) = if is_encrypted(&data) {
        match files::read_text_bounded(&pub_path, MAX_PUBLIC_FILE_LEN)
            .ok()
            .and_then(|t| parse_public_line(&t))
        {
            Some(public) => (public, None),
            None => {
                debug!(path = %path.display(), "encrypted key without a .pub: unlocking it now");
                let key = unlock(path, &data, passphrase)?;
                (key.public_key().clone(), Some(key))
            }
        }
    } else {
        let key = PrivateKey::from_file_contents(&data).map_err(|e| e.to_string())?;
        (key.public_key().clone(), Some(Arc::new(key)))
    };
    Ok(Some(FileKey {
        path: path.to_path_buf(),
        public,
        key,
        has_private: true,
        certificates: Vec::new(),
    }))
}

/// Reads the identity files in order, each with the certificate beside it (`-cert.pub`);
/// also says, for each given file that cannot be used, why. Missing `defaults` (the
/// default identity files) are not worth a word. Blocks: it may unlock keys.
fn read_identity_files(
    paths: &[PathBuf],
    defaults: bool,
    passphrase: &SecretSource,
) -> (Vec<FileKey>, Vec<String>) {
    let mut files: Vec<FileKey> = Vec::new();
    let mut unusable = Vec::new();
    for path in paths {
        match read_identity_file(path, passphrase) {
            Ok(Some(mut file)) => {
                let cert_path = with_suffix(path, "-cert.pub");
                let cert = read_certificate(&cert_path, false).unwrap_or_else(|why| {
                    unusable.push(why);
                    None
                });
                if let Some(cert) = cert {
                    if cert.public_key() == &file.public {
                        file.certificates
                            .push((cert, cert_path.display().to_string()));
                    } else {
                        notice::warning(format_args!(
                            "ignoring certificate {}: it is for key {}, \
                             not for {} ({})",
                            cert_path.display(),
                            cert.public_key().fingerprint(),
                            path.display(),
                            file.public.fingerprint()
                        ));
                    }
                }
                files.push(file);
            }
            Ok(None) => {
                if !defaults {
                    notice::warning(format_args!(
                        "identity file {} not accessible: no such file",
                        path.display()
                    ));
                    unusable.push(format!("{}: no such file", path.display()));
                }
            }
            Err(e) => {
                notice::warning(format_args!("cannot use {}: {e}", path.display()));
                unusable.push(format!("{}: {e}", path.display()));
            }
        }
    }
    (files, unusable)
}

/// Decrypts a key file with its passphrase: a file's or variable's once, the terminal's up
/// to three times.
fn unlock(path: &Path, data: &[u8], passphrase: &SecretSource) -> Result<Arc<PrivateKey>, String> {
    let prompt = format!("Enter passphrase for key '{}': ", path.display());
    let attempts = if passphrase.is_terminal() {
        PASSPHRASE_ATTEMPTS
    } else {
        1
    };
    let mut last = String::new();
    for _ in 0..attempts {
        let secret = passphrase.read(&prompt).map_err(|why| {
            format!(
                "the key file {} is protected by a passphrase: {why}",
                path.display()
            )
        })?;
        match PrivateKey::from_file_contents_with_passphrase(data, secret.as_bytes()) {
            Ok(key) => return Ok(Arc::new(key)),
            Err(ssh_auth::KeyFileError::WrongPassphrase) => {
                last = format!(
                    "wrong passphrase for {} (from {passphrase})",
                    path.display()
                );
                if passphrase.is_terminal() {
                    let _ = prompt::show("Bad passphrase, try again.");
                }
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Err(last)
}

/// The sources of passwords and passphrases the options call for.
pub fn secret_sources(opts: &Options) -> (SecretSource, SecretSource) {
    let terminal = !opts.batch_mode && prompt::terminal_available();
    let password = SecretSource::choose(
        "password",
        opts.password_file.as_deref(),
        opts.password_env.as_deref(),
        ("PasswordFile", "PasswordEnv"),
        opts.batch_mode,
        terminal,
    );
    let passphrase = SecretSource::choose(
        "passphrase",
        opts.passphrase_file.as_deref(),
        opts.passphrase_env.as_deref(),
        ("PassphraseFile", "PassphraseEnv"),
        opts.batch_mode,
        terminal,
    );
    (password, passphrase)
}

/// Whether the options call for keys at all.
fn publickey_wanted(opts: &Options) -> bool {
    opts.pubkey_authentication
        && opts
            .preferred_authentications
            .as_ref()
            .is_none_or(|m| m.iter().any(|m| m == "publickey"))
}

/// The key files of one set of options, as far as they could be read: each IdentityFile
/// (with the `-cert.pub` beside it) and each CertificateFile. They change only when a file
/// does, so they are read once and again only then; the agent's keys are not among them, as
/// they change without any file changing (see [`list_agent`]).
#[derive(Debug)]
pub struct KeyFileSet {
    files: Vec<FileKey>,
    /// CertificateFile certificates, each with its path as it is shown.
    certificates: Vec<(Certificate, String)>,
    /// Identity files given that could not be used, each with why, for the final error.
    pub unusable: Vec<String>,
}

/// Reads the key files `opts` names. Reading a key file without a .pub unlocks it now: a key
/// derivation that may take seconds and perhaps a prompt, which must not hold up the runtime
/// that awaits this (an application's, the fleet's control loop); so the files are read on a
/// blocking thread, one after another, in order.
pub async fn read_key_files(opts: &Options, passphrase: &SecretSource) -> KeyFileSet {
    if !publickey_wanted(opts) {
        return KeyFileSet {
            files: Vec::new(),
            certificates: Vec::new(),
            unusable: Vec::new(),
        };
    }
    let paths = opts.identity_files.clone();
    let defaults = opts.default_identity_files;
    let source = passphrase.clone();
    let (files, mut unusable) = blocking(move || {
        let _one_at_a_time = source.is_terminal().then(|| {
            PREPARE_PROMPT
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        });
        Ok(read_identity_files(&paths, defaults, &source))
    })
    .await
    .unwrap_or_else(|e| (Vec::new(), vec![format!("reading the identity files: {e}")]));
    let mut certificates = Vec::new();
    for path in &opts.certificate_files {
        match read_certificate(path, true) {
            Ok(Some(cert)) => certificates.push((cert, path.display().to_string())),
            Ok(None) => {}
            Err(why) => unusable.push(why),
        }
    }
    KeyFileSet {
        files,
        certificates,
        unusable,
    }
}

/// The keys an agent held when it was asked, and the agent to sign with.
#[derive(Debug, Default)]
pub struct AgentKeys {
    client: Option<AgentClient>,
    keys: Vec<AgentKey>,
    /// Why an agent named with IdentityAgent could not be asked, for a person.
    unreachable: Option<String>,
}

/// Asks the agent for the keys it holds now: none (quietly if no agent is configured or
/// running) when it cannot be asked. OpenSSH asks at every connection, so a key replaced in
/// the agent (`ssh-add` of the new, `ssh-add -d` of the old) is the one the next connection
/// offers.
pub async fn list_agent(opts: &Options) -> AgentKeys {
    if !publickey_wanted(opts) {
        return AgentKeys::default();
    }
    let Some(path) = agent::socket_path(&opts.identity_agent, &|n| std::env::var_os(n)) else {
        return AgentKeys::default();
    };
    let client = AgentClient::new(path);
    match client.list_identities().await {
        Ok(keys) => {
            debug!(agent = %client.path().display(), keys = keys.len(), "agent keys");
            AgentKeys {
                client: Some(client),
                keys,
                unreachable: None,
            }
        }
        Err(e) => {
            // SSH_AUTH_SOCK left over from an old agent is common and harmless; an agent
            // named with IdentityAgent is expected to be there.
            if matches!(opts.identity_agent, IdentityAgent::AuthSock) {
                debug!("no agent: {e}");
                AgentKeys::default()
            } else {
                AgentKeys {
                    unreachable: Some(e),
                    ..AgentKeys::default()
                }
            }
        }
    }
}

/// Reads the key files, asks the agent, and builds the identities to offer from both, for a
/// single connection (the check command's). Warnings go to the person at once.
pub async fn prepare(opts: &Options, passphrase: &SecretSource, now: u64) -> Prepared {
    let agent = list_agent(opts).await;
    let key_files = read_key_files(opts, passphrase).await;
    let prepared = identities(opts, &key_files, &agent, now);
    for w in &prepared.warnings {
        notice::warning(format_args!("{w}"));
    }
    prepared
}

/// The identities to offer, in OpenSSH's order, and who signs for each: the key files as
/// read and the agent's keys as it listed them. Warnings are returned, not given: a tunnel
/// builds this at every attempt and tells a person only what changed.
pub fn identities(opts: &Options, key_files: &KeyFileSet, agent: &AgentKeys, now: u64) -> Prepared {
    let mut out = Prepared {
        identities: Vec::new(),
        signers: Vec::new(),
        agent: agent.client.clone(),
        unusable: key_files.unusable.clone(),
        warnings: agent.unreachable.iter().cloned().collect(),
    };
    if !publickey_wanted(opts) {
        return out;
    }
    let files = &key_files.files;
    let agent_keys = &agent.keys;
    // Which identity files the agent signs for.
    let mut used = vec![false; files.len()];

    let agent_public: Vec<Option<PublicKey>> = agent_keys
        .iter()
        .map(|k| match Identity::from_agent(&k.blob, "agent") {
            Ok(id) => Some(id.public_key().clone()),
            Err(e) => {
                debug!(comment = %k.comment, error = %e, "ignoring an agent key");
                None
            }
        })
        .collect();
    let in_agent = |public: &PublicKey| agent_public.iter().flatten().any(|p| p == public);

    // 1. CertificateFile certificates, each with the key that can sign for it.
    for (cert, source) in &key_files.certificates {
        check_certificate_use(&mut out, cert, source, &opts.user, now);
        if in_agent(cert.public_key()) {
            let identity = Identity::external_certified(cert.clone(), source.clone(), true);
            let signer = agent_signer(&identity, agent_keys);
            push(&mut out, identity, signer);
        } else if let Some(file) = files.iter().find(|f| &f.public == cert.public_key()) {
            push_file_certificate(&mut out, file, cert.clone(), source.clone());
        } else {
            out.warn(format!(
                "no private key for certificate {source} (key {}): give \
                 the key with -i or load it into the agent",
                cert.public_key().fingerprint()
            ));
        }
    }

    // 2. The agent's keys: those that match an identity file (with its certificates), then
    //    the others unless IdentitiesOnly.
    let mut unnamed = Vec::new();
    for (key, public) in agent_keys.iter().zip(&agent_public) {
        let Some(public) = public else { continue };
        let source = if key.comment.is_empty() {
            "agent key".to_owned()
        } else {
            format!("agent key {}", key.comment)
        };
        let file = files.iter().position(|f| &f.public == public);
        let Ok(identity) = Identity::from_agent(&key.blob, source.clone()) else {
            continue;
        };
        match file.and_then(|i| Some((files.get(i)?, used.get_mut(i)?))) {
            Some((file, used)) => {
                *used = true;
                for (cert, cert_source) in &file.certificates {
                    check_certificate_use(&mut out, cert, cert_source, &opts.user, now);
                    let certified =
                        Identity::external_certified(cert.clone(), cert_source.clone(), true);
                    let signer = agent_signer(&certified, agent_keys);
                    push(&mut out, certified, signer);
                }
                let signer = agent_signer(&identity, agent_keys);
                push(&mut out, identity, signer);
            }
            None if opts.identities_only => {
                debug!(%source, "IdentitiesOnly: not offering an agent key with no identity file");
            }
            // As OpenSSH does: after every agent key named by an identity file.
            None => unnamed.push(identity),
        }
    }
    for identity in unnamed {
        let signer = agent_signer(&identity, agent_keys);
        push(&mut out, identity, signer);
    }

    // 3. Identity files the agent does not hold.
    for (file, _) in files
        .iter()
        .zip(&used)
        .filter(|(f, used)| !**used && f.has_private)
    {
        for (cert, cert_source) in &file.certificates {
            check_certificate_use(&mut out, cert, cert_source, &opts.user, now);
            push_file_certificate(&mut out, file, cert.clone(), cert_source.clone());
        }
        let source = file.path.display().to_string();
        match &file.key {
            Some(key) => push(
                &mut out,
                Identity::from_shared(key.clone(), source),
                Signer::Session,
            ),
            None => push(
                &mut out,
                Identity::external(file.public.clone(), source, false),
                Signer::LockedFile(file.path.clone()),
            ),
        }
    }
    out
}

/// The agent as the signer of `identity`, asked with the blob it knows the key by. ssh-agent
/// finds a key by its exact blob, so a certificate it was not given is unknown to it even
/// when it holds the key; a certificate's signature is its key's, so the plain key signs for
/// it then, as OpenSSH has the agent sign (the certificate still goes in the request).
fn agent_signer(identity: &Identity, listed: &[AgentKey]) -> Signer {
    let offered = identity.key_blob();
    let key_blob = if listed.iter().any(|k| k.blob == offered) {
        offered
    } else {
        identity.public_key().blob()
    };
    Signer::Agent {
        key_blob: key_blob.to_vec(),
    }
}

/// Adds `identity` unless one with the same blob (key or certificate) is already there: an
/// agent that holds a key and its certificate lists both, and the certificate file beside the
/// key names the same one again. Each offer counts against sshd's `MaxAuthTries`.
fn push(out: &mut Prepared, identity: Identity, signer: Signer) {
    if out
        .identities
        .iter()
        .any(|known| known.key_blob() == identity.key_blob())
    {
        debug!(source = %identity.source(), "already offered: not again");
        return;
    }
    out.identities.push(identity);
    out.signers.push(signer);
}

/// A certificate whose key is an identity file (loaded or locked).
fn push_file_certificate(out: &mut Prepared, file: &FileKey, cert: Certificate, source: String) {
    match &file.key {
        Some(key) => match Identity::certified(key.clone(), cert, source.clone()) {
            Ok(id) => push(out, id, Signer::Session),
            Err(e) => out.warn(format!("ignoring certificate {source}: {e}")),
        },
        None if file.has_private => push(
            out,
            Identity::external_certified(cert, source, false),
            Signer::LockedFile(file.path.clone()),
        ),
        None => {}
    }
}

/// The authentication settings for a session.
pub fn auth_config(
    opts: &Options,
    identities: Vec<Identity>,
    now: u64,
) -> Result<AuthConfig, String> {
    let mut config = AuthConfig::new(opts.user.clone(), identities);
    if let Some(spec) = &opts.pubkey_accepted_algorithms {
        let names = algorithms::resolve(
            "PubkeyAcceptedAlgorithms",
            spec,
            ssh_auth::DEFAULT_PUBKEY_ALGORITHMS,
            ssh_auth::SUPPORTED_PUBKEY_ALGORITHMS,
        )
        .map_err(|e| e.to_string())?;
        config.pubkey_algorithms = names.into_iter().map(str::to_owned).collect();
    }
    config.publickey = opts.pubkey_authentication;
    config.password = opts.password_authentication;
    config.keyboard_interactive = opts.kbd_interactive_authentication;
    config.attempts = opts.number_of_password_prompts;
    if let Some(methods) = &opts.preferred_authentications {
        config.preferred.clone_from(methods);
    }
    config.now = Some(now);
    Ok(config)
}

/// The forwarder's [`AuthHelper`]: one attempt's signers, and the secrets every attempt
/// shares.
#[derive(Debug, Clone)]
pub struct Helper {
    secrets: Arc<Secrets>,
    /// One per identity of the attempt.
    signers: Arc<[Signer]>,
    /// One per identity of the attempt: its private key when the session holds it
    /// ([`Signer::Session`]).
    held: Arc<[Option<Arc<PrivateKey>>]>,
    agent: Option<AgentClient>,
}

/// Where passwords and passphrases come from, and the key files unlocked so far: kept from
/// one attempt to the next, so that a passphrase is asked for once per run.
#[derive(Debug)]
struct Secrets {
    user: String,
    host: String,
    password: SecretSource,
    passphrase: SecretSource,
    /// Key files unlocked so far, by path.
    unlocked: Mutex<HashMap<PathBuf, Arc<PrivateKey>>>,
    /// One terminal prompt at a time.
    terminal: Arc<Mutex<()>>,
}

impl Helper {
    /// A helper for `prepared`'s identities.
    pub fn new(
        opts: &Options,
        prepared: &Prepared,
        password: SecretSource,
        passphrase: SecretSource,
    ) -> Self {
        Self {
            secrets: Arc::new(Secrets {
                user: opts.user.clone(),
                host: opts.destination_host.clone(),
                password,
                passphrase,
                unlocked: Mutex::new(HashMap::new()),
                terminal: Arc::new(Mutex::new(())),
            }),
            signers: prepared.signers.clone().into(),
            held: held_keys(prepared),
            agent: prepared.agent.clone(),
        }
    }

    /// A helper for another attempt's identities, `prepared`, with the same secrets and the
    /// key files unlocked so far.
    pub fn for_identities(&self, prepared: &Prepared) -> Self {
        Self {
            secrets: self.secrets.clone(),
            signers: prepared.signers.clone().into(),
            held: held_keys(prepared),
            agent: prepared.agent.clone(),
        }
    }
}

/// The private key of each of `prepared`'s identities that the session holds.
fn held_keys(prepared: &Prepared) -> Arc<[Option<Arc<PrivateKey>>]> {
    prepared
        .identities
        .iter()
        .map(|id| id.private_key().cloned())
        .collect()
}

impl Secrets {
    fn cached(&self, path: &Path) -> Option<Arc<PrivateKey>> {
        self.unlocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
    }
}

/// Runs a blocking step (a prompt, a key derivation) off the async threads, in the caller's
/// span so what it logs is still the session's.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| format!("the task failed: {e}"))?
}

impl AuthHelper for Helper {
    fn sign(&self, request: SignRequest) -> AuthFuture<Vec<u8>> {
        let this = self.secrets.clone();
        let signer = self.signers.get(request.identity).cloned();
        let held = self.held.get(request.identity).cloned().flatten();
        let agent = self.agent.clone();
        Box::pin(async move {
            match signer {
                // A key file read without a passphrase (or unlocked when the attempt was
                // prepared): signed off the session's thread
                // ([`AuthConfig::caller_signs_held_keys`]).
                Some(Signer::Session) => {
                    let key = held.ok_or_else(|| "the session holds no such key".to_owned())?;
                    let alg = request.algorithm;
                    blocking(move || key.sign(alg, &request.data).map_err(|e| e.to_string())).await
                }
                Some(Signer::Agent { key_blob }) => {
                    let agent = agent.ok_or_else(|| "the agent is gone".to_owned())?;
                    // Not `request.key_blob`: for a certificate the agent does not hold,
                    // that names nothing the agent knows.
                    agent
                        .sign(&key_blob, &request.data, request.algorithm)
                        .await
                }
                Some(Signer::LockedFile(path)) => {
                    let key = match this.cached(&path) {
                        Some(key) => key,
                        None => {
                            let source = this.passphrase.clone();
                            let terminal = this.terminal.clone();
                            let p = path.clone();
                            let key = blocking(move || {
                                let _one_at_a_time = terminal.lock();
                                let data = read_private_key_file(&p)?.ok_or_else(|| {
                                    format!("{}: the key file is gone", p.display())
                                })?;
                                unlock(&p, &data, &source)
                            })
                            .await?;
                            this.unlocked
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(path.clone(), key.clone());
                            key
                        }
                    };
                    let alg = request.algorithm;
                    blocking(move || key.sign(alg, &request.data).map_err(|e| e.to_string())).await
                }
                _ => Err("no signer for this key".to_owned()),
            }
        })
    }

    fn password(&self, request: PasswordRequest) -> AuthFuture<Zeroizing<String>> {
        let this = self.secrets.clone();
        Box::pin(async move {
            if request.attempt > 1 && !this.password.is_terminal() {
                return Err(format!(
                    "the password from {} was refused and there is no other",
                    this.password
                ));
            }
            let source = this.password.clone();
            let prompt = format!("{}@{}'s password: ", this.user, this.host);
            let retry = request.attempt > 1;
            let terminal = this.terminal.clone();
            blocking(move || {
                let _one_at_a_time = terminal.lock();
                if retry {
                    let _ = prompt::show("Permission denied, please try again.");
                }
                source.read(&prompt)
            })
            .await
        })
    }

    fn respond(&self, request: InfoRequest) -> AuthFuture<Vec<Zeroizing<String>>> {
        let this = self.secrets.clone();
        Box::pin(async move {
            if this.password.is_terminal() {
                let terminal = this.terminal.clone();
                // Named like OpenSSH names them, so a prompt cannot pass for a local one.
                let whose = format!("({}@{}) ", this.user, this.host);
                return blocking(move || {
                    let _one_at_a_time = terminal.lock();
                    for text in [&request.name, &request.instruction] {
                        if !text.is_empty() {
                            prompt::show(text)?;
                        }
                    }
                    request
                        .prompts
                        .iter()
                        .map(|p| prompt::ask(&format!("{whose}{}", p.text), p.echo))
                        .collect()
                })
                .await;
            }
            // Without a terminal, the configured password answers the one hidden prompt a
            // PAM password check asks, once.
            match (&this.password, request.prompts.as_slice()) {
                (SecretSource::Unavailable(why), _) => Err(why.clone()),
                (source, [only]) if !only.echo && request.attempt == 1 && request.round == 1 => {
                    let source = source.clone();
                    blocking(move || source.read("").map(|p| vec![p])).await
                }
                (_, prompts) => Err(format!(
                    "the server asks {} question(s) ({}) that only a person at a terminal \
                     can answer",
                    prompts.len(),
                    prompts
                        .iter()
                        .map(|p| format!("{:?}", p.text))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Command, Environment, parse_args_with_env};
    use ssh_auth::Prompt;

    const ED25519: &str = include_str!("../../auth/testdata/ed25519");
    const ED25519_PUB: &str = include_str!("../../auth/testdata/ed25519.pub");
    const ED25519_CERT: &str = include_str!("../../auth/testdata/certs/ed25519-cert.pub");
    const LOCKED: &str = include_str!("../../auth/testdata/ed25519-passphrase");
    const RSA: &str = include_str!("../../auth/testdata/rsa2048");

    fn options(args: &[&str]) -> Options {
        let env = Environment {
            home: Some(PathBuf::from("/nonexistent-home")),
            user: Some("tester".into()),
            cache_home: None,
        };
        match parse_args_with_env(args.iter().copied(), &env) {
            Ok(Command::Run(o)) => o,
            other => panic!("{other:?}"),
        }
    }

    fn write_private(dir: &Path, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    #[test]
    fn key_files_others_can_read_are_refused_and_missing_ones_are_none() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = write_private(dir.path(), "id_ed25519", ED25519);
        let data = read_private_key_file(&path).unwrap().unwrap();
        assert_eq!(&data[..], ED25519.as_bytes());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_private_key_file(&path).unwrap_err();
        assert!(
            e.contains("0640 are too open") && e.contains("chmod 600"),
            "{e}"
        );
        assert_eq!(read_private_key_file(&dir.path().join("none")), Ok(None));
        // A wrong path to something huge is refused after the limit, not read whole.
        let huge = write_private(dir.path(), "huge", &"A".repeat(1 << 20));
        let e = read_private_key_file(&huge).unwrap_err();
        assert!(e.contains("larger than 64 KiB"), "{e}");
    }

    #[test]
    fn public_lines_and_suffixes() {
        let key = parse_public_line(&format!("# comment\n\n{ED25519_PUB}")).unwrap();
        assert_eq!(key.key_type().name(), "ssh-ed25519");
        assert!(parse_public_line("ssh-ed25519 !!!").is_none());
        assert!(parse_public_line("").is_none());
        assert_eq!(
            with_suffix(Path::new("/k/id_rsa"), "-cert.pub"),
            PathBuf::from("/k/id_rsa-cert.pub")
        );
    }

    #[tokio::test]
    async fn files_certificates_and_locked_keys_in_offer_order() {
        let dir = tempfile::tempdir().unwrap();
        let ed = write_private(dir.path(), "id_ed25519", ED25519);
        std::fs::write(dir.path().join("id_ed25519-cert.pub"), ED25519_CERT).unwrap();
        let locked = write_private(dir.path(), "id_locked", LOCKED);
        // The locked key's public half, made from it with its passphrase.
        let key = PrivateKey::from_file_contents_with_passphrase(LOCKED.as_bytes(), b"password1")
            .unwrap();
        std::fs::write(
            dir.path().join("id_locked.pub"),
            key.public_key().to_openssh_line(),
        )
        .unwrap();
        let opts = options(&[
            "-o",
            "IdentityAgent=none",
            "-i",
            ed.to_str().unwrap(),
            "-i",
            locked.to_str().unwrap(),
            "-l",
            "deploy",
            "h",
        ]);
        let prepared = prepare(&opts, &SecretSource::Unavailable("none".into()), 0).await;
        let sources: Vec<&str> = prepared.identities.iter().map(Identity::source).collect();
        let cert_path = dir.path().join("id_ed25519-cert.pub");
        assert_eq!(
            sources,
            [
                cert_path.to_str().unwrap(),
                ed.to_str().unwrap(),
                locked.to_str().unwrap()
            ]
        );
        assert!(prepared.identities[0].certificate().is_some());
        assert_eq!(
            prepared.signers,
            [
                Signer::Session,
                Signer::Session,
                Signer::LockedFile(locked.clone())
            ]
        );
        assert!(prepared.identities[2].is_external() && !prepared.identities[2].is_from_agent());
        assert_eq!(prepared.identities[2].public_key(), key.public_key());

        // The helper unlocks the locked key when asked to sign, with the passphrase file.
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "password1\n").unwrap();
        let helper = Helper::new(
            &opts,
            &prepared,
            SecretSource::Unavailable("none".into()),
            SecretSource::File {
                path: pass,
                option: "PassphraseFile",
            },
        );
        let blob = helper
            .sign(SignRequest {
                id: 1,
                identity: 2,
                source: locked.display().to_string(),
                key_blob: key.public_key().blob().to_vec(),
                data: b"data".to_vec(),
                algorithm: ssh_transport::hostkey::SignatureAlgorithm::Ed25519,
            })
            .await
            .unwrap();
        assert_eq!(
            key.public_key().verify(
                ssh_transport::hostkey::SignatureAlgorithm::Ed25519,
                b"data",
                &blob
            ),
            Ok(())
        );

        // The keys the session holds (the file and its certificate) are signed by the helper
        // too (on a blocking thread): the session hands their signatures to it.
        for identity in [0, 1] {
            let held = prepared.identities[identity].private_key().unwrap().clone();
            let blob = sign_for(&helper, identity, b"ignored").await.unwrap();
            assert_eq!(
                held.public_key().verify(
                    ssh_transport::hostkey::SignatureAlgorithm::Ed25519,
                    b"data",
                    &blob
                ),
                Ok(())
            );
        }
    }

    /// The `-cert.pub` line `line` with the last byte of its authority's signature flipped.
    fn with_bad_signature(line: &str) -> String {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::STANDARD;
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut blob = engine.decode(words[1]).unwrap();
        *blob.last_mut().unwrap() ^= 1;
        format!(
            "{} {} {}\n",
            words[0],
            engine.encode(blob),
            words[2..].join(" ")
        )
    }

    // sshd would refuse such a certificate, costing one of its MaxAuthTries and saying
    // nothing of why: it is not offered, and the refusal names it with the reason.
    #[tokio::test]
    async fn a_certificate_whose_authority_signature_does_not_verify_is_not_offered() {
        let dir = tempfile::tempdir().unwrap();
        let key = write_private(dir.path(), "id_ed25519", ED25519);
        let beside = dir.path().join("id_ed25519-cert.pub");
        std::fs::write(&beside, with_bad_signature(ED25519_CERT)).unwrap();
        let named = dir.path().join("issued-cert.pub");
        std::fs::write(&named, with_bad_signature(ED25519_CERT)).unwrap();
        let opts = options(&[
            "-o",
            "IdentityAgent=none",
            "-o",
            &format!("CertificateFile={}", named.display()),
            "-i",
            key.to_str().unwrap(),
            "h",
        ]);
        let prepared = prepare(&opts, &SecretSource::Unavailable("none".into()), 0).await;
        let sources: Vec<&str> = prepared.identities.iter().map(Identity::source).collect();
        assert_eq!(sources, [key.to_str().unwrap()], "the key alone is offered");
        let why = "its certificate authority's signature (by ssh-rsa key \
                   SHA256:nFxVWk/xIaDsEHRu5S9Wq4YjOqqZJZDNQ1A3pS/z9kU) is not valid: it does \
                   not match the certificate's contents";
        assert_eq!(prepared.unusable.len(), 2, "{:?}", prepared.unusable);
        for (path, reason) in [&beside, &named].iter().zip(&prepared.unusable) {
            assert!(
                reason.starts_with(&format!("certificate {}: {why}; ", path.display())),
                "{reason}"
            );
        }
    }

    #[tokio::test]
    async fn unusable_files_are_skipped_and_pubkey_off_offers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let open_key = dir.path().join("id_open");
        std::fs::write(&open_key, RSA).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let garbage = write_private(dir.path(), "id_garbage", "not a key");
        let opts = options(&[
            "-o",
            "IdentityAgent=none",
            "-i",
            open_key.to_str().unwrap(),
            "-i",
            garbage.to_str().unwrap(),
            "h",
        ]);
        let prepared = prepare(&opts, &SecretSource::Unavailable("none".into()), 0).await;
        // A key others can read is ignored, as OpenSSH ignores it (unless run as another
        // user than the file's owner, which tests do not do).
        assert!(prepared.identities.is_empty(), "{:?}", prepared.identities);
        let ed = write_private(dir.path(), "id_ed25519", ED25519);
        let off = options(&[
            "-o",
            "PubkeyAuthentication=no",
            "-i",
            ed.to_str().unwrap(),
            "h",
        ]);
        let prepared = prepare(&off, &SecretSource::Unavailable("none".into()), 0).await;
        assert!(prepared.identities.is_empty());
    }

    /// An agent at `dir/agent.sock` that answers `connections` requests: the list of its
    /// `keys` (blob, comment), in order; and, as ssh-agent finds keys by their exact blob, a
    /// signature (the key's comment) only for a blob it listed, else SSH_AGENT_FAILURE.
    fn listing_agent(
        dir: &Path,
        keys: &[(&[u8], &[u8])],
        connections: usize,
    ) -> (PathBuf, tokio::task::JoinHandle<()>) {
        use ssh_auth::agent::{AgentIdentity, AgentRequest, AgentResponse, frame_length};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut list = Vec::new();
        AgentResponse::Identities(
            keys.iter()
                .map(|(key_blob, comment)| AgentIdentity { key_blob, comment })
                .collect(),
        )
        .encode_frame(&mut list);
        let keys: Vec<(Vec<u8>, Vec<u8>)> = keys
            .iter()
            .map(|(blob, comment)| (blob.to_vec(), comment.to_vec()))
            .collect();
        let socket = dir.join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let agent = tokio::spawn(async move {
            for _ in 0..connections {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut header = [0u8; 4];
                s.read_exact(&mut header).await.unwrap();
                let mut body = vec![0u8; frame_length(header).unwrap()];
                s.read_exact(&mut body).await.unwrap();
                let mut answer = Vec::new();
                match AgentRequest::decode(&body).unwrap() {
                    AgentRequest::RequestIdentities => answer.clone_from(&list),
                    AgentRequest::Sign { key_blob, .. } => {
                        match keys.iter().find(|(blob, _)| blob == key_blob) {
                            Some((_, comment)) => {
                                AgentResponse::Signature(comment).encode_frame(&mut answer);
                            }
                            None => AgentResponse::Failure.encode_frame(&mut answer),
                        }
                    }
                }
                s.write_all(&answer).await.unwrap();
            }
        });
        (socket, agent)
    }

    /// Has `helper` sign for identity `identity`, whose request carries `key_blob`, as the
    /// session asks.
    async fn sign_for(
        helper: &Helper,
        identity: usize,
        key_blob: &[u8],
    ) -> Result<Vec<u8>, String> {
        helper
            .sign(SignRequest {
                id: 1,
                identity,
                source: "test".into(),
                key_blob: key_blob.to_vec(),
                data: b"data".to_vec(),
                algorithm: ssh_transport::hostkey::SignatureAlgorithm::Ed25519,
            })
            .await
    }

    fn helper_for(opts: &Options, prepared: &Prepared) -> Helper {
        Helper::new(
            opts,
            prepared,
            SecretSource::Unavailable("none".into()),
            SecretSource::Unavailable("none".into()),
        )
    }

    #[tokio::test]
    async fn agent_keys_come_first_and_identities_only_keeps_the_named_ones() {
        let dir = tempfile::tempdir().unwrap();
        let named = write_private(dir.path(), "id_ed25519", ED25519);
        let ed = PrivateKey::from_file_contents(ED25519.as_bytes()).unwrap();
        let rsa = PrivateKey::from_file_contents(RSA.as_bytes()).unwrap();
        let (socket, agent) = listing_agent(
            dir.path(),
            &[
                (rsa.public_key().blob(), b"other"),
                (ed.public_key().blob(), b"named"),
            ],
            2,
        );
        let agent_opt = format!("IdentityAgent={}", socket.display());
        for (only, expected) in [
            (false, vec!["agent key named", "agent key other"]),
            (true, vec!["agent key named"]),
        ] {
            let mut args = vec!["-o", agent_opt.as_str(), "-i", named.to_str().unwrap()];
            if only {
                args.extend(["-o", "IdentitiesOnly=yes"]);
            }
            args.push("h");
            let prepared = prepare(
                &options(&args),
                &SecretSource::Unavailable("none".into()),
                0,
            )
            .await;
            let sources: Vec<&str> = prepared.identities.iter().map(Identity::source).collect();
            assert_eq!(sources, expected, "IdentitiesOnly={only}");
            // The named file is signed for by the agent, never loaded twice.
            assert!(
                prepared
                    .signers
                    .iter()
                    .all(|s| matches!(s, Signer::Agent { .. }))
            );
        }
        agent.await.unwrap();
    }

    #[tokio::test]
    async fn a_certificate_the_agent_and_a_file_both_hold_is_offered_once() {
        let dir = tempfile::tempdir().unwrap();
        let named = write_private(dir.path(), "id_ed25519", ED25519);
        let cert_path = dir.path().join("id_ed25519-cert.pub");
        std::fs::write(&cert_path, ED25519_CERT).unwrap();
        let ed = PrivateKey::from_file_contents(ED25519.as_bytes()).unwrap();
        let cert = ssh_auth::cert::Certificate::from_openssh_line(ED25519_CERT).unwrap();
        // As ssh-add loads a key with its certificate beside it: both.
        let (socket, agent) = listing_agent(
            dir.path(),
            &[
                (ed.public_key().blob(), b"named"),
                (cert.blob(), b"named-cert"),
            ],
            2,
        );
        let agent_opt = format!("IdentityAgent={}", socket.display());
        let args = ["-o", agent_opt.as_str(), "-i", named.to_str().unwrap(), "h"];
        let opts = options(&args);
        let prepared = prepare(&opts, &SecretSource::Unavailable("none".into()), 0).await;
        let sources: Vec<&str> = prepared.identities.iter().map(Identity::source).collect();
        assert_eq!(
            sources,
            [cert_path.to_str().unwrap(), "agent key named"],
            "each blob once: every offer counts against MaxAuthTries"
        );
        assert_eq!(prepared.identities[0].key_blob(), cert.blob());
        // The agent holds this certificate, so it is asked with it.
        assert_eq!(
            prepared.signers,
            [
                Signer::Agent {
                    key_blob: cert.blob().to_vec()
                },
                Signer::Agent {
                    key_blob: ed.public_key().blob().to_vec()
                }
            ]
        );
        let helper = helper_for(&opts, &prepared);
        assert_eq!(
            sign_for(&helper, 0, cert.blob()).await.unwrap(),
            b"named-cert"
        );
        agent.await.unwrap();
    }

    // The key went into the agent before the certificate was issued (or the certificate is
    // named by CertificateFile): the agent does not know the certificate's blob, so it is
    // asked with the plain key's, while the request still carries the certificate.
    #[tokio::test]
    async fn a_certificate_the_agent_does_not_hold_is_signed_for_by_its_plain_key() {
        let dir = tempfile::tempdir().unwrap();
        // Beside the identity only its .pub and its certificate: the key is in the agent.
        let named = dir.path().join("id_ed25519");
        std::fs::write(dir.path().join("id_ed25519.pub"), ED25519_PUB).unwrap();
        let beside = dir.path().join("id_ed25519-cert.pub");
        std::fs::write(&beside, ED25519_CERT).unwrap();
        let issued = dir.path().join("issued-cert.pub");
        std::fs::write(&issued, ED25519_CERT).unwrap();
        let ed = PrivateKey::from_file_contents(ED25519.as_bytes()).unwrap();
        let cert = ssh_auth::cert::Certificate::from_openssh_line(ED25519_CERT).unwrap();
        let (socket, agent) = listing_agent(dir.path(), &[(ed.public_key().blob(), b"plain")], 4);
        let agent_opt = format!("IdentityAgent={}", socket.display());
        let certificate_file = format!("CertificateFile={}", issued.display());
        for (args, cert_source) in [
            (["-i", named.to_str().unwrap()], &beside),
            (["-o", certificate_file.as_str()], &issued),
        ] {
            let opts = options(&["-o", agent_opt.as_str(), args[0], args[1], "h"]);
            let prepared = prepare(&opts, &SecretSource::Unavailable("none".into()), 0).await;
            let sources: Vec<&str> = prepared.identities.iter().map(Identity::source).collect();
            assert_eq!(sources, [cert_source.to_str().unwrap(), "agent key plain"]);
            let helper = helper_for(&opts, &prepared);
            assert_eq!(
                sign_for(&helper, 0, cert.blob()).await,
                Ok(b"plain".to_vec()),
                "{args:?}"
            );
            let plain = Signer::Agent {
                key_blob: ed.public_key().blob().to_vec(),
            };
            assert_eq!(prepared.signers, [plain.clone(), plain], "{args:?}");
        }
        agent.await.unwrap();
    }

    // Unlocking a key file that has no .pub runs its key derivation (and may prompt) in
    // prepare: on a thread of its own, or the runtime awaiting prepare (an application's,
    // the fleet's control loop) stands still meanwhile.
    #[test]
    fn prepare_unlocks_key_files_off_the_runtime_thread() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_slow");
        // Many bcrypt rounds: unlocking takes a good part of a second.
        let out = std::process::Command::new("ssh-keygen")
            .args([
                "-q", "-t", "ed25519", "-a", "32", "-N", "s3cret", "-C", "slow", "-f",
            ])
            .arg(&key)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ssh-keygen (OpenSSH's is needed): {e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(with_suffix(&key, ".pub")).unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "s3cret\n").unwrap();
        let opts = options(&["-o", "IdentityAgent=none", "-i", key.to_str().unwrap(), "h"]);
        let passphrase = SecretSource::File {
            path: pass,
            option: "PassphraseFile",
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (prepared, ticks) = runtime.block_on(async {
            let ticks = Arc::new(AtomicU32::new(0));
            let counter = ticks.clone();
            let ticker = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            });
            tokio::task::yield_now().await;
            let before = ticks.load(Ordering::Relaxed);
            let prepared = prepare(&opts, &passphrase, 0).await;
            let during = ticks.load(Ordering::Relaxed) - before;
            ticker.abort();
            (prepared, during)
        });
        assert!(prepared.unusable.is_empty(), "{:?}", prepared.unusable);
        assert_eq!(prepared.signers, [Signer::Session], "the key was unlocked");
        assert!(
            ticks > 0,
            "the runtime's only thread did nothing else while prepare unlocked the key"
        );
    }

    fn helper(password: SecretSource) -> Helper {
        let prepared = Prepared {
            identities: Vec::new(),
            signers: Vec::new(),
            agent: None,
            unusable: Vec::new(),
            warnings: Vec::new(),
        };
        Helper::new(
            &options(&["-l", "deploy", "bastion"]),
            &prepared,
            password,
            SecretSource::Unavailable("none".into()),
        )
    }

    fn info(prompts: &[(&str, bool)], attempt: u32) -> InfoRequest {
        InfoRequest {
            id: 1,
            name: String::new(),
            instruction: String::new(),
            prompts: prompts
                .iter()
                .map(|(t, echo)| Prompt {
                    text: (*t).into(),
                    echo: *echo,
                })
                .collect(),
            attempt,
            round: 1,
        }
    }

    #[tokio::test]
    async fn without_a_terminal_the_password_file_answers_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let h = helper(SecretSource::File {
            path,
            option: "PasswordFile",
        });
        let req = |attempt| PasswordRequest {
            id: 1,
            user: "deploy".into(),
            attempt,
        };
        assert_eq!(h.password(req(1)).await.unwrap().as_str(), "s3cret");
        let again = h.password(req(2)).await.unwrap_err();
        assert!(
            again.contains("was refused and there is no other"),
            "{again}"
        );
        // A lone hidden prompt (PAM's "Password: ") gets the password, once.
        let answers = h.respond(info(&[("Password: ", false)], 1)).await.unwrap();
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].as_str(), "s3cret");
        assert!(h.respond(info(&[("Password: ", false)], 2)).await.is_err());
        let e = h
            .respond(info(&[("Password: ", false), ("Code: ", true)], 1))
            .await
            .unwrap_err();
        assert!(
            e.contains("2 question(s)") && e.contains("\"Code: \""),
            "{e}"
        );
        let none = helper(SecretSource::Unavailable("BatchMode is on".into()));
        assert_eq!(
            none.respond(info(&[("P: ", false)], 1)).await.unwrap_err(),
            "BatchMode is on"
        );
        assert!(none.password(req(1)).await.is_err());
    }
}
