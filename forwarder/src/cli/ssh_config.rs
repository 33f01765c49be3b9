//! ssh_config files: `~/.ssh/config`, or the file `-F` names (`-F none` reads nothing).
//!
//! ```text
//!  file ──lines──> Host / Match ──> is the block active?
//!                  Include ──> the named files (globs, ~/.ssh-relative), same rules, depth-bounded
//!                  Key Value ──> config::apply (what -o Key=Value does; first value wins)
//! ```
//!
//! Only the user's file is read (the system-wide one is not). `~/.ssh/config` and every
//! included file must pass ssh's owner and permission check (the `-F` file itself need not,
//! as in ssh). The command line is scanned first, so its values win over the file's; in the
//! file the first value obtained wins. A setting forwarder does not implement is skipped (and
//! noted for `-v`), except the one it cannot skip safely: a `ProxyCommand` that would be
//! used is an error. An unknown keyword is skipped with a
//! warning unless `IgnoreUnknown` names it; a bad value is an error naming the file and
//! line. Lines of inactive blocks are checked too, as ssh does, but change nothing.

use std::path::{Path, PathBuf};

use super::config::{self, split_key_value, split_words};
use super::{CliError, Environment, Parsed};

/// `Match` criteria that take an argument, as the next word or after `=` (`host=db*`).
const MATCH_WITH_ARGUMENT: [&str; 11] = [
    "host",
    "originalhost",
    "user",
    "localuser",
    "exec",
    "localnetwork",
    "tagged",
    "command",
    "version",
    "sessiontype",
    "localport",
];

/// The largest config file read.
pub(super) const MAX_FILE_BYTES: u64 = 1 << 20;
/// How deep `Include` may nest (OpenSSH's limit too).
pub(super) const MAX_DEPTH: usize = 16;
/// How many files one run may read, includes counted.
pub(super) const MAX_FILES: usize = 256;

/// Where the ssh_config text comes from.
pub(super) enum Source<'a> {
    /// `-F file`, `-F none`, or `~/.ssh/config` if it exists.
    User,
    /// This text (named `config` in messages), without following `Include` lines: for tests
    /// and fuzzing, where no file may be opened.
    Text(&'a str),
}

/// Reads the config for `p`'s host into `p`. Jump hosts are looked up with this too, each
/// under its own name.
pub(super) fn apply(
    p: &mut Parsed,
    env: &Environment,
    source: &Source<'_>,
) -> Result<(), CliError> {
    match source {
        Source::User => apply_user_config(p, env),
        Source::Text(text) => apply_text(p, env, "config", text),
    }
}

/// Reads the user's config file into `p`: `-F file`, or `~/.ssh/config` if it exists.
fn apply_user_config(p: &mut Parsed, env: &Environment) -> Result<(), CliError> {
    let (path, required) = match p.config_file.as_deref() {
        Some(f) if f.eq_ignore_ascii_case("none") => return Ok(()),
        Some(f) => (PathBuf::from(f), true),
        None => match &env.home {
            Some(home) => (home.join(".ssh").join("config"), false),
            None => return Ok(()),
        },
    };
    let cannot_read = |e: std::io::Error| CliError::ConfigFile {
        file: path.display().to_string(),
        line: None,
        message: format!("cannot read it: {e}"),
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(cannot_read(e)),
    };
    // As in ssh, `-F` names a file to read whatever its permissions.
    if !required {
        check_permissions(&file, &path)?;
    }
    let text = crate::files::read_text_to_end_bounded(file, MAX_FILE_BYTES).map_err(cannot_read)?;
    let mut reader = Reader {
        env,
        follow_includes: true,
        files: 1,
    };
    let mut active = true;
    reader.text(p, &path.display().to_string(), &text, 0, &mut active, false)
}

/// Reads `text` as the user's config file (`name` is used in messages), without following
/// `Include` lines.
fn apply_text(p: &mut Parsed, env: &Environment, name: &str, text: &str) -> Result<(), CliError> {
    let mut reader = Reader {
        env,
        follow_includes: false,
        files: 1,
    };
    let mut active = true;
    reader.text(p, name, text, 0, &mut active, false)
}

struct Reader<'a> {
    env: &'a Environment,
    follow_includes: bool,
    files: usize,
}

impl Reader<'_> {
    /// One file's lines. `active` is whether the current block applies; `never_match` is set
    /// for a file included from an inactive block, where no `Host` or `Match` can apply.
    fn text(
        &mut self,
        p: &mut Parsed,
        name: &str,
        text: &str,
        depth: usize,
        active: &mut bool,
        never_match: bool,
    ) -> Result<(), CliError> {
        // A byte order mark some editors write would otherwise stick to the first keyword.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (n, raw) in text.lines().enumerate() {
            let at = |message: String| CliError::ConfigFile {
                file: name.to_owned(),
                line: Some(n + 1),
                message,
            };
            let line = strip_comment(raw.trim_matches(|c: char| c.is_ascii_whitespace()));
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = split_key_value(line) else {
                return Err(at(if line.starts_with('=') {
                    "a line must start with a keyword".into()
                } else {
                    format!("{line} needs a value")
                }));
            };
            let words = split_words(value).ok_or_else(|| at("a quote is not closed".into()))?;
            if words.is_empty() {
                return Err(at(format!("{key} needs a value")));
            }
            let where_ = format!("{name} line {}", n + 1);
            match key.to_ascii_lowercase().as_str() {
                "host" => *active = !never_match && host_matches(&p.host_lower(), &words),
                "match" => {
                    let m = self.match_line(p, &words, &where_).map_err(at)?;
                    *active = !never_match && m;
                }
                "include" => {
                    if !self.follow_includes {
                        p.notes
                            .push(format!("{where_}: Include is not followed here; skipped"));
                        continue;
                    }
                    let before = *active;
                    for word in &words {
                        for file in self.include_paths(word).map_err(at)? {
                            if depth + 1 > MAX_DEPTH {
                                return Err(at(format!(
                                    "Include nests deeper than {MAX_DEPTH} files"
                                )));
                            }
                            self.files += 1;
                            if self.files > MAX_FILES {
                                return Err(at(format!(
                                    "more than {MAX_FILES} files are included"
                                )));
                            }
                            let shown = file.display().to_string();
                            let cannot_read = |e| at(format!("cannot read {shown}: {e}"));
                            // ssh checks every included file, from `-F` files too.
                            let opened = std::fs::File::open(&file).map_err(cannot_read)?;
                            check_permissions(&opened, &file)?;
                            let text =
                                crate::files::read_text_to_end_bounded(opened, MAX_FILE_BYTES)
                                    .map_err(cannot_read)?;
                            self.text(p, &shown, &text, depth + 1, active, !before)?;
                            *active = before;
                        }
                    }
                }
                _ => {
                    // An inactive block's line is only checked: nothing is obtained from it,
                    // so no ProxyCommand there can be refused.
                    let mut scratch = Parsed {
                        ignore_unknown: p.ignore_unknown.clone(),
                        proxy_command_set: true,
                        ..Parsed::default()
                    };
                    let target = if *active { &mut *p } else { &mut scratch };
                    match config::apply(target, line) {
                        Ok(()) => {}
                        Err(CliError::UnsupportedKey { .. }) => p.notes.push(format!(
                            "{where_}: {key} is not supported by forwarder; ignored"
                        )),
                        // ssh stops at an unknown keyword; the lines after it may well have
                        // been meant for another block, so the user is told, not just -v.
                        Err(CliError::UnknownKey { .. }) => {
                            p.warnings.push(unknown_keyword_warning(&where_, key));
                        }
                        Err(e) => return Err(at(e.to_string())),
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether every criterion of a `Match` line holds. Criteria forwarder cannot evaluate
    /// never match (and are noted); an unknown criterion is an error, as in ssh.
    fn match_line(&self, p: &mut Parsed, words: &[String], where_: &str) -> Result<bool, String> {
        let mut all = true;
        let mut words = words.iter();
        while let Some(word) = words.next() {
            let (negated, attr) = match word.strip_prefix('!') {
                Some(a) => (true, a),
                None => (false, word.as_str()),
            };
            // `criterion=argument` is the same as `criterion argument`, as in ssh.
            let (attr, attached) = match attr.split_once('=') {
                Some((criterion, arg))
                    if MATCH_WITH_ARGUMENT.contains(&criterion.to_ascii_lowercase().as_str()) =>
                {
                    (criterion, Some(arg))
                }
                _ => (attr, None),
            };
            let lower = attr.to_ascii_lowercase();
            let unsupported = |p: &mut Parsed| {
                p.notes.push(format!(
                    "{where_}: Match {attr} is not supported by forwarder; the block does not apply"
                ));
            };
            let hit = match lower.as_str() {
                "all" => true,
                "canonical" | "final" => {
                    unsupported(p);
                    all = false;
                    continue;
                }
                l if MATCH_WITH_ARGUMENT.contains(&l) => {
                    let arg = attached.or_else(|| words.next().map(String::as_str));
                    // As in ssh, only tagged and command may be matched against nothing.
                    let Some(arg) =
                        arg.filter(|a| !a.is_empty() || l == "tagged" || l == "command")
                    else {
                        return Err(format!("Match {attr} needs a value"));
                    };
                    match lower.as_str() {
                        "host" => pattern_list(&p.match_host(), &arg.to_ascii_lowercase()),
                        "originalhost" => pattern_list(&p.host_lower(), &arg.to_ascii_lowercase()),
                        "user" => {
                            let user = p.user.clone().or_else(|| self.env.user.clone());
                            user.is_some_and(|u| pattern_list(&u, arg))
                        }
                        "localuser" => self.env.user.as_ref().is_some_and(|u| pattern_list(u, arg)),
                        _ => {
                            unsupported(p);
                            all = false;
                            continue;
                        }
                    }
                }
                _ => return Err(format!("unknown Match criterion '{attr}'")),
            };
            all &= hit != negated;
        }
        Ok(all)
    }

    /// The files one `Include` word names: `~` expanded, relative to `~/.ssh`, globbed,
    /// sorted. A name that matches nothing is skipped, as in ssh.
    fn include_paths(&self, word: &str) -> Result<Vec<PathBuf>, String> {
        let home = || {
            self.env
                .home
                .clone()
                .ok_or_else(|| format!("cannot expand '~' in Include {word}: $HOME is not set"))
        };
        let path = if word == "~" {
            home()?
        } else if let Some(rest) = word.strip_prefix("~/") {
            home()?.join(rest)
        } else if word.starts_with('/') {
            PathBuf::from(word)
        } else if word.starts_with('~') {
            return Err(format!("Include {word}: only ~ and ~/ are understood"));
        } else {
            home()?.join(".ssh").join(word)
        };
        Ok(glob(&path))
    }
}

impl Parsed {
    fn host_lower(&self) -> String {
        self.host
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    /// What `Match host` compares: `HostName` (with `%h` filled in) if set so far, else the
    /// destination's host.
    fn match_host(&self) -> String {
        let host = self.host_lower();
        match &self.hostname {
            Some(name) => super::env::expand_hostname(name, &host).to_ascii_lowercase(),
            None => host,
        }
    }
}

/// The warning for an unknown keyword. ssh refuses the whole file instead; a keyword close to
/// `Host` or `Match` was probably meant to start a block, and the lines after it have landed
/// in the block above.
fn unknown_keyword_warning(where_: &str, key: &str) -> String {
    let shown = super::shown(key);
    let lower = key.to_ascii_lowercase();
    let meant = ["Host", "Match"]
        .into_iter()
        .find(|k| lower.len() >= 3 && edit_distance(&lower, &k.to_ascii_lowercase()) <= 2);
    match meant {
        Some(block) => format!(
            "{where_}: unknown keyword '{shown}' skipped; if it was meant to be {block}, the \
             lines after it still belong to the block above"
        ),
        None => format!(
            "{where_}: unknown keyword '{shown}' skipped (IgnoreUnknown {shown} silences this)"
        ),
    }
}

/// Levenshtein distance, for keywords (a long one is simply far from a short one).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    if a.chars().count() > b.len() + 2 {
        return 3;
    }
    // `previous[j]`: the distance between the part of `a` seen so far and `b[..j]`.
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous
                .get(j)
                .map_or(usize::MAX, |d| d + usize::from(ca != *cb));
            let delete = previous.get(j + 1).map_or(usize::MAX, |d| d + 1);
            let insert = current.last().map_or(usize::MAX, |d| d + 1);
            current.push(substitute.min(delete).min(insert));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or(0)
}

/// OpenSSH's check of `~/.ssh/config` and included files: owned by the user or root, and
/// writable by neither group nor others. `file` is the opened file, so what is checked is
/// what is read.
#[cfg(unix)]
fn check_permissions(file: &std::fs::File, path: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = file.metadata().map_err(|e| CliError::ConfigFile {
        file: path.display().to_string(),
        line: None,
        message: format!("cannot read its owner and permissions: {e}"),
    })?;
    let me = rustix::process::getuid().as_raw();
    let foreign_owner = match permission_problem(meta.uid(), meta.mode(), me) {
        None => return Ok(()),
        Some(PermissionProblem::ForeignOwner(uid)) => Some(uid),
        Some(PermissionProblem::Writable) => None,
    };
    Err(CliError::ConfigPermissions {
        file: path.display().to_string(),
        foreign_owner,
    })
}

#[cfg(not(unix))]
fn check_permissions(_file: &std::fs::File, _path: &Path) -> Result<(), CliError> {
    Ok(())
}

/// Why a config file may not be read.
#[derive(Debug, PartialEq, Eq)]
enum PermissionProblem {
    /// It belongs to this uid, neither the user nor root.
    ForeignOwner(u32),
    /// Its group or others may write it.
    Writable,
}

/// What is wrong, if anything, with reading a file of this owner and mode as user `me`.
fn permission_problem(owner: u32, mode: u32, me: u32) -> Option<PermissionProblem> {
    if owner != 0 && owner != me {
        Some(PermissionProblem::ForeignOwner(owner))
    } else if mode & 0o022 != 0 {
        Some(PermissionProblem::Writable)
    } else {
        None
    }
}

/// Cuts a comment that starts a word (`Port 22 # note`); `#` inside a word or quotes stays.
fn strip_comment(line: &str) -> &str {
    if line.starts_with('#') {
        return "";
    }
    let mut quote = None;
    let mut prev_blank = false;
    for (i, c) in line.char_indices() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            ('#', None) if prev_blank => return line.get(..i).unwrap_or(line).trim_end(),
            _ => {}
        }
        prev_blank = c == ' ' || c == '\t';
    }
    line
}

/// A `Host` line: some pattern matches and no negated one does.
fn host_matches(host: &str, words: &[String]) -> bool {
    let mut hit = false;
    for word in words {
        let (negated, pattern) = match word.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, word.as_str()),
        };
        if wildcard(&pattern.to_ascii_lowercase(), host) {
            if negated {
                return false;
            }
            hit = true;
        }
    }
    hit
}

/// A comma-separated pattern list (`a*,!ab`): some pattern matches and no negated one does.
pub(super) fn pattern_list(text: &str, list: &str) -> bool {
    let mut hit = false;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if wildcard(pattern, text) {
            if negated {
                return false;
            }
            hit = true;
        }
    }
    hit
}

/// `*` matches any run of characters, `?` any one; everything else matches itself.
pub(super) fn wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for the end of.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

/// The regular files a path with `*` and `?` in any component names, sorted; a path
/// without wildcards names itself if it exists. Hidden entries match only a pattern that
/// starts with `.`.
fn glob(path: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for part in path.components() {
        let text = part.as_os_str().to_string_lossy();
        if !text.contains(['*', '?']) {
            for f in &mut found {
                f.push(part);
            }
            continue;
        }
        let mut next = Vec::new();
        for dir in &found {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .take(4 * MAX_FILES)
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| (text.starts_with('.') || !n.starts_with('.')) && wildcard(&text, n))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
            if next.len() > MAX_FILES {
                break;
            }
        }
        found = next;
    }
    found.retain(|f| f.is_file());
    found.truncate(MAX_FILES + 1);
    found
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::{Command, Options, parse_args_with_config_text, parse_args_with_env};
    use super::*;

    fn env_at(home: &Path) -> Environment {
        Environment {
            home: Some(home.to_owned()),
            user: Some("tester".into()),
            cache_home: None,
        }
    }

    fn fixed_env() -> Environment {
        env_at(Path::new("/home/tester"))
    }

    fn with_text(args: &[&str], text: &str) -> Result<Options, String> {
        match parse_args_with_config_text(args.iter().copied(), &fixed_env(), text) {
            Ok(Command::Run(o)) => Ok(o),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    fn ok(args: &[&str], text: &str) -> Options {
        with_text(args, text).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Writes a config file that passes ssh's permission check whatever the umask.
    fn write_config(path: impl AsRef<Path>, text: &str) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
    }

    #[test]
    fn permissions_ssh_accepts() {
        use PermissionProblem::{ForeignOwner, Writable};
        assert_eq!(permission_problem(1000, 0o100600, 1000), None);
        assert_eq!(permission_problem(1000, 0o100644, 1000), None);
        assert_eq!(permission_problem(0, 0o100644, 1000), None, "root's");
        assert_eq!(permission_problem(1000, 0o100664, 1000), Some(Writable));
        assert_eq!(permission_problem(1000, 0o100602, 1000), Some(Writable));
        assert_eq!(permission_problem(0, 0o100646, 0), Some(Writable));
        assert_eq!(
            permission_problem(1001, 0o100600, 1000),
            Some(ForeignOwner(1001))
        );
        let e = CliError::ConfigPermissions {
            file: "/h/.ssh/config".into(),
            foreign_owner: Some(1001),
        };
        assert!(e.to_string().contains("uid 1001"), "{e}");
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("hots", "host"), 2);
        assert_eq!(edit_distance("hst", "host"), 1);
        assert_eq!(edit_distance("mtach", "match"), 2);
        assert_eq!(edit_distance("", "ab"), 2);
        assert!(edit_distance("usekeychain", "host") > 2);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*", ""));
        assert!(wildcard("*.example.com", "db.example.com"));
        assert!(!wildcard("*.example.com", "example.com"));
        assert!(wildcard("db?", "db1"));
        assert!(!wildcard("db?", "db"));
        assert!(wildcard("a*b*c", "axxbyyc"));
        assert!(!wildcard("a*b*c", "axxbyy"));
        assert!(wildcard("**", "x"));
        assert!(!wildcard("", "x"));
        assert!(pattern_list("db1", "db*,!db2"));
        assert!(!pattern_list("db2", "db*,!db2"));
        assert!(!pattern_list("web", "db*,!db2"));
        assert!(!pattern_list("x", "!y"), "a negation alone matches nothing");
    }

    #[test]
    fn host_alias_gives_hostname_port_user_and_files() {
        let text = "\
# a comment
Host db-bastion bastion2
    HostName bastion.example.com
    Port 2222
    User analytics
    IdentityFile ~/.ssh/%h_%r_%p
    UserKnownHostsFile %d/kh/%n
    LocalForward 15432 db.internal:5432

Host *
    Port 22
    User nobody
";
        let o = ok(&["db-bastion"], text);
        assert_eq!(o.destination_host, "bastion.example.com");
        assert_eq!(o.original_host, "db-bastion");
        assert_eq!(o.port, 2222);
        assert_eq!(o.user, "analytics");
        assert_eq!(
            o.identity_files,
            vec![PathBuf::from(
                "/home/tester/.ssh/bastion.example.com_analytics_2222"
            )]
        );
        assert_eq!(
            o.user_known_hosts_files,
            vec![PathBuf::from("/home/tester/kh/db-bastion")]
        );
        assert_eq!(o.local_forwards.len(), 1);
        assert_eq!(o.local_forwards[0].port(), Some(15432));
        let other = ok(&["elsewhere"], text);
        assert_eq!((other.port, other.user.as_str()), (22, "nobody"));
        assert_eq!(other.destination_host, "elsewhere");
        assert!(other.local_forwards.is_empty());
    }

    #[test]
    fn command_line_wins_and_lists_accumulate() {
        let text = "Host h\n Port 2222\n User fromfile\n IdentityFile ~/file_key\n \
                    LocalForward 1000 a:1\n";
        let o = ok(
            &["-p", "7", "-i", "/cli_key", "-L", "2000:b:2", "bob@h"],
            text,
        );
        assert_eq!(o.port, 7);
        assert_eq!(o.user, "bob");
        assert_eq!(
            o.identity_files,
            vec![
                PathBuf::from("/cli_key"),
                PathBuf::from("/home/tester/file_key")
            ]
        );
        assert_eq!(o.local_forwards.len(), 2);
        assert_eq!(o.local_forwards[0].port(), Some(2000));
        let o = ok(&["-o", "Port=9", "h"], text);
        assert_eq!(o.port, 9);
        // In the file, the first value obtained wins too.
        let o = ok(&["h"], "Port 1\nPort 2\nHost h\nPort 3\n");
        assert_eq!(o.port, 1);
    }

    #[test]
    fn host_negation_and_case() {
        let text = "Host *.example.com !secret.example.com\n Port 2000\nHost *\n Port 3000\n";
        assert_eq!(ok(&["DB.Example.com"], text).port, 2000);
        assert_eq!(ok(&["secret.example.com"], text).port, 3000);
        assert_eq!(ok(&["example.com"], text).port, 3000);
    }

    #[test]
    fn match_host_user_and_others() {
        let text = "\
Host alias
    HostName real.example.com
Match host real.example.com user admin
    Port 1111
Match originalhost alias
    Port 2222
Match !host *.example.com localuser tester
    Port 3333
Match exec \"true\"
    Port 4444
Match all
    Port 5555
";
        assert_eq!(ok(&["admin@alias"], text).port, 1111);
        assert_eq!(ok(&["alias"], text).port, 2222, "user is tester");
        assert_eq!(ok(&["other"], text).port, 3333);
        assert_eq!(ok(&["x.example.com"], text).port, 5555);
        let o = ok(&["x.example.com"], text);
        assert!(
            o.notes
                .iter()
                .any(|n| n.contains("config line 9") && n.contains("exec")),
            "{:?}",
            o.notes
        );
        let e = with_text(&["h"], "Match bogus x\n").unwrap_err();
        assert!(e.contains("config line 1") && e.contains("bogus"), "{e}");
        let e = with_text(&["h"], "Match host\n").unwrap_err();
        assert!(e.contains("needs a value"), "{e}");
        assert_eq!(
            ok(&["h"], "Match final\nPort 1\nMatch canonical all\nPort 2\n").port,
            22
        );
    }

    #[test]
    fn syntax_comments_quotes_and_unsupported_keys() {
        let text = "\
  # indented comment
HOST=h
  port=2222   # trailing comment
  IdentityFile \"/path with space/key#1\"
  ForwardAgent yes
  UseKeychain yes
  proxycommand NONE
";
        let o = ok(&["h"], text);
        assert_eq!(o.port, 2222);
        assert_eq!(
            o.identity_files,
            vec![PathBuf::from("/path with space/key#1")]
        );
        assert_eq!(o.notes.len(), 1, "{:?}", o.notes);
        assert!(o.notes[0].contains("config line 5"), "{:?}", o.notes);
        assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);
        assert!(o.warnings[0].contains("config line 6: unknown keyword 'UseKeychain'"));
    }

    #[test]
    fn bad_values_name_the_line_even_in_other_blocks() {
        let e = with_text(&["h"], "Host h\n Port 22\n\nHost other\n Port abc\n").unwrap_err();
        assert!(e.starts_with("config line 5: bad port 'abc'"), "{e}");
        let e = with_text(&["h"], "Port\n").unwrap_err();
        assert_eq!(e, "config line 1: Port needs a value");
        let e = with_text(&["h"], "Host h\nUser \"open\n").unwrap_err();
        assert_eq!(e, "config line 2: a quote is not closed");
        let e = with_text(&["h"], "Host\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn files_includes_and_dash_f() {
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        std::fs::create_dir_all(ssh.join("conf.d")).unwrap();
        write_config(
            ssh.join("config"),
            "Include conf.d/*.conf\nHost h\n Port 1\n User fromconfig\n",
        )
        .unwrap();
        write_config(ssh.join("conf.d/b.conf"), "Host h\n Port 2\n").unwrap();
        write_config(
            ssh.join("conf.d/a.conf"),
            "Host h\n User fromA\nHost other\n Port 3\n",
        )
        .unwrap();
        write_config(ssh.join("conf.d/.hidden.conf"), "Port 4\n").unwrap();
        let env = env_at(home.path());
        let run = |args: &[&str]| match parse_args_with_env(args.iter().copied(), &env) {
            Ok(Command::Run(o)) => Ok(o),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        let o = run(&["h"]).unwrap();
        assert_eq!((o.port, o.user.as_str()), (2, "fromA"));
        // The block after an Include in an inactive block is not switched on by it.
        let o = run(&["other"]).unwrap();
        assert_eq!(o.port, 3);
        // -F none reads nothing; -F file reads that file instead.
        let o = run(&["-F", "none", "h"]).unwrap();
        assert_eq!((o.port, o.user.as_str()), (22, "tester"));
        let alt = home.path().join("alt");
        write_config(&alt, "Host h\n Port 5\n").unwrap();
        let o = run(&["-F", alt.to_str().unwrap(), "h"]).unwrap();
        assert_eq!(o.port, 5);
        let e = run(&["-F", "/nonexistent/config", "h"]).unwrap_err();
        assert!(e.starts_with("/nonexistent/config: cannot read it"), "{e}");
        // Includes that loop stop at the depth limit with an error naming the line.
        write_config(&alt, "Include ~/alt\n").unwrap();
        let e = run(&["-F", alt.to_str().unwrap(), "h"]).unwrap_err();
        assert!(e.contains("line 1: Include nests deeper than 16"), "{e}");
        // An Include that names nothing is skipped.
        write_config(&alt, "Include nothing_here*\nPort 6\n").unwrap();
        assert_eq!(run(&["-F", alt.to_str().unwrap(), "h"]).unwrap().port, 6);
        // No ~/.ssh/config at all is fine.
        let empty = tempfile::tempdir().unwrap();
        let env = env_at(empty.path());
        assert!(matches!(
            parse_args_with_env(["h"], &env),
            Ok(Command::Run(o)) if o.port == 22
        ));
    }

    const JUMP_CONFIG: &str = "\
Host db
    HostName db.internal
    ProxyJump jump
    HostKeyAlias db-key
    IdentityFile ~/.ssh/db_%k
Host jump
    HostName jump.example.com
    Port 2200
    User hopper
    IdentityFile ~/.ssh/jump_%r_%p
    UserKnownHostsFile ~/.ssh/jump_known_hosts
    HostKeyAlias jump-key
Host outer
    Port 2300
Host inner
    ProxyJump outer
Host loop1
    ProxyJump loop2
Host loop2
    ProxyJump loop1
Host *
    User everyone
";

    fn hops(o: &Options) -> Vec<(String, String, u16)> {
        o.proxy_jump
            .iter()
            .map(|j| (j.user.clone(), j.host.clone(), j.port))
            .collect()
    }

    #[test]
    fn jump_hosts_are_looked_up_under_their_own_names() {
        let o = ok(&["db"], JUMP_CONFIG);
        assert_eq!(o.destination_host, "db.internal");
        assert_eq!(o.host_key_alias.as_deref(), Some("db-key"));
        assert_eq!(
            o.identity_files,
            vec![PathBuf::from("/home/tester/.ssh/db_db-key")]
        );
        assert_eq!(
            hops(&o),
            [("hopper".into(), "jump.example.com".into(), 2200)]
        );
        let jump = &o.proxy_jump[0].options;
        assert_eq!(jump.original_host, "jump");
        assert_eq!(jump.host_key_alias.as_deref(), Some("jump-key"));
        assert_eq!(
            jump.identity_files,
            vec![PathBuf::from("/home/tester/.ssh/jump_hopper_2200")]
        );
        assert_eq!(
            jump.user_known_hosts_files,
            vec![PathBuf::from("/home/tester/.ssh/jump_known_hosts")]
        );
        assert!(jump.proxy_jump.is_empty());
        // The destination's known_hosts are the default, not the jump host's.
        assert_eq!(
            o.user_known_hosts_files,
            vec![
                PathBuf::from("/home/tester/.ssh/known_hosts"),
                PathBuf::from("/home/tester/.ssh/known_hosts2")
            ]
        );
        // -J names the same block; its user@ and :port win over the block's.
        let o = ok(&["-J", "root@jump:22", "other"], JUMP_CONFIG);
        assert_eq!(hops(&o), [("root".into(), "jump.example.com".into(), 22)]);
        assert_eq!(o.user, "everyone");
    }

    #[test]
    fn command_line_jump_overrides_the_file_and_none_turns_it_off() {
        assert_eq!(
            hops(&ok(&["-J", "outer", "db"], JUMP_CONFIG)),
            [("everyone".into(), "outer".into(), 2300)]
        );
        assert!(ok(&["-J", "none", "db"], JUMP_CONFIG).proxy_jump.is_empty());
        assert!(
            ok(&["-o", "ProxyJump=none", "db"], JUMP_CONFIG)
                .proxy_jump
                .is_empty()
        );
        let text = format!("Host db\n ProxyJump none\n{JUMP_CONFIG}");
        assert!(ok(&["db"], &text).proxy_jump.is_empty());
    }

    #[test]
    fn a_hop_s_own_proxy_jump_adds_hops_before_it() {
        // The first hop's ProxyJump applies (ssh runs it without -J) ...
        assert_eq!(
            hops(&ok(&["-J", "inner", "h"], JUMP_CONFIG)),
            [
                ("everyone".into(), "outer".into(), 2300),
                ("everyone".into(), "inner".into(), 22)
            ]
        );
        // ... a later hop's does not: the hops before it are its -J.
        assert_eq!(
            hops(&ok(&["-J", "jump,inner", "h"], JUMP_CONFIG)),
            [
                ("hopper".into(), "jump.example.com".into(), 2200),
                ("everyone".into(), "inner".into(), 22)
            ]
        );
        let e = with_text(&["loop1"], JUMP_CONFIG).unwrap_err();
        assert!(e.contains("at most 16 jump hosts"), "{e}");
    }

    #[test]
    fn hops_fall_back_on_the_command_line_s_general_options() {
        let text = "Host j2\n IdentityFile ~/j2_key\n StrictHostKeyChecking yes\n";
        let o = ok(
            &[
                "-i",
                "/cli_key",
                "-p",
                "2022",
                "-l",
                "dbuser",
                "-o",
                "UserKnownHostsFile=/kh",
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "HostKeyAlias=dest",
                "-C",
                "-J",
                "j1,j2",
                "h",
            ],
            text,
        );
        let (j1, j2) = (&o.proxy_jump[0].options, &o.proxy_jump[1].options);
        assert_eq!(j1.identity_files, vec![PathBuf::from("/cli_key")]);
        assert_eq!(
            j2.identity_files,
            vec![
                PathBuf::from("/home/tester/j2_key"),
                PathBuf::from("/cli_key")
            ]
        );
        for j in [j1, j2] {
            assert_eq!(j.user_known_hosts_files, vec![PathBuf::from("/kh")]);
            assert!(j.compression);
            assert_eq!((j.port, j.user.as_str()), (22, "tester"));
            assert_eq!(j.host_key_alias, None);
        }
        assert_eq!(
            j1.strict_host_key_checking,
            crate::cli::StrictHostKeyChecking::AcceptNew
        );
        // The hop's own block wins over the command line.
        assert_eq!(
            j2.strict_host_key_checking,
            crate::cli::StrictHostKeyChecking::Yes
        );
        assert_eq!(o.host_key_alias.as_deref(), Some("dest"));
    }

    #[test]
    fn ignore_unknown_silences_notes_and_warnings_for_its_keywords() {
        let text = "\
IgnoreUnknown usekeychain,forward*
Host h
    UseKeychain yes
    ForwardAgent yes
    AddKeysToAgent yes
    Bogus 1
";
        let o = ok(&["h"], text);
        assert_eq!(o.notes.len(), 1, "{:?}", o.notes);
        assert!(o.notes[0].contains("AddKeysToAgent is not supported"));
        assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);
        assert!(o.warnings[0].contains("unknown keyword 'Bogus'"));
        // The first IgnoreUnknown wins; lines before it are warned about.
        let o = ok(
            &["h"],
            "UseKeychain yes\nIgnoreUnknown UseKeychain\nIgnoreUnknown Bogus\nBogus 1\n",
        );
        assert_eq!(o.warnings.len(), 2, "{:?}", o.warnings);
        // On the command line, an unknown -o is an error unless IgnoreUnknown names it.
        assert!(with_text(&["-o", "UseKeychain=yes", "h"], "").is_err());
        let o = ok(
            &[
                "-o",
                "IgnoreUnknown=UseKeychain",
                "-o",
                "UseKeychain=yes",
                "h",
            ],
            "",
        );
        assert!(o.notes.is_empty(), "{:?}", o.notes);
    }

    #[test]
    fn more_percent_tokens_and_unknown_ones() {
        let text = "\
Host h
    HostName real.example.com
    HostKeyAlias alias
    ProxyJump jumper
    IdentityFile ~/%k_%n_%j_%i
    CertificateFile ~/%l/%L/%C
";
        let o = ok(&["h"], text);
        let local = super::super::env::LocalHost::get();
        let uid = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap();
        assert_eq!(
            o.identity_files,
            vec![PathBuf::from(format!("/home/tester/alias_h_jumper_{uid}"))]
        );
        let cert = o.certificate_files[0].to_str().unwrap().to_owned();
        let parts: Vec<&str> = cert.rsplitn(3, '/').collect();
        assert_eq!(parts[0].len(), 40, "{cert}");
        assert!(parts[0].bytes().all(|b| b.is_ascii_hexdigit()), "{cert}");
        assert!(!parts[1].contains('.'), "{cert}");
        assert!(parts[2].ends_with(local.name()), "{cert}");
        // %k without an alias is the host as given.
        let o = ok(&["h2"], "IdentityFile /k/%k\nHostName x.example\n");
        assert_eq!(o.identity_files, vec![PathBuf::from("/k/h2")]);
        let e = with_text(&["h"], "IdentityFile ~/%x\n").unwrap_err();
        assert!(e.contains("unknown token '%x'"), "{e}");
    }
}
