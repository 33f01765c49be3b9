//! The client side of user authentication: public keys only, each signed at once.
//!
//! ```text
//!  start ──> SERVICE_REQUEST "ssh-userauth"
//!  SERVICE_ACCEPT ──> plan: (key, algorithm) pairs the server allows ──> signed USERAUTH_REQUEST
//!  FAILURE ──> next pair ──> ... ──> none left: AuthError::Refused (every key, every reason)
//!  SUCCESS ──> AuthEvent::Success; BANNER ──> AuthEvent::Banner (sanitized)
//! ```
//!
//! Keys loaded from files are signed straight away instead of first asking the server with a
//! PK_OK query: one round trip less per key, and a refused key costs the same either way.

use std::collections::VecDeque;

use ssh_transport::PayloadSink;
use ssh_transport::hostkey::SignatureAlgorithm;
use ssh_transport::text::sanitize;

use crate::error::{AuthError, KeyReport, Refusal, SkipReason};
use crate::keys::PrivateKey;
use crate::msg::{
    AuthMethod, SERVICE_CONNECTION, SERVICE_USERAUTH, ServerMessage, ServiceRequest,
    UserauthFailure, UserauthRequest, decode_server_message, publickey_signed_data,
};

/// Banners longer than this many characters are cut.
const MAX_BANNER_CHARS: usize = 8 * 1024;
/// Method lists are shown to people; longer ones are cut.
const MAX_METHODS_CHARS: usize = 512;
/// Events not yet polled beyond this are dropped (only banners can pile up: a server may send
/// any number of them).
const MAX_PENDING_EVENTS: usize = 64;

/// A key to try, with where it came from for messages.
#[derive(Debug)]
pub struct Identity {
    /// The key.
    pub key: PrivateKey,
    /// Where it came from, e.g. the file path; shown in events and errors.
    pub source: String,
}

/// What the transport knows that authentication needs, passed with every message.
#[derive(Clone, Copy, Debug)]
pub struct AuthContext<'a> {
    /// The session identifier (the first exchange hash).
    pub session_id: &'a [u8],
    /// The `server-sig-algs` extension from the server's EXT_INFO, if it sent one.
    pub server_sig_algs: Option<&'a [String]>,
}

/// What happened, for the caller to show or log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthEvent {
    /// The server's banner, sanitized, to show the user.
    Banner(String),
    /// A signed request was sent with this key and algorithm.
    Attempt {
        /// The identity's source.
        source: String,
        /// The key's fingerprint.
        fingerprint: String,
        /// The signature algorithm.
        algorithm: SignatureAlgorithm,
    },
    /// An identity will not be offered.
    Skipped {
        /// The identity's source.
        source: String,
        /// The key's fingerprint.
        fingerprint: String,
        /// Why.
        reason: SkipReason,
    },
    /// No key could be offered, so a `none` request asks which methods the server allows.
    ProbingMethods,
    /// The server accepted a key but wants another one as well.
    PartialSuccess {
        /// The identity's source.
        source: String,
    },
    /// Authenticated: the connection protocol may start.
    Success,
}

/// One request the plan may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    PublicKey {
        identity: usize,
        algorithm: SignatureAlgorithm,
    },
    /// Ask with method `none`, to learn the allowed methods when no key can be offered.
    Probe,
}

#[derive(Debug)]
enum State {
    /// `start` has not been called.
    Idle,
    ExpectServiceAccept,
    /// A request is out; its answer is a FAILURE or SUCCESS.
    ExpectReply(Step),
    Authenticated,
    Failed(AuthError),
}

/// Client-side user authentication (RFC 4252 with RFC 8332), sans-IO: payloads in through
/// [`ClientAuth::handle_payload`], payloads out through a [`PayloadSink`], events out through
/// [`ClientAuth::poll_event`].
#[derive(Debug)]
pub struct ClientAuth {
    user: String,
    identities: Vec<Identity>,
    /// One per identity, filled in as things happen; becomes the [`Refusal`].
    reports: Vec<KeyReport>,
    plan: VecDeque<Step>,
    state: State,
    events: VecDeque<AuthEvent>,
    server_allows: Option<String>,
}

impl ClientAuth {
    /// Authenticates `user` with `identities`, tried in order.
    pub fn new(user: String, identities: Vec<Identity>) -> Self {
        let reports = identities
            .iter()
            .map(|id| KeyReport {
                source: id.source.clone(),
                fingerprint: id.key.fingerprint(),
                refused_with: Vec::new(),
                accepted_with: None,
                skipped: None,
            })
            .collect();
        Self {
            user,
            identities,
            reports,
            plan: VecDeque::new(),
            state: State::Idle,
            events: VecDeque::new(),
            server_allows: None,
        }
    }

    /// Whether the server accepted us.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated)
    }

    /// The error authentication ended with, if it did.
    pub fn error(&self) -> Option<&AuthError> {
        match &self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// The user name being authenticated.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Sends SSH_MSG_SERVICE_REQUEST "ssh-userauth". Only the first call does anything.
    pub fn start(&mut self, sink: &mut dyn PayloadSink) {
        if matches!(self.state, State::Idle) {
            sink.send_with(&mut |buf| {
                ServiceRequest {
                    service: SERVICE_USERAUTH,
                }
                .encode(buf);
            });
            self.state = State::ExpectServiceAccept;
        }
    }

    /// Takes one payload the router routes to authentication: SERVICE_ACCEPT (6) and
    /// 50..=79. After an error every call returns that error again.
    pub fn handle_payload(
        &mut self,
        payload: &[u8],
        ctx: &AuthContext<'_>,
        sink: &mut dyn PayloadSink,
    ) -> Result<(), AuthError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let result = self.handle(payload, ctx, sink);
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<AuthEvent> {
        self.events.pop_front()
    }

    fn handle(
        &mut self,
        payload: &[u8],
        ctx: &AuthContext<'_>,
        sink: &mut dyn PayloadSink,
    ) -> Result<(), AuthError> {
        let msg = decode_server_message(payload)?;
        let state = core::mem::replace(&mut self.state, State::Idle);
        match (state, msg) {
            (State::Idle, msg) => Err(unexpected(msg, "before authentication started")),
            (State::Authenticated, msg) => Err(unexpected(msg, "after authentication succeeded")),
            (State::Failed(e), _) => Err(e),
            (state, ServerMessage::Banner(banner)) => {
                self.state = state;
                self.push_banner(sanitize(banner.message, true, MAX_BANNER_CHARS));
                Ok(())
            }
            (State::ExpectServiceAccept, ServerMessage::ServiceAccept(accept)) => {
                if accept.service != SERVICE_USERAUTH {
                    return Err(AuthError::Protocol(format!(
                        "the server accepted service {:?} instead of {SERVICE_USERAUTH:?}",
                        sanitize(accept.service.as_bytes(), false, 64)
                    )));
                }
                self.plan_attempts(ctx);
                self.send_next(ctx, sink)
            }
            (State::ExpectReply(_), ServerMessage::Success(_)) => {
                self.state = State::Authenticated;
                self.events.push_back(AuthEvent::Success);
                Ok(())
            }
            (State::ExpectReply(step), ServerMessage::Failure(failure)) => {
                self.handle_failure(step, &failure, ctx, sink)
            }
            (_, msg @ ServerMessage::PkOk(_)) => Err(unexpected(
                msg,
                "although this client never asks whether a key would be accepted",
            )),
            (State::ExpectServiceAccept, msg) => Err(unexpected(
                msg,
                "before the server accepted the ssh-userauth service",
            )),
            (State::ExpectReply(_), msg) => {
                Err(unexpected(msg, "while waiting for the answer to a request"))
            }
        }
    }

    fn push_banner(&mut self, text: String) {
        if self.events.len() < MAX_PENDING_EVENTS {
            self.events.push_back(AuthEvent::Banner(text));
        } else {
            tracing::warn!("dropping a USERAUTH_BANNER: too many events are waiting to be polled");
        }
    }

    /// Decides every request to send, from the keys and the server's `server-sig-algs`.
    fn plan_attempts(&mut self, ctx: &AuthContext<'_>) {
        for index in 0..self.identities.len() {
            let Some(identity) = self.identities.get(index) else {
                continue;
            };
            let offered = identity.key.signature_algorithms();
            let chosen = choose_algorithms(offered, ctx.server_sig_algs);
            if chosen.is_empty() {
                let reason = SkipReason::NoAllowedAlgorithm {
                    key_can_sign: offered,
                };
                self.skip(index, reason);
            }
            self.plan
                .extend(chosen.into_iter().map(|algorithm| Step::PublicKey {
                    identity: index,
                    algorithm,
                }));
        }
        if self.plan.is_empty() {
            self.plan.push_back(Step::Probe);
        }
    }

    fn skip(&mut self, index: usize, reason: SkipReason) {
        if let (Some(report), Some(identity)) =
            (self.reports.get_mut(index), self.identities.get(index))
        {
            self.events.push_back(AuthEvent::Skipped {
                source: identity.source.clone(),
                fingerprint: report.fingerprint.clone(),
                reason: reason.clone(),
            });
            report.skipped = Some(reason);
        }
    }

    /// Sends the next planned request, or gives up when none is left.
    fn send_next(
        &mut self,
        ctx: &AuthContext<'_>,
        sink: &mut dyn PayloadSink,
    ) -> Result<(), AuthError> {
        while let Some(step) = self.plan.pop_front() {
            match step {
                Step::Probe => {
                    let request = UserauthRequest {
                        user: &self.user,
                        service: SERVICE_CONNECTION,
                        method: AuthMethod::None,
                    };
                    sink.send_with(&mut |buf| request.encode(buf));
                    self.events.push_back(AuthEvent::ProbingMethods);
                    self.state = State::ExpectReply(step);
                    return Ok(());
                }
                Step::PublicKey {
                    identity,
                    algorithm,
                } => {
                    let Some(id) = self.identities.get(identity) else {
                        continue;
                    };
                    let blob = id.key.public_key().blob();
                    let data = publickey_signed_data(
                        ctx.session_id,
                        &self.user,
                        SERVICE_CONNECTION,
                        algorithm.name(),
                        blob,
                    );
                    let signature = match id.key.sign(algorithm, &data) {
                        Ok(sig) => sig,
                        Err(e) => {
                            // Only this key is unusable; the others may still work.
                            self.plan.retain(
                                |s| !matches!(s, Step::PublicKey { identity: i, .. } if *i == identity),
                            );
                            self.skip(identity, SkipReason::SignFailed(e));
                            continue;
                        }
                    };
                    let request = UserauthRequest {
                        user: &self.user,
                        service: SERVICE_CONNECTION,
                        method: AuthMethod::PublicKey {
                            algorithm: algorithm.name(),
                            key_blob: blob,
                            signature: Some(&signature),
                        },
                    };
                    sink.send_with(&mut |buf| request.encode(buf));
                    self.events.push_back(AuthEvent::Attempt {
                        source: id.source.clone(),
                        fingerprint: id.key.fingerprint(),
                        algorithm,
                    });
                    self.state = State::ExpectReply(step);
                    return Ok(());
                }
            }
        }
        Err(self.refusal())
    }

    fn handle_failure(
        &mut self,
        step: Step,
        failure: &UserauthFailure<'_>,
        ctx: &AuthContext<'_>,
        sink: &mut dyn PayloadSink,
    ) -> Result<(), AuthError> {
        let methods = sanitize(
            failure.methods.as_str().as_bytes(),
            false,
            MAX_METHODS_CHARS,
        );
        self.server_allows = Some(methods.clone());
        let publickey_allowed = failure.methods.contains(crate::msg::METHOD_PUBLICKEY);
        match step {
            Step::Probe => Err(self.refusal()),
            Step::PublicKey {
                identity,
                algorithm,
            } if failure.partial_success => {
                let source = self
                    .identities
                    .get(identity)
                    .map(|id| id.source.clone())
                    .unwrap_or_default();
                if let Some(report) = self.reports.get_mut(identity) {
                    report.accepted_with = Some(algorithm);
                }
                if !publickey_allowed {
                    let accepted_key = self
                        .reports
                        .get(identity)
                        .map(|r| format!("{} ({})", r.source, r.fingerprint))
                        .unwrap_or_default();
                    return Err(AuthError::OtherMethodRequired {
                        user: self.user.clone(),
                        accepted_key,
                        server_allows: methods,
                    });
                }
                // The server wants a second key (AuthenticationMethods publickey,publickey);
                // this one has already counted, so its other algorithms are pointless.
                self.events.push_back(AuthEvent::PartialSuccess { source });
                self.plan.retain(
                    |s| !matches!(s, Step::PublicKey { identity: i, .. } if *i == identity),
                );
                self.send_next(ctx, sink)
            }
            Step::PublicKey {
                identity,
                algorithm,
            } => {
                if let Some(report) = self.reports.get_mut(identity) {
                    report.refused_with.push(algorithm);
                }
                if publickey_allowed {
                    self.send_next(ctx, sink)
                } else {
                    self.plan.clear();
                    Err(self.refusal())
                }
            }
        }
    }

    /// The error for "nothing more to try", naming every key and what became of it.
    fn refusal(&mut self) -> AuthError {
        for report in &mut self.reports {
            if report.refused_with.is_empty()
                && report.accepted_with.is_none()
                && report.skipped.is_none()
            {
                report.skipped = Some(SkipReason::NotTried);
            }
        }
        AuthError::Refused(Refusal {
            user: self.user.clone(),
            keys: self.reports.clone(),
            server_allows: self.server_allows.clone(),
        })
    }
}

/// The algorithms to try a key with, best first: those the server's `server-sig-algs`
/// lists, or all of the key's when the server sent none. Every listed one is tried, not just
/// the first: OpenSSH servers up to at least 9.2 list every algorithm they know there, even
/// those `PubkeyAcceptedAlgorithms` turns off, so a refusal of `rsa-sha2-512` does not mean
/// `rsa-sha2-256` will be refused too.
fn choose_algorithms(
    offered: &[SignatureAlgorithm],
    server_sig_algs: Option<&[String]>,
) -> Vec<SignatureAlgorithm> {
    // SHA-1 RSA is never offered, whatever the server lists.
    let usable = offered
        .iter()
        .copied()
        .filter(|a| *a != SignatureAlgorithm::RsaSha1);
    match server_sig_algs {
        None => usable.collect(),
        Some(listed) => usable
            .filter(|a| listed.iter().any(|name| name == a.name()))
            .collect(),
    }
}

fn unexpected(msg: ServerMessage<'_>, when: &str) -> AuthError {
    AuthError::Protocol(format!(
        "{} arrived {when}",
        crate::msg::describe(msg.message_type())
    ))
}

#[cfg(test)]
mod tests;
