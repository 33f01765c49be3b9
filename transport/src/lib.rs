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
//! The server's host key is proven by its signature over the exchange hash before the
//! application sees it; with a certificate host key algorithm (`*-cert-v01@openssh.com`,
//! [`hostkey::HostKeyAlgorithm`]) K_S is an OpenSSH certificate ([`cert`]), whose certified
//! key signs, and whose authority the application judges.
//!
//! No sockets, no clock, no global randomness: time is passed to `handle_timeout`, random bytes
//! come from an injected [`random::SecureRandom`].
//!
//! A driver owns the socket; the transport only sees bytes and the time:
//!
//! ```
//! use std::time::Instant;
//! use ssh_transport::random::OsRandom;
//! use ssh_transport::{ClientConfig, ClientTransport};
//!
//! let mut t = ClientTransport::new(ClientConfig::default(), Box::new(OsRandom), Instant::now());
//! // Our version line and first KEXINIT are queued at once: write them to the socket.
//! assert!(t.output().starts_with(b"SSH-2.0-"));
//! let written = t.output().len();
//! t.consume_output(written);
//! // Whatever the socket reads goes in; events (host key to verify, payloads) come out.
//! t.handle_input(b"SSH-2.0-OpenSSH_9.6\r\n");
//! assert!(t.poll_event()?.is_none()); // the version line read; waiting for the KEXINIT
//! assert_eq!(t.server_version().as_deref(), Some("SSH-2.0-OpenSSH_9.6"));
//! # Ok::<(), ssh_transport::Error>(())
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

pub mod cert;
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

pub use client::{ClientConfig, ClientTransport, Event, KexWork, KexWorkDone, MAX_PENDING_OUTPUT};
pub use error::Error;
pub use kex::PreparedKex;

#[cfg(any(test, feature = "test-server"))]
pub mod server;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cert;
#[cfg(test)]
mod tests_ciphers;
#[cfg(test)]
mod tests_kex;
