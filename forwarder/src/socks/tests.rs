//! The SOCKS handshake fed every form whole, in pieces and byte by byte; every refusal with the
//! bytes the client is told; the replies; `encode_request` read back.

use proptest::prelude::*;

use super::*;

/// How a driven handshake ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// It still needs bytes and the input is used up.
    Waiting,
    /// The request, and how many bytes of the input the handshake took in all.
    Connect(Request, usize),
    /// The error.
    Failed(SocksError),
}

/// Drives a handshake the way a driver that reads whatever arrives would: `input` arrives in
/// pieces of `chunk` bytes. Returns the replies written before the end, and the end.
fn drive(input: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Outcome) {
    let mut hs = Handshake::new();
    let mut buf = Vec::new();
    let mut pending = input;
    let mut dropped = 0;
    let mut replies = Vec::new();
    loop {
        match hs.step(&buf) {
            Ok(Step::Need(n)) => {
                assert!(n >= 1, "Need(0)");
                assert!(buf.len() + n <= MAX_HANDSHAKE, "Need past MAX_HANDSHAKE");
                if pending.is_empty() {
                    return (replies, Outcome::Waiting);
                }
                let (head, tail) = pending.split_at(chunk.max(1).min(pending.len()));
                buf.extend_from_slice(head);
                pending = tail;
            }
            Ok(Step::Reply { bytes, consumed }) => {
                assert!(consumed >= 1 && consumed <= buf.len());
                replies.push(bytes);
                buf.drain(..consumed);
                dropped += consumed;
            }
            Ok(Step::Connect { request, consumed }) => {
                assert!(consumed <= buf.len());
                assert_eq!(hs.step(&buf), Err(SocksError::AlreadyComplete));
                return (replies, Outcome::Connect(request, dropped + consumed));
            }
            Err(e) => {
                assert_eq!(hs.step(&buf), Err(e.clone()), "errors are final");
                return (replies, Outcome::Failed(e));
            }
        }
    }
}

/// Drives a handshake that reads exactly what `Need` asks for, and checks it never reads
/// past the end of the greeting or the request.
fn drive_exact(input: &[u8]) -> (Vec<Vec<u8>>, Outcome) {
    let mut hs = Handshake::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut read = 0;
    let mut dropped = 0;
    let mut replies = Vec::new();
    loop {
        match hs.step(&buf) {
            Ok(Step::Need(n)) => {
                if read == input.len() {
                    return (replies, Outcome::Waiting);
                }
                let end = (read + n).min(input.len());
                buf.extend_from_slice(&input[read..end]);
                read = end;
            }
            Ok(Step::Reply { bytes, consumed }) => {
                assert_eq!(consumed, buf.len(), "read past the greeting");
                replies.push(bytes);
                buf.clear();
                dropped += consumed;
            }
            Ok(Step::Connect { request, consumed }) => {
                assert_eq!(consumed, buf.len(), "read past the request");
                return (replies, Outcome::Connect(request, dropped + consumed));
            }
            Err(e) => return (replies, Outcome::Failed(e)),
        }
    }
}

/// The outcome of `input` sent all at once, after checking that every other way of reading
/// it (byte by byte, in small and odd pieces, exactly as asked) ends the same.
fn parse(input: &[u8]) -> (Vec<Vec<u8>>, Outcome) {
    let whole = drive(input, input.len());
    for chunk in [1, 2, 3, 7, 64] {
        assert_eq!(drive(input, chunk), whole, "in pieces of {chunk}");
    }
    assert_eq!(drive_exact(input), whole, "read exactly as asked");
    whole
}

fn request(version: Version, host: &str, port: u16) -> Request {
    Request {
        version,
        host: host.to_owned(),
        port,
    }
}

fn connects(input: &[u8]) -> (Request, usize) {
    match parse(input) {
        (_, Outcome::Connect(r, consumed)) => (r, consumed),
        other => panic!("expected a request, got {other:?}"),
    }
}

fn fails(input: &[u8]) -> SocksError {
    match parse(input) {
        (_, Outcome::Failed(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

const GREETING: [u8; 3] = [5, 1, 0];

fn socks5(request: &[u8]) -> Vec<u8> {
    [&GREETING[..], request].concat()
}

fn socks4_refusal() -> Vec<u8> {
    vec![0, 0x5b, 0, 0, 0, 0, 0, 0]
}

fn socks5_refusal(code: u8) -> Vec<u8> {
    vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

// ---- every form ---------------------------------------------------------------------------

#[test]
fn socks4_with_an_ipv4_address_and_a_user_id() {
    let input = b"\x04\x01\x00\x50\x0a\x00\x00\x05fred\x00";
    assert_eq!(
        connects(input),
        (request(Version::Socks4, "10.0.0.5", 80), input.len())
    );
}

#[test]
fn socks4_with_an_empty_user_id() {
    let input = b"\x04\x01\x15\x38\xc0\xa8\x01\x02\x00";
    assert_eq!(
        connects(input),
        (request(Version::Socks4, "192.168.1.2", 5432), 9)
    );
}

#[test]
fn socks4a_with_a_host_name() {
    let input = b"\x04\x01\x15\x38\x00\x00\x00\x01\x00db.internal\x00";
    assert_eq!(
        connects(input),
        (request(Version::Socks4a, "db.internal", 5432), input.len())
    );
    let with_user = b"\x04\x01\x0c\xea\x00\x00\x00\xffroot\x00cluster.example.com\x00";
    assert_eq!(
        connects(with_user),
        (
            request(Version::Socks4a, "cluster.example.com", 3306),
            with_user.len()
        )
    );
}

#[test]
fn socks5_with_an_ipv4_address() {
    let input = socks5(b"\x05\x01\x00\x01\x0a\x00\x00\x05\x15\x38");
    let (replies, outcome) = parse(&input);
    assert_eq!(replies, vec![vec![5, 0]]);
    assert_eq!(
        outcome,
        Outcome::Connect(request(Version::Socks5, "10.0.0.5", 5432), input.len())
    );
}

#[test]
fn socks5_with_a_host_name() {
    let input = socks5(b"\x05\x01\x00\x03\x0bdb.internal\x15\x38");
    assert_eq!(
        connects(&input),
        (request(Version::Socks5, "db.internal", 5432), input.len())
    );
}

#[test]
fn socks5_with_an_ipv6_address() {
    let mut req = vec![5, 1, 0, 4];
    req.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    req.extend_from_slice(&443u16.to_be_bytes());
    let input = socks5(&req);
    assert_eq!(
        connects(&input),
        (request(Version::Socks5, "::1", 443), input.len())
    );

    let addr: Ipv6Addr = "fd00::5".parse().unwrap();
    let mut req = vec![5, 1, 0, 4];
    req.extend_from_slice(&addr.octets());
    req.extend_from_slice(&3306u16.to_be_bytes());
    assert_eq!(connects(&socks5(&req)).0.host, "fd00::5");
}

#[test]
fn socks5_greeting_with_several_methods_and_a_nonzero_reserved_byte() {
    // A client that offers username/password and GSSAPI too; RSV is not checked (OpenSSH
    // does not check it either).
    let input = b"\x05\x03\x02\x01\x00\x05\x01\xff\x01\x7f\x00\x00\x01\x00\x16";
    assert_eq!(
        connects(input),
        (request(Version::Socks5, "127.0.0.1", 22), input.len())
    );
}

#[test]
fn the_longest_fields_are_accepted() {
    let user = vec![b'u'; 255];
    let name = vec![b'h'; 255];
    let input = [
        &b"\x04\x01\x00\x50\x00\x00\x00\x01"[..],
        &user,
        b"\0",
        &name,
        b"\0",
    ]
    .concat();
    assert_eq!(input.len(), 520, "the longest request there is");
    let (r, consumed) = connects(&input);
    assert_eq!(
        (r.version, r.host.len(), consumed),
        (Version::Socks4a, 255, 520)
    );

    let mut req = vec![5, 1, 0, 3, 255];
    req.extend_from_slice(&name);
    req.extend_from_slice(&80u16.to_be_bytes());
    let (r, consumed) = connects(&socks5(&req));
    assert_eq!((r.host.len(), consumed), (255, 3 + 262));

    let mut greeting = vec![5, 255];
    greeting.extend(0..=254u8);
    let (r, consumed) = connects(&[&greeting[..], &req].concat());
    assert_eq!((r.host.len(), consumed), (255, 257 + 262));
}

// ---- exact Need counts ----------------------------------------------------------------------

fn step_once(input: &[u8]) -> Result<Step, SocksError> {
    Handshake::new().step(input)
}

fn step_after_greeting(request: &[u8]) -> Result<Step, SocksError> {
    let mut hs = Handshake::new();
    assert_eq!(
        hs.step(&GREETING),
        Ok(Step::Reply {
            bytes: vec![5, 0],
            consumed: 3
        })
    );
    hs.step(request)
}

#[test]
fn need_counts_are_exact_for_the_first_message() {
    assert_eq!(step_once(b""), Ok(Step::Need(2)));
    // SOCKS4: the 8-byte header, then one byte at a time until each NUL.
    assert_eq!(step_once(b"\x04"), Ok(Step::Need(7)));
    assert_eq!(step_once(b"\x04\x01\x00"), Ok(Step::Need(5)));
    assert_eq!(
        step_once(b"\x04\x01\x00\x50\x0a\x00\x00\x05"),
        Ok(Step::Need(1))
    );
    assert_eq!(
        step_once(b"\x04\x01\x00\x50\x0a\x00\x00\x05fr"),
        Ok(Step::Need(1))
    );
    assert_eq!(
        step_once(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00"),
        Ok(Step::Need(1))
    );
    assert_eq!(
        step_once(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00db"),
        Ok(Step::Need(1))
    );
    // SOCKS5 greeting: the count, then exactly the methods.
    assert_eq!(step_once(b"\x05"), Ok(Step::Need(1)));
    assert_eq!(step_once(b"\x05\x03"), Ok(Step::Need(3)));
    assert_eq!(step_once(b"\x05\x03\x02"), Ok(Step::Need(2)));
    assert_eq!(
        step_once(b"\x05\x03\x02\x01\x00"),
        Ok(Step::Reply {
            bytes: vec![5, 0],
            consumed: 5
        })
    );
}

#[test]
fn need_counts_are_exact_for_the_socks5_request() {
    assert_eq!(step_after_greeting(b""), Ok(Step::Need(4)));
    assert_eq!(step_after_greeting(b"\x05\x01"), Ok(Step::Need(2)));
    assert_eq!(step_after_greeting(b"\x05\x01\x00\x01"), Ok(Step::Need(6)));
    assert_eq!(
        step_after_greeting(b"\x05\x01\x00\x01\x0a\x00"),
        Ok(Step::Need(4))
    );
    assert_eq!(step_after_greeting(b"\x05\x01\x00\x04"), Ok(Step::Need(18)));
    assert_eq!(step_after_greeting(b"\x05\x01\x00\x03"), Ok(Step::Need(1)));
    assert_eq!(
        step_after_greeting(b"\x05\x01\x00\x03\x0b"),
        Ok(Step::Need(13))
    );
    assert_eq!(
        step_after_greeting(b"\x05\x01\x00\x03\x0bdb.internal\x15"),
        Ok(Step::Need(1))
    );
}

#[test]
fn pipelined_client_data_is_left_unconsumed() {
    let data = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"; // a PostgreSQL SSLRequest
    let req4 = b"\x04\x01\x15\x38\x0a\x00\x00\x05\x00";
    let mut hs = Handshake::new();
    assert_eq!(
        hs.step(&[&req4[..], data].concat()),
        Ok(Step::Connect {
            request: request(Version::Socks4, "10.0.0.5", 5432),
            consumed: req4.len()
        })
    );

    // A SOCKS5 client that sends greeting, request and data in one write.
    let req5 = b"\x05\x01\x00\x03\x02db\x15\x38";
    let all = [&GREETING[..], req5, data].concat();
    let mut hs = Handshake::new();
    let Ok(Step::Reply { consumed, .. }) = hs.step(&all) else {
        panic!("no method choice")
    };
    assert_eq!(consumed, 3);
    assert_eq!(
        hs.step(&all[consumed..]),
        Ok(Step::Connect {
            request: request(Version::Socks5, "db", 5432),
            consumed: req5.len()
        })
    );
    // And a NUL in the client's data is not taken for the end of a SOCKS4A name.
    let req4a = b"\x04\x01\x15\x38\x00\x00\x00\x07u\x00db\x00";
    let (r, consumed) = connects(&[&req4a[..], data].concat());
    assert_eq!((r.host.as_str(), consumed), ("db", req4a.len()));
}

// ---- refusals -------------------------------------------------------------------------------

#[test]
fn a_first_byte_that_is_not_4_or_5_is_refused_without_a_reply() {
    let e = fails(b"GET / HTTP/1.1\r\n");
    assert_eq!(e, SocksError::NotSocks { first: b'G' });
    assert_eq!(
        e.to_string(),
        "not a SOCKS request (first byte 0x47; an HTTP client?)"
    );
    assert_eq!(e.reply(), None);
    assert_eq!(
        fails(b"\x16\x03\x01").to_string(),
        "not a SOCKS request (first byte 0x16; a TLS client?)"
    );
    assert_eq!(
        fails(b"\x00").to_string(),
        "not a SOCKS request (first byte 0x00)"
    );
}

#[test]
fn bind_and_udp_associate_are_refused() {
    let e = fails(b"\x04\x02\x00\x50\x0a\x00\x00\x05\x00");
    assert_eq!(
        e,
        SocksError::UnsupportedCommand {
            version: Version::Socks4,
            command: 2
        }
    );
    assert_eq!(
        e.to_string(),
        "SOCKS command 2 (BIND) is not supported, only CONNECT"
    );
    assert_eq!(e.reply(), Some(socks4_refusal()));
    // Refused on the header alone, before the user id arrives.
    assert_eq!(
        fails(b"\x04\x02\x00\x50\x00\x00\x00\x01"),
        SocksError::UnsupportedCommand {
            version: Version::Socks4a,
            command: 2
        }
    );

    let e = fails(&socks5(b"\x05\x02\x00\x01\x0a\x00\x00\x05\x00\x50"));
    assert_eq!(
        e.to_string(),
        "SOCKS command 2 (BIND) is not supported, only CONNECT"
    );
    assert_eq!(e.reply(), Some(socks5_refusal(0x07)));
    let e = fails(&socks5(b"\x05\x03\x00\x01"));
    assert_eq!(
        e,
        SocksError::UnsupportedCommand {
            version: Version::Socks5,
            command: 3
        }
    );
    assert_eq!(
        e.to_string(),
        "SOCKS command 3 (UDP ASSOCIATE) is not supported, only CONNECT"
    );
    assert_eq!(e.reply(), Some(socks5_refusal(0x07)));
    assert_eq!(
        fails(&socks5(b"\x05\x09\x00\x01")).to_string(),
        "SOCKS command 9 is not supported, only CONNECT"
    );
}

#[test]
fn a_socks5_client_without_the_no_authentication_method_is_told_ff() {
    let e = fails(b"\x05\x01\x02");
    assert_eq!(e, SocksError::NoAcceptableMethod { offered: vec![2] });
    assert_eq!(e.reply(), Some(vec![5, 0xff]));
    assert_eq!(
        e.to_string(),
        "the SOCKS5 client offers no method without authentication (it offers 0x02 \
         username/password); set the client to use no authentication"
    );
    let e = fails(b"\x05\x00");
    assert_eq!(e, SocksError::NoAcceptableMethod { offered: vec![] });
    assert_eq!(e.reply(), Some(vec![5, 0xff]));
    assert!(e.to_string().contains("(it offers none)"), "{e}");
    let mut many = vec![5, 20];
    many.extend(1..=20u8);
    let e = fails(&many);
    assert!(
        e.to_string()
            .contains("0x01 GSSAPI, 0x02 username/password, 0x03"),
        "{e}"
    );
    assert!(e.to_string().contains(" and 12 more)"), "{e}");
}

#[test]
fn an_unknown_address_type_is_told_08() {
    let e = fails(&socks5(b"\x05\x01\x00\x09"));
    assert_eq!(e, SocksError::UnknownAddressType { atyp: 9 });
    assert_eq!(e.to_string(), "SOCKS5 address type 9 is unknown");
    assert_eq!(e.reply(), Some(socks5_refusal(0x08)));
}

#[test]
fn a_socks5_request_of_another_version_is_told_01() {
    let e = fails(&socks5(b"\x04\x01\x00\x01\x0a\x00\x00\x05\x00\x50"));
    assert_eq!(e, SocksError::RequestVersion { version: 4 });
    assert_eq!(
        e.to_string(),
        "the SOCKS5 request has version 4, expected 5"
    );
    assert_eq!(e.reply(), Some(socks5_refusal(0x01)));
}

#[test]
fn empty_host_names_are_refused() {
    let e = fails(&socks5(b"\x05\x01\x00\x03\x00\x00\x50"));
    assert_eq!(
        e,
        SocksError::EmptyHost {
            version: Version::Socks5
        }
    );
    assert_eq!(e.to_string(), "empty host name");
    assert_eq!(e.reply(), Some(socks5_refusal(0x01)));
    let e = fails(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\x00");
    assert_eq!(
        e,
        SocksError::EmptyHost {
            version: Version::Socks4a
        }
    );
    assert_eq!(e.reply(), Some(socks4_refusal()));
}

#[test]
fn host_names_that_are_not_printable_ascii_are_refused() {
    let e = fails(&socks5(b"\x05\x01\x00\x03\x03d\xc3\xa9\x00\x50"));
    assert_eq!(
        e,
        SocksError::HostNotPrintable {
            version: Version::Socks5,
            byte: 0xc3,
            offset: 1
        }
    );
    assert_eq!(
        e.to_string(),
        "host name is not printable ASCII (byte 0xc3 at offset 1)"
    );
    assert_eq!(e.reply(), Some(socks5_refusal(0x01)));
    for name in [&b"a b"[..], b"a\x00b", b"a\nb", b"a\x7fb", b"\x1b[31m"] {
        let mut req = vec![5, 1, 0, 3, name.len() as u8];
        req.extend_from_slice(name);
        req.extend_from_slice(&[0, 80]);
        assert!(
            matches!(fails(&socks5(&req)), SocksError::HostNotPrintable { .. }),
            "{name:?}"
        );
    }
    let e = fails(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00db internal\x00");
    assert_eq!(
        e,
        SocksError::HostNotPrintable {
            version: Version::Socks4a,
            byte: b' ',
            offset: 2
        }
    );
    assert_eq!(e.reply(), Some(socks4_refusal()));
}

#[test]
fn an_overlong_user_id_or_socks4a_name_is_refused_at_256_bytes() {
    let header4 = b"\x04\x01\x00\x50\x0a\x00\x00\x05";
    let input = [&header4[..], &[b'u'; 256]].concat();
    let e = fails(&input);
    assert_eq!(
        e,
        SocksError::UserIdTooLong {
            version: Version::Socks4
        }
    );
    assert_eq!(e.to_string(), "the SOCKS4 user id is longer than 255 bytes");
    assert_eq!(e.reply(), Some(socks4_refusal()));
    // 255 bytes without their NUL yet: still waiting.
    assert_eq!(
        drive(&[&header4[..], &[b'u'; 255]].concat(), 1).1,
        Outcome::Waiting
    );

    let header4a = b"\x04\x01\x00\x50\x00\x00\x00\x01";
    let e = fails(&[&header4a[..], &[b'u'; 300], b"\0"].concat());
    assert_eq!(
        e,
        SocksError::UserIdTooLong {
            version: Version::Socks4a
        }
    );
    assert_eq!(
        e.to_string(),
        "the SOCKS4A user id is longer than 255 bytes"
    );

    let e = fails(&[&header4a[..], b"\0", &[b'h'; 256], b"\0"].concat());
    assert_eq!(e, SocksError::HostTooLong);
    assert_eq!(
        e.to_string(),
        "the SOCKS4A host name is longer than 255 bytes"
    );
    assert_eq!(e.reply(), Some(socks4_refusal()));
}

#[test]
fn port_0_is_refused() {
    let e = fails(b"\x04\x01\x00\x00\x0a\x00\x00\x05\x00");
    assert_eq!(
        e,
        SocksError::PortZero {
            version: Version::Socks4
        }
    );
    assert_eq!(
        e.to_string(),
        "destination port 0 is not valid (nothing listens on port 0)"
    );
    assert_eq!(e.reply(), Some(socks4_refusal()));
    let e = fails(b"\x04\x01\x00\x00\x00\x00\x00\x01\x00db\x00");
    assert_eq!(
        e,
        SocksError::PortZero {
            version: Version::Socks4a
        }
    );
    let e = fails(&socks5(b"\x05\x01\x00\x03\x02db\x00\x00"));
    assert_eq!(
        e,
        SocksError::PortZero {
            version: Version::Socks5
        }
    );
    assert_eq!(e.reply(), Some(socks5_refusal(0x01)));
}

#[test]
fn socks4_to_0_0_0_0_is_refused() {
    let e = fails(b"\x04\x01\x00\x50\x00\x00\x00\x00\x00");
    assert_eq!(e, SocksError::ZeroAddress);
    assert_eq!(e.to_string(), "the SOCKS4 destination address is 0.0.0.0");
    assert_eq!(e.reply(), Some(socks4_refusal()));
}

#[test]
fn step_after_the_request_is_an_error_and_errors_are_final() {
    let mut hs = Handshake::new();
    let input = b"\x04\x01\x00\x50\x0a\x00\x00\x05\x00";
    assert!(matches!(hs.step(input), Ok(Step::Connect { .. })));
    assert_eq!(hs.step(b""), Err(SocksError::AlreadyComplete));
    assert_eq!(hs.step(input), Err(SocksError::AlreadyComplete));
    let e = SocksError::AlreadyComplete;
    assert_eq!(e.to_string(), "the SOCKS handshake is already complete");
    assert_eq!(e.reply(), None);

    let mut hs = Handshake::new();
    let refused = Err(SocksError::NotSocks { first: b'G' });
    assert_eq!(hs.step(b"GET"), refused);
    // A valid request afterwards does not revive it.
    assert_eq!(hs.step(input), refused);
}

#[test]
fn no_need_goes_past_max_handshake() {
    assert_eq!(
        need(0, MAX_HANDSHAKE, Version::Socks4),
        Ok(Step::Need(MAX_HANDSHAKE))
    );
    let e = need(MAX_HANDSHAKE, MAX_HANDSHAKE + 1, Version::Socks5).unwrap_err();
    assert_eq!(
        e,
        SocksError::TooLong {
            version: Version::Socks5
        }
    );
    assert_eq!(e.to_string(), "the handshake is longer than 1024 bytes");
    assert_eq!(e.reply(), Some(socks5_refusal(0x01)));
}

// ---- replies --------------------------------------------------------------------------------

#[test]
fn success_and_failure_replies_per_version() {
    for v in [Version::Socks4, Version::Socks4a] {
        assert_eq!(success_reply(v), [0, 0x5a, 0, 0, 0, 0, 0, 0]);
        for f in [
            Failure::General,
            Failure::NotAllowed,
            Failure::NetworkUnreachable,
            Failure::HostUnreachable,
            Failure::ConnectionRefused,
        ] {
            assert_eq!(failure_reply(v, f), socks4_refusal());
        }
    }
    assert_eq!(
        success_reply(Version::Socks5),
        [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    );
    for (f, code) in [
        (Failure::General, 1),
        (Failure::NotAllowed, 2),
        (Failure::NetworkUnreachable, 3),
        (Failure::HostUnreachable, 4),
        (Failure::ConnectionRefused, 5),
    ] {
        assert_eq!(failure_reply(Version::Socks5, f), socks5_refusal(code));
    }
}

// ---- encode_request -------------------------------------------------------------------------

/// Reads `encode_request(r)` back with a fresh handshake (after a greeting for SOCKS5).
fn read_back(r: &Request) -> (Request, usize, usize) {
    let encoded = encode_request(r);
    let input = match r.version {
        Version::Socks5 => socks5(&encoded),
        _ => encoded.clone(),
    };
    let (back, consumed) = connects(&input);
    (back, consumed, input.len())
}

#[test]
fn encode_request_writes_each_form() {
    assert_eq!(
        encode_request(&request(Version::Socks4, "10.0.0.5", 80)),
        b"\x04\x01\x00\x50\x0a\x00\x00\x05\x00"
    );
    assert_eq!(
        encode_request(&request(Version::Socks4a, "db", 5432)),
        b"\x04\x01\x15\x38\x00\x00\x00\x01\x00db\x00"
    );
    assert_eq!(
        encode_request(&request(Version::Socks5, "10.0.0.5", 80)),
        b"\x05\x01\x00\x01\x0a\x00\x00\x05\x00\x50"
    );
    assert_eq!(
        encode_request(&request(Version::Socks5, "db", 80)),
        b"\x05\x01\x00\x03\x02db\x00\x50"
    );
    let v6 = encode_request(&request(Version::Socks5, "::1", 80));
    assert_eq!(v6.len(), 22);
    assert_eq!(&v6[..4], b"\x05\x01\x00\x04");
    // A SOCKS4 request for a name can only go the SOCKS4A way.
    assert_eq!(
        encode_request(&request(Version::Socks4, "db", 1)),
        encode_request(&request(Version::Socks4a, "db", 1))
    );
}

#[test]
fn encode_request_round_trips() {
    for r in [
        request(Version::Socks4, "10.0.0.5", 80),
        request(Version::Socks4, "255.255.255.255", 65535),
        request(Version::Socks4a, "db.internal", 5432),
        // A SOCKS4A name that looks like an address stays a name.
        request(Version::Socks4a, "10.0.0.5", 5432),
        request(Version::Socks5, "10.0.0.5", 5432),
        request(Version::Socks5, "::1", 1),
        request(Version::Socks5, "::ffff:10.0.0.5", 5439),
        request(Version::Socks5, "fd00::5", 3306),
        request(Version::Socks5, "db.internal", 5432),
        // Not in std's form, so sent as a name, and read back as the same text.
        request(Version::Socks5, "0::1", 22),
        request(Version::Socks5, "010.0.0.5", 22),
        request(Version::Socks5, &"x".repeat(255), 22),
    ] {
        let (back, consumed, len) = read_back(&r);
        assert_eq!(back, r);
        assert_eq!(consumed, len);
    }
}

// ---- properties -----------------------------------------------------------------------------

fn any_version() -> impl Strategy<Value = Version> {
    prop_oneof![
        Just(Version::Socks4),
        Just(Version::Socks4a),
        Just(Version::Socks5)
    ]
}

fn any_host(version: Version) -> BoxedStrategy<String> {
    let name = "[!-~]{1,255}";
    let v4 = any::<[u8; 4]>().prop_map(|a| Ipv4Addr::from(a).to_string());
    match version {
        Version::Socks4 => any::<[u8; 4]>()
            .prop_filter("0.0.0.x is SOCKS4A", |a| a[..3] != [0, 0, 0])
            .prop_map(|a| Ipv4Addr::from(a).to_string())
            .boxed(),
        Version::Socks4a => prop_oneof![name.prop_map(|s| s), v4].boxed(),
        Version::Socks5 => prop_oneof![
            name.prop_map(|s| s),
            v4,
            any::<[u8; 16]>().prop_map(|a| Ipv6Addr::from(a).to_string()),
        ]
        .boxed(),
    }
}

fn any_request() -> impl Strategy<Value = Request> {
    (any_version(), 1..=u16::MAX).prop_flat_map(|(version, port)| {
        any_host(version).prop_map(move |host| Request {
            version,
            host,
            port,
        })
    })
}

proptest! {
    #[test]
    fn every_valid_request_round_trips(r in any_request()) {
        let (back, consumed, len) = read_back(&r);
        prop_assert_eq!(back, r);
        prop_assert_eq!(consumed, len);
    }

    #[test]
    fn any_bytes_end_the_same_whole_in_pieces_and_as_asked(
        first in prop_oneof![Just(4u8), Just(5u8), any::<u8>()],
        rest in proptest::collection::vec(
            prop_oneof![Just(0u8), Just(1u8), Just(3u8), Just(5u8), any::<u8>()],
            0..80,
        ),
    ) {
        let input = [&[first][..], &rest].concat();
        let (_, outcome) = parse(&input);
        if let Outcome::Failed(e) = &outcome {
            prop_assert!(!e.to_string().is_empty());
            prop_assert!(e.to_string().chars().all(|c| !c.is_control()));
        }
        if let Outcome::Connect(r, consumed) = outcome {
            prop_assert!(consumed <= input.len());
            prop_assert!(!r.host.is_empty() && r.port != 0);
        }
    }
}
