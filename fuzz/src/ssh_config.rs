//! ssh_config text read the way `~/.ssh/config` is (`forwarder::cli::parse_args_with_config_text`):
//! `Host` and `Match` blocks, patterns, quoting, comments, and every setting through the same
//! code as `-o`.
//!
//! Input: the file's text, then a NUL byte, then the command line's arguments separated by NUL
//! bytes (`host` when there are none). `Include` lines are not followed, so no file is opened,
//! and the environment is fixed: a crash reproduces on any machine (`${VAR}` in a path reads
//! the process's variables, so the seeds use none).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

use forwarder::cli::{Command, Environment, parse_args_with_config_text};

/// Arguments per input; a real command line has a handful.
const MAX_ARGS: usize = 64;

/// Fuzz entry point.
pub fn run(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0);
    let Some(Ok(text)) = parts.next().map(std::str::from_utf8) else {
        return;
    };
    let mut args: Vec<OsString> = parts
        .take(MAX_ARGS)
        .map(|a| std::ffi::OsStr::from_bytes(a).to_owned())
        .collect();
    if args.is_empty() {
        args.push("host".into());
    }
    let env = Environment {
        home: Some(PathBuf::from("/home/fuzz")),
        user: Some("fuzz".into()),
        cache_home: None,
    };
    let result = parse_args_with_config_text(args.clone(), &env, text);
    // Parsing is a pure function of the text, the arguments and the environment.
    assert_eq!(
        parse_args_with_config_text(args, &env, text),
        result,
        "the same input parsed differently"
    );
    match result {
        Ok(Command::Run(options)) => {
            assert!(options.port != 0, "port 0 accepted");
            assert!(!options.user.is_empty(), "empty user accepted");
            assert!(!options.destination_host.is_empty(), "empty host accepted");
            for note in &options.notes {
                // A jump host's own notes say which hop they are about first.
                let line = note
                    .strip_prefix("jump host ")
                    .and_then(|rest| rest.split_once(": "))
                    .map_or(note.as_str(), |(_, n)| n);
                assert!(
                    line.starts_with("config line "),
                    "a note without its line: {note}"
                );
            }
            for warning in &options.warnings {
                assert!(
                    !warning.contains("unknown keyword") || warning.starts_with("config line "),
                    "a warning about a keyword without its line: {warning}"
                );
            }
            assert!(
                options.proxy_jump.len() <= 16,
                "a chain of more than 16 hops"
            );
            for hop in &options.proxy_jump {
                assert!(hop.port != 0 && !hop.user.is_empty() && !hop.host.is_empty());
                assert!(
                    hop.options.proxy_jump.is_empty(),
                    "a hop with hops of its own"
                );
            }
        }
        Ok(_) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Seed inputs: a realistic file with each construct, and a command line.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let with_args = |text: &str, args: &[&str]| {
        let mut v = text.as_bytes().to_vec();
        for a in args {
            v.push(0);
            v.extend_from_slice(a.as_bytes());
        }
        v
    };
    vec![
        (
            "alias".into(),
            with_args(
                "# bastions\nHost db-bastion bastion2\n  HostName %h.example.com\n  Port 2222\n  \
                 User analytics\n  IdentityFile ~/.ssh/%h_%r\n  UserKnownHostsFile %d/kh\n  \
                 LocalForward 15432 db.internal:5432\n\nHost *\n  ServerAliveInterval 15\n",
                &["-N", "db-bastion"],
            ),
        ),
        (
            "match".into(),
            with_args(
                "Host *.internal !secret.internal\n  User ops\nMatch host *.example.com user \
                 ops,!root\n  Port 2200\nMatch !originalhost x* localuser fuzz\n  Compression \
                 yes\nMatch exec \"true\"\n  Port 1\nMatch all\n  StrictHostKeyChecking=accept-new\n",
                &["-p", "22", "web.internal"],
            ),
        ),
        (
            "syntax".into(),
            with_args(
                "HOST=h\n  port=2222   # trailing\n  IdentityFile \"/with space/key#1\"\n  \
                 ForwardAgent yes\n  UseKeychain yes\n  Include conf.d/*\n  RekeyLimit 1G 1h\n",
                &["h"],
            ),
        ),
        (
            "jump".into(),
            with_args(
                "Host db\n  HostName db.internal\n  ProxyJump jump\n  HostKeyAlias db-key\n  \
                 IdentityFile ~/.ssh/%k_%C_%j\nHost jump\n  HostName 10.0.0.1\n  Port 2200\n  \
                 User hop\n  ProxyJump outer\n  UserKnownHostsFile ~/.ssh/jump_%L_%i\n\
                 Host outer\n  Port 2300\n",
                &["-i", "/key", "-o", "UserKnownHostsFile=/kh", "db"],
            ),
        ),
        (
            "ignore-unknown".into(),
            with_args(
                "IgnoreUnknown usekeychain,add*\nHost h\n  UseKeychain yes\n  AddKeysToAgent \
                 yes\n  Bogus 1\n  IdentityFile %l/%L/%i\n",
                &["-J", "a@j1:2,j2", "h"],
            ),
        ),
        (
            "proxy-match-bom".into(),
            with_args(
                "\u{feff}Host bastion\n  ProxyCommand none\n  RevokedHostKeys none\nMatch \
                 host=*.internal !user=root\n  Port 2222\nHost *\n  ProxyJump bastion\n  \
                 Hots typo\n",
                &["db.internal"],
            ),
        ),
        (
            "bad-value".into(),
            with_args("Host other\n  Port abc\n", &[]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn seeds_run() {
        for (_, seed) in super::seeds() {
            super::run(&seed);
        }
    }
}
