//! Test certificates for the lab's database servers, made with `openssl`: a self-signed one
//! for `localhost`, or a test CA and a certificate it signs for a name. Keys are P-256 unless
//! a curve is asked for, valid for 7 days, readable by the server's user alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::postgres::os_user_ids;
use crate::process::{require_program, run_ok};

/// Longest any one `openssl` run may take.
const OPENSSL_TIMEOUT: Duration = Duration::from_secs(60);

fn openssl() -> Command {
    Command::new(require_program(
        "openssl",
        &[],
        "install openssl (Debian: apt-get install -y openssl)",
    ))
}

/// A new P-256 key at `key` and a request or certificate at `out` (`req` with `args`).
fn req(key: &Path, out: &Path, args: &[&str], what: &str) {
    req_on(key, out, "prime256v1", args, what);
}

/// [`req`] with a key on `curve` (an OpenSSL curve name).
fn req_on(key: &Path, out: &Path, curve: &str, args: &[&str], what: &str) {
    let mut cmd = openssl();
    cmd.args(["req", "-nodes", "-newkey", "ec"])
        .args(["-pkeyopt", &format!("ec_paramgen_curve:{curve}")])
        .args(args)
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(out);
    run_ok(&mut cmd, OPENSSL_TIMEOUT, what);
}

/// A self-signed certificate for `localhost` and 127.0.0.1 at `crt`, its key at `key`, both
/// handed to `run_as` (the server's user) when given.
pub(crate) fn self_signed(crt: &Path, key: &Path, run_as: Option<&str>, what: &str) {
    self_signed_on(crt, key, "prime256v1", run_as, what);
}

/// [`self_signed`] with a key on `curve` (an OpenSSL curve name, `secp521r1` for P-521).
pub(crate) fn self_signed_on(
    crt: &Path,
    key: &Path,
    curve: &str,
    run_as: Option<&str>,
    what: &str,
) {
    req_on(
        key,
        crt,
        curve,
        &[
            "-x509",
            "-days",
            "7",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        what,
    );
    hand_over(crt, key, run_as);
}

/// A test CA in `dir` (`ca.pem`, `ca.key`) and a certificate at `crt` for `name`
/// (subjectAltName DNS) signed by it, with its key at `key`. Returns the CA's path.
pub(crate) fn ca_signed(
    dir: &Path,
    crt: &Path,
    key: &Path,
    name: &str,
    run_as: Option<&str>,
) -> PathBuf {
    let (ca, ca_key, csr) = (
        dir.join("ca.pem"),
        dir.join("ca.key"),
        dir.join("server.csr"),
    );
    let ext = dir.join("server-ext.cnf");
    fs::write(
        &ext,
        format!(
            "subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .expect("write the certificate's extensions");
    req(
        &ca_key,
        &ca,
        &[
            "-x509",
            "-days",
            "7",
            "-subj",
            "/CN=forwarder lab test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        "openssl req (the test CA)",
    );
    req(
        key,
        &csr,
        &["-new", "-subj", &format!("/CN={name}")],
        "openssl req (the server's key)",
    );
    let mut cmd = openssl();
    cmd.args(["x509", "-req", "-days", "7", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .args(["-CAcreateserial", "-extfile"])
        .arg(&ext)
        .arg("-out")
        .arg(crt);
    run_ok(&mut cmd, OPENSSL_TIMEOUT, "openssl x509 (the CA signs)");
    hand_over(crt, key, run_as);
    ca
}

/// The key readable by its owner alone (servers refuse others), both files owned by `run_as`.
fn hand_over(crt: &Path, key: &Path, run_as: Option<&str>) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(key, fs::Permissions::from_mode(0o600)).expect("chmod the key");
    if let Some(user) = run_as {
        let (uid, gid) = os_user_ids(user);
        for path in [crt, key] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to {user}: {e}", path.display()));
        }
    }
}
