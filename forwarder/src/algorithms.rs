//! OpenSSH's syntax for algorithm lists (`Ciphers`, `MACs`, `KexAlgorithms`,
//! `HostKeyAlgorithms`, `PubkeyAcceptedAlgorithms`), and `forwarder -Q`.
//!
//! ```text
//!  "a,b"     replaces the default list            "+a,b"  appends to the default list
//!  "-a,b"    removes from the default list        "^a,b"  puts first, before the default list
//! ```
//! Names may use the wildcards `*` and `?`; a wildcard expands to every supported algorithm it
//! matches, in our order. An exact name we do not support is an error (as in ssh), except in a
//! removal, where it simply removes nothing.

use core::fmt;

use ssh_transport::ClientConfig;
use ssh_transport::cipher;
use ssh_transport::compress::Compression;
use ssh_transport::hostkey::{HostKeyAlgorithm, SignatureAlgorithm};
use ssh_transport::kex::KexAlgorithm;
use ssh_transport::mac;

/// A list specification that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListError {
    /// The setting (`Ciphers`).
    pub setting: &'static str,
    /// What was wrong.
    pub why: String,
    /// What is supported, comma-separated.
    pub supported: String,
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad {}: {}; supported: {}",
            self.setting, self.why, self.supported
        )
    }
}

impl std::error::Error for ListError {}

/// Shell-style matching with `*` (any run) and `?` (any one character).
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with backtracking to the last `*`: linear in practice, never
    // exponential.
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == n.get(ni) => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

fn has_wildcard(s: &str) -> bool {
    s.contains('*') || s.contains('?')
}

/// Applies `spec` to `default`, with names checked against `supported`.
pub fn resolve<'a>(
    setting: &'static str,
    spec: &str,
    default: &[&'a str],
    supported: &[&'a str],
) -> Result<Vec<&'a str>, ListError> {
    let err = |why: String| ListError {
        setting,
        why,
        supported: supported.join(","),
    };
    let names = |list: &str| -> Vec<String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let expand = |list: &str| -> Result<Vec<&'a str>, ListError> {
        let mut out: Vec<&'a str> = Vec::new();
        for name in names(list) {
            let matched: Vec<&'a str> = if has_wildcard(&name) {
                supported
                    .iter()
                    .copied()
                    .filter(|s| wildcard_match(&name, s))
                    .collect()
            } else {
                supported.iter().copied().filter(|s| *s == name).collect()
            };
            if matched.is_empty() {
                return Err(err(if has_wildcard(&name) {
                    format!("{name:?} matches no supported algorithm")
                } else {
                    format!("unsupported algorithm {name:?}")
                }));
            }
            for m in matched {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        Ok(out)
    };
    let mut list: Vec<&'a str> = if let Some(rest) = spec.strip_prefix('-') {
        let patterns = names(rest);
        default
            .iter()
            .copied()
            .filter(|d| !patterns.iter().any(|p| wildcard_match(p, d)))
            .collect()
    } else if let Some(rest) = spec.strip_prefix('+') {
        let mut v = default.to_vec();
        v.extend(expand(rest)?);
        v
    } else if let Some(rest) = spec.strip_prefix('^') {
        let mut v = expand(rest)?;
        v.extend_from_slice(default);
        v
    } else {
        expand(spec)?
    };
    let mut seen = Vec::new();
    list.retain(|n| {
        let new = !seen.contains(n);
        seen.push(*n);
        new
    });
    if list.is_empty() {
        return Err(err(format!("{spec:?} leaves no algorithm")));
    }
    Ok(list)
}

/// The kinds `-Q` answers, with every supported name, in our order of preference.
pub fn query(what: &str) -> Option<Vec<&'static str>> {
    // As ssh -Q, the option names are case-insensitive (`HostKeyAlgorithms`).
    let what = what.to_ascii_lowercase();
    let what = what.as_str();
    Some(match what {
        "cipher" | "ciphers" => cipher::ALL.iter().map(|c| c.name).collect(),
        "cipher-auth" => cipher::ALL
            .iter()
            .filter(|c| c.aead)
            .map(|c| c.name)
            .collect(),
        "mac" | "macs" => mac::ALL.iter().map(|m| m.name).collect(),
        "compression" => Compression::ALL.iter().map(|c| c.name()).collect(),
        "kex" | "kexalgorithms" => KexAlgorithm::ALL.iter().map(|k| k.name()).collect(),
        "key" | "key-plain" | "key-cert" => {
            // As ssh -Q: `key` is every key type, certificates included.
            let mut types: Vec<&'static str> = Vec::new();
            let plain = what != "key-cert";
            let certs = what != "key-plain";
            for a in HostKeyAlgorithm::ALL {
                let t = a.key_type_name();
                if ((a.certificate && certs) || (!a.certificate && plain)) && !types.contains(&t) {
                    types.push(t);
                }
            }
            types
        }
        "hostkeyalgorithms" | "key-sig" => HostKeyAlgorithm::ALL.iter().map(|a| a.name()).collect(),
        "sig" | "pubkeyacceptedalgorithms" => {
            SignatureAlgorithm::ALL.iter().map(|s| s.name()).collect()
        }
        _ => return None,
    })
}

/// What `-Q` knows about, for its error message.
pub const QUERY_KINDS: &str = "cipher, cipher-auth, compression, kex, key, key-cert, key-plain, key-sig, mac, sig, \
     HostKeyAlgorithms";

/// Default lists, as names, for the settings that take list syntax.
pub fn defaults() -> ClientConfig {
    ClientConfig::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[&str] = &[
        "aes128-gcm",
        "aes256-gcm",
        "chacha20",
        "aes128-ctr",
        "3des-cbc",
    ];
    const DEF: &[&str] = &["aes128-gcm", "aes256-gcm", "chacha20", "aes128-ctr"];

    fn r(spec: &str) -> Result<Vec<&'static str>, ListError> {
        resolve("Ciphers", spec, DEF, ALL)
    }

    #[test]
    fn openssh_forms() {
        assert_eq!(
            r("chacha20,aes128-gcm").unwrap(),
            ["chacha20", "aes128-gcm"]
        );
        assert_eq!(
            r("+3des-cbc").unwrap(),
            [
                "aes128-gcm",
                "aes256-gcm",
                "chacha20",
                "aes128-ctr",
                "3des-cbc"
            ]
        );
        assert_eq!(r("-aes*").unwrap(), ["chacha20"]);
        assert_eq!(
            r("^aes128-ctr").unwrap(),
            ["aes128-ctr", "aes128-gcm", "aes256-gcm", "chacha20"]
        );
        assert_eq!(r("aes*-gcm").unwrap(), ["aes128-gcm", "aes256-gcm"]);
        assert_eq!(r("-nothing").unwrap(), DEF);
        assert_eq!(r("+aes128-gcm").unwrap(), DEF, "no duplicates");
    }

    #[test]
    fn bad_specs_say_what_is_supported() {
        let e = r("aes128-gcm,bogus").unwrap_err();
        assert!(e.to_string().contains("\"bogus\""), "{e}");
        assert!(e.to_string().contains("3des-cbc"), "{e}");
        assert!(r("zz*").is_err());
        assert!(r("-*").is_err(), "nothing left");
        assert!(r("").is_err());
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*c", "abbbc"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("*nistp*", "ecdsa-sha2-nistp256"));
        assert!(!wildcard_match("rsa*", "ssh-rsa"));
        assert!(wildcard_match("**a**", "xxaxx"));
    }

    #[test]
    fn query_lists_every_kind() {
        for k in [
            "cipher",
            "cipher-auth",
            "compression",
            "kex",
            "key",
            "mac",
            "sig",
        ] {
            assert!(query(k).is_some_and(|v| !v.is_empty()), "{k}");
        }
        assert!(query("bogus").is_none());
        assert!(query("sig").unwrap().contains(&"ssh-rsa"));
        // Certificates: every key type and host key algorithm has its certificate form.
        let keys = query("key").unwrap();
        assert!(
            keys.contains(&"ssh-ed25519") && keys.contains(&"ssh-ed25519-cert-v01@openssh.com")
        );
        assert_eq!(query("key-cert").unwrap().len(), 5);
        assert!(
            query("key-plain")
                .unwrap()
                .iter()
                .all(|k| !k.contains("cert"))
        );
        let host = query("HostKeyAlgorithms").unwrap();
        for name in [
            "rsa-sha2-512-cert-v01@openssh.com",
            "rsa-sha2-256-cert-v01@openssh.com",
            "ssh-rsa-cert-v01@openssh.com",
            "ecdsa-sha2-nistp521-cert-v01@openssh.com",
            "ssh-ed25519",
        ] {
            assert!(host.contains(&name), "{name}");
        }
        assert!(!query("sig").unwrap().iter().any(|s| s.contains("cert")));
        assert!(
            query("mac")
                .unwrap()
                .contains(&"hmac-sha2-256-etm@openssh.com")
        );
        assert!(query("compression").unwrap().contains(&"zlib@openssh.com"));
    }
}
