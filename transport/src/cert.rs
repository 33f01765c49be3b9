//! OpenSSH certificates (OpenSSH's PROTOCOL.certkeys): a public key signed by a certificate
//! authority. User certificates are offered by `ssh-auth` (the server trusts the authority
//! through `TrustedUserCAKeys`); host certificates arrive here as a server's K_S when a
//! `*-cert-v01@openssh.com` host key algorithm was negotiated, and the application decides
//! whether it trusts their authority (known_hosts `@cert-authority`).
//!
//! ```text
//!  blob ──> Certificate::decode: every field read and checked, the embedded key rebuilt as a
//!       plain key blob, the authority's signature verified, trailing bytes refused
//!       ├─> from_blob / from_openssh_line: user certificates only (what ssh-auth offers)
//!       └─> the transport: a host certificate's plain key verifies the exchange hash
//! ```
//!
//! The authority's signature over the certificate is checked with the authority's key the
//! certificate carries, as OpenSSH checks it whenever it reads one, so a damaged or altered
//! certificate is refused with its reason here. Whether to trust that authority is the
//! verifier's decision: the server's for user certificates, the client's for host ones. An
//! authority's key this crate cannot use (a security key, DSA, RSA under 2048 bits) leaves the
//! signature unchecked: [`Certificate::ca_signature_algorithm`] is then `None`, which a user
//! certificate may live with (the server checks it) and a host certificate may not.

use core::fmt;

use crate::hostkey::{KeyType, PublicKey, SignatureAlgorithm, blob_key_type, fingerprint_sha256};
use crate::text::sanitize;
use crate::wire::{DecodeError, Reader, Writer as _};

/// Larger certificate blobs are refused before parsing: one for an RSA-16384 key signed by an
/// RSA-16384 authority, with a long principal list, is about 6 KiB.
pub const MAX_CERTIFICATE_LEN: usize = 64 * 1024;
/// More principals than this are refused (OpenSSH's own limit is 256).
pub const MAX_PRINCIPALS: usize = 256;
/// More critical options or extensions than this are refused.
const MAX_OPTIONS: usize = 64;
/// Text from a certificate is cut to this many characters when shown.
const MAX_SHOWN_CHARS: usize = 128;

/// `SSH_CERT_TYPE_USER`.
pub const CERT_TYPE_USER: u32 = 1;
/// `SSH_CERT_TYPE_HOST`.
pub const CERT_TYPE_HOST: u32 = 2;

/// The name of the certificate key type for a plain key type, as at the start of the blob.
pub fn certificate_type_name(key_type: KeyType) -> &'static str {
    match key_type {
        KeyType::Rsa => "ssh-rsa-cert-v01@openssh.com",
        KeyType::EcdsaP256 => "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        KeyType::EcdsaP384 => "ecdsa-sha2-nistp384-cert-v01@openssh.com",
        KeyType::EcdsaP521 => "ecdsa-sha2-nistp521-cert-v01@openssh.com",
        // KeyType is non-exhaustive; Ed25519 and anything added later.
        _ => "ssh-ed25519-cert-v01@openssh.com",
    }
}

/// The public key algorithm name a signature algorithm has when the key is a certificate,
/// as it goes in a publickey request: `rsa-sha2-512-cert-v01@openssh.com` and so on.
pub fn certificate_algorithm_name(alg: SignatureAlgorithm) -> &'static str {
    match alg {
        SignatureAlgorithm::RsaSha512 => "rsa-sha2-512-cert-v01@openssh.com",
        SignatureAlgorithm::RsaSha256 => "rsa-sha2-256-cert-v01@openssh.com",
        SignatureAlgorithm::RsaSha1 => "ssh-rsa-cert-v01@openssh.com",
        SignatureAlgorithm::EcdsaP256 => "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        SignatureAlgorithm::EcdsaP384 => "ecdsa-sha2-nistp384-cert-v01@openssh.com",
        SignatureAlgorithm::EcdsaP521 => "ecdsa-sha2-nistp521-cert-v01@openssh.com",
        _ => "ssh-ed25519-cert-v01@openssh.com",
    }
}

/// The signature algorithm behind a certificate algorithm name, the inverse of
/// [`certificate_algorithm_name`].
pub fn certificate_algorithm_from_name(name: &str) -> Option<SignatureAlgorithm> {
    SignatureAlgorithm::ALL
        .iter()
        .copied()
        .find(|a| certificate_algorithm_name(*a) == name)
}

fn key_type_of_certificate_name(name: &str) -> Option<KeyType> {
    [
        KeyType::Ed25519,
        KeyType::Rsa,
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::EcdsaP521,
    ]
    .into_iter()
    .find(|t| certificate_type_name(*t) == name)
}

/// Why a certificate cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertError {
    /// The blob or file is not a well-formed certificate.
    Malformed(String),
    /// A certificate of a key type this client cannot sign with (`ssh-dss`, security keys).
    UnsupportedType(String),
    /// A host certificate where a user certificate is needed.
    NotAUserCertificate {
        /// The type field.
        cert_type: u32,
    },
    /// The authority's signature over the certificate does not verify with the authority's
    /// key the certificate carries.
    BadSignature {
        /// The authority's key's fingerprint.
        ca: String,
        /// What was wrong with the signature.
        why: String,
    },
    /// The certificate is for another key than the private key it was paired with.
    KeyMismatch {
        /// The certificate's key's fingerprint.
        certificate_key: String,
        /// The private key's fingerprint.
        private_key: String,
    },
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(what) => write!(
                f,
                "not a usable OpenSSH certificate: {what}; check that the file is the whole \
                 -cert.pub file ssh-keygen -s wrote"
            ),
            Self::UnsupportedType(name) => write!(
                f,
                "certificates of type {name} are not supported; certify an Ed25519, ECDSA \
                 or RSA key instead"
            ),
            Self::NotAUserCertificate { cert_type } => write!(
                f,
                "this is not a user certificate (its type is {cert_type}; {CERT_TYPE_HOST} \
                 means a host certificate); sign the user key with ssh-keygen -s without -h"
            ),
            Self::BadSignature { ca, why } => write!(
                f,
                "its certificate authority's signature (by {ca}) is not valid: {why}; the \
                 certificate was damaged or altered after it was issued, so the server would \
                 refuse it: have it issued again (ssh-keygen -s) and replace the file"
            ),
            Self::KeyMismatch {
                certificate_key,
                private_key,
            } => write!(
                f,
                "the certificate is for key {certificate_key}, not for the private key \
                 {private_key}; give the certificate that was issued for this key"
            ),
        }
    }
}

impl std::error::Error for CertError {}

fn malformed(field: &'static str) -> impl Fn(DecodeError) -> CertError {
    move |e| CertError::Malformed(format!("{field}: {e}"))
}

/// Whether a certificate is valid at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// `valid after <= now < valid before`.
    Valid,
    /// `now < valid after`.
    NotYetValid,
    /// `valid before <= now`.
    Expired,
}

/// A parsed OpenSSH certificate (user or host).
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    blob: Vec<u8>,
    key_type: KeyType,
    public: PublicKey,
    cert_type: u32,
    ca_key: Vec<u8>,
    /// The algorithm of the authority's signature, which verified; `None` when the
    /// authority's key is one this crate cannot verify with.
    ca_signature: Option<SignatureAlgorithm>,
    serial: u64,
    key_id: String,
    /// The key id as the authority wrote it, for revocation lists that name it.
    key_id_bytes: Vec<u8>,
    principals: Vec<String>,
    valid_after: u64,
    valid_before: u64,
    critical_options: Vec<String>,
    extensions: Vec<String>,
    ca_fingerprint: String,
    comment: String,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("type", &certificate_type_name(self.key_type))
            .field("cert_type", &self.cert_type)
            .field("key", &self.public.fingerprint())
            .field("key_id", &self.key_id)
            .field("serial", &self.serial)
            .field("principals", &self.principals)
            .field("valid_after", &self.valid_after)
            .field("valid_before", &self.valid_before)
            .field("ca", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Parses a `-cert.pub` file: `type base64 [comment]` on one line (blank lines and `#`
    /// comments around it are ignored). The type word must match the blob's.
    pub fn from_openssh_line(text: &str) -> Result<Self, CertError> {
        if text.len() > MAX_CERTIFICATE_LEN * 2 {
            return Err(CertError::Malformed(format!(
                "the file is {} bytes, more than a certificate can be",
                text.len()
            )));
        }
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| CertError::Malformed("the file is empty".into()))?;
        let mut words = line.split_whitespace();
        let type_word = words.next().unwrap_or_default();
        let encoded = words
            .next()
            .ok_or_else(|| CertError::Malformed("no base64 blob after the key type".into()))?;
        let comment: String = words.collect::<Vec<_>>().join(" ");
        use base64::Engine as _;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| CertError::Malformed("the blob is not valid base64".into()))?;
        let mut cert = Self::from_blob(&blob)?;
        if type_word != certificate_type_name(cert.key_type) {
            return Err(CertError::Malformed(format!(
                "the line says {:?} but the blob is a {}",
                sanitize(type_word.as_bytes(), false, MAX_SHOWN_CHARS),
                certificate_type_name(cert.key_type)
            )));
        }
        cert.comment = sanitize(comment.as_bytes(), false, MAX_SHOWN_CHARS);
        Ok(cert)
    }

    /// Parses a user certificate blob, as sent on the wire and stored (base64) in `-cert.pub`
    /// files. Every field is read and checked; trailing bytes are refused; a certificate of
    /// another type than user is refused.
    pub fn from_blob(blob: &[u8]) -> Result<Self, CertError> {
        Self::parse(blob, Some(CERT_TYPE_USER))
    }

    /// Parses a certificate blob of any type (user, host, or a type OpenSSH does not
    /// define): what a server's K_S is when a certificate host key algorithm was negotiated.
    /// The caller checks [`Self::cert_type`].
    pub fn decode(blob: &[u8]) -> Result<Self, CertError> {
        Self::parse(blob, None)
    }

    fn parse(blob: &[u8], want_type: Option<u32>) -> Result<Self, CertError> {
        if blob.len() > MAX_CERTIFICATE_LEN {
            return Err(CertError::Malformed(format!(
                "{} bytes, more than the {MAX_CERTIFICATE_LEN} allowed",
                blob.len()
            )));
        }
        let mut r = Reader::new(blob);
        let name = r.utf8().map_err(malformed("key type"))?;
        let key_type = key_type_of_certificate_name(name).ok_or_else(|| {
            if name.ends_with("-cert-v01@openssh.com") {
                CertError::UnsupportedType(sanitize(name.as_bytes(), false, MAX_SHOWN_CHARS))
            } else {
                CertError::Malformed(format!(
                    "{:?} is not a certificate type",
                    sanitize(name.as_bytes(), false, MAX_SHOWN_CHARS)
                ))
            }
        })?;
        r.string().map_err(malformed("nonce"))?;
        // The key's own fields, rebuilt into the plain key blob they stand for, which
        // the transport's parser then checks (sizes, curve names, point lengths).
        let mut plain = Vec::new();
        plain.put_str(key_type.name());
        let fields = match key_type {
            KeyType::Rsa => 2, // e, n
            KeyType::Ed25519 => 1,
            _ => 2, // curve, Q
        };
        for _ in 0..fields {
            let field = r.string().map_err(malformed("public key"))?;
            plain.put_string(field);
        }
        let public = PublicKey::from_blob(&plain)
            .map_err(|e| CertError::Malformed(format!("the certified key: {e}")))?;
        let serial = r.u64().map_err(malformed("serial"))?;
        let cert_type = r.u32().map_err(malformed("type"))?;
        let key_id = r.string().map_err(malformed("key id"))?;
        let principals = read_principals(r.string().map_err(malformed("valid principals"))?)?;
        let valid_after = r.u64().map_err(malformed("valid after"))?;
        let valid_before = r.u64().map_err(malformed("valid before"))?;
        let critical_options = read_options(
            r.string().map_err(malformed("critical options"))?,
            "critical options",
        )?;
        let extensions = read_options(r.string().map_err(malformed("extensions"))?, "extensions")?;
        r.string().map_err(malformed("reserved"))?;
        let ca_key = r.string().map_err(malformed("signature key"))?;
        // The authority signs everything before its signature, its own key included.
        let signed_len = blob.len() - r.remaining();
        if ca_key.is_empty() {
            return Err(CertError::Malformed("the signature key is empty".into()));
        }
        let ca_type = blob_key_type(ca_key).map_err(malformed("signature key"))?;
        if ca_type.ends_with("-cert-v01@openssh.com") {
            return Err(CertError::Malformed(
                "the signature key is itself a certificate, which OpenSSH does not allow".into(),
            ));
        }
        let signature = r.string().map_err(malformed("signature"))?;
        if signature.is_empty() {
            return Err(CertError::Malformed("the signature is empty".into()));
        }
        r.finish().map_err(malformed("certificate"))?;
        if want_type == Some(CERT_TYPE_USER) && cert_type != CERT_TYPE_USER {
            return Err(CertError::NotAUserCertificate { cert_type });
        }
        let signed = blob.get(..signed_len).unwrap_or_default();
        let ca_signature = verify_authority_signature(ca_key, signed, signature)?;
        Ok(Self {
            blob: blob.to_vec(),
            key_type,
            public,
            cert_type,
            ca_key: ca_key.to_vec(),
            ca_signature,
            serial,
            key_id: sanitize(key_id, false, MAX_SHOWN_CHARS),
            key_id_bytes: key_id.to_vec(),
            principals,
            valid_after,
            valid_before,
            critical_options,
            extensions,
            ca_fingerprint: fingerprint_sha256(ca_key),
            comment: String::new(),
        })
    }

    /// The whole certificate blob: what a publickey request carries as the public key.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The certified (plain) public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The certified key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The certificate type name, e.g. `ssh-ed25519-cert-v01@openssh.com`.
    pub fn type_name(&self) -> &'static str {
        certificate_type_name(self.key_type)
    }

    /// The certificate type: [`CERT_TYPE_USER`], [`CERT_TYPE_HOST`], or a value OpenSSH does
    /// not define.
    pub fn cert_type(&self) -> u32 {
        self.cert_type
    }

    /// The authority's public key blob (the certificate's signature key).
    pub fn ca_key(&self) -> &[u8] {
        &self.ca_key
    }

    /// The algorithm of the authority's signature, which verified. `None` when the
    /// authority's key is one this crate cannot verify with (a security key, DSA, RSA under
    /// 2048 bits): the signature is then unchecked, and a host certificate must not be
    /// trusted.
    pub fn ca_signature_algorithm(&self) -> Option<SignatureAlgorithm> {
        self.ca_signature
    }

    /// The serial number the authority gave it.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The key id the authority gave it (sanitized): what sshd logs.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key id exactly as the authority wrote it (unsanitized, untruncated): what a key
    /// revocation list compares. Never print it; print [`Self::key_id`].
    pub fn key_id_bytes(&self) -> &[u8] {
        &self.key_id_bytes
    }

    /// The user names (user certificates) or host names (host certificates) it is valid
    /// for, sanitized. Empty means any user; a host certificate must name its hosts.
    pub fn principals(&self) -> &[String] {
        &self.principals
    }

    /// Whether it names `user` among its principals, or names none (valid for any user).
    pub fn allows_principal(&self, user: &str) -> bool {
        self.principals.is_empty() || self.principals.iter().any(|p| p == user)
    }

    /// Start of validity, seconds since the Unix epoch.
    pub fn valid_after(&self) -> u64 {
        self.valid_after
    }

    /// End of validity (exclusive), seconds since the Unix epoch; `u64::MAX` for forever.
    pub fn valid_before(&self) -> u64 {
        self.valid_before
    }

    /// Whether it is valid at `now` (seconds since the Unix epoch).
    pub fn validity_at(&self, now: u64) -> Validity {
        if now < self.valid_after {
            Validity::NotYetValid
        } else if now >= self.valid_before {
            Validity::Expired
        } else {
            Validity::Valid
        }
    }

    /// The names of its critical options (`force-command`, `source-address`, ...).
    pub fn critical_options(&self) -> &[String] {
        &self.critical_options
    }

    /// The names of its extensions (`permit-port-forwarding`, ...).
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// Whether sshd will allow port forwarding to a session authenticated with it: only
    /// with the `permit-port-forwarding` extension (which `ssh-keygen -s` adds by default).
    pub fn permits_port_forwarding(&self) -> bool {
        self.extensions
            .iter()
            .any(|e| e == "permit-port-forwarding")
    }

    /// The `SHA256:` fingerprint of the authority's key that signed it.
    pub fn ca_fingerprint(&self) -> &str {
        &self.ca_fingerprint
    }

    /// The comment from the `-cert.pub` line, if it was read from one (sanitized).
    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// A short description for messages: key id, serial and validity.
    pub fn describe(&self) -> String {
        format!(
            "certificate ID {:?} serial {} valid {}",
            self.key_id,
            self.serial,
            describe_validity(self.valid_after, self.valid_before)
        )
    }
}

/// `from 2024-05-01T00:00:00Z to 2025-05-01T00:00:00Z`, `forever`, ...
pub fn describe_validity(after: u64, before: u64) -> String {
    match (after, before) {
        (0, u64::MAX) => "forever".into(),
        (0, b) => format!("before {}", utc(b)),
        (a, u64::MAX) => format!("from {}", utc(a)),
        (a, b) => format!("from {} to {}", utc(a), utc(b)),
    }
}

/// Seconds since the Unix epoch as an ISO 8601 UTC time, by the proleptic Gregorian
/// calendar (days converted to a civil date through 400-year eras).
pub fn utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Checks the authority's `signature` over `signed` with its key `ca_key`, accepting any
/// signature algorithm of the key's type (the verifier's `CASignatureAlgorithms` decides which
/// it takes), as OpenSSH does when it reads a certificate. Returns the algorithm that
/// verified, or `None` for an authority's key this crate cannot verify with.
fn verify_authority_signature(
    ca_key: &[u8],
    signed: &[u8],
    signature: &[u8],
) -> Result<Option<SignatureAlgorithm>, CertError> {
    use crate::hostkey::KeyError;
    let ca = match PublicKey::from_blob(ca_key) {
        Ok(ca) => ca,
        // An authority's key OpenSSH takes but this client cannot verify with: the server
        // decides, as it did before signatures were checked here.
        Err(_) if unverifiable_authority(ca_key) => return Ok(None),
        Err(KeyError::UnsupportedKeyType(name)) => {
            return Err(CertError::Malformed(format!(
                "the signature key is of unknown type {:?}",
                sanitize(name.as_bytes(), false, MAX_SHOWN_CHARS)
            )));
        }
        Err(e) => return Err(CertError::Malformed(format!("signature key: {e}"))),
    };
    let bad = |why: String| CertError::BadSignature {
        ca: format!("{} key {}", ca.key_type().name(), ca.fingerprint()),
        why,
    };
    let name =
        blob_key_type(signature).map_err(|e| bad(format!("the signature does not decode: {e}")))?;
    let algorithm = SignatureAlgorithm::from_name(name)
        .filter(|a| a.key_type() == ca.key_type())
        .ok_or_else(|| {
            bad(format!(
                "a {} key cannot make a {:?} signature",
                ca.key_type().name(),
                sanitize(name.as_bytes(), false, MAX_SHOWN_CHARS)
            ))
        })?;
    ca.verify(algorithm, signed, signature)
        .map_err(|e| {
            bad(match e {
                KeyError::BadSignature => "it does not match the certificate's contents".to_owned(),
                e => e.to_string(),
            })
        })
        .map(|()| Some(algorithm))
}

/// Whether `ca_key` is an authority's key OpenSSH verifies with and this client cannot: a
/// security key, DSA, or RSA of 1024 to 2047 bits (OpenSSH's floor is 1024, this client's,
/// for every RSA key it verifies with, 2048).
fn unverifiable_authority(ca_key: &[u8]) -> bool {
    let mut r = Reader::new(ca_key);
    match r.utf8() {
        Ok("sk-ssh-ed25519@openssh.com" | "sk-ecdsa-sha2-nistp256@openssh.com" | "ssh-dss") => true,
        Ok("ssh-rsa") => {
            let modulus = r.mpint_positive().and_then(|_e| r.mpint_positive());
            let bits = modulus.map_or(0, |n| {
                (n.len() * 8).saturating_sub(n.first().map_or(0, |b| b.leading_zeros() as usize))
            });
            r.finish().is_ok() && (1024..2048).contains(&bits)
        }
        _ => false,
    }
}

fn read_principals(raw: &[u8]) -> Result<Vec<String>, CertError> {
    let mut r = Reader::new(raw);
    let mut out = Vec::new();
    while !r.is_empty() {
        if out.len() >= MAX_PRINCIPALS {
            return Err(CertError::Malformed(format!(
                "more than {MAX_PRINCIPALS} principals"
            )));
        }
        let p = r.string().map_err(malformed("valid principals"))?;
        out.push(sanitize(p, false, MAX_SHOWN_CHARS));
    }
    Ok(out)
}

/// Critical options and extensions: `string name, string data` pairs, names in strictly
/// increasing order (so each appears once).
fn read_options(raw: &[u8], what: &'static str) -> Result<Vec<String>, CertError> {
    let mut r = Reader::new(raw);
    let mut names: Vec<String> = Vec::new();
    let mut last: Option<&[u8]> = None;
    while !r.is_empty() {
        if names.len() >= MAX_OPTIONS {
            return Err(CertError::Malformed(format!(
                "more than {MAX_OPTIONS} {what}"
            )));
        }
        let name = r.string().map_err(malformed(what))?;
        r.string().map_err(malformed(what))?;
        if last.is_some_and(|l| l >= name) {
            return Err(CertError::Malformed(format!(
                "{what} are not in order or repeat a name"
            )));
        }
        last = Some(name);
        names.push(sanitize(name, false, MAX_SHOWN_CHARS));
    }
    Ok(names)
}

#[cfg(test)]
mod tests;
