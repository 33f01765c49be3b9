//! Every private key file a platform may hand out logs in through the forwarder against the
//! real sshd: each type and size `ssh-keygen` makes, in each format it writes (OpenSSH plain
//! and encrypted, traditional PEM, PKCS#8), and PKCS#8 files made by `openssl genpkey`. A
//! wrong passphrase for a PEM or PKCS#8 file is refused naming the file, and the passphrase
//! never reaches the log.
//!
//! ```text
//!  worker threads: ssh-keygen / openssl ──Case──> channel ──> this thread, one key at a time:
//!    (slowest keys first)                                      append its line to authorized_keys,
//!                                                              forwarder -i KEY -L .. ──> sshd ──> echo,
//!                                                              sshd's "Accepted publickey" line must
//!                                                              end with that key's fingerprint
//! ```
//!
//! Keys are tried while the slow ones (RSA 8192) are still being generated, all against one
//! sshd, which rereads `authorized_keys` for every login. Failures are collected and reported
//! together, each with the forwarder's log.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use ssh_interop_tests::client::READY_TIMEOUT;
use ssh_interop_tests::keys::fingerprint_of;
use ssh_interop_tests::process::{LabChild, file_tail, require_program, run_ok};
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyFormat, KeyKind, Sshd, Tunnel, TunnelBuilder, UserKey,
    echo_round_trip, port_listening,
};

/// Long enough for PEM and PKCS#8, for which ssh-keygen demands at least five characters, and
/// distinctive enough to spot in a log.
const PASSPHRASE: &str = "lab keyfile passphrase 7f3a";
const WRONG_PASSPHRASE: &str = "not the passphrase 91c2";
/// RSA 8192 takes ssh-keygen half a minute on a busy two-core machine.
const TOOL_TIMEOUT: Duration = Duration::from_secs(180);
/// How long sshd may take to log the login after the echo came back through it.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// A key type and size as `ssh-keygen` takes it.
#[derive(Clone, Copy, Debug)]
struct KeyType {
    label: &'static str,
    args: &'static [&'static str],
    /// Rough generation cost, so the slowest keys start first.
    cost: u32,
}

impl KeyType {
    fn is_rsa(self) -> bool {
        self.label.starts_with("rsa")
    }

    fn is_ed25519(self) -> bool {
        self.label == "ed25519"
    }
}

const KEY_TYPES: [KeyType; 8] = [
    KeyType {
        label: "rsa2048",
        args: &["-t", "rsa", "-b", "2048"],
        cost: 2,
    },
    KeyType {
        label: "rsa3072",
        args: &["-t", "rsa", "-b", "3072"],
        cost: 5,
    },
    KeyType {
        label: "rsa4096",
        args: &["-t", "rsa", "-b", "4096"],
        cost: 20,
    },
    RSA8192,
    KeyType {
        label: "ed25519",
        args: &["-t", "ed25519"],
        cost: 0,
    },
    KeyType {
        label: "ecdsa256",
        args: &["-t", "ecdsa", "-b", "256"],
        cost: 0,
    },
    KeyType {
        label: "ecdsa384",
        args: &["-t", "ecdsa", "-b", "384"],
        cost: 0,
    },
    KeyType {
        label: "ecdsa521",
        args: &["-t", "ecdsa", "-b", "521"],
        cost: 0,
    },
];

fn key_type(label: &str) -> KeyType {
    KEY_TYPES
        .into_iter()
        .find(|t| t.label == label)
        .unwrap_or_else(|| panic!("no key type {label}"))
}

const RSA8192: KeyType = KeyType {
    label: "rsa8192",
    args: &["-t", "rsa", "-b", "8192"],
    cost: 1000,
};

/// The private key file formats `ssh-keygen` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    OpenSsh,
    /// ssh-keygen's default encryption: aes256-ctr with a bcrypt-derived key.
    OpenSshEncrypted,
    OpenSshAes256Gcm,
    Pem,
    PemEncrypted,
    Pkcs8,
    Pkcs8Encrypted,
}

impl Format {
    const ALL: [Format; 7] = [
        Format::OpenSsh,
        Format::OpenSshEncrypted,
        Format::OpenSshAes256Gcm,
        Format::Pem,
        Format::PemEncrypted,
        Format::Pkcs8,
        Format::Pkcs8Encrypted,
    ];

    fn label(self) -> &'static str {
        match self {
            Format::OpenSsh => "openssh",
            Format::OpenSshEncrypted => "openssh-aes256-ctr",
            Format::OpenSshAes256Gcm => "openssh-aes256-gcm",
            Format::Pem => "pem",
            Format::PemEncrypted => "pem-encrypted",
            Format::Pkcs8 => "pkcs8",
            Format::Pkcs8Encrypted => "pkcs8-encrypted",
        }
    }

    fn encrypted(self) -> bool {
        matches!(
            self,
            Format::OpenSshEncrypted
                | Format::OpenSshAes256Gcm
                | Format::PemEncrypted
                | Format::Pkcs8Encrypted
        )
    }

    fn family(self) -> KeyFormat {
        match self {
            Format::OpenSsh | Format::OpenSshEncrypted | Format::OpenSshAes256Gcm => {
                KeyFormat::OpenSsh
            }
            Format::Pem | Format::PemEncrypted => KeyFormat::Pem,
            Format::Pkcs8 | Format::Pkcs8Encrypted => KeyFormat::Pkcs8,
        }
    }

    /// What to add to `ssh-keygen`'s command line, for generating (`-t`) or rewriting (`-p`).
    /// Two bcrypt rounds instead of the default 16 keep the test quick; the KDF is the same.
    fn keygen_args(self) -> &'static [&'static str] {
        match self {
            Format::OpenSsh => &[],
            Format::OpenSshEncrypted => &["-a", "2"],
            Format::OpenSshAes256Gcm => &["-a", "2", "-Z", "aes256-gcm@openssh.com"],
            Format::Pem | Format::PemEncrypted => &["-m", "PEM"],
            Format::Pkcs8 | Format::Pkcs8Encrypted => &["-m", "PKCS8"],
        }
    }

    /// Which formats ssh-keygen can write for `key_type`. OpenSSH 9.2's ssh-keygen has no PEM
    /// or PKCS#8 encoding for Ed25519 (it quietly writes its own format instead), so those two
    /// pairs are left out here on purpose; Ed25519 in PKCS#8 is covered by the `openssl` keys.
    fn for_type(key_type: KeyType) -> Vec<Format> {
        Format::ALL
            .into_iter()
            .filter(|f| !key_type.is_ed25519() || f.family() == KeyFormat::OpenSsh)
            .collect()
    }
}

/// A key file to log in with, and what sshd will say about it.
#[derive(Clone, Debug)]
struct Case {
    label: String,
    path: PathBuf,
    passphrase_file: Option<PathBuf>,
    /// `type base64 [comment]`, for authorized_keys.
    public_line: String,
    /// `SHA256:...` as `ssh-keygen -l` prints it.
    fingerprint: String,
}

/// Where the keys are made, and the passphrase file for the encrypted ones.
#[derive(Clone, Debug)]
struct Workshop {
    dir: PathBuf,
    passphrase_file: PathBuf,
}

impl Workshop {
    fn new(dir: &Path) -> Workshop {
        let passphrase_file = dir.join("passphrase");
        write_private(&passphrase_file, format!("{PASSPHRASE}\n").as_bytes());
        fs::create_dir(dir.join("derived")).expect("create a dir for derived public keys");
        Workshop {
            dir: dir.to_path_buf(),
            passphrase_file,
        }
    }

    fn passphrase_file_for(&self, encrypted: bool) -> Option<PathBuf> {
        encrypted.then(|| self.passphrase_file.clone())
    }

    /// A fresh key of `key_type`, generated by ssh-keygen directly in `format`, with its
    /// `.pub` next to it as ssh-keygen leaves it.
    fn keygen(&self, key_type: KeyType, format: Format) -> Case {
        let name = format!("{}-{}", key_type.label, format.label());
        let path = self.dir.join(&name);
        let passphrase = if format.encrypted() { PASSPHRASE } else { "" };
        run_ok(
            Command::new(ssh_keygen())
                .arg("-q")
                .args(key_type.args)
                .args(format.keygen_args())
                .args(["-C", &format!("lab-{name}"), "-N", passphrase, "-f"])
                .arg(&path),
            TOOL_TIMEOUT,
            &format!("ssh-keygen ({name})"),
        );
        self.keygen_case(format!("ssh-keygen {name}"), path, key_type, format)
    }

    /// A key file ssh-keygen wrote (or rewrote), with its `.pub`.
    fn keygen_case(&self, label: String, path: PathBuf, key_type: KeyType, format: Format) -> Case {
        check_written(&path, key_type, format);
        // ssh-keygen writes 0600 already; set it anyway, as the forwarder refuses anything
        // group- or other-readable, like OpenSSH.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod 0600");
        let public = pub_path(&path);
        let public_line = fs::read_to_string(&public)
            .unwrap_or_else(|e| panic!("read {}: {e}", public.display()))
            .trim()
            .to_owned();
        Case {
            label,
            fingerprint: fingerprint_of(&public),
            passphrase_file: self.passphrase_file_for(format.encrypted()),
            path,
            public_line,
        }
    }

    /// RSA 8192 in every format from one key: ssh-keygen takes 15 to 30 seconds to generate
    /// one on a two-core machine, so seven would take minutes. The other formats are that key
    /// rewritten by `ssh-keygen -p` with `-m`, `-a`, `-Z` and a new passphrase: the same
    /// code in ssh-keygen writes a key file whether it has just generated the key or not.
    fn rsa8192_every_format(&self) -> Vec<Case> {
        let name = format!("{}-{}", RSA8192.label, Format::OpenSsh.label());
        let path = self.dir.join(&name);
        let took = self.rsa8192_first_of_two(&path);
        let label = format!("ssh-keygen {name} (generated in {took:.1?})");
        let original = self.keygen_case(label, path, RSA8192, Format::OpenSsh);
        let mut cases = vec![original.clone()];
        for format in Format::ALL.into_iter().filter(|&f| f != Format::OpenSsh) {
            let name = format!("{}-{}", RSA8192.label, format.label());
            let path = self.dir.join(&name);
            copy_private(&original.path, &path);
            fs::copy(pub_path(&original.path), pub_path(&path)).expect("copy the .pub");
            let passphrase = if format.encrypted() { PASSPHRASE } else { "" };
            run_ok(
                Command::new(ssh_keygen())
                    .args(["-q", "-p", "-P", "", "-N", passphrase])
                    .args(format.keygen_args())
                    .arg("-f")
                    .arg(&path),
                TOOL_TIMEOUT,
                &format!("ssh-keygen -p ({name})"),
            );
            let label = format!("ssh-keygen {name} (rewritten by ssh-keygen -p)");
            cases.push(self.keygen_case(label, path, RSA8192, format));
        }
        cases
    }

    /// Runs two `ssh-keygen -t rsa -b 8192` at once and keeps the key of the first to finish
    /// (moved to `path` and `path.pub`). How long the search for two 4096-bit primes takes
    /// varies a lot from key to key, and the slowest draws decide this test's runtime; the
    /// first of two is rarely slow. The second process mostly uses a core the other workers
    /// have finished with.
    fn rsa8192_first_of_two(&self, path: &Path) -> Duration {
        let started = Instant::now();
        let racers: Vec<PathBuf> = (0..2)
            .map(|i| self.dir.join(format!("rsa8192-racer{i}")))
            .collect();
        let mut children: Vec<LabChild> = racers
            .iter()
            .map(|racer| {
                let mut cmd = Command::new(ssh_keygen());
                cmd.arg("-q")
                    .args(RSA8192.args)
                    .args(["-C", "lab-rsa8192-openssh", "-N", "", "-f"])
                    .arg(racer)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                LabChild::spawn("ssh-keygen (rsa8192)", &mut cmd)
            })
            .collect();
        let winner = loop {
            let statuses: Vec<_> = children.iter_mut().map(LabChild::exited).collect();
            if let Some(i) = statuses.iter().position(|s| s.is_some_and(|s| s.success())) {
                break i;
            }
            assert!(
                statuses.iter().any(Option::is_none),
                "ssh-keygen -t rsa -b 8192 failed twice: {statuses:?}"
            );
            assert!(
                started.elapsed() < TOOL_TIMEOUT,
                "ssh-keygen -t rsa -b 8192 did not finish within {TOOL_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        for child in &mut children {
            child.kill();
        }
        fs::rename(&racers[winner], path).expect("move the RSA 8192 key");
        fs::rename(pub_path(&racers[winner]), pub_path(path)).expect("move its .pub");
        started.elapsed()
    }

    /// RSA 16384 from the auth crate's fixture: ssh-keygen takes minutes to generate one,
    /// too long for CI. The copy gets mode 0600, which a checkout does not keep.
    fn rsa16384_fixture(&self) -> Case {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../auth/testdata/rsa16384");
        let path = self.dir.join("rsa16384-openssh-fixture");
        copy_private(&fixture, &path);
        fs::copy(pub_path(&fixture), pub_path(&path)).expect("copy the fixture's .pub");
        let label = "fixture rsa16384-openssh (auth/testdata)".to_owned();
        let key_type = KeyType {
            label: "rsa16384",
            args: &[],
            cost: 0,
        };
        self.keygen_case(label, path, key_type, Format::OpenSsh)
    }

    /// A PKCS#8 key from `openssl genpkey`, encrypted with its default PBES2 (AES-256-CBC,
    /// PBKDF2 with HMAC-SHA256) when asked. No `.pub` goes next to it, so the forwarder
    /// has to decrypt an encrypted one before it can offer it.
    fn openssl(&self, name: &str, algorithm: &[&str], encrypted: bool) -> Case {
        let name = format!(
            "openssl-{name}-{}",
            if encrypted {
                "pkcs8-encrypted"
            } else {
                "pkcs8"
            }
        );
        let path = self.dir.join(&name);
        let mut cmd = Command::new(openssl());
        cmd.arg("genpkey").args(algorithm);
        if encrypted {
            cmd.args(["-aes256", "-pass"])
                .arg(format!("file:{}", self.passphrase_file.display()));
        }
        cmd.arg("-out").arg(&path);
        run_ok(&mut cmd, TOOL_TIMEOUT, &format!("openssl genpkey ({name})"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod 0600");
        let text = fs::read_to_string(&path).expect("read the openssl key");
        let header = if encrypted {
            "-----BEGIN ENCRYPTED PRIVATE KEY-----"
        } else {
            "-----BEGIN PRIVATE KEY-----"
        };
        assert!(
            text.starts_with(header),
            "openssl wrote {} not as PKCS#8:\n{text}",
            path.display()
        );
        let public_line = if algorithm.contains(&"ed25519") {
            self.ed25519_public_line(&path, encrypted)
        } else {
            let mut cmd = Command::new(ssh_keygen());
            cmd.args(["-y", "-P", if encrypted { PASSPHRASE } else { "" }, "-f"])
                .arg(&path);
            let out = run_ok(&mut cmd, TOOL_TIMEOUT, &format!("ssh-keygen -y ({name})"));
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let derived = self.dir.join("derived").join(format!("{name}.pub"));
        fs::write(&derived, format!("{public_line}\n")).expect("write a derived public key");
        Case {
            label: format!("openssl genpkey {name}"),
            fingerprint: fingerprint_of(&derived),
            passphrase_file: self.passphrase_file_for(encrypted),
            path,
            public_line,
        }
    }

    /// `ssh-ed25519 base64` for an openssl Ed25519 key. OpenSSH 9.2's ssh-keygen cannot read
    /// a PKCS#8 Ed25519 file (`-y` says "invalid format", `-i -m PKCS8` "unsupported pubkey
    /// type"), so the public key comes from openssl instead: its DER SubjectPublicKeyInfo
    /// ends with the 32 raw key bytes, which go into the SSH wire blob (RFC 8709), base64
    /// encoded by `openssl base64`. Independent of the code under test, unlike our own parser.
    fn ed25519_public_line(&self, path: &Path, encrypted: bool) -> String {
        // To a file: the lab's command runner hands back stdout as text.
        let der_path = path.with_extension("spki.der");
        let mut cmd = Command::new(openssl());
        cmd.args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(path)
            .arg("-out")
            .arg(&der_path);
        if encrypted {
            cmd.arg("-passin")
                .arg(format!("file:{}", self.passphrase_file.display()));
        }
        run_ok(&mut cmd, TOOL_TIMEOUT, "openssl pkey -pubout");
        let spki = fs::read(&der_path).expect("read the DER public key");
        // SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING (0 unused bits) }
        const SPKI_PREFIX: [u8; 12] = [
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        assert!(
            spki.len() == 44 && spki.starts_with(&SPKI_PREFIX),
            "not an Ed25519 SubjectPublicKeyInfo: {spki:02x?}"
        );
        let mut blob = Vec::new();
        for field in [&b"ssh-ed25519"[..], &spki[12..]] {
            let len = u32::try_from(field.len()).expect("short field");
            blob.extend_from_slice(&len.to_be_bytes());
            blob.extend_from_slice(field);
        }
        let blob_path = path.with_extension("blob");
        fs::write(&blob_path, &blob).expect("write the public key blob");
        let mut cmd = Command::new(openssl());
        cmd.args(["base64", "-A", "-in"]).arg(&blob_path);
        let out = run_ok(&mut cmd, TOOL_TIMEOUT, "openssl base64");
        format!(
            "ssh-ed25519 {}",
            String::from_utf8_lossy(&out.stdout).trim()
        )
    }
}

/// Fails the test (a setup failure, not the forwarder's) unless ssh-keygen wrote the format
/// it was asked for.
fn check_written(path: &Path, key_type: KeyType, format: Format) {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let first = text.lines().next().unwrap_or_default();
    let detected = KeyFormat::detect(&text);
    let encrypted_marker = match format.family() {
        KeyFormat::OpenSsh => None,
        KeyFormat::Pem => Some(text.contains("Proc-Type: 4,ENCRYPTED")),
        KeyFormat::Pkcs8 => Some(first.contains("ENCRYPTED")),
    };
    let rsa_header_ok = format.family() != KeyFormat::Pem
        || first.contains(if key_type.is_rsa() { "RSA" } else { "EC" });
    assert!(
        detected == Some(format.family())
            && encrypted_marker.is_none_or(|e| e == format.encrypted())
            && rsa_header_ok,
        "{} is not a {} {} key file; it begins with {first:?}",
        path.display(),
        key_type.label,
        format.label()
    );
}

fn pub_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Writes a file only its owner may read, as private keys and passphrase files must be.
fn write_private(path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn copy_private(from: &Path, to: &Path) {
    let data = fs::read(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    write_private(to, &data);
}

fn ssh_keygen() -> PathBuf {
    require_program(
        "ssh-keygen",
        &[],
        "install the OpenSSH client (Debian: apt-get install openssh-client; scripts/test does this)",
    )
}

fn openssl() -> PathBuf {
    require_program(
        "openssl",
        &[],
        "install it (Debian: apt-get install openssl; scripts/test does this)",
    )
}

/// The forwarder for `case`, with `passphrase_file` (if any) as its PassphraseFile. The lab
/// key only fills the builder; `-i` names the case's file, and the lab key is not authorized.
fn forwarder(
    sshd: &Sshd,
    lab_key: &UserKey,
    case: &Case,
    passphrase_file: Option<&Path>,
) -> TunnelBuilder {
    let mut builder = TunnelBuilder::new(ClientKind::Forwarder, sshd, lab_key)
        .identity(&case.path)
        .verbose();
    if let Some(file) = passphrase_file {
        builder = builder.option(&format!("PassphraseFile={}", file.display()));
    }
    builder
}

fn authorize(sshd: &Sshd, case: &Case) {
    let mut file = OpenOptions::new()
        .append(true)
        .open(sshd.authorized_keys_path())
        .expect("open authorized_keys");
    writeln!(file, "{}", case.public_line).expect("append to authorized_keys");
}

/// What went wrong with `case`, with the command line and the forwarder's log.
fn failure(case: &Case, tunnel: &Tunnel, why: &str) -> String {
    format!(
        "{}: {why}\n  key file: {}\n  command: {}\n  forwarder log ends with:\n{}",
        case.label,
        case.path.display(),
        tunnel.command_line(),
        file_tail(tunnel.log_path(), 40)
    )
}

/// Polls sshd's log after byte `offset` for a line containing `needle`.
fn sshd_log_line_after(sshd: &Sshd, offset: usize, needle: &str) -> Option<String> {
    let deadline = Instant::now() + LOG_TIMEOUT;
    loop {
        let log = sshd.log();
        let since = log.get(offset..).unwrap_or_default();
        if let Some(line) = since.lines().find(|l| l.contains(needle)) {
            return Some(line.to_owned());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Logs in with `case`'s key file, carries an echo through the tunnel and checks that sshd
/// let in exactly that key. Returns how long it took.
fn log_in_with(
    sshd: &Sshd,
    echo: &EchoServer,
    lab_key: &UserKey,
    case: &Case,
) -> Result<Duration, String> {
    authorize(sshd, case);
    let log_start = sshd.log().len();
    let started = Instant::now();
    let mut tunnel = forwarder(sshd, lab_key, case, case.passphrase_file.as_deref())
        .forward_to(echo.port())
        .spawn();
    let deadline = started + READY_TIMEOUT;
    while !port_listening(tunnel.local_port()) {
        if let Some(status) = tunnel.exited() {
            return Err(failure(
                case,
                &tunnel,
                &format!("exited ({status}) before listening"),
            ));
        }
        if Instant::now() >= deadline {
            return Err(failure(
                case,
                &tunnel,
                &format!("not listening within {READY_TIMEOUT:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let payload = case.label.as_bytes();
    match echo_round_trip(tunnel.local_port(), payload) {
        Ok(back) if back == payload => {}
        Ok(back) => {
            let why = format!("the echo came back as {:?}", String::from_utf8_lossy(&back));
            return Err(failure(case, &tunnel, &why));
        }
        Err(e) => return Err(failure(case, &tunnel, &format!("echo round trip: {e}"))),
    }
    let elapsed = started.elapsed();
    // "Accepted publickey for USER from 127.0.0.1 port N ssh2: RSA SHA256:..."
    match sshd_log_line_after(sshd, log_start, "Accepted publickey for") {
        Some(line) if line.ends_with(&case.fingerprint) => {}
        Some(line) => {
            let why = format!(
                "sshd accepted another key than {}: {line}",
                case.fingerprint
            );
            return Err(failure(case, &tunnel, &why));
        }
        None => {
            let why = format!(
                "sshd logged no \"Accepted publickey\"; its log ends with:\n{}",
                file_tail(sshd.log_path(), 20)
            );
            return Err(failure(case, &tunnel, &why));
        }
    }
    if tunnel.log().contains(PASSPHRASE) {
        return Err(failure(case, &tunnel, "the passphrase appears in the log"));
    }
    Ok(elapsed)
}

/// Makes one or more key files (a job that fails panics, as the lab's tools do).
struct Job {
    label: String,
    /// Rough cost, so the slowest jobs start first.
    cost: u32,
    make: Box<dyn FnOnce() -> Vec<Case> + Send>,
}

impl Job {
    fn new(label: String, cost: u32, make: impl FnOnce() -> Vec<Case> + Send + 'static) -> Job {
        Job {
            label,
            cost,
            make: Box::new(make),
        }
    }

    /// The cases, or why they could not be made.
    fn run(self) -> Result<Vec<Case>, String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(self.make)).map_err(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            format!("making {} failed: {why}", self.label)
        })
    }
}

/// Every key to try, slowest to make first.
fn jobs(workshop: &Workshop) -> Vec<Job> {
    let mut jobs = Vec::new();
    for key_type in KEY_TYPES {
        if key_type.label == RSA8192.label {
            let w = workshop.clone();
            let label = "rsa8192 in every format".to_owned();
            jobs.push(Job::new(label, key_type.cost, move || {
                w.rsa8192_every_format()
            }));
            continue;
        }
        for format in Format::for_type(key_type) {
            let w = workshop.clone();
            let label = format!("ssh-keygen {} {}", key_type.label, format.label());
            jobs.push(Job::new(label, key_type.cost, move || {
                vec![w.keygen(key_type, format)]
            }));
        }
    }
    let openssl_keys: [(&str, &[&str], u32); 3] = [
        ("ed25519", &["-algorithm", "ed25519"], 0),
        (
            "rsa2048",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            2,
        ),
        (
            "ecdsa384",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            0,
        ),
    ];
    for (name, algorithm, cost) in openssl_keys {
        for encrypted in [false, true] {
            let w = workshop.clone();
            let label = format!("openssl {name} (encrypted: {encrypted})");
            jobs.push(Job::new(label, cost, move || {
                vec![w.openssl(name, algorithm, encrypted)]
            }));
        }
    }
    let w = workshop.clone();
    jobs.push(Job::new("the rsa16384 fixture".to_owned(), 0, move || {
        vec![w.rsa16384_fixture()]
    }));
    jobs.sort_by_key(|job| std::cmp::Reverse(job.cost));
    jobs
}

#[test]
fn interop_keyfiles_every_type_and_format_from_ssh_keygen_and_openssl_logs_in() {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("lab-keyfiles-")
        .tempdir()
        .expect("temp dir");
    let workshop = Workshop::new(dir.path());
    // Authorized keys are appended as they are made; this one only fills the builder.
    let lab_key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder().start();
    let echo = EchoServer::start();

    let queue = Mutex::new(jobs(&workshop).into_iter());
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8);
    let mut results: Vec<(String, Result<Duration, String>)> = Vec::new();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<Result<Case, (String, String)>>();
        for _ in 0..workers {
            let tx = tx.clone();
            let queue = &queue;
            scope.spawn(move || {
                loop {
                    let job = queue.lock().expect("job queue").next();
                    let Some(job) = job else { return };
                    let label = job.label.clone();
                    let sent = match job.run() {
                        Ok(cases) => cases.into_iter().try_for_each(|c| tx.send(Ok(c))),
                        Err(why) => tx.send(Err((label, why))),
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        for made in rx {
            match made {
                Ok(case) => {
                    let outcome = log_in_with(&sshd, &echo, &lab_key, &case);
                    results.push((case.label, outcome));
                }
                Err((label, why)) => results.push((label, Err(why))),
            }
        }
    });

    let mut report = String::new();
    let mut failures = Vec::new();
    for (label, outcome) in &results {
        match outcome {
            Ok(took) => report.push_str(&format!("  ok    {took:>9.3?}  {label}\n")),
            Err(why) => {
                report.push_str(&format!("  FAIL             {label}\n"));
                failures.push(why.clone());
            }
        }
    }
    println!(
        "{} key files, {} logged in, in {:.1?} in all:\n{report}\
         not made: ed25519 as PEM or PKCS#8 by ssh-keygen (it cannot write them; \
         openssl's PKCS#8 Ed25519 files are tried instead)",
        results.len(),
        results.len() - failures.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} key files did not log in:\n{report}\n{}",
        failures.len(),
        results.len(),
        failures.join("\n\n")
    );
    // 7 types x 7 formats, Ed25519 in 3 OpenSSH formats, 6 openssl files, the fixture.
    assert_eq!(results.len(), 7 * 7 + 3 + 6 + 1, "{report}");
}

#[test]
fn interop_keyfiles_wrong_passphrase_for_pem_and_pkcs8_keys_names_the_file_and_hides_the_passphrase()
 {
    let dir = tempfile::Builder::new()
        .prefix("lab-keyfiles-")
        .tempdir()
        .expect("temp dir");
    let workshop = Workshop::new(dir.path());
    let wrong_file = dir.path().join("wrong-passphrase");
    write_private(&wrong_file, format!("{WRONG_PASSPHRASE}\n").as_bytes());
    let (ecdsa256, rsa2048) = (key_type("ecdsa256"), key_type("rsa2048"));

    // interop_auth covers an encrypted OpenSSH Ed25519 key with its .pub, which the forwarder
    // only decrypts once sshd accepts the public key. These cover the other formats, with and
    // without a .pub (without one, the key is decrypted before anything is offered).
    let gcm = workshop.keygen(ecdsa256, Format::OpenSshAes256Gcm);
    fs::remove_file(pub_path(&gcm.path)).expect("remove the .pub");
    let cases = [
        gcm,
        workshop.keygen(ecdsa256, Format::PemEncrypted),
        workshop.keygen(rsa2048, Format::Pkcs8Encrypted),
        workshop.openssl("ed25519", &["-algorithm", "ed25519"], true),
    ];
    let sshd = cases
        .iter()
        .fold(Sshd::builder(), |b, c| {
            b.authorized_key_line(c.public_line.clone())
        })
        .start();
    let echo = EchoServer::start();
    let lab_key = UserKey::generate(KeyKind::Ed25519);

    let mut failures = Vec::new();
    for case in &cases {
        let log_start = sshd.log().len();
        let mut tunnel = forwarder(&sshd, &lab_key, case, Some(&wrong_file))
            .forward_to(echo.port())
            .spawn();
        let Some(status) = tunnel.wait_exit(Duration::from_secs(30)) else {
            failures.push(failure(case, &tunnel, "still runs after 30 s"));
            continue;
        };
        let log = tunnel.log();
        let expected = format!("wrong passphrase for {}", case.path.display());
        if status.code() != Some(255) {
            failures.push(failure(
                case,
                &tunnel,
                &format!("exited with {status}, not 255"),
            ));
        } else if !log.contains(&expected) {
            failures.push(failure(
                case,
                &tunnel,
                &format!("no {expected:?} in the log"),
            ));
        } else if log.contains(WRONG_PASSPHRASE) || log.contains(PASSPHRASE) {
            failures.push(failure(case, &tunnel, "a passphrase appears in the log"));
        } else if log.contains("panicked") {
            failures.push(failure(case, &tunnel, "panicked"));
        } else if !(log.contains("Fix what is named above for each key")
            || log.contains("No key could sign: fix what is named above"))
            || log.contains("no private key was given")
            || log.contains("Use a key the server accepts")
        {
            // The final error must point at the passphrase, not at the server or the key type.
            failures.push(failure(
                case,
                &tunnel,
                "the final error gives the wrong advice",
            ));
        }
        let since = sshd.log().get(log_start..).unwrap_or_default().to_owned();
        if since.contains("Accepted publickey") {
            failures.push(failure(case, &tunnel, &format!("sshd let it in:\n{since}")));
        }
    }
    assert_eq!(echo.connections(), 0, "no tunnel may have carried anything");
    assert!(
        failures.is_empty(),
        "{} of {} wrong passphrases were not refused as they should be:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
