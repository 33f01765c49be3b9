//! Public keys as SSH encodes them (RFC 4253 6.6, RFC 5656, RFC 8332, RFC 8709), fingerprints,
//! and signature verification. Used for server host keys here and for user keys by `ssh-auth`.
//!
//! A signature is only checked with the algorithm the caller expected: the key blob's type,
//! the negotiated algorithm and the name inside the signature must all agree, so a server
//! cannot steer an `rsa-sha2-512` negotiation into a SHA-1 signature.

use core::fmt;

use base64::Engine as _;
use ring::signature;

use crate::wire::{DecodeError, Reader, Writer};

/// Key types we can parse, by their blob name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyType {
    /// `ssh-ed25519`
    Ed25519,
    /// `ssh-rsa` (the key; signatures may be rsa-sha2-256/512 or ssh-rsa)
    Rsa,
    /// `ecdsa-sha2-nistp256`
    EcdsaP256,
    /// `ecdsa-sha2-nistp384`
    EcdsaP384,
    /// `ecdsa-sha2-nistp521`
    EcdsaP521,
}

impl KeyType {
    /// The name in a key blob and in known_hosts.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "ssh-ed25519",
            Self::Rsa => "ssh-rsa",
            Self::EcdsaP256 => "ecdsa-sha2-nistp256",
            Self::EcdsaP384 => "ecdsa-sha2-nistp384",
            Self::EcdsaP521 => "ecdsa-sha2-nistp521",
        }
    }

    /// Looks a blob name up.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "ssh-ed25519" => Self::Ed25519,
            "ssh-rsa" => Self::Rsa,
            "ecdsa-sha2-nistp256" => Self::EcdsaP256,
            "ecdsa-sha2-nistp384" => Self::EcdsaP384,
            "ecdsa-sha2-nistp521" => Self::EcdsaP521,
            _ => return None,
        })
    }
}

/// A signature algorithm (the name inside a signature blob, and a host key algorithm name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureAlgorithm {
    /// `ssh-ed25519`
    Ed25519,
    /// `rsa-sha2-512`
    RsaSha512,
    /// `rsa-sha2-256`
    RsaSha256,
    /// `ssh-rsa` with SHA-1: never offered or accepted unless configured.
    RsaSha1,
    /// `ecdsa-sha2-nistp256`
    EcdsaP256,
    /// `ecdsa-sha2-nistp384`
    EcdsaP384,
    /// `ecdsa-sha2-nistp521`
    EcdsaP521,
}

impl SignatureAlgorithm {
    /// Every algorithm we implement, including `ssh-rsa` (SHA-1), which is never in a
    /// default list.
    pub const ALL: &'static [Self] = &[
        Self::Ed25519,
        Self::EcdsaP256,
        Self::EcdsaP384,
        Self::EcdsaP521,
        Self::RsaSha512,
        Self::RsaSha256,
        Self::RsaSha1,
    ];

    /// The algorithm's SSH name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "ssh-ed25519",
            Self::RsaSha512 => "rsa-sha2-512",
            Self::RsaSha256 => "rsa-sha2-256",
            Self::RsaSha1 => "ssh-rsa",
            Self::EcdsaP256 => "ecdsa-sha2-nistp256",
            Self::EcdsaP384 => "ecdsa-sha2-nistp384",
            Self::EcdsaP521 => "ecdsa-sha2-nistp521",
        }
    }

    /// Looks an SSH name up.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.name() == name)
    }

    /// The key type that signs with this algorithm.
    pub fn key_type(self) -> KeyType {
        match self {
            Self::Ed25519 => KeyType::Ed25519,
            Self::RsaSha512 | Self::RsaSha256 | Self::RsaSha1 => KeyType::Rsa,
            Self::EcdsaP256 => KeyType::EcdsaP256,
            Self::EcdsaP384 => KeyType::EcdsaP384,
            Self::EcdsaP521 => KeyType::EcdsaP521,
        }
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A host key algorithm as it is negotiated in KEXINIT: a signature algorithm, with the host
/// key either a plain key or an OpenSSH certificate of one (`ssh-ed25519-cert-v01@openssh.com`,
/// `rsa-sha2-512-cert-v01@openssh.com`, ...). With a certificate, K_S is the certificate blob
/// and the exchange hash is signed by the certified key with the plain algorithm's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostKeyAlgorithm {
    /// The signature over the exchange hash.
    pub signature: SignatureAlgorithm,
    /// Whether the host key is a certificate.
    pub certificate: bool,
}

impl HostKeyAlgorithm {
    /// A plain host key algorithm.
    pub const fn plain(signature: SignatureAlgorithm) -> Self {
        Self {
            signature,
            certificate: false,
        }
    }

    /// A certificate host key algorithm.
    pub const fn certificate(signature: SignatureAlgorithm) -> Self {
        Self {
            signature,
            certificate: true,
        }
    }

    /// Every host key algorithm we implement: the certificate ones first (OpenSSH's order),
    /// then the plain ones. The two `ssh-rsa` (SHA-1) ones are never in a default list.
    pub const ALL: &'static [Self] = &[
        Self::certificate(SignatureAlgorithm::Ed25519),
        Self::certificate(SignatureAlgorithm::EcdsaP256),
        Self::certificate(SignatureAlgorithm::EcdsaP384),
        Self::certificate(SignatureAlgorithm::EcdsaP521),
        Self::certificate(SignatureAlgorithm::RsaSha512),
        Self::certificate(SignatureAlgorithm::RsaSha256),
        Self::certificate(SignatureAlgorithm::RsaSha1),
        Self::plain(SignatureAlgorithm::Ed25519),
        Self::plain(SignatureAlgorithm::EcdsaP256),
        Self::plain(SignatureAlgorithm::EcdsaP384),
        Self::plain(SignatureAlgorithm::EcdsaP521),
        Self::plain(SignatureAlgorithm::RsaSha512),
        Self::plain(SignatureAlgorithm::RsaSha256),
        Self::plain(SignatureAlgorithm::RsaSha1),
    ];

    /// The algorithm's SSH name.
    pub fn name(self) -> &'static str {
        if self.certificate {
            crate::cert::certificate_algorithm_name(self.signature)
        } else {
            self.signature.name()
        }
    }

    /// Looks an SSH name up.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.name() == name)
    }

    /// The (plain) key type that signs with this algorithm.
    pub fn key_type(self) -> KeyType {
        self.signature.key_type()
    }

    /// The name of the key type the server presents: `ssh-ed25519`, or
    /// `ssh-ed25519-cert-v01@openssh.com` for a certificate.
    pub fn key_type_name(self) -> &'static str {
        if self.certificate {
            crate::cert::certificate_type_name(self.key_type())
        } else {
            self.key_type().name()
        }
    }
}

impl From<SignatureAlgorithm> for HostKeyAlgorithm {
    fn from(signature: SignatureAlgorithm) -> Self {
        Self::plain(signature)
    }
}

impl fmt::Display for HostKeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key or signature was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The blob did not decode.
    Malformed(DecodeError),
    /// The blob names a key type we do not support.
    UnsupportedKeyType(String),
    /// The key's parameters are unusable (an RSA modulus below 2048 bits, a point not on the curve).
    BadKey(&'static str),
    /// The signature names another algorithm than the one expected.
    AlgorithmMismatch {
        /// The algorithm that was negotiated or asked for.
        expected: &'static str,
        /// The name the signature carried.
        got: String,
    },
    /// The key cannot sign with the expected algorithm.
    KeyTypeMismatch {
        /// The algorithm asked for.
        algorithm: &'static str,
        /// The key's type.
        key_type: &'static str,
    },
    /// The signature does not verify.
    BadSignature,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed key or signature: {e}"),
            Self::UnsupportedKeyType(t) => write!(f, "unsupported key type {t:?}"),
            Self::BadKey(why) => write!(f, "unusable key: {why}"),
            Self::AlgorithmMismatch { expected, got } => {
                write!(
                    f,
                    "signature algorithm {got:?} does not match the expected {expected}"
                )
            }
            Self::KeyTypeMismatch {
                algorithm,
                key_type,
            } => write!(f, "a {key_type} key cannot make {algorithm} signatures"),
            Self::BadSignature => f.write_str("signature does not verify"),
        }
    }
}

impl std::error::Error for KeyError {}

impl From<DecodeError> for KeyError {
    fn from(e: DecodeError) -> Self {
        Self::Malformed(e)
    }
}

/// A decoded public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    kind: KeyType,
    blob: Vec<u8>,
    /// Ed25519: the 32-byte key. RSA: unused. ECDSA: the uncompressed point.
    point: Vec<u8>,
    rsa_e: Vec<u8>,
    rsa_n: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.kind.name(), self.fingerprint())
    }
}

impl PublicKey {
    /// Decodes an SSH public key blob, checking every field and the key's parameters.
    pub fn from_blob(blob: &[u8]) -> Result<Self, KeyError> {
        let mut r = Reader::new(blob);
        let name = r.utf8()?;
        let kind =
            KeyType::from_name(name).ok_or_else(|| KeyError::UnsupportedKeyType(name.into()))?;
        let mut key = Self {
            kind,
            blob: blob.to_vec(),
            point: Vec::new(),
            rsa_e: Vec::new(),
            rsa_n: Vec::new(),
        };
        match kind {
            KeyType::Ed25519 => {
                let k = r.string()?;
                if k.len() != 32 {
                    return Err(KeyError::BadKey("Ed25519 key is not 32 bytes"));
                }
                key.point = k.to_vec();
            }
            KeyType::Rsa => {
                let e = r.mpint_positive()?;
                let n = r.mpint_positive()?;
                let bits = (n.len() * 8)
                    .saturating_sub(n.first().map_or(0, |b| b.leading_zeros() as usize));
                if bits < 2048 {
                    return Err(KeyError::BadKey("RSA modulus is shorter than 2048 bits"));
                }
                if bits > 16384 {
                    return Err(KeyError::BadKey("RSA modulus is longer than 16384 bits"));
                }
                if e.is_empty() || e.len() > 4 {
                    return Err(KeyError::BadKey("RSA public exponent out of range"));
                }
                key.rsa_e = e.to_vec();
                key.rsa_n = n.to_vec();
            }
            KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521 => {
                let (curve, len) = match kind {
                    KeyType::EcdsaP256 => ("nistp256", 65),
                    KeyType::EcdsaP384 => ("nistp384", 97),
                    _ => ("nistp521", 133),
                };
                if r.string()? != curve.as_bytes() {
                    return Err(KeyError::BadKey(
                        "ECDSA curve name does not match the key type",
                    ));
                }
                let q = r.string()?;
                if q.len() != len || q.first() != Some(&4) {
                    return Err(KeyError::BadKey("ECDSA point is not an uncompressed point"));
                }
                // ring checks P-256/P-384 points when it verifies; P-521 is checked here, so
                // a point off the curve is refused when the key is read.
                if kind == KeyType::EcdsaP521
                    && p521::ecdsa::VerifyingKey::from_sec1_bytes(q).is_err()
                {
                    return Err(KeyError::BadKey("ECDSA P-521 point is not on the curve"));
                }
                key.point = q.to_vec();
            }
        }
        r.finish()?;
        Ok(key)
    }

    /// Builds an Ed25519 key from its 32 bytes.
    pub fn ed25519(key: &[u8; 32]) -> Self {
        let mut blob = Vec::with_capacity(51);
        blob.put_str("ssh-ed25519");
        blob.put_string(key);
        Self {
            kind: KeyType::Ed25519,
            blob,
            point: key.to_vec(),
            rsa_e: Vec::new(),
            rsa_n: Vec::new(),
        }
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        self.kind
    }

    /// The SSH wire encoding.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The RSA modulus size in bits (0 for other key types).
    pub fn rsa_bits(&self) -> usize {
        let n = &self.rsa_n;
        (n.len() * 8).saturating_sub(n.first().map_or(0, |b| b.leading_zeros() as usize))
    }

    /// `SHA256:` and the unpadded base64 of the blob's SHA-256, as `ssh-keygen -l` prints.
    pub fn fingerprint(&self) -> String {
        fingerprint_sha256(&self.blob)
    }

    /// The key as one line of authorized_keys / known_hosts: `type base64`.
    pub fn to_openssh_line(&self) -> String {
        format!(
            "{} {}",
            self.kind.name(),
            base64::engine::general_purpose::STANDARD.encode(&self.blob)
        )
    }

    /// Verifies an SSH signature blob (`string algorithm, string signature`) over `data`,
    /// requiring the algorithm `expected`.
    pub fn verify(
        &self,
        expected: SignatureAlgorithm,
        data: &[u8],
        signature_blob: &[u8],
    ) -> Result<(), KeyError> {
        if expected.key_type() != self.kind {
            return Err(KeyError::KeyTypeMismatch {
                algorithm: expected.name(),
                key_type: self.kind.name(),
            });
        }
        let mut r = Reader::new(signature_blob);
        let name = r.utf8()?;
        if name != expected.name() {
            return Err(KeyError::AlgorithmMismatch {
                expected: expected.name(),
                got: name.chars().take(64).collect(),
            });
        }
        let sig = r.string()?;
        r.finish()?;
        match expected {
            SignatureAlgorithm::Ed25519 => {
                signature::UnparsedPublicKey::new(&signature::ED25519, &self.point)
                    .verify(data, sig)
                    .map_err(|_| KeyError::BadSignature)
            }
            SignatureAlgorithm::RsaSha256
            | SignatureAlgorithm::RsaSha512
            | SignatureAlgorithm::RsaSha1 => {
                let params: &signature::RsaParameters = match expected {
                    SignatureAlgorithm::RsaSha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    SignatureAlgorithm::RsaSha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    _ => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                };
                // Some signers drop leading zero bytes; the signature must be as long as the
                // modulus for verification, so pad it back (OpenSSH does the same).
                let n_len = self.rsa_n.len();
                if sig.len() > n_len {
                    return Err(KeyError::BadSignature);
                }
                let mut padded = vec![0u8; n_len - sig.len()];
                padded.extend_from_slice(sig);
                if crate::kex::dh::bit_length(&self.rsa_n) > RING_RSA_MAX_BITS {
                    return verify_large_rsa(&self.rsa_n, &self.rsa_e, expected, data, &padded);
                }
                signature::RsaPublicKeyComponents {
                    n: &self.rsa_n,
                    e: &self.rsa_e,
                }
                .verify(params, data, &padded)
                .map_err(|_| KeyError::BadSignature)
            }
            SignatureAlgorithm::EcdsaP256 | SignatureAlgorithm::EcdsaP384 => {
                let (alg, scalar_len): (&signature::EcdsaVerificationAlgorithm, usize) =
                    match expected {
                        SignatureAlgorithm::EcdsaP256 => (&signature::ECDSA_P256_SHA256_FIXED, 32),
                        _ => (&signature::ECDSA_P384_SHA384_FIXED, 48),
                    };
                let mut inner = Reader::new(sig);
                let r_int = inner.mpint_positive()?;
                let s_int = inner.mpint_positive()?;
                inner.finish()?;
                if r_int.len() > scalar_len || s_int.len() > scalar_len {
                    return Err(KeyError::BadSignature);
                }
                let mut fixed = vec![0u8; 2 * scalar_len];
                let (r_out, s_out) = fixed.split_at_mut(scalar_len);
                copy_right_aligned(r_out, r_int);
                copy_right_aligned(s_out, s_int);
                signature::UnparsedPublicKey::new(alg, &self.point)
                    .verify(data, &fixed)
                    .map_err(|_| KeyError::BadSignature)
            }
            SignatureAlgorithm::EcdsaP521 => verify_p521(&self.point, data, sig),
        }
    }
}

/// ECDSA over P-521 with SHA-512 (RFC 5656 section 3.1.2): the signature is two mpints, r
/// and s, each at most 66 bytes.
fn verify_p521(point: &[u8], data: &[u8], sig: &[u8]) -> Result<(), KeyError> {
    use p521::ecdsa::signature::hazmat::PrehashVerifier as _;
    const SCALAR: usize = 66;
    let mut inner = Reader::new(sig);
    let r_int = inner.mpint_positive()?;
    let s_int = inner.mpint_positive()?;
    inner.finish()?;
    if r_int.len() > SCALAR || s_int.len() > SCALAR {
        return Err(KeyError::BadSignature);
    }
    let mut r_fixed = [0u8; SCALAR];
    let mut s_fixed = [0u8; SCALAR];
    copy_right_aligned(&mut r_fixed, r_int);
    copy_right_aligned(&mut s_fixed, s_int);
    let key = p521::ecdsa::VerifyingKey::from_sec1_bytes(point)
        .map_err(|_| KeyError::BadKey("ECDSA P-521 point is not on the curve"))?;
    let signature = p521::ecdsa::Signature::from_scalars(r_fixed, s_fixed)
        .map_err(|_| KeyError::BadSignature)?;
    let digest = ring::digest::digest(&ring::digest::SHA512, data);
    key.verify_prehash(digest.as_ref(), &signature)
        .map_err(|_| KeyError::BadSignature)
}

fn copy_right_aligned(out: &mut [u8], v: &[u8]) {
    let start = out.len().saturating_sub(v.len());
    if let Some(dst) = out.get_mut(start..) {
        dst.copy_from_slice(
            v.get(v.len().saturating_sub(dst.len())..)
                .unwrap_or_default(),
        );
    }
}

/// `SHA256:` and the unpadded base64 of SHA-256 over a key blob, as OpenSSH prints it.
pub fn fingerprint_sha256(blob: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, blob);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_ref())
    )
}

/// The key type name at the start of a blob, without decoding the rest.
pub fn blob_key_type(blob: &[u8]) -> Result<&str, DecodeError> {
    Reader::new(blob).utf8()
}

/// The largest RSA modulus ring verifies; larger keys (OpenSSH accepts up to 16384 bits)
/// are verified by [`verify_large_rsa`].
const RING_RSA_MAX_BITS: u32 = 8192;

/// RSASSA-PKCS1-v1_5 verification (RFC 8017 section 8.2.2) for moduli ring does not take:
/// `sig` (already as long as `n`) raised to `e` modulo `n` must be exactly the encoding of
/// the message's digest. Everything here is public, so variable time is fine.
fn verify_large_rsa(
    n: &[u8],
    e: &[u8],
    alg: SignatureAlgorithm,
    data: &[u8],
    sig: &[u8],
) -> Result<(), KeyError> {
    use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
    use crypto_bigint::{BoxedUint, Odd};

    // DigestInfo prefixes of RFC 8017 section 9.2, note 1.
    const SHA1: &[u8] = &[
        0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
    ];
    const SHA256: &[u8] = &[
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    const SHA512: &[u8] = &[
        0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        0x05, 0x00, 0x04, 0x40,
    ];
    let (prefix, digest) = match alg {
        SignatureAlgorithm::RsaSha256 => (SHA256, &ring::digest::SHA256),
        SignatureAlgorithm::RsaSha512 => (SHA512, &ring::digest::SHA512),
        SignatureAlgorithm::RsaSha1 => (SHA1, &ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
        _ => return Err(KeyError::BadSignature),
    };
    let hash = ring::digest::digest(digest, data);
    let k = n.len();
    // 0x00 0x01, at least eight 0xff, 0x00, DigestInfo.
    let t_len = prefix.len() + hash.as_ref().len();
    let Some(ff_len) = k.checked_sub(3 + t_len).filter(|&l| l >= 8) else {
        return Err(KeyError::BadSignature);
    };
    let mut expected = Vec::with_capacity(k);
    expected.extend_from_slice(&[0x00, 0x01]);
    expected.resize(2 + ff_len, 0xff);
    expected.push(0x00);
    expected.extend_from_slice(prefix);
    expected.extend_from_slice(hash.as_ref());

    let precision = u32::try_from(k.div_ceil(8) * 64).map_err(|_| KeyError::BadSignature)?;
    let decode =
        |v: &[u8]| BoxedUint::from_be_slice(v, precision).map_err(|_| KeyError::BadSignature);
    let n_int = decode(n)?;
    let s = decode(sig)?;
    let e_int = decode(e)?;
    if s >= n_int {
        return Err(KeyError::BadSignature);
    }
    let odd = Option::<Odd<BoxedUint>>::from(Odd::new(n_int)).ok_or(KeyError::BadSignature)?;
    let params = BoxedMontyParams::new_vartime(odd);
    let m = BoxedMontyForm::new(s, &params).pow(&e_int).retrieve();
    let bytes = m.to_be_bytes();
    let (high, em) = bytes.split_at(bytes.len().saturating_sub(k));
    if high.iter().all(|&b| b == 0) && em == expected.as_slice() {
        Ok(())
    } else {
        Err(KeyError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair as _;

    fn ed_pair() -> ring::signature::Ed25519KeyPair {
        let seed = [7u8; 32];
        ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .unwrap_or_else(|_| unreachable!())
    }

    fn sig_blob(alg: &str, sig: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.put_str(alg);
        v.put_string(sig);
        v
    }

    #[test]
    fn ed25519_verify_and_fingerprint_shape() {
        let kp = ed_pair();
        let pk_bytes: [u8; 32] = kp.public_key().as_ref().try_into().unwrap_or([0; 32]);
        let key = PublicKey::ed25519(&pk_bytes);
        let decoded = PublicKey::from_blob(key.blob());
        assert_eq!(decoded.as_ref(), Ok(&key));
        let sig = kp.sign(b"hello");
        let blob = sig_blob("ssh-ed25519", sig.as_ref());
        assert_eq!(
            key.verify(SignatureAlgorithm::Ed25519, b"hello", &blob),
            Ok(())
        );
        assert_eq!(
            key.verify(SignatureAlgorithm::Ed25519, b"hellO", &blob),
            Err(KeyError::BadSignature)
        );
        assert!(matches!(
            key.verify(SignatureAlgorithm::RsaSha512, b"hello", &blob),
            Err(KeyError::KeyTypeMismatch { .. })
        ));
        let fp = key.fingerprint();
        assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 43, "{fp}");
    }

    #[test]
    fn signature_with_other_algorithm_name_is_refused() {
        let kp = ed_pair();
        let pk: [u8; 32] = kp.public_key().as_ref().try_into().unwrap_or([0; 32]);
        let key = PublicKey::ed25519(&pk);
        let blob = sig_blob("ssh-ed25519x", kp.sign(b"m").as_ref());
        assert!(matches!(
            key.verify(SignatureAlgorithm::Ed25519, b"m", &blob),
            Err(KeyError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn rejects_short_rsa_and_trailing_bytes() {
        let mut blob = Vec::new();
        blob.put_str("ssh-rsa");
        blob.put_mpint(&[1, 0, 1]);
        blob.put_mpint(&[0xc5; 128]);
        assert!(matches!(
            PublicKey::from_blob(&blob),
            Err(KeyError::BadKey(_))
        ));
        let mut ed = PublicKey::ed25519(&[9; 32]).blob().to_vec();
        ed.push(0);
        assert_eq!(
            PublicKey::from_blob(&ed),
            Err(KeyError::Malformed(DecodeError::TrailingBytes))
        );
    }

    /// Found by the fuzzer: an empty modulus underflowed the bit count.
    #[test]
    fn empty_rsa_modulus_is_refused_not_a_panic() {
        let mut blob = Vec::new();
        blob.put_str("ssh-rsa");
        blob.put_mpint(&[1, 0, 1]);
        blob.put_mpint(&[]);
        assert!(matches!(
            PublicKey::from_blob(&blob),
            Err(KeyError::BadKey(_))
        ));
    }

    fn unhex(parts: &[&str]) -> Vec<u8> {
        let s: String = parts.concat();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const KNOWN_ANSWER_MESSAGE: &[u8] = b"ssh-rsa host key signature known answer";

    /// A signature made by `openssl dgst -sha1 -sign` with a 2048-bit key: `ssh-rsa` verifies
    /// when it is the algorithm asked for, and only then.
    #[test]
    fn ssh_rsa_sha1_known_answer_verifies_only_when_asked_for() {
        let n = unhex(&[
            "b181ae46e7df5f68a1305ed2ea0bf356b2700400db592b1599ac4f216f0df1d3",
            "a7b43f9303ff6bbfd1ecdf2f25c68a388ee05cbe0aab43207063cfa0d192ece6",
            "c1818f684bf266379c720c7500c87c5d5b18165f85373fe2969b11abbf3d5901",
            "fd74e6475382587d7703578d5290d45089db583bbeec3e37bcb163ae1144ea83",
            "9d181e2dc1b1ee18b18cd3a00e1e81814c97d7705144c0d4d3b60e9b252d906c",
            "1de93a4af12bc3e36b5211f83d64d72c041470b21f1b388f870f348966c7dd10",
            "4c743ed760f91874b324ed895439650bbece5fb1a66cd3139b261187984c4d5f",
            "39d6935179e8c3212870fbc71997defdb72cb32a857b841e1fba10dcca9b2e85",
        ]);
        let sig = unhex(&[
            "64e8c67e4dac25ce85ad828142fe5245e3bd33b82c17d1b113f8e8a5565aa445",
            "691acfe87ec2fe692c530689d11b8658115ad5ae50531f73d71ef3882e0fe815",
            "cce2762a1e110649bdd50a4854fda69a5a8983088db9192e38a08fa86b073ef4",
            "e7ddda51f725be7ba023e8e883d5edba50a398b320f4b64895602596ed013eaf",
            "5b4a35a8286dd130b2841da1b38c4af840e0eb6884fd288c221d82185c06674e",
            "456743c02b30676e568a03dc6125f1cf15e1591ece8fed0fec4d88230390a427",
            "76fd7b9c107e5351438e0410f31557261b2dc35f08827897610e626459c3158b",
            "45748fa06450507a0f13f179e7541f0d821790d9da9a02d75dcce5e98e1a4998",
        ]);
        let mut blob = Vec::new();
        blob.put_str("ssh-rsa");
        blob.put_mpint(&[1, 0, 1]);
        blob.put_mpint(&n);
        let key = PublicKey::from_blob(&blob).unwrap();
        assert_eq!(key.rsa_bits(), 2048);
        let good = sig_blob("ssh-rsa", &sig);
        assert_eq!(
            key.verify(SignatureAlgorithm::RsaSha1, KNOWN_ANSWER_MESSAGE, &good),
            Ok(())
        );
        assert_eq!(
            key.verify(SignatureAlgorithm::RsaSha1, b"another message", &good),
            Err(KeyError::BadSignature)
        );
        // A SHA-1 signature never passes where SHA-2 was negotiated, whatever it is named.
        assert!(matches!(
            key.verify(SignatureAlgorithm::RsaSha256, KNOWN_ANSWER_MESSAGE, &good),
            Err(KeyError::AlgorithmMismatch { .. })
        ));
        assert_eq!(
            key.verify(
                SignatureAlgorithm::RsaSha512,
                KNOWN_ANSWER_MESSAGE,
                &sig_blob("rsa-sha2-512", &sig)
            ),
            Err(KeyError::BadSignature)
        );
    }

    /// `openssl dgst -sha512 -sign` with a P-521 key; s is 65 bytes, so it travels as an mpint
    /// shorter than the scalar and must be right-aligned.
    #[test]
    fn ecdsa_p521_known_answer_verifies() {
        let point = unhex(&[
            "04000b01fdbd8231e29cf13cab9895525d9a20fbe7c66f46302e750a32073282",
            "2c8f6c85f980c5508a24ff158772fcc35b23a83d01363470ff8b488b2db8a186",
            "84f787005f97990a856a1b4a7e991db5512c61d48ec87c2bdcfa6b5f11a88c2a",
            "29af48ca09ac15f22550e077f856d04fa8550755d3b7b7a7b9cb755f586b8efb",
            "00518c9398",
        ]);
        let r = unhex(&[
            "018c121d32b1a409e57f1216cdeab2707f649bad0ab8c7d55f099cdd1a760ab5",
            "77044ad7660b798345c7b9f7ba37b19896fee0ea768c3c7e525f3a2982fb8976",
            "443f",
        ]);
        let s = unhex(&[
            "c784e40970bd3e984e3471ec14eba55464e4ea8c68f53ae8baf8147207edb612",
            "566baeb07ecdb41362cba14451ea30675e54dd94f3c7060dbe5d26f90dc50265",
            "1d",
        ]);
        assert_eq!((r.len(), s.len()), (66, 65));
        let mut blob = Vec::new();
        blob.put_str("ecdsa-sha2-nistp521");
        blob.put_str("nistp521");
        blob.put_string(&point);
        let key = PublicKey::from_blob(&blob).unwrap();
        assert_eq!(key.key_type(), KeyType::EcdsaP521);
        assert_eq!(
            KeyType::from_name("ecdsa-sha2-nistp521"),
            Some(KeyType::EcdsaP521)
        );
        let mut inner = Vec::new();
        inner.put_mpint(&r);
        inner.put_mpint(&s);
        let good = sig_blob("ecdsa-sha2-nistp521", &inner);
        assert_eq!(
            key.verify(SignatureAlgorithm::EcdsaP521, KNOWN_ANSWER_MESSAGE, &good),
            Ok(())
        );
        assert_eq!(
            key.verify(SignatureAlgorithm::EcdsaP521, b"tampered", &good),
            Err(KeyError::BadSignature)
        );
        let mut swapped = Vec::new();
        swapped.put_mpint(&s);
        swapped.put_mpint(&r);
        assert_eq!(
            key.verify(
                SignatureAlgorithm::EcdsaP521,
                KNOWN_ANSWER_MESSAGE,
                &sig_blob("ecdsa-sha2-nistp521", &swapped)
            ),
            Err(KeyError::BadSignature)
        );
        let mut long = Vec::new();
        long.put_mpint(&[[1u8].as_slice(), &r].concat());
        long.put_mpint(&s);
        assert_eq!(
            key.verify(
                SignatureAlgorithm::EcdsaP521,
                KNOWN_ANSWER_MESSAGE,
                &sig_blob("ecdsa-sha2-nistp521", &long)
            ),
            Err(KeyError::BadSignature)
        );
        assert!(matches!(
            key.verify(SignatureAlgorithm::EcdsaP384, KNOWN_ANSWER_MESSAGE, &good),
            Err(KeyError::KeyTypeMismatch { .. })
        ));
    }

    #[test]
    fn p521_point_off_the_curve_or_wrong_curve_name_is_refused() {
        let mut point = unhex(&[
            "04000b01fdbd8231e29cf13cab9895525d9a20fbe7c66f46302e750a32073282",
            "2c8f6c85f980c5508a24ff158772fcc35b23a83d01363470ff8b488b2db8a186",
            "84f787005f97990a856a1b4a7e991db5512c61d48ec87c2bdcfa6b5f11a88c2a",
            "29af48ca09ac15f22550e077f856d04fa8550755d3b7b7a7b9cb755f586b8efb",
            "00518c9398",
        ]);
        let last = point.len() - 1;
        point[last] ^= 1;
        let mut blob = Vec::new();
        blob.put_str("ecdsa-sha2-nistp521");
        blob.put_str("nistp521");
        blob.put_string(&point);
        assert!(matches!(
            PublicKey::from_blob(&blob),
            Err(KeyError::BadKey(_))
        ));
        let mut blob = Vec::new();
        blob.put_str("ecdsa-sha2-nistp521");
        blob.put_str("nistp384");
        blob.put_string(&point);
        assert!(matches!(
            PublicKey::from_blob(&blob),
            Err(KeyError::BadKey(_))
        ));
    }

    #[test]
    fn unknown_key_type_is_named() {
        let mut blob = Vec::new();
        blob.put_str("ssh-dss");
        assert_eq!(
            PublicKey::from_blob(&blob),
            Err(KeyError::UnsupportedKeyType("ssh-dss".into()))
        );
    }
}
