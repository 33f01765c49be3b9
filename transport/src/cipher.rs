//! Packet protection behind two SSH-shaped traits, with every algorithm in one static table.
//!
//! A sealer takes a whole packet laid out as `uint32 length || padding_length || payload ||
//! padding || tag space` and protects it in place; an opener learns the packet length from the
//! first bytes, then authenticates and decrypts the whole packet in place. Nothing here
//! allocates per packet.
//!
//! ```text
//!  AEAD (AES-GCM, ChaCha20-Poly1305)   the cipher seals and opens; no MAC is negotiated
//!  AES-CTR + MAC, encrypt-and-MAC      length encrypted; tag over seq || plaintext
//!  AES-CTR + MAC, encrypt-then-MAC     length in clear; tag over seq || length || ciphertext,
//!                                      checked before anything is decrypted
//! ```
//! A cipher that needs a MAC is only ever built with one: there is no `none` MAC.

use core::fmt;

use aes::{Aes128, Aes192, Aes256};
use ctr::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use ring::aead::{self, chacha20_poly1305_openssh as chapoly};

use crate::mac::{Mac, MacAlgorithm};

/// Protects outgoing packets.
pub trait PacketSealer: Send {
    /// Padding is computed so that the bytes the cipher covers are a multiple of this.
    fn block_size(&self) -> usize;
    /// Bytes of tag or MAC after the packet.
    fn tag_len(&self) -> usize;
    /// Whether the 4-byte length is left out of the block alignment (AES-GCM, EtM modes).
    fn length_excluded_from_alignment(&self) -> bool;
    /// Seals `packet` (length field through padding, followed by `tag_len` bytes of space).
    fn seal(&mut self, seq: u32, packet: &mut [u8]);
}

/// Checks and opens incoming packets.
pub trait PacketOpener: Send {
    /// See [`PacketSealer::block_size`].
    fn block_size(&self) -> usize;
    /// Bytes of tag or MAC after the packet.
    fn tag_len(&self) -> usize;
    /// See [`PacketSealer::length_excluded_from_alignment`].
    fn length_excluded_from_alignment(&self) -> bool;
    /// The packet length field, from the first 4 bytes of the packet. It is not yet
    /// authenticated: bound-check it, wait for the whole packet, then [`open`](Self::open).
    fn packet_length(&mut self, seq: u32, head: [u8; 4]) -> u32;
    /// Authenticates and decrypts `packet` (length field, body and tag) in place. On error the
    /// contents are unspecified and must not be used.
    fn open(&mut self, seq: u32, packet: &mut [u8]) -> Result<(), IntegrityError>;
}

/// The tag or MAC of a packet did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntegrityError;

type SealerFactory = fn(&[u8], &[u8], Option<Mac>) -> Option<Box<dyn PacketSealer>>;
type OpenerFactory = fn(&[u8], &[u8], Option<Mac>) -> Option<Box<dyn PacketOpener>>;

/// A cipher we can negotiate.
#[derive(Clone, Copy)]
pub struct CipherAlgorithm {
    /// The SSH name.
    pub name: &'static str,
    /// Key bytes taken from the key derivation.
    pub key_len: usize,
    /// IV bytes taken from the key derivation.
    pub iv_len: usize,
    /// Whether this cipher authenticates by itself (no MAC is negotiated with it).
    pub aead: bool,
    make_sealer: SealerFactory,
    make_opener: OpenerFactory,
}

impl fmt::Debug for CipherAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for CipherAlgorithm {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for CipherAlgorithm {}

impl CipherAlgorithm {
    /// A sealer for an AEAD cipher from derived key material; `None` if the lengths are
    /// wrong (a bug) or the cipher needs a MAC (use [`sealer_with_mac`](Self::sealer_with_mac)).
    pub fn sealer(&self, key: &[u8], iv: &[u8]) -> Option<Box<dyn PacketSealer>> {
        (self.make_sealer)(key, iv, None)
    }

    /// An opener for an AEAD cipher; see [`sealer`](Self::sealer).
    pub fn opener(&self, key: &[u8], iv: &[u8]) -> Option<Box<dyn PacketOpener>> {
        (self.make_opener)(key, iv, None)
    }

    /// A sealer with the negotiated MAC and its key: `mac` must be `Some` exactly when the
    /// cipher is not AEAD, otherwise (or with wrong lengths) the result is `None`.
    pub fn sealer_with_mac(
        &self,
        key: &[u8],
        iv: &[u8],
        mac: Option<(MacAlgorithm, &[u8])>,
    ) -> Option<Box<dyn PacketSealer>> {
        (self.make_sealer)(key, iv, self.keyed_mac(mac)?)
    }

    /// An opener with the negotiated MAC; see [`sealer_with_mac`](Self::sealer_with_mac).
    pub fn opener_with_mac(
        &self,
        key: &[u8],
        iv: &[u8],
        mac: Option<(MacAlgorithm, &[u8])>,
    ) -> Option<Box<dyn PacketOpener>> {
        (self.make_opener)(key, iv, self.keyed_mac(mac)?)
    }

    /// `Some(None)` for AEAD without a MAC, `Some(Some(mac))` for a cipher with its MAC,
    /// `None` for every other combination.
    fn keyed_mac(&self, mac: Option<(MacAlgorithm, &[u8])>) -> Option<Option<Mac>> {
        match (self.aead, mac) {
            (true, None) => Some(None),
            (false, Some((alg, key))) => Some(Some(alg.key(key)?)),
            _ => None,
        }
    }
}

/// `aes128-gcm@openssh.com`
pub const AES128_GCM: CipherAlgorithm = CipherAlgorithm {
    name: "aes128-gcm@openssh.com",
    key_len: 16,
    iv_len: 12,
    aead: true,
    make_sealer: |k, iv, _| AesGcm::new(&aead::AES_128_GCM, k, iv).map(|c| Box::new(c) as _),
    make_opener: |k, iv, _| AesGcm::new(&aead::AES_128_GCM, k, iv).map(|c| Box::new(c) as _),
};

/// `aes256-gcm@openssh.com`
pub const AES256_GCM: CipherAlgorithm = CipherAlgorithm {
    name: "aes256-gcm@openssh.com",
    key_len: 32,
    iv_len: 12,
    aead: true,
    make_sealer: |k, iv, _| AesGcm::new(&aead::AES_256_GCM, k, iv).map(|c| Box::new(c) as _),
    make_opener: |k, iv, _| AesGcm::new(&aead::AES_256_GCM, k, iv).map(|c| Box::new(c) as _),
};

/// `chacha20-poly1305@openssh.com`
pub const CHACHA20_POLY1305: CipherAlgorithm = CipherAlgorithm {
    name: "chacha20-poly1305@openssh.com",
    key_len: chapoly::KEY_LEN,
    iv_len: 0,
    aead: true,
    make_sealer: |k, _, _| {
        let key: &[u8; chapoly::KEY_LEN] = k.try_into().ok()?;
        Some(Box::new(ChaChaSealer(chapoly::SealingKey::new(key))) as _)
    },
    make_opener: |k, _, _| {
        let key: &[u8; chapoly::KEY_LEN] = k.try_into().ok()?;
        Some(Box::new(ChaChaOpener(chapoly::OpeningKey::new(key))) as _)
    },
};

/// `aes128-ctr` (RFC 4344), with a MAC.
pub const AES128_CTR: CipherAlgorithm = CipherAlgorithm {
    name: "aes128-ctr",
    key_len: 16,
    iv_len: 16,
    aead: false,
    make_sealer: |k, iv, mac| CtrMac::<Aes128>::new(k, iv, mac).map(|c| Box::new(c) as _),
    make_opener: |k, iv, mac| CtrMac::<Aes128>::new(k, iv, mac).map(|c| Box::new(c) as _),
};

/// `aes192-ctr` (RFC 4344), with a MAC.
pub const AES192_CTR: CipherAlgorithm = CipherAlgorithm {
    name: "aes192-ctr",
    key_len: 24,
    iv_len: 16,
    aead: false,
    make_sealer: |k, iv, mac| CtrMac::<Aes192>::new(k, iv, mac).map(|c| Box::new(c) as _),
    make_opener: |k, iv, mac| CtrMac::<Aes192>::new(k, iv, mac).map(|c| Box::new(c) as _),
};

/// `aes256-ctr` (RFC 4344), with a MAC.
pub const AES256_CTR: CipherAlgorithm = CipherAlgorithm {
    name: "aes256-ctr",
    key_len: 32,
    iv_len: 16,
    aead: false,
    make_sealer: |k, iv, mac| CtrMac::<Aes256>::new(k, iv, mac).map(|c| Box::new(c) as _),
    make_opener: |k, iv, mac| CtrMac::<Aes256>::new(k, iv, mac).map(|c| Box::new(c) as _),
};

/// Every cipher we implement, in our default preference order. AES-GCM comes first because
/// AES-NI makes it the cheapest per byte on the machines this runs on; OpenSSH prefers
/// ChaCha20-Poly1305, which we also offer. AES-CTR with a MAC comes last: it costs two
/// passes per packet and is there for servers that offer nothing else.
pub const ALL: &[CipherAlgorithm] = &[
    AES128_GCM,
    AES256_GCM,
    CHACHA20_POLY1305,
    AES128_CTR,
    AES192_CTR,
    AES256_CTR,
];

/// Looks a cipher up by its SSH name.
pub fn by_name(name: &str) -> Option<CipherAlgorithm> {
    ALL.iter().copied().find(|c| c.name == name)
}

/// Before the first NEWKEYS: no encryption, no MAC, block size 8.
#[derive(Debug, Default)]
pub struct Plaintext;

impl PacketSealer for Plaintext {
    fn block_size(&self) -> usize {
        8
    }
    fn tag_len(&self) -> usize {
        0
    }
    fn length_excluded_from_alignment(&self) -> bool {
        false
    }
    fn seal(&mut self, _seq: u32, _packet: &mut [u8]) {}
}

impl PacketOpener for Plaintext {
    fn block_size(&self) -> usize {
        8
    }
    fn tag_len(&self) -> usize {
        0
    }
    fn length_excluded_from_alignment(&self) -> bool {
        false
    }
    fn packet_length(&mut self, _seq: u32, head: [u8; 4]) -> u32 {
        u32::from_be_bytes(head)
    }
    fn open(&mut self, _seq: u32, _packet: &mut [u8]) -> Result<(), IntegrityError> {
        Ok(())
    }
}

/// AES-GCM as OpenSSH runs it (RFC 5647 with OpenSSH's names): the length is additional
/// authenticated data in the clear, the nonce is a 4-byte fixed field and an 8-byte invocation
/// counter that increases by one per packet.
struct AesGcm {
    key: aead::LessSafeKey,
    nonce: [u8; 12],
}

impl AesGcm {
    fn new(alg: &'static aead::Algorithm, key: &[u8], iv: &[u8]) -> Option<Self> {
        let nonce: [u8; 12] = iv.try_into().ok()?;
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(alg, key).ok()?);
        Some(Self { key, nonce })
    }

    fn next_nonce(&mut self) -> aead::Nonce {
        let current = aead::Nonce::assume_unique_for_key(self.nonce);
        let (_, counter) = self.nonce.split_at_mut(4);
        let mut c = [0u8; 8];
        c.copy_from_slice(counter);
        counter.copy_from_slice(&u64::from_be_bytes(c).wrapping_add(1).to_be_bytes());
        current
    }
}

const GCM_TAG: usize = 16;

impl PacketSealer for AesGcm {
    fn block_size(&self) -> usize {
        16
    }
    fn tag_len(&self) -> usize {
        GCM_TAG
    }
    fn length_excluded_from_alignment(&self) -> bool {
        true
    }
    fn seal(&mut self, _seq: u32, packet: &mut [u8]) {
        let nonce = self.next_nonce();
        let Some((len, rest)) = packet.split_first_chunk_mut::<4>() else {
            return;
        };
        let body_len = rest.len().saturating_sub(GCM_TAG);
        let (body, tag_out) = rest.split_at_mut(body_len);
        // Sealing only fails for inputs longer than GCM allows (64 GiB); packets are < 256 KiB.
        if let Ok(tag) = self
            .key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(*len), body)
        {
            tag_out.copy_from_slice(tag.as_ref());
        }
    }
}

impl PacketOpener for AesGcm {
    fn block_size(&self) -> usize {
        16
    }
    fn tag_len(&self) -> usize {
        GCM_TAG
    }
    fn length_excluded_from_alignment(&self) -> bool {
        true
    }
    fn packet_length(&mut self, _seq: u32, head: [u8; 4]) -> u32 {
        u32::from_be_bytes(head)
    }
    fn open(&mut self, _seq: u32, packet: &mut [u8]) -> Result<(), IntegrityError> {
        let nonce = self.next_nonce();
        let (len, rest) = packet.split_first_chunk_mut::<4>().ok_or(IntegrityError)?;
        self.key
            .open_in_place(nonce, aead::Aad::from(*len), rest)
            .map(|_| ())
            .map_err(|_| IntegrityError)
    }
}

/// `chacha20-poly1305@openssh.com` (OpenSSH's PROTOCOL.chacha20poly1305): the length is
/// encrypted with its own key, the sequence number is the nonce.
struct ChaChaSealer(chapoly::SealingKey);
struct ChaChaOpener(chapoly::OpeningKey);

impl PacketSealer for ChaChaSealer {
    fn block_size(&self) -> usize {
        8
    }
    fn tag_len(&self) -> usize {
        chapoly::TAG_LEN
    }
    fn length_excluded_from_alignment(&self) -> bool {
        // OpenSSH leaves the length out of the alignment for every AEAD cipher.
        true
    }
    fn seal(&mut self, seq: u32, packet: &mut [u8]) {
        let body_len = packet.len().saturating_sub(chapoly::TAG_LEN);
        let (body, tag_out) = packet.split_at_mut(body_len);
        let mut tag = [0u8; chapoly::TAG_LEN];
        if body.len() >= 4 {
            self.0.seal_in_place(seq, body, &mut tag);
        }
        tag_out.copy_from_slice(&tag);
    }
}

impl PacketOpener for ChaChaOpener {
    fn block_size(&self) -> usize {
        8
    }
    fn tag_len(&self) -> usize {
        chapoly::TAG_LEN
    }
    fn length_excluded_from_alignment(&self) -> bool {
        // OpenSSH leaves the length out of the alignment for every AEAD cipher.
        true
    }
    fn packet_length(&mut self, seq: u32, head: [u8; 4]) -> u32 {
        u32::from_be_bytes(self.0.decrypt_packet_length(seq, head))
    }
    fn open(&mut self, seq: u32, packet: &mut [u8]) -> Result<(), IntegrityError> {
        let body_len = packet
            .len()
            .checked_sub(chapoly::TAG_LEN)
            .ok_or(IntegrityError)?;
        let (body, tag) = packet.split_at_mut(body_len);
        let tag: &[u8; chapoly::TAG_LEN] = (&*tag).try_into().map_err(|_| IntegrityError)?;
        self.0
            .open_in_place(seq, body, tag)
            .map(|_| ())
            .map_err(|_| IntegrityError)
    }
}

/// AES in counter mode (RFC 4344: the IV is a 128-bit big-endian counter that runs on across
/// packets) with a MAC in either of its two modes.
struct CtrMac<C: CtrBlockCipher> {
    stream: ctr::Ctr128BE<C>,
    mac: Mac,
}

const AES_BLOCK: usize = 16;

/// The AES key sizes, as block ciphers that `ctr` can run.
trait CtrBlockCipher:
    ctr::cipher::BlockCipherEncrypt
    + ctr::cipher::BlockSizeUser<BlockSize = ctr::cipher::consts::U16>
    + ctr::cipher::KeyInit
    + Send
{
}

impl CtrBlockCipher for Aes128 {}
impl CtrBlockCipher for Aes192 {}
impl CtrBlockCipher for Aes256 {}

impl<C: CtrBlockCipher> CtrMac<C> {
    fn new(key: &[u8], iv: &[u8], mac: Option<Mac>) -> Option<Self> {
        let stream = ctr::Ctr128BE::<C>::new_from_slices(key, iv).ok()?;
        Some(Self { stream, mac: mac? })
    }

    fn etm(&self) -> bool {
        self.mac.algorithm().etm
    }

    fn tag_len(&self) -> usize {
        self.mac.algorithm().tag_len
    }

    /// XORs the keystream into `data`. The keystream is 2^128 blocks long and we rekey long
    /// before 2^36 bytes, so running out cannot happen; if it ever did, the data is wiped
    /// rather than left in the clear.
    fn apply(&mut self, data: &mut [u8]) -> bool {
        if self.stream.try_apply_keystream(data).is_err() {
            data.fill(0);
            return false;
        }
        true
    }
}

impl<C: CtrBlockCipher> PacketSealer for CtrMac<C> {
    fn block_size(&self) -> usize {
        AES_BLOCK
    }
    fn tag_len(&self) -> usize {
        CtrMac::tag_len(self)
    }
    fn length_excluded_from_alignment(&self) -> bool {
        self.etm()
    }
    fn seal(&mut self, seq: u32, packet: &mut [u8]) {
        let body_len = packet.len().saturating_sub(self.tag_len());
        let (body, tag) = packet.split_at_mut(body_len);
        if self.etm() {
            let Some((len, rest)) = body.split_first_chunk_mut::<4>() else {
                return;
            };
            self.apply(rest);
            self.mac.sign(seq, len, rest, tag);
        } else {
            self.mac.sign(seq, body, &[], tag);
            self.apply(body);
        }
    }
}

impl<C: CtrBlockCipher> PacketOpener for CtrMac<C> {
    fn block_size(&self) -> usize {
        AES_BLOCK
    }
    fn tag_len(&self) -> usize {
        CtrMac::tag_len(self)
    }
    fn length_excluded_from_alignment(&self) -> bool {
        self.etm()
    }
    fn packet_length(&mut self, _seq: u32, head: [u8; 4]) -> u32 {
        if self.etm() {
            return u32::from_be_bytes(head);
        }
        // Decrypt the length with the keystream's next four bytes, then step back so that
        // `open` decrypts the whole packet from its start (and MACs the plaintext length).
        let mut head = head;
        let Ok(pos) = self.stream.try_current_pos::<u64>() else {
            return u32::MAX;
        };
        if !self.apply(&mut head) || self.stream.try_seek(pos).is_err() {
            return u32::MAX;
        }
        u32::from_be_bytes(head)
    }
    fn open(&mut self, seq: u32, packet: &mut [u8]) -> Result<(), IntegrityError> {
        let body_len = packet
            .len()
            .checked_sub(self.tag_len())
            .ok_or(IntegrityError)?;
        let (body, tag) = packet.split_at_mut(body_len);
        if self.etm() {
            let (len, rest) = body.split_first_chunk_mut::<4>().ok_or(IntegrityError)?;
            if !self.mac.verify(seq, len, rest, tag) {
                return Err(IntegrityError);
            }
            self.apply(rest);
            Ok(())
        } else {
            self.apply(body);
            if self.mac.verify(seq, body, &[], tag) {
                Ok(())
            } else {
                Err(IntegrityError)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(alg: CipherAlgorithm, mac: Option<MacAlgorithm>) {
        let key = vec![0x42; alg.key_len];
        let iv = vec![0x24; alg.iv_len];
        let mac_key = vec![0x17; mac.map_or(0, |m| m.key_len)];
        let mac = mac.map(|m| (m, &mac_key[..]));
        for seq in [0u32, 1, u32::MAX] {
            let mut s = alg.sealer_with_mac(&key, &iv, mac).unwrap();
            let mut o = alg.opener_with_mac(&key, &iv, mac).unwrap();
            let mut tampered_opener = alg.opener_with_mac(&key, &iv, mac).unwrap();
            // Length, padding length byte and 27 bytes: whole blocks with or without the
            // length field, as each mode aligns.
            let body = if s.length_excluded_from_alignment() {
                b"\x0athe payload, 32 bytes long!!!".to_vec()
            } else {
                b"\x0athe payload, 28 bytes!!!".to_vec()
            };
            let mut pkt = (body.len() as u32).to_be_bytes().to_vec();
            pkt.extend_from_slice(&body);
            pkt.extend_from_slice(&vec![0; s.tag_len()]);
            s.seal(seq, &mut pkt);
            assert_ne!(&pkt[4..4 + body.len()], &body[..], "{}", alg.name);
            let head: [u8; 4] = pkt[..4].try_into().unwrap();
            assert_eq!(o.packet_length(seq, head), body.len() as u32);
            let mut flipped = pkt.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            assert_eq!(tampered_opener.open(seq, &mut flipped), Err(IntegrityError));
            o.open(seq, &mut pkt).unwrap();
            assert_eq!(&pkt[4..4 + body.len()], &body[..]);
        }
    }

    #[test]
    fn every_cipher_round_trips_and_detects_tampering() {
        for alg in ALL {
            if alg.aead {
                round_trip(*alg, None);
            } else {
                for mac in crate::mac::ALL {
                    round_trip(*alg, Some(*mac));
                }
            }
        }
    }

    /// RFC 4344's counter mode is NIST SP 800-38A's CTR-AES128.Encrypt (F.5.1) with the IV as
    /// the initial counter block; an encrypt-then-MAC packet leaves the length clear and
    /// encrypts the rest, so the vector's first block appears right after the length.
    #[test]
    fn aes128_ctr_matches_sp800_38a() {
        let hex = |s: &str| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let key = hex("2b7e151628aed2a6abf7158809cf4f3c");
        let iv = hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        let plain = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        let cipher = hex("874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff");
        let mac_key = [0u8; 32];
        let mut s = AES128_CTR
            .sealer_with_mac(&key, &iv, Some((crate::mac::HMAC_SHA2_256_ETM, &mac_key)))
            .unwrap();
        let mut pkt = (plain.len() as u32).to_be_bytes().to_vec();
        pkt.extend_from_slice(&plain);
        pkt.extend_from_slice(&[0; 32]);
        s.seal(0, &mut pkt);
        assert_eq!(&pkt[4..36], &cipher[..]);
    }

    #[test]
    fn ciphers_and_macs_only_pair_as_they_must() {
        let mac = Some((crate::mac::HMAC_SHA2_256, &[0u8; 32][..]));
        assert!(AES128_CTR.sealer(&[0; 16], &[0; 16]).is_none());
        assert!(
            AES128_CTR
                .opener_with_mac(&[0; 16], &[0; 16], None)
                .is_none()
        );
        assert!(
            AES128_GCM
                .sealer_with_mac(&[0; 16], &[0; 12], mac)
                .is_none()
        );
        assert!(
            AES192_CTR
                .sealer_with_mac(&[0; 24], &[0; 16], mac)
                .is_some()
        );
        assert!(
            AES192_CTR
                .sealer_with_mac(&[0; 24], &[0; 15], mac)
                .is_none()
        );
        assert!(
            AES256_CTR
                .sealer_with_mac(
                    &[0; 32],
                    &[0; 16],
                    Some((crate::mac::HMAC_SHA2_256, &[0; 31]))
                )
                .is_none()
        );
    }

    #[test]
    fn gcm_counter_increments_big_endian_and_wraps() {
        let mut g = AesGcm::new(
            &aead::AES_128_GCM,
            &[0; 16],
            &[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        )
        .unwrap();
        let _ = g.next_nonce();
        assert_eq!(g.nonce, [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        let _ = g.next_nonce();
        assert_eq!(g.nonce, [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn wrong_key_lengths_are_refused() {
        assert!(AES128_GCM.sealer(&[0; 15], &[0; 12]).is_none());
        assert!(AES128_GCM.sealer(&[0; 16], &[0; 11]).is_none());
        assert!(CHACHA20_POLY1305.opener(&[0; 63], &[]).is_none());
    }
}
