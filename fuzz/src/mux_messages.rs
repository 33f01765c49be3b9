//! The control socket's protocol (`forwarder::mux`): a master reading what a control client
//! sends (`-M`), or a client (`-O`) reading what a master sends, on bytes that arrive in
//! pieces.
//!
//! Input: one byte that chooses the side (even: the master; odd: a client, whose command is
//! the byte's next bits: check, exit, stop, `-O forward` / `-O cancel` of three forwards, or
//! `-W` through the master),
//! one control byte that chooses the piece sizes ([`chunks`]), then the peer's bytes.
//!
//! Beside no panic: the framer never holds a whole message it has not returned, nor a length
//! over `MAX_MESSAGE` it has not refused; every reply the master writes is one whole frame
//! that answers the request's id with OK, ALIVE (with this pid) or FAILURE (with a reason),
//! and the effects follow from the request's type (TERMINATE and STOP_LISTENING only); a
//! forward request is not answered until done, and the forward it names crosses the wire
//! again unchanged; a `-W` request is not answered until open, the destination it names
//! crosses the wire again unchanged, and the two bytes carrying descriptors after it are
//! taken (the connection then carries nothing else); nothing is answered before the hello; errors are final; a client gives
//! at most one outcome, a forward client no more ports and refusals than it asked, and
//! sends one request per answer; and what happens is the same as when the whole input
//! arrives at once.

use forwarder::cli::{ForwardSpec, Listen};
use forwarder::mux::{
    self, ControlCommand, Effect, ForwardClient, ForwardOutcome, ForwardRequest, ForwardWay,
    Framer, MAX_MESSAGE, StdioClient, StdioOutcome, kind,
};
use forwarder::tunnel::{Destination, Target};
use ssh_transport::wire::{Reader, Writer as _};

use crate::input::{Input, chunks};

const PID: u32 = 31337;

/// What a side did with the bytes, in order.
#[derive(Debug, PartialEq, Eq)]
enum Happened {
    Replied(Vec<u8>, Effect),
    Outcome(Result<String, String>),
    Forwarded(ForwardOutcome),
    Stdio(StdioOutcome),
    /// The bytes that carry a `-W` client's descriptors were taken.
    DescriptorsTaken,
    Failed(mux::MuxError),
}

/// What a client asks: an `-O` command, or `-W`.
#[derive(Clone, Copy, Debug)]
enum Asks {
    Command(ControlCommand),
    Stdio,
}

/// The forwards a forward client asks for: one of each way.
fn forwards() -> Vec<ForwardRequest> {
    let tcp = |host: &str, port| Destination::Tcp(Target {
        host: host.to_owned(),
        port,
    });
    vec![
        ForwardRequest {
            way: ForwardWay::Local,
            spec: ForwardSpec {
                listen: Listen::Port {
                    bind_address: None,
                    port: 5433,
                },
                to: tcp("db", 5432),
            },
        },
        ForwardRequest {
            way: ForwardWay::Local,
            spec: ForwardSpec {
                listen: Listen::Path("/tmp/s.sock".into()),
                to: Destination::Socks,
            },
        },
        ForwardRequest {
            way: ForwardWay::Remote,
            spec: ForwardSpec {
                listen: Listen::Port {
                    bind_address: Some("*".into()),
                    port: 0,
                },
                to: Destination::Unix("/run/app.sock".into()),
            },
        },
    ]
}

/// The other side of a client.
enum Side {
    Master,
    Client(mux::Client),
    Forward(ForwardClient, usize),
    Stdio(StdioClient),
}

fn stdio_target() -> Destination {
    Destination::Tcp(Target {
        host: "db".to_owned(),
        port: 5432,
    })
}

fn drive(pieces: &[&[u8]], client: Option<Asks>) -> Vec<Happened> {
    let mut framer = Framer::default();
    let mut master = mux::Master::new(PID);
    let mut side = match client {
        None => Side::Master,
        Some(Asks::Command(c @ (ControlCommand::Forward | ControlCommand::Cancel))) => {
            let f = ForwardClient::new(c == ControlCommand::Forward, forwards());
            let mut out = Vec::new();
            f.start(&mut out);
            Side::Forward(f, count(&out))
        }
        Some(Asks::Command(c)) => Side::Client(mux::Client::new(c)),
        Some(Asks::Stdio) => Side::Stdio(StdioClient::new(stdio_target())),
    };
    let mut greeted = false;
    let mut taking_descriptors = false;
    let mut happened = Vec::new();
    for piece in pieces {
        framer.push(piece);
        loop {
            if taking_descriptors {
                if framer.skip(mux::STDIO_FDS) {
                    happened.push(Happened::DescriptorsTaken);
                    return happened;
                }
                break;
            }
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
                Side::Master => {
                    let mut out = Vec::new();
                    match master.handle(&body, &mut out) {
                        Ok(effect) => {
                            check_reply(&body, &out, &effect, greeted);
                            greeted = true;
                            taking_descriptors = matches!(effect, Effect::StdioForward { .. });
                            happened.push(Happened::Replied(out, effect));
                        }
                        Err(e) => {
                            assert!(out.is_empty(), "a reply beside an error");
                            happened.push(Happened::Failed(e));
                            return happened;
                        }
                    }
                }
                Side::Client(c) => match c.handle(&body) {
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
                Side::Stdio(c) => match c.handle(&body) {
                    Ok(None) => assert!(c.greeted(), "past the hello without it"),
                    Ok(Some(outcome)) => {
                        if let StdioOutcome::Refused(why) = &outcome {
                            assert!(
                                why.starts_with("Stdio forwarding request failed: ")
                                    || why.starts_with("Master refused stdio forwarding request: "),
                                "{why}"
                            );
                        }
                        happened.push(Happened::Stdio(outcome));
                        return happened;
                    }
                    Err(e) => {
                        happened.push(Happened::Failed(e));
                        return happened;
                    }
                },
                Side::Forward(c, sent) => {
                    let mut out = Vec::new();
                    let got = c.handle(&body, &mut out);
                    *sent += count(&out);
                    // The hello and one request at first, then one more per answer.
                    assert!(*sent <= 1 + forwards().len(), "more requests than forwards");
                    match got {
                        Ok(None) => assert!(!c.done(), "done without an outcome"),
                        Ok(Some(outcome)) => {
                            assert!(out.is_empty(), "a request after the last answer");
                            assert_eq!(*sent, 1 + forwards().len(), "a forward never asked");
                            assert!(
                                outcome.ports.len() + outcome.refused.len() <= forwards().len()
                                    && outcome.ports.len() <= 1
                                    && outcome.ports.iter().all(|p| *p != 0),
                                "{outcome:?}"
                            );
                            happened.push(Happened::Forwarded(outcome));
                            return happened;
                        }
                        Err(e) => {
                            assert!(out.is_empty(), "a request beside an error");
                            happened.push(Happened::Failed(e));
                            return happened;
                        }
                    }
                }
            }
        }
    }
    happened
}

/// How many whole frames `out` holds (all of it).
fn count(out: &[u8]) -> usize {
    let mut framer = Framer::default();
    framer.push(out);
    let mut n = 0;
    while let Ok(Some(_)) = framer.next_message() {
        n += 1;
    }
    assert_eq!(framer.pending(), 0, "half a frame written");
    n
}

/// The master's reply to `body` (the first accepted message is the hello, answered with
/// nothing).
fn check_reply(body: &[u8], out: &[u8], effect: &Effect, greeted: bool) {
    let mut r = Reader::new(body);
    let t = r.u32().unwrap_or(0);
    if !greeted {
        assert_eq!(t, kind::HELLO, "a request accepted before the hello");
        assert!(out.is_empty() && *effect == Effect::None);
        return;
    }
    let id = r.u32().unwrap_or_else(|_| panic!("a request without an id accepted"));
    if let Effect::Forward { id: fid, open, request } = effect {
        assert!(out.is_empty(), "a forward answered before it was done");
        assert_eq!(*fid, id, "the forward of another request");
        assert_eq!(*open, t == kind::OPEN_FWD, "0x{t:08x} read as a forward");
        assert!(t == kind::OPEN_FWD || t == kind::CLOSE_FWD);
        // Sent again, the same forward arrives.
        let mut again = Vec::new();
        ForwardClient::new(*open, vec![request.clone()]).start(&mut again);
        let mut framer = Framer::default();
        framer.push(&again);
        let mut m = mux::Master::new(PID);
        let mut sink = Vec::new();
        while let Ok(Some(b)) = framer.next_message() {
            let e = m.handle(&b, &mut sink).unwrap_or_else(|e| panic!("{e}"));
            if e != Effect::None {
                assert_eq!(
                    e,
                    Effect::Forward {
                        id: 1,
                        open: *open,
                        request: request.clone()
                    },
                    "the forward changed on the wire"
                );
            }
        }
        assert!(sink.is_empty());
        return;
    }
    if let Effect::StdioForward { id: sid, target } = effect {
        assert!(out.is_empty(), "-W answered before the channel was open");
        assert_eq!(*sid, id, "the -W of another request");
        assert_eq!(t, kind::NEW_STDIO_FWD, "0x{t:08x} read as -W");
        if let Ok(target) = target {
            // Sent again, the same destination arrives.
            let mut again = Vec::new();
            StdioClient::new(target.clone()).request(&mut again);
            let mut framer = Framer::default();
            framer.push(&again);
            let b = framer.next_message().unwrap_or_else(|e| panic!("{e}"));
            let b = b.unwrap_or_else(|| panic!("no whole request"));
            let mut m = mux::Master::new(PID);
            let mut sink = Vec::new();
            let mut h = Vec::new();
            mux::hello(&mut h);
            let mut hf = Framer::default();
            hf.push(&h);
            let hb = hf.next_message().ok().flatten().unwrap_or_default();
            assert_eq!(m.handle(&hb, &mut sink), Ok(Effect::None));
            assert_eq!(
                m.handle(&b, &mut sink),
                Ok(Effect::StdioForward {
                    id: 1,
                    target: Ok(target.clone())
                }),
                "the destination changed on the wire"
            );
            assert!(sink.is_empty());
        }
        return;
    }
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
    match (t, rt, effect.clone()) {
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
    let client = (side & 1 == 1).then(|| match (side >> 1) % 6 {
        0 => Asks::Command(ControlCommand::Check),
        1 => Asks::Command(ControlCommand::Exit),
        2 => Asks::Command(ControlCommand::Stop),
        3 => Asks::Command(ControlCommand::Forward),
        4 => Asks::Command(ControlCommand::Cancel),
        _ => Asks::Stdio,
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
            "master-forward-cut-short",
            frame(&[kind::OPEN_FWD, 5, 1], &[b"127.0.0.1"]),
        ),
        master("master-forwards", {
            let mut all = Vec::new();
            for (t, id, ftype, listen, lport, to, cport) in [
                (kind::OPEN_FWD, 6, 1, &b""[..], 5433, &b"db"[..], 5432),
                (kind::OPEN_FWD, 7, 3, b"127.0.0.1", 1080, b"", 0),
                (kind::OPEN_FWD, 8, 2, b"/run/x.sock", mux::PORT_STREAMLOCAL, b"127.0.0.1", 80),
                (kind::CLOSE_FWD, 9, 1, b"*", 5433, b"/run/pg.sock", mux::PORT_STREAMLOCAL),
                (kind::OPEN_FWD, 10, 1, b"", 5433, b"db", 0),
            ] {
                let mut body = Vec::new();
                body.put_u32(t);
                body.put_u32(id);
                body.put_u32(ftype);
                body.put_string(listen);
                body.put_u32(lport);
                body.put_string(to);
                body.put_u32(cport);
                all.put_string(&body);
            }
            all
        }),
        master("master-hello-extension", frame(&[kind::HELLO, mux::VERSION], &[b"x", b"y"])),
        ("master-too-long".to_owned(), vec![0, 0, 0xff, 0xff, 0xff, 0xff]),
        master("master-stdio", {
            let mut body = Vec::new();
            body.put_u32(kind::NEW_STDIO_FWD);
            body.put_u32(11);
            body.put_string(b"");
            body.put_string(b"db.internal");
            body.put_u32(5432);
            let mut all = Vec::new();
            all.put_string(&body);
            all.extend_from_slice(&[0, 0]);
            all
        }),
        master("master-stdio-socket", {
            let mut body = Vec::new();
            body.put_u32(kind::NEW_STDIO_FWD);
            body.put_u32(12);
            body.put_string(b"");
            body.put_string(b"/run/postgresql/.s.PGSQL.5432");
            body.put_u32(mux::PORT_STREAMLOCAL);
            let mut all = Vec::new();
            all.put_string(&body);
            all.push(0);
            all
        }),
        client("client-stdio-opened", 5, frame(&[kind::SESSION_OPENED, 1, 3], &[])),
        client(
            "client-stdio-refused",
            5,
            frame(&[kind::FAILURE, 1], &[b"Session open refused by peer"]),
        ),
        client("client-check", 0, frame(&[kind::ALIVE, 1, 4242], &[])),
        client("client-exit", 1, frame(&[kind::OK, 1], &[])),
        client("client-stop-refused", 2, frame(&[kind::FAILURE, 1], &[b"no"])),
        client(
            "client-forward",
            3,
            [
                frame(&[kind::OK, 1], &[]),
                frame(&[kind::FAILURE, 2], &[b"cannot listen"]),
                frame(&[kind::REMOTE_PORT, 3, 40000], &[]),
            ]
            .concat(),
        ),
        client(
            "client-cancel",
            4,
            [
                frame(&[kind::OK, 1], &[]),
                frame(&[kind::OK, 2], &[]),
                frame(&[kind::FAILURE, 3], &[b"port not forwarded"]),
            ]
            .concat(),
        ),
    ]
}
