//! Key pairs made by the real `ssh-keygen`, for users and for sshd's host keys.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{require_program, run_ok};

/// RSA-4096 takes seconds on a slow machine; the timeout leaves room for a busy CI box.
const KEYGEN_TIMEOUT: Duration = Duration::from_secs(120);

/// A key algorithm and size `ssh-keygen` can generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA, 2048-bit modulus (quick to generate).
    Rsa2048,
    /// RSA, 3072-bit modulus (`ssh-keygen`'s default size).
    Rsa3072,
    /// RSA, 4096-bit modulus: what data platforms typically hand out; slow to generate.
    Rsa4096,
    /// Ed25519.
    Ed25519,
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// ECDSA on NIST P-521.
    EcdsaP521,
}

impl KeyKind {
    /// Every kind, RSA first.
    pub const ALL: [KeyKind; 7] = [
        KeyKind::Rsa2048,
        KeyKind::Rsa3072,
        KeyKind::Rsa4096,
        KeyKind::Ed25519,
        KeyKind::EcdsaP256,
        KeyKind::EcdsaP384,
        KeyKind::EcdsaP521,
    ];

    /// The host key types sshd gets unless a test chooses: one of each family, with a
    /// quick RSA size.
    pub const DEFAULT_HOST_KEYS: [KeyKind; 3] =
        [KeyKind::Ed25519, KeyKind::Rsa2048, KeyKind::EcdsaP256];

    /// The key type name on the wire and in key files (`ssh-rsa`, `ssh-ed25519`,
    /// `ecdsa-sha2-nistp256`, ...).
    pub fn ssh_name(self) -> &'static str {
        match self {
            KeyKind::Rsa2048 | KeyKind::Rsa3072 | KeyKind::Rsa4096 => "ssh-rsa",
            KeyKind::Ed25519 => "ssh-ed25519",
            KeyKind::EcdsaP256 => "ecdsa-sha2-nistp256",
            KeyKind::EcdsaP384 => "ecdsa-sha2-nistp384",
            KeyKind::EcdsaP521 => "ecdsa-sha2-nistp521",
        }
    }

    /// A short label (`rsa4096`, `ed25519`, `ecdsa256`, ...), also accepted by [`KeyKind::parse`].
    pub fn label(self) -> &'static str {
        match self {
            KeyKind::Rsa2048 => "rsa2048",
            KeyKind::Rsa3072 => "rsa3072",
            KeyKind::Rsa4096 => "rsa4096",
            KeyKind::Ed25519 => "ed25519",
            KeyKind::EcdsaP256 => "ecdsa256",
            KeyKind::EcdsaP384 => "ecdsa384",
            KeyKind::EcdsaP521 => "ecdsa521",
        }
    }

    /// Parses a [`KeyKind::label`].
    pub fn parse(label: &str) -> Option<KeyKind> {
        KeyKind::ALL.into_iter().find(|k| k.label() == label)
    }

    fn keygen_args(self) -> &'static [&'static str] {
        match self {
            KeyKind::Rsa2048 => &["-t", "rsa", "-b", "2048"],
            KeyKind::Rsa3072 => &["-t", "rsa", "-b", "3072"],
            KeyKind::Rsa4096 => &["-t", "rsa", "-b", "4096"],
            KeyKind::Ed25519 => &["-t", "ed25519"],
            KeyKind::EcdsaP256 => &["-t", "ecdsa", "-b", "256"],
            KeyKind::EcdsaP384 => &["-t", "ecdsa", "-b", "384"],
            KeyKind::EcdsaP521 => &["-t", "ecdsa", "-b", "521"],
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The encoding of a private key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyFormat {
    /// `-----BEGIN OPENSSH PRIVATE KEY-----` (ssh-keygen's default).
    OpenSsh,
    /// Traditional PEM (`BEGIN RSA PRIVATE KEY` / `BEGIN EC PRIVATE KEY`), `ssh-keygen -m PEM`.
    Pem,
    /// PKCS#8 (`BEGIN PRIVATE KEY`, or `BEGIN ENCRYPTED PRIVATE KEY`), `ssh-keygen -m PKCS8`.
    Pkcs8,
}

impl KeyFormat {
    /// The `-m` argument; none for ssh-keygen's own default format.
    fn keygen_args(self) -> &'static [&'static str] {
        match self {
            KeyFormat::OpenSsh => &[],
            KeyFormat::Pem => &["-m", "PEM"],
            KeyFormat::Pkcs8 => &["-m", "PKCS8"],
        }
    }

    /// The format a private key file is in, from its first line.
    pub fn detect(private_key_text: &str) -> Option<KeyFormat> {
        let first = private_key_text.lines().next()?.trim();
        match first {
            "-----BEGIN OPENSSH PRIVATE KEY-----" => Some(KeyFormat::OpenSsh),
            "-----BEGIN RSA PRIVATE KEY-----" | "-----BEGIN EC PRIVATE KEY-----" => {
                Some(KeyFormat::Pem)
            }
            "-----BEGIN PRIVATE KEY-----" | "-----BEGIN ENCRYPTED PRIVATE KEY-----" => {
                Some(KeyFormat::Pkcs8)
            }
            _ => None,
        }
    }
}

/// A fresh key pair in its own temp dir, removed when the key and every [`Tunnel`] started
/// with it are dropped: a client reads its key file when it logs in, which may be after the
/// test's own `UserKey` has gone (a helper that returns the tunnel and drops the key).
///
/// [`Tunnel`]: crate::Tunnel
#[derive(Debug)]
pub struct UserKey {
    dir: Arc<TempDir>,
    kind: KeyKind,
    format: KeyFormat,
    passphrase: Option<String>,
    private_key: PathBuf,
    public_key: PathBuf,
    public_line: String,
    fingerprint: String,
}

impl UserKey {
    /// A handle that keeps the key's files on disk while it lives.
    pub(crate) fn files(&self) -> Arc<TempDir> {
        Arc::clone(&self.dir)
    }

    /// A new unencrypted key in OpenSSH format.
    pub fn generate(kind: KeyKind) -> UserKey {
        UserKey::generate_with(kind, KeyFormat::OpenSsh, None)
    }

    /// A new unencrypted key in traditional PEM format (`ssh-keygen -m PEM`).
    ///
    /// `ssh-keygen` has no PEM encoding for Ed25519 and silently writes OpenSSH format
    /// instead; [`UserKey::format`] tells what was written.
    pub fn generate_pem(kind: KeyKind) -> UserKey {
        UserKey::generate_with(kind, KeyFormat::Pem, None)
    }

    /// A new key in the given format, encrypted when `passphrase` is given.
    pub fn generate_with(kind: KeyKind, format: KeyFormat, passphrase: Option<&str>) -> UserKey {
        let dir = tempfile::Builder::new()
            .prefix("lab-key-")
            .tempdir()
            .expect("create a temp dir for a key");
        let private_key = dir.path().join(format!("id_{}", kind.label()));
        let comment = format!("lab-{}", kind.label());
        generate_key_file(kind, format, passphrase, &comment, &private_key);
        let public_key = private_key.with_extension("pub");
        let public_line = fs::read_to_string(&public_key)
            .unwrap_or_else(|e| panic!("read {}: {e}", public_key.display()))
            .trim()
            .to_owned();
        let private_text = fs::read_to_string(&private_key)
            .unwrap_or_else(|e| panic!("read {}: {e}", private_key.display()));
        let written = KeyFormat::detect(&private_text).unwrap_or_else(|| {
            panic!(
                "ssh-keygen wrote a private key in an unknown format to {}",
                private_key.display()
            )
        });
        let fingerprint = fingerprint_of(&public_key);
        UserKey {
            dir: Arc::new(dir),
            kind,
            format: written,
            passphrase: passphrase.map(str::to_owned),
            private_key,
            public_key,
            public_line,
            fingerprint,
        }
    }

    /// The key's algorithm and size.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The format the private key file is actually in.
    pub fn format(&self) -> KeyFormat {
        self.format
    }

    /// The passphrase protecting the private key, if any.
    pub fn passphrase(&self) -> Option<&str> {
        self.passphrase.as_deref()
    }

    /// The private key file (mode 0600, as ssh clients insist).
    pub fn private_key_path(&self) -> &Path {
        &self.private_key
    }

    /// The `.pub` file next to it.
    pub fn public_key_path(&self) -> &Path {
        &self.public_key
    }

    /// The public key line: `keytype base64 comment`, ready for `authorized_keys`.
    pub fn public_key_line(&self) -> &str {
        &self.public_line
    }

    /// The base64 blob field of the public key line.
    pub fn public_key_base64(&self) -> &str {
        self.public_line.split_whitespace().nth(1).unwrap_or("")
    }

    /// The fingerprint as `ssh-keygen -l` prints it: `SHA256:` and unpadded base64.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Runs `ssh-keygen` to write a new key pair to `path` and `path.pub`.
pub(crate) fn generate_key_file(
    kind: KeyKind,
    format: KeyFormat,
    passphrase: Option<&str>,
    comment: &str,
    path: &Path,
) {
    let keygen = ssh_keygen();
    let mut cmd = Command::new(keygen);
    cmd.arg("-q")
        .args(kind.keygen_args())
        .args(format.keygen_args())
        .args(["-C", comment])
        .args(["-N", passphrase.unwrap_or("")])
        .arg("-f")
        .arg(path);
    run_ok(&mut cmd, KEYGEN_TIMEOUT, &format!("ssh-keygen ({kind})"));
}

/// The `SHA256:...` fingerprint of a public key file, computed by `ssh-keygen -l`.
pub fn fingerprint_of(public_key: &Path) -> String {
    let mut cmd = Command::new(ssh_keygen());
    cmd.args(["-l", "-E", "sha256", "-f"]).arg(public_key);
    let out = run_ok(&mut cmd, Duration::from_secs(30), "ssh-keygen -l");
    let text = String::from_utf8_lossy(&out.stdout);
    // "4096 SHA256:... comment (RSA)"
    text.split_whitespace()
        .find(|field| field.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("ssh-keygen -l printed no SHA256 fingerprint: {text}"))
        .to_owned()
}

/// The real `ssh-keygen`.
pub fn ssh_keygen() -> PathBuf {
    require_program(
        "ssh-keygen",
        &[],
        "install the OpenSSH client (Debian: apt-get install openssh-client; scripts/test does this)",
    )
}

/// A certificate authority made by the real `ssh-keygen`: an Ed25519 key pair in a temp
/// dir, signing user certificates with `ssh-keygen -s`.
#[derive(Debug)]
pub struct CertAuthority {
    dir: TempDir,
}

impl CertAuthority {
    /// A new CA.
    pub fn new() -> CertAuthority {
        let dir = tempfile::Builder::new()
            .prefix("lab-ca-")
            .tempdir()
            .expect("a temp dir for the CA");
        let mut cmd = Command::new(ssh_keygen());
        cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", "lab-ca", "-f"])
            .arg(dir.path().join("ca"));
        run_ok(&mut cmd, KEYGEN_TIMEOUT, "ssh-keygen (CA)");
        CertAuthority { dir }
    }

    /// The CA's public key, for sshd's `TrustedUserCAKeys`.
    pub fn public_key_path(&self) -> PathBuf {
        self.dir.path().join("ca.pub")
    }

    /// The CA's public key as a known_hosts key field (`type base64`), for an
    /// `@cert-authority` line.
    pub fn known_hosts_key(&self) -> String {
        let text =
            std::fs::read_to_string(self.public_key_path()).expect("read the CA's public key");
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A lab sshd that trusts this CA for user certificates and authorizes no key, logging
    /// at DEBUG2 (its "Accepted publickey" line names the certificate).
    pub fn sshd(&self) -> crate::Sshd {
        crate::Sshd::builder()
            .config(format!(
                "TrustedUserCAKeys {}",
                self.public_key_path().display()
            ))
            .config("LogLevel DEBUG2")
            .start()
    }

    /// Certifies the public key file `public` with key id `id` for `principal`, with extra
    /// `ssh-keygen -s` arguments; returns the `-cert.pub` ssh-keygen wrote beside it.
    pub fn certify(&self, public: &Path, id: &str, principal: &str, extra: &[&str]) -> PathBuf {
        let mut cmd = Command::new(ssh_keygen());
        cmd.arg("-q")
            .arg("-s")
            .arg(self.dir.path().join("ca"))
            .args(["-I", id, "-n", principal])
            .args(extra)
            .arg(public);
        run_ok(&mut cmd, KEYGEN_TIMEOUT, "ssh-keygen -s");
        let stem = public.to_string_lossy();
        let cert = PathBuf::from(format!(
            "{}-cert.pub",
            stem.strip_suffix(".pub").unwrap_or(&stem)
        ));
        assert!(cert.exists(), "ssh-keygen did not write {}", cert.display());
        cert
    }

    /// Flips the lowest bit of the last byte of the certificate in `path`, which is the last
    /// byte of its authority's signature, by editing its base64 text: the last character that
    /// carries data holds that bit at position 0, 2 or 4 of its 6, for no, one or two `=`.
    pub fn damage_signature(path: &Path) {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let text = std::fs::read_to_string(path).expect("read the certificate");
        let mut words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        let blob = words.get_mut(1).expect("a base64 field");
        let padding = blob.len() - blob.trim_end_matches('=').len();
        let at = blob.len() - padding - 1;
        let mut bytes = std::mem::take(blob).into_bytes();
        let index = ALPHABET
            .iter()
            .position(|&c| c == bytes[at])
            .expect("a base64 character");
        bytes[at] = ALPHABET[index ^ (1 << (2 * padding))];
        *blob = String::from_utf8(bytes).expect("ASCII");
        std::fs::write(path, format!("{}\n", words.join(" "))).expect("write the certificate");
    }
}

impl Default for CertAuthority {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for kind in KeyKind::ALL {
            assert_eq!(KeyKind::parse(kind.label()), Some(kind));
        }
        assert_eq!(KeyKind::parse("dsa"), None);
    }

    #[test]
    fn ed25519_key_has_matching_public_line_and_fingerprint() {
        let key = UserKey::generate(KeyKind::Ed25519);
        assert_eq!(key.format(), KeyFormat::OpenSsh);
        assert!(key.public_key_line().starts_with("ssh-ed25519 AAAA"));
        assert!(key.fingerprint().starts_with("SHA256:"));
        // 32 bytes of SHA-256 in unpadded base64.
        assert_eq!(key.fingerprint().len(), "SHA256:".len() + 43);
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(key.private_key_path())
                .expect("key file")
                .permissions()
                .mode()
        };
        assert_eq!(
            mode & 0o077,
            0,
            "private key must not be readable by others"
        );
    }

    #[test]
    fn pem_and_pkcs8_formats_are_written_as_asked() {
        let pem = UserKey::generate_pem(KeyKind::Rsa2048);
        assert_eq!(pem.format(), KeyFormat::Pem);
        assert!(pem.public_key_line().starts_with("ssh-rsa "));
        let ec = UserKey::generate_with(KeyKind::EcdsaP384, KeyFormat::Pkcs8, None);
        assert_eq!(ec.format(), KeyFormat::Pkcs8);
        assert!(ec.public_key_line().starts_with("ecdsa-sha2-nistp384 "));
        // No PEM encoding exists for Ed25519: ssh-keygen falls back to its own format.
        assert_eq!(
            UserKey::generate_pem(KeyKind::Ed25519).format(),
            KeyFormat::OpenSsh
        );
    }

    #[test]
    fn encrypted_key_needs_its_passphrase() {
        let key = UserKey::generate_with(KeyKind::Ed25519, KeyFormat::OpenSsh, Some("s3cret"));
        assert_eq!(key.passphrase(), Some("s3cret"));
        let mut wrong = Command::new(ssh_keygen());
        wrong
            .args(["-y", "-P", "wrong", "-f"])
            .arg(key.private_key_path());
        let out = crate::process::run_bounded(&mut wrong, Duration::from_secs(30), "ssh-keygen -y");
        assert!(!out.status.success());
        let mut right = Command::new(ssh_keygen());
        right
            .args(["-y", "-P", "s3cret", "-f"])
            .arg(key.private_key_path());
        let out = run_ok(&mut right, Duration::from_secs(30), "ssh-keygen -y");
        let derived = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            derived.split_whitespace().nth(1),
            Some(key.public_key_base64()),
            "the passphrase opens the key that matches the public line"
        );
    }
}
