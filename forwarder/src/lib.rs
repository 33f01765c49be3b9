//! The tokio driver for the sans-IO SSH cores, and the pieces of the `forwarder` command.
//!
//! ```text
//!  argv ──cli──> Options ──config──> TunnelConfig ─┬─> supervisor::Supervisor (one per session: connect,
//!                                                  │     watch, reconnect with backoff) ──watch──┐
//!                                                  └─> tunnel::Tunnel (owns the listeners)       │
//!                                                                                                ▼
//!  local client ──TCP──> tunnel::serve ──session(wait)──> SessionHandle ──ChannelStream──> driver::Driver ──TCP──> bastion sshd ──> database
//!                                                                                           │
//!                                                  ssh_session::Session (transport + auth + connection, sans-IO)
//!
//!  your code ──dial::Dialer::dial(host, port)──session(wait)──> SessionHandle ──> dial::DialStream (no local port)
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod algorithms;
pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod connect;
pub mod dial;
pub mod driver;
pub mod files;
pub mod fleet;
pub mod keygen;
pub mod known_hosts;
pub mod metrics;
pub mod probe;
pub mod prompt;
pub mod session;
pub mod shard;
pub mod status;
pub mod supervisor;
pub mod tunnel;
pub mod userauth;
