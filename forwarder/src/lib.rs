//! The tokio driver for the sans-IO SSH cores, and the pieces of the `forwarder` command.
#![forbid(unsafe_code)]

pub mod cli;
pub mod known_hosts;
