//! `KnownHostsCommand` against the real sshd, with OpenSSH's `ssh` run first on the same lab
//! as the reference. The client's known_hosts file is empty; a script stands for a platform's
//! key store: it logs each call's arguments (`%I %H %t %f %K`) and prints the store's lines.
//! The store lists only the bastion's RSA key, while sshd also has an Ed25519 one, which
//! both clients would ask for first: so the tunnel comes up only if the ORDER run is used to
//! choose the host key type, as ssh uses it. A key the store does not list, or lists wrong,
//! is refused as from a file; a failing command fails the attempt with its stderr, at ORDER
//! or at HOSTNAME; a tunnel that was up retries it until the store answers again; and
//! `forwarder check` reports both at stage 5.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use ssh_interop_tests::check::check_stage;
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Sshd, TunnelBuilder, UserKey, echo_round_trip,
};

const WAIT: Duration = Duration::from_secs(30);

/// The key store: a script, the lines it prints, the log of its calls, and switches that
/// make it fail for one kind of call (`fail-ORDER`, `fail-HOSTNAME`).
struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn new(lines: &str) -> Store {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        let script = format!(
            "#!/bin/sh\n\
             echo \"$*\" >> {d}/calls\n\
             if [ -e {d}/fail-$1 ]; then echo 'looking up the key store' >&2; \
             echo 'vault: sealed' >&2; exit 1; fi\n\
             cat {d}/store\n"
        );
        fs::write(dir.path().join("lookup"), script).expect("write the script");
        fs::set_permissions(dir.path().join("lookup"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let store = Store { dir };
        store.set_lines(lines);
        store
    }

    /// The option both clients are given.
    fn option(&self) -> String {
        format!(
            "KnownHostsCommand={} %I %H %t %f %K",
            self.dir.path().join("lookup").display()
        )
    }

    fn set_lines(&self, lines: &str) {
        fs::write(self.dir.path().join("store"), lines).expect("write the store");
    }

    fn fail(&self, invocation: &str, on: bool) {
        let switch = self.dir.path().join(format!("fail-{invocation}"));
        if on {
            fs::write(switch, "").expect("write the switch");
        } else {
            let _ = fs::remove_file(switch);
        }
    }

    /// The calls so far, one line each, and forgets them.
    fn take_calls(&self) -> Vec<String> {
        let path = self.dir.path().join("calls");
        let text = fs::read_to_string(&path).unwrap_or_default();
        let _ = fs::remove_file(path);
        text.lines().map(str::to_owned).collect()
    }

    fn calls_path(&self) -> PathBuf {
        self.dir.path().join("calls")
    }
}

/// An sshd with an Ed25519 and an RSA host key, and an empty known_hosts file.
fn lab(key: &UserKey) -> (Sshd, PathBuf) {
    let sshd = Sshd::builder()
        .host_keys(&[KeyKind::Ed25519, KeyKind::Rsa2048])
        .authorize(key)
        .start();
    let empty = sshd.dir().join("known_hosts_empty");
    fs::write(&empty, "").expect("write known_hosts");
    (sshd, empty)
}

fn rsa_line(sshd: &Sshd) -> String {
    sshd.host_key(KeyKind::Rsa2048)
        .expect("an RSA host key")
        .known_hosts_line("127.0.0.1", sshd.port())
}

/// A client of `kind` with the store's command and an empty known_hosts file.
fn client(
    kind: ClientKind,
    sshd: &Sshd,
    key: &UserKey,
    empty: &Path,
    store: &Store,
    echo: &EchoServer,
) -> TunnelBuilder {
    TunnelBuilder::new(kind, sshd, key)
        .known_hosts(empty)
        .option(&store.option())
        .forward_to(echo.port())
}

fn assert_echo(port: u16, what: &str, log: &dyn Fn() -> String) {
    let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let back = echo_round_trip(port, &sent)
        .unwrap_or_else(|e| panic!("{what}: the echo failed: {e}\n{}", log()));
    assert!(back == sent, "{what}: the echo came back different");
}

#[test]
fn the_store_s_key_lets_the_tunnel_up_with_the_calls_ssh_makes() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let (sshd, empty) = lab(&key);
    let echo = EchoServer::start();
    let store = Store::new("");
    let rsa = sshd.host_key(KeyKind::Rsa2048).expect("an RSA host key");
    let name = format!("[127.0.0.1]:{}", sshd.port());

    // OpenSSH 9.2 passes the bare host name to its ORDER run (10.0 fixed it to the name
    // known_hosts is searched for, `[host]:port`, as forwarder does): its store lists the key
    // under both names, so that ssh too asks for the RSA key.
    store.set_lines(&format!(
        "{}\n127.0.0.1 {}\n",
        rsa_line(&sshd),
        rsa.public_line()
    ));
    let ssh = client(ClientKind::OpenSsh, &sshd, &key, &empty, &store, &echo).start();
    assert_echo(ssh.local_port(), "ssh", &|| ssh.log());
    let hostname_call = format!(
        "HOSTNAME {name} ssh-rsa {} {}",
        rsa.fingerprint(),
        rsa.base64()
    );
    assert_eq!(
        store.take_calls(),
        ["ORDER 127.0.0.1 NONE NONE NONE", hostname_call.as_str()],
        "ssh's calls"
    );
    drop(ssh);

    // forwarder, with the store's one line: up only if the ORDER run chose the RSA key.
    store.set_lines(&format!("{}\n", rsa_line(&sshd)));
    let tunnel = client(ClientKind::Forwarder, &sshd, &key, &empty, &store, &echo).start();
    assert_echo(tunnel.local_port(), "forwarder", &|| tunnel.log());
    let forwarder_calls = [format!("ORDER {name} NONE NONE NONE"), hostname_call];
    assert_eq!(store.take_calls(), forwarder_calls, "forwarder's calls");
    drop(tunnel);

    // The fleet daemon, with the option in its file.
    let fleet = client(ClientKind::Forwarder, &sshd, &key, &empty, &store, &echo)
        .as_fleet()
        .start();
    assert_echo(fleet.local_port(), "forwarder serve", &|| fleet.log());
    assert_eq!(store.take_calls(), forwarder_calls, "the fleet's calls");
    // Nothing was recorded: the key was known, from the command.
    assert_eq!(fs::read_to_string(&empty).unwrap_or_default(), "");
}

#[test]
fn a_key_the_store_lists_wrong_is_refused_as_changed_and_one_it_lacks_as_unknown() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let (sshd, empty) = lab(&key);
    let echo = EchoServer::start();
    // Another RSA key under the bastion's name: a changed key, for ssh as for forwarder.
    let other = UserKey::generate(KeyKind::Rsa2048);
    let name = format!("[127.0.0.1]:{}", sshd.port());
    let store = Store::new(&format!("{name} {}\n", other.public_key_line()));
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        let mut tunnel = client(kind, &sshd, &key, &empty, &store, &echo).spawn();
        let log = tunnel.expect_failure();
        let said = match kind {
            ClientKind::OpenSsh => "REMOTE HOST IDENTIFICATION HAS CHANGED",
            _ => "has CHANGED",
        };
        assert!(
            log.contains(said) && log.contains("KnownHostsCommand-HOSTNAME"),
            "{}: {log}",
            kind.name()
        );
    }
    // A store with nothing for this host: unknown, refused under StrictHostKeyChecking=yes.
    store.set_lines(&format!("other.example {}\n", other.public_key_line()));
    let mut tunnel = client(ClientKind::Forwarder, &sshd, &key, &empty, &store, &echo).spawn();
    let log = tunnel.expect_failure();
    assert!(log.contains("is not known"), "{log}");
    assert_eq!(echo.connections(), 0);
}

#[test]
fn a_failing_command_fails_the_attempt_with_what_it_said() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let (sshd, empty) = lab(&key);
    let echo = EchoServer::start();
    let store = Store::new(&format!("{}\n", rsa_line(&sshd)));
    let program = store.dir.path().join("lookup").display().to_string();

    store.fail("ORDER", true);
    let mut ssh = client(ClientKind::OpenSsh, &sshd, &key, &empty, &store, &echo).spawn();
    let log = ssh.expect_failure();
    assert!(log.contains("KnownHostsCommand failed"), "ssh: {log}");
    for invocation in ["ORDER", "HOSTNAME"] {
        store.fail("ORDER", invocation == "ORDER");
        store.fail("HOSTNAME", invocation == "HOSTNAME");
        let mut tunnel = client(ClientKind::Forwarder, &sshd, &key, &empty, &store, &echo).spawn();
        let log = tunnel.expect_failure();
        assert!(
            log.contains(&format!("KnownHostsCommand {program} {invocation} "))
                && log.contains("failed: exit status 1: vault: sealed"),
            "{invocation}: {log}"
        );
    }
    assert_eq!(echo.connections(), 0);
}

#[test]
fn a_tunnel_retries_a_failing_command_until_the_store_answers() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let (mut sshd, empty) = lab(&key);
    let echo = EchoServer::start();
    let store = Store::new(&format!("{}\n", rsa_line(&sshd)));
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .known_hosts(&empty)
        .option(&store.option())
        .option("ServerAliveInterval=1")
        .option("ReconnectBackoffMax=1s")
        .forward_to(echo.port())
        .start();
    assert_echo(tunnel.local_port(), "first", &|| tunnel.log());

    // The store goes down while the bastion restarts: each attempt fails on the command,
    // and is tried again rather than given up as a refused key would be.
    store.fail("HOSTNAME", true);
    let _ = store.take_calls();
    let sessions = tunnel.log_count("session up");
    sshd.restart_keeping_host_keys(&[KeyKind::Ed25519, KeyKind::Rsa2048]);
    let deadline = Instant::now() + WAIT;
    while fs::read_to_string(store.calls_path())
        .unwrap_or_default()
        .matches("HOSTNAME")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no second try:\n{}",
            tunnel.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(tunnel.log_count("session up"), sessions, "{}", tunnel.log());
    store.fail("HOSTNAME", false);
    tunnel.wait_for_log_count("session up", sessions + 1, WAIT);
    assert_echo(tunnel.local_port(), "after the store came back", &|| {
        tunnel.log()
    });
}

/// `forwarder check --json` with the store's command: its stage 5.
fn check_stage5(sshd: &Sshd, key: &UserKey, known_hosts: &Path, store: &Store) -> Value {
    check_stage(sshd, key, known_hosts, &[store.option()], 5)
}

#[test]
fn check_reports_the_store_s_key_and_its_failure_at_stage_5() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let (sshd, empty) = lab(&key);
    let store = Store::new(&format!("{}\n", rsa_line(&sshd)));
    let report = check_stage5(&sshd, &key, &empty, &store);
    assert_eq!(report["ok"], true, "{report:#}");
    let detail = report["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("ssh-rsa SHA256:") && detail.contains("KnownHostsCommand-HOSTNAME:1"),
        "{report:#}"
    );
    for invocation in ["ORDER", "HOSTNAME"] {
        store.fail("ORDER", invocation == "ORDER");
        store.fail("HOSTNAME", invocation == "HOSTNAME");
        let report = check_stage5(&sshd, &key, &empty, &store);
        assert_eq!(report["ok"], false, "{report:#}");
        let detail = report["detail"].as_str().unwrap_or_default();
        let fix = report["fix"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&format!(" {invocation} ")) && detail.contains("vault: sealed"),
            "{invocation}: {report:#}"
        );
        assert!(fix.contains("fix KnownHostsCommand"), "{report:#}");
    }
}
