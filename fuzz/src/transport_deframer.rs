//! `ssh_transport::packet::Rx`, the receive side of the binary packet protocol.
//!
//! Input: `control, chunking, rest`. `control & 7` picks the packet protection from
//! [`PROTECTIONS`] (plaintext, each AEAD cipher, AES-CTR with a MAC in both modes; fixed
//! keys); `control & 8` picks the mode:
//! - raw: `rest` is received as is, in chunks, and packets are taken until one is refused or
//!   more bytes are needed. Every packet handed out must lie inside its buffer, be non-empty
//!   and carry the next sequence number.
//! - framed: `rest` is a list of payloads that `Tx` seals; one byte of the result may be
//!   flipped (`control & 16`). Whatever `Rx` delivers must be exactly what was sent, in order,
//!   and with a real cipher nothing from the damaged packet on may be delivered.
//!
//! `control & 32` makes the chunks arrive through `read_space`/`commit` instead of `append`.
//! `control & 64` turns zlib compression on for the receiver (and, framed, the sender): in raw
//! mode every payload that opens goes through the inflater, which must never hand out more
//! than its bound.

use ssh_transport::cipher::{self, CipherAlgorithm};
use ssh_transport::compress::{Compression, MAX_INFLATED_PAYLOAD};
use ssh_transport::mac::{self, MacAlgorithm};
use ssh_transport::packet::{MAX_SEND_PAYLOAD, Rx, Tx};
use ssh_transport::server::SeededRandom;

use crate::input::{Input, chunks};

/// At most this many payloads are framed per input, so one input costs bounded time.
const MAX_PAYLOADS: usize = 64;

/// A packet protection: a cipher, with its MAC when it needs one.
pub type Protection = (CipherAlgorithm, Option<MacAlgorithm>);

/// What `control & 7` selects (0 is plaintext). The CTR entries cover both MAC modes, both
/// SHA-2 sizes and SHA-1's 20-byte tag, which is not a multiple of the block size.
pub const PROTECTIONS: [Option<Protection>; 8] = [
    None,
    Some((cipher::AES128_GCM, None)),
    Some((cipher::AES256_GCM, None)),
    Some((cipher::CHACHA20_POLY1305, None)),
    Some((cipher::AES128_CTR, Some(mac::HMAC_SHA2_256_ETM))),
    Some((cipher::AES256_CTR, Some(mac::HMAC_SHA2_512_ETM))),
    Some((cipher::AES192_CTR, Some(mac::HMAC_SHA1))),
    Some((cipher::AES256_CTR, Some(mac::HMAC_SHA2_512))),
];

/// Mode bits of the control byte.
pub const FRAMED: u8 = 8;
/// Flip one byte of the framed stream.
pub const FLIP: u8 = 16;
/// Feed through `read_space`/`commit`.
pub const READ_SPACE: u8 = 32;
/// zlib compression on.
pub const COMPRESSED: u8 = 64;

/// What one run did, so tests can tell that a seed reaches what it claims.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Payloads handed out.
    pub delivered: usize,
    /// Of those, payloads that came out of the inflater.
    pub inflated: usize,
    /// The receiver refused a packet.
    pub refused: bool,
}

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    let _ = report(data);
}

/// [`run`], telling what happened.
pub fn report(data: &[u8]) -> Report {
    let mut input = Input::new(data);
    let Some(control) = input.byte() else {
        return Report::default();
    };
    let chunking = input.byte().unwrap_or(0);
    let protection = PROTECTIONS.get(usize::from(control & 7)).copied().flatten();
    let via_read_space = control & READ_SPACE != 0;
    let compressed = control & COMPRESSED != 0;
    if control & FRAMED == 0 {
        raw(
            protection,
            input.rest(),
            chunking,
            via_read_space,
            compressed,
        )
    } else {
        framed(protection, &mut input, control, chunking, via_read_space)
    }
}

/// The fixed keys every protection runs with here (the seeds seal with them too): cipher
/// key, IV and MAC key.
pub fn key(p: &Protection) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (alg, mac) = p;
    (
        vec![0x42; alg.key_len],
        vec![0x24; alg.iv_len],
        vec![0x17; mac.map_or(0, |m| m.key_len)],
    )
}

/// A sealer for the protection, as the seeds and the framed mode use it.
pub fn sealer(p: &Protection) -> Box<dyn ssh_transport::cipher::PacketSealer> {
    let (k, iv, m) = key(p);
    let Some(sealer) = p.0.sealer_with_mac(&k, &iv, p.1.map(|mac| (mac, &m[..]))) else {
        panic!("{} refused keys of its own lengths", p.0.name);
    };
    sealer
}

fn receiver(protection: Option<Protection>, compressed: bool) -> Rx {
    let mut rx = Rx::default();
    if let Some(p) = protection {
        let (k, iv, m) = key(&p);
        let Some(opener) = p.0.opener_with_mac(&k, &iv, p.1.map(|mac| (mac, &m[..]))) else {
            panic!("{} refused keys of its own lengths", p.0.name);
        };
        rx.set_opener(opener);
    }
    if compressed {
        rx.set_compression(Compression::Zlib, true);
    }
    rx
}

fn feed(rx: &mut Rx, chunk: &[u8], via_read_space: bool) {
    if via_read_space {
        let space = rx.read_space(chunk.len());
        assert!(
            space.len() >= chunk.len(),
            "read_space({}) gave only {} bytes",
            chunk.len(),
            space.len()
        );
        space[..chunk.len()].copy_from_slice(chunk);
        rx.commit(chunk.len());
    } else {
        rx.append(chunk);
    }
}

/// Takes every packet that is ready. Returns `false` once `Rx` refused a packet (a receiver
/// stops there: the connection is over).
fn drain(rx: &mut Rx, delivered: &mut Vec<Vec<u8>>, report: &mut Report) -> bool {
    loop {
        let seq_before = rx.seq;
        match rx.next_packet() {
            Ok(Some(r)) => {
                assert_eq!(r.seq, seq_before, "packet handed out with a stale sequence");
                assert_eq!(rx.seq, seq_before.wrapping_add(1));
                assert_eq!(
                    r.inflated,
                    rx.is_compressing(),
                    "a payload bypassed the inflater, or went through one that is off"
                );
                let payload = rx.payload(&r);
                assert_eq!(
                    payload.len(),
                    r.payload.len(),
                    "payload range {:?} is outside its buffer",
                    r.payload
                );
                assert!(!payload.is_empty(), "an empty payload was handed out");
                assert!(
                    payload.len() <= MAX_INFLATED_PAYLOAD,
                    "a {}-byte payload passed the bound",
                    payload.len()
                );
                delivered.push(payload.to_vec());
                report.delivered += 1;
                report.inflated += usize::from(r.inflated);
            }
            Ok(None) => return true,
            Err(_) => {
                report.refused = true;
                return false;
            }
        }
    }
}

fn raw(
    protection: Option<Protection>,
    stream: &[u8],
    chunking: u8,
    via_read_space: bool,
    compressed: bool,
) -> Report {
    let mut rx = receiver(protection, compressed);
    let mut delivered = Vec::new();
    let mut report = Report::default();
    let mut fed = 0usize;
    for chunk in chunks(stream, chunking) {
        feed(&mut rx, chunk, via_read_space);
        fed += chunk.len();
        if !drain(&mut rx, &mut delivered, &mut report) {
            return report;
        }
        assert!(
            rx.unconsumed().len() <= fed,
            "more bytes buffered than received"
        );
    }
    if !compressed {
        let taken: usize = delivered.iter().map(Vec::len).sum();
        assert!(taken <= stream.len(), "more payload than input");
    }
    report
}

fn framed(
    protection: Option<Protection>,
    input: &mut Input<'_>,
    control: u8,
    chunking: u8,
    via_read_space: bool,
) -> Report {
    let mut rng = SeededRandom::new(u64::from(control));
    let mut tx = Tx::default();
    if let Some(p) = protection {
        tx.set_sealer(sealer(&p));
    }
    let compressed = control & COMPRESSED != 0;
    if compressed {
        tx.set_compression(Compression::Zlib, true);
    }
    let flip = if control & FLIP != 0 {
        Some((input.u16().unwrap_or(0), input.byte().unwrap_or(0) | 1))
    } else {
        None
    };
    let big = input.byte() == Some(0xff);

    let mut payloads: Vec<Vec<u8>> = Vec::new();
    if big {
        // The send limit itself: one byte over must be refused, exactly at it accepted.
        payloads.push(vec![0x5e; MAX_SEND_PAYLOAD + 1]);
        payloads.push(vec![0x5e; MAX_SEND_PAYLOAD]);
    }
    while payloads.len() < MAX_PAYLOADS {
        let Some(p) = input.payload() else { break };
        payloads.push(p.to_vec());
    }

    // Frame everything, remembering where each packet ends on the wire.
    let mut sent = Vec::new();
    let mut ends = Vec::new();
    for p in &payloads {
        let seq = tx.seq;
        let result = tx.frame(&mut rng, &mut |b| b.extend_from_slice(p));
        let acceptable = !p.is_empty() && p.len() <= MAX_SEND_PAYLOAD;
        assert_eq!(
            result,
            acceptable.then_some(p.len()),
            "frame() of a {}-byte payload",
            p.len()
        );
        if acceptable {
            assert_eq!(tx.seq, seq.wrapping_add(1));
            sent.push(p.clone());
            ends.push(tx.output().len());
        } else {
            assert_eq!(tx.seq, seq, "a refused payload used a sequence number");
        }
    }
    let mut wire = tx.output().to_vec();
    tx.consume(wire.len());
    assert!(tx.output().is_empty(), "consumed output is still pending");

    let damaged_packet = match flip {
        Some((at, mask)) if !wire.is_empty() => {
            let at = usize::from(at) % wire.len();
            wire[at] ^= mask;
            Some(ends.iter().position(|&end| at < end).unwrap_or(ends.len()))
        }
        _ => None,
    };

    let mut rx = receiver(protection, compressed);
    let mut delivered = Vec::new();
    let mut report = Report::default();
    let mut refused = false;
    for chunk in chunks(&wire, chunking) {
        feed(&mut rx, chunk, via_read_space);
        if !drain(&mut rx, &mut delivered, &mut report) {
            refused = true;
            break;
        }
    }

    assert!(delivered.len() <= sent.len(), "more packets than were sent");
    let intact = damaged_packet.unwrap_or(usize::MAX);
    for (i, (got, want)) in delivered.iter().zip(&sent).enumerate() {
        if i < intact {
            assert_eq!(got, want, "packet {i} changed on the way");
        }
    }
    match damaged_packet {
        None => {
            assert!(!refused, "an undamaged stream was refused");
            assert_eq!(delivered.len(), sent.len(), "undamaged packets were lost");
            assert!(
                rx.unconsumed().is_empty(),
                "bytes left after the last packet"
            );
        }
        Some(i) if protection.is_some() => assert!(
            delivered.len() <= i,
            "{}: packet {i} was damaged but {} packets were delivered",
            protection.map_or("none", |p| p.0.name),
            delivered.len()
        ),
        Some(_) => {}
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds;

    /// This target's seeds (the generator runs once per test: it is slow unoptimized).
    fn mine() -> Vec<seeds::Seed> {
        seeds::all()
            .into_iter()
            .filter(|s| s.target == "transport_deframer")
            .collect()
    }

    fn seed(seeds: &[seeds::Seed], name: &str) -> Vec<u8> {
        seeds
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no seed {name}"))
            .data
            .clone()
    }

    #[test]
    fn every_protection_seed_delivers_every_packet() {
        let seeds = mine();
        for s in seeds
            .iter()
            .filter(|s| s.name.starts_with("raw-") && !s.name.contains("bomb"))
        {
            let r = report(&s.data);
            assert_eq!(r.delivered, 4, "{}: {r:?}", s.name);
            assert!(!r.refused, "{}", s.name);
            let zlib = s.name.contains("-zlib");
            assert_eq!(r.inflated, if zlib { 4 } else { 0 }, "{}", s.name);
        }
        for name in [
            "framed-aes128-ctr-hmac-sha2-256-etm",
            "framed-aes256-ctr-hmac-sha2-512",
            "framed-aes192-ctr-hmac-sha1-zlib",
        ] {
            let r = report(&seed(&seeds, name));
            assert!(r.delivered >= 4 && !r.refused, "{name}: {r:?}");
        }
    }

    #[test]
    fn flipped_ctr_and_compressed_seeds_are_refused_and_the_bomb_delivers_nothing() {
        let seeds = mine();
        for name in [
            "framed-aes128-ctr-hmac-sha2-256-etm-flipped",
            "framed-aes256-ctr-hmac-sha2-512-flipped",
            "framed-aes128-gcm-zlib-flipped",
        ] {
            let r = report(&seed(&seeds, name));
            assert!(r.refused, "{name}: {r:?}");
        }
        let r = report(&seed(&seeds, "raw-plain-zlib-bomb"));
        assert_eq!(
            r,
            Report {
                delivered: 0,
                inflated: 0,
                refused: true
            }
        );
    }
}
