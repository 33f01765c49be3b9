//! `ssh_transport::packet::Rx`, the receive side of the binary packet protocol.
//!
//! Input: `control, chunking, rest`. `control & 3` picks plaintext or one of
//! `cipher::ALL` (fixed key); `control & 4` picks the mode:
//! - raw: `rest` is received as is, in chunks, and packets are taken until one is refused or
//!   more bytes are needed. Every packet handed out must lie inside the buffer, be non-empty
//!   and carry the next sequence number.
//! - framed: `rest` is a list of payloads that `Tx` seals; one byte of the result may be
//!   flipped (`control & 8`). Whatever `Rx` delivers must be exactly what was sent, in order,
//!   and with a real cipher nothing from the damaged packet on may be delivered.
//!
//! `control & 16` makes the chunks arrive through `read_space`/`commit` instead of `append`.

use ssh_transport::cipher::{self, CipherAlgorithm};
use ssh_transport::packet::{MAX_SEND_PAYLOAD, Rx, Tx};
use ssh_transport::server::SeededRandom;

use crate::input::{Input, chunks};

/// At most this many payloads are framed per input, so one input costs bounded time.
const MAX_PAYLOADS: usize = 64;

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(control) = input.byte() else {
        return;
    };
    let chunking = input.byte().unwrap_or(0);
    let cipher = match control & 3 {
        0 => None,
        n => cipher::ALL.get(usize::from(n - 1)).copied(),
    };
    let via_read_space = control & 16 != 0;
    if control & 4 == 0 {
        raw(cipher, input.rest(), chunking, via_read_space);
    } else {
        framed(cipher, &mut input, control, chunking, via_read_space);
    }
}

/// The fixed key and IV every cipher runs with here (the seeds seal with them too).
pub fn key(alg: &CipherAlgorithm) -> (Vec<u8>, Vec<u8>) {
    (vec![0x42; alg.key_len], vec![0x24; alg.iv_len])
}

fn receiver(cipher: Option<CipherAlgorithm>) -> Rx {
    let mut rx = Rx::default();
    if let Some(alg) = cipher {
        let (k, iv) = key(&alg);
        let Some(opener) = alg.opener(&k, &iv) else {
            panic!("{} refused a key of its own key length", alg.name);
        };
        rx.set_opener(opener);
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
fn drain(rx: &mut Rx, delivered: &mut Vec<Vec<u8>>) -> bool {
    loop {
        let seq_before = rx.seq;
        match rx.next_packet() {
            Ok(Some(r)) => {
                assert_eq!(r.seq, seq_before, "packet handed out with a stale sequence");
                assert_eq!(rx.seq, seq_before.wrapping_add(1));
                let payload = rx.payload(&r.payload);
                assert_eq!(
                    payload.len(),
                    r.payload.len(),
                    "payload range {:?} is outside the receive buffer",
                    r.payload
                );
                assert!(!payload.is_empty(), "an empty payload was handed out");
                delivered.push(payload.to_vec());
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

fn raw(cipher: Option<CipherAlgorithm>, stream: &[u8], chunking: u8, via_read_space: bool) {
    let mut rx = receiver(cipher);
    let mut delivered = Vec::new();
    let mut fed = 0usize;
    for chunk in chunks(stream, chunking) {
        feed(&mut rx, chunk, via_read_space);
        fed += chunk.len();
        if !drain(&mut rx, &mut delivered) {
            return;
        }
        assert!(
            rx.unconsumed().len() <= fed,
            "more bytes buffered than received"
        );
    }
    let taken: usize = delivered.iter().map(Vec::len).sum();
    assert!(taken <= stream.len(), "more payload than input");
}

fn framed(
    cipher: Option<CipherAlgorithm>,
    input: &mut Input<'_>,
    control: u8,
    chunking: u8,
    via_read_space: bool,
) {
    let mut rng = SeededRandom::new(u64::from(control));
    let mut tx = Tx::default();
    if let Some(alg) = cipher {
        let (k, iv) = key(&alg);
        let Some(sealer) = alg.sealer(&k, &iv) else {
            panic!("{} refused a key of its own key length", alg.name);
        };
        tx.set_sealer(sealer);
    }
    let flip = if control & 8 != 0 {
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

    let mut rx = receiver(cipher);
    let mut delivered = Vec::new();
    let mut refused = false;
    for chunk in chunks(&wire, chunking) {
        feed(&mut rx, chunk, via_read_space);
        if !drain(&mut rx, &mut delivered) {
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
        Some(i) if cipher.is_some() => assert!(
            delivered.len() <= i,
            "{}: packet {i} was damaged but {} packets were delivered",
            cipher.map_or("none", |c| c.name),
            delivered.len()
        ),
        Some(_) => {}
    }
}
