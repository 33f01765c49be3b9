//! SSH user authentication (RFC 4252) as a sans-IO state machine.
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

mod error;
pub mod keys;

pub use error::{AuthError, KeyFileError, KeyReport, Refusal, SignError, SkipReason};
pub use keys::PrivateKey;
