//! `UpdateHostKeys`: after the login OpenSSH's sshd lists all its host keys
//! (`hostkeys-00@openssh.com`, OpenSSH's `PROTOCOL` section 2.5). A bastion whose admin adds
//! a new key before retiring the old one can then be followed without anyone editing
//! known_hosts: keys the user's known_hosts file does not list for the host are added once
//! the server has proven it holds them (`hostkeys-prove-00@openssh.com`, a signature over the
//! session identifier), and keys it lists that the server no longer offers are removed.
//!
//! The rules are OpenSSH's (`clientloop.c`), kept as strict: nothing is changed when the
//! host's lines are anything but simple (a marker, a wildcard or another name on the line), when
//! one of the keys is listed under another name too, or when the host is listed in a user
//! known_hosts file after the first; keys are only ever added to and removed from the first
//! user file. Here the host must also be listed in no other user file at all, so the one
//! file edited is the only one that speaks for it.
//!
//! The file is rewritten whole: read, edited, written to a new file in the same directory and
//! renamed over it, under a lock that every known_hosts write of this process takes, so
//! an accept-new appending at the same time is not lost.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ssh_transport::hostkey::{KeyType, PublicKey, SignatureAlgorithm};
use ssh_transport::wire::Writer as _;

use super::{HostField, MAX_FILE_SIZE, Marker, entry_line, lookup_name, parse_line};

/// Taken by every write of a known_hosts file in this process: an append and a rewrite of
/// the same file must not overlap.
pub(super) static WRITE_LOCK: Mutex<()> = Mutex::new(());

/// What the server's list asks of the first user known_hosts file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    file: PathBuf,
    host: String,
    port: u16,
    /// Keys the server listed that the file does not list for the host: added once the
    /// server proves it holds them.
    pub new: Vec<PublicKey>,
    /// Keys the file lists for the host that the server no longer offers: removed.
    pub stale: Vec<PublicKey>,
}

/// What to do with the server's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The file already lists exactly the keys the server offers.
    Nothing,
    /// There are changes, but they are not made, for this reason (for a debug log).
    Skip(String),
    /// Prove `new` (if any), then [`apply`].
    Update(Plan),
}

/// Whether a pattern field is more than one plain name: a list, a wildcard or a negation,
/// which OpenSSH never writes and does not update.
fn complex(hosts: &HostField) -> bool {
    match hosts {
        HostField::Hashed { .. } => false,
        HostField::Patterns(p) => p.contains([',', '*', '?', '!']),
    }
}

/// Decides what the server's `offered` keys change for `host`/`port` (the name the host key
/// was checked under) in `user_files`, the user's known_hosts files, the first of which is
/// the one edited.
pub fn plan(user_files: &[PathBuf], host: &str, port: u16, offered: &[PublicKey]) -> Outcome {
    let Some(first) = user_files.first() else {
        return Outcome::Skip("no UserKnownHostsFile".into());
    };
    let name = lookup_name(host, port);
    let mut matched = vec![false; offered.len()];
    let mut stale: Vec<PublicKey> = Vec::new();
    let mut skip: Option<String> = None;
    // Blobs seen on lines for other names, to tell whether a key is listed elsewhere too.
    let mut elsewhere: Vec<(Vec<u8>, String)> = Vec::new();
    for (index, path) in user_files.iter().enumerate() {
        let text = match crate::files::read_bounded(path, MAX_FILE_SIZE) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Outcome::Skip(format!("cannot read {}: {e}", path.display())),
        };
        for (number, line) in text.split('\n').enumerate() {
            let Ok(Some((parsed, _))) = parse_line(line) else {
                continue;
            };
            let at = format!("{}:{}", path.display(), number + 1);
            if !parsed.hosts.matches(&name) {
                elsewhere.push((parsed.blob, at));
                continue;
            }
            let why = if index > 0 {
                Some(format!("the host is also listed at {at}"))
            } else if parsed.marker != Marker::None {
                Some(format!(
                    "a @cert-authority or @revoked line names the host at {at}"
                ))
            } else if complex(&parsed.hosts) {
                Some(format!(
                    "the line for the host at {at} has other names or patterns"
                ))
            } else {
                None
            };
            if let Some(why) = why {
                skip.get_or_insert(why);
                continue;
            }
            match offered.iter().position(|k| k.blob() == parsed.blob) {
                Some(i) => {
                    if let Some(m) = matched.get_mut(i) {
                        *m = true;
                    }
                }
                None => match PublicKey::from_blob(&parsed.blob) {
                    Ok(k) if !stale.contains(&k) => stale.push(k),
                    Ok(_) => {}
                    Err(e) => {
                        skip.get_or_insert(format!("the key at {at} cannot be read: {e}"));
                    }
                },
            }
        }
    }
    let new: Vec<PublicKey> = offered
        .iter()
        .zip(&matched)
        .filter(|(_, m)| !**m)
        .map(|(k, _)| k.clone())
        .collect();
    if new.is_empty() && stale.is_empty() {
        return Outcome::Nothing;
    }
    if let Some(why) = skip {
        return Outcome::Skip(why);
    }
    for k in offered.iter().chain(&stale) {
        if let Some((_, at)) = elsewhere.iter().find(|(b, _)| b == k.blob()) {
            return Outcome::Skip(format!(
                "the {} key {} is also listed under another name at {at}",
                k.key_type().name(),
                k.fingerprint()
            ));
        }
    }
    Outcome::Update(Plan {
        file: first.clone(),
        host: host.to_owned(),
        port,
        new,
        stale,
    })
}

/// The data a server signs to prove it holds a host key: the request's name, the session
/// identifier and the key (OpenSSH's `PROTOCOL` section 2.5).
pub fn proof_data(session_id: &[u8], key: &PublicKey) -> Vec<u8> {
    let mut data = Vec::new();
    data.put_string(b"hostkeys-prove-00@openssh.com");
    data.put_string(session_id);
    data.put_string(key.blob());
    data
}

/// Checks the server's `signatures` for `keys` (one each, in order) over this session, and
/// returns the keys proven. `negotiated` is the host key algorithm of the key exchange: an
/// RSA key is proven with it when it is an RSA one, else with rsa-sha2-512 or rsa-sha2-256:
/// an RSA key signed otherwise (SHA-1) is left out, as OpenSSH's client leaves it; every
/// other key with its own algorithm. A signature that does not verify fails them all.
pub fn verify_proofs(
    session_id: &[u8],
    keys: &[PublicKey],
    signatures: &[Vec<u8>],
    negotiated: SignatureAlgorithm,
) -> Result<Vec<PublicKey>, String> {
    if keys.len() != signatures.len() {
        return Err(format!(
            "{} signatures for {} keys",
            signatures.len(),
            keys.len()
        ));
    }
    let mut proven = Vec::with_capacity(keys.len());
    for (key, sig) in keys.iter().zip(signatures) {
        let data = proof_data(session_id, key);
        let rsa_sha2 = [SignatureAlgorithm::RsaSha512, SignatureAlgorithm::RsaSha256];
        let algorithms: &[SignatureAlgorithm] = match key.key_type() {
            KeyType::Rsa if negotiated.key_type() == KeyType::Rsa => &[negotiated],
            KeyType::Rsa => {
                let named = ssh_transport::wire::Reader::new(sig).utf8().ok();
                if !rsa_sha2.iter().any(|a| Some(a.name()) == named) {
                    continue;
                }
                &rsa_sha2
            }
            KeyType::Ed25519 => &[SignatureAlgorithm::Ed25519],
            KeyType::EcdsaP256 => &[SignatureAlgorithm::EcdsaP256],
            KeyType::EcdsaP384 => &[SignatureAlgorithm::EcdsaP384],
            KeyType::EcdsaP521 => &[SignatureAlgorithm::EcdsaP521],
            other => return Err(format!("no proof is checked for {} keys", other.name())),
        };
        if !algorithms
            .iter()
            .any(|a| key.verify(*a, &data, sig).is_ok())
        {
            return Err(format!(
                "the signature for the {} key {} does not verify",
                key.key_type().name(),
                key.fingerprint()
            ));
        }
        proven.push(key.clone());
    }
    Ok(proven)
}

/// What [`apply`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Keys added.
    pub added: Vec<PublicKey>,
    /// Lines removed.
    pub removed: usize,
}

/// Makes `plan`'s changes to its file: removes the host's lines with a stale key and adds
/// each of `proven` (the new keys the server proved) not listed for the host by then,
/// hashed when `hash` is set (HashKnownHosts). The file is read again under the write lock,
/// so lines written since the plan are kept; it is replaced by a rename, with its mode.
pub fn apply(plan: &Plan, proven: &[PublicKey], hash: bool) -> io::Result<Applied> {
    let _guard = WRITE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let bytes = crate::files::read_bounded(&plan.file, MAX_FILE_SIZE)?;
    let name = lookup_name(&plan.host, plan.port);
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len() + 256);
    let mut applied = Applied::default();
    let mut listed: Vec<Vec<u8>> = Vec::new();
    // Line by line as bytes: every line kept is written back as it was, even one that is not
    // UTF-8 or not a known_hosts line at all.
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let lines = (!bytes.is_empty()).then(|| body.split(|b| *b == b'\n'));
    for line in lines.into_iter().flatten() {
        if let Ok(text) = std::str::from_utf8(line)
            && let Ok(Some((parsed, _))) = parse_line(text)
            && parsed.marker == Marker::None
            && parsed.hosts.matches(&name)
        {
            if plan.stale.iter().any(|k| k.blob() == parsed.blob) {
                applied.removed += 1;
                continue;
            }
            listed.push(parsed.blob);
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    for key in proven {
        if listed.iter().any(|b| b == key.blob()) {
            continue;
        }
        let mut salt = [0u8; 20];
        ssh_transport::random::SecureRandom::fill(&mut ssh_transport::random::OsRandom, &mut salt);
        out.extend_from_slice(entry_line(&plan.host, plan.port, key, hash, &salt).as_bytes());
        out.push(b'\n');
        listed.push(key.blob().to_vec());
        applied.added.push(key.clone());
    }
    if applied.added.is_empty() && applied.removed == 0 {
        return Ok(applied);
    }
    replace(&plan.file, &out)?;
    Ok(applied)
}

/// Replaces `path` with `contents`: written to a new file beside it with the same mode,
/// synced, then renamed over it, so a reader sees the old file or the new, never a part.
fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "known_hosts".into());
    let temp = dir.join(format!(".{file_name}.{}.new", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o777);
        options.mode(mode);
    }
    let _ = std::fs::remove_file(&temp);
    let written = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests;
