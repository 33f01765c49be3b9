//! ECDSA user keys on the NIST curves (RFC 5656): signing is RustCrypto's, deterministic
//! (RFC 6979: the nonce is derived from the key and the message, so a weak RNG cannot leak the
//! key) and constant time.

use p256::ecdsa::signature::Signer as _;
use pkcs8::der::asn1::ObjectIdentifier;
use ssh_transport::wire::Writer as _;
use zeroize::Zeroizing;

use crate::error::{KeyFileError, SignError};

/// A curve, with its SSH and ASN.1 names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Curve {
    P256,
    P384,
    P521,
}

pub(super) const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub(super) const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub(super) const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

impl Curve {
    /// The key type name, `ecdsa-sha2-<curve>`.
    pub(super) fn key_type_name(self) -> &'static str {
        match self {
            Self::P256 => "ecdsa-sha2-nistp256",
            Self::P384 => "ecdsa-sha2-nistp384",
            Self::P521 => "ecdsa-sha2-nistp521",
        }
    }

    /// The curve's name inside key blobs.
    pub(super) fn ssh_name(self) -> &'static str {
        match self {
            Self::P256 => "nistp256",
            Self::P384 => "nistp384",
            Self::P521 => "nistp521",
        }
    }

    pub(super) fn from_key_type_name(name: &str) -> Option<Self> {
        [Self::P256, Self::P384, Self::P521]
            .into_iter()
            .find(|c| c.key_type_name() == name)
    }

    pub(super) fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        match oid {
            OID_P256 => Some(Self::P256),
            OID_P384 => Some(Self::P384),
            OID_P521 => Some(Self::P521),
            _ => None,
        }
    }

    /// Bytes in a scalar of the curve's order.
    fn scalar_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }
}

/// An ECDSA private key. The RustCrypto signing keys wipe their scalar when dropped.
pub(super) enum EcdsaKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
}

impl EcdsaKey {
    /// A key from its private scalar, big-endian, at most the curve's scalar length once
    /// leading zeros are dropped (OpenSSH's mpint and SEC1's octet string differ in those).
    pub(super) fn from_scalar(curve: Curve, scalar: &[u8]) -> Result<Self, KeyFileError> {
        let digits = scalar
            .iter()
            .position(|&b| b != 0)
            .and_then(|i| scalar.get(i..))
            .unwrap_or_default();
        let len = curve.scalar_len();
        let start = len.checked_sub(digits.len()).ok_or_else(|| {
            KeyFileError::InvalidKey(format!(
                "the {} private scalar is longer than the curve's order",
                curve.ssh_name()
            ))
        })?;
        let mut fixed = Zeroizing::new(vec![0u8; len]);
        if let Some(dst) = fixed.get_mut(start..) {
            dst.copy_from_slice(digits);
        }
        let invalid = |_| {
            KeyFileError::InvalidKey(format!(
                "the {} private scalar is zero or not below the curve's order",
                curve.ssh_name()
            ))
        };
        Ok(match curve {
            Curve::P256 => {
                Self::P256(p256::ecdsa::SigningKey::from_slice(&fixed).map_err(invalid)?)
            }
            Curve::P384 => {
                Self::P384(p384::ecdsa::SigningKey::from_slice(&fixed).map_err(invalid)?)
            }
            Curve::P521 => {
                Self::P521(p521::ecdsa::SigningKey::from_slice(&fixed).map_err(invalid)?)
            }
        })
    }

    pub(super) fn curve(&self) -> Curve {
        match self {
            Self::P256(_) => Curve::P256,
            Self::P384(_) => Curve::P384,
            Self::P521(_) => Curve::P521,
        }
    }

    /// The public point, SEC1 uncompressed (`04 || x || y`).
    pub(super) fn public_point(&self) -> Vec<u8> {
        match self {
            Self::P256(k) => k.verifying_key().to_sec1_bytes().into_vec(),
            Self::P384(k) => k.verifying_key().to_sec1_bytes().into_vec(),
            Self::P521(k) => k.verifying_key().to_sec1_bytes().into_vec(),
        }
    }

    /// The SSH public key blob: `string key-type, string curve, string Q`.
    pub(super) fn public_blob(&self) -> Vec<u8> {
        let curve = self.curve();
        let mut blob = Vec::new();
        blob.put_str(curve.key_type_name());
        blob.put_str(curve.ssh_name());
        blob.put_string(&self.public_point());
        blob
    }

    /// The private scalar, big-endian, of the curve's scalar length.
    pub(super) fn scalar(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self {
            Self::P256(k) => Zeroizing::new(k.to_bytes()).to_vec(),
            Self::P384(k) => Zeroizing::new(k.to_bytes()).to_vec(),
            Self::P521(k) => Zeroizing::new(k.to_bytes()).to_vec(),
        })
    }

    /// The inside of an SSH ECDSA signature (RFC 5656 3.1.2): `mpint r, mpint s`, over the
    /// curve's hash of `data` (SHA-256, SHA-384, SHA-512).
    pub(super) fn sign(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let (r, s) = match self {
            Self::P256(k) => {
                let sig: p256::ecdsa::Signature =
                    k.try_sign(data).map_err(|_| SignError::Failed)?;
                let (r, s) = sig.split_bytes();
                (r.to_vec(), s.to_vec())
            }
            Self::P384(k) => {
                let sig: p384::ecdsa::Signature =
                    k.try_sign(data).map_err(|_| SignError::Failed)?;
                let (r, s) = sig.split_bytes();
                (r.to_vec(), s.to_vec())
            }
            Self::P521(k) => {
                let sig: p521::ecdsa::Signature =
                    k.try_sign(data).map_err(|_| SignError::Failed)?;
                let (r, s) = sig.split_bytes();
                (r.to_vec(), s.to_vec())
            }
        };
        let mut out = Vec::with_capacity(r.len() + s.len() + 10);
        out.put_mpint(&r);
        out.put_mpint(&s);
        Ok(out)
    }
}
