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

/// Starts forwarder with `args` and `HOME=home`; its stderr goes to `home/forwarder.log`.
fn spawn(home: &Path, args: &[&str]) -> LabChild {
    let log = fs::File::create(home.join("forwarder.log")).expect("create the log");
    let mut cmd = Command::new(forwarder_binary());
    cmd.args(args)
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
