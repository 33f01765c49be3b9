//! Jump hosts (`-J` / `ProxyJump`) and stdio forwarding (`-W`) against real sshd instances.
//!
//! Every hop is a separate sshd with its own host keys and port. The lab runs every sshd as
//! the current user, so "each hop's own user" is the same OS user here; what the tests check
//! is that each hop is logged in to under the user and port its `-J` element names, and its
//! host key is looked up under its own `[127.0.0.1]:port` name. Every wait is bounded.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ssh_interop_tests::fleet::{Fleet, TunnelSpec, fleet_file};
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Pattern, Sshd, TunnelBuilder, UserKey, echo_round_trip,
    forwarder_binary, free_port, openssh_binary,
};

const LOGIN: &str = "Accepted publickey";
const WAIT: Duration = Duration::from_secs(30);

/// `user@127.0.0.1:port` of a hop.
fn hop(sshd: &Sshd) -> String {
    format!("{}@127.0.0.1:{}", sshd.user(), sshd.port())
}

/// A known_hosts file trusting every one of `hops` under its own `[127.0.0.1]:port` name.
fn known_hosts(dir: &Path, hops: &[&Sshd]) -> PathBuf {
    let path = dir.join("known_hosts");
    let text: String = hops.iter().map(|s| s.known_hosts()).collect();
    fs::write(&path, text).expect("write known_hosts");
    path
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    Pattern::get().bytes_at(seed.wrapping_mul(15_485_863), len)
}

fn assert_echo(port: u16, seed: u64, log: &dyn Fn() -> String, what: &str) {
    let sent = payload(seed, 256 * 1024);
    let back = echo_round_trip(port, &sent)
        .unwrap_or_else(|e| panic!("{what}: the echo failed: {e}; forwarder log:\n{}", log()));
    assert!(
        back == sent,
        "{what}: sent {} bytes, got {} back, not the same; forwarder log:\n{}",
        sent.len(),
        back.len(),
        log()
    );
}

fn logins(sshd: &Sshd) -> usize {
    sshd.log().matches(LOGIN).count()
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("proxy-jump-")
        .tempdir()
        .expect("temp dir")
}

/// forwarder's command line for `-L local` to `echo` on `target`'s side through `-J jump`,
/// with `first` before it (`-F file`): the known_hosts file `kh` alone, `key`, no prompts.
fn jump_args(
    first: &[&str],
    jump: &str,
    key: &UserKey,
    kh: &Path,
    target: &Sshd,
    local: u16,
    echo: &EchoServer,
) -> Vec<String> {
    let mut args: Vec<String> = first.iter().map(|a| (*a).to_owned()).collect();
    args.extend([
        "-N".to_owned(),
        "-J".to_owned(),
        jump.to_owned(),
        "-i".to_owned(),
        key.private_key_path().display().to_string(),
        "-o".to_owned(),
        format!("UserKnownHostsFile={}", kh.display()),
        "-o".to_owned(),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        "-o".to_owned(),
        "BatchMode=yes".to_owned(),
        "-p".to_owned(),
        target.port().to_string(),
        "-L".to_owned(),
        format!("127.0.0.1:{local}:127.0.0.1:{}", echo.port()),
        format!("{}@127.0.0.1", target.user()),
    ]);
    args
}

/// Starts forwarder with `args` (its log in `dir`), waits for its session, and returns it
/// with a reader of its log.
fn start_forwarder(
    dir: &Path,
    args: &[String],
) -> (std::process::Child, impl Fn() -> String + use<>) {
    let log_path = dir.join("forwarder.log");
    let mut child = Command::new(forwarder_binary())
        .env("XDG_CACHE_HOME", dir)
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("start forwarder");
    let log = move || fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + WAIT;
    while !log().contains("session up") {
        assert!(Instant::now() < deadline, "no session: {}", log());
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "exited: {}",
            log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    (child, log)
}

#[test]
fn two_hops_carry_data_byte_for_byte() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let jump = Sshd::start(&key);
    let target = Sshd::start(&key);
    let echo = EchoServer::start();
    let dir = temp_dir();
    let kh = known_hosts(dir.path(), &[&jump, &target]);
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &target, &key)
        .known_hosts(&kh)
        .option(&format!("ProxyJump={}", hop(&jump)))
        .forward_to(echo.port())
        .start();
    assert_echo(tunnel.local_port(), 1, &|| tunnel.log(), "two hops");
    assert_echo(tunnel.local_port(), 2, &|| tunnel.log(), "two hops, again");
    assert_eq!((logins(&jump), logins(&target)), (1, 1), "{}", tunnel.log());
}

#[test]
fn three_hops_with_dash_j_carry_data_byte_for_byte() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let a = Sshd::start(&key);
    let b = Sshd::builder()
        .host_keys(&[KeyKind::Rsa2048])
        .authorize(&key)
        .start();
    let c = Sshd::start(&key);
    let echo = EchoServer::start();
    let dir = temp_dir();
    let kh = known_hosts(dir.path(), &[&a, &b, &c]);
    let local = free_port();
    let args = jump_args(
        &[],
        &format!("{},{}", hop(&a), hop(&b)),
        &key,
        &kh,
        &c,
        local,
        &echo,
    );
    let (mut child, log) = start_forwarder(dir.path(), &args);
    assert_echo(local, 3, &log, "three hops");
    assert_eq!((logins(&a), logins(&b), logins(&c)), (1, 1, 1), "{}", log());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_wrong_host_key_on_the_middle_hop_refuses_and_forwards_nothing() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let a = Sshd::start(&key);
    let b = Sshd::start(&key);
    let c = Sshd::start(&key);
    let impostor = Sshd::start(&key);
    let echo = EchoServer::start();
    let dir = temp_dir();
    // b's name with another server's keys.
    let mut text = a.known_hosts() + &c.known_hosts();
    for k in impostor.host_keys() {
        text.push_str(&k.known_hosts_line("127.0.0.1", b.port()));
        text.push('\n');
    }
    let kh = dir.path().join("known_hosts");
    fs::write(&kh, text).expect("write known_hosts");
    let mut tunnel = TunnelBuilder::new(ClientKind::Forwarder, &c, &key)
        .known_hosts(&kh)
        .option(&format!("ProxyJump={},{}", hop(&a), hop(&b)))
        .forward_to(echo.port())
        .spawn();
    let status = tunnel.wait_exit(WAIT).unwrap_or_else(|| {
        panic!("the forwarder did not exit; log:\n{}", tunnel.log());
    });
    let log = tunnel.log();
    assert_eq!(status.code(), Some(255), "{log}");
    assert!(
        log.contains(&format!("jump host {}", hop(&b))) && log.contains("CHANGED"),
        "the message should name the middle hop and its changed key:\n{log}"
    );
    assert_eq!(echo.connections(), 0);
    assert_eq!(logins(&b), 0, "{}", b.log());
    assert_eq!(logins(&c), 0, "{}", c.log());
}

#[test]
fn losing_the_outer_hop_reconnects_the_chain_on_the_same_port() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let jump = Sshd::start(&key);
    let target = Sshd::start(&key);
    let echo = EchoServer::start();
    let dir = temp_dir();
    let kh = known_hosts(dir.path(), &[&jump, &target]);
    let tunnel = TunnelBuilder::new(ClientKind::Forwarder, &target, &key)
        .known_hosts(&kh)
        .option(&format!("ProxyJump={}", hop(&jump)))
        .option("ServerAliveInterval=1")
        .option("ServerAliveCountMax=2")
        .option("ReconnectBackoffMax=2")
        .forward_to(echo.port())
        .start();
    let port = tunnel.local_port();
    assert_echo(port, 4, &|| tunnel.log(), "before the loss");
    assert!(
        jump.kill_sessions() > 0,
        "no session of the jump host to kill"
    );
    tunnel.wait_for_log_count("session up", 2, WAIT);
    assert_echo(port, 5, &|| tunnel.log(), "after the reconnect");
    assert_eq!((logins(&jump), logins(&target)), (2, 2), "{}", tunnel.log());
}

/// Runs `cmd` with `input` on stdin; its stdout, or a panic after `WAIT`.
fn run_with_input(mut cmd: Command, input: Vec<u8>) -> (std::process::ExitStatus, Vec<u8>) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let _ = tx.send(out);
    });
    let out = match rx.recv_timeout(WAIT) {
        Ok(out) => out,
        Err(_) => {
            let _ = child.kill();
            panic!("no end of output within {WAIT:?}");
        }
    };
    let _ = writer.join();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (status, out);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not exit within {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dash_w_forwards_stdin_and_stdout_to_an_echo_server() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let dir = temp_dir();
    let log_path = dir.path().join("forwarder.log");
    let mut cmd = Command::new(forwarder_binary());
    cmd.env("XDG_CACHE_HOME", dir.path())
        .args(["-W", &format!("127.0.0.1:{}", echo.port())])
        .args(["-i", &key.private_key_path().display().to_string()])
        .args([
            "-o",
            &format!("UserKnownHostsFile={}", sshd.known_hosts_path().display()),
        ])
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes", "-v", "-p", &sshd.port().to_string()])
        .arg(format!("{}@127.0.0.1", sshd.user()))
        .env_remove("SSH_AUTH_SOCK")
        .stderr(fs::File::create(&log_path).expect("log file"));
    let sent = payload(6, 1024 * 1024);
    let (status, out) = run_with_input(cmd, sent.clone());
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "{status}: {log}");
    assert_eq!(out.len(), sent.len(), "{log}");
    assert!(out == sent, "not the same bytes back");
    // With -v, the log went to stderr only: stdout held exactly the data.
    assert!(log.contains("session up"), "{log}");
}

/// An echo server on a Unix socket at `path`, for one connection (ends with it).
fn unix_echo_once(path: &std::path::Path) -> thread::JoinHandle<()> {
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind the socket");
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_read_timeout(Some(WAIT));
            let mut r = s.try_clone().expect("clone");
            let _ = std::io::copy(&mut r, &mut s);
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    })
}

#[test]
fn dash_w_to_a_unix_socket_on_the_server() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let sshd = Sshd::start(&key);
    let dir = temp_dir();
    let socket = dir.path().join("echo.sock");
    let echo = unix_echo_once(&socket);
    let log_path = dir.path().join("forwarder.log");
    let mut cmd = Command::new(forwarder_binary());
    cmd.env("XDG_CACHE_HOME", dir.path())
        .args(["-W", &socket.display().to_string()])
        .args(["-i", &key.private_key_path().display().to_string()])
        .args([
            "-o",
            &format!("UserKnownHostsFile={}", sshd.known_hosts_path().display()),
        ])
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes", "-v", "-p", &sshd.port().to_string()])
        .arg(format!("{}@127.0.0.1", sshd.user()))
        .env_remove("SSH_AUTH_SOCK")
        .stderr(fs::File::create(&log_path).expect("log file"));
    let sent = payload(7, 512 * 1024);
    let (status, out) = run_with_input(cmd, sent.clone());
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "{status}: {log}");
    assert!(
        out == sent,
        "not the same bytes back ({} of {})",
        out.len(),
        sent.len()
    );
    let _ = echo.join();
    assert!(
        sshd.log().contains(&format!(
            "server_request_direct_streamlocal: originator  port 0, target {}",
            socket.display()
        )),
        "{}",
        sshd.log()
    );
}

#[test]
fn dash_w_through_a_jump_host_is_a_proxy_command_for_ssh() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let jump = Sshd::start(&key);
    let target = Sshd::start(&key);
    let dir = temp_dir();
    let kh = known_hosts(dir.path(), &[&jump, &target]);
    let key_path = key.private_key_path().display().to_string();
    let proxy = format!(
        "{} -W %h:%p -i {key_path} -o UserKnownHostsFile={} \
         -o GlobalKnownHostsFile=/dev/null -o BatchMode=yes -p {} {}@127.0.0.1",
        forwarder_binary().display(),
        kh.display(),
        jump.port(),
        jump.user()
    );
    let mut cmd = Command::new(openssh_binary());
    cmd.args([
        "-F",
        "none",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
    ])
    .args([
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
    ])
    .args(["-o", &format!("UserKnownHostsFile={}", kh.display())])
    .args(["-o", "StrictHostKeyChecking=yes"])
    .args(["-o", &format!("ProxyCommand={proxy}")])
    .args(["-i", &key_path, "-p", &target.port().to_string()])
    .arg(format!("{}@127.0.0.1", target.user()))
    .args(["echo", "through-the-jump"])
    .env_remove("SSH_AUTH_SOCK")
    .env("XDG_CACHE_HOME", dir.path())
    .stderr(Stdio::piped());
    let (status, out) = run_with_input(cmd, Vec::new());
    assert!(
        status.success(),
        "ssh through forwarder -W failed ({status}); jump sshd:\n{}\ntarget sshd:\n{}",
        jump.log(),
        target.log()
    );
    assert_eq!(String::from_utf8_lossy(&out).trim(), "through-the-jump");
    assert_eq!((logins(&jump), logins(&target)), (1, 1));
}

#[test]
fn fleet_tunnels_through_the_same_jump_chain_share_one_login_per_hop() {
    let key = UserKey::generate(KeyKind::Ed25519);
    let a = Sshd::start(&key);
    let b = Sshd::start(&key);
    let c = Sshd::start(&key);
    let e1 = EchoServer::start();
    let e2 = EchoServer::start();
    let dir = temp_dir();
    let kh = known_hosts(dir.path(), &[&a, &b, &c]);
    let head = format!(
        "[defaults]\nidentity_file = {:?}\nknown_hosts = {:?}\njump = [{:?}, {:?}]\n",
        key.private_key_path().display().to_string(),
        kh.display().to_string(),
        hop(&a),
        hop(&b),
    );
    let ports = [free_port(), free_port()];
    let tunnels = [
        TunnelSpec::new(
            "one",
            &hop(&c),
            ports[0],
            &format!("127.0.0.1:{}", e1.port()),
        ),
        TunnelSpec::new(
            "two",
            &hop(&c),
            ports[1],
            &format!("127.0.0.1:{}", e2.port()),
        ),
    ];
    let fleet = Fleet::start(&fleet_file(&head, &tunnels), None, &[]);
    let deadline = Instant::now() + WAIT;
    for (i, port) in ports.into_iter().enumerate() {
        loop {
            if echo_round_trip(port, b"ping").is_ok_and(|b| b == b"ping") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tunnel {i} not up:\n{}",
                fleet.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
        assert_echo(port, 7 + i as u64, &|| fleet.log(), "fleet tunnel");
    }
    assert_eq!(
        (logins(&a), logins(&b), logins(&c)),
        (1, 1, 1),
        "one shared session, so one login on each hop:\n{}",
        fleet.log()
    );
}

#[test]
fn each_hop_negotiates_with_its_own_algorithms_from_its_config_block() {
    let key = UserKey::generate(KeyKind::Ed25519);
    // An old jump host: CTR with SHA-1 MACs only, which our defaults never offer.
    let old = Sshd::builder()
        .config("Ciphers aes128-ctr")
        .config("MACs hmac-sha1")
        .authorize(&key)
        .start();
    // A modern destination that would take SHA-1 too, if it were offered.
    let target = Sshd::builder()
        .config("Ciphers aes128-ctr")
        .config("MACs hmac-sha1,hmac-sha2-256")
        .authorize(&key)
        .start();
    let echo = EchoServer::start();
    let dir = temp_dir();
    let kh = known_hosts(dir.path(), &[&old, &target]);
    // SHA-1 asked for on the old jump host's block only.
    let config = dir.path().join("config");
    fs::write(
        &config,
        format!(
            "Host oldjump\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  MACs +hmac-sha1\n",
            old.port(),
            old.user()
        ),
    )
    .expect("write the config");
    let local = free_port();
    let config_arg = config.display().to_string();
    let args = jump_args(
        &["-F", &config_arg],
        "oldjump",
        &key,
        &kh,
        &target,
        local,
        &echo,
    );
    let (mut child, log) = start_forwarder(dir.path(), &args);
    assert_echo(local, 9, &log, "through the old jump host");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        old.log()
            .contains("kex: client->server cipher: aes128-ctr MAC: hmac-sha1 "),
        "the jump host:\n{}",
        old.log()
    );
    assert!(
        target
            .log()
            .contains("kex: client->server cipher: aes128-ctr MAC: hmac-sha2-256 "),
        "the destination got what only the jump host asked for:\n{}",
        target.log()
    );
}
