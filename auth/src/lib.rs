//! SSH user authentication (RFC 4252, RFC 4256, RFC 8332, OpenSSH certificates) as a sans-IO
//! state machine, the user keys it signs with, and the ssh-agent protocol's codec.
//!
//! ```text
//!  key file bytes ──> PrivateKey::from_file_contents ──> Identity::new(key, source) ──┐
//!  -cert.pub text ──> Certificate::from_openssh_line ──> Identity::certified ─────────┤
//!  agent socket ──agent::AgentResponse──> key blobs ──> Identity::from_agent ─────────┤
//!                                                                                     v
//!  router: msg 6, 50..=79 ──> ClientAuth::handle_payload(payload, AuthContext) ──> decode wholly
//!      (session id, server-sig-algs) ─────────────┘          │
//!  caller: provide_signature / provide_password /            ├─> PayloadSink: SERVICE_REQUEST,
//!          provide_responses ──> ClientAuth ─────────────────┤     USERAUTH_REQUESTs, INFO_RESPONSEs
//!                                                            └─> poll_event: Banner (sanitized),
//!                                                                  Attempt, Query, Skipped,
//!                                                                  SignRequest, PasswordRequest,
//!                                                                  InfoRequest, Success
//! ```
//!
//! Nothing here touches a socket, a file, a terminal or a clock: callers read key files and
//! pass their bytes, talk to the agent with [`agent`]'s codec, answer the machine's requests
//! for signatures, passwords and prompts, and pass the time to check certificates with; the
//! transport passes payloads in and takes payloads out. Keys held here never make SHA-1
//! signatures; RSA uses `rsa-sha2-512` / `rsa-sha2-256`.
//!
//! Entry points for fuzzing: [`PrivateKey::from_file_contents`],
//! [`msg::decode_server_message_for`], [`Certificate::from_blob`] and
//! [`agent::AgentResponse::decode`].
//!
//! The machine asks for the `ssh-userauth` service first; the router passes the server's
//! answers to [`ClientAuth::handle_payload`]:
//!
//! ```
//! use ssh_auth::ClientAuth;
//!
//! let mut auth = ClientAuth::new("analytics".to_owned(), Vec::new());
//! let mut out: Vec<Vec<u8>> = Vec::new(); // the transport's PayloadSink in real use
//! auth.start(&mut out);
//! assert_eq!(out.len(), 1);
//! assert_eq!(out[0][0], 5); // SSH_MSG_SERVICE_REQUEST
//! assert!(out[0].ends_with(b"ssh-userauth"));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod agent;
pub mod cert;
mod client;
mod error;
pub mod keys;
pub mod msg;

pub use cert::{CertError, Certificate};
pub use client::{
    AuthConfig, AuthContext, AuthEvent, ClientAuth, DEFAULT_PUBKEY_ALGORITHMS, Identity,
    InfoRequest, PasswordRequest, Prompt, SUPPORTED_PUBKEY_ALGORITHMS, SignRequest,
    check_certificate,
};
pub use error::{AuthError, KeyFileError, KeyReport, MethodReport, Refusal, SignError, SkipReason};
pub use keys::{KdfLimits, PrivateKey, check_key_file_mode, is_encrypted};
pub use msg::{decode_server_message, decode_server_message_for};
