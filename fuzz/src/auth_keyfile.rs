//! Private key files: `ssh_auth::PrivateKey::from_file_contents`, and
//! `from_file_contents_with_passphrase_limited` with the passphrase `scripts/fuzz` gives its
//! encrypted corpus keys.
//!
//! Input: the file's bytes. Both loads run. Properties: without a passphrase the answer is never
//! "wrong passphrase", and a key that loads was not encrypted; with one it is never "passphrase
//! required"; a file that is not encrypted gives the same answer either way. A key that loads
//! must sign with each algorithm it claims, and each signature must verify with its public key
//! (where ring can verify: RSA up to 8192 bits); its public key blob must decode to itself; its
//! comment must be sanitized (no control character but tab); and it must survive being
//! written in OpenSSH's format and read back.
//!
//! The passphrase derivation is bounded far below the defaults (a few bcrypt rounds, PBKDF2 at
//! OpenSSL's default 2048 iterations, tiny scrypt) so that each input stays fast; files asking
//! for more are refused before any work, which is itself a path under test.

use ssh_auth::{KdfLimits, KeyFileError, PrivateKey, is_encrypted};
use ssh_transport::hostkey::PublicKey;

/// The passphrase of the encrypted key files `scripts/fuzz` writes into the corpus.
pub const PASSPHRASE: &[u8] = b"passphrase";

/// The bounds the harness loads with.
pub fn limits() -> KdfLimits {
    let mut limits = KdfLimits::default();
    limits.bcrypt_rounds = 2;
    limits.pbkdf2_iterations = 2048;
    limits.scrypt_memory = 1 << 20;
    limits.scrypt_work = 1 << 13;
    limits
}

/// Both loads, without and with the passphrase.
pub fn load_both(
    data: &[u8],
) -> (
    Result<PrivateKey, KeyFileError>,
    Result<PrivateKey, KeyFileError>,
) {
    (
        PrivateKey::from_file_contents(data),
        PrivateKey::from_file_contents_with_passphrase_limited(data, PASSPHRASE, &limits()),
    )
}

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    let encrypted = is_encrypted(data);
    let (plain, with) = load_both(data);
    if let Err(KeyFileError::WrongPassphrase) = &plain {
        panic!("no passphrase was given, yet it is called wrong");
    }
    if let Err(KeyFileError::PassphraseRequired) = &with {
        panic!("a passphrase was given, yet one is called required");
    }
    if plain.is_ok() {
        assert!(!encrypted, "an encrypted key loaded without its passphrase");
    }
    if !encrypted {
        match (&plain, &with) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.public_key(), b.public_key());
                assert_eq!(a.comment(), b.comment());
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "the passphrase changed the error"),
            (a, b) => panic!("the passphrase changed the outcome: {a:?} / {b:?}"),
        }
    }
    for key in [plain, with].into_iter().flatten() {
        check_key(&key);
    }
}

fn check_key(key: &PrivateKey) {
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
        if public.rsa_bits() > 8192 {
            continue;
        }
        if let Err(e) = public.verify(alg, b"data to sign", &signature) {
            panic!(
                "{} signature of a loaded key does not verify: {e}",
                alg.name()
            );
        }
    }
    let written = match key.to_openssh_file(key.comment()) {
        Ok(text) => text,
        Err(e) => panic!("a loaded key cannot be written: {e}"),
    };
    match PrivateKey::from_file_contents(written.as_bytes()) {
        Ok(again) => {
            assert_eq!(again.public_key(), public, "the written key is another key");
            assert_eq!(again.comment(), key.comment(), "the comment changed");
        }
        Err(e) => panic!("a written key does not load again: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Encrypted keys as `scripts/fuzz` writes them load through the harness's passphrase and
    /// limits, so the fuzzer starts inside the decryption paths.
    #[test]
    fn encrypted_corpus_keys_decrypt_within_the_harness_limits() {
        let dir = std::env::temp_dir().join(format!("auth-keyfile-harness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases: &[(&str, &[&str])] = &[
            ("openssh", &["-t", "ed25519", "-a", "1"]),
            (
                "gcm",
                &["-t", "ecdsa", "-a", "1", "-Z", "aes256-gcm@openssh.com"],
            ),
            ("pem", &["-t", "rsa", "-b", "2048", "-m", "PEM"]),
            ("pkcs8", &["-t", "ecdsa", "-m", "PKCS8"]),
        ];
        for (name, args) in cases {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("pub"));
            let status = Command::new("ssh-keygen")
                .args(["-q", "-N", "passphrase"])
                .args(*args)
                .arg("-f")
                .arg(&path)
                .status()
                .expect("ssh-keygen must be installed (scripts/fuzz installs it)");
            assert!(status.success(), "{name}");
            let data = std::fs::read(&path).unwrap();
            let (plain, with) = load_both(&data);
            assert_eq!(
                plain.err(),
                Some(KeyFileError::PassphraseRequired),
                "{name}"
            );
            assert!(with.is_ok(), "{name}: {with:?}");
            run(&data);
        }
        // ssh-keygen's default of 16 bcrypt rounds is above the harness's bound.
        let path = dir.join("rounds16");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(path.with_extension("pub"));
        let status = Command::new("ssh-keygen")
            .args(["-q", "-N", "passphrase", "-t", "ed25519", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let data = std::fs::read(&path).unwrap();
        assert!(matches!(
            load_both(&data).1,
            Err(KeyFileError::KdfTooCostly(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fixture_keys_pass_the_harness() {
        for text in [
            include_str!("../../auth/testdata/ed25519"),
            include_str!("../../auth/testdata/rsa2048"),
            include_str!("../../auth/testdata/rsa2048.pem"),
            include_str!("../../auth/testdata/ecdsa-p256"),
            include_str!("../../auth/testdata/ed25519-passphrase"),
        ] {
            run(text.as_bytes());
        }
    }
}
