//! What to do with a lookup result under a StrictHostKeyChecking policy, and the messages a
//! person reads when a host key is refused.

use core::fmt;
use std::path::{Path, PathBuf};

use ssh_transport::hostkey::PublicKey;

use super::{AcceptedKey, CertificateRefusal, HostKeyStatus, Mismatch, Record, lookup_name};
use crate::cli::StrictHostKeyChecking;

/// What the connection should do with the server's host key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on.
    Trusted,
    /// Go on, and record the key: append [`super::entry_line`] to `file` with
    /// [`super::append`], and tell the user with [`added_notice`].
    TrustAndRecord {
        /// The known_hosts file to append to.
        file: PathBuf,
    },
    /// Disconnect and show the error.
    Refused(HostKeyError),
}

/// A host key that was not accepted. The Display text says what happened and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostKeyError {
    /// No key of this type is known for the host.
    Unknown {
        /// `host` or `[host]:port`.
        host: String,
        /// The offered key's type name.
        key_type: String,
        /// The offered key's fingerprint.
        fingerprint: String,
        /// Where the key would be recorded, if anywhere.
        record_file: Option<PathBuf>,
        /// Keys of other types known for the host.
        other_keys: Vec<Mismatch>,
        /// The policy in force.
        policy: StrictHostKeyChecking,
    },
    /// Other keys of the same type are known for the host.
    Changed {
        /// `host` or `[host]:port`.
        host: String,
        /// The offered key's type name.
        key_type: String,
        /// The offered key's fingerprint.
        fingerprint: String,
        /// The lines with the expected keys.
        expected: Vec<Mismatch>,
        /// The policy in force.
        policy: StrictHostKeyChecking,
    },
    /// No known_hosts file lists the host, but this process trusted other keys for it
    /// earlier (keys it could not record, or whose lines are gone): see
    /// [`super::AcceptedKeys`].
    ChangedSinceAccepted {
        /// `host` or `[host]:port`.
        host: String,
        /// The offered key's type name.
        key_type: String,
        /// The offered key's fingerprint.
        fingerprint: String,
        /// The keys trusted earlier.
        accepted: Vec<AcceptedKey>,
    },
    /// The key is marked `@revoked`.
    Revoked {
        /// `host` or `[host]:port`.
        host: String,
        /// The offered key's type name.
        key_type: String,
        /// The offered key's fingerprint.
        fingerprint: String,
        /// The file with the marker.
        file: PathBuf,
        /// The marker's line.
        line: usize,
    },
    /// The host certificate's key or its authority is marked `@revoked`.
    CertificateRevoked {
        /// `host` or `[host]:port`.
        host: String,
        /// Whether the authority's key is the revoked one.
        authority: bool,
        /// The revoked key's fingerprint.
        fingerprint: String,
        /// The file with the marker.
        file: PathBuf,
        /// The marker's line.
        line: usize,
    },
    /// The host certificate was not accepted, and its key, checked as an ordinary host key,
    /// was refused too.
    CertificateRefused {
        /// `host` or `[host]:port`.
        host: String,
        /// Why the certificate was not accepted.
        why: CertificateRefusal,
        /// Why its key was refused.
        plain: Box<HostKeyError>,
    },
}

/// Applies OpenSSH's StrictHostKeyChecking rules, with one deliberate difference: under `no`
/// a changed or revoked key is refused (ssh would connect but turn port forwarding off, which
/// leaves a forwarder nothing to do).
///
/// A key of a type the host has no key of, while keys of other types are known for it, is
/// refused under every policy. ssh counts it as a changed key (any known key of the host that
/// does not match is), so under `no` it too would connect with forwarding off; and
/// `accept-new` records keys only for hosts that are not known at all. Nothing is recorded.
///
/// A host no file lists but for which this process trusted keys earlier
/// ([`super::AcceptedKeys`]) is treated as if those keys' lines were in the file: the same
/// key is trusted, another one is refused as changed.
///
/// A host certificate that was accepted is trusted and never recorded; one whose key or
/// authority is revoked is refused under every policy; one not accepted for another reason
/// is decided by its key as an ordinary host key (what accept-new records is that plain key),
/// and a refusal then says why the certificate was not accepted too.
pub fn decide(
    status: HostKeyStatus,
    policy: StrictHostKeyChecking,
    host: &str,
    port: u16,
    key: &PublicKey,
    record_file: Option<&Path>,
) -> Decision {
    let host_arg = host;
    let host = ssh_transport::text::sanitize(lookup_name(host, port).as_bytes(), false, 300);
    let key_type = key.key_type().name().to_owned();
    let fingerprint = key.fingerprint();
    let record = || match record_file {
        Some(file) => Decision::TrustAndRecord {
            file: file.to_path_buf(),
        },
        None => Decision::Trusted,
    };
    match status {
        HostKeyStatus::Known { .. } | HostKeyStatus::CertificateAccepted { .. } => {
            Decision::Trusted
        }
        HostKeyStatus::CertificateRevoked {
            file,
            line,
            authority,
            fingerprint,
        } => Decision::Refused(HostKeyError::CertificateRevoked {
            host,
            authority,
            fingerprint,
            file,
            line,
        }),
        HostKeyStatus::CertificateRefused { why, plain } => {
            match decide(*plain, policy, host_arg, port, key, record_file) {
                Decision::Refused(e) => Decision::Refused(HostKeyError::CertificateRefused {
                    host,
                    why,
                    plain: Box::new(e),
                }),
                trusted => trusted,
            }
        }
        HostKeyStatus::Revoked { file, line } => Decision::Refused(HostKeyError::Revoked {
            host,
            key_type,
            fingerprint,
            file,
            line,
        }),
        HostKeyStatus::Changed { expected } => Decision::Refused(HostKeyError::Changed {
            host,
            key_type,
            fingerprint,
            expected,
            policy,
        }),
        HostKeyStatus::AcceptedEarlier => Decision::Trusted,
        HostKeyStatus::ChangedSinceAccepted { accepted } => {
            Decision::Refused(HostKeyError::ChangedSinceAccepted {
                host,
                key_type,
                fingerprint,
                accepted,
            })
        }
        HostKeyStatus::Unknown { other_types } => {
            let accept = match policy {
                StrictHostKeyChecking::Yes => false,
                StrictHostKeyChecking::AcceptNew | StrictHostKeyChecking::No => {
                    other_types.is_empty()
                }
            };
            if accept {
                record()
            } else {
                Decision::Refused(HostKeyError::Unknown {
                    host,
                    key_type,
                    fingerprint,
                    record_file: record_file.map(Path::to_path_buf),
                    other_keys: other_types,
                    policy,
                })
            }
        }
    }
}

/// The note printed after a key was recorded.
pub fn added_notice(host: &str, port: u16, key: &PublicKey, file: &Path) -> String {
    format!(
        "added {} key {} for {} to {}",
        key_type_label(key.key_type().name()),
        key.fingerprint(),
        lookup_name(host, port),
        file.display()
    )
}

/// A key type as ssh shows it to people: `ED25519`, `RSA`, `ECDSA`, `DSA`, `ED25519-SK`, ...
pub fn key_type_label(name: &str) -> String {
    let base = name.strip_suffix("-cert-v01@openssh.com");
    let cert = if base.is_some() { "-CERT" } else { "" };
    let base = base.unwrap_or(name);
    let label = match base {
        "ssh-ed25519" => "ED25519".to_owned(),
        "ssh-rsa" | "rsa-sha2-256" | "rsa-sha2-512" => "RSA".to_owned(),
        "ssh-dss" => "DSA".to_owned(),
        "sk-ssh-ed25519@openssh.com" => "ED25519-SK".to_owned(),
        b if b.starts_with("ecdsa-sha2-") => "ECDSA".to_owned(),
        b if b.starts_with("sk-ecdsa-sha2-") => "ECDSA-SK".to_owned(),
        other => ssh_transport::text::sanitize(other.as_bytes(), false, 40).to_ascii_uppercase(),
    };
    label + cert
}

fn line_ref(m: &Mismatch) -> String {
    format!("line {} of {}", m.line, m.file.display())
}

impl fmt::Display for HostKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown {
                host,
                key_type,
                fingerprint,
                record_file,
                other_keys,
                policy,
            } => {
                let label = key_type_label(key_type);
                let target = match record_file {
                    Some(file) => file.display().to_string(),
                    None => "a known_hosts file".to_owned(),
                };
                if other_keys.is_empty() {
                    return write!(
                        f,
                        "host key for {host} is not known: {label} key {fingerprint}; to trust \
                         it, check the fingerprint with the server's admin and run with \
                         -o StrictHostKeyChecking=accept-new, or add it to {target}"
                    );
                }
                let others: Vec<String> = other_keys
                    .iter()
                    .map(|m| {
                        format!(
                            "{} key {} ({})",
                            key_type_label(&m.key_type),
                            m.fingerprint,
                            line_ref(m)
                        )
                    })
                    .collect();
                write!(
                    f,
                    "host key for {host} is not known: the server offered {label} key \
                     {fingerprint}, but only other keys are known for it: {}. The server may \
                     have a new key, or someone may be intercepting the connection",
                    others.join(", ")
                )?;
                match policy {
                    StrictHostKeyChecking::AcceptNew => f.write_str(
                        "; accept-new only records keys for hosts that are not known at all",
                    )?,
                    StrictHostKeyChecking::No => f.write_str(
                        "; StrictHostKeyChecking=no does not accept it either, since ssh counts \
                         a key other than the known ones as a changed key and turns port \
                         forwarding off",
                    )?,
                    StrictHostKeyChecking::Yes => {}
                }
                write!(
                    f,
                    ". If the server's admin confirms the fingerprint, add the key to {target}"
                )
            }
            Self::Changed {
                host,
                key_type,
                fingerprint,
                expected,
                policy,
            } => {
                let label = key_type_label(key_type);
                let lines: Vec<String> = expected
                    .iter()
                    .map(|m| format!("{} ({})", m.fingerprint, line_ref(m)))
                    .collect();
                write!(
                    f,
                    "host key for {host} has CHANGED: the server offered {label} key \
                     {fingerprint}, but the known {label} key is {}. Someone may be \
                     intercepting the connection (man in the middle), or the server's key was \
                     replaced. If the change is expected, ",
                    lines.join(", ")
                )?;
                match expected.as_slice() {
                    [one] => write!(
                        f,
                        "remove {} (ssh-keygen -R '{host}' -f {} does that) and connect again",
                        line_ref(one),
                        one.file.display()
                    )?,
                    _ => write!(
                        f,
                        "remove those lines (ssh-keygen -R '{host}' -f FILE does that) and \
                         connect again"
                    )?,
                }
                if *policy == StrictHostKeyChecking::No {
                    f.write_str(
                        "; StrictHostKeyChecking=no does not override this, since ssh too \
                         turns port forwarding off when a host key changed",
                    )?;
                }
                Ok(())
            }
            Self::ChangedSinceAccepted {
                host,
                key_type,
                fingerprint,
                accepted,
            } => {
                let earlier: Vec<String> = accepted
                    .iter()
                    .map(|a| {
                        let record = match &a.record {
                            Record::In(file) => {
                                format!("recorded in {}, which no longer lists it", file.display())
                            }
                            Record::Failed(file) => {
                                format!("which could not be recorded in {}", file.display())
                            }
                            Record::Nowhere => {
                                "with no known_hosts file to record it in".to_owned()
                            }
                        };
                        format!(
                            "{} key {} ({record})",
                            key_type_label(&a.key_type),
                            a.fingerprint
                        )
                    })
                    .collect();
                let which = if earlier.len() == 1 {
                    "another key"
                } else {
                    "other keys"
                };
                write!(
                    f,
                    "host key for {host} has CHANGED: the server offered {} key {fingerprint}, \
                     but earlier in this run forwarder accepted {which} for it: {}. Someone \
                     may be intercepting the connection (man in the middle), or the server's \
                     key was replaced. If the change is expected, add the server's current key \
                     to a known_hosts file (they are read on every connection) or restart \
                     forwarder",
                    key_type_label(key_type),
                    earlier.join(", ")
                )
            }
            Self::Revoked {
                host,
                key_type,
                fingerprint,
                file,
                line,
            } => write!(
                f,
                "host key for {host} is revoked: the server offered {} key {fingerprint}, \
                 which line {line} of {} marks @revoked; refusing to connect. Ask the \
                 server's admin for the server's current key",
                key_type_label(key_type),
                file.display()
            ),
            Self::CertificateRevoked { .. } | Self::CertificateRefused { .. } => {
                write_certificate_error(f, self)
            }
        }
    }
}

impl std::error::Error for HostKeyError {}

/// The certificate parts of [`HostKeyError`]'s Display.
fn write_certificate_error(f: &mut fmt::Formatter<'_>, e: &HostKeyError) -> fmt::Result {
    match e {
        HostKeyError::CertificateRevoked {
            host,
            authority,
            fingerprint,
            file,
            line,
        } => {
            let what = if *authority {
                "the certificate authority's key"
            } else {
                "the certified key"
            };
            write!(
                f,
                "host certificate for {host} is revoked: {what} {fingerprint} is marked \
                 @revoked on line {line} of {}; refusing to connect (a revoked certificate is \
                 not checked as a plain key). Ask the server's admin for the server's current \
                 host key or certificate",
                file.display()
            )
        }
        HostKeyError::CertificateRefused { host, why, plain } => write!(
            f,
            "host certificate for {host} not accepted: {why} (to trust it, {}); its key was \
             then checked as a plain host key: {plain}",
            why.remedy()
        ),
        _ => Ok(()),
    }
}
