//! The tokio driver for the sans-IO SSH cores, and the pieces of the `forwarder` command.
//!
//! ```text
//!  local client ──TCP──> tunnel::serve ──ChannelStream──> driver::Driver ──TCP──> bastion sshd ──> database
//!                                                           │
//!                                         session::Session (transport + auth + connection, sans-IO)
//! ```
#![forbid(unsafe_code)]

pub mod agent;
pub mod algorithms;
pub mod app;
pub mod cli;
pub mod driver;
pub mod files;
pub mod keygen;
pub mod known_hosts;
pub mod prompt;
pub mod session;
pub mod tunnel;
pub mod userauth;
