//! X25519 (RFC 7748) for `curve25519-sha256` (RFC 8731), and as the classical half of the
//! post-quantum hybrids.

use core::fmt;

use zeroize::Zeroizing;

use super::{Agreement, KexError};
use crate::random::SecureRandom;
use crate::wire::Writer;

/// An X25519 key pair for one exchange; the secret is zeroized when dropped.
pub struct Curve25519 {
    secret: x25519_dalek::StaticSecret,
    /// Our public value, sent as Q_C or Q_S.
    pub public: [u8; 32],
}

impl fmt::Debug for Curve25519 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Curve25519(..)")
    }
}

/// Why an ECDH agreement failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgreementError {
    /// The peer's public value is not 32 bytes.
    BadPublicKey,
    /// The shared secret is all zeros (a low-order point): RFC 8731 requires aborting.
    ZeroSharedSecret,
}

impl Curve25519 {
    /// A fresh key pair from the injected generator.
    pub fn generate(rng: &mut dyn SecureRandom) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill(bytes.as_mut());
        let secret = x25519_dalek::StaticSecret::from(*bytes);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Self { secret, public }
    }

    /// The shared secret K, already encoded as an SSH mpint (length included).
    pub fn agree(&self, peer_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, AgreementError> {
        let peer: [u8; 32] = peer_public
            .try_into()
            .map_err(|_| AgreementError::BadPublicKey)?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        if !shared.was_contributory() {
            return Err(AgreementError::ZeroSharedSecret);
        }
        let mut k = Zeroizing::new(Vec::with_capacity(37));
        k.put_mpint(shared.as_bytes());
        Ok(k)
    }
}

impl Curve25519 {
    /// The raw 32-byte shared secret, refusing an all-zero result.
    pub fn agree_raw(&self, peer_public: &[u8]) -> Result<Zeroizing<[u8; 32]>, AgreementError> {
        let peer: [u8; 32] = peer_public
            .try_into()
            .map_err(|_| AgreementError::BadPublicKey)?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        if !shared.was_contributory() {
            return Err(AgreementError::ZeroSharedSecret);
        }
        Ok(Zeroizing::new(*shared.as_bytes()))
    }
}

impl From<AgreementError> for KexError {
    fn from(e: AgreementError) -> Self {
        match e {
            AgreementError::BadPublicKey => {
                KexError::Invalid("the peer's X25519 public value is not 32 bytes".into())
            }
            AgreementError::ZeroSharedSecret => KexError::Invalid(
                "the X25519 shared secret is zero (the peer sent a low-order point)".into(),
            ),
        }
    }
}

/// `curve25519-sha256`: Q_C and Q_S are 32-byte strings, K the shared secret as an mpint.
#[derive(Debug, Default)]
pub struct X25519Agreement {
    ours: Option<Curve25519>,
}

impl Agreement for X25519Agreement {
    fn client_public(&mut self, rng: &mut dyn SecureRandom) -> Result<Vec<u8>, KexError> {
        let kp = Curve25519::generate(rng);
        let public = kp.public.to_vec();
        self.ours = Some(kp);
        Ok(public)
    }

    fn client_finish(&mut self, server_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, KexError> {
        let kp = self.ours.as_ref().ok_or(KexError::OutOfOrder)?;
        Ok(kp.agree(server_public)?)
    }

    fn server_respond(
        &mut self,
        client_public: &[u8],
        rng: &mut dyn SecureRandom,
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), KexError> {
        let kp = Curve25519::generate(rng);
        let k = kp.agree(client_public)?;
        Ok((kp.public.to_vec(), k))
    }
}
