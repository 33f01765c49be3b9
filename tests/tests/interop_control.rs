//! The control socket (`-M`, `-S`, `ControlMaster`, `-O`) against the real sshd, with
//! OpenSSH's `ssh` on both sides of it: `ssh -O` checks and stops a forwarder master, and
//! `forwarder -O` checks and stops an ssh master, so the two speak one protocol. A script's
//! `-M -S path -f -N -L ...` then `-O exit` works with either client.
//!
//! What must hold: the socket is there, a socket of mode 0600, when `-f` returns; `-O check`
//! names the background process's pid; `-O exit` ends it and its socket goes; `-O stop`
//! removes the socket and the tunnel goes on (an `ssh -N` master ends too once no
//! connection is open: forwarder keeps the tunnel, which `-O exit` ends); with nothing listening `-O check` exits 255; a
//! file already at the path is left alone and the tunnel runs without a socket (as ssh
//! does); `ControlMaster auto` leaves a live master's socket alone and replaces a stale one;
//! another user is refused even when the socket's mode would let them in; `-O forward` adds
//! `-L`, `-D` and `-R` forwards to a forwarder master or an ssh master, and `-O cancel`
//! closes them while their connections carry on.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ssh_interop_tests::net::free_port;
use ssh_interop_tests::process::{processes_with, run_bounded, stop_background};
use ssh_interop_tests::servers::{echo_round_trip_stream, echo_round_trip_unix};
use ssh_interop_tests::socks::{SocksForm, socks_connect};
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyKind, Sshd, TunnelBuilder, UserKey, echo_round_trip,
};

const WAIT: Duration = Duration::from_secs(30);

/// `kind -F none -S path -O command host`: its exit status and stderr.
fn control(kind: ClientKind, path: &Path, command: &str) -> (Option<i32>, String) {
    let (code, _, err) = control_with(kind, path, command, &[]);
    (code, err)
}

/// `kind -F none -S path -O command ARGS 127.0.0.1`: its exit status, stdout and stderr.
fn control_with(
    kind: ClientKind,
    path: &Path,
    command: &str,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(kind.program());
    cmd.args(["-F", "none", "-S"])
        .arg(path)
        .args(["-O", command])
        .args(args)
        .arg("127.0.0.1");
    let what = format!("{} -O {command} {}", kind.name(), args.join(" "));
    let out = run_bounded(&mut cmd, WAIT, &what);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether something accepts connections on loopback `port`.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Waits (bounded) until `done`.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "not {what} within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_echo(port: u16, what: &str) {
    let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let back = echo_round_trip(port, &sent).unwrap_or_else(|e| panic!("{what}: echo: {e}"));
    assert!(back == sent, "{what}: the echo came back different");
}

/// An sshd, an echo server behind it, and a directory for the control socket (`cm`).
struct Lab {
    key: UserKey,
    sshd: Sshd,
    echo: EchoServer,
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let key = UserKey::generate(KeyKind::Ed25519);
        let sshd = Sshd::start(&key);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cm");
        Lab {
            key,
            sshd,
            echo: EchoServer::start(),
            dir,
            path,
        }
    }

    /// A tunnel through the lab's sshd to its echo server.
    fn tunnel(&self, kind: ClientKind) -> TunnelBuilder {
        TunnelBuilder::new(kind, &self.sshd, &self.key).forward_to(self.echo.port())
    }

    /// `kind -M -S cm -f -N -L ...` started, returned 0: its background pid, the needle that
    /// finds it, and its local port.
    fn master(&self, kind: ClientKind) -> (u32, String, u16) {
        let client = self
            .tunnel(kind)
            .arg("-M")
            .arg("-S")
            .arg(self.path.to_str().expect("a UTF-8 path"));
        let port = client.forwards()[0].local_port;
        let needle = format!("127.0.0.1:{port}:");
        let (status, log) = client.run_with_f(self.dir.path());
        assert_eq!(status, Some(0), "{}: {log}", kind.name());
        let pids = processes_with(&needle);
        assert_eq!(pids.len(), 1, "{}: {pids:?}", kind.name());
        (pids[0], needle, port)
    }

    /// `kind -O command ARGS` succeeds: what it printed on standard output.
    fn ok(&self, kind: ClientKind, command: &str, args: &[&str]) -> String {
        let (code, out, err) = control_with(kind, &self.path, command, args);
        assert_eq!(
            code,
            Some(0),
            "{} -O {command} {args:?}: {err}",
            kind.name()
        );
        out
    }

    /// `ssh` logging in to the lab's sshd with its key and running `command`, with `extra`
    /// options before the destination.
    fn ssh_login(&self, extra: &[&str], command: &str) -> Command {
        let mut ssh = Command::new(ClientKind::OpenSsh.program());
        ssh.args([
            "-F",
            "none",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args(extra)
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            self.sshd.known_hosts_path().display()
        ))
        .arg("-i")
        .arg(self.key.private_key_path())
        .args(["-p", &self.sshd.port().to_string()])
        .arg(format!("{}@127.0.0.1", self.sshd.user()))
        .arg(command);
        ssh
    }

    /// The master `pid` (found by `needle`) still answers `-O check`; then it is stopped.
    fn still_answers_then_stop(&self, pid: u32, needle: &str) {
        self.expect(
            ClientKind::OpenSsh,
            "check",
            &format!("Master running (pid={pid})"),
        );
        stop_background(needle, WAIT);
    }

    /// `kind -O command` succeeds, saying `said`.
    fn expect(&self, kind: ClientKind, command: &str, said: &str) {
        let (code, got) = control(kind, &self.path, command);
        assert_eq!(code, Some(0), "{} -O {command}: {got}", kind.name());
        assert!(got.contains(said), "{} -O {command}: {got}", kind.name());
    }
}

#[test]
fn ssh_and_forwarder_check_a_forwarder_master_and_ssh_stops_it() {
    let lab = Lab::new();
    let (pid, needle, port) = lab.master(ClientKind::Forwarder);
    // There when -f returns: a socket only its user may use.
    let meta = std::fs::symlink_metadata(&lab.path).expect("the control socket");
    assert!(meta.file_type().is_socket(), "{meta:?}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        lab.expect(kind, "check", &format!("Master running (pid={pid})"));
    }
    assert_echo(port, "through the master");
    lab.expect(ClientKind::OpenSsh, "exit", "Exit request sent.");
    wait_until("the master gone", || processes_with(&needle).is_empty());
    assert!(!lab.path.exists(), "the socket outlived its master");
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        let (code, said) = control(kind, &lab.path, "check");
        assert_eq!(code, Some(255), "{}: {said}", kind.name());
    }
    let (_, said) = control(ClientKind::Forwarder, &lab.path, "check");
    assert!(said.contains("Control socket connect("), "{said}");
}

#[test]
fn forwarder_checks_stops_and_ends_an_ssh_master() {
    let lab = Lab::new();
    let (pid, needle, port) = lab.master(ClientKind::OpenSsh);
    lab.expect(
        ClientKind::Forwarder,
        "check",
        &format!("Master running (pid={pid})"),
    );
    assert_echo(port, "through ssh's master");
    // -O stop: the socket goes. An `ssh -N` master then also ends once no connection is
    // open (its session counts as closed); forwarder's goes on (the next test).
    lab.expect(
        ClientKind::Forwarder,
        "stop",
        "Stop listening request sent.",
    );
    wait_until("ssh's socket removed", || !lab.path.exists());
    wait_until("the stopped ssh -N master gone", || {
        processes_with(&needle).is_empty()
    });
    // And -O exit, on a second ssh master.
    let (_, needle, _) = lab.master(ClientKind::OpenSsh);
    lab.expect(ClientKind::Forwarder, "exit", "Exit request sent.");
    wait_until("the ssh master gone", || processes_with(&needle).is_empty());
}

#[test]
fn stop_keeps_the_tunnel_and_a_path_in_use_is_left_alone() {
    let lab = Lab::new();
    let (_, needle, port) = lab.master(ClientKind::Forwarder);
    lab.expect(ClientKind::OpenSsh, "stop", "Stop listening request sent.");
    wait_until("the socket removed", || !lab.path.exists());
    assert_echo(port, "after -O stop");
    assert_eq!(processes_with(&needle).len(), 1, "-O stop ended the tunnel");
    stop_background(&needle, WAIT);

    // A file already at the path: a warning, the tunnel runs, the file stays as it was;
    // with `auto` too (ssh would remove it, since it refuses connections).
    std::fs::write(&lab.path, "not a socket").expect("write a file at the path");
    for master in ["-oControlMaster=yes", "-oControlMaster=auto"] {
        let client = lab
            .tunnel(ClientKind::Forwarder)
            .arg(master)
            .arg("-S")
            .arg(lab.path.to_str().expect("a UTF-8 path"));
        let (status, log) = client.run_with_f(lab.dir.path());
        assert_eq!(status, Some(0), "{master}: {log}");
        assert!(
            log.contains(&format!(
                "ControlSocket {} already exists, disabling multiplexing",
                lab.path.display()
            )),
            "{master}: {log}"
        );
        let port = client.forwards()[0].local_port;
        assert_echo(port, "without a control socket");
        assert_eq!(
            std::fs::read_to_string(&lab.path).ok().as_deref(),
            Some("not a socket"),
            "{master}"
        );
        stop_background(&format!("127.0.0.1:{port}:"), WAIT);
    }
}

#[test]
fn control_master_auto_leaves_a_live_master_alone_and_replaces_a_stale_socket() {
    let lab = Lab::new();
    // Started with auto: its background pid and needle.
    let auto = || {
        let client = lab
            .tunnel(ClientKind::Forwarder)
            .option("ControlMaster=auto")
            .option(&format!("ControlPath={}", lab.path.display()));
        let (status, log) = client.run_with_f(lab.dir.path());
        assert_eq!(status, Some(0), "{log}");
        let port = client.forwards()[0].local_port;
        let needle = format!("127.0.0.1:{port}:");
        (processes_with(&needle)[0], needle, port)
    };
    let (first_pid, first_needle, _) = auto();
    // A second with auto: the first keeps the socket; the second's tunnel works all the same.
    let (_, second_needle, second_port) = auto();
    assert_echo(second_port, "beside a live master");
    lab.expect(
        ClientKind::Forwarder,
        "check",
        &format!("Master running (pid={first_pid})"),
    );
    stop_background(&second_needle, WAIT);
    // The first killed outright: its socket stays behind, and the next auto replaces it.
    ssh_interop_tests::process::signal(first_pid, rustix::process::Signal::KILL);
    wait_until("the first master gone", || {
        processes_with(&first_needle).is_empty()
    });
    assert!(lab.path.exists(), "a killed master's socket stays behind");
    let (third_pid, third_needle, _) = auto();
    lab.expect(
        ClientKind::OpenSsh,
        "check",
        &format!("Master running (pid={third_pid})"),
    );
    stop_background(&third_needle, WAIT);
    assert!(!lab.path.exists(), "the socket outlived its master");
}

// Only the master's user, or root, may use its socket: with the socket opened to everyone
// (a careless chmod), `ssh -O check` run as another user (nobody) is still refused and the
// master says why, while this user's check still works. Needs root, to run as nobody.
#[test]
fn another_user_is_refused_even_when_the_socket_is_open_to_all() {
    assert!(
        ssh_interop_tests::process::is_root(),
        "this test runs a control client as another user, which needs root; run it as root \
         (the CI lab does) or through scripts/test"
    );
    let lab = Lab::new();
    let (pid, needle, _) = lab.master(ClientKind::Forwarder);
    for (path, mode) in [(lab.dir.path(), 0o711), (lab.path.as_path(), 0o666)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .expect("open the socket to everyone");
    }
    let setpriv = ssh_interop_tests::process::require_program(
        "setpriv",
        &["/usr/bin", "/bin"],
        "install util-linux (apt-get install util-linux)",
    );
    let mut as_nobody = Command::new(setpriv);
    as_nobody
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(ClientKind::OpenSsh.program())
        .args(["-F", "none", "-S"])
        .arg(&lab.path)
        .args(["-O", "check", "127.0.0.1"]);
    let out = run_bounded(&mut as_nobody, WAIT, "ssh -O check as nobody");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{said}");
    assert!(!said.contains("Master running"), "{said}");
    let log_path = lab.dir.path().join("forwarder.stderr");
    wait_until("the master's word on the refusal", || {
        std::fs::read_to_string(&log_path)
            .is_ok_and(|log| log.contains("control connection from another user refused"))
    });
    lab.still_answers_then_stop(pid, &needle);
}

// `ssh -S path host command` asks the master for a session, which forwarder's does not open:
// ssh prints the reason, then connects on its own and runs the command, as it does whenever
// a master refuses. The master goes on.
#[test]
fn ssh_asking_a_forwarder_master_for_a_session_is_told_why_and_connects_on_its_own() {
    let lab = Lab::new();
    let (pid, needle, port) = lab.master(ClientKind::Forwarder);
    let path = lab.path.display().to_string();
    let mut ssh = lab.ssh_login(&["-S", &path], "echo ran-on-its-own");
    let out = run_bounded(&mut ssh, WAIT, "ssh -S path host command");
    let (said, printed) = (
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
    );
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("forwarder's control socket opens no sessions"),
        "{said}"
    );
    assert_eq!(printed.trim(), "ran-on-its-own", "{said}");
    assert_echo(port, "the master after refusing a session");
    lab.expect(
        ClientKind::Forwarder,
        "check",
        &format!("Master running (pid={pid})"),
    );
    stop_background(&needle, WAIT);
}

// `-O forward` and `-O cancel` on a forwarder master, from ssh and from forwarder: a `-L` to
// a port and one to a Unix socket, and a `-D`, added and then cancelled; asking for one that
// is there already is done; a connection accepted before a cancel carries on while new ones
// are refused; the forward the master started with can be cancelled too; a port in use and
// a forward that is not there are refused with the reason. And `-R`, on a port the server
// picks (printed, as ssh prints it) and on a fixed one, added and cancelled; one the server
// refuses is refused to the client with the server's reason.
#[test]
fn ssh_and_forwarder_add_and_cancel_forwards_on_a_forwarder_master() {
    let lab = Lab::new();
    let (pid, needle, first_port) = lab.master(ClientKind::Forwarder);
    let echo = lab.echo.port();

    // -L to a port, from ssh; the same again, from forwarder, is done already.
    let port = free_port();
    let spec = format!("{port}:127.0.0.1:{echo}");
    lab.ok(ClientKind::OpenSsh, "forward", &["-L", &spec]);
    assert_echo(port, "a -L added by ssh -O forward");
    lab.ok(ClientKind::Forwarder, "forward", &["-L", &spec]);
    assert_echo(port, "after asking for it twice");

    // A connection open across the cancel carries on; new ones are refused.
    let open = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect before cancel");
    open.set_read_timeout(Some(WAIT)).expect("timeout");
    lab.ok(ClientKind::Forwarder, "cancel", &["-L", &spec]);
    assert!(!listening(port), "a cancelled -L still listens");
    let back = echo_round_trip_stream(open, b"still here").expect("the open connection");
    assert_eq!(back, b"still here");
    // Not there any more: forwarder says so and exits 255; ssh says so too (and exits 0).
    let (code, _, err) = control_with(ClientKind::Forwarder, &lab.path, "cancel", &["-L", &spec]);
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("port not forwarded"), "{err}");
    let (_, _, err) = control_with(ClientKind::OpenSsh, &lab.path, "cancel", &["-L", &spec]);
    assert!(err.contains("port not forwarded"), "{err}");

    // -D, from forwarder, then cancelled from ssh.
    let socks = free_port();
    lab.ok(
        ClientKind::Forwarder,
        "forward",
        &["-D", &socks.to_string()],
    );
    let stream = socks_connect(socks, SocksForm::V5Address, "127.0.0.1", echo)
        .unwrap_or_else(|e| panic!("through the added -D: {e:?}"));
    let sent: Vec<u8> = (0..50_000u32).map(|i| (i % 241) as u8).collect();
    let back = echo_round_trip_stream(stream, &sent).expect("echo through the added -D");
    assert!(
        back == sent,
        "the echo through the added -D came back different"
    );
    lab.ok(ClientKind::OpenSsh, "cancel", &["-D", &socks.to_string()]);
    assert!(!listening(socks), "a cancelled -D still listens");

    // -L from a Unix socket here: served, then its file goes with the cancel.
    let sock = lab.dir.path().join("pg.sock");
    let spec_unix = format!("{}:127.0.0.1:{echo}", sock.display());
    lab.ok(ClientKind::OpenSsh, "forward", &["-L", &spec_unix]);
    let back = echo_round_trip_unix(&sock, b"over a socket").expect("echo through the socket");
    assert_eq!(back, b"over a socket");
    lab.ok(ClientKind::Forwarder, "cancel", &["-L", &spec_unix]);
    assert!(!sock.exists(), "a cancelled socket forward left its file");

    // A port in use: refused with the reason, and nothing else changes.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("addr").port();
    let (code, _, err) = control_with(
        ClientKind::Forwarder,
        &lab.path,
        "forward",
        &["-L", &format!("127.0.0.1:{busy}:127.0.0.1:{echo}")],
    );
    assert_eq!(code, Some(255), "{err}");
    assert!(
        err.contains("cannot listen") && err.contains("in use"),
        "{err}"
    );
    lab.ok(ClientKind::OpenSsh, "forward", &["-L", &spec]);
    assert_echo(port, "added again after its cancel");

    // -R on a port the server picks, from ssh: it prints the port, which the bastion (this
    // machine) listens on, and connections there come back to the echo server. Asked again
    // from forwarder: the same port. Cancelled: the bastion stops listening.
    let remote = format!("0:127.0.0.1:{echo}");
    let printed = lab.ok(ClientKind::OpenSsh, "forward", &["-R", &remote]);
    let picked: u16 = printed
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("ssh's picked port: {printed:?}: {e}"));
    assert_echo(picked, "an -R added by ssh -O forward");
    let again = lab.ok(ClientKind::Forwarder, "forward", &["-R", &remote]);
    assert_eq!(again.trim(), picked.to_string(), "asked again");
    lab.ok(ClientKind::Forwarder, "cancel", &["-R", &remote]);
    assert!(
        !listening(picked),
        "a cancelled -R still listens on the bastion"
    );
    // A fixed port, from forwarder, cancelled from ssh.
    let fixed = free_port();
    let fixed_spec = format!("127.0.0.1:{fixed}:127.0.0.1:{echo}");
    let printed = lab.ok(ClientKind::Forwarder, "forward", &["-R", &fixed_spec]);
    assert_eq!(printed, "", "a fixed port is not printed");
    assert_echo(fixed, "a fixed -R added by forwarder -O forward");
    lab.ok(ClientKind::OpenSsh, "cancel", &["-R", &fixed_spec]);
    assert!(!listening(fixed), "a cancelled fixed -R still listens");
    // A port taken on the bastion: the server's refusal, to both clients; the master goes on
    // and forgets it (a cancel finds nothing).
    let taken_there = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let there = taken_there.local_addr().expect("addr").port();
    let refused = format!("127.0.0.1:{there}:127.0.0.1:{echo}");
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        let (code, _, err) = control_with(kind, &lab.path, "forward", &["-R", &refused]);
        assert_eq!(code, Some(255), "{}: {err}", kind.name());
        assert!(
            err.contains(&format!(
                "remote port forwarding failed for listen port {there}"
            )),
            "{}: {err}",
            kind.name()
        );
    }
    let (code, _, err) = control_with(
        ClientKind::Forwarder,
        &lab.path,
        "cancel",
        &["-R", &refused],
    );
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("port not forwarded"), "{err}");

    // The forward the master started with, cancelled like any other.
    assert_echo(first_port, "the first forward");
    lab.ok(
        ClientKind::OpenSsh,
        "cancel",
        &["-L", &format!("127.0.0.1:{first_port}:127.0.0.1:{echo}")],
    );
    assert!(!listening(first_port), "the first forward still listens");
    assert_echo(port, "the added forward after the first went");
    lab.expect(
        ClientKind::OpenSsh,
        "check",
        &format!("Master running (pid={pid})"),
    );
    stop_background(&needle, WAIT);
}

// forwarder's `-O forward` and `-O cancel` against an ssh master: a `-L`, and an `-R` on a
// port the server picks, which forwarder prints on standard output as ssh does.
#[test]
fn forwarder_adds_and_cancels_forwards_on_an_ssh_master() {
    let lab = Lab::new();
    let (_, needle, _) = lab.master(ClientKind::OpenSsh);
    let echo = lab.echo.port();
    let port = free_port();
    let spec = format!("{port}:127.0.0.1:{echo}");
    assert_eq!(lab.ok(ClientKind::Forwarder, "forward", &["-L", &spec]), "");
    assert_echo(port, "a -L added to ssh's master");

    let remote = format!("0:127.0.0.1:{echo}");
    let printed = lab.ok(ClientKind::Forwarder, "forward", &["-R", &remote]);
    let picked: u16 = printed
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("the picked port, on stdout: {printed:?}: {e}"));
    assert_ne!(picked, 0);
    // The bastion is this machine: sshd listens on the picked port, and connections there
    // come back through ssh's master to the echo server.
    assert_echo(picked, "an -R added to ssh's master");

    lab.ok(ClientKind::Forwarder, "cancel", &["-L", &spec]);
    wait_until("the cancelled -L closed", || !listening(port));
    lab.ok(ClientKind::Forwarder, "cancel", &["-R", &remote]);
    wait_until("the cancelled -R closed on the bastion", || {
        !listening(picked)
    });
    lab.expect(ClientKind::Forwarder, "exit", "Exit request sent.");
    wait_until("the ssh master gone", || processes_with(&needle).is_empty());
}

// An `-R` added on the control socket outlives the session it was granted on: when the
// bastion drops the session, the master asks for it again on the next one, as for a `-R`
// given at the start; a cancel after that stops it there.
#[test]
fn an_added_remote_forward_is_asked_again_after_the_session_drops() {
    let lab = Lab::new();
    let client = lab
        .tunnel(ClientKind::Forwarder)
        .arg("-M")
        .arg("-S")
        .arg(lab.path.to_str().expect("a UTF-8 path"))
        .option("ServerAliveInterval=1")
        .option("ServerAliveCountMax=2")
        .option("ReconnectBackoffMax=2s");
    let (status, log) = client.run_with_f(lab.dir.path());
    assert_eq!(status, Some(0), "{log}");
    let needle = format!("127.0.0.1:{}:", client.forwards()[0].local_port);
    let echo = lab.echo.port();
    let fixed = free_port();
    let spec = format!("127.0.0.1:{fixed}:127.0.0.1:{echo}");
    lab.ok(ClientKind::OpenSsh, "forward", &["-R", &spec]);
    assert_echo(fixed, "the added -R");

    let dropped = lab.sshd.session_pids();
    assert!(lab.sshd.kill_sessions() >= 1, "no session to drop");
    // Once the dropped session's processes are gone, whatever listens on the port is the
    // next session's.
    wait_until("the dropped session gone", || {
        let now = lab.sshd.session_pids();
        dropped.iter().all(|p| !now.contains(p))
    });
    wait_until("the added -R back on the next session", || listening(fixed));
    assert_echo(fixed, "the added -R after the reconnect");

    lab.ok(ClientKind::Forwarder, "cancel", &["-R", &spec]);
    assert!(!listening(fixed), "the cancelled -R still listens");
    stop_background(&needle, WAIT);
}

/// `kind -F none -o BatchMode=yes -S path -W target 127.0.0.1`: nothing to log in with, so
/// only a master can carry it.
fn stdio_command(kind: ClientKind, path: &Path, target: &str) -> Command {
    let mut cmd = Command::new(kind.program());
    cmd.args(["-F", "none", "-o", "BatchMode=yes", "-S"])
        .arg(path)
        .args(["-W", target, "127.0.0.1"]);
    cmd
}

/// `kind -F none -S path -W target 127.0.0.1` with `input` on its standard input (then its
/// end): the exit status, standard output and standard error. Nothing to log in with: only
/// a master can carry it.
fn stdio_through(
    kind: ClientKind,
    path: &Path,
    target: &str,
    input: Vec<u8>,
) -> (Option<i32>, Vec<u8>, String) {
    use std::io::{Read as _, Write as _};
    use std::process::Stdio;
    let mut child = stdio_command(kind, path, target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let reader = |mut from: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let _ = from.read_to_end(&mut got);
            let _ = tx.send(got);
        });
        rx
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout")));
    let err = reader(Box::new(child.stderr.take().expect("stderr")));
    let (out, err) = match (out.recv_timeout(WAIT), err.recv_timeout(WAIT)) {
        (Ok(out), Ok(err)) => (out, String::from_utf8_lossy(&err).into_owned()),
        _ => {
            let _ = child.kill();
            panic!(
                "{} -W {target}: no end of output within {WAIT:?}",
                kind.name()
            );
        }
    };
    let _ = writer.join();
    let status = ssh_interop_tests::process::wait_bounded(&mut child, WAIT);
    if status.is_none() {
        let _ = child.kill();
        panic!(
            "{} -W {target}: did not exit within {WAIT:?}: {err}",
            kind.name()
        );
    }
    (status.and_then(|s| s.code()), out, err)
}

/// How many logins sshd has accepted.
fn logins(sshd: &Sshd) -> usize {
    sshd.log().matches("Accepted publickey").count()
}

// `-W` through a forwarder master, from ssh and from forwarder: the client passes its
// standard input and output to the master, which forwards them over its own session, so
// nothing logs in again (the clients here have no key); both directions arrive whole. A
// target the bastion cannot reach is refused with the reason, and the master goes on. And
// the use it is for: a `ProxyCommand` that reaches the next host through the master's
// session (here the same sshd, reached again through itself).
#[test]
fn ssh_and_forwarder_forward_stdio_through_a_forwarder_master() {
    let lab = Lab::new();
    let (pid, needle, port) = lab.master(ClientKind::Forwarder);
    let before = logins(&lab.sshd);
    let target = format!("127.0.0.1:{}", lab.echo.port());
    for (n, kind) in [ClientKind::OpenSsh, ClientKind::Forwarder]
        .into_iter()
        .enumerate()
    {
        let sent: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(7).wrapping_add(n as u32) % 253) as u8)
            .collect();
        let (code, out, err) = stdio_through(kind, &lab.path, &target, sent.clone());
        assert_eq!(code, Some(0), "{}: {err}", kind.name());
        assert_eq!(out.len(), sent.len(), "{}: {err}", kind.name());
        assert!(out == sent, "{}: the echo came back different", kind.name());
    }
    // To a Unix socket on the bastion (the message carries its path with port -2).
    let sock = lab.dir.path().join("echo.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind the socket");
    let serving = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_read_timeout(Some(WAIT));
            let mut r = s.try_clone().expect("clone");
            let _ = std::io::copy(&mut r, &mut s);
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    });
    let sent = b"to a socket on the bastion".repeat(1000);
    let (code, out, err) = stdio_through(
        ClientKind::Forwarder,
        &lab.path,
        sock.to_str().expect("a UTF-8 path"),
        sent.clone(),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out == sent, "the socket's echo came back different");
    serving.join().expect("the socket's echo server");
    assert_eq!(logins(&lab.sshd), before, "-W went through the master");

    let dead = free_port();
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        let (code, out, err) =
            stdio_through(kind, &lab.path, &format!("127.0.0.1:{dead}"), b"x".to_vec());
        assert_eq!(code, Some(255), "{}: {err}", kind.name());
        assert!(out.is_empty(), "{}", kind.name());
        assert!(
            err.contains("Stdio forwarding request failed: Session open refused by peer")
                && err.contains("Connection refused"),
            "{}: {err}",
            kind.name()
        );
    }

    // ssh logs in to the bastion's sshd through the master's session.
    let proxy = format!(
        "ProxyCommand={} -F none -S {} -W %h:%p %h",
        ClientKind::Forwarder.program().display(),
        lab.path.display()
    );
    let mut ssh = lab.ssh_login(&["-o", &proxy], "echo through-the-master");
    let out = run_bounded(&mut ssh, WAIT, "ssh with forwarder -S -W as ProxyCommand");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "through-the-master",
        "{said}"
    );
    assert_eq!(logins(&lab.sshd), before + 1, "one login: ssh's own");

    assert_echo(port, "the master after the -W forwards");
    lab.still_answers_then_stop(pid, &needle);
}

// forwarder's `-W` through an ssh master, and without a master at the path: then it
// connects on its own (here it has no key, so it fails to log in, as ssh would).
#[test]
fn forwarder_forwards_stdio_through_an_ssh_master() {
    let lab = Lab::new();
    let (_, needle, _) = lab.master(ClientKind::OpenSsh);
    let before = logins(&lab.sshd);
    let target = format!("127.0.0.1:{}", lab.echo.port());
    let sent: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
    let (code, out, err) = stdio_through(ClientKind::Forwarder, &lab.path, &target, sent.clone());
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out == sent,
        "the echo came back different ({} bytes)",
        out.len()
    );
    assert_eq!(logins(&lab.sshd), before, "-W went through ssh's master");
    lab.expect(ClientKind::Forwarder, "exit", "Exit request sent.");
    wait_until("the ssh master gone", || processes_with(&needle).is_empty());

    let (code, out, err) = stdio_through(ClientKind::Forwarder, &lab.path, &target, b"x".to_vec());
    assert_eq!(code, Some(255), "{err}");
    assert!(out.is_empty());
    assert!(!err.contains("Stdio forwarding"), "{err}");
}

// Each `-W` holds its control connection open for as long as it lasts; more of them at once
// than the master serves control connections (16) all run, and `-O check` is still answered
// while they do.
#[test]
fn many_stdio_forwards_at_once_leave_the_control_socket_answering() {
    use std::io::{Read as _, Write as _};
    use std::process::Stdio;
    use std::sync::mpsc;
    const CLIENTS: usize = 24;
    let lab = Lab::new();
    let (pid, needle, _) = lab.master(ClientKind::Forwarder);
    let target = format!("127.0.0.1:{}", lab.echo.port());
    let (echoed_tx, echoed) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let mut finish = Vec::new();
    let mut children = Vec::new();
    for n in 0..CLIENTS {
        let mut child = stdio_command(ClientKind::Forwarder, &lab.path, &target)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start forwarder -W");
        let (mut stdin, mut stdout) = (
            child.stdin.take().expect("stdin"),
            child.stdout.take().expect("stdout"),
        );
        children.push(child);
        let (finish_tx, finish_rx) = mpsc::channel::<()>();
        finish.push(finish_tx);
        let (echoed_tx, done_tx) = (echoed_tx.clone(), done_tx.clone());
        std::thread::spawn(move || {
            let first = format!("first line of client {n}\n");
            let mut back = vec![0u8; first.len()];
            let ok = stdin.write_all(first.as_bytes()).is_ok()
                && stdout.read_exact(&mut back).is_ok()
                && back == first.as_bytes();
            let _ = echoed_tx.send((n, ok));
            let _ = finish_rx.recv();
            let last = format!("last line of client {n}\n");
            let _ = stdin.write_all(last.as_bytes());
            drop(stdin);
            let mut rest = Vec::new();
            let _ = stdout.read_to_end(&mut rest);
            let _ = done_tx.send((n, rest == last.as_bytes()));
        });
    }
    let deadline = Instant::now() + WAIT;
    for _ in 0..CLIENTS {
        let left = deadline.saturating_duration_since(Instant::now());
        let (n, ok) = echoed
            .recv_timeout(left)
            .expect("every -W echoes its first line in time");
        assert!(ok, "client {n}: its first line did not come back");
    }
    // All of them open at once, and the socket still answers.
    lab.expect(
        ClientKind::OpenSsh,
        "check",
        &format!("Master running (pid={pid})"),
    );
    for f in &finish {
        let _ = f.send(());
    }
    for _ in 0..CLIENTS {
        let left = deadline.saturating_duration_since(Instant::now());
        let (n, ok) = done.recv_timeout(left).expect("every -W ends in time");
        assert!(ok, "client {n}: its last line did not come back");
    }
    for (n, child) in children.iter_mut().enumerate() {
        let status = ssh_interop_tests::process::wait_bounded(child, WAIT);
        assert_eq!(status.and_then(|s| s.code()), Some(0), "client {n}");
    }
    stop_background(&needle, WAIT);
}

/// How many descriptors process `pid` holds.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

// A `-W` client that is killed while forwarding: the master ends that forwarding (the
// channel, the client's standard input and output, the control connection), holding no
// more descriptors than before it, and goes on.
#[test]
fn a_killed_stdio_client_leaves_nothing_behind_in_the_master() {
    use std::io::{Read as _, Write as _};
    use std::process::Stdio;
    let lab = Lab::new();
    let (pid, needle, port) = lab.master(ClientKind::Forwarder);
    // Counted after one -W has come and gone, so that whatever the first one opens for good
    // is in the count.
    let target = format!("127.0.0.1:{}", lab.echo.port());
    let (code, _, err) = stdio_through(ClientKind::Forwarder, &lab.path, &target, b"x".to_vec());
    assert_eq!(code, Some(0), "{err}");
    let before = descriptors(pid);
    assert!(before > 0, "the master's descriptors");
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        let mut child = stdio_command(kind, &lab.path, &target)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the -W client");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut back = [0u8; 6];
            let ok = stdin.write_all(b"hello\n").is_ok()
                && stdout.read_exact(&mut back).is_ok()
                && &back == b"hello\n";
            let _ = tx.send(ok);
            // Holds its end of both pipes until the client is gone.
            let _ = stdout.read_to_end(&mut Vec::new());
            drop(stdin);
        });
        assert_eq!(
            rx.recv_timeout(WAIT),
            Ok(true),
            "{}: the echo through the master",
            kind.name()
        );
        assert!(
            descriptors(pid) >= before + 3,
            "{}: the forwarding holds the client's ends and the connection",
            kind.name()
        );
        let _ = child.kill();
        let _ = ssh_interop_tests::process::wait_bounded(&mut child, WAIT);
        wait_until("the master back to its descriptors", || {
            descriptors(pid) <= before
        });
    }
    assert_echo(port, "the master after the killed clients");
    lab.still_answers_then_stop(pid, &needle);
}

// `ControlMaster auto` with `ControlPersist`, the ssh_config a user keeps for a bastion: the
// first `forwarder -W` (here ssh's ProxyCommand) finds no master, starts one in the
// background (one login) and goes through it; the next goes through the same master (no
// login of its own). With a time, the master stops once no client has come for that long,
// and its socket goes.
#[test]
fn control_persist_starts_a_master_for_stdio_that_later_ones_share() {
    let lab = Lab::new();
    let path = lab.path.display().to_string();
    let proxy = format!(
        "ProxyCommand={} -F none -o ControlMaster=auto -o ControlPath={path} \
         -o ControlPersist=2 -o BatchMode=yes -o IdentitiesOnly=yes -i {} \
         -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null -p %p -W %h:%p {}@%h",
        ClientKind::Forwarder.program().display(),
        lab.key.private_key_path().display(),
        lab.sshd.known_hosts_path().display(),
        lab.sshd.user(),
    );
    // ssh with `proxy` as its ProxyCommand, running `command`.
    let through = |proxy: &str, command: &str| {
        let mut ssh = lab.ssh_login(&["-o", proxy], command);
        ssh.env("XDG_CACHE_HOME", lab.dir.path())
            .env_remove("SSH_AUTH_SOCK");
        run_bounded(&mut ssh, WAIT, &format!("ssh -o {proxy} {command}"))
    };
    let before = logins(&lab.sshd);
    for (n, word) in ["first", "second"].into_iter().enumerate() {
        let out = through(&proxy, &format!("echo {word}"));
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{word}: {said}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), word, "{said}");
        // A ProxyCommand's stderr is the user's: nothing but warnings and errors there, from
        // the -W or from the master it started, as from ssh -W.
        assert!(!said.contains("session up"), "{word}: {said}");
        // The master's login once, then ssh's own each time.
        assert_eq!(logins(&lab.sshd), before + n + 2, "{word}: {said}");
    }
    let masters = processes_with(&path);
    assert_eq!(
        masters.len(),
        1,
        "one master in the background: {masters:?}"
    );
    lab.expect(
        ClientKind::Forwarder,
        "check",
        &format!("Master running (pid={})", masters[0]),
    );
    wait_until("the idle master gone", || processes_with(&path).is_empty());
    assert!(!lab.path.exists(), "the socket outlived its master");

    // With `ControlMaster yes` and a file already at the path, as ssh: left alone, with
    // ssh's warning, and this -W connects on its own; no master is started.
    std::fs::write(&lab.path, b"not a socket").expect("a file at the path");
    let proxy = proxy.replace("ControlMaster=auto", "ControlMaster=yes");
    let before = logins(&lab.sshd);
    let out = through(&proxy, "echo on-its-own");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "on-its-own");
    assert!(
        said.contains("already exists, disabling multiplexing"),
        "{said}"
    );
    assert!(!said.contains("session up"), "{said}");
    assert_eq!(
        logins(&lab.sshd),
        before + 2,
        "forwarder's own login and ssh's"
    );
    assert!(processes_with(&path).is_empty(), "no master started");
    assert_eq!(
        std::fs::read(&lab.path).ok(),
        Some(b"not a socket".to_vec())
    );
}

/// Whether the open file behind `fd` (of this process) is in non-blocking mode.
fn non_blocking(fd: &impl std::os::fd::AsRawFd) -> bool {
    let info =
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).expect("fdinfo");
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .expect("the flags in fdinfo");
    flags & 0o4000 != 0
}

// The master makes a -W client's standard input non-blocking while it forwards; the pipe is
// the client's and its caller's, so its mode is put back whether the forwarding was done or
// refused.
#[test]
fn a_stdio_clients_pipe_is_left_blocking_done_or_refused() {
    use std::io::Write as _;
    use std::process::Stdio;
    let lab = Lab::new();
    let (_, needle, _) = lab.master(ClientKind::Forwarder);
    let dead = free_port();
    for (target, code) in [
        (format!("127.0.0.1:{}", lab.echo.port()), 0),
        (format!("127.0.0.1:{dead}"), 255),
    ] {
        let (reader, mut writer) = std::io::pipe().expect("a pipe");
        let mut child = stdio_command(ClientKind::Forwarder, &lab.path, &target)
            .stdin(Stdio::from(reader.try_clone().expect("clone the reader")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start forwarder -W");
        assert!(!non_blocking(&reader), "the pipe starts blocking");
        let _ = writer.write_all(b"x");
        drop(writer);
        let status = ssh_interop_tests::process::wait_bounded(&mut child, WAIT);
        assert_eq!(status.and_then(|s| s.code()), Some(code), "-W {target}");
        assert!(
            !non_blocking(&reader),
            "-W {target}: the pipe left non-blocking"
        );
    }
    stop_background(&needle, WAIT);
}
