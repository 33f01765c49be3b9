//! `RevokedHostKeys` files: `forwarder::known_hosts::RevokedKeys::parse` (a KRL when the
//! bytes start with the KRL magic, else a list of public keys), then `check` of the fixed host
//! keys and the fixture host certificate.
//!
//! Input: the file's bytes. Beside no panic: a KRL that parses parses again the same; after
//! appending a section that revokes a key explicitly (or, to a key list, a line with the
//! key), that key is revoked, and so is the certificate whose key it is; after appending a
//! certificates section revoking the fixture certificate's key id under its CA, the
//! certificate is revoked and the plain keys are judged as before.

use forwarder::known_hosts::{KRL_MAGIC, Krl, RevokedBy, RevokedKeys};
use ssh_transport::wire::Writer as _;

use crate::fixtures::{host_certificate, host_keys};

/// `kind string(body)`: one KRL section.
pub fn section(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.push(kind);
    out.put_string(body);
}

/// An explicit-key section (type 2) revoking `blob`.
pub fn explicit_key(blob: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.put_string(blob);
    let mut out = Vec::new();
    section(&mut out, 2, &body);
    out
}

/// A certificates section (type 1) for `ca` (empty: any CA) with `(type, body)` subsections.
pub fn certificates(ca: &[u8], subsections: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.put_string(ca);
    body.put_string(b"");
    for (kind, sub) in subsections {
        section(&mut body, *kind, sub);
    }
    let mut out = Vec::new();
    section(&mut out, 1, &body);
    out
}

/// A KRL header with `comment`.
pub fn header(version: u64, comment: &str) -> Vec<u8> {
    let mut b = KRL_MAGIC.to_vec();
    b.put_u32(1);
    b.put_u64(version);
    b.put_u64(1_735_689_600);
    b.put_u64(0);
    b.put_string(b"");
    b.put_string(comment.as_bytes());
    b
}

/// What each fixture key and the certificate are judged.
fn verdicts(keys: &RevokedKeys) -> (Vec<Option<RevokedBy>>, Option<RevokedBy>) {
    let cert = host_certificate();
    let plain = host_keys().iter().map(|k| keys.check(k, None)).collect();
    (plain, keys.check(cert.public_key(), Some(cert)))
}

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    let parsed = RevokedKeys::parse(data);
    let Ok(keys) = parsed else {
        return;
    };
    let (plain, certified) = verdicts(&keys);
    let cert = host_certificate();
    // A certificate whose key is revoked is revoked.
    if let Some(i) = host_keys().iter().position(|k| k == cert.public_key())
        && plain.get(i).is_some_and(Option::is_some)
    {
        assert!(
            certified.is_some(),
            "the key is revoked, its certificate not"
        );
    }

    let pick = data.last().copied().unwrap_or(0);
    let key = &host_keys()[usize::from(pick) % host_keys().len()];
    match &keys {
        RevokedKeys::Krl(krl) => {
            let again = Krl::parse(data).unwrap_or_else(|e| panic!("parsed once, then: {e}"));
            assert_eq!(again.version(), krl.version());
            assert_eq!(again.comment(), krl.comment());

            let mut more = data.to_vec();
            more.extend_from_slice(&explicit_key(key.blob()));
            let more = RevokedKeys::parse(&more)
                .unwrap_or_else(|e| panic!("a KRL with an explicit key section added: {e}"));
            assert!(
                more.check(key, None).is_some(),
                "an explicit key is not revoked"
            );
            if key == cert.public_key() {
                assert!(more.check(key, Some(cert)).is_some());
            }

            let mut id = Vec::new();
            id.put_string(cert.key_id_bytes());
            let mut more = data.to_vec();
            more.extend_from_slice(&certificates(cert.ca_key(), &[(0x23, id)]));
            match RevokedKeys::parse(&more) {
                Ok(more) => {
                    let (plain_after, certified_after) = verdicts(&more);
                    assert_eq!(
                        plain_after, plain,
                        "a certificates section changed plain keys"
                    );
                    assert!(certified_after.is_some(), "a revoked key id is not revoked");
                }
                // The fixture's key id holds no NUL, so only the section can be at fault.
                Err(e) => panic!("a KRL with a key id section added: {e}"),
            }
        }
        RevokedKeys::Keys(_) => {
            let mut more = data.to_vec();
            more.extend_from_slice(b"\n");
            more.extend_from_slice(key.to_openssh_line().as_bytes());
            more.extend_from_slice(b"\n");
            // The fuzzed text may end inside something that swallows the line (it cannot:
            // lines are split on '\n'), so the list must still parse.
            let more = RevokedKeys::parse(&more)
                .unwrap_or_else(|e| panic!("a key list with a key line added: {e}"));
            assert!(
                more.check(key, None).is_some(),
                "a listed key is not revoked"
            );
        }
    }
}

/// Seeds: KRLs of every section and subsection kind, a KRL that must be refused, and key
/// lists. Real `ssh-keygen -k` output is added to the corpus by `scripts/fuzz`.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let [a, b, rsa] = host_keys();
    let cert = host_certificate();
    let sha256 = |blob: &[u8]| ring::digest::digest(&ring::digest::SHA256, blob);
    let sha1 = |blob: &[u8]| ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, blob);

    let mut keys = header(1, "explicit keys and hashes");
    keys.extend_from_slice(&explicit_key(a.blob()));
    let mut body = Vec::new();
    body.put_string(sha1(rsa.blob()).as_ref());
    section(&mut keys, 3, &body);
    let mut body = Vec::new();
    body.put_string(sha256(b.blob()).as_ref());
    section(&mut keys, 5, &body);

    let serials = |values: &[u64]| {
        let mut v = Vec::new();
        for s in values {
            v.put_u64(*s);
        }
        v
    };
    let mut bitmap = serials(&[1000]);
    bitmap.put_string(&[0x01, 0x02, 0x09]);
    let mut ids = Vec::new();
    ids.put_string(b"bastion-2025");
    ids.put_string(cert.key_id_bytes());
    let mut certs = header(2, "certificates");
    certs.extend_from_slice(&certificates(
        cert.ca_key(),
        &[
            (0x20, serials(&[1, 5, 9])),
            (0x21, serials(&[20, 40])),
            (0x22, bitmap),
            (0x23, ids.clone()),
        ],
    ));
    certs.extend_from_slice(&certificates(b"", &[(0x20, serials(&[cert.serial()]))]));
    let mut ext = Vec::new();
    ext.put_string(b"note@example.com");
    ext.push(0);
    ext.put_string(b"");
    section(&mut certs, 255, &ext);
    // A signature section: the key, then the signature, skipped unverified.
    section(&mut certs, 4, a.blob());
    certs.put_string(b"signature");

    let mut refused = header(3, "serial zero");
    refused.extend_from_slice(&certificates(b"", &[(0x20, serials(&[0]))]));

    let list = format!(
        "# revoked host keys\n{}\n\n  {} old bastion\n",
        a.to_openssh_line(),
        rsa.to_openssh_line()
    );
    vec![
        ("krl-keys".into(), keys),
        ("krl-certificates".into(), certs),
        ("krl-empty".into(), header(0, "")),
        ("krl-refused".into(), refused),
        ("key-list".into(), list.into_bytes()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_revoke_what_they_list() {
        let seeds = seeds();
        let get = |name: &str| {
            let data = &seeds
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name}"))
                .1;
            RevokedKeys::parse(data)
        };
        let keys = get("krl-keys").unwrap_or_else(|e| panic!("{e}"));
        let (plain, _) = verdicts(&keys);
        assert!(plain.iter().all(Option::is_some), "{plain:?}");
        let certs = get("krl-certificates").unwrap_or_else(|e| panic!("{e}"));
        let (plain, certified) = verdicts(&certs);
        assert!(plain.iter().all(Option::is_none), "{plain:?}");
        assert!(certified.is_some());
        assert!(get("krl-refused").is_err());
        let list = get("key-list").unwrap_or_else(|e| panic!("{e}"));
        let (plain, _) = verdicts(&list);
        assert_eq!(plain.iter().filter(|v| v.is_some()).count(), 2, "{plain:?}");
    }
}
