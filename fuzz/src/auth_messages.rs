//! User authentication: the message decoder and the `ClientAuth` state machine, with the
//! harness playing the program around it (agent, password file, prompt answers).
//!
//! Input: `flags, payloads` (each a `u16` length and its bytes). Every payload is decoded
//! with `decode_server_message_for` in each of the three meanings of message 60 (and must
//! survive encode -> decode), then handed to a `ClientAuth` that was started and has received
//! SERVICE_ACCEPT. `flags` choose the identities (Ed25519 always; a second Ed25519, the RSA
//! fixture, an Ed25519 "in an agent" and the Ed25519 fixture with its certificate
//! optionally), the `server-sig-algs` the transport reports, and whether the harness gives a
//! password and answers prompts or declines.
//!
//! Properties: every request the client sends decodes, is for our user and
//! `ssh-connection`; a signed one carries a signature that verifies over the session
//! identifier, and an unsigned one is a query for a key only the agent holds; SHA-1
//! `ssh-rsa` is never used; a password goes out only when the harness gave one, and prompt
//! answers only as many as were asked; after an error every call returns that error; after
//! success every call fails.

use ssh_auth::cert::Certificate;
use ssh_auth::msg::{
    AuthMethod, MethodInFlight, SERVICE_CONNECTION, SERVICE_USERAUTH, ServiceAccept,
    ServiceRequest, UserauthInfoResponse, UserauthRequest, decode_server_message_for,
    publickey_signed_data,
};
use ssh_auth::{AuthContext, AuthEvent, ClientAuth, Identity, PrivateKey};
use ssh_transport::hostkey::{PublicKey, SignatureAlgorithm};
use zeroize::Zeroizing;

use crate::fixtures::{self, SESSION_ID, USER};
use crate::input::Input;

/// Payloads handed to the client per input, so one input costs bounded time.
const MAX_PAYLOADS: usize = 64;
/// The password the harness gives when flag 64 is set.
pub const PASSWORD: &str = "fuzz-password";

/// What a run did, so tests can tell that the seeds reach what they are meant to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Signed requests sent (each one's signature verified).
    pub signed_requests: usize,
    /// Publickey queries sent (agent keys).
    pub queries: usize,
    /// Signatures the harness made as the agent.
    pub agent_signatures: usize,
    /// Password requests sent.
    pub passwords: usize,
    /// Keyboard-interactive answers sent.
    pub info_responses: usize,
    /// Banners shown.
    pub banners: usize,
    /// The client ended authenticated.
    pub authenticated: bool,
    /// The client ended in an error.
    pub failed: bool,
}

/// A user certificate made by `ssh-keygen -s` for the auth crate's Ed25519 test key.
pub const ED25519_CERT: &str = include_str!("../../auth/testdata/certs/ed25519-cert.pub");
/// That key's file.
const ED25519_FILE: &str = include_str!("../../auth/testdata/ed25519");

fn ed25519_file_key() -> PrivateKey {
    match PrivateKey::from_file_contents(ED25519_FILE.as_bytes()) {
        Ok(k) => k,
        Err(e) => panic!("the Ed25519 fixture does not load: {e}"),
    }
}

/// One identity and what the harness knows about it.
struct Key {
    identity: Identity,
    /// The private key behind it, to sign as the agent with.
    private: PrivateKey,
}

/// Every identity the harness may use, built once (key parsing is slow next to a run).
fn all_keys() -> &'static [Key; 5] {
    static KEYS: std::sync::OnceLock<[Key; 5]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let cert = match Certificate::from_openssh_line(ED25519_CERT) {
            Ok(c) => c,
            Err(e) => panic!("the certificate fixture does not parse: {e}"),
        };
        let certified = match Identity::certified(
            std::sync::Arc::new(ed25519_file_key()),
            cert,
            "ed25519-cert",
        ) {
            Ok(identity) => identity,
            Err(e) => panic!("the certificate fixture is not for its key: {e}"),
        };
        [
            Key {
                identity: Identity::new(fixtures::ed25519(7), "ed25519-a"),
                private: fixtures::ed25519(7),
            },
            Key {
                identity: Identity::new(fixtures::rsa(), "rsa2048"),
                private: fixtures::rsa(),
            },
            Key {
                identity: Identity::new(fixtures::ed25519(8), "ed25519-b"),
                private: fixtures::ed25519(8),
            },
            Key {
                identity: Identity::external(
                    fixtures::ed25519(9).public_key().clone(),
                    "agent key",
                    true,
                ),
                private: fixtures::ed25519(9),
            },
            Key {
                identity: certified,
                private: ed25519_file_key(),
            },
        ]
    })
}

/// The identities `flags` choose: Ed25519 always; 1 RSA, 2 a second Ed25519, 16 an agent
/// key, 32 a certificate.
fn keys(flags: u8) -> Vec<&'static Key> {
    let all = all_keys();
    let mut out = vec![&all[0]];
    for (bit, key) in [(1, &all[1]), (2, &all[2]), (16, &all[3]), (32, &all[4])] {
        if flags & bit != 0 {
            out.push(key);
        }
    }
    out
}

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    drive(data);
}

/// The harness, returning what happened.
pub fn drive(data: &[u8]) -> Report {
    let mut report = Report::default();
    let mut input = Input::new(data);
    let Some(flags) = input.byte() else {
        return report;
    };
    let sig_algs: Option<Vec<String>> = match (flags >> 2) & 3 {
        0 => None,
        1 => Some(vec!["ssh-ed25519".into(), "rsa-sha2-256".into()]),
        2 => Some(vec![
            "rsa-sha2-512".into(),
            "rsa-sha2-256".into(),
            "ssh-ed25519".into(),
        ]),
        _ => Some(vec!["ssh-rsa".into()]),
    };
    let answers = flags & 64 != 0;
    let ctx = AuthContext {
        session_id: SESSION_ID,
        server_sig_algs: sig_algs.as_deref(),
    };
    let keys = keys(flags);
    let mut auth = ClientAuth::new(
        USER.into(),
        keys.iter().map(|k| k.identity.clone()).collect(),
    );
    let mut run = Run {
        keys: &keys,
        answers,
        sink: Vec::new(),
        failed: None,
        pending_prompts: 0,
        report: &mut report,
    };
    auth.start(&mut run.sink);
    run.check_sent();

    let mut accept = Vec::new();
    ServiceAccept {
        service: SERVICE_USERAUTH,
    }
    .encode(&mut accept);
    run.step(&mut auth, &accept, &ctx);

    for _ in 0..MAX_PAYLOADS {
        let Some(payload) = input.payload() else {
            break;
        };
        round_trip(payload);
        run.step(&mut auth, payload, &ctx);
    }
    report.authenticated = auth.is_authenticated();
    report.failed = auth.error().is_some();
    report
}

struct Run<'a> {
    keys: &'a [&'static Key],
    answers: bool,
    sink: Vec<Vec<u8>>,
    /// The error the client is stuck on, if any.
    failed: Option<ssh_auth::AuthError>,
    /// Answers the client may send for the prompts the harness answered.
    pending_prompts: usize,
    report: &'a mut Report,
}

impl Run<'_> {
    /// Hands one payload over, answers what the client asks, and checks what came of it.
    fn step(&mut self, auth: &mut ClientAuth, payload: &[u8], ctx: &AuthContext<'_>) {
        let was_authenticated = auth.is_authenticated();
        let result = auth.handle_payload(payload, ctx, &mut self.sink);
        if let Some(first) = &self.failed {
            assert_eq!(result.as_ref().err(), Some(first), "the auth error changed");
            assert!(self.sink.is_empty(), "a failed ClientAuth sent something");
        }
        if was_authenticated {
            assert!(result.is_err(), "a message after success was accepted");
        }
        self.check_sent();
        self.answer(auth);
        match auth.error() {
            None => {
                assert!(self.failed.is_none(), "a failed ClientAuth recovered");
            }
            Some(e) => {
                if let Err(r) = &result {
                    assert_eq!(r, e, "error() disagrees with handle_payload");
                }
                assert!(!auth.is_authenticated());
                self.failed = Some(e.clone());
            }
        }
    }

    /// Answers every request the client made, as the program around it would.
    fn answer(&mut self, auth: &mut ClientAuth) {
        while let Some(event) = auth.poll_event() {
            let result = match event {
                AuthEvent::Banner(text) => {
                    self.report.banners += 1;
                    assert!(
                        !text
                            .chars()
                            .any(|c| c.is_control() && c != '\n' && c != '\t'),
                        "banner not sanitized: {text:?}"
                    );
                    Ok(())
                }
                AuthEvent::Success => {
                    assert!(auth.is_authenticated());
                    Ok(())
                }
                AuthEvent::SignRequest(req) => {
                    let key = self
                        .keys
                        .get(req.identity)
                        .unwrap_or_else(|| panic!("a signature for unknown key {}", req.identity));
                    assert!(
                        key.identity.is_external(),
                        "asked to sign for a key the client holds"
                    );
                    assert_eq!(req.key_blob, key.identity.key_blob());
                    let signature = key
                        .private
                        .sign(req.algorithm, &req.data)
                        .map_err(|e| e.to_string());
                    self.report.agent_signatures += 1;
                    auth.provide_signature(req.id, signature, &mut self.sink)
                }
                AuthEvent::PasswordRequest(req) => {
                    let password = if self.answers {
                        Ok(Zeroizing::new(PASSWORD.to_owned()))
                    } else {
                        Err("declined".to_owned())
                    };
                    auth.provide_password(req.id, password, &mut self.sink)
                }
                AuthEvent::InfoRequest(req) => {
                    assert!(
                        !req.prompts.is_empty(),
                        "an empty INFO_REQUEST was passed on"
                    );
                    for p in &req.prompts {
                        assert!(
                            !p.text.chars().any(|c| c.is_control() && c != '\t'),
                            "prompt not sanitized: {:?}",
                            p.text
                        );
                    }
                    let responses = if self.answers {
                        self.pending_prompts = req.prompts.len();
                        Ok(req
                            .prompts
                            .iter()
                            .map(|_| Zeroizing::new("answer".to_owned()))
                            .collect())
                    } else {
                        Err("declined".to_owned())
                    };
                    auth.provide_responses(req.id, responses, &mut self.sink)
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                assert_eq!(auth.error(), Some(&e), "error() disagrees with provide_*");
            }
            self.check_sent();
        }
    }

    /// Every payload the client sent must be a well-formed request from us.
    fn check_sent(&mut self) {
        for payload in core::mem::take(&mut self.sink) {
            if let Ok(req) = ServiceRequest::decode(&payload) {
                assert_eq!(req.service, SERVICE_USERAUTH);
                continue;
            }
            if let Ok(resp) = UserauthInfoResponse::decode(&payload) {
                // Zero answers go to an empty INFO_REQUEST without asking anyone.
                assert!(
                    resp.responses.is_empty()
                        || (self.answers && resp.responses.len() == self.pending_prompts),
                    "answers nobody gave: {resp:?}"
                );
                self.pending_prompts = 0;
                self.report.info_responses += 1;
                continue;
            }
            let req = match UserauthRequest::decode(&payload) {
                Ok(req) => req,
                Err(e) => {
                    panic!("the client sent a payload that does not decode ({e}): {payload:?}")
                }
            };
            assert_eq!(req.user, USER);
            assert_eq!(req.service, SERVICE_CONNECTION);
            match req.method {
                AuthMethod::None | AuthMethod::KeyboardInteractive { .. } => {}
                AuthMethod::PublicKey {
                    algorithm,
                    key_blob,
                    signature,
                } => self.check_publickey(algorithm, key_blob, signature),
                AuthMethod::Password {
                    password,
                    new_password,
                } => {
                    assert!(self.answers, "a password was sent that nobody gave");
                    assert_eq!(password, PASSWORD);
                    assert!(new_password.is_none());
                    self.report.passwords += 1;
                }
                AuthMethod::Other { name, .. } => panic!("the client used method {name:?}"),
            }
        }
    }

    fn check_publickey(&mut self, algorithm: &str, key_blob: &[u8], signature: Option<&[u8]>) {
        let Some(key) = self.keys.iter().find(|k| k.identity.key_blob() == key_blob) else {
            panic!("a key that is not one of ours was offered");
        };
        let alg = if key.identity.certificate().is_some() {
            ssh_auth::cert::certificate_algorithm_from_name(algorithm)
        } else {
            SignatureAlgorithm::from_name(algorithm)
        };
        let Some(alg) = alg else {
            panic!("unknown algorithm {algorithm:?} offered");
        };
        assert_ne!(
            alg,
            SignatureAlgorithm::RsaSha1,
            "a SHA-1 RSA signature was offered"
        );
        let Some(signature) = signature else {
            assert!(
                key.identity.is_external(),
                "a query for a key the client could have signed with at once"
            );
            self.report.queries += 1;
            return;
        };
        let public: &PublicKey = key.identity.public_key();
        let signed =
            publickey_signed_data(SESSION_ID, USER, SERVICE_CONNECTION, algorithm, key_blob);
        if let Err(e) = public.verify(alg, &signed, signature) {
            panic!("the client's {algorithm} signature does not verify: {e}");
        }
        self.report.signed_requests += 1;
    }
}

/// Whatever decodes must encode to something that decodes to the same message, in each
/// meaning of message 60.
fn round_trip(payload: &[u8]) {
    for meaning in [
        MethodInFlight::PublicKey,
        MethodInFlight::Password,
        MethodInFlight::KeyboardInteractive,
    ] {
        let Ok(msg) = decode_server_message_for(payload, meaning) else {
            continue;
        };
        let mut wire = Vec::new();
        msg.encode(&mut wire);
        match decode_server_message_for(&wire, meaning) {
            Ok(again) => assert_eq!(again, msg, "decode(encode(m)) != m"),
            Err(e) => panic!("{msg:?} encodes to bytes that do not decode: {e}"),
        }
        assert_eq!(
            wire.first(),
            Some(&msg.message_type().0),
            "encoded with the wrong message number"
        );
        if let ssh_auth::msg::ServerMessage::InfoRequest(req) = msg {
            assert!(req.prompts.len() <= ssh_auth::msg::MAX_INFO_PROMPTS);
            assert_eq!(req.prompts.iter().count(), req.prompts.len() as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str) -> Report {
        let seeds = crate::seeds::all();
        match seeds
            .iter()
            .find(|s| s.target == "auth_messages" && s.name == name)
        {
            Some(seed) => drive(&seed.data),
            None => panic!("no seed {name}"),
        }
    }

    #[test]
    fn seeds_reach_success_refusal_and_errors() {
        let r = report("auth-success");
        assert!(
            r.authenticated && !r.failed && r.signed_requests == 1,
            "{r:?}"
        );
        let r = report("auth-banner-success");
        assert!(r.authenticated && r.banners == 1, "{r:?}");
        let r = report("auth-partial");
        assert!(r.authenticated && r.signed_requests == 2, "{r:?}");
        let r = report("auth-refused");
        assert!(r.failed && !r.authenticated, "{r:?}");
        assert!(r.signed_requests >= 3, "every key was tried: {r:?}");
        for name in [
            "auth-pk-ok",
            "auth-success-then-more",
            "auth-kbd-huge-count",
        ] {
            let r = report(name);
            assert!(r.failed && !r.authenticated, "{name}: {r:?}");
        }
    }

    #[test]
    fn seeds_reach_the_agent_certificates_passwords_and_prompts() {
        let r = report("auth-agent");
        assert!(
            r.authenticated && r.queries == 1 && r.agent_signatures == 1 && r.signed_requests == 2,
            "{r:?}"
        );
        let r = report("auth-certificate");
        assert!(r.authenticated && r.signed_requests == 1, "{r:?}");
        let r = report("auth-no-publickey");
        assert!(
            r.authenticated && r.info_responses == 1 && r.passwords == 0,
            "{r:?}"
        );
        let r = report("auth-partial-password");
        assert!(r.authenticated && r.passwords == 1, "{r:?}");
        let r = report("auth-password-declined");
        assert!(r.failed && r.passwords == 0, "{r:?}");
    }
}
