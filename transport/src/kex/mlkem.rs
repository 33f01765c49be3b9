//! `mlkem768x25519-sha256`: ML-KEM-768 (FIPS 203) beside X25519, hashed with SHA-256
//! (draft-ietf-sshm-mlkem-hybrid-kex; OpenSSH 9.9 and later).

use ml_kem::array::Array;
use ml_kem::{Decapsulate as _, KeyExport as _, MlKem768, Seed};
use zeroize::{Zeroize as _, Zeroizing};

use super::KexError;
use super::hybrid::Kem;
use crate::random::SecureRandom;

type DecapsulationKey = ml_kem::DecapsulationKey<MlKem768>;
type EncapsulationKey = ml_kem::EncapsulationKey<MlKem768>;

/// ML-KEM-768 for the hybrid.
#[derive(Debug)]
pub struct MlKem768Kem;

impl Kem for MlKem768Kem {
    const NAME: &'static str = "mlkem768";
    const PUBLIC_LEN: usize = 1184;
    const CIPHERTEXT_LEN: usize = 1088;
    type Secret = DecapsulationKey;

    fn generate(rng: &mut dyn SecureRandom) -> (Vec<u8>, DecapsulationKey) {
        // FIPS 203 key generation from its two 32-byte seeds d and z.
        let mut seed = Seed::default();
        rng.fill(seed.as_mut_slice());
        let dk = DecapsulationKey::from_seed(seed);
        seed.zeroize();
        let public = dk.encapsulation_key().to_bytes().to_vec();
        (public, dk)
    }

    fn encapsulate(
        public: &[u8],
        rng: &mut dyn SecureRandom,
    ) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), KexError> {
        let key = Array::try_from(public).map_err(|_| {
            KexError::Invalid("the ML-KEM-768 encapsulation key has the wrong length".into())
        })?;
        // The modulus check of FIPS 203 section 7.2: every coefficient must be reduced.
        let ek = EncapsulationKey::new(&key).map_err(|_| {
            KexError::Invalid(
                "the ML-KEM-768 encapsulation key is invalid (a coefficient is not reduced \
                 modulo q)"
                    .into(),
            )
        })?;
        let mut m = Zeroizing::new([0u8; 32]);
        rng.fill(m.as_mut());
        let (ct, mut k) = ek.encapsulate_deterministic(&Array::from(*m));
        let mut ss = Zeroizing::new([0u8; 32]);
        ss.copy_from_slice(k.as_slice());
        k.zeroize();
        Ok((ct.to_vec(), ss))
    }

    fn decapsulate(
        secret: &DecapsulationKey,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, KexError> {
        let ct = Array::try_from(ciphertext).map_err(|_| {
            KexError::Invalid("the ML-KEM-768 ciphertext has the wrong length".into())
        })?;
        // Implicit rejection: a tampered ciphertext yields an unrelated secret, and the
        // host key signature over H then fails.
        let mut k = secret.decapsulate(&ct);
        let mut ss = Zeroizing::new([0u8; 32]);
        ss.copy_from_slice(k.as_slice());
        k.zeroize();
        Ok(ss)
    }
}
