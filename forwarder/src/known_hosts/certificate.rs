//! Host certificates judged against `@cert-authority` and `@revoked` lines, as OpenSSH's
//! client judges them (sshconnect.c `check_host_key`, hostfile.c
//! `check_hostkeys_by_key_or_type` and `check_key_not_revoked`, sshkey.c
//! `sshkey_cert_check_host`).
//!
//! ```text
//!  certificate ──> @revoked line for its key or its authority's?   CertificateRevoked (no fallback)
//!      ──> @cert-authority line for the host with its authority's key?
//!            no ──> CertificateRefused { why: UnknownAuthority, plain }
//!      ──> host certificate, valid now, names the host among its principals, no critical
//!          options, authority signature not SHA-1?
//!            no ──> CertificateRefused { why, plain }
//!            yes ─> CertificateAccepted (never recorded)
//!  plain = the certificate's key looked up as an ordinary key (KnownHosts::check)
//! ```
//!
//! The lines are those for `host` or `[host]:port`; on another port than 22, when no
//! `@cert-authority` line names `[host]:port`, those for `host` too, as ssh looks "without
//! port identifier" (and `@revoked` lines for either name count, as for plain keys).

use core::fmt;

use ssh_transport::cert::{CERT_TYPE_HOST, Certificate, Validity, utc};
use ssh_transport::hostkey::SignatureAlgorithm;

use super::pattern::glob_match;
use super::{Entry, HostKeyStatus, KnownHosts, Marker, Mismatch, lookup_name};

/// Why a host certificate was not accepted; the certificate's key was then checked as an
/// ordinary host key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateRefusal {
    /// No `@cert-authority` line for the host lists the certificate's authority.
    UnknownAuthority {
        /// The authority's fingerprint.
        ca_fingerprint: String,
        /// The name the lines were looked up under (`host` or `[host]:port`).
        lookup: String,
        /// The `@cert-authority` lines that do name the host, with other keys.
        other_authorities: Vec<Mismatch>,
    },
    /// The authority's signature is one not accepted for host certificates: `ssh-rsa`
    /// (SHA-1), as OpenSSH's default CASignatureAlgorithms, or one by a key this program
    /// cannot verify with (`None`).
    CaSignatureAlgorithm {
        /// The signature's algorithm, when it was verified.
        algorithm: Option<&'static str>,
    },
    /// A user certificate (or another type) presented as a host's.
    NotAHostCertificate {
        /// Its type field.
        cert_type: u32,
    },
    /// Valid only from a later time.
    NotYetValid {
        /// Seconds since the Unix epoch.
        valid_after: u64,
    },
    /// No longer valid.
    Expired {
        /// Seconds since the Unix epoch.
        valid_before: u64,
    },
    /// The certificate names no hosts ("Certificate lacks principal list").
    NoPrincipals,
    /// The host's name is not among its principals.
    PrincipalMismatch {
        /// The principals (sanitized).
        principals: Vec<String>,
        /// The name looked for: HostKeyAlias, or the host name.
        name: String,
    },
    /// It has critical options, none of which a host certificate may have.
    CriticalOptions {
        /// Their names.
        names: Vec<String>,
    },
}

/// Principals shown in a message, at most this many.
const SHOWN_PRINCIPALS: usize = 8;

impl fmt::Display for CertificateRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownAuthority {
                ca_fingerprint,
                lookup,
                other_authorities,
            } => {
                write!(
                    f,
                    "the host certificate is signed by CA {ca_fingerprint}, which no \
                     @cert-authority line for {lookup} lists"
                )?;
                if !other_authorities.is_empty() {
                    let lines: Vec<String> = other_authorities
                        .iter()
                        .map(|m| {
                            format!(
                                "{} (line {} of {})",
                                m.fingerprint,
                                m.line,
                                m.file.display()
                            )
                        })
                        .collect();
                    write!(f, " (the host's CAs are {})", lines.join(", "))?;
                }
                Ok(())
            }
            Self::CaSignatureAlgorithm {
                algorithm: Some(alg),
            } => write!(
                f,
                "the host certificate's CA signature is {alg}, which is not accepted for host \
                 certificates (SHA-1)"
            ),
            Self::CaSignatureAlgorithm { algorithm: None } => f.write_str(
                "the host certificate's CA key is of a kind whose signature cannot be checked \
                 here",
            ),
            Self::NotAHostCertificate { cert_type } => write!(
                f,
                "the certificate the server presented is not a host certificate (its type is \
                 {cert_type}; {CERT_TYPE_HOST} is a host certificate)"
            ),
            Self::NotYetValid { valid_after } => write!(
                f,
                "the host certificate is not valid yet: valid from {}",
                utc(*valid_after)
            ),
            Self::Expired { valid_before } => {
                write!(f, "the host certificate expired on {}", utc(*valid_before))
            }
            Self::NoPrincipals => {
                f.write_str("the host certificate lacks a principal list (it names no host names)")
            }
            Self::PrincipalMismatch { principals, name } => {
                let mut shown: Vec<&str> = principals
                    .iter()
                    .take(SHOWN_PRINCIPALS)
                    .map(String::as_str)
                    .collect();
                if principals.len() > SHOWN_PRINCIPALS {
                    shown.push("...");
                }
                write!(
                    f,
                    "the host certificate names principals [{}], not `{name}`",
                    shown.join(", ")
                )
            }
            Self::CriticalOptions { names } => write!(
                f,
                "the host certificate has critical options ({}), which host certificates do \
                 not support",
                names.join(", ")
            ),
        }
    }
}

impl CertificateRefusal {
    /// What the person reading the refusal can do about it.
    pub fn remedy(&self) -> &'static str {
        match self {
            Self::UnknownAuthority { .. } => {
                "if the server's admin confirms that CA, add a @cert-authority line for the host \
                 with its public key"
            }
            Self::CaSignatureAlgorithm { .. } => {
                "ask the server's admin to sign the host certificate again with an Ed25519, \
                 ECDSA or RSA (rsa-sha2-512) CA key"
            }
            Self::NotAHostCertificate { .. } => {
                "ask the server's admin to sign the host key with ssh-keygen -s ... -h"
            }
            Self::NotYetValid { .. } => "check this machine's clock, or wait until it is valid",
            Self::Expired { .. } => {
                "ask the server's admin to renew the host certificate (ssh-keygen -s ... -h -V)"
            }
            Self::NoPrincipals | Self::PrincipalMismatch { .. } => {
                "connect with a name the certificate names (or set HostKeyAlias to one), or ask \
                 the server's admin to add this name with ssh-keygen -s ... -h -n"
            }
            Self::CriticalOptions { .. } => {
                "ask the server's admin to sign the host certificate without critical options"
            }
        }
    }
}

impl KnownHosts {
    /// Judges the host certificate `cert` the server `host`/`port` presented, at `now`
    /// (seconds since the Unix epoch). `principal` is the name the certificate must name:
    /// HostKeyAlias when one is set, else the host name (without `[ ]:port`). A certificate
    /// not accepted for any reason but revocation leaves the answer to its plain key
    /// ([`HostKeyStatus::CertificateRefused`]); a revoked one is refused outright.
    pub fn check_certificate(
        &self,
        host: &str,
        port: u16,
        principal: &str,
        cert: &Certificate,
        now: u64,
    ) -> HostKeyStatus {
        let names = if port == 22 {
            vec![lookup_name(host, port)]
        } else {
            vec![lookup_name(host, port), lookup_name(host, 22)]
        };
        let for_host = |e: &&Entry| names.iter().any(|n| e.hosts.matches(n));
        let key = cert.public_key();
        if let Some((e, authority)) = self.entries.iter().filter(for_host).find_map(|e| {
            if e.marker != Marker::Revoked {
                None
            } else if e.blob == key.blob() {
                Some((e, false))
            } else if e.blob == cert.ca_key() {
                Some((e, true))
            } else {
                None
            }
        }) {
            return HostKeyStatus::CertificateRevoked {
                file: self.path(e),
                line: e.line,
                authority,
                fingerprint: if authority {
                    cert.ca_fingerprint().to_owned()
                } else {
                    key.fingerprint()
                },
            };
        }
        let refused = |why: CertificateRefusal| HostKeyStatus::CertificateRefused {
            why,
            plain: Box::new(self.check(host, port, key)),
        };
        // The authorities for `[host]:port`, else for `host`.
        let mut lookup = String::new();
        let mut authorities: Vec<&Entry> = Vec::new();
        for name in &names {
            authorities = self
                .entries
                .iter()
                .filter(|e| e.marker == Marker::CertAuthority && e.hosts.matches(name))
                .collect();
            lookup.clone_from(name);
            if !authorities.is_empty() {
                break;
            }
        }
        let Some(ca) = authorities.iter().find(|e| e.blob == cert.ca_key()) else {
            return refused(CertificateRefusal::UnknownAuthority {
                ca_fingerprint: cert.ca_fingerprint().to_owned(),
                lookup: names.first().cloned().unwrap_or_default(),
                other_authorities: authorities.iter().map(|e| self.mismatch(e)).collect(),
            });
        };
        if let Err(why) = check_host_certificate(cert, principal, now) {
            return refused(why);
        }
        HostKeyStatus::CertificateAccepted {
            file: self.path(ca),
            line: ca.line,
            ca_fingerprint: cert.ca_fingerprint().to_owned(),
            key_id: cert.key_id().to_owned(),
            serial: cert.serial(),
            valid_before: cert.valid_before(),
        }
    }

    /// Whether an `@cert-authority` line names the host (under `[host]:port`, or `host`
    /// where [`Self::check_certificate`] looks there too): then the certificate host key
    /// algorithms go first, as OpenSSH orders them.
    pub fn has_cert_authority(&self, host: &str, port: u16) -> bool {
        let mut names = vec![lookup_name(host, port)];
        if port != 22 {
            names.push(lookup_name(host, 22));
        }
        self.entries
            .iter()
            .any(|e| e.marker == Marker::CertAuthority && names.iter().any(|n| e.hosts.matches(n)))
    }
}

/// OpenSSH's `sshkey_cert_check_host` with its default CASignatureAlgorithms: a host
/// certificate, valid at `now`, naming `principal` (patterns allowed), with no critical
/// options, its authority's signature checked and not SHA-1.
fn check_host_certificate(
    cert: &Certificate,
    principal: &str,
    now: u64,
) -> Result<(), CertificateRefusal> {
    // Fields whose signature could not be checked say nothing.
    if cert.ca_signature_algorithm().is_none() {
        return Err(CertificateRefusal::CaSignatureAlgorithm { algorithm: None });
    }
    if cert.cert_type() != CERT_TYPE_HOST {
        return Err(CertificateRefusal::NotAHostCertificate {
            cert_type: cert.cert_type(),
        });
    }
    match cert.validity_at(now) {
        Validity::Valid => {}
        Validity::NotYetValid => {
            return Err(CertificateRefusal::NotYetValid {
                valid_after: cert.valid_after(),
            });
        }
        Validity::Expired => {
            return Err(CertificateRefusal::Expired {
                valid_before: cert.valid_before(),
            });
        }
    }
    if cert.principals().is_empty() {
        return Err(CertificateRefusal::NoPrincipals);
    }
    if !cert
        .principals()
        .iter()
        .any(|p| glob_match(p.as_bytes(), principal.as_bytes()))
    {
        return Err(CertificateRefusal::PrincipalMismatch {
            principals: cert.principals().to_vec(),
            name: ssh_transport::text::sanitize(principal.as_bytes(), false, 300),
        });
    }
    if !cert.critical_options().is_empty() {
        return Err(CertificateRefusal::CriticalOptions {
            names: cert.critical_options().to_vec(),
        });
    }
    if cert.ca_signature_algorithm() == Some(SignatureAlgorithm::RsaSha1) {
        return Err(CertificateRefusal::CaSignatureAlgorithm {
            algorithm: Some(SignatureAlgorithm::RsaSha1.name()),
        });
    }
    Ok(())
}
