//! OpenSSH user certificates (OpenSSH's PROTOCOL.certkeys): a user's public key signed by a
//! certificate authority the server trusts (`TrustedUserCAKeys`), so the server needs no
//! `authorized_keys` line for the key.
//!
//! ```text
//!  id_ed25519-cert.pub ──> Certificate::from_openssh_line ──> from_blob: every field read and
//!       checked, the embedded key rebuilt as a plain key blob, trailing bytes refused
//!                                        │
//!  Identity::with_certificates(key, [cert]) ──> offered as ssh-ed25519-cert-v01@openssh.com
//!       (the certificate blob as the public key, signed by the user's own private key)
//! ```
//!
//! The parser lives in the transport crate ([`ssh_transport::cert`]), which reads host
//! certificates with it too; this module is where authentication finds it. Whether to trust
//! the authority is the server's decision: the client does not know it. The client checks
//! what it needs to offer the certificate sensibly: that it is a user certificate for a key
//! type it can sign with, whose key is the private key's, and whether it is valid now.

pub use ssh_transport::cert::{
    CERT_TYPE_HOST, CERT_TYPE_USER, CertError, Certificate, MAX_CERTIFICATE_LEN, MAX_PRINCIPALS,
    Validity, certificate_algorithm_from_name, certificate_algorithm_name, certificate_type_name,
    describe_validity, utc,
};

#[cfg(test)]
mod tests;
