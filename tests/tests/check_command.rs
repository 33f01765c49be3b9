//! `forwarder check` against the real sshd, PostgreSQL and MariaDB: one test per failure
//! class, each checking the exit status, the failing stage in the `--json` document and the
//! fix it carries; and the all-pass case for both databases.
//!
//! Each database is started once per test binary (a `static`) and shared.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;
use std::time::Duration;

use serde_json::Value;
use ssh_interop_tests::fleet::{TunnelSpec, fleet_file};
use ssh_interop_tests::mariadb::{PROBE_PASSWORD, PROBE_USER};
use ssh_interop_tests::process::run_bounded;
use ssh_interop_tests::{
    CertAuthority, EchoServer, KeyKind, Mariadb, Postgres, Sshd, UserKey, forwarder_binary,
    free_port, known_hosts_line, port_listening,
};

/// Every check here ends well within this (ConnectTimeout and the stages' limits are 10 s).
const CHECK_LIMIT: Duration = Duration::from_secs(90);

static POSTGRES: LazyLock<Postgres> = LazyLock::new(|| {
    let pg = Postgres::start();
    pg.stop_at_process_exit();
    pg
});

static MARIADB: LazyLock<Mariadb> = LazyLock::new(|| {
    let db = Mariadb::start();
    db.stop_at_process_exit();
    db
});

/// What one run of `forwarder check` gave.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "--json output does not parse ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

fn check(args: &[String]) -> Run {
    // Its own cache directory (the KexGuessFile), never the user's.
    let cache = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(forwarder_binary());
    cmd.arg("check")
        .args(args)
        .env("XDG_CACHE_HOME", cache.path());
    let out = run_bounded(&mut cmd, CHECK_LIMIT, "forwarder check");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The options of a check against `port` on loopback with `key` and `known_hosts`.
fn tunnel_args(port: u16, key: &UserKey, known_hosts: &Path) -> Vec<String> {
    [
        "--json".to_owned(),
        "-p".to_owned(),
        port.to_string(),
        "-i".to_owned(),
        key.private_key_path().display().to_string(),
        "-o".to_owned(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        // This machine's /etc/ssh/ssh_known_hosts stays out of the lab.
        "-o".to_owned(),
        "GlobalKnownHostsFile=none".to_owned(),
        "-o".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
        "-o".to_owned(),
        "BatchMode=yes".to_owned(),
        "-o".to_owned(),
        "IdentityAgent=none".to_owned(),
    ]
    .into()
}

/// The known_hosts file a check is given.
enum KnownHosts<'a> {
    /// This file, as it is.
    File(&'a Path),
    /// A file of these servers' host keys alone, written for the one run.
    Trusting(&'a [&'a Sshd]),
}

/// The command line of one check:
/// `check --json <options> [--probe kind] [-J jump] [-L 0:target | -R spec].. user@127.0.0.1`,
/// the options those of [`tunnel_args`], the forwards in the order given.
struct CheckArgs<'a> {
    port: u16,
    key: &'a UserKey,
    user: &'a str,
    known_hosts: KnownHosts<'a>,
    probe: Option<&'a str>,
    jump: Option<&'a Sshd>,
    /// `["-L", spec]` or `["-R", spec]`.
    forwards: Vec<[String; 2]>,
}

impl<'a> CheckArgs<'a> {
    /// As `user` on 127.0.0.1:`port` with `key`.
    fn new(port: u16, key: &'a UserKey, user: &'a str, known_hosts: KnownHosts<'a>) -> Self {
        CheckArgs {
            port,
            key,
            user,
            known_hosts,
            probe: None,
            jump: None,
            forwards: Vec::new(),
        }
    }

    /// `--probe kind`, if any.
    fn probe(mut self, probe: Option<&'a str>) -> Self {
        self.probe = probe;
        self
    }

    /// `-J user@127.0.0.1:port` of `jump`.
    fn jump(mut self, jump: &'a Sshd) -> Self {
        self.jump = Some(jump);
        self
    }

    /// `-L 0:target`.
    fn local(mut self, target: &str) -> Self {
        self.forwards.push(["-L".to_owned(), format!("0:{target}")]);
        self
    }

    /// `-D spec`.
    fn dynamic(mut self, spec: &str) -> Self {
        self.forwards.push(["-D".to_owned(), spec.to_owned()]);
        self
    }

    /// `-b address`.
    fn bind(mut self, address: &str) -> Self {
        self.forwards.push(["-b".to_owned(), address.to_owned()]);
        self
    }

    /// `-B interface`.
    fn bind_interface(mut self, interface: &str) -> Self {
        self.forwards.push(["-B".to_owned(), interface.to_owned()]);
        self
    }

    /// `-R spec`.
    fn remote(mut self, spec: &str) -> Self {
        self.forwards.push(["-R".to_owned(), spec.to_owned()]);
        self
    }

    fn run(self) -> Run {
        // The written file's directory lives until the check is done.
        let (_dir, known_hosts) = match self.known_hosts {
            KnownHosts::File(path) => (None, path.to_path_buf()),
            KnownHosts::Trusting(servers) => {
                let dir = tempfile::tempdir().expect("temp dir");
                let kh = dir.path().join("known_hosts");
                let text: String = servers.iter().map(|s| s.known_hosts()).collect();
                std::fs::write(&kh, text).expect("write known_hosts");
                (Some(dir), kh)
            }
        };
        let mut args = tunnel_args(self.port, self.key, &known_hosts);
        if let Some(p) = self.probe {
            args.extend(["--probe".to_owned(), p.to_owned()]);
        }
        if let Some(jump) = self.jump {
            args.extend([
                "-J".to_owned(),
                format!("{}@127.0.0.1:{}", jump.user(), jump.port()),
            ]);
        }
        args.extend(self.forwards.into_iter().flatten());
        args.push(format!("{}@127.0.0.1", self.user));
        check(&args)
    }
}

/// `check --json [--probe kind] <options> -L 0:target user@127.0.0.1`.
fn run_check(
    port: u16,
    key: &UserKey,
    known_hosts: &Path,
    user: &str,
    target: &str,
    probe: Option<&str>,
) -> Run {
    CheckArgs::new(port, key, user, KnownHosts::File(known_hosts))
        .probe(probe)
        .local(target)
        .run()
}

/// The report of stage `n`.
fn stage(doc: &Value, n: u64) -> &Value {
    doc["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stage"] == n))
        .unwrap_or_else(|| panic!("no stage {n} in {doc:#}"))
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// Checks the exit status, that stage `n` failed with a fix, that every earlier stage passed
/// and every later one was skipped; returns (detail, fix).
fn expect_failure(run: &Run, n: u64) -> (String, String) {
    let doc = run.json();
    assert_eq!(
        run.code,
        9 + n as i32,
        "exit status for stage {n}: {doc:#}\nstderr:\n{}",
        run.stderr
    );
    assert_eq!(doc["exit_code"], 9 + n);
    for s in doc["stages"].as_array().expect("stages") {
        let k = s["stage"].as_u64().expect("stage number");
        let expected = match k.cmp(&n) {
            std::cmp::Ordering::Less => Value::Bool(true),
            std::cmp::Ordering::Equal => Value::Bool(false),
            std::cmp::Ordering::Greater => Value::Null,
        };
        assert_eq!(s["ok"], expected, "stage {k} in {doc:#}");
    }
    let failed = stage(&doc, n);
    let fix = text(&failed["fix"]);
    assert!(!fix.is_empty(), "a failed stage carries a fix: {doc:#}");
    assert!(failed["ms"].is_u64() || n == 5, "{doc:#}");
    (text(&failed["detail"]), fix)
}

fn known_hosts_of(sshd: &Sshd) -> PathBuf {
    sshd.known_hosts_path().to_path_buf()
}

#[test]
fn check_name_that_does_not_resolve_fails_stage_1() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let dir = tempfile::tempdir().expect("temp dir");
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, "").expect("write known_hosts");
    let mut args = tunnel_args(22, &key, &kh);
    args.extend([
        "-L".into(),
        "0:db:5432".into(),
        "bastion.no-such-name.invalid".into(),
    ]);
    let run = check(&args);
    let (detail, fix) = expect_failure(&run, 1);
    assert!(detail.contains("no-such-name.invalid"), "{detail}");
    assert!(fix.contains("platform"), "{fix}");
}

#[test]
fn check_wrong_port_fails_tcp_connect_and_text_output_has_the_fix() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let port = free_port();
    let run = run_check(
        port,
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        "127.0.0.1:5432",
        None,
    );
    let (detail, fix) = expect_failure(&run, 2);
    assert!(detail.contains("refused"), "{detail}");
    assert!(fix.contains("nothing listens"), "{fix}");

    // The same without --json: one line per stage, the fix under the failure, a verdict.
    let mut args: Vec<String> = tunnel_args(port, &key, &known_hosts_of(&sshd))
        .into_iter()
        .skip(1)
        .collect();
    args.extend(["-L".into(), "0:127.0.0.1:5432".into(), sshd.destination()]);
    let run = check(&args);
    assert_eq!(run.code, 11, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("[ ok ] 1 ")),
        "{}",
        run.stdout
    );
    let fail = lines
        .iter()
        .position(|l| l.starts_with("[FAIL] 2 "))
        .unwrap_or_else(|| panic!("no [FAIL] line for stage 2:\n{}", run.stdout));
    assert!(
        lines[fail + 1].trim_start().starts_with("fix:"),
        "{}",
        run.stdout
    );
    assert!(
        lines.iter().any(|l| l.starts_with("[skip] 8 ")),
        "{}",
        run.stdout
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("FAIL") && l.contains("11")),
        "{}",
        run.stdout
    );
}

#[test]
fn check_echo_server_is_not_an_ssh_server() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let run = run_check(
        echo.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        "127.0.0.1:5432",
        None,
    );
    let (detail, fix) = expect_failure(&run, 3);
    assert!(detail.contains("echo"), "{detail}");
    assert!(fix.contains("not an SSH server"), "{fix}");
}

#[test]
fn check_postgres_port_is_not_an_ssh_server() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = LazyLock::force(&POSTGRES);
    let run = run_check(
        pg.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        "127.0.0.1:5432",
        None,
    );
    let (detail, fix) = expect_failure(&run, 3);
    assert!(detail.contains("version line"), "{detail}");
    assert!(fix.contains("not an SSH server"), "{fix}");
}

#[test]
fn check_unknown_host_key_fails_stage_5_with_its_fingerprint() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let dir = tempfile::tempdir().expect("temp dir");
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, "").expect("write known_hosts");
    let run = run_check(sshd.port(), &key, &kh, sshd.user(), "127.0.0.1:5432", None);
    let (detail, fix) = expect_failure(&run, 5);
    let fingerprint = sshd
        .host_key(KeyKind::Ed25519)
        .expect("an Ed25519 host key")
        .fingerprint()
        .to_owned();
    assert!(detail.contains("unknown"), "{detail}");
    assert!(detail.contains(&fingerprint), "{detail}");
    assert!(fix.contains("fingerprint"), "{fix}");
    assert_eq!(
        std::fs::read_to_string(&kh).expect("read known_hosts"),
        "",
        "check never writes known_hosts"
    );
}

#[test]
fn check_unknown_host_key_names_the_known_hosts_lines_it_skipped() {
    // The admin pasted the bastion's line cut short: it is skipped, and the host looks
    // unknown. The detail says which line was skipped, the one fact that explains it.
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let dir = tempfile::tempdir().expect("temp dir");
    let kh = dir.path().join("known_hosts");
    let host_key = sshd
        .host_key(KeyKind::Ed25519)
        .expect("an Ed25519 host key");
    let blob = host_key.base64();
    let cut = &blob[..blob.len() - 20];
    let line = format!(
        "[127.0.0.1]:{} {} {cut}\n",
        sshd.port(),
        host_key.key_type()
    );
    std::fs::write(&kh, line).expect("write known_hosts");
    let run = run_check(sshd.port(), &key, &kh, sshd.user(), "127.0.0.1:5432", None);
    let (detail, _fix) = expect_failure(&run, 5);
    assert!(detail.contains("unknown"), "{detail}");
    assert!(detail.contains("skipped"), "{detail}");
    assert!(detail.contains(&format!("{}:1:", kh.display())), "{detail}");
}

#[test]
fn check_unreadable_known_hosts_fails_stage_5_and_lists_every_stage_in_order() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    // A directory where the file should be: it cannot be read.
    let dir = tempfile::tempdir().expect("temp dir");
    let run = run_check(
        sshd.port(),
        &key,
        dir.path(),
        sshd.user(),
        "127.0.0.1:9",
        Some("tcp"),
    );
    let doc = run.json();
    assert_eq!(run.code, 14, "{doc:#}\nstderr:\n{}", run.stderr);
    let numbers: Vec<u64> = doc["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .filter_map(|s| s["stage"].as_u64())
        .collect();
    assert_eq!(numbers, (1..=8).collect::<Vec<u64>>(), "{doc:#}");
    for n in [3, 4] {
        assert!(stage(&doc, n)["ok"].is_null(), "{doc:#}");
        assert!(
            text(&stage(&doc, n)["detail"]).contains("known_hosts cannot be read"),
            "{doc:#}"
        );
    }
    assert_eq!(stage(&doc, 5)["ok"], false, "{doc:#}");
    assert!(
        text(&stage(&doc, 5)["detail"]).contains("cannot read known_hosts"),
        "{doc:#}"
    );
}

#[test]
fn check_changed_host_key_fails_stage_5_with_both_fingerprints() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let impostor = UserKey::generate(KeyKind::Ed25519);
    let dir = tempfile::tempdir().expect("temp dir");
    let kh = dir.path().join("known_hosts");
    std::fs::write(
        &kh,
        known_hosts_line("127.0.0.1", sshd.port(), impostor.public_key_line()) + "\n",
    )
    .expect("write known_hosts");
    let run = run_check(sshd.port(), &key, &kh, sshd.user(), "127.0.0.1:5432", None);
    let (detail, fix) = expect_failure(&run, 5);
    let real = sshd
        .host_key(KeyKind::Ed25519)
        .expect("an Ed25519 host key")
        .fingerprint()
        .to_owned();
    assert!(detail.contains("CHANGED"), "{detail}");
    assert!(detail.contains(&real), "the offered key: {detail}");
    assert!(
        detail.contains(impostor.fingerprint()),
        "the known key: {detail}"
    );
    assert!(fix.contains("bastion admin"), "{fix}");
}

#[test]
fn check_key_not_authorized_fails_stage_6_with_the_authorized_keys_line() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder().start();
    let echo = EchoServer::start();
    let target = format!("127.0.0.1:{}", echo.port());
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        &target,
        None,
    );
    let (detail, fix) = expect_failure(&run, 6);
    assert!(detail.contains(key.fingerprint()), "{detail}");
    assert!(fix.contains(key.fingerprint()), "{fix}");
    assert!(fix.contains(sshd.user()), "{fix}");
    let line = format!(
        "restrict,port-forwarding,permitopen=\"{target}\",permitlisten=\"NONE:1\",command=\"/bin/false\" ssh-ed25519 {}",
        key.public_key_base64()
    );
    assert!(fix.contains(&line), "expected {line}\nin {fix}");
    assert!(fix.contains("cannot be told apart"), "{fix}");
}

// A certificate whose authority's signature does not verify is not offered: the failed
// login's report names its file and why, so the platform knows to have it issued again.
#[test]
fn check_certificate_with_a_bad_authority_signature_fails_stage_6_naming_it() {
    let ca = CertAuthority::new();
    let sshd = ca.sshd();
    let key = UserKey::generate(KeyKind::Ed25519);
    let cert = ca.certify(key.public_key_path(), "lab-damaged", sshd.user(), &[]);
    CertAuthority::damage_signature(&cert);
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        "127.0.0.1:5432",
        None,
    );
    let (detail, _) = expect_failure(&run, 6);
    let reason = format!(
        "certificate {}: its certificate authority's signature (by ssh-ed25519 key",
        cert.display()
    );
    assert!(
        detail.contains(&reason) && detail.contains("is not valid"),
        "{detail}"
    );
    assert!(
        run.stderr
            .contains(&format!("ignoring certificate {}", cert.display())),
        "{}",
        run.stderr
    );
}

#[test]
fn check_unknown_user_fails_stage_6_and_says_it_cannot_be_told_apart() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        "no-such-user-here",
        "127.0.0.1:5432",
        None,
    );
    let (detail, fix) = expect_failure(&run, 6);
    assert!(detail.contains("no-such-user-here"), "{detail}");
    assert!(fix.contains("cannot be told apart"), "{fix}");
    assert!(fix.contains("AllowUsers"), "{fix}");
    assert!(fix.contains("shell"), "{fix}");
}

#[test]
fn check_allow_tcp_forwarding_no_fails_stage_7_administratively_prohibited() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .config("AllowTcpForwarding no")
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    let target = format!("127.0.0.1:{}", echo.port());
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        &target,
        Some("tcp"),
    );
    let (detail, fix) = expect_failure(&run, 7);
    assert!(detail.contains("administratively prohibited"), "{detail}");
    assert!(fix.contains("AllowTcpForwarding"), "{fix}");
    assert!(fix.contains(&target), "{fix}");
    let doc = run.json();
    assert!(
        doc["stages"]
            .as_array()
            .expect("stages")
            .iter()
            .any(|s| s["stage"] == 6 && text(&s["detail"]).contains(key.fingerprint())),
        "stage 6 names the accepted key: {doc:#}"
    );
    assert_eq!(echo.connections(), 0);
}

#[test]
fn check_unix_socket_target_passes_to_postgres_and_infers_the_probe_from_its_name() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = LazyLock::force(&POSTGRES);
    let socket = pg.socket_path().display().to_string();
    // No --probe: a socket named .s.PGSQL.* implies postgres.
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        &socket,
        None,
    );
    let doc = expect_pass(&run);
    assert!(text(&stage(&doc, 7)["detail"]).contains(&socket), "{doc:#}");
    assert!(
        text(&stage(&doc, 8)["detail"]).contains("postgres"),
        "{doc:#}"
    );
    assert!(
        sshd.log().contains("server_request_direct_streamlocal"),
        "the channel was a direct-streamlocal one:\n{}",
        sshd.log()
    );
}

#[test]
fn check_unix_socket_target_refused_by_sshd_fails_stage_7_naming_allow_stream_local_forwarding() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .config("AllowStreamLocalForwarding no")
        .authorize(&key)
        .start();
    let pg = LazyLock::force(&POSTGRES);
    let socket = pg.socket_path().display().to_string();
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        &socket,
        Some("postgres"),
    );
    let (detail, fix) = expect_failure(&run, 7);
    assert!(detail.contains(&socket), "{detail}");
    assert!(fix.contains("AllowStreamLocalForwarding"), "{fix}");
    assert!(fix.contains(&socket), "{fix}");

    // A socket that does not exist gets the same answer from sshd, and the same fix.
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        "/nonexistent/.s.PGSQL.1",
        Some("postgres"),
    );
    let (_, fix) = expect_failure(&run, 7);
    assert!(fix.contains("a socket exists at that path"), "{fix}");

    // A PermitOpen list of host:port never lets a socket through: the fix says so.
    let sshd = Sshd::builder()
        .config(format!("PermitOpen 127.0.0.1:{}", pg.port()))
        .authorize(&key)
        .start();
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        &socket,
        Some("postgres"),
    );
    let (_, fix) = expect_failure(&run, 7);
    assert!(fix.contains("PermitOpen"), "{fix}");
    assert!(
        sshd.log().contains("but the request was denied"),
        "sshd refused it for PermitOpen:\n{}",
        sshd.log()
    );
}

#[test]
fn check_permit_open_for_another_target_fails_stage_7() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let allowed = EchoServer::start();
    let other = EchoServer::start();
    let sshd = Sshd::builder()
        .config(format!("PermitOpen 127.0.0.1:{}", allowed.port()))
        .authorize(&key)
        .start();
    let target = format!("127.0.0.1:{}", other.port());
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        &target,
        Some("tcp"),
    );
    let (detail, fix) = expect_failure(&run, 7);
    assert!(detail.contains("administratively prohibited"), "{detail}");
    assert!(fix.contains("PermitOpen"), "{fix}");
    assert!(fix.contains("permitopen"), "{fix}");
    assert_eq!(other.connections(), 0);
}

#[test]
fn check_nothing_listening_at_the_target_fails_stage_7_connect_failed() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let target = format!("127.0.0.1:{}", free_port());
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        &target,
        Some("postgres"),
    );
    let (detail, fix) = expect_failure(&run, 7);
    assert!(detail.contains("connect failed"), "{detail}");
    assert!(fix.contains("could not connect"), "{fix}");
    assert!(fix.contains("refused"), "sshd's description: {fix}");
    assert!(fix.contains("DBA"), "{fix}");
}

#[test]
fn check_target_name_the_bastion_cannot_resolve_fails_stage_7() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        "no-such-host.invalid:5432",
        None,
    );
    let (detail, fix) = expect_failure(&run, 7);
    assert!(detail.contains("connect failed"), "{detail}");
    assert!(fix.contains("cannot resolve"), "{fix}");
    assert!(fix.contains("no-such-host.invalid"), "{fix}");
}

#[test]
fn check_mariadb_where_postgres_was_expected_fails_stage_8() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let db = LazyLock::force(&MARIADB);
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        &format!("127.0.0.1:{}", db.port()),
        Some("postgres"),
    );
    let (detail, fix) = expect_failure(&run, 8);
    assert!(
        detail.contains("MySQL") && detail.contains("MariaDB"),
        "{detail}"
    );
    assert!(fix.contains("PostgreSQL was expected"), "{fix}");
}

/// Every stage passed, with the detail of each.
fn expect_pass(run: &Run) -> Value {
    let doc = run.json();
    assert_eq!(run.code, 0, "{doc:#}\nstderr:\n{}", run.stderr);
    assert_eq!(doc["exit_code"], 0);
    for s in doc["stages"].as_array().expect("stages") {
        assert_eq!(s["ok"], true, "{doc:#}");
        assert!(s["fix"].is_null(), "{doc:#}");
    }
    assert_eq!(doc["stages"].as_array().map(Vec::len), Some(8));
    doc
}

#[test]
fn check_all_stages_pass_through_to_postgres() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = LazyLock::force(&POSTGRES);
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        &format!("127.0.0.1:{}", pg.port()),
        Some("postgres"),
    );
    let doc = expect_pass(&run);
    assert!(
        text(&stage(&doc, 3)["detail"]).contains("OpenSSH"),
        "{doc:#}"
    );
    assert!(text(&stage(&doc, 5)["detail"]).contains("known"), "{doc:#}");
    assert!(
        text(&stage(&doc, 6)["detail"]).contains(key.fingerprint()),
        "{doc:#}"
    );
    assert!(
        text(&stage(&doc, 8)["detail"]).contains("postgres"),
        "{doc:#}"
    );
}

#[test]
fn check_guesses_the_first_key_exchange_message_from_the_kex_guess_file_as_the_tunnel_does() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let guess_file = dir.path().join("kex_firsts");
    let run = || {
        let mut args = tunnel_args(sshd.port(), &key, &known_hosts_of(&sshd));
        args.extend([
            "-o".to_owned(),
            format!("KexGuessFile={}", guess_file.display()),
            "-L".to_owned(),
            format!("0:127.0.0.1:{}", echo.port()),
            format!("{}@127.0.0.1", sshd.user()),
        ]);
        check(&args)
    };
    // The first run has nothing to guess from, and leaves the bastion's choices behind.
    let first = run();
    let doc = first.json();
    assert_eq!(first.code, 0, "{doc:#}\nstderr:\n{}", first.stderr);
    assert_eq!(stage(&doc, 4)["ok"], true, "{doc:#}");
    let kex = text(&stage(&doc, 4)["detail"]);
    assert!(!kex.contains("guessed"), "{doc:#}");
    let written = std::fs::read_to_string(&guess_file).unwrap_or_default();
    // A header, the salt, and one line per bastion (its name hashed).
    assert_eq!(
        written.lines().count(),
        3,
        "the check wrote no guess for the bastion: {written:?}"
    );
    // The second sends its first key exchange message at once, and it was right.
    let second = run();
    let doc = second.json();
    assert_eq!(second.code, 0, "{doc:#}\nstderr:\n{}", second.stderr);
    let kex = text(&stage(&doc, 4)["detail"]);
    assert!(kex.contains("guessed right"), "{doc:#}");
}

#[test]
fn check_all_stages_pass_through_to_mariadb() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let db = LazyLock::force(&MARIADB);
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        &format!("127.0.0.1:{}", db.port()),
        Some("mysql"),
    );
    let doc = expect_pass(&run);
    let detail = text(&stage(&doc, 8)["detail"]);
    assert!(detail.contains("MariaDB"), "{detail}");
    assert!(detail.contains("greeting"), "{detail}");

    // With the probe account: it logs in and quits.
    let dir = tempfile::tempdir().expect("temp dir");
    let password_file = dir.path().join("probe-password");
    std::fs::write(&password_file, format!("{PROBE_PASSWORD}\n")).expect("write the password");
    let mut args = tunnel_args(sshd.port(), &key, &known_hosts_of(&sshd));
    args.extend([
        "--probe".into(),
        "mysql".into(),
        "--probe-user".into(),
        PROBE_USER.into(),
        "--probe-password-file".into(),
        password_file.display().to_string(),
        "-L".into(),
        format!("0:127.0.0.1:{}", db.port()),
        sshd.destination(),
    ]);
    let run = check(&args);
    let doc = expect_pass(&run);
    let detail = text(&stage(&doc, 8)["detail"]);
    assert!(
        detail.contains(&format!("logged in as {PROBE_USER}")),
        "{detail}"
    );
}

#[test]
fn check_wrong_probe_password_fails_stage_8_naming_the_probe_login() {
    // The database answered, so the fix is the probe's login, not "something else answered".
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let db = LazyLock::force(&MARIADB);
    let dir = tempfile::tempdir().expect("temp dir");
    let password_file = dir.path().join("probe-password");
    std::fs::write(&password_file, "not-the-password\n").expect("write the password");
    let mut args = tunnel_args(sshd.port(), &key, &known_hosts_of(&sshd));
    args.extend([
        "--probe".into(),
        "mysql".into(),
        "--probe-user".into(),
        PROBE_USER.into(),
        "--probe-password-file".into(),
        password_file.display().to_string(),
        "-L".into(),
        format!("0:127.0.0.1:{}", db.port()),
        sshd.destination(),
    ]);
    let (detail, fix) = expect_failure(&check(&args), 8);
    assert!(detail.contains("error 1045"), "{detail}");
    assert!(fix.contains("refused the probe's login"), "{fix}");
    assert!(fix.contains("--probe-password-file"), "{fix}");
    assert!(!fix.contains("something else answered"), "{fix}");
}

#[test]
fn check_bastion_that_wants_a_second_factor_fails_stage_6_asking_for_key_only_login() {
    // The key is authorized, but sshd wants a password after it: adding the key again would
    // not help, the account must be allowed in with the key alone.
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .authorize(&key)
        .config("PasswordAuthentication yes")
        .config("AuthenticationMethods publickey,password")
        .start();
    let echo = EchoServer::start();
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        &format!("127.0.0.1:{}", echo.port()),
        None,
    );
    let (detail, fix) = expect_failure(&run, 6);
    assert!(detail.contains("as one step"), "{detail}");
    assert!(detail.contains(key.fingerprint()), "{detail}");
    assert!(fix.contains("AuthenticationMethods publickey"), "{fix}");
    assert!(!fix.contains("authorized_keys"), "{fix}");
}

#[test]
fn check_bastion_without_public_key_login_fails_stage_6_saying_so() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .authorize(&key)
        .config("PubkeyAuthentication no")
        .start();
    let echo = EchoServer::start();
    let run = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        &format!("127.0.0.1:{}", echo.port()),
        None,
    );
    let (detail, fix) = expect_failure(&run, 6);
    assert!(detail.contains("does not accept keys"), "{detail}");
    assert!(fix.contains("PubkeyAuthentication yes"), "{fix}");
    assert!(!fix.contains("authorized_keys"), "{fix}");
}

#[test]
fn check_fleet_file_lowest_failing_stage_decides_and_names_filter() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let empty_known_hosts = dir.path().join("empty_known_hosts");
    std::fs::write(&empty_known_hosts, "").expect("write known_hosts");
    let bastion = format!("{}@127.0.0.1:{}", sshd.user(), sshd.port());
    let head = format!(
        "[defaults]\nidentity_file = {:?}\nknown_hosts = {:?}\noptions = {{ IdentityAgent = \"none\" }}\n",
        key.private_key_path().display().to_string(),
        sshd.known_hosts_path().display().to_string(),
    );
    let tunnels = [
        TunnelSpec::new(
            "good",
            &bastion,
            free_port(),
            &format!("127.0.0.1:{}", echo.port()),
        )
        .with("probe = \"tcp\""),
        TunnelSpec::new(
            "no-db",
            &bastion,
            free_port(),
            &format!("127.0.0.1:{}", free_port()),
        ),
        TunnelSpec::new(
            "new-host-key",
            &bastion,
            free_port(),
            &format!("127.0.0.1:{}", echo.port()),
        )
        .with(&format!(
            "known_hosts = {:?}",
            empty_known_hosts.display().to_string()
        )),
    ];
    let file = dir.path().join("tunnels.toml");
    std::fs::write(&file, fleet_file(&head, &tunnels)).expect("write the fleet file");
    let config = file.display().to_string();

    // good + no-db: 16.
    let run = check(&[
        "--json".into(),
        "--config".into(),
        config.clone(),
        "good".into(),
        "no-db".into(),
    ]);
    let doc = run.json();
    assert_eq!(run.code, 16, "{doc:#}\n{}", run.stderr);
    assert_eq!(doc["exit_code"], 16);
    let reports = doc["tunnels"].as_array().expect("tunnels");
    assert_eq!(reports.len(), 2, "{doc:#}");
    assert_eq!(reports[0]["name"], "good");
    assert_eq!(reports[0]["exit_code"], 0, "{doc:#}");
    assert_eq!(reports[1]["name"], "no-db");
    assert_eq!(reports[1]["exit_code"], 16, "{doc:#}");

    // All three: the host key (14) is the lowest failing stage.
    let run = check(&["--json".into(), "--config".into(), config.clone()]);
    let doc = run.json();
    assert_eq!(run.code, 14, "{doc:#}\n{}", run.stderr);
    assert_eq!(doc["tunnels"].as_array().map(Vec::len), Some(3));

    // Only the good one.
    let run = check(&["--config".into(), config.clone(), "good".into()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("tunnel good"), "{}", run.stdout);

    // An unknown name is a usage error.
    let run = check(&["--config".into(), config, "nope".into()]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("nope"), "{}", run.stderr);

    // A remote tunnel is checked too: the bastion is asked to listen (and to stop again),
    // and its target is connected to from here. A socks tunnel is checked as `-D`: its
    // session, and no target (it has none).
    let mut mixed_text = fleet_file(&head, &tunnels[..1]);
    let back_port = free_port();
    mixed_text.push_str(&format!(
        "[[tunnel]]\nname = \"back\"\nkind = \"remote\"\nbastion = {bastion:?}\n\
         bastion_listen = \"127.0.0.1:{back_port}\"\ntarget = \"127.0.0.1:{}\"\n\
         [[tunnel]]\nname = \"proxy\"\nkind = \"socks\"\nbastion = {bastion:?}\n\
         local = \"127.0.0.1:{}\"\n",
        echo.port(),
        free_port()
    ));
    let mixed = dir.path().join("mixed.toml");
    std::fs::write(&mixed, mixed_text).expect("write the fleet file");
    let mixed = mixed.display().to_string();
    let run = check(&["--json".into(), "--config".into(), mixed]);
    let doc = run.json();
    assert_eq!(run.code, 0, "{doc:#}\n{}", run.stderr);
    let back = doc["tunnels"]
        .as_array()
        .and_then(|t| t.iter().find(|r| r["name"] == "back"))
        .unwrap_or_else(|| panic!("no report for back: {doc:#}"));
    assert!(
        text(&stage(back, 7)["detail"])
            .contains(&format!("the bastion listens on 127.0.0.1:{back_port}")),
        "{back:#}"
    );
    assert!(
        text(&stage(back, 8)["detail"]).contains("connected"),
        "{back:#}"
    );
    assert!(!port_listening(back_port), "the forward was not cancelled");
    let proxy = doc["tunnels"]
        .as_array()
        .and_then(|t| t.iter().find(|r| r["name"] == "proxy"))
        .unwrap_or_else(|| panic!("no report for proxy: {doc:#}"));
    assert_eq!(proxy["exit_code"], 0, "{proxy:#}");
    for n in 1..=6 {
        assert_eq!(stage(proxy, n)["ok"], true, "stage {n}: {proxy:#}");
    }
    for n in [7, 8] {
        assert!(stage(proxy, n)["ok"].is_null(), "stage {n}: {proxy:#}");
        assert!(
            text(&stage(proxy, n)["detail"]).contains("each SOCKS connection names its own target"),
            "stage {n}: {proxy:#}"
        );
    }
}

#[test]
fn check_no_common_key_exchange_fails_stage_4_with_both_lists() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .config("KexAlgorithms curve25519-sha256")
        .authorize(&key)
        .start();
    let mut args = tunnel_args(sshd.port(), &key, &known_hosts_of(&sshd));
    args.extend([
        "-o".into(),
        "KexAlgorithms=ecdh-sha2-nistp256".into(),
        "-L".into(),
        "0:127.0.0.1:5432".into(),
        sshd.destination(),
    ]);
    let run = check(&args);
    let (detail, fix) = expect_failure(&run, 4);
    assert!(
        detail.contains("ecdh-sha2-nistp256") && detail.contains("curve25519-sha256"),
        "{detail}"
    );
    assert!(fix.contains("KexAlgorithms"), "{fix}");
}

#[test]
fn check_silent_server_fails_stage_3_within_connect_timeout() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local address").port();
    let holder = std::thread::spawn(move || {
        // Accept and say nothing; the connection closes when the check gives up or after 20 s.
        if let Ok((mut conn, _)) = listener.accept() {
            conn.set_read_timeout(Some(Duration::from_secs(20))).ok();
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut conn, &mut sink);
        }
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, "").expect("write known_hosts");
    let mut args = tunnel_args(port, &key, &kh);
    args.extend([
        "-o".into(),
        "ConnectTimeout=2".into(),
        "-L".into(),
        "0:127.0.0.1:5432".into(),
        "someone@127.0.0.1".into(),
    ]);
    let started = std::time::Instant::now();
    let run = check(&args);
    let (detail, fix) = expect_failure(&run, 3);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        detail.contains("no SSH version line within 2 s"),
        "{detail}"
    );
    assert!(fix.contains("not an SSH server"), "{fix}");
    holder.join().expect("the silent server's thread");
}

#[test]
fn check_help_documents_stages_and_exit_codes() {
    let run = check(&["--help".into()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for needle in [
        "--json",
        "--probe",
        "--config",
        "10 name resolution",
        "17 the database",
    ] {
        assert!(run.stdout.contains(needle), "{needle} in\n{}", run.stdout);
    }
    let run = check(&["--probe".into(), "redis".into()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("redis"), "{}", run.stderr);
}

#[test]
fn check_looks_the_host_key_up_under_host_key_alias_as_the_tunnel_does() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // The bastion's keys listed only under the alias (no port: ssh writes aliases bare).
    let kh = dir.path().join("known_hosts");
    let lines: String = sshd
        .host_keys()
        .iter()
        .map(|k| format!("{}\n", k.known_hosts_line("bastion-alias", 22)))
        .collect();
    std::fs::write(&kh, lines).expect("write known_hosts");
    let mut args = tunnel_args(sshd.port(), &key, &kh);
    args.extend([
        "--probe".to_owned(),
        "tcp".to_owned(),
        "-o".to_owned(),
        "HostKeyAlias=bastion-alias".to_owned(),
        "-L".to_owned(),
        format!("0:127.0.0.1:{}", echo.port()),
        format!("{}@127.0.0.1", sshd.user()),
    ]);
    expect_pass(&check(&args));
    // Without the alias the same file knows nothing of 127.0.0.1: stage 5 fails.
    let run = run_check(
        sshd.port(),
        &key,
        &kh,
        sshd.user(),
        &format!("127.0.0.1:{}", echo.port()),
        None,
    );
    let (detail, _) = expect_failure(&run, 5);
    assert!(detail.contains("unknown"), "{detail}");
}

#[test]
fn check_reports_a_host_trusted_through_its_certificate_or_why_it_was_not() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let ca = CertAuthority::new();
    let echo = EchoServer::start();
    let ca_key = std::fs::read_to_string(ca.public_key_path())
        .expect("read the CA's public key")
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let ca_fingerprint = ssh_interop_tests::keys::fingerprint_of(&ca.public_key_path());
    let dir = tempfile::tempdir().expect("temp dir");
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, format!("@cert-authority * {ca_key}\n")).expect("write known_hosts");
    for (principals, trusted) in [("127.0.0.1", true), ("other.example", false)] {
        let mut sshd = Sshd::builder()
            .host_keys(&[KeyKind::Ed25519])
            .authorize(&key)
            .start();
        let public = sshd
            .host_key(KeyKind::Ed25519)
            .expect("an Ed25519 host key")
            .private_key_path()
            .with_extension("pub");
        let cert = ca.certify(&public, "lab-bastion", principals, &["-h"]);
        sshd.restart_with_config_line(&format!("HostCertificate {}", cert.display()));
        let target = format!("127.0.0.1:{}", echo.port());
        let run = run_check(sshd.port(), &key, &kh, sshd.user(), &target, None);
        if trusted {
            let doc = run.json();
            assert_eq!(run.code, 0, "{doc:#}\nstderr:\n{}", run.stderr);
            let detail = text(&stage(&doc, 5)["detail"]);
            for part in [
                "ssh-ed25519-cert-v01@openssh.com",
                "trusted through its host certificate",
                ca_fingerprint.as_str(),
                &format!("@cert-authority at {}:1", kh.display()),
                "key id \"lab-bastion\"",
                "valid forever",
            ] {
                assert!(detail.contains(part), "{part:?} not in {detail}");
            }
        } else {
            let (detail, _fix) = expect_failure(&run, 5);
            assert!(
                detail.contains("names principals [other.example], not `127.0.0.1`"),
                "{detail}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(&kh).expect("read known_hosts"),
            format!("@cert-authority * {ca_key}\n"),
            "check never writes known_hosts"
        );
    }
}

/// `check --json [--probe kind] <options> -R spec user@127.0.0.1`.
fn run_check_remote(sshd: &Sshd, key: &UserKey, spec: &str, probe: Option<&str>) -> Run {
    CheckArgs::new(
        sshd.port(),
        key,
        sshd.user(),
        KnownHosts::File(sshd.known_hosts_path()),
    )
    .probe(probe)
    .remote(spec)
    .run()
}

#[test]
fn check_remote_forward_passes_with_the_bastion_listening_and_postgres_probed_here() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let pg = LazyLock::force(&POSTGRES);
    let port = free_port();
    let run = run_check_remote(
        &sshd,
        &key,
        &format!("{port}:127.0.0.1:{}", pg.port()),
        Some("postgres"),
    );
    let doc = expect_pass(&run);
    assert!(
        text(&stage(&doc, 7)["detail"])
            .contains(&format!("the bastion listens on localhost:{port}")),
        "{doc:#}"
    );
    assert!(
        text(&stage(&doc, 8)["detail"]).contains("postgres"),
        "{doc:#}"
    );
    let log = sshd.log();
    assert!(
        log.contains("rtype tcpip-forward") && log.contains("rtype cancel-tcpip-forward"),
        "asked for, then cancelled:\n{log}"
    );
    assert!(!port_listening(port), "still listening on the bastion");
}

#[test]
fn check_with_a_socks_forward_checks_the_session_and_says_it_cannot_test_its_targets() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let run = CheckArgs::new(
        sshd.port(),
        &key,
        sshd.user(),
        KnownHosts::Trusting(&[&sshd]),
    )
    .probe(Some("tcp"))
    .dynamic("0")
    .local(&format!("127.0.0.1:{}", echo.port()))
    .run();
    let doc = run.json();
    assert_eq!(run.code, 0, "{doc:#}\nstderr:\n{}", run.stderr);
    let stages = doc["stages"].as_array().expect("stages");
    // Stages 1 to 6 pass; the -D forward's 7 and 8 are skipped, saying why; the -L's pass.
    for s in stages.iter().filter(|s| s["stage"].as_u64() < Some(7)) {
        assert_eq!(s["ok"], true, "{doc:#}");
    }
    let of_stage = |n: u64| -> Vec<&Value> { stages.iter().filter(|s| s["stage"] == n).collect() };
    for n in [7, 8] {
        let entries = of_stage(n);
        assert_eq!(entries.len(), 2, "{doc:#}");
        assert!(
            entries[0]["ok"].is_null(),
            "the -D's stage {n} is skipped: {doc:#}"
        );
        assert!(
            text(&entries[0]["detail"])
                .contains("-D 0: not run: each SOCKS connection names its own target"),
            "{doc:#}"
        );
        assert_eq!(entries[1]["ok"], true, "the -L's stage {n}: {doc:#}");
    }
    assert_eq!(
        echo.connections(),
        1,
        "stage 8 of the -L reached the echo server"
    );
}

// A dynamic remote forward (`-R port`, SOCKS): the bastion's grant is checked and
// cancelled; its targets, named by each connection, are not.
#[test]
fn check_dynamic_remote_forward_checks_the_grant_and_says_it_cannot_test_its_targets() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let port = free_port();
    let run = run_check_remote(&sshd, &key, &port.to_string(), None);
    let doc = run.json();
    assert_eq!(run.code, 0, "{doc:#}\nstderr:\n{}", run.stderr);
    assert_eq!(stage(&doc, 7)["ok"], true, "{doc:#}");
    assert!(
        text(&stage(&doc, 7)["detail"]).contains(&format!(
            "the bastion listens on localhost:{port} for SOCKS"
        )),
        "{doc:#}"
    );
    assert!(
        stage(&doc, 8)["ok"].is_null(),
        "stage 8 is skipped: {doc:#}"
    );
    assert!(
        text(&stage(&doc, 8)["detail"]).contains(&format!(
            "localhost:{port}: not run: each SOCKS connection names its own target"
        )),
        "{doc:#}"
    );
    assert!(
        sshd.log().contains("rtype cancel-tcpip-forward"),
        "cancelled:\n{}",
        sshd.log()
    );
    assert!(!port_listening(port), "still listening on the bastion");
}

#[test]
fn check_remote_forward_refused_fails_stage_7_naming_allow_tcp_forwarding() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .config("AllowTcpForwarding local")
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    let run = run_check_remote(
        &sshd,
        &key,
        &format!("{}:127.0.0.1:{}", free_port(), echo.port()),
        None,
    );
    let (detail, fix) = expect_failure(&run, 7);
    assert!(detail.contains("refused"), "{detail}");
    assert!(
        fix.contains("AllowTcpForwarding must be yes or remote"),
        "{fix}"
    );
    assert_eq!(echo.connections(), 0);
}

#[test]
fn check_remote_forward_to_nothing_here_fails_stage_8() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let dead = free_port();
    let run = run_check_remote(&sshd, &key, &format!("0:127.0.0.1:{dead}"), None);
    let (detail, fix) = expect_failure(&run, 8);
    assert!(detail.contains("connect failed"), "{detail}");
    assert!(
        fix.contains("platform") && fix.contains(&format!("127.0.0.1:{dead}")),
        "{fix}"
    );
}

#[test]
fn check_remote_forward_on_a_stale_bastion_socket_fails_stage_7_naming_stream_local_bind_unlink() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // A socket an earlier session left: sshd refuses the path.
    let stale = dir.path().join("left.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let run = run_check_remote(
        &sshd,
        &key,
        &format!("{}:127.0.0.1:{}", stale.display(), echo.port()),
        None,
    );
    let (detail, fix) = expect_failure(&run, 7);
    assert!(detail.contains(&stale.display().to_string()), "{detail}");
    assert!(fix.contains("StreamLocalBindUnlink yes"), "{fix}");
    // A fresh path passes, and the bastion stops listening on it afterwards.
    let fresh = dir.path().join("fresh.sock");
    let run = run_check_remote(
        &sshd,
        &key,
        &format!("{}:127.0.0.1:{}", fresh.display(), echo.port()),
        None,
    );
    let doc = expect_pass(&run);
    assert!(
        text(&stage(&doc, 7)["detail"]).contains(&format!("listens on {}", fresh.display())),
        "{doc:#}"
    );
    assert!(std::os::unix::net::UnixStream::connect(&fresh).is_err());
}

/// `check --json --probe postgres <options> -J jump -L 0:127.0.0.1:PG user@dest`, with a
/// known_hosts file of `trusted` alone.
fn run_check_jump(jump: &Sshd, dest: &Sshd, key: &UserKey, trusted: &[&Sshd]) -> Run {
    let pg = LazyLock::force(&POSTGRES);
    CheckArgs::new(dest.port(), key, dest.user(), KnownHosts::Trusting(trusted))
        .probe(Some("postgres"))
        .jump(jump)
        .local(&format!("127.0.0.1:{}", pg.port()))
        .run()
}

/// The stage reports in order, as (stage, ok, detail).
fn stage_list(doc: &Value) -> Vec<(u64, Value, String)> {
    doc["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["stage"].as_u64().expect("stage number"),
                s["ok"].clone(),
                text(&s["detail"]),
            )
        })
        .collect()
}

#[test]
fn check_through_a_jump_host_runs_its_stages_then_the_destinations() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let jump = Sshd::start(&key);
    let dest = Sshd::start(&key);
    let run = run_check_jump(&jump, &dest, &key, &[&jump, &dest]);
    let doc = run.json();
    assert_eq!(run.code, 0, "{doc:#}\n{}", run.stderr);
    let list = stage_list(&doc);
    let numbers: Vec<u64> = list.iter().map(|s| s.0).collect();
    // The jump host's 1 to 6, the destination's 2 (a channel through the jump host) to 6,
    // then the forward's 7 and 8.
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 2, 3, 4, 5, 6, 7, 8], "{doc:#}");
    assert!(list.iter().all(|s| s.1 == true), "{doc:#}");
    let jump_label = format!("jump host {}@127.0.0.1:{}: ", jump.user(), jump.port());
    assert!(
        list[..6].iter().all(|s| s.2.starts_with(&jump_label)),
        "{doc:#}"
    );
    assert!(
        list[6..].iter().all(|s| !s.2.starts_with("jump host")),
        "{doc:#}"
    );
    assert_eq!(
        list[6].2,
        format!("127.0.0.1:{} through 127.0.0.1", dest.port())
    );
    assert!(list[12].2.contains("postgres"), "{doc:#}");
    assert_eq!(jump.log().matches("Accepted publickey").count(), 1);
    assert_eq!(dest.log().matches("Accepted publickey").count(), 1);
}

#[test]
fn check_through_a_jump_host_with_an_unknown_key_fails_its_stage_5() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let jump = Sshd::start(&key);
    let dest = Sshd::start(&key);
    let run = run_check_jump(&jump, &dest, &key, &[&dest]);
    let doc = run.json();
    assert_eq!(run.code, 14, "{doc:#}\n{}", run.stderr);
    let list = stage_list(&doc);
    let (n, ok, detail) = &list[4];
    assert_eq!((*n, ok.clone()), (5, Value::Bool(false)), "{doc:#}");
    assert!(
        detail.starts_with(&format!(
            "jump host {}@127.0.0.1:{}",
            jump.user(),
            jump.port()
        )),
        "{doc:#}"
    );
    // Nothing after it ran: the destination was never reached. The forward's skipped
    // stages are not the jump host's.
    assert!(list[5..].iter().all(|s| s.1.is_null()), "{doc:#}");
    let forward: Vec<&(u64, Value, String)> = list.iter().filter(|s| s.0 >= 7).collect();
    assert_eq!(forward.len(), 2, "{doc:#}");
    assert!(
        forward.iter().all(|s| !s.2.starts_with("jump host")),
        "{doc:#}"
    );
    assert_eq!(dest.log().matches("Accepted publickey").count(), 0);
}

#[test]
fn check_through_a_jump_host_that_does_not_forward_fails_the_destinations_stage_2() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let jump = Sshd::builder()
        .config("AllowTcpForwarding no")
        .authorize(&key)
        .start();
    let dest = Sshd::start(&key);
    let run = run_check_jump(&jump, &dest, &key, &[&jump, &dest]);
    let doc = run.json();
    assert_eq!(run.code, 11, "{doc:#}\n{}", run.stderr);
    let list = stage_list(&doc);
    assert!(list[..6].iter().all(|s| s.1 == true), "{doc:#}");
    let (n, ok, detail) = &list[6];
    assert_eq!((*n, ok.clone()), (2, Value::Bool(false)), "{doc:#}");
    assert!(
        detail.contains("through 127.0.0.1") && detail.contains("administratively prohibited"),
        "{doc:#}"
    );
    let fix = text(&doc["stages"][6]["fix"]);
    assert!(fix.contains("AllowTcpForwarding"), "{fix}");
    assert!(list[7..].iter().all(|s| s.1.is_null()), "{doc:#}");
    // The jump host's session, which came up, is said goodbye to.
    assert!(
        jump.log().contains("forwarder check finished"),
        "{}",
        jump.log()
    );
}

// A refused key of a tunnel with only a remote forward gets the line that lets it listen
// there and open nothing; installed as it is, sshd grants the forward and refuses a channel.
#[test]
fn check_remote_forward_refused_key_gets_a_line_with_its_permitlisten_that_sshd_honours() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder().start();
    let echo = EchoServer::start();
    let port = free_port();
    let spec = format!("{port}:127.0.0.1:{}", echo.port());
    let run = run_check_remote(&sshd, &key, &spec, None);
    let (_, fix) = expect_failure(&run, 6);
    let line = format!(
        "restrict,port-forwarding,permitopen=\"NONE:1\",permitlisten=\"localhost:{port}\",command=\"/bin/false\" ssh-ed25519 {}",
        key.public_key_base64()
    );
    assert!(fix.contains(&line), "expected {line}\nin {fix}");

    let sshd = Sshd::builder().authorized_key_line(line).start();
    let run = run_check_remote(&sshd, &key, &spec, None);
    let doc = expect_pass(&run);
    assert!(
        text(&stage(&doc, 7)["detail"]).contains(&format!("listens on localhost:{port}")),
        "{doc:#}"
    );
    // Another port, or a channel, is refused under that line.
    let other = run_check_remote(
        &sshd,
        &key,
        &format!("{}:127.0.0.1:{}", free_port(), echo.port()),
        None,
    );
    expect_failure(&other, 7);
    let local = run_check(
        sshd.port(),
        &key,
        &known_hosts_of(&sshd),
        sshd.user(),
        &format!("127.0.0.1:{}", echo.port()),
        None,
    );
    let (detail, _) = expect_failure(&local, 7);
    assert!(detail.contains("administratively prohibited"), "{detail}");

    // Port 0 (the server picks): the line names any port, and sshd takes it.
    let picked = format!("0:127.0.0.1:{}", echo.port());
    let fresh = Sshd::builder().start();
    let (_, fix) = expect_failure(&run_check_remote(&fresh, &key, &picked, None), 6);
    let any_port = format!(
        "restrict,port-forwarding,permitopen=\"NONE:1\",permitlisten=\"localhost:*\",command=\"/bin/false\" ssh-ed25519 {}",
        key.public_key_base64()
    );
    assert!(fix.contains(&any_port), "expected {any_port}\nin {fix}");
    let sshd = Sshd::builder().authorized_key_line(any_port).start();
    expect_pass(&run_check_remote(&sshd, &key, &picked, None));
}

// `-b`: stage 2 connects from the address given and says so; a bastion that admits only
// that address passes. An address this machine does not have fails stage 2 with its fix.
#[test]
fn check_connects_from_the_bind_address_and_names_a_wrong_one() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .config("AllowUsers *@127.0.0.2")
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    let run = CheckArgs::new(
        sshd.port(),
        &key,
        sshd.user(),
        KnownHosts::File(sshd.known_hosts_path()),
    )
    .probe(Some("tcp"))
    .bind("127.0.0.2")
    .local(&format!("127.0.0.1:{}", echo.port()))
    .run();
    let doc = expect_pass(&run);
    assert!(
        text(&stage(&doc, 2)["detail"]).ends_with(" from 127.0.0.2"),
        "{doc:#}"
    );

    let run = CheckArgs::new(
        sshd.port(),
        &key,
        sshd.user(),
        KnownHosts::File(sshd.known_hosts_path()),
    )
    .bind("192.0.2.1")
    .local(&format!("127.0.0.1:{}", echo.port()))
    .run();
    let doc = run.json();
    assert_ne!(run.code, 0, "{doc:#}");
    assert_eq!(stage(&doc, 2)["ok"], false, "{doc:#}");
    assert!(
        text(&stage(&doc, 2)["detail"]).contains("bind 192.0.2.1"),
        "{doc:#}"
    );
    assert!(
        text(&stage(&doc, 2)["fix"])
            .contains("BindAddress (-b) 192.0.2.1 must be an address of this machine"),
        "{doc:#}"
    );
}

// `-B`: stage 2 connects from the interface's address and names both; an interface this
// machine does not have fails stage 2 with its fix, before any connection.
#[test]
fn check_connects_from_the_bind_interface_and_names_a_missing_one() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::builder()
        .config("AllowUsers *@127.0.0.1")
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    let args = || {
        CheckArgs::new(
            sshd.port(),
            &key,
            sshd.user(),
            KnownHosts::File(sshd.known_hosts_path()),
        )
        .local(&format!("127.0.0.1:{}", echo.port()))
    };
    let doc = expect_pass(&args().probe(Some("tcp")).bind_interface("lo").run());
    assert!(
        text(&stage(&doc, 2)["detail"]).ends_with(" from 127.0.0.1 (lo)"),
        "{doc:#}"
    );

    let before = sshd.log().matches("Connection from").count();
    let run = args().bind_interface("nosuch0").run();
    let doc = run.json();
    assert_ne!(run.code, 0, "{doc:#}");
    assert_eq!(stage(&doc, 2)["ok"], false, "{doc:#}");
    assert!(
        text(&stage(&doc, 2)["detail"]).starts_with("BindInterface nosuch0 does not exist"),
        "{doc:#}"
    );
    assert!(
        text(&stage(&doc, 2)["fix"]).contains("BindInterface (-B) nosuch0 must name an interface"),
        "{doc:#}"
    );
    assert_eq!(sshd.log().matches("Connection from").count(), before);
}
