//! User private keys: loading them from the files `ssh-keygen` writes, and signing.
//!
//! ```text
//!  file bytes ─> armor (BEGIN/END, headers, base64) ─┬─ OPENSSH PRIVATE KEY ─> openssh ─┐
//!                                                    ├─ RSA PRIVATE KEY ─────> pkcs1 ───┤
//!                                                    └─ PRIVATE KEY ─────────> pkcs8 ───┤
//!            Ed25519: seed + public key ─> ring Ed25519KeyPair <──────────────────────┤
//!            RSA: n e d p q ─> rsa (validate, derive dP dQ qInv) ─> PKCS#1 DER ─> ring RsaKeyPair
//! ```
//!
//! Signing is done by ring only, whose RSA is constant time and blinded; the `rsa` crate is
//! only used to turn OpenSSH's components into the PKCS#1 form ring imports. Every
//! intermediate copy of secret bytes is held in `Zeroizing` buffers. ring keeps its own copy
//! inside the key pair and does not wipe it when dropped; that copy lives as long as the
//! [`PrivateKey`].

mod armor;
mod der;
mod openssh;

use core::fmt;

use ring::signature::{Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use rsa::BigUint;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use ssh_transport::hostkey::{KeyType, PublicKey, SignatureAlgorithm};
use ssh_transport::wire::Writer as _;

use crate::error::{KeyFileError, SignError};

/// Larger files are refused before any parsing: an OpenSSH RSA-16384 key file is about 13 KiB.
pub const MAX_KEY_FILE_LEN: usize = 64 * 1024;

/// RSA key sizes ring signs with.
const RSA_BITS: core::ops::RangeInclusive<usize> = 2048..=4096;

const RSA_ALGORITHMS: &[SignatureAlgorithm] =
    &[SignatureAlgorithm::RsaSha512, SignatureAlgorithm::RsaSha256];
const ED25519_ALGORITHMS: &[SignatureAlgorithm] = &[SignatureAlgorithm::Ed25519];

/// A user's private key, ready to sign.
pub struct PrivateKey {
    public: PublicKey,
    comment: String,
    signer: Signer,
}

enum Signer {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// Big-endian magnitudes of an RSA key's numbers, borrowed from a decoded file.
pub(crate) struct RsaParts<'a> {
    pub(crate) n: &'a [u8],
    pub(crate) e: &'a [u8],
    pub(crate) d: &'a [u8],
    pub(crate) p: &'a [u8],
    pub(crate) q: &'a [u8],
}

impl PrivateKey {
    /// Loads a key from the contents of a key file: OpenSSH format, PEM PKCS#1
    /// (`RSA PRIVATE KEY`) or unencrypted PKCS#8 (`PRIVATE KEY`). Supported keys are Ed25519 and
    /// RSA of 2048 to 4096 bits; anything else, and any passphrase-protected key, is a clear
    /// error. The caller should wipe `data` when done with it.
    pub fn from_file_contents(data: &[u8]) -> Result<Self, KeyFileError> {
        if data.len() > MAX_KEY_FILE_LEN {
            return Err(KeyFileError::TooLarge {
                len: data.len(),
                max: MAX_KEY_FILE_LEN,
            });
        }
        let text = core::str::from_utf8(data).map_err(|_| KeyFileError::NotAPrivateKey)?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let block = armor::parse(text)?;
        match block.label {
            "OPENSSH PRIVATE KEY" => openssh::parse(&block.decode()?),
            "RSA PRIVATE KEY" if block.encrypted_headers => Err(KeyFileError::Encrypted),
            "RSA PRIVATE KEY" => der::pkcs1(&block.decode()?),
            "ENCRYPTED PRIVATE KEY" => Err(KeyFileError::Encrypted),
            // Named before the passphrase: removing it would not make these usable.
            "DSA PRIVATE KEY" => Err(KeyFileError::UnsupportedKeyType("ssh-dss (DSA)".into())),
            "EC PRIVATE KEY" => Err(KeyFileError::UnsupportedKeyType("ECDSA".into())),
            _ if block.encrypted_headers => Err(KeyFileError::Encrypted),
            "PRIVATE KEY" => der::pkcs8(&block.decode()?),
            "PUBLIC KEY" | "RSA PUBLIC KEY" | "SSH2 PUBLIC KEY" => {
                Err(KeyFileError::PublicKeyInstead)
            }
            _ => Err(KeyFileError::NotAPrivateKey),
        }
    }

    /// Makes an Ed25519 key from its 32-byte seed (the private key proper). Useful for tests
    /// and for keys kept outside files.
    pub fn from_ed25519_seed(seed: &[u8; 32], comment: &str) -> Result<Self, KeyFileError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| KeyFileError::InvalidKey(format!("Ed25519 seed rejected: {e}")))?;
        let public: [u8; 32] =
            pair.public_key().as_ref().try_into().map_err(|_| {
                KeyFileError::InvalidKey("Ed25519 public key is not 32 bytes".into())
            })?;
        Ok(Self {
            public: PublicKey::ed25519(&public),
            comment: comment.to_owned(),
            signer: Signer::Ed25519(pair),
        })
    }

    /// An Ed25519 key whose file carries the public key too; ring checks that they agree.
    fn ed25519_parts(
        seed: &[u8; 32],
        public: &[u8; 32],
        comment: String,
    ) -> Result<Self, KeyFileError> {
        let pair = Ed25519KeyPair::from_seed_and_public_key(seed, public).map_err(|e| {
            KeyFileError::InvalidKey(format!(
                "the Ed25519 seed does not give its public key ({e})"
            ))
        })?;
        Ok(Self {
            public: PublicKey::ed25519(public),
            comment,
            signer: Signer::Ed25519(pair),
        })
    }

    fn rsa_parts(parts: &RsaParts<'_>, comment: String) -> Result<Self, KeyFileError> {
        let bits = bit_len(parts.n);
        if !RSA_BITS.contains(&bits) {
            return Err(KeyFileError::UnsupportedRsaSize { bits });
        }
        // The rsa crate validates the numbers (p·q = n, d·e ≡ 1) and derives dP, dQ and qInv,
        // which ring needs and OpenSSH's format does not store. Its BigUints wipe themselves
        // when the RsaPrivateKey is dropped, and the DER is a zeroizing SecretDocument.
        let key = rsa::RsaPrivateKey::from_components(
            BigUint::from_bytes_be(parts.n),
            BigUint::from_bytes_be(parts.e),
            BigUint::from_bytes_be(parts.d),
            vec![
                BigUint::from_bytes_be(parts.p),
                BigUint::from_bytes_be(parts.q),
            ],
        )
        .map_err(|e| KeyFileError::InvalidKey(format!("RSA key check failed: {e}")))?;
        let der = key
            .to_pkcs1_der()
            .map_err(|e| KeyFileError::InvalidKey(format!("RSA key could not be encoded: {e}")))?;
        drop(key);
        let pair = RsaKeyPair::from_der(der.as_bytes())
            .map_err(|e| KeyFileError::InvalidKey(format!("ring rejected the RSA key: {e}")))?;
        let mut blob = Vec::with_capacity(parts.n.len() + parts.e.len() + 32);
        blob.put_str(KeyType::Rsa.name());
        blob.put_mpint(parts.e);
        blob.put_mpint(parts.n);
        let public = PublicKey::from_blob(&blob)
            .map_err(|e| KeyFileError::InvalidKey(format!("RSA public key: {e}")))?;
        Ok(Self {
            public,
            comment,
            signer: Signer::Rsa(pair),
        })
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The comment stored with the key (OpenSSH format only; empty otherwise), sanitized.
    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// The public key's `SHA256:` fingerprint, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.public.fingerprint()
    }

    /// Signature algorithms this key can make, in our preference order: RSA gives
    /// `[RsaSha512, RsaSha256]` (SHA-1 `ssh-rsa` never), Ed25519 gives `[Ed25519]`.
    pub fn signature_algorithms(&self) -> &'static [SignatureAlgorithm] {
        match self.signer {
            Signer::Rsa(_) => RSA_ALGORITHMS,
            Signer::Ed25519(_) => ED25519_ALGORITHMS,
        }
    }

    /// Signs `data`, returning a whole SSH signature blob: `string algorithm-name,
    /// string signature`.
    pub fn sign(&self, alg: SignatureAlgorithm, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let unsupported = SignError::UnsupportedAlgorithm {
            algorithm: alg,
            key_type: self.public.key_type(),
        };
        let mut out = Vec::new();
        match &self.signer {
            Signer::Ed25519(pair) => {
                if alg != SignatureAlgorithm::Ed25519 {
                    return Err(unsupported);
                }
                let sig = pair.sign(data);
                out.put_str(alg.name());
                out.put_string(sig.as_ref());
            }
            Signer::Rsa(pair) => {
                let encoding: &'static dyn ring::signature::RsaEncoding = match alg {
                    SignatureAlgorithm::RsaSha512 => &ring::signature::RSA_PKCS1_SHA512,
                    SignatureAlgorithm::RsaSha256 => &ring::signature::RSA_PKCS1_SHA256,
                    _ => return Err(unsupported),
                };
                // ring wants an RNG for blinding; PKCS#1 v1.5 signatures are deterministic,
                // so this randomness never reaches the wire.
                let rng = ring::rand::SystemRandom::new();
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(encoding, &rng, data, &mut sig)
                    .map_err(|_| SignError::Failed)?;
                out.put_str(alg.name());
                out.put_string(&sig);
            }
        }
        Ok(out)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret: only what `ssh-keygen -l` would show.
        f.debug_struct("PrivateKey")
            .field("type", &self.public.key_type().name())
            .field("fingerprint", &self.public.fingerprint())
            .field("comment", &self.comment)
            .finish_non_exhaustive()
    }
}

/// The bit length of a big-endian magnitude.
fn bit_len(magnitude: &[u8]) -> usize {
    let digits = magnitude
        .iter()
        .position(|&b| b != 0)
        .and_then(|start| magnitude.get(start..))
        .unwrap_or_default();
    match digits.first() {
        Some(&top) => digits.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests;
