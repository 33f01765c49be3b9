//! `-J` / `ProxyJump` (`[user@]host[:port][,...]` or `none`) and `-W host:port`.
//!
//! Jump hosts take nothing from the destination's `-l`, `-p` or `User`/`Port`, as with ssh:
//! each hop logs in as its own `user@` (else the local user) on its own `:port` (else 22).

use super::{CliError, check_user, destination, parse_port};

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

/// Parses `-W host:port` (IPv6 literals in brackets).
pub(super) fn parse_stdio_forward(value: &str) -> Result<(String, u16), CliError> {
    let bad = || CliError::BadValue {
        key: "-W".to_owned(),
        value: value.to_owned(),
        expected: "host:port, such as db.internal:5432 or [fd00::1]:5432",
    };
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
    Ok((host, port))
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
        assert_eq!(
            parse_stdio_forward("db.internal:5432").unwrap(),
            ("db.internal".to_owned(), 5432)
        );
        assert_eq!(
            parse_stdio_forward("[fd00::1]:22").unwrap(),
            ("fd00::1".to_owned(), 22)
        );
        for bad in [
            "db",
            "db:",
            "db:0",
            ":22",
            "fd00::1:22",
            "[fd00::1]",
            "a b:1",
        ] {
            assert!(parse_stdio_forward(bad).is_err(), "{bad}");
        }
    }
}
