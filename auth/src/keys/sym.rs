//! The symmetric ciphers key files are encrypted with, in one table: OpenSSH's own format names
//! them `aes256-ctr`, `aes256-gcm@openssh.com`, ...; legacy PEM's `DEK-Info` header names them
//! `AES-128-CBC`, `DES-EDE3-CBC`, .... Only decryption is needed: keys are written unencrypted.

use aes::{Aes128, Aes192, Aes256};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockCipherDecrypt, BlockModeDecrypt as _, KeyInit, KeyIvInit as _};
use ctr::cipher::StreamCipher as _;
use des::TdesEde3;

/// One cipher: how to use it and how much key material it takes.
#[derive(Debug)]
pub(super) struct Cipher {
    /// The name as the file gives it.
    pub(super) name: &'static str,
    mode: Mode,
    pub(super) key_len: usize,
    pub(super) iv_len: usize,
    /// The private section of an OpenSSH file is a whole number of these.
    pub(super) block_len: usize,
    /// Bytes of authentication tag after the ciphertext (GCM only).
    pub(super) tag_len: usize,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    None,
    Ctr(Block),
    Cbc(Block),
    Gcm(Block),
}

#[derive(Debug, Clone, Copy)]
enum Block {
    Aes128,
    Aes192,
    Aes256,
    Tdes,
}

const fn aes(name: &'static str, mode: Mode, key_len: usize) -> Cipher {
    let (iv_len, tag_len) = match mode {
        Mode::Gcm(_) => (12, 16),
        _ => (16, 0),
    };
    Cipher {
        name,
        mode,
        key_len,
        iv_len,
        block_len: 16,
        tag_len,
    }
}

/// The ciphers `ssh-keygen -Z` can write, less `chacha20-poly1305@openssh.com`.
static OPENSSH: &[Cipher] = &[
    Cipher {
        name: "none",
        mode: Mode::None,
        key_len: 0,
        iv_len: 0,
        block_len: 8,
        tag_len: 0,
    },
    aes("aes128-ctr", Mode::Ctr(Block::Aes128), 16),
    aes("aes192-ctr", Mode::Ctr(Block::Aes192), 24),
    aes("aes256-ctr", Mode::Ctr(Block::Aes256), 32),
    aes("aes128-cbc", Mode::Cbc(Block::Aes128), 16),
    aes("aes192-cbc", Mode::Cbc(Block::Aes192), 24),
    aes("aes256-cbc", Mode::Cbc(Block::Aes256), 32),
    aes("aes128-gcm@openssh.com", Mode::Gcm(Block::Aes128), 16),
    aes("aes256-gcm@openssh.com", Mode::Gcm(Block::Aes256), 32),
    Cipher {
        name: "3des-cbc",
        mode: Mode::Cbc(Block::Tdes),
        key_len: 24,
        iv_len: 8,
        block_len: 8,
        tag_len: 0,
    },
];

/// The `DEK-Info` ciphers OpenSSL writes for `ssh-keygen -m PEM` and `openssl rsa -aes256`.
static PEM: &[Cipher] = &[
    aes("AES-128-CBC", Mode::Cbc(Block::Aes128), 16),
    aes("AES-192-CBC", Mode::Cbc(Block::Aes192), 24),
    aes("AES-256-CBC", Mode::Cbc(Block::Aes256), 32),
    Cipher {
        name: "DES-EDE3-CBC",
        mode: Mode::Cbc(Block::Tdes),
        key_len: 24,
        iv_len: 8,
        block_len: 8,
        tag_len: 0,
    },
];

/// Looks up a cipher of OpenSSH's key format.
pub(super) fn openssh(name: &[u8]) -> Option<&'static Cipher> {
    OPENSSH.iter().find(|c| c.name.as_bytes() == name)
}

/// Looks up a `DEK-Info` cipher (OpenSSL matches these names without regard to case).
pub(super) fn pem(name: &str) -> Option<&'static Cipher> {
    PEM.iter().find(|c| c.name.eq_ignore_ascii_case(name))
}

/// The ciphertext did not decrypt: a GCM tag that does not verify, or a length that is not a
/// whole number of blocks.
#[derive(Debug)]
pub(super) struct DecryptFailed;

impl Cipher {
    /// Whether this is the `none` cipher of an unencrypted OpenSSH key.
    pub(super) fn is_none(&self) -> bool {
        matches!(self.mode, Mode::None)
    }

    /// Decrypts `buf` in place with `key` and `iv` (of this cipher's lengths), checking `tag`
    /// for GCM. CBC padding, if any, is left for the caller to check.
    pub(super) fn decrypt(
        &self,
        key: &[u8],
        iv: &[u8],
        buf: &mut [u8],
        tag: &[u8],
    ) -> Result<(), DecryptFailed> {
        match self.mode {
            Mode::None => Ok(()),
            Mode::Ctr(Block::Aes128) => ctr::<Aes128>(key, iv, buf),
            Mode::Ctr(Block::Aes192) => ctr::<Aes192>(key, iv, buf),
            Mode::Ctr(Block::Aes256) => ctr::<Aes256>(key, iv, buf),
            // No standard names counter mode with Triple DES.
            Mode::Ctr(Block::Tdes) => Err(DecryptFailed),
            Mode::Cbc(Block::Aes128) => cbc::<Aes128>(key, iv, buf),
            Mode::Cbc(Block::Aes192) => cbc::<Aes192>(key, iv, buf),
            Mode::Cbc(Block::Aes256) => cbc::<Aes256>(key, iv, buf),
            Mode::Cbc(Block::Tdes) => cbc::<TdesEde3>(key, iv, buf),
            Mode::Gcm(Block::Aes128) => gcm::<aes_gcm::Aes128Gcm>(key, iv, buf, tag),
            Mode::Gcm(Block::Aes256) => gcm::<aes_gcm::Aes256Gcm>(key, iv, buf, tag),
            Mode::Gcm(_) => Err(DecryptFailed),
        }
    }
}

fn ctr<C>(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<(), DecryptFailed>
where
    C: cbc::cipher::BlockCipherEncrypt<BlockSize = cbc::cipher::consts::U16> + KeyInit,
{
    let mut c = ctr::Ctr128BE::<C>::new_from_slices(key, iv).map_err(|_| DecryptFailed)?;
    c.try_apply_keystream(buf).map_err(|_| DecryptFailed)
}

fn cbc<C>(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<(), DecryptFailed>
where
    C: BlockCipherDecrypt + KeyInit,
    cbc::Decryptor<C>: cbc::cipher::KeyIvInit,
{
    cbc::Decryptor::<C>::new_from_slices(key, iv)
        .map_err(|_| DecryptFailed)?
        .decrypt_padded::<NoPadding>(buf)
        .map(|_| ())
        .map_err(|_| DecryptFailed)
}

fn gcm<A>(key: &[u8], nonce: &[u8], buf: &mut [u8], tag: &[u8]) -> Result<(), DecryptFailed>
where
    A: aes_gcm::aead::AeadInOut + KeyInit,
{
    let aead = A::new_from_slice(key).map_err(|_| DecryptFailed)?;
    let nonce = aes_gcm::aead::Nonce::<A>::try_from(nonce).map_err(|_| DecryptFailed)?;
    let tag = aes_gcm::aead::Tag::<A>::try_from(tag).map_err(|_| DecryptFailed)?;
    // OpenSSH authenticates no associated data for key files.
    aead.decrypt_inout_detached(&nonce, &[], buf.into(), &tag)
        .map_err(|_| DecryptFailed)
}

/// Removes PKCS#7 padding (RFC 5652 6.3), as CBC-encrypted PEM and PKCS#8 bodies carry; `None`
/// when the padding is not valid, which for a decrypted body almost always means a wrong
/// passphrase.
pub(super) fn unpad_pkcs7(buf: &[u8], block_len: usize) -> Option<&[u8]> {
    let (&last, _) = buf.split_last()?;
    let pad = usize::from(last);
    if pad == 0 || pad > block_len || pad > buf.len() || !buf.len().is_multiple_of(block_len) {
        return None;
    }
    let (body, padding) = buf.split_at(buf.len() - pad);
    padding.iter().all(|&b| b == last).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_each_name_once() {
        for c in OPENSSH {
            assert!(std::ptr::eq(openssh(c.name.as_bytes()).unwrap(), c));
            assert_eq!(c.name == "none", c.is_none());
        }
        assert!(pem("aes-256-cbc").is_some());
        assert!(pem("DES-CBC").is_none());
        assert!(openssh(b"chacha20-poly1305@openssh.com").is_none());
    }

    #[test]
    fn pkcs7_padding() {
        assert_eq!(
            unpad_pkcs7(&[1, 2, 3, 4, 5, 3, 3, 3], 8),
            Some(&[1, 2, 3, 4, 5][..])
        );
        assert_eq!(unpad_pkcs7(&[8; 8], 8), Some(&[][..]));
        assert_eq!(unpad_pkcs7(&[1, 2, 3, 4, 5, 6, 7, 0], 8), None);
        assert_eq!(unpad_pkcs7(&[1, 2, 3, 4, 5, 2, 3, 3], 8), None);
        assert_eq!(unpad_pkcs7(&[9; 8], 8), None);
        assert_eq!(unpad_pkcs7(&[1; 7], 8), None);
        assert_eq!(unpad_pkcs7(&[], 8), None);
    }

    #[test]
    fn wrong_lengths_are_errors_not_panics() {
        let mut buf = [0u8; 15];
        let aes = openssh(b"aes128-cbc").unwrap();
        assert!(aes.decrypt(&[0; 16], &[0; 16], &mut buf, &[]).is_err());
        assert!(aes.decrypt(&[0; 15], &[0; 16], &mut [0; 16], &[]).is_err());
        let gcm = openssh(b"aes256-gcm@openssh.com").unwrap();
        assert!(
            gcm.decrypt(&[0; 32], &[0; 12], &mut [0; 16], &[0; 15])
                .is_err()
        );
        assert!(
            gcm.decrypt(&[0; 32], &[0; 12], &mut [0; 16], &[0; 16])
                .is_err()
        );
    }
}
