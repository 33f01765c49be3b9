//! `-L [bind_address:]port:host:hostport` and `LocalForward [bind_address:]port host:hostport`.
//!
//! Fields are separated by `:`; a field in brackets may contain `:` (IPv6). The bracket rule is
//! OpenSSH's: `[` opens a field that runs to the next `]`, which must end the spec or be
//! followed by `:`.

use super::{CliError, LocalForward, parse_port_allowing_zero};

const DASH_L: &str = "-L";
const CONFIG: &str = "LocalForward";
const DASH_R: &str = "-R";
const CONFIG_REMOTE: &str = "RemoteForward";

/// `-R [bind_address:]port:host:hostport`: the same fields as `-L`, the listening side on
/// the server.
pub(super) fn parse_dash_r(spec: &str) -> Result<LocalForward, CliError> {
    parse_fields(spec).map_err(|why| CliError::BadForward {
        spec: spec.to_owned(),
        form: DASH_R,
        why,
    })
}

/// `RemoteForward [bind_address:]port host:hostport`.
pub(super) fn parse_config_remote(args: &[String]) -> Result<LocalForward, CliError> {
    parse_config(args).map_err(|e| match e {
        CliError::BadForward { spec, why, .. } => CliError::BadForward {
            spec,
            form: CONFIG_REMOTE,
            why,
        },
        other => other,
    })
}

pub(super) fn parse_dash_l(spec: &str) -> Result<LocalForward, CliError> {
    parse_fields(spec).map_err(|why| CliError::BadForward {
        spec: spec.to_owned(),
        form: DASH_L,
        why,
    })
}

/// `LocalForward` takes the listening side and the target as two words.
pub(super) fn parse_config(args: &[String]) -> Result<LocalForward, CliError> {
    let bad = |why: String| CliError::BadForward {
        spec: args.join(" "),
        form: CONFIG,
        why,
    };
    match args {
        [listen, target] => parse_fields(&format!("{listen}:{target}")).map_err(bad),
        [_] => Err(bad("the target host:hostport is missing".into())),
        _ => Err(bad(format!("it has {} words, not 2", args.len()))),
    }
}

fn parse_fields(spec: &str) -> Result<LocalForward, String> {
    let fields = split_fields(spec)?;
    let (bind, port, host, host_port) = match fields.as_slice() {
        [port, host, host_port] => (None, *port, *host, *host_port),
        [bind, port, host, host_port] => (Some(*bind), *port, *host, *host_port),
        [_] => return Err("it has 1 field, not 3 or 4".into()),
        [_, _] => return Err("it has 2 fields, not 3 or 4".into()),
        _ => {
            return Err(format!(
                "it has {} fields, not 3 or 4; put IPv6 addresses in [ ]",
                fields.len()
            ));
        }
    };
    if fields.iter().any(|f| f.contains('/')) {
        return Err("forwarding to or from a Unix socket path is not supported".into());
    }
    let bind_port = parse_port_allowing_zero(port)
        .ok_or_else(|| format!("'{port}' is not a local port number from 0 to 65535"))?;
    let host_port = parse_port_allowing_zero(host_port)
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("'{host_port}' is not a port number from 1 to 65535"))?;
    if host.is_empty() {
        return Err("the target host is empty".into());
    }
    check_name(host, "target host")?;
    let bind_address = match bind {
        None => None,
        // An empty bind address means every interface, like '*'.
        Some("" | "*") => Some("*".to_owned()),
        Some(b) => {
            check_name(b, "bind address")?;
            Some(b.to_owned())
        }
    };
    Ok(LocalForward {
        bind_address,
        bind_port,
        host: host.to_owned(),
        host_port,
    })
}

/// The target host is resolved by the server, so any name its resolver knows is fine; only
/// text that can never be a name is refused here.
fn check_name(name: &str, what: &str) -> Result<(), String> {
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("the {what} contains spaces or control characters"));
    }
    if name.contains(['[', ']']) {
        return Err(format!("the {what} has a stray '[' or ']'"));
    }
    Ok(())
}

fn split_fields(spec: &str) -> Result<Vec<&str>, String> {
    let mut fields = Vec::new();
    let mut rest = spec;
    loop {
        if let Some(bracketed) = rest.strip_prefix('[') {
            let (inner, after) = bracketed
                .split_once(']')
                .ok_or_else(|| "'[' without a closing ']'".to_owned())?;
            fields.push(inner);
            if after.is_empty() {
                break;
            }
            rest = after
                .strip_prefix(':')
                .ok_or_else(|| "expected ':' after ']'".to_owned())?;
        } else {
            match rest.split_once(':') {
                Some((field, after)) => {
                    fields.push(field);
                    rest = after;
                }
                None => {
                    fields.push(rest);
                    break;
                }
            }
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(bind: Option<&str>, port: u16, host: &str, host_port: u16) -> LocalForward {
        LocalForward {
            bind_address: bind.map(str::to_owned),
            bind_port: port,
            host: host.to_owned(),
            host_port,
        }
    }

    #[test]
    fn three_and_four_fields() {
        assert_eq!(
            parse_dash_l("15432:db.internal:5432"),
            Ok(fwd(None, 15432, "db.internal", 5432))
        );
        assert_eq!(
            parse_dash_l("127.0.0.2:15432:db:5432"),
            Ok(fwd(Some("127.0.0.2"), 15432, "db", 5432))
        );
        assert_eq!(
            parse_dash_l("localhost:1:db:2"),
            Ok(fwd(Some("localhost"), 1, "db", 2))
        );
        assert_eq!(parse_dash_l("0:db:2"), Ok(fwd(None, 0, "db", 2)));
    }

    #[test]
    fn wildcard_bind_addresses() {
        assert_eq!(parse_dash_l("*:5:db:6"), Ok(fwd(Some("*"), 5, "db", 6)));
        assert_eq!(parse_dash_l(":5:db:6"), Ok(fwd(Some("*"), 5, "db", 6)));
        assert_eq!(parse_dash_l("[]:5:db:6"), Ok(fwd(Some("*"), 5, "db", 6)));
    }

    #[test]
    fn ipv6_in_brackets() {
        assert_eq!(
            parse_dash_l("[::1]:5432:db:5432"),
            Ok(fwd(Some("::1"), 5432, "db", 5432))
        );
        assert_eq!(
            parse_dash_l("5:[fd00::7]:6"),
            Ok(fwd(None, 5, "fd00::7", 6))
        );
        assert_eq!(
            parse_dash_l("[::]:5:[::1]:6"),
            Ok(fwd(Some("::"), 5, "::1", 6))
        );
    }

    #[test]
    fn errors_name_the_spec_and_the_form() {
        let msg = |s: &str| {
            parse_dash_l(s)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            msg("15432:db"),
            "bad -L specification '15432:db': expected [bind_address:]port:host:hostport \
             (it has 2 fields, not 3 or 4)"
        );
        for (spec, needle) in [
            ("5/db/6", "1 field,"),
            ("a:b:c:d:e", "5 fields, not 3 or 4; put IPv6"),
            ("5:::1:6", "5 fields"),
            ("x:db:5", "'x' is not a local port"),
            ("65536:db:5", "'65536' is not a local port"),
            ("5:db:0", "'0' is not a port number from 1"),
            ("5:db:", "'' is not a port number"),
            ("5::6", "target host is empty"),
            ("[::1:5:db:6", "closing"),
            ("[::1]5:db:6", "':' after ']'"),
            ("5:/tmp/sock", "fields"),
            ("5:db:6:/x", "Unix socket"),
            ("/tmp/a:db:6", "Unix socket"),
            ("5:d b:6", "spaces"),
            ("+5:db:6", "'+5'"),
        ] {
            let m = msg(spec);
            assert!(m.contains(needle), "{spec}: {m}");
        }
    }

    #[test]
    fn config_form_takes_two_words() {
        let words = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            parse_config(&words("15432 db:5432")),
            Ok(fwd(None, 15432, "db", 5432))
        );
        assert_eq!(
            parse_config(&words("[::1]:15432 [fd00::1]:5432")),
            Ok(fwd(Some("::1"), 15432, "fd00::1", 5432))
        );
        let err = parse_config(&words("5")).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "bad LocalForward specification '5': expected [bind_address:]port \
                 host:hostport (the target host:hostport is missing)"
            )
        );
        assert!(parse_config(&words("1 2 3")).is_err());
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            "1:db:2",
            "[::1]:1:[fd00::1]:2",
            "*:3:h:4",
            "localhost:0:h:9",
        ] {
            let parsed = parse_dash_l(spec);
            let shown = parsed.as_ref().map(ToString::to_string);
            assert_eq!(shown.as_deref(), Ok(spec));
        }
    }
}
