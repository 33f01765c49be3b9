//! Message authentication codes for ciphers that do not authenticate by themselves (RFC 4253
//! section 6.4, RFC 6668, OpenSSH's PROTOCOL for the `-etm` modes), in one static table.
//!
//! ```text
//!  encrypt-and-MAC:   tag = HMAC(key, seq || plaintext packet)      length inside the first block
//!  encrypt-then-MAC:  tag = HMAC(key, seq || length || ciphertext)  length in the clear
//! ```
//! A keyed [`Mac`] computes tags over the sequence number and one or two slices without
//! copying, and compares received tags in constant time. It is used by the non-AEAD ciphers in
//! [`crate::cipher`]; AEAD ciphers never take one, and `none` is not a MAC we know.

use core::fmt;

use ring::hmac;
use subtle::ConstantTimeEq as _;

/// A MAC we can negotiate.
#[derive(Clone, Copy)]
pub struct MacAlgorithm {
    /// The SSH name.
    pub name: &'static str,
    /// Key bytes taken from the key derivation (letters E and F).
    pub key_len: usize,
    /// Bytes of tag after each packet.
    pub tag_len: usize,
    /// Encrypt-then-MAC: the length travels in the clear and the tag covers the ciphertext,
    /// so a packet is authenticated before any of it is decrypted.
    pub etm: bool,
    hmac: &'static hmac::Algorithm,
}

impl fmt::Debug for MacAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl fmt::Display for MacAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for MacAlgorithm {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for MacAlgorithm {}

impl MacAlgorithm {
    /// A keyed MAC; `None` if `key` is not `key_len` bytes (a bug in the caller).
    pub fn key(&self, key: &[u8]) -> Option<Mac> {
        (key.len() == self.key_len).then(|| Mac {
            alg: *self,
            key: hmac::Key::new(*self.hmac, key),
        })
    }

    /// Whether this MAC uses SHA-1, which we never offer unless configured explicitly.
    pub fn is_sha1(&self) -> bool {
        self.key_len == 20
    }
}

/// `hmac-sha2-256-etm@openssh.com`
pub const HMAC_SHA2_256_ETM: MacAlgorithm = MacAlgorithm {
    name: "hmac-sha2-256-etm@openssh.com",
    key_len: 32,
    tag_len: 32,
    etm: true,
    hmac: &hmac::HMAC_SHA256,
};

/// `hmac-sha2-512-etm@openssh.com`
pub const HMAC_SHA2_512_ETM: MacAlgorithm = MacAlgorithm {
    name: "hmac-sha2-512-etm@openssh.com",
    key_len: 64,
    tag_len: 64,
    etm: true,
    hmac: &hmac::HMAC_SHA512,
};

/// `hmac-sha2-256` (RFC 6668)
pub const HMAC_SHA2_256: MacAlgorithm = MacAlgorithm {
    name: "hmac-sha2-256",
    key_len: 32,
    tag_len: 32,
    etm: false,
    hmac: &hmac::HMAC_SHA256,
};

/// `hmac-sha2-512` (RFC 6668)
pub const HMAC_SHA2_512: MacAlgorithm = MacAlgorithm {
    name: "hmac-sha2-512",
    key_len: 64,
    tag_len: 64,
    etm: false,
    hmac: &hmac::HMAC_SHA512,
};

/// `hmac-sha1-etm@openssh.com`: only when configured explicitly.
pub const HMAC_SHA1_ETM: MacAlgorithm = MacAlgorithm {
    name: "hmac-sha1-etm@openssh.com",
    key_len: 20,
    tag_len: 20,
    etm: true,
    hmac: &hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
};

/// `hmac-sha1` (RFC 4253): only when configured explicitly.
pub const HMAC_SHA1: MacAlgorithm = MacAlgorithm {
    name: "hmac-sha1",
    key_len: 20,
    tag_len: 20,
    etm: false,
    hmac: &hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
};

/// Every MAC we implement, in preference order: encrypt-then-MAC before encrypt-and-MAC (it
/// authenticates before decrypting and hides nothing behind the length), SHA-2 before SHA-1.
pub const ALL: &[MacAlgorithm] = &[
    HMAC_SHA2_256_ETM,
    HMAC_SHA2_512_ETM,
    HMAC_SHA2_256,
    HMAC_SHA2_512,
    HMAC_SHA1_ETM,
    HMAC_SHA1,
];

/// What we offer unless configured otherwise: no SHA-1.
pub const DEFAULT: &[MacAlgorithm] = &[
    HMAC_SHA2_256_ETM,
    HMAC_SHA2_512_ETM,
    HMAC_SHA2_256,
    HMAC_SHA2_512,
];

/// Looks a MAC up by its SSH name. `none` is not one.
pub fn by_name(name: &str) -> Option<MacAlgorithm> {
    ALL.iter().copied().find(|m| m.name == name)
}

/// A MAC with its key, for one direction.
#[derive(Clone)]
pub struct Mac {
    alg: MacAlgorithm,
    key: hmac::Key,
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({})", self.alg.name)
    }
}

/// The longest tag in the table (HMAC-SHA-512).
pub const MAX_TAG_LEN: usize = 64;

impl Mac {
    /// The algorithm.
    pub fn algorithm(&self) -> MacAlgorithm {
        self.alg
    }

    /// The tag over `seq || a || b`, written into `out` (which must be `tag_len` bytes).
    pub fn sign(&self, seq: u32, a: &[u8], b: &[u8], out: &mut [u8]) {
        let tag = self.compute(seq, a, b);
        let tag = tag.as_ref();
        if let Some(t) = tag.get(..out.len()) {
            out.copy_from_slice(t);
        }
    }

    /// Whether `tag` is the tag over `seq || a || b`, compared in constant time.
    pub fn verify(&self, seq: u32, a: &[u8], b: &[u8], tag: &[u8]) -> bool {
        let ours = self.compute(seq, a, b);
        let ours = ours.as_ref().get(..self.alg.tag_len).unwrap_or_default();
        ours.len() == tag.len() && bool::from(ours.ct_eq(tag))
    }

    fn compute(&self, seq: u32, a: &[u8], b: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&seq.to_be_bytes());
        ctx.update(a);
        ctx.update(b);
        ctx.sign()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 4231 test case 2 for HMAC-SHA-256 and -512, RFC 2202 test case 2 for HMAC-SHA-1,
    /// with the message split as the packet layer splits it (the first four bytes standing in
    /// for the sequence number).
    #[test]
    fn published_hmac_vectors_with_the_sequence_number_prefix() {
        let data = b"what do ya want for nothing?";
        let seq = u32::from_be_bytes(data[..4].try_into().unwrap());
        let cases = [
            (
                HMAC_SHA2_256,
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                HMAC_SHA2_512,
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            ),
            (HMAC_SHA1, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
        ];
        for (alg, expect) in cases {
            let mut alg = alg;
            // The vectors use the 4-byte key "Jefe"; lengths are only checked by `key`.
            alg.key_len = 4;
            let mac = alg.key(b"Jefe").unwrap();
            let mut tag = vec![0; alg.tag_len];
            mac.sign(seq, &data[4..10], &data[10..], &mut tag);
            assert_eq!(tag, hex(expect), "{}", alg.name);
            assert!(mac.verify(seq, &data[4..], &[], &tag));
            let mut bad = tag.clone();
            bad[0] ^= 1;
            assert!(!mac.verify(seq, &data[4..], &[], &bad));
            assert!(!mac.verify(seq, &data[4..], &[], &tag[1..]));
            assert!(!mac.verify(seq.wrapping_add(1), &data[4..], &[], &tag));
        }
    }

    #[test]
    fn defaults_have_no_sha1_and_etm_comes_first() {
        assert!(DEFAULT.iter().all(|m| !m.is_sha1()));
        assert!(DEFAULT[0].etm && DEFAULT[1].etm);
        assert!(ALL.iter().any(MacAlgorithm::is_sha1));
        assert_eq!(by_name("none"), None);
        for m in ALL {
            assert_eq!(by_name(m.name), Some(*m));
            assert_eq!(m.etm, m.name.ends_with("-etm@openssh.com"));
        }
    }

    #[test]
    fn wrong_key_length_is_refused() {
        assert!(HMAC_SHA2_256.key(&[0; 31]).is_none());
        assert!(HMAC_SHA2_512.key(&[0; 64]).is_some());
    }
}
