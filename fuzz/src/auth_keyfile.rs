//! Private key files: `ssh_auth::PrivateKey::from_file_contents`.
//!
//! Input: the file's bytes. A key that loads must sign with each algorithm it claims, and each
//! signature must verify with its public key; its public key blob must decode to itself; its
//! comment must be sanitized (no control character but tab).

use ssh_auth::PrivateKey;
use ssh_transport::hostkey::PublicKey;

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    let Ok(key) = PrivateKey::from_file_contents(data) else {
        return;
    };
    let public = key.public_key();
    match PublicKey::from_blob(public.blob()) {
        Ok(again) => assert_eq!(&again, public, "public key blob does not round-trip"),
        Err(e) => panic!("a loaded key's public blob does not decode: {e}"),
    }
    assert!(key.fingerprint().starts_with("SHA256:"));
    assert!(
        !key.comment().chars().any(|c| c.is_control() && c != '\t'),
        "comment not sanitized: {:?}",
        key.comment()
    );
    let algorithms = key.signature_algorithms();
    assert!(!algorithms.is_empty(), "a key that cannot sign was loaded");
    for &alg in algorithms {
        assert_eq!(alg.key_type(), public.key_type());
        let signature = match key.sign(alg, b"data to sign") {
            Ok(s) => s,
            Err(e) => panic!("{} signing failed for a loaded key: {e}", alg.name()),
        };
        if let Err(e) = public.verify(alg, b"data to sign", &signature) {
            panic!(
                "{} signature of a loaded key does not verify: {e}",
                alg.name()
            );
        }
    }
}
