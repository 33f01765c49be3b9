//! OpenSSL's legacy PEM encryption (RFC 1421 headers), as `ssh-keygen -m PEM` and
//! `openssl rsa -aes256` write it:
//!
//! ```text
//! Proc-Type: 4,ENCRYPTED
//! DEK-Info: AES-128-CBC,<hex IV>
//! key = MD5(passphrase || IV[..8]) || MD5(previous || passphrase || IV[..8]) || ...
//! DER = CBC-decrypt(key, IV, body), PKCS#7 padding removed
//! ```
//!
//! (OpenSSL's `EVP_BytesToKey` with MD5 and one iteration.) MD5 is weak here only in the
//! sense that the derivation is cheap to guess passphrases against; that is the format's
//! weakness, and the reason to prefer OpenSSH's format.

use md5::Digest as _;
use zeroize::Zeroizing;

use super::sym;
use crate::error::KeyFileError;

/// Decrypts the body of a PEM block whose `DEK-Info` header was `dek_info`.
pub(super) fn decrypt(
    dek_info: &str,
    body: &[u8],
    passphrase: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let (cipher_name, iv_hex) = dek_info.split_once(',').ok_or_else(|| {
        KeyFileError::Malformed("the DEK-Info header has no IV after the cipher".into())
    })?;
    let cipher = sym::pem(cipher_name.trim()).ok_or_else(|| {
        KeyFileError::UnsupportedEncryption(format!(
            "the PEM cipher {}",
            ssh_transport::text::sanitize(cipher_name.trim().as_bytes(), false, 64)
        ))
    })?;
    let iv = decode_hex(iv_hex.trim())
        .filter(|iv| iv.len() == cipher.iv_len)
        .ok_or_else(|| {
            KeyFileError::Malformed(format!(
                "the DEK-Info IV is not {} bytes of hex",
                cipher.iv_len
            ))
        })?;
    if body.is_empty() || !body.len().is_multiple_of(cipher.block_len) {
        return Err(KeyFileError::Malformed(format!(
            "the encrypted body is not a whole number of {}-byte blocks",
            cipher.block_len
        )));
    }
    let passphrase = passphrase.ok_or(KeyFileError::PassphraseRequired)?;
    let salt = iv.get(..8).unwrap_or_default();
    let key = bytes_to_key(passphrase, salt, cipher.key_len);
    let mut plain = Zeroizing::new(body.to_vec());
    cipher
        .decrypt(&key, &iv, &mut plain, &[])
        .map_err(|_| KeyFileError::WrongPassphrase)?;
    let len = sym::unpad_pkcs7(&plain, cipher.block_len)
        .ok_or(KeyFileError::WrongPassphrase)?
        .len();
    plain.truncate(len);
    Ok(plain)
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and a count of 1.
fn bytes_to_key(passphrase: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut key = Zeroizing::new(Vec::with_capacity(len + 16));
    while key.len() < len {
        let mut md5 = md5::Md5::new();
        let previous = key.len().checked_sub(16).and_then(|at| key.get(at..));
        if let Some(prev) = previous {
            md5.update(prev);
        }
        md5.update(passphrase);
        md5.update(salt);
        let block = Zeroizing::new(md5.finalize());
        key.extend_from_slice(&block);
    }
    key.truncate(len);
    key
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let s = core::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_to_key_matches_openssl() {
        // `openssl enc -aes-256-cbc -k secret1 -S 0102030405060708 -md md5 -P -nosalt`
        // prints key=... for this passphrase and salt; the first 16 bytes are
        // MD5("secret1" || salt) by definition, checked here against ring-free MD5.
        let key = bytes_to_key(b"secret1", &[1, 2, 3, 4, 5, 6, 7, 8], 32);
        let mut first = md5::Md5::new();
        first.update(b"secret1");
        first.update([1, 2, 3, 4, 5, 6, 7, 8]);
        let first = first.finalize();
        assert_eq!(&key[..16], first.as_slice());
        let mut second = md5::Md5::new();
        second.update(first);
        second.update(b"secret1");
        second.update([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&key[16..], second.finalize().as_slice());
    }

    #[test]
    fn hex() {
        assert_eq!(decode_hex("00fFa1"), Some(vec![0, 0xff, 0xa1]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("0g"), None);
        assert_eq!(decode_hex("+1"), None);
    }

    #[test]
    fn bad_headers_are_named() {
        let body = [0u8; 16];
        assert!(matches!(
            decrypt("AES-128-CBC", &body, Some(b"x")),
            Err(KeyFileError::Malformed(_))
        ));
        assert!(matches!(
            decrypt("AES-128-CBC,00", &body, Some(b"x")),
            Err(KeyFileError::Malformed(_))
        ));
        assert!(matches!(
            decrypt("CAMELLIA-128-CBC,00", &body, Some(b"x")),
            Err(KeyFileError::UnsupportedEncryption(_))
        ));
        let iv = "00112233445566778899aabbccddeeff";
        assert!(matches!(
            decrypt(&format!("AES-128-CBC,{iv}"), &body[..15], Some(b"x")),
            Err(KeyFileError::Malformed(_))
        ));
        assert_eq!(
            decrypt(&format!("AES-128-CBC,{iv}"), &body, None),
            Err(KeyFileError::PassphraseRequired)
        );
    }
}
