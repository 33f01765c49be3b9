//! Secrets for authentication (passwords, key passphrases, keyboard-interactive answers): from
//! a file or an environment variable the user named, or typed on the terminal with echo off.
//! Never from the command line, where other users of the machine can read them.
//!
//! ```text
//!  -o PasswordFile=path ──> first line ─┐
//!  -o PasswordEnv=VAR ───> its value ───┼──> Zeroizing<String> ──> ClientAuth::provide_*
//!  /dev/tty, echo off ───> one line ────┘
//! ```
//! Terminal prompts block, so the driver runs them on a blocking thread. If the program is
//! interrupted while one waits, [`restore_terminal`] turns echo back on.
//!
//! A secret is read with echo off and the terminal's signal keys turned into plain input, so
//! that Ctrl-C (or Ctrl-\\, Ctrl-Z) typed at the prompt is seen here first: the terminal is put
//! back, and only then is the signal raised, as if the key had raised it. A program killed by
//! Ctrl-C at a passphrase prompt, before any handler of its own exists, no longer leaves the
//! shell without echo. Erase and kill keep their meaning.
//!
//! A signal sent from outside while a prompt has the terminal in raw input (SIGTERM from a
//! service manager, SIGHUP when the terminal goes away, `kill -INT`, `kill -QUIT`) would end
//! the program by its default action with echo still off. So the first quiet prompt starts a
//! watcher of those signals on a thread of its own: for each one the program does not handle
//! itself ([`handled_by_program`]), it puts the terminal back and then takes the signal's
//! default action, so the program still ends killed by that signal. A signal the process
//! ignores (`nohup`, a shell's background job) is not watched and stays ignored.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
#[cfg(unix)]
use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroizing;

/// A secret file is read up to this many bytes: a password is one short line.
const MAX_SECRET_FILE: u64 = 64 * 1024;
/// A typed answer longer than this is refused.
const MAX_ANSWER: usize = 4 * 1024;

/// Where a secret comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// The first line of this file.
    File {
        /// The file.
        path: PathBuf,
        /// The option that named it (`PasswordFile`).
        option: &'static str,
    },
    /// The value of this environment variable.
    Env {
        /// The variable.
        name: String,
        /// The option that named it (`PasswordEnv`).
        option: &'static str,
    },
    /// Typed on the terminal.
    Terminal,
    /// Nowhere: why, and what to do.
    Unavailable(String),
}

impl SecretSource {
    /// The source for one kind of secret: a file or variable if one was named, else the
    /// terminal unless BatchMode is on or there is none. `what` is `password` or
    /// `passphrase`; `file_option` and `env_option` the option names.
    pub fn choose(
        what: &str,
        file: Option<&Path>,
        env: Option<&str>,
        (file_option, env_option): (&'static str, &'static str),
        batch_mode: bool,
        terminal: bool,
    ) -> Self {
        if let Some(path) = file {
            Self::File {
                path: path.to_path_buf(),
                option: file_option,
            }
        } else if let Some(name) = env {
            Self::Env {
                name: name.to_owned(),
                option: env_option,
            }
        } else if batch_mode {
            Self::Unavailable(format!(
                "BatchMode is on, so no {what} is asked for on the terminal; give one with \
                 -o {file_option}=FILE or -o {env_option}=VARIABLE"
            ))
        } else if !terminal {
            Self::Unavailable(format!(
                "there is no terminal to ask for a {what} on; give one with \
                 -o {file_option}=FILE or -o {env_option}=VARIABLE"
            ))
        } else {
            Self::Terminal
        }
    }

    /// Whether it is typed (so a refused one can be typed again).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Terminal)
    }

    /// Reads the secret; `prompt` is shown when it is typed.
    pub fn read(&self, prompt: &str) -> Result<Zeroizing<String>, String> {
        match self {
            Self::File { path, option } => read_secret_file(path, option),
            Self::Env { name, option } => read_secret_env(name, option),
            Self::Terminal => ask(prompt, false),
            Self::Unavailable(why) => Err(why.clone()),
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, option } => write!(f, "{option} {}", path.display()),
            Self::Env { name, option } => write!(f, "{option} {name}"),
            Self::Terminal => f.write_str("the terminal"),
            Self::Unavailable(_) => f.write_str("nowhere"),
        }
    }
}

/// The first line of `path` (without its line ending).
pub fn read_secret_file(path: &Path, option: &str) -> Result<Zeroizing<String>, String> {
    let shown = path.display();
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {option} {shown}: {e}"))?;
    warn_if_readable_by_others(&file, path, option);
    // Room for all of it, so no reallocation leaves a copy of the secret behind.
    let mut raw = Zeroizing::new(Vec::with_capacity(MAX_SECRET_FILE as usize + 1));
    std::io::Read::by_ref(&mut file)
        .take(MAX_SECRET_FILE)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read {option} {shown}: {e}"))?;
    let line_end = raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len());
    let mut line = raw.get(..line_end).unwrap_or_default();
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    let text = core::str::from_utf8(line)
        .map_err(|_| format!("{option} {shown}: the first line is not UTF-8 text"))?;
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(unix)]
fn warn_if_readable_by_others(file: &std::fs::File, path: &Path, option: &str) {
    use std::os::unix::fs::MetadataExt as _;
    if let Ok(meta) = file.metadata()
        && meta.mode() & 0o077 != 0
    {
        tracing::warn!(
            "{option} {} can be read by other users (mode {:04o}); restrict it with chmod 600",
            path.display(),
            meta.mode() & 0o7777
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &std::fs::File, _: &Path, _: &str) {}

/// The value of environment variable `name`.
pub fn read_secret_env(name: &str, option: &str) -> Result<Zeroizing<String>, String> {
    match std::env::var_os(name) {
        None => Err(format!(
            "{option} names the environment variable {name}, which is not set"
        )),
        Some(v) => v
            .into_string()
            .map(Zeroizing::new)
            .map_err(|_| format!("{option}: the value of {name} is not UTF-8 text")),
    }
}

/// Whether there is a terminal to ask on.
pub fn terminal_available() -> bool {
    open_tty().is_ok()
}

fn open_tty() -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
}

/// Shows `text` on the terminal (keyboard-interactive instructions, "try again").
pub fn show(text: &str) -> Result<(), String> {
    let mut tty = open_tty().map_err(|e| format!("cannot open the terminal: {e}"))?;
    let _turn = TERMINAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut line = text.to_owned();
    if !line.ends_with('\n') {
        line.push('\n');
    }
    tty.write_all(line.as_bytes())
        .map_err(|e| format!("cannot write to the terminal: {e}"))
}

/// The terminal's settings while echo is off, to put back if the program is interrupted.
#[cfg(unix)]
static SAVED: Mutex<Option<(std::fs::File, rustix::termios::Termios)>> = Mutex::new(None);

/// Puts the terminal's echo back if a prompt turned it off and is still waiting.
pub fn restore_terminal() {
    #[cfg(unix)]
    {
        let saved = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((tty, termios)) = saved {
            // Flush, as OpenSSH does: what was typed after the answer is not left for the shell.
            let _ =
                rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Flush, &termios);
            let _ = (&tty).write_all(b"\n");
        }
    }
}

/// The signals whose default action ends the program, watched once a prompt has put the
/// terminal in raw input.
#[cfg(unix)]
const ENDING_SIGNALS: [rustix::process::Signal; 4] = [
    rustix::process::Signal::HUP,
    rustix::process::Signal::INT,
    rustix::process::Signal::QUIT,
    rustix::process::Signal::TERM,
];

/// The signals the program handles itself (bit `n - 1` for signal `n`): the watcher leaves
/// them to it.
#[cfg(unix)]
static HANDLED_BY_PROGRAM: AtomicU64 = AtomicU64::new(0);

/// The signals the watcher watches, the same way; none until the first quiet prompt.
#[cfg(unix)]
static WATCHED: AtomicU64 = AtomicU64::new(0);

#[cfg(unix)]
fn signal_bit(signal: i32) -> u64 {
    u32::try_from(signal.wrapping_sub(1))
        .ok()
        .and_then(|n| 1u64.checked_shl(n))
        .unwrap_or(0)
}

/// Says that the program handles `signals` itself from now on (its own handlers are in
/// place, e.g. tokio's for a graceful shutdown): the watcher no longer ends the program
/// for them, even during a prompt, and the program's handler puts the terminal back.
#[cfg(unix)]
pub fn handled_by_program(signals: &[rustix::process::Signal]) {
    for signal in signals {
        HANDLED_BY_PROGRAM.fetch_or(signal_bit(signal.as_raw()), Ordering::SeqCst);
    }
}

/// Whether the watcher takes `signal`'s default action itself: it watches the signal and the
/// program does not handle it.
#[cfg(unix)]
fn watcher_ends_program_for(signal: i32) -> bool {
    let bit = signal_bit(signal);
    WATCHED.load(Ordering::SeqCst) & bit != 0
        && HANDLED_BY_PROGRAM.load(Ordering::SeqCst) & bit == 0
}

/// The signals a process ignores, from the `SigIgn:` line of Linux's `/proc/self/status`
/// (a hexadecimal mask, bit `n - 1` for signal `n`); none when it is not there.
#[cfg(unix)]
fn ignored_in_status(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or(0)
}

/// Starts the watcher once: before it a signal takes its default action (or the program's
/// handler), and it must not make an ignored signal count again, so the process's ignored
/// signals are read first, while their disposition still says so. The signals are taken over
/// on the watcher's own thread, only once it runs: a thread that cannot start leaves them as
/// they were.
#[cfg(unix)]
fn watch_signals() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let ignored = std::fs::read_to_string("/proc/self/status")
            .map(|s| ignored_in_status(&s))
            .unwrap_or(0);
        let watched: Vec<i32> = ENDING_SIGNALS
            .iter()
            .map(|s| s.as_raw())
            .filter(|&n| ignored & signal_bit(n) == 0)
            .collect();
        let (ready, taken_over) = std::sync::mpsc::channel();
        let started = std::thread::Builder::new()
            .name("prompt-signals".into())
            .spawn(move || {
                let mut signals = match signal_hook::iterator::Signals::new(&watched) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                for &n in &watched {
                    WATCHED.fetch_or(signal_bit(n), Ordering::SeqCst);
                }
                let _ = ready.send(Ok(()));
                for signal in signals.forever() {
                    if watcher_ends_program_for(signal) {
                        restore_terminal();
                        end_by(signal);
                    }
                }
            });
        let why = match started.map(|_| taken_over.recv()) {
            Ok(Ok(Ok(()))) => return,
            Ok(Ok(Err(e))) | Err(e) => e.to_string(),
            Ok(Err(e)) => e.to_string(),
        };
        tracing::debug!("cannot watch signals while a prompt waits: {why}");
    });
}

/// Ends the program by `signal`'s default action, as if nothing had caught it, so that the
/// parent sees it killed by that signal.
#[cfg(unix)]
fn end_by(signal: i32) -> ! {
    let _ = signal_hook::low_level::emulate_default_handler(signal);
    // Not reached for the watched signals, whose default action ends the program.
    std::process::exit(128 + signal)
}

/// Shows `prompt` on the terminal and reads one line, without echo unless `echo`. Blocks.
pub fn ask(prompt: &str, echo: bool) -> Result<Zeroizing<String>, String> {
    let tty = open_tty().map_err(|e| format!("cannot open the terminal to ask: {e}"))?;
    ask_on(&tty, prompt, echo)
}

/// One prompt at a time on the terminal, for the whole process: two sessions that ask at
/// once (their drivers run prompts on blocking threads) would each turn echo off, the second
/// saving the first's quiet settings as the ones to put back, and share out the typed bytes
/// between them. The second waits until the first is answered.
static TERMINAL: Mutex<()> = Mutex::new(());

/// [`ask`] on `tty`, taking its turn at the terminal.
fn ask_on(tty: &std::fs::File, prompt: &str, echo: bool) -> Result<Zeroizing<String>, String> {
    let _turn = TERMINAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut writer = tty;
    writer
        .write_all(prompt.as_bytes())
        .map_err(|e| format!("cannot write to the terminal: {e}"))?;
    let keys = if echo { None } else { echo_off(tty) };
    let answer = read_line(tty, keys.as_ref(), prompt);
    if keys.is_some() {
        restore_terminal();
    }
    answer
}

/// The keys of a terminal in raw input that [`read_line`] gives their usual meaning: the
/// terminal's own settings (`stty`), a disabled one as `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Keys {
    interrupt: Option<u8>,
    quit: Option<u8>,
    suspend: Option<u8>,
    erase: Option<u8>,
    kill: Option<u8>,
    end_of_file: Option<u8>,
}

/// What one byte typed at a quiet prompt does.
#[derive(Debug, PartialEq, Eq)]
enum Typed {
    /// Part of the answer.
    Char(u8),
    /// Enter.
    Done,
    /// Erase the last byte.
    Erase,
    /// Erase the whole line.
    Kill,
    /// End of input (on an empty line, as a terminal's EOF does; else ignored).
    EndOfFile,
    /// A signal key: put the terminal back, then raise it.
    Signal(SignalKey),
}

/// The signal keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SignalKey {
    Interrupt,
    Quit,
    Suspend,
}

impl Keys {
    fn classify(&self, byte: u8) -> Typed {
        let is = |key: Option<u8>| key == Some(byte);
        if byte == b'\n' || byte == b'\r' {
            Typed::Done
        } else if is(self.interrupt) {
            Typed::Signal(SignalKey::Interrupt)
        } else if is(self.quit) {
            Typed::Signal(SignalKey::Quit)
        } else if is(self.suspend) {
            Typed::Signal(SignalKey::Suspend)
        } else if is(self.erase) || byte == 0x08 {
            Typed::Erase
        } else if is(self.kill) {
            Typed::Kill
        } else if is(self.end_of_file) {
            Typed::EndOfFile
        } else {
            Typed::Char(byte)
        }
    }
}

/// Turns echo off and the terminal's line editing and signal keys into plain input; returns
/// those keys, or `None` if the terminal cannot be set (the answer is then read as it is).
#[cfg(unix)]
fn echo_off(tty: &std::fs::File) -> Option<Keys> {
    use rustix::termios::{
        LocalModes, OptionalActions, SpecialCodeIndex as I, tcgetattr, tcsetattr,
    };
    let old = tcgetattr(tty).ok()?;
    let code = |index: I| Some(old.special_codes[index]).filter(|&c| c != 0);
    let keys = Keys {
        interrupt: code(I::VINTR),
        quit: code(I::VQUIT),
        suspend: code(I::VSUSP),
        erase: code(I::VERASE),
        kill: code(I::VKILL),
        end_of_file: code(I::VEOF),
    };
    watch_signals();
    let mut quiet = old.clone();
    quiet
        .local_modes
        .remove(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG);
    quiet.special_codes[I::VMIN] = 1;
    quiet.special_codes[I::VTIME] = 0;
    let copy = tty.try_clone().ok()?;
    *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some((copy, old));
    // Flush: what was typed before the prompt is not taken as the answer.
    if tcsetattr(tty, OptionalActions::Flush, &quiet).is_err() {
        SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
        return None;
    }
    Some(keys)
}

#[cfg(not(unix))]
fn echo_off(_: &std::fs::File) -> Option<Keys> {
    None
}

/// Puts the terminal back and raises the signal its key stands for, as the terminal would
/// have; then, for a suspend that the shell continued, turns echo off again.
#[cfg(unix)]
fn raise(key: SignalKey, tty: &std::fs::File, prompt: &str) {
    use rustix::process::{Signal, getpid, kill_process};
    restore_terminal();
    let signal = match key {
        SignalKey::Interrupt => Signal::INT,
        SignalKey::Quit => Signal::QUIT,
        SignalKey::Suspend => Signal::TSTP,
    };
    if watcher_ends_program_for(signal.as_raw()) {
        // Here and now, as the default action would have, not later on the watcher's thread
        // while this one goes on with a failed prompt.
        end_by(signal.as_raw());
    }
    let _ = kill_process(getpid(), signal);
    if key == SignalKey::Suspend {
        // Stopped until the shell's `fg`; then ask again where the line was.
        let _ = (&*tty).write_all(prompt.as_bytes());
        let _ = echo_off(tty);
    }
}

#[cfg(not(unix))]
fn raise(_: SignalKey, _: &std::fs::File, _: &str) {}

/// Reads one line. With `keys` (a quiet terminal in raw input), erase, kill and end of file
/// are applied here, and a signal key ends the read after raising its signal.
fn read_line(
    mut tty: &std::fs::File,
    keys: Option<&Keys>,
    prompt: &str,
) -> Result<Zeroizing<String>, String> {
    // Room for the longest answer, so no reallocation leaves a copy of it behind.
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_ANSWER + 1));
    let mut byte = [0u8; 1];
    loop {
        match tty.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                let typed = match keys {
                    Some(keys) => keys.classify(byte[0]),
                    None if byte[0] == b'\n' => Typed::Done,
                    None => Typed::Char(byte[0]),
                };
                match typed {
                    Typed::Done => break,
                    Typed::Char(c) => {
                        if line.len() >= MAX_ANSWER {
                            return Err(format!("the answer is longer than {MAX_ANSWER} bytes"));
                        }
                        line.push(c);
                    }
                    Typed::Erase => {
                        // One character, not one byte, of a UTF-8 answer.
                        while let Some(b) = line.pop() {
                            if b & 0xC0 != 0x80 {
                                break;
                            }
                        }
                    }
                    Typed::Kill => line.clear(),
                    Typed::EndOfFile if line.is_empty() => break,
                    Typed::EndOfFile => {}
                    Typed::Signal(key) => {
                        raise(key, tty, prompt);
                        if key != SignalKey::Suspend {
                            return Err("interrupted".into());
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read from the terminal: {e}")),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let text = core::str::from_utf8(&line).map_err(|_| "the answer is not UTF-8 text")?;
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_give_their_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret pass\r\nsecond line\n").unwrap();
        assert_eq!(
            read_secret_file(&path, "PasswordFile").unwrap().as_str(),
            "s3cret pass"
        );
        std::fs::write(&path, "no newline").unwrap();
        assert_eq!(
            read_secret_file(&path, "PasswordFile").unwrap().as_str(),
            "no newline"
        );
        std::fs::write(&path, b"\xff\xfe\n").unwrap();
        assert!(
            read_secret_file(&path, "PasswordFile")
                .unwrap_err()
                .contains("not UTF-8")
        );
        let e = read_secret_file(&dir.path().join("missing"), "PassphraseFile").unwrap_err();
        assert!(e.starts_with("cannot read PassphraseFile "), "{e}");
    }

    #[test]
    fn environment_variables_are_read_by_name() {
        let e = read_secret_env("FORWARDER_TEST_SURELY_UNSET_VARIABLE", "PasswordEnv").unwrap_err();
        assert!(e.contains("which is not set"), "{e}");
        // A variable every test run has, read as it is.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(
            read_secret_env("PATH", "PasswordEnv").unwrap().as_str(),
            path
        );
    }

    /// The keys of `stty sane`.
    const SANE: Keys = Keys {
        interrupt: Some(0x03),
        quit: Some(0x1c),
        suspend: Some(0x1a),
        erase: Some(0x7f),
        kill: Some(0x15),
        end_of_file: Some(0x04),
    };

    fn typed(input: &[u8], keys: Option<&Keys>) -> Result<Zeroizing<String>, String> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(input).unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        read_line(&file, keys, "prompt: ")
    }

    #[test]
    fn quiet_prompts_apply_erase_kill_and_end_of_file_themselves() {
        let answer = |input: &[u8]| typed(input, Some(&SANE)).unwrap().as_str().to_owned();
        assert_eq!(answer(b"secreX\x7ft\r"), "secret");
        assert_eq!(answer(b"secreX\x08t\n"), "secret");
        assert_eq!(answer(b"wrong\x15right\n"), "right");
        // Erase takes a whole character of a UTF-8 answer.
        assert_eq!(answer("pa\u{e9}\u{20ac}\x7f\x7fss\n".as_bytes()), "pass");
        assert_eq!(answer(b"\x7f\x7fok\n"), "ok");
        // End of file ends an empty line, and is ignored in a started one.
        assert_eq!(answer(b"\x04"), "");
        assert_eq!(answer(b"ab\x04c\n"), "abc");
        assert_eq!(answer(b"no newline"), "no newline");
        // A disabled key is an ordinary byte.
        let no_kill = Keys { kill: None, ..SANE };
        assert_eq!(
            typed(b"a\x15b\n", Some(&no_kill)).unwrap().as_str(),
            "a\u{15}b"
        );
        let long = vec![b'x'; MAX_ANSWER + 1];
        assert!(
            typed(&long, Some(&SANE))
                .unwrap_err()
                .contains("longer than")
        );
    }

    #[test]
    fn signal_keys_are_recognised_and_echoed_prompts_take_bytes_as_they_are() {
        assert_eq!(SANE.classify(0x03), Typed::Signal(SignalKey::Interrupt));
        assert_eq!(SANE.classify(0x1c), Typed::Signal(SignalKey::Quit));
        assert_eq!(SANE.classify(0x1a), Typed::Signal(SignalKey::Suspend));
        assert_eq!(Keys::default().classify(0x03), Typed::Char(0x03));
        assert_eq!(SANE.classify(b'a'), Typed::Char(b'a'));
        // With echo on, the terminal edits the line: only the newline ends it.
        assert_eq!(
            typed(b"as typed\x7f\r\n", None).unwrap().as_str(),
            "as typed\u{7f}"
        );
    }

    /// Two prompts at once on one pseudo-terminal: the second is shown only once the first
    /// is answered, each gets its own answer, and echo is on again after both.
    #[cfg(unix)]
    #[test]
    fn two_prompts_at_once_take_turns_and_echo_comes_back() {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        use rustix::termios::{LocalModes, tcgetattr};
        use std::os::unix::fs::OpenOptionsExt as _;
        use std::sync::{Arc, mpsc};
        use std::time::{Duration, Instant};

        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
            .open(name.to_str().unwrap())
            .unwrap();
        let master = std::fs::File::from(master);
        let quiet =
            |t: &std::fs::File| !tcgetattr(t).unwrap().local_modes.contains(LocalModes::ECHO);
        assert!(!quiet(&slave));
        // What the prompts write, collected from the master.
        let shown = Arc::new(Mutex::new(Vec::new()));
        {
            let shown = shown.clone();
            let mut reader = master.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                while let Ok(n @ 1..) = reader.read(&mut buf) {
                    shown.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        let (tx, answers) = mpsc::channel();
        for who in ["first", "second"] {
            let tty = slave.try_clone().unwrap();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let answer = ask_on(&tty, &format!("{who} asks: "), false);
                let _ = tx.send((who, answer.map(|a| a.as_str().to_owned())));
            });
        }
        let count = |s: &[u8]| s.windows(6).filter(|w| w == b" asks:").count();
        let mut master_w = master.try_clone().unwrap();
        let mut got = Vec::new();
        for (n, typed) in [(1, "one"), (2, "two")] {
            // The n-th prompt is shown and has turned echo off: only then is its answer typed
            // (what was typed before it is flushed).
            let deadline = Instant::now() + Duration::from_secs(10);
            while count(&shown.lock().unwrap()) < n || !quiet(&slave) {
                assert!(Instant::now() < deadline, "prompt {n} never came");
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(
                count(&shown.lock().unwrap()),
                n,
                "a prompt was shown while another waited for its answer"
            );
            master_w.write_all(format!("{typed}\r").as_bytes()).unwrap();
            got.push(
                answers
                    .recv_timeout(Duration::from_secs(10))
                    .expect("an answer"),
            );
        }
        let mut answers: Vec<String> = got.iter().map(|(_, a)| a.clone().unwrap()).collect();
        answers.sort();
        assert_eq!(answers, ["one", "two"]);
        assert_ne!(got[0].0, got[1].0);
        assert!(!quiet(&slave), "echo is still off after both prompts");
    }

    #[cfg(unix)]
    #[test]
    fn ignored_signals_are_read_from_the_status_mask() {
        // As Linux shows a process started by `nohup` in a shell's background job: SIGHUP,
        // SIGINT and SIGQUIT ignored (signals 1, 2 and 3, bits 0 to 2).
        let status = "Name:\tforwarder\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000007\n\
                      SigCgt:\t0000000000004000\n";
        let ignored = ignored_in_status(status);
        for (signal, expected) in [
            (rustix::process::Signal::HUP, true),
            (rustix::process::Signal::INT, true),
            (rustix::process::Signal::QUIT, true),
            (rustix::process::Signal::TERM, false),
        ] {
            assert_eq!(
                ignored & signal_bit(signal.as_raw()) != 0,
                expected,
                "{signal:?}"
            );
        }
        // No mask (not Linux): nothing is taken as ignored.
        assert_eq!(ignored_in_status("Name:\tforwarder\n"), 0);
        assert_eq!(ignored_in_status("SigIgn:\tnot hex\n"), 0);
        // Numbers outside the mask have no bit.
        assert_eq!(signal_bit(0), 0);
        assert_eq!(signal_bit(65), 0);
        assert_eq!(signal_bit(64), 1 << 63);
    }

    #[test]
    fn sources_are_chosen_as_documented() {
        let opts = ("PasswordFile", "PasswordEnv");
        let file = Path::new("/k/pw");
        assert_eq!(
            SecretSource::choose("password", Some(file), Some("V"), opts, true, false),
            SecretSource::File {
                path: file.into(),
                option: "PasswordFile"
            }
        );
        assert_eq!(
            SecretSource::choose("password", None, Some("V"), opts, true, false),
            SecretSource::Env {
                name: "V".into(),
                option: "PasswordEnv"
            }
        );
        match SecretSource::choose("password", None, None, opts, true, true) {
            SecretSource::Unavailable(why) => {
                assert!(why.starts_with("BatchMode is on"), "{why}");
                assert!(why.contains("-o PasswordFile=FILE"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        match SecretSource::choose(
            "passphrase",
            None,
            None,
            ("PassphraseFile", "PassphraseEnv"),
            false,
            false,
        ) {
            SecretSource::Unavailable(why) => {
                assert!(why.contains("no terminal to ask for a passphrase"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(SecretSource::choose("password", None, None, opts, false, true).is_terminal());
        assert_eq!(
            SecretSource::Env {
                name: "V".into(),
                option: "PasswordEnv"
            }
            .to_string(),
            "PasswordEnv V"
        );
    }
}
