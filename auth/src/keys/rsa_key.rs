//! RSA user keys of 2048 to 16384 bits.
//!
//! ring signs keys up to 4096 bits (constant time, blinded) and refuses larger ones; those are
//! signed by the `rsa` crate, whose 0.10 release does every private-key operation with
//! `crypto-bigint`'s constant-time Montgomery arithmetic, blinds the base, the exponents and
//! the moduli, and so closes the timing channel of RUSTSEC-2023-0071 (the "Marvin" attack).
//! The `rsa` crate also checks the numbers of every key (p·q = n, d·e ≡ 1 modulo p-1 and
//! q-1, distinct odd primes, d < n) and derives the CRT values ring needs, which OpenSSH's
//! format does not store.

use core::ops::RangeInclusive;

use ring::signature::RsaKeyPair;
use rsa::BoxedUint;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
use ssh_transport::hostkey::{KeyType, SignatureAlgorithm};
use ssh_transport::wire::Writer as _;
use zeroize::Zeroizing;

use crate::error::{KeyFileError, SignError};

/// RSA key sizes loaded and generated: OpenSSH's own bounds.
pub(crate) const RSA_BITS: RangeInclusive<usize> = 2048..=16384;
/// Above this, ring refuses the key and the `rsa` crate signs.
const RING_MAX_BITS: usize = 4096;

/// Big-endian magnitudes of an RSA key's numbers, borrowed from a decoded file.
pub(crate) struct RsaParts<'a> {
    pub(crate) n: &'a [u8],
    pub(crate) e: &'a [u8],
    pub(crate) d: &'a [u8],
    pub(crate) p: &'a [u8],
    pub(crate) q: &'a [u8],
}

/// An RSA private key, ready to sign.
pub(super) struct RsaKey {
    /// Kept for every size: it signs the large keys, and its numbers are what
    /// `to_openssh_file` writes. Its numbers wipe themselves when dropped.
    key: rsa::PrivateKey,
    /// ring's copy for keys it accepts; it does not wipe itself when dropped.
    ring: Option<RsaKeyPair>,
}

impl RsaKey {
    pub(super) fn from_parts(parts: &RsaParts<'_>) -> Result<Self, KeyFileError> {
        let bits = bit_len(parts.n);
        if !RSA_BITS.contains(&bits) {
            return Err(KeyFileError::UnsupportedRsaSize { bits });
        }
        let key = rsa::PrivateKey::from_components(
            BoxedUint::from_be_slice_vartime(parts.n),
            BoxedUint::from_be_slice_vartime(parts.e),
            BoxedUint::from_be_slice_vartime(parts.d),
            vec![
                BoxedUint::from_be_slice_vartime(parts.p),
                BoxedUint::from_be_slice_vartime(parts.q),
            ],
        )
        .map_err(|e| KeyFileError::InvalidKey(format!("RSA key check failed: {e}")))?;
        Self::from_checked(key)
    }

    /// A new key of `bits` bits with public exponent 65537.
    pub(super) fn generate(bits: usize) -> Result<Self, KeyFileError> {
        if !RSA_BITS.contains(&bits) {
            return Err(KeyFileError::UnsupportedRsaSize { bits });
        }
        let key = rsa::PrivateKey::new(&mut SystemRng::default(), bits)
            .map_err(|e| KeyFileError::InvalidKey(format!("RSA key generation failed: {e}")))?;
        Self::from_checked(key)
    }

    fn from_checked(key: rsa::PrivateKey) -> Result<Self, KeyFileError> {
        let ring =
            if key.n().bit_width_vartime() as usize <= RING_MAX_BITS {
                let der = key.to_pkcs1_der().map_err(|e| {
                    KeyFileError::InvalidKey(format!("RSA key could not be encoded: {e}"))
                })?;
                Some(RsaKeyPair::from_der(der.as_bytes()).map_err(|e| {
                    KeyFileError::InvalidKey(format!("ring rejected the RSA key: {e}"))
                })?)
            } else {
                None
            };
        Ok(Self { key, ring })
    }

    /// The SSH public key blob: `string "ssh-rsa", mpint e, mpint n`.
    pub(super) fn public_blob(&self) -> Vec<u8> {
        let n = self.key.n_bytes();
        let e = self.key.e_bytes();
        let mut blob = Vec::with_capacity(n.len() + e.len() + 32);
        blob.put_str(KeyType::Rsa.name());
        blob.put_mpint(&e);
        blob.put_mpint(&n);
        blob
    }

    /// The raw PKCS#1 v1.5 signature, as long as the modulus.
    pub(super) fn sign(&self, alg: SignatureAlgorithm, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let unsupported = SignError::UnsupportedAlgorithm {
            algorithm: alg,
            key_type: KeyType::Rsa,
        };
        if let Some(pair) = &self.ring {
            let encoding: &'static dyn ring::signature::RsaEncoding = match alg {
                SignatureAlgorithm::RsaSha512 => &ring::signature::RSA_PKCS1_SHA512,
                SignatureAlgorithm::RsaSha256 => &ring::signature::RSA_PKCS1_SHA256,
                _ => return Err(unsupported),
            };
            // ring wants an RNG for blinding; PKCS#1 v1.5 signatures are deterministic, so
            // this randomness never reaches the wire.
            let rng = ring::rand::SystemRandom::new();
            let mut sig = vec![0u8; pair.public().modulus_len()];
            pair.sign(encoding, &rng, data, &mut sig)
                .map_err(|_| SignError::Failed)?;
            return Ok(sig);
        }
        let signed = match alg {
            SignatureAlgorithm::RsaSha512 => {
                let digest = ring::digest::digest(&ring::digest::SHA512, data);
                self.key
                    .pkcs1v15_sign_prehash::<rsa::sha2::Sha512>(digest.as_ref())
            }
            SignatureAlgorithm::RsaSha256 => {
                let digest = ring::digest::digest(&ring::digest::SHA256, data);
                self.key
                    .pkcs1v15_sign_prehash::<rsa::sha2::Sha256>(digest.as_ref())
            }
            _ => return Err(unsupported),
        };
        signed.map_err(|_| SignError::Failed)
    }

    /// Appends the private fields of OpenSSH's format: `mpint n, e, d, iqmp, p, q`.
    /// `out` must have room for them (see [`Self::private_len_bound`]) so that it never
    /// reallocates and leaves a copy behind.
    pub(super) fn write_openssh_private(&self, out: &mut Vec<u8>) -> Result<(), KeyFileError> {
        let missing = || KeyFileError::InvalidKey("the RSA key has no CRT coefficient".into());
        let [p, q] = self.key.primes() else {
            return Err(KeyFileError::InvalidKey(
                "the RSA key does not have exactly two primes".into(),
            ));
        };
        // A secret too (with n it factors the key): wiped when dropped.
        let iqmp = Zeroizing::new(self.key.crt_coefficient().ok_or_else(missing)?);
        let secret = |x: &BoxedUint| Zeroizing::new(x.to_be_bytes().into_vec());
        out.put_mpint(&self.key.n_bytes());
        out.put_mpint(&self.key.e_bytes());
        out.put_mpint(&secret(self.key.d()));
        out.put_mpint(&secret(&iqmp));
        out.put_mpint(&secret(p.as_ref()));
        out.put_mpint(&secret(q.as_ref()));
        Ok(())
    }

    /// More than the bytes [`Self::write_openssh_private`] appends.
    pub(super) fn private_len_bound(&self) -> usize {
        let n = self.key.n().bit_width_vartime() as usize / 8 + 1;
        // n and d are at most n bytes; iqmp, p and q at most half; e is small.
        4 * n + 6 * 5 + 64
    }

    #[cfg(test)]
    pub(super) fn bits(&self) -> usize {
        self.key.n().bit_width_vartime() as usize
    }

    #[cfg(test)]
    pub(super) fn uses_ring(&self) -> bool {
        self.ring.is_some()
    }
}

/// The bit length of a big-endian magnitude.
pub(crate) fn bit_len(magnitude: &[u8]) -> usize {
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

/// The operating system's random numbers (through ring) in the `rand_core` shape the `rsa`
/// crate asks for when generating keys.
#[derive(Debug)]
pub(super) struct SystemRng(ring::rand::SystemRandom);

impl Default for SystemRng {
    fn default() -> Self {
        Self(ring::rand::SystemRandom::new())
    }
}

/// The operating system's random number generator failed.
#[derive(Debug)]
pub(super) struct RngFailed;

impl core::fmt::Display for RngFailed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(
            "the operating system's random number generator failed, so no key or check \
             number could be made; try again, and check the system's entropy source",
        )
    }
}

impl core::error::Error for RngFailed {}

impl rsa::rand_core::TryRng for SystemRng {
    type Error = RngFailed;

    fn try_next_u32(&mut self) -> Result<u32, RngFailed> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, RngFailed> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RngFailed> {
        ring::rand::SecureRandom::fill(&self.0, dst).map_err(|_| RngFailed)
    }
}

impl rsa::rand_core::TryCryptoRng for SystemRng {}

impl SystemRng {
    /// Fills `dst`; `KeyFileError::Io` if the system cannot.
    pub(super) fn fill(&mut self, dst: &mut [u8]) -> Result<(), KeyFileError> {
        rsa::rand_core::TryRng::try_fill_bytes(self, dst)
            .map_err(|e| KeyFileError::Io(e.to_string()))
    }
}
