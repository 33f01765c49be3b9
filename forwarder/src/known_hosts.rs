//! OpenSSH known_hosts files (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT").
//!
//! ```text
//!  file bytes ──> lines ──> [marker] hosts keytype base64 [comment] ──> Entry (file, line)
//!                               └─ malformed: skipped, Warning { file, line, why }
//!  (host, port, key) ──> lookup name `host` or `[host]:port` ──> entries whose hosts match
//!      ──> @revoked with this key?  Revoked   (checked first: fail closed)
//!      ──> same type, same key?     Known
//!      ──> same type, other key?    Changed
//!      ──> otherwise                Unknown (listing keys of other types)
//!      ──> `[host]:port` names nothing at all: `host` too, as ssh does; its Known or Revoked
//!          stands, anything else leaves the result Unknown
//!  (host, port, host certificate) ──> KnownHosts::check_certificate (see `certificate`):
//!      CertificateAccepted | CertificateRevoked | CertificateRefused { why, plain: the
//!      certificate's key looked up as above }
//!  Unknown ──> AcceptedKeys (keys trusted earlier in this process but not in any file)
//!      ──> AcceptedEarlier | ChangedSinceAccepted | Unknown
//!  HostKeyStatus + StrictHostKeyChecking ──> decide ──> Trusted | TrustAndRecord | Refused
//!  RevokedHostKeys files (KRLs or key lists, see `revoked`) ──> RevokedHostKeys::check, made
//!      before any of the above: a revoked key or certificate is refused under every policy
//! ```
//!
//! The parser works on `&str` and never fails as a whole: like OpenSSH it skips a bad line and
//! reports it, so one broken line cannot lock a user out of every host. [`KnownHosts::parse`]
//! is the fuzzing entry point. Keys are compared as blobs, so entries of key types this crate
//! cannot verify still count as "a key of another type is known".
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod accepted;
mod certificate;
pub mod command;
mod pattern;
mod report;
mod revoked;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_cert;
pub mod update;

use core::fmt;
use std::io::{self, Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ssh_transport::hostkey::{KeyError, KeyType, PublicKey, blob_key_type, fingerprint_sha256};

pub use accepted::{AcceptedKey, AcceptedKeys, Record};
pub use certificate::CertificateRefusal;
use pattern::HostField;
pub use report::{Decision, HostKeyError, added_notice, decide, key_type_label};
pub use revoked::{
    KRL_MAGIC, KeyList, KeyMatch, Krl, KrlError, Revocation, RevokedBy, RevokedHostKeys,
    RevokedKeys,
};

/// Files larger than this are refused rather than read into memory.
pub const MAX_FILE_SIZE: u64 = 64 << 20;

/// Host keys from one or more known_hosts files.
#[derive(Clone, Debug, Default)]
pub struct KnownHosts {
    files: Vec<PathBuf>,
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    file: usize,
    line: usize,
    marker: Marker,
    hosts: HostField,
    key_type: String,
    blob: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marker {
    None,
    CertAuthority,
    Revoked,
}

/// A line that was skipped, or kept with a caveat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The file it is in.
    pub file: PathBuf,
    /// Its line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// A known_hosts line that names the host with a key other than the one offered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The file the line is in.
    pub file: PathBuf,
    /// The line number, from 1.
    pub line: usize,
    /// The key type as written in the file (`ssh-ed25519`).
    pub key_type: String,
    /// `SHA256:...` of the key on that line.
    pub fingerprint: String,
}

/// The outcome of looking a host key up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// This key is listed for this host.
    Known {
        /// The file it is in.
        file: PathBuf,
        /// The line, from 1.
        line: usize,
    },
    /// The host is listed with other keys of the same type: the key changed, or someone is in
    /// the middle.
    Changed {
        /// Every line with a key of this type for this host.
        expected: Vec<Mismatch>,
    },
    /// This key is marked `@revoked` for this host.
    Revoked {
        /// The file the marker is in.
        file: PathBuf,
        /// The line, from 1.
        line: usize,
    },
    /// No key of this type is listed for this host.
    Unknown {
        /// Keys of other types listed for this host (empty if the host is not listed at all).
        other_types: Vec<Mismatch>,
    },
    /// No file lists the host, but this process trusted this very key for it before
    /// ([`AcceptedKeys`]).
    AcceptedEarlier,
    /// No file lists the host, but this process trusted other keys for it before
    /// ([`AcceptedKeys`]): the key changed since, as a known_hosts line would have shown had
    /// it been written.
    ChangedSinceAccepted {
        /// The keys trusted before.
        accepted: Vec<AcceptedKey>,
    },
    /// The server presented a host certificate signed by an authority an `@cert-authority`
    /// line lists for the host, valid now and naming the host: trusted, never recorded.
    CertificateAccepted {
        /// The file with the `@cert-authority` line.
        file: PathBuf,
        /// Its line, from 1.
        line: usize,
        /// The authority's fingerprint.
        ca_fingerprint: String,
        /// The certificate's key id (sanitized).
        key_id: String,
        /// Its serial number.
        serial: u64,
        /// End of its validity (exclusive), seconds since the Unix epoch.
        valid_before: u64,
    },
    /// The server presented a host certificate whose key or authority is marked `@revoked`:
    /// refused, without looking at the key as an ordinary one.
    CertificateRevoked {
        /// The file with the marker.
        file: PathBuf,
        /// The marker's line.
        line: usize,
        /// Whether the authority's key is the revoked one (else the certificate's key).
        authority: bool,
        /// The revoked key's fingerprint.
        fingerprint: String,
    },
    /// The server presented a host certificate that was not accepted, for `why`; its key
    /// was looked up as an ordinary host key, with the result `plain`, which decides.
    CertificateRefused {
        /// Why the certificate was not accepted.
        why: CertificateRefusal,
        /// The lookup of the certificate's key.
        plain: Box<HostKeyStatus>,
    },
}

impl HostKeyStatus {
    /// The lookup of the ordinary key: this status, or for a certificate that was not
    /// accepted, its key's.
    pub fn plain(&self) -> &HostKeyStatus {
        match self {
            Self::CertificateRefused { plain, .. } => plain,
            other => other,
        }
    }

    /// `f` applied to the lookup of the ordinary key ([`Self::plain`]), keeping why a
    /// certificate was not accepted.
    pub fn map_plain(self, f: impl FnOnce(HostKeyStatus) -> HostKeyStatus) -> HostKeyStatus {
        match self {
            Self::CertificateRefused { why, plain } => Self::CertificateRefused {
                why,
                plain: Box::new(f(*plain)),
            },
            other => f(other),
        }
    }
}

impl KnownHosts {
    /// Parses one file's text. Bad lines are skipped and reported; this never fails.
    pub fn parse(text: &str, origin: &Path) -> (KnownHosts, Vec<Warning>) {
        let mut known = KnownHosts::default();
        let mut warnings = Vec::new();
        known.absorb(text, origin, &mut warnings);
        (known, warnings)
    }

    /// Reads the files in order. A missing file counts as empty; any other read error, or a
    /// file over [`MAX_FILE_SIZE`], is returned with the file's path in the message.
    pub fn load(paths: &[PathBuf]) -> Result<(KnownHosts, Vec<Warning>), io::Error> {
        let mut known = KnownHosts::default();
        let mut warnings = Vec::new();
        for path in paths {
            let bytes = match crate::files::read_bounded(path, MAX_FILE_SIZE) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot read known_hosts file {}: {e}", path.display()),
                    ));
                }
            };
            known.absorb(&String::from_utf8_lossy(&bytes), path, &mut warnings);
        }
        Ok((known, warnings))
    }

    /// Adds lines read from somewhere other than a file (a `KnownHostsCommand`'s output),
    /// after those read so far; `origin` names them in messages.
    pub fn add(&mut self, text: &str, origin: &Path) -> Vec<Warning> {
        let mut warnings = Vec::new();
        self.absorb(text, origin, &mut warnings);
        warnings
    }

    /// How many usable lines were read (markers included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no usable line was read.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Looks `key` up for `host` on `port`. `host` is the name connected to (any case; IPv6
    /// without brackets); port 22 is looked up as `host`, others as `[host]:port`.
    ///
    /// On another port, when no key at all is listed for `[host]:port`, `host` is looked up
    /// too, as
    /// ssh does ("checking without port identifier"): a key listed there is Known. A key
    /// `@revoked` there is Revoked, which is stricter than ssh (whose second look only
    /// accepts, so under accept-new it would record a key revoked for the bare name); any
    /// other result there (other keys of the host) leaves the host Unknown, as in ssh, so
    /// the policy decides as for a new host. Callers pass a `HostKeyAlias` with port 22
    /// (see `connect::known_hosts_name`), which also keeps this second look off for it, as
    /// ssh does.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> HostKeyStatus {
        let status = self.check_name(&lookup_name(host, port), key);
        let nothing_listed =
            matches!(&status, HostKeyStatus::Unknown { other_types } if other_types.is_empty());
        if port == 22 || !nothing_listed {
            return status;
        }
        match self.check_name(&lookup_name(host, 22), key) {
            bare @ (HostKeyStatus::Known { .. } | HostKeyStatus::Revoked { .. }) => bare,
            _ => status,
        }
    }

    /// Looks `key` up under one lookup name (`host` or `[host]:port`, lowercased).
    fn check_name(&self, name: &str, key: &PublicKey) -> HostKeyStatus {
        let key_type = key.key_type().name();
        let matching: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.hosts.matches(name))
            .collect();
        if let Some(e) = matching
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.blob == key.blob())
        {
            return HostKeyStatus::Revoked {
                file: self.path(e),
                line: e.line,
            };
        }
        let plain = || matching.iter().filter(|e| e.marker == Marker::None);
        if let Some(e) = plain().find(|e| e.key_type == key_type && e.blob == key.blob()) {
            return HostKeyStatus::Known {
                file: self.path(e),
                line: e.line,
            };
        }
        let expected: Vec<Mismatch> = plain()
            .filter(|e| e.key_type == key_type)
            .map(|e| self.mismatch(e))
            .collect();
        if !expected.is_empty() {
            return HostKeyStatus::Changed { expected };
        }
        HostKeyStatus::Unknown {
            other_types: plain().map(|e| self.mismatch(e)).collect(),
        }
    }

    /// Key types known for this host, in file order, each once: HostKeyAlgorithms is ordered
    /// so that the server offers a key that can be checked. On another port than 22 with
    /// nothing listed for `[host]:port`, the types listed for `host` (which [`Self::check`]
    /// falls back on); ssh orders by `[host]:port` alone, but asking for a type the second
    /// look can match is what makes that look useful.
    pub fn known_key_types(&self, host: &str, port: u16) -> Vec<String> {
        let types = self.key_types_of(&lookup_name(host, port));
        if types.is_empty() && port != 22 {
            return self.key_types_of(&lookup_name(host, 22));
        }
        types
    }

    fn key_types_of(&self, name: &str) -> Vec<String> {
        let mut types: Vec<String> = Vec::new();
        for e in &self.entries {
            if e.marker == Marker::None && !types.contains(&e.key_type) && e.hosts.matches(name) {
                types.push(e.key_type.clone());
            }
        }
        types
    }

    fn path(&self, e: &Entry) -> PathBuf {
        self.files.get(e.file).cloned().unwrap_or_default()
    }

    fn mismatch(&self, e: &Entry) -> Mismatch {
        Mismatch {
            file: self.path(e),
            line: e.line,
            key_type: e.key_type.clone(),
            fingerprint: fingerprint_sha256(&e.blob),
        }
    }

    fn absorb(&mut self, text: &str, origin: &Path, warnings: &mut Vec<Warning>) {
        let file = self.files.len();
        self.files.push(origin.to_path_buf());
        for (index, line) in text.split('\n').enumerate() {
            let number = index + 1;
            let warn = |message: String| Warning {
                file: origin.to_path_buf(),
                line: number,
                message,
            };
            match parse_line(line) {
                Ok(None) => {}
                Ok(Some((parsed, caveat))) => {
                    if let Some(caveat) = caveat {
                        warnings.push(warn(caveat));
                    }
                    self.entries.push(Entry {
                        file,
                        line: number,
                        marker: parsed.marker,
                        hosts: parsed.hosts,
                        key_type: parsed.key_type,
                        blob: parsed.blob,
                    });
                }
                Err(why) => warnings.push(warn(format!("line skipped: {why}"))),
            }
        }
    }
}

struct ParsedLine {
    marker: Marker,
    hosts: HostField,
    key_type: String,
    blob: Vec<u8>,
}

/// Text from a file, cut short and made safe for an error message.
fn excerpt(s: &str) -> String {
    ssh_transport::text::sanitize(s.as_bytes(), false, 60)
}

/// The key of a line's `type base64` fields (known_hosts, or a list of revoked keys): its
/// blob, checked to be of the type the line says, and a caveat for an RSA key of a size we
/// do not use (kept: it still tells what type of key the host has). Padding is optional.
pub(crate) fn key_field(key_type: &str, data: &str) -> Result<(Vec<u8>, Option<String>), String> {
    let blob = base64::engine::general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
    .decode(data)
    .map_err(|_| "the key data is not valid base64".to_owned())?;
    match blob_key_type(&blob) {
        Ok(inner) if inner == key_type => {}
        Ok(inner) => {
            return Err(format!(
                "the line says {} but the key data is {}",
                excerpt(key_type),
                excerpt(inner)
            ));
        }
        Err(_) => return Err("the key data does not start with a key type".into()),
    }
    let mut caveat = None;
    if let Some(kind) = KeyType::from_name(key_type) {
        match PublicKey::from_blob(&blob) {
            Ok(_) => {}
            // An RSA key outside the sizes we accept still tells that the host has an RSA
            // key, so a different one is reported as a change rather than as new.
            Err(KeyError::BadKey(why)) if kind == KeyType::Rsa => {
                caveat = Some(format!("kept, but the key is unusable: {why}"));
            }
            Err(e) => return Err(format!("bad {key_type} key: {e}")),
        }
    }
    Ok((blob, caveat))
}

/// One line: `Ok(None)` for blank lines and comments; a kept line may carry a caveat.
fn parse_line(line: &str) -> Result<Option<(ParsedLine, Option<String>)>, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = line.split([' ', '\t']).filter(|f| !f.is_empty());
    let Some(first) = fields.next() else {
        return Ok(None);
    };
    if first.starts_with('#') {
        return Ok(None);
    }
    let (marker, hosts) = match first {
        "@revoked" => (Marker::Revoked, fields.next()),
        "@cert-authority" => (Marker::CertAuthority, fields.next()),
        m if m.starts_with('@') => return Err(format!("unknown marker '{}'", excerpt(m))),
        hosts => (Marker::None, Some(hosts)),
    };
    let hosts = hosts.ok_or("no host names after the marker")?;
    let hosts = HostField::parse(hosts).map_err(str::to_owned)?;
    let key_type = fields.next().ok_or("no key type after the host names")?;
    if key_type.bytes().all(|b| b.is_ascii_digit()) {
        return Err("SSH protocol 1 keys are not supported".into());
    }
    let data = fields.next().ok_or("no key data after the key type")?;
    let (blob, caveat) = key_field(key_type, data)?;
    Ok(Some((
        ParsedLine {
            marker,
            hosts,
            key_type: key_type.to_owned(),
            blob,
        },
        caveat,
    )))
}

/// The name a host is listed under: `host` for port 22, `[host]:port` otherwise, lowercased.
pub fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// The line that records `key` for `host`/`port` (what accept-new appends): the lookup name,
/// hashed with `salt` when `hashed` is set, then `type base64`. A host with characters that
/// would read as a pattern or separator is always hashed, so it can only ever match itself.
pub fn entry_line(host: &str, port: u16, key: &PublicKey, hashed: bool, salt: &[u8; 20]) -> String {
    let name = lookup_name(host, port);
    let plain_safe = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'%'));
    let hosts = if hashed || !plain_safe {
        pattern::hashed_name(&name, salt)
    } else {
        name
    };
    format!("{hosts} {}", key.to_openssh_line())
}

/// Appends one line to a known_hosts file. Creates the file (mode 0600) and its directory
/// (mode 0700) if they are missing, and starts a new line first if the file does not end
/// with one.
pub fn append(path: &Path, line: &str) -> io::Result<()> {
    if line.is_empty() || line.contains(['\n', '\r']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a known_hosts entry must be one non-empty line",
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let _guard = update::WRITE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut options = std::fs::OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let mut text = String::with_capacity(line.len() + 2);
    if file.metadata()?.len() > 0 {
        file.seek(io::SeekFrom::End(-1))?;
        let mut last = [0u8; 1];
        file.read_exact(&mut last)?;
        if last != *b"\n" {
            text.push('\n');
        }
    }
    text.push_str(line);
    text.push('\n');
    // One write, so a concurrent appender cannot interleave inside the line (O_APPEND).
    file.write_all(text.as_bytes())?;
    file.flush()
}
