//! The host field of a known_hosts line: a comma-separated pattern list (`*`, `?`, `!`
//! negation) or one hashed name (`|1|salt|HMAC-SHA1(salt, name)`).

use base64::Engine as _;
use ring::hmac;

const SHA1_LEN: usize = 20;

/// One line's host field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum HostField {
    Hashed {
        salt: Vec<u8>,
        digest: Vec<u8>,
    },
    /// The comma-separated patterns as written, lowercased (host names compare without
    /// regard to case), split at each lookup: a line of a million short names costs its own
    /// length, not a million allocations.
    Patterns(Box<str>),
}

impl HostField {
    pub(super) fn parse(field: &str) -> Result<Self, &'static str> {
        if field.starts_with('|') {
            return parse_hashed(field).ok_or("bad hashed host name (expected |1|salt|hash)");
        }
        Ok(Self::Patterns(field.to_ascii_lowercase().into_boxed_str()))
    }

    /// Whether the line applies to `name` (`host` or `[host]:port`, already lowercased). A
    /// negated pattern that matches rules the line out even if another pattern matches.
    pub(super) fn matches(&self, name: &str) -> bool {
        match self {
            Self::Hashed { salt, digest } => {
                let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
                hmac::verify(&key, name.as_bytes(), digest).is_ok()
            }
            Self::Patterns(patterns) => {
                let mut positive = false;
                for p in patterns.split(',') {
                    let (negated, glob) = match p.strip_prefix('!') {
                        Some(rest) => (true, rest),
                        None => (false, p),
                    };
                    if glob_match(glob.as_bytes(), name.as_bytes()) {
                        if negated {
                            return false;
                        }
                        positive = true;
                    }
                }
                positive
            }
        }
    }
}

fn parse_hashed(field: &str) -> Option<HostField> {
    let mut parts = field.split('|');
    let (empty, magic, salt, digest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if !empty.is_empty() || magic != "1" || parts.next().is_some() {
        return None;
    }
    let b64 = &base64::engine::general_purpose::STANDARD;
    // Both are SHA-1 sized; checking the text length first bounds the decode.
    if salt.len() > 32 || digest.len() > 32 {
        return None;
    }
    let salt = b64.decode(salt).ok()?;
    let digest = b64.decode(digest).ok()?;
    (salt.len() == SHA1_LEN && digest.len() == SHA1_LEN)
        .then_some(HostField::Hashed { salt, digest })
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.
pub(super) fn hashed_name(name: &str, salt: &[u8; SHA1_LEN]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
    let tag = hmac::sign(&key, name.as_bytes());
    let b64 = &base64::engine::general_purpose::STANDARD;
    format!("|1|{}|{}", b64.encode(salt), b64.encode(tag.as_ref()))
}

/// Glob match with `*` (any run, also empty) and `?` (one byte). Backtracks only to the last
/// `*`, so the cost is bounded by pattern length times text length whatever the input.
pub(super) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut last_star: Option<(usize, usize)> = None;
    while let Some(&c) = text.get(t) {
        match pattern.get(p) {
            Some(b'*') => {
                last_star = Some((p, t));
                p += 1;
            }
            Some(&pc) if pc == b'?' || pc == c => {
                p += 1;
                t += 1;
            }
            _ => match last_star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    last_star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .unwrap_or_default()
        .iter()
        .all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("*.example.com", "db.example.com"));
        assert!(!m("*.example.com", "example.com"));
        assert!(m("db?.example.com", "db1.example.com"));
        assert!(!m("db?.example.com", "db.example.com"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abcbc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("[*]:2222", "[h]:2222"));
        assert!(!m("[*]:2222", "[h]:22222"));
        assert!(m("**?", "x"));
        assert!(!m("?", ""));
    }

    #[test]
    fn glob_is_fast_on_hostile_patterns() {
        let pattern = "*a".repeat(2000) + "b";
        let text = "a".repeat(20_000);
        let start = std::time::Instant::now();
        assert!(!glob_match(pattern.as_bytes(), text.as_bytes()));
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn pattern_lists_with_negation() {
        let field = HostField::parse("*.example.com,!secret.example.com,10.0.0.?");
        let field = field.unwrap_or(HostField::Patterns(Box::default()));
        assert!(field.matches("db.example.com"));
        assert!(!field.matches("secret.example.com"));
        assert!(field.matches("10.0.0.7"));
        assert!(!field.matches("10.0.0.17"));
        // Only negations never match.
        let only_not = HostField::parse("!a").unwrap_or(HostField::Patterns(Box::default()));
        assert!(!only_not.matches("b"));
        assert!(!only_not.matches("a"));
        // Patterns are lowercased; names are lowercased by the caller.
        let upper =
            HostField::parse("DB.Example.COM").unwrap_or(HostField::Patterns(Box::default()));
        assert!(upper.matches("db.example.com"));
    }

    #[test]
    fn a_field_of_many_names_is_kept_as_its_text() {
        // 64 KiB names of two bytes each: held as the one string, and every one matches.
        let field: String = (0..32_768u32)
            .map(|i| format!("{:x}", i % 256))
            .collect::<Vec<_>>()
            .join(",");
        let parsed = HostField::parse(&field);
        match &parsed {
            Ok(HostField::Patterns(text)) => assert_eq!(text.len(), field.len()),
            other => panic!("{other:?}"),
        }
        let parsed = parsed.unwrap_or(HostField::Patterns(Box::default()));
        assert!(parsed.matches("ff"));
        assert!(parsed.matches("0"));
        assert!(!parsed.matches("100"));
        let negated = HostField::parse(&format!("{field},!ab"))
            .unwrap_or(HostField::Patterns(Box::default()));
        assert!(!negated.matches("ab"));
        assert!(negated.matches("aa"));
    }

    #[test]
    fn hashed_names_round_trip_and_reject_garbage() {
        let salt = [3u8; 20];
        let line = hashed_name("[db]:2222", &salt);
        let field = HostField::parse(&line);
        assert!(matches!(field, Ok(HostField::Hashed { .. })), "{field:?}");
        let field = field.unwrap_or(HostField::Patterns(Box::default()));
        assert!(field.matches("[db]:2222"));
        assert!(!field.matches("db"));
        for bad in [
            "|1|",
            "|2|AAAA|AAAA",
            "|1|AAAA|AAAA",
            "|1|!!!|AAAA",
            "|1|xVvnK8pBO6J28irgmDIFXa0gj2I=|jBp/5K0O1nZT54iHvXrJAxH1fmE=|x",
            "|1|xVvnK8pBO6J28irgmDIFXa0gj2I=",
        ] {
            assert!(HostField::parse(bad).is_err(), "{bad}");
        }
    }
}
