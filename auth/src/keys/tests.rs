use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use proptest::prelude::*;
use ssh_transport::hostkey::{KeyType, PublicKey, SignatureAlgorithm};
use ssh_transport::wire::Writer as _;

use super::rsa_key::bit_len;
use super::*;

const ED25519: &str = include_str!("../../testdata/ed25519");
const ED25519_PUB: &str = include_str!("../../testdata/ed25519.pub");
const RSA2048: &str = include_str!("../../testdata/rsa2048");
const RSA2048_PUB: &str = include_str!("../../testdata/rsa2048.pub");
const RSA2048_PEM: &str = include_str!("../../testdata/rsa2048.pem");
const RSA2048_PEM_PUB: &str = include_str!("../../testdata/rsa2048.pem.pub");
const ED25519_PASSPHRASE: &str = include_str!("../../testdata/ed25519-passphrase");
const ECDSA_P256: &str = include_str!("../../testdata/ecdsa-p256");
const RSA16384: &str = include_str!("../../testdata/rsa16384");
const RSA16384_PUB: &str = include_str!("../../testdata/rsa16384.pub");

fn load(text: &str) -> PrivateKey {
    PrivateKey::from_file_contents(text.as_bytes()).unwrap()
}

fn load_err(data: &[u8]) -> KeyFileError {
    PrivateKey::from_file_contents(data).unwrap_err()
}

/// `type base64` of a `.pub` line, without the comment.
fn pub_line(pub_file: &str) -> String {
    pub_file
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Signs with every algorithm the key offers and checks each signature with the transport's
/// verifier, and that a changed message does not verify.
fn assert_signs(key: &PrivateKey) {
    let data = b"session id and request";
    for &alg in key.signature_algorithms() {
        let blob = key.sign(alg, data).unwrap();
        assert_eq!(key.public_key().verify(alg, data, &blob), Ok(()), "{alg}");
        assert!(
            key.public_key().verify(alg, b"other", &blob).is_err(),
            "{alg}"
        );
    }
}

#[test]
fn fixed_ed25519_key_loads_signs_and_matches_its_pub_file() {
    let key = load(ED25519);
    assert_eq!(key.public_key().key_type(), KeyType::Ed25519);
    assert_eq!(key.comment(), "fixture-ed25519");
    assert_eq!(
        key.fingerprint(),
        "SHA256:jFzW/Soy0Z4hFvrj1tZrJeSaKxOx/K6SaN9QrxeKQSw"
    );
    assert_eq!(key.public_key().to_openssh_line(), pub_line(ED25519_PUB));
    assert_eq!(key.signature_algorithms(), &[SignatureAlgorithm::Ed25519]);
    assert_signs(&key);
}

#[test]
fn fixed_rsa_keys_load_sign_and_match_their_pub_files() {
    let key = load(RSA2048);
    assert_eq!(key.comment(), "fixture-rsa-openssh");
    assert_eq!(
        key.fingerprint(),
        "SHA256:ZJjNpBFoq0d0XNz72SjFn3QWqaTOH27eK/s2lg94oW8"
    );
    assert_eq!(key.public_key().to_openssh_line(), pub_line(RSA2048_PUB));
    assert_eq!(
        key.signature_algorithms(),
        &[SignatureAlgorithm::RsaSha512, SignatureAlgorithm::RsaSha256]
    );
    assert_signs(&key);

    let pem = load(RSA2048_PEM);
    assert_eq!(pem.comment(), "");
    assert_eq!(
        pem.fingerprint(),
        "SHA256:o+49XEr0uV/SSQcLbXjG6tey3uslR0VsAxncA+GsPP8"
    );
    assert_eq!(
        pem.public_key().to_openssh_line(),
        pub_line(RSA2048_PEM_PUB)
    );
    assert_signs(&pem);
}

#[test]
fn rsa_signature_is_modulus_sized_and_deterministic() {
    let key = load(RSA2048);
    let a = key.sign(SignatureAlgorithm::RsaSha256, b"m").unwrap();
    let b = key.sign(SignatureAlgorithm::RsaSha256, b"m").unwrap();
    assert_eq!(a, b, "PKCS#1 v1.5 signatures do not depend on the RNG");
    let mut r = ssh_transport::wire::Reader::new(&a);
    assert_eq!(r.utf8().unwrap(), "rsa-sha2-256");
    assert_eq!(r.string().unwrap().len(), 256);
    assert!(r.finish().is_ok());
}

#[test]
fn refuses_algorithms_the_key_cannot_make() {
    let rsa = load(RSA2048);
    for alg in [SignatureAlgorithm::RsaSha1, SignatureAlgorithm::Ed25519] {
        assert_eq!(
            rsa.sign(alg, b"x"),
            Err(SignError::UnsupportedAlgorithm {
                algorithm: alg,
                key_type: KeyType::Rsa
            })
        );
    }
    let ed = load(ED25519);
    assert!(matches!(
        ed.sign(SignatureAlgorithm::RsaSha512, b"x"),
        Err(SignError::UnsupportedAlgorithm { .. })
    ));
}

#[test]
fn debug_shows_no_secret() {
    let key = load(ED25519);
    let text = format!("{key:?}");
    assert_eq!(
        text,
        "PrivateKey { type: \"ssh-ed25519\", fingerprint: \"SHA256:jFzW/Soy0Z4hFvrj1tZrJeSaKxOx/K6SaN9QrxeKQSw\", comment: \"fixture-ed25519\", .. }"
    );
}

#[test]
fn ed25519_from_seed_round_trips_through_signing() {
    let key = PrivateKey::from_ed25519_seed(&[42; 32], "test").unwrap();
    assert_eq!(key.comment(), "test");
    assert_signs(&key);
}

#[test]
fn passphrase_protected_fixture_needs_and_takes_its_passphrase() {
    assert!(is_encrypted(ED25519_PASSPHRASE.as_bytes()));
    assert!(!is_encrypted(ED25519.as_bytes()));
    assert_eq!(
        load_err(ED25519_PASSPHRASE.as_bytes()),
        KeyFileError::PassphraseRequired
    );
    let wrong =
        PrivateKey::from_file_contents_with_passphrase(ED25519_PASSPHRASE.as_bytes(), b"password2");
    assert_eq!(wrong.unwrap_err(), KeyFileError::WrongPassphrase);
    let empty = PrivateKey::from_file_contents_with_passphrase(ED25519_PASSPHRASE.as_bytes(), b"");
    assert_eq!(empty.unwrap_err(), KeyFileError::WrongPassphrase);
    let passphrase = Zeroizing::new(b"password1".to_vec());
    let key =
        PrivateKey::from_file_contents_with_passphrase(ED25519_PASSPHRASE.as_bytes(), &passphrase)
            .unwrap();
    assert_eq!(key.public_key().key_type(), KeyType::Ed25519);
    assert_signs(&key);
    // A passphrase given for an unencrypted key is not needed and does no harm.
    let plain = PrivateKey::from_file_contents_with_passphrase(ED25519.as_bytes(), b"x").unwrap();
    assert_eq!(plain.fingerprint(), load(ED25519).fingerprint());
}

#[test]
fn ecdsa_fixture_loads_and_signs_with_its_one_algorithm() {
    let key = load(ECDSA_P256);
    assert_eq!(key.public_key().key_type(), KeyType::EcdsaP256);
    assert_eq!(key.signature_algorithms(), &[SignatureAlgorithm::EcdsaP256]);
    assert_signs(&key);
    // RFC 6979: the same message gives the same signature.
    let a = key.sign(SignatureAlgorithm::EcdsaP256, b"m").unwrap();
    assert_eq!(a, key.sign(SignatureAlgorithm::EcdsaP256, b"m").unwrap());
    assert!(matches!(
        key.sign(SignatureAlgorithm::EcdsaP384, b"m"),
        Err(SignError::UnsupportedAlgorithm { .. })
    ));
}

#[test]
fn crlf_and_bom_are_accepted() {
    let crlf = format!("\u{feff}{}", ED25519.replace('\n', "\r\n"));
    assert_eq!(load(&crlf).fingerprint(), load(ED25519).fingerprint());
}

// --- keys made by the real ssh-keygen ---------------------------------------------------------

struct Generated {
    private: Vec<u8>,
    pub_line: String,
    fingerprint: String,
}

/// Runs `ssh-keygen` (it must be installed: these tests check our parser against the real
/// tool, so a missing tool is a failure, not a skip).
fn keygen(dir: &Path, name: &str, passphrase: &str, args: &[&str]) -> Generated {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-N", passphrase, "-C", "generated"])
        .args(args)
        .arg("-f")
        .arg(&path)
        .status()
        .expect("ssh-keygen must be on PATH for these tests");
    assert!(status.success(), "ssh-keygen {args:?} failed");
    let pub_path = dir.join(format!("{name}.pub"));
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(&pub_path)
        .output()
        .expect("ssh-keygen -l");
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    let fingerprint = listing.split_whitespace().nth(1).unwrap().to_owned();
    Generated {
        private: std::fs::read(&path).unwrap(),
        pub_line: pub_line(&std::fs::read_to_string(&pub_path).unwrap()),
        fingerprint,
    }
}

#[test]
fn keys_from_ssh_keygen_load_with_its_fingerprints_and_sign() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "rsa2048pem",
            &["-t", "rsa", "-b", "2048", "-m", "PEM"],
            "-----BEGIN RSA PRIVATE KEY-----",
        ),
        (
            "rsa3072",
            &["-t", "rsa", "-b", "3072"],
            "-----BEGIN OPENSSH PRIVATE KEY-----",
        ),
        (
            "rsa4096",
            &["-t", "rsa", "-b", "4096"],
            "-----BEGIN OPENSSH PRIVATE KEY-----",
        ),
        (
            "rsa2048pkcs8",
            &["-t", "rsa", "-b", "2048", "-m", "PKCS8"],
            "-----BEGIN PRIVATE KEY-----",
        ),
        (
            "ed25519",
            &["-t", "ed25519"],
            "-----BEGIN OPENSSH PRIVATE KEY-----",
        ),
    ];
    for (name, args, begin) in cases {
        let g = keygen(dir.path(), name, "", args);
        assert!(g.private.starts_with(begin.as_bytes()), "{name}");
        let key =
            PrivateKey::from_file_contents(&g.private).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.fingerprint(), g.fingerprint, "{name}");
        assert_eq!(key.public_key().to_openssh_line(), g.pub_line, "{name}");
        assert_signs(&key);
    }
}

#[test]
fn passphrase_protected_keys_from_ssh_keygen_ask_for_and_take_it() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("openssh", &["-t", "ed25519"]),
        ("pem", &["-t", "rsa", "-b", "2048", "-m", "PEM"]),
        ("pkcs8", &["-t", "rsa", "-b", "2048", "-m", "PKCS8"]),
    ];
    for (name, args) in cases {
        let g = keygen(dir.path(), name, "correct horse", args);
        assert!(is_encrypted(&g.private), "{name}");
        assert_eq!(
            PrivateKey::from_file_contents(&g.private).err(),
            Some(KeyFileError::PassphraseRequired),
            "{name}"
        );
        assert_eq!(
            PrivateKey::from_file_contents_with_passphrase(&g.private, b"correct horses").err(),
            Some(KeyFileError::WrongPassphrase),
            "{name}"
        );
        let key = PrivateKey::from_file_contents_with_passphrase(&g.private, b"correct horse")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.fingerprint(), g.fingerprint, "{name}");
        assert_signs(&key);
    }
}

#[test]
fn unsupported_keys_from_ssh_keygen_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let small = keygen(dir.path(), "rsa1024", "", &["-t", "rsa", "-b", "1024"]);
    let err = load_err(&small.private);
    assert_eq!(err, KeyFileError::UnsupportedRsaSize { bits: 1024 });
    assert!(err.to_string().contains("1024 bits"));

    // The public half given by mistake.
    assert_eq!(
        load_err(
            std::fs::read(dir.path().join("rsa1024.pub"))
                .unwrap()
                .as_slice()
        ),
        KeyFileError::PublicKeyInstead
    );
}

// --- hand-built and damaged OpenSSH keys -------------------------------------------------------

/// The decoded body of an armored file.
fn body(text: &str) -> Vec<u8> {
    armor::parse(text).unwrap().decode().unwrap().to_vec()
}

fn armor_openssh(bin: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bin);
    let mut out = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(70) {
        out.push_str(core::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    out
}

/// The pieces of an `openssh-key-v1` file, to be changed one at a time.
#[derive(Clone)]
struct OpensshFile {
    cipher: Vec<u8>,
    kdf: Vec<u8>,
    kdf_options: Vec<u8>,
    count: u32,
    public: Vec<u8>,
    checks: (u32, u32),
    /// The key-type-specific part of the private section, including its type name.
    private_key: Vec<u8>,
    comment: Vec<u8>,
    /// None: correct padding.
    padding: Option<Vec<u8>>,
    trailing: Vec<u8>,
}

impl OpensshFile {
    /// Splits a well-formed unencrypted file into its pieces.
    fn parse(bin: &[u8]) -> Self {
        let mut r = ssh_transport::wire::Reader::new(bin.strip_prefix(openssh::MAGIC).unwrap());
        let cipher = r.string().unwrap().to_vec();
        let kdf = r.string().unwrap().to_vec();
        let kdf_options = r.string().unwrap().to_vec();
        let count = r.u32().unwrap();
        let public = r.string().unwrap().to_vec();
        let private = r.string().unwrap();
        let mut p = ssh_transport::wire::Reader::new(private);
        let checks = (p.u32().unwrap(), p.u32().unwrap());
        let all = p.rest();
        // The comment is the last string before the padding; find it by walking the fields.
        let mut walk = ssh_transport::wire::Reader::new(all);
        let type_name = walk.string().unwrap();
        let fields = match type_name {
            b"ssh-ed25519" => 2,
            b"ssh-rsa" => 6,
            _ => 3,
        };
        for _ in 0..fields {
            walk.string().unwrap();
        }
        let key_len = all.len() - walk.remaining();
        let comment = walk.string().unwrap().to_vec();
        Self {
            cipher,
            kdf,
            kdf_options,
            count,
            public,
            checks,
            private_key: all[..key_len].to_vec(),
            comment,
            padding: None,
            trailing: Vec::new(),
        }
    }

    fn build(&self) -> Vec<u8> {
        let mut private = Vec::new();
        private.put_u32(self.checks.0);
        private.put_u32(self.checks.1);
        private.put_raw(&self.private_key);
        private.put_string(&self.comment);
        match &self.padding {
            Some(p) => private.put_raw(p),
            None => {
                let mut i = 1u8;
                while private.len() % 8 != 0 {
                    private.push(i);
                    i += 1;
                }
            }
        }
        let mut out = openssh::MAGIC.to_vec();
        out.put_string(&self.cipher);
        out.put_string(&self.kdf);
        out.put_string(&self.kdf_options);
        out.put_u32(self.count);
        out.put_string(&self.public);
        out.put_string(&private);
        out.put_raw(&self.trailing);
        out
    }

    fn load(&self) -> Result<PrivateKey, KeyFileError> {
        PrivateKey::from_file_contents(armor_openssh(&self.build()).as_bytes())
    }
}

fn malformed(r: Result<PrivateKey, KeyFileError>) -> bool {
    matches!(r, Err(KeyFileError::Malformed(_)))
}

#[test]
fn rebuilt_fixture_loads_so_the_builder_is_faithful() {
    for text in [ED25519, RSA2048] {
        let f = OpensshFile::parse(&body(text));
        assert_eq!(f.build(), body(text));
        assert_eq!(f.load().unwrap().fingerprint(), load(text).fingerprint());
    }
}

#[test]
fn the_longest_padding_checked_loads() {
    // 131 bytes of checks, key and length, a 6-byte comment and 255 bytes of padding make
    // a multiple of 8; counting the padding to 255 must not overflow.
    let mut f = OpensshFile::parse(&body(ED25519));
    f.comment = b"sixsix".to_vec();
    f.padding = Some((1..=255u8).collect());
    let key = f.load().unwrap();
    assert_eq!(key.comment(), "sixsix");
    assert_eq!(key.fingerprint(), load(ED25519).fingerprint());
}

#[test]
fn damaged_openssh_keys_are_refused() {
    let good = OpensshFile::parse(&body(ED25519));
    let mut cases: Vec<(&str, OpensshFile)> = Vec::new();
    let mut f = good.clone();
    f.checks.1 ^= 1;
    cases.push(("check-ints differ", f));
    let mut f = good.clone();
    f.padding = Some(vec![1, 2, 4, 3, 5, 6, 7]);
    cases.push(("padding out of order", f));
    let mut f = good.clone();
    f.padding = Some(vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
    cases.push(("padding not to a block", f));
    let mut f = good.clone();
    f.trailing = vec![0];
    cases.push(("byte after the private section", f));
    let mut f = good.clone();
    f.count = 2;
    cases.push(("two keys", f));
    let mut f = good.clone();
    f.kdf_options = b"x".to_vec();
    cases.push(("kdf options with kdf none", f));
    let mut f = good.clone();
    // Another valid Ed25519 public key in the public blob.
    f.public = PrivateKey::from_ed25519_seed(&[1; 32], "")
        .unwrap()
        .public_key()
        .blob()
        .to_vec();
    cases.push(("public key from another key", f));
    let mut f = good.clone();
    let last = f.private_key.len() - 1;
    f.private_key[last] ^= 0x80;
    cases.push(("public copy inside the secret changed", f));
    let mut f = good.clone();
    f.private_key.truncate(f.private_key.len() - 10);
    cases.push(("secret cut short", f));
    for (what, f) in cases {
        assert!(malformed(f.load()), "{what}: {:?}", f.load());
    }

    // The seed changed but both public copies kept: ring notices they no longer agree.
    let mut f = good.clone();
    let seed_at = f.private_key.len() - 64 - 4 + 4;
    f.private_key[seed_at] ^= 1;
    assert!(
        matches!(f.load(), Err(KeyFileError::InvalidKey(_))),
        "{:?}",
        f.load()
    );
}

#[test]
fn damaged_rsa_numbers_are_refused() {
    let good = OpensshFile::parse(&body(RSA2048));
    let mut r = ssh_transport::wire::Reader::new(&good.private_key);
    let type_name = r.string().unwrap().to_vec();
    let mut n = r.mpint_positive().unwrap().to_vec();
    let e = r.mpint_positive().unwrap().to_vec();
    let d = r.mpint_positive().unwrap().to_vec();
    let iqmp = r.mpint_positive().unwrap().to_vec();
    let p = r.mpint_positive().unwrap().to_vec();
    let q = r.mpint_positive().unwrap().to_vec();
    let rebuild = |n: &[u8], e: &[u8], d: &[u8], p: &[u8], q: &[u8]| {
        let mut f = good.clone();
        f.private_key.clear();
        f.private_key.put_string(&type_name);
        for x in [n, e, d, &iqmp[..], p, q] {
            f.private_key.put_mpint(x);
        }
        f
    };
    assert!(rebuild(&n, &e, &d, &p, &q).load().is_ok());
    // A prime of 1 makes p·q = n trivially true; it must be refused, not divide by zero.
    assert!(matches!(
        rebuild(&n, &e, &d, &[1], &n).load(),
        Err(KeyFileError::InvalidKey(_))
    ));
    assert!(matches!(
        rebuild(&n, &e, &d, &q, &p).load(),
        Ok(_) | Err(KeyFileError::InvalidKey(_))
    ));
    let mut d2 = d.clone();
    let last = d2.len() - 1;
    d2[last] ^= 2;
    assert!(matches!(
        rebuild(&n, &e, &d2, &p, &q).load(),
        Err(KeyFileError::InvalidKey(_))
    ));
    // The private numbers of one key with the public blob unchanged but n altered.
    let last = n.len() - 1;
    n[last] ^= 2;
    assert!(matches!(
        rebuild(&n, &e, &d, &p, &q).load(),
        Err(KeyFileError::InvalidKey(_))
    ));
}

#[test]
fn rsa_sizes_outside_2048_to_16384_are_named_before_any_arithmetic() {
    let mut f = OpensshFile::parse(&body(RSA2048));
    for (bits, n_len) in [(16392usize, 2049usize), (1024, 128), (2047, 256)] {
        let mut n = vec![0xff; n_len];
        if bits % 8 != 0 {
            n[0] = 0x7f;
        }
        f.private_key.clear();
        f.private_key.put_str("ssh-rsa");
        for x in [&n[..], &[1, 0, 1], &[3], &[3], &[3], &[3]] {
            f.private_key.put_mpint(x);
        }
        assert_eq!(
            f.load().err(),
            Some(KeyFileError::UnsupportedRsaSize { bits }),
            "{bits}"
        );
    }
}

#[test]
fn other_openssh_key_types_are_named() {
    let mut f = OpensshFile::parse(&body(ED25519));
    for name in [
        "ssh-dss",
        "sk-ssh-ed25519@openssh.com",
        "ssh-ed25519-cert-v01@openssh.com",
    ] {
        f.public.clear();
        f.public.put_str(name);
        assert_eq!(
            f.load().err(),
            Some(KeyFileError::UnsupportedKeyType(name.into()))
        );
    }
    f.public.clear();
    f.public.put_str("evil\x1b[31m");
    assert_eq!(
        f.load().err(),
        Some(KeyFileError::UnsupportedKeyType("evil\\x1b[31m".into()))
    );
}

#[test]
fn encrypted_openssh_file_cut_after_its_cipher_is_encrypted_but_malformed() {
    let mut bin = openssh::MAGIC.to_vec();
    bin.put_str("aes256-ctr");
    bin.put_str("bcrypt");
    let text = armor_openssh(&bin);
    // The cipher alone says a passphrase is needed; loading says the file is broken, rather
    // than asking for a passphrase that could not help.
    assert!(is_encrypted(text.as_bytes()));
    assert!(malformed(PrivateKey::from_file_contents(text.as_bytes())));
}

#[test]
fn truncations_at_every_length_are_errors() {
    for text in [ED25519, RSA2048, RSA2048_PEM] {
        for cut in 0..text.len() - 1 {
            let r = PrivateKey::from_file_contents(&text.as_bytes()[..cut]);
            assert!(r.is_err(), "cut at {cut} loaded");
        }
    }
    for text in [ED25519, RSA2048] {
        let bin = body(text);
        for cut in 0..bin.len() {
            let r = PrivateKey::from_file_contents(armor_openssh(&bin[..cut]).as_bytes());
            assert!(malformed(r), "binary cut at {cut}");
        }
    }
}

#[test]
fn huge_lengths_and_oversized_files_are_refused_without_allocating() {
    let mut bin = openssh::MAGIC.to_vec();
    bin.put_str("none");
    bin.put_str("none");
    bin.put_string(b"");
    bin.put_u32(1);
    bin.put_u32(0xffff_fff0);
    assert!(malformed(PrivateKey::from_file_contents(
        armor_openssh(&bin).as_bytes()
    )));
    let big = vec![b'A'; MAX_KEY_FILE_LEN + 1];
    assert_eq!(
        load_err(&big),
        KeyFileError::TooLarge {
            len: MAX_KEY_FILE_LEN + 1,
            max: MAX_KEY_FILE_LEN
        }
    );
    assert_eq!(load_err(&[0xff, 0xfe, 0x00]), KeyFileError::NotAPrivateKey);
}

#[test]
fn bad_base64_and_text_after_the_block_are_refused() {
    let bad = ED25519.replacen("b3Bl", "b3B!", 1);
    assert!(malformed(PrivateKey::from_file_contents(bad.as_bytes())));
    let trailing = format!("{ED25519}junk\n");
    assert!(malformed(PrivateKey::from_file_contents(
        trailing.as_bytes()
    )));
    let wrong_magic = armor_openssh(b"openssh-key-v2\0");
    assert!(malformed(PrivateKey::from_file_contents(
        wrong_magic.as_bytes()
    )));
}

#[test]
fn pem_with_trailing_der_bytes_is_refused() {
    let mut der = body(RSA2048_PEM);
    der.push(0);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let text = format!("-----BEGIN RSA PRIVATE KEY-----\n{b64}\n-----END RSA PRIVATE KEY-----\n");
    assert!(malformed(PrivateKey::from_file_contents(text.as_bytes())));
}

#[test]
fn pkcs8_ed25519_is_read() {
    // RFC 8410 section 10.3's example private key.
    let text = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
    let key = load(text);
    assert_eq!(key.public_key().key_type(), KeyType::Ed25519);
    // RFC 8410 section 10.1 gives this key's public half.
    let public = base64::engine::general_purpose::STANDARD
        .decode("Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=")
        .unwrap();
    assert_eq!(&key.public_key().blob()[19..], &public[..]);
    assert_signs(&key);
}

#[test]
fn other_pem_labels() {
    let wrap = |label: &str| format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n");
    assert_eq!(
        load_err(wrap("DSA PRIVATE KEY").as_bytes()),
        KeyFileError::UnsupportedKeyType("ssh-dss (DSA)".into())
    );
    assert!(matches!(
        load_err(wrap("ENCRYPTED PRIVATE KEY").as_bytes()),
        KeyFileError::Malformed(_)
    ));
    assert!(is_encrypted(wrap("ENCRYPTED PRIVATE KEY").as_bytes()));
    assert!(matches!(
        load_err(wrap("EC PRIVATE KEY").as_bytes()),
        KeyFileError::Malformed(_)
    ));
    assert_eq!(
        load_err(wrap("PUBLIC KEY").as_bytes()),
        KeyFileError::PublicKeyInstead
    );
    assert_eq!(
        load_err(wrap("CERTIFICATE").as_bytes()),
        KeyFileError::NotAPrivateKey
    );
}

#[test]
fn bit_len_counts_from_the_top_set_bit() {
    assert_eq!(bit_len(&[]), 0);
    assert_eq!(bit_len(&[0, 0]), 0);
    assert_eq!(bit_len(&[0, 1]), 1);
    assert_eq!(bit_len(&[0x80, 0]), 16);
    assert_eq!(bit_len(&[0, 0x7f, 0]), 15);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = PrivateKey::from_file_contents(&data);
        let _ = PrivateKey::from_file_contents(armor_openssh(&data).as_bytes());
    }

    #[test]
    fn mutated_keys_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let text = [ED25519, RSA2048, RSA2048_PEM][which];
        let mut bin = body(text);
        for (at, byte) in &edits {
            let i = at.index(bin.len());
            bin[i] = *byte;
        }
        let label = if which == 2 { "RSA PRIVATE KEY" } else { "OPENSSH PRIVATE KEY" };
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bin);
        let text = format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n");
        if let Ok(key) = PrivateKey::from_file_contents(text.as_bytes()) {
            // Whatever still loads must still be a working key pair.
            for &alg in key.signature_algorithms() {
                let sig = key.sign(alg, b"data");
                prop_assert!(sig.is_ok());
                let sig = sig.unwrap_or_default();
                prop_assert!(key.public_key().verify(alg, b"data", &sig).is_ok());
            }
        }
    }

    #[test]
    fn mutated_text_never_panics(
        which in 0usize..3,
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut text = [ED25519, RSA2048, RSA2048_PEM][which].as_bytes().to_vec();
        let i = at.index(text.len());
        text[i] = byte;
        let _ = PrivateKey::from_file_contents(&text);
    }
}

#[test]
fn parsed_public_key_equals_transport_decoding() {
    let key = load(RSA2048);
    assert_eq!(
        PublicKey::from_blob(key.public_key().blob()).as_ref(),
        Ok(key.public_key())
    );
}

// --- signing backends, writing OpenSSH files, generating keys ----------------------------------

/// The first check number of an unencrypted OpenSSH file's private section.
fn check_number(text: &str) -> u32 {
    let f = OpensshFile::parse(&body(text));
    assert_eq!(f.checks.0, f.checks.1);
    f.checks.0
}

#[test]
fn rsa_up_to_4096_bits_signs_with_ring() {
    let key = load(RSA2048);
    let Signer::Rsa(rsa) = &key.signer else {
        panic!("not RSA")
    };
    assert_eq!(rsa.bits(), 2048);
    assert!(rsa.uses_ring());
}

#[test]
fn rsa_above_4096_bits_signs_with_the_rsa_crate() {
    let key = load(RSA16384);
    let Signer::Rsa(rsa) = &key.signer else {
        panic!("not RSA")
    };
    assert_eq!(rsa.bits(), 16384);
    assert!(!rsa.uses_ring());
    assert_eq!(key.public_key().to_openssh_line(), pub_line(RSA16384_PUB));
    assert_eq!(key.comment(), "fixture-rsa16384");
    // PKCS#1 v1.5 stays deterministic whatever the blinding, and the signature is as long
    // as the modulus.
    for alg in [SignatureAlgorithm::RsaSha512, SignatureAlgorithm::RsaSha256] {
        let sig = key.sign(alg, b"m").unwrap();
        assert_eq!(sig, key.sign(alg, b"m").unwrap());
        let mut r = ssh_transport::wire::Reader::new(&sig);
        assert_eq!(r.utf8().unwrap(), alg.name());
        assert_eq!(r.string().unwrap().len(), 2048);
        assert!(r.finish().is_ok());
    }
}

/// ring verifies at most 8192 bits; the transport checks larger keys' signatures itself (an
/// agent's, or a locked key's, are checked before they are sent).
#[test]
fn rsa_signatures_above_8192_bits_verify_and_fail_when_anything_is_changed() {
    let key = load(RSA16384);
    let alg = SignatureAlgorithm::RsaSha512;
    let sig = key.sign(alg, b"m").unwrap();
    let public = key.public_key();
    assert_eq!(public.verify(alg, b"m", &sig), Ok(()));
    // The other hash, a flipped bit, a truncated signature, another algorithm's name.
    assert!(
        public
            .verify(SignatureAlgorithm::RsaSha256, b"m", &sig)
            .is_err()
    );
    let mut flipped = sig.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(public.verify(alg, b"m", &flipped).is_err());
    let mut r = ssh_transport::wire::Reader::new(&sig);
    r.utf8().unwrap();
    let raw = r.string().unwrap();
    let blob = |body: &[u8]| {
        let mut w = Vec::new();
        ssh_transport::wire::Writer::put_string(&mut w, alg.name().as_bytes());
        ssh_transport::wire::Writer::put_string(&mut w, body);
        w
    };
    assert_eq!(public.verify(alg, b"m", &blob(raw)), Ok(()));
    assert!(public.verify(alg, b"m", &blob(&raw[1..])).is_err());
    // A "signature" of all ones is larger than the modulus.
    assert!(
        public
            .verify(alg, b"m", &blob(&vec![0xff; raw.len()]))
            .is_err()
    );
}

#[test]
fn ssh_keygen_files_are_rewritten_byte_for_byte() {
    for text in [ED25519, RSA2048, ECDSA_P256, RSA16384] {
        let key = load(text);
        let again = openssh::encode(&key, key.comment(), check_number(text)).unwrap();
        assert_eq!(again.as_str(), text);
    }
}

#[test]
fn written_files_load_again_with_a_random_check_number() {
    for text in [ED25519, RSA2048, ECDSA_P256, RSA2048_PEM] {
        let key = load(text);
        let file = key.to_openssh_file("written \x1b comment").unwrap();
        let again = load(&file);
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(again.comment(), "written \\x1b comment");
        assert_signs(&again);
        assert!(file.lines().all(|l| l.len() <= 70));
    }
}

#[test]
fn generated_ed25519_keys_differ_and_round_trip() {
    let a = PrivateKey::generate_ed25519().unwrap();
    let b = PrivateKey::generate_ed25519().unwrap();
    assert_ne!(a.public_key(), b.public_key());
    assert_signs(&a);
    let again = load(&a.to_openssh_file("me@host").unwrap());
    assert_eq!(again.public_key(), a.public_key());
    assert_eq!(again.comment(), "me@host");
}

#[test]
fn generate_rsa_refuses_sizes_outside_2048_to_16384() {
    for bits in [0, 1024, 2047, 16385] {
        assert_eq!(
            PrivateKey::generate_rsa(bits).err(),
            Some(KeyFileError::UnsupportedRsaSize { bits })
        );
    }
}

#[test]
fn generated_rsa_2048_round_trips() {
    let key = PrivateKey::generate_rsa(2048).unwrap();
    assert_eq!(key.public_key().rsa_bits(), 2048);
    assert_signs(&key);
    let again = load(&key.to_openssh_file("").unwrap());
    assert_eq!(again.public_key(), key.public_key());
    assert_eq!(
        again.sign(SignatureAlgorithm::RsaSha256, b"x").unwrap(),
        key.sign(SignatureAlgorithm::RsaSha256, b"x").unwrap()
    );
}

// --- encrypted files built here, to damage them in ways no tool writes -------------------------

const PW: &[u8] = b"test passphrase";

/// An `openssh-key-v1` file encrypted with bcrypt and aes256-ctr, its private section built
/// from `f` (padded to 16 bytes) and changed by `damage` before encryption.
fn encrypted_openssh(f: &OpensshFile, rounds: u32, damage: impl Fn(&mut Vec<u8>)) -> String {
    let mut private = Vec::new();
    private.put_u32(f.checks.0);
    private.put_u32(f.checks.1);
    private.put_raw(&f.private_key);
    private.put_string(&f.comment);
    let mut i = 1u8;
    while private.len() % 16 != 0 {
        private.push(i);
        i += 1;
    }
    damage(&mut private);
    let salt = [7u8; 16];
    let mut key_iv = [0u8; 48];
    bcrypt_pbkdf::bcrypt_pbkdf(PW, &salt, rounds.clamp(1, 4), &mut key_iv).unwrap();
    let (key, iv) = key_iv.split_at(32);
    // Counter mode: decrypting is encrypting.
    sym::openssh(b"aes256-ctr")
        .unwrap()
        .decrypt(key, iv, &mut private, &[])
        .unwrap();
    let mut options = Vec::new();
    options.put_string(&salt);
    options.put_u32(rounds);
    assemble("aes256-ctr", "bcrypt", &options, &f.public, &private, &[])
}

fn assemble(
    cipher: &str,
    kdf: &str,
    options: &[u8],
    public: &[u8],
    private: &[u8],
    tag: &[u8],
) -> String {
    let mut bin = openssh::MAGIC.to_vec();
    bin.put_str(cipher);
    bin.put_str(kdf);
    bin.put_string(options);
    bin.put_u32(1);
    bin.put_string(public);
    bin.put_string(private);
    bin.put_raw(tag);
    armor_openssh(&bin)
}

fn with_pw(text: &str) -> Result<PrivateKey, KeyFileError> {
    PrivateKey::from_file_contents_with_passphrase(text.as_bytes(), PW)
}

#[test]
fn openssh_encryption_built_here_round_trips() {
    for fixture in [ED25519, RSA2048, ECDSA_P256] {
        let f = OpensshFile::parse(&body(fixture));
        let text = encrypted_openssh(&f, 4, |_| {});
        assert!(is_encrypted(text.as_bytes()));
        assert_eq!(
            PrivateKey::from_file_contents(text.as_bytes()).err(),
            Some(KeyFileError::PassphraseRequired)
        );
        assert_eq!(
            with_pw(&text).unwrap().fingerprint(),
            load(fixture).fingerprint()
        );
        assert_eq!(
            PrivateKey::from_file_contents_with_passphrase(text.as_bytes(), b"other").err(),
            Some(KeyFileError::WrongPassphrase)
        );
    }
}

#[test]
fn damaged_encrypted_openssh_keys_are_refused() {
    let f = OpensshFile::parse(&body(ED25519));
    // Check numbers that differ after decryption are how a wrong passphrase shows.
    let text = encrypted_openssh(&f, 4, |p| p[4] ^= 1);
    assert_eq!(with_pw(&text).err(), Some(KeyFileError::WrongPassphrase));
    let text = encrypted_openssh(&f, 4, |p| {
        let last = p.len() - 1;
        p[last] ^= 0x40;
    });
    assert!(malformed(with_pw(&text)));
    let text = encrypted_openssh(&f, 4, |p| p.truncate(p.len() - 1));
    assert!(malformed(with_pw(&text)), "not a whole number of blocks");

    // The header is checked before a passphrase is asked for.
    let mut options = Vec::new();
    options.put_string(&[1; 16]);
    options.put_u32(4);
    let private = vec![0u8; 32];
    let cases = [
        ("aes256-ctr", "scrypt", options.clone(), &[][..]),
        ("none", "bcrypt", options.clone(), &[][..]),
        ("aes256-ctr", "none", Vec::new(), &[][..]),
        (
            "aes256-gcm@openssh.com",
            "bcrypt",
            options.clone(),
            &[0u8; 15][..],
        ),
        ("aes256-ctr", "bcrypt", options[..10].to_vec(), &[][..]),
        (
            "aes256-ctr",
            "bcrypt",
            [&options[..], &[0]].concat(),
            &[][..],
        ),
        (
            "aes256-ctr",
            "bcrypt",
            vec![0, 0, 0, 0, 0, 0, 0, 4],
            &[][..],
        ),
        (
            "chacha20-poly1305@openssh.com",
            "bcrypt",
            options.clone(),
            &[0u8; 16][..],
        ),
    ];
    for (cipher, kdf, options, tag) in cases {
        let text = assemble(cipher, kdf, &options, &f.public, &private, tag);
        let without = PrivateKey::from_file_contents(text.as_bytes()).unwrap_err();
        let with = with_pw(&text).unwrap_err();
        assert_eq!(without, with, "{cipher} {kdf}");
        assert!(
            matches!(
                with,
                KeyFileError::Malformed(_) | KeyFileError::UnsupportedEncryption(_)
            ),
            "{cipher} {kdf}: {with:?}"
        );
    }

    // A GCM tag that does not verify.
    let text = assemble(
        "aes256-gcm@openssh.com",
        "bcrypt",
        &options,
        &f.public,
        &private,
        &[0u8; 16],
    );
    assert_eq!(with_pw(&text).err(), Some(KeyFileError::WrongPassphrase));
}

#[test]
fn absurd_bcrypt_rounds_are_refused_before_any_work() {
    let f = OpensshFile::parse(&body(ED25519));
    for rounds in [4097, u32::MAX] {
        let text = encrypted_openssh(&f, rounds, |_| {});
        let started = std::time::Instant::now();
        let err = with_pw(&text).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(
            PrivateKey::from_file_contents(text.as_bytes()).err(),
            Some(err.clone())
        );
        match &err {
            KeyFileError::KdfTooCostly(what) => assert!(what.contains(&rounds.to_string())),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("damaged or hostile"), "{err}");
    }
    let text = encrypted_openssh(&f, 0, |_| {});
    assert!(malformed(with_pw(&text)));
}

/// `RSA PRIVATE KEY` PEM encrypted here as OpenSSL does, with the given DEK-Info cipher.
fn encrypted_pem(der: &[u8], cipher: &str, iv: &[u8], damage: impl Fn(&mut Vec<u8>)) -> String {
    use cbc::cipher::block_padding::Pkcs7;
    use cbc::cipher::{BlockModeEncrypt as _, KeyIvInit as _};
    use md5::Digest as _;
    let c = sym::pem(cipher).unwrap();
    // EVP_BytesToKey, written out again independently of the crate's.
    let mut key = Vec::new();
    let mut prev: Vec<u8> = Vec::new();
    while key.len() < c.key_len {
        let mut h = md5::Md5::new();
        h.update(&prev);
        h.update(PW);
        h.update(&iv[..8]);
        prev = h.finalize().to_vec();
        key.extend_from_slice(&prev);
    }
    key.truncate(c.key_len);
    let mut buf = der.to_vec();
    let len = buf.len();
    buf.resize(len + 16, 0);
    let out_len = match cipher {
        "AES-256-CBC" => cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, iv)
            .unwrap()
            .encrypt_padded::<Pkcs7>(&mut buf, len)
            .unwrap()
            .len(),
        "DES-EDE3-CBC" => cbc::Encryptor::<des::TdesEde3>::new_from_slices(&key, iv)
            .unwrap()
            .encrypt_padded::<Pkcs7>(&mut buf, len)
            .unwrap()
            .len(),
        _ => unreachable!(),
    };
    buf.truncate(out_len);
    damage(&mut buf);
    let hex: String = iv.iter().map(|b| format!("{b:02X}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&buf);
    format!(
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: {cipher},{hex}\n\n\
         {b64}\n-----END RSA PRIVATE KEY-----\n"
    )
}

#[test]
fn legacy_pem_encryption_built_here_loads_and_refuses_damage() {
    let der = body(RSA2048_PEM);
    let expected = load(RSA2048_PEM).fingerprint();
    for (cipher, iv) in [
        ("AES-256-CBC", &[3u8; 16][..]),
        ("DES-EDE3-CBC", &[5u8; 8][..]),
    ] {
        let text = encrypted_pem(&der, cipher, iv, |_| {});
        assert!(is_encrypted(text.as_bytes()));
        assert_eq!(
            PrivateKey::from_file_contents(text.as_bytes()).err(),
            Some(KeyFileError::PassphraseRequired)
        );
        assert_eq!(with_pw(&text).unwrap().fingerprint(), expected, "{cipher}");
        let wrong = PrivateKey::from_file_contents_with_passphrase(text.as_bytes(), b"nope");
        assert_eq!(wrong.err(), Some(KeyFileError::WrongPassphrase), "{cipher}");
        // Damage in the last block spoils the padding, in the first the DER structure: both
        // read as a wrong passphrase. Damage inside a number leaves a key that fails its check.
        for at in [0usize, usize::MAX] {
            let text = encrypted_pem(&der, cipher, iv, |b| {
                let i = at.min(b.len() - 1);
                b[i] ^= 0x55;
            });
            assert_eq!(
                with_pw(&text).err(),
                Some(KeyFileError::WrongPassphrase),
                "{cipher} at {at}"
            );
        }
        let text = encrypted_pem(&der, cipher, iv, |b| b[400] ^= 0x55);
        assert!(
            matches!(with_pw(&text), Err(KeyFileError::InvalidKey(_))),
            "{cipher}"
        );
        let text = encrypted_pem(&der, cipher, iv, |b| b.truncate(b.len() - 1));
        assert!(malformed(with_pw(&text)), "{cipher}");
    }
}

/// An `ENCRYPTED PRIVATE KEY` block around garbage, with the given PBES2 parameters.
fn encrypted_pkcs8(kdf: pkcs8::pkcs5::pbes2::Kdf) -> String {
    use pkcs8::der::Encode as _;
    use pkcs8::pkcs5::{EncryptionScheme, pbes2};
    let params = pbes2::Parameters {
        kdf,
        encryption: pbes2::EncryptionScheme::Aes256Cbc { iv: [9; 16] },
    };
    let data = [0u8; 32];
    let info = pkcs8::EncryptedPrivateKeyInfoRef {
        encryption_algorithm: EncryptionScheme::Pbes2(params),
        encrypted_data: (&data[..]).try_into().unwrap(),
    };
    let der = info.to_der().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    format!("-----BEGIN ENCRYPTED PRIVATE KEY-----\n{b64}\n-----END ENCRYPTED PRIVATE KEY-----\n")
}

#[test]
fn costly_or_invalid_pkcs8_derivations_are_refused_before_any_work() {
    use pkcs8::pkcs5::pbes2::{Kdf, Pbkdf2Params, Pbkdf2Prf, ScryptParams};
    let salt = pkcs8::pkcs5::pbes2::Salt::new([1u8; 16]).unwrap();
    let pbkdf2 = |iteration_count| {
        Kdf::Pbkdf2(Pbkdf2Params {
            salt,
            iteration_count,
            key_length: None,
            prf: Pbkdf2Prf::HmacWithSha256,
        })
    };
    let scrypt = |n: u64, r: u16, p: u16| {
        Kdf::Scrypt(ScryptParams {
            salt,
            cost_parameter: n,
            block_size: r,
            parallelization: p,
            key_length: None,
        })
    };
    let costly = [
        pbkdf2(10_000_001),
        pbkdf2(u32::MAX),
        scrypt(1 << 20, 8, 1),
        scrypt(1 << 14, 8, 1000),
        scrypt(1 << 40, 1, 1),
    ];
    for kdf in costly {
        let text = encrypted_pkcs8(kdf.clone());
        let started = std::time::Instant::now();
        let err = with_pw(&text).unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{kdf:?}"
        );
        assert!(
            matches!(err, KeyFileError::KdfTooCostly(_)),
            "{kdf:?}: {err:?}"
        );
        assert_eq!(
            PrivateKey::from_file_contents(text.as_bytes()).err(),
            Some(err)
        );
    }
    for kdf in [scrypt(0, 8, 1), scrypt(1000, 8, 1), scrypt(1 << 14, 0, 1)] {
        let text = encrypted_pkcs8(kdf.clone());
        assert!(malformed(with_pw(&text)), "{kdf:?}");
    }
    // Cheap parameters: the garbage ciphertext reads as a wrong passphrase.
    for kdf in [pbkdf2(1000), scrypt(1 << 10, 8, 1)] {
        let text = encrypted_pkcs8(kdf.clone());
        assert_eq!(
            with_pw(&text).err(),
            Some(KeyFileError::WrongPassphrase),
            "{kdf:?}"
        );
        assert_eq!(
            PrivateKey::from_file_contents(text.as_bytes()).err(),
            Some(KeyFileError::PassphraseRequired)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn mutated_encrypted_keys_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let f = OpensshFile::parse(&body([ED25519, RSA2048, ECDSA_P256][which]));
        let text = encrypted_openssh(&f, 1, |_| {});
        let mut bin = body(&text);
        for (at, byte) in &edits {
            let i = at.index(bin.len());
            bin[i] = *byte;
        }
        if let Ok(key) = with_pw(&armor_openssh(&bin)) {
            for &alg in key.signature_algorithms() {
                let sig = key.sign(alg, b"data");
                prop_assert!(sig.is_ok());
                let sig = sig.unwrap_or_default();
                prop_assert!(key.public_key().verify(alg, b"data", &sig).is_ok());
            }
        }
    }

    #[test]
    fn mutated_encrypted_pem_never_panics(
        cipher in 0usize..2,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let (name, iv) = [("AES-256-CBC", &[3u8; 16][..]), ("DES-EDE3-CBC", &[5u8; 8][..])][cipher];
        let text = encrypted_pem(&body(RSA2048_PEM), name, iv, |b| {
            for (at, byte) in &edits {
                let i = at.index(b.len());
                b[i] = *byte;
            }
        });
        let _ = with_pw(&text);
    }
}

#[test]
fn tighter_kdf_limits_refuse_what_the_defaults_allow() {
    let f = OpensshFile::parse(&body(ED25519));
    let text = encrypted_openssh(&f, 4, |_| {});
    let mut limits = KdfLimits::default();
    assert_eq!(limits, KdfLimits::DEFAULT);
    limits.bcrypt_rounds = 3;
    let err = PrivateKey::from_file_contents_with_passphrase_limited(text.as_bytes(), PW, &limits)
        .unwrap_err();
    assert_eq!(
        err,
        KeyFileError::KdfTooCostly("4 bcrypt rounds (at most 3 are accepted)".into())
    );
    limits.bcrypt_rounds = 4;
    assert!(
        PrivateKey::from_file_contents_with_passphrase_limited(text.as_bytes(), PW, &limits)
            .is_ok()
    );
    limits.pbkdf2_iterations = 999;
    let salt = pkcs8::pkcs5::pbes2::Salt::new([1u8; 16]).unwrap();
    let text = encrypted_pkcs8(pkcs8::pkcs5::pbes2::Kdf::Pbkdf2(
        pkcs8::pkcs5::pbes2::Pbkdf2Params {
            salt,
            iteration_count: 1000,
            key_length: None,
            prf: pkcs8::pkcs5::pbes2::Pbkdf2Prf::HmacWithSha1,
        },
    ));
    assert!(matches!(
        PrivateKey::from_file_contents_with_passphrase_limited(text.as_bytes(), PW, &limits),
        Err(KeyFileError::KdfTooCostly(_))
    ));
}
