//! The post-quantum hybrids: a key encapsulation mechanism run beside X25519, as OpenSSH
//! defines `sntrup761x25519-sha512` and `mlkem768x25519-sha256`
//! (draft-ietf-sshm-mlkem-hybrid-kex, draft-ietf-sshm-ntruprime-ssh).
//!
//! ```text
//!  client: Q_C = KEM public key || X25519 public      (one SSH string)
//!  server: Q_S = KEM ciphertext || X25519 public      (one SSH string)
//!  both:   K   = string(HASH(KEM shared secret || X25519 shared secret))
//! ```
//!
//! K enters the exchange hash and the key derivation as an SSH string, not as an mpint as in
//! every older method: the hash output is used as is, leading zero bytes included.

use core::fmt;

use ring::digest;
use zeroize::Zeroizing;

use super::{Agreement, Curve25519, KexError};
use crate::random::SecureRandom;
use crate::wire::Writer;

/// A key encapsulation mechanism as the hybrids use it. Every method takes its randomness
/// from the injected generator, so exchanges are reproducible under test.
pub trait Kem: Send {
    /// The name used in error messages.
    const NAME: &'static str;
    /// Bytes of an encoded public (encapsulation) key.
    const PUBLIC_LEN: usize;
    /// Bytes of an encoded ciphertext.
    const CIPHERTEXT_LEN: usize;
    /// The private (decapsulation) key; zeroized when dropped.
    type Secret: Send;

    /// A fresh key pair: the encoded public key and the private key.
    fn generate(rng: &mut dyn SecureRandom) -> (Vec<u8>, Self::Secret);

    /// Encapsulates to `public` (exactly `PUBLIC_LEN` bytes): the ciphertext and the shared
    /// secret. Fails when the public key is malformed.
    fn encapsulate(
        public: &[u8],
        rng: &mut dyn SecureRandom,
    ) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), KexError>;

    /// Decapsulates `ciphertext` (exactly `CIPHERTEXT_LEN` bytes).
    fn decapsulate(
        secret: &Self::Secret,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, KexError>;
}

/// One side of a hybrid exchange: a [`Kem`] combined with X25519 under `hash`.
pub struct Hybrid<K: Kem> {
    hash: &'static digest::Algorithm,
    kem: Option<K::Secret>,
    x25519: Option<Curve25519>,
}

impl<K: Kem> Hybrid<K> {
    /// A hybrid whose shared secrets are combined with `hash`.
    pub fn new(hash: &'static digest::Algorithm) -> Self {
        Self {
            hash,
            kem: None,
            x25519: None,
        }
    }

    /// string(HASH(kem_ss || x25519_ss)).
    fn combine(&self, kem: &[u8; 32], ecdh: &[u8; 32]) -> Zeroizing<Vec<u8>> {
        let mut ctx = digest::Context::new(self.hash);
        ctx.update(kem);
        ctx.update(ecdh);
        let d = ctx.finish();
        let mut k = Zeroizing::new(Vec::with_capacity(4 + d.as_ref().len()));
        k.put_string(d.as_ref());
        k
    }
}

impl<K: Kem> fmt::Debug for Hybrid<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hybrid({}x25519)", K::NAME)
    }
}

fn wrong_length(what: &str, got: usize, want: usize) -> KexError {
    KexError::Invalid(format!(
        "the {what} is {got} bytes, but this method's is {want} bytes; the peer does not \
         implement the method correctly"
    ))
}

impl<K: Kem> Agreement for Hybrid<K> {
    fn client_public(&mut self, rng: &mut dyn SecureRandom) -> Result<Vec<u8>, KexError> {
        let (mut public, secret) = K::generate(rng);
        let x = Curve25519::generate(rng);
        public.extend_from_slice(&x.public);
        self.kem = Some(secret);
        self.x25519 = Some(x);
        Ok(public)
    }

    fn client_finish(&mut self, server_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, KexError> {
        let want = K::CIPHERTEXT_LEN + 32;
        if server_public.len() != want {
            let what = format!("server's {}x25519 reply", K::NAME);
            return Err(wrong_length(&what, server_public.len(), want));
        }
        let (ciphertext, x_public) = server_public.split_at(K::CIPHERTEXT_LEN);
        let secret = self.kem.take().ok_or(KexError::OutOfOrder)?;
        let x = self.x25519.take().ok_or(KexError::OutOfOrder)?;
        let kem_ss = K::decapsulate(&secret, ciphertext)?;
        let x_ss = x.agree_raw(x_public)?;
        Ok(self.combine(&kem_ss, &x_ss))
    }

    fn server_respond(
        &mut self,
        client_public: &[u8],
        rng: &mut dyn SecureRandom,
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), KexError> {
        let want = K::PUBLIC_LEN + 32;
        if client_public.len() != want {
            let what = format!("client's {}x25519 public value", K::NAME);
            return Err(wrong_length(&what, client_public.len(), want));
        }
        let (kem_public, x_public) = client_public.split_at(K::PUBLIC_LEN);
        let (mut reply, kem_ss) = K::encapsulate(kem_public, rng)?;
        let x = Curve25519::generate(rng);
        let x_ss = x.agree_raw(x_public)?;
        reply.extend_from_slice(&x.public);
        Ok((reply, self.combine(&kem_ss, &x_ss)))
    }
}
