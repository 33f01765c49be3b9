//! ssh_config files against the real sshd: a `Host` alias carrying everything a tunnel needs,
//! `Match` and `Include` through `-F`, and `-F none` leaving the user's file unread. Every run
//! has its own `HOME`, so the tester's own `~/.ssh` is never read.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ssh_interop_tests::client::forwarder_binary;
use ssh_interop_tests::keys::{KeyKind, UserKey};
use ssh_interop_tests::net::{free_port, port_listening};
use ssh_interop_tests::process::{LabChild, run_bounded};
use ssh_interop_tests::servers::{EchoServer, echo_round_trip};
use ssh_interop_tests::sshd::Sshd;

const READY: Duration = Duration::from_secs(30);
/// This machine's /etc/ssh/ssh_known_hosts stays out of every run (the tests' own known_hosts
/// files are the whole truth); a command-line -o wins over the config files under test.
const NO_GLOBAL_KNOWN_HOSTS: [&str; 2] = ["-o", "GlobalKnownHostsFile=/dev/null"];

/// Starts forwarder with `args` and `HOME=home`; its stderr goes to `home/forwarder.log`.
fn spawn(home: &Path, args: &[&str]) -> LabChild {
    let log = fs::File::create(home.join("forwarder.log")).expect("create the log");
    let mut cmd = Command::new(forwarder_binary());
    cmd.args(NO_GLOBAL_KNOWN_HOSTS)
        .args(args)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::null())
        .stderr(log);
    LabChild::spawn("forwarder", &mut cmd)
}

/// Waits until `port` listens, failing with the log if forwarder exits or time runs out.
fn wait_listening(child: &mut LabChild, home: &Path, port: u16) {
    let deadline = Instant::now() + READY;
    while !port_listening(port) {
        let log = || fs::read_to_string(home.join("forwarder.log")).unwrap_or_default();
        if let Some(status) = child.exited() {
            panic!(
                "forwarder exited ({status}) before listening on {port}:\n{}",
                log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "port {port} not listening after {READY:?}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn round_trip(port: u16) {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let back = echo_round_trip(port, &data).expect("echo through the tunnel");
    assert!(back == data, "the echo came back different");
}

#[test]
fn host_alias_carries_hostname_port_user_identity_known_hosts_and_forward() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let home = tempfile::tempdir().expect("temp home");
    let ssh_dir = home.path().join(".ssh");
    fs::create_dir_all(&ssh_dir).expect("mkdir .ssh");
    let local = free_port();
    fs::write(
        ssh_dir.join("config"),
        format!(
            "# the lab's bastion under an alias\n\
             Host db-alias\n\
             \x20   HostName 127.0.0.1\n\
             \x20   Port {port}\n\
             \x20   User {user}\n\
             \x20   IdentityFile \"{identity}\"\n\
             \x20   UserKnownHostsFile {known_hosts}\n\
             \x20   LocalForward {local} 127.0.0.1:{echo}\n\
             \x20   ForwardAgent no\n\
             \x20   ControlMaster auto\n\
             Host *\n\
             \x20   BatchMode yes\n\
             \x20   ExitOnForwardFailure yes\n\
             \x20   IdentityAgent none\n\
             \x20   Port 1\n",
            port = sshd.port(),
            user = sshd.user(),
            identity = key.private_key_path().display(),
            known_hosts = sshd.known_hosts_path().display(),
            echo = echo.port(),
        ),
    )
    .expect("write config");
    let mut child = spawn(home.path(), &["-N", "-v", "db-alias"]);
    wait_listening(&mut child, home.path(), local);
    round_trip(local);
    let log = fs::read_to_string(home.path().join("forwarder.log")).unwrap_or_default();
    assert!(
        log.contains("ForwardAgent is not supported by forwarder; ignored"),
        "-v names the skipped setting:\n{log}"
    );
}

#[test]
fn match_and_include_through_dash_f() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let home = tempfile::tempdir().expect("temp home");
    let conf_d = home.path().join(".ssh").join("conf.d");
    fs::create_dir_all(&conf_d).expect("mkdir conf.d");
    let (matched, not_matched) = (free_port(), free_port());
    // Relative Include paths are under ~/.ssh, also for a -F file.
    fs::write(
        conf_d.join("10-forwards.conf"),
        format!(
            "Match host 127.0.0.1 user {user}\n\
             \x20   LocalForward {matched} 127.0.0.1:{echo}\n\
             Match user nobody-here\n\
             \x20   LocalForward {not_matched} 127.0.0.1:{echo}\n\
             Match exec \"true\"\n\
             \x20   Port 1\n",
            user = sshd.user(),
            echo = echo.port(),
        ),
    )
    .expect("write include");
    let config = home.path().join("other_config");
    fs::write(
        &config,
        format!(
            "Host lab\n\
             \x20   HostName 127.0.0.1\n\
             \x20   User {user}\n\
             Include conf.d/*.conf\n\
             Match originalhost lab\n\
             \x20   Port {port}\n\
             \x20   IdentityFile {identity}\n\
             \x20   UserKnownHostsFile {known_hosts}\n\
             \x20   BatchMode yes\n\
             \x20   IdentityAgent none\n",
            user = sshd.user(),
            port = sshd.port(),
            identity = key.private_key_path().display(),
            known_hosts = sshd.known_hosts_path().display(),
        ),
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8 path");
    let mut child = spawn(home.path(), &["-N", "-F", config, "lab"]);
    wait_listening(&mut child, home.path(), matched);
    round_trip(matched);
    assert!(
        !port_listening(not_matched),
        "the Match user block of another user applied"
    );
}

#[test]
fn dash_f_none_leaves_the_users_file_unread() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let home = tempfile::tempdir().expect("temp home");
    let ssh_dir = home.path().join(".ssh");
    fs::create_dir_all(&ssh_dir).expect("mkdir .ssh");
    // A file forwarder refuses: a bad value is an error naming the file and line.
    fs::write(ssh_dir.join("config"), "Host *\n    Port not-a-port\n").expect("write config");
    let local = free_port();
    let forward = format!("{local}:127.0.0.1:{}", echo.port());
    let port = sshd.port().to_string();
    let identity = key.private_key_path().display().to_string();
    let known_hosts = format!("UserKnownHostsFile={}", sshd.known_hosts_path().display());
    let destination = format!("{}@127.0.0.1", sshd.user());
    let args = |dash_f: bool| {
        let mut a: Vec<&str> = vec!["-N"];
        if dash_f {
            a.extend(["-F", "none"]);
        }
        a.extend([
            "-p",
            &port,
            "-i",
            &identity,
            "-o",
            &known_hosts,
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "Reconnect=no",
            "-L",
            &forward,
            &destination,
        ]);
        a
    };
    // Without -F none, the user's file is read and its bad line stops forwarder.
    let out = run_bounded(
        Command::new(forwarder_binary())
            .args(args(false))
            .env("HOME", home.path())
            .env_remove("SSH_AUTH_SOCK"),
        Duration::from_secs(60),
        "forwarder with the user's config",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the bad line went unnoticed");
    assert!(
        stderr.contains(".ssh/config line 2: bad port 'not-a-port'"),
        "{stderr}"
    );
    // With -F none it is not read at all.
    let mut child = spawn(home.path(), &args(true));
    wait_listening(&mut child, home.path(), local);
    round_trip(local);
}

/// `Sshd`'s host keys as known_hosts lines under `name` (port 22: the bare name, as ssh
/// writes a `HostKeyAlias`).
fn keys_named(sshd: &Sshd, name: &str) -> String {
    sshd.host_keys()
        .iter()
        .map(|k| k.known_hosts_line(name, 22) + "\n")
        .collect()
}

fn logins(sshd: &Sshd) -> usize {
    sshd.log().matches("Accepted publickey").count()
}

/// Runs forwarder to completion (it must exit within a minute); its status and stderr.
fn run_to_exit(home: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = run_bounded(
        Command::new(forwarder_binary())
            .args(NO_GLOBAL_KNOWN_HOSTS)
            .args(args)
            .env("HOME", home)
            .env_remove("SSH_AUTH_SOCK"),
        Duration::from_secs(60),
        "forwarder",
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_jump_host_block_serves_proxy_jump_and_dash_j() {
    // Each server takes only its own key and each hop's host key is known only in its own
    // file, under its own HostKeyAlias for the jump host: nothing works unless each hop's
    // settings come from its own block.
    let (jump_key, target_key) = (
        UserKey::generate(KeyKind::Ed25519),
        UserKey::generate(KeyKind::Ed25519),
    );
    let jump = Sshd::start(&jump_key);
    let target = Sshd::start(&target_key);
    let echo = EchoServer::start();
    let home = tempfile::tempdir().expect("temp home");
    let ssh_dir = home.path().join(".ssh");
    fs::create_dir_all(&ssh_dir).expect("mkdir .ssh");
    fs::write(
        ssh_dir.join("jump_hosts"),
        keys_named(&jump, "the-jump-host"),
    )
    .expect("write");
    fs::write(ssh_dir.join("target_hosts"), target.known_hosts()).expect("write");
    let (via_file, via_dash_j) = (free_port(), free_port());
    fs::write(
        ssh_dir.join("config"),
        format!(
            "Host target\n\
             \x20   ProxyJump jump\n\
             \x20   LocalForward {via_file} 127.0.0.1:{echo}\n\
             Host direct\n\
             \x20   ProxyJump nowhere\n\
             \x20   LocalForward {via_dash_j} 127.0.0.1:{echo}\n\
             Host target direct\n\
             \x20   HostName 127.0.0.1\n\
             \x20   Port {target_port}\n\
             \x20   User {target_user}\n\
             \x20   IdentityFile {target_identity}\n\
             \x20   UserKnownHostsFile ~/.ssh/target_hosts\n\
             Host jump\n\
             \x20   HostName 127.0.0.1\n\
             \x20   Port {jump_port}\n\
             \x20   User {jump_user}\n\
             \x20   IdentityFile {jump_identity}\n\
             \x20   UserKnownHostsFile ~/.ssh/jump_hosts\n\
             \x20   HostKeyAlias the-jump-host\n\
             Host nowhere\n\
             \x20   HostName 127.0.0.1\n\
             \x20   Port 1\n\
             Host *\n\
             \x20   BatchMode yes\n\
             \x20   IdentityAgent none\n\
             \x20   ExitOnForwardFailure yes\n",
            echo = echo.port(),
            target_port = target.port(),
            target_user = target.user(),
            target_identity = target_key.private_key_path().display(),
            jump_port = jump.port(),
            jump_user = jump.user(),
            jump_identity = jump_key.private_key_path().display(),
        ),
    )
    .expect("write config");
    let mut child = spawn(home.path(), &["-N", "target"]);
    wait_listening(&mut child, home.path(), via_file);
    round_trip(via_file);
    assert_eq!((logins(&jump), logins(&target)), (1, 1));
    drop(child);
    // -J names the same block, and wins over the destination's `ProxyJump nowhere`.
    let mut child = spawn(home.path(), &["-N", "-J", "jump", "direct"]);
    wait_listening(&mut child, home.path(), via_dash_j);
    round_trip(via_dash_j);
    assert_eq!((logins(&jump), logins(&target)), (2, 2));
}

#[test]
fn host_key_alias_names_the_key_in_known_hosts() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let impostor = Sshd::start(&key);
    let echo = EchoServer::start();
    let home = tempfile::tempdir().expect("temp home");
    let ssh_dir = home.path().join(".ssh");
    fs::create_dir_all(&ssh_dir).expect("mkdir .ssh");
    let local = free_port();
    let known_hosts = ssh_dir.join("known_hosts");
    let config = |alias: &str, strict: &str| {
        format!(
            "IgnoreUnknown UseKeychain,ForwardAgent\n\
             Host lab\n\
             \x20   HostName 127.0.0.1\n\
             \x20   Port {port}\n\
             \x20   User {user}\n\
             \x20   IdentityFile {identity}\n\
             \x20   HostKeyAlias {alias}\n\
             \x20   StrictHostKeyChecking {strict}\n\
             \x20   LocalForward {local} 127.0.0.1:{echo}\n\
             \x20   BatchMode yes\n\
             \x20   IdentityAgent none\n\
             \x20   Reconnect no\n\
             \x20   UseKeychain yes\n\
             \x20   ForwardAgent no\n\
             \x20   AddKeysToAgent no\n",
            port = sshd.port(),
            user = sshd.user(),
            identity = key.private_key_path().display(),
            echo = echo.port(),
        )
    };
    // Known only under the alias: trusted (the [127.0.0.1]:port name is not in the file).
    fs::write(&known_hosts, keys_named(&sshd, "lab-key")).expect("write known_hosts");
    fs::write(ssh_dir.join("config"), config("lab-key", "yes")).expect("write config");
    let mut child = spawn(home.path(), &["-N", "-v", "lab"]);
    wait_listening(&mut child, home.path(), local);
    round_trip(local);
    drop(child);
    let log = fs::read_to_string(home.path().join("forwarder.log")).unwrap_or_default();
    // IgnoreUnknown silences the notes for its keywords only.
    assert!(log.contains("AddKeysToAgent is not supported"), "{log}");
    assert!(
        !log.contains("UseKeychain") && !log.contains("ForwardAgent"),
        "{log}"
    );
    // The alias bound to another server's keys: refused, nothing forwarded.
    fs::write(&known_hosts, keys_named(&impostor, "lab-key")).expect("write known_hosts");
    let (status, stderr) = run_to_exit(home.path(), &["-N", "lab"]);
    assert_eq!(status, Some(255), "{stderr}");
    assert!(
        stderr.contains("lab-key") && stderr.contains("CHANGED"),
        "the refusal names the alias:\n{stderr}"
    );
    assert_eq!(echo.connections(), 1, "only the first run's connection");
    // accept-new records the key under the alias, without a port.
    fs::write(&known_hosts, "").expect("empty known_hosts");
    fs::write(ssh_dir.join("config"), config("new-key", "accept-new")).expect("write config");
    let mut child = spawn(home.path(), &["-N", "lab"]);
    wait_listening(&mut child, home.path(), local);
    round_trip(local);
    let recorded = fs::read_to_string(&known_hosts).expect("read known_hosts");
    assert!(
        !recorded.is_empty() && recorded.lines().all(|l| l.starts_with("new-key ")),
        "{recorded}"
    );
}
