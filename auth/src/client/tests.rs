use ssh_transport::hostkey::SignatureAlgorithm::{Ed25519, RsaSha1, RsaSha256, RsaSha512};
use ssh_transport::wire::{NameList, Writer as _};

use super::*;
use crate::msg::{
    InfoPrompt, InfoPrompts, ServiceAccept, UserauthBanner, UserauthFailure,
    UserauthPasswdChangereq, UserauthPkOk, UserauthSuccess,
};

const SESSION_ID: &[u8] = b"\x01\x02session-id-from-the-first-kex\xff";
const USER: &str = "deploy";
/// 2024-01-01T00:00:00Z: inside the fixtures' usual validity, after the expired one's.
const NOW: u64 = 1_704_067_200;

fn rsa_key() -> PrivateKey {
    PrivateKey::from_file_contents(include_bytes!("../../testdata/rsa2048")).unwrap()
}

fn ed_key() -> PrivateKey {
    PrivateKey::from_file_contents(include_bytes!("../../testdata/ed25519")).unwrap()
}

fn cert(text: &str) -> Certificate {
    Certificate::from_openssh_line(text).unwrap()
}

fn ed_cert() -> Certificate {
    cert(include_str!("../../testdata/certs/ed25519-cert.pub"))
}

fn rsa_cert() -> Certificate {
    cert(include_str!("../../testdata/certs/rsa2048-cert.pub"))
}

fn expired_cert() -> Certificate {
    cert(include_str!(
        "../../testdata/certs/ed25519-expired-cert.pub"
    ))
}

/// The test's identities, by number:
/// 0 RSA file key, 1 Ed25519 file key, 2 Ed25519 in an agent, 3 RSA in an agent,
/// 4 Ed25519 file key with its certificate, 5 RSA file key with its certificate,
/// 6 Ed25519 file key with an expired certificate, 7 Ed25519 certificate in an agent.
fn identity(i: usize) -> Identity {
    match i {
        0 => Identity::new(rsa_key(), "/home/u/.ssh/id_rsa"),
        1 => Identity::new(ed_key(), "/home/u/.ssh/id_ed25519"),
        2 => Identity::external(ed_key().public_key().clone(), "agent: ed", true),
        3 => Identity::external(rsa_key().public_key().clone(), "agent: rsa", true),
        4 => Identity::certified(Arc::new(ed_key()), ed_cert(), "/c/ed-cert.pub").unwrap(),
        5 => Identity::certified(Arc::new(rsa_key()), rsa_cert(), "/c/rsa-cert.pub").unwrap(),
        6 => Identity::certified(Arc::new(ed_key()), expired_cert(), "/c/old-cert.pub").unwrap(),
        _ => Identity::external_certified(ed_cert(), "agent: ed cert", true),
    }
}

fn identities(which: &[usize]) -> Vec<Identity> {
    which.iter().map(|&i| identity(i)).collect()
}

/// The private key behind identity `i`, as the agent or key file would hold it.
fn private_of(i: usize) -> PrivateKey {
    if matches!(i, 0 | 3 | 5) {
        rsa_key()
    } else {
        ed_key()
    }
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

fn pk_ok(i: usize, alg: SignatureAlgorithm) -> Vec<u8> {
    let id = identity(i);
    encode(ServerMessage::PkOk(UserauthPkOk {
        algorithm: id.algorithm_name(alg),
        key_blob: id.key_blob(),
    }))
}

fn info_request(name: &str, instruction: &str, prompts: &[(&str, bool)]) -> Vec<u8> {
    let list: Vec<InfoPrompt<'_>> = prompts
        .iter()
        .map(|(p, echo)| InfoPrompt {
            prompt: p.as_bytes(),
            echo: *echo,
        })
        .collect();
    let mut storage = Vec::new();
    encode(ServerMessage::InfoRequest(UserauthInfoRequest {
        name: name.as_bytes(),
        instruction: instruction.as_bytes(),
        language: b"",
        prompts: InfoPrompts::build(&list, &mut storage),
    }))
}

fn ctx() -> AuthContext<'static> {
    AuthContext {
        session_id: SESSION_ID,
        server_sig_algs: None,
    }
}

/// What a payload sent by the client must be.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A signed publickey request with identity `usize`.
    Key(usize, SignatureAlgorithm),
    /// A publickey query (no signature) with identity `usize`.
    Query(usize, SignatureAlgorithm),
    /// A password request with this password.
    Password(&'static str),
    /// A keyboard-interactive request.
    Kbd,
    /// An INFO_RESPONSE with these answers.
    Answers(&'static [&'static str]),
    /// A `none` request.
    Probe,
}

/// Decodes a sent payload and checks it against `expect`; signatures are verified over the
/// RFC 4252 section 7 data with the transport's verifier.
fn check_sent(sent: &[u8], expect: Expect) {
    if let Expect::Answers(answers) = expect {
        let resp = UserauthInfoResponse::decode(sent).unwrap();
        assert_eq!(resp.responses, answers);
        return;
    }
    let req = UserauthRequest::decode(sent).unwrap();
    assert_eq!(req.user, USER);
    assert_eq!(req.service, "ssh-connection");
    match (expect, req.method) {
        (Expect::Probe, AuthMethod::None) => {}
        (
            Expect::Kbd,
            AuthMethod::KeyboardInteractive {
                language,
                submethods,
            },
        ) => {
            assert_eq!((language, submethods), ("", ""));
        }
        (
            Expect::Password(expected),
            AuthMethod::Password {
                password,
                new_password: None,
            },
        ) => assert_eq!(password, expected),
        (
            Expect::Query(which, alg),
            AuthMethod::PublicKey {
                algorithm,
                key_blob,
                signature: None,
            },
        ) => {
            let id = identity(which);
            assert_eq!(algorithm, id.algorithm_name(alg));
            assert_eq!(key_blob, id.key_blob());
        }
        (
            Expect::Key(which, alg),
            AuthMethod::PublicKey {
                algorithm,
                key_blob,
                signature: Some(sig),
            },
        ) => {
            let id = identity(which);
            assert_eq!(algorithm, id.algorithm_name(alg));
            assert_eq!(key_blob, id.key_blob());
            let key = id.public_key();
            let data =
                publickey_signed_data(SESSION_ID, USER, "ssh-connection", algorithm, key_blob);
            assert_eq!(key.verify(alg, &data, sig), Ok(()));
            // The signature is bound to the session: another session id does not verify.
            let other =
                publickey_signed_data(b"other", USER, "ssh-connection", algorithm, key_blob);
            assert!(key.verify(alg, &other, sig).is_err());
        }
        (expect, method) => panic!("expected {expect:?}, sent {method:?}"),
    }
}

enum Outcome {
    Authenticated,
    /// An error whose text contains all of these.
    Error(Vec<&'static str>),
}

/// How the test answers the machine's requests.
#[derive(Clone, Default)]
struct Caller {
    /// Passwords to give, one per request; none left means "no password".
    passwords: Vec<&'static str>,
    /// Answers to give to each INFO_REQUEST, in order; none left means "no answers".
    answers: Vec<Vec<&'static str>>,
    /// Sign with the wrong algorithm (an agent that ignores the flags).
    wrong_algorithm: bool,
    /// Refuse to sign.
    refuse_to_sign: bool,
}

struct Case {
    name: &'static str,
    keys: &'static [usize],
    sig_algs: Option<&'static [&'static str]>,
    config: fn(&mut AuthConfig),
    caller: Caller,
    /// The server's answer to each request, in order.
    replies: Vec<Vec<u8>>,
    sent: &'static [Expect],
    outcome: Outcome,
}

fn default_config(_: &mut AuthConfig) {}

/// Answers every pending request from `caller`; returns the events seen.
fn answer(
    auth: &mut ClientAuth,
    caller: &mut Caller,
    sink: &mut Vec<Vec<u8>>,
    events: &mut Vec<AuthEvent>,
) -> Result<(), AuthError> {
    while let Some(ev) = auth.poll_event() {
        events.push(ev.clone());
        match ev {
            AuthEvent::SignRequest(req) => {
                let signer = private_of_source(&req.source);
                let alg = if caller.wrong_algorithm && req.algorithm == RsaSha512 {
                    RsaSha256
                } else {
                    req.algorithm
                };
                let result = if caller.refuse_to_sign {
                    Err("the agent refused to sign".to_owned())
                } else {
                    Ok(signer.sign(alg, &req.data).unwrap())
                };
                auth.provide_signature(req.id, result, sink)?;
            }
            AuthEvent::PasswordRequest(req) => {
                let pw = if caller.passwords.is_empty() {
                    Err("no password to give".to_owned())
                } else {
                    Ok(Zeroizing::new(caller.passwords.remove(0).to_owned()))
                };
                auth.provide_password(req.id, pw, sink)?;
            }
            AuthEvent::InfoRequest(req) => {
                let answers = if caller.answers.is_empty() {
                    Err("no answers to give".to_owned())
                } else {
                    Ok(caller
                        .answers
                        .remove(0)
                        .into_iter()
                        .map(|a| Zeroizing::new(a.to_owned()))
                        .collect())
                };
                auth.provide_responses(req.id, answers, sink)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn private_of_source(source: &str) -> PrivateKey {
    (0..8)
        .find(|i| identity(*i).source() == source)
        .map(private_of)
        .unwrap()
}

fn run(case: Case) -> Vec<AuthEvent> {
    let name = case.name;
    let algs: Option<Vec<String>> = case
        .sig_algs
        .map(|l| l.iter().map(|s| s.to_string()).collect());
    let ctx = AuthContext {
        session_id: SESSION_ID,
        server_sig_algs: algs.as_deref(),
    };
    let mut config = AuthConfig::new(USER.into(), identities(case.keys));
    config.now = Some(NOW);
    (case.config)(&mut config);
    let mut auth = ClientAuth::with_config(config);
    let mut caller = case.caller.clone();
    let mut events = Vec::new();
    let mut sink: Vec<Vec<u8>> = Vec::new();
    auth.start(&mut sink);
    assert_eq!(
        ServiceRequest::decode(&sink[0]).unwrap(),
        ServiceRequest {
            service: "ssh-userauth"
        },
        "{name}"
    );
    let mut result = auth
        .handle_payload(&service_accept("ssh-userauth"), &ctx, &mut sink)
        .and_then(|()| answer(&mut auth, &mut caller, &mut sink, &mut events));
    let mut replies = case.replies.into_iter();
    while result.is_ok() && !auth.is_authenticated() {
        let Some(reply) = replies.next() else { break };
        result = auth
            .handle_payload(&reply, &ctx, &mut sink)
            .and_then(|()| answer(&mut auth, &mut caller, &mut sink, &mut events));
    }
    assert!(replies.next().is_none(), "{name}: replies left over");
    let sent = &sink[1..];
    assert_eq!(
        sent.len(),
        case.sent.len(),
        "{name}: payloads sent: {:?}",
        sent.iter()
            .map(|p| UserauthRequest::decode(p).map(|r| format!("{:?}", r.method)))
            .collect::<Vec<_>>()
    );
    for (payload, &expect) in sent.iter().zip(case.sent) {
        check_sent(payload, expect);
    }
    match case.outcome {
        Outcome::Authenticated => {
            assert_eq!(result, Ok(()), "{name}");
            assert!(auth.is_authenticated(), "{name}");
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
    events
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[test]
fn scripted_servers_publickey_from_files() {
    let rsa_fp = rsa_key().fingerprint();
    let ed_fp = ed_key().fingerprint();
    let rsa_id = leak(format!("/home/u/.ssh/id_rsa ({rsa_fp})"));
    let ed_id = leak(format!("/home/u/.ssh/id_ed25519 ({ed_fp})"));
    let all_algs: &'static [&'static str] =
        &["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"];
    let cases = vec![
        Case {
            // Each key once before any key's second algorithm: sshd's MaxAuthTries counts
            // every refusal.
            name: "first key refused, second accepted before the first key's other algorithm",
            keys: &[0, 1],
            sig_algs: Some(all_algs),
            config: default_config,
            caller: Caller::default(),
            replies: vec![failure("publickey,password", false), success()],
            sent: &[Expect::Key(0, RsaSha512), Expect::Key(1, Ed25519)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "both keys refused, then the first key's other algorithm accepted",
            keys: &[0, 1],
            sig_algs: Some(all_algs),
            config: default_config,
            caller: Caller::default(),
            replies: vec![
                failure("publickey,password", false),
                failure("publickey,password", false),
                success(),
            ],
            sent: &[
                Expect::Key(0, RsaSha512),
                Expect::Key(1, Ed25519),
                Expect::Key(0, RsaSha256),
            ],
            outcome: Outcome::Authenticated,
        },
        Case {
            // OpenSSH 9.2 lists rsa-sha2-512 even when PubkeyAcceptedAlgorithms excludes it.
            name: "rsa-sha2-512 refused, rsa-sha2-256 accepted",
            keys: &[0],
            sig_algs: Some(all_algs),
            config: default_config,
            caller: Caller::default(),
            replies: vec![failure("publickey", false), success()],
            sent: &[Expect::Key(0, RsaSha512), Expect::Key(0, RsaSha256)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "server-sig-algs lists only rsa-sha2-256",
            keys: &[0],
            sig_algs: Some(&["rsa-sha2-256"]),
            config: default_config,
            caller: Caller::default(),
            replies: vec![success()],
            sent: &[Expect::Key(0, RsaSha256)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "no ext-info: rsa-sha2-512, then rsa-sha2-256",
            keys: &[0],
            sig_algs: None,
            config: default_config,
            caller: Caller::default(),
            replies: vec![failure("publickey", false), success()],
            sent: &[Expect::Key(0, RsaSha512), Expect::Key(0, RsaSha256)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "ed25519 not listed is skipped",
            keys: &[1, 0],
            sig_algs: Some(&["rsa-sha2-512"]),
            config: default_config,
            caller: Caller::default(),
            replies: vec![success()],
            sent: &[Expect::Key(0, RsaSha512)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "only SHA-1 ssh-rsa listed: nothing to offer, so probe with none",
            keys: &[0, 1],
            sig_algs: Some(&["ssh-rsa"]),
            config: default_config,
            caller: Caller::default(),
            replies: vec![failure("publickey", false)],
            sent: &[Expect::Probe],
            outcome: Outcome::Error(vec![
                "no key could be offered",
                "skipped: the server's server-sig-algs lists none of rsa-sha2-512, rsa-sha2-256",
                "skipped: the server's server-sig-algs lists none of ssh-ed25519",
                "The server allows: publickey",
            ]),
        },
        Case {
            name: "every key refused",
            keys: &[0, 1],
            sig_algs: None,
            config: default_config,
            caller: Caller::default(),
            replies: vec![
                failure("publickey", false),
                failure("publickey", false),
                failure("publickey", false),
            ],
            sent: &[
                Expect::Key(0, RsaSha512),
                Expect::Key(1, Ed25519),
                Expect::Key(0, RsaSha256),
            ],
            outcome: Outcome::Error(vec![
                "authentication as \"deploy\" failed: the server refused every key: ",
                leak(format!(
                    "{rsa_id} with rsa-sha2-512, rsa-sha2-256; {ed_id} with ssh-ed25519"
                )),
                "The server allows: publickey. Check that the public key is in \
                 ~/.ssh/authorized_keys of user \"deploy\" on the server",
            ]),
        },
        Case {
            name: "publickey dropped from the methods stops the key attempts",
            keys: &[0, 1],
            sig_algs: Some(all_algs),
            config: default_config,
            caller: Caller::default(),
            replies: vec![failure("hostbased", false)],
            sent: &[Expect::Key(0, RsaSha512)],
            outcome: Outcome::Error(vec![
                leak(format!("{rsa_id} with rsa-sha2-512; {ed_id} not tried")),
                "The server allows: hostbased, none of which this client supports",
            ]),
        },
        Case {
            name: "partial success wanting a second key",
            keys: &[0, 1],
            sig_algs: None,
            config: default_config,
            caller: Caller::default(),
            replies: vec![failure("publickey", true), success()],
            sent: &[Expect::Key(0, RsaSha512), Expect::Key(1, Ed25519)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "partial success but no second key",
            keys: &[1],
            sig_algs: None,
            config: default_config,
            caller: Caller::default(),
            replies: vec![failure("publickey", true)],
            sent: &[Expect::Key(1, Ed25519)],
            outcome: Outcome::Error(vec![
                "the server accepted part of the authentication but requires more",
                "accepted with ssh-ed25519 as one of several required steps",
            ]),
        },
        Case {
            name: "no identities: probe, server lets us in",
            keys: &[],
            sig_algs: None,
            config: default_config,
            caller: Caller::default(),
            replies: vec![success()],
            sent: &[Expect::Probe],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "no identities: probe refused",
            keys: &[],
            sig_algs: Some(all_algs),
            config: default_config,
            caller: Caller::default(),
            replies: vec![failure("publickey", false)],
            sent: &[Expect::Probe],
            outcome: Outcome::Error(vec![
                "no private key was given to try",
                "The server allows: publickey",
            ]),
        },
        Case {
            name: "PubkeyAuthentication off: keys are not offered",
            keys: &[1],
            sig_algs: None,
            config: |c| c.publickey = false,
            caller: Caller::default(),
            replies: vec![failure("publickey", false)],
            sent: &[Expect::Probe],
            outcome: Outcome::Error(vec!["skipped: PubkeyAuthentication is off"]),
        },
    ];
    for case in cases {
        run(case);
    }
}

#[test]
fn scripted_servers_agent_keys_are_queried_before_signing() {
    let cases = vec![
        Case {
            name: "agent query, PK_OK, signature, success",
            keys: &[2],
            sig_algs: None,
            config: default_config,
            caller: Caller::default(),
            replies: vec![pk_ok(2, Ed25519), success()],
            sent: &[Expect::Query(2, Ed25519), Expect::Key(2, Ed25519)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "agent key refused at the query is never signed with",
            keys: &[3, 1],
            sig_algs: Some(&["rsa-sha2-256", "ssh-ed25519"]),
            config: default_config,
            caller: Caller::default(),
            replies: vec![failure("publickey", false), success()],
            sent: &[Expect::Query(3, RsaSha256), Expect::Key(1, Ed25519)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "agent RSA: rsa-sha2-512 queried and signed",
            keys: &[3],
            sig_algs: None,
            config: default_config,
            caller: Caller::default(),
            replies: vec![pk_ok(3, RsaSha512), success()],
            sent: &[Expect::Query(3, RsaSha512), Expect::Key(3, RsaSha512)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "an agent that ignores the SHA-2 flags is caught before the server sees it",
            keys: &[3, 1],
            sig_algs: None,
            config: default_config,
            caller: Caller {
                wrong_algorithm: true,
                ..Caller::default()
            },
            replies: vec![pk_ok(3, RsaSha512), success()],
            sent: &[Expect::Query(3, RsaSha512), Expect::Key(1, Ed25519)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "an agent that refuses to sign: the key is skipped with the reason",
            keys: &[2],
            sig_algs: None,
            config: default_config,
            caller: Caller {
                refuse_to_sign: true,
                ..Caller::default()
            },
            // Nothing learned the methods yet, so `none` asks before giving up.
            replies: vec![pk_ok(2, Ed25519), failure("publickey", false)],
            sent: &[Expect::Query(2, Ed25519), Expect::Probe],
            outcome: Outcome::Error(vec![
                "agent: ed (",
                ", in the agent) skipped: could not sign: the agent refused to sign",
                "The server allows: publickey",
            ]),
        },
        Case {
            name: "agent signature refused by the server",
            keys: &[2],
            sig_algs: None,
            config: default_config,
            caller: Caller::default(),
            replies: vec![pk_ok(2, Ed25519), failure("publickey", false)],
            sent: &[Expect::Query(2, Ed25519), Expect::Key(2, Ed25519)],
            outcome: Outcome::Error(vec!["in the agent) with ssh-ed25519"]),
        },
        Case {
            name: "SHA-1 only when configured, and then only through the agent",
            keys: &[0, 3],
            sig_algs: None,
            config: |c| c.pubkey_algorithms = vec!["ssh-rsa".into()],
            caller: Caller::default(),
            replies: vec![failure("publickey", false)],
            sent: &[Expect::Query(3, RsaSha1)],
            outcome: Outcome::Error(vec![
                "/home/u/.ssh/id_rsa (",
                ") skipped: PubkeyAcceptedAlgorithms allows none of rsa-sha2-512, rsa-sha2-256; \
                 agent: rsa (",
                ", in the agent) with ssh-rsa",
            ]),
        },
    ];
    for case in cases {
        run(case);
    }
}

#[test]
fn scripted_servers_certificates() {
    let cases = vec![
        Case {
            name: "certificate offered before its plain key, whatever the order given",
            keys: &[1, 4],
            sig_algs: None,
            config: default_config,
            caller: Caller::default(),
            replies: vec![failure("publickey", false), success()],
            sent: &[Expect::Key(4, Ed25519), Expect::Key(1, Ed25519)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "RSA certificate with rsa-sha2-512-cert-v01@openssh.com",
            keys: &[5],
            sig_algs: Some(&["rsa-sha2-512", "rsa-sha2-256"]),
            config: default_config,
            caller: Caller::default(),
            replies: vec![success()],
            sent: &[Expect::Key(5, RsaSha512)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "expired certificate skipped, plain key tried",
            keys: &[6, 1],
            sig_algs: None,
            config: default_config,
            caller: Caller::default(),
            replies: vec![failure("publickey", false)],
            sent: &[Expect::Key(1, Ed25519)],
            outcome: Outcome::Error(vec![
                "/c/old-cert.pub (",
                "certificate ID \"fixture-expired\" serial 10 valid from \
                 2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z) skipped: the certificate \
                 expired at 2021-01-01T00:00:00Z",
            ]),
        },
        Case {
            name: "certificate held by an agent: query with the certificate, then sign",
            keys: &[7],
            sig_algs: None,
            config: default_config,
            caller: Caller::default(),
            replies: vec![pk_ok(7, Ed25519), success()],
            sent: &[Expect::Query(7, Ed25519), Expect::Key(7, Ed25519)],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "certificate names not in PubkeyAcceptedAlgorithms: plain key only",
            keys: &[4, 1],
            sig_algs: None,
            config: |c| c.pubkey_algorithms = vec!["ssh-ed25519".into()],
            caller: Caller::default(),
            replies: vec![success()],
            sent: &[Expect::Key(1, Ed25519)],
            outcome: Outcome::Authenticated,
        },
    ];
    for case in cases {
        run(case);
    }
    // Without a clock, validity is not checked.
    let mut config = AuthConfig::new(USER.into(), identities(&[6]));
    config.now = None;
    let mut auth = ClientAuth::with_config(config);
    let mut sink = Vec::new();
    auth.start(&mut sink);
    auth.handle_payload(&service_accept("ssh-userauth"), &ctx(), &mut sink)
        .unwrap();
    check_sent(&sink[1], Expect::Key(6, Ed25519));
}

#[test]
fn a_certificate_for_another_key_is_refused() {
    let err = Identity::certified(Arc::new(rsa_key()), ed_cert(), "x").unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }));
    assert!(err.to_string().contains(&ed_key().fingerprint()), "{err}");
}

#[test]
fn scripted_servers_password_and_keyboard_interactive() {
    let cases = vec![
        Case {
            name: "key refused, then password",
            keys: &[1],
            sig_algs: None,
            config: default_config,
            caller: Caller {
                passwords: vec!["correct horse"],
                ..Caller::default()
            },
            replies: vec![failure("publickey,password", false), success()],
            sent: &[Expect::Key(1, Ed25519), Expect::Password("correct horse")],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "no key: probe, then password",
            keys: &[],
            sig_algs: None,
            config: default_config,
            caller: Caller {
                passwords: vec!["pw"],
                ..Caller::default()
            },
            replies: vec![failure("password", false), success()],
            sent: &[Expect::Probe, Expect::Password("pw")],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "password refused three times",
            keys: &[],
            sig_algs: None,
            config: default_config,
            caller: Caller {
                passwords: vec!["a", "b", "c", "d"],
                ..Caller::default()
            },
            replies: vec![
                failure("password", false),
                failure("password", false),
                failure("password", false),
                failure("password", false),
            ],
            sent: &[
                Expect::Probe,
                Expect::Password("a"),
                Expect::Password("b"),
                Expect::Password("c"),
            ],
            outcome: Outcome::Error(vec![
                "no private key was given to try: password refused 3 times, then not tried \
                 again: all 3 attempts were used. The server allows: password, but not \
                 publickey for this user",
            ]),
        },
        Case {
            name: "no password to give: the reason is reported",
            keys: &[],
            sig_algs: None,
            config: default_config,
            caller: Caller::default(),
            replies: vec![failure("password", false)],
            sent: &[Expect::Probe],
            outcome: Outcome::Error(vec!["password not tried: no password to give"]),
        },
        Case {
            name: "password turned off",
            keys: &[],
            sig_algs: None,
            config: |c| c.password = false,
            caller: Caller {
                passwords: vec!["unused"],
                ..Caller::default()
            },
            replies: vec![failure("publickey,password", false)],
            sent: &[Expect::Probe],
            outcome: Outcome::Error(vec![
                "password not tried: turned off (PasswordAuthentication no)",
            ]),
        },
        Case {
            name: "keyboard-interactive with several prompts, then an empty request",
            keys: &[],
            sig_algs: None,
            config: default_config,
            caller: Caller {
                answers: vec![vec!["s3cret", "123456"]],
                ..Caller::default()
            },
            replies: vec![
                failure("keyboard-interactive", false),
                info_request(
                    "Login",
                    "Two factors",
                    &[("Password: ", false), ("Code: ", true)],
                ),
                info_request("", "", &[]),
                success(),
            ],
            sent: &[
                Expect::Probe,
                Expect::Kbd,
                Expect::Answers(&["s3cret", "123456"]),
                Expect::Answers(&[]),
            ],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "keyboard-interactive before password, password after its refusal",
            keys: &[],
            sig_algs: None,
            config: |c| c.attempts = 1,
            caller: Caller {
                answers: vec![vec!["wrong"]],
                passwords: vec!["right"],
                ..Caller::default()
            },
            replies: vec![
                failure("password,keyboard-interactive", false),
                info_request("", "", &[("Password: ", false)]),
                failure("password,keyboard-interactive", false),
                success(),
            ],
            sent: &[
                Expect::Probe,
                Expect::Kbd,
                Expect::Answers(&["wrong"]),
                Expect::Password("right"),
            ],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "keyboard-interactive refused without a question is not tried again",
            keys: &[],
            sig_algs: None,
            config: default_config,
            caller: Caller {
                passwords: vec!["pw"],
                ..Caller::default()
            },
            replies: vec![
                failure("password,keyboard-interactive", false),
                failure("password,keyboard-interactive", false),
                failure("password,keyboard-interactive", false),
            ],
            sent: &[Expect::Probe, Expect::Kbd, Expect::Password("pw")],
            outcome: Outcome::Error(vec![
                "keyboard-interactive refused once, then not tried again: the server asked no \
                 question",
                "password refused once",
            ]),
        },
        Case {
            name: "no answers for keyboard-interactive: a password request abandons it",
            keys: &[],
            sig_algs: None,
            config: default_config,
            caller: Caller {
                passwords: vec!["pw"],
                ..Caller::default()
            },
            replies: vec![
                failure("password,keyboard-interactive", false),
                info_request("", "", &[("OTP: ", true)]),
                success(),
            ],
            sent: &[Expect::Probe, Expect::Kbd, Expect::Password("pw")],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "partial success: publickey, then password (AuthenticationMethods)",
            keys: &[1],
            sig_algs: None,
            config: default_config,
            caller: Caller {
                passwords: vec!["pw"],
                ..Caller::default()
            },
            replies: vec![failure("password", true), success()],
            sent: &[Expect::Key(1, Ed25519), Expect::Password("pw")],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "partial success: agent key, then keyboard-interactive",
            keys: &[2],
            sig_algs: None,
            config: default_config,
            caller: Caller {
                answers: vec![vec!["pw"]],
                ..Caller::default()
            },
            replies: vec![
                pk_ok(2, Ed25519),
                failure("keyboard-interactive", true),
                info_request("", "", &[("Password: ", false)]),
                success(),
            ],
            sent: &[
                Expect::Query(2, Ed25519),
                Expect::Key(2, Ed25519),
                Expect::Kbd,
                Expect::Answers(&["pw"]),
            ],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "partial success then no password: the error says more was required",
            keys: &[1],
            sig_algs: None,
            config: default_config,
            caller: Caller::default(),
            replies: vec![failure("password", true)],
            sent: &[Expect::Key(1, Ed25519)],
            outcome: Outcome::Error(vec![
                "the server accepted part of the authentication but requires more",
                "accepted with ssh-ed25519 as one of several required steps; password not \
                 tried: no password to give. The server allows: password",
            ]),
        },
    ];
    for case in cases {
        run(case);
    }
}

#[test]
fn info_request_events_carry_sanitized_prompts() {
    let events = run(Case {
        name: "prompt text",
        keys: &[],
        sig_algs: None,
        config: default_config,
        caller: Caller {
            answers: vec![vec!["a", "b"]],
            ..Caller::default()
        },
        replies: vec![
            failure("keyboard-interactive", false),
            info_request(
                "Title\x1b]0;x\x07",
                "line one\nline two",
                &[("Password:\x1b[8m ", false), ("Token: ", true)],
            ),
            success(),
        ],
        sent: &[Expect::Probe, Expect::Kbd, Expect::Answers(&["a", "b"])],
        outcome: Outcome::Authenticated,
    });
    let req = events
        .iter()
        .find_map(|e| match e {
            AuthEvent::InfoRequest(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(req.name, "Title\\x1b]0;x\\x07");
    assert_eq!(req.instruction, "line one\nline two");
    assert_eq!(
        req.prompts,
        vec![
            Prompt {
                text: "Password:\\x1b[8m ".into(),
                echo: false
            },
            Prompt {
                text: "Token: ".into(),
                echo: true
            }
        ]
    );
    assert_eq!((req.attempt, req.round), (1, 1));
    assert!(events.contains(&AuthEvent::Method {
        method: "keyboard-interactive",
        attempt: 1
    }));
}

/// Drives a fresh client with default config up to its first request.
fn started(keys: &[usize]) -> (ClientAuth, Vec<Vec<u8>>) {
    let mut auth = ClientAuth::new(USER.into(), identities(keys));
    let mut sink = Vec::new();
    auth.start(&mut sink);
    auth.handle_payload(&service_accept("ssh-userauth"), &ctx(), &mut sink)
        .unwrap();
    (auth, sink)
}

fn protocol_error(r: Result<(), AuthError>, needle: &str) {
    match r {
        Err(AuthError::Protocol(text)) => {
            assert!(text.contains(needle), "{needle:?} not in {text:?}")
        }
        other => panic!("expected a protocol error with {needle:?}, got {other:?}"),
    }
}

/// A client that has sent a keyboard-interactive request.
fn in_keyboard_interactive() -> (ClientAuth, Vec<Vec<u8>>) {
    let (mut auth, mut sink) = started(&[]);
    auth.handle_payload(&failure("keyboard-interactive", false), &ctx(), &mut sink)
        .unwrap();
    while auth.poll_event().is_some() {}
    (auth, sink)
}

#[test]
fn hostile_info_requests_are_refused() {
    // A prompt count far beyond what the message holds.
    let (mut auth, mut sink) = in_keyboard_interactive();
    let mut huge = vec![60];
    for field in [&b""[..], b"", b""] {
        huge.put_string(field);
    }
    huge.put_u32(0x7fff_ffff);
    protocol_error(
        auth.handle_payload(&huge, &ctx(), &mut sink),
        "malformed SSH_MSG_USERAUTH_INFO_REQUEST (60): invalid number of prompts",
    );

    // A server that keeps sending empty requests without ever deciding.
    let (mut auth, mut sink) = in_keyboard_interactive();
    let empty = info_request("", "", &[]);
    let mut result = Ok(());
    for _ in 0..100 {
        result = auth.handle_payload(&empty, &ctx(), &mut sink);
        if result.is_err() {
            break;
        }
    }
    protocol_error(result, "more than 16 keyboard-interactive requests");
    assert!(sink.len() < 30, "answered {} requests", sink.len());

    // An INFO_REQUEST while nothing asked for it (PK_OK is what 60 means then, and it is
    // malformed as one).
    let (mut auth, mut sink) = started(&[1]);
    protocol_error(
        auth.handle_payload(&info_request("", "", &[("x", false)]), &ctx(), &mut sink),
        "malformed SSH_MSG_USERAUTH_PK_OK",
    );
}

#[test]
fn a_server_talking_while_the_client_prepares_a_request_is_refused() {
    let (mut auth, mut sink) = in_keyboard_interactive();
    auth.handle_payload(&info_request("", "", &[("P: ", false)]), &ctx(), &mut sink)
        .unwrap();
    assert!(auth.is_waiting_for_caller());
    protocol_error(
        auth.handle_payload(&success(), &ctx(), &mut sink),
        "SSH_MSG_USERAUTH_SUCCESS (52) arrived while no request was outstanding",
    );
}

#[test]
fn password_change_requests_end_with_a_clear_error() {
    let (mut auth, mut sink) = started(&[]);
    auth.handle_payload(&failure("password", false), &ctx(), &mut sink)
        .unwrap();
    let id = core::iter::from_fn(|| auth.poll_event())
        .find_map(|e| match e {
            AuthEvent::PasswordRequest(r) => Some(r.id),
            _ => None,
        })
        .unwrap();
    auth.provide_password(id, Ok(Zeroizing::new("old".into())), &mut sink)
        .unwrap();
    let req = encode(ServerMessage::PasswdChangereq(UserauthPasswdChangereq {
        prompt: b"Password expired\x1b[0m",
        language: b"",
    }));
    let err = auth.handle_payload(&req, &ctx(), &mut sink).unwrap_err();
    assert_eq!(
        err,
        AuthError::PasswordChangeRequired {
            user: USER.into(),
            prompt: "Password expired\\x1b[0m".into()
        }
    );
    assert!(err.to_string().contains("log in once with ssh"), "{err}");
}

#[test]
fn stale_and_mismatched_answers_are_ignored() {
    let (mut auth, mut sink) = started(&[2]);
    auth.handle_payload(&pk_ok(2, Ed25519), &ctx(), &mut sink)
        .unwrap();
    let req = core::iter::from_fn(|| auth.poll_event())
        .find_map(|e| match e {
            AuthEvent::SignRequest(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(req.identity, 0);
    assert_eq!(req.algorithm, Ed25519);
    assert_eq!(req.key_blob, ed_key().public_key().blob());
    let sent = sink.len();
    // Wrong id, and answers of other kinds: nothing happens.
    auth.provide_signature(req.id + 1, Ok(vec![1]), &mut sink)
        .unwrap();
    auth.provide_password(req.id, Ok(Zeroizing::new("x".into())), &mut sink)
        .unwrap();
    auth.provide_responses(req.id, Ok(Vec::new()), &mut sink)
        .unwrap();
    assert_eq!(sink.len(), sent);
    assert!(auth.is_waiting_for_caller());
    // The right answer goes through.
    let sig = ed_key().sign(Ed25519, &req.data).unwrap();
    auth.provide_signature(req.id, Ok(sig.clone()), &mut sink)
        .unwrap();
    check_sent(sink.last().unwrap(), Expect::Key(2, Ed25519));
    // Answering again changes nothing.
    auth.provide_signature(req.id, Ok(sig), &mut sink).unwrap();
    assert_eq!(sink.len(), sent + 1);
}

#[test]
fn a_pk_ok_for_another_key_is_a_protocol_error() {
    let (mut auth, mut sink) = started(&[2]);
    protocol_error(
        auth.handle_payload(&pk_ok(3, RsaSha512), &ctx(), &mut sink),
        "names another key or algorithm",
    );
}

#[test]
fn a_signature_that_does_not_verify_is_not_sent() {
    let (mut auth, mut sink) = started(&[2]);
    auth.handle_payload(&pk_ok(2, Ed25519), &ctx(), &mut sink)
        .unwrap();
    let req = core::iter::from_fn(|| auth.poll_event())
        .find_map(|e| match e {
            AuthEvent::SignRequest(r) => Some(r),
            _ => None,
        })
        .unwrap();
    let sent = sink.len();
    let wrong = ed_key().sign(Ed25519, b"other data").unwrap();
    auth.provide_signature(req.id, Ok(wrong), &mut sink)
        .unwrap();
    // Not sent: the next request is the probe for other methods.
    assert_eq!(sink.len(), sent + 1);
    check_sent(sink.last().unwrap(), Expect::Probe);
    let skipped = core::iter::from_fn(|| auth.poll_event())
        .find_map(|e| match e {
            AuthEvent::Skipped { reason, .. } => Some(reason.to_string()),
            _ => None,
        })
        .unwrap();
    assert!(
        skipped.starts_with("skipped: could not sign: the signature does not verify"),
        "{skipped}"
    );
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
                    key_can_sign: vec![Ed25519]
                },
            },
            AuthEvent::Attempt {
                source: "/home/u/.ssh/id_rsa".into(),
                fingerprint: rsa_key().fingerprint(),
                algorithm: RsaSha256,
                certificate: false,
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
            "SSH_MSG_USERAUTH_PK_OK (60) arrived while waiting for the answer",
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
        // Failed stays failed: a valid SUCCESS now changes nothing, nor does an answer.
        let again = auth.handle_payload(&success(), &ctx(), &mut sink);
        assert!(matches!(again, Err(AuthError::Protocol(_))), "{what}");
        let answer = auth.provide_password(1, Err("x".into()), &mut sink);
        assert!(matches!(answer, Err(AuthError::Protocol(_))), "{what}");
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
}

#[test]
fn sha1_is_never_chosen_by_default() {
    for keys in [&[0usize][..], &[3]] {
        let algs = vec!["ssh-rsa".to_string(), "rsa-sha2-256".to_string()];
        let ctx = AuthContext {
            session_id: SESSION_ID,
            server_sig_algs: Some(&algs),
        };
        let mut auth = ClientAuth::new(USER.into(), identities(keys));
        let mut sink: Vec<Vec<u8>> = Vec::new();
        auth.start(&mut sink);
        auth.handle_payload(&service_accept("ssh-userauth"), &ctx, &mut sink)
            .unwrap();
        for _ in 0..3 {
            if auth
                .handle_payload(&failure("publickey", false), &ctx, &mut sink)
                .is_err()
            {
                break;
            }
        }
        for payload in &sink[1..] {
            if let Ok(UserauthRequest {
                method: AuthMethod::PublicKey { algorithm, .. },
                ..
            }) = UserauthRequest::decode(payload)
            {
                assert_eq!(algorithm, "rsa-sha2-256", "{keys:?}");
            }
        }
    }
    assert!(!DEFAULT_PUBKEY_ALGORITHMS.contains(&"ssh-rsa"));
    assert!(!DEFAULT_PUBKEY_ALGORITHMS.contains(&"ssh-rsa-cert-v01@openssh.com"));
    for name in DEFAULT_PUBKEY_ALGORITHMS {
        assert!(SUPPORTED_PUBKEY_ALGORITHMS.contains(name));
    }
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
    let (auth, _) = started(&[0, 1, 2, 4]);
    let moved = std::thread::spawn(move || auth.is_authenticated())
        .join()
        .unwrap();
    assert!(!moved);
}

#[test]
fn preferred_authentications_orders_and_limits_the_methods() {
    fn password_first(c: &mut AuthConfig) {
        c.preferred = vec!["password".into(), "publickey".into()];
    }
    fn password_only(c: &mut AuthConfig) {
        c.preferred = vec!["gssapi-with-mic".into(), "password".into()];
    }
    fn keyboard_interactive_only(c: &mut AuthConfig) {
        c.preferred = vec!["keyboard-interactive".into()];
    }
    let cases = vec![
        Case {
            name: "password before the key: a probe learns the methods, then password",
            keys: &[1],
            sig_algs: None,
            config: password_first,
            caller: Caller {
                passwords: vec!["pw"],
                ..Caller::default()
            },
            replies: vec![failure("publickey,password", false), success()],
            sent: &[Expect::Probe, Expect::Password("pw")],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "password before the key: the key once the password is refused",
            keys: &[1],
            sig_algs: None,
            config: password_first,
            caller: Caller {
                passwords: vec!["wrong"],
                ..Caller::default()
            },
            replies: vec![
                failure("publickey,password", false),
                failure("publickey,password", false),
                success(),
            ],
            sent: &[
                Expect::Probe,
                Expect::Password("wrong"),
                Expect::Key(1, Ed25519),
            ],
            outcome: Outcome::Authenticated,
        },
        Case {
            name: "password only: the key is never offered, unknown names are ignored",
            keys: &[1],
            sig_algs: None,
            config: password_only,
            caller: Caller::default(),
            replies: vec![failure("publickey,password", false)],
            sent: &[Expect::Probe],
            outcome: Outcome::Error(vec![
                "skipped: publickey is not in PreferredAuthentications",
                "password not tried: no password to give",
            ]),
        },
        Case {
            name: "keyboard-interactive only: password is not used even when offered",
            keys: &[],
            sig_algs: None,
            config: keyboard_interactive_only,
            caller: Caller::default(),
            replies: vec![failure("password", false)],
            sent: &[Expect::Probe],
            outcome: Outcome::Error(vec!["password not tried: not in PreferredAuthentications"]),
        },
    ];
    for case in cases {
        run(case);
    }
}

/// The client of [`started`] with [`AuthConfig::caller_signs_held_keys`].
fn caller_signing(keys: &[usize]) -> ClientAuth {
    let mut config = AuthConfig::new(USER.into(), identities(keys));
    config.caller_signs_held_keys = true;
    ClientAuth::with_config(config)
}

/// The sign requests among the events waiting, the other events dropped.
fn sign_requests(auth: &mut ClientAuth) -> Vec<SignRequest> {
    core::iter::from_fn(|| auth.poll_event())
        .filter_map(|e| match e {
            AuthEvent::SignRequest(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn a_caller_that_signs_for_held_keys_is_asked_at_once_and_its_signature_sent() {
    // An RSA key file and its certificate (offered first): each held here, each signed by
    // the caller without a query first.
    let mut auth = caller_signing(&[0, 5]);
    let mut sink = Vec::new();
    auth.start(&mut sink);
    auth.handle_payload(&service_accept("ssh-userauth"), &ctx(), &mut sink)
        .unwrap();
    let sent = sink.len();
    let requests = sign_requests(&mut auth);
    assert_eq!(requests.len(), 1, "{requests:?}");
    let req = &requests[0];
    assert_eq!(req.identity, 1, "the certificate");
    assert_eq!(req.algorithm, RsaSha512);
    assert_eq!(sink.len(), sent, "nothing is sent before the signature");
    assert!(auth.is_waiting_for_caller());
    let key = auth.identities()[1]
        .private_key()
        .expect("held here")
        .clone();
    auth.provide_signature(
        req.id,
        Ok(key.sign(req.algorithm, &req.data).unwrap()),
        &mut sink,
    )
    .unwrap();
    check_sent(sink.last().unwrap(), Expect::Key(5, RsaSha512));

    // Refused: the plain key is next, asked for the same way, and a bad signature from the
    // caller skips it as an agent's would.
    auth.handle_payload(&failure("publickey", false), &ctx(), &mut sink)
        .unwrap();
    let requests = sign_requests(&mut auth);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].identity, 0);
    assert!(auth.identities()[0].private_key().is_some());
    let sent = sink.len();
    auth.provide_signature(requests[0].id, Ok(vec![0, 0, 0, 1, b'x']), &mut sink)
        .unwrap();
    assert_eq!(
        sink.len(),
        sent,
        "no request with a signature that does not verify"
    );
}

#[test]
fn a_held_key_sent_ahead_waits_for_the_callers_signature_across_service_accept() {
    let mut auth = caller_signing(&[1]);
    let mut sink = Vec::new();
    auth.start(&mut sink);
    assert!(auth.send_ahead(&ctx(), &mut sink).unwrap());
    let requests = sign_requests(&mut auth);
    assert_eq!(requests.len(), 1);
    // SERVICE_ACCEPT comes while the signature is being made.
    auth.handle_payload(&service_accept("ssh-userauth"), &ctx(), &mut sink)
        .unwrap();
    assert!(auth.is_waiting_for_caller());
    let sig = ed_key().sign(Ed25519, &requests[0].data).unwrap();
    auth.provide_signature(requests[0].id, Ok(sig), &mut sink)
        .unwrap();
    check_sent(sink.last().unwrap(), Expect::Key(1, Ed25519));
    auth.handle_payload(&success(), &ctx(), &mut sink).unwrap();
    assert!(auth.is_authenticated());
}

#[test]
fn agent_and_locked_keys_hold_no_private_key() {
    assert!(identity(2).private_key().is_none());
    assert!(identity(7).private_key().is_none());
    assert!(identity(1).private_key().is_some());
}
