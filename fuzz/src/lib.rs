//! Fuzz harnesses for every parser that reads bytes from a server, a file or a user.
//!
//! ```text
//!  libFuzzer input ──> fuzz_targets/<name>.rs (one line) ──> <name>::run(&[u8])
//!                          │  the first bytes choose modes, chunk sizes and operations (Input)
//!                          v
//!                      the crate's public API ──> properties checked with assert!
//!                          (round trips, sticky errors, bounded buffers, nothing delivered
//!                           that was not sent)
//! ```
//!
//! The harnesses live in this library rather than in the target files so that they can be
//! unit-tested on the stable toolchain (`cargo test --manifest-path fuzz/Cargo.toml`) and so
//! that `seeds` can build its inputs with the same fixtures. A harness panics only when a
//! property of the code under test is broken; any error the code returns is a normal outcome.
#![forbid(unsafe_code)]

pub mod auth_agent;
pub mod auth_certificate;
pub mod auth_keyfile;
pub mod auth_messages;
pub mod cli_args;
pub mod connection_messages;
pub mod fixtures;
pub mod fleet_config;
pub mod input;
pub mod kex_guess_file;
pub mod kex_replies;
pub mod known_hosts;
pub mod krl;
pub mod mux_messages;
pub mod probe_replies;
pub mod seeds;
pub mod socks_handshake;
pub mod ssh_config;
pub mod transport_client;
pub mod transport_deframer;
pub mod transport_messages;

/// A harness: takes one fuzz input, panics only on a broken property.
pub type Harness = fn(&[u8]);

/// Every fuzz target, by the name `cargo fuzz` knows it under.
pub const TARGETS: &[(&str, Harness)] = &[
    ("transport_deframer", transport_deframer::run),
    ("transport_messages", transport_messages::run),
    ("transport_client", transport_client::run),
    ("auth_messages", auth_messages::run),
    ("auth_keyfile", auth_keyfile::run),
    ("auth_certificate", auth_certificate::run),
    ("auth_agent", auth_agent::run),
    ("connection_messages", connection_messages::run),
    ("known_hosts", known_hosts::run),
    ("krl", krl::run),
    ("cli_args", cli_args::run),
    ("kex_replies", kex_replies::run),
    ("probe_replies", probe_replies::run),
    ("fleet_config", fleet_config::run),
    ("ssh_config", ssh_config::run),
    ("kex_guess_file", kex_guess_file::run),
    ("socks_handshake", socks_handshake::run),
    ("mux_messages", mux_messages::run),
];
