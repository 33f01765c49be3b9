//! The binary packet protocol (RFC 4253 section 6), both directions, shared by the client
//! and the in-memory test server.
//!
//! Receive: bytes are appended to one buffer; a packet's length is read (and decrypted, for
//! ChaCha20-Poly1305 and encrypt-and-MAC AES-CTR) and bound-checked before we wait for the
//! rest, then the packet is opened in place and its payload handed out as a range of that
//! buffer. Nothing is allocated per packet and a hostile length costs nothing. With
//! compression on, the payload is inflated (bounded) into a second buffer that is reused for
//! every packet.
//!
//! Send: the payload is written straight into the output buffer behind a reserved header
//! (with compression on: into a reused scratch buffer, then deflated behind the header),
//! padded and sealed in place, so several packets queue up back to back for one write.

use core::ops::Range;
use std::io::IoSliceMut;

use crate::cipher::{PacketOpener, PacketSealer, Plaintext};
use crate::compress::{Compression, DecompressError, Deflater, Inflater};
use crate::random::SecureRandom;

/// Packets longer than this are refused (OpenSSH's limit is also 256 KiB). RFC 4253 requires
/// at least 35000 to be accepted.
pub const MAX_PACKET_LEN: u32 = 256 * 1024;

/// The largest payload we send: well under what any peer must accept (32768 + headers).
pub const MAX_SEND_PAYLOAD: usize = 64 * 1024;

/// A framing failure on receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketError {
    /// The length field exceeds what we accept.
    TooLong(u32),
    /// The length field is too small or not a multiple of the cipher's block size.
    BadLength(u32),
    /// The padding length is under 4 or larger than the packet.
    BadPadding(u8),
    /// The tag or MAC did not verify.
    Integrity,
    /// A packet with no message number at all.
    EmptyPayload,
    /// A compressed payload did not inflate, or inflated beyond the bound.
    Decompress(DecompressError),
}

/// A packet that has been opened: where its payload is, without a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The payload, message number first: a range of the receive buffer, or of the inflate
    /// buffer when `inflated`. Read it with [`Rx::payload`].
    pub payload: Range<usize>,
    /// Whether the payload was decompressed (and lives in the inflate buffer).
    pub inflated: bool,
    /// The sequence number it was received with (for SSH_MSG_UNIMPLEMENTED).
    pub seq: u32,
}

/// The receive half. `buf[start..end]` holds bytes received and not yet taken; the rest of
/// `buf` is initialized spare room that the driver reads into directly.
pub struct Rx {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    opener: Box<dyn PacketOpener>,
    /// Sequence number of the next packet.
    pub seq: u32,
    /// Bytes received under the current keys (for rekeying).
    pub bytes: u64,
    /// Packets received under the current keys.
    pub packets: u64,
    pending_len: Option<u32>,
    inflater: Inflater,
}

impl core::fmt::Debug for Rx {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Rx")
            .field("buffered", &(self.end - self.start))
            .field("seq", &self.seq)
            .finish()
    }
}

impl Default for Rx {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
            opener: Box::new(Plaintext),
            seq: 0,
            bytes: 0,
            packets: 0,
            pending_len: None,
            inflater: Inflater::default(),
        }
    }
}

impl Rx {
    /// Bytes received but not yet taken as packets or lines.
    pub fn unconsumed(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// Takes `n` raw bytes (the version exchange reads lines this way).
    pub fn consume_raw(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Room for at least `min` more received bytes: read into it, then call
    /// [`commit`](Self::commit) with the count. Data already there moves at most once.
    pub fn read_space(&mut self, min: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < min {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < min {
            self.buf.resize(self.end + min, 0);
        }
        self.buf.get_mut(self.end..).unwrap_or_default()
    }

    /// `n` bytes were written into [`read_space`](Self::read_space).
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Appends received bytes.
    pub fn append(&mut self, data: &[u8]) {
        let space = self.read_space(data.len());
        if let Some(dst) = space.get_mut(..data.len()) {
            dst.copy_from_slice(data);
        }
        self.commit(data.len());
    }

    /// Keys for the packets after the current one.
    pub fn set_opener(&mut self, opener: Box<dyn PacketOpener>) {
        self.opener = opener;
        self.bytes = 0;
        self.packets = 0;
        self.pending_len = None;
    }

    /// New keys negotiated `method` for the packets after the current one.
    pub fn set_compression(&mut self, method: Compression, authenticated: bool) {
        self.inflater.new_keys(method, authenticated);
    }

    /// User authentication succeeded: delayed compression starts with the next packet.
    pub fn start_delayed_compression(&mut self) {
        self.inflater.authenticated();
    }

    /// Whether received payloads are being inflated.
    pub fn is_compressing(&self) -> bool {
        self.inflater.is_active()
    }

    /// Bytes of the receive buffer by position (see [`Received::payload`]); empty outside it.
    pub fn buffered(&self, range: Range<usize>) -> &[u8] {
        self.buf.get(range).unwrap_or_default()
    }

    /// The bytes of an opened packet's payload. Valid until the next packet is opened (one
    /// that was not inflated stays where it is until the next [`read_space`](Self::read_space)
    /// or [`append`](Self::append)).
    pub fn payload(&self, r: &Received) -> &[u8] {
        let buf: &[u8] = if r.inflated {
            self.inflater.output()
        } else {
            &self.buf
        };
        buf.get(r.payload.clone()).unwrap_or_default()
    }

    /// Opens the next whole packet, if it has arrived.
    pub fn next_packet(&mut self) -> Result<Option<Received>, PacketError> {
        let avail = self.end - self.start;
        let len = match self.pending_len {
            Some(len) => len,
            None => {
                let Some(head) = self
                    .buf
                    .get(self.start..self.end)
                    .and_then(|b| b.first_chunk::<4>())
                else {
                    return Ok(None);
                };
                let len = self.opener.packet_length(self.seq, *head);
                self.check_length(len)?;
                self.pending_len = Some(len);
                len
            }
        };
        let tag = self.opener.tag_len();
        // The length was bounded above, so this cannot overflow.
        let total = 4 + len as usize + tag;
        if avail < total {
            return Ok(None);
        }
        let seq = self.seq;
        let packet = self
            .buf
            .get_mut(self.start..self.start + total)
            .ok_or(PacketError::Integrity)?;
        self.opener
            .open(seq, packet)
            .map_err(|_| PacketError::Integrity)?;
        let padding = *packet.get(4).ok_or(PacketError::BadPadding(0))?;
        if padding < 4 || u32::from(padding) + 1 > len {
            return Err(PacketError::BadPadding(padding));
        }
        let payload_len = len as usize - 1 - usize::from(padding);
        if payload_len == 0 {
            return Err(PacketError::EmptyPayload);
        }
        let mut payload = self.start + 5..self.start + 5 + payload_len;
        let inflated = self.inflater.is_active();
        if inflated {
            let compressed = self.buf.get(payload).unwrap_or_default();
            self.inflater
                .inflate(compressed)
                .map_err(PacketError::Decompress)?;
            let n = self.inflater.output().len();
            if n == 0 {
                return Err(PacketError::EmptyPayload);
            }
            payload = 0..n;
        }
        self.start += total;
        self.seq = self.seq.wrapping_add(1);
        self.bytes += total as u64;
        self.packets += 1;
        self.pending_len = None;
        Ok(Some(Received {
            payload,
            inflated,
            seq,
        }))
    }

    fn check_length(&self, len: u32) -> Result<(), PacketError> {
        if len > MAX_PACKET_LEN {
            return Err(PacketError::TooLong(len));
        }
        let bs = self.opener.block_size() as u32;
        let covered = if self.opener.length_excluded_from_alignment() {
            len
        } else {
            len + 4
        };
        // At least the padding-length byte and four bytes of padding, whole blocks.
        if len < 5 || covered % bs != 0 {
            return Err(PacketError::BadLength(len));
        }
        Ok(())
    }
}

/// Random bytes for padding, drawn from the injected generator in blocks so that sending a
/// packet does not cost a system call.
struct PadPool {
    bytes: [u8; 512],
    used: usize,
}

impl PadPool {
    fn take(&mut self, rng: &mut dyn SecureRandom, n: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(self.next(rng, n));
    }

    fn fill(&mut self, rng: &mut dyn SecureRandom, dest: &mut [u8]) {
        dest.copy_from_slice(self.next(rng, dest.len()));
    }

    fn next(&mut self, rng: &mut dyn SecureRandom, n: usize) -> &[u8] {
        if self.used + n > self.bytes.len() {
            rng.fill(&mut self.bytes);
            self.used = 0;
        }
        let at = self.used;
        self.used += n;
        self.bytes.get(at..at + n).unwrap_or_default()
    }
}

/// How the current keys frame a packet.
#[derive(Clone, Copy, Debug)]
struct Framing {
    /// What the cipher covers is aligned to this.
    bs: usize,
    /// Bytes of tag or MAC after the packet.
    tag: usize,
    /// Whether the 4-byte length is left out of the alignment.
    excluded: bool,
}

impl Framing {
    fn of(sealer: &dyn PacketSealer) -> Self {
        Self {
            bs: sealer.block_size(),
            tag: sealer.tag_len(),
            excluded: sealer.length_excluded_from_alignment(),
        }
    }

    /// Padding for a payload of `wire_len` bytes on the wire: at least 4, so that what the
    /// cipher covers is a multiple of the block size.
    fn pad(&self, wire_len: usize) -> usize {
        let covered = if self.excluded { 1 } else { 5 } + wire_len;
        let pad = self.bs - covered % self.bs;
        if pad < 4 { pad + self.bs } else { pad }
    }
}

/// Where the packets of one [`Tx::frame_data`] call lie in the output buffer.
#[derive(Clone, Copy, Debug)]
struct DataLayout {
    framing: Framing,
    /// Bytes of payload before the data: `head` and the data's u32 length.
    head: usize,
    /// Data bytes in each packet but the last.
    chunk: usize,
}

impl DataLayout {
    /// Padding length for a packet carrying `data` bytes.
    fn pad(&self, data: usize) -> usize {
        self.framing.pad(self.head + data)
    }

    /// Bytes the packet of `data` bytes takes on the wire.
    fn footprint(&self, data: usize) -> usize {
        5 + self.head + data + self.pad(data) + self.framing.tag
    }

    /// Room to reserve for a packet of at most `data` bytes.
    fn room(&self, data: usize) -> usize {
        5 + self.head + data + self.framing.bs + 4 + self.framing.tag
    }
}

/// The send half. `out[sent..end]` is what waits to be written; `out[end..]` is initialized
/// spare room that [`Tx::frame_data`] reads into, so it is not zeroed for every packet.
pub struct Tx {
    out: Vec<u8>,
    sent: usize,
    end: usize,
    sealer: Box<dyn PacketSealer>,
    /// Sequence number of the next packet.
    pub seq: u32,
    /// Bytes sent under the current keys.
    pub bytes: u64,
    /// Packets sent under the current keys.
    pub packets: u64,
    pad: PadPool,
    deflater: Deflater,
    /// Where a payload is built before it is compressed; reused.
    scratch: Vec<u8>,
}

impl core::fmt::Debug for Tx {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tx")
            .field("unsent", &(self.end - self.sent))
            .field("seq", &self.seq)
            .finish()
    }
}

impl Default for Tx {
    fn default() -> Self {
        Self {
            out: Vec::new(),
            sent: 0,
            end: 0,
            sealer: Box::new(Plaintext),
            seq: 0,
            bytes: 0,
            packets: 0,
            pad: PadPool {
                bytes: [0; 512],
                used: 512,
            },
            deflater: Deflater::default(),
            scratch: Vec::new(),
        }
    }
}

impl Tx {
    /// Keys for the packets after the current one.
    pub fn set_sealer(&mut self, sealer: Box<dyn PacketSealer>) {
        self.sealer = sealer;
        self.bytes = 0;
        self.packets = 0;
    }

    /// New keys negotiated `method` for the packets after the current one.
    pub fn set_compression(&mut self, method: Compression, authenticated: bool) {
        self.deflater.new_keys(method, authenticated);
    }

    /// User authentication succeeded: delayed compression starts with the next packet.
    pub fn start_delayed_compression(&mut self) {
        self.deflater.authenticated();
    }

    /// Whether sent payloads are being compressed.
    pub fn is_compressing(&self) -> bool {
        self.deflater.is_active()
    }

    /// Bytes waiting to be written to the socket.
    pub fn output(&self) -> &[u8] {
        self.out.get(self.sent..self.end).unwrap_or_default()
    }

    /// The driver wrote `n` bytes of [`output`](Self::output).
    pub fn consume(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.end);
        if self.sent == self.end {
            self.sent = 0;
            self.end = 0;
        }
    }

    /// Writes raw bytes (the version line).
    pub fn raw(&mut self, data: &[u8]) {
        self.out.truncate(self.end);
        self.out.extend_from_slice(data);
        self.end = self.out.len();
    }

    /// Moves what waits to the front when more than half of it has been written.
    fn compact(&mut self) {
        if self.sent > 0 && self.sent >= self.end / 2 {
            self.out.copy_within(self.sent..self.end, 0);
            self.end -= self.sent;
            self.sent = 0;
        }
    }

    /// Frames, pads and seals one payload built by `build` straight into the output buffer.
    /// Returns the payload length; a payload that is empty or larger than
    /// [`MAX_SEND_PAYLOAD`] is dropped and reported as `None`.
    pub fn frame(
        &mut self,
        rng: &mut dyn SecureRandom,
        build: &mut dyn FnMut(&mut Vec<u8>),
    ) -> Option<usize> {
        self.compact();
        // `build` appends: the spare room behind `end` is given up.
        self.out.truncate(self.end);
        let start = self.out.len();
        self.out.extend_from_slice(&[0; 5]);
        let payload_len = if self.deflater.is_active() {
            self.scratch.clear();
            build(&mut self.scratch);
            let raw_len = self.scratch.len();
            if raw_len == 0
                || raw_len > MAX_SEND_PAYLOAD
                || !self.deflater.compress(&self.scratch, &mut self.out)
            {
                self.out.truncate(start);
                self.end = start;
                return None;
            }
            raw_len
        } else {
            build(&mut self.out);
            let n = self.out.len() - start - 5;
            if n == 0 || n > MAX_SEND_PAYLOAD {
                self.out.truncate(start);
                self.end = start;
                return None;
            }
            n
        };
        // What goes on the wire: the payload as built, or compressed.
        let wire_len = self.out.len() - start - 5;
        let framing = Framing::of(&*self.sealer);
        let pad = framing.pad(wire_len);
        let packet_len = 1 + wire_len + pad;
        if let Some(header) = self.out.get_mut(start..start + 5) {
            let [l0, l1, l2, l3] = (packet_len as u32).to_be_bytes();
            header.copy_from_slice(&[l0, l1, l2, l3, pad as u8]);
        }
        self.pad.take(rng, pad, &mut self.out);
        self.out.resize(self.out.len() + framing.tag, 0);
        self.seal_packet(start, packet_len, framing.tag);
        self.end = self.out.len();
        Some(payload_len)
    }

    /// Seals the packet of `packet_len` (length field excluded) at `at`, followed by `tag`
    /// bytes of room, and counts it.
    fn seal_packet(&mut self, at: usize, packet_len: usize, tag: usize) {
        if let Some(packet) = self.out.get_mut(at..at + 4 + packet_len + tag) {
            self.sealer.seal(self.seq, packet);
        }
        self.seq = self.seq.wrapping_add(1);
        self.bytes += (4 + packet_len + tag) as u64;
        self.packets += 1;
    }

    /// Sends up to `max` bytes read by `fill` straight into the packets, without a copy:
    /// payloads of `head` followed by the data as an SSH string of at most `chunk` bytes,
    /// so CHANNEL_DATA with `head` = message number and recipient. `fill` gets the data
    /// areas of the packets in order (one scatter read) and returns how many bytes it
    /// wrote; only the packets those bytes reach are framed, padded and sealed, the last one
    /// short. Returns that count. Not for compressed payloads (returns 0 without calling
    /// `fill`; use [`frame`](Self::frame)), nor for more than 16 packets at once (`max` is
    /// cut to 16 `chunk`s).
    pub fn frame_data(
        &mut self,
        rng: &mut dyn SecureRandom,
        head: &[u8],
        chunk: usize,
        max: usize,
        fill: &mut dyn FnMut(&mut [IoSliceMut<'_>]) -> usize,
    ) -> usize {
        const MAX_PACKETS: usize = 16;
        let layout = DataLayout {
            framing: Framing::of(&*self.sealer),
            head: head.len() + 4,
            chunk: chunk.min(MAX_SEND_PAYLOAD.saturating_sub(head.len() + 4)),
        };
        let max = max.min(layout.chunk * MAX_PACKETS);
        if self.deflater.is_active() || max == 0 || head.is_empty() {
            return 0;
        }
        self.compact();
        // Every packet but the last is full and sits right behind the one before.
        let full = layout.footprint(layout.chunk);
        let packets = max.div_ceil(layout.chunk);
        let last = max - (packets - 1) * layout.chunk;
        let start = self.end;
        let room = start + (packets - 1) * full + layout.room(last);
        if self.out.len() < room {
            self.out.resize(room, 0);
        }
        let data_at = |i: usize| start + i * full + 5 + layout.head;
        let n = {
            let mut slices: [IoSliceMut<'_>; MAX_PACKETS] =
                core::array::from_fn(|_| IoSliceMut::new(&mut []));
            let mut rest = self.out.get_mut(start..room).unwrap_or_default();
            let mut taken = start;
            for (i, slot) in slices.iter_mut().take(packets).enumerate() {
                let len = if i + 1 == packets { last } else { layout.chunk };
                let skip = (data_at(i) - taken).min(rest.len());
                let (_, tail) = core::mem::take(&mut rest).split_at_mut(skip);
                let len = len.min(tail.len());
                let (data, tail) = tail.split_at_mut(len);
                *slot = IoSliceMut::new(data);
                rest = tail;
                taken = data_at(i) + len;
            }
            fill(slices.get_mut(..packets).unwrap_or_default()).min(max)
        };
        let mut at = start;
        let mut left = n;
        while left > 0 {
            let data = left.min(layout.chunk);
            left -= data;
            let pad = layout.pad(data);
            let packet_len = 1 + layout.head + data + pad;
            let tag = layout.framing.tag;
            let Some(packet) = self.out.get_mut(at..at + 4 + packet_len + tag) else {
                break;
            };
            let [l0, l1, l2, l3] = (packet_len as u32).to_be_bytes();
            let [d0, d1, d2, d3] = (data as u32).to_be_bytes();
            let (front, back) = packet.split_at_mut(5 + layout.head);
            let (fixed, len_field) = front.split_at_mut(5 + head.len());
            let (prefix, head_field) = fixed.split_at_mut(5);
            prefix.copy_from_slice(&[l0, l1, l2, l3, pad as u8]);
            head_field.copy_from_slice(head);
            len_field.copy_from_slice(&[d0, d1, d2, d3]);
            if let Some(padding) = back.get_mut(data..data + pad) {
                self.pad.fill(rng, padding);
            }
            self.seal_packet(at, packet_len, tag);
            at += 4 + packet_len + tag;
        }
        self.end = at;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cipher;
    use crate::mac::{self, MacAlgorithm};

    struct Counter(u8);
    impl SecureRandom for Counter {
        fn fill(&mut self, dest: &mut [u8]) {
            for b in dest {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
    }

    fn pair(alg: Option<cipher::CipherAlgorithm>) -> (Tx, Rx) {
        pair_with_mac(alg, mac::HMAC_SHA2_256_ETM)
    }

    /// `mac` is used only when the cipher needs one.
    fn pair_with_mac(alg: Option<cipher::CipherAlgorithm>, mac: MacAlgorithm) -> (Tx, Rx) {
        let mut tx = Tx::default();
        let mut rx = Rx::default();
        if let Some(alg) = alg {
            let key = vec![1; alg.key_len];
            let iv = vec![2; alg.iv_len];
            let mac_key = vec![3; mac.key_len];
            let mac = (!alg.aead).then_some((mac, &mac_key[..]));
            tx.set_sealer(alg.sealer_with_mac(&key, &iv, mac).unwrap());
            rx.set_opener(alg.opener_with_mac(&key, &iv, mac).unwrap());
        }
        (tx, rx)
    }

    /// Every cipher, and every MAC with each cipher that takes one.
    fn every_protection() -> Vec<(Option<cipher::CipherAlgorithm>, MacAlgorithm)> {
        let mut v = vec![(None, mac::HMAC_SHA2_256)];
        for c in cipher::ALL {
            if c.aead {
                v.push((Some(*c), mac::HMAC_SHA2_256));
            } else {
                v.extend(mac::ALL.iter().map(|m| (Some(*c), *m)));
            }
        }
        v
    }

    #[test]
    fn packets_round_trip_byte_by_byte_for_every_cipher_and_mac() {
        let mut rng = Counter(0);
        for (alg, mac) in every_protection() {
            let (mut tx, mut rx) = pair_with_mac(alg, mac);
            let payloads: Vec<Vec<u8>> = (1..40usize)
                .map(|n| (0..n * 37).map(|i| i as u8).collect())
                .collect();
            for p in &payloads {
                tx.frame(&mut rng, &mut |b| b.extend_from_slice(p)).unwrap();
            }
            let wire = tx.output().to_vec();
            tx.consume(wire.len());
            assert!(tx.output().is_empty());
            let mut got = Vec::new();
            for b in &wire {
                rx.append(std::slice::from_ref(b));
                while let Some(r) = rx.next_packet().unwrap() {
                    got.push(rx.payload(&r).to_vec());
                }
            }
            assert_eq!(got, payloads, "{alg:?} {mac:?}");
            assert_eq!(rx.seq, payloads.len() as u32);
        }
    }

    /// A `fill` for [`Tx::frame_data`] that writes `n` bytes of a pattern from `next` on
    /// across the slices, and records their lengths.
    fn pattern_fill<'a>(
        n: usize,
        next: &'a mut u8,
        lens: &'a mut Vec<usize>,
    ) -> impl FnMut(&mut [IoSliceMut<'_>]) -> usize + 'a {
        move |slices| {
            lens.clear();
            lens.extend(slices.iter().map(|s| s.len()));
            let mut left = n;
            for s in slices.iter_mut() {
                let k = left.min(s.len());
                for b in s.get_mut(..k).unwrap_or_default() {
                    *b = *next;
                    *next = next.wrapping_add(7);
                }
                left -= k;
            }
            n - left
        }
    }

    /// The `n` bytes [`pattern_fill`] writes from `first` on.
    fn pattern(first: u8, n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| first.wrapping_add((i as u8).wrapping_mul(7)))
            .collect()
    }

    fn data_payload(head: &[u8], data: &[u8]) -> Vec<u8> {
        let mut p = head.to_vec();
        p.extend_from_slice(&(data.len() as u32).to_be_bytes());
        p.extend_from_slice(data);
        p
    }

    #[test]
    fn data_read_into_packets_round_trips_for_every_cipher_and_mac() {
        let mut rng = Counter(0);
        let head = [94, 0, 0, 0, 9];
        for (alg, mac) in every_protection() {
            let (mut tx, mut rx) = pair_with_mac(alg, mac);
            let mut expected: Vec<Vec<u8>> = Vec::new();
            let mut next = 0u8;
            let mut lens = Vec::new();
            let mut wire = Vec::new();
            // (chunk, max, bytes the read gives)
            let cases = [
                (100, 1000, 1000),
                (100, 1000, 0),
                (100, 1000, 1),
                (100, 1000, 99),
                (100, 1000, 100),
                (100, 1000, 101),
                (100, 950, 950),
                (100, 950, 949),
                (7, 3, 3),
                (32768, 131072, 131072),
                (32768, 131072, 70000),
                (32768, 100_000, 100_000),
                (1, 16, 16),
                (1, 100, 100),
                (65536, 1 << 20, 1 << 20),
            ];
            for (i, &(chunk, max, n)) in cases.iter().enumerate() {
                // A message built the other way in between, and part of the output written.
                let other = vec![93, i as u8, 1, 2, 3];
                tx.frame(&mut rng, &mut |b| b.extend_from_slice(&other))
                    .unwrap();
                expected.push(other);
                let first = next;
                let got = tx.frame_data(
                    &mut rng,
                    &head,
                    chunk,
                    max,
                    &mut pattern_fill(n, &mut next, &mut lens),
                );
                // At most 16 packets, each at most the largest payload we send.
                let chunk = chunk.min(MAX_SEND_PAYLOAD - head.len() - 4);
                let max = max.min(16 * chunk);
                let n = n.min(max);
                assert_eq!(got, n, "{alg:?} {mac:?} case {i}");
                assert_eq!(lens.iter().sum::<usize>(), max, "case {i}");
                assert!(lens.iter().all(|&l| l > 0 && l <= chunk), "case {i}");
                assert!(lens.iter().rev().skip(1).all(|&l| l == chunk), "case {i}");
                let data = pattern(first, n);
                expected.extend(data.chunks(chunk).map(|c| data_payload(&head, c)));
                let out = tx.output();
                let half = out.len() / 2 + i % 3;
                wire.extend_from_slice(&out[..half]);
                tx.consume(half);
            }
            wire.extend_from_slice(tx.output());
            tx.consume(tx.output().len());
            assert!(tx.output().is_empty());
            assert_eq!(tx.bytes, wire.len() as u64, "{alg:?} {mac:?}");
            assert_eq!(tx.packets, expected.len() as u64);
            rx.append(&wire);
            let mut got = Vec::new();
            while let Some(r) = rx.next_packet().unwrap() {
                got.push(rx.payload(&r).to_vec());
            }
            assert!(rx.unconsumed().is_empty(), "{alg:?} {mac:?}");
            assert_eq!(got.len(), expected.len(), "{alg:?} {mac:?}");
            for (k, (g, e)) in got.iter().zip(&expected).enumerate() {
                if g != e {
                    let at = g.iter().zip(e).position(|(a, b)| a != b);
                    panic!(
                        "{alg:?} {mac:?}: payload {k} differs at {at:?}: len {} vs {}, {:?} vs {:?}",
                        g.len(),
                        e.len(),
                        &g[..g.len().min(12)],
                        &e[..e.len().min(12)]
                    );
                }
            }
            assert_eq!(rx.seq, expected.len() as u32);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(64))]

        /// Random runs of whole payloads, reads into packets (of every size, cut short at
        /// random) and partial writes, under a random protection: what is written to the
        /// wire opens to exactly the payloads, in order.
        #[test]
        fn reads_into_packets_mixed_with_payloads_and_partial_writes_stay_in_order(
            protection in 0usize..64,
            ops in proptest::collection::vec(
                (0u8..3, 1usize..70_000, 1usize..300_000, 0usize..300_000),
                1..40,
            ),
        ) {
            let all = every_protection();
            let (alg, mac) = all[protection % all.len()];
            let (mut tx, mut rx) = pair_with_mac(alg, mac);
            let mut rng = Counter(0);
            let head = [94, 1, 2, 3, 4];
            let mut expected = Vec::new();
            let mut wire = Vec::new();
            let mut next = 0u8;
            let mut lens = Vec::new();
            for (kind, a, b, c) in ops {
                match kind {
                    0 => {
                        let p: Vec<u8> = (0..a % 5000 + 1).map(|i| i as u8).collect();
                        tx.frame(&mut rng, &mut |buf| buf.extend_from_slice(&p)).unwrap();
                        expected.push(p);
                    }
                    1 => {
                        let first = next;
                        let got = tx.frame_data(
                            &mut rng,
                            &head,
                            a,
                            b,
                            &mut pattern_fill(c, &mut next, &mut lens),
                        );
                        let chunk = a.min(MAX_SEND_PAYLOAD - head.len() - 4);
                        proptest::prop_assert_eq!(got, c.min(b).min(16 * chunk));
                        let data = pattern(first, got);
                        expected.extend(data.chunks(chunk).map(|d| data_payload(&head, d)));
                    }
                    _ => {
                        let n = c.min(tx.output().len());
                        wire.extend_from_slice(&tx.output()[..n]);
                        tx.consume(n);
                    }
                }
            }
            wire.extend_from_slice(tx.output());
            rx.append(&wire);
            let mut got = Vec::new();
            while let Some(r) = rx.next_packet().unwrap() {
                got.push(rx.payload(&r).to_vec());
            }
            proptest::prop_assert!(rx.unconsumed().is_empty());
            proptest::prop_assert_eq!(got.len(), expected.len());
            proptest::prop_assert!(got == expected, "payloads differ");
        }
    }

    #[test]
    fn data_is_not_read_into_compressed_packets() {
        let mut rng = Counter(0);
        let (mut tx, _) = pair(None);
        tx.set_compression(Compression::Zlib, false);
        let mut called = false;
        let n = tx.frame_data(&mut rng, &[94, 0, 0, 0, 0], 100, 100, &mut |_| {
            called = true;
            100
        });
        assert_eq!((n, called), (0, false));
        assert!(tx.output().is_empty());
    }

    #[test]
    fn reading_in_place_with_compaction_keeps_every_packet() {
        let mut rng = Counter(0);
        let (mut tx, mut rx) = pair(Some(cipher::AES128_GCM));
        let payloads: Vec<Vec<u8>> = (0..200usize)
            .map(|n| vec![n as u8 | 1; 1 + n * 91 % 5000])
            .collect();
        for p in &payloads {
            tx.frame(&mut rng, &mut |b| b.extend_from_slice(p)).unwrap();
        }
        let wire = tx.output().to_vec();
        let mut got = Vec::new();
        let mut at = 0;
        for step in [1usize, 7, 4096, 333, 65536].iter().cycle() {
            if at == wire.len() {
                break;
            }
            let n = (*step).min(wire.len() - at);
            let space = rx.read_space(1024);
            let n = n.min(space.len());
            space[..n].copy_from_slice(&wire[at..at + n]);
            rx.commit(n);
            at += n;
            while let Some(r) = rx.next_packet().unwrap() {
                assert!(!r.inflated);
                got.push(rx.payload(&r).to_vec());
            }
        }
        assert_eq!(got, payloads);
        assert!(
            rx.buf.len() < 64 * 1024,
            "buffer stays small: {}",
            rx.buf.len()
        );
    }

    /// OpenSSH aligns `padding_length || payload || padding` for every AEAD cipher, leaving the
    /// 4-byte length out; ChaCha20-Poly1305 once counted it and sshd refused our packets.
    #[test]
    fn aead_packets_align_without_the_length_field_like_openssh() {
        let mut rng = Counter(0);
        for alg in cipher::ALL.iter().filter(|c| c.aead) {
            let (mut tx, mut rx) = pair(Some(*alg));
            for n in 1..100usize {
                tx.frame(&mut rng, &mut |b| b.resize(b.len() + n, 7))
                    .unwrap();
                let out = tx.output().to_vec();
                tx.consume(out.len());
                let head: [u8; 4] = out[..4].try_into().unwrap();
                let len = rx.opener.packet_length(rx.seq, head);
                assert_eq!(len % 8, 0, "{} payload {n}", alg.name);
                assert_eq!(len as usize + 4 + rx.opener.tag_len(), out.len());
                rx.append(&out);
                assert!(rx.next_packet().unwrap().is_some());
            }
        }
    }

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives() {
        let (_, mut rx) = pair(None);
        rx.append(&(MAX_PACKET_LEN + 4).to_be_bytes());
        assert_eq!(
            rx.next_packet(),
            Err(PacketError::TooLong(MAX_PACKET_LEN + 4))
        );
        let (_, mut rx) = pair(None);
        rx.append(&0xffff_fff0u32.to_be_bytes());
        assert!(matches!(rx.next_packet(), Err(PacketError::TooLong(_))));
    }

    #[test]
    fn short_or_misaligned_length_and_bad_padding_are_refused() {
        let (_, mut rx) = pair(None);
        rx.append(&[0, 0, 0, 4]);
        assert_eq!(rx.next_packet(), Err(PacketError::BadLength(4)));
        let (_, mut rx) = pair(None);
        rx.append(&[0, 0, 0, 13]);
        assert_eq!(rx.next_packet(), Err(PacketError::BadLength(13)));
        let (_, mut rx) = pair(None);
        rx.append(&[0, 0, 0, 12, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(rx.next_packet(), Err(PacketError::BadPadding(3)));
        let (_, mut rx) = pair(None);
        rx.append(&[0, 0, 0, 12, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(rx.next_packet(), Err(PacketError::BadPadding(12)));
        let (_, mut rx) = pair(None);
        rx.append(&[0, 0, 0, 12, 11, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(rx.next_packet(), Err(PacketError::EmptyPayload));
    }

    #[test]
    fn flipped_byte_is_an_integrity_error_and_nothing_is_delivered() {
        let mut rng = Counter(0);
        for (alg, mac) in every_protection().into_iter().filter(|(a, _)| a.is_some()) {
            let (mut tx, _) = pair_with_mac(alg, mac);
            tx.frame(&mut rng, &mut |b| b.extend_from_slice(b"\x5ehello"))
                .unwrap();
            let wire = tx.output().to_vec();
            // Every byte after the length: payload, padding and the tag itself.
            for at in 4..wire.len() {
                let (_, mut rx) = pair_with_mac(alg, mac);
                let mut bad = wire.clone();
                bad[at] ^= 0x80;
                rx.append(&bad);
                assert_eq!(
                    rx.next_packet(),
                    Err(PacketError::Integrity),
                    "{alg:?} {mac:?} byte {at}"
                );
            }
        }
    }

    /// Encrypt-and-MAC: the length is inside the first encrypted block, and reading it must not
    /// consume keystream that the packet body needs. Encrypt-then-MAC: the length is clear and
    /// only the rest is aligned, as OpenSSH does.
    #[test]
    fn ctr_lengths_encrypted_or_clear_by_mac_mode() {
        let mut rng = Counter(0);
        for mac in mac::ALL {
            let (mut tx, mut rx) = pair_with_mac(Some(cipher::AES128_CTR), *mac);
            for n in 1..60usize {
                tx.frame(&mut rng, &mut |b| b.resize(b.len() + n, 9))
                    .unwrap();
                let out = tx.output().to_vec();
                tx.consume(out.len());
                let clear = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
                let len = out.len() - 4 - mac.tag_len;
                if mac.etm {
                    assert_eq!(clear, len, "{mac:?}");
                    assert_eq!(len % 16, 0);
                } else {
                    assert_ne!(clear, len, "{mac:?}: the length is encrypted");
                    assert_eq!((len + 4) % 16, 0);
                }
                // Asking for the length twice gives the same answer and costs nothing.
                let head: [u8; 4] = out[..4].try_into().unwrap();
                assert_eq!(rx.opener.packet_length(rx.seq, head) as usize, len);
                assert_eq!(rx.opener.packet_length(rx.seq, head) as usize, len);
                rx.append(&out);
                let r = rx.next_packet().unwrap().unwrap();
                assert_eq!(rx.payload(&r), &vec![9u8; n][..]);
            }
        }
    }

    /// Encrypt-then-MAC checks the tag before decrypting: a packet with a bad tag is refused
    /// even when its (clear) length is valid, and E&M refuses a packet whose length decrypts
    /// to something out of bounds before waiting for the body.
    #[test]
    fn ctr_mac_failures_are_refused_in_both_modes() {
        let mut rng = Counter(0);
        let (mut tx, mut rx) = pair_with_mac(Some(cipher::AES256_CTR), mac::HMAC_SHA2_512_ETM);
        tx.frame(&mut rng, &mut |b| b.extend_from_slice(b"\x5eabc"))
            .unwrap();
        let mut wire = tx.output().to_vec();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        rx.append(&wire);
        assert_eq!(rx.next_packet(), Err(PacketError::Integrity));
        let (_, mut rx) = pair_with_mac(Some(cipher::AES256_CTR), mac::HMAC_SHA2_512);
        rx.append(&[0xde, 0xad, 0xbe, 0xef]);
        assert!(matches!(
            rx.next_packet(),
            Err(PacketError::TooLong(_) | PacketError::BadLength(_))
        ));
    }

    #[test]
    fn compressed_packets_round_trip_and_uncompressed_stay_in_place() {
        let mut rng = Counter(0);
        for (alg, mac) in every_protection() {
            let (mut tx, mut rx) = pair_with_mac(alg, mac);
            let plain = b"\x5eNOT COMPRESSED YET".to_vec();
            tx.frame(&mut rng, &mut |b| b.extend_from_slice(&plain))
                .unwrap();
            tx.set_compression(Compression::ZlibOpenssh, false);
            rx.append(tx.output());
            tx.consume(tx.output().len());
            let r = rx.next_packet().unwrap().unwrap();
            assert!(!r.inflated);
            assert_eq!(rx.payload(&r), &plain[..]);
            rx.set_compression(Compression::ZlibOpenssh, false);
            tx.start_delayed_compression();
            rx.start_delayed_compression();
            assert!(tx.is_compressing() && rx.is_compressing());
            let payloads: Vec<Vec<u8>> = (0..50usize)
                .map(|i| {
                    let mut p = b"\x5e".to_vec();
                    p.extend(std::iter::repeat_n(b"row of a table, ", i * 40).flatten());
                    p
                })
                .collect();
            let mut raw = 0;
            for p in &payloads {
                assert_eq!(
                    tx.frame(&mut rng, &mut |b| b.extend_from_slice(p)),
                    Some(p.len())
                );
                raw += p.len();
            }
            let wire = tx.output().to_vec();
            assert!(wire.len() * 10 < raw, "{} for {raw}", wire.len());
            let mut got = Vec::new();
            for chunk in wire.chunks(1000) {
                rx.append(chunk);
                while let Some(r) = rx.next_packet().unwrap() {
                    assert!(r.inflated);
                    got.push(rx.payload(&r).to_vec());
                }
            }
            assert_eq!(got, payloads, "{alg:?} {mac:?}");
        }
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        let mut rng = Counter(0);
        let (mut tx, mut rx) = pair(Some(cipher::AES128_GCM));
        // The sender's own limit does not apply to what a hostile peer sends: compress a huge
        // payload by hand and frame the result as an uncompressed packet.
        let mut d = Deflater::default();
        d.new_keys(Compression::Zlib, true);
        let mut bomb = Vec::new();
        assert!(d.compress(&vec![0x5e; 10 * 1024 * 1024], &mut bomb));
        assert!(bomb.len() < 20 * 1024, "{}", bomb.len());
        tx.frame(&mut rng, &mut |b| b.extend_from_slice(&bomb))
            .unwrap();
        rx.set_compression(Compression::Zlib, true);
        rx.append(tx.output());
        assert_eq!(
            rx.next_packet(),
            Err(PacketError::Decompress(DecompressError::TooLarge))
        );
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut rng = Counter(0);
        let (mut tx, mut rx) = pair(Some(cipher::CHACHA20_POLY1305));
        tx.seq = u32::MAX;
        rx.seq = u32::MAX;
        for _ in 0..2 {
            tx.frame(&mut rng, &mut |b| b.extend_from_slice(b"\x02x"))
                .unwrap();
        }
        rx.append(tx.output());
        assert_eq!(rx.next_packet().unwrap().unwrap().seq, u32::MAX);
        assert_eq!(rx.next_packet().unwrap().unwrap().seq, 0);
    }

    #[test]
    fn empty_or_oversized_payloads_are_not_sent() {
        let mut rng = Counter(0);
        let (mut tx, _) = pair(None);
        assert_eq!(tx.frame(&mut rng, &mut |_| {}), None);
        assert_eq!(
            tx.frame(&mut rng, &mut |b| b
                .resize(b.len() + MAX_SEND_PAYLOAD + 1, 0)),
            None
        );
        assert!(tx.output().is_empty());
        assert_eq!(tx.seq, 0);
    }
}
