//! `-L [bind_address:]port:host:hostport` and `LocalForward [bind_address:]port host:hostport`,
//! with OpenSSH's Unix socket forms: `-L port:/remote/socket`, `-L /local/socket:host:hostport`
//! and `-L /local/socket:/remote/socket`; and `-R` and `RemoteForward` in the same forms, the
//! listening side on the server.
//!
//! Fields are separated by `:`; a field in brackets may contain `:` (IPv6, or a path). The
//! bracket rule is OpenSSH's: `[` opens a field that runs to the next `]`, which must end the
//! spec or be followed by `:`. As in OpenSSH, a field that contains `/` is a socket path.

use std::path::PathBuf;

use super::parse_port_allowing_zero;
use super::{CliError, Destination, ForwardSpec, Listen, Target};

const DASH_L: &str = "-L";
const CONFIG: &str = "LocalForward";
const DASH_R: &str = "-R";
const CONFIG_REMOTE: &str = "RemoteForward";
const DASH_D: &str = "-D";
const CONFIG_DYNAMIC: &str = "DynamicForward";

/// The longest socket path: `sun_path` holds 108 bytes with the terminating NUL, on Linux
/// (and OpenSSH takes the local limit for the server's paths too).
pub(super) const MAX_SOCKET_PATH: usize = 107;

/// `-R [bind_address:]port:host:hostport`: the same fields as `-L`, the listening side on
/// the server (`-R /path:...` asks it to listen on a Unix socket there). With no target
/// (`-R [bind_address:]port`, `-R /path`) it is OpenSSH's dynamic remote forward: each
/// connection the server takes there speaks SOCKS, and names where to go from here.
pub(super) fn parse_dash_r(spec: &str) -> Result<ForwardSpec, CliError> {
    parse_remote(spec).map_err(|why| CliError::BadForward {
        spec: spec.to_owned(),
        form: DASH_R,
        why,
    })
}

/// A remote forward's fields: with a target as `-L`'s, or without one (1 or 2 fields, the
/// last not a path) a dynamic forward, as OpenSSH's `parse_forward` decides.
fn parse_remote(spec: &str) -> Result<ForwardSpec, String> {
    let fields = split_fields(spec)?;
    match fields.as_slice() {
        [_] | [_, (_, false)] => parse_dynamic(spec),
        _ => parse_fields(spec),
    }
}

/// `-D [bind_address:]port` (or `-D /path`): a local SOCKS proxy whose connections go
/// wherever each one's request names.
pub(super) fn parse_dash_d(spec: &str) -> Result<ForwardSpec, CliError> {
    parse_dynamic(spec).map_err(|why| CliError::BadForward {
        spec: spec.to_owned(),
        form: DASH_D,
        why,
    })
}

/// `DynamicForward [bind_address:]port`, one word.
pub(super) fn parse_config_dynamic(args: &[String]) -> Result<ForwardSpec, CliError> {
    let bad = |why: String| CliError::BadForward {
        spec: args.join(" "),
        form: CONFIG_DYNAMIC,
        why,
    };
    match args {
        [spec] => parse_dynamic(spec).map_err(bad),
        _ => Err(bad(format!("it has {} words, not 1", args.len()))),
    }
}

fn parse_dynamic(spec: &str) -> Result<ForwardSpec, String> {
    let fields = split_fields(spec)?;
    let listen = match fields.as_slice() {
        [(l, true)] => listen_path(l)?,
        [(p, false)] => listen_port(None, p)?,
        [(b, _), (p, false)] => listen_port(Some(b), p)?,
        _ => {
            return Err(format!(
                "it has {} fields, not 1 or 2; put IPv6 addresses in [ ]",
                fields.len()
            ));
        }
    };
    Ok(ForwardSpec {
        listen,
        to: Destination::Socks,
    })
}

/// `RemoteForward [bind_address:]port host:hostport`, or `RemoteForward [bind_address:]port`
/// alone for a dynamic (SOCKS) remote forward.
pub(super) fn parse_config_remote(args: &[String]) -> Result<ForwardSpec, CliError> {
    let bad = |why: String| CliError::BadForward {
        spec: args.join(" "),
        form: CONFIG_REMOTE,
        why,
    };
    match args {
        [listen] => parse_dynamic(listen).map_err(bad),
        _ => two_words(args)
            .and_then(|spec| parse_fields(&spec))
            .map_err(bad),
    }
}

pub(super) fn parse_dash_l(spec: &str) -> Result<ForwardSpec, CliError> {
    parse_fields(spec).map_err(|why| CliError::BadForward {
        spec: spec.to_owned(),
        form: DASH_L,
        why,
    })
}

/// `LocalForward` takes the listening side and the target as two words.
pub(super) fn parse_config(args: &[String]) -> Result<ForwardSpec, CliError> {
    let bad = |why: String| CliError::BadForward {
        spec: args.join(" "),
        form: CONFIG,
        why,
    };
    two_words(args)
        .and_then(|spec| parse_fields(&spec))
        .map_err(bad)
}

/// The two words of `LocalForward` and `RemoteForward` as one `-L` spec.
fn two_words(args: &[String]) -> Result<String, String> {
    match args {
        [listen, target] => Ok(format!("{listen}:{target}")),
        [_] => Err("the target host:hostport is missing".into()),
        _ => Err(format!("it has {} words, not 2", args.len())),
    }
}

fn parse_fields(spec: &str) -> Result<ForwardSpec, String> {
    let fields = split_fields(spec)?;
    let path = |f: &(&str, bool)| f.1;
    let (listen, to) = match fields.as_slice() {
        [l, t] if path(l) && path(t) => (listen_path(l.0)?, remote_path(t.0)?),
        [p, t] if path(t) => (listen_port(None, p.0)?, remote_path(t.0)?),
        [l, h, hp] if path(l) => (listen_path(l.0)?, tcp_target(h.0, hp.0)?),
        [b, p, t] if path(t) => (listen_port(Some(b.0), p.0)?, remote_path(t.0)?),
        [p, h, hp] => (listen_port(None, p.0)?, tcp_target(h.0, hp.0)?),
        [b, p, h, hp] => (listen_port(Some(b.0), p.0)?, tcp_target(h.0, hp.0)?),
        [_] => return Err("it has 1 field, not 3 or 4".into()),
        [_, _] => return Err("it has 2 fields, not 3 or 4".into()),
        _ => {
            return Err(format!(
                "it has {} fields, not 3 or 4; put IPv6 addresses in [ ]",
                fields.len()
            ));
        }
    };
    Ok(ForwardSpec { listen, to })
}

fn listen_port(bind: Option<&str>, port: &str) -> Result<Listen, String> {
    let port = parse_port_allowing_zero(port)
        .ok_or_else(|| format!("'{port}' is not a local port number from 0 to 65535"))?;
    let bind_address = match bind {
        None => None,
        // An empty bind address means every interface, like '*'.
        Some("" | "*") => Some("*".to_owned()),
        Some(b) => {
            check_name(b, "bind address")?;
            Some(b.to_owned())
        }
    };
    Ok(Listen::Port { bind_address, port })
}

fn tcp_target(host: &str, host_port: &str) -> Result<Destination, String> {
    let port = parse_port_allowing_zero(host_port)
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("'{host_port}' is not a port number from 1 to 65535"))?;
    if host.is_empty() {
        return Err("the target host is empty".into());
    }
    check_name(host, "target host")?;
    Ok(Destination::Tcp(Target {
        host: host.to_owned(),
        port,
    }))
}

fn check_path(path: &str, what: &str) -> Result<(), String> {
    if path.len() > MAX_SOCKET_PATH {
        return Err(format!(
            "the {what} is {} bytes long, more than a Unix socket path can be ({MAX_SOCKET_PATH})",
            path.len()
        ));
    }
    if path.chars().any(char::is_control) {
        return Err(format!("the {what} contains control characters"));
    }
    Ok(())
}

fn listen_path(path: &str) -> Result<Listen, String> {
    check_path(path, "listening socket path")?;
    Ok(Listen::Path(PathBuf::from(path)))
}

fn remote_path(path: &str) -> Result<Destination, String> {
    check_path(path, "target socket path")?;
    Ok(Destination::Unix(path.to_owned()))
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

/// The fields of a spec, each with whether it is a socket path (it contains `/`).
fn split_fields(spec: &str) -> Result<Vec<(&str, bool)>, String> {
    let mut fields = Vec::new();
    let mut rest = spec;
    loop {
        if let Some(bracketed) = rest.strip_prefix('[') {
            let (inner, after) = bracketed
                .split_once(']')
                .ok_or_else(|| "'[' without a closing ']'".to_owned())?;
            fields.push((inner, inner.contains('/')));
            if after.is_empty() {
                break;
            }
            rest = after
                .strip_prefix(':')
                .ok_or_else(|| "expected ':' after ']'".to_owned())?;
        } else {
            match rest.split_once(':') {
                Some((field, after)) => {
                    fields.push((field, field.contains('/')));
                    rest = after;
                }
                None => {
                    fields.push((rest, rest.contains('/')));
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

    fn fwd(bind: Option<&str>, port: u16, host: &str, host_port: u16) -> ForwardSpec {
        ForwardSpec::tcp(bind, port, host, host_port)
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
            ("/tmp/sock", "1 field,"),
            ("5:db:6:/x", "'db' is not a local port"),
            ("/tmp/a:/b:c", "'c' is not a port number"),
            ("x:/tmp/sock", "'x' is not a local port"),
            ("/tmp/a:db:0", "'0' is not a port number from 1"),
            ("5:d b:6", "spaces"),
            ("+5:db:6", "'+5'"),
        ] {
            let m = msg(spec);
            assert!(m.contains(needle), "{spec}: {m}");
        }
    }

    fn listen_path(p: &str) -> Listen {
        Listen::Path(PathBuf::from(p))
    }

    fn unix(p: &str) -> Destination {
        Destination::Unix(p.to_owned())
    }

    #[test]
    fn unix_socket_forms_are_openssh_s() {
        let pg = "/var/run/postgresql/.s.PGSQL.5432";
        let port = |bind: Option<&str>, port| Listen::Port {
            bind_address: bind.map(str::to_owned),
            port,
        };
        let cases = [
            (format!("15432:{pg}"), port(None, 15432), unix(pg)),
            (
                format!("127.0.0.2:15432:{pg}"),
                port(Some("127.0.0.2"), 15432),
                unix(pg),
            ),
            (
                "/tmp/pg.sock:db:5432".to_owned(),
                listen_path("/tmp/pg.sock"),
                Destination::Tcp(Target {
                    host: "db".into(),
                    port: 5432,
                }),
            ),
            (
                format!("/tmp/pg.sock:{pg}"),
                listen_path("/tmp/pg.sock"),
                unix(pg),
            ),
            // A path in brackets may hold ':'; a relative one is a path if it has a '/'.
            (
                "[./a:b/s]:[/x:y]".to_owned(),
                listen_path("./a:b/s"),
                unix("/x:y"),
            ),
            // Or start with '[' (found by the cli_args fuzz target).
            ("a/b]:[[/c]".to_owned(), listen_path("a/b]"), unix("[/c")),
        ];
        for (spec, listen, to) in cases {
            let want = ForwardSpec { listen, to };
            assert_eq!(parse_dash_l(&spec), Ok(want.clone()), "{spec}");
            assert_eq!(want.to_string(), spec, "shown as given");
        }
        let words = ["/tmp/s".to_owned(), pg.to_owned()];
        assert_eq!(
            parse_config(&words),
            Ok(ForwardSpec {
                listen: listen_path("/tmp/s"),
                to: unix(pg)
            })
        );
    }

    #[test]
    fn socket_paths_are_checked() {
        let long = format!("/{}", "a".repeat(MAX_SOCKET_PATH));
        for (spec, needle) in [
            (format!("{long}:db:1"), "more than a Unix socket path"),
            (format!("1:{long}"), "target socket path is 108 bytes"),
            (format!("{long}:1:/s"), "listening socket path is 108 bytes"),
            ("1:/tmp/a\tb".to_owned(), "control characters"),
        ] {
            let m = parse_dash_l(&spec).err().map(|e| e.to_string());
            assert!(
                m.as_deref().unwrap_or_default().contains(needle),
                "{spec}: {m:?}"
            );
        }
        let longest = format!("/{}", "a".repeat(MAX_SOCKET_PATH - 1));
        assert!(parse_dash_l(&format!("{longest}:db:1")).is_ok());
    }

    #[test]
    fn remote_forwards_listen_on_ports_and_connect_to_hosts_or_sockets() {
        assert_eq!(
            parse_dash_r("8022:localhost:22"),
            Ok(ForwardSpec::tcp(None, 8022, "localhost", 22))
        );
        let to_socket = ForwardSpec {
            listen: Listen::Port {
                bind_address: Some("*".into()),
                port: 8022,
            },
            to: unix("/run/app.sock"),
        };
        assert_eq!(parse_dash_r("*:8022:/run/app.sock"), Ok(to_socket.clone()));
        assert_eq!(to_socket.to_string(), "*:8022:/run/app.sock");
        let words = ["8022".to_owned(), "/run/app.sock".to_owned()];
        assert_eq!(
            parse_config_remote(&words).map(|f| f.to),
            Ok(unix("/run/app.sock"))
        );
        // The server listening on a socket (OpenSSH's streamlocal-forward), to a host and
        // port or to a socket here, on the command line and in ssh_config.
        assert_eq!(
            parse_dash_r("/run/l.sock:h:1"),
            Ok(ForwardSpec {
                listen: listen_path("/run/l.sock"),
                to: Destination::Tcp(Target {
                    host: "h".into(),
                    port: 1
                }),
            })
        );
        let both = ForwardSpec {
            listen: listen_path("/a/b"),
            to: unix("/c/d"),
        };
        assert_eq!(parse_dash_r("/a/b:/c/d"), Ok(both.clone()));
        assert_eq!(both.to_string(), "/a/b:/c/d");
        let words = ["/run/l.sock".to_owned(), "127.0.0.1:5432".to_owned()];
        assert_eq!(
            parse_config_remote(&words).map(|f| f.listen),
            Ok(listen_path("/run/l.sock"))
        );
        let m = parse_dash_r("/a/b:h").err().map(|e| e.to_string());
        assert!(
            m.as_deref()
                .unwrap_or_default()
                .contains("bad -R specification '/a/b:h'"),
            "{m:?}"
        );
    }

    // OpenSSH's dynamic remote forward: no target, so each connection speaks SOCKS.
    #[test]
    fn a_remote_forward_without_a_target_is_a_socks_one() {
        let socks = |listen: Listen| ForwardSpec {
            listen,
            to: Destination::Socks,
        };
        let port = |bind: Option<&str>, port| Listen::Port {
            bind_address: bind.map(str::to_owned),
            port,
        };
        assert_eq!(parse_dash_r("8022"), Ok(socks(port(None, 8022))));
        assert_eq!(
            parse_dash_r("0"),
            Ok(socks(port(None, 0))),
            "the server picks"
        );
        assert_eq!(
            parse_dash_r("127.0.0.1:8022"),
            Ok(socks(port(Some("127.0.0.1"), 8022)))
        );
        assert_eq!(
            parse_dash_r("[::1]:8022"),
            Ok(socks(port(Some("::1"), 8022)))
        );
        assert_eq!(parse_dash_r("*:8022"), Ok(socks(port(Some("*"), 8022))));
        assert_eq!(
            parse_dash_r("/run/socks.sock"),
            Ok(socks(listen_path("/run/socks.sock")))
        );
        assert_eq!(
            parse_config_remote(&["8022".to_owned()]),
            Ok(socks(port(None, 8022)))
        );
        assert_eq!(
            parse_config_remote(&["localhost:0".to_owned()]),
            Ok(socks(port(Some("localhost"), 0)))
        );
        // Two fields whose second is a path are a port and a socket here, as before.
        assert_eq!(
            parse_dash_r("8022:/run/app.sock").map(|f| f.to),
            Ok(unix("/run/app.sock"))
        );
        for (bad, why) in [
            ("socks", "port number"),
            ("70000", "port number"),
            ("a:b:c", "port number"),
        ] {
            let e = parse_dash_r(bad).expect_err(bad).to_string();
            assert!(
                e.contains("bad -R specification")
                    && e.contains("[bind_address:]port[:host:hostport]")
                    && e.contains(why),
                "{bad}: {e}"
            );
        }
        let e = parse_config_remote(&["x".to_owned()])
            .expect_err("not a port")
            .to_string();
        assert!(
            e.contains("RemoteForward") && e.contains("[bind_address:]port [host:hostport]"),
            "{e}"
        );
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

    #[test]
    fn dynamic_forwards_take_a_port_an_address_and_port_or_a_path() {
        let port = |bind: Option<&str>, port| ForwardSpec {
            listen: Listen::Port {
                bind_address: bind.map(str::to_owned),
                port,
            },
            to: Destination::Socks,
        };
        assert_eq!(parse_dash_d("1080"), Ok(port(None, 1080)));
        assert_eq!(
            parse_dash_d("127.0.0.1:1080"),
            Ok(port(Some("127.0.0.1"), 1080))
        );
        assert_eq!(parse_dash_d("[::1]:1080"), Ok(port(Some("::1"), 1080)));
        assert_eq!(parse_dash_d("*:1080"), Ok(port(Some("*"), 1080)));
        assert_eq!(parse_dash_d(":1080"), Ok(port(Some("*"), 1080)));
        assert_eq!(
            parse_dash_d("/run/socks.sock"),
            Ok(ForwardSpec {
                listen: listen_path("/run/socks.sock"),
                to: Destination::Socks,
            })
        );
        assert_eq!(
            parse_config_dynamic(&["localhost:1080".to_owned()]),
            Ok(port(Some("localhost"), 1080))
        );
        // Shown as given, and back again; the flag names the form.
        for spec in ["1080", "[::1]:1080", "*:1080", "/run/socks.sock"] {
            let f = parse_dash_d(spec).expect(spec);
            assert_eq!(f.to_string(), spec);
            assert_eq!(f.flag(), "-D");
        }
        assert_eq!(ForwardSpec::tcp(None, 1, "h", 2).flag(), "-L");
        // A target, a bad port, words: refused with the form's own name.
        for (bad, why) in [
            ("1080:db:5432", "not 1 or 2"),
            ("socks", "local port number"),
            ("70000", "local port number"),
            ("[::1", "closing"),
        ] {
            let e = parse_dash_d(bad).expect_err(bad).to_string();
            assert!(e.contains("-D") && e.contains(why), "{bad}: {e}");
        }
        let e = parse_config_dynamic(&["1080".to_owned(), "x".to_owned()])
            .expect_err("two words")
            .to_string();
        assert!(e.contains("DynamicForward") && e.contains("not 1"), "{e}");
        // The form expected is -D's own, not -L's.
        let e = parse_dash_d("1080:db:5432")
            .expect_err("a target")
            .to_string();
        assert!(
            e.contains("expected [bind_address:]port (") && !e.contains("host:hostport"),
            "{e}"
        );
    }
}
