//! The text wrapping of key files: `-----BEGIN <label>-----`, optional RFC 1421 headers, a
//! base64 body, `-----END <label>-----`. OpenSSH and PEM keys share it.

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::error::KeyFileError;

/// One decoded block.
pub(super) struct Armor<'a> {
    /// What the BEGIN line names, e.g. `OPENSSH PRIVATE KEY`.
    pub(super) label: &'a str,
    /// Whether a `Proc-Type: 4,ENCRYPTED` or `DEK-Info` header was present.
    pub(super) encrypted_headers: bool,
    /// The value of the `DEK-Info` header (`cipher,hex-iv`), if there was one.
    pub(super) dek_info: Option<&'a str>,
    /// The base64 body, not yet decoded: an encrypted block is reported without decoding it.
    body: Zeroizing<String>,
}

impl Armor<'_> {
    /// Decodes the body.
    pub(super) fn decode(&self) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
        base64::engine::general_purpose::STANDARD
            .decode(self.body.as_bytes())
            .map(Zeroizing::new)
            // The decoder's message quotes an offending byte of the secret; leave it out.
            .map_err(|_| {
                KeyFileError::Malformed(
                    "the base64 text between the BEGIN and END lines is invalid".into(),
                )
            })
    }
}

/// Finds the first BEGIN/END block. Text before it is ignored (tools such as openssl write
/// "Bag Attributes" there), and so is an `EC PARAMETERS` block (`openssl ecparam -genkey`
/// writes one before the key, whose own DER names the curve again); text after it is refused,
/// since a second block would be ambiguous.
pub(super) fn parse(text: &str) -> Result<Armor<'_>, KeyFileError> {
    let mut lines = text.lines().map(str::trim);
    let label = loop {
        let Some(line) = lines.next() else {
            return Err(not_found(text));
        };
        if line.starts_with("---- BEGIN SSH2 ENCRYPTED PRIVATE KEY") {
            return Err(KeyFileError::UnsupportedFormat("SSH.COM (SSH2)"));
        }
        if line.starts_with("---- BEGIN SSH2 PUBLIC KEY") {
            return Err(KeyFileError::PublicKeyInstead);
        }
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if label == "EC PARAMETERS" {
                if !lines.by_ref().any(|l| l == "-----END EC PARAMETERS-----") {
                    return Err(KeyFileError::Malformed(
                        "there is no \"-----END EC PARAMETERS-----\" line".into(),
                    ));
                }
                continue;
            }
            break label;
        }
    };

    // Sized for all of it at once: a reallocation would leave a copy behind, unwiped.
    let mut body = Zeroizing::new(String::with_capacity(text.len()));
    let mut encrypted_headers = false;
    let mut dek_info = None;
    let mut found_end = false;
    for line in lines.by_ref() {
        if let Some(end) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if end != label {
                return Err(KeyFileError::Malformed(format!(
                    "the block begins as {label:?} but ends as {:?}",
                    end.chars().take(64).collect::<String>()
                )));
            }
            found_end = true;
            break;
        }
        // Base64 has no ':', so a line with one is an RFC 1421 header.
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("DEK-Info") {
                dek_info = Some(value.trim());
                encrypted_headers = true;
            }
            if name.eq_ignore_ascii_case("Proc-Type") && value.contains("ENCRYPTED") {
                encrypted_headers = true;
            }
            continue;
        }
        body.push_str(line);
    }
    if !found_end {
        return Err(KeyFileError::Malformed(format!(
            "there is no \"-----END {label}-----\" line"
        )));
    }
    if lines.any(|l| !l.is_empty()) {
        return Err(KeyFileError::Malformed(
            "there is text after the END line".into(),
        ));
    }
    Ok(Armor {
        label,
        encrypted_headers,
        dek_info,
        body,
    })
}

/// No BEGIN line: say what the file looks like instead, when that is recognisable.
fn not_found(text: &str) -> KeyFileError {
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    let Some(first) = first else {
        return KeyFileError::NotAPrivateKey;
    };
    if first.starts_with("PuTTY-User-Key-File-") {
        return KeyFileError::UnsupportedFormat("PuTTY (.ppk)");
    }
    let mut words = first.split_ascii_whitespace();
    let looks_public = words
        .next()
        .is_some_and(|t| t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-"))
        && words.next().is_some_and(|b| b.starts_with("AAAA"));
    if looks_public {
        KeyFileError::PublicKeyInstead
    } else {
        KeyFileError::NotAPrivateKey
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_block_after_leading_text_and_keeps_headers() {
        let text = "Bag Attributes\n\n-----BEGIN RSA PRIVATE KEY-----\r\nProc-Type: 4,ENCRYPTED\r\nDEK-Info: AES-128-CBC,00\r\n\r\nAAEC\r\n-----END RSA PRIVATE KEY-----\r\n\r\n";
        let a = parse(text).unwrap();
        assert_eq!(a.label, "RSA PRIVATE KEY");
        assert!(a.encrypted_headers);
        assert_eq!(a.dek_info, Some("AES-128-CBC,00"));
        assert_eq!(&a.decode().unwrap()[..], &[0, 1, 2]);
    }

    #[test]
    fn skips_ec_parameters_before_the_key() {
        let text = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n\
                    -----BEGIN EC PRIVATE KEY-----\nAAEC\n-----END EC PRIVATE KEY-----\n";
        let a = parse(text).unwrap();
        assert_eq!(a.label, "EC PRIVATE KEY");
        assert_eq!(&a.decode().unwrap()[..], &[0, 1, 2]);
        let unterminated = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n";
        assert!(matches!(
            parse(unterminated),
            Err(KeyFileError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_broken_blocks() {
        let cases = [
            "-----BEGIN X-----\nAAEC\n",
            "-----BEGIN X-----\nAAEC\n-----END Y-----\n",
            "-----BEGIN X-----\nAAEC\n-----END X-----\ntrailing\n",
        ];
        for case in cases {
            assert!(
                matches!(parse(case), Err(KeyFileError::Malformed(_))),
                "{case:?}"
            );
        }
        let bad_b64 = parse("-----BEGIN X-----\nA*EC\n-----END X-----\n").unwrap();
        assert!(matches!(bad_b64.decode(), Err(KeyFileError::Malformed(_))));
    }

    #[test]
    fn recognises_what_is_not_a_private_key() {
        assert_eq!(
            parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM me@host\n").err(),
            Some(KeyFileError::PublicKeyInstead)
        );
        assert_eq!(
            parse("---- BEGIN SSH2 PUBLIC KEY ----\n").err(),
            Some(KeyFileError::PublicKeyInstead)
        );
        assert_eq!(
            parse("PuTTY-User-Key-File-3: ssh-rsa\n").err(),
            Some(KeyFileError::UnsupportedFormat("PuTTY (.ppk)"))
        );
        assert_eq!(parse("").err(), Some(KeyFileError::NotAPrivateKey));
        assert_eq!(parse("hello\n").err(), Some(KeyFileError::NotAPrivateKey));
    }
}
