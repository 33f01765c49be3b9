//! Packet protection behind two SSH-shaped traits, with every algorithm in one static table.
//!
//! A sealer takes a whole packet laid out as `uint32 length || padding_length || payload ||
//! padding || tag space` and protects it in place; an opener learns the packet length from the
//! first bytes, then authenticates and decrypts the whole packet in place. Nothing here
//! allocates per packet.

use core::fmt;

use ring::aead::{self, chacha20_poly1305_openssh as chapoly};

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

type SealerFactory = fn(&[u8], &[u8]) -> Option<Box<dyn PacketSealer>>;
type OpenerFactory = fn(&[u8], &[u8]) -> Option<Box<dyn PacketOpener>>;

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
    /// A sealer from derived key material; `None` if the lengths are wrong (a bug).
    pub fn sealer(&self, key: &[u8], iv: &[u8]) -> Option<Box<dyn PacketSealer>> {
        (self.make_sealer)(key, iv)
    }

    /// An opener from derived key material.
    pub fn opener(&self, key: &[u8], iv: &[u8]) -> Option<Box<dyn PacketOpener>> {
        (self.make_opener)(key, iv)
    }
}

/// `aes128-gcm@openssh.com`
pub const AES128_GCM: CipherAlgorithm = CipherAlgorithm {
    name: "aes128-gcm@openssh.com",
    key_len: 16,
    iv_len: 12,
    aead: true,
    make_sealer: |k, iv| AesGcm::new(&aead::AES_128_GCM, k, iv).map(|c| Box::new(c) as _),
    make_opener: |k, iv| AesGcm::new(&aead::AES_128_GCM, k, iv).map(|c| Box::new(c) as _),
};

/// `aes256-gcm@openssh.com`
pub const AES256_GCM: CipherAlgorithm = CipherAlgorithm {
    name: "aes256-gcm@openssh.com",
    key_len: 32,
    iv_len: 12,
    aead: true,
    make_sealer: |k, iv| AesGcm::new(&aead::AES_256_GCM, k, iv).map(|c| Box::new(c) as _),
    make_opener: |k, iv| AesGcm::new(&aead::AES_256_GCM, k, iv).map(|c| Box::new(c) as _),
};

/// `chacha20-poly1305@openssh.com`
pub const CHACHA20_POLY1305: CipherAlgorithm = CipherAlgorithm {
    name: "chacha20-poly1305@openssh.com",
    key_len: chapoly::KEY_LEN,
    iv_len: 0,
    aead: true,
    make_sealer: |k, _| {
        let key: &[u8; chapoly::KEY_LEN] = k.try_into().ok()?;
        Some(Box::new(ChaChaSealer(chapoly::SealingKey::new(key))) as _)
    },
    make_opener: |k, _| {
        let key: &[u8; chapoly::KEY_LEN] = k.try_into().ok()?;
        Some(Box::new(ChaChaOpener(chapoly::OpeningKey::new(key))) as _)
    },
};

/// Every cipher we implement, in our default preference order. AES-GCM comes first because
/// AES-NI makes it the cheapest per byte on the machines this runs on; OpenSSH prefers
/// ChaCha20-Poly1305, which we also offer.
pub const ALL: &[CipherAlgorithm] = &[AES128_GCM, AES256_GCM, CHACHA20_POLY1305];

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

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(alg: CipherAlgorithm) {
        let key = vec![0x42; alg.key_len];
        let iv = vec![0x24; alg.iv_len];
        for seq in [0u32, 1, u32::MAX] {
            let mut s = alg.sealer(&key, &iv).unwrap();
            let mut o = alg.opener(&key, &iv).unwrap();
            let mut tampered_opener = alg.opener(&key, &iv).unwrap();
            let body = b"\x0athe payload!!!!".to_vec(); // padding length byte + 16 bytes
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
            round_trip(*alg);
        }
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
