//! Errors of this crate: [`AuthError`] from the authentication state machine, with
//! [`KeyFileError`] and [`SignError`] for the two things a caller can do with a key outside it.
//! Every message says what happened and what to do about it.

use core::fmt;

use ssh_transport::DisconnectReason;
use ssh_transport::hostkey::{KeyType, SignatureAlgorithm};

/// Why a private key file could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file is larger than any supported key file could be.
    TooLarge {
        /// The file's size in bytes.
        len: usize,
        /// The largest size accepted.
        max: usize,
    },
    /// The file holds a public key (a `.pub` file or a `PUBLIC KEY` block), not a private key.
    PublicKeyInstead,
    /// No `-----BEGIN ... PRIVATE KEY-----` block was found.
    NotAPrivateKey,
    /// A private key container this crate does not read (PuTTY, SSH.COM, ...).
    UnsupportedFormat(&'static str),
    /// The key is protected by a passphrase and none was given: ask for one and load the key
    /// again with [`crate::PrivateKey::from_file_contents_with_passphrase`].
    PassphraseRequired,
    /// The passphrase given does not decrypt the key (or the encrypted part of the file is
    /// damaged: the two cannot be told apart).
    WrongPassphrase,
    /// The key is encrypted with a cipher or key derivation this crate does not implement;
    /// its name (sanitized) is kept.
    UnsupportedEncryption(String),
    /// The key derivation asks for more work or memory than any honest key file does; the
    /// text says what was asked and the limit.
    KdfTooCostly(String),
    /// The key file can be read or written by other users (unix permissions), so it is not
    /// used, as OpenSSH refuses it too.
    InsecurePermissions {
        /// The file, as the caller named it.
        path: String,
        /// The file's permission bits (`mode & 0o7777`).
        mode: u32,
    },
    /// The operating system failed: the key file's permissions could not be read, or no
    /// random numbers could be had to make a key. The text says which.
    Io(String),
    /// The key is of a type this crate cannot sign with; the type's name is kept.
    UnsupportedKeyType(String),
    /// An RSA key outside the sizes this crate can sign with.
    UnsupportedRsaSize {
        /// The modulus size in bits.
        bits: usize,
    },
    /// The file's structure is broken: what was wrong is in the text.
    Malformed(String),
    /// The structure is fine but the key's numbers are not a usable key pair.
    InvalidKey(String),
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => write!(
                f,
                "the file is {len} bytes, too large for a private key (at most {max} bytes); \
                 check that the path names a private key file"
            ),
            Self::PublicKeyInstead => f.write_str(
                "this is a public key; give the private key file instead \
                 (the one without the .pub suffix)",
            ),
            Self::NotAPrivateKey => f.write_str(
                "no private key found: expected an OpenSSH or PEM private key file \
                 (a \"-----BEGIN ... PRIVATE KEY-----\" block) as ssh-keygen writes it",
            ),
            Self::UnsupportedFormat(what) => write!(
                f,
                "{what} key files are not supported; convert the key to OpenSSH format \
                 (for example with `ssh-keygen -i` or PuTTYgen's OpenSSH export)"
            ),
            Self::PassphraseRequired => f.write_str(
                "the private key is protected by a passphrase and none was given; \
                 supply the key's passphrase",
            ),
            Self::WrongPassphrase => f.write_str(
                "wrong passphrase: the key does not decrypt with it (or the file's encrypted \
                 part is damaged); check the passphrase, for example with `ssh-keygen -y -f \
                 <file>`, which asks for it",
            ),
            Self::UnsupportedEncryption(what) => write!(
                f,
                "the private key is encrypted with {what}, which is not supported; re-encrypt \
                 it in OpenSSH's format with `ssh-keygen -p -f <file>` (bcrypt and aes256-ctr)"
            ),
            Self::KdfTooCostly(what) => write!(
                f,
                "the private key's passphrase derivation asks for {what}; a file asking for \
                 that much is damaged or hostile, so it is refused; if you made it yourself, \
                 re-encrypt it with `ssh-keygen -p -f <file>` (16 bcrypt rounds by default)"
            ),
            Self::InsecurePermissions { path, mode } => write!(
                f,
                "unprotected private key file {path}: its permissions {mode:04o} are too open; \
                 a private key must not be readable or writable by anyone but its owner, so \
                 this key is ignored; fix it with `chmod 600 {path}`"
            ),
            Self::Io(what) => f.write_str(what),
            Self::UnsupportedKeyType(name) => write!(
                f,
                "key type {name} is not supported; use an Ed25519 key \
                 (`ssh-keygen -t ed25519`), an ECDSA key (nistp256, nistp384 or nistp521) \
                 or an RSA key of 2048 to 16384 bits"
            ),
            Self::UnsupportedRsaSize { bits } => write!(
                f,
                "the RSA key is {bits} bits; RSA keys of 2048 to 16384 bits are supported \
                 (make one with `ssh-keygen -t rsa -b 4096`, or use an Ed25519 key)"
            ),
            Self::Malformed(what) => write!(
                f,
                "the private key file is malformed: {what}; check that the file is complete \
                 and was not edited or truncated"
            ),
            Self::InvalidKey(what) => write!(
                f,
                "the private key's numbers are not a valid key pair: {what}; \
                 regenerate the key with ssh-keygen"
            ),
        }
    }
}

impl std::error::Error for KeyFileError {}

/// Why a key could not sign.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignError {
    /// The key cannot make this kind of signature (another key type, or SHA-1 RSA, which is
    /// never made here).
    UnsupportedAlgorithm {
        /// The algorithm asked for.
        algorithm: SignatureAlgorithm,
        /// The key's type.
        key_type: KeyType,
    },
    /// The cryptographic library refused to sign (it reports no detail).
    Failed,
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedAlgorithm {
                algorithm,
                key_type,
            } => write!(
                f,
                "a {} key cannot make {algorithm} signatures here",
                key_type.name()
            ),
            Self::Failed => f.write_str("signing failed inside the crypto library"),
        }
    }
}

impl std::error::Error for SignError {}

/// Why a key was not offered to the server (or not with all its algorithms).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The server's `server-sig-algs` lists none of the algorithms the key can sign with.
    NoAllowedAlgorithm {
        /// What the key could have signed with (as configured).
        key_can_sign: Vec<SignatureAlgorithm>,
    },
    /// The client's own PubkeyAcceptedAlgorithms allows none of them.
    NotInAcceptedAlgorithms {
        /// What the key could have signed with.
        key_can_sign: Vec<SignatureAlgorithm>,
    },
    /// Signing failed.
    SignFailed(SignError),
    /// The signer outside this crate (an agent, or a key file that needed its passphrase)
    /// could not sign; its explanation is kept.
    SignerFailed(String),
    /// The signer outside this crate returned a signature of another algorithm, or one that
    /// does not verify with the key.
    BadSignature(String),
    /// The certificate's validity starts later (seconds since the Unix epoch).
    CertificateNotYetValid {
        /// `valid after`.
        valid_after: u64,
    },
    /// The certificate's validity has ended (seconds since the Unix epoch).
    CertificateExpired {
        /// `valid before`.
        valid_before: u64,
    },
    /// Public key authentication is turned off (`PubkeyAuthentication no`).
    PublickeyDisabled,
    /// `publickey` is not in the methods to use (`PreferredAuthentications`).
    PublickeyNotPreferred,
    /// The server stopped offering publickey authentication before this key's turn.
    NotTried,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAllowedAlgorithm { key_can_sign } => {
                f.write_str("skipped: the server's server-sig-algs lists none of ")?;
                write_algorithms(f, key_can_sign)
            }
            Self::NotInAcceptedAlgorithms { key_can_sign } => {
                f.write_str("skipped: PubkeyAcceptedAlgorithms allows none of ")?;
                write_algorithms(f, key_can_sign)
            }
            Self::SignFailed(e) => write!(f, "skipped: {e}"),
            Self::SignerFailed(e) => write!(f, "skipped: could not sign: {e}"),
            Self::BadSignature(e) => write!(f, "skipped: {e}"),
            Self::CertificateNotYetValid { valid_after } => write!(
                f,
                "skipped: the certificate is not valid before {}; check the clock, or wait",
                crate::cert::utc(*valid_after)
            ),
            Self::CertificateExpired { valid_before } => write!(
                f,
                "skipped: the certificate expired at {}; have it signed again",
                crate::cert::utc(*valid_before)
            ),
            Self::PublickeyDisabled => f.write_str("skipped: PubkeyAuthentication is off"),
            Self::PublickeyNotPreferred => {
                f.write_str("skipped: publickey is not in PreferredAuthentications")
            }
            Self::NotTried => f.write_str("not tried"),
        }
    }
}

/// What happened to one key during authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyReport {
    /// Where the key came from, as the caller named it (usually a file path).
    pub source: String,
    /// The public key's `SHA256:` fingerprint (the certified key's, for a certificate).
    pub fingerprint: String,
    /// Whether an agent holds the key (else the client signs with it itself).
    pub from_agent: bool,
    /// For a certificate, its description (key id, serial, validity).
    pub certificate: Option<String>,
    /// The signature algorithms the server refused this key with, in the order tried.
    pub refused_with: Vec<SignatureAlgorithm>,
    /// The algorithm the server accepted this key with as one step of several (partial
    /// success), if it did.
    pub accepted_with: Option<SignatureAlgorithm>,
    /// Why the key (or its remaining algorithms) was not offered, if so.
    pub skipped: Option<SkipReason>,
}

impl KeyReport {
    /// A report of nothing yet for a key.
    pub fn new(source: String, fingerprint: String) -> Self {
        Self {
            source,
            fingerprint,
            from_agent: false,
            certificate: None,
            refused_with: Vec::new(),
            accepted_with: None,
            skipped: None,
        }
    }

    fn algorithm_name(&self, alg: SignatureAlgorithm) -> &'static str {
        if self.certificate.is_some() {
            crate::cert::certificate_algorithm_name(alg)
        } else {
            alg.name()
        }
    }

    fn tried(&self) -> bool {
        !self.refused_with.is_empty() || self.accepted_with.is_some()
    }

    /// The key was fit to offer but its signer failed (a wrong passphrase, an agent error).
    fn could_not_sign(&self) -> bool {
        matches!(
            self.skipped,
            Some(
                SkipReason::SignFailed(_)
                    | SkipReason::SignerFailed(_)
                    | SkipReason::BadSignature(_)
            )
        )
    }
}

impl fmt::Display for KeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.source, self.fingerprint)?;
        if self.from_agent {
            f.write_str(", in the agent")?;
        }
        if let Some(cert) = &self.certificate {
            write!(f, ", {cert}")?;
        }
        f.write_str(")")?;
        for (i, alg) in self.refused_with.iter().enumerate() {
            f.write_str(if i == 0 { " with " } else { ", " })?;
            f.write_str(self.algorithm_name(*alg))?;
        }
        if let Some(alg) = self.accepted_with {
            let sep = if self.refused_with.is_empty() {
                ""
            } else {
                ","
            };
            write!(
                f,
                "{sep} accepted with {} as one of several required steps",
                self.algorithm_name(alg)
            )?;
        }
        match &self.skipped {
            Some(reason) if !self.tried() => write!(f, " {reason}"),
            Some(reason) => write!(f, ", then {reason}"),
            None => Ok(()),
        }
    }
}

/// What happened to one method other than publickey (password, keyboard-interactive).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MethodReport {
    /// The method name.
    pub method: &'static str,
    /// How many attempts the server refused.
    pub refused: u32,
    /// Whether the server accepted it as one step of several (partial success).
    pub accepted: bool,
    /// Why it was not tried (again): turned off, or nothing to answer with.
    pub skipped: Option<String>,
}

impl MethodReport {
    /// A report of nothing yet for a method.
    pub fn new(method: &'static str) -> Self {
        Self {
            method,
            refused: 0,
            accepted: false,
            skipped: None,
        }
    }
}

impl fmt::Display for MethodReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method)?;
        match self.refused {
            0 => {}
            1 => f.write_str(" refused once")?,
            n => write!(f, " refused {n} times")?,
        }
        if self.accepted {
            let sep = if self.refused > 0 { "," } else { "" };
            write!(f, "{sep} accepted as one of several required steps")?;
        }
        match &self.skipped {
            Some(why) if self.refused == 0 && !self.accepted => write!(f, " not tried: {why}"),
            Some(why) => write!(f, ", then not tried again: {why}"),
            None => Ok(()),
        }
    }
}

/// The methods this client can use, for messages.
const CLIENT_METHODS: [&str; 3] = ["publickey", "keyboard-interactive", "password"];

/// Everything tried before the server refused the user.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusal {
    /// The user name authentication was for.
    pub user: String,
    /// One entry per identity, in the order given.
    pub keys: Vec<KeyReport>,
    /// Password and keyboard-interactive, when the server allowed them.
    pub methods: Vec<MethodReport>,
    /// The methods the server's last USERAUTH_FAILURE allowed (sanitized), if one came.
    pub server_allows: Option<String>,
    /// Keys the application could not use at all (a key file with a wrong passphrase, an
    /// unreadable or unprotected file), each with why; filled in by the application, which
    /// is the one that read them.
    pub unusable: Vec<String>,
}

impl Refusal {
    /// A refusal of `user` with these reports.
    pub fn new(user: String, keys: Vec<KeyReport>, server_allows: Option<String>) -> Self {
        Self {
            user,
            keys,
            methods: Vec::new(),
            server_allows,
            unusable: Vec::new(),
        }
    }

    fn server_allows(&self, method: &str) -> bool {
        self.server_allows
            .as_deref()
            .is_none_or(|m| m.split(',').any(|n| n == method))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = &self.user;
        write!(f, "authentication as {user:?} failed: ")?;
        let accepted_part = self.keys.iter().any(|k| k.accepted_with.is_some())
            || self.methods.iter().any(|m| m.accepted);
        let offered_any = self.keys.iter().any(KeyReport::tried);
        if accepted_part {
            f.write_str(
                "the server accepted part of the authentication but requires more than was \
                 accepted",
            )?;
        } else if self.keys.is_empty() && !self.unusable.is_empty() {
            f.write_str("no key could be used")?;
        } else if self.keys.is_empty() {
            f.write_str("no private key was given to try")?;
        } else if !offered_any {
            f.write_str("no key could be offered")?;
        } else {
            f.write_str("the server refused every key")?;
        }
        if !self.keys.is_empty() {
            f.write_str(": ")?;
            write_list(f, &self.keys)?;
        }
        if !self.unusable.is_empty() {
            f.write_str(if self.keys.is_empty() { ": " } else { "; " })?;
            write_list(f, &self.unusable)?;
        }
        if !self.methods.is_empty() {
            let first = self.keys.is_empty() && self.unusable.is_empty();
            f.write_str(if first { ": " } else { "; " })?;
            write_list(f, &self.methods)?;
        }
        match &self.server_allows {
            Some(m) => write!(f, ". The server allows: {m}")?,
            None => f.write_str(". The server did not say which methods it allows")?,
        }
        let usable = CLIENT_METHODS.iter().any(|m| self.server_allows(m));
        if !usable {
            f.write_str(
                ", none of which this client supports (publickey, keyboard-interactive and \
                 password)",
            )
        } else if !self.server_allows("publickey") {
            f.write_str(", but not publickey for this user")
        } else if self.keys.is_empty() && !self.unusable.is_empty() {
            f.write_str(". Fix what is named above for each key, or give another key")
        } else if self.keys.is_empty() {
            f.write_str(". Give the private key whose public key the server has authorized")
        } else if !offered_any && !accepted_part && self.keys.iter().any(KeyReport::could_not_sign)
        {
            f.write_str(". No key could sign: fix what is named above for each key")
        } else if !offered_any && !accepted_part {
            f.write_str(
                ". Use a key the server accepts: an Ed25519 key, or an RSA key if the server \
                 lists rsa-sha2-256 or rsa-sha2-512",
            )
        } else if accepted_part {
            Ok(())
        } else {
            write!(
                f,
                ". Check that the public key is in ~/.ssh/authorized_keys of user {user:?} \
                 on the server (or that its certificate's authority is in TrustedUserCAKeys)"
            )
        }
    }
}

fn write_list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, k) in items.iter().enumerate() {
        if i > 0 {
            f.write_str("; ")?;
        }
        write!(f, "{k}")?;
    }
    Ok(())
}

fn write_algorithms(f: &mut fmt::Formatter<'_>, algs: &[SignatureAlgorithm]) -> fmt::Result {
    for (i, a) in algs.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        f.write_str(a.name())?;
    }
    Ok(())
}

/// Why user authentication failed. Once a [`crate::ClientAuth`] returns one, it returns the
/// same error for every later input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// The server broke the protocol: the text says which message and what was wrong.
    Protocol(String),
    /// The server refused every key and method (details in the [`Refusal`]).
    Refused(Refusal),
    /// The server wants the password changed before it lets the user in.
    PasswordChangeRequired {
        /// The user name authentication was for.
        user: String,
        /// The server's explanation (sanitized).
        prompt: String,
    },
}

impl AuthError {
    /// The reason code to send in SSH_MSG_DISCONNECT when giving up because of this error.
    pub fn disconnect_reason(&self) -> DisconnectReason {
        match self {
            Self::Protocol(_) => DisconnectReason::PROTOCOL_ERROR,
            Self::Refused(_) | Self::PasswordChangeRequired { .. } => {
                DisconnectReason::NO_MORE_AUTH_METHODS_AVAILABLE
            }
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol(what) => write!(
                f,
                "the server broke the authentication protocol: {what}; this is a server bug \
                 or an attack, report it to the server's administrator"
            ),
            Self::Refused(r) => write!(f, "{r}"),
            Self::PasswordChangeRequired { user, prompt } => {
                write!(
                    f,
                    "the password of user {user:?} has expired and the server wants it changed"
                )?;
                if !prompt.is_empty() {
                    write!(f, " ({prompt:?})")?;
                }
                f.write_str(
                    "; this client does not change passwords: log in once with ssh to set a \
                     new one, or ask the server's administrator",
                )
            }
        }
    }
}

impl std::error::Error for AuthError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(source: &str, refused: &[SignatureAlgorithm], skip: Option<SkipReason>) -> KeyReport {
        let mut r = KeyReport::new(source.into(), "SHA256:abc".into());
        r.refused_with = refused.to_vec();
        r.skipped = skip;
        r
    }

    #[test]
    fn refusal_lists_keys_algorithms_and_methods() {
        let r = Refusal {
            user: "deploy".into(),
            keys: vec![
                report(
                    "/k/id_rsa",
                    &[SignatureAlgorithm::RsaSha512, SignatureAlgorithm::RsaSha256],
                    None,
                ),
                report(
                    "/k/id_ed25519",
                    &[],
                    Some(SkipReason::NoAllowedAlgorithm {
                        key_can_sign: vec![SignatureAlgorithm::Ed25519],
                    }),
                ),
            ],
            methods: Vec::new(),
            server_allows: Some("publickey,password".into()),
            unusable: Vec::new(),
        };
        assert_eq!(
            r.to_string(),
            "authentication as \"deploy\" failed: the server refused every key: /k/id_rsa \
             (SHA256:abc) with rsa-sha2-512, rsa-sha2-256; /k/id_ed25519 (SHA256:abc) skipped: \
             the server's server-sig-algs lists none of ssh-ed25519. The server allows: \
             publickey,password. Check that the public key is in ~/.ssh/authorized_keys of \
             user \"deploy\" on the server (or that its certificate's authority is in \
             TrustedUserCAKeys)"
        );
    }

    #[test]
    fn refusal_names_agent_keys_certificates_and_other_methods() {
        let mut agent = report("agent: me@laptop", &[SignatureAlgorithm::Ed25519], None);
        agent.from_agent = true;
        let mut cert = report("/k/id-cert.pub", &[SignatureAlgorithm::RsaSha512], None);
        cert.certificate = Some("certificate ID \"ci\" serial 3 valid forever".into());
        let mut expired = report(
            "/k/old-cert.pub",
            &[],
            Some(SkipReason::CertificateExpired {
                valid_before: 1_609_459_200,
            }),
        );
        expired.certificate = Some("certificate ID \"old\" serial 1".into());
        let mut password = MethodReport::new("password");
        password.refused = 2;
        password.skipped = Some("the password file was already tried".into());
        let mut kbd = MethodReport::new("keyboard-interactive");
        kbd.skipped = Some("KbdInteractiveAuthentication is off".into());
        let r = Refusal {
            user: "u".into(),
            keys: vec![agent, cert, expired],
            methods: vec![kbd, password],
            server_allows: Some("publickey,password,keyboard-interactive".into()),
            unusable: Vec::new(),
        };
        assert_eq!(
            r.to_string(),
            "authentication as \"u\" failed: the server refused every key: agent: me@laptop \
             (SHA256:abc, in the agent) with ssh-ed25519; /k/id-cert.pub (SHA256:abc, \
             certificate ID \"ci\" serial 3 valid forever) with \
             rsa-sha2-512-cert-v01@openssh.com; /k/old-cert.pub (SHA256:abc, certificate ID \
             \"old\" serial 1) skipped: the certificate expired at 2021-01-01T00:00:00Z; have \
             it signed again; keyboard-interactive not tried: KbdInteractiveAuthentication is \
             off; password refused 2 times, then not tried again: the password file was \
             already tried. The server allows: publickey,password,keyboard-interactive. Check \
             that the public key is in ~/.ssh/authorized_keys of user \"u\" on the server (or \
             that its certificate's authority is in TrustedUserCAKeys)"
        );
    }

    #[test]
    fn refusal_after_partial_success_says_more_was_required() {
        let mut key = report("/k/id", &[], None);
        key.accepted_with = Some(SignatureAlgorithm::Ed25519);
        let mut password = MethodReport::new("password");
        password.skipped = Some("no terminal to ask on".into());
        let r = Refusal {
            user: "u".into(),
            keys: vec![key],
            methods: vec![password],
            server_allows: Some("password".into()),
            unusable: Vec::new(),
        };
        let text = r.to_string();
        assert!(
            text.starts_with(
                "authentication as \"u\" failed: the server accepted part of the \
                 authentication but requires more than was accepted: /k/id (SHA256:abc) \
                 accepted with ssh-ed25519 as one of several required steps; password not \
                 tried: no terminal to ask on. The server allows: password"
            ),
            "{text}"
        );
    }

    #[test]
    fn refusal_names_key_files_that_could_not_be_used_and_keys_that_could_not_sign() {
        let mut r = Refusal::new("u".into(), Vec::new(), Some("publickey".into()));
        r.unusable = vec!["/k/id_locked: wrong passphrase (from PassphraseFile /p)".into()];
        assert_eq!(
            r.to_string(),
            "authentication as \"u\" failed: no key could be used: /k/id_locked: wrong \
             passphrase (from PassphraseFile /p). The server allows: publickey. Fix what is \
             named above for each key, or give another key"
        );
        let locked = report(
            "/k/id_ed25519",
            &[],
            Some(SkipReason::SignerFailed(
                "wrong passphrase for /k/id_ed25519".into(),
            )),
        );
        let r = Refusal::new("u".into(), vec![locked], Some("publickey".into()));
        let text = r.to_string();
        assert!(
            text.ends_with("No key could sign: fix what is named above for each key"),
            "{text}"
        );
        assert!(
            text.contains("wrong passphrase for /k/id_ed25519"),
            "{text}"
        );
    }

    #[test]
    fn refusal_without_publickey_says_the_method_is_missing() {
        let r = Refusal {
            user: "u".into(),
            keys: vec![report("a", &[SignatureAlgorithm::Ed25519], None)],
            methods: Vec::new(),
            server_allows: Some("password".into()),
            unusable: Vec::new(),
        };
        let text = r.to_string();
        assert!(
            text.ends_with("The server allows: password, but not publickey for this user"),
            "{text}"
        );
        let r = Refusal {
            server_allows: Some("gssapi-with-mic,hostbased".into()),
            ..r
        };
        let text = r.to_string();
        assert!(
            text.ends_with(
                "The server allows: gssapi-with-mic,hostbased, none of which this client \
                 supports (publickey, keyboard-interactive and password)"
            ),
            "{text}"
        );
    }

    #[test]
    fn password_change_requests_say_what_to_do() {
        let e = AuthError::PasswordChangeRequired {
            user: "u".into(),
            prompt: "Password expired".into(),
        };
        assert_eq!(
            e.to_string(),
            "the password of user \"u\" has expired and the server wants it changed \
             (\"Password expired\"); this client does not change passwords: log in once with \
             ssh to set a new one, or ask the server's administrator"
        );
        assert_eq!(
            e.disconnect_reason(),
            DisconnectReason::NO_MORE_AUTH_METHODS_AVAILABLE
        );
    }

    #[test]
    fn key_file_messages_say_what_to_do() {
        let text = KeyFileError::WrongPassphrase.to_string();
        assert!(text.starts_with("wrong passphrase"), "{text}");
        let text = KeyFileError::InsecurePermissions {
            path: "/k/id".into(),
            mode: 0o644,
        }
        .to_string();
        assert!(text.contains("permissions 0644 are too open"), "{text}");
        assert!(text.contains("chmod 600 /k/id"), "{text}");
        assert!(
            KeyFileError::PassphraseRequired
                .to_string()
                .contains("passphrase")
        );
    }

    #[test]
    fn disconnect_reasons() {
        assert_eq!(
            AuthError::Protocol("x".into()).disconnect_reason(),
            DisconnectReason::PROTOCOL_ERROR
        );
        let r = AuthError::Refused(Refusal::new("u".into(), Vec::new(), None));
        assert_eq!(
            r.disconnect_reason(),
            DisconnectReason::NO_MORE_AUTH_METHODS_AVAILABLE
        );
    }
}
