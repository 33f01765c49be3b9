//! User authentication: the message decoder and the `ClientAuth` state machine.
//!
//! Input: `flags, payloads` (each a `u16` length and its bytes). Every payload is decoded with
//! `decode_server_message` (and must survive encode -> decode), then handed to a `ClientAuth`
//! that was started and has received SERVICE_ACCEPT. `flags` choose the identities (Ed25519
//! always; a second Ed25519 and the RSA fixture optionally) and the `server-sig-algs` the
//! transport reports.
//!
//! Properties: every request the client sends decodes, is for our user and `ssh-connection`,
//! and carries a signature that verifies over the session identifier; SHA-1 `ssh-rsa` is
//! never used; after an error every call returns that error; after success every call fails.

use ssh_auth::msg::{
    AuthMethod, SERVICE_CONNECTION, SERVICE_USERAUTH, ServiceAccept, ServiceRequest,
    UserauthRequest, publickey_signed_data,
};
use ssh_auth::{AuthContext, AuthEvent, ClientAuth, Identity, decode_server_message};
use ssh_transport::hostkey::{PublicKey, SignatureAlgorithm};

use crate::fixtures::{self, SESSION_ID, USER};
use crate::input::Input;

/// Payloads handed to the client per input, so one input costs bounded time.
const MAX_PAYLOADS: usize = 64;

/// What a run did, so tests can tell that the seeds reach what they are meant to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Signed requests sent (each one's signature verified).
    pub signed_requests: usize,
    /// Banners shown.
    pub banners: usize,
    /// The client ended authenticated.
    pub authenticated: bool,
    /// The client ended in an error.
    pub failed: bool,
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
    let ctx = AuthContext {
        session_id: SESSION_ID,
        server_sig_algs: sig_algs.as_deref(),
    };

    let mut identities = vec![Identity {
        key: fixtures::ed25519(7),
        source: "ed25519-a".into(),
    }];
    if flags & 1 != 0 {
        identities.push(Identity {
            key: fixtures::rsa(),
            source: "rsa2048".into(),
        });
    }
    if flags & 2 != 0 {
        identities.push(Identity {
            key: fixtures::ed25519(8),
            source: "ed25519-b".into(),
        });
    }
    let public: Vec<PublicKey> = identities
        .iter()
        .map(|id| id.key.public_key().clone())
        .collect();

    let mut auth = ClientAuth::new(USER.into(), identities);
    let mut sink: Vec<Vec<u8>> = Vec::new();
    auth.start(&mut sink);
    check_sent(&mut sink, &public, &mut report);

    let mut accept = Vec::new();
    ServiceAccept {
        service: SERVICE_USERAUTH,
    }
    .encode(&mut accept);
    let mut failed = step(
        &mut auth,
        &accept,
        &ctx,
        &mut sink,
        &public,
        None,
        &mut report,
    );

    for _ in 0..MAX_PAYLOADS {
        let Some(payload) = input.payload() else {
            break;
        };
        round_trip(payload);
        failed = step(
            &mut auth,
            payload,
            &ctx,
            &mut sink,
            &public,
            failed,
            &mut report,
        );
    }
    report.authenticated = auth.is_authenticated();
    report.failed = failed.is_some();
    report
}

/// Hands one payload over and checks what came of it. Returns the error the client is
/// stuck on, if any.
#[allow(clippy::too_many_arguments)]
fn step(
    auth: &mut ClientAuth,
    payload: &[u8],
    ctx: &AuthContext<'_>,
    sink: &mut Vec<Vec<u8>>,
    public: &[PublicKey],
    failed: Option<ssh_auth::AuthError>,
    report: &mut Report,
) -> Option<ssh_auth::AuthError> {
    let was_authenticated = auth.is_authenticated();
    let result = auth.handle_payload(payload, ctx, sink);
    if let Some(first) = &failed {
        assert_eq!(result.as_ref().err(), Some(first), "the auth error changed");
        assert!(sink.is_empty(), "a failed ClientAuth sent something");
    }
    if was_authenticated {
        assert!(result.is_err(), "a message after success was accepted");
    }
    check_sent(sink, public, report);
    while let Some(event) = auth.poll_event() {
        if let AuthEvent::Banner(text) = &event {
            report.banners += 1;
            assert!(
                !text
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t'),
                "banner not sanitized: {text:?}"
            );
        }
        if event == AuthEvent::Success {
            assert!(auth.is_authenticated());
        }
    }
    match result {
        Ok(()) => {
            assert!(auth.error().is_none());
            None
        }
        Err(e) => {
            assert_eq!(
                auth.error(),
                Some(&e),
                "error() disagrees with handle_payload"
            );
            assert!(!auth.is_authenticated());
            Some(e)
        }
    }
}

/// Every payload the client sent must be a well-formed request from us, properly signed.
fn check_sent(sink: &mut Vec<Vec<u8>>, public: &[PublicKey], report: &mut Report) {
    for payload in sink.drain(..) {
        if let Ok(req) = ServiceRequest::decode(&payload) {
            assert_eq!(req.service, SERVICE_USERAUTH);
            continue;
        }
        let req = match UserauthRequest::decode(&payload) {
            Ok(req) => req,
            Err(e) => panic!("the client sent a payload that does not decode ({e}): {payload:?}"),
        };
        assert_eq!(req.user, USER);
        assert_eq!(req.service, SERVICE_CONNECTION);
        match req.method {
            AuthMethod::None => {}
            AuthMethod::PublicKey {
                algorithm,
                key_blob,
                signature,
            } => {
                assert_ne!(algorithm, "ssh-rsa", "a SHA-1 RSA signature was offered");
                let Some(alg) = SignatureAlgorithm::from_name(algorithm) else {
                    panic!("unknown signature algorithm {algorithm:?} offered");
                };
                let Some(key) = public.iter().find(|k| k.blob() == key_blob) else {
                    panic!("a key that is not one of ours was offered");
                };
                let Some(signature) = signature else {
                    panic!("a publickey request without a signature");
                };
                let signed = publickey_signed_data(
                    SESSION_ID,
                    USER,
                    SERVICE_CONNECTION,
                    algorithm,
                    key_blob,
                );
                if let Err(e) = key.verify(alg, &signed, signature) {
                    panic!("the client's {algorithm} signature does not verify: {e}");
                }
                report.signed_requests += 1;
            }
            AuthMethod::Other { name, .. } => panic!("the client used method {name:?}"),
        }
    }
}

/// Whatever decodes must encode to something that decodes to the same message.
fn round_trip(payload: &[u8]) {
    let Ok(msg) = decode_server_message(payload) else {
        return;
    };
    let mut wire = Vec::new();
    msg.encode(&mut wire);
    match decode_server_message(&wire) {
        Ok(again) => assert_eq!(again, msg, "decode(encode(m)) != m"),
        Err(e) => panic!("{msg:?} encodes to bytes that do not decode: {e}"),
    }
    assert_eq!(
        wire.first(),
        Some(&msg.message_type().0),
        "encoded with the wrong message number"
    );
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
        for name in ["auth-pk-ok", "auth-success-then-more", "auth-no-publickey"] {
            let r = report(name);
            assert!(r.failed && !r.authenticated, "{name}: {r:?}");
        }
    }
}
