//! known_hosts files: `forwarder::known_hosts::KnownHosts::parse`, then `check`,
//! `check_certificate`, `has_cert_authority` and `known_key_types` for fixed hosts, keys and
//! a host certificate (see `fixtures`).
//!
//! Input: the file's bytes, read as `load` reads them (lossy UTF-8). Beside no panic: every
//! warning names a line of the file; a `Known` or `Revoked` answer names a line that
//! mentions the key; a certificate is accepted or revoked by a line of the file, or refused
//! with a plain-key answer from the files; after appending the line `entry_line` makes for a
//! host and key (plain or hashed), that key is `Known` for that host (or `Revoked`, if the
//! fuzzed text revokes it); and after appending a `@cert-authority` line for a host with the
//! certificate's authority, the certificate is accepted for a host it names (or revoked).

use std::path::Path;

use forwarder::known_hosts::{HostKeyStatus, KnownHosts, entry_line, lookup_name};

use crate::fixtures::{CERTIFICATE_NOW, HOSTS, certificate_authority, host_certificate, host_keys};

/// Whether `status` is an answer the files give for a plain key.
fn is_file_answer(status: &HostKeyStatus, lines: usize) -> bool {
    match status {
        HostKeyStatus::Known { line, .. } | HostKeyStatus::Revoked { line, .. } => {
            (1..=lines).contains(line)
        }
        HostKeyStatus::Changed { expected } => !expected.is_empty(),
        HostKeyStatus::Unknown { .. } => true,
        _ => false,
    }
}

/// Judges the fixture certificate for `host`, checking the answer's shape.
fn check_certificate(known: &KnownHosts, host: &str, port: u16, lines: usize) -> HostKeyStatus {
    let status = known.check_certificate(
        host,
        port,
        &host.to_ascii_lowercase(),
        host_certificate(),
        CERTIFICATE_NOW,
    );
    match &status {
        HostKeyStatus::CertificateAccepted { line, .. }
        | HostKeyStatus::CertificateRevoked { line, .. } => {
            assert!(
                (1..=lines).contains(line),
                "certificate answer names line {line} of {lines}"
            );
            assert!(
                known.has_cert_authority(host, port)
                    || matches!(status, HostKeyStatus::CertificateRevoked { .. }),
                "accepted without a @cert-authority line"
            );
        }
        HostKeyStatus::CertificateRefused { plain, .. } => {
            assert!(is_file_answer(plain, lines), "refused, then {plain:?}");
        }
        other => panic!("a certificate was answered {other:?}"),
    }
    status
}

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
                // Only the process's memory of accepted keys answers these, and only a
                // certificate lookup the others.
                other => panic!("a lookup in the files answered {other:?}"),
            }
        }
        let _ = known.known_key_types(host, port);
        check_certificate(&known, host, port, lines);
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

    // An authority listed for the host vouches for a certificate naming it.
    let ca_line = format!(
        "@cert-authority {} {}",
        lookup_name(host, port),
        certificate_authority().to_openssh_line()
    );
    appended.push_str(&ca_line);
    appended.push('\n');
    let (known, _) = KnownHosts::parse(&appended, origin);
    let lines = appended.split('\n').count();
    assert!(
        known.has_cert_authority(host, port),
        "{ca_line:?} was appended"
    );
    let named = host_certificate().principals().iter().any(|p| {
        let host = host.to_ascii_lowercase();
        *p == host || p.strip_prefix('*').is_some_and(|tail| host.ends_with(tail))
    });
    match check_certificate(&known, host, port, lines) {
        HostKeyStatus::CertificateAccepted { .. } | HostKeyStatus::CertificateRevoked { .. } => {}
        other if named => panic!("{ca_line:?} was appended but {host}:{port} is {other:?}"),
        _ => {}
    }
}
