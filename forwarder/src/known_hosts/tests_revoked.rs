//! `RevokedHostKeys` files made by OpenSSH's own `ssh-keygen -k` (in a temporary directory,
//! never committed), checked against what `ssh-keygen -Q` says of the same keys, and
//! hand-made KRLs for what ssh-keygen never writes.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use ssh_transport::cert::Certificate;
use ssh_transport::hostkey::PublicKey;
use ssh_transport::wire::Writer as _;

use super::*;

struct Keys {
    dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (OpenSSH's ssh-keygen is needed): {e}"));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    out
}

fn decode_line(text: &str) -> Vec<u8> {
    let b64 = text.split_whitespace().nth(1).unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

impl Keys {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A new ed25519 key pair `name` / `name.pub`.
    fn key(&self, name: &str) -> PublicKey {
        run(Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-t", "ed25519", "-C", name, "-f"])
            .arg(self.path(name)));
        PublicKey::from_blob(&decode_line(&self.pub_line(name))).unwrap_or_else(|e| panic!("{e}"))
    }

    fn pub_line(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.pub"))).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A host certificate for key `name` signed by `ca`, with `id` and `serial`.
    fn cert(&self, name: &str, ca: &str, id: &str, serial: u64) -> Certificate {
        run(Command::new("ssh-keygen")
            .args(["-q", "-h", "-n", "localhost", "-I", id, "-z"])
            .arg(serial.to_string())
            .arg("-s")
            .arg(self.path(ca))
            .arg(self.path(&format!("{name}.pub"))));
        let text = std::fs::read_to_string(self.path(&format!("{name}-cert.pub")))
            .unwrap_or_else(|e| panic!("{e}"));
        Certificate::decode(&decode_line(&text)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ssh-keygen -k -f name [-s ca.pub] [-u] spec_or_keys...`: writes `name`, returns it.
    fn krl(&self, name: &str, ca: Option<&str>, update: bool, inputs: &[&str]) -> PathBuf {
        let out = self.path(name);
        let mut cmd = Command::new("ssh-keygen");
        cmd.arg("-k").arg("-f").arg(&out);
        if let Some(ca) = ca {
            cmd.arg("-s").arg(self.path(&format!("{ca}.pub")));
        }
        if update {
            cmd.arg("-u");
        }
        for i in inputs {
            cmd.arg(self.path(i));
        }
        run(&mut cmd);
        out
    }

    fn spec(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap_or_else(|e| panic!("{e}"));
    }

    /// What `ssh-keygen -Q` says: whether the key (or certificate) file is revoked.
    fn keygen_says_revoked(&self, krl: &Path, key_file: &str) -> bool {
        let out = Command::new("ssh-keygen")
            .arg("-Q")
            .arg("-f")
            .arg(krl)
            .arg(self.path(key_file))
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&out.stdout).contains("REVOKED")
    }
}

fn load(path: &Path) -> RevokedKeys {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{e}"));
    RevokedKeys::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn krl_of(path: &Path) -> Krl {
    match load(path) {
        RevokedKeys::Krl(k) => k,
        other => panic!("{} read as {other:?}", path.display()),
    }
}

/// The certificate subsection types a KRL holds, in order.
fn items(krl: &Krl) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    let walked = walk(&krl.bytes, &mut |i| {
        kinds.push(match i {
            Item::Key(_) => "key",
            Item::Sha1(_) => "sha1",
            Item::Sha256(_) => "sha256",
            Item::Serials { lo, hi, .. } if lo == hi => "serial",
            Item::Serials { .. } => "range",
            Item::Bitmap { .. } => "bitmap",
            Item::KeyId { .. } => "id",
        });
        false
    });
    walked.unwrap_or_else(|e| panic!("{e}"));
    kinds
}

#[test]
fn a_key_listed_explicitly_in_a_krl_is_revoked_and_other_keys_are_not() {
    let k = Keys::new();
    let host = k.key("host");
    let other = k.key("other");
    let path = k.krl("k.krl", None, false, &["host.pub"]);
    let krl = krl_of(&path);
    assert_eq!(items(&krl), ["key"]);
    assert_eq!(
        krl.check(&host, None),
        Some(RevokedBy::Key(KeyMatch::Listed))
    );
    assert_eq!(krl.check(&other, None), None);
    assert!(k.keygen_says_revoked(&path, "host.pub"));
    assert!(!k.keygen_says_revoked(&path, "other.pub"));
}

#[test]
fn keys_listed_by_sha1_and_sha256_fingerprint_are_revoked() {
    let k = Keys::new();
    let by_sha1 = k.key("one");
    let by_sha256 = k.key("two");
    let by_hash = k.key("three");
    let other = k.key("other");
    let fingerprint = by_hash.fingerprint();
    k.spec(
        "spec",
        &format!(
            "# comment\nsha1: {}\nsha256: {}\nhash: {fingerprint}\n",
            k.pub_line("one").trim(),
            k.pub_line("two").trim()
        ),
    );
    let path = k.krl("k.krl", None, false, &["spec"]);
    let krl = krl_of(&path);
    let kinds = items(&krl);
    assert!(
        kinds.contains(&"sha1") && kinds.contains(&"sha256"),
        "{kinds:?}"
    );
    assert_eq!(
        krl.check(&by_sha1, None),
        Some(RevokedBy::Key(KeyMatch::Sha1))
    );
    assert_eq!(
        krl.check(&by_sha256, None),
        Some(RevokedBy::Key(KeyMatch::Sha256))
    );
    assert_eq!(
        krl.check(&by_hash, None),
        Some(RevokedBy::Key(KeyMatch::Sha256))
    );
    assert_eq!(krl.check(&other, None), None);
    for (file, revoked) in [("one.pub", true), ("two.pub", true), ("other.pub", false)] {
        assert_eq!(k.keygen_says_revoked(&path, file), revoked, "{file}");
    }
}

#[test]
fn certificates_are_revoked_by_single_serial_range_and_bitmap_for_their_ca_only() {
    let k = Keys::new();
    k.key("ca");
    k.key("other_ca");
    let host = k.key("host");
    // Scattered serials make ssh-keygen write a bitmap; a long run, a range; a lone one, a
    // list.
    let scattered: Vec<u64> = vec![1000, 1003, 1009, 1020, 1033, 1050, 1061, 1070];
    let mut spec = String::from("serial: 7\nserial: 100-200\n");
    for s in &scattered {
        spec.push_str(&format!("serial: {s}\n"));
    }
    k.spec("spec", &spec);
    let path = k.krl("k.krl", Some("ca"), false, &["spec"]);
    let krl = krl_of(&path);
    let kinds = items(&krl);
    for kind in ["serial", "range", "bitmap"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let ca_fp = Some(
        PublicKey::from_blob(&decode_line(&k.pub_line("ca")))
            .unwrap_or_else(|e| panic!("{e}"))
            .fingerprint(),
    );
    let revoked = [7, 100, 150, 200, 1000, 1009, 1070];
    let kept = [6, 8, 99, 201, 1001, 1002, 1071, 999];
    for serial in revoked {
        let c = k.cert("host", "ca", "id", serial);
        assert_eq!(
            krl.check(&host, Some(&c)),
            Some(RevokedBy::Serial {
                serial,
                ca: ca_fp.clone()
            }),
            "serial {serial}"
        );
        assert!(k.keygen_says_revoked(&path, "host-cert.pub"), "{serial}");
        // The same serial from another CA is another certificate.
        let c = k.cert("host", "other_ca", "id", serial);
        assert_eq!(
            krl.check(&host, Some(&c)),
            None,
            "other CA, serial {serial}"
        );
    }
    for serial in kept {
        let c = k.cert("host", "ca", "id", serial);
        assert_eq!(krl.check(&host, Some(&c)), None, "serial {serial}");
        assert!(!k.keygen_says_revoked(&path, "host-cert.pub"), "{serial}");
    }
    // The plain key itself is not revoked.
    assert_eq!(krl.check(&host, None), None);
}

#[test]
fn key_ids_are_revoked_for_one_ca_or_any_ca_even_without_a_serial() {
    let k = Keys::new();
    k.key("ca");
    k.key("other_ca");
    let host = k.key("host");
    k.spec("for_ca", "id: bastion-a\n");
    let for_ca = krl_of(&k.krl("ca.krl", Some("ca"), false, &["for_ca"]));
    // ssh-keygen writes no any-CA section (it wants -s for an id), OpenSSH reads one.
    let mut ids = Vec::new();
    ids.put_string(b"bastion-b");
    let mut any_ca = header(b"");
    section(
        &mut any_ca,
        SECTION_CERTIFICATES,
        &certificates(b"", &[(CERT_KEY_ID, ids)]),
    );
    let any_ca = Krl::parse(&any_ca).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(items(&for_ca), ["id"]);

    let c = k.cert("host", "ca", "bastion-a", 0);
    assert!(matches!(
        for_ca.check(&host, Some(&c)),
        Some(RevokedBy::KeyId { key_id, ca: Some(_) }) if key_id == "bastion-a"
    ));
    let c = k.cert("host", "other_ca", "bastion-a", 0);
    assert_eq!(for_ca.check(&host, Some(&c)), None);
    for ca in ["ca", "other_ca"] {
        let c = k.cert("host", ca, "bastion-b", 5);
        assert_eq!(
            any_ca.check(&host, Some(&c)),
            Some(RevokedBy::KeyId {
                key_id: "bastion-b".into(),
                ca: None
            })
        );
    }
    let c = k.cert("host", "ca", "bastion-c", 5);
    assert_eq!(any_ca.check(&host, Some(&c)), None);
    assert_eq!(for_ca.check(&host, Some(&c)), None);
}

#[test]
fn a_revoked_ca_key_or_certified_key_revokes_the_certificate() {
    let k = Keys::new();
    let ca = k.key("ca");
    let host = k.key("host");
    let c = k.cert("host", "ca", "id", 3);
    let by_ca = krl_of(&k.krl("ca.krl", None, false, &["ca.pub"]));
    assert_eq!(
        by_ca.check(&host, Some(&c)),
        Some(RevokedBy::Authority {
            fingerprint: ca.fingerprint(),
            how: KeyMatch::Listed
        })
    );
    assert_eq!(by_ca.check(&host, None), None);
    let by_key = krl_of(&k.krl("host.krl", None, false, &["host.pub"]));
    assert_eq!(
        by_key.check(&host, Some(&c)),
        Some(RevokedBy::Key(KeyMatch::Listed))
    );
}

#[test]
fn an_updated_krl_keeps_what_it_revoked_and_adds_the_new_keys() {
    let k = Keys::new();
    let first = k.key("first");
    let second = k.key("second");
    let path = k.krl("k.krl", None, false, &["first.pub"]);
    assert_eq!(krl_of(&path).check(&second, None), None);
    k.krl("k.krl", None, true, &["second.pub"]);
    let krl = krl_of(&path);
    assert!(krl.check(&first, None).is_some());
    assert!(krl.check(&second, None).is_some());
}

#[test]
fn a_file_that_is_not_a_krl_is_read_as_a_list_of_public_keys() {
    let k = Keys::new();
    let ca = k.key("ca");
    let host = k.key("host");
    let other = k.key("other");
    let c = k.cert("host", "ca", "id", 9);
    let list = format!(
        "# revoked\n\n   {}\t{}",
        k.pub_line("other").trim(),
        k.pub_line("host")
    );
    let parsed = match RevokedKeys::parse(list.as_bytes()) {
        Ok(RevokedKeys::Keys(l)) => l,
        other => panic!("{other:?}"),
    };
    assert_eq!(parsed.len(), 1, "a tab is not a line break");
    let list = format!(
        "# revoked\n\n   {}\n{}",
        k.pub_line("other").trim(),
        k.pub_line("host")
    );
    let revoked = RevokedKeys::parse(list.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        revoked.check(&host, None),
        Some(RevokedBy::Key(KeyMatch::Listed))
    );
    assert_eq!(
        revoked.check(&other, None),
        Some(RevokedBy::Key(KeyMatch::Listed))
    );
    assert_eq!(
        revoked.check(&host, Some(&c)),
        Some(RevokedBy::Key(KeyMatch::Listed))
    );
    let fresh = k.key("fresh");
    assert_eq!(revoked.check(&fresh, None), None);

    // The CA listed revokes its certificates, not the plain keys.
    let by_ca = RevokedKeys::parse(k.pub_line("ca").as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(by_ca.check(&host, None), None);
    assert_eq!(
        by_ca.check(&host, Some(&c)),
        Some(RevokedBy::Authority {
            fingerprint: ca.fingerprint(),
            how: KeyMatch::Listed
        })
    );
    // A certificate line stands for its key.
    let cert_line = std::fs::read_to_string(k.path("host-cert.pub")).unwrap_or_default();
    let by_cert = RevokedKeys::parse(cert_line.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert!(by_cert.check(&host, None).is_some());
    // An empty file revokes nothing.
    let empty = RevokedKeys::parse(b"").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(empty.check(&host, None), None);
}

#[test]
fn a_line_that_is_not_a_public_key_makes_a_key_list_unusable() {
    for (text, says) in [
        ("ssh-ed25519\n", "line 1"),
        ("# ok\nnot a key\n", "line 2"),
        ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIA==\n", "line 1"),
        ("from=\"x\" ssh-ed25519 AAAA\n", "line 1"),
    ] {
        let e = RevokedKeys::parse(text.as_bytes()).map(|_| ()).unwrap_err();
        assert!(
            e.contains(says) && e.contains("neither a KRL"),
            "{text:?}: {e}"
        );
    }
}

// ---- hand-made KRLs ----

fn header(comment: &[u8]) -> Vec<u8> {
    let mut b = KRL_MAGIC.to_vec();
    b.put_u32(1);
    b.put_u64(3); // version
    b.put_u64(1_700_000_000);
    b.put_u64(0); // flags
    b.put_string(b"");
    b.put_string(comment);
    b
}

fn section(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.push(kind);
    out.put_string(body);
}

fn certificates(ca: &[u8], subsections: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_string(ca);
    b.put_string(b"");
    for (kind, body) in subsections {
        b.push(*kind);
        b.put_string(body);
    }
    b
}

fn u64s(values: &[u64]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in values {
        b.put_u64(*v);
    }
    b
}

fn parse_err(bytes: &[u8]) -> String {
    match Krl::parse(bytes) {
        Ok(k) => panic!("parsed: {k:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hand_made_krls_parse_as_openssh_reads_them() {
    let mut ok = header(b"made by hand");
    let mut ext = Vec::new();
    ext.put_string(b"note@example.com");
    ext.push(0);
    ext.put_string(b"anything");
    section(&mut ok, SECTION_EXTENSION, &ext);
    section(
        &mut ok,
        SECTION_CERTIFICATES,
        &certificates(b"", &[(CERT_SERIAL_LIST, u64s(&[5]))]),
    );
    // A signature section: its key, then the signature, skipped unverified.
    section(&mut ok, SECTION_SIGNATURE, b"signing key");
    ok.put_string(b"signature");
    let krl = Krl::parse(&ok).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(krl.comment(), "made by hand");
    assert_eq!(krl.version(), 3);
    assert_eq!(krl.generated(), 1_700_000_000);

    // What OpenSSH refuses, each naming what is wrong.
    let with = |kind: u8, body: &[u8]| {
        let mut b = header(b"");
        section(&mut b, kind, body);
        b
    };
    // One certificates subsection of `kind`, for any CA.
    let sub =
        |kind: u8, body: Vec<u8>| with(SECTION_CERTIFICATES, &certificates(b"", &[(kind, body)]));
    // A serial bitmap subsection's body.
    let bitmap = |offset: u64, bits: &[u8]| {
        let mut b = u64s(&[offset]);
        b.put_string(bits);
        b
    };
    let mut critical = Vec::new();
    critical.put_string(b"must@example.com");
    critical.push(1);
    critical.put_string(b"");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (with(6, b""), "unknown section type 6"),
        (with(SECTION_EXTENSION, &critical), "critical extension"),
        (
            with(SECTION_FINGERPRINT_SHA1, &{
                let mut b = Vec::new();
                b.put_string(&[0u8; 19]);
                b
            }),
            "SHA1 hash of 19 bytes",
        ),
        (sub(CERT_SERIAL_LIST, u64s(&[0])), "serial 0"),
        (
            sub(CERT_SERIAL_RANGE, u64s(&[9, 8])),
            "bad serial range 9-8",
        ),
        (sub(CERT_SERIAL_RANGE, u64s(&[1, 2, 3])), "left over"),
        (sub(0x30, Vec::new()), "unknown certificate subsection"),
        (sub(CERT_SERIAL_BITMAP, bitmap(0, &[1])), "serial 0"),
        (
            sub(CERT_SERIAL_BITMAP, bitmap(u64::MAX, &[2])),
            "past the largest serial",
        ),
        (sub(CERT_SERIAL_BITMAP, bitmap(1, &[0x80])), "negative"),
        (
            sub(CERT_SERIAL_BITMAP, bitmap(1, &[1u8; MAX_BITMAP_BYTES + 1])),
            "over 16384 bits",
        ),
        (
            sub(CERT_KEY_ID, {
                let mut b = Vec::new();
                b.put_string(b"a\0b");
                b
            }),
            "NUL",
        ),
        (
            with(SECTION_CERTIFICATES, &certificates(b"\0\0\0\x09", &[])),
            "CA key",
        ),
        (
            {
                let mut b = header(b"");
                b.push(SECTION_SIGNATURE);
                b.put_string(b"key only");
                b
            },
            "signature",
        ),
        (
            {
                let mut b = header(b"");
                b.splice(8..12, [0, 0, 0, 2]);
                b
            },
            "format version 2",
        ),
    ];
    for (bytes, says) in cases {
        let e = parse_err(&bytes);
        assert!(e.contains(says), "expected {says:?}: {e}");
    }
}

#[test]
fn bitmaps_revoke_exactly_their_set_bits() {
    let k = Keys::new();
    k.key("ca");
    let host = k.key("host");
    let ca_blob = decode_line(&k.pub_line("ca"));
    // Bits 0, 3 and 9 from offset 40: serials 40, 43, 49; with a leading zero byte.
    let mut bitmap = u64s(&[40]);
    bitmap.put_string(&[0x00, 0x02, 0x09]);
    let mut bytes = header(b"");
    section(
        &mut bytes,
        SECTION_CERTIFICATES,
        &certificates(&ca_blob, &[(CERT_SERIAL_BITMAP, bitmap)]),
    );
    let krl = Krl::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
    for serial in 38..60 {
        let c = k.cert("host", "ca", "id", serial);
        let revoked = krl.check(&host, Some(&c)).is_some();
        assert_eq!(revoked, [40, 43, 49].contains(&serial), "serial {serial}");
    }
}

#[test]
fn every_truncation_and_byte_flip_of_a_real_krl_is_an_error_or_a_krl_never_a_panic() {
    let k = Keys::new();
    k.key("ca");
    let host = k.key("host");
    k.spec(
        "spec",
        "serial: 7\nserial: 1-5\nserial: 100\nserial: 103\nserial: 130\nid: x\n",
    );
    let path = k.krl("k.krl", Some("ca"), false, &["spec", "host.pub"]);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
    Krl::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
    // A cut between sections is a shorter KRL; any other cut is an error.
    let mut whole = 0;
    for len in 8..bytes.len() {
        let cut = bytes.get(..len).unwrap_or_default();
        match Krl::parse(cut) {
            Ok(_) => whole += 1,
            Err(e) => assert!(e.to_string().contains("not a valid KRL"), "{len}: {e}"),
        }
    }
    assert!(whole <= 3, "{whole} cuts parsed");
    for at in 8..bytes.len() {
        let mut flipped = bytes.clone();
        if let Some(b) = flipped.get_mut(at) {
            *b ^= 0xff;
        }
        if let Ok(krl) = Krl::parse(&flipped) {
            let _ = krl.check(&host, None);
        }
    }
    // A cut before the magic ends is not a KRL at all: a key list that cannot be read.
    let e = RevokedKeys::parse(bytes.get(..6).unwrap_or_default())
        .map(|_| ())
        .unwrap_err();
    assert!(e.contains("neither a KRL"), "{e}");
}

#[test]
fn a_missing_or_unusable_file_is_an_error_naming_it_and_files_are_read_in_order() {
    let k = Keys::new();
    let host = k.key("host");
    let missing = k.path("nope.krl");
    let e = RevokedHostKeys::load(std::slice::from_ref(&missing)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );

    let bad = k.path("bad.krl");
    std::fs::write(&bad, b"SSHKRL\n\0\0\0").unwrap_or_else(|e| panic!("{e}"));
    let e = RevokedHostKeys::load(std::slice::from_ref(&bad)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("bad.krl"), "{e}");

    let krl = k.krl("k.krl", None, false, &["host.pub"]);
    let list = k.path("list");
    std::fs::write(&list, k.pub_line("host")).unwrap_or_else(|e| panic!("{e}"));
    let all = RevokedHostKeys::load(&[list.clone(), krl.clone()]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        all.check(&host, None),
        Some(Revocation {
            file: list,
            by: RevokedBy::Key(KeyMatch::Listed)
        })
    );
    let none = RevokedHostKeys::load(&[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(none.is_empty());
    assert_eq!(none.check(&host, None), None);
}

#[test]
fn the_refusal_names_the_host_key_file_and_for_a_certificate_its_serial_id_and_ca() {
    let k = Keys::new();
    k.key("ca");
    let host = k.key("host");
    k.spec("spec", "serial: 12\n");
    let path = k.krl("k.krl", Some("ca"), false, &["spec"]);
    let c = k.cert("host", "ca", "bastion-1", 12);
    let all = RevokedHostKeys::load(std::slice::from_ref(&path)).unwrap_or_else(|e| panic!("{e}"));
    let r = all
        .check(&host, Some(&c))
        .unwrap_or_else(|| panic!("not revoked"));
    let text = r.refusal("127.0.0.1", 2222, &host, Some(&c));
    for part in [
        "host key for [127.0.0.1]:2222",
        &host.fingerprint(),
        "certificate serial 12",
        "\"bastion-1\"",
        c.ca_fingerprint(),
        &format!("revoked by {} (RevokedHostKeys)", path.display()),
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
}
