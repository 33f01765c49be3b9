//! Test support: a throwaway lab of real servers on loopback.
//!
//! ```text
//!  test / demo / bench
//!     |  starts                                     all on 127.0.0.1, free ports
//!     v
//!  client (forwarder or ssh -N -L) --SSH--> Sshd (real sshd, temp config + keys)
//!     ^ local port                              | direct-tcpip
//!     |                                         v
//!  psql / pgbench / transfer helpers       Postgres | EchoServer | SinkServer | SourceServer
//! ```
//!
//! Every server lives in its own temp dir and is killed, with everything it forked, when its
//! handle drops, which also happens when a test panics. Every wait is bounded and fails the
//! test with what did not come up and the tail of the relevant log. Failures to set up the lab
//! panic: this crate is for tests, where a panic with a clear message is the error report.
//!
//! The lab needs the real tools: `ssh`, `ssh-keygen`, `sshd` (Debian package
//! `openssh-server`), and PostgreSQL 15's `initdb`, `postgres`, `pg_ctl`, `psql`, `pgbench`.
//! As root, PostgreSQL runs as the system user [`postgres::LAB_OS_USER`] (created on first
//! use), since it refuses to run as root.
//!
//! The `forwarder` the integration tests run is this package's `lab-forwarder` bin: the
//! forwarder's own `main.rs`, built by cargo before it runs these tests, so a test never runs
//! a stale or missing binary (see [`forwarder_binary`]).
#![forbid(unsafe_code)]

pub mod asyncssh;
pub mod check;
pub mod client;
pub mod dropbear;
pub mod fleet;
pub mod keys;
mod lab_server;
pub mod mariadb;
pub mod net;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod servers;
pub mod socks;
pub mod sshd;
mod tls;

pub use client::{
    ClientKind, Forward, KEX_COMPLETE, Tunnel, TunnelBuilder, forwarder_binary, kex_guesses,
    kex_prepared, openssh_binary,
};
pub use keys::{CertAuthority, KeyFormat, KeyKind, UserKey};
pub use mariadb::Mariadb;
pub use net::{free_port, port_listening};
pub use postgres::{Postgres, expected_customers, psql, try_psql};
pub use servers::{
    CountingProxy, EchoServer, Pattern, SinkResult, SinkServer, SourceServer, Transfer, download,
    echo_one_byte, echo_round_trip, upload,
};
pub use sshd::{HostKey, Sshd, SshdBuilder, known_hosts_line};
