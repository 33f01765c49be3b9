//! The destination: `[user@]host` or `ssh://[user@]host[:port]` (the URI form of
//! draft-ietf-secsh-scp-sftp-ssh-uri, as OpenSSH reads it).

use super::{CliError, check_user, parse_port};

/// A parsed destination.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Destination {
    pub(super) user: Option<String>,
    pub(super) host: String,
    pub(super) port: Option<u16>,
}

pub(super) fn parse(arg: &str) -> Result<Destination, CliError> {
    let bad = |why: &str| CliError::BadDestination {
        destination: arg.to_owned(),
        why: why.to_owned(),
    };
    let uri = arg
        .get(..6)
        .filter(|scheme| scheme.eq_ignore_ascii_case("ssh://"))
        .and_then(|_| arg.get(6..));
    if let Some(rest) = uri {
        return parse_uri(arg, rest);
    }
    let (user, host) = match arg.rsplit_once('@') {
        Some((user, host)) => {
            if user.is_empty() {
                return Err(bad("the user before '@' is empty"));
            }
            (Some(check_user(user, "the destination's user")?), host)
        }
        None => (None, arg),
    };
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner,
        None => host,
    };
    if host.contains(':') && !is_ipv6_literal(host) {
        return Err(bad(
            "a host cannot contain ':' unless it is an IPv6 address; give a port with -p \
             or as ssh://host:port",
        ));
    }
    let host = check_host(host).map_err(bad)?;
    Ok(Destination {
        user,
        host,
        port: None,
    })
}

fn parse_uri(arg: &str, rest: &str) -> Result<Destination, CliError> {
    let bad = |why: &str| CliError::BadDestination {
        destination: arg.to_owned(),
        why: why.to_owned(),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !path.is_empty() {
        return Err(bad("an ssh:// destination cannot have a path"));
    }
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => {
            // Connection parameters after ';' are defined by the draft but carry nothing
            // forwarder uses; OpenSSH ignores them too.
            let user = userinfo.split(';').next().unwrap_or_default();
            let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in the user"))?;
            if user.is_empty() {
                return Err(bad("the user before '@' is empty"));
            }
            (
                Some(check_user(&user, "the destination's user")?),
                host_port,
            )
        }
        None => (None, authority),
    };
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (inner, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("'[' without a closing ']'"))?;
        if !is_ipv6_literal(inner) {
            return Err(bad("only IPv6 addresses go inside [ ]"));
        }
        match after {
            "" => (inner, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (inner, Some(port)),
                None => return Err(bad("expected ':port' after ']'")),
            },
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let port = port
        .map(|p| parse_port(p, "the ssh:// destination"))
        .transpose()?;
    let host = check_host(host).map_err(bad)?;
    Ok(Destination { user, host, port })
}

/// Checks a host name or address: ASCII letters, digits, `-`, `.` and `_`, not starting with
/// `-`, or an IPv6 literal (optionally with a `%zone`). Anything else could be taken for an
/// option by other tools, or for a pattern or separator in known_hosts.
pub(super) fn check_host(host: &str) -> Result<String, &'static str> {
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host.contains(':') {
        return if is_ipv6_literal(host) {
            Ok(host.to_ascii_lowercase())
        } else {
            Err("the host is not a valid IPv6 address")
        };
    }
    if host.starts_with('-') {
        return Err("a host cannot start with '-'");
    }
    if !host.is_ascii() {
        return Err("host names must be ASCII (write international names in their xn-- form)");
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err("a host name may only contain letters, digits, '-', '.' and '_'");
    }
    Ok(host.to_owned())
}

/// An IPv6 address, with an optional `%zone` of letters, digits, `-`, `_` and `.`.
pub(super) fn is_ipv6_literal(text: &str) -> bool {
    let (addr, zone) = match text.split_once('%') {
        Some((addr, zone)) => (addr, Some(zone)),
        None => (text, None),
    };
    let zone_ok = zone.is_none_or(|z| {
        !z.is_empty()
            && z.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    zone_ok && addr.parse::<std::net::Ipv6Addr>().is_ok()
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = hex_value(bytes.next()?)?;
            let lo = hex_value(bytes.next()?)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(user: Option<&str>, host: &str, port: Option<u16>) -> Destination {
        Destination {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn plain_forms() {
        assert_eq!(parse("bastion"), Ok(dest(None, "bastion", None)));
        assert_eq!(
            parse("analytics@bastion.example.com"),
            Ok(dest(Some("analytics"), "bastion.example.com", None))
        );
        // The last '@' separates the host, so a user may contain '@' (as in ssh).
        assert_eq!(parse("a@b@h"), Ok(dest(Some("a@b"), "h", None)));
        assert_eq!(parse("u@::1"), Ok(dest(Some("u"), "::1", None)));
        assert_eq!(parse("[::1]"), Ok(dest(None, "::1", None)));
        assert_eq!(
            parse("u@[fe80::1%eth0]"),
            Ok(dest(Some("u"), "fe80::1%eth0", None))
        );
        assert_eq!(parse("10.0.0.5"), Ok(dest(None, "10.0.0.5", None)));
        assert_eq!(parse("my_host-1.x"), Ok(dest(None, "my_host-1.x", None)));
    }

    #[test]
    fn plain_errors_say_why() {
        for (arg, needle) in [
            ("@h", "user before '@' is empty"),
            ("u@", "host is empty"),
            ("h:22", "give a port with -p"),
            ("-host", "cannot start with '-'"),
            ("ho st", "may only contain"),
            ("h*", "may only contain"),
            ("h,other", "may only contain"),
            ("bücher.de", "xn--"),
            ("[::g]", "IPv6"),
            ("a b@h", "user name without spaces"),
        ] {
            let err = parse(arg).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(needle), "{arg}: {err}");
        }
    }

    #[test]
    fn uri_forms() {
        assert_eq!(parse("ssh://h"), Ok(dest(None, "h", None)));
        assert_eq!(parse("ssh://h/"), Ok(dest(None, "h", None)));
        assert_eq!(
            parse("SSH://u@h:2022"),
            Ok(dest(Some("u"), "h", Some(2022)))
        );
        assert_eq!(parse("ssh://u;x=y@h"), Ok(dest(Some("u"), "h", None)));
        assert_eq!(parse("ssh://a%40b@h"), Ok(dest(Some("a@b"), "h", None)));
        assert_eq!(parse("ssh://[::1]"), Ok(dest(None, "::1", None)));
        assert_eq!(
            parse("ssh://u@[::1]:3"),
            Ok(dest(Some("u"), "::1", Some(3)))
        );
    }

    #[test]
    fn uri_errors() {
        for (arg, needle) in [
            ("ssh://", "host is empty"),
            ("ssh://u@", "host is empty"),
            ("ssh://h:0", "bad port '0'"),
            ("ssh://h:99999", "bad port '99999'"),
            ("ssh://h:", "bad port ''"),
            ("ssh://h/path", "path"),
            ("ssh://[::1", "closing"),
            ("ssh://[::1]x", "':port'"),
            ("ssh://[host]:2", "IPv6"),
            ("ssh://a%4@h", "%-escape"),
            ("ssh://a%zz@h", "%-escape"),
            ("ssh://h:1:2", "bad port '1:2'"),
        ] {
            let err = parse(arg).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(needle), "{arg}: {err}");
        }
    }

    #[test]
    fn ipv6_literal_rules() {
        assert!(is_ipv6_literal("::1"));
        assert!(is_ipv6_literal("fe80::1%en0"));
        assert!(!is_ipv6_literal("fe80::1%"));
        assert!(!is_ipv6_literal("fe80::1%a b"));
        assert!(!is_ipv6_literal("1.2.3.4"));
        assert_eq!(check_host("FE80::1"), Ok("fe80::1".to_owned()));
    }
}
