//! DER keys inside PEM blocks: PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY`, PKCS#8
//! `PRIVATE KEY` (RSA, Ed25519, ECDSA) and PKCS#8 `ENCRYPTED PRIVATE KEY` (PBES2: PBKDF2 or
//! scrypt with AES-CBC, AES-GCM or Triple DES). The RustCrypto `der` decoders check every
//! length against the input and reject trailing bytes.

use pkcs8::der::Decode as _;
use pkcs8::der::asn1::ObjectIdentifier;
use pkcs8::pkcs5::pbes2;

use super::ecdsa::{Curve, EcdsaKey};
use super::rsa_key::{RsaKey, RsaParts};
use super::{KdfLimits, PrivateKey};
use crate::error::KeyFileError;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");

/// Parses the DER of a PKCS#1 `RSAPrivateKey`.
pub(super) fn pkcs1(der: &[u8]) -> Result<PrivateKey, KeyFileError> {
    let key = rsa::pkcs1::RsaPrivateKeyRef::from_der(der)
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
    PrivateKey::from_rsa(RsaKey::from_parts(&parts)?, String::new())
}

/// Parses the DER of a SEC1 `ECPrivateKey` (RFC 5915). `outer_curve` is the curve a PKCS#8
/// wrapper named, if any; the two must agree when both are present.
pub(super) fn sec1(der: &[u8], outer_curve: Option<Curve>) -> Result<PrivateKey, KeyFileError> {
    let key = sec1::EcPrivateKey::from_der(der)
        .map_err(|e| KeyFileError::Malformed(format!("the EC private key does not decode: {e}")))?;
    let inner_curve = match key.parameters.and_then(|p| p.named_curve()) {
        Some(oid) => Some(Curve::from_oid(oid).ok_or_else(|| {
            KeyFileError::UnsupportedKeyType(format!("ECDSA on the curve {oid}"))
        })?),
        None => None,
    };
    let curve = match (outer_curve, inner_curve) {
        (Some(a), Some(b)) if a != b => {
            return Err(KeyFileError::Malformed(
                "the PKCS#8 wrapper and the EC key name different curves".into(),
            ));
        }
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => {
            return Err(KeyFileError::Malformed(
                "the EC private key does not name its curve".into(),
            ));
        }
    };
    let ecdsa = EcdsaKey::from_scalar(curve, key.private_key)?;
    if let Some(public) = key.public_key
        && public != ecdsa.public_point().as_slice()
    {
        return Err(KeyFileError::InvalidKey(
            "the EC private key holds another public key than its scalar gives".into(),
        ));
    }
    PrivateKey::from_ecdsa(ecdsa, String::new())
}

/// Parses the DER of an unencrypted PKCS#8 `PrivateKeyInfo`.
pub(super) fn pkcs8(der: &[u8]) -> Result<PrivateKey, KeyFileError> {
    let info = pkcs8::PrivateKeyInfoRef::from_der(der)
        .map_err(|e| KeyFileError::Malformed(format!("the PKCS#8 key does not decode: {e}")))?;
    let oid = info.algorithm.oid;
    let private_key = info.private_key.as_bytes();
    if oid == OID_RSA {
        pkcs1(private_key)
    } else if oid == OID_ED25519 {
        // RFC 8410: the private key is an OCTET STRING holding the 32-byte seed.
        let seed = match private_key {
            [0x04, 0x20, seed @ ..] => <&[u8; 32]>::try_from(seed).ok(),
            _ => None,
        }
        .ok_or_else(|| {
            KeyFileError::Malformed("the PKCS#8 Ed25519 private key is not 32 bytes".into())
        })?;
        let key = PrivateKey::from_ed25519_seed(seed, "")?;
        // A version 2 structure carries the public key too.
        if let Some(public) = info.public_key {
            let ours = key.public_key().blob().get(19..).unwrap_or_default();
            if public.as_bytes() != Some(ours) {
                return Err(KeyFileError::Malformed(
                    "the PKCS#8 public key does not match the private key".into(),
                ));
            }
        }
        Ok(key)
    } else if oid == OID_EC {
        let curve_oid = info.algorithm.parameters_oid().map_err(|_| {
            KeyFileError::Malformed("the PKCS#8 EC key does not name its curve".into())
        })?;
        let curve = Curve::from_oid(curve_oid).ok_or_else(|| {
            KeyFileError::UnsupportedKeyType(format!("ECDSA on the curve {curve_oid}"))
        })?;
        sec1(private_key, Some(curve))
    } else {
        let name = if oid == OID_DSA {
            "ssh-dss (DSA)".to_owned()
        } else if oid == OID_ED448 {
            "Ed448".to_owned()
        } else {
            format!("{oid} (a PKCS#8 algorithm)")
        };
        Err(KeyFileError::UnsupportedKeyType(name))
    }
}

/// Parses the DER of a PKCS#8 `EncryptedPrivateKeyInfo`. Its scheme and cost are checked
/// before a passphrase is asked for.
pub(super) fn encrypted_pkcs8(
    der: &[u8],
    passphrase: Option<&[u8]>,
    limits: &KdfLimits,
) -> Result<PrivateKey, KeyFileError> {
    let info = pkcs8::EncryptedPrivateKeyInfoRef::from_der(der).map_err(|e| {
        match scheme_oid(der) {
            // The structure is sound; its scheme is one the decoder does not know.
            Some(oid) => {
                KeyFileError::UnsupportedEncryption(format!("the scheme {}", scheme_name(oid)))
            }
            None => {
                KeyFileError::Malformed(format!("the encrypted PKCS#8 key does not decode: {e}"))
            }
        }
    })?;
    let Some(params) = info.encryption_algorithm.pbes2() else {
        return Err(KeyFileError::UnsupportedEncryption(format!(
            "the scheme {}",
            scheme_name(info.encryption_algorithm.oid())
        )));
    };
    check_pbes2_cost(params, limits)?;
    let passphrase = passphrase.ok_or(KeyFileError::PassphraseRequired)?;
    // A padding failure is what a wrong passphrase gives; 1 in 256 wrong passphrases pads
    // correctly by chance and fails as DER instead. Both read as a wrong passphrase.
    let plain = info
        .decrypt(passphrase)
        .map_err(|_| KeyFileError::WrongPassphrase)?;
    if pkcs8::PrivateKeyInfoRef::from_der(plain.as_bytes()).is_err() {
        return Err(KeyFileError::WrongPassphrase);
    }
    pkcs8(plain.as_bytes())
}

/// The algorithm OID of an `EncryptedPrivateKeyInfo` (`SEQUENCE { AlgorithmIdentifier,
/// OCTET STRING }`) read without understanding its parameters.
fn scheme_oid(der: &[u8]) -> Option<ObjectIdentifier> {
    use pkcs8::der::Reader as _;
    let outer = pkcs8::der::asn1::AnyRef::from_der(der).ok()?;
    let mut reader = pkcs8::der::SliceReader::new(outer.value()).ok()?;
    let alg: pkcs8::spki::AlgorithmIdentifierRef<'_> = reader.decode().ok()?;
    Some(alg.oid)
}

/// A readable name for an encryption scheme's OID.
fn scheme_name(oid: ObjectIdentifier) -> String {
    const PKCS12_PBE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1");
    const PKCS5: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5");
    if oid.parent() == Some(PKCS12_PBE) {
        format!("PKCS#12 PBE {oid}")
    } else if oid.parent() == Some(PKCS5) {
        format!("PKCS#5 {oid}")
    } else {
        oid.to_string()
    }
}

/// Refuses key derivations that would take minutes or gigabytes, and parameters the
/// decryption library would trip over (scrypt's N must be a power of two above 1).
fn check_pbes2_cost(params: &pbes2::Parameters, limits: &KdfLimits) -> Result<(), KeyFileError> {
    match &params.kdf {
        pbes2::Kdf::Pbkdf2(p) => {
            if p.iteration_count == 0 {
                return Err(KeyFileError::Malformed("PBKDF2 with 0 iterations".into()));
            }
            if p.iteration_count > limits.pbkdf2_iterations {
                return Err(KeyFileError::KdfTooCostly(format!(
                    "{} PBKDF2 iterations (at most {} are accepted)",
                    p.iteration_count, limits.pbkdf2_iterations
                )));
            }
        }
        pbes2::Kdf::Scrypt(p) => {
            let n = p.cost_parameter;
            let r = u64::from(p.block_size);
            let par = u64::from(p.parallelization);
            if n < 2 || !n.is_power_of_two() || r == 0 || par == 0 {
                return Err(KeyFileError::Malformed(format!(
                    "scrypt parameters N={n} r={r} p={par} are not valid"
                )));
            }
            let memory = n.saturating_mul(r).saturating_mul(128);
            let work = n.saturating_mul(r).saturating_mul(par);
            if memory > limits.scrypt_memory || work > limits.scrypt_work {
                return Err(KeyFileError::KdfTooCostly(format!(
                    "scrypt with N={n} r={r} p={par} ({} MiB of memory; at most {} MiB and \
                     N·r·p of {} are accepted)",
                    memory / (1024 * 1024),
                    limits.scrypt_memory / (1024 * 1024),
                    limits.scrypt_work
                )));
            }
        }
        other => {
            return Err(KeyFileError::UnsupportedEncryption(format!(
                "the key derivation {}",
                other.oid()
            )));
        }
    }
    Ok(())
}
