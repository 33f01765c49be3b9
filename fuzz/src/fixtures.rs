//! Fixed keys and names shared by the harnesses and the seed generator, so that seeds can
//! name exactly the keys a harness checks against.

use std::sync::OnceLock;

use ssh_auth::PrivateKey;
use ssh_transport::hostkey::PublicKey;

/// The RSA-2048 key file the auth crate's own tests use (written by ssh-keygen).
pub const RSA2048_FILE: &str = include_str!("../../auth/testdata/rsa2048");

/// The data the verify harness checks signatures over.
pub const SIGNED_DATA: &[u8] = b"exchange hash chosen by the fuzzer";

/// The session identifier the auth harness passes to `ClientAuth`.
pub const SESSION_ID: &[u8] = &[0x5e; 32];

/// The user the auth harness logs in as.
pub const USER: &str = "fuzz";

/// An Ed25519 key from a one-byte seed pattern.
pub fn ed25519(seed: u8) -> PrivateKey {
    match PrivateKey::from_ed25519_seed(&[seed; 32], "fuzz") {
        Ok(key) => key,
        Err(e) => panic!("an Ed25519 seed was refused: {e}"),
    }
}

/// The RSA-2048 fixture key.
pub fn rsa() -> PrivateKey {
    match PrivateKey::from_file_contents(RSA2048_FILE.as_bytes()) {
        Ok(key) => key,
        Err(e) => panic!("the RSA fixture key does not load: {e}"),
    }
}

/// Host keys the known_hosts harness looks up: two Ed25519 keys and the RSA fixture's
/// public key. Built once; public keys are cheap to clone.
pub fn host_keys() -> &'static [PublicKey; 3] {
    static KEYS: OnceLock<[PublicKey; 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            ed25519(1).public_key().clone(),
            ed25519(2).public_key().clone(),
            rsa().public_key().clone(),
        ]
    })
}

/// Hosts the known_hosts harness looks up, with their ports.
pub const HOSTS: &[(&str, u16)] = &[
    ("bastion.example.com", 22),
    ("10.0.0.5", 2222),
    ("::1", 22),
    ("Db.Internal", 2200),
];

/// The seed of the Ed25519 certificate authority that signs [`host_certificate`].
pub const CA_SEED: [u8; 32] = [0xca; 32];

/// The time the known_hosts harness judges certificates at (2025-01-01T00:00:00Z).
pub const CERTIFICATE_NOW: u64 = 1_735_689_600;

/// The host certificate the known_hosts harness judges: the second Ed25519 host key,
/// certified for two of [`HOSTS`] (one by a pattern) and not the others, valid around
/// [`CERTIFICATE_NOW`].
pub fn host_certificate() -> &'static ssh_transport::cert::Certificate {
    static CERT: OnceLock<ssh_transport::cert::Certificate> = OnceLock::new();
    CERT.get_or_init(|| {
        let [_, key, _] = host_keys();
        let mut builder = ssh_transport::server::CertificateBuilder::host(
            key.blob(),
            &["bastion.example.com", "*.internal"],
        );
        builder.valid_after = CERTIFICATE_NOW - 3600;
        builder.valid_before = CERTIFICATE_NOW + 3600;
        match ssh_transport::cert::Certificate::decode(&builder.sign_ed25519(CA_SEED)) {
            Ok(cert) => cert,
            Err(e) => panic!("the fixture host certificate does not decode: {e}"),
        }
    })
}

/// The public key of the authority that signs [`host_certificate`].
pub fn certificate_authority() -> PublicKey {
    ssh_transport::server::ed25519_ca_key(CA_SEED)
}
