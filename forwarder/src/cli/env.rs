//! Defaults from the environment, and `~` / `${VAR}` / `%`-token expansion in paths.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::known_hosts::command::{KnownHostsCommand, Piece};

use super::{
    CliError, DEFAULT_RECONNECT_BACKOFF_MAX, DEFAULT_SERVER_ALIVE_INTERVAL,
    DEFAULT_SESSION_WAIT_TIMEOUT, Destination, ForwardSpec, IdentityAgent, Listen, Options, Parsed,
    StrictHostKeyChecking,
};

/// What defaults are taken from. Tests build one by hand; the program uses
/// [`Environment::from_process`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// The home directory `~` stands for.
    pub home: Option<PathBuf>,
    /// The local user name: the default remote user and `%u`.
    pub user: Option<String>,
    /// `$XDG_CACHE_HOME` when set to an absolute path: where the default KexGuessFile lives
    /// (else `~/.cache`).
    pub cache_home: Option<PathBuf>,
}

impl Environment {
    /// `$HOME` and `$USER` (then `$LOGNAME`); where those are unset or empty, the current
    /// user's entry in /etc/passwd.
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let mut home = var("HOME").map(PathBuf::from);
        let mut user = var("USER")
            .or_else(|| var("LOGNAME"))
            .and_then(|u| u.into_string().ok());
        if (home.is_none() || user.is_none())
            && let Some((name, dir)) = passwd_entry()
        {
            user = user.or(Some(name));
            home = home.or(Some(dir));
        }
        let cache_home = var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute());
        Self {
            home,
            user,
            cache_home,
        }
    }
}

/// The current user's name and home directory from /etc/passwd, found by uid. The uid is the
/// owner of /proc/self, which avoids calling into libc.
#[cfg(unix)]
fn passwd_entry() -> Option<(String, PathBuf)> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let mut text = String::new();
    // A passwd file is small; the bound keeps a strange one from exhausting memory.
    std::fs::File::open("/etc/passwd")
        .ok()?
        .take(16 << 20)
        .read_to_string(&mut text)
        .ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        (fields.next()? == uid).then_some(())?;
        let dir = fields.nth(2)?;
        Some((name.to_owned(), PathBuf::from(dir)))
    })
}

#[cfg(not(unix))]
fn passwd_entry() -> Option<(String, PathBuf)> {
    None
}

/// Where `${NAME}` in a path gets its value: this process's environment in the program, a
/// fixed set in tests (which cannot change the process's own safely).
pub(super) type Variables<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// An environment variable of this process, for [`Variables`].
pub(super) fn process_variable(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// Fills in defaults and expands paths.
pub(super) fn resolve(
    p: Parsed,
    env: &Environment,
    variables: Variables<'_>,
) -> Result<Options, CliError> {
    let original_host = p.host.ok_or(CliError::MissingDestination)?;
    let user = p
        .user
        .or_else(|| env.user.clone())
        .ok_or(CliError::NoUser)?;
    let port = p.port.unwrap_or(22);
    let destination_host = match &p.hostname {
        Some(name) => {
            let expanded = expand_hostname(name, &original_host);
            super::destination::check_host(&expanded).map_err(|_| CliError::BadValue {
                key: "HostName".into(),
                value: expanded.clone(),
                expected: "a host name or address once %h is replaced",
            })?
        }
        None => original_host.clone(),
    }
    .to_ascii_lowercase();
    // ssh's %j: the host part of the last jump host, as written.
    let jump_host = p
        .proxy_jump
        .as_ref()
        .and_then(|hops| hops.last())
        .map(|hop| hop.host.clone())
        .unwrap_or_default();
    let local = LocalHost::get();
    let tokens = Tokens {
        env,
        host: &destination_host,
        original_host: &original_host,
        port,
        remote_user: &user,
        key_alias: p.host_key_alias.as_deref().unwrap_or(&original_host),
        jump_host: &jump_host,
        local: &local,
        variables,
    };
    let default_identity_files = p.identity_files.is_empty();
    let identity_files = if default_identity_files {
        vec!["~/.ssh/id_ed25519".to_owned(), "~/.ssh/id_rsa".to_owned()]
    } else {
        p.identity_files
    };
    // These four take `${VAR}` as well as `%` tokens, as in ssh (OpenSSH 8.4 and later).
    let identity_files = identity_files
        .iter()
        .map(|f| tokens.expand_path_and_variables(f))
        .collect::<Result<Vec<_>, _>>()?;
    // As in ssh: on by default only for the default known_hosts files, which are the user's
    // own; a file given is often one someone else keeps.
    let update_host_keys = p.update_host_keys.unwrap_or(p.known_hosts_files.is_none());
    let user_known_hosts_files = p
        .known_hosts_files
        .unwrap_or_else(|| {
            vec![
                "~/.ssh/known_hosts".to_owned(),
                "~/.ssh/known_hosts2".to_owned(),
            ]
        })
        .iter()
        .map(|f| tokens.expand_path_and_variables(f))
        .collect::<Result<Vec<_>, _>>()?;
    // ssh expands only `~` here, no tokens or variables.
    let global_known_hosts_files = p
        .global_known_hosts_files
        .unwrap_or_else(|| {
            vec![
                "/etc/ssh/ssh_known_hosts".to_owned(),
                "/etc/ssh/ssh_known_hosts2".to_owned(),
            ]
        })
        .iter()
        .map(|f| tokens.expand_tilde(f))
        .collect::<Result<Vec<_>, _>>()?;
    // ssh expands `~`, `%` tokens and `${VAR}` here (OpenSSH 8.4 and later).
    let revoked_host_keys = p
        .revoked_host_keys
        .unwrap_or_default()
        .iter()
        .map(|f| tokens.expand_path_and_variables(f))
        .collect::<Result<Vec<_>, _>>()?;
    // ssh expands `%` tokens and `${VAR}` in the arguments, not in the program.
    let known_hosts_command = match p.known_hosts_command.flatten() {
        None => None,
        Some(words) => {
            let mut words = words.iter();
            let program = PathBuf::from(words.next().map_or("", String::as_str));
            let args = words
                .map(|w| tokens.expand_command_argument(w))
                .collect::<Result<Vec<_>, _>>()?;
            Some(KnownHostsCommand { program, args })
        }
    };
    // ssh expands `~`, `%` tokens and `${VAR}` in a forward's socket paths, both sides
    // (OpenSSH 8.4 and later).
    let local_forwards = p
        .local_forwards
        .into_iter()
        .map(|f| {
            let flag = f.flag();
            expand_socket_paths(f, flag, &tokens)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let remote_forwards = p
        .remote_forwards
        .into_iter()
        .map(|f| expand_socket_paths(f, "-R", &tokens))
        .collect::<Result<Vec<_>, _>>()?;
    let certificate_files = p
        .certificate_files
        .iter()
        .map(|f| tokens.expand_path_and_variables(f))
        .collect::<Result<Vec<_>, _>>()?;
    let identity_agent = match p.identity_agent.as_deref() {
        None => IdentityAgent::AuthSock,
        Some(v) if v.eq_ignore_ascii_case("none") => IdentityAgent::None,
        Some("SSH_AUTH_SOCK") => IdentityAgent::AuthSock,
        // The older form, `$VAR` alone: the socket is wherever that variable says when the
        // agent is asked. `${VAR}` is expanded like any path below.
        Some(v) if v.starts_with('$') && !v.starts_with("${") => {
            let name = v.trim_start_matches('$');
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(CliError::BadValue {
                    key: "IdentityAgent".into(),
                    value: v.to_owned(),
                    expected: "a socket path (with ${VARIABLE} and % tokens), SSH_AUTH_SOCK, \
                               $VARIABLE or none",
                });
            }
            IdentityAgent::Env(name.to_owned())
        }
        Some(v) => IdentityAgent::Path(tokens.expand_path_and_variables(v)?),
    };
    // ssh expands `~`, `%` tokens and `${VAR}` in ControlPath.
    let control_path = p
        .control_path
        .clone()
        .flatten()
        .map(|v| tokens.expand_path_and_variables(&v))
        .transpose()?;
    let password_file = p
        .password_file
        .as_deref()
        .map(|f| tokens.expand_path(f))
        .transpose()?;
    let passphrase_file = p
        .passphrase_file
        .as_deref()
        .map(|f| tokens.expand_path(f))
        .transpose()?;
    let kex_guess_file = match p.kex_guess_file.as_deref() {
        Some(v) if v.eq_ignore_ascii_case("none") => None,
        Some(v) => Some(tokens.expand_path(v)?),
        // A cache: without a place for it, the choices stay in memory.
        None => env
            .cache_home
            .clone()
            .or_else(|| env.home.as_ref().map(|h| h.join(".cache")))
            .map(|dir| dir.join("forwarder").join("kex_firsts")),
    };
    Ok(Options {
        destination_host,
        original_host,
        port,
        user,
        identity_files,
        default_identity_files,
        local_forwards,
        remote_forwards,
        // Filled in by the caller, each hop looked up in ssh_config (see `jump`).
        proxy_jump: Vec::new(),
        stdio_forward: p.stdio_forward,
        log_level: p.flag_log_level.or(p.log_level).unwrap_or_default(),
        user_known_hosts_files,
        global_known_hosts_files,
        revoked_host_keys,
        known_hosts_command,
        fork_after_authentication: p.fork_after_authentication.unwrap_or(false),
        control_master: p.control_master.unwrap_or_default(),
        control_persist: p.control_persist.unwrap_or_default(),
        control_path,
        control_command: p.control_command,
        log_file: p.log_file.map(PathBuf::from),
        print_config: p.print_config,
        strict_host_key_checking: p.strict.unwrap_or(StrictHostKeyChecking::Yes),
        host_key_alias: p.host_key_alias,
        ciphers: p.flag_ciphers.or(p.ciphers),
        kex_algorithms: p.kex_algorithms,
        macs: p.flag_macs.or(p.macs),
        pubkey_accepted_algorithms: p.pubkey_accepted_algorithms,
        host_key_algorithms: p.host_key_algorithms,
        connect_timeout: p.connect_timeout.flatten(),
        server_alive_interval: p
            .server_alive_interval
            .unwrap_or(Some(DEFAULT_SERVER_ALIVE_INTERVAL)),
        server_alive_count_max: p.server_alive_count_max.unwrap_or(3),
        exit_on_forward_failure: p.exit_on_forward_failure.unwrap_or(false),
        bind_address: p.bind_address,
        bind_interface: p.bind_interface,
        update_host_keys,
        connection_attempts: p.connection_attempts.unwrap_or(1),
        permit_remote_open: p.permit_remote_open.unwrap_or_default(),
        batch_mode: p.batch_mode.unwrap_or(false),
        rekey_limit: p.rekey_limit,
        tcp_keep_alive: p.tcp_keep_alive.unwrap_or(true),
        reconnect: p.reconnect.unwrap_or(true),
        reconnect_backoff_max: p
            .reconnect_backoff_max
            .unwrap_or(DEFAULT_RECONNECT_BACKOFF_MAX),
        session_wait_timeout: p
            .session_wait_timeout
            .unwrap_or(DEFAULT_SESSION_WAIT_TIMEOUT),
        compression: p.compression.unwrap_or(false),
        gateway_ports: p.gateway_ports.unwrap_or(false),
        stream_local_bind_mask: p
            .stream_local_bind_mask
            .unwrap_or(crate::local::DEFAULT_BIND_MASK),
        stream_local_bind_unlink: p.stream_local_bind_unlink.unwrap_or(false),
        address_family: p
            .flag_address_family
            .or(p.address_family)
            .unwrap_or_default(),
        hash_known_hosts: p.hash_known_hosts.unwrap_or(false),
        identity_agent,
        identities_only: p.identities_only.unwrap_or(false),
        certificate_files,
        pubkey_authentication: p.pubkey_authentication.unwrap_or(true),
        password_authentication: p.password_authentication.unwrap_or(true),
        kbd_interactive_authentication: p.kbd_interactive_authentication.unwrap_or(true),
        number_of_password_prompts: p.number_of_password_prompts.unwrap_or(3),
        preferred_authentications: p.preferred_authentications,
        password_file,
        password_env: p.password_env,
        passphrase_file,
        passphrase_env: p.passphrase_env,
        kex_guess_file,
        warnings: p.warnings,
        notes: p.notes,
    })
}

/// HostName knows two tokens: `%h` (the destination's host) and `%%`.
pub(super) fn expand_hostname(pattern: &str, host: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + host.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('%', Some('h')) => {
                out.push_str(host);
                chars.next();
            }
            ('%', Some('%')) => {
                out.push('%');
                chars.next();
            }
            (c, _) => out.push(c),
        }
    }
    out
}

/// This machine's name and the user's uid, for `%l`, `%L`, `%i` and `%C`.
pub(super) struct LocalHost {
    /// The host name (`%l`).
    name: String,
    /// The uid (`%i`), if known.
    uid: Option<u32>,
}

impl LocalHost {
    /// The host name.
    #[cfg(test)]
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The kernel's host name and the owner of this process.
    pub(super) fn get() -> Self {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty() && n.len() <= 255)
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|n| n.len() <= 255))
            .unwrap_or_else(|| "localhost".to_owned());
        Self {
            name,
            uid: process_uid(),
        }
    }
}

#[cfg(unix)]
fn process_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

#[cfg(not(unix))]
fn process_uid() -> Option<u32> {
    None
}

/// A forward with `~`, `%` tokens and `${VAR}` expanded in its socket paths, which must
/// still fit a socket address once expanded.
fn expand_socket_paths(
    mut f: ForwardSpec,
    form: &'static str,
    tokens: &Tokens<'_>,
) -> Result<ForwardSpec, CliError> {
    let given = f.to_string();
    let too_long = |path: &str| CliError::BadForward {
        spec: given.clone(),
        form,
        why: format!(
            "the socket path {path:?} is {} bytes long once expanded, more than a Unix socket \
             path can be ({})",
            path.len(),
            super::forward::MAX_SOCKET_PATH
        ),
    };
    if let Listen::Path(path) = &f.listen {
        let expanded = tokens.expand_path_and_variables(&path.to_string_lossy())?;
        if expanded.as_os_str().len() > super::forward::MAX_SOCKET_PATH {
            return Err(too_long(&expanded.to_string_lossy()));
        }
        f.listen = Listen::Path(expanded);
    }
    if let Destination::Unix(path) = &f.to {
        let expanded = tokens.expand_path_and_variables(path)?;
        let expanded = expanded.to_string_lossy().into_owned();
        if expanded.len() > super::forward::MAX_SOCKET_PATH {
            return Err(too_long(&expanded));
        }
        f.to = Destination::Unix(expanded);
    }
    Ok(f)
}

struct Tokens<'a> {
    env: &'a Environment,
    host: &'a str,
    original_host: &'a str,
    port: u16,
    remote_user: &'a str,
    key_alias: &'a str,
    jump_host: &'a str,
    local: &'a LocalHost,
    variables: Variables<'a>,
}

impl Tokens<'_> {
    /// [`Self::expand_path`], and `${NAME}` becomes the environment variable's value (not
    /// itself expanded further), as OpenSSH does in IdentityFile, CertificateFile,
    /// UserKnownHostsFile and IdentityAgent. An unset variable is an error naming it.
    fn expand_path_and_variables(&self, raw: &str) -> Result<PathBuf, CliError> {
        self.expand(raw, true)
    }

    /// `~` or `~/...` becomes the home directory; then the tokens OpenSSH expands in
    /// IdentityFile, UserKnownHostsFile, CertificateFile and IdentityAgent are replaced: `%%`,
    /// `%C` (hash of `%l%h%p%r%j`), `%d` (home), `%h` (host), `%i` (uid), `%j` (last jump
    /// host), `%k` (HostKeyAlias, else the host as given), `%L` (local host name without its
    /// domain), `%l` (local host name), `%n` (host as given), `%p` (port), `%r` (remote user)
    /// and `%u` (local user). Any other token is an error.
    fn expand_path(&self, raw: &str) -> Result<PathBuf, CliError> {
        self.expand(raw, false)
    }

    /// `~` or `~/...` becomes the home directory, and nothing else is replaced (what ssh does
    /// to GlobalKnownHostsFile).
    fn expand_tilde(&self, raw: &str) -> Result<PathBuf, CliError> {
        let (prefix, rest) = self.split_home(raw)?;
        Ok(PathBuf::from(prefix + rest))
    }

    /// The home directory a path starts with (`~` or `~/`), expanded, and the rest.
    fn split_home<'r>(&self, raw: &'r str) -> Result<(String, &'r str), CliError> {
        let bad = |why: String| CliError::BadPath {
            path: raw.to_owned(),
            why,
        };
        if raw.is_empty() {
            return Err(bad("the path is empty".into()));
        }
        let home = || {
            self.env
                .home
                .as_ref()
                .map(|h| h.to_string_lossy().into_owned())
                .ok_or_else(|| CliError::NoHome {
                    path: raw.to_owned(),
                })
        };
        if raw == "~" {
            Ok((home()?, ""))
        } else if let Some(rest) = raw.strip_prefix("~/") {
            Ok((home()?.trim_end_matches('/').to_owned() + "/", rest))
        } else if raw.starts_with('~') {
            Err(bad(
                "only ~ and ~/ are understood, not ~user; give the full path".into(),
            ))
        } else {
            Ok((String::new(), raw))
        }
    }

    fn expand(&self, raw: &str, with_variables: bool) -> Result<PathBuf, CliError> {
        let (prefix, rest) = self.split_home(raw)?;
        let mut out = prefix;
        self.expand_into(&mut out, rest, raw, with_variables, None)?;
        Ok(PathBuf::from(out))
    }

    /// One of `KnownHostsCommand`'s arguments: `${NAME}` and the connection's tokens replaced
    /// now (no `~`, as ssh), and `%H`, `%I`, `%t`, `%f` and `%K`, which are only known when it
    /// runs, kept as pieces.
    fn expand_command_argument(&self, raw: &str) -> Result<Vec<Piece>, CliError> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut runtime = Vec::new();
        self.expand_into(&mut text, raw, raw, true, Some(&mut runtime))?;
        // `expand_into` left a NUL where each runtime token was; no argument can hold one.
        let mut runtime = runtime.into_iter();
        for (i, part) in text.split('\0').enumerate() {
            if i > 0
                && let Some(piece) = runtime.next()
            {
                pieces.push(piece);
            }
            if !part.is_empty() {
                pieces.push(Piece::Text(part.to_owned()));
            }
        }
        Ok(pieces)
    }

    /// Appends `rest` to `out` with its tokens replaced (and `${NAME}` when
    /// `with_variables`). With `runtime`, a token only known when a command runs is left as a
    /// NUL and its piece pushed there. `raw` is the whole value, for errors.
    fn expand_into(
        &self,
        out: &mut String,
        rest: &str,
        raw: &str,
        with_variables: bool,
        mut runtime: Option<&mut Vec<Piece>>,
    ) -> Result<(), CliError> {
        let bad = |why: String| CliError::BadPath {
            path: raw.to_owned(),
            why,
        };
        let home = || {
            self.env
                .home
                .as_ref()
                .map(|h| h.to_string_lossy().into_owned())
                .ok_or_else(|| CliError::NoHome {
                    path: raw.to_owned(),
                })
        };
        if rest.contains('\0') {
            return Err(bad("it contains a NUL character".into()));
        }
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            if c == '$'
                && with_variables
                && let Some(after) = chars.as_str().strip_prefix('{')
            {
                let (name, after) = after
                    .split_once('}')
                    .ok_or_else(|| bad("'${' has no closing '}'".into()))?;
                out.push_str(&self.variable(name, raw)?);
                chars = after.chars();
                continue;
            }
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => out.push('%'),
                Some('d') => out.push_str(&home()?),
                Some('h') => out.push_str(self.host),
                Some('n') => out.push_str(self.original_host),
                Some('p') => out.push_str(&self.port.to_string()),
                Some('r') => out.push_str(self.remote_user),
                Some('u') => match &self.env.user {
                    Some(u) => out.push_str(u),
                    None => return Err(CliError::NoUser),
                },
                Some('l') => out.push_str(&self.local.name),
                Some('L') => {
                    out.push_str(self.local.name.split('.').next().unwrap_or_default());
                }
                Some('i') => match self.local.uid {
                    Some(uid) => out.push_str(&uid.to_string()),
                    None => return Err(bad("the user's uid (%i) is not known here".into())),
                },
                Some('k') => out.push_str(self.key_alias),
                Some('j') => out.push_str(self.jump_host),
                Some('C') => out.push_str(&self.connection_hash()),
                Some(c)
                    if let Some(pieces) = runtime.as_deref_mut()
                        && let Some(piece) = Piece::runtime_token(c) =>
                {
                    pieces.push(piece);
                    out.push('\0');
                }
                other => {
                    let token = other.map(|c| format!("%{c}")).unwrap_or_else(|| "%".into());
                    return Err(bad(format!(
                        "unknown token '{token}'; known tokens are %%, %C, %d, %h, %i, %j, %k, \
                         %L, %l, %n, %p, %r, %u{}",
                        if runtime.is_some() {
                            ", and %H, %I, %t, %f, %K"
                        } else {
                            ""
                        }
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Tokens<'_> {
    /// The value of `${name}` in the path `raw`.
    fn variable(&self, name: &str, raw: &str) -> Result<String, CliError> {
        let bad = |why: String| CliError::BadPath {
            path: raw.to_owned(),
            why,
        };
        if name.is_empty() {
            return Err(bad("'${}' names no environment variable".into()));
        }
        let value = (self.variables)(name).ok_or_else(|| {
            bad(format!(
                "environment variable {name} (in ${{{name}}}) is not set; set it or give \
                 the path without it"
            ))
        })?;
        value
            .into_string()
            .map_err(|_| bad(format!("environment variable {name} is not UTF-8")))
    }

    /// `%C` for this connection.
    fn connection_hash(&self) -> String {
        connection_hash(
            &self.local.name,
            self.host,
            self.port,
            self.remote_user,
            self.jump_host,
        )
    }
}

/// `%C`: SHA-1 of `%l%h%p%r%j` in lowercase hex, as OpenSSH computes it.
fn connection_hash(local: &str, host: &str, port: u16, user: &str, jump: &str) -> String {
    let text = format!("{local}{host}{port}{user}{jump}");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn connection_hash_is_openssh_s() {
        // printf 'laptop.example.orgdb.example.com2222alicejump' | sha1sum
        assert_eq!(
            super::connection_hash(
                "laptop.example.org",
                "db.example.com",
                2222,
                "alice",
                "jump"
            ),
            "c87df5dea2dda373eaa64ef6e500cd927edb859f"
        );
    }
}
