//! known_hosts files: `forwarder::known_hosts::KnownHosts::parse`, then `check` and
//! `known_key_types` for fixed hosts and keys (see `fixtures`).
//!
//! Input: the file's bytes, read as `load` reads them (lossy UTF-8). Beside no panic: every
//! warning names a line of the file; a `Known` or `Revoked` answer names a line that
//! mentions the key; and after appending the line `entry_line` makes for a host and key
//! (plain or hashed), that key is `Known` for that host (or `Revoked`, if the fuzzed text
//! revokes it).

use std::path::Path;

use forwarder::known_hosts::{HostKeyStatus, KnownHosts, entry_line};

use crate::fixtures::{HOSTS, host_keys};

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let origin = Path::new("known_hosts");
    let (known, warnings) = KnownHosts::parse(&text, origin);
    let lines = text.split('\n').count();
    for w in &warnings {
        assert!(
            w.line >= 1 && w.line <= lines,
            "warning for line {} of {lines}",
            w.line
        );
        assert_eq!(w.file, origin);
    }
    assert!(
        known.len() <= lines,
        "{} entries from {lines} lines",
        known.len()
    );

    for &(host, port) in HOSTS {
        for key in host_keys() {
            match known.check(host, port, key) {
                HostKeyStatus::Known { line, .. } | HostKeyStatus::Revoked { line, .. } => {
                    assert!(
                        line >= 1 && line <= lines,
                        "answer names line {line} of {lines}"
                    );
                }
                HostKeyStatus::Changed { expected } => {
                    assert!(!expected.is_empty(), "Changed with no line");
                }
                HostKeyStatus::Unknown { .. } => {}
                // Only the process's memory of accepted keys answers these, never a file.
                other @ (HostKeyStatus::AcceptedEarlier
                | HostKeyStatus::ChangedSinceAccepted { .. }) => {
                    panic!("a lookup in the files answered {other:?}")
                }
            }
        }
        let _ = known.known_key_types(host, port);
    }

    // What we would record must be found again, whatever else the file holds.
    let pick = data.first().copied().unwrap_or(0);
    let (host, port) = HOSTS[usize::from(pick) % HOSTS.len()];
    let key = &host_keys()[usize::from(pick >> 2) % host_keys().len()];
    let hashed = pick & 0x10 != 0;
    let line = entry_line(host, port, key, hashed, &[pick; 20]);
    let mut appended = text.into_owned();
    if !appended.is_empty() && !appended.ends_with('\n') {
        appended.push('\n');
    }
    appended.push_str(&line);
    appended.push('\n');
    let (known, _) = KnownHosts::parse(&appended, origin);
    match known.check(host, port, key) {
        HostKeyStatus::Known { .. } | HostKeyStatus::Revoked { .. } => {}
        other => panic!("{line:?} was appended but {host}:{port} is {other:?}"),
    }
}
