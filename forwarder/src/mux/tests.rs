use super::*;

/// The bodies of every whole message in `bytes`.
fn bodies(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut framer = Framer::default();
    framer.push(bytes);
    let mut all = Vec::new();
    while let Some(body) = framer.next_message().unwrap_or_else(|e| panic!("{e}")) {
        all.push(body);
    }
    assert_eq!(framer.pending(), 0);
    all
}

fn body(parts: &[u32], strings: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    for p in parts {
        b.put_u32(*p);
    }
    for s in strings {
        b.put_string(s);
    }
    b
}

/// A master that has had the client's hello.
fn greeted() -> Master {
    let mut m = Master::new(4242);
    let mut out = Vec::new();
    assert_eq!(
        m.handle(&body(&[kind::HELLO, VERSION], &[]), &mut out),
        Ok(Effect::None)
    );
    assert!(
        out.is_empty(),
        "the master's hello goes first, not as a reply"
    );
    m
}

#[test]
fn the_master_answers_check_exit_and_stop_and_refuses_the_rest() {
    let mut m = greeted();
    let mut out = Vec::new();
    assert_eq!(
        m.handle(&body(&[kind::ALIVE_CHECK, 7], &[]), &mut out),
        Ok(Effect::None)
    );
    assert_eq!(bodies(&out), [body(&[kind::ALIVE, 7, 4242], &[])]);
    out.clear();
    assert_eq!(
        m.handle(&body(&[kind::STOP_LISTENING, 8], &[]), &mut out),
        Ok(Effect::StopListening)
    );
    assert_eq!(bodies(&out), [body(&[kind::OK, 8], &[])]);
    out.clear();
    assert_eq!(
        m.handle(&body(&[kind::TERMINATE, 9], &[]), &mut out),
        Ok(Effect::Terminate)
    );
    assert_eq!(bodies(&out), [body(&[kind::OK, 9], &[])]);
    // A session, proxy mode, something unknown: a failure with a reason, and the connection
    // goes on.
    for (t, needle) in [
        (kind::NEW_SESSION, "opens no sessions"),
        (kind::PROXY, "proxy"),
        (0x1000_0042, "unsupported request"),
    ] {
        out.clear();
        assert_eq!(
            m.handle(&body(&[t, 10], &[b"trailing fields"]), &mut out),
            Ok(Effect::None)
        );
        let reply = bodies(&out);
        let mut r = Reader::new(&reply[0]);
        assert_eq!(r.u32(), Ok(kind::FAILURE));
        assert_eq!(r.u32(), Ok(10));
        let reason = r.utf8().unwrap_or_else(|e| panic!("{e}"));
        assert!(reason.contains(needle), "0x{t:08x}: {reason}");
    }
}

#[test]
fn the_master_ends_a_connection_that_breaks_the_protocol() {
    let mut out = Vec::new();
    // A request before the hello.
    assert_eq!(
        Master::new(1).handle(&body(&[kind::TERMINATE, 1], &[]), &mut out),
        Err(MuxError::OutOfOrder(kind::TERMINATE))
    );
    // Another version.
    assert_eq!(
        Master::new(1).handle(&body(&[kind::HELLO, 3], &[]), &mut out),
        Err(MuxError::Version(3))
    );
    // A second hello.
    assert_eq!(
        greeted().handle(&body(&[kind::HELLO, VERSION], &[]), &mut out),
        Err(MuxError::OutOfOrder(kind::HELLO))
    );
    // Cut short: no type, no id, a half extension.
    assert!(matches!(
        Master::new(1).handle(&[0, 0], &mut out),
        Err(MuxError::Malformed(_))
    ));
    assert!(matches!(
        greeted().handle(&body(&[kind::ALIVE_CHECK], &[]), &mut out),
        Err(MuxError::Malformed(_))
    ));
    assert!(matches!(
        Master::new(1).handle(&body(&[kind::HELLO, VERSION], &[b"name"]), &mut out),
        Err(MuxError::Malformed(_))
    ));
    assert!(out.is_empty(), "nothing answered");
    // Whole extensions are skipped.
    assert_eq!(
        Master::new(1).handle(
            &body(&[kind::HELLO, VERSION], &[b"name", b"value", b"n2", b""]),
            &mut out
        ),
        Ok(Effect::None)
    );
}

#[test]
fn the_framer_joins_pieces_splits_messages_and_refuses_a_long_one_at_once() {
    let mut bytes = Vec::new();
    hello(&mut bytes);
    Client::new(ControlCommand::Check).start(&mut bytes);
    let mut framer = Framer::default();
    let mut got = Vec::new();
    for b in &bytes {
        framer.push(std::slice::from_ref(b));
        while let Some(body) = framer.next_message().unwrap_or_else(|e| panic!("{e}")) {
            got.push(body);
        }
    }
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got, bodies(&bytes));
    // A length over the bound is refused with its first four bytes, before any body.
    let mut framer = Framer::default();
    framer.push(
        &u32::try_from(MAX_MESSAGE + 1)
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    assert_eq!(
        framer.next_message(),
        Err(MuxError::TooLong(MAX_MESSAGE + 1))
    );
    let mut framer = Framer::default();
    framer.push(&u32::MAX.to_be_bytes());
    assert!(matches!(framer.next_message(), Err(MuxError::TooLong(_))));
    // The bound itself is fine.
    let mut framer = Framer::default();
    framer.push(&u32::try_from(MAX_MESSAGE).unwrap_or(0).to_be_bytes());
    assert_eq!(framer.next_message(), Ok(None));
}

/// The client's outcome of `command` against a master of pid 99.
fn round_trip(command: ControlCommand) -> (Result<String, String>, Effect) {
    let client_side = Client::new(command);
    let mut to_master = Vec::new();
    client_side.start(&mut to_master);
    let mut master = Master::new(99);
    let mut to_client = Vec::new();
    hello(&mut to_client);
    let mut effect = Effect::None;
    for b in bodies(&to_master) {
        effect = master
            .handle(&b, &mut to_client)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut client_side = client_side;
    let mut outcome = None;
    for b in bodies(&to_client) {
        if let Some(o) = client_side.handle(&b).unwrap_or_else(|e| panic!("{e}")) {
            outcome = Some(o);
        }
    }
    (outcome.unwrap_or_else(|| panic!("no outcome")), effect)
}

#[test]
fn a_client_and_a_master_agree_and_the_client_words_it_as_ssh() {
    assert_eq!(
        round_trip(ControlCommand::Check),
        (Ok("Master running (pid=99)".to_owned()), Effect::None)
    );
    assert_eq!(
        round_trip(ControlCommand::Exit),
        (Ok("Exit request sent.".to_owned()), Effect::Terminate)
    );
    assert_eq!(
        round_trip(ControlCommand::Stop),
        (
            Ok("Stop listening request sent.".to_owned()),
            Effect::StopListening
        )
    );
}

#[test]
fn a_client_reports_a_refusal_safely_and_ends_on_a_reply_it_did_not_ask_for() {
    let greeted_client = |command| {
        let mut c = Client::new(command);
        assert_eq!(c.handle(&body(&[kind::HELLO, VERSION], &[])), Ok(None));
        c
    };
    let mut c = greeted_client(ControlCommand::Exit);
    let refused = c.handle(&body(
        &[kind::PERMISSION_DENIED, REQUEST_ID],
        &[b"not you\x1b[2J"],
    ));
    let Ok(Some(Err(msg))) = refused else {
        panic!("{refused:?}")
    };
    assert!(
        msg.contains("-O exit") && msg.contains("was refused: not you\\x1b[2J"),
        "{msg}"
    );
    // An OK to a check, an answer to another id, a reply before the hello.
    assert_eq!(
        greeted_client(ControlCommand::Check).handle(&body(&[kind::OK, REQUEST_ID], &[])),
        Err(MuxError::Unexpected(kind::OK))
    );
    assert!(matches!(
        greeted_client(ControlCommand::Check).handle(&body(&[kind::ALIVE, 77, 1], &[])),
        Err(MuxError::Malformed(_))
    ));
    assert_eq!(
        Client::new(ControlCommand::Check).handle(&body(&[kind::ALIVE, REQUEST_ID, 1], &[])),
        Err(MuxError::OutOfOrder(kind::ALIVE))
    );
    assert_eq!(
        Client::new(ControlCommand::Check).handle(&body(&[kind::HELLO, 5], &[])),
        Err(MuxError::Version(5))
    );
}

#[test]
fn control_commands_parse_as_ssh_spells_them() {
    assert_eq!(ControlCommand::parse("check"), Ok(ControlCommand::Check));
    assert_eq!(ControlCommand::parse("exit"), Ok(ControlCommand::Exit));
    assert_eq!(ControlCommand::parse("stop"), Ok(ControlCommand::Stop));
    assert_eq!(
        ControlCommand::parse("forward"),
        Ok(ControlCommand::Forward)
    );
    assert_eq!(ControlCommand::parse("cancel"), Ok(ControlCommand::Cancel));
    assert!(ControlCommand::parse("proxy").is_err_and(|e| e.contains("no proxy mode")));
    assert_eq!(
        ControlCommand::parse("Exit"),
        Err("check, exit, stop, forward or cancel")
    );
}

#[test]
fn a_master_that_closes_after_an_exit_request_has_done_it() {
    let mut exit = Client::new(ControlCommand::Exit);
    assert_eq!(
        exit.outcome_at_close(),
        None,
        "not before the master's hello"
    );
    assert_eq!(exit.handle(&body(&[kind::HELLO, VERSION], &[])), Ok(None));
    assert!(exit.greeted());
    assert_eq!(
        exit.outcome_at_close().as_deref(),
        Some("Exit request sent.")
    );
    let mut check = Client::new(ControlCommand::Check);
    assert_eq!(check.handle(&body(&[kind::HELLO, VERSION], &[])), Ok(None));
    assert_eq!(check.outcome_at_close(), None);
}

/// The forwards of a command line, as `-O forward` sends them.
fn requests(args: &[&str]) -> Vec<ForwardRequest> {
    let env = crate::cli::Environment {
        home: Some("/home/tester".into()),
        user: Some("tester".into()),
        cache_home: None,
    };
    let mut all: Vec<&str> = args.to_vec();
    all.push("h");
    let Ok(crate::cli::Command::Run(o)) = crate::cli::parse_args_with_env(all, &env) else {
        panic!("{args:?}");
    };
    let local = o.local_forwards.into_iter().map(|spec| ForwardRequest {
        way: ForwardWay::Local,
        spec,
    });
    let remote = o.remote_forwards.into_iter().map(|spec| ForwardRequest {
        way: ForwardWay::Remote,
        spec,
    });
    local.chain(remote).collect()
}

/// A forward request's body, as ssh's `mux_client_forward` writes it.
fn forward_body(
    t: u32,
    id: u32,
    ftype: u32,
    listen: &str,
    lport: u32,
    to: &str,
    cport: u32,
) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_u32(t);
    b.put_u32(id);
    b.put_u32(ftype);
    b.put_str(listen);
    b.put_u32(lport);
    b.put_str(to);
    b.put_u32(cport);
    b
}

// Every form of -L, -D and -R the command line takes reaches the master as the same forward,
// and goes on the wire as ssh writes it (checked against ssh's own encoding for a few).
#[test]
fn forwards_cross_the_control_socket_unchanged_and_as_ssh_writes_them() {
    let forms: &[&[&str]] = &[
        &["-L", "5433:db:5432"],
        &["-L", "127.0.0.1:5433:db:5432"],
        &["-L", ":5433:db:5432"],
        &["-L", "*:5433:[2001:db8::1]:5432"],
        &["-L", "/tmp/pg.sock:db:5432"],
        &["-L", "5433:/run/postgresql/.s.PGSQL.5432"],
        &["-L", "/tmp/a.sock:/run/b.sock"],
        &["-D", "1080"],
        &["-D", "[::1]:1080"],
        &["-R", "8022:127.0.0.1:22"],
        &["-R", "0:localhost:80"],
        &["-R", "/run/app.sock:127.0.0.1:8080"],
    ];
    for form in forms {
        let sent = requests(form);
        assert_eq!(sent.len(), 1, "{form:?}");
        let mut client = ForwardClient::new(true, sent.clone());
        let mut wire = Vec::new();
        client.start(&mut wire);
        let msgs = bodies(&wire);
        assert_eq!(msgs.len(), 2, "the hello and one request: {form:?}");
        let mut m = greeted();
        let mut out = Vec::new();
        assert_eq!(
            m.handle(&msgs[1], &mut out),
            Ok(Effect::Forward {
                id: 1,
                open: true,
                request: sent[0].clone()
            }),
            "{form:?}"
        );
        assert!(out.is_empty(), "answered only once done: {form:?}");
        // The master's OK ends the client.
        forward_reply(1, Ok(None), &mut out);
        let mut next = Vec::new();
        let reply = bodies(&out);
        assert_eq!(
            client.handle(&body(&[kind::HELLO, VERSION], &[]), &mut next),
            Ok(None)
        );
        assert_eq!(
            client.handle(&reply[0], &mut next),
            Ok(Some(ForwardOutcome::default()))
        );
        assert!(next.is_empty());
    }
    // As ssh writes them: no bind address is empty, an empty one is "*", a path has port -2,
    // a -D goes nowhere.
    let wire = |args: &[&str]| {
        let mut w = Vec::new();
        ForwardClient::new(true, requests(args)).start(&mut w);
        bodies(&w).remove(1)
    };
    assert_eq!(
        wire(&["-L", "5433:db:5432"]),
        forward_body(kind::OPEN_FWD, 1, forward_type::LOCAL, "", 5433, "db", 5432)
    );
    assert_eq!(
        wire(&["-L", ":5433:/run/pg.sock"]),
        forward_body(
            kind::OPEN_FWD,
            1,
            forward_type::LOCAL,
            "*",
            5433,
            "/run/pg.sock",
            PORT_STREAMLOCAL
        )
    );
    assert_eq!(
        wire(&["-D", "localhost:1080"]),
        forward_body(
            kind::OPEN_FWD,
            1,
            forward_type::DYNAMIC,
            "localhost",
            1080,
            "",
            0
        )
    );
    assert_eq!(
        wire(&["-R", "/run/x.sock:127.0.0.1:80"]),
        forward_body(
            kind::OPEN_FWD,
            1,
            forward_type::REMOTE,
            "/run/x.sock",
            PORT_STREAMLOCAL,
            "127.0.0.1",
            80
        )
    );
}

#[test]
fn a_master_refuses_a_forward_that_cannot_be_one_and_ends_on_a_malformed_one() {
    let invalid = [
        // An unknown type.
        forward_body(kind::OPEN_FWD, 3, 9, "", 5433, "db", 5432),
        // A local forward to port 0, or to nowhere.
        forward_body(kind::OPEN_FWD, 3, forward_type::LOCAL, "", 5433, "db", 0),
        forward_body(kind::OPEN_FWD, 3, forward_type::LOCAL, "", 5433, "", 5432),
        // A remote forward to nowhere (ssh 9.2's master refuses it too).
        forward_body(kind::CLOSE_FWD, 3, forward_type::REMOTE, "", 8022, "", 0),
        // A socket path that is empty, or not text.
        forward_body(
            kind::OPEN_FWD,
            3,
            forward_type::LOCAL,
            "",
            PORT_STREAMLOCAL,
            "db",
            5432,
        ),
        forward_body(
            kind::OPEN_FWD,
            3,
            forward_type::LOCAL,
            "a\0b",
            PORT_STREAMLOCAL,
            "db",
            1,
        ),
    ];
    for b in invalid {
        let mut out = Vec::new();
        assert_eq!(greeted().handle(&b, &mut out), Ok(Effect::None));
        assert_eq!(
            bodies(&out),
            [body(&[kind::FAILURE, 3], &[b"Invalid forwarding request"])]
        );
    }
    // A port out of range, or a request cut short: the connection ends, as ssh ends it.
    let mut out = Vec::new();
    for b in [
        forward_body(
            kind::OPEN_FWD,
            3,
            forward_type::LOCAL,
            "",
            70000,
            "db",
            5432,
        ),
        forward_body(
            kind::OPEN_FWD,
            3,
            forward_type::LOCAL,
            "",
            5433,
            "db",
            65536,
        ),
        body(&[kind::OPEN_FWD, 3, forward_type::LOCAL], &[b""]),
    ] {
        assert!(matches!(
            greeted().handle(&b, &mut out),
            Err(MuxError::Malformed(_))
        ));
    }
    assert!(out.is_empty());
    // A cancel is read as a forward is.
    assert_eq!(
        greeted().handle(
            &forward_body(
                kind::CLOSE_FWD,
                4,
                forward_type::DYNAMIC,
                "",
                1080,
                "ignored",
                7
            ),
            &mut out
        ),
        Ok(Effect::Forward {
            id: 4,
            open: false,
            request: requests(&["-D", "1080"]).remove(0)
        })
    );
}

// The client sends each forward once the one before is answered, collects the ports the
// server picked and the refusals, and ends on a reply it did not ask for.
#[test]
fn a_forward_client_asks_one_at_a_time_and_reports_ports_and_refusals() {
    let sent = requests(&["-L", "5433:db:5432", "-D", "1080", "-R", "0:localhost:80"]);
    assert_eq!(sent.len(), 3);
    let mut c = ForwardClient::new(true, sent.clone());
    let mut out = Vec::new();
    c.start(&mut out);
    assert_eq!(
        bodies(&out).len(),
        2,
        "the hello and the first request only"
    );
    out.clear();
    assert_eq!(
        c.handle(&body(&[kind::HELLO, VERSION], &[]), &mut out),
        Ok(None)
    );
    assert!(out.is_empty());
    assert_eq!(c.handle(&body(&[kind::OK, 1], &[]), &mut out), Ok(None));
    let second = bodies(&out);
    assert_eq!(second.len(), 1);
    assert_eq!(
        greeted().handle(&second[0], &mut Vec::new()),
        Ok(Effect::Forward {
            id: 2,
            open: true,
            request: sent[1].clone()
        })
    );
    out.clear();
    assert_eq!(
        c.handle(
            &body(&[kind::FAILURE, 2], &[b"cannot listen\x1b[2J"]),
            &mut out
        ),
        Ok(None)
    );
    out.clear();
    let done = c.handle(&body(&[kind::REMOTE_PORT, 3, 40123], &[]), &mut out);
    let Ok(Some(outcome)) = done else {
        panic!("{done:?}")
    };
    assert!(out.is_empty());
    assert_eq!(outcome.ports, [40123]);
    assert_eq!(outcome.refused.len(), 1);
    assert!(
        outcome.refused[0]
            .contains("-O forward -D 1080: the request failed: cannot listen\\x1b[2J"),
        "{:?}",
        outcome.refused
    );
    // A picked port for a local forward, a reply to another id, one more reply than asked.
    let greeted_client = |open, args: &[&str]| {
        let mut c = ForwardClient::new(open, requests(args));
        assert_eq!(
            c.handle(&body(&[kind::HELLO, VERSION], &[]), &mut Vec::new()),
            Ok(None)
        );
        c
    };
    assert_eq!(
        greeted_client(true, &["-L", "1:db:1"])
            .handle(&body(&[kind::REMOTE_PORT, 1, 5], &[]), &mut out),
        Err(MuxError::Unexpected(kind::REMOTE_PORT))
    );
    assert_eq!(
        greeted_client(false, &["-R", "0:db:1"])
            .handle(&body(&[kind::REMOTE_PORT, 1, 5], &[]), &mut out),
        Err(MuxError::Unexpected(kind::REMOTE_PORT)),
        "no port for a cancel"
    );
    assert!(matches!(
        greeted_client(true, &["-L", "1:db:1"]).handle(&body(&[kind::OK, 2], &[]), &mut out),
        Err(MuxError::Malformed(_))
    ));
    let mut c = greeted_client(true, &["-L", "1:db:1"]);
    assert!(matches!(
        c.handle(&body(&[kind::OK, 1], &[]), &mut out),
        Ok(Some(_))
    ));
    assert_eq!(
        c.handle(&body(&[kind::OK, 2], &[]), &mut out),
        Err(MuxError::Unexpected(kind::OK))
    );
    // Nothing to ask: done once greeted.
    let mut none = ForwardClient::new(false, Vec::new());
    assert!(none.done());
    assert_eq!(
        none.handle(&body(&[kind::HELLO, VERSION], &[]), &mut out),
        Ok(Some(ForwardOutcome::default()))
    );
}

#[test]
fn a_master_answers_a_forward_once_done() {
    let mut out = Vec::new();
    forward_reply(5, Ok(None), &mut out);
    forward_reply(6, Ok(Some(40000)), &mut out);
    forward_reply(7, Err("port not forwarded"), &mut out);
    assert_eq!(
        bodies(&out),
        [
            body(&[kind::OK, 5], &[]),
            body(&[kind::REMOTE_PORT, 6, 40000], &[]),
            body(&[kind::FAILURE, 7], &[b"port not forwarded"]),
        ]
    );
}

/// A `NEW_STDIO_FWD` body as ssh's `mux_client_request_stdio_fwd` writes it.
fn stdio_request(id: u32, host: &[u8], port: u32) -> Vec<u8> {
    let mut b = body(&[kind::NEW_STDIO_FWD, id], &[b"", host]);
    b.put_u32(port);
    b
}

#[test]
fn a_stdio_forward_is_read_as_ssh_writes_it_and_answered_once_open() {
    let mut m = greeted();
    let mut out = Vec::new();
    let tcp = Destination::Tcp(Target {
        host: "db.internal".into(),
        port: 5432,
    });
    assert_eq!(
        m.handle(&stdio_request(3, b"db.internal", 5432), &mut out),
        Ok(Effect::StdioForward {
            id: 3,
            target: Ok(tcp.clone())
        })
    );
    assert!(out.is_empty(), "answered only once the channel is open");
    // A socket's path: port -2.
    assert_eq!(
        m.handle(
            &stdio_request(4, b"/run/postgresql/.s.PGSQL.5432", PORT_STREAMLOCAL),
            &mut out
        ),
        Ok(Effect::StdioForward {
            id: 4,
            target: Ok(Destination::Unix("/run/postgresql/.s.PGSQL.5432".into()))
        })
    );
    // No host, port 0 or out of range, a NUL, not UTF-8: refused with a reason (the client
    // still sends its descriptors, so the effect says to take them).
    for (host, port) in [
        (&b""[..], 22),
        (b"db", 0),
        (b"db", 65536),
        (b"d\0b", 22),
        (b"\xff", 22),
    ] {
        assert_eq!(
            m.handle(&stdio_request(5, host, port), &mut out),
            Ok(Effect::StdioForward {
                id: 5,
                target: Err("Invalid stdio forwarding request")
            }),
            "{host:?} {port}"
        );
    }
    // Cut short: the connection ends.
    let mut short = body(&[kind::NEW_STDIO_FWD, 6], &[b"", b"db"]);
    short.truncate(short.len() - 1);
    assert!(matches!(
        m.handle(&short, &mut out),
        Err(MuxError::Malformed(_))
    ));
    assert!(out.is_empty());

    // The answers, as ssh's client reads them.
    stdio_reply(3, Ok(17), &mut out);
    stdio_reply(4, Err("Session open refused by peer"), &mut out);
    assert_eq!(
        bodies(&out),
        [
            body(&[kind::SESSION_OPENED, 3, 17], &[]),
            body(&[kind::FAILURE, 4], &[b"Session open refused by peer"]),
        ]
    );
}

#[test]
fn the_stdio_client_sends_what_the_master_reads_and_takes_its_answer() {
    let mut framer = Framer::default();
    for (target, id) in [
        (
            Destination::Tcp(Target {
                host: "10.0.0.5".into(),
                port: 3306,
            }),
            1,
        ),
        (Destination::Unix("/tmp/db.sock".into()), 1),
    ] {
        let client = StdioClient::new(target.clone());
        let mut out = Vec::new();
        client.request(&mut out);
        // ssh's encoding, byte for byte.
        let expected = match &target {
            Destination::Tcp(t) => stdio_request(id, t.host.as_bytes(), u32::from(t.port)),
            Destination::Unix(p) => stdio_request(id, p.as_bytes(), PORT_STREAMLOCAL),
            Destination::Socks => unreachable!(),
        };
        assert_eq!(bodies(&out), [expected]);
        framer.push(&out);
        let body = framer.next_message().unwrap().unwrap();
        assert_eq!(
            greeted().handle(&body, &mut Vec::new()),
            Ok(Effect::StdioForward {
                id,
                target: Ok(target)
            })
        );
    }

    let mut master_hello = Vec::new();
    hello(&mut master_hello);
    let hello_body = &bodies(&master_hello)[0];
    let answer = |reply: Vec<u8>| {
        let mut c = StdioClient::new(Destination::Unix("/s".into()));
        assert!(!c.greeted());
        assert_eq!(c.handle(hello_body), Ok(None));
        assert!(c.greeted());
        c.handle(&reply)
    };
    assert_eq!(
        answer(body(&[kind::SESSION_OPENED, 1, 9], &[])),
        Ok(Some(StdioOutcome::Opened))
    );
    assert_eq!(
        answer(body(&[kind::FAILURE, 1], &[b"no\x1b[2J way"])),
        Ok(Some(StdioOutcome::Refused(
            "Stdio forwarding request failed: no\\x1b[2J way".into()
        )))
    );
    assert_eq!(
        answer(body(&[kind::PERMISSION_DENIED, 1], &[b"Permission denied"])),
        Ok(Some(StdioOutcome::Refused(
            "Master refused stdio forwarding request: Permission denied".into()
        )))
    );
    // Another id, another kind of reply, a reply cut short, a reply before the hello.
    assert!(answer(body(&[kind::SESSION_OPENED, 2, 9], &[])).is_err());
    assert_eq!(
        answer(body(&[kind::OK, 1], &[])),
        Err(MuxError::Unexpected(kind::OK))
    );
    assert!(answer(body(&[kind::SESSION_OPENED, 1], &[])).is_err());
    let mut c = StdioClient::new(Destination::Unix("/s".into()));
    assert_eq!(
        c.handle(&body(&[kind::SESSION_OPENED, 1, 9], &[])),
        Err(MuxError::OutOfOrder(kind::SESSION_OPENED))
    );
}

#[test]
fn the_framer_hands_over_the_bytes_that_carry_descriptors() {
    let mut framer = Framer::default();
    let mut bytes = Vec::new();
    frame(&mut bytes, &stdio_request(1, b"db", 5432));
    bytes.push(0);
    framer.push(&bytes);
    assert!(framer.next_message().unwrap().is_some());
    assert!(!framer.skip(STDIO_FDS), "one of the two bytes so far");
    assert_eq!(framer.pending(), 1);
    framer.push(&[0]);
    assert!(framer.skip(STDIO_FDS));
    assert_eq!(framer.pending(), 0);
}
