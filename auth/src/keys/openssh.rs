//! OpenSSH's own key format (`openssh-key-v1`, described in OpenSSH's PROTOCOL.key):
//!
//! ```text
//! "openssh-key-v1\0"  string cipher  string kdf  string kdf-options  uint32 count(=1)
//! string public-key-blob  string private-section  [GCM tag]
//! kdf-options (bcrypt) = string salt  uint32 rounds     key || iv = bcrypt_pbkdf(passphrase)
//! private-section = uint32 check  uint32 check  <type-specific private key>  string comment
//!                   padding 1,2,3,... to a multiple of the cipher block size (8 for "none")
//! ```
//!
//! Everything before the private section is read and checked before a passphrase is asked
//! for, so that a damaged or unsupported file is reported as such, not as a wrong passphrase.

use ssh_transport::hostkey::blob_key_type;
use ssh_transport::text::sanitize;
use ssh_transport::wire::{DecodeError, Reader, Writer as _};
use zeroize::Zeroizing;

use super::ecdsa::{Curve, EcdsaKey};
use super::rsa_key::{RsaKey, RsaParts};
use super::{KdfLimits, PrivateKey, sym};
use crate::error::KeyFileError;

pub(super) const MAGIC: &[u8] = b"openssh-key-v1\0";
/// Comments longer than this are cut: they are only ever shown to a person.
const MAX_COMMENT_CHARS: usize = 256;
/// Longer bcrypt salts serve no purpose; OpenSSH writes 16 bytes.
const MAX_SALT_LEN: usize = 1024;
/// Base64 characters per line, as `ssh-keygen` writes them.
const LINE_LEN: usize = 70;

fn malformed(what: &'static str) -> impl Fn(DecodeError) -> KeyFileError {
    move |e| KeyFileError::Malformed(format!("{what}: {e}"))
}

/// The unencrypted header of a file: enough to report what the file is before decrypting.
struct Header<'a> {
    cipher: &'static sym::Cipher,
    /// bcrypt's salt and rounds, for an encrypted key.
    kdf: Option<(&'a [u8], u32)>,
    public_blob: &'a [u8],
    private: &'a [u8],
    tag: &'a [u8],
}

/// Whether the file names a cipher other than `none`, whatever else it holds.
pub(super) fn is_encrypted(bin: &[u8]) -> bool {
    bin.strip_prefix(MAGIC)
        .and_then(|rest| Reader::new(rest).string().ok())
        .is_some_and(|cipher| cipher != b"none")
}

/// Reads and checks everything outside the private section.
fn header<'a>(bin: &'a [u8], limits: &KdfLimits) -> Result<Header<'a>, KeyFileError> {
    let rest = bin.strip_prefix(MAGIC).ok_or_else(|| {
        KeyFileError::Malformed("the key does not start with the openssh-key-v1 marker".into())
    })?;
    let mut r = Reader::new(rest);
    let header = malformed("the key's header");
    let cipher_name = r.string().map_err(&header)?;
    let kdf_name = r.string().map_err(&header)?;
    let kdf_options = r.string().map_err(&header)?;
    let cipher = sym::openssh(cipher_name).ok_or_else(|| {
        KeyFileError::UnsupportedEncryption(format!("cipher {}", sanitize(cipher_name, false, 64)))
    })?;
    let kdf = if cipher.is_none() {
        if kdf_name != b"none" || !kdf_options.is_empty() {
            return Err(KeyFileError::Malformed(
                "an unencrypted key names a key derivation".into(),
            ));
        }
        None
    } else {
        if kdf_name != b"bcrypt" {
            return Err(KeyFileError::UnsupportedEncryption(format!(
                "key derivation {}",
                sanitize(kdf_name, false, 64)
            )));
        }
        let mut o = Reader::new(kdf_options);
        let options = malformed("the bcrypt options");
        let salt = o.string().map_err(&options)?;
        let rounds = o.u32().map_err(&options)?;
        o.finish().map_err(&options)?;
        if salt.is_empty() || salt.len() > MAX_SALT_LEN {
            return Err(KeyFileError::Malformed(format!(
                "the bcrypt salt is {} bytes",
                salt.len()
            )));
        }
        if rounds == 0 {
            return Err(KeyFileError::Malformed("bcrypt with 0 rounds".into()));
        }
        if rounds > limits.bcrypt_rounds {
            return Err(KeyFileError::KdfTooCostly(format!(
                "{rounds} bcrypt rounds (at most {} are accepted)",
                limits.bcrypt_rounds
            )));
        }
        Some((salt, rounds))
    };
    let count = r.u32().map_err(&header)?;
    if count != 1 {
        return Err(KeyFileError::Malformed(format!(
            "the file holds {count} keys; exactly one is supported"
        )));
    }
    let public_blob = r.string().map_err(&header)?;
    let private = r.string().map_err(&header)?;
    // An AEAD's tag follows the private section, outside its length.
    let tag = r.rest();
    if tag.len() != cipher.tag_len {
        return Err(KeyFileError::Malformed(
            "unexpected bytes after the private section".into(),
        ));
    }
    if !private.len().is_multiple_of(cipher.block_len) {
        return Err(KeyFileError::Malformed(format!(
            "the private section is not a whole number of {}-byte blocks",
            cipher.block_len
        )));
    }
    let key_type = blob_key_type(public_blob).map_err(malformed("the public key"))?;
    if key_type != "ssh-rsa"
        && key_type != "ssh-ed25519"
        && Curve::from_key_type_name(key_type).is_none()
    {
        return Err(KeyFileError::UnsupportedKeyType(sanitize(
            key_type.as_bytes(),
            false,
            64,
        )));
    }
    Ok(Header {
        cipher,
        kdf,
        public_blob,
        private,
        tag,
    })
}

/// Parses the decoded body of an `OPENSSH PRIVATE KEY` block, decrypting it with `passphrase`
/// if it is encrypted.
pub(super) fn parse(
    bin: &[u8],
    passphrase: Option<&[u8]>,
    limits: &KdfLimits,
) -> Result<PrivateKey, KeyFileError> {
    let h = header(bin, limits)?;
    let Some((salt, rounds)) = h.kdf else {
        return parse_private(h.private, h.public_blob, false);
    };
    let passphrase = passphrase.ok_or(KeyFileError::PassphraseRequired)?;
    if passphrase.is_empty() {
        // OpenSSH never encrypts with an empty passphrase, and bcrypt refuses one.
        return Err(KeyFileError::WrongPassphrase);
    }
    let (key_len, iv_len) = (h.cipher.key_len, h.cipher.iv_len);
    let mut key_iv = Zeroizing::new(vec![0u8; key_len + iv_len]);
    bcrypt_pbkdf::bcrypt_pbkdf(passphrase, salt, rounds, &mut key_iv)
        .map_err(|e| KeyFileError::Malformed(format!("bcrypt refused the parameters: {e}")))?;
    let (key, iv) = key_iv.split_at(key_len);
    let mut plain = Zeroizing::new(h.private.to_vec());
    h.cipher
        .decrypt(key, iv, &mut plain, h.tag)
        .map_err(|_| KeyFileError::WrongPassphrase)?;
    parse_private(&plain, h.public_blob, true)
}

fn parse_private(
    private: &[u8],
    public_blob: &[u8],
    decrypted: bool,
) -> Result<PrivateKey, KeyFileError> {
    let key_type = blob_key_type(public_blob).map_err(malformed("the public key"))?;
    let mut p = Reader::new(private);
    let section = malformed("the private section");
    let check1 = p.u32().map_err(&section)?;
    let check2 = p.u32().map_err(&section)?;
    if check1 != check2 {
        // For an encrypted key this is how OpenSSH, too, tells a wrong passphrase.
        return Err(if decrypted {
            KeyFileError::WrongPassphrase
        } else {
            KeyFileError::Malformed("the two check numbers of the private section differ".into())
        });
    }
    let inner_type = p.string().map_err(&section)?;
    if inner_type != key_type.as_bytes() {
        return Err(KeyFileError::Malformed(
            "the private section names another key type than the public key".into(),
        ));
    }
    let parts = if key_type == "ssh-ed25519" {
        let public = p.string().map_err(&section)?;
        // OpenSSH stores the 32-byte seed followed by the 32-byte public key.
        let secret = p.string().map_err(&section)?;
        let (Ok(public), Some((seed, public_copy))) = (
            <&[u8; 32]>::try_from(public),
            secret.split_first_chunk::<32>(),
        ) else {
            return Err(KeyFileError::Malformed(
                "the Ed25519 key parts have the wrong lengths".into(),
            ));
        };
        if public_copy != public.as_slice() {
            return Err(KeyFileError::Malformed(
                "the Ed25519 private key holds another public key".into(),
            ));
        }
        Parts::Ed25519 { seed, public }
    } else if let Some(curve) = Curve::from_key_type_name(key_type) {
        let curve_name = p.string().map_err(&section)?;
        if curve_name != curve.ssh_name().as_bytes() {
            return Err(KeyFileError::Malformed(
                "the ECDSA curve name does not match the key type".into(),
            ));
        }
        let point = p.string().map_err(&section)?;
        let scalar = p.mpint_positive().map_err(&section)?;
        Parts::Ecdsa {
            curve,
            point,
            scalar,
        }
    } else {
        let n = p.mpint_positive().map_err(&section)?;
        let e = p.mpint_positive().map_err(&section)?;
        let d = p.mpint_positive().map_err(&section)?;
        // iqmp is recomputed from p and q, and ring checks the result against them.
        let _iqmp = p.mpint_positive().map_err(&section)?;
        let prime_p = p.mpint_positive().map_err(&section)?;
        let prime_q = p.mpint_positive().map_err(&section)?;
        Parts::Rsa(RsaParts {
            n,
            e,
            d,
            p: prime_p,
            q: prime_q,
        })
    };
    let comment = sanitize(p.string().map_err(&section)?, false, MAX_COMMENT_CHARS);
    let padding = p.rest();
    // OpenSSH pads to the cipher's block size but, reading, only checks the values.
    let padding_ok = padding.len() < 256
        && padding
            .iter()
            .zip(1..=255u8)
            .all(|(&byte, expected)| byte == expected);
    if !padding_ok {
        return Err(KeyFileError::Malformed(
            "the private section's padding is not 1, 2, 3, ...".into(),
        ));
    }

    let key = match parts {
        Parts::Ed25519 { seed, public } => PrivateKey::ed25519_parts(seed, public, comment)?,
        Parts::Rsa(rsa) => PrivateKey::from_rsa(RsaKey::from_parts(&rsa)?, comment)?,
        Parts::Ecdsa {
            curve,
            point,
            scalar,
        } => {
            let key = EcdsaKey::from_scalar(curve, scalar)?;
            if key.public_point() != point {
                return Err(KeyFileError::InvalidKey(
                    "the ECDSA private scalar does not give the stored public point".into(),
                ));
            }
            PrivateKey::from_ecdsa(key, comment)?
        }
    };
    if key.public_key().blob() != public_blob {
        return Err(KeyFileError::Malformed(
            "the public key does not match the private key".into(),
        ));
    }
    Ok(key)
}

enum Parts<'a> {
    Ed25519 {
        seed: &'a [u8; 32],
        public: &'a [u8; 32],
    },
    Rsa(RsaParts<'a>),
    Ecdsa {
        curve: Curve,
        point: &'a [u8],
        scalar: &'a [u8],
    },
}

/// Writes `key` unencrypted, as `ssh-keygen -N ""` does: cipher and kdf `none`, the two
/// check numbers equal to `check`, padding 1, 2, 3, ... to 8 bytes, base64 in lines of 70.
pub(super) fn encode(
    key: &PrivateKey,
    comment: &str,
    check: u32,
) -> Result<Zeroizing<String>, KeyFileError> {
    let public = key.public_key().blob();
    // Every buffer holding secret bytes is sized up front so that it never reallocates and
    // leaves an unwiped copy behind.
    let private_cap = key.private_len_bound() + comment.len() + 64;
    let mut private = Zeroizing::new(Vec::with_capacity(private_cap));
    private.put_u32(check);
    private.put_u32(check);
    private.put_str(key.public_key().key_type().name());
    key.write_openssh_private(&mut private)?;
    private.put_string(comment.as_bytes());
    let mut pad = 1u8;
    while !private.len().is_multiple_of(8) {
        private.push(pad);
        pad = pad.wrapping_add(1);
    }

    let bin_cap = MAGIC.len() + 64 + public.len() + private.len();
    let mut bin = Zeroizing::new(Vec::with_capacity(bin_cap));
    bin.put_raw(MAGIC);
    bin.put_str("none");
    bin.put_str("none");
    bin.put_string(b"");
    bin.put_u32(1);
    bin.put_string(public);
    bin.put_string(&private);

    use base64::Engine as _;
    let b64_len = bin.len().div_ceil(3) * 4;
    let mut b64 = Zeroizing::new(String::with_capacity(b64_len));
    base64::engine::general_purpose::STANDARD.encode_string(&*bin, &mut b64);
    let begin = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
    let end = "-----END OPENSSH PRIVATE KEY-----\n";
    let mut out = Zeroizing::new(String::with_capacity(
        begin.len() + end.len() + b64_len * 72 / 70 + 2,
    ));
    out.push_str(begin);
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(LINE_LEN));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str(end);
    Ok(out)
}
