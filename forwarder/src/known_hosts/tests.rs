use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use proptest::prelude::*;
use ssh_transport::wire::Writer as _;

use super::*;
use crate::cli::StrictHostKeyChecking;

/// A test key (also the connector's tests').
pub(crate) fn ed(n: u8) -> PublicKey {
    PublicKey::ed25519(&[n; 32])
}

/// A test key (also the known_hosts update's tests').
pub(crate) fn rsa(n: u8) -> PublicKey {
    let mut blob = Vec::new();
    blob.put_str("ssh-rsa");
    blob.put_mpint(&[1, 0, 1]);
    let mut modulus = vec![0xc5u8; 256];
    modulus[255] = n;
    blob.put_mpint(&modulus);
    PublicKey::from_blob(&blob).unwrap_or_else(|e| panic!("{e}"))
}

/// A test key (also the connector's tests').
pub(crate) fn ecdsa(n: u8) -> PublicKey {
    let mut blob = Vec::new();
    blob.put_str("ecdsa-sha2-nistp256");
    blob.put_str("nistp256");
    let mut point = vec![4u8];
    point.extend_from_slice(&[n; 64]);
    blob.put_string(&point);
    PublicKey::from_blob(&blob).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn line(hosts: &str, key: &PublicKey) -> String {
    format!("{hosts} {}", key.to_openssh_line())
}

fn kh(text: &str) -> KnownHosts {
    let (known, warnings) = KnownHosts::parse(text, Path::new("/kh"));
    assert!(warnings.is_empty(), "{warnings:?}");
    known
}

fn known(line: usize) -> HostKeyStatus {
    HostKeyStatus::Known {
        file: PathBuf::from("/kh"),
        line,
    }
}

fn unknown() -> HostKeyStatus {
    HostKeyStatus::Unknown {
        other_types: Vec::new(),
    }
}

impl KnownHosts {
    /// Line numbers of the plain entries that apply to a lookup name.
    fn matching_lines(&self, name: &str) -> Vec<usize> {
        self.entries
            .iter()
            .filter(|e| e.marker == Marker::None && e.hosts.matches(name))
            .map(|e| e.line)
            .collect()
    }
}

#[test]
fn plain_hosts_patterns_and_ports() {
    let text = [
        line("bastion.example.com,10.0.0.1", &ed(1)),
        line("[bastion.example.com]:2222", &ed(2)),
        line("*.internal,!secret.internal", &ed(3)),
        line("[*.ports]:*", &ed(4)),
        line("host?", &ed(5)),
    ]
    .join("\n");
    let k = kh(&text);
    assert_eq!(k.len(), 5);
    assert_eq!(k.check("bastion.example.com", 22, &ed(1)), known(1));
    assert_eq!(k.check("BASTION.Example.com", 22, &ed(1)), known(1));
    assert_eq!(k.check("10.0.0.1", 22, &ed(1)), known(1));
    // A plain name means port 22 only, and a port entry only its port.
    assert_eq!(
        k.check("bastion.example.com", 2222, &ed(1)),
        HostKeyStatus::Changed {
            expected: vec![Mismatch {
                file: "/kh".into(),
                line: 2,
                key_type: "ssh-ed25519".into(),
                fingerprint: ed(2).fingerprint(),
            }]
        }
    );
    assert_eq!(k.check("bastion.example.com", 2222, &ed(2)), known(2));
    assert_eq!(k.check("bastion.example.com", 2200, &ed(2)), unknown());
    assert_eq!(k.check("db.internal", 22, &ed(3)), known(3));
    assert_eq!(k.check("secret.internal", 22, &ed(3)), unknown());
    assert_eq!(k.check("a.ports", 7, &ed(4)), known(4));
    assert_eq!(k.check("a.ports", 22, &ed(4)), unknown());
    assert_eq!(k.check("host1", 22, &ed(5)), known(5));
    assert_eq!(k.check("host12", 22, &ed(5)), unknown());
    assert_eq!(k.check("::1", 22, &ed(5)), unknown());
}

#[test]
fn several_key_types_per_host() {
    let text = [
        line("h", &rsa(1)),
        line("h", &ed(1)),
        line("h", &ecdsa(1)),
        line("other", &ed(9)),
    ]
    .join("\n");
    let k = kh(&text);
    assert_eq!(k.check("h", 22, &rsa(1)), known(1));
    assert_eq!(k.check("h", 22, &ed(1)), known(2));
    assert_eq!(k.check("h", 22, &ecdsa(1)), known(3));
    assert_eq!(
        k.known_key_types("h", 22),
        vec!["ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256"]
    );
    assert_eq!(k.known_key_types("other", 22), vec!["ssh-ed25519"]);
    assert!(k.known_key_types("nobody", 22).is_empty());
    // A changed ed25519 key lists only the ed25519 line.
    match k.check("h", 22, &ed(2)) {
        HostKeyStatus::Changed { expected } => {
            assert_eq!(expected.len(), 1);
            assert_eq!(expected[0].line, 2);
            assert_eq!(expected[0].fingerprint, ed(1).fingerprint());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_type_lists_the_other_keys() {
    let k = kh(&[line("h", &rsa(1)), line("h", &ecdsa(1))].join("\n"));
    match k.check("h", 22, &ed(1)) {
        HostKeyStatus::Unknown { other_types } => {
            let types: Vec<_> = other_types.iter().map(|m| m.key_type.as_str()).collect();
            assert_eq!(types, vec!["ssh-rsa", "ecdsa-sha2-nistp256"]);
            assert_eq!(other_types[0].fingerprint, rsa(1).fingerprint());
            assert_eq!(other_types[1].line, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_matching_line_counts_not_only_the_first() {
    // The same host on several lines with several keys (as after a key rotation where the
    // old line was kept): any match is Known.
    let k = kh(&[line("h", &ed(1)), line("h,g", &ed(2))].join("\n"));
    assert_eq!(k.check("h", 22, &ed(2)), known(2));
    match k.check("h", 22, &ed(3)) {
        HostKeyStatus::Changed { expected } => assert_eq!(expected.len(), 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn another_port_with_no_keys_falls_back_on_the_bare_host_name() {
    let text = [
        line("h", &ed(1)),                                               // 1
        line("[h]:2200", &ed(2)),                                        // 2
        line("[h]:2300", &rsa(1)),                                       // 3
        line("g", &rsa(2)),                                              // 4
        line("r", &ed(3)),                                               // 5
        format!("@revoked r {}", ed(3).to_openssh_line()),               // 6
        format!("@cert-authority [h]:2400 {}", ed(4).to_openssh_line()), // 7
        format!("@revoked [h]:2500 {}", ed(5).to_openssh_line()),        // 8
    ]
    .join("\n");
    let k = kh(&text);
    // Nothing for [h]:2222: the key listed for h is found there (ssh: "found matching key
    // w/out port").
    assert_eq!(k.check("h", 2222, &ed(1)), known(1));
    assert_eq!(k.check("H", 2222, &ed(1)), known(1));
    // Lines that are no keys for [h]:port (a CA, a revocation of another key) do not stop
    // the second look.
    assert_eq!(k.check("h", 2400, &ed(1)), known(1));
    assert_eq!(k.check("h", 2500, &ed(1)), known(1));
    // Another key under the bare name is no match, and no change either: ssh's second look
    // is quiet and only accepts, so the host is new on that port.
    assert_eq!(k.check("h", 2222, &ed(9)), unknown());
    assert_eq!(k.check("g", 2222, &ed(9)), unknown());
    // [h]:port lists keys: its answer stands, the bare name is not looked at.
    assert!(matches!(
        k.check("h", 2200, &ed(1)),
        HostKeyStatus::Changed { expected } if expected.len() == 1 && expected[0].line == 2
    ));
    assert!(matches!(
        k.check("h", 2300, &ed(1)),
        HostKeyStatus::Unknown { other_types } if other_types.len() == 1 && other_types[0].line == 3
    ));
    // A key revoked under the bare name is refused on every port (stricter than ssh, whose
    // second look would fail and leave the host new).
    assert_eq!(
        k.check("r", 2222, &ed(3)),
        HostKeyStatus::Revoked {
            file: "/kh".into(),
            line: 6
        }
    );
    // Port 22 is the bare name already: no second look at anything.
    assert!(matches!(
        k.check("h", 22, &ed(2)),
        HostKeyStatus::Changed { .. }
    ));
    // The key types asked for first follow the same fallback.
    assert_eq!(k.known_key_types("h", 2222), vec!["ssh-ed25519"]);
    assert_eq!(k.known_key_types("g", 2222), vec!["ssh-rsa"]);
    assert_eq!(k.known_key_types("h", 2300), vec!["ssh-rsa"]);
    assert!(k.known_key_types("nobody", 2222).is_empty());
}

#[test]
fn a_key_found_under_the_bare_name_is_trusted_without_a_new_record() {
    use StrictHostKeyChecking::{AcceptNew, No, Yes};
    let k = kh(&line("bastion", &ed(1)));
    for policy in [Yes, AcceptNew, No] {
        assert_eq!(
            decide(
                k.check("bastion", 2222, &ed(1)),
                policy,
                "bastion",
                2222,
                &ed(1),
                Some(Path::new("/kh"))
            ),
            Decision::Trusted,
            "{policy}"
        );
    }
    // Another key: new on that port, recorded as [bastion]:2222 by accept-new.
    assert_eq!(
        decide(
            k.check("bastion", 2222, &ed(2)),
            AcceptNew,
            "bastion",
            2222,
            &ed(2),
            Some(Path::new("/kh"))
        ),
        Decision::TrustAndRecord { file: "/kh".into() }
    );
}

#[test]
fn revoked_keys_fail_closed() {
    let text = [
        line("h", &ed(1)),
        format!("@revoked * {}", ed(1).to_openssh_line()),
        format!("@revoked other {}", ed(2).to_openssh_line()),
        line("g", &ed(2)),
    ]
    .join("\n");
    let k = kh(&text);
    // Listed as known and revoked: revoked wins.
    assert_eq!(
        k.check("h", 22, &ed(1)),
        HostKeyStatus::Revoked {
            file: "/kh".into(),
            line: 2
        }
    );
    // The marker applies to the hosts it names.
    assert_eq!(k.check("g", 22, &ed(2)), known(4));
    assert!(matches!(
        k.check("other", 22, &ed(2)),
        HostKeyStatus::Revoked { line: 3, .. }
    ));
    // Revoked lines are not keys for the host.
    assert_eq!(k.known_key_types("other", 22), Vec::<String>::new());
}

#[test]
fn cert_authority_lines_are_parsed_and_ignored() {
    let text = [
        format!("@cert-authority *.example.com {}", ed(7).to_openssh_line()),
        line("db.example.com", &ed(1)),
    ]
    .join("\n");
    let k = kh(&text);
    assert_eq!(k.len(), 2);
    assert_eq!(k.check("x.example.com", 22, &ed(7)), unknown());
    assert_eq!(k.check("db.example.com", 22, &ed(1)), known(2));
    assert_eq!(k.known_key_types("x.example.com", 22), Vec::<String>::new());
}

#[test]
fn hashed_entries() {
    let salt = [0x42u8; 20];
    let text = [
        entry_line("bastion.example.com", 22, &ed(1), true, &salt),
        entry_line("bastion.example.com", 2222, &ed(2), true, &salt),
    ]
    .join("\n");
    assert!(text.starts_with("|1|"));
    assert!(!text.contains("bastion"));
    let k = kh(&text);
    assert_eq!(k.check("bastion.example.com", 22, &ed(1)), known(1));
    assert_eq!(k.check("Bastion.Example.COM", 22, &ed(1)), known(1));
    assert_eq!(k.check("bastion.example.com", 2222, &ed(2)), known(2));
    assert_eq!(k.check("bastion.example.org", 22, &ed(1)), unknown());
    assert_eq!(
        k.known_key_types("bastion.example.com", 2222),
        vec!["ssh-ed25519"]
    );
}

#[test]
fn entry_lines() {
    let salt = [0u8; 20];
    assert_eq!(
        entry_line("Bastion.example.com", 22, &ed(1), false, &salt),
        line("bastion.example.com", &ed(1))
    );
    assert_eq!(
        entry_line("h", 2222, &ed(1), false, &salt),
        line("[h]:2222", &ed(1))
    );
    assert_eq!(
        entry_line("::1", 2222, &ed(1), false, &salt),
        line("[::1]:2222", &ed(1))
    );
    // Text that would act as a pattern or separator is hashed, whatever was asked.
    for host in ["*", "a,b", "h h", "!x", "", "@revoked"] {
        let l = entry_line(host, 22, &ed(1), false, &salt);
        assert!(l.starts_with("|1|"), "{host}: {l}");
        let k = kh(&l);
        assert_eq!(k.check("other", 22, &ed(1)), unknown(), "{host}");
    }
}

#[test]
fn malformed_lines_are_skipped_with_line_numbers() {
    let good = line("good", &ed(1));
    let mut wrong_type = line("h", &ed(2));
    wrong_type = wrong_type.replacen("ssh-ed25519", "ssh-rsa", 1);
    let short_ed = {
        let mut blob = Vec::new();
        blob.put_str("ssh-ed25519");
        blob.put_string(&[1; 31]);
        format!(
            "h ssh-ed25519 {}",
            base64::engine::general_purpose::STANDARD.encode(&blob)
        )
    };
    let lines = [
        "# comment".to_owned(),                     // 1
        String::new(),                              // 2
        "   \t ".to_owned(),                        // 3
        "onlyhost".to_owned(),                      // 4
        "host ssh-ed25519".to_owned(),              // 5
        "host ssh-ed25519 !!!notbase64".to_owned(), // 6
        "@bogus h ssh-ed25519 AAAA".to_owned(),     // 7
        "@revoked".to_owned(),                      // 8
        "host 2048 35 12345".to_owned(),            // 9
        wrong_type,                                 // 10
        "|1|zz|zz ssh-ed25519 AAAA".to_owned(),     // 11
        short_ed,                                   // 12
        "h ssh-ed25519 AAAA".to_owned(),            // 13: blob too short for a type
        good.clone(),                               // 14
        "\u{1b}[31m ssh-ed25519 AAAA".to_owned(),   // 15
    ];
    let (k, warnings) = KnownHosts::parse(&lines.join("\n"), Path::new("/etc/kh"));
    let numbers: Vec<usize> = warnings.iter().map(|w| w.line).collect();
    assert_eq!(numbers, vec![4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15]);
    assert_eq!(k.len(), 1);
    assert_eq!(
        k.check("good", 22, &ed(1)),
        HostKeyStatus::Known {
            file: "/etc/kh".into(),
            line: 14
        }
    );
    let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown[0],
        "/etc/kh:4: line skipped: no key type after the host names"
    );
    assert!(shown[3].contains("unknown marker '@bogus'"), "{}", shown[3]);
    assert!(shown[5].contains("protocol 1"), "{}", shown[5]);
    assert!(shown[6].contains("the line says ssh-rsa but the key data is ssh-ed25519"));
    assert!(shown[7].contains("hashed"), "{}", shown[7]);
    assert!(shown[8].contains("bad ssh-ed25519 key"), "{}", shown[8]);
    for w in &shown {
        assert!(!w.contains('\u{1b}'), "{w:?}");
    }
}

#[test]
fn crlf_lines_tabs_comments_and_padding() {
    let key = ed(1).to_openssh_line();
    let unpadded = key.trim_end_matches('=');
    let text =
        format!("# windows file\r\nh {key} comment here\r\n\tg\t{unpadded}\r\n[p]:2022 {key}\r\n");
    let k = kh(&text);
    assert_eq!(k.check("h", 22, &ed(1)), known(2));
    assert_eq!(k.check("g", 22, &ed(1)), known(3));
    assert_eq!(k.check("p", 2022, &ed(1)), known(4));
}

#[test]
fn unsupported_key_types_are_kept() {
    let mut blob = Vec::new();
    blob.put_str("ssh-dss");
    blob.put_string(&[1; 20]);
    let dss = format!(
        "h ssh-dss {}",
        base64::engine::general_purpose::STANDARD.encode(&blob)
    );
    let k = kh(&dss);
    assert_eq!(k.known_key_types("h", 22), vec!["ssh-dss"]);
    match k.check("h", 22, &ed(1)) {
        HostKeyStatus::Unknown { other_types } => {
            assert_eq!(other_types.len(), 1);
            assert_eq!(other_types[0].key_type, "ssh-dss");
            assert_eq!(other_types[0].fingerprint, fingerprint_sha256(&blob));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn short_rsa_keys_are_kept_with_a_warning() {
    let mut blob = Vec::new();
    blob.put_str("ssh-rsa");
    blob.put_mpint(&[1, 0, 1]);
    blob.put_mpint(&[0xc5; 128]);
    let text = format!(
        "h ssh-rsa {}",
        base64::engine::general_purpose::STANDARD.encode(&blob)
    );
    let (k, warnings) = KnownHosts::parse(&text, Path::new("/kh"));
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].message.contains("unusable"), "{warnings:?}");
    // A new RSA key for the host is a change, not a new host.
    assert!(matches!(
        k.check("h", 22, &rsa(1)),
        HostKeyStatus::Changed { .. }
    ));
}

#[test]
fn load_reads_files_in_order_and_skips_missing_ones() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::write(&a, format!("{}\nbroken\n", line("h", &ed(1))))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        &b,
        [0xffu8, b'\n']
            .iter()
            .copied()
            .chain(line("g", &ed(2)).bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("missing");
    let (k, warnings) =
        KnownHosts::load(&[missing, a.clone(), b.clone()]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        k.check("h", 22, &ed(1)),
        HostKeyStatus::Known {
            file: a.clone(),
            line: 1
        }
    );
    assert_eq!(
        k.check("g", 22, &ed(2)),
        HostKeyStatus::Known {
            file: b.clone(),
            line: 2
        }
    );
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(
        (warnings[0].file.as_path(), warnings[0].line),
        (a.as_path(), 2)
    );
    assert_eq!(
        (warnings[1].file.as_path(), warnings[1].line),
        (b.as_path(), 1)
    );
    // A directory is an error that names the path.
    let err = KnownHosts::load(&[dir.path().to_path_buf()]).err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("cannot read known_hosts file"), "{msg}");
}

#[cfg(unix)]
#[test]
fn append_creates_directory_and_file_with_private_modes() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ssh_dir = dir.path().join("home/.ssh");
    let file = ssh_dir.join("known_hosts");
    let first = entry_line("h", 2222, &ed(1), false, &[0; 20]);
    append(&file, &first).unwrap_or_else(|e| panic!("{e}"));
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .ok()
    };
    assert_eq!(mode(&ssh_dir), Some(0o700));
    assert_eq!(mode(&file), Some(0o600));
    assert_eq!(
        std::fs::read_to_string(&file).ok(),
        Some(format!("{first}\n"))
    );
    // A file without a final newline gets one before the new line.
    std::fs::write(&file, "# no newline").unwrap_or_else(|e| panic!("{e}"));
    append(&file, &first).unwrap_or_else(|e| panic!("{e}"));
    append(&file, &first).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        std::fs::read_to_string(&file).ok(),
        Some(format!("# no newline\n{first}\n{first}\n"))
    );
    assert!(append(&file, "two\nlines").is_err());
    assert!(append(&file, "").is_err());
    let (k, warnings) = KnownHosts::load(&[file]).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty());
    assert!(matches!(
        k.check("h", 2222, &ed(1)),
        HostKeyStatus::Known { line: 2, .. }
    ));
}

// ---- decisions and messages ----

#[test]
fn decisions_follow_the_policy() {
    let k = kh(&[line("h", &ed(1)), line("r", &rsa(1))].join("\n"));
    let record = Some(Path::new("/home/u/.ssh/known_hosts"));
    let decide_for = |host: &str, key: &PublicKey, policy| {
        decide(k.check(host, 22, key), policy, host, 22, key, record)
    };
    use StrictHostKeyChecking::{AcceptNew, No, Yes};
    for policy in [Yes, AcceptNew, No] {
        assert_eq!(decide_for("h", &ed(1), policy), Decision::Trusted);
        assert!(matches!(
            decide_for("h", &ed(2), policy),
            Decision::Refused(HostKeyError::Changed { .. })
        ));
    }
    let add = Decision::TrustAndRecord {
        file: "/home/u/.ssh/known_hosts".into(),
    };
    assert!(matches!(
        decide_for("new", &ed(1), Yes),
        Decision::Refused(HostKeyError::Unknown { .. })
    ));
    assert_eq!(decide_for("new", &ed(1), AcceptNew), add);
    assert_eq!(decide_for("new", &ed(1), No), add);
    // Known with another type: refused under every policy (ssh counts it as a changed
    // key), nothing recorded.
    for policy in [Yes, AcceptNew, No] {
        assert!(matches!(
            decide_for("r", &ed(1), policy),
            Decision::Refused(HostKeyError::Unknown { .. })
        ));
    }
    // Nowhere to record: trust without recording.
    assert_eq!(
        decide(unknown(), AcceptNew, "new", 22, &ed(1), None),
        Decision::Trusted
    );
    let revoked = HostKeyStatus::Revoked {
        file: "/kh".into(),
        line: 3,
    };
    for policy in [Yes, AcceptNew, No] {
        assert!(matches!(
            decide(revoked.clone(), policy, "h", 22, &ed(1), record),
            Decision::Refused(HostKeyError::Revoked { line: 3, .. })
        ));
    }
}

fn refused_text(d: Decision) -> String {
    match d {
        Decision::Refused(e) => e.to_string(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_key_message() {
    let key = ed(1);
    let text = refused_text(decide(
        unknown(),
        StrictHostKeyChecking::Yes,
        "bastion.example.com",
        2222,
        &key,
        Some(Path::new("~/.ssh/known_hosts")),
    ));
    assert_eq!(
        text,
        format!(
            "host key for [bastion.example.com]:2222 is not known: ED25519 key {}; to trust it, \
             check the fingerprint with the server's admin and run with \
             -o StrictHostKeyChecking=accept-new, or add it to ~/.ssh/known_hosts",
            key.fingerprint()
        )
    );
    let k = kh(&line("h", &rsa(1)));
    let text = refused_text(decide(
        k.check("h", 22, &key),
        StrictHostKeyChecking::AcceptNew,
        "h",
        22,
        &key,
        Some(Path::new("/kh")),
    ));
    assert!(text.starts_with("host key for h is not known: the server offered ED25519 key"));
    assert!(
        text.contains(&format!("RSA key {} (line 1 of /kh)", rsa(1).fingerprint())),
        "{text}"
    );
    assert!(text.contains("accept-new only records keys for hosts that are not known"));
}

#[test]
fn no_refuses_a_key_of_a_new_type_for_a_host_known_with_other_keys() {
    // Regression: StrictHostKeyChecking=no accepted (and recorded) an Ed25519 key for a host
    // known only by its RSA and ECDSA keys; ssh calls that HOST_CHANGED.
    let k = kh(&[line("h", &rsa(1)), line("h", &ecdsa(1))].join("\n"));
    let key = ed(1);
    let decision = decide(
        k.check("h", 22, &key),
        StrictHostKeyChecking::No,
        "h",
        22,
        &key,
        Some(Path::new("/kh")),
    );
    let text = refused_text(decision);
    assert!(
        text.starts_with(&format!(
            "host key for h is not known: the server offered ED25519 key {}, but only other \
             keys are known for it: RSA key {} (line 1 of /kh), ECDSA key {} (line 2 of /kh)",
            key.fingerprint(),
            rsa(1).fingerprint(),
            ecdsa(1).fingerprint()
        )),
        "{text}"
    );
    assert!(
        text.contains("StrictHostKeyChecking=no does not accept it either"),
        "{text}"
    );
    assert!(!text.contains("accept-new only records"), "{text}");
    // The same under [host]:port, and with nowhere to record.
    let k = kh(&line("[h]:2222", &rsa(1)));
    assert!(matches!(
        decide(
            k.check("h", 2222, &key),
            StrictHostKeyChecking::No,
            "h",
            2222,
            &key,
            None
        ),
        Decision::Refused(HostKeyError::Unknown { .. })
    ));
}

#[test]
fn changed_key_message() {
    let k = kh(&["# first".to_owned(), line("[db]:2222", &ecdsa(1))].join("\n"));
    let key = ecdsa(2);
    let text = refused_text(decide(
        k.check("db", 2222, &key),
        StrictHostKeyChecking::Yes,
        "db",
        2222,
        &key,
        Some(Path::new("/kh")),
    ));
    assert_eq!(
        text,
        format!(
            "host key for [db]:2222 has CHANGED: the server offered ECDSA key {}, but the known \
             ECDSA key is {} (line 2 of /kh). Someone may be intercepting the connection (man \
             in the middle), or the server's key was replaced. If the change is expected, \
             remove line 2 of /kh (ssh-keygen -R '[db]:2222' -f /kh does that) and connect \
             again",
            key.fingerprint(),
            ecdsa(1).fingerprint()
        )
    );
    let text = refused_text(decide(
        k.check("db", 2222, &key),
        StrictHostKeyChecking::No,
        "db",
        2222,
        &key,
        None,
    ));
    assert!(
        text.ends_with("turns port forwarding off when a host key changed"),
        "{text}"
    );
}

#[test]
fn revoked_message_and_labels() {
    let text = HostKeyError::Revoked {
        host: "h".into(),
        key_type: "ssh-rsa".into(),
        fingerprint: "SHA256:x".into(),
        file: "/kh".into(),
        line: 4,
    }
    .to_string();
    assert_eq!(
        text,
        "host key for h is revoked: the server offered RSA key SHA256:x, which line 4 of /kh \
         marks @revoked; refusing to connect. Ask the server's admin for the server's current key"
    );
    for (name, label) in [
        ("ssh-ed25519", "ED25519"),
        ("ssh-rsa", "RSA"),
        ("ecdsa-sha2-nistp384", "ECDSA"),
        ("ssh-dss", "DSA"),
        ("sk-ssh-ed25519@openssh.com", "ED25519-SK"),
        ("sk-ecdsa-sha2-nistp256@openssh.com", "ECDSA-SK"),
        ("ssh-ed25519-cert-v01@openssh.com", "ED25519-CERT"),
        ("x-new\u{1b}", "X-NEW\\X1B"),
    ] {
        assert_eq!(key_type_label(name), label);
    }
    assert_eq!(
        added_notice("h", 2222, &ed(1), Path::new("/kh")),
        format!(
            "added ED25519 key {} for [h]:2222 to /kh",
            ed(1).fingerprint()
        )
    );
}

// ---- keys trusted earlier in the process ----

#[test]
fn accepted_keys_stand_in_for_the_lines_that_were_not_written() {
    let memory = AcceptedKeys::new();
    let file = Some(Path::new("/ro/known_hosts"));
    let k = kh(&line("listed", &ed(7)));
    let recall = |host: &str, port, key: &PublicKey, scope: Option<&Path>| {
        memory.recall(k.check(host, port, key), scope, host, port, key)
    };
    assert_eq!(recall("h", 2222, &ed(1), file), unknown());
    assert_eq!(
        memory.accept(
            file,
            "h",
            2222,
            &ed(1),
            Record::Failed("/ro/known_hosts".into())
        ),
        Ok(())
    );
    assert_eq!(
        recall("h", 2222, &ed(1), file),
        HostKeyStatus::AcceptedEarlier
    );
    assert_eq!(
        recall("H", 2222, &ed(1), file),
        HostKeyStatus::AcceptedEarlier
    );
    let earlier = vec![AcceptedKey {
        key_type: "ssh-ed25519".into(),
        fingerprint: ed(1).fingerprint(),
        record: Record::Failed("/ro/known_hosts".into()),
    }];
    // Another key, of the same type or not, is a change.
    for other in [ed(2), rsa(1)] {
        assert_eq!(
            recall("h", 2222, &other, file),
            HostKeyStatus::ChangedSinceAccepted {
                accepted: earlier.clone()
            }
        );
    }
    // Claiming another key for the name fails (a concurrent attempt), and changes nothing.
    assert_eq!(
        memory.accept(file, "h", 2222, &ed(2), Record::Nowhere),
        Err(earlier.clone())
    );
    assert_eq!(
        recall("h", 2222, &ed(1), file),
        HostKeyStatus::AcceptedEarlier
    );
    // Claiming the same key again updates where it was recorded.
    assert_eq!(
        memory.accept(
            file,
            "h",
            2222,
            &ed(1),
            Record::In("/ro/known_hosts".into())
        ),
        Ok(())
    );
    assert!(matches!(
        recall("h", 2222, &ed(2), file),
        HostKeyStatus::ChangedSinceAccepted { accepted }
            if accepted[0].record == Record::In("/ro/known_hosts".into())
    ));
    // Other names, other ports and other record files are separate.
    assert_eq!(recall("g", 2222, &ed(2), file), unknown());
    assert_eq!(recall("h", 22, &ed(2), file), unknown());
    assert_eq!(recall("h", 2222, &ed(2), None), unknown());
    assert_eq!(
        recall("h", 2222, &ed(2), Some(Path::new("/other/known_hosts"))),
        unknown()
    );
    // What the files say stands: a listed key, or any key listed for the host.
    assert_eq!(
        memory.accept(file, "listed", 22, &ed(1), Record::Nowhere),
        Ok(())
    );
    assert_eq!(
        recall("listed", 22, &ed(7), file),
        HostKeyStatus::Known {
            file: "/kh".into(),
            line: 1
        }
    );
    assert!(matches!(
        recall("listed", 22, &ed(2), file),
        HostKeyStatus::Changed { .. }
    ));
    assert!(matches!(
        recall("listed", 22, &rsa(2), file),
        HostKeyStatus::Unknown { other_types } if other_types.len() == 1
    ));
}

#[test]
fn changed_since_accepted_is_refused_under_every_policy_with_both_keys() {
    use StrictHostKeyChecking::{AcceptNew, No, Yes};
    let accepted = vec![
        AcceptedKey {
            key_type: "ssh-ed25519".into(),
            fingerprint: ed(1).fingerprint(),
            record: Record::Failed("/ro/known_hosts".into()),
        },
        AcceptedKey {
            key_type: "ssh-rsa".into(),
            fingerprint: rsa(1).fingerprint(),
            record: Record::Nowhere,
        },
    ];
    for policy in [Yes, AcceptNew, No] {
        let decision = decide(
            HostKeyStatus::ChangedSinceAccepted {
                accepted: accepted.clone(),
            },
            policy,
            "db",
            2222,
            &ed(2),
            Some(Path::new("/ro/known_hosts")),
        );
        assert_eq!(
            refused_text(decision),
            format!(
                "host key for [db]:2222 has CHANGED: the server offered ED25519 key {}, but \
                 earlier in this run forwarder accepted other keys for it: ED25519 key {} \
                 (which could not be recorded in /ro/known_hosts), RSA key {} (with no \
                 known_hosts file to record it in). Someone may be intercepting the \
                 connection (man in the middle), or the server's key was replaced. If the \
                 change is expected, add the server's current key to a known_hosts file (they \
                 are read on every connection) or restart forwarder",
                ed(2).fingerprint(),
                ed(1).fingerprint(),
                rsa(1).fingerprint()
            )
        );
        assert_eq!(
            decide(
                HostKeyStatus::AcceptedEarlier,
                policy,
                "db",
                2222,
                &ed(1),
                Some(Path::new("/ro/known_hosts"))
            ),
            Decision::Trusted
        );
    }
}

// ---- cross-checks against OpenSSH's own tools ----

fn run_tool(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (OpenSSH's ssh-keygen is needed): {e}"))
}

/// Line numbers `ssh-keygen -F name -f file` reports.
fn keygen_find(file: &Path, name: &str) -> Vec<usize> {
    let out = run_tool(
        Command::new("ssh-keygen")
            .arg("-F")
            .arg(name)
            .arg("-f")
            .arg(file),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("# Host "))
        .filter_map(|l| l.rsplit_once("found: line "))
        .filter_map(|(_, n)| n.trim().parse().ok())
        .collect()
}

fn keygen_public_key(dir: &Path, kind: &str, bits: Option<&str>) -> PublicKey {
    let path = dir.join(format!("id_{kind}"));
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-N", "", "-t", kind, "-f"]).arg(&path);
    if let Some(bits) = bits {
        cmd.args(["-b", bits]);
    }
    let out = run_tool(&mut cmd);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(path.with_extension("pub")).unwrap_or_default();
    let b64 = text.split(' ').nth(1).unwrap_or_default();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("{e}"));
    PublicKey::from_blob(&blob).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn matching_agrees_with_ssh_keygen_on_plain_and_hashed_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("known_hosts");
    let entries = [
        "bastion.example.com,10.0.0.1",
        "[bastion.example.com]:2222",
        "*.internal,!secret.internal",
        "db?.example.com",
        "[*.ports]:*",
        "!x.internal,*.internal",
        "::1",
        "[::1]:2200",
        "UPPER.example.com",
    ];
    let text: String = entries
        .iter()
        .enumerate()
        .map(|(i, hosts)| line(hosts, &ed(u8::try_from(i).unwrap_or(0))) + "\n")
        .collect();
    std::fs::write(&file, &text).unwrap_or_else(|e| panic!("{e}"));
    let names = [
        "bastion.example.com",
        "[bastion.example.com]:2222",
        "[bastion.example.com]:2200",
        "10.0.0.1",
        "db.internal",
        "secret.internal",
        "x.internal",
        "db1.example.com",
        "db12.example.com",
        "[a.ports]:7",
        "a.ports",
        "::1",
        "[::1]:2200",
        "upper.example.com",
        "nothing",
    ];
    let (ours, _) = KnownHosts::parse(&text, &file);
    for name in names {
        assert_eq!(
            ours.matching_lines(name),
            keygen_find(&file, name),
            "plain, {name}"
        );
    }

    // `ssh-keygen -H` hashes every name that has no wildcard or negation (one line each) and
    // keeps the other lines as they are.
    let out = run_tool(Command::new("ssh-keygen").arg("-H").arg("-f").arg(&file));
    assert!(out.status.success(), "{out:?}");
    let hashed = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(hashed.contains("|1|"), "{hashed}");
    assert!(!hashed.contains("bastion"), "{hashed}");
    let (ours, warnings) = KnownHosts::parse(&hashed, &file);
    assert!(warnings.is_empty(), "{warnings:?}");
    for name in names {
        assert_eq!(
            ours.matching_lines(name),
            keygen_find(&file, name),
            "hashed, {name}"
        );
    }
}

#[test]
fn our_hashed_lines_are_found_by_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("known_hosts");
    let salt = *b"0123456789abcdefghij";
    append(
        &file,
        &entry_line("bastion.example.com", 22, &ed(1), true, &salt),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    append(
        &file,
        &entry_line("bastion.example.com", 2222, &ed(2), true, &salt),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    append(&file, &entry_line("db", 5432, &ed(3), false, &salt)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(keygen_find(&file, "bastion.example.com"), vec![1]);
    assert_eq!(keygen_find(&file, "[bastion.example.com]:2222"), vec![2]);
    assert_eq!(keygen_find(&file, "[db]:5432"), vec![3]);
    assert!(keygen_find(&file, "db").is_empty());
}

#[test]
fn real_keys_from_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let keys = [
        keygen_public_key(dir.path(), "ed25519", None),
        keygen_public_key(dir.path(), "rsa", Some("2048")),
        keygen_public_key(dir.path(), "ecdsa", Some("384")),
    ];
    let file = dir.path().join("known_hosts");
    let text: String = keys
        .iter()
        .map(|k| format!("{} host@example\n", line("[bastion]:2222", k)))
        .collect();
    std::fs::write(&file, &text).unwrap_or_else(|e| panic!("{e}"));
    let out = run_tool(Command::new("ssh-keygen").arg("-H").arg("-f").arg(&file));
    assert!(out.status.success(), "{out:?}");
    let (k, warnings) =
        KnownHosts::load(std::slice::from_ref(&file)).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            k.check("bastion", 2222, key),
            HostKeyStatus::Known {
                file: file.clone(),
                line: i + 1
            }
        );
        // ssh-keygen -l prints the same fingerprint.
        let out = run_tool(
            Command::new("ssh-keygen").arg("-l").arg("-f").arg(
                dir.path()
                    .join(format!("id_{}.pub", ["ed25519", "rsa", "ecdsa"][i])),
            ),
        );
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(listed.contains(&key.fingerprint()), "{listed}");
    }
    assert_eq!(
        k.known_key_types("bastion", 2222),
        vec!["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp384"]
    );
}

proptest! {
    #[test]
    fn parse_never_panics(text in "(?s).{0,400}") {
        let (k, warnings) = KnownHosts::parse(&text, Path::new("f"));
        let lines = text.split('\n').count();
        prop_assert!(k.len() + warnings.len() <= lines);
        for w in &warnings {
            prop_assert!(w.line >= 1 && w.line <= lines);
        }
        let _ = k.check("h", 22, &ed(1));
    }

    #[test]
    fn parse_never_panics_on_line_shaped_input(
        lines in proptest::collection::vec(
            (
                prop_oneof![Just(""), Just("@revoked "), Just("@cert-authority "), Just("@x ")],
                "[a-z*?!,\\[\\]:|0-9=]{0,16}",
                prop_oneof![Just("ssh-ed25519"), Just("ssh-rsa"), Just("x"), Just("")],
                "[A-Za-z0-9+/=]{0,80}",
            ),
            0..10,
        )
    ) {
        let text: String = lines
            .iter()
            .map(|(m, h, t, k)| format!("{m}{h} {t} {k}\n"))
            .collect();
        let (k, _) = KnownHosts::parse(&text, Path::new("f"));
        let _ = k.known_key_types("a", 2222);
        let _ = k.check("a", 2222, &ed(1));
    }

    #[test]
    fn recorded_lines_are_known(
        host in "[a-z0-9][a-z0-9.-]{0,20}",
        port in 1u16..,
        hashed in any::<bool>(),
        salt in any::<[u8; 20]>(),
        n in any::<u8>(),
    ) {
        let key = ed(n);
        let l = entry_line(&host, port, &key, hashed, &salt);
        let (k, warnings) = KnownHosts::parse(&l, Path::new("f"));
        prop_assert!(warnings.is_empty());
        prop_assert_eq!(k.check(&host, port, &key), HostKeyStatus::Known { file: "f".into(), line: 1 });
        // A line for `[host]:port` says nothing about `host`; a line for `host` answers for
        // any port that has no line of its own (ssh's second look, without the port).
        if port == 22 {
            prop_assert_eq!(k.check(&host, 23, &key), HostKeyStatus::Known { file: "f".into(), line: 1 });
        } else {
            prop_assert_eq!(k.check(&host, 22, &key), HostKeyStatus::Unknown { other_types: vec![] });
        }
    }
}
