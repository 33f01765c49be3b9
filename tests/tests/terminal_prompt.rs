//! Secrets typed on a terminal: the forwarder run on a real pseudo-terminal that is its
//! controlling terminal (`setsid -c`), as a person runs it, asking for a key's passphrase at
//! start-up (an encrypted key without a `.pub` beside it is unlocked before the first
//! connection).
//!
//! ```text
//!  this test ── master ──> pty ── slave = stdin, stdout, stderr, /dev/tty ──> forwarder
//!     types "\x03" or a passphrase with erase and kill keys; reads the terminal's modes after
//! ```
//!
//! What must hold: Ctrl-C at the prompt ends the program as Ctrl-C does (killed by SIGINT)
//! and the terminal has its echo back; so does SIGTERM or SIGHUP sent from outside while the
//! prompt waits (killed by that signal); a passphrase edited with the terminal's erase and
//! kill keys is read as edited, and echo is back once it is; with `-f`, the passphrase is
//! typed before the tunnel goes to the background, in a session of its own (`ssh -f` first),
//! which it has entered before the command returns.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{LocalModes, tcgetattr};
use ssh_interop_tests::process::{
    processes_with, require_program, session_of, stop_background, wait_bounded,
};
use ssh_interop_tests::{
    ClientKind, EchoServer, KeyFormat, KeyKind, Sshd, TunnelBuilder, UserKey, echo_round_trip,
    forwarder_binary,
};

const PASSPHRASE: &str = "correct horse";
const PROMPT: &str = "Enter passphrase for key";
/// Bounds every wait of these tests.
const WAIT: Duration = Duration::from_secs(20);

/// A pseudo-terminal: the master this test types on, and what the program wrote to it.
struct Terminal {
    master: File,
    slave_path: std::path::PathBuf,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    fn open() -> Terminal {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .expect("open a pseudo-terminal");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave_path = std::path::PathBuf::from(name.to_str().expect("a UTF-8 pty name"));
        Terminal {
            master: File::from(master),
            slave_path,
            output: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Starts `forwarder ARGS` in a new session whose controlling terminal is this one, and a
    /// thread that collects what it writes (it ends when the program's last descriptor of the
    /// terminal closes).
    fn spawn(&self, args: &[String], cache: &Path) -> Child {
        self.spawn_via(&[], &forwarder_binary(), args, cache)
    }

    /// As [`Terminal::spawn`], for `program`, through `wrapper` (a command that ends by
    /// running the program and arguments after it).
    fn spawn_via(&self, wrapper: &[&str], program: &Path, args: &[String], cache: &Path) -> Child {
        let setsid = require_program(
            "setsid",
            &["/usr/bin", "/bin"],
            "install util-linux (apt-get install util-linux)",
        );
        let open_slave = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.slave_path)
                .expect("open the pty's slave")
        };
        let child = Command::new(setsid)
            .arg("-c")
            .args(wrapper)
            .arg(program)
            .args(args)
            .stdin(open_slave())
            .stdout(open_slave())
            .stderr(open_slave())
            .env_remove("SSH_AUTH_SOCK")
            .env("XDG_CACHE_HOME", cache)
            .spawn()
            .expect("run setsid -c forwarder");
        let mut reader = self.master.try_clone().expect("clone the pty's master");
        let output = self.output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once no process has the slave open any more.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                output.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        child
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until `done`, failing with what the program wrote if it exits first or `WAIT`
    /// passes.
    fn wait_until(&self, child: &mut Child, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the client exited ({status}) before {what}; it wrote:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not {what} within {WAIT:?}; the terminal shows:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the program has written `needle`.
    fn wait_for(&self, needle: &str, child: &mut Child) {
        self.wait_until(child, &format!("writing {needle:?}"), |t| {
            t.output().contains(needle)
        });
    }

    /// Waits until the prompt has turned echo off (it writes its text first).
    fn wait_for_echo_off(&self, child: &mut Child) {
        self.wait_until(child, "echo off at the prompt", |t| {
            !t.local_modes().contains(LocalModes::ECHO)
        });
    }

    fn type_keys(&self, keys: &[u8]) {
        (&self.master).write_all(keys).expect("type on the pty");
    }

    /// The terminal's local modes now (the master reads the slave's settings).
    fn local_modes(&self) -> LocalModes {
        tcgetattr(&self.master).expect("tcgetattr").local_modes
    }
}

/// A passphrase-protected Ed25519 key alone in its directory: no `.pub`, so the forwarder
/// must unlock it before connecting.
fn key_without_public_half() -> (UserKey, tempfile::TempDir, std::path::PathBuf) {
    let key = UserKey::generate_with(KeyKind::Ed25519, KeyFormat::OpenSsh, Some(PASSPHRASE));
    let dir = tempfile::tempdir().expect("temp dir");
    let alone = dir.path().join("id_locked");
    std::fs::copy(key.private_key_path(), &alone).expect("copy the key");
    (key, dir, alone)
}

fn assert_terminal_restored(terminal: &Terminal) {
    let modes = terminal.local_modes();
    for (flag, name) in [
        (LocalModes::ECHO, "ECHO"),
        (LocalModes::ICANON, "ICANON"),
        (LocalModes::ISIG, "ISIG"),
    ] {
        assert!(
            modes.contains(flag),
            "{name} is off after the forwarder ended ({modes:?}); it wrote:\n{}",
            terminal.output()
        );
    }
}

/// A forwarder (run through `wrapper`, if any) waiting at the passphrase prompt of a key
/// without its public half, with echo off; nothing listens on port 1, so the prompt comes
/// before any connection. The directory holds the key and must outlive the child.
fn at_the_prompt(wrapper: &[&str]) -> (Terminal, Child, tempfile::TempDir) {
    let (key, dir, alone) = key_without_public_half();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, "").expect("known_hosts");
    let args = TunnelBuilder::to_port(ClientKind::Forwarder, 1, "nobody", &key, &known_hosts)
        .identity(&alone)
        .option("BatchMode=no")
        .args();
    let terminal = Terminal::open();
    let mut child = terminal.spawn_via(wrapper, &forwarder_binary(), &args, dir.path());
    terminal.wait_for(PROMPT, &mut child);
    terminal.wait_for_echo_off(&mut child);
    (terminal, child, dir)
}

#[test]
fn terminal_prompt_ctrl_c_at_the_passphrase_prompt_kills_and_restores_echo() {
    // Echo goes off while the prompt waits: the typed secret is not shown.
    let (terminal, mut child, _dir) = at_the_prompt(&[]);
    terminal.type_keys(b"half typ\x03");
    let status = wait_bounded(&mut child, WAIT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!(
            "the forwarder did not end within {WAIT:?} of Ctrl-C; it wrote:\n{}",
            terminal.output()
        )
    });
    assert_eq!(
        status.signal(),
        Some(rustix::process::Signal::INT.as_raw()),
        "Ctrl-C should end the forwarder by SIGINT, as it ends ssh ({status}); it wrote:\n{}",
        terminal.output()
    );
    assert_terminal_restored(&terminal);
    assert!(
        !terminal.output().contains("half typ"),
        "{}",
        terminal.output()
    );
}

// A service manager stopping the program, or the terminal going away, while it waits for a
// passphrase: the signal's default action would end it with echo off, leaving the person's
// shell without echo.
#[test]
fn terminal_prompt_sigterm_or_sighup_at_the_passphrase_prompt_kills_and_restores_echo() {
    use rustix::process::{Pid, Signal, kill_process};
    for signal in [Signal::TERM, Signal::HUP] {
        let (terminal, mut child, _dir) = at_the_prompt(&[]);
        kill_process(Pid::from_child(&child), signal).expect("send the signal");
        let status = wait_bounded(&mut child, WAIT).unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "{signal:?}: the forwarder did not end within {WAIT:?}; it wrote:\n{}",
                terminal.output()
            )
        });
        assert_eq!(
            status.signal(),
            Some(signal.as_raw()),
            "{signal:?} should end the forwarder as its default action does ({status}); it \
             wrote:\n{}",
            terminal.output()
        );
        assert_terminal_restored(&terminal);
    }
}

// Started with SIGHUP ignored (`nohup`), the forwarder must go on ignoring it while a prompt
// waits, and a SIGTERM still ends it with the terminal put back.
#[test]
fn terminal_prompt_an_ignored_sighup_stays_ignored_at_the_passphrase_prompt() {
    use rustix::process::{Pid, Signal, kill_process};
    // The shell's `trap '' HUP` is the ignored disposition `nohup` sets; exec keeps it.
    let ignoring_hup = ["sh", "-c", "trap '' HUP; exec \"$@\"", "sh"];
    let (terminal, mut child, _dir) = at_the_prompt(&ignoring_hup);
    let pid = Pid::from_child(&child);
    kill_process(pid, Signal::HUP).expect("send SIGHUP");
    std::thread::sleep(Duration::from_millis(500));
    if let Ok(Some(status)) = child.try_wait() {
        panic!(
            "an ignored SIGHUP ended the forwarder ({status}); it wrote:\n{}",
            terminal.output()
        );
    }
    assert!(
        !terminal.local_modes().contains(LocalModes::ECHO),
        "the prompt should still wait with echo off"
    );
    kill_process(pid, Signal::TERM).expect("send SIGTERM");
    let status = wait_bounded(&mut child, WAIT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("SIGTERM did not end the forwarder within {WAIT:?}")
    });
    assert_eq!(status.signal(), Some(Signal::TERM.as_raw()), "{status}");
    assert_terminal_restored(&terminal);
}

#[test]
fn terminal_prompt_passphrase_edited_with_erase_and_kill_unlocks_the_key() {
    let (key, dir, alone) = key_without_public_half();
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let builder = TunnelBuilder::new(ClientKind::Forwarder, &sshd, &key)
        .identity(&alone)
        .option("BatchMode=no")
        .forward_to(echo.port());
    let local_port = builder.forwards()[0].local_port;
    let terminal = Terminal::open();
    let mut child = terminal.spawn(&builder.args(), dir.path());
    terminal.wait_for(PROMPT, &mut child);
    // The prompt writes its text, then turns echo off, discarding what was typed before (as
    // ssh's does): type once it is off.
    terminal.wait_for_echo_off(&mut child);
    // A wrong start erased by the kill key (Ctrl-U), a typo erased by DEL, Enter.
    terminal.type_keys(b"not this\x15correct horsX\x7fe\r");
    let reply = echo_round_trip(local_port, b"unlocked on a terminal");
    // Once the tunnel runs, SIGTERM is the program's: a clean exit, not the default action
    // the prompt's signal watcher takes for it while the program does not handle it.
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    );
    let status = wait_bounded(&mut child, WAIT);
    let output = terminal.output();
    if status.is_none() {
        let _ = child.kill();
    }
    assert_eq!(
        reply.unwrap_or_else(|e| panic!("echo through the tunnel: {e}; it wrote:\n{output}")),
        b"unlocked on a terminal"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM should end the running tunnel cleanly ({status:?}); it wrote:\n{output}"
    );
    assert!(
        !output.contains("Bad passphrase") && !output.contains("not this"),
        "{output}"
    );
    assert_terminal_restored(&terminal);
}

/// `kind -f` with a key that must be unlocked first, started on a terminal through `wrapper`:
/// the passphrase is typed on the terminal, the command (the wrapper, which ends with the
/// client's status) returns 0 once the tunnel is up, the terminal has its echo back, and one
/// process in a session of its own carries the tunnel.
fn passphrase_typed_then_f(kind: ClientKind, wrapper: &[&str]) {
    let (key, dir, alone) = key_without_public_half();
    let sshd = Sshd::start(&key);
    let echo = EchoServer::start();
    let builder = TunnelBuilder::new(kind, &sshd, &key)
        .identity(&alone)
        .option("BatchMode=no")
        .forward_to(echo.port())
        .arg("-f");
    let local_port = builder.forwards()[0].local_port;
    let needle = format!("127.0.0.1:{local_port}:");
    let terminal = Terminal::open();
    let mut child = terminal.spawn_via(wrapper, &kind.program(), &builder.args(), dir.path());
    terminal.wait_for(PROMPT, &mut child);
    terminal.wait_for_echo_off(&mut child);
    terminal.type_keys(format!("{PASSPHRASE}\r").as_bytes());
    let status = wait_bounded(&mut child, WAIT);
    if status.is_none() {
        let _ = child.kill();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "{}: -f should return 0 once the tunnel is up ({status:?}); it wrote:\n{}",
        kind.name(),
        terminal.output()
    );
    assert_terminal_restored(&terminal);
    // The command has ended, and with it the terminal's session: the tunnel is still up.
    let pids = processes_with(&needle);
    let reply = echo_round_trip(local_port, b"typed, then in the background");
    stop_background(&needle, WAIT);
    assert_eq!(
        pids.len(),
        1,
        "{}: one background process should carry the tunnel: {pids:?}; it wrote:\n{}",
        kind.name(),
        terminal.output()
    );
    assert_eq!(
        reply.unwrap_or_else(|e| panic!(
            "{}: echo through the background tunnel: {e}; it wrote:\n{}",
            kind.name(),
            terminal.output()
        )),
        b"typed, then in the background"
    );
    assert_eq!(session_of(pids[0]), Some(pids[0]), "{}", kind.name());
    assert!(
        !terminal.output().contains(PASSPHRASE),
        "{}",
        terminal.output()
    );
}

// As a person runs it: a shell leads the terminal's session and lives on after the command
// (the wrapper's pause stands for it). `ssh -f` first.
#[test]
fn terminal_prompt_passphrase_typed_then_f_goes_to_the_background() {
    let shell = ["sh", "-c", "\"$@\"; status=$?; sleep 1; exit $status", "sh"];
    for kind in [ClientKind::OpenSsh, ClientKind::Forwarder] {
        passphrase_typed_then_f(kind, &shell);
    }
}

// The command itself leads the terminal's session (`exec` from a login shell, `setsid -c`):
// its exit hangs up every process still in that session, so the background process must have
// left it before the command returns. `ssh -f` loses its tunnel here in most runs (its
// daemon(3) child is hung up before it calls setsid), so it is not the reference.
#[test]
fn terminal_prompt_passphrase_typed_then_f_outlives_a_command_that_led_the_session() {
    passphrase_typed_then_f(ClientKind::Forwarder, &[]);
}
