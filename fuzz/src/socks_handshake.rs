//! The SOCKS handshake of dynamic forwarding (`-D`): `forwarder::socks::Handshake` driven the
//! way a listener drives it, on a client's bytes that arrive in pieces.
//!
//! Input: one control byte that chooses the piece sizes ([`chunks`]: whole, byte by byte,
//! ragged), then the client's bytes.
//!
//! Beside no panic: every `Need(n)` has n >= 1 and keeps the buffer within `MAX_HANDSHAKE`,
//! and a reader that took exactly n bytes would not have read past the greeting or the
//! request; every `consumed` lies within the buffer; the only reply during the handshake is
//! 05 00; errors are final and `step` after the request is an error; the outcome (replies,
//! request and bytes taken, or error) is the same as when the whole input arrives at once; an
//! error's reply is one of the protocol's refusals, and only a first byte other than 4 or 5
//! gets none; a request has a non-empty printable host and a port other than 0, and
//! `encode_request` read back by a fresh handshake gives the same request.

use forwarder::socks::{
    self, Handshake, MAX_HANDSHAKE, Request, SocksError, Step, Version, encode_request,
};

use crate::input::{Input, chunks};

/// How a driven handshake ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// It needs more bytes than the client sent.
    Waiting,
    /// The request, and how many bytes of the client's stream the handshake took.
    Connect(Request, usize),
    /// The error.
    Failed(SocksError),
}

/// Feeds `pieces` one at a time as a driver that reads whatever arrives would, and checks
/// every step on the way. Returns the replies written and the end.
fn drive(pieces: &[&[u8]]) -> (Vec<Vec<u8>>, End) {
    let mut hs = Handshake::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut pieces = pieces.iter();
    // Stream offset of buf[0], and the furthest stream offset a `Need` asked for.
    let mut dropped = 0usize;
    let mut asked = 0usize;
    let mut replies = Vec::new();
    loop {
        match hs.step(&buf) {
            Ok(Step::Need(n)) => {
                assert!(n >= 1, "Need(0)");
                assert!(
                    buf.len().checked_add(n).is_some_and(|t| t <= MAX_HANDSHAKE),
                    "Need({n}) with {} bytes buffered passes MAX_HANDSHAKE",
                    buf.len()
                );
                asked = asked.max(dropped + buf.len() + n);
                let Some(piece) = pieces.next() else {
                    return (replies, End::Waiting);
                };
                buf.extend_from_slice(piece);
            }
            Ok(Step::Reply { bytes, consumed }) => {
                assert_eq!(bytes, [5, 0], "a reply other than the method choice");
                assert!(
                    (3..=buf.len()).contains(&consumed),
                    "greeting of {consumed}"
                );
                assert!(
                    asked <= dropped + consumed,
                    "a Need reached past the greeting"
                );
                replies.push(bytes);
                buf.drain(..consumed);
                dropped += consumed;
            }
            Ok(Step::Connect { request, consumed }) => {
                assert!((1..=buf.len()).contains(&consumed), "request of {consumed}");
                assert!(
                    asked <= dropped + consumed,
                    "a Need reached past the request"
                );
                assert_eq!(hs.step(&buf), Err(SocksError::AlreadyComplete));
                return (replies, End::Connect(request, dropped + consumed));
            }
            Err(e) => {
                assert_eq!(hs.step(&buf), Err(e.clone()), "an error that did not stay");
                return (replies, End::Failed(e));
            }
        }
    }
}

/// A refusal the protocol has: SOCKS5 05 FF, SOCKS5 05 {01,07,08} 00 01 and six zeros, or
/// SOCKS4 00 5B and six zeros.
fn is_refusal(bytes: &[u8]) -> bool {
    match bytes {
        [5, 0xff] => true,
        [5, code, 0, 1, rest @ ..] => matches!(code, 1 | 7 | 8) && rest == [0; 6],
        [0, 0x5b, rest @ ..] => rest == [0; 6],
        _ => false,
    }
}

/// `encode_request(request)` read by a fresh handshake, after a greeting for SOCKS5.
fn check_round_trip(request: &Request) {
    let encoded = encode_request(request);
    let mut hs = Handshake::new();
    if request.version == Version::Socks5 {
        assert_eq!(
            hs.step(&[5, 1, 0]),
            Ok(Step::Reply {
                bytes: vec![5, 0],
                consumed: 3
            })
        );
    }
    assert_eq!(
        hs.step(&encoded),
        Ok(Step::Connect {
            request: request.clone(),
            consumed: encoded.len()
        }),
        "encode_request({request:?}) = {encoded:02x?} reads back differently"
    );
}

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(control) = input.byte() else {
        return;
    };
    let stream = input.rest();
    let pieces = chunks(stream, control);
    let in_pieces = drive(&pieces);
    assert_eq!(
        in_pieces,
        drive(&[stream]),
        "the stream in pieces ends differently from the stream at once"
    );
    let (replies, end) = in_pieces;
    match end {
        End::Waiting => {}
        End::Connect(request, consumed) => {
            assert!(consumed <= stream.len());
            assert!(!request.host.is_empty(), "an empty host");
            assert!(
                request.host.len() <= 255,
                "a host of {}",
                request.host.len()
            );
            assert!(
                request.host.bytes().all(|b| b.is_ascii_graphic()),
                "a host that is not printable: {:?}",
                request.host
            );
            assert_ne!(request.port, 0, "port 0");
            if request.version == Version::Socks4 {
                assert!(request.host.parse::<std::net::Ipv4Addr>().is_ok());
            }
            assert_eq!(
                replies.len(),
                usize::from(request.version == Version::Socks5)
            );
            let success = socks::success_reply(request.version);
            assert_eq!(
                success.len(),
                if request.version == Version::Socks5 {
                    10
                } else {
                    8
                }
            );
            check_round_trip(&request);
        }
        End::Failed(e) => {
            let text = e.to_string();
            assert!(
                !text.is_empty() && !text.chars().any(char::is_control),
                "{text:?}"
            );
            match e.reply() {
                None => assert!(
                    matches!(e, SocksError::NotSocks { .. }),
                    "{e:?} without a reply"
                ),
                Some(bytes) => assert!(is_refusal(&bytes), "{e:?} replies {bytes:02x?}"),
            }
            assert_eq!(
                matches!(e, SocksError::NotSocks { .. }),
                !matches!(stream.first(), Some(4 | 5)),
                "{e:?} for first byte {:?}",
                stream.first()
            );
        }
    }
}

/// Seed inputs: every form of request, whole and byte by byte, one followed by the client's
/// first bytes, and a few refusals.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let name = |version, host: &str, port| {
        encode_request(&Request {
            version,
            host: host.to_owned(),
            port,
        })
    };
    let greeting: &[u8] = &[5, 2, 2, 0];
    let streams: Vec<(&str, Vec<u8>)> = vec![
        (
            "socks4",
            b"\x04\x01\x15\x38\x0a\x00\x00\x05fuzz\x00".to_vec(),
        ),
        (
            "socks4a",
            b"\x04\x01\x15\x38\x00\x00\x00\x01fuzz\x00db.internal\x00".to_vec(),
        ),
        (
            "socks5-ipv4",
            [greeting, &name(Version::Socks5, "10.0.0.5", 5432)].concat(),
        ),
        (
            "socks5-name",
            [greeting, &name(Version::Socks5, "db.internal", 5432)].concat(),
        ),
        (
            "socks5-ipv6",
            [greeting, &name(Version::Socks5, "fd00::5", 3306)].concat(),
        ),
        (
            "socks5-pipelined",
            [
                &[5, 1, 0][..],
                &name(Version::Socks5, "db", 5432),
                b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            ]
            .concat(),
        ),
        (
            "socks5-bind",
            b"\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50".to_vec(),
        ),
        ("socks5-password-only", b"\x05\x01\x02".to_vec()),
        ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    let mut out = Vec::new();
    for (label, stream) in streams {
        for (how, control) in [("whole", 0u8), ("bytes", 1u8)] {
            out.push((format!("{label}-{how}"), [&[control][..], &stream].concat()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_runs() {
        let seeds: Vec<_> = crate::seeds::all()
            .into_iter()
            .filter(|s| s.target == "socks_handshake")
            .collect();
        assert!(seeds.len() >= 6);
        for s in seeds {
            run(&s.data);
        }
    }

    #[test]
    fn the_request_seeds_reach_a_request() {
        for (name, data) in seeds() {
            let (_, end) = drive(&[&data[1..]]);
            let connects = matches!(end, End::Connect(..));
            let expected =
                name.starts_with("socks") && !name.contains("bind") && !name.contains("password");
            assert_eq!(connects, expected, "{name}: {end:?}");
        }
    }
}
