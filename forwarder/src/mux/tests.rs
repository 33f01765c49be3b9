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
    // A session, -W, a forward, proxy mode, something unknown: a failure with a reason, and
    // the connection goes on.
    for (t, needle) in [
        (kind::NEW_SESSION, "opens no sessions"),
        (kind::NEW_STDIO_FWD, "-W"),
        (kind::OPEN_FWD, "add or cancel forwards"),
        (kind::CLOSE_FWD, "add or cancel forwards"),
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
    for other in ["forward", "cancel", "proxy"] {
        assert!(ControlCommand::parse(other).is_err_and(|e| e.contains("check, exit and stop")));
    }
    assert_eq!(ControlCommand::parse("Exit"), Err("check, exit or stop"));
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
