use std::path::PathBuf;

use ring::signature::{Ed25519KeyPair, KeyPair as _};
use ssh_transport::wire::Writer as _;

use super::*;
use crate::known_hosts::tests::{ecdsa, ed, line, rsa};
use crate::known_hosts::{HostKeyStatus, KnownHosts};

/// A temporary directory with a known_hosts file holding `lines`.
fn file_with(lines: &[String]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("known_hosts");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    (dir, path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"))
}

fn update(outcome: Outcome) -> Plan {
    match outcome {
        Outcome::Update(p) => p,
        other => panic!("expected an update, got {other:?}"),
    }
}

fn skipped(outcome: Outcome) -> String {
    match outcome {
        Outcome::Skip(why) => why,
        other => panic!("expected a skip, got {other:?}"),
    }
}

// A rotation as a bastion's admin makes it: a new key added (listed by the server, proven,
// appended), later the old one retired (no longer listed: its line removed). Comments and
// other hosts' lines stay as they were.
#[test]
fn a_new_key_is_added_once_proven_and_a_retired_one_removed() {
    let (_dir, path) = file_with(&[
        "# the platform's bastions".to_owned(),
        line("bastion.example", &ed(1)),
        line("other.example", &ed(9)),
    ]);
    let files = [path.clone()];
    assert_eq!(
        plan(&files, "bastion.example", 22, &[ed(1)]),
        Outcome::Nothing
    );
    let mode = || {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(&path)
                .map(|m| m.permissions().mode())
                .unwrap_or_else(|e| panic!("{e}"))
        }
        #[cfg(not(unix))]
        0
    };
    let mode_before = mode();
    let p = update(plan(&files, "Bastion.Example", 22, &[ed(1), ecdsa(2)]));
    assert_eq!((p.new.clone(), p.stale.clone()), (vec![ecdsa(2)], vec![]));
    let done = apply(&p, &p.new, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        done,
        Applied {
            added: vec![ecdsa(2)],
            removed: 0
        }
    );
    assert_eq!(
        read(&path),
        format!(
            "# the platform's bastions\n{}\n{}\n{}\n",
            line("bastion.example", &ed(1)),
            line("other.example", &ed(9)),
            line("bastion.example", &ecdsa(2)),
        )
    );
    // Applied again (a second session of the same bastion): nothing doubles.
    assert_eq!(apply(&p, &p.new, false).ok(), Some(Applied::default()));
    // The old key is retired.
    let p = update(plan(&files, "bastion.example", 22, &[ecdsa(2)]));
    assert_eq!((p.new.clone(), p.stale.clone()), (vec![], vec![ed(1)]));
    let done = apply(&p, &[], false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.removed, 1);
    assert_eq!(
        read(&path),
        format!(
            "# the platform's bastions\n{}\n{}\n",
            line("other.example", &ed(9)),
            line("bastion.example", &ecdsa(2)),
        )
    );
    assert_eq!(mode(), mode_before, "the file's mode is kept");
}

// Another port is listed as [host]:port, hashed when asked for, and only the lines of that
// name are touched.
#[test]
fn another_port_and_hashed_lines() {
    let salt = [7u8; 20];
    let hashed = entry_line("bastion.example", 2222, &ed(1), true, &salt);
    let (_dir, path) = file_with(&[hashed.clone(), line("bastion.example", &ed(3))]);
    let files = [path.clone()];
    let p = update(plan(&files, "bastion.example", 2222, &[ed(1), ecdsa(2)]));
    assert_eq!(
        (p.new.len(), p.stale.len()),
        (1, 0),
        "the bare name's key is not stale"
    );
    apply(&p, &p.new, true).unwrap_or_else(|e| panic!("{e}"));
    let text = read(&path);
    let added = text.lines().nth(2).unwrap_or_else(|| panic!("{text}"));
    assert!(added.starts_with("|1|"), "hashed: {added}");
    let (known, _) = KnownHosts::parse(&text, &path);
    assert!(matches!(
        known.check("bastion.example", 2222, &ecdsa(2)),
        HostKeyStatus::Known { .. }
    ));
    // The hashed line of a retired key is found and removed too.
    let p = update(plan(&files, "bastion.example", 2222, &[ecdsa(2)]));
    assert_eq!(p.stale, [ed(1)]);
    apply(&p, &[], true).unwrap_or_else(|e| panic!("{e}"));
    assert!(!read(&path).contains(&hashed), "{}", read(&path));
}

// OpenSSH's reasons to leave the file alone, and one of ours: the host listed in another
// user file.
#[test]
fn anything_but_simple_lines_for_the_host_leaves_the_file_alone() {
    let offered = [ed(1), ecdsa(2)];
    for (lines, why) in [
        (
            vec![line("bastion.example,10.0.0.5", &ed(1))],
            "other names or patterns",
        ),
        (vec![line("*.example", &ed(1))], "other names or patterns"),
        (
            vec![
                line("bastion.example", &ed(1)),
                format!(
                    "@cert-authority bastion.example {}",
                    ed(5).to_openssh_line()
                ),
            ],
            "@cert-authority or @revoked",
        ),
        (
            vec![
                line("bastion.example", &ed(1)),
                line("alias.example", &ecdsa(2)),
            ],
            "also listed under another name",
        ),
        (
            vec![
                line("bastion.example", &ed(1)),
                line("bastion.example", &ed(4)),
                line("alias.example", &ed(4)),
            ],
            "also listed under another name",
        ),
    ] {
        let (_dir, path) = file_with(&lines);
        let before = read(&path);
        let why_got = skipped(plan(
            std::slice::from_ref(&path),
            "bastion.example",
            22,
            &offered,
        ));
        assert!(why_got.contains(why), "{lines:?}: {why_got}");
        assert_eq!(read(&path), before);
    }
    let (_dir, first) = file_with(&[line("bastion.example", &ed(1))]);
    let (_dir2, second) = file_with(&[line("bastion.example", &ed(7))]);
    let why = skipped(plan(&[first, second], "bastion.example", 22, &offered));
    assert!(why.contains("also listed at"), "{why}");
    assert!(skipped(plan(&[], "h", 22, &offered)).contains("no UserKnownHostsFile"));
}

// A write of this process appended between the plan and its application is kept: the file
// is read again under the lock.
#[test]
fn lines_written_after_the_plan_are_kept() {
    let (_dir, path) = file_with(&[line("bastion.example", &ed(1))]);
    let p = update(plan(
        std::slice::from_ref(&path),
        "bastion.example",
        22,
        &[ecdsa(2)],
    ));
    crate::known_hosts::append(&path, &line("new.example", &ed(8)))
        .unwrap_or_else(|e| panic!("{e}"));
    apply(&p, &[], false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&path), format!("{}\n", line("new.example", &ed(8))));
}

// Lines that are not known_hosts lines, or not UTF-8 at all, are written back byte for byte
// around the edit; a garbage line for the host is neither a reason to stop nor removed.
#[test]
fn hostile_lines_survive_a_rewrite_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("known_hosts");
    let mut text: Vec<u8> = b"# caf\xe9 (Latin-1)\r\n".to_vec();
    text.extend_from_slice(format!("{}\n", line("bastion.example", &ed(1))).as_bytes());
    text.extend_from_slice(b"bastion.example ssh-ed25519 !!!notbase64\n\0\xff\xfe\n\n");
    text.extend_from_slice(b"@weird-marker bastion.example x y");
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    let p = update(plan(
        std::slice::from_ref(&path),
        "bastion.example",
        22,
        &[ecdsa(2)],
    ));
    assert_eq!(
        (p.new.clone(), p.stale.clone()),
        (vec![ecdsa(2)], vec![ed(1)])
    );
    apply(&p, &p.new, false).unwrap_or_else(|e| panic!("{e}"));
    let mut expected: Vec<u8> = b"# caf\xe9 (Latin-1)\r\n".to_vec();
    expected.extend_from_slice(b"bastion.example ssh-ed25519 !!!notbase64\n\0\xff\xfe\n\n");
    expected.extend_from_slice(b"@weird-marker bastion.example x y\n");
    expected.extend_from_slice(format!("{}\n", line("bastion.example", &ecdsa(2))).as_bytes());
    assert_eq!(
        std::fs::read(&path).unwrap_or_else(|e| panic!("{e}")),
        expected
    );
}

fn signature_blob(algorithm: &str, sig: &[u8]) -> Vec<u8> {
    let mut blob = Vec::new();
    blob.put_str(algorithm);
    blob.put_string(sig);
    blob
}

/// An Ed25519 host key made from `seed`, and its proof for `session` as a server signs it.
fn proven_key(seed: u8, session: &[u8]) -> (PublicKey, Vec<u8>) {
    let pair = Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap_or_else(|e| panic!("{e}"));
    let public: [u8; 32] = pair
        .public_key()
        .as_ref()
        .try_into()
        .unwrap_or_else(|e| panic!("{e}"));
    let key = PublicKey::ed25519(&public);
    let proof = signature_blob(
        "ssh-ed25519",
        pair.sign(&proof_data(session, &key)).as_ref(),
    );
    (key, proof)
}

// The server's proof: a signature over the request name, this session's identifier and the
// key. Another session's, another key's or a short list do not pass.
#[test]
fn a_proof_must_be_this_session_s_signature_by_the_key() {
    let session = b"session identifier";
    let (key, good) = proven_key(3, session);
    let negotiated = SignatureAlgorithm::EcdsaP256;
    assert_eq!(
        verify_proofs(
            session,
            std::slice::from_ref(&key),
            std::slice::from_ref(&good),
            negotiated
        ),
        Ok(vec![key.clone()])
    );
    // The same key (same seed), signing another session's identifier.
    let (_, other_session) = proven_key(3, b"another session");
    let e = verify_proofs(
        session,
        std::slice::from_ref(&key),
        &[other_session],
        negotiated,
    )
    .expect_err("another session's signature");
    assert!(e.contains("does not verify"), "{e}");
    assert!(verify_proofs(session, &[ed(1)], std::slice::from_ref(&good), negotiated).is_err());
    let e = verify_proofs(session, &[key.clone(), ed(1)], &[good], negotiated)
        .expect_err("one signature for two keys");
    assert!(e.contains("1 signatures for 2 keys"), "{e}");
}

// An RSA key proven with SHA-1 (`ssh-rsa`) while the exchange used another key type is
// left out, not trusted, and does not stop the other keys; one proven with rsa-sha2 but
// badly fails the whole proof.
#[test]
fn an_rsa_key_proven_with_sha1_is_left_out() {
    let session = b"s";
    let (key, good) = proven_key(4, session);
    let sha1 = signature_blob("ssh-rsa", &[1u8; 256]);
    let keys = [rsa(1), key.clone()];
    assert_eq!(
        verify_proofs(
            session,
            &keys,
            &[sha1, good.clone()],
            SignatureAlgorithm::Ed25519
        ),
        Ok(vec![key.clone()])
    );
    let bad_sha2 = signature_blob("rsa-sha2-512", &[1u8; 256]);
    let e = verify_proofs(
        session,
        &keys,
        &[bad_sha2, good],
        SignatureAlgorithm::Ed25519,
    )
    .expect_err("a bad rsa-sha2 signature");
    assert!(
        e.contains("ssh-rsa key") && e.contains("does not verify"),
        "{e}"
    );
}
