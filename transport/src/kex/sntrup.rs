//! `sntrup761x25519-sha512` (and its original name with `@openssh.com`): Streamlined NTRU
//! Prime 761 beside X25519, hashed with SHA-512, as OpenSSH 8.5 and later implement it.

use zeroize::Zeroizing;

use super::KexError;
use super::hybrid::Kem;
use crate::random::SecureRandom;

/// sntrup761 for the hybrid.
#[derive(Debug)]
pub struct Sntrup761Kem;

impl Kem for Sntrup761Kem {
    const NAME: &'static str = "sntrup761";
    const PUBLIC_LEN: usize = sntrup761::PUBLIC_KEY_SIZE;
    const CIPHERTEXT_LEN: usize = sntrup761::CIPHERTEXT_SIZE;
    type Secret = sntrup761::DecapsulationKey;

    fn generate(rng: &mut dyn SecureRandom) -> (Vec<u8>, sntrup761::DecapsulationKey) {
        // The crate expands a 32-byte seed with ChaCha20 into every random choice of key
        // generation, so the seed carries the whole 256 bits of entropy.
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill(seed.as_mut());
        let (pk, sk) = sntrup761::generate_key_from_seed(*seed);
        (pk.as_ref().to_vec(), sk)
    }

    fn encapsulate(
        public: &[u8],
        rng: &mut dyn SecureRandom,
    ) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), KexError> {
        let pk = sntrup761::EncapsulationKey::try_from(public).map_err(|_| {
            KexError::Invalid("the sntrup761 public key has the wrong length".into())
        })?;
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill(seed.as_mut());
        let (ct, ss) = pk.encapsulate_deterministic(*seed);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(ss.as_ref());
        Ok((ct.as_ref().to_vec(), out))
    }

    fn decapsulate(
        secret: &sntrup761::DecapsulationKey,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, KexError> {
        let ct = sntrup761::Ciphertext::try_from(ciphertext).map_err(|_| {
            KexError::Invalid("the sntrup761 ciphertext has the wrong length".into())
        })?;
        let ss = secret.decapsulate(&ct);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(ss.as_ref());
        Ok(out)
    }
}
