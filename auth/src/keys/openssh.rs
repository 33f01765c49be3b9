//! OpenSSH's own key format (`openssh-key-v1`, described in OpenSSH's PROTOCOL.key):
//!
//! ```text
//! "openssh-key-v1\0"  string cipher  string kdf  string kdf-options  uint32 count(=1)
//! string public-key-blob  string private-section
//! private-section = uint32 check  uint32 check  <type-specific private key>  string comment
//!                   padding 1,2,3,... to a multiple of the cipher block size (8 for "none")
//! ```

use ssh_transport::hostkey::blob_key_type;
use ssh_transport::text::sanitize;
use ssh_transport::wire::{DecodeError, Reader};

use super::{PrivateKey, RsaParts};
use crate::error::KeyFileError;

pub(super) const MAGIC: &[u8] = b"openssh-key-v1\0";
/// The block size of cipher "none", which the private section is padded to.
const BLOCK: usize = 8;
/// Comments longer than this are cut: they are only ever shown to a person.
const MAX_COMMENT_CHARS: usize = 256;

fn malformed(what: &'static str) -> impl Fn(DecodeError) -> KeyFileError {
    move |e| KeyFileError::Malformed(format!("{what}: {e}"))
}

/// Parses the decoded body of an `OPENSSH PRIVATE KEY` block.
pub(super) fn parse(bin: &[u8]) -> Result<PrivateKey, KeyFileError> {
    let rest = bin.strip_prefix(MAGIC).ok_or_else(|| {
        KeyFileError::Malformed("the key does not start with the openssh-key-v1 marker".into())
    })?;
    let mut r = Reader::new(rest);
    let header = malformed("the key's header");
    let cipher = r.string().map_err(&header)?;
    let kdf = r.string().map_err(&header)?;
    // Decided before reading further: an encrypted key is reported as such even if the rest
    // would not parse without the passphrase.
    if cipher != b"none" || kdf != b"none" {
        return Err(KeyFileError::Encrypted);
    }
    let kdf_options = r.string().map_err(&header)?;
    if !kdf_options.is_empty() {
        return Err(KeyFileError::Malformed(
            "kdf \"none\" comes with kdf options".into(),
        ));
    }
    let count = r.u32().map_err(&header)?;
    if count != 1 {
        return Err(KeyFileError::Malformed(format!(
            "the file holds {count} keys; exactly one is supported"
        )));
    }
    let public_blob = r.string().map_err(&header)?;
    let private = r.string().map_err(&header)?;
    r.finish().map_err(&header)?;

    let key_type = blob_key_type(public_blob).map_err(malformed("the public key"))?;
    if key_type != "ssh-rsa" && key_type != "ssh-ed25519" {
        return Err(KeyFileError::UnsupportedKeyType(sanitize(
            key_type.as_bytes(),
            false,
            64,
        )));
    }

    if private.len() % BLOCK != 0 {
        return Err(KeyFileError::Malformed(
            "the private section is not a whole number of 8-byte blocks".into(),
        ));
    }
    let mut p = Reader::new(private);
    let section = malformed("the private section");
    let check1 = p.u32().map_err(&section)?;
    let check2 = p.u32().map_err(&section)?;
    if check1 != check2 {
        return Err(KeyFileError::Malformed(
            "the two check numbers of the private section differ".into(),
        ));
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
    let padding_ok = padding.len() < 256
        && padding
            .iter()
            .zip(1u8..)
            .all(|(&byte, expected)| byte == expected);
    if !padding_ok {
        return Err(KeyFileError::Malformed(
            "the private section's padding is not 1, 2, 3, ...".into(),
        ));
    }

    let key = match parts {
        Parts::Ed25519 { seed, public } => PrivateKey::ed25519_parts(seed, public, comment)?,
        Parts::Rsa(rsa) => PrivateKey::rsa_parts(&rsa, comment)?,
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
}
