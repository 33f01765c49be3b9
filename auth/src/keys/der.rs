//! PEM keys: PKCS#1 `RSA PRIVATE KEY` and unencrypted PKCS#8 `PRIVATE KEY` (RSA or Ed25519).
//! The DER is read with the `pkcs1` / `pkcs8` decoders the `rsa` crate re-exports; they check
//! every length against the input and reject trailing bytes.

use rsa::pkcs8::der::asn1::ObjectIdentifier;

use super::{PrivateKey, RsaParts};
use crate::error::KeyFileError;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");

/// Parses the DER of a PKCS#1 `RSAPrivateKey`.
pub(super) fn pkcs1(der: &[u8]) -> Result<PrivateKey, KeyFileError> {
    let key = rsa::pkcs1::RsaPrivateKey::try_from(der)
        .map_err(|e| KeyFileError::Malformed(format!("the PKCS#1 RSA key does not decode: {e}")))?;
    if key.other_prime_infos.is_some() {
        return Err(KeyFileError::UnsupportedKeyType("multi-prime RSA".into()));
    }
    let parts = RsaParts {
        n: key.modulus.as_bytes(),
        e: key.public_exponent.as_bytes(),
        d: key.private_exponent.as_bytes(),
        p: key.prime1.as_bytes(),
        q: key.prime2.as_bytes(),
    };
    PrivateKey::rsa_parts(&parts, String::new())
}

/// Parses the DER of an unencrypted PKCS#8 `PrivateKeyInfo`.
pub(super) fn pkcs8(der: &[u8]) -> Result<PrivateKey, KeyFileError> {
    let info = rsa::pkcs8::PrivateKeyInfo::try_from(der)
        .map_err(|e| KeyFileError::Malformed(format!("the PKCS#8 key does not decode: {e}")))?;
    let oid = info.algorithm.oid;
    if oid == OID_RSA {
        pkcs1(info.private_key)
    } else if oid == OID_ED25519 {
        // RFC 8410: the private key is an OCTET STRING holding the 32-byte seed.
        let seed = match info.private_key {
            [0x04, 0x20, seed @ ..] => <&[u8; 32]>::try_from(seed).ok(),
            _ => None,
        }
        .ok_or_else(|| {
            KeyFileError::Malformed("the PKCS#8 Ed25519 private key is not 32 bytes".into())
        })?;
        let key = PrivateKey::from_ed25519_seed(seed, "")?;
        // A version 2 structure carries the public key too (as a BIT STRING's contents).
        if let Some(public) = info.public_key {
            let ours = key.public_key().blob().get(19..).unwrap_or_default();
            if public != ours {
                return Err(KeyFileError::Malformed(
                    "the PKCS#8 public key does not match the private key".into(),
                ));
            }
        }
        Ok(key)
    } else {
        let name = if oid == OID_EC {
            "ECDSA".to_owned()
        } else if oid == OID_DSA {
            "ssh-dss (DSA)".to_owned()
        } else if oid == OID_ED448 {
            "Ed448".to_owned()
        } else {
            format!("{oid} (a PKCS#8 algorithm)")
        };
        Err(KeyFileError::UnsupportedKeyType(name))
    }
}
