//! `ecdh-sha2-nistp256`, `-nistp384` and `-nistp521` (RFC 5656 section 4): ephemeral ECDH on
//! the NIST curves, kept for bastions in FIPS mode.
//!
//! ```text
//!  Q_C, Q_S: uncompressed points (0x04 || x || y) as SSH strings, checked on the curve
//!  K:        the x coordinate of d_C * Q_S, as an mpint
//! ```

use core::fmt;

use zeroize::Zeroizing;

use super::{Agreement, KexError};
use crate::random::SecureRandom;
use crate::wire::Writer;

/// The operations the exchange needs from one curve.
pub trait NistCurve: Send {
    /// The curve's name in errors.
    const NAME: &'static str;
    /// Bytes of a field element (and of a scalar).
    const FIELD_LEN: usize;
    /// Mask for the first byte of a random scalar, so that P-521's 66 bytes hold 521 bits.
    const TOP_MASK: u8;
    /// An ephemeral private key; zeroized when dropped.
    type Secret: Send;

    /// A scalar from exactly `FIELD_LEN` big-endian bytes, if it is in 1..n.
    fn secret_from_bytes(bytes: &[u8]) -> Option<Self::Secret>;
    /// The uncompressed encoding of the public point of `secret`.
    fn public(secret: &Self::Secret) -> Vec<u8>;
    /// The x coordinate of `secret * peer`, once `peer` is known to be a point of the curve
    /// other than the identity.
    fn shared_x(secret: &Self::Secret, peer: &[u8]) -> Option<Zeroizing<Vec<u8>>>;
}

macro_rules! nist_curve {
    ($ty:ident, $krate:ident, $name:expr, $len:expr, $mask:expr) => {
        /// One NIST curve for [`NistEcdh`].
        #[derive(Debug)]
        pub struct $ty;

        impl NistCurve for $ty {
            const NAME: &'static str = $name;
            const FIELD_LEN: usize = $len;
            const TOP_MASK: u8 = $mask;
            type Secret = $krate::SecretKey;

            fn secret_from_bytes(bytes: &[u8]) -> Option<Self::Secret> {
                $krate::SecretKey::from_slice(bytes).ok()
            }

            fn public(secret: &Self::Secret) -> Vec<u8> {
                use $krate::elliptic_curve::sec1::ToSec1Point as _;
                secret.public_key().to_sec1_point(false).as_bytes().to_vec()
            }

            fn shared_x(secret: &Self::Secret, peer: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
                // from_sec1_bytes checks that the point satisfies the curve equation; the
                // identity has no uncompressed encoding, and our caller admits no other.
                let peer = $krate::PublicKey::from_sec1_bytes(peer).ok()?;
                let shared = secret.diffie_hellman(&peer);
                Some(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
        }
    };
}

nist_curve!(P256, p256, "nistp256", 32, 0xff);
nist_curve!(P384, p384, "nistp384", 48, 0xff);
nist_curve!(P521, p521, "nistp521", 66, 0x01);

/// ECDH on curve `C` for [`SinglePass`](super::SinglePass).
pub struct NistEcdh<C: NistCurve> {
    ours: Option<C::Secret>,
}

impl<C: NistCurve> Default for NistEcdh<C> {
    fn default() -> Self {
        Self { ours: None }
    }
}

impl<C: NistCurve> fmt::Debug for NistEcdh<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NistEcdh({})", C::NAME)
    }
}

/// Draws scalars until one is in 1..n. For P-256 and P-384 a draw fails with probability
/// below 2^-32, for P-521 (after masking to 521 bits) below 2^-260, so the bound only stops a
/// broken generator (one returning all zeros, say) from looping forever.
const MAX_DRAWS: usize = 64;

pub(crate) fn generate<C: NistCurve>(
    rng: &mut dyn SecureRandom,
) -> Result<(C::Secret, Vec<u8>), KexError> {
    let mut bytes = Zeroizing::new(vec![0u8; C::FIELD_LEN]);
    for _ in 0..MAX_DRAWS {
        rng.fill(&mut bytes);
        if let Some(first) = bytes.first_mut() {
            *first &= C::TOP_MASK;
        }
        if let Some(secret) = C::secret_from_bytes(&bytes) {
            let public = C::public(&secret);
            return Ok((secret, public));
        }
    }
    Err(KexError::Invalid(format!(
        "the random generator gave no valid {} private key in {MAX_DRAWS} draws",
        C::NAME
    )))
}

/// K from our secret and the peer's point, the point checked first.
pub(crate) fn agree<C: NistCurve>(
    secret: &C::Secret,
    peer: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KexError> {
    let want = 1 + 2 * C::FIELD_LEN;
    // OpenSSH sends and accepts only uncompressed points; so do we.
    if peer.len() != want || peer.first() != Some(&0x04) {
        return Err(KexError::Invalid(format!(
            "the peer's {} public value is not an uncompressed point ({} bytes starting \
             with 0x04; got {} bytes)",
            C::NAME,
            want,
            peer.len()
        )));
    }
    let x = C::shared_x(secret, peer).ok_or_else(|| {
        KexError::Invalid(format!(
            "the peer's {} public value is not a point on the curve",
            C::NAME
        ))
    })?;
    let mut k = Zeroizing::new(Vec::with_capacity(x.len() + 5));
    k.put_mpint(&x);
    Ok(k)
}

impl<C: NistCurve> Agreement for NistEcdh<C> {
    fn client_public(&mut self, rng: &mut dyn SecureRandom) -> Result<Vec<u8>, KexError> {
        let (secret, public) = generate::<C>(rng)?;
        self.ours = Some(secret);
        Ok(public)
    }

    fn client_finish(&mut self, server_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, KexError> {
        let secret = self.ours.take().ok_or(KexError::OutOfOrder)?;
        agree::<C>(&secret, server_public)
    }

    fn server_respond(
        &mut self,
        client_public: &[u8],
        rng: &mut dyn SecureRandom,
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), KexError> {
        let (secret, public) = generate::<C>(rng)?;
        let k = agree::<C>(&secret, client_public)?;
        Ok((public, k))
    }
}
