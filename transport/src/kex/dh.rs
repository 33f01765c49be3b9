//! Finite-field Diffie-Hellman (RFC 4253 section 8): the fixed MODP groups of RFC 8268
//! (`diffie-hellman-group14-sha256`, `-group16-sha512`, `-group18-sha512`) and the arithmetic
//! that group exchange (RFC 4419) shares with them.
//!
//! ```text
//!  client: x random (2 * hash bits long), e = g^x mod p   ── KEXDH_INIT (30):  mpint e
//!  server: y random,                      f = g^y mod p   ── KEXDH_REPLY (31): K_S, mpint f, sig
//!  both:   check 1 < e, f < p-1;  K = f^x = e^y mod p, as an mpint
//! ```
//!
//! Exponentiation uses `crypto-bigint`'s Montgomery form, whose `pow` does the same squarings
//! and multiplications, and reads the same table entries through constant-time selection,
//! whatever the exponent's value: the time taken reveals the exponent's length (fixed here)
//! and not its bits.

use core::fmt;

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};
use zeroize::{Zeroize as _, Zeroizing};

use super::{Agreement, KexError, groups};
use crate::random::SecureRandom;
use crate::wire::Writer;

/// The largest modulus we compute with: OpenSSH's DH_GRP_MAX, and the largest RFC 3526 group.
pub const MAX_MODULUS_BITS: u32 = 8192;

/// The bit length of a big-endian magnitude (leading zero bytes allowed).
pub(crate) fn bit_length(magnitude: &[u8]) -> u32 {
    let digits = match magnitude.iter().position(|&b| b != 0) {
        Some(i) => magnitude.get(i..).unwrap_or_default(),
        None => return 0,
    };
    let top = digits.first().copied().unwrap_or(0);
    let bytes = u32::try_from(digits.len()).unwrap_or(u32::MAX);
    bytes.saturating_mul(8).saturating_sub(top.leading_zeros())
}

fn round_to_limbs(bits: u32) -> u32 {
    bits.div_ceil(64).saturating_mul(64)
}

/// A prime-order-ish group (p, g) ready for exponentiation. Only its size, oddness and the
/// range of g are checked: primality is the server's responsibility, as in OpenSSH, and the
/// exchange hash binds the group the server chose.
#[derive(Clone)]
pub struct Group {
    p_minus_1: BoxedUint,
    g: BoxedUint,
    params: BoxedMontyParams,
    p_magnitude: Vec<u8>,
    g_magnitude: Vec<u8>,
    bits: u32,
    precision: u32,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Group({} bits)", self.bits)
    }
}

impl Group {
    /// A group from the big-endian magnitudes of p and g. Refuses an even p, a p larger than
    /// [`MAX_MODULUS_BITS`], and g outside 1 < g < p-1.
    pub fn new(p: &[u8], g: &[u8]) -> Result<Self, KexError> {
        let bits = bit_length(p);
        if bits > MAX_MODULUS_BITS {
            return Err(KexError::Invalid(format!(
                "the Diffie-Hellman modulus has {bits} bits, more than the {MAX_MODULUS_BITS} \
                 we accept"
            )));
        }
        if bits < 3 {
            return Err(KexError::Invalid(
                "the Diffie-Hellman modulus is too small to be a group".into(),
            ));
        }
        let precision = round_to_limbs(bits);
        let decode = |v: &[u8]| {
            BoxedUint::from_be_slice(strip(v), precision).map_err(|_| {
                KexError::Invalid("a Diffie-Hellman value is larger than the modulus".into())
            })
        };
        let p_int = decode(p)?;
        let odd = Option::<Odd<BoxedUint>>::from(Odd::new(p_int.clone())).ok_or_else(|| {
            KexError::Invalid("the Diffie-Hellman modulus is even, so it is not a prime".into())
        })?;
        let g_int = decode(g)?;
        let one = BoxedUint::one_with_precision(precision);
        let p_minus_1 = p_int.wrapping_sub(&one);
        if g_int <= one || g_int >= p_minus_1 {
            return Err(KexError::Invalid(
                "the Diffie-Hellman generator is outside 1 < g < p-1".into(),
            ));
        }
        Ok(Self {
            params: BoxedMontyParams::new_vartime(odd),
            p_minus_1,
            g: g_int,
            p_magnitude: strip(p).to_vec(),
            g_magnitude: strip(g).to_vec(),
            bits,
            precision,
        })
    }

    /// One of the RFC 3526 groups (generator 2).
    pub(crate) fn rfc3526(p: &[u8]) -> Self {
        // The constants are checked by the tests; a failure here is a build error in spirit.
        Self::new(p, &[2]).unwrap_or_else(|_| unreachable!("RFC 3526 groups are valid"))
    }

    /// The modulus's bit length.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// p's magnitude, big-endian without leading zeros.
    pub fn p(&self) -> &[u8] {
        &self.p_magnitude
    }

    /// g's magnitude.
    pub fn g(&self) -> &[u8] {
        &self.g_magnitude
    }

    /// Decodes a peer's public value and checks 1 < v < p-1 (RFC 4253 section 8): 0, 1 and
    /// p-1 would force the shared secret into a set of at most two values.
    pub fn check_public(&self, v: &[u8]) -> Result<BoxedUint, KexError> {
        let out_of_range = || {
            KexError::Invalid(
                "the peer's Diffie-Hellman public value is outside 1 < f < p-1".into(),
            )
        };
        if bit_length(v) > self.bits {
            return Err(out_of_range());
        }
        let n = BoxedUint::from_be_slice(strip(v), self.precision).map_err(|_| out_of_range())?;
        let one = BoxedUint::one_with_precision(self.precision);
        if n <= one || n >= self.p_minus_1 {
            return Err(out_of_range());
        }
        Ok(n)
    }

    /// A fresh exponent of `exponent_bits` bits and its public value g^x.
    pub fn keypair(
        &self,
        rng: &mut dyn SecureRandom,
        exponent_bits: u32,
    ) -> Result<(Secret, Vec<u8>), KexError> {
        // The exponent may not be longer than p; OpenSSH caps it at bits(p) - 1 too.
        let bits = exponent_bits.min(self.bits.saturating_sub(1));
        let precision = round_to_limbs(bits);
        let len = usize::try_from(precision / 8).unwrap_or(0);
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        for _ in 0..64 {
            rng.fill(&mut bytes);
            clear_high_bits(&mut bytes, precision - bits);
            let x = Secret {
                x: BoxedUint::from_be_slice_truncated(&bytes, precision),
            };
            // x < 2 would make e = 1 or g: the range check below refuses e in those cases, and
            // another draw is cheap.
            let e = self.pow(&self.g, &x.x);
            if e > BoxedUint::one_with_precision(self.precision) && e < self.p_minus_1 {
                let e = e.to_be_bytes();
                return Ok((x, strip(&e).to_vec()));
            }
        }
        Err(KexError::Invalid(
            "the random generator gave no usable Diffie-Hellman exponent in 64 draws".into(),
        ))
    }

    /// K = peer^x mod p as an mpint; `peer` must come from [`check_public`](Self::check_public).
    pub fn shared(&self, x: &Secret, peer: &BoxedUint) -> Zeroizing<Vec<u8>> {
        let mut k = self.pow(peer, &x.x);
        let mut bytes = Zeroizing::new(k.to_be_bytes().into_vec());
        k.zeroize();
        let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() + 5));
        out.put_mpint(&bytes);
        bytes.zeroize();
        out
    }

    fn pow(&self, base: &BoxedUint, exponent: &BoxedUint) -> BoxedUint {
        let mut base = BoxedMontyForm::new(base.clone(), &self.params);
        let mut r = base.pow(exponent);
        let out = r.retrieve();
        base.zeroize();
        r.zeroize();
        out
    }
}

fn strip(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    v.get(start..).unwrap_or_default()
}

fn clear_high_bits(bytes: &mut [u8], mut n: u32) {
    for b in bytes.iter_mut() {
        if n == 0 {
            return;
        }
        if n >= 8 {
            *b = 0;
            n -= 8;
        } else {
            *b &= 0xff >> n;
            return;
        }
    }
}

/// A private exponent; zeroized when dropped.
pub struct Secret {
    x: BoxedUint,
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.x.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The exponent length for a method: twice the bits of its hash, as a security margin over
/// the symmetric keys the hash derives (OpenSSH uses twice its estimate of the keys' needs).
pub(crate) fn exponent_bits(hash: &'static ring::digest::Algorithm) -> u32 {
    u32::try_from(hash.output_len() * 16).unwrap_or(512)
}

/// A fixed RFC 3526 group as an [`Agreement`].
pub struct FixedGroupDh {
    modulus: &'static [u8],
    exponent_bits: u32,
    group: Option<Group>,
    ours: Option<Secret>,
}

impl fmt::Debug for FixedGroupDh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FixedGroupDh({} bits)", self.modulus.len() * 8)
    }
}

impl FixedGroupDh {
    /// Group 14 (2048 bits).
    pub fn group14(exponent_bits: u32) -> Self {
        Self::with(&groups::GROUP14, exponent_bits)
    }
    /// Group 16 (4096 bits).
    pub fn group16(exponent_bits: u32) -> Self {
        Self::with(&groups::GROUP16, exponent_bits)
    }
    /// Group 18 (8192 bits).
    pub fn group18(exponent_bits: u32) -> Self {
        Self::with(&groups::GROUP18, exponent_bits)
    }

    fn with(modulus: &'static [u8], exponent_bits: u32) -> Self {
        Self {
            modulus,
            exponent_bits,
            group: None,
            ours: None,
        }
    }

    fn group(&mut self) -> &Group {
        self.group
            .get_or_insert_with(|| Group::rfc3526(self.modulus))
    }
}

impl Agreement for FixedGroupDh {
    fn values_are_mpints(&self) -> bool {
        true
    }

    fn client_public(&mut self, rng: &mut dyn SecureRandom) -> Result<Vec<u8>, KexError> {
        let bits = self.exponent_bits;
        let (x, e) = self.group().keypair(rng, bits)?;
        self.ours = Some(x);
        Ok(e)
    }

    fn client_finish(&mut self, server_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, KexError> {
        let x = self.ours.take().ok_or(KexError::OutOfOrder)?;
        let group = self.group();
        let f = group.check_public(server_public)?;
        Ok(group.shared(&x, &f))
    }

    fn server_respond(
        &mut self,
        client_public: &[u8],
        rng: &mut dyn SecureRandom,
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), KexError> {
        let bits = self.exponent_bits;
        let group = self.group().clone();
        let e = group.check_public(client_public)?;
        let (y, f) = group.keypair(rng, bits)?;
        Ok((f, group.shared(&y, &e)))
    }
}
