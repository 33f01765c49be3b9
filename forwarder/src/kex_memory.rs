//! Each bastion's own first choices of key exchange and host key algorithm, remembered from
//! its last KEXINIT, so that the next session to it (a reconnect, another session of a
//! fleet, the next hop of a chain brought up again, the next run of the program) can send
//! its first key exchange message as a guess and save one crossing of the link, about half
//! a round trip (RFC 4253 section 7.1;
//! [`ClientConfig::guess_first_kex`]).
//!
//! ```text
//!  start_hop ──> prepare: this process's memory, else the KexGuessFile (read once);
//!                server's first kex (if we allow it) first; its first host key
//!                algorithm first if known_hosts holds that key type (or nothing yet);
//!                guess only when both our firsts are now the server's
//!  authenticated ──> remember(host key name, port, server's firsts)
//!                    └─> the file rewritten (temporary file, then rename) only when
//!                        they changed
//! ```
//!
//! Only a server that authenticated us is remembered, so a host that fails host key
//! verification cannot change our order. A server's first key exchange is remembered only
//! when our own order would negotiate it anyway (it is the first of ours the server offers);
//! otherwise the entry says not to guess ([`NO_GUESS`]), so a server that lists a classical
//! method first while it also offers a post-quantum hybrid we prefer does not talk us down
//! to the classical one for the sake of the guess. The order changes only among the
//! algorithms our configuration allows anyway, so a file someone else wrote can cost that
//! half round trip, or change the method among those we accept, and nothing more.
//!
//! The file ([`FirstsFile`]) names no host: each line is keyed by an HMAC-SHA256 of the host
//! and port under a random salt kept in the file, as hashed known_hosts lines are, so it does
//! not list the bastions a platform reaches. It is a cache: deleting it costs half a round trip
//! per bastion, and one that cannot be read or written is only mentioned at `-v`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};

use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};
use ssh_transport::ClientConfig;
use ssh_transport::kex::KexAlgorithm;
use tracing::debug;

/// Bastions remembered at most, in memory and in the file; past it the memory starts again
/// and the file forgets one entry (a fleet's bastions are far fewer, and forgetting costs one
/// round trip per session).
pub const CAPACITY: usize = 4096;

/// The longest file read: [`CAPACITY`] lines of the longest names fit well inside. A longer
/// one is not ours: set aside as if it were missing, and never replaced.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// How long a program about to exit waits for the file to be written ([`settle`]).
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest algorithm name kept (OpenSSH's longest is under 40 characters).
const MAX_NAME: usize = 64;

/// A bastion's first choices: key exchange name, host key algorithm name.
pub type Firsts = (String, String);

/// The key exchange name remembered for a server whose first choice is not the one our order
/// negotiates: nothing is reordered and no guess is sent.
pub const NO_GUESS: &str = "-";

/// What to remember of a server's first choices: its first key exchange when the first of
/// `configured` (our order, before any remembered choice moved it) that the server offers
/// (`server_kex`) is that one, else [`NO_GUESS`].
pub fn guessable(firsts: Firsts, server_kex: &[String], configured: &[&str]) -> Firsts {
    let ours = configured
        .iter()
        .find(|k| server_kex.iter().any(|s| s == *k));
    if ours == Some(&firsts.0.as_str()) {
        firsts
    } else {
        (NO_GUESS.to_owned(), firsts.1)
    }
}

/// The first line of the file.
const HEADER: &str = "# forwarder: each bastion's first key exchange and host key algorithms, \
     for guessing the key exchange; safe to delete";

#[derive(Default)]
struct Memory {
    /// What this process saw, by known_hosts name and port.
    seen: HashMap<(String, u16), Firsts>,
    /// Each KexGuessFile as read once (or `None` when it was missing or unusable), then as
    /// this process wrote it.
    files: HashMap<PathBuf, Option<FirstsFile>>,
    /// Choices waiting to be written, per file; a file is in the map while a thread writes
    /// it, and that thread takes what others add, so a fleet bringing up many sessions at
    /// once rewrites the file a few times, not once per bastion.
    pending: HashMap<PathBuf, Vec<(String, u16, Firsts)>>,
}

static MEMORY: LazyLock<Mutex<Memory>> = LazyLock::new(|| Mutex::new(Memory::default()));

/// Sessions [`watch`]ed that authenticated and whose choices are still being remembered.
static WATCHING: AtomicUsize = AtomicUsize::new(0);

/// One session counted in [`WATCHING`] until dropped.
struct Watching;

impl Watching {
    fn new() -> Self {
        WATCHING.fetch_add(1, Ordering::SeqCst);
        Watching
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        WATCHING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Remembers the server's first choices once `session` has authenticated, as far as our own
/// order (`configured`, key exchange names) would negotiate them ([`guessable`]), writing
/// `file` off the runtime's threads, in a task of its own. From the authentication until that is
/// done the session is counted, so that [`settle`] can wait for it; one still in its
/// handshake is not waited for.
pub fn watch(
    session: crate::driver::SessionHandle,
    host: String,
    port: u16,
    configured: Vec<&'static str>,
    file: Option<PathBuf>,
) {
    tokio::spawn(async move {
        if session.authenticated().await.is_ok() {
            let _counted = Watching::new();
            let log = session.log();
            let firsts = log
                .server_first_choices
                .map(|f| guessable(f, &log.server_kex_algorithms, &configured));
            let _ = tokio::task::spawn_blocking(move || {
                remember(&host, port, firsts.as_ref(), file.as_deref());
            })
            .await;
        }
    });
}

/// Waits, at most 1 s, until every [`watch`]ed session that authenticated has had its
/// choices written: a program about to exit calls it, so that a run as short as one
/// `forwarder -W` still leaves the file for the next one. (The task that counts a session
/// runs as soon as the session authenticates, long before a program that used the session
/// gets to exit.)
pub async fn settle() {
    let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
    while WATCHING.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

fn memory() -> std::sync::MutexGuard<'static, Memory> {
    MEMORY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remembers what `host`/`port` (its known_hosts name) chose first, and writes it to `file`
/// when that changed what the file holds. Blocking (file I/O): call it off the runtime's
/// worker threads.
pub fn remember(host: &str, port: u16, firsts: Option<&Firsts>, file: Option<&Path>) {
    let Some(firsts) = firsts else { return };
    let key = (host.to_owned(), port);
    {
        let mut memory = memory();
        if memory.seen.len() >= CAPACITY && !memory.seen.contains_key(&key) {
            memory.seen.clear();
        }
        memory.seen.insert(key, firsts.clone());
    }
    let Some(path) = file else { return };
    {
        let mut memory = memory();
        let known = memory
            .files
            .get(path)
            .and_then(|f| f.as_ref().and_then(|f| f.get(host, port)));
        if known == Some(firsts) {
            return;
        }
        let entry = (host.to_owned(), port, firsts.clone());
        if let Some(queue) = memory.pending.get_mut(path) {
            // Another thread is writing this file: it takes this entry too.
            queue.push(entry);
            return;
        }
        memory.pending.insert(path.to_owned(), vec![entry]);
    }
    loop {
        let batch = {
            let mut memory = memory();
            let batch = memory
                .pending
                .get_mut(path)
                .map(std::mem::take)
                .unwrap_or_default();
            if batch.is_empty() {
                memory.pending.remove(path);
                return;
            }
            batch
        };
        // Read again before writing, so that what other processes wrote since is kept. A
        // file that is there and not ours (a wrong KexGuessFile, someone's known_hosts) is
        // never replaced.
        let Some(mut on_disk) = read_for_update(path) else {
            debug!(file = %path.display(), "kex guess file is not ours: not written");
            continue;
        };
        for (host, port, firsts) in batch {
            on_disk.set(&host, port, firsts);
        }
        match write_file(path, &on_disk) {
            Ok(()) => debug!(file = %path.display(), "kex guess file updated"),
            Err(e) => debug!(file = %path.display(), error = %e, "kex guess file not written"),
        }
        memory().files.insert(path.to_owned(), Some(on_disk));
    }
}

/// `cfg` for a session to `host`/`port`, reordered to guess its first key exchange message
/// when this process has seen the server before, or `file` remembers it. `known_types` are
/// the host key types known_hosts holds for it.
pub fn prepare(
    cfg: ClientConfig,
    host: &str,
    port: u16,
    known_types: &[String],
    file: Option<&Path>,
) -> ClientConfig {
    match remembered(host, port, file) {
        Some(firsts) => prepare_with(cfg, &firsts, known_types),
        None => cfg,
    }
}

/// The key exchange method the session to `host:port` will most likely run, before
/// anything is sent: the bastion's remembered first choice when we offer it ([`prepare`]
/// puts it first), else our own first. What a first message is made ahead for.
pub fn expected_kex(
    kex_algorithms: &[KexAlgorithm],
    host: &str,
    port: u16,
    file: Option<&Path>,
) -> Option<KexAlgorithm> {
    let remembered = remembered(host, port, file)
        .and_then(|(kex, _)| kex_algorithms.iter().copied().find(|k| k.name() == kex));
    remembered.or_else(|| kex_algorithms.first().copied())
}

/// The first choices remembered for `host:port`: this process's, else the file's.
fn remembered(host: &str, port: u16, file: Option<&Path>) -> Option<Firsts> {
    let mut memory = memory();
    match memory.seen.get(&(host.to_owned(), port)) {
        Some(f) => Some(f.clone()),
        None => file.and_then(|path| {
            memory
                .files
                .entry(path.to_owned())
                .or_insert_with(|| read_file(path))
                .as_ref()
                .and_then(|f| f.get(host, port).cloned())
        }),
    }
}

/// The file at `path` to add entries to: a new one when it is missing, `None` when it is
/// there and cannot be read, is too long or has no salt line (not ours).
fn read_for_update(path: &Path) -> Option<FirstsFile> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(FirstsFile::new()),
        Err(_) => None,
        Ok(_) => read_file(path),
    }
}

/// The file at `path`, or `None` when it is missing, too long or unusable (each said at
/// `-v`).
fn read_file(path: &Path) -> Option<FirstsFile> {
    match crate::files::read_text_bounded(path, MAX_FILE_BYTES) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            debug!(file = %path.display(), error = %e, "kex guess file not used");
            None
        }
        Ok(text) => {
            let (file, skipped) = FirstsFile::parse(&text);
            if skipped > 0 || file.is_none() {
                debug!(
                    file = %path.display(),
                    skipped_lines = skipped,
                    usable = file.is_some(),
                    "kex guess file has lines that are not ours"
                );
            }
            file
        }
    }
}

/// Writes `file` at `path` as a whole: a new file beside it (owner-only), then renamed over
/// it, so that a reader never sees half of it.
fn write_file(path: &Path, file: &FirstsFile) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let name = path
        .file_name()
        .map_or_else(|| "kex_firsts".into(), |n| n.to_string_lossy().into_owned());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(file.render().as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The KexGuessFile's contents: a salt, and each bastion's first choices under the
/// HMAC-SHA256 of its name and port.
///
/// ```text
/// # forwarder: ...              comments and blank lines are skipped
/// salt <32 hex digits>          16 random bytes, the HMAC key
/// <64 hex digits> <kex> <host key algorithm>
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirstsFile {
    salt: [u8; 16],
    entries: BTreeMap<[u8; 32], Firsts>,
}

impl FirstsFile {
    /// An empty file with a fresh random salt.
    pub fn new() -> Self {
        let mut salt = [0; 16];
        // The salt only hides host names; should the system's generator fail, a fixed salt
        // still works as a key.
        let _ = SystemRandom::new().fill(&mut salt);
        Self::with_salt(salt)
    }

    /// An empty file with this salt.
    pub fn with_salt(salt: [u8; 16]) -> Self {
        Self {
            salt,
            entries: BTreeMap::new(),
        }
    }

    /// Reads `text`: the file, or `None` when it has no valid salt line (then it is not
    /// ours), and how many lines were skipped as not ours. Lines past [`CAPACITY`] entries
    /// are skipped too.
    pub fn parse(text: &str) -> (Option<Self>, usize) {
        let mut salt = None;
        let mut entries = BTreeMap::new();
        let mut skipped = 0;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_ascii_whitespace().take(4).collect();
            match fields.as_slice() {
                ["salt", s] if salt.is_none() => match unhex::<16>(s) {
                    Some(s) => salt = Some(s),
                    None => skipped += 1,
                },
                [key, kex, host_key] if entries.len() < CAPACITY => {
                    match (unhex::<32>(key), is_name(kex), is_name(host_key)) {
                        (Some(key), true, true) => {
                            entries.insert(key, ((*kex).to_owned(), (*host_key).to_owned()));
                        }
                        _ => skipped += 1,
                    }
                }
                _ => skipped += 1,
            }
        }
        (salt.map(|salt| Self { salt, entries }), skipped)
    }

    /// The file's text, which [`FirstsFile::parse`] reads back as it is.
    pub fn render(&self) -> String {
        let mut out = format!("{HEADER}\nsalt {}\n", hex(&self.salt));
        for (key, (kex, host_key)) in &self.entries {
            out.push_str(&format!("{} {kex} {host_key}\n", hex(key)));
        }
        out
    }

    /// What `host`/`port` chose first, if the file remembers it.
    pub fn get(&self, host: &str, port: u16) -> Option<&Firsts> {
        self.entries.get(&self.key(host, port))
    }

    /// Remembers `firsts` for `host`/`port`. Names that could not be read back (spaces,
    /// control characters, over 64 bytes) are not kept. At [`CAPACITY`] one other entry is
    /// forgotten: the first by key, which the HMAC makes an arbitrary one.
    pub fn set(&mut self, host: &str, port: u16, firsts: Firsts) {
        if !is_name(&firsts.0) || !is_name(&firsts.1) {
            return;
        }
        let key = self.key(host, port);
        if self.entries.len() >= CAPACITY && !self.entries.contains_key(&key) {
            self.entries.pop_first();
        }
        self.entries.insert(key, firsts);
    }

    /// How many bastions the file remembers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file remembers none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn key(&self, host: &str, port: u16) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.salt);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(host.as_bytes());
        ctx.update(&[0]);
        ctx.update(&port.to_be_bytes());
        let tag = ctx.sign();
        let mut out = [0; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

impl Default for FirstsFile {
    fn default() -> Self {
        Self::new()
    }
}

/// An algorithm name as the file can hold it: printable ASCII without spaces, 1 to 64 bytes.
fn is_name(s: &str) -> bool {
    (1..=MAX_NAME).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn prepare_with(mut cfg: ClientConfig, firsts: &Firsts, known_types: &[String]) -> ClientConfig {
    let (kex, host_key) = firsts;
    if kex == NO_GUESS {
        return cfg;
    }
    if let Some(i) = cfg.kex_algorithms.iter().position(|k| k.name() == kex) {
        let k = cfg.kex_algorithms.remove(i);
        cfg.kex_algorithms.insert(0, k);
    }
    if let Some(i) = cfg
        .host_key_algorithms
        .iter()
        .position(|a| a.name() == host_key)
    {
        // Asking for a key type known_hosts does not hold for this host would fail the
        // verification when it holds another one.
        let usable = known_types.is_empty()
            || known_types
                .iter()
                .any(|t| t == cfg.host_key_algorithms[i].key_type_name());
        if usable {
            let a = cfg.host_key_algorithms.remove(i);
            cfg.host_key_algorithms.insert(0, a);
        }
    }
    cfg.guess_first_kex = cfg.kex_algorithms.first().map(|k| k.name()) == Some(kex.as_str())
        && cfg.host_key_algorithms.first().map(|a| a.name()) == Some(host_key.as_str())
        && cfg
            .kex_algorithms
            .first()
            .is_some_and(|k: &KexAlgorithm| k.is_single_pass());
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_transport::hostkey::SignatureAlgorithm;

    fn firsts(kex: &str, host_key: &str) -> Firsts {
        (kex.to_owned(), host_key.to_owned())
    }

    fn names(cfg: &ClientConfig) -> (&'static str, &'static str) {
        (
            cfg.kex_algorithms[0].name(),
            cfg.host_key_algorithms[0].name(),
        )
    }

    #[test]
    fn an_openssh_9_2_bastion_is_guessed_with_its_own_firsts() {
        let before = ClientConfig::default();
        let kexes = before.kex_algorithms.len();
        let cfg = prepare_with(
            before,
            &firsts("sntrup761x25519-sha512@openssh.com", "rsa-sha2-512"),
            &["ssh-rsa".to_owned(), "ssh-ed25519".to_owned()],
        );
        assert_eq!(
            names(&cfg),
            ("sntrup761x25519-sha512@openssh.com", "rsa-sha2-512")
        );
        assert!(cfg.guess_first_kex);
        assert_eq!(cfg.kex_algorithms.len(), kexes, "the set stays the same");
    }

    #[test]
    fn no_guess_for_a_host_key_type_known_hosts_lacks_or_an_algorithm_we_do_not_allow() {
        let cfg = prepare_with(
            ClientConfig::default(),
            &firsts("curve25519-sha256", "rsa-sha2-512"),
            &["ssh-ed25519".to_owned()],
        );
        assert_eq!(names(&cfg), ("curve25519-sha256", "ssh-ed25519"));
        assert!(!cfg.guess_first_kex);

        let only_nist = ClientConfig {
            kex_algorithms: vec![KexAlgorithm::EcdhNistP256],
            ..ClientConfig::default()
        };
        let cfg = prepare_with(only_nist, &firsts("curve25519-sha256", "ssh-ed25519"), &[]);
        assert_eq!(cfg.kex_algorithms, vec![KexAlgorithm::EcdhNistP256]);
        assert!(!cfg.guess_first_kex);
    }

    #[test]
    fn certificate_host_key_algorithms_are_guessed_only_when_known_hosts_vouches_for_them() {
        use ssh_transport::hostkey::HostKeyAlgorithm;
        let cert_ed = HostKeyAlgorithm::certificate(SignatureAlgorithm::Ed25519);
        // A host with a @cert-authority line: certificate algorithms first, and the
        // certificate types count as known.
        let with_ca =
            crate::config::prefer_known_host_key_types(ClientConfig::default(), &[], true, false);
        let known = vec![cert_ed.key_type_name().to_owned()];
        let cfg = prepare_with(
            with_ca.clone(),
            &firsts("curve25519-sha256", "ssh-ed25519-cert-v01@openssh.com"),
            &known,
        );
        assert_eq!(
            names(&cfg),
            ("curve25519-sha256", "ssh-ed25519-cert-v01@openssh.com")
        );
        assert!(cfg.guess_first_kex);
        // The server's first is its plain key: a plain key no line lists must not be put
        // before the certificates (it would be unknown), so no guess.
        let cfg = prepare_with(with_ca, &firsts("curve25519-sha256", "ssh-ed25519"), &known);
        assert_eq!(cfg.host_key_algorithms[0], cert_ed);
        assert!(!cfg.guess_first_kex);
        // Without certificate algorithms configured, a remembered certificate name is no
        // guess.
        let cfg = prepare_with(
            ClientConfig::default(),
            &firsts("curve25519-sha256", "ssh-ed25519-cert-v01@openssh.com"),
            &[],
        );
        assert_eq!(
            cfg.host_key_algorithms[0],
            SignatureAlgorithm::Ed25519.into()
        );
        assert!(!cfg.guess_first_kex);
    }

    #[test]
    fn group_exchange_first_is_not_guessed() {
        let cfg = prepare_with(
            ClientConfig::default(),
            &firsts("diffie-hellman-group-exchange-sha256", "ssh-ed25519"),
            &[],
        );
        assert_eq!(cfg.kex_algorithms[0], KexAlgorithm::DhGexSha256);
        assert!(!cfg.guess_first_kex);
        assert_eq!(
            cfg.host_key_algorithms[0],
            SignatureAlgorithm::Ed25519.into()
        );
    }

    /// Our default key exchange order, by name.
    fn our_order() -> Vec<&'static str> {
        ClientConfig::default()
            .kex_algorithms
            .iter()
            .map(|k| k.name())
            .collect()
    }

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_classical_first_choice_is_not_remembered_over_a_hybrid_we_prefer() {
        let ours = our_order();
        let hybrid = ours[0];
        assert!(
            hybrid.contains("mlkem") || hybrid.contains("sntrup"),
            "{ours:?}"
        );
        // The server offers our hybrid but lists X25519 first.
        let server = list(&["curve25519-sha256", hybrid, "ecdh-sha2-nistp256"]);
        let kept = guessable(firsts("curve25519-sha256", "ssh-ed25519"), &server, &ours);
        assert_eq!(kept, firsts(NO_GUESS, "ssh-ed25519"));
        // Remembered like that, nothing moves and nothing is guessed: the hybrid stays first.
        let cfg = prepare_with(ClientConfig::default(), &kept, &[]);
        assert_eq!(cfg.kex_algorithms, ClientConfig::default().kex_algorithms);
        assert_eq!(
            cfg.host_key_algorithms,
            ClientConfig::default().host_key_algorithms
        );
        assert!(!cfg.guess_first_kex);
        // Group exchange first, the same.
        let server = list(&["diffie-hellman-group-exchange-sha256", "curve25519-sha256"]);
        assert_eq!(
            guessable(
                firsts("diffie-hellman-group-exchange-sha256", "rsa-sha2-512"),
                &server,
                &ours
            ),
            firsts(NO_GUESS, "rsa-sha2-512")
        );
    }

    #[test]
    fn a_first_choice_our_order_negotiates_anyway_is_remembered() {
        let ours = our_order();
        // OpenSSH 9.2: sntrup761 first, no ML-KEM; the first of ours it offers is sntrup761.
        let server = list(&[
            "sntrup761x25519-sha512@openssh.com",
            "curve25519-sha256",
            "curve25519-sha256@libssh.org",
            "diffie-hellman-group-exchange-sha256",
        ]);
        let f = firsts("sntrup761x25519-sha512@openssh.com", "rsa-sha2-512");
        assert_eq!(guessable(f.clone(), &server, &ours), f);
        // A server with nothing but X25519: that is ours too.
        let server = list(&["curve25519-sha256", "diffie-hellman-group14-sha256"]);
        let f = firsts("curve25519-sha256", "ssh-ed25519");
        assert_eq!(guessable(f.clone(), &server, &ours), f);
        // With a configured order that puts X25519 first, it is remembered over the hybrid.
        let server = list(&["curve25519-sha256", ours[0]]);
        assert_eq!(
            guessable(f.clone(), &server, &["curve25519-sha256", ours[0]]),
            f
        );
    }

    #[test]
    fn a_no_guess_entry_survives_the_file() {
        let mut file = FirstsFile::new();
        file.set("nog.example", 22, firsts(NO_GUESS, "ssh-ed25519"));
        let (back, skipped) = FirstsFile::parse(&file.render());
        let back = back.expect("parses");
        assert_eq!(skipped, 0);
        assert_eq!(
            back.get("nog.example", 22),
            Some(&firsts(NO_GUESS, "ssh-ed25519"))
        );
    }

    #[test]
    fn remembered_per_host_and_port() {
        remember(
            "memory-test.example",
            2222,
            Some(&firsts("curve25519-sha256", "ssh-ed25519")),
            None,
        );
        let cfg = prepare(
            ClientConfig::default(),
            "memory-test.example",
            2222,
            &[],
            None,
        );
        assert!(cfg.guess_first_kex);
        assert_eq!(names(&cfg), ("curve25519-sha256", "ssh-ed25519"));
        let other = prepare(
            ClientConfig::default(),
            "memory-test.example",
            22,
            &[],
            None,
        );
        assert!(!other.guess_first_kex);
    }

    #[test]
    fn the_expected_method_is_the_remembered_first_when_we_offer_it_else_ours() {
        let ours = ClientConfig::default().kex_algorithms;
        let host = "expected-kex.example";
        // Nothing remembered: our first.
        assert_eq!(
            expected_kex(&ours, host, 22, None),
            Some(KexAlgorithm::MlKem768X25519Sha256)
        );
        // An OpenSSH 9.2 bastion's first, which we offer: it, as prepare puts it first.
        let sshd_9_2 = firsts("sntrup761x25519-sha512@openssh.com", "rsa-sha2-512");
        remember(host, 22, Some(&sshd_9_2), None);
        let expected = expected_kex(&ours, host, 22, None);
        assert_eq!(expected, Some(KexAlgorithm::Sntrup761X25519Sha512OpenSsh));
        let cfg = prepare(ClientConfig::default(), host, 22, &[], None);
        assert_eq!(cfg.kex_algorithms.first().copied(), expected);
        // A first we do not offer (or do not allow): ours.
        let only_curve = [KexAlgorithm::Curve25519Sha256];
        assert_eq!(
            expected_kex(&only_curve, host, 22, None),
            Some(KexAlgorithm::Curve25519Sha256)
        );
        remember(host, 23, Some(&firsts(NO_GUESS, "ssh-ed25519")), None);
        assert_eq!(
            expected_kex(&ours, host, 23, None),
            Some(KexAlgorithm::MlKem768X25519Sha256)
        );
        assert_eq!(expected_kex(&[], host, 22, None), None);
    }

    #[test]
    fn the_file_one_process_writes_lets_the_next_one_guess() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("cache/forwarder/kex_firsts");
        let sntrup = firsts("sntrup761x25519-sha512@openssh.com", "rsa-sha2-512");
        remember("file-test.example", 2200, Some(&sntrup), Some(&path));

        let text = std::fs::read_to_string(&path).expect("the file was written");
        assert!(
            !text.contains("file-test.example"),
            "the file names no host:\n{text}"
        );
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "owner-only");
        let parent = path.parent().expect("directory");
        let dir_mode = std::fs::metadata(parent)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);

        // The next process: nothing in its memory for this host, only the file.
        let (read, skipped) = FirstsFile::parse(&text);
        let read = read.expect("our own file is usable");
        assert_eq!((read.len(), skipped), (1, 0));
        assert_eq!(read.get("file-test.example", 2200), Some(&sntrup));
        assert_eq!(read.get("file-test.example", 22), None);
        assert_eq!(read.get("other.example", 2200), None);
        memory()
            .seen
            .remove(&("file-test.example".to_owned(), 2200));
        memory().files.remove(&path);
        let cfg = prepare(
            ClientConfig::default(),
            "file-test.example",
            2200,
            &[],
            Some(&path),
        );
        assert!(cfg.guess_first_kex, "guessed from the file alone");
        assert_eq!(
            names(&cfg),
            ("sntrup761x25519-sha512@openssh.com", "rsa-sha2-512")
        );

        // The same choices again leave the file alone; new ones replace it whole, and keep
        // what another process added in between.
        let inode = std::fs::metadata(&path).expect("metadata").ino();
        remember("file-test.example", 2200, Some(&sntrup), Some(&path));
        assert_eq!(std::fs::metadata(&path).expect("metadata").ino(), inode);
        let mut other = read.clone();
        other.set(
            "other-process.example",
            22,
            firsts("curve25519-sha256", "ssh-ed25519"),
        );
        write_file(&path, &other).expect("another process writes");
        let curve = firsts("curve25519-sha256", "rsa-sha2-512");
        remember("file-test.example", 2200, Some(&curve), Some(&path));
        let text = std::fs::read_to_string(&path).expect("rewritten");
        let read = FirstsFile::parse(&text).0.expect("usable");
        assert_eq!(read.get("file-test.example", 2200), Some(&curve));
        assert!(read.get("other-process.example", 22).is_some());
        let leftovers: Vec<_> = std::fs::read_dir(parent)
            .expect("directory")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| n != "kex_firsts")
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn many_sessions_remembered_at_once_all_reach_the_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("kex_firsts");
        let curve = firsts("curve25519-sha256", "ssh-ed25519");
        std::thread::scope(|s| {
            for t in 0..8u16 {
                let (path, curve) = (&path, &curve);
                s.spawn(move || {
                    for i in 0..50u16 {
                        remember("many.example", t * 100 + i, Some(curve), Some(path));
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).expect("written");
        let read = FirstsFile::parse(&text).0.expect("usable");
        assert_eq!(read.len(), 400, "every session's choices are in the file");
        for t in 0..8u16 {
            for i in 0..50u16 {
                assert_eq!(read.get("many.example", t * 100 + i), Some(&curve));
            }
        }
        assert!(
            !memory().pending.contains_key(&path),
            "no writer left behind"
        );
    }

    #[test]
    fn a_file_that_is_not_ours_is_set_aside_and_never_stops_a_session() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("kex_firsts");
        std::fs::write(&path, "not a salt\n\u{0}\u{ff}garbage\n").expect("write");
        let cfg = prepare(
            ClientConfig::default(),
            "garbage-test.example",
            22,
            &[],
            Some(&path),
        );
        assert!(!cfg.guess_first_kex);
        assert_eq!(
            cfg.kex_algorithms,
            ClientConfig::default().kex_algorithms,
            "the order is untouched"
        );
        // Remembering leaves it as it is: a file that is not ours is never replaced.
        let curve = firsts("curve25519-sha256", "ssh-ed25519");
        remember("garbage-test.example", 22, Some(&curve), Some(&path));
        assert_eq!(
            std::fs::read(&path).expect("still there"),
            b"not a salt\n\0\xc3\xbfgarbage\n"
        );
        // Nor is someone's known_hosts named by mistake.
        let known = dir.path().join("known_hosts");
        let line = "bastion.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOv2\n";
        std::fs::write(&known, line).expect("write");
        remember("known-test.example", 22, Some(&curve), Some(&known));
        assert_eq!(std::fs::read_to_string(&known).expect("read"), line);
        // A missing one is created.
        let fresh = dir.path().join("fresh");
        remember("fresh-test.example", 22, Some(&curve), Some(&fresh));
        let (read, skipped) = FirstsFile::parse(&std::fs::read_to_string(&fresh).expect("new"));
        assert_eq!(skipped, 0);
        assert_eq!(
            read.expect("usable").get("fresh-test.example", 22),
            Some(&curve)
        );

        // Longer than the bound: set aside unread, even though it starts like ours.
        let long = dir.path().join("long");
        let mut ours = FirstsFile::with_salt([3; 16]);
        ours.set("long-test.example", 22, curve.clone());
        let mut text = ours.render();
        text.push_str(&"#".repeat(MAX_FILE_BYTES as usize));
        std::fs::write(&long, text).expect("write");
        assert!(read_file(&long).is_none());
        let cfg = prepare(
            ClientConfig::default(),
            "long-test.example",
            22,
            &[],
            Some(&long),
        );
        assert!(!cfg.guess_first_kex);

        // A directory where the file should be: nothing written, nothing fails.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).expect("mkdir");
        remember("blocked-test.example", 22, Some(&curve), Some(&blocked));
        assert!(blocked.is_dir());
        let cfg = prepare(
            ClientConfig::default(),
            "blocked-test2.example",
            22,
            &[],
            Some(&blocked),
        );
        assert!(!cfg.guess_first_kex);
    }

    #[test]
    fn parse_skips_what_is_not_ours_and_round_trips_what_is() {
        let mut file = FirstsFile::with_salt([7; 16]);
        file.set("a.example", 22, firsts("curve25519-sha256", "ssh-ed25519"));
        file.set(
            "b.example",
            2222,
            firsts("mlkem768x25519-sha256", "rsa-sha2-512"),
        );
        // Names that could not be read back are not kept.
        file.set("c.example", 22, firsts("has space", "ssh-ed25519"));
        file.set("d.example", 22, firsts(&"x".repeat(65), "ssh-ed25519"));
        assert_eq!(file.len(), 2);
        let text = file.render();
        assert_eq!(FirstsFile::parse(&text), (Some(file.clone()), 0));

        let key = text
            .lines()
            .nth(2)
            .expect("an entry")
            .split(' ')
            .next()
            .expect("key");
        let messy = format!(
            "{text}\n  # a comment\nsalt {}\n{key} only-two\n{} k h\nZZ k h\n{key} k h extra\n",
            "0".repeat(32),
            "0".repeat(63)
        );
        let (read, skipped) = FirstsFile::parse(&messy);
        assert_eq!(skipped, 5, "the second salt and four bad entries");
        assert_eq!(read, Some(file));
        assert_eq!(FirstsFile::parse("k h x\n").0, None, "no salt: not ours");
    }

    #[test]
    fn the_file_holds_at_most_its_capacity() {
        let mut file = FirstsFile::with_salt([1; 16]);
        for port in 0..=u16::try_from(CAPACITY).expect("fits") {
            file.set(
                "many.example",
                port,
                firsts("curve25519-sha256", "ssh-ed25519"),
            );
        }
        assert_eq!(file.len(), CAPACITY);
        let text = file.render();
        assert!(text.len() as u64 <= MAX_FILE_BYTES);
        let mut longer = text.clone();
        longer.push_str(&format!("{} k h\n", "ab".repeat(32)));
        let (read, skipped) = FirstsFile::parse(&longer);
        assert_eq!((read.map(|f| f.len()), skipped), (Some(CAPACITY), 1));
    }
}
