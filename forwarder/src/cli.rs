//! The OpenSSH-compatible command line.
