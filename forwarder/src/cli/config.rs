//! `-o` settings, read the way ssh_config lines are: a case-insensitive keyword, then `=` or
//! whitespace, then the value's words (double or single quotes group words).

use std::time::Duration;

use super::{
    AddressFamily, CliError, LogLevel, Parsed, RekeyLimit, StrictHostKeyChecking, check_user,
    forward, parse_port, set_first,
};

/// The keys forwarder implements, for error messages.
pub(super) const SUPPORTED_KEYS: &str = "Port, User, HostName, IdentityFile, UserKnownHostsFile, \
     GlobalKnownHostsFile, StrictHostKeyChecking, Ciphers, MACs, KexAlgorithms, HostKeyAlgorithms, \
     PubkeyAcceptedAlgorithms, ConnectTimeout, \
     ServerAliveInterval, ServerAliveCountMax, ExitOnForwardFailure, ForkAfterAuthentication, \
     BatchMode, LocalForward, \
     RemoteForward, DynamicForward, PermitRemoteOpen, BindAddress, BindInterface, ControlMaster, ControlPath, ControlPersist, UpdateHostKeys, ConnectionAttempts, \
     RekeyLimit, LogLevel, Compression, GatewayPorts, AddressFamily, HashKnownHosts, \
     IdentityAgent, IdentitiesOnly, CertificateFile, PubkeyAuthentication, \
     PasswordAuthentication, KbdInteractiveAuthentication, NumberOfPasswordPrompts, \
     PreferredAuthentications, TCPKeepAlive, ProxyJump, HostKeyAlias, IgnoreUnknown, \
     RevokedHostKeys, KnownHostsCommand, ProxyCommand none, StreamLocalBindMask, StreamLocalBindUnlink, \
     and forwarder's own PasswordFile, PasswordEnv, PassphraseFile, PassphraseEnv, Reconnect, \
     ReconnectBackoffMax, SessionWaitTimeout and KexGuessFile";

/// ssh_config keywords OpenSSH knows that forwarder does not implement (lowercase), so that an
/// unsupported key gets a different message from a misspelt one.
const OPENSSH_KEYS: &[&str] = &[
    "addkeystoagent",
    "canonicaldomains",
    "canonicalizefallbacklocal",
    "canonicalizehostname",
    "canonicalizemaxdots",
    "canonicalizepermittedcnames",
    "casignaturealgorithms",
    "channeltimeout",
    "clearallforwardings",
    "enableescapecommandline",
    "enablesshkeysign",
    "escapechar",
    "fingerprinthash",
    "forwardagent",
    "forwardx11",
    "forwardx11timeout",
    "forwardx11trusted",
    "gssapiauthentication",
    "gssapidelegatecredentials",
    "gssapikeyexchange",
    "gssapikexalgorithms",
    "gssapirenewalforcesrekey",
    "gssapitrustdns",
    "host",
    "hostbasedacceptedalgorithms",
    "hostbasedauthentication",
    "include",
    "ipqos",
    "kbdinteractivedevices",
    "localcommand",
    "logverbose",
    "match",
    "nohostauthenticationforlocalhost",
    "obscurekeystroketiming",
    "permitlocalcommand",
    "pkcs11provider",
    "proxyusefdpass",
    "remotecommand",
    "requestty",
    "requiredrsasize",
    "securitykeyprovider",
    "sendenv",
    "sessiontype",
    "setenv",
    "stdinnull",
    "syslogfacility",
    "tag",
    "tunnel",
    "tunneldevice",
    "verifyhostkeydns",
    "visualhostkey",
    "xauthlocation",
];

/// Applies one `-o` argument.
pub(super) fn apply(p: &mut Parsed, raw: &str) -> Result<(), CliError> {
    let syntax = |why| CliError::BadConfigSyntax {
        option: raw.to_owned(),
        why,
    };
    let (key, value) = split_key_value(raw).ok_or_else(|| syntax("no key"))?;
    let args = split_words(value).ok_or_else(|| syntax("a quote is not closed"))?;
    if args.is_empty() {
        return Err(syntax("the value is missing"));
    }
    let lower = key.to_ascii_lowercase();
    match lower.as_str() {
        "port" => {
            let port = parse_port(one(key, &args)?, "Port")?;
            set_first(&mut p.port, port);
        }
        "user" => {
            let user = check_user(one(key, &args)?, key)?;
            set_first(&mut p.user, user);
        }
        "hostname" => {
            let name = one(key, &args)?;
            // %h is filled in once the destination is known; check the rest now.
            let sample = name.replace("%%", "").replace("%h", "h");
            if sample.contains('%') {
                return Err(bad_value(key, name, "a host name (%h and %% may be used)"));
            }
            super::destination::check_host(&sample)
                .map_err(|_| bad_value(key, name, "a host name or address"))?;
            set_first(&mut p.hostname, name.to_owned());
        }
        "proxyjump" => {
            let hops = super::jump::parse_list(one(key, &args)?, key)?;
            // As in ssh: `none` is taken unless a ProxyJump was obtained; a list only if
            // neither a ProxyJump nor a ProxyCommand was, and it sets ProxyCommand none.
            if hops.is_empty() {
                set_first(&mut p.proxy_jump, hops);
            } else if p.proxy_jump.is_none() && !p.proxy_command_set {
                p.proxy_jump = Some(hops);
                p.proxy_command_set = true;
            }
        }
        "proxycommand" => {
            if let [word] = args.as_slice()
                && word.eq_ignore_ascii_case("none")
            {
                p.proxy_command_set = true;
            } else if !p.proxy_command_set {
                // It would be used: refuse it rather than connect straight to the host.
                return Err(CliError::ProxyCommand {
                    command: value.trim_end_matches(is_blank).to_owned(),
                });
            }
        }
        "revokedhostkeys" => {
            let none = args.iter().any(|a| a.eq_ignore_ascii_case("none"));
            if args.is_empty() || (none && args.len() > 1) || args.iter().any(String::is_empty) {
                return Err(bad_value(
                    key,
                    &args.join(" "),
                    "none alone, or files of revoked keys",
                ));
            }
            set_first(
                &mut p.revoked_host_keys,
                if none { Vec::new() } else { args },
            );
        }
        "knownhostscommand" => {
            // As ssh: the program must be an absolute path (it is not looked up in $PATH); its
            // arguments' tokens are checked when the options are resolved.
            let command = if let [word] = args.as_slice()
                && word.eq_ignore_ascii_case("none")
            {
                None
            } else {
                let program = args.first().map_or("", String::as_str);
                if !program.starts_with('/') {
                    return Err(bad_value(
                        key,
                        value.trim_end_matches(is_blank),
                        "none, or a program given by its absolute path, then its arguments",
                    ));
                }
                Some(args)
            };
            set_first(&mut p.known_hosts_command, command);
        }
        "hostkeyalias" => {
            let alias = one(key, &args)?;
            super::destination::check_host(alias)
                .map_err(|_| bad_value(key, alias, "a host name to look up in known_hosts"))?;
            set_first(&mut p.host_key_alias, alias.to_ascii_lowercase());
        }
        "ignoreunknown" => {
            let list = one(key, &args)?;
            set_first(&mut p.ignore_unknown, list.to_ascii_lowercase());
        }
        "identityfile" => p.identity_files.push(one(key, &args)?.to_owned()),
        "userknownhostsfile" => {
            let files = if args.len() == 1 && args.iter().any(|a| a.eq_ignore_ascii_case("none")) {
                Vec::new()
            } else {
                args
            };
            set_first(&mut p.known_hosts_files, files);
        }
        "globalknownhostsfile" => {
            let files = if args.len() == 1 && args.iter().any(|a| a.eq_ignore_ascii_case("none")) {
                Vec::new()
            } else {
                args
            };
            set_first(&mut p.global_known_hosts_files, files);
        }
        "stricthostkeychecking" => {
            let v = one(key, &args)?;
            let (policy, ask) = match v.to_ascii_lowercase().as_str() {
                "yes" | "true" => (StrictHostKeyChecking::Yes, false),
                "ask" => (StrictHostKeyChecking::Yes, true),
                "accept-new" => (StrictHostKeyChecking::AcceptNew, false),
                "no" | "false" | "off" => (StrictHostKeyChecking::No, false),
                _ => return Err(bad_value(key, v, "yes, accept-new, no, off or ask")),
            };
            if set_first(&mut p.strict, policy) && ask {
                p.warnings.push(
                    "StrictHostKeyChecking=ask is taken as yes: forwarder never prompts, so an \
                     unknown host key is refused; use accept-new to record it instead"
                        .into(),
                );
            }
        }
        "ciphers" => {
            let list = algorithm_list(one(key, &args)?, key)?;
            set_first(&mut p.ciphers, list);
        }
        "macs" => {
            let list = algorithm_list(one(key, &args)?, key)?;
            set_first(&mut p.macs, list);
        }
        "pubkeyacceptedalgorithms" | "pubkeyacceptedkeytypes" => {
            let list = algorithm_list(one(key, &args)?, key)?;
            set_first(&mut p.pubkey_accepted_algorithms, list);
        }
        "kexalgorithms" => {
            let list = algorithm_list(one(key, &args)?, key)?;
            set_first(&mut p.kex_algorithms, list);
        }
        "hostkeyalgorithms" => {
            let list = algorithm_list(one(key, &args)?, key)?;
            set_first(&mut p.host_key_algorithms, list);
        }
        "connecttimeout" => {
            let v = one(key, &args)?;
            let timeout = if v.eq_ignore_ascii_case("none") {
                None
            } else {
                let secs = parse_time(v).ok_or_else(|| bad_value(key, v, TIME_FORMS))?;
                (secs > 0).then(|| Duration::from_secs(secs))
            };
            set_first(&mut p.connect_timeout, timeout);
        }
        "serveraliveinterval" => {
            let v = one(key, &args)?;
            let secs = parse_time(v).ok_or_else(|| bad_value(key, v, TIME_FORMS))?;
            set_first(
                &mut p.server_alive_interval,
                (secs > 0).then(|| Duration::from_secs(secs)),
            );
        }
        "serveralivecountmax" => {
            let v = one(key, &args)?;
            let count = v
                .parse::<u32>()
                .ok()
                .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(|| bad_value(key, v, "a whole number such as 3"))?;
            set_first(&mut p.server_alive_count_max, count);
        }
        "forkafterauthentication" => {
            let f = flag(key, &args)?;
            set_first(&mut p.fork_after_authentication, f);
        }
        "exitonforwardfailure" => {
            let f = flag(key, &args)?;
            set_first(&mut p.exit_on_forward_failure, f);
        }
        "connectionattempts" => {
            let v = one(key, &args)?;
            let n = v
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1 && v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| bad_value(key, v, "a whole number of tries, 1 or more"))?;
            set_first(&mut p.connection_attempts, n);
        }
        "updatehostkeys" => {
            let v = one(key, &args)?;
            let on = match v.to_ascii_lowercase().as_str() {
                "yes" | "true" => true,
                // forwarder never asks, so ask is no (as ssh's ask in BatchMode).
                "no" | "false" | "ask" => false,
                _ => return Err(bad_value(key, v, "yes, no or ask")),
            };
            set_first(&mut p.update_host_keys, on);
        }
        "bindaddress" => {
            let address = bind_address(key, one(key, &args)?)?;
            set_first(&mut p.bind_address, address);
        }
        "controlmaster" => {
            let v = one(key, &args)?;
            let master = match v.to_ascii_lowercase().as_str() {
                "yes" | "true" => super::ControlMaster::Yes,
                "no" | "false" => super::ControlMaster::No,
                "auto" => super::ControlMaster::Auto,
                "ask" | "autoask" => {
                    return Err(bad_value(
                        key,
                        v,
                        "yes, no or auto (ask and autoask confirm each control client with \
                         ssh-askpass, which forwarder does not run)",
                    ));
                }
                _ => return Err(bad_value(key, v, "yes, no or auto")),
            };
            set_first(&mut p.control_master, master);
        }
        "controlpersist" => {
            let v = one(key, &args)?;
            let persist = match v.to_ascii_lowercase().as_str() {
                "no" | "false" => super::ControlPersist::No,
                "yes" | "true" => super::ControlPersist::Forever,
                _ => match parse_time(v) {
                    Some(0) => super::ControlPersist::Forever,
                    Some(s) => super::ControlPersist::Idle(Duration::from_secs(s)),
                    None => return Err(bad_value(key, v, "yes, no or a time (600, 10m)")),
                },
            };
            set_first(&mut p.control_persist, persist);
        }
        "controlpath" => {
            let path = control_path(key, one(key, &args)?)?;
            set_first(&mut p.control_path, path);
        }
        "bindinterface" => {
            let interface = bind_interface(key, one(key, &args)?)?;
            set_first(&mut p.bind_interface, interface);
        }
        "permitremoteopen" => {
            let permit = crate::remote::PermitRemoteOpen::parse(&args).map_err(|why| {
                CliError::BadPermitRemoteOpen {
                    value: args.join(" "),
                    why,
                }
            })?;
            set_first(&mut p.permit_remote_open, permit);
        }
        "batchmode" => {
            let f = flag(key, &args)?;
            set_first(&mut p.batch_mode, f);
        }
        "compression" => {
            let f = flag(key, &args)?;
            set_first(&mut p.compression, f);
        }
        "gatewayports" => {
            let f = flag(key, &args)?;
            set_first(&mut p.gateway_ports, f);
        }
        "hashknownhosts" => {
            let f = flag(key, &args)?;
            set_first(&mut p.hash_known_hosts, f);
        }
        "localforward" => p.local_forwards.push(forward::parse_config(&args)?),
        "dynamicforward" => p.local_forwards.push(forward::parse_config_dynamic(&args)?),
        "remoteforward" => p.remote_forwards.push(forward::parse_config_remote(&args)?),
        "rekeylimit" => {
            let v = args.join(" ");
            let limit = parse_rekey_limit(&v).ok_or_else(|| {
                bad_value(
                    key,
                    &v,
                    "a data limit (such as 1G, or default) and an optional time (such as 1h)",
                )
            })?;
            set_first(&mut p.rekey_limit, limit);
        }
        "streamlocalbindmask" => {
            let v = one(key, &args)?;
            let mask = u32::from_str_radix(v, 8)
                .ok()
                .filter(|m| *m <= 0o777 && !v.starts_with(['+', '-']))
                .ok_or_else(|| bad_value(key, v, "an octal mode mask from 0 to 0777"))?;
            set_first(&mut p.stream_local_bind_mask, mask);
        }
        "streamlocalbindunlink" => {
            let f = flag(key, &args)?;
            set_first(&mut p.stream_local_bind_unlink, f);
        }
        "tcpkeepalive" => {
            let f = flag(key, &args)?;
            set_first(&mut p.tcp_keep_alive, f);
        }
        "reconnect" => {
            let f = flag(key, &args)?;
            set_first(&mut p.reconnect, f);
        }
        "reconnectbackoffmax" => {
            let d = positive_time(key, &args)?;
            set_first(&mut p.reconnect_backoff_max, d);
        }
        "sessionwaittimeout" => {
            let d = positive_time(key, &args)?;
            set_first(&mut p.session_wait_timeout, d);
        }
        "loglevel" => {
            let v = one(key, &args)?;
            let level = match v.to_ascii_uppercase().as_str() {
                "QUIET" => LogLevel::Quiet,
                "FATAL" => LogLevel::Fatal,
                "ERROR" => LogLevel::Error,
                "INFO" => LogLevel::Info,
                "VERBOSE" => LogLevel::Verbose,
                "DEBUG" | "DEBUG1" => LogLevel::Debug1,
                "DEBUG2" => LogLevel::Debug2,
                "DEBUG3" => LogLevel::Debug3,
                _ => {
                    return Err(bad_value(
                        key,
                        v,
                        "QUIET, FATAL, ERROR, INFO, VERBOSE, DEBUG, DEBUG1, DEBUG2 or DEBUG3",
                    ));
                }
            };
            set_first(&mut p.log_level, level);
        }
        "addressfamily" => {
            let v = one(key, &args)?;
            let family = match v.to_ascii_lowercase().as_str() {
                "any" => AddressFamily::Any,
                "inet" => AddressFamily::Inet,
                "inet6" => AddressFamily::Inet6,
                _ => return Err(bad_value(key, v, "any, inet or inet6")),
            };
            set_first(&mut p.address_family, family);
        }
        "identityagent" => {
            let v = one(key, &args)?;
            set_first(&mut p.identity_agent, v.to_owned());
        }
        "identitiesonly" => {
            let f = flag(key, &args)?;
            set_first(&mut p.identities_only, f);
        }
        "certificatefile" => p.certificate_files.push(one(key, &args)?.to_owned()),
        "pubkeyauthentication" => {
            let f = flag(key, &args)?;
            set_first(&mut p.pubkey_authentication, f);
        }
        "passwordauthentication" => {
            let f = flag(key, &args)?;
            set_first(&mut p.password_authentication, f);
        }
        "kbdinteractiveauthentication" | "challengeresponseauthentication" => {
            let f = flag(key, &args)?;
            set_first(&mut p.kbd_interactive_authentication, f);
        }
        "preferredauthentications" => {
            let v = one(key, &args)?;
            let methods: Vec<String> = v
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
            const OURS: [&str; 3] = ["publickey", "keyboard-interactive", "password"];
            if !methods.iter().any(|m| OURS.contains(&m.as_str())) {
                return Err(bad_value(
                    key,
                    v,
                    "a list with at least one of publickey, keyboard-interactive and password",
                ));
            }
            set_first(&mut p.preferred_authentications, methods);
        }
        "numberofpasswordprompts" => {
            let v = one(key, &args)?;
            let n = v
                .parse::<u32>()
                .ok()
                .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                .filter(|n| *n <= 100)
                .ok_or_else(|| bad_value(key, v, "a whole number from 0 to 100, such as 3"))?;
            set_first(&mut p.number_of_password_prompts, n);
        }
        "passwordfile" => {
            let v = one(key, &args)?;
            set_first(&mut p.password_file, v.to_owned());
        }
        "passphrasefile" => {
            let v = one(key, &args)?;
            set_first(&mut p.passphrase_file, v.to_owned());
        }
        "passwordenv" => {
            let v = env_var_name(key, one(key, &args)?)?;
            set_first(&mut p.password_env, v);
        }
        "kexguessfile" => {
            let v = one(key, &args)?;
            set_first(&mut p.kex_guess_file, v.to_owned());
        }
        "passphraseenv" => {
            let v = env_var_name(key, one(key, &args)?)?;
            set_first(&mut p.passphrase_env, v);
        }
        // forwarder checks host names rather than addresses: this changes nothing.
        "checkhostip" => {
            flag(key, &args)?;
        }
        // IgnoreUnknown: the user asked for no word about these keywords.
        k if p
            .ignore_unknown
            .as_deref()
            .is_some_and(|list| super::ssh_config::pattern_list(k, list)) => {}
        k if OPENSSH_KEYS.contains(&k) => {
            return Err(CliError::UnsupportedKey {
                key: key.to_owned(),
            });
        }
        _ => {
            return Err(CliError::UnknownKey {
                key: key.to_owned(),
            });
        }
    }
    Ok(())
}

const TIME_FORMS: &str = "seconds, or a time such as 30s, 5m, 1h30m";

/// A single time in [`parse_time`]'s format that must not be zero.
fn positive_time(key: &str, args: &[String]) -> Result<Duration, CliError> {
    let v = one(key, args)?;
    parse_time(v)
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| bad_value(key, v, TIME_FORMS))
}

fn bad_value(key: &str, value: &str, expected: &'static str) -> CliError {
    CliError::BadValue {
        key: key.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

/// A `BindAddress` (`-b`): an address, or a name this machine resolves to one of its own.
pub(super) fn bind_address(key: &str, v: &str) -> Result<String, CliError> {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad_value(
            key,
            v,
            "a local address (203.0.113.7, 2001:db8::7) or a name for one",
        ));
    }
    Ok(v.to_owned())
}

/// A `ControlPath` (`-S`): a path (expanded later), or `None` for `none`.
pub(super) fn control_path(key: &str, v: &str) -> Result<Option<String>, CliError> {
    if v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if v.is_empty() || v.chars().any(char::is_control) {
        return Err(bad_value(
            key,
            v,
            "a path for the control socket (~/.ssh/cm-%C) or none",
        ));
    }
    Ok(Some(v.to_owned()))
}

/// A `BindInterface` (`-B`): an interface's name, as `ip link` shows it (at most 15 bytes on
/// Linux, no spaces or slashes).
pub(super) fn bind_interface(key: &str, v: &str) -> Result<String, CliError> {
    if v.is_empty()
        || v.len() > 15
        || v.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(bad_value(
            key,
            v,
            "an interface's name (eth1, ens5), at most 15 bytes",
        ));
    }
    Ok(v.to_owned())
}

/// The single word of a one-word setting.
fn one<'a>(key: &str, args: &'a [String]) -> Result<&'a str, CliError> {
    match args {
        [only] => Ok(only),
        _ => Err(bad_value(key, &args.join(" "), "a single value")),
    }
}

/// An environment variable's name: letters, digits and `_`, not starting with a digit.
fn env_var_name(key: &str, v: &str) -> Result<String, CliError> {
    let ok = v
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(v.to_owned())
    } else {
        Err(bad_value(
            key,
            v,
            "the name of an environment variable (letters, digits and _), not its value",
        ))
    }
}

/// `yes`/`true` or `no`/`false`, any case.
fn flag(key: &str, args: &[String]) -> Result<bool, CliError> {
    let v = one(key, args)?;
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(bad_value(key, v, "yes or no")),
    }
}

/// An algorithm list is kept as written, but it must be one comma-separated word.
pub(super) fn algorithm_list(value: &str, key: &str) -> Result<String, CliError> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\''));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(bad_value(
            key,
            value,
            "a comma-separated list of algorithm names, optionally starting with +, - or ^",
        ))
    }
}

/// Splits `Key=Value`, `Key Value` or `Key = Value`. `None` when there is no key.
pub(super) fn split_key_value(raw: &str) -> Option<(&str, &str)> {
    let raw = raw.trim_matches(is_blank);
    let end = raw.find(|c: char| is_blank(c) || c == '=')?;
    let (key, rest) = raw.split_at(end);
    if key.is_empty() {
        return None;
    }
    let rest = rest.trim_start_matches(is_blank);
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    Some((key, rest.trim_start_matches(is_blank)))
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits a value into words. Double or single quotes group a word; a backslash escapes a
/// quote, a backslash, or (outside quotes) a space. `None` if a quote is left open.
pub(super) fn split_words(value: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.next_if(|c| is_blank(*c)).is_some() {}
        if chars.peek().is_none() {
            return Some(words);
        }
        let mut word = String::new();
        let mut quote = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => match chars.peek().copied() {
                    Some(next @ ('\\' | '"' | '\'')) => {
                        word.push(next);
                        chars.next();
                    }
                    Some(' ') if quote.is_none() => {
                        word.push(' ');
                        chars.next();
                    }
                    _ => word.push('\\'),
                },
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(q)) if c == q => quote = None,
                (c, None) if is_blank(c) => break,
                (c, _) => word.push(c),
            }
        }
        if quote.is_some() {
            return None;
        }
        words.push(word);
    }
}

/// `RekeyLimit bytes [time]`, as OpenSSH reads it: a size with K, M or G (at least 16
/// bytes), or `default`/`none` for no byte limit; then optionally a time in [`parse_time`]'s
/// format, or `none` (0 is none too).
pub(crate) fn parse_rekey_limit(text: &str) -> Option<RekeyLimit> {
    let mut parts = text.split_whitespace();
    let size = parts.next()?;
    let bytes = match size {
        "default" | "none" => None,
        _ => {
            let (num, mult) = match size.as_bytes().last()? {
                b'K' | b'k' => (size.get(..size.len() - 1)?, 1u64 << 10),
                b'M' | b'm' => (size.get(..size.len() - 1)?, 1 << 20),
                b'G' | b'g' => (size.get(..size.len() - 1)?, 1 << 30),
                _ => (size, 1),
            };
            if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let b = num.parse::<u64>().ok()?.checked_mul(mult)?;
            if b < 16 {
                return None;
            }
            Some(b)
        }
    };
    let interval = match parts.next() {
        None | Some("none") => None,
        Some(t) => Some(parse_time(t)?)
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
    };
    if parts.next().is_some() {
        return None;
    }
    Some(RekeyLimit { bytes, interval })
}

/// OpenSSH's time format: seconds, or numbers with s/m/h/d/w units added up (`1h30m`).
/// Capped at `i32::MAX` seconds as OpenSSH does.
pub fn parse_time(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            number = Some(
                number
                    .unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(u64::from(d))?,
            );
            continue;
        }
        let scale = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(number.take()?.checked_mul(scale)?)?;
    }
    if let Some(n) = number {
        total = total.checked_add(n)?;
    }
    (total <= i32::MAX as u64).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_forms() {
        assert_eq!(split_key_value("Port=2222"), Some(("Port", "2222")));
        assert_eq!(split_key_value("Port 2222"), Some(("Port", "2222")));
        assert_eq!(split_key_value("  port  =  7 "), Some(("port", "7")));
        assert_eq!(split_key_value("Port\t2222"), Some(("Port", "2222")));
        assert_eq!(split_key_value("Port"), None);
        assert_eq!(split_key_value("=2222"), None);
        assert_eq!(split_key_value(""), None);
        assert_eq!(split_key_value("Port="), Some(("Port", "")));
    }

    #[test]
    fn words_and_quotes() {
        let w = |s: &str| split_words(s);
        let v = |words: &[&str]| Some(words.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(w("a b"), v(&["a", "b"]));
        assert_eq!(w("\"x y\" z"), v(&["x y", "z"]));
        assert_eq!(w("'x y'"), v(&["x y"]));
        assert_eq!(w("a\\ b"), v(&["a b"]));
        assert_eq!(w("\"a\\\"b\""), v(&["a\"b"]));
        assert_eq!(w("C:\\dir"), v(&["C:\\dir"]));
        assert_eq!(w("\"\""), v(&[""]));
        assert_eq!(w("   "), v(&[]));
        assert_eq!(w("\"open"), None);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time("90"), Some(90));
        assert_eq!(parse_time("1m30s"), Some(90));
        assert_eq!(parse_time("2M"), Some(120));
        assert_eq!(parse_time("1h"), Some(3600));
        assert_eq!(parse_time("1w1d"), Some(691_200));
        assert_eq!(parse_time("2147483647"), Some(2_147_483_647));
        assert_eq!(parse_time("2147483648"), None);
        assert_eq!(parse_time("99999999999999999999999"), None);
        assert_eq!(parse_time(""), None);
        assert_eq!(parse_time("s"), None);
        assert_eq!(parse_time("1x"), None);
        assert_eq!(parse_time("-1"), None);
        assert_eq!(parse_time("1 m"), None);
    }

    #[test]
    fn algorithm_lists_are_one_word() {
        assert_eq!(
            algorithm_list("+ssh-rsa,rsa-sha2-256", "HostKeyAlgorithms"),
            Ok("+ssh-rsa,rsa-sha2-256".into())
        );
        assert!(algorithm_list("", "Ciphers").is_err());
        assert!(algorithm_list("a b", "Ciphers").is_err());
        assert!(algorithm_list("aes\u{1b}", "Ciphers").is_err());
    }
}
