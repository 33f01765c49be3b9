//! OpenSSH known_hosts files.
