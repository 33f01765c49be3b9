//! `forwarder keygen`: the key pair a platform hands its customers, and the authorized_keys
//! line that lets it reach exactly the databases it needs, listen nowhere on the bastion and
//! run nothing there.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ssh_auth::PrivateKey;

use crate::cli::keygen::{KeygenOptions, KeygenType};

/// The `permitlisten` option that lets the key listen nowhere. sshd has no per-key `none`
/// for it (the value must be `[host:]port`; `none` is read as a port name, and a bad option
/// makes sshd ignore the whole line), so it names a listen host no request can match: sshd
/// lowercases the host a client asks to listen on, then matches it case-sensitively against
/// this pattern. The port is privileged, so a server that compared hosts without case would
/// still listen nowhere a non-root user can bind. sshd before 7.8 knows no `permitlisten`
/// and ignores the line.
const PERMIT_NO_LISTEN: &str = "permitlisten=\"NONE:1\"";

/// A `permitopen` or `permitlisten` value no request matches (as `PERMIT_NO_LISTEN` is): as
/// the only `permitopen`, it lets a key that only needs remote forwards open no channel.
pub const PERMIT_NOTHING: &str = "NONE:1";

/// The authorized_keys line for `public_line` (`type base64 comment`): `restrict` turns off
/// port, agent and X11 forwarding, pty allocation and the user's rc file; `port-forwarding`
/// turns all port forwarding back on (local and remote, TCP and Unix-socket), so each
/// `permitopen` names a destination local forwards may reach and a `permitlisten` that
/// matches nothing refuses every remote (`-R`) listen; `command="/bin/false"` makes any
/// shell or command the key asks for fail at once (`restrict` alone would still run
/// commands without a terminal). Forwarding with `-N` opens no session, so the forced
/// command never runs for the tunnel itself. No per-key option limits Unix-socket
/// forwarding: that takes the server's `AllowStreamLocalForwarding no`. Each of
/// `permit_listen` (`host:port`, `*` for any port) is a remote forward's listen the key may
/// ask for; none, and it may listen nowhere.
pub fn authorized_keys_line(
    public_line: &str,
    permit_open: &[String],
    permit_listen: &[String],
) -> String {
    let mut options = String::from("restrict,port-forwarding");
    for dest in permit_open {
        options.push_str(&format!(",permitopen=\"{dest}\""));
    }
    if permit_listen.is_empty() {
        options.push(',');
        options.push_str(PERMIT_NO_LISTEN);
    }
    for listen in permit_listen {
        options.push_str(&format!(",permitlisten=\"{listen}\""));
    }
    options.push_str(",command=\"/bin/false\"");
    format!("{options} {public_line}")
}

fn pub_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Runs `forwarder keygen`; returns the exit status.
pub fn run(opts: &KeygenOptions) -> i32 {
    match generate(opts) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("forwarder keygen: {e}");
            crate::app::EXIT_FAILURE
        }
    }
}

/// Makes and writes the key pair; returns what to print.
pub fn generate(opts: &KeygenOptions) -> Result<String, String> {
    let public_file = pub_path(&opts.file);
    for p in [&opts.file, &public_file] {
        if p.exists() {
            return Err(format!(
                "{} already exists; choose another file with -f (keygen never overwrites a key)",
                p.display()
            ));
        }
    }
    if let Some(dir) = opts
        .file
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    let key = match opts.key_type {
        KeygenType::Rsa(bits) => PrivateKey::generate_rsa(bits as usize),
        KeygenType::Ed25519 => PrivateKey::generate_ed25519(),
    }
    .map_err(|e| format!("key generation failed: {e}"))?;
    let private = key
        .to_openssh_file(&opts.comment)
        .map_err(|e| format!("cannot encode the key: {e}"))?;
    let public_line = format!("{} {}", key.public_key().to_openssh_line(), opts.comment);
    write_new(&opts.file, private.as_bytes(), 0o600)
        .map_err(|e| format!("cannot write {}: {e}", opts.file.display()))?;
    write_new(&public_file, format!("{public_line}\n").as_bytes(), 0o644)
        .map_err(|e| format!("cannot write {}: {e}", public_file.display()))?;

    let mut out = String::new();
    out.push_str(&format!(
        "Wrote {} and {} ({}).\n",
        opts.file.display(),
        public_file.display(),
        key.fingerprint()
    ));
    out.push_str(
        "\nAsk the bastion's admin to add this line to ~/.ssh/authorized_keys of the user \
         the platform logs in as:\n\n",
    );
    out.push_str(&authorized_keys_line(&public_line, &opts.permit_open, &[]));
    out.push('\n');
    out.push_str(
        "\nsshd 7.8 or later is needed (older ones ignore the line: the key is refused). No \
         authorized_keys option limits forwarding to and from Unix sockets: to forbid it, the \
         admin sets AllowStreamLocalForwarding no for that user (in a Match User block of \
         sshd_config).\n",
    );
    if opts.permit_open.is_empty() {
        out.push_str(
            "\nWarning: without --permit-open this key may forward to any host the bastion \
             can reach; give --permit-open host:port for each database.\n",
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_allows_the_named_forwards_and_no_remote_listen() {
        assert_eq!(
            authorized_keys_line(
                "ssh-ed25519 AAAA c",
                &["db.internal:5432".into(), "[::1]:6432".into()],
                &[]
            ),
            "restrict,port-forwarding,permitopen=\"db.internal:5432\",permitopen=\"[::1]:6432\",\
             permitlisten=\"NONE:1\",command=\"/bin/false\" ssh-ed25519 AAAA c"
        );
    }

    #[test]
    fn line_for_remote_forwards_names_their_listens_and_opens_nothing() {
        assert_eq!(
            authorized_keys_line(
                "ssh-ed25519 AAAA c",
                &[PERMIT_NOTHING.into()],
                &["localhost:8022".into(), "localhost:*".into()]
            ),
            "restrict,port-forwarding,permitopen=\"NONE:1\",permitlisten=\"localhost:8022\",\
             permitlisten=\"localhost:*\",command=\"/bin/false\" ssh-ed25519 AAAA c"
        );
    }
}
