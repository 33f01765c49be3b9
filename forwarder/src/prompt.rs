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

use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
            let _ =
                rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, &termios);
            let _ = (&tty).write_all(b"\n");
        }
    }
}

/// Shows `prompt` on the terminal and reads one line, without echo unless `echo`. Blocks.
pub fn ask(prompt: &str, echo: bool) -> Result<Zeroizing<String>, String> {
    let tty = open_tty().map_err(|e| format!("cannot open the terminal to ask: {e}"))?;
    (&tty)
        .write_all(prompt.as_bytes())
        .map_err(|e| format!("cannot write to the terminal: {e}"))?;
    let quiet = !echo && echo_off(&tty);
    let answer = read_line(&tty);
    if quiet {
        restore_terminal();
    }
    answer
}

#[cfg(unix)]
fn echo_off(tty: &std::fs::File) -> bool {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let Ok(old) = tcgetattr(tty) else {
        return false;
    };
    let mut quiet = old.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    let Ok(copy) = tty.try_clone() else {
        return false;
    };
    *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some((copy, old));
    // Flush: what was typed before the prompt is not taken as the answer.
    if tcsetattr(tty, OptionalActions::Flush, &quiet).is_err() {
        SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
        return false;
    }
    true
}

#[cfg(not(unix))]
fn echo_off(_: &std::fs::File) -> bool {
    false
}

fn read_line(mut tty: &std::fs::File) -> Result<Zeroizing<String>, String> {
    // Room for the longest answer, so no reallocation leaves a copy of it behind.
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_ANSWER + 1));
    let mut byte = [0u8; 1];
    loop {
        match tty.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte == [b'\n'] => break,
            Ok(_) => {
                if line.len() >= MAX_ANSWER {
                    return Err(format!("the answer is longer than {MAX_ANSWER} bytes"));
                }
                line.push(byte[0]);
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
