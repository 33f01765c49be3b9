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
//!
//! Used as a library, [`dial::Dialer`] gives streams to hosts behind the bastion, with no
//! local port (see [`dial`] for the details):
//!
//! ```no_run
//! use std::time::Duration;
//! use forwarder::config::TunnelConfig;
//! use forwarder::dial::{DialError, Dialer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = TunnelConfig::builder("bastion.example.com", "analytics")
//!     .identity_file("/etc/service/id_ed25519")
//!     .known_hosts_file("/etc/service/known_hosts")
//!     .build()?;
//! let dialer = Dialer::start(config).await?;
//! match dialer.dial_timeout("db.internal", 5432, Duration::from_secs(10)).await {
//!     // Any client that takes an AsyncRead + AsyncWrite stream, tokio-postgres's
//!     // `Config::connect_raw` for one.
//!     Ok(stream) => drop(stream),
//!     Err(DialError::ChannelRefused { reason, .. }) => eprintln!("refused: {reason}"),
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod agent;
pub mod algorithms;
pub mod app;
#[cfg(unix)]
pub mod background;
pub mod check;
pub mod cli;
pub mod config;
pub mod connect;
#[cfg(unix)]
pub mod control;
pub mod dial;
pub mod driver;
pub mod files;
pub mod fleet;
pub mod forwards;
pub mod kex_memory;
pub mod keygen;
pub mod known_hosts;
pub mod local;
pub mod metrics;
pub mod mux;
pub mod notice;
pub mod probe;
pub mod prompt;
pub mod quickack;
pub mod remote;
pub mod session;
pub mod shard;
pub mod socks;
pub mod status;
pub mod stdio;
pub mod supervisor;
pub mod tunnel;
pub mod userauth;
