//! Payload compression (RFC 4253 section 6.2, and OpenSSH's delayed `zlib@openssh.com`).
//!
//! ```text
//!  send:    payload ──deflate (one zlib stream per direction, partial flush per packet)──> packet
//!  receive: packet ──inflate into a reusable buffer of at most MAX_INFLATED_PAYLOAD + 1 bytes──> payload
//! ```
//! When each stream starts follows OpenSSH's `packet.c`: every NEWKEYS that negotiated `zlib`
//! starts a fresh stream for that direction (so a rekey restarts the dictionary, and both
//! sides agree on it); `zlib@openssh.com` starts at the first NEWKEYS after user
//! authentication succeeded, or at that success itself if keys are already in place: for the
//! client, right after it receives USERAUTH_SUCCESS; for the server, right after it sends it.
//! Within one stream, every packet ends with a partial flush, so each packet's payload can be
//! inflated completely on arrival.
//!
//! Inflation is bounded: the output buffer is allocated once with room for
//! [`MAX_INFLATED_PAYLOAD`] + 1 bytes and never grows, and a payload that fills it is refused
//! as a decompression bomb.

use core::fmt;

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

/// The largest payload a compressed packet may inflate to. OpenSSH bounds packets at 256 KiB
/// and sends payloads of at most 32 KiB of channel data; a payload beyond this is a
/// decompression bomb, not a message.
pub const MAX_INFLATED_PAYLOAD: usize = 256 * 1024;

/// zlib's default level, which OpenSSH also uses.
const LEVEL: u32 = 6;

/// A compression method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// `none`
    None,
    /// `zlib@openssh.com`: zlib, started after user authentication succeeds.
    ZlibOpenssh,
    /// `zlib`: zlib from the first NEWKEYS.
    Zlib,
}

impl Compression {
    /// Every method we implement.
    pub const ALL: &'static [Self] = &[Self::None, Self::ZlibOpenssh, Self::Zlib];

    /// What `Compression yes` offers, as OpenSSH's client does: delayed zlib first, then zlib,
    /// then none so that a server without compression is still reachable.
    pub const PREFERRED: &'static [Self] = &[Self::ZlibOpenssh, Self::Zlib, Self::None];

    /// The SSH name.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ZlibOpenssh => "zlib@openssh.com",
            Self::Zlib => "zlib",
        }
    }

    /// Looks a name up.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a payload could not be inflated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecompressError {
    /// The payload inflates beyond [`MAX_INFLATED_PAYLOAD`].
    TooLarge,
    /// The compressed data is not valid zlib data for this stream.
    Corrupt,
}

impl fmt::Display for DecompressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => write!(
                f,
                "a compressed packet inflates beyond {} KiB (a decompression bomb)",
                MAX_INFLATED_PAYLOAD / 1024
            ),
            Self::Corrupt => f.write_str("a compressed packet is not valid zlib data"),
        }
    }
}

/// Which stream a direction runs, by the method its current keys negotiated.
#[derive(Debug)]
enum State<S> {
    Off,
    /// `zlib@openssh.com` before authentication: packets are not compressed yet.
    Waiting,
    On(S),
}

/// The send side's compression: one zlib stream, restarted as the module docs describe.
pub struct Deflater {
    state: State<Box<Compress>>,
}

impl fmt::Debug for Deflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.state {
            State::Off => "Deflater(off)",
            State::Waiting => "Deflater(waiting for authentication)",
            State::On(_) => "Deflater(on)",
        })
    }
}

impl Default for Deflater {
    fn default() -> Self {
        Self { state: State::Off }
    }
}

impl Deflater {
    /// New keys with `method` are in force from the next packet.
    pub fn new_keys(&mut self, method: Compression, authenticated: bool) {
        self.state = match method {
            Compression::None => State::Off,
            Compression::ZlibOpenssh if !authenticated => State::Waiting,
            Compression::ZlibOpenssh | Compression::Zlib => State::On(Box::new(Compress::new(
                flate2::Compression::new(LEVEL),
                true,
            ))),
        };
    }

    /// User authentication succeeded: a waiting `zlib@openssh.com` starts with the next packet.
    pub fn authenticated(&mut self) {
        if matches!(self.state, State::Waiting) {
            self.new_keys(Compression::ZlibOpenssh, true);
        }
    }

    /// Whether packets are compressed now.
    pub fn is_active(&self) -> bool {
        matches!(self.state, State::On(_))
    }

    /// Appends `payload`, compressed and flushed, to `out`. `false` if the stream failed
    /// (which zlib only reports for a misused stream: a bug, not bad input).
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) -> bool {
        let State::On(z) = &mut self.state else {
            return false;
        };
        let mut input = payload;
        loop {
            // Room for what this call may write; compress_vec never grows the vector itself.
            out.reserve(input.len() / 2 + 64);
            let before_in = z.total_in();
            if z.compress_vec(input, out, FlushCompress::Partial).is_err() {
                return false;
            }
            let used = usize::try_from(z.total_in() - before_in).unwrap_or(usize::MAX);
            input = input.get(used..).unwrap_or_default();
            // Done when all input is in and the flush fit: the output was not filled up.
            if input.is_empty() && out.len() < out.capacity() {
                return true;
            }
        }
    }
}

/// The receive side's decompression, with its bounded output buffer.
pub struct Inflater {
    state: State<Box<Decompress>>,
    out: Vec<u8>,
}

impl fmt::Debug for Inflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.state {
            State::Off => "Inflater(off)",
            State::Waiting => "Inflater(waiting for authentication)",
            State::On(_) => "Inflater(on)",
        })
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self {
            state: State::Off,
            out: Vec::new(),
        }
    }
}

impl Inflater {
    /// New keys with `method` are in force from the next packet.
    pub fn new_keys(&mut self, method: Compression, authenticated: bool) {
        self.state = match method {
            Compression::None => State::Off,
            Compression::ZlibOpenssh if !authenticated => State::Waiting,
            Compression::ZlibOpenssh | Compression::Zlib => {
                State::On(Box::new(Decompress::new(true)))
            }
        };
    }

    /// User authentication succeeded: a waiting `zlib@openssh.com` starts with the next packet.
    pub fn authenticated(&mut self) {
        if matches!(self.state, State::Waiting) {
            self.new_keys(Compression::ZlibOpenssh, true);
        }
    }

    /// Whether received packets are inflated now.
    pub fn is_active(&self) -> bool {
        matches!(self.state, State::On(_))
    }

    /// The last payload [`inflate`](Self::inflate) produced.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Inflates one packet's compressed payload into [`output`](Self::output).
    pub fn inflate(&mut self, compressed: &[u8]) -> Result<(), DecompressError> {
        let State::On(z) = &mut self.state else {
            return Err(DecompressError::Corrupt);
        };
        // One allocation for the life of the stream; decompress_vec writes only into spare
        // capacity, so nothing a peer sends can make this grow. One byte more than the limit
        // tells "exactly at the limit" from "beyond it".
        self.out.clear();
        if self.out.capacity() < MAX_INFLATED_PAYLOAD + 1 {
            self.out.reserve_exact(MAX_INFLATED_PAYLOAD + 1);
        }
        let mut input = compressed;
        loop {
            let before_in = z.total_in();
            let before_out = self.out.len();
            let status = z
                .decompress_vec(input, &mut self.out, FlushDecompress::Sync)
                .map_err(|_| DecompressError::Corrupt)?;
            if self.out.len() > MAX_INFLATED_PAYLOAD {
                return Err(DecompressError::TooLarge);
            }
            let used = usize::try_from(z.total_in() - before_in).unwrap_or(usize::MAX);
            input = input.get(used..).unwrap_or_default();
            match status {
                // An SSH stream never ends; a peer that ends it has nothing valid to follow.
                Status::StreamEnd => return Err(DecompressError::Corrupt),
                Status::Ok | Status::BufError => {}
            }
            let progressed = used > 0 || self.out.len() > before_out;
            if input.is_empty() && !progressed {
                return Ok(());
            }
            if !progressed {
                // Input left that the stream will not take: it is not zlib data.
                return Err(DecompressError::Corrupt);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(method: Compression) -> (Deflater, Inflater) {
        let mut d = Deflater::default();
        let mut i = Inflater::default();
        d.new_keys(method, true);
        i.new_keys(method, true);
        (d, i)
    }

    #[test]
    fn payloads_round_trip_one_packet_at_a_time_on_one_stream() {
        let (mut d, mut i) = pair(Compression::Zlib);
        let mut total_in = 0;
        let mut total_out = 0;
        for n in 0..200usize {
            let payload: Vec<u8> = (0..n * 97 % 40_000).map(|j| (j % 13) as u8).collect();
            let payload = if payload.is_empty() {
                vec![94]
            } else {
                payload
            };
            let mut wire = Vec::new();
            assert!(d.compress(&payload, &mut wire));
            i.inflate(&wire).unwrap();
            assert_eq!(i.output(), &payload[..], "packet {n}");
            total_in += payload.len();
            total_out += wire.len();
        }
        // The shared dictionary makes repeated content nearly free.
        assert!(total_out * 20 < total_in, "{total_out} of {total_in}");
    }

    #[test]
    fn incompressible_payloads_round_trip() {
        let (mut d, mut i) = pair(Compression::Zlib);
        let mut x = 0x1234_5678u32;
        let payload: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let mut wire = Vec::new();
        assert!(d.compress(&payload, &mut wire));
        assert!(wire.len() < payload.len() + 100);
        i.inflate(&wire).unwrap();
        assert_eq!(i.output(), &payload[..]);
    }

    #[test]
    fn a_bomb_is_refused_without_growing_the_buffer() {
        let (mut d, mut i) = pair(Compression::Zlib);
        let mut wire = Vec::new();
        // 300 KiB of zeros compress to a few hundred bytes.
        assert!(d.compress(&vec![0u8; 300 * 1024], &mut wire));
        assert!(wire.len() < 2048, "{}", wire.len());
        assert_eq!(i.inflate(&wire), Err(DecompressError::TooLarge));
        assert!(i.out.capacity() <= MAX_INFLATED_PAYLOAD + 64);
        // Exactly at the limit is still a payload.
        let (mut d, mut i) = pair(Compression::Zlib);
        let mut wire = Vec::new();
        assert!(d.compress(&vec![0u8; MAX_INFLATED_PAYLOAD], &mut wire));
        assert_eq!(i.inflate(&wire), Ok(()));
        assert_eq!(i.output().len(), MAX_INFLATED_PAYLOAD);
    }

    #[test]
    fn garbage_and_a_finished_stream_are_corrupt() {
        let (_, mut i) = pair(Compression::Zlib);
        assert_eq!(
            i.inflate(b"definitely not zlib"),
            Err(DecompressError::Corrupt)
        );
        let mut finished = Vec::with_capacity(256);
        let mut z = Compress::new(flate2::Compression::new(6), true);
        let status = z
            .compress_vec(b"\x5ebye", &mut finished, FlushCompress::Finish)
            .unwrap();
        assert_eq!(status, Status::StreamEnd);
        let (_, mut i) = pair(Compression::Zlib);
        assert_eq!(i.inflate(&finished), Err(DecompressError::Corrupt));
    }

    #[test]
    fn delayed_compression_waits_for_authentication() {
        let mut d = Deflater::default();
        let mut i = Inflater::default();
        d.new_keys(Compression::ZlibOpenssh, false);
        i.new_keys(Compression::ZlibOpenssh, false);
        assert!(!d.is_active() && !i.is_active());
        d.authenticated();
        i.authenticated();
        assert!(d.is_active() && i.is_active());
        let mut wire = Vec::new();
        assert!(d.compress(b"\x5ehello", &mut wire));
        i.inflate(&wire).unwrap();
        assert_eq!(i.output(), b"\x5ehello");
        // `none` stays off after authentication; plain zlib never waits.
        d.new_keys(Compression::None, true);
        d.authenticated();
        assert!(!d.is_active());
        d.new_keys(Compression::Zlib, false);
        assert!(d.is_active());
    }

    #[test]
    fn new_keys_restart_the_stream_like_openssh() {
        let (mut d, mut i) = pair(Compression::Zlib);
        let mut wire = Vec::new();
        assert!(d.compress(b"\x5esome text some text", &mut wire));
        i.inflate(&wire).unwrap();
        d.new_keys(Compression::Zlib, true);
        let mut fresh = Vec::new();
        assert!(d.compress(b"\x5esome text", &mut fresh));
        // A fresh stream starts with a zlib header (RFC 1950: CMF 0x78).
        assert_eq!(fresh[0], 0x78);
        // The receiver's old stream does not understand it; a fresh one does.
        assert!(i.inflate(&fresh).is_err());
        i.new_keys(Compression::Zlib, true);
        i.inflate(&fresh).unwrap();
        assert_eq!(i.output(), b"\x5esome text");
    }

    #[test]
    fn names_round_trip() {
        for c in Compression::ALL {
            assert_eq!(Compression::from_name(c.name()), Some(*c));
        }
        assert_eq!(Compression::from_name("zlib@example.com"), None);
    }
}
