//! The SSH transport layer (RFC 4253) as a sans-IO state machine.
//!
//! ```text
//!  socket bytes ──> handle_input ──> deframe ─> open in place ─> [inflate, bounded] ─> seq += 1 ──┬─> kex messages (kept here)
//!                                                                                                 └─> poll_event: Payload(&[u8])
//!  send_with(payload) ─> [queued while keys change] ─> [deflate] ─> pad ─> seal in place ─> output() ──> socket
//! ```
//! "Open" and "seal" are one AEAD cipher (AES-GCM, ChaCha20-Poly1305) or AES-CTR with an HMAC,
//! encrypt-then-MAC or encrypt-and-MAC ([`cipher`], [`mac`]); compression ([`compress`]) is
//! off unless configured, and `zlib@openssh.com` waits for [`ClientTransport::auth_succeeded`].
//!
//! No sockets, no clock, no global randomness: time is passed to `handle_timeout`, random bytes
//! come from an injected [`random::SecureRandom`].
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

pub mod hostkey;
pub mod msg;
pub mod random;
pub mod sink;
pub mod text;
pub mod wire;

pub use msg::{DisconnectReason, MessageType};
pub use sink::PayloadSink;
pub mod cipher;
pub mod client;
pub mod compress;
pub mod error;
pub mod kex;
pub mod mac;
pub mod packet;
pub mod version;

pub use client::{ClientConfig, ClientTransport, Event};
pub use error::Error;

#[cfg(any(test, feature = "test-server"))]
pub mod server;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ciphers;
#[cfg(test)]
mod tests_kex;
