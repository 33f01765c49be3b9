//! The control socket's protocol (`forwarder::mux`): a master reading what a control client
//! sends (`-M`), or a client (`-O`) reading what a master sends, on bytes that arrive in
//! pieces.
//!
//! Input: one byte that chooses the side (even: the master; odd: a client, whose command is
//! the byte's next bits), one control byte that chooses the piece sizes ([`chunks`]), then
//! the peer's bytes.
//!
//! Beside no panic: the framer never holds a whole message it has not returned, nor a length
//! over `MAX_MESSAGE` it has not refused; every reply the master writes is one whole frame
//! that answers the request's id with OK, ALIVE (with this pid) or FAILURE (with a reason),
//! and the effects follow from the request's type (TERMINATE and STOP_LISTENING only);
//! nothing is answered before the hello; errors are final; a client gives at most one
//! outcome; and what happens is the same as when the whole input arrives at once.

use forwarder::mux::{self, ControlCommand, Effect, Framer, MAX_MESSAGE, kind};
use ssh_transport::wire::{Reader, Writer as _};

use crate::input::{Input, chunks};

const PID: u32 = 31337;

/// What a side did with the bytes, in order.
#[derive(Debug, PartialEq, Eq)]
enum Happened {
    Replied(Vec<u8>, Effect),
    Outcome(Result<String, String>),
    Failed(mux::MuxError),
}

fn drive(pieces: &[&[u8]], client: Option<ControlCommand>) -> Vec<Happened> {
    let mut framer = Framer::default();
    let mut master = mux::Master::new(PID);
    let mut side = client.map(mux::Client::new);
    let mut greeted = false;
    let mut happened = Vec::new();
    for piece in pieces {
        framer.push(piece);
        loop {
            let body = match framer.next_message() {
                Ok(Some(body)) => body,
                Ok(None) => {
                    // Only part of one message, whose length was within the bound.
                    assert!(
                        framer.pending() < 4 + MAX_MESSAGE,
                        "the framer holds {} bytes",
                        framer.pending()
                    );
                    break;
                }
                Err(e) => {
                    happened.push(Happened::Failed(e));
                    return happened;
                }
            };
            assert!(body.len() <= MAX_MESSAGE);
            match &mut side {
                None => {
                    let mut out = Vec::new();
                    match master.handle(&body, &mut out) {
                        Ok(effect) => {
                            check_reply(&body, &out, effect, greeted);
                            greeted = true;
                            happened.push(Happened::Replied(out, effect));
                        }
                        Err(e) => {
                            assert!(out.is_empty(), "a reply beside an error");
                            happened.push(Happened::Failed(e));
                            return happened;
                        }
                    }
                }
                Some(c) => match c.handle(&body) {
                    Ok(None) => {}
                    Ok(Some(outcome)) => {
                        happened.push(Happened::Outcome(outcome));
                        return happened;
                    }
                    Err(e) => {
                        happened.push(Happened::Failed(e));
                        return happened;
                    }
                },
            }
        }
    }
    happened
}

/// The master's reply to `body` (the first accepted message is the hello, answered with
/// nothing).
fn check_reply(body: &[u8], out: &[u8], effect: Effect, greeted: bool) {
    let mut r = Reader::new(body);
    let t = r.u32().unwrap_or(0);
    if !greeted {
        assert_eq!(t, kind::HELLO, "a request accepted before the hello");
        assert!(out.is_empty() && effect == Effect::None);
        return;
    }
    let id = r.u32().unwrap_or_else(|_| panic!("a request without an id accepted"));
    let mut framer = Framer::default();
    framer.push(out);
    let reply = framer
        .next_message()
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no whole reply"));
    assert_eq!(framer.pending(), 0, "more than one reply");
    let mut r = Reader::new(&reply);
    let rt = r.u32().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.u32(), Ok(id), "the reply answers another id");
    match (t, rt, effect) {
        (kind::ALIVE_CHECK, kind::ALIVE, Effect::None) => assert_eq!(r.u32(), Ok(PID)),
        (kind::TERMINATE, kind::OK, Effect::Terminate)
        | (kind::STOP_LISTENING, kind::OK, Effect::StopListening) => {}
        (_, kind::FAILURE, Effect::None) => {
            assert!(r.utf8().is_ok_and(|s| !s.is_empty()), "a failure without a reason");
        }
        other => panic!("request 0x{t:08x} got {other:?}"),
    }
    assert!(r.is_empty(), "trailing bytes in the reply");
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let (Some(side), Some(control)) = (input.byte(), input.byte()) else {
        return;
    };
    let client = (side & 1 == 1).then(|| match (side >> 1) % 3 {
        0 => ControlCommand::Check,
        1 => ControlCommand::Exit,
        _ => ControlCommand::Stop,
    });
    let stream = input.rest();
    let pieces = chunks(stream, control);
    let got = drive(&pieces, client);
    if pieces.len() > 1 {
        assert_eq!(got, drive(&[stream], client), "pieces changed the outcome");
    }
}

/// Seeds: each side's normal conversation, refused requests, and broken ones.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let frame = |parts: &[u32], strings: &[&[u8]]| {
        let mut body = Vec::new();
        for p in parts {
            body.put_u32(*p);
        }
        for s in strings {
            body.put_string(s);
        }
        let mut out = Vec::new();
        out.put_string(&body);
        out
    };
    let hello = frame(&[kind::HELLO, mux::VERSION], &[]);
    let master = |name: &str, rest: Vec<u8>| (name.to_owned(), [&[0u8, 2][..], &hello, &rest].concat());
    let client = |name: &str, command: u8, rest: Vec<u8>| {
        (name.to_owned(), [&[1 | (command << 1), 1][..], &hello, &rest].concat())
    };
    vec![
        master("master-check-stop-exit", [
            frame(&[kind::ALIVE_CHECK, 1], &[]),
            frame(&[kind::STOP_LISTENING, 2], &[]),
            frame(&[kind::TERMINATE, 3], &[]),
        ]
        .concat()),
        master(
            "master-session-refused",
            frame(&[kind::NEW_SESSION, 4], &[b"", b"\x00\x00\x00\x00"]),
        ),
        master(
            "master-forward-refused",
            frame(&[kind::OPEN_FWD, 5, 1], &[b"127.0.0.1"]),
        ),
        master("master-hello-extension", frame(&[kind::HELLO, mux::VERSION], &[b"x", b"y"])),
        ("master-too-long".to_owned(), vec![0, 0, 0xff, 0xff, 0xff, 0xff]),
        client("client-check", 0, frame(&[kind::ALIVE, 1, 4242], &[])),
        client("client-exit", 1, frame(&[kind::OK, 1], &[])),
        client("client-stop-refused", 2, frame(&[kind::FAILURE, 1], &[b"no"])),
    ]
}
