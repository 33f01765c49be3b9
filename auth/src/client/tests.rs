use ssh_transport::hostkey::SignatureAlgorithm::{Ed25519, RsaSha256, RsaSha512};
use ssh_transport::wire::NameList;

use super::*;
use crate::msg::{ServiceAccept, UserauthBanner, UserauthFailure, UserauthPkOk, UserauthSuccess};

const SESSION_ID: &[u8] = b"\x01\x02session-id-from-the-first-kex\xff";
const USER: &str = "deploy";

fn rsa_key() -> PrivateKey {
    PrivateKey::from_file_contents(include_bytes!("../../testdata/rsa2048")).unwrap()
}

fn ed_key() -> PrivateKey {
    PrivateKey::from_file_contents(include_bytes!("../../testdata/ed25519")).unwrap()
}

/// Key 0 is RSA, key 1 is Ed25519; `which` picks and orders them.
fn identities(which: &[usize]) -> Vec<Identity> {
    which
        .iter()
        .map(|&i| match i {
            0 => Identity {
                key: rsa_key(),
                source: "/home/u/.ssh/id_rsa".into(),
            },
            _ => Identity {
                key: ed_key(),
                source: "/home/u/.ssh/id_ed25519".into(),
            },
        })
        .collect()
}

fn encode(m: ServerMessage<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut v);
    v
}

fn service_accept(name: &str) -> Vec<u8> {
    encode(ServerMessage::ServiceAccept(ServiceAccept {
        service: name,
    }))
}

fn failure(methods: &str, partial_success: bool) -> Vec<u8> {
    encode(ServerMessage::Failure(UserauthFailure {
        methods: NameList::parse(methods.as_bytes()).unwrap(),
        partial_success,
    }))
}

fn success() -> Vec<u8> {
    encode(ServerMessage::Success(UserauthSuccess))
}

fn banner(text: &[u8]) -> Vec<u8> {
    encode(ServerMessage::Banner(UserauthBanner {
        message: text,
        language: b"",
    }))
}

/// What a request sent by the client must be.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A signed publickey request with key `usize` (index into [`identities`]'s table).
    Key(usize, SignatureAlgorithm),
    /// A `none` request.
    Probe,
}

/// Decodes a sent request and checks it against `expect`, verifying the signature over the
/// RFC 4252 section 7 data with the transport's verifier.
fn check_request(sent: &[u8], expect: Expect) {
    let req = UserauthRequest::decode(sent).unwrap();
    assert_eq!(req.user, USER);
    assert_eq!(req.service, "ssh-connection");
    match (expect, req.method) {
        (Expect::Probe, AuthMethod::None) => {}
        (
            Expect::Key(which, alg),
            AuthMethod::PublicKey {
                algorithm,
                key_blob,
                signature: Some(sig),
            },
        ) => {
            let key = if which == 0 { rsa_key() } else { ed_key() };
            assert_eq!(algorithm, alg.name());
            assert_eq!(key_blob, key.public_key().blob());
            let data =
                publickey_signed_data(SESSION_ID, USER, "ssh-connection", algorithm, key_blob);
            assert_eq!(key.public_key().verify(alg, &data, sig), Ok(()));
            // The signature is bound to the session: another session id does not verify.
            let other =
                publickey_signed_data(b"other", USER, "ssh-connection", algorithm, key_blob);
            assert!(key.public_key().verify(alg, &other, sig).is_err());
        }
        (expect, method) => panic!("expected {expect:?}, sent {method:?}"),
    }
}

enum Outcome {
    Authenticated,
    /// An error whose text contains all of these.
    Error(Vec<&'static str>),
}

struct Case {
    name: &'static str,
    keys: &'static [usize],
    sig_algs: Option<&'static [&'static str]>,
    /// The server's answer to each request, in order.
    replies: Vec<Vec<u8>>,
    requests: &'static [Expect],
    outcome: Outcome,
}

fn run(case: Case) {
    let name = case.name;
    let algs: Option<Vec<String>> = case
        .sig_algs
        .map(|l| l.iter().map(|s| s.to_string()).collect());
    let ctx = AuthContext {
        session_id: SESSION_ID,
        server_sig_algs: algs.as_deref(),
    };
    let mut auth = ClientAuth::new(USER.into(), identities(case.keys));
    let mut sink: Vec<Vec<u8>> = Vec::new();
    auth.start(&mut sink);
    assert_eq!(
        ServiceRequest::decode(&sink[0]).unwrap(),
        ServiceRequest {
            service: "ssh-userauth"
        },
        "{name}"
    );
    let mut result = auth.handle_payload(&service_accept("ssh-userauth"), &ctx, &mut sink);
    let mut replies = case.replies.into_iter();
    while result.is_ok() && !auth.is_authenticated() {
        let Some(reply) = replies.next() else { break };
        result = auth.handle_payload(&reply, &ctx, &mut sink);
    }
    assert!(replies.next().is_none(), "{name}: replies left over");
    let sent = &sink[1..];
    assert_eq!(sent.len(), case.requests.len(), "{name}: requests sent");
    for (payload, &expect) in sent.iter().zip(case.requests) {
        check_request(payload, expect);
    }
    match case.outcome {
        Outcome::Authenticated => {
            assert_eq!(result, Ok(()), "{name}");
            assert!(auth.is_authenticated(), "{name}");
            let events: Vec<_> = core::iter::from_fn(|| auth.poll_event()).collect();
            assert_eq!(events.last(), Some(&AuthEvent::Success), "{name}");
        }
        Outcome::Error(parts) => {
            let err = result.expect_err(name);
            let text = err.to_string();
            for part in parts {
                assert!(text.contains(part), "{name}: {part:?} not in {text:?}");
            }
            assert!(!auth.is_authenticated());
            assert_eq!(auth.error(), Some(&err));
        }
    }
}

#[test]
fn scripted_servers() {
    let rsa_fp = rsa_key().fingerprint();
    let ed_fp = ed_key().fingerprint();
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let rsa_id = leak(format!("/home/u/.ssh/id_rsa ({rsa_fp})"));
    let ed_id = leak(format!("/home/u/.ssh/id_ed25519 ({ed_fp})"));
    let all_algs: &'static [&'static str] =
        &["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"];
    let cases = vec![
        Case {
            name: "first key refused with each listed algorithm, second accepted",
            keys: &[0, 1],
            sig_algs: Some(all_algs),
            replies: vec![
                failure("publickey,password", false),
                failure("publickey,password", false),
                success(),
            ],
            requests: &[
                Expect::Key(0, RsaSha512),
                Expect::Key(0, RsaSha256),
                Expect::Key(1, Ed25519),
            ],
            outcome: Outcome::Authenticated,
        },
        Case {
            // OpenSSH 9.2 lists rsa-sha2-512 even when PubkeyAcceptedAlgorithms excludes it.
            name: "rsa-sha2-512 refused, rsa-sha2-256 accepted",
            keys: &[0],
            sig_algs: Some(all_algs),
            replies: vec![failure("publickey", false), success()],
            requests: &[Expect::Key(0, RsaSha512), Expect::Key(0, RsaSha256)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "server-sig-algs lists only rsa-sha2-256",
            keys: &[0],
            sig_algs: Some(&["rsa-sha2-256"]),
            replies: vec![success()],
            requests: &[Expect::Key(0, RsaSha256)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "no ext-info: rsa-sha2-512, then rsa-sha2-256",
            keys: &[0],
            sig_algs: None,
            replies: vec![failure("publickey", false), success()],
            requests: &[Expect::Key(0, RsaSha512), Expect::Key(0, RsaSha256)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "ed25519 not listed is skipped",
            keys: &[1, 0],
            sig_algs: Some(&["rsa-sha2-512"]),
            replies: vec![success()],
            requests: &[Expect::Key(0, RsaSha512)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "only SHA-1 ssh-rsa listed: nothing to offer, so probe with none",
            keys: &[0, 1],
            sig_algs: Some(&["ssh-rsa"]),
            replies: vec![failure("publickey,password", false)],
            requests: &[Expect::Probe],
            outcome: Outcome::Error(vec![
                "no key could be offered",
                "skipped: the server's server-sig-algs lists none of rsa-sha2-512, rsa-sha2-256",
                "skipped: the server's server-sig-algs lists none of ssh-ed25519",
                "The server allows: publickey,password",
            ]),
        },
        Case {
            name: "every key refused",
            keys: &[0, 1],
            sig_algs: None,
            replies: vec![
                failure("publickey,password", false),
                failure("publickey,password", false),
                failure("publickey,password", false),
            ],
            requests: &[
                Expect::Key(0, RsaSha512),
                Expect::Key(0, RsaSha256),
                Expect::Key(1, Ed25519),
            ],
            outcome: Outcome::Error(vec![
                "authentication as \"deploy\" failed: the server refused every key: ",
                leak(format!(
                    "{rsa_id} with rsa-sha2-512, rsa-sha2-256; {ed_id} with ssh-ed25519"
                )),
                "The server allows: publickey,password. Check that the public key is in \
                 ~/.ssh/authorized_keys of user \"deploy\" on the server",
            ]),
        },
        Case {
            name: "publickey dropped from the methods stops the attempts",
            keys: &[0, 1],
            sig_algs: Some(all_algs),
            replies: vec![failure("password", false)],
            requests: &[Expect::Key(0, RsaSha512)],
            outcome: Outcome::Error(vec![
                leak(format!("{rsa_id} with rsa-sha2-512; {ed_id} not tried")),
                "The server allows: password, but not publickey",
            ]),
        },
        Case {
            name: "partial success wanting a password",
            keys: &[1],
            sig_algs: Some(all_algs),
            replies: vec![failure("password,keyboard-interactive", true)],
            requests: &[Expect::Key(1, Ed25519)],
            outcome: Outcome::Error(vec![
                leak(format!("accepted {ed_id} for user \"deploy\"")),
                "requires another authentication method",
                "password,keyboard-interactive",
            ]),
        },
        Case {
            name: "partial success wanting a second key",
            keys: &[0, 1],
            sig_algs: None,
            replies: vec![failure("publickey", true), success()],
            requests: &[Expect::Key(0, RsaSha512), Expect::Key(1, Ed25519)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "partial success but no second key",
            keys: &[1],
            sig_algs: None,
            replies: vec![failure("publickey", true)],
            requests: &[Expect::Key(1, Ed25519)],
            outcome: Outcome::Error(vec![
                "the server accepted a key but requires more keys",
                "accepted with ssh-ed25519 as one of several required keys",
            ]),
        },
        Case {
            name: "no identities: probe, server lets us in",
            keys: &[],
            sig_algs: None,
            replies: vec![success()],
            requests: &[Expect::Probe],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "no identities: probe refused",
            keys: &[],
            sig_algs: Some(all_algs),
            replies: vec![failure("publickey", false)],
            requests: &[Expect::Probe],
            outcome: Outcome::Error(vec![
                "no private key was given to try",
                "The server allows: publickey",
            ]),
        },
    ];
    for case in cases {
        run(case);
    }
}

/// Drives a fresh client up to its first request.
fn started(keys: &[usize]) -> (ClientAuth, Vec<Vec<u8>>) {
    let mut auth = ClientAuth::new(USER.into(), identities(keys));
    let mut sink = Vec::new();
    auth.start(&mut sink);
    auth.handle_payload(&service_accept("ssh-userauth"), &ctx(), &mut sink)
        .unwrap();
    (auth, sink)
}

fn ctx() -> AuthContext<'static> {
    AuthContext {
        session_id: SESSION_ID,
        server_sig_algs: None,
    }
}

fn protocol_error(r: Result<(), AuthError>, needle: &str) {
    match r {
        Err(AuthError::Protocol(text)) => {
            assert!(text.contains(needle), "{needle:?} not in {text:?}")
        }
        other => panic!("expected a protocol error with {needle:?}, got {other:?}"),
    }
}

#[test]
fn start_sends_one_service_request() {
    let mut auth = ClientAuth::new(USER.into(), identities(&[1]));
    let mut sink: Vec<Vec<u8>> = Vec::new();
    auth.start(&mut sink);
    auth.start(&mut sink);
    assert_eq!(sink, vec![b"\x05\x00\x00\x00\x0cssh-userauth".to_vec()]);
}

#[test]
fn events_describe_each_attempt() {
    let algs = vec!["rsa-sha2-256".to_string()];
    let ctx = AuthContext {
        session_id: SESSION_ID,
        server_sig_algs: Some(&algs),
    };
    let mut auth = ClientAuth::new(USER.into(), identities(&[1, 0]));
    let mut sink = Vec::new();
    auth.start(&mut sink);
    auth.handle_payload(&service_accept("ssh-userauth"), &ctx, &mut sink)
        .unwrap();
    auth.handle_payload(&success(), &ctx, &mut sink).unwrap();
    let events: Vec<_> = core::iter::from_fn(|| auth.poll_event()).collect();
    assert_eq!(
        events,
        vec![
            AuthEvent::Skipped {
                source: "/home/u/.ssh/id_ed25519".into(),
                fingerprint: ed_key().fingerprint(),
                reason: SkipReason::NoAllowedAlgorithm {
                    key_can_sign: &[Ed25519]
                },
            },
            AuthEvent::Attempt {
                source: "/home/u/.ssh/id_rsa".into(),
                fingerprint: rsa_key().fingerprint(),
                algorithm: RsaSha256,
            },
            AuthEvent::Success,
        ]
    );
}

#[test]
fn banner_text_is_sanitized_and_allowed_before_service_accept() {
    let mut auth = ClientAuth::new(USER.into(), identities(&[1]));
    let mut sink = Vec::new();
    auth.start(&mut sink);
    auth.handle_payload(
        &banner(b"Authorized use only\x1b[2J\x1b]0;pwned\x07\r\nline two\xff\n"),
        &ctx(),
        &mut sink,
    )
    .unwrap();
    assert_eq!(
        auth.poll_event(),
        Some(AuthEvent::Banner(
            "Authorized use only\\x1b[2J\\x1b]0;pwned\\x07\nline two\u{fffd}\n".into()
        ))
    );
    auth.handle_payload(&service_accept("ssh-userauth"), &ctx(), &mut sink)
        .unwrap();
    auth.handle_payload(&banner(b"second"), &ctx(), &mut sink)
        .unwrap();
    auth.handle_payload(&success(), &ctx(), &mut sink).unwrap();
    let events: Vec<_> = core::iter::from_fn(|| auth.poll_event()).collect();
    assert!(events.contains(&AuthEvent::Banner("second".into())));
    assert_eq!(events.last(), Some(&AuthEvent::Success));
}

#[test]
fn long_banners_are_cut_and_floods_do_not_grow_the_queue() {
    let (mut auth, mut sink) = started(&[1]);
    while auth.poll_event().is_some() {}
    auth.handle_payload(&banner(&vec![b'a'; 100_000]), &ctx(), &mut sink)
        .unwrap();
    match auth.poll_event() {
        Some(AuthEvent::Banner(text)) => {
            assert_eq!(text.len(), MAX_BANNER_CHARS + "[...]".len());
        }
        other => panic!("{other:?}"),
    }
    for _ in 0..1000 {
        auth.handle_payload(&banner(b"spam"), &ctx(), &mut sink)
            .unwrap();
    }
    assert_eq!(
        core::iter::from_fn(|| auth.poll_event()).count(),
        MAX_PENDING_EVENTS
    );
}

#[test]
fn hostile_messages_are_protocol_errors() {
    let pk_ok = encode(ServerMessage::PkOk(UserauthPkOk {
        algorithm: "ssh-ed25519",
        key_blob: ed_key().public_key().blob(),
    }));
    let mut trailing_failure = failure("publickey", false);
    trailing_failure.push(0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "PK_OK never asked for",
            pk_ok,
            "SSH_MSG_USERAUTH_PK_OK (60) arrived although",
        ),
        ("unknown number", vec![70, 1, 2], "message number 70 is not"),
        ("transport number", vec![20], "SSH_MSG_KEXINIT (20) is not"),
        (
            "trailing bytes",
            trailing_failure,
            "malformed SSH_MSG_USERAUTH_FAILURE",
        ),
        (
            "truncated banner",
            vec![53, 0, 0, 0, 9, b'x'],
            "malformed SSH_MSG_USERAUTH_BANNER",
        ),
        (
            "second service accept",
            service_accept("ssh-userauth"),
            "SSH_MSG_SERVICE_ACCEPT (6) arrived while waiting",
        ),
        (
            "bad name-list",
            vec![51, 0, 0, 0, 2, b',', b',', 0],
            "malformed SSH_MSG_USERAUTH_FAILURE",
        ),
        ("empty", vec![], "empty message"),
    ];
    for (what, payload, needle) in cases {
        let (mut auth, mut sink) = started(&[1]);
        protocol_error(auth.handle_payload(&payload, &ctx(), &mut sink), needle);
        // Failed stays failed: a valid SUCCESS now changes nothing.
        let again = auth.handle_payload(&success(), &ctx(), &mut sink);
        assert!(matches!(again, Err(AuthError::Protocol(_))), "{what}");
        assert!(!auth.is_authenticated(), "{what}");
    }
}

#[test]
fn messages_out_of_order_are_protocol_errors() {
    let mut sink = Vec::new();
    let mut before_start = ClientAuth::new(USER.into(), identities(&[1]));
    protocol_error(
        before_start.handle_payload(&service_accept("ssh-userauth"), &ctx(), &mut sink),
        "before authentication started",
    );

    let mut auth = ClientAuth::new(USER.into(), identities(&[1]));
    auth.start(&mut sink);
    protocol_error(
        auth.handle_payload(&success(), &ctx(), &mut sink),
        "SSH_MSG_USERAUTH_SUCCESS (52) arrived before the server accepted",
    );

    let mut auth = ClientAuth::new(USER.into(), identities(&[1]));
    auth.start(&mut sink);
    protocol_error(
        auth.handle_payload(&service_accept("ssh-connection"), &ctx(), &mut sink),
        "accepted service \"ssh-connection\"",
    );

    let (mut auth, mut sink) = started(&[1]);
    auth.handle_payload(&success(), &ctx(), &mut sink).unwrap();
    for late in [success(), failure("publickey", false), banner(b"late")] {
        let (mut auth2, mut sink2) = started(&[1]);
        auth2
            .handle_payload(&success(), &ctx(), &mut sink2)
            .unwrap();
        protocol_error(
            auth2.handle_payload(&late, &ctx(), &mut sink2),
            "after authentication succeeded",
        );
    }
    assert!(auth.is_authenticated());
}

#[test]
fn sha1_is_never_chosen() {
    let rsa = rsa_key();
    let listed = vec!["ssh-rsa".to_string(), "rsa-sha2-256".to_string()];
    assert_eq!(
        choose_algorithms(rsa.signature_algorithms(), Some(&listed)),
        vec![RsaSha256]
    );
    assert_eq!(
        choose_algorithms(&[SignatureAlgorithm::RsaSha1, RsaSha512], None),
        vec![RsaSha512]
    );
    assert!(choose_algorithms(rsa.signature_algorithms(), Some(&listed[..1])).is_empty());
}

#[test]
fn methods_in_errors_are_bounded() {
    let (mut auth, mut sink) = started(&[1]);
    let many = vec!["m"; 5000].join(",");
    let err = auth
        .handle_payload(&failure(&many, false), &ctx(), &mut sink)
        .unwrap_err();
    match err {
        AuthError::Refused(r) => {
            let allows = r.server_allows.unwrap();
            assert_eq!(allows.chars().count(), MAX_METHODS_CHARS + "[...]".len());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn state_machine_and_keys_can_move_between_threads() {
    // The driver runs each session in its own task, which may move between threads.
    let (auth, _) = started(&[0, 1]);
    let moved = std::thread::spawn(move || auth.is_authenticated())
        .join()
        .unwrap();
    assert!(!moved);
}
