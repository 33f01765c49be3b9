use std::time::{Duration, Instant};

use super::*;
use crate::known_hosts::tests::{ed, line};

/// A shell script at an absolute path, made executable.
fn script(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    path
}

fn command(program: PathBuf, args: Vec<Vec<Piece>>) -> KnownHostsCommand {
    KnownHostsCommand { program, args }
}

fn text(t: &str) -> Piece {
    Piece::Text(t.to_owned())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `program` (no arguments) for ORDER within `limit`; its error, or nothing when it
/// succeeded.
fn run_failing(program: PathBuf, limit: Duration) -> String {
    runtime()
        .block_on(command(program, vec![]).run("h", Invocation::Order, None, limit))
        .err()
        .unwrap_or_default()
}

#[test]
fn the_runtime_tokens_are_filled_in_for_each_run() {
    let c = command(
        PathBuf::from("/bin/true"),
        vec![
            vec![text("host="), Piece::LookupName],
            vec![Piece::Invocation],
            vec![Piece::KeyType, text(":"), Piece::Fingerprint],
            vec![Piece::Key],
            vec![text("plain")],
        ],
    );
    // Before the key exchange there is no key: ssh's NONE.
    assert_eq!(
        c.argv("[db.example]:2222", Invocation::Order, None),
        [
            "host=[db.example]:2222",
            "ORDER",
            "NONE:NONE",
            "NONE",
            "plain"
        ]
    );
    let key = ed(7);
    let presented = PresentedKey {
        key: &key,
        certificate: None,
    };
    let argv = c.argv("bastion", Invocation::Hostname, Some(presented));
    let openssh = key.to_openssh_line();
    let base64 = openssh.split(' ').nth(1).unwrap_or_default();
    assert_eq!(
        argv,
        [
            "host=bastion".to_owned(),
            "HOSTNAME".to_owned(),
            format!("ssh-ed25519:{}", key.fingerprint()),
            base64.to_owned(),
            "plain".to_owned(),
        ]
    );
}

#[test]
fn what_the_command_prints_is_returned() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key_line = line("bastion", &ed(1));
    let program = script(
        &dir,
        "lookup",
        &format!("echo \"# for $1 ($2)\" >&2\necho \"{key_line}\""),
    );
    let c = command(
        program,
        vec![vec![Piece::LookupName], vec![Piece::Invocation]],
    );
    let out = runtime()
        .block_on(c.run("bastion", Invocation::Order, None, Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out, format!("{key_line}\n"));
}

#[test]
fn a_failing_command_is_an_error_that_names_it_and_quotes_its_stderr() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let program = script(
        &dir,
        "lookup",
        "echo 'connecting to the vault' >&2\necho 'vault: host not found' >&2\nexit 3",
    );
    let c = command(program.clone(), vec![vec![Piece::LookupName]]);
    let err = runtime()
        .block_on(c.run("db9", Invocation::Hostname, None, Duration::from_secs(10)))
        .err()
        .unwrap_or_default();
    assert!(
        err.contains(&format!(
            "KnownHostsCommand {} db9 failed",
            program.display()
        )) && err.ends_with("exit status 3: vault: host not found"),
        "{err}"
    );
}

#[test]
fn a_command_killed_by_a_signal_is_an_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let program = script(&dir, "lookup", "kill -9 $$");
    let err = run_failing(program, Duration::from_secs(10));
    assert!(err.ends_with("failed: killed by a signal"), "{err}");
}

#[test]
fn a_program_that_cannot_run_is_an_error() {
    let err = run_failing(
        PathBuf::from("/nonexistent/lookup"),
        Duration::from_secs(10),
    );
    assert!(
        err.starts_with("KnownHostsCommand /nonexistent/lookup failed: cannot run it:"),
        "{err}"
    );
}

/// Whether `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rfind(')')
                .and_then(|i| stat.get(i + 1..))
                .and_then(|rest| rest.split_whitespace().next())
                == Some("Z")
        }
    }
}

#[test]
fn a_command_that_does_not_finish_is_stopped_at_the_limit_with_what_it_started() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pid_file = dir.path().join("helper.pid");
    // It starts a helper that holds its stdout, then would print a line after 30 s; the limit
    // is 0.3 s.
    let program = script(
        &dir,
        "lookup",
        &format!(
            "sleep 30 &\necho $! > {}\nsleep 30\necho 'bastion ssh-ed25519 AAAA'",
            pid_file.display()
        ),
    );
    let started = Instant::now();
    let err = run_failing(program, Duration::from_millis(300));
    assert!(err.ends_with("it did not finish within 0.3 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The helper went with it.
    let helper = std::fs::read_to_string(&pid_file).unwrap_or_default();
    let helper = helper.trim();
    assert!(!helper.is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ended(helper) {
        assert!(Instant::now() < deadline, "the helper {helper} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn too_much_output_is_an_error_not_a_truncation() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // 2 MiB, and then it would go on: the bound is said at once, not after the limit.
    let program = script(
        &dir,
        "lookup",
        "head -c 2097152 /dev/zero | tr '\\0' 'a'\nsleep 30",
    );
    let started = Instant::now();
    let err = run_failing(program, Duration::from_secs(20));
    assert!(err.ends_with("it printed more than 1024 KiB"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn output_that_is_not_text_is_an_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let program = script(&dir, "lookup", "printf 'bastion ssh-ed25519 \\377\\n'");
    let err = run_failing(program, Duration::from_secs(10));
    assert!(err.ends_with("its output is not UTF-8 text"), "{err}");
}

#[test]
fn a_talkative_stderr_neither_blocks_the_command_nor_fills_memory() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // 1 MiB to stderr, far over any pipe's buffer, then the answer and a failure.
    let program = script(
        &dir,
        "lookup",
        "head -c 1048576 /dev/zero | tr '\\0' 'x' >&2\necho >&2\necho 'the last word' >&2\nexit 1",
    );
    let err = run_failing(program, Duration::from_secs(20));
    assert!(err.ends_with("exit status 1: the last word"), "{err}");
}

#[test]
fn a_long_argument_is_shortened_in_messages() {
    let key = "A".repeat(400);
    let c = command(PathBuf::from("/x"), vec![vec![text(&key)]]);
    let shown = c.shown(&c.argv("h", Invocation::Order, None));
    assert_eq!(shown, format!("/x {}...", "A".repeat(60)));
}
