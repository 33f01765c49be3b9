//! Every key file format and type a bastion's admin may hand over, made by the real
//! `ssh-keygen` and `openssl` in the test, loaded here, and checked against those tools: the
//! public key equals what `ssh-keygen -y` derives from the private key, the fingerprint equals
//! `ssh-keygen -l`, and a signature we make verifies, both with the transport's verifier and
//! with `ssh-keygen -Y check-novalidate` (OpenSSH's own signature check, PROTOCOL.sshsig).
//!
//! Both tools must be installed: a missing tool fails these tests rather than skipping them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use ssh_auth::{KeyFileError, PrivateKey, is_encrypted};
use ssh_transport::hostkey::SignatureAlgorithm;
use ssh_transport::wire::Writer as _;

const PASSPHRASE: &str = "correct horse battery";

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not start ({e}); is it installed?"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A key file on disk with what the real tools say about it.
struct Made {
    path: PathBuf,
    passphrase: Option<&'static str>,
    /// The public line when `ssh-keygen -y` cannot read the file (OpenSSH 9.2 reads no
    /// PKCS#8 Ed25519 key), derived with `openssl` instead.
    public_line: Option<String>,
}

impl Made {
    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    /// `type base64` as `ssh-keygen -y` derives it from the private key.
    fn public_line(&self) -> String {
        if let Some(line) = &self.public_line {
            return line.clone();
        }
        let out = run(Command::new("ssh-keygen")
            .arg("-y")
            .args(["-P", self.passphrase.unwrap_or("")])
            .arg("-f")
            .arg(&self.path));
        let text = String::from_utf8(out).unwrap();
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The fingerprint `ssh-keygen -l` prints for that public key.
    fn fingerprint(&self) -> String {
        let pub_path = self.path.with_extension("derived.pub");
        std::fs::write(&pub_path, format!("{}\n", self.public_line())).unwrap();
        let out = run(Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(&pub_path));
        let text = String::from_utf8(out).unwrap();
        text.split_whitespace().nth(1).unwrap().to_owned()
    }

    fn load(&self) -> Result<PrivateKey, KeyFileError> {
        match self.passphrase {
            Some(p) => PrivateKey::from_file_contents_with_passphrase(&self.bytes(), p.as_bytes()),
            None => PrivateKey::from_file_contents(&self.bytes()),
        }
    }
}

fn ssh_keygen(dir: &Path, name: &str, passphrase: Option<&'static str>, args: &[&str]) -> Made {
    let path = dir.join(name);
    run(Command::new("ssh-keygen")
        .args(["-q", "-C", "made-by-ssh-keygen"])
        .args(["-N", passphrase.unwrap_or("")])
        .args(args)
        .arg("-f")
        .arg(&path));
    Made {
        path,
        passphrase,
        public_line: None,
    }
}

fn openssl(dir: &Path, name: &str, passphrase: Option<&'static str>, args: &[&str]) -> Made {
    let path = dir.join(name);
    run(Command::new("openssl").args(args).arg("-out").arg(&path));
    Made {
        path,
        passphrase,
        public_line: None,
    }
}

/// Loads the key and checks it against the tools; returns it for further checks.
fn check(made: &Made, what: &str) -> PrivateKey {
    let data = made.bytes();
    assert_eq!(is_encrypted(&data), made.passphrase.is_some(), "{what}");
    if made.passphrase.is_some() {
        assert_eq!(
            PrivateKey::from_file_contents(&data).err(),
            Some(KeyFileError::PassphraseRequired),
            "{what}"
        );
        assert_eq!(
            PrivateKey::from_file_contents_with_passphrase(&data, b"not the passphrase").err(),
            Some(KeyFileError::WrongPassphrase),
            "{what}"
        );
    }
    let key = made.load().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        key.public_key().to_openssh_line(),
        made.public_line(),
        "{what}"
    );
    assert_eq!(key.fingerprint(), made.fingerprint(), "{what}");
    for &alg in key.signature_algorithms() {
        assert_eq!(alg.key_type(), key.public_key().key_type(), "{what}");
        sshsig_verifies(&key, alg, &made.path.with_extension("sig"), what);
    }
    key
}

/// Signs a message as `ssh-keygen -Y sign` would (PROTOCOL.sshsig) and has the real
/// `ssh-keygen -Y check-novalidate` verify it; also checks it with the transport's verifier
/// where ring can (RSA moduli up to 8192 bits).
fn sshsig_verifies(key: &PrivateKey, alg: SignatureAlgorithm, sig_path: &Path, what: &str) {
    let message = b"a message for the bastion";
    let namespace = "file";
    let hash = ring::digest::digest(&ring::digest::SHA512, message);
    let mut signed = b"SSHSIG".to_vec();
    signed.put_str(namespace);
    signed.put_string(b"");
    signed.put_str("sha512");
    signed.put_string(hash.as_ref());
    let signature = key.sign(alg, &signed).unwrap();
    if key.public_key().rsa_bits() <= 8192 {
        assert_eq!(
            key.public_key().verify(alg, &signed, &signature),
            Ok(()),
            "{what} {alg}"
        );
        assert!(
            key.public_key().verify(alg, b"other", &signature).is_err(),
            "{what}"
        );
    }

    let mut blob = b"SSHSIG".to_vec();
    blob.put_u32(1);
    blob.put_string(key.public_key().blob());
    blob.put_str(namespace);
    blob.put_string(b"");
    blob.put_str("sha512");
    blob.put_string(&signature);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
    let mut armored = String::from("-----BEGIN SSH SIGNATURE-----\n");
    for line in b64.as_bytes().chunks(70) {
        armored.push_str(core::str::from_utf8(line).unwrap());
        armored.push('\n');
    }
    armored.push_str("-----END SSH SIGNATURE-----\n");
    std::fs::write(sig_path, armored).unwrap();

    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "check-novalidate", "-n", namespace, "-s"])
        .arg(sig_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh-keygen must be installed");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), message).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} {alg}: {text}");
    assert!(text.contains(&key.fingerprint()), "{what} {alg}: {text}");
}

#[test]
fn openssh_format_every_type_plain_and_with_a_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let types: &[(&str, &[&str])] = &[
        ("ed25519", &["-t", "ed25519"]),
        ("rsa2048", &["-t", "rsa", "-b", "2048"]),
        ("rsa3072", &["-t", "rsa", "-b", "3072"]),
        ("rsa4096", &["-t", "rsa", "-b", "4096"]),
        ("ecdsa256", &["-t", "ecdsa", "-b", "256"]),
        ("ecdsa384", &["-t", "ecdsa", "-b", "384"]),
        ("ecdsa521", &["-t", "ecdsa", "-b", "521"]),
    ];
    for (name, args) in types {
        let plain = ssh_keygen(dir.path(), name, None, args);
        let key = check(&plain, name);
        assert_eq!(key.comment(), "made-by-ssh-keygen");
        // ssh-keygen's default encryption: bcrypt, 16 rounds, aes256-ctr.
        let enc_name = format!("{name}-enc");
        let enc = ssh_keygen(dir.path(), &enc_name, Some(PASSPHRASE), args);
        let key = check(&enc, &enc_name);
        assert_eq!(key.comment(), "made-by-ssh-keygen");
    }
}

#[test]
fn openssh_format_every_cipher_ssh_keygen_offers() {
    let dir = tempfile::tempdir().unwrap();
    for cipher in [
        "aes256-ctr",
        "aes192-ctr",
        "aes128-ctr",
        "aes256-gcm@openssh.com",
        "aes128-gcm@openssh.com",
        "aes256-cbc",
        "aes192-cbc",
        "aes128-cbc",
        "3des-cbc",
    ] {
        for (t, bits) in [("ed25519", "256"), ("rsa", "2048"), ("ecdsa", "384")] {
            let name = format!("{t}-{cipher}");
            let made = ssh_keygen(
                dir.path(),
                &name,
                Some(PASSPHRASE),
                &["-t", t, "-b", bits, "-Z", cipher, "-a", "4"],
            );
            check(&made, &name);
        }
    }
    // chacha20-poly1305 is the one cipher of ssh-keygen -Z not implemented: named before a
    // passphrase is asked for.
    let made = ssh_keygen(
        dir.path(),
        "chacha",
        Some(PASSPHRASE),
        &["-t", "ed25519", "-Z", "chacha20-poly1305@openssh.com"],
    );
    let err = PrivateKey::from_file_contents(&made.bytes()).unwrap_err();
    assert_eq!(
        err,
        KeyFileError::UnsupportedEncryption("cipher chacha20-poly1305@openssh.com".into())
    );
    assert!(err.to_string().contains("ssh-keygen -p"), "{err}");
}

#[test]
fn openssh_format_with_more_bcrypt_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let made = ssh_keygen(
        dir.path(),
        "rounds",
        Some(PASSPHRASE),
        &["-t", "ed25519", "-a", "64"],
    );
    check(&made, "64 rounds");
}

#[test]
fn rsa_8192_made_by_ssh_keygen_signs_with_the_rsa_crate() {
    let dir = tempfile::tempdir().unwrap();
    let made = ssh_keygen(
        dir.path(),
        "rsa8192",
        Some(PASSPHRASE),
        &["-t", "rsa", "-b", "8192"],
    );
    let key = check(&made, "rsa8192");
    assert_eq!(key.public_key().rsa_bits(), 8192);
    let sig = key.sign(SignatureAlgorithm::RsaSha512, b"m").unwrap();
    let mut r = ssh_transport::wire::Reader::new(&sig);
    assert_eq!(r.utf8().unwrap(), "rsa-sha2-512");
    assert_eq!(r.string().unwrap().len(), 1024);
}

#[test]
fn rsa_16384_fixture_loads_and_its_signatures_satisfy_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rsa16384");
    let path = dir.path().join("rsa16384");
    // A checkout does not keep the fixture's 0600, which ssh-keygen insists on.
    write_private(&path, &std::fs::read(&fixture).unwrap());
    let made = Made {
        path,
        passphrase: None,
        public_line: None,
    };
    let key = check(&made, "rsa16384");
    assert_eq!(key.public_key().rsa_bits(), 16384);
    let expected = std::fs::read_to_string(fixture.with_extension("pub")).unwrap();
    assert!(expected.starts_with(&key.public_key().to_openssh_line()));
}

#[test]
fn pem_made_by_ssh_keygen_plain_and_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let types: &[(&str, &[&str])] = &[
        ("rsa2048", &["-t", "rsa", "-b", "2048"]),
        ("rsa4096", &["-t", "rsa", "-b", "4096"]),
        ("ecdsa256", &["-t", "ecdsa", "-b", "256"]),
        ("ecdsa384", &["-t", "ecdsa", "-b", "384"]),
        ("ecdsa521", &["-t", "ecdsa", "-b", "521"]),
    ];
    for (name, args) in types {
        for (format, begin) in [
            (
                "PEM",
                if name.starts_with("rsa") {
                    "-----BEGIN RSA PRIVATE KEY-----"
                } else {
                    "-----BEGIN EC PRIVATE KEY-----"
                },
            ),
            ("PKCS8", "-----BEGIN PRIVATE KEY-----"),
        ] {
            let what = format!("{name}-{format}");
            let mut all = args.to_vec();
            all.extend(["-m", format]);
            let plain = ssh_keygen(dir.path(), &what, None, &all);
            assert!(plain.bytes().starts_with(begin.as_bytes()), "{what}");
            let key = check(&plain, &what);
            assert_eq!(key.comment(), "");
            let what = format!("{what}-enc");
            let enc = ssh_keygen(dir.path(), &what, Some(PASSPHRASE), &all);
            check(&enc, &what);
        }
    }
}

/// `openssl genpkey` keys of each type, for the conversions below.
fn openssl_keys(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let specs: &[(&str, &[&str])] = &[
        (
            "rsa",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        ),
        (
            "p256",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        ),
        (
            "p384",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        ),
        (
            "p521",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
        ),
        ("ed25519", &["-algorithm", "ED25519"]),
    ];
    specs
        .iter()
        .map(|(name, args)| {
            let made = openssl(
                dir,
                &format!("{name}.genpkey"),
                None,
                &[&["genpkey"], *args].concat(),
            );
            (*name, made.path)
        })
        .collect()
}

/// `ssh-ed25519 base64` for an Ed25519 key, from the raw public key `openssl` derives (the
/// last 32 bytes of its SubjectPublicKeyInfo).
fn ed25519_public_line(private: &Path) -> String {
    let spki = run(Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(private));
    let raw = &spki[spki.len() - 32..];
    let mut blob = Vec::new();
    blob.put_str("ssh-ed25519");
    blob.put_string(raw);
    format!(
        "ssh-ed25519 {}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

#[test]
fn pkcs8_made_by_openssl_plain_and_with_every_pbes2_variant() {
    let dir = tempfile::tempdir().unwrap();
    let pass = format!("pass:{PASSPHRASE}");
    let variants: &[(&str, &[&str])] = &[
        ("aes256-sha256", &["-v2", "aes256"]),
        ("aes128-sha1", &["-v2", "aes128", "-v2prf", "hmacWithSHA1"]),
        (
            "aes192-sha512",
            &["-v2", "aes192", "-v2prf", "hmacWithSHA512"],
        ),
        ("des3", &["-v2", "des3"]),
        ("scrypt", &["-scrypt"]),
        ("iter100k", &["-v2", "aes256", "-iter", "100000"]),
    ];
    for (name, source) in openssl_keys(dir.path()) {
        let src = source.to_str().unwrap();
        let what = format!("{name}-pkcs8");
        let public_line = (name == "ed25519").then(|| ed25519_public_line(&source));
        let mut plain = openssl(
            dir.path(),
            &what,
            None,
            &["pkcs8", "-topk8", "-nocrypt", "-in", src],
        );
        plain.public_line.clone_from(&public_line);
        check(&plain, &what);
        for (variant, args) in variants {
            let what = format!("{name}-pkcs8-{variant}");
            let base: &[&str] = &["pkcs8", "-topk8", "-in", src, "-passout", &pass];
            let mut enc = openssl(dir.path(), &what, Some(PASSPHRASE), &[base, *args].concat());
            enc.public_line.clone_from(&public_line);
            assert!(
                enc.bytes()
                    .starts_with(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"),
                "{what}"
            );
            check(&enc, &what);
        }
    }
}

#[test]
fn traditional_pem_made_by_openssl_with_each_dek_info_cipher() {
    let dir = tempfile::tempdir().unwrap();
    let pass = format!("pass:{PASSPHRASE}");
    for (name, source) in openssl_keys(dir.path()) {
        let tool = match name {
            "rsa" => "rsa",
            "ed25519" => continue,
            _ => "ec",
        };
        let src = source.to_str().unwrap();
        let what = format!("{name}-traditional");
        let mut plain_args = vec![tool, "-in", src];
        if tool == "rsa" {
            plain_args.push("-traditional");
        }
        let plain = openssl(dir.path(), &what, None, &plain_args);
        check(&plain, &what);
        for cipher in ["-aes128", "-aes192", "-aes256", "-des3"] {
            let what = format!("{name}-traditional{cipher}");
            let mut args = plain_args.clone();
            args.extend([cipher, "-passout", &pass]);
            let enc = openssl(dir.path(), &what, Some(PASSPHRASE), &args);
            let text = String::from_utf8(enc.bytes()).unwrap();
            assert!(text.contains("Proc-Type: 4,ENCRYPTED"), "{what}: {text}");
            check(&enc, &what);
        }
    }
}

#[test]
fn openssl_ecparam_genkey_output_with_its_parameters_block() {
    let dir = tempfile::tempdir().unwrap();
    for curve in ["prime256v1", "secp384r1", "secp521r1"] {
        let made = openssl(
            dir.path(),
            curve,
            None,
            &["ecparam", "-name", curve, "-genkey"],
        );
        assert!(made.bytes().starts_with(b"-----BEGIN EC PARAMETERS-----"));
        check(&made, curve);
    }
}

#[test]
fn pkcs5_v1_schemes_are_named_as_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let pass = format!("pass:{PASSPHRASE}");
    let keys = openssl_keys(dir.path());
    let src = keys[0].1.to_str().unwrap();
    let made = openssl(
        dir.path(),
        "v1",
        Some(PASSPHRASE),
        &[
            "pkcs8",
            "-topk8",
            "-v1",
            "PBE-SHA1-3DES",
            "-in",
            src,
            "-passout",
            &pass,
        ],
    );
    let err = made.load().unwrap_err();
    assert!(
        matches!(&err, KeyFileError::UnsupportedEncryption(what) if what.contains("PKCS#12 PBE")),
        "{err:?}"
    );
    assert!(is_encrypted(&made.bytes()));
}

#[test]
fn generated_keys_are_read_by_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        ("ed25519", PrivateKey::generate_ed25519().unwrap()),
        ("rsa3072", PrivateKey::generate_rsa(3072).unwrap()),
    ];
    for (name, key) in keys {
        let path = dir.path().join(name);
        let text = key.to_openssh_file("generated@test").unwrap();
        write_private(&path, text.as_bytes());
        let made = Made {
            path: path.clone(),
            passphrase: None,
            public_line: None,
        };
        assert_eq!(made.public_line(), key.public_key().to_openssh_line());
        assert_eq!(made.fingerprint(), key.fingerprint());
        // ssh-keygen can change its comment, which means it parsed the whole private section.
        run(Command::new("ssh-keygen")
            .args(["-q", "-c", "-C", "renamed", "-P", "", "-f"])
            .arg(&path));
        let again = PrivateKey::from_file_contents(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(again.comment(), "renamed");
    }
}

/// Writes a file only its owner may read, as private keys must be.
fn write_private(path: &Path, data: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, data).unwrap();
}

#[test]
fn key_files_readable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let made = ssh_keygen(dir.path(), "perm", None, &["-t", "ed25519"]);
    use std::os::unix::fs::MetadataExt as _;
    let check = |path: &std::path::Path| {
        let meta = std::fs::metadata(path).unwrap();
        ssh_auth::check_key_file_mode("k", meta.uid(), meta.uid(), meta.mode())
    };
    // ssh-keygen writes 0600, which passes.
    assert_eq!(check(&made.path), Ok(()));
    std::fs::set_permissions(&made.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = check(&made.path).unwrap_err();
    assert!(err.to_string().contains("0644 are too open"), "{err}");
}
