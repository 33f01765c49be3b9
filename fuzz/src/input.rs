//! Turning one fuzz input into a sequence of decisions.
//!
//! Every reader here is total: when the input runs out it returns `None` or a short slice, and
//! the harness simply stops. That keeps each byte meaningful to the fuzzer's mutations and
//! keeps seeds easy to write by hand.

/// The fuzz input, read front to back.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data` from the start.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One byte.
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    /// A big-endian `u16`; a lone last byte counts as the high byte.
    pub fn u16(&mut self) -> Option<u16> {
        let hi = self.byte()?;
        let lo = self.byte().unwrap_or(0);
        Some(u16::from_be_bytes([hi, lo]))
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A payload written as a big-endian `u16` length and that many bytes (fewer at the end of
    /// the input).
    pub fn payload(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        Some(self.bytes(usize::from(len)))
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.data)
    }
}

/// Writes a payload the way [`Input::payload`] reads it (for seeds).
pub fn put_payload(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload.get(..usize::from(len)).unwrap_or(payload));
}

/// A small deterministic generator (xorshift32) for choices that should not each cost an
/// input byte, such as the size of every chunk.
#[derive(Clone, Debug)]
pub struct Xorshift(u32);

impl Xorshift {
    /// A generator from a seed (any value, zero included).
    pub fn new(seed: u32) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9) | 1)
    }

    /// The next number.
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// A number in `1..=max`.
    pub fn up_to(&mut self, max: usize) -> usize {
        1 + (self.next_u32() as usize) % max.max(1)
    }
}

/// At most this many chunks: past it the rest arrives in one piece, so a long input fed byte
/// by byte costs bounded time.
pub const MAX_CHUNKS: usize = 2048;

/// Splits `data` into chunks whose sizes follow from `control`, so that one control byte
/// makes the same stream arrive all at once, byte by byte, or in ragged pieces.
pub fn chunks(data: &[u8], control: u8) -> Vec<&[u8]> {
    let mut rng = Xorshift::new(u32::from(control >> 3));
    let mut out = Vec::new();
    let mut rest = data;
    let mut flip = false;
    while !rest.is_empty() {
        let size = match control & 7 {
            _ if out.len() + 1 >= MAX_CHUNKS => rest.len(),
            0 => rest.len(),
            1 => 1,
            2 => rng.up_to(16),
            3 => rng.up_to(600),
            4 => rng.up_to(5000),
            5 => {
                flip = !flip;
                if flip { 1 } else { rng.up_to(40_000) }
            }
            _ => rng.up_to(64),
        };
        let (head, tail) = rest.split_at(size.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_stream_in_order_for_every_control_byte() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        for control in 0..=255u8 {
            let parts = chunks(&data, control);
            assert!(parts.iter().all(|p| !p.is_empty()));
            assert_eq!(parts.concat(), data, "control {control}");
        }
        assert_eq!(chunks(&data, 0).len(), 1);
        assert_eq!(chunks(&data[..100], 1).len(), 100);
        assert_eq!(chunks(&data, 1).len(), MAX_CHUNKS);
    }

    #[test]
    fn input_readers_stop_cleanly_at_the_end() {
        let mut input = Input::new(&[0, 3, b'a', b'b', 7]);
        assert_eq!(input.payload(), Some(&b"ab\x07"[..]));
        assert!(input.is_empty());
        assert_eq!(input.byte(), None);
        assert_eq!(input.payload(), None);
        let mut input = Input::new(&[9]);
        assert_eq!(input.u16(), Some(0x0900));
    }

    #[test]
    fn put_payload_is_read_back_by_payload() {
        let mut out = Vec::new();
        put_payload(&mut out, b"hello");
        put_payload(&mut out, b"");
        let mut input = Input::new(&out);
        assert_eq!(input.payload(), Some(&b"hello"[..]));
        assert_eq!(input.payload(), Some(&b""[..]));
        assert!(input.is_empty());
    }
}
