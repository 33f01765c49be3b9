//! A real Dropbear SSH server on a loopback port: the lab's second server implementation,
//! next to OpenSSH's [`Sshd`](crate::sshd::Sshd), so that client changes are proven against
//! more than one server.
//!
//! Dropbear (2022.83, Debian 12's `dropbear-bin`) has no config file: everything is a
//! command-line flag, and the only place it reads authorized keys from is
//! `~/.ssh/authorized_keys` of the user logging in. The lab therefore never logs in as root:
//! as root it creates a dedicated login user, [`LAB_LOGIN_USER`] (a system user with a home
//! under `/home`, `/bin/sh` as its shell since Dropbear rejects users whose shell is not in
//! `/etc/shells`, and the password field `*`, since Dropbear refuses accounts locked with `!`).
//! Tests run in parallel processes, so every Dropbear adds its key lines to that user's
//! `authorized_keys` under a file lock and takes them out again when dropped.
//!
//! Run as another user, Dropbear can only log that same user in, and the lab does not edit a
//! developer's own `~/.ssh/authorized_keys`: starting a [`Dropbear`] then fails the test with
//! that explanation (CI runs the tests as root).

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::keys::{KeyKind, UserKey};
use crate::lab_server::{LabServer, Listener, listener_methods, log_methods};
use crate::process::{find_program, is_root, run_bounded, run_ok};

pub use crate::lab_server::HostKey;

/// The system user the lab logs in to Dropbear as when the tests run as root.
pub const LAB_LOGIN_USER: &str = "forwarder-lab-ssh";

/// How long editing the shared `authorized_keys` may wait for another test's lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// RSA-4096 host keys take seconds on a slow machine; room for a busy CI box.
const HOST_KEY_TIMEOUT: Duration = Duration::from_secs(120);

/// The host keys a Dropbear gets unless a test chooses: one of each family.
pub const DEFAULT_HOST_KEYS: [KeyKind; 3] =
    [KeyKind::Ed25519, KeyKind::EcdsaP256, KeyKind::Rsa2048];

const HOW_TO_INSTALL: &str =
    "install it with `apt-get update && apt-get install -y dropbear-bin` (scripts/test does this)";

/// The `dropbear` server binary (Debian keeps it in `/usr/sbin`).
pub fn dropbear_binary() -> PathBuf {
    crate::process::require_program(
        "dropbear",
        &["/usr/sbin", "/usr/local/sbin"],
        HOW_TO_INSTALL,
    )
}

/// The `dropbearkey` key generator.
pub fn dropbearkey_binary() -> PathBuf {
    crate::process::require_program(
        "dropbearkey",
        &["/usr/bin", "/usr/local/bin"],
        HOW_TO_INSTALL,
    )
}

/// What `dropbear -V` prints (`Dropbear v2022.83`), for test reports.
pub fn dropbear_version() -> String {
    let out = run_bounded(
        Command::new(dropbear_binary()).arg("-V"),
        Duration::from_secs(10),
        "dropbear -V",
    );
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.trim().to_owned()
}

/// Configures a [`Dropbear`]. Start from [`Dropbear::builder`].
#[derive(Clone, Debug)]
pub struct DropbearBuilder {
    host_keys: Vec<KeyKind>,
    authorized_keys: Vec<String>,
    args: Vec<String>,
    port: Option<u16>,
}

impl DropbearBuilder {
    /// Which host keys to generate, in `-r` order (default: [`DEFAULT_HOST_KEYS`]). Dropbear
    /// has no DSS support worth testing, and its ECDSA keys are P-256, P-384 or P-521.
    pub fn host_keys(mut self, kinds: &[KeyKind]) -> Self {
        self.host_keys = kinds.to_vec();
        self
    }

    /// Authorizes a user key.
    pub fn authorize(self, key: &UserKey) -> Self {
        self.authorized_key_line(key.public_key_line())
    }

    /// Adds a raw `authorized_keys` line, which may carry the options Dropbear knows
    /// (`permitopen="127.0.0.1:5432"`, `no-port-forwarding`, `restrict`, ...).
    pub fn authorized_key_line(mut self, line: impl Into<String>) -> Self {
        self.authorized_keys.push(line.into());
        self
    }

    /// Adds a command-line argument for `dropbear`: `-K` keepalive seconds, `-I` idle timeout,
    /// `-j` / `-k` to refuse local / remote forwards, `-W` window size. Give a flag and its
    /// value as two calls.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Listens on this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Generates the host keys, authorizes the keys, starts Dropbear and waits until it
    /// answers with its version banner.
    pub fn start(self) -> Dropbear {
        Dropbear::start_from(self)
    }
}

/// A running `dropbear -F -E` on 127.0.0.1, killed (with its sessions) on drop; its key lines
/// leave the login user's `authorized_keys` then too.
#[derive(Debug)]
pub struct Dropbear {
    lab: LabServer,
    binary: PathBuf,
    login: LoginUser,
    authorized: Vec<String>,
    args: Vec<String>,
}

impl Dropbear {
    /// A builder with the default host keys, no authorized keys and no extra arguments.
    pub fn builder() -> DropbearBuilder {
        DropbearBuilder {
            host_keys: DEFAULT_HOST_KEYS.to_vec(),
            authorized_keys: Vec::new(),
            args: Vec::new(),
            port: None,
        }
    }

    /// Dropbear with the default host keys that lets `key` in.
    pub fn start(key: &UserKey) -> Dropbear {
        Dropbear::builder().authorize(key).start()
    }

    fn start_from(builder: DropbearBuilder) -> Dropbear {
        let binary = dropbear_binary();
        let login = LoginUser::prepare();
        let mut lab = LabServer::new("dropbear", b"SSH-2.0-dropbear_");
        let host_keys = builder
            .host_keys
            .iter()
            .map(|&kind| generate_host_key(lab.dir(), kind))
            .collect();
        lab.set_host_keys(host_keys);
        login.edit_authorized_keys(|lines| lines.extend(builder.authorized_keys.iter().cloned()));
        let mut dropbear = Dropbear {
            lab,
            binary,
            login,
            authorized: builder.authorized_keys,
            args: builder.args,
        };
        dropbear.start_on(builder.port);
        dropbear
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        // -F: foreground, -E: log to stderr, -s: no password logins, -w: no root logins,
        // -P: the pid file in the temp dir rather than /var/run.
        cmd.args(["-F", "-E", "-s", "-w", "-P"])
            .arg(self.lab.dir().join("dropbear.pid"))
            .arg("-p")
            .arg(format!("127.0.0.1:{}", self.lab.port()));
        for key in self.lab.host_keys() {
            cmd.arg("-r").arg(key.private_key_path());
        }
        cmd.args(&self.args);
        cmd
    }

    /// The command line Dropbear runs with, for failure messages.
    pub fn command_line(&self) -> String {
        format!("{:?}", self.command())
    }

    log_methods!();
    listener_methods!();

    /// The user Dropbear lets in: [`LAB_LOGIN_USER`].
    pub fn user(&self) -> &str {
        &self.login.name
    }

    /// The host keys' `SHA256:...` fingerprints, in `-r` order.
    pub fn fingerprints(&self) -> Vec<&str> {
        self.lab
            .host_keys()
            .iter()
            .map(HostKey::fingerprint)
            .collect()
    }
}

impl Listener for Dropbear {
    fn lab(&self) -> &LabServer {
        &self.lab
    }

    fn lab_mut(&mut self) -> &mut LabServer {
        &mut self.lab
    }

    fn prepare(&self) -> Command {
        self.command()
    }

    fn describe(&self) -> String {
        self.command_line()
    }
}

impl Drop for Dropbear {
    fn drop(&mut self) {
        // Kills Dropbear and its sessions; the temp dir goes when `lab` drops after this.
        self.lab.stop();
        let ours = std::mem::take(&mut self.authorized);
        // Never panic here: the test may already be unwinding.
        if let Err(why) = self.login.try_edit_authorized_keys(|lines| {
            for line in &ours {
                if let Some(i) = lines.iter().position(|l| l == line) {
                    lines.remove(i);
                }
            }
        }) {
            eprintln!("lab: could not remove dropbear's keys from authorized_keys: {why}");
        }
    }
}

/// The account Dropbear logs the tests in as, and its `authorized_keys`.
#[derive(Debug)]
struct LoginUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl LoginUser {
    /// Creates [`LAB_LOGIN_USER`] if needed and makes sure its `~/.ssh` exists.
    fn prepare() -> LoginUser {
        if !is_root() {
            panic!(
                "the Dropbear lab runs as root only: Dropbear 2022 reads authorized keys from \
                 nowhere but the login user's ~/.ssh/authorized_keys, and run as another user \
                 it can only log in that same user, whose own authorized_keys the lab will not \
                 edit; run these tests as root (as CI does)"
            );
        }
        let user = ensure_login_user();
        let ssh_dir = user.home.join(".ssh");
        fs::create_dir_all(&ssh_dir).expect("create the lab user's ~/.ssh");
        // Dropbear refuses keys whose file or directories others may write to.
        for dir in [&user.home, &ssh_dir] {
            std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", dir.display()));
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
        }
        user
    }

    fn authorized_keys_path(&self) -> PathBuf {
        self.home.join(".ssh").join("authorized_keys")
    }

    fn edit_authorized_keys(&self, edit: impl FnOnce(&mut Vec<String>)) {
        self.try_edit_authorized_keys(edit)
            .unwrap_or_else(|why| panic!("edit the lab user's authorized_keys: {why}"));
    }

    /// Rewrites `authorized_keys` under an exclusive lock shared by every test process; the
    /// new file replaces the old one by rename, so Dropbear never reads half of it.
    fn try_edit_authorized_keys(&self, edit: impl FnOnce(&mut Vec<String>)) -> Result<(), String> {
        let path = self.authorized_keys_path();
        let lock_path = path.with_extension("lock");
        let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
        let deadline = Instant::now() + LOCK_TIMEOUT;
        while lock.try_lock().is_err() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} stayed locked for {LOCK_TIMEOUT:?}",
                    lock_path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut lines: Vec<String> = fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        edit(&mut lines);
        let mut text = lines.join("\n");
        text.push('\n');
        let staging = path.with_extension(format!("new-{}", std::process::id()));
        let io = |e: std::io::Error| format!("{}: {e}", staging.display());
        fs::write(&staging, text).map_err(io)?;
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o600)).map_err(io)?;
        std::os::unix::fs::chown(&staging, Some(self.uid), Some(self.gid)).map_err(io)?;
        fs::rename(&staging, &path).map_err(io)?;
        // Dropping the handle releases the lock.
        drop(lock);
        Ok(())
    }
}

/// The passwd entry of [`LAB_LOGIN_USER`], creating the user first if it does not exist.
/// Parallel tests may race to create it, so a failed `useradd` is fine as long as the user
/// exists afterwards.
fn ensure_login_user() -> LoginUser {
    for attempt in 0..10 {
        if let Some(user) = passwd_entry(LAB_LOGIN_USER) {
            return user;
        }
        let useradd = find_program("useradd", &["/usr/sbin", "/sbin"])
            .unwrap_or_else(|| PathBuf::from("useradd"));
        let mut cmd = Command::new(useradd);
        cmd.args([
            "--system",
            "--create-home",
            "--home-dir",
            &format!("/home/{LAB_LOGIN_USER}"),
            "--shell",
            "/bin/sh",
            "--password",
            "*",
            "--comment",
            "test lab login for Dropbear",
        ])
        .arg(LAB_LOGIN_USER);
        let out = run_bounded(&mut cmd, Duration::from_secs(30), "useradd");
        if let Some(user) = passwd_entry(LAB_LOGIN_USER) {
            return user;
        }
        if attempt == 9 {
            panic!(
                "could not create the login user {LAB_LOGIN_USER} for Dropbear: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // useradd fails while another process holds the passwd lock.
        std::thread::sleep(Duration::from_millis(200));
    }
    unreachable!("the last attempt either returns or panics")
}

fn passwd_entry(name: &str) -> Option<LoginUser> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    let fields: Vec<&str> = passwd
        .lines()
        .find(|l| l.split(':').next() == Some(name))?
        .split(':')
        .collect();
    Some(LoginUser {
        name: name.to_owned(),
        uid: fields.get(2)?.parse().ok()?,
        gid: fields.get(3)?.parse().ok()?,
        home: PathBuf::from(fields.get(5)?),
    })
}

/// `dropbearkey -t TYPE [-s BITS]` for a kind.
fn dropbearkey_args(kind: KeyKind) -> Vec<&'static str> {
    match kind {
        KeyKind::Rsa2048 => vec!["-t", "rsa", "-s", "2048"],
        KeyKind::Rsa3072 => vec!["-t", "rsa", "-s", "3072"],
        KeyKind::Rsa4096 => vec!["-t", "rsa", "-s", "4096"],
        KeyKind::Ed25519 => vec!["-t", "ed25519"],
        KeyKind::EcdsaP256 => vec!["-t", "ecdsa", "-s", "256"],
        KeyKind::EcdsaP384 => vec!["-t", "ecdsa", "-s", "384"],
        KeyKind::EcdsaP521 => vec!["-t", "ecdsa", "-s", "521"],
    }
}

/// Generates a host key with `dropbearkey` and reads its public half back with `-y`.
fn generate_host_key(dir: &Path, kind: KeyKind) -> HostKey {
    let private_key = dir.join(format!("dropbear_{}_host_key", kind.label()));
    let mut cmd = Command::new(dropbearkey_binary());
    cmd.args(dropbearkey_args(kind)).arg("-f").arg(&private_key);
    run_ok(&mut cmd, HOST_KEY_TIMEOUT, "dropbearkey");
    let mut cmd = Command::new(dropbearkey_binary());
    cmd.arg("-y").arg("-f").arg(&private_key);
    let out = run_ok(&mut cmd, Duration::from_secs(30), "dropbearkey -y");
    let printed = String::from_utf8_lossy(&out.stdout);
    let public_line = printed
        .lines()
        .find(|l| l.starts_with(&format!("{} ", kind.ssh_name())))
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| {
            panic!(
                "dropbearkey -y printed no {} public key:\n{printed}",
                kind.ssh_name()
            )
        });
    fs::write(
        private_key.with_extension("pub"),
        format!("{public_line}\n"),
    )
    .expect("write a host public key");
    HostKey::read(kind, private_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_kind_has_dropbearkey_arguments() {
        for kind in KeyKind::ALL {
            let args = dropbearkey_args(kind);
            assert_eq!(args.first(), Some(&"-t"), "{kind}");
        }
        assert_eq!(
            dropbearkey_args(KeyKind::EcdsaP384),
            ["-t", "ecdsa", "-s", "384"]
        );
    }
}
