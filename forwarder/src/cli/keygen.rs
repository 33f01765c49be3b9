//! `forwarder keygen`: the options of the key pair a platform hands its customers.

use std::path::PathBuf;

use super::{CliError, Environment};

/// What kind of key to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeygenType {
    /// RSA with this many bits (the default, 4096: what bastions of every age accept).
    Rsa(u32),
    /// Ed25519.
    Ed25519,
}

/// `forwarder keygen` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeygenOptions {
    /// Key type and size.
    pub key_type: KeygenType,
    /// Where the private key goes; the public key goes to the same path plus `.pub`.
    pub file: PathBuf,
    /// The key's comment.
    pub comment: String,
    /// `host:port` destinations the authorized_keys line allows, in order.
    pub permit_open: Vec<String>,
}

/// The usage text of `forwarder keygen`.
pub fn usage() -> &'static str {
    "usage: forwarder keygen [-t rsa|ed25519] [-b bits] [-f file] [-C comment]
                        [--permit-open host:port]...

Writes a new key pair in OpenSSH format (file and file.pub; an existing file is never
overwritten) and prints the line a bastion's admin adds to authorized_keys (sshd 7.8 or
later): local TCP forwards may reach exactly the --permit-open destinations, remote (-R)
forwards may not listen anywhere, and there is no shell, no command, no agent or X11
forwarding. No authorized_keys option limits forwarding to and from Unix sockets on the
bastion: the admin forbids it with AllowStreamLocalForwarding no for that user.

  -t rsa|ed25519        key type (default rsa)
  -b bits               RSA size, 2048 to 16384 (default 4096)
  -f file               private key file (default ~/.ssh/id_rsa or ~/.ssh/id_ed25519)
  -C comment            comment (default user@host)
  --permit-open h:p     a destination the key may reach, e.g. db.internal:5432 (repeatable)
"
}

/// Parses the arguments after `keygen`.
pub(super) fn parse(args: &[String], env: &Environment) -> Result<KeygenOptions, CliError> {
    let mut key_type = None;
    let mut bits = None;
    let mut file = None;
    let mut comment = None;
    let mut permit_open = Vec::new();
    let mut it = args.iter();
    let bad = |key: &str, value: &str, expected: &'static str| CliError::BadValue {
        key: key.to_owned(),
        value: value.to_owned(),
        expected,
    };
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = |example: &'static str| -> Result<String, CliError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it.next().cloned().ok_or(CliError::MissingArgument {
                    option: flag.chars().nth(1).unwrap_or('-'),
                    example,
                }),
            }
        };
        match flag {
            "-t" => {
                let v = value("-t ed25519")?;
                key_type = Some(match v.to_ascii_lowercase().as_str() {
                    "rsa" => "rsa",
                    "ed25519" => "ed25519",
                    _ => return Err(bad("-t", &v, "rsa or ed25519")),
                });
            }
            "-b" => {
                let v = value("-b 4096")?;
                let n: u32 = v
                    .parse()
                    .ok()
                    .filter(|n| (2048..=16384).contains(n))
                    .ok_or_else(|| bad("-b", &v, "a number of bits from 2048 to 16384"))?;
                bits = Some(n);
            }
            "-f" => {
                let v = value("-f ~/.ssh/bastion_key")?;
                if v.is_empty() {
                    return Err(bad("-f", &v, "a file path"));
                }
                file = Some(v);
            }
            "-C" => comment = Some(value("-C platform@example.com")?),
            "--permit-open" => {
                let v = value("--permit-open db.internal:5432")?;
                permit_open.push(check_permit_open(&v)?);
            }
            "-h" | "--help" => {
                return Err(CliError::BadValue {
                    key: "keygen".into(),
                    value: String::new(),
                    expected: "the options below",
                });
            }
            other => {
                return Err(CliError::UnknownOption {
                    option: format!("keygen {other}"),
                });
            }
        }
    }
    let key_type = match (key_type.unwrap_or("rsa"), bits) {
        ("ed25519", Some(_)) => {
            return Err(bad(
                "-b",
                "",
                "no -b with -t ed25519: Ed25519 keys have one size",
            ));
        }
        ("ed25519", None) => KeygenType::Ed25519,
        (_, b) => KeygenType::Rsa(b.unwrap_or(4096)),
    };
    let default_name = match key_type {
        KeygenType::Rsa(_) => "~/.ssh/id_rsa",
        KeygenType::Ed25519 => "~/.ssh/id_ed25519",
    };
    let file = file.unwrap_or_else(|| default_name.to_owned());
    let file = match (file.strip_prefix("~/"), &env.home) {
        (Some(rest), Some(home)) => home.join(rest),
        (Some(_), None) => {
            return Err(bad("-f", &file, "an absolute path: $HOME is not set"));
        }
        (None, _) => PathBuf::from(file),
    };
    let comment = comment.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        format!("{}@{host}", env.user.as_deref().unwrap_or("forwarder"))
    });
    if comment.chars().any(|c| c.is_control()) {
        return Err(bad("-C", &comment, "a comment without control characters"));
    }
    Ok(KeygenOptions {
        key_type,
        file,
        comment,
        permit_open,
    })
}

/// `host:port` as sshd's permitopen takes it: a host name or address (IPv6 in brackets) or
/// `*`, and a port number or `*`. Quotes and commas would break out of the option.
fn check_permit_open(v: &str) -> Result<String, CliError> {
    let bad = || CliError::BadValue {
        key: "--permit-open".into(),
        value: v.to_owned(),
        expected: "host:port, such as db.internal:5432 or [2001:db8::5]:5432",
    };
    let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*'))
    };
    let port_ok = port == "*"
        || (!port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok {
        Ok(v.to_owned())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        Environment {
            home: Some("/home/u".into()),
            user: Some("u".into()),
            cache_home: None,
        }
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn defaults_are_rsa_4096_in_ssh_dir() {
        let o = parse(&args(""), &env()).unwrap();
        assert_eq!(o.key_type, KeygenType::Rsa(4096));
        assert_eq!(o.file, PathBuf::from("/home/u/.ssh/id_rsa"));
        assert!(o.comment.starts_with("u@"));
        assert!(o.permit_open.is_empty());
    }

    #[test]
    fn options_are_read() {
        let o = parse(
            &args("-t ed25519 -f /tmp/k -C platform --permit-open db.internal:5432 --permit-open=[::1]:6432"),
            &env(),
        )
        .unwrap();
        assert_eq!(o.key_type, KeygenType::Ed25519);
        assert_eq!(o.file, PathBuf::from("/tmp/k"));
        assert_eq!(o.comment, "platform");
        assert_eq!(o.permit_open, ["db.internal:5432", "[::1]:6432"]);
        assert_eq!(
            parse(&args("-b 3072"), &env()).unwrap().key_type,
            KeygenType::Rsa(3072)
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            "-t dsa",
            "-b 1024",
            "-b 99999",
            "-t ed25519 -b 4096",
            "--permit-open db",
            "--permit-open db:0",
            "--permit-open db:99999",
            "--permit-open a\",b:1",
            "--permit-open :5432",
            "-f",
            "-z",
        ] {
            assert!(parse(&args(bad), &env()).is_err(), "{bad}");
        }
    }
}
