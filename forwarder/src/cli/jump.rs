//! `-J` / `ProxyJump` (`[user@]host[:port][,...]` or `none`) and `-W host:port`.
//!
//! Jump hosts take nothing from the destination's `-l`, `-p` or `User`/`Port`, as with ssh:
//! each hop is looked up in ssh_config under its own name, as ssh's `ssh -W` for the hop
//! would: its own `user@` and `:port`, else its block's `User`, `Port`, `HostName`,
//! `IdentityFile`, `HostKeyAlias`..., else the defaults. ssh runs the last hop of a list with
//! `-J` set to the hops before it, so that hop's own `ProxyJump` is overridden; the first hop
//! has no `-J`, so its block's `ProxyJump` (if any) adds hops before it.
//!
//! Unlike ssh, which gives a hop only `-F` and `-v`, a hop falls back on the command line's
//! options that are not about the destination (`-i`, `-C`, `-o IdentityFile=...`,
//! `-o UserKnownHostsFile=...`, ...) where its block sets nothing: a command line that names
//! its keys and known_hosts with `-i` and `-o` works without a config file.

use super::{
    AddressFamily, CliError, Destination, Environment, JumpHost, Parsed, Target, check_user,
    destination, env, parse_port, set_first, ssh_config,
};

/// How many jump hosts one chain may have, counting those `ProxyJump` lines add (a loop of
/// `ProxyJump` settings stops here).
pub(super) const MAX_HOPS: usize = 16;

/// `-o` keys about the destination only, which jump hosts do not take from the command line.
const DESTINATION_KEYS: [&str; 8] = [
    "port",
    "user",
    "hostname",
    "proxyjump",
    "proxycommand",
    "localforward",
    "remoteforward",
    "hostkeyalias",
];

/// Whether a command-line option (letter and value) also applies to jump hosts where their
/// own ssh_config block does not set it.
pub(super) fn inherited(letter: char, value: &str) -> bool {
    match letter {
        'i' | 'c' | 'm' | 'b' | 'B' => true,
        'o' => super::config::split_key_value(value)
            .is_some_and(|(key, _)| !DESTINATION_KEYS.contains(&key.to_ascii_lowercase().as_str())),
        _ => false,
    }
}

/// The jump hosts of `list` (outermost first), each looked up in ssh_config, with the hops
/// their `ProxyJump` settings add before them. `depth` is how many hops are already further
/// in.
pub(super) fn resolve_chain(
    list: &[JumpSpec],
    command_line: &Parsed,
    environment: &Environment,
    variables: env::Variables<'_>,
    source: &ssh_config::Source<'_>,
    depth: usize,
) -> Result<Vec<JumpHost>, CliError> {
    let Some((last, outer)) = list.split_last() else {
        return Ok(Vec::new());
    };
    if depth + list.len() > MAX_HOPS {
        return Err(CliError::BadValue {
            key: "ProxyJump".into(),
            value: last.host.clone(),
            expected: "at most 16 jump hosts in a chain (do ProxyJump settings loop?)",
        });
    }
    let mut p = Parsed {
        host: Some(last.host.clone()),
        user: last.user.clone(),
        port: last.port,
        config_file: command_line.config_file.clone(),
        proxy_jump: (!outer.is_empty()).then(|| outer.to_vec()),
        // ssh reaches this hop with `-J outer`, which sets ProxyCommand none: the hop's own
        // ProxyCommand is not used then.
        proxy_command_set: !outer.is_empty(),
        ..Parsed::default()
    };
    ssh_config::apply(&mut p, environment, source)?;
    for (letter, value) in &command_line.inherit {
        match letter {
            'C' => {
                set_first(&mut p.compression, true);
            }
            '4' => {
                set_first(&mut p.address_family, AddressFamily::Inet);
            }
            '6' => {
                set_first(&mut p.address_family, AddressFamily::Inet6);
            }
            _ => p.option_value(*letter, value)?,
        }
    }
    let before = p.proxy_jump.clone().unwrap_or_default();
    let options = env::resolve(p, environment, variables)?;
    let mut chain = resolve_chain(
        &before,
        command_line,
        environment,
        variables,
        source,
        depth + 1,
    )?;
    chain.push(JumpHost {
        user: options.user.clone(),
        host: options.destination_host.clone(),
        port: options.port,
        options: Box::new(options),
    });
    Ok(chain)
}

/// One hop as written: `[user@]host[:port]`, the user and port not yet defaulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct JumpSpec {
    pub(super) user: Option<String>,
    pub(super) host: String,
    pub(super) port: Option<u16>,
}

/// Parses a `-J` / `ProxyJump` value: a comma-separated list of hops in connection order, or
/// `none` (an empty list: no jump host).
pub(super) fn parse_list(value: &str, key: &str) -> Result<Vec<JumpSpec>, CliError> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    value.split(',').map(|hop| parse_hop(hop, key)).collect()
}

fn parse_hop(hop: &str, key: &str) -> Result<JumpSpec, CliError> {
    let bad = || CliError::BadValue {
        key: key.to_owned(),
        value: hop.to_owned(),
        expected: "jump hosts as [user@]host[:port], separated by commas, or none",
    };
    if hop.is_empty() || hop.eq_ignore_ascii_case("none") {
        return Err(bad());
    }
    let is_uri = hop
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("ssh://"));
    if is_uri {
        let d = destination::parse(hop)?;
        return Ok(JumpSpec {
            user: d.user,
            host: d.host.to_ascii_lowercase(),
            port: d.port,
        });
    }
    let (user, rest) = match hop.rsplit_once('@') {
        Some((u, rest)) => (Some(check_user(u, key)?), rest),
        None => (None, hop),
    };
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (inner, after) = bracketed.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (inner, None),
            _ => (inner, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else if rest.matches(':').count() == 1 {
        let (h, p) = rest.split_once(':').ok_or_else(bad)?;
        (h, Some(p))
    } else {
        // No colon, or an IPv6 literal without brackets (no port then).
        (rest, None)
    };
    let port = port.map(|p| parse_port(p, "-J")).transpose()?;
    let host = destination::check_host(host)
        .map_err(|_| bad())?
        .to_ascii_lowercase();
    Ok(JumpSpec { user, host, port })
}

/// Parses `-W host:port` (IPv6 literals in brackets), or, as ssh takes it, `-W /path` for a
/// Unix socket on the server (in brackets if the path contains `:`).
pub(super) fn parse_stdio_forward(value: &str) -> Result<Destination, CliError> {
    let bad = || CliError::BadValue {
        key: "-W".to_owned(),
        value: value.to_owned(),
        expected: "host:port, such as db.internal:5432 or [fd00::1]:5432, or the path of a \
                   Unix socket on the server",
    };
    if value.contains('/') {
        let path = match value.strip_prefix('[') {
            Some(rest) => rest.strip_suffix(']').filter(|p| !p.contains(']')),
            None => Some(value).filter(|p| !p.contains(':')),
        }
        .filter(|p| p.len() <= 107 && !p.chars().any(char::is_control))
        .ok_or_else(bad)?;
        return Ok(Destination::Unix(path.to_owned()));
    }
    let (host, port) = if let Some(bracketed) = value.strip_prefix('[') {
        let (inner, after) = bracketed.split_once(']').ok_or_else(bad)?;
        (inner, after.strip_prefix(':').ok_or_else(bad)?)
    } else {
        value.rsplit_once(':').ok_or_else(bad)?
    };
    if host.contains(':') && !value.starts_with('[') {
        return Err(bad());
    }
    let port = parse_port(port, "-W")?;
    let host = destination::check_host(host).map_err(|_| bad())?;
    Ok(Destination::Tcp(Target { host, port }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(user: Option<&str>, host: &str, port: Option<u16>) -> JumpSpec {
        JumpSpec {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn lists_of_hops_with_their_own_users_and_ports() {
        assert_eq!(
            parse_list("alice@jump1:2222,jump2", "-J").unwrap(),
            [
                hop(Some("alice"), "jump1", Some(2222)),
                hop(None, "jump2", None)
            ]
        );
        assert_eq!(
            parse_list("[::1]:2200,u@[fe80::1],ssh://bob@j3:23,10.0.0.1", "-J").unwrap(),
            [
                hop(None, "::1", Some(2200)),
                hop(Some("u"), "fe80::1", None),
                hop(Some("bob"), "j3", Some(23)),
                hop(None, "10.0.0.1", None),
            ]
        );
        assert_eq!(parse_list("NONE", "ProxyJump").unwrap(), []);
        assert_eq!(
            parse_list("Jump.Example", "-J").unwrap()[0].host,
            "jump.example"
        );
    }

    #[test]
    fn bad_hops_are_refused() {
        for bad in [
            "", "a,,b", "j:0", "j:99999", "@j", "j:x", "[::1", "a b", "j,none",
        ] {
            assert!(parse_list(bad, "-J").is_err(), "{bad}");
        }
    }

    #[test]
    fn stdio_forward_targets() {
        let tcp = |host: &str, port| {
            Destination::Tcp(Target {
                host: host.to_owned(),
                port,
            })
        };
        let unix = |p: &str| Destination::Unix(p.to_owned());
        assert_eq!(
            parse_stdio_forward("db.internal:5432").unwrap(),
            tcp("db.internal", 5432)
        );
        assert_eq!(
            parse_stdio_forward("[fd00::1]:22").unwrap(),
            tcp("fd00::1", 22)
        );
        assert_eq!(
            parse_stdio_forward("/run/pg/.s.PGSQL.5432").unwrap(),
            unix("/run/pg/.s.PGSQL.5432")
        );
        assert_eq!(parse_stdio_forward("[/a:b/s]").unwrap(), unix("/a:b/s"));
        let long = format!("/{}", "a".repeat(107));
        for bad in [
            "db",
            "db:",
            "db:0",
            ":22",
            "fd00::1:22",
            "[fd00::1]",
            "a b:1",
            "/a:b",
            "[/a]b]",
            "[/a",
            "/a\tb",
            &long,
        ] {
            assert!(parse_stdio_forward(bad).is_err(), "{bad}");
        }
    }
}
