//! SSH user authentication (RFC 4252, RFC 8332) as a sans-IO state machine, and the user keys
//! it signs with.
//!
//! ```text
//!  key file bytes ──> PrivateKey::from_file_contents ──> Identity { key, source } ─┐
//!                                                                                  v
//!  router: msg 6, 50..=79 ──> ClientAuth::handle_payload(payload, AuthContext) ──> decode wholly
//!      (session id, server-sig-algs) ─────────────┘          │
//!                                                            ├─> PayloadSink: SERVICE_REQUEST,
//!                                                            │     signed USERAUTH_REQUESTs
//!                                                            └─> poll_event: Banner (sanitized),
//!                                                                  Attempt, Skipped, Success
//! ```
//!
//! Nothing here touches a socket or a file: callers read key files and pass their bytes, and
//! the transport passes payloads in and takes payloads out. Signing uses ring only (RSA with
//! `rsa-sha2-512` / `rsa-sha2-256`, never SHA-1; Ed25519).
//!
//! Entry points for fuzzing: [`PrivateKey::from_file_contents`] and
//! [`msg::decode_server_message`].
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod client;
mod error;
pub mod keys;
pub mod msg;

pub use client::{AuthContext, AuthEvent, ClientAuth, Identity};
pub use error::{AuthError, KeyFileError, KeyReport, Refusal, SignError, SkipReason};
pub use keys::{KdfLimits, PrivateKey, check_key_file_permissions, is_encrypted};
pub use msg::decode_server_message;
